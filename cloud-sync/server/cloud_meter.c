/*
 * Metering ingest and queries. A batch is checked record by record against
 * the device's chain cursor (README "Metering batches"): seqs already held
 * are skipped, so a resent batch adds nothing; the next seq must chain on
 * the stored head; a jump forward is a gap; a broken link refuses the rest
 * of the batch. The hourly aggregates and the cursor change in one nested
 * transaction of the batch's commit, then {"upto": S} is queued.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud_meter.h"
#include "log.h"
#include "meter.h"
#include "util.h"

#define MAX_WHOLE 9007199254740992.0 /* 2^53: larger JSON numbers are not exact */

struct group {
    uint32_t hour;
    const char *fn; /* borrowed from the parsed batch */
    struct cloud_meter_agg agg;
};

struct ingest {
    struct cloud *c;
    struct cloud_device *dev;
    struct cloud_meter_cursor cur; /* chain_error unused */
    struct group *groups;
    size_t ngroups, capgroups;
    char err[256];
    bool edited;
};

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static void agg_add(struct cloud_meter_agg *a, const struct cloud_meter_agg *b)
{
    a->invocations = sat_add(a->invocations, b->invocations);
    a->errors = sat_add(a->errors, b->errors);
    a->billed_ms = sat_add(a->billed_ms, b->billed_ms);
    a->ms_kb = sat_add(a->ms_kb, b->ms_kb);
    a->bytes_in = sat_add(a->bytes_in, b->bytes_in);
    a->bytes_out = sat_add(a->bytes_out, b->bytes_out);
}

static bool get_whole(const cJSON *rec, const char *key, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > MAX_WHOLE ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

static bool get_str(const cJSON *rec, const char *key, const char **out, size_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, key);
    if (!cJSON_IsString(v) || strlen(v->valuestring) > max)
        return false;
    *out = v->valuestring;
    return true;
}

/* Fills f, prev and hash from one record; the missing or mistyped key in
 * *bad otherwise. */
static bool parse_record(const cJSON *rec, struct wisp_meter_fields *f, unsigned char prev[32],
                         unsigned char hash[32], const char **bad)
{
    static const char *const whole[] = {
        "seq",          "billed_ms", "duration_us", "mem_peak_bytes",
        "mem_limit_kb", "bytes_in",  "bytes_out"};
    uint64_t *dst[] = {&f->seq,          &f->billed_ms, &f->duration_us, &f->mem_peak_bytes,
                       &f->mem_limit_kb, &f->bytes_in,  &f->bytes_out};
    memset(f, 0, sizeof(*f));
    if (!cJSON_IsObject(rec)) {
        *bad = "(record)";
        return false;
    }
    for (size_t i = 0; i < WISP_ARRAY_LEN(whole); i++) {
        if (!get_whole(rec, whole[i], dst[i])) {
            *bad = whole[i];
            return false;
        }
    }
    const cJSON *cold = cJSON_GetObjectItemCaseSensitive(rec, "cold");
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(rec, "prev");
    const cJSON *hv = cJSON_GetObjectItemCaseSensitive(rec, "hash");
    if (f->seq == 0)
        *bad = "seq";
    else if (!get_str(rec, "fn", &f->fn, CLOUD_NAME_MAX) || !f->fn[0])
        *bad = "fn";
    else if (!get_str(rec, "version", &f->version, CLOUD_NAME_MAX))
        *bad = "version";
    else if (!get_str(rec, "event_id", &f->event_id, 4096))
        *bad = "event_id";
    else if (!get_str(rec, "time", &f->time, 64))
        *bad = "time";
    else if (!get_str(rec, "outcome", &f->outcome, 64))
        *bad = "outcome";
    else if (!cJSON_IsBool(cold))
        *bad = "cold";
    else if (!cJSON_IsString(pv) || !wisp_meter_unhex(pv->valuestring, prev))
        *bad = "prev";
    else if (!cJSON_IsString(hv) || !wisp_meter_unhex(hv->valuestring, hash))
        *bad = "hash";
    else {
        f->cold = cJSON_IsTrue(cold);
        return true;
    }
    return false;
}

static int group_add(struct ingest *in, const struct wisp_meter_fields *f)
{
    uint64_t ns;
    if (!cloud_parse_time(f->time, &ns))
        ns = in->c->now; /* hashed as sent; counted when it arrived */
    uint32_t hour = (uint32_t)(ns / 3600000000000ULL);
    struct cloud_meter_agg a = {
        .invocations = 1,
        .errors = strcmp(f->outcome, "ok") != 0,
        .billed_ms = f->billed_ms,
        .ms_kb = sat_mul(f->billed_ms, f->mem_limit_kb),
        .bytes_in = f->bytes_in,
        .bytes_out = f->bytes_out,
    };
    for (size_t i = 0; i < in->ngroups; i++) {
        if (in->groups[i].hour == hour && strcmp(in->groups[i].fn, f->fn) == 0) {
            agg_add(&in->groups[i].agg, &a);
            return 0;
        }
    }
    if (in->ngroups == in->capgroups) {
        size_t cap = in->capgroups ? in->capgroups * 2 : 8;
        struct group *g = realloc(in->groups, cap * sizeof(*g));
        if (!g)
            return -ENOMEM;
        in->groups = g;
        in->capgroups = cap;
    }
    in->groups[in->ngroups++] = (struct group){hour, f->fn, a};
    return 0;
}

/* Checks and counts one record. false stops the batch (the reason in err). */
static bool take_record(struct ingest *in, const cJSON *rec, size_t index)
{
    struct wisp_meter_fields f;
    unsigned char prev[32], hash[32], calc[32];
    const char *bad = NULL;
    if (!parse_record(rec, &f, prev, hash, &bad)) {
        (void)snprintf(in->err, sizeof(in->err), "records[%zu].%s: missing or mistyped", index,
                       bad);
        return false;
    }
    if (f.seq <= in->cur.head_seq)
        return true; /* already held: a resent record */
    if (f.seq == in->cur.head_seq + 1 && memcmp(prev, in->cur.head_hash, 32) != 0) {
        (void)snprintf(in->err, sizeof(in->err),
                       "record seq %" PRIu64 ": prev does not match the hash of seq %" PRIu64,
                       f.seq, in->cur.head_seq);
        in->edited = true;
        return false;
    }
    if (wisp_meter_chain(prev, &f, calc) != 0 || memcmp(calc, hash, 32) != 0) {
        (void)snprintf(in->err, sizeof(in->err),
                       "record seq %" PRIu64 ": hash does not recompute (record edited)", f.seq);
        in->edited = true;
        return false;
    }
    if (group_add(in, &f) != 0) {
        (void)snprintf(in->err, sizeof(in->err), "record seq %" PRIu64 ": out of memory", f.seq);
        return false;
    }
    if (f.seq > in->cur.head_seq + 1)
        in->cur.gaps += f.seq - in->cur.head_seq - 1;
    in->cur.head_seq = f.seq;
    memcpy(in->cur.head_hash, hash, 32);
    in->cur.records++;
    return true;
}

static size_t meter_key(unsigned char *key, uint32_t hour, const char *dev, const char *fn)
{
    key[0] = (unsigned char)(hour >> 24);
    key[1] = (unsigned char)(hour >> 16);
    key[2] = (unsigned char)(hour >> 8);
    key[3] = (unsigned char)hour;
    size_t dl = strlen(dev), fl = strlen(fn);
    memcpy(key + 4, dev, dl);
    key[4 + dl] = '\0';
    memcpy(key + 5 + dl, fn, fl);
    return 5 + dl + fl;
}

/* Adds the batch's groups to the stored aggregates in a child txn. */
static int store_groups(struct ingest *in)
{
    const struct cloud_store_ops *ops = in->c->store->ops;
    struct cloud_txn *t;
    int rc = ops->begin(in->c->store, in->c->txn, true, &t);
    for (size_t i = 0; i < in->ngroups && rc == 0; i++) {
        unsigned char key[8 + CLOUD_ID_MAX + CLOUD_NAME_MAX];
        size_t kl = meter_key(key, in->groups[i].hour, in->dev->id, in->groups[i].fn);
        struct cloud_meter_agg a = {0};
        const void *v;
        size_t vl;
        rc = ops->get(t, CLOUD_T_METER, key, kl, &v, &vl);
        if (rc == 0 && vl == sizeof(a))
            memcpy(&a, v, sizeof(a));
        else if (rc != -ENOENT && rc != 0)
            break;
        agg_add(&a, &in->groups[i].agg);
        rc = ops->put(t, CLOUD_T_METER, key, kl, &a, sizeof(a));
    }
    if (rc == 0)
        return ops->commit(t);
    ops->abort(t);
    return rc;
}

static void send_ack(struct cloud *c, const struct cloud_device *dev, const char *error)
{
    char topic[128], body[512];
    (void)snprintf(topic, sizeof(topic), "wisp/v1/%s/meter/ack", dev->id);
    cJSON *j = cJSON_CreateObject();
    if (!j || !cJSON_AddNumberToObject(j, "upto", (double)dev->meter.head_seq) ||
        (error && !cJSON_AddStringToObject(j, "error", error)) ||
        !cJSON_PrintPreallocated(j, body, sizeof(body), 0)) {
        cJSON_Delete(j);
        return;
    }
    cJSON_Delete(j);
    (void)cloud_queue_publish(c, topic, body, strlen(body), 1, 0);
}

void cloud_meter_ack_all(struct cloud *c)
{
    for (size_t i = 0; i < c->ndevs; i++)
        if (c->devs[i]->meter.head_seq > 0)
            send_ack(c, c->devs[i], NULL);
}

/* The records of a batch, or NULL with the reason in err. */
static const cJSON *batch_records(const cJSON *j, const char *id, char *err, size_t cap)
{
    if (!cJSON_IsObject(j)) {
        (void)snprintf(err, cap, "payload is not a JSON object");
        return NULL;
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "device");
    if (d && (!cJSON_IsString(d) || strcmp(d->valuestring, id) != 0)) {
        (void)snprintf(err, cap, "key device: does not name the topic's device %s", id);
        return NULL;
    }
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(j, "records");
    if (!cJSON_IsArray(recs)) {
        (void)snprintf(err, cap, "key records: missing or not an array");
        return NULL;
    }
    return recs;
}

static void note_chain_error(struct ingest *in)
{
    char when[40], *msg;
    cloud_format_time(in->c->now, when, sizeof(when));
    size_t n = strlen(when) + strlen(in->err) + 4;
    msg = malloc(n);
    if (!msg)
        return;
    (void)snprintf(msg, n, "%s: %s", when, in->err);
    free(in->dev->meter.chain_error);
    in->dev->meter.chain_error = msg;
    log_error("device %s: metering chain refused: %s", in->dev->id, in->err);
}

void cloud_meter_ingest(struct cloud *c, struct cloud_device *dev, const char *payload, size_t len)
{
    struct ingest in = {.c = c, .dev = dev, .cur = dev->meter};
    cJSON *j = cJSON_ParseWithLength(payload, len);
    const cJSON *recs = batch_records(j, dev->id, in.err, sizeof(in.err));
    size_t index = 0;
    const cJSON *rec;
    cJSON_ArrayForEach(rec, recs)
    {
        if (!take_record(&in, rec, index++))
            break;
    }
    if (in.ngroups) {
        int rc = store_groups(&in);
        if (rc != 0) {
            log_error("device %s: metering batch not stored: %s", dev->id, strerror(-rc));
            (void)snprintf(in.err, sizeof(in.err), "control plane store: %s", strerror(-rc));
            in.cur = dev->meter;
            in.edited = false;
        }
    }
    dev->meter.head_seq = in.cur.head_seq;
    memcpy(dev->meter.head_hash, in.cur.head_hash, 32);
    dev->meter.records = in.cur.records;
    dev->meter.gaps = in.cur.gaps;
    if (in.edited)
        note_chain_error(&in);
    else if (in.err[0])
        log_warn("wisp/v1/%s/meter: batch refused from a record on: %s", dev->id, in.err);
    dev->dirty = true;
    send_ack(c, dev, in.err[0] ? in.err : NULL);
    free(in.groups);
    cJSON_Delete(j);
}

/* ---- queries ---- */

struct query_ctx {
    const struct cloud_meter_query *q;
    uint32_t until_hour;
    struct cloud_meter_row *rows;
    size_t n, cap;
};

static int query_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct query_ctx *qc = ud;
    const unsigned char *k = key;
    if (klen < 6 || vlen != sizeof(struct cloud_meter_agg))
        return 0;
    uint32_t hour = (uint32_t)k[0] << 24 | (uint32_t)k[1] << 16 | (uint32_t)k[2] << 8 | k[3];
    if (qc->q->until && hour >= qc->until_hour)
        return 1;
    const char *dev = (const char *)k + 4;
    const char *nul = memchr(dev, '\0', klen - 4);
    if (!nul)
        return 0;
    size_t dl = (size_t)(nul - dev), fl = klen - 5 - dl;
    const char *fn = nul + 1;
    if (qc->q->device && (strlen(qc->q->device) != dl || memcmp(qc->q->device, dev, dl) != 0))
        return 0;
    if (qc->q->function && (strlen(qc->q->function) != fl || memcmp(qc->q->function, fn, fl) != 0))
        return 0;
    if (qc->n == qc->cap) {
        size_t cap = qc->cap ? qc->cap * 2 : 64;
        struct cloud_meter_row *r = realloc(qc->rows, cap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        qc->rows = r;
        qc->cap = cap;
    }
    struct cloud_meter_row *row = &qc->rows[qc->n];
    row->period_hour = qc->q->per_day ? hour - hour % 24 : hour;
    row->name = qc->q->by_device ? wisp_strndup(dev, dl) : wisp_strndup(fn, fl);
    if (!row->name)
        return -ENOMEM;
    memcpy(&row->agg, val, sizeof(row->agg));
    qc->n++;
    return 0;
}

static int row_cmp(const void *a, const void *b)
{
    const struct cloud_meter_row *x = a, *y = b;
    if (x->period_hour != y->period_hour)
        return x->period_hour < y->period_hour ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Sorts and merges rows of the same period and name. */
static size_t merge_rows(struct cloud_meter_row *rows, size_t n)
{
    if (n == 0)
        return 0;
    qsort(rows, n, sizeof(*rows), row_cmp);
    size_t out = 0;
    for (size_t i = 1; i < n; i++) {
        if (row_cmp(&rows[out], &rows[i]) == 0) {
            agg_add(&rows[out].agg, &rows[i].agg);
            free(rows[i].name);
        } else {
            rows[++out] = rows[i];
        }
    }
    return out + 1;
}

int cloud_meter_query(struct cloud *c, const struct cloud_meter_query *q,
                      struct cloud_meter_row **rows, size_t *n)
{
    struct query_ctx qc = {.q = q};
    qc.until_hour = (uint32_t)((q->until + 3599999999999ULL) / 3600000000000ULL);
    struct cloud_txn *t = c->txn;
    int rc = t ? 0 : c->store->ops->begin(c->store, NULL, false, &t);
    if (rc == 0) {
        uint32_t since_hour = (uint32_t)(q->since / 3600000000000ULL);
        unsigned char from[4] = {(unsigned char)(since_hour >> 24),
                                 (unsigned char)(since_hour >> 16),
                                 (unsigned char)(since_hour >> 8), (unsigned char)since_hour};
        rc = c->store->ops->scan(t, CLOUD_T_METER, from, sizeof(from), query_one, &qc);
        if (t != c->txn)
            c->store->ops->abort(t);
    }
    if (rc != 0) {
        cloud_meter_rows_free(qc.rows, qc.n);
        return rc;
    }
    *n = merge_rows(qc.rows, qc.n);
    *rows = qc.rows;
    return 0;
}

void cloud_meter_rows_free(struct cloud_meter_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(rows[i].name);
    free(rows);
}

static void period_text(uint32_t hour, char *out, size_t cap)
{
    char buf[40];
    wisp_rfc3339((uint64_t)hour * 3600000000000ULL, buf, sizeof(buf));
    /* "2024-05-01T13:00:00.000Z" -> "2024-05-01T13:00:00Z" */
    char *dot = strchr(buf, '.');
    if (dot)
        memcpy(dot, "Z", 2);
    (void)snprintf(out, cap, "%s", buf);
}

static double gb_seconds(const struct cloud_meter_agg *a)
{
    return (double)a->ms_kb / (1000.0 * 1048576.0);
}

cJSON *cloud_meter_rows_json(const struct cloud_meter_query *q, const struct cloud_meter_row *rows,
                             size_t n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "rows");
    if (!arr) {
        cJSON_Delete(o);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char period[40];
        period_text(rows[i].period_hour, period, sizeof(period));
        const struct cloud_meter_agg *a = &rows[i].agg;
        cJSON *r = cJSON_CreateObject();
        if (!r || !cJSON_AddItemToArray(arr, r) || !cJSON_AddStringToObject(r, "period", period) ||
            !cJSON_AddStringToObject(r, q->by_device ? "device" : "function", rows[i].name) ||
            !cJSON_AddNumberToObject(r, "invocations", (double)a->invocations) ||
            !cJSON_AddNumberToObject(r, "errors", (double)a->errors) ||
            !cJSON_AddNumberToObject(r, "billed_ms", (double)a->billed_ms) ||
            !cJSON_AddNumberToObject(r, "gb_seconds", gb_seconds(a)) ||
            !cJSON_AddNumberToObject(r, "bytes_in", (double)a->bytes_in) ||
            !cJSON_AddNumberToObject(r, "bytes_out", (double)a->bytes_out)) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

/* Appends a CSV field, quoted when it needs to be (RFC 4180). */
static size_t csv_field(char *out, size_t cap, const char *s)
{
    if (!strpbrk(s, ",\"\r\n"))
        return (size_t)snprintf(out, cap, "%s", s);
    size_t n = 0;
    out[n++] = '"';
    for (; *s && n + 3 < cap; s++) {
        if (*s == '"')
            out[n++] = '"';
        out[n++] = *s;
    }
    out[n++] = '"';
    out[n] = '\0';
    return n;
}

char *cloud_meter_rows_csv(const struct cloud_meter_query *q, const struct cloud_meter_row *rows,
                           size_t n)
{
    size_t line = 2 * CLOUD_NAME_MAX + 256;
    size_t cap = (n + 1) * line, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    len += (size_t)snprintf(out, cap,
                            "period,%s,invocations,errors,billed_ms,gb_seconds,bytes_in,"
                            "bytes_out\r\n",
                            q->by_device ? "device" : "function");
    for (size_t i = 0; i < n; i++) {
        char period[40], name[2 * CLOUD_NAME_MAX + 8];
        period_text(rows[i].period_hour, period, sizeof(period));
        (void)csv_field(name, sizeof(name), rows[i].name);
        const struct cloud_meter_agg *a = &rows[i].agg;
        len += (size_t)snprintf(out + len, cap - len,
                                "%s,%s,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.9f,%" PRIu64
                                ",%" PRIu64 "\r\n",
                                period, name, a->invocations, a->errors, a->billed_ms,
                                gb_seconds(a), a->bytes_in, a->bytes_out);
        if (len >= cap) {
            free(out);
            return NULL;
        }
    }
    return out;
}
