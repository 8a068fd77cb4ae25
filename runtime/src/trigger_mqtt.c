/*
 * The "mqtt" trigger kind: fires for every message on a topic filter.
 *   {"type": "mqtt", "topic": "sensors/+/temp", "qos": 1}
 * topic is required and must be a valid subscription filter; qos is 0, 1 or
 * 2 and defaults to 1 (at least once, the level the event path is built for).
 * durable (default: true when qos > 0) sends the events through the inbox:
 * they are acknowledged to the broker only once stored, and their effects
 * happen exactly once. "durable": false trades that for latency.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fnspec.h"
#include "topic.h"
#include "util.h"

#define MQTT_DEFAULT_QOS 1u
#define MQTT_MAX_QOS     2u

static int mqtt_parse(const cJSON *obj, const char *field, struct wisp_trigger *t, char *err,
                      size_t errlen)
{
    static const char *const keys[] = {"type", "topic", "qos", "durable"};
    const char *topic, *why = NULL;
    uint32_t qos;
    int rc;
    if ((rc = wisp_fnspec_check_keys(obj, field, keys, WISP_ARRAY_LEN(keys), err, errlen)))
        return rc;
    if (!cJSON_GetObjectItemCaseSensitive(obj, "topic"))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.topic: missing; an mqtt trigger needs a topic filter like "
                         "\"sensors/+/temp\"",
                         field);
    if ((rc = wisp_fnspec_get_str(obj, field, "topic", 1, SIZE_MAX, &topic, err, errlen)) ||
        (rc = wisp_fnspec_get_u32(obj, field, "qos", 0, MQTT_MAX_QOS, MQTT_DEFAULT_QOS, &qos, err,
                                  errlen)))
        return rc;
    if (!wisp_topic_filter_valid(topic, strlen(topic), &why)) {
        char show[80];
        wisp_fnspec_quote(topic, strlen(topic), show, sizeof(show));
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.topic: must be an MQTT topic filter like \"sensors/+/temp\" (%s), "
                         "got %s",
                         field, why, show);
    }
    t->topic = wisp_strndup(topic, strlen(topic));
    if (!t->topic)
        return -ENOMEM;
    t->qos = (int)qos;
    t->durable = qos > 0;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(obj, "durable");
    if (d && !cJSON_IsBool(d)) {
        free(t->topic);
        t->topic = NULL;
        return wisp_errf(err, errlen, -EINVAL, "%s.durable: must be true or false", field);
    }
    if (d)
        t->durable = cJSON_IsTrue(d);
    if (t->durable && qos == 0) {
        free(t->topic);
        t->topic = NULL;
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.durable: a durable trigger needs qos 1 or 2 (QoS 0 messages are "
                         "never redelivered, so there is nothing to make durable)",
                         field);
    }
    return 0;
}

static void mqtt_fini(struct wisp_trigger *t)
{
    free(t->topic);
    t->topic = NULL;
}

const struct wisp_trigger_kind wisp_trigger_mqtt = {
    .name = "mqtt",
    .parse = mqtt_parse,
    .fini = mqtt_fini,
};
