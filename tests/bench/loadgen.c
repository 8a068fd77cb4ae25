/*
 * wisp-loadgen: closed-loop MQTT load generator for the Wisp benchmark.
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
 * Common: --broker URI (tcp:// or mqtt://) --qos 0|1 --in TOPIC --out TOPIC --timeout-ms MS
 *         --no-nodelay (accepted and ignored: the client always sets TCP_NODELAY)
 *
 * Transport: the runtime's own MQTT client (msess.c, MQTT 5) on its epoll loop (loop.c), all
 * on one thread: no client threads, locks or keep-awake traffic, so the measuring equipment
 * takes as little CPU as it can from the programs it measures on a small machine. Each run
 * connects as "wisp-loadgen-PID" with a Session Expiry of 1 s, so that the broker keeps no
 * session (and queues nothing) for it once it has gone. Received QoS 1 outputs are
 * acknowledged at once. A QoS 1 publish refused because the broker's Receive Maximum is
 * reached waits for a PUBACK and leaves then, its send time taken when it leaves.
 */
#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "log.h"
#include "loop.h"
#include "msess.h"

enum mode { MODE_CLOSED, MODE_COLD, MODE_PROBE };
enum phase { PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

#define MS_NS  1000000ULL
#define SEC_NS 1000000000ULL

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

    struct wisp_loop *loop;
    struct wisp_msess *sess;
    uint64_t start_ns;

    /* closed loop */
    struct slot *slots;
    uint64_t *next_k; /* per slot: seq = k * inflight + slot */
    unsigned *ready;  /* ring of free slots waiting to publish (the window was full) */
    unsigned ready_head, ready_n;
    unsigned outstanding; /* slots with seq != 0 */
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
    return (uint64_t)ts.tv_sec * SEC_NS + (uint64_t)ts.tv_nsec;
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

/* 0 (on_published follows), -ENOBUFS (window full: try after a PUBACK) or another error. */
static int publish_raw(const char *payload, int len, uint64_t token)
{
    return wisp_msess_publish(g.sess, g.in_topic, payload, (size_t)len, g.qos, false, NULL, token);
}

/* Milliseconds from now to deadline, rounded up so that the wait never ends early. */
static int ms_until(uint64_t deadline_ns, uint64_t now)
{
    if (deadline_ns <= now)
        return 0;
    uint64_t ms = (deadline_ns - now + MS_NS - 1) / MS_NS;
    return ms > 60000 ? 60000 : (int)ms;
}

/* One turn of the event loop: waits for traffic until deadline_ns at most (UINT64_MAX: only
 * the session's own timers), dispatches it, runs the session's timers. */
static void step(uint64_t deadline_ns)
{
    uint64_t now = mono_ns();
    int ms = deadline_ns == UINT64_MAX ? 60000 : ms_until(deadline_ns, now);
    int t = wisp_msess_next_timeout_ms(g.sess, now);
    if (t >= 0 && t < ms)
        ms = t;
    int rc = wisp_loop_run_once(g.loop, ms);
    if (rc < 0) {
        (void)fprintf(stderr, "wisp-loadgen: event loop: %s\n", strerror(-rc));
        exit(1);
    }
    wisp_msess_tick(g.sess, mono_ns());
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

/* ---- closed loop (throughput and latency) ---- */

static void ready_push(unsigned i)
{
    g.ready[(g.ready_head + g.ready_n) % g.inflight] = i;
    g.ready_n++;
}

static void check_done(void)
{
    if (g.phase == PH_MEASURE && g.count > 0 &&
        (long)(g.measured_recv + g.measured_lost) >= g.count) {
        g.t_end = mono_ns();
        g.measured_at_end = g.measured_recv;
        g.phase = PH_DRAIN;
    }
    if (g.phase == PH_DRAIN && g.outstanding == 0)
        g.phase = PH_DONE;
}

/*
 * Publishes a new message from every free slot waiting in g.ready, in order, until the
 * session's window is full (the rest waits for an on_published) or no new message should
 * leave. A publish that fails otherwise leaves its slot occupied: it times out as lost.
 */
static void pump(void)
{
    char buf[160];
    while (g.ready_n > 0) {
        if (g.phase != PH_WARMUP && g.phase != PH_MEASURE) {
            g.ready_n = 0;
            return;
        }
        bool measured = g.phase == PH_MEASURE;
        if (measured && g.count > 0 && (long)g.measured_sent >= g.count) {
            g.ready_n = 0;
            return;
        }
        unsigned i = g.ready[g.ready_head];
        uint64_t seq = (g.next_k[i] + 1) * g.inflight + i;
        uint64_t now = mono_ns();
        int n = make_payload(buf, sizeof buf, seq, now);
        if (n < 0)
            return;
        int rc = publish_raw(buf, n, i);
        if (rc == -ENOBUFS)
            return;
        g.ready_head = (g.ready_head + 1) % g.inflight;
        g.ready_n--;
        g.next_k[i]++;
        g.slots[i] = (struct slot){.seq = seq, .sent_ns = now, .measured = measured};
        g.outstanding++;
        g.sent++;
        if (measured)
            g.measured_sent++;
        if (rc != 0)
            g.send_err++;
    }
}

static void free_slot(unsigned i)
{
    g.slots[i].seq = 0;
    g.outstanding--;
    ready_push(i);
}

static void on_closed_message(const void *payload, size_t len, uint64_t now)
{
    cJSON *o = cJSON_ParseWithLength(payload, len);
    uint64_t seq = 0;
    bool ok = output_ok(o, &seq);
    bool have_seq = o && cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "seq"));
    cJSON_Delete(o);

    unsigned i = 0;
    if (!ok)
        g.bad++;
    if (have_seq)
        i = (unsigned)(seq % g.inflight);
    if (!have_seq || g.slots[i].seq != seq) {
        g.late++; /* after its timeout, a duplicate, or not ours */
        return;
    }
    struct slot sl = g.slots[i];
    free_slot(i);
    g.received++;
    if (sl.measured) {
        g.measured_recv++;
        samples_add(&g.lat, now - sl.sent_ns);
    } else if (g.phase == PH_WARMUP && ++g.warm_recv >= g.warmup) {
        g.phase = PH_MEASURE;
        g.t_start = now;
    }
    check_done();
}

/* Declares the slots older than --timeout-ms lost (they are sent again); returns when to look
 * next: the oldest remaining slot's deadline (a later send has a later one). */
static uint64_t expire_slots(uint64_t now)
{
    uint64_t timeout_ns = (uint64_t)g.timeout_ms * MS_NS;
    uint64_t oldest = now;
    for (unsigned i = 0; i < g.inflight; i++) {
        if (!g.slots[i].seq)
            continue;
        if (now > g.slots[i].sent_ns + timeout_ns) {
            g.lost++;
            if (g.slots[i].measured)
                g.measured_lost++;
            free_slot(i);
        } else if (g.slots[i].sent_ns < oldest) {
            oldest = g.slots[i].sent_ns;
        }
    }
    return oldest + timeout_ns + 1;
}

static int run_closed(void)
{
    g.slots = calloc(g.inflight, sizeof *g.slots);
    g.next_k = calloc(g.inflight, sizeof *g.next_k);
    g.ready = calloc(g.inflight, sizeof *g.ready);
    if (!g.slots || !g.next_k || !g.ready)
        return 1;
    g.phase = g.warmup > 0 ? PH_WARMUP : PH_MEASURE;
    g.t_start = mono_ns();
    for (unsigned i = 0; i < g.inflight; i++)
        ready_push(i);

    /* The warmup itself is bounded: at most 30 s. */
    uint64_t warm_deadline = mono_ns() + 30 * SEC_NS;
    uint64_t next_scan = mono_ns() + (uint64_t)g.timeout_ms * MS_NS;
    for (;;) {
        uint64_t now = mono_ns();
        if (g.phase == PH_WARMUP && now > warm_deadline) {
            (void)fprintf(stderr, "wisp-loadgen: warmup did not finish (%ld of %ld outputs)\n",
                          g.warm_recv, g.warmup);
            g.phase = PH_MEASURE;
            g.t_start = now;
        }
        uint64_t measure_end = UINT64_MAX;
        if (g.phase == PH_MEASURE && g.count <= 0) {
            measure_end = g.t_start + (uint64_t)(g.duration_s * 1e9);
            if (now >= measure_end) {
                g.t_end = now;
                g.measured_at_end = g.measured_recv;
                g.phase = PH_DRAIN;
            }
        }
        if (now >= next_scan)
            next_scan = expire_slots(now);
        pump();
        check_done();
        if (g.phase == PH_DONE)
            break;
        uint64_t deadline = next_scan;
        if (g.phase == PH_MEASURE && measure_end < deadline)
            deadline = measure_end;
        if (g.phase == PH_WARMUP && warm_deadline + 1 < deadline)
            deadline = warm_deadline + 1;
        step(deadline);
    }

    double secs = (double)(g.t_end - g.t_start) / 1e9;
    if (g.lat.n)
        qsort(g.lat.v, g.lat.n, sizeof *g.lat.v, cmp_u32);
    double thr = secs > 0 ? (double)g.measured_at_end / secs : 0;
    printf("mode=%s qos=%d inflight=%u window_s=%.3f sent=%lu received=%lu measured=%zu "
           "throughput=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f "
           "lost=%lu late=%lu bad=%lu send_err=%lu\n",
           g.count > 0 ? "latency" : "throughput", g.qos, g.inflight, secs, g.sent, g.received,
           g.lat.n, thr, pct_us(&g.lat, 50), pct_us(&g.lat, 90), pct_us(&g.lat, 99),
           pct_us(&g.lat, 100), mean_us(&g.lat), g.lost, g.late, g.bad, g.send_err);
    (void)fflush(stdout);
    return g.measured_recv > 0 ? 0 : 1;
}

/* ---- cold start ---- */

/* One message, wait for its output. Returns its latency in ns, 0 when lost. */
static uint64_t roundtrip(uint64_t seq)
{
    char buf[160];
    int n = make_payload(buf, sizeof buf, seq, mono_ns());
    g.expect_seq = seq;
    g.got_ns = 0;
    uint64_t t0 = mono_ns();
    uint64_t deadline = t0 + (uint64_t)g.timeout_ms * MS_NS;
    if (n < 0)
        return 0;
    int rc;
    while ((rc = publish_raw(buf, n, seq)) == -ENOBUFS && mono_ns() < deadline)
        step(deadline); /* an earlier PUBACK still outstanding */
    if (rc != 0)
        return 0;
    while (!g.got_ns && mono_ns() < deadline)
        step(deadline);
    uint64_t got = g.got_ns;
    g.expect_seq = 0;
    return got ? got - t0 : 0;
}

/* Keeps the connection served (keepalive, stray outputs) for ns. */
static void idle_ns(uint64_t ns)
{
    uint64_t end = mono_ns() + ns;
    while (mono_ns() < end)
        step(end);
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
        idle_ns((uint64_t)g.idle_ms * MS_NS);
        uint64_t c = roundtrip(seq++);
        uint64_t w = roundtrip(seq++);
        if (c)
            samples_add(&cold, c);
        if (w)
            samples_add(&warm, w);
        lost += !c + !w;
    }
    if (cold.n)
        qsort(cold.v, cold.n, sizeof *cold.v, cmp_u32);
    if (warm.n)
        qsort(warm.v, warm.n, sizeof *warm.v, cmp_u32);
    printf("mode=cold qos=%d idle_ms=%u n=%u cold_p50_us=%.1f cold_min_us=%.1f cold_max_us=%.1f "
           "warm_p50_us=%.1f warm_min_us=%.1f warm_max_us=%.1f lost=%lu late=%lu bad=%lu\n",
           g.qos, g.idle_ms, g.cold_n, pct_us(&cold, 50), pct_us(&cold, 0), pct_us(&cold, 100),
           pct_us(&warm, 50), pct_us(&warm, 0), pct_us(&warm, 100), lost, g.late, g.bad);
    (void)fflush(stdout);
    int rc = cold.n > 0 ? 0 : 1;
    free(cold.v);
    free(warm.v);
    return rc;
}

/* ---- session hooks ---- */

static void on_message(void *ud, uint16_t pid, int qos, bool dup, bool retain, const char *topic,
                       size_t topic_len, const void *payload, size_t len)
{
    (void)ud;
    (void)dup;
    (void)retain;
    (void)topic;
    (void)topic_len;
    uint64_t now = mono_ns();
    if (qos > 0)
        (void)wisp_msess_ack(g.sess, pid, qos);
    if (g.mode == MODE_CLOSED) {
        if (g.slots)
            on_closed_message(payload, len, now);
        else
            g.late++; /* before the run started: not ours */
    } else if (g.mode == MODE_COLD) {
        cJSON *o = cJSON_ParseWithLength(payload, len);
        uint64_t seq = 0;
        bool ok = output_ok(o, &seq);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "seq");
        bool have = cJSON_IsNumber(s);
        uint64_t got_seq = have ? (uint64_t)s->valuedouble : 0;
        cJSON_Delete(o);
        if (have && got_seq == g.expect_seq && !g.got_ns) {
            if (!ok)
                g.bad++;
            g.got_ns = now;
        } else {
            g.late++;
        }
    } else { /* probe: any output means the pipeline is up */
        cJSON *o = cJSON_ParseWithLength(payload, len);
        uint64_t seq = 0;
        bool ok = output_ok(o, &seq);
        cJSON_Delete(o);
        if (!ok)
            g.bad++;
        if (!g.got_any) {
            g.got_any = true;
            g.got_ns = now;
        }
    }
}

static void on_published(void *ud, uint64_t token, bool ok)
{
    (void)ud;
    (void)token;
    if (!ok)
        g.send_err++; /* the connection ended first: the message may be lost */
}

static void on_lost(void *ud, const char *why)
{
    (void)ud;
    (void)fprintf(stderr, "wisp-loadgen: connection lost: %s\n", why ? why : "?");
}

static int connect_and_subscribe(void)
{
    char client_id[64];
    (void)snprintf(client_id, sizeof client_id, "wisp-loadgen-%ld", (long)getpid());
    struct wisp_msess_config cfg = {
        .uri = g.broker,
        .client_id = client_id,
        .version = 5,
        .keepalive_s = 30,
        .session_expiry_s = 1, /* the broker forgets us a second after we leave */
    };
    struct wisp_msess_hooks hooks = {
        .on_message = on_message,
        .on_lost = on_lost,
        .on_published = on_published,
    };
    char err[256];
    int rc = wisp_loop_create(&g.loop);
    if (rc < 0) {
        (void)fprintf(stderr, "wisp-loadgen: event loop: %s\n", strerror(-rc));
        return -1;
    }
    rc = wisp_msess_create(g.loop, &cfg, &hooks, &g.sess, err, sizeof err);
    if (rc < 0) {
        (void)fprintf(stderr, "wisp-loadgen: %s\n", err);
        return -1;
    }
    struct wisp_msess_sub sub = {.filter = g.out_topic, .qos = g.qos};
    if (wisp_msess_set_subscriptions(g.sess, &sub, 1) != 0) {
        (void)fprintf(stderr, "wisp-loadgen: cannot subscribe to '%s'\n", g.out_topic);
        return -1;
    }
    uint64_t deadline = mono_ns() + 10 * SEC_NS;
    while (!wisp_msess_subscribed(g.sess) && mono_ns() < deadline)
        step(deadline);
    if (!wisp_msess_subscribed(g.sess)) {
        (void)fprintf(stderr, "wisp-loadgen: could not connect and subscribe to %s\n", g.broker);
        return -1;
    }
    return 0;
}

/* Sends DISCONNECT (the session expires a second later) and closes. */
static void disconnect(void)
{
    wisp_msess_destroy(g.sess);
    g.sess = NULL;
    wisp_loop_destroy(g.loop);
    g.loop = NULL;
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
    (void)signal(sig, SIG_DFL);
    (void)raise(sig);
    /* cppcheck-suppress unreachableCode ; raise() returns when the signal is blocked */
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
        (void)fflush(NULL);
        t0 = mono_ns();
        child = fork();
        if (child < 0) {
            perror("wisp-loadgen: fork");
            return 1;
        }
        if (child == 0) {
            /* only async-signal-safe calls between fork and exec; our socket and epoll
             * descriptors are close-on-exec */
            setpgid(0, 0);
            dup2(STDERR_FILENO, STDOUT_FILENO);
            (void)signal(SIGPIPE, SIG_DFL);
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            execvp(g.cmd[0], g.cmd);
            static const char msg[] = "wisp-loadgen: cannot exec the command\n";
            ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
            (void)w;
            _exit(127);
        }
        setpgid(child, child);
    }
    uint64_t deadline = mono_ns() + (uint64_t)g.timeout_ms * MS_NS;
    uint64_t seq = 1;
    const char *why = "timeout";
    for (;;) {
        char buf[160];
        int n = make_payload(buf, sizeof buf, seq, mono_ns());
        if (n > 0)
            (void)publish_raw(buf, n, seq);
        seq++;
        uint64_t next = mono_ns() + 2 * MS_NS;
        while (!g.got_any && mono_ns() < next)
            step(next);
        if (g.got_any)
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
    stop_child();
    if (g.got_any)
        printf("mode=probe ready_ms=%.2f probes=%llu bad=%lu\n", (double)(g.got_ns - t0) / 1e6,
               (unsigned long long)(seq - 1), g.bad);
    else
        printf("mode=probe ready_ms=%s probes=%llu bad=%lu\n", why, (unsigned long long)(seq - 1),
               g.bad);
    (void)fflush(stdout);
    return g.got_any ? 0 : 1;
}

static void usage(FILE *f)
{
    (void)fputs(
        "usage: wisp-loadgen --broker URI [--qos 0|1] [--in T] [--out T] [--timeout-ms MS]\n"
        "                    [--no-nodelay (ignored: TCP_NODELAY is always on)]\n"
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
    g.timeout_ms = 0;
    g.start_ns = mono_ns();

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--now")) {
            printf("%llu\n", (unsigned long long)mono_ns());
            return 0;
        } else if (!strcmp(a, "--no-nodelay")) {
            /* accepted for old scripts: the session always sets TCP_NODELAY */
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
                g.qos = (int)strtol(v, NULL, 10);
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

    wisp_log_threshold = WISP_LOG_WARN; /* the session's connect/disconnect notes are noise here */
    (void)signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER; /* the handler re-raises */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (connect_and_subscribe() != 0) {
        disconnect();
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
    free(g.ready);
    return rc;
}
