/*
 * The "timer" trigger kind: fires on a schedule, whether or not the broker
 * is reachable (outputs wait in the outbox).
 *   {"type": "timer", "every": "30s"}
 *   {"type": "timer", "cron": "0 *\/5 * * * *"}     (seconds first, UTC)
 * Exactly one of every / cron. The events' subject is the schedule as
 * written ("every 30s", "cron 0 *\/5 * * * *").
 *
 * The "sensor" kind (trigger_sensor.c) uses the same "every" parsing for
 * its poll period, through wisp_trigger_parse_every.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fnspec.h"
#include "schedule.h"
#include "trigger_internal.h"
#include "util.h"

int wisp_trigger_set_label(struct wisp_trigger *t, const char *what, const char *text)
{
    size_t n = strlen(what) + strlen(text) + 2;
    t->label = malloc(n);
    if (!t->label)
        return -ENOMEM;
    (void)snprintf(t->label, n, "%s %s", what, text);
    return 0;
}

int wisp_trigger_parse_every(const cJSON *obj, const char *field, const char *def,
                             struct wisp_trigger *t, char *err, size_t errlen)
{
    const char *every;
    char path[192];
    int rc =
        wisp_fnspec_get_str(obj, field, "every", 0, WISP_SCHEDULE_CRON_MAX, &every, err, errlen);
    if (rc)
        return rc;
    if (!every)
        every = def;
    if (!every)
        return wisp_errf(err, errlen, -EINVAL, "%s.every: missing", field);
    (void)snprintf(path, sizeof(path), "%s.every", field);
    rc = wisp_schedule_every(every, path, &t->schedule, err, errlen);
    if (rc == -ERANGE)
        rc = -EINVAL;
    if (rc == 0 && (rc = wisp_trigger_set_label(t, "every", every)) != 0) {
        wisp_schedule_free(t->schedule);
        t->schedule = NULL;
    }
    return rc;
}

static int timer_parse(const cJSON *obj, const char *field, struct wisp_trigger *t, char *err,
                       size_t errlen)
{
    static const char *const keys[] = {"type", "every", "cron"};
    const char *cron;
    int rc;
    if ((rc = wisp_fnspec_check_keys(obj, field, keys, WISP_ARRAY_LEN(keys), err, errlen)) ||
        (rc = wisp_fnspec_get_str(obj, field, "cron", 0, WISP_SCHEDULE_CRON_MAX, &cron, err,
                                  errlen)))
        return rc;
    bool has_every = cJSON_GetObjectItemCaseSensitive(obj, "every") != NULL;
    if (has_every == (cron != NULL))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: a timer needs exactly one of \"every\" (like \"30s\") or \"cron\" "
                         "(6 fields, seconds first, like \"0 */5 * * * *\")",
                         field);
    if (has_every)
        return wisp_trigger_parse_every(obj, field, NULL, t, err, errlen);
    char path[192];
    (void)snprintf(path, sizeof(path), "%s.cron", field);
    if ((rc = wisp_schedule_cron(cron, path, &t->schedule, err, errlen)) != 0)
        return rc;
    uint64_t next;
    if (wisp_schedule_next(t->schedule, wisp_real_ns(), &next) != 0) {
        wisp_schedule_free(t->schedule);
        t->schedule = NULL;
        char show[80];
        wisp_fnspec_quote(cron, strlen(cron), show, sizeof(show));
        return wisp_errf(err, errlen, -EINVAL, "%s: %s never fires", path, show);
    }
    if ((rc = wisp_trigger_set_label(t, "cron", cron)) != 0) {
        wisp_schedule_free(t->schedule);
        t->schedule = NULL;
    }
    return rc;
}

void wisp_trigger_fini_common(struct wisp_trigger *t)
{
    wisp_schedule_free(t->schedule);
    t->schedule = NULL;
    free(t->label);
    t->label = NULL;
}

const struct wisp_trigger_kind wisp_trigger_timer = {
    .name = "timer",
    .parse = timer_parse,
    .fini = wisp_trigger_fini_common,
};
