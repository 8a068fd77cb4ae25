/*
 * Test handler: fails in the ways the payload names, after publishing a
 * message that must then be dropped:
 *   "fail"    ctx->fail with a message, returns WISP_ERROR
 *   "failok"  ctx->fail, then returns WISP_OK (still a failure)
 *   "ret"     returns 3 without a message
 *   "nomem"   returns WISP_NOMEM
 *   "hog"     allocates 256 MiB in steps of 1 MiB and touches them; returns
 *             WISP_NOMEM (with a message) when malloc refuses
 * Anything else succeeds.
 */
#include <stdlib.h>
#include <string.h>

#include <wisp/wisp.h>

static int hog(const struct wisp_ctx *ctx)
{
    enum { STEP = 1024 * 1024, STEPS = 256 };
    char **blocks = calloc(STEPS, sizeof(*blocks));
    int rc = WISP_OK;
    if (!blocks)
        return WISP_NOMEM;
    for (int i = 0; i < STEPS; i++) {
        blocks[i] = malloc(STEP);
        if (!blocks[i]) {
            ctx->fail(ctx, "malloc refused");
            rc = WISP_NOMEM;
            break;
        }
        memset(blocks[i], i, STEP);
    }
    for (int i = 0; i < STEPS; i++)
        free(blocks[i]);
    free(blocks);
    return rc;
}

static int handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
{
    const char *p = ev->payload;
    if (ctx->publish(ctx, "out/before", "x", 1, 1, 0) != WISP_OK)
        return WISP_ERROR;
    if (strcmp(p, "fail") == 0) {
        ctx->fail(ctx, "threshold missing in function.json env");
        return WISP_ERROR;
    }
    if (strcmp(p, "failok") == 0) {
        ctx->fail(ctx, "failed but returned ok");
        return WISP_OK;
    }
    if (strcmp(p, "ret") == 0)
        return 3;
    if (strcmp(p, "nomem") == 0)
        return WISP_NOMEM;
    if (strcmp(p, "hog") == 0)
        return hog(ctx);
    return WISP_OK;
}

WISP_HANDLER(handle)
