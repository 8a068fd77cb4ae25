/*
 * The LMDB implementation of cloud_store.h: one environment in DIR/db with
 * a named database per table. Commits sync once (MDB_NOMETASYNC: a crash
 * may undo the last transaction, never corrupt); callers group many
 * messages into one transaction, so the sync cost is paid per batch.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lmdb.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud_store.h"
#include "log.h"
#include "util.h"

#if UINTPTR_MAX > 0xffffffffu
#define LMDB_MAP_INITIAL ((size_t)1 << 30) /* 1 GiB of address space, not of disk */
#define LMDB_MAP_MAX     ((size_t)64 << 30)
#else
#define LMDB_MAP_INITIAL ((size_t)256 << 20)
#define LMDB_MAP_MAX     ((size_t)1 << 30)
#endif

static const char *const table_names[CLOUD_T_COUNT] = {
    "meta", "devices", "desired", "bundles", "rollouts", "meter",
};

struct lmdb_store {
    struct cloud_store base;
    MDB_env *env;
    MDB_dbi dbi[CLOUD_T_COUNT];
    size_t map_size;
};

struct cloud_txn {
    struct lmdb_store *s;
    MDB_txn *txn;
};

const char *cloud_table_name(enum cloud_table tbl)
{
    return (unsigned)tbl < CLOUD_T_COUNT ? table_names[tbl] : "?";
}

/* LMDB's codes as negative errnos. */
static int map_rc(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return -ENOSPC;
    case MDB_BAD_VALSIZE:
        return -EINVAL;
    case MDB_INVALID:
    case MDB_CORRUPTED:
    case MDB_VERSION_MISMATCH:
        return -EBADMSG;
    default:
        return rc > 0 ? -rc : -EIO;
    }
}

static int lm_begin(struct cloud_store *base, struct cloud_txn *parent, bool write,
                    struct cloud_txn **out)
{
    struct lmdb_store *s = (struct lmdb_store *)base;
    struct cloud_txn *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->s = s;
    int rc = mdb_txn_begin(s->env, parent ? parent->txn : NULL, write ? 0 : MDB_RDONLY, &t->txn);
    if (rc != 0) {
        free(t);
        return map_rc(rc);
    }
    *out = t;
    return 0;
}

static int lm_commit(struct cloud_txn *t)
{
    int rc = mdb_txn_commit(t->txn);
    free(t);
    return map_rc(rc);
}

static void lm_abort(struct cloud_txn *t)
{
    if (!t)
        return;
    mdb_txn_abort(t->txn);
    free(t);
}

static int lm_get(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen,
                  const void **val, size_t *vlen)
{
    MDB_val k = {klen, (void *)key}, v;
    int rc = mdb_get(t->txn, t->s->dbi[tbl], &k, &v);
    if (rc != 0)
        return map_rc(rc);
    *val = v.mv_data;
    *vlen = v.mv_size;
    return 0;
}

static int lm_put(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen,
                  const void *val, size_t vlen)
{
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    return map_rc(mdb_put(t->txn, t->s->dbi[tbl], &k, &v, 0));
}

static int lm_del(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen)
{
    MDB_val k = {klen, (void *)key};
    return map_rc(mdb_del(t->txn, t->s->dbi[tbl], &k, NULL));
}

static int lm_scan(struct cloud_txn *t, enum cloud_table tbl, const void *from, size_t flen,
                   cloud_store_scan_cb cb, void *ud)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[tbl], &cur);
    if (rc != 0)
        return map_rc(rc);
    MDB_val k = {flen, (void *)from}, v;
    rc = mdb_cursor_get(cur, &k, &v, flen ? MDB_SET_RANGE : MDB_FIRST);
    int out = 0;
    while (rc == 0) {
        out = cb(ud, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        if (out != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (out < 0)
        return out;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : map_rc(rc);
}

static int lm_grow(struct cloud_store *base)
{
    struct lmdb_store *s = (struct lmdb_store *)base;
    if (s->map_size >= LMDB_MAP_MAX)
        return -ENOSPC;
    size_t next = s->map_size * 2;
    int rc = mdb_env_set_mapsize(s->env, next);
    if (rc != 0)
        return map_rc(rc);
    log_warn("store full: map size raised from %zu to %zu MiB", s->map_size >> 20, next >> 20);
    s->map_size = next;
    return 0;
}

static void lm_close(struct cloud_store *base)
{
    struct lmdb_store *s = (struct lmdb_store *)base;
    if (s->env)
        mdb_env_close(s->env);
    free(s);
}

static const struct cloud_store_ops lmdb_ops = {
    .name = "lmdb",
    .begin = lm_begin,
    .commit = lm_commit,
    .abort = lm_abort,
    .get = lm_get,
    .put = lm_put,
    .del = lm_del,
    .scan = lm_scan,
    .grow = lm_grow,
    .close = lm_close,
};

/* Opens every table, creating the missing ones, in one transaction. */
static int open_tables(struct lmdb_store *s, const char *path, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return wisp_errf(err, errlen, map_rc(rc), "%s: cannot begin a transaction: %s", path,
                         mdb_strerror(rc));
    for (int i = 0; i < CLOUD_T_COUNT; i++) {
        rc = mdb_dbi_open(txn, table_names[i], MDB_CREATE, &s->dbi[i]);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return wisp_errf(err, errlen, map_rc(rc), "%s: cannot open table %s: %s", path,
                             table_names[i], mdb_strerror(rc));
        }
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        return wisp_errf(err, errlen, map_rc(rc), "%s: cannot create the tables: %s", path,
                         mdb_strerror(rc));
    return 0;
}

int cloud_store_lmdb_open(const char *dir, struct cloud_store **out, char *err, size_t errlen)
{
    char *path = wisp_path_join(dir, "db");
    struct lmdb_store *s = calloc(1, sizeof(*s));
    int rc;
    if (!path || !s) {
        rc = wisp_errf(err, errlen, -ENOMEM, "%s: out of memory opening the store", dir);
        goto fail;
    }
    s->base.ops = &lmdb_ops;
    s->map_size = LMDB_MAP_INITIAL;
    if (mkdir(path, 0700) != 0 && errno != EEXIST) {
        rc = wisp_errf(err, errlen, -errno, "%s: cannot create the store folder: %s", path,
                       strerror(errno));
        goto fail;
    }
    int mrc = mdb_env_create(&s->env);
    if (mrc == 0)
        mrc = mdb_env_set_maxdbs(s->env, CLOUD_T_COUNT + 2);
    if (mrc == 0)
        mrc = mdb_env_set_mapsize(s->env, s->map_size);
    if (mrc == 0)
        mrc = mdb_env_open(s->env, path, MDB_NOMETASYNC | MDB_NOTLS, 0600);
    if (mrc != 0) {
        rc = wisp_errf(err, errlen, map_rc(mrc), "%s: cannot open the LMDB store: %s", path,
                       mdb_strerror(mrc));
        goto fail;
    }
    int dead = 0;
    (void)mdb_reader_check(s->env, &dead);
    rc = open_tables(s, path, err, errlen);
    if (rc != 0)
        goto fail;
    free(path);
    *out = &s->base;
    return 0;
fail:
    if (s && s->env)
        mdb_env_close(s->env);
    free(s);
    free(path);
    return rc;
}
