/*
 * The device agent: wispd's side of the fleet protocol (cloud-sync/README.md,
 * "Fleet protocol"). It runs on the supervisor's loop thread and talks MQTT
 * only through the supervisor's broker connection: the durable session with
 * mqtt.client wisp (plain or TLS broker), else Paho (WebSocket brokers,
 * mqtt.client paho), which then carries the Last Will:
 *
 *   desired  --parse--> plan --fetch bundle--> verify --unpack--> activate
 *   pool reports --> health check (rollback, offline too) --> reported
 *   store meter records --> batches on .../meter --ack--> deleted
 *
 * Managed functions live in <data>/deploy/bundles/<sha256>/; which one runs
 * per function is persisted in <data>/deploy/active.json, loaded when the
 * agent is created so that a restart without the broker runs the same
 * versions. Activation is the supervisor reloading its function set (the
 * --functions folder plus wisp_agent_foreach_managed) when wisp_agent_tick
 * says so.
 *
 * Nothing here blocks on the network; bundle checks and unpacking are file
 * work on the loop thread, bounded by cloud.max_bundle_kb.
 */
#ifndef WISP_AGENT_H
#define WISP_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wisp_config;
struct wisp_fnspec;
struct wisp_result;
struct wisp_store;
struct wisp_agent;

/* Publish tokens of the agent carry this bit, so that they are never taken
 * for outbox sequence numbers. */
#define WISP_AGENT_TOKEN_BIT (1ULL << 63)

/* What wisp_agent_tick asks the supervisor to do. */
enum {
    WISP_AGENT_RELOAD = 1,      /* the managed set changed: reload the functions */
    WISP_AGENT_RESUBSCRIBE = 2, /* the agent's filters changed: update subscriptions */
};

struct wisp_agent_hooks {
    /* Publishes on the broker session; borrowed arguments. 0, -ENOTCONN or
     * -ENOBUFS (try later), or another negative errno. token carries
     * WISP_AGENT_TOKEN_BIT; wisp_agent_on_published gets it back. */
    int (*publish)(void *ud, const char *topic, const void *payload, size_t len, int qos,
                   bool retain, uint64_t token);
    void *ud;
};

/* Reads cloud.identity (when set), loads active.json and cleans the bundle
 * folder. Borrows cfg, store and hooks for the agent's life. 0, or a
 * negative errno with err saying what was wrong and where. */
int wisp_agent_create(const struct wisp_config *cfg, struct wisp_store *store,
                      const struct wisp_agent_hooks *hooks, struct wisp_agent **out, char *err,
                      size_t errlen);
/* NULL ok. */
void wisp_agent_destroy(struct wisp_agent *a);

/* The Last Will the session must carry: topic and payload stay valid for
 * the agent's life. */
void wisp_agent_will(const struct wisp_agent *a, const char **topic, const char **payload);

/* cb(ud, name, dir) for every managed function with a bundle to run. */
void wisp_agent_foreach_managed(const struct wisp_agent *a,
                                void (*cb)(void *ud, const char *name, const char *dir), void *ud);
/* cb(ud, filter, qos) for every subscription the agent needs. */
void wisp_agent_foreach_filter(const struct wisp_agent *a,
                               void (*cb)(void *ud, const char *filter, int qos), void *ud);

/* A message from the session. Returns true when the topic is the agent's
 * (it is then handled here and must not go to the functions). */
bool wisp_agent_on_message(struct wisp_agent *a, const char *topic, size_t topic_len,
                           const void *payload, size_t len);
void wisp_agent_on_connected(struct wisp_agent *a);
void wisp_agent_on_lost(struct wisp_agent *a);
void wisp_agent_on_published(struct wisp_agent *a, uint64_t token, bool ok);

/* Every finished invocation (the pool's on_report hook). */
void wisp_agent_on_report(struct wisp_agent *a, const struct wisp_fnspec *spec,
                          const struct wisp_result *res);

/* Before the session closes on shutdown: publishes the offline status (a
 * clean DISCONNECT discards the Last Will). */
void wisp_agent_goodbye(struct wisp_agent *a);

/* Milliseconds until wisp_agent_tick has work, or -1. */
int wisp_agent_next_timeout_ms(const struct wisp_agent *a, uint64_t now_ns);
/* Publishes what is due (status, hello, reported, metering batches) and
 * returns WISP_AGENT_* flags for the supervisor. */
unsigned wisp_agent_tick(struct wisp_agent *a, uint64_t now_ns);

#endif
