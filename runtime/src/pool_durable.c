/*
 * The pool's side of the store: durable intake (events into the inbox),
 * recovery after a restart, answering ctx.state reads, and turning a
 * finished invocation into one atomic store update (state writes, outbox
 * messages, metering record, inbox removal or dead letter).
 *
 * Which publishes go through the outbox: those of durable events and of
 * any invocation that wrote state (its messages must not leave before its
 * writes are committed). Others are published at once, as before: a
 * non-durable event has at-most-once effects and the lowest latency.
 */
#define WISP_LOG_MODULE "pool"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "log.h"
#include "pool_internal.h"
#include "state.h"
#include "store.h"
#include "util.h"

#define MQTT_EVENT_TYPE "wisp.mqtt.message"

bool wisp_pool_matches_durable(const struct wisp_pool *p, const char *topic)
{
    size_t tlen = strlen(topic);
    for (const struct fn *fn = p->fns; fn; fn = fn->next)
        if (!fn->retired && wisp_fn_matches(fn, topic, tlen, true))
            return true;
    return false;
}

int wisp_pool_submit_durable(struct wisp_pool *p, const char *topic, const void *payload,
                             size_t len, int qos, int retain)
{
    if (!p->cfg.store)
        return -ENOTSUP;
    size_t tlen = strlen(topic);
    struct blob *b = NULL;
    int matched = 0;
    for (struct fn *fn = p->fns; fn; fn = fn->next) {
        if (fn->retired || !wisp_fn_matches(fn, topic, tlen, true))
            continue;
        if (!b && !(b = wisp_blob_new(topic, payload, len)))
            return -ENOMEM;
        char id[40], now[32];
        wisp_pool_next_id(p, id, sizeof(id));
        wisp_rfc3339(wisp_real_ns(), now, sizeof(now));
        struct wisp_inbox_rec rec = {
            .fn = fn->spec->name,
            .event_id = id,
            .time = now,
            .type = MQTT_EVENT_TYPE,
            .subject = topic,
            .payload = payload,
            .payload_len = len,
            .qos = qos,
            .retain = retain,
        };
        uint64_t inbox_id;
        int rc = wisp_store_inbox_put(p->cfg.store, &rec, &inbox_id);
        if (rc != 0) {
            if (b->refs == 0)
                wisp_blob_free(b);
            return rc;
        }
        struct pev *ev = wisp_pool_enqueue(p, fn, b, id, now, qos, retain, true);
        if (!ev) {
            /* Out of memory: the event is stored and comes back at the
             * next start; nothing is lost. */
            log_error("%s: out of memory queueing stored event %s", fn->spec->name, id);
            continue;
        }
        ev->inbox_id = inbox_id;
        if (inbox_id > p->inbox_seen)
            p->inbox_seen = inbox_id;
        matched++;
    }
    if (b && b->refs == 0)
        wisp_blob_free(b);
    return matched;
}

struct recover_ctx {
    struct wisp_pool *p;
    size_t queued, orphaned;
    uint64_t max_id;
};

static int recover_one(void *ud, uint64_t id, const struct wisp_inbox_rec *rec)
{
    struct recover_ctx *rc = ud;
    if (id <= rc->p->inbox_seen)
        return 0; /* queued already */
    struct fn *fn = wisp_pool_find_active(rc->p, rec->fn);
    if (!fn) {
        if (rc->orphaned++ == 0)
            log_warn("inbox: events for function %s, which is not loaded, stay stored", rec->fn);
        return 0;
    }
    struct blob *b = wisp_blob_new(rec->subject, rec->payload, rec->payload_len);
    struct pev *ev = b ? wisp_pool_enqueue(rc->p, fn, b, rec->event_id, rec->time ? rec->time : "",
                                           rec->qos, rec->retain, true)
                       : NULL;
    if (!ev) {
        if (b)
            wisp_blob_free(b);
        return -ENOMEM;
    }
    ev->inbox_id = id;
    ev->attempt = rec->attempts;
    if (id > rc->max_id)
        rc->max_id = id;
    rc->queued++;
    return 0;
}

bool wisp_pool_take_urgent(struct wisp_pool *p)
{
    bool u = p->urgent > 0;
    p->urgent = 0;
    return u;
}

int wisp_pool_recover(struct wisp_pool *p)
{
    if (!p->cfg.store)
        return 0;
    struct recover_ctx rc = {.p = p};
    int r = wisp_store_inbox_foreach(p->cfg.store, recover_one, &rc);
    if (r != 0)
        return r;
    rc.p->inbox_seen = rc.max_id > rc.p->inbox_seen ? rc.max_id : rc.p->inbox_seen;
    if (rc.queued || rc.orphaned)
        log_info("inbox: %zu stored event(s) queued again, %zu kept for absent functions",
                 rc.queued, rc.orphaned);
    wisp_pool_schedule(p);
    return (int)rc.queued;
}

/* ---- ctx.state reads ---- */

struct keys_ctx {
    struct wisp_buf *b;
};

static int add_key(void *ud, const char *key, size_t klen, const char *val, size_t vlen)
{
    (void)val;
    (void)vlen;
    wisp_state_keys_reply_add(((struct keys_ctx *)ud)->b, key, klen);
    return 0;
}

const char *wisp_pool_state_request(struct exe *e, struct wisp_rd *rd)
{
    struct wisp_state_req req;
    if (wisp_state_decode_req(rd, &req) != 0)
        return "executor sent a malformed state request";
    struct wisp_store *s = e->pool->cfg.store;
    const char *fn = e->fn->spec->name;
    if (req.op == WISP_STATE_GET) {
        const char *val = NULL;
        size_t vlen = 0;
        uint64_t version = 0;
        int rc =
            s ? wisp_store_state_get(s, fn, req.key, req.klen, &val, &vlen, &version) : -ENOTSUP;
        wisp_state_encode_get_reply(&e->wb, rc, val, vlen, version);
    } else {
        wisp_state_keys_reply_begin(&e->wb);
        struct keys_ctx kc = {.b = &e->wb};
        int rc =
            s ? wisp_store_state_keys(s, fn, req.key, req.klen, req.limit, add_key, &kc) : -ENOTSUP;
        wisp_state_keys_reply_end(&e->wb, rc);
    }
    return e->wb.oom ? "out of memory answering a state request" : NULL;
}

/* ---- applying a finished invocation ---- */

char *wisp_pool_envelope(const struct wisp_pool *p, const struct fn *fn, const char *msg_id,
                         const char *topic, const char *payload, size_t len, size_t *out_len)
{
    char source[200], now[32];
    (void)snprintf(source, sizeof(source), "wisp://%s/%s", p->cfg.device ? p->cfg.device : "",
                   fn->spec->name);
    wisp_rfc3339(wisp_real_ns(), now, sizeof(now));
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "specversion", "1.0");
    cJSON_AddStringToObject(o, "id", msg_id);
    cJSON_AddStringToObject(o, "source", source);
    cJSON_AddStringToObject(o, "type", "wisp.output");
    cJSON_AddStringToObject(o, "subject", topic);
    cJSON_AddStringToObject(o, "time", now);
    bool text = wisp_utf8_valid(payload, len);
    cJSON *data = text ? cJSON_ParseWithLength(payload, len) : NULL;
    if (data) {
        cJSON_AddStringToObject(o, "datacontenttype", "application/json");
        cJSON_AddItemToObject(o, "data", data);
    } else if (text) {
        char *copy = wisp_strndup(payload, len);
        cJSON_AddStringToObject(o, "datacontenttype", "text/plain");
        if (copy)
            cJSON_AddStringToObject(o, "data", copy);
        free(copy);
    } else {
        char *b64 = wisp_base64(payload, len);
        if (b64)
            cJSON_AddStringToObject(o, "data_base64", b64);
        free(b64);
    }
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (out)
        *out_len = strlen(out);
    return out;
}

struct outs {
    struct wisp_out_msg *m;
    char *ids;
    char **wrapped; /* envelopes, when the function asks for them */
    size_t n;
};

static void outs_free(struct outs *o)
{
    for (size_t i = 0; o->wrapped && i < o->n; i++)
        free(o->wrapped[i]);
    free(o->wrapped);
    free(o->m);
    free(o->ids);
}

/* Outbox messages for the result's publishes, ids "<event id>/<n>". */
static int make_outs(const struct wisp_pool *p, const struct fn *fn, const struct pev *ev,
                     const struct wisp_result *res, struct outs *o)
{
    size_t idlen = strlen(ev->id) + 12;
    o->n = res->n_pubs;
    o->m = calloc(res->n_pubs, sizeof(*o->m));
    o->ids = malloc(res->n_pubs * idlen);
    if (fn->spec->envelope)
        o->wrapped = calloc(res->n_pubs, sizeof(*o->wrapped));
    if (!o->m || !o->ids || (fn->spec->envelope && !o->wrapped))
        return -ENOMEM;
    for (size_t i = 0; i < res->n_pubs; i++) {
        char *id = o->ids + i * idlen;
        (void)snprintf(id, idlen, "%s/%zu", ev->id, i);
        const char *payload = res->pubs[i].payload;
        size_t len = res->pubs[i].payload_len;
        if (o->wrapped) {
            o->wrapped[i] = wisp_pool_envelope(p, fn, id, res->pubs[i].topic, payload, len, &len);
            if (!o->wrapped[i])
                return -ENOMEM;
            payload = o->wrapped[i];
        }
        o->m[i] = (struct wisp_out_msg){
            .topic = res->pubs[i].topic,
            .payload = payload,
            .len = len,
            /* The outbox delivers at least once: QoS 0 is raised to 1. */
            .qos = res->pubs[i].qos > 0 ? res->pubs[i].qos : 1,
            .retain = res->pubs[i].retain,
            .msg_id = id,
        };
    }
    return 0;
}

/* The handler broke a store limit (state size): its result becomes an
 * error and its effects are dropped. */
static void to_error(struct wisp_result *res, const char *msg)
{
    char *copy = wisp_strndup(msg, strlen(msg));
    bool borrowed = res->borrowed;
    res->borrowed = true; /* do not free frame memory */
    free(res->error);
    res->error = NULL;
    free(res->pubs);
    res->pubs = NULL;
    res->n_pubs = res->cap_pubs = 0;
    res->pub_bytes = 0;
    free(res->reads);
    free(res->writes);
    res->reads = NULL;
    res->writes = NULL;
    res->n_reads = res->n_writes = 0;
    res->borrowed = borrowed;
    res->outcome = WISP_OUTCOME_ERROR;
    res->error = copy;
}

enum wisp_apply wisp_pool_apply(struct wisp_pool *p, struct fn *fn, struct pev *ev,
                                struct wisp_result *res, bool cold)
{
    struct wisp_store *s = p->cfg.store;
    if (!s || res->outcome == WISP_OUTCOME_REJECTED)
        return WISP_APPLY_DONE;
    bool ok = res->outcome == WISP_OUTCOME_OK;
    bool final = !ok && ev->attempt + 1 > fn->spec->retry_max;
    bool qos1 = false;
    for (size_t i = 0; p->cfg.outbox_qos1 && i < res->n_pubs && !qos1; i++)
        qos1 = res->pubs[i].qos > 0;
    bool via_outbox = ok && res->n_pubs > 0 && (ev->inbox_id || res->n_writes > 0 || qos1);
    uint64_t dur_us = res->duration_ns / 1000u;
    struct wisp_meter_rec meter = {
        .fn = fn->spec->name,
        .version = fn->spec->version,
        .event_id = ev->id,
        .time = ev->time,
        .billed_ms = (res->duration_ns + 999999u) / 1000000u,
        .duration_us = dur_us,
        .mem_peak_bytes = res->mem_peak_bytes,
        .bytes_in = ev->blob->len,
        .bytes_out = ok ? res->pub_bytes : 0,
        .outcome = wisp_outcome_name(res->outcome),
        .cold = cold,
        .mem_limit_kb = fn->spec->memory_kb,
    };
    if (meter.billed_ms == 0)
        meter.billed_ms = 1;
    struct wisp_inbox_rec dead = {0};
    struct wisp_dlq_rec dlq = {0};
    char now[32];
    struct wisp_commit c = {.fn = fn->spec->name, .meter = &meter};
    if (ok) {
        c.inbox_id = ev->inbox_id;
        c.reads = res->reads;
        c.n_reads = res->n_reads;
        c.writes = res->writes;
        c.n_writes = res->n_writes;
    } else if (final && ev->inbox_id) {
        wisp_rfc3339(wisp_real_ns(), now, sizeof(now));
        dead = (struct wisp_inbox_rec){
            .fn = fn->spec->name,
            .event_id = ev->id,
            .time = ev->time,
            .type = MQTT_EVENT_TYPE,
            .subject = ev->blob->subject,
            .payload = ev->blob->payload,
            .payload_len = ev->blob->len,
            .qos = ev->qos,
            .retain = ev->retain,
            .attempts = ev->attempt + 1,
        };
        dlq = (struct wisp_dlq_rec){.event = &dead, .error = res->error, .last_time = now};
        c.inbox_id = ev->inbox_id;
        c.dlq = &dlq;
    }
    struct outs outs = {0};
    if (via_outbox) {
        if (make_outs(p, fn, ev, res, &outs) != 0) {
            outs_free(&outs);
            log_error("%s: out of memory storing the effects of %s", fn->spec->name, ev->id);
            return WISP_APPLY_WAIT;
        }
        c.outs = outs.m;
        c.n_outs = res->n_pubs;
    }
    char err[256] = "";
    uint64_t first_out = 0;
    int rc = wisp_store_apply(s, &c, &first_out, err, sizeof(err));
    outs_free(&outs);
    switch (rc) {
    case 0:
        break;
    case -EAGAIN:
        log_debug("%s: %s read state that changed meanwhile; running it again", fn->spec->name,
                  ev->id);
        return WISP_APPLY_RERUN;
    case -EFBIG:
        log_warn("%s: %s: %s", fn->spec->name, ev->id, err);
        to_error(res, err);
        return wisp_pool_apply(p, fn, ev, res, cold);
    default:
        if (p->store_waits++ % 1000 == 0)
            log_error("%s: cannot store the effects of %s (%s); trying again later", fn->spec->name,
                      ev->id, err[0] ? err : strerror(-rc));
        return WISP_APPLY_WAIT;
    }
    if (!ok && !final && ev->inbox_id)
        (void)wisp_store_inbox_set_attempts(s, ev->inbox_id, ev->attempt + 1);
    if (c.inbox_id || c.n_writes || c.n_outs || c.dlq)
        p->urgent++;
    return via_outbox ? WISP_APPLY_PUBLISHED : WISP_APPLY_DONE;
}
