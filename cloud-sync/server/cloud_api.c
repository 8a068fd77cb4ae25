/* Routing and handlers of the control plane API (README "Control plane HTTP API"). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud_api.h"
#include "cloud_meter.h"
#include "cloud_rollout.h"
#include "log.h"
#include "util.h"

#define MAX_SEGS 6

/* Replaces the answer with the JSON text s (taken over; NULL for none). */
static void set_body(struct cloud_api_resp *resp, int status, char *s)
{
    free(resp->body);
    resp->status = status;
    resp->body = s;
    resp->len = s ? strlen(s) : 0;
    resp->content_type = "application/json";
}

void cloud_api_error(struct cloud_api_resp *resp, int status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    if (o && cJSON_AddStringToObject(o, "error", msg))
        s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    set_body(resp, status, s);
}

/* Takes over j (deletes it). */
static void reply_json(struct cloud_api_resp *resp, int status, cJSON *j)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) {
        cloud_api_error(resp, 500, "out of memory building the answer");
        return;
    }
    set_body(resp, status, s);
}

bool cloud_api_public(const char *method, const char *path)
{
    return strcmp(method, "GET") == 0 && strcmp(path, "/v1/health") == 0;
}

/* Splits "/v1/a/b" into {"v1", "a", "b"} in buf. */
static size_t split_path(const char *path, char *buf, size_t cap, char **segs)
{
    (void)snprintf(buf, cap, "%s", path);
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == MAX_SEGS)
            return MAX_SEGS + 1;
        segs[n++] = t;
    }
    return n;
}

/* True when the request uses method; otherwise answers 405 naming it. */
static bool method_is(const struct cloud_api_req *req, const char *method,
                      struct cloud_api_resp *resp)
{
    if (strcmp(req->method, method) == 0)
        return true;
    cloud_api_error(resp, 405, "%s %s: use %s", req->method, req->path, method);
    return false;
}

/* ---- batches around changes ---- */

static bool begin(struct cloud *c, struct cloud_api_resp *resp)
{
    int rc = cloud_batch_begin(c, wisp_real_ns());
    if (rc != 0)
        cloud_api_error(resp, 500, "store: cannot begin a transaction: %s", strerror(-rc));
    return rc == 0;
}

/* Commits; on failure replaces the answer with a 500. */
static void end(struct cloud *c, struct cloud_api_resp *resp)
{
    int rc = cloud_batch_end(c);
    if (rc != 0)
        cloud_api_error(resp, 500, "store: commit failed: %s", strerror(-rc));
}

/* ---- devices ---- */

static void get_devices(struct cloud *c, const struct cloud_api_req *req,
                        struct cloud_api_resp *resp)
{
    const char *label = req->query ? req->query(req->query_ud, "label") : NULL;
    char err[256];
    cJSON *sel = cloud_selector_parse(label ? label : "", err, sizeof(err));
    if (!sel) {
        cloud_api_error(resp, 400, "label: %s", err);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "devices");
    for (size_t i = 0; arr && i < c->ndevs; i++) {
        if (!cloud_selector_match(sel, c->devs[i]->labels))
            continue;
        cJSON *d = cloud_device_json(c->devs[i]);
        if (!d || !cJSON_AddItemToArray(arr, d)) {
            cJSON_Delete(d);
            arr = NULL;
        }
    }
    cJSON_Delete(sel);
    if (!arr) {
        cJSON_Delete(o);
        o = NULL;
    }
    reply_json(resp, 200, o);
}

/* Checks {"labels": {k: string|null}}; the labels object or NULL (400 set). */
static cJSON *parse_labels(const struct cloud_api_req *req, struct cloud_api_resp *resp)
{
    cJSON *j = cJSON_ParseWithLength(req->body ? req->body : "", req->body_len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        cloud_api_error(resp, 400, "body: not a JSON object");
        return NULL;
    }
    cJSON *labels = cJSON_DetachItemFromObjectCaseSensitive(j, "labels");
    cJSON_Delete(j);
    if (!cJSON_IsObject(labels)) {
        cJSON_Delete(labels);
        cloud_api_error(resp, 400, "labels: missing or not an object");
        return NULL;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, labels)
    {
        if ((!cJSON_IsString(it) && !cJSON_IsNull(it)) || !it->string[0] ||
            strpbrk(it->string, ",=") || (cJSON_IsString(it) && strpbrk(it->valuestring, ","))) {
            cloud_api_error(resp, 400,
                            "labels.%.100s: names need no ',' or '=', values must be strings "
                            "without ',' (or null to remove)",
                            it->string);
            cJSON_Delete(labels);
            return NULL;
        }
    }
    return labels;
}

static void put_labels(struct cloud *c, struct cloud_device *dev, const struct cloud_api_req *req,
                       struct cloud_api_resp *resp)
{
    cJSON *labels = parse_labels(req, resp);
    if (!labels || !begin(c, resp)) {
        cJSON_Delete(labels);
        return;
    }
    cJSON_Delete(dev->set_labels);
    dev->set_labels = labels;
    if (cloud_device_merge_labels(dev) != 0) {
        cloud_batch_abort(c);
        cloud_api_error(resp, 500, "out of memory");
        return;
    }
    dev->dirty = true;
    log_info("device %s: labels set through the API", dev->id);
    reply_json(resp, 200, cloud_device_json(dev));
    end(c, resp);
}

static void route_devices(struct cloud *c, const struct cloud_api_req *req, char **seg, size_t n,
                          struct cloud_api_resp *resp)
{
    if (n == 2) {
        if (method_is(req, "GET", resp))
            get_devices(c, req, resp);
        return;
    }
    struct cloud_device *dev = cloud_device_find(c, seg[2]);
    if (n > 4 || (n == 4 && strcmp(seg[3], "labels") != 0)) {
        cloud_api_error(resp, 404, "%s: no such resource", req->path);
        return;
    }
    if (!dev) {
        cloud_api_error(resp, 404, "device %.64s: not registered", seg[2]);
        return;
    }
    if (n == 3) {
        if (method_is(req, "GET", resp))
            reply_json(resp, 200, cloud_device_json(dev));
        return;
    }
    if (method_is(req, "PUT", resp))
        put_labels(c, dev, req, resp);
}

/* ---- bundles ---- */

static void post_bundle(struct cloud *c, const struct cloud_api_req *req,
                        struct cloud_api_resp *resp)
{
    if (!req->upload) {
        cloud_api_error(resp, 400, "body: no bundle was uploaded");
        return;
    }
    if (!begin(c, resp))
        return;
    cJSON *out = NULL;
    char err[600];
    int rc = cloud_upload_finish(req->upload, &out, err, sizeof(err));
    if (rc != 0) {
        cloud_batch_abort(c);
        cloud_api_error(resp, rc == -EINVAL ? 400 : 500, "%s", err);
        return;
    }
    reply_json(resp, 201, out);
    end(c, resp);
}

static void route_bundles(struct cloud *c, const struct cloud_api_req *req, char **seg, size_t n,
                          struct cloud_api_resp *resp)
{
    bool get = strcmp(req->method, "GET") == 0;
    if (n == 2 && strcmp(req->method, "POST") == 0) {
        post_bundle(c, req, resp);
        return;
    }
    if (n == 2 && get) {
        reply_json(resp, 200, cloud_bundle_list(c));
        return;
    }
    if (n == 2) {
        cloud_api_error(resp, 405, "%s %s: use GET or POST", req->method, req->path);
        return;
    }
    if (n != 3) {
        cloud_api_error(resp, 404, "%s: no such resource", req->path);
        return;
    }
    if (!method_is(req, "GET", resp))
        return;
    cJSON *b = cloud_bundle_get(c, seg[2]);
    if (!b) {
        cloud_api_error(resp, 404, "bundle %.64s: not uploaded", seg[2]);
        return;
    }
    reply_json(resp, 200, b);
}

/* ---- rollouts ---- */

/* Reads an optional number field within [lo, hi] (whole when asked). */
static bool num_field(const cJSON *o, const char *key, const char *name, double lo, double hi,
                      bool whole, double *out, struct cloud_api_resp *resp)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi || (whole && v->valuedouble != floor(v->valuedouble))) {
        cloud_api_error(resp, 400, "%s: must be a %s within %g..%g", name,
                        whole ? "whole number" : "number", lo, hi);
        return false;
    }
    *out = v->valuedouble;
    return true;
}

static bool parse_rollout(const cJSON *j, struct cloud_rollout_cfg *cfg,
                          struct cloud_api_resp *resp)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "bundle");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "selector");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "health");
    if (!cJSON_IsString(b) || !cloud_sha_valid(b->valuestring)) {
        cloud_api_error(resp, 400, "bundle: missing or not 64 lowercase hex digits (a sha256)");
        return false;
    }
    if (s && !cJSON_IsString(s) && !cJSON_IsNull(s)) {
        cloud_api_error(resp, 400, "selector: not a string");
        return false;
    }
    if (h && !cJSON_IsObject(h) && !cJSON_IsNull(h)) {
        cloud_api_error(resp, 400, "health: not an object");
        return false;
    }
    double pct = 0, bake = 30, mfr = 0, mininv = 10, mer = 0.5;
    if (!num_field(j, "canary_percent", "canary_percent", 0, 100, true, &pct, resp) ||
        !num_field(j, "bake_s", "bake_s", 0, 2592000, false, &bake, resp) ||
        !num_field(j, "max_failure_rate", "max_failure_rate", 0, 1, false, &mfr, resp) ||
        !num_field(h, "min_invocations", "health.min_invocations", 0, 1e9, true, &mininv, resp) ||
        !num_field(h, "max_error_rate", "health.max_error_rate", 0, 1, false, &mer, resp))
        return false;
    cfg->bundle = b->valuestring;
    cfg->selector = s && cJSON_IsString(s) ? s->valuestring : "";
    cfg->canary_percent = (int)pct;
    cfg->bake_s = bake;
    cfg->max_failure_rate = mfr;
    cfg->min_invocations = (uint64_t)mininv;
    cfg->max_error_rate = mer;
    return true;
}

static void post_rollout(struct cloud *c, const struct cloud_api_req *req,
                         struct cloud_api_resp *resp)
{
    cJSON *j = cJSON_ParseWithLength(req->body ? req->body : "", req->body_len);
    struct cloud_rollout_cfg cfg = {0};
    if (!cJSON_IsObject(j)) {
        cloud_api_error(resp, 400, "body: not a JSON object");
        goto out;
    }
    if (!parse_rollout(j, &cfg, resp))
        goto out;
    cJSON *b = cloud_bundle_get(c, cfg.bundle);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(b, "version");
    if (!cJSON_IsString(name) || !cJSON_IsString(ver)) {
        cJSON_Delete(b);
        cloud_api_error(resp, 404, "bundle %s: not uploaded (POST /v1/bundles first)", cfg.bundle);
        goto out;
    }
    if (begin(c, resp)) {
        struct cloud_rollout *r;
        char err[512];
        int rc = cloud_rollout_create(c, &cfg, name->valuestring, ver->valuestring, &r, err,
                                      sizeof(err));
        if (rc == 0) {
            reply_json(resp, 201, cloud_rollout_json(r));
            end(c, resp);
        } else {
            cloud_batch_abort(c);
            cloud_api_error(resp, rc == -ENOMEM || rc == -EIO ? 500 : 400, "%s", err);
        }
    }
    cJSON_Delete(b);
out:
    cJSON_Delete(j);
}

static void list_rollouts(struct cloud *c, struct cloud_api_resp *resp)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "rollouts");
    for (size_t i = c->nrollouts; arr && i-- > 0;) {
        cJSON *r = cloud_rollout_json(c->rollouts[i]);
        if (!r || !cJSON_AddItemToArray(arr, r)) {
            cJSON_Delete(r);
            arr = NULL;
        }
    }
    if (!arr) {
        cJSON_Delete(o);
        o = NULL;
    }
    reply_json(resp, 200, o);
}

static void rollout_action(struct cloud *c, struct cloud_rollout *r, const char *action,
                           struct cloud_api_resp *resp)
{
    char err[256];
    if (!begin(c, resp))
        return;
    int rc = strcmp(action, "halt") == 0
                 ? cloud_rollout_halt(c, r, "halted through the API", err, sizeof(err))
                 : cloud_rollout_rollback(c, r, err, sizeof(err));
    if (rc != 0) {
        cloud_batch_abort(c);
        cloud_api_error(resp, rc == -EALREADY ? 409 : 500, "%s", err);
        return;
    }
    reply_json(resp, 200, cloud_rollout_json(r));
    end(c, resp);
}

static void route_rollouts(struct cloud *c, const struct cloud_api_req *req, char **seg, size_t n,
                           struct cloud_api_resp *resp)
{
    bool get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;
    if (n == 2) {
        if (post) {
            post_rollout(c, req, resp);
            return;
        }
        if (get) {
            list_rollouts(c, resp);
            return;
        }
        cloud_api_error(resp, 405, "%s %s: use GET or POST", req->method, req->path);
        return;
    }
    if (n > 4 || (n == 4 && strcmp(seg[3], "halt") != 0 && strcmp(seg[3], "rollback") != 0)) {
        cloud_api_error(resp, 404, "%s: no such resource", req->path);
        return;
    }
    struct cloud_rollout *r = cloud_rollout_find(c, seg[2]);
    if (!r) {
        cloud_api_error(resp, 404, "rollout %.64s: no such rollout", seg[2]);
        return;
    }
    if (n == 3) {
        if (method_is(req, "GET", resp))
            reply_json(resp, 200, cloud_rollout_json(r));
        return;
    }
    if (method_is(req, "POST", resp))
        rollout_action(c, r, seg[3], resp);
}

/* ---- metering ---- */

static bool query_choice(const struct cloud_api_req *req, const char *key, const char *a,
                         const char *b, bool *is_b, struct cloud_api_resp *resp)
{
    const char *v = req->query ? req->query(req->query_ud, key) : NULL;
    *is_b = false;
    if (!v || strcmp(v, a) == 0)
        return true;
    if (strcmp(v, b) == 0) {
        *is_b = true;
        return true;
    }
    cloud_api_error(resp, 400, "%s: \"%.64s\" is neither %s nor %s", key, v, a, b);
    return false;
}

static bool query_time(const struct cloud_api_req *req, const char *key, uint64_t *out,
                       struct cloud_api_resp *resp)
{
    const char *v = req->query ? req->query(req->query_ud, key) : NULL;
    if (!v)
        return true;
    if (cloud_parse_time(v, out))
        return true;
    cloud_api_error(resp, 400, "%s: \"%.64s\" is not an RFC 3339 time like 2024-05-01T10:00:00Z",
                    key, v);
    return false;
}

static void get_meter(struct cloud *c, const struct cloud_api_req *req, struct cloud_api_resp *resp)
{
    struct cloud_meter_query q = {0};
    bool csv;
    if (!query_choice(req, "by", "function", "device", &q.by_device, resp) ||
        !query_choice(req, "period", "hour", "day", &q.per_day, resp) ||
        !query_choice(req, "format", "json", "csv", &csv, resp) ||
        !query_time(req, "since", &q.since, resp) || !query_time(req, "until", &q.until, resp))
        return;
    q.device = req->query ? req->query(req->query_ud, "device") : NULL;
    q.function = req->query ? req->query(req->query_ud, "function") : NULL;
    struct cloud_meter_row *rows = NULL;
    size_t n = 0;
    int rc = cloud_meter_query(c, &q, &rows, &n);
    if (rc != 0) {
        cloud_api_error(resp, 500, "store: cannot read the metering: %s", strerror(-rc));
        return;
    }
    if (!csv) {
        reply_json(resp, 200, cloud_meter_rows_json(&q, rows, n));
    } else {
        char *text = cloud_meter_rows_csv(&q, rows, n);
        if (!text) {
            cloud_api_error(resp, 500, "out of memory building the CSV");
        } else {
            free(resp->body);
            resp->status = 200;
            resp->body = text;
            resp->len = strlen(text);
            resp->content_type = "text/csv; charset=utf-8";
        }
    }
    cloud_meter_rows_free(rows, n);
}

/* ---- routing ---- */

static void get_health(struct cloud *c, struct cloud_api_resp *resp)
{
    cJSON *o = cJSON_CreateObject();
    if (o &&
        (!cJSON_AddBoolToObject(o, "ok", true) ||
         !cJSON_AddNumberToObject(o, "devices", (double)c->ndevs) ||
         !cJSON_AddStringToObject(o, "mqtt", c->mqtt_connected ? "connected" : "disconnected"))) {
        cJSON_Delete(o);
        o = NULL;
    }
    reply_json(resp, 200, o);
}

void cloud_api_handle(struct cloud *c, const struct cloud_api_req *req, struct cloud_api_resp *resp)
{
    char buf[1024], *seg[MAX_SEGS];
    resp->status = 0;
    if (strlen(req->path) >= sizeof(buf)) {
        cloud_api_error(resp, 404, "path: too long");
        return;
    }
    size_t n = split_path(req->path, buf, sizeof(buf), seg);
    if (n < 2 || n > MAX_SEGS || strcmp(seg[0], "v1") != 0) {
        cloud_api_error(resp, 404, "%.200s: no such resource", req->path);
        return;
    }
    if (strcmp(seg[1], "health") == 0 && n == 2) {
        if (method_is(req, "GET", resp))
            get_health(c, resp);
        return;
    }
    if (strcmp(seg[1], "devices") == 0) {
        route_devices(c, req, seg, n, resp);
        return;
    }
    if (strcmp(seg[1], "bundles") == 0) {
        route_bundles(c, req, seg, n, resp);
        return;
    }
    if (strcmp(seg[1], "rollouts") == 0) {
        route_rollouts(c, req, seg, n, resp);
        return;
    }
    if (strcmp(seg[1], "meter") == 0 && n == 2) {
        if (method_is(req, "GET", resp))
            get_meter(c, req, resp);
        return;
    }
    cloud_api_error(resp, 404, "%.200s: no such resource", req->path);
}
