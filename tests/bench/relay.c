/*
 * wisp-relay: the hand-written baseline for the benchmark.
 *
 * What a competent engineer would write for "subscribe bench/in, enrich the JSON, publish
 * bench/out" with Paho MQTTAsync and cJSON, and nothing else: no inbox, no sandbox, no
 * process boundary. messageArrived does the work directly on Paho's receive thread, which is
 * the fair best case for a relay (the message is never copied or handed over).
 *
 *   wisp-relay --broker tcp://127.0.0.1:1883 [--qos 0|1] [--in TOPIC] [--out TOPIC]
 *
 * Output messages keep the QoS of the input; --qos is the subscription QoS. The alert
 * threshold comes from $THRESHOLD (default 30), as in the Lua function. Prints "ready" on
 * stdout once the subscription is acknowledged; exits cleanly on SIGINT/SIGTERM.
 */
#include <MQTTAsync.h>
#include <cjson/cJSON.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"

static MQTTAsync client;
static const char *in_topic = "bench/in";
static const char *out_topic = "bench/out";
static int sub_qos = 0;
static double threshold = 30.0;
static atomic_int ready_printed;
static atomic_ulong n_in, n_out, n_bad, n_send_err;

static void subscribe_in(void);

static void on_subscribed(void *ctx, MQTTAsync_successData *resp)
{
    (void)ctx;
    (void)resp;
    if (atomic_exchange(&ready_printed, 1) == 0) {
        (void)fputs("ready\n", stdout);
        (void)fflush(stdout);
    }
}

static void on_subscribe_failed(void *ctx, MQTTAsync_failureData *resp)
{
    (void)ctx;
    (void)fprintf(stderr, "wisp-relay: subscribe to %s failed (rc %d)\n", in_topic,
                  resp ? resp->code : -1);
}

static void subscribe_in(void)
{
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_subscribed;
    ro.onFailure = on_subscribe_failed;
    int rc = MQTTAsync_subscribe(client, in_topic, sub_qos, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        (void)fprintf(stderr, "wisp-relay: MQTTAsync_subscribe: rc %d\n", rc);
}

/* Called on the initial connect and after every automatic reconnect (clean session). */
static void on_connected(void *ctx, char *cause)
{
    (void)ctx;
    (void)cause;
    subscribe_in();
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData *resp)
{
    (void)ctx;
    (void)fprintf(stderr, "wisp-relay: connect failed (rc %d%s%s)\n", resp ? resp->code : -1,
                  resp && resp->message ? ": " : "", resp && resp->message ? resp->message : "");
}

static void on_connection_lost(void *ctx, char *cause)
{
    (void)ctx;
    (void)fprintf(stderr, "wisp-relay: connection lost (%s), reconnecting\n", cause ? cause : "?");
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    (void)ctx;
    (void)topic_len;
    atomic_fetch_add_explicit(&n_in, 1, memory_order_relaxed);

    char *out = bench_transform(m->payload, (size_t)m->payloadlen, threshold);
    if (!out) {
        atomic_fetch_add_explicit(&n_bad, 1, memory_order_relaxed);
        goto done;
    }
    MQTTAsync_message pub = MQTTAsync_message_initializer;
    pub.payload = out; /* Paho copies the payload before returning */
    pub.payloadlen = (int)strlen(out);
    pub.qos = m->qos;
    if (MQTTAsync_sendMessage(client, out_topic, &pub, NULL) == MQTTASYNC_SUCCESS)
        atomic_fetch_add_explicit(&n_out, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&n_send_err, 1, memory_order_relaxed);
    cJSON_free(out);
done:
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void usage(FILE *f)
{
    (void)fputs("usage: wisp-relay --broker URI [--qos 0|1] [--in TOPIC] [--out TOPIC]\n"
                "  subscribes TOPIC (bench/in), adds temp_f and alert ($THRESHOLD, default 30),\n"
                "  publishes to bench/out with the input's QoS; prints \"ready\" when subscribed\n",
                f);
}

int main(int argc, char **argv)
{
    struct bench_relay_opts o;
    int status = bench_relay_args(argc, argv, 2, usage, &o);
    if (status >= 0)
        return status;
    const char *broker = o.broker;
    in_topic = o.in_topic;
    out_topic = o.out_topic;
    sub_qos = o.qos;
    threshold = o.threshold;

    /* Block the signals before Paho starts its threads so that only sigwait() sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    char client_id[64];
    (void)snprintf(client_id, sizeof client_id, "wisp-relay-%ld", (long)getpid());
    int rc = MQTTAsync_create(&client, broker, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        (void)fprintf(stderr, "wisp-relay: MQTTAsync_create(%s): rc %d\n", broker, rc);
        return 1;
    }
    MQTTAsync_setCallbacks(client, NULL, on_connection_lost, on_message, NULL);
    MQTTAsync_setConnected(client, NULL, on_connected);

    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 30;
    co.cleansession = 1;
    co.automaticReconnect = 1;
    co.minRetryInterval = 1;
    co.maxRetryInterval = 60;
    co.onFailure = on_connect_failed;
    rc = MQTTAsync_connect(client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        (void)fprintf(stderr, "wisp-relay: MQTTAsync_connect(%s): rc %d\n", broker, rc);
        MQTTAsync_destroy(&client);
        return 1;
    }

    int sig = 0;
    sigwait(&sigs, &sig);

    MQTTAsync_disconnectOptions dopt = MQTTAsync_disconnectOptions_initializer;
    dopt.timeout = 1000;
    MQTTAsync_disconnect(client, &dopt);
    usleep(100 * 1000);
    MQTTAsync_destroy(&client);
    (void)fprintf(stderr, "wisp-relay: in=%lu out=%lu bad=%lu send_err=%lu\n",
                  (unsigned long)atomic_load(&n_in), (unsigned long)atomic_load(&n_out),
                  (unsigned long)atomic_load(&n_bad), (unsigned long)atomic_load(&n_send_err));
    return 0;
}
