/* Desired-state messages (cloud-sync/README.md "Desired state"), parsed
 * strictly: what the device runs must never depend on a guess. */
#include "agent_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const status_names[] = {"active", "fetching", "refused", "rolled_back"};

const char *agent_status_name(enum agent_status st)
{
    return (unsigned)st < WISP_ARRAY_LEN(status_names) ? status_names[st] : "unknown";
}

int agent_status_parse(const char *s)
{
    for (size_t i = 0; s && i < WISP_ARRAY_LEN(status_names); i++) {
        if (strcmp(s, status_names[i]) == 0)
            return (int)i;
    }
    return -1;
}

bool agent_sha_valid(const char *s)
{
    size_t i = 0;
    for (; s && i < AGENT_SHA_LEN; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return s && s[i] == '\0';
}

bool agent_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > AGENT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok =
            (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));
        if (!ok)
            return false;
    }
    return true;
}

void agent_desired_fini(struct agent_desired *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->fns[i].version);
    free(d->fns);
    free(d->rollout);
    memset(d, 0, sizeof(*d));
}

bool agent_json_whole(const cJSON *it, double max)
{
    return cJSON_IsNumber(it) && isfinite(it->valuedouble) && it->valuedouble >= 0 &&
           it->valuedouble <= max && it->valuedouble == floor(it->valuedouble);
}

static int parse_fn(const cJSON *it, struct agent_desired_fn *f, char *err, size_t errlen)
{
    const char *name = it->string;
    if (!agent_name_valid(name))
        return wisp_errf(err, errlen, -EINVAL,
                         "functions: \"%.80s\" is not a function name ([a-z0-9][a-z0-9_-]*, at "
                         "most 64 bytes)",
                         name ? name : "");
    if (!cJSON_IsObject(it))
        return wisp_errf(err, errlen, -EINVAL, "functions.%s: must be an object", name);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(it, "bundle");
    if (!b)
        return wisp_errf(err, errlen, -EINVAL, "functions.%s.bundle: required", name);
    if (!cJSON_IsString(b) || !agent_sha_valid(b->valuestring))
        return wisp_errf(err, errlen, -EINVAL,
                         "functions.%s.bundle: must be the bundle's SHA-256 as 64 lowercase hex "
                         "digits",
                         name);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "version");
    if (v && !cJSON_IsNull(v) && (!cJSON_IsString(v) || strlen(v->valuestring) > 64))
        return wisp_errf(err, errlen, -EINVAL,
                         "functions.%s.version: must be a string of at most 64 bytes", name);
    memcpy(f->name, name, strlen(name) + 1);
    memcpy(f->bundle, b->valuestring, AGENT_SHA_LEN + 1);
    if (v && cJSON_IsString(v) &&
        !(f->version = wisp_strndup(v->valuestring, strlen(v->valuestring))))
        return -ENOMEM;
    return 0;
}

static int parse_functions(const cJSON *fns, struct agent_desired *d, char *err, size_t errlen)
{
    if (!fns)
        return wisp_errf(err, errlen, -EINVAL, "functions: required");
    if (!cJSON_IsObject(fns))
        return wisp_errf(err, errlen, -EINVAL, "functions: must be an object");
    size_t n = (size_t)cJSON_GetArraySize(fns);
    if (n > AGENT_MAX_FNS)
        return wisp_errf(err, errlen, -EINVAL, "functions: %zu functions, at most %d", n,
                         AGENT_MAX_FNS);
    d->fns = calloc(n ? n : 1, sizeof(*d->fns));
    if (!d->fns)
        return -ENOMEM;
    for (const cJSON *it = fns->child; it; it = it->next) {
        for (size_t j = 0; it->string && j < d->n; j++) {
            if (strcmp(d->fns[j].name, it->string) == 0)
                return wisp_errf(err, errlen, -EINVAL, "functions.%s: given twice", it->string);
        }
        int rc = parse_fn(it, &d->fns[d->n], err, errlen);
        if (rc)
            return rc;
        d->n++;
    }
    return 0;
}

static int parse_health(const cJSON *h, struct agent_desired *d, char *err, size_t errlen)
{
    if (!h || cJSON_IsNull(h))
        return 0;
    if (!cJSON_IsObject(h))
        return wisp_errf(err, errlen, -EINVAL, "health: must be an object");
    const cJSON *mi = cJSON_GetObjectItemCaseSensitive(h, "min_invocations");
    const cJSON *mr = cJSON_GetObjectItemCaseSensitive(h, "max_error_rate");
    if (!mi || !agent_json_whole(mi, 1000000) || mi->valuedouble < 1)
        return wisp_errf(err, errlen, -EINVAL,
                         "health.min_invocations: must be a whole number from 1 to 1000000");
    if (!mr || !cJSON_IsNumber(mr) || !(mr->valuedouble >= 0 && mr->valuedouble <= 1))
        return wisp_errf(err, errlen, -EINVAL,
                         "health.max_error_rate: must be a number from 0 to 1");
    d->has_health = true;
    d->min_invocations = (uint32_t)mi->valuedouble;
    d->max_error_rate = mr->valuedouble;
    return 0;
}

static int parse_root(const cJSON *root, struct agent_desired *d, char *err, size_t errlen)
{
    if (!cJSON_IsObject(root))
        return wisp_errf(err, errlen, -EINVAL, "the message must be a JSON object");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "generation");
    if (!g)
        return wisp_errf(err, errlen, -EINVAL, "generation: required");
    if (!agent_json_whole(g, 9007199254740992.0))
        return wisp_errf(err, errlen, -EINVAL, "generation: must be a whole number from 0 to 2^53");
    d->generation = (uint64_t)g->valuedouble;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "rollout");
    if (r && !cJSON_IsNull(r)) {
        if (!cJSON_IsString(r) || strlen(r->valuestring) > 128)
            return wisp_errf(err, errlen, -EINVAL,
                             "rollout: must be a string of at most 128 bytes");
        if (!(d->rollout = wisp_strndup(r->valuestring, strlen(r->valuestring))))
            return -ENOMEM;
    }
    int rc = parse_functions(cJSON_GetObjectItemCaseSensitive(root, "functions"), d, err, errlen);
    if (rc)
        return rc;
    return parse_health(cJSON_GetObjectItemCaseSensitive(root, "health"), d, err, errlen);
}

int agent_desired_parse(const char *json, size_t len, struct agent_desired *out, char *err,
                        size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (len > AGENT_MAX_DESIRED)
        return wisp_errf(err, errlen, -EINVAL, "the message is %zu bytes, at most %u", len,
                         AGENT_MAX_DESIRED);
    if (!wisp_utf8_valid(json, len))
        return wisp_errf(err, errlen, -EINVAL, "the message is not UTF-8 text");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root)
        return wisp_errf(err, errlen, -EINVAL, "the message is not valid JSON");
    int rc = parse_root(root, out, err, errlen);
    cJSON_Delete(root);
    if (rc)
        agent_desired_fini(out);
    return rc;
}
