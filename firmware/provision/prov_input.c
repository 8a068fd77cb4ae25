/*
 * The provisioning file: strict JSON with a fixed set of keys. Every
 * problem is reported (not only the first), because the file is usually
 * edited on another machine and each round trip costs a reboot.
 */
#include "prov.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

enum {
    MAX_LABELS = 64,
    MAX_LABEL_LEN = 63,
    MAX_TRUSTED = 32,
    MAX_TOKEN = 4096,
    MAX_MQTT_STRING = 65535, /* MQTT's limit for a UTF-8 string */
    MAX_HOST = 253,
    MAX_CA = 256 * 1024,
    MAX_KEY_PEM = 16 * 1024,
};

struct parse {
    const char *path;
    FILE *errs;
    int problems;
    bool oom;
};

static void bad(struct parse *ps, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void bad(struct parse *ps, const char *key, const char *fmt, ...)
{
    va_list ap;
    ps->problems++;
    (void)fprintf(ps->errs, "%s:%s: ", ps->path, key);
    va_start(ap, fmt);
    (void)vfprintf(ps->errs, fmt, ap);
    va_end(ap);
    (void)fputc('\n', ps->errs);
}

/* A secret that is still the placeholder of a FILE.done copied back. */
static bool redacted(struct parse *ps, const char *key, const cJSON *v)
{
    if (!cJSON_IsString(v) || strcmp(v->valuestring, WISP_PROV_REDACTED) != 0)
        return false;
    bad(ps, key, "still the placeholder of a .done file: put the secret back");
    return true;
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* [A-Za-z0-9][A-Za-z0-9._-]* of 1..max bytes; ending in an alphanumeric
 * when end_alnum. */
static bool name_valid(const char *s, size_t max, bool end_alnum)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || !is_alnum(s[0]) || (end_alnum && !is_alnum(s[n - 1])))
        return false;
    for (size_t i = 1; i < n; i++) {
        if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    }
    return true;
}

bool wisp_prov_device_id_valid(const char *s)
{
    return name_valid(s, 64, false);
}

/* A host name or IPv4 address: letters, digits, '.', '-' and '_', not
 * starting with '.' or '-'. */
static bool host_valid(const char *h, size_t n)
{
    if (n == 0 || n > MAX_HOST || h[0] == '.' || h[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum(h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_')
            return false;
    }
    return true;
}

/* An IPv6 literal between brackets: hex digits, ':' and '.'. */
static bool ipv6_valid(const char *h, size_t n)
{
    if (n < 2)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!is_digit(c) && !(c >= 'a' && c <= 'f') && !(c >= 'A' && c <= 'F') && c != ':' &&
            c != '.')
            return false;
    }
    return true;
}

/* host[:port] or [v6][:port], nothing after the port. */
static bool authority_valid(const char *s)
{
    const char *end;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || !ipv6_valid(s + 1, (size_t)(close - s - 1)))
            return false;
        end = close + 1;
    } else {
        end = s + strcspn(s, ":");
        if (!host_valid(s, (size_t)(end - s)))
            return false;
    }
    if (*end == '\0')
        return true;
    if (*end != ':' || end[1] == '\0' || strlen(end + 1) > 5)
        return false;
    for (const char *p = end + 1; *p; p++) {
        if (!is_digit(*p))
            return false;
    }
    int64_t port;
    return wisp_parse_i64(end + 1, 1, 65535, &port) == 0;
}

static void check_broker(struct parse *ps, struct wisp_prov_input *in, const cJSON *v)
{
    static const struct {
        const char *prefix;
        bool tls;
    } schemes[] = {{"tcp://", false}, {"mqtt://", false}, {"ssl://", true}, {"mqtts://", true}};
    if (!cJSON_IsString(v)) {
        bad(ps, "broker", "must be a string like \"mqtts://broker.example:8883\"");
        return;
    }
    const char *s = v->valuestring;
    for (size_t i = 0; i < WISP_ARRAY_LEN(schemes); i++) {
        size_t n = strlen(schemes[i].prefix);
        if (strncmp(s, schemes[i].prefix, n) != 0)
            continue;
        if (!authority_valid(s + n)) {
            bad(ps, "broker",
                "\"%.300s\": expected %shost[:port] (a host name, an IPv4 address or [IPv6], a "
                "port from 1 to 65535, nothing after it)",
                s, schemes[i].prefix);
            return;
        }
        in->broker = s;
        in->tls = schemes[i].tls;
        return;
    }
    bad(ps, "broker", "\"%.300s\": must start with tcp://, mqtt://, ssl:// or mqtts://", s);
}

static void check_ca(struct parse *ps, struct wisp_prov_input *in, const cJSON *v)
{
    char err[256];
    if (!cJSON_IsString(v) || strlen(v->valuestring) > MAX_CA) {
        bad(ps, "ca",
            "must be a string of PEM text (\"-----BEGIN CERTIFICATE-----\\n...\"), at "
            "most 256 KiB");
        return;
    }
    if (wisp_prov_ca_check(v->valuestring, err, sizeof(err)) != 0) {
        bad(ps, "ca", "%s", err);
        return;
    }
    in->ca = v->valuestring;
}

static void check_token(struct parse *ps, struct wisp_prov_input *in, const cJSON *v)
{
    if (redacted(ps, "fleet_token", v))
        return;
    bool ok = cJSON_IsString(v) && v->valuestring[0] != '\0' && strlen(v->valuestring) <= MAX_TOKEN;
    for (const char *p = ok ? v->valuestring : ""; *p; p++) {
        if (*p < 0x21 || *p > 0x7e)
            ok = false;
    }
    /* The message never repeats the value: it is a secret. */
    if (!ok) {
        bad(ps, "fleet_token",
            "must be a string of 1 to %d printable ASCII characters without "
            "spaces",
            MAX_TOKEN);
        return;
    }
    in->fleet_token = v->valuestring;
}

static void check_labels(struct parse *ps, struct wisp_prov_input *in, const cJSON *v)
{
    if (!cJSON_IsObject(v)) {
        bad(ps, "labels", "must be an object of strings, like {\"site\": \"plant-3\"}");
        return;
    }
    int n = cJSON_GetArraySize(v), before = ps->problems;
    if (n > MAX_LABELS)
        bad(ps, "labels", "%d labels: at most %d are allowed", n, MAX_LABELS);
    for (const cJSON *it = v->child; it; it = it->next) {
        if (!name_valid(it->string, MAX_LABEL_LEN, true)) {
            bad(ps, "labels",
                "key \"%.100s\": must be 1 to %d of A-Z a-z 0-9 . _ -, starting "
                "and ending with a letter or digit",
                it->string, MAX_LABEL_LEN);
            continue;
        }
        char key[80];
        (void)snprintf(key, sizeof(key), "labels.%s", it->string);
        if (!cJSON_IsString(it)) {
            bad(ps, key, "must be a string");
            continue;
        }
        const char *val = it->valuestring;
        if (*val && !name_valid(val, MAX_LABEL_LEN, true))
            bad(ps, key,
                "\"%.100s\": must be empty or 1 to %d of A-Z a-z 0-9 . _ -, starting and "
                "ending with a letter or digit",
                val, MAX_LABEL_LEN);
    }
    if (ps->problems == before)
        in->labels = v;
}

static void check_trusted(struct parse *ps, struct wisp_prov_input *in, const cJSON *v)
{
    int n = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || n > MAX_TRUSTED) {
        bad(ps, "trusted_keys", "must be an array of at most %d PEM public keys", MAX_TRUSTED);
        return;
    }
    in->has_trusted = true;
    in->trusted = calloc((size_t)n + 1, sizeof(*in->trusted));
    if (!in->trusted) {
        ps->oom = true;
        return;
    }
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++) {
        char key[32], err[256];
        (void)snprintf(key, sizeof(key), "trusted_keys[%d]", i);
        if (!cJSON_IsString(it) || strlen(it->valuestring) > MAX_KEY_PEM) {
            bad(ps, key, "must be a string of PEM text (\"-----BEGIN PUBLIC KEY-----\\n...\")");
            continue;
        }
        struct wisp_prov_key k;
        int rc = wisp_prov_pubkey_parse(it->valuestring, &k, err, sizeof(err));
        if (rc == -ENOMEM)
            ps->oom = true;
        if (rc) {
            bad(ps, key, "%s", err);
            continue;
        }
        size_t dup = 0;
        while (dup < in->n_trusted && strcmp(in->trusted[dup].hash, k.hash) != 0)
            dup++;
        if (dup < in->n_trusted) {
            bad(ps, key, "the same key as trusted_keys[%zu] (sha256 %s)", dup, k.hash);
            wisp_prov_key_fini(&k);
            continue;
        }
        in->trusted[in->n_trusted++] = k;
    }
}

static void check_device_id(struct parse *ps, struct wisp_prov_input *in, const cJSON *v)
{
    if (!cJSON_IsString(v) || !wisp_prov_device_id_valid(v->valuestring)) {
        bad(ps, "device_id",
            "must be 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or "
            "digit (it names the device in MQTT topics)");
        return;
    }
    in->device_id = v->valuestring;
}

static bool mqtt_string(const cJSON *v)
{
    if (!cJSON_IsString(v))
        return false;
    size_t n = strlen(v->valuestring);
    return n > 0 && n <= MAX_MQTT_STRING && wisp_utf8_valid(v->valuestring, n);
}

static void check_mqtt(struct parse *ps, struct wisp_prov_input *in, const cJSON *v)
{
    if (!cJSON_IsObject(v)) {
        bad(ps, "mqtt", "must be an object: {\"username\": \"...\", \"password\": \"...\"}");
        return;
    }
    for (const cJSON *it = v->child; it; it = it->next) {
        char key[160];
        (void)snprintf(key, sizeof(key), "mqtt.%.100s", it->string);
        if (strcmp(it->string, "username") == 0) {
            if (mqtt_string(it))
                in->username = it->valuestring;
            else
                bad(ps, key, "must be a string of 1 to %d bytes of UTF-8", MAX_MQTT_STRING);
        } else if (strcmp(it->string, "password") == 0) {
            if (redacted(ps, key, it))
                continue;
            if (mqtt_string(it))
                in->password = it->valuestring;
            else
                bad(ps, key, "must be a string of 1 to %d bytes of UTF-8", MAX_MQTT_STRING);
        } else {
            bad(ps, key, "unknown key (allowed: username, password)");
        }
    }
    if (in->password && !in->username)
        bad(ps, "mqtt.password", "needs mqtt.username");
}

static const struct field {
    const char *key;
    void (*check)(struct parse *ps, struct wisp_prov_input *in, const cJSON *v);
} fields[] = {
    {"broker", check_broker},
    {"ca", check_ca},
    {"fleet_token", check_token},
    {"labels", check_labels},
    {"trusted_keys", check_trusted},
    {"device_id", check_device_id},
    {"mqtt", check_mqtt},
};

/* cJSON keeps the last of two equal keys without a word: look for them. */
static void check_duplicates(struct parse *ps, const cJSON *node, const char *where)
{
    int i = 0;
    for (const cJSON *a = node->child; a; a = a->next, i++) {
        char key[256];
        if (cJSON_IsObject(node))
            (void)snprintf(key, sizeof(key), "%s%s%.100s", where, *where ? "." : "", a->string);
        else
            (void)snprintf(key, sizeof(key), "%s[%d]", where, i);
        if (cJSON_IsObject(node)) {
            for (const cJSON *b = a->next; b; b = b->next) {
                if (strcmp(a->string, b->string) == 0) {
                    bad(ps, key, "duplicate key");
                    break;
                }
            }
        }
        if (cJSON_IsObject(a) || cJSON_IsArray(a))
            check_duplicates(ps, a, key);
    }
}

/* cJSON ends a string at an escaped NUL (\u0000) without a word: refuse it. */
static bool has_escaped_nul(const char *text, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] != '\\')
            continue;
        if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0)
            return true;
        i++; /* the escaped character */
    }
    return false;
}

static bool parse_text(struct parse *ps, struct wisp_prov_input *in, const char *text, size_t len)
{
    if (!wisp_utf8_valid(text, len)) {
        bad(ps, "1", "not UTF-8 text (or it holds NUL bytes)");
        return false;
    }
    if (has_escaped_nul(text, len)) {
        bad(ps, "1", "\\u0000 (a NUL character) is not allowed in any value");
        return false;
    }
    const char *end = NULL;
    in->root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!in->root || !cJSON_IsObject(in->root)) {
        size_t off = end && end >= text ? (size_t)(end - text) : 0, line = 1;
        for (size_t i = 0; i < off && i < len; i++)
            line += text[i] == '\n';
        char where[32];
        (void)snprintf(where, sizeof(where), "%zu", line);
        bad(ps, where, "%s", in->root ? "the file must hold one JSON object" : "invalid JSON");
        return false;
    }
    return true;
}

int wisp_prov_input_parse(struct wisp_prov_input *in, const char *path, const char *text,
                          size_t len, FILE *errs)
{
    struct parse ps = {.path = path, .errs = errs};
    memset(in, 0, sizeof(*in));
    if (!parse_text(&ps, in, text, len))
        return ps.problems;
    check_duplicates(&ps, in->root, "");
    for (const cJSON *it = in->root->child; it; it = it->next) {
        size_t i = 0;
        while (i < WISP_ARRAY_LEN(fields) && strcmp(fields[i].key, it->string) != 0)
            i++;
        if (i == WISP_ARRAY_LEN(fields)) {
            bad(&ps, it->string,
                "unknown key (allowed: broker, ca, fleet_token, labels, trusted_keys, "
                "device_id, mqtt)");
            continue;
        }
        fields[i].check(&ps, in, it);
    }
    if (!cJSON_GetObjectItemCaseSensitive(in->root, "broker"))
        bad(&ps, "broker",
            "required: the MQTT broker, tcp://, mqtt://, ssl:// or "
            "mqtts://host:port");
    if (in->ca && in->broker && !in->tls)
        bad(&ps, "ca", "only used with an ssl:// or mqtts:// broker, and broker is \"%.300s\"",
            in->broker);
    if (ps.oom)
        return -ENOMEM;
    return ps.problems;
}

static void wipe_item(cJSON *parent, const char *key)
{
    cJSON *it = cJSON_GetObjectItemCaseSensitive(parent, key);
    if (cJSON_IsString(it))
        explicit_bzero(it->valuestring, strlen(it->valuestring));
}

void wisp_prov_input_fini(struct wisp_prov_input *in)
{
    wipe_item(in->root, "fleet_token");
    wipe_item(cJSON_GetObjectItemCaseSensitive(in->root, "mqtt"), "password");
    cJSON_Delete(in->root);
    for (size_t i = 0; i < in->n_trusted; i++)
        wisp_prov_key_fini(&in->trusted[i]);
    free(in->trusted);
    memset(in, 0, sizeof(*in));
}

static bool redact(cJSON *parent, const char *key, const char *note)
{
    if (!cJSON_GetObjectItemCaseSensitive(parent, key))
        return true;
    cJSON *s = cJSON_CreateString(note);
    return s && cJSON_ReplaceItemInObjectCaseSensitive(parent, key, s);
}

char *wisp_prov_input_redacted(const struct wisp_prov_input *in, const char *note)
{
    cJSON *copy = cJSON_Duplicate(in->root, 1);
    char *text = NULL;
    /* Wiped first: replacing an item frees it as it is. */
    wipe_item(copy, "fleet_token");
    wipe_item(cJSON_GetObjectItemCaseSensitive(copy, "mqtt"), "password");
    if (copy && redact(copy, "fleet_token", note) &&
        redact(cJSON_GetObjectItemCaseSensitive(copy, "mqtt"), "password", note))
        text = cJSON_Print(copy);
    cJSON_Delete(copy);
    return text;
}
