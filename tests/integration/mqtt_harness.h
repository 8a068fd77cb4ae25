/*
 * Test clients for tests/integration/mqtt_client.c: wisp_mqtt clients driven
 * by one loop (pump) the way wispd drives its connection, with the events
 * each one took kept in a list the test consumes (tc_wait, tc_expect).
 * Every wait polls against a deadline.
 */
#ifndef WISP_MQTT_HARNESS_H
#define WISP_MQTT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include "mqtt.h"
#include "testbroker.h"

/* A client and the events the loop took that the test has not consumed. */
struct tc {
    struct wisp_mqtt *m;
    struct wisp_mqtt_msg *head, *tail;
};

/* Starts a test broker (opts may be NULL); false after a failed check. */
bool broker_up(struct wisp_testbroker *b, const struct wisp_testbroker_opts *opts);

/* A clean-start configuration with short keepalive and reconnect delays. */
void cfg_init(struct wisp_mqtt_config *c, const char *uri, const char *id, int version);

/* Creates the client, sets its subscriptions (NULL-terminated, QoS 1) and
 * starts it; at most 8 clients are open at a time. */
bool tc_open(struct tc *t, const struct wisp_mqtt_config *c, const char *const *filters);

/* Destroys the client and drops what it had not consumed. */
void tc_close(struct tc *t);

/* Appends a chain of events (as wisp_mqtt_take returns them) to t. */
void tc_append(struct tc *t, struct wisp_mqtt_msg *chain);

/* One loop iteration over every open client: wait up to ms for an eventfd
 * (or for a tick that is due), take what is there, tick. */
void pump(int ms);

/* Pumps until t has an event of `kind` (for messages: on topic, with the
 * payload, when given) and hands it over; NULL after timeout_ms. */
struct wisp_mqtt_msg *tc_wait(struct tc *t, enum wisp_mqtt_event_kind kind, const char *topic,
                              const char *payload, int timeout_ms);

/* Waits for an event and frees it; true when it came. */
bool tc_expect(struct tc *t, enum wisp_mqtt_event_kind kind, const char *topic, const char *payload,
               int timeout_ms);

/* Waits (up to 5 s) for t's LOST event: a failed connect, with a reason,
 * or a lost connection. The reason must contain want (when given) and is
 * printed after `say` (when given). */
void tc_expect_lost(struct tc *t, bool connect_failed, const char *want, const char *say);

/* Publishes probes on topic (which t subscribes to) every 300 ms until one
 * comes back: then every subscription t sent before is in place. */
bool tc_sync(struct tc *t, const char *topic, int timeout_ms);

/* Pumps until nothing is pending on t (all publishes completed). */
bool tc_flush(struct tc *t, int timeout_ms);

/* How many messages (on topic, or on any) t holds. */
size_t tc_count(const struct tc *t, const char *topic);

/* Drops every event t holds. */
void tc_drop_all(struct tc *t);

/* Publishes a string payload. */
int pub(struct tc *t, const char *topic, const char *payload, int qos, int retain);

#endif
