/* Shared by devices.c (sensors, chips, device calls) and sources.c (the
 * trigger sources). Not for other modules. */
#ifndef WISP_DEVICES_INTERNAL_H
#define WISP_DEVICES_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "devices.h"
#include "gpio.h"
#include "port.h"

struct chip_ent {
    struct chip_ent *next;
    char *name;
    struct wisp_gpio_chip *chip;
};

struct src;
struct gline;

struct wisp_devices {
    struct wisp_loop *loop;
    struct wisp_pool *pool;
    const struct wisp_config *cfg;
    struct wisp_port_env env;
    char origin[256]; /* the config file, for messages */
    struct wisp_sensor **sensors;
    size_t n_sensors;
    struct chip_ent *chips;
    /* sources.c */
    int timer_fd;
    struct wisp_watch *timer_watch;
    uint64_t armed_ns; /* realtime the timerfd is set to, 0 = disarmed */
    struct src *srcs;
    struct gline *glines;
    bool stopped;
    struct wisp_devices_stats st;
};

/* The chip called name, opening a "gpiochipN" device on first use. */
int wisp_devices_chip(struct wisp_devices *d, const char *name, struct wisp_gpio_chip **out,
                      char *err, size_t errlen);
/* The configured sensor called name, or NULL. */
struct wisp_sensor *wisp_devices_sensor(struct wisp_devices *d, const char *name);

int wisp_sources_init(struct wisp_devices *d, char *err, size_t errlen);
void wisp_sources_fini(struct wisp_devices *d);

#endif
