/* The "sim" GPIO port: a simulated chip for development and the quickstart.
 * Settings: {"port": "sim", "lines": N (1-512, default 32), "label": "...",
 * "edges": [{"line": 17, "every": "2s"}]}. A watched line with an "edges"
 * entry alternates rising and falling edges at that period, starting with a
 * rising edge one period after the watch; other lines never fire. Each watch
 * has a timerfd, so its fd is pollable like the kernel's, and event
 * timestamps are CLOCK_MONOTONIC on the period grid. Outputs remember their
 * value; get returns a line's last value (0 at first). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "gpio.h"
#include "schedule.h"
#include "util.h"

#define SIM_LINES_DEFAULT 32
#define SIM_LINES_MAX     512
/* Edges a watch catches up on after its reader fell behind; older ones are
 * lost, as when the kernel's event buffer overflows. */
#define SIM_BACKLOG_MAX 1024

enum { HELD_NONE, HELD_INPUT, HELD_OUTPUT };

struct sim_line {
    uint64_t period_ns; /* 0: never fires */
    int value;
    int held;
    char consumer[32];
};

struct sim_chip {
    char name[32];
    char label[32];
    uint32_t lines;
    struct sim_line *line;
};

struct sim_req {
    struct sim_chip *chip;
    uint32_t line;
    int fd; /* timerfd of a watch, -1 for an output */
    enum wisp_gpio_edge edge;
    uint64_t start_ns, period_ns;
    uint64_t emitted; /* edges produced so far (odd index: rising) */
    uint32_t seqno;   /* edges delivered */
};

static const char *const sim_keys[] = {"lines", "label", "edges", NULL};

static int get_whole(const cJSON *it, double min, double max, uint32_t *out)
{
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) ||
        it->valuedouble != floor(it->valuedouble) || it->valuedouble < min || it->valuedouble > max)
        return -EINVAL;
    *out = (uint32_t)it->valuedouble;
    return 0;
}

static int parse_edge(struct sim_chip *s, const cJSON *e, size_t i, char *err, size_t errlen)
{
    char field[96];
    (void)snprintf(field, sizeof(field), "%s.edges[%zu]", s->name, i);
    if (!cJSON_IsObject(e))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: must be an object like {\"line\": 17, "
                         "\"every\": \"2s\"}",
                         field);
    for (const cJSON *k = e->child; k; k = k->next)
        if (strcmp(k->string, "line") != 0 && strcmp(k->string, "every") != 0)
            return wisp_errf(err, errlen, -EINVAL, "%s.%s: unknown key (allowed: line, every)",
                             field, k->string);
    const cJSON *line = cJSON_GetObjectItemCaseSensitive(e, "line");
    const cJSON *every = cJSON_GetObjectItemCaseSensitive(e, "every");
    uint32_t l = 0;
    if (!line)
        return wisp_errf(err, errlen, -EINVAL, "%s.line: required", field);
    if (get_whole(line, 0, (double)UINT32_MAX, &l))
        return wisp_errf(err, errlen, -EINVAL, "%s.line: must be a whole number from 0 to %u",
                         field, s->lines - 1);
    if (l >= s->lines)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.line: line %u does not exist (the chip has %u lines)", field, l,
                         s->lines);
    if (s->line[l].period_ns)
        return wisp_errf(err, errlen, -EINVAL, "%s.line: line %u already has edges", field, l);
    if (!every)
        return wisp_errf(err, errlen, -EINVAL, "%s.every: required", field);
    if (!cJSON_IsString(every) || !every->valuestring)
        return wisp_errf(err, errlen, -EINVAL, "%s.every: must be a duration string like \"2s\"",
                         field);
    char efield[112];
    (void)snprintf(efield, sizeof(efield), "%s.every", field);
    struct wisp_schedule *sched = NULL;
    int rc = wisp_schedule_every(every->valuestring, efield, &sched, err, errlen);
    if (rc)
        return rc;
    s->line[l].period_ns = wisp_schedule_period_ns(sched);
    wisp_schedule_free(sched);
    return 0;
}

static int sim_setup(struct sim_chip *s, const cJSON *cfg, char *err, size_t errlen)
{
    const cJSON *lines = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "lines") : NULL;
    const cJSON *label = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "label") : NULL;
    const cJSON *edges = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "edges") : NULL;
    s->lines = SIM_LINES_DEFAULT;
    if (lines && get_whole(lines, 1, SIM_LINES_MAX, &s->lines))
        return wisp_errf(err, errlen, -EINVAL, "%s.lines: must be a whole number from 1 to %d",
                         s->name, SIM_LINES_MAX);
    (void)snprintf(s->label, sizeof(s->label), "wisp-sim");
    if (label) {
        if (!cJSON_IsString(label) || !label->valuestring ||
            strlen(label->valuestring) >= sizeof(s->label))
            return wisp_errf(err, errlen, -EINVAL,
                             "%s.label: must be a string of at most %zu bytes", s->name,
                             sizeof(s->label) - 1);
        (void)snprintf(s->label, sizeof(s->label), "%s", label->valuestring);
    }
    s->line = calloc(s->lines, sizeof(*s->line));
    if (!s->line)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", s->name);
    if (!edges)
        return 0;
    if (!cJSON_IsArray(edges))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.edges: must be an array like [{\"line\": 17, \"every\": \"2s\"}]",
                         s->name);
    size_t i = 0;
    for (const cJSON *e = edges->child; e; e = e->next, i++) {
        int rc = parse_edge(s, e, i, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

static void sim_close(void *state)
{
    struct sim_chip *s = state;
    if (!s)
        return;
    free(s->line);
    free(s);
}

static int sim_open(const cJSON *cfg, const char *chip, const struct wisp_port_env *env,
                    void **state, char *err, size_t errlen)
{
    (void)env;
    if (cfg) {
        int rc = wisp_gpio_check_keys(cfg, chip, sim_keys, err, errlen);
        if (rc)
            return rc;
    }
    struct sim_chip *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", chip);
    (void)snprintf(s->name, sizeof(s->name), "%s", chip);
    int rc = sim_setup(s, cfg, err, errlen);
    if (rc) {
        sim_close(s);
        return rc;
    }
    *state = s;
    return 0;
}

static int sim_info(void *state, struct wisp_gpio_chip_info *out, char *err, size_t errlen)
{
    const struct sim_chip *s = state;
    (void)err;
    (void)errlen;
    (void)snprintf(out->name, sizeof(out->name), "%s", s->name);
    (void)snprintf(out->label, sizeof(out->label), "%s", s->label);
    out->lines = s->lines;
    return 0;
}

static int check_line(const struct sim_chip *s, uint32_t line, char *err, size_t errlen)
{
    if (line >= s->lines)
        return wisp_errf(err, errlen, -EINVAL, "%s: line %u does not exist (the chip has %u lines)",
                         s->name, line, s->lines);
    return 0;
}

static int sim_line_info(void *state, uint32_t line, struct wisp_gpio_line_info *out, char *err,
                         size_t errlen)
{
    const struct sim_chip *s = state;
    int rc = check_line(s, line, err, errlen);
    if (rc)
        return rc;
    const struct sim_line *l = &s->line[line];
    out->line = line;
    out->name[0] = '\0';
    (void)snprintf(out->consumer, sizeof(out->consumer), "%s", l->held ? l->consumer : "");
    out->used = l->held != HELD_NONE;
    out->output = l->held == HELD_OUTPUT;
    out->active_low = false;
    return 0;
}

/* Marks line held by consumer, or the EBUSY message naming who holds it. */
static int hold(struct sim_chip *s, uint32_t line, int kind, const char *consumer, char *err,
                size_t errlen)
{
    int rc = check_line(s, line, err, errlen);
    if (rc)
        return rc;
    struct sim_line *l = &s->line[line];
    if (l->held)
        return wisp_errf(err, errlen, -EBUSY, "%s: line %u is busy (held by \"%s\")", s->name, line,
                         l->consumer);
    l->held = kind;
    (void)snprintf(l->consumer, sizeof(l->consumer), "%s", wisp_gpio_consumer(consumer));
    return 0;
}

static void unhold(struct sim_chip *s, uint32_t line)
{
    s->line[line].held = HELD_NONE;
    s->line[line].consumer[0] = '\0';
}

/* Arms t to fire at the monotonic time at_ns (at once when it has passed). */
static int arm(int fd, uint64_t at_ns)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    its.it_value.tv_sec = (time_t)(at_ns / 1000000000u);
    its.it_value.tv_nsec = (long)(at_ns % 1000000000u);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1; /* zero would disarm */
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Holds line for a request (refusing a busy one) and makes the request. */
static int new_req(struct sim_chip *s, uint32_t line, int held, const char *consumer,
                   struct sim_req **out, char *err, size_t errlen)
{
    int rc = hold(s, line, held, consumer, err, errlen);
    if (rc)
        return rc;
    struct sim_req *r = calloc(1, sizeof(*r));
    if (!r) {
        unhold(s, line);
        (void)wisp_errf(err, errlen, 0, "%s: out of memory", s->name);
        return -ENOMEM;
    }
    r->chip = s;
    r->line = line;
    *out = r;
    return 0;
}

static int sim_watch(void *state, uint32_t line, enum wisp_gpio_edge edge, uint32_t debounce_ms,
                     const char *consumer, void **req, int *fd, char *err, size_t errlen)
{
    struct sim_chip *s = state;
    (void)debounce_ms; /* the simulated edges are clean; the generic layer debounces */
    struct sim_req *r = NULL;
    int rc = new_req(s, line, HELD_INPUT, consumer, &r, err, errlen);
    if (rc)
        return rc;
    r->edge = edge;
    r->period_ns = s->line[line].period_ns;
    r->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int ok = r->fd >= 0;
    if (ok && r->period_ns) {
        r->start_ns = wisp_mono_ns();
        ok = arm(r->fd, r->start_ns + r->period_ns) == 0;
    }
    if (!ok) {
        int e = errno;
        if (r->fd >= 0)
            (void)close(r->fd);
        free(r);
        unhold(s, line);
        return wisp_errf(err, errlen, -e, "%s: line %u: timerfd: %s", s->name, line, strerror(e));
    }
    *req = r;
    *fd = r->fd;
    return 0;
}

static int sim_read_events(void *req, struct wisp_gpio_event *out, size_t max, char *err,
                           size_t errlen)
{
    struct sim_req *r = req;
    uint64_t expirations = 0;
    /* Clears the fd's readiness; the edges due are computed from the clock. */
    if (read(r->fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN &&
        errno != EWOULDBLOCK && errno != EINTR) {
        int e = errno;
        return wisp_errf(err, errlen, -e, "%s: line %u: timerfd: %s", r->chip->name, r->line,
                         strerror(e));
    }
    if (!r->period_ns)
        return 0;
    uint64_t now = wisp_mono_ns();
    uint64_t due = now > r->start_ns ? (now - r->start_ns) / r->period_ns : 0;
    if (due > r->emitted + SIM_BACKLOG_MAX)
        r->emitted = due - SIM_BACKLOG_MAX;
    size_t n = 0;
    while (r->emitted < due && n < max) {
        uint64_t idx = ++r->emitted;
        enum wisp_gpio_edge edge = idx % 2 ? WISP_GPIO_EDGE_RISING : WISP_GPIO_EDGE_FALLING;
        r->chip->line[r->line].value = idx % 2 ? 1 : 0;
        if (!(edge & r->edge))
            continue;
        out[n].edge = edge;
        out[n].timestamp_ns = r->start_ns + idx * r->period_ns;
        out[n].line = r->line;
        out[n].seqno = ++r->seqno;
        n++;
    }
    /* More due than fit: fire again at once; else at the next edge. */
    uint64_t next = r->emitted < due ? now : r->start_ns + (r->emitted + 1) * r->period_ns;
    if (arm(r->fd, next) != 0) {
        int e = errno;
        return wisp_errf(err, errlen, -e, "%s: line %u: timerfd: %s", r->chip->name, r->line,
                         strerror(e));
    }
    return (int)n;
}

static void sim_unwatch(void *req)
{
    struct sim_req *r = req;
    if (!r)
        return;
    unhold(r->chip, r->line);
    (void)close(r->fd);
    free(r);
}

static int sim_output(void *state, uint32_t line, int initial, const char *consumer, void **req,
                      char *err, size_t errlen)
{
    struct sim_chip *s = state;
    struct sim_req *r = NULL;
    int rc = new_req(s, line, HELD_OUTPUT, consumer, &r, err, errlen);
    if (rc)
        return rc;
    r->fd = -1;
    s->line[line].value = initial ? 1 : 0;
    *req = r;
    return 0;
}

static int sim_set(void *req, int value, char *err, size_t errlen)
{
    const struct sim_req *r = req;
    (void)err;
    (void)errlen;
    r->chip->line[r->line].value = value ? 1 : 0;
    return 0;
}

static void sim_release(void *req)
{
    struct sim_req *r = req;
    if (!r)
        return;
    unhold(r->chip, r->line);
    free(r);
}

static int sim_get(void *state, uint32_t line, int *value, char *err, size_t errlen)
{
    const struct sim_chip *s = state;
    int rc = check_line(s, line, err, errlen);
    if (rc)
        return rc;
    *value = s->line[line].value;
    return 0;
}

const struct wisp_gpio_ops wisp_gpio_port_sim = {
    .name = "sim",
    .open = sim_open,
    .info = sim_info,
    .line_info = sim_line_info,
    .watch = sim_watch,
    .read_events = sim_read_events,
    .unwatch = sim_unwatch,
    .output = sim_output,
    .set = sim_set,
    .release = sim_release,
    .get = sim_get,
    .close = sim_close,
};
