/*
 * Publishing over the MQTT connection, and the module's statistics.
 *
 * Paho 1.3.12, as found by experiment (tests/integration/mqtt_client.c):
 * - Messages published while disconnected, even before the first connect
 *   (allowDisconnectedSendAtAnyTime), wait in Paho's command queue and are
 *   sent after the reconnect, also with a clean session.
 * - When maxBufferedMessages is reached, Paho drops the oldest buffered
 *   message (deleteOldestMessages) WITHOUT calling any callback for it. So
 *   Paho's limit is set well above ours and wisp_mqtt_publish refuses new
 *   messages while max_buffered of them wait for a connection: every
 *   message handed to Paho then completes through a callback.
 * - QoS 1 messages in flight when the connection drops are failed with
 *   MQTTASYNC_OPERATION_INCOMPLETE at the next clean-session connect and
 *   not resent by Paho. We keep a copy of every QoS 1/2 message until it
 *   completes and send such messages again once connected (at least once;
 *   they may then follow messages published while the link was down).
 * - For QoS 0, onSuccess fires once the packet is written.
 */
#define WISP_LOG_MODULE "mqtt"
#include "mqtt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mqtt_internal.h"
#include "topic.h"
#include "util.h"

enum { MQTT_MAX_PAYLOAD = 268435455 }; /* the largest remaining length MQTT can encode */

/* Decrements the pending count without wrapping below zero: a message
 * counted as dropped may still complete later (see reconcile_drops). */
static void pending_sub(struct wisp_mqtt *m, size_t n)
{
    size_t cur = atomic_load(&m->pending);
    while (cur > 0 && !atomic_compare_exchange_weak(&m->pending, &cur, cur > n ? cur - n : 0)) {
    }
}

static void sent_ok(struct wisp_mqtt *m)
{
    pending_sub(m, 1);
    atomic_fetch_add(&m->st.delivered, 1);
}

static void sent_failed(struct wisp_mqtt *m, int code, int v5_reason)
{
    pending_sub(m, 1);
    uint64_t n = atomic_fetch_add(&m->st.publish_failed, 1);
    /* A dropped connection can fail thousands at once: log a sample. */
    if (!atomic_load(&m->destroying) && (n == 0 || (n + 1) % 1000 == 0))
        log_warn("publish failed (%llu so far): %s (code %d)%s%s", (unsigned long long)n + 1,
                 mqtt_paho_err(code), code, v5_reason >= 0x80 ? "; broker: " : "",
                 v5_reason >= 0x80 ? mqtt_reason_string((enum MQTTReasonCodes)v5_reason) : "");
}

/* A QoS 1/2 message kept until its delivery completes. */
struct mqtt_out {
    struct wisp_mqtt *m;
    struct mqtt_out *prev, *next; /* in live_head, or next only in the resend list */
    char *topic;
    char *payload;
    size_t len;
    int qos, retain;
    bool tracked;   /* an outbox message: its completion is reported, not resent */
    uint64_t token; /* for tracked ones */
};

static void out_free(struct mqtt_out *o)
{
    free(o->topic);
    free(o->payload);
    free(o);
}

static int send_out(struct mqtt_out *o);
static int send_msg(struct mqtt_out *o, const char *topic, const void *payload, size_t len,
                    const char *msg_id);

/* Under m->lock. Every kept message is on the live list while Paho holds
 * it, so destroy can free the ones no callback will ever complete. */
static void live_add(struct wisp_mqtt *m, struct mqtt_out *o)
{
    o->prev = NULL;
    o->next = m->live_head;
    if (m->live_head)
        m->live_head->prev = o;
    m->live_head = o;
}

static void live_remove(struct wisp_mqtt *m, struct mqtt_out *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        m->live_head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    o->prev = o->next = NULL;
}

/* Under m->lock: queues a tracked message's completion for the loop. */
static void report_locked(struct wisp_mqtt *m, const struct mqtt_out *o, bool ok)
{
    struct wisp_mqtt_msg *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        /* The outbox resends what it never hears about at the next connect. */
        return;
    }
    ev->kind = WISP_MQTT_DELIVERED;
    ev->token = o->token;
    ev->ok = ok;
    mqtt_push_locked(m, ev);
}

static void out_done(void *ctx)
{
    struct mqtt_out *o = ctx;
    struct wisp_mqtt *m = o->m;
    mqtt_cb_enter(m);
    pthread_mutex_lock(&m->lock);
    live_remove(m, o);
    if (o->tracked)
        report_locked(m, o, true);
    pthread_mutex_unlock(&m->lock);
    if (o->tracked)
        mqtt_signal(m);
    sent_ok(m);
    out_free(o);
    mqtt_cb_leave(m);
}

static void on_out_sent(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    out_done(ctx);
}

static void on_out_sent5(void *ctx, MQTTAsync_successData5 *r)
{
    (void)r;
    out_done(ctx);
}

/* A connection that went away takes in-flight messages with it: those are
 * kept (still pending) for mqtt_out_resend; other failures are final. */
static void out_failed(struct mqtt_out *o, int code, int v5_reason)
{
    struct wisp_mqtt *m = o->m;
    mqtt_cb_enter(m);
    pthread_mutex_lock(&m->lock);
    live_remove(m, o);
    if (o->tracked)
        report_locked(m, o, false);
    pthread_mutex_unlock(&m->lock);
    if (o->tracked) {
        mqtt_signal(m);
        pending_sub(m, 1);
        out_free(o);
    } else if ((code == MQTTASYNC_OPERATION_INCOMPLETE || code == MQTTASYNC_DISCONNECTED) &&
               !atomic_load(&m->destroying)) {
        pthread_mutex_lock(&m->lock);
        o->next = NULL;
        if (m->resend_tail)
            m->resend_tail->next = o;
        else
            m->resend_head = o;
        m->resend_tail = o;
        pthread_mutex_unlock(&m->lock);
        mqtt_signal(m);
    } else {
        sent_failed(m, code, v5_reason);
        out_free(o);
    }
    mqtt_cb_leave(m);
}

static void on_out_failed(void *ctx, MQTTAsync_failureData *r)
{
    out_failed(ctx, r ? r->code : MQTTASYNC_FAILURE, 0);
}

static void on_out_failed5(void *ctx, MQTTAsync_failureData5 *r)
{
    out_failed(ctx, r ? r->code : MQTTASYNC_FAILURE, r ? (int)r->reasonCode : 0);
}

void mqtt_out_resend(struct wisp_mqtt *m)
{
    if (!atomic_load(&m->connected))
        return;
    pthread_mutex_lock(&m->lock);
    struct mqtt_out *o = m->resend_head;
    m->resend_head = m->resend_tail = NULL;
    pthread_mutex_unlock(&m->lock);
    size_t n = 0;
    while (o) {
        struct mqtt_out *next = o->next;
        if (send_out(o) != 0) {
            pending_sub(m, 1);
            atomic_fetch_add(&m->st.publish_failed, 1);
            out_free(o);
        }
        n++;
        o = next;
    }
    if (n)
        log_info("re-sent %zu QoS 1/2 message(s) that the lost connection cut off", n);
}

static void free_chain(struct mqtt_out *o)
{
    while (o) {
        struct mqtt_out *next = o->next;
        out_free(o);
        o = next;
    }
}

/* After MQTTAsync_destroy: no callback can run any more. */
void mqtt_out_free(struct wisp_mqtt *m)
{
    free_chain(m->resend_head);
    free_chain(m->live_head);
    m->resend_head = m->resend_tail = m->live_head = NULL;
}

static void on_sent(void *ctx, MQTTAsync_successData *r)
{
    struct wisp_mqtt *m = ctx;
    (void)r;
    mqtt_cb_enter(m);
    sent_ok(m);
    mqtt_cb_leave(m);
}

static void on_sent5(void *ctx, MQTTAsync_successData5 *r)
{
    struct wisp_mqtt *m = ctx;
    (void)r;
    mqtt_cb_enter(m);
    sent_ok(m);
    mqtt_cb_leave(m);
}

static void on_send_failed(void *ctx, MQTTAsync_failureData *r)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    sent_failed(m, r ? r->code : MQTTASYNC_FAILURE, 0);
    mqtt_cb_leave(m);
}

static void on_send_failed5(void *ctx, MQTTAsync_failureData5 *r)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    sent_failed(m, r ? r->code : MQTTASYNC_FAILURE, r ? (int)r->reasonCode : 0);
    mqtt_cb_leave(m);
}

static int map_send_error(int rc)
{
    switch (rc) {
    case MQTTASYNC_BAD_UTF8_STRING:
    case MQTTASYNC_BAD_QOS:
    case MQTTASYNC_NULL_PARAMETER:
    case MQTTASYNC_BAD_STRUCTURE:
        return -EINVAL;
    case MQTTASYNC_MAX_BUFFERED_MESSAGES:
        return -ENOBUFS;
    case MQTTASYNC_DISCONNECTED:
        return -ENOTCONN;
    default:
        return -EIO;
    }
}

/* Hands a kept message to Paho; it stays owned by the callbacks. */
static int send_out(struct mqtt_out *o)
{
    return send_msg(o, o->topic, o->payload, o->len, NULL);
}

/* Paho copies topic, payload and properties. msg_id (may be NULL) travels
 * as the MQTT 5 user property "wisp-id". */
static int send_msg(struct mqtt_out *o, const char *topic, const void *payload, size_t len,
                    const char *msg_id)
{
    struct wisp_mqtt *m = o->m;
    pthread_mutex_lock(&m->lock);
    live_add(m, o);
    pthread_mutex_unlock(&m->lock);
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)(len ? payload : "");
    msg.payloadlen = (int)len;
    msg.qos = o->qos;
    msg.retained = o->retain != 0;
    MQTTProperty prop;
    if (msg_id && m->version == MQTTVERSION_5) {
        memset(&prop, 0, sizeof(prop));
        prop.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
        prop.value.data.data = (char *)"wisp-id";
        prop.value.data.len = 7;
        prop.value.value.data = (char *)msg_id;
        prop.value.value.len = (int)strlen(msg_id);
        msg.properties.count = 1;
        msg.properties.max_count = 1;
        msg.properties.length = 0;
        msg.properties.array = &prop;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.context = o;
    if (m->version == MQTTVERSION_5) {
        ro.onSuccess5 = on_out_sent5;
        ro.onFailure5 = on_out_failed5;
    } else {
        ro.onSuccess = on_out_sent;
        ro.onFailure = on_out_failed;
    }
    int rc = m->api->sendMessage(m->client, topic, &msg, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        pthread_mutex_lock(&m->lock);
        live_remove(m, o);
        pthread_mutex_unlock(&m->lock);
    }
    return rc;
}

static int send_qos0(struct wisp_mqtt *m, const char *topic, const void *payload, size_t len,
                     int retain)
{
    MQTTAsync_message msg = MQTTAsync_message_initializer;
    msg.payload = (void *)(len ? payload : ""); /* Paho copies it */
    msg.payloadlen = (int)len;
    msg.qos = 0;
    msg.retained = retain != 0;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.context = m;
    if (m->version == MQTTVERSION_5) {
        ro.onSuccess5 = on_sent5;
        ro.onFailure5 = on_send_failed5;
    } else {
        ro.onSuccess = on_sent;
        ro.onFailure = on_send_failed;
    }
    return m->api->sendMessage(m->client, topic, &msg, &ro);
}

int wisp_mqtt_publish(struct wisp_mqtt *m, const char *topic, const void *payload, size_t len,
                      int qos, int retain)
{
    const char *why = NULL;
    if (!m || !topic || qos < 0 || qos > 2 || len > MQTT_MAX_PAYLOAD || (!payload && len))
        return -EINVAL;
    if (!wisp_topic_name_valid(topic, strlen(topic), &why)) {
        log_debug("not publishing to '%s': %s", topic, why);
        return -EINVAL;
    }
    if (!atomic_load(&m->connected) && atomic_load(&m->pending) >= (size_t)m->max_buffered) {
        uint64_t n = atomic_fetch_add(&m->st.dropped_outgoing, 1) + 1;
        uint64_t now = wisp_mono_ns();
        if (now - m->drop_logged_ns >= 1000000000u) {
            m->drop_logged_ns = now;
            log_warn("offline buffer full (mqtt.max_buffered %d): message to %s dropped, %llu so "
                     "far",
                     m->max_buffered, topic, (unsigned long long)n);
        }
        return -ENOBUFS;
    }
    struct mqtt_out *o = NULL;
    if (qos > 0) {
        o = calloc(1, sizeof(*o));
        if (!o || !(o->topic = wisp_strndup(topic, strlen(topic))) ||
            !(o->payload = wisp_strndup(payload ? payload : "", len))) {
            if (o)
                out_free(o);
            return -ENOMEM;
        }
        o->m = m;
        o->len = len;
        o->qos = qos;
        o->retain = retain;
    }
    atomic_fetch_add(&m->pending, 1);
    int rc = o ? send_out(o) : send_qos0(m, topic, payload, len, retain);
    if (rc != MQTTASYNC_SUCCESS) {
        if (o)
            out_free(o);
        pending_sub(m, 1);
        atomic_fetch_add(&m->st.publish_failed, 1);
        log_debug("publish to '%s' refused: %s", topic, mqtt_paho_err(rc));
        return map_send_error(rc);
    }
    atomic_fetch_add(&m->st.published, 1);
    return 0;
}

int wisp_mqtt_publish_tracked(struct wisp_mqtt *m, const char *topic, const void *payload,
                              size_t len, int qos, int retain, const char *msg_id, uint64_t token)
{
    const char *why = NULL;
    if (!m || !topic || qos < 1 || qos > 2 || len > MQTT_MAX_PAYLOAD || (!payload && len))
        return -EINVAL;
    if (!wisp_topic_name_valid(topic, strlen(topic), &why))
        return -EINVAL;
    struct mqtt_out *o = calloc(1, sizeof(*o));
    if (!o)
        return -ENOMEM;
    o->m = m;
    o->qos = qos;
    o->retain = retain;
    o->tracked = true;
    o->token = token;
    atomic_fetch_add(&m->pending, 1);
    int rc = send_msg(o, topic, payload, len, msg_id);
    if (rc != MQTTASYNC_SUCCESS) {
        out_free(o);
        pending_sub(m, 1);
        log_debug("publish to '%s' refused: %s", topic, mqtt_paho_err(rc));
        return map_send_error(rc);
    }
    atomic_fetch_add(&m->st.published, 1);
    return 0;
}

size_t wisp_mqtt_pending(const struct wisp_mqtt *m)
{
    return m ? atomic_load(&m->pending) : 0;
}

void wisp_mqtt_get_stats(const struct wisp_mqtt *m, struct wisp_mqtt_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!m)
        return;
    out->received = atomic_load(&m->st.received);
    out->published = atomic_load(&m->st.published);
    out->delivered = atomic_load(&m->st.delivered);
    out->publish_failed = atomic_load(&m->st.publish_failed);
    out->dropped_outgoing = atomic_load(&m->st.dropped_outgoing);
    out->redelivery_deferred = atomic_load(&m->st.redelivery_deferred);
    out->connects = atomic_load(&m->st.connects);
    out->connection_lost = atomic_load(&m->st.connection_lost);
    out->subscribe_failed = atomic_load(&m->st.subscribe_failed);
    out->connected = atomic_load(&m->connected);
}
