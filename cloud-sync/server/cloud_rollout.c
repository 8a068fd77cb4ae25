/*
 * Rollouts: canary devices get the bundle first; once all of them run it
 * and bake_s passes without too many failures, every other selected device
 * gets it; when failed devices / devices of the current phase exceed
 * max_failure_rate the rollout halts and rolls itself back, giving every
 * device of the rollout its previous bundle (or removing the function).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud_rollout.h"
#include "log.h"
#include "util.h"

#define NS_PER_S 1000000000ULL

static const char *const ro_names[] = {"canary", "rolling",     "done",
                                       "halted", "rolled_back", "superseded"};
static const char *const rd_names[] = {"pending", "canary", "active", "failed", "rolled_back"};

const char *cloud_rollout_state_name(enum cloud_rollout_state s)
{
    return (unsigned)s < WISP_ARRAY_LEN(ro_names) ? ro_names[s] : "?";
}

const char *cloud_rdev_state_name(enum cloud_rdev_state s)
{
    return (unsigned)s < WISP_ARRAY_LEN(rd_names) ? rd_names[s] : "?";
}

struct cloud_rollout *cloud_rollout_find(const struct cloud *c, const char *id)
{
    for (size_t i = 0; i < c->nrollouts; i++)
        if (strcmp(c->rollouts[i]->id, id) == 0)
            return c->rollouts[i];
    return NULL;
}

static bool running(const struct cloud_rollout *r)
{
    return r->state == CLOUD_RO_CANARY || r->state == CLOUD_RO_ROLLING;
}

void cloud_rollout_free(struct cloud_rollout *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->ndevs; i++) {
        free(r->devs[i].device);
        free(r->devs[i].previous);
        free(r->devs[i].previous_version);
        free(r->devs[i].reason);
    }
    free(r->devs);
    free(r->function);
    free(r->version);
    free(r->cfg.bundle);
    free(r->cfg.selector);
    free(r->halted_reason);
    free(r->superseded_by);
    free(r);
}

static cJSON *health_json(const struct cloud_rollout *r)
{
    cJSON *h = cJSON_CreateObject();
    if (!h || !cJSON_AddNumberToObject(h, "min_invocations", (double)r->cfg.min_invocations) ||
        !cJSON_AddNumberToObject(h, "max_error_rate", r->cfg.max_error_rate)) {
        cJSON_Delete(h);
        return NULL;
    }
    return h;
}

static struct cloud_rollout_dev *find_rdev(struct cloud_rollout *r, const char *id)
{
    size_t lo = 0, hi = r->ndevs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(r->devs[mid].device, id);
        if (cmp == 0)
            return &r->devs[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void fail_dev(struct cloud *c, struct cloud_rollout *r, struct cloud_rollout_dev *rd,
                     const char *reason)
{
    char *s = strdup(reason);
    free(rd->reason);
    rd->reason = s;
    rd->state = CLOUD_RD_FAILED;
    r->dirty = true;
    char when[40];
    cloud_format_time(c->now, when, sizeof(when));
    log_warn("rollout %s: device %s failed at %s: %s", r->id, rd->device, when, reason);
}

/* Looks at what one device reports for the rollout's function. True when
 * the device's state changed. */
static bool eval_dev(struct cloud *c, struct cloud_rollout *r, struct cloud_rollout_dev *rd,
                     const struct cloud_device *dev, const cJSON *reported)
{
    if (!rd->assigned || rd->state == CLOUD_RD_FAILED || rd->state == CLOUD_RD_ROLLED_BACK)
        return false;
    const cJSON *fns = cJSON_GetObjectItemCaseSensitive(reported, "functions");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(fns, r->function);
    const cJSON *bundle = cJSON_GetObjectItemCaseSensitive(f, "bundle");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(f, "status");
    if (!cJSON_IsObject(f) || !cJSON_IsString(status))
        return false;
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(reported, "generation");
    bool fresh = !cJSON_IsNumber(gen) || gen->valuedouble >= (double)rd->assigned_gen;
    bool runs = cJSON_IsString(bundle) && strcmp(bundle->valuestring, r->cfg.bundle) == 0;
    const char *st = status->valuestring;
    if (runs && strcmp(st, "active") == 0) {
        const cJSON *inv = cJSON_GetObjectItemCaseSensitive(f, "invocations");
        const cJSON *errs = cJSON_GetObjectItemCaseSensitive(f, "errors");
        double ni = cJSON_IsNumber(inv) ? inv->valuedouble : 0;
        double ne = cJSON_IsNumber(errs) ? errs->valuedouble : 0;
        if (ni >= 1 && ni >= (double)r->cfg.min_invocations && ne / ni > r->cfg.max_error_rate) {
            char why[160];
            (void)snprintf(why, sizeof(why), "error rate %.3f > %.3f after %.0f invocations",
                           ne / ni, r->cfg.max_error_rate, ni);
            fail_dev(c, r, rd, why);
            return true;
        }
        if (rd->state == CLOUD_RD_ACTIVE)
            return false;
        rd->state = CLOUD_RD_ACTIVE;
        rd->active_at = c->now;
        r->dirty = true;
        log_debug("rollout %s: device %s runs %s", r->id, rd->device, r->cfg.bundle);
        return true;
    }
    const char *want = cloud_device_desired_bundle(dev, r->function);
    if (fresh && want && strcmp(want, r->cfg.bundle) == 0 &&
        (strcmp(st, "rolled_back") == 0 || strcmp(st, "refused") == 0)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(f, "error");
        char why[300];
        (void)snprintf(why, sizeof(why), "reported %s%s%.200s", st, cJSON_IsString(e) ? ": " : "",
                       cJSON_IsString(e) ? e->valuestring : "");
        fail_dev(c, r, rd, why);
        return true;
    }
    return false;
}

/* Gives one device the rollout's bundle. */
static void assign(struct cloud *c, struct cloud_rollout *r, struct cloud_rollout_dev *rd)
{
    struct cloud_device *dev = cloud_device_find(c, rd->device);
    cJSON *h = health_json(r);
    if (!dev || !h ||
        cloud_device_set_function(c, dev, r->function, r->cfg.bundle, r->version, r->id, h) != 0) {
        cJSON_Delete(h);
        log_error("rollout %s: cannot give device %s the new bundle", r->id, rd->device);
        return;
    }
    cJSON_Delete(h);
    rd->assigned = true;
    rd->assigned_gen = dev->generation;
    if (rd->canary && rd->state == CLOUD_RD_PENDING)
        rd->state = CLOUD_RD_CANARY;
    r->dirty = true;
    (void)eval_dev(c, r, rd, dev, dev->reported); /* it may run it already */
}

/* "device gw-1: reported rolled_back: ...; device gw-2: ..." */
static char *failure_text(const struct cloud_rollout *r)
{
    size_t cap = 2048, len = 0, shown = 0, failed = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = '\0';
    for (size_t i = 0; i < r->ndevs; i++) {
        const struct cloud_rollout_dev *rd = &r->devs[i];
        if (rd->state != CLOUD_RD_FAILED)
            continue;
        failed++;
        if (len + 400 >= cap)
            continue;
        len += (size_t)snprintf(s + len, cap - len, "%sdevice %s: %s", shown ? "; " : "",
                                rd->device, rd->reason ? rd->reason : "failed");
        shown++;
    }
    if (failed > shown)
        (void)snprintf(s + len, cap - len, "; and %zu more", failed - shown);
    return s;
}

/* Moves r to state s now: stamps *at, marks r for writing and formats the
 * time into when for the log line. */
static void enter_state(struct cloud *c, struct cloud_rollout *r, enum cloud_rollout_state s,
                        uint64_t *at, char when[40])
{
    r->state = s;
    *at = c->now;
    r->dirty = true;
    cloud_format_time(c->now, when, 40);
}

static void do_rollback(struct cloud *c, struct cloud_rollout *r)
{
    for (size_t i = 0; i < r->ndevs; i++) {
        struct cloud_rollout_dev *rd = &r->devs[i];
        struct cloud_device *dev = cloud_device_find(c, rd->device);
        const char *want = dev ? cloud_device_desired_bundle(dev, r->function) : NULL;
        if (!rd->assigned)
            continue;
        if (want && strcmp(want, r->cfg.bundle) == 0)
            (void)cloud_device_set_function(c, dev, r->function, rd->previous, rd->previous_version,
                                            r->id, NULL);
        if (rd->state != CLOUD_RD_FAILED)
            rd->state = CLOUD_RD_ROLLED_BACK;
    }
    char when[40];
    enter_state(c, r, CLOUD_RO_ROLLED_BACK, &r->rolled_back_at, when);
    log_info("rollout %s: rolled back at %s: previous bundles restored", r->id, when);
}

static void halt(struct cloud *c, struct cloud_rollout *r, const char *reason)
{
    char when[40];
    enter_state(c, r, CLOUD_RO_HALTED, &r->halted_at, when);
    char *s = strdup(reason);
    free(r->halted_reason);
    r->halted_reason = s;
    log_warn("rollout %s: halted at %s: %s", r->id, when, reason);
}

/* Gives every device not in the canary phase the bundle. */
static void promote(struct cloud *c, struct cloud_rollout *r)
{
    char when[40];
    enter_state(c, r, CLOUD_RO_ROLLING, &r->rolling_at, when);
    r->phase_rolling = true;
    log_info("rollout %s: canaries baked, rolling to %zu more devices at %s", r->id,
             r->ndevs - r->ncanary, when);
    for (size_t i = 0; i < r->ndevs; i++)
        if (!r->devs[i].assigned)
            assign(c, r, &r->devs[i]);
}

/* Checks failures and phase completion. */
static void evaluate(struct cloud *c, struct cloud_rollout *r)
{
    if (!running(r))
        return;
    size_t nphase = r->state == CLOUD_RO_CANARY ? r->ncanary : r->ndevs;
    size_t failed = 0, settled = 0;
    for (size_t i = 0; i < nphase; i++) {
        failed += r->devs[i].state == CLOUD_RD_FAILED;
        settled += r->devs[i].state == CLOUD_RD_FAILED || r->devs[i].state == CLOUD_RD_ACTIVE;
    }
    if (failed > 0 && (double)failed / (double)nphase > r->cfg.max_failure_rate) {
        char *why = failure_text(r);
        halt(c, r, why ? why : "devices failed");
        free(why);
        do_rollback(c, r);
        return;
    }
    if (settled < nphase)
        return;
    if (r->state == CLOUD_RO_CANARY) {
        if (r->canary_ready_at == 0) {
            r->canary_ready_at = c->now;
            r->dirty = true;
            log_info("rollout %s: all %zu canaries run %s; baking %.1f s", r->id, r->ncanary,
                     r->cfg.bundle, r->cfg.bake_s);
        }
        if (c->now >= r->canary_ready_at + (uint64_t)(r->cfg.bake_s * (double)NS_PER_S))
            promote(c, r);
        return;
    }
    char when[40];
    enter_state(c, r, CLOUD_RO_DONE, &r->completed_at, when);
    log_info("rollout %s: done at %s: %zu devices run %s", r->id, when, r->ndevs, r->cfg.bundle);
}

void cloud_rollout_on_reported(struct cloud *c, struct cloud_device *dev, const cJSON *reported)
{
    for (size_t i = 0; i < c->nrollouts; i++) {
        struct cloud_rollout *r = c->rollouts[i];
        if (!running(r))
            continue;
        struct cloud_rollout_dev *rd = find_rdev(r, dev->id);
        if (rd && eval_dev(c, r, rd, dev, reported))
            evaluate(c, r);
    }
}

void cloud_rollout_tick(struct cloud *c)
{
    for (size_t i = 0; i < c->nrollouts; i++) {
        struct cloud_rollout *r = c->rollouts[i];
        if (running(r))
            evaluate(c, r);
    }
}

static int check_cfg(const struct cloud_rollout_cfg *cfg, char *err, size_t errlen)
{
    if (cfg->canary_percent < 0 || cfg->canary_percent > 100)
        return wisp_errf(err, errlen, -EINVAL, "canary_percent: %d is not within 0..100",
                         cfg->canary_percent);
    if (!(cfg->bake_s >= 0 && cfg->bake_s <= 30 * 86400.0))
        return wisp_errf(err, errlen, -EINVAL, "bake_s: must be 0..2592000 seconds");
    if (!(cfg->max_failure_rate >= 0 && cfg->max_failure_rate <= 1))
        return wisp_errf(err, errlen, -EINVAL, "max_failure_rate: must be within 0..1");
    if (!(cfg->max_error_rate >= 0 && cfg->max_error_rate <= 1))
        return wisp_errf(err, errlen, -EINVAL, "health.max_error_rate: must be within 0..1");
    return 0;
}

/* The devices the selector picks now, with their previous bundle. */
static int pick_devices(struct cloud *c, struct cloud_rollout *r, const cJSON *sel)
{
    r->devs = calloc(c->ndevs ? c->ndevs : 1, sizeof(*r->devs));
    if (!r->devs)
        return -ENOMEM;
    for (size_t i = 0; i < c->ndevs; i++) {
        const struct cloud_device *d = c->devs[i];
        if (!cloud_selector_match(sel, d->labels))
            continue;
        struct cloud_rollout_dev *rd = &r->devs[r->ndevs++];
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(d->desired_fns, r->function);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(f, "bundle");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, "version");
        rd->device = strdup(d->id);
        if (cJSON_IsString(b))
            rd->previous = strdup(b->valuestring);
        if (cJSON_IsString(v))
            rd->previous_version = strdup(v->valuestring);
        if (!rd->device || (cJSON_IsString(b) && !rd->previous) ||
            (cJSON_IsString(v) && !rd->previous_version))
            return -ENOMEM;
    }
    return 0;
}

static int register_rollout(struct cloud *c, struct cloud_rollout *r)
{
    int rc = cloud_add_rollout(c, r);
    return rc ? rc
              : c->store->ops->put(c->txn, CLOUD_T_META, "rollout_seq", 11, &c->rollout_seq,
                                   sizeof(c->rollout_seq));
}

static void supersede(struct cloud *c, const struct cloud_rollout *by)
{
    for (size_t i = 0; i < c->nrollouts; i++) {
        struct cloud_rollout *old = c->rollouts[i];
        if (old == by || !running(old) || strcmp(old->function, by->function) != 0)
            continue;
        old->state = CLOUD_RO_SUPERSEDED;
        old->superseded_at = c->now;
        free(old->superseded_by);
        old->superseded_by = strdup(by->id);
        old->dirty = true;
        log_info("rollout %s: superseded by %s", old->id, by->id);
    }
}

static struct cloud_rollout *rollout_new(const struct cloud_rollout_cfg *cfg, const char *fn,
                                         const char *version)
{
    struct cloud_rollout *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cfg = *cfg;
    r->cfg.bundle = strdup(cfg->bundle);
    r->cfg.selector = strdup(cfg->selector ? cfg->selector : "");
    r->function = strdup(fn);
    r->version = strdup(version ? version : "");
    if (!r->cfg.bundle || !r->cfg.selector || !r->function || !r->version) {
        cloud_rollout_free(r);
        return NULL;
    }
    return r;
}

int cloud_rollout_create(struct cloud *c, const struct cloud_rollout_cfg *cfg, const char *fn,
                         const char *version, struct cloud_rollout **out, char *err, size_t errlen)
{
    int rc = check_cfg(cfg, err, errlen);
    if (rc != 0)
        return rc;
    cJSON *sel = cloud_selector_parse(cfg->selector ? cfg->selector : "", err, errlen);
    if (!sel)
        return -EINVAL;
    struct cloud_rollout *r = rollout_new(cfg, fn, version);
    rc = r ? pick_devices(c, r, sel) : -ENOMEM;
    cJSON_Delete(sel);
    if (rc == 0 && r->ndevs == 0)
        rc = wisp_errf(err, errlen, -ENODEV, "selector: \"%s\" matches no registered device",
                       cfg->selector ? cfg->selector : "");
    if (rc != 0) {
        if (rc == -ENOMEM)
            (void)wisp_errf(err, errlen, rc, "out of memory creating the rollout");
        cloud_rollout_free(r);
        return rc;
    }
    r->seq = ++c->rollout_seq;
    (void)snprintf(r->id, sizeof(r->id), "r-%" PRIu64, r->seq);
    r->created = c->now;
    if (cfg->canary_percent > 0) {
        size_t n = ((size_t)cfg->canary_percent * r->ndevs + 99) / 100;
        r->ncanary = n < 1 ? 1 : n > r->ndevs ? r->ndevs : n;
    }
    for (size_t i = 0; i < r->ncanary; i++)
        r->devs[i].canary = true;
    r->dirty = true;
    rc = register_rollout(c, r);
    if (rc != 0) {
        if (c->nrollouts && c->rollouts[c->nrollouts - 1] == r)
            c->nrollouts--;
        cloud_rollout_free(r);
        return wisp_errf(err, errlen, rc, "cannot store the rollout: %s", strerror(-rc));
    }
    supersede(c, r);
    r->state = r->ncanary ? CLOUD_RO_CANARY : CLOUD_RO_ROLLING;
    r->phase_rolling = r->ncanary == 0;
    if (r->phase_rolling)
        r->rolling_at = c->now;
    log_info("rollout %s: %s %s (%s) to %zu devices, %zu canaries, selector \"%s\"", r->id,
             r->function, r->version, r->cfg.bundle, r->ndevs, r->ncanary, r->cfg.selector);
    size_t first = r->ncanary ? r->ncanary : r->ndevs;
    for (size_t i = 0; i < first; i++)
        assign(c, r, &r->devs[i]);
    evaluate(c, r);
    *out = r;
    return 0;
}

int cloud_rollout_halt(struct cloud *c, struct cloud_rollout *r, const char *why, char *err,
                       size_t errlen)
{
    if (!running(r))
        return wisp_errf(err, errlen, -EALREADY, "rollout %s is %s: nothing to halt", r->id,
                         cloud_rollout_state_name(r->state));
    halt(c, r, why);
    return 0;
}

int cloud_rollout_rollback(struct cloud *c, struct cloud_rollout *r, char *err, size_t errlen)
{
    if (r->state == CLOUD_RO_ROLLED_BACK || r->state == CLOUD_RO_SUPERSEDED)
        return wisp_errf(err, errlen, -EALREADY, "rollout %s is %s: nothing to roll back", r->id,
                         cloud_rollout_state_name(r->state));
    if (running(r))
        halt(c, r, "rolled back through the API");
    do_rollback(c, r);
    return 0;
}
