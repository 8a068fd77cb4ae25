/*
 * The fleet in memory, written through to the store: devices, their
 * desired states, the batch that groups changes into one commit, and the
 * queue of MQTT publishes released after that commit.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud.h"
#include "cloud_meter.h"
#include "cloud_rollout.h"
#include "log.h"
#include "meter.h"
#include "util.h"

bool cloud_device_id_valid(const char *id, size_t len)
{
    if (len == 0 || len > CLOUD_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = id[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool cloud_token_ok(const char *want, const char *got)
{
    size_t wl = strlen(want), gl = got ? strlen(got) : 0;
    unsigned char diff = (unsigned char)(wl != gl);
    for (size_t i = 0; i < wl; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < gl ? got[i] : 0);
    return diff == 0 && got != NULL;
}

/* Index of id in c->devs, or where it would go (*found false). */
static size_t dev_index(const struct cloud *c, const char *id, bool *found)
{
    size_t lo = 0, hi = c->ndevs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(c->devs[mid]->id, id);
        if (cmp == 0) {
            *found = true;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

struct cloud_device *cloud_device_find(const struct cloud *c, const char *id)
{
    bool found;
    size_t i = dev_index(c, id, &found);
    return found ? c->devs[i] : NULL;
}

static void device_free(struct cloud_device *d)
{
    if (!d)
        return;
    cJSON_Delete(d->own_labels);
    cJSON_Delete(d->set_labels);
    cJSON_Delete(d->labels);
    cJSON_Delete(d->reported);
    cJSON_Delete(d->desired_fns);
    cJSON_Delete(d->desired_health);
    free(d->desired_rollout);
    free(d->wispd);
    free(d->arch);
    free(d->meter.chain_error);
    free(d);
}

static struct cloud_device *device_new(const char *id)
{
    struct cloud_device *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    size_t n = strnlen(id, CLOUD_ID_MAX); /* callers check ids; never overrun on a long one */
    memcpy(d->id, id, n);
    d->id[n] = '\0';
    d->own_labels = cJSON_CreateObject();
    d->labels = cJSON_CreateObject();
    d->desired_fns = cJSON_CreateObject();
    if (!d->own_labels || !d->labels || !d->desired_fns) {
        device_free(d);
        return NULL;
    }
    return d;
}

/* Inserts d (whose id is not there yet) in sorted order. */
static int dev_insert(struct cloud *c, struct cloud_device *d)
{
    bool found;
    size_t at = dev_index(c, d->id, &found);
    if (found)
        return -EEXIST;
    if (c->ndevs == c->capdevs) {
        size_t cap = c->capdevs ? c->capdevs * 2 : 64;
        struct cloud_device **n = realloc(c->devs, cap * sizeof(struct cloud_device *));
        if (!n)
            return -ENOMEM;
        c->devs = n;
        c->capdevs = cap;
    }
    memmove(c->devs + at + 1, c->devs + at, (c->ndevs - at) * sizeof(struct cloud_device *));
    c->devs[at] = d;
    c->ndevs++;
    return 0;
}

struct cloud_device *cloud_device_register(struct cloud *c, const char *id)
{
    struct cloud_device *d = device_new(id);
    if (!d || dev_insert(c, d) != 0) {
        device_free(d);
        return NULL;
    }
    d->registered = c->now;
    d->last_seen = c->now;
    d->dirty = true;
    log_info("device %s registered", id);
    return d;
}

int cloud_device_merge_labels(struct cloud_device *dev)
{
    cJSON *m = cJSON_Duplicate(dev->own_labels, 1);
    if (!m)
        return -ENOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, dev->set_labels)
    {
        cJSON_DeleteItemFromObjectCaseSensitive(m, it->string);
        if (cJSON_IsString(it) &&
            !cJSON_AddItemToObject(m, it->string, cJSON_CreateString(it->valuestring))) {
            cJSON_Delete(m);
            return -ENOMEM;
        }
    }
    cJSON_Delete(dev->labels);
    dev->labels = m;
    return 0;
}

const char *cloud_device_desired_bundle(const struct cloud_device *dev, const char *fn)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(dev->desired_fns, fn);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(f, "bundle");
    return cJSON_IsString(b) ? b->valuestring : NULL;
}

int cloud_device_set_function(struct cloud *c, struct cloud_device *dev, const char *fn,
                              const char *bundle, const char *version, const char *rollout,
                              const cJSON *health)
{
    (void)c;
    cJSON_DeleteItemFromObjectCaseSensitive(dev->desired_fns, fn);
    if (bundle) {
        cJSON *f = cJSON_CreateObject();
        if (!f || !cJSON_AddItemToObject(dev->desired_fns, fn, f))
            goto oom;
        if (!cJSON_AddStringToObject(f, "bundle", bundle) ||
            !cJSON_AddStringToObject(f, "version", version ? version : ""))
            goto oom;
    }
    if (rollout) {
        char *r = strdup(rollout);
        if (!r)
            goto oom;
        free(dev->desired_rollout);
        dev->desired_rollout = r;
    }
    if (health) {
        cJSON *h = cJSON_Duplicate(health, 1);
        if (!h)
            goto oom;
        cJSON_Delete(dev->desired_health);
        dev->desired_health = h;
    }
    dev->generation++;
    dev->desired_dirty = true;
    return 0;
oom:
    log_error("device %s: out of memory setting function %s", dev->id, fn);
    return -ENOMEM;
}

/* ---- time ---- */

void cloud_format_time(uint64_t ns, char *out, size_t cap)
{
    if (ns == 0) {
        if (cap)
            out[0] = '\0';
        return;
    }
    wisp_rfc3339(ns, out, cap);
}

cJSON *cloud_time_json(uint64_t ns)
{
    if (ns == 0)
        return cJSON_CreateNull();
    char buf[40];
    cloud_format_time(ns, buf, sizeof(buf));
    return cJSON_CreateString(buf);
}

/* Reads exactly n digits. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9')
            return false;
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool parse_offset(const char *p, int64_t *off_s)
{
    int oh, om;
    if (*p == 'Z' || *p == 'z') {
        *off_s = 0;
        return p[1] == '\0';
    }
    if (*p != '+' && *p != '-')
        return false;
    int sign = *p == '-' ? -1 : 1;
    p++;
    if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || *p != '\0' || oh > 23 ||
        om > 59)
        return false;
    *off_s = (int64_t)sign * ((int64_t)oh * 3600 + (int64_t)om * 60);
    return true;
}

bool cloud_parse_time(const char *s, uint64_t *out_ns)
{
    const char *p = s;
    int y, mo, d, h, mi, se;
    if (!s || !digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return false;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &se))
        return false;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return false;
    uint64_t frac_ns = 0;
    if (*p == '.') {
        p++;
        uint64_t scale = 100000000;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9') {
            frac_ns += (uint64_t)(*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    int64_t off;
    if (!parse_offset(p, &off))
        return false;
    int64_t secs =
        days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + se - off;
    if (secs < 0)
        return false;
    *out_ns = (uint64_t)secs * 1000000000ULL + frac_ns;
    return true;
}

/* ---- persistence ---- */

static uint64_t json_u64(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) && v->valuedouble > 0 ? (uint64_t)v->valuedouble : 0;
}

static char *json_strdup(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
}

static double ms_of(uint64_t ns)
{
    uint64_t ms = ns / 1000000;
    return (double)ms;
}

/* The stored form of d. It refers to (does not copy) d's labels and report,
 * so it is printed and deleted before d changes. */
static cJSON *device_record(const struct cloud_device *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(o, "meter");
    char hex[65];
    wisp_meter_hex(d->meter.head_hash, hex);
    bool ok =
        m && cJSON_AddItemReferenceToObject(o, "own_labels", d->own_labels) &&
        (!d->set_labels || cJSON_AddItemReferenceToObject(o, "set_labels", d->set_labels)) &&
        cJSON_AddNumberToObject(o, "registered_ms", ms_of(d->registered)) &&
        cJSON_AddNumberToObject(o, "last_seen_ms", ms_of(d->last_seen)) &&
        cJSON_AddBoolToObject(o, "online", d->online) &&
        (!d->wispd || cJSON_AddStringToObject(o, "wispd", d->wispd)) &&
        (!d->arch || cJSON_AddStringToObject(o, "arch", d->arch)) &&
        (!d->reported || cJSON_AddItemReferenceToObject(o, "reported", d->reported)) &&
        cJSON_AddNumberToObject(m, "head_seq", (double)d->meter.head_seq) &&
        cJSON_AddStringToObject(m, "head_hash", hex) &&
        cJSON_AddNumberToObject(m, "records", (double)d->meter.records) &&
        cJSON_AddNumberToObject(m, "gaps", (double)d->meter.gaps) &&
        (!d->meter.chain_error || cJSON_AddStringToObject(m, "chain_error", d->meter.chain_error));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *desired_json(const struct cloud_device *d)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddNumberToObject(o, "generation", (double)d->generation) &&
              (!d->desired_rollout || cJSON_AddStringToObject(o, "rollout", d->desired_rollout)) &&
              cJSON_AddItemToObject(o, "functions", cJSON_Duplicate(d->desired_fns, 1)) &&
              (!d->desired_health ||
               cJSON_AddItemToObject(o, "health", cJSON_Duplicate(d->desired_health, 1)));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *cloud_device_json(const struct cloud_device *d)
{
    cJSON *o = cJSON_CreateObject();
    const cJSON *fns = cJSON_GetObjectItemCaseSensitive(d->reported, "functions");
    cJSON *m = cJSON_CreateObject();
    cJSON *des = desired_json(d);
    bool ok =
        o && m && des && cJSON_AddStringToObject(o, "device", d->id) &&
        cJSON_AddItemToObject(o, "labels", cJSON_Duplicate(d->labels, 1)) &&
        cJSON_AddBoolToObject(o, "online", d->online) &&
        cJSON_AddItemToObject(o, "last_seen", cloud_time_json(d->last_seen)) &&
        cJSON_AddItemToObject(o, "registered", cloud_time_json(d->registered)) &&
        cJSON_AddItemToObject(
            o, "functions", cJSON_IsObject(fns) ? cJSON_Duplicate(fns, 1) : cJSON_CreateObject()) &&
        cJSON_AddItemToObject(o, "meter", m) &&
        cJSON_AddNumberToObject(m, "records", (double)d->meter.records) &&
        cJSON_AddNumberToObject(m, "head_seq", (double)d->meter.head_seq) &&
        cJSON_AddNumberToObject(m, "gaps", (double)d->meter.gaps) &&
        cJSON_AddItemToObject(m, "chain_error",
                              d->meter.chain_error ? cJSON_CreateString(d->meter.chain_error)
                                                   : cJSON_CreateNull()) &&
        cJSON_AddItemToObject(o, "desired", des) &&
        (!d->wispd || cJSON_AddStringToObject(o, "wispd", d->wispd)) &&
        (!d->arch || cJSON_AddStringToObject(o, "arch", d->arch));
    if (!ok) {
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "meter"))
            cJSON_Delete(m);
        if (!o || !cJSON_GetObjectItemCaseSensitive(o, "desired"))
            cJSON_Delete(des);
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int put_json(struct cloud *c, enum cloud_table tbl, const char *key, cJSON *j)
{
    if (!j)
        return -ENOMEM;
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s)
        return -ENOMEM;
    int rc = c->store->ops->put(c->txn, tbl, key, strlen(key), s, strlen(s));
    free(s);
    return rc;
}

static cJSON *take_object(cJSON *parent, const char *key)
{
    cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(parent, key);
    if (v && !cJSON_IsObject(v)) {
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

static int load_device(struct cloud *c, const char *id, cJSON *j)
{
    struct cloud_device *d = device_new(id);
    if (!d)
        return -ENOMEM;
    cJSON *own = take_object(j, "own_labels");
    if (own) {
        cJSON_Delete(d->own_labels);
        d->own_labels = own;
    }
    d->set_labels = take_object(j, "set_labels");
    d->reported = take_object(j, "reported");
    d->registered = json_u64(j, "registered_ms") * 1000000;
    d->last_seen = json_u64(j, "last_seen_ms") * 1000000;
    d->online = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "online"));
    d->wispd = json_strdup(j, "wispd");
    d->arch = json_strdup(j, "arch");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "meter");
    d->meter.head_seq = json_u64(m, "head_seq");
    d->meter.records = json_u64(m, "records");
    d->meter.gaps = json_u64(m, "gaps");
    d->meter.chain_error = json_strdup(m, "chain_error");
    const cJSON *hh = cJSON_GetObjectItemCaseSensitive(m, "head_hash");
    if (!cJSON_IsString(hh) || !wisp_meter_unhex(hh->valuestring, d->meter.head_hash)) {
        device_free(d);
        return -EBADMSG;
    }
    int rc = cloud_device_merge_labels(d);
    if (rc == 0)
        rc = dev_insert(c, d);
    if (rc != 0)
        device_free(d);
    return rc;
}

static int load_desired(struct cloud *c, const char *id, cJSON *j)
{
    struct cloud_device *d = cloud_device_find(c, id);
    if (!d)
        return 0; /* desired state of a device that is gone: ignore */
    cJSON *fns = take_object(j, "functions");
    if (!fns)
        return -EBADMSG;
    cJSON_Delete(d->desired_fns);
    d->desired_fns = fns;
    d->desired_health = take_object(j, "health");
    d->desired_rollout = json_strdup(j, "rollout");
    d->generation = json_u64(j, "generation");
    return 0;
}

struct load_ctx {
    struct cloud *c;
    enum cloud_table tbl;
    char *err;
    size_t errlen;
};

int cloud_add_rollout(struct cloud *c, struct cloud_rollout *r)
{
    if (c->nrollouts == c->caprollouts) {
        size_t cap = c->caprollouts ? c->caprollouts * 2 : 16;
        struct cloud_rollout **n = realloc(c->rollouts, cap * sizeof(struct cloud_rollout *));
        if (!n)
            return -ENOMEM;
        c->rollouts = n;
        c->caprollouts = cap;
    }
    c->rollouts[c->nrollouts++] = r;
    return 0;
}

static int load_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct load_ctx *lc = ud;
    char id[256];
    if (klen >= sizeof(id))
        return wisp_errf(lc->err, lc->errlen, -EBADMSG, "table %s: a key of %zu bytes",
                         cloud_table_name(lc->tbl), klen);
    if (lc->tbl == CLOUD_T_DEVICES && klen > CLOUD_ID_MAX)
        return wisp_errf(lc->err, lc->errlen, -EBADMSG,
                         "table %s: a device id of %zu bytes (at most %d)",
                         cloud_table_name(lc->tbl), klen, CLOUD_ID_MAX);
    memcpy(id, key, klen);
    id[klen] = '\0';
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    int rc = j && cJSON_IsObject(j) ? 0 : -EBADMSG;
    if (rc == 0 && lc->tbl == CLOUD_T_DEVICES)
        rc = load_device(lc->c, id, j);
    else if (rc == 0 && lc->tbl == CLOUD_T_DESIRED)
        rc = load_desired(lc->c, id, j);
    else if (rc == 0 && lc->tbl == CLOUD_T_ROLLOUTS) {
        struct cloud_rollout *r;
        rc = cloud_rollout_from_json(j, &r);
        if (rc == 0 && (rc = cloud_add_rollout(lc->c, r)) != 0)
            cloud_rollout_free(r);
    }
    cJSON_Delete(j);
    if (rc != 0)
        return wisp_errf(lc->err, lc->errlen, rc, "table %s: entry %s is not a valid record%s",
                         cloud_table_name(lc->tbl), id, rc == -ENOMEM ? " (out of memory)" : "");
    return 0;
}

static int rollout_cmp(const void *a, const void *b)
{
    const struct cloud_rollout *x = *(struct cloud_rollout *const *)a;
    const struct cloud_rollout *y = *(struct cloud_rollout *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void unload(struct cloud *c)
{
    for (size_t i = 0; i < c->ndevs; i++)
        device_free(c->devs[i]);
    c->ndevs = 0;
    for (size_t i = 0; i < c->nrollouts; i++)
        cloud_rollout_free(c->rollouts[i]);
    c->nrollouts = 0;
}

static int load_all(struct cloud *c, char *err, size_t errlen)
{
    struct cloud_txn *t;
    int rc = c->store->ops->begin(c->store, NULL, false, &t);
    if (rc != 0)
        return wisp_errf(err, errlen, rc, "cannot read the store: %s", strerror(-rc));
    static const enum cloud_table order[] = {CLOUD_T_DEVICES, CLOUD_T_DESIRED, CLOUD_T_ROLLOUTS};
    for (size_t i = 0; i < WISP_ARRAY_LEN(order) && rc == 0; i++) {
        struct load_ctx lc = {c, order[i], err, errlen};
        rc = c->store->ops->scan(t, order[i], NULL, 0, load_one, &lc);
        if (rc != 0 && err && !err[0])
            (void)wisp_errf(err, errlen, rc, "table %s: cannot read: %s",
                            cloud_table_name(order[i]), strerror(-rc));
    }
    const void *v;
    size_t vlen;
    c->rollout_seq = 0;
    if (rc == 0 && c->store->ops->get(t, CLOUD_T_META, "rollout_seq", 11, &v, &vlen) == 0 &&
        vlen == sizeof(uint64_t))
        memcpy(&c->rollout_seq, v, sizeof(uint64_t));
    c->store->ops->abort(t);
    if (rc != 0) {
        unload(c);
        return rc;
    }
    if (c->nrollouts > 1)
        qsort(c->rollouts, c->nrollouts, sizeof(struct cloud_rollout *), rollout_cmp);
    for (size_t i = 0; i < c->nrollouts; i++)
        if (c->rollouts[i]->seq > c->rollout_seq)
            c->rollout_seq = c->rollouts[i]->seq;
    return 0;
}

/* The data directory, made like wispd's (mkdir -p, 0750). */
static int make_data_dir(const char *dir, char *err, size_t errlen)
{
    int rc = wisp_mkdir_p(dir, 0750);
    if (rc == -EEXIST)
        return wisp_errf(err, errlen, -ENOTDIR, "--data %s: not a folder", dir);
    if (rc)
        return wisp_errf(err, errlen, rc, "--data %s: cannot create: %s", dir, strerror(-rc));
    return 0;
}

int cloud_create(const struct cloud_config *cfg, struct cloud **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    struct cloud *c = calloc(1, sizeof(*c));
    if (!c)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    c->pubs_tail = &c->pubs;
    c->publish = cfg->publish;
    c->publish_ud = cfg->publish_ud;
    int rc = -ENOMEM;
    c->data_dir = strdup(cfg->data_dir);
    c->bundle_dir = wisp_path_join(cfg->data_dir, "bundles");
    if (cfg->fleet_token && !(c->fleet_token = strdup(cfg->fleet_token)))
        goto fail;
    if (!c->data_dir || !c->bundle_dir)
        goto fail;
    rc = make_data_dir(cfg->data_dir, err, errlen);
    if (rc != 0)
        goto fail;
    if (mkdir(c->bundle_dir, 0700) != 0 && errno != EEXIST) {
        rc =
            wisp_errf(err, errlen, -errno, "%s: cannot create: %s", c->bundle_dir, strerror(errno));
        goto fail;
    }
    char serr[512];
    rc = cloud_store_lmdb_open(cfg->data_dir, &c->store, serr, sizeof(serr));
    if (rc != 0) {
        (void)wisp_errf(err, errlen, rc, "%s", serr);
        goto fail;
    }
    serr[0] = '\0';
    rc = load_all(c, serr, sizeof(serr));
    if (rc != 0) {
        (void)wisp_errf(err, errlen, rc, "%s/db: %s", cfg->data_dir, serr);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    if (rc == -ENOMEM && err && !err[0])
        (void)wisp_errf(err, errlen, rc, "out of memory");
    cloud_destroy(c);
    return rc;
}

static void drop_pubs(struct cloud *c)
{
    struct cloud_pub *p = c->pubs;
    while (p) {
        struct cloud_pub *next = p->next;
        free(p->topic);
        free(p->payload);
        free(p);
        p = next;
    }
    c->pubs = NULL;
    c->pubs_tail = &c->pubs;
}

void cloud_destroy(struct cloud *c)
{
    if (!c)
        return;
    if (c->txn)
        c->store->ops->abort(c->txn);
    drop_pubs(c);
    unload(c);
    free(c->devs);
    free(c->rollouts);
    cloud_store_close(c->store);
    free(c->data_dir);
    free(c->bundle_dir);
    free(c->fleet_token);
    free(c);
}

int cloud_queue_publish_take(struct cloud *c, const char *topic, void *payload, size_t len, int qos,
                             int retain)
{
    struct cloud_pub *p = calloc(1, sizeof(*p));
    char *t = strdup(topic);
    if (!p || !t || !payload) {
        free(t);
        free(p);
        free(payload);
        return -ENOMEM;
    }
    p->topic = t;
    p->payload = payload;
    p->len = len;
    p->qos = qos;
    p->retain = retain;
    *c->pubs_tail = p;
    c->pubs_tail = &p->next;
    return 0;
}

int cloud_queue_publish(struct cloud *c, const char *topic, const void *payload, size_t len,
                        int qos, int retain)
{
    void *copy = malloc(len ? len : 1);
    if (copy && len)
        memcpy(copy, payload, len);
    return cloud_queue_publish_take(c, topic, copy, len, qos, retain);
}

int cloud_batch_begin(struct cloud *c, uint64_t now)
{
    if (c->txn)
        return -EALREADY;
    c->now = now;
    return c->store->ops->begin(c->store, NULL, true, &c->txn);
}

/* Writes one changed device; a changed desired state is also queued for
 * publishing (retained). */
static int flush_device(struct cloud *c, struct cloud_device *d)
{
    int rc = 0;
    if (d->dirty)
        rc = put_json(c, CLOUD_T_DEVICES, d->id, device_record(d));
    if (rc == 0 && d->desired_dirty) {
        cJSON *j = desired_json(d);
        char *s = j ? cJSON_PrintUnformatted(j) : NULL;
        cJSON_Delete(j);
        if (!s)
            return -ENOMEM;
        rc = c->store->ops->put(c->txn, CLOUD_T_DESIRED, d->id, strlen(d->id), s, strlen(s));
        char topic[128];
        (void)snprintf(topic, sizeof(topic), "wisp/v1/%s/desired", d->id);
        if (rc == 0)
            rc = cloud_queue_publish(c, topic, s, strlen(s), 1, 1);
        free(s);
    }
    return rc;
}

static int flush_all(struct cloud *c)
{
    int rc = 0;
    for (size_t i = 0; i < c->ndevs && rc == 0; i++)
        rc = flush_device(c, c->devs[i]);
    for (size_t i = 0; i < c->nrollouts && rc == 0; i++) {
        struct cloud_rollout *r = c->rollouts[i];
        if (r->dirty)
            rc = put_json(c, CLOUD_T_ROLLOUTS, r->id, cloud_rollout_json(r));
    }
    if (rc == 0)
        rc = c->store->ops->put(c->txn, CLOUD_T_META, "rollout_seq", 11, &c->rollout_seq,
                                sizeof(c->rollout_seq));
    return rc;
}

static void clear_dirty(struct cloud *c)
{
    for (size_t i = 0; i < c->ndevs; i++)
        c->devs[i]->dirty = c->devs[i]->desired_dirty = false;
    for (size_t i = 0; i < c->nrollouts; i++)
        c->rollouts[i]->dirty = false;
}

/* After a failed batch: the store is the truth. */
static void reload(struct cloud *c, int why)
{
    drop_pubs(c);
    if (why == -ENOSPC && c->store->ops->grow(c->store) != 0)
        log_error("store full and cannot grow: changes are refused until space is freed");
    unload(c);
    char err[512] = "";
    int rc = load_all(c, err, sizeof(err));
    if (rc != 0)
        log_error("reloading the fleet from the store after a failed commit: %s", err);
}

int cloud_batch_end(struct cloud *c)
{
    if (!c->txn)
        return -EINVAL;
    int rc = flush_all(c);
    if (rc == 0) {
        rc = c->store->ops->commit(c->txn);
    } else {
        c->store->ops->abort(c->txn);
    }
    c->txn = NULL;
    if (rc != 0) {
        log_error("store commit failed: %s; changes of this batch dropped", strerror(-rc));
        reload(c, rc);
        return rc;
    }
    clear_dirty(c);
    if (c->publish)
        for (const struct cloud_pub *p = c->pubs; p; p = p->next)
            c->publish(c->publish_ud, p->topic, p->payload, p->len, p->qos, p->retain);
    drop_pubs(c);
    return 0;
}

void cloud_batch_abort(struct cloud *c)
{
    if (!c->txn)
        return;
    c->store->ops->abort(c->txn);
    c->txn = NULL;
    reload(c, 0);
}
