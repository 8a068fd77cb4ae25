/* Timer schedules: "every" durations and 6-field cron expressions in UTC. */
#include "schedule.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define NS_PER_MS  1000000ULL
#define NS_PER_S   1000000000ULL
#define MAX_PERIOD (31ULL * 24 * 3600 * NS_PER_S)
/* Longest gap between two firings of a satisfiable expression: Feb 29 can be
 * 8 years apart (2096 -> 2104), so searching 9 years is enough. */
#define SEARCH_YEARS 9

enum { SCHED_EVERY, SCHED_CRON };

enum { F_SEC, F_MIN, F_HOUR, F_DOM, F_MON, F_DOW, F_COUNT };

struct wisp_schedule {
    int kind;
    uint64_t period_ns;
    uint64_t mask[F_COUNT]; /* bit v set: value v allowed */
    bool dom_star, dow_star;
};

struct field_info {
    const char *name;
    int min, max; /* day-of-week accepts 7 and folds it to 0 */
};

static const struct field_info FIELDS[F_COUNT] = {
    {"second", 0, 59},       {"minute", 0, 59}, {"hour", 0, 23},
    {"day-of-month", 1, 31}, {"month", 1, 12},  {"day-of-week", 0, 7},
};

static const char *const MONTH_NAMES[12] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                            "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const DAY_NAMES[7] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

/* A printable, bounded copy of s[0..len) for error messages. */
static void quote_input(char *out, size_t cap, const char *s, size_t len)
{
    const size_t limit = 48;
    size_t o = 0;
    for (size_t i = 0; i < len && i < limit && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        char ch = s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            ch = '?';
        out[o++] = ch;
    }
    if (len > limit && o + 4 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o < cap ? o : cap - 1] = '\0';
}

/* ---- UTC calendar ---------------------------------------------------- */

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : DAYS[m - 1];
}

/* Days since 1970-01-01 of the proleptic Gregorian date y-m-d. The year is
 * shifted to start in March so that the leap day is the last of its year;
 * then 400-year eras of 146097 days are counted. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;                                   /* [0, 399] */
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11], 0 = March */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday_from_days(int64_t z)
{
    return (int)(z >= -4 ? (z + 4) % 7 : (z + 5) % 7 + 6);
}

/* ---- every ----------------------------------------------------------- */

static struct wisp_schedule *schedule_new(int kind)
{
    struct wisp_schedule *s = calloc(1, sizeof(*s));
    if (s)
        s->kind = kind;
    return s;
}

int wisp_schedule_every(const char *text, const char *field, struct wisp_schedule **out, char *err,
                        size_t errlen)
{
    char q[64];
    if (!field)
        field = "every";
    if (out)
        *out = NULL;
    if (!text || !out)
        return wisp_errf(err, errlen, -EINVAL, "%s: missing duration", field);
    size_t len = strlen(text);
    quote_input(q, sizeof(q), text, len);
    if (len == 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: empty duration (use e.g. 10s, 5m or 1h30m), "
                         "got \"\"",
                         field);
    uint64_t total = 0;
    const char *p = text;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return wisp_errf(err, errlen, -EINVAL,
                             "%s: expected a number at offset %zu, got \"%s\"", field,
                             (size_t)(p - text), q);
        uint64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            n = n * 10 + (uint64_t)(*p - '0');
            if (n > MAX_PERIOD / NS_PER_MS)
                return wisp_errf(err, errlen, -ERANGE, "%s: duration exceeds 31 days, got \"%s\"",
                                 field, q);
            p++;
        }
        uint64_t unit;
        if (p[0] == 'm' && p[1] == 's') {
            unit = NS_PER_MS;
            p += 2;
        } else if (*p == 's') {
            unit = NS_PER_S;
            p++;
        } else if (*p == 'm') {
            unit = 60 * NS_PER_S;
            p++;
        } else if (*p == 'h') {
            unit = 3600 * NS_PER_S;
            p++;
        } else if (*p == '\0') {
            return wisp_errf(err, errlen, -EINVAL,
                             "%s: missing unit after the number (use ms, s, m or h), got \"%s\"",
                             field, q);
        } else {
            return wisp_errf(err, errlen, -EINVAL,
                             "%s: unknown unit at offset %zu (use ms, s, m or h), got \"%s\"",
                             field, (size_t)(p - text), q);
        }
        /* n <= MAX_PERIOD / 1 ms, so n * unit cannot overflow for ms; check
         * the larger units against the limit before multiplying. */
        if (n > MAX_PERIOD / unit || total + n * unit > MAX_PERIOD)
            return wisp_errf(err, errlen, -ERANGE, "%s: duration exceeds 31 days, got \"%s\"",
                             field, q);
        total += n * unit;
    }
    if (total < NS_PER_MS)
        return wisp_errf(err, errlen, -ERANGE, "%s: duration must be at least 1ms, got \"%s\"",
                         field, q);
    struct wisp_schedule *s = schedule_new(SCHED_EVERY);
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", field);
    s->period_ns = total;
    *out = s;
    return 0;
}

/* ---- cron parsing ---------------------------------------------------- */

struct cron_ctx {
    const char *field; /* the caller's name for the whole expression */
    int idx;           /* F_* of the field being parsed */
    char *err;
    size_t errlen;
};

static int field_err(const struct cron_ctx *c, const char *what, const char *tok, size_t len)
{
    char q[64];
    quote_input(q, sizeof(q), tok, len);
    return wisp_errf(c->err, c->errlen, -EINVAL, "%s: field %d (%s): %s \"%s\"", c->field,
                     c->idx + 1, FIELDS[c->idx].name, what, q);
}

/* Parses a number or (month / day-of-week) name at *p, advancing *p. */
static int parse_value(const struct cron_ctx *c, const char **p, const char *end, int *out)
{
    const struct field_info *fi = &FIELDS[c->idx];
    const char *s = *p;
    if (s < end && isdigit((unsigned char)*s)) {
        const char *q = s;
        long v = 0;
        while (q < end && isdigit((unsigned char)*q)) {
            if (v < 100000)
                v = v * 10 + (*q - '0');
            q++;
        }
        if (v < fi->min || v > fi->max) {
            char q2[64];
            quote_input(q2, sizeof(q2), s, (size_t)(q - s));
            return wisp_errf(c->err, c->errlen, -EINVAL,
                             "%s: field %d (%s): %s is out of range %d-%d", c->field, c->idx + 1,
                             fi->name, q2, fi->min, fi->max);
        }
        *out = (int)v;
        *p = q;
        return 0;
    }
    const char *const *names = c->idx == F_MON ? MONTH_NAMES : c->idx == F_DOW ? DAY_NAMES : NULL;
    int count = c->idx == F_MON ? 12 : 7;
    if (names && end - s >= 3) {
        for (int i = 0; i < count; i++) {
            if (strncasecmp(s, names[i], 3) == 0 &&
                (end - s == 3 || !isalpha((unsigned char)s[3]))) {
                *out = c->idx == F_MON ? i + 1 : i;
                *p = s + 3;
                return 0;
            }
        }
    }
    const char *q = s;
    while (q < end && *q != '-' && *q != '/')
        q++;
    if (q == s)
        q = s < end ? s + 1 : s;
    return field_err(c,
                     c->idx == F_MON   ? "expected a number or month name (JAN-DEC), got"
                     : c->idx == F_DOW ? "expected a number or day name (SUN-SAT), got"
                                       : "expected a number, got",
                     s, (size_t)(q - s));
}

/* Parses one list item ("*", "?", "a", "a-b", with an optional "/n"). */
static int parse_item(const struct cron_ctx *c, const char *s, const char *end, uint64_t *mask,
                      bool *star)
{
    const struct field_info *fi = &FIELDS[c->idx];
    const char *p = s;
    int lo = 0, hi = 0;
    bool any = false, single = false;
    if (p == end)
        return field_err(c, "empty list item in", s, 0);
    if (*p == '*' || *p == '?') {
        if (*p == '?' && c->idx != F_DOM && c->idx != F_DOW)
            return field_err(c, "\"?\" is only allowed in the day fields, got", s,
                             (size_t)(end - s));
        lo = fi->min;
        hi = fi->max == 7 ? 6 : fi->max;
        any = true;
        p++;
    } else {
        int rc = parse_value(c, &p, end, &lo);
        if (rc < 0)
            return rc;
        hi = lo;
        single = true;
        if (p < end && *p == '-') {
            single = false;
            p++;
            rc = parse_value(c, &p, end, &hi);
            if (rc < 0)
                return rc;
            if (hi < lo) {
                char q[64];
                quote_input(q, sizeof(q), s, (size_t)(p - s));
                return wisp_errf(c->err, c->errlen, -EINVAL,
                                 "%s: field %d (%s): range %s is inverted (start above end)",
                                 c->field, c->idx + 1, fi->name, q);
            }
        }
    }
    int step = 1;
    if (p < end && *p == '/') {
        const char *st = ++p;
        long v = 0;
        while (p < end && isdigit((unsigned char)*p)) {
            if (v < 100000)
                v = v * 10 + (*p - '0');
            p++;
        }
        if (p == st || p != end)
            return field_err(c, "expected a number after \"/\", got", s, (size_t)(end - s));
        int width = (fi->max == 7 ? 6 : fi->max) - fi->min + 1;
        if (v < 1 || v > width) {
            char q[64];
            quote_input(q, sizeof(q), st, (size_t)(p - st));
            return wisp_errf(c->err, c->errlen, -EINVAL,
                             "%s: field %d (%s): step %s is out of range 1-%d", c->field,
                             c->idx + 1, fi->name, q, width);
        }
        step = (int)v;
        if (single) /* "a/n" = "a-max/n"; Sunday is 0, so up to 6 unless a is 7 */
            hi = fi->max == 7 && lo < 7 ? 6 : fi->max;
    }
    if (p != end)
        return field_err(c, "unexpected characters in", s, (size_t)(end - s));
    for (int v = lo; v <= hi; v += step)
        *mask |= 1ULL << (c->idx == F_DOW && v == 7 ? 0 : v);
    if (any && step == 1)
        *star = true;
    return 0;
}

static int parse_field(const struct cron_ctx *c, const char *s, const char *end, uint64_t *mask,
                       bool *star)
{
    *mask = 0;
    *star = false;
    const char *p = s;
    for (;;) {
        const char *comma = p;
        while (comma < end && *comma != ',')
            comma++;
        int rc = parse_item(c, p, comma, mask, star);
        if (rc < 0)
            return rc;
        if (comma == end)
            return 0;
        p = comma + 1;
    }
}

static const struct {
    const char *name;
    const char *expr;
} SHORTHANDS[] = {
    {"@yearly", "0 0 0 1 1 *"}, {"@annually", "0 0 0 1 1 *"}, {"@monthly", "0 0 0 1 * *"},
    {"@weekly", "0 0 0 * * 0"}, {"@daily", "0 0 0 * * *"},    {"@midnight", "0 0 0 * * *"},
    {"@hourly", "0 0 * * * *"},
};

int wisp_schedule_cron(const char *expr, const char *field, struct wisp_schedule **out, char *err,
                       size_t errlen)
{
    char q[64];
    if (!field)
        field = "cron";
    if (out)
        *out = NULL;
    if (!expr || !out)
        return wisp_errf(err, errlen, -EINVAL, "%s: missing cron expression", field);
    const char *s = expr;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strnlen(s, WISP_SCHEDULE_CRON_MAX + 1);
    quote_input(q, sizeof(q), s, len);
    if (len > WISP_SCHEDULE_CRON_MAX)
        return wisp_errf(err, errlen, -EINVAL, "%s: expression longer than %d bytes, got \"%s\"",
                         field, WISP_SCHEDULE_CRON_MAX, q);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    quote_input(q, sizeof(q), s, len);
    if (len == 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: empty expression (expected 6 fields: second minute hour "
                         "day-of-month month day-of-week), got \"\"",
                         field);
    if (*s == '@') {
        for (size_t i = 0; i < WISP_ARRAY_LEN(SHORTHANDS); i++) {
            if (strlen(SHORTHANDS[i].name) == len && strncasecmp(s, SHORTHANDS[i].name, len) == 0)
                return wisp_schedule_cron(SHORTHANDS[i].expr, field, out, err, errlen);
        }
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: unknown shorthand (use @yearly, @monthly, @weekly, @daily or "
                         "@hourly), got \"%s\"",
                         field, q);
    }
    const char *start[F_COUNT], *stop[F_COUNT];
    int n = 0;
    const char *p = s, *end = s + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end)
            break;
        const char *b = p;
        while (p < end && *p != ' ' && *p != '\t')
            p++;
        if (n < F_COUNT) {
            start[n] = b;
            stop[n] = p;
        }
        n++;
    }
    if (n != F_COUNT)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: expected 6 fields (second minute hour day-of-month month "
                         "day-of-week), got %d in \"%s\"",
                         field, n, q);
    struct wisp_schedule tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.kind = SCHED_CRON;
    for (int i = 0; i < F_COUNT; i++) {
        struct cron_ctx c = {field, i, err, errlen};
        bool star = false;
        int rc = parse_field(&c, start[i], stop[i], &tmp.mask[i], &star);
        if (rc < 0)
            return rc;
        if (i == F_DOM)
            tmp.dom_star = star;
        if (i == F_DOW)
            tmp.dow_star = star;
    }
    struct wisp_schedule *sch = schedule_new(SCHED_CRON);
    if (!sch)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", field);
    *sch = tmp;
    *out = sch;
    return 0;
}

struct wisp_schedule *wisp_schedule_dup(const struct wisp_schedule *s)
{
    struct wisp_schedule *c = malloc(sizeof(*c));
    if (c)
        *c = *s;
    return c;
}

void wisp_schedule_free(struct wisp_schedule *s)
{
    free(s);
}

/* ---- next firing ------------------------------------------------------ */

/* The smallest allowed value >= from (and <= max) in mask, or -1. */
static int next_bit(uint64_t mask, int from, int max)
{
    for (int v = from; v <= max; v++) {
        if (mask & (1ULL << v))
            return v;
    }
    return -1;
}

static bool day_matches(const struct wisp_schedule *s, int64_t y, int m, int d)
{
    bool dom = (s->mask[F_DOM] >> d) & 1;
    bool dow = (s->mask[F_DOW] >> weekday_from_days(days_from_civil(y, m, d))) & 1;
    if (s->dom_star || s->dow_star)
        return dom && dow;
    return dom || dow;
}

/* Field-by-field search from second t (inclusive): each step either accepts
 * a field or moves to the next candidate of it and resets the smaller ones,
 * so the loop runs at most a few times per day and month searched. */
static int cron_next(const struct wisp_schedule *s, int64_t t, int64_t *out)
{
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t sod = t - days * 86400;
    int64_t y;
    int mo, d;
    civil_from_days(days, &y, &mo, &d);
    int h = (int)(sod / 3600), mi = (int)(sod / 60 % 60), sec = (int)(sod % 60);
    const int64_t last_year = y + SEARCH_YEARS;
    for (;;) {
        if (y > last_year)
            return -ENOENT;
        int v = next_bit(s->mask[F_MON], mo, 12);
        if (v < 0) {
            y++;
            mo = 1;
            d = 1;
            h = mi = sec = 0;
            continue;
        }
        if (v != mo) {
            mo = v;
            d = 1;
            h = mi = sec = 0;
        }
        int dim = days_in_month(y, mo);
        if (d > dim || !day_matches(s, y, mo, d)) {
            if (++d > dim) {
                mo++; /* 13 moves to the next year above */
                d = 1;
            }
            h = mi = sec = 0;
            continue;
        }
        v = next_bit(s->mask[F_HOUR], h, 23);
        if (v < 0) {
            d++; /* past the month's end is handled above */
            h = mi = sec = 0;
            continue;
        }
        if (v != h) {
            h = v;
            mi = sec = 0;
        }
        v = next_bit(s->mask[F_MIN], mi, 59);
        if (v < 0) {
            h++;
            mi = sec = 0;
            continue;
        }
        if (v != mi) {
            mi = v;
            sec = 0;
        }
        v = next_bit(s->mask[F_SEC], sec, 59);
        if (v < 0) {
            mi++;
            sec = 0;
            continue;
        }
        sec = v;
        *out = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + sec;
        return 0;
    }
}

int wisp_schedule_next(const struct wisp_schedule *s, uint64_t after_ns, uint64_t *next_ns)
{
    if (!s || !next_ns)
        return -EINVAL;
    if (s->kind == SCHED_EVERY) {
        if (after_ns > UINT64_MAX - s->period_ns)
            return -ERANGE;
        *next_ns = after_ns + s->period_ns;
        return 0;
    }
    /* The first whole second strictly after after_ns. */
    int64_t t = (int64_t)(after_ns / NS_PER_S) + 1;
    int64_t r = 0;
    int rc = cron_next(s, t, &r);
    if (rc < 0)
        return rc;
    if ((uint64_t)r > UINT64_MAX / NS_PER_S)
        return -ERANGE;
    *next_ns = (uint64_t)r * NS_PER_S;
    return 0;
}

uint64_t wisp_schedule_every_next(const struct wisp_schedule *s, uint64_t start_ns, uint64_t now_ns)
{
    if (!s)
        return UINT64_MAX;
    if (s->kind == SCHED_CRON) {
        uint64_t next = 0;
        if (wisp_schedule_next(s, now_ns > start_ns ? now_ns : start_ns, &next) < 0)
            return UINT64_MAX;
        return next;
    }
    uint64_t p = s->period_ns;
    if (start_ns > UINT64_MAX - p)
        return UINT64_MAX;
    if (now_ns < start_ns + p)
        return start_ns + p;
    uint64_t k = (now_ns - start_ns) / p + 1; /* >= 2 */
    if (k > (UINT64_MAX - start_ns) / p)
        return UINT64_MAX;
    return start_ns + k * p;
}

uint64_t wisp_schedule_period_ns(const struct wisp_schedule *s)
{
    return s && s->kind == SCHED_EVERY ? s->period_ns : 0;
}
