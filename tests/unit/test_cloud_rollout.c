/* wisp-cloud rollouts driven directly with a fake clock: canary -> bake ->
 * rolling -> done; a failing canary -> halted -> rolled_back with the
 * previous bundles restored; error-rate failures; supersede; manual
 * halt/rollback conflicts; persistence of a rollout across a restart. */
#include <errno.h>

#include "cloud_rollout.h"
#include "cloud_test.h"
#include "util.h"

#define B1 "1111111111111111111111111111111111111111111111111111111111111111"
#define B2 "2222222222222222222222222222222222222222222222222222222222222222"
#define B3 "3333333333333333333333333333333333333333333333333333333333333333"

static char dir[256];

/* A device reports fn running bundle with status (and counters). */
static void report(struct cloud *c, uint64_t now, const char *id, const char *bundle,
                   const char *status, int inv, int errs)
{
    char topic[128], body[1024];
    const struct cloud_device *d = cloud_device_find(c, id);
    (void)snprintf(topic, sizeof(topic), "wisp/v1/%s/reported", id);
    (void)snprintf(body, sizeof(body),
                   "{\"device\":\"%s\",\"generation\":%llu,\"functions\":{\"door\":{\"bundle\":"
                   "\"%s\",\"status\":\"%s\",\"invocations\":%d,\"errors\":%d,\"error\":%s}}}",
                   id, d ? (unsigned long long)d->generation : 0ULL, bundle, status, inv, errs,
                   strcmp(status, "active") ? "\"health check failed\"" : "null");
    msg(c, now, topic, body);
}

static void tick(struct cloud *c, uint64_t now)
{
    CHECK_INT_EQ(cloud_batch_begin(c, now), 0);
    cloud_tick(c);
    CHECK_INT_EQ(cloud_batch_end(c), 0);
}

static struct cloud_rollout *start(struct cloud *c, uint64_t now, const char *bundle,
                                   const char *sel, int pct, double bake, double mfr)
{
    struct cloud_rollout_cfg cfg = {.bundle = (char *)bundle,
                                    .selector = (char *)sel,
                                    .canary_percent = pct,
                                    .bake_s = bake,
                                    .max_failure_rate = mfr,
                                    .min_invocations = 10,
                                    .max_error_rate = 0.5};
    struct cloud_rollout *r = NULL;
    char err[256] = "";
    CHECK_INT_EQ(cloud_batch_begin(c, now), 0);
    int rc = cloud_rollout_create(c, &cfg, "door", "v", &r, err, sizeof(err));
    if (rc != 0)
        (void)fprintf(stderr, "rollout: %s\n", err);
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(cloud_batch_end(c), 0);
    return r;
}

static struct cloud *fleet(int n)
{
    CHECK(wisp_test_mkdtemp(dir, sizeof(dir), "cloud-ro"));
    memset(&g_pubs, 0, sizeof(g_pubs));
    struct cloud *c = open_cloud(dir, NULL);
    for (int i = 0; i < n; i++) {
        char id[16];
        (void)snprintf(id, sizeof(id), "gw-%02d", i);
        hello(c, id, i % 2 ? "{\"site\":\"odd\"}" : "{\"site\":\"even\"}");
    }
    return c;
}

static void all_run(struct cloud *c, uint64_t now, const struct cloud_rollout *r, bool canary_only)
{
    for (size_t i = 0; i < r->ndevs; i++)
        if (!canary_only || r->devs[i].canary)
            report(c, now, r->devs[i].device, r->cfg.bundle, "active", 0, 0);
}

static void test_canary_bake_rolling_done(void)
{
    struct cloud *c = fleet(10);
    struct cloud_rollout *r = start(c, T0, B1, "", 20, 30, 0);
    CHECK_INT_EQ(r->ndevs, 10);
    CHECK_INT_EQ(r->ncanary, 2);
    CHECK_INT_EQ(r->state, CLOUD_RO_CANARY);
    /* canaries (gw-00, gw-01: sorted ids) got a retained desired state */
    CHECK_INT_EQ(count_pubs("wisp/v1/gw-00/desired"), 1);
    CHECK_INT_EQ(count_pubs("wisp/v1/gw-01/desired"), 1);
    CHECK_INT_EQ(count_pubs("wisp/v1/gw-02/desired"), 0);
    CHECK_CONTAINS(last_pub("wisp/v1/gw-00/desired"), "\"bundle\":\"" B1 "\"");
    CHECK_CONTAINS(last_pub("wisp/v1/gw-00/desired"), "\"health\":{\"min_invocations\":10");
    all_run(c, T0 + SEC, r, true);
    CHECK(r->canary_ready_at == T0 + SEC);
    tick(c, T0 + 20 * SEC);
    CHECK_INT_EQ(r->state, CLOUD_RO_CANARY);
    tick(c, T0 + 31 * SEC);
    CHECK_INT_EQ(r->state, CLOUD_RO_ROLLING);
    CHECK_INT_EQ(count_pubs("wisp/v1/gw-09/desired"), 1);
    all_run(c, T0 + 32 * SEC, r, false);
    CHECK_INT_EQ(r->state, CLOUD_RO_DONE);
    CHECK(r->completed_at == T0 + 32 * SEC);
    CHECK_INT_EQ(r->devs[9].state, CLOUD_RD_ACTIVE);
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

static void test_canary_failure_rolls_back(void)
{
    struct cloud *c = fleet(6);
    /* everyone runs B1 first (no canary phase) */
    struct cloud_rollout *r1 = start(c, T0, B1, "", 0, 0, 0);
    CHECK_INT_EQ(r1->state, CLOUD_RO_ROLLING);
    all_run(c, T0 + SEC, r1, false);
    CHECK_INT_EQ(r1->state, CLOUD_RO_DONE);
    /* then B2 with canaries; a canary rolls back on the device */
    struct cloud_rollout *r2 = start(c, T0 + 10 * SEC, B2, "", 50, 30, 0);
    CHECK_INT_EQ(r2->ncanary, 3);
    CHECK_STR_EQ(r2->devs[0].previous, B1);
    /* a stale report (older generation) must not count as a failure */
    char stale[512];
    (void)snprintf(stale, sizeof(stale),
                   "{\"generation\":1,\"functions\":{\"door\":{\"bundle\":\"%s\",\"status\":"
                   "\"rolled_back\"}}}",
                   B1);
    msg(c, T0 + 11 * SEC, "wisp/v1/gw-00/reported", stale);
    CHECK_INT_EQ(r2->state, CLOUD_RO_CANARY);
    report(c, T0 + 12 * SEC, "gw-00", B2, "active", 1, 0);
    report(c, T0 + 13 * SEC, "gw-01", B1, "rolled_back", 3, 3);
    CHECK_INT_EQ(r2->state, CLOUD_RO_ROLLED_BACK);
    CHECK(r2->halted_at == T0 + 13 * SEC);
    CHECK(r2->rolled_back_at == T0 + 13 * SEC);
    CHECK_CONTAINS(r2->halted_reason, "gw-01");
    CHECK_CONTAINS(r2->halted_reason, "rolled_back");
    CHECK_INT_EQ(r2->devs[1].state, CLOUD_RD_FAILED);
    CHECK_INT_EQ(r2->devs[0].state, CLOUD_RD_ROLLED_BACK);
    CHECK_INT_EQ(r2->devs[3].state, CLOUD_RD_PENDING);
    /* canaries have B1 again; the others never left it */
    CHECK_STR_EQ(cloud_device_desired_bundle(cloud_device_find(c, "gw-00"), "door"), B1);
    CHECK_STR_EQ(cloud_device_desired_bundle(cloud_device_find(c, "gw-01"), "door"), B1);
    CHECK_STR_EQ(cloud_device_desired_bundle(cloud_device_find(c, "gw-05"), "door"), B1);
    CHECK_CONTAINS(last_pub("wisp/v1/gw-00/desired"), B1);
    char err[256];
    CHECK_INT_EQ(cloud_batch_begin(c, T0 + 14 * SEC), 0);
    CHECK_INT_EQ(cloud_rollout_rollback(c, r2, err, sizeof(err)), -EALREADY);
    CHECK_INT_EQ(cloud_rollout_halt(c, r2, "x", err, sizeof(err)), -EALREADY);
    CHECK_INT_EQ(cloud_batch_end(c), 0);
    cloud_destroy(c);

    /* everything is as it was after a restart */
    c = open_cloud(dir, NULL);
    r2 = cloud_rollout_find(c, "r-2");
    CHECK(r2 != NULL);
    CHECK(r2 && r2->state == CLOUD_RO_ROLLED_BACK);
    CHECK_STR_EQ(cloud_device_desired_bundle(cloud_device_find(c, "gw-00"), "door"), B1);
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

static void test_error_rate_and_removal(void)
{
    struct cloud *c = fleet(4);
    /* the function is new: the rollback removes it */
    struct cloud_rollout *r = start(c, T0, B1, "site=even", 0, 0, 0.5);
    CHECK_INT_EQ(r->ndevs, 2);
    report(c, T0 + SEC, "gw-00", B1, "active", 5, 5); /* under min_invocations */
    CHECK_INT_EQ(r->devs[0].state, CLOUD_RD_ACTIVE);
    report(c, T0 + SEC, "gw-00", B1, "active", 10, 6); /* 0.6 > 0.5 */
    CHECK_INT_EQ(r->devs[0].state, CLOUD_RD_FAILED);
    CHECK_INT_EQ(r->state, CLOUD_RO_ROLLING); /* 1/2 is not over 0.5 */
    report(c, T0 + SEC, "gw-02", B1, "refused", 0, 0);
    CHECK_INT_EQ(r->state, CLOUD_RO_ROLLED_BACK);
    CHECK(cloud_device_desired_bundle(cloud_device_find(c, "gw-00"), "door") == NULL);
    CHECK_CONTAINS(last_pub("wisp/v1/gw-00/desired"), "\"functions\":{}");
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

static void test_supersede_and_manual(void)
{
    struct cloud *c = fleet(3);
    struct cloud_rollout *r1 = start(c, T0, B1, "", 33, 60, 0);
    struct cloud_rollout *r2 = start(c, T0 + SEC, B2, "", 0, 0, 0);
    CHECK_INT_EQ(r1->state, CLOUD_RO_SUPERSEDED);
    CHECK_STR_EQ(r1->superseded_by, "r-2");
    CHECK_STR_EQ(r2->devs[0].previous, B1); /* gw-00 was r1's canary */
    CHECK(r2->devs[1].previous == NULL);
    char err[256];
    CHECK_INT_EQ(cloud_batch_begin(c, T0 + 2 * SEC), 0);
    CHECK_INT_EQ(cloud_rollout_rollback(c, r1, err, sizeof(err)), -EALREADY);
    CHECK_CONTAINS(err, "superseded");
    CHECK_INT_EQ(cloud_rollout_halt(c, r2, "by hand", err, sizeof(err)), 0);
    CHECK_INT_EQ(r2->state, CLOUD_RO_HALTED);
    CHECK_INT_EQ(cloud_rollout_halt(c, r2, "again", err, sizeof(err)), -EALREADY);
    CHECK_INT_EQ(cloud_rollout_rollback(c, r2, err, sizeof(err)), 0);
    CHECK_INT_EQ(cloud_batch_end(c), 0);
    CHECK_INT_EQ(r2->state, CLOUD_RO_ROLLED_BACK);
    CHECK_STR_EQ(cloud_device_desired_bundle(cloud_device_find(c, "gw-00"), "door"), B1);
    CHECK(cloud_device_desired_bundle(cloud_device_find(c, "gw-01"), "door") == NULL);
    /* a selector matching nobody, a malformed one */
    struct cloud_rollout_cfg cfg = {.bundle = B3, .selector = "site=mars"};
    struct cloud_rollout *r;
    CHECK_INT_EQ(cloud_batch_begin(c, T0 + 3 * SEC), 0);
    CHECK_INT_EQ(cloud_rollout_create(c, &cfg, "door", "v", &r, err, sizeof(err)), -ENODEV);
    cfg.selector = "site";
    CHECK_INT_EQ(cloud_rollout_create(c, &cfg, "door", "v", &r, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "selector");
    cloud_batch_abort(c);
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

/* 500 devices: a rollout to all and their reports stay fast. */
static void test_scale(void)
{
    struct cloud *c = fleet(500);
    uint64_t t0 = wisp_mono_ns();
    struct cloud_rollout *r = start(c, T0, B1, "", 10, 0, 0);
    all_run(c, T0 + SEC, r, true);
    tick(c, T0 + 2 * SEC);
    CHECK_INT_EQ(r->state, CLOUD_RO_ROLLING);
    CHECK_INT_EQ(cloud_batch_begin(c, T0 + 3 * SEC), 0);
    for (size_t i = 0; i < r->ndevs; i++) {
        char topic[64], body[512];
        (void)snprintf(topic, sizeof(topic), "wisp/v1/%s/reported", r->devs[i].device);
        (void)snprintf(body, sizeof(body),
                       "{\"functions\":{\"door\":{\"bundle\":\"%s\",\"status\":\"active\"}}}", B1);
        cloud_handle_message(c, topic, body, strlen(body), false);
    }
    CHECK_INT_EQ(cloud_batch_end(c), 0);
    CHECK_INT_EQ(r->state, CLOUD_RO_DONE);
    double ms = (double)(wisp_mono_ns() - t0) / 1e6;
    (void)fprintf(stderr, "500-device rollout processed in %.1f ms\n", ms);
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"canary_bake_rolling_done", test_canary_bake_rolling_done},
        {"canary_failure_rolls_back", test_canary_failure_rolls_back},
        {"error_rate_and_removal", test_error_rate_and_removal},
        {"supersede_and_manual", test_supersede_and_manual},
        {"scale", test_scale},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
