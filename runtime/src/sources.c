/*
 * Trigger sources: timers, sensor polls and GPIO edges turned into events.
 *
 * Timers and sensor polls share one timerfd on CLOCK_REALTIME, set to the
 * earliest due source with an absolute time (cron schedules are in UTC;
 * "every" schedules are anchored at the rebuild, so the k-th firing is due
 * at anchor + k * period and lateness never accumulates). A source found
 * more than one period late fires once and counts the periods it skipped.
 * GPIO lines get one watch each, shared by every trigger on that line
 * (edge kinds are the union, the port debounces by the shortest
 * debounce_ms; each trigger then applies its own edge filter and debounce).
 */
#define WISP_LOG_MODULE "devices"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "devices_internal.h"
#include "fnspec.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "schedule.h"
#include "util.h"

#define TIMER_TYPE  "wisp.timer.fired"
#define SENSOR_TYPE "wisp.sensor.reading"
#define GPIO_TYPE   "wisp.gpio.edge"

struct gline {
    struct gline *next;
    struct wisp_devices *d;
    char chip[32];
    uint32_t line;
    struct wisp_gpio_watch *w;
    struct wisp_watch *lw;
    uint64_t debounced_seen;
};

struct src {
    struct src *next;
    uint64_t id; /* names it to the sensor reader across a rebuild */
    char *fn;
    const struct wisp_trigger_kind *kind;
    char *label;
    char source[200];
    struct wisp_schedule *sched;
    uint64_t anchor, next_ns;
    /* sensor */
    struct wisp_sensor *sensor;
    double change, above, below, hyst;
    bool has_change, has_above, has_below;
    bool have_last, above_on, below_on, failing;
    bool reading; /* a read is with the reader thread */
    double last;
    /* gpio */
    char chip[32];
    uint32_t line;
    int edge;
    uint32_t debounce_ms;
    struct gline *gl;
    bool off; /* its line could not be watched */
    bool have_ts;
    uint64_t last_ts;
};

static void src_free(struct src *s)
{
    wisp_schedule_free(s->sched);
    free(s->fn);
    free(s->label);
    free(s);
}

static void drop_all(struct wisp_devices *d)
{
    for (struct src *s = d->srcs, *nx; s; s = nx) {
        nx = s->next;
        src_free(s);
    }
    d->srcs = NULL;
    for (struct gline *g = d->glines, *nx; g; g = nx) {
        nx = g->next;
        wisp_loop_remove(d->loop, g->lw);
        wisp_gpio_unwatch(g->w);
        free(g);
    }
    d->glines = NULL;
}

static void arm(struct wisp_devices *d)
{
    uint64_t due = 0;
    for (const struct src *s = d->srcs; s; s = s->next)
        if (s->sched && s->next_ns != UINT64_MAX && (!due || s->next_ns < due))
            due = s->next_ns;
    if (due == d->armed_ns)
        return;
    struct itimerspec its = {0};
    if (due) {
        its.it_value.tv_sec = (time_t)(due / 1000000000ULL);
        its.it_value.tv_nsec = (long)(due % 1000000000ULL);
    }
    if (timerfd_settime(d->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
        log_error("cannot arm the timer: %s", strerror(errno));
    else
        d->armed_ns = due;
}

static void submit(struct wisp_devices *d, const struct src *s, const char *type,
                   const char *subject, const char *payload, size_t len)
{
    int rc = wisp_pool_submit_event(d->pool, s->fn, type, s->source, subject, payload, len);
    if (rc != 0) {
        d->st.rejected++;
        if (d->st.rejected == 1 || d->st.rejected % 1000 == 0)
            log_warn("%s: %s event not queued: %s (%llu so far)", s->fn, type, strerror(-rc),
                     (unsigned long long)d->st.rejected);
    }
}

static void fire_timer(struct wisp_devices *d, struct src *s, uint64_t now)
{
    char when[40], payload[512];
    wisp_rfc3339(s->next_ns, when, sizeof(when));
    int n = snprintf(payload, sizeof(payload),
                     "{\"schedule\":\"%s\",\"scheduled\":\"%s\",\"scheduled_us\":%llu,"
                     "\"late_us\":%llu}",
                     s->label, when, (unsigned long long)(s->next_ns / 1000ULL),
                     (unsigned long long)((now - s->next_ns) / 1000ULL));
    if (n > 0 && (size_t)n < sizeof(payload)) {
        d->st.timer_fired++;
        submit(d, s, TIMER_TYPE, s->label, payload, (size_t)n);
    }
}

/* Why a reading fires the trigger, or NULL. Updates the threshold state. */
static const char *qualifies(struct src *s, double v)
{
    const char *why = NULL;
    if (s->has_above) {
        if (!s->above_on && v > s->above) {
            s->above_on = true;
            why = "above";
        } else if (s->above_on && v < s->above - s->hyst) {
            s->above_on = false;
        }
    }
    if (s->has_below) {
        if (!s->below_on && v < s->below) {
            s->below_on = true;
            why = why ? why : "below";
        } else if (s->below_on && v > s->below + s->hyst) {
            s->below_on = false;
        }
    }
    if (s->has_change && (!s->have_last || fabs(v - s->last) >= s->change))
        why = why ? why : "change";
    if (!s->has_above && !s->has_below && !s->has_change)
        why = "poll";
    return why;
}

/* A finite number, or null (JSON has no NaN or infinities). */
static void add_num(cJSON *o, const char *key, double v, bool present)
{
    if (present && isfinite(v))
        cJSON_AddNumberToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

/* A trigger's reading is back from the reader thread. */
static void sensor_result(struct wisp_devices *d, struct src *s, int rc, const char *err,
                          const struct wisp_devcall_reading *r)
{
    const char *name = wisp_sensor_name(s->sensor);
    if (rc != 0) {
        d->st.sensor_errors++;
        if (!s->failing)
            log_warn("%s: sensor trigger: %s (logged again when it recovers)", s->fn, err);
        s->failing = true;
        return;
    }
    if (s->failing)
        log_info("%s: sensor %s reads again", s->fn, name);
    s->failing = false;
    const char *why = qualifies(s, r->value);
    if (!why)
        return;
    /* Built with cJSON: the unit comes from the config and may hold anything. */
    char when[40];
    wisp_rfc3339(r->time_ns, when, sizeof(when));
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "sensor", name);
        add_num(o, "value", r->value, true);
        cJSON_AddStringToObject(o, "unit", r->unit);
        cJSON_AddStringToObject(o, "time", when);
        cJSON_AddStringToObject(o, "reason", why);
        add_num(o, "previous", s->last, s->have_last);
    }
    char *payload = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    s->last = r->value;
    s->have_last = true;
    if (!payload) {
        log_error("%s: sensor trigger: out of memory", s->fn);
        return;
    }
    d->st.sensor_fired++;
    submit(d, s, SENSOR_TYPE, name, payload, strlen(payload));
    cJSON_free(payload);
}

void wisp_sources_reading(struct wisp_devices *d, uint64_t src_id, int rc, const char *err,
                          const struct wisp_devcall_reading *reading)
{
    for (struct src *s = d->srcs; s; s = s->next) {
        if (s->id != src_id)
            continue;
        s->reading = false;
        sensor_result(d, s, rc, err, reading);
        wisp_pool_schedule(d->pool);
        return;
    }
    /* The trigger went with a reload while its read ran: nothing to do. */
}

/* Queues a poll; a trigger whose previous read has not come back (a slow
 * bus) skips this one rather than piling reads up. */
static void poll_sensor(struct wisp_devices *d, struct src *s)
{
    if (s->reading) {
        d->st.sensor_busy++;
        return;
    }
    d->st.sensor_polls++;
    if (wisp_reader_submit(d, s->sensor, s->id, 0) == 0)
        s->reading = true;
    else
        log_error("%s: sensor trigger: out of memory queueing a read", s->fn);
}

static void on_timer(void *ud, int fd, uint32_t events)
{
    struct wisp_devices *d = ud;
    uint64_t expirations;
    (void)events;
    if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        log_warn("timer read failed: %s", strerror(errno));
    d->armed_ns = 0;
    uint64_t now = wisp_real_ns();
    bool fired = false;
    for (struct src *s = d->srcs; s; s = s->next) {
        if (!s->sched || s->next_ns > now)
            continue;
        if (s->sensor)
            poll_sensor(d, s);
        else
            fire_timer(d, s, now);
        fired = true;
        uint64_t next = wisp_schedule_every_next(s->sched, s->anchor, now);
        uint64_t period = wisp_schedule_period_ns(s->sched);
        if (period && next != UINT64_MAX && next - s->next_ns > period)
            d->st.timer_missed += (next - s->next_ns) / period - 1;
        s->next_ns = next;
    }
    if (fired)
        wisp_pool_schedule(d->pool);
    arm(d);
}

static void fire_edge(struct wisp_devices *d, struct src *s, const struct wisp_gpio_event *ev)
{
    if (!(s->edge & (int)ev->edge))
        return;
    uint64_t gap = (uint64_t)s->debounce_ms * 1000000ULL;
    if (gap && s->have_ts && ev->timestamp_ns - s->last_ts < gap) {
        d->st.gpio_debounced++;
        return;
    }
    s->have_ts = true;
    s->last_ts = ev->timestamp_ns;
    char payload[320];
    int n = snprintf(payload, sizeof(payload),
                     "{\"chip\":\"%s\",\"line\":%u,\"edge\":\"%s\",\"timestamp_ns\":%llu,"
                     "\"seqno\":%u}",
                     s->chip, (unsigned)s->line, wisp_gpio_edge_name(ev->edge),
                     (unsigned long long)ev->timestamp_ns, (unsigned)ev->seqno);
    if (n > 0 && (size_t)n < sizeof(payload)) {
        d->st.gpio_fired++;
        submit(d, s, GPIO_TYPE, s->label, payload, (size_t)n);
    }
}

static void on_gpio(void *ud, int fd, uint32_t events)
{
    struct gline *g = ud;
    struct wisp_devices *d = g->d;
    struct wisp_gpio_event evs[32];
    char err[512];
    (void)fd;
    (void)events;
    int n = wisp_gpio_watch_read(g->w, evs, WISP_ARRAY_LEN(evs), err, sizeof(err));
    if (n < 0) {
        log_error("%s line %u: %s; its triggers stop", g->chip, (unsigned)g->line, err);
        wisp_loop_remove(d->loop, g->lw);
        g->lw = NULL;
        return;
    }
    uint64_t dropped = wisp_gpio_watch_dropped(g->w);
    d->st.gpio_debounced += dropped - g->debounced_seen;
    g->debounced_seen = dropped;
    for (int i = 0; i < n; i++) {
        d->st.gpio_edges++;
        for (struct src *s = d->srcs; s; s = s->next)
            if (s->gl == g)
                fire_edge(d, s, &evs[i]);
    }
    if (n > 0)
        wisp_pool_schedule(d->pool);
}

static struct src *new_src(struct wisp_devices *d, const struct wisp_fnspec *spec,
                           const struct wisp_trigger *t, size_t idx)
{
    struct src *s = calloc(1, sizeof(*s));
    if (!s || !(s->fn = wisp_strndup(spec->name, strlen(spec->name))) ||
        !(s->label = wisp_strndup(t->label, strlen(t->label)))) {
        if (s)
            src_free(s);
        log_error("%s: triggers[%zu]: out of memory", spec->name, idx);
        return NULL;
    }
    s->kind = t->kind;
    s->id = ++d->next_src_id;
    const char *dev = d->cfg->device ? d->cfg->device : "";
    if (t->kind == &wisp_trigger_gpio) {
        (void)snprintf(s->chip, sizeof(s->chip), "%s", t->chip);
        s->line = t->line;
        s->edge = t->edge;
        s->debounce_ms = t->debounce_ms;
        (void)snprintf(s->source, sizeof(s->source), "wisp://%s/gpio/%s/%u", dev, t->chip,
                       (unsigned)t->line);
        return s;
    }
    /* The spec goes with the next reload; the source keeps its own copy. */
    if (!(s->sched = wisp_schedule_dup(t->schedule))) {
        log_error("%s: triggers[%zu]: out of memory", spec->name, idx);
        src_free(s);
        return NULL;
    }
    s->anchor = wisp_real_ns();
    s->next_ns = wisp_schedule_every_next(s->sched, s->anchor, s->anchor);
    if (t->kind == &wisp_trigger_timer) {
        (void)snprintf(s->source, sizeof(s->source), "wisp://%s/timer", dev);
        return s;
    }
    s->sensor = wisp_devices_sensor(d, t->sensor);
    if (!s->sensor) {
        log_error("%s: triggers[%zu].sensor: no sensor \"%s\" in %s's \"sensors\"; this trigger "
                  "is off",
                  spec->name, idx, t->sensor, d->origin);
        src_free(s);
        return NULL;
    }
    s->next_ns = s->anchor; /* the first reading right away */
    s->change = t->change;
    s->above = t->above;
    s->below = t->below;
    s->hyst = t->hysteresis;
    s->has_change = t->has_change;
    s->has_above = t->has_above;
    s->has_below = t->has_below;
    (void)snprintf(s->source, sizeof(s->source), "wisp://%s/sensor/%s", dev, t->sensor);
    return s;
}

static void add_spec(void *ud, const struct wisp_fnspec *spec)
{
    struct wisp_devices *d = ud;
    for (size_t i = 0; i < spec->n_triggers; i++) {
        const struct wisp_trigger *t = &spec->triggers[i];
        if (t->kind != &wisp_trigger_timer && t->kind != &wisp_trigger_sensor &&
            t->kind != &wisp_trigger_gpio)
            continue;
        struct src *s = new_src(d, spec, t, i);
        if (s) {
            s->next = d->srcs;
            d->srcs = s;
        }
    }
}

/* One watch per GPIO line with the union of its triggers' edges. */
static void watch_line(struct wisp_devices *d, struct src *first)
{
    int edges = 0;
    uint32_t debounce = UINT32_MAX;
    for (struct src *s = first; s; s = s->next)
        if (s->kind == &wisp_trigger_gpio && !s->gl && !s->off && s->line == first->line &&
            strcmp(s->chip, first->chip) == 0) {
            edges |= s->edge;
            debounce = s->debounce_ms < debounce ? s->debounce_ms : debounce;
        }
    struct gline *g = calloc(1, sizeof(*g));
    struct wisp_gpio_chip *chip;
    char err[512];
    if (!g) {
        log_error("%s line %u: out of memory; its triggers are off", first->chip,
                  (unsigned)first->line);
        return;
    }
    g->d = d;
    (void)snprintf(g->chip, sizeof(g->chip), "%s", first->chip);
    g->line = first->line;
    int rc = wisp_devices_chip(d, first->chip, &chip, err, sizeof(err));
    if (rc == 0)
        rc = wisp_gpio_watch(chip, first->line, (enum wisp_gpio_edge)edges, debounce, "wisp", &g->w,
                             err, sizeof(err));
    if (rc == 0 &&
        !(g->lw = wisp_loop_add(d->loop, wisp_gpio_watch_fd(g->w), EPOLLIN, on_gpio, g))) {
        rc = -errno;
        (void)snprintf(err, sizeof(err), "%s line %u: cannot watch: %s", first->chip,
                       (unsigned)first->line, strerror(errno));
    }
    if (rc != 0) {
        log_error("%s: gpio trigger: %s; triggers on this line are off", first->fn, err);
        wisp_gpio_unwatch(g->w);
        free(g);
        g = NULL;
    } else {
        g->next = d->glines;
        d->glines = g;
    }
    /* Bind (or, on failure, disable) every trigger of the line. */
    for (struct src *s = first; s; s = s->next)
        if (s->kind == &wisp_trigger_gpio && !s->gl && !s->off && s->line == first->line &&
            strcmp(s->chip, first->chip) == 0) {
            s->gl = g;
            s->off = !g;
        }
}

void wisp_devices_set_functions(struct wisp_devices *d)
{
    if (!d || !d->loop || d->stopped)
        return;
    drop_all(d);
    wisp_pool_foreach(d->pool, add_spec, d);
    for (struct src *s = d->srcs; s; s = s->next)
        if (s->kind == &wisp_trigger_gpio && !s->gl && !s->off)
            watch_line(d, s);
    size_t n = 0;
    for (const struct src *s = d->srcs; s; s = s->next)
        n++;
    if (n)
        log_info("%zu timer, sensor and gpio trigger(s) active", n);
    d->armed_ns = UINT64_MAX; /* force a re-arm */
    arm(d);
}

void wisp_devices_stop(struct wisp_devices *d)
{
    if (!d || !d->loop)
        return;
    d->stopped = true;
    drop_all(d);
    arm(d);
}

int wisp_sources_init(struct wisp_devices *d, char *err, size_t errlen)
{
    d->timer_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    if (d->timer_fd < 0)
        return wisp_errf(err, errlen, -errno, "timerfd_create: %s", strerror(errno));
    d->timer_watch = wisp_loop_add(d->loop, d->timer_fd, EPOLLIN, on_timer, d);
    if (!d->timer_watch)
        return wisp_errf(err, errlen, -errno, "cannot watch the timer: %s", strerror(errno));
    return 0;
}

void wisp_sources_fini(struct wisp_devices *d)
{
    if (!d->loop)
        return;
    drop_all(d);
    wisp_loop_remove(d->loop, d->timer_watch);
    if (d->timer_fd >= 0)
        close(d->timer_fd);
}
