/*
 * The "gpio" trigger kind: fires on edges of one GPIO line.
 *   {"type": "gpio", "chip": "gpiochip0", "line": 17, "edge": "falling",
 *    "debounce_ms": 20}
 * edge: "rising", "falling" or "both" (default); debounce_ms (default 0,
 * at most 10000): an edge closer than this to the previous accepted one is
 * dropped. chip is a GPIO character device name ("gpiochipN") or a chip
 * from wispd's "gpio" config (e.g. a simulated one).
 *
 * Also function.json's "gpio" section, the lines ctx.gpio may touch:
 *   "gpio": {"outputs": [{"chip": "gpiochip0", "line": 18}],
 *            "inputs":  [{"chip": "gpiochip0", "line": 4}]}
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fnspec.h"
#include "trigger_internal.h"
#include "util.h"

#define CHIP_NAME_MAX 31u

/* Chip names become paths under /dev and go into logs: keep them plain. */
static bool name_ok(const char *s)
{
    if (!s[0] || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

static int get_chip(const cJSON *obj, const char *field, const char **chip, char *err,
                    size_t errlen)
{
    if (!cJSON_GetObjectItemCaseSensitive(obj, "chip")) {
        (void)wisp_errf(err, errlen, 0, "%s.chip: missing; name a GPIO chip like \"gpiochip0\"",
                        field);
        return -EINVAL;
    }
    int rc = wisp_fnspec_get_str(obj, field, "chip", 1, CHIP_NAME_MAX, chip, err, errlen);
    if (rc)
        return rc;
    if (!*chip || !name_ok(*chip)) {
        char show[80];
        wisp_fnspec_quote(*chip ? *chip : "", *chip ? strlen(*chip) : 0, show, sizeof(show));
        (void)wisp_errf(err, errlen, 0,
                        "%s.chip: must be a chip name like \"gpiochip0\" (letters, digits, '_', "
                        "'-', '.'; not \".\" or \"..\"), got %s",
                        field, show);
        return -EINVAL;
    }
    return 0;
}

static int get_line(const cJSON *obj, const char *field, uint32_t *line, char *err, size_t errlen)
{
    if (!cJSON_GetObjectItemCaseSensitive(obj, "line"))
        return wisp_errf(err, errlen, -EINVAL, "%s.line: missing; the line's offset on its chip",
                         field);
    return wisp_fnspec_get_u32(obj, field, "line", 0, WISP_MAX_GPIO_LINE, 0, line, err, errlen);
}

static int gpio_parse(const cJSON *obj, const char *field, struct wisp_trigger *t, char *err,
                      size_t errlen)
{
    static const char *const keys[] = {"type", "chip", "line", "edge", "debounce_ms"};
    const char *chip = NULL, *edge = NULL;
    int rc;
    if ((rc = wisp_fnspec_check_keys(obj, field, keys, WISP_ARRAY_LEN(keys), err, errlen)) ||
        (rc = get_chip(obj, field, &chip, err, errlen)) ||
        (rc = get_line(obj, field, &t->line, err, errlen)) ||
        (rc = wisp_fnspec_get_str(obj, field, "edge", 0, 16, &edge, err, errlen)) ||
        (rc = wisp_fnspec_get_u32(obj, field, "debounce_ms", 0, 10000, 0, &t->debounce_ms, err,
                                  errlen)))
        return rc;
    if (!edge || strcmp(edge, "both") == 0)
        t->edge = 3;
    else if (strcmp(edge, "rising") == 0)
        t->edge = 1;
    else if (strcmp(edge, "falling") == 0)
        t->edge = 2;
    else {
        char show[80];
        wisp_fnspec_quote(edge, strlen(edge), show, sizeof(show));
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.edge: must be \"rising\", \"falling\" or \"both\", got %s", field,
                         show);
    }
    char label[64];
    (void)snprintf(label, sizeof(label), "%s/%u", chip, (unsigned)t->line);
    if (!(t->chip = wisp_strndup(chip, strlen(chip))) ||
        !(t->label = wisp_strndup(label, strlen(label)))) {
        free(t->chip);
        t->chip = NULL;
        return -ENOMEM;
    }
    return 0;
}

static void gpio_fini(struct wisp_trigger *t)
{
    free(t->chip);
    t->chip = NULL;
    wisp_trigger_fini_common(t);
}

const struct wisp_trigger_kind wisp_trigger_gpio = {
    .name = "gpio",
    .parse = gpio_parse,
    .fini = gpio_fini,
};

static int parse_lines(const cJSON *sec, const char *key, bool output, struct wisp_fnspec *spec,
                       char *err, size_t errlen)
{
    static const char *const keys[] = {"chip", "line"};
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(sec, key);
    if (!arr)
        return 0;
    if (!cJSON_IsArray(arr))
        return wisp_errf(err, errlen, -EINVAL,
                         "gpio.%s: must be an array of {\"chip\": ..., \"line\": ...}", key);
    const cJSON *it;
    size_t i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        char field[64];
        const char *chip = NULL;
        uint32_t line = 0;
        int rc;
        (void)snprintf(field, sizeof(field), "gpio.%s[%zu]", key, i++);
        if (!cJSON_IsObject(it))
            return wisp_errf(err, errlen, -EINVAL,
                             "%s: must be an object like {\"chip\": "
                             "\"gpiochip0\", \"line\": 17}",
                             field);
        if ((rc = wisp_fnspec_check_keys(it, field, keys, WISP_ARRAY_LEN(keys), err, errlen)) ||
            (rc = get_chip(it, field, &chip, err, errlen)) ||
            (rc = get_line(it, field, &line, err, errlen)))
            return rc;
        if (wisp_fnspec_gpio_access(spec, chip, line))
            return wisp_errf(err, errlen, -EINVAL, "%s: %s line %u is listed twice", field, chip,
                             (unsigned)line);
        if (spec->n_gpio >= WISP_MAX_GPIO_LINES)
            return wisp_errf(err, errlen, -EINVAL, "%s: at most %u GPIO lines", field,
                             WISP_MAX_GPIO_LINES);
        struct wisp_gpio_line_ref *r = &spec->gpio[spec->n_gpio];
        if (!(r->chip = wisp_strndup(chip, strlen(chip))))
            return -ENOMEM;
        r->line = line;
        r->output = output;
        spec->n_gpio++;
    }
    return 0;
}

int wisp_fnspec_parse_gpio(const cJSON *root, struct wisp_fnspec *spec, char *err, size_t errlen)
{
    static const char *const keys[] = {"outputs", "inputs"};
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, "gpio");
    if (!sec)
        return 0;
    if (!cJSON_IsObject(sec))
        return wisp_errf(err, errlen, -EINVAL,
                         "gpio: must be an object like {\"outputs\": [{\"chip\": \"gpiochip0\", "
                         "\"line\": 17}]}");
    int rc = wisp_fnspec_check_keys(sec, "gpio", keys, WISP_ARRAY_LEN(keys), err, errlen);
    if (rc)
        return rc;
    spec->gpio = calloc(WISP_MAX_GPIO_LINES, sizeof(*spec->gpio));
    if (!spec->gpio)
        return -ENOMEM;
    if ((rc = parse_lines(sec, "outputs", true, spec, err, errlen)) != 0)
        return rc;
    return parse_lines(sec, "inputs", false, spec, err, errlen);
}

void wisp_fnspec_free_gpio(struct wisp_fnspec *spec)
{
    for (size_t i = 0; i < spec->n_gpio; i++)
        free(spec->gpio[i].chip);
    free(spec->gpio);
    spec->gpio = NULL;
    spec->n_gpio = 0;
}

int wisp_fnspec_gpio_access(const struct wisp_fnspec *spec, const char *chip, uint32_t line)
{
    int access = 0;
    if (!chip)
        return 0;
    for (size_t i = 0; spec && i < spec->n_gpio; i++)
        if (spec->gpio[i].line == line && spec->gpio[i].chip &&
            strcmp(spec->gpio[i].chip, chip) == 0)
            access = spec->gpio[i].output ? 2 : 1;
    for (size_t i = 0; spec && !access && i < spec->n_triggers; i++) {
        const struct wisp_trigger *t = &spec->triggers[i];
        if (t->kind == &wisp_trigger_gpio && t->line == line && t->chip &&
            strcmp(t->chip, chip) == 0)
            access = 1;
    }
    return access;
}
