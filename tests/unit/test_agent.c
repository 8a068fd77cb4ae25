/* The device agent's pure parts: the desired-state parser, active.json
 * (round trip and corruption) and the health check's arithmetic. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_internal.h"
#include "check.h"
#include "testutil.h"

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define SHA_C "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char root[256];

/* Parses text with single quotes turned into double quotes. */
static int parse_q(const char *text, struct agent_desired *d, char *err, size_t errlen)
{
    char *t = strdup(text);
    for (char *p = t; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    int rc = agent_desired_parse(t, strlen(t), d, err, errlen);
    free(t);
    return rc;
}

static void test_desired_ok(void)
{
    struct agent_desired d;
    char err[256] = "";
    int rc = parse_q("{'generation': 7, 'rollout': 'r-3', 'extra': [1], 'functions': "
                     "{'door-watch': {'bundle': '" SHA_C "', 'version': '2.1.0', 'x': 1}, "
                     "'b': {'bundle': '" SHA_A "'}}, "
                     "'health': {'min_invocations': 10, 'max_error_rate': 0.5}}",
                     &d, err, sizeof(err));
    CHECK_INT_EQ(rc, 0);
    if (rc != 0 || d.n != 2 || !d.fns)
        return;
    CHECK_INT_EQ(d.generation, 7);
    CHECK_STR_EQ(d.rollout, "r-3");
    CHECK_INT_EQ(d.n, 2);
    CHECK_STR_EQ(d.fns[0].name, "door-watch");
    CHECK_STR_EQ(d.fns[0].bundle, SHA_C);
    CHECK_STR_EQ(d.fns[0].version, "2.1.0");
    CHECK(d.fns[1].version == NULL);
    CHECK(d.has_health);
    CHECK_INT_EQ(d.min_invocations, 10);
    CHECK(d.max_error_rate == 0.5);
    agent_desired_fini(&d);

    rc = parse_q("{'generation': 0, 'functions': {}}", &d, err, sizeof(err));
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(d.n, 0);
    CHECK(!d.has_health);
    agent_desired_fini(&d);
}

static void test_desired_refused(void)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"not json", "not valid JSON"},
        {"[1]", "must be a JSON object"},
        {"{'functions': {}}", "generation: required"},
        {"{'generation': -1, 'functions': {}}", "generation: must be a whole number"},
        {"{'generation': 1.5, 'functions': {}}", "generation: must be a whole number"},
        {"{'generation': '3', 'functions': {}}", "generation: must be a whole number"},
        {"{'generation': 1}", "functions: required"},
        {"{'generation': 1, 'functions': []}", "functions: must be an object"},
        {"{'generation': 1, 'functions': {'Bad': {'bundle': '" SHA_A "'}}}",
         "is not a function name"},
        {"{'generation': 1, 'functions': {'../x': {'bundle': '" SHA_A "'}}}",
         "is not a function name"},
        {"{'generation': 1, 'functions': {'a': 1}}", "functions.a: must be an object"},
        {"{'generation': 1, 'functions': {'a': {}}}", "functions.a.bundle: required"},
        {"{'generation': 1, 'functions': {'a': {'bundle': 'xyz'}}}", "functions.a.bundle: must"},
        {"{'generation': 1, 'functions': {'a': {'bundle': '" SHA_A "0'}}}",
         "functions.a.bundle: must"},
        {"{'generation': 1, 'functions': {'a': {'bundle': "
         "'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}}}",
         "functions.a.bundle: must"},
        {"{'generation': 1, 'functions': {'a': {'bundle': '" SHA_A "', 'version': 3}}}",
         "functions.a.version"},
        {"{'generation': 1, 'functions': {'a': {'bundle': '" SHA_A "'}, 'a': {'bundle': '" SHA_B
         "'}}}",
         "functions.a: given twice"},
        {"{'generation': 1, 'rollout': 5, 'functions': {}}", "rollout: must be a string"},
        {"{'generation': 1, 'functions': {}, 'health': 3}", "health: must be an object"},
        {"{'generation': 1, 'functions': {}, 'health': {'max_error_rate': 0.5}}",
         "health.min_invocations"},
        {"{'generation': 1, 'functions': {}, 'health': {'min_invocations': 0, "
         "'max_error_rate': 0.5}}",
         "health.min_invocations"},
        {"{'generation': 1, 'functions': {}, 'health': {'min_invocations': 5, "
         "'max_error_rate': 1.5}}",
         "health.max_error_rate"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct agent_desired d;
        char err[256] = "";
        int rc = parse_q(cases[i].text, &d, err, sizeof(err));
        if (rc == 0)
            (void)fprintf(stderr, "case %zu was accepted: %s\n", i, cases[i].text);
        CHECK(rc != 0);
        CHECK_CONTAINS(err, cases[i].want);
        CHECK(d.fns == NULL && d.n == 0 && d.rollout == NULL);
    }
    /* Not UTF-8, embedded NUL. */
    struct agent_desired d;
    char err[256] = "";
    CHECK(agent_desired_parse("{\"generation\":1,\"functions\":{}}\xff", 32, &d, err,
                              sizeof(err)) != 0);
    CHECK(agent_desired_parse("{\"generation\":1,\0\"functions\":{}}", 32, &d, err, sizeof(err)) !=
          0);
}

static void test_names_and_shas(void)
{
    CHECK(agent_name_valid("door-watch"));
    CHECK(agent_name_valid("a_1"));
    CHECK(!agent_name_valid("-a"));
    CHECK(!agent_name_valid(""));
    CHECK(!agent_name_valid("a/b"));
    CHECK(!agent_name_valid(".."));
    char long_name[70];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    CHECK(!agent_name_valid(long_name));
    CHECK(agent_sha_valid(SHA_C));
    CHECK(!agent_sha_valid(SHA_C "0"));
    CHECK(!agent_sha_valid("abc"));
    CHECK(!agent_sha_valid(NULL));
    CHECK_INT_EQ(agent_status_parse("rolled_back"), AGENT_ROLLED_BACK);
    CHECK_INT_EQ(agent_status_parse("bogus"), -1);
}

static void fill_state(struct agent_state *st)
{
    agent_state_init(st, 10, 0.5);
    st->generation = 42;
    CHECK_INT_EQ(agent_set_str(&st->rollout, "r-9"), 0);
    struct agent_fn *f = agent_state_add(st, "door-watch");
    CHECK(f != NULL);
    if (!f)
        return;
    memcpy(f->bundle, SHA_A, 65);
    memcpy(f->previous, SHA_B, 65);
    memcpy(f->desired, SHA_C, 65);
    (void)agent_set_str(&f->version, "2.0.0");
    (void)agent_set_str(&f->prev_version, "1.0.0");
    (void)agent_set_str(&f->error, "3 of 4 invocations failed (error: \"boom\")");
    f->status = AGENT_ROLLED_BACK;
    agent_fn_mark_bad(f, SHA_C);
    f->watching = true;
    f = agent_state_add(st, "other");
    CHECK(f != NULL);
    if (f)
        memcpy(f->desired, SHA_C, 65);
}

static void test_active_round_trip(void)
{
    struct agent_state st, back;
    fill_state(&st);
    char path[512], err[256] = "";
    wisp_test_path(path, sizeof(path), root, "active.json");
    CHECK_INT_EQ(agent_state_save(path, &st, err, sizeof(err)), 0);
    agent_state_init(&back, 1, 0);
    CHECK_INT_EQ(agent_state_load(path, &back, err, sizeof(err)), 0);
    CHECK_INT_EQ(back.generation, 42);
    CHECK_STR_EQ(back.rollout, "r-9");
    CHECK_INT_EQ(back.min_invocations, 10);
    CHECK(back.max_error_rate == 0.5);
    CHECK_INT_EQ(back.n, 2);
    struct agent_fn *f = agent_state_find(&back, "door-watch");
    CHECK(f != NULL);
    if (f) {
        CHECK_STR_EQ(f->bundle, SHA_A);
        CHECK_STR_EQ(f->previous, SHA_B);
        CHECK_STR_EQ(f->desired, SHA_C);
        CHECK_STR_EQ(f->version, "2.0.0");
        CHECK_STR_EQ(f->prev_version, "1.0.0");
        CHECK_INT_EQ(f->status, AGENT_ROLLED_BACK);
        CHECK_CONTAINS(f->error, "3 of 4");
        CHECK(agent_fn_is_bad(f, SHA_C));
        CHECK(!agent_fn_is_bad(f, SHA_A));
        CHECK(f->watching);
    }
    f = agent_state_find(&back, "other");
    CHECK(f && f->bundle[0] == '\0' && f->status == AGENT_FETCHING && f->version == NULL);
    /* Saving what was loaded gives the same bytes. */
    char *a = agent_state_to_json(&st), *b = agent_state_to_json(&back);
    CHECK_STR_EQ(a, b);
    free(a);
    free(b);
    agent_state_fini(&st);
    agent_state_fini(&back);
    /* No temp file is left behind. */
    char tmp[600];
    (void)snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);
}

static void test_active_missing_and_corrupt(void)
{
    struct agent_state st;
    char path[512], aside[600], err[256] = "";
    wisp_test_path(path, sizeof(path), root, "none.json");
    agent_state_init(&st, 10, 0.5);
    CHECK_INT_EQ(agent_state_load(path, &st, err, sizeof(err)), 0);
    CHECK_INT_EQ(st.n, 0);
    agent_state_fini(&st);

    /* Not JSON: moved aside, empty state, health defaults kept. */
    wisp_test_write(root, "bad.json", "{\"format\": 1, \"functions\": {\"a\": tru");
    wisp_test_path(path, sizeof(path), root, "bad.json");
    agent_state_init(&st, 7, 0.25);
    wisp_test_capture_stderr();
    CHECK_INT_EQ(agent_state_load(path, &st, err, sizeof(err)), 0);
    char *log = wisp_test_captured_stderr();
    CHECK_CONTAINS(log, "bad.json");
    free(log);
    CHECK_INT_EQ(st.n, 0);
    CHECK_INT_EQ(st.min_invocations, 7);
    (void)snprintf(aside, sizeof(aside), "%s.corrupt", path);
    CHECK(access(aside, F_OK) == 0);
    CHECK(access(path, F_OK) != 0);
    agent_state_fini(&st);

    /* Wrong format number: the same. */
    wisp_test_write(root, "fmt.json", "{\"format\": 2, \"functions\": {}}");
    wisp_test_path(path, sizeof(path), root, "fmt.json");
    agent_state_init(&st, 7, 0.25);
    wisp_test_capture_stderr();
    CHECK_INT_EQ(agent_state_load(path, &st, err, sizeof(err)), 0);
    log = wisp_test_captured_stderr();
    CHECK_CONTAINS(log, "format");
    free(log);
    agent_state_fini(&st);

    /* A bad entry is left out, naming file and field; the good one stays. */
    wisp_test_write(root, "part.json",
                    "{\"format\": 1, \"generation\": 3, \"functions\": {"
                    "\"good\": {\"bundle\": \"" SHA_A "\", \"version\": \"1\", \"status\": "
                    "\"active\"},"
                    "\"evil\": {\"bundle\": \"../../etc\", \"status\": \"active\"},"
                    "\"Bad Name\": {\"status\": \"active\"},"
                    "\"nostatus\": {\"bundle\": \"" SHA_B "\"}}}");
    wisp_test_path(path, sizeof(path), root, "part.json");
    agent_state_init(&st, 7, 0.25);
    wisp_test_capture_stderr();
    CHECK_INT_EQ(agent_state_load(path, &st, err, sizeof(err)), 0);
    log = wisp_test_captured_stderr();
    CHECK_CONTAINS(log, "functions.evil.bundle");
    CHECK_CONTAINS(log, "functions.nostatus.status");
    free(log);
    CHECK_INT_EQ(st.generation, 3);
    CHECK_INT_EQ(st.n, 1);
    CHECK(agent_state_find(&st, "good") != NULL);
    agent_state_fini(&st);
}

static void test_bad_list_bounded(void)
{
    struct agent_fn f;
    memset(&f, 0, sizeof(f));
    char sha[65];
    for (int i = 0; i < AGENT_MAX_BAD + 5; i++) {
        (void)snprintf(sha, sizeof(sha), "%064x", i);
        agent_fn_mark_bad(&f, sha);
        agent_fn_mark_bad(&f, sha); /* twice: kept once */
    }
    CHECK_INT_EQ(f.n_bad, AGENT_MAX_BAD);
    (void)snprintf(sha, sizeof(sha), "%064x", 0);
    CHECK(!agent_fn_is_bad(&f, sha)); /* the oldest went */
    (void)snprintf(sha, sizeof(sha), "%064x", AGENT_MAX_BAD + 4);
    CHECK(agent_fn_is_bad(&f, sha));
    agent_fn_mark_bad(&f, "not a sha");
    CHECK_INT_EQ(f.n_bad, AGENT_MAX_BAD);
}

static void test_health(void)
{
    /* min 10, rate 0.5: more than 5 failures roll back. */
    CHECK(!agent_health_failed(5, 10, 0.5));
    CHECK(agent_health_failed(6, 10, 0.5));
    /* rate 0: any failure. */
    CHECK(!agent_health_failed(0, 10, 0.0));
    CHECK(agent_health_failed(1, 10, 0.0));
    /* rate 1: never (failures cannot exceed min_invocations while watched). */
    CHECK(!agent_health_failed(10, 10, 1.0));
    /* min 4, rate 0.5: the third failure. */
    CHECK(!agent_health_failed(2, 4, 0.5));
    CHECK(agent_health_failed(3, 4, 0.5));
    CHECK(agent_health_passed(10, 5, 10, 0.5));
    CHECK(!agent_health_passed(9, 0, 10, 0.5));
    CHECK(!agent_health_passed(10, 6, 10, 0.5));

    char text[300];
    agent_health_text(text, sizeof(text), 2, 10, "handler.lua:2: boom\nstack traceback:\n...");
    CHECK_STR_EQ(text, "2 of 10 invocations failed (error: handler.lua:2: boom)");
    agent_health_text(text, sizeof(text), 3, 3, NULL);
    CHECK_STR_EQ(text, "3 of 3 invocations failed");
    char small[12];
    agent_health_text(small, sizeof(small), 3, 3, "x");
    CHECK(strlen(small) < sizeof(small));
    char big[2000];
    memset(big, 'e', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    agent_health_text(text, sizeof(text), 1, 1, big);
    CHECK(strlen(text) < 260);
}

static void test_gc(void)
{
    char dir[512];
    wisp_test_path(dir, sizeof(dir), root, "bundles");
    wisp_test_mkdir(root, "bundles");
    wisp_test_mkdir(root, "bundles/" SHA_A);
    wisp_test_write(root, "bundles/" SHA_A "/function.json", "{}");
    wisp_test_mkdir(root, "bundles/" SHA_B);
    wisp_test_mkdir(root, "bundles/" SHA_C);
    wisp_test_mkdir(root, "bundles/" SHA_C "/lib");
    wisp_test_write(root, "bundles/" SHA_C "/lib/x.lua", "return 1");
    wisp_test_mkdir(root, "bundles/" SHA_C ".tmp-abcdef");
    struct agent_state st;
    agent_state_init(&st, 1, 0);
    struct agent_fn *f = agent_state_add(&st, "x");
    if (!f)
        return;
    memcpy(f->bundle, SHA_A, 65);
    memcpy(f->previous, SHA_B, 65);
    wisp_test_capture_stderr();
    agent_bundles_gc(dir, &st);
    free(wisp_test_captured_stderr());
    char p[700];
    (void)snprintf(p, sizeof(p), "%s/%s/function.json", dir, SHA_A);
    CHECK(access(p, F_OK) == 0);
    (void)snprintf(p, sizeof(p), "%s/%s", dir, SHA_B);
    CHECK(access(p, F_OK) == 0);
    (void)snprintf(p, sizeof(p), "%s/%s", dir, SHA_C);
    CHECK(access(p, F_OK) != 0);
    (void)snprintf(p, sizeof(p), "%s/%s.tmp-abcdef", dir, SHA_C);
    CHECK(access(p, F_OK) != 0);
    agent_state_fini(&st);
}

static void test_cleanup(void)
{
    if (root[0])
        wisp_test_rmtree(root);
    root[0] = '\0';
}

int main(int argc, char **argv)
{
    if (!wisp_test_mkdtemp(root, sizeof(root), "agent"))
        return 1;
    static const struct wisp_check_test tests[] = {
        {"desired_ok", test_desired_ok},
        {"desired_refused", test_desired_refused},
        {"names_and_shas", test_names_and_shas},
        {"active_round_trip", test_active_round_trip},
        {"active_missing_and_corrupt", test_active_missing_and_corrupt},
        {"bad_list_bounded", test_bad_list_bounded},
        {"health", test_health},
        {"gc", test_gc},
        {"cleanup", test_cleanup},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
