#define WISP_LOG_MODULE "durable"
#include "durable.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "log.h"
#include "loop.h"
#include "mqtt.h"
#include "msess.h"
#include "pool.h"
#include "store.h"
#include "util.h"

/* Outbox messages handed to Paho and not yet completed, at most. */
enum { OUT_WINDOW = 256 };
/* Changes nothing waits for (metering records of non-durable events,
 * deletions of delivered outbox messages) are committed within this. */
#define LAZY_COMMIT_NS (1000ULL * 1000000ULL)

struct ack {
    uint16_t pid;
    uint8_t qos;
};

struct wisp_durable {
    const struct wisp_config *cfg;
    struct wisp_loop *loop;
    struct wisp_store *store;
    struct wisp_pool *pool;
    struct wisp_mqtt *mqtt;
    struct wisp_msess *sess;
    struct wisp_agent *agent; /* cloud sync: wisp/v1/... messages go there; NULL */
    char *sess_client_id;
    int sess_error; /* why the last attempt to create the session failed (0: none) */
    bool intake_stopped, paused;
    bool all;      /* the session carries every subscription and publish (mqtt.client wisp) */
    size_t n_subs; /* filters subscribed on the session */
    enum wisp_durability durability;
    /* Acknowledgements waiting for the next commit. */
    struct ack *acks;
    size_t n_acks, cap_acks;
    uint64_t first_pending_ns; /* when the batch got its first change (0: none) */
    size_t pass_arrivals;      /* durable messages taken in the current loop pass */
    bool urgent;               /* the batch holds changes something waits for */
    uint64_t maintained_ns;    /* last wisp_store_maintain */
    /* Outbox sending: entries up to sent_upto were handed to Paho; a failed
     * one rewinds to just before it once the window has drained. */
    uint64_t sent_upto;
    uint64_t rewind_to; /* 0: no rewind pending */
    bool rewind;
    unsigned inflight;
    uint64_t delivered, resent, duplicates, commits;
};

int wisp_durable_create(struct wisp_loop *loop, const struct wisp_config *cfg,
                        struct wisp_durable **out, char *err, size_t errlen)
{
    struct wisp_durable *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->cfg = cfg;
    d->loop = loop;
    d->durability = strcmp(cfg->durability, "none") == 0    ? WISP_DURABILITY_NONE
                    : strcmp(cfg->durability, "batch") == 0 ? WISP_DURABILITY_BATCH
                                                            : WISP_DURABILITY_SYNC;
    struct wisp_store_config sc = {
        .dir = cfg->data,
        .map_max = (uint64_t)cfg->map_max_mb << 20,
        .durability = d->durability,
        .max_fn_bytes = (uint64_t)cfg->state_max_kb << 10,
        .outbox_max_bytes = (uint64_t)cfg->outbox_max_mb << 20,
        .outbox_full = strcmp(cfg->outbox_full, "drop_oldest") == 0 ? WISP_OUTBOX_DROP_OLDEST
                                                                    : WISP_OUTBOX_REFUSE,
        /* Cloud sync: records leave only when the control plane has them. */
        .meter_keep_unacked = cfg->cloud_enabled,
    };
    int rc = wisp_store_open(&sc, &d->store, err, errlen);
    if (rc != 0) {
        free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void wisp_durable_take_all_mqtt(struct wisp_durable *d)
{
    d->all = true;
}

int wisp_durable_publish(struct wisp_durable *d, const char *topic, const void *payload, size_t len,
                         int qos, int retain)
{
    if (!d->sess)
        return -ENOTCONN;
    return wisp_msess_publish(d->sess, topic, payload, len, qos, retain != 0, NULL, 0);
}

void wisp_durable_set_agent(struct wisp_durable *d, struct wisp_agent *agent)
{
    d->agent = agent;
}

int wisp_durable_publish_agent(struct wisp_durable *d, const char *topic, const void *payload,
                               size_t len, int qos, bool retain, uint64_t token)
{
    if (!d->sess)
        return -ENOTCONN;
    return wisp_msess_publish(d->sess, topic, payload, len, qos, retain, NULL,
                              token | WISP_AGENT_TOKEN_BIT);
}

struct wisp_store *wisp_durable_store(struct wisp_durable *d)
{
    return d ? d->store : NULL;
}

int wisp_durable_attach(struct wisp_durable *d, struct wisp_pool *pool, struct wisp_mqtt *mqtt)
{
    d->pool = pool;
    d->mqtt = mqtt;
    if (d->all && !d->sess && !d->sess_error)
        wisp_durable_set_subscriptions(d, NULL, NULL, 0); /* connect, for publishing */
    if (d->all && !d->sess)
        return d->sess_error; /* logged: a bad TLS file, say; wispd cannot work without it */
    int rc = wisp_pool_recover(pool);
    return rc < 0 ? rc : 0;
}

/* ---- durable intake ---- */

static int add_ack(struct wisp_durable *d, uint16_t pid, int qos)
{
    if (d->n_acks == d->cap_acks) {
        size_t ncap = d->cap_acks ? d->cap_acks * 2 : 64;
        struct ack *na = realloc(d->acks, ncap * sizeof(*na));
        if (!na)
            return -ENOMEM;
        d->acks = na;
        d->cap_acks = ncap;
    }
    d->acks[d->n_acks++] = (struct ack){.pid = pid, .qos = (uint8_t)qos};
    return 0;
}

static void on_message(void *ud, uint16_t pid, int qos, bool dup, bool retain, const char *topic,
                       size_t topic_len, const void *payload, size_t len)
{
    struct wisp_durable *d = ud;
    if (d->intake_stopped)
        return; /* not acknowledged: the broker keeps it */
    /* Fleet sync first: bundles are larger than events.max_payload_kb, and
     * the agent's topics are not events. Desired states and bundles are
     * retained and meter batches are resent, so no commit is waited for. */
    if (d->agent && wisp_agent_on_message(d->agent, topic, topic_len, payload, len)) {
        if (qos > 0)
            (void)wisp_msess_ack(d->sess, pid, qos);
        return;
    }
    char *t = wisp_strndup(topic, topic_len);
    if (!t)
        return;
    if (len > (size_t)d->cfg->max_payload_kb * 1024u) {
        log_warn("dropped a %zu-byte message on %s: larger than events.max_payload_kb", len, t);
        free(t);
        if (qos > 0)
            (void)wisp_msess_ack(d->sess, pid, qos);
        return;
    }
    /* Durable triggers: stored in the inbox, acknowledged after the commit. */
    bool durable = wisp_pool_matches_durable(d->pool, t);
    if (durable && qos > 0) {
        uint64_t h = wisp_fnv1a64(WISP_FNV1A64_INIT, topic, topic_len);
        h = wisp_fnv1a64(h, "\0", 1);
        h = wisp_fnv1a64(h, payload, len);
        int rc = wisp_store_dedupe(d->store, pid, h, dup);
        if (rc == 1) {
            d->duplicates++;
            free(t);
            (void)add_ack(d, pid, qos); /* already stored: acknowledge again */
            return;
        }
        if (rc < 0) {
            log_error("cannot record message %u on %s: %s; it stays with the broker", pid, t,
                      strerror(-rc));
            free(t);
            return;
        }
    }
    d->pass_arrivals++;
    if (durable) {
        int rc = wisp_pool_submit_durable(d->pool, t, payload, len, qos, retain);
        if (rc < 0) {
            log_error("cannot store a durable event: %s; it stays with the broker", strerror(-rc));
            free(t);
            return;
        }
    }
    /* Everything else (mqtt.client wisp): straight to the functions. */
    if (d->all)
        (void)wisp_pool_submit_mqtt(d->pool, t, payload, len, qos, retain);
    free(t);
    if (qos > 0 && durable && add_ack(d, pid, qos) != 0)
        log_error("out of memory: message %u is acknowledged at the next connection", pid);
    else if (qos > 0 && !durable)
        (void)wisp_msess_ack(d->sess, pid, qos);
}

static void send_outbox(struct wisp_durable *d);

static void on_sess_connected(void *ud, bool session_present)
{
    struct wisp_durable *d = ud;
    log_info("durable session up (%s session)", session_present ? "resumed" : "new");
    if (d->agent)
        wisp_agent_on_connected(d->agent);
    send_outbox(d);
}

static void on_sess_published(void *ud, uint64_t token, bool ok)
{
    wisp_durable_on_delivered(ud, token, ok);
}

static void on_sess_lost(void *ud, const char *why)
{
    struct wisp_durable *d = ud;
    /* Acks for that connection are void: the broker redelivers, and the
     * dedupe table recognises what was already stored. */
    d->n_acks = 0;
    if (d->agent)
        wisp_agent_on_lost(d->agent);
    log_info("durable session lost: %s", why);
}

/* Larger than events.max_payload_kb, so that an oversized message arrives
 * to be reported and dropped rather than withheld; with cloud sync, large
 * enough for a bundle of cloud.max_bundle_kb with its signature. */
static uint32_t max_packet(const struct wisp_config *c)
{
    uint64_t m = (uint64_t)c->max_payload_kb * 4096u + 65536u;
    if (c->cloud_enabled) {
        uint64_t b = (uint64_t)c->cloud_max_bundle_kb * 1024u + 16384u;
        if (b > m)
            m = b;
    }
    return m < 268435455u ? (uint32_t)m : 268435455u;
}

void wisp_durable_set_subscriptions(struct wisp_durable *d, const char *const *filters,
                                    const int *qos, size_t n)
{
    if (d->intake_stopped)
        return;
    if (!d->sess && n == 0 && !d->all)
        return;
    if (!d->sess) {
        const struct wisp_config *c = d->cfg;
        const char *will_topic = NULL, *will_payload = NULL;
        if (d->agent)
            wisp_agent_will(d->agent, &will_topic, &will_payload);
        size_t idlen = strlen(c->client_id) + 9;
        free(d->sess_client_id); /* from a failed attempt */
        d->sess_client_id = malloc(idlen);
        d->sess_error = -ENOMEM;
        if (!d->sess_client_id)
            return;
        /* With Paho beside it, the session needs a client id of its own. */
        (void)snprintf(d->sess_client_id, idlen, "%s%s", c->client_id, d->all ? "" : "-durable");
        struct wisp_msess_config mc = {
            .uri = c->broker,
            .client_id = d->sess_client_id,
            .version = c->mqtt_version == 5 ? 5 : 4,
            .keepalive_s = c->keepalive_s,
            .username = c->username,
            .password = c->password,
            .reconnect_min_ms = c->reconnect_min_ms,
            .reconnect_max_ms = c->reconnect_max_ms,
            /* Larger than events.max_payload_kb, so that an oversized message
             * arrives to be reported and dropped rather than withheld. */
            .max_packet = max_packet(c),
            .session_expiry_s = (uint32_t)c->durable_expiry_s, /* 0: never */
            .will_topic = will_topic,
            .will_payload = will_payload,
            .will_len = will_payload ? strlen(will_payload) : 0,
            .will_qos = 1,
            .will_retain = true,
            .tls_ca = c->tls_ca,
            .tls_cert = c->tls_cert,
            .tls_key = c->tls_key,
            .tls_insecure = c->tls_insecure,
        };
        struct wisp_msess_hooks h = {
            .on_message = on_message,
            .on_connected = on_sess_connected,
            .on_lost = on_sess_lost,
            .on_published = on_sess_published,
            .ud = d,
        };
        char err[256];
        d->sess_error = wisp_msess_create(d->loop, &mc, &h, &d->sess, err, sizeof(err));
        if (d->sess_error != 0) {
            log_error("durable session: %s", err);
            return;
        }
    }
    d->n_subs = n;
    struct wisp_msess_sub *subs = calloc(n ? n : 1, sizeof(*subs));
    if (!subs)
        return;
    for (size_t i = 0; i < n; i++)
        subs[i] = (struct wisp_msess_sub){.filter = filters[i], .qos = qos[i]};
    if (wisp_msess_set_subscriptions(d->sess, subs, n) != 0)
        log_error("could not update the durable subscriptions");
    free(subs);
}

void wisp_durable_stop_intake(struct wisp_durable *d)
{
    d->intake_stopped = true;
}

/* ---- outbox ---- */

/* One outbox message, through the durable session when there is one (it
 * sets TCP_NODELAY; Paho does not, and then each QoS 1 message waits for a
 * delayed ACK), else through Paho. */
static int send_one(struct wisp_durable *d, const struct wisp_out_view *v)
{
    int qos = v->qos > 0 ? v->qos : 1;
    if (d->sess)
        return wisp_msess_publish(d->sess, v->topic, v->payload, v->len, qos, v->retain != 0,
                                  v->msg_id, v->seq);
    return wisp_mqtt_publish_tracked(d->mqtt, v->topic, v->payload, v->len, qos, v->retain,
                                     v->msg_id, v->seq);
}

static void send_outbox(struct wisp_durable *d)
{
    if (!d->mqtt && !d->sess)
        return;
    if (d->rewind) {
        if (d->inflight > 0)
            return; /* wait for the window to drain, then resend in order */
        d->sent_upto = d->rewind_to;
        d->rewind = false;
    }
    struct wisp_out_view v[64];
    while (d->inflight < OUT_WINDOW) {
        size_t want = OUT_WINDOW - d->inflight;
        int n = wisp_store_outbox_next(d->store, d->sent_upto, v,
                                       want < WISP_ARRAY_LEN(v) ? want : WISP_ARRAY_LEN(v));
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++) {
            int rc = send_one(d, &v[i]);
            if (rc == -EINVAL) {
                /* Cannot ever be sent (it was checked when stored): drop it. */
                log_error("outbox: message %llu to %s cannot be sent; dropped",
                          (unsigned long long)v[i].seq, v[i].topic);
                (void)wisp_store_outbox_del(d->store, v[i].seq);
            } else if (rc != 0) {
                return; /* not connected or the window is full: go on at the next
                           completion or connect */
            } else {
                d->inflight++;
            }
            d->sent_upto = v[i].seq;
        }
    }
}

void wisp_durable_on_delivered(struct wisp_durable *d, uint64_t token, bool ok)
{
    if (token == 0)
        return; /* a message published directly (wisp_durable_publish) */
    if (token & WISP_AGENT_TOKEN_BIT) {
        if (d->agent)
            wisp_agent_on_published(d->agent, token, ok);
        return;
    }
    if (d->inflight > 0)
        d->inflight--;
    if (ok) {
        d->delivered++;
        (void)wisp_store_outbox_del(d->store, token);
    } else {
        uint64_t before = token - 1;
        if (!d->rewind || before < d->rewind_to)
            d->rewind_to = before;
        d->rewind = true;
        d->resent++;
    }
}

void wisp_durable_on_connected(struct wisp_durable *d)
{
    send_outbox(d);
}

/* ---- commits ---- */

static bool commit_due(const struct wisp_durable *d, uint64_t now)
{
    if (wisp_store_failed(d->store))
        return true; /* the commit reports it, and wispd stops like after a crash */
    if (wisp_store_pending(d->store) == 0 && d->n_acks == 0)
        return false;
    if (!d->urgent && d->n_acks == 0)
        return now - d->first_pending_ns >= LAZY_COMMIT_NS;
    if (d->durability != WISP_DURABILITY_BATCH)
        return true;
    /* A pass in which no durable message came in: either the input paused
     * or the broker's flow control (its in-flight window) holds the rest
     * back until we acknowledge; waiting longer would only add latency.
     * While messages keep coming, changes pile up to the window. */
    if (d->pass_arrivals == 0)
        return true;
    return wisp_store_pending(d->store) >= (size_t)d->cfg->batch_events ||
           now - d->first_pending_ns >= (uint64_t)d->cfg->batch_ms * 1000000u;
}

int wisp_durable_after_pass(struct wisp_durable *d, uint64_t now)
{
    if (d->sess)
        wisp_msess_tick(d->sess, now);
    if (now - d->maintained_ns >= 60ULL * 1000000000ULL) {
        d->maintained_ns = now; /* stale readers (a killed `wisp state`) are cleared */
        wisp_store_maintain(d->store);
    }
    if (d->pool && wisp_pool_take_urgent(d->pool))
        d->urgent = true;
    if (wisp_store_pending(d->store) > 0 && !d->first_pending_ns)
        d->first_pending_ns = now;
    bool due = commit_due(d, now);
    d->pass_arrivals = 0;
    if (due) {
        bool had = wisp_store_pending(d->store) > 0;
        int rc = wisp_store_commit(d->store);
        if (rc != 0) {
            log_error("commit failed: %s; stopping (the inbox keeps every unfinished event)",
                      strerror(-rc));
            return rc;
        }
        d->commits += had;
        d->first_pending_ns = 0;
        d->urgent = false;
        for (size_t i = 0; i < d->n_acks && d->sess; i++)
            (void)wisp_msess_ack(d->sess, d->acks[i].pid, d->acks[i].qos);
        d->n_acks = 0;
    }
    send_outbox(d);
    if (d->sess) {
        /* Backpressure: stop reading while many stored events wait. */
        bool full = wisp_store_inbox_count(d->store) > (size_t)d->cfg->inbox_max;
        if (full != d->paused) {
            d->paused = full;
            wisp_msess_pause(d->sess, full);
        }
    }
    return 0;
}

int wisp_durable_next_timeout_ms(struct wisp_durable *d, uint64_t now)
{
    int t = d->sess ? wisp_msess_next_timeout_ms(d->sess, now) : -1;
    bool lazy = !d->urgent && d->n_acks == 0;
    if (d->first_pending_ns && (lazy || d->durability == WISP_DURABILITY_BATCH)) {
        uint64_t due =
            d->first_pending_ns + (lazy ? LAZY_COMMIT_NS : (uint64_t)d->cfg->batch_ms * 1000000u);
        int b = due > now ? (int)((due - now + 999999u) / 1000000u) : 0;
        if (t < 0 || b < t)
            t = b;
    }
    return t;
}

bool wisp_durable_settled(const struct wisp_durable *d)
{
    return d->n_acks == 0 && !d->urgent;
}

bool wisp_durable_subscribed(const struct wisp_durable *d)
{
    return !d->sess || d->n_subs == 0 || wisp_msess_subscribed(d->sess);
}

void wisp_durable_log_stats(const struct wisp_durable *d)
{
    wisp_log_emit_fields(WISP_LOG_INFO, "stats",
                         "store commits=%llu inbox=%zu outbox=%zu outbox_bytes=%llu "
                         "outbox_dropped=%llu delivered=%llu resent=%llu duplicates=%llu meter=%zu",
                         (unsigned long long)d->commits, wisp_store_inbox_count(d->store),
                         wisp_store_outbox_count(d->store),
                         (unsigned long long)wisp_store_outbox_bytes(d->store),
                         (unsigned long long)wisp_store_outbox_dropped(d->store),
                         (unsigned long long)d->delivered, (unsigned long long)d->resent,
                         (unsigned long long)d->duplicates, wisp_store_meter_count(d->store));
}

void wisp_durable_destroy(struct wisp_durable *d)
{
    if (!d)
        return;
    wisp_msess_destroy(d->sess);
    if (d->store && wisp_store_commit(d->store) != 0)
        log_error("the last commit failed; the inbox brings its events back at the next start");
    wisp_store_close(d->store);
    free(d->acks);
    free(d->sess_client_id);
    free(d);
}
