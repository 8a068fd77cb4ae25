/*
 * The supervisor's devices: the sensors and GPIO chips of wispd's config,
 * and the triggers that fire from them and from the clock.
 *
 * - Sensors ("sensors" config section, ports/port.h) are opened at start;
 *   a bad setting stops wispd with "<config>:sensors.<name>.<key>: ...".
 * - GPIO chips: those of the "gpio" section (e.g. simulated ones) are opened
 *   at start, "gpiochipN" character devices when first used.
 * - Triggers of kinds timer, sensor and gpio (fnspec.h) become sources on
 *   the loop: one timerfd for every timer and sensor poll, one watch per GPIO
 *   line. Their events go to wisp_pool_submit_event; they keep firing while
 *   the broker is away (QoS 1 outputs wait in the outbox).
 * - ctx.sensor / ctx.gpio requests from executors (devcall.h) are answered
 *   by wisp_devices_call, the pool's device hook.
 */
#ifndef WISP_DEVICES_H
#define WISP_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "devcall.h"

struct wisp_loop;
struct wisp_pool;
struct wisp_fnspec;
struct wisp_devices;

/* Opens the configured sensors and chips. loop and pool may be NULL (the
 * wisp CLI): no triggers then. 0, or a negative errno with err set. */
int wisp_devices_open(const struct wisp_config *cfg, struct wisp_loop *loop, struct wisp_pool *pool,
                      struct wisp_devices **out, char *err, size_t errlen);
void wisp_devices_close(struct wisp_devices *d); /* NULL ok */

/* Rebuilds the trigger sources from the pool's current functions (after
 * every load or reload). Triggers that cannot work (an unknown sensor, a
 * missing chip, a busy line) are logged as errors and skipped. */
void wisp_devices_set_functions(struct wisp_devices *d);

/* Stops every source: nothing fires any more (draining). */
void wisp_devices_stop(struct wisp_devices *d);

/* The pool's device hook (pool.h). With a loop, sensor reads go to the
 * reader thread (-EINPROGRESS, answered through wisp_pool_device_done);
 * without one (the wisp CLI) they are read at once. */
int wisp_devices_call(void *d, const struct wisp_fnspec *spec, const struct wisp_devcall_req *req,
                      struct wisp_devcall_reading *reading, int *value, char *msg, size_t msglen,
                      uint64_t *token);

/* The configured sensors, in config order (wisp sensors). */
size_t wisp_devices_sensor_count(const struct wisp_devices *d);
const char *wisp_devices_sensor_name(const struct wisp_devices *d, size_t i);
/* Reads sensor i now. 0 or -errno with msg set. */
int wisp_devices_sensor_read(struct wisp_devices *d, size_t i, struct wisp_devcall_reading *out,
                             char *msg, size_t msglen);

/* Counters for tests and logs. */
struct wisp_devices_stats {
    uint64_t timer_fired, timer_missed; /* missed: periods skipped because wispd was late */
    uint64_t sensor_polls, sensor_fired, sensor_errors;
    uint64_t sensor_busy; /* polls skipped: the trigger's previous read still ran */
    uint64_t gpio_edges, gpio_fired, gpio_debounced;
    uint64_t rejected; /* events the pool refused (queue full) */
};
void wisp_devices_stats(const struct wisp_devices *d, struct wisp_devices_stats *out);

#endif
