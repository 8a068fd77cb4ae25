#include "mqtt_harness.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "util.h"

enum { MAX_CLIENTS = 8 };
static struct tc *clients[MAX_CLIENTS];

bool broker_up(struct wisp_testbroker *b, const struct wisp_testbroker_opts *opts)
{
    if (wisp_testbroker_start(b, opts) == 0)
        return true;
    CHECK(!"broker");
    return false;
}

void cfg_init(struct wisp_mqtt_config *c, const char *uri, const char *id, int version)
{
    memset(c, 0, sizeof(*c));
    c->uri = uri;
    c->client_id = id;
    c->version = version;
    c->clean_start = 1;
    c->keepalive_s = 10;
    c->reconnect_min_ms = 100;
    c->reconnect_max_ms = 1000;
}

bool tc_open(struct tc *t, const struct wisp_mqtt_config *c, const char *const *filters)
{
    char err[512];
    int qos[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    size_t n = 0;
    memset(t, 0, sizeof(*t));
    if (wisp_mqtt_create(c, &t->m, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "create %s: %s\n", c->client_id, err);
        return false;
    }
    while (filters && filters[n])
        n++;
    CHECK_INT_EQ(wisp_mqtt_set_subscriptions(t->m, filters, qos, n), 0);
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (!clients[i]) {
            clients[i] = t;
            break;
        }
    }
    return wisp_mqtt_start(t->m) == 0;
}

void tc_close(struct tc *t)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i] == t)
            clients[i] = NULL;
    wisp_mqtt_destroy(t->m, 1000);
    wisp_mqtt_msg_free(t->head);
    memset(t, 0, sizeof(*t));
}

void tc_append(struct tc *t, struct wisp_mqtt_msg *chain)
{
    for (struct wisp_mqtt_msg *next; chain; chain = next) {
        next = chain->next;
        chain->next = NULL;
        if (t->tail)
            t->tail->next = chain;
        else
            t->head = chain;
        t->tail = chain;
    }
}

void pump(int ms)
{
    struct pollfd p[MAX_CLIENTS];
    int n = 0, wait = ms;
    uint64_t now = wisp_mono_ns();
    for (int i = 0; i < MAX_CLIENTS; i++) {
        if (!clients[i])
            continue;
        int t = wisp_mqtt_tick(clients[i]->m, now);
        wait = t >= 0 && t < wait ? t : wait;
        p[n++] = (struct pollfd){.fd = wisp_mqtt_fd(clients[i]->m), .events = POLLIN};
    }
    if (poll(p, (nfds_t)n, wait) <= 0)
        return;
    for (int i = 0, k = 0; i < MAX_CLIENTS; i++) {
        if (!clients[i])
            continue;
        if (p[k++].revents & POLLIN)
            tc_append(clients[i], wisp_mqtt_take(clients[i]->m));
    }
}

static struct wisp_mqtt_msg *tc_remove(struct tc *t, enum wisp_mqtt_event_kind kind,
                                       const char *topic, const char *payload)
{
    for (struct wisp_mqtt_msg **pp = &t->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        struct wisp_mqtt_msg *e = *pp;
        if (e->kind != kind || (topic && strcmp(e->topic, topic) != 0) ||
            (payload && strcmp(e->payload, payload) != 0))
            continue;
        *pp = e->next;
        if (t->tail == e)
            t->tail = prev;
        e->next = NULL;
        return e;
    }
    return NULL;
}

struct wisp_mqtt_msg *tc_wait(struct tc *t, enum wisp_mqtt_event_kind kind, const char *topic,
                              const char *payload, int timeout_ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        struct wisp_mqtt_msg *e = tc_remove(t, kind, topic, payload);
        if (e)
            return e;
        uint64_t now = wisp_mono_ns();
        if (now >= deadline)
            return NULL;
        int left = (int)((deadline - now) / 1000000u) + 1;
        pump(left < 50 ? left : 50);
    }
}

bool tc_expect(struct tc *t, enum wisp_mqtt_event_kind kind, const char *topic, const char *payload,
               int timeout_ms)
{
    struct wisp_mqtt_msg *e = tc_wait(t, kind, topic, payload, timeout_ms);
    if (!e && kind == WISP_MQTT_MESSAGE)
        (void)fprintf(stderr, "  no message on %s within %d ms\n", topic ? topic : "any topic",
                      timeout_ms);
    else if (!e)
        (void)fprintf(stderr, "  no %s event within %d ms\n",
                      kind == WISP_MQTT_LOST ? "LOST" : "CONNECTED", timeout_ms);
    wisp_mqtt_msg_free(e);
    return e != NULL;
}

void tc_expect_lost(struct tc *t, bool connect_failed, const char *want, const char *say)
{
    struct wisp_mqtt_msg *e = tc_wait(t, WISP_MQTT_LOST, NULL, NULL, 5000);
    CHECK(e != NULL);
    if (!e)
        return;
    CHECK_INT_EQ(e->connect_failed, connect_failed);
    if (connect_failed)
        CHECK(e->reason && *e->reason);
    if (want)
        CHECK_CONTAINS(e->reason, want);
    if (say)
        (void)fprintf(stderr, "  %s: %s\n", say, e->reason ? e->reason : "-");
    wisp_mqtt_msg_free(e);
}

bool tc_sync(struct tc *t, const char *topic, int timeout_ms)
{
    static int seq;
    char probe[32];
    (void)snprintf(probe, sizeof(probe), "probe-%d", ++seq);
    for (int waited = 0; waited < timeout_ms; waited += 300) {
        if (wisp_mqtt_publish(t->m, topic, probe, strlen(probe), 0, 0) != 0)
            return false;
        if (tc_expect(t, WISP_MQTT_MESSAGE, topic, probe, 300))
            return true;
    }
    return false;
}

bool tc_flush(struct tc *t, int timeout_ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (wisp_mqtt_pending(t->m) > 0 && wisp_mono_ns() < deadline)
        pump(10);
    return wisp_mqtt_pending(t->m) == 0;
}

size_t tc_count(const struct tc *t, const char *topic)
{
    size_t n = 0;
    for (const struct wisp_mqtt_msg *e = t->head; e; e = e->next)
        n += e->kind == WISP_MQTT_MESSAGE && (!topic || strcmp(e->topic, topic) == 0);
    return n;
}

void tc_drop_all(struct tc *t)
{
    wisp_mqtt_msg_free(t->head);
    t->head = t->tail = NULL;
}

int pub(struct tc *t, const char *topic, const char *payload, int qos, int retain)
{
    return wisp_mqtt_publish(t->m, topic, payload, strlen(payload), qos, retain);
}
