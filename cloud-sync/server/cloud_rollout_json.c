/* Rollouts as JSON: what the API shows is also what the store keeps. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cloud_rollout.h"
#include "util.h"

static bool add_time(cJSON *o, const char *key, uint64_t ns)
{
    return cJSON_AddItemToObject(o, key, cloud_time_json(ns));
}

static bool add_str_or_null(cJSON *o, const char *key, const char *s)
{
    return cJSON_AddItemToObject(o, key, s ? cJSON_CreateString(s) : cJSON_CreateNull());
}

static cJSON *dev_json(const struct cloud_rollout_dev *rd)
{
    cJSON *d = cJSON_CreateObject();
    if (!d || !cJSON_AddStringToObject(d, "device", rd->device) ||
        !cJSON_AddStringToObject(d, "phase", rd->canary ? "canary" : "rolling") ||
        !cJSON_AddStringToObject(d, "state", cloud_rdev_state_name(rd->state)) ||
        !add_str_or_null(d, "previous", rd->previous) ||
        !add_str_or_null(d, "previous_version", rd->previous_version) ||
        !cJSON_AddBoolToObject(d, "assigned", rd->assigned) ||
        !cJSON_AddNumberToObject(d, "assigned_generation", (double)rd->assigned_gen) ||
        !add_time(d, "active_at", rd->active_at) || !add_str_or_null(d, "reason", rd->reason)) {
        cJSON_Delete(d);
        return NULL;
    }
    return d;
}

static bool add_counts(cJSON *o, const struct cloud_rollout *r)
{
    size_t n[5] = {0};
    for (size_t i = 0; i < r->ndevs; i++)
        if ((unsigned)r->devs[i].state < 5)
            n[r->devs[i].state]++;
    cJSON *c = cJSON_AddObjectToObject(o, "counts");
    if (!c || !cJSON_AddNumberToObject(c, "devices", (double)r->ndevs) ||
        !cJSON_AddNumberToObject(c, "canary_devices", (double)r->ncanary))
        return false;
    for (int s = 0; s < 5; s++)
        if (!cJSON_AddNumberToObject(c, cloud_rdev_state_name(s), (double)n[s]))
            return false;
    return true;
}

static bool add_head(cJSON *o, const struct cloud_rollout *r)
{
    cJSON *h = cJSON_CreateObject();
    if (!h || !cJSON_AddItemToObject(o, "health", h)) {
        cJSON_Delete(h);
        return false;
    }
    return cJSON_AddStringToObject(o, "id", r->id) &&
           cJSON_AddNumberToObject(o, "seq", (double)r->seq) &&
           cJSON_AddStringToObject(o, "function", r->function) &&
           cJSON_AddStringToObject(o, "bundle", r->cfg.bundle) &&
           cJSON_AddStringToObject(o, "version", r->version) &&
           cJSON_AddStringToObject(o, "selector", r->cfg.selector) &&
           cJSON_AddStringToObject(o, "state", cloud_rollout_state_name(r->state)) &&
           cJSON_AddStringToObject(o, "phase", r->phase_rolling ? "rolling" : "canary") &&
           cJSON_AddNumberToObject(o, "canary_percent", r->cfg.canary_percent) &&
           cJSON_AddNumberToObject(o, "bake_s", r->cfg.bake_s) &&
           cJSON_AddNumberToObject(o, "max_failure_rate", r->cfg.max_failure_rate) &&
           cJSON_AddNumberToObject(h, "min_invocations", (double)r->cfg.min_invocations) &&
           cJSON_AddNumberToObject(h, "max_error_rate", r->cfg.max_error_rate) &&
           add_time(o, "created", r->created) &&
           add_time(o, "canary_ready_at", r->canary_ready_at) &&
           add_time(o, "rolling_at", r->rolling_at) && add_time(o, "halted_at", r->halted_at) &&
           add_time(o, "rolled_back_at", r->rolled_back_at) &&
           add_time(o, "completed_at", r->completed_at) &&
           add_time(o, "superseded_at", r->superseded_at) &&
           add_str_or_null(o, "superseded_by", r->superseded_by) &&
           add_str_or_null(o, "halted_reason", r->halted_reason);
}

cJSON *cloud_rollout_json(const struct cloud_rollout *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !add_head(o, r) || !add_counts(o, r))
        goto fail;
    cJSON *devs = cJSON_AddArrayToObject(o, "devices");
    if (!devs)
        goto fail;
    for (size_t i = 0; i < r->ndevs; i++) {
        cJSON *d = dev_json(&r->devs[i]);
        if (!d || !cJSON_AddItemToArray(devs, d)) {
            cJSON_Delete(d);
            goto fail;
        }
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* ---- parsing what was stored ---- */

static const char *get_s(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double get_n(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static uint64_t get_t(const cJSON *o, const char *key)
{
    uint64_t ns = 0;
    const char *s = get_s(o, key);
    return s && cloud_parse_time(s, &ns) ? ns : 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static int state_from(const char *s, const char *const *names, int n)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static int parse_dev(const cJSON *d, struct cloud_rollout_dev *rd, bool *oom)
{
    static const char *const names[] = {"pending", "canary", "active", "failed", "rolled_back"};
    int st = state_from(get_s(d, "state"), names, 5);
    if (!get_s(d, "device") || st < 0)
        return -EBADMSG;
    rd->device = dup_or_null(get_s(d, "device"), oom);
    rd->previous = dup_or_null(get_s(d, "previous"), oom);
    rd->previous_version = dup_or_null(get_s(d, "previous_version"), oom);
    rd->reason = dup_or_null(get_s(d, "reason"), oom);
    const char *phase = get_s(d, "phase");
    rd->canary = phase && strcmp(phase, "canary") == 0;
    rd->assigned = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "assigned"));
    rd->assigned_gen = (uint64_t)get_n(d, "assigned_generation");
    rd->state = (enum cloud_rdev_state)st;
    rd->active_at = get_t(d, "active_at");
    return 0;
}

static int parse_head(const cJSON *j, struct cloud_rollout *r, bool *oom)
{
    static const char *const names[] = {"canary", "rolling",     "done",
                                        "halted", "rolled_back", "superseded"};
    const char *id = get_s(j, "id");
    int st = state_from(get_s(j, "state"), names, 6);
    if (!id || strlen(id) >= sizeof(r->id) || st < 0 || !get_s(j, "function") ||
        !get_s(j, "bundle"))
        return -EBADMSG;
    memcpy(r->id, id, strlen(id) + 1);
    r->seq = (uint64_t)get_n(j, "seq");
    r->function = dup_or_null(get_s(j, "function"), oom);
    r->version = dup_or_null(get_s(j, "version") ? get_s(j, "version") : "", oom);
    r->cfg.bundle = dup_or_null(get_s(j, "bundle"), oom);
    r->cfg.selector = dup_or_null(get_s(j, "selector") ? get_s(j, "selector") : "", oom);
    r->cfg.canary_percent = (int)get_n(j, "canary_percent");
    r->cfg.bake_s = get_n(j, "bake_s");
    r->cfg.max_failure_rate = get_n(j, "max_failure_rate");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "health");
    r->cfg.min_invocations = (uint64_t)get_n(h, "min_invocations");
    r->cfg.max_error_rate = get_n(h, "max_error_rate");
    r->state = (enum cloud_rollout_state)st;
    const char *phase = get_s(j, "phase");
    r->phase_rolling = phase && strcmp(phase, "rolling") == 0;
    r->created = get_t(j, "created");
    r->canary_ready_at = get_t(j, "canary_ready_at");
    r->rolling_at = get_t(j, "rolling_at");
    r->halted_at = get_t(j, "halted_at");
    r->rolled_back_at = get_t(j, "rolled_back_at");
    r->completed_at = get_t(j, "completed_at");
    r->superseded_at = get_t(j, "superseded_at");
    r->superseded_by = dup_or_null(get_s(j, "superseded_by"), oom);
    r->halted_reason = dup_or_null(get_s(j, "halted_reason"), oom);
    return 0;
}

int cloud_rollout_from_json(const cJSON *j, struct cloud_rollout **out)
{
    struct cloud_rollout *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    bool oom = false;
    int rc = parse_head(j, r, &oom);
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(j, "devices");
    int n = cJSON_GetArraySize(devs);
    if (rc == 0 && !cJSON_IsArray(devs))
        rc = -EBADMSG;
    if (rc == 0 && n > 0 && !(r->devs = calloc((size_t)n, sizeof(*r->devs))))
        rc = -ENOMEM;
    const cJSON *d;
    const cJSON *list = rc == 0 ? devs : NULL;
    cJSON_ArrayForEach(d, list)
    {
        if (!r->devs || r->ndevs >= (size_t)n) {
            rc = -EBADMSG;
            break;
        }
        rc = parse_dev(d, &r->devs[r->ndevs], &oom);
        if (rc != 0)
            break;
        if (r->devs[r->ndevs++].canary)
            r->ncanary++;
    }
    if (rc == 0 && oom)
        rc = -ENOMEM;
    for (size_t i = 1; rc == 0 && i < r->ndevs; i++)
        if (!r->devs[i - 1].device || !r->devs[i].device ||
            strcmp(r->devs[i - 1].device, r->devs[i].device) >= 0)
            rc = -EBADMSG; /* lookups need them sorted */
    if (rc != 0) {
        cloud_rollout_free(r);
        return rc;
    }
    *out = r;
    return 0;
}
