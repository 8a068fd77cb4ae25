#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

enum opt_type { OPT_STR, OPT_INT, OPT_BOOL };

struct opt {
    const char *key;  /* dotted key in the config file */
    const char *flag; /* command-line flag without "--", or NULL */
    enum opt_type type;
    size_t offset;
    const char *def; /* default, as text (NULL: unset) */
    long min, max;   /* for OPT_INT */
    const char *help;
};

#define OFF(f) offsetof(struct wisp_config, f)

static const struct opt opts[] = {
    {"functions", "functions", OPT_STR, OFF(functions), NULL, 0, 0,
     "folder holding one folder per function"},
    {"broker", "broker", OPT_STR, OFF(broker), "tcp://127.0.0.1:1883", 0, 0,
     "MQTT broker URI: tcp://, mqtt://, ssl:// or mqtts://host:port"},
    {"data", "data", OPT_STR, OFF(data), "/var/lib/wisp", 0, 0,
     "data directory (created and checked at start)"},
    {"device", "device", OPT_STR, OFF(device), NULL, 0, 0,
     "device id used in event sources and the client id (default: host name)"},
    {"log_level", "log-level", OPT_STR, OFF(log_level), "info", 0, 0, "debug, info, warn or error"},
    {"mqtt.client_id", "client-id", OPT_STR, OFF(client_id), NULL, 0, 0,
     "MQTT client id (default: wisp-<device>)"},
    {"mqtt.version", "mqtt-version", OPT_INT, OFF(mqtt_version), "5", 3, 5,
     "MQTT protocol: 3 (3.1.1) or 5"},
    {"mqtt.keepalive_s", NULL, OPT_INT, OFF(keepalive_s), "30", 5, 3600, "keep-alive interval"},
    {"mqtt.clean_start", NULL, OPT_BOOL, OFF(clean_start), "true", 0, 0,
     "start a clean session on every connect"},
    {"mqtt.username", NULL, OPT_STR, OFF(username), NULL, 0, 0, "user name"},
    {"mqtt.password", NULL, OPT_STR, OFF(password), NULL, 0, 0, "password"},
    {"mqtt.reconnect_min_ms", NULL, OPT_INT, OFF(reconnect_min_ms), "250", 50, 600000,
     "first reconnect delay; doubles per failure"},
    {"mqtt.reconnect_max_ms", NULL, OPT_INT, OFF(reconnect_max_ms), "30000", 1000, 3600000,
     "longest reconnect delay"},
    {"mqtt.max_buffered", NULL, OPT_INT, OFF(max_buffered), "10000", 1, 10000000,
     "outgoing messages kept while disconnected (beyond, new ones are refused and counted)"},
    {"mqtt.tls.ca", "tls-ca", OPT_STR, OFF(tls_ca), NULL, 0, 0,
     "CA certificate (PEM) to verify the broker"},
    {"mqtt.tls.cert", "tls-cert", OPT_STR, OFF(tls_cert), NULL, 0, 0, "client certificate (PEM)"},
    {"mqtt.tls.key", "tls-key", OPT_STR, OFF(tls_key), NULL, 0, 0, "client private key (PEM)"},
    {"mqtt.tls.insecure", NULL, OPT_BOOL, OFF(tls_insecure), "false", 0, 0,
     "do not verify the broker's certificate (testing only)"},
    {"mqtt.client", "mqtt-client", OPT_STR, OFF(mqtt_client), "wisp", 0, 0,
     "wisp: one connection through wispd's own MQTT client (tcp://, mqtt://, and ssl:// and "
     "mqtts:// over mbedTLS; Paho only for ws:// and wss://); paho: Paho for everything but "
     "durable triggers"},
    {"mqtt.durable_session_expiry_s", NULL, OPT_INT, OFF(durable_expiry_s), "604800", 0, INT_MAX,
     "MQTT 5: how long the broker keeps the durable session (and queues its messages) after "
     "wispd disconnects; 0: forever"},
    {"executors.max", "max-executors", OPT_INT, OFF(executors_max), "16", 1, 1024,
     "executor processes gateway-wide"},
    {"executors.idle_timeout_ms", "idle-timeout-ms", OPT_INT, OFF(idle_timeout_ms), "60000", 0,
     INT_MAX, "stop an executor idle this long (0: never); the next event is a cold start"},
    {"executors.queue_max", NULL, OPT_INT, OFF(queue_max), "10000", 1, 10000000,
     "events waiting per function before new ones are dropped"},
    {"events.max_payload_kb", NULL, OPT_INT, OFF(max_payload_kb), "1024", 1, 65536,
     "largest accepted payload; larger messages are logged and dropped"},
    {"shutdown_timeout_ms", "shutdown-timeout-ms", OPT_INT, OFF(shutdown_timeout_ms), "10000", 0,
     600000, "on SIGTERM, how long in-flight and queued events may take to finish"},
    {"ports.sysfs_root", "sysfs-root", OPT_STR, OFF(sysfs_root), "/sys", 0, 0,
     "where sensor ports read sysfs (IIO, 1-Wire, thermal zones)"},
    {"ports.dev_root", "dev-root", OPT_STR, OFF(dev_root), "/dev", 0, 0,
     "where the GPIO port finds gpiochipN character devices"},
    {"store.durability", "durability", OPT_STR, OFF(durability), "sync", 0, 0,
     "sync: every commit is on disk before anything is acknowledged or sent; batch: the same, "
     "committed every store.batch_ms or store.batch_events; none: no fsync (a power cut can "
     "lose or corrupt recent commits; a crash of wispd alone loses nothing)"},
    {"store.batch_ms", NULL, OPT_INT, OFF(batch_ms), "10", 1, 10000,
     "batch durability: longest wait before a commit"},
    {"store.batch_events", NULL, OPT_INT, OFF(batch_events), "256", 1, 1000000,
     "batch durability: commit once this many changes wait"},
    {"store.map_max_mb", NULL, OPT_INT, OFF(map_max_mb), sizeof(void *) == 4 ? "512" : "1024", 1,
     sizeof(void *) == 4 ? 1400 : 1048576,
     "largest the store may grow to; it starts small and doubles when full"},
    {"store.outbox_max_mb", NULL, OPT_INT, OFF(outbox_max_mb), "64", 1, 1048576,
     "bytes of unsent messages kept (for a broker that is away)"},
    {"store.outbox_full", NULL, OPT_STR, OFF(outbox_full), "refuse", 0, 0,
     "when the outbox is full: refuse (events wait, intake pauses) or drop_oldest (counted)"},
    {"state.max_kb", NULL, OPT_INT, OFF(state_max_kb), "16384", 1, 1048576,
     "state one function may hold (keys and values)"},
    {"store.inbox_max", NULL, OPT_INT, OFF(inbox_max), "10000", 1, 10000000,
     "durable events in memory before the durable session stops reading (the broker holds "
     "the rest)"},
    {"cloud.enabled", "cloud", OPT_BOOL, OFF(cloud_enabled), "false", 0, 0,
     "fleet sync with the control plane over the broker (wisp/v1/...): desired functions, "
     "signed bundles, reported state, metering; works with either mqtt.client and with TLS "
     "brokers (ssl://, mqtts://)"},
    {"cloud.trust", "cloud-trust", OPT_STR, OFF(cloud_trust), "/etc/wisp/trust", 0, 0,
     "folder of trusted publisher keys (*.pem, P-256) that bundles must be signed with"},
    {"cloud.dev_unsigned", NULL, OPT_BOOL, OFF(cloud_dev_unsigned), "false", 0, 0,
     "development only: accept unsigned bundles (a signed one must still verify); logs a "
     "WARNING at start and for every such bundle"},
    {"cloud.labels", "cloud-labels", OPT_STR, OFF(cloud_labels), NULL, 0, 0,
     "the device's labels, \"k=v,k2=v2\" (default: from cloud.identity)"},
    {"cloud.token", "cloud-token", OPT_STR, OFF(cloud_token), NULL, 0, 0,
     "fleet token sent in hello (default: from cloud.identity)"},
    {"cloud.identity", "cloud-identity", OPT_STR, OFF(cloud_identity), NULL, 0, 0,
     "device.json written by provisioning ({\"device_id\", \"labels\", \"fleet_token\"}): "
     "labels and token unless given above; a missing file is an error"},
    {"cloud.meter_batch", NULL, OPT_INT, OFF(cloud_meter_batch), "500", 1, 5000,
     "metering records per batch sent to the control plane"},
    {"cloud.meter_interval_ms", NULL, OPT_INT, OFF(cloud_meter_interval_ms), "1000", 10, 3600000,
     "how often a batch that is not full is sent (a full one goes at once)"},
    {"cloud.health_min_invocations", NULL, OPT_INT, OFF(cloud_health_min_invocations), "10", 1,
     1000000,
     "health check of a new managed version: invocations watched (unless the desired state "
     "says otherwise)"},
    {"cloud.health_max_error_pct", NULL, OPT_INT, OFF(cloud_health_max_error_pct), "50", 0, 100,
     "health check: failures beyond this percentage of min_invocations roll the version back"},
    {"cloud.max_bundle_kb", NULL, OPT_INT, OFF(cloud_max_bundle_kb), "8192", 16, 204800,
     "largest function bundle accepted from the control plane"},
};

static const struct opt *find_key(const char *key)
{
    for (size_t i = 0; i < WISP_ARRAY_LEN(opts); i++) {
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    }
    return NULL;
}

static const struct opt *find_flag(const char *flag)
{
    for (size_t i = 0; i < WISP_ARRAY_LEN(opts); i++) {
        if (opts[i].flag && strcmp(opts[i].flag, flag) == 0)
            return &opts[i];
    }
    return NULL;
}

bool wisp_config_is_flag(const char *flag)
{
    return find_flag(flag) != NULL;
}

bool wisp_config_flag_is_bool(const char *flag)
{
    const struct opt *o = find_flag(flag);
    return o && o->type == OPT_BOOL;
}

static int apply(struct wisp_config *c, const struct opt *o, const char *value, const char *where,
                 char *err, size_t errlen)
{
    char *base = (char *)c;
    switch (o->type) {
    case OPT_STR: {
        char **slot = (char **)(void *)(base + o->offset);
        char *v = wisp_strndup(value, strlen(value));
        if (!v)
            return -ENOMEM;
        free(*slot);
        *slot = v;
        return 0;
    }
    case OPT_INT: {
        int64_t v;
        if (wisp_parse_i64(value, o->min, o->max, &v) != 0)
            return wisp_errf(err, errlen, -EINVAL,
                             "%s%s: must be a whole number from %ld to %ld, got \"%s\"", where,
                             o->key, o->min, o->max, value);
        *(int *)(void *)(base + o->offset) = (int)v;
        return 0;
    }
    case OPT_BOOL:
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
            return wisp_errf(err, errlen, -EINVAL, "%s%s: must be true or false, got \"%s\"", where,
                             o->key, value);
        *(bool *)(void *)(base + o->offset) = value[0] == 't';
        return 0;
    }
    return -EINVAL;
}

void wisp_config_defaults(struct wisp_config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < WISP_ARRAY_LEN(opts); i++) {
        if (opts[i].def)
            (void)apply(c, &opts[i], opts[i].def, "", NULL, 0);
    }
}

void wisp_config_fini(struct wisp_config *c)
{
    cJSON_Delete(c->sensors);
    cJSON_Delete(c->gpio);
    free(c->origin);
    c->sensors = c->gpio = NULL;
    c->origin = NULL;
    for (size_t i = 0; i < WISP_ARRAY_LEN(opts); i++) {
        if (opts[i].type == OPT_STR) {
            char **slot = (char **)(void *)((char *)c + opts[i].offset);
            free(*slot);
            *slot = NULL;
        }
    }
}

int wisp_config_set(struct wisp_config *c, const char *key, const char *value, char *err,
                    size_t errlen)
{
    const struct opt *o = find_flag(key);
    if (!o)
        o = find_key(key);
    if (!o)
        return wisp_errf(err, errlen, -EINVAL, "unknown setting \"%s\"", key);
    return apply(c, o, value, "", err, errlen);
}

/* Walks a JSON object, turning leaves into dotted keys. */
/* Keeps a copy of the "sensors" or "gpio" section; devices.c checks it. */
static int keep_section(cJSON **slot, const cJSON *it, const char *path, char *err, size_t errlen)
{
    if (!cJSON_IsObject(it))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s:%s: must be an object of named settings, like "
                         "{\"cpu\": {\"port\": \"thermal\", \"zone\": \"thermal_zone0\"}}",
                         path, it->string);
    cJSON *copy = cJSON_Duplicate(it, 1);
    if (!copy)
        return -ENOMEM;
    cJSON_Delete(*slot);
    *slot = copy;
    return 0;
}

static int load_obj(struct wisp_config *c, const cJSON *obj, const char *prefix, const char *path,
                    char *err, size_t errlen)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        char key[128];
        /* A key too long for the buffer is cut, then rejected as unknown. */
        (void)snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", it->string);
        const struct opt *o = find_key(key);
        if (!*prefix && (strcmp(key, "sensors") == 0 || strcmp(key, "gpio") == 0)) {
            int rc = keep_section(strcmp(key, "gpio") == 0 ? &c->gpio : &c->sensors, it, path, err,
                                  errlen);
            if (rc)
                return rc;
            continue;
        }
        if (cJSON_IsObject(it) && !o) {
            int rc = load_obj(c, it, key, path, err, errlen);
            if (rc)
                return rc;
            continue;
        }
        if (!o)
            return wisp_errf(err, errlen, -EINVAL, "%s:%s: unknown setting (see wispd --help)",
                             path, key);
        char text[64];
        const char *value = NULL;
        if (o->type == OPT_STR && cJSON_IsString(it)) {
            value = it->valuestring;
        } else if (o->type == OPT_BOOL && cJSON_IsBool(it)) {
            value = cJSON_IsTrue(it) ? "true" : "false";
        } else if (o->type == OPT_INT && cJSON_IsNumber(it) && it->valuedouble >= -1e15 &&
                   it->valuedouble <= 1e15 &&
                   it->valuedouble == (double)(long long)it->valuedouble) {
            (void)snprintf(text, sizeof(text), "%lld", (long long)it->valuedouble);
            value = text;
        } else {
            static const char *const names[] = {"a string", "a whole number", "true or false"};
            return wisp_errf(err, errlen, -EINVAL, "%s:%s: must be %s", path, key, names[o->type]);
        }
        char where[512];
        (void)snprintf(where, sizeof(where), "%s:", path); /* only used in messages */
        int rc = apply(c, o, value, where, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

int wisp_config_load_file(struct wisp_config *c, const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = wisp_read_file(path, (size_t)1024 * 1024, &text, &len);
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: cannot read: %s", path, strerror(-rc));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        size_t off = end && end >= text ? (size_t)(end - text) : 0, line = 1;
        for (size_t i = 0; i < off && i < len; i++)
            line += text[i] == '\n';
        rc = wisp_errf(err, errlen, -EINVAL, "%s:%zu: %s", path, line,
                       root ? "the config must be a JSON object" : "invalid JSON");
    } else {
        rc = load_obj(c, root, "", path, err, errlen);
        free(c->origin);
        if (rc == 0 && !(c->origin = wisp_strndup(path, strlen(path))))
            rc = -ENOMEM;
    }
    cJSON_Delete(root);
    free(text);
    return rc;
}

int wisp_config_labels(const char *labels, struct cJSON *obj)
{
    const char *p = labels;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq || eq == p || memchr(eq + 1, '=', n - (size_t)(eq + 1 - p)))
            return -EINVAL;
        if (obj) {
            char *k = wisp_strndup(p, (size_t)(eq - p));
            char *val = wisp_strndup(eq + 1, n - (size_t)(eq + 1 - p));
            cJSON *item = val ? cJSON_CreateString(val) : NULL;
            free(val);
            if (!k || !item) {
                free(k);
                cJSON_Delete(item);
                return -ENOMEM;
            }
            cJSON_DeleteItemFromObjectCaseSensitive(obj, k);
            cJSON_AddItemToObject(obj, k, item);
            free(k);
        }
        p += n + (end ? 1 : 0);
    }
    return 0;
}

static int check_cloud(const struct wisp_config *c, char *err, size_t errlen)
{
    if (c->cloud_labels && wisp_config_labels(c->cloud_labels, NULL) != 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "cloud.labels: must be k=v pairs separated by commas, got \"%s\"",
                         c->cloud_labels);
    if (!c->cloud_enabled)
        return 0;
    size_t dn = strlen(c->device);
    bool ok = dn >= 1 && dn <= 64;
    for (size_t i = 0; ok && i < dn; i++)
        ok = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
                    c->device[i]) != NULL;
    if (!ok)
        return wisp_errf(err, errlen, -EINVAL,
                         "device: with cloud.enabled it must be 1 to 64 of A-Z a-z 0-9 . _ -, "
                         "got \"%s\"",
                         c->device);
    return 0;
}

int wisp_config_finish(struct wisp_config *c, char *err, size_t errlen)
{
    if (c->mqtt_version != 3 && c->mqtt_version != 5)
        return wisp_errf(err, errlen, -EINVAL, "mqtt.version: must be 3 or 5, got %d",
                         c->mqtt_version);
    if (wisp_log_level_parse(c->log_level) < 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "log_level: must be debug, info, warn or error, got \"%s\"", c->log_level);
    if (c->reconnect_min_ms > c->reconnect_max_ms)
        return wisp_errf(err, errlen, -EINVAL,
                         "mqtt.reconnect_min_ms: must not exceed mqtt.reconnect_max_ms");
    if (!c->device) {
        char host[256] = "gateway";
        if (gethostname(host, sizeof(host) - 1) != 0)
            (void)snprintf(host, sizeof(host), "gateway");
        c->device = wisp_strndup(host, strlen(host));
    }
    if (!c->device)
        return -ENOMEM;
    if (!c->client_id) {
        size_t n = strlen(c->device) + 6;
        c->client_id = malloc(n);
        if (c->client_id)
            (void)snprintf(c->client_id, n, "wisp-%s", c->device); /* n fits it */
    }
    if (!c->client_id)
        return -ENOMEM;
    if (!c->functions)
        return wisp_errf(err, errlen, -EINVAL, "functions: required (--functions DIR)");
    if (strcmp(c->durability, "sync") != 0 && strcmp(c->durability, "batch") != 0 &&
        strcmp(c->durability, "none") != 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "store.durability: must be sync, batch or none, got \"%s\"",
                         c->durability);
    if (strcmp(c->mqtt_client, "wisp") != 0 && strcmp(c->mqtt_client, "paho") != 0)
        return wisp_errf(err, errlen, -EINVAL, "mqtt.client: must be wisp or paho, got \"%s\"",
                         c->mqtt_client);
    if (strcmp(c->outbox_full, "refuse") != 0 && strcmp(c->outbox_full, "drop_oldest") != 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "store.outbox_full: must be refuse or drop_oldest, got \"%s\"",
                         c->outbox_full);
    return check_cloud(c, err, errlen);
}

void wisp_config_print_help(FILE *out)
{
    (void)fprintf(out, "Settings (config file key, flag, meaning [default]):\n");
    for (size_t i = 0; i < WISP_ARRAY_LEN(opts); i++) {
        const struct opt *o = &opts[i];
        char flag[40] = "";
        if (o->flag)
            (void)snprintf(flag, sizeof(flag), "--%s", o->flag);
        (void)fprintf(out, "  %-27s %-22s %s [%s]\n", o->key, flag, o->help,
                      o->def ? o->def : "none");
    }
    (void)fprintf(out,
                  "  %-27s %-22s named sensors: {\"NAME\": {\"port\": \"iio|w1|thermal|sim\", "
                  "...}} (config file only) [none]\n"
                  "  %-27s %-22s named GPIO chips, e.g. simulated: {\"sim0\": {\"port\": "
                  "\"sim\", \"lines\": 8}} (config file only) [none]\n",
                  "sensors", "", "gpio", "");
}
