/*
 * A function's specification: the parsed, validated function.json of one
 * function folder. Parsing is strict: unknown keys and bad values are errors
 * reported as "<origin>:<field>: <message>", e.g.
 *   examples/x/function.json:limits.timeout_ms: must be a whole number from 1 to 900000, got 0
 *
 * Trigger kinds are ops structs registered by name (trigger_mqtt.c is "mqtt");
 * adding a kind is one file plus one line in the table in fnspec.c.
 */
#ifndef WISP_FNSPEC_H
#define WISP_FNSPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

enum wisp_runtime {
    WISP_RUNTIME_LUA = 0,
    WISP_RUNTIME_NATIVE = 1,
};

struct wisp_trigger_kind;

/* One trigger. Kind-specific fields live side by side; each kind documents
 * which it uses. */
struct wisp_trigger {
    const struct wisp_trigger_kind *kind;
    /* mqtt */
    char *topic;  /* subscription filter */
    int qos;      /* 0, 1 or 2; default 1 */
    bool durable; /* events go through the inbox; default: qos > 0 */
    /* timer: schedule from "every" or "cron"; label is "every 10s" or
     * "cron 0 * * * * *" (the events' subject). sensor: poll schedule. */
    struct wisp_schedule *schedule;
    char *label;
    /* sensor */
    char *sensor; /* configured sensor name */
    double change, above, below, hysteresis;
    bool has_change, has_above, has_below;
    /* gpio */
    char *chip;
    uint32_t line;
    int edge; /* 1 rising, 2 falling, 3 both (enum wisp_gpio_edge) */
    uint32_t debounce_ms;
};

struct wisp_trigger_kind {
    const char *name;
    /* Parses the trigger object `obj` (its "type" already checked) into t.
     * `field` is the path prefix for errors, e.g. "triggers[0]". On error
     * writes "<field>.<key>: <message>" into err and returns -EINVAL (or
     * -ENOMEM), leaving nothing in t to free: fini is called only on
     * triggers that parsed. Unknown keys (other than "type") are errors. */
    int (*parse)(const struct cJSON *obj, const char *field, struct wisp_trigger *t, char *err,
                 size_t errlen);
    void (*fini)(struct wisp_trigger *t);
};

extern const struct wisp_trigger_kind wisp_trigger_mqtt;
extern const struct wisp_trigger_kind wisp_trigger_timer;
extern const struct wisp_trigger_kind wisp_trigger_sensor;
extern const struct wisp_trigger_kind wisp_trigger_gpio;

/* Finds a registered trigger kind by name, or NULL. */
const struct wisp_trigger_kind *wisp_trigger_kind_find(const char *name);

/* A GPIO line a function may use through ctx.gpio: "gpio.outputs" may be
 * driven and read, "gpio.inputs" only read (lines of its gpio triggers are
 * readable too). */
struct wisp_gpio_line_ref {
    char *chip;
    uint32_t line;
    bool output;
};

#define WISP_MAX_GPIO_LINES 64u
#define WISP_MAX_GPIO_LINE  1023u

struct wisp_env_var {
    char *key;
    char *value;
};

/* Defaults and ranges, documented in README's function.json reference. */
#define WISP_DEFAULT_MEMORY_KB   1024u
#define WISP_MIN_MEMORY_KB       64u
#define WISP_MAX_MEMORY_KB       262144u
#define WISP_DEFAULT_TIMEOUT_MS  1000u
#define WISP_MAX_TIMEOUT_MS      900000u
#define WISP_DEFAULT_CONCURRENCY 1u
#define WISP_MAX_CONCURRENCY     64u
#define WISP_DEFAULT_RETRY_MAX   0u
#define WISP_MAX_RETRY_MAX       100u
#define WISP_DEFAULT_BACKOFF_MS  100u
#define WISP_MAX_TRIGGERS        64u
#define WISP_MAX_ENV             128u
#define WISP_MAX_NAME_LEN        64u
#define WISP_MAX_SPEC_BYTES      (256u * 1024u)
#define WISP_MAX_BACKOFF_MS      3600000u
#define WISP_MAX_DESCRIPTION     1024u /* bytes */
#define WISP_MAX_VERSION_LEN     64u
#define WISP_MAX_HANDLER_LEN     1024u /* bytes of the relative path */
#define WISP_MAX_ENV_KEY_LEN     128u
#define WISP_MAX_ENV_VALUE       4096u /* bytes */

struct wisp_fnspec {
    char *dir;         /* the function folder as given */
    char *origin;      /* "<dir>/function.json", used in error messages */
    char *name;        /* [a-z0-9][a-z0-9_-]*, at most 64 bytes */
    char *version;     /* "version" if given, else a content hash of the folder */
    char *description; /* may be NULL */
    enum wisp_runtime runtime;
    char *handler; /* path relative to dir; default "handler.lua" ("handler.so" for native) */
    struct wisp_trigger *triggers;
    size_t n_triggers;
    uint32_t memory_kb;
    uint32_t timeout_ms;
    uint32_t concurrency;
    uint32_t retry_max;
    uint32_t retry_backoff_ms;
    char *retry_dead_letter; /* topic or NULL */
    bool envelope;           /* output.envelope "cloudevents": messages wrapped in a CloudEvent */
    struct wisp_env_var *env;
    size_t n_env;
    struct wisp_gpio_line_ref *gpio;
    size_t n_gpio;
};

/* Parses function.json text (not NUL-terminated necessarily) into a new spec.
 * `origin` names the file in errors and `dir` is stored as spec->dir. The
 * version field defaults to "" here; wisp_fnspec_load fills in the content
 * hash. On success *out is owned by the caller (wisp_fnspec_destroy).
 * Returns 0, -EINVAL (err says why) or -ENOMEM. */
int wisp_fnspec_parse(const char *json, size_t len, const char *origin, const char *dir,
                      struct wisp_fnspec **out, char *err, size_t errlen);

/* Reads <dir>/function.json, parses it, checks the handler file exists and
 * is a regular file, and computes the content version (hash of function.json,
 * the handler and lib/ *.lua) unless "version" was given. */
int wisp_fnspec_load(const char *dir, struct wisp_fnspec **out, char *err, size_t errlen);

/* Frees a spec; NULL is a no-op. */
void wisp_fnspec_destroy(struct wisp_fnspec *spec);

/* What ctx.gpio may do with chip/line: 2 drive and read, 1 read, 0 none. */
int wisp_fnspec_gpio_access(const struct wisp_fnspec *spec, const char *chip, uint32_t line);

/* Looks up an env value; NULL when absent. */
const char *wisp_fnspec_env(const struct wisp_fnspec *spec, const char *key);

/*
 * Helpers for trigger kinds' parse callbacks, so that every kind checks keys
 * and values and words its errors like the rest of function.json. All borrow
 * their arguments; errors are "<field>...: <message>" in err, -EINVAL.
 */

/* Rejects keys of obj not in known[0..n_known) (n_known <= 64) and keys that
 * appear twice. `field` is obj's path, e.g. "triggers[0]". */
int wisp_fnspec_check_keys(const struct cJSON *obj, const char *field, const char *const *known,
                           size_t n_known, char *err, size_t errlen);

/* Reads obj.key as a whole JSON number in [min, max] into *out; *out = def
 * when the key is absent. */
int wisp_fnspec_get_u32(const struct cJSON *obj, const char *field, const char *key, uint32_t min,
                        uint32_t max, uint32_t def, uint32_t *out, char *err, size_t errlen);

/* Reads obj.key as a finite JSON number in [min, max] into *out; *present
 * tells whether the key was there (*out untouched when absent). */
int wisp_fnspec_get_double(const struct cJSON *obj, const char *field, const char *key, double min,
                           double max, double *out, bool *present, char *err, size_t errlen);

/* Reads obj.key as a string of at most max_bytes; *out borrows from obj and is
 * NULL when the key is absent and not required. */
int wisp_fnspec_get_str(const struct cJSON *obj, const char *field, const char *key, int required,
                        size_t max_bytes, const char **out, char *err, size_t errlen);

/* Writes a short one-line rendering of a JSON value for error messages:
 * strings as wisp_fnspec_quote writes them, numbers as "%.15g", true, false,
 * null, "an object", "an array", and "nothing" for NULL. */
void wisp_fnspec_describe(const struct cJSON *item, char *buf, size_t cap);

/* Same for raw bytes: in double quotes, with \" \\ and \xNN for every byte
 * outside printable ASCII, cut with "..." past 48 bytes or when cap is
 * reached; cap < 10 gives "". */
void wisp_fnspec_quote(const char *s, size_t len, char *buf, size_t cap);

#endif
