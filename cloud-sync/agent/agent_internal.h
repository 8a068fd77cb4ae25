/*
 * The agent's parts, shared by its files and its unit tests:
 *   agent_desired.c  strict parsing of desired-state messages
 *   agent_active.c   the managed set (active.json): load, save, bundle folders
 *   agent_health.c   the health check's arithmetic and rollback
 *   agent_bundle.c   signed bundle messages: check, verify, unpack
 *   agent_plan.c     applying a desired state, activation
 *   agent_meter.c    metering batches and acks
 *   agent.c          the object, the session events, status/hello/reported
 */
#ifndef WISP_AGENT_INTERNAL_H
#define WISP_AGENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent.h"

#define AGENT_SHA_LEN     64 /* hex digits of a SHA-256 */
#define AGENT_NAME_MAX    64 /* bytes of a function name (fnspec's rule) */
#define AGENT_MAX_FNS     1024
#define AGENT_MAX_BAD     16         /* bad bundles remembered per function */
#define AGENT_MAX_SIG     1024       /* bytes of a DER signature in a bundle message */
#define AGENT_MAX_DESIRED (1u << 20) /* bytes of a desired-state message */

enum agent_status {
    AGENT_ACTIVE = 0,      /* runs the desired bundle */
    AGENT_FETCHING = 1,    /* waits for the desired bundle */
    AGENT_REFUSED = 2,     /* the desired bundle failed verification or loading */
    AGENT_ROLLED_BACK = 3, /* the desired bundle failed its health check */
};

const char *agent_status_name(enum agent_status st);
/* -1 when s names no status. */
int agent_status_parse(const char *s);

/* True for 64 lowercase hex digits. */
bool agent_sha_valid(const char *s);
/* True for a function name wispd accepts: [a-z0-9][a-z0-9_-]*, <= 64 bytes. */
bool agent_name_valid(const char *s);

struct cJSON;
/* True for a JSON number that is a whole number in [0, max]. */
bool agent_json_whole(const struct cJSON *it, double max);
/* A JSON string of s, or null when s is NULL or "". */
struct cJSON *agent_str_or_null(const char *s);

/* ---- desired state ---- */

struct agent_desired_fn {
    char name[AGENT_NAME_MAX + 1];
    char bundle[AGENT_SHA_LEN + 1];
    char *version; /* informational; NULL when absent */
};

struct agent_desired {
    uint64_t generation;
    char *rollout; /* NULL when absent */
    struct agent_desired_fn *fns;
    size_t n;
    bool has_health;
    uint32_t min_invocations;
    double max_error_rate;
};

/* Parses one desired-state message strictly: a missing or mistyped
 * required key, or a bad value, fails with "<field>: <what is wrong>" in
 * err (-EINVAL). Unknown keys are ignored. 0, -EINVAL or -ENOMEM. */
int agent_desired_parse(const char *json, size_t len, struct agent_desired *out, char *err,
                        size_t errlen);
void agent_desired_fini(struct agent_desired *d);

/* ---- the managed set ---- */

struct agent_fn {
    char name[AGENT_NAME_MAX + 1];
    char bundle[AGENT_SHA_LEN + 1];   /* what runs ("" none) */
    char previous[AGENT_SHA_LEN + 1]; /* what ran before ("" none): instant rollback */
    char desired[AGENT_SHA_LEN + 1];  /* what the desired state names */
    char *version;                    /* of bundle; NULL when none */
    char *prev_version;               /* of previous; NULL when none */
    enum agent_status status;
    char *error; /* why refused or rolled back; NULL */
    char bad[AGENT_MAX_BAD][AGENT_SHA_LEN + 1];
    size_t n_bad;
    bool watching; /* health check of bundle in progress */
    /* Not persisted: the running version's counters since activation. */
    uint64_t invocations, errors;
    char *last_error;
};

struct agent_state {
    uint64_t generation; /* of the last desired state applied */
    char *rollout;
    uint32_t min_invocations;
    double max_error_rate;
    struct agent_fn *fns;
    size_t n, cap;
};

void agent_state_init(struct agent_state *st, uint32_t min_invocations, double max_error_rate);
void agent_state_fini(struct agent_state *st);
struct agent_fn *agent_state_find(struct agent_state *st, const char *name);
/* Adds an empty entry for name (status fetching). NULL on OOM or when full. */
struct agent_fn *agent_state_add(struct agent_state *st, const char *name);
void agent_state_remove(struct agent_state *st, size_t i);
void agent_fn_fini(struct agent_fn *f);
bool agent_fn_is_bad(const struct agent_fn *f, const char *sha);
void agent_fn_mark_bad(struct agent_fn *f, const char *sha);
/* Replaces *slot with a copy of s (NULL clears). 0 or -ENOMEM. */
int agent_set_str(char **slot, const char *s);

/* Serializes / parses active.json. The parser is strict about what it
 * keeps: an entry with a bad field is dropped with a log line naming the
 * file and field; a file that is not JSON at all fails (-EINVAL, err). */
char *agent_state_to_json(const struct agent_state *st);
int agent_state_from_json(const char *json, size_t len, const char *origin, struct agent_state *st,
                          char *err, size_t errlen);
/* Loads path into st (a missing file leaves st empty: first start). A
 * corrupt file is moved aside to "<path>.corrupt" and logged; st stays
 * empty. 0 or a negative errno for I/O errors other than ENOENT. */
int agent_state_load(const char *path, struct agent_state *st, char *err, size_t errlen);
/* Writes st to path: temp file, fsync, rename, fsync of the folder. */
int agent_state_save(const char *path, const struct agent_state *st, char *err, size_t errlen);

/* Removes every entry of bundles_dir that is neither the bundle nor the
 * previous bundle of a function in st (unfinished unpacks too). */
void agent_bundles_gc(const char *bundles_dir, const struct agent_state *st);
/* Removes a folder tree (links removed, not followed). 0 or -errno. */
int agent_rmtree(const char *path);

/* ---- health ---- */

/* True when errors exceed max_error_rate x min_invocations. */
bool agent_health_failed(uint64_t errors, uint32_t min_invocations, double max_error_rate);
/* True when the watch is over without a failure. */
bool agent_health_passed(uint64_t invocations, uint64_t errors, uint32_t min_invocations,
                         double max_error_rate);
/* "6 of 8 invocations failed (error: <first line of last_error>)". */
void agent_health_text(char *out, size_t cap, uint64_t errors, uint64_t invocations,
                       const char *last_error);

/* ---- the agent object ---- */

struct wisp_agent {
    const struct wisp_config *cfg;
    struct wisp_store *store;
    struct wisp_agent_hooks hooks;
    char *bundles_dir, *tmp_dir, *active_path; /* under <data>/deploy */
    char topic_status[128], topic_hello[128], topic_desired[128], topic_reported[128];
    char topic_meter[128], topic_ack[128];
    char *token;          /* fleet token; NULL */
    struct cJSON *labels; /* object of strings */
    struct agent_state st;
    bool connected;
    bool announce;         /* status + hello due (after connect) */
    bool report_now;       /* reported due at once (a change of state) */
    bool report_counters;  /* counters changed: reported within 500 ms */
    uint64_t reported_ns;  /* last reported sent */
    uint64_t report_at_ns; /* a reported due later (after a meter ack commits); 0 none */
    uint64_t retry_ns;     /* publishes failed: not before this */
    unsigned flags;        /* WISP_AGENT_* for the next tick */
    bool save;             /* active.json must be written */
    uint64_t next_token;
    /* metering */
    uint64_t meter_acked;    /* highest seq acknowledged */
    uint64_t meter_sent_max; /* highest seq ever sent */
    uint64_t meter_batch_upto;
    uint64_t meter_last; /* wisp_store_meter_last as of the last tick */
    bool meter_inflight;
    uint64_t meter_sent_ns, meter_last_ns, meter_hold_ns;
};

/* agent_plan.c */
void agent_apply_desired(struct wisp_agent *a, const char *json, size_t len);
/* Activates sha (unpacked in the bundles folder) for f: loads and checks
 * it; on failure f is refused. */
void agent_activate(struct wisp_agent *a, struct agent_fn *f, const char *sha);
void agent_refuse(struct wisp_agent *a, struct agent_fn *f, const char *why);
/* <bundles_dir>/<sha> (malloc'd). */
char *agent_bundle_dir(const struct wisp_agent *a, const char *sha);
bool agent_fetching(const struct wisp_agent *a, const char *sha);

/* agent_bundle.c: a message on wisp/v1/bundles/<sha>. */
void agent_on_bundle(struct wisp_agent *a, const char *sha, const unsigned char *msg, size_t len);
/* Checks and unpacks a bundle message into <bundles_dir>/<sha>; 0 or a
 * negative errno with the reason in err. */
int agent_bundle_install(struct wisp_agent *a, const char *sha, const unsigned char *msg,
                         size_t len, char *err, size_t errlen);
/* The framing check agent_bundle_install starts with, exposed for
 * tests/fuzz/fuzz_fleet.c: splits msg into the signature and the bundle
 * (pointers into msg). 0, or -EBADMSG / -EFBIG with the reason in err. */
int agent_bundle_split(const struct wisp_agent *a, const unsigned char *msg, size_t len,
                       const unsigned char **sig, size_t *siglen, const unsigned char **bundle,
                       size_t *blen, char *err, size_t errlen);

/* agent_health.c */
void agent_health_report(struct wisp_agent *a, const struct wisp_fnspec *spec,
                         const struct wisp_result *res);

/* agent_meter.c */
void agent_meter_init(struct wisp_agent *a);
void agent_meter_on_ack(struct wisp_agent *a, const char *json, size_t len);
/* The ack's checks agent_meter_on_ack applies to the parsed message,
 * exposed for tests/fuzz/fuzz_fleet.c: 0 with *upto and *error (borrowed
 * from root; NULL when absent), or -EINVAL with "<field>: <what>" in *field. */
int agent_meter_parse_ack(const struct cJSON *root, uint64_t *upto, const char **error,
                          const char **field);
void agent_meter_tick(struct wisp_agent *a, uint64_t now);
int agent_meter_next_ms(const struct wisp_agent *a, uint64_t now);
void agent_meter_on_connected(struct wisp_agent *a);

/* agent.c */
/* Milliseconds from now until due, rounded up; 0 when due has passed. */
int agent_ms_until(uint64_t due, uint64_t now);
int agent_publish(struct wisp_agent *a, const char *topic, const char *payload, size_t len, int qos,
                  bool retain);

#endif
