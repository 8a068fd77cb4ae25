/*
 * Test handler: runs the state commands in the payload, one per line, and
 * publishes "<command> -> <rc> <result or error>" for each on out/state:
 *   get KEY | put KEY JSON | del KEY | incr KEY BY | keys PREFIX LIMIT
 *   sensor NAME | gpio CHIP LINE VALUE | fail (fails with the last error)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wisp/wisp.h>

struct listing {
    char text[512];
    size_t len;
};

static int add_key(void *ud, const char *key, size_t len)
{
    struct listing *l = ud;
    int n = snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s%.*s", l->len ? "," : "",
                     (int)len, key);
    if (n > 0 && (size_t)n < sizeof(l->text) - l->len)
        l->len += (size_t)n;
    return 0;
}

static int run(const struct wisp_ctx *ctx, char *line, char *out, size_t cap)
{
    char *sp = strchr(line, ' ');
    char *arg = sp ? sp + 1 : line + strlen(line);
    char *arg2 = strchr(arg, ' ');
    if (sp)
        *sp = '\0';
    if (arg2)
        *arg2++ = '\0';
    int rc;
    if (strcmp(line, "get") == 0) {
        const char *json = NULL;
        size_t len = 0;
        rc = ctx->state_get(ctx, arg, &json, &len);
        (void)snprintf(out, cap, "%d %s", rc,
                       rc == WISP_OK          ? json
                       : rc == WISP_NOT_FOUND ? "absent"
                                              : ctx->error(ctx));
    } else if (strcmp(line, "put") == 0) {
        rc = ctx->state_put(ctx, arg, arg2);
        (void)snprintf(out, cap, "%d %s", rc, ctx->error(ctx));
    } else if (strcmp(line, "del") == 0) {
        rc = ctx->state_del(ctx, arg);
        (void)snprintf(out, cap, "%d %s", rc, ctx->error(ctx));
    } else if (strcmp(line, "incr") == 0) {
        int64_t v = 0;
        rc = ctx->state_incr(ctx, arg, arg2 ? strtoll(arg2, NULL, 10) : 1, &v);
        if (rc == WISP_OK)
            (void)snprintf(out, cap, "%d %lld", rc, (long long)v);
        else
            (void)snprintf(out, cap, "%d %s", rc, ctx->error(ctx));
    } else if (strcmp(line, "keys") == 0) {
        struct listing l = {.len = 0};
        l.text[0] = '\0';
        rc = ctx->state_keys(ctx, arg, arg2 ? strtoul(arg2, NULL, 10) : 0, add_key, &l);
        (void)snprintf(out, cap, "%d %s", rc, rc == WISP_OK ? l.text : ctx->error(ctx));
    } else if (strcmp(line, "sensor") == 0) {
        struct wisp_sensor_reading r;
        rc = ctx->sensor(ctx, arg, &r);
        (void)snprintf(out, cap, "%d %s", rc, ctx->error(ctx));
    } else if (strcmp(line, "gpio") == 0) {
        char *val = arg2 ? strchr(arg2, ' ') : NULL;
        int got = 0;
        rc = ctx->gpio(ctx, arg, arg2 ? (uint32_t)strtoul(arg2, NULL, 10) : 0,
                       val ? (int)strtol(val + 1, NULL, 10) : -1, &got);
        (void)snprintf(out, cap, "%d %s", rc, ctx->error(ctx));
    } else {
        rc = WISP_ERROR;
        (void)snprintf(out, cap, "unknown command");
    }
    return rc;
}

static int handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
{
    char script[4096], out[1024], msg[1400], last[1024] = "";
    (void)snprintf(script, sizeof(script), "%s", ev->payload);
    for (char *save = NULL, *line = strtok_r(script, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strcmp(line, "fail") == 0) {
            ctx->fail(ctx, last);
            return WISP_ERROR;
        }
        char cmd[256];
        (void)snprintf(cmd, sizeof(cmd), "%s", line);
        if (run(ctx, line, out, sizeof(out)) == WISP_ERROR)
            (void)snprintf(last, sizeof(last), "%s", ctx->error(ctx));
        int n = snprintf(msg, sizeof(msg), "%s -> %s", cmd, out);
        if (ctx->publish(ctx, "out/state", msg, (size_t)n, 0, 0) != WISP_OK)
            return WISP_ERROR;
    }
    return WISP_OK;
}

WISP_HANDLER(handle)
