/* The GPIO port registry and the generic chip layer: settings, line range
 * checks, per-line software debounce and the output requests a chip keeps. */
#include "gpio.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util.h"

static const struct wisp_gpio_ops *const ports[] = {
    &wisp_gpio_port_linux,
    &wisp_gpio_port_sim,
};

/* Longest chip name: it is a config key and shows up in chip info. */
#define CHIP_NAME_MAX 31

struct out_req {
    uint32_t line;
    int value;
    void *req;
};

struct wisp_gpio_chip {
    const struct wisp_gpio_ops *ops;
    void *state;
    char name[CHIP_NAME_MAX + 1];
    uint32_t lines;
    struct out_req *outs;
    size_t nouts, outs_cap;
    struct wisp_gpio_watch *watches; /* live watches, for close */
};

struct wisp_gpio_watch {
    struct wisp_gpio_chip *chip; /* NULL once the chip was closed */
    struct wisp_gpio_watch *prev, *next;
    void *req;
    int fd;
    uint32_t line;
    enum wisp_gpio_edge edge;
    uint64_t debounce_ns;
    bool have_last;
    uint64_t last_ns; /* timestamp of the last accepted edge */
    uint64_t dropped;
};

const struct wisp_gpio_ops *wisp_gpio_port_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < WISP_ARRAY_LEN(ports); i++)
        if (strcmp(ports[i]->name, name) == 0)
            return ports[i];
    return NULL;
}

static void port_names(char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < WISP_ARRAY_LEN(ports) && used < cap; i++) {
        int n = snprintf(out + used, cap - used, "%s%s", i ? ", " : "", ports[i]->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

int wisp_gpio_check_keys(const cJSON *cfg, const char *chip, const char *const *keys, char *err,
                         size_t errlen)
{
    if (!cJSON_IsObject(cfg))
        return wisp_errf(err, errlen, -EINVAL, "%s: settings must be an object", chip);
    for (const cJSON *it = cfg->child; it; it = it->next) {
        bool known = strcmp(it->string, "port") == 0;
        for (const char *const *k = keys; !known && k && *k; k++)
            known = strcmp(*k, it->string) == 0;
        if (known)
            continue;
        char allowed[256] = "port";
        size_t used = strlen(allowed);
        for (const char *const *k = keys; k && *k && used < sizeof(allowed); k++) {
            int n = snprintf(allowed + used, sizeof(allowed) - used, ", %s", *k);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        return wisp_errf(err, errlen, -EINVAL, "%s.%s: unknown key (allowed: %s)", chip, it->string,
                         allowed);
    }
    return 0;
}

const char *wisp_gpio_consumer(const char *consumer)
{
    return consumer && *consumer ? consumer : "wisp";
}

/* "gpiochip" and 1 to 5 digits. */
static bool is_chip_dev_name(const char *name)
{
    const char *pfx = "gpiochip";
    size_t plen = strlen(pfx), len = strlen(name);
    if (len <= plen || len > plen + 5 || strncmp(name, pfx, plen) != 0)
        return false;
    for (const char *p = name + plen; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static int check_name(const char *name, char *err, size_t errlen)
{
    if (!name || !*name)
        return wisp_errf(err, errlen, -EINVAL, "gpio: chip name must not be empty");
    size_t len = strlen(name);
    bool ok = len <= CHIP_NAME_MAX && name[0] != '.' && name[0] != '-';
    for (size_t i = 0; ok && i < len; i++) {
        char c = name[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-' || c == '.';
    }
    if (!ok)
        return wisp_errf(err, errlen, -EINVAL,
                         "gpio: chip name \"%.40s%s\" must be 1 to %d letters, digits, '_', '-' "
                         "or '.' (not starting with '.' or '-')",
                         name, len > 40 ? "..." : "", CHIP_NAME_MAX);
    return 0;
}

int wisp_gpio_chip_open(const cJSON *cfg, const char *name, const struct wisp_port_env *env,
                        struct wisp_gpio_chip **out, char *err, size_t errlen)
{
    *out = NULL;
    int rc = check_name(name, err, errlen);
    if (rc)
        return rc;
    const struct wisp_gpio_ops *ops = &wisp_gpio_port_linux;
    if (!cfg) {
        if (!is_chip_dev_name(name))
            return wisp_errf(err, errlen, -EINVAL,
                             "%s: not a GPIO chip device name (like \"gpiochip0\"); other "
                             "chips need settings with a \"port\"",
                             name);
    } else {
        if (!cJSON_IsObject(cfg))
            return wisp_errf(err, errlen, -EINVAL, "%s: settings must be an object", name);
        const cJSON *port = cJSON_GetObjectItemCaseSensitive(cfg, "port");
        if (port) {
            if (!cJSON_IsString(port) || !port->valuestring)
                return wisp_errf(err, errlen, -EINVAL, "%s.port: must be a string", name);
            ops = wisp_gpio_port_find(port->valuestring);
            if (!ops) {
                char known[64];
                port_names(known, sizeof(known));
                return wisp_errf(err, errlen, -EINVAL,
                                 "%s.port: unknown port \"%.40s\" (known: %s)", name,
                                 port->valuestring, known);
            }
        }
    }
    struct wisp_gpio_chip *c = calloc(1, sizeof(*c));
    if (!c)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    c->ops = ops;
    (void)snprintf(c->name, sizeof(c->name), "%s", name);
    rc = ops->open(cfg, name, env, &c->state, err, errlen);
    if (rc) {
        free(c);
        return rc < 0 ? rc : -EIO;
    }
    struct wisp_gpio_chip_info info;
    memset(&info, 0, sizeof(info));
    rc = ops->info(c->state, &info, err, errlen);
    if (rc || info.lines == 0) {
        if (!rc)
            rc = wisp_errf(err, errlen, -ENODEV, "%s: the chip has no lines", name);
        ops->close(c->state);
        free(c);
        return rc < 0 ? rc : -EIO;
    }
    c->lines = info.lines;
    *out = c;
    return 0;
}

void wisp_gpio_chip_close(struct wisp_gpio_chip *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nouts; i++)
        c->ops->release(c->outs[i].req);
    free(c->outs);
    for (struct wisp_gpio_watch *w = c->watches; w; w = w->next) {
        c->ops->unwatch(w->req);
        w->req = NULL;
        w->fd = -1;
        w->chip = NULL;
    }
    /* The detached watches stay allocated until wisp_gpio_unwatch; they are
     * no longer linked to anything. */
    while (c->watches) {
        struct wisp_gpio_watch *w = c->watches;
        c->watches = w->next;
        w->prev = w->next = NULL;
    }
    c->ops->close(c->state);
    free(c);
}

const char *wisp_gpio_chip_name(const struct wisp_gpio_chip *c)
{
    return c->name;
}

int wisp_gpio_chip_info(struct wisp_gpio_chip *c, struct wisp_gpio_chip_info *out, char *err,
                        size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int rc = c->ops->info(c->state, out, err, errlen);
    return rc > 0 ? -EIO : rc;
}

static int check_line(const struct wisp_gpio_chip *c, uint32_t line, char *err, size_t errlen)
{
    if (line >= c->lines)
        return wisp_errf(err, errlen, -EINVAL, "%s: line %u does not exist (the chip has %u lines)",
                         c->name, line, c->lines);
    return 0;
}

int wisp_gpio_line_info(struct wisp_gpio_chip *c, uint32_t line, struct wisp_gpio_line_info *out,
                        char *err, size_t errlen)
{
    int rc = check_line(c, line, err, errlen);
    if (rc)
        return rc;
    memset(out, 0, sizeof(*out));
    rc = c->ops->line_info(c->state, line, out, err, errlen);
    out->line = line;
    return rc > 0 ? -EIO : rc;
}

int wisp_gpio_watch(struct wisp_gpio_chip *c, uint32_t line, enum wisp_gpio_edge edge,
                    uint32_t debounce_ms, const char *consumer, struct wisp_gpio_watch **out,
                    char *err, size_t errlen)
{
    *out = NULL;
    int rc = check_line(c, line, err, errlen);
    if (rc)
        return rc;
    if (edge != WISP_GPIO_EDGE_RISING && edge != WISP_GPIO_EDGE_FALLING &&
        edge != WISP_GPIO_EDGE_BOTH)
        return wisp_errf(err, errlen, -EINVAL, "%s: line %u: unknown edge kind %d", c->name, line,
                         (int)edge);
    if (debounce_ms > WISP_GPIO_DEBOUNCE_MAX_MS)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: line %u: debounce %u ms is too long (at most %u ms)", c->name, line,
                         debounce_ms, WISP_GPIO_DEBOUNCE_MAX_MS);
    struct wisp_gpio_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", c->name);
    w->fd = -1;
    rc = c->ops->watch(c->state, line, edge, debounce_ms, wisp_gpio_consumer(consumer), &w->req,
                       &w->fd, err, errlen);
    if (rc) {
        free(w);
        return rc < 0 ? rc : -EIO;
    }
    w->chip = c;
    w->line = line;
    w->edge = edge;
    w->debounce_ns = (uint64_t)debounce_ms * 1000000u;
    w->next = c->watches;
    if (c->watches)
        c->watches->prev = w;
    c->watches = w;
    *out = w;
    return 0;
}

int wisp_gpio_watch_fd(const struct wisp_gpio_watch *w)
{
    return w->fd;
}

uint64_t wisp_gpio_watch_dropped(const struct wisp_gpio_watch *w)
{
    return w->dropped;
}

/* Keeps the events of ev[0..n) the watch accepts, in order; returns how many. */
static size_t debounce(struct wisp_gpio_watch *w, struct wisp_gpio_event *ev, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        /* The request asked for these edges only; anything else is noise. */
        if (!(ev[i].edge & w->edge) || ev[i].edge == WISP_GPIO_EDGE_BOTH)
            continue;
        uint64_t ts = ev[i].timestamp_ns;
        /* A timestamp before the last accepted one (a clock step) cannot be
         * judged; accept it and measure from there. */
        if (w->debounce_ns && w->have_last && ts >= w->last_ns &&
            ts - w->last_ns < w->debounce_ns) {
            w->dropped++;
            continue;
        }
        w->have_last = true;
        w->last_ns = ts;
        ev[kept++] = ev[i];
    }
    return kept;
}

int wisp_gpio_watch_read(struct wisp_gpio_watch *w, struct wisp_gpio_event *out, size_t max,
                         char *err, size_t errlen)
{
    if (!w->chip)
        return wisp_errf(err, errlen, -ENODEV, "gpio: line %u: the chip was closed", w->line);
    if (max > (size_t)INT_MAX)
        max = (size_t)INT_MAX;
    size_t kept = 0;
    /* Read until the port has nothing more or out is full, so events that
     * were all debounced away do not hide the ones behind them. */
    while (kept < max) {
        size_t want = max - kept;
        int n = w->chip->ops->read_events(w->req, out + kept, want, err, errlen);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        if ((size_t)n > want)
            return wisp_errf(err, errlen, -EIO, "%s: line %u: port returned too many events",
                             w->chip->name, w->line);
        for (int i = 0; i < n; i++)
            out[kept + (size_t)i].line = w->line;
        kept += debounce(w, out + kept, (size_t)n);
        if ((size_t)n < want)
            break;
    }
    return (int)kept;
}

void wisp_gpio_unwatch(struct wisp_gpio_watch *w)
{
    if (!w)
        return;
    struct wisp_gpio_chip *c = w->chip;
    if (c) {
        c->ops->unwatch(w->req);
        if (w->prev)
            w->prev->next = w->next;
        else
            c->watches = w->next;
        if (w->next)
            w->next->prev = w->prev;
    }
    free(w);
}

static struct out_req *find_out(struct wisp_gpio_chip *c, uint32_t line)
{
    for (size_t i = 0; i < c->nouts; i++)
        if (c->outs[i].line == line)
            return &c->outs[i];
    return NULL;
}

int wisp_gpio_set(struct wisp_gpio_chip *c, uint32_t line, int value, const char *consumer,
                  char *err, size_t errlen)
{
    int rc = check_line(c, line, err, errlen);
    if (rc)
        return rc;
    if (value != 0 && value != 1)
        return wisp_errf(err, errlen, -EINVAL, "%s: line %u: value must be 0 or 1, got %d", c->name,
                         line, value);
    struct out_req *o = find_out(c, line);
    if (o) {
        rc = c->ops->set(o->req, value, err, errlen);
        if (rc)
            return rc < 0 ? rc : -EIO;
        o->value = value;
        return 0;
    }
    if (c->nouts == c->outs_cap) {
        size_t cap = c->outs_cap ? c->outs_cap * 2 : 4;
        struct out_req *n = realloc(c->outs, cap * sizeof(*n));
        if (!n)
            return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", c->name);
        c->outs = n;
        c->outs_cap = cap;
    }
    void *req = NULL;
    rc = c->ops->output(c->state, line, value, wisp_gpio_consumer(consumer), &req, err, errlen);
    if (rc)
        return rc < 0 ? rc : -EIO;
    c->outs[c->nouts].line = line;
    c->outs[c->nouts].value = value;
    c->outs[c->nouts].req = req;
    c->nouts++;
    return 0;
}

int wisp_gpio_get(struct wisp_gpio_chip *c, uint32_t line, int *value, char *err, size_t errlen)
{
    int rc = check_line(c, line, err, errlen);
    if (rc)
        return rc;
    const struct out_req *o = find_out(c, line);
    if (o) {
        *value = o->value;
        return 0;
    }
    int v = 0;
    rc = c->ops->get(c->state, line, &v, err, errlen);
    if (rc)
        return rc < 0 ? rc : -EIO;
    *value = v ? 1 : 0;
    return 0;
}

const char *wisp_gpio_edge_name(enum wisp_gpio_edge e)
{
    switch (e) {
    case WISP_GPIO_EDGE_RISING:
        return "rising";
    case WISP_GPIO_EDGE_FALLING:
        return "falling";
    case WISP_GPIO_EDGE_BOTH:
        return "both";
    }
    return "unknown";
}

int wisp_gpio_edge_parse(const char *s, enum wisp_gpio_edge *out)
{
    static const enum wisp_gpio_edge all[] = {WISP_GPIO_EDGE_RISING, WISP_GPIO_EDGE_FALLING,
                                              WISP_GPIO_EDGE_BOTH};
    if (!s)
        return -EINVAL;
    for (size_t i = 0; i < WISP_ARRAY_LEN(all); i++) {
        if (strcmp(s, wisp_gpio_edge_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return -EINVAL;
}
