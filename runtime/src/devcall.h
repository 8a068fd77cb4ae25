/*
 * Device calls: ctx.sensor and ctx.gpio from inside an executor. Executors
 * never touch hardware (they are confined); they ask the supervisor over
 * their socket, through the same request/reply channel as ctx.state
 * (state.h), and the supervisor answers from the ports it owns.
 *
 * Every failure is an error value with a message for the handler, never a
 * crash: an unknown sensor, a read error, a line the function did not
 * declare in function.json's "gpio.outputs".
 */
#ifndef WISP_DEVCALL_H
#define WISP_DEVCALL_H

#include <stddef.h>
#include <stdint.h>

#include "ipc.h"

struct wisp_state;

enum wisp_devcall_op {
    WISP_DEVCALL_SENSOR = 1,   /* read a configured sensor */
    WISP_DEVCALL_GPIO_GET = 2, /* read a line */
    WISP_DEVCALL_GPIO_SET = 3, /* drive a declared output line */
};

struct wisp_devcall_reading {
    double value;
    char unit[32];
    uint64_t time_ns; /* CLOCK_REALTIME */
};

/* Executor side. Return 0, or a negative errno with err set to a message
 * for the handler ("sensor \"x\" is not configured", "<path>: ..."). */
int wisp_devcall_sensor(struct wisp_state *st, const char *name, struct wisp_devcall_reading *out,
                        char *err, size_t errlen);
/* value -1 reads the line into *out; 0 or 1 drives it (*out = value). */
int wisp_devcall_gpio(struct wisp_state *st, const char *chip, uint32_t line, int value, int *out,
                      char *err, size_t errlen);

/* Supervisor side: a decoded request (strings borrowed from the frame). */
struct wisp_devcall_req {
    enum wisp_devcall_op op;
    const char *name; /* sensor or chip name, NUL-terminated */
    uint32_t line;
    int32_t value;
};
int wisp_devcall_decode_req(struct wisp_rd *r, struct wisp_devcall_req *out);
/* Appends the reply frame to b: status 0 with a reading / a value, or a
 * negative errno with a message. */
void wisp_devcall_encode_reply(struct wisp_buf *b, int status, const char *msg,
                               const struct wisp_devcall_reading *reading, int value);

#endif
