/*
 * The native engine, in process: the handler libraries built from
 * tests/native/ (into WISP_TEST_NATIVE_DIR) are loaded, refused and invoked
 * directly through the engine ops. Covers the event and ctx a handler sees,
 * publishes and their caps, failures and their messages, ctx.state against
 * no store and against a small fake supervisor, every load refusal, the
 * memory cap, and loading inside a confined (seccomp) child.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "executor.h"
#include "fnspec.h"
#include "ipc.h"
#include "state.h"
#include "testutil.h"
#include "util.h"

#ifndef WISP_TEST_NATIVE_DIR
#error "WISP_TEST_NATIVE_DIR must name the folder of the test handler libraries"
#endif

static const struct wisp_engine_ops *eng;

struct fn {
    struct wisp_env_var env[1];
    struct wisp_fnspec spec;
    void *inst;
};

/* A spec for handler (a file name) in dir. */
static void fn_init(struct fn *f, const char *dir, const char *handler)
{
    memset(f, 0, sizeof(*f));
    f->env[0] = (struct wisp_env_var){"THRESHOLD", "30"};
    f->spec.dir = (char *)dir;
    f->spec.name = "temp-alert";
    f->spec.version = "v1";
    f->spec.runtime = WISP_RUNTIME_NATIVE;
    f->spec.handler = (char *)handler;
    f->spec.memory_kb = 1024;
    f->spec.timeout_ms = 1000;
    f->spec.env = f->env;
    f->spec.n_env = 1;
}

static int fn_create(struct fn *f, char *err, size_t errlen)
{
    err[0] = '\0';
    return eng->create(&f->spec, &f->inst, err, errlen);
}

/* One of the test libraries, which must load. */
static void fn_open(struct fn *f, const char *lib)
{
    char err[512];
    fn_init(f, WISP_TEST_NATIVE_DIR, lib);
    int rc = fn_create(f, err, sizeof(err));
    if (rc != 0)
        (void)fprintf(stderr, "create %s: %s\n", lib, err);
    CHECK_INT_EQ(rc, 0);
}

static void fn_fini(struct fn *f)
{
    eng->destroy(f->inst);
    f->inst = NULL;
}

static int invoke_st(struct fn *f, const char *payload, struct wisp_state *st,
                     struct wisp_result *res)
{
    struct wisp_event ev = wisp_test_event("sensors/dev7/temp", payload, strlen(payload), 1);
    ev.state = st;
    if (!f->inst) {
        wisp_result_init(res);
        return -1;
    }
    return eng->invoke(f->inst, &ev, res);
}

static int invoke(struct fn *f, const char *payload, struct wisp_result *res)
{
    return invoke_st(f, payload, NULL, res);
}

/* The payload of the first publish on topic (payloads here are text). */
static const char *pub_on(const struct wisp_result *res, const char *topic)
{
    for (size_t i = 0; i < res->n_pubs; i++) {
        if (strcmp(res->pubs[i].topic, topic) == 0)
            return res->pubs[i].payload;
    }
    return "(missing)";
}

/* ---- loading and the happy path ------------------------------------------ */

static void test_registered(void)
{
    CHECK(eng != NULL);
    CHECK(wisp_engine_find("native") == eng);
    CHECK_STR_EQ(eng ? eng->name : NULL, "native");
}

static void test_event_and_ctx(void)
{
    struct fn f;
    struct wisp_result res;
    fn_open(&f, "echo.so");
    wisp_test_capture_stderr();
    CHECK_INT_EQ(invoke(&f, "{\"temp\": 31.5}", &res), 0);
    char *log = wisp_test_captured_stderr();
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK(res.error == NULL);
    CHECK_STR_EQ(pub_on(&res, "out/event"),
                 "1.0|ev-1|wisp://gw1/mqtt|wisp.mqtt.message|2024-05-01T12:00:00.000Z|"
                 "sensors/dev7/temp|1|0|14|1|{\"temp\": 31.5}");
    CHECK_STR_EQ(pub_on(&res, "out/ctx"), "1|1|temp-alert|v1|30|(none)|1");
    CHECK_STR_EQ(pub_on(&res, "out/count"), "1");
    CHECK_STR_EQ(pub_on(&res, "out/time"), "1|1");
    CHECK_STR_EQ(pub_on(&res, "out/err/wildcard"),
                 "-1 publish: invalid topic: wildcards '+' and '#' are only allowed in "
                 "subscription filters");
    CHECK_STR_EQ(pub_on(&res, "out/err/qos"), "-1 publish: qos must be 0, 1 or 2 (got 3)");
    CHECK_STR_EQ(pub_on(&res, "out/err/null"), "-1 publish: topic is NULL");
    const struct wisp_publish *bin = NULL;
    for (size_t i = 0; i < res.n_pubs; i++) {
        if (strcmp(res.pubs[i].topic, "out/binary") == 0)
            bin = &res.pubs[i];
    }
    CHECK(bin != NULL);
    if (bin) {
        CHECK_INT_EQ(bin->payload_len, 3);
        CHECK(memcmp(bin->payload, "a\0b", 3) == 0);
        CHECK_INT_EQ(bin->qos, 2);
        CHECK_INT_EQ(bin->retain, 1);
    }
    CHECK(res.duration_ns > 0);
    CHECK_CONTAINS(log,
                   "level=info mod=fn fn=temp-alert id=ev-1 msg=\"hello from C \\\"quoted\\\"\"");
    CHECK(log && !strstr(log, "hidden"));
    free(log);
    wisp_result_fini(&res);

    /* A warm start: the library stays loaded, its statics persist. */
    CHECK_INT_EQ(invoke(&f, "again", &res), 0);
    CHECK_STR_EQ(pub_on(&res, "out/count"), "2");
    wisp_result_fini(&res);
    fn_fini(&f);
}

static void test_publish_caps(void)
{
    struct fn f;
    struct wisp_result res;
    fn_open(&f, "echo.so");
    CHECK_INT_EQ(invoke(&f, "flood", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK_STR_EQ(res.error, "publish: more than 1000 messages in one invocation");
    CHECK_INT_EQ(res.n_pubs, 0);
    wisp_result_fini(&res);
    CHECK_INT_EQ(invoke(&f, "fine", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    wisp_result_fini(&res);
    fn_fini(&f);
}

/* ---- failures ------------------------------------------------------------- */

static void test_failures(void)
{
    struct fn f;
    struct wisp_result res;
    fn_open(&f, "fail.so");
    CHECK_INT_EQ(invoke(&f, "fail", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK_STR_EQ(res.error, "threshold missing in function.json env");
    CHECK_INT_EQ(res.n_pubs, 0); /* its publish is dropped */
    wisp_result_fini(&res);

    CHECK_INT_EQ(invoke(&f, "failok", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK_STR_EQ(res.error, "failed but returned ok");
    wisp_result_fini(&res);

    CHECK_INT_EQ(invoke(&f, "ret", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK_CONTAINS(res.error, "handler returned 3");
    wisp_result_fini(&res);

    /* Out of memory: outcome memory, and the instance is to be replaced. */
    CHECK_INT_EQ(invoke(&f, "nomem", &res), -1);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_MEMORY);
    CHECK_CONTAINS(res.error, "memory: handler ran out of memory (limits.memory_kb is 1024 KiB)");
    CHECK_INT_EQ(res.n_pubs, 0);
    wisp_result_fini(&res);

    /* The fail message of one invocation does not leak into the next. */
    CHECK_INT_EQ(invoke(&f, "ok", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK(res.error == NULL);
    CHECK_STR_EQ(pub_on(&res, "out/before"), "x");
    wisp_result_fini(&res);
    fn_fini(&f);
}

/* The data segment cap: malloc refuses past limits.memory_kb plus the
 * runtime's allowance; the cap goes when the instance does. Sanitizer
 * builds leave the cap out (their shadow memory counts as data). */
static void test_memory_cap(void)
{
#ifdef WISP_SANITIZED
    (void)fprintf(stderr, "test_memory_cap: no cap in sanitizer builds; skipped\n");
#else
    struct rlimit before, during, after;
    CHECK_INT_EQ(getrlimit(RLIMIT_DATA, &before), 0);
    struct fn f;
    struct wisp_result res;
    fn_open(&f, "fail.so");
    CHECK_INT_EQ(getrlimit(RLIMIT_DATA, &during), 0);
    const char *q = getenv("WISP_UNDER_QEMU");
    if (q && strcmp(q, "1") == 0 && during.rlim_cur == RLIM_INFINITY) {
        /* qemu-user keeps RLIMIT_DATA to itself: only there is it skipped. */
        (void)fprintf(stderr, "skip memory_cap: RLIMIT_DATA is not passed on under qemu-user\n");
        fn_fini(&f);
        return;
    }
    CHECK(during.rlim_cur != RLIM_INFINITY);
    CHECK_INT_EQ(invoke(&f, "hog", &res), -1);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_MEMORY);
    CHECK_CONTAINS(res.error, "malloc refused");
    wisp_result_fini(&res);
    CHECK_INT_EQ(invoke(&f, "ok", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    wisp_result_fini(&res);
    fn_fini(&f);
    CHECK_INT_EQ(getrlimit(RLIMIT_DATA, &after), 0);
    CHECK(after.rlim_cur == before.rlim_cur);
    CHECK(after.rlim_max == before.rlim_max);
#endif
}

/* ---- ctx.state ------------------------------------------------------------ */

/* The lines the state handler published, joined with '\n'. */
static char *state_lines(const struct wisp_result *res)
{
    size_t total = 1;
    for (size_t i = 0; i < res->n_pubs; i++)
        total += res->pubs[i].payload_len + 1;
    char *s = malloc(total);
    size_t at = 0;
    if (!s)
        return NULL;
    for (size_t i = 0; i < res->n_pubs; i++) {
        memcpy(s + at, res->pubs[i].payload, res->pubs[i].payload_len);
        at += res->pubs[i].payload_len;
        s[at++] = '\n';
    }
    s[at] = '\0';
    return s;
}

static void test_state_without_store(void)
{
    struct fn f;
    struct wisp_result res;
    struct wisp_state st;
    wisp_state_init(&st, NULL, NULL); /* no rpc: wisp validate, tests */
    fn_open(&f, "state.so");
    CHECK_INT_EQ(invoke_st(&f, "get k\nput k 1\ndel k\nincr n 1\nkeys a 10", &st, &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    char *lines = state_lines(&res);
    CHECK_CONTAINS(lines, "get k -> -1 state: get: no state store is available here\n");
    CHECK_CONTAINS(lines, "put k 1 -> -1 state: put: no state store is available here\n");
    CHECK_CONTAINS(lines, "del k -> -1 state: del: no state store is available here\n");
    CHECK_CONTAINS(lines, "incr n 1 -> -1 state: incr: no state store is available here\n");
    CHECK_CONTAINS(lines, "keys a 10 -> -1 state: keys: no state store is available here\n");
    free(lines);
    wisp_result_fini(&res);

    /* A handler that gives up with the error fails cleanly. */
    wisp_state_reset(&st);
    CHECK_INT_EQ(invoke_st(&f, "incr n 1\nfail", &st, &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK_STR_EQ(res.error, "state: incr: no state store is available here");
    CHECK_INT_EQ(res.n_pubs, 0);
    wisp_result_fini(&res);

    /* No state object at all, and devices without a supervisor. */
    CHECK_INT_EQ(
        invoke(&f, "get k\nsensor cpu-temp\ngpio gpiochip0 17 1\ngpio gpiochip0 17 5", &res), 0);
    lines = state_lines(&res);
    CHECK_CONTAINS(lines, "get k -> -1 state: get: no state store is available here\n");
    CHECK_CONTAINS(lines, "sensor cpu-temp -> -1 sensor: cpu-temp: no sensors or GPIO lines are "
                          "available here\n");
    CHECK_CONTAINS(lines,
                   "gpio gpiochip0 17 1 -> -1 gpio: gpiochip0 line 17: no sensors or GPIO lines "
                   "are available here\n");
    CHECK_CONTAINS(lines, "-1 gpio: value must be -1 (read), 0 or 1 (got 5)\n");
    free(lines);
    wisp_result_fini(&res);
    fn_fini(&f);
    wisp_state_fini(&st);
}

/* A supervisor that knows three keys, as the store would hold them. */
static int fake_rpc(void *ud, struct wisp_buf *req, struct wisp_buf *reply)
{
    static const char *const keys[] = {"float", "seeded", "text"};
    static const char *const vals[] = {"2.5", "41", "\"hello\""};
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
        int found = -1;
        for (int i = 0; i < 3; i++) {
            if (strlen(keys[i]) == r.klen && memcmp(keys[i], r.key, r.klen) == 0)
                found = i;
        }
        if (found < 0)
            wisp_state_encode_get_reply(&out, -ENOENT, NULL, 0, 0);
        else
            wisp_state_encode_get_reply(&out, 0, vals[found], strlen(vals[found]), 7);
    } else {
        wisp_state_keys_reply_begin(&out);
        for (int i = 0; i < 3; i++) {
            if (strncmp(keys[i], r.key, r.klen) == 0)
                wisp_state_keys_reply_add(&out, keys[i], strlen(keys[i]));
        }
        wisp_state_keys_reply_end(&out, 0);
    }
    wisp_buf_reset(reply);
    wisp_buf_put(reply, out.data + WISP_IPC_HEADER, out.len - WISP_IPC_HEADER);
    wisp_buf_fini(&out);
    return 0;
}

static void test_state_ops(void)
{
    struct fn f;
    struct wisp_result res;
    struct wisp_state st;
    wisp_state_init(&st, fake_rpc, NULL);
    fn_open(&f, "state.so");
    CHECK_INT_EQ(invoke_st(&f,
                           "get seeded\n"
                           "incr seeded 1\n"
                           "get seeded\n"
                           "incr fresh 5\n"
                           "incr fresh -7\n"
                           "get missing\n"
                           "put obj {\"a\":[1,2],\"b\":\"x\"}\n"
                           "get obj\n"
                           "put bad {\"a\":\n"
                           "put nul null\n"
                           "put two 1 2\n"
                           "incr text 1\n"
                           "incr float 1\n"
                           "put big 9223372036854775807\n"
                           "incr big 1\n"
                           "del obj\n"
                           "get obj\n"
                           "get \n"
                           "keys\n"
                           "keys f 1",
                           &st, &res),
                 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    char *lines = state_lines(&res);
    CHECK_STR_EQ(lines,
                 "get seeded -> 0 41\n"
                 "incr seeded 1 -> 0 42\n"
                 "get seeded -> 0 42\n"
                 "incr fresh 5 -> 0 5\n"
                 "incr fresh -7 -> 0 -2\n"
                 "get missing -> 1 absent\n"
                 "put obj {\"a\":[1,2],\"b\":\"x\"} -> 0 \n"
                 "get obj -> 0 {\"a\":[1,2],\"b\":\"x\"}\n"
                 "put bad {\"a\": -> -1 state: put: value is not one JSON value (error at byte 5)\n"
                 "put nul null -> -1 state: put: null cannot be stored (use state_del to "
                 "delete)\n"
                 "put two 1 2 -> -1 state: put: value is not one JSON value (error at byte 2)\n"
                 "incr text 1 -> -1 state: incr: text holds \"hello\", not an integer\n"
                 "incr float 1 -> -1 state: incr: float holds 2.5, not an integer\n"
                 "put big 9223372036854775807 -> 0 \n"
                 "incr big 1 -> -1 state: incr: big: 9223372036854775807 + 1 overflows\n"
                 "del obj -> 0 \n"
                 "get obj -> 1 absent\n"
                 "get  -> -1 state: get: key must be 1 to 256 bytes (got an empty one)\n"
                 "keys -> 0 big,float,fresh,seeded,text\n"
                 "keys f 1 -> 0 float\n");
    free(lines);
    CHECK(wisp_state_used(&st));
    wisp_result_fini(&res);
    fn_fini(&f);
    wisp_state_fini(&st);
}

/* ---- refusals ------------------------------------------------------------- */

/* Creating handler from dir must fail with rc and a message containing
 * want (and the handler's path). */
static void check_refused(const char *dir, const char *handler, int rc_want, const char *want)
{
    struct fn f;
    char err[512], path[512];
    fn_init(&f, dir, handler);
    int rc = fn_create(&f, err, sizeof(err));
    CHECK_INT_EQ(rc, rc_want);
    CHECK(f.inst == NULL);
    CHECK_CONTAINS(err, want);
    (void)snprintf(path, sizeof(path), "%s/%s: ", dir, handler);
    CHECK_CONTAINS(err, path);
}

/* Copies the first n bytes of src (all when n is 0) to dir/name, with
 * byte `at` replaced by `val` (at < 0: unchanged). */
static void copy_patched(const char *src, const char *dir, const char *name, size_t n, int at,
                         unsigned char val)
{
    char *data = NULL;
    size_t len = 0;
    char path[512];
    CHECK_INT_EQ(wisp_read_file(src, (size_t)64 << 20, &data, &len), 0);
    if (!data)
        return;
    if (n && n < len)
        len = n;
    if (at >= 0 && (size_t)at < len)
        data[at] = (char)val;
    wisp_test_path(path, sizeof(path), dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(write(fd, data, len) == (ssize_t)len);
        close(fd);
    }
    free(data);
}

static void test_refusals(void)
{
    char dir[64];
    const char *echo = WISP_TEST_NATIVE_DIR "/echo.so";
    CHECK(wisp_test_mkdtemp(dir, sizeof(dir), "native"));
    check_refused(dir, "handler.so", -ENOENT,
                  "handler.so: not found: a native function needs its compiled handler");
    wisp_test_write(dir, "handler.c", "int main(void) { return 0; }\n");
    check_refused(dir, "handler.c", -ENOEXEC,
                  "handler.c: not a shared object (no ELF header): build the handler with cc "
                  "-shared -fPIC");
    wisp_test_mkdir(dir, "folder.so");
    check_refused(dir, "folder.so", -EINVAL, "folder.so: not a regular file");

    /* e_machine (byte 18) of a library for another architecture. */
#if defined(__aarch64__)
    copy_patched(echo, dir, "other-arch.so", 0, 18, 62 /* EM_X86_64 */);
    check_refused(dir, "other-arch.so", -ENOEXEC,
                  "built for x86-64; this wispd runs on AArch64 (arm64): build the handler for "
                  "this gateway's architecture");
#else
    copy_patched(echo, dir, "other-arch.so", 0, 18, 183 /* EM_AARCH64 */);
    check_refused(dir, "other-arch.so", -ENOEXEC, "built for AArch64 (arm64); this wispd runs on ");
#endif
    /* e_type (byte 16) 1: a relocatable object, not a library. */
    copy_patched(echo, dir, "object.so", 0, 16, 1);
    check_refused(dir, "object.so", -ENOEXEC,
                  "an object file (.o), not a shared object: build the handler with cc -shared");
    /* EI_CLASS (byte 4) of the other word size. */
    copy_patched(echo, dir, "other-class.so", 0, 4, sizeof(void *) == 8 ? 1 : 2);
    check_refused(dir, "other-class.so", -ENOEXEC,
                  sizeof(void *) == 8 ? "a 32-bit library; this wispd is 64-bit"
                                      : "a 64-bit library; this wispd is 32-bit");
    /* A header that looks right over a truncated file: dlopen's reason. */
    copy_patched(echo, dir, "short.so", 200, -1, 0);
    check_refused(dir, "short.so", -ENOEXEC, "short.so: cannot load: ");

    check_refused(WISP_TEST_NATIVE_DIR, "abi7.so", -ENOEXEC,
                  "abi7.so was built for wisp ABI 7; this wispd speaks 1: rebuild it against "
                  "this wispd's <wisp/wisp.h>");
    check_refused(WISP_TEST_NATIVE_DIR, "noentry.so", -ENOEXEC,
                  "does not export the entry point wisp_handle: define it with WISP_HANDLER(fn)");
    check_refused(WISP_TEST_NATIVE_DIR, "noabi.so", -ENOEXEC,
                  "does not export wisp_abi_version: not a Wisp handler, or built without "
                  "WISP_HANDLER(fn)");
    wisp_test_rmtree(dir);
}

/* ---- inside the executor's confinement ------------------------------------ */

/* dlopen reads the library and maps it executable: the seccomp filter
 * must let both through. The child reports through its exit status. */
static void test_confined(void)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct fn f;
        char err[512];
        struct wisp_result res;
        if (wisp_executor_confine() != 0)
            _exit(10);
        fn_init(&f, WISP_TEST_NATIVE_DIR, "echo.so");
        if (fn_create(&f, err, sizeof(err)) != 0) {
            (void)fprintf(stderr, "confined create: %s\n", err);
            _exit(11);
        }
        if (invoke(&f, "x", &res) != 0 || res.outcome != WISP_OUTCOME_OK)
            _exit(12);
        if (strcmp(pub_on(&res, "out/count"), "1") != 0)
            _exit(13);
        _exit(0); /* LSan cannot run under the filter */
    }
    int status = wisp_test_wait_exit(pid, 20000);
    CHECK(status != -1 && WIFEXITED(status));
    const char *q = getenv("WISP_UNDER_QEMU");
    if (q && strcmp(q, "1") == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 10) {
        /* Only where no filter can be installed at all (qemu-user). */
        (void)fprintf(stderr, "skip confined: seccomp filters unavailable under qemu-user\n");
        return;
    }
    CHECK_INT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 0);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"registered", test_registered},     {"event_and_ctx", test_event_and_ctx},
        {"publish_caps", test_publish_caps}, {"failures", test_failures},
        {"memory_cap", test_memory_cap},     {"state_without_store", test_state_without_store},
        {"state_ops", test_state_ops},       {"refusals", test_refusals},
        {"confined", test_confined},
    };
    eng = wisp_engine_for(WISP_RUNTIME_NATIVE);
    if (!eng) {
        (void)fprintf(stderr, "no native engine registered\n");
        return 1;
    }
    return WISP_CHECK_RUN(argc, argv, tests);
}
