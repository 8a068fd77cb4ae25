/* The pool (runtime/src/pool.c, pool_exec.c) driven in-process, event by
 * event: what invocations publish and report, handler errors, timeouts and
 * engine limits, forbidden calls, retries and dead letters, crashes. The
 * pool's life over time (scaling, reloads, queues, shutdown) is in
 * test_pool_lifecycle.c; the harness is pool_harness.c. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "check.h"
#include "pool_harness.h"
#include "util.h"

static void test_publishes_in_order(void)
{
    if (!env_open_fn(NULL, "relay", ",\"env\":{\"K\":\"v1\"}",
                     "return function(event, ctx)\n"
                     "  ctx.publish('out/' .. event.subject, event.payload, {qos = 1})\n"
                     "  ctx.publish('meta', table.concat({event.source, event.type,\n"
                     "    tostring(event.qos), tostring(event.retain), ctx.env.K,\n"
                     "    ctx.fn.name, tostring(event.data and event.data.n)}, '|'))\n"
                     "end\n"))
        return;
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
    /* One warm executor served them all. */
    CHECK_STATS("relay",
                "invocations=5 ok=5 errors=0 cold_starts=1 executors=1 queued=0 running=0");

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
    if (!env_open_fn(NULL, "failing", "",
                     "return function(event, ctx)\n"
                     "  ctx.publish('before', 'x')\n"
                     "  if event.payload == 'boom' then error('boom: ' .. event.payload) end\n"
                     "  ctx.publish('after', event.payload)\n"
                     "end\n"))
        return;
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
    /* An error does not cost the executor (one cold start). */
    CHECK_STATS("failing", "invocations=2 errors=1 ok=1 retries=0 dead_lettered=0 cold_starts=1");
    env_close();
}

static void test_timeout_kill(void)
{
    if (!env_open_fn(NULL, "stuck", ",\"limits\":{\"timeout_ms\":100}",
                     "return function(event, ctx)\n"
                     "  if event.payload == 'stuck' then\n"
                     "    string.rep('a', 5000):find(string.rep('a-', 40) .. 'b')\n"
                     "  end\n"
                     "  ctx.publish('done', event.payload)\n"
                     "end\n"))
        return;
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
    /* A fresh executor served the next event (a second cold start). */
    CHECK_STATS("stuck", "invocations=2 timeouts=1 ok=1 cold_starts=2 executors=1");
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
    submit_each("in/x", evs, 5);
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
    /* The executor survived all of it. */
    CHECK_STATS("nasty", "errors=4 crashes=0 cold_starts=1");
    struct stat sb;
    CHECK(stat(marker, &sb) != 0 && errno == ENOENT);
    env_close();
}

static void test_retry_dead_letter(void)
{
    if (!env_open_fn(NULL, "retry-dl",
                     ",\"retry\":{\"max\":2,\"backoff_ms\":10,\"dead_letter\":\"dead/letters\"}",
                     "return function(event, ctx)\n"
                     "  ctx.publish('never', 'x')\n"
                     "  error('always fails')\n"
                     "end\n"))
        return;
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
    CHECK_STATS("retry-dl", "invocations=3 errors=3 retries=2 dead_lettered=1");
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
    if (!env_open_fn(NULL, "dl-text", ",\"retry\":{\"dead_letter\":\"dead\"}",
                     "return function(event, ctx) error('no') end\n"))
        return;
    CHECK_INT_EQ(submit("in/x", "plain words"), 1);
    CHECK_INT_EQ(submit("in/x", "{\"k\":1} trailing"), 1);
    CHECK(run_until(idle_after_reports, 2, 10000));
    CHECK_STATS("dl-text", "dead_lettered=2");
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
    if (!env_open_fn(NULL, "flaky", ",\"retry\":{\"max\":1,\"backoff_ms\":10}",
                     "local calls = 0\n"
                     "return function(event, ctx)\n"
                     "  calls = calls + 1\n"
                     "  if calls == 1 then error('first time') end\n"
                     "  ctx.publish('ok', event.payload .. ':' .. calls)\n"
                     "end\n"))
        return;
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
    CHECK_STATS("flaky", "invocations=2 errors=1 ok=1 retries=1 dead_lettered=0");
    env_close();
}

static void test_init_failure(void)
{
    if (!env_open_fn(NULL, "broken", "", "return 42\n"))
        return;
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
    CHECK_STATS("broken", "executors=0 cold_starts=0 errors=1");
    CHECK_INT_EQ(E.n_msgs, 0);
    env_close();
}

/* Limits the engine enforces itself: the executor survives them. */
static void test_lua_limits(void)
{
    if (!env_open_fn(NULL, "limits", ",\"limits\":{\"timeout_ms\":100,\"memory_kb\":256}",
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
                     "end\n"))
        return;
    static const char *const evs[] = {"a", "loop", "b", "hog", "c"};
    submit_each("in/x", evs, 5);
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
    CHECK_STATS("limits", "timeouts=1 memory=1 ok=3 executors=1");
    CHECK_INT_EQ(E.n_pids, 1);
    reap_some();
    CHECK_INT_EQ(g_killed, 0);
    env_close();
}

/* An executor that dies under an event: outcome crash, retried elsewhere. */
static void test_crash_retry(void)
{
    if (!env_open_fn(NULL, "victim",
                     ",\"retry\":{\"max\":1,\"backoff_ms\":10},\"limits\":{" SLOW_LIMIT "}",
                     BUSY_HANDLER(300, "done")))
        return;
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
    CHECK_STATS("victim", "crashes=1 retries=1 ok=1 cold_starts=2");
    CHECK_INT_EQ(E.n_pids, 2);
    env_close();
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"publishes_in_order", test_publishes_in_order},
        {"handler_error", test_handler_error},
        {"timeout_kill", test_timeout_kill},
        {"forbidden_calls", test_forbidden_calls},
        {"retry_dead_letter", test_retry_dead_letter},
        {"dead_letter_not_json", test_dead_letter_not_json},
        {"retry_then_success", test_retry_then_success},
        {"init_failure", test_init_failure},
        {"lua_limits", test_lua_limits},
        {"crash_retry", test_crash_retry},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
