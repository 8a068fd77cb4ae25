/*
 * The durable MQTT session: Wisp's own small MQTT client (durable
 * triggers first of all), run on the supervisor's loop thread (non-blocking socket
 * watched by the loop, timers through next_timeout/tick).
 *
 * Why not Paho: Paho 1.3.12 sends PUBACK (and PUBREC/PUBCOMP) before the
 * application sees a message, so a crash between the two loses a message
 * the broker counts as delivered. Here a QoS 1/2 PUBLISH is acknowledged
 * only when the application calls wisp_msess_ack, after the event is
 * committed to the inbox. It also publishes (the outbox), and with
 * mqtt.client "wisp" it carries every subscription and publish of the
 * broker, plain or TLS.
 *
 * Protocol: MQTT 3.1.1 and 5 over TCP or TLS (mbedTLS, TLS 1.2; the
 * broker's certificate verified against the CA and the host); CONNECT with clean session off
 * (v5: Clean Start 0 + Session Expiry Interval), keepalive PINGREQ,
 * SUBSCRIBE on every connect, inbound PUBLISH at QoS 0/1/2 (QoS 2: PUBREC
 * at ack, PUBCOMP on PUBREL), reconnect with doubling backoff. Malformed
 * packets or protocol violations from the broker drop the connection with
 * a logged reason, never a crash.
 */
#ifndef WISP_MSESS_H
#define WISP_MSESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wisp_loop;
struct wisp_msess;

struct wisp_msess_config {
    /* tcp://host:port or mqtt://host:port (default port 1883); ssl:// or
     * mqtts:// for TLS (default port 8883) */
    const char *uri;
    const char *client_id;     /* required; the session is keyed by it */
    int version;               /* 4 (3.1.1) or 5 */
    int keepalive_s;           /* 0 = none */
    const char *username;      /* may be NULL */
    const char *password;      /* may be NULL */
    uint32_t session_expiry_s; /* v5 only; 0 = 0xFFFFFFFF (never) */
    uint16_t receive_max;      /* v5 Receive Maximum we announce; 0 = 65535 */
    uint32_t max_packet;       /* largest packet accepted (v5: announced); 0 = 1 MiB + 64 KiB */
    int reconnect_min_ms;      /* 0 = 250 */
    int reconnect_max_ms;      /* 0 = 30000 */
    /* Last Will (NULL topic: none): published by the broker when the
     * connection ends without DISCONNECT. */
    const char *will_topic;
    const void *will_payload;
    size_t will_len;
    int will_qos; /* 0..2 */
    bool will_retain;
    /* TLS (ssl://, mqtts://), read once at create. tls_ca: PEM CA file
     * (NULL: the system bundle); tls_cert and tls_key: PEM client
     * certificate and its key, both or neither; tls_insecure: no
     * verification of the broker's certificate (else it must chain to the CA
     * and match the host). */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    bool tls_insecure;
};

struct wisp_msess_sub {
    const char *filter;
    int qos;
};

struct wisp_msess_hooks {
    /* One PUBLISH. topic and payload are borrowed for the call. For qos > 0
     * nothing is acknowledged until wisp_msess_ack(pid). dup is the
     * packet's DUP flag (a redelivery). */
    void (*on_message)(void *ud, uint16_t pid, int qos, bool dup, bool retain, const char *topic,
                       size_t topic_len, const void *payload, size_t len);
    /* After CONNACK accepted (and SUBSCRIBE sent). May be NULL. */
    void (*on_connected)(void *ud, bool session_present);
    /* The connection ended (reason for the log). Unacknowledged messages
     * will be redelivered by the broker; pending acks are forgotten. May be
     * NULL. */
    void (*on_lost)(void *ud, const char *why);
    void *ud;
    /* A message given to wisp_msess_publish completed: ok when the broker
     * acknowledged it (PUBACK; QoS 2: PUBCOMP; QoS 0: written to the socket),
     * not ok when the connection ended first or the broker refused it
     * (v5 reason >= 0x80, logged). Every accepted publish gets exactly one
     * call, also from wisp_msess_destroy (not ok). May be NULL. */
    void (*on_published)(void *ud, uint64_t token, bool ok);
};

struct wisp_msess_stats {
    uint64_t connects, disconnects, received, acked, pings, protocol_errors;
    uint64_t published; /* publishes completed ok */
    bool connected;
};

/* The URI's scheme: 0 plain TCP (tcp://, mqtt://), 1 TLS (ssl://, mqtts://),
 * -1 one the session does not speak (ws://, wss://, none). */
int wisp_msess_scheme(const char *uri);

/* Copies cfg. Starts connecting at once (or from the first tick).
 * Returns 0 or a negative errno with err filled ("uri: ...", or naming the
 * TLS file that cannot be loaded). */
int wisp_msess_create(struct wisp_loop *loop, const struct wisp_msess_config *cfg,
                      const struct wisp_msess_hooks *hooks, struct wisp_msess **out, char *err,
                      size_t errlen);
/* Checks cfg as wisp_msess_create would (the URI; with TLS, loading the
 * CA, certificate and key files) without connecting: 0 or a negative errno
 * with err filled. */
int wisp_msess_check_config(const struct wisp_msess_config *cfg, char *err, size_t errlen);
/* Sends DISCONNECT when connected (the broker keeps the session), closes,
 * frees. NULL ok. */
void wisp_msess_destroy(struct wisp_msess *s);

/* Sets the subscriptions (copied; replaces the previous set): new filters
 * are subscribed now when connected, dropped ones unsubscribed; the whole
 * set is subscribed again on every connect. */
int wisp_msess_set_subscriptions(struct wisp_msess *s, const struct wisp_msess_sub *subs, size_t n);

/* Acknowledges a QoS 1 (PUBACK) or QoS 2 (PUBREC) message once it is
 * safe. Ignored (returns -ENOTCONN) when the connection it came on is
 * gone: the broker will redeliver it. */
int wisp_msess_ack(struct wisp_msess *s, uint16_t pid, int qos);

/* Publishes on the session. qos 0..2. msg_id (may be NULL): with MQTT 5
 * sent as the user property ("wisp-id", msg_id). Returns 0 (on_published
 * follows), -ENOTCONN when not connected (nothing queued: the caller keeps
 * the message and tries after on_connected), -ENOBUFS when the in-flight
 * window is full (the server's v5 Receive Maximum, else 65535 packet ids in
 * use; also when the output buffer is past its cap) - try again after an
 * on_published - or -EINVAL for a bad topic/qos/size (UTF-8, no wildcards,
 * not empty, within the server's Maximum Packet Size). Messages are written
 * in call order. */
int wisp_msess_publish(struct wisp_msess *s, const char *topic, const void *payload, size_t len,
                       int qos, bool retain, const char *msg_id, uint64_t token);
/* Publishes accepted and not completed yet. */
size_t wisp_msess_inflight(const struct wisp_msess *s);

/* Stops reading new PUBLISH packets (backpressure) or resumes. */
void wisp_msess_pause(struct wisp_msess *s, bool paused);

/* Milliseconds until wisp_msess_tick has work (connect retry, keepalive),
 * or -1. */
int wisp_msess_next_timeout_ms(const struct wisp_msess *s, uint64_t now_ns);
void wisp_msess_tick(struct wisp_msess *s, uint64_t now_ns);

void wisp_msess_get_stats(const struct wisp_msess *s, struct wisp_msess_stats *out);

/* Connected, and every SUBSCRIBE sent on this connection is answered. */
bool wisp_msess_subscribed(const struct wisp_msess *s);

#endif
