/* Test handler: exports the ABI version but no entry point. */
#include <wisp/wisp.h>

const uint32_t wisp_abi_version = WISP_ABI_VERSION;

WISP_EXPORT int handle(void);
WISP_EXPORT int handle(void)
{
    return 0;
}
