#include "devcall.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "state.h"
#include "util.h"

/* Longest sensor or chip name carried (names are config keys). */
#define DEVCALL_NAME_MAX 128u
#define DEVCALL_MSG_MAX  512u

static void put_double(struct wisp_buf *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    wisp_buf_put_u64(b, bits);
}

static double rd_double(struct wisp_rd *r)
{
    uint64_t bits = wisp_rd_u64(r);
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

/* One exchange; on success the reply body is in st->reply and *rd reads it
 * from just after the status, which is returned (0 or -errno). */
static int call(struct wisp_state *st, enum wisp_devcall_op op, const char *name, uint32_t line,
                int32_t value, struct wisp_rd *rd, char *err, size_t errlen)
{
    if (!st || !st->rpc)
        return wisp_errf(err, errlen, -ENOTSUP, "no sensors or GPIO lines are available here");
    size_t nlen = name ? strlen(name) : 0;
    if (nlen == 0 || nlen > DEVCALL_NAME_MAX)
        return wisp_errf(err, errlen, -EINVAL, "the name must be 1 to %u bytes", DEVCALL_NAME_MAX);
    wisp_ipc_frame_begin(&st->req, WISP_IPC_DEVICE_REQ);
    wisp_buf_put_u32(&st->req, (uint32_t)op);
    wisp_buf_put_bytes(&st->req, name, nlen + 1);
    wisp_buf_put_u32(&st->req, line);
    wisp_buf_put_u32(&st->req, (uint32_t)value);
    wisp_ipc_frame_end(&st->req);
    if (st->req.oom)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    if (st->rpc(st->rpc_ud, &st->req, &st->reply) != 0)
        return wisp_errf(err, errlen, -EIO, "the supervisor did not answer");
    rd->p = st->reply.data;
    rd->left = st->reply.len;
    rd->bad = false;
    uint32_t code = wisp_rd_u32(rd);
    size_t mlen = 0;
    const char *msg = wisp_rd_bytes(rd, &mlen);
    if (rd->bad || code > 4095)
        return wisp_errf(err, errlen, -EIO, "malformed reply from the supervisor");
    if (code != 0) {
        if (mlen > DEVCALL_MSG_MAX)
            mlen = DEVCALL_MSG_MAX;
        return wisp_errf(err, errlen, -(int)code, "%.*s", (int)mlen, msg ? msg : "");
    }
    return 0;
}

int wisp_devcall_sensor(struct wisp_state *st, const char *name, struct wisp_devcall_reading *out,
                        char *err, size_t errlen)
{
    struct wisp_rd rd;
    int rc = call(st, WISP_DEVCALL_SENSOR, name, 0, 0, &rd, err, errlen);
    if (rc != 0)
        return rc;
    out->value = rd_double(&rd);
    out->time_ns = wisp_rd_u64(&rd);
    size_t ulen = 0;
    const char *unit = wisp_rd_bytes(&rd, &ulen);
    if (rd.bad)
        return wisp_errf(err, errlen, -EIO, "malformed reply from the supervisor");
    if (ulen >= sizeof(out->unit))
        ulen = sizeof(out->unit) - 1;
    memcpy(out->unit, unit ? unit : "", ulen);
    out->unit[ulen] = '\0';
    return 0;
}

int wisp_devcall_gpio(struct wisp_state *st, const char *chip, uint32_t line, int value, int *out,
                      char *err, size_t errlen)
{
    if (value < -1 || value > 1)
        return wisp_errf(err, errlen, -EINVAL, "a GPIO value must be 0 or 1, got %d", value);
    struct wisp_rd rd;
    enum wisp_devcall_op op = value < 0 ? WISP_DEVCALL_GPIO_GET : WISP_DEVCALL_GPIO_SET;
    int rc = call(st, op, chip, line, value, &rd, err, errlen);
    if (rc != 0)
        return rc;
    uint32_t v = wisp_rd_u32(&rd);
    if (rd.bad || v > 1)
        return wisp_errf(err, errlen, -EIO, "malformed reply from the supervisor");
    *out = (int)v;
    return 0;
}

int wisp_devcall_decode_req(struct wisp_rd *r, struct wisp_devcall_req *out)
{
    uint32_t op = wisp_rd_u32(r);
    size_t n = 0;
    const char *name = wisp_rd_bytes(r, &n);
    out->line = wisp_rd_u32(r);
    out->value = (int32_t)wisp_rd_u32(r);
    if (r->bad || n < 2 || n > DEVCALL_NAME_MAX + 1 || name[n - 1] != '\0' ||
        memchr(name, '\0', n - 1) || op < WISP_DEVCALL_SENSOR || op > WISP_DEVCALL_GPIO_SET)
        return -EPROTO;
    out->op = (enum wisp_devcall_op)op;
    out->name = name;
    return 0;
}

void wisp_devcall_encode_reply(struct wisp_buf *b, int status, const char *msg,
                               const struct wisp_devcall_reading *reading, int value)
{
    wisp_ipc_frame_append(b, WISP_IPC_STATE_REPLY);
    wisp_buf_put_u32(b, (uint32_t)(status < 0 ? -status : 0));
    wisp_buf_put_str(b, status < 0 ? msg : NULL);
    if (status >= 0 && reading) {
        put_double(b, reading->value);
        wisp_buf_put_u64(b, reading->time_ns);
        wisp_buf_put_str(b, reading->unit);
    } else if (status >= 0) {
        wisp_buf_put_u32(b, (uint32_t)(value ? 1 : 0));
    }
    wisp_ipc_frame_end(b);
}
