/* 1-Wire thermometers (DS18B20 and kin) through sysfs:
 * <sysfs>/bus/w1/devices/<id>/temperature (newer kernels: milli degrees
 * Celsius) when present, else w1_slave:
 *   72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
 *   72 01 4b 46 7f ff 0e 10 57 t=23125                                    */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port_impl.h"
#include "util.h"

struct w1 {
    char dir[PATH_MAX]; /* <sysfs>/bus/w1/devices/<id> */
};

static const char *const w1_keys[] = {"id", NULL};

static int w1_open(const cJSON *cfg, const char *name, const struct wisp_port_env *env,
                   void **state, char *err, size_t errlen)
{
    const char *id = NULL;
    int rc = wisp_port_check_keys(cfg, name, w1_keys, err, errlen);
    if (rc || (rc = wisp_port_get_name(cfg, name, "id", &id, err, errlen)))
        return rc;
    struct w1 *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    if (wisp_port_path(s->dir, sizeof(s->dir), err, errlen, "%s/bus/w1/devices/%s",
                       wisp_port_sysfs_root(env), id)) {
        free(s);
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s.id: path too long", name);
    }
    *state = s;
    return 0;
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

static int parse_w1_slave(const char *path, char *buf, int64_t *milli, char *err, size_t errlen)
{
    char *nl = strchr(buf, '\n');
    if (!nl)
        return wisp_errf(err, errlen, -EIO, "%s: truncated (one line, expected two)", path);
    *nl = '\0';
    size_t len = (size_t)(nl - buf);
    if (len && buf[len - 1] == '\r')
        buf[--len] = '\0';
    if (!strstr(buf, "crc="))
        return wisp_errf(err, errlen, -EINVAL, "%s: malformed (no \"crc=\" on the first line)",
                         path);
    if (ends_with(buf, len, " NO"))
        return wisp_errf(err, errlen, -EIO, "%s: CRC check failed", path);
    if (!ends_with(buf, len, " YES"))
        return wisp_errf(err, errlen, -EINVAL,
                         "%s: malformed (first line ends in neither YES nor NO)", path);
    const char *t = strstr(nl + 1, "t=");
    if (!t)
        return wisp_errf(err, errlen, -EIO, "%s: truncated (no \"t=\" on the second line)", path);
    if (wisp_port_parse_i64(t + 2, milli))
        return wisp_errf(err, errlen, -EINVAL, "%s: bad temperature \"%.32s\"", path, t + 2);
    return 0;
}

static int w1_read(void *state, struct wisp_reading *out, char *err, size_t errlen)
{
    const struct w1 *s = state;
    char path[PATH_MAX + 32], buf[WISP_PORT_ATTR_MAX];
    int64_t milli = 0;
    int rc = wisp_port_path(path, sizeof(path), err, errlen, "%s/temperature", s->dir);
    if (rc)
        return rc;
    rc = wisp_port_read_attr(path, buf, sizeof(buf), err, errlen);
    if (rc == 0) {
        if (wisp_port_parse_i64(buf, &milli))
            return wisp_errf(err, errlen, -EINVAL, "%s: not an integer: \"%.32s\"", path, buf);
    } else if (rc == -ENOENT) {
        if ((rc = wisp_port_path(path, sizeof(path), err, errlen, "%s/w1_slave", s->dir)) ||
            (rc = wisp_port_read_attr(path, buf, sizeof(buf), err, errlen)) ||
            (rc = parse_w1_slave(path, buf, &milli, err, errlen)))
            return rc;
    } else {
        return rc;
    }
    out->value = (double)milli / 1000.0;
    out->unit = "°C";
    out->time_ns = wisp_real_ns();
    return 0;
}

static void w1_close(void *state)
{
    free(state);
}

const struct wisp_sensor_ops wisp_port_w1 = {"w1", w1_open, w1_read, w1_close};
