/*
 * One logging path for the whole runtime. Lines are logfmt
 * ("ts=... level=info mod=pool msg=\"...\""), one write(2) per line so that
 * executors and the supervisor can share stderr without interleaving.
 *
 * Each .c file defines WISP_LOG_MODULE before including this header. The
 * level is checked before any formatting happens.
 */
#ifndef WISP_LOG_H
#define WISP_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum wisp_log_level {
    WISP_LOG_DEBUG = 0,
    WISP_LOG_INFO = 1,
    WISP_LOG_WARN = 2,
    WISP_LOG_ERROR = 3,
    WISP_LOG_OFF = 4,
};

extern int wisp_log_threshold;

/* Parses "debug", "info", "warn", "error" or "off". Returns the level or -1. */
int wisp_log_level_parse(const char *s);
const char *wisp_log_level_name(int level);

/* Formats printf-style text into msg="..." (escaped). */
void wisp_log_emit(int level, const char *module, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Appends fields that are already logfmt ("k=v k2=\"v 2\"") after ts/level/mod. */
void wisp_log_emit_fields(int level, const char *module, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes `s` to `out` (capacity `cap`, NUL-terminated) as a logfmt quoted
 * value, escaping quotes, backslashes and control bytes. Returns bytes written. */
size_t wisp_log_quote(char *out, size_t cap, const char *s, size_t len);

#ifndef WISP_LOG_MODULE
#define WISP_LOG_MODULE "wisp"
#endif

#define wisp_log(lvl, ...)                                                                         \
    do {                                                                                           \
        if ((lvl) >= wisp_log_threshold)                                                           \
            wisp_log_emit((lvl), WISP_LOG_MODULE, __func__, __VA_ARGS__);                          \
    } while (0)
#define log_debug(...) wisp_log(WISP_LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  wisp_log(WISP_LOG_INFO, __VA_ARGS__)
#define log_warn(...)  wisp_log(WISP_LOG_WARN, __VA_ARGS__)
#define log_error(...) wisp_log(WISP_LOG_ERROR, __VA_ARGS__)

#endif
