/*
 * GPIO ports: one ops struct per kind of GPIO chip, registered by name like
 * the sensor ports. "linux" drives /dev/gpiochipN through the GPIO character
 * device (uAPI v2: line requests, edge events with kernel timestamps, output
 * values); "sim" is a simulated chip whose input lines produce edges on a
 * schedule, for development and the quickstart.
 *
 * A chip is opened by name. Without settings the name must look like
 * "gpiochipN" and the linux port opens <dev_root>/gpiochipN. With a settings
 * object ({"port": "sim", ...} from wispd's "gpio" config section) the named
 * port is used.
 *
 * Everything here runs on the supervisor's loop thread; nothing blocks
 * (event fds are non-blocking and meant for epoll).
 */
#ifndef WISP_GPIO_H
#define WISP_GPIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port.h"

struct cJSON;

enum wisp_gpio_edge {
    WISP_GPIO_EDGE_RISING = 1,
    WISP_GPIO_EDGE_FALLING = 2,
    WISP_GPIO_EDGE_BOTH = 3,
};

struct wisp_gpio_event {
    enum wisp_gpio_edge edge; /* RISING or FALLING */
    uint64_t timestamp_ns;    /* as the chip reports it (linux: CLOCK_MONOTONIC unless realtime) */
    uint32_t line;
    uint32_t seqno; /* per line, from the chip; 0 when unknown */
};

struct wisp_gpio_chip_info {
    char name[32];  /* "gpiochip0" */
    char label[32]; /* the driver's label, e.g. "pinctrl-bcm2711" */
    uint32_t lines;
};

struct wisp_gpio_line_info {
    uint32_t line;
    char name[32];     /* may be "" */
    char consumer[32]; /* who holds it, "" when free */
    bool used;
    bool output;
    bool active_low;
};

/* Longest debounce accepted (ms). */
#define WISP_GPIO_DEBOUNCE_MAX_MS 10000u

struct wisp_gpio_watch; /* an edge-event request on one line */
struct wisp_gpio_out;   /* an output request on one line */

struct wisp_gpio_ops {
    const char *name; /* "linux", "sim" */
    /* cfg may be NULL (linux defaults). err gets "<chip>: ..." or
     * "<chip>.<key>: ...". */
    int (*open)(const struct cJSON *cfg, const char *chip, const struct wisp_port_env *env,
                void **state, char *err, size_t errlen);
    int (*info)(void *state, struct wisp_gpio_chip_info *out, char *err, size_t errlen);
    int (*line_info)(void *state, uint32_t line, struct wisp_gpio_line_info *out, char *err,
                     size_t errlen);
    /* Requests line as an input with edge events. *fd becomes readable when
     * events wait (owned by the request). */
    int (*watch)(void *state, uint32_t line, enum wisp_gpio_edge edge, uint32_t debounce_ms,
                 const char *consumer, void **req, int *fd, char *err, size_t errlen);
    /* Reads up to max raw events without blocking: count, 0 when none, or a
     * negative errno. Debounce is applied by the generic layer. */
    int (*read_events)(void *req, struct wisp_gpio_event *out, size_t max, char *err,
                       size_t errlen);
    void (*unwatch)(void *req);
    /* Requests line as an output driven to initial (0/1). */
    int (*output)(void *state, uint32_t line, int initial, const char *consumer, void **req,
                  char *err, size_t errlen);
    int (*set)(void *req, int value, char *err, size_t errlen);
    void (*release)(void *req);
    /* The current value of a line (requested briefly as an input when nothing
     * holds it; a line this process drives reads back its output value). */
    int (*get)(void *state, uint32_t line, int *value, char *err, size_t errlen);
    void (*close)(void *state);
};

/* The port called name, or NULL; "linux" and "sim" are registered. */
const struct wisp_gpio_ops *wisp_gpio_port_find(const char *name);

struct wisp_gpio_chip;

/* Opens chip `name`. cfg: NULL or its settings object from the config
 * ("port" picks the port; unknown keys are errors naming the key). */
int wisp_gpio_chip_open(const struct cJSON *cfg, const char *name, const struct wisp_port_env *env,
                        struct wisp_gpio_chip **out, char *err, size_t errlen);
void wisp_gpio_chip_close(struct wisp_gpio_chip *c); /* NULL ok; releases all its requests */
const char *wisp_gpio_chip_name(const struct wisp_gpio_chip *c);
int wisp_gpio_chip_info(struct wisp_gpio_chip *c, struct wisp_gpio_chip_info *out, char *err,
                        size_t errlen);
int wisp_gpio_line_info(struct wisp_gpio_chip *c, uint32_t line, struct wisp_gpio_line_info *out,
                        char *err, size_t errlen);

/* Edge events on one line, debounced: an edge less than debounce_ms after
 * the previous accepted edge of the line (by the event timestamps) is
 * dropped and counted. The line must exist ("<chip>: line 40 does not
 * exist (the chip has 32 lines)"). */
int wisp_gpio_watch(struct wisp_gpio_chip *c, uint32_t line, enum wisp_gpio_edge edge,
                    uint32_t debounce_ms, const char *consumer, struct wisp_gpio_watch **out,
                    char *err, size_t errlen);
int wisp_gpio_watch_fd(const struct wisp_gpio_watch *w);
/* Reads and debounces pending events: count (0 when none) or -errno. */
int wisp_gpio_watch_read(struct wisp_gpio_watch *w, struct wisp_gpio_event *out, size_t max,
                         char *err, size_t errlen);
uint64_t wisp_gpio_watch_dropped(const struct wisp_gpio_watch *w); /* debounced away */
void wisp_gpio_unwatch(struct wisp_gpio_watch *w);                 /* NULL ok */
/* Closing the chip releases its watches' requests too; such a watch keeps
 * fd -1 and reads fail with -ENODEV until it is freed with
 * wisp_gpio_unwatch. */

/* Outputs: the first set of a line requests it as an output (kept until the
 * chip is closed); later sets reuse the request. value is 0 or 1. */
int wisp_gpio_set(struct wisp_gpio_chip *c, uint32_t line, int value, const char *consumer,
                  char *err, size_t errlen);
int wisp_gpio_get(struct wisp_gpio_chip *c, uint32_t line, int *value, char *err, size_t errlen);

/* "rising" / "falling" / "both" and back; parse returns 0 or -EINVAL. */
const char *wisp_gpio_edge_name(enum wisp_gpio_edge e);
int wisp_gpio_edge_parse(const char *s, enum wisp_gpio_edge *out);

/* For the ports themselves (ports/linux/gpio.c, ports/sim/sim_gpio.c), not
 * for callers. */
extern const struct wisp_gpio_ops wisp_gpio_port_linux;
extern const struct wisp_gpio_ops wisp_gpio_port_sim;
/* Checks that cfg is an object whose keys are "port" or in keys
 * (NULL-terminated): 0, or -EINVAL with err "<chip>.<key>: unknown key
 * (allowed: ...)". */
int wisp_gpio_check_keys(const struct cJSON *cfg, const char *chip, const char *const *keys,
                         char *err, size_t errlen);
/* The consumer label a request uses: consumer, or "wisp" when NULL/empty. */
const char *wisp_gpio_consumer(const char *consumer);

#endif
