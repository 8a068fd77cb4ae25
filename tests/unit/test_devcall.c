/* ctx.sensor / ctx.gpio requests between an executor and the supervisor
 * (runtime/src/devcall.c): what the executor sends, what the supervisor
 * decodes and answers, and every failure as an error message. The "socket"
 * is a function that plays the supervisor. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "devcall.h"
#include "state.h"

struct fake_sup {
    struct wisp_devcall_req got;
    char name[160];
    int status;
    const char *msg;
    bool garble;
    int calls;
};

static int fake_rpc(void *ud, struct wisp_buf *req, struct wisp_buf *reply)
{
    struct fake_sup *f = ud;
    f->calls++;
    /* The request is one whole DEVICE_REQ frame. */
    enum wisp_ipc_type type = 0;
    CHECK_INT_EQ(wisp_ipc_frame_ready(req->data, req->len, &type), (long)req->len);
    CHECK_INT_EQ(type, WISP_IPC_DEVICE_REQ);
    struct wisp_rd rd = {.p = req->data + WISP_IPC_HEADER, .left = req->len - WISP_IPC_HEADER};
    CHECK_INT_EQ(wisp_devcall_decode_req(&rd, &f->got), 0);
    (void)snprintf(f->name, sizeof(f->name), "%s", f->got.name);
    struct wisp_buf out;
    wisp_buf_init(&out);
    struct wisp_devcall_reading r = {.value = 21.5, .unit = "°C", .time_ns = 1234567890123ULL};
    wisp_devcall_encode_reply(&out, f->status, f->msg, f->got.op == WISP_DEVCALL_SENSOR ? &r : NULL,
                              f->got.value > 0);
    /* The executor gets the body of the reply frame. */
    wisp_buf_reset(reply);
    size_t body = out.len - WISP_IPC_HEADER;
    wisp_buf_put(reply, out.data + WISP_IPC_HEADER, f->garble ? body / 2 : body);
    wisp_buf_fini(&out);
    return 0;
}

static void test_sensor(void)
{
    struct fake_sup f = {0};
    struct wisp_state st;
    struct wisp_devcall_reading r;
    char err[256];
    wisp_state_init(&st, fake_rpc, &f);
    CHECK_INT_EQ(wisp_devcall_sensor(&st, "cpu-temp", &r, err, sizeof(err)), 0);
    CHECK_INT_EQ(f.got.op, WISP_DEVCALL_SENSOR);
    CHECK_STR_EQ(f.name, "cpu-temp");
    CHECK(r.value == 21.5);
    CHECK_STR_EQ(r.unit, "°C");
    CHECK(r.time_ns == 1234567890123ULL);

    f.status = -ENOENT;
    f.msg = "sensor \"x\" is not configured (configured: cpu-temp)";
    CHECK_INT_EQ(wisp_devcall_sensor(&st, "x", &r, err, sizeof(err)), -ENOENT);
    CHECK_STR_EQ(err, "sensor \"x\" is not configured (configured: cpu-temp)");

    /* cppcheck-suppress redundantAssignment ; fake_rpc reads it through st */
    f.status = 0;
    f.garble = true;
    CHECK_INT_EQ(wisp_devcall_sensor(&st, "cpu-temp", &r, err, sizeof(err)), -EIO);
    CHECK_STR_EQ(err, "malformed reply from the supervisor");

    CHECK_INT_EQ(wisp_devcall_sensor(&st, "", &r, err, sizeof(err)), -EINVAL);
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    int calls = f.calls;
    CHECK_INT_EQ(wisp_devcall_sensor(&st, longname, &r, err, sizeof(err)), -EINVAL);
    CHECK_INT_EQ(f.calls, calls); /* refused before anything was sent */
    wisp_state_fini(&st);

    /* No supervisor (wisp validate, tests): a clear error, no crash. */
    wisp_state_init(&st, NULL, NULL);
    CHECK_INT_EQ(wisp_devcall_sensor(&st, "cpu-temp", &r, err, sizeof(err)), -ENOTSUP);
    CHECK_CONTAINS(err, "no sensors or GPIO lines are available here");
    CHECK_INT_EQ(wisp_devcall_sensor(NULL, "cpu-temp", &r, err, sizeof(err)), -ENOTSUP);
    wisp_state_fini(&st);
}

static void test_gpio(void)
{
    struct fake_sup f = {0};
    struct wisp_state st;
    char err[256];
    int v = -7;
    wisp_state_init(&st, fake_rpc, &f);
    CHECK_INT_EQ(wisp_devcall_gpio(&st, "gpiochip0", 18, 1, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(f.got.op, WISP_DEVCALL_GPIO_SET);
    CHECK_INT_EQ(f.got.line, 18);
    CHECK_INT_EQ(f.got.value, 1);
    CHECK_INT_EQ(v, 1);
    CHECK_INT_EQ(wisp_devcall_gpio(&st, "gpiochip0", 4, -1, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(f.got.op, WISP_DEVCALL_GPIO_GET);
    CHECK_INT_EQ(v, 0);
    CHECK_INT_EQ(wisp_devcall_gpio(&st, "gpiochip0", 4, 2, &v, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "a GPIO value must be 0 or 1, got 2");
    f.status = -EPERM;
    f.msg = "gpiochip0 line 19: this function may drive only lines listed in function.json's "
            "\"gpio.outputs\"";
    CHECK_INT_EQ(wisp_devcall_gpio(&st, "gpiochip0", 19, 1, &v, err, sizeof(err)), -EPERM);
    CHECK_CONTAINS(err, "may drive only lines listed");
    wisp_state_fini(&st);
}

/* Malformed requests are refused by the supervisor's decoder. */
static void test_decode_bad(void)
{
    struct wisp_buf b;
    struct wisp_devcall_req req;
    wisp_buf_init(&b);
    /* op out of range */
    wisp_buf_put_u32(&b, 9);
    wisp_buf_put_bytes(&b, "x", 2);
    wisp_buf_put_u32(&b, 0);
    wisp_buf_put_u32(&b, 0);
    struct wisp_rd rd = {.p = b.data, .left = b.len};
    CHECK_INT_EQ(wisp_devcall_decode_req(&rd, &req), -EPROTO);
    /* name without its NUL, and with one inside */
    const char *const names[] = {"xy", "x\0y"};
    for (size_t i = 0; i < 2; i++) {
        wisp_buf_reset(&b);
        wisp_buf_put_u32(&b, WISP_DEVCALL_SENSOR);
        wisp_buf_put_bytes(&b, names[i], i == 0 ? 2 : 4);
        wisp_buf_put_u32(&b, 0);
        wisp_buf_put_u32(&b, 0);
        rd = (struct wisp_rd){.p = b.data, .left = b.len};
        CHECK_INT_EQ(wisp_devcall_decode_req(&rd, &req), -EPROTO);
    }
    /* truncated */
    rd = (struct wisp_rd){.p = b.data, .left = b.len - 1};
    CHECK_INT_EQ(wisp_devcall_decode_req(&rd, &req), -EPROTO);
    wisp_buf_fini(&b);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"sensor", test_sensor},
        {"gpio", test_gpio},
        {"decode_bad", test_decode_bad},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
