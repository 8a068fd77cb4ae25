/* The configured sensors and GPIO chips, and answering ctx.sensor /
 * ctx.gpio. Trigger sources live in sources.c. */
#define WISP_LOG_MODULE "devices"
#include "devices.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "devices_internal.h"
#include "fnspec.h"
#include "log.h"
#include "pool.h"
#include "util.h"

/* Sensor names go into event sources, subjects and logs: keep them plain. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > WISP_MAX_NAME_LEN)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.' || *p == ':'))
            return false;
    return true;
}

static int open_sensors(struct wisp_devices *d, const struct wisp_config *cfg, char *err,
                        size_t errlen)
{
    if (!cfg->sensors)
        return 0;
    size_t n = (size_t)cJSON_GetArraySize(cfg->sensors);
    d->sensors = calloc(n ? n : 1, sizeof(struct wisp_sensor *));
    if (!d->sensors)
        return -ENOMEM;
    for (const cJSON *it = cfg->sensors->child; it; it = it->next) {
        char msg[512];
        if (!name_ok(it->string))
            return wisp_errf(err, errlen, -EINVAL,
                             "%s:sensors: sensor names are 1 to %u letters, digits, '_', '-', "
                             "'.' or ':'; \"%.64s\" is not one",
                             d->origin, WISP_MAX_NAME_LEN, it->string);
        int rc =
            wisp_sensor_open(it, it->string, &d->env, &d->sensors[d->n_sensors], msg, sizeof(msg));
        if (rc != 0)
            return wisp_errf(err, errlen, rc, "%s:sensors.%s", d->origin, msg);
        d->n_sensors++;
    }
    return 0;
}

static int add_chip(struct wisp_devices *d, const cJSON *cfg, const char *name,
                    struct wisp_gpio_chip **out, char *err, size_t errlen)
{
    struct chip_ent *c = calloc(1, sizeof(*c));
    if (!c || !(c->name = wisp_strndup(name, strlen(name)))) {
        free(c);
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    }
    int rc = wisp_gpio_chip_open(cfg, name, &d->env, &c->chip, err, errlen);
    if (rc != 0) {
        free(c->name);
        free(c);
        return rc;
    }
    c->next = d->chips;
    d->chips = c;
    if (out)
        *out = c->chip;
    return 0;
}

static int open_chips(struct wisp_devices *d, const struct wisp_config *cfg, char *err,
                      size_t errlen)
{
    for (const cJSON *it = cfg->gpio ? cfg->gpio->child : NULL; it; it = it->next) {
        char msg[512];
        int rc = add_chip(d, it, it->string, NULL, msg, sizeof(msg));
        if (rc != 0)
            return wisp_errf(err, errlen, rc, "%s:gpio.%s", d->origin, msg);
    }
    return 0;
}

int wisp_devices_chip(struct wisp_devices *d, const char *name, struct wisp_gpio_chip **out,
                      char *err, size_t errlen)
{
    for (struct chip_ent *c = d->chips; c; c = c->next)
        if (strcmp(c->name, name) == 0) {
            *out = c->chip;
            return 0;
        }
    return add_chip(d, NULL, name, out, err, errlen);
}

struct wisp_sensor *wisp_devices_sensor(struct wisp_devices *d, const char *name)
{
    for (size_t i = 0; i < d->n_sensors; i++)
        if (strcmp(wisp_sensor_name(d->sensors[i]), name) == 0)
            return d->sensors[i];
    return NULL;
}

int wisp_devices_open(const struct wisp_config *cfg, struct wisp_loop *loop, struct wisp_pool *pool,
                      struct wisp_devices **out, char *err, size_t errlen)
{
    struct wisp_devices *d = calloc(1, sizeof(*d));
    if (!d)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    d->loop = loop;
    d->pool = pool;
    d->cfg = cfg;
    d->timer_fd = -1;
    d->env.sysfs_root = cfg->sysfs_root;
    d->env.dev_root = cfg->dev_root;
    (void)snprintf(d->origin, sizeof(d->origin), "%s", cfg->origin ? cfg->origin : "(config)");
    int rc;
    d->efd = -1;
    if ((rc = open_sensors(d, cfg, err, errlen)) != 0 ||
        (rc = open_chips(d, cfg, err, errlen)) != 0 ||
        (loop && (rc = wisp_sources_init(d, err, errlen)) != 0) ||
        (loop && d->n_sensors && (rc = wisp_reader_start(d, err, errlen)) != 0)) {
        wisp_devices_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

void wisp_devices_close(struct wisp_devices *d)
{
    if (!d)
        return;
    wisp_reader_stop(d); /* no read may run while the sensors close */
    wisp_sources_fini(d);
    for (size_t i = 0; i < d->n_sensors; i++)
        wisp_sensor_close(d->sensors[i]);
    free(d->sensors);
    for (struct chip_ent *c = d->chips, *nx; c; c = nx) {
        nx = c->next;
        wisp_gpio_chip_close(c->chip);
        free(c->name);
        free(c);
    }
    free(d);
}

void wisp_devices_copy_reading(const struct wisp_reading *r, struct wisp_devcall_reading *out)
{
    out->value = r->value;
    out->time_ns = r->time_ns;
    (void)snprintf(out->unit, sizeof(out->unit), "%s", r->unit ? r->unit : "");
}

int wisp_devices_sensor_read(struct wisp_devices *d, size_t i, struct wisp_devcall_reading *out,
                             char *msg, size_t msglen)
{
    struct wisp_reading r;
    if (i >= d->n_sensors)
        return wisp_errf(msg, msglen, -ENOENT, "no such sensor");
    int rc = wisp_sensor_read(d->sensors[i], &r, msg, msglen);
    if (rc == 0)
        wisp_devices_copy_reading(&r, out);
    return rc;
}

static void sensor_names(const struct wisp_devices *d, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < d->n_sensors && used < cap; i++) {
        int n = snprintf(out + used, cap - used, "%s%s", i ? ", " : "",
                         wisp_sensor_name(d->sensors[i]));
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (!d->n_sensors)
        (void)snprintf(out, cap, "none");
}

int wisp_devices_call(void *ud, const struct wisp_fnspec *spec, const struct wisp_devcall_req *req,
                      struct wisp_devcall_reading *reading, int *value, char *msg, size_t msglen,
                      uint64_t *token)
{
    struct wisp_devices *d = ud;
    if (req->op == WISP_DEVCALL_SENSOR) {
        struct wisp_sensor *s = wisp_devices_sensor(d, req->name);
        if (!s) {
            char names[256];
            sensor_names(d, names, sizeof(names));
            return wisp_errf(msg, msglen, -ENOENT,
                             "sensor \"%s\" is not configured (configured: %s)", req->name, names);
        }
        if (d->th_started) {
            *token = ++d->next_token;
            int rc = wisp_reader_submit(d, s, 0, *token);
            return rc ? wisp_errf(msg, msglen, rc, "out of memory") : -EINPROGRESS;
        }
        struct wisp_reading r;
        int rc = wisp_sensor_read(s, &r, msg, msglen);
        if (rc == 0)
            wisp_devices_copy_reading(&r, reading);
        else
            d->st.sensor_errors++;
        return rc;
    }
    int access = wisp_fnspec_gpio_access(spec, req->name, req->line);
    bool set = req->op == WISP_DEVCALL_GPIO_SET;
    if (access < (set ? 2 : 1))
        return wisp_errf(
            msg, msglen, -EPERM,
            "%s line %u: %s only lines listed in function.json's \"gpio.%s\"%s", req->name,
            (unsigned)req->line, set ? "this function may drive" : "this function may read",
            set ? "outputs" : "inputs", set ? "" : " or \"gpio.outputs\" or its gpio triggers");
    struct wisp_gpio_chip *chip = NULL;
    int rc = wisp_devices_chip(d, req->name, &chip, msg, msglen);
    if (rc != 0)
        return rc;
    if (set) {
        char consumer[80];
        (void)snprintf(consumer, sizeof(consumer), "wisp:%s", spec->name);
        rc = wisp_gpio_set(chip, req->line, req->value ? 1 : 0, consumer, msg, msglen);
        *value = req->value ? 1 : 0;
        return rc;
    }
    return wisp_gpio_get(chip, req->line, value, msg, msglen);
}

void wisp_devices_call_done(struct wisp_devices *d, uint64_t token, int rc, const char *err,
                            const struct wisp_devcall_reading *reading)
{
    if (rc != 0)
        d->st.sensor_errors++;
    wisp_pool_device_done(d->pool, token, rc, err, reading);
}

size_t wisp_devices_sensor_count(const struct wisp_devices *d)
{
    return d->n_sensors;
}

const char *wisp_devices_sensor_name(const struct wisp_devices *d, size_t i)
{
    return i < d->n_sensors ? wisp_sensor_name(d->sensors[i]) : NULL;
}

void wisp_devices_stats(const struct wisp_devices *d, struct wisp_devices_stats *out)
{
    *out = d->st;
}
