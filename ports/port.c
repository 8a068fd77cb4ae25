/* The sensor port registry, the helpers ports share and configured sensors. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "port_impl.h"
#include "util.h"

static const struct wisp_sensor_ops *const ports[] = {
    &wisp_port_iio, &wisp_port_w1, &wisp_port_thermal, &wisp_port_sim, &wisp_port_file,
};

static const char *const common_keys[] = {"port", "unit", "scale", "offset", NULL};

const struct wisp_sensor_ops *wisp_sensor_port_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < WISP_ARRAY_LEN(ports); i++)
        if (strcmp(ports[i]->name, name) == 0)
            return ports[i];
    return NULL;
}

void wisp_sensor_port_names(char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < WISP_ARRAY_LEN(ports) && used < cap; i++) {
        int n = snprintf(out + used, cap - used, "%s%s", i ? ", " : "", ports[i]->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

int wisp_port_read_attr(const char *path, char *buf, size_t cap, char *err, size_t errlen)
{
    if (cap < 2)
        return wisp_errf(err, errlen, -EINVAL, "%s: no buffer", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return wisp_errf(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        (void)close(fd);
        return wisp_errf(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        (void)close(fd);
        return wisp_errf(err, errlen, -EINVAL, "%s: not a regular file", path);
    }
    size_t used = 0;
    for (;;) {
        /* One byte more than fits tells a too large file from a full one. */
        char extra = 0;
        char *dst = used < cap - 1 ? buf + used : &extra;
        size_t want = used < cap - 1 ? cap - 1 - used : 1;
        ssize_t r = read(fd, dst, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            (void)close(fd);
            return wisp_errf(err, errlen, -e, "%s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        if (dst == &extra) {
            (void)close(fd);
            return wisp_errf(err, errlen, -EFBIG, "%s: file too large (more than %zu bytes)", path,
                             cap - 1);
        }
        used += (size_t)r;
    }
    (void)close(fd);
    while (used > 0 && (buf[used - 1] == '\n' || buf[used - 1] == '\r' || buf[used - 1] == ' ' ||
                        buf[used - 1] == '\t'))
        used--;
    buf[used] = '\0';
    if (memchr(buf, '\0', used))
        return wisp_errf(err, errlen, -EINVAL, "%s: contains a NUL byte", path);
    return 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int wisp_port_parse_double(const char *s, double *out)
{
    if (!s)
        return -EINVAL;
    /* [+-]? digits [. digits]? ([eE] [+-]? digits)?, also ".5" and "5." */
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    size_t digits = 0;
    while (is_digit(*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (is_digit(*p)) {
            p++;
            digits++;
        }
    }
    if (!digits)
        return -EINVAL;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!is_digit(*p))
            return -EINVAL;
        while (is_digit(*p))
            p++;
    }
    if (*p != '\0')
        return -EINVAL;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end != p)
        return -EINVAL;
    if (errno == ERANGE || !isfinite(v))
        return -ERANGE;
    *out = v;
    return 0;
}

int wisp_port_parse_i64(const char *s, int64_t *out)
{
    if (!s || !(is_digit(*s) || ((*s == '-' || *s == '+') && is_digit(s[1]))))
        return -EINVAL;
    return wisp_parse_i64(s, INT64_MIN, INT64_MAX, out);
}

static bool in_list(const char *const *list, const char *key)
{
    for (; list && *list; list++)
        if (strcmp(*list, key) == 0)
            return true;
    return false;
}

static void append_list(char *out, size_t cap, const char *const *list, bool first)
{
    size_t used = strlen(out);
    for (; list && *list && used < cap; list++) {
        int n = snprintf(out + used, cap - used, "%s%s", first ? "" : ", ", *list);
        if (n < 0)
            return;
        used += (size_t)n;
        first = false;
    }
}

int wisp_port_check_keys(const struct cJSON *cfg, const char *sensor, const char *const *keys,
                         char *err, size_t errlen)
{
    if (!cJSON_IsObject(cfg))
        return wisp_errf(err, errlen, -EINVAL, "%s: must be an object", sensor);
    for (const cJSON *it = cfg->child; it; it = it->next) {
        if (in_list(common_keys, it->string) || in_list(keys, it->string))
            continue;
        char allowed[256] = "";
        append_list(allowed, sizeof(allowed), common_keys, true);
        append_list(allowed, sizeof(allowed), keys, false);
        return wisp_errf(err, errlen, -EINVAL, "%s.%s: unknown key (allowed: %s)", sensor,
                         it->string, allowed);
    }
    return 0;
}

int wisp_port_get_str(const struct cJSON *cfg, const char *sensor, const char *key, bool required,
                      const char **out, char *err, size_t errlen)
{
    *out = NULL;
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!it) {
        if (required)
            return wisp_errf(err, errlen, -EINVAL, "%s.%s: required", sensor, key);
        return 0;
    }
    if (!cJSON_IsString(it) || !it->valuestring)
        return wisp_errf(err, errlen, -EINVAL, "%s.%s: must be a string", sensor, key);
    *out = it->valuestring;
    return 0;
}

int wisp_port_get_name(const struct cJSON *cfg, const char *sensor, const char *key,
                       const char **out, char *err, size_t errlen)
{
    int rc = wisp_port_get_str(cfg, sensor, key, true, out, err, errlen);
    if (rc)
        return rc;
    const char *s = *out;
    if (!s || !*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0 ||
        strlen(s) > 255)
        return wisp_errf(err, errlen, -EINVAL, "%s.%s: \"%s\" is not a file name", sensor, key, s);
    return 0;
}

int wisp_port_get_num(const struct cJSON *cfg, const char *sensor, const char *key, bool required,
                      double *out, bool *present, char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (present)
        *present = it != NULL;
    if (!it) {
        if (required)
            return wisp_errf(err, errlen, -EINVAL, "%s.%s: required", sensor, key);
        return 0;
    }
    if (!cJSON_IsNumber(it))
        return wisp_errf(err, errlen, -EINVAL, "%s.%s: must be a number", sensor, key);
    if (!isfinite(it->valuedouble))
        return wisp_errf(err, errlen, -EINVAL, "%s.%s: must be finite", sensor, key);
    *out = it->valuedouble;
    return 0;
}

const char *wisp_port_sysfs_root(const struct wisp_port_env *env)
{
    return env && env->sysfs_root ? env->sysfs_root : "/sys";
}

int wisp_port_path(char *out, size_t cap, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return wisp_errf(err, errlen, -ENAMETOOLONG, "path too long");
    return 0;
}

struct wisp_sensor {
    const struct wisp_sensor_ops *ops;
    void *state;
    char *name;
    char *unit; /* the override, or NULL */
    double scale, offset;
};

int wisp_sensor_open(const struct cJSON *obj, const char *name, const struct wisp_port_env *env,
                     struct wisp_sensor **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!name || !*name)
        return wisp_errf(err, errlen, -EINVAL, "sensor: name must not be empty");
    if (!cJSON_IsObject(obj))
        return wisp_errf(err, errlen, -EINVAL, "%s: must be an object", name);
    const char *port = NULL, *unit = NULL;
    int rc = wisp_port_get_str(obj, name, "port", true, &port, err, errlen);
    if (rc)
        return rc;
    const struct wisp_sensor_ops *ops = wisp_sensor_port_find(port);
    if (!ops) {
        char known[128];
        wisp_sensor_port_names(known, sizeof(known));
        return wisp_errf(err, errlen, -EINVAL, "%s.port: unknown port \"%s\" (known: %s)", name,
                         port, known);
    }
    double scale = 1.0, offset = 0.0;
    if ((rc = wisp_port_get_str(obj, name, "unit", false, &unit, err, errlen)) ||
        (rc = wisp_port_get_num(obj, name, "scale", false, &scale, NULL, err, errlen)) ||
        (rc = wisp_port_get_num(obj, name, "offset", false, &offset, NULL, err, errlen)))
        return rc;
    struct wisp_sensor *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    s->ops = ops;
    s->scale = scale;
    s->offset = offset;
    s->name = strdup(name);
    s->unit = unit ? strdup(unit) : NULL;
    if (!s->name || (unit && !s->unit)) {
        wisp_sensor_close(s);
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", name);
    }
    rc = ops->open(obj, name, env, &s->state, err, errlen);
    if (rc) {
        s->state = NULL;
        wisp_sensor_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int wisp_sensor_read(struct wisp_sensor *s, struct wisp_reading *out, char *err, size_t errlen)
{
    char msg[512];
    msg[0] = '\0';
    struct wisp_reading r = {0.0, "", 0};
    int rc = s->ops->read(s->state, &r, msg, sizeof(msg));
    if (rc) {
        if (rc > 0)
            rc = -EIO;
        return wisp_errf(err, errlen, rc, "%s: %s", s->name, msg[0] ? msg : "read failed");
    }
    r.value = r.value * s->scale + s->offset;
    if (!isfinite(r.value))
        return wisp_errf(err, errlen, -ERANGE, "%s: value out of range", s->name);
    if (s->unit)
        r.unit = s->unit;
    else if (!r.unit)
        r.unit = "";
    *out = r;
    return 0;
}

void wisp_sensor_close(struct wisp_sensor *s)
{
    if (!s)
        return;
    if (s->state)
        s->ops->close(s->state);
    free(s->name);
    free(s->unit);
    free(s);
}

const char *wisp_sensor_name(const struct wisp_sensor *s)
{
    return s->name;
}

const struct wisp_sensor_ops *wisp_sensor_ops_of(const struct wisp_sensor *s)
{
    return s->ops;
}
