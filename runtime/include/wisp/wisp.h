/*
 * wisp/wisp.h: the ABI of native Wisp handlers (function.json "runtime": "native").
 *
 * A native handler is a shared library that wispd loads with dlopen inside an
 * executor process, the same sandboxed process a Lua handler runs in (no
 * network, no exec, no writing files, no threads). It exports one entry point
 * and the ABI version it was built for; everything it may do goes through the
 * function pointers in struct wisp_ctx, so it never links against wispd.
 *
 *     #include <wisp/wisp.h>
 *
 *     static int handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)
 *     {
 *         if (ctx->publish(ctx, "echo/out", ev->payload, ev->payload_len, 1, 0) != WISP_OK) {
 *             ctx->fail(ctx, ctx->error(ctx));
 *             return WISP_ERROR;
 *         }
 *         return WISP_OK;
 *     }
 *     WISP_HANDLER(handle)
 *
 * Build it for the gateway's architecture:
 *
 *     cc -shared -fPIC -O2 -I runtime/include -o handler.so handler.c
 *
 * Life cycle. The library is loaded once per executor and stays loaded while
 * the executor serves events (a warm start), so static variables persist
 * from one event to the next like the globals of a Lua handler; an executor
 * that is stopped (idle, reload, crash) takes them with it. One executor
 * runs one event at a time: the handler needs no locking.
 *
 * Failure. Returning anything but WISP_OK, or calling ctx->fail, fails the
 * invocation: its publishes and state writes are dropped and the event
 * follows function.json's "retry" policy. WISP_NOMEM as the return value
 * marks the failure as running out of memory (outcome "memory"). A crash
 * (SIGSEGV, abort()) costs the executor and fails the event with outcome
 * "crash"; a handler that does not return within limits.timeout_ms is killed
 * with its executor (outcome "timeout"). Either way wispd and the other
 * functions go on, and the next event starts a fresh executor.
 *
 * Memory. Outside sanitizer builds the executor's data segment (heap and
 * anonymous mappings) is capped at what it used once the handler was loaded
 * plus limits.memory_kb plus 32 MiB for wispd's own buffers; past
 * it malloc returns NULL.
 *
 * Strings. Every string passed in is NUL-terminated UTF-8 unless a length
 * comes with it, and stays valid for the whole invocation unless said
 * otherwise. Nothing the handler receives is to be freed by it.
 *
 * Versioning. WISP_ABI_VERSION changes only when an existing field or
 * function changes meaning or place; wispd refuses a library built for
 * another version with a message naming both. New fields are appended to
 * the structs, whose first fields give their size: test with WISP_HAS()
 * before using a field that a later version added.
 */
#ifndef WISP_WISP_H
#define WISP_WISP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this ABI. */
#define WISP_ABI_VERSION 1

/* Results of the ctx calls and of the handler. */
#define WISP_OK        0
#define WISP_ERROR     (-1) /* the call failed; ctx->error(ctx) says why */
#define WISP_NOT_FOUND 1    /* state_get: no such key */
#define WISP_NOMEM     (-2) /* as the handler's result: it ran out of memory */

/* Log levels for ctx->log. */
#define WISP_LEVEL_DEBUG 0
#define WISP_LEVEL_INFO  1
#define WISP_LEVEL_WARN  2
#define WISP_LEVEL_ERROR 3

/* True when the struct at p (a wisp_ctx or wisp_native_event) as wispd
 * filled it includes `field`, i.e. the running wispd knows that field. */
#define WISP_HAS(p, type, field) ((p)->size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* The event, with CloudEvents 1.0 attribute names. */
struct wisp_native_event {
    uint32_t size;           /* sizeof(struct wisp_native_event) as wispd knows it */
    uint32_t reserved;       /* 0 */
    const char *specversion; /* "1.0" */
    const char *id;          /* unique id of the event, e.g. "8ec0dcd7c8d0d0c2-1" */
    const char *source;      /* e.g. "wisp://gw1/mqtt" */
    const char *type;        /* e.g. "wisp.mqtt.message" */
    const char *time;        /* RFC 3339 UTC time the event was accepted */
    const char *subject;     /* the MQTT topic; "" when the event has none */
    /* The raw payload: payload_len bytes (any bytes, NULs included), always
     * followed by a NUL that payload_len does not count, so a text payload
     * can be used as a C string directly. */
    const char *payload;
    size_t payload_len;
    int qos;    /* of the triggering MQTT message; -1 when not MQTT */
    int retain; /* 1 when the triggering message was a retained one */
};

/* A sensor reading (ctx->sensor). */
struct wisp_sensor_reading {
    double value;
    char unit[32];    /* NUL-terminated, e.g. "celsius"; may be empty */
    uint64_t time_ns; /* when it was read, ns since the epoch */
};

/*
 * What a handler may do. Every function takes the ctx it was read from as
 * its first argument and may be called only during the invocation that
 * passed ctx in. Calls that can fail return WISP_OK or WISP_ERROR, and after
 * WISP_ERROR ctx->error(ctx) gives the reason ("state: put: value is not one
 * JSON value (error at byte 5)"). A failed call does not fail the invocation by
 * itself: the handler decides (return WISP_ERROR, or ctx->fail).
 */
struct wisp_ctx {
    uint32_t abi_version;   /* the WISP_ABI_VERSION wispd speaks */
    uint32_t size;          /* sizeof(struct wisp_ctx) as wispd knows it */
    const char *fn_name;    /* function.json "name" */
    const char *fn_version; /* its version (explicit or the content hash) */

    /* Buffers a message, sent only if the invocation succeeds. topic is an
     * MQTT topic name (no wildcards), qos 0, 1 or 2, retain 0 or 1. At most
     * 1000 messages and 1 MiB (topics + payloads) per invocation. */
    int (*publish)(const struct wisp_ctx *ctx, const char *topic, const void *payload, size_t len,
                   int qos, int retain);

    /*
     * ctx.state: the function's own durable key-value store. Keys are 1 to
     * 256 bytes, values JSON text of at most 64 KiB. Reads see this
     * invocation's own writes; writes take effect only if it succeeds,
     * together with its messages, exactly once.
     */
    /* WISP_OK with *json pointing at the stored JSON text (NUL-terminated,
     * *len bytes; len may be NULL), WISP_NOT_FOUND when the key is absent,
     * or WISP_ERROR. *json is borrowed: it stays valid until the next ctx
     * call or the end of the invocation, whichever comes first. */
    int (*state_get)(const struct wisp_ctx *ctx, const char *key, const char **json, size_t *len);
    /* Stores json, which must be one JSON value (not null: use state_del). */
    int (*state_put)(const struct wisp_ctx *ctx, const char *key, const char *json);
    /* Deletes the key (absent is fine). */
    int (*state_del)(const struct wisp_ctx *ctx, const char *key);
    /* Adds by to the integer stored at key (absent counts as 0) and stores
     * the sum, which goes into *value (may be NULL). Concurrent increments
     * are never lost. Fails when the key holds anything but an integer or
     * the sum would overflow. */
    int (*state_incr)(const struct wisp_ctx *ctx, const char *key, int64_t by, int64_t *value);
    /* Calls cb for each key starting with prefix (NULL or "" for all), in
     * sorted order, at most limit keys (1 to 1000; 0 means 1000). key is
     * NUL-terminated and valid during the call only. A non-zero return from
     * cb stops the listing, and state_keys returns that value. */
    int (*state_keys)(const struct wisp_ctx *ctx, const char *prefix, size_t limit,
                      int (*cb)(void *ud, const char *key, size_t len), void *ud);

    /* One log line with the function and event id (64 KiB per invocation). */
    void (*log)(const struct wisp_ctx *ctx, int level, const char *msg);

    /* Reads a sensor configured on the gateway. */
    int (*sensor)(const struct wisp_ctx *ctx, const char *name, struct wisp_sensor_reading *out);
    /* GPIO: value -1 reads the line into *out; 0 or 1 drives an output line
     * declared in function.json (and *out gets the value). out may be NULL. */
    int (*gpio)(const struct wisp_ctx *ctx, const char *chip, uint32_t line, int value, int *out);

    /* The value of function.json's env[key], or NULL. */
    const char *(*env)(const struct wisp_ctx *ctx, const char *key);
    /* Wall-clock time, ns since the epoch. */
    uint64_t (*now_ns)(const struct wisp_ctx *ctx);
    /* Milliseconds left before limits.timeout_ms. */
    uint64_t (*remaining_ms)(const struct wisp_ctx *ctx);

    /* Fails the invocation with msg (copied; NULL gives a generic message),
     * whatever the handler returns afterwards. The last call wins. */
    void (*fail)(const struct wisp_ctx *ctx, const char *msg);
    /* Why the last ctx call failed ("" when none did). Valid until the next
     * ctx call. */
    const char *(*error)(const struct wisp_ctx *ctx);
};

/* The entry point: called once per event. Return WISP_OK for success. */
typedef int (*wisp_handle_fn)(const struct wisp_native_event *ev, const struct wisp_ctx *ctx);

#define WISP_EXPORT __attribute__((visibility("default")))

/* What a handler library exports (both defined by WISP_HANDLER): the
 * WISP_ABI_VERSION it was built with, and the entry point. */
WISP_EXPORT extern const uint32_t wisp_abi_version;
WISP_EXPORT int wisp_handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx);

/* WISP_HANDLER(fn), once at file scope in the library, defines both, with
 * wisp_handle calling fn (a wisp_handle_fn). */
#define WISP_HANDLER(fn)                                                                           \
    const uint32_t wisp_abi_version = WISP_ABI_VERSION;                                            \
    int wisp_handle(const struct wisp_native_event *ev, const struct wisp_ctx *ctx)                \
    {                                                                                              \
        return (fn)(ev, ctx);                                                                      \
    }

/* The exported names, for loaders. */
#define WISP_SYM_ABI_VERSION "wisp_abi_version"
#define WISP_SYM_HANDLE      "wisp_handle"

#ifdef __cplusplus
}
#endif

#endif
