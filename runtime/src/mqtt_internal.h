/*
 * What the MQTT module's files share: mqtt.c (connection, lifecycle),
 * mqtt_config.c, mqtt_in.c (inbound queue, subscriptions) and mqtt_out.c
 * (publishing, stats). Not part of the module's interface.
 *
 * Locking: `lock` protects the inbound queue and the connection state that
 * Paho's threads update. Paho runs our callbacks with its own mutex held, so
 * the rule that keeps us deadlock-free is: never call into Paho while holding
 * `lock`. Counters are atomics so that stats can be read from any thread.
 */
#ifndef WISP_MQTT_INTERNAL_H
#define WISP_MQTT_INTERNAL_H

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqtt.h"
#include "paho.h"

/* Where the link stands, as seen from Paho's callbacks. */
enum mqtt_link {
    LINK_IDLE = 0,   /* not started */
    LINK_CONNECTING, /* first connect in progress */
    LINK_UP,
    LINK_DOWN, /* lost or never reached; Paho (and tick) keep retrying */
};

struct mqtt_out;

struct mqtt_sub {
    char *filter;
    int qos;
};

struct mqtt_counters {
    atomic_uint_least64_t received, published, delivered, publish_failed, dropped_outgoing,
        redelivery_deferred, connects, connection_lost, subscribe_failed;
};

struct wisp_mqtt {
    const struct wisp_paho_api *api; /* the Paho variant this client uses */
    MQTTAsync client;
    int efd;

    /* Settings, fixed after create. */
    char *uri;      /* as configured, for messages */
    char *paho_uri; /* mqtt:// and mqtts:// spelled tcp:// and ssl:// for Paho */
    char *client_id, *username, *password;
    char *tls_ca, *tls_cert, *tls_key;
    char *will_topic, *will_payload; /* NULL: no Last Will */
    int will_qos, will_retain;
    bool tls;
    int tls_insecure;
    int version; /* MQTTVERSION_3_1_1 or MQTTVERSION_5 */
    int keepalive_s, clean_start;
    uint32_t session_expiry_s;
    int reconnect_min_ms, reconnect_max_ms, max_buffered;
    size_t max_queued;

    /* Shared with Paho's threads, under lock. */
    pthread_mutex_t lock;
    struct wisp_mqtt_msg *head, *tail; /* events for wisp_mqtt_take */
    size_t queued;                     /* WISP_MQTT_MESSAGE entries in it */
    enum mqtt_link link;
    uint64_t conn_gen;          /* bumped on every new connection */
    bool connect_failed;        /* a connect attempt failed since the last CONNECTED */
    bool backlog;               /* Paho may hold messages we deferred (returned 0 for) */
    uint64_t arrivals;          /* messageArrived calls, to see whether a nudge drained one */
    int nudges;                 /* nudges in flight */
    char tls_error[256];        /* last OpenSSL error Paho reported */
    struct mqtt_out *live_head; /* QoS 1/2 handed to Paho, not completed */
    struct mqtt_out *resend_head, *resend_tail; /* QoS 1/2 cut off by a lost connection */

    /* Any thread. */
    struct mqtt_counters st;
    atomic_size_t pending;
    atomic_bool connected;
    atomic_bool intake_done; /* stop_intake's UNSUBACK came, or nothing more can arrive */
    atomic_bool disconnect_done;
    atomic_bool destroying;
    atomic_int in_callback;   /* Paho callbacks running right now */
    atomic_int subs_inflight; /* SUBSCRIBE requests without an answer yet */

    /* Loop thread only. */
    struct mqtt_sub *subs;
    size_t nsubs;
    uint64_t subscribed_gen; /* conn_gen the whole set was last sent for */
    bool started, connect_accepted;
    uint64_t retry_at_ns;
    int backoff_ms;
    uint64_t drop_logged_ns;
};

/* Every Paho callback brackets its work with these, so that destroy can wait
 * for a callback still on its way out. */
void mqtt_cb_enter(struct wisp_mqtt *m);
void mqtt_cb_leave(struct wisp_mqtt *m);

/* Checks cfg and copies it into m (mqtt_config.c). 0 or a negative errno
 * with the reason in err. */
int mqtt_load_config(struct wisp_mqtt *m, const struct wisp_mqtt_config *cfg, char *err,
                     size_t errlen);

/* Paho's text for one of its return codes, never NULL. */
const char *mqtt_paho_err(int rc);
/* Paho's own strings for return and reason codes (any loaded variant). */
const char *mqtt_paho_strerror(int rc);
const char *mqtt_reason_string(enum MQTTReasonCodes code);

/* Makes the eventfd readable. Any thread. */
void mqtt_signal(struct wisp_mqtt *m);

/* Appends an event to the queue; the caller holds m->lock. */
void mqtt_push_locked(struct wisp_mqtt *m, struct wisp_mqtt_msg *ev);

/* A connection-state event (reason copied, may be NULL); NULL on OOM. */
struct wisp_mqtt_msg *mqtt_state_event(enum wisp_mqtt_event_kind kind, const char *reason,
                                       int connect_failed);

/* Paho's messageArrived callback (mqtt_in.c). */
int mqtt_on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg);

/* Loop thread: sends the whole subscription set when a connection has not
 * had it yet, and drains messages Paho holds for us. Both are cheap no-ops
 * when there is nothing to do. */
void mqtt_in_sync(struct wisp_mqtt *m);
void mqtt_in_nudge(struct wisp_mqtt *m);

/* Frees the queue and the subscription set (destroy). */
void mqtt_in_free(struct wisp_mqtt *m);

/* mqtt_out.c: re-sends, once connected, the QoS 1/2 messages that a lost
 * connection cut off; frees what is left at destroy. */
void mqtt_out_resend(struct wisp_mqtt *m);
void mqtt_out_free(struct wisp_mqtt *m);

#endif
