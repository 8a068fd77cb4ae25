/*
 * The strict-JSON half of function.json parsing: the checks trigger kinds
 * share (keys, numbers, strings), the one-line renderings of values used in
 * error messages, and the raw-byte checks that run before cJSON sees the text.
 */
#include "fnspec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fnspec_internal.h"
#include "util.h"

void wisp_fnspec_join(const char *const *names, size_t n, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used + 1 < cap; i++) {
        wisp_errf(buf + used, cap - used, 0, "%s%s", i ? ", " : "", names[i]);
        used += strlen(buf + used);
    }
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
            wisp_fnspec_join(known, n_known, allowed, sizeof(allowed));
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

int wisp_fnspec_get_double(const struct cJSON *obj, const char *field, const char *key, double min,
                           double max, double *out, bool *present, char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    *present = item != NULL;
    if (!item)
        return 0;
    double v = item->valuedouble;
    if (cJSON_IsNumber(item) && !(v < min) && !(v > max)) {
        *out = v;
        return 0;
    }
    char path[PATH_CAP], show[SHOW_CAP];
    path_of(field, key, path, sizeof(path));
    wisp_fnspec_describe(item, show, sizeof(show));
    return wisp_errf(err, errlen, -EINVAL, "%s: must be a number from %g to %g, got %s", path, min,
                     max, show);
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

int wisp_fnspec_parse_json(const char *json, size_t len, cJSON **out, char *err, size_t errlen)
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
