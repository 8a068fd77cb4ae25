/*
 * Test handler: reports what it was given. Publishes the event fields, the
 * ctx fields and env values, a warm-start counter and a binary payload, logs
 * one line, and reports the errors of a few invalid publishes.
 */
#include <stdio.h>
#include <string.h>

#include <wisp/wisp.h>

static int count; /* survives between invocations of one loaded library */

static void report(const struct wisp_ctx *ctx, const char *topic, const char *text)
{
    (void)ctx->publish(ctx, topic, text, strlen(text), 0, 0);
}

static int handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
{
    char buf[1024];
    count++;
    (void)snprintf(buf, sizeof(buf), "%s|%s|%s|%s|%s|%s|%d|%d|%zu|%d|%s", ev->specversion, ev->id,
                   ev->source, ev->type, ev->time, ev->subject, ev->qos, ev->retain,
                   ev->payload_len, ev->payload[ev->payload_len] == '\0', ev->payload);
    report(ctx, "out/event", buf);
    const char *nope = ctx->env(ctx, "NOPE");
    (void)snprintf(buf, sizeof(buf), "%u|%d|%s|%s|%s|%s|%d", ctx->abi_version,
                   ctx->size == sizeof(struct wisp_ctx) && ev->size == sizeof(*ev), ctx->fn_name,
                   ctx->fn_version, ctx->env(ctx, "THRESHOLD"), nope ? nope : "(none)",
                   WISP_HAS(ctx, struct wisp_ctx, error));
    report(ctx, "out/ctx", buf);
    (void)snprintf(buf, sizeof(buf), "%d", count);
    report(ctx, "out/count", buf);
    uint64_t now = ctx->now_ns(ctx), left = ctx->remaining_ms(ctx);
    (void)snprintf(buf, sizeof(buf), "%d|%d", now > 1600000000ull * 1000000000ull,
                   left > 0 && left <= 1000);
    report(ctx, "out/time", buf);
    if (ctx->publish(ctx, "out/binary", "a\0b", 3, 2, 1) != WISP_OK)
        return WISP_ERROR;
    ctx->log(ctx, WISP_LEVEL_INFO, "hello from C \"quoted\"");
    ctx->log(ctx, WISP_LEVEL_DEBUG, "hidden");

    int rc = ctx->publish(ctx, "out/+", "x", 1, 0, 0);
    (void)snprintf(buf, sizeof(buf), "%d %s", rc, ctx->error(ctx));
    report(ctx, "out/err/wildcard", buf);
    rc = ctx->publish(ctx, "out/x", "x", 1, 3, 0);
    (void)snprintf(buf, sizeof(buf), "%d %s", rc, ctx->error(ctx));
    report(ctx, "out/err/qos", buf);
    rc = ctx->publish(ctx, NULL, "x", 1, 0, 0);
    (void)snprintf(buf, sizeof(buf), "%d %s", rc, ctx->error(ctx));
    report(ctx, "out/err/null", buf);
    if (strcmp(ev->payload, "flood") == 0) {
        for (int i = 0; i < 2000; i++) {
            if (ctx->publish(ctx, "flood/x", "y", 1, 0, 0) != WISP_OK) {
                ctx->fail(ctx, ctx->error(ctx));
                return WISP_ERROR;
            }
        }
    }
    return WISP_OK;
}

WISP_HANDLER(handle)
