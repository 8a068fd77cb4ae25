/* The timer, sensor and gpio trigger kinds and function.json's "gpio"
 * section (runtime/src/trigger_timer.c, trigger_sensor.c, trigger_gpio.c).
 * JSON is written with single quotes (see wisp_test_parse_q). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fnspec.h"
#include "schedule.h"
#include "testutil.h"

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static char err[1024];

static struct wisp_fnspec *ok(const char *text)
{
    struct wisp_fnspec *spec = wisp_test_parse_q(text, NULL, err, sizeof(err));
    if (!spec)
        (void)fprintf(stderr, "unexpected error for %s: %s\n", text, err);
    CHECK(spec != NULL);
    return spec;
}

static void bad(const char *text, const char *needle)
{
    int rc = 0;
    struct wisp_fnspec *spec = wisp_test_parse_q(text, &rc, err, sizeof(err));
    CHECK(spec == NULL);
    CHECK_INT_EQ(rc, -EINVAL);
    CHECK_CONTAINS(err, needle);
    CHECK(strncmp(err, "fn/function.json:", 17) == 0);
    wisp_fnspec_destroy(spec);
}

static void test_timer(void)
{
    struct wisp_fnspec *s = ok("{'name':'a','triggers':[{'type':'timer','every':'1h30m'},"
                               "{'type':'timer','cron':'0 */5 * * * *'}]}");
    if (!s)
        return;
    CHECK_INT_EQ(s->n_triggers, 2);
    CHECK(s->triggers[0].kind == &wisp_trigger_timer);
    CHECK_STR_EQ(s->triggers[0].label, "every 1h30m");
    CHECK(wisp_schedule_period_ns(s->triggers[0].schedule) == 5400ULL * 1000000000ULL);
    CHECK_STR_EQ(s->triggers[1].label, "cron 0 */5 * * * *");
    uint64_t next = 0;
    /* 2026-01-01T00:00:00Z + 1 s: the next firing is at 00:05:00. */
    CHECK_INT_EQ(wisp_schedule_next(s->triggers[1].schedule, 1767225601ULL * 1000000000ULL, &next),
                 0);
    CHECK(next == (1767225600ULL + 300ULL) * 1000000000ULL);
    wisp_fnspec_destroy(s);
}

static void test_timer_errors(void)
{
    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{'name':'a','triggers':[{'type':'timer'}]}", "triggers[0]: a timer needs exactly one of"},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s','cron':'* * * * * *'}]}",
         "exactly one of"},
        {"{'name':'a','triggers':[{'type':'timer','every':'soon'}]}", "triggers[0].every:"},
        {"{'name':'a','triggers':[{'type':'timer','every':5}]}",
         "triggers[0].every: must be a string"},
        {"{'name':'a','triggers':[{'type':'timer','cron':'0 0 24 * * *'}]}",
         "triggers[0].cron: field 3 (hour): 24 is out of range 0-23"},
        {"{'name':'a','triggers':[{'type':'timer','cron':'0 0 0 30 2 *'}]}",
         "triggers[0].cron: \"0 0 0 30 2 *\" never fires"},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s','at':'noon'}]}",
         "triggers[0]: unknown key \"at\""},
    };
    for (size_t i = 0; i < LEN(cases); i++)
        bad(cases[i].json, cases[i].needle);
}

static void test_sensor(void)
{
    struct wisp_fnspec *s =
        ok("{'name':'a','triggers':[{'type':'sensor','sensor':'cpu','change':0.5},"
           "{'type':'sensor','sensor':'tank','every':'250ms','above':80,'below':-5.5,"
           "'hysteresis':2}]}");
    if (!s)
        return;
    const struct wisp_trigger *t = &s->triggers[0];
    CHECK_STR_EQ(t->sensor, "cpu");
    CHECK(t->has_change && !t->has_above && !t->has_below);
    CHECK(t->change == 0.5);
    CHECK(wisp_schedule_period_ns(t->schedule) == 1000000000ULL); /* default 1 s */
    t = &s->triggers[1];
    CHECK(t->has_above && t->has_below && !t->has_change);
    CHECK(t->above == 80 && t->below == -5.5 && t->hysteresis == 2);
    CHECK(wisp_schedule_period_ns(t->schedule) == 250000000ULL);
    wisp_fnspec_destroy(s);

    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{'name':'a','triggers':[{'type':'sensor'}]}", "triggers[0].sensor: missing"},
        {"{'name':'a','triggers':[{'type':'sensor','sensor':''}]}",
         "triggers[0].sensor: must not be empty"},
        {"{'name':'a','triggers':[{'type':'sensor','sensor':'x','change':-1}]}",
         "triggers[0].change: must be a number from 0"},
        {"{'name':'a','triggers':[{'type':'sensor','sensor':'x','above':'hot'}]}",
         "triggers[0].above: must be a number"},
        {"{'name':'a','triggers':[{'type':'sensor','sensor':'x','hysteresis':1}]}",
         "triggers[0].hysteresis: only means something with \"above\" or \"below\""},
        {"{'name':'a','triggers':[{'type':'sensor','sensor':'x','every':'5ms'}]}",
         "triggers[0].every: sensors are polled at most every 10ms"},
        {"{'name':'a','triggers':[{'type':'sensor','sensor':'x','threshold':3}]}",
         "triggers[0]: unknown key \"threshold\""},
    };
    for (size_t i = 0; i < LEN(cases); i++)
        bad(cases[i].json, cases[i].needle);
}

static void test_gpio(void)
{
    struct wisp_fnspec *s =
        ok("{'name':'a','triggers':[{'type':'gpio','chip':'gpiochip0','line':17,"
           "'edge':'falling','debounce_ms':20},{'type':'gpio','chip':'sim0','line':3}],"
           "'gpio':{'outputs':[{'chip':'gpiochip0','line':18}],"
           "'inputs':[{'chip':'gpiochip0','line':4}]}}");
    if (!s)
        return;
    const struct wisp_trigger *t = &s->triggers[0];
    CHECK_STR_EQ(t->chip, "gpiochip0");
    CHECK_INT_EQ(t->line, 17);
    CHECK_INT_EQ(t->edge, 2);
    CHECK_INT_EQ(t->debounce_ms, 20);
    CHECK_STR_EQ(t->label, "gpiochip0/17");
    CHECK_INT_EQ(s->triggers[1].edge, 3); /* both by default */
    CHECK_INT_EQ(wisp_fnspec_gpio_access(s, "gpiochip0", 18), 2);
    CHECK_INT_EQ(wisp_fnspec_gpio_access(s, "gpiochip0", 4), 1);
    CHECK_INT_EQ(wisp_fnspec_gpio_access(s, "gpiochip0", 17), 1); /* its trigger line */
    CHECK_INT_EQ(wisp_fnspec_gpio_access(s, "gpiochip0", 19), 0);
    CHECK_INT_EQ(wisp_fnspec_gpio_access(s, "gpiochip1", 18), 0);
    wisp_fnspec_destroy(s);

    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"{'name':'a','triggers':[{'type':'gpio','line':1}]}", "triggers[0].chip: missing"},
        {"{'name':'a','triggers':[{'type':'gpio','chip':'gpiochip0'}]}",
         "triggers[0].line: missing"},
        {"{'name':'a','triggers':[{'type':'gpio','chip':'../x','line':1}]}",
         "triggers[0].chip: must be a chip name"},
        {"{'name':'a','triggers':[{'type':'gpio','chip':'gpiochip0','line':-1}]}",
         "triggers[0].line: must be a whole number from 0 to 1023"},
        {"{'name':'a','triggers':[{'type':'gpio','chip':'gpiochip0','line':1,'edge':'up'}]}",
         "triggers[0].edge: must be \"rising\", \"falling\" or \"both\", got \"up\""},
        {"{'name':'a','triggers':[{'type':'gpio','chip':'gpiochip0','line':1,'debounce_ms':"
         "20000}]}",
         "triggers[0].debounce_ms: must be a whole number from 0 to 10000"},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s'}],'gpio':[]}",
         "gpio: must be an object"},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s'}],'gpio':{'outputs':{}}}",
         "gpio.outputs: must be an array"},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s'}],'gpio':{'outputs':[17]}}",
         "gpio.outputs[0]: must be an object"},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s'}],'gpio':{'outputs':[{'chip':'"
         "gpiochip0','line':1}],"
         "'inputs':[{'chip':'gpiochip0','line':1}]}}",
         "gpio.inputs[0]: gpiochip0 line 1 is listed twice"},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s'}],'gpio':{'drives':[]}}",
         "gpio: unknown key \"drives\""},
        {"{'name':'a','triggers':[{'type':'timer','every':'1s'}],'gpio':{'outputs':[{'chip':'"
         "gpiochip0','line':1,'pull':1}]}}",
         "gpio.outputs[0]: unknown key \"pull\""},
    };
    for (size_t i = 0; i < LEN(cases); i++)
        bad(cases[i].json, cases[i].needle);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"timer", test_timer},
        {"timer_errors", test_timer_errors},
        {"sensor", test_sensor},
        {"gpio", test_gpio},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
