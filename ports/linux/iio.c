/* Industrial I/O sensors through sysfs:
 * <sysfs>/bus/iio/devices/<device>/<channel>_raw with optional _offset and
 * _scale (per channel, else per channel type: in_voltage0 falls back to
 * in_voltage_scale). value = (raw + offset) * scale as the kernel ABI
 * defines, converted from the ABI's units where they are milli-units. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "port_impl.h"
#include "util.h"

struct iio {
    char dir[PATH_MAX]; /* <sysfs>/bus/iio/devices/<device> */
    char chan[256];     /* in_voltage0 */
    char type_pfx[256]; /* in_voltage: the type-wide attribute prefix */
    const char *unit;
    double divisor;
};

static const struct {
    const char *type;
    const char *unit;
    double divisor;
} units[] = {
    {"temp", "°C", 1000.0},              /* milli degrees Celsius */
    {"voltage", "mV", 1.0},              /* millivolts */
    {"humidityrelative", "%RH", 1000.0}, /* milli percent */
    {"pressure", "kPa", 1.0},            /* kilopascal */
};

static const char *const iio_keys[] = {"device", "channel", NULL};

static bool chan_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static int iio_open(const cJSON *cfg, const char *name, const struct wisp_port_env *env,
                    void **state, char *err, size_t errlen)
{
    const char *device = NULL, *chan = NULL;
    int rc = wisp_port_check_keys(cfg, name, iio_keys, err, errlen);
    if (rc || (rc = wisp_port_get_name(cfg, name, "device", &device, err, errlen)) ||
        (rc = wisp_port_get_str(cfg, name, "channel", true, &chan, err, errlen)))
        return rc;
    size_t len = strlen(chan);
    size_t pfx = strncmp(chan, "in_", 3) == 0 ? 3 : strncmp(chan, "out_", 4) == 0 ? 4 : 0;
    size_t tlen = 0;
    while (chan[pfx + tlen] >= 'a' && chan[pfx + tlen] <= 'z')
        tlen++;
    bool ok = pfx && tlen && len < 200;
    for (size_t i = 0; ok && i < len; i++)
        ok = chan_char_ok(chan[i]);
    if (!ok)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.channel: \"%s\" is not an IIO channel (like \"in_voltage0\")", name,
                         chan);
    if (len > 4 && strcmp(chan + len - 4, "_raw") == 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "%s.channel: name the channel without \"_raw\" (\"%.*s\")", name,
                         (int)(len - 4), chan);
    struct iio *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    if (wisp_port_path(s->dir, sizeof(s->dir), err, errlen, "%s/bus/iio/devices/%s",
                       wisp_port_sysfs_root(env), device)) {
        free(s);
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s.device: path too long", name);
    }
    memcpy(s->chan, chan, len + 1);
    memcpy(s->type_pfx, chan, pfx + tlen);
    s->type_pfx[pfx + tlen] = '\0';
    s->unit = "";
    s->divisor = 1.0;
    for (size_t i = 0; i < WISP_ARRAY_LEN(units); i++) {
        if (strlen(units[i].type) == tlen && strncmp(chan + pfx, units[i].type, tlen) == 0) {
            s->unit = units[i].unit;
            s->divisor = units[i].divisor;
        }
    }
    *state = s;
    return 0;
}

/* <chan>_<attr>, else <type>_<attr>, else def. */
static int read_opt(const struct iio *s, const char *attr, double def, double *out, char *err,
                    size_t errlen)
{
    char path[PATH_MAX + 300], buf[WISP_PORT_ATTR_MAX];
    const char *names[2] = {s->chan, s->type_pfx};
    size_t n = strcmp(s->chan, s->type_pfx) == 0 ? 1 : 2;
    for (size_t i = 0; i < n; i++) {
        int rc =
            wisp_port_path(path, sizeof(path), err, errlen, "%s/%s_%s", s->dir, names[i], attr);
        if (rc)
            return rc;
        rc = wisp_port_read_attr(path, buf, sizeof(buf), err, errlen);
        if (rc == -ENOENT)
            continue;
        if (rc)
            return rc;
        if (wisp_port_parse_double(buf, out))
            return wisp_errf(err, errlen, -EINVAL, "%s: not a number: \"%.32s\"", path, buf);
        return 0;
    }
    *out = def;
    return 0;
}

static int iio_read(void *state, struct wisp_reading *out, char *err, size_t errlen)
{
    const struct iio *s = state;
    char path[PATH_MAX + 300], buf[WISP_PORT_ATTR_MAX];
    int rc = wisp_port_path(path, sizeof(path), err, errlen, "%s/%s_raw", s->dir, s->chan);
    if (rc || (rc = wisp_port_read_attr(path, buf, sizeof(buf), err, errlen)))
        return rc;
    int64_t raw = 0;
    if (wisp_port_parse_i64(buf, &raw))
        return wisp_errf(err, errlen, -EINVAL, "%s: not an integer: \"%.32s\"", path, buf);
    double offset = 0.0, scale = 1.0;
    if ((rc = read_opt(s, "offset", 0.0, &offset, err, errlen)) ||
        (rc = read_opt(s, "scale", 1.0, &scale, err, errlen)))
        return rc;
    out->value = ((double)raw + offset) * scale / s->divisor;
    out->unit = s->unit;
    out->time_ns = wisp_real_ns();
    return 0;
}

static void iio_close(void *state)
{
    free(state);
}

const struct wisp_sensor_ops wisp_port_iio = {"iio", iio_open, iio_read, iio_close};
