/* The pool (runtime/src/pool.c, pool_exec.c) over time: executors scaling
 * out to their limits and stopping when idle, functions replaced and removed
 * while events run, bounded queues, abandoning work at shutdown and fork
 * failures. The harness is pool_harness.c. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "pool_harness.h"
#include "util.h"

static void test_concurrency(void)
{
    if (!env_open_fn(NULL, "busy", ",\"limits\":{\"concurrency\":3," SLOW_LIMIT "}",
                     BUSY_HANDLER(50, "done")))
        return;
    E.watch[0] = "busy";
    char payload[8];
    for (int i = 0; i < 6; i++) {
        (void)snprintf(payload, sizeof(payload), "e%d", i);
        CHECK_INT_EQ(submit("in/x", payload), 1);
    }
    CHECK_STATS("busy", "executors=3"); /* started at once, no more */
    CHECK(run_until(idle_after_reports, 6, 15000));
    CHECK_INT_EQ(E.n_msgs, 6);
    for (int i = 0; i < 6; i++) {
        (void)snprintf(payload, sizeof(payload), "e%d", i);
        CHECK(find_msg("done", payload) != NULL);
    }
    CHECK(E.max_exec <= 3);
    CHECK(E.max_running >= 2); /* they did run side by side */
    CHECK(E.max_running <= 3);
    CHECK_STATS("busy", "ok=6 cold_starts=3 executors=3");
    env_close();
}

static void test_max_executors_eviction(void)
{
    struct wisp_pool_config cfg = default_cfg;
    cfg.max_executors = 1;
    if (!env_open(&cfg))
        return;
    set_fns(make_fn("fa", "in/#", "", ECHO_HANDLER("a")),
            make_fn("fb", "in/#", "", ECHO_HANDLER("b")));
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
    if (!env_open_fn(&cfg, "sleepy", "", ECHO_HANDLER("o")))
        return;
    E.watch[0] = "sleepy";
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    CHECK(run_until(idle_after_reports, 1, 10000));
    CHECK_STATS("sleepy", "executors=1 cold_starts=1");
    /* The idle stop is the next thing the loop must wake up for. */
    int t = wisp_pool_next_timeout_ms(E.pool, wisp_mono_ns());
    CHECK(t > 0 && t <= 50);
    uint64_t t0 = wisp_mono_ns();
    CHECK(run_until(watched_executors_are, 0, 3000));
    uint64_t waited = (wisp_mono_ns() - t0) / 1000000ULL;
    CHECK(waited >= 30); /* not before it was idle for a while */
    CHECK_STATS("sleepy", "executors=0");
    CHECK(reap_all(2000)); /* and the process is really gone */
    CHECK_INT_EQ(submit("in/x", "2"), 1);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_STATS("sleepy", "cold_starts=2");
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
    big[0] = 'e';
    big[1] = '2';
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
            make_fn("stays", "b/#", "", ECHO_HANDLER("b-done")));
    CHECK_INT_EQ(wisp_pool_count(E.pool), 2);
    E.watch[0] = "gone";
    CHECK_INT_EQ(submit("b/x", "1"), 1);
    CHECK(run_until(reports_at_least, 1, 10000));
    CHECK_INT_EQ(submit("a/x", "in-flight"), 1);
    CHECK(run_until(watched_running_at_least, 1, 10000));

    /* "stays" is loaded again unchanged, "gone" is not in the new set. */
    set_fns(make_fn("stays", "b/#", "", ECHO_HANDLER("b-done")), NULL);
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
    CHECK_STATS("stays", "cold_starts=1 invocations=2");

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
    if (!env_open_fn(&cfg, "small", "", ECHO_HANDLER("o")))
        return;
    /* Nothing runs until the loop does: the first two wait, the rest drop. */
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    CHECK_INT_EQ(submit("in/x", "2"), 1);
    CHECK_INT_EQ(submit("in/x", "3"), 0);
    CHECK_INT_EQ(submit("in/x", "4"), 0);
    char id[40];
    CHECK_INT_EQ(wisp_pool_submit_to(E.pool, "small", "in/x", "5", 1, id), -ENOBUFS);
    CHECK_STATS("small", "dropped=3 queued=2");
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_INT_EQ(E.n_msgs, 2);
    CHECK(find_msg("o", "1") && find_msg("o", "2"));
    CHECK_STATS("small", "invocations=2 queued=0");
    /* Room again once the queue drained. */
    CHECK_INT_EQ(submit("in/x", "6"), 1);
    CHECK(run_until(idle_after_reports, 3, 10000));
    CHECK(find_msg("o", "6") != NULL);
    env_close();
}

/* Shutdown past its deadline: the running event is killed, queued ones and
 * pending retries are discarded, and all are counted. */
static void test_abandon(void)
{
    if (!env_open_fn(NULL, "slow", ",\"limits\":{" SLOW_LIMIT "}", BUSY_HANDLER(2000, "done")))
        return;
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
    CHECK_STATS("slow", "queued=0 running=0 executors=0");
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
    if (!env_open_fn(NULL, "unlucky", "", ECHO_HANDLER("o")))
        return;
    E.fail_spawns = 1;
    CHECK_INT_EQ(submit("in/x", "1"), 1);
    CHECK_STATS("unlucky", "queued=1 executors=0");
    CHECK(wisp_pool_next_timeout_ms(E.pool, wisp_mono_ns()) >= 0);
    CHECK(run_strictly_until(idle_after_reports, 1, 2000));
    CHECK(find_msg("o", "1") != NULL);
    env_close();
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"concurrency", test_concurrency},
        {"max_executors_eviction", test_max_executors_eviction},
        {"idle_timeout", test_idle_timeout},
        {"replace_version", test_replace_version},
        {"remove_function", test_remove_function},
        {"queue_max", test_queue_max},
        {"abandon", test_abandon},
        {"spawn_failure", test_spawn_failure},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
