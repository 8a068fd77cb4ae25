/*
 * Checking and copying the MQTT configuration: the broker URI (schemes
 * Paho does not know are spelled the way it does), numbers and their
 * defaults, and the TLS files, which are read now so that a wrong path
 * fails at start-up naming the setting instead of failing every connect.
 */
#define WISP_LOG_MODULE "mqtt"
#include "mqtt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mqtt_internal.h"
#include "util.h"

enum {
    DEFAULT_KEEPALIVE_S = 30,
    DEFAULT_RECONNECT_MIN_MS = 250,
    DEFAULT_RECONNECT_MAX_MS = 30000,
    DEFAULT_MAX_BUFFERED = 10000,
    DEFAULT_MAX_QUEUED = 10000,
    DEFAULT_SESSION_EXPIRY_S = 86400,
    MAX_PEM_BYTES = 1 << 20,
};

static const struct {
    const char *scheme, *paho;
    bool tls;
} schemes[] = {
    {"tcp", "tcp", false}, {"mqtt", "tcp", false}, {"ws", "ws", false},
    {"ssl", "ssl", true},  {"mqtts", "ssl", true}, {"wss", "wss", true},
};

static int map_uri(struct wisp_mqtt *m, const char *uri, char *err, size_t errlen)
{
    const char *sep = uri ? strstr(uri, "://") : NULL;
    if (!sep)
        return wisp_errf(err, errlen, -EINVAL,
                         "mqtt: broker URI '%s' has no scheme (expected tcp://host:port, "
                         "mqtt://, ssl://, mqtts://, ws:// or wss://)",
                         uri ? uri : "");
    const char *rest = sep + 3;
    size_t slen = (size_t)(sep - uri);
    if (*rest == '\0' || *rest == ':' || *rest == '/')
        return wisp_errf(err, errlen, -EINVAL, "mqtt: broker URI '%s' has no host", uri);
    for (size_t i = 0; i < WISP_ARRAY_LEN(schemes); i++) {
        if (strlen(schemes[i].scheme) != slen || memcmp(uri, schemes[i].scheme, slen) != 0)
            continue;
        size_t cap = strlen(schemes[i].paho) + 3 + strlen(rest) + 1;
        m->paho_uri = malloc(cap);
        m->uri = wisp_strndup(uri, strlen(uri));
        if (!m->paho_uri || !m->uri)
            return wisp_errf(err, errlen, -ENOMEM, "mqtt: out of memory");
        (void)snprintf(m->paho_uri, cap, "%s://%s", schemes[i].paho, rest);
        m->tls = schemes[i].tls;
        return 0;
    }
    return wisp_errf(err, errlen, -EINVAL,
                     "mqtt: unsupported scheme '%.*s' in broker URI '%s' (expected tcp://, "
                     "mqtt://, ssl://, mqtts://, ws:// or wss://)",
                     (int)slen, uri, uri);
}

/* Reads a PEM file now so that a wrong path fails at start-up, naming the
 * setting, rather than as a TLS error on every connect attempt. */
static int check_pem(const char *what, const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = wisp_read_file(path, MAX_PEM_BYTES, &buf, &len);
    if (rc)
        return wisp_errf(err, errlen, rc, "mqtt: %s '%s' is not readable: %s", what, path,
                         strerror(-rc));
    bool pem = strstr(buf, "-----BEGIN ") != NULL;
    explicit_bzero(buf, len); /* it may be a private key */
    free(buf);
    if (!pem)
        return wisp_errf(err, errlen, -EINVAL, "mqtt: %s '%s' is not a PEM file", what, path);
    return 0;
}

static int check_tls(const struct wisp_mqtt_config *c, bool tls, char *err, size_t errlen)
{
    if (!tls) {
        if (c->tls_ca || c->tls_cert || c->tls_key)
            log_warn("tls_ca/tls_cert/tls_key are ignored: broker URI '%s' is not ssl:// or "
                     "mqtts://",
                     c->uri);
        return 0;
    }
    if (c->tls_key && !c->tls_cert)
        return wisp_errf(err, errlen, -EINVAL, "mqtt: tls_key is set but tls_cert is not");
    int rc = 0;
    if (c->tls_ca)
        rc = check_pem("tls_ca", c->tls_ca, err, errlen);
    if (!rc && c->tls_cert)
        rc = check_pem("tls_cert", c->tls_cert, err, errlen);
    if (!rc && c->tls_key)
        rc = check_pem("tls_key", c->tls_key, err, errlen);
    return rc;
}

static int pick(int value, int dflt)
{
    return value == 0 ? dflt : value;
}

static int check_numbers(struct wisp_mqtt *m, const struct wisp_mqtt_config *c, char *err,
                         size_t errlen)
{
    if (c->version != 0 && c->version != 3 && c->version != 5)
        return wisp_errf(err, errlen, -EINVAL, "mqtt: version %d: use 3 (MQTT 3.1.1) or 5",
                         c->version);
    m->version = c->version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1;
    m->keepalive_s = pick(c->keepalive_s, DEFAULT_KEEPALIVE_S);
    m->reconnect_min_ms = pick(c->reconnect_min_ms, DEFAULT_RECONNECT_MIN_MS);
    m->reconnect_max_ms = pick(c->reconnect_max_ms, DEFAULT_RECONNECT_MAX_MS);
    m->max_buffered = pick(c->max_buffered, DEFAULT_MAX_BUFFERED);
    m->max_queued = c->max_queued ? c->max_queued : DEFAULT_MAX_QUEUED;
    m->session_expiry_s = c->session_expiry_s ? c->session_expiry_s : DEFAULT_SESSION_EXPIRY_S;
    m->clean_start = c->clean_start != 0;
    m->tls_insecure = c->tls_insecure != 0;
    if (m->keepalive_s < 0 || m->keepalive_s > 65535)
        return wisp_errf(err, errlen, -EINVAL, "mqtt: keepalive_s %d is not in 0..65535",
                         c->keepalive_s);
    if (m->reconnect_min_ms < 0 || m->reconnect_max_ms < m->reconnect_min_ms)
        return wisp_errf(err, errlen, -EINVAL,
                         "mqtt: reconnect_min_ms (%d) and reconnect_max_ms (%d) must be "
                         "positive and min <= max",
                         m->reconnect_min_ms, m->reconnect_max_ms);
    if (m->max_buffered < 0)
        return wisp_errf(err, errlen, -EINVAL, "mqtt: max_buffered %d is negative",
                         c->max_buffered);
    return 0;
}

static int copy_str(char **dst, const char *src)
{
    if (!src)
        return 0;
    *dst = wisp_strndup(src, strlen(src));
    return *dst ? 0 : -ENOMEM;
}

int mqtt_load_config(struct wisp_mqtt *m, const struct wisp_mqtt_config *c, char *err,
                     size_t errlen)
{
    if (!c->client_id || !*c->client_id || !wisp_utf8_valid(c->client_id, strlen(c->client_id)))
        return wisp_errf(err, errlen, -EINVAL, "mqtt: client_id must be non-empty UTF-8");
    int rc = map_uri(m, c->uri, err, errlen);
    if (!rc)
        rc = check_numbers(m, c, err, errlen);
    if (!rc)
        rc = check_tls(c, m->tls, err, errlen);
    if (rc)
        return rc;
    if (copy_str(&m->client_id, c->client_id) || copy_str(&m->username, c->username) ||
        copy_str(&m->password, c->password) ||
        (m->tls && (copy_str(&m->tls_ca, c->tls_ca) || copy_str(&m->tls_cert, c->tls_cert) ||
                    copy_str(&m->tls_key, c->tls_key))))
        return wisp_errf(err, errlen, -ENOMEM, "mqtt: out of memory");
    if (c->will_topic) {
        if (c->will_qos < 0 || c->will_qos > 2)
            return wisp_errf(err, errlen, -EINVAL, "mqtt: will_qos must be 0, 1 or 2");
        if (copy_str(&m->will_topic, c->will_topic) ||
            copy_str(&m->will_payload, c->will_payload ? c->will_payload : ""))
            return wisp_errf(err, errlen, -ENOMEM, "mqtt: out of memory");
        m->will_qos = c->will_qos;
        m->will_retain = c->will_retain != 0;
    }
    return 0;
}
