/*
 * The supervisor's one MQTT connection, over Paho MQTTAsync.
 *
 * Threads: Paho's threads only copy what arrives into a locked queue and
 * signal an eventfd; they never run handlers and never block. Everything
 * else (connect retries, subscriptions, publishing, draining the queue)
 * happens on the supervisor's loop thread through the calls below.
 *
 * The connection is offline-first: wisp_mqtt_start never fails because the
 * broker is away; it keeps retrying with backoff (reconnect_min_ms doubling
 * up to reconnect_max_ms), re-subscribes after every (re)connect, and keeps
 * outgoing messages while disconnected (up to max_buffered; beyond that new
 * ones are refused with -ENOBUFS and counted).
 *
 * Driving it from a loop: watch wisp_mqtt_fd for EPOLLIN; when it fires call
 * wisp_mqtt_take, and call wisp_mqtt_tick at least as often as it asks. All
 * calls except wisp_mqtt_fd, wisp_mqtt_pending and wisp_mqtt_get_stats
 * belong to that one thread.
 *
 * Backpressure: once max_queued messages wait for wisp_mqtt_take, further
 * ones are left with Paho (messageArrived returns 0) and fetched again when
 * the loop has taken. Paho has already acknowledged them to the broker, so
 * this bounds our queue, not the broker's sending nor Paho's memory, and a
 * crash loses what Paho holds (see mqtt_in.c).
 */
#ifndef WISP_MQTT_H
#define WISP_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wisp_mqtt_config {
    const char *uri;       /* tcp://host:port, mqtt://, ssl://, mqtts://, ws:// ... */
    const char *client_id; /* required */
    const char *username;  /* may be NULL */
    const char *password;  /* may be NULL */
    int version;           /* 3 (= MQTT 3.1.1) or 5 */
    int keepalive_s;       /* default 30 */
    int clean_start;       /* 1: clean session / clean start */
    /* TLS, used with ssl:// or mqtts:// */
    const char *tls_ca;        /* CA file (PEM) to verify the broker; NULL: system default */
    const char *tls_cert;      /* client certificate (PEM), may be NULL */
    const char *tls_key;       /* client private key (PEM), may be NULL */
    int tls_insecure;          /* 1: do not verify the broker's certificate/hostname */
    int reconnect_min_ms;      /* default 250 */
    int reconnect_max_ms;      /* default 30000 */
    int max_buffered;          /* outgoing messages kept while disconnected; default 10000 */
    size_t max_queued;         /* inbound messages queued for the loop before Paho is told to
                                  redeliver later (backpressure); default 10000 */
    uint32_t session_expiry_s; /* MQTT 5 with clean_start 0: how long the broker keeps the
                                  session after a disconnect; default 86400 */
    /* Last Will, sent by the broker when the connection dies without a
     * DISCONNECT; will_topic NULL: none. will_payload is a string. */
    const char *will_topic;
    const char *will_payload;
    int will_qos; /* 0, 1 or 2 */
    int will_retain;
};

/* An inbound message or a connection-state change, handed to the loop. */
enum wisp_mqtt_event_kind {
    WISP_MQTT_MESSAGE = 0,
    WISP_MQTT_CONNECTED = 1, /* (re)connected and subscriptions re-sent */
    WISP_MQTT_LOST = 2,      /* connection lost or a connect attempt failed */
    WISP_MQTT_DELIVERED = 3, /* a wisp_mqtt_publish_tracked message completed */
};

struct wisp_mqtt_msg {
    enum wisp_mqtt_event_kind kind;
    char *topic; /* NUL-terminated, malloc'd (NULL for state events) */
    size_t topic_len;
    char *payload; /* malloc'd, payload_len bytes (+ a NUL not counted) */
    size_t payload_len;
    int qos;
    int retain;
    char *reason;       /* for WISP_MQTT_LOST: what went wrong, malloc'd, may be NULL */
    int connect_failed; /* for WISP_MQTT_LOST: 1 when a connect attempt failed (broker
                           unreachable, refused, TLS), 0 when a connection was lost */
    uint64_t token;     /* for WISP_MQTT_DELIVERED: the publisher's token */
    int ok;             /* for WISP_MQTT_DELIVERED: 1 acknowledged, 0 failed or cut off */
    struct wisp_mqtt_msg *next;
};

/* Frees a message taken from wisp_mqtt_take (the whole ->next chain). */
void wisp_mqtt_msg_free(struct wisp_mqtt_msg *m);

struct wisp_mqtt_stats {
    uint64_t received;
    uint64_t published;           /* handed to Paho */
    uint64_t delivered;           /* completed (QoS 0 sent, QoS 1/2 acknowledged) */
    uint64_t publish_failed;      /* rejected by Paho or failed delivery */
    uint64_t dropped_outgoing;    /* dropped because the offline buffer was full */
    uint64_t redelivery_deferred; /* times an inbound message was left with Paho for later
                                     (backpressure); one message may count more than once */
    uint64_t connects;
    uint64_t connection_lost;
    uint64_t subscribe_failed; /* filters the broker refused (SUBACK 0x80 or above) */
    bool connected;
};

struct wisp_mqtt;

/* Validates the config (URI scheme, version, files readable for TLS) and
 * creates the client without connecting. Copies everything it keeps from
 * cfg. Zero numeric fields take their defaults. Returns 0 or a negative
 * errno with a clear reason in err. *out is owned by the caller
 * (wisp_mqtt_destroy). */
int wisp_mqtt_create(const struct wisp_mqtt_config *cfg, struct wisp_mqtt **out, char *err,
                     size_t errlen);

/* An eventfd that becomes readable when wisp_mqtt_take has something or
 * wisp_mqtt_tick has work to do. Owned by the client. */
int wisp_mqtt_fd(const struct wisp_mqtt *m);

/* Starts connecting (asynchronously). A broker that is away is not an
 * error: a WISP_MQTT_LOST event with connect_failed set says so, and the
 * client keeps trying. -EALREADY when called twice. */
int wisp_mqtt_start(struct wisp_mqtt *m);

/* Replaces the set of subscriptions: filters[i] at qos[i]. Subscribes what
 * is new and unsubscribes what is gone when connected; the whole set is sent
 * again on every reconnect. Copies its arguments. A filter listed twice is
 * kept once at its highest QoS. -EINVAL (nothing changed) when a filter or
 * QoS is invalid. Filters the broker refuses are logged and counted in
 * stats.subscribe_failed. */
int wisp_mqtt_set_subscriptions(struct wisp_mqtt *m, const char *const *filters, const int *qos,
                                size_t n);

/* Drains the eventfd and returns everything queued (oldest first) as a
 * chain the caller frees with wisp_mqtt_msg_free; NULL if nothing. */
struct wisp_mqtt_msg *wisp_mqtt_take(struct wisp_mqtt *m);

/* Loop-thread housekeeping: retries a failed connect when due, sends the
 * subscriptions for a new connection and fetches deferred messages. Returns
 * the number of milliseconds until it wants to be called again, or -1. */
int wisp_mqtt_tick(struct wisp_mqtt *m, uint64_t now_mono_ns);

/* Publishes a copy of the message. While disconnected (also before the first
 * connect) the message is kept in Paho's buffer. Returns 0 or a negative
 * errno (-EINVAL for a bad topic, QoS or size). */
int wisp_mqtt_publish(struct wisp_mqtt *m, const char *topic, const void *payload, size_t len,
                      int qos, int retain);

/* Publishes a message of the durable outbox at QoS 1 or 2. No copy is kept
 * and nothing is resent here: its completion comes back through
 * wisp_mqtt_take as a WISP_MQTT_DELIVERED event carrying token (ok 0 when
 * the connection cut it off or the broker refused it), so the outbox can
 * delete the message or send it again, in order. With MQTT 5, msg_id (may
 * be NULL) travels as the user property "wisp-id" for consumers to drop
 * duplicates by. 0 or a negative errno (-ENOBUFS: Paho's buffer is full). */
int wisp_mqtt_publish_tracked(struct wisp_mqtt *m, const char *topic, const void *payload,
                              size_t len, int qos, int retain, const char *msg_id, uint64_t token);

/* Connected, and the broker has answered every SUBSCRIBE sent for this
 * connection (so messages published from now on reach the functions); or
 * there is nothing to subscribe to. Loop thread. */
bool wisp_mqtt_subscribed(struct wisp_mqtt *m);

/* Outgoing messages not yet completed (in flight or buffered). */
size_t wisp_mqtt_pending(const struct wisp_mqtt *m);

void wisp_mqtt_get_stats(const struct wisp_mqtt *m, struct wisp_mqtt_stats *out);

/* Stops intake: unsubscribes everything. Messages already on their way are
 * still queued as usual; the caller decides what to do with them. */
int wisp_mqtt_stop_intake(struct wisp_mqtt *m);

/* After wisp_mqtt_stop_intake: true once nothing more can arrive (the
 * broker acknowledged the unsubscribe, or the link is down) and everything
 * that did arrive has been taken with wisp_mqtt_take. */
bool wisp_mqtt_intake_drained(struct wisp_mqtt *m);

/* Disconnects (waiting at most timeout_ms for the DISCONNECT to go out) and
 * frees the client. NULL is a no-op. */
void wisp_mqtt_destroy(struct wisp_mqtt *m, int timeout_ms);

#endif
