/*
 * function.json: strict parsing into struct wisp_fnspec. The JSON helpers it
 * shares with the trigger kinds live in fnspec_json.c, and loading a function
 * folder (handler check, content version) in fnspec_load.c.
 *
 * Errors are built as "<field>: <message>" by the checks and get the
 * "<origin>:" prefix once, in wisp_fnspec_parse/wisp_fnspec_load, so that
 * trigger kinds can use the same helpers without knowing the file name.
 * Every bit of text is formatted with wisp_errf (a bounded snprintf that
 * cannot fail), because each of these buffers is allowed to be cut short.
 */
#include "fnspec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fnspec_internal.h"
#include "topic.h"
#include "trigger_internal.h"
#include "util.h"

/* Every trigger kind, by name. Adding a kind: its file plus one line here. */
static const struct wisp_trigger_kind *const trigger_kinds[] = {
    &wisp_trigger_mqtt,
    &wisp_trigger_timer,
    &wisp_trigger_sensor,
    &wisp_trigger_gpio,
};

const struct wisp_trigger_kind *wisp_trigger_kind_find(const char *name)
{
    for (size_t i = 0; name && i < WISP_ARRAY_LEN(trigger_kinds); i++) {
        if (strcmp(trigger_kinds[i]->name, name) == 0)
            return trigger_kinds[i];
    }
    return NULL;
}

static void known_kinds(char *buf, size_t cap)
{
    const char *names[WISP_ARRAY_LEN(trigger_kinds)];
    for (size_t i = 0; i < WISP_ARRAY_LEN(trigger_kinds); i++)
        names[i] = trigger_kinds[i]->name;
    wisp_fnspec_join(names, WISP_ARRAY_LEN(names), buf, cap);
}

enum { LOWER = 1, UPPER = 2, DIGIT = 4 };

static bool char_ok(unsigned char c, unsigned classes, const char *extra)
{
    if ((classes & LOWER) && c >= 'a' && c <= 'z')
        return true;
    if ((classes & UPPER) && c >= 'A' && c <= 'Z')
        return true;
    if ((classes & DIGIT) && c >= '0' && c <= '9')
        return true;
    return c != '\0' && strchr(extra, c) != NULL;
}

/* Matches ^[first][rest]{0,max-1}$ where each class is letters/digits plus
 * the extra characters; spelled out because regex.h depends on the locale. */
static bool pattern_ok(const char *s, size_t max, unsigned first, const char *first_extra,
                       unsigned rest, const char *rest_extra)
{
    size_t len = strlen(s);
    if (len == 0 || len > max || !char_ok((unsigned char)s[0], first, first_extra))
        return false;
    for (size_t i = 1; i < len; i++) {
        if (!char_ok((unsigned char)s[i], rest, rest_extra))
            return false;
    }
    return true;
}

/* strdup into *dst; -ENOMEM on failure. */
static int dup_to(char **dst, const char *s)
{
    *dst = wisp_strndup(s, strlen(s));
    return *dst ? 0 : -ENOMEM;
}

/* "<path>: <rule>, got <item>" */
static int bad_value(const char *path, const char *rule, const cJSON *item, char *err,
                     size_t errlen)
{
    char show[SHOW_CAP];
    wisp_fnspec_describe(item, show, sizeof(show));
    return wisp_errf(err, errlen, -EINVAL, "%s: %s, got %s", path, rule, show);
}

#define ITEM(obj, key) cJSON_GetObjectItemCaseSensitive((obj), (key))

static int parse_identity(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    const char *name, *desc, *version, *runtime;
    int rc;
    if (!ITEM(root, "name"))
        return wisp_errf(err, errlen, -EINVAL,
                         "name: missing; every function needs a name like \"temp-alert\"");
    if ((rc = wisp_fnspec_get_str(root, NULL, "name", 1, SIZE_MAX, &name, err, errlen)) ||
        (rc = wisp_fnspec_get_str(root, NULL, "description", 0, WISP_MAX_DESCRIPTION, &desc, err,
                                  errlen)) ||
        (rc = wisp_fnspec_get_str(root, NULL, "version", 0, SIZE_MAX, &version, err, errlen)) ||
        (rc = wisp_fnspec_get_str(root, NULL, "runtime", 0, SIZE_MAX, &runtime, err, errlen)))
        return rc;
    if (!pattern_ok(name, WISP_MAX_NAME_LEN, LOWER | DIGIT, "", LOWER | DIGIT, "_-"))
        return bad_value("name",
                         "must be 1 to 64 characters of a-z, 0-9, '_' and '-', "
                         "starting with a letter or digit",
                         ITEM(root, "name"), err, errlen);
    if (version && !pattern_ok(version, WISP_MAX_VERSION_LEN, LOWER | UPPER | DIGIT, "._+-",
                               LOWER | UPPER | DIGIT, "._+-"))
        return bad_value("version",
                         "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '+' and '-'",
                         ITEM(root, "version"), err, errlen);
    if (runtime && strcmp(runtime, "lua") != 0 && strcmp(runtime, "native") != 0)
        return bad_value("runtime", "must be \"lua\" or \"native\"", ITEM(root, "runtime"), err,
                         errlen);
    spec->runtime =
        runtime && strcmp(runtime, "native") == 0 ? WISP_RUNTIME_NATIVE : WISP_RUNTIME_LUA;
    /* An absent version stays "" until wisp_fnspec_load hashes the folder;
     * a given one cannot be empty, so "" is unambiguous. */
    if ((rc = dup_to(&spec->name, name)) || (rc = dup_to(&spec->version, version ? version : "")))
        return rc;
    return desc ? dup_to(&spec->description, desc) : 0;
}

/* Why a handler path is not a plain relative path inside the folder, or NULL. */
static const char *handler_problem(const char *h)
{
    if (*h == '/')
        return "must be relative to the function folder, not start with '/'";
    for (const char *p = h; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "must not contain control characters";
    }
    for (const char *seg = h;;) {
        size_t n = strcspn(seg, "/");
        if (n == 0)
            return "must not be empty or contain empty segments ('//' or a trailing '/')";
        if (n == 2 && memcmp(seg, "..", 2) == 0)
            return "must stay inside the function folder (no \"..\" segments)";
        if (n == 1 && seg[0] == '.')
            return "must not contain \".\" segments";
        if (seg[n] == '\0')
            return NULL;
        seg += n + 1;
    }
}

static int parse_handler(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    const char *h;
    int rc = wisp_fnspec_get_str(root, NULL, "handler", 0, WISP_MAX_HANDLER_LEN, &h, err, errlen);
    if (rc)
        return rc;
    if (!h)
        h = spec->runtime == WISP_RUNTIME_NATIVE ? "handler.so" : "handler.lua";
    const char *why = handler_problem(h);
    if (why)
        return bad_value("handler", why, ITEM(root, "handler"), err, errlen);
    return dup_to(&spec->handler, h);
}

static int parse_trigger(const cJSON *obj, const char *path, struct wisp_fnspec *spec, char *err,
                         size_t errlen)
{
    char kinds[128], show[SHOW_CAP];
    known_kinds(kinds, sizeof(kinds));
    if (!cJSON_IsObject(obj)) {
        wisp_fnspec_describe(obj, show, sizeof(show));
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: must be an object with a \"type\" (known: %s), got %s", path, kinds,
                         show);
    }
    const cJSON *type = ITEM(obj, "type");
    if (!type)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.type: missing; every trigger needs a type (known: %s)", path, kinds);
    wisp_fnspec_describe(type, show, sizeof(show));
    if (!cJSON_IsString(type))
        return wisp_errf(err, errlen, -EINVAL, "%s.type: must be a string (known: %s), got %s",
                         path, kinds, show);
    const struct wisp_trigger_kind *kind = wisp_trigger_kind_find(type->valuestring);
    if (!kind)
        return wisp_errf(err, errlen, -EINVAL, "%s.type: unknown trigger type %s (known: %s)", path,
                         show, kinds);
    struct wisp_trigger *t = &spec->triggers[spec->n_triggers];
    int rc = kind->parse(obj, path, t, err, errlen);
    if (rc)
        return rc;
    t->kind = kind;
    spec->n_triggers++;
    return 0;
}

static int parse_triggers(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    const cJSON *arr = ITEM(root, "triggers");
    if (!arr)
        return wisp_errf(err, errlen, -EINVAL,
                         "triggers: missing; at least one trigger is required, e.g. "
                         "[{\"type\": \"mqtt\", \"topic\": \"sensors/#\"}]");
    if (!cJSON_IsArray(arr))
        return bad_value("triggers", "must be an array of 1 to 64 trigger objects", arr, err,
                         errlen);
    size_t n = 0;
    for (const cJSON *c = arr->child; c; c = c->next)
        n++;
    if (n == 0 || n > WISP_MAX_TRIGGERS)
        return wisp_errf(err, errlen, -EINVAL, "triggers: must have 1 to %u entries, got %zu",
                         WISP_MAX_TRIGGERS, n);
    spec->triggers = calloc(n, sizeof(*spec->triggers));
    if (!spec->triggers)
        return -ENOMEM;
    size_t i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        char path[PATH_CAP];
        wisp_errf(path, sizeof(path), 0, "triggers[%zu]", i);
        int rc = parse_trigger(c, path, spec, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

/* An optional object with a fixed set of keys; *out is NULL when absent. */
static int get_section(const cJSON *root, const char *key, const char *const *keys, size_t n,
                       const cJSON **out, char *err, size_t errlen)
{
    *out = ITEM(root, key);
    if (*out && !cJSON_IsObject(*out))
        return bad_value(key, "must be an object", *out, err, errlen);
    return wisp_fnspec_check_keys(*out, key, keys, n, err, errlen);
}

static int parse_limits(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    static const char *const keys[] = {"memory_kb", "timeout_ms", "concurrency"};
    const cJSON *o;
    int rc;
    if ((rc = get_section(root, "limits", keys, WISP_ARRAY_LEN(keys), &o, err, errlen)) ||
        (rc = wisp_fnspec_get_u32(o, "limits", "memory_kb", WISP_MIN_MEMORY_KB, WISP_MAX_MEMORY_KB,
                                  WISP_DEFAULT_MEMORY_KB, &spec->memory_kb, err, errlen)) ||
        (rc = wisp_fnspec_get_u32(o, "limits", "timeout_ms", 1, WISP_MAX_TIMEOUT_MS,
                                  WISP_DEFAULT_TIMEOUT_MS, &spec->timeout_ms, err, errlen)))
        return rc;
    return wisp_fnspec_get_u32(o, "limits", "concurrency", 1, WISP_MAX_CONCURRENCY,
                               WISP_DEFAULT_CONCURRENCY, &spec->concurrency, err, errlen);
}

static int parse_retry(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    static const char *const keys[] = {"max", "backoff_ms", "dead_letter"};
    const cJSON *o;
    const char *dl, *why = NULL;
    int rc;
    if ((rc = get_section(root, "retry", keys, WISP_ARRAY_LEN(keys), &o, err, errlen)) ||
        (rc = wisp_fnspec_get_u32(o, "retry", "max", 0, WISP_MAX_RETRY_MAX, WISP_DEFAULT_RETRY_MAX,
                                  &spec->retry_max, err, errlen)) ||
        (rc = wisp_fnspec_get_u32(o, "retry", "backoff_ms", 1, WISP_MAX_BACKOFF_MS,
                                  WISP_DEFAULT_BACKOFF_MS, &spec->retry_backoff_ms, err, errlen)) ||
        (rc = wisp_fnspec_get_str(o, "retry", "dead_letter", 0, SIZE_MAX, &dl, err, errlen)))
        return rc;
    if (!dl)
        return 0;
    if (!wisp_topic_name_valid(dl, strlen(dl), &why) || dl[0] == '$') {
        char rule[160];
        wisp_errf(rule, sizeof(rule), 0, "must be an MQTT topic name to publish to (%s)",
                  why ? why : "'$' topics are reserved for the broker");
        return bad_value("retry.dead_letter", rule, ITEM(o, "dead_letter"), err, errlen);
    }
    return dup_to(&spec->retry_dead_letter, dl);
}

/* "output": {"envelope": "none" | "cloudevents"} */
static int parse_output(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    static const char *const keys[] = {"envelope"};
    const cJSON *o;
    const char *env;
    int rc;
    if ((rc = get_section(root, "output", keys, WISP_ARRAY_LEN(keys), &o, err, errlen)) ||
        (rc = wisp_fnspec_get_str(o, "output", "envelope", 0, 32, &env, err, errlen)))
        return rc;
    if (env && strcmp(env, "cloudevents") != 0 && strcmp(env, "none") != 0)
        return bad_value("output.envelope", "must be \"none\" or \"cloudevents\"",
                         ITEM(o, "envelope"), err, errlen);
    spec->envelope = env && strcmp(env, "cloudevents") == 0;
    return 0;
}

static int parse_env_var(const cJSON *o, const cJSON *c, struct wisp_env_var *var, char *err,
                         size_t errlen)
{
    char show[SHOW_CAP], path[PATH_CAP];
    wisp_fnspec_quote(c->string, strlen(c->string), show, sizeof(show));
    if (!pattern_ok(c->string, WISP_MAX_ENV_KEY_LEN, LOWER | UPPER, "_", LOWER | UPPER | DIGIT,
                    "_"))
        return wisp_errf(err, errlen, -EINVAL,
                         "env: invalid variable name %s; names must match "
                         "[A-Za-z_][A-Za-z0-9_]{0,127}",
                         show);
    /* At most WISP_MAX_ENV entries, so comparing pairs stays cheap. */
    for (const cJSON *d = o->child; d != c; d = d->next) {
        if (strcmp(d->string, c->string) == 0)
            return wisp_errf(err, errlen, -EINVAL, "env: duplicate key %s", show);
    }
    wisp_errf(path, sizeof(path), 0, "env.%s", c->string);
    if (!cJSON_IsString(c))
        return bad_value(path, "must be a string (quote numbers, e.g. \"30\")", c, err, errlen);
    size_t len = strlen(c->valuestring);
    if (len > WISP_MAX_ENV_VALUE)
        return wisp_errf(err, errlen, -EINVAL, "%s: must be at most %u bytes long, got %zu bytes",
                         path, WISP_MAX_ENV_VALUE, len);
    if (dup_to(&var->key, c->string) || dup_to(&var->value, c->valuestring))
        return -ENOMEM;
    return 0;
}

static int parse_env(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    const cJSON *o = ITEM(root, "env");
    if (!o)
        return 0;
    if (!cJSON_IsObject(o))
        return bad_value("env", "must be an object of string values", o, err, errlen);
    size_t n = 0;
    for (const cJSON *c = o->child; c; c = c->next)
        n++;
    if (n > WISP_MAX_ENV)
        return wisp_errf(err, errlen, -EINVAL, "env: at most %u variables allowed, got %zu",
                         WISP_MAX_ENV, n);
    if (n == 0)
        return 0;
    spec->env = calloc(n, sizeof(*spec->env));
    if (!spec->env)
        return -ENOMEM;
    for (const cJSON *c = o->child; c; c = c->next) {
        /* Count the entry first so that destroy frees a half-copied one. */
        int rc = parse_env_var(o, c, &spec->env[spec->n_env++], err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_root(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    static const char *const keys[] = {"name",    "description", "version", "runtime",
                                       "handler", "triggers",    "limits",  "retry",
                                       "output",  "env",         "gpio"};
    int rc;
    if (!cJSON_IsObject(root))
        return bad_value("(root)", "must be a JSON object", root, err, errlen);
    if ((rc = wisp_fnspec_check_keys(root, NULL, keys, WISP_ARRAY_LEN(keys), err, errlen)) ||
        (rc = parse_identity(root, spec, err, errlen)) ||
        (rc = parse_handler(root, spec, err, errlen)) ||
        (rc = parse_triggers(root, spec, err, errlen)) ||
        (rc = parse_limits(root, spec, err, errlen)) ||
        (rc = parse_retry(root, spec, err, errlen)) ||
        (rc = parse_output(root, spec, err, errlen)) ||
        (rc = wisp_fnspec_parse_gpio(root, spec, err, errlen)))
        return rc;
    return parse_env(root, spec, err, errlen);
}

int wisp_fnspec_parse(const char *json, size_t len, const char *origin, const char *dir,
                      struct wisp_fnspec **out, char *err, size_t errlen)
{
    char msg[MSG_CAP] = "";
    cJSON *root = NULL;
    struct wisp_fnspec *spec = NULL;
    int rc;
    if (!origin)
        origin = "function.json";
    if (!out)
        return wisp_errf(err, errlen, -EINVAL, "%s:(root): no place for the result", origin);
    *out = NULL;
    rc = wisp_fnspec_parse_json(json, len, &root, msg, sizeof(msg));
    if (rc)
        goto out;
    spec = calloc(1, sizeof(*spec));
    if (!spec || dup_to(&spec->origin, origin) || (dir && dup_to(&spec->dir, dir))) {
        rc = -ENOMEM;
        goto out;
    }
    rc = parse_root(root, spec, msg, sizeof(msg));
    if (rc == 0) {
        *out = spec;
        spec = NULL;
    }
out:
    if (rc == -ENOMEM)
        wisp_errf(err, errlen, rc, "%s: out of memory", origin);
    else if (rc)
        wisp_errf(err, errlen, rc, "%s:%s", origin, msg);
    wisp_fnspec_destroy(spec);
    cJSON_Delete(root);
    return rc;
}

void wisp_fnspec_destroy(struct wisp_fnspec *spec)
{
    if (!spec)
        return;
    for (size_t i = 0; i < spec->n_triggers; i++) {
        if (spec->triggers[i].kind && spec->triggers[i].kind->fini)
            spec->triggers[i].kind->fini(&spec->triggers[i]);
    }
    for (size_t i = 0; i < spec->n_env; i++) {
        free(spec->env[i].key);
        free(spec->env[i].value);
    }
    wisp_fnspec_free_gpio(spec);
    free(spec->triggers);
    free(spec->env);
    free(spec->dir);
    free(spec->origin);
    free(spec->name);
    free(spec->version);
    free(spec->description);
    free(spec->handler);
    free(spec->retry_dead_letter);
    free(spec);
}

const char *wisp_fnspec_env(const struct wisp_fnspec *spec, const char *key)
{
    for (size_t i = 0; spec && key && i < spec->n_env; i++) {
        if (strcmp(spec->env[i].key, key) == 0)
            return spec->env[i].value;
    }
    return NULL;
}
