/*
 * The durable store (store.h): the batch and its replay log, map growth,
 * transactions and commit. Opening, closing and backups are in
 * store_open.c, the operations in store_ops.c and store_apply.c, the
 * record formats in store_codec.c.
 *
 * Every write operation runs through st_run_op: a nested transaction of
 * the batch, so an operation that fails leaves no trace. Each LMDB write
 * is also appended to an in-memory log (own copies of key and value).
 * When LMDB reports MDB_MAP_FULL, the batch is aborted (no transaction of
 * this process stays open), the map doubled up to map_max and the batch
 * rebuilt by replaying the log; then the operation runs again. Counters
 * (state versions, queue sequences, outbox bytes) are kept in memory while
 * a batch is open, loaded from meta when it begins and written back at
 * commit, so a replayed batch hands out the same ids.
 */
#define WISP_LOG_MODULE "store"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "store_internal.h"
#include "util.h"

#define MIB ((uint64_t)1024 * 1024)

/* ---- error codes ---- */

int st_lm(int rc)
{
    return rc > 0 ? -rc : rc;
}

bool st_is_mdb_code(int rc)
{
    return rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE;
}

int st_errno(int rc)
{
    rc = st_lm(rc);
    if (!st_is_mdb_code(rc))
        return rc;
    switch (rc) {
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_KEYEXIST:
        return -EEXIST;
    case MDB_MAP_FULL:
        return -ENOSPC;
    case MDB_TXN_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
        return -E2BIG;
    case MDB_READERS_FULL:
        return -EUSERS;
    case MDB_DBS_FULL:
        return -EMFILE;
    case MDB_BAD_VALSIZE:
        return -EINVAL;
    default:
        return -EIO;
    }
}

const char *st_strerror(int rc)
{
    rc = st_lm(rc);
    return st_is_mdb_code(rc) ? mdb_strerror(rc) : strerror(-rc);
}

/* ---- the replay log ---- */

enum { LOG_PUT = 1, LOG_DEL = 2 };

struct log_hdr {
    uint32_t kind, db, flags, pad;
    uint64_t klen, vlen;
};

static size_t log_entry_size(uint64_t klen, uint64_t vlen)
{
    return sizeof(struct log_hdr) + (((size_t)klen + (size_t)vlen + 7) & ~(size_t)7);
}

static int log_add(struct wisp_store *s, uint32_t kind, enum st_db db, unsigned flags,
                   const void *k, size_t klen, const void *v, size_t vlen)
{
    struct st_log *l = &s->log;
    if (klen > SIZE_MAX / 4 || vlen > SIZE_MAX / 4)
        return -ENOMEM;
    size_t need = log_entry_size(klen, vlen);
    if (need > l->cap - l->len) {
        size_t cap = l->cap ? l->cap : 4096;
        while (cap - l->len < need) {
            if (cap > SIZE_MAX / 2)
                return -ENOMEM;
            cap *= 2;
        }
        unsigned char *nb = realloc(l->buf, cap);
        if (!nb)
            return -ENOMEM;
        l->buf = nb;
        l->cap = cap;
    }
    struct log_hdr h = {kind, (uint32_t)db, flags, 0, klen, vlen};
    unsigned char *p = l->buf + l->len;
    memcpy(p, &h, sizeof(h));
    if (klen)
        memcpy(p + sizeof(h), k, klen);
    if (vlen)
        memcpy(p + sizeof(h) + klen, v, vlen);
    l->len += need;
    l->n++;
    return 0;
}

static void log_clear(struct wisp_store *s)
{
    s->log.len = 0;
    s->log.n = 0;
    /* A big batch should not pin its memory for good. */
    if (s->log.cap > 4 * MIB) {
        free(s->log.buf);
        memset(&s->log, 0, sizeof(s->log));
    }
}

static int log_replay(struct wisp_store *s, MDB_txn *txn)
{
    size_t off = 0;
    for (size_t i = 0; i < s->log.n; i++) {
        struct log_hdr h;
        memcpy(&h, s->log.buf + off, sizeof(h));
        unsigned char *k = s->log.buf + off + sizeof(h);
        MDB_val key = {(size_t)h.klen, k}, val = {(size_t)h.vlen, k + h.klen};
        int rc = h.kind == LOG_PUT ? mdb_put(txn, s->dbi[h.db], &key, &val, h.flags)
                                   : mdb_del(txn, s->dbi[h.db], &key, NULL);
        if (rc)
            return st_lm(rc);
        off += log_entry_size(h.klen, h.vlen);
    }
    return 0;
}

int st_put(struct wisp_store *s, MDB_txn *txn, enum st_db db, const void *k, size_t klen,
           const void *v, size_t vlen, unsigned flags)
{
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    int rc = mdb_put(txn, s->dbi[db], &key, &val, flags);
    if (rc)
        return st_lm(rc);
    return log_add(s, LOG_PUT, db, flags, k, klen, v, vlen);
}

int st_del(struct wisp_store *s, MDB_txn *txn, enum st_db db, const void *k, size_t klen)
{
    MDB_val key = {klen, (void *)k};
    int rc = mdb_del(txn, s->dbi[db], &key, NULL);
    if (rc)
        return st_lm(rc);
    return log_add(s, LOG_DEL, db, 0, k, klen, NULL, 0);
}

int st_first_ge(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen, MDB_val *key, MDB_val *val)
{
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc)
        return st_lm(rc);
    key->mv_size = klen;
    key->mv_data = (void *)k;
    rc = mdb_cursor_get(c, key, val, k && klen ? MDB_SET_RANGE : MDB_FIRST);
    mdb_cursor_close(c);
    return st_lm(rc);
}

/* ---- counters ---- */

void st_counters_encode(const struct st_counters *c, unsigned char out[ST_COUNTERS_LEN])
{
    st_be64_put(out, c->version);
    st_be64_put(out + 8, c->inbox);
    st_be64_put(out + 16, c->outbox);
    st_be64_put(out + 24, c->meter);
    st_be64_put(out + 32, c->dlq);
    st_be64_put(out + 40, c->outbox_bytes);
    memcpy(out + 48, c->meter_hash, sizeof(c->meter_hash));
}

/* Fills the persisted fields of c (dropped is left alone). */
int st_counters_load(struct wisp_store *s, MDB_txn *txn, struct st_counters *c)
{
    MDB_val key = {8, "counters"}, val;
    int rc = mdb_get(txn, s->dbi[DB_META], &key, &val);
    if (rc == MDB_NOTFOUND) {
        c->version = c->inbox = c->outbox = c->meter = c->dlq = c->outbox_bytes = 0;
        memset(c->meter_hash, 0, sizeof(c->meter_hash));
        return 0;
    }
    if (rc)
        return st_lm(rc);
    if (val.mv_size != ST_COUNTERS_LEN && val.mv_size != ST_COUNTERS_LEN_V1)
        return MDB_CORRUPTED;
    const unsigned char *p = val.mv_data;
    c->version = st_be64_get(p);
    c->inbox = st_be64_get(p + 8);
    c->outbox = st_be64_get(p + 16);
    c->meter = st_be64_get(p + 24);
    c->dlq = st_be64_get(p + 32);
    c->outbox_bytes = st_be64_get(p + 40);
    if (val.mv_size == ST_COUNTERS_LEN)
        memcpy(c->meter_hash, p + 48, sizeof(c->meter_hash));
    else
        memset(c->meter_hash, 0, sizeof(c->meter_hash));
    return 0;
}

static bool counters_differ(const struct st_counters *a, const struct st_counters *b)
{
    return a->version != b->version || a->inbox != b->inbox || a->outbox != b->outbox ||
           a->meter != b->meter || a->dlq != b->dlq || a->outbox_bytes != b->outbox_bytes ||
           memcmp(a->meter_hash, b->meter_hash, sizeof(a->meter_hash)) != 0;
}

/* ---- transactions ---- */

void st_refresh_mapsize(struct wisp_store *s)
{
    MDB_envinfo info;
    if (mdb_env_info(s->env, &info) == 0)
        s->mapsize = info.me_mapsize;
}

/* Another process grew the map beyond ours: adopt its size. */
static int adopt_mapsize(struct wisp_store *s)
{
    if (s->batch)
        return MDB_MAP_RESIZED;
    int rc = mdb_env_set_mapsize(s->env, 0);
    if (rc)
        return st_lm(rc);
    st_refresh_mapsize(s);
    return 0;
}

static int rd_begin(struct wisp_store *s, MDB_txn **out)
{
    int rc;
    if (s->rtxn) {
        rc = mdb_txn_renew(s->rtxn);
        if (rc == MDB_MAP_RESIZED && adopt_mapsize(s) == 0)
            rc = mdb_txn_renew(s->rtxn);
        if (!rc) {
            *out = s->rtxn;
            return 0;
        }
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
        return st_lm(rc);
    }
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc == MDB_MAP_RESIZED && adopt_mapsize(s) == 0)
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc) {
        s->rtxn = NULL;
        return st_lm(rc);
    }
    *out = s->rtxn;
    return 0;
}

static void lose_batch(struct wisp_store *s, int rc, const char *why)
{
    log_error("%s: the uncommitted batch (%zu operations) is lost: %s: %s", s->path, s->pending,
              why, st_strerror(rc));
    if (s->batch)
        mdb_txn_abort(s->batch);
    s->batch = NULL;
    log_clear(s);
    s->cur = s->com;
    s->pending = 0;
    s->lost = st_errno(rc);
}

/* Doubles the map (up to map_max); the batch, if open, is aborted first.
 * At map_max: -ENOSPC and the batch is left as it was. */
static int grow(struct wisp_store *s, char *err, size_t errlen)
{
    if (s->mapsize >= s->map_max) {
        log_error("%s: the store is full: the map is at map_max (%" PRIu64
                  " bytes); the operation is refused",
                  s->path, s->map_max);
        return wisp_errf(err, errlen, -ENOSPC,
                         "%s: the store is full (map_max of %" PRIu64 " bytes reached)", s->path,
                         s->map_max);
    }
    uint64_t next = s->mapsize * 2;
    if (next > s->map_max || next < s->mapsize)
        next = s->map_max;
    if (s->batch) {
        mdb_txn_abort(s->batch);
        s->batch = NULL;
    }
    int rc = mdb_env_set_mapsize(s->env, (size_t)next);
    if (rc) {
        log_error("%s: cannot grow the map to %" PRIu64 " bytes: %s", s->path, next,
                  mdb_strerror(rc));
        return st_errno(rc);
    }
    uint64_t old = s->mapsize;
    st_refresh_mapsize(s);
    log_info("%s: map grown from %" PRIu64 " to %" PRIu64 " bytes", s->path, old, s->mapsize);
    return 0;
}

/* Makes sure the batch is open: begins it, rebuilding it from the log after
 * the map grew. */
static int batch_ensure(struct wisp_store *s)
{
    if (s->batch)
        return 0;
    for (int resized = 0;;) {
        MDB_txn *txn = NULL;
        int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
        if (rc == MDB_MAP_RESIZED && !resized++ && adopt_mapsize(s) == 0)
            continue;
        if (rc) {
            log_error("%s: cannot begin a write transaction: %s", s->path, mdb_strerror(rc));
            if (s->log.n)
                lose_batch(s, st_lm(rc), "cannot rebuild it");
            return st_lm(rc);
        }
        if (!s->log.n) {
            rc = st_counters_load(s, txn, &s->com);
            if (rc) {
                mdb_txn_abort(txn);
                log_error("%s: cannot read the counters: %s", s->path, st_strerror(rc));
                return rc;
            }
            s->com.dropped = s->cur.dropped;
            s->cur = s->com;
            s->batch_txnid = mdb_txn_id(txn);
            s->batch = txn;
            return 0;
        }
        /* Another process committed while the batch was out: its ids and
         * sequences may collide with ours, so the batch cannot be rebuilt. */
        if (mdb_txn_id(txn) != s->batch_txnid) {
            mdb_txn_abort(txn);
            lose_batch(s, -EBUSY, "another process wrote to the store while it was rebuilt");
            return -EBUSY;
        }
        rc = log_replay(s, txn);
        if (!rc) {
            s->batch = txn;
            return 0;
        }
        mdb_txn_abort(txn);
        if (rc == MDB_MAP_FULL && grow(s, NULL, 0) == 0)
            continue;
        lose_batch(s, rc, "replaying it failed");
        return rc;
    }
}

/* flat: op runs in the batch itself, without a nested transaction (which
 * costs LMDB a 2 MiB dirty-page list per call). Only for ops that return
 * an errno only before their first write: an LMDB error from a write then
 * loses the batch (the transaction may be unusable). */
static int run_op(struct wisp_store *s, st_op_fn op, void *arg, bool flat, char *err, size_t errlen)
{
    if (s->ro)
        return wisp_errf(err, errlen, -EROFS, "%s: opened read-only", s->path);
    if (s->lost)
        return wisp_errf(err, errlen, s->lost,
                         "%s: the batch was lost (%s); commit to report it and start over", s->path,
                         strerror(-s->lost));
    for (;;) {
        int rc = batch_ensure(s);
        if (rc) {
            rc = st_errno(rc);
            return wisp_errf(err, errlen, rc, "%s: %s", s->path, strerror(-rc));
        }
        size_t mark_len = s->log.len, mark_n = s->log.n;
        struct st_counters snap = s->cur;
        MDB_txn *child = NULL;
        if (flat) {
            rc = op(s, s->batch, arg);
            if (rc && rc != MDB_MAP_FULL && st_is_mdb_code(rc)) {
                lose_batch(s, rc, "a write failed");
                rc = st_errno(rc);
                return wisp_errf(err, errlen, rc, "%s: %s", s->path, strerror(-rc));
            }
        } else if (!(rc = mdb_txn_begin(s->env, s->batch, 0, &child))) {
            rc = op(s, child, arg);
            if (!rc)
                rc = st_lm(mdb_txn_commit(child));
            else
                mdb_txn_abort(child);
        } else {
            rc = st_lm(rc);
        }
        if (!rc) {
            if (s->log.n > mark_n)
                s->pending++;
            return 0;
        }
        s->log.len = mark_len;
        s->log.n = mark_n;
        s->cur = snap;
        if (rc != MDB_MAP_FULL) {
            if (st_is_mdb_code(rc)) {
                log_error("%s: %s", s->path, mdb_strerror(rc));
                rc = st_errno(rc);
                return wisp_errf(err, errlen, rc, "%s: %s", s->path, mdb_strerror(rc));
            }
            return rc;
        }
        rc = grow(s, err, errlen);
        if (rc)
            return rc;
    }
}

int st_run_op(struct wisp_store *s, st_op_fn op, void *arg, char *err, size_t errlen)
{
    return run_op(s, op, arg, false, err, errlen);
}

int st_run_op_flat(struct wisp_store *s, st_op_fn op, void *arg, char *err, size_t errlen)
{
    return run_op(s, op, arg, true, err, errlen);
}

int st_view_begin(struct wisp_store *s, bool committed, MDB_txn **txn)
{
    if (!committed) {
        if (!s->batch && s->log.n && !s->lost) {
            int rc = batch_ensure(s);
            if (rc)
                return rc;
        }
        if (s->batch) {
            *txn = s->batch;
            return 0;
        }
    }
    return rd_begin(s, txn);
}

void st_view_end(struct wisp_store *s, MDB_txn *txn)
{
    if (txn && txn == s->rtxn)
        mdb_txn_reset(txn);
}

/* ---- the batch ---- */

static int op_flush_counters(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    (void)arg;
    if (!counters_differ(&s->cur, &s->com))
        return 0;
    unsigned char buf[ST_COUNTERS_LEN];
    st_counters_encode(&s->cur, buf);
    return st_put(s, txn, DB_META, "counters", 8, buf, sizeof(buf), 0);
}

int wisp_store_commit(struct wisp_store *s)
{
    if (!s)
        return -EINVAL;
    if (s->ro)
        return 0;
    if (s->lost) {
        int rc = s->lost;
        s->lost = 0;
        return rc;
    }
    if (!s->pending && !s->log.n) {
        if (s->batch) { /* begun, but nothing written */
            mdb_txn_abort(s->batch);
            s->batch = NULL;
        }
        return 0;
    }
    for (;;) {
        int rc = st_run_op(s, op_flush_counters, NULL, NULL, 0);
        if (rc) {
            if (s->lost) { /* already reported */
                rc = s->lost;
                s->lost = 0;
                return rc;
            }
            lose_batch(s, rc, "cannot write the counters");
            s->lost = 0;
            return st_errno(rc);
        }
        rc = mdb_txn_commit(s->batch);
        s->batch = NULL;
        if (!rc) {
            s->com = s->cur;
            log_clear(s);
            s->pending = 0;
            return 0;
        }
        if (rc == MDB_MAP_FULL && grow(s, NULL, 0) == 0)
            continue;
        lose_batch(s, st_lm(rc), "the commit failed");
        s->lost = 0;
        return st_errno(rc);
    }
}

bool wisp_store_failed(const struct wisp_store *s)
{
    return s && s->lost != 0;
}

size_t wisp_store_pending(const struct wisp_store *s)
{
    return s ? s->pending : 0;
}

void wisp_store_maintain(struct wisp_store *s)
{
    if (!s)
        return;
    int dead = 0;
    int rc = mdb_reader_check(s->env, &dead);
    if (rc)
        log_warn("%s: reader check failed: %s", s->path, mdb_strerror(rc));
    else if (dead)
        log_info("%s: cleared %d stale reader slots", s->path, dead);
}
