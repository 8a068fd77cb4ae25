/* MQTT topic names, filters, matching and covering (runtime/src/topic.c). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "topic.h"

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

struct validity_case {
    const char *s;
    bool name_ok;
    bool filter_ok;
};

static void test_validity(void)
{
    static const struct validity_case cases[] = {
        {"a", true, true},
        {"a/b/c", true, true},
        {"/", true, true},
        {"a//b", true, true},
        {"/a", true, true},
        {"a/", true, true},
        {"$SYS/broker/load", true, true},
        {"caf\xc3\xa9/t", true, true},
        {" ", true, true},
        {"+", false, true},
        {"#", false, true},
        {"+/+", false, true},
        {"a/+", false, true},
        {"+/a", false, true},
        {"a/+/b", false, true},
        {"a/#", false, true},
        {"+/#", false, true},
        {"/#", false, true},
        {"$SYS/#", false, true},
        {"a/#/b", false, false},
        {"a#", false, false},
        {"a/b#", false, false},
        {"#/a", false, false},
        {"##", false, false},
        {"a+", false, false},
        {"+a", false, false},
        {"a/+b/c", false, false},
        {"a/b+", false, false},
        {"++", false, false},
        {"", false, false},
        {"\xff", false, false},
        {"a/\xc3", false, false},
        {"\xc0\xaf", false, false},
        {"\xed\xa0\x80", false, false},
        {"$share/g/a/+", false, true},
        {"$share/g/#", false, true},
        {"$share/group-1/sensors/+/temp", false, true},
        {"$share/g/a", true, true},
        {"$share//a", true, false},
        {"$share/g", true, false},
        {"$share/g/", true, false},
        {"$share/+/a", false, false},
        {"$share/g#/a", false, false},
        {"$share/g/a#", false, false},
        {"$share", true, true},
        {"$shared/g/a", true, true},
    };
    for (size_t i = 0; i < LEN(cases); i++) {
        const char *why = NULL;
        size_t len = strlen(cases[i].s);
        bool name = wisp_topic_name_valid(cases[i].s, len, &why);
        if (name != cases[i].name_ok)
            (void)fprintf(stderr, "name \"%s\": got %d\n", cases[i].s, name);
        CHECK(name == cases[i].name_ok);
        CHECK(name || why != NULL);
        why = NULL;
        bool filter = wisp_topic_filter_valid(cases[i].s, len, &why);
        if (filter != cases[i].filter_ok)
            (void)fprintf(stderr, "filter \"%s\": got %d\n", cases[i].s, filter);
        CHECK(filter == cases[i].filter_ok);
        CHECK(filter || why != NULL);
    }
}

static void test_validity_edges(void)
{
    const char *why = NULL;
    /* Lengths travel with the bytes: an embedded NUL is caught. */
    CHECK(!wisp_topic_name_valid("a\0b", 3, &why));
    CHECK_CONTAINS(why, "NUL");
    CHECK(!wisp_topic_filter_valid("a\0b", 3, NULL));
    CHECK(!wisp_topic_name_valid(NULL, 0, NULL));
    CHECK(!wisp_topic_filter_valid(NULL, 5, NULL));
    CHECK(wisp_topic_name_valid("abc", 2, NULL));
    CHECK(wisp_topic_filter_valid("a/#x", 3, NULL));

    why = NULL;
    CHECK(!wisp_topic_filter_valid("a/#/b", 5, &why));
    CHECK_CONTAINS(why, "'#'");
    why = NULL;
    CHECK(!wisp_topic_filter_valid("a+", 2, &why));
    CHECK_CONTAINS(why, "'+'");
    why = NULL;
    CHECK(!wisp_topic_name_valid("a/+", 3, &why));
    CHECK_CONTAINS(why, "wildcard");

    /* 65535 bytes is the protocol's limit (a two-byte length prefix). */
    size_t big = 65536;
    char *s = malloc(big);
    CHECK(s != NULL);
    if (!s)
        return;
    memset(s, 'a', big);
    CHECK(wisp_topic_name_valid(s, big - 1, NULL));
    CHECK(wisp_topic_filter_valid(s, big - 1, NULL));
    why = NULL;
    CHECK(!wisp_topic_name_valid(s, big, &why));
    CHECK_CONTAINS(why, "65535");
    CHECK(!wisp_topic_filter_valid(s, big, NULL));
    free(s);
}

struct match_case {
    const char *filter;
    const char *topic;
    bool match;
};

static const struct match_case match_cases[] = {
    {"a", "a", true},
    {"a", "b", false},
    {"a", "a/b", false},
    {"a/b", "a", false},
    {"a/b", "a/b", true},
    {"a/b", "a/bc", false},
    {"a/bc", "a/b", false},
    {"A", "a", false},
    /* '+' at each position. */
    {"+", "a", true},
    {"+", "a/b", false},
    {"+/b/c", "a/b/c", true},
    {"a/+/c", "a/b/c", true},
    {"a/b/+", "a/b/c", true},
    {"a/+/c", "a/b/d", false},
    {"a/+/c", "a/c", false},
    {"a/+/c", "a/b/x/c", false},
    {"+/+", "a/b", true},
    {"+/+", "a", false},
    {"+/+/+", "a/b/c", true},
    /* '+' and empty levels. */
    {"+", "/", false},
    {"+/+", "/", true},
    {"/+", "/a", true},
    {"/+", "a", false},
    {"a/+", "a/", true},
    {"a/+/b", "a//b", true},
    {"+/a", "/a", true},
    /* '#' matches the parent level and everything below. */
    {"#", "a", true},
    {"#", "a/b/c", true},
    {"#", "/", true},
    {"a/#", "a", true},
    {"a/#", "a/", true},
    {"a/#", "a/b", true},
    {"a/#", "a/b/c", true},
    {"a/#", "b", false},
    {"a/#", "ab", false},
    {"a/b/#", "a", false},
    {"a/+/#", "a", false},
    {"a/+/#", "a/b", true},
    {"a/+/#", "a/b/c/d", true},
    {"+/#", "a", true},
    {"/#", "/a", true},
    {"/#", "a", false},
    /* Empty levels are levels. */
    {"a//b", "a//b", true},
    {"a//b", "a/b", false},
    {"a/", "a", false},
    {"a", "a/", false},
    {"/", "/", true},
    /* '$' topics: no leading wildcard reaches them. */
    {"#", "$SYS/broker", false},
    {"+/broker", "$SYS/broker", false},
    {"+", "$SYS", false},
    {"$SYS/#", "$SYS/broker/load", true},
    {"$SYS/#", "$SYS", true},
    {"$SYS/+", "$SYS/broker", true},
    {"$SYS/broker", "$SYS/broker", true},
    {"a/+", "a/$x", true},
    {"a/#", "a/$x", true},
    /* Shared subscriptions match like their filter. */
    {"$share/g/a/+", "a/b", true},
    {"$share/g/a/+", "a", false},
    {"$share/g/#", "x/y", true},
    {"$share/g/#", "$SYS/x", false},
    {"$share/g/a", "$share/g/a", false},
    {"$share/g/a", "a", true},
};

static void test_matches(void)
{
    for (size_t i = 0; i < LEN(match_cases); i++) {
        const struct match_case *c = &match_cases[i];
        bool got = wisp_topic_matches(c->filter, c->topic, strlen(c->topic));
        if (got != c->match)
            (void)fprintf(stderr, "match(\"%s\", \"%s\"): got %d\n", c->filter, c->topic, got);
        CHECK(got == c->match);
    }
}

static void test_matches_edges(void)
{
    /* The topic is a length-delimited byte string, not a C string. */
    CHECK(wisp_topic_matches("a/b", "a/bc", 3));
    CHECK(!wisp_topic_matches("a/b", "a/b\0c", 5));
    CHECK(!wisp_topic_matches("a", "", 0));
    CHECK(!wisp_topic_matches("#", "", 0));
    CHECK(!wisp_topic_matches(NULL, "a", 1));
    CHECK(!wisp_topic_matches("a", NULL, 1));
    CHECK(!wisp_topic_matches("$share/g", "a", 1));
    CHECK(!wisp_topic_matches("", "a", 1));
}

struct covers_case {
    const char *a;
    const char *b;
    bool covers;
};

static const struct covers_case covers_cases[] = {
    {"a", "a", true},
    {"a", "b", false},
    {"#", "a", true},
    {"#", "a/b/c", true},
    {"#", "+", true},
    {"#", "+/#", true},
    {"#", "#", true},
    {"+/#", "#", true},
    {"+", "#", false},
    {"+", "+", true},
    {"+", "a", true},
    {"a", "+", false},
    {"a/#", "a", true},
    {"a/#", "a/b", true},
    {"a/#", "a/+/c", true},
    {"a/#", "a/#", true},
    {"a/#", "b/#", false},
    {"a", "a/#", false},
    {"a/+", "a/#", false},
    {"a/+/#", "a/#", false},
    {"a/+/#", "a/b/#", true},
    {"a/+", "a/b", true},
    {"a/+", "a/b/c", false},
    {"a/b", "a/+", false},
    {"a/+/c", "a/+/c", true},
    {"a/+/c", "a/b/c", true},
    {"a/+/c", "a/b/d", false},
    {"+/+", "a/b", true},
    {"+/+", "a", false},
    {"a/b/c", "a/b", false},
    {"a/+", "a/", true},
    /* '$' topics: a leading wildcard does not reach what b reaches. */
    {"#", "$SYS/#", false},
    {"+/#", "$SYS/x", false},
    {"$SYS/#", "$SYS/x", true},
    {"$SYS/#", "#", false},
    {"$SYS/+", "$SYS/x", true},
    /* Shared prefixes are ignored on both sides. */
    {"$share/g/a/#", "a/b", true},
    {"a/#", "$share/g/a/b", true},
    {"$share/g/a", "$share/h/a/b", false},
};

static void test_covers(void)
{
    for (size_t i = 0; i < LEN(covers_cases); i++) {
        const struct covers_case *c = &covers_cases[i];
        bool got = wisp_topic_filter_covers(c->a, c->b);
        if (got != c->covers)
            (void)fprintf(stderr, "covers(\"%s\", \"%s\"): got %d\n", c->a, c->b, got);
        CHECK(got == c->covers);
    }
    CHECK(!wisp_topic_filter_covers(NULL, "a"));
    CHECK(!wisp_topic_filter_covers("a", NULL));
}

/* covers(a, b) must agree with matching: whenever a covers b, every topic b
 * matches is matched by a. Checked over every pair of a small filter set and
 * a small topic set, so the two implementations keep each other honest. */
static void test_covers_agrees_with_matches(void)
{
    static const char *const filters[] = {"#",     "+",      "+/#",   "a",      "a/#", "a/+",
                                          "a/b",   "+/b",    "a/+/#", "$SYS/#", "/+",  "+/+",
                                          "a/b/#", "$SYS/+", "/#",    "a//#"};
    static const char *const topics[] = {"a",       "b",   "a/b",  "a/c",     "a/b/c",  "/",
                                         "/a",      "a/",  "a//b", "$SYS",    "$SYS/x", "b/b",
                                         "a/b/c/d", "x/b", "//",   "$SYS/x/y"};
    for (size_t i = 0; i < LEN(filters); i++) {
        for (size_t j = 0; j < LEN(filters); j++) {
            if (!wisp_topic_filter_covers(filters[i], filters[j]))
                continue;
            for (size_t k = 0; k < LEN(topics); k++) {
                size_t tl = strlen(topics[k]);
                bool ok = !wisp_topic_matches(filters[j], topics[k], tl) ||
                          wisp_topic_matches(filters[i], topics[k], tl);
                if (!ok)
                    (void)fprintf(stderr, "\"%s\" covers \"%s\" but misses \"%s\"\n", filters[i],
                                  filters[j], topics[k]);
                CHECK(ok);
            }
        }
    }
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"validity", test_validity},
        {"validity_edges", test_validity_edges},
        {"matches", test_matches},
        {"matches_edges", test_matches_edges},
        {"covers", test_covers},
        {"covers_agrees_with_matches", test_covers_agrees_with_matches},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
