/*
 * native-threshold: a Wisp handler in C. Readings arrive as
 *   sensors/<room>/humidity  {"humidity": 47.5}   (or just 47.5)
 * and a reading above env THRESHOLD publishes
 *   alerts/<room>/humidity   {"room":"<room>","humidity":47.5,"threshold":45,"alerts":3,"at":"..."}
 * where "alerts" counts this room's alerts so far (ctx state, exactly once per event).
 * A payload without a number fails the invocation: function.json retries it,
 * then sends it to the dead-letter topic.
 *
 * Build (CMake does this into build/examples/native-threshold/):
 *   cc -shared -fPIC -O2 -I runtime/include -o handler.so handler.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wisp/wisp.h>

/* The number in payload: the whole payload, or the value of "field" in a
 * JSON object. Returns 0 and sets *out, or -1. */
static int find_number(const char *payload, const char *field, double *out)
{
    char key[80];
    const char *p = payload;
    char *end = NULL;
    if (snprintf(key, sizeof(key), "\"%s\"", field) >= (int)sizeof(key))
        return -1;
    const char *k = strstr(payload, key);
    if (k) {
        p = k + strlen(key);
        p += strspn(p, " \t\r\n");
        if (*p++ != ':')
            return -1;
    }
    *out = strtod(p, &end);
    if (end == p)
        return -1;
    /* A bare number must be all there is. */
    if (!k && end[strspn(end, " \t\r\n")] != '\0')
        return -1;
    return 0;
}

/* The second level of "sensors/<room>/humidity" into room, or "unknown". */
static void room_of(const char *subject, char *room, size_t cap)
{
    const char *a = strchr(subject, '/');
    const char *b = a ? strchr(a + 1, '/') : NULL;
    size_t n = a && b ? (size_t)(b - a - 1) : 0;
    if (n == 0 || n >= cap) {
        (void)snprintf(room, cap, "unknown");
        return;
    }
    memcpy(room, a + 1, n);
    room[n] = '\0';
}

/* room as the inside of a JSON string: quotes, backslashes and control
 * bytes become escapes. */
static void json_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

static int handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
{
    char msg[400];
    const char *field = ctx->env(ctx, "FIELD");
    const char *ts = ctx->env(ctx, "THRESHOLD");
    char *end = NULL;
    double threshold = ts ? strtod(ts, &end) : 0;
    if (!ts || end == ts || *end) {
        ctx->fail(ctx, "env THRESHOLD must be a number");
        return WISP_ERROR;
    }
    if (!field)
        field = "humidity";

    double value;
    if (find_number(ev->payload, field, &value) != 0) {
        (void)snprintf(msg, sizeof(msg),
                       "expected {\"%s\": <number>} or a number on %s, got %.120s", field,
                       ev->subject, ev->payload);
        ctx->fail(ctx, msg);
        return WISP_ERROR;
    }
    if (value <= threshold)
        return WISP_OK;

    char room[128], room_json[800], counter[160], topic[200];
    room_of(ev->subject, room, sizeof(room));
    json_escape(room, room_json, sizeof(room_json));
    (void)snprintf(counter, sizeof(counter), "alerts/%s", room);
    int64_t alerts = 0;
    if (ctx->state_incr(ctx, counter, 1, &alerts) != WISP_OK) {
        ctx->fail(ctx, ctx->error(ctx));
        return WISP_ERROR;
    }

    (void)snprintf(msg, sizeof(msg), "%s: %s %.1f is above %.1f (alert %lld)", room, field, value,
                   threshold, (long long)alerts);
    ctx->log(ctx, WISP_LEVEL_WARN, msg);

    char body[1200];
    int n = snprintf(body, sizeof(body),
                     "{\"room\":\"%s\",\"%s\":%.15g,\"threshold\":%.15g,\"alerts\":%lld,"
                     "\"at\":\"%s\"}",
                     room_json, field, value, threshold, (long long)alerts, ev->time);
    (void)snprintf(topic, sizeof(topic), "alerts/%s/%s", room, field);
    if (n < 0 || (size_t)n >= sizeof(body) ||
        ctx->publish(ctx, topic, body, (size_t)n, 1, 0) != WISP_OK) {
        ctx->fail(ctx, n < 0 || (size_t)n >= sizeof(body) ? "alert too long" : ctx->error(ctx));
        return WISP_ERROR;
    }
    return WISP_OK;
}

WISP_HANDLER(handle)
