#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int wisp_log_threshold = WISP_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int wisp_log_level_parse(const char *s)
{
    for (int i = 0; i <= WISP_LOG_OFF; i++) {
        if (strcmp(s, level_names[i]) == 0)
            return i;
    }
    if (strcmp(s, "warning") == 0)
        return WISP_LOG_WARN;
    return -1;
}

const char *wisp_log_level_name(int level)
{
    if (level < 0 || level > WISP_LOG_OFF)
        return "?";
    return level_names[level];
}

size_t wisp_log_quote(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c;
        }
    }
    if (o + 1 < cap)
        out[o++] = '"';
    out[o] = '\0';
    return o;
}

/* Writes "ts=... level=... mod=... " into buf; returns its length. */
static size_t prefix(char *buf, size_t cap, int level, const char *module)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s mod=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, wisp_log_level_name(level), module);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

/* One write per line; a short write to a pipe is retried, EINTR too. The
 * result is deliberately ignored past that: logging must never fail the caller. */
static void write_line(char *buf, size_t len)
{
    buf[len++] = '\n';
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

/* A line, and the most its "ts=... level=... mod=... " prefix may take of
 * it (an absurdly long module name is cut) so that the rest always fits. */
enum { LINE_MAX_BYTES = 8192, PREFIX_MAX_BYTES = 512 };

void wisp_log_emit(int level, const char *module, const char *func, const char *fmt, ...)
{
    char text[LINE_MAX_BYTES / 2];
    char line[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t tlen = (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1;
    size_t o = prefix(line, PREFIX_MAX_BYTES, level, module);
    static const char key[] = "msg=";
    memcpy(line + o, key, sizeof(key));
    o += sizeof(key) - 1;
    /* Leave 64 bytes for " func=..." and the newline. */
    o += wisp_log_quote(line + o, sizeof(line) - o - 64, text, tlen);
    if (level >= WISP_LOG_WARN || wisp_log_threshold == WISP_LOG_DEBUG) {
        size_t room = sizeof(line) - o - 1; /* one byte stays for the newline */
        int k = snprintf(line + o, room, " func=%s", func);
        if (k > 0)
            o += (size_t)k < room ? (size_t)k : room - 1;
    }
    write_line(line, o);
}

void wisp_log_emit_fields(int level, const char *module, const char *fields, ...)
{
    char line[LINE_MAX_BYTES];
    va_list ap;
    size_t o = prefix(line, PREFIX_MAX_BYTES, level, module);
    va_start(ap, fields);
    int n = vsnprintf(line + o, sizeof(line) - o - 1, fields, ap);
    va_end(ap);
    if (n < 0)
        return;
    o += (size_t)n < sizeof(line) - o - 1 ? (size_t)n : sizeof(line) - o - 2;
    write_line(line, o);
}
