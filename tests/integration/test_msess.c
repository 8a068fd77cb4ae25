/*
 * wisp_msess, the durable MQTT session, for MQTT 3.1.1 and 5:
 *
 * - against a real mosquitto on a free loopback port: QoS 0/1/2 delivery
 *   with topic, payload and flags; replacing subscriptions; acked messages
 *   stay acked and unacked ones come back with DUP across a destroyed and
 *   re-created session; messages published while it is down arrive later;
 *   a broker restart (reconnect, resubscribe, stale acks refused); a
 *   subscription the broker refuses; pausing; packets above max_packet;
 *   publishing at QoS 0/1/2 to a second session, bursts in order, the v5
 *   message id as user property (mosquitto_sub), the broker killed with
 *   publishes in flight.
 * - against a scripted fake broker on a plain socket: the exact bytes of
 *   CONNECT, SUBSCRIBE/UNSUBSCRIBE, PUBACK/PUBREC/PUBCOMP (sent only at
 *   wisp_msess_ack), PUBLISH/PUBREL, PINGREQ and DISCONNECT; publish
 *   windows, refusals and identifiers released on resume; keepalive
 *   timeouts; refused CONNACKs with backoff; garbage, oversized, truncated
 *   and otherwise hostile input, which must be logged and end in a
 *   reconnect.
 * - the decoders on every prefix of valid packets and on random bodies,
 *   each in a heap block of exactly its size (so ASan sees over-reads).
 *
 * Messages are published with mosquitto_pub. Every wait polls a condition
 * against a deadline. WISP_TEST_LOG=debug shows the module's debug lines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "loop.h"
#include "mqtt_codec.h"
#include "msess.h"
#include "testbroker.h"
#include "util.h"

extern char **environ;

enum { MAX_MSGS = 64, MAX_SESS = 4, MAX_TOKENS = 4096 };

struct rmsg {
    uint16_t pid;
    int qos;
    bool dup, retain;
    char topic[128];
    char *payload; /* NUL-terminated copy */
    size_t len;
};

struct ts {
    struct wisp_msess *s;
    struct rmsg msgs[MAX_MSGS];
    size_t n;
    int connected, lost;
    size_t pause_at; /* on_message pauses the session when n reaches it */
    bool session_present;
    char why[256];
    /* count_only: on_message checks that payloads count up from seq_next
     * (a decimal number each) and acks at once, nothing is stored */
    bool count_only;
    long seq_next;
    size_t seq_n, seq_bad, ack_bad;
    /* on_published, by token (< MAX_TOKENS) */
    uint8_t calls[MAX_TOKENS];
    bool okv[MAX_TOKENS];
    uint16_t order[MAX_TOKENS];
    size_t ncalls, nok, nfail, norder, bad_token;
    bool repub;                /* publish again from a not-ok on_published */
    size_t repub_n, repub_bad; /* ... and how often that did not get -ENOTCONN */
    /* feed: publishes tokens feed_next..feed_total-1 (payload: the token)
     * until -ENOBUFS, also from on_published */
    uint64_t feed_next, feed_total;
    int feed_qos;
    const char *feed_topic;
};

static struct wisp_loop *loop;
static struct ts *active[MAX_SESS];

static uint64_t now_ms(void)
{
    return wisp_mono_ns() / 1000000u;
}

/* One turn of the loop: waits for I/O at most ms, then ticks every session. */
static void pump(int ms)
{
    uint64_t now = wisp_mono_ns();
    int t = ms;
    for (int i = 0; i < MAX_SESS; i++) {
        if (!active[i])
            continue;
        int x = wisp_msess_next_timeout_ms(active[i]->s, now);
        if (x >= 0 && x < t)
            t = x;
    }
    (void)wisp_loop_run_once(loop, t);
    now = wisp_mono_ns();
    for (int i = 0; i < MAX_SESS; i++)
        if (active[i])
            wisp_msess_tick(active[i]->s, now);
}

#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        uint64_t end_ = now_ms() + (ms);                                                           \
        while (!(cond) && now_ms() < end_)                                                         \
            pump(10);                                                                              \
    } while (0)

static void on_message(void *ud, uint16_t pid, int qos, bool dup, bool retain, const char *topic,
                       size_t topic_len, const void *payload, size_t len)
{
    struct ts *t = ud;
    if (t->count_only) {
        char num[24];
        (void)snprintf(num, sizeof(num), "%.*s", (int)(len < 23 ? len : 23), (const char *)payload);
        long v = strtol(num, NULL, 10);
        if (v != t->seq_next)
            t->seq_bad++;
        t->seq_next = v + 1;
        t->seq_n++;
        if (qos > 0 && wisp_msess_ack(t->s, pid, qos) != 0)
            t->ack_bad++;
        return;
    }
    if (t->n >= MAX_MSGS)
        return;
    struct rmsg *m = &t->msgs[t->n++];
    m->pid = pid;
    m->qos = qos;
    m->dup = dup;
    m->retain = retain;
    (void)snprintf(m->topic, sizeof(m->topic), "%.*s", (int)topic_len, topic);
    m->payload = malloc(len + 1);
    if (m->payload) {
        if (len)
            memcpy(m->payload, payload, len);
        m->payload[len] = '\0';
    }
    m->len = len;
    if (t->pause_at && t->n == t->pause_at)
        wisp_msess_pause(t->s, true);
}

static void on_connected(void *ud, bool session_present)
{
    struct ts *t = ud;
    t->connected++;
    t->session_present = session_present;
}

static void on_lost(void *ud, const char *why)
{
    struct ts *t = ud;
    t->lost++;
    (void)snprintf(t->why, sizeof(t->why), "%s", why);
}

/* Publishes the feed until it is done or the session refuses; the rc. */
static int feed(struct ts *t)
{
    while (t->feed_next < t->feed_total) {
        char payload[24];
        int len = snprintf(payload, sizeof(payload), "%llu", (unsigned long long)t->feed_next);
        int rc = wisp_msess_publish(t->s, t->feed_topic, payload, (size_t)len, t->feed_qos, false,
                                    NULL, t->feed_next);
        if (rc)
            return rc;
        t->feed_next++;
    }
    return 0;
}

static void on_published(void *ud, uint64_t token, bool ok)
{
    struct ts *t = ud;
    t->ncalls++;
    if (ok)
        t->nok++;
    else
        t->nfail++;
    if (token >= MAX_TOKENS) {
        t->bad_token++;
        return;
    }
    if (t->calls[token] < 255)
        t->calls[token]++;
    t->okv[token] = ok;
    if (t->norder < MAX_TOKENS)
        t->order[t->norder++] = (uint16_t)token;
    if (!ok && t->repub) {
        t->repub_n++;
        if (wisp_msess_publish(t->s, "x/y", "z", 1, 1, false, NULL, MAX_TOKENS - 1) != -ENOTCONN)
            t->repub_bad++;
    }
    if (ok && t->feed_total)
        (void)feed(t);
}

/* Clears the record of on_published calls. */
static void pubs_clear(struct ts *t)
{
    memset(t->calls, 0, sizeof(t->calls));
    memset(t->okv, 0, sizeof(t->okv));
    t->ncalls = t->nok = t->nfail = t->norder = t->bad_token = 0;
}

/* Tokens lo..hi-1 each completed exactly once, all ok (or all not ok), and
 * in increasing order among the recorded calls. */
static void check_tokens(const struct ts *t, uint64_t lo, uint64_t hi, bool ok, int line)
{
    size_t bad = 0, unordered = 0;
    for (uint64_t k = lo; k < hi && k < MAX_TOKENS; k++)
        if (t->calls[k] != 1 || t->okv[k] != ok)
            bad++;
    long last = -1;
    for (size_t i = 0; i < t->norder; i++) {
        if (t->order[i] < lo || t->order[i] >= hi)
            continue;
        if ((long)t->order[i] <= last)
            unordered++;
        last = t->order[i];
    }
    if (bad || unordered) {
        (void)fprintf(stderr,
                      "test_msess.c:%d: tokens %llu..%llu: %zu not completed once %s, %zu out of "
                      "order\n",
                      line, (unsigned long long)lo, (unsigned long long)hi - 1, bad,
                      ok ? "ok" : "not ok", unordered);
        wisp_check_failures++;
    }
}
#define CHECK_TOKENS(t, lo, hi, ok) check_tokens((t), (lo), (hi), (ok), __LINE__)

static void cfg_init(struct wisp_msess_config *c, const char *uri, const char *id, int version)
{
    memset(c, 0, sizeof(*c));
    c->uri = uri;
    c->client_id = id;
    c->version = version;
    c->keepalive_s = 10;
    c->reconnect_min_ms = 50;
    c->reconnect_max_ms = 400;
}

static void ts_clear(struct ts *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->msgs[i].payload);
    t->n = 0;
}

static bool ts_open(struct ts *t, const struct wisp_msess_config *c,
                    const struct wisp_msess_sub *subs, size_t n)
{
    char err[256];
    memset(t, 0, sizeof(*t));
    struct wisp_msess_hooks h = {on_message, on_connected, on_lost, t, on_published};
    int rc = wisp_msess_create(loop, c, &h, &t->s, err, sizeof(err));
    CHECK_INT_EQ(rc, 0);
    if (rc) {
        (void)fprintf(stderr, "create: %s\n", err);
        return false;
    }
    CHECK_INT_EQ(wisp_msess_set_subscriptions(t->s, subs, n), 0);
    for (int i = 0; i < MAX_SESS; i++) {
        if (!active[i]) {
            active[i] = t;
            break;
        }
    }
    return true;
}

static void ts_close(struct ts *t)
{
    for (int i = 0; i < MAX_SESS; i++)
        if (active[i] == t)
            active[i] = NULL;
    wisp_msess_destroy(t->s);
    t->s = NULL;
    ts_clear(t);
}

static struct rmsg *find(struct ts *t, const char *topic)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->msgs[i].topic, topic) == 0)
            return &t->msgs[i];
    return NULL;
}

/* Waits for a message on topic; NULL (and a failed check) after ms. */
static struct rmsg *expect(struct ts *t, const char *topic, int ms)
{
    WAIT_FOR(find(t, topic), ms);
    struct rmsg *m = find(t, topic);
    if (!m)
        (void)fprintf(stderr, "  no message on %s within %d ms\n", topic, ms);
    CHECK(m != NULL);
    return m;
}

/* The 200 KB payload file of the large-message cases (mosquitto_pub -f):
 * 20000 lines of a 9-digit counter. */
static void write_big(const char *path)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    for (int i = 0; f && i < 20000; i++)
        (void)fprintf(f, "%09d\n", i);
    CHECK(f && fclose(f) == 0);
}

static void check_big(const struct rmsg *m)
{
    CHECK_INT_EQ(m->len, 200000);
    CHECK(m->payload && memcmp(m->payload + 199990, "000019999\n", 10) == 0);
}

static void check_msg(const struct rmsg *m, const char *payload, int qos, bool dup, bool retain)
{
    if (!m)
        return;
    CHECK_STR_EQ(m->payload, payload);
    CHECK_INT_EQ(m->len, strlen(payload));
    CHECK_INT_EQ(m->qos, qos);
    CHECK_INT_EQ(m->dup, dup);
    CHECK_INT_EQ(m->retain, retain);
    CHECK(qos == 0 ? m->pid == 0 : m->pid != 0);
}

/* mosquitto_pub; payload "@path" sends a file, NULL an empty message. */
static void pub(int port, int version, const char *topic, const char *payload, int qos, bool retain)
{
    char p[16], q[4];
    (void)snprintf(p, sizeof(p), "%d", port);
    (void)snprintf(q, sizeof(q), "%d", qos);
    const char *argv[20];
    int a = 0;
    argv[a++] = "mosquitto_pub";
    argv[a++] = "-h";
    argv[a++] = "127.0.0.1";
    argv[a++] = "-p";
    argv[a++] = p;
    argv[a++] = "-t";
    argv[a++] = topic;
    argv[a++] = "-q";
    argv[a++] = q;
    argv[a++] = "-V";
    argv[a++] = version == 5 ? "mqttv5" : "mqttv311";
    if (!payload) {
        argv[a++] = "-n";
    } else if (payload[0] == '@') {
        argv[a++] = "-f";
        argv[a++] = payload + 1;
    } else {
        argv[a++] = "-m";
        argv[a++] = payload;
    }
    if (retain)
        argv[a++] = "-r";
    argv[a] = NULL;
    pid_t pid;
    int rc = posix_spawnp(&pid, "mosquitto_pub", NULL, NULL, (char *const *)argv, environ);
    CHECK_INT_EQ(rc, 0);
    if (rc)
        return;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static bool broker_up(struct wisp_testbroker *b, const struct wisp_testbroker_opts *o)
{
    int rc = wisp_testbroker_start(b, o);
    CHECK_INT_EQ(rc, 0);
    return rc == 0;
}

/* ---- capturing the log ---- */

static int saved_stderr = -1;
static char cap_path[64];

static void capture_start(void)
{
    (void)snprintf(cap_path, sizeof(cap_path), "/tmp/wisp-test-msess-log-XXXXXX");
    int fd = mkstemp(cap_path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    saved_stderr = dup(STDERR_FILENO);
    CHECK(saved_stderr >= 0 && dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    close(fd);
}

/* The captured text (also copied to the real stderr), malloc'd. */
static char *capture_end(void)
{
    if (saved_stderr < 0)
        return NULL;
    CHECK(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    char *text = NULL;
    size_t len = 0;
    CHECK_INT_EQ(wisp_read_file(cap_path, 16u << 20, &text, &len), 0);
    (void)unlink(cap_path);
    if (text)
        (void)!write(STDERR_FILENO, text, len);
    return text;
}

/* ---- real broker ---- */

static void config_errors(void)
{
    struct wisp_msess_config c;
    struct wisp_msess *s = (struct wisp_msess *)1;
    char err[256];
    static const struct {
        const char *uri, *id;
        int version;
        const char *want;
    } bad[] = {
        {"http://127.0.0.1:1883", "x", 4, "scheme 'http'"},
        {"wss://127.0.0.1:8883", "x", 4, "scheme 'wss'"},
        {"127.0.0.1:1883", "x", 4, "has no scheme"},
        {"tcp://", "x", 4, "has no host"},
        {"tcp://h:0", "x", 4, "not in 1..65535"},
        {"tcp://h:1883/x", "x", 4, "not in 1..65535"},
        {"tcp://h/x", "x", 4, "must not have a path"},
        {"tcp://[::1", "x", 4, "unterminated"},
        {"tcp://h", "", 4, "client_id"},
        {"tcp://h", "x", 6, "version 6"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg_init(&c, bad[i].uri, bad[i].id, bad[i].version);
        err[0] = '\0';
        CHECK_INT_EQ(wisp_msess_create(loop, &c, NULL, &s, err, sizeof(err)), -EINVAL);
        CHECK(s == NULL);
        CHECK_CONTAINS(err, bad[i].want);
    }
    cfg_init(&c, "tcp://h", "x", 4);
    c.password = "p";
    CHECK_INT_EQ(wisp_msess_create(loop, &c, NULL, &s, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "password without username");
    /* Valid, nothing listens: created, retrying in the background. */
    int port = wisp_testbroker_free_port();
    char uri[64];
    (void)snprintf(uri, sizeof(uri), "mqtt://[::1]:%d", port);
    cfg_init(&c, uri, "x", 5);
    CHECK_INT_EQ(wisp_msess_create(loop, &c, NULL, &s, err, sizeof(err)), 0);
    const struct wisp_msess_sub badsub[] = {{"a/#/b", 1}};
    const struct wisp_msess_sub badqos[] = {{"a/b", 3}};
    CHECK_INT_EQ(wisp_msess_set_subscriptions(s, badsub, 1), -EINVAL);
    CHECK_INT_EQ(wisp_msess_set_subscriptions(s, badqos, 1), -EINVAL);
    CHECK_INT_EQ(wisp_msess_ack(s, 1, 1), -ENOTCONN);
    CHECK_INT_EQ(wisp_msess_ack(s, 0, 1), -EINVAL);
    CHECK(wisp_msess_next_timeout_ms(s, wisp_mono_ns()) >= 0);
    struct wisp_msess_stats st;
    wisp_msess_get_stats(s, &st);
    CHECK(!st.connected);
    wisp_msess_destroy(s);
    wisp_msess_destroy(NULL);
}

static void pubsub(int version)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    struct ts t;
    char dir[256], big[300], id[32];
    if (!broker_up(&b, NULL))
        return;
    /* A 200 KB payload: many reads, one packet. */
    CHECK_INT_EQ(wisp_testbroker_tmpdir("msess-big", dir, sizeof(dir)), 0);
    (void)snprintf(big, sizeof(big), "@%s/big", dir);
    write_big(big + 1);

    pub(b.port, version, "t/r", "kept", 1, true);
    (void)snprintf(id, sizeof(id), "ps-%d", version);
    cfg_init(&c, b.uri, id, version);
    const struct wisp_msess_sub subs[] = {{"t/#", 2}, {"t/#", 1}};
    if (!ts_open(&t, &c, subs, 2))
        goto out;
    WAIT_FOR(t.connected == 1, 5000);
    CHECK_INT_EQ(t.connected, 1);
    struct rmsg *r = expect(&t, "t/r", 3000);
    check_msg(r, "kept", 1, false, true);

    pub(b.port, version, "t/q0", "zero", 0, false);
    pub(b.port, version, "t/q1", "one", 1, false);
    pub(b.port, version, "t/q2", "two", 2, false);
    pub(b.port, version, "t/e", NULL, 1, false);
    pub(b.port, version, "t/big", big, 1, false);
    pub(b.port, version, "t/\xc3\xa9t\xc3\xa9", "utf8", 0, false);
    check_msg(expect(&t, "t/q0", 3000), "zero", 0, false, false);
    struct rmsg *m1 = expect(&t, "t/q1", 3000);
    struct rmsg *m2 = expect(&t, "t/q2", 3000);
    struct rmsg *me = expect(&t, "t/e", 3000);
    struct rmsg *mb = expect(&t, "t/big", 5000);
    check_msg(m1, "one", 1, false, false);
    check_msg(m2, "two", 2, false, false);
    check_msg(me, "", 1, false, false);
    check_msg(expect(&t, "t/\xc3\xa9t\xc3\xa9", 3000), "utf8", 0, false, false);
    if (mb) {
        check_big(mb);
    }
    if (r && m1 && m2 && me && mb) {
        CHECK_INT_EQ(wisp_msess_ack(t.s, r->pid, 1), 0);
        CHECK_INT_EQ(wisp_msess_ack(t.s, m1->pid, 2), -EINVAL); /* wrong QoS */
        CHECK_INT_EQ(wisp_msess_ack(t.s, m1->pid, 1), 0);
        CHECK_INT_EQ(wisp_msess_ack(t.s, m1->pid, 1), -ENOTCONN); /* twice */
        CHECK_INT_EQ(wisp_msess_ack(t.s, m2->pid, 2), 0);
        CHECK_INT_EQ(wisp_msess_ack(t.s, me->pid, 1), 0);
        CHECK_INT_EQ(wisp_msess_ack(t.s, mb->pid, 1), 0);
    }

    /* Replace the set while connected: t/# goes, u/# comes. */
    const struct wisp_msess_sub subs2[] = {{"u/#", 1}};
    CHECK_INT_EQ(wisp_msess_set_subscriptions(t.s, subs2, 1), 0);
    pump(200);
    pub(b.port, version, "t/x", "gone", 1, false);
    pub(b.port, version, "u/x", "new", 1, false);
    pub(b.port, version, "u/sync", "s", 0, false);
    check_msg(expect(&t, "u/x", 3000), "new", 1, false, false);
    expect(&t, "u/sync", 3000);
    CHECK(find(&t, "t/x") == NULL);
    struct wisp_msess_stats st;
    wisp_msess_get_stats(t.s, &st);
    CHECK(st.connected);
    CHECK_INT_EQ(st.connects, 1);
    CHECK_INT_EQ(st.received, 9);
    CHECK_INT_EQ(st.acked, 5);
    CHECK_INT_EQ(st.protocol_errors, 0);
    ts_close(&t);
out:
    wisp_testbroker_cleanup(&b);
    wisp_testbroker_rmtree(dir);
}

static void test_pubsub_v4(void)
{
    pubsub(4);
}

/* Over TLS (mbedTLS) against mosquitto's TLS listener, which requires a
 * client certificate: the broker verified by IP address (subjectAltName
 * iPAddress) and by name, QoS 1 both ways, a 200 KB message (many records,
 * decrypted data left in mbedTLS after a read), a burst of 2000 QoS 1
 * publishes (writes that return WANT_WRITE); then the failures: bad files
 * at create, a CA that did not sign the broker's certificate (logged with
 * the verification failure, retried), and no client certificate. */
/* Publishes sequence numbers [from, to) on topic from tx at qos, received
 * by rx (subscribed to it, counting), and checks that every one arrived in
 * order and completed ok; calls_before: tx's completions before the burst. */
static void burst(struct ts *rx, struct ts *tx, const char *topic, int qos, uint64_t from,
                  uint64_t to, size_t calls_before)
{
    size_t n = (size_t)(to - from);
    rx->count_only = true;
    tx->feed_topic = topic;
    tx->feed_qos = qos;
    tx->feed_next = from;
    tx->feed_total = to;
    int rc = feed(tx);
    CHECK(rc == 0 || rc == -ENOBUFS);
    size_t seq_before = rx->seq_n;
    WAIT_FOR(tx->ncalls == calls_before + n && rx->seq_n == seq_before + n, 10000);
    CHECK_INT_EQ(tx->feed_next, to);
    CHECK_INT_EQ(tx->ncalls, calls_before + n);
    CHECK_TOKENS(tx, from, to, true);
    CHECK_INT_EQ(rx->seq_n, seq_before + n);
    CHECK_INT_EQ(rx->seq_bad, 0);
    CHECK_INT_EQ(rx->ack_bad, 0);
}

static void test_tls(void)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    static struct ts rx, tx;
    char pki[256], other[280], ca[320], cert[320], key[320], big[320], uri[96], err[512];
    CHECK_INT_EQ(wisp_testbroker_tmpdir("msess-pki", pki, sizeof(pki)), 0);
    (void)snprintf(other, sizeof(other), "%s/other", pki);
    CHECK_INT_EQ(wisp_testbroker_make_certs(pki), 0);
    CHECK_INT_EQ(wisp_testbroker_make_certs(other), 0);
    (void)snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    (void)snprintf(cert, sizeof(cert), "%s/client.crt", pki);
    (void)snprintf(key, sizeof(key), "%s/client.key", pki);
    const struct wisp_testbroker_opts o = {.tls_dir = pki,
                                           .extra_conf = "max_queued_messages 10000"};
    if (!broker_up(&b, &o))
        goto rm;
    (void)snprintf(big, sizeof(big), "@%s/big", pki);
    write_big(big + 1);

    /* Files are read at create; a bad one is named. */
    struct wisp_msess *bad = (struct wisp_msess *)1;
    cfg_init(&c, b.tls_uri, "tls-bad", 4);
    c.tls_ca = "/nonexistent/ca.crt";
    CHECK_INT_EQ(wisp_msess_create(loop, &c, NULL, &bad, err, sizeof(err)), -EINVAL);
    CHECK(bad == NULL);
    CHECK_CONTAINS(err, "/nonexistent/ca.crt");
    c.tls_ca = ca;
    c.tls_cert = cert;
    CHECK_INT_EQ(wisp_msess_create(loop, &c, NULL, &bad, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "needs its key");
    c.tls_key = ca; /* not a key */
    CHECK_INT_EQ(wisp_msess_create(loop, &c, NULL, &bad, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, ca);
    CHECK_INT_EQ(wisp_msess_check_config(&c, err, sizeof(err)), -EINVAL);

    cfg_init(&c, b.tls_uri, "tls-rx", 5);
    c.tls_ca = ca;
    c.tls_cert = cert;
    c.tls_key = key;
    CHECK_INT_EQ(wisp_msess_check_config(&c, err, sizeof(err)), 0);
    const struct wisp_msess_sub subs[] = {{"s/#", 1}};
    if (!ts_open(&rx, &c, subs, 1))
        goto out;
    (void)snprintf(uri, sizeof(uri), "mqtts://localhost:%d", b.tls_port);
    cfg_init(&c, uri, "tls-tx", 4);
    c.tls_ca = ca;
    c.tls_cert = cert;
    c.tls_key = key;
    if (!ts_open(&tx, &c, NULL, 0)) {
        ts_close(&rx);
        goto out;
    }
    WAIT_FOR(rx.connected == 1 && tx.connected == 1, 5000);
    CHECK_INT_EQ(rx.connected, 1);
    CHECK_INT_EQ(tx.connected, 1);
    pump(100); /* SUBACK */

    pub(b.port, 5, "s/q1", "one", 1, false);
    pub(b.port, 5, "s/big", big, 1, false);
    struct rmsg *m1 = expect(&rx, "s/q1", 3000);
    struct rmsg *mb = expect(&rx, "s/big", 5000);
    check_msg(m1, "one", 1, false, false);
    if (mb) {
        check_big(mb);
    }
    if (m1 && mb) {
        CHECK_INT_EQ(wisp_msess_ack(rx.s, m1->pid, 1), 0);
        CHECK_INT_EQ(wisp_msess_ack(rx.s, mb->pid, 1), 0);
    }
    CHECK_INT_EQ(wisp_msess_publish(tx.s, "s/tx", "payload", 7, 1, false, NULL, 1), 0);
    struct rmsg *mt = expect(&rx, "s/tx", 3000);
    check_msg(mt, "payload", 1, false, false);
    if (mt)
        CHECK_INT_EQ(wisp_msess_ack(rx.s, mt->pid, 1), 0);
    WAIT_FOR(tx.ncalls == 1, 3000);
    CHECK_TOKENS(&tx, 1, 2, true);

    rx.seq_next = 100;
    burst(&rx, &tx, "s/b", 1, 100, 2100, 1);
    rx.count_only = false;
    tx.feed_total = 0;
    struct wisp_msess_stats st;
    wisp_msess_get_stats(rx.s, &st);
    CHECK_INT_EQ(st.connects, 1);
    CHECK_INT_EQ(st.protocol_errors, 0);
    ts_close(&tx);
    ts_close(&rx);

    /* A CA that did not sign the broker's certificate: never up, the
     * reason logged, retried. */
    (void)snprintf(ca, sizeof(ca), "%s/ca.crt", other);
    cfg_init(&c, b.tls_uri, "tls-badca", 4);
    c.tls_ca = ca;
    c.tls_cert = cert;
    c.tls_key = key;
    capture_start();
    if (ts_open(&rx, &c, NULL, 0)) {
        WAIT_FOR(rx.connected == 1, 400);
        CHECK_INT_EQ(rx.connected, 0);
        ts_close(&rx);
    }
    char *log = capture_end();
    CHECK_CONTAINS(log ? log : "", "certificate failed verification for '127.0.0.1'");
    CHECK_CONTAINS(log ? log : "", "not correctly signed by the trusted CA");
    CHECK_CONTAINS(log ? log : "", "retrying in 100 ms");
    free(log);

    /* The same CA, insecure: up. */
    c.tls_insecure = true;
    if (ts_open(&rx, &c, NULL, 0)) {
        WAIT_FOR(rx.connected == 1, 5000);
        CHECK_INT_EQ(rx.connected, 1);
        ts_close(&rx);
    }

    /* No client certificate: the broker refuses the handshake. */
    (void)snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
    cfg_init(&c, b.tls_uri, "tls-nocert", 4);
    c.tls_ca = ca;
    capture_start();
    if (ts_open(&rx, &c, NULL, 0)) {
        WAIT_FOR(rx.connected == 1, 300);
        CHECK_INT_EQ(rx.connected, 0);
        ts_close(&rx);
    }
    log = capture_end();
    CHECK_CONTAINS(log ? log : "", "failed: TLS handshake: ");
    free(log);
out:
    wisp_testbroker_cleanup(&b);
rm:
    wisp_testbroker_rmtree(pki);
}

static void test_pubsub_v5(void)
{
    pubsub(5);
}

/* Unacked QoS 1 and 2 messages come back (DUP) when the session is
 * re-created; acked ones do not; messages published while it was down
 * arrive. */
static void persist(int version)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    struct ts t;
    char id[32];
    if (!broker_up(&b, NULL))
        return;
    (void)snprintf(id, sizeof(id), "pe-%d", version);
    cfg_init(&c, b.uri, id, version);
    c.session_expiry_s = 600;
    const struct wisp_msess_sub subs[] = {{"p/#", 2}};
    if (!ts_open(&t, &c, subs, 1))
        goto out;
    WAIT_FOR(t.connected == 1, 5000);
    pub(b.port, version, "p/1", "unacked-1", 1, false);
    pub(b.port, version, "p/2", "acked-1", 1, false);
    pub(b.port, version, "p/3", "unacked-2", 2, false);
    pub(b.port, version, "p/4", "acked-2", 2, false);
    struct rmsg *m2 = expect(&t, "p/2", 3000);
    struct rmsg *m4 = expect(&t, "p/4", 3000);
    expect(&t, "p/1", 3000);
    expect(&t, "p/3", 3000);
    if (m2)
        CHECK_INT_EQ(wisp_msess_ack(t.s, m2->pid, 1), 0);
    if (m4)
        CHECK_INT_EQ(wisp_msess_ack(t.s, m4->pid, 2), 0);
    /* PUBREC -> PUBREL -> PUBCOMP completes before this arrives. */
    pub(b.port, version, "p/sync", "s", 0, false);
    expect(&t, "p/sync", 3000);
    pump(100);
    ts_close(&t);

    pub(b.port, version, "p/5", "offline-1", 1, false);
    pub(b.port, version, "p/6", "offline-2", 2, false);

    if (!ts_open(&t, &c, subs, 1))
        goto out;
    WAIT_FOR(t.connected == 1, 5000);
    CHECK(t.session_present);
    struct rmsg *r1 = expect(&t, "p/1", 3000);
    struct rmsg *r3 = expect(&t, "p/3", 3000);
    struct rmsg *r5 = expect(&t, "p/5", 3000);
    struct rmsg *r6 = expect(&t, "p/6", 3000);
    check_msg(r1, "unacked-1", 1, true, false);
    check_msg(r3, "unacked-2", 2, true, false);
    check_msg(r5, "offline-1", 1, false, false);
    check_msg(r6, "offline-2", 2, false, false);
    pub(b.port, version, "p/sync2", "s", 0, false);
    expect(&t, "p/sync2", 3000);
    CHECK(find(&t, "p/2") == NULL);
    CHECK(find(&t, "p/4") == NULL);
    CHECK_INT_EQ(t.n, 5);
    if (r1 && r3 && r5 && r6) {
        CHECK_INT_EQ(wisp_msess_ack(t.s, r1->pid, 1), 0);
        CHECK_INT_EQ(wisp_msess_ack(t.s, r3->pid, 2), 0);
        CHECK_INT_EQ(wisp_msess_ack(t.s, r5->pid, 1), 0);
        CHECK_INT_EQ(wisp_msess_ack(t.s, r6->pid, 2), 0);
    }
    pub(b.port, version, "p/sync3", "s", 0, false);
    expect(&t, "p/sync3", 3000);
    pump(100);
    ts_close(&t);

    /* Everything was acked: nothing comes back. */
    if (!ts_open(&t, &c, subs, 1))
        goto out;
    WAIT_FOR(t.connected == 1, 5000);
    CHECK(t.session_present);
    pub(b.port, version, "p/sync4", "s", 0, false);
    expect(&t, "p/sync4", 3000);
    CHECK_INT_EQ(t.n, 1);
    ts_close(&t);
out:
    wisp_testbroker_cleanup(&b);
}

static void test_persist_v4(void)
{
    persist(4);
}

static void test_persist_v5(void)
{
    persist(5);
}

/* The broker restarts without persistence: on_lost, a stale ack is
 * refused, the session reconnects and subscribes again. */
static void restart(int version)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    struct ts t;
    char id[32];
    if (!broker_up(&b, NULL))
        return;
    (void)snprintf(id, sizeof(id), "rs-%d", version);
    cfg_init(&c, b.uri, id, version);
    const struct wisp_msess_sub subs[] = {{"r/#", 1}};
    if (!ts_open(&t, &c, subs, 1))
        goto out;
    WAIT_FOR(t.connected == 1, 5000);
    pub(b.port, version, "r/1", "before", 1, false);
    struct rmsg *m = expect(&t, "r/1", 3000);
    uint16_t pid = m ? m->pid : 1;

    CHECK_INT_EQ(wisp_testbroker_stop(&b, true), 0);
    WAIT_FOR(t.lost == 1, 5000);
    CHECK_INT_EQ(t.lost, 1);
    CHECK(t.why[0] != '\0');
    CHECK_INT_EQ(wisp_msess_ack(t.s, pid, 1), -ENOTCONN);
    pump(300); /* a few failed attempts */
    CHECK_INT_EQ(wisp_testbroker_restart(&b), 0);
    WAIT_FOR(t.connected == 2, 5000);
    CHECK_INT_EQ(t.connected, 2);
    CHECK(!t.session_present);
    /* The message came on the old connection: refused, nothing sent. */
    CHECK_INT_EQ(wisp_msess_ack(t.s, pid, 1), -ENOTCONN);
    pub(b.port, version, "r/2", "after", 1, false);
    struct rmsg *m2 = expect(&t, "r/2", 3000);
    check_msg(m2, "after", 1, false, false);
    if (m2)
        CHECK_INT_EQ(wisp_msess_ack(t.s, m2->pid, 1), 0);
    struct wisp_msess_stats st;
    wisp_msess_get_stats(t.s, &st);
    CHECK(st.connected);
    CHECK_INT_EQ(st.connects, 2);
    CHECK_INT_EQ(st.disconnects, 1);
    ts_close(&t);
out:
    wisp_testbroker_cleanup(&b);
}

static void test_restart_v4(void)
{
    restart(4);
}

static void test_restart_v5(void)
{
    restart(5);
}

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

/* mosquitto 2.0 grants every SUBSCRIBE under acl_file (it filters at
 * delivery) and disconnects a client that subscribes to "a/#/b"; its
 * dynamic-security plugin refuses filters with 0x80 / 0x87. */
static const char dynsec_json[] =
    "{\"defaultACLAccess\": {\"publishClientSend\": true, \"publishClientReceive\": true,"
    " \"subscribe\": false, \"unsubscribe\": true},"
    " \"clients\": [], \"groups\": [{\"groupname\": \"anon\", \"roles\": [{\"rolename\": "
    "\"open\"}]}],"
    " \"roles\": [{\"rolename\": \"open\", \"acls\": [{\"acltype\": \"subscribePattern\","
    " \"topic\": \"open/#\", \"priority\": 0, \"allow\": true}]}],"
    " \"anonymousGroup\": \"anon\"}\n";

static void sub_refused(int version)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    struct ts t;
    char dir[256], json[300], extra[700], id[32];
    const char *plugin = dynsec_plugin();
    if (!plugin) {
        (void)fprintf(stderr, "  skipped: mosquitto_dynamic_security.so not found\n");
        return;
    }
    CHECK_INT_EQ(wisp_testbroker_tmpdir("msess-acl", dir, sizeof(dir)), 0);
    (void)snprintf(json, sizeof(json), "%s/dynsec.json", dir);
    FILE *f = fopen(json, "w");
    CHECK(f != NULL);
    if (f) {
        CHECK(fputs(dynsec_json, f) >= 0);
        CHECK(fclose(f) == 0);
    }
    (void)snprintf(extra, sizeof(extra), "plugin %s\nplugin_opt_config_file %s", plugin, json);
    struct wisp_testbroker_opts o = {.extra_conf = extra};
    if (!broker_up(&b, &o)) {
        wisp_testbroker_rmtree(dir);
        return;
    }
    (void)snprintf(id, sizeof(id), "rf-%d", version);
    cfg_init(&c, b.uri, id, version);
    const struct wisp_msess_sub subs[] = {{"open/#", 1}, {"secret/#", 1}};
    capture_start();
    if (ts_open(&t, &c, subs, 2)) {
        WAIT_FOR(t.connected == 1, 5000);
        pub(b.port, version, "open/x", "hi", 1, false);
        check_msg(expect(&t, "open/x", 3000), "hi", 1, false, false);
        struct wisp_msess_stats st;
        wisp_msess_get_stats(t.s, &st);
        CHECK(st.connected);
        CHECK_INT_EQ(st.connects, 1);
        CHECK_INT_EQ(st.protocol_errors, 0);
        ts_close(&t);
    }
    char *log = capture_end();
    CHECK_CONTAINS(log, version == 5 ? "broker refused to subscribe to 'secret/#': Not "
                                       "authorized (0x87)"
                                     : "broker refused to subscribe to 'secret/#' (SUBACK "
                                       "return code 0x80)");
    free(log);
    wisp_testbroker_cleanup(&b);
    wisp_testbroker_rmtree(dir);
}

static void test_sub_refused_v4(void)
{
    sub_refused(4);
}

static void test_sub_refused_v5(void)
{
    sub_refused(5);
}

/* Paused: nothing is read, keepalive pings go on, the connection stays;
 * resumed: everything arrives. */
static void pause_resume(int version)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    struct ts t;
    char id[32];
    if (!broker_up(&b, NULL))
        return;
    (void)snprintf(id, sizeof(id), "pa-%d", version);
    cfg_init(&c, b.uri, id, version);
    c.keepalive_s = 1;
    const struct wisp_msess_sub subs[] = {{"q/#", 1}};
    if (!ts_open(&t, &c, subs, 1))
        goto out;
    WAIT_FOR(t.connected == 1, 5000);
    pump(100); /* SUBACK */
    wisp_msess_pause(t.s, true);
    for (int i = 0; i < 3; i++) {
        char topic[16];
        (void)snprintf(topic, sizeof(topic), "q/%d", i);
        pub(b.port, version, topic, "p", 1, false);
    }
    uint64_t end = now_ms() + 2200;
    while (now_ms() < end)
        pump(50);
    CHECK_INT_EQ(t.n, 0);
    CHECK_INT_EQ(t.lost, 0);
    wisp_msess_pause(t.s, false);
    WAIT_FOR(t.n == 3, 3000);
    CHECK_INT_EQ(t.n, 3);
    struct wisp_msess_stats st;
    wisp_msess_get_stats(t.s, &st);
    CHECK(st.connected);
    CHECK(st.pings >= 2);
    CHECK_INT_EQ(st.disconnects, 0);
    ts_close(&t);
out:
    wisp_testbroker_cleanup(&b);
}

static void test_pause_v4(void)
{
    pause_resume(4);
}

static void test_pause_v5(void)
{
    pause_resume(5);
}

/* A message larger than max_packet: MQTT 5 brokers do not send it (we
 * announce the limit); MQTT 3.1.1 cannot announce it, so the session drops
 * the connection, logs why and reconnects. */
static void too_large(int version)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    struct ts t;
    char id[32], payload[3000];
    if (!broker_up(&b, NULL))
        return;
    (void)snprintf(id, sizeof(id), "tl-%d", version);
    cfg_init(&c, b.uri, id, version);
    c.max_packet = 1024;
    const struct wisp_msess_sub subs[] = {{"l/#", 1}};
    if (!ts_open(&t, &c, subs, 1))
        goto out;
    WAIT_FOR(t.connected == 1, 5000);
    pump(100);
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    pub(b.port, version, "l/big", payload, 0, false);
    pub(b.port, version, "l/small", "s", 0, false);
    if (version == 4) {
        WAIT_FOR(t.lost == 1 && t.connected == 2, 5000);
        CHECK_CONTAINS(t.why, "exceeds max_packet 1024");
        pub(b.port, version, "l/after", "a", 0, false);
        expect(&t, "l/after", 3000);
    } else {
        expect(&t, "l/small", 3000);
        CHECK_INT_EQ(t.lost, 0);
    }
    CHECK(find(&t, "l/big") == NULL);
    ts_close(&t);
out:
    wisp_testbroker_cleanup(&b);
}

static void test_too_large_v4(void)
{
    too_large(4);
}

static void test_too_large_v5(void)
{
    too_large(5);
}

/* Runs mosquitto_sub (MQTT 5) for one message on topic, printed with fmt;
 * its output line into out. */
static void sub_one(int port, const char *topic, const char *fmt, char *out, size_t cap)
{
    char cmd[512];
    (void)snprintf(cmd, sizeof(cmd),
                   "mosquitto_sub -h 127.0.0.1 -p %d -V mqttv5 -t '%s' -C 1 -W 5 -F '%s'", port,
                   topic, fmt);
    out[0] = '\0';
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p)
        return;
    if (!fgets(out, (int)cap, p))
        out[0] = '\0';
    CHECK_INT_EQ(pclose(p), 0);
    out[strcspn(out, "\n")] = '\0';
}

/* Publishing to mosquitto: -ENOTCONN before CONNACK; QoS 0/1/2 arrive at
 * a second session and complete ok once; 2000 QoS 1 then 200 QoS 2
 * messages arrive in order, fed again from on_published whenever the
 * window is full; v5: the message id arrives as the user property; the
 * broker stops reading and is killed: every publish in flight completes
 * not ok once, in order, and publishing from that hook gets -ENOTCONN. */
static void publish(int version)
{
    struct wisp_testbroker b;
    struct wisp_msess_config c;
    static struct ts rx, tx;
    char id[32];
    /* mosquitto drops what a subscriber has queued beyond 1000 messages:
     * the burst may outrun the receiving session (slower under ASan) */
    const struct wisp_testbroker_opts o = {.extra_conf = "max_queued_messages 10000"};
    if (!broker_up(&b, &o))
        return;
    (void)snprintf(id, sizeof(id), "prx-%d", version);
    cfg_init(&c, b.uri, id, version);
    const struct wisp_msess_sub subs[] = {{"o/#", 2}};
    if (!ts_open(&rx, &c, subs, 1))
        goto out;
    (void)snprintf(id, sizeof(id), "ptx-%d", version);
    cfg_init(&c, b.uri, id, version);
    if (!ts_open(&tx, &c, NULL, 0)) {
        ts_close(&rx);
        goto out;
    }
    CHECK_INT_EQ(wisp_msess_publish(tx.s, "o/q1", "x", 1, 1, false, NULL, 1), -ENOTCONN);
    CHECK_INT_EQ(wisp_msess_publish(tx.s, "o/+", "x", 1, 1, false, NULL, 1), -EINVAL);
    CHECK_INT_EQ(wisp_msess_inflight(tx.s), 0);
    WAIT_FOR(rx.connected == 1 && tx.connected == 1, 5000);
    CHECK_INT_EQ(tx.connected, 1);
    pump(100); /* SUBACK */

    static const char *const topics[] = {"o/q0", "o/q1", "o/q2"};
    for (int q = 0; q < 3; q++)
        CHECK_INT_EQ(
            wisp_msess_publish(tx.s, topics[q], "payload", 7, q, false, "id", (uint64_t)q + 1), 0);
    CHECK_INT_EQ(wisp_msess_inflight(tx.s), 3);
    for (int q = 0; q < 3; q++) {
        struct rmsg *m = expect(&rx, topics[q], 3000);
        check_msg(m, "payload", q, false, false);
        if (m && q > 0)
            CHECK_INT_EQ(wisp_msess_ack(rx.s, m->pid, q), 0);
    }
    WAIT_FOR(tx.ncalls == 3, 3000);
    CHECK_INT_EQ(tx.ncalls, 3);
    CHECK_TOKENS(&tx, 1, 4, true);
    CHECK_INT_EQ(wisp_msess_inflight(tx.s), 0);

    rx.seq_next = 100;
    burst(&rx, &tx, "o/b", 1, 100, 2100, 3);
    tx.feed_qos = 2;
    tx.feed_total = 2300;
    int rc = feed(&tx);
    CHECK(rc == 0 || rc == -ENOBUFS);
    WAIT_FOR(tx.ncalls == 2203 && rx.seq_n == 2200, 10000);
    CHECK_INT_EQ(tx.ncalls, 2203);
    CHECK_TOKENS(&tx, 2100, 2300, true);
    CHECK_INT_EQ(rx.seq_n, 2200);
    CHECK_INT_EQ(rx.seq_bad, 0);
    CHECK_INT_EQ(rx.ack_bad, 0);
    rx.count_only = false;
    tx.feed_total = 0;
    struct wisp_msess_stats st;
    wisp_msess_get_stats(tx.s, &st);
    CHECK_INT_EQ(st.published, 2203);
    CHECK_INT_EQ(st.protocol_errors, 0);
    CHECK_INT_EQ(wisp_msess_inflight(tx.s), 0);

    if (version == 5) {
        /* Retained, so mosquitto_sub gets it with its properties later. */
        CHECK_INT_EQ(wisp_msess_publish(tx.s, "o/prop", "hello", 5, 1, true, "m-42", 2300), 0);
        WAIT_FOR(tx.calls[2300] == 1, 3000);
        CHECK(tx.okv[2300]);
        char line[256];
        sub_one(b.port, "o/prop", "%P|%p|%r", line, sizeof(line));
        CHECK_STR_EQ(line, "wisp-id:m-42|hello|1");
    }

    CHECK_INT_EQ(kill(b.pid, SIGSTOP), 0);
    tx.feed_topic = "o/k";
    tx.feed_qos = 1;
    tx.feed_next = 3000;
    tx.feed_total = 3100;
    tx.repub = true;
    size_t before = tx.ncalls;
    rc = feed(&tx);
    CHECK(rc == 0 || rc == -ENOBUFS);
    uint64_t sent = tx.feed_next;
    CHECK(sent > 3000);
    CHECK_INT_EQ(wisp_msess_inflight(tx.s), sent - 3000);
    pump(50);
    CHECK_INT_EQ(tx.ncalls, before);
    CHECK_INT_EQ(wisp_testbroker_stop(&b, true), 0);
    WAIT_FOR(tx.lost == 1, 5000);
    CHECK_INT_EQ(tx.lost, 1);
    CHECK_TOKENS(&tx, 3000, sent, false);
    CHECK_INT_EQ(tx.ncalls, before + (sent - 3000));
    CHECK_INT_EQ(tx.repub_n, sent - 3000);
    CHECK_INT_EQ(tx.repub_bad, 0);
    CHECK_INT_EQ(tx.bad_token, 0);
    CHECK_INT_EQ(wisp_msess_inflight(tx.s), 0);
    CHECK_INT_EQ(wisp_msess_publish(tx.s, "o/q1", "x", 1, 1, false, NULL, 1), -ENOTCONN);
    ts_close(&tx);
    ts_close(&rx);
out:
    wisp_testbroker_cleanup(&b);
}

static void test_publish_v4(void)
{
    publish(4);
}

static void test_publish_v5(void)
{
    publish(5);
}

/* ---- fake broker ---- */

struct fake {
    int lfd, cfd, port;
    uint8_t rx[8192];
    size_t rxlen;
    int pings; /* PINGREQs skipped by fake_read */
};

static bool fake_start(struct fake *f)
{
    memset(f, 0, sizeof(*f));
    f->cfd = -1;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    bool ok = f->lfd >= 0 && bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
              listen(f->lfd, 8) == 0 && getsockname(f->lfd, (struct sockaddr *)&sa, &len) == 0;
    CHECK(ok);
    f->port = ntohs(sa.sin_port);
    return ok;
}

static void fake_drop(struct fake *f)
{
    if (f->cfd >= 0)
        close(f->cfd);
    f->cfd = -1;
    f->rxlen = 0;
}

static void fake_stop(struct fake *f)
{
    fake_drop(f);
    if (f->lfd >= 0)
        close(f->lfd);
    f->lfd = -1;
}

static bool fake_accept(struct fake *f, int ms)
{
    fake_drop(f);
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end) {
        int fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            /* like a real broker, so that a small packet after another is
             * not held back until the first is acknowledged */
            int one = 1;
            CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0);
            f->cfd = fd;
            return true;
        }
        pump(5);
    }
    CHECK(!"fake broker: no connection");
    return false;
}

/* Reads what arrived; false when the client closed the connection. */
static bool fake_fill(struct fake *f)
{
    for (;;) {
        if (f->rxlen == sizeof(f->rx))
            f->rxlen = 0; /* not expected: keep going */
        ssize_t n = recv(f->cfd, f->rx + f->rxlen, sizeof(f->rx) - f->rxlen, 0);
        if (n > 0) {
            f->rxlen += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return true;
        return false;
    }
}

/* The next whole packet from the client into pkt (PINGREQs are skipped and
 * counted unless want_ping); its length, or 0 after ms or on close. */
static size_t fake_read(struct fake *f, uint8_t *pkt, size_t cap, int ms, bool want_ping)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    for (;;) {
        bool open = f->cfd >= 0 && fake_fill(f);
        uint8_t first;
        uint32_t rem;
        size_t hl;
        while (mqtt_decode_header(f->rx, f->rxlen, &first, &rem, &hl) == 1 &&
               hl + rem <= f->rxlen) {
            size_t n = hl + rem;
            bool ping = first == 0xc0 && rem == 0;
            if (!ping || want_ping) {
                if (n > cap)
                    return 0;
                memcpy(pkt, f->rx, n);
            }
            memmove(f->rx, f->rx + n, f->rxlen - n);
            f->rxlen -= n;
            if (ping && !want_ping) {
                f->pings++;
                continue;
            }
            return n;
        }
        if (!open || now_ms() >= end)
            return 0;
        pump(5);
    }
}

/* Expects exactly these bytes as the next packet. */
static void fake_expect(struct fake *f, const void *want, size_t len, int line)
{
    uint8_t pkt[512];
    size_t n = fake_read(f, pkt, sizeof(pkt), 2000, false);
    if (n != len || memcmp(pkt, want, len) != 0) {
        (void)fprintf(stderr, "test_msess.c:%d: fake broker got %zu bytes:", line, n);
        for (size_t i = 0; i < n; i++)
            (void)fprintf(stderr, " %02x", pkt[i]);
        (void)fprintf(stderr, "\n");
        wisp_check_failures++;
    }
}
#define FAKE_EXPECT(f, s) fake_expect((f), (s), sizeof(s) - 1, __LINE__)

/* Nothing but PINGREQs arrives for ms. */
static bool fake_quiet(struct fake *f, int ms)
{
    uint8_t pkt[64];
    return fake_read(f, pkt, sizeof(pkt), ms, false) == 0;
}

/* Waits until the client closes the connection (data before it is kept). */
static bool fake_closed(struct fake *f, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end) {
        if (!fake_fill(f))
            return true;
        pump(5);
    }
    return false;
}

static void fake_send(struct fake *f, const void *p, size_t n)
{
    CHECK(send(f->cfd, p, n, MSG_NOSIGNAL) == (ssize_t)n);
}
#define FAKE_SEND(f, s) fake_send((f), (s), sizeof(s) - 1)

static bool has_bytes(const uint8_t *hay, size_t n, const void *needle, size_t len)
{
    for (size_t i = 0; i + len <= n; i++)
        if (memcmp(hay + i, needle, len) == 0)
            return true;
    return false;
}

static uint64_t protocol_errors(const struct ts *t)
{
    struct wisp_msess_stats st;
    wisp_msess_get_stats(t->s, &st);
    return st.protocol_errors;
}

/* CONNECT, SUBSCRIBE, acks only at wisp_msess_ack, PUBREL/PUBCOMP,
 * UNSUBSCRIBE/SUBSCRIBE on a change, a refused filter, DISCONNECT. */
static void fake_acks(int version)
{
    struct fake f;
    struct wisp_msess_config c;
    struct ts t;
    char uri[64];
    bool v5 = version == 5;
    if (!fake_start(&f))
        return;
    (void)snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", f.port);
    cfg_init(&c, uri, v5 ? "fa-5" : "fa-4", version);
    c.keepalive_s = 30;
    c.username = "u";
    c.password = "p";
    c.session_expiry_s = 3600;
    c.receive_max = 10;
    const struct wisp_msess_sub subs[] = {{"a/#", 1}, {"b/#", 2}};
    if (!ts_open(&t, &c, subs, 2)) {
        fake_stop(&f);
        return;
    }
    CHECK(fake_accept(&f, 2000));
    if (v5) {
        FAKE_EXPECT(&f, "\x10\x24\x00\x04MQTT\x05\xc0\x00\x1e"
                        "\x0d\x11\x00\x00\x0e\x10\x21\x00\x0a\x27\x00\x11\x00\x00"
                        "\x00\x04"
                        "fa-5\x00\x01u\x00\x01p");
        FAKE_SEND(&f, "\x20\x03\x00\x00\x00");
        FAKE_EXPECT(&f, "\x82\x0f\x00\x01\x00\x00\x03"
                        "a/#\x01\x00\x03"
                        "b/#\x02");
        FAKE_SEND(&f, "\x90\x05\x00\x01\x00\x01\x02");
    } else {
        FAKE_EXPECT(&f, "\x10\x16\x00\x04MQTT\x04\xc0\x00\x1e\x00\x04"
                        "fa-4\x00\x01u\x00\x01p");
        FAKE_SEND(&f, "\x20\x02\x00\x00");
        FAKE_EXPECT(&f, "\x82\x0e\x00\x01\x00\x03"
                        "a/#\x01\x00\x03"
                        "b/#\x02");
        FAKE_SEND(&f, "\x90\x04\x00\x01\x01\x02");
    }
    WAIT_FOR(t.connected == 1, 2000);
    CHECK_INT_EQ(t.connected, 1);

    /* QoS 1, retained: delivered, PUBACK only at the ack. */
    if (v5)
        FAKE_SEND(&f, "\x33\x0d\x00\x03"
                      "a/b\x00\x05\x00hello");
    else
        FAKE_SEND(&f, "\x33\x0c\x00\x03"
                      "a/b\x00\x05hello");
    struct rmsg *m = expect(&t, "a/b", 2000);
    check_msg(m, "hello", 1, false, true);
    if (m)
        CHECK_INT_EQ(m->pid, 5);
    CHECK(fake_quiet(&f, 150));
    CHECK_INT_EQ(wisp_msess_ack(t.s, 5, 1), 0);
    FAKE_EXPECT(&f, "\x40\x02\x00\x05");

    /* QoS 2 with DUP: PUBREC at the ack, PUBCOMP on PUBREL. */
    if (v5)
        FAKE_SEND(&f, "\x3c\x09\x00\x03"
                      "b/c\x00\x07\x00z");
    else
        FAKE_SEND(&f, "\x3c\x08\x00\x03"
                      "b/c\x00\x07z");
    m = expect(&t, "b/c", 2000);
    check_msg(m, "z", 2, true, false);
    CHECK(fake_quiet(&f, 150));
    CHECK_INT_EQ(wisp_msess_ack(t.s, 7, 1), -EINVAL);
    CHECK_INT_EQ(wisp_msess_ack(t.s, 7, 2), 0);
    CHECK_INT_EQ(wisp_msess_ack(t.s, 7, 2), -ENOTCONN);
    FAKE_EXPECT(&f, "\x50\x02\x00\x07");
    /* The same PUBLISH again before PUBREL: not delivered, PUBREC again. */
    if (v5)
        FAKE_SEND(&f, "\x3c\x09\x00\x03"
                      "b/c\x00\x07\x00z");
    else
        FAKE_SEND(&f, "\x3c\x08\x00\x03"
                      "b/c\x00\x07z");
    FAKE_EXPECT(&f, "\x50\x02\x00\x07");
    FAKE_SEND(&f, "\x62\x02\x00\x07");
    FAKE_EXPECT(&f, "\x70\x02\x00\x07");
    /* PUBREL for a message PUBRECed on an earlier connection. */
    if (v5)
        FAKE_SEND(&f, "\x62\x04\x00\x09\x00\x00");
    else
        FAKE_SEND(&f, "\x62\x02\x00\x09");
    FAKE_EXPECT(&f, "\x70\x02\x00\x09");
    CHECK_INT_EQ(t.n, 2);

    /* Change the set: b/# goes, c/# comes (and is refused). */
    const struct wisp_msess_sub subs2[] = {{"a/#", 1}, {"c/#", 0}};
    capture_start();
    CHECK_INT_EQ(wisp_msess_set_subscriptions(t.s, subs2, 2), 0);
    if (v5) {
        FAKE_EXPECT(&f, "\xa2\x08\x00\x02\x00\x00\x03"
                        "b/#");
        FAKE_EXPECT(&f, "\x82\x09\x00\x03\x00\x00\x03"
                        "c/#\x00");
        FAKE_SEND(&f, "\xb0\x04\x00\x02\x00\x00");
        FAKE_SEND(&f, "\x90\x0c\x00\x03\x08\x1f\x00\x05nope!\x87");
    } else {
        FAKE_EXPECT(&f, "\xa2\x07\x00\x02\x00\x03"
                        "b/#");
        FAKE_EXPECT(&f, "\x82\x08\x00\x03\x00\x03"
                        "c/#\x00");
        FAKE_SEND(&f, "\xb0\x02\x00\x02");
        FAKE_SEND(&f, "\x90\x03\x00\x03\x80");
    }
    pump(100);
    pump(100);
    char *log = capture_end();
    CHECK_CONTAINS(log, v5 ? "broker refused to subscribe to 'c/#': Not authorized (0x87): nope!"
                           : "broker refused to subscribe to 'c/#' (SUBACK return code 0x80)");
    free(log);
    struct wisp_msess_stats st;
    wisp_msess_get_stats(t.s, &st);
    CHECK(st.connected);
    CHECK_INT_EQ(st.protocol_errors, 0);
    CHECK_INT_EQ(st.acked, 2);

    /* Paused from on_message: the packets already read wait in the buffer
     * and come on resume. */
    size_t before = t.n;
    t.pause_at = before + 1;
    if (v5)
        FAKE_SEND(&f, "\x30\x05\x00\x01"
                      "a\x00"
                      "1\x30\x05\x00\x01"
                      "a\x00"
                      "2\x30\x05\x00\x01"
                      "a\x00"
                      "3");
    else
        FAKE_SEND(&f, "\x30\x04\x00\x01"
                      "a1\x30\x04\x00\x01"
                      "a2\x30\x04\x00\x01"
                      "a3");
    pump(100);
    pump(100);
    CHECK_INT_EQ(t.n, before + 1);
    // cppcheck-suppress redundantAssignment ; read by the message hook
    t.pause_at = 0;
    wisp_msess_pause(t.s, false);
    WAIT_FOR(t.n == before + 3, 1000);
    CHECK_INT_EQ(t.n, before + 3);
    if (t.n == before + 3)
        CHECK(strcmp(t.msgs[before].payload, "1") == 0 &&
              strcmp(t.msgs[before + 2].payload, "3") == 0);

    /* destroy: DISCONNECT (v5: reason 0, no properties). */
    for (int i = 0; i < MAX_SESS; i++)
        if (active[i] == &t)
            active[i] = NULL;
    wisp_msess_destroy(t.s);
    ts_clear(&t);
    if (v5)
        FAKE_EXPECT(&f, "\xe0\x01\x00");
    else
        FAKE_EXPECT(&f, "\xe0\x00");
    CHECK(fake_closed(&f, 1000));
    fake_stop(&f);
}

static void test_fake_acks_v4(void)
{
    fake_acks(4);
}

static void test_fake_acks_v5(void)
{
    fake_acks(5);
}

/* Keepalive (v5: the broker's Server Keep Alive wins): PINGREQ after the
 * interval; no answer, the connection goes; a message from the lost
 * connection cannot be acked on the next one. */
static void fake_keepalive(int version)
{
    struct fake f;
    struct wisp_msess_config c;
    struct ts t;
    char uri[64];
    uint8_t pkt[256];
    bool v5 = version == 5;
    if (!fake_start(&f))
        return;
    (void)snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", f.port);
    cfg_init(&c, uri, "ka", version);
    c.keepalive_s = v5 ? 60 : 1;
    const struct wisp_msess_sub subs[] = {{"k/#", 1}};
    if (!ts_open(&t, &c, subs, 1)) {
        fake_stop(&f);
        return;
    }
    CHECK(fake_accept(&f, 2000));
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0);
    if (v5)
        FAKE_SEND(&f, "\x20\x06\x00\x00\x03\x13\x00\x01"); /* Server Keep Alive 1 */
    else
        FAKE_SEND(&f, "\x20\x02\x00\x00");
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x82);
    uint64_t t0 = now_ms();
    if (v5)
        FAKE_SEND(&f, "\x32\x08\x00\x03k/a\x00\x0b\x00");
    else
        FAKE_SEND(&f, "\x32\x07\x00\x03k/a\x00\x0b");
    expect(&t, "k/a", 2000);
    /* The first PINGREQ: answered. */
    size_t n = fake_read(&f, pkt, sizeof(pkt), 2000, true);
    CHECK(n == 2 && pkt[0] == 0xc0);
    CHECK(now_ms() - t0 >= 900);
    FAKE_SEND(&f, "\xd0\x00");
    /* The second: not answered; the session gives up 1.5 s after the
     * last packet it received. */
    n = fake_read(&f, pkt, sizeof(pkt), 2000, true);
    CHECK(n == 2 && pkt[0] == 0xc0);
    uint64_t t1 = now_ms();
    CHECK(fake_closed(&f, 2000));
    CHECK(now_ms() - t1 >= 300);
    WAIT_FOR(t.lost == 1, 1000);
    CHECK_CONTAINS(t.why, "keepalive");
    CHECK_INT_EQ(wisp_msess_ack(t.s, 11, 1), -ENOTCONN);
    /* It reconnects; the old pid 11 is not acked on the new connection. */
    CHECK(fake_accept(&f, 2000));
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x10);
    if (v5)
        FAKE_SEND(&f, "\x20\x03\x01\x00\x00");
    else
        FAKE_SEND(&f, "\x20\x02\x01\x00");
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x82);
    WAIT_FOR(t.connected == 2, 2000);
    CHECK(t.session_present);
    CHECK_INT_EQ(wisp_msess_ack(t.s, 11, 1), -ENOTCONN);
    CHECK(fake_quiet(&f, 100));
    struct wisp_msess_stats st;
    wisp_msess_get_stats(t.s, &st);
    CHECK(st.pings >= 2);
    CHECK_INT_EQ(st.connects, 2);
    ts_close(&t);
    fake_stop(&f);
}

static void test_fake_keepalive_v4(void)
{
    fake_keepalive(4);
}

static void test_fake_keepalive_v5(void)
{
    fake_keepalive(5);
}

/* MQTT 5: the broker's Maximum Packet Size bounds our SUBSCRIBE packets;
 * a filter that cannot fit is logged and skipped. */
static void test_fake_server_limits(void)
{
    struct fake f;
    struct wisp_msess_config c;
    struct ts t;
    char uri[64];
    uint8_t pkt[256];
    if (!fake_start(&f))
        return;
    (void)snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", f.port);
    cfg_init(&c, uri, "lim", 5);
    const struct wisp_msess_sub subs[] = {
        {"a/#", 1}, {"b/#", 1}, {"long/filter/that/is/too/big", 1}, {"c", 0}};
    capture_start();
    if (!ts_open(&t, &c, subs, 4)) {
        (void)capture_end();
        fake_stop(&f);
        return;
    }
    CHECK(fake_accept(&f, 2000));
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0);
    FAKE_SEND(&f, "\x20\x08\x00\x00\x05\x27\x00\x00\x00\x18"); /* 24 bytes */
    FAKE_EXPECT(&f, "\x82\x0f\x00\x01\x00\x00\x03"
                    "a/#\x01\x00\x03"
                    "b/#\x01");
    FAKE_EXPECT(&f, "\x82\x07\x00\x02\x00\x00\x01"
                    "c\x00");
    WAIT_FOR(t.connected == 1, 1000);
    char *log = capture_end();
    CHECK_CONTAINS(log, "cannot subscribe to 'long/filter/that/is/too/big': the packet exceeds "
                        "the broker's Maximum Packet Size 24");
    free(log);
    ts_close(&t);
    fake_stop(&f);
}

/* The packet identifier of the PUBLISH in pkt (QoS 1/2). */
static uint16_t publish_pid(const uint8_t *pkt, size_t n)
{
    if (n < 6)
        return 0;
    size_t tlen = ((size_t)pkt[2] << 8) | pkt[3];
    if (n < 6 + tlen)
        return 0;
    return (uint16_t)((pkt[4 + tlen] << 8) | pkt[5 + tlen]);
}

/* Sends PUBACK, PUBREC or PUBCOMP (type) for pid, v5 with reason code. */
static void fake_ack(struct fake *f, int type, uint16_t pid, int version, uint8_t code)
{
    uint8_t p[5] = {(uint8_t)(type << 4), 2, (uint8_t)(pid >> 8), (uint8_t)pid, code};
    if (version == 5 && code) {
        p[1] = 3;
        fake_send(f, p, 5);
    } else {
        fake_send(f, p, 4);
    }
}

/* Publishing against the fake broker: -ENOTCONN until CONNACK, -EINVAL
 * for bad arguments, the exact PUBLISH bytes (v5: the message id as user
 * property), on_published at PUBACK / PUBCOMP / once written (QoS 0), acks
 * for identifiers not in flight ignored, PUBREL again for a repeated
 * PUBREC; v5: Receive Maximum 2 and Maximum Packet Size from CONNACK,
 * refusals (PUBACK 0x87, PUBREC 0x97) completing not ok; the connection
 * lost with publishes in flight; PUBREL on the resumed session for a QoS 2
 * identifier the broker may hold, which new messages do not take; a PUBREC
 * for a QoS 1 message is a protocol error; destroy completes not ok. */
static void fake_publish(int version)
{
    struct fake f;
    struct wisp_msess_config c;
    static struct ts t;
    char uri[64], big[200];
    uint8_t pkt[512];
    size_t n;
    bool v5 = version == 5;
    if (!fake_start(&f))
        return;
    (void)snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", f.port);
    cfg_init(&c, uri, "fp", version);
    c.reconnect_min_ms = 10;
    c.reconnect_max_ms = 40;
    if (!ts_open(&t, &c, NULL, 0)) {
        fake_stop(&f);
        return;
    }
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", "hi", 2, 1, false, "m1", 1), -ENOTCONN);
    CHECK(fake_accept(&f, 2000));
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x10);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", "hi", 2, 1, false, "m1", 1), -ENOTCONN);
    if (v5) /* Receive Maximum 2, Maximum Packet Size 128 */
        FAKE_SEND(&f, "\x20\x0b\x00\x00\x08\x21\x00\x02\x27\x00\x00\x00\x80");
    else
        FAKE_SEND(&f, "\x20\x02\x00\x00");
    WAIT_FOR(t.connected == 1, 2000);
    CHECK_INT_EQ(t.connected, 1);

    /* Bad arguments. */
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/#", "x", 1, 0, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/+/x", "x", 1, 0, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "", "x", 1, 0, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/\xc3\x28", "x", 1, 0, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, NULL, "x", 1, 0, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", NULL, 1, 0, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", "x", 1, 3, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", "x", 1, -1, false, NULL, 9), -EINVAL);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", "x", 1, 0, false, "\xff", 9), v5 ? -EINVAL : 0);
    if (!v5) /* the message id is not sent at all */
        FAKE_EXPECT(&f, "\x30\x06\x00\x03t/ax");
    /* "t/a" at QoS 1 with 119 bytes is a packet of 129 bytes, 118: 128
     * (MQTT 3.1.1: 128 and 127) */
    memset(big, 'b', sizeof(big));
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", big, 119, 1, false, NULL, 9), v5 ? -EINVAL : 0);
    if (v5)
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", big, 118, 1, false, NULL, 9), 0);
    n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
    CHECK(n == 128 && pkt[0] == 0x32);
    fake_ack(&f, MQTT_PUBACK, publish_pid(pkt, n), version, 0);
    WAIT_FOR(t.ncalls == (v5 ? 1u : 2u), 1000);
    CHECK(t.calls[9] == (v5 ? 1 : 2) && t.okv[9]);
    pubs_clear(&t);
    CHECK_INT_EQ(wisp_msess_inflight(t.s), 0);

    /* QoS 1: the exact bytes; on_published at PUBACK only. */
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/a", "hi", 2, 1, false, "m1", 1), 0);
    CHECK_INT_EQ(wisp_msess_inflight(t.s), 1);
    n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
    uint16_t pid = publish_pid(pkt, n);
    static const char w5[] = "\x32\x18\x00\x03t/a\x00\x01\x0e\x26\x00\x07wisp-id\x00\x02m1hi";
    static const char w4[] = "\x32\x09\x00\x03t/a\x00\x01hi";
    uint8_t want[64];
    size_t wlen = v5 ? sizeof(w5) - 1 : sizeof(w4) - 1;
    memcpy(want, v5 ? w5 : w4, wlen);
    want[7] = (uint8_t)(pid >> 8);
    want[8] = (uint8_t)pid;
    CHECK(pid != 0 && n == wlen && memcmp(pkt, want, wlen) == 0);
    CHECK(fake_quiet(&f, 50));
    CHECK_INT_EQ(t.ncalls, 0);
    fake_ack(&f, MQTT_PUBACK, (uint16_t)(pid + 100), version, 0); /* not in flight */
    fake_ack(&f, MQTT_PUBREC, (uint16_t)(pid + 101), version, 0);
    fake_ack(&f, MQTT_PUBCOMP, (uint16_t)(pid + 102), version, 0);
    CHECK(fake_quiet(&f, 50));
    CHECK_INT_EQ(t.ncalls, 0);
    fake_ack(&f, MQTT_PUBACK, pid, version, 0);
    WAIT_FOR(t.ncalls == 1, 1000);
    CHECK_TOKENS(&t, 1, 2, true);
    fake_ack(&f, MQTT_PUBACK, pid, version, 0); /* twice */
    CHECK(fake_quiet(&f, 50));
    CHECK_INT_EQ(t.ncalls, 1);

    /* QoS 0, retained: complete once written. */
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/b", "x", 1, 0, true, "m2", 2), 0);
    if (v5)
        FAKE_EXPECT(&f, "\x31\x15\x00\x03t/b\x0e\x26\x00\x07wisp-id\x00\x02m2x");
    else
        FAKE_EXPECT(&f, "\x31\x06\x00\x03t/bx");
    WAIT_FOR(t.ncalls == 2, 1000);
    CHECK_TOKENS(&t, 2, 3, true);

    /* QoS 2, empty: PUBREC -> PUBREL (again for a repeated PUBREC) -> PUBCOMP. */
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/c", NULL, 0, 2, false, NULL, 3), 0);
    n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
    pid = publish_pid(pkt, n);
    CHECK(pkt[0] == 0x34 && n == (v5 ? 10u : 9u));
    uint8_t rel[4] = {0x62, 0x02, (uint8_t)(pid >> 8), (uint8_t)pid};
    fake_ack(&f, MQTT_PUBREC, pid, version, 0);
    fake_expect(&f, rel, 4, __LINE__);
    fake_ack(&f, MQTT_PUBREC, pid, version, 0);
    fake_expect(&f, rel, 4, __LINE__);
    CHECK_INT_EQ(t.ncalls, 2);
    fake_ack(&f, MQTT_PUBCOMP, pid, version, 0);
    WAIT_FOR(t.ncalls == 3, 1000);
    CHECK_TOKENS(&t, 3, 4, true);

    if (v5) {
        /* Receive Maximum 2: a third QoS 1/2 publish waits, QoS 0 does not. */
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/d", "d", 1, 1, false, NULL, 4), 0);
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/e", "e", 1, 2, false, NULL, 5), 0);
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/f", "f", 1, 1, false, NULL, 6), -ENOBUFS);
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/g", "g", 1, 0, false, NULL, 7), 0);
        n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
        uint16_t p4 = publish_pid(pkt, n);
        n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
        uint16_t p5 = publish_pid(pkt, n);
        CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x30);
        WAIT_FOR(t.calls[7] == 1, 1000);
        CHECK(t.okv[7]);
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/f", "f", 1, 1, false, NULL, 6), -ENOBUFS);
        /* Refused with a reason string: logged, not ok; the window opens. */
        uint8_t refuse[] = {0x40,        0x0c, (uint8_t)(p4 >> 8),
                            (uint8_t)p4, 0x87, 0x08,
                            0x1f,        0x00, 0x05,
                            'n',         'o',  'p',
                            'e',         '!'};
        capture_start();
        fake_send(&f, refuse, sizeof(refuse));
        WAIT_FOR(t.calls[4] == 1, 1000);
        char *log = capture_end();
        CHECK_CONTAINS(log, "Not authorized (0x87): nope!");
        free(log);
        CHECK(t.calls[4] == 1 && !t.okv[4]);
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/f", "f", 1, 1, false, NULL, 6), 0);
        n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
        uint16_t p6 = publish_pid(pkt, n);
        CHECK(p6 != 0 && p6 != p5);
        /* PUBREC 0x97 ends the QoS 2 exchange: not ok, no PUBREL. */
        fake_ack(&f, MQTT_PUBREC, p5, version, 0x97);
        WAIT_FOR(t.calls[5] == 1, 1000);
        CHECK(t.calls[5] == 1 && !t.okv[5]);
        CHECK(fake_quiet(&f, 50));
        /* 0x10 (no matching subscribers) is a success. */
        fake_ack(&f, MQTT_PUBACK, p6, version, 0x10);
        WAIT_FOR(t.calls[6] == 1, 1000);
        CHECK(t.calls[6] == 1 && t.okv[6]);
        CHECK_INT_EQ(t.ncalls, 7);
        CHECK_INT_EQ(t.nok, 5);
    } else {
        /* MQTT 3.1.1: at most 20 QoS 2 messages in flight (mosquitto drops
         * more without telling); QoS 1 is not limited by that. */
        uint16_t pids[22];
        for (uint64_t k = 100; k < 120; k++)
            CHECK_INT_EQ(wisp_msess_publish(t.s, "t/q", "q", 1, 2, false, NULL, k), 0);
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/q", "q", 1, 2, false, NULL, 120), -ENOBUFS);
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/q", "q", 1, 1, false, NULL, 121), 0);
        for (int i = 0; i < 21; i++) {
            n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
            pids[i] = publish_pid(pkt, n);
        }
        fake_ack(&f, MQTT_PUBACK, pids[20], version, 0);
        WAIT_FOR(t.calls[121] == 1, 1000);
        for (int i = 0; i < 20; i++) {
            fake_ack(&f, MQTT_PUBREC, pids[i], version, 0);
            n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
            CHECK(n == 4 && pkt[0] == 0x62 && ((pkt[2] << 8) | pkt[3]) == pids[i]);
            fake_ack(&f, MQTT_PUBCOMP, pids[i], version, 0);
            if (i == 0) {
                WAIT_FOR(t.calls[100] == 1, 1000);
                CHECK_INT_EQ(wisp_msess_publish(t.s, "t/q", "q", 1, 2, false, NULL, 120), 0);
                n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
                pids[21] = publish_pid(pkt, n);
            }
        }
        fake_ack(&f, MQTT_PUBREC, pids[21], version, 0);
        CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) == 4 && pkt[0] == 0x62);
        fake_ack(&f, MQTT_PUBCOMP, pids[21], version, 0);
        WAIT_FOR(t.ncalls == 25, 1000);
        CHECK_TOKENS(&t, 100, 121, true);
        CHECK(t.calls[121] == 1 && t.okv[121]);
        CHECK_INT_EQ(t.ncalls, 25);
    }
    CHECK_INT_EQ(wisp_msess_inflight(t.s), 0);
    CHECK_INT_EQ(protocol_errors(&t), 0);
    CHECK_INT_EQ(t.lost, 0);

    /* Lost with a QoS 1 message and a QoS 2 message past PUBREC in flight:
     * both fail, in order; publishing from on_published gets -ENOTCONN. */
    size_t calls = t.ncalls;
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/l1", "1", 1, 1, false, NULL, 20), 0);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/l2", "2", 1, 2, false, NULL, 21), 0);
    n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
    CHECK(n > 0 && pkt[0] == 0x32);
    n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
    CHECK(n > 0 && pkt[0] == 0x34);
    uint16_t held = publish_pid(pkt, n);
    fake_ack(&f, MQTT_PUBREC, held, version, 0);
    rel[2] = (uint8_t)(held >> 8);
    rel[3] = (uint8_t)held;
    fake_expect(&f, rel, 4, __LINE__);
    t.repub = true;
    fake_drop(&f);
    WAIT_FOR(t.lost == 1, 2000);
    CHECK_INT_EQ(t.lost, 1);
    CHECK_INT_EQ(t.ncalls, calls + 2);
    CHECK_TOKENS(&t, 20, 22, false);
    CHECK_INT_EQ(t.repub_n, 2);
    CHECK_INT_EQ(t.repub_bad, 0);
    CHECK_INT_EQ(wisp_msess_inflight(t.s), 0);

    /* The session resumes: PUBREL for the identifier the broker may hold
     * first; new messages never take it until PUBCOMP. */
    CHECK(fake_accept(&f, 2000));
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x10);
    if (v5)
        FAKE_SEND(&f, "\x20\x03\x01\x00\x00");
    else
        FAKE_SEND(&f, "\x20\x02\x01\x00");
    fake_expect(&f, rel, 4, __LINE__);
    WAIT_FOR(t.connected == 2, 2000);
    CHECK_INT_EQ(t.connected, 2);
    calls = t.ncalls;
    for (uint64_t k = 30; k < 70; k++) {
        CHECK_INT_EQ(wisp_msess_publish(t.s, "t/n", "n", 1, 1, false, NULL, k), 0);
        n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
        pid = publish_pid(pkt, n);
        CHECK(pid != 0 && pid != held);
        fake_ack(&f, MQTT_PUBACK, pid, version, 0);
        WAIT_FOR(t.calls[k] == 1, 1000);
    }
    CHECK_TOKENS(&t, 30, 70, true);
    fake_ack(&f, MQTT_PUBCOMP, held, version, 0);
    CHECK(fake_quiet(&f, 50));
    CHECK_INT_EQ(t.ncalls, calls + 40);

    /* PUBREC for a QoS 1 message: a protocol error, the message fails. */
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/p", "p", 1, 1, false, NULL, 80), 0);
    n = fake_read(&f, pkt, sizeof(pkt), 2000, false);
    fake_ack(&f, MQTT_PUBREC, publish_pid(pkt, n), version, 0);
    CHECK(fake_closed(&f, 1000));
    if (v5)
        CHECK(has_bytes(f.rx, f.rxlen, "\xe0\x01\x82", 3));
    WAIT_FOR(t.lost == 2, 1000);
    CHECK(t.calls[80] == 1 && !t.okv[80]);
    CHECK_INT_EQ(protocol_errors(&t), 1);

    /* destroy: what is in flight fails (a QoS 2 message, no session kept:
     * nothing to release on the next connection). */
    CHECK(fake_accept(&f, 2000));
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x10);
    if (v5)
        FAKE_SEND(&f, "\x20\x03\x00\x00\x00");
    else
        FAKE_SEND(&f, "\x20\x02\x00\x00");
    WAIT_FOR(t.connected == 3, 2000);
    CHECK_INT_EQ(wisp_msess_publish(t.s, "t/z", "z", 1, 2, false, NULL, 90), 0);
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x34);
    for (int i = 0; i < MAX_SESS; i++)
        if (active[i] == &t)
            active[i] = NULL;
    size_t repub = t.repub_n;
    wisp_msess_destroy(t.s);
    CHECK(t.calls[90] == 1 && !t.okv[90]);
    CHECK_INT_EQ(t.repub_n, repub + 1);
    CHECK_INT_EQ(t.repub_bad, 0);
    CHECK_INT_EQ(t.bad_token, 0);
    ts_clear(&t);
    if (v5)
        FAKE_EXPECT(&f, "\xe0\x01\x00");
    else
        FAKE_EXPECT(&f, "\xe0\x00");
    fake_stop(&f);
}

static void test_fake_publish_v4(void)
{
    fake_publish(4);
}

static void test_fake_publish_v5(void)
{
    fake_publish(5);
}

/* A refused CONNACK is logged in words and retried after a doubling
 * backoff, never in a tight loop. */
static void fake_refused(int version)
{
    struct fake f;
    struct wisp_msess_config c;
    struct ts t;
    char uri[64];
    uint8_t pkt[256];
    uint64_t at[4];
    if (!fake_start(&f))
        return;
    (void)snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", f.port);
    cfg_init(&c, uri, "rf", version);
    c.reconnect_min_ms = 100;
    c.reconnect_max_ms = 1000;
    capture_start();
    if (!ts_open(&t, &c, NULL, 0)) {
        (void)capture_end();
        fake_stop(&f);
        return;
    }
    for (int i = 0; i < 4; i++) {
        CHECK(fake_accept(&f, 3000));
        at[i] = now_ms();
        CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0);
        if (version == 5)
            FAKE_SEND(&f, "\x20\x03\x00\x86\x00"); /* bad user name or password */
        else
            FAKE_SEND(&f, "\x20\x02\x00\x05");
        CHECK(fake_closed(&f, 2000));
    }
    char *log = capture_end();
    CHECK_CONTAINS(log, version == 5
                            ? "broker refused the connection: Bad User Name or Password (0x86)"
                            : "broker refused the connection: not authorized (5)");
    free(log);
    CHECK(at[1] - at[0] >= 90);
    CHECK(at[2] - at[1] >= 190);
    CHECK(at[3] - at[2] >= 390);
    struct wisp_msess_stats st;
    wisp_msess_get_stats(t.s, &st);
    CHECK_INT_EQ(st.connects, 0);
    CHECK_INT_EQ(t.lost, 0);
    ts_close(&t);
    fake_stop(&f);
}

static void test_fake_refused_v4(void)
{
    fake_refused(4);
}

static void test_fake_refused_v5(void)
{
    fake_refused(5);
}

struct hostile {
    const char *name;
    const char *bytes;
    size_t len;
    bool connack;    /* send a valid CONNACK first */
    uint8_t only;    /* 0: both versions, else 4 or 5 */
    bool error;      /* the session must close by itself */
    uint8_t v5_disc; /* DISCONNECT reason it must send first (v5), 0: none */
};

#define B(s) s, sizeof(s) - 1

static const struct hostile hostile_cases[] = {
    {"garbage instead of CONNACK", B("\xff\xff\xff\xff\xff\xff\xff\xff"), false, 0, true, 0},
    {"text instead of CONNACK then close", B("GARBAGE!"), false, 0, false, 0},
    {"PUBLISH before CONNACK",
     B("\x30\x04\x00\x01"
       "ax"),
     false, 0, true, 0},
    {"CONNACK remaining length of 5 bytes", B("\x20\xff\xff\xff\xff\x01"), false, 0, true, 0},
    {"CONNACK with trailing byte", B("\x20\x03\x00\x00\x00\x00"), false, 4, true, 0},
    {"CONNACK reserved flags", B("\x20\x02\x02\x00"), false, 4, true, 0},
    {"CONNACK refused with session", B("\x20\x02\x01\x05"), false, 0, true, 0},
    {"CONNACK truncated property", B("\x20\x06\x00\x00\x03\x1f\x00\x09"), false, 5, true, 0},
    {"CONNACK unknown property", B("\x20\x05\x00\x00\x02\x7e\x00"), false, 5, true, 0},
    {"CONNACK property twice", B("\x20\x09\x00\x00\x06\x13\x00\x01\x13\x00\x01"), false, 5, true,
     0},
    {"CONNACK Receive Maximum 0", B("\x20\x06\x00\x00\x03\x21\x00\x00"), false, 5, true, 0},
    {"second CONNACK", B("\x20\x02\x00\x00"), true, 0, true, 0x82},
    {"oversized remaining length", B("\x30\xff\xff\xff\x7f"), true, 0, true, 0x95},
    {"truncated PUBLISH then close",
     B("\x30\x10\x00\x03"
       "a/b"),
     true, 0, false, 0},
    {"topic runs past the packet",
     B("\x30\x04\x00\x10"
       "ab"),
     true, 0, true, 0x81},
    {"topic not UTF-8",
     B("\x30\x06\x00\x03\xc3\x28"
       "a\x00"),
     true, 0, true, 0x81},
    {"topic with NUL",
     B("\x30\x06\x00\x03"
       "a\x00"
       "b\x00"),
     true, 0, true, 0x81},
    {"wildcard topic",
     B("\x30\x06\x00\x03"
       "a/#\x00"),
     true, 0, true, 0x90},
    {"PUBLISH QoS 3",
     B("\x36\x06\x00\x01"
       "a\x00\x01\x00"),
     true, 0, true, 0x81},
    {"PUBLISH QoS 0 with DUP",
     B("\x38\x04\x00\x01"
       "ax"),
     true, 0, true, 0x81},
    {"PUBLISH packet id 0",
     B("\x32\x06\x00\x01"
       "a\x00\x00\x00"),
     true, 0, true, 0x81},
    {"PUBLISH empty topic", B("\x30\x03\x00\x00\x00"), true, 0, true, 0x82},
    {"PUBLISH property length past end",
     B("\x30\x06\x00\x01"
       "a\x7f\x00\x00"),
     true, 5, true, 0x81},
    {"PUBLISH Topic Alias",
     B("\x30\x07\x00\x01"
       "a\x03\x23\x00\x01"),
     true, 5, true, 0x94},
    {"PUBLISH Topic Alias with empty topic", B("\x30\x06\x00\x00\x03\x23\x00\x02"), true, 5, true,
     0x94},
    {"PUBLISH unknown property",
     B("\x30\x06\x00\x01"
       "a\x02\x7e\x00"),
     true, 5, true, 0x81},
    {"PUBLISH bad varint property",
     B("\x30\x09\x00\x01"
       "a\x05\x0b\xff\xff\xff\xff"),
     true, 5, true, 0x81},
    {"Receive Maximum exceeded",
     B("\x32\x06\x00\x01"
       "a\x00\x01\x00"
       "\x32\x06\x00\x01"
       "a\x00\x02\x00"
       "\x32\x06\x00\x01"
       "a\x00\x03\x00"),
     true, 5, true, 0x93},
    {"SUBACK for an unknown pid", B("\x90\x03\x12\x34\x00"), true, 4, true, 0},
    {"SUBACK with too many codes", B("\x90\x04\x00\x01\x01\x01"), true, 4, true, 0},
    {"SUBACK with bad code", B("\x90\x03\x00\x01\x07"), true, 4, true, 0},
    {"PUBREL with bad flags", B("\x60\x02\x00\x01"), true, 0, true, 0x81},
    {"PUBREL before PUBREC",
     B("\x32\x05\x00\x01"
       "a\x00\x05"
       "\x62\x02\x00\x05"),
     true, 4, true, 0},
    {"PINGRESP with a body", B("\xd0\x01\x00"), true, 0, true, 0x81},
    {"PUBACK for an unknown pid", B("\x40\x02\x00\x01"), true, 0, false, 0},
    {"PUBREC and PUBCOMP for unknown pids", B("\x50\x02\x00\x02\x70\x02\x00\x03"), true, 0, false,
     0},
    {"PUBACK with bad flags", B("\x42\x02\x00\x01"), true, 0, true, 0x81},
    {"PUBACK truncated", B("\x40\x01\x00"), true, 0, true, 0x81},
    {"PUBREC packet id 0", B("\x50\x02\x00\x00"), true, 0, true, 0x81},
    {"PUBCOMP with trailing byte", B("\x70\x03\x00\x01\x00"), true, 4, true, 0},
    {"PUBACK unknown property", B("\x40\x06\x00\x01\x00\x02\x7e\x00"), true, 5, true, 0x81},
    {"CONNACK Retain Available 2", B("\x20\x05\x00\x00\x02\x25\x02"), false, 5, true, 0},
    {"CONNECT from the broker", B("\x10\x00"), true, 0, true, 0x82},
    {"reserved type 0", B("\x00\x00"), true, 0, true, 0x82},
    {"AUTH", B("\xf0\x00"), true, 5, true, 0x82},
    {"DISCONNECT in 3.1.1", B("\xe0\x00"), true, 4, true, 0},
    {"DISCONNECT with reason", B("\xe0\x0a\x8e\x08\x1f\x00\x05taken"), true, 5, true, 0},
};

/* Garbage, oversized, truncated and invalid packets: logged, the
 * connection dropped, a new one made; then random bytes. */
static void fake_hostile(int version)
{
    struct fake f;
    struct wisp_msess_config c;
    struct ts t;
    char uri[64];
    uint8_t pkt[512];
    bool v5 = version == 5;
    if (!fake_start(&f))
        return;
    (void)snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", f.port);
    cfg_init(&c, uri, "ho", version);
    c.reconnect_min_ms = 10;
    c.reconnect_max_ms = 40;
    c.receive_max = 2;
    c.max_packet = 4096;
    const struct wisp_msess_sub subs[] = {{"#", 2}};
    if (!ts_open(&t, &c, subs, 1)) {
        fake_stop(&f);
        return;
    }
    uint64_t errors = 0;
    int lost = 0;
    for (size_t i = 0; i < sizeof(hostile_cases) / sizeof(hostile_cases[0]); i++) {
        const struct hostile *h = &hostile_cases[i];
        if (h->only && h->only != version)
            continue;
        if (!fake_accept(&f, 2000))
            break;
        CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x10);
        if (h->connack) {
            if (v5)
                FAKE_SEND(&f, "\x20\x03\x00\x00\x00");
            else
                FAKE_SEND(&f, "\x20\x02\x00\x00");
            CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x82);
            lost++;
        }
        fake_send(&f, h->bytes, h->len);
        if (h->error) {
            bool closed = fake_closed(&f, 1000);
            if (!closed)
                (void)fprintf(stderr, "  case '%s': the session did not close\n", h->name);
            CHECK(closed);
            uint8_t disc[3] = {0xe0, 0x01, h->v5_disc};
            if (v5 && h->v5_disc && !has_bytes(f.rx, f.rxlen, disc, 3)) {
                (void)fprintf(stderr, "  case '%s': no DISCONNECT 0x%02X\n", h->name, h->v5_disc);
                CHECK(!"DISCONNECT reason");
            }
        } else {
            CHECK(fake_quiet(&f, 50));
        }
        fake_drop(&f);
        bool proto = h->error && strncmp(h->name, "DISCONNECT with", 15) != 0;
        if (proto || strstr(h->name, "then close"))
            errors++;
        WAIT_FOR(t.lost == lost && protocol_errors(&t) == errors, 1000);
        CHECK_INT_EQ(t.lost, lost);
        if (protocol_errors(&t) != errors)
            (void)fprintf(stderr, "  case '%s': protocol_errors %llu, expected %llu\n", h->name,
                          (unsigned long long)protocol_errors(&t), (unsigned long long)errors);
        CHECK_INT_EQ(protocol_errors(&t), errors);
    }
    CHECK_CONTAINS(t.why, v5 ? "broker sent DISCONNECT: Session taken over (0x8E)"
                             : "DISCONNECT from the broker");

    /* Random packets behind a valid fixed header, then random bytes. */
    static const uint8_t firsts[] = {0x20, 0x30, 0x32, 0x34, 0x3b, 0x62, 0x90,
                                     0xb0, 0xd0, 0xe0, 0x31, 0x3d, 0x35};
    uint32_t seed = 12345u + (uint32_t)version;
    for (int i = 0; i < 40; i++) {
        uint8_t buf[80];
        size_t len = 0;
        seed = seed * 1103515245u + 12345u;
        size_t body = (seed >> 16) % 40;
        if (i < 30) {
            buf[len++] = firsts[(seed >> 8) % sizeof(firsts)];
            buf[len++] = (uint8_t)body;
        }
        for (size_t k = 0; k < body; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[len++] = (uint8_t)(seed >> 16);
        }
        if (!fake_accept(&f, 2000))
            break;
        CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0);
        if (v5)
            FAKE_SEND(&f, "\x20\x03\x00\x00\x00");
        else
            FAKE_SEND(&f, "\x20\x02\x00\x00");
        fake_send(&f, buf, len);
        (void)fake_closed(&f, 30);
        fake_drop(&f);
    }
    /* Still alive and connecting: one last good connection. */
    CHECK(fake_accept(&f, 2000));
    CHECK(fake_read(&f, pkt, sizeof(pkt), 2000, false) > 0 && pkt[0] == 0x10);
    ts_close(&t);
    fake_stop(&f);
}

static void test_fake_hostile_v4(void)
{
    fake_hostile(4);
}

static void test_fake_hostile_v5(void)
{
    fake_hostile(5);
}

/* ---- codec ---- */

/* Every decoder on body b[0..n) copied into a block of exactly n bytes. */
static void decode_all(uint8_t first, const uint8_t *b, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return;
    if (n)
        memcpy(copy, b, n);
    for (int v = 4; v <= 5; v++) {
        const char *why = NULL;
        struct mqtt_connack ca;
        struct mqtt_publish p;
        struct mqtt_ack a;
        struct mqtt_disconnect d;
        (void)mqtt_decode_connack(v, first & 0xf0, copy, n, &ca, &why);
        if (mqtt_decode_publish(v, first, copy, n, &p, &why) == 0) {
            CHECK(p.topic + p.topic_len <= copy + n);
            CHECK(p.payload + p.payload_len == copy + n);
        }
        (void)mqtt_decode_pubrel(v, 0x62, copy, n, &a, &why);
        (void)mqtt_decode_puback(v, 0x40, copy, n, &a, &why);
        (void)mqtt_decode_puback(v, 0x50, copy, n, &a, &why);
        (void)mqtt_decode_puback(v, 0x70, copy, n, &a, &why);
        if (mqtt_decode_suback(v, 0x90, copy, n, &a, &why) == 0)
            CHECK(a.codes + a.ncodes == copy + n);
        (void)mqtt_decode_suback(v, 0xb0, copy, n, &a, &why);
        (void)mqtt_decode_disconnect(v, 0xe0, copy, n, &d, &why);
        (void)mqtt_decode_pingresp(0xd0, n, &why);
    }
    uint8_t f0;
    uint32_t rem;
    size_t hl;
    if (mqtt_decode_header(copy, n, &f0, &rem, &hl) == 1)
        CHECK(hl <= n && hl <= 5);
    free(copy);
}

static void test_codec(void)
{
    /* Valid bodies (v5 and v4 shapes), each decoded at every prefix. */
    static const struct {
        uint8_t first;
        const char *b;
        size_t n;
    } bodies[] = {
        {0x20, B("\x00\x00\x19\x11\x00\x00\x0e\x10\x13\x00\x05\x1f\x00\x02hi\x26\x00\x01k\x00\x01v"
                 "\x27\x00\x00\x10\x00")},
        {0x3b, B("\x00\x03"
                 "a/b\x00\x07\x0e\x01\x01\x02\x00\x00\x00\x05\x0b\x81\x01\x09\x00\x01zpayload")},
        {0x33, B("\x00\x03"
                 "a/b\x00\x07payload")},
        {0x62, B("\x00\x07\x92\x04\x1f\x00\x01x")},
        {0x40, B("\x00\x07\x87\x0a\x1f\x00\x01x\x26\x00\x01k\x00\x00")},
        {0x90, B("\x00\x07\x00\x00\x01\x02\x80")},
        {0xb0, B("\x00\x07\x03\x1f\x00\x00\x00\x11")},
        {0xe0, B("\x8e\x05\x1c\x00\x02h2")},
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        for (size_t n = 0; n <= bodies[i].n; n++)
            decode_all(bodies[i].first, (const uint8_t *)bodies[i].b, n);
    /* Their full forms decode as expected. */
    struct mqtt_publish p;
    const char *why = NULL;
    CHECK_INT_EQ(mqtt_decode_publish(5, 0x3b, (const uint8_t *)bodies[1].b, bodies[1].n, &p, &why),
                 0);
    CHECK_INT_EQ(p.qos, 1);
    CHECK(p.dup && p.retain);
    CHECK_INT_EQ(p.pid, 7);
    CHECK_INT_EQ(p.payload_len, 7);
    CHECK(memcmp(p.payload, "payload", 7) == 0);
    struct mqtt_connack ca;
    CHECK_INT_EQ(mqtt_decode_connack(5, 0x20, (const uint8_t *)bodies[0].b, bodies[0].n, &ca, &why),
                 0);
    CHECK(ca.props.has_session_expiry && ca.props.session_expiry == 3600);
    CHECK(ca.props.has_server_keepalive && ca.props.server_keepalive == 5);
    CHECK(ca.props.has_max_packet && ca.props.max_packet == 4096);
    CHECK(ca.props.reason_len == 2 && memcmp(ca.props.reason, "hi", 2) == 0);

    /* Random bodies. */
    uint32_t seed = 7;
    for (int i = 0; i < 20000; i++) {
        uint8_t buf[64];
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % sizeof(buf);
        uint8_t first = (uint8_t)(seed >> 8);
        for (size_t k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[k] = (uint8_t)(seed >> 16);
        }
        /* A plausible prefix now and then, so decoders get deeper. */
        if (n >= 4 && (i & 1)) {
            buf[0] = 0;
            buf[1] = (uint8_t)(n / 4);
        }
        decode_all(first, buf, n);
    }

    /* Encoders: sizes, refusal of what cannot be encoded. */
    uint8_t out[64];
    struct mqtt_filter fl = {"a/b", 3, 1};
    CHECK_INT_EQ(mqtt_encode_subscribe(NULL, 0, 4, 1, &fl, 1), 10);
    CHECK_INT_EQ(mqtt_encode_subscribe(out, sizeof(out), 5, 1, &fl, 1), 11);
    CHECK(memcmp(out,
                 "\x82\x09\x00\x01\x00\x00\x03"
                 "a/b\x01",
                 11) == 0);
    CHECK_INT_EQ(mqtt_encode_subscribe(out, sizeof(out), 5, 0, &fl, 1), 0);
    CHECK_INT_EQ(mqtt_encode_ack(out, sizeof(out), MQTT_PUBREL, 1), 0);
    CHECK_INT_EQ(mqtt_encode_pingreq(out, 1), 2); /* sized, not written */
    CHECK_INT_EQ(mqtt_varint_size(127), 1);
    CHECK_INT_EQ(mqtt_varint_size(128), 2);
    CHECK_INT_EQ(mqtt_varint_size(268435455), 4);
    CHECK_INT_EQ(mqtt_varint_size(268435456), 0);
    struct mqtt_ack ack;
    CHECK_INT_EQ(mqtt_decode_puback(5, 0x40, (const uint8_t *)bodies[4].b, bodies[4].n, &ack, &why),
                 0);
    CHECK(ack.pid == 7 && ack.code == 0x87 && ack.props.reason_len == 1);
    CHECK_INT_EQ(mqtt_decode_puback(4, 0x40, (const uint8_t *)bodies[4].b, bodies[4].n, &ack, &why),
                 MQTT_RC_MALFORMED);
    CHECK_INT_EQ(mqtt_decode_puback(5, 0x60, (const uint8_t *)bodies[4].b, 2, &ack, &why),
                 MQTT_RC_MALFORMED);
    struct mqtt_pubmsg pm = {.topic = "a/b",
                             .topic_len = 3,
                             .payload = "xy",
                             .payload_len = 2,
                             .qos = 2,
                             .dup = true,
                             .pid = 0x1234,
                             .user_key = "k",
                             .user_key_len = 1,
                             .user_value = "v",
                             .user_value_len = 1};
    CHECK_INT_EQ(mqtt_encode_publish(out, sizeof(out), 4, &pm), 11);
    CHECK(memcmp(out,
                 "\x3c\x09\x00\x03"
                 "a/b\x12\x34xy",
                 11) == 0);
    CHECK_INT_EQ(mqtt_encode_publish(out, sizeof(out), 5, &pm), 19);
    CHECK(memcmp(out,
                 "\x3c\x11\x00\x03"
                 "a/b\x12\x34\x07\x26\x00\x01k\x00\x01vxy",
                 19) == 0);
    pm.qos = 0;
    CHECK_INT_EQ(mqtt_encode_publish(out, sizeof(out), 4, &pm), 0); /* DUP at QoS 0 */
    pm.dup = false;
    pm.retain = true;
    pm.user_key = NULL;
    CHECK_INT_EQ(mqtt_encode_publish(out, sizeof(out), 5, &pm), 10);
    CHECK(memcmp(out,
                 "\x31\x08\x00\x03"
                 "a/b\x00xy",
                 10) == 0);
    pm.qos = 1;
    pm.pid = 0;
    CHECK_INT_EQ(mqtt_encode_publish(out, sizeof(out), 4, &pm), 0);
    pm.pid = 1;
    pm.qos = 3;
    CHECK_INT_EQ(mqtt_encode_publish(out, sizeof(out), 4, &pm), 0);
    pm.qos = 1;
    pm.payload_len = (size_t)MQTT_MAX_REMAINING;
    CHECK_INT_EQ(mqtt_encode_publish(NULL, 0, 4, &pm), 0);
    CHECK_INT_EQ(mqtt_encode_pubrel(out, sizeof(out), 0x0102), 4);
    CHECK(memcmp(out, "\x62\x02\x01\x02", 4) == 0);
    CHECK_STR_EQ(mqtt_reason_name(0x87), "Not authorized");
    CHECK_STR_EQ(mqtt_connack_v4_name(9), "unknown return code");
    CHECK_STR_EQ(mqtt_type_name(3), "PUBLISH");
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("WISP_TEST_LOG");
    if (lvl && wisp_log_level_parse(lvl) >= 0)
        wisp_log_threshold = wisp_log_level_parse(lvl);
    if (wisp_loop_create(&loop) != 0) {
        (void)fprintf(stderr, "cannot create the loop\n");
        return 1;
    }
    static const struct wisp_check_test tests[] = {
        {"codec", test_codec},
        {"config_errors", config_errors},
        {"pubsub_v4", test_pubsub_v4},
        {"pubsub_v5", test_pubsub_v5},
        {"tls", test_tls},
        {"persist_v4", test_persist_v4},
        {"persist_v5", test_persist_v5},
        {"restart_v4", test_restart_v4},
        {"restart_v5", test_restart_v5},
        {"sub_refused_v4", test_sub_refused_v4},
        {"sub_refused_v5", test_sub_refused_v5},
        {"pause_v4", test_pause_v4},
        {"pause_v5", test_pause_v5},
        {"too_large_v4", test_too_large_v4},
        {"too_large_v5", test_too_large_v5},
        {"publish_v4", test_publish_v4},
        {"publish_v5", test_publish_v5},
        {"fake_acks_v4", test_fake_acks_v4},
        {"fake_acks_v5", test_fake_acks_v5},
        {"fake_keepalive_v4", test_fake_keepalive_v4},
        {"fake_keepalive_v5", test_fake_keepalive_v5},
        {"fake_server_limits", test_fake_server_limits},
        {"fake_publish_v4", test_fake_publish_v4},
        {"fake_publish_v5", test_fake_publish_v5},
        {"fake_refused_v4", test_fake_refused_v4},
        {"fake_refused_v5", test_fake_refused_v5},
        {"fake_hostile_v4", test_fake_hostile_v4},
        {"fake_hostile_v5", test_fake_hostile_v5},
    };
    int rc = WISP_CHECK_RUN(argc, argv, tests);
    wisp_loop_destroy(loop);
    return rc;
}
