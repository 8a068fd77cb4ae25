/* Test handler: claims to be built for a future ABI 7. */
#include <wisp/wisp.h>

const uint32_t wisp_abi_version = 7;

int wisp_handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
{
    (void)ev;
    (void)ctx;
    return WISP_OK;
}
