/* Metering batches (cloud-sync/README.md "Metering batches"): the store's
 * committed records after the last acknowledged seq, oldest first, at most
 * cloud.meter_batch per batch, one batch in flight, sent again after 5 s
 * without an ack or when the connection comes back. Records are deleted
 * only by an ack ({"upto": S}), in the store's open batch; the durable
 * path commits it within a second (its lazy commit). */
#define WISP_LOG_MODULE "agent"
#include "agent_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define RESEND_NS     (5000ULL * 1000000ULL)
#define ACK_REPORT_NS (1200ULL * 1000000ULL) /* after the lazy commit of an ack */
#define MS(ns)        ((uint64_t)(ns)*1000000ULL)

struct batch {
    char *p;
    size_t len, cap, n;
    uint64_t first, last;
    bool oom;
};

static void put(struct batch *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static int add_record(void *ud, uint64_t seq, const char *json, size_t len)
{
    struct batch *b = ud;
    if (b->n)
        put(b, ",", 1);
    put(b, json, len);
    if (!b->n)
        b->first = seq;
    b->last = seq;
    b->n++;
    return b->oom ? -ENOMEM : 0;
}

/* The first record the store holds tells what was acknowledged before a
 * restart (records are deleted only by acks). */
void agent_meter_init(struct wisp_agent *a)
{
    struct batch b = {0};
    (void)wisp_store_meter_foreach(a->store, 0, 1, add_record, &b);
    a->meter_last = wisp_store_meter_last(a->store);
    a->meter_acked = b.n ? b.first - 1 : a->meter_last;
    a->meter_sent_max = a->meter_acked;
    free(b.p);
}

static void send_batch(struct wisp_agent *a, uint64_t now)
{
    struct batch b = {0};
    put(&b, "{\"device\":", 10);
    cJSON *d = cJSON_CreateString(a->cfg->device);
    char *ds = d ? cJSON_PrintUnformatted(d) : NULL;
    cJSON_Delete(d);
    if (ds)
        put(&b, ds, strlen(ds));
    free(ds);
    put(&b, ",\"records\":[", 12);
    size_t header = b.len;
    int rc = wisp_store_meter_foreach(a->store, a->meter_acked, (size_t)a->cfg->cloud_meter_batch,
                                      add_record, &b);
    a->meter_last_ns = now;
    if (rc || b.oom) {
        log_error("metering: cannot read the records after %llu: %s",
                  (unsigned long long)a->meter_acked, strerror(rc ? -rc : ENOMEM));
    } else if (b.n > 0 && b.len > header) {
        put(&b, "]}", 2);
        rc = b.oom ? -ENOMEM : agent_publish(a, a->topic_meter, b.p, b.len, 1, false);
        if (rc == 0) {
            log_debug("metering: sent records %llu..%llu (%zu)", (unsigned long long)b.first,
                      (unsigned long long)b.last, b.n);
            a->meter_inflight = true;
            a->meter_batch_upto = b.last;
            if (b.last > a->meter_sent_max)
                a->meter_sent_max = b.last;
            a->meter_sent_ns = now;
        }
    }
    free(b.p);
}

void agent_meter_tick(struct wisp_agent *a, uint64_t now)
{
    if (!a->connected)
        return;
    if (a->meter_inflight) {
        if (now - a->meter_sent_ns < RESEND_NS)
            return;
        log_info("metering: no ack for records up to %llu; sending them again",
                 (unsigned long long)a->meter_batch_upto);
        send_batch(a, now);
        return;
    }
    /* One read transaction per loop pass: agent_meter_next_ms, asked after
     * the tick in the same pass, uses this value. */
    a->meter_last = wisp_store_meter_last(a->store);
    if (now < a->meter_hold_ns || a->meter_last <= a->meter_acked)
        return;
    if (a->meter_last - a->meter_acked >= (uint64_t)a->cfg->cloud_meter_batch ||
        now - a->meter_last_ns >= MS(a->cfg->cloud_meter_interval_ms))
        send_batch(a, now);
}

int agent_meter_next_ms(const struct wisp_agent *a, uint64_t now)
{
    if (!a->connected)
        return -1;
    /* Nothing to send (as of the tick of this loop pass): new records come
     * with a loop pass, which ticks and asks again. */
    if (!a->meter_inflight && a->meter_last <= a->meter_acked)
        return -1;
    uint64_t due = a->meter_inflight ? a->meter_sent_ns + RESEND_NS
                                     : a->meter_last_ns + MS(a->cfg->cloud_meter_interval_ms);
    if (!a->meter_inflight && a->meter_hold_ns > due)
        due = a->meter_hold_ns;
    return agent_ms_until(due, now);
}

void agent_meter_on_connected(struct wisp_agent *a)
{
    if (a->meter_inflight)
        a->meter_sent_ns = 0; /* the connection came back: send it again now */
}

/* Declared in agent_internal.h (for the fuzz target). */
int agent_meter_parse_ack(const cJSON *root, uint64_t *upto, const char **error, const char **field)
{
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "upto");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (!cJSON_IsObject(root))
        return *field = "(message): must be a JSON object", -EINVAL;
    if (!u)
        return *field = "upto: required", -EINVAL;
    if (!agent_json_whole(u, 9007199254740992.0))
        return *field = "upto: must be a whole number", -EINVAL;
    if (e && !cJSON_IsNull(e) && !cJSON_IsString(e))
        return *field = "error: must be a string", -EINVAL;
    *upto = (uint64_t)u->valuedouble;
    *error = e && cJSON_IsString(e) ? e->valuestring : NULL;
    return 0;
}

void agent_meter_on_ack(struct wisp_agent *a, const char *json, size_t len)
{
    cJSON *root = len <= 65536 ? cJSON_ParseWithLength(json, len) : NULL;
    uint64_t upto = 0;
    const char *error = NULL, *field = "(message): not JSON, or over 64 KiB";
    if (!root || agent_meter_parse_ack(root, &upto, &error, &field) != 0) {
        log_error("%s: refused: %s", a->topic_ack, field);
        cJSON_Delete(root);
        return;
    }
    uint64_t now = wisp_mono_ns();
    if (upto > a->meter_sent_max) {
        log_error("%s: refused: upto %llu is beyond the last record sent (%llu)", a->topic_ack,
                  (unsigned long long)upto, (unsigned long long)a->meter_sent_max);
        cJSON_Delete(root);
        return;
    }
    if (error)
        log_error("%s: the control plane refused the records after %llu: %.300s; they are kept",
                  a->topic_ack, (unsigned long long)upto, error);
    if (upto > a->meter_acked) {
        size_t n = 0;
        int rc = wisp_store_meter_ack(a->store, upto, &n);
        if (rc)
            log_error("metering: cannot delete the records up to %llu: %s",
                      (unsigned long long)upto, strerror(-rc));
        else {
            log_debug("metering: records up to %llu acknowledged (%zu deleted)",
                      (unsigned long long)upto, n);
            a->meter_acked = upto;
        }
    }
    a->meter_inflight = false;
    if (error)
        a->meter_hold_ns = now + RESEND_NS;
    a->report_counters = true;
    a->report_at_ns = now + ACK_REPORT_NS;
    cJSON_Delete(root);
}
