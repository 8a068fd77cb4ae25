/*
 * The sensor reader thread. Some sensor reads block for a long time: a
 * DS18B20 on 1-Wire converts while w1_slave is read (about 750 ms at 12
 * bits), an I2C IIO device may wait for its bus. The loop thread must never
 * wait for them, so every read in wispd (trigger polls and ctx.sensor) is
 * queued here; one thread reads sensors one at a time (a sensor is never
 * read concurrently) and hands results back through an eventfd.
 */
#define WISP_LOG_MODULE "devices"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices_internal.h"
#include "log.h"
#include "loop.h"
#include "util.h"

struct sread {
    struct sread *next;
    struct wisp_sensor *sensor;
    uint64_t src_id; /* a trigger poll, or 0 */
    uint64_t token;  /* a ctx.sensor call, or 0 */
    int rc;
    struct wisp_devcall_reading reading;
    char err[256];
};

static void *reader_main(void *arg)
{
    struct wisp_devices *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->q_head && !d->th_stop)
            pthread_cond_wait(&d->cv, &d->mu);
        if (d->th_stop)
            break;
        struct sread *r = d->q_head;
        d->q_head = r->next;
        if (!d->q_head)
            d->q_tail = NULL;
        pthread_mutex_unlock(&d->mu);

        struct wisp_reading rd;
        r->rc = wisp_sensor_read(r->sensor, &rd, r->err, sizeof(r->err));
        if (r->rc == 0)
            wisp_devices_copy_reading(&rd, &r->reading);

        pthread_mutex_lock(&d->mu);
        r->next = d->done;
        d->done = r;
        uint64_t one = 1;
        if (write(d->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            log_error("sensor reader: cannot wake the loop: %s", strerror(errno));
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

static void on_done(void *ud, int fd, uint32_t events)
{
    struct wisp_devices *d = ud;
    uint64_t n;
    (void)events;
    if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        log_warn("sensor reader: %s", strerror(errno));
    pthread_mutex_lock(&d->mu);
    struct sread *list = d->done;
    d->done = NULL;
    pthread_mutex_unlock(&d->mu);
    /* Oldest first (the list was pushed at the front). */
    struct sread *rev = NULL;
    while (list) {
        struct sread *nx = list->next;
        list->next = rev;
        rev = list;
        list = nx;
    }
    for (struct sread *r = rev, *nx; r; r = nx) {
        nx = r->next;
        d->in_flight--;
        if (r->token)
            wisp_devices_call_done(d, r->token, r->rc, r->err, &r->reading);
        else
            wisp_sources_reading(d, r->src_id, r->rc, r->err, &r->reading);
        free(r);
    }
}

int wisp_reader_start(struct wisp_devices *d, char *err, size_t errlen)
{
    d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->efd < 0)
        return wisp_errf(err, errlen, -errno, "eventfd: %s", strerror(errno));
    d->done_watch = wisp_loop_add(d->loop, d->efd, EPOLLIN, on_done, d);
    if (!d->done_watch)
        return wisp_errf(err, errlen, -errno, "cannot watch the sensor reader: %s",
                         strerror(errno));
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->sync_ready = true;
    /* The thread must not take the supervisor's signals (signalfd). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&d->th, NULL, reader_main, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return wisp_errf(err, errlen, -rc, "cannot start the sensor reader: %s", strerror(rc));
    d->th_started = true;
    return 0;
}

void wisp_reader_stop(struct wisp_devices *d)
{
    if (d->th_started) {
        pthread_mutex_lock(&d->mu);
        d->th_stop = true;
        pthread_cond_signal(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->th, NULL);
        d->th_started = false;
    }
    for (struct sread *r = d->q_head, *nx; r; r = nx) {
        nx = r->next;
        free(r);
    }
    for (struct sread *r = d->done, *nx; r; r = nx) {
        nx = r->next;
        free(r);
    }
    d->q_head = d->q_tail = d->done = NULL;
    if (d->sync_ready) {
        pthread_cond_destroy(&d->cv);
        pthread_mutex_destroy(&d->mu);
        d->sync_ready = false;
    }
    if (d->loop)
        wisp_loop_remove(d->loop, d->done_watch);
    d->done_watch = NULL;
    if (d->efd >= 0)
        close(d->efd);
    d->efd = -1;
}

int wisp_reader_submit(struct wisp_devices *d, struct wisp_sensor *s, uint64_t src_id,
                       uint64_t token)
{
    struct sread *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->sensor = s;
    r->src_id = src_id;
    r->token = token;
    pthread_mutex_lock(&d->mu);
    if (d->q_tail)
        d->q_tail->next = r;
    else
        d->q_head = r;
    d->q_tail = r;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    d->in_flight++;
    return 0;
}
