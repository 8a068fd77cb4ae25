/* The metering records' hash chain (meter.h). */
#include "meter.h"

#include <errno.h>
#include <mbedtls/sha256.h>
#include <string.h>

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xffu);
        v >>= 8;
    }
}

static int add_u64(mbedtls_sha256_context *c, uint64_t v)
{
    unsigned char b[8];
    put_u64(b, v);
    return mbedtls_sha256_update_ret(c, b, sizeof(b));
}

static int add_str(mbedtls_sha256_context *c, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    unsigned char b[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                          (unsigned char)(n >> 8), (unsigned char)n};
    int rc = mbedtls_sha256_update_ret(c, b, sizeof(b));
    return rc || !n ? rc : mbedtls_sha256_update_ret(c, (const unsigned char *)s, n);
}

int wisp_meter_chain(const unsigned char prev[WISP_METER_HASH_LEN],
                     const struct wisp_meter_fields *f, unsigned char out[WISP_METER_HASH_LEN])
{
    static const char tag[] = "wisp-meter/1"; /* hashed with its NUL */
    const char *strs[] = {f->fn, f->version, f->event_id, f->time, f->outcome};
    const uint64_t nums[] = {f->billed_ms,    f->duration_us, f->mem_peak_bytes,
                             f->mem_limit_kb, f->bytes_in,    f->bytes_out};
    unsigned char cold = f->cold ? 1 : 0;
    mbedtls_sha256_context c;
    mbedtls_sha256_init(&c);
    int rc = mbedtls_sha256_starts_ret(&c, 0);
    if (!rc)
        rc = mbedtls_sha256_update_ret(&c, (const unsigned char *)tag, sizeof(tag));
    if (!rc)
        rc = mbedtls_sha256_update_ret(&c, prev, WISP_METER_HASH_LEN);
    if (!rc)
        rc = add_u64(&c, f->seq);
    for (size_t i = 0; !rc && i < sizeof(strs) / sizeof(strs[0]); i++)
        rc = add_str(&c, strs[i]);
    for (size_t i = 0; !rc && i < sizeof(nums) / sizeof(nums[0]); i++)
        rc = add_u64(&c, nums[i]);
    if (!rc)
        rc = mbedtls_sha256_update_ret(&c, &cold, 1);
    if (!rc)
        rc = mbedtls_sha256_finish_ret(&c, out);
    mbedtls_sha256_free(&c);
    return rc ? -EIO : 0;
}

void wisp_meter_hex(const unsigned char h[WISP_METER_HASH_LEN],
                    char out[2 * WISP_METER_HASH_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < WISP_METER_HASH_LEN; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15u];
    }
    out[(size_t)2 * WISP_METER_HASH_LEN] = '\0';
}

static int nibble(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

bool wisp_meter_unhex(const char *s, unsigned char out[WISP_METER_HASH_LEN])
{
    if (!s || strlen(s) != (size_t)2 * WISP_METER_HASH_LEN)
        return false;
    for (size_t i = 0; i < WISP_METER_HASH_LEN; i++) {
        int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}
