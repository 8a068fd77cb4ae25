/*
 * function.json: strict parsing into struct wisp_fnspec, and loading a
 * function folder (handler check, content version).
 *
 * Errors are built as "<field>: <message>" by the checks and get the
 * "<origin>:" prefix once, in wisp_fnspec_parse/wisp_fnspec_load, so that
 * trigger kinds can use the same helpers without knowing the file name.
 * Every bit of text is formatted with wisp_errf (a bounded snprintf that
 * cannot fail), because each of these buffers is allowed to be cut short.
 */
#include "fnspec.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "topic.h"
#include "util.h"

/* Every trigger kind, by name. Adding a kind: its file plus one line here. */
static const struct wisp_trigger_kind *const trigger_kinds[] = {
    &wisp_trigger_mqtt,
};

/* Room for one "<field>: <message>" before the origin is prefixed. */
#define MSG_CAP  1024
#define PATH_CAP 192
#define SHOW_CAP 80

const struct wisp_trigger_kind *wisp_trigger_kind_find(const char *name)
{
    for (size_t i = 0; name && i < WISP_ARRAY_LEN(trigger_kinds); i++) {
        if (strcmp(trigger_kinds[i]->name, name) == 0)
            return trigger_kinds[i];
    }
    return NULL;
}

/* "a, b, c" into buf, cut at cap. */
static void join(const char *const *names, size_t n, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used + 1 < cap; i++) {
        wisp_errf(buf + used, cap - used, 0, "%s%s", i ? ", " : "", names[i]);
        used += strlen(buf + used);
    }
}

static void known_kinds(char *buf, size_t cap)
{
    const char *names[WISP_ARRAY_LEN(trigger_kinds)];
    for (size_t i = 0; i < WISP_ARRAY_LEN(trigger_kinds); i++)
        names[i] = trigger_kinds[i]->name;
    join(names, WISP_ARRAY_LEN(names), buf, cap);
}

void wisp_fnspec_quote(const char *s, size_t len, char *buf, size_t cap)
{
    /* Keep the rendering on one line and printable whatever the bytes are:
     * error messages end up in logs and terminals. */
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    if (cap < 10) {
        if (cap)
            buf[0] = '\0';
        return;
    }
    buf[o++] = '"';
    /* Room for one escaped byte, "...", the closing quote and the NUL. */
    for (; i < len && i < 48 && o + 9 <= cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            buf[o++] = (char)c;
            continue;
        }
        buf[o++] = '\\';
        if (c == '"' || c == '\\') {
            buf[o++] = (char)c;
            continue;
        }
        buf[o++] = 'x';
        buf[o++] = hex[c >> 4];
        buf[o++] = hex[c & 15];
    }
    if (i < len) {
        for (int k = 0; k < 3; k++)
            buf[o++] = '.';
    }
    buf[o++] = '"';
    buf[o] = '\0';
}

void wisp_fnspec_describe(const struct cJSON *item, char *buf, size_t cap)
{
    if (!item)
        wisp_errf(buf, cap, 0, "nothing");
    else if (cJSON_IsString(item))
        wisp_fnspec_quote(item->valuestring, strlen(item->valuestring), buf, cap);
    else if (cJSON_IsNumber(item))
        wisp_errf(buf, cap, 0, "%.15g", item->valuedouble);
    else if (cJSON_IsBool(item))
        wisp_errf(buf, cap, 0, "%s", cJSON_IsTrue(item) ? "true" : "false");
    else if (cJSON_IsNull(item))
        wisp_errf(buf, cap, 0, "null");
    else if (cJSON_IsArray(item))
        wisp_errf(buf, cap, 0, "an array");
    else
        wisp_errf(buf, cap, 0, "an object");
}

/* "<field>.<key>", or just "<key>" at the root (field NULL or ""). */
static void path_of(const char *field, const char *key, char *buf, size_t cap)
{
    if (field && *field)
        wisp_errf(buf, cap, 0, "%s.%s", field, key);
    else
        wisp_errf(buf, cap, 0, "%s", key);
}

int wisp_fnspec_check_keys(const struct cJSON *obj, const char *field, const char *const *known,
                           size_t n_known, char *err, size_t errlen)
{
    /* One pass with a bitmask instead of comparing every pair, so that a
     * document with many thousands of keys costs linear time. */
    uint64_t seen = 0;
    char show[SHOW_CAP];
    const char *where = field && *field ? field : "(root)";
    if (n_known > 64)
        return wisp_errf(err, errlen, -EINVAL, "%s: too many keys to check", where);
    for (const cJSON *c = obj ? obj->child : NULL; c; c = c->next) {
        const char *name = c->string ? c->string : "";
        size_t k = 0;
        while (k < n_known && strcmp(known[k], name) != 0)
            k++;
        if (k == n_known || (seen & (UINT64_C(1) << k)))
            wisp_fnspec_quote(name, strlen(name), show, sizeof(show));
        if (k == n_known) {
            char allowed[512];
            join(known, n_known, allowed, sizeof(allowed));
            return wisp_errf(err, errlen, -EINVAL, "%s: unknown key %s (allowed: %s)", where, show,
                             allowed);
        }
        if (seen & (UINT64_C(1) << k))
            return wisp_errf(err, errlen, -EINVAL, "%s: duplicate key %s", where, show);
        seen |= UINT64_C(1) << k;
    }
    return 0;
}

int wisp_fnspec_get_u32(const struct cJSON *obj, const char *field, const char *key, uint32_t min,
                        uint32_t max, uint32_t def, uint32_t *out, char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) {
        *out = def;
        return 0;
    }
    /* cJSON keeps every number as a double; a whole number in range converts
     * exactly, and the negated comparison also rejects NaN and infinities. */
    double v = item->valuedouble;
    if (cJSON_IsNumber(item) && !(v < (double)min) && !(v > (double)max) &&
        (double)(uint32_t)v == v) {
        *out = (uint32_t)v;
        return 0;
    }
    char path[PATH_CAP], show[SHOW_CAP];
    path_of(field, key, path, sizeof(path));
    wisp_fnspec_describe(item, show, sizeof(show));
    return wisp_errf(err, errlen, -EINVAL,
                     "%s: must be a whole number from %" PRIu32 " to %" PRIu32 ", got %s", path,
                     min, max, show);
}

int wisp_fnspec_get_str(const struct cJSON *obj, const char *field, const char *key, int required,
                        size_t max_bytes, const char **out, char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    char path[PATH_CAP], show[SHOW_CAP];
    path_of(field, key, path, sizeof(path));
    *out = NULL;
    if (!item && !required)
        return 0;
    if (!item)
        return wisp_errf(err, errlen, -EINVAL, "%s: missing; this key is required", path);
    if (!cJSON_IsString(item)) {
        wisp_fnspec_describe(item, show, sizeof(show));
        return wisp_errf(err, errlen, -EINVAL, "%s: must be a string, got %s", path, show);
    }
    size_t len = strlen(item->valuestring);
    if (len > max_bytes)
        return wisp_errf(err, errlen, -EINVAL, "%s: must be at most %zu bytes long, got %zu bytes",
                         path, max_bytes, len);
    *out = item->valuestring;
    return 0;
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

static void line_col(const char *buf, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Length of the UTF-8 sequence a lead byte announces, 0 when it is no lead. */
static size_t utf8_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        return 2;
    if ((c & 0xf0) == 0xe0)
        return 3;
    if ((c & 0xf8) == 0xf0)
        return 4;
    return 0;
}

/* Rejects what cJSON would accept or silently truncate: NUL bytes, control
 * characters, invalid UTF-8 and "\u0000" escapes (cJSON's strings are C
 * strings, so "a\u0000b" would quietly become "a"). */
static int prescan(const char *json, size_t len, char *err, size_t errlen)
{
    bool in_str = false;
    const char *what = NULL;
    size_t i = 0, line, col;
    while (i < len && !what) {
        unsigned char c = (unsigned char)json[i];
        size_t n = utf8_seq_len(c);
        if (c == 0)
            what = "a NUL byte";
        else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            what = "a control character";
        else if (n == 0 || n > len - i || !wisp_utf8_valid(json + i, n))
            what = "invalid UTF-8";
        else if (in_str && c == '\\' && i + 6 <= len && memcmp(json + i + 1, "u0000", 5) == 0)
            what = "a \\u0000 escape (strings cannot contain NUL)";
        if (what)
            break;
        /* Skip an escaped character, unless it starts a UTF-8 sequence
         * that still needs checking (cJSON rejects such an escape). */
        if (in_str && c == '\\')
            n = i + 1 < len && (unsigned char)json[i + 1] < 0x80 ? 2 : 1;
        else if (c == '"')
            in_str = !in_str;
        i += n;
    }
    if (!what)
        return 0;
    line_col(json, i, &line, &col);
    return wisp_errf(err, errlen, -EINVAL, "(json): %s at line %zu, column %zu", what, line, col);
}

static int parse_json(const char *json, size_t len, cJSON **out, char *err, size_t errlen)
{
    if (!json || len == 0)
        return wisp_errf(err, errlen, -EINVAL, "(json): empty document; expected a JSON object");
    if (len > (size_t)WISP_MAX_SPEC_BYTES)
        return wisp_errf(err, errlen, -EINVAL, "(json): %zu bytes, more than the limit of %u", len,
                         WISP_MAX_SPEC_BYTES);
    int rc = prescan(json, len, err, errlen);
    if (rc)
        return rc;
    /* The input need not be NUL-terminated; cJSON wants the terminator
     * inside the length to reject trailing garbage. */
    char *copy = wisp_strndup(json, len);
    if (!copy)
        return -ENOMEM;
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(copy, len + 1, &end, 1);
    if (!*out) {
        size_t off = end && end >= copy && end <= copy + len ? (size_t)(end - copy) : 0, line, col;
        char show[SHOW_CAP];
        line_col(copy, off, &line, &col);
        wisp_fnspec_quote(copy + off, strcspn(copy + off, "\r\n"), show, 24);
        rc = wisp_errf(err, errlen, -EINVAL, "(json): invalid JSON at line %zu, column %zu near %s",
                       line, col, show);
    }
    free(copy);
    return rc;
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
    static const char *const keys[] = {"name",     "description", "version", "runtime", "handler",
                                       "triggers", "limits",      "retry",   "env"};
    int rc;
    if (!cJSON_IsObject(root))
        return bad_value("(root)", "must be a JSON object", root, err, errlen);
    if ((rc = wisp_fnspec_check_keys(root, NULL, keys, WISP_ARRAY_LEN(keys), err, errlen)) ||
        (rc = parse_identity(root, spec, err, errlen)) ||
        (rc = parse_handler(root, spec, err, errlen)) ||
        (rc = parse_triggers(root, spec, err, errlen)) ||
        (rc = parse_limits(root, spec, err, errlen)) || (rc = parse_retry(root, spec, err, errlen)))
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
    rc = parse_json(json, len, &root, msg, sizeof(msg));
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

/* Feeds one named part into the content hash: name, bytes, then the length,
 * so that moving bytes between parts changes the version. */
static uint64_t hash_tail(uint64_t h, uint64_t len)
{
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(len >> (8 * i));
    return wisp_fnv1a64(h, le, sizeof(le));
}

static int hash_file(uint64_t *h, const char *name, const char *path)
{
    char buf[16384];
    uint64_t total = 0;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    *h = wisp_fnv1a64(*h, name, strlen(name) + 1);
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : 0;
            break;
        }
        *h = wisp_fnv1a64(*h, buf, (size_t)r);
        total += (uint64_t)r;
    }
    *h = hash_tail(*h, total);
    close(fd);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Lists lib/ *.lua (regular files) sorted by name into *names. */
static int list_lib(const char *libdir, char ***names, size_t *n)
{
    int rc = 0;
    size_t cap = 0;
    DIR *d = opendir(libdir);
    *names = NULL;
    *n = 0;
    if (!d)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
    for (const struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".lua") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(*names, cap * sizeof(**names));
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            *names = grown;
        }
        if (!((*names)[*n] = wisp_strndup(e->d_name, len))) {
            rc = -ENOMEM;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(*names, *n, sizeof(**names), cmp_names);
    return rc;
}

static int hash_lib(uint64_t *h, const char *dir, char *msg, size_t cap)
{
    char **names = NULL;
    size_t n = 0;
    char *libdir = wisp_path_join(dir, "lib");
    int rc = libdir ? list_lib(libdir, &names, &n) : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char label[PATH_MAX];
        char *path = wisp_path_join(libdir, names[i]);
        struct stat st;
        if (!path) {
            rc = -ENOMEM;
            break;
        }
        wisp_errf(label, sizeof(label), 0, "lib/%s", names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            rc = hash_file(h, label, path);
        free(path);
    }
    if (rc && rc != -ENOMEM)
        wisp_errf(msg, cap, rc, "lib: cannot read %s: %s", libdir, strerror(-rc));
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(libdir);
    return rc;
}

/* Resolves the handler and checks that it is a regular file inside the
 * folder even through symlinks. *out is malloc'd. */
static int resolve_handler(const char *dir, const char *handler, char **out, char *msg, size_t cap)
{
    char show[SHOW_CAP];
    if (!handler)
        return -EINVAL; /* parse always sets it; this keeps the analyzer sure */
    char *path = wisp_path_join(dir, handler), *root = realpath(dir, NULL);
    char *real = path ? realpath(path, NULL) : NULL;
    int rc = 0, e = errno;
    struct stat st;
    wisp_fnspec_quote(handler, strlen(handler), show, sizeof(show));
    if (!path || (!real && e == ENOMEM)) {
        rc = -ENOMEM;
    } else if (!real || !root) {
        rc = wisp_errf(msg, cap, -EINVAL, "handler: file %s not found in %s%s%s", show, dir,
                       e == ENOENT || e == ENOTDIR ? "" : ": ",
                       e == ENOENT || e == ENOTDIR ? "" : strerror(e));
    } else if (strncmp(real, root, strlen(root)) != 0 ||
               (real[strlen(root)] != '/' && strcmp(root, "/") != 0)) {
        rc = wisp_errf(msg, cap, -EINVAL, "handler: %s leads outside %s (to %s)", show, dir, real);
    } else if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = wisp_errf(msg, cap, -EINVAL, "handler: %s in %s is not a regular file", show, dir);
    } else {
        *out = real;
        real = NULL;
    }
    free(path);
    free(root);
    free(real);
    return rc;
}

int wisp_fnspec_load(const char *dir, struct wisp_fnspec **out, char *err, size_t errlen)
{
    char msg[MSG_CAP] = "", *origin = NULL, *json = NULL, *handler = NULL;
    size_t len = 0;
    struct wisp_fnspec *spec = NULL;
    int rc;
    *out = NULL;
    if (!dir)
        return wisp_errf(err, errlen, -EINVAL, "function.json:(root): no folder given");
    if (!(origin = wisp_path_join(dir, "function.json")))
        return wisp_errf(err, errlen, -ENOMEM, "%s/function.json: out of memory", dir);
    rc = wisp_read_file(origin, (size_t)WISP_MAX_SPEC_BYTES, &json, &len);
    if (rc == -EFBIG)
        wisp_errf(msg, sizeof(msg), -EINVAL, "(json): more than the limit of %u bytes",
                  WISP_MAX_SPEC_BYTES);
    else if (rc)
        wisp_errf(msg, sizeof(msg), rc, "(json): cannot read: %s", strerror(-rc));
    if (rc == -EFBIG)
        rc = -EINVAL;
    if (rc)
        goto out;
    rc = wisp_fnspec_parse(json, len, origin, dir, &spec, err, errlen);
    if (rc)
        goto out;
    rc = resolve_handler(dir, spec->handler, &handler, msg, sizeof(msg));
    if (rc == 0 && spec->version[0] == '\0') {
        uint64_t h = wisp_fnv1a64(WISP_FNV1A64_INIT, "function.json", sizeof("function.json"));
        h = hash_tail(wisp_fnv1a64(h, json, len), len);
        rc = hash_file(&h, spec->handler, handler);
        if (rc)
            wisp_errf(msg, sizeof(msg), rc, "handler: cannot read %s: %s", handler, strerror(-rc));
        else
            rc = hash_lib(&h, dir, msg, sizeof(msg));
        char version[17];
        wisp_errf(version, sizeof(version), 0, "%012" PRIx64, h >> 16);
        char *dup = rc == 0 ? wisp_strndup(version, 12) : NULL;
        if (rc == 0 && !dup)
            rc = -ENOMEM;
        if (dup) {
            free(spec->version);
            spec->version = dup;
        }
    }
    if (rc == 0) {
        *out = spec;
        spec = NULL;
    }
out:
    if (rc == -ENOMEM)
        wisp_errf(err, errlen, rc, "%s: out of memory", origin);
    else if (rc && msg[0])
        wisp_errf(err, errlen, rc, "%s:%s", origin, msg);
    wisp_fnspec_destroy(spec);
    free(handler);
    free(json);
    free(origin);
    return rc;
}
