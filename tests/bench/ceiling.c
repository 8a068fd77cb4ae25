/*
 * wisp-ceiling: the cheapest client of the benchmark's transform that this machine and broker
 * can carry, measured in the same run as everything else so that the figures have a ceiling.
 *
 * One thread, wispd's own non-blocking MQTT client (msess.c) on the epoll loop (loop.c), the
 * transform done inline with cJSON: no inbox, no store, no fsync, no handler process, no
 * sandbox. Input messages are acknowledged right after their output is queued. Whatever
 * wispd reaches at QoS 1 with its durable path is set against this: the gap is what the
 * store, the executor process and the sandbox cost; what this reaches is what the broker and
 * the load generator leave on the machine for any client.
 *
 *   wisp-ceiling --broker URI [--qos 0|1] [--in TOPIC] [--out TOPIC]
 *
 * Prints "ready" once subscribed; stops on SIGINT/SIGTERM and prints its counters.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"
#include "log.h"
#include "loop.h"
#include "msess.h"
#include "util.h"

/* Outputs the broker's Receive Maximum holds back until a PUBACK makes room. */
enum { BACKLOG = 4096 };

static struct {
    struct wisp_msess *sess;
    const char *out_topic;
    double threshold;
    int qos;
    char *backlog[BACKLOG];
    unsigned head, n;
    unsigned long in, out, bad, dropped;
} g;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Publishes backlogged outputs, oldest first, while the session takes them. */
static void drain(void)
{
    while (g.n > 0) {
        char *m = g.backlog[g.head];
        int rc = wisp_msess_publish(g.sess, g.out_topic, m, strlen(m), g.qos, false, NULL, 1);
        if (rc == -ENOBUFS)
            return;
        if (rc == 0)
            g.out++;
        else
            g.dropped++;
        cJSON_free(m);
        g.head = (g.head + 1) % BACKLOG;
        g.n--;
    }
}

static void on_message(void *ud, uint16_t pid, int qos, bool dup, bool retain, const char *topic,
                       size_t topic_len, const void *payload, size_t len)
{
    (void)ud;
    (void)dup;
    (void)retain;
    (void)topic;
    (void)topic_len;
    g.in++;
    char *out = bench_transform(payload, len, g.threshold);
    if (!out) {
        g.bad++;
    } else if (g.n == BACKLOG) {
        g.dropped++;
        cJSON_free(out);
    } else {
        g.backlog[(g.head + g.n) % BACKLOG] = out;
        g.n++;
        drain();
    }
    if (qos > 0)
        (void)wisp_msess_ack(g.sess, pid, qos);
}

static void on_published(void *ud, uint64_t token, bool ok)
{
    (void)ud;
    (void)token;
    (void)ok;
    drain();
}

static void usage(FILE *f)
{
    (void)fputs("usage: wisp-ceiling --broker URI [--qos 0|1] [--in TOPIC] [--out TOPIC]\n"
                "  the benchmark's transform on wispd's MQTT client in one thread, nothing else;\n"
                "  prints \"ready\" when subscribed\n",
                f);
}

int main(int argc, char **argv)
{
    struct bench_relay_opts o;
    int status = bench_relay_args(argc, argv, 1, usage, &o);
    if (status >= 0)
        return status;
    g.out_topic = o.out_topic;
    g.qos = o.qos;
    g.threshold = o.threshold;
    wisp_log_threshold = WISP_LOG_WARN;
    (void)signal(SIGINT, on_signal);
    (void)signal(SIGTERM, on_signal);

    struct wisp_loop *loop = NULL;
    if (wisp_loop_create(&loop) != 0) {
        (void)fprintf(stderr, "wisp-ceiling: cannot create the event loop\n");
        return 1;
    }
    char client_id[64];
    (void)snprintf(client_id, sizeof client_id, "wisp-ceiling-%ld", (long)getpid());
    struct wisp_msess_config c = {
        .uri = o.broker,
        .client_id = client_id,
        .version = 5,
        .keepalive_s = 30,
        .session_expiry_s = 1, /* the broker forgets this client a second after it goes */
    };
    struct wisp_msess_hooks h = {.on_message = on_message, .on_published = on_published};
    char err[256];
    if (wisp_msess_create(loop, &c, &h, &g.sess, err, sizeof err) != 0) {
        (void)fprintf(stderr, "wisp-ceiling: %s\n", err);
        wisp_loop_destroy(loop);
        return 1;
    }
    const struct wisp_msess_sub sub = {o.in_topic, g.qos};
    (void)wisp_msess_set_subscriptions(g.sess, &sub, 1);
    bool ready = false;
    while (!stop) {
        int t = wisp_msess_next_timeout_ms(g.sess, wisp_mono_ns());
        (void)wisp_loop_run_once(loop, t < 0 || t > 100 ? 100 : t);
        wisp_msess_tick(g.sess, wisp_mono_ns());
        if (!ready && wisp_msess_subscribed(g.sess)) {
            ready = true;
            (void)printf("ready\n");
            (void)fflush(stdout);
        }
    }
    wisp_msess_destroy(g.sess);
    for (; g.n > 0; g.n--, g.head = (g.head + 1) % BACKLOG)
        cJSON_free(g.backlog[g.head]);
    wisp_loop_destroy(loop);
    (void)fprintf(stderr, "wisp-ceiling: in=%lu out=%lu bad=%lu dropped=%lu\n", g.in, g.out, g.bad,
                  g.dropped);
    return 0;
}
