/*
 * wisp-cloud: the fleet control plane. One MQTT client (wispcore's mqtt.h),
 * one HTTP API (libmicrohttpd, epoll mode) and one LMDB store, all driven
 * from one loop thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud.h"
#include "cloud_meter.h"
#include "cloud_http.h"
#include "log.h"
#include "loop.h"
#include "mqtt.h"
#include "util.h"

#define TICK_NS (100 * 1000000ULL)

struct opts {
    const char *broker, *listen, *data, *token_file, *fleet_token_file, *client_id;
    char *token, *fleet_token;
};

struct app {
    struct cloud *c;
    struct wisp_mqtt *mqtt;
    struct cloud_http *http;
    struct wisp_loop *loop;
    struct wisp_watch *watches[3];
    int sigfd;
    bool stop;
};

static void usage(FILE *f)
{
    (void)fprintf(f,
                  "usage: wisp-cloud --broker URI --listen HOST:PORT --data DIR --token-file FILE\n"
                  "                  [--fleet-token-file FILE] [--client-id ID]\n"
                  "                  [--log-level debug|info|warn|error]\n"
                  "  --broker URI            MQTT broker, e.g. tcp://127.0.0.1:1883\n"
                  "  --listen HOST:PORT      HTTP API address; port 0 picks a free one\n"
                  "                          (written to DIR/http.port)\n"
                  "  --data DIR              state folder (LMDB store, bundles)\n"
                  "  --token-file FILE       API bearer token (or --token TOKEN, or the\n"
                  "                          WISP_CLOUD_TOKEN environment variable)\n"
                  "  --fleet-token-file FILE devices must present this token in hello\n"
                  "  --client-id ID          MQTT client id (default wisp-cloud)\n"
                  "  --log-level LEVEL       debug, info (default), warn or error\n");
}

/* The first line of a file, without blanks around it. NULL with a message. */
static char *read_token(const char *flag, const char *path)
{
    char *buf;
    size_t len;
    int rc = wisp_read_file(path, 4096, &buf, &len);
    if (rc != 0) {
        (void)fprintf(stderr, "wisp-cloud: %s %s: %s\n", flag, path, strerror(-rc));
        return NULL;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    if (n == 0) {
        (void)fprintf(stderr, "wisp-cloud: %s %s: the file holds no token\n", flag, path);
        free(buf);
        return NULL;
    }
    return buf;
}

/* 0 to run, 1 for --help, 2 for bad usage (the message printed). */
static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, 'b'},
        {"listen", required_argument, NULL, 'l'},
        {"data", required_argument, NULL, 'd'},
        {"token-file", required_argument, NULL, 't'},
        {"token", required_argument, NULL, 'T'},
        {"fleet-token-file", required_argument, NULL, 'f'},
        {"client-id", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *token = NULL;
    int ch, level;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            o->broker = optarg;
            break;
        case 'l':
            o->listen = optarg;
            break;
        case 'd':
            o->data = optarg;
            break;
        case 't':
            o->token_file = optarg;
            break;
        case 'T':
            token = optarg;
            break;
        case 'f':
            o->fleet_token_file = optarg;
            break;
        case 'c':
            o->client_id = optarg;
            break;
        case 'v':
            level = wisp_log_level_parse(optarg);
            if (level < 0) {
                (void)fprintf(stderr,
                              "wisp-cloud: --log-level %s: use debug, info, warn or "
                              "error\n",
                              optarg);
                return 2;
            }
            wisp_log_threshold = level;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            (void)fprintf(stderr, "wisp-cloud: %s: unknown option or missing value\n",
                          argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        (void)fprintf(stderr, "wisp-cloud: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    const char *missing = !o->broker   ? "--broker"
                          : !o->listen ? "--listen"
                          : !o->data   ? "--data"
                                       : NULL;
    if (missing) {
        (void)fprintf(stderr, "wisp-cloud: %s is required (see --help)\n", missing);
        return 2;
    }
    if (!token && !o->token_file)
        token = getenv("WISP_CLOUD_TOKEN");
    if (o->token_file) {
        if (!(o->token = read_token("--token-file", o->token_file)))
            return 2;
    } else if (token && token[0]) {
        o->token = strdup(token);
    } else {
        (void)fprintf(stderr, "wisp-cloud: no API token: give --token-file FILE, --token TOKEN "
                              "or WISP_CLOUD_TOKEN\n");
        return 2;
    }
    if (o->fleet_token_file &&
        !(o->fleet_token = read_token("--fleet-token-file", o->fleet_token_file)))
        return 2;
    if (!o->token)
        return 2;
    return 0;
}

static void publish_cb(void *ud, const char *topic, const void *payload, size_t len, int qos,
                       int retain)
{
    struct app *a = ud;
    int rc = wisp_mqtt_publish(a->mqtt, topic, payload, len, qos, retain);
    if (rc != 0)
        log_error("publish to %s (%zu bytes) failed: %s", topic, len, strerror(-rc));
}

static void on_mqtt(void *ud, int fd, uint32_t events)
{
    (void)fd;
    (void)events;
    struct app *a = ud;
    struct wisp_mqtt_msg *msgs = wisp_mqtt_take(a->mqtt);
    if (!msgs)
        return;
    if (cloud_batch_begin(a->c, wisp_real_ns()) != 0) {
        log_error("store: cannot begin a transaction; %s", "messages dropped");
        wisp_mqtt_msg_free(msgs);
        return;
    }
    size_t n = 0;
    for (struct wisp_mqtt_msg *m = msgs; m; m = m->next) {
        if (m->kind == WISP_MQTT_CONNECTED) {
            a->c->mqtt_connected = true;
            log_info("connected to the broker");
            cloud_meter_ack_all(a->c);
        } else if (m->kind == WISP_MQTT_LOST) {
            a->c->mqtt_connected = false;
            log_warn("broker connection %s: %s", m->connect_failed ? "failed" : "lost",
                     m->reason ? m->reason : "no reason given");
        } else if (m->kind == WISP_MQTT_MESSAGE) {
            cloud_handle_message(a->c, m->topic, m->payload, m->payload_len, m->retain != 0);
            n++;
        }
    }
    int rc = cloud_batch_end(a->c);
    if (rc != 0)
        log_error("a batch of %zu messages was not stored: %s", n, strerror(-rc));
    wisp_mqtt_msg_free(msgs);
}

static void on_http(void *ud, int fd, uint32_t events)
{
    (void)fd;
    (void)events;
    cloud_http_run(((struct app *)ud)->http);
}

static void on_signal(void *ud, int fd, uint32_t events)
{
    (void)events;
    struct signalfd_siginfo si;
    if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        log_info("signal %u: shutting down", si.ssi_signo);
        ((struct app *)ud)->stop = true;
    }
}

static void write_port(const char *dir, unsigned port)
{
    char path[4096], tmp[4200], text[16];
    (void)snprintf(path, sizeof(path), "%s/http.port", dir);
    (void)snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int n = snprintf(text, sizeof(text), "%u\n", port);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || wisp_write_full(fd, text, (size_t)n) != 0 || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, path) != 0)
        log_warn("%s: cannot write the HTTP port: %s", path, strerror(errno));
}

static int start_mqtt(struct app *a, const struct opts *o)
{
    struct wisp_mqtt_config cfg = {
        .uri = o->broker,
        .client_id = o->client_id ? o->client_id : "wisp-cloud",
        .version = 3,
        .clean_start = 1,
        .max_buffered = 100000,
    };
    char err[512];
    if (wisp_mqtt_create(&cfg, &a->mqtt, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp-cloud: --broker %s: %s\n", o->broker, err);
        return -1;
    }
    static const char *const filters[] = {"wisp/v1/+/hello", "wisp/v1/+/status",
                                          "wisp/v1/+/reported", "wisp/v1/+/meter"};
    static const int qos[] = {1, 1, 1, 1};
    if (wisp_mqtt_set_subscriptions(a->mqtt, filters, qos, 4) != 0 ||
        wisp_mqtt_start(a->mqtt) != 0) {
        (void)fprintf(stderr, "wisp-cloud: cannot start the MQTT client\n");
        return -1;
    }
    return 0;
}

static int setup(struct app *a, const struct opts *o, const sigset_t *sigs)
{
    char err[1024];
    struct cloud_config cc = {
        .data_dir = o->data,
        .fleet_token = o->fleet_token,
        .publish = publish_cb,
        .publish_ud = a,
    };
    if (cloud_create(&cc, &a->c, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp-cloud: %s\n", err);
        return -1;
    }
    unsigned port = 0;
    if (cloud_http_start(a->c, o->listen, o->token, &a->http, &port, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp-cloud: %s\n", err);
        return -1;
    }
    if (start_mqtt(a, o) != 0)
        return -1;
    a->sigfd = signalfd(-1, sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (a->sigfd < 0 || wisp_loop_create(&a->loop) != 0 ||
        !(a->watches[0] = wisp_loop_add(a->loop, a->sigfd, EPOLLIN, on_signal, a)) ||
        !(a->watches[1] = wisp_loop_add(a->loop, wisp_mqtt_fd(a->mqtt), EPOLLIN, on_mqtt, a)) ||
        !(a->watches[2] = wisp_loop_add(a->loop, cloud_http_fd(a->http), EPOLLIN, on_http, a))) {
        (void)fprintf(stderr, "wisp-cloud: cannot set up the event loop: %s\n", strerror(errno));
        return -1;
    }
    char host[300];
    (void)snprintf(host, sizeof(host), "%s", o->listen);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = '\0';
    log_info("listening on http://%s:%u (%zu devices, %zu rollouts, data %s)", host, port,
             a->c->ndevs, a->c->nrollouts, o->data);
    (void)printf("listening on http://%s:%u\n", host, port);
    (void)fflush(stdout);
    write_port(o->data, port);
    return 0;
}

static int min_timeout(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

static void run(struct app *a)
{
    uint64_t next_tick = wisp_mono_ns() + TICK_NS;
    while (!a->stop) {
        uint64_t now = wisp_mono_ns();
        int t = now >= next_tick ? 0 : (int)((next_tick - now) / 1000000) + 1;
        t = min_timeout(t, wisp_mqtt_tick(a->mqtt, now));
        t = min_timeout(t, cloud_http_timeout_ms(a->http));
        int rc = wisp_loop_run_once(a->loop, t);
        if (rc < 0 && rc != -EINTR) {
            log_error("event loop failed: %s", strerror(-rc));
            break;
        }
        cloud_http_run(a->http);
        now = wisp_mono_ns();
        if (now >= next_tick) {
            next_tick = now + TICK_NS;
            if (cloud_batch_begin(a->c, wisp_real_ns()) == 0) {
                cloud_tick(a->c);
                (void)cloud_batch_end(a->c);
            }
        }
    }
}

static void teardown(struct app *a)
{
    for (size_t i = 0; a->loop && i < WISP_ARRAY_LEN(a->watches); i++)
        wisp_loop_remove(a->loop, a->watches[i]);
    cloud_http_stop(a->http);
    wisp_mqtt_destroy(a->mqtt, 2000);
    wisp_loop_destroy(a->loop);
    if (a->sigfd >= 0)
        (void)close(a->sigfd);
    cloud_destroy(a->c);
}

int main(int argc, char **argv)
{
    struct opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) {
        free(o.token);
        free(o.fleet_token);
        return rc == 1 ? 0 : 2;
    }
    /* Blocked before any thread starts (Paho's, libmicrohttpd's), so that
     * only the signalfd sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    (void)pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    (void)signal(SIGPIPE, SIG_IGN);
    struct app a = {.sigfd = -1};
    rc = setup(&a, &o, &sigs) == 0 ? 0 : 1;
    if (rc == 0) {
        run(&a);
        log_info("stopped");
    }
    teardown(&a);
    free(o.token);
    free(o.fleet_token);
    return rc;
}
