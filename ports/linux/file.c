/* Any sysfs attribute (or other small file) that holds one number, e.g. a
 * hwmon input: {"port": "file", "path": "class/hwmon/hwmon0/temp1_input",
 * "scale": 0.001, "unit": "°C"}. A relative path is under the sysfs root;
 * an absolute one is read as it is. The unit defaults to "" (set "unit"). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port_impl.h"
#include "util.h"

struct file_sensor {
    char path[PATH_MAX];
};

static const char *const file_keys[] = {"path", NULL};

static int file_open(const cJSON *cfg, const char *name, const struct wisp_port_env *env,
                     void **state, char *err, size_t errlen)
{
    const char *path = NULL;
    int rc = wisp_port_check_keys(cfg, name, file_keys, err, errlen);
    if (rc || (rc = wisp_port_get_str(cfg, name, "path", true, &path, err, errlen)))
        return rc;
    if (!path || !path[0] || strstr(path, "/../") || strncmp(path, "../", 3) == 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.path: must name a file (relative to the sysfs root, or absolute), "
                         "without \"..\"",
                         name);
    struct file_sensor *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    rc = path[0] == '/' ? wisp_port_path(s->path, sizeof(s->path), err, errlen, "%s", path)
                        : wisp_port_path(s->path, sizeof(s->path), err, errlen, "%s/%s",
                                         wisp_port_sysfs_root(env), path);
    if (rc) {
        free(s);
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s.path: path too long", name);
    }
    *state = s;
    return 0;
}

static int file_read(void *state, struct wisp_reading *out, char *err, size_t errlen)
{
    const struct file_sensor *s = state;
    char buf[WISP_PORT_ATTR_MAX];
    int rc = wisp_port_read_attr(s->path, buf, sizeof(buf), err, errlen);
    if (rc)
        return rc;
    if (wisp_port_parse_double(buf, &out->value))
        return wisp_errf(err, errlen, -EINVAL, "%s: not a number: \"%.32s\"", s->path, buf);
    out->unit = "";
    out->time_ns = wisp_real_ns();
    return 0;
}

static void file_close(void *state)
{
    free(state);
}

const struct wisp_sensor_ops wisp_port_file = {"file", file_open, file_read, file_close};
