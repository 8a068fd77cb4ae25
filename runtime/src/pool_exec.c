#define WISP_LOG_MODULE "pool"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "devcall.h"
#include "log.h"
#include "loop.h"
#include "pool_internal.h"
#include "util.h"

/* How long past its own timeout an executor may take before it is killed:
 * the engine's hook normally answers within a millisecond of the deadline,
 * so this only matters for code stuck inside C (a backtracking pattern).
 * The floor keeps a briefly descheduled executor on a busy machine from
 * being killed for the scheduler's delay rather than its own. */
static uint64_t grace_ms(uint32_t timeout_ms)
{
    uint64_t g = timeout_ms / 2;
    if (g < 200)
        g = 200;
    if (g > 1000)
        g = 1000;
    return g;
}

static void exe_unlink(struct wisp_pool *p, struct exe *e)
{
    for (struct exe **pp = &p->exes; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            return;
        }
    }
}

static void on_readable(void *ud, int fd, uint32_t events);

static int send_frame(struct exe *e, struct wisp_buf *b)
{
    if (b->oom)
        return -ENOMEM;
    return wisp_ipc_write_all(e->fd, b->data, b->len);
}

int wisp_exe_spawn(struct wisp_pool *p, struct fn *fn)
{
    struct exe *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    wisp_buf_init(&e->rb);
    wisp_buf_init(&e->wb);
    e->pool = p;
    e->fn = fn;
    int rc = p->hooks.spawn(p->hooks.spawn_ud, &e->pid, &e->fd);
    if (rc != 0) {
        log_error("cannot start an executor for %s: %s", fn->spec->name, strerror(-rc));
        free(e);
        return rc;
    }
    /* Writes block briefly at most: an executor reads whole frames whenever
     * it is not running a handler, and what is queued behind a running
     * handler stays within the socket buffer (PIPE_MAX_BYTES). */
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
    (void)setsockopt(e->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    e->watch = wisp_loop_add(p->loop, e->fd, EPOLLIN, on_readable, e);
    wisp_ipc_encode_load(&p->wb, fn->spec);
    if (!e->watch || send_frame(e, &p->wb) != 0) {
        log_error("cannot load %s into executor %d", fn->spec->name, (int)e->pid);
        wisp_loop_remove(p->loop, e->watch);
        kill(e->pid, SIGKILL);
        close(e->fd);
        free(e);
        return -EIO;
    }
    e->state = EXE_LOADING;
    e->started_ns = wisp_mono_ns();
    /* Initialisation runs the chunk under the same time limit as a call. */
    e->deadline_ns =
        e->started_ns + (fn->spec->timeout_ms + grace_ms(fn->spec->timeout_ms) + 1000) * 1000000ULL;
    e->next = p->exes;
    p->exes = e;
    p->n_exec++;
    fn->n_exec++;
    fn->n_loading++;
    fn->st.executors = fn->n_exec;
    log_debug("executor %d starting for %s@%s", (int)e->pid, fn->spec->name, fn->spec->version);
    return 0;
}

/* Pipelining bounds: enough to keep a busy executor fed between wakeups,
 * small enough that the frames fit the socket buffer (so writing never
 * waits for a running handler) and that a timeout sends few events back
 * to the queue. */
enum { PIPE_MAX_EVENTS = 32, PIPE_MAX_BYTES = 64 * 1024 };

static void arm_deadline(struct exe *e, uint64_t now)
{
    uint32_t t = e->fn->spec->timeout_ms;
    e->started_ns = now;
    e->deadline_ns = now + ((uint64_t)t + grace_ms(t)) * 1000000ULL;
}

int wisp_exe_dispatch(struct exe *e, struct pev *ev)
{
    struct wisp_pool *p = e->pool;
    struct wisp_event wev = {
        .id = ev->id,
        .source = "",
        .type = ev->blob->type      ? ev->blob->type
                : ev->blob->subject ? "wisp.mqtt.message"
                                    : "wisp.invoke",
        .time = ev->time,
        .subject = ev->blob->subject,
        .payload = ev->blob->payload,
        .payload_len = ev->blob->len,
        .qos = ev->qos,
        .retain = ev->retain,
    };
    wev.source = ev->blob->source    ? ev->blob->source
                 : ev->blob->subject ? p->source_mqtt
                                     : p->source_invoke;
    ev->seq = ++p->next_seq;
    size_t before = e->wb.len;
    wisp_ipc_append_invoke(&e->wb, ev->seq, &wev);
    if (e->wb.oom) {
        /* Nothing of this frame may reach the executor: a torn frame
         * would end its connection. */
        e->wb.len = before;
        e->wb.oom = false;
        wisp_fn_push_front(e->fn, ev);
        return -ENOMEM;
    }
    ev->next = NULL;
    if (e->inflight_tail)
        e->inflight_tail->next = ev;
    else
        e->inflight_head = ev;
    e->inflight_tail = ev;
    e->n_inflight++;
    e->inflight_bytes += ev->blob->len;
    if (e->state == EXE_IDLE) {
        e->state = EXE_BUSY;
        e->fn->n_busy++;
        arm_deadline(e, wisp_mono_ns());
    }
    return 0;
}

struct exe *wisp_exe_find_pipeline(struct wisp_pool *p, const struct fn *fn, const struct pev *ev)
{
    struct exe *best = NULL;
    for (struct exe *e = p->exes; e; e = e->next) {
        if (e->fn != fn || e->state != EXE_BUSY || e->n_inflight >= PIPE_MAX_EVENTS ||
            e->inflight_bytes + ev->blob->len > PIPE_MAX_BYTES)
            continue;
        if (!best || e->n_inflight < best->n_inflight)
            best = e;
    }
    return best;
}

void wisp_exe_flush(struct wisp_pool *p)
{
    struct exe *e = p->exes;
    while (e) {
        struct exe *next = e->next; /* a failed write stops e */
        if (e->wb.len) {
            int rc = wisp_ipc_write_all(e->fd, e->wb.data, e->wb.len);
            wisp_buf_reset(&e->wb);
            if (rc != 0)
                wisp_exe_stop(e, true, WISP_OUTCOME_CRASH, "executor stopped accepting events");
        }
        e = next;
    }
}

void wisp_exe_stop(struct exe *e, bool kill_it, enum wisp_outcome outcome, const char *msg)
{
    struct wisp_pool *p = e->pool;
    struct fn *fn = e->fn;
    if (kill_it)
        (void)kill(e->pid, SIGKILL);
    wisp_loop_remove(p->loop, e->watch);
    close(e->fd);
    exe_unlink(p, e);
    p->n_exec--;
    fn->n_exec--;
    fn->st.executors = fn->n_exec;
    if (e->state == EXE_LOADING)
        fn->n_loading--;
    struct pev *ev = NULL;
    if (e->state == EXE_BUSY) {
        fn->n_busy--;
        /* The running event ends with this outcome; those queued behind it
         * never started and go back to the front of the queue, in order. */
        ev = e->inflight_head;
        struct pev *rest = ev->next, *rev = NULL;
        ev->next = NULL;
        while (rest) {
            struct pev *n = rest->next;
            rest->next = rev;
            rev = rest;
            rest = n;
        }
        while (rev) {
            struct pev *n = rev->next;
            wisp_fn_push_front(fn, rev);
            rev = n;
        }
    } else if (e->state == EXE_LOADING && msg) {
        /* It never got ready: the event it was started for fails, so that
         * a function that cannot initialise does not spin forever. */
        ev = wisp_fn_pop(fn);
    }
    bool cold = e->cold;
    uint64_t init_ns = e->init_ns;
    uint64_t started_ns = e->started_ns;
    wisp_buf_fini(&e->rb);
    wisp_buf_fini(&e->wb);
    free(e);
    if (ev) {
        struct wisp_result res;
        wisp_result_init(&res);
        wisp_result_set_error(&res, outcome, msg ? msg : "executor stopped");
        res.duration_ns = wisp_mono_ns() - started_ns;
        wisp_pool_finish(p, fn, ev, &res, cold, init_ns);
        wisp_result_fini(&res);
    }
}

struct exe *wisp_exe_find_idle(struct wisp_pool *p, const struct fn *fn)
{
    for (struct exe *e = p->exes; e; e = e->next) {
        if (e->fn == fn && e->state == EXE_IDLE)
            return e;
    }
    return NULL;
}

bool wisp_exe_evict_lru(struct wisp_pool *p, const struct fn *fn)
{
    struct exe *victim = NULL;
    for (struct exe *e = p->exes; e; e = e->next) {
        if (e->fn != fn && e->state == EXE_IDLE &&
            (!victim || e->idle_since_ns < victim->idle_since_ns))
            victim = e;
    }
    if (!victim)
        return false;
    log_debug("evicting idle executor of %s to make room for %s", victim->fn->spec->name,
              fn->spec->name);
    wisp_exe_stop(victim, false, WISP_OUTCOME_OK, NULL);
    return true;
}

/* Frame handlers return NULL when the executor may go on, or the reason to
 * stop it (with *kill_it and *outcome set); the caller does the stopping so
 * that no handler frees the executor under its caller's feet. */
static const char *handle_loaded(struct exe *e, struct wisp_rd *rd, char *msg, size_t cap)
{
    struct wisp_ipc_loaded l;
    if (e->state != EXE_LOADING || wisp_ipc_decode_loaded(rd, &l) != 0)
        return "executor sent a malformed reply";
    if (l.status != 0) {
        (void)snprintf(msg, cap, "initialisation failed: %s", l.err ? l.err : "?");
        log_error("%s@%s: %s", e->fn->spec->name, e->fn->spec->version, msg);
        free(l.err);
        return msg;
    }
    free(l.err);
    e->fn->n_loading--;
    e->state = EXE_IDLE;
    if (e->fn->retired && !e->fn->qhead)
        return "retired"; /* started for a version that has gone meanwhile */
    e->cold = true;
    e->init_ns = l.init_ns;
    e->idle_since_ns = wisp_mono_ns();
    e->fn->st.cold_starts++;
    return NULL;
}

static const char *handle_result(struct exe *e, struct wisp_rd *rd, bool *retire)
{
    struct wisp_result res;
    uint64_t seq;
    bool recycled;
    if (e->state != EXE_BUSY || wisp_ipc_decode_result(rd, &seq, &res, &recycled) != 0)
        return "executor sent a malformed reply";
    struct pev *ev = e->inflight_head;
    if (seq != ev->seq) {
        wisp_result_fini(&res);
        return "executor answered the wrong event";
    }
    struct fn *fn = e->fn;
    bool cold = e->cold;
    e->inflight_head = ev->next;
    if (!e->inflight_head)
        e->inflight_tail = NULL;
    ev->next = NULL;
    e->n_inflight--;
    e->inflight_bytes -= ev->blob->len;
    e->cold = recycled; /* a re-created instance pays initialisation again */
    uint64_t now = wisp_mono_ns();
    if (e->inflight_head) {
        arm_deadline(e, now); /* the next event starts now */
    } else {
        e->state = EXE_IDLE;
        e->idle_since_ns = now;
        fn->n_busy--;
    }
    wisp_pool_finish(e->pool, fn, ev, &res, cold, e->init_ns);
    wisp_result_fini(&res);
    /* A retired version serves nothing new: let its executors go. */
    *retire = e->state == EXE_IDLE && fn->retired && !fn->qhead;
    return NULL;
}

/* Reads what is available; returns false when the peer closed or failed. */
static bool fill(struct exe *e)
{
    for (;;) {
        if (e->rb.cap - e->rb.len < 4096) {
            size_t ncap = e->rb.cap ? e->rb.cap * 2 : 65536;
            char *nd = realloc(e->rb.data, ncap);
            if (!nd)
                return false;
            e->rb.data = nd;
            e->rb.cap = ncap;
        }
        ssize_t r = recv(e->fd, e->rb.data + e->rb.len, e->rb.cap - e->rb.len, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (r <= 0)
            return false;
        e->rb.len += (size_t)r;
    }
}

/* ctx.sensor / ctx.gpio: answered by the supervisor's device hook. */
static const char *device_request(struct exe *e, struct wisp_rd *rd)
{
    struct wisp_devcall_req req;
    if (wisp_devcall_decode_req(rd, &req) != 0)
        return "executor sent a malformed device request";
    struct wisp_pool *p = e->pool;
    struct wisp_devcall_reading reading = {0};
    char msg[512] = "";
    int value = 0;
    uint64_t token = 0;
    int rc = p->hooks.device ? p->hooks.device(p->hooks.ud, e->fn->spec, &req, &reading, &value,
                                               msg, sizeof(msg), &token)
                             : wisp_errf(msg, sizeof(msg), -ENOTSUP,
                                         "no sensors or GPIO lines are available here");
    if (rc == -EINPROGRESS && token) {
        e->dev_token = token;
        return NULL;
    }
    wisp_devcall_encode_reply(&e->wb, rc, msg, req.op == WISP_DEVCALL_SENSOR ? &reading : NULL,
                              value);
    return e->wb.oom ? "out of memory answering a device request" : NULL;
}

void wisp_pool_device_done(struct wisp_pool *p, uint64_t token, int status, const char *msg,
                           const struct wisp_devcall_reading *reading)
{
    for (struct exe *e = p->exes; e; e = e->next) {
        if (e->dev_token != token)
            continue;
        e->dev_token = 0;
        wisp_devcall_encode_reply(&e->wb, status, msg, reading, 0);
        if (e->wb.oom)
            wisp_exe_stop(e, true, WISP_OUTCOME_CRASH, "out of memory answering a device request");
        wisp_pool_schedule(p);
        return;
    }
}

static void on_readable(void *ud, int fd, uint32_t events)
{
    struct exe *e = ud;
    struct wisp_pool *p = e->pool;
    char msg[1200];
    (void)fd;
    (void)events;
    bool open = fill(e);
    size_t off = 0;
    const char *stop = NULL;
    bool kill_it = true, retire = false;
    enum wisp_outcome outcome = WISP_OUTCOME_CRASH;
    while (!stop && !retire) {
        enum wisp_ipc_type type;
        long n = wisp_ipc_frame_ready(e->rb.data + off, e->rb.len - off, &type);
        if (n <= 0) {
            if (n < 0)
                stop = "executor sent a malformed frame";
            break;
        }
        struct wisp_rd rd = {.p = e->rb.data + off + WISP_IPC_HEADER,
                             .left = (size_t)n - WISP_IPC_HEADER};
        off += (size_t)n;
        if (type == WISP_IPC_LOADED) {
            stop = handle_loaded(e, &rd, msg, sizeof(msg));
            if (stop == msg) {
                /* It reported its own failure and exits by itself: no
                 * kill by pid (the zygote may already have reaped it). */
                outcome = WISP_OUTCOME_ERROR;
                kill_it = false;
            } else if (stop && strcmp(stop, "retired") == 0) {
                stop = NULL;
                retire = true;
            }
        } else if (type == WISP_IPC_RESULT) {
            stop = handle_result(e, &rd, &retire);
        } else if (type == WISP_IPC_STATE_REQ) {
            stop = e->state == EXE_BUSY ? wisp_pool_state_request(e, &rd)
                                        : "executor asked for state outside an invocation";
        } else if (type == WISP_IPC_DEVICE_REQ) {
            stop = e->state == EXE_BUSY ? device_request(e, &rd)
                                        : "executor used a device outside an invocation";
        } else {
            stop = "executor sent an unexpected frame";
        }
    }
    if (!stop && !retire && !open) {
        stop = "executor exited unexpectedly (it crashed or was killed)";
        kill_it = false;
    }
    if (stop || retire) {
        wisp_exe_stop(e, stop ? kill_it : false, outcome, stop);
    } else if (off) {
        memmove(e->rb.data, e->rb.data + off, e->rb.len - off);
        e->rb.len -= off;
    }
    wisp_pool_schedule(p);
}

void wisp_exe_tick(struct wisp_pool *p, uint64_t now, uint64_t *next_deadline)
{
    uint64_t idle_ns = p->cfg.idle_timeout_ms * 1000000ULL;
    struct exe *e = p->exes;
    while (e) {
        struct exe *next = e->next;
        if ((e->state == EXE_BUSY || e->state == EXE_LOADING) && e->deadline_ns <= now) {
            char msg[200];
            (void)snprintf(
                msg, sizeof(msg),
                "timeout: executor killed after %llu ms (limits.timeout_ms is %u ms); the "
                "handler did not yield, e.g. it was stuck inside a C function",
                (unsigned long long)((now - e->started_ns) / 1000000ULL), e->fn->spec->timeout_ms);
            log_warn("%s@%s: %s", e->fn->spec->name, e->fn->spec->version, msg);
            wisp_exe_stop(e, true, WISP_OUTCOME_TIMEOUT, msg);
        } else if (e->state == EXE_IDLE && idle_ns && e->idle_since_ns + idle_ns <= now) {
            log_debug("stopping idle executor %d of %s", (int)e->pid, e->fn->spec->name);
            wisp_exe_stop(e, false, WISP_OUTCOME_OK, NULL);
        } else {
            uint64_t d =
                e->state == EXE_IDLE ? (idle_ns ? e->idle_since_ns + idle_ns : 0) : e->deadline_ns;
            if (d && (*next_deadline == 0 || d < *next_deadline))
                *next_deadline = d;
        }
        e = next;
    }
}
