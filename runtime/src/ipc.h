/*
 * Frames between the supervisor and its executor processes over an AF_UNIX
 * stream socket: [u32 body length][u8 type][body]. Bodies are sequences of
 * fixed-width integers and length-prefixed byte strings, written with the
 * wisp_buf_put_* calls and read back with wisp_rd_* calls that never read
 * past the frame (a short or malformed frame is an error, not a crash).
 */
#ifndef WISP_IPC_H
#define WISP_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "fnspec.h"

enum wisp_ipc_type {
    WISP_IPC_LOAD = 1,        /* supervisor -> executor: the function to host */
    WISP_IPC_LOADED = 2,      /* executor -> supervisor: instance ready, or why not */
    WISP_IPC_INVOKE = 3,      /* supervisor -> executor: one event */
    WISP_IPC_RESULT = 4,      /* executor -> supervisor: outcome and buffered effects */
    WISP_IPC_STATE_REQ = 5,   /* executor -> supervisor: a ctx.state read (state.h) */
    WISP_IPC_STATE_REPLY = 6, /* supervisor -> executor: its answer (also to DEVICE_REQ) */
    WISP_IPC_DEVICE_REQ = 7,  /* executor -> supervisor: ctx.sensor / ctx.gpio (devcall.h) */
};

/* Upper bound on one frame; payloads are capped well below this. */
#define WISP_IPC_MAX_FRAME (80u * 1024u * 1024u)

struct wisp_buf {
    char *data;
    size_t len;
    size_t cap;
    bool oom;           /* set when an append failed; the frame must not be sent */
    size_t frame_start; /* where the frame being written begins */
};

void wisp_buf_init(struct wisp_buf *b);
void wisp_buf_fini(struct wisp_buf *b);
void wisp_buf_reset(struct wisp_buf *b);
void wisp_buf_put(struct wisp_buf *b, const void *p, size_t n);
void wisp_buf_put_u32(struct wisp_buf *b, uint32_t v);
void wisp_buf_put_u64(struct wisp_buf *b, uint64_t v);
/* A length-prefixed byte string; NULL is encoded as an empty string. */
void wisp_buf_put_bytes(struct wisp_buf *b, const void *p, size_t n);
void wisp_buf_put_str(struct wisp_buf *b, const char *s);
/* Starts a frame of `type` in an emptied buffer (begin) or after what the
 * buffer holds (append); finish it with wisp_ipc_frame_end. */
void wisp_ipc_frame_begin(struct wisp_buf *b, enum wisp_ipc_type type);
void wisp_ipc_frame_append(struct wisp_buf *b, enum wisp_ipc_type type);
void wisp_ipc_frame_end(struct wisp_buf *b);

struct wisp_rd {
    const char *p;
    size_t left;
    bool bad;
};
uint32_t wisp_rd_u32(struct wisp_rd *r);
uint64_t wisp_rd_u64(struct wisp_rd *r);
/* Borrowed view into the frame; *n gets its length. */
const char *wisp_rd_bytes(struct wisp_rd *r, size_t *n);
/* malloc'd NUL-terminated copy (NULL on error or OOM; sets bad). */
char *wisp_rd_strdup(struct wisp_rd *r);

/* Blocking helpers for the executor side (and for tools): write a whole
 * buffer; read one whole frame into b (type in *type, body in b->data).
 * Return 0, -EPIPE/-ECONNRESET on a closed peer, or another negative errno. */
int wisp_ipc_write_all(int fd, const void *p, size_t n);
int wisp_ipc_read_frame(int fd, struct wisp_buf *b, enum wisp_ipc_type *type);

/* Buffered, blocking reading of frames (the executor side): reads as much
 * as the socket has, so events queued behind each other cost one read. */
struct wisp_frame_reader {
    int fd;
    struct wisp_buf buf;
    size_t off; /* start of the first unconsumed byte in buf */
};
void wisp_frame_reader_init(struct wisp_frame_reader *r, int fd);
void wisp_frame_reader_fini(struct wisp_frame_reader *r);
/* The next frame: its type and a view of its body, valid until the next
 * call. Returns 0, -EPIPE on a closed peer, -EPROTO, -ENOMEM or -errno. */
int wisp_frame_reader_next(struct wisp_frame_reader *r, enum wisp_ipc_type *type,
                           struct wisp_rd *body);

/* Non-blocking helper for the supervisor: given accumulated bytes, tells
 * whether a whole frame is present. Returns the frame's total size (header
 * included) when complete, 0 when more bytes are needed, -EPROTO when the
 * length is out of bounds. */
long wisp_ipc_frame_ready(const char *p, size_t n, enum wisp_ipc_type *type);
#define WISP_IPC_HEADER 5u

/* Message codecs, shared by both ends so they cannot drift apart. */
void wisp_ipc_encode_load(struct wisp_buf *b, const struct wisp_fnspec *spec);
/* Decodes LOAD into a new spec (caller destroys). */
int wisp_ipc_decode_load(struct wisp_rd *r, struct wisp_fnspec **out);

void wisp_ipc_encode_loaded(struct wisp_buf *b, int status, const char *err, uint64_t init_ns,
                            uint64_t mem_bytes);
struct wisp_ipc_loaded {
    int status;
    char *err;
    uint64_t init_ns;
    uint64_t mem_bytes;
};
int wisp_ipc_decode_loaded(struct wisp_rd *r, struct wisp_ipc_loaded *out);

void wisp_ipc_encode_invoke(struct wisp_buf *b, uint64_t seq, const struct wisp_event *ev);
/* The same frame appended to what b already holds (several to one executor). */
void wisp_ipc_append_invoke(struct wisp_buf *b, uint64_t seq, const struct wisp_event *ev);
/* The event's strings borrow from the frame buffer. */
int wisp_ipc_decode_invoke(struct wisp_rd *r, uint64_t *seq, struct wisp_event *ev);

void wisp_ipc_encode_result(struct wisp_buf *b, uint64_t seq, const struct wisp_result *res,
                            bool recycled);
/* The publishes' topics and payloads point into the frame (res->borrowed):
 * keep the frame until the result is finished with. */
int wisp_ipc_decode_result(struct wisp_rd *r, uint64_t *seq, struct wisp_result *res,
                           bool *recycled);

#endif
