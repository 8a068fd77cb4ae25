/*
 * The world of the pool tests (test_pool.c, test_pool_lifecycle.c): a real
 * loop and pool (runtime/src/pool.c, pool_exec.c), real executor processes
 * forked with wisp_executor_spawn_direct, real function folders, and hooks
 * that record what would go to MQTT. One test at a time owns E, from
 * env_open to env_close.
 */
#ifndef WISP_POOL_HARNESS_H
#define WISP_POOL_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine.h"
#include "fnspec.h"
#include "loop.h"
#include "pool.h"

#define MAX_MSGS    64
#define MAX_REPORTS 64

/* A message the pool published. */
struct msg {
    char topic[128];
    char payload[4096];
    size_t len;
    int qos;
    int retain;
};

/* A report the pool made on an invocation. */
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

extern struct env E;
extern int g_killed; /* children reaped that died of SIGKILL */

/* 16 executors, no idle stop, queues of 100, device "test-gw". */
extern const struct wisp_pool_config default_cfg;

/* A fresh E with its own function folder and a pool made with cfg (NULL:
 * default_cfg). False when the test cannot go on. */
bool env_open(const struct wisp_pool_config *cfg);

/* env_open, then one function `name` on "in/#" (as make_fn) handed to the
 * pool. */
bool env_open_fn(const struct wisp_pool_config *cfg, const char *name, const char *extra,
                 const char *handler);

/* Destroys the pool and loop, checks that every executor went, removes the
 * folder. */
void env_close(void);

/* Writes (or rewrites) <root>/<name> with a function.json for `topic`
 * plus `extra` (",\"limits\":{...}" or "") and handler.lua, and loads it. */
struct wisp_fnspec *make_fn(const char *name, const char *topic, const char *extra,
                            const char *handler);

/* Hands the pool a set of functions (it takes the specs). */
void set_fns(struct wisp_fnspec *a, struct wisp_fnspec *b);

/* Submits an MQTT message (QoS 1) and schedules: the number of functions
 * it went to. */
int submit(const char *topic, const char *payload);

/* Submits each payload on topic, checking that each went to one function. */
void submit_each(const char *topic, const char *const *payloads, size_t n);

/* The counters of a function (checked to exist). */
struct wisp_fn_stats stats(const char *name);

/* Checks counters of function `name` against `want`, a list of
 * "field=value" named as in struct wisp_fn_stats, e.g. "ok=2 errors=0". */
#define CHECK_STATS(name, want) check_stats(__FILE__, __LINE__, (name), (want))
void check_stats(const char *file, int line, const char *name, const char *want);

typedef bool (*cond_fn)(long arg);

/* Runs the loop the way the supervisor does until cond holds or ms pass. */
bool run_until(cond_fn cond, long arg, int ms);

/* Like run_until, but sleeps exactly as long as the pool asks (-1: until
 * the deadline), as wispd does when nothing else is going on. */
bool run_strictly_until(cond_fn cond, long arg, int ms);

/* Conditions for run_until. */
bool reports_at_least(long n);
bool idle_after_reports(long n);
bool watched_executors_are(long n);
bool watched_running_at_least(long n);
bool never(long n);

/* The first message on topic (with payload, unless NULL), or NULL. */
const struct msg *find_msg(const char *topic, const char *payload);

/* Prints the messages and reports so far (after a failed check). */
void dump(void);

/* Reaps the children that have exited, counting those killed. */
void reap_some(void);

/* Waits until every child is gone; false if some outlived ms. */
bool reap_all(int ms);

/* A handler that publishes each payload on `topic`. */
#define ECHO_HANDLER(topic) "return function(e, ctx) ctx.publish('" topic "', e.payload) end\n"

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

#endif
