/* Simulated sensors for development and tests. "mode" picks one (every
 * mode also takes "read_ms": each read blocks that long, like a 1-Wire
 * conversion, to see how slow buses behave):
 *   constant     value
 *   sine         min, max, period_s            (phase from the realtime clock)
 *   random_walk  start, step, min, max, [seed] (deterministic with a seed)
 *   csv          file: "time,value" rows, one per read in order, looping
 * The clock is injectable (wisp_sim_test_set_clock) so sine is testable. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "port_impl.h"
#include "sim.h"
#include "util.h"

#define CSV_MAX_BYTES ((size_t)1 << 20)

enum sim_mode { SIM_CONSTANT, SIM_SINE, SIM_RANDOM_WALK, SIM_CSV };

struct sim {
    enum sim_mode mode;
    uint64_t (*clock)(void);
    double value, min, max, step;
    uint64_t period_ns;
    uint64_t read_ns; /* "read_ms": how long each read blocks */
    uint64_t rng;
    bool started;
    double *rows; /* csv values */
    size_t nrows, next;
};

static uint64_t (*sim_clock)(void) = wisp_real_ns;

void wisp_sim_test_set_clock(uint64_t (*clock)(void))
{
    sim_clock = clock ? clock : wisp_real_ns;
}

static const struct {
    const char *name;
    enum sim_mode mode;
    const char *const keys[8];
} modes[] = {
    {"constant", SIM_CONSTANT, {"mode", "read_ms", "value", NULL}},
    {"sine", SIM_SINE, {"mode", "read_ms", "min", "max", "period_s", NULL}},
    {"random_walk",
     SIM_RANDOM_WALK,
     {"mode", "read_ms", "start", "step", "min", "max", "seed", NULL}},
    {"csv", SIM_CSV, {"mode", "read_ms", "file", NULL}},
};

/* Longest simulated read time: a 1-Wire DS18B20 converts in 750 ms. */
#define SIM_READ_MS_MAX 10000.0

/* splitmix64 */
static uint64_t rng_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int load_csv(struct sim *s, const char *name, const char *file, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = wisp_read_file(file, CSV_MAX_BYTES, &text, &len);
    if (rc == -EFBIG)
        return wisp_errf(err, errlen, rc, "%s.file: %s: larger than %zu bytes", name, file,
                         CSV_MAX_BYTES);
    if (rc)
        return wisp_errf(err, errlen, rc, "%s.file: %s: %s", name, file, strerror(-rc));
    if (memchr(text, '\0', len)) {
        free(text);
        return wisp_errf(err, errlen, -EINVAL, "%s.file: %s: contains a NUL byte", name, file);
    }
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += text[i] == '\n';
    s->rows = calloc(cap, sizeof(*s->rows));
    if (!s->rows) {
        free(text);
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    }
    double last_time = 0.0;
    char *line = text;
    for (size_t lineno = 1; line; lineno++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *l = trim(line);
        line = nl ? nl + 1 : NULL;
        if (!*l || *l == '#' || (lineno == 1 && strcmp(l, "time,value") == 0))
            continue;
        char *comma = strchr(l, ',');
        if (!comma || strchr(comma + 1, ',')) {
            rc = wisp_errf(err, errlen, -EINVAL, "%s.file: %s:%zu: expected \"time,value\"", name,
                           file, lineno);
            break;
        }
        *comma = '\0';
        double t = 0.0, v = 0.0;
        if (wisp_port_parse_double(trim(l), &t)) {
            rc = wisp_errf(err, errlen, -EINVAL, "%s.file: %s:%zu: bad time \"%.32s\"", name, file,
                           lineno, trim(l));
            break;
        }
        if (wisp_port_parse_double(trim(comma + 1), &v)) {
            rc = wisp_errf(err, errlen, -EINVAL, "%s.file: %s:%zu: bad value \"%.32s\"", name, file,
                           lineno, trim(comma + 1));
            break;
        }
        if (s->nrows && t < last_time) {
            rc = wisp_errf(err, errlen, -EINVAL, "%s.file: %s:%zu: time goes backwards", name, file,
                           lineno);
            break;
        }
        last_time = t;
        s->rows[s->nrows++] = v;
    }
    free(text);
    if (!rc && !s->nrows)
        rc = wisp_errf(err, errlen, -EINVAL, "%s.file: %s: no rows", name, file);
    return rc;
}

static int sim_setup(struct sim *s, const cJSON *cfg, const char *name, char *err, size_t errlen)
{
    int rc = 0;
    switch (s->mode) {
    case SIM_CONSTANT:
        return wisp_port_get_num(cfg, name, "value", true, &s->value, NULL, err, errlen);
    case SIM_SINE: {
        double period = 0.0;
        if ((rc = wisp_port_get_num(cfg, name, "min", true, &s->min, NULL, err, errlen)) ||
            (rc = wisp_port_get_num(cfg, name, "max", true, &s->max, NULL, err, errlen)) ||
            (rc = wisp_port_get_num(cfg, name, "period_s", true, &period, NULL, err, errlen)))
            return rc;
        if (s->max < s->min)
            return wisp_errf(err, errlen, -EINVAL, "%s.max: must be at least min", name);
        if (period < 0.001 || period > 1e9)
            return wisp_errf(err, errlen, -EINVAL, "%s.period_s: must be in [0.001, 1e9]", name);
        s->period_ns = (uint64_t)(period * 1e9);
        return 0;
    }
    case SIM_RANDOM_WALK: {
        double seed = 0.0;
        bool has_seed = false;
        if ((rc = wisp_port_get_num(cfg, name, "start", true, &s->value, NULL, err, errlen)) ||
            (rc = wisp_port_get_num(cfg, name, "step", true, &s->step, NULL, err, errlen)) ||
            (rc = wisp_port_get_num(cfg, name, "min", true, &s->min, NULL, err, errlen)) ||
            (rc = wisp_port_get_num(cfg, name, "max", true, &s->max, NULL, err, errlen)) ||
            (rc = wisp_port_get_num(cfg, name, "seed", false, &seed, &has_seed, err, errlen)))
            return rc;
        if (s->max < s->min)
            return wisp_errf(err, errlen, -EINVAL, "%s.max: must be at least min", name);
        if (s->value < s->min || s->value > s->max)
            return wisp_errf(err, errlen, -EINVAL, "%s.start: must be within [min, max]", name);
        if (s->step < 0.0)
            return wisp_errf(err, errlen, -EINVAL, "%s.step: must not be negative", name);
        if (has_seed && (seed < 0.0 || seed > 9007199254740992.0 || seed != floor(seed)))
            return wisp_errf(err, errlen, -EINVAL,
                             "%s.seed: must be an integer in [0, 9007199254740992]", name);
        s->rng = has_seed ? (uint64_t)seed : wisp_mono_ns() ^ wisp_real_ns();
        return 0;
    }
    case SIM_CSV: {
        const char *file = NULL;
        if ((rc = wisp_port_get_str(cfg, name, "file", true, &file, err, errlen)))
            return rc;
        if (!*file)
            return wisp_errf(err, errlen, -EINVAL, "%s.file: must not be empty", name);
        return load_csv(s, name, file, err, errlen);
    }
    }
    return -EINVAL;
}

static void sim_close(void *state)
{
    struct sim *s = state;
    if (!s)
        return;
    free(s->rows);
    free(s);
}

static int sim_open(const cJSON *cfg, const char *name, const struct wisp_port_env *env,
                    void **state, char *err, size_t errlen)
{
    (void)env;
    const char *mode = NULL;
    if (!cJSON_IsObject(cfg))
        return wisp_errf(err, errlen, -EINVAL, "%s: must be an object", name);
    int rc = wisp_port_get_str(cfg, name, "mode", true, &mode, err, errlen);
    if (rc)
        return rc;
    size_t m = 0;
    while (m < WISP_ARRAY_LEN(modes) && strcmp(modes[m].name, mode) != 0)
        m++;
    if (m == WISP_ARRAY_LEN(modes))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.mode: unknown mode \"%s\" (known: constant, sine, random_walk, csv)",
                         name, mode);
    if ((rc = wisp_port_check_keys(cfg, name, modes[m].keys, err, errlen)))
        return rc;
    struct sim *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    s->mode = modes[m].mode;
    s->clock = sim_clock;
    bool has_delay = false;
    double read_ms = 0;
    if ((rc = wisp_port_get_num(cfg, name, "read_ms", false, &read_ms, &has_delay, err, errlen)) ==
            0 &&
        has_delay && !(read_ms >= 0 && read_ms <= SIM_READ_MS_MAX))
        rc =
            wisp_errf(err, errlen, -EINVAL, "%s.read_ms: must be 0 to %.0f", name, SIM_READ_MS_MAX);
    s->read_ns = (uint64_t)(read_ms * 1e6);
    if (rc || (rc = sim_setup(s, cfg, name, err, errlen))) {
        sim_close(s);
        return rc;
    }
    *state = s;
    return 0;
}

static int sim_read(void *state, struct wisp_reading *out, char *err, size_t errlen)
{
    struct sim *s = state;
    (void)err;
    (void)errlen;
    if (s->read_ns) {
        /* A slow bus: the read blocks, as a 1-Wire conversion does. */
        struct timespec ts = {.tv_sec = (time_t)(s->read_ns / 1000000000ULL),
                              .tv_nsec = (long)(s->read_ns % 1000000000ULL)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    uint64_t now = s->clock();
    switch (s->mode) {
    case SIM_CONSTANT:
        out->value = s->value;
        break;
    case SIM_SINE: {
        const double two_pi = 6.283185307179586;
        double phase = (double)(now % s->period_ns) / (double)s->period_ns;
        double mid = (s->min + s->max) / 2.0, amp = (s->max - s->min) / 2.0;
        out->value = mid + amp * sin(two_pi * phase);
        break;
    }
    case SIM_RANDOM_WALK:
        if (s->started) {
            double u = (double)(rng_next(&s->rng) >> 11) * 0x1.0p-53; /* [0, 1) */
            s->value += (2.0 * u - 1.0) * s->step;
            s->value = s->value < s->min ? s->min : s->value > s->max ? s->max : s->value;
        }
        s->started = true;
        out->value = s->value;
        break;
    case SIM_CSV:
        out->value = s->rows[s->next];
        s->next = (s->next + 1) % s->nrows;
        break;
    }
    out->unit = "";
    out->time_ns = now;
    return 0;
}

const struct wisp_sensor_ops wisp_port_sim = {"sim", sim_open, sim_read, sim_close};
