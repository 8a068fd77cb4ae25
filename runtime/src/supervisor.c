#define WISP_LOG_MODULE "supervisor"
#include "supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "devices.h"
#include "durable.h"
#include "log.h"
#include "loop.h"
#include "mqtt.h"
#include "msess.h"
#include "pool.h"
#include "registry.h"
#include "subs.h"
#include "util.h"
#include "zygote.h"

struct sup {
    const struct wisp_config *cfg;
    struct wisp_loop *loop;
    struct wisp_zygote zygote;
    struct wisp_pool *pool;
    struct wisp_mqtt *mqtt;
    struct wisp_durable *durable;
    struct wisp_devices *devices;
    struct wisp_agent *agent; /* cloud sync; NULL when off */
    char *pid_path;
    int pid_fd;
    bool pid_locked;
    int sigfd;
    struct wisp_watch *sigw, *mqttw;
    bool draining, stop, ready, failed;
    bool own; /* mqtt.client wisp: one connection through the own client, no Paho */
    uint64_t quiet_since_ns, quiet_received; /* draining: idle since, messages seen */
    uint64_t started_ns, drain_deadline_ns;
    uint64_t oversize;
};

static int publish_hook(void *ud, const char *topic, const void *payload, size_t len, int qos,
                        int retain)
{
    struct sup *s = ud;
    if (s->own)
        return wisp_durable_publish(s->durable, topic, payload, len, qos, retain);
    return wisp_mqtt_publish(s->mqtt, topic, payload, len, qos, retain);
}

static int agent_publish_hook(void *ud, const char *topic, const void *payload, size_t len, int qos,
                              bool retain, uint64_t token)
{
    struct sup *s = ud;
    if (s->own)
        return wisp_durable_publish_agent(s->durable, topic, payload, len, qos, retain, token);
    /* Paho keeps a copy of a QoS 1 message and sends it again after a
     * reconnect; the agent only logs completions, so none is tracked. */
    (void)token;
    return wisp_mqtt_publish(s->mqtt, topic, payload, len, qos, retain ? 1 : 0);
}

static void report_hook(void *ud, const struct wisp_fnspec *spec, const char *event_id,
                        const struct wisp_result *res)
{
    struct sup *s = ud;
    (void)event_id;
    wisp_agent_on_report(s->agent, spec, res);
}

static int device_hook(void *ud, const struct wisp_fnspec *spec, const struct wisp_devcall_req *req,
                       struct wisp_devcall_reading *reading, int *value, char *msg, size_t msglen,
                       uint64_t *token)
{
    struct sup *s = ud;
    return wisp_devices_call(s->devices, spec, req, reading, value, msg, msglen, token);
}

/* mkdir -p, then check that we can write there. */
static int make_data_dir(const char *dir, char *err, size_t errlen)
{
    int rc = wisp_mkdir_p(dir, 0750);
    if (rc)
        return wisp_errf(err, errlen, rc, "data: cannot create %s: %s", dir,
                         rc == -EEXIST ? "not a folder" : strerror(-rc));
    if (access(dir, W_OK | X_OK) != 0)
        return wisp_errf(err, errlen, -errno, "data: %s is not writable: %s", dir, strerror(errno));
    return 0;
}

/* Non-durable triggers subscribe on the Paho connection, durable ones on
 * the durable session (durable.h). */
/* data/wispd.pid: locked for wispd's life, so a second wispd on the same
 * data dir is refused (both would run the same inbox), and read by
 * `wisp dlq replay` to tell us about replayed events. */
static int lock_pid_file(struct sup *s, char *err, size_t errlen)
{
    s->pid_path = wisp_path_join(s->cfg->data, "wispd.pid");
    if (!s->pid_path)
        return -ENOMEM;
    s->pid_fd = open(s->pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (s->pid_fd < 0)
        return wisp_errf(err, errlen, -errno, "%s: %s", s->pid_path, strerror(errno));
    if (flock(s->pid_fd, LOCK_EX | LOCK_NB) != 0)
        return wisp_errf(err, errlen, -EBUSY, "%s: another wispd is using the data directory %s",
                         s->pid_path, s->cfg->data);
    s->pid_locked = true;
    char line[32];
    int n = snprintf(line, sizeof(line), "%d\n", (int)getpid());
    if (ftruncate(s->pid_fd, 0) != 0 || pwrite(s->pid_fd, line, (size_t)n, 0) != n)
        return wisp_errf(err, errlen, -errno, "%s: cannot write: %s", s->pid_path, strerror(errno));
    return 0;
}

static void add_agent_filter(void *ud, const char *filter, int qos)
{
    if (wisp_subs_add(ud, filter, qos) != 0)
        log_error("out of memory subscribing to %s", filter);
}

static void update_subscriptions(struct sup *s)
{
    for (int durable = s->own ? 1 : 0; durable <= 1; durable++) {
        struct wisp_subs subs;
        wisp_subs_init(&subs);
        subs.durable = durable;
        wisp_pool_foreach(s->pool, wisp_subs_add_spec, &subs);
        if (s->own) { /* one session takes both kinds */
            subs.durable = false;
            wisp_pool_foreach(s->pool, wisp_subs_add_spec, &subs);
        }
        /* The agent's filters go on the connection that carries its Last
         * Will: the own session, or Paho. */
        if (s->agent && durable == (s->own ? 1 : 0))
            wisp_agent_foreach_filter(s->agent, add_agent_filter, &subs);
        wisp_subs_reduce(&subs);
        const char *const *f = (const char *const *)subs.filters;
        if (durable)
            wisp_durable_set_subscriptions(s->durable, f, subs.qos, subs.n);
        else if (wisp_mqtt_set_subscriptions(s->mqtt, f, subs.qos, subs.n) != 0)
            log_error("could not update subscriptions");
        for (size_t i = 0; i < subs.n; i++)
            log_debug("subscription %s qos %d%s", subs.filters[i], subs.qos[i],
                      durable ? " (durable)" : "");
        wisp_subs_fini(&subs);
    }
}

/* The functions to run: the --functions folder plus the managed ones
 * (cloud sync), a managed function taking the place of a local one of the
 * same name. */
struct fnset {
    struct wisp_fnspec **specs;
    size_t n, cap;
};

static void add_managed(void *ud, const char *name, const char *dir)
{
    struct fnset *set = ud;
    struct wisp_fnspec *spec = NULL;
    char err[1024];
    if (wisp_registry_load_one(dir, &spec, err, sizeof(err)) != 0) {
        log_error("managed function %s: %s; it does not run", name, err);
        return;
    }
    for (size_t i = 0; i < set->n; i++) {
        if (strcmp(set->specs[i]->name, spec->name) == 0) {
            log_info("%s: the managed function (%s) replaces the local one in %s", spec->name, dir,
                     set->specs[i]->dir);
            wisp_fnspec_destroy(set->specs[i]);
            set->specs[i] = spec;
            return;
        }
    }
    if (set->n == set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 8;
        /* An array of pointers. NOLINTNEXTLINE(bugprone-sizeof-expression) */
        struct wisp_fnspec **ns = realloc(set->specs, ncap * sizeof(*ns));
        if (!ns) {
            log_error("managed function %s: out of memory; it does not run", name);
            wisp_fnspec_destroy(spec);
            return;
        }
        set->specs = ns;
        set->cap = ncap;
    }
    set->specs[set->n++] = spec;
}

/* wispd's own MQTT client (msess.c) speaks MQTT over TCP and over TLS
 * (mbedTLS); Paho's other schemes (ws://, wss://) stay with Paho. */
static bool own_client_takes(const char *broker)
{
    return wisp_msess_scheme(broker) >= 0;
}

/* With mqtt.client paho the own client (durable triggers only) reads its
 * TLS files when a durable trigger first needs it: read them at start, so
 * that a bad file stops wispd like any configuration error. (With
 * mqtt.client wisp the session is created at start: wisp_durable_attach.) */
static int check_own_client(const struct wisp_config *cfg, char *err, size_t errlen)
{
    if (!own_client_takes(cfg->broker))
        return 0;
    struct wisp_msess_config mc = {
        .uri = cfg->broker,
        .client_id = "wisp-check",
        .version = 4,
        .tls_ca = cfg->tls_ca,
        .tls_cert = cfg->tls_cert,
        .tls_key = cfg->tls_key,
        .tls_insecure = cfg->tls_insecure,
    };
    return wisp_msess_check_config(&mc, err, errlen);
}

/* Durable triggers need wispd's own MQTT client (it acknowledges a message
 * only after the inbox commit). On a broker it cannot reach (WebSockets)
 * they are served through Paho like the others, acknowledged on receipt,
 * and each function says so once per load. */
static void ws_without_inbox(struct sup *s, struct wisp_fnspec **specs, size_t n)
{
    for (size_t i = 0; !own_client_takes(s->cfg->broker) && i < n; i++) {
        for (size_t k = 0; k < specs[i]->n_triggers; k++) {
            struct wisp_trigger *t = &specs[i]->triggers[k];
            if (t->kind != &wisp_trigger_mqtt || !t->durable)
                continue;
            t->durable = false;
            log_warn("%s: trigger on %s: durable delivery (inbox before PUBACK) needs a tcp://, "
                     "mqtt://, ssl:// or mqtts:// broker; on %s its QoS %d messages are "
                     "acknowledged on receipt",
                     specs[i]->name, t->topic, s->cfg->broker, t->qos);
        }
    }
}

static int load_functions(struct sup *s, bool initial)
{
    struct wisp_registry_scan scan;
    char err[1024];
    int rc = wisp_registry_scan(s->cfg->functions, &scan, err, sizeof(err));
    if (rc) {
        log_error("%s", err);
        return rc;
    }
    struct fnset set = {.specs = scan.specs, .n = scan.n, .cap = scan.n};
    size_t local = scan.n;
    if (s->agent)
        wisp_agent_foreach_managed(s->agent, add_managed, &set);
    log_info("%s %s: %zu function(s) loaded, %zu rejected%s", initial ? "loaded" : "reloaded",
             s->cfg->functions, local, scan.n_rejected, s->agent ? " (plus managed ones)" : "");
    ws_without_inbox(s, set.specs, set.n);
    wisp_pool_set_functions(s->pool, set.specs, set.n);
    free(set.specs); /* the specs themselves now belong to the pool */
    wisp_devices_set_functions(s->devices);
    return 0;
}

static void on_mqtt(void *ud, int fd, uint32_t events)
{
    struct sup *s = ud;
    (void)fd;
    (void)events;
    struct wisp_mqtt_msg *chain = wisp_mqtt_take(s->mqtt);
    size_t max_payload = (size_t)s->cfg->max_payload_kb * 1024u;
    for (struct wisp_mqtt_msg *m = chain; m; m = m->next) {
        if (m->kind == WISP_MQTT_CONNECTED) {
            if (s->agent)
                wisp_agent_on_connected(s->agent);
            wisp_durable_on_connected(s->durable);
        } else if (m->kind == WISP_MQTT_LOST) {
            if (s->agent)
                wisp_agent_on_lost(s->agent);
        } else if (m->kind == WISP_MQTT_DELIVERED) {
            wisp_durable_on_delivered(s->durable, m->token, m->ok != 0);
        } else if (s->agent && wisp_agent_on_message(s->agent, m->topic, m->topic_len, m->payload,
                                                     m->payload_len)) {
            /* Fleet sync (wisp/v1/...) first: bundles are larger than
             * events.max_payload_kb, and the agent's topics are not events. */
            continue;
        } else if (m->payload_len > max_payload) {
            if (s->oversize++ % 100 == 0)
                log_warn("dropped a %zu-byte message on %s: larger than events.max_payload_kb "
                         "(%d KiB); %llu dropped so far",
                         m->payload_len, m->topic, s->cfg->max_payload_kb,
                         (unsigned long long)s->oversize);
        } else {
            /* 0 means no function matches (a covered filter's neighbour);
             * failures are logged by the pool. */
            (void)wisp_pool_submit_mqtt_take(s->pool, &m->topic, &m->payload, m->payload_len,
                                             m->qos, m->retain);
        }
    }
    wisp_mqtt_msg_free(chain);
    wisp_pool_schedule(s->pool);
}

static void begin_drain(struct sup *s, const char *why)
{
    if (s->draining)
        return;
    s->draining = true;
    s->drain_deadline_ns = wisp_mono_ns() + (uint64_t)s->cfg->shutdown_timeout_ms * 1000000ULL;
    log_info("%s: draining (at most %d ms)", why, s->cfg->shutdown_timeout_ms);
    if (s->mqtt)
        wisp_mqtt_stop_intake(s->mqtt);
    wisp_durable_stop_intake(s->durable);
    wisp_devices_stop(s->devices); /* timers, sensors and GPIO edges fire no more */
}

static void reap_children(struct sup *s)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == s->zygote.pid && !s->stop)
            log_warn("zygote %d exited (status %d); a new one starts with the next executor",
                     (int)pid, status);
    }
}

static void on_signal(void *ud, int fd, uint32_t events)
{
    struct sup *s = ud;
    struct signalfd_siginfo si;
    (void)events;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGTERM:
        case SIGINT:
            begin_drain(s, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        case SIGHUP:
            if (!s->draining && load_functions(s, false) == 0)
                update_subscriptions(s);
            break;
        case SIGUSR1:
            wisp_pool_log_stats(s->pool);
            wisp_durable_log_stats(s->durable);
            break;
        case SIGUSR2: /* wisp dlq replay put events in the inbox */
            (void)wisp_pool_recover(s->pool);
            break;
        case SIGCHLD:
            reap_children(s);
            break;
        default:
            break;
        }
    }
}

static int setup_signals(struct sup *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGCHLD);
    /* Blocked in every thread (Paho's inherit this mask), read via signalfd. */
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -errno;
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        return -errno;
    s->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return s->sigfd < 0 ? -errno : 0;
}

static int start_mqtt(struct sup *s)
{
    const struct wisp_config *c = s->cfg;
    struct wisp_mqtt_config mc = {
        .uri = c->broker,
        .client_id = c->client_id,
        .username = c->username,
        .password = c->password,
        .version = c->mqtt_version,
        .keepalive_s = c->keepalive_s,
        .clean_start = c->clean_start,
        .tls_ca = c->tls_ca,
        .tls_cert = c->tls_cert,
        .tls_key = c->tls_key,
        .tls_insecure = c->tls_insecure,
        .reconnect_min_ms = c->reconnect_min_ms,
        .reconnect_max_ms = c->reconnect_max_ms,
        .max_buffered = c->max_buffered,
        .max_queued = (size_t)c->queue_max,
    };
    if (s->agent) {
        /* Cloud sync: the broker marks the device offline when the link dies. */
        wisp_agent_will(s->agent, &mc.will_topic, &mc.will_payload);
        mc.will_qos = 1;
        mc.will_retain = 1;
    }
    char err[512];
    int rc = wisp_mqtt_create(&mc, &s->mqtt, err, sizeof(err));
    if (rc) {
        log_error("%s", err);
        return rc;
    }
    s->mqttw = wisp_loop_add(s->loop, wisp_mqtt_fd(s->mqtt), EPOLLIN, on_mqtt, s);
    if (!s->mqttw)
        return -errno;
    update_subscriptions(s);
    return wisp_mqtt_start(s->mqtt);
}

/* What the agent asks for: a reload when the managed set changed (the
 * pool activates new versions atomically), new subscriptions when it
 * fetches other bundles. */
static void agent_pass(struct sup *s, uint64_t now)
{
    unsigned flags = wisp_agent_tick(s->agent, now);
    if ((flags & WISP_AGENT_RELOAD) && !s->draining)
        (void)load_functions(s, false);
    if (flags && !s->draining)
        update_subscriptions(s);
}

/* While draining: how long nothing may arrive before wispd is drained. */
#define QUIET_NS (50ULL * 1000000ULL)

static int next_timeout(struct sup *s, uint64_t now)
{
    int t = wisp_pool_next_timeout_ms(s->pool, now);
    int m = s->mqtt ? wisp_mqtt_tick(s->mqtt, now) : -1;
    if (m >= 0 && (t < 0 || m < t))
        t = m;
    int d = wisp_durable_next_timeout_ms(s->durable, now);
    if (d >= 0 && (t < 0 || d < t))
        t = d;
    int a = wisp_agent_next_timeout_ms(s->agent, now);
    if (a >= 0 && (t < 0 || a < t))
        t = a;
    if (s->draining && (t < 0 || t > 20))
        t = 20; /* poll drain progress (Paho completes deliveries on its threads) */
    return t;
}

static void run_loop(struct sup *s)
{
    while (!s->stop) {
        uint64_t now = wisp_mono_ns();
        int rc = wisp_loop_run_once(s->loop, next_timeout(s, now));
        if (rc < 0) {
            log_error("event loop failed: %s", strerror(-rc));
            break;
        }
        now = wisp_mono_ns();
        wisp_pool_tick(s->pool, now);
        if (wisp_durable_after_pass(s->durable, now) != 0) {
            s->failed = true;
            break;
        }
        if (s->agent)
            agent_pass(s, now);
        /* The MQTT modules log every (re)connect and loss; the supervisor
         * adds the one line that says wispd is serving: connected, and the
         * broker has answered the subscriptions. */
        if (!s->ready && (!s->mqtt || wisp_mqtt_subscribed(s->mqtt)) &&
            wisp_durable_subscribed(s->durable)) {
            s->ready = true;
            log_info("ready: %zu function(s) serving, subscribed %.1f ms after start",
                     wisp_pool_count(s->pool), (double)(now - s->started_ns) / 1e6);
        }
        if (!s->draining)
            continue;
        bool idle = (!s->mqtt || wisp_mqtt_intake_drained(s->mqtt)) && wisp_pool_idle(s->pool) &&
                    wisp_mqtt_pending(s->mqtt) == 0 && wisp_durable_settled(s->durable);
        struct wisp_mqtt_stats ms;
        wisp_mqtt_get_stats(s->mqtt, &ms);
        if (!idle || ms.received != s->quiet_received || !s->quiet_since_ns) {
            /* Paho may hand over a message it acknowledged just before the
             * UNSUBACK a moment after it: stay until nothing has come for
             * QUIET_NS with everything finished. */
            s->quiet_since_ns = idle ? now : 0;
            s->quiet_received = ms.received;
        }
        if (idle && s->quiet_since_ns && now - s->quiet_since_ns >= QUIET_NS) {
            log_info("drained: all accepted events finished and their messages sent");
            s->stop = true;
        } else if (now >= s->drain_deadline_ns) {
            size_t n = wisp_pool_abandon(s->pool);
            log_warn("shutdown_timeout_ms reached: %zu event(s) abandoned, %zu message(s) unsent",
                     n, wisp_mqtt_pending(s->mqtt));
            s->stop = true;
        }
    }
}

/* Cloud sync: the agent loads the managed set before the functions are
 * first loaded, so a restart without the broker runs the same versions. */
static int start_agent(struct sup *s)
{
    char err[1024];
    struct wisp_agent_hooks ah = {.publish = agent_publish_hook, .ud = s};
    if (wisp_agent_create(s->cfg, wisp_durable_store(s->durable), &ah, &s->agent, err,
                          sizeof(err)) != 0) {
        log_error("%s", err);
        return -EINVAL;
    }
    /* With Paho the agent rides on the Paho connection (on_mqtt); a
     * durable session beside it carries durable triggers only. */
    if (s->own)
        wisp_durable_set_agent(s->durable, s->agent);
    return 0;
}

int wisp_supervisor_run(const struct wisp_config *cfg)
{
    struct sup s = {.cfg = cfg, .sigfd = -1, .pid_fd = -1, .zygote = {.pid = -1, .sock = -1}};
    char err[512];
    int code = 1;
    s.started_ns = wisp_mono_ns();
    if (make_data_dir(cfg->data, err, sizeof(err)) != 0 ||
        lock_pid_file(&s, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    if (setup_signals(&s) != 0 || wisp_zygote_start(&s.zygote) != 0 ||
        wisp_loop_create(&s.loop) != 0) {
        log_error("cannot set up the process: %s", strerror(errno));
        goto out;
    }
    /* mqtt.client wisp: everything through the own client, plain or TLS. */
    s.own = strcmp(cfg->mqtt_client, "wisp") == 0 && own_client_takes(cfg->broker);
    if ((!s.own && check_own_client(cfg, err, sizeof(err)) != 0) ||
        wisp_durable_create(s.loop, cfg, &s.durable, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    struct wisp_pool_config pc = {
        .outbox_qos1 = s.own, /* the own client resends nothing by itself */
        .max_executors = (unsigned)cfg->executors_max,
        .idle_timeout_ms = (uint64_t)cfg->idle_timeout_ms,
        .queue_max = (unsigned)cfg->queue_max,
        .device = cfg->device,
        .store = wisp_durable_store(s.durable),
    };
    struct wisp_pool_hooks hooks = {
        .spawn = wisp_zygote_spawn,
        .spawn_ud = &s.zygote,
        .publish = publish_hook,
        .device = device_hook,
        .on_report = cfg->cloud_enabled ? report_hook : NULL,
        .ud = &s,
    };
    if (cfg->cloud_enabled && start_agent(&s) != 0)
        goto out;
    if (wisp_pool_create(s.loop, &pc, &hooks, &s.pool) != 0 ||
        !(s.sigw = wisp_loop_add(s.loop, s.sigfd, EPOLLIN, on_signal, &s)))
        goto out;
    if (wisp_devices_open(cfg, s.loop, s.pool, &s.devices, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    if (s.own)
        wisp_durable_take_all_mqtt(s.durable);
    if (load_functions(&s, true) != 0 ||
        (s.own ? (update_subscriptions(&s), 0) : start_mqtt(&s)) != 0 ||
        wisp_durable_attach(s.durable, s.pool, s.mqtt) != 0)
        goto out;
    log_info("wispd %s started: device %s, functions %s, broker %s", WISP_VERSION, cfg->device,
             cfg->functions, cfg->broker);
    run_loop(&s);
    code = s.failed ? 1 : 0;
out:
    s.stop = true;
    if (s.pool)
        wisp_pool_log_stats(s.pool);
    if (s.loop) {
        wisp_loop_remove(s.loop, s.mqttw);
        wisp_loop_remove(s.loop, s.sigw);
    }
    if (s.durable)
        wisp_durable_log_stats(s.durable);
    if (s.devices) {
        struct wisp_devices_stats ds;
        wisp_devices_stats(s.devices, &ds);
        if (ds.timer_fired || ds.sensor_polls || ds.gpio_edges)
            log_info("devices: timer_fired=%llu timer_missed=%llu sensor_polls=%llu "
                     "sensor_fired=%llu sensor_errors=%llu sensor_busy=%llu gpio_edges=%llu "
                     "gpio_fired=%llu gpio_debounced=%llu rejected=%llu",
                     (unsigned long long)ds.timer_fired, (unsigned long long)ds.timer_missed,
                     (unsigned long long)ds.sensor_polls, (unsigned long long)ds.sensor_fired,
                     (unsigned long long)ds.sensor_errors, (unsigned long long)ds.sensor_busy,
                     (unsigned long long)ds.gpio_edges, (unsigned long long)ds.gpio_fired,
                     (unsigned long long)ds.gpio_debounced, (unsigned long long)ds.rejected);
    }
    wisp_devices_close(s.devices); /* before the pool its sources feed */
    wisp_pool_destroy(s.pool);
    wisp_agent_goodbye(s.agent); /* a clean DISCONNECT discards the Last Will */
    /* After the pool (its results are in the batch), before Paho. */
    wisp_durable_destroy(s.durable);
    wisp_agent_destroy(s.agent); /* after the session, which reports to it */
    wisp_mqtt_destroy(s.mqtt, 2000);
    wisp_zygote_stop(&s.zygote);
    wisp_loop_destroy(s.loop);
    if (s.sigfd >= 0)
        close(s.sigfd);
    if (s.pid_locked)
        (void)unlink(s.pid_path);
    if (s.pid_fd >= 0)
        close(s.pid_fd);
    free(s.pid_path);
    log_info("stopped");
    return code;
}
