/*
 * wisp-loadgen: closed-loop MQTT load generator for the Wisp benchmark (Paho MQTTAsync).
 *
 * Publishes {"dev":"d1","temp":T,"seq":N,"t0":NS} on bench/in and waits for the enriched copy
 * on bench/out, keeping exactly W messages in flight: a new message leaves only when an output
 * arrives (or when one is declared lost after --timeout-ms). Latency is send to receive on
 * CLOCK_MONOTONIC, taken from the loadgen's own table (t0 in the payload is informational:
 * nanoseconds since the loadgen started, small enough to survive any JSON encoder).
 * Outputs are checked: temp_f == temp*9/5+32 and alert == (temp > 30); mismatches count as bad.
 *
 * Modes (one result line on stdout, key=value separated by spaces):
 *   --inflight 64 --duration 5      throughput (msgs/s over the measured window)
 *   --inflight 1 --count 2000       latency p50/p90/p99/max in microseconds
 *     both start with --warmup N outputs that are not measured (default 500 / 100)
 *   --cold N --idle-ms M            N times: stay idle M ms, then time one event (cold) and
 *                                   the one right after it (warm); one connection throughout
 *   --probe [--since-ns NS] [-- CMD ARGS...]
 *                                   publish one message every 2 ms until the first output
 *                                   arrives; print ms since NS (CLOCK_MONOTONIC, default
 *                                   now). With a command: start it (own process group,
 *                                   stdout to our stderr) right after subscribing, measure
 *                                   from just before fork, then terminate its group.
 *   --now                           print CLOCK_MONOTONIC in ns and exit
 * Common: --broker URI --qos 0|1 --in TOPIC --out TOPIC --timeout-ms MS
 *         --no-nodelay (leave Nagle on for our own socket; see set_nodelay_on_tcp_sockets)
 *
 * The loadgen is measuring equipment and keeps its own Paho artefacts out of the figures:
 * TCP_NODELAY on its socket, and keep-awake ticks while it waits (see tick()).
 */
#include <MQTTAsync.h>
#include <cjson/cJSON.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"

enum mode { MODE_CLOSED, MODE_COLD, MODE_PROBE };
enum phase { PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

struct slot {
    uint64_t seq;     /* 0: free */
    uint64_t sent_ns; /* CLOCK_MONOTONIC at publish */
    bool measured;    /* sent during the measured phase */
};

struct samples {
    uint32_t *v; /* latencies in ns, clamped to UINT32_MAX */
    size_t n, cap;
};

static struct {
    /* configuration */
    const char *broker;
    const char *in_topic, *out_topic;
    int qos;
    enum mode mode;
    unsigned inflight;
    double duration_s;
    long count; /* > 0: latency mode, number of measured messages */
    long warmup;
    unsigned timeout_ms;
    uint64_t since_ns;
    bool have_since;
    char **cmd;
    bool nodelay;
    char tick_topic[64];

    MQTTAsync client;
    uint64_t start_ns;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool subscribed, connect_failed;

    /* closed loop */
    struct slot *slots;
    uint64_t *next_k; /* per slot: seq = k * inflight + slot */
    enum phase phase;
    long warm_recv;
    uint64_t t_start, t_end;
    unsigned long sent, received, measured_sent, measured_recv, measured_at_end;
    unsigned long lost, measured_lost, late, bad, send_err;
    struct samples lat;

    unsigned cold_n, idle_ms;

    /* cold start and probe: one outstanding message */
    uint64_t expect_seq;
    uint64_t got_ns;
    bool got_any;
} g;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void samples_add(struct samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile in microseconds; samples must be sorted. */
static double pct_us(const struct samples *s, double p)
{
    if (s->n == 0)
        return NAN;
    size_t rank = (size_t)ceil(p / 100.0 * (double)s->n);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1] / 1000.0;
}

static double mean_us(const struct samples *s)
{
    if (s->n == 0)
        return NAN;
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    return sum / (double)s->n / 1000.0;
}

static int make_payload(char *buf, size_t cap, uint64_t seq, uint64_t now)
{
    double temp = 20.0 + (double)(seq % 200) / 10.0; /* 20.0 .. 39.9: about half alert */
    int n = snprintf(buf, cap, "{\"dev\":\"d1\",\"temp\":%.1f,\"seq\":%llu,\"t0\":%llu}", temp,
                     (unsigned long long)seq, (unsigned long long)(now - g.start_ns));
    return n > 0 && (size_t)n < cap ? n : -1;
}

static int publish_raw(const char *payload, int len)
{
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)payload;
    m.payloadlen = len;
    m.qos = g.qos;
    return MQTTAsync_sendMessage(g.client, g.in_topic, &m, NULL);
}

/*
 * Paho 1.3.12's receive thread polls the socket for up to 1 s and, when nothing came, sleeps
 * 100 ms without reading: a message arriving then waits. Measuring equipment must not add that
 * (the program under test keeps its own): while we wait without traffic of our own coming
 * back, we publish a small tick to a topic only we subscribe to, more often than every second.
 */
static void tick(void)
{
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = "t";
    m.payloadlen = 1;
    m.qos = 0;
    MQTTAsync_sendMessage(g.client, g.tick_topic, &m, NULL);
}

/* Sleeps ns, ticking every 200 ms. */
static void idle_ns(uint64_t ns)
{
    const uint64_t slice = 200 * 1000000ULL;
    while (ns > 0) {
        uint64_t d = ns < slice ? ns : slice;
        tick();
        sleep_ns(d);
        ns -= d;
    }
}

/*
 * Closed loop: claim slot i for a new message (caller holds g.mu); fills buf.
 * Returns the payload length, or -1 when no new message should leave.
 */
static int claim_slot(unsigned i, char *buf, size_t cap)
{
    if (g.phase != PH_WARMUP && g.phase != PH_MEASURE)
        return -1;
    bool measured = g.phase == PH_MEASURE;
    if (measured && g.count > 0 && (long)g.measured_sent >= g.count)
        return -1;
    uint64_t seq = ++g.next_k[i] * g.inflight + i;
    uint64_t now = mono_ns();
    int n = make_payload(buf, cap, seq, now);
    if (n < 0)
        return -1;
    g.slots[i] = (struct slot){.seq = seq, .sent_ns = now, .measured = measured};
    g.sent++;
    if (measured)
        g.measured_sent++;
    return n;
}

static void send_claimed(const char *buf, int n)
{
    if (publish_raw(buf, n) != MQTTASYNC_SUCCESS) {
        /* leave the slot occupied: it times out and counts as lost */
        pthread_mutex_lock(&g.mu);
        g.send_err++;
        pthread_mutex_unlock(&g.mu);
    }
}

/* Caller holds g.mu. */
static void check_done_locked(void)
{
    if (g.phase == PH_MEASURE && g.count > 0 &&
        (long)(g.measured_recv + g.measured_lost) >= g.count) {
        g.t_end = mono_ns();
        g.measured_at_end = g.measured_recv;
        g.phase = PH_DRAIN;
    }
    if (g.phase == PH_DRAIN) {
        for (unsigned i = 0; i < g.inflight; i++)
            if (g.slots[i].seq)
                return;
        g.phase = PH_DONE;
        pthread_cond_broadcast(&g.cv);
    }
}

static bool output_ok(const cJSON *o, uint64_t *seq)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "seq");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "temp");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "temp_f");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "alert");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "dev");
    if (!cJSON_IsNumber(s) || s->valuedouble < 0)
        return false;
    *seq = (uint64_t)s->valuedouble;
    if (!cJSON_IsNumber(t) || !cJSON_IsNumber(f) || !cJSON_IsBool(a) || !cJSON_IsString(d))
        return false;
    double want = t->valuedouble * 9.0 / 5.0 + 32.0;
    if (fabs(f->valuedouble - want) > 1e-6 * fabs(want) + 1e-9)
        return false;
    return cJSON_IsTrue(a) == (t->valuedouble > 30.0) && !strcmp(d->valuestring, "d1");
}

static void on_closed_message(const MQTTAsync_message *m, uint64_t now)
{
    cJSON *o = cJSON_ParseWithLength(m->payload, (size_t)m->payloadlen);
    uint64_t seq = 0;
    bool ok = output_ok(o, &seq);
    bool have_seq = o && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "seq"));
    cJSON_Delete(o);

    char buf[160];
    int n = -1;
    unsigned i = 0;
    pthread_mutex_lock(&g.mu);
    if (!ok)
        g.bad++;
    if (have_seq)
        i = (unsigned)(seq % g.inflight);
    if (!have_seq || g.slots[i].seq != seq) {
        g.late++; /* after its timeout, a duplicate, or not ours */
        pthread_mutex_unlock(&g.mu);
        return;
    }
    struct slot sl = g.slots[i];
    g.slots[i].seq = 0;
    g.received++;
    if (sl.measured) {
        g.measured_recv++;
        samples_add(&g.lat, now - sl.sent_ns);
    } else if (g.phase == PH_WARMUP && ++g.warm_recv >= g.warmup) {
        g.phase = PH_MEASURE;
        g.t_start = now;
        pthread_cond_broadcast(&g.cv);
    }
    n = claim_slot(i, buf, sizeof buf);
    check_done_locked();
    pthread_mutex_unlock(&g.mu);
    if (n > 0)
        send_claimed(buf, n);
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    (void)ctx;
    (void)topic_len;
    uint64_t now = mono_ns();
    if (!strcmp(topic, g.tick_topic)) {
        /* our own keep-awake tick */
    } else if (g.mode == MODE_CLOSED) {
        on_closed_message(m, now);
    } else if (g.mode == MODE_COLD) {
        cJSON *o = cJSON_ParseWithLength(m->payload, (size_t)m->payloadlen);
        uint64_t seq = 0;
        bool ok = output_ok(o, &seq);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "seq");
        bool have = cJSON_IsNumber(s);
        uint64_t got_seq = have ? (uint64_t)s->valuedouble : 0;
        cJSON_Delete(o);
        pthread_mutex_lock(&g.mu);
        if (have && got_seq == g.expect_seq && !g.got_ns) {
            if (!ok)
                g.bad++;
            g.got_ns = now;
            pthread_cond_broadcast(&g.cv);
        } else {
            g.late++;
        }
        pthread_mutex_unlock(&g.mu);
    } else { /* probe: any output means the pipeline is up */
        cJSON *o = cJSON_ParseWithLength(m->payload, (size_t)m->payloadlen);
        uint64_t seq = 0;
        bool ok = output_ok(o, &seq);
        cJSON_Delete(o);
        pthread_mutex_lock(&g.mu);
        if (!ok)
            g.bad++;
        if (!g.got_any) {
            g.got_any = true;
            g.got_ns = now;
            pthread_cond_broadcast(&g.cv);
        }
        pthread_mutex_unlock(&g.mu);
    }
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    pthread_mutex_lock(&g.mu);
    g.subscribed = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

static void on_failed(void *ctx, MQTTAsync_failureData *r)
{
    fprintf(stderr, "wisp-loadgen: %s failed (rc %d%s%s)\n", (const char *)ctx, r ? r->code : -1,
            r && r->message ? ": " : "", r && r->message ? r->message : "");
    pthread_mutex_lock(&g.mu);
    g.connect_failed = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

static void on_connected(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_subscribed;
    ro.onFailure = on_failed;
    ro.context = "subscribe";
    char *topics[2] = {(char *)g.out_topic, g.tick_topic};
    int qos[2] = {g.qos, 0};
    int rc = MQTTAsync_subscribeMany(g.client, 2, topics, qos, &ro);
    if (rc != MQTTASYNC_SUCCESS)
        on_failed("subscribe", NULL);
}

static void on_connection_lost(void *ctx, char *cause)
{
    (void)ctx;
    fprintf(stderr, "wisp-loadgen: connection lost: %s\n", cause ? cause : "?");
}

/* Waits on g.cv (caller holds g.mu) until deadline_ns; false on timeout. */
static bool wait_until(uint64_t deadline_ns)
{
    uint64_t now = mono_ns();
    if (now >= deadline_ns)
        return false;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t abs_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    abs_ns += deadline_ns - now;
    ts.tv_sec = (time_t)(abs_ns / 1000000000ULL);
    ts.tv_nsec = (long)(abs_ns % 1000000000ULL);
    return pthread_cond_timedwait(&g.cv, &g.mu, &ts) != ETIMEDOUT;
}

/*
 * Paho 1.3.12 never sets TCP_NODELAY, so at QoS 1 a small PUBLISH waits behind an unacked
 * PUBACK for the broker's delayed ACK (~40 ms per hop here). The load generator is measuring
 * equipment and must not add that to every figure: set TCP_NODELAY on our TCP sockets
 * (there is one, Paho's). The implementations under test are left as they are.
 */
static void set_nodelay_on_tcp_sockets(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        struct stat st;
        if (*end || fd < 0 || fd == dirfd(d) || fstat((int)fd, &st) || !S_ISSOCK(st.st_mode))
            continue;
        int domain = 0, type = 0, one = 1;
        socklen_t len = sizeof domain;
        if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &domain, &len))
            continue;
        len = sizeof type;
        if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len))
            continue;
        if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM)
            setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    closedir(d);
}

static int connect_and_subscribe(void)
{
    char client_id[64];
    snprintf(client_id, sizeof client_id, "wisp-loadgen-%ld", (long)getpid());
    snprintf(g.tick_topic, sizeof g.tick_topic, "wisp-loadgen/%ld/tick", (long)getpid());
    int rc = MQTTAsync_create(&g.client, g.broker, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "wisp-loadgen: MQTTAsync_create(%s): rc %d\n", g.broker, rc);
        return -1;
    }
    MQTTAsync_setCallbacks(g.client, NULL, on_connection_lost, on_message, NULL);
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    co.keepAliveInterval = 30;
    co.cleansession = 1;
    co.onSuccess = on_connected;
    co.onFailure = on_failed;
    co.context = "connect";
    rc = MQTTAsync_connect(g.client, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        fprintf(stderr, "wisp-loadgen: MQTTAsync_connect(%s): rc %d\n", g.broker, rc);
        return -1;
    }
    uint64_t deadline = mono_ns() + 10ULL * 1000000000ULL;
    pthread_mutex_lock(&g.mu);
    while (!g.subscribed && !g.connect_failed && wait_until(deadline)) {
    }
    bool ok = g.subscribed;
    pthread_mutex_unlock(&g.mu);
    if (!ok)
        fprintf(stderr, "wisp-loadgen: could not connect and subscribe to %s\n", g.broker);
    else if (g.nodelay)
        set_nodelay_on_tcp_sockets();
    return ok ? 0 : -1;
}

static void disconnect(void)
{
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 500;
    MQTTAsync_disconnect(g.client, &d);
    usleep(50 * 1000);
    MQTTAsync_destroy(&g.client);
}

/* ---- closed loop (throughput and latency) ---- */

static int run_closed(void)
{
    g.slots = calloc(g.inflight, sizeof *g.slots);
    g.next_k = calloc(g.inflight, sizeof *g.next_k);
    if (!g.slots || !g.next_k)
        return 1;
    g.phase = g.warmup > 0 ? PH_WARMUP : PH_MEASURE;
    uint64_t timeout_ns = (uint64_t)g.timeout_ms * 1000000ULL;

    char buf[160];
    pthread_mutex_lock(&g.mu);
    g.t_start = mono_ns();
    pthread_mutex_unlock(&g.mu);
    for (unsigned i = 0; i < g.inflight; i++) {
        pthread_mutex_lock(&g.mu);
        int n = claim_slot(i, buf, sizeof buf);
        pthread_mutex_unlock(&g.mu);
        if (n > 0)
            send_claimed(buf, n);
    }

    /* The warmup itself is bounded: at most 30 s, or 10 s without any progress. */
    uint64_t warm_deadline = mono_ns() + 30ULL * 1000000000ULL;
    for (;;) {
        unsigned resend[64];
        unsigned nresend = 0;
        pthread_mutex_lock(&g.mu);
        uint64_t now = mono_ns(); /* under the lock: no slot is newer than this */
        if (g.phase == PH_WARMUP && now > warm_deadline) {
            fprintf(stderr, "wisp-loadgen: warmup did not finish (%ld of %ld outputs)\n",
                    g.warm_recv, g.warmup);
            g.phase = PH_MEASURE;
            g.t_start = now;
        }
        if (g.phase == PH_MEASURE && g.count <= 0 &&
            now - g.t_start >= (uint64_t)(g.duration_s * 1e9)) {
            g.t_end = now;
            g.measured_at_end = g.measured_recv;
            g.phase = PH_DRAIN;
        }
        for (unsigned i = 0; i < g.inflight && nresend < 64; i++) {
            if (g.slots[i].seq && now > g.slots[i].sent_ns + timeout_ns) {
                g.lost++;
                if (g.slots[i].measured)
                    g.measured_lost++;
                g.slots[i].seq = 0;
                resend[nresend++] = i;
            }
        }
        check_done_locked();
        bool done = g.phase == PH_DONE;
        pthread_mutex_unlock(&g.mu);
        if (done)
            break;
        for (unsigned r = 0; r < nresend; r++) {
            pthread_mutex_lock(&g.mu);
            int n = claim_slot(resend[r], buf, sizeof buf);
            check_done_locked();
            pthread_mutex_unlock(&g.mu);
            if (n > 0)
                send_claimed(buf, n);
        }
        sleep_ns(2 * 1000000ULL);
    }

    pthread_mutex_lock(&g.mu);
    double secs = (double)(g.t_end - g.t_start) / 1e9;
    qsort(g.lat.v, g.lat.n, sizeof *g.lat.v, cmp_u32);
    double thr = secs > 0 ? (double)g.measured_at_end / secs : 0;
    printf("mode=%s qos=%d inflight=%u window_s=%.3f sent=%lu received=%lu measured=%zu "
           "throughput=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f "
           "lost=%lu late=%lu bad=%lu send_err=%lu\n",
           g.count > 0 ? "latency" : "throughput", g.qos, g.inflight, secs, g.sent, g.received,
           g.lat.n, thr, pct_us(&g.lat, 50), pct_us(&g.lat, 90), pct_us(&g.lat, 99),
           pct_us(&g.lat, 100), mean_us(&g.lat), g.lost, g.late, g.bad, g.send_err);
    bool flowed = g.measured_recv > 0;
    pthread_mutex_unlock(&g.mu);
    fflush(stdout);
    return flowed ? 0 : 1;
}

/* ---- cold start ---- */

/* One message, wait for its output. Returns its latency in ns, 0 when lost. */
static uint64_t roundtrip(uint64_t seq)
{
    char buf[160];
    int n = make_payload(buf, sizeof buf, seq, mono_ns());
    pthread_mutex_lock(&g.mu);
    g.expect_seq = seq;
    g.got_ns = 0;
    pthread_mutex_unlock(&g.mu);
    uint64_t t0 = mono_ns();
    if (n < 0 || publish_raw(buf, n) != MQTTASYNC_SUCCESS)
        return 0;
    uint64_t deadline = t0 + (uint64_t)g.timeout_ms * 1000000ULL;
    pthread_mutex_lock(&g.mu);
    while (!g.got_ns && wait_until(deadline)) {
    }
    uint64_t got = g.got_ns;
    g.expect_seq = 0;
    pthread_mutex_unlock(&g.mu);
    return got ? got - t0 : 0;
}

/* N times: stay idle, time one event (cold), then the one right after it (warm). */
static int run_cold(void)
{
    struct samples cold = {0}, warm = {0};
    unsigned long lost = 0;
    uint64_t seq = 1;
    for (unsigned i = 0; i < 3; i++) /* the function has run before; our client is warm */
        if (!roundtrip(seq++))
            lost++;
    for (unsigned i = 0; i < g.cold_n; i++) {
        idle_ns((uint64_t)g.idle_ms * 1000000ULL);
        uint64_t c = roundtrip(seq++);
        uint64_t w = roundtrip(seq++);
        if (c)
            samples_add(&cold, c);
        if (w)
            samples_add(&warm, w);
        lost += !c + !w;
    }
    qsort(cold.v, cold.n, sizeof *cold.v, cmp_u32);
    qsort(warm.v, warm.n, sizeof *warm.v, cmp_u32);
    pthread_mutex_lock(&g.mu);
    printf("mode=cold qos=%d idle_ms=%u n=%u cold_p50_us=%.1f cold_min_us=%.1f cold_max_us=%.1f "
           "warm_p50_us=%.1f warm_min_us=%.1f warm_max_us=%.1f lost=%lu late=%lu bad=%lu\n",
           g.qos, g.idle_ms, g.cold_n, pct_us(&cold, 50), pct_us(&cold, 0), pct_us(&cold, 100),
           pct_us(&warm, 50), pct_us(&warm, 0), pct_us(&warm, 100), lost, g.late, g.bad);
    pthread_mutex_unlock(&g.mu);
    fflush(stdout);
    int rc = cold.n > 0 ? 0 : 1;
    free(cold.v);
    free(warm.v);
    return rc;
}

/* ---- startup to ready ---- */

static volatile pid_t child = -1;

/* Interrupted (Ctrl-C in the benchmark): the command started in probe mode lives in its own
 * process group, so take it down with us. */
static void on_signal(int sig)
{
    if (child > 0)
        kill(-child, SIGKILL);
    /* die of the signal itself, so that a calling shell sees the Ctrl-C and stops too */
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
}

static void stop_child(void)
{
    pid_t pid = child;
    if (pid <= 0)
        return;
    kill(-pid, SIGTERM);
    bool reaped = false;
    for (int i = 0; i < 500 && !reaped; i++) { /* up to 5 s, then SIGKILL */
        pid_t r = waitpid(pid, NULL, WNOHANG);
        reaped = r == pid || (r < 0 && errno == ECHILD);
        if (!reaped)
            usleep(10 * 1000);
    }
    kill(-pid, SIGKILL); /* the leader if it ignored SIGTERM, and anything left in its group */
    if (!reaped)
        waitpid(pid, NULL, 0);
    child = -1;
}

static int run_probe(void)
{
    uint64_t t0 = g.have_since ? g.since_ns : mono_ns();
    if (g.cmd) {
        fflush(NULL);
        t0 = mono_ns();
        child = fork();
        if (child < 0) {
            perror("wisp-loadgen: fork");
            return 1;
        }
        if (child == 0) {
            /* only async-signal-safe calls between fork and exec: Paho's threads exist */
            setpgid(0, 0);
            dup2(STDERR_FILENO, STDOUT_FILENO);
            signal(SIGPIPE, SIG_DFL);
            sigset_t none;
            sigemptyset(&none);
            pthread_sigmask(SIG_SETMASK, &none, NULL);
            execvp(g.cmd[0], g.cmd);
            static const char msg[] = "wisp-loadgen: cannot exec the command\n";
            ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
            (void)w;
            _exit(127);
        }
        setpgid(child, child);
    }
    uint64_t deadline = mono_ns() + (uint64_t)g.timeout_ms * 1000000ULL;
    uint64_t seq = 1;
    const char *why = "timeout";
    for (;;) {
        char buf[160];
        if (seq % 50 == 1)
            tick(); /* every 100 ms */
        int n = make_payload(buf, sizeof buf, seq++, mono_ns());
        if (n > 0)
            publish_raw(buf, n);
        pthread_mutex_lock(&g.mu);
        uint64_t next = mono_ns() + 2 * 1000000ULL;
        while (!g.got_any && wait_until(next)) {
        }
        bool got = g.got_any;
        pthread_mutex_unlock(&g.mu);
        if (got)
            break;
        if (child > 0) {
            int st;
            if (waitpid(child, &st, WNOHANG) == child) {
                kill(-child, SIGKILL); /* whatever it left in its group */
                child = -1;
                why = "exited";
                break;
            }
        }
        if (mono_ns() >= deadline)
            break;
    }
    pthread_mutex_lock(&g.mu);
    bool got = g.got_any;
    uint64_t got_ns = g.got_ns;
    unsigned long bad = g.bad;
    pthread_mutex_unlock(&g.mu);
    stop_child();
    if (got)
        printf("mode=probe ready_ms=%.2f probes=%llu bad=%lu\n", (double)(got_ns - t0) / 1e6,
               (unsigned long long)(seq - 1), bad);
    else
        printf("mode=probe ready_ms=%s probes=%llu bad=%lu\n", why, (unsigned long long)(seq - 1),
               bad);
    fflush(stdout);
    return got ? 0 : 1;
}

static void usage(FILE *f)
{
    fputs("usage: wisp-loadgen --broker URI [--qos 0|1] [--in T] [--out T] [--timeout-ms MS]\n"
          "                    [--no-nodelay]\n"
          "         --inflight W --duration S [--warmup N]     throughput\n"
          "         --inflight W --count N [--warmup N]        latency percentiles\n"
          "         --cold N --idle-ms MS                      cold vs warm event after idle\n"
          "         --probe [--since-ns NS] [-- CMD ARGS...]   startup to first output\n"
          "       wisp-loadgen --now                           CLOCK_MONOTONIC in ns\n",
          f);
}

int main(int argc, char **argv)
{
    if (bench_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    g.in_topic = "bench/in";
    g.out_topic = "bench/out";
    g.inflight = 1;
    g.duration_s = 5;
    g.warmup = -1;
    g.idle_ms = 1000;
    g.nodelay = true;
    g.timeout_ms = 0;
    g.start_ns = mono_ns();
    pthread_mutex_init(&g.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g.cv, &ca);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--now")) {
            printf("%llu\n", (unsigned long long)mono_ns());
            return 0;
        } else if (!strcmp(a, "--no-nodelay")) {
            g.nodelay = false;
        } else if (!strcmp(a, "--probe")) {
            g.mode = MODE_PROBE;
        } else if (!strcmp(a, "--")) {
            if (i + 1 >= argc) {
                usage(stderr);
                return 2;
            }
            g.cmd = &argv[i + 1];
            break;
        } else if (!v) {
            usage(stderr);
            return 2;
        } else {
            i++;
            if (!strcmp(a, "--broker"))
                g.broker = v;
            else if (!strcmp(a, "--qos"))
                g.qos = atoi(v);
            else if (!strcmp(a, "--in"))
                g.in_topic = v;
            else if (!strcmp(a, "--out"))
                g.out_topic = v;
            else if (!strcmp(a, "--inflight"))
                g.inflight = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(a, "--duration"))
                g.duration_s = strtod(v, NULL);
            else if (!strcmp(a, "--count"))
                g.count = strtol(v, NULL, 10);
            else if (!strcmp(a, "--warmup"))
                g.warmup = strtol(v, NULL, 10);
            else if (!strcmp(a, "--timeout-ms"))
                g.timeout_ms = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(a, "--cold")) {
                g.mode = MODE_COLD;
                g.cold_n = (unsigned)strtoul(v, NULL, 10);
            } else if (!strcmp(a, "--idle-ms"))
                g.idle_ms = (unsigned)strtoul(v, NULL, 10);
            else if (!strcmp(a, "--since-ns")) {
                g.since_ns = strtoull(v, NULL, 10);
                g.have_since = true;
            } else {
                usage(stderr);
                return 2;
            }
        }
    }
    if (!g.broker || g.qos < 0 || g.qos > 1 || g.inflight < 1 || g.inflight > 100000 ||
        g.duration_s <= 0 || (g.cmd && g.mode != MODE_PROBE)) {
        usage(stderr);
        return 2;
    }
    if (g.warmup < 0)
        g.warmup = g.count > 0 ? 100 : 500;
    if (g.timeout_ms == 0)
        g.timeout_ms = g.mode == MODE_CLOSED ? 2000 : g.mode == MODE_COLD ? 10000 : 30000;

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER; /* the handler re-raises */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (connect_and_subscribe() != 0) {
        if (g.client)
            MQTTAsync_destroy(&g.client);
        return 1;
    }
    int rc;
    switch (g.mode) {
    case MODE_COLD:
        rc = run_cold();
        break;
    case MODE_PROBE:
        rc = run_probe();
        break;
    default:
        rc = run_closed();
        break;
    }
    disconnect();
    free(g.lat.v);
    free(g.slots);
    free(g.next_k);
    return rc;
}
