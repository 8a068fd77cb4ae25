/*
 * wisp_store_apply: one finished invocation's effects, in one nested
 * transaction of the batch (store.h). Arguments and limits are checked
 * before anything is written; the read set is validated against the
 * batch's view (optimistic concurrency: a changed version is -EAGAIN).
 */
#define WISP_LOG_MODULE "store"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "meter.h"
#include "store_internal.h"
#include "util.h"

struct apply_arg {
    const struct wisp_commit *c;
    uint64_t add_out;   /* outbox bytes the messages need */
    uint64_t first_out; /* 0: no message */
    char *err;
    size_t errlen;
};

static void build_key(const char *fn, size_t fl, const char *key, size_t klen, unsigned char *out,
                      size_t *len)
{
    memcpy(out, fn, fl);
    out[fl] = 0;
    memcpy(out + fl + 1, key, klen);
    *len = fl + 1 + klen;
}

static int check_key(const struct wisp_store *s, const char *fn, const char *key, size_t klen,
                     char *err, size_t errlen)
{
    char shown[100];
    if (!key && klen)
        return wisp_errf(err, errlen, -EINVAL, "%s: a state key without bytes", fn);
    if (!klen)
        return wisp_errf(err, errlen, -EFBIG, "%s: key \"\" is empty", fn);
    st_fmt_key(shown, sizeof(shown), key, klen);
    if (klen > s->max_key)
        return wisp_errf(err, errlen, -EFBIG, "%s: key \"%s\" is %zu bytes, limit %zu", fn, shown,
                         klen, s->max_key);
    size_t total = strlen(fn) + 1 + klen;
    if (total > s->key_limit)
        return wisp_errf(err, errlen, -EFBIG,
                         "%s: key \"%s\" is too long for the store (%zu bytes with the function "
                         "name, limit %zu)",
                         fn, shown, total, s->key_limit);
    return 0;
}

static int check_commit(const struct wisp_store *s, const struct wisp_commit *c, uint64_t *add_out,
                        char *err, size_t errlen)
{
    if (!c || !c->fn || !c->fn[0])
        return wisp_errf(err, errlen, -EINVAL, "apply: no function name");
    const char *fn = c->fn;
    if (strlen(fn) + 2 > s->key_limit)
        return wisp_errf(err, errlen, -EINVAL, "%s: the function name is too long", fn);
    if ((c->n_reads && !c->reads) || (c->n_writes && !c->writes) || (c->n_outs && !c->outs))
        return wisp_errf(err, errlen, -EINVAL, "%s: a count without its list", fn);
    for (size_t i = 0; i < c->n_reads; i++) {
        int rc = check_key(s, fn, c->reads[i].key, c->reads[i].klen, err, errlen);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < c->n_writes; i++) {
        const struct wisp_state_write *w = &c->writes[i];
        int rc = check_key(s, fn, w->key, w->klen, err, errlen);
        if (rc)
            return rc;
        if (!w->val)
            continue;
        if (w->vlen > s->max_value) {
            char shown[100];
            st_fmt_key(shown, sizeof(shown), w->key, w->klen);
            return wisp_errf(err, errlen, -EFBIG, "%s: the value of \"%s\" is %zu bytes, limit %zu",
                             fn, shown, w->vlen, s->max_value);
        }
    }
    uint64_t add = 0;
    for (size_t i = 0; i < c->n_outs; i++) {
        const struct wisp_out_msg *m = &c->outs[i];
        if (!m->topic || !m->topic[0] || !m->msg_id || (!m->payload && m->len) ||
            m->len > UINT32_MAX || m->qos < 0 || m->qos > 2)
            return wisp_errf(err, errlen, -EINVAL, "%s: message %zu is malformed", fn, i);
        add += st_out_msg_bytes(m);
    }
    if (c->dlq && st_check_inbox_rec(c->dlq->event))
        return wisp_errf(err, errlen, -EINVAL, "%s: the dead letter has no valid event", fn);
    *add_out = add;
    return 0;
}

static int check_reads(struct wisp_store *s, MDB_txn *txn, struct apply_arg *a)
{
    const struct wisp_commit *c = a->c;
    size_t fl = strlen(c->fn);
    unsigned char kb[ST_KEY_MAX + 1];
    for (size_t i = 0; i < c->n_reads; i++) {
        const struct wisp_state_read *r = &c->reads[i];
        size_t kl = 0;
        uint64_t version = 0;
        build_key(c->fn, fl, r->key, r->klen, kb, &kl);
        MDB_val k = {kl, kb}, v;
        int rc = mdb_get(txn, s->dbi[DB_STATE], &k, &v);
        if (!rc) {
            if (v.mv_size < 8)
                return MDB_CORRUPTED;
            version = st_be64_get(v.mv_data);
        } else if (rc != MDB_NOTFOUND) {
            return st_lm(rc);
        }
        if (version != r->version) {
            char shown[100];
            st_fmt_key(shown, sizeof(shown), r->key, r->klen);
            return wisp_errf(a->err, a->errlen, -EAGAIN,
                             "%s: key \"%s\" changed (version %" PRIu64 ", read as %" PRIu64 ")",
                             c->fn, shown, version, r->version);
        }
    }
    return 0;
}

static uint64_t sub_floor(uint64_t a, uint64_t b)
{
    return b < a ? a - b : 0;
}

static int write_state(struct wisp_store *s, MDB_txn *txn, struct apply_arg *a)
{
    const struct wisp_commit *c = a->c;
    size_t fl = strlen(c->fn);
    unsigned char kb[ST_KEY_MAX + 1], num[8];
    uint64_t before = 0;
    MDB_val fk = {fl, (void *)c->fn}, v;
    int rc = mdb_get(txn, s->dbi[DB_FNMETA], &fk, &v);
    if (!rc && v.mv_size == 8)
        before = st_be64_get(v.mv_data);
    else if (rc && rc != MDB_NOTFOUND)
        return st_lm(rc);
    uint64_t bytes = before;
    for (size_t i = 0; i < c->n_writes; i++) {
        const struct wisp_state_write *w = &c->writes[i];
        size_t kl = 0;
        uint64_t old = 0;
        build_key(c->fn, fl, w->key, w->klen, kb, &kl);
        MDB_val k = {kl, kb};
        rc = mdb_get(txn, s->dbi[DB_STATE], &k, &v);
        if (!rc)
            old = (uint64_t)w->klen + (v.mv_size >= 8 ? v.mv_size - 8 : 0);
        else if (rc != MDB_NOTFOUND)
            return st_lm(rc);
        if (w->val) {
            uint64_t version = s->cur.version + 1;
            st_buf_reset(&s->scratch);
            st_buf_u64(&s->scratch, version);
            st_buf_add(&s->scratch, w->val, w->vlen);
            if (s->scratch.oom)
                return -ENOMEM;
            rc = st_put(s, txn, DB_STATE, kb, kl, s->scratch.p, s->scratch.len, 0);
            if (rc)
                return rc;
            s->cur.version = version;
            bytes = sub_floor(bytes, old) + w->klen + w->vlen;
        } else if (old) {
            rc = st_del(s, txn, DB_STATE, kb, kl);
            if (rc)
                return rc;
            bytes = sub_floor(bytes, old);
        }
    }
    /* A function over its limit (the limit was lowered) may still shrink. */
    if (bytes > s->max_fn && bytes > before)
        return wisp_errf(a->err, a->errlen, -EFBIG,
                         "%s: state would hold %" PRIu64 " bytes, limit %" PRIu64, c->fn, bytes,
                         s->max_fn);
    if (bytes == before)
        return 0;
    if (!bytes)
        return st_del(s, txn, DB_FNMETA, c->fn, fl);
    st_be64_put(num, bytes);
    return st_put(s, txn, DB_FNMETA, c->fn, fl, num, 8, 0);
}

static int write_outs(struct wisp_store *s, MDB_txn *txn, struct apply_arg *a)
{
    const struct wisp_commit *c = a->c;
    unsigned char key[8];
    while (s->cur.outbox_bytes + a->add_out > s->outbox_max) {
        int rc = st_outbox_drop_oldest(s, txn);
        if (rc == -ENOENT) { /* empty: whatever the count said is stale */
            s->cur.outbox_bytes = 0;
            break;
        }
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < c->n_outs; i++) {
        uint64_t seq = s->cur.outbox + 1;
        st_buf_reset(&s->scratch);
        st_out_encode(&s->scratch, &c->outs[i]);
        if (s->scratch.oom)
            return -ENOMEM;
        st_be64_put(key, seq);
        int rc = st_put(s, txn, DB_OUTBOX, key, 8, s->scratch.p, s->scratch.len, MDB_APPEND);
        if (rc)
            return rc;
        s->cur.outbox = seq;
        s->cur.outbox_bytes += st_out_msg_bytes(&c->outs[i]);
        if (!a->first_out)
            a->first_out = seq;
    }
    return 0;
}

/* Each record extends the chain (cloud-sync/common/meter.h), so a removed
 * or edited record shows wherever the records end up. */
static int write_meter(struct wisp_store *s, MDB_txn *txn, const struct wisp_commit *c)
{
    unsigned char key[8], hash[WISP_METER_HASH_LEN];
    const struct wisp_meter_rec *m = c->meter;
    uint64_t seq = s->cur.meter + 1;
    struct wisp_meter_fields f = {
        .seq = seq,
        .fn = m->fn ? m->fn : c->fn,
        .version = m->version,
        .event_id = m->event_id,
        .time = m->time,
        .outcome = m->outcome,
        .billed_ms = m->billed_ms,
        .duration_us = m->duration_us,
        .mem_peak_bytes = m->mem_peak_bytes,
        .mem_limit_kb = m->mem_limit_kb,
        .bytes_in = m->bytes_in,
        .bytes_out = m->bytes_out,
        .cold = m->cold,
    };
    if (wisp_meter_chain(s->cur.meter_hash, &f, hash) != 0)
        return -EIO;
    st_buf_reset(&s->scratch);
    st_meter_encode(&s->scratch, m, c->fn, s->cur.meter_hash, hash);
    if (s->scratch.oom)
        return -ENOMEM;
    st_be64_put(key, seq);
    int rc = st_put(s, txn, DB_METER, key, 8, s->scratch.p, s->scratch.len, MDB_APPEND);
    if (rc)
        return rc;
    s->cur.meter = seq;
    memcpy(s->cur.meter_hash, hash, sizeof(hash));
    if (s->meter_keep)
        return 0; /* deleted by wisp_store_meter_ack only */
    MDB_stat st;
    rc = mdb_stat(txn, s->dbi[DB_METER], &st);
    if (rc)
        return st_lm(rc);
    for (uint64_t n = st.ms_entries; n > s->meter_max; n--) {
        MDB_val k, v;
        rc = st_first_ge(txn, s->dbi[DB_METER], NULL, 0, &k, &v);
        if (rc)
            return rc;
        if (k.mv_size != 8)
            return MDB_CORRUPTED;
        memcpy(key, k.mv_data, 8);
        rc = st_del(s, txn, DB_METER, key, 8);
        if (rc)
            return rc;
    }
    return 0;
}

static int write_dlq(struct wisp_store *s, MDB_txn *txn, const struct wisp_dlq_rec *d)
{
    unsigned char key[8];
    uint64_t seq = s->cur.dlq + 1;
    st_buf_reset(&s->scratch);
    st_dlq_encode(&s->scratch, d);
    if (s->scratch.oom)
        return -ENOMEM;
    st_be64_put(key, seq);
    int rc = st_put(s, txn, DB_DLQ, key, 8, s->scratch.p, s->scratch.len, MDB_APPEND);
    if (!rc)
        s->cur.dlq = seq;
    return rc;
}

static int op_apply(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct apply_arg *a = arg;
    const struct wisp_commit *c = a->c;
    int rc = check_reads(s, txn, a);
    if (rc)
        return rc;
    if (a->add_out && s->cur.outbox_bytes + a->add_out > s->outbox_max &&
        (s->outbox_full == WISP_OUTBOX_REFUSE || a->add_out > s->outbox_max))
        return wisp_errf(a->err, a->errlen, -ENOBUFS,
                         "%s: the outbox is full (%" PRIu64 " of %" PRIu64 " bytes used, %" PRIu64
                         " more needed)",
                         c->fn, s->cur.outbox_bytes, s->outbox_max, a->add_out);
    rc = write_state(s, txn, a);
    if (rc)
        return rc;
    if (c->inbox_id) {
        unsigned char key[8];
        st_be64_put(key, c->inbox_id);
        rc = st_del(s, txn, DB_INBOX, key, 8);
        if (rc && rc != MDB_NOTFOUND)
            return rc;
    }
    if (c->n_outs) {
        rc = write_outs(s, txn, a);
        if (rc)
            return rc;
    }
    if (c->meter) {
        rc = write_meter(s, txn, c);
        if (rc)
            return rc;
    }
    if (c->dlq)
        return write_dlq(s, txn, c->dlq);
    return 0;
}

int wisp_store_apply(struct wisp_store *s, const struct wisp_commit *c, uint64_t *first_out,
                     char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!s)
        return wisp_errf(err, errlen, -EINVAL, "apply: no store");
    if (s->ro)
        return wisp_errf(err, errlen, -EROFS, "%s: opened read-only", s->path);
    struct apply_arg a = {c, 0, 0, err, errlen};
    int rc = check_commit(s, c, &a.add_out, err, errlen);
    if (rc)
        return rc;
    /* A metering record alone (a non-durable event without state) is one
     * append: no nested transaction needed, and it is the hot path. */
    bool meter_only = !c->inbox_id && !c->n_reads && !c->n_writes && !c->n_outs && !c->dlq;
    rc = meter_only ? st_run_op_flat(s, op_apply, &a, err, errlen)
                    : st_run_op(s, op_apply, &a, err, errlen);
    if (rc) {
        if (rc != -EAGAIN && rc != -EFBIG && rc != -ENOBUFS)
            log_debug("%s: apply failed: %s", c->fn, err ? err : strerror(-rc));
        return rc;
    }
    if (first_out && a.first_out)
        *first_out = a.first_out;
    return 0;
}
