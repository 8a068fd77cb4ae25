/*
 * wispd's settings. One table (config.c) drives everything: the JSON config
 * file's keys, command-line flags, defaults, validation and the help text,
 * so a setting is added in one place.
 */
#ifndef WISP_CONFIG_H
#define WISP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct cJSON;

struct wisp_config {
    char *functions; /* folder of function folders */
    char *broker;    /* MQTT URI */
    char *data;      /* data directory */
    char *device;    /* device id; default: the host name */
    char *log_level;
    /* mqtt */
    char *client_id; /* default "wisp-<device>" */
    int mqtt_version;
    int keepalive_s;
    bool clean_start;
    char *username;
    char *password;
    int reconnect_min_ms;
    int reconnect_max_ms;
    int max_buffered;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    bool tls_insecure;
    int durable_expiry_s; /* the durable session's expiry after a disconnect (MQTT 5) */
    char *mqtt_client;    /* "wisp" (own client, also TLS) or "paho" */
    /* executors */
    int executors_max;
    int idle_timeout_ms;
    int queue_max;
    /* events */
    int max_payload_kb;
    int shutdown_timeout_ms;
    /* store */
    char *durability; /* sync, batch or none */
    int batch_ms;
    int batch_events;
    int map_max_mb;
    int outbox_max_mb;
    char *outbox_full; /* refuse or drop_oldest */
    int state_max_kb;  /* per function */
    int inbox_max;     /* durable events waiting before intake pauses */
    /* ports */
    char *sysfs_root; /* where the linux sensor ports read sysfs */
    char *dev_root;   /* where the linux GPIO port finds gpiochipN */
    /* cloud sync (cloud-sync/agent) */
    bool cloud_enabled;
    char *cloud_trust; /* trusted publisher keys (*.pem) */
    bool cloud_dev_unsigned;
    char *cloud_labels;   /* "k=v,k2=v2" */
    char *cloud_token;    /* fleet token sent in hello */
    char *cloud_identity; /* device.json written by provisioning */
    int cloud_meter_batch;
    int cloud_meter_interval_ms;
    int cloud_health_min_invocations;
    int cloud_health_max_error_pct;
    int cloud_max_bundle_kb;
    /* The "sensors" and "gpio" sections, kept as JSON (NULL when absent)
     * and checked when the devices are opened (devices.c); origin is the
     * config file they came from, for messages. */
    struct cJSON *sensors;
    struct cJSON *gpio;
    char *origin;
};

/* Fills every field with its default. */
void wisp_config_defaults(struct wisp_config *c);
/* Frees the strings; the struct itself is the caller's. */
void wisp_config_fini(struct wisp_config *c);

/* Applies a JSON config file. Unknown keys and bad values are errors:
 * "<path>:<key>: <message>". Returns 0 or a negative errno. */
int wisp_config_load_file(struct wisp_config *c, const char *path, char *err, size_t errlen);

/* Applies one setting by its flag name ("broker", "log-level") or dotted
 * key ("mqtt.version"). */
int wisp_config_set(struct wisp_config *c, const char *key, const char *value, char *err,
                    size_t errlen);

/* True when `flag` (without dashes) names a setting that takes a value. */
bool wisp_config_is_flag(const char *flag);
/* True when `flag` names a true/false setting: given alone ("--cloud") it
 * means true. */
bool wisp_config_flag_is_bool(const char *flag);

/* Checks cross-field rules and fills derived defaults (client_id). */
int wisp_config_finish(struct wisp_config *c, char *err, size_t errlen);

/* Parses cloud.labels text, "k=v,k2=v2" (non-empty keys, no '=' in
 * values), adding each label to obj (a cJSON object; NULL: only check).
 * 0, -EINVAL when malformed, -ENOMEM. */
int wisp_config_labels(const char *labels, struct cJSON *obj);

/* Prints the reference of every setting: key, flag, default, meaning. */
void wisp_config_print_help(FILE *out);

#endif
