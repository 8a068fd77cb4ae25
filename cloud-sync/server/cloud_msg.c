/*
 * MQTT messages from devices: hello (registration), status (online),
 * reported (what runs, which drives rollouts) and meter batches.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud.h"
#include "cloud_meter.h"
#include "cloud_rollout.h"
#include "log.h"

enum msg_kind { MSG_HELLO, MSG_STATUS, MSG_REPORTED, MSG_METER };

/* Splits "wisp/v1/<device>/<kind>"; false for any other topic. */
static bool parse_topic(const char *topic, char *id, enum msg_kind *kind)
{
    static const char prefix[] = "wisp/v1/";
    if (strncmp(topic, prefix, sizeof(prefix) - 1) != 0)
        return false;
    const char *d = topic + sizeof(prefix) - 1;
    const char *slash = strchr(d, '/');
    if (!slash || !cloud_device_id_valid(d, (size_t)(slash - d)))
        return false;
    memcpy(id, d, (size_t)(slash - d));
    id[slash - d] = '\0';
    const char *k = slash + 1;
    if (strcmp(k, "hello") == 0)
        *kind = MSG_HELLO;
    else if (strcmp(k, "status") == 0)
        *kind = MSG_STATUS;
    else if (strcmp(k, "reported") == 0)
        *kind = MSG_REPORTED;
    else if (strcmp(k, "meter") == 0)
        *kind = MSG_METER;
    else
        return false;
    return true;
}

static void refuse(struct cloud *c, const char *topic, const char *why)
{
    c->refused++;
    log_warn("%s: message refused: %s", topic, why);
}

/* Checks labels is an object of strings; names the bad key in why. */
static bool labels_ok(const cJSON *labels, char *why, size_t cap)
{
    if (!cJSON_IsObject(labels)) {
        (void)snprintf(why, cap, "key labels: not an object");
        return false;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, labels)
    {
        if (!cJSON_IsString(it)) {
            (void)snprintf(why, cap, "key labels.%.100s: not a string", it->string);
            return false;
        }
    }
    return true;
}

/* Makes a copy of labels the device's own and remerges; kept as was on OOM. */
static void set_own_labels(struct cloud_device *dev, const cJSON *labels)
{
    cJSON *own = cJSON_Duplicate(labels, 1);
    if (own) {
        cJSON_Delete(dev->own_labels);
        dev->own_labels = own;
        (void)cloud_device_merge_labels(dev);
    }
}

static void set_str(char **dst, const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v))
        return;
    char *s = strdup(v->valuestring);
    if (s) {
        free(*dst);
        *dst = s;
    }
}

static void on_hello(struct cloud *c, const char *topic, const char *id, cJSON *j)
{
    char why[160];
    const cJSON *dv = cJSON_GetObjectItemCaseSensitive(j, "device");
    if (dv && (!cJSON_IsString(dv) || strcmp(dv->valuestring, id) != 0)) {
        refuse(c, topic, "key device: does not name the topic's device");
        return;
    }
    cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
    if (labels && !labels_ok(labels, why, sizeof(why))) {
        refuse(c, topic, why);
        return;
    }
    if (c->fleet_token) {
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");
        if (!cloud_token_ok(c->fleet_token, cJSON_IsString(tok) ? tok->valuestring : NULL)) {
            refuse(c, topic, tok ? "key token: wrong fleet token" : "key token: missing");
            return;
        }
    }
    struct cloud_device *dev = cloud_device_find(c, id);
    if (!dev && !(dev = cloud_device_register(c, id)))
        return;
    if (labels)
        set_own_labels(dev, labels);
    set_str(&dev->wispd, j, "wispd");
    set_str(&dev->arch, j, "arch");
    dev->online = true;
    dev->dirty = true;
}

static void on_status(struct cloud *c, const char *topic, struct cloud_device *dev, cJSON *j)
{
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(j, "online");
    if (!cJSON_IsBool(on)) {
        refuse(c, topic, "key online: missing or not a boolean");
        return;
    }
    dev->online = cJSON_IsTrue(on);
    set_str(&dev->wispd, j, "wispd");
    dev->dirty = true;
}

/* Takes over *jp (sets it to NULL) when the report is accepted. */
static void on_reported(struct cloud *c, const char *topic, struct cloud_device *dev, cJSON **jp)
{
    cJSON *j = *jp;
    const cJSON *fns = cJSON_GetObjectItemCaseSensitive(j, "functions");
    if (!cJSON_IsObject(fns)) {
        refuse(c, topic, "key functions: missing or not an object");
        return;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, fns)
    {
        if (!cJSON_IsObject(it)) {
            char why[160];
            (void)snprintf(why, sizeof(why), "key functions.%.100s: not an object", it->string);
            refuse(c, topic, why);
            return;
        }
    }
    /* The device's own labels travel in reported too: a change on the
     * device shows without a reconnect. */
    cJSON *labels = cJSON_GetObjectItemCaseSensitive(j, "labels");
    char why[160];
    if (labels && labels_ok(labels, why, sizeof(why)) &&
        !cJSON_Compare(labels, dev->own_labels, true))
        set_own_labels(dev, labels);
    /* Kept as it came: *jp is taken over rather than copied. */
    cJSON_Delete(dev->reported);
    dev->reported = *jp;
    *jp = NULL;
    dev->dirty = true;
    cloud_rollout_on_reported(c, dev, dev->reported);
}

/* The device a message is from: registered on first contact unless a fleet
 * token is required (then only a good hello registers). */
static struct cloud_device *sender(struct cloud *c, const char *topic, const char *id,
                                   enum msg_kind kind)
{
    struct cloud_device *dev = cloud_device_find(c, id);
    if (dev || kind == MSG_HELLO)
        return dev;
    if (c->fleet_token) {
        c->refused++;
        log_debug("%s: ignored: device %s has not registered with the fleet token", topic, id);
        return NULL;
    }
    return cloud_device_register(c, id);
}

void cloud_handle_message(struct cloud *c, const char *topic, const char *payload, size_t len,
                          bool retained)
{
    char id[CLOUD_ID_MAX + 1];
    enum msg_kind kind;
    if (!parse_topic(topic, id, &kind)) {
        log_debug("%s: not a fleet topic, ignored", topic);
        return;
    }
    if (len > (kind == MSG_METER ? CLOUD_MAX_METER_MSG : CLOUD_MAX_REPORTED)) {
        refuse(c, topic, "payload too large");
        return;
    }
    struct cloud_device *dev = sender(c, topic, id, kind);
    if (!dev && kind != MSG_HELLO)
        return;
    if (kind == MSG_METER) {
        if (!retained)
            dev->last_seen = c->now;
        cloud_meter_ingest(c, dev, payload, len);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(payload, len);
    if (!cJSON_IsObject(j)) {
        refuse(c, topic, "payload is not a JSON object");
        cJSON_Delete(j);
        return;
    }
    if (kind == MSG_HELLO) {
        on_hello(c, topic, id, j);
        dev = cloud_device_find(c, id);
    } else if (kind == MSG_STATUS) {
        on_status(c, topic, dev, j);
    } else {
        on_reported(c, topic, dev, &j);
    }
    if (dev && !retained) {
        dev->last_seen = c->now;
        dev->dirty = true;
    }
    cJSON_Delete(j);
}

void cloud_tick(struct cloud *c)
{
    cloud_rollout_tick(c);
}
