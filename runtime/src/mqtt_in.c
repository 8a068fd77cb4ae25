/*
 * The inbound side of the MQTT connection: the queue Paho's receive thread
 * fills and the loop drains (wisp_mqtt_take), backpressure, and the set of
 * subscriptions that is (re)sent on every connection. How messages held
 * back for backpressure get delivered: see mqtt_nudge.c.
 */
#define WISP_LOG_MODULE "mqtt"
#include "mqtt_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "topic.h"
#include "util.h"

void wisp_mqtt_msg_free(struct wisp_mqtt_msg *m)
{
    while (m) {
        struct wisp_mqtt_msg *next = m->next;
        free(m->topic);
        free(m->payload);
        free(m->reason);
        free(m);
        m = next;
    }
}

struct wisp_mqtt_msg *mqtt_state_event(enum wisp_mqtt_event_kind kind, const char *reason,
                                       int connect_failed)
{
    struct wisp_mqtt_msg *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return NULL;
    ev->kind = kind;
    ev->connect_failed = connect_failed;
    if (reason)
        ev->reason = wisp_strndup(reason, strlen(reason)); /* NULL on OOM is allowed */
    return ev;
}

void mqtt_push_locked(struct wisp_mqtt *m, struct wisp_mqtt_msg *ev)
{
    ev->next = NULL;
    if (m->tail)
        m->tail->next = ev;
    else
        m->head = ev;
    m->tail = ev;
    if (ev->kind == WISP_MQTT_MESSAGE)
        m->queued++;
}

static struct wisp_mqtt_msg *copy_message(const char *topic, int topic_len,
                                          const MQTTAsync_message *msg)
{
    struct wisp_mqtt_msg *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return NULL;
    size_t tlen = topic_len > 0 ? (size_t)topic_len : strlen(topic);
    size_t plen = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    ev->kind = WISP_MQTT_MESSAGE;
    ev->topic = wisp_strndup(topic, tlen);
    ev->topic_len = tlen;
    ev->payload = malloc(plen + 1);
    if (!ev->topic || !ev->payload) {
        wisp_mqtt_msg_free(ev);
        return NULL;
    }
    if (plen)
        memcpy(ev->payload, msg->payload, plen);
    ev->payload[plen] = '\0';
    ev->payload_len = plen;
    ev->qos = msg->qos;
    ev->retain = msg->retained;
    return ev;
}

/* Paho's receive thread. Returning 0 leaves the message with Paho, which
 * offers it again later (see the top of this file); returning 1 means we
 * took it and freed Paho's copy. */
int mqtt_on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *msg)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    /* Copy first, outside the lock, so the loop's take stays short; a copy
     * made for a full queue is simply dropped (Paho offers it again). */
    struct wisp_mqtt_msg *ev = copy_message(topic, topic_len, msg);
    bool wake = false, taken = false;
    pthread_mutex_lock(&m->lock);
    m->arrivals++;
    if (ev && m->queued < m->max_queued) {
        /* The loop drains the whole queue after reading the eventfd, so
         * only the message that finds the queue empty needs to wake it:
         * one write per burst instead of one per message. */
        wake = m->head == NULL;
        mqtt_push_locked(m, ev);
        taken = true;
    } else {
        m->backlog = true;
    }
    pthread_mutex_unlock(&m->lock);
    if (!taken) {
        wisp_mqtt_msg_free(ev);
        atomic_fetch_add(&m->st.redelivery_deferred, 1);
        mqtt_cb_leave(m);
        return 0;
    }
    atomic_fetch_add(&m->st.received, 1);
    if (wake)
        mqtt_signal(m);
    m->api->freeMessage(&msg);
    m->api->free_(topic);
    mqtt_cb_leave(m);
    return 1;
}

/* ---- subscriptions ------------------------------------------------------ */

/* The context of one SUBSCRIBE, so that its answer can name the filters. */
struct sub_req {
    struct wisp_mqtt *m;
    size_t n;
    struct mqtt_sub subs[];
};

static void free_subs(struct mqtt_sub *subs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(subs[i].filter);
    free(subs);
}

static void sub_result(struct sub_req *req, size_t i, int code)
{
    if (code < 0x80)
        return;
    atomic_fetch_add(&req->m->st.subscribe_failed, 1);
    /* MQTT 3.1.1 has a single failure code, 0x80; MQTT 5 says why. */
    log_warn("broker %s refused the subscription to '%s' (qos %d): %s (0x%02x)", req->m->uri,
             req->subs[i].filter, req->subs[i].qos,
             req->m->version == MQTTVERSION_5 ? mqtt_reason_string((enum MQTTReasonCodes)code)
                                              : "failure",
             (unsigned)code);
}

static void sub_interrupted(struct sub_req *req, int code)
{
    if (!atomic_load(&req->m->destroying))
        log_debug("subscribe request for %zu filter(s) did not complete (%s); the set is sent "
                  "again on the next connection",
                  req->n, mqtt_paho_err(code));
}

static void sub_done(struct sub_req *req)
{
    struct wisp_mqtt *m = req->m;
    atomic_fetch_sub(&m->subs_inflight, 1);
    mqtt_signal(m); /* the loop may now say it is ready */
    for (size_t i = 0; i < req->n; i++)
        free(req->subs[i].filter);
    free(req);
    mqtt_cb_leave(m);
}

static void on_sub_ok(void *ctx, MQTTAsync_successData *r)
{
    struct sub_req *req = ctx;
    mqtt_cb_enter(req->m);
    if (r && req->n == 1)
        sub_result(req, 0, r->alt.qos);
    else if (r && r->alt.qosList)
        for (size_t i = 0; i < req->n; i++)
            sub_result(req, i, r->alt.qosList[i]);
    sub_done(req);
}

static void on_sub_fail(void *ctx, MQTTAsync_failureData *r)
{
    struct sub_req *req = ctx;
    mqtt_cb_enter(req->m);
    /* With one filter Paho reports the broker's 0x80 as a failure. */
    if (r && r->code == MQTT_BAD_SUBSCRIBE)
        sub_result(req, 0, r->code);
    else
        sub_interrupted(req, r ? r->code : MQTTASYNC_FAILURE);
    sub_done(req);
}

static void on_sub_ok5(void *ctx, MQTTAsync_successData5 *r)
{
    struct sub_req *req = ctx;
    mqtt_cb_enter(req->m);
    if (r && req->n == 1)
        sub_result(req, 0, (int)r->reasonCode);
    else if (r && r->alt.sub.reasonCodes)
        for (size_t i = 0; i < req->n && i < (size_t)r->alt.sub.reasonCodeCount; i++)
            sub_result(req, i, (int)r->alt.sub.reasonCodes[i]);
    sub_done(req);
}

static void on_sub_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
    struct sub_req *req = ctx;
    mqtt_cb_enter(req->m);
    if (r && r->reasonCode >= 0x80)
        sub_result(req, 0, (int)r->reasonCode);
    else
        sub_interrupted(req, r ? r->code : MQTTASYNC_FAILURE);
    sub_done(req);
}

/* Sends one SUBSCRIBE for subs[0..n). Loop thread. */
static int send_subscribe(struct wisp_mqtt *m, const struct mqtt_sub *subs, size_t n)
{
    if (n == 0)
        return 0;
    if (n > INT_MAX / 2)
        return -E2BIG;
    int rc = -ENOMEM;
    struct sub_req *req = calloc(1, sizeof(*req) + n * sizeof(req->subs[0]));
    char **filters = calloc(n, sizeof(*filters));
    int *qos = calloc(n, sizeof(*qos));
    MQTTSubscribe_options *opts = calloc(n, sizeof(*opts));
    if (!req || !filters || !qos || !opts)
        goto out;
    req->m = m;
    for (size_t i = 0; i < n; i++, req->n++) {
        MQTTSubscribe_options o = MQTTSubscribe_options_initializer;
        /* MQTT 5: retained messages only for a subscription that is new at
         * the broker, so a resumed session does not replay them. */
        o.retainHandling = 1;
        opts[i] = o;
        req->subs[i].qos = qos[i] = subs[i].qos;
        if (!(req->subs[i].filter = filters[i] =
                  wisp_strndup(subs[i].filter, strlen(subs[i].filter))))
            goto out;
    }
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.context = req;
    if (m->version == MQTTVERSION_5) {
        ro.onSuccess5 = on_sub_ok5;
        ro.onFailure5 = on_sub_fail5;
        ro.subscribeOptions = opts[0];
        ro.subscribeOptionsCount = (int)n;
        ro.subscribeOptionsList = opts;
    } else {
        ro.onSuccess = on_sub_ok;
        ro.onFailure = on_sub_fail;
    }
    atomic_fetch_add(&m->subs_inflight, 1);
    int prc = m->api->subscribeMany(m->client, (int)n, filters, qos, &ro);
    if (prc == MQTTASYNC_SUCCESS) {
        req = NULL; /* the callback frees it */
        rc = 0;
    } else {
        atomic_fetch_sub(&m->subs_inflight, 1);
        log_debug("subscribe to %zu filter(s) not sent: %s", n, mqtt_paho_err(prc));
        rc = prc == MQTTASYNC_DISCONNECTED ? -ENOTCONN : -EIO;
    }
out:
    if (req)
        for (size_t i = 0; i < req->n; i++)
            free(req->subs[i].filter);
    free(req);
    free(filters);
    free(qos);
    free(opts);
    return rc;
}

static void on_unsub_fail(void *ctx, MQTTAsync_failureData *r)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    if (!atomic_load(&m->destroying))
        log_debug("unsubscribe did not complete: %s", mqtt_paho_err(r ? r->code : -1));
    mqtt_cb_leave(m);
}

static void on_unsub_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    if (r && r->reasonCode >= 0x80)
        log_warn("broker %s refused an unsubscribe: %s (0x%02x)", m->uri,
                 mqtt_reason_string(r->reasonCode), (unsigned)r->reasonCode);
    else if (!atomic_load(&m->destroying))
        log_debug("unsubscribe did not complete: %s", mqtt_paho_err(r ? r->code : -1));
    mqtt_cb_leave(m);
}

static void on_intake_unsub(void *ctx, MQTTAsync_successData *r);
static void on_intake_unsub5(void *ctx, MQTTAsync_successData5 *r);
static void on_intake_unsub_fail(void *ctx, MQTTAsync_failureData *r);
static void on_intake_unsub_fail5(void *ctx, MQTTAsync_failureData5 *r);

/* Unsubscribes filters; when it ends intake, its answer (either way) marks
 * that nothing more will arrive. */
static int send_unsubscribe(struct wisp_mqtt *m, char *const *filters, size_t n, bool intake)
{
    if (n == 0)
        return 0;
    if (n > INT_MAX)
        return -E2BIG;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.context = m;
    if (m->version == MQTTVERSION_5) {
        ro.onSuccess5 = intake ? on_intake_unsub5 : NULL;
        ro.onFailure5 = intake ? on_intake_unsub_fail5 : on_unsub_fail5;
    } else {
        ro.onSuccess = intake ? on_intake_unsub : NULL;
        ro.onFailure = intake ? on_intake_unsub_fail : on_unsub_fail;
    }
    int rc = m->api->unsubscribeMany(m->client, (int)n, filters, &ro);
    return rc == MQTTASYNC_SUCCESS ? 0 : rc == MQTTASYNC_DISCONNECTED ? -ENOTCONN : -EIO;
}

/* Is the whole set known to be at the broker for the current connection? */
static bool set_is_live(struct wisp_mqtt *m)
{
    pthread_mutex_lock(&m->lock);
    bool live = m->link == LINK_UP && m->conn_gen == m->subscribed_gen;
    pthread_mutex_unlock(&m->lock);
    return live;
}

void mqtt_in_sync(struct wisp_mqtt *m)
{
    pthread_mutex_lock(&m->lock);
    bool up = m->link == LINK_UP;
    uint64_t gen = m->conn_gen;
    pthread_mutex_unlock(&m->lock);
    if (!up || gen == m->subscribed_gen)
        return;
    m->subscribed_gen = gen;
    int rc = send_subscribe(m, m->subs, m->nsubs);
    if (rc == -ENOMEM || rc == -EIO) {
        m->subscribed_gen = 0; /* try again at the next take or tick */
        log_warn("could not send %zu subscription(s) to %s: %s", m->nsubs, m->uri, strerror(-rc));
    }
}

static ssize_t find_sub(const struct mqtt_sub *subs, size_t n, const char *filter)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(subs[i].filter, filter) == 0)
            return (ssize_t)i;
    return -1;
}

/* Validates and copies the caller's set; a filter listed twice is kept
 * once, at the highest QoS asked for. */
static int build_set(const char *const *filters, const int *qos, size_t n, struct mqtt_sub **out,
                     size_t *nout)
{
    struct mqtt_sub *set = n ? calloc(n, sizeof(*set)) : NULL;
    size_t k = 0;
    if (n && !set)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        if (!filters[i] || qos[i] < 0 || qos[i] > 2 ||
            !wisp_topic_filter_valid(filters[i], strlen(filters[i]), &why)) {
            log_warn("subscription filter '%s' qos %d rejected: %s",
                     filters[i] ? filters[i] : "(null)", qos[i], why ? why : "bad qos");
            free_subs(set, k);
            return -EINVAL;
        }
        ssize_t at = find_sub(set, k, filters[i]);
        if (at >= 0) {
            set[at].qos = qos[i] > set[at].qos ? qos[i] : set[at].qos;
            continue;
        }
        if (!(set[k].filter = wisp_strndup(filters[i], strlen(filters[i])))) {
            free_subs(set, k);
            return -ENOMEM;
        }
        set[k++].qos = qos[i];
    }
    *out = set;
    *nout = k;
    return 0;
}

/* Sends what changed from the live set to `next`: UNSUBSCRIBE for filters
 * that are gone, SUBSCRIBE for new ones and those whose QoS changed. */
static int apply_diff(struct wisp_mqtt *m, const struct mqtt_sub *next, size_t nnext)
{
    int rc = -ENOMEM;
    char **gone = calloc(m->nsubs + 1, sizeof(*gone));
    struct mqtt_sub *added = calloc(nnext + 1, sizeof(*added));
    size_t ngone = 0, nadded = 0;
    if (!gone || !added)
        goto out;
    for (size_t i = 0; i < m->nsubs; i++)
        if (find_sub(next, nnext, m->subs[i].filter) < 0)
            gone[ngone++] = m->subs[i].filter;
    for (size_t i = 0; i < nnext; i++) {
        ssize_t at = find_sub(m->subs, m->nsubs, next[i].filter);
        if (at < 0 || m->subs[at].qos != next[i].qos)
            added[nadded++] = next[i];
    }
    rc = send_unsubscribe(m, gone, ngone, false);
    int rc2 = send_subscribe(m, added, nadded);
    rc = rc ? rc : rc2;
    log_debug("subscriptions: %zu removed, %zu added or changed", ngone, nadded);
out:
    free(gone);
    free(added); /* shallow: the filters belong to `next` */
    return rc;
}

int wisp_mqtt_set_subscriptions(struct wisp_mqtt *m, const char *const *filters, const int *qos,
                                size_t n)
{
    if (!m || (n && (!filters || !qos)))
        return -EINVAL;
    struct mqtt_sub *next = NULL;
    size_t nnext = 0;
    int rc = build_set(filters, qos, n, &next, &nnext);
    if (rc)
        return rc;
    /* Not live: the next connection (or the pending CONNECTED) sends the
     * whole new set, so there is nothing to send now. */
    if (set_is_live(m)) {
        rc = apply_diff(m, next, nnext);
        /* -ENOTCONN: the next connection gets the whole set anyway. */
        if (rc && rc != -ENOTCONN) {
            log_warn("could not update the subscriptions at %s: %s; sending the whole set", m->uri,
                     strerror(-rc));
            m->subscribed_gen = 0; /* mqtt_in_sync re-sends everything */
        }
    }
    free_subs(m->subs, m->nsubs);
    m->subs = next;
    m->nsubs = nnext;
    return 0;
}

/* The broker answers the UNSUBSCRIBE after every PUBLISH it sent before
 * it, and Paho hands those to messageArrived first: once this runs, all
 * that will ever arrive is in our queue (or held by Paho for redelivery). */
static void intake_done(void *ctx)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    atomic_store(&m->intake_done, true);
    mqtt_signal(m);
    mqtt_cb_leave(m);
}

static void on_intake_unsub(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    intake_done(ctx);
}

static void on_intake_unsub5(void *ctx, MQTTAsync_successData5 *r)
{
    (void)r;
    intake_done(ctx);
}

static void on_intake_unsub_fail(void *ctx, MQTTAsync_failureData *r)
{
    (void)r;
    intake_done(ctx);
}

static void on_intake_unsub_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
    (void)r;
    intake_done(ctx);
}

bool wisp_mqtt_intake_drained(struct wisp_mqtt *m)
{
    if (!atomic_load(&m->intake_done))
        return false;
    pthread_mutex_lock(&m->lock);
    bool empty = m->head == NULL && !m->backlog;
    pthread_mutex_unlock(&m->lock);
    return empty;
}

int wisp_mqtt_stop_intake(struct wisp_mqtt *m)
{
    if (!m)
        return -EINVAL;
    int rc = 0;
    if (set_is_live(m) && m->nsubs) {
        char **all = calloc(m->nsubs, sizeof(*all));
        if (!all)
            return -ENOMEM;
        for (size_t i = 0; i < m->nsubs; i++)
            all[i] = m->subs[i].filter;
        rc = send_unsubscribe(m, all, m->nsubs, true);
        free(all);
    }
    if (rc != 0 || !set_is_live(m) || m->nsubs == 0) {
        /* Not connected (a clean session holds nothing for us), nothing
         * subscribed, or the request failed: no answer will come, and
         * nothing more can arrive. */
        atomic_store(&m->intake_done, true);
        rc = 0;
    }
    log_info("intake stopped: unsubscribed from %zu filter(s)", m->nsubs);
    free_subs(m->subs, m->nsubs);
    m->subs = NULL;
    m->nsubs = 0;
    return rc;
}

/* ---- the loop's side ---------------------------------------------------- */

static void log_state(const struct wisp_mqtt *m, const struct wisp_mqtt_msg *ev)
{
    const char *why = ev->reason ? ev->reason : "unknown reason";
    if (ev->kind == WISP_MQTT_CONNECTED)
        log_info("connected to %s (MQTT %s); %zu subscription(s) sent", m->uri,
                 m->version == MQTTVERSION_5 ? "5" : "3.1.1", m->nsubs);
    else if (ev->connect_failed)
        log_warn("cannot connect to %s: %s; retrying", m->uri, why);
    else
        log_info("lost the connection to %s: %s; reconnecting", m->uri, why);
}

bool wisp_mqtt_subscribed(struct wisp_mqtt *m)
{
    if (m && m->nsubs == 0)
        return true; /* nothing to wait for */
    if (!m || !atomic_load(&m->connected))
        return false;
    pthread_mutex_lock(&m->lock);
    uint64_t gen = m->conn_gen;
    pthread_mutex_unlock(&m->lock);
    return m->subscribed_gen == gen && atomic_load(&m->subs_inflight) == 0;
}

struct wisp_mqtt_msg *wisp_mqtt_take(struct wisp_mqtt *m)
{
    if (!m)
        return NULL;
    uint64_t count;
    while (read(m->efd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&m->lock);
    struct wisp_mqtt_msg *chain = m->head;
    m->head = m->tail = NULL;
    m->queued = 0;
    pthread_mutex_unlock(&m->lock);
    /* Before CONNECTED reaches the caller, the subscriptions are on their way. */
    mqtt_in_sync(m);
    for (const struct wisp_mqtt_msg *ev = chain; ev; ev = ev->next)
        if (ev->kind == WISP_MQTT_CONNECTED || ev->kind == WISP_MQTT_LOST)
            log_state(m, ev);
    mqtt_in_nudge(m);
    mqtt_out_resend(m);
    return chain;
}

void mqtt_in_free(struct wisp_mqtt *m)
{
    wisp_mqtt_msg_free(m->head);
    m->head = m->tail = NULL;
    m->queued = 0;
    free_subs(m->subs, m->nsubs);
    m->subs = NULL;
    m->nsubs = 0;
}
