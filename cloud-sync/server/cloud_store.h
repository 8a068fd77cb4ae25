/*
 * wisp-cloud's storage behind one interface: named tables of byte keys and
 * byte values, read and written inside transactions (nested ones too, so a
 * message can fail alone inside a group commit). cloud_store_lmdb.c is the
 * implementation; a SQL one would provide the same ops.
 *
 * Every call returns 0 or a negative errno; -ENOENT for a missing key,
 * -ENOSPC when the store is full (the caller aborts, calls grow and retries).
 */
#ifndef WISP_CLOUD_STORE_H
#define WISP_CLOUD_STORE_H

#include <stdbool.h>
#include <stddef.h>

enum cloud_table {
    CLOUD_T_META = 0, /* counters: "rollout_seq", "format" */
    CLOUD_T_DEVICES,  /* device id -> JSON (labels, times, meter cursor, reported) */
    CLOUD_T_DESIRED,  /* device id -> JSON {generation, rollout, functions, health} */
    CLOUD_T_BUNDLES,  /* sha256 hex -> JSON {name, version, size, signed, uploaded} */
    CLOUD_T_ROLLOUTS, /* rollout id -> JSON */
    CLOUD_T_METER,    /* u32 BE hour | device NUL fn -> struct cloud_meter_agg */
    CLOUD_T_COUNT
};

struct cloud_store;
struct cloud_txn;

/* Called for each entry of a scan, in key order; the pointers are valid
 * during the call only. Return 0 to go on, 1 to stop, or a negative errno. */
typedef int (*cloud_store_scan_cb)(void *ud, const void *key, size_t klen, const void *val,
                                   size_t vlen);

struct cloud_store_ops {
    const char *name;
    /* parent may be NULL; a child of a write txn is a write txn. */
    int (*begin)(struct cloud_store *s, struct cloud_txn *parent, bool write,
                 struct cloud_txn **out);
    int (*commit)(struct cloud_txn *t); /* frees t, also on failure */
    void (*abort)(struct cloud_txn *t); /* frees t; NULL is a no-op */
    /* val and vlen borrow the store's bytes until the txn ends or writes. */
    int (*get)(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen,
               const void **val, size_t *vlen);
    int (*put)(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen,
               const void *val, size_t vlen);
    int (*del)(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen);
    /* Entries with key >= from (all when flen is 0), in order. */
    int (*scan)(struct cloud_txn *t, enum cloud_table tbl, const void *from, size_t flen,
                cloud_store_scan_cb cb, void *ud);
    /* Makes room after -ENOSPC; no transaction may be open. */
    int (*grow)(struct cloud_store *s);
    void (*close)(struct cloud_store *s);
};

struct cloud_store {
    const struct cloud_store_ops *ops;
};

/* Opens (creating) the LMDB store in dir/db. Returns 0 or a negative errno
 * with the reason in err; *out is closed with cloud_store_close. */
int cloud_store_lmdb_open(const char *dir, struct cloud_store **out, char *err, size_t errlen);

static inline void cloud_store_close(struct cloud_store *s)
{
    if (s)
        s->ops->close(s);
}

/* A short name for a table, for error messages. */
const char *cloud_table_name(enum cloud_table tbl);

#endif
