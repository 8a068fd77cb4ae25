/* Applying a desired state: which functions to remove, which bundles to
 * activate at once (already unpacked) and which to fetch. */
#define WISP_LOG_MODULE "agent"
#include "agent_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "fnspec.h"
#include "log.h"
#include "registry.h"
#include "util.h"

char *agent_bundle_dir(const struct wisp_agent *a, const char *sha)
{
    return wisp_path_join(a->bundles_dir, sha);
}

bool agent_fetching(const struct wisp_agent *a, const char *sha)
{
    for (size_t i = 0; i < a->st.n; i++) {
        const struct agent_fn *f = &a->st.fns[i];
        if (f->status == AGENT_FETCHING && strcmp(f->desired, sha) == 0)
            return true;
    }
    return false;
}

void agent_refuse(struct wisp_agent *a, struct agent_fn *f, const char *why)
{
    log_error("%s: bundle %.12s refused: %s; %s%.12s keeps running", f->name, f->desired, why,
              f->bundle[0] ? "bundle " : "nothing: no bundle", f->bundle);
    f->status = AGENT_REFUSED;
    (void)agent_set_str(&f->error, why);
    a->save = true;
    a->report_now = true;
    a->flags |= WISP_AGENT_RESUBSCRIBE;
}

void agent_activate(struct wisp_agent *a, struct agent_fn *f, const char *sha)
{
    char *dir = agent_bundle_dir(a, sha);
    struct wisp_fnspec *spec = NULL;
    char err[1024], why[1200];
    int rc = dir ? wisp_registry_load_one(dir, &spec, err, sizeof(err)) : -ENOMEM;
    free(dir);
    if (rc) {
        (void)snprintf(why, sizeof(why), "cannot load the function: %s",
                       rc == -ENOMEM ? "out of memory" : err);
        agent_refuse(a, f, why);
        return;
    }
    if (strcmp(spec->name, f->name) != 0) {
        (void)snprintf(why, sizeof(why), "the bundle holds function \"%s\", not \"%s\"", spec->name,
                       f->name);
        wisp_fnspec_destroy(spec);
        agent_refuse(a, f, why);
        return;
    }
    if (f->bundle[0] && strcmp(f->bundle, sha) != 0) {
        memcpy(f->previous, f->bundle, sizeof(f->previous));
        free(f->prev_version);
        f->prev_version = f->version;
        f->version = NULL;
        f->watching = true;
    } else {
        f->watching = false; /* a first version has nothing to roll back to */
    }
    log_info("%s: activating bundle %.12s (version %s)%s", f->name, sha, spec->version,
             f->watching ? "; health check on" : "");
    memcpy(f->bundle, sha, AGENT_SHA_LEN + 1);
    (void)agent_set_str(&f->version, spec->version);
    wisp_fnspec_destroy(spec);
    f->status = AGENT_ACTIVE;
    (void)agent_set_str(&f->error, NULL);
    (void)agent_set_str(&f->last_error, NULL);
    f->invocations = f->errors = 0;
    a->flags |= WISP_AGENT_RELOAD | WISP_AGENT_RESUBSCRIBE;
    a->save = true;
    a->report_now = true;
}

static bool dir_exists(const char *path)
{
    struct stat sb;
    return path && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* One function of the desired state. */
static void plan_fn(struct wisp_agent *a, const struct agent_desired_fn *df)
{
    struct agent_fn *f = agent_state_find(&a->st, df->name);
    if (!f && !(f = agent_state_add(&a->st, df->name))) {
        log_error("%s: %s: cannot add the function (out of memory or %d functions)",
                  a->topic_desired, df->name, AGENT_MAX_FNS);
        return;
    }
    memcpy(f->desired, df->bundle, sizeof(f->desired));
    if (strcmp(f->bundle, df->bundle) == 0) {
        if (f->status != AGENT_ACTIVE) {
            f->status = AGENT_ACTIVE;
            (void)agent_set_str(&f->error, NULL);
        }
        return;
    }
    if (agent_fn_is_bad(f, df->bundle)) {
        if (f->status != AGENT_ROLLED_BACK) {
            f->status = AGENT_ROLLED_BACK;
            if (!f->error)
                (void)agent_set_str(&f->error, "the bundle failed its health check earlier");
        }
        return;
    }
    char *dir = agent_bundle_dir(a, df->bundle);
    bool have = dir_exists(dir);
    free(dir);
    if (have) {
        agent_activate(a, f, df->bundle);
        return;
    }
    if (f->status != AGENT_FETCHING)
        log_info("%s: fetching bundle %.12s on wisp/v1/bundles/%s", f->name, df->bundle,
                 df->bundle);
    f->status = AGENT_FETCHING;
    (void)agent_set_str(&f->error, NULL);
}

static bool desired_has(const struct agent_desired *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->fns[i].name, name) == 0)
            return true;
    }
    return false;
}

void agent_apply_desired(struct wisp_agent *a, const char *json, size_t len)
{
    struct agent_desired d;
    char err[512];
    if (agent_desired_parse(json, len, &d, err, sizeof(err)) != 0) {
        log_error("%s: refused: %s; what runs keeps running", a->topic_desired, err);
        return;
    }
    if (d.generation < a->st.generation) {
        log_info("%s: generation %llu ignored: generation %llu is applied", a->topic_desired,
                 (unsigned long long)d.generation, (unsigned long long)a->st.generation);
        agent_desired_fini(&d);
        return;
    }
    log_info("%s: applying generation %llu (%zu function(s)%s%s)", a->topic_desired,
             (unsigned long long)d.generation, d.n, d.rollout ? ", rollout " : "",
             d.rollout ? d.rollout : "");
    a->st.generation = d.generation;
    (void)agent_set_str(&a->st.rollout, d.rollout);
    a->st.min_invocations =
        d.has_health ? d.min_invocations : (uint32_t)a->cfg->cloud_health_min_invocations;
    a->st.max_error_rate =
        d.has_health ? d.max_error_rate : a->cfg->cloud_health_max_error_pct / 100.0;
    for (size_t i = a->st.n; i-- > 0;) {
        if (!desired_has(&d, a->st.fns[i].name)) {
            log_info("%s: removed by the desired state", a->st.fns[i].name);
            agent_state_remove(&a->st, i);
            a->flags |= WISP_AGENT_RELOAD;
        }
    }
    for (size_t i = 0; i < d.n; i++)
        plan_fn(a, &d.fns[i]);
    agent_desired_fini(&d);
    a->save = true;
    a->report_now = true;
    a->flags |= WISP_AGENT_RESUBSCRIBE;
}
