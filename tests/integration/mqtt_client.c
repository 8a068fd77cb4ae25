/*
 * wisp_mqtt against a real mosquitto on a free loopback port: receiving with
 * wildcards (exact topic, payload, QoS, retain), publishing QoS 0 and 1,
 * MQTT 3.1.1 and 5, replacing subscriptions, a broker that comes up late, a
 * broker restart mid-stream, messages published while offline, TLS with
 * client certificates, configuration errors, refused connections and
 * subscriptions, and backpressure (also across a broker restart). Every
 * wait polls a condition against a deadline; the run takes about 25 s.
 *
 * WISP_TEST_LOG=debug shows the module's debug lines.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "mqtt.h"
#include "testbroker.h"
#include "util.h"

/* A client and the events the loop took that the test has not consumed. */
struct tc {
    struct wisp_mqtt *m;
    struct wisp_mqtt_msg *head, *tail;
};

enum { MAX_CLIENTS = 8 };
static struct tc *clients[MAX_CLIENTS];

static void cfg_init(struct wisp_mqtt_config *c, const char *uri, const char *id, int version)
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

/* Creates the client, sets its subscriptions (NULL-terminated) and starts it. */
static bool tc_open(struct tc *t, const struct wisp_mqtt_config *c, const char *const *filters)
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

static void tc_close(struct tc *t)
{
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (clients[i] == t)
            clients[i] = NULL;
    wisp_mqtt_destroy(t->m, 1000);
    wisp_mqtt_msg_free(t->head);
    memset(t, 0, sizeof(*t));
}

static void tc_append(struct tc *t, struct wisp_mqtt_msg *chain)
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

/* One loop iteration over every open client: wait up to ms for an eventfd
 * (or for a tick that is due), take what is there, tick. */
static void pump(int ms)
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

/* Pumps until t has an event of `kind` (for messages: on topic, with the
 * payload, when given) and hands it over; NULL after timeout_ms. */
static struct wisp_mqtt_msg *tc_wait(struct tc *t, enum wisp_mqtt_event_kind kind,
                                     const char *topic, const char *payload, int timeout_ms)
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

/* Waits for an event and frees it; true when it came. */
static bool tc_expect(struct tc *t, enum wisp_mqtt_event_kind kind, const char *topic,
                      const char *payload, int timeout_ms)
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

/* Publishes probes on topic (which t subscribes to) every 300 ms until one
 * comes back: then every subscription t sent before is in place. */
static bool tc_sync(struct tc *t, const char *topic, int timeout_ms)
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

/* Pumps until nothing is pending on t (all publishes completed). */
static bool tc_flush(struct tc *t, int timeout_ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (wisp_mqtt_pending(t->m) > 0 && wisp_mono_ns() < deadline)
        pump(10);
    return wisp_mqtt_pending(t->m) == 0;
}

static size_t tc_count(const struct tc *t, const char *topic)
{
    size_t n = 0;
    for (const struct wisp_mqtt_msg *e = t->head; e; e = e->next)
        n += e->kind == WISP_MQTT_MESSAGE && (!topic || strcmp(e->topic, topic) == 0);
    return n;
}

static void tc_drop_all(struct tc *t)
{
    wisp_mqtt_msg_free(t->head);
    t->head = t->tail = NULL;
}

static int pub(struct tc *t, const char *topic, const char *payload, int qos, int retain)
{
    return wisp_mqtt_publish(t->m, topic, payload, strlen(payload), qos, retain);
}

/* ---- tests ------------------------------------------------------------- */

static int create_error(const struct wisp_mqtt_config *c, char *err, size_t errlen)
{
    struct wisp_mqtt *m = NULL;
    err[0] = '\0';
    int rc = wisp_mqtt_create(c, &m, err, errlen);
    CHECK(m == NULL || rc == 0);
    wisp_mqtt_destroy(m, 0);
    return rc;
}

static void test_config_errors(void)
{
    struct wisp_mqtt_config c;
    char err[512], dir[256], junk[300], pem[300];
    CHECK_INT_EQ(wisp_testbroker_tmpdir("mqtt-cfg", dir, sizeof(dir)), 0);
    (void)snprintf(junk, sizeof(junk), "%s/junk.txt", dir);
    (void)snprintf(pem, sizeof(pem), "%s/fake.pem", dir);
    FILE *f = fopen(junk, "w");
    CHECK(f && fputs("not a certificate\n", f) >= 0 && fclose(f) == 0);
    f = fopen(pem, "w");
    CHECK(f && fputs("-----BEGIN CERTIFICATE-----\n", f) >= 0 && fclose(f) == 0);

    cfg_init(&c, "http://127.0.0.1:1883", "cfg", 3);
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "unsupported scheme 'http'");
    c.uri = "127.0.0.1:1883";
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "has no scheme");
    c.uri = "tcp://";
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "has no host");
    c.uri = "tcp://127.0.0.1:1883";
    c.version = 4;
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "version 4");
    c.version = 5;
    c.client_id = NULL;
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "client_id");

    cfg_init(&c, "ssl://127.0.0.1:8883", "cfg", 3);
    c.tls_ca = "/nonexistent/ca.pem";
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -ENOENT);
    CHECK_CONTAINS(err, "tls_ca '/nonexistent/ca.pem' is not readable: No such file");
    c.tls_ca = junk;
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "is not a PEM file");
    c.tls_ca = pem;
    c.tls_cert = dir; /* a directory */
    CHECK(create_error(&c, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "tls_cert");
    c.tls_cert = NULL;
    c.tls_key = pem;
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "tls_key is set but tls_cert is not");
    c.uri = "mqtts://127.0.0.1:8883";
    c.tls_cert = pem;
    CHECK_INT_EQ(create_error(&c, err, sizeof(err)), 0);

    /* Arguments a created client refuses; nothing is connected. */
    struct wisp_mqtt *m = NULL;
    cfg_init(&c, "mqtt://127.0.0.1:1", "cfg", 5);
    CHECK_INT_EQ(wisp_mqtt_create(&c, &m, err, sizeof(err)), 0);
    const char *bad[] = {"a/#/b"};
    const int qos[] = {1};
    CHECK_INT_EQ(wisp_mqtt_set_subscriptions(m, bad, qos, 1), -EINVAL);
    CHECK_INT_EQ(wisp_mqtt_publish(m, "a/+/b", "x", 1, 0, 0), -EINVAL);
    CHECK_INT_EQ(wisp_mqtt_publish(m, "a/b", "x", 1, 3, 0), -EINVAL);
    CHECK_INT_EQ(wisp_mqtt_publish(m, "", "x", 1, 0, 0), -EINVAL);
    CHECK_INT_EQ(wisp_mqtt_start(m), 0);
    CHECK_INT_EQ(wisp_mqtt_start(m), -EALREADY);
    CHECK_INT_EQ(wisp_mqtt_start(NULL), -EINVAL);
    wisp_mqtt_destroy(m, 0);
    wisp_mqtt_destroy(NULL, 0);
    wisp_testbroker_rmtree(dir);
}

static void check_msg(struct wisp_mqtt_msg *e, const char *topic, const void *payload, size_t len,
                      int qos, int retain)
{
    CHECK(e != NULL);
    if (!e)
        return;
    CHECK_STR_EQ(e->topic, topic);
    CHECK_INT_EQ(e->topic_len, strlen(topic));
    CHECK_INT_EQ(e->payload_len, len);
    CHECK(memcmp(e->payload, payload, len) == 0);
    CHECK_INT_EQ(e->payload[len], '\0');
    CHECK_INT_EQ(e->qos, qos);
    CHECK_INT_EQ(e->retain, retain);
    wisp_mqtt_msg_free(e);
}

static void pubsub(int version)
{
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a, p;
    static const char bin[] = {'\0', 1, (char)0xff, '\0', 'z'};
    if (wisp_testbroker_start(&b, NULL) != 0) {
        CHECK(!"broker");
        return;
    }
    cfg_init(&c, b.uri, "pub", version);
    const char *psubs[] = {"out/#", NULL};
    CHECK(tc_open(&p, &c, psubs));
    CHECK(tc_expect(&p, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK_INT_EQ(pub(&p, "t/r/temp", "retained", 1, 1), 0);
    CHECK(tc_flush(&p, 5000));

    cfg_init(&c, b.uri, "sub", version);
    const char *asubs[] = {"t/+/temp", "bin/#", "sync/a", NULL};
    CHECK(tc_open(&a, &c, asubs));
    const char *f[] = {"t/+/temp", "bin/#", "sync/a"};
    const int q[] = {1, 0, 0};
    CHECK_INT_EQ(wisp_mqtt_set_subscriptions(a.m, f, q, 3), 0); /* bin/# at QoS 0 */
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    check_msg(tc_wait(&a, WISP_MQTT_MESSAGE, "t/r/temp", NULL, 5000), "t/r/temp", "retained", 8, 1,
              1);
    CHECK(tc_sync(&a, "sync/a", 5000));

    CHECK_INT_EQ(pub(&p, "t/dev1/temp", "21.5", 1, 0), 0);
    CHECK_INT_EQ(pub(&p, "t/dev1/hum", "40", 1, 0), 0);
    CHECK_INT_EQ(pub(&p, "t/a/b/temp", "deep", 1, 0), 0);
    CHECK_INT_EQ(wisp_mqtt_publish(p.m, "bin/x/y", bin, sizeof(bin), 1, 0), 0);
    CHECK_INT_EQ(wisp_mqtt_publish(p.m, "t/dev2/temp", NULL, 0, 0, 0), 0);
    CHECK_INT_EQ(pub(&p, "t/dev3/temp", "end", 1, 0), 0);
    check_msg(tc_wait(&a, WISP_MQTT_MESSAGE, "t/dev1/temp", NULL, 5000), "t/dev1/temp", "21.5", 4,
              1, 0);
    check_msg(tc_wait(&a, WISP_MQTT_MESSAGE, "bin/x/y", NULL, 5000), "bin/x/y", bin, sizeof(bin), 0,
              0);
    check_msg(tc_wait(&a, WISP_MQTT_MESSAGE, "t/dev2/temp", NULL, 5000), "t/dev2/temp", "", 0, 0,
              0);
    /* One publisher, so "end" comes after anything else it sent. */
    CHECK(tc_expect(&a, WISP_MQTT_MESSAGE, "t/dev3/temp", "end", 5000));
    CHECK_INT_EQ(tc_count(&a, NULL), 0); /* not t/dev1/hum, not t/a/b/temp */

    CHECK_INT_EQ(pub(&a, "out/q0", "zero", 0, 0), 0);
    CHECK_INT_EQ(pub(&a, "out/q1", "one", 1, 0), 0);
    check_msg(tc_wait(&p, WISP_MQTT_MESSAGE, "out/q0", NULL, 5000), "out/q0", "zero", 4, 0, 0);
    check_msg(tc_wait(&p, WISP_MQTT_MESSAGE, "out/q1", NULL, 5000), "out/q1", "one", 3, 1, 0);
    CHECK(tc_flush(&a, 5000));

    struct wisp_mqtt_stats st;
    wisp_mqtt_get_stats(a.m, &st);
    CHECK(st.connected);
    CHECK_INT_EQ(st.connects, 1);
    CHECK_INT_EQ(st.delivered, st.published);
    CHECK_INT_EQ(st.publish_failed, 0);
    CHECK(st.received >= 6);
    CHECK_INT_EQ(st.subscribe_failed, 0);
    tc_close(&a);
    tc_close(&p);
    wisp_testbroker_cleanup(&b);
}

static void test_pubsub_v311(void)
{
    pubsub(3);
}

static void test_pubsub_v5(void)
{
    pubsub(5);
}

/* Replacing the set: a removed filter stops delivering, an added one starts. */
static void test_set_subscriptions(void)
{
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a, p;
    if (wisp_testbroker_start(&b, NULL) != 0) {
        CHECK(!"broker");
        return;
    }
    cfg_init(&c, b.uri, "set-p", 5);
    CHECK(tc_open(&p, &c, NULL));
    cfg_init(&c, b.uri, "set-a", 5);
    const char *first[] = {"s/old/#", "sync/s", NULL};
    CHECK(tc_open(&a, &c, first));
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_expect(&p, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_sync(&a, "sync/s", 5000));
    CHECK_INT_EQ(pub(&p, "s/old/1", "a", 1, 0), 0);
    CHECK(tc_expect(&a, WISP_MQTT_MESSAGE, "s/old/1", "a", 5000));

    const char *second[] = {"s/new/#", "sync/s", "s/new/#"};
    const int qos[] = {0, 0, 1};
    CHECK_INT_EQ(wisp_mqtt_set_subscriptions(a.m, second, qos, 3), 0);
    /* Our UNSUBSCRIBE and SUBSCRIBE went out before this probe. */
    CHECK(tc_sync(&a, "s/new/probe", 5000));
    CHECK_INT_EQ(pub(&p, "s/old/2", "gone", 1, 0), 0);
    CHECK_INT_EQ(pub(&p, "s/new/1", "b", 1, 0), 0);
    struct wisp_mqtt_msg *e = tc_wait(&a, WISP_MQTT_MESSAGE, "s/new/1", "b", 5000);
    CHECK(e && e->qos == 1);
    wisp_mqtt_msg_free(e);
    CHECK_INT_EQ(tc_count(&a, "s/old/2"), 0);

    /* An invalid set changes nothing. */
    const char *bad[] = {"s/#/x"};
    CHECK_INT_EQ(wisp_mqtt_set_subscriptions(a.m, bad, qos, 1), -EINVAL);
    CHECK_INT_EQ(pub(&p, "s/new/2", "c", 0, 0), 0);
    CHECK(tc_expect(&a, WISP_MQTT_MESSAGE, "s/new/2", "c", 5000));

    /* stop_intake unsubscribes everything: once a QoS 1 publish sent after
     * it is acknowledged, the broker has processed the UNSUBSCRIBE. */
    CHECK_INT_EQ(wisp_mqtt_stop_intake(a.m), 0);
    CHECK_INT_EQ(pub(&a, "elsewhere", "x", 1, 0), 0);
    CHECK(tc_flush(&a, 5000));
    CHECK_INT_EQ(pub(&p, "s/new/3", "late", 1, 0), 0);
    CHECK(tc_flush(&p, 5000));
    CHECK(!tc_expect(&a, WISP_MQTT_MESSAGE, "s/new/3", NULL, 300));
    tc_close(&a);
    tc_close(&p);
    wisp_testbroker_cleanup(&b);
}

/* The broker refuses the connection (no anonymous access): the reason says
 * so, for MQTT 3.1.1 (CONNACK code) and 5 (reason code). */
static void test_connect_refused(void)
{
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a3, a5;
    struct wisp_testbroker_opts o = {.extra_conf = "allow_anonymous false"};
    if (wisp_testbroker_start(&b, &o) != 0) {
        CHECK(!"broker");
        return;
    }
    cfg_init(&c, b.uri, "refused-3", 3);
    CHECK(tc_open(&a3, &c, NULL));
    cfg_init(&c, b.uri, "refused-5", 5);
    CHECK(tc_open(&a5, &c, NULL));
    struct wisp_mqtt_msg *e = tc_wait(&a3, WISP_MQTT_LOST, NULL, NULL, 5000);
    CHECK(e && e->connect_failed == 1);
    if (e)
        CHECK_CONTAINS(e->reason, "broker refused the connection: not authorized (5)");
    wisp_mqtt_msg_free(e);
    e = tc_wait(&a5, WISP_MQTT_LOST, NULL, NULL, 5000);
    CHECK(e && e->connect_failed == 1);
    if (e)
        CHECK_CONTAINS(e->reason, "broker refused the connection: Not authorized (0x87)");
    wisp_mqtt_msg_free(e);
    tc_close(&a3);
    tc_close(&a5);
    wisp_testbroker_cleanup(&b);
}

/* No broker at start: the client reports the failed connect, keeps trying
 * and connects by itself once a broker appears on the port. */
static void test_broker_late(void)
{
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a;
    char uri[64];
    int port = wisp_testbroker_free_port();
    (void)snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", port);
    cfg_init(&c, uri, "late", 3);
    c.max_buffered = 5;
    const char *subs[] = {"late/#", NULL};
    CHECK(tc_open(&a, &c, subs));
    struct wisp_mqtt_msg *e = tc_wait(&a, WISP_MQTT_LOST, NULL, NULL, 5000);
    CHECK(e && e->connect_failed == 1 && e->reason && *e->reason);
    if (e)
        (void)fprintf(stderr, "  first connect failed as expected: %s\n", e->reason);
    wisp_mqtt_msg_free(e);
    struct wisp_mqtt_stats st;
    wisp_mqtt_get_stats(a.m, &st);
    CHECK(!st.connected);
    /* Published before any connection: kept up to max_buffered; beyond,
     * new messages are refused and counted. */
    for (int i = 0; i < 8; i++)
        CHECK_INT_EQ(pub(&a, "late/offline", "queued before any connection", 1, 0),
                     i < 5 ? 0 : -ENOBUFS);
    CHECK_INT_EQ(wisp_mqtt_pending(a.m), 5);
    wisp_mqtt_get_stats(a.m, &st);
    CHECK_INT_EQ(st.dropped_outgoing, 3);
    pump(300); /* a couple of retries fail first */

    struct wisp_testbroker_opts o = {.port = port};
    CHECK_INT_EQ(wisp_testbroker_start(&b, &o), 0);
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 10000));
    CHECK(tc_sync(&a, "late/sync", 5000));
    CHECK(tc_flush(&a, 5000));
    wisp_mqtt_get_stats(a.m, &st);
    CHECK(st.connected);
    CHECK_INT_EQ(st.connects, 1);
    CHECK_INT_EQ(st.publish_failed, 0);
    CHECK_INT_EQ(st.delivered, st.published);
    CHECK_INT_EQ(st.published, 6); /* the 5 kept, then tc_sync's marker */
    tc_close(&a);
    wisp_testbroker_cleanup(&b);
}

/* The broker restarts while messages flow: LOST, then CONNECTED with the
 * subscriptions back without the caller doing anything, and what was
 * published meanwhile is delivered (to a persistent session). */
static void test_broker_restart(void)
{
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a, s;
    struct wisp_testbroker_opts o = {.persistence = true};
    if (wisp_testbroker_start(&b, &o) != 0) {
        CHECK(!"broker");
        return;
    }
    cfg_init(&c, b.uri, "restart-s", 5);
    c.clean_start = 0;
    const char *ssubs[] = {"buf/#", "ssync/s", NULL};
    CHECK(tc_open(&s, &c, ssubs));
    cfg_init(&c, b.uri, "restart-a", 5);
    const char *asubs[] = {"live/#", "async/a", NULL};
    CHECK(tc_open(&a, &c, asubs));
    CHECK(tc_expect(&s, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_sync(&s, "ssync/s", 5000));
    CHECK(tc_sync(&a, "async/a", 5000));
    CHECK_INT_EQ(pub(&s, "live/1", "before", 1, 0), 0);
    CHECK(tc_expect(&a, WISP_MQTT_MESSAGE, "live/1", "before", 5000));
    CHECK(tc_flush(&a, 5000));

    CHECK_INT_EQ(wisp_testbroker_stop(&b, false), 0);
    struct wisp_mqtt_msg *e = tc_wait(&a, WISP_MQTT_LOST, NULL, NULL, 5000);
    CHECK(e && e->connect_failed == 0);
    if (e)
        (void)fprintf(stderr, "  connection lost as expected: %s\n", e->reason ? e->reason : "-");
    wisp_mqtt_msg_free(e);
    CHECK(tc_expect(&s, WISP_MQTT_LOST, NULL, NULL, 5000));
    for (int i = 1; i <= 3; i++) {
        char payload[16];
        (void)snprintf(payload, sizeof(payload), "offline-%d", i);
        CHECK_INT_EQ(pub(&a, "buf/x", payload, 1, 0), 0);
    }
    CHECK_INT_EQ(wisp_mqtt_pending(a.m), 3);

    CHECK_INT_EQ(wisp_testbroker_restart(&b), 0);
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 10000));
    CHECK(tc_expect(&s, WISP_MQTT_CONNECTED, NULL, NULL, 10000));
    CHECK(tc_sync(&a, "async/a", 5000));
    CHECK_INT_EQ(pub(&s, "live/2", "after", 1, 0), 0);
    CHECK(tc_expect(&a, WISP_MQTT_MESSAGE, "live/2", "after", 5000));
    CHECK(tc_expect(&s, WISP_MQTT_MESSAGE, "buf/x", "offline-1", 5000));
    CHECK(tc_expect(&s, WISP_MQTT_MESSAGE, "buf/x", "offline-2", 5000));
    CHECK(tc_expect(&s, WISP_MQTT_MESSAGE, "buf/x", "offline-3", 5000));
    CHECK(tc_flush(&a, 5000));
    struct wisp_mqtt_stats st;
    wisp_mqtt_get_stats(a.m, &st);
    CHECK_INT_EQ(st.connects, 2);
    CHECK_INT_EQ(st.connection_lost, 1);
    CHECK_INT_EQ(st.publish_failed, 0);
    tc_close(&a);
    tc_close(&s);
    wisp_testbroker_cleanup(&b);
}

static void tls_cfg(struct wisp_mqtt_config *c, const char *uri, const char *id, const char *pki,
                    char paths[3][300], bool with_cert)
{
    (void)snprintf(paths[0], 300, "%s/ca.crt", pki);
    (void)snprintf(paths[1], 300, "%s/client.crt", pki);
    (void)snprintf(paths[2], 300, "%s/client.key", pki);
    cfg_init(c, uri, id, 3);
    c->tls_ca = paths[0];
    c->tls_cert = with_cert ? paths[1] : NULL;
    c->tls_key = with_cert ? paths[2] : NULL;
}

/* A TLS listener that requires client certificates. */
static void test_tls(void)
{
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a, n, w;
    char pki[256], paths[3][300], uri[64];
    CHECK_INT_EQ(wisp_testbroker_tmpdir("mqtt-pki", pki, sizeof(pki)), 0);
    CHECK_INT_EQ(wisp_testbroker_make_certs(pki), 0);
    struct wisp_testbroker_opts o = {.tls_dir = pki};
    if (wisp_testbroker_start(&b, &o) != 0) {
        CHECK(!"broker");
        wisp_testbroker_rmtree(pki);
        return;
    }
    /* mqtts:// is accepted and means TLS. */
    (void)snprintf(uri, sizeof(uri), "mqtts://127.0.0.1:%d", b.tls_port);
    tls_cfg(&c, uri, "tls-ok", pki, paths, true);
    const char *subs[] = {"tls/#", NULL};
    CHECK(tc_open(&a, &c, subs));
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_sync(&a, "tls/sync", 5000));

    tls_cfg(&c, b.tls_uri, "tls-nocert", pki, paths, false);
    CHECK(tc_open(&n, &c, NULL));
    struct wisp_mqtt_msg *e = tc_wait(&n, WISP_MQTT_LOST, NULL, NULL, 5000);
    CHECK(e && e->connect_failed == 1 && e->reason);
    if (e)
        (void)fprintf(stderr, "  without a client certificate: %s\n", e->reason);
    wisp_mqtt_msg_free(e);

    /* A CA that did not sign the broker's certificate. */
    tls_cfg(&c, b.tls_uri, "tls-wrongca", pki, paths, true);
    c.tls_ca = paths[1];
    CHECK(tc_open(&w, &c, NULL));
    e = tc_wait(&w, WISP_MQTT_LOST, NULL, NULL, 5000);
    CHECK(e && e->connect_failed == 1);
    if (e) {
        CHECK_CONTAINS(e->reason, "certificate verify failed");
        (void)fprintf(stderr, "  with the wrong CA: %s\n", e->reason);
    }
    wisp_mqtt_msg_free(e);
    CHECK(!tc_expect(&n, WISP_MQTT_CONNECTED, NULL, NULL, 1000));
    CHECK(!tc_expect(&w, WISP_MQTT_CONNECTED, NULL, NULL, 10));
    tc_close(&w);
    tc_close(&n);
    tc_close(&a);
    wisp_testbroker_cleanup(&b);
    wisp_testbroker_rmtree(pki);
}

/* mosquitto 2.0 grants every SUBSCRIBE under acl_file (it filters at
 * delivery); its dynamic-security plugin refuses them: 0x80 / 0x87. */
static const char *dynsec_plugin(void)
{
    static const char *const paths[] = {
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (access(paths[i], R_OK) == 0)
            return paths[i];
    return NULL;
}

static const char dynsec_json[] =
    "{\"defaultACLAccess\": {\"publishClientSend\": true, \"publishClientReceive\": true,"
    " \"subscribe\": false, \"unsubscribe\": true},"
    " \"clients\": [], \"groups\": [{\"groupname\": \"anon\", \"roles\": [{\"rolename\": "
    "\"open\"}]}],"
    " \"roles\": [{\"rolename\": \"open\", \"acls\": [{\"acltype\": \"subscribePattern\","
    " \"topic\": \"open/#\", \"priority\": 0, \"allow\": true}]}],"
    " \"anonymousGroup\": \"anon\"}\n";

/* The broker refuses one filter: logged, counted, the others work. */
static void refused(int version)
{
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a;
    char dir[256], json[300], extra[700];
    const char *plugin = dynsec_plugin();
    if (!plugin) {
        (void)fprintf(stderr, "  skipped: mosquitto_dynamic_security.so not found\n");
        return;
    }
    CHECK_INT_EQ(wisp_testbroker_tmpdir("mqtt-acl", dir, sizeof(dir)), 0);
    (void)snprintf(json, sizeof(json), "%s/dynsec.json", dir);
    FILE *f = fopen(json, "w");
    CHECK(f && fputs(dynsec_json, f) >= 0 && fclose(f) == 0);
    (void)snprintf(extra, sizeof(extra), "plugin %s\nplugin_opt_config_file %s", plugin, json);
    struct wisp_testbroker_opts o = {.extra_conf = extra};
    if (wisp_testbroker_start(&b, &o) != 0) {
        CHECK(!"broker");
        wisp_testbroker_rmtree(dir);
        return;
    }
    cfg_init(&c, b.uri, "refused", version);
    const char *subs[] = {"open/#", "secret/#", NULL};
    CHECK(tc_open(&a, &c, subs));
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_sync(&a, "open/sync", 5000));
    struct wisp_mqtt_stats st;
    wisp_mqtt_get_stats(a.m, &st);
    CHECK_INT_EQ(st.subscribe_failed, 1);
    tc_close(&a);
    wisp_testbroker_cleanup(&b);
    wisp_testbroker_rmtree(dir);
}

static void test_subscribe_refused_v311(void)
{
    refused(3);
}

static void test_subscribe_refused_v5(void)
{
    refused(5);
}

/* With the loop not taking, the client defers beyond max_queued (Paho keeps
 * the rest) and loses nothing once the loop takes again. */
static void test_backpressure(void)
{
    enum { N = 40, MAXQ = 3 };
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a, p;
    if (wisp_testbroker_start(&b, NULL) != 0) {
        CHECK(!"broker");
        return;
    }
    cfg_init(&c, b.uri, "bp-p", 3);
    CHECK(tc_open(&p, &c, NULL));
    cfg_init(&c, b.uri, "bp-a", 3);
    c.max_queued = MAXQ;
    c.keepalive_s = 60; /* no PINGRESP to shake Paho's queue loose */
    const char *subs[] = {"bp/#", "bpsync/a", NULL};
    CHECK(tc_open(&a, &c, subs));
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_expect(&p, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_sync(&a, "bpsync/a", 5000));
    tc_drop_all(&a);
    struct wisp_mqtt_stats st;
    wisp_mqtt_get_stats(a.m, &st);
    uint64_t before = st.received;

    for (int i = 0; i < N; i++) {
        char payload[16];
        (void)snprintf(payload, sizeof(payload), "%d", i);
        CHECK_INT_EQ(pub(&p, "bp/n", payload, 1, 0), 0);
    }
    /* Not pump(): that would take from `a` too. */
    uint64_t deadline = wisp_mono_ns() + 5000000000u;
    do {
        usleep(2000);
        wisp_mqtt_tick(p.m, wisp_mono_ns());
        wisp_mqtt_get_stats(a.m, &st);
    } while (st.redelivery_deferred == 0 && wisp_mono_ns() < deadline);
    CHECK(st.redelivery_deferred > 0);
    CHECK_INT_EQ(st.received - before, MAXQ);
    struct wisp_mqtt_msg *first = wisp_mqtt_take(a.m);
    size_t n = 0;
    for (struct wisp_mqtt_msg *e = first; e; e = e->next)
        n++;
    CHECK_INT_EQ(n, MAXQ);
    tc_append(&a, first);

    /* Taking again lets everything through, in order, each once. */
    deadline = wisp_mono_ns() + 5000000000u;
    while (tc_count(&a, "bp/n") < N && wisp_mono_ns() < deadline)
        pump(20);
    CHECK_INT_EQ(tc_count(&a, "bp/n"), N);
    int expect = 0;
    for (struct wisp_mqtt_msg *e = a.head; e; e = e->next) {
        if (e->kind != WISP_MQTT_MESSAGE || strcmp(e->topic, "bp/n") != 0)
            continue;
        char *end = NULL;
        long got = strtol(e->payload, &end, 10);
        CHECK(end && *end == '\0');
        CHECK_INT_EQ(got, expect);
        expect++;
    }
    wisp_mqtt_get_stats(a.m, &st);
    (void)fprintf(stderr, "  %d messages, %llu deferrals\n", N,
                  (unsigned long long)st.redelivery_deferred);
    tc_close(&a);
    tc_close(&p);
    wisp_testbroker_cleanup(&b);
}

/* Messages Paho holds for us (deferred) survive a broker restart. */
static void test_backpressure_restart(void)
{
    enum { N = 20, MAXQ = 2 };
    struct wisp_testbroker b;
    struct wisp_mqtt_config c;
    struct tc a, p;
    if (wisp_testbroker_start(&b, NULL) != 0) {
        CHECK(!"broker");
        return;
    }
    cfg_init(&c, b.uri, "bpr-p", 3);
    CHECK(tc_open(&p, &c, NULL));
    cfg_init(&c, b.uri, "bpr-a", 3);
    c.max_queued = MAXQ;
    c.keepalive_s = 60;
    const char *subs[] = {"bpr/#", "bprsync/a", NULL};
    CHECK(tc_open(&a, &c, subs));
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_expect(&p, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_sync(&a, "bprsync/a", 5000));
    tc_drop_all(&a);
    for (int i = 0; i < N; i++) {
        char payload[16];
        (void)snprintf(payload, sizeof(payload), "%d", i);
        CHECK_INT_EQ(pub(&p, "bpr/n", payload, 1, 0), 0);
    }
    /* Every arrival after the queue filled made Paho offer its head again
     * (and us refuse it): N - MAXQ refusals mean all N reached Paho. */
    struct wisp_mqtt_stats st;
    uint64_t deadline = wisp_mono_ns() + 5000000000u;
    do {
        usleep(2000);
        wisp_mqtt_get_stats(a.m, &st);
    } while (st.redelivery_deferred < N - MAXQ && wisp_mono_ns() < deadline);
    CHECK(st.redelivery_deferred >= N - MAXQ);

    CHECK_INT_EQ(wisp_testbroker_restart(&b), 0);
    CHECK(tc_expect(&a, WISP_MQTT_LOST, NULL, NULL, 5000));
    CHECK(tc_expect(&a, WISP_MQTT_CONNECTED, NULL, NULL, 10000));
    deadline = wisp_mono_ns() + 5000000000u;
    while (tc_count(&a, "bpr/n") < N && wisp_mono_ns() < deadline)
        pump(20);
    CHECK_INT_EQ(tc_count(&a, "bpr/n"), N);
    int expect = 0;
    for (struct wisp_mqtt_msg *e = a.head; e; e = e->next)
        if (e->kind == WISP_MQTT_MESSAGE && strcmp(e->topic, "bpr/n") == 0)
            CHECK_INT_EQ(strtol(e->payload, NULL, 10), expect++);
    tc_close(&a);
    tc_close(&p);
    wisp_testbroker_cleanup(&b);
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("WISP_TEST_LOG");
    if (lvl && wisp_log_level_parse(lvl) >= 0)
        wisp_log_threshold = wisp_log_level_parse(lvl);
    static const struct wisp_check_test tests[] = {
        {"config_errors", test_config_errors},
        {"pubsub_v311", test_pubsub_v311},
        {"pubsub_v5", test_pubsub_v5},
        {"set_subscriptions", test_set_subscriptions},
        {"subscribe_refused_v311", test_subscribe_refused_v311},
        {"subscribe_refused_v5", test_subscribe_refused_v5},
        {"backpressure", test_backpressure},
        {"backpressure_restart", test_backpressure_restart},
        {"tls", test_tls},
        {"connect_refused", test_connect_refused},
        {"broker_late", test_broker_late},
        {"broker_restart", test_broker_restart},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
