#define WISP_LOG_MODULE "pool"
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "pool_internal.h"
#include "topic.h"
#include "util.h"

void wisp_blob_free(struct blob *b)
{
    free(b->source);
    free(b->subject);
    free(b->payload);
    free(b);
}

static void blob_unref(struct blob *b)
{
    if (b && --b->refs == 0)
        wisp_blob_free(b);
}

void wisp_pev_free(struct pev *ev)
{
    if (!ev)
        return;
    blob_unref(ev->blob);
    free(ev);
}

struct pev *wisp_fn_pop(struct fn *fn)
{
    struct pev *ev = fn->qhead;
    if (!ev)
        return NULL;
    fn->qhead = ev->next;
    if (!fn->qhead)
        fn->qtail = NULL;
    fn->qlen--;
    fn->st.queued = fn->qlen;
    ev->next = NULL;
    return ev;
}

static void fn_push(struct fn *fn, struct pev *ev)
{
    ev->next = NULL;
    if (fn->qtail)
        fn->qtail->next = ev;
    else
        fn->qhead = ev;
    fn->qtail = ev;
    fn->qlen++;
    fn->st.queued = fn->qlen;
}

void wisp_fn_push_front(struct fn *fn, struct pev *ev)
{
    ev->next = fn->qhead;
    fn->qhead = ev;
    if (!fn->qtail)
        fn->qtail = ev;
    fn->qlen++;
    fn->st.queued = fn->qlen;
}

int wisp_pool_create(struct wisp_loop *loop, const struct wisp_pool_config *cfg,
                     const struct wisp_pool_hooks *hooks, struct wisp_pool **out)
{
    struct wisp_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->cfg = *cfg;
    if (p->cfg.max_executors == 0)
        p->cfg.max_executors = 1;
    p->hooks = *hooks;
    wisp_buf_init(&p->wb);
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = wisp_real_ns() ^ ((uint64_t)getpid() << 32);
    (void)snprintf(p->boot, sizeof(p->boot), "%016llx", (unsigned long long)r);
    (void)snprintf(p->source_mqtt, sizeof(p->source_mqtt), "wisp://%s/mqtt", p->cfg.device);
    (void)snprintf(p->source_invoke, sizeof(p->source_invoke), "wisp://%s/invoke", p->cfg.device);
    *out = p;
    return 0;
}

static void fn_free(struct fn *fn)
{
    struct pev *ev;
    while ((ev = wisp_fn_pop(fn)))
        wisp_pev_free(ev);
    while ((ev = fn->delayed)) {
        fn->delayed = ev->next;
        wisp_pev_free(ev);
    }
    wisp_fnspec_destroy(fn->spec);
    free(fn);
}

void wisp_pool_destroy(struct wisp_pool *p)
{
    if (!p)
        return;
    while (p->exes)
        wisp_exe_stop(p->exes, true, WISP_OUTCOME_REJECTED, NULL);
    while (p->fns) {
        struct fn *fn = p->fns;
        p->fns = fn->next;
        fn_free(fn);
    }
    wisp_buf_fini(&p->wb);
    free(p);
}

/* Frees the retired functions nothing refers to any more. Functions are
 * only ever freed here, between scheduling passes, so no caller walking
 * the list (or holding a function) sees one disappear. */
static void sweep(struct wisp_pool *p)
{
    struct fn **pp = &p->fns;
    while (*pp) {
        struct fn *fn = *pp;
        if (fn->retired && !fn->n_exec && !fn->qhead && !fn->delayed) {
            *pp = fn->next;
            log_debug("released %s@%s", fn->spec->name, fn->spec->version);
            fn_free(fn);
        } else {
            pp = &fn->next;
        }
    }
}

struct fn *wisp_pool_find_active(struct wisp_pool *p, const char *name)
{
    for (struct fn *fn = p->fns; fn; fn = fn->next) {
        if (!fn->retired && strcmp(fn->spec->name, name) == 0)
            return fn;
    }
    return NULL;
}

static void retire(struct wisp_pool *p, struct fn *old, struct fn *successor)
{
    old->retired = true;
    if (successor) {
        /* Events not yet started run on the new version, in their order. */
        struct pev *ev;
        while ((ev = wisp_fn_pop(old)))
            fn_push(successor, ev);
        while ((ev = old->delayed)) {
            old->delayed = ev->next;
            ev->next = successor->delayed;
            successor->delayed = ev;
        }
    }
    struct exe *e = p->exes;
    while (e) {
        struct exe *next = e->next;
        if (e->fn == old && e->state != EXE_BUSY && !(e->state == EXE_LOADING && old->qhead))
            wisp_exe_stop(e, false, WISP_OUTCOME_OK, NULL);
        e = next;
    }
}

void wisp_pool_set_functions(struct wisp_pool *p, struct wisp_fnspec **specs, size_t n)
{
    /* Active functions absent from the new set are removed first, while
     * every spec in the new set is still alive to compare names with. */
    struct fn *next;
    for (struct fn *fn = p->fns; fn; fn = next) {
        next = fn->next; /* retire() may free fn */
        if (fn->retired)
            continue;
        bool present = false;
        for (size_t i = 0; i < n && !present; i++)
            present = strcmp(fn->spec->name, specs[i]->name) == 0;
        if (!present) {
            log_info("%s: removed (version %s finishes what it has)", fn->spec->name,
                     fn->spec->version);
            retire(p, fn, NULL);
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct fn *cur = wisp_pool_find_active(p, specs[i]->name);
        /* Same version from the same folder: unchanged. A deployed bundle
         * has a folder of its own, so it replaces the running code even
         * when its function.json repeats the version string. */
        if (cur && strcmp(cur->spec->version, specs[i]->version) == 0 &&
            strcmp(cur->spec->dir ? cur->spec->dir : "", specs[i]->dir ? specs[i]->dir : "") == 0) {
            wisp_fnspec_destroy(specs[i]);
            continue;
        }
        struct fn *fn = calloc(1, sizeof(*fn));
        if (!fn) {
            log_error("out of memory adding %s", specs[i]->name);
            wisp_fnspec_destroy(specs[i]);
            continue;
        }
        fn->spec = specs[i];
        if (cur) {
            log_info("%s: version %s replaces %s", fn->spec->name, fn->spec->version,
                     cur->spec->version);
            retire(p, cur, fn);
        } else {
            log_info("%s: loaded version %s", fn->spec->name, fn->spec->version);
        }
        fn->next = p->fns;
        p->fns = fn;
    }
    wisp_pool_schedule(p);
}

size_t wisp_pool_count(const struct wisp_pool *p)
{
    size_t n = 0;
    for (const struct fn *fn = p->fns; fn; fn = fn->next)
        n += !fn->retired;
    return n;
}

void wisp_pool_foreach(struct wisp_pool *p, void (*cb)(void *ud, const struct wisp_fnspec *spec),
                       void *ud)
{
    for (struct fn *fn = p->fns; fn; fn = fn->next) {
        if (!fn->retired)
            cb(ud, fn->spec);
    }
}

/* Serves one function's queue: idle executors first, then new ones, then
 * the queues of busy ones. */
static void schedule_fn(struct wisp_pool *p, struct fn *fn)
{
    struct exe *e;
    while (fn->qhead && (e = wisp_exe_find_idle(p, fn))) {
        if (wisp_exe_dispatch(e, wisp_fn_pop(fn)) != 0)
            return;
    }
    /* Start executors for what is still waiting and not already covered
     * by executors that are starting. */
    size_t waiting = fn->qlen > fn->n_loading ? fn->qlen - fn->n_loading : 0;
    while (waiting > 0 && fn->n_exec < fn->spec->concurrency) {
        if (p->n_exec >= p->cfg.max_executors && !wisp_exe_evict_lru(p, fn))
            break;
        if (wisp_exe_spawn(p, fn) != 0)
            break;
        waiting--;
    }
    /* No more executors to be had: queue behind the running events, so an
     * executor goes straight from one event to the next. */
    while (fn->qhead && fn->n_loading == 0 && (e = wisp_exe_find_pipeline(p, fn, fn->qhead))) {
        if (wisp_exe_dispatch(e, wisp_fn_pop(fn)) != 0)
            return;
    }
}

void wisp_pool_schedule(struct wisp_pool *p)
{
    for (struct fn *fn = p->fns; fn; fn = fn->next)
        schedule_fn(p, fn);
    wisp_exe_flush(p);
    sweep(p);
}

struct blob *wisp_blob_new(const char *subject, const void *payload, size_t len)
{
    struct blob *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->refs = 0;
    b->payload = wisp_strndup(payload, len);
    b->subject = subject ? wisp_strndup(subject, strlen(subject)) : NULL;
    b->len = len;
    if (!b->payload || (subject && !b->subject)) {
        free(b->payload);
        free(b->subject);
        free(b);
        return NULL;
    }
    return b;
}

struct pev *wisp_pool_enqueue(struct wisp_pool *p, struct fn *fn, struct blob *b, const char *id,
                              const char *time, int qos, int retain, bool durable)
{
    /* Durable events are already stored: the limit is applied at intake. */
    if (!durable && fn->qlen >= p->cfg.queue_max) {
        fn->st.dropped++;
        if (fn->st.dropped == 1 || fn->st.dropped % 1000 == 0)
            log_warn("%s: queue full (%u events), dropped %llu so far", fn->spec->name,
                     p->cfg.queue_max, (unsigned long long)fn->st.dropped);
        return NULL;
    }
    struct pev *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return NULL;
    ev->blob = b;
    b->refs++;
    (void)snprintf(ev->id, sizeof(ev->id), "%s", id); /* ids are made to fit */
    if (time)
        (void)snprintf(ev->time, sizeof(ev->time), "%s", time); /* times are made to fit */
    else
        wisp_rfc3339(wisp_real_ns(), ev->time, sizeof(ev->time));
    ev->qos = qos;
    ev->retain = retain;
    fn_push(fn, ev);
    return ev;
}

void wisp_pool_next_id(struct wisp_pool *p, char *id, size_t cap)
{
    (void)snprintf(id, cap, "%s-%llu", p->boot, (unsigned long long)++p->next_event);
}

bool wisp_fn_matches(const struct fn *fn, const char *topic, size_t tlen, bool durable)
{
    for (size_t i = 0; i < fn->spec->n_triggers; i++) {
        const struct wisp_trigger *t = &fn->spec->triggers[i];
        if (t->kind == &wisp_trigger_mqtt && t->durable == durable &&
            wisp_topic_matches(t->topic, topic, tlen))
            return true;
    }
    return false;
}

/* Queues one message for every matching function. With owned buffers
 * (*topicp / *payloadp, payload NUL-terminated at len) the blob adopts them
 * and sets the pointers to NULL; otherwise it copies. */
static int submit_mqtt(struct wisp_pool *p, char **topicp, char **payloadp, size_t len, int qos,
                       int retain, bool adopt)
{
    struct blob *b = NULL;
    char id[40];
    int matched = 0;
    const char *topic = *topicp;
    size_t tlen = strlen(topic);
    for (struct fn *fn = p->fns; fn; fn = fn->next) {
        if (fn->retired || !wisp_fn_matches(fn, topic, tlen, false))
            continue;
        /* Each function's event has its own id: it names one invocation's
         * effects, which a consumer deduplicates by. */
        wisp_pool_next_id(p, id, sizeof(id));
        if (!b && adopt && (b = calloc(1, sizeof(*b)))) {
            b->subject = *topicp;
            b->payload = *payloadp;
            b->len = len;
            *topicp = *payloadp = NULL;
        } else if (!b && !adopt) {
            b = wisp_blob_new(topic, *payloadp, len);
        }
        if (!b)
            return -ENOMEM;
        if (wisp_pool_enqueue(p, fn, b, id, NULL, qos, retain, false))
            matched++;
    }
    if (b && b->refs == 0)
        wisp_blob_free(b); /* every queue was full */
    return matched;
}

int wisp_pool_submit_mqtt(struct wisp_pool *p, const char *topic, const void *payload, size_t len,
                          int qos, int retain)
{
    /* Not adopted, so neither buffer is written or freed. */
    char *t = (char *)topic, *pl = (char *)payload;
    return submit_mqtt(p, &t, &pl, len, qos, retain, false);
}

int wisp_pool_submit_mqtt_take(struct wisp_pool *p, char **topic, char **payload, size_t len,
                               int qos, int retain)
{
    return submit_mqtt(p, topic, payload, len, qos, retain, true);
}

/* Queues one non-MQTT event for the named function; id (40 bytes) gets its
 * id. type/source NULL: a "wisp.invoke" event from wisp run. */
static int submit_one(struct wisp_pool *p, const char *fn_name, const char *type,
                      const char *source, const char *subject, const void *payload, size_t len,
                      int qos, char *id)
{
    struct fn *fn = wisp_pool_find_active(p, fn_name);
    if (!fn)
        return -ENOENT;
    struct blob *b = wisp_blob_new(subject, payload, len);
    if (!b)
        return -ENOMEM;
    b->type = type;
    if (source && !(b->source = wisp_strndup(source, strlen(source)))) {
        wisp_blob_free(b);
        return -ENOMEM;
    }
    wisp_pool_next_id(p, id, 40);
    if (!wisp_pool_enqueue(p, fn, b, id, NULL, qos, 0, false)) {
        wisp_blob_free(b);
        return -ENOBUFS;
    }
    return 0;
}

int wisp_pool_submit_event(struct wisp_pool *p, const char *fn_name, const char *type,
                           const char *source, const char *subject, const void *payload, size_t len)
{
    char id[40];
    return submit_one(p, fn_name, type, source, subject, payload, len, -1, id);
}

int wisp_pool_submit_to(struct wisp_pool *p, const char *fn_name, const char *subject,
                        const void *payload, size_t len, char *event_id)
{
    int rc = submit_one(p, fn_name, NULL, NULL, subject, payload, len, 0, event_id);
    if (rc != -ENOENT && rc != -ENOMEM)
        wisp_pool_schedule(p);
    return rc;
}

/* Takes ownership of ev. */
void wisp_pool_finish(struct wisp_pool *p, struct fn *fn, struct pev *ev, struct wisp_result *res,
                      bool cold, uint64_t init_ns)
{
    enum wisp_apply applied = wisp_pool_apply(p, fn, ev, res, cold);
    if (applied == WISP_APPLY_RERUN) {
        fn->st.conflicts++;
        wisp_fn_push_front(fn, ev);
        return;
    }
    if (applied == WISP_APPLY_WAIT) {
        ev->not_before = wisp_mono_ns() + 500 * 1000000ULL;
        ev->next = fn->delayed;
        fn->delayed = ev;
        return;
    }
    wisp_fn_count(fn, res->outcome);
    if (res->outcome == WISP_OUTCOME_OK && applied != WISP_APPLY_PUBLISHED) {
        for (size_t i = 0; i < res->n_pubs; i++) {
            const struct wisp_publish *m = &res->pubs[i];
            const char *payload = m->payload;
            size_t len = m->payload_len;
            char *wrapped = NULL, id[64];
            if (fn->spec->envelope) {
                (void)snprintf(id, sizeof(id), "%s/%zu", ev->id, i);
                wrapped = wisp_pool_envelope(p, fn, id, m->topic, payload, len, &len);
                payload = wrapped ? wrapped : payload;
                len = wrapped ? len : m->payload_len;
            }
            int prc = p->hooks.publish(p->hooks.ud, m->topic, payload, len, m->qos, m->retain);
            free(wrapped);
            if (prc != 0 && fn->st.publish_failed++ % 1000 == 0)
                /* A full offline buffer fails every publish: log a sample. */
                log_error("%s: publishing to %s failed (%llu so far)", fn->spec->name, m->topic,
                          (unsigned long long)fn->st.publish_failed);
        }
    }
    wisp_pool_report(fn, ev, res, cold, init_ns);
    if (p->hooks.on_report)
        p->hooks.on_report(p->hooks.ud, fn->spec, ev->id, res);
    if (res->outcome == WISP_OUTCOME_OK || res->outcome == WISP_OUTCOME_REJECTED) {
        wisp_pev_free(ev);
        return;
    }
    ev->attempt++;
    if (ev->attempt <= fn->spec->retry_max) {
        /* Exponential backoff with +-25% jitter so retries of many events
         * do not arrive in lockstep. */
        uint64_t base = (uint64_t)fn->spec->retry_backoff_ms
                        << (ev->attempt - 1 < 20 ? ev->attempt - 1 : 20);
        uint64_t jitter = base / 2 ? (wisp_mono_ns() % (base / 2 + 1)) : 0;
        ev->not_before = wisp_mono_ns() + (base - base / 4 + jitter) * 1000000ULL;
        ev->next = fn->delayed;
        fn->delayed = ev;
        fn->st.retries++;
        return;
    }
    if (fn->spec->retry_max > 0 || fn->spec->retry_dead_letter)
        wisp_pool_dead_letter(p, fn, ev, res);
    wisp_pev_free(ev);
}

/* Moves due retries to the front of their queues (they were accepted before
 * anything now waiting) and reports the earliest still pending. */
static void due_retries(struct wisp_pool *p, uint64_t now, uint64_t *next)
{
    for (struct fn *fn = p->fns; fn; fn = fn->next) {
        struct pev **pp = &fn->delayed;
        while (*pp) {
            struct pev *ev = *pp;
            if (ev->not_before <= now) {
                *pp = ev->next;
                wisp_fn_push_front(fn, ev);
            } else {
                if (*next == 0 || ev->not_before < *next)
                    *next = ev->not_before;
                pp = &ev->next;
            }
        }
    }
}

int wisp_pool_next_timeout_ms(const struct wisp_pool *p, uint64_t now)
{
    uint64_t next = 0;
    for (const struct exe *e = p->exes; e; e = e->next) {
        uint64_t d = 0;
        if (e->state != EXE_IDLE)
            d = e->deadline_ns;
        else if (p->cfg.idle_timeout_ms)
            d = e->idle_since_ns + p->cfg.idle_timeout_ms * 1000000ULL;
        if (d && (next == 0 || d < next))
            next = d;
    }
    for (const struct fn *fn = p->fns; fn; fn = fn->next) {
        for (const struct pev *ev = fn->delayed; ev; ev = ev->next) {
            if (next == 0 || ev->not_before < next)
                next = ev->not_before;
        }
    }
    /* Work waiting with no executor at all (starting one failed): try
     * again shortly rather than waiting for an unrelated event. */
    for (const struct fn *fn = p->fns; fn; fn = fn->next) {
        uint64_t retry = now + 100000000ULL;
        if (fn->qhead && fn->n_exec == 0 && (next == 0 || retry < next))
            next = retry;
    }
    if (next == 0)
        return -1;
    if (next <= now)
        return 0;
    uint64_t ms = (next - now + 999999ULL) / 1000000ULL;
    return ms > 60000 ? 60000 : (int)ms;
}

void wisp_pool_tick(struct wisp_pool *p, uint64_t now)
{
    uint64_t next = 0;
    wisp_exe_tick(p, now, &next);
    due_retries(p, now, &next);
    wisp_pool_schedule(p);
}

bool wisp_pool_idle(const struct wisp_pool *p)
{
    if (p->exes) {
        for (const struct exe *e = p->exes; e; e = e->next) {
            if (e->state != EXE_IDLE)
                return false;
        }
    }
    for (const struct fn *fn = p->fns; fn; fn = fn->next) {
        if (fn->qhead || fn->delayed)
            return false;
    }
    return true;
}

size_t wisp_pool_abandon(struct wisp_pool *p)
{
    size_t n = 0;
    /* Executors first: stopping one puts the events queued behind its
     * running one back on the queue, which is emptied next. */
    struct exe *e = p->exes;
    while (e) {
        struct exe *next = e->next;
        if (e->state == EXE_BUSY)
            n++;
        if (e->state != EXE_IDLE)
            wisp_exe_stop(e, true, WISP_OUTCOME_REJECTED, "abandoned at shutdown");
        e = next;
    }
    for (struct fn *fn = p->fns; fn; fn = fn->next) {
        struct pev *ev;
        while ((ev = wisp_fn_pop(fn))) {
            wisp_pev_free(ev);
            n++;
        }
        while ((ev = fn->delayed)) {
            fn->delayed = ev->next;
            wisp_pev_free(ev);
            n++;
        }
    }
    return n;
}
