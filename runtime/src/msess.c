/*
 * The durable MQTT session (see msess.h). One non-blocking TCP socket
 * watched by the supervisor's loop, an input buffer that is cut into whole
 * packets, an output buffer for what the socket did not take yet, and a
 * few deadlines (connect retry, connect timeout, keepalive) served by
 * next_timeout/tick. Packets are encoded and decoded by mqtt_codec.c.
 *
 * Failures never close the connection in the middle of processing: they
 * are recorded (fail_pending) and handled once the current I/O callback or
 * tick is done, so a hook that acknowledges, pauses or changes the
 * subscriptions never finds the buffers gone underneath it.
 *
 * Inbound packet identifiers have one state each (pid_state): awaiting the
 * application's ack (QoS 1 or 2), or PUBREC sent and awaiting PUBREL. The
 * table is cleared when a connection ends, which is what makes an ack for a
 * message from an earlier connection return -ENOTCONN.
 *
 * Outbound packet identifiers (our PUBLISH at QoS 1/2, SUBSCRIBE,
 * UNSUBSCRIBE) share one space, kept in a table indexed by the identifier
 * (op) that grows with the number in use: an identifier is taken round
 * robin among the free entries and only the table doubles when none is
 * free. Publishes in flight are also linked in the order they were written,
 * and QoS 0 publishes wait in a FIFO (q0) until the socket took their last
 * byte (stream offsets out_total/sent_total). Completions of QoS 1/2 are
 * reported while the acknowledgement is handled, after the QoS 0 ones
 * already written; the other QoS 0 completions at the end of the I/O
 * callback or tick, never from inside wisp_msess_publish.
 * When the connection ends every publish still in flight fails, in the
 * order written; a QoS 2 identifier the broker may still hold (PUBREC
 * received, or the PUBLISH written) stays reserved (OP_RELEASE) and is
 * released with PUBREL when the next connection resumes the session, so a
 * new message never reuses an identifier the broker would take for a
 * duplicate.
 *
 * TLS (ssl://, mqtts://) is mbedTLS on the same non-blocking socket: the
 * CA, client certificate and key are loaded once into a shared
 * configuration (struct tls), each connection gets a new SSL context,
 * handshaken from the loop (ST_TLS: WANT_READ/WANT_WRITE pick the events
 * watched) before CONNECT. Reads go on until WANT_READ, as mbedTLS may hold
 * decrypted bytes the socket no longer signals; a write that returned
 * WANT_WRITE is repeated with the same length (tls_wlen), as mbedTLS
 * requires.
 */
#define WISP_LOG_MODULE "msess"
#include "msess.h"

/* The CA bundle used when TLS is on and no CA file is given (Debian's). */
#define WISP_MSESS_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

#include <arpa/inet.h>
#include <errno.h>
#include <mbedtls/asn1.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "mqtt_codec.h"
#include "topic.h"
#include "util.h"

enum {
    DEFAULT_RECONNECT_MIN_MS = 250,
    DEFAULT_RECONNECT_MAX_MS = 30000,
    DEFAULT_MAX_PACKET = (1 << 20) + (64 << 10),
    MIN_MAX_PACKET = 64,
    CONNECT_TIMEOUT_MS = 10000,
    READ_CHUNK = 16384,
    READ_BUDGET = 256 * 1024, /* bytes read per I/O callback before yielding */
    OUT_MAX = 1 << 20,        /* unsent bytes before the connection is dropped */
    PUB_CAP = OUT_MAX / 2,    /* unsent bytes from which publishes get -ENOBUFS */
    OUT_KEEP = 2 * OUT_MAX,   /* a drained output buffer above this is freed */
    FLUSH_AT = 64 * 1024,     /* unsent bytes written at once, not at the end of the pass */
    SUB_PACKET_MAX = 16384,   /* SUBSCRIBE packets are split above this */
    NPIDS = 65536,
    OP_MIN = 16, /* first size of the outbound identifier table */
    /* MQTT 3.1.1 has no Receive Maximum, but brokers still limit the QoS 2
     * messages they hold for a client: mosquitto (max_inflight_messages,
     * 20 by default) answers the 21st with a PUBREC and drops it, which a
     * 3.1.1 client cannot tell from success. Stay within that default. */
    V4_QOS2_WINDOW = 20,
};

enum state {
    ST_IDLE,       /* waiting for the next connect attempt */
    ST_CONNECTING, /* TCP connect in progress */
    ST_TLS,        /* TLS handshake in progress */
    ST_CONNACK,    /* CONNECT sent, waiting for CONNACK */
    ST_UP,         /* CONNACK accepted */
};

enum pid_state {
    PID_FREE = 0,
    PID_QOS1_WAIT, /* delivered, waiting for wisp_msess_ack */
    PID_QOS2_WAIT, /* delivered, waiting for wisp_msess_ack */
    PID_QOS2_REC,  /* PUBREC sent, waiting for PUBREL */
};

/* States of outbound packet identifiers (struct opub). */
enum op_state {
    OP_FREE = 0,
    OP_REQ,     /* a SUBSCRIBE or UNSUBSCRIBE (struct req) */
    OP_PUBACK,  /* QoS 1 PUBLISH written, waiting for PUBACK */
    OP_PUBREC,  /* QoS 2 PUBLISH written, waiting for PUBREC */
    OP_PUBCOMP, /* PUBREL written, waiting for PUBCOMP */
    OP_RELEASE, /* QoS 2 from an earlier connection, already reported: PUBREL on resume */
};

/* One outbound packet identifier. */
struct opub {
    uint64_t token;
    uint64_t end;        /* out_total after the PUBLISH: its place in the send order */
    uint16_t prev, next; /* publishes in flight in send order; 0: none */
    uint8_t state;       /* enum op_state */
};

/* A QoS 0 publish waiting for its last byte to leave. */
struct q0ent {
    uint64_t token, end;
};

struct sub {
    char *filter;
    size_t len;
    int qos;
};

/* A SUBSCRIBE or UNSUBSCRIBE waiting for its SUBACK/UNSUBACK. */
struct req {
    struct req *next;
    uint16_t pid;
    bool unsub;
    size_t n;
    struct sub *subs; /* copies, for the log */
};

/* TLS material shared by the connections of a session. */
struct tls {
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca, cert;
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    uint8_t ip[16]; /* the host when it is an IP address literal */
    size_t ip_len;  /* 0: a name */
    bool has_ca, has_cert;
};

struct wisp_msess {
    struct wisp_loop *loop;
    struct wisp_msess_hooks hooks;
    struct wisp_loop_task flush_task; /* writes the output before the loop waits */

    /* configuration */
    char *host, *port, *client_id, *username, *password;
    int version, keepalive_s, reconnect_min_ms, reconnect_max_ms;
    uint32_t session_expiry_s, max_packet;
    uint16_t receive_max;
    uint8_t will_qos;
    bool will_retain;
    bool out_blocked; /* the socket took less than was queued */
    bool ping_out;
    bool ever_up;
    char *will_topic; /* NULL: no Last Will */
    uint8_t *will_payload;
    size_t will_len;

    struct sub *subs;
    size_t nsubs;

    /* TLS: NULL for tcp:// and mqtt:// */
    struct tls *tls;
    mbedtls_ssl_context *ssl; /* this connection's, from ST_TLS on */
    size_t tls_wlen;          /* length of a write to repeat after WANT_WRITE; 0: none */
    uint32_t tls_want;        /* ST_TLS: the events the handshake waits for */
    int tls_errno;            /* the socket error behind the last TLS I/O error */

    /* connection */
    enum state state;
    int fd;
    uint32_t watch_events;
    int backoff_ms;
    struct wisp_watch *watch;
    struct addrinfo *ai, *ai_next;
    uint64_t deadline_ns; /* ST_IDLE: next attempt; ST_CONNECTING/CONNACK: timeout */
    uint64_t last_tx_ns, last_rx_ns;
    int ka_s; /* effective keepalive (v5: Server Keep Alive wins) */
    uint32_t server_max_packet;

    uint8_t *in;
    size_t in_len, in_off, in_cap;
    uint8_t *out;
    size_t out_len, out_off, out_cap;

    uint8_t *pid_state; /* NPIDS entries of enum pid_state */
    unsigned inflight;  /* QoS 1/2 messages not yet PUBACKed or PUBCOMPed */
    struct req *reqs;

    /* outbound */
    struct opub *op;  /* op_cap entries, indexed by packet identifier */
    struct q0ent *q0; /* ring of q0_cap (0 or a power of two) */
    size_t q0_cap, q0_head, q0_n;
    uint64_t out_total, sent_total; /* bytes queued / sent on this connection */
    size_t pub_max_len;             /* the largest PUBLISH queued on this connection */
    uint32_t op_cap;                /* 0 or a power of two up to NPIDS */
    uint32_t pids_used;             /* entries not OP_FREE */
    uint32_t nrelease;              /* entries in OP_RELEASE */
    uint32_t npub;                  /* QoS 1/2 publishes in flight */
    uint32_t nq2;                   /* ... of which QoS 2 */
    uint32_t out_window;            /* the broker's Receive Maximum */
    uint16_t next_pid;              /* the last outbound identifier taken */
    uint16_t op_head, op_tail;      /* send order of publishes in flight */
    uint8_t server_max_qos;
    bool server_retain;

    bool paused;
    bool rx_backlog; /* whole packets left in the input buffer (paused) */
    bool fail_pending;
    bool fail_protocol;
    uint8_t fail_reason; /* v5 DISCONNECT reason to send, 0: none */
    char fail_why[512];

    struct wisp_msess_stats st;
};

static void io_cb(void *ud, int fd, uint32_t events);
static void process_input(struct wisp_msess *s);

/* ---- failures and closing ---- */

/* Records why the connection has to go; the first reason wins. reason is
 * the v5 DISCONNECT reason to send (0: none), protocol counts it. */
static void __attribute__((format(printf, 4, 5)))
fail(struct wisp_msess *s, uint8_t reason, bool protocol, const char *fmt, ...)
{
    if (s->fail_pending || s->state == ST_IDLE)
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(s->fail_why, sizeof(s->fail_why), fmt, ap);
    va_end(ap);
    s->fail_pending = true;
    s->fail_protocol = protocol;
    s->fail_reason = reason;
}

static void set_interest(struct wisp_msess *s)
{
    if (!s->watch)
        return;
    uint32_t ev = 0;
    if (s->state == ST_CONNECTING) {
        ev = EPOLLOUT;
    } else if (s->state == ST_TLS) {
        ev = s->tls_want;
    } else {
        if (s->state == ST_CONNACK || !s->paused)
            ev |= EPOLLIN;
        if (s->out_blocked)
            ev |= EPOLLOUT; /* else the flush task writes it */
    }
    if (ev == s->watch_events)
        return;
    int rc = wisp_loop_modify(s->loop, s->watch, ev);
    if (rc == 0)
        s->watch_events = ev;
    else
        fail(s, 0, false, "epoll: %s", strerror(-rc));
}

/* ---- TLS ---- */

/* mbedTLS's view of the socket. */
static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    struct wisp_msess *s = ctx;
    for (;;) {
        ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_WRITE;
        s->tls_errno = errno;
        return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
                                                     : MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    struct wisp_msess *s = ctx;
    for (;;) {
        ssize_t n = recv(s->fd, buf, len, 0);
        if (n >= 0)
            return (int)n; /* 0: EOF */
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return MBEDTLS_ERR_SSL_WANT_READ;
        s->tls_errno = errno;
        return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

/* A TLS error as text: mbedTLS's description and the socket error. */
static void tls_reason(const struct wisp_msess *s, int rc, char *buf, size_t cap)
{
    char e[160];
    mbedtls_strerror(rc, e, sizeof(e));
    if (s->tls_errno)
        (void)snprintf(buf, cap, "%s (%s)", e, strerror(s->tls_errno));
    else
        (void)snprintf(buf, cap, "%s", e);
}

/* Writes up to n bytes: the number written, 0 when the socket takes
 * nothing now, or -1 (failed). */
static ssize_t conn_write(struct wisp_msess *s, const uint8_t *p, size_t n)
{
    if (!s->ssl) {
        for (;;) {
            ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
            if (w > 0)
                return w;
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return 0;
            fail(s, 0, false, "write: %s", w < 0 ? strerror(errno) : "nothing written");
            return -1;
        }
    }
    if (s->tls_wlen) /* mbedTLS wants the interrupted write repeated as it was */
        n = s->tls_wlen;
    if (n > INT32_MAX)
        n = INT32_MAX;
    int rc = mbedtls_ssl_write(s->ssl, p, n);
    if (rc > 0) {
        s->tls_wlen = 0;
        return rc;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_WRITE || rc == MBEDTLS_ERR_SSL_WANT_READ) {
        s->tls_wlen = n;
        return 0;
    }
    char why[256];
    tls_reason(s, rc, why, sizeof(why));
    fail(s, 0, false, "TLS write: %s", why);
    return -1;
}

/* Writes what the socket takes now. */
static void flush_out(struct wisp_msess *s)
{
    while (s->fd >= 0 && s->out_off < s->out_len) {
        ssize_t n = conn_write(s, s->out + s->out_off, s->out_len - s->out_off);
        if (n < 0)
            return;
        if (n == 0) {
            s->out_blocked = true; /* EPOLLOUT says when it takes more */
            break;
        }
        s->out_off += (size_t)n;
        s->sent_total += (uint64_t)n;
    }
    if (s->out_off == s->out_len) {
        s->out_blocked = false;
        s->out_off = s->out_len = 0;
        if (s->out_cap > OUT_KEEP) { /* after a very large PUBLISH */
            free(s->out);
            s->out = NULL;
            s->out_cap = 0;
        }
    }
    set_interest(s);
}

/* Room for n more output bytes, or NULL (out of memory). */
static uint8_t *out_grow(struct wisp_msess *s, size_t n)
{
    if (s->out_off > 0 && s->out_off == s->out_len)
        s->out_off = s->out_len = 0;
    if (s->out_cap - s->out_len < n && s->out_off > 0) {
        memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
        s->out_len -= s->out_off;
        s->out_off = 0;
    }
    if (s->out_cap - s->out_len < n) {
        if (n > SIZE_MAX / 4 - s->out_len)
            return NULL;
        size_t cap = s->out_cap ? s->out_cap : 256;
        while (cap - s->out_len < n)
            cap *= 2;
        uint8_t *p = realloc(s->out, cap);
        if (!p)
            return NULL;
        s->out = p;
        s->out_cap = cap;
    }
    return s->out + s->out_len;
}

/* Room for n more output bytes of a control packet, or NULL (the
 * connection is failed). Publishes stop at PUB_CAP unsent bytes, so the
 * limit only trips when the broker stops reading. */
static uint8_t *out_reserve(struct wisp_msess *s, size_t n)
{
    size_t unsent = s->out_len - s->out_off;
    if (unsent + n > OUT_MAX + s->pub_max_len) {
        fail(s, 0, false, "%zu bytes unsent: the broker is not reading", unsent);
        return NULL;
    }
    uint8_t *p = out_grow(s, n);
    if (!p)
        fail(s, 0, false, "out of memory");
    return p;
}

static void flush_task(void *ud)
{
    flush_out(ud);
}

/* Output is written once per loop pass, just before the loop waits: the
 * acknowledgements of a commit and the messages it released leave in one
 * write, not one system call (and one TCP segment) each. Past FLUSH_AT
 * unsent bytes it is written at once. */
static void schedule_flush(struct wisp_msess *s)
{
    if (s->out_len - s->out_off >= FLUSH_AT)
        flush_out(s);
    else
        wisp_loop_defer(s->loop, &s->flush_task);
}

/* Appends an encoded packet of n bytes (already written at the reserved
 * spot) and schedules sending it. */
static void out_commit(struct wisp_msess *s, size_t n, uint64_t now)
{
    s->out_len += n;
    s->out_total += n;
    s->last_tx_ns = now;
    schedule_flush(s);
}

static void send_small(struct wisp_msess *s, const uint8_t *pkt, size_t n)
{
    uint8_t *p = out_reserve(s, n);
    if (!p)
        return;
    memcpy(p, pkt, n);
    out_commit(s, n, wisp_mono_ns());
}

static void free_subs(struct sub *subs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(subs[i].filter);
    free(subs);
}

/* ---- outbound packet identifiers ---- */

static bool pid_taken(const struct wisp_msess *s, uint32_t pid)
{
    return pid < s->op_cap && s->op[pid].state != OP_FREE;
}

/* Takes a free outbound packet identifier for state: the next free one
 * after the last taken, or the first of a doubled table when none is free.
 * 0 when all 65535 are in use or on OOM. */
static uint16_t take_pid(struct wisp_msess *s, enum op_state state)
{
    if (s->pids_used >= NPIDS - 1)
        return 0;
    uint32_t pid = s->next_pid;
    if (s->op_cap > 0 && s->pids_used < s->op_cap - 1) {
        do
            pid = pid + 1 >= s->op_cap ? 1 : pid + 1;
        while (s->op[pid].state != OP_FREE);
    } else {
        uint32_t cap = s->op_cap ? s->op_cap * 2 : OP_MIN;
        if (cap > NPIDS)
            cap = NPIDS;
        struct opub *p = realloc(s->op, cap * sizeof(*p));
        if (!p)
            return 0;
        memset(p + s->op_cap, 0, (cap - s->op_cap) * sizeof(*p));
        pid = s->op_cap ? s->op_cap : 1;
        s->op = p;
        s->op_cap = cap;
    }
    s->next_pid = (uint16_t)pid;
    memset(&s->op[pid], 0, sizeof(s->op[pid]));
    s->op[pid].state = (uint8_t)state;
    s->pids_used++;
    return (uint16_t)pid;
}

static void free_pid(struct wisp_msess *s, uint16_t pid)
{
    if (!pid_taken(s, pid))
        return;
    if (s->op[pid].state == OP_RELEASE)
        s->nrelease--;
    s->op[pid].state = OP_FREE;
    s->pids_used--;
}

/* Appends publish pid to the send order. */
static void link_pub(struct wisp_msess *s, uint16_t pid)
{
    struct opub *e = &s->op[pid];
    e->prev = s->op_tail;
    e->next = 0;
    if (s->op_tail)
        s->op[s->op_tail].next = pid;
    else
        s->op_head = pid;
    s->op_tail = pid;
    s->npub++;
    if (e->state != OP_PUBACK)
        s->nq2++;
}

static void unlink_pub(struct wisp_msess *s, uint16_t pid)
{
    struct opub *e = &s->op[pid];
    if (e->prev)
        s->op[e->prev].next = e->next;
    else
        s->op_head = e->next;
    if (e->next)
        s->op[e->next].prev = e->prev;
    else
        s->op_tail = e->prev;
    e->prev = e->next = 0;
    s->npub--;
    if (e->state != OP_PUBACK)
        s->nq2--;
}

/* The i-th QoS 0 entry from the oldest (i < q0_n). */
static struct q0ent *q0_at(const struct wisp_msess *s, size_t i)
{
    return &s->q0[(s->q0_head + i) & (s->q0_cap - 1)];
}

/* Room for one more QoS 0 entry; false on OOM. */
static bool q0_reserve(struct wisp_msess *s)
{
    if (s->q0_n < s->q0_cap)
        return true;
    size_t cap = s->q0_cap ? s->q0_cap * 2 : 64;
    struct q0ent *q = malloc(cap * sizeof(*q));
    if (!q)
        return false;
    for (size_t i = 0; i < s->q0_n; i++)
        q[i] = *q0_at(s, i);
    free(s->q0);
    s->q0 = q;
    s->q0_cap = cap;
    s->q0_head = 0;
    return true;
}

static struct q0ent q0_pop(struct wisp_msess *s)
{
    struct q0ent e = *q0_at(s, 0);
    s->q0_head = (s->q0_head + 1) & (s->q0_cap - 1);
    s->q0_n--;
    return e;
}

static bool q0_written(const struct wisp_msess *s)
{
    return s->q0_n > 0 && q0_at(s, 0)->end <= s->sent_total;
}

static void published(struct wisp_msess *s, uint64_t token, bool ok)
{
    if (ok)
        s->st.published++;
    if (s->hooks.on_published)
        s->hooks.on_published(s->hooks.ud, token, ok);
}

/* Reports the QoS 0 publishes the socket has taken; not those the hooks
 * publish meanwhile (next tick), so a hook that always publishes again
 * cannot keep this loop going. */
static void report_written(struct wisp_msess *s)
{
    for (size_t n = s->q0_n; n > 0 && q0_written(s); n--)
        published(s, q0_pop(s).token, true);
}

/* The connection is gone (the state is no longer ST_UP, so hooks that
 * publish get -ENOTCONN): every publish still in flight fails, in the
 * order written, except QoS 0 ones the socket took. */
static void fail_publishes(struct wisp_msess *s)
{
    size_t lost = s->npub;
    for (size_t i = 0; i < s->q0_n; i++)
        lost += q0_at(s, i)->end > s->sent_total;
    if (lost > 0)
        log_warn("%zu published message(s) not confirmed by the broker: reported as failed", lost);
    while (s->q0_n > 0 || s->op_head) {
        if (s->q0_n > 0 && (!s->op_head || q0_at(s, 0)->end < s->op[s->op_head].end)) {
            struct q0ent e = q0_pop(s);
            published(s, e.token, e.end <= s->sent_total);
            continue;
        }
        uint16_t pid = s->op_head;
        struct opub *e = &s->op[pid];
        uint64_t token = e->token;
        unlink_pub(s, pid);
        /* The broker may hold a QoS 2 identifier it has seen: keep it from
         * new messages until it is released on the next connection. */
        if (e->state == OP_PUBCOMP || (e->state == OP_PUBREC && e->end <= s->sent_total)) {
            e->state = OP_RELEASE;
            s->nrelease++;
        } else {
            free_pid(s, pid);
        }
        published(s, token, false);
    }
}

/* A new connection: PUBREL for the QoS 2 identifiers the broker may hold
 * when it resumed the session, else forgets them. */
static void release_pids(struct wisp_msess *s, bool session_present)
{
    for (uint32_t pid = 1; pid < s->op_cap && s->nrelease > 0 && !s->fail_pending; pid++) {
        if (s->op[pid].state != OP_RELEASE)
            continue;
        if (!session_present) {
            free_pid(s, (uint16_t)pid);
            continue;
        }
        uint8_t pkt[4];
        size_t n = mqtt_encode_pubrel(pkt, sizeof(pkt), (uint16_t)pid);
        log_debug("PUBREL for packet identifier %u from the previous connection", pid);
        send_small(s, pkt, n);
    }
}

static void free_reqs(struct wisp_msess *s)
{
    while (s->reqs) {
        struct req *r = s->reqs;
        s->reqs = r->next;
        free_pid(s, r->pid);
        free_subs(r->subs, r->n);
        free(r);
    }
}

/* Closes the socket and forgets everything tied to this connection. */
static void drop_socket(struct wisp_msess *s)
{
    if (s->watch) {
        wisp_loop_remove(s->loop, s->watch);
        s->watch = NULL;
    }
    if (s->ssl) {
        mbedtls_ssl_free(s->ssl);
        free(s->ssl);
        s->ssl = NULL;
    }
    s->tls_wlen = 0;
    s->tls_want = 0;
    s->tls_errno = 0;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->watch_events = 0;
    s->in_len = s->in_off = 0;
    s->out_len = s->out_off = 0;
    s->out_blocked = false;
    if (s->out_cap > OUT_KEEP) {
        free(s->out);
        s->out = NULL;
        s->out_cap = 0;
    }
    s->rx_backlog = false;
    s->ping_out = false;
    s->inflight = 0;
    if (s->pid_state)
        memset(s->pid_state, 0, NPIDS);
    free_reqs(s);
    s->next_pid = 0; /* identifiers are per connection */
    if (s->ai) {
        freeaddrinfo(s->ai);
        s->ai = s->ai_next = NULL;
    }
}

/* Ends the connection or attempt for the recorded reason and schedules the
 * next attempt after the backoff. */
static void close_conn(struct wisp_msess *s, uint64_t now)
{
    if (!s->fail_pending)
        return;
    bool was_up = s->state == ST_UP;
    if (s->fail_protocol)
        s->st.protocol_errors++;
    if (was_up && s->version == 5 && s->fail_reason && s->fd >= 0) {
        uint8_t pkt[4];
        size_t n = mqtt_encode_disconnect(pkt, sizeof(pkt), 5, s->fail_reason);
        /* best effort: one non-blocking write of whatever is queued plus it */
        uint8_t *p = out_reserve(s, n);
        if (p) {
            memcpy(p, pkt, n);
            s->out_len += n;
            (void)conn_write(s, s->out + s->out_off, s->out_len - s->out_off);
        }
    }
    s->fail_pending = false;
    drop_socket(s);
    s->state = ST_IDLE;
    s->st.connected = false;
    int delay = s->backoff_ms;
    s->deadline_ns = now + (uint64_t)delay * 1000000u;
    s->backoff_ms = delay >= s->reconnect_max_ms / 2 ? s->reconnect_max_ms : delay * 2;
    char why[sizeof(s->fail_why)];
    memcpy(why, s->fail_why, sizeof(why));
    if (was_up) {
        s->st.disconnects++;
        log_warn("connection to %s:%s lost: %s; reconnecting in %d ms", s->host, s->port, why,
                 delay);
        if (s->hooks.on_lost)
            s->hooks.on_lost(s->hooks.ud, why);
        fail_publishes(s);
    } else {
        log_warn("connecting to %s:%s failed: %s; retrying in %d ms", s->host, s->port, why, delay);
    }
}

/* ---- connecting ---- */

static size_t put_varint_at(uint8_t *p, uint32_t v)
{
    size_t n = 0;
    do {
        uint8_t b = (uint8_t)(v & 0x7F);
        v >>= 7;
        p[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

static size_t put_bin_at(uint8_t *p, const void *data, size_t len)
{
    p[0] = (uint8_t)(len >> 8);
    p[1] = (uint8_t)len;
    if (len)
        memcpy(p + 2, data, len);
    return 2 + len;
}

/* CONNECT with the Last Will: the codec writes CONNECT without will and
 * credentials, and the will (v5: with empty Will Properties), the user
 * name and the password are appended here, in the order MQTT requires. */
static size_t encode_connect_will(const struct wisp_msess *s, const struct mqtt_connect *c,
                                  uint8_t *out, size_t cap)
{
    struct mqtt_connect base = *c;
    base.username = base.password = NULL;
    base.username_len = base.password_len = 0;
    size_t n0 = mqtt_encode_connect(NULL, 0, &base);
    size_t tlen = strlen(s->will_topic);
    if (!n0 || tlen > MQTT_MAX_STRING || s->will_len > MQTT_MAX_STRING)
        return 0;
    uint8_t *b0 = malloc(n0);
    if (!b0)
        return 0;
    (void)mqtt_encode_connect(b0, n0, &base);
    /* The fixed header: the type byte and 1..4 bytes of remaining length. */
    size_t hdr = 2;
    while (hdr < 5 && hdr < n0 && (b0[hdr - 1] & 0x80))
        hdr++;
    if (n0 < hdr + 8) {
        free(b0);
        return 0;
    }
    size_t body = n0 - hdr;
    size_t extra = (c->version == 5 ? 1 : 0) + 2 + tlen + 2 + s->will_len +
                   (c->username ? 2 + c->username_len : 0) +
                   (c->password ? 2 + c->password_len : 0);
    size_t rem = body + extra;
    size_t vs = rem <= MQTT_MAX_REMAINING ? mqtt_varint_size((uint32_t)rem) : 0;
    size_t total = vs ? 1 + vs + rem : 0;
    if (!total || !out || cap < total) {
        free(b0);
        return !out ? total : 0;
    }
    uint8_t *p = out;
    *p++ = (uint8_t)(MQTT_CONNECT << 4);
    p += put_varint_at(p, (uint32_t)rem);
    memcpy(p, b0 + hdr, body);
    /* Connect flags follow the protocol name (2 + 4) and level (1). */
    p[7] |= (uint8_t)(0x04 | (s->will_qos << 3) | (s->will_retain ? 0x20 : 0) |
                      (c->username ? 0x80 : 0) | (c->password ? 0x40 : 0));
    p += body;
    free(b0);
    if (c->version == 5)
        *p++ = 0; /* no Will Properties */
    p += put_bin_at(p, s->will_topic, tlen);
    p += put_bin_at(p, s->will_payload, s->will_len);
    if (c->username)
        p += put_bin_at(p, c->username, c->username_len);
    if (c->password)
        p += put_bin_at(p, c->password, c->password_len);
    return (size_t)(p - out);
}

static void send_connect(struct wisp_msess *s, uint64_t now)
{
    struct mqtt_connect c = {
        .version = s->version,
        .client_id = s->client_id,
        .client_id_len = strlen(s->client_id),
        .username = s->username,
        .username_len = s->username ? strlen(s->username) : 0,
        .password = s->password,
        .password_len = s->password ? strlen(s->password) : 0,
        .keepalive_s = (uint16_t)s->keepalive_s,
        .clean = false, /* the durable session must survive restarts */
        .session_expiry_s = s->session_expiry_s,
        .receive_max = s->receive_max,
        .max_packet = s->max_packet,
    };
    size_t n =
        s->will_topic ? encode_connect_will(s, &c, NULL, 0) : mqtt_encode_connect(NULL, 0, &c);
    uint8_t *p = n ? out_reserve(s, n) : NULL;
    if (!n)
        fail(s, 0, false, "CONNECT cannot be encoded");
    if (!p)
        return;
    if (s->will_topic)
        (void)encode_connect_will(s, &c, p, n);
    else
        (void)mqtt_encode_connect(p, n, &c);
    out_commit(s, n, now);
}

/* The transport is up: send CONNECT and wait for CONNACK. */
static void mqtt_start(struct wisp_msess *s, uint64_t now)
{
    s->state = ST_CONNACK;
    s->last_rx_ns = now;
    s->out_total = s->sent_total = 0;
    s->pub_max_len = 0;
    send_connect(s, now);
    set_interest(s);
}

/* mbedTLS's certificate verification flags as one line. */
static void verify_text(uint32_t flags, char *buf, size_t cap)
{
    char info[512];
    int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
    if (n <= 0) {
        (void)snprintf(buf, cap, "verification flags 0x%x", (unsigned)flags);
        return;
    }
    size_t o = 0;
    for (const char *p = info; *p && o + 3 < cap; p++) {
        if (*p != '\n')
            buf[o++] = *p;
        else if (p[1]) {
            buf[o++] = ';';
            buf[o++] = ' ';
        }
    }
    buf[o] = '\0';
}

/* Runs the TLS handshake as far as the socket allows. */
static void tls_step(struct wisp_msess *s, uint64_t now)
{
    int rc = mbedtls_ssl_handshake(s->ssl);
    if (rc == 0) {
        log_debug("TLS up with %s:%s (%s, %s), sending CONNECT (MQTT %s)", s->host, s->port,
                  mbedtls_ssl_get_version(s->ssl), mbedtls_ssl_get_ciphersuite(s->ssl),
                  s->version == 5 ? "5" : "3.1.1");
        s->tls_want = 0;
        mqtt_start(s, now);
        return;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
        s->tls_want = rc == MBEDTLS_ERR_SSL_WANT_READ ? EPOLLIN : EPOLLOUT;
        set_interest(s);
        return;
    }
    uint32_t flags = mbedtls_ssl_get_verify_result(s->ssl);
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != UINT32_MAX) {
        char info[320];
        verify_text(flags, info, sizeof(info));
        fail(s, 0, false,
             "TLS handshake: the broker's certificate failed verification for '%s': %s", s->host,
             info);
        return;
    }
    char why[256];
    tls_reason(s, rc, why, sizeof(why));
    fail(s, 0, false, "TLS handshake: %s%s", why,
         s->tls->has_cert ? ""
                          : " (no client certificate is configured, mqtt.tls.cert: a broker "
                            "that requires one refuses the handshake)");
}

/* TCP is up: TLS handshake first, else CONNECT at once. */
static void tcp_up(struct wisp_msess *s, uint64_t now)
{
    if (s->ai) {
        freeaddrinfo(s->ai);
        s->ai = s->ai_next = NULL;
    }
    if (!s->tls) {
        log_debug("TCP connected to %s:%s, sending CONNECT (MQTT %s)", s->host, s->port,
                  s->version == 5 ? "5" : "3.1.1");
        mqtt_start(s, now);
        return;
    }
    s->ssl = malloc(sizeof(*s->ssl));
    if (!s->ssl) {
        fail(s, 0, false, "out of memory");
        return;
    }
    mbedtls_ssl_init(s->ssl);
    int rc = mbedtls_ssl_setup(s->ssl, &s->tls->conf);
    if (rc == 0)
        rc = mbedtls_ssl_set_hostname(s->ssl, s->host); /* verified unless insecure */
    if (rc != 0) {
        char why[256];
        tls_reason(s, rc, why, sizeof(why));
        fail(s, 0, false, "TLS setup: %s", why);
        return;
    }
    mbedtls_ssl_set_bio(s->ssl, s, bio_send, bio_recv, NULL);
    s->state = ST_TLS;
    log_debug("TCP connected to %s:%s, TLS handshake", s->host, s->port);
    tls_step(s, now);
}

/* Tries the remaining resolved addresses until one connects or is in
 * progress; records a failure when none is left. */
static void try_next_addr(struct wisp_msess *s, uint64_t now, int last_err)
{
    while (s->ai_next) {
        struct addrinfo *a = s->ai_next;
        s->ai_next = a->ai_next;
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
            log_debug("TCP_NODELAY: %s", strerror(errno));
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno != EINPROGRESS) {
            last_err = errno;
            close(fd);
            continue;
        }
        uint32_t ev = rc == 0 ? EPOLLIN : EPOLLOUT;
        s->watch = wisp_loop_add(s->loop, fd, ev, io_cb, s);
        if (!s->watch) {
            last_err = errno;
            close(fd);
            continue;
        }
        s->fd = fd;
        s->watch_events = ev;
        if (rc == 0) {
            tcp_up(s, now);
        } else {
            s->state = ST_CONNECTING;
        }
        return;
    }
    s->state = ST_CONNECTING; /* so that fail() records it */
    fail(s, 0, false, "connect: %s", strerror(last_err ? last_err : ECONNREFUSED));
}

static void start_connect(struct wisp_msess *s, uint64_t now)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    s->deadline_ns = now + (uint64_t)CONNECT_TIMEOUT_MS * 1000000u;
    s->state = ST_CONNECTING;
    int rc = getaddrinfo(s->host, s->port, &hints, &s->ai);
    if (rc != 0) {
        s->ai = NULL;
        fail(s, 0, false, "resolving %s: %s", s->host,
             rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return;
    }
    s->ai_next = s->ai;
    try_next_addr(s, now, 0);
}

/* The non-blocking connect finished (or failed). */
static void connect_done(struct wisp_msess *s, uint64_t now)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == 0) {
        tcp_up(s, now);
        return;
    }
    wisp_loop_remove(s->loop, s->watch);
    s->watch = NULL;
    close(s->fd);
    s->fd = -1;
    try_next_addr(s, now, err);
}

/* ---- subscribing ---- */

/* Sends one SUBSCRIBE (or UNSUBSCRIBE) for subs[0..n) and remembers it. */
static void send_sub_packet(struct wisp_msess *s, const struct sub *subs, size_t n, bool unsub)
{
    struct mqtt_filter f[64];
    struct req *r = calloc(1, sizeof(*r));
    struct sub *copy = calloc(n, sizeof(*copy));
    if (!r || !copy || n > WISP_ARRAY_LEN(f)) {
        free(r);
        free(copy);
        fail(s, 0, false, "out of memory");
        return;
    }
    r->subs = copy;
    for (size_t i = 0; i < n; i++) {
        f[i] = (struct mqtt_filter){subs[i].filter, subs[i].len, (uint8_t)subs[i].qos};
        copy[i] = subs[i];
        copy[i].filter = wisp_strndup(subs[i].filter, subs[i].len);
        r->n = i + 1;
        if (!copy[i].filter) {
            free_subs(copy, r->n);
            free(r);
            fail(s, 0, false, "out of memory");
            return;
        }
    }
    r->pid = take_pid(s, OP_REQ);
    r->unsub = unsub;
    if (!r->pid) {
        free_subs(copy, n);
        free(r);
        fail(s, 0, false, "no free packet identifier for %s", unsub ? "UNSUBSCRIBE" : "SUBSCRIBE");
        return;
    }
    size_t len = unsub ? mqtt_encode_unsubscribe(NULL, 0, s->version, r->pid, f, n)
                       : mqtt_encode_subscribe(NULL, 0, s->version, r->pid, f, n);
    uint8_t *p = len ? out_reserve(s, len) : NULL;
    if (!p) {
        free_pid(s, r->pid);
        free_subs(copy, n);
        free(r);
        return;
    }
    if (unsub)
        (void)mqtt_encode_unsubscribe(p, len, s->version, r->pid, f, n);
    else
        (void)mqtt_encode_subscribe(p, len, s->version, r->pid, f, n);
    r->next = s->reqs;
    s->reqs = r;
    log_debug("%s %zu filter(s), first '%s' (pid %u)", unsub ? "UNSUBSCRIBE" : "SUBSCRIBE", n,
              subs[0].filter, r->pid);
    out_commit(s, len, wisp_mono_ns());
}

/* Sends subs[0..n) in as many packets as the size limits need. */
static void send_subs(struct wisp_msess *s, const struct sub *subs, size_t n, bool unsub)
{
    size_t limit = SUB_PACKET_MAX;
    if (s->server_max_packet < limit)
        limit = s->server_max_packet;
    size_t start = 0;
    while (start < n && !s->fail_pending) {
        size_t size = MQTT_MAX_FIXED_HEADER + 3;
        size_t end = start;
        while (end < n && end - start < 64) {
            size_t add = mqtt_filter_size(subs[end].len, unsub);
            if (end > start && size + add > limit)
                break;
            size += add;
            end++;
        }
        if (size > limit) { /* one filter alone is too big for this broker */
            log_error("cannot %s '%s': the packet exceeds the broker's Maximum Packet Size %u",
                      unsub ? "unsubscribe from" : "subscribe to", subs[start].filter,
                      s->server_max_packet);
            start = end;
            continue;
        }
        send_sub_packet(s, subs + start, end - start, unsub);
        start = end;
    }
}

static void handle_suback(struct wisp_msess *s, uint8_t first, const uint8_t *b, size_t n)
{
    struct mqtt_ack a;
    const char *why = NULL;
    int rc = mqtt_decode_suback(s->version, first, b, n, &a, &why);
    const char *what = mqtt_type_name(first >> 4);
    if (rc) {
        fail(s, (uint8_t)rc, true, "malformed %s: %s", what, why);
        return;
    }
    struct req **pp = &s->reqs;
    while (*pp && (*pp)->pid != a.pid)
        pp = &(*pp)->next;
    struct req *r = *pp;
    bool unsub = (first >> 4) == MQTT_UNSUBACK;
    if (!r || r->unsub != unsub) {
        fail(s, MQTT_RC_PROTOCOL_ERROR, true, "%s for packet identifier %u, which is not pending",
             what, a.pid);
        return;
    }
    if (a.codes && a.ncodes != r->n) {
        fail(s, MQTT_RC_PROTOCOL_ERROR, true, "%s has %zu reason codes for %zu filters", what,
             a.ncodes, r->n);
        return;
    }
    *pp = r->next;
    free_pid(s, r->pid);
    for (size_t i = 0; a.codes && i < a.ncodes; i++) {
        uint8_t c = a.codes[i];
        const char *f = r->subs[i].filter;
        if (c >= 0x80) {
            if (s->version == 5)
                log_error("broker refused to %s '%s': %s (0x%02X)%s%.*s",
                          unsub ? "unsubscribe from" : "subscribe to", f, mqtt_reason_name(c), c,
                          a.props.reason ? ": " : "", (int)a.props.reason_len,
                          a.props.reason ? (const char *)a.props.reason : "");
            else
                log_error("broker refused to subscribe to '%s' (SUBACK return code 0x80)", f);
        } else if (unsub) {
            if (c == MQTT_RC_NO_SUBSCRIPTION)
                log_debug("unsubscribed from '%s': it was not subscribed", f);
        } else if (c < r->subs[i].qos) {
            log_warn("broker granted QoS %u instead of %d for '%s'", c, r->subs[i].qos, f);
        } else {
            log_debug("subscribed to '%s' at QoS %u", f, c);
        }
    }
    free_subs(r->subs, r->n);
    free(r);
}

/* ---- inbound packets ---- */

static void log_props_reason(const char *what, const struct mqtt_props *p)
{
    if (p->reason)
        log_warn("%s reason string: %.*s", what, (int)p->reason_len, (const char *)p->reason);
    if (p->server_ref)
        log_warn("%s server reference: %.*s", what, (int)p->server_ref_len,
                 (const char *)p->server_ref);
}

static void handle_connack(struct wisp_msess *s, uint8_t first, const uint8_t *b, size_t n,
                           uint64_t now)
{
    struct mqtt_connack c;
    const char *why = NULL;
    if (s->state != ST_CONNACK) {
        fail(s, MQTT_RC_PROTOCOL_ERROR, true, "second CONNACK");
        return;
    }
    int rc = mqtt_decode_connack(s->version, first, b, n, &c, &why);
    if (rc) {
        fail(s, 0, true, "malformed CONNACK: %s", why);
        return;
    }
    if (c.code != 0) {
        log_props_reason("CONNACK", &c.props);
        if (s->version == 5)
            fail(s, 0, false, "broker refused the connection: %s (0x%02X)",
                 mqtt_reason_name(c.code), c.code);
        else
            fail(s, 0, false, "broker refused the connection: %s (%u)",
                 mqtt_connack_v4_name(c.code), c.code);
        return;
    }
    s->state = ST_UP;
    s->st.connects++;
    s->st.connected = true;
    s->backoff_ms = s->reconnect_min_ms;
    s->ka_s = s->keepalive_s;
    s->server_max_packet = UINT32_MAX;
    s->out_window = NPIDS - 1;
    s->server_max_qos = 2;
    s->server_retain = true;
    if (s->version == 5) {
        const struct mqtt_props *p = &c.props;
        if (p->has_receive_max)
            s->out_window = p->receive_max;
        if (p->has_max_qos)
            s->server_max_qos = p->max_qos;
        if (p->has_retain_available)
            s->server_retain = p->retain_available != 0;
        if (p->has_server_keepalive && p->server_keepalive != s->keepalive_s) {
            log_info("broker sets keepalive to %u s (asked for %d s)", p->server_keepalive,
                     s->keepalive_s);
            s->ka_s = p->server_keepalive;
        }
        if (p->has_max_packet)
            s->server_max_packet = p->max_packet;
        if (p->has_assigned_id)
            log_warn("broker assigned client identifier '%.*s' although one was sent",
                     (int)p->assigned_id_len, (const char *)p->assigned_id);
        if (p->has_session_expiry && p->session_expiry != s->session_expiry_s)
            log_warn("broker limits the session expiry to %u s (asked for %u s)", p->session_expiry,
                     s->session_expiry_s);
        if (p->has_max_qos)
            log_info("broker supports QoS up to %u only", p->max_qos);
    }
    if (c.session_present)
        log_info("connected to %s:%s as '%s' (MQTT %s), session resumed", s->host, s->port,
                 s->client_id, s->version == 5 ? "5" : "3.1.1");
    else if (s->ever_up)
        log_warn("connected to %s:%s as '%s' (MQTT %s) but the broker had no session: "
                 "messages published while disconnected are lost",
                 s->host, s->port, s->client_id, s->version == 5 ? "5" : "3.1.1");
    else
        log_info("connected to %s:%s as '%s' (MQTT %s), new session", s->host, s->port,
                 s->client_id, s->version == 5 ? "5" : "3.1.1");
    s->ever_up = true;
    s->last_rx_ns = now;
    release_pids(s, c.session_present);
    send_subs(s, s->subs, s->nsubs, false);
    flush_out(s); /* on_connected promises the SUBSCRIBE is on its way */
    if (!s->fail_pending && s->hooks.on_connected)
        s->hooks.on_connected(s->hooks.ud, c.session_present);
}

static void handle_publish(struct wisp_msess *s, uint8_t first, const uint8_t *b, size_t n)
{
    struct mqtt_publish p;
    const char *why = NULL;
    int rc = mqtt_decode_publish(s->version, first, b, n, &p, &why);
    if (rc) {
        fail(s, (uint8_t)rc, true, "malformed PUBLISH: %s", why);
        return;
    }
    if (p.props.has_topic_alias) {
        /* We announce Topic Alias Maximum 0 (by leaving it out of CONNECT),
         * so any alias is a protocol error [MQTT-3.3.2-9]. */
        fail(s, MQTT_RC_TOPIC_ALIAS_INVALID, true,
             "PUBLISH uses Topic Alias %u, but Topic Alias Maximum is 0", p.props.topic_alias);
        return;
    }
    if (p.qos > 0) {
        uint8_t *st = &s->pid_state[p.pid];
        if (*st != PID_FREE) {
            bool same = (*st == PID_QOS1_WAIT) == (p.qos == 1);
            if (!same) {
                fail(s, MQTT_RC_PROTOCOL_ERROR, true,
                     "PUBLISH at QoS %u reuses packet identifier %u of an unfinished message",
                     p.qos, p.pid);
                return;
            }
            /* A resend on the same connection: never delivered twice. */
            log_debug("PUBLISH pid %u resent before it was acknowledged; ignored", p.pid);
            if (*st == PID_QOS2_REC) {
                uint8_t pkt[4];
                size_t len = mqtt_encode_ack(pkt, sizeof(pkt), MQTT_PUBREC, p.pid);
                send_small(s, pkt, len);
            }
            return;
        }
        if (s->version == 5 && s->inflight >= s->receive_max) {
            fail(s, MQTT_RC_RECEIVE_MAX_EXCEEDED, true,
                 "broker sent more than Receive Maximum %u unacknowledged messages",
                 s->receive_max);
            return;
        }
        *st = p.qos == 1 ? PID_QOS1_WAIT : PID_QOS2_WAIT;
        s->inflight++;
    }
    s->st.received++;
    if (s->hooks.on_message)
        s->hooks.on_message(s->hooks.ud, p.pid, p.qos, p.dup, p.retain, (const char *)p.topic,
                            p.topic_len, p.payload, p.payload_len);
}

static void handle_pubrel(struct wisp_msess *s, uint8_t first, const uint8_t *b, size_t n)
{
    struct mqtt_ack a;
    const char *why = NULL;
    int rc = mqtt_decode_pubrel(s->version, first, b, n, &a, &why);
    if (rc) {
        fail(s, (uint8_t)rc, true, "malformed PUBREL: %s", why);
        return;
    }
    uint8_t *st = &s->pid_state[a.pid];
    if (*st == PID_QOS1_WAIT || *st == PID_QOS2_WAIT) {
        fail(s, MQTT_RC_PROTOCOL_ERROR, true, "PUBREL for packet identifier %u before PUBREC",
             a.pid);
        return;
    }
    if (*st == PID_QOS2_REC) {
        *st = PID_FREE;
        s->inflight--;
    }
    /* Unknown identifiers are PUBRELs for messages PUBRECed on an earlier
     * connection: complete them too (reason Success). */
    uint8_t pkt[4];
    size_t len = mqtt_encode_ack(pkt, sizeof(pkt), MQTT_PUBCOMP, a.pid);
    send_small(s, pkt, len);
}

static const char *op_waits_for(uint8_t st)
{
    return st == OP_PUBACK ? "PUBACK" : st == OP_PUBREC ? "PUBREC" : "PUBCOMP";
}

/* PUBACK, PUBREC or PUBCOMP for one of our publishes. */
static void handle_pub_response(struct wisp_msess *s, uint8_t first, const uint8_t *b, size_t n)
{
    struct mqtt_ack a;
    const char *why = NULL;
    int type = first >> 4;
    const char *what = mqtt_type_name(type);
    int rc = mqtt_decode_puback(s->version, first, b, n, &a, &why);
    if (rc) {
        fail(s, (uint8_t)rc, true, "malformed %s: %s", what, why);
        return;
    }
    /* QoS 0 messages written before this one was acknowledged complete
     * first: completions keep the send order when the broker's acks do. */
    report_written(s);
    uint8_t st = a.pid < s->op_cap ? s->op[a.pid].state : OP_FREE;
    if (st == OP_RELEASE && type == MQTT_PUBCOMP) {
        log_debug("PUBCOMP for packet identifier %u from the previous connection: %s (0x%02X)",
                  a.pid, mqtt_reason_name(a.code), a.code);
        free_pid(s, a.pid);
        return;
    }
    if (st != OP_PUBACK && st != OP_PUBREC && st != OP_PUBCOMP) {
        log_debug("%s for packet identifier %u, which is not in flight: ignored", what, a.pid);
        return;
    }
    uint8_t pkt[4];
    if (type == MQTT_PUBREC && st == OP_PUBCOMP) { /* PUBREC again: so is PUBREL */
        log_debug("PUBREC for packet identifier %u again: PUBREL again", a.pid);
        size_t len = mqtt_encode_pubrel(pkt, sizeof(pkt), a.pid);
        send_small(s, pkt, len);
        return;
    }
    uint8_t want = type == MQTT_PUBACK ? OP_PUBACK : type == MQTT_PUBREC ? OP_PUBREC : OP_PUBCOMP;
    if (st != want) {
        fail(s, MQTT_RC_PROTOCOL_ERROR, true, "%s for packet identifier %u, which waits for %s",
             what, a.pid, op_waits_for(st));
        return;
    }
    if (type == MQTT_PUBREC && a.code < 0x80) {
        s->op[a.pid].state = OP_PUBCOMP;
        size_t len = mqtt_encode_pubrel(pkt, sizeof(pkt), a.pid);
        send_small(s, pkt, len);
        return;
    }
    uint64_t token = s->op[a.pid].token;
    unlink_pub(s, a.pid);
    free_pid(s, a.pid);
    bool ok = a.code < 0x80;
    if (!ok)
        log_warn("broker refused message %llu (%s for packet identifier %u): %s (0x%02X)%s%.*s",
                 (unsigned long long)token, what, a.pid, mqtt_reason_name(a.code), a.code,
                 a.props.reason ? ": " : "", (int)a.props.reason_len,
                 a.props.reason ? (const char *)a.props.reason : "");
    published(s, token, ok); /* may publish: nothing of a is used after it */
}

static void handle_disconnect(struct wisp_msess *s, uint8_t first, const uint8_t *b, size_t n)
{
    struct mqtt_disconnect d;
    const char *why = NULL;
    int rc = mqtt_decode_disconnect(s->version, first, b, n, &d, &why);
    if (rc) {
        fail(s, 0, true, "bad DISCONNECT from the broker: %s", why);
        return;
    }
    log_props_reason("DISCONNECT", &d.props);
    fail(s, 0, false, "broker sent DISCONNECT: %s (0x%02X)", mqtt_reason_name(d.code), d.code);
}

static void handle_packet(struct wisp_msess *s, uint8_t first, const uint8_t *b, size_t n,
                          uint64_t now)
{
    int type = first >> 4;
    const char *why = NULL;
    s->last_rx_ns = now;
    s->ping_out = false;
    if (s->state == ST_CONNACK && type != MQTT_CONNACK) {
        fail(s, 0, true, "expected CONNACK, got %s", mqtt_type_name(type));
        return;
    }
    switch (type) {
    case MQTT_CONNACK:
        handle_connack(s, first, b, n, now);
        break;
    case MQTT_PUBLISH:
        handle_publish(s, first, b, n);
        break;
    case MQTT_PUBREL:
        handle_pubrel(s, first, b, n);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBCOMP:
        handle_pub_response(s, first, b, n);
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        handle_suback(s, first, b, n);
        break;
    case MQTT_PINGRESP: {
        int rc = mqtt_decode_pingresp(first, n, &why);
        if (rc)
            fail(s, (uint8_t)rc, true, "malformed PINGRESP: %s", why);
        break;
    }
    case MQTT_DISCONNECT:
        handle_disconnect(s, first, b, n);
        break;
    default:
        /* CONNECT, SUBSCRIBE... come from clients; AUTH needs enhanced
         * auth. */
        fail(s, MQTT_RC_PROTOCOL_ERROR, true, "unexpected %s packet from the broker",
             mqtt_type_name(type));
        break;
    }
}

/* Room for n bytes after in_len; false (failed) on OOM. */
static bool in_reserve(struct wisp_msess *s, size_t n)
{
    if (s->in_off > 0) {
        memmove(s->in, s->in + s->in_off, s->in_len - s->in_off);
        s->in_len -= s->in_off;
        s->in_off = 0;
    }
    if (s->in_cap - s->in_len >= n)
        return true;
    size_t cap = s->in_cap ? s->in_cap : READ_CHUNK;
    while (cap - s->in_len < n)
        cap *= 2;
    uint8_t *p = realloc(s->in, cap);
    if (!p) {
        fail(s, 0, false, "out of memory");
        return false;
    }
    s->in = p;
    s->in_cap = cap;
    return true;
}

/* Handles every whole packet in the input buffer, unless paused. */
static void process_input(struct wisp_msess *s)
{
    uint64_t now = wisp_mono_ns();
    s->rx_backlog = false;
    while (s->in_off < s->in_len && !s->fail_pending &&
           (s->state == ST_CONNACK || (s->state == ST_UP && !s->paused))) {
        uint8_t first;
        uint32_t rem;
        size_t hl;
        size_t avail = s->in_len - s->in_off;
        int rc = mqtt_decode_header(s->in + s->in_off, avail, &first, &rem, &hl);
        if (rc < 0) {
            fail(s, MQTT_RC_MALFORMED, true, "remaining length longer than 4 bytes");
            return;
        }
        if (rc == 0)
            break;
        uint64_t total = (uint64_t)hl + rem;
        if (total > s->max_packet) {
            fail(s, MQTT_RC_PACKET_TOO_LARGE, true, "%s packet of %llu bytes exceeds max_packet %u",
                 mqtt_type_name(first >> 4), (unsigned long long)total, s->max_packet);
            return;
        }
        if (avail < total)
            break;
        const uint8_t *body = s->in + s->in_off + hl;
        s->in_off += (size_t)total;
        handle_packet(s, first, body, rem, now);
    }
    if (s->in_off == s->in_len)
        s->in_off = s->in_len = 0;
    else if (s->paused && s->state == ST_UP)
        s->rx_backlog = true; /* processed on resume, from tick */
}

static void closed_by_broker(struct wisp_msess *s)
{
    if (s->in_len > s->in_off)
        fail(s, 0, true,
             "connection closed by the broker in the middle of a packet "
             "(%zu bytes of it received)",
             s->in_len - s->in_off);
    else
        fail(s, 0, false, "connection closed by the broker");
}

/* Reads up to n bytes: the number read, 0 when nothing is there now, or
 * -1 (the connection failed or was closed; recorded). */
static ssize_t conn_read(struct wisp_msess *s, uint8_t *p, size_t n)
{
    if (!s->ssl) {
        for (;;) {
            ssize_t r = recv(s->fd, p, n, 0);
            if (r > 0)
                return r;
            if (r == 0) {
                closed_by_broker(s);
                return -1;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            fail(s, 0, false, "read: %s", strerror(errno));
            return -1;
        }
    }
    int r = mbedtls_ssl_read(s->ssl, p, n < INT32_MAX ? n : INT32_MAX);
    if (r > 0)
        return r;
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
        return 0;
    if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == MBEDTLS_ERR_SSL_CONN_EOF) {
        closed_by_broker(s);
        return -1;
    }
    char why[256];
    tls_reason(s, r, why, sizeof(why));
    fail(s, 0, false, "TLS read: %s", why);
    return -1;
}

/* Decrypted or buffered input mbedTLS holds for reading now. */
static bool tls_pending(const struct wisp_msess *s)
{
    return s->ssl && !s->fail_pending &&
           (s->state == ST_CONNACK || (s->state == ST_UP && !s->paused)) &&
           mbedtls_ssl_check_pending(s->ssl);
}

/* Reads what is there (up to READ_BUDGET) and handles the packets. */
static void read_input(struct wisp_msess *s)
{
    size_t budget = READ_BUDGET;
    while (!s->fail_pending && (s->state == ST_CONNACK || (s->state == ST_UP && !s->paused))) {
        if (!in_reserve(s, READ_CHUNK))
            return;
        size_t room = s->in_cap - s->in_len;
        ssize_t n = conn_read(s, s->in + s->in_len, room);
        if (n <= 0)
            return;
        s->in_len += (size_t)n;
        process_input(s);
        /* Without TLS a short read emptied the socket: the loop calls again
         * when more comes (level-triggered), so no recv just for EAGAIN.
         * mbedTLS may hold decrypted bytes that no socket event announces:
         * TLS reads on until WANT_READ (past READ_BUDGET the rest comes
         * from tick, see tls_pending). */
        if ((size_t)n >= budget || (!s->ssl && (size_t)n < room))
            return;
        budget -= (size_t)n;
    }
}

static void io_cb(void *ud, int fd, uint32_t events)
{
    struct wisp_msess *s = ud;
    (void)fd;
    uint64_t now = wisp_mono_ns();
    if (s->state == ST_CONNECTING) {
        connect_done(s, now);
    } else if (s->state == ST_TLS) {
        tls_step(s, now);
    } else {
        if (events & EPOLLOUT)
            flush_out(s);
        if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (s->state == ST_CONNACK || !s->paused))
            read_input(s);
        else if (events & (EPOLLHUP | EPOLLERR)) {
            int err = 0;
            socklen_t len = sizeof(err);
            (void)getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            fail(s, 0, false, "connection closed (%s)", err ? strerror(err) : "hang-up");
        }
    }
    report_written(s);
    if (!s->fail_pending)
        set_interest(s); /* the state may have changed (CONNACK while paused) */
    close_conn(s, now);
}

/* ---- configuration ---- */

int wisp_msess_scheme(const char *uri)
{
    const char *sep = uri ? strstr(uri, "://") : NULL;
    if (!sep)
        return -1;
    size_t slen = (size_t)(sep - uri);
    if ((slen == 3 && memcmp(uri, "ssl", 3) == 0) || (slen == 5 && memcmp(uri, "mqtts", 5) == 0))
        return 1;
    if ((slen == 3 && memcmp(uri, "tcp", 3) == 0) || (slen == 4 && memcmp(uri, "mqtt", 4) == 0))
        return 0;
    return -1;
}

static int parse_uri(struct wisp_msess *s, const char *uri, bool *tls, char *err, size_t errlen)
{
    const char *sep = uri ? strstr(uri, "://") : NULL;
    if (!sep)
        return wisp_errf(err, errlen, -EINVAL,
                         "uri: '%s' has no scheme (expected tcp://, mqtt://, ssl:// or "
                         "mqtts://host:port)",
                         uri ? uri : "");
    size_t slen = (size_t)(sep - uri);
    int scheme = wisp_msess_scheme(uri);
    *tls = scheme == 1;
    if (scheme < 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "uri: scheme '%.*s' in '%s' is not supported by the durable session "
                         "(tcp://, mqtt://, ssl:// or mqtts://; no WebSockets)",
                         (int)slen, uri, uri);
    const char *h = sep + 3, *hend, *port = NULL;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend)
            return wisp_errf(err, errlen, -EINVAL, "uri: '%s' has an unterminated '['", uri);
        h++;
        if (hend[1] == ':')
            port = hend + 2;
        else if (hend[1] != '\0')
            return wisp_errf(err, errlen, -EINVAL, "uri: '%s': junk after the host", uri);
    } else {
        hend = h + strcspn(h, ":/");
        if (*hend == ':')
            port = hend + 1;
        else if (*hend != '\0')
            return wisp_errf(err, errlen, -EINVAL, "uri: '%s' must not have a path", uri);
    }
    if (hend == h)
        return wisp_errf(err, errlen, -EINVAL, "uri: '%s' has no host", uri);
    int64_t pnum = *tls ? 8883 : 1883;
    if (port && wisp_parse_i64(port, 1, 65535, &pnum) != 0)
        return wisp_errf(err, errlen, -EINVAL, "uri: '%s': port '%s' is not in 1..65535", uri,
                         port);
    char pbuf[8];
    (void)snprintf(pbuf, sizeof(pbuf), "%d", (int)pnum);
    s->host = wisp_strndup(h, (size_t)(hend - h));
    s->port = wisp_strndup(pbuf, strlen(pbuf));
    if (!s->host || !s->port)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    return 0;
}

#if MBEDTLS_VERSION_MAJOR < 3
/* Whether crt's subjectAltName lists the IP address ip (iPAddress, [7]).
 * mbedTLS 2.28 matches host names against dNSName entries only. */
static bool san_has_ip(const mbedtls_x509_crt *crt, const uint8_t *ip, size_t ip_len)
{
    unsigned char *p = crt->v3_ext.p;
    const unsigned char *end = p ? p + crt->v3_ext.len : NULL;
    size_t len;
    if (!p || mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
        return false;
    end = p + len;
    while (p < end) {
        size_t elen, olen;
        if (mbedtls_asn1_get_tag(&p, end, &elen, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
            return false;
        const unsigned char *eend = p + elen;
        if (mbedtls_asn1_get_tag(&p, eend, &olen, MBEDTLS_ASN1_OID))
            return false;
        bool san = olen == MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME) &&
                   memcmp(p, MBEDTLS_OID_SUBJECT_ALT_NAME, olen) == 0;
        p += olen;
        if (!san) {
            p = (unsigned char *)(uintptr_t)eend;
            continue;
        }
        int critical;
        (void)mbedtls_asn1_get_bool(&p, eend, &critical); /* optional */
        if (mbedtls_asn1_get_tag(&p, eend, &len, MBEDTLS_ASN1_OCTET_STRING) ||
            mbedtls_asn1_get_tag(&p, eend, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
            return false;
        const unsigned char *gend = p + len;
        while (p < gend) {
            unsigned char tag = *p++;
            size_t glen;
            if (mbedtls_asn1_get_len(&p, gend, &glen))
                return false;
            if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && glen == ip_len &&
                memcmp(p, ip, ip_len) == 0)
                return true;
            p += glen;
        }
        return false;
    }
    return false;
}

/* Lets a broker addressed by IP match an iPAddress subjectAltName. */
static int verify_cb(void *ud, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    const struct tls *t = ud;
    if (depth == 0 && t->ip_len && (*flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) &&
        san_has_ip(crt, t->ip, t->ip_len))
        *flags &= ~(uint32_t)MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}
#endif

static void tls_free(struct tls *t)
{
    if (!t)
        return;
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_x509_crt_free(&t->cert);
    mbedtls_pk_free(&t->key);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->entropy);
    free(t);
}

/* mbedTLS's text for rc after "what 'file': ". */
static int tls_errf(char *err, size_t errlen, const char *what, const char *file, int rc)
{
    char e[160];
    mbedtls_strerror(rc, e, sizeof(e));
    return wisp_errf(err, errlen, -EINVAL, "%s '%s': %s", what, file, e);
}

/* Loads the CA, the client certificate and key, once per session. */
static int tls_load(struct wisp_msess *s, const struct wisp_msess_config *c, char *err,
                    size_t errlen)
{
    struct tls *t = calloc(1, sizeof(*t));
    if (!t)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    s->tls = t;
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_x509_crt_init(&t->cert);
    mbedtls_pk_init(&t->key);
    mbedtls_ctr_drbg_init(&t->drbg);
    mbedtls_entropy_init(&t->entropy);
    static const char pers[] = "wisp-msess";
    int rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
                                   (const unsigned char *)pers, sizeof(pers) - 1);
    if (rc)
        return tls_errf(err, errlen, "tls: random generator", "entropy", rc);
    const char *ca = c->tls_ca;
    if (!ca && !c->tls_insecure)
        ca = WISP_MSESS_SYSTEM_CA;
    if (ca) {
        /* > 0: some certificates of a bundle did not parse, the others did
         * (none parsed is an error) */
        rc = mbedtls_x509_crt_parse_file(&t->ca, ca);
        if (rc < 0)
            return tls_errf(err, errlen,
                            c->tls_ca ? "mqtt.tls.ca: cannot load"
                                      : "mqtt.tls.ca: none given; cannot load the system CA bundle",
                            ca, rc);
        t->has_ca = true;
    }
    if (!c->tls_cert != !c->tls_key)
        return wisp_errf(
            err, errlen, -EINVAL,
            "mqtt.tls: a client certificate needs its key (mqtt.tls.cert and mqtt.tls.key)");
    if (c->tls_cert) {
        rc = mbedtls_x509_crt_parse_file(&t->cert, c->tls_cert);
        if (rc)
            return tls_errf(err, errlen, "mqtt.tls.cert: cannot load", c->tls_cert,
                            rc < 0 ? rc : MBEDTLS_ERR_X509_INVALID_FORMAT);
#if MBEDTLS_VERSION_MAJOR >= 3
        rc = mbedtls_pk_parse_keyfile(&t->key, c->tls_key, NULL, mbedtls_ctr_drbg_random, &t->drbg);
#else
        rc = mbedtls_pk_parse_keyfile(&t->key, c->tls_key, NULL);
#endif
        if (rc)
            return tls_errf(err, errlen, "mqtt.tls.key: cannot load", c->tls_key, rc);
        t->has_cert = true;
#if MBEDTLS_VERSION_MAJOR >= 3
        rc = mbedtls_pk_check_pair(&t->cert.pk, &t->key, mbedtls_ctr_drbg_random, &t->drbg);
#else
        rc = mbedtls_pk_check_pair(&t->cert.pk, &t->key);
#endif
        if (rc)
            return wisp_errf(err, errlen, -EINVAL, "mqtt.tls.key: '%s' is not the key of '%s'",
                             c->tls_key, c->tls_cert);
    }
    rc = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (!rc && c->tls_cert)
        rc = mbedtls_ssl_conf_own_cert(&t->conf, &t->cert, &t->key);
    if (rc)
        return tls_errf(err, errlen, "tls: setting up for", s->host, rc);
#if MBEDTLS_VERSION_MAJOR < 3
    mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
#endif
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
    mbedtls_ssl_conf_authmode(&t->conf, c->tls_insecure ? MBEDTLS_SSL_VERIFY_NONE
                                                        : MBEDTLS_SSL_VERIFY_REQUIRED);
    if (t->has_ca)
        mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    if (inet_pton(AF_INET, s->host, t->ip) == 1)
        t->ip_len = 4;
    else if (inet_pton(AF_INET6, s->host, t->ip) == 1)
        t->ip_len = 16;
#if MBEDTLS_VERSION_MAJOR < 3
    mbedtls_ssl_conf_verify(&t->conf, verify_cb, t);
#endif
    return 0;
}

static int copy_str(char **dst, const char *src, const char *what, char *err, size_t errlen)
{
    if (!src)
        return 0;
    size_t len = strlen(src);
    if (len > MQTT_MAX_STRING || !wisp_utf8_valid(src, len))
        return wisp_errf(err, errlen, -EINVAL, "%s must be UTF-8 of at most 65535 bytes", what);
    *dst = wisp_strndup(src, len);
    return *dst ? 0 : wisp_errf(err, errlen, -ENOMEM, "out of memory");
}

static int copy_will(struct wisp_msess *s, const struct wisp_msess_config *c, char *err,
                     size_t errlen)
{
    size_t tlen = strlen(c->will_topic);
    if (tlen == 0 || tlen > MQTT_MAX_STRING || c->will_len > MQTT_MAX_STRING || c->will_qos < 0 ||
        c->will_qos > 2 || !wisp_utf8_valid(c->will_topic, tlen) || strpbrk(c->will_topic, "+#"))
        return wisp_errf(err, errlen, -EINVAL,
                         "will: topic \"%s\" (%zu-byte payload, qos %d) cannot be sent",
                         c->will_topic, c->will_len, c->will_qos);
    s->will_topic = wisp_strndup(c->will_topic, tlen);
    s->will_payload = malloc(c->will_len ? c->will_len : 1);
    if (!s->will_topic || !s->will_payload)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    if (c->will_len)
        memcpy(s->will_payload, c->will_payload, c->will_len);
    s->will_len = c->will_len;
    s->will_qos = (uint8_t)c->will_qos;
    s->will_retain = c->will_retain;
    return 0;
}

static int load_config(struct wisp_msess *s, const struct wisp_msess_config *c, char *err,
                       size_t errlen)
{
    if (!c->client_id || !*c->client_id)
        return wisp_errf(err, errlen, -EINVAL, "client_id: required (the session is keyed by it)");
    if (c->version != 3 && c->version != 4 && c->version != 5)
        return wisp_errf(err, errlen, -EINVAL, "version %d: use 4 (MQTT 3.1.1) or 5", c->version);
    s->version = c->version == 5 ? 5 : 4;
    if (c->keepalive_s < 0 || c->keepalive_s > 65535)
        return wisp_errf(err, errlen, -EINVAL, "keepalive_s %d is not in 0..65535", c->keepalive_s);
    s->keepalive_s = c->keepalive_s;
    s->reconnect_min_ms = c->reconnect_min_ms ? c->reconnect_min_ms : DEFAULT_RECONNECT_MIN_MS;
    s->reconnect_max_ms = c->reconnect_max_ms ? c->reconnect_max_ms : DEFAULT_RECONNECT_MAX_MS;
    if (s->reconnect_min_ms < 0 || s->reconnect_max_ms < s->reconnect_min_ms)
        return wisp_errf(err, errlen, -EINVAL,
                         "reconnect_min_ms (%d) and reconnect_max_ms (%d) must be positive and "
                         "min <= max",
                         c->reconnect_min_ms, c->reconnect_max_ms);
    s->session_expiry_s = c->session_expiry_s ? c->session_expiry_s : UINT32_MAX;
    s->receive_max = c->receive_max ? c->receive_max : 65535;
    s->max_packet = c->max_packet ? c->max_packet : DEFAULT_MAX_PACKET;
    if (s->max_packet < MIN_MAX_PACKET || s->max_packet > MQTT_MAX_REMAINING + 5u)
        return wisp_errf(err, errlen, -EINVAL, "max_packet %u is not in %d..268435460",
                         s->max_packet, MIN_MAX_PACKET);
    if (s->version == 4 && c->password && !c->username)
        return wisp_errf(err, errlen, -EINVAL,
                         "password without username is not allowed in MQTT 3.1.1");
    int rc = copy_str(&s->client_id, c->client_id, "client_id", err, errlen);
    if (!rc)
        rc = copy_str(&s->username, c->username, "username", err, errlen);
    if (!rc)
        rc = copy_str(&s->password, c->password, "password", err, errlen);
    bool tls = false;
    if (!rc)
        rc = parse_uri(s, c->uri, &tls, err, errlen);
    if (!rc && c->will_topic)
        rc = copy_will(s, c, err, errlen);
    if (!rc && tls)
        rc = tls_load(s, c, err, errlen);
    return rc;
}

/* Frees what load_config made. */
static void free_config(struct wisp_msess *s)
{
    free(s->host);
    free(s->port);
    free(s->client_id);
    free(s->username);
    free(s->will_topic);
    free(s->will_payload);
    if (s->password)
        explicit_bzero(s->password, strlen(s->password));
    free(s->password);
    tls_free(s->tls);
}

/* ---- public API ---- */

int wisp_msess_check_config(const struct wisp_msess_config *cfg, char *err, size_t errlen)
{
    struct wisp_msess *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    s->fd = -1;
    int rc = load_config(s, cfg, err, errlen);
    free_config(s);
    free(s);
    return rc;
}

int wisp_msess_create(struct wisp_loop *loop, const struct wisp_msess_config *cfg,
                      const struct wisp_msess_hooks *hooks, struct wisp_msess **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!loop || !cfg)
        return wisp_errf(err, errlen, -EINVAL, "msess: loop and config are required");
    struct wisp_msess *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    s->fd = -1;
    s->loop = loop;
    s->flush_task = (struct wisp_loop_task){.fn = flush_task, .ud = s};
    if (hooks)
        s->hooks = *hooks;
    s->pid_state = calloc(NPIDS, 1);
    int rc = s->pid_state ? load_config(s, cfg, err, errlen)
                          : wisp_errf(err, errlen, -ENOMEM, "out of memory");
    if (rc) {
        wisp_msess_destroy(s);
        return rc;
    }
    if (cfg->tls_insecure && s->tls)
        log_warn("TLS to %s:%s without verifying the broker's certificate (tls insecure)", s->host,
                 s->port);
    s->backoff_ms = s->reconnect_min_ms;
    s->server_max_packet = UINT32_MAX;
    uint64_t now = wisp_mono_ns();
    start_connect(s, now);
    close_conn(s, now); /* no hooks: nothing was up */
    *out = s;
    return 0;
}

void wisp_msess_destroy(struct wisp_msess *s)
{
    if (!s)
        return;
    if (s->state == ST_UP && s->fd >= 0) {
        uint8_t pkt[4];
        size_t n = mqtt_encode_disconnect(pkt, sizeof(pkt), s->version, 0);
        uint8_t *p = out_reserve(s, n);
        if (p) {
            memcpy(p, pkt, n);
            s->out_len += n;
            if (conn_write(s, s->out + s->out_off, s->out_len - s->out_off) > 0 && s->ssl)
                (void)mbedtls_ssl_close_notify(s->ssl);
        }
        log_info("disconnected from %s:%s (the broker keeps session '%s')", s->host, s->port,
                 s->client_id);
    }
    drop_socket(s);
    s->state = ST_IDLE;
    s->st.connected = false;
    fail_publishes(s);
    free(s->op);
    free(s->q0);
    free_subs(s->subs, s->nsubs);
    free(s->in);
    free(s->out);
    free(s->pid_state);
    free_config(s);
    wisp_loop_cancel(s->loop, &s->flush_task);
    free(s);
}

static struct sub *find_sub(struct sub *subs, size_t n, const char *filter, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (subs[i].len == len && memcmp(subs[i].filter, filter, len) == 0)
            return &subs[i];
    return NULL;
}

int wisp_msess_set_subscriptions(struct wisp_msess *s, const struct wisp_msess_sub *subs, size_t n)
{
    if (!s || (n && !subs))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const char *why = NULL;
        if (!subs[i].filter ||
            !wisp_topic_filter_valid(subs[i].filter, strlen(subs[i].filter), &why)) {
            log_error("subscription filter '%s' %s", subs[i].filter ? subs[i].filter : "(null)",
                      why ? why : "is missing");
            return -EINVAL;
        }
        if (subs[i].qos < 0 || subs[i].qos > 2) {
            log_error("subscription '%s': QoS %d is not 0, 1 or 2", subs[i].filter, subs[i].qos);
            return -EINVAL;
        }
    }
    struct sub *set = calloc(n ? n : 1, sizeof(*set));
    size_t m = 0;
    if (!set)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(subs[i].filter);
        struct sub *dup = find_sub(set, m, subs[i].filter, len);
        if (dup) { /* the same filter twice: the higher QoS */
            if (subs[i].qos > dup->qos)
                dup->qos = subs[i].qos;
            continue;
        }
        set[m].filter = wisp_strndup(subs[i].filter, len);
        if (!set[m].filter) {
            free_subs(set, m);
            return -ENOMEM;
        }
        set[m].len = len;
        set[m].qos = subs[i].qos;
        m++;
    }
    if (s->state == ST_UP) {
        struct sub *added = calloc(m ? m : 1, sizeof(*added));
        struct sub *removed = calloc(s->nsubs ? s->nsubs : 1, sizeof(*removed));
        size_t na = 0, nr = 0;
        if (!added || !removed) {
            free(added);
            free(removed);
            free_subs(set, m);
            return -ENOMEM;
        }
        for (size_t i = 0; i < m; i++) {
            const struct sub *old = find_sub(s->subs, s->nsubs, set[i].filter, set[i].len);
            if (!old || old->qos != set[i].qos)
                added[na++] = set[i];
        }
        for (size_t i = 0; i < s->nsubs; i++)
            if (!find_sub(set, m, s->subs[i].filter, s->subs[i].len))
                removed[nr++] = s->subs[i];
        send_subs(s, removed, nr, true);
        send_subs(s, added, na, false);
        free(added);
        free(removed);
    }
    free_subs(s->subs, s->nsubs);
    s->subs = set;
    s->nsubs = m;
    return 0;
}

int wisp_msess_ack(struct wisp_msess *s, uint16_t pid, int qos)
{
    if (!s || pid == 0 || qos < 1 || qos > 2)
        return -EINVAL;
    if (s->state != ST_UP || s->fail_pending)
        return -ENOTCONN;
    uint8_t *st = &s->pid_state[pid];
    if (*st != (qos == 1 ? PID_QOS1_WAIT : PID_QOS2_WAIT)) {
        if (*st == PID_QOS1_WAIT || *st == PID_QOS2_WAIT)
            return -EINVAL; /* pending, but at the other QoS */
        return -ENOTCONN;   /* not from this connection (or already acked) */
    }
    uint8_t pkt[4];
    size_t n;
    if (qos == 1) {
        n = mqtt_encode_ack(pkt, sizeof(pkt), MQTT_PUBACK, pid);
        *st = PID_FREE;
        s->inflight--;
    } else {
        n = mqtt_encode_ack(pkt, sizeof(pkt), MQTT_PUBREC, pid);
        *st = PID_QOS2_REC;
    }
    s->st.acked++;
    send_small(s, pkt, n);
    return 0;
}

int wisp_msess_publish(struct wisp_msess *s, const char *topic, const void *payload, size_t len,
                       int qos, bool retain, const char *msg_id, uint64_t token)
{
    if (!s || !topic || (len > 0 && !payload))
        return -EINVAL;
    const char *why = NULL;
    size_t tlen = strlen(topic);
    if (!wisp_topic_name_valid(topic, tlen, &why)) {
        log_error("cannot publish to '%.200s': %s", topic, why);
        return -EINVAL;
    }
    if (qos < 0 || qos > 2) {
        log_error("cannot publish to '%.200s': QoS %d is not 0, 1 or 2", topic, qos);
        return -EINVAL;
    }
    bool v5 = s->version == 5;
    size_t idlen = msg_id ? strlen(msg_id) : 0;
    if (v5 && msg_id && (idlen > MQTT_MAX_STRING || !wisp_utf8_valid(msg_id, idlen))) {
        log_error("cannot publish to '%.200s': the message id is not UTF-8 of at most 65535 "
                  "bytes",
                  topic);
        return -EINVAL;
    }
    if (s->state != ST_UP || s->fail_pending)
        return -ENOTCONN;
    if (qos > s->server_max_qos || (retain && !s->server_retain)) {
        log_error("cannot publish to '%.200s': the broker %s", topic,
                  retain && !s->server_retain ? "does not support retained messages"
                  : s->server_max_qos == 0    ? "supports QoS 0 only"
                                              : "supports QoS 0 and 1 only");
        return -EINVAL;
    }
    struct mqtt_pubmsg m = {
        .topic = topic,
        .topic_len = tlen,
        .payload = payload,
        .payload_len = len,
        .qos = (uint8_t)qos,
        .retain = retain,
        .pid = qos ? 1 : 0, /* for the size; taken below */
    };
    if (v5 && msg_id) {
        m.user_key = "wisp-id";
        m.user_key_len = 7;
        m.user_value = msg_id;
        m.user_value_len = idlen;
    }
    size_t n = mqtt_encode_publish(NULL, 0, s->version, &m);
    if (n == 0 || n > s->server_max_packet) {
        log_error("cannot publish %zu bytes to '%.200s': the packet exceeds %s", len, topic,
                  n ? "the broker's Maximum Packet Size" : "the MQTT limit");
        return -EINVAL;
    }
    if (qos > 0 && (s->npub >= s->out_window || s->pids_used >= NPIDS - 1))
        return -ENOBUFS;
    if (qos == 2 && !v5 && s->nq2 >= V4_QOS2_WINDOW)
        return -ENOBUFS;
    if (s->out_len - s->out_off >= PUB_CAP && s->npub + s->q0_n > 0)
        return -ENOBUFS;
    if (qos == 0 && !q0_reserve(s))
        return -ENOMEM;
    if (qos > 0) {
        m.pid = take_pid(s, qos == 1 ? OP_PUBACK : OP_PUBREC);
        if (!m.pid)
            return -ENOMEM;
    }
    uint8_t *p = out_grow(s, n);
    if (!p) {
        free_pid(s, m.pid);
        return -ENOMEM;
    }
    (void)mqtt_encode_publish(p, n, s->version, &m);
    s->out_len += n;
    s->out_total += n;
    if (n > s->pub_max_len)
        s->pub_max_len = n;
    if (qos == 0) {
        *q0_at(s, s->q0_n) = (struct q0ent){token, s->out_total};
        s->q0_n++;
    } else {
        s->op[m.pid].token = token;
        s->op[m.pid].end = s->out_total;
        link_pub(s, m.pid);
    }
    s->last_tx_ns = wisp_mono_ns();
    schedule_flush(s);
    return 0;
}

size_t wisp_msess_inflight(const struct wisp_msess *s)
{
    return s ? (size_t)s->npub + s->q0_n : 0;
}

void wisp_msess_pause(struct wisp_msess *s, bool paused)
{
    if (!s || s->paused == paused)
        return;
    s->paused = paused;
    log_debug("%s reading", paused ? "pausing" : "resuming");
    if (!paused) {
        /* We did not read while paused: the keepalive clock starts now. */
        s->last_rx_ns = wisp_mono_ns();
        if (s->in_off < s->in_len && s->state == ST_UP)
            s->rx_backlog = true;
    }
    set_interest(s);
}

int wisp_msess_next_timeout_ms(const struct wisp_msess *s, uint64_t now_ns)
{
    if (!s)
        return -1;
    if (s->fail_pending || (s->rx_backlog && !s->paused) || q0_written(s) || tls_pending(s))
        return 0;
    uint64_t due = UINT64_MAX;
    if (s->state != ST_UP) {
        due = s->deadline_ns;
    } else if (s->ka_s > 0) {
        uint64_t k = (uint64_t)s->ka_s * 1000000000u;
        due = s->last_tx_ns + k;
        if (!s->paused) {
            if (!s->ping_out && s->last_rx_ns + k < due)
                due = s->last_rx_ns + k;
            if (s->last_rx_ns + k + k / 2 < due)
                due = s->last_rx_ns + k + k / 2;
        }
    }
    if (due == UINT64_MAX)
        return -1;
    if (due <= now_ns)
        return 0;
    uint64_t ms = (due - now_ns + 999999u) / 1000000u;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

void wisp_msess_tick(struct wisp_msess *s, uint64_t now_ns)
{
    if (!s)
        return;
    if (s->rx_backlog && !s->paused && !s->fail_pending)
        process_input(s);
    if (tls_pending(s) && !s->rx_backlog)
        read_input(s);
    if (s->fail_pending) {
        /* handled below */
    } else if (s->state == ST_IDLE) {
        if (now_ns >= s->deadline_ns)
            start_connect(s, now_ns);
    } else if (s->state != ST_UP) {
        if (now_ns >= s->deadline_ns)
            fail(s, 0, false, "%s timed out after %d ms",
                 s->state == ST_CONNECTING ? "TCP connect"
                 : s->state == ST_TLS      ? "TLS handshake"
                                           : "waiting for CONNACK",
                 CONNECT_TIMEOUT_MS);
    } else if (s->ka_s > 0) {
        uint64_t k = (uint64_t)s->ka_s * 1000000000u;
        if (!s->paused && now_ns >= s->last_rx_ns + k + k / 2) {
            fail(s, 0, false, "no packet from the broker for %.1f s (keepalive %d s)",
                 (double)(now_ns - s->last_rx_ns) / 1e9, s->ka_s);
        } else if (now_ns >= s->last_tx_ns + k ||
                   (!s->paused && !s->ping_out && now_ns >= s->last_rx_ns + k)) {
            uint8_t pkt[2];
            size_t n = mqtt_encode_pingreq(pkt, sizeof(pkt));
            uint8_t *p = out_reserve(s, n);
            if (p) {
                memcpy(p, pkt, n);
                s->ping_out = true;
                s->st.pings++;
                out_commit(s, n, now_ns);
            }
        }
    }
    report_written(s);
    if (!s->fail_pending)
        set_interest(s);
    close_conn(s, now_ns);
}

bool wisp_msess_subscribed(const struct wisp_msess *s)
{
    if (!s || s->state != ST_UP)
        return false;
    for (const struct req *r = s->reqs; r; r = r->next)
        if (!r->unsub)
            return false;
    return true;
}

void wisp_msess_get_stats(const struct wisp_msess *s, struct wisp_msess_stats *out)
{
    if (!s) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = s->st;
}
