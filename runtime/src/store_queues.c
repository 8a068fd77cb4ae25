/*
 * The outbox, metering and dead letters (store.h). Walks copy chunks out
 * of LMDB before calling back (see store_ops.c).
 */
#define WISP_LOG_MODULE "store"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_internal.h"
#include "util.h"

/* ---- outbox ---- */

int st_outbox_drop_oldest(struct wisp_store *s, MDB_txn *txn)
{
    MDB_val k, v;
    unsigned char key[8];
    uint64_t bytes = 0;
    int rc = st_first_ge(txn, s->dbi[DB_OUTBOX], NULL, 0, &k, &v);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    if (rc)
        return rc;
    if (k.mv_size != 8)
        return MDB_CORRUPTED;
    memcpy(key, k.mv_data, 8);
    if (!st_out_rec_bytes(v.mv_data, v.mv_size, &bytes))
        bytes = 0;
    rc = st_del(s, txn, DB_OUTBOX, key, 8);
    if (rc)
        return rc;
    s->cur.outbox_bytes -= bytes < s->cur.outbox_bytes ? bytes : s->cur.outbox_bytes;
    s->cur.dropped++;
    if (s->cur.dropped == 1 || s->cur.dropped % 1000 == 0) /* a sample, not a flood */
        log_warn("%s: outbox full: dropped message %" PRIu64 " (%" PRIu64 " bytes; %" PRIu64
                 " dropped since start)",
                 s->path, st_be64_get(key), bytes, s->cur.dropped);
    return 0;
}

int wisp_store_outbox_next(struct wisp_store *s, uint64_t after, struct wisp_out_view *v,
                           size_t max)
{
    if (!s || (!v && max))
        return -EINVAL;
    if (!max || after == UINT64_MAX)
        return 0;
    if (max > INT32_MAX)
        max = INT32_MAX;
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    unsigned char start[8];
    size_t n = 0, total = 0;
    int rc = st_view_begin(s, true, &txn);
    if (rc)
        return st_errno(rc);
    rc = mdb_cursor_open(txn, s->dbi[DB_OUTBOX], &c);
    if (rc)
        goto out;
    /* Two passes in one read: size the buffer, then copy. */
    for (int pass = 0; pass < 2 && !rc; pass++) {
        MDB_val k = {8, start}, d;
        st_be64_put(start, after + 1);
        n = 0;
        rc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE);
        while (!rc && n < max) {
            if (k.mv_size == 8) {
                if (!pass) {
                    total += d.mv_size + 16;
                } else {
                    size_t at = s->obuf.len;
                    st_buf_add(&s->obuf, k.mv_data, 8);
                    st_buf_add(&s->obuf, &d.mv_size, sizeof(size_t));
                    st_buf_add(&s->obuf, d.mv_data, d.mv_size);
                    v[n].seq = (uint64_t)at; /* offset for now */
                }
                n++;
            }
            rc = mdb_cursor_get(c, &k, &d, MDB_NEXT);
        }
        if (rc == MDB_NOTFOUND)
            rc = 0;
        if (!pass && !rc) {
            st_buf_reset(&s->obuf);
            if (!st_buf_reserve(&s->obuf, total + 1))
                rc = -ENOMEM;
        }
    }
out:
    if (c)
        mdb_cursor_close(c);
    st_view_end(s, txn);
    if (rc)
        return st_errno(rc);
    if (s->obuf.oom)
        return -ENOMEM;
    /* Decode from our copy; skip (and report) what does not decode. */
    size_t good = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = s->obuf.p + (size_t)v[i].seq;
        size_t dlen;
        memcpy(&dlen, p + 8, sizeof(size_t));
        struct wisp_out_view ov = {.seq = st_be64_get(p)};
        if (!st_out_decode(p + 8 + sizeof(size_t), dlen, &ov)) {
            log_error("%s: outbox entry %" PRIu64 " is damaged; skipped", s->path, ov.seq);
            continue;
        }
        v[good++] = ov;
    }
    return (int)good;
}

struct outbox_del_arg {
    uint64_t seq;
};

static int op_outbox_del(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct outbox_del_arg *a = arg;
    unsigned char key[8];
    uint64_t bytes = 0;
    st_be64_put(key, a->seq);
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, s->dbi[DB_OUTBOX], &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0; /* gone already (DROP_OLDEST, or deleted twice) */
    if (rc)
        return st_lm(rc);
    if (!st_out_rec_bytes(v.mv_data, v.mv_size, &bytes))
        bytes = 0;
    rc = st_del(s, txn, DB_OUTBOX, key, 8);
    if (rc)
        return rc;
    s->cur.outbox_bytes -= bytes < s->cur.outbox_bytes ? bytes : s->cur.outbox_bytes;
    return 0;
}

int wisp_store_outbox_del(struct wisp_store *s, uint64_t seq)
{
    if (!s || !seq)
        return -EINVAL;
    struct outbox_del_arg a = {seq};
    return st_run_op_flat(s, op_outbox_del, &a, NULL, 0);
}

/* The counters as committed, read in a read transaction; false when they
 * cannot be read (the caller falls back on what it has in memory). */
static bool committed_counters(struct wisp_store *s, struct st_counters *c)
{
    MDB_txn *txn = NULL;
    if (st_view_begin(s, true, &txn))
        return false;
    int rc = st_counters_load(s, txn, c);
    st_view_end(s, txn);
    return rc == 0;
}

uint64_t wisp_store_outbox_bytes(struct wisp_store *s)
{
    if (!s)
        return 0;
    struct st_counters c = {0};
    if (s->batch || !committed_counters(s, &c))
        return s->cur.outbox_bytes;
    return c.outbox_bytes;
}

size_t wisp_store_outbox_count(struct wisp_store *s)
{
    return st_count_entries(s, DB_OUTBOX);
}

uint64_t wisp_store_outbox_dropped(const struct wisp_store *s)
{
    return s ? s->cur.dropped : 0;
}

/* ---- metering ---- */

size_t wisp_store_meter_count(struct wisp_store *s)
{
    return st_count_entries(s, DB_METER);
}

uint64_t wisp_store_meter_last(struct wisp_store *s)
{
    if (!s)
        return 0;
    struct st_counters c = {0};
    return committed_counters(s, &c) ? c.meter : s->com.meter;
}

struct meter_ack_arg {
    uint64_t upto;
    size_t n;
};

static int op_meter_ack(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct meter_ack_arg *a = arg;
    a->n = 0;
    for (;;) {
        MDB_val k, v;
        int rc = st_first_ge(txn, s->dbi[DB_METER], NULL, 0, &k, &v);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc)
            return rc;
        if (k.mv_size != 8)
            return MDB_CORRUPTED;
        unsigned char key[8];
        memcpy(key, k.mv_data, 8);
        if (st_be64_get(key) > a->upto)
            return 0;
        rc = st_del(s, txn, DB_METER, key, 8);
        if (rc)
            return rc;
        a->n++;
    }
}

/* Runs a deleting operation in the batch; *n (may be NULL) gets what it
 * counted in *done. */
static int run_counted(struct wisp_store *s, st_op_fn op, void *arg, const size_t *done, size_t *n)
{
    if (n)
        *n = 0;
    if (!s)
        return -EINVAL;
    int rc = st_run_op(s, op, arg, NULL, 0);
    if (!rc && n)
        *n = *done;
    return rc;
}

int wisp_store_meter_ack(struct wisp_store *s, uint64_t upto, size_t *n)
{
    struct meter_ack_arg a = {upto, 0};
    return run_counted(s, op_meter_ack, &a, &a.n, n);
}

int wisp_store_meter_foreach(struct wisp_store *s, uint64_t after, size_t limit,
                             int (*cb)(void *ud, uint64_t seq, const char *json, size_t len),
                             void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    if (after == UINT64_MAX)
        return 0;
    struct st_walk w;
    struct st_buf json = {0};
    const unsigned char *k, *v;
    size_t klen = 0, vlen = 0, n = 0;
    int rc = 0;
    st_walk_seq(&w, DB_METER, after + 1);
    while ((!limit || n < limit) && (rc = st_walk_next(s, &w, &k, &klen, &v, &vlen)) == 1) {
        uint64_t seq = klen == 8 ? st_be64_get(k) : 0;
        if (!seq || !st_meter_json(&json, seq, v, vlen)) {
            if (json.oom) {
                rc = -ENOMEM;
                break;
            }
            log_warn("%s: skipping a damaged meter record", s->path);
            continue;
        }
        n++;
        rc = cb(ud, seq, (const char *)json.p, json.len);
        if (rc)
            break;
    }
    st_walk_fini(&w);
    st_buf_free(&json);
    return rc;
}

/* ---- dead letters ---- */

int wisp_store_dlq_foreach(struct wisp_store *s, const char *fn,
                           int (*cb)(void *ud, const struct wisp_dlq_view *v), void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    struct st_walk w;
    const unsigned char *k, *v;
    size_t klen = 0, vlen = 0;
    int rc;
    st_walk_seq(&w, DB_DLQ, 1);
    while ((rc = st_walk_next(s, &w, &k, &klen, &v, &vlen)) == 1) {
        struct wisp_dlq_view dv;
        if (klen != 8 || !st_dlq_decode(v, vlen, &dv)) {
            log_warn("%s: skipping a damaged dead letter", s->path);
            continue;
        }
        if (fn && strcmp(fn, dv.event.fn) != 0)
            continue;
        dv.seq = st_be64_get(k);
        rc = cb(ud, &dv);
        if (rc)
            break;
    }
    st_walk_fini(&w);
    return rc;
}

struct dlq_replay_arg {
    uint64_t seq, inbox_id;
};

static int op_dlq_replay(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct dlq_replay_arg *a = arg;
    unsigned char key[8], ikey[8];
    st_be64_put(key, a->seq);
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, s->dbi[DB_DLQ], &k, &v);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    if (rc)
        return st_lm(rc);
    /* The dead letter starts with the event's inbox record: copy that part
     * (before writing anything, which may move pages) with attempts reset. */
    struct st_rd r = {v.mv_data, v.mv_size, 0, false};
    struct wisp_inbox_rec rec;
    if (!st_inbox_decode(&r, &rec))
        return MDB_CORRUPTED;
    st_buf_reset(&s->scratch);
    st_buf_add(&s->scratch, v.mv_data, r.off);
    if (s->scratch.oom)
        return -ENOMEM;
    st_be32_put(s->scratch.p + ST_INBOX_ATTEMPTS_AT, 0);
    uint64_t id = s->cur.inbox + 1;
    st_be64_put(ikey, id);
    rc = st_put(s, txn, DB_INBOX, ikey, 8, s->scratch.p, s->scratch.len, MDB_APPEND);
    if (rc)
        return rc;
    s->cur.inbox = id;
    a->inbox_id = id;
    return st_del(s, txn, DB_DLQ, key, 8);
}

int wisp_store_dlq_replay(struct wisp_store *s, uint64_t seq, uint64_t *inbox_id)
{
    if (!s || !seq)
        return -EINVAL;
    struct dlq_replay_arg a = {seq, 0};
    int rc = st_run_op(s, op_dlq_replay, &a, NULL, 0);
    if (!rc && inbox_id)
        *inbox_id = a.inbox_id;
    return rc;
}

struct dlq_purge_arg {
    const char *fn;
    size_t n;
};

static int op_dlq_purge(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct dlq_purge_arg *a = arg;
    unsigned char key[8];
    uint64_t next = 1;
    a->n = 0;
    for (;;) {
        MDB_val k, v;
        st_be64_put(key, next);
        int rc = st_first_ge(txn, s->dbi[DB_DLQ], key, 8, &k, &v);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc)
            return rc;
        if (k.mv_size != 8)
            return MDB_CORRUPTED;
        uint64_t seq = st_be64_get(k.mv_data);
        bool match = !a->fn;
        if (!match) {
            struct wisp_dlq_view dv;
            match = st_dlq_decode(v.mv_data, v.mv_size, &dv) && strcmp(dv.event.fn, a->fn) == 0;
        }
        if (match) {
            st_be64_put(key, seq);
            rc = st_del(s, txn, DB_DLQ, key, 8);
            if (rc)
                return rc;
            a->n++;
        }
        if (seq == UINT64_MAX)
            return 0;
        next = seq + 1;
    }
}

int wisp_store_dlq_purge(struct wisp_store *s, const char *fn, size_t *n)
{
    struct dlq_purge_arg a = {fn, 0};
    return run_counted(s, op_dlq_purge, &a, &a.n, n);
}
