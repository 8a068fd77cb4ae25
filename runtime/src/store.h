/*
 * The durable store: one LMDB environment in <data>/store, written only by
 * the supervisor's loop thread (tools like `wisp state` open it read-only,
 * `wisp dlq` and `wisp backup` from another process are fine: LMDB locks
 * across processes).
 *
 * Everything an accepted event changes is written through one "batch":
 * a single LMDB write transaction opened on the first write after a commit
 * and committed by wisp_store_commit. The caller decides when to commit
 * (durability modes, group commit); until then nothing is visible to other
 * processes and nothing may be acknowledged or sent. Each wisp_store_apply
 * runs in a nested transaction inside the batch, so one invocation's
 * effects land completely or not at all.
 *
 * MDB_MAP_FULL is handled inside: the batch is aborted, the map grown
 * (doubled, up to map_max) and every operation of the batch replayed from
 * an in-memory log, so callers never see it unless map_max is reached
 * (then -ENOSPC and a clear error; the batch is kept out of the store).
 *
 * Databases: state (per-function namespace; value = [u64 version][JSON]),
 * fnmeta (bytes used per function), inbox, outbox, meter, dlq, dedupe
 * (MQTT packet ids of the durable session), meta (persisted sequence
 * counters and a format version). FIFO keys are 8-byte big-endian.
 */
#ifndef WISP_STORE_H
#define WISP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "effects.h" /* struct wisp_state_read, wisp_state_write */

struct wisp_store;

enum wisp_durability {
    WISP_DURABILITY_SYNC = 0,  /* fsync at every commit */
    WISP_DURABILITY_BATCH = 1, /* same commits, the caller just commits less often */
    WISP_DURABILITY_NONE = 2,  /* MDB_NOSYNC: a power cut can lose or corrupt recent commits */
};

enum wisp_outbox_full {
    WISP_OUTBOX_REFUSE = 0,      /* apply fails with -ENOBUFS; the event waits */
    WISP_OUTBOX_DROP_OLDEST = 1, /* oldest entries are deleted (counted) to make room */
};

struct wisp_store_config {
    const char *dir;      /* the data dir; the environment lives in dir/store */
    uint64_t map_initial; /* bytes, 0 = default (64 MiB) */
    uint64_t map_max;     /* bytes, 0 = default (1 GiB on 64-bit, 512 MiB on 32-bit) */
    enum wisp_durability durability;
    bool read_only;            /* tools: MDB_RDONLY, no writes allowed */
    size_t max_key_bytes;      /* 0 = 256 */
    size_t max_value_bytes;    /* 0 = 64 KiB */
    uint64_t max_fn_bytes;     /* state per function, keys + values; 0 = 16 MiB */
    uint64_t outbox_max_bytes; /* 0 = 64 MiB */
    enum wisp_outbox_full outbox_full;
    uint64_t meter_max_records; /* oldest trimmed past this; 0 = 1,000,000 */
    bool meter_keep_unacked;    /* cloud sync: records are deleted only by
                                   wisp_store_meter_ack, never trimmed */
};

/* Opens (creating dir/store if needed) and checks the store: a corrupt,
 * foreign or unreadable environment is an error naming the path and what
 * is wrong, never a silent fresh start. Runs mdb_reader_check. */
int wisp_store_open(const struct wisp_store_config *cfg, struct wisp_store **out, char *err,
                    size_t errlen);
/* Aborts an uncommitted batch (its effects are lost, as in a crash) and
 * closes. NULL ok. */
void wisp_store_close(struct wisp_store *s);

/* ---- the batch ---- */

/* Commits the batch (no-op when nothing was written). 0, or a negative
 * errno with the reason logged; on failure the batch is gone and the
 * caller must not acknowledge or send what it contained. */
int wisp_store_commit(struct wisp_store *s);
/* True when the batch was lost (a write or a rebuild failed): every write
 * fails until wisp_store_commit reports it. */
bool wisp_store_failed(const struct wisp_store *s);
/* Operations written since the last commit (0: nothing to commit). */
size_t wisp_store_pending(const struct wisp_store *s);
/* Periodic care: mdb_reader_check. */
void wisp_store_maintain(struct wisp_store *s);

/* ---- inbox: accepted events not yet finished ---- */

struct wisp_inbox_rec {
    const char *fn;       /* function name */
    const char *event_id; /* stable across restarts */
    const char *time;     /* RFC 3339 of acceptance */
    const char *type;     /* CloudEvents type, e.g. wisp.mqtt.message */
    const char *subject;  /* MQTT topic or NULL */
    const void *payload;
    size_t payload_len;
    int qos, retain;
    uint32_t attempts; /* failed attempts so far */
};
/* Adds an event to the batch; *id gets its inbox id (> 0). */
int wisp_store_inbox_put(struct wisp_store *s, const struct wisp_inbox_rec *rec, uint64_t *id);
/* Records a failed attempt (kept across restarts). */
int wisp_store_inbox_set_attempts(struct wisp_store *s, uint64_t id, uint32_t attempts);
/* Calls cb for every inbox entry, oldest first, reading committed data
 * (startup recovery). Pointers in rec are valid during the call only.
 * A non-zero return from cb stops the walk and is returned. */
int wisp_store_inbox_foreach(struct wisp_store *s,
                             int (*cb)(void *ud, uint64_t id, const struct wisp_inbox_rec *rec),
                             void *ud);
size_t wisp_store_inbox_count(struct wisp_store *s);

/* ---- dedupe of the durable MQTT session's redeliveries ---- */

/* For a message that arrived with packet id `pid`: when dup is set and the
 * last message recorded for pid had the same hash, returns 1 (a
 * redelivery of something already accepted). Otherwise records (pid, hash)
 * in the batch and returns 0. Negative errno on failure. */
int wisp_store_dedupe(struct wisp_store *s, uint16_t pid, uint64_t hash, bool dup);

/* ---- state ---- */

/* Reads fn's key from the batch when one is open (so reads see every
 * applied but uncommitted result), else from committed data. Returns 0
 * with *val and *vlen (JSON text, valid until the next store call) and
 * *version (> 0), or -ENOENT (*version = 0), or another negative errno. */
int wisp_store_state_get(struct wisp_store *s, const char *fn, const char *key, size_t klen,
                         const char **val, size_t *vlen, uint64_t *version);
/* Calls cb for each key of fn starting with prefix, in key order, at most
 * limit keys (0 = no limit), from the same view as state_get. */
int wisp_store_state_keys(
    struct wisp_store *s, const char *fn, const char *prefix, size_t plen, size_t limit,
    int (*cb)(void *ud, const char *key, size_t klen, const char *val, size_t vlen), void *ud);
/* Bytes of state fn holds (keys + values). */
uint64_t wisp_store_state_bytes(struct wisp_store *s, const char *fn);

/* ---- applying one finished invocation ---- */

struct wisp_out_msg {
    const char *topic;
    const void *payload;
    size_t len;
    int qos, retain;
    const char *msg_id; /* stable id: "<event id>/<index>" */
};

struct wisp_meter_rec {
    const char *fn, *version, *event_id;
    const char *time;   /* RFC 3339 start */
    uint64_t billed_ms; /* duration rounded up to 1 ms */
    uint64_t duration_us;
    uint64_t mem_peak_bytes;
    uint64_t bytes_in, bytes_out;
    const char *outcome; /* ok, error, timeout, memory, crash */
    bool cold;
    uint64_t mem_limit_kb; /* the function's limits.memory_kb (GB-seconds) */
};

struct wisp_dlq_rec {
    const struct wisp_inbox_rec *event;
    const char *error;
    const char *last_time; /* RFC 3339 of the last attempt */
};

struct wisp_commit {
    const char *fn;
    uint64_t inbox_id; /* removed from the inbox when > 0 */
    const struct wisp_state_read *reads;
    size_t n_reads;
    const struct wisp_state_write *writes; /* applied in order */
    size_t n_writes;
    const struct wisp_out_msg *outs;
    size_t n_outs;
    const struct wisp_meter_rec *meter; /* NULL: none */
    const struct wisp_dlq_rec *dlq;     /* NULL: none */
};

/* Applies one invocation's effects to the batch, all or nothing:
 *  -EAGAIN  a read's version no longer matches (another invocation wrote
 *           the key since): nothing applied, run the event again;
 *  -EFBIG   a key, value or the function's state would exceed its limit
 *           (err says which);
 *  -ENOBUFS the outbox is full and the policy is REFUSE;
 *  -ENOSPC  the map cannot grow any further;
 *  0        applied; *first_out gets the outbox sequence of its first
 *           message (unchanged when there are none). */
int wisp_store_apply(struct wisp_store *s, const struct wisp_commit *c, uint64_t *first_out,
                     char *err, size_t errlen);

/* ---- outbox ---- */

struct wisp_out_view {
    uint64_t seq;
    const char *topic; /* NUL-terminated */
    const void *payload;
    size_t len;
    int qos, retain;
    const char *msg_id; /* NUL-terminated */
};
/* Up to max committed entries with seq > after, oldest first, into v[];
 * pointers stay valid until the next call of this function or close.
 * Returns how many, or a negative errno. */
int wisp_store_outbox_next(struct wisp_store *s, uint64_t after, struct wisp_out_view *v,
                           size_t max);
/* Deletes a delivered entry (in the batch). */
int wisp_store_outbox_del(struct wisp_store *s, uint64_t seq);
uint64_t wisp_store_outbox_bytes(struct wisp_store *s);
size_t wisp_store_outbox_count(struct wisp_store *s);
/* Entries deleted by the DROP_OLDEST policy since open. */
uint64_t wisp_store_outbox_dropped(const struct wisp_store *s);

/* ---- metering ---- */

size_t wisp_store_meter_count(struct wisp_store *s);
/* The last metering sequence handed out (0: none yet), as committed. */
uint64_t wisp_store_meter_last(struct wisp_store *s);
/* Deletes the records with seq <= upto (in the batch): the control plane
 * acknowledged them. *n (may be NULL) gets how many were deleted. */
int wisp_store_meter_ack(struct wisp_store *s, uint64_t upto, size_t *n);
/* Calls cb for each record with seq > after, oldest first, at most limit
 * (0 = all); the record as one JSON object, committed data only, with the
 * fields of the fleet protocol's metering batches (cloud-sync/README.md):
 * seq, fn, version, event_id, time, billed_ms, duration_us,
 * mem_peak_bytes, mem_limit_kb, bytes_in, bytes_out, outcome, cold, prev,
 * hash (records written before the chain existed have no prev/hash). */
int wisp_store_meter_foreach(struct wisp_store *s, uint64_t after, size_t limit,
                             int (*cb)(void *ud, uint64_t seq, const char *json, size_t len),
                             void *ud);

/* ---- dead letters ---- */

struct wisp_dlq_view {
    uint64_t seq;
    struct wisp_inbox_rec event;
    const char *error;
    const char *last_time;
};
int wisp_store_dlq_foreach(struct wisp_store *s, const char *fn /* NULL = all */,
                           int (*cb)(void *ud, const struct wisp_dlq_view *v), void *ud);
/* Moves a dead letter back to the inbox with attempts reset (*inbox_id),
 * in the batch. -ENOENT if there is no such entry. */
int wisp_store_dlq_replay(struct wisp_store *s, uint64_t seq, uint64_t *inbox_id);
/* Deletes dead letters (fn NULL = all); *n gets how many. */
int wisp_store_dlq_purge(struct wisp_store *s, const char *fn, size_t *n);

/* ---- tools ---- */

/* A compacting copy of the live store at dir into dest_dir (created; must
 * not hold a store already), safe while wispd runs. */
int wisp_store_backup(const char *dir, const char *dest_dir, char *err, size_t errlen);

#endif
