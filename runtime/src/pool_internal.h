/* Pool internals shared by pool.c (functions, queues, scheduling),
 * pool_exec.c (executor processes and their sockets) and pool_report.c
 * (reports, counters, dead letters). Not a public API. */
#ifndef WISP_POOL_INTERNAL_H
#define WISP_POOL_INTERNAL_H

#include <sys/types.h>

#include "ipc.h"
#include "pool.h"

/* One payload, shared by the events of every function it was queued for. */
struct blob {
    unsigned refs;
    char *subject; /* NULL when not from MQTT */
    char *payload;
    /* Events that did not come from MQTT or wisp run (timers, sensors,
     * GPIO): their CloudEvents type (static) and source (owned). */
    const char *type;
    char *source;
    size_t len;
};

/* An accepted event waiting for, or in, an executor. */
struct pev {
    struct pev *next;
    struct blob *blob;
    char id[40];
    char time[32];
    int qos;
    int retain;
    uint64_t seq;        /* INVOKE sequence number while handed to an executor */
    unsigned attempt;    /* failed attempts so far */
    uint64_t not_before; /* retry backoff (monotonic ns) */
    uint64_t inbox_id;   /* > 0: a durable event, stored in the inbox */
};

struct fn {
    struct fn *next;
    struct wisp_fnspec *spec;
    bool retired;
    struct pev *qhead, *qtail;
    size_t qlen;
    struct pev *delayed; /* waiting for a retry */
    unsigned n_exec, n_loading, n_busy;
    struct wisp_fn_stats st;
};

enum exe_state { EXE_LOADING, EXE_IDLE, EXE_BUSY };

struct exe {
    struct exe *next;
    struct wisp_pool *pool;
    struct fn *fn;
    pid_t pid;
    int fd;
    struct wisp_watch *watch;
    enum exe_state state;
    /* Events handed over, oldest (running) first. Events queue in the
     * executor's socket behind the running one, so a busy executor goes
     * from one event to the next without waiting for the supervisor. */
    struct pev *inflight_head, *inflight_tail;
    unsigned n_inflight;
    size_t inflight_bytes;
    struct wisp_buf wb; /* INVOKE frames not yet written (see wisp_exe_flush) */
    uint64_t started_ns, deadline_ns, idle_since_ns;
    bool cold;          /* the next result is this executor's first */
    uint64_t dev_token; /* a device request answered later (pool.h), or 0 */
    uint64_t init_ns;   /* instance creation time, reported on the cold start */
    struct wisp_buf rb;
};

struct wisp_pool {
    struct wisp_loop *loop;
    struct wisp_pool_config cfg;
    struct wisp_pool_hooks hooks;
    struct fn *fns;
    struct exe *exes;
    unsigned n_exec;
    uint64_t next_seq;
    uint64_t next_event;
    char boot[17]; /* random per process, makes event ids unique across restarts */
    char source_mqtt[160], source_invoke[160]; /* CloudEvents sources, made once */
    struct wisp_buf wb;
    uint64_t store_waits; /* results the store could not take yet */
    uint64_t inbox_seen;  /* highest inbox id queued so far */
    uint64_t urgent;      /* applies since the last take that must reach the disk soon */
};

/* pool.c */
/* A blob holding copies of subject (may be NULL) and payload; NULL on OOM. */
struct blob *wisp_blob_new(const char *subject, const void *payload, size_t len);
void wisp_blob_free(struct blob *b);
struct fn *wisp_pool_find_active(struct wisp_pool *p, const char *name);
void wisp_pool_next_id(struct wisp_pool *p, char *id, size_t cap);
/* Queues an event for fn (taking a reference on b), accepted at `time`
 * (RFC 3339; NULL: now). Non-durable events are refused (NULL, counted as
 * dropped) past queue_max. NULL also on OOM. */
struct pev *wisp_pool_enqueue(struct wisp_pool *p, struct fn *fn, struct blob *b, const char *id,
                              const char *time, int qos, int retain, bool durable);
/* True when one of fn's mqtt triggers with this durability matches. */
bool wisp_fn_matches(const struct fn *fn, const char *topic, size_t tlen, bool durable);
void wisp_pool_finish(struct wisp_pool *p, struct fn *fn, struct pev *ev, struct wisp_result *res,
                      bool cold, uint64_t init_ns);
void wisp_pev_free(struct pev *ev);
struct pev *wisp_fn_pop(struct fn *fn);
void wisp_fn_push_front(struct fn *fn, struct pev *ev);

/* pool_report.c */
/* Logs the REPORT line of a finished invocation (and its error, if any). */
void wisp_pool_report(const struct fn *fn, const struct pev *ev, const struct wisp_result *res,
                      bool cold, uint64_t init_ns);
/* Counts a finished invocation in fn's statistics. */
void wisp_fn_count(struct fn *fn, enum wisp_outcome o);
/* Counts, logs and (when the function has a dead-letter topic) publishes an
 * event that ran out of attempts. Does not free ev. */
void wisp_pool_dead_letter(struct wisp_pool *p, struct fn *fn, const struct pev *ev,
                           const struct wisp_result *res);

/* pool_durable.c: the store's part of finishing an invocation. */
enum wisp_apply {
    WISP_APPLY_DONE = 0,      /* effects stored (or nothing to store); go on */
    WISP_APPLY_PUBLISHED = 1, /* as DONE, and the publishes went to the outbox */
    WISP_APPLY_RERUN = 2,     /* a state read went stale: run the event again */
    WISP_APPLY_WAIT = 3,      /* the store is full: try the event again later */
};
enum wisp_apply wisp_pool_apply(struct wisp_pool *p, struct fn *fn, struct pev *ev,
                                struct wisp_result *res, bool cold);
/* A message wrapped as a CloudEvent (output.envelope): a malloc'd JSON
 * text with id msg_id, the payload as data (JSON), text or data_base64. */
char *wisp_pool_envelope(const struct wisp_pool *p, const struct fn *fn, const char *msg_id,
                         const char *topic, const char *payload, size_t len, size_t *out_len);
/* Answers an executor's STATE_REQ frame; NULL or why the executor must go. */
const char *wisp_pool_state_request(struct exe *e, struct wisp_rd *rd);

/* pool_exec.c */
int wisp_exe_spawn(struct wisp_pool *p, struct fn *fn);
int wisp_exe_dispatch(struct exe *e, struct pev *ev);
/* Stops an executor: closes its socket (it exits) after killing it when
 * kill_it. An event in flight is finished with outcome/msg. */
void wisp_exe_stop(struct exe *e, bool kill_it, enum wisp_outcome outcome, const char *msg);
struct exe *wisp_exe_find_idle(struct wisp_pool *p, const struct fn *fn);
/* A busy executor of fn that can take ev behind its current event. */
struct exe *wisp_exe_find_pipeline(struct wisp_pool *p, const struct fn *fn, const struct pev *ev);
/* Writes the INVOKE frames dispatched since the last flush. */
void wisp_exe_flush(struct wisp_pool *p);
/* Evicts the least recently used idle executor not serving `fn`. */
bool wisp_exe_evict_lru(struct wisp_pool *p, const struct fn *fn);
void wisp_exe_tick(struct wisp_pool *p, uint64_t now, uint64_t *next_deadline);

#endif
