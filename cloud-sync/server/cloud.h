/*
 * wisp-cloud's core: the fleet as the control plane knows it (devices,
 * their desired state, rollouts), kept in memory and written through to a
 * cloud_store. Single-threaded: the MQTT side and the HTTP side run on the
 * same loop thread.
 *
 * Every change happens inside a batch: cloud_batch_begin opens one write
 * transaction, messages and API calls change the in-memory state (marking
 * what is dirty), and cloud_batch_end writes what changed, commits once and
 * only then hands the queued MQTT publishes (desired states, acks) to the
 * publish callback. When the commit fails, the in-memory state is reloaded
 * from the store and the publishes are dropped: devices resend what was
 * not acknowledged.
 */
#ifndef WISP_CLOUD_H
#define WISP_CLOUD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cloud_store.h"

#define CLOUD_ID_MAX        64         /* bytes of a device id */
#define CLOUD_NAME_MAX      200        /* bytes of a function name or version */
#define CLOUD_MAX_REPORTED  (1u << 20) /* bytes of a reported/hello/status payload */
#define CLOUD_MAX_METER_MSG (8u << 20) /* bytes of a metering batch */

struct cloud_meter_cursor {
    uint64_t head_seq; /* last seq stored (0: none yet) */
    unsigned char head_hash[32];
    uint64_t records;  /* records counted */
    uint64_t gaps;     /* records missing before accepted ones */
    char *chain_error; /* NULL, or why the chain was refused (malloc'd) */
};

struct cloud_device {
    char id[CLOUD_ID_MAX + 1];
    cJSON *own_labels;   /* object: from the device's hello */
    cJSON *set_labels;   /* object or NULL: from PUT .../labels (null values remove) */
    cJSON *labels;       /* object: own with set applied */
    uint64_t registered; /* realtime ns */
    uint64_t last_seen;
    bool online;
    char *wispd, *arch; /* may be NULL */
    cJSON *reported;    /* last reported payload (object) or NULL */
    struct cloud_meter_cursor meter;
    /* desired state */
    uint64_t generation;
    cJSON *desired_fns; /* object: fn -> {"bundle", "version"} */
    char *desired_rollout;
    cJSON *desired_health; /* object or NULL */
    bool dirty;            /* device record to write */
    bool desired_dirty;    /* desired record to write and publish */
};

enum cloud_rollout_state {
    CLOUD_RO_CANARY = 0,
    CLOUD_RO_ROLLING,
    CLOUD_RO_DONE,
    CLOUD_RO_HALTED,
    CLOUD_RO_ROLLED_BACK,
    CLOUD_RO_SUPERSEDED,
};

enum cloud_rdev_state {
    CLOUD_RD_PENDING = 0, /* not running the new bundle (yet) */
    CLOUD_RD_CANARY,      /* a canary device given the bundle, not running it yet */
    CLOUD_RD_ACTIVE,      /* runs it */
    CLOUD_RD_FAILED,
    CLOUD_RD_ROLLED_BACK, /* given its previous bundle back */
};

struct cloud_rollout_dev {
    char *device;
    char *previous, *previous_version; /* NULL: the function was absent */
    bool canary;
    bool assigned;         /* given the rollout's bundle in its desired state */
    uint64_t assigned_gen; /* generation that did */
    enum cloud_rdev_state state;
    uint64_t active_at; /* realtime ns, 0: never */
    char *reason;       /* why it failed */
};

struct cloud_rollout_cfg {
    char *bundle; /* sha256 hex */
    char *selector;
    int canary_percent; /* 0..100 */
    double bake_s;
    double max_failure_rate; /* 0..1 */
    uint64_t min_invocations;
    double max_error_rate; /* 0..1 */
};

struct cloud_rollout {
    char id[32];
    uint64_t seq;
    char *function, *version;
    struct cloud_rollout_cfg cfg;
    enum cloud_rollout_state state;
    bool phase_rolling; /* the phase it is in (or ended in) */
    uint64_t created, canary_ready_at, rolling_at, halted_at, rolled_back_at, completed_at,
        superseded_at;
    char *halted_reason, *superseded_by;
    struct cloud_rollout_dev *devs; /* sorted by device id */
    size_t ndevs, ncanary;
    bool dirty;
};

struct cloud_pub {
    struct cloud_pub *next;
    char *topic;
    void *payload;
    size_t len;
    int qos, retain;
};

/* Hands one message to MQTT; borrows everything. */
typedef void (*cloud_publish_fn)(void *ud, const char *topic, const void *payload, size_t len,
                                 int qos, int retain);

struct cloud_config {
    const char *data_dir;
    const char *fleet_token; /* NULL: any device may register */
    cloud_publish_fn publish;
    void *publish_ud;
};

struct cloud {
    struct cloud_store *store;
    char *data_dir, *bundle_dir;
    char *fleet_token;
    struct cloud_device **devs; /* sorted by id */
    size_t ndevs, capdevs;
    struct cloud_rollout **rollouts; /* oldest first */
    size_t nrollouts, caprollouts;
    uint64_t rollout_seq;
    struct cloud_txn *txn; /* the open batch */
    uint64_t now;          /* realtime ns of the open batch */
    struct cloud_pub *pubs, **pubs_tail;
    cloud_publish_fn publish;
    void *publish_ud;
    bool mqtt_connected;
    uint64_t refused; /* messages refused */
};

/* Opens the store in cfg->data_dir (creating DIR/bundles) and loads the
 * fleet. 0 or a negative errno with the reason in err. */
int cloud_create(const struct cloud_config *cfg, struct cloud **out, char *err, size_t errlen);
void cloud_destroy(struct cloud *c);

/* Opens the batch's write transaction; now is realtime ns (tests pass a
 * fake clock). */
int cloud_batch_begin(struct cloud *c, uint64_t now);
/* Writes what changed, commits, publishes. 0 or a negative errno (then
 * nothing was published and the state was reloaded from the store). */
int cloud_batch_end(struct cloud *c);
/* Drops the batch's changes (reloads the state from the store). */
void cloud_batch_abort(struct cloud *c);

/* An MQTT message under wisp/v1/ (inside a batch). Refused messages are
 * logged with the topic and the reason. */
void cloud_handle_message(struct cloud *c, const char *topic, const char *payload, size_t len,
                          bool retained);
/* Periodic work (bake timers), inside a batch. */
void cloud_tick(struct cloud *c);

/* Queues a message for after the commit; copies topic and payload. */
int cloud_queue_publish(struct cloud *c, const char *topic, const void *payload, size_t len,
                        int qos, int retain);

/* Like cloud_queue_publish but takes over payload (malloc'd), also on failure. */
int cloud_queue_publish_take(struct cloud *c, const char *topic, void *payload, size_t len, int qos,
                             int retain);

/* The device or NULL. */
struct cloud_device *cloud_device_find(const struct cloud *c, const char *id);
/* Appends r to c->rollouts (taking it over). 0 or -ENOMEM. */
int cloud_add_rollout(struct cloud *c, struct cloud_rollout *r);
/* True when id is 1-64 of A-Z a-z 0-9 . _ - */
bool cloud_device_id_valid(const char *id, size_t len);
/* Constant-time comparison of a presented token (NULL: none) with want. */
bool cloud_token_ok(const char *want, const char *got);
/* Registers a new device (inside a batch). NULL on OOM. */
struct cloud_device *cloud_device_register(struct cloud *c, const char *id);
/* Recomputes dev->labels from own and set labels. 0 or -ENOMEM. */
int cloud_device_merge_labels(struct cloud_device *dev);
/* The device as the API shows it (caller deletes). */
cJSON *cloud_device_json(const struct cloud_device *dev);

/* Sets (bundle != NULL) or removes one function of the device's desired
 * state, sets rollout and health (borrowed, copied), bumps the generation
 * and marks it for writing and publishing. 0 or -ENOMEM. */
int cloud_device_set_function(struct cloud *c, struct cloud_device *dev, const char *fn,
                              const char *bundle, const char *version, const char *rollout,
                              const cJSON *health);
/* The bundle sha the device's desired state names for fn, or NULL. */
const char *cloud_device_desired_bundle(const struct cloud_device *dev, const char *fn);

/* Labels and selectors (cloud_labels.c). A selector "k=v,k2=v2" parsed into
 * an object {k: v}; "" gives an empty object (matches everything). NULL
 * with the reason in err when malformed. */
cJSON *cloud_selector_parse(const char *sel, char *err, size_t errlen);
/* True when every k=v of sel (an object of strings) is among labels. */
bool cloud_selector_match(const cJSON *sel, const cJSON *labels);

/* Realtime ns from RFC 3339 ("2024-05-01T10:00:00Z", fractions and
 * offsets allowed). false when s is anything else. */
bool cloud_parse_time(const char *s, uint64_t *out_ns);
/* RFC 3339 UTC with milliseconds into out (>= 32 bytes); "" for 0. */
void cloud_format_time(uint64_t ns, char *out, size_t cap);
/* cJSON string of the time, or cJSON null for 0. */
cJSON *cloud_time_json(uint64_t ns);

#endif
