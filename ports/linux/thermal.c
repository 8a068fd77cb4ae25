/* Thermal zones: <sysfs>/class/thermal/<zone>/temp in milli degrees Celsius. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "port_impl.h"
#include "util.h"

struct thermal {
    char path[PATH_MAX];
};

static const char *const thermal_keys[] = {"zone", NULL};

static int thermal_open(const cJSON *cfg, const char *name, const struct wisp_port_env *env,
                        void **state, char *err, size_t errlen)
{
    const char *zone = NULL;
    int rc = wisp_port_check_keys(cfg, name, thermal_keys, err, errlen);
    if (rc || (rc = wisp_port_get_name(cfg, name, "zone", &zone, err, errlen)))
        return rc;
    struct thermal *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    if (wisp_port_path(s->path, sizeof(s->path), err, errlen, "%s/class/thermal/%s/temp",
                       wisp_port_sysfs_root(env), zone)) {
        free(s);
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s.zone: path too long", name);
    }
    *state = s;
    return 0;
}

static int thermal_read(void *state, struct wisp_reading *out, char *err, size_t errlen)
{
    const struct thermal *s = state;
    char buf[WISP_PORT_ATTR_MAX];
    int64_t milli = 0;
    int rc = wisp_port_read_attr(s->path, buf, sizeof(buf), err, errlen);
    if (rc)
        return rc;
    if (wisp_port_parse_i64(buf, &milli))
        return wisp_errf(err, errlen, -EINVAL, "%s: not an integer: \"%.32s\"", s->path, buf);
    out->value = (double)milli / 1000.0;
    out->unit = "°C";
    out->time_ns = wisp_real_ns();
    return 0;
}

static void thermal_close(void *state)
{
    free(state);
}

const struct wisp_sensor_ops wisp_port_thermal = {"thermal", thermal_open, thermal_read,
                                                  thermal_close};
