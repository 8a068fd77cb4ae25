/* The supervisor <-> executor protocol (runtime/src/ipc.c): message codecs,
 * frame boundaries, truncated and malformed frames, and the blocking
 * helpers over a real socketpair. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "devcall.h"
#include "engine.h"
#include "fnspec.h"
#include "ipc.h"
#include "state.h"
#include "testutil.h"

/* A reader over the body of the frame in b (header skipped). */
static struct wisp_rd body_of(const struct wisp_buf *b)
{
    struct wisp_rd r = {.p = b->data + WISP_IPC_HEADER, .left = b->len - WISP_IPC_HEADER};
    return r;
}

/* Checks the header of a finished frame: its length field and type. */
static void check_header(const struct wisp_buf *b, enum wisp_ipc_type want)
{
    CHECK(!b->oom);
    CHECK(b->len >= WISP_IPC_HEADER);
    uint32_t body;
    memcpy(&body, b->data, sizeof(body));
    CHECK_INT_EQ(body, b->len - WISP_IPC_HEADER);
    enum wisp_ipc_type type = 0;
    CHECK_INT_EQ(wisp_ipc_frame_ready(b->data, b->len, &type), (long)b->len);
    CHECK_INT_EQ(type, want);
}

/* Decodes a body of `type`, freeing what the decoder allocated. */
static int decode_any(enum wisp_ipc_type type, struct wisp_rd *r)
{
    int rc = -EINVAL;
    switch (type) {
    case WISP_IPC_LOAD: {
        struct wisp_fnspec *s = NULL;
        rc = wisp_ipc_decode_load(r, &s);
        wisp_fnspec_destroy(s);
        break;
    }
    case WISP_IPC_LOADED: {
        struct wisp_ipc_loaded l = {0};
        rc = wisp_ipc_decode_loaded(r, &l);
        free(l.err);
        break;
    }
    case WISP_IPC_INVOKE: {
        struct wisp_event ev;
        uint64_t seq;
        rc = wisp_ipc_decode_invoke(r, &seq, &ev);
        break;
    }
    case WISP_IPC_RESULT: {
        struct wisp_result res;
        uint64_t seq;
        bool recycled;
        rc = wisp_ipc_decode_result(r, &seq, &res, &recycled);
        wisp_result_fini(&res);
        break;
    }
    case WISP_IPC_STATE_REQ: {
        struct wisp_state_req req;
        rc = wisp_state_decode_req(r, &req);
        break;
    }
    case WISP_IPC_DEVICE_REQ: {
        struct wisp_devcall_req req;
        rc = wisp_devcall_decode_req(r, &req);
        break;
    }
    case WISP_IPC_STATE_REPLY:
        break;
    }
    return rc;
}

/* Every prefix of a valid frame is "not ready", and every prefix of its
 * body decodes as an error. Each prefix is copied into a buffer of exactly
 * its size so that ASan catches a decoder reading past it. */
static void check_truncations(const struct wisp_buf *b, enum wisp_ipc_type type)
{
    for (size_t n = 0; n < b->len; n++) {
        char *copy = malloc(n ? n : 1);
        CHECK(copy != NULL);
        if (!copy)
            return;
        memcpy(copy, b->data, n);
        enum wisp_ipc_type t = 0;
        long ready = wisp_ipc_frame_ready(copy, n, &t);
        if (ready != 0)
            (void)fprintf(stderr, "type %d: prefix %zu of %zu is ready (%ld)\n", type, n, b->len,
                          ready);
        CHECK_INT_EQ(ready, 0);
        free(copy);
    }
    size_t body = b->len - WISP_IPC_HEADER;
    for (size_t k = 0; k < body; k++) {
        char *copy = malloc(k ? k : 1);
        CHECK(copy != NULL);
        if (!copy)
            return;
        memcpy(copy, b->data + WISP_IPC_HEADER, k);
        struct wisp_rd r = {.p = copy, .left = k};
        int rc = decode_any(type, &r);
        if (rc != -EPROTO)
            (void)fprintf(stderr, "type %d: body prefix %zu of %zu decoded (%d)\n", type, k, body,
                          rc);
        CHECK_INT_EQ(rc, -EPROTO);
        free(copy);
    }
    /* The whole body decodes. */
    struct wisp_rd r = body_of(b);
    CHECK_INT_EQ(decode_any(type, &r), 0);
}

static void test_load_round_trip(void)
{
    char name[] = "door-watch", version[] = "5c1d0e2f9a31", dir[] = "/srv/fns/door-watch",
         handler[] = "src/handler.lua";
    char k1[] = "NOTIFY", v1[] = "notify/phone", k2[] = "EMPTY", v2[] = "";
    struct wisp_env_var env[] = {{k1, v1}, {k2, v2}};
    struct wisp_fnspec spec = {
        .dir = dir,
        .name = name,
        .version = version,
        .runtime = WISP_RUNTIME_LUA,
        .handler = handler,
        .memory_kb = 512,
        .timeout_ms = 200,
        .concurrency = 7,
        .env = env,
        .n_env = 2,
    };
    struct wisp_buf b;
    wisp_buf_init(&b);
    wisp_ipc_encode_load(&b, &spec);
    check_header(&b, WISP_IPC_LOAD);
    struct wisp_rd r = body_of(&b);
    struct wisp_fnspec *got = NULL;
    CHECK_INT_EQ(wisp_ipc_decode_load(&r, &got), 0);
    CHECK(got != NULL);
    if (got) {
        CHECK_STR_EQ(got->name, "door-watch");
        CHECK_STR_EQ(got->version, "5c1d0e2f9a31");
        CHECK_STR_EQ(got->dir, "/srv/fns/door-watch");
        CHECK_STR_EQ(got->origin, "/srv/fns/door-watch/function.json");
        CHECK_STR_EQ(got->handler, "src/handler.lua");
        CHECK_INT_EQ(got->runtime, WISP_RUNTIME_LUA);
        CHECK_INT_EQ(got->memory_kb, 512);
        CHECK_INT_EQ(got->timeout_ms, 200);
        CHECK_INT_EQ(got->concurrency, 1); /* not sent: an executor runs one at a time */
        CHECK_INT_EQ(got->n_env, 2);
        CHECK_STR_EQ(wisp_fnspec_env(got, "NOTIFY"), "notify/phone");
        CHECK_STR_EQ(wisp_fnspec_env(got, "EMPTY"), "");
        CHECK(wisp_fnspec_env(got, "OTHER") == NULL);
        wisp_fnspec_destroy(got);
    }
    check_truncations(&b, WISP_IPC_LOAD);

    /* No env at all. */
    spec.n_env = 0;
    spec.env = NULL;
    wisp_ipc_encode_load(&b, &spec);
    r = body_of(&b);
    got = NULL;
    CHECK_INT_EQ(wisp_ipc_decode_load(&r, &got), 0);
    CHECK(got && got->n_env == 0 && got->env == NULL);
    wisp_fnspec_destroy(got);

    /* An env count past WISP_MAX_ENV is refused before allocating. */
    wisp_ipc_frame_begin(&b, WISP_IPC_LOAD);
    for (int i = 0; i < 4; i++)
        wisp_buf_put_str(&b, "x");
    for (int i = 0; i < 3; i++)
        wisp_buf_put_u32(&b, 1);
    wisp_buf_put_u32(&b, WISP_MAX_ENV + 1);
    for (unsigned i = 0; i < WISP_MAX_ENV + 1; i++) {
        wisp_buf_put_str(&b, "K");
        wisp_buf_put_str(&b, "V");
    }
    wisp_ipc_frame_end(&b);
    r = body_of(&b);
    got = NULL;
    CHECK_INT_EQ(wisp_ipc_decode_load(&r, &got), -EPROTO);
    CHECK(got == NULL);
    wisp_buf_fini(&b);
}

static void test_loaded_round_trip(void)
{
    struct wisp_buf b;
    wisp_buf_init(&b);
    wisp_ipc_encode_loaded(&b, 0, NULL, 123456789ULL, 40960);
    check_header(&b, WISP_IPC_LOADED);
    struct wisp_rd r = body_of(&b);
    struct wisp_ipc_loaded l = {0};
    CHECK_INT_EQ(wisp_ipc_decode_loaded(&r, &l), 0);
    CHECK_INT_EQ(l.status, 0);
    CHECK_STR_EQ(l.err, ""); /* NULL travels as an empty string */
    CHECK_INT_EQ(l.init_ns, 123456789);
    CHECK_INT_EQ(l.mem_bytes, 40960);
    free(l.err);
    check_truncations(&b, WISP_IPC_LOADED);

    wisp_ipc_encode_loaded(&b, -EINVAL, "handler.lua:3: unexpected symbol", UINT64_MAX, 0);
    r = body_of(&b);
    CHECK_INT_EQ(wisp_ipc_decode_loaded(&r, &l), 0);
    CHECK_INT_EQ(l.status, -EINVAL);
    CHECK_STR_EQ(l.err, "handler.lua:3: unexpected symbol");
    CHECK(l.init_ns == UINT64_MAX);
    free(l.err);
    check_truncations(&b, WISP_IPC_LOADED);
    wisp_buf_fini(&b);
}

static void test_invoke_round_trip(void)
{
    static const char payload[] = {'{', '\0', 'x', '\0', '\xff', '}'};
    struct wisp_event ev = wisp_test_event("home/garage/door", payload, sizeof(payload), 2);
    ev.id = "b00t-42";
    ev.time = "2026-11-27T02:30:00.120Z";
    ev.retain = 1;
    struct wisp_buf b;
    wisp_buf_init(&b);
    wisp_ipc_encode_invoke(&b, 0x0102030405060708ULL, &ev);
    check_header(&b, WISP_IPC_INVOKE);
    struct wisp_rd r = body_of(&b);
    struct wisp_event got;
    uint64_t seq = 0;
    CHECK_INT_EQ(wisp_ipc_decode_invoke(&r, &seq, &got), 0);
    CHECK(seq == 0x0102030405060708ULL);
    CHECK_STR_EQ(got.id, "b00t-42");
    CHECK_STR_EQ(got.source, "wisp://gw1/mqtt");
    CHECK_STR_EQ(got.type, "wisp.mqtt.message");
    CHECK_STR_EQ(got.time, "2026-11-27T02:30:00.120Z");
    CHECK_STR_EQ(got.subject, "home/garage/door");
    CHECK_INT_EQ(got.payload_len, sizeof(payload));
    CHECK(got.payload && memcmp(got.payload, payload, sizeof(payload)) == 0);
    CHECK_INT_EQ(got.qos, 2);
    CHECK_INT_EQ(got.retain, 1);
    check_truncations(&b, WISP_IPC_INVOKE);

    /* No subject (wisp run), an empty payload, qos -1 (not MQTT). */
    ev.subject = NULL;
    ev.payload = NULL;
    ev.payload_len = 0;
    ev.qos = -1;
    ev.retain = 0;
    wisp_ipc_encode_invoke(&b, 1, &ev);
    r = body_of(&b);
    CHECK_INT_EQ(wisp_ipc_decode_invoke(&r, &seq, &got), 0);
    CHECK_INT_EQ(seq, 1);
    CHECK(got.subject == NULL);
    CHECK_INT_EQ(got.payload_len, 0);
    CHECK_INT_EQ(got.qos, -1);
    CHECK_INT_EQ(got.retain, 0);
    check_truncations(&b, WISP_IPC_INVOKE);

    /* An empty subject is not the same as none. */
    ev.subject = "";
    wisp_ipc_encode_invoke(&b, 2, &ev);
    r = body_of(&b);
    CHECK_INT_EQ(wisp_ipc_decode_invoke(&r, &seq, &got), 0);
    CHECK_STR_EQ(got.subject, "");

    /* A string sent without its NUL is refused (it could not be borrowed). */
    wisp_ipc_frame_begin(&b, WISP_IPC_INVOKE);
    wisp_buf_put_u64(&b, 3);
    wisp_buf_put_bytes(&b, "id", 2);
    wisp_ipc_frame_end(&b);
    r = body_of(&b);
    CHECK_INT_EQ(wisp_ipc_decode_invoke(&r, &seq, &got), -EPROTO);
    wisp_buf_fini(&b);
}

static void test_result_round_trip(void)
{
    struct wisp_result res;
    wisp_result_init(&res);
    static const char bin[] = {'a', '\0', 'b'};
    CHECK_INT_EQ(wisp_result_add_publish(&res, "alerts/kitchen", "{\"t\":31.5}", 10, 1, 0), 0);
    CHECK_INT_EQ(wisp_result_add_publish(&res, "raw/bin", bin, sizeof(bin), 0, 1), 0);
    CHECK_INT_EQ(wisp_result_add_publish(&res, "empty", "", 0, 2, 0), 0);
    res.outcome = WISP_OUTCOME_OK;
    res.duration_ns = 61000;
    res.mem_peak_bytes = 31744; /* 31 KiB */

    struct wisp_buf b;
    wisp_buf_init(&b);
    wisp_ipc_encode_result(&b, 99, &res, false);
    check_header(&b, WISP_IPC_RESULT);
    struct wisp_rd r = body_of(&b);
    struct wisp_result got;
    uint64_t seq = 0;
    bool recycled = true;
    CHECK_INT_EQ(wisp_ipc_decode_result(&r, &seq, &got, &recycled), 0);
    CHECK_INT_EQ(seq, 99);
    CHECK(!recycled);
    CHECK_INT_EQ(got.outcome, WISP_OUTCOME_OK);
    CHECK(got.error == NULL);
    CHECK_INT_EQ(got.duration_ns, 61000);
    CHECK_INT_EQ(got.mem_peak_bytes, 31744);
    CHECK_INT_EQ(got.n_pubs, 3);
    if (got.n_pubs == 3) {
        CHECK_STR_EQ(got.pubs[0].topic, "alerts/kitchen");
        CHECK_INT_EQ(got.pubs[0].payload_len, 10);
        CHECK(memcmp(got.pubs[0].payload, "{\"t\":31.5}", 10) == 0);
        CHECK_INT_EQ(got.pubs[0].qos, 1);
        CHECK_INT_EQ(got.pubs[0].retain, 0);
        CHECK_STR_EQ(got.pubs[1].topic, "raw/bin");
        CHECK_INT_EQ(got.pubs[1].payload_len, 3);
        CHECK(memcmp(got.pubs[1].payload, bin, 3) == 0);
        CHECK_INT_EQ(got.pubs[1].qos, 0);
        CHECK_INT_EQ(got.pubs[1].retain, 1);
        CHECK_STR_EQ(got.pubs[2].topic, "empty");
        CHECK_INT_EQ(got.pubs[2].payload_len, 0);
        CHECK_INT_EQ(got.pubs[2].qos, 2);
    }
    wisp_result_fini(&got);
    check_truncations(&b, WISP_IPC_RESULT);

    /* A failure: error string, no publishes, recycled. */
    wisp_result_fini(&res);
    wisp_result_set_error(&res, WISP_OUTCOME_TIMEOUT, "timeout: handler exceeded 100 ms");
    wisp_ipc_encode_result(&b, 100, &res, true);
    r = body_of(&b);
    CHECK_INT_EQ(wisp_ipc_decode_result(&r, &seq, &got, &recycled), 0);
    CHECK_INT_EQ(seq, 100);
    CHECK(recycled);
    CHECK_INT_EQ(got.outcome, WISP_OUTCOME_TIMEOUT);
    CHECK_STR_EQ(got.error, "timeout: handler exceeded 100 ms");
    CHECK_INT_EQ(got.n_pubs, 0);
    wisp_result_fini(&got);
    check_truncations(&b, WISP_IPC_RESULT);

    /* An empty error string survives as empty, not as NULL. */
    wisp_result_set_error(&res, WISP_OUTCOME_ERROR, "");
    wisp_ipc_encode_result(&b, 101, &res, false);
    r = body_of(&b);
    CHECK_INT_EQ(wisp_ipc_decode_result(&r, &seq, &got, &recycled), 0);
    CHECK_STR_EQ(got.error, "");
    wisp_result_fini(&got);

    /* The cap itself (1000 publishes) is accepted. */
    wisp_result_fini(&res);
    for (unsigned i = 0; i < WISP_MAX_PUBLISHES_PER_INVOCATION; i++)
        CHECK_INT_EQ(wisp_result_add_publish(&res, "t", "1", 1, 0, 0), 0);
    wisp_ipc_encode_result(&b, 102, &res, false);
    r = body_of(&b);
    CHECK_INT_EQ(wisp_ipc_decode_result(&r, &seq, &got, &recycled), 0);
    CHECK_INT_EQ(got.n_pubs, WISP_MAX_PUBLISHES_PER_INVOCATION);
    wisp_result_fini(&got);
    wisp_result_fini(&res);
    wisp_buf_fini(&b);
}

/* A RESULT frame written field by field, so that values the encoder would
 * never produce can be sent: n_pubs complete publish records follow. */
static void put_result(struct wisp_buf *b, uint32_t outcome, uint32_t n_pubs, uint32_t qos)
{
    wisp_ipc_frame_begin(b, WISP_IPC_RESULT);
    wisp_buf_put_u64(b, 7);       /* seq */
    wisp_buf_put_u32(b, outcome); /* outcome */
    wisp_buf_put_u32(b, 0);       /* error: absent */
    wisp_buf_put_str(b, NULL);
    wisp_buf_put_u64(b, 1); /* duration */
    wisp_buf_put_u64(b, 2); /* memory */
    wisp_buf_put_u32(b, 0); /* recycled */
    wisp_buf_put_u32(b, n_pubs);
    for (uint32_t i = 0; i < n_pubs; i++) {
        wisp_buf_put_bytes(b, "t", 2); /* topics travel with their NUL */
        wisp_buf_put_bytes(b, "p", 1);
        wisp_buf_put_u32(b, qos);
        wisp_buf_put_u32(b, 0);
    }
    wisp_buf_put_u32(b, 0); /* state reads */
    wisp_buf_put_u32(b, 0); /* state writes */
    wisp_ipc_frame_end(b);
}

static int decode_result_frame(const struct wisp_buf *b, size_t *n_pubs)
{
    struct wisp_rd r = body_of(b);
    struct wisp_result res;
    uint64_t seq;
    bool recycled;
    int rc = wisp_ipc_decode_result(&r, &seq, &res, &recycled);
    *n_pubs = res.n_pubs;
    wisp_result_fini(&res);
    return rc;
}

static void test_result_rejects(void)
{
    struct wisp_buf b;
    size_t n = 0;
    wisp_buf_init(&b);
    /* The hand-built frame is a valid one to begin with. */
    put_result(&b, WISP_OUTCOME_OK, 2, 2);
    CHECK_INT_EQ(decode_result_frame(&b, &n), 0);
    CHECK_INT_EQ(n, 2);
    put_result(&b, WISP_OUTCOME_REJECTED, 0, 0);
    CHECK_INT_EQ(decode_result_frame(&b, &n), 0);

    put_result(&b, WISP_OUTCOME_REJECTED + 1, 0, 0);
    CHECK_INT_EQ(decode_result_frame(&b, &n), -EPROTO);
    put_result(&b, UINT32_MAX, 0, 0);
    CHECK_INT_EQ(decode_result_frame(&b, &n), -EPROTO);
    put_result(&b, WISP_OUTCOME_OK, WISP_MAX_PUBLISHES_PER_INVOCATION + 1, 0);
    CHECK_INT_EQ(decode_result_frame(&b, &n), -EPROTO);
    CHECK_INT_EQ(n, 0);
    /* A count with nothing behind it. */
    wisp_ipc_frame_begin(&b, WISP_IPC_RESULT);
    wisp_buf_put_u64(&b, 7);
    for (int i = 0; i < 2; i++)
        wisp_buf_put_u32(&b, 0);
    wisp_buf_put_str(&b, NULL);
    wisp_buf_put_u64(&b, 1);
    wisp_buf_put_u64(&b, 2);
    wisp_buf_put_u32(&b, 0);
    wisp_buf_put_u32(&b, UINT32_MAX);
    wisp_ipc_frame_end(&b);
    CHECK_INT_EQ(decode_result_frame(&b, &n), -EPROTO);

    /* QoS 3 does not exist: the whole result is malformed, not cut short. */
    put_result(&b, WISP_OUTCOME_OK, 1, 3);
    CHECK_INT_EQ(decode_result_frame(&b, &n), -EPROTO);
    CHECK_INT_EQ(n, 0);
    put_result(&b, WISP_OUTCOME_OK, 3, 3);
    CHECK_INT_EQ(decode_result_frame(&b, &n), -EPROTO);
    wisp_buf_fini(&b);
}

static void test_frame_ready(void)
{
    struct wisp_buf b;
    enum wisp_ipc_type type = 0;
    wisp_buf_init(&b);
    wisp_ipc_encode_loaded(&b, 0, "ok", 1, 2);
    size_t one = b.len;
    /* Two frames back to back: the first is reported alone. */
    char *two = malloc(2 * one);
    CHECK(two != NULL);
    if (two) {
        memcpy(two, b.data, one);
        memcpy(two + one, b.data, one);
        CHECK_INT_EQ(wisp_ipc_frame_ready(two, 2 * one, &type), (long)one);
        CHECK_INT_EQ(type, WISP_IPC_LOADED);
        CHECK_INT_EQ(wisp_ipc_frame_ready(two + one, one, &type), (long)one);
        CHECK_INT_EQ(wisp_ipc_frame_ready(two + one, one - 1, &type), 0);
        free(two);
    }
    /* Headers only: partial, then complete with an empty body. */
    char hdr[WISP_IPC_HEADER] = {0, 0, 0, 0, WISP_IPC_RESULT};
    for (size_t n = 0; n < WISP_IPC_HEADER; n++)
        CHECK_INT_EQ(wisp_ipc_frame_ready(hdr, n, &type), 0);
    CHECK_INT_EQ(wisp_ipc_frame_ready(hdr, WISP_IPC_HEADER, &type), (long)WISP_IPC_HEADER);
    CHECK_INT_EQ(type, WISP_IPC_RESULT);
    /* A length at the limit waits for its body; one past it is refused. */
    uint32_t len = WISP_IPC_MAX_FRAME;
    memcpy(hdr, &len, sizeof(len));
    CHECK_INT_EQ(wisp_ipc_frame_ready(hdr, WISP_IPC_HEADER, &type), 0);
    len = WISP_IPC_MAX_FRAME + 1;
    memcpy(hdr, &len, sizeof(len));
    CHECK_INT_EQ(wisp_ipc_frame_ready(hdr, WISP_IPC_HEADER, &type), -EPROTO);
    len = UINT32_MAX;
    memcpy(hdr, &len, sizeof(len));
    CHECK_INT_EQ(wisp_ipc_frame_ready(hdr, WISP_IPC_HEADER, &type), -EPROTO);
    wisp_buf_fini(&b);
}

static void test_reader(void)
{
    /* A byte string whose length runs past the frame. */
    char raw[8];
    uint32_t len = 100;
    memcpy(raw, &len, sizeof(len));
    memcpy(raw + 4, (const char[4]){'a', 'b', 'c', 'd'}, 4);
    struct wisp_rd r = {.p = raw, .left = sizeof(raw)};
    size_t n = 99;
    CHECK(wisp_rd_bytes(&r, &n) == NULL);
    CHECK_INT_EQ(n, 0);
    CHECK(r.bad);
    /* Once bad, everything after reads as zero. */
    CHECK_INT_EQ(wisp_rd_u32(&r), 0);
    CHECK_INT_EQ(wisp_rd_u64(&r), 0);
    CHECK(wisp_rd_strdup(&r) == NULL);

    len = 4;
    memcpy(raw, &len, sizeof(len));
    r = (struct wisp_rd){.p = raw, .left = sizeof(raw)};
    char *s = wisp_rd_strdup(&r);
    CHECK_STR_EQ(s, "abcd");
    CHECK_INT_EQ(r.left, 0);
    CHECK(!r.bad);
    free(s);
}

/* Writes one frame from a child process; the parent reads it. */
static void test_socket_large_frame(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    int sndbuf = 0;
    socklen_t sl = sizeof(sndbuf);
    CHECK(getsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl) == 0);
    /* Several times what the socket holds, so both sides must loop. */
    size_t big = (size_t)4 << 20;
    if ((size_t)sndbuf * 4 > big)
        big = (size_t)sndbuf * 4;
    char *payload = malloc(big);
    CHECK(payload != NULL);
    if (!payload)
        return;
    for (size_t i = 0; i < big; i++)
        payload[i] = (char)(i * 31 + (i >> 13));
    struct wisp_event ev = wisp_test_event("big/topic", payload, big, 1);
    struct wisp_buf b;
    wisp_buf_init(&b);
    wisp_ipc_encode_invoke(&b, 5, &ev);
    CHECK(!b.oom);

    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        int rc = wisp_ipc_write_all(sv[1], b.data, b.len);
        /* A second, small frame right behind it. */
        struct wisp_buf s;
        wisp_buf_init(&s);
        wisp_ipc_encode_loaded(&s, 0, NULL, 1, 1);
        if (rc == 0)
            rc = wisp_ipc_write_all(sv[1], s.data, s.len);
        _exit(rc == 0 ? 0 : 1);
    }
    close(sv[1]);
    struct wisp_buf in;
    enum wisp_ipc_type type = 0;
    wisp_buf_init(&in);
    CHECK_INT_EQ(wisp_ipc_read_frame(sv[0], &in, &type), 0);
    CHECK_INT_EQ(type, WISP_IPC_INVOKE);
    CHECK_INT_EQ(in.len, b.len - WISP_IPC_HEADER);
    struct wisp_rd r = {.p = in.data, .left = in.len};
    struct wisp_event got;
    uint64_t seq = 0;
    CHECK_INT_EQ(wisp_ipc_decode_invoke(&r, &seq, &got), 0);
    CHECK_INT_EQ(seq, 5);
    CHECK_INT_EQ(got.payload_len, big);
    CHECK(got.payload_len == big && memcmp(got.payload, payload, big) == 0);
    CHECK_INT_EQ(wisp_ipc_read_frame(sv[0], &in, &type), 0);
    CHECK_INT_EQ(type, WISP_IPC_LOADED);
    /* Then the peer is gone. */
    CHECK_INT_EQ(wisp_ipc_read_frame(sv[0], &in, &type), -EPIPE);
    int status = wisp_test_wait_exit(pid, 10000);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(sv[0]);
    wisp_buf_fini(&in);
    wisp_buf_fini(&b);
    free(payload);
}

static void test_socket_errors(void)
{
    int sv[2];
    struct wisp_buf in;
    enum wisp_ipc_type type = 0;
    wisp_buf_init(&in);

    /* A header cut short by the peer closing. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK_INT_EQ(wisp_ipc_write_all(sv[1], "\x03\x00", 2), 0);
    close(sv[1]);
    CHECK_INT_EQ(wisp_ipc_read_frame(sv[0], &in, &type), -EPIPE);
    close(sv[0]);

    /* A body cut short. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK_INT_EQ(wisp_ipc_write_all(sv[1],
                                    "\x08\x00\x00\x00\x02"
                                    "abc",
                                    8),
                 0);
    close(sv[1]);
    CHECK_INT_EQ(wisp_ipc_read_frame(sv[0], &in, &type), -EPIPE);
    close(sv[0]);

    /* An oversize length is refused without reading (or allocating) it. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    uint32_t len = WISP_IPC_MAX_FRAME + 1;
    char hdr[WISP_IPC_HEADER] = {0, 0, 0, 0, WISP_IPC_INVOKE};
    memcpy(hdr, &len, sizeof(len));
    CHECK_INT_EQ(wisp_ipc_write_all(sv[1], hdr, sizeof(hdr)), 0);
    CHECK_INT_EQ(wisp_ipc_read_frame(sv[0], &in, &type), -EPROTO);
    close(sv[1]);
    close(sv[0]);

    /* An empty body is a frame. */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    char empty[WISP_IPC_HEADER] = {0, 0, 0, 0, WISP_IPC_LOADED};
    CHECK_INT_EQ(wisp_ipc_write_all(sv[1], empty, sizeof(empty)), 0);
    CHECK_INT_EQ(wisp_ipc_read_frame(sv[0], &in, &type), 0);
    CHECK_INT_EQ(type, WISP_IPC_LOADED);
    CHECK_INT_EQ(in.len, 0);

    /* Writing to a closed peer fails with EPIPE instead of raising SIGPIPE. */
    close(sv[0]);
    CHECK_INT_EQ(wisp_ipc_write_all(sv[1], "abc", 3), -EPIPE);
    close(sv[1]);
    wisp_buf_fini(&in);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"load_round_trip", test_load_round_trip},
        {"loaded_round_trip", test_loaded_round_trip},
        {"invoke_round_trip", test_invoke_round_trip},
        {"result_round_trip", test_result_round_trip},
        {"result_rejects", test_result_rejects},
        {"frame_ready", test_frame_ready},
        {"reader", test_reader},
        {"socket_large_frame", test_socket_large_frame},
        {"socket_errors", test_socket_errors},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
