/*
 * The MQTT connection over Paho MQTTAsync: creating the client, connecting
 * and reconnecting, and shutdown. The configuration is checked in
 * mqtt_config.c, the inbound side (the queue the loop drains, backpressure,
 * subscriptions) is in mqtt_in.c, publishing and statistics in mqtt_out.c.
 *
 * What Paho 1.3.12 actually does, found by experiment against mosquitto 2.0
 * (the tests in tests/integration/mqtt_client.c depend on it):
 *
 * - Initial connect. With automaticReconnect set, a first connect that fails
 *   (nothing listening, TLS handshake refused) calls onFailure once and then
 *   Paho retries by itself, silently: later failures call nothing, a success
 *   calls the connected callback with cause "automatic reconnect". Paho only
 *   looks at its retry timer every 3 s (MQTTAsync_checkTimeouts), so a retry
 *   happens between minRetryInterval and about 3 s late. We still keep our
 *   own schedule for the first connect (wisp_mqtt_tick), because nothing in
 *   Paho's documentation promises that retry: if MQTTAsync_connect itself
 *   was refused we call it again, and after a reported failure we call
 *   MQTTAsync_reconnect, which only asks Paho's own machinery to try now
 *   (Paho ignores a CONNECT while one is in progress or when connected), so
 *   the two never race.
 * - Lost connection: connectionLost once, then Paho's retries; the connected
 *   callback fires on every successful (re)connect, so it alone drives
 *   re-subscribing. Bug #1341 (double callbacks) came from the 3.1.1 -> 3.1
 *   fallback of MQTTVERSION_DEFAULT, which we never use; the state machine
 *   below ignores a second CONNECTED or LOST for the same transition anyway.
 * - Publishing while offline: see mqtt_out.c; returning 0 from
 *   messageArrived: see mqtt_in.c.
 */
#define WISP_LOG_MODULE "mqtt"
#include "mqtt.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mqtt_internal.h"
#include "util.h"

/* Paho's default is 30 s; a gateway should notice a dead link sooner. */
enum { CONNECT_TIMEOUT_S = 15 };

const char *mqtt_paho_strerror(int rc)
{
    const struct wisp_paho_api *api = wisp_paho_any();
    return api ? api->strerror_(rc) : NULL;
}

const char *mqtt_reason_string(enum MQTTReasonCodes code)
{
    const struct wisp_paho_api *api = wisp_paho_any();
    const char *s = api ? api->reasonCode_toString(code) : NULL;
    return s ? s : "unknown reason";
}

const char *mqtt_paho_err(int rc)
{
    const char *s = mqtt_paho_strerror(rc);
    return s ? s : "unknown Paho error";
}

static uint64_t ms_ns(int ms)
{
    return (uint64_t)ms * 1000000u;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void mqtt_cb_enter(struct wisp_mqtt *m)
{
    atomic_fetch_add(&m->in_callback, 1);
}

void mqtt_cb_leave(struct wisp_mqtt *m)
{
    atomic_fetch_sub(&m->in_callback, 1);
}

void mqtt_signal(struct wisp_mqtt *m)
{
    uint64_t one = 1;
    /* Cannot block (EFD_NONBLOCK) and cannot usefully fail: the counter
     * only saturates after 2^64 - 2 signals nobody read. */
    ssize_t w = write(m->efd, &one, sizeof(one));
    (void)w;
}

/* ---- connection callbacks (Paho threads) -------------------------------- */

static void on_connected(void *ctx, char *cause)
{
    struct wisp_mqtt *m = ctx;
    (void)cause;
    mqtt_cb_enter(m);
    struct wisp_mqtt_msg *ev = mqtt_state_event(WISP_MQTT_CONNECTED, NULL, 0);
    pthread_mutex_lock(&m->lock);
    bool fresh = m->link != LINK_UP;
    if (fresh) {
        m->link = LINK_UP;
        m->conn_gen++;
        m->connect_failed = false;
        m->tls_error[0] = '\0';
        if (ev) {
            mqtt_push_locked(m, ev);
            ev = NULL;
        }
    }
    pthread_mutex_unlock(&m->lock);
    wisp_mqtt_msg_free(ev);
    if (fresh) {
        atomic_store(&m->connected, true);
        atomic_fetch_add(&m->st.connects, 1);
        mqtt_signal(m); /* the loop re-sends the subscriptions, then reports CONNECTED */
    }
    mqtt_cb_leave(m);
}

/* The link went down: an established connection was lost (connect_attempt
 * false) or a connect attempt failed. Reports each transition once. */
static void link_down(struct wisp_mqtt *m, const char *reason, bool connect_attempt)
{
    struct wisp_mqtt_msg *ev = mqtt_state_event(WISP_MQTT_LOST, reason, connect_attempt);
    bool report = false;
    pthread_mutex_lock(&m->lock);
    if (connect_attempt && m->link != LINK_UP) {
        m->connect_failed = true;
        report = m->link == LINK_CONNECTING;
        m->link = LINK_DOWN;
    } else if (!connect_attempt && m->link == LINK_UP) {
        report = true;
        m->link = LINK_DOWN;
    }
    if (report && ev) {
        mqtt_push_locked(m, ev);
        ev = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    wisp_mqtt_msg_free(ev);
    if (report && !connect_attempt) {
        atomic_store(&m->connected, false);
        atomic_fetch_add(&m->st.connection_lost, 1);
    }
    mqtt_signal(m); /* also when not reported: tick may have a retry to plan */
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct wisp_mqtt *m = ctx;
    char reason[256];
    mqtt_cb_enter(m);
    (void)snprintf(reason, sizeof(reason), "connection lost%s%s", cause ? ": " : "",
                   cause ? cause : "");
    link_down(m, reason, false);
    /* Nothing arrives on a lost link: a pending stop of intake is complete. */
    atomic_store(&m->intake_done, true);
    mqtt_cb_leave(m);
}

/* MQTT 5: the broker said why it closed the connection. This arrives before
 * connectionLost, so its reason is the one reported. */
static void on_disconnected(void *ctx, MQTTProperties *props, enum MQTTReasonCodes rc)
{
    struct wisp_mqtt *m = ctx;
    char reason[256];
    (void)props;
    mqtt_cb_enter(m);
    (void)snprintf(reason, sizeof(reason), "broker sent DISCONNECT: %s (0x%02x)",
                   mqtt_reason_string(rc), (unsigned)rc);
    link_down(m, reason, false);
    mqtt_cb_leave(m);
}

static const char *connack_text(int code)
{
    static const char *const text[] = {
        NULL,
        "unacceptable protocol version",
        "client identifier rejected",
        "server unavailable",
        "bad user name or password",
        "not authorized",
    };
    return code > 0 && code < (int)WISP_ARRAY_LEN(text) ? text[code] : NULL;
}

/* Builds the reason for a failed connect from everything Paho told us:
 * its own error, the broker's CONNACK code (3.1.1) or reason code (5) and
 * the last OpenSSL error. */
static void connect_failed(struct wisp_mqtt *m, int code, const char *message, int v5_reason)
{
    char reason[768], tls[sizeof(m->tls_error)];
    int n;
    pthread_mutex_lock(&m->lock);
    memcpy(tls, m->tls_error, sizeof(tls));
    pthread_mutex_unlock(&m->lock);
    if (v5_reason >= 0x80)
        n = snprintf(reason, sizeof(reason), "broker refused the connection: %s (0x%02x)",
                     mqtt_reason_string((enum MQTTReasonCodes)v5_reason), v5_reason);
    else if (connack_text(code))
        n = snprintf(reason, sizeof(reason), "broker refused the connection: %s (%d)",
                     connack_text(code), code);
    else
        n = snprintf(reason, sizeof(reason), "%s (code %d)",
                     message ? message : mqtt_paho_err(code), code);
    if (n > 0 && (size_t)n < sizeof(reason) && tls[0]) {
        /* OpenSSL 3 prefixes each line with a thread id: keep what follows. */
        const char *t = strstr(tls, ":error:");
        n += snprintf(reason + n, sizeof(reason) - (size_t)n, "; TLS: %s", t ? t + 7 : tls);
    }
    /* A broker that requires a client certificate closes the connection
     * after the TLS 1.3 handshake, which Paho reports only as a failed
     * "connect completion"; say what is most likely missing. */
    if (n > 0 && (size_t)n < sizeof(reason) && m->tls && !m->tls_cert && !tls[0] && message &&
        strstr(message, "completion"))
        (void)snprintf(reason + n, sizeof(reason) - (size_t)n,
                       "; no client certificate is configured (tls_cert): a broker that requires "
                       "one closes the connection like this");
    link_down(m, reason, true);
}

static void on_connect_fail(void *ctx, MQTTAsync_failureData *r)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    connect_failed(m, r ? r->code : MQTTASYNC_FAILURE, r ? r->message : NULL, 0);
    mqtt_cb_leave(m);
}

static void on_connect_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
    struct wisp_mqtt *m = ctx;
    mqtt_cb_enter(m);
    /* Paho 1.3.12 puts a refusing CONNACK's reason code in `code` and leaves
     * reasonCode at 0 ("CONNACK return code (code 135)"). */
    int reason = 0;
    if (r)
        reason = r->reasonCode >= 0x80 ? (int)r->reasonCode : r->code >= 0x80 ? r->code : 0;
    connect_failed(m, r ? r->code : MQTTASYNC_FAILURE, r ? r->message : NULL, reason);
    mqtt_cb_leave(m);
}

/* OpenSSL's error queue as Paho prints it; kept for the next failure reason. */
static int on_ssl_error(const char *str, size_t len, void *u)
{
    struct wisp_mqtt *m = u;
    while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r'))
        len--;
    pthread_mutex_lock(&m->lock);
    size_t n = len < sizeof(m->tls_error) - 1 ? len : sizeof(m->tls_error) - 1;
    memcpy(m->tls_error, str, n);
    m->tls_error[n] = '\0';
    pthread_mutex_unlock(&m->lock);
    return 1;
}

/* ---- create / start / tick ---------------------------------------------- */

static int create_client(struct wisp_mqtt *m, char *err, size_t errlen)
{
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.sendWhileDisconnected = 1;
    co.allowDisconnectedSendAtAnyTime = 1;
    /* We enforce max_buffered ourselves (wisp_mqtt_publish refuses new
     * messages past it): Paho's own limit drops the oldest message without
     * any callback, which would strand the copy we keep of it. */
    co.maxBufferedMessages =
        m->max_buffered > INT_MAX / 2 - 1024 ? INT_MAX : m->max_buffered * 2 + 1024;
    co.deleteOldestMessages = 0;
    co.restoreMessages = 0;
    co.MQTTVersion = m->version;
    int rc = m->api->createWithOptions(&m->client, m->paho_uri, m->client_id,
                                       MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        m->client = NULL;
        return wisp_errf(err, errlen, -EINVAL, "mqtt: cannot create a client for %s: %s", m->uri,
                         mqtt_paho_err(rc));
    }
    rc = m->api->setCallbacks(m->client, m, on_connection_lost, mqtt_on_message, NULL);
    if (rc == MQTTASYNC_SUCCESS)
        rc = m->api->setConnected(m->client, m, on_connected);
    if (rc == MQTTASYNC_SUCCESS && m->version == MQTTVERSION_5)
        rc = m->api->setDisconnected(m->client, m, on_disconnected);
    if (rc != MQTTASYNC_SUCCESS)
        return wisp_errf(err, errlen, -EIO, "mqtt: cannot set callbacks: %s", mqtt_paho_err(rc));
    return 0;
}

int wisp_mqtt_create(const struct wisp_mqtt_config *cfg, struct wisp_mqtt **out, char *err,
                     size_t errlen)
{
    if (!cfg || !out)
        return wisp_errf(err, errlen, -EINVAL, "mqtt: no configuration");
    *out = NULL;
    struct wisp_mqtt *m = calloc(1, sizeof(*m));
    if (!m)
        return wisp_errf(err, errlen, -ENOMEM, "mqtt: out of memory");
    m->efd = -1;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return wisp_errf(err, errlen, -ENOMEM, "mqtt: cannot create a mutex");
    }
    int rc = mqtt_load_config(m, cfg, err, errlen);
    if (rc)
        goto fail;
    m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->efd < 0) {
        rc = wisp_errf(err, errlen, -errno, "mqtt: eventfd: %s", strerror(errno));
        goto fail;
    }
    m->api = wisp_paho_load(m->tls, err, errlen);
    if (!m->api) {
        rc = -ENOENT;
        goto fail;
    }
    rc = create_client(m, err, errlen);
    if (rc)
        goto fail;
    m->backoff_ms = m->reconnect_min_ms;
    *out = m;
    return 0;
fail:
    wisp_mqtt_destroy(m, 0);
    return rc;
}

int wisp_mqtt_fd(const struct wisp_mqtt *m)
{
    return m ? m->efd : -1;
}

/* Paho's retry intervals are whole seconds; ours are milliseconds. */
static int retry_s(int ms)
{
    int s = ms / 1000 + (ms % 1000 != 0);
    return s < 1 ? 1 : s;
}

static void set_session_expiry(const struct wisp_mqtt *m, MQTTProperties *props, uint32_t seconds)
{
    MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL};
    p.value.integer4 = seconds;
    if (m->api->properties_add(props, &p) != 0)
        log_warn("could not set the session expiry interval; the session ends at disconnect");
}

/* Hands Paho a connect request. Paho copies everything it keeps. */
static int connect_call(struct wisp_mqtt *m)
{
    MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
    MQTTAsync_connectOptions co5 = MQTTAsync_connectOptions_initializer5;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
    MQTTProperties props = MQTTProperties_initializer;
    bool v5 = m->version == MQTTVERSION_5;
    if (v5) {
        co = co5;
        co.cleanstart = m->clean_start;
        co.onFailure5 = on_connect_fail5;
        if (!m->clean_start) {
            /* Without a Session Expiry Interval an MQTT 5 session ends at disconnect. */
            set_session_expiry(m, &props, m->session_expiry_s);
            co.connectProperties = &props;
        }
    } else {
        co.cleansession = m->clean_start;
        co.onFailure = on_connect_fail;
    }
    co.context = m;
    co.keepAliveInterval = m->keepalive_s;
    co.connectTimeout = CONNECT_TIMEOUT_S;
    co.retryInterval = 0;
    co.MQTTVersion = m->version;
    co.username = m->username;
    co.password = m->password;
    co.automaticReconnect = 1;
    co.minRetryInterval = retry_s(m->reconnect_min_ms);
    co.maxRetryInterval = retry_s(m->reconnect_max_ms);
    if (m->will_topic) {
        will.topicName = m->will_topic;
        will.message = m->will_payload;
        will.qos = m->will_qos;
        will.retained = m->will_retain;
        co.will = &will;
    }
    if (m->tls) {
        ssl.trustStore = m->tls_ca;
        ssl.keyStore = m->tls_cert;
        ssl.privateKey = m->tls_key;
        ssl.enableServerCertAuth = !m->tls_insecure;
        ssl.verify = !m->tls_insecure;
        ssl.ssl_error_cb = on_ssl_error;
        ssl.ssl_error_context = m;
        co.ssl = &ssl;
    }
    int rc = m->api->connect(m->client, &co);
    m->api->properties_free(&props);
    if (rc == MQTTASYNC_SUCCESS) {
        m->connect_accepted = true;
        return 0;
    }
    log_warn("connect to %s not started: %s", m->uri, mqtt_paho_err(rc));
    return rc == MQTTASYNC_BAD_STRUCTURE || rc == MQTTASYNC_BAD_MQTT_OPTION ||
                   rc == MQTTASYNC_WRONG_MQTT_VERSION || rc == MQTTASYNC_BAD_UTF8_STRING
               ? -EINVAL
               : -EIO;
}

int wisp_mqtt_start(struct wisp_mqtt *m)
{
    if (!m)
        return -EINVAL;
    if (m->started)
        return -EALREADY;
    m->started = true;
    pthread_mutex_lock(&m->lock);
    m->link = LINK_CONNECTING;
    pthread_mutex_unlock(&m->lock);
    log_info("connecting to %s as %s (MQTT %s)", m->uri, m->client_id,
             m->version == MQTTVERSION_5 ? "5" : "3.1.1");
    int rc = connect_call(m);
    if (rc == -EINVAL)
        return rc; /* our options were refused: a bug, not an outage */
    if (rc) {
        m->retry_at_ns = wisp_mono_ns() + ms_ns(m->backoff_ms);
        mqtt_signal(m);
    }
    return 0;
}

/* One step of our own retry schedule (see the comment at the top). */
static void retry_connect(struct wisp_mqtt *m)
{
    if (m->connect_accepted && m->api->reconnect(m->client) == MQTTASYNC_SUCCESS) {
        log_debug("asked Paho to retry connecting to %s", m->uri);
        return;
    }
    (void)connect_call(m);
}

int wisp_mqtt_tick(struct wisp_mqtt *m, uint64_t now_mono_ns)
{
    if (!m)
        return -1;
    mqtt_in_sync(m);
    mqtt_in_nudge(m);
    if (!m->started)
        return -1;
    pthread_mutex_lock(&m->lock);
    bool up = m->link == LINK_UP, failed = m->connect_failed;
    pthread_mutex_unlock(&m->lock);
    if (up || (m->connect_accepted && !failed)) {
        m->retry_at_ns = 0;
        m->backoff_ms = m->reconnect_min_ms;
        return -1;
    }
    if (m->retry_at_ns == 0)
        m->retry_at_ns = now_mono_ns + ms_ns(m->backoff_ms);
    if (now_mono_ns >= m->retry_at_ns) {
        retry_connect(m);
        m->backoff_ms =
            m->backoff_ms > m->reconnect_max_ms / 2 ? m->reconnect_max_ms : m->backoff_ms * 2;
        m->retry_at_ns = now_mono_ns + ms_ns(m->backoff_ms);
    }
    uint64_t wait_ns = m->retry_at_ns - now_mono_ns;
    return (int)((wait_ns + 999999u) / 1000000u);
}

/* ---- shutdown ----------------------------------------------------------- */

static void on_disconnect_done(void *ctx, MQTTAsync_successData *r)
{
    struct wisp_mqtt *m = ctx;
    (void)r;
    atomic_store(&m->disconnect_done, true);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *r)
{
    struct wisp_mqtt *m = ctx;
    (void)r;
    atomic_store(&m->disconnect_done, true);
}

/* Lets in-flight messages complete for up to timeout_ms, sends DISCONNECT and
 * waits (bounded) for Paho to say it is done. A client that is not connected
 * has nothing to say goodbye to; the call still stops Paho's reconnecting. */
static void disconnect_and_wait(struct wisp_mqtt *m, int timeout_ms)
{
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = timeout_ms < 0 ? 0 : timeout_ms;
    d.onSuccess = on_disconnect_done;
    d.onFailure = on_disconnect_failed;
    d.context = m;
    if (m->api->disconnect(m->client, &d) != MQTTASYNC_SUCCESS)
        return;
    /* Paho needs up to the timeout, then a moment to write DISCONNECT. */
    uint64_t deadline = wisp_mono_ns() + ms_ns(d.timeout) + ms_ns(1000);
    while (!atomic_load(&m->disconnect_done) && wisp_mono_ns() < deadline)
        sleep_ms(2);
    if (!atomic_load(&m->disconnect_done))
        log_warn("disconnect from %s did not finish in time (timeout %d ms)", m->uri, d.timeout);
}

void wisp_mqtt_destroy(struct wisp_mqtt *m, int timeout_ms)
{
    if (!m)
        return;
    atomic_store(&m->destroying, true);
    if (m->client) {
        disconnect_and_wait(m, timeout_ms);
        /* Fails whatever is still pending through our callbacks, then stops
         * calling them: Paho runs callbacks under the mutex destroy takes. */
        m->api->destroy(&m->client);
    }
    for (int i = 0; i < 500 && atomic_load(&m->in_callback) > 0; i++)
        sleep_ms(2);
    mqtt_in_free(m);
    mqtt_out_free(m);
    if (m->password)
        explicit_bzero(m->password, strlen(m->password));
    free(m->uri);
    free(m->paho_uri);
    free(m->client_id);
    free(m->username);
    free(m->password);
    free(m->tls_ca);
    free(m->will_topic);
    free(m->will_payload);
    free(m->tls_cert);
    free(m->tls_key);
    if (m->efd >= 0)
        close(m->efd);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
