/* Helpers the ports share (not part of the public interface). */
#ifndef WISP_PORT_IMPL_H
#define WISP_PORT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "port.h"

struct cJSON;

extern const struct wisp_sensor_ops wisp_port_iio;
extern const struct wisp_sensor_ops wisp_port_w1;
extern const struct wisp_sensor_ops wisp_port_thermal;
extern const struct wisp_sensor_ops wisp_port_sim;
extern const struct wisp_sensor_ops wisp_port_file;

/* Largest sysfs attribute a port reads (w1_slave is ~75 bytes). */
#define WISP_PORT_ATTR_MAX 512

/* Reads the small regular file at path into buf (NUL-terminated, trailing
 * whitespace removed). Never blocks on a FIFO and never reads more than
 * cap - 1 bytes. 0, or a negative errno with err = "<path>: <what>". */
int wisp_port_read_attr(const char *path, char *buf, size_t cap, char *err, size_t errlen);

/* Strict numbers: the whole string, no leading blanks, no hex/inf/nan. */
int wisp_port_parse_double(const char *s, double *out);
int wisp_port_parse_i64(const char *s, int64_t *out);

/* Checks that cfg is an object whose keys are the common ones (port, unit,
 * scale, offset) or in keys (NULL-terminated). */
int wisp_port_check_keys(const struct cJSON *cfg, const char *sensor, const char *const *keys,
                         char *err, size_t errlen);
/* cfg[key] as a string: 0 (with *out NULL when absent and optional), or an
 * error "<sensor>.<key>: ...". */
int wisp_port_get_str(const struct cJSON *cfg, const char *sensor, const char *key, bool required,
                      const char **out, char *err, size_t errlen);
/* The same for a path component: non-empty, no '/', not "." or "..". */
int wisp_port_get_name(const struct cJSON *cfg, const char *sensor, const char *key,
                       const char **out, char *err, size_t errlen);
/* cfg[key] as a finite number; *present says whether it was there. */
int wisp_port_get_num(const struct cJSON *cfg, const char *sensor, const char *key, bool required,
                      double *out, bool *present, char *err, size_t errlen);

/* env's sysfs root, or "/sys". */
const char *wisp_port_sysfs_root(const struct wisp_port_env *env);
/* snprintf into out; -ENAMETOOLONG with err filled when it does not fit. */
int wisp_port_path(char *out, size_t cap, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
