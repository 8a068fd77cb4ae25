/* The pool (runtime/src/pool.c, pool_exec.c) driven in-process: a real loop,
 * real executor processes forked with wisp_executor_spawn_direct, real
 * function folders, and hooks that record what would go to MQTT. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "executor.h"
#include "fnspec.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "util.h"

#define MAX_MSGS    64
#define MAX_REPORTS 64

struct msg {
    char topic[128];
    char payload[4096];
    size_t len;
    int qos;
    int retain;
};

struct rep {
    char fn[72];
    char version[72];
    char id[48];
    enum wisp_outcome outcome;
    char error[1024];
    uint64_t executors; /* of the function, as the hook saw it */
    uint64_t at_ns;
};

/* One test's world: loop, pool, a folder of functions and what came out. */
struct env {
    struct wisp_loop *loop;
    struct wisp_pool *pool;
    char root[64];
    struct msg msgs[MAX_MSGS];
    size_t n_msgs;
    struct rep reps[MAX_REPORTS];
    size_t n_reps;
    /* Functions whose executors are watched while the loop runs. */
    const char *watch[2];
    uint64_t max_exec;    /* highest sum of their executors seen */
    uint64_t max_running; /* highest sum of their running events seen */
    pid_t pids[64];       /* every executor started, in order */
    size_t n_pids;
    int fail_spawns; /* the next this many spawns fail with -EAGAIN */
};

static struct env E;
static int g_killed; /* children reaped that died of SIGKILL */

static int on_publish(void *ud, const char *topic, const void *payload, size_t len, int qos,
                      int retain)
{
    struct env *e = ud;
    CHECK(e->n_msgs < MAX_MSGS);
    if (e->n_msgs >= MAX_MSGS)
        return -ENOBUFS;
    struct msg *m = &e->msgs[e->n_msgs++];
    (void)snprintf(m->topic, sizeof(m->topic), "%s", topic);
    m->len = len < sizeof(m->payload) - 1 ? len : sizeof(m->payload) - 1;
    memcpy(m->payload, payload, m->len);
    m->payload[m->len] = '\0';
    m->qos = qos;
    m->retain = retain;
    return 0;
}

static void on_report(void *ud, const struct wisp_fnspec *spec, const char *event_id,
                      const struct wisp_result *res)
{
    struct env *e = ud;
    CHECK(e->n_reps < MAX_REPORTS);
    if (e->n_reps >= MAX_REPORTS)
        return;
    struct rep *r = &e->reps[e->n_reps++];
    (void)snprintf(r->fn, sizeof(r->fn), "%s", spec->name);
    (void)snprintf(r->version, sizeof(r->version), "%s", spec->version);
    (void)snprintf(r->id, sizeof(r->id), "%s", event_id);
    r->outcome = res->outcome;
    (void)snprintf(r->error, sizeof(r->error), "%s", res->error ? res->error : "");
    struct wisp_fn_stats st;
    r->executors = wisp_pool_stats(e->pool, spec->name, &st) == 0 ? st.executors : 999;
    r->at_ns = wisp_mono_ns();
}

/* The pool's spawn hook: forks a real executor, remembering its pid, or
 * fails on request the way fork does when the system is out of processes. */
static int spawn(void *ud, pid_t *pid, int *fd)
{
    struct env *e = ud;
    if (e->fail_spawns > 0) {
        e->fail_spawns--;
        return -EAGAIN;
    }
    int rc = wisp_executor_spawn_direct(NULL, pid, fd);
    if (rc == 0 && e->n_pids < sizeof(e->pids) / sizeof(e->pids[0]))
        e->pids[e->n_pids++] = *pid;
    return rc;
}

static void reap_some(void)
{
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0) {
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            g_killed++;
    }
}

/* Waits until every child is gone; false if some outlived ms. */
static bool reap_all(int ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)ms * 1000000ULL;
    for (;;) {
        int status;
        pid_t r = waitpid(-1, &status, WNOHANG);
        if (r > 0) {
            if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                g_killed++;
            continue;
        }
        if (r < 0)
            return errno == ECHILD;
        if (wisp_mono_ns() > deadline)
            return false;
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
}

static const struct wisp_pool_config default_cfg = {
    .max_executors = 16,
    .idle_timeout_ms = 0,
    .queue_max = 100,
    .device = "test-gw",
};

static bool env_open(const struct wisp_pool_config *cfg)
{
    memset(&E, 0, sizeof(E));
    g_killed = 0;
    (void)snprintf(E.root, sizeof(E.root), "/tmp/wisp-test-pool-XXXXXX");
    if (!mkdtemp(E.root)) {
        CHECK(!"mkdtemp");
        return false;
    }
    CHECK_INT_EQ(wisp_loop_create(&E.loop), 0);
    static struct wisp_pool_hooks hooks;
    hooks = (struct wisp_pool_hooks){
        .spawn = spawn,
        .spawn_ud = &E,
        .publish = on_publish,
        .on_report = on_report,
        .ud = &E,
    };
    CHECK_INT_EQ(wisp_pool_create(E.loop, cfg ? cfg : &default_cfg, &hooks, &E.pool), 0);
    return E.loop && E.pool;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void env_close(void)
{
    wisp_pool_destroy(E.pool);
    E.pool = NULL;
    wisp_loop_destroy(E.loop);
    E.loop = NULL;
    /* Closing their sockets ends idle executors; busy ones were killed. */
    CHECK(reap_all(5000));
    CHECK(nftw(E.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
}

static void put(const char *dir, const char *rel, const char *text)
{
    char path[512];
    (void)snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

/* Writes (or rewrites) <root>/<name> with a function.json for `topic`
 * plus `extra` (",\"limits\":{...}" or "") and handler.lua, and loads it. */
static struct wisp_fnspec *make_fn(const char *name, const char *topic, const char *extra,
                                   const char *handler)
{
    char dir[256], json[1024], err[1024] = "";
    (void)snprintf(dir, sizeof(dir), "%s/%s", E.root, name);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        CHECK(!"mkdir");
    (void)snprintf(json, sizeof(json),
                   "{\"name\":\"%s\",\"triggers\":[{\"type\":\"mqtt\",\"topic\":\"%s\"}]%s}", name,
                   topic, extra);
    put(dir, "function.json", json);
    put(dir, "handler.lua", handler);
    struct wisp_fnspec *spec = NULL;
    int rc = wisp_fnspec_load(dir, &spec, err, sizeof(err));
    if (rc != 0)
        (void)fprintf(stderr, "loading %s: %s\n", name, err);
    CHECK_INT_EQ(rc, 0);
    return spec;
}

/* Hands the pool a set of functions (it takes the specs). */
static void set_fns(struct wisp_fnspec *a, struct wisp_fnspec *b)
{
    struct wisp_fnspec *specs[2] = {a, b};
    size_t n = b ? 2 : (a ? 1 : 0);
    wisp_pool_set_functions(E.pool, specs, n);
}

static int submit(const char *topic, const char *payload)
{
    int n = wisp_pool_submit_mqtt(E.pool, topic, payload, strlen(payload), 1, 0);
    wisp_pool_schedule(E.pool);
    return n;
}

static struct wisp_fn_stats stats(const char *name)
{
    struct wisp_fn_stats st;
    memset(&st, 0, sizeof(st));
    CHECK_INT_EQ(wisp_pool_stats(E.pool, name, &st), 0);
    return st;
}

static void observe(void)
{
    uint64_t ex = 0, run = 0;
    for (size_t i = 0; i < 2; i++) {
        struct wisp_fn_stats st;
        if (E.watch[i] && wisp_pool_stats(E.pool, E.watch[i], &st) == 0) {
            ex += st.executors;
            run += st.running;
        }
    }
    if (ex > E.max_exec)
        E.max_exec = ex;
    if (run > E.max_running)
        E.max_running = run;
}

typedef bool (*cond_fn)(long arg);

/* Runs the loop the way the supervisor does until cond holds or ms pass. */
static bool run_until(cond_fn cond, long arg, int ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)ms * 1000000ULL;
    for (;;) {
        observe();
        if (cond(arg))
            return true;
        uint64_t now = wisp_mono_ns();
        if (now >= deadline)
            return false;
        int t = wisp_pool_next_timeout_ms(E.pool, now);
        int left = (int)((deadline - now) / 1000000ULL) + 1;
        if (t < 0 || t > left)
            t = left;
        if (t > 20)
            t = 20; /* look at the watched counters now and then */
        CHECK(wisp_loop_run_once(E.loop, t) >= 0);
        wisp_pool_tick(E.pool, wisp_mono_ns());
        reap_some();
    }
}

/* Like run_until, but sleeps exactly as long as the pool asks (-1: until
 * the deadline), as wispd does when nothing else is going on. */
static bool run_strictly_until(cond_fn cond, long arg, int ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)ms * 1000000ULL;
    for (;;) {
        if (cond(arg))
            return true;
        uint64_t now = wisp_mono_ns();
        if (now >= deadline)
            return false;
        int t = wisp_pool_next_timeout_ms(E.pool, now);
        int left = (int)((deadline - now) / 1000000ULL) + 1;
        if (t < 0 || t > left)
            t = left;
        CHECK(wisp_loop_run_once(E.loop, t) >= 0);
        wisp_pool_tick(E.pool, wisp_mono_ns());
        reap_some();
    }
}

static bool reports_at_least(long n)
{
    return E.n_reps >= (size_t)n;
}

static bool idle_after_reports(long n)
{
    return E.n_reps >= (size_t)n && wisp_pool_idle(E.pool);
}

static bool watched_executors_are(long n)
{
    struct wisp_fn_stats st;
    return wisp_pool_stats(E.pool, E.watch[0], &st) == 0 && st.executors == (uint64_t)n;
}

static bool watched_running_at_least(long n)
{
    struct wisp_fn_stats st;
    return wisp_pool_stats(E.pool, E.watch[0], &st) == 0 && st.running >= (uint64_t)n;
}

static bool never(long n)
{
    (void)n;
    return false;
}

static const struct msg *find_msg(const char *topic, const char *payload)
{
    for (size_t i = 0; i < E.n_msgs; i++) {
        if (strcmp(E.msgs[i].topic, topic) == 0 &&
            (!payload || strcmp(E.msgs[i].payload, payload) == 0))
            return &E.msgs[i];
    }
    return NULL;
}

static void dump(void)
{
    for (size_t i = 0; i < E.n_msgs; i++)
        (void)fprintf(stderr, "  msg %s %s\n", E.msgs[i].topic, E.msgs[i].payload);
    for (size_t i = 0; i < E.n_reps; i++)
        (void)fprintf(stderr, "  report %s@%s %s %s\n", E.reps[i].fn, E.reps[i].version,
                      wisp_outcome_name(E.reps[i].outcome), E.reps[i].error);
}

/* A handler that spins on the CPU for `ms` before publishing. CPU time
 * stretches on a loaded machine: functions using it get a generous
 * timeout so that only what a test means to time out does. */
#define SLOW_LIMIT "\"timeout_ms\":20000"
#define BUSY_HANDLER(ms, topic)                                                                    \
    "return function(event, ctx)\n"                                                                \
    "  local t = os.clock() + " #ms " / 1000\n"                                                    \
    "  while os.clock() < t do end\n"                                                              \
    "  ctx.publish('" topic "', event.payload)\n"                                                  \
    "end\n"

static void test_publishes_in_order(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("relay", "in/#", ",\"env\":{\"K\":\"v1\"}",
                    "return function(event, ctx)\n"
                    "  ctx.publish('out/' .. event.subject, event.payload, {qos = 1})\n"
                    "  ctx.publish('meta', table.concat({event.source, event.type,\n"
                    "    tostring(event.qos), tostring(event.retain), ctx.env.K,\n"
                    "    ctx.fn.name, tostring(event.data and event.data.n)}, '|'))\n"
                    "end\n"),
            NULL);
    CHECK_INT_EQ(wisp_pool_count(E.pool), 1);
    char payload[32];
    for (int i = 0; i < 5; i++) {
        (void)snprintf(payload, sizeof(payload), "{\"n\":%d}", i);
        CHECK_INT_EQ(submit("in/a", payload), 1);
    }
    CHECK_INT_EQ(submit("other", "x"), 0);
    CHECK(run_until(idle_after_reports, 5, 10000));
    CHECK_INT_EQ(E.n_msgs, 10);
    for (int i = 0; i < 5 && E.n_msgs == 10; i++) {
        const struct msg *m = &E.msgs[(size_t)2 * (size_t)i];
        (void)snprintf(payload, sizeof(payload), "{\"n\":%d}", i);
        CHECK_STR_EQ(m->topic, "out/in/a");
        CHECK_STR_EQ(m->payload, payload);
        CHECK_INT_EQ(m->qos, 1);
        CHECK_INT_EQ(m->retain, 0);
        m = &E.msgs[(size_t)2 * (size_t)i + 1];
        CHECK_STR_EQ(m->topic, "meta");
        char want[128];
        (void)snprintf(want, sizeof(want),
                       "wisp://test-gw/mqtt|wisp.mqtt.message|1|false|v1|relay|%d", i);
        CHECK_STR_EQ(m->payload, want);
        CHECK_INT_EQ(m->qos, 0);
    }
    for (size_t i = 0; i < E.n_reps; i++) {
        CHECK_INT_EQ(E.reps[i].outcome, WISP_OUTCOME_OK);
        CHECK_STR_EQ(E.reps[i].fn, "relay");
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(E.reps[i].id, E.reps[j].id) != 0);
    }
    struct wisp_fn_stats st = stats("relay");
    CHECK_INT_EQ(st.invocations, 5);
    CHECK_INT_EQ(st.ok, 5);
    CHECK_INT_EQ(st.errors, 0);
    CHECK_INT_EQ(st.cold_starts, 1); /* one warm executor served them all */
    CHECK_INT_EQ(st.executors, 1);
    CHECK_INT_EQ(st.queued, 0);
    CHECK_INT_EQ(st.running, 0);

    /* An event for one named function (wisp run): no subject, no MQTT. */
    char id[40] = "";
    CHECK_INT_EQ(wisp_pool_submit_to(E.pool, "relay", NULL, "{\"n\":9}", 7, id), 0);
    CHECK(id[0] != '\0');
    CHECK_INT_EQ(wisp_pool_submit_to(E.pool, "nobody", NULL, "x", 1, id), -ENOENT);
    CHECK(run_until(idle_after_reports, 6, 5000));
    /* 'out/' .. nil fails: the subject is nil for a direct invocation. */
    CHECK_INT_EQ(E.reps[5].outcome, WISP_OUTCOME_ERROR);
    CHECK_CONTAINS(E.reps[5].error, "subject");
    CHECK_INT_EQ(E.n_msgs, 10);
    env_close();
}

static void test_handler_error(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("failing", "in/#", "",
                    "return function(event, ctx)\n"
                    "  ctx.publish('before', 'x')\n"
                    "  if event.payload == 'boom' then error('boom: ' .. event.payload) end\n"
                    "  ctx.publish('after', event.payload)\n"
                    "end\n"),
            NULL);
    CHECK_INT_EQ(submit("in/x", "boom"), 1);
    CHECK_INT_EQ(submit("in/x", "fine"), 1);
    CHECK(run_until(idle_after_reports, 2, 10000));
    /* The failed invocation has no effects at all, the next one has its own. */
    CHECK_INT_EQ(E.n_msgs, 2);
    CHECK(find_msg("before", "x") != NULL);
    CHECK(find_msg("after", "fine") != NULL);
    CHECK(find_msg("after", "boom") == NULL);
    CHECK_INT_EQ(E.reps[0].outcome, WISP_OUTCOME_ERROR);
    CHECK_CONTAINS(E.reps[0].error, "boom: boom");
    CHECK_CONTAINS(E.reps[0].error, "handler.lua:3");
    CHECK_INT_EQ(E.reps[1].outcome, WISP_OUTCOME_OK);
    struct wisp_fn_stats st = stats("failing");
    CHECK_INT_EQ(st.invocations, 2);
    CHECK_INT_EQ(st.errors, 1);
    CHECK_INT_EQ(st.ok, 1);
    CHECK_INT_EQ(st.retries, 0);
    CHECK_INT_EQ(st.dead_lettered, 0);
    CHECK_INT_EQ(st.cold_starts, 1); /* an error does not cost the executor */
    env_close();
}

static void test_timeout_kill(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("stuck", "in/#", ",\"limits\":{\"timeout_ms\":100}",
                    "return function(event, ctx)\n"
                    "  if event.payload == 'stuck' then\n"
                    "    string.rep('a', 5000):find(string.rep('a-', 40) .. 'b')\n"
                    "  end\n"
                    "  ctx.publish('done', event.payload)\n"
                    "end\n"),
            NULL);
    uint64_t t0 = wisp_mono_ns();
    CHECK_INT_EQ(submit("in/x", "stuck"), 1);
    CHECK_INT_EQ(submit("in/x", "next"), 1);
    CHECK(run_until(idle_after_reports, 2, 8000));
    /* The stuck executor was killed (and only that one). */
    for (int i = 0; i < 200 && g_killed == 0; i++) {
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
        reap_some();
    }
    CHECK_INT_EQ(g_killed, 1);
    CHECK_INT_EQ(E.n_pids, 2);
    if (E.n_reps < 2) {
        dump();
        env_close();
        return;
    }
    CHECK_INT_EQ(E.reps[0].outcome, WISP_OUTCOME_TIMEOUT);
    CHECK_CONTAINS(E.reps[0].error, "killed");
    CHECK_INT_EQ(E.reps[0].executors, 0); /* the stuck one is gone */
    /* Killed at timeout + grace (200 ms), not before the timeout. */
    uint64_t ms = (E.reps[0].at_ns - t0) / 1000000ULL;
    CHECK(ms >= 250);
    CHECK(ms < 4000);
    CHECK_INT_EQ(E.reps[1].outcome, WISP_OUTCOME_OK);
    CHECK_INT_EQ(E.n_msgs, 1);
    CHECK(find_msg("done", "next") != NULL);
    CHECK(find_msg("done", "stuck") == NULL);
    struct wisp_fn_stats st = stats("stuck");
    CHECK_INT_EQ(st.invocations, 2);
    CHECK_INT_EQ(st.timeouts, 1);
    CHECK_INT_EQ(st.ok, 1);
    CHECK_INT_EQ(st.cold_starts, 2); /* a fresh executor served the next event */
    CHECK_INT_EQ(st.executors, 1);
    env_close();
}

static void test_forbidden_calls(void)
{
    if (!env_open(NULL))
        return;
    char marker[128];
    (void)snprintf(marker, sizeof(marker), "%s/written-by-handler", E.root);
    char handler[1024];
    (void)snprintf(handler, sizeof(handler),
                   "return function(event, ctx)\n"
                   "  if event.payload == 'exit' then os.exit(3) end\n"
                   "  if event.payload == 'io' then io.open('%s', 'w'):write('x') end\n"
                   "  if event.payload == 'execute' then os.execute('touch %s') end\n"
                   "  if event.payload == 'dofile' then dofile('%s') end\n"
                   "  ctx.publish('alive', event.payload)\n"
                   "end\n",
                   marker, marker, marker);
    set_fns(make_fn("nasty", "in/#", "", handler), NULL);
    static const char *const evs[] = {"exit", "io", "execute", "dofile", "ok"};
    for (size_t i = 0; i < 5; i++)
        CHECK_INT_EQ(submit("in/x", evs[i]), 1);
    CHECK(run_until(idle_after_reports, 5, 10000));
    CHECK_INT_EQ(E.n_reps, 5);
    for (size_t i = 0; i < 4 && i < E.n_reps; i++) {
        CHECK_INT_EQ(E.reps[i].outcome, WISP_OUTCOME_ERROR);
        CHECK_CONTAINS(E.reps[i].error, "nil");
    }
    if (E.n_reps == 5)
        CHECK_INT_EQ(E.reps[4].outcome, WISP_OUTCOME_OK);
    CHECK_INT_EQ(E.n_msgs, 1);
    CHECK(find_msg("alive", "ok") != NULL);
    struct wisp_fn_stats st = stats("nasty");
    CHECK_INT_EQ(st.errors, 4);
    CHECK_INT_EQ(st.crashes, 0);
    CHECK_INT_EQ(st.cold_starts, 1); /* the executor survived all of it */
    struct stat sb;
    CHECK(stat(marker, &sb) != 0 && errno == ENOENT);
    env_close();
}

static void test_retry_dead_letter(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("retry-dl", "in/#",
                    ",\"retry\":{\"max\":2,\"backoff_ms\":10,\"dead_letter\":\"dead/letters\"}",
                    "return function(event, ctx)\n"
                    "  ctx.publish('never', 'x')\n"
                    "  error('always fails')\n"
                    "end\n"),
            NULL);
    CHECK_INT_EQ(submit("in/x", "{\"k\":\"v\",\"n\":[1,2]}"), 1);
    CHECK(run_until(idle_after_reports, 3, 10000));
    CHECK_INT_EQ(E.n_reps, 3);
    for (size_t i = 0; i < E.n_reps; i++) {
        CHECK_INT_EQ(E.reps[i].outcome, WISP_OUTCOME_ERROR);
        CHECK_STR_EQ(E.reps[i].id, E.reps[0].id); /* the same event each time */
    }
    /* Backoff: ~10 ms then ~20 ms (+-25 %) between the attempts. */
    if (E.n_reps == 3) {
        CHECK(E.reps[1].at_ns - E.reps[0].at_ns >= 7 * 1000000ULL);
        CHECK(E.reps[2].at_ns - E.reps[1].at_ns >= 15 * 1000000ULL);
    }
    struct wisp_fn_stats st = stats("retry-dl");
    CHECK_INT_EQ(st.invocations, 3);
    CHECK_INT_EQ(st.errors, 3);
    CHECK_INT_EQ(st.retries, 2);
    CHECK_INT_EQ(st.dead_lettered, 1);
    CHECK_INT_EQ(E.n_msgs, 1);
    const struct msg *m = find_msg("dead/letters", NULL);
    CHECK(m != NULL);
    CHECK(find_msg("never", NULL) == NULL);
    if (m) {
        CHECK_INT_EQ(m->qos, 1);
        cJSON *o = cJSON_Parse(m->payload);
        CHECK(o != NULL);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(o, "function");
        const cJSON *error = cJSON_GetObjectItemCaseSensitive(o, "error");
        const cJSON *attempts = cJSON_GetObjectItemCaseSensitive(o, "attempts");
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
        const cJSON *subject = cJSON_GetObjectItemCaseSensitive(o, "subject");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        CHECK(cJSON_IsString(fn) && strcmp(fn->valuestring, "retry-dl") == 0);
        CHECK(cJSON_IsString(error));
        if (cJSON_IsString(error))
            CHECK_CONTAINS(error->valuestring, "always fails");
        CHECK(cJSON_IsNumber(attempts) && attempts->valuedouble == 3);
        CHECK(cJSON_IsString(subject) && strcmp(subject->valuestring, "in/x") == 0);
        CHECK(cJSON_IsString(id) && strcmp(id->valuestring, E.reps[0].id) == 0);
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(data, "k");
        CHECK(cJSON_IsObject(data) && cJSON_IsString(k) && strcmp(k->valuestring, "v") == 0);
        CHECK_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(data, "n")), 2);
        cJSON_Delete(o);
    }
    env_close();
}

/* The dead letter carries the payload "as JSON when it was JSON, else as
 * text": a payload that merely starts with JSON is text, and none of it may
 * be lost. */
static void test_dead_letter_not_json(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("dl-text", "in/#", ",\"retry\":{\"dead_letter\":\"dead\"}",
                    "return function(event, ctx) error('no') end\n"),
            NULL);
    CHECK_INT_EQ(submit("in/x", "plain words"), 1);
    CHECK_INT_EQ(submit("in/x", "{\"k\":1} trailing"), 1);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_INT_EQ(stats("dl-text").dead_lettered, 2);
    CHECK_INT_EQ(E.n_msgs, 2);
    for (size_t i = 0; i < E.n_msgs; i++) {
        cJSON *o = cJSON_Parse(E.msgs[i].payload);
        CHECK(o != NULL);
        const cJSON *payload = cJSON_GetObjectItemCaseSensitive(o, "payload");
        const cJSON *attempts = cJSON_GetObjectItemCaseSensitive(o, "attempts");
        CHECK(cJSON_IsNumber(attempts) && attempts->valuedouble == 1);
        CHECK(cJSON_GetObjectItemCaseSensitive(o, "data") == NULL);
        CHECK(cJSON_IsString(payload));
        if (cJSON_IsString(payload))
            CHECK(strcmp(payload->valuestring, i == 0 ? "plain words" : "{\"k\":1} trailing") == 0);
        else
            (void)fprintf(stderr, "dead letter without payload: %s\n", E.msgs[i].payload);
        cJSON_Delete(o);
    }
    env_close();
}

static void test_retry_then_success(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("flaky", "in/#", ",\"retry\":{\"max\":1,\"backoff_ms\":10}",
                    "local calls = 0\n"
                    "return function(event, ctx)\n"
                    "  calls = calls + 1\n"
                    "  if calls == 1 then error('first time') end\n"
                    "  ctx.publish('ok', event.payload .. ':' .. calls)\n"
                    "end\n"),
            NULL);
    CHECK_INT_EQ(submit("in/x", "e1"), 1);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_INT_EQ(E.n_reps, 2);
    if (E.n_reps == 2) {
        CHECK_INT_EQ(E.reps[0].outcome, WISP_OUTCOME_ERROR);
        CHECK_INT_EQ(E.reps[1].outcome, WISP_OUTCOME_OK);
        CHECK_STR_EQ(E.reps[0].id, E.reps[1].id);
    }
    CHECK_INT_EQ(E.n_msgs, 1);
    CHECK(find_msg("ok", "e1:2") != NULL); /* same warm executor, second call */
    struct wisp_fn_stats st = stats("flaky");
    CHECK_INT_EQ(st.invocations, 2);
    CHECK_INT_EQ(st.errors, 1);
    CHECK_INT_EQ(st.ok, 1);
    CHECK_INT_EQ(st.retries, 1);
    CHECK_INT_EQ(st.dead_lettered, 0);
    env_close();
}

static void test_concurrency(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("busy", "in/#", ",\"limits\":{\"concurrency\":3," SLOW_LIMIT "}",
                    BUSY_HANDLER(50, "done")),
            NULL);
    E.watch[0] = "busy";
    char payload[8];
    for (int i = 0; i < 6; i++) {
        (void)snprintf(payload, sizeof(payload), "e%d", i);
        CHECK_INT_EQ(submit("in/x", payload), 1);
    }
    CHECK_INT_EQ(stats("busy").executors, 3); /* started at once, no more */
    CHECK(run_until(idle_after_reports, 6, 15000));
    CHECK_INT_EQ(E.n_msgs, 6);
    for (int i = 0; i < 6; i++) {
        (void)snprintf(payload, sizeof(payload), "e%d", i);
        CHECK(find_msg("done", payload) != NULL);
    }
    struct wisp_fn_stats st = stats("busy");
    CHECK(E.max_exec <= 3);
    CHECK(E.max_running >= 2); /* they did run side by side */
    CHECK(E.max_running <= 3);
    CHECK_INT_EQ(st.ok, 6);
    CHECK_INT_EQ(st.cold_starts, 3);
    CHECK_INT_EQ(st.executors, 3);
    env_close();
}

static void test_max_executors_eviction(void)
{
    struct wisp_pool_config cfg = default_cfg;
    cfg.max_executors = 1;
    if (!env_open(&cfg))
        return;
    set_fns(make_fn("fa", "in/#", "", "return function(e, ctx) ctx.publish('a', e.payload) end\n"),
            make_fn("fb", "in/#", "", "return function(e, ctx) ctx.publish('b', e.payload) end\n"));
    E.watch[0] = "fa";
    E.watch[1] = "fb";
    CHECK_INT_EQ(submit("in/x", "1"), 2);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_INT_EQ(submit("in/x", "2"), 2);
    CHECK(run_until(idle_after_reports, 4, 10000));
    CHECK(find_msg("a", "1") && find_msg("b", "1") && find_msg("a", "2") && find_msg("b", "2"));
    CHECK_INT_EQ(E.n_msgs, 4);
    CHECK(E.max_exec <= 1);
    struct wisp_fn_stats a = stats("fa"), b = stats("fb");
    CHECK_INT_EQ(a.ok, 2);
    CHECK_INT_EQ(b.ok, 2);
    /* Each round evicted the other function's executor at least once. */
    CHECK(a.cold_starts + b.cold_starts >= 3);
    CHECK(a.executors + b.executors <= 1);
    env_close();
}

static void test_idle_timeout(void)
{
    struct wisp_pool_config cfg = default_cfg;
    cfg.idle_timeout_ms = 50;
    if (!env_open(&cfg))
        return;
    set_fns(
        make_fn("sleepy", "in/#", "", "return function(e, ctx) ctx.publish('o', e.payload) end\n"),
        NULL);
    E.watch[0] = "sleepy";
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    CHECK(run_until(idle_after_reports, 1, 10000));
    CHECK_INT_EQ(stats("sleepy").executors, 1);
    CHECK_INT_EQ(stats("sleepy").cold_starts, 1);
    /* The idle stop is the next thing the loop must wake up for. */
    int t = wisp_pool_next_timeout_ms(E.pool, wisp_mono_ns());
    CHECK(t > 0 && t <= 50);
    uint64_t t0 = wisp_mono_ns();
    CHECK(run_until(watched_executors_are, 0, 3000));
    uint64_t waited = (wisp_mono_ns() - t0) / 1000000ULL;
    CHECK(waited >= 30); /* not before it was idle for a while */
    CHECK_INT_EQ(stats("sleepy").executors, 0);
    CHECK(reap_all(2000)); /* and the process is really gone */
    CHECK_INT_EQ(submit("in/x", "2"), 1);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_INT_EQ(stats("sleepy").cold_starts, 2);
    CHECK_INT_EQ(E.n_msgs, 2);
    env_close();
}

static void test_replace_version(void)
{
    if (!env_open(NULL))
        return;
    struct wisp_fnspec *v1 = make_fn("ver", "in/#", ",\"limits\":{" SLOW_LIMIT "}",
                                     "return function(event, ctx)\n"
                                     "  local t = os.clock() + 0.2\n"
                                     "  while os.clock() < t do end\n"
                                     "  ctx.publish('v', 'old:' .. event.payload:sub(1, 2))\n"
                                     "end\n");
    char old_version[72] = "";
    if (v1)
        (void)snprintf(old_version, sizeof(old_version), "%s", v1->version);
    set_fns(v1, NULL);
    E.watch[0] = "ver";
    CHECK_INT_EQ(submit("in/x", "e1"), 1);
    CHECK(run_until(watched_running_at_least, 1, 10000));
    /* p1 is handed to e1's executor behind it (pipelined); e2 is too big
     * to be pipelined and waits in wispd's queue. */
    CHECK_INT_EQ(submit("in/x", "p1"), 1);
    static char big[70 * 1024];
    memset(big, ' ', sizeof(big) - 1);
    memcpy(big, "e2", 2);
    CHECK_INT_EQ(submit("in/x", big), 1);

    /* The folder changes and is loaded again while e1 runs. */
    struct wisp_fnspec *v2 =
        make_fn("ver", "in/#", "",
                "return function(event, ctx) ctx.publish('v', 'new:' .. event.payload:sub(1, 2)) "
                "end\n");
    CHECK(v2 && strcmp(v2->version, old_version) != 0);
    char new_version[72] = "";
    if (v2)
        (void)snprintf(new_version, sizeof(new_version), "%s", v2->version);
    set_fns(v2, NULL);
    CHECK_INT_EQ(wisp_pool_count(E.pool), 1);
    CHECK_INT_EQ(submit("in/x", "e3"), 1);
    CHECK(run_until(idle_after_reports, 4, 10000));
    CHECK_INT_EQ(E.n_msgs, 4);
    CHECK(find_msg("v", "old:e1") != NULL); /* finished where it started */
    CHECK(find_msg("v", "old:p1") != NULL); /* already handed to the old executor */
    CHECK(find_msg("v", "new:e2") != NULL); /* was still queued: runs on the new one */
    CHECK(find_msg("v", "new:e3") != NULL);
    for (size_t i = 0; i < E.n_reps; i++)
        CHECK_INT_EQ(E.reps[i].outcome, WISP_OUTCOME_OK);
    size_t old_reports = 0;
    for (size_t i = 0; i < E.n_reps; i++)
        old_reports += strcmp(E.reps[i].version, old_version) == 0;
    CHECK_INT_EQ(old_reports, 2);
    struct wisp_fn_stats st = stats("ver");
    CHECK_INT_EQ(st.invocations, 2); /* the new version's own counters */
    CHECK_INT_EQ(st.executors, 1);   /* the old version's executor went */

    /* Loading the same content again changes nothing: same executor. */
    uint64_t cold = st.cold_starts;
    struct wisp_fnspec *same =
        make_fn("ver", "in/#", "",
                "return function(event, ctx) ctx.publish('v', 'new:' .. event.payload:sub(1, 2)) "
                "end\n");
    CHECK(same && strcmp(same->version, new_version) == 0);
    set_fns(same, NULL);
    CHECK_INT_EQ(submit("in/x", "e4"), 1);
    CHECK(run_until(idle_after_reports, 5, 10000));
    st = stats("ver");
    CHECK_INT_EQ(st.cold_starts, cold);
    CHECK_INT_EQ(st.invocations, 3);
    CHECK(find_msg("v", "new:e4") != NULL);
    env_close();
}

static void test_remove_function(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("gone", "a/#", ",\"limits\":{" SLOW_LIMIT "}", BUSY_HANDLER(100, "a-done")),
            make_fn("stays", "b/#", "",
                    "return function(e, ctx) ctx.publish('b-done', e.payload) end\n"));
    CHECK_INT_EQ(wisp_pool_count(E.pool), 2);
    E.watch[0] = "gone";
    CHECK_INT_EQ(submit("b/x", "1"), 1);
    CHECK(run_until(reports_at_least, 1, 10000));
    CHECK_INT_EQ(submit("a/x", "in-flight"), 1);
    CHECK(run_until(watched_running_at_least, 1, 10000));

    /* "stays" is loaded again unchanged, "gone" is not in the new set. */
    set_fns(make_fn("stays", "b/#", "",
                    "return function(e, ctx) ctx.publish('b-done', e.payload) end\n"),
            NULL);
    CHECK_INT_EQ(wisp_pool_count(E.pool), 1);
    struct wisp_fn_stats st;
    CHECK_INT_EQ(wisp_pool_stats(E.pool, "gone", &st), -ENOENT);
    CHECK_INT_EQ(submit("a/x", "late"), 0);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK(find_msg("a-done", "in-flight") != NULL); /* what it had, it finished */
    CHECK(find_msg("a-done", "late") == NULL);
    CHECK(find_msg("b-done", "1") != NULL);
    CHECK_INT_EQ(submit("b/x", "2"), 1);
    CHECK(run_until(idle_after_reports, 3, 10000));
    CHECK(find_msg("b-done", "2") != NULL);
    CHECK_INT_EQ(stats("stays").cold_starts, 1);
    CHECK_INT_EQ(stats("stays").invocations, 2);

    /* Removing everything. */
    set_fns(NULL, NULL);
    CHECK_INT_EQ(wisp_pool_count(E.pool), 0);
    CHECK_INT_EQ(submit("b/x", "3"), 0);
    CHECK(run_until(idle_after_reports, 3, 2000));
    env_close();
}

static void test_queue_max(void)
{
    struct wisp_pool_config cfg = default_cfg;
    cfg.queue_max = 2;
    if (!env_open(&cfg))
        return;
    set_fns(
        make_fn("small", "in/#", "", "return function(e, ctx) ctx.publish('o', e.payload) end\n"),
        NULL);
    /* Nothing runs until the loop does: the first two wait, the rest drop. */
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    CHECK_INT_EQ(submit("in/x", "2"), 1);
    CHECK_INT_EQ(submit("in/x", "3"), 0);
    CHECK_INT_EQ(submit("in/x", "4"), 0);
    char id[40];
    CHECK_INT_EQ(wisp_pool_submit_to(E.pool, "small", "in/x", "5", 1, id), -ENOBUFS);
    struct wisp_fn_stats st = stats("small");
    CHECK_INT_EQ(st.dropped, 3);
    CHECK_INT_EQ(st.queued, 2);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_INT_EQ(E.n_msgs, 2);
    CHECK(find_msg("o", "1") && find_msg("o", "2"));
    st = stats("small");
    CHECK_INT_EQ(st.invocations, 2);
    CHECK_INT_EQ(st.queued, 0);
    /* Room again once the queue drained. */
    CHECK_INT_EQ(submit("in/x", "6"), 1);
    CHECK(run_until(idle_after_reports, 3, 10000));
    CHECK(find_msg("o", "6") != NULL);
    env_close();
}

static void test_init_failure(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("broken", "in/#", "", "return 42\n"), NULL);
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    CHECK(run_until(idle_after_reports, 1, 10000));
    CHECK_INT_EQ(E.n_reps, 1);
    if (E.n_reps >= 1) {
        CHECK_INT_EQ(E.reps[0].outcome, WISP_OUTCOME_ERROR);
        CHECK_CONTAINS(E.reps[0].error, "initialisation failed");
    }
    /* It does not spin starting executors that cannot initialise. */
    (void)run_until(never, 0, 300);
    CHECK_INT_EQ(E.n_reps, 1);
    struct wisp_fn_stats st = stats("broken");
    CHECK_INT_EQ(st.executors, 0);
    CHECK_INT_EQ(st.cold_starts, 0);
    CHECK_INT_EQ(st.errors, 1);
    CHECK_INT_EQ(E.n_msgs, 0);
    env_close();
}

/* Limits the engine enforces itself: the executor survives them. */
static void test_lua_limits(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("limits", "in/#", ",\"limits\":{\"timeout_ms\":100,\"memory_kb\":256}",
                    "local calls = 0\n"
                    "return function(event, ctx)\n"
                    "  calls = calls + 1\n"
                    "  ctx.publish('before', 'x')\n"
                    "  if event.payload == 'loop' then while true do end end\n"
                    "  if event.payload == 'hog' then\n"
                    "    local t = {}\n"
                    "    for i = 1, 1e7 do t[i] = string.rep('x', 64) .. i end\n"
                    "  end\n"
                    "  ctx.publish('o', event.payload .. ':' .. calls)\n"
                    "end\n"),
            NULL);
    static const char *const evs[] = {"a", "loop", "b", "hog", "c"};
    for (size_t i = 0; i < 5; i++)
        CHECK_INT_EQ(submit("in/x", evs[i]), 1);
    CHECK(run_until(idle_after_reports, 5, 10000));
    CHECK_INT_EQ(E.n_reps, 5);
    if (E.n_reps == 5) {
        CHECK_INT_EQ(E.reps[1].outcome, WISP_OUTCOME_TIMEOUT);
        CHECK_CONTAINS(E.reps[1].error, "limits.timeout_ms (100 ms)");
        CHECK(strstr(E.reps[1].error, "killed") == NULL); /* the hook stopped it */
        CHECK_INT_EQ(E.reps[3].outcome, WISP_OUTCOME_MEMORY);
        CHECK_CONTAINS(E.reps[3].error, "limits.memory_kb");
    }
    /* Each limit re-created the instance (calls restarts at 1), in the
     * same process, and failed invocations published nothing. */
    CHECK_INT_EQ(E.n_msgs, 6);
    CHECK(find_msg("o", "a:1") != NULL);
    CHECK(find_msg("o", "b:1") != NULL);
    CHECK(find_msg("o", "c:1") != NULL);
    struct wisp_fn_stats st = stats("limits");
    CHECK_INT_EQ(st.timeouts, 1);
    CHECK_INT_EQ(st.memory, 1);
    CHECK_INT_EQ(st.ok, 3);
    CHECK_INT_EQ(st.executors, 1);
    CHECK_INT_EQ(E.n_pids, 1);
    reap_some();
    CHECK_INT_EQ(g_killed, 0);
    env_close();
}

/* An executor that dies under an event: outcome crash, retried elsewhere. */
static void test_crash_retry(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("victim", "in/#",
                    ",\"retry\":{\"max\":1,\"backoff_ms\":10},\"limits\":{" SLOW_LIMIT "}",
                    BUSY_HANDLER(300, "done")),
            NULL);
    E.watch[0] = "victim";
    CHECK_INT_EQ(submit("in/x", "e1"), 1);
    CHECK(run_until(watched_running_at_least, 1, 10000));
    CHECK_INT_EQ(E.n_pids, 1);
    if (E.n_pids == 1)
        CHECK(kill(E.pids[0], SIGKILL) == 0);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_INT_EQ(E.n_reps, 2);
    if (E.n_reps == 2) {
        CHECK_INT_EQ(E.reps[0].outcome, WISP_OUTCOME_CRASH);
        CHECK_CONTAINS(E.reps[0].error, "exited unexpectedly");
        CHECK_INT_EQ(E.reps[1].outcome, WISP_OUTCOME_OK);
    }
    CHECK_INT_EQ(E.n_msgs, 1);
    CHECK(find_msg("done", "e1") != NULL);
    struct wisp_fn_stats st = stats("victim");
    CHECK_INT_EQ(st.crashes, 1);
    CHECK_INT_EQ(st.retries, 1);
    CHECK_INT_EQ(st.ok, 1);
    CHECK_INT_EQ(st.cold_starts, 2);
    CHECK_INT_EQ(E.n_pids, 2);
    env_close();
}

/* Shutdown past its deadline: the running event is killed, queued ones and
 * pending retries are discarded, and all are counted. */
static void test_abandon(void)
{
    if (!env_open(NULL))
        return;
    set_fns(make_fn("slow", "in/#", ",\"limits\":{" SLOW_LIMIT "}", BUSY_HANDLER(2000, "done")),
            NULL);
    E.watch[0] = "slow";
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    CHECK_INT_EQ(submit("in/x", "2"), 1);
    CHECK_INT_EQ(submit("in/x", "3"), 1);
    CHECK(run_until(watched_running_at_least, 1, 10000));
    CHECK(!wisp_pool_idle(E.pool));
    CHECK_INT_EQ(wisp_pool_abandon(E.pool), 3);
    CHECK(wisp_pool_idle(E.pool));
    CHECK_INT_EQ(E.n_reps, 1);
    if (E.n_reps == 1) {
        CHECK_INT_EQ(E.reps[0].outcome, WISP_OUTCOME_REJECTED);
        CHECK_CONTAINS(E.reps[0].error, "abandoned");
    }
    struct wisp_fn_stats st = stats("slow");
    CHECK_INT_EQ(st.queued, 0);
    CHECK_INT_EQ(st.running, 0);
    CHECK_INT_EQ(st.executors, 0);
    CHECK_INT_EQ(E.n_msgs, 0);
    CHECK(reap_all(5000));
    CHECK_INT_EQ(g_killed, 1);
    env_close();
}

/* fork can fail (EAGAIN: out of processes or memory). The event waits, and
 * the pool must come back to it by itself: wispd sleeps for as long as
 * wisp_pool_next_timeout_ms says, and nothing else may ever wake it. */
static void test_spawn_failure(void)
{
    if (!env_open(NULL))
        return;
    set_fns(
        make_fn("unlucky", "in/#", "", "return function(e, ctx) ctx.publish('o', e.payload) end\n"),
        NULL);
    E.fail_spawns = 1;
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    struct wisp_fn_stats st = stats("unlucky");
    CHECK_INT_EQ(st.queued, 1);
    CHECK_INT_EQ(st.executors, 0);
    CHECK(wisp_pool_next_timeout_ms(E.pool, wisp_mono_ns()) >= 0);
    CHECK(run_strictly_until(idle_after_reports, 1, 2000));
    CHECK(find_msg("o", "1") != NULL);
    env_close();
}

int main(int argc, char **argv)
{
    /* Reports are info lines; keep the test output to what went wrong. */
    wisp_log_threshold = WISP_LOG_WARN;
    static const struct wisp_check_test tests[] = {
        {"publishes_in_order", test_publishes_in_order},
        {"handler_error", test_handler_error},
        {"timeout_kill", test_timeout_kill},
        {"forbidden_calls", test_forbidden_calls},
        {"retry_dead_letter", test_retry_dead_letter},
        {"dead_letter_not_json", test_dead_letter_not_json},
        {"retry_then_success", test_retry_then_success},
        {"concurrency", test_concurrency},
        {"max_executors_eviction", test_max_executors_eviction},
        {"idle_timeout", test_idle_timeout},
        {"replace_version", test_replace_version},
        {"remove_function", test_remove_function},
        {"queue_max", test_queue_max},
        {"init_failure", test_init_failure},
        {"lua_limits", test_lua_limits},
        {"crash_retry", test_crash_retry},
        {"abandon", test_abandon},
        {"spawn_failure", test_spawn_failure},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
