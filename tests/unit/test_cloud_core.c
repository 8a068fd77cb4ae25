/* wisp-cloud core: selectors, registration, metering ingest (idempotency,
 * gaps, edits), aggregation and CSV, persistence, and the API routing. */
#include <errno.h>
#include <inttypes.h>

#include "cloud_api.h"
#include "cloud_meter.h"
#include "cloud_test.h"
#include "meter.h"

static char dir[256];

/* A batch of records from..to (all chained from seq 1) for device dev;
 * edit_seq changes that record after hashing, bad_prev_seq breaks its prev. */
static char *batch(const char *dev, uint64_t from, uint64_t to, uint64_t edit_seq, const char *time)
{
    size_t cap = 1024 + (to - from + 1) * 600, len = 0;
    char *out = malloc(cap);
    unsigned char prev[32] = {0}, hash[32];
    /* the time is part of the hash: it must not depend on the batch */
    static const char t10[] = "2024-05-01T10:15:00Z", t11[] = "2024-05-01T11:15:00Z";
    (void)time;
    len += (size_t)snprintf(out, cap, "{\"device\":\"%s\",\"records\":[", dev);
    for (uint64_t n = 1; n <= to; n++) {
        struct wisp_meter_fields f = {.seq = n,
                                      .fn = n % 2 ? "fa" : "fb",
                                      .version = "1",
                                      .event_id = "e",
                                      .time = n <= 100 ? t10 : t11,
                                      .outcome = n % 4 == 0 ? "error" : "ok",
                                      .billed_ms = 10,
                                      .mem_limit_kb = 1024,
                                      .bytes_in = 1,
                                      .bytes_out = 2};
        CHECK_INT_EQ(wisp_meter_chain(prev, &f, hash), 0);
        if (n >= from) {
            char ph[65], hh[65];
            wisp_meter_hex(prev, ph);
            wisp_meter_hex(hash, hh);
            len += (size_t)snprintf(
                out + len, cap - len,
                "%s{\"seq\":%" PRIu64 ",\"fn\":\"%s\",\"version\":\"1\",\"event_id\":\"e\","
                "\"time\":\"%s\",\"billed_ms\":%d,\"duration_us\":0,\"mem_peak_bytes\":0,"
                "\"mem_limit_kb\":1024,\"bytes_in\":1,\"bytes_out\":2,\"outcome\":\"%s\","
                "\"cold\":false,\"prev\":\"%s\",\"hash\":\"%s\"}",
                n == from ? "" : ",", n, f.fn, f.time, n == edit_seq ? 11 : 10, f.outcome, ph, hh);
        }
        memcpy(prev, hash, 32);
    }
    (void)snprintf(out + len, cap - len, "]}");
    return out;
}

static void send_batch(struct cloud *c, const char *dev, uint64_t from, uint64_t to, uint64_t edit,
                       const char *time)
{
    char topic[128];
    (void)snprintf(topic, sizeof(topic), "wisp/v1/%s/meter", dev);
    char *b = batch(dev, from, to, edit, time);
    msg(c, T0, topic, b);
    free(b);
}

static void setup(void)
{
    CHECK(wisp_test_mkdtemp(dir, sizeof(dir), "cloud"));
    memset(&g_pubs, 0, sizeof(g_pubs));
}

static void test_selector(void)
{
    char err[256];
    cJSON *s = cloud_selector_parse("site=plant-3, tier = canary", err, sizeof(err));
    CHECK(s != NULL);
    cJSON *labels = cJSON_Parse("{\"site\":\"plant-3\",\"tier\":\"canary\",\"x\":\"y\"}");
    CHECK(cloud_selector_match(s, labels));
    cJSON *other = cJSON_Parse("{\"site\":\"plant-3\"}");
    CHECK(!cloud_selector_match(s, other));
    cJSON_Delete(s);
    s = cloud_selector_parse("", err, sizeof(err));
    CHECK(s != NULL && cloud_selector_match(s, other));
    cJSON_Delete(s);
    static const char *const bad[] = {"site", "=x", "a=b,", "a=b,,c=d", "a=b=c", "a=1,a=2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK(cloud_selector_parse(bad[i], err, sizeof(err)) == NULL);
        CHECK_CONTAINS(err, "selector");
    }
    cJSON_Delete(labels);
    cJSON_Delete(other);
}

static void test_register_and_token(void)
{
    setup();
    struct cloud *c = open_cloud(dir, "fleet-secret");
    msg(c, T0, "wisp/v1/gw-1/hello", "{\"labels\":{\"site\":\"a\"},\"token\":\"wrong\"}");
    msg(c, T0, "wisp/v1/gw-1/reported", "{\"functions\":{}}");
    CHECK(cloud_device_find(c, "gw-1") == NULL);
    msg(c, T0, "wisp/v1/gw-1/hello", "{\"labels\":{\"site\":\"a\"},\"token\":\"fleet-secret\"}");
    CHECK(cloud_device_find(c, "gw-1") != NULL);
    msg(c, T0, "wisp/v1/gw-1/status", "{\"online\": false}");
    CHECK(!cloud_device_find(c, "gw-1")->online);
    msg(c, T0, "wisp/v1/bad id/hello", "{}");
    msg(c, T0, "wisp/v1/gw-1/status", "not json");
    CHECK_INT_EQ(c->ndevs, 1);
    cloud_destroy(c);
    c = open_cloud(dir, NULL);
    msg(c, T0, "wisp/v1/gw-2/status", "{\"online\": true}");
    CHECK(cloud_device_find(c, "gw-1") != NULL);
    CHECK(cloud_device_find(c, "gw-2") != NULL);
    CHECK_STR_EQ(cJSON_GetObjectItem(cloud_device_find(c, "gw-1")->labels, "site")->valuestring,
                 "a");
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

static void test_meter_ingest(void)
{
    setup();
    struct cloud *c = open_cloud(dir, NULL);
    hello(c, "gw-1", "{}");
    send_batch(c, "gw-1", 1, 100, 0, "2024-05-01T10:15:00Z");
    struct cloud_device *d = cloud_device_find(c, "gw-1");
    CHECK_INT_EQ(d->meter.head_seq, 100);
    CHECK_INT_EQ(d->meter.records, 100);
    CHECK_STR_EQ(last_pub("wisp/v1/gw-1/meter/ack"), "{\"upto\":100}");
    /* the same batch again, and an overlapping one: nothing counted twice */
    send_batch(c, "gw-1", 1, 100, 0, "2024-05-01T10:15:00Z");
    send_batch(c, "gw-1", 50, 120, 0, "2024-05-01T11:15:00Z");
    CHECK_INT_EQ(d->meter.records, 120);
    CHECK_INT_EQ(d->meter.gaps, 0);
    CHECK_INT_EQ(count_pubs("wisp/v1/gw-1/meter/ack"), 3);
    /* a gap: 121..130 never arrive */
    send_batch(c, "gw-1", 131, 140, 0, "2024-05-01T11:15:00Z");
    CHECK_INT_EQ(d->meter.head_seq, 140);
    CHECK_INT_EQ(d->meter.gaps, 10);
    CHECK(d->meter.chain_error == NULL);
    /* an edited record: refused from it on, flagged */
    send_batch(c, "gw-1", 141, 150, 145, "2024-05-01T11:15:00Z");
    CHECK_INT_EQ(d->meter.head_seq, 144);
    CHECK(d->meter.chain_error != NULL);
    CHECK_CONTAINS(d->meter.chain_error, "seq 145");
    CHECK_CONTAINS(last_pub("wisp/v1/gw-1/meter/ack"), "\"upto\":144");
    CHECK_CONTAINS(last_pub("wisp/v1/gw-1/meter/ack"), "\"error\"");
    /* a wrong prev: a record of another device's chain */
    char *b = batch("gw-1", 145, 146, 0, "2024-05-01T11:15:00Z");
    char *p = strstr(b, "\"prev\":\"");
    p[8] = p[8] == '0' ? '1' : '0';
    msg(c, T0, "wisp/v1/gw-1/meter", b);
    free(b);
    CHECK_INT_EQ(d->meter.head_seq, 144);
    CHECK_CONTAINS(last_pub("wisp/v1/gw-1/meter/ack"), "prev does not match");
    /* a malformed record names the key */
    msg(c, T0, "wisp/v1/gw-1/meter", "{\"records\":[{\"seq\":\"x\"}]}");
    CHECK_CONTAINS(last_pub("wisp/v1/gw-1/meter/ack"), "records[0].seq");
    uint64_t records = d->meter.records;
    cloud_destroy(c);

    /* after a restart: the cursor and the totals are the same */
    c = open_cloud(dir, NULL);
    d = cloud_device_find(c, "gw-1");
    CHECK_INT_EQ(d->meter.records, records);
    CHECK_INT_EQ(d->meter.head_seq, 144);
    CHECK(d->meter.chain_error != NULL);
    send_batch(c, "gw-1", 1, 144, 0, "2024-05-01T11:15:00Z");
    CHECK_INT_EQ(d->meter.records, records);

    struct cloud_meter_query q = {.by_device = false, .per_day = false};
    struct cloud_meter_row *rows;
    size_t n;
    CHECK_INT_EQ(cloud_meter_query(c, &q, &rows, &n), 0);
    /* hour 10: seqs 1..100 (fa odd, fb even); hour 11: 101..120 and 131..144 */
    CHECK_INT_EQ(n, 4);
    uint64_t inv = 0, errs = 0, ms = 0;
    for (size_t i = 0; i < n; i++) {
        inv += rows[i].agg.invocations;
        errs += rows[i].agg.errors;
        ms += rows[i].agg.billed_ms;
    }
    CHECK_INT_EQ(inv, records);
    CHECK_INT_EQ(ms, records * 10);
    CHECK_INT_EQ(rows[0].agg.invocations, 50);
    CHECK_STR_EQ(rows[0].name, "fa");
    CHECK_INT_EQ(rows[1].agg.errors, 25); /* fb: multiples of 4 among 2..100 */
    (void)errs;
    char *csv = cloud_meter_rows_csv(&q, rows, n);
    CHECK_CONTAINS(csv, "period,function,invocations,errors,billed_ms,gb_seconds,bytes_in,"
                        "bytes_out\r\n");
    CHECK_CONTAINS(csv, "2024-05-01T10:00:00Z,fa,50,0,500,0.000488281,50,100\r\n");
    free(csv);
    cloud_meter_rows_free(rows, n);

    q.per_day = true;
    q.by_device = true;
    CHECK_INT_EQ(cloud_meter_query(c, &q, &rows, &n), 0);
    CHECK_INT_EQ(n, 1);
    CHECK_STR_EQ(rows[0].name, "gw-1");
    CHECK_INT_EQ(rows[0].agg.invocations, records);
    cJSON *j = cloud_meter_rows_json(&q, rows, n);
    char *s = cJSON_PrintUnformatted(j);
    CHECK_CONTAINS(s, "\"period\":\"2024-05-01T00:00:00Z\",\"device\":\"gw-1\"");
    free(s);
    cJSON_Delete(j);
    cloud_meter_rows_free(rows, n);

    q.per_day = false;
    CHECK(cloud_parse_time("2024-05-01T11:00:00Z", &q.since));
    CHECK_INT_EQ(cloud_meter_query(c, &q, &rows, &n), 0);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(n ? rows[0].agg.invocations : 0, records - 100);
    cloud_meter_rows_free(rows, n);
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

static const char *no_query(void *ud, const char *key)
{
    (void)ud;
    (void)key;
    return NULL;
}

static int api(struct cloud *c, const char *method, const char *path, const char *body, char *out,
               size_t cap)
{
    struct cloud_api_req req = {.method = method,
                                .path = path,
                                .query = no_query,
                                .body = body,
                                .body_len = body ? strlen(body) : 0};
    struct cloud_api_resp resp = {0};
    cloud_api_handle(c, &req, &resp);
    (void)snprintf(out, cap, "%.*s", (int)resp.len, resp.body ? resp.body : "");
    free(resp.body);
    return resp.status;
}

static void test_api(void)
{
    setup();
    struct cloud *c = open_cloud(dir, NULL);
    hello(c, "gw-1", "{\"site\":\"a\"}");
    char out[8192];
    CHECK_INT_EQ(api(c, "GET", "/v1/health", NULL, out, sizeof(out)), 200);
    CHECK_CONTAINS(out, "\"devices\":1");
    CHECK_INT_EQ(api(c, "GET", "/v1/devices/nope", NULL, out, sizeof(out)), 404);
    CHECK_INT_EQ(api(c, "DELETE", "/v1/devices/gw-1", NULL, out, sizeof(out)), 405);
    CHECK_INT_EQ(api(c, "PUT", "/v1/devices/gw-1/labels", "{\"labels\":[1]}", out, sizeof(out)),
                 400);
    CHECK_CONTAINS(out, "labels");
    CHECK_INT_EQ(api(c, "PUT", "/v1/devices/gw-1/labels",
                     "{\"labels\":{\"site\":\"b\",\"tier\":\"canary\"}}", out, sizeof(out)),
                 200);
    CHECK_CONTAINS(out, "\"site\":\"b\"");
    /* the device's own hello does not undo what the API set */
    hello(c, "gw-1", "{\"site\":\"a\",\"rack\":\"3\"}");
    CHECK_INT_EQ(api(c, "GET", "/v1/devices/gw-1", NULL, out, sizeof(out)), 200);
    CHECK_CONTAINS(out, "\"site\":\"b\"");
    CHECK_CONTAINS(out, "\"rack\":\"3\"");
    CHECK_CONTAINS(out, "\"tier\":\"canary\"");
    CHECK_INT_EQ(api(c, "POST", "/v1/rollouts", "{\"bundle\":5}", out, sizeof(out)), 400);
    CHECK_CONTAINS(out, "bundle");
    CHECK_INT_EQ(api(c, "POST", "/v1/rollouts", "{", out, sizeof(out)), 400);
    CHECK_INT_EQ(api(c, "POST", "/v1/rollouts",
                     "{\"bundle\":\"0000000000000000000000000000000000000000000000000000000000000"
                     "000\",\"canary_percent\":150}",
                     out, sizeof(out)),
                 400);
    CHECK_CONTAINS(out, "canary_percent");
    CHECK_INT_EQ(api(c, "POST", "/v1/rollouts",
                     "{\"bundle\":\"0000000000000000000000000000000000000000000000000000000000000"
                     "000\"}",
                     out, sizeof(out)),
                 404);
    CHECK_INT_EQ(api(c, "GET", "/v1/rollouts/r-9", NULL, out, sizeof(out)), 404);
    CHECK_INT_EQ(api(c, "POST", "/v1/bundles", NULL, out, sizeof(out)), 400);
    CHECK_INT_EQ(api(c, "GET", "/v1/nothing", NULL, out, sizeof(out)), 404);
    cloud_destroy(c);
    wisp_test_rmtree(dir);
}

static void test_corrupt_store(void)
{
    setup();
    char path[512];
    wisp_test_mkdir(dir, "db");
    wisp_test_write(dir, "db/data.mdb", "this is not an LMDB file, not at all, really not");
    struct cloud_config cfg = {.data_dir = dir};
    struct cloud *c = NULL;
    char err[512] = "";
    CHECK(cloud_create(&cfg, &c, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "db");
    /* A data dir that is a file, or lies under one, is refused by name. */
    wisp_test_write(dir, "plain", "x");
    (void)snprintf(path, sizeof(path), "%s/plain", dir);
    cfg.data_dir = path;
    CHECK(cloud_create(&cfg, &c, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "plain: not a folder");
    (void)snprintf(path, sizeof(path), "%s/plain/sub", dir);
    CHECK(cloud_create(&cfg, &c, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "plain/sub: cannot create");
    /* A missing one is made, as wispd makes its own. */
    (void)snprintf(path, sizeof(path), "%s/new/deeper", dir);
    CHECK_INT_EQ(cloud_create(&cfg, &c, err, sizeof(err)), 0);
    cloud_destroy(c);
    c = NULL;
    wisp_test_rmtree(dir);
}

static void test_time(void)
{
    uint64_t ns;
    CHECK(cloud_parse_time("2024-05-01T10:00:00Z", &ns));
    CHECK_INT_EQ(ns, T0);
    CHECK(cloud_parse_time("2024-05-01T12:00:00.5+02:00", &ns));
    CHECK_INT_EQ(ns, T0 + SEC / 2);
    CHECK(!cloud_parse_time("2024-05-01", &ns));
    CHECK(!cloud_parse_time("2024-13-01T10:00:00Z", &ns));
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"selector", test_selector},           {"register_and_token", test_register_and_token},
        {"meter_ingest", test_meter_ingest},   {"api", test_api},
        {"corrupt_store", test_corrupt_store}, {"time", test_time},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
