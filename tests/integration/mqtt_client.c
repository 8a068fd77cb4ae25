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
#include "mqtt_harness.h"
#include "testbroker.h"
#include "util.h"

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
    if (!broker_up(&b, NULL))
        return;
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
    if (!broker_up(&b, NULL))
        return;
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
    if (!broker_up(&b, &o))
        return;
    cfg_init(&c, b.uri, "refused-3", 3);
    CHECK(tc_open(&a3, &c, NULL));
    cfg_init(&c, b.uri, "refused-5", 5);
    CHECK(tc_open(&a5, &c, NULL));
    tc_expect_lost(&a3, true, "broker refused the connection: not authorized (5)", NULL);
    tc_expect_lost(&a5, true, "broker refused the connection: Not authorized (0x87)", NULL);
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
    tc_expect_lost(&a, true, NULL, "first connect failed as expected");
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
    if (!broker_up(&b, &o))
        return;
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
    tc_expect_lost(&a, false, NULL, "connection lost as expected");
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
    if (!broker_up(&b, &o)) {
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
    tc_expect_lost(&n, true, NULL, "without a client certificate");

    /* A CA that did not sign the broker's certificate. */
    tls_cfg(&c, b.tls_uri, "tls-wrongca", pki, paths, true);
    c.tls_ca = paths[1];
    CHECK(tc_open(&w, &c, NULL));
    tc_expect_lost(&w, true, "certificate verify failed", "with the wrong CA");
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
    if (!broker_up(&b, &o)) {
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

/* The backpressure tests' world: a broker, a publisher p, and a subscriber
 * a on "<name>/#" that queues at most max_queued messages. */
struct bp {
    struct wisp_testbroker b;
    struct tc a, p;
    char topic[32], filter[32], sync[32], a_id[32], p_id[32];
};

/* Both clients connected, a's subscriptions in place, nothing held. */
static bool bp_open(struct bp *x, const char *name, int max_queued)
{
    struct wisp_mqtt_config c;
    memset(x, 0, sizeof(*x));
    (void)snprintf(x->topic, sizeof(x->topic), "%s/n", name);
    (void)snprintf(x->filter, sizeof(x->filter), "%s/#", name);
    (void)snprintf(x->sync, sizeof(x->sync), "%ssync/a", name);
    (void)snprintf(x->a_id, sizeof(x->a_id), "%s-a", name);
    (void)snprintf(x->p_id, sizeof(x->p_id), "%s-p", name);
    if (!broker_up(&x->b, NULL))
        return false;
    cfg_init(&c, x->b.uri, x->p_id, 3);
    CHECK(tc_open(&x->p, &c, NULL));
    cfg_init(&c, x->b.uri, x->a_id, 3);
    c.max_queued = max_queued;
    c.keepalive_s = 60; /* no PINGRESP to shake Paho's queue loose */
    const char *subs[] = {x->filter, x->sync, NULL};
    CHECK(tc_open(&x->a, &c, subs));
    CHECK(tc_expect(&x->a, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_expect(&x->p, WISP_MQTT_CONNECTED, NULL, NULL, 5000));
    CHECK(tc_sync(&x->a, x->sync, 5000));
    tc_drop_all(&x->a);
    return true;
}

/* p publishes "0" to "n-1" on the topic at QoS 1. */
static void bp_publish(struct bp *x, int n)
{
    for (int i = 0; i < n; i++) {
        char payload[16];
        (void)snprintf(payload, sizeof(payload), "%d", i);
        CHECK_INT_EQ(pub(&x->p, x->topic, payload, 1, 0), 0);
    }
}

/* Waits (up to 5 s) until a has deferred at least min redeliveries, with
 * only p's loop running: pump() would take from a too. */
static void bp_wait_deferred(struct bp *x, uint64_t min, struct wisp_mqtt_stats *st)
{
    uint64_t deadline = wisp_mono_ns() + 5000000000u;
    do {
        usleep(2000);
        wisp_mqtt_tick(x->p.m, wisp_mono_ns());
        wisp_mqtt_get_stats(x->a.m, st);
    } while (st->redelivery_deferred < min && wisp_mono_ns() < deadline);
    CHECK(st->redelivery_deferred >= min);
}

/* Pumps until a holds n messages on the topic: "0" to "n-1", in order,
 * each once. */
static void bp_check_all(struct bp *x, int n)
{
    uint64_t deadline = wisp_mono_ns() + 5000000000u;
    while (tc_count(&x->a, x->topic) < (size_t)n && wisp_mono_ns() < deadline)
        pump(20);
    CHECK_INT_EQ(tc_count(&x->a, x->topic), n);
    int expect = 0;
    for (struct wisp_mqtt_msg *e = x->a.head; e; e = e->next) {
        if (e->kind != WISP_MQTT_MESSAGE || strcmp(e->topic, x->topic) != 0)
            continue;
        char *end = NULL;
        long got = strtol(e->payload, &end, 10);
        CHECK(end && *end == '\0');
        CHECK_INT_EQ(got, expect);
        expect++;
    }
}

static void bp_close(struct bp *x)
{
    tc_close(&x->a);
    tc_close(&x->p);
    wisp_testbroker_cleanup(&x->b);
}

/* With the loop not taking, the client defers beyond max_queued (Paho keeps
 * the rest) and loses nothing once the loop takes again. */
static void test_backpressure(void)
{
    enum { N = 40, MAXQ = 3 };
    struct bp x;
    if (!bp_open(&x, "bp", MAXQ))
        return;
    struct wisp_mqtt_stats st;
    wisp_mqtt_get_stats(x.a.m, &st);
    uint64_t before = st.received;
    bp_publish(&x, N);
    bp_wait_deferred(&x, 1, &st);
    CHECK_INT_EQ(st.received - before, MAXQ);
    struct wisp_mqtt_msg *first = wisp_mqtt_take(x.a.m);
    size_t n = 0;
    for (struct wisp_mqtt_msg *e = first; e; e = e->next)
        n++;
    CHECK_INT_EQ(n, MAXQ);
    tc_append(&x.a, first);

    /* Taking again lets everything through, in order, each once. */
    bp_check_all(&x, N);
    wisp_mqtt_get_stats(x.a.m, &st);
    (void)fprintf(stderr, "  %d messages, %llu deferrals\n", N,
                  (unsigned long long)st.redelivery_deferred);
    bp_close(&x);
}

/* Messages Paho holds for us (deferred) survive a broker restart. */
static void test_backpressure_restart(void)
{
    enum { N = 20, MAXQ = 2 };
    struct bp x;
    if (!bp_open(&x, "bpr", MAXQ))
        return;
    bp_publish(&x, N);
    /* Every arrival after the queue filled made Paho offer its head again
     * (and us refuse it): N - MAXQ refusals mean all N reached Paho. */
    struct wisp_mqtt_stats st;
    bp_wait_deferred(&x, N - MAXQ, &st);

    CHECK_INT_EQ(wisp_testbroker_restart(&x.b), 0);
    CHECK(tc_expect(&x.a, WISP_MQTT_LOST, NULL, NULL, 5000));
    CHECK(tc_expect(&x.a, WISP_MQTT_CONNECTED, NULL, NULL, 10000));
    bp_check_all(&x, N);
    bp_close(&x);
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
