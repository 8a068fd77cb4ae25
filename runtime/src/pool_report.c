#define WISP_LOG_MODULE "pool"
/* Reporting: the per-invocation REPORT line, outcome counters, dead letters
 * and the per-function statistics. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pool_internal.h"
#include "util.h"

void wisp_pool_report(const struct fn *fn, const struct pev *ev, const struct wisp_result *res,
                      bool cold, uint64_t init_ns)
{
    double ms = (double)res->duration_ns / 1e6;
    /* Billed like Lambda: whole milliseconds, rounded up, at least 1. */
    uint64_t billed = (res->duration_ns + 999999ULL) / 1000000ULL;
    if (billed == 0)
        billed = 1;
    char init[48] = "";
    if (cold)
        (void)snprintf(init, sizeof(init), " init_ms=%.3f", (double)init_ns / 1e6);
    if (wisp_log_threshold <= WISP_LOG_INFO)
        wisp_log_emit_fields(WISP_LOG_INFO, "report",
                             "fn=%s version=%s id=%s outcome=%s duration_ms=%.3f billed_ms=%llu "
                             "memory_kb=%llu memory_limit_kb=%u publishes=%zu attempt=%u cold=%d%s",
                             fn->spec->name, fn->spec->version, ev->id,
                             wisp_outcome_name(res->outcome), ms, (unsigned long long)billed,
                             (unsigned long long)((res->mem_peak_bytes + 1023) / 1024),
                             fn->spec->memory_kb, res->n_pubs, ev->attempt + 1, cold ? 1 : 0, init);
    if (res->outcome != WISP_OUTCOME_OK && wisp_log_threshold <= WISP_LOG_ERROR) {
        char q[4096];
        const char *err = res->error ? res->error : "(no message)";
        wisp_log_quote(q, sizeof(q), err, strlen(err));
        wisp_log_emit_fields(WISP_LOG_ERROR, "fn", "fn=%s version=%s id=%s outcome=%s error=%s",
                             fn->spec->name, fn->spec->version, ev->id,
                             wisp_outcome_name(res->outcome), q);
    }
}

void wisp_fn_count(struct fn *fn, enum wisp_outcome o)
{
    fn->st.invocations++;
    switch (o) {
    case WISP_OUTCOME_OK:
        fn->st.ok++;
        break;
    case WISP_OUTCOME_TIMEOUT:
        fn->st.timeouts++;
        break;
    case WISP_OUTCOME_MEMORY:
        fn->st.memory++;
        break;
    case WISP_OUTCOME_CRASH:
        fn->st.crashes++;
        break;
    default:
        fn->st.errors++;
        break;
    }
}

/* The dead letter carries what a person needs to understand and replay the
 * event: function, version, error, attempts and the original payload (as
 * JSON when it was JSON, else as text, else base64). */
void wisp_pool_dead_letter(struct wisp_pool *p, struct fn *fn, const struct pev *ev,
                           const struct wisp_result *res)
{
    fn->st.dead_lettered++;
    const char *topic = fn->spec->retry_dead_letter;
    log_warn("%s: event %s failed %u time(s); %s", fn->spec->name, ev->id, ev->attempt,
             topic ? "sent to the dead-letter topic" : "dropped (no retry.dead_letter topic)");
    if (!topic)
        return;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return;
    cJSON_AddStringToObject(o, "id", ev->id);
    cJSON_AddStringToObject(o, "function", fn->spec->name);
    cJSON_AddStringToObject(o, "version", fn->spec->version);
    cJSON_AddStringToObject(o, "outcome", wisp_outcome_name(res->outcome));
    cJSON_AddStringToObject(o, "error", res->error ? res->error : "");
    cJSON_AddNumberToObject(o, "attempts", ev->attempt);
    cJSON_AddStringToObject(o, "time", ev->time);
    if (ev->blob->subject)
        cJSON_AddStringToObject(o, "subject", ev->blob->subject);
    /* The whole payload must be one JSON value (the blob is NUL-terminated
     * at len, so an embedded NUL stops the parse short and fails it). */
    const char *end = NULL;
    cJSON *data = cJSON_ParseWithOpts(ev->blob->payload, &end, 1);
    if (data && end != ev->blob->payload + ev->blob->len) {
        cJSON_Delete(data);
        data = NULL;
    }
    if (data) {
        cJSON_AddItemToObject(o, "data", data);
    } else if (wisp_utf8_valid(ev->blob->payload, ev->blob->len)) {
        cJSON_AddStringToObject(o, "payload", ev->blob->payload);
    } else {
        char *b64 = wisp_base64(ev->blob->payload, ev->blob->len);
        if (b64)
            cJSON_AddStringToObject(o, "payload_base64", b64);
        free(b64);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text && p->hooks.publish(p->hooks.ud, topic, text, strlen(text), 1, 0) != 0)
        log_error("%s: could not publish the dead letter for %s", fn->spec->name, ev->id);
    free(text);
}

int wisp_pool_stats(const struct wisp_pool *p, const char *fn_name, struct wisp_fn_stats *out)
{
    for (const struct fn *fn = p->fns; fn; fn = fn->next) {
        if (!fn->retired && strcmp(fn->spec->name, fn_name) == 0) {
            *out = fn->st;
            out->running = fn->n_busy;
            return 0;
        }
    }
    return -ENOENT;
}

void wisp_pool_log_stats(const struct wisp_pool *p)
{
    for (const struct fn *fn = p->fns; fn; fn = fn->next) {
        const struct wisp_fn_stats *s = &fn->st;
        wisp_log_emit_fields(
            WISP_LOG_INFO, "stats",
            "fn=%s version=%s invocations=%llu ok=%llu errors=%llu timeouts=%llu memory=%llu "
            "crashes=%llu cold_starts=%llu retries=%llu dead_lettered=%llu dropped=%llu "
            "queued=%zu executors=%u",
            fn->spec->name, fn->spec->version, (unsigned long long)s->invocations,
            (unsigned long long)s->ok, (unsigned long long)s->errors,
            (unsigned long long)s->timeouts, (unsigned long long)s->memory,
            (unsigned long long)s->crashes, (unsigned long long)s->cold_starts,
            (unsigned long long)s->retries, (unsigned long long)s->dead_lettered,
            (unsigned long long)s->dropped, fn->qlen, fn->n_exec);
    }
}
