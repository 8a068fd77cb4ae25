/*
 * The supervisor's durable path: the store, the durable MQTT session that
 * feeds the inbox, group commit, acknowledgements after commit, and the
 * outbox sender. All on the loop thread.
 *
 *   durable session --PUBLISH--> inbox (batch) --commit--> PUBACK
 *   executor result --apply--> state + outbox + meter (batch) --commit-->
 *   outbox --> Paho (QoS 1, "wisp-id") --PUBACK--> outbox entry deleted
 *
 * Commit policy: sync and none commit at the end of every loop pass that
 * changed something (group commit: everything that arrived in that pass
 * shares one commit); batch waits up to store.batch_ms or
 * store.batch_events. A failed commit is treated like a crash: wispd
 * exits, and the inbox brings the events back at the next start.
 */
#ifndef WISP_DURABLE_H
#define WISP_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct wisp_loop;
struct wisp_mqtt;
struct wisp_pool;
struct wisp_store;
struct wisp_durable;

/* Opens the store under cfg->data. 0, or a negative errno with err set. */
int wisp_durable_create(struct wisp_loop *loop, const struct wisp_config *cfg,
                        struct wisp_durable **out, char *err, size_t errlen);
struct wisp_store *wisp_durable_store(struct wisp_durable *d);
/* mqtt.client wisp: the session carries every subscription (durable ones
 * through the inbox, the others straight to the functions) and the direct
 * publishes. Call before attach. */
void wisp_durable_take_all_mqtt(struct wisp_durable *d);
/* A direct publish on the session (mqtt.client wisp): QoS 0 is written
 * and forgotten; -ENOTCONN while disconnected. */
int wisp_durable_publish(struct wisp_durable *d, const char *topic, const void *payload, size_t len,
                         int qos, int retain);
/* Cloud sync (before the session starts): the agent's topics go to it,
 * its Last Will is set on the session, connects are told to it. */
struct wisp_agent;
void wisp_durable_set_agent(struct wisp_durable *d, struct wisp_agent *agent);
/* A publish of the agent: token (WISP_AGENT_TOKEN_BIT is added) comes
 * back to wisp_agent_on_published, never mixed with outbox sequences. */
int wisp_durable_publish_agent(struct wisp_durable *d, const char *topic, const void *payload,
                               size_t len, int qos, bool retain, uint64_t token);
/* Once the pool and the Paho client exist: queues the events the inbox
 * holds. With mqtt.client wisp, fails (logged) when the session cannot be
 * created, e.g. for a bad TLS file. */
int wisp_durable_attach(struct wisp_durable *d, struct wisp_pool *pool, struct wisp_mqtt *mqtt);
/* The durable triggers' filters (with mqtt.client wisp: all filters); the
 * session is started with the first one. */
void wisp_durable_set_subscriptions(struct wisp_durable *d, const char *const *filters,
                                    const int *qos, size_t n);
/* From the Paho client's event stream. */
void wisp_durable_on_delivered(struct wisp_durable *d, uint64_t token, bool ok);
void wisp_durable_on_connected(struct wisp_durable *d);
/* After every loop pass: commits when due, then acknowledges and sends
 * what the commit made safe. Returns 0, or a negative errno when a commit
 * failed (the caller stops). */
int wisp_durable_after_pass(struct wisp_durable *d, uint64_t now_ns);
int wisp_durable_next_timeout_ms(struct wisp_durable *d, uint64_t now_ns);
/* Draining: stop taking durable messages (what is unacknowledged stays
 * with the broker). */
void wisp_durable_stop_intake(struct wisp_durable *d);
/* Nothing waits for a commit or an acknowledgement. (The outbox may still
 * hold messages: they survive a restart.) */
bool wisp_durable_settled(const struct wisp_durable *d);
void wisp_durable_log_stats(const struct wisp_durable *d);
/* The durable triggers' subscriptions are in place (true when there are none). */
bool wisp_durable_subscribed(const struct wisp_durable *d);
/* Commits what is pending and closes. NULL ok. */
void wisp_durable_destroy(struct wisp_durable *d);

#endif
