/* The merged broker subscriptions (runtime/src/subs.c): duplicates, covered
 * filters and the QoS they leave behind. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fnspec.h"
#include "subs.h"

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

struct sub {
    const char *filter;
    int qos;
};

/* The QoS of filter in s, or -1 when it is not there. */
static int qos_of(const struct wisp_subs *s, const char *filter)
{
    int found = -1;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->filters[i], filter) == 0) {
            CHECK(found == -1); /* never twice */
            found = s->qos[i];
        }
    }
    return found;
}

static void dump(const struct wisp_subs *s)
{
    for (size_t i = 0; i < s->n; i++)
        (void)fprintf(stderr, "  %s qos=%d\n", s->filters[i], s->qos[i]);
}

/* Adds `in`, reduces, and checks that exactly `want` remains. */
static void check_reduce(const struct sub *in, size_t n_in, const struct sub *want, size_t n_want)
{
    struct wisp_subs s;
    wisp_subs_init(&s);
    for (size_t i = 0; i < n_in; i++)
        CHECK_INT_EQ(wisp_subs_add(&s, in[i].filter, in[i].qos), 0);
    wisp_subs_reduce(&s);
    bool ok = s.n == n_want;
    CHECK_INT_EQ(s.n, n_want);
    for (size_t i = 0; i < n_want; i++) {
        int q = qos_of(&s, want[i].filter);
        if (q != want[i].qos) {
            (void)fprintf(stderr, "%s: qos %d, expected %d\n", want[i].filter, q, want[i].qos);
            ok = false;
        }
        CHECK_INT_EQ(q, want[i].qos);
    }
    if (!ok) {
        (void)fprintf(stderr, "after reduce:\n");
        dump(&s);
    }
    wisp_subs_fini(&s);
    CHECK(s.n == 0 && s.filters == NULL && s.qos == NULL);
}

static void test_duplicates(void)
{
    struct wisp_subs s;
    wisp_subs_init(&s);
    CHECK_INT_EQ(wisp_subs_add(&s, "a/b", 0), 0);
    CHECK_INT_EQ(wisp_subs_add(&s, "a/b", 2), 0);
    CHECK_INT_EQ(wisp_subs_add(&s, "a/b", 1), 0);
    CHECK_INT_EQ(wisp_subs_add(&s, "c", 1), 0);
    CHECK_INT_EQ(wisp_subs_add(&s, "c", 0), 0);
    CHECK_INT_EQ(s.n, 2);
    CHECK_INT_EQ(qos_of(&s, "a/b"), 2);
    CHECK_INT_EQ(qos_of(&s, "c"), 1);
    /* The filter is copied. */
    char buf[] = "x/y";
    CHECK_INT_EQ(wisp_subs_add(&s, buf, 1), 0);
    buf[0] = 'z';
    CHECK_INT_EQ(qos_of(&s, "x/y"), 1);
    CHECK_INT_EQ(qos_of(&s, "z/y"), -1);
    wisp_subs_fini(&s);
}

static void test_grows(void)
{
    struct wisp_subs s;
    wisp_subs_init(&s);
    char f[32];
    for (int i = 0; i < 100; i++) {
        (void)snprintf(f, sizeof(f), "t/%d", i);
        CHECK_INT_EQ(wisp_subs_add(&s, f, i % 3), 0);
    }
    CHECK_INT_EQ(s.n, 100);
    CHECK_INT_EQ(qos_of(&s, "t/0"), 0);
    CHECK_INT_EQ(qos_of(&s, "t/98"), 2);
    wisp_subs_reduce(&s); /* none covers another */
    CHECK_INT_EQ(s.n, 100);
    CHECK_INT_EQ(wisp_subs_add(&s, "t/+", 0), 0);
    wisp_subs_reduce(&s);
    CHECK_INT_EQ(s.n, 1);
    CHECK_INT_EQ(qos_of(&s, "t/+"), 2);
    wisp_subs_fini(&s);
}

static void test_covered_removed(void)
{
    {
        const struct sub in[] = {{"a/b", 2}, {"a/#", 0}};
        const struct sub want[] = {{"a/#", 2}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* Order of adding does not matter. */
        const struct sub in[] = {{"a/#", 0}, {"a/b", 2}};
        const struct sub want[] = {{"a/#", 2}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        const struct sub in[] = {{"a/+/c", 1}, {"a/#", 0}};
        const struct sub want[] = {{"a/#", 1}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        const struct sub in[] = {{"a/b", 1}, {"a/+", 0}};
        const struct sub want[] = {{"a/+", 1}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* The covering filter's own higher QoS is kept. */
        const struct sub in[] = {{"a/b", 0}, {"a/+", 2}};
        const struct sub want[] = {{"a/+", 2}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* A chain: a/b/c under a/b/# under a/#; the highest QoS reaches a/#. */
        const struct sub in[] = {{"a/b/c", 2}, {"a/b/#", 0}, {"a/#", 1}, {"b", 0}};
        const struct sub want[] = {{"a/#", 2}, {"b", 0}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        const struct sub in[] = {{"a/b/#", 0}, {"a/#", 1}, {"a/b/c", 2}};
        const struct sub want[] = {{"a/#", 2}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* Several covered filters under one. */
        const struct sub in[] = {{"s/1", 0}, {"s/2", 1}, {"s/+", 0}, {"s/3", 0}, {"t", 0}};
        const struct sub want[] = {{"s/+", 1}, {"t", 0}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
}

static void test_overlaps_kept(void)
{
    {
        /* a/b/c matches both, but neither covers the other. */
        const struct sub in[] = {{"a/+/c", 1}, {"a/b/+", 2}};
        const struct sub want[] = {{"a/+/c", 1}, {"a/b/+", 2}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* a/+ does not reach a/b/c, and a/b is not a/+. */
        const struct sub in[] = {{"a/+", 0}, {"a/b/c", 1}, {"b/+", 0}, {"a", 2}};
        const struct sub want[] = {{"a/+", 0}, {"a/b/c", 1}, {"b/+", 0}, {"a", 2}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* a/# reaches "a" itself, a/+ does not. */
        const struct sub in[] = {{"a", 2}, {"a/+", 0}};
        const struct sub want[] = {{"a", 2}, {"a/+", 0}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* A shared subscription delivers only a share of its topics: it
         * covers neither a plain filter nor one of another group, and a
         * plain filter does not stand in for it. Same group: covered. */
        const struct sub in[] = {{"sensors/kitchen/temp", 1},
                                 {"$share/g/sensors/#", 0},
                                 {"$share/h/sensors/+/temp", 0},
                                 {"$share/g/sensors/a", 2},
                                 {"x/#", 0},
                                 {"$share/g/x/y", 1}};
        const struct sub want[] = {{"sensors/kitchen/temp", 1},
                                   {"$share/g/sensors/#", 2},
                                   {"$share/h/sensors/+/temp", 0},
                                   {"x/#", 0},
                                   {"$share/g/x/y", 1}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
}

static void test_hash_and_dollar(void)
{
    {
        /* '#' covers everything except $-topics. */
        const struct sub in[] = {{"a/b", 1},   {"#", 0}, {"$SYS/#", 1},
                                 {"x/+/y", 2}, {"+", 0}, {"/", 0}};
        const struct sub want[] = {{"#", 2}, {"$SYS/#", 1}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* $SYS/# does cover what lies under it. */
        const struct sub in[] = {{"$SYS/broker/load", 2}, {"$SYS/#", 0}, {"#", 1}};
        const struct sub want[] = {{"$SYS/#", 2}, {"#", 1}};
        check_reduce(in, LEN(in), want, LEN(want));
    }
    {
        /* "#" and "+/#" receive the same topics: exactly one of them stays,
         * with the higher QoS. */
        struct wisp_subs s;
        wisp_subs_init(&s);
        CHECK_INT_EQ(wisp_subs_add(&s, "#", 0), 0);
        CHECK_INT_EQ(wisp_subs_add(&s, "+/#", 2), 0);
        wisp_subs_reduce(&s);
        CHECK_INT_EQ(s.n, 1);
        if (s.n == 1) {
            CHECK(strcmp(s.filters[0], "#") == 0 || strcmp(s.filters[0], "+/#") == 0);
            CHECK_INT_EQ(s.qos[0], 2);
        }
        wisp_subs_fini(&s);
    }
    {
        /* Reducing an empty set is fine. */
        struct wisp_subs s;
        wisp_subs_init(&s);
        wisp_subs_reduce(&s);
        CHECK_INT_EQ(s.n, 0);
        wisp_subs_fini(&s);
    }
}

/* A trigger kind that is not MQTT: its triggers are not subscriptions. */
static const struct wisp_trigger_kind fake_kind = {.name = "timer"};

static void test_add_spec(void)
{
    char t1[] = "sensors/+/temp", t2[] = "sensors/kitchen/temp", t3[] = "doors/#", t4[] = "x";
    struct wisp_trigger trig_a[] = {
        {.kind = &wisp_trigger_mqtt, .topic = t1, .qos = 0},
        {.kind = &wisp_trigger_mqtt, .topic = t3, .qos = 1},
        {.kind = &fake_kind, .topic = t4, .qos = 2},
    };
    struct wisp_trigger trig_b[] = {
        {.kind = &wisp_trigger_mqtt, .topic = t2, .qos = 2},
        {.kind = &wisp_trigger_mqtt, .topic = t3, .qos = 2},
    };
    char na[] = "a", nb[] = "b";
    struct wisp_fnspec a = {.name = na, .triggers = trig_a, .n_triggers = LEN(trig_a)};
    struct wisp_fnspec b = {.name = nb, .triggers = trig_b, .n_triggers = LEN(trig_b)};
    struct wisp_fnspec none = {.name = na};

    struct wisp_subs s;
    wisp_subs_init(&s);
    wisp_subs_add_spec(&s, &a);
    CHECK_INT_EQ(s.n, 2);
    CHECK_INT_EQ(qos_of(&s, "sensors/+/temp"), 0);
    CHECK_INT_EQ(qos_of(&s, "doors/#"), 1);
    CHECK_INT_EQ(qos_of(&s, "x"), -1);
    wisp_subs_add_spec(&s, &b);
    wisp_subs_add_spec(&s, &none);
    CHECK_INT_EQ(s.n, 3);
    CHECK_INT_EQ(qos_of(&s, "sensors/kitchen/temp"), 2);
    CHECK_INT_EQ(qos_of(&s, "doors/#"), 2);
    wisp_subs_reduce(&s);
    CHECK_INT_EQ(s.n, 2);
    CHECK_INT_EQ(qos_of(&s, "sensors/+/temp"), 2);
    CHECK_INT_EQ(qos_of(&s, "doors/#"), 2);
    CHECK_INT_EQ(qos_of(&s, "sensors/kitchen/temp"), -1);
    wisp_subs_fini(&s);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"duplicates", test_duplicates},           {"grows", test_grows},
        {"covered_removed", test_covered_removed}, {"overlaps_kept", test_overlaps_kept},
        {"hash_and_dollar", test_hash_and_dollar}, {"add_spec", test_add_spec},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
