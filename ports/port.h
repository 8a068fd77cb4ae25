/*
 * Sensor ports: one ops struct per kind of sensor, registered by name (like
 * Redis's ae backends). A port turns the port-specific settings of one
 * configured sensor into a state, and reads it. The linux ports read sysfs
 * under a configurable root, so tests run the real code against a fake tree.
 *
 * A configured sensor (struct wisp_sensor) wraps a port with the settings
 * every sensor has: "port", an optional "unit" override, and "scale" and
 * "offset" applied after the port's own value (value * scale + offset).
 */
#ifndef WISP_PORT_H
#define WISP_PORT_H

#include <stddef.h>
#include <stdint.h>

struct cJSON;

struct wisp_reading {
    double value;
    const char *unit; /* static or owned by the sensor; valid until its next read/close */
    uint64_t time_ns; /* CLOCK_REALTIME when the reading was taken */
};

struct wisp_port_env {
    const char *sysfs_root; /* NULL: "/sys" */
    const char *dev_root;   /* NULL: "/dev" */
};

struct wisp_sensor_ops {
    const char *name; /* "iio", "w1", "thermal", "sim" */
    /* Parses the port-specific settings of one configured sensor (a cJSON
     * object, e.g. {"port":"iio","device":"iio:device0","channel":"in_temp"})
     * into *state. The common keys (port, unit, scale, offset) are allowed and
     * left to wisp_sensor_open; any other unknown key is an error. err gets
     * "<sensor name>.<key>: <what is wrong>". 0 or a negative errno. env may
     * be NULL (defaults). */
    int (*open)(const struct cJSON *cfg, const char *sensor_name, const struct wisp_port_env *env,
                void **state, char *err, size_t errlen);
    /* One reading; a read error is a negative errno with err filled
     * ("<path>: <what is wrong>"), never a crash. */
    int (*read)(void *state, struct wisp_reading *out, char *err, size_t errlen);
    void (*close)(void *state);
};

/* The port called name, or NULL. */
const struct wisp_sensor_ops *wisp_sensor_port_find(const char *name);
/* The registered ports' names, ", "-separated, into out (for messages). */
void wisp_sensor_port_names(char *out, size_t cap);

/* A configured sensor. */
struct wisp_sensor;

/* Opens the sensor called name from its settings object. Strict: unknown
 * keys, missing required keys and wrong types are errors naming the key
 * ("<name>.<key>: ..."). 0 or a negative errno. */
int wisp_sensor_open(const struct cJSON *obj, const char *name, const struct wisp_port_env *env,
                     struct wisp_sensor **out, char *err, size_t errlen);
/* One reading with scale/offset and the unit override applied. A failure is
 * a negative errno and err is "<name>: <port's message>". */
int wisp_sensor_read(struct wisp_sensor *s, struct wisp_reading *out, char *err, size_t errlen);
/* Closes s (NULL is fine). */
void wisp_sensor_close(struct wisp_sensor *s);

const char *wisp_sensor_name(const struct wisp_sensor *s);
const struct wisp_sensor_ops *wisp_sensor_ops_of(const struct wisp_sensor *s);

#endif
