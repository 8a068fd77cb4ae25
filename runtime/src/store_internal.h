/*
 * Private to store*.c: the store's handle, the batch machinery and the
 * record codecs.
 *
 * store.c        batch, replay log, map growth, transactions, commit
 * store_open.c   open (and the checks), close, backup
 * store_ops.c    chunked walks, inbox, dedupe, state reads
 * store_queues.c outbox, metering, dead letters
 * store_apply.c  wisp_store_apply
 * store_codec.c  record formats, the meter JSON, byte helpers
 *
 * Internal return codes: 0, a negative errno, or an LMDB code (MDB_*, all
 * below -30000 and so never mistaken for an errno). Public functions turn
 * LMDB codes into errnos with st_errno.
 */
#ifndef WISP_STORE_INTERNAL_H
#define WISP_STORE_INTERNAL_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define ST_FORMAT  1   /* meta "format": bump on any incompatible change */
#define ST_KEY_MAX 511 /* LMDB's default key limit; state keys are fn + NUL + key */

enum st_db { DB_STATE, DB_FNMETA, DB_INBOX, DB_OUTBOX, DB_METER, DB_DLQ, DB_DEDUPE, DB_META, DB_N };

/* The persisted counters (meta "counters", 6 x u64 big-endian) and the
 * DROP_OLDEST count, which only lives in memory. */
struct st_counters {
    uint64_t version;                   /* last state version handed out */
    uint64_t inbox, outbox, meter, dlq; /* last sequence of each queue */
    uint64_t outbox_bytes;              /* topic + payload + msg id bytes in the outbox */
    unsigned char meter_hash[32];       /* chain hash of the last metering record */
    uint64_t dropped;                   /* not persisted */
};
/* Stores written before the metering chain have the first 48 bytes only. */
#define ST_COUNTERS_LEN    80
#define ST_COUNTERS_LEN_V1 48

/* A growable byte buffer; `oom` sticks once an allocation failed. */
struct st_buf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
};

/* A bounds-checked reader; `bad` sticks once a read ran past the end. */
struct st_rd {
    const unsigned char *p;
    size_t n, off;
    bool bad;
};

/* Every LMDB write of the batch since the last commit, with copies of the
 * keys and values, so the batch can be rebuilt after the map grew. */
struct st_log {
    unsigned char *buf;
    size_t len, cap, n;
};

struct wisp_store {
    MDB_env *env;
    MDB_dbi dbi[DB_N];
    char *path; /* dir/store, for messages */
    bool ro;
    uint64_t mapsize, map_max;
    size_t max_key, max_value;
    uint64_t max_fn, outbox_max, meter_max;
    bool meter_keep; /* records wait for wisp_store_meter_ack */
    enum wisp_outbox_full outbox_full;
    size_t key_limit; /* LMDB's maximum key size, at most ST_KEY_MAX */

    MDB_txn *batch;         /* the write transaction, NULL between batches */
    size_t batch_txnid;     /* its id, to notice another writer while rebuilding */
    MDB_txn *rtxn;          /* the reusable read transaction, reset between calls */
    struct st_counters cur; /* as the batch sees them */
    struct st_counters com; /* as committed when the batch began */
    struct st_log log;
    size_t pending; /* operations that wrote something since the last commit */
    int lost;       /* the batch was lost (negative errno), reported by commit */

    struct st_buf scratch; /* record encoding inside operations */
    struct st_buf vbuf;    /* state_get results */
    struct st_buf obuf;    /* outbox_next results */
};

typedef int (*st_op_fn)(struct wisp_store *s, MDB_txn *txn, void *arg);

/* ---- store.c ---- */
bool st_is_mdb_code(int rc);
int st_lm(int rc);
int st_errno(int rc);
const char *st_strerror(int rc);
/* Runs op in a nested transaction of the batch (opened when needed): its
 * writes land completely or not at all; MDB_MAP_FULL grows the map and
 * retries. err (may be NULL) gets a message for -ENOSPC. */
int st_run_op(struct wisp_store *s, st_op_fn op, void *arg, char *err, size_t errlen);
/* The same in the batch itself, without the nested transaction (LMDB
 * allocates a 2 MiB dirty-page list for each): for ops that return an
 * errno only before their first write. An LMDB error other than
 * MDB_MAP_FULL loses the batch. */
int st_run_op_flat(struct wisp_store *s, st_op_fn op, void *arg, char *err, size_t errlen);
/* The batch when one is open and !committed, else the read transaction. */
int st_view_begin(struct wisp_store *s, bool committed, MDB_txn **txn);
void st_view_end(struct wisp_store *s, MDB_txn *txn);
/* Logged writes (only inside an operation). */
int st_put(struct wisp_store *s, MDB_txn *txn, enum st_db db, const void *k, size_t klen,
           const void *v, size_t vlen, unsigned flags);
int st_del(struct wisp_store *s, MDB_txn *txn, enum st_db db, const void *k, size_t klen);
/* The first entry with key >= k (k NULL: the first entry). */
int st_first_ge(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen, MDB_val *key, MDB_val *val);
/* s->mapsize from LMDB. */
void st_refresh_mapsize(struct wisp_store *s);
int st_counters_load(struct wisp_store *s, MDB_txn *txn, struct st_counters *c);
void st_counters_encode(const struct st_counters *c, unsigned char out[ST_COUNTERS_LEN]);

/* ---- store_ops.c ---- */
/* A walk over a database that copies chunks of entries out of LMDB and
 * ends the read before handing them out, so callbacks run with no
 * transaction of ours open. */
struct st_walk {
    enum st_db db;
    bool committed;           /* committed data only, else the batch's view */
    const unsigned char *pre; /* keys must start with it */
    size_t plen;
    unsigned char last[ST_KEY_MAX + 1]; /* where the next chunk starts */
    size_t lastlen;
    bool after_last;     /* the next chunk starts after `last`, not at it */
    struct st_buf chunk; /* [size_t klen][size_t vlen][key][value]... */
    size_t off;
    bool end;
};
void st_walk_init(struct st_walk *w, enum st_db db, bool committed, const void *start, size_t slen,
                  const void *pre, size_t plen);
/* From sequence `first` of a FIFO database, committed data only. */
void st_walk_seq(struct st_walk *w, enum st_db db, uint64_t first);
/* The next entry: 1 (pointers valid until the next call), 0 at the end,
 * or a negative errno. */
int st_walk_next(struct wisp_store *s, struct st_walk *w, const unsigned char **k, size_t *klen,
                 const unsigned char **v, size_t *vlen);
void st_walk_fini(struct st_walk *w);
/* Entries of db in the batch's view. */
size_t st_count_entries(struct wisp_store *s, enum st_db db);
/* Adds an encoded inbox record (attempts given) inside an operation. */
int st_inbox_add(struct wisp_store *s, MDB_txn *txn, const struct wisp_inbox_rec *rec,
                 uint32_t attempts, uint64_t *id);
int st_check_inbox_rec(const struct wisp_inbox_rec *rec);
/* ---- store_queues.c ---- */
/* Deletes the oldest outbox entry, subtracting its bytes; -ENOENT when empty. */
int st_outbox_drop_oldest(struct wisp_store *s, MDB_txn *txn);

/* ---- store_codec.c ---- */
void st_be64_put(unsigned char *b, uint64_t v);
uint64_t st_be64_get(const unsigned char *b);
void st_be32_put(unsigned char *b, uint32_t v);
uint32_t st_be32_get(const unsigned char *b);

void st_buf_reset(struct st_buf *b);
void st_buf_free(struct st_buf *b);
bool st_buf_reserve(struct st_buf *b, size_t more);
void st_buf_add(struct st_buf *b, const void *d, size_t n);
void st_buf_u8(struct st_buf *b, unsigned v);
void st_buf_u32(struct st_buf *b, uint32_t v);
void st_buf_u64(struct st_buf *b, uint64_t v);
void st_buf_str(struct st_buf *b, const char *s);  /* [u32 len][bytes][NUL], NULL = "" */
void st_buf_cstr(struct st_buf *b, const char *s); /* raw bytes, for text */

unsigned st_rd_u8(struct st_rd *r);
uint32_t st_rd_u32(struct st_rd *r);
const char *st_rd_str(struct st_rd *r, size_t *len);
const void *st_rd_blob(struct st_rd *r, size_t *len);

/* Inbox record: [ver][qos][retain][flags][u32 attempts] fn event_id time
 * type subject payload. Attempts sit at ST_INBOX_ATTEMPTS_AT. */
#define ST_INBOX_ATTEMPTS_AT 4
void st_inbox_encode(struct st_buf *b, const struct wisp_inbox_rec *rec, uint32_t attempts);
bool st_inbox_decode(struct st_rd *r, struct wisp_inbox_rec *rec);
/* Dead letter: an inbox record, then error and last_time. */
void st_dlq_encode(struct st_buf *b, const struct wisp_dlq_rec *d);
bool st_dlq_decode(const void *p, size_t n, struct wisp_dlq_view *v);
/* Outbox entry: [ver][qos][retain][0] topic msg_id payload. */
void st_out_encode(struct st_buf *b, const struct wisp_out_msg *m);
bool st_out_decode(const void *p, size_t n, struct wisp_out_view *v);
uint64_t st_out_msg_bytes(const struct wisp_out_msg *m);
/* The bytes an encoded entry counts for; false when it is not one. */
bool st_out_rec_bytes(const void *p, size_t n, uint64_t *bytes);
/* Meter record: [ver][flags] 5 varints, 5 varint-length strings. */
/* A metering record with its chain fields (seq, prev, hash). */
void st_meter_encode(struct st_buf *b, const struct wisp_meter_rec *m, const char *fn,
                     const unsigned char prev[32], const unsigned char hash[32]);
/* The record as one JSON object (replacing b's contents). */
bool st_meter_json(struct st_buf *b, uint64_t seq, const void *p, size_t n);
/* A key for messages: printable, \xNN otherwise, cut with "..." */
void st_fmt_key(char *out, size_t cap, const char *k, size_t klen);

#endif
