/*
 * Draining the messages Paho holds back after messageArrived returned 0.
 *
 * Backpressure, as Paho 1.3.12 really behaves (found by experiment, see
 * tests/integration/mqtt_client.c):
 * - When messageArrived returns 0, Paho keeps the message at the head of its
 *   own in-memory queue and offers it again later. The broker has already
 *   been sent PUBACK for QoS 1 (Paho acknowledges before calling us), so
 *   this does not slow the broker down; it only moves the backlog into
 *   Paho's memory, unbounded.
 * - While that queue is not empty, new messages are appended to it without
 *   calling us, and Paho offers the head again only when it reads a packet
 *   from the socket: one message per packet received. On a quiet connection
 *   the next packet is the keepalive PINGRESP, so a backlog of N messages
 *   would take N keepalive periods to drain.
 * - That queue survives a reconnect, also with a clean session (50 deferred
 *   messages all arrived after a broker restart; the test checks 20). It
 *   does not survive the process: those messages were acknowledged already.
 * So after deferring we "nudge": each UNSUBSCRIBE of a filter nobody uses
 * makes the broker answer with an UNSUBACK, and Paho offers one queued
 * message in the same receive cycle, just before calling the UNSUBSCRIBE's
 * onSuccess. Nudges are sent from the loop thread only while there is room
 * in our queue, and stop once a nudge comes back without any message having
 * arrived since it was sent (Paho's queue was empty then).
 */
#define WISP_LOG_MODULE "mqtt"
#include "mqtt_internal.h"

#include <stdlib.h>

#include "log.h"

/* Never subscribed to: unsubscribing from it only provokes an UNSUBACK. */
#define NUDGE_FILTER "$wisp/nudge"

enum { NUDGE_MAX = 4 };

struct nudge {
    struct wisp_mqtt *m;
    uint64_t mark; /* m->arrivals when the nudge was sent */
};

static void nudge_done(struct nudge *nd, bool answered)
{
    struct wisp_mqtt *m = nd->m;
    mqtt_cb_enter(m);
    pthread_mutex_lock(&m->lock);
    m->nudges--;
    /* The UNSUBACK was read in the same receive cycle in which Paho offered
     * its queue's head: no arrival since the nudge left means it was empty. */
    if (answered && m->arrivals == nd->mark)
        m->backlog = false;
    pthread_mutex_unlock(&m->lock);
    free(nd);
    mqtt_signal(m); /* the loop sends the next nudge if there is room */
    mqtt_cb_leave(m);
}

static void on_nudge_ok(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    nudge_done(ctx, true);
}

static void on_nudge_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    nudge_done(ctx, false);
}

static void on_nudge_ok5(void *ctx, MQTTAsync_successData5 *r)
{
    (void)r;
    nudge_done(ctx, true);
}

static void on_nudge_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
    /* A refused UNSUBSCRIBE was still answered by a packet. */
    nudge_done(ctx, r && r->reasonCode >= 0x80);
}

void mqtt_in_nudge(struct wisp_mqtt *m)
{
    for (;;) {
        pthread_mutex_lock(&m->lock);
        bool go = m->backlog && m->link == LINK_UP && m->nudges < NUDGE_MAX &&
                  m->queued + (size_t)m->nudges < m->max_queued;
        uint64_t mark = m->arrivals;
        if (go)
            m->nudges++;
        pthread_mutex_unlock(&m->lock);
        if (!go)
            return;
        struct nudge *nd = malloc(sizeof(*nd));
        int rc = MQTTASYNC_FAILURE;
        if (nd) {
            *nd = (struct nudge){.m = m, .mark = mark};
            MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
            ro.context = nd;
            if (m->version == MQTTVERSION_5) {
                ro.onSuccess5 = on_nudge_ok5;
                ro.onFailure5 = on_nudge_fail5;
            } else {
                ro.onSuccess = on_nudge_ok;
                ro.onFailure = on_nudge_fail;
            }
            rc = m->api->unsubscribe(m->client, NUDGE_FILTER, &ro);
        }
        if (rc != MQTTASYNC_SUCCESS) {
            free(nd);
            pthread_mutex_lock(&m->lock);
            m->nudges--;
            pthread_mutex_unlock(&m->lock);
            return;
        }
    }
}
