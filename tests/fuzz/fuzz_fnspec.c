/*
 * libFuzzer target for function.json: parse arbitrary bytes, and when they
 * parse, run the topic matcher over the MQTT triggers so that filters the
 * parser accepts are also exercised by the code that uses them, and check
 * what the other trigger kinds promise. The same input is
 * also read as two filters and a topic to cross-check covers and matches.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fnspec.h"
#include "topic.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Invariants the rest of wispd relies on; a violation is a finding. */
static void check_spec(const struct wisp_fnspec *spec)
{
    static const char *const topics[] = {"a", "a/b", "$SYS/x", "sensors/dev1/temp", "/", "a//b"};
    if (!spec->name || !spec->handler || !spec->version || spec->n_triggers == 0)
        abort();
    for (size_t i = 0; i < spec->n_triggers; i++) {
        const struct wisp_trigger *t = &spec->triggers[i];
        if (t->kind != &wisp_trigger_mqtt) {
            /* Timers and sensor polls have a schedule, every non-MQTT
             * trigger a label (the events' subject), gpio a chip. */
            if (!t->label || t->topic ||
                ((t->kind == &wisp_trigger_timer || t->kind == &wisp_trigger_sensor) &&
                 !t->schedule) ||
                (t->kind == &wisp_trigger_sensor && !t->sensor) ||
                (t->kind == &wisp_trigger_gpio && (!t->chip || t->edge < 1 || t->edge > 3)))
                abort();
            continue;
        }
        const char *f = t->topic;
        if (!f || !wisp_topic_filter_valid(f, strlen(f), NULL))
            abort();
        for (size_t k = 0; k < sizeof(topics) / sizeof(topics[0]); k++)
            (void)wisp_topic_matches(f, topics[k], strlen(topics[k]));
        /* Every filter covers itself. */
        if (!wisp_topic_filter_covers(f, f))
            abort();
    }
}

/* The same bytes read as "filter a\nfilter b\ntopic": whenever a covers b,
 * every topic b matches must be matched by a. This keeps the two topic
 * algorithms honest against each other. */
static void check_topics(const uint8_t *data, size_t size)
{
    char *copy = wisp_strndup((const char *)data, size);
    if (!copy)
        return;
    char *a = copy, *b = strchr(a, '\n'), *t = b ? strchr(b + 1, '\n') : NULL;
    if (t && strlen(t + 1) + (size_t)(t + 1 - copy) == size) {
        *b++ = '\0';
        *t++ = '\0';
        bool fa = wisp_topic_filter_valid(a, strlen(a), NULL);
        bool fb = wisp_topic_filter_valid(b, strlen(b), NULL);
        bool tn = wisp_topic_name_valid(t, strlen(t), NULL);
        if (fa && !wisp_topic_filter_covers(a, a))
            abort();
        if (fa && fb && tn && wisp_topic_filter_covers(a, b) &&
            wisp_topic_matches(b, t, strlen(t)) && !wisp_topic_matches(a, t, strlen(t)))
            abort();
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_topics(data, size);

    char err[512] = "";
    struct wisp_fnspec *spec = NULL;
    int rc =
        wisp_fnspec_parse((const char *)data, size, "fuzz.json", "fuzz", &spec, err, sizeof(err));
    if (rc == 0) {
        check_spec(spec);
    } else {
        /* Errors are one line, start with the origin and never come back
         * empty: they go straight to logs and terminals. */
        if (spec || strncmp(err, "fuzz.json:", 10) != 0 || strchr(err, '\n'))
            abort();
    }
    wisp_fnspec_destroy(spec);
    return 0;
}
