/* The health check on the device (cloud-sync/README.md "Health check on
 * the device"): a version that replaced another is watched for its first
 * min_invocations invocations; once its failures exceed
 * max_error_rate x min_invocations, the previous version runs again. All
 * local, so it works offline. */
#define WISP_LOG_MODULE "agent"
#include "agent_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "fnspec.h"
#include "log.h"

bool agent_health_failed(uint64_t errors, uint32_t min_invocations, double max_error_rate)
{
    if (errors == 0)
        return false;
    return (double)errors > max_error_rate * (double)min_invocations;
}

bool agent_health_passed(uint64_t invocations, uint64_t errors, uint32_t min_invocations,
                         double max_error_rate)
{
    return invocations >= min_invocations &&
           !agent_health_failed(errors, min_invocations, max_error_rate);
}

void agent_health_text(char *out, size_t cap, uint64_t errors, uint64_t invocations,
                       const char *last_error)
{
    if (!cap)
        return;
    int n = snprintf(out, cap, "%llu of %llu invocations failed", (unsigned long long)errors,
                     (unsigned long long)invocations);
    if (!last_error || !*last_error || n < 0 || (size_t)n >= cap)
        return;
    /* The first line only: tracebacks follow it. */
    size_t len = strcspn(last_error, "\n");
    if (len > 200)
        len = 200;
    (void)snprintf(out + n, cap - (size_t)n, " (error: %.*s)", (int)len, last_error);
}

/* The running version failed: the previous one runs again. */
static void roll_back(struct wisp_agent *a, struct agent_fn *f)
{
    char why[512];
    agent_health_text(why, sizeof(why), f->errors, f->invocations, f->last_error);
    log_warn("%s: bundle %.12s failed its health check: %s; rolling back to %.12s", f->name,
             f->bundle, why, f->previous);
    agent_fn_mark_bad(f, f->bundle);
    memcpy(f->bundle, f->previous, sizeof(f->bundle));
    f->previous[0] = '\0';
    free(f->version);
    f->version = f->prev_version;
    f->prev_version = NULL;
    f->status = AGENT_ROLLED_BACK;
    f->watching = false;
    f->invocations = f->errors = 0;
    free(f->last_error);
    f->last_error = NULL;
    (void)agent_set_str(&f->error, why);
    a->flags |= WISP_AGENT_RELOAD;
    a->save = true;
    a->report_now = true;
}

void agent_health_report(struct wisp_agent *a, const struct wisp_fnspec *spec,
                         const struct wisp_result *res)
{
    struct agent_fn *f = agent_state_find(&a->st, spec->name);
    if (!f || !f->bundle[0])
        return;
    /* Only the running version counts: the folder is named by its bundle. */
    size_t dl = strlen(spec->dir);
    if (dl < AGENT_SHA_LEN || strcmp(spec->dir + dl - AGENT_SHA_LEN, f->bundle) != 0)
        return;
    if (res->outcome == WISP_OUTCOME_REJECTED)
        return; /* never ran */
    f->invocations++;
    a->report_counters = true;
    if (res->outcome != WISP_OUTCOME_OK) {
        f->errors++;
        (void)agent_set_str(&f->last_error,
                            res->error ? res->error : wisp_outcome_name(res->outcome));
    }
    if (!f->watching)
        return;
    if (f->previous[0] &&
        agent_health_failed(f->errors, a->st.min_invocations, a->st.max_error_rate)) {
        roll_back(a, f);
    } else if (f->invocations >= a->st.min_invocations) {
        log_info("%s: bundle %.12s passed its health check (%llu of %llu invocations failed)",
                 f->name, f->bundle, (unsigned long long)f->errors,
                 (unsigned long long)f->invocations);
        f->watching = false;
        a->save = true;
    }
}
