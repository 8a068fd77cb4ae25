/*
 * ctx.state end to end inside one process: the Lua engine and the
 * executor-side buffer (state.c) talk to a real LMDB store through the
 * same request/reply frames the supervisor answers (pool_durable.c does
 * the same calls), and results travel through a real RESULT frame before
 * they are applied. Covers semantics (read-your-writes, incr, keys merge,
 * delete), errors the handler sees, rollback on error and conflicts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine.h"
#include "fnspec.h"
#include "ipc.h"
#include "state.h"
#include "store.h"
#include "testutil.h"

static struct {
    char data[64], fn_dir[64];
    struct wisp_store *store;
    struct wisp_fnspec spec;
    void *inst;
    struct wisp_state st;
} T;

static int add_key(void *ud, const char *key, size_t klen, const char *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    wisp_state_keys_reply_add(ud, key, klen);
    return 0;
}

/* The supervisor's side, as in pool_durable.c: decode, ask the store,
 * encode the reply. The reply buffer gets the frame body only. */
static int rpc(void *ud, struct wisp_buf *req, struct wisp_buf *reply)
{
    (void)ud;
    enum wisp_ipc_type type;
    long n = wisp_ipc_frame_ready(req->data, req->len, &type);
    if (n <= 0 || type != WISP_IPC_STATE_REQ)
        return -EPROTO;
    struct wisp_rd rd = {.p = req->data + WISP_IPC_HEADER, .left = (size_t)n - WISP_IPC_HEADER};
    struct wisp_state_req r;
    if (wisp_state_decode_req(&rd, &r) != 0)
        return -EPROTO;
    struct wisp_buf out;
    wisp_buf_init(&out);
    if (r.op == WISP_STATE_GET) {
        const char *val = NULL;
        size_t vlen = 0;
        uint64_t version = 0;
        int rc = wisp_store_state_get(T.store, "counter", r.key, r.klen, &val, &vlen, &version);
        wisp_state_encode_get_reply(&out, rc, val, vlen, version);
    } else {
        wisp_state_keys_reply_begin(&out);
        int rc = wisp_store_state_keys(T.store, "counter", r.key, r.klen, r.limit, add_key, &out);
        wisp_state_keys_reply_end(&out, rc);
    }
    wisp_buf_reset(reply);
    wisp_buf_put(reply, out.data + WISP_IPC_HEADER, out.len - WISP_IPC_HEADER);
    wisp_buf_fini(&out);
    return 0;
}

static void setup(const char *src)
{
    memset(&T, 0, sizeof(T));
    CHECK(wisp_test_mkdtemp(T.data, sizeof(T.data), "state-data"));
    CHECK(wisp_test_mkdtemp(T.fn_dir, sizeof(T.fn_dir), "state-fn"));
    wisp_test_write(T.fn_dir, "handler.lua", src);
    struct wisp_store_config sc = {.dir = T.data};
    char err[256];
    CHECK_INT_EQ(wisp_store_open(&sc, &T.store, err, sizeof(err)), 0);
    T.spec.dir = T.fn_dir;
    T.spec.name = "counter";
    T.spec.version = "v1";
    T.spec.handler = "handler.lua";
    T.spec.memory_kb = 1024;
    T.spec.timeout_ms = 1000;
    CHECK_INT_EQ(wisp_engine_lua.create(&T.spec, &T.inst, err, sizeof(err)), 0);
    wisp_state_init(&T.st, rpc, NULL);
}

static void teardown(void)
{
    wisp_engine_lua.destroy(T.inst);
    wisp_state_fini(&T.st);
    wisp_store_close(T.store);
    wisp_test_rmtree(T.data);
    wisp_test_rmtree(T.fn_dir);
}

/* One invocation with payload; its result goes through a RESULT frame and
 * is applied. Returns the apply's code (or -1 when the handler failed);
 * err gets the handler's error. */
static int invoke(const char *payload, char *err, size_t errlen)
{
    struct wisp_event ev = wisp_test_event("t/a", payload, strlen(payload), 1);
    struct wisp_result res;
    wisp_state_reset(&T.st);
    ev.state = &T.st;
    (void)wisp_engine_lua.invoke(T.inst, &ev, &res);
    err[0] = '\0';
    if (res.error)
        (void)snprintf(err, errlen, "%s", res.error);
    res.state = &T.st;
    struct wisp_buf b;
    wisp_buf_init(&b);
    wisp_ipc_encode_result(&b, 1, &res, false);
    enum wisp_outcome outcome = res.outcome;
    wisp_result_fini(&res);
    struct wisp_rd rd = {.p = b.data + WISP_IPC_HEADER, .left = b.len - WISP_IPC_HEADER};
    uint64_t seq;
    bool recycled;
    struct wisp_result dec;
    CHECK_INT_EQ(wisp_ipc_decode_result(&rd, &seq, &dec, &recycled), 0);
    int rc = -1;
    if (outcome == WISP_OUTCOME_OK) {
        struct wisp_commit c = {.fn = "counter",
                                .reads = dec.reads,
                                .n_reads = dec.n_reads,
                                .writes = dec.writes,
                                .n_writes = dec.n_writes};
        char aerr[256];
        rc = wisp_store_apply(T.store, &c, NULL, aerr, sizeof(aerr));
        CHECK_INT_EQ(wisp_store_commit(T.store), 0);
    } else {
        CHECK_INT_EQ(dec.n_writes, 0); /* a failed invocation's writes never travel */
    }
    wisp_result_fini(&dec);
    wisp_buf_fini(&b);
    return rc;
}

static char *stored(const char *key)
{
    const char *v;
    size_t n;
    uint64_t ver;
    if (wisp_store_state_get(T.store, "counter", key, strlen(key), &v, &n, &ver) != 0)
        return NULL;
    return strndup(v, n);
}

static void test_semantics(void)
{
    setup("return function(e, ctx)\n"
          "  assert(ctx.state.get('n') == nil or e.payload ~= 'first')\n"
          "  local a = ctx.state.incr('n')\n"
          "  local b = ctx.state.incr('n', 10)\n"
          "  assert(b == a + 10, 'incr returns the new value')\n"
          "  assert(math.type(b) == 'integer')\n"
          "  ctx.state.put('t', {x = 1, s = 'v'})\n"
          "  local t = ctx.state.get('t')\n"
          "  assert(t.x == 1 and t.s == 'v', 'read your writes')\n"
          "  ctx.state.put('gone', 'x'); ctx.state.del('gone')\n"
          "  assert(ctx.state.get('gone') == nil)\n"
          "  ctx.state.put('f', 0.1); ctx.state.put('b', false); ctx.state.put('str', 'hi')\n"
          "  assert(ctx.state.get('b') == false and ctx.state.get('str') == 'hi')\n"
          "end\n");
    char err[512];
    CHECK_INT_EQ(invoke("first", err, sizeof(err)), 0);
    CHECK_STR_EQ(err, "");
    char *n = stored("n");
    CHECK_STR_EQ(n, "11");
    free(n);
    CHECK_INT_EQ(invoke("second", err, sizeof(err)), 0);
    n = stored("n");
    CHECK_STR_EQ(n, "22");
    free(n);
    char *f = stored("f");
    CHECK_STR_EQ(f, "0.1");
    free(f);
    char *gone = stored("gone");
    CHECK(gone == NULL);
    free(gone);
    teardown();
}

static void test_errors_roll_back(void)
{
    setup("return function(e, ctx)\n"
          "  ctx.state.put('k', e.payload)\n"
          "  if e.payload == 'bad' then error('no') end\n"
          "  if e.payload == 'longkey' then ctx.state.put(string.rep('k', 300), 1) end\n"
          "  if e.payload == 'bigval' then ctx.state.put('v', string.rep('x', 70000)) end\n"
          "  if e.payload == 'strincr' then ctx.state.incr('k') end\n"
          "  if e.payload == 'nan' then ctx.state.put('v', 0/0) end\n"
          "  if e.payload == 'fn' then ctx.state.put('v', print) end\n"
          "end\n");
    char err[512];
    CHECK_INT_EQ(invoke("good", err, sizeof(err)), 0);
    CHECK_INT_EQ(invoke("bad", err, sizeof(err)), -1);
    char *k = stored("k");
    CHECK_STR_EQ(k, "\"good\""); /* the failed invocation's write was dropped */
    free(k);
    CHECK_INT_EQ(invoke("longkey", err, sizeof(err)), -1);
    CHECK(strstr(err, "state: key must be 1 to 256 bytes") != NULL);
    CHECK_INT_EQ(invoke("bigval", err, sizeof(err)), -1);
    CHECK(strstr(err, "larger than 65536 bytes") != NULL);
    CHECK_INT_EQ(invoke("strincr", err, sizeof(err)), -1);
    CHECK(strstr(err, "holds a string, not a number") != NULL);
    CHECK_INT_EQ(invoke("nan", err, sizeof(err)), -1);
    CHECK(strstr(err, "NaN and infinities") != NULL);
    CHECK_INT_EQ(invoke("fn", err, sizeof(err)), -1);
    CHECK(strstr(err, "must be a table, string, number, boolean or nil") != NULL);
    k = stored("k");
    CHECK_STR_EQ(k, "\"good\"");
    free(k);
    teardown();
}

/* Two invocations read the same version; the second to commit loses. */
static void test_conflict(void)
{
    setup("return function(e, ctx) ctx.state.incr('n') end\n");
    char err[256];
    CHECK_INT_EQ(invoke("a", err, sizeof(err)), 0);
    /* First run: read n=1 (version v), keep its result aside. */
    struct wisp_event ev = wisp_test_event("t/a", "x", 1, 1);
    struct wisp_result r1, r2;
    struct wisp_state s2;
    wisp_state_init(&s2, rpc, NULL);
    wisp_state_reset(&T.st);
    ev.state = &T.st;
    (void)wisp_engine_lua.invoke(T.inst, &ev, &r1);
    ev.state = &s2;
    (void)wisp_engine_lua.invoke(T.inst, &ev, &r2);
    struct wisp_state *states[2] = {&T.st, &s2};
    int rcs[2];
    for (int i = 0; i < 2; i++) {
        struct wisp_buf b;
        wisp_buf_init(&b);
        struct wisp_result *r = i ? &r2 : &r1;
        r->state = states[i];
        wisp_ipc_encode_result(&b, 1, r, false);
        struct wisp_rd rd = {.p = b.data + WISP_IPC_HEADER, .left = b.len - WISP_IPC_HEADER};
        uint64_t seq;
        bool rec;
        struct wisp_result dec;
        CHECK_INT_EQ(wisp_ipc_decode_result(&rd, &seq, &dec, &rec), 0);
        struct wisp_commit c = {.fn = "counter",
                                .reads = dec.reads,
                                .n_reads = dec.n_reads,
                                .writes = dec.writes,
                                .n_writes = dec.n_writes};
        rcs[i] = wisp_store_apply(T.store, &c, NULL, err, sizeof(err));
        wisp_result_fini(&dec);
        wisp_buf_fini(&b);
    }
    CHECK_INT_EQ(rcs[0], 0);
    CHECK_INT_EQ(rcs[1], -EAGAIN);
    CHECK_INT_EQ(wisp_store_commit(T.store), 0);
    char *n = stored("n");
    CHECK_STR_EQ(n, "2");
    free(n);
    wisp_result_fini(&r1);
    wisp_result_fini(&r2);
    wisp_state_fini(&s2);
    teardown();
}

static void test_no_store(void)
{
    setup("return function(e, ctx) ctx.state.get('x') end\n");
    wisp_state_fini(&T.st);
    wisp_state_init(&T.st, NULL, NULL);
    struct wisp_event ev = wisp_test_event("t/a", "x", 1, 1);
    ev.state = &T.st;
    struct wisp_result res;
    (void)wisp_engine_lua.invoke(T.inst, &ev, &res);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK(res.error && strstr(res.error, "state: get:") != NULL);
    wisp_result_fini(&res);
    ev.state = NULL; /* outside wispd entirely (no state at all) */
    (void)wisp_engine_lua.invoke(T.inst, &ev, &res);
    CHECK(res.error && strstr(res.error, "only available while handling an event") != NULL);
    wisp_result_fini(&res);
    teardown();
}

static void test_keys(void)
{
    setup("return function(e, ctx)\n"
          "  if e.payload == 'seed' then\n"
          "    for _, k in ipairs({'a/1', 'a/2', 'a/3', 'b/1'}) do ctx.state.put(k, 1) end\n"
          "    return\n"
          "  end\n"
          "  ctx.state.del('a/2'); ctx.state.put('a/0', 1); ctx.state.put('a/9', 1)\n"
          "  local ks = ctx.state.keys('a/')\n"
          "  assert(table.concat(ks, ',') == 'a/0,a/1,a/3,a/9', table.concat(ks, ','))\n"
          "  assert(#ctx.state.keys('a/', 2) == 2)\n"
          "  assert(#ctx.state.keys() == 5)\n"
          "end\n");
    char err[512];
    CHECK_INT_EQ(invoke("seed", err, sizeof(err)), 0);
    CHECK_INT_EQ(invoke("list", err, sizeof(err)), 0);
    CHECK_STR_EQ(err, "");
    teardown();
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"semantics", test_semantics}, {"errors_roll_back", test_errors_roll_back},
        {"conflict", test_conflict},   {"keys", test_keys},
        {"no_store", test_no_store},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
