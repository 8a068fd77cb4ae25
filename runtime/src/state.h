/*
 * The executor's side of ctx.state: one invocation's reads and writes.
 *
 * Reads go to the supervisor (which answers from the store, including
 * results applied but not yet committed) the first time a key is touched
 * and are then repeatable; writes stay here. When the handler succeeds,
 * the reads (key + version seen) and the final writes travel back in the
 * RESULT frame and the supervisor applies them in one transaction, after
 * checking that no read key changed meanwhile (if one did, the event runs
 * again). A failed invocation's writes are simply dropped.
 *
 * Values are JSON text. Engines turn them into their own values.
 */
#ifndef WISP_STATE_H
#define WISP_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc.h"

/* Limits checked where the handler can see the error; the store checks
 * them again. */
#define WISP_STATE_MAX_KEY     256u
#define WISP_STATE_MAX_VALUE   ((size_t)64 * 1024)
#define WISP_STATE_MAX_KEYS    1000u /* distinct keys touched in one invocation */
#define WISP_STATE_MAX_LISTING 1000u /* keys returned by one keys() call */

enum wisp_state_op {
    WISP_STATE_GET = 1,
    WISP_STATE_KEYS = 2,
};

/* Sends the request frame in req and waits for the STATE_REPLY frame,
 * whose body is copied into reply (reset first). 0 or a negative errno. */
typedef int (*wisp_state_rpc_fn)(void *ud, struct wisp_buf *req, struct wisp_buf *reply);

struct wisp_state_entry;

struct wisp_state {
    wisp_state_rpc_fn rpc; /* NULL: no store (wisp validate, tests) */
    void *rpc_ud;
    struct wisp_state_entry *e;
    size_t n, cap;
    struct wisp_buf req, reply;
    char *err; /* the last error in words, for the handler's message */
};

void wisp_state_init(struct wisp_state *st, wisp_state_rpc_fn rpc, void *ud);
/* Forgets everything buffered: call before each invocation. */
void wisp_state_reset(struct wisp_state *st);
void wisp_state_fini(struct wisp_state *st);

/* The value of key (JSON text, valid until the next call on st) after this
 * invocation's own writes. 0, -ENOENT (absent), -EINVAL (bad key),
 * -ENOTSUP (no store), -E2BIG (too many keys) or -EIO (the supervisor
 * could not read it; st->err says why). */
int wisp_state_get(struct wisp_state *st, const char *key, size_t klen, const char **val,
                   size_t *vlen);
/* Buffers a write (val NULL: delete). -EINVAL bad key, -EFBIG value too
 * large, -E2BIG too many keys, -ENOMEM. */
int wisp_state_put(struct wisp_state *st, const char *key, size_t klen, const char *val,
                   size_t vlen);

/* Keys starting with prefix as this invocation sees them (stored keys plus
 * its own writes, minus its own deletes), sorted, at most limit. Calls cb
 * for each; stops early and returns cb's value when it is non-zero. */
int wisp_state_keys(struct wisp_state *st, const char *prefix, size_t plen, size_t limit,
                    int (*cb)(void *ud, const char *key, size_t klen), void *ud);

/* True when the invocation read or wrote anything. */
bool wisp_state_used(const struct wisp_state *st);
/* Appends the reads and writes to a RESULT frame being written. */
void wisp_state_encode(const struct wisp_state *st, struct wisp_buf *b);

/* Supervisor side: the request body (op, key or prefix, limit). */
struct wisp_state_req {
    enum wisp_state_op op;
    const char *key; /* or the prefix for KEYS; borrowed from the frame */
    size_t klen;
    uint32_t limit;
};
int wisp_state_decode_req(struct wisp_rd *r, struct wisp_state_req *out);
/* Reply frames, appended to what b holds (frames waiting to be written):
 * a GET answer (status 0 with value and version, or a negative errno such
 * as -ENOENT), and a KEYS answer built incrementally. */
void wisp_state_encode_get_reply(struct wisp_buf *b, int status, const char *val, size_t vlen,
                                 uint64_t version);
void wisp_state_keys_reply_begin(struct wisp_buf *b);
void wisp_state_keys_reply_add(struct wisp_buf *b, const char *key, size_t klen);
void wisp_state_keys_reply_end(struct wisp_buf *b, int status);

#endif
