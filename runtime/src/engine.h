/*
 * Engines run handlers inside an executor process. An engine is an ops
 * struct registered by name ("lua" now, "native" later); the executor creates
 * one instance per function instance and calls invoke once per event.
 *
 * Effects are buffered: publishes go into the result and leave only when the
 * supervisor accepts the result, so a failed invocation has no effects.
 */
#ifndef WISP_ENGINE_H
#define WISP_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "effects.h"
#include "fnspec.h"

struct wisp_state;

/* An event as the handler sees it, CloudEvents 1.0 attribute names. All
 * pointers are borrowed for the duration of one invoke. */
struct wisp_event {
    const char *id;      /* unique per event, e.g. "a1b2c3d4-42" */
    const char *source;  /* e.g. "wisp://gw1/mqtt" */
    const char *type;    /* e.g. "wisp.mqtt.message" */
    const char *time;    /* RFC 3339 UTC */
    const char *subject; /* the MQTT topic, may be NULL */
    const char *payload; /* raw bytes, not NUL-terminated (may contain NUL) */
    size_t payload_len;
    int qos;    /* of the triggering message, -1 when not MQTT */
    int retain; /* 1 when the triggering message was a retained one */
    /* ctx.state for this invocation; NULL when there is no store. Using it
     * may move the frame the strings above point into: the executor then
     * re-points them (see executor.c), so engines read this struct, not
     * copies of its pointers taken before a state call. */
    struct wisp_state *state;
};

enum wisp_outcome {
    WISP_OUTCOME_OK = 0,
    WISP_OUTCOME_ERROR = 1,   /* the handler raised an error */
    WISP_OUTCOME_TIMEOUT = 2, /* limits.timeout_ms exceeded (hook or kill) */
    WISP_OUTCOME_MEMORY = 3,  /* limits.memory_kb exceeded */
    WISP_OUTCOME_CRASH = 4,   /* the executor died; set by the supervisor */
    WISP_OUTCOME_REJECTED = 5 /* never started: queue full, shutting down... */
};

const char *wisp_outcome_name(enum wisp_outcome o);

struct wisp_publish {
    char *topic;   /* NUL-terminated, validated topic name */
    char *payload; /* malloc'd bytes */
    size_t payload_len;
    int qos;
    int retain;
};

/* Hard caps on what one invocation may emit (documented in README). */
#define WISP_MAX_PUBLISHES_PER_INVOCATION 1000u
#define WISP_MAX_PUBLISH_BYTES            ((size_t)1024 * 1024)
#define WISP_MAX_LOG_BYTES_PER_INVOCATION (64u * 1024u)

struct wisp_result {
    enum wisp_outcome outcome;
    char *error; /* malloc'd message with traceback, NULL when ok */
    uint64_t duration_ns;
    uint64_t mem_peak_bytes; /* peak engine heap during the invocation */
    struct wisp_publish *pubs;
    size_t n_pubs;
    size_t cap_pubs;
    size_t pub_bytes; /* sum of topic + payload lengths */
    /* Executor side: the invocation's state reads and writes, encoded
     * into the RESULT frame when the outcome is ok (may be NULL). */
    const struct wisp_state *state;
    /* Supervisor side, set by wisp_ipc_decode_result: the state effects
     * (arrays malloc'd, keys and values borrowed from the frame). */
    struct wisp_state_read *reads;
    size_t n_reads;
    struct wisp_state_write *writes;
    size_t n_writes;
    /* Set by wisp_ipc_decode_result: topics and payloads point into the
     * frame they were decoded from, which must outlive the result. */
    bool borrowed;
};

void wisp_result_init(struct wisp_result *r);
/* Frees everything the result owns and re-initializes it. */
void wisp_result_fini(struct wisp_result *r);
/* Appends a publish, copying topic and payload. Enforces the two caps above:
 * returns -E2BIG when either would be exceeded (nothing appended), -ENOMEM. */
int wisp_result_add_publish(struct wisp_result *r, const char *topic, const char *payload,
                            size_t payload_len, int qos, int retain);
/* Drops a failed invocation's buffered publishes, keeping outcome and
 * error. */
void wisp_result_drop_publishes(struct wisp_result *r);
/* Sets r->error to a copy of msg (replacing any previous one). */
void wisp_result_set_error(struct wisp_result *r, enum wisp_outcome o, const char *msg);

struct wisp_engine_ops {
    const char *name;
    /* Creates an instance for spec (borrowed; must outlive the instance):
     * loads and compiles the handler, runs the chunk, checks it returned a
     * handler. Returns 0, or a negative errno with err set to a
     * "file:line: message" style explanation. */
    int (*create)(const struct wisp_fnspec *spec, void **inst, char *err, size_t errlen);
    /* Runs the handler once. Always fills res (outcome, error, duration,
     * memory, publishes). Returns 0 when the instance may serve another event,
     * or -1 when it must be discarded (e.g. its state is unrecoverable). */
    int (*invoke)(void *inst, const struct wisp_event *ev, struct wisp_result *res);
    void (*destroy)(void *inst);
};

extern const struct wisp_engine_ops wisp_engine_lua;

/* Looks up an engine by runtime name ("lua"), NULL if none. */
const struct wisp_engine_ops *wisp_engine_find(const char *name);
const struct wisp_engine_ops *wisp_engine_for(enum wisp_runtime rt);

#endif
