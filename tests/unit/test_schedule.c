/* Timer schedules (runtime/src/schedule.c): "every" durations, cron parsing
 * and its error messages, next firing times in UTC, drift-free periods, and a
 * randomized cross-check against a second-by-second brute force. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "schedule.h"

#define NS_PER_S 1000000000ULL

static char err[512];

/* ---- test-side calendar: deliberately naive, to be independent ---- */

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m)
{
    static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : DAYS[m - 1];
}

/* Seconds since the epoch of a UTC date and time (years >= 1970), by
 * counting whole years and months. */
static int64_t utc_parts(int y, int mo, int d, int h, int mi, int s)
{
    int64_t days = 0;
    for (int yy = 1970; yy < y; yy++)
        days += leap(yy) ? 366 : 365;
    for (int mm = 1; mm < mo; mm++)
        days += month_days(y, mm);
    days += d - 1;
    return days * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + s;
}

/* "YYYY-MM-DDTHH:MM:SS" to seconds since the epoch. */
static int64_t utc(const char *iso)
{
    int v[6] = {0};
    const char *p = iso;
    for (int i = 0; i < 6; i++) {
        char *end = NULL;
        v[i] = (int)strtol(p, &end, 10);
        CHECK(end != p && (*end == (i < 2 ? '-' : i == 2 ? 'T' : i < 5 ? ':' : '\0')));
        p = *end ? end + 1 : end;
    }
    return utc_parts(v[0], v[1], v[2], v[3], v[4], v[5]);
}

static uint64_t utc_ns(const char *iso)
{
    return (uint64_t)utc(iso) * NS_PER_S;
}

/* ns to "YYYY-MM-DDTHH:MM:SS" (gmtime_r, whole seconds) plus ".<ns>" when not whole. */
static const char *fmt(uint64_t ns, char *buf, size_t cap)
{
    time_t t = (time_t)(ns / NS_PER_S);
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        (void)snprintf(buf, cap, "(gmtime failed)");
        return buf;
    }
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    if (ns % NS_PER_S)
        (void)snprintf(buf + n, cap - n, ".%09llu", (unsigned long long)(ns % NS_PER_S));
    return buf;
}

/* The next firing of a cron expression after `from` (plus extra_ns), as text:
 * the time, "ENOENT", "ERANGE" or "parse error: <err>". */
static const char *next_of(const char *expr, const char *from, uint64_t extra_ns)
{
    static char out[600];
    struct wisp_schedule *s = NULL;
    err[0] = '\0';
    if (wisp_schedule_cron(expr, "cron", &s, err, sizeof(err)) < 0) {
        (void)snprintf(out, sizeof(out), "parse error: %s", err);
        return out;
    }
    uint64_t next = 0;
    int rc = wisp_schedule_next(s, utc_ns(from) + extra_ns, &next);
    wisp_schedule_free(s);
    if (rc == -ENOENT)
        return "ENOENT";
    if (rc == -ERANGE)
        return "ERANGE";
    if (rc != 0)
        return "other error";
    return fmt(next, out, sizeof(out));
}

/* The successive firings after `from`, joined by spaces. */
static const char *series(const char *expr, const char *from, int n)
{
    static char out[1024];
    char one[64];
    struct wisp_schedule *s = NULL;
    size_t len = 0;
    out[0] = '\0';
    if (wisp_schedule_cron(expr, "cron", &s, err, sizeof(err)) < 0)
        return err;
    uint64_t t = utc_ns(from);
    for (int i = 0; i < n && len < sizeof(out); i++) {
        if (wisp_schedule_next(s, t, &t) < 0)
            break;
        int w =
            snprintf(out + len, sizeof(out) - len, "%s%s", i ? " " : "", fmt(t, one, sizeof(one)));
        if (w < 0)
            break;
        len += (size_t)w;
    }
    wisp_schedule_free(s);
    return out;
}

static const char *cron_err(const char *expr)
{
    struct wisp_schedule *s = NULL;
    err[0] = '\0';
    int rc = wisp_schedule_cron(expr, "cron", &s, err, sizeof(err));
    CHECK_INT_EQ(rc, -EINVAL);
    CHECK(s == NULL);
    wisp_schedule_free(s);
    return err;
}

static const char *every_err(const char *text, int want_rc)
{
    struct wisp_schedule *s = NULL;
    err[0] = '\0';
    int rc = wisp_schedule_every(text, "every", &s, err, sizeof(err));
    CHECK_INT_EQ(rc, want_rc);
    CHECK(s == NULL);
    wisp_schedule_free(s);
    return err;
}

static uint64_t every_period(const char *text)
{
    struct wisp_schedule *s = NULL;
    err[0] = '\0';
    int rc = wisp_schedule_every(text, "every", &s, err, sizeof(err));
    CHECK_INT_EQ(rc, 0);
    if (rc != 0) {
        (void)fprintf(stderr, "  %s: %s\n", text, err);
        return 0;
    }
    uint64_t p = wisp_schedule_period_ns(s);
    uint64_t next = 0;
    CHECK_INT_EQ(wisp_schedule_next(s, 1000, &next), 0);
    CHECK(next == 1000 + p);
    wisp_schedule_free(s);
    return p;
}

/* ---- every ---- */

static void test_every_valid(void)
{
    CHECK(every_period("500ms") == 500000000ULL);
    CHECK(every_period("1ms") == 1000000ULL);
    CHECK(every_period("10s") == 10 * NS_PER_S);
    CHECK(every_period("5m") == 300 * NS_PER_S);
    CHECK(every_period("2h") == 7200 * NS_PER_S);
    CHECK(every_period("1h30m") == 5400 * NS_PER_S);
    CHECK(every_period("1h1m1s1ms") == 3661 * NS_PER_S + 1000000ULL);
    CHECK(every_period("90s") == 90 * NS_PER_S);
    CHECK(every_period("744h") == 744ULL * 3600 * NS_PER_S); /* exactly 31 days */
    CHECK(every_period("2678400000ms") == 744ULL * 3600 * NS_PER_S);
    CHECK(every_period("0h1ms") == 1000000ULL);

    /* next for "every" is after + period; overflow is an error, not a wrap. */
    struct wisp_schedule *s = NULL;
    CHECK_INT_EQ(wisp_schedule_every("10s", NULL, &s, err, sizeof(err)), 0);
    uint64_t next = 0;
    CHECK_INT_EQ(wisp_schedule_next(s, UINT64_MAX - NS_PER_S, &next), -ERANGE);
    CHECK_INT_EQ(wisp_schedule_next(s, UINT64_MAX - 10 * NS_PER_S, &next), 0);
    CHECK(next == UINT64_MAX);
    wisp_schedule_free(s);
    wisp_schedule_free(NULL);
}

static void test_every_invalid(void)
{
    CHECK_STR_EQ(every_err("", -EINVAL),
                 "every: empty duration (use e.g. 10s, 5m or 1h30m), got \"\"");
    CHECK_STR_EQ(every_err("0s", -ERANGE), "every: duration must be at least 1ms, got \"0s\"");
    CHECK_STR_EQ(every_err("0ms", -ERANGE), "every: duration must be at least 1ms, got \"0ms\"");
    CHECK_STR_EQ(every_err("10", -EINVAL),
                 "every: missing unit after the number (use ms, s, m or h), got \"10\"");
    CHECK_STR_EQ(every_err("5x", -EINVAL),
                 "every: unknown unit at offset 1 (use ms, s, m or h), got \"5x\"");
    CHECK_STR_EQ(every_err("1h-3m", -EINVAL),
                 "every: expected a number at offset 2, got \"1h-3m\"");
    CHECK_STR_EQ(every_err("-5s", -EINVAL), "every: expected a number at offset 0, got \"-5s\"");
    CHECK_STR_EQ(every_err(" 5s", -EINVAL), "every: expected a number at offset 0, got \" 5s\"");
    CHECK_STR_EQ(every_err("5 s", -EINVAL),
                 "every: unknown unit at offset 1 (use ms, s, m or h), got \"5 s\"");
    CHECK_STR_EQ(every_err("1.5s", -EINVAL),
                 "every: unknown unit at offset 1 (use ms, s, m or h), got \"1.5s\"");
    CHECK_STR_EQ(every_err("1d", -EINVAL),
                 "every: unknown unit at offset 1 (use ms, s, m or h), got \"1d\"");
    CHECK_STR_EQ(every_err("10S", -EINVAL),
                 "every: unknown unit at offset 2 (use ms, s, m or h), got \"10S\"");
    CHECK_STR_EQ(every_err("745h", -ERANGE), "every: duration exceeds 31 days, got \"745h\"");
    CHECK_STR_EQ(every_err("744h1ms", -ERANGE), "every: duration exceeds 31 days, got \"744h1ms\"");
    CHECK_STR_EQ(every_err("99999999999999999999999s", -ERANGE),
                 "every: duration exceeds 31 days, got \"99999999999999999999999s\"");
    CHECK_STR_EQ(every_err("18446744073709551617ms", -ERANGE),
                 "every: duration exceeds 31 days, got \"18446744073709551617ms\"");
    CHECK_STR_EQ(every_err("5124095576030431h", -ERANGE),
                 "every: duration exceeds 31 days, got \"5124095576030431h\"");
    CHECK_STR_EQ(every_err("400h400h", -ERANGE),
                 "every: duration exceeds 31 days, got \"400h400h\"");
    CHECK_STR_EQ(every_err(NULL, -EINVAL), "every: missing duration");
    /* Control bytes and quotes are not copied into the message. */
    CHECK_STR_EQ(every_err("5\"\n", -EINVAL),
                 "every: unknown unit at offset 1 (use ms, s, m or h), got \"5??\"");
    /* The caller's field name leads the message; no err buffer is fine. */
    struct wisp_schedule *s = NULL;
    CHECK_INT_EQ(wisp_schedule_every("x", "functions.f.triggers[0].every", &s, err, sizeof(err)),
                 -EINVAL);
    CHECK_STR_EQ(err, "functions.f.triggers[0].every: expected a number at offset 0, got \"x\"");
    CHECK_INT_EQ(wisp_schedule_every("x", "every", &s, NULL, 0), -EINVAL);
    CHECK(s == NULL);
}

static void test_every_next_drift_free(void)
{
    struct wisp_schedule *s = NULL;
    CHECK_INT_EQ(wisp_schedule_every("10ms", "every", &s, err, sizeof(err)), 0);
    const uint64_t p = 10000000ULL;
    CHECK(wisp_schedule_period_ns(s) == p);
    const uint64_t start = utc_ns("2026-11-27T06:00:00") + 123457;

    /* A timer loop that wakes late by a varying amount never drifts: after
     * 60,000 firings it is exactly start + 60,000 periods. */
    uint64_t next = start, jitter = 12345;
    int bad = 0;
    for (uint64_t k = 1; k <= 60000; k++) {
        jitter = jitter * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t woke = next + (jitter >> 33) % p; /* late by [0, period) after a firing */
        uint64_t n = wisp_schedule_every_next(s, start, woke);
        if (n != start + k * p || n <= woke)
            bad++;
        /* Exactly on a firing: the next one strictly after it. */
        if (wisp_schedule_every_next(s, start, start + k * p) != start + (k + 1) * p)
            bad++;
        /* Just before a firing: that firing. */
        if (wisp_schedule_every_next(s, start, start + k * p - 1) != start + k * p)
            bad++;
        next = n;
    }
    CHECK_INT_EQ(bad, 0);
    CHECK(next == start + 60000 * p);

    /* Before the anchor or at it: the first firing is start + period. */
    CHECK(wisp_schedule_every_next(s, start, 0) == start + p);
    CHECK(wisp_schedule_every_next(s, start, start) == start + p);
    /* A missed stretch (the gateway slept) skips to the next slot, no burst. */
    CHECK(wisp_schedule_every_next(s, start, start + 1000 * p + 5) == start + 1001 * p);
    /* No wrap-around near the end of uint64_t. */
    CHECK(wisp_schedule_every_next(s, UINT64_MAX - 5, 0) == UINT64_MAX);
    CHECK(wisp_schedule_every_next(s, UINT64_MAX - 2 * p, UINT64_MAX - 1) == UINT64_MAX);
    CHECK(wisp_schedule_every_next(s, UINT64_MAX - 3 * p, UINT64_MAX - 2 * p) == UINT64_MAX - p);
    wisp_schedule_free(s);

    /* Cron schedules: period 0, every_next = next after max(start, now). */
    CHECK_INT_EQ(wisp_schedule_cron("0 * * * * *", "cron", &s, err, sizeof(err)), 0);
    CHECK(wisp_schedule_period_ns(s) == 0);
    CHECK(wisp_schedule_every_next(s, utc_ns("2024-01-01T00:00:30"), 0) ==
          utc_ns("2024-01-01T00:01:00"));
    CHECK(wisp_schedule_every_next(s, 0, utc_ns("2024-01-01T00:01:00")) ==
          utc_ns("2024-01-01T00:02:00"));
    wisp_schedule_free(s);
    CHECK_INT_EQ(wisp_schedule_cron("0 0 0 30 2 *", "cron", &s, err, sizeof(err)), 0);
    CHECK(wisp_schedule_every_next(s, 0, 0) == UINT64_MAX);
    wisp_schedule_free(s);
    CHECK(wisp_schedule_period_ns(NULL) == 0);
}

/* ---- cron: valid expressions ---- */

static void test_cron_seconds(void)
{
    CHECK_STR_EQ(next_of("* * * * * *", "2024-01-01T00:00:00", 0), "2024-01-01T00:00:01");
    /* Strictly after, and firings are whole seconds. */
    CHECK_STR_EQ(next_of("* * * * * *", "2024-01-01T00:00:00", 500000000), "2024-01-01T00:00:01");
    CHECK_STR_EQ(next_of("* * * * * *", "2024-01-01T00:00:00", 999999999), "2024-01-01T00:00:01");
    CHECK_STR_EQ(series("*/15 * * * * *", "2024-01-01T00:00:00", 5),
                 "2024-01-01T00:00:15 2024-01-01T00:00:30 2024-01-01T00:00:45 "
                 "2024-01-01T00:01:00 2024-01-01T00:01:15");
    CHECK_STR_EQ(next_of("*/15 * * * * *", "2024-01-01T00:00:14", 0), "2024-01-01T00:00:15");
    CHECK_STR_EQ(next_of("0 * * * * *", "2024-01-01T00:00:00", 0), "2024-01-01T00:01:00");
    CHECK_STR_EQ(next_of("30 * * * * *", "2024-01-01T00:00:29", 0), "2024-01-01T00:00:30");
    CHECK_STR_EQ(next_of("30 * * * * *", "2024-01-01T00:00:30", 0), "2024-01-01T00:01:30");
    /* The epoch itself and leading/trailing blanks, tabs between fields. */
    CHECK_STR_EQ(next_of("  0\t0 0 * * *  ", "1970-01-01T00:00:00", 0), "1970-01-02T00:00:00");
}

static void test_cron_weekdays(void)
{
    /* 2024-01-05 is a Friday. */
    CHECK_STR_EQ(series("0 0 9-17 * * MON-FRI", "2024-01-05T16:30:00", 3),
                 "2024-01-05T17:00:00 2024-01-08T09:00:00 2024-01-08T10:00:00");
    CHECK_STR_EQ(next_of("0 0 9-17 * * 1-5", "2024-01-06T08:00:00", 0), "2024-01-08T09:00:00");
    CHECK_STR_EQ(next_of("0 30 9 * * mon-fri", "2024-01-08T09:30:00", 0), "2024-01-09T09:30:00");
    /* 7 and 0 are both Sunday; 5-7 is Fri, Sat, Sun. */
    CHECK_STR_EQ(next_of("0 0 0 * * 7", "2024-01-01T00:00:00", 0), "2024-01-07T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 * * 0", "2024-01-01T00:00:00", 0), "2024-01-07T00:00:00");
    CHECK_STR_EQ(series("0 0 0 * * 5-7", "2024-01-01T00:00:00", 4),
                 "2024-01-05T00:00:00 2024-01-06T00:00:00 2024-01-07T00:00:00 "
                 "2024-01-12T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 * * SUN", "2024-01-01T00:00:00", 0), "2024-01-07T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 * * sat,Sun", "2024-01-01T00:00:00", 0), "2024-01-06T00:00:00");
    /* "?" and "*" in the other day field do not widen it. */
    CHECK_STR_EQ(next_of("0 0 0 ? * WED", "2024-01-01T00:00:00", 0), "2024-01-03T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 */1 * WED", "2024-01-01T00:00:00", 0), "2024-01-03T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 15 * ?", "2024-01-01T00:00:00", 0), "2024-01-15T00:00:00");
}

static void test_cron_month_ends(void)
{
    /* The 31st skips the months that have no 31st. */
    CHECK_STR_EQ(series("0 0 0 31 * *", "2024-01-01T00:00:00", 7),
                 "2024-01-31T00:00:00 2024-03-31T00:00:00 2024-05-31T00:00:00 "
                 "2024-07-31T00:00:00 2024-08-31T00:00:00 2024-10-31T00:00:00 "
                 "2024-12-31T00:00:00");
    CHECK_STR_EQ(series("0 0 0 30 * *", "2023-01-30T00:00:00", 2),
                 "2023-03-30T00:00:00 2023-04-30T00:00:00");
    /* Feb 29 only in leap years: 2028 after 2024, 2000 is one, 2100 is not. */
    CHECK_STR_EQ(next_of("0 0 0 29 2 *", "2024-02-29T00:00:00", 0), "2028-02-29T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 29 2 *", "2024-03-01T00:00:00", 0), "2028-02-29T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 29 2 *", "1999-01-01T00:00:00", 0), "2000-02-29T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 29 2 *", "2096-02-29T00:00:00", 0), "2104-02-29T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 29 FEB *", "2023-02-28T23:59:59", 0), "2024-02-29T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 1 3 *", "2024-02-28T12:00:00", 0), "2024-03-01T00:00:00");
    CHECK_STR_EQ(next_of("0 0 12 * 2 *", "2023-02-28T12:00:00", 0), "2024-02-01T12:00:00");
}

static void test_cron_day_or(void)
{
    /* Both day fields restricted: the 13th OR a Friday. */
    CHECK_STR_EQ(series("0 0 12 13 * FRI", "2024-01-01T00:00:00", 4),
                 "2024-01-05T12:00:00 2024-01-12T12:00:00 2024-01-13T12:00:00 "
                 "2024-01-19T12:00:00");
    /* Friday the 13th fires once, not twice. */
    CHECK_STR_EQ(series("0 0 12 13 * 5", "2024-09-12T00:00:00", 2),
                 "2024-09-13T12:00:00 2024-09-20T12:00:00");
    /* Only one restricted: just that one. */
    CHECK_STR_EQ(next_of("0 0 12 13 * *", "2024-01-01T00:00:00", 0), "2024-01-13T12:00:00");
    CHECK_STR_EQ(next_of("0 0 12 * * FRI", "2024-01-06T00:00:00", 0), "2024-01-12T12:00:00");
    /* A step over the days is a restriction too. */
    CHECK_STR_EQ(series("0 0 0 */10 * MON", "2024-01-01T00:00:00", 4),
                 "2024-01-08T00:00:00 2024-01-11T00:00:00 2024-01-15T00:00:00 "
                 "2024-01-21T00:00:00");
    /* With OR, a day-of-month that never exists is rescued by the weekday. */
    CHECK_STR_EQ(next_of("0 0 0 30 2 MON", "2024-01-01T00:00:00", 0), "2024-02-05T00:00:00");
}

static void test_cron_names_steps_lists(void)
{
    CHECK_STR_EQ(next_of("0 30 6 * JAN,jul sun", "2024-01-01T00:00:00", 0), "2024-01-07T06:30:00");
    CHECK_STR_EQ(next_of("0 30 6 * JAN,jul sun", "2024-02-01T00:00:00", 0), "2024-07-07T06:30:00");
    CHECK_STR_EQ(next_of("0 0 0 1 mar-May/2 *", "2024-01-01T00:00:00", 0), "2024-03-01T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 1 mar-May/2 *", "2024-03-01T00:00:00", 0), "2024-05-01T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 1 Dec *", "2024-12-01T00:00:00", 0), "2025-12-01T00:00:00");
    CHECK_STR_EQ(series("0 */20 1-5/2 * * *", "2024-01-01T00:00:00", 4),
                 "2024-01-01T01:00:00 2024-01-01T01:20:00 2024-01-01T01:40:00 "
                 "2024-01-01T03:00:00");
    CHECK_STR_EQ(next_of("0 */20 1-5/2 * * *", "2024-01-01T05:40:00", 0), "2024-01-02T01:00:00");
    CHECK_STR_EQ(series("10,20,30 * * * * *", "2024-01-01T00:00:25", 3),
                 "2024-01-01T00:00:30 2024-01-01T00:01:10 2024-01-01T00:01:20");
    CHECK_STR_EQ(series("5/20 * * * * *", "2024-01-01T00:00:00", 4),
                 "2024-01-01T00:00:05 2024-01-01T00:00:25 2024-01-01T00:00:45 "
                 "2024-01-01T00:01:05");
    CHECK_STR_EQ(series("0 0 1,12-13,22-23/1 * * *", "2024-01-01T00:00:00", 5),
                 "2024-01-01T01:00:00 2024-01-01T12:00:00 2024-01-01T13:00:00 "
                 "2024-01-01T22:00:00 2024-01-01T23:00:00");
    CHECK_STR_EQ(next_of("0 0 0 * * */2", "2024-01-01T00:00:00", 0), "2024-01-02T00:00:00");
    CHECK_STR_EQ(next_of("*/60 * * * * *", "2024-01-01T00:00:00", 0), "2024-01-01T00:01:00");
    /* "a-a/n" is just a; "a/n" runs to the field's end (Sunday is 0, not 7). */
    CHECK_STR_EQ(series("0 0 0 8-8/5 * *", "2024-01-01T00:00:00", 2),
                 "2024-01-08T00:00:00 2024-02-08T00:00:00");
    CHECK_STR_EQ(series("0 0 0 * * 4/2", "2024-01-01T00:00:00", 3),
                 "2024-01-04T00:00:00 2024-01-06T00:00:00 2024-01-11T00:00:00");
    CHECK_STR_EQ(series("0 0 0 * * 7/3", "2024-01-01T00:00:00", 2),
                 "2024-01-07T00:00:00 2024-01-14T00:00:00");
}

static void test_cron_rollovers(void)
{
    CHECK_STR_EQ(next_of("* * * * * *", "2024-12-31T23:59:59", 0), "2025-01-01T00:00:00");
    CHECK_STR_EQ(next_of("* * * * * *", "2024-12-31T23:59:59", 999999999), "2025-01-01T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 1 * *", "2024-12-31T23:59:59", 0), "2025-01-01T00:00:00");
    CHECK_STR_EQ(next_of("59 59 23 31 12 *", "2024-12-31T23:59:59", 0), "2025-12-31T23:59:59");
    CHECK_STR_EQ(next_of("59 59 23 31 12 *", "2024-12-31T23:59:58", 0), "2024-12-31T23:59:59");
    CHECK_STR_EQ(next_of("0 0 * * * *", "2024-01-31T23:00:00", 0), "2024-02-01T00:00:00");
    CHECK_STR_EQ(next_of("0 * * * * *", "2023-02-28T23:59:30", 0), "2023-03-01T00:00:00");
    CHECK_STR_EQ(next_of("0 * * * * *", "2024-02-28T23:59:30", 0), "2024-02-29T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 * * MON", "2024-12-31T00:00:00", 0), "2025-01-06T00:00:00");
    /* 2100 is not a leap year; 2400 is. */
    CHECK_STR_EQ(next_of("0 0 0 * * *", "2100-02-28T00:00:00", 0), "2100-03-01T00:00:00");
    CHECK_STR_EQ(next_of("0 0 0 * * *", "2400-02-28T00:00:00", 0), "2400-02-29T00:00:00");
    /* Past what uint64_t nanoseconds can hold (2554-07-21). */
    CHECK_STR_EQ(next_of("0 0 0 1 1 *", "2554-01-01T00:00:00", 0), "ERANGE");
    CHECK_STR_EQ(next_of("0 0 0 1 7 *", "2554-01-01T00:00:00", 0), "2554-07-01T00:00:00");
}

static void test_cron_shorthands(void)
{
    /* 2024-06-15 is a Saturday. */
    CHECK_STR_EQ(next_of("@yearly", "2024-06-15T10:20:30", 0), "2025-01-01T00:00:00");
    CHECK_STR_EQ(next_of("@annually", "2024-06-15T10:20:30", 0), "2025-01-01T00:00:00");
    CHECK_STR_EQ(next_of("@monthly", "2024-06-15T10:20:30", 0), "2024-07-01T00:00:00");
    CHECK_STR_EQ(next_of("@weekly", "2024-06-15T10:20:30", 0), "2024-06-16T00:00:00");
    CHECK_STR_EQ(next_of("@daily", "2024-06-15T10:20:30", 0), "2024-06-16T00:00:00");
    CHECK_STR_EQ(next_of("@midnight", "2024-06-15T10:20:30", 0), "2024-06-16T00:00:00");
    CHECK_STR_EQ(next_of("@hourly", "2024-06-15T10:20:30", 0), "2024-06-15T11:00:00");
    CHECK_STR_EQ(next_of(" @HOURLY ", "2024-06-15T10:20:30", 0), "2024-06-15T11:00:00");
    CHECK_STR_EQ(next_of("@Daily", "2024-12-31T23:59:59", 0), "2025-01-01T00:00:00");
}

/* ---- cron: invalid expressions ---- */

static void test_cron_invalid(void)
{
    CHECK_STR_EQ(cron_err("* * * * *"), "cron: expected 6 fields (second minute hour "
                                        "day-of-month month day-of-week), got 5 in \"* * * * *\"");
    CHECK_STR_EQ(cron_err("* * * * * * *"),
                 "cron: expected 6 fields (second minute hour day-of-month month day-of-week), "
                 "got 7 in \"* * * * * * *\"");
    CHECK_STR_EQ(cron_err(""), "cron: empty expression (expected 6 fields: second minute hour "
                               "day-of-month month day-of-week), got \"\"");
    CHECK_STR_EQ(cron_err("   "), "cron: empty expression (expected 6 fields: second minute hour "
                                  "day-of-month month day-of-week), got \"\"");
    CHECK_STR_EQ(cron_err("0 0 24 * * *"), "cron: field 3 (hour): 24 is out of range 0-23");
    CHECK_STR_EQ(cron_err("60 * * * * *"), "cron: field 1 (second): 60 is out of range 0-59");
    CHECK_STR_EQ(cron_err("0 60 * * * *"), "cron: field 2 (minute): 60 is out of range 0-59");
    CHECK_STR_EQ(cron_err("0 0 0 0 * *"), "cron: field 4 (day-of-month): 0 is out of range 1-31");
    CHECK_STR_EQ(cron_err("0 0 0 32 * *"), "cron: field 4 (day-of-month): 32 is out of range 1-31");
    CHECK_STR_EQ(cron_err("0 0 0 * 13 *"), "cron: field 5 (month): 13 is out of range 1-12");
    CHECK_STR_EQ(cron_err("0 0 0 * 0 *"), "cron: field 5 (month): 0 is out of range 1-12");
    CHECK_STR_EQ(cron_err("0 0 0 * * 8"), "cron: field 6 (day-of-week): 8 is out of range 0-7");
    CHECK_STR_EQ(cron_err("0 0 1-24 * * *"), "cron: field 3 (hour): 24 is out of range 0-23");
    CHECK_STR_EQ(cron_err("99999999999999999999999 * * * * *"),
                 "cron: field 1 (second): 99999999999999999999999 is out of range 0-59");
    CHECK_STR_EQ(cron_err("*/0 * * * * *"), "cron: field 1 (second): step 0 is out of range 1-60");
    CHECK_STR_EQ(cron_err("0 0 */25 * * *"), "cron: field 3 (hour): step 25 is out of range 1-24");
    CHECK_STR_EQ(cron_err("0 0 0 * * */8"),
                 "cron: field 6 (day-of-week): step 8 is out of range 1-7");
    CHECK_STR_EQ(cron_err("*/ * * * * *"),
                 "cron: field 1 (second): expected a number after \"/\", got \"*/\"");
    CHECK_STR_EQ(cron_err("*/x * * * * *"),
                 "cron: field 1 (second): expected a number after \"/\", got \"*/x\"");
    CHECK_STR_EQ(cron_err("*/5/2 * * * * *"),
                 "cron: field 1 (second): expected a number after \"/\", got \"*/5/2\"");
    CHECK_STR_EQ(cron_err("0 5-2 * * * *"),
                 "cron: field 2 (minute): range 5-2 is inverted (start above end)");
    CHECK_STR_EQ(cron_err("0 0 0 * DEC-JAN *"),
                 "cron: field 5 (month): range DEC-JAN is inverted (start above end)");
    CHECK_STR_EQ(cron_err("abc * * * * *"),
                 "cron: field 1 (second): expected a number, got \"abc\"");
    CHECK_STR_EQ(cron_err("0 0 0 * FOO *"),
                 "cron: field 5 (month): expected a number or month name (JAN-DEC), got \"FOO\"");
    CHECK_STR_EQ(cron_err("0 0 0 * JANUARY *"),
                 "cron: field 5 (month): expected a number or month name (JAN-DEC), got "
                 "\"JANUARY\"");
    CHECK_STR_EQ(cron_err("0 0 0 * * FUNDAY"),
                 "cron: field 6 (day-of-week): expected a number or day name (SUN-SAT), got "
                 "\"FUNDAY\"");
    CHECK_STR_EQ(cron_err("0 0 MON * * *"), "cron: field 3 (hour): expected a number, got \"MON\"");
    CHECK_STR_EQ(cron_err("0 0 0 1 * JAN"),
                 "cron: field 6 (day-of-week): expected a number or day name (SUN-SAT), got "
                 "\"JAN\"");
    CHECK_STR_EQ(cron_err("1,,2 * * * * *"), "cron: field 1 (second): empty list item in \"\"");
    CHECK_STR_EQ(cron_err("1, * * * * *"), "cron: field 1 (second): empty list item in \"\"");
    CHECK_STR_EQ(cron_err("? * * * * *"),
                 "cron: field 1 (second): \"?\" is only allowed in the day fields, got \"?\"");
    CHECK_STR_EQ(cron_err("1-2-3 * * * * *"),
                 "cron: field 1 (second): unexpected characters in \"1-2-3\"");
    CHECK_STR_EQ(cron_err("0 0 0 * * **"),
                 "cron: field 6 (day-of-week): unexpected characters in \"**\"");
    CHECK_STR_EQ(cron_err("1- * * * * *"), "cron: field 1 (second): expected a number, got \"\"");
    CHECK_STR_EQ(cron_err("-1 * * * * *"), "cron: field 1 (second): expected a number, got \"-\"");
    CHECK_STR_EQ(cron_err("0 0 0 L * *"),
                 "cron: field 4 (day-of-month): expected a number, got \"L\"");
    CHECK_STR_EQ(cron_err("@every 5s"), "cron: unknown shorthand (use @yearly, @monthly, @weekly, "
                                        "@daily or @hourly), got \"@every 5s\"");
    CHECK_STR_EQ(cron_err("@reboot"), "cron: unknown shorthand (use @yearly, @monthly, @weekly, "
                                      "@daily or @hourly), got \"@reboot\"");
    CHECK_STR_EQ(cron_err(NULL), "cron: missing cron expression");

    /* Very long input: refused up front, quoted only in part. */
    char *big = malloc(100001);
    CHECK(big != NULL);
    if (big) {
        memset(big, '1', 100000);
        big[100000] = '\0';
        CHECK_STR_EQ(cron_err(big), "cron: expression longer than 256 bytes, got "
                                    "\"111111111111111111111111111111111111111111111111...\"");
        for (size_t i = 0; i < 100000; i += 2)
            big[i] = ' ';
        CHECK_CONTAINS(cron_err(big), "cron: expression longer than 256 bytes");
        free(big);
    }
    /* A long single field within the limit. */
    char list[257];
    memset(list, ',', 250);
    memcpy(list, "0 0 0 * * 1", 11);
    list[250] = '\0';
    CHECK_STR_EQ(cron_err(list), "cron: field 6 (day-of-week): empty list item in \"\"");

    /* The caller's field name leads; NULL field and NULL err are fine. */
    struct wisp_schedule *s = NULL;
    CHECK_INT_EQ(wisp_schedule_cron("0 0 25 * * *", "triggers[1].cron", &s, err, sizeof(err)),
                 -EINVAL);
    CHECK_STR_EQ(err, "triggers[1].cron: field 3 (hour): 25 is out of range 0-23");
    CHECK_INT_EQ(wisp_schedule_cron("0 0 25 * * *", NULL, &s, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "cron: field 3 (hour): 25 is out of range 0-23");
    CHECK_INT_EQ(wisp_schedule_cron("0 0 25 * * *", "cron", &s, NULL, 0), -EINVAL);
    char tiny[8];
    CHECK_INT_EQ(wisp_schedule_cron("0 0 25 * * *", "cron", &s, tiny, sizeof(tiny)), -EINVAL);
    CHECK_STR_EQ(tiny, "cron: f");
    CHECK(s == NULL);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int rnd_in(int lo, int hi)
{
    return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

/* Random bytes and random cron-ish tokens never crash the parser, and
 * whatever parses can be asked for its next firing. */
static void test_cron_fuzz(void)
{
    static const char *const PIECES[] = {
        "*",  "?",   "/",   "-", ",", " ", "\t",          "0",  "7",  "59",     "60",   "1", "31",
        "12", "JAN", "sun", "@", "x", "L", "99999999999", "*/", "5-", "@daily", "\xff", "\n"};
    char buf[300];
    int parsed = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = 0;
        if (i % 2) {
            size_t len = (size_t)rnd_in(0, 40);
            for (; n < len; n++)
                buf[n] = (char)rnd_in(1, 255);
        } else {
            int k = rnd_in(0, 30);
            for (int j = 0; j < k; j++) {
                const char *p = PIECES[rnd() % (sizeof(PIECES) / sizeof(PIECES[0]))];
                size_t pl = strlen(p);
                if (n + pl >= sizeof(buf))
                    break;
                memcpy(buf + n, p, pl);
                n += pl;
            }
        }
        buf[n] = '\0';
        struct wisp_schedule *s = NULL;
        err[0] = '\0';
        int rc = wisp_schedule_cron(buf, "cron", &s, err, sizeof(err));
        if (rc == 0) {
            parsed++;
            uint64_t next = 0;
            rc = wisp_schedule_next(s, rnd() % (UINT64_MAX / 2), &next);
            CHECK(rc == 0 || rc == -ENOENT || rc == -ERANGE);
            wisp_schedule_free(s);
        } else {
            CHECK_INT_EQ(rc, -EINVAL);
            CHECK(s == NULL);
            CHECK(strncmp(err, "cron: ", 6) == 0);
        }
        s = NULL;
        rc = wisp_schedule_every(buf, "every", &s, err, sizeof(err));
        CHECK(rc == 0 || rc == -EINVAL || rc == -ERANGE);
        wisp_schedule_free(s);
    }
    CHECK(parsed > 0);
}

static void test_cron_impossible(void)
{
    static const char *const NEVER[] = {"0 0 0 30 2 *", "0 0 0 31 2 *", "0 0 0 31 4,6,9,11 *",
                                        "0 0 0 30,31 FEB ?", "59 59 23 31 APR-JUN/2 *"};
    struct timespec a, b;
    (void)clock_gettime(CLOCK_MONOTONIC, &a);
    for (size_t i = 0; i < sizeof(NEVER) / sizeof(NEVER[0]); i++) {
        CHECK_STR_EQ(next_of(NEVER[i], "2024-01-01T00:00:00", 0), "ENOENT");
        CHECK_STR_EQ(next_of(NEVER[i], "2096-03-01T00:00:00", 0), "ENOENT");
    }
    (void)clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    CHECK(ms < 500);
    /* Nearly impossible but not quite: a Feb 29 that is also a Monday. */
    CHECK_STR_EQ(next_of("0 0 0 29 2 *", "2096-03-01T00:00:00", 0), "2104-02-29T00:00:00");
}

/* ---- randomized cross-check against a brute force ---- */

struct gen {
    char text[200];
    uint64_t mask[6];
    bool dom_star, dow_star;
};

static const int GMIN[6] = {0, 0, 0, 1, 1, 0};
static const int GMAX[6] = {59, 59, 23, 31, 12, 6};

/* Appends value v of field f, sometimes as a name; Sunday as 7 only when
 * alone is set (7 cannot start a range). */
static void put_value(char *out, size_t cap, int f, int v, bool alone)
{
    static const char *const MON[12] = {"JAN", "feb", "Mar", "APR", "may", "Jun",
                                        "JUL", "aug", "Sep", "OCT", "nov", "Dec"};
    static const char *const DOW[7] = {"SUN", "mon", "Tue", "WED", "thu", "Fri", "SAT"};
    size_t n = strlen(out);
    if (f == 4 && rnd() % 3 == 0)
        (void)snprintf(out + n, cap - n, "%s", MON[v - 1]);
    else if (f == 5 && rnd() % 3 == 0)
        (void)snprintf(out + n, cap - n, "%s", DOW[v]);
    else if (f == 5 && v == 0 && alone && rnd() % 2 == 0)
        (void)snprintf(out + n, cap - n, "7");
    else
        (void)snprintf(out + n, cap - n, "%d", v);
}

static void add_range(uint64_t *mask, int lo, int hi, int step)
{
    for (int v = lo; v <= hi; v += step)
        *mask |= 1ULL << v;
}

/* One list item of field f appended to out, its values added to *mask.
 * Returns whether it was an unrestricted "*", "?" or "* /1". */
static bool gen_item(char *out, size_t cap, int f, uint64_t *mask)
{
    int lo = GMIN[f], hi = GMAX[f], width = hi - lo + 1;
    size_t n = strlen(out);
    int kind = rnd_in(0, 5);
    int a = rnd_in(lo, hi), b = rnd_in(a, hi), step = rnd_in(1, width);
    if (rnd() % 2)
        step = rnd_in(1, 4 < width ? 4 : width);
    switch (kind) {
    case 0:
        put_value(out, cap, f, a, true);
        add_range(mask, a, a, 1);
        return false;
    case 1:
        put_value(out, cap, f, a, false);
        n = strlen(out);
        (void)snprintf(out + n, cap - n, "-");
        put_value(out, cap, f, b, false);
        add_range(mask, a, b, 1);
        return false;
    case 2:
        (void)snprintf(out + n, cap - n, "*/%d", step);
        add_range(mask, lo, hi, step);
        return step == 1;
    case 3:
        put_value(out, cap, f, a, false);
        n = strlen(out);
        (void)snprintf(out + n, cap - n, "-");
        put_value(out, cap, f, b, false);
        n = strlen(out);
        (void)snprintf(out + n, cap - n, "/%d", step);
        add_range(mask, a, b, step);
        return false;
    case 4:
        put_value(out, cap, f, a, false);
        n = strlen(out);
        (void)snprintf(out + n, cap - n, "/%d", step);
        add_range(mask, a, hi, step);
        return false;
    default:
        (void)snprintf(out + n, cap - n, "%s", (f == 3 || f == 5) && rnd() % 2 ? "?" : "*");
        add_range(mask, lo, hi, 1);
        return true;
    }
}

static void gen_expr(struct gen *g)
{
    memset(g, 0, sizeof(*g));
    /* How often each field is left as "*": dense enough that most
     * expressions fire within the brute-force window. */
    static const int STAR_PCT[6] = {30, 30, 30, 50, 75, 50};
    for (int f = 0; f < 6; f++) {
        char *out = g->text + strlen(g->text);
        size_t cap = sizeof(g->text) - strlen(g->text);
        bool star = false;
        if (rnd_in(0, 99) < STAR_PCT[f]) {
            (void)snprintf(out, cap, "*");
            add_range(&g->mask[f], GMIN[f], GMAX[f], 1);
            star = true;
        } else {
            int items = rnd() % 4 == 0 ? rnd_in(2, 3) : 1;
            for (int i = 0; i < items; i++) {
                if (i)
                    (void)snprintf(out + strlen(out), cap - strlen(out), ",");
                star |= gen_item(out, cap, f, &g->mask[f]);
            }
        }
        if (f == 3)
            g->dom_star = star;
        if (f == 5)
            g->dow_star = star;
        if (f < 5)
            (void)snprintf(g->text + strlen(g->text), sizeof(g->text) - strlen(g->text), " ");
    }
}

struct civil {
    int y, mo, d, h, mi, s, wday;
};

static bool gen_matches(const struct gen *g, const struct civil *c)
{
    if (!((g->mask[0] >> c->s) & 1) || !((g->mask[1] >> c->mi) & 1) ||
        !((g->mask[2] >> c->h) & 1) || !((g->mask[4] >> c->mo) & 1))
        return false;
    bool dom = (g->mask[3] >> c->d) & 1, dow = (g->mask[5] >> c->wday) & 1;
    return g->dom_star || g->dow_star ? dom && dow : dom || dow;
}

static void civil_of(uint64_t sec, struct civil *c)
{
    time_t t = (time_t)sec;
    struct tm tm;
    CHECK(gmtime_r(&t, &tm) != NULL);
    c->y = tm.tm_year + 1900;
    c->mo = tm.tm_mon + 1;
    c->d = tm.tm_mday;
    c->h = tm.tm_hour;
    c->mi = tm.tm_min;
    c->s = tm.tm_sec;
    c->wday = tm.tm_wday;
}

/* One second later, by carrying field by field. */
static void civil_tick(struct civil *c)
{
    if (++c->s < 60)
        return;
    c->s = 0;
    if (++c->mi < 60)
        return;
    c->mi = 0;
    if (++c->h < 24)
        return;
    c->h = 0;
    c->wday = (c->wday + 1) % 7;
    if (++c->d <= month_days(c->y, c->mo))
        return;
    c->d = 1;
    if (++c->mo <= 12)
        return;
    c->mo = 1;
    c->y++;
}

static void test_cron_random_vs_brute_force(void)
{
    enum { CASES = 5000, WINDOW = 2 * 86400 };
    rng_state = 0x243f6a8885a308d3ULL;
    int found = 0, mismatches = 0;
    for (int i = 0; i < CASES && mismatches < 10; i++) {
        struct gen g;
        gen_expr(&g);
        /* Start: anywhere in 1970-2500, or just before the end of a month,
         * year or Feb 28/29. */
        uint64_t start_s;
        if (rnd() % 2) {
            start_s = rnd() % (uint64_t)utc_parts(2500, 1, 1, 0, 0, 0);
        } else {
            int y = rnd_in(1970, 2499), mo = rnd() % 3 == 0 ? 12 : rnd() % 2 ? 2 : rnd_in(1, 12);
            int d = month_days(y, mo) - rnd_in(0, 2);
            start_s = (uint64_t)utc_parts(y, mo, d, rnd_in(20, 23), rnd_in(0, 59), rnd_in(0, 59));
        }
        uint64_t start_ns = start_s * NS_PER_S + (rnd() % 2 ? rnd() % NS_PER_S : 0);

        struct wisp_schedule *s = NULL;
        err[0] = '\0';
        int rc = wisp_schedule_cron(g.text, "cron", &s, err, sizeof(err));
        CHECK_INT_EQ(rc, 0);
        if (rc != 0) {
            (void)fprintf(stderr, "  \"%s\": %s\n", g.text, err);
            mismatches++;
            continue;
        }
        uint64_t next = 0;
        rc = wisp_schedule_next(s, start_ns, &next);
        wisp_schedule_free(s);

        /* Brute force: every second of the window after start. */
        struct civil c;
        uint64_t t = start_s + 1;
        civil_of(t, &c);
        uint64_t hit = 0;
        for (int k = 0; k < WINDOW; k++, t++, civil_tick(&c)) {
            if (gen_matches(&g, &c)) {
                hit = t;
                break;
            }
        }
        bool ok;
        if (hit) {
            found++;
            ok = rc == 0 && next == hit * NS_PER_S;
        } else {
            /* Nothing in the window: later (and really matching) or never. */
            ok = rc == -ENOENT || (rc == 0 && next > (start_s + WINDOW) * NS_PER_S);
            if (rc == 0 && ok) {
                struct civil n;
                civil_of(next / NS_PER_S, &n);
                ok = next % NS_PER_S == 0 && gen_matches(&g, &n);
            }
        }
        if (!ok) {
            char b1[64], b2[64], b3[64];
            (void)fprintf(stderr, "  \"%s\" after %s: got rc %d %s, brute force %s\n", g.text,
                          fmt(start_ns, b1, sizeof(b1)), rc, fmt(next, b2, sizeof(b2)),
                          hit ? fmt(hit * NS_PER_S, b3, sizeof(b3)) : "none in window");
            mismatches++;
        }
    }
    CHECK_INT_EQ(mismatches, 0);
    /* The generator is dense enough that most cases are decided in the window. */
    CHECK(found > CASES / 2);
    (void)fprintf(stderr, "random cross-check: %d of %d fired within 2 days\n", found, CASES);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"every_valid", test_every_valid},
        {"every_invalid", test_every_invalid},
        {"every_next_drift_free", test_every_next_drift_free},
        {"cron_seconds", test_cron_seconds},
        {"cron_weekdays", test_cron_weekdays},
        {"cron_month_ends", test_cron_month_ends},
        {"cron_day_or", test_cron_day_or},
        {"cron_names_steps_lists", test_cron_names_steps_lists},
        {"cron_rollovers", test_cron_rollovers},
        {"cron_shorthands", test_cron_shorthands},
        {"cron_invalid", test_cron_invalid},
        {"cron_fuzz", test_cron_fuzz},
        {"cron_impossible", test_cron_impossible},
        {"cron_random_vs_brute_force", test_cron_random_vs_brute_force},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
