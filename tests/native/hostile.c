/*
 * Test handler for the integration test: env MODE says how it misbehaves
 * ("segv", "abort", "hang"); the payload "ok" makes it behave and publish
 * "ok" on out/<function name>.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <wisp/wisp.h>

static volatile int *volatile nowhere;

static int handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
{
    char topic[128] = "out/";
    strncat(topic, ctx->fn_name, sizeof(topic) - strlen(topic) - 1);
    if (strcmp(ev->payload, "ok") == 0)
        return ctx->publish(ctx, topic, "ok", 2, 1, 0);
    /* Published first: a crash must not let it out. */
    (void)ctx->publish(ctx, "leak/x", "leaked", 6, 0, 0);
    const char *mode = ctx->env(ctx, "MODE");
    if (mode && strcmp(mode, "segv") == 0)
        return *nowhere;
    if (mode && strcmp(mode, "abort") == 0)
        abort();
    if (mode && strcmp(mode, "hang") == 0) {
        for (;;)
            ;
    }
    ctx->fail(ctx, "unknown MODE");
    return WISP_ERROR;
}

WISP_HANDLER(handle)
