/* The device agent: its object, the session's events, and the messages
 * the device sends on its own (status, hello, reported). See agent.h. */
#define WISP_LOG_MODULE "agent"
#include "agent_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include "config.h"
#include "log.h"
#include "store.h"
#include "util.h"

#define REPORT_GAP_NS (500ULL * 1000000ULL) /* reported at most this often for counters */
#define BUNDLE_PREFIX "wisp/v1/bundles/"
#define WILL_PAYLOAD  "{\"online\":false}"
#define RETRY_NS      (100ULL * 1000000ULL) /* after a publish the session could not take */

int agent_publish(struct wisp_agent *a, const char *topic, const char *payload, size_t len, int qos,
                  bool retain)
{
    uint64_t token = WISP_AGENT_TOKEN_BIT | ++a->next_token;
    return a->hooks.publish(a->hooks.ud, topic, payload, len, qos, retain, token);
}

/* ---- identity and labels ---- */

static int identity_fields(struct wisp_agent *a, const cJSON *root, const char *path, char *err,
                           size_t errlen)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "device_id");
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(root, "labels");
    const cJSON *token = cJSON_GetObjectItemCaseSensitive(root, "fleet_token");
    if (id && !cJSON_IsString(id))
        return wisp_errf(err, errlen, -EINVAL, "cloud.identity: %s:device_id: must be a string",
                         path);
    if (id && cJSON_IsString(id) && strcmp(id->valuestring, a->cfg->device) != 0)
        log_warn("cloud.identity: %s:device_id is \"%s\" but wispd's device is \"%s\"; the "
                 "fleet topics use \"%s\"",
                 path, id->valuestring, a->cfg->device, a->cfg->device);
    if (labels && !cJSON_IsObject(labels))
        return wisp_errf(err, errlen, -EINVAL, "cloud.identity: %s:labels: must be an object",
                         path);
    for (const cJSON *l = labels ? labels->child : NULL; l; l = l->next) {
        if (!cJSON_IsString(l))
            return wisp_errf(err, errlen, -EINVAL, "cloud.identity: %s:labels.%s: must be a string",
                             path, l->string);
        cJSON_AddItemToObject(a->labels, l->string, cJSON_CreateString(l->valuestring));
    }
    if (token && !cJSON_IsNull(token) && !cJSON_IsString(token))
        return wisp_errf(err, errlen, -EINVAL, "cloud.identity: %s:fleet_token: must be a string",
                         path);
    if (token && cJSON_IsString(token) && agent_set_str(&a->token, token->valuestring) != 0)
        return -ENOMEM;
    return 0;
}

static int load_identity(struct wisp_agent *a, const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = wisp_read_file(path, 65536, &text, &len);
    if (rc)
        return wisp_errf(err, errlen, rc, "cloud.identity: %s: cannot read: %s", path,
                         strerror(-rc));
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root))
        rc = wisp_errf(err, errlen, -EINVAL, "cloud.identity: %s: not a JSON object", path);
    else
        rc = identity_fields(a, root, path, err, errlen);
    cJSON_Delete(root);
    free(text);
    return rc;
}

static int setup_identity(struct wisp_agent *a, char *err, size_t errlen)
{
    const struct wisp_config *c = a->cfg;
    if (!(a->labels = cJSON_CreateObject()))
        return -ENOMEM;
    if (c->cloud_identity) {
        int rc = load_identity(a, c->cloud_identity, err, errlen);
        if (rc)
            return rc;
    }
    if (c->cloud_labels) { /* given explicitly: they replace the file's */
        cJSON_Delete(a->labels);
        if (!(a->labels = cJSON_CreateObject()))
            return -ENOMEM;
        if (wisp_config_labels(c->cloud_labels, a->labels) != 0)
            return wisp_errf(err, errlen, -EINVAL,
                             "cloud.labels: must be k=v pairs separated by commas, got \"%s\"",
                             c->cloud_labels);
    }
    if (c->cloud_token && agent_set_str(&a->token, c->cloud_token) != 0)
        return -ENOMEM;
    return 0;
}

/* ---- create / destroy ---- */

static int make_dirs(struct wisp_agent *a, char *err, size_t errlen)
{
    char *deploy = wisp_path_join(a->cfg->data, "deploy");
    a->bundles_dir = deploy ? wisp_path_join(deploy, "bundles") : NULL;
    a->tmp_dir = deploy ? wisp_path_join(deploy, "tmp") : NULL;
    a->active_path = deploy ? wisp_path_join(deploy, "active.json") : NULL;
    free(deploy);
    if (!a->bundles_dir || !a->tmp_dir || !a->active_path)
        return -ENOMEM;
    int rc = wisp_mkdir_p(a->bundles_dir, 0750); /* and deploy_dir */
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: cannot create: %s", a->bundles_dir, strerror(-rc));
    (void)agent_rmtree(a->tmp_dir); /* what an interrupted fetch left */
    return 0;
}

static void make_topics(struct wisp_agent *a)
{
    const char *d = a->cfg->device;
    (void)snprintf(a->topic_status, sizeof(a->topic_status), "wisp/v1/%s/status", d);
    (void)snprintf(a->topic_hello, sizeof(a->topic_hello), "wisp/v1/%s/hello", d);
    (void)snprintf(a->topic_desired, sizeof(a->topic_desired), "wisp/v1/%s/desired", d);
    (void)snprintf(a->topic_reported, sizeof(a->topic_reported), "wisp/v1/%s/reported", d);
    (void)snprintf(a->topic_meter, sizeof(a->topic_meter), "wisp/v1/%s/meter", d);
    (void)snprintf(a->topic_ack, sizeof(a->topic_ack), "wisp/v1/%s/meter/ack", d);
}

/* A bundle folder that vanished cannot run: forget it (the desired state
 * brings it back). */
static void check_folders(struct wisp_agent *a)
{
    struct stat sb;
    for (size_t i = 0; i < a->st.n; i++) {
        struct agent_fn *f = &a->st.fns[i];
        char *dir = f->bundle[0] ? agent_bundle_dir(a, f->bundle) : NULL;
        if (dir && stat(dir, &sb) != 0) {
            log_error("%s: %s is missing; the function does not run until the control plane "
                      "sends its bundle again",
                      f->name, dir);
            f->bundle[0] = '\0';
            (void)agent_set_str(&f->version, NULL);
            f->status = AGENT_FETCHING;
            a->save = true;
        }
        free(dir);
        dir = f->previous[0] ? agent_bundle_dir(a, f->previous) : NULL;
        if (dir && stat(dir, &sb) != 0) {
            f->previous[0] = '\0';
            (void)agent_set_str(&f->prev_version, NULL);
            a->save = true;
        }
        free(dir);
    }
}

int wisp_agent_create(const struct wisp_config *cfg, struct wisp_store *store,
                      const struct wisp_agent_hooks *hooks, struct wisp_agent **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    struct wisp_agent *a = calloc(1, sizeof(*a));
    if (!a)
        return wisp_errf(err, errlen, -ENOMEM, "agent: out of memory");
    a->cfg = cfg;
    a->store = store;
    a->hooks = *hooks;
    agent_state_init(&a->st, (uint32_t)cfg->cloud_health_min_invocations,
                     cfg->cloud_health_max_error_pct / 100.0);
    make_topics(a);
    int rc = setup_identity(a, err, errlen);
    if (rc == 0)
        rc = make_dirs(a, err, errlen);
    if (rc == 0)
        rc = agent_state_load(a->active_path, &a->st, err, errlen);
    if (rc) {
        if (rc == -ENOMEM)
            wisp_errf(err, errlen, rc, "agent: out of memory");
        wisp_agent_destroy(a);
        return rc;
    }
    check_folders(a);
    agent_bundles_gc(a->bundles_dir, &a->st);
    agent_meter_init(a);
    struct stat tsb;
    if (stat(cfg->cloud_trust, &tsb) != 0 || !S_ISDIR(tsb.st_mode))
        log_warn("cloud.trust: %s is not a folder: every signed bundle will be refused until "
                 "it holds the publisher's key (*.pem)",
                 cfg->cloud_trust);
    if (cfg->cloud_dev_unsigned)
        log_warn("WARNING: cloud.dev_unsigned is on: UNSIGNED BUNDLES ARE ACCEPTED AND RUN. "
                 "Development only; turn it off on every real gateway");
    log_info("cloud sync on: device %s, %zu managed function(s) from %s, trusted keys in %s",
             cfg->device, a->st.n, a->active_path, cfg->cloud_trust);
    *out = a;
    return 0;
}

void wisp_agent_destroy(struct wisp_agent *a)
{
    if (!a)
        return;
    if (a->save) {
        char err[512];
        if (agent_state_save(a->active_path, &a->st, err, sizeof(err)) != 0)
            log_error("%s", err);
    }
    agent_state_fini(&a->st);
    cJSON_Delete(a->labels);
    free(a->token);
    free(a->bundles_dir);
    free(a->tmp_dir);
    free(a->active_path);
    free(a);
}

void wisp_agent_will(const struct wisp_agent *a, const char **topic, const char **payload)
{
    *topic = a->topic_status;
    *payload = WILL_PAYLOAD;
}

/* ---- what the supervisor asks ---- */

void wisp_agent_foreach_managed(const struct wisp_agent *a,
                                void (*cb)(void *ud, const char *name, const char *dir), void *ud)
{
    for (size_t i = 0; i < a->st.n; i++) {
        const struct agent_fn *f = &a->st.fns[i];
        char *dir = f->bundle[0] ? agent_bundle_dir(a, f->bundle) : NULL;
        if (dir)
            cb(ud, f->name, dir);
        free(dir);
    }
}

void wisp_agent_foreach_filter(const struct wisp_agent *a,
                               void (*cb)(void *ud, const char *filter, int qos), void *ud)
{
    cb(ud, a->topic_desired, 1);
    cb(ud, a->topic_ack, 1);
    for (size_t i = 0; i < a->st.n; i++) {
        const struct agent_fn *f = &a->st.fns[i];
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = a->st.fns[j].status == AGENT_FETCHING &&
                  strcmp(a->st.fns[j].desired, f->desired) == 0;
        if (f->status != AGENT_FETCHING || dup || !f->desired[0])
            continue;
        char topic[sizeof(BUNDLE_PREFIX) + AGENT_SHA_LEN];
        (void)snprintf(topic, sizeof(topic), BUNDLE_PREFIX "%s", f->desired);
        cb(ud, topic, 1);
    }
}

/* ---- session events ---- */

static bool topic_is(const char *topic, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(topic, want, len) == 0;
}

bool wisp_agent_on_message(struct wisp_agent *a, const char *topic, size_t topic_len,
                           const void *payload, size_t len)
{
    if (topic_is(topic, topic_len, a->topic_desired)) {
        agent_apply_desired(a, payload, len);
        return true;
    }
    if (topic_is(topic, topic_len, a->topic_ack)) {
        agent_meter_on_ack(a, payload, len);
        return true;
    }
    size_t pl = strlen(BUNDLE_PREFIX);
    if (topic_len == pl + AGENT_SHA_LEN && memcmp(topic, BUNDLE_PREFIX, pl) == 0) {
        char sha[AGENT_SHA_LEN + 1];
        memcpy(sha, topic + pl, AGENT_SHA_LEN);
        sha[AGENT_SHA_LEN] = '\0';
        if (!agent_sha_valid(sha)) {
            log_error("%.*s: refused: the topic does not end in a lowercase SHA-256",
                      (int)topic_len, topic);
            return true;
        }
        agent_on_bundle(a, sha, payload, len);
        return true;
    }
    return false;
}

void wisp_agent_on_connected(struct wisp_agent *a)
{
    a->connected = true;
    a->announce = true;
    a->report_now = true;
    agent_meter_on_connected(a);
}

void wisp_agent_on_lost(struct wisp_agent *a)
{
    a->connected = false;
}

void wisp_agent_on_published(struct wisp_agent *a, uint64_t token, bool ok)
{
    (void)a;
    if (!ok)
        log_debug("publish %llu of the agent was not acknowledged",
                  (unsigned long long)(token & ~WISP_AGENT_TOKEN_BIT));
}

void wisp_agent_on_report(struct wisp_agent *a, const struct wisp_fnspec *spec,
                          const struct wisp_result *res)
{
    if (a && spec && res)
        agent_health_report(a, spec, res);
}

/* ---- what the device sends ---- */

static int publish_json(struct wisp_agent *a, const char *topic, cJSON *obj, bool retain)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!text)
        return -ENOMEM;
    int rc = agent_publish(a, topic, text, strlen(text), 1, retain);
    free(text);
    return rc;
}

static void add_time(cJSON *o)
{
    char t[40];
    wisp_rfc3339(wisp_real_ns(), t, sizeof(t));
    cJSON_AddStringToObject(o, "time", t);
}

static int send_status(struct wisp_agent *a, bool online)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    cJSON_AddBoolToObject(o, "online", online);
    cJSON_AddStringToObject(o, "wispd", WISP_VERSION);
    add_time(o);
    return publish_json(a, a->topic_status, o, true);
}

static int send_hello(struct wisp_agent *a)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    struct utsname u;
    cJSON_AddStringToObject(o, "device", a->cfg->device);
    cJSON_AddItemToObject(o, "labels", cJSON_Duplicate(a->labels, 1));
    if (a->token)
        cJSON_AddStringToObject(o, "token", a->token);
    cJSON_AddStringToObject(o, "wispd", WISP_VERSION);
    cJSON_AddStringToObject(o, "arch", uname(&u) == 0 ? u.machine : "unknown");
    /* Retained, so a control plane that starts (or subscribes) after the
     * device connected still gets its registration. */
    return publish_json(a, a->topic_hello, o, true);
}

static cJSON *reported_fn(const struct agent_fn *f)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddItemToObject(o, "bundle", agent_str_or_null(f->bundle));
    cJSON_AddItemToObject(o, "version", agent_str_or_null(f->version));
    cJSON_AddStringToObject(o, "status", agent_status_name(f->status));
    cJSON_AddItemToObject(o, "previous", agent_str_or_null(f->previous));
    cJSON_AddItemToObject(o, "desired", agent_str_or_null(f->desired));
    cJSON_AddNumberToObject(o, "invocations", (double)f->invocations);
    cJSON_AddNumberToObject(o, "errors", (double)f->errors);
    cJSON_AddItemToObject(o, "error", agent_str_or_null(f->error));
    return o;
}

static int send_reported(struct wisp_agent *a)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *fns = cJSON_CreateObject();
    cJSON *meter = cJSON_CreateObject();
    if (!o || !fns || !meter) {
        cJSON_Delete(o);
        cJSON_Delete(fns);
        cJSON_Delete(meter);
        return -ENOMEM;
    }
    cJSON_AddStringToObject(o, "device", a->cfg->device);
    add_time(o);
    cJSON_AddStringToObject(o, "wispd", WISP_VERSION);
    cJSON_AddNumberToObject(o, "generation", (double)a->st.generation);
    cJSON_AddItemToObject(o, "rollout", agent_str_or_null(a->st.rollout));
    cJSON_AddItemToObject(o, "labels", cJSON_Duplicate(a->labels, 1));
    for (size_t i = 0; i < a->st.n; i++)
        cJSON_AddItemToObject(fns, a->st.fns[i].name, reported_fn(&a->st.fns[i]));
    cJSON_AddItemToObject(o, "functions", fns);
    cJSON_AddNumberToObject(meter, "pending", (double)wisp_store_meter_count(a->store));
    cJSON_AddNumberToObject(meter, "acked", (double)a->meter_acked);
    cJSON_AddItemToObject(o, "meter", meter);
    return publish_json(a, a->topic_reported, o, true);
}

void wisp_agent_goodbye(struct wisp_agent *a)
{
    if (a && a->connected &&
        agent_publish(a, a->topic_status, WILL_PAYLOAD, strlen(WILL_PAYLOAD), 1, true) == 0)
        log_info("%s: offline", a->topic_status);
}

/* ---- the loop ---- */

static bool report_due(const struct wisp_agent *a, uint64_t now)
{
    return a->report_now || (a->report_counters && now - a->reported_ns >= REPORT_GAP_NS) ||
           (a->report_at_ns && now >= a->report_at_ns);
}

static void persist(struct wisp_agent *a)
{
    char err[512];
    a->save = false;
    if (agent_state_save(a->active_path, &a->st, err, sizeof(err)) != 0)
        log_error("%s; the managed set is kept in memory and written at the next change", err);
    agent_bundles_gc(a->bundles_dir, &a->st);
}

unsigned wisp_agent_tick(struct wisp_agent *a, uint64_t now)
{
    if (!a)
        return 0;
    if (a->save)
        persist(a);
    bool go = a->connected && now >= a->retry_ns;
    if (go && a->announce) {
        if (send_status(a, true) == 0 && send_hello(a) == 0)
            a->announce = false;
        else
            go = false;
    }
    if (go && report_due(a, now)) {
        if (send_reported(a) == 0) {
            a->report_now = a->report_counters = false;
            a->reported_ns = now;
            if (a->report_at_ns && now >= a->report_at_ns)
                a->report_at_ns = 0;
        } else {
            go = false;
        }
    }
    if (a->connected && !go && now >= a->retry_ns)
        a->retry_ns = now + RETRY_NS; /* the session's window is full: a moment later */
    agent_meter_tick(a, now);
    unsigned flags = a->flags;
    a->flags = 0;
    return flags;
}

int agent_ms_until(uint64_t due, uint64_t now)
{
    return due > now ? (int)((due - now + 999999u) / 1000000u) : 0;
}

static int earlier(int t, uint64_t due, uint64_t now)
{
    int ms = agent_ms_until(due, now);
    return t < 0 || ms < t ? ms : t;
}

int wisp_agent_next_timeout_ms(const struct wisp_agent *a, uint64_t now)
{
    if (!a)
        return -1;
    if (a->save || a->flags)
        return 0;
    if (!a->connected)
        return -1;
    int t = agent_meter_next_ms(a, now);
    /* What the tick sends next, never before retry_ns (a full window):
     * a due time in the past would spin the loop until then. */
    uint64_t due = UINT64_MAX;
    if (a->announce || a->report_now)
        due = now;
    if (a->report_counters && a->reported_ns + REPORT_GAP_NS < due)
        due = a->reported_ns + REPORT_GAP_NS;
    if (a->report_at_ns && a->report_at_ns < due)
        due = a->report_at_ns;
    if (due != UINT64_MAX)
        t = earlier(t, due > a->retry_ns ? due : a->retry_ns, now);
    return t;
}
