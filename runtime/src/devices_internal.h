/* Shared by devices.c (sensors, chips, device calls) and sources.c (the
 * trigger sources). Not for other modules. */
#ifndef WISP_DEVICES_INTERNAL_H
#define WISP_DEVICES_INTERNAL_H

#include <pthread.h>
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
struct sread;

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
    uint64_t next_src_id;
    struct wisp_devices_stats st;
    /* devices_reader.c: the sensor reader thread and its queues (mu) */
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool th_started, th_stop, sync_ready;
    struct sread *q_head, *q_tail, *done;
    int efd;
    struct wisp_watch *done_watch;
    uint64_t in_flight;
    uint64_t next_token;
};

/* The chip called name, opening a "gpiochipN" device on first use. */
int wisp_devices_chip(struct wisp_devices *d, const char *name, struct wisp_gpio_chip **out,
                      char *err, size_t errlen);
/* A port's reading as device calls carry it (the unit copied: the port's
 * may change with its next read). */
void wisp_devices_copy_reading(const struct wisp_reading *r, struct wisp_devcall_reading *out);

/* The configured sensor called name, or NULL. */
struct wisp_sensor *wisp_devices_sensor(struct wisp_devices *d, const char *name);

int wisp_sources_init(struct wisp_devices *d, char *err, size_t errlen);
void wisp_sources_fini(struct wisp_devices *d);
/* A trigger poll's reading (or error) is back from the reader thread. */
void wisp_sources_reading(struct wisp_devices *d, uint64_t src_id, int rc, const char *err,
                          const struct wisp_devcall_reading *reading);

/* The sensor reader thread (devices_reader.c); reads queued with submit
 * come back, in order, to wisp_sources_reading (src_id) or
 * wisp_devices_call_done (token). */
int wisp_reader_start(struct wisp_devices *d, char *err, size_t errlen);
void wisp_reader_stop(struct wisp_devices *d);
int wisp_reader_submit(struct wisp_devices *d, struct wisp_sensor *s, uint64_t src_id,
                       uint64_t token);
void wisp_devices_call_done(struct wisp_devices *d, uint64_t token, int rc, const char *err,
                            const struct wisp_devcall_reading *reading);

#endif
