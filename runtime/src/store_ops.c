/*
 * Chunked walks, the inbox, dedupe and state reads (store.h).
 *
 * Walks that call back into the caller (the foreach functions, state_keys)
 * copy a chunk of entries out of LMDB, end the read and only then run the
 * callbacks: no transaction of ours is live while caller code runs, so a
 * callback may use the store (even grow the map) and a slow one does not
 * keep a reader that makes the file grow.
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

#define WALK_MAX_ENTRIES 64
#define WALK_MAX_BYTES   ((size_t)1024 * 1024)

/* ---- chunked walks ---- */

void st_walk_init(struct st_walk *w, enum st_db db, bool committed, const void *start, size_t slen,
                  const void *pre, size_t plen)
{
    memset(w, 0, sizeof(*w));
    w->db = db;
    w->committed = committed;
    w->pre = pre;
    w->plen = plen;
    if (slen > ST_KEY_MAX)
        slen = ST_KEY_MAX;
    if (slen)
        memcpy(w->last, start, slen);
    w->lastlen = slen;
}

static int walk_load(struct wisp_store *s, struct st_walk *w)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    size_t n = 0;
    st_buf_reset(&w->chunk);
    w->off = 0;
    int rc = st_view_begin(s, w->committed, &txn);
    if (rc)
        return rc;
    rc = st_lm(mdb_cursor_open(txn, s->dbi[w->db], &c));
    if (rc)
        goto out;
    MDB_val k = {w->lastlen, w->last}, v;
    rc = mdb_cursor_get(c, &k, &v, w->lastlen ? MDB_SET_RANGE : MDB_FIRST);
    if (!rc && w->after_last && k.mv_size == w->lastlen && !memcmp(k.mv_data, w->last, w->lastlen))
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    while (!rc) {
        if (k.mv_size < w->plen || (w->plen && memcmp(k.mv_data, w->pre, w->plen) != 0)) {
            w->end = true;
            break;
        }
        size_t need = 2 * sizeof(size_t) + k.mv_size + v.mv_size;
        if (n >= WALK_MAX_ENTRIES || (n && w->chunk.len + need > WALK_MAX_BYTES))
            break;
        if (!st_buf_reserve(&w->chunk, need)) {
            rc = -ENOMEM;
            break;
        }
        st_buf_add(&w->chunk, &k.mv_size, sizeof(size_t));
        st_buf_add(&w->chunk, &v.mv_size, sizeof(size_t));
        st_buf_add(&w->chunk, k.mv_data, k.mv_size);
        st_buf_add(&w->chunk, v.mv_data, v.mv_size);
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) {
        w->end = true;
        rc = 0;
    }
    rc = st_lm(rc);
out:
    if (c)
        mdb_cursor_close(c);
    st_view_end(s, txn);
    return rc;
}

int st_walk_next(struct wisp_store *s, struct st_walk *w, const unsigned char **k, size_t *klen,
                 const unsigned char **v, size_t *vlen)
{
    if (w->off >= w->chunk.len) {
        if (w->end)
            return 0;
        int rc = walk_load(s, w);
        if (rc)
            return st_errno(rc);
        if (!w->chunk.len)
            return 0;
    }
    const unsigned char *p = w->chunk.p + w->off;
    memcpy(klen, p, sizeof(size_t));
    memcpy(vlen, p + sizeof(size_t), sizeof(size_t));
    *k = p + 2 * sizeof(size_t);
    *v = *k + *klen;
    w->off += 2 * sizeof(size_t) + *klen + *vlen;
    if (*klen <= ST_KEY_MAX) {
        memcpy(w->last, *k, *klen);
        w->lastlen = *klen;
        w->after_last = true;
    }
    return 1;
}

void st_walk_fini(struct st_walk *w)
{
    st_buf_free(&w->chunk);
}

/* A sequence key walk from seq `first`. */
void st_walk_seq(struct st_walk *w, enum st_db db, uint64_t first)
{
    unsigned char start[8];
    st_be64_put(start, first);
    st_walk_init(w, db, true, start, sizeof(start), NULL, 0);
}

size_t st_count_entries(struct wisp_store *s, enum st_db db)
{
    MDB_txn *txn = NULL;
    MDB_stat st;
    if (!s || st_view_begin(s, false, &txn))
        return 0;
    int rc = mdb_stat(txn, s->dbi[db], &st);
    st_view_end(s, txn);
    return rc ? 0 : st.ms_entries;
}

/* ---- inbox ---- */

int st_check_inbox_rec(const struct wisp_inbox_rec *rec)
{
    if (!rec || !rec->fn || !rec->fn[0] || !rec->event_id || !rec->time || !rec->type)
        return -EINVAL;
    if ((!rec->payload && rec->payload_len) || rec->payload_len > UINT32_MAX)
        return -EINVAL;
    if (rec->qos < 0 || rec->qos > 2)
        return -EINVAL;
    return 0;
}

int st_inbox_add(struct wisp_store *s, MDB_txn *txn, const struct wisp_inbox_rec *rec,
                 uint32_t attempts, uint64_t *id)
{
    unsigned char key[8];
    st_buf_reset(&s->scratch);
    st_inbox_encode(&s->scratch, rec, attempts);
    if (s->scratch.oom)
        return -ENOMEM;
    uint64_t next = s->cur.inbox + 1;
    st_be64_put(key, next);
    int rc = st_put(s, txn, DB_INBOX, key, 8, s->scratch.p, s->scratch.len, MDB_APPEND);
    if (rc)
        return rc;
    s->cur.inbox = next;
    *id = next;
    return 0;
}

struct inbox_put_arg {
    const struct wisp_inbox_rec *rec;
    uint64_t id;
};

static int op_inbox_put(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct inbox_put_arg *a = arg;
    return st_inbox_add(s, txn, a->rec, a->rec->attempts, &a->id);
}

int wisp_store_inbox_put(struct wisp_store *s, const struct wisp_inbox_rec *rec, uint64_t *id)
{
    if (!s || st_check_inbox_rec(rec))
        return -EINVAL;
    struct inbox_put_arg a = {rec, 0};
    int rc = st_run_op_flat(s, op_inbox_put, &a, NULL, 0); /* one append */
    if (!rc && id)
        *id = a.id;
    return rc;
}

struct attempts_arg {
    uint64_t id;
    uint32_t attempts;
};

static int op_set_attempts(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct attempts_arg *a = arg;
    unsigned char key[8];
    st_be64_put(key, a->id);
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, s->dbi[DB_INBOX], &k, &v);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    if (rc)
        return st_lm(rc);
    if (v.mv_size < ST_INBOX_ATTEMPTS_AT + 4)
        return MDB_CORRUPTED;
    st_buf_reset(&s->scratch);
    st_buf_add(&s->scratch, v.mv_data, v.mv_size);
    if (s->scratch.oom)
        return -ENOMEM;
    st_be32_put(s->scratch.p + ST_INBOX_ATTEMPTS_AT, a->attempts);
    return st_put(s, txn, DB_INBOX, key, 8, s->scratch.p, s->scratch.len, 0);
}

int wisp_store_inbox_set_attempts(struct wisp_store *s, uint64_t id, uint32_t attempts)
{
    if (!s || !id)
        return -EINVAL;
    struct attempts_arg a = {id, attempts};
    return st_run_op_flat(s, op_set_attempts, &a, NULL, 0);
}

int wisp_store_inbox_foreach(struct wisp_store *s,
                             int (*cb)(void *ud, uint64_t id, const struct wisp_inbox_rec *rec),
                             void *ud)
{
    if (!s || !cb)
        return -EINVAL;
    struct st_walk w;
    const unsigned char *k, *v;
    size_t klen = 0, vlen = 0;
    int rc;
    st_walk_seq(&w, DB_INBOX, 1);
    while ((rc = st_walk_next(s, &w, &k, &klen, &v, &vlen)) == 1) {
        struct wisp_inbox_rec rec;
        struct st_rd r = {v, vlen, 0, false};
        if (klen != 8 || !st_inbox_decode(&r, &rec)) {
            log_warn("%s: skipping a damaged inbox entry", s->path);
            continue;
        }
        rc = cb(ud, st_be64_get(k), &rec);
        if (rc)
            break;
    }
    st_walk_fini(&w);
    return rc;
}

size_t wisp_store_inbox_count(struct wisp_store *s)
{
    return st_count_entries(s, DB_INBOX);
}

/* ---- dedupe ---- */

struct dedupe_arg {
    uint16_t pid;
    uint64_t hash;
    bool dup;
    int seen;
};

static int op_dedupe(struct wisp_store *s, MDB_txn *txn, void *arg)
{
    struct dedupe_arg *a = arg;
    unsigned char key[2] = {(unsigned char)(a->pid >> 8), (unsigned char)(a->pid & 0xff)};
    unsigned char val[8];
    if (a->dup) {
        MDB_val k = {2, key}, v;
        int rc = mdb_get(txn, s->dbi[DB_DEDUPE], &k, &v);
        if (rc && rc != MDB_NOTFOUND)
            return st_lm(rc);
        if (!rc && v.mv_size == 8 && st_be64_get(v.mv_data) == a->hash) {
            a->seen = 1;
            return 0;
        }
    }
    st_be64_put(val, a->hash);
    return st_put(s, txn, DB_DEDUPE, key, 2, val, 8, 0);
}

int wisp_store_dedupe(struct wisp_store *s, uint16_t pid, uint64_t hash, bool dup)
{
    if (!s)
        return -EINVAL;
    struct dedupe_arg a = {pid, hash, dup, 0};
    int rc = st_run_op_flat(s, op_dedupe, &a, NULL, 0);
    return rc ? rc : a.seen;
}

/* ---- state ---- */

/* fn + NUL + key into out (ST_KEY_MAX + 1 bytes); 0 or -EFBIG. */
static int state_key(const struct wisp_store *s, const char *fn, const char *key, size_t klen,
                     unsigned char *out, size_t *len)
{
    size_t fl = strlen(fn);
    if (!klen || klen > s->max_key || fl + 1 + klen > s->key_limit)
        return -EFBIG;
    memcpy(out, fn, fl);
    out[fl] = 0;
    memcpy(out + fl + 1, key, klen);
    *len = fl + 1 + klen;
    return 0;
}

int wisp_store_state_get(struct wisp_store *s, const char *fn, const char *key, size_t klen,
                         const char **val, size_t *vlen, uint64_t *version)
{
    if (version)
        *version = 0;
    if (val)
        *val = NULL;
    if (vlen)
        *vlen = 0;
    if (!s || !fn || !fn[0] || (!key && klen) || !val || !vlen || !version)
        return -EINVAL;
    unsigned char kb[ST_KEY_MAX + 1];
    size_t kl = 0;
    int rc = state_key(s, fn, key, klen, kb, &kl);
    if (rc)
        return rc;
    MDB_txn *txn = NULL;
    rc = st_view_begin(s, false, &txn);
    if (rc)
        return st_errno(rc);
    MDB_val k = {kl, kb}, v;
    rc = mdb_get(txn, s->dbi[DB_STATE], &k, &v);
    if (!rc && v.mv_size < 8)
        rc = MDB_CORRUPTED;
    if (!rc) {
        st_buf_reset(&s->vbuf);
        st_buf_add(&s->vbuf, (const unsigned char *)v.mv_data + 8, v.mv_size - 8);
        st_buf_u8(&s->vbuf, 0);
        if (s->vbuf.oom) {
            rc = -ENOMEM;
        } else {
            *val = (const char *)s->vbuf.p;
            *vlen = v.mv_size - 8;
            *version = st_be64_get(v.mv_data);
        }
    }
    st_view_end(s, txn);
    return st_errno(rc);
}

int wisp_store_state_keys(
    struct wisp_store *s, const char *fn, const char *prefix, size_t plen, size_t limit,
    int (*cb)(void *ud, const char *key, size_t klen, const char *val, size_t vlen), void *ud)
{
    if (!s || !fn || !fn[0] || (!prefix && plen) || !cb)
        return -EINVAL;
    size_t fl = strlen(fn);
    if (fl + 1 + plen > s->key_limit)
        return 0; /* no key can be that long */
    unsigned char pre[ST_KEY_MAX + 1];
    memcpy(pre, fn, fl);
    pre[fl] = 0;
    if (plen)
        memcpy(pre + fl + 1, prefix, plen);
    size_t pl = fl + 1 + plen, n = 0;
    struct st_walk w;
    const unsigned char *k, *v;
    size_t klen = 0, vlen = 0;
    int rc = 0;
    st_walk_init(&w, DB_STATE, false, pre, pl, pre, pl);
    while ((!limit || n < limit) && (rc = st_walk_next(s, &w, &k, &klen, &v, &vlen)) == 1) {
        if (vlen < 8)
            continue;
        n++;
        rc = cb(ud, (const char *)k + fl + 1, klen - fl - 1, (const char *)v + 8, vlen - 8);
        if (rc)
            break;
    }
    st_walk_fini(&w);
    return rc;
}

uint64_t wisp_store_state_bytes(struct wisp_store *s, const char *fn)
{
    MDB_txn *txn = NULL;
    uint64_t bytes = 0;
    if (!s || !fn || !fn[0] || strlen(fn) > s->key_limit)
        return 0;
    if (st_view_begin(s, false, &txn))
        return 0;
    MDB_val k = {strlen(fn), (void *)fn}, v;
    if (mdb_get(txn, s->dbi[DB_FNMETA], &k, &v) == 0 && v.mv_size == 8)
        bytes = st_be64_get(v.mv_data);
    st_view_end(s, txn);
    return bytes;
}
