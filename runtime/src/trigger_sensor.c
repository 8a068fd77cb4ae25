/*
 * The "sensor" trigger kind: polls a sensor configured in wispd's config
 * and fires when a reading qualifies.
 *   {"type": "sensor", "sensor": "cpu-temp", "every": "5s", "change": 0.5}
 *   {"type": "sensor", "sensor": "tank", "above": 80, "hysteresis": 2}
 * every: the poll period (default "1s", at least 10 ms). With none of
 * change / above / below every reading fires. change: fires when the value
 * moved at least this far from the last reading that fired (the first
 * reading always fires). above / below: fires once when the value crosses
 * the threshold, and again only after it came back past the threshold by
 * more than hysteresis (default 0), so a value hovering at the threshold
 * does not fire on every poll. Conditions combine with "or".
 */
#include <errno.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fnspec.h"
#include "schedule.h"
#include "trigger_internal.h"
#include "util.h"

#define SENSOR_MIN_POLL_NS (10ULL * 1000000ULL)

static int sensor_parse(const cJSON *obj, const char *field, struct wisp_trigger *t, char *err,
                        size_t errlen)
{
    static const char *const keys[] = {"type",  "sensor", "every",     "change",
                                       "above", "below",  "hysteresis"};
    const char *name;
    bool has_h = false;
    int rc;
    if ((rc = wisp_fnspec_check_keys(obj, field, keys, WISP_ARRAY_LEN(keys), err, errlen)))
        return rc;
    if (!cJSON_GetObjectItemCaseSensitive(obj, "sensor"))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.sensor: missing; a sensor trigger names a sensor from wispd's "
                         "\"sensors\" config, like \"cpu-temp\"",
                         field);
    if ((rc =
             wisp_fnspec_get_str(obj, field, "sensor", 1, WISP_MAX_NAME_LEN, &name, err, errlen)) ||
        (rc = wisp_fnspec_get_double(obj, field, "change", 0, DBL_MAX, &t->change, &t->has_change,
                                     err, errlen)) ||
        (rc = wisp_fnspec_get_double(obj, field, "above", -DBL_MAX, DBL_MAX, &t->above,
                                     &t->has_above, err, errlen)) ||
        (rc = wisp_fnspec_get_double(obj, field, "below", -DBL_MAX, DBL_MAX, &t->below,
                                     &t->has_below, err, errlen)) ||
        (rc = wisp_fnspec_get_double(obj, field, "hysteresis", 0, DBL_MAX, &t->hysteresis, &has_h,
                                     err, errlen)))
        return rc;
    if (name[0] == '\0')
        return wisp_errf(err, errlen, -EINVAL, "%s.sensor: must not be empty", field);
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\' || *p == 0x7f) {
            char show[80];
            wisp_fnspec_quote(name, strlen(name), show, sizeof(show));
            return wisp_errf(err, errlen, -EINVAL,
                             "%s.sensor: must be a sensor name from wispd's config, without "
                             "control characters, quotes or backslashes, got %s",
                             field, show);
        }
    if (has_h && !t->has_above && !t->has_below)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.hysteresis: only means something with \"above\" or \"below\"", field);
    if (!has_h)
        t->hysteresis = 0;
    if ((rc = wisp_trigger_parse_every(obj, field, "1s", t, err, errlen)) != 0)
        return rc;
    if (wisp_schedule_period_ns(t->schedule) < SENSOR_MIN_POLL_NS) {
        wisp_trigger_fini_common(t);
        return wisp_errf(err, errlen, -EINVAL, "%s.every: sensors are polled at most every 10ms",
                         field);
    }
    if (!(t->sensor = wisp_strndup(name, strlen(name)))) {
        wisp_trigger_fini_common(t);
        return -ENOMEM;
    }
    return 0;
}

static void sensor_fini(struct wisp_trigger *t)
{
    wisp_trigger_fini_common(t);
    free(t->sensor);
    t->sensor = NULL;
}

const struct wisp_trigger_kind wisp_trigger_sensor = {
    .name = "sensor",
    .parse = sensor_parse,
    .fini = sensor_fini,
};
