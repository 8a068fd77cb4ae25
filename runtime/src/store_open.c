/*
 * Opening (and checking) the store, closing it, and backups (store.h).
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

#define MIB                ((uint64_t)1024 * 1024)
#define MAP_ALIGN          ((uint64_t)64 * 1024)
#define DEFAULT_MAP_INIT   (64 * MIB)
#define DEFAULT_KEY_BYTES  256
#define DEFAULT_VAL_BYTES  ((size_t)64 * 1024)
#define DEFAULT_FN_BYTES   (16 * MIB)
#define DEFAULT_OUTBOX     (64 * MIB)
#define DEFAULT_METER_RECS 1000000
#define MAX_DBS            16

static const char *const db_names[DB_N] = {
    [DB_STATE] = "state", [DB_FNMETA] = "fnmeta", [DB_INBOX] = "inbox",   [DB_OUTBOX] = "outbox",
    [DB_METER] = "meter", [DB_DLQ] = "dlq",       [DB_DEDUPE] = "dedupe", [DB_META] = "meta",
};

static const char *mdb_code_name(int rc)
{
    switch (rc) {
    case MDB_INVALID:
        return "MDB_INVALID";
    case MDB_VERSION_MISMATCH:
        return "MDB_VERSION_MISMATCH";
    case MDB_CORRUPTED:
        return "MDB_CORRUPTED";
    case MDB_PAGE_NOTFOUND:
        return "MDB_PAGE_NOTFOUND";
    case MDB_INCOMPATIBLE:
        return "MDB_INCOMPATIBLE";
    default:
        return NULL;
    }
}

/* ---- open / close ---- */

static int open_error(int rc, const char *path, char *err, size_t errlen)
{
    const char *name = mdb_code_name(rc);
    if (name)
        return wisp_errf(err, errlen, -EINVAL, "%s: not a Wisp store (%s: %s)", path, name,
                         mdb_strerror(rc));
    return wisp_errf(err, errlen, st_errno(rc), "%s: cannot open: %s", path, st_strerror(rc));
}

static uint64_t align_map(uint64_t v)
{
    uint64_t a = v / MAP_ALIGN * MAP_ALIGN;
    return a < MAP_ALIGN ? MAP_ALIGN : a;
}

static void apply_settings(struct wisp_store *s, const struct wisp_store_config *cfg)
{
    uint64_t def_max = sizeof(void *) == 4 ? 512 * MIB : 1024 * MIB;
    uint64_t cap = (uint64_t)(SIZE_MAX / 2);
    s->ro = cfg->read_only;
    s->map_max = align_map(cfg->map_max ? cfg->map_max : def_max);
    if (s->map_max > cap)
        s->map_max = align_map(cap);
    s->mapsize = align_map(cfg->map_initial ? cfg->map_initial : DEFAULT_MAP_INIT);
    if (s->mapsize > s->map_max)
        s->mapsize = s->map_max;
    s->max_key = cfg->max_key_bytes ? cfg->max_key_bytes : DEFAULT_KEY_BYTES;
    s->max_value = cfg->max_value_bytes ? cfg->max_value_bytes : DEFAULT_VAL_BYTES;
    s->max_fn = cfg->max_fn_bytes ? cfg->max_fn_bytes : DEFAULT_FN_BYTES;
    s->outbox_max = cfg->outbox_max_bytes ? cfg->outbox_max_bytes : DEFAULT_OUTBOX;
    s->outbox_full = cfg->outbox_full;
    s->meter_max = cfg->meter_max_records ? cfg->meter_max_records : DEFAULT_METER_RECS;
    s->meter_keep = cfg->meter_keep_unacked;
}

/* The last sequence used in a queue, 0 when it is empty. */
static int last_seq(struct wisp_store *s, MDB_txn *txn, enum st_db db, uint64_t *seq)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    *seq = 0;
    int rc = mdb_cursor_open(txn, s->dbi[db], &c);
    if (rc)
        return st_lm(rc);
    rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return st_lm(rc);
    if (k.mv_size != 8)
        return MDB_CORRUPTED;
    *seq = st_be64_get(k.mv_data);
    return 0;
}

/* Counters can only lag behind the queues after damage or a foreign
 * writer; never hand out a sequence that is in use. */
static int check_counters(struct wisp_store *s, MDB_txn *txn, bool *fixed)
{
    static const enum st_db dbs[] = {DB_INBOX, DB_OUTBOX, DB_METER, DB_DLQ};
    uint64_t *ctr[] = {&s->cur.inbox, &s->cur.outbox, &s->cur.meter, &s->cur.dlq};
    for (size_t i = 0; i < WISP_ARRAY_LEN(dbs); i++) {
        uint64_t last = 0;
        int rc = last_seq(s, txn, dbs[i], &last);
        if (rc)
            return rc;
        if (last > *ctr[i]) {
            log_warn("%s: the %s sequence was behind its entries (%" PRIu64 " < %" PRIu64 ")",
                     s->path, db_names[dbs[i]], *ctr[i], last);
            *ctr[i] = last;
            *fixed = true;
        }
    }
    MDB_stat st;
    int rc = mdb_stat(txn, s->dbi[DB_OUTBOX], &st);
    if (rc)
        return st_lm(rc);
    if (!st.ms_entries && s->cur.outbox_bytes) {
        s->cur.outbox_bytes = 0;
        *fixed = true;
    }
    return 0;
}

static int init_dbs(struct wisp_store *s, char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    MDB_dbi meta;
    bool fresh = false, fixed = false;
    int rc = mdb_txn_begin(s->env, NULL, s->ro ? MDB_RDONLY : 0, &txn);
    if (rc)
        return open_error(rc, s->path, err, errlen);
    rc = mdb_dbi_open(txn, "meta", 0, &meta);
    if (rc == MDB_NOTFOUND) {
        MDB_dbi main_db;
        MDB_stat st;
        rc = mdb_dbi_open(txn, NULL, 0, &main_db);
        if (!rc)
            rc = mdb_stat(txn, main_db, &st);
        if (rc) {
            rc = open_error(rc, s->path, err, errlen);
            goto fail;
        }
        if (st.ms_entries) {
            rc = wisp_errf(err, errlen, -EINVAL,
                           "%s: not a Wisp store (an LMDB environment without Wisp's databases)",
                           s->path);
            goto fail;
        }
        if (s->ro) {
            rc = wisp_errf(err, errlen, -ENOENT, "%s: the store is empty (never written)", s->path);
            goto fail;
        }
        fresh = true;
    } else if (rc == MDB_INCOMPATIBLE) {
        rc = wisp_errf(err, errlen, -EINVAL, "%s: not a Wisp store (MDB_INCOMPATIBLE: %s)", s->path,
                       mdb_strerror(rc));
        goto fail;
    } else if (rc) {
        rc = open_error(rc, s->path, err, errlen);
        goto fail;
    }
    for (int i = 0; i < DB_N; i++) {
        rc = mdb_dbi_open(txn, db_names[i], s->ro ? 0 : MDB_CREATE, &s->dbi[i]);
        if (rc) {
            if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE)
                rc = wisp_errf(err, errlen, -EINVAL,
                               "%s: not a Wisp store (no usable \"%s\" database)", s->path,
                               db_names[i]);
            else
                rc = open_error(rc, s->path, err, errlen);
            goto fail;
        }
    }
    MDB_val fk = {6, "format"}, fv;
    unsigned char fbuf[8];
    if (fresh) {
        st_be64_put(fbuf, ST_FORMAT);
        fv.mv_size = sizeof(fbuf);
        fv.mv_data = fbuf;
        rc = mdb_put(txn, s->dbi[DB_META], &fk, &fv, 0);
        if (rc) {
            rc = open_error(rc, s->path, err, errlen);
            goto fail;
        }
        log_info("%s: new store (format %d)", s->path, ST_FORMAT);
    } else {
        rc = mdb_get(txn, s->dbi[DB_META], &fk, &fv);
        if (rc == MDB_NOTFOUND || (!rc && fv.mv_size != 8)) {
            rc = wisp_errf(err, errlen, -EINVAL, "%s: not a Wisp store (no format version)",
                           s->path);
            goto fail;
        }
        if (rc) {
            rc = open_error(rc, s->path, err, errlen);
            goto fail;
        }
        uint64_t format = st_be64_get(fv.mv_data);
        if (format != ST_FORMAT) {
            rc = wisp_errf(err, errlen, -EPROTO,
                           "%s: store format %" PRIu64 " is not supported (this build reads "
                           "format %d)",
                           s->path, format, ST_FORMAT);
            goto fail;
        }
    }
    rc = st_counters_load(s, txn, &s->cur);
    if (!rc)
        rc = check_counters(s, txn, &fixed);
    if (rc) {
        rc = wisp_errf(err, errlen, -EIO, "%s: cannot read the counters: %s", s->path,
                       st_strerror(rc));
        goto fail;
    }
    if ((fresh || fixed) && !s->ro) {
        unsigned char cbuf[ST_COUNTERS_LEN];
        st_counters_encode(&s->cur, cbuf);
        MDB_val ck = {8, "counters"}, cv = {sizeof(cbuf), cbuf};
        rc = mdb_put(txn, s->dbi[DB_META], &ck, &cv, 0);
        if (rc) {
            rc = open_error(rc, s->path, err, errlen);
            goto fail;
        }
    }
    s->com = s->cur;
    rc = mdb_txn_commit(txn); /* also for read-only: keeps the handles */
    if (rc)
        return open_error(rc, s->path, err, errlen);
    return 0;
fail:
    mdb_txn_abort(txn);
    return rc;
}

static int make_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return wisp_errf(err, errlen, -errno, "%s: cannot create: %s", path, strerror(errno));
    return 0;
}

static int open_env(struct wisp_store *s, const struct wisp_store_config *cfg, char *err,
                    size_t errlen)
{
    struct stat st;
    if (!s->ro) {
        int rc = make_dir(cfg->dir, err, errlen);
        if (!rc)
            rc = make_dir(s->path, err, errlen);
        if (rc)
            return rc;
    }
    if (stat(s->path, &st) != 0)
        return wisp_errf(err, errlen, -errno, "%s: cannot open: %s", s->path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return wisp_errf(err, errlen, -ENOTDIR, "%s: not a directory", s->path);
    int rc = mdb_env_create(&s->env);
    if (rc) {
        s->env = NULL;
        return open_error(rc, s->path, err, errlen);
    }
    unsigned flags = MDB_NOTLS;
    if (s->ro)
        flags |= MDB_RDONLY;
    if (cfg->durability == WISP_DURABILITY_NONE)
        flags |= MDB_NOSYNC;
    rc = mdb_env_set_maxdbs(s->env, MAX_DBS);
    if (!rc)
        rc = mdb_env_open(s->env, s->path, flags, 0600);
    if (rc)
        return open_error(rc, s->path, err, errlen);
    /* The map was sized from the file, or LMDB's default for a new one:
     * never shrink what an earlier run grew it to. */
    uint64_t want = s->mapsize;
    MDB_envinfo info;
    bool fresh = mdb_env_info(s->env, &info) == 0 && info.me_last_txnid == 0;
    st_refresh_mapsize(s);
    if (!s->ro && (fresh || want > s->mapsize)) {
        rc = mdb_env_set_mapsize(s->env, (size_t)want);
        if (rc)
            return open_error(rc, s->path, err, errlen);
        st_refresh_mapsize(s);
    }
    int dead = 0;
    if (mdb_reader_check(s->env, &dead) == 0 && dead)
        log_info("%s: cleared %d stale reader slots", s->path, dead);
    s->key_limit = (size_t)mdb_env_get_maxkeysize(s->env);
    if (s->key_limit > ST_KEY_MAX)
        s->key_limit = ST_KEY_MAX;
    return init_dbs(s, err, errlen);
}

int wisp_store_open(const struct wisp_store_config *cfg, struct wisp_store **out, char *err,
                    size_t errlen)
{
    if (!out)
        return wisp_errf(err, errlen, -EINVAL, "store: no place for the handle");
    *out = NULL;
    if (!cfg || !cfg->dir || !cfg->dir[0])
        return wisp_errf(err, errlen, -EINVAL, "store: no data directory");
    if ((unsigned)cfg->durability > WISP_DURABILITY_NONE ||
        (unsigned)cfg->outbox_full > WISP_OUTBOX_DROP_OLDEST)
        return wisp_errf(err, errlen, -EINVAL, "%s: bad durability or outbox policy", cfg->dir);
    struct wisp_store *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "store: out of memory");
    apply_settings(s, cfg);
    s->path = wisp_path_join(cfg->dir, "store");
    if (!s->path) {
        free(s);
        return wisp_errf(err, errlen, -ENOMEM, "store: out of memory");
    }
    int rc = open_env(s, cfg, err, errlen);
    if (rc) {
        wisp_store_close(s);
        return rc;
    }
    log_debug("%s: opened%s, map %" PRIu64 " of at most %" PRIu64 " bytes", s->path,
              s->ro ? " read-only" : "", s->mapsize, s->map_max);
    *out = s;
    return 0;
}

void wisp_store_close(struct wisp_store *s)
{
    if (!s)
        return;
    if (s->batch) {
        if (s->pending)
            log_warn("%s: closing with %zu uncommitted operations; they are dropped", s->path,
                     s->pending);
        mdb_txn_abort(s->batch);
    }
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    if (s->env)
        mdb_env_close(s->env);
    free(s->log.buf);
    st_buf_free(&s->scratch);
    st_buf_free(&s->vbuf);
    st_buf_free(&s->obuf);
    free(s->path);
    free(s);
}

/* ---- backup ---- */

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char *p = wisp_strndup(path, strlen(path));
    if (!p)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", path);
    int rc = 0;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != '\0')
            continue;
        char c = *q;
        *q = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            rc = wisp_errf(err, errlen, -errno, "%s: cannot create: %s", p, strerror(errno));
            break;
        }
        *q = c;
        if (!c)
            break;
    }
    free(p);
    return rc;
}

/* Checks that env holds a Wisp store of our format. */
static int check_format(MDB_env *env, const char *path, char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    MDB_dbi meta;
    MDB_val k = {6, "format"}, v;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return open_error(rc, path, err, errlen);
    rc = mdb_dbi_open(txn, "meta", 0, &meta);
    if (!rc)
        rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE || (!rc && v.mv_size != 8))
        rc = wisp_errf(err, errlen, -EINVAL, "%s: not a Wisp store", path);
    else if (rc)
        rc = open_error(rc, path, err, errlen);
    else if (st_be64_get(v.mv_data) != ST_FORMAT)
        rc = wisp_errf(err, errlen, -EPROTO, "%s: store format %" PRIu64 " is not supported", path,
                       st_be64_get(v.mv_data));
    mdb_txn_abort(txn);
    return rc;
}

int wisp_store_backup(const char *dir, const char *dest_dir, char *err, size_t errlen)
{
    if (!dir || !dir[0] || !dest_dir || !dest_dir[0])
        return wisp_errf(err, errlen, -EINVAL, "backup: no source or destination");
    char *src = wisp_path_join(dir, "store");
    char *dest_file = wisp_path_join(dest_dir, "data.mdb");
    MDB_env *env = NULL;
    bool copying = false;
    int rc = 0;
    if (!src || !dest_file) {
        rc = wisp_errf(err, errlen, -ENOMEM, "backup: out of memory");
        goto out;
    }
    struct stat st;
    if (lstat(dest_file, &st) == 0) {
        rc = wisp_errf(err, errlen, -EEXIST, "%s: holds a store already", dest_dir);
        goto out;
    }
    rc = mdb_env_create(&env);
    if (rc) {
        env = NULL;
        rc = open_error(rc, src, err, errlen);
        goto out;
    }
    rc = mdb_env_set_maxdbs(env, MAX_DBS);
    if (!rc)
        rc = mdb_env_open(env, src, MDB_RDONLY | MDB_NOTLS, 0600);
    if (rc) {
        rc = open_error(rc, src, err, errlen);
        goto out;
    }
    rc = check_format(env, src, err, errlen);
    if (rc)
        goto out;
    rc = mkdir_p(dest_dir, err, errlen);
    if (rc)
        goto out;
    copying = true;
    rc = mdb_env_copy2(env, dest_dir, MDB_CP_COMPACT);
    if (rc) {
        rc = st_errno(rc);
        wisp_errf(err, errlen, rc, "%s: backup failed: %s", dest_dir, strerror(-rc));
        goto out;
    }
    log_debug("%s: backed up to %s", src, dest_dir);
out:
    if (rc && copying)
        (void)unlink(dest_file);
    if (env)
        mdb_env_close(env);
    free(src);
    free(dest_file);
    return rc;
}
