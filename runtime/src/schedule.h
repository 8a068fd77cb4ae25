/*
 * Timer schedules for the (future) timer trigger: either "every" a fixed
 * period, or a 6-field cron expression with seconds first
 * (sec min hour day-of-month month day-of-week), evaluated in UTC (no DST),
 * like Fission's timers. Pure computation: no clocks, no TZ, no allocation
 * apart from the schedule itself.
 */
#ifndef WISP_SCHEDULE_H
#define WISP_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

struct wisp_schedule; /* opaque */

/* Longest cron expression accepted, in bytes (leading blanks not counted);
 * anything longer is refused before it is parsed. */
#define WISP_SCHEDULE_CRON_MAX 256

/* Parses an "every" duration: one or more <digits><unit> parts with units
 * ms, s, m, h ("500ms", "10s", "5m", "2h", "1h30m"; the parts add up), in
 * total >= 1 ms and <= 31 days; no blanks, signs or fractions. field names
 * the setting in messages ("every" when NULL). Returns 0 with *out set (free
 * with wisp_schedule_free), or -EINVAL / -ERANGE with err set to
 * "<field>: <what is wrong>, got \"...\"" (the input quoted printable and
 * cut at 48 bytes), or -ENOMEM. */
int wisp_schedule_every(const char *text, const char *field, struct wisp_schedule **out, char *err,
                        size_t errlen);

/* Parses a cron expression. Fields take "*", numbers, ranges "a-b", steps
 * "* /n" (without the space), "a-b/n" and "a/n" (= a-max/n; for day-of-week
 * a-6/n), steps 1 up to the field's width, and lists "a,b,c";
 * month names JAN-DEC and day names SUN-SAT (case-insensitive); day-of-week
 * 0-7 (0 and 7 are Sunday); "?" means "*" in the two day fields. A day field
 * counts as unrestricted when it is "*", "?" or "* /1"; when both day fields
 * are restricted a day matches if EITHER matches, otherwise both must.
 * Shorthands (case-insensitive, seconds 0): @yearly (@annually), @monthly,
 * @weekly, @daily (@midnight), @hourly. Errors name the field, e.g.
 * "cron: field 3 (hour): 24 is out of range 0-23" where "cron" is field
 * (the default when NULL). Returns 0, -EINVAL or -ENOMEM. */
int wisp_schedule_cron(const char *expr, const char *field, struct wisp_schedule **out, char *err,
                       size_t errlen);

/* A copy of s (free with wisp_schedule_free), or NULL on OOM. */
struct wisp_schedule *wisp_schedule_dup(const struct wisp_schedule *s);

/* Frees a schedule; NULL is fine. */
void wisp_schedule_free(struct wisp_schedule *s);

/* The first firing time strictly after after_ns (realtime ns since the
 * epoch, UTC). Cron firings are on whole seconds. For "every" schedules it is
 * after_ns + period (the caller anchors it: see wisp_schedule_every_next).
 * Returns 0; -ENOENT when a cron expression can never fire (e.g.
 * "0 0 0 30 2 *"), found by a bounded field-by-field search (at most 9 years
 * ahead, which covers the longest gap between two Feb 29ths); -ERANGE when
 * the next firing does not fit in uint64_t nanoseconds (after year 2554). */
int wisp_schedule_next(const struct wisp_schedule *s, uint64_t after_ns, uint64_t *next_ns);

/* Drift-free periodic timers: the k-th firing (k >= 1) of an "every" schedule
 * anchored at start_ns is start_ns + k * period; returns the first one
 * strictly after now_ns (start_ns + period when now_ns is before that), or
 * UINT64_MAX when it does not fit. For cron schedules: the next cron firing
 * strictly after max(start_ns, now_ns), or UINT64_MAX when there is none. */
uint64_t wisp_schedule_every_next(const struct wisp_schedule *s, uint64_t start_ns,
                                  uint64_t now_ns);

/* The period of an "every" schedule in ns; 0 for cron. */
uint64_t wisp_schedule_period_ns(const struct wisp_schedule *s);

#endif
