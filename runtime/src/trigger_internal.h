/* Helpers the trigger kinds share (trigger_*.c); not for other modules. */
#ifndef WISP_TRIGGER_INTERNAL_H
#define WISP_TRIGGER_INTERNAL_H

#include <stddef.h>

struct cJSON;
struct wisp_trigger;
struct wisp_fnspec;

/* t->label = "<what> <text>". 0 or -ENOMEM. */
int wisp_trigger_set_label(struct wisp_trigger *t, const char *what, const char *text);
/* Parses obj.every (or def when absent; def NULL: required) into
 * t->schedule and t->label. */
int wisp_trigger_parse_every(const struct cJSON *obj, const char *field, const char *def,
                             struct wisp_trigger *t, char *err, size_t errlen);
/* Frees schedule and label. */
void wisp_trigger_fini_common(struct wisp_trigger *t);

/* function.json's "gpio" section: {"outputs": [{"chip": "gpiochip0",
 * "line": 17}], "inputs": [...]} into spec->gpio. */
int wisp_fnspec_parse_gpio(const struct cJSON *root, struct wisp_fnspec *spec, char *err,
                           size_t errlen);
void wisp_fnspec_free_gpio(struct wisp_fnspec *spec);

#endif
