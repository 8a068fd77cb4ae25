#include "pool_harness.h"

#include <errno.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#include "executor.h"
#include "log.h"
#include "testutil.h"
#include "util.h"

struct env E;
int g_killed;

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

static void count_kill(int status)
{
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        g_killed++;
}

void reap_some(void)
{
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0)
        count_kill(status);
}

bool reap_all(int ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)ms * 1000000ULL;
    for (;;) {
        uint64_t now = wisp_mono_ns();
        int left = now < deadline ? (int)((deadline - now) / 1000000ULL) : 0;
        int status;
        pid_t r = wisp_test_waitpid(-1, &status, left);
        if (r > 0)
            count_kill(status);
        else
            return r < 0 && errno == ECHILD;
    }
}

const struct wisp_pool_config default_cfg = {
    .max_executors = 16,
    .idle_timeout_ms = 0,
    .queue_max = 100,
    .device = "test-gw",
};

bool env_open(const struct wisp_pool_config *cfg)
{
    /* Reports are info lines; keep the test output to what went wrong. */
    wisp_log_threshold = WISP_LOG_WARN;
    memset(&E, 0, sizeof(E));
    g_killed = 0;
    if (!wisp_test_mkdtemp(E.root, sizeof(E.root), "pool"))
        return false;
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

bool env_open_fn(const struct wisp_pool_config *cfg, const char *name, const char *extra,
                 const char *handler)
{
    if (!env_open(cfg))
        return false;
    set_fns(make_fn(name, "in/#", extra, handler), NULL);
    return true;
}

void env_close(void)
{
    wisp_pool_destroy(E.pool);
    E.pool = NULL;
    wisp_loop_destroy(E.loop);
    E.loop = NULL;
    /* Closing their sockets ends idle executors; busy ones were killed. */
    CHECK(reap_all(5000));
    wisp_test_rmtree(E.root);
}

struct wisp_fnspec *make_fn(const char *name, const char *topic, const char *extra,
                            const char *handler)
{
    char dir[256], err[1024] = "";
    wisp_test_path(dir, sizeof(dir), E.root, name);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        CHECK(!"mkdir");
    wisp_test_write_fn(dir, name, topic, extra, handler);
    struct wisp_fnspec *spec = NULL;
    int rc = wisp_fnspec_load(dir, &spec, err, sizeof(err));
    if (rc != 0)
        (void)fprintf(stderr, "loading %s: %s\n", name, err);
    CHECK_INT_EQ(rc, 0);
    return spec;
}

void set_fns(struct wisp_fnspec *a, struct wisp_fnspec *b)
{
    struct wisp_fnspec *specs[2] = {a, b};
    size_t n = b ? 2 : (a ? 1 : 0);
    wisp_pool_set_functions(E.pool, specs, n);
}

int submit(const char *topic, const char *payload)
{
    int n = wisp_pool_submit_mqtt(E.pool, topic, payload, strlen(payload), 1, 0);
    wisp_pool_schedule(E.pool);
    return n;
}

void submit_each(const char *topic, const char *const *payloads, size_t n)
{
    for (size_t i = 0; i < n; i++)
        CHECK_INT_EQ(submit(topic, payloads[i]), 1);
}

struct wisp_fn_stats stats(const char *name)
{
    struct wisp_fn_stats st;
    memset(&st, 0, sizeof(st));
    CHECK_INT_EQ(wisp_pool_stats(E.pool, name, &st), 0);
    return st;
}

void check_stats(const char *file, int line, const char *name, const char *want)
{
#define FIELD(f) #f, offsetof(struct wisp_fn_stats, f)
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {FIELD(invocations)},   {FIELD(ok)},      {FIELD(errors)},      {FIELD(timeouts)},
        {FIELD(memory)},        {FIELD(crashes)}, {FIELD(cold_starts)}, {FIELD(retries)},
        {FIELD(dead_lettered)}, {FIELD(dropped)}, {FIELD(queued)},      {FIELD(running)},
        {FIELD(executors)},
    };
#undef FIELD
    struct wisp_fn_stats st = stats(name);
    for (const char *p = want;;) {
        char field[32];
        unsigned long long expected;
        int used = 0;
        while (*p == ' ')
            p++;
        if (!*p)
            return;
        /* "name=number": a lowercase field name, '=', a decimal count. */
        size_t k = 0;
        while (k + 1 < sizeof(field) && ((p[k] >= 'a' && p[k] <= 'z') || p[k] == '_')) {
            field[k] = p[k];
            k++;
        }
        field[k] = '\0';
        char *end = NULL;
        errno = 0;
        expected = k && p[k] == '=' && p[k + 1] >= '0' && p[k + 1] <= '9'
                       ? strtoull(p + k + 1, &end, 10)
                       : 0;
        used = end && errno == 0 && (*end == ' ' || *end == '\0') ? (int)(end - p) : 0;
        if (used == 0) {
            (void)fprintf(stderr, "%s:%d: CHECK_STATS: cannot read \"%s\"\n", file, line, p);
            wisp_check_failures++;
            return;
        }
        p += used;
        size_t i = 0, n = sizeof(fields) / sizeof(fields[0]);
        while (i < n && strcmp(fields[i].name, field) != 0)
            i++;
        uint64_t got = 0;
        if (i < n)
            memcpy(&got, (const char *)&st + fields[i].off, sizeof(got));
        if (i == n || got != expected) {
            (void)fprintf(stderr, "%s:%d: CHECK_STATS failed: %s.%s == %llu, expected %llu\n", file,
                          line, name, field, (unsigned long long)got, expected);
            wisp_check_failures++;
        }
    }
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

/* The loop as the supervisor runs it. strict: sleep exactly as long as the
 * pool asks; else wake every 20 ms to record the watched counters. */
static bool run(cond_fn cond, long arg, int ms, bool strict)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)ms * 1000000ULL;
    for (;;) {
        if (!strict)
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
        if (!strict && t > 20)
            t = 20;
        CHECK(wisp_loop_run_once(E.loop, t) >= 0);
        wisp_pool_tick(E.pool, wisp_mono_ns());
        reap_some();
    }
}

bool run_until(cond_fn cond, long arg, int ms)
{
    return run(cond, arg, ms, false);
}

bool run_strictly_until(cond_fn cond, long arg, int ms)
{
    return run(cond, arg, ms, true);
}

bool reports_at_least(long n)
{
    return E.n_reps >= (size_t)n;
}

bool idle_after_reports(long n)
{
    return E.n_reps >= (size_t)n && wisp_pool_idle(E.pool);
}

bool watched_executors_are(long n)
{
    struct wisp_fn_stats st;
    return wisp_pool_stats(E.pool, E.watch[0], &st) == 0 && st.executors == (uint64_t)n;
}

bool watched_running_at_least(long n)
{
    struct wisp_fn_stats st;
    return wisp_pool_stats(E.pool, E.watch[0], &st) == 0 && st.running >= (uint64_t)n;
}

bool never(long n)
{
    (void)n;
    return false;
}

const struct msg *find_msg(const char *topic, const char *payload)
{
    for (size_t i = 0; i < E.n_msgs; i++) {
        if (strcmp(E.msgs[i].topic, topic) == 0 &&
            (!payload || strcmp(E.msgs[i].payload, payload) == 0))
            return &E.msgs[i];
    }
    return NULL;
}

void dump(void)
{
    for (size_t i = 0; i < E.n_msgs; i++)
        (void)fprintf(stderr, "  msg %s %s\n", E.msgs[i].topic, E.msgs[i].payload);
    for (size_t i = 0; i < E.n_reps; i++)
        (void)fprintf(stderr, "  report %s@%s %s %s\n", E.reps[i].fn, E.reps[i].version,
                      wisp_outcome_name(E.reps[i].outcome), E.reps[i].error);
}
