/*
 * The pool: functions, their event queues and the executor processes that
 * serve them, all owned by the supervisor's loop thread.
 *
 * Each function has a FIFO of accepted events. Executors are started per
 * function on demand, up to the function's limits.concurrency and the
 * gateway-wide max_executors (an idle executor of another function is
 * evicted to make room), and are stopped after idle_timeout_ms without
 * work: idle functions cost nothing, and the next event is a cold start.
 * An executor that overruns its deadline is killed and replaced; its event
 * fails with outcome "timeout" and follows the function's retry policy.
 *
 * Effects of a successful invocation are handed to hooks->publish in order;
 * a failed one has none.
 */
#ifndef WISP_POOL_H
#define WISP_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "executor.h"
#include "fnspec.h"

struct wisp_loop;
struct wisp_store;
struct wisp_devcall_req;
struct wisp_devcall_reading;
struct wisp_pool;

struct wisp_pool_config {
    unsigned max_executors;   /* gateway-wide cap, >= 1 */
    uint64_t idle_timeout_ms; /* stop an executor idle this long; 0 = never */
    unsigned queue_max;       /* accepted-but-not-started events per function */
    const char *device;       /* used in event sources: wisp://<device>/mqtt */
    struct wisp_store *store; /* durable state, inbox and outbox; NULL: none */
    bool outbox_qos1;         /* QoS 1/2 messages of any event go through the outbox */
};

struct wisp_pool_hooks {
    wisp_spawn_fn spawn;
    void *spawn_ud;
    /* Sends one message; borrowed arguments. Returns 0 or a negative errno. */
    int (*publish)(void *ud, const char *topic, const void *payload, size_t len, int qos,
                   int retain);
    /* Told about every finished invocation after its effects were handed
     * over (may be NULL). */
    void (*on_report)(void *ud, const struct wisp_fnspec *spec, const char *event_id,
                      const struct wisp_result *res);
    /* Answers ctx.sensor / ctx.gpio of an invocation of spec (may be NULL:
     * no devices). Returns 0 with *reading or *value filled, or a negative
     * errno with msg set to what the handler is told, or -EINPROGRESS with
     * *token set (non-zero): the answer comes later through
     * wisp_pool_device_done. */
    int (*device)(void *ud, const struct wisp_fnspec *spec, const struct wisp_devcall_req *req,
                  struct wisp_devcall_reading *reading, int *value, char *msg, size_t msglen,
                  uint64_t *token);
    void *ud;
};

struct wisp_fn_stats {
    uint64_t invocations, ok, errors, timeouts, memory, crashes;
    uint64_t cold_starts, retries, dead_lettered, dropped, publish_failed;
    uint64_t queued, running, executors;
    uint64_t conflicts; /* runs repeated because a state read went stale */
};

/* Borrows loop, cfg->device and hooks for the pool's life. */
int wisp_pool_create(struct wisp_loop *loop, const struct wisp_pool_config *cfg,
                     const struct wisp_pool_hooks *hooks, struct wisp_pool **out);
/* Stops every executor (killing busy ones) and frees everything. NULL ok. */
void wisp_pool_destroy(struct wisp_pool *pool);

/* Replaces the set of functions, taking ownership of specs[0..n) (the array
 * itself stays the caller's). A function whose version and folder are
 * unchanged keeps its executors; a changed one gets the not-yet-started events of the old
 * version, whose in-flight events finish on the version they started on; a
 * removed one finishes what it had and goes. */
void wisp_pool_set_functions(struct wisp_pool *pool, struct wisp_fnspec **specs, size_t n);

/* The number of active functions. */
size_t wisp_pool_count(const struct wisp_pool *pool);

/* Calls cb for every active function. */
void wisp_pool_foreach(struct wisp_pool *pool, void (*cb)(void *ud, const struct wisp_fnspec *spec),
                       void *ud);

/* Accepts one MQTT message for every active function with a matching
 * trigger. Copies its arguments. Returns the number of functions it was
 * queued for (0: nothing matched) or a negative errno. Call
 * wisp_pool_schedule after a batch of submissions to start the work. */
int wisp_pool_submit_mqtt(struct wisp_pool *pool, const char *topic, const void *payload,
                          size_t len, int qos, int retain);

/* The same without copying: when the message is queued, the pool takes
 * over *topic and *payload (malloc'd; payload NUL-terminated at len) and
 * sets both to NULL. Whatever is left is still the caller's to free. */
int wisp_pool_submit_mqtt_take(struct wisp_pool *pool, char **topic, char **payload, size_t len,
                               int qos, int retain);

/* Accepts one message from the durable session for every active function
 * with a matching durable trigger: each event is written to the store's
 * inbox (in the open batch: acknowledge the message only after the next
 * commit) and queued. Returns how many functions took it, or a negative
 * errno (nothing was stored). Needs cfg.store. */
int wisp_pool_submit_durable(struct wisp_pool *pool, const char *topic, const void *payload,
                             size_t len, int qos, int retain);

/* True when an active function has a durable trigger matching topic. */
bool wisp_pool_matches_durable(const struct wisp_pool *pool, const char *topic);

/* Queues every event the inbox holds that is not queued yet: all of them
 * after a restart, the new ones after `wisp dlq replay`. Events for
 * functions that do not exist stay stored and are logged. Returns how many
 * were queued or a negative errno. */
int wisp_pool_recover(struct wisp_pool *pool);

/* True when, since the last call, a result changed something that waits
 * for a commit to take effect (inbox entries, state, outbox messages, dead
 * letters), as opposed to metering records alone, which can wait. */
bool wisp_pool_take_urgent(struct wisp_pool *pool);

/* Queues one event of another kind (timer, sensor, GPIO) for the named
 * function: type is a static CloudEvents type ("wisp.timer.fired"), source
 * and subject are copied. Not durable: the event lives in memory; its QoS
 * 1/2 outputs go through the outbox. 0, -ENOENT (no such function),
 * -ENOBUFS (its queue is full) or -ENOMEM. Call wisp_pool_schedule after. */
int wisp_pool_submit_event(struct wisp_pool *pool, const char *fn_name, const char *type,
                           const char *source, const char *subject, const void *payload,
                           size_t len);

/* Queues one event for the named function (wisp run). *event_id receives
 * the id assigned (at least 40 bytes). */
int wisp_pool_submit_to(struct wisp_pool *pool, const char *fn_name, const char *subject,
                        const void *payload, size_t len, char *event_id);

/* Hands queued events to executors (starting them as needed) and writes
 * what was handed over. */
void wisp_pool_schedule(struct wisp_pool *pool);

/* Milliseconds until wisp_pool_tick has work (deadlines, idle stops,
 * retries), or -1. */
int wisp_pool_next_timeout_ms(const struct wisp_pool *pool, uint64_t now_ns);
void wisp_pool_tick(struct wisp_pool *pool, uint64_t now_ns);

/* True when nothing is queued, running, starting or waiting for a retry. */
bool wisp_pool_idle(const struct wisp_pool *pool);

/* Shutdown past its deadline: kills busy executors and discards queued
 * events, counting them. Returns how many events were abandoned. */
size_t wisp_pool_abandon(struct wisp_pool *pool);

/* The late answer to a device request the hook took with -EINPROGRESS: sent
 * to the executor still waiting for it (none, when it died meanwhile). */
void wisp_pool_device_done(struct wisp_pool *pool, uint64_t token, int status, const char *msg,
                           const struct wisp_devcall_reading *reading);

/* Fills stats for the named function; -ENOENT if unknown. */
int wisp_pool_stats(const struct wisp_pool *pool, const char *fn_name, struct wisp_fn_stats *out);
/* Logs one line of counters per function. */
void wisp_pool_log_stats(const struct wisp_pool *pool);

#endif
