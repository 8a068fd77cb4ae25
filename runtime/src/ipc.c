#include "ipc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "state.h"

#include "util.h"

void wisp_buf_init(struct wisp_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void wisp_buf_fini(struct wisp_buf *b)
{
    free(b->data);
    wisp_buf_init(b);
}

void wisp_buf_reset(struct wisp_buf *b)
{
    b->len = 0;
    b->oom = false;
}

void wisp_buf_put(struct wisp_buf *b, const void *p, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n)
            ncap *= 2;
        char *nd = realloc(b->data, ncap);
        if (!nd) {
            b->oom = true;
            return;
        }
        b->data = nd;
        b->cap = ncap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void wisp_buf_put_u32(struct wisp_buf *b, uint32_t v)
{
    wisp_buf_put(b, &v, sizeof(v));
}

void wisp_buf_put_u64(struct wisp_buf *b, uint64_t v)
{
    wisp_buf_put(b, &v, sizeof(v));
}

void wisp_buf_put_bytes(struct wisp_buf *b, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        b->oom = true;
        return;
    }
    wisp_buf_put_u32(b, (uint32_t)n);
    wisp_buf_put(b, p, n);
}

void wisp_buf_put_str(struct wisp_buf *b, const char *s)
{
    wisp_buf_put_bytes(b, s, s ? strlen(s) : 0);
}

void wisp_ipc_frame_append(struct wisp_buf *b, enum wisp_ipc_type type)
{
    uint8_t t = (uint8_t)type;
    b->frame_start = b->len;
    wisp_buf_put_u32(b, 0);
    wisp_buf_put(b, &t, 1);
}

void wisp_ipc_frame_begin(struct wisp_buf *b, enum wisp_ipc_type type)
{
    wisp_buf_reset(b);
    wisp_ipc_frame_append(b, type);
}

void wisp_ipc_frame_end(struct wisp_buf *b)
{
    if (b->oom || b->len < b->frame_start + WISP_IPC_HEADER)
        return;
    uint32_t body = (uint32_t)(b->len - b->frame_start - WISP_IPC_HEADER);
    memcpy(b->data + b->frame_start, &body, sizeof(body));
}

/* Copies n bytes out of the frame, or zeroes out and marks it bad. */
static void rd_fixed(struct wisp_rd *r, void *out, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
}

uint32_t wisp_rd_u32(struct wisp_rd *r)
{
    uint32_t v;
    rd_fixed(r, &v, sizeof(v));
    return v;
}

uint64_t wisp_rd_u64(struct wisp_rd *r)
{
    uint64_t v;
    rd_fixed(r, &v, sizeof(v));
    return v;
}

const char *wisp_rd_bytes(struct wisp_rd *r, size_t *n)
{
    uint32_t len = wisp_rd_u32(r);
    if (r->bad || r->left < len) {
        r->bad = true;
        *n = 0;
        return NULL;
    }
    const char *p = r->p;
    r->p += len;
    r->left -= len;
    *n = len;
    return p;
}

char *wisp_rd_strdup(struct wisp_rd *r)
{
    size_t n;
    const char *p = wisp_rd_bytes(r, &n);
    if (r->bad)
        return NULL;
    char *s = wisp_strndup(p, n);
    if (!s)
        r->bad = true;
    return s;
}

int wisp_ipc_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_exact(int fd, char *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EPIPE;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int wisp_ipc_read_frame(int fd, struct wisp_buf *b, enum wisp_ipc_type *type)
{
    char hdr[WISP_IPC_HEADER];
    int rc = read_exact(fd, hdr, sizeof(hdr));
    if (rc)
        return rc;
    uint32_t body;
    memcpy(&body, hdr, sizeof(body));
    if (body > WISP_IPC_MAX_FRAME)
        return -EPROTO;
    *type = (enum wisp_ipc_type)(uint8_t)hdr[4];
    wisp_buf_reset(b);
    if (body > b->cap) {
        char *nd = realloc(b->data, body);
        if (!nd)
            return -ENOMEM;
        b->data = nd;
        b->cap = body;
    }
    rc = read_exact(fd, b->data, body);
    if (rc)
        return rc;
    b->len = body;
    return 0;
}

void wisp_frame_reader_init(struct wisp_frame_reader *r, int fd)
{
    r->fd = fd;
    r->off = 0;
    wisp_buf_init(&r->buf);
}

void wisp_frame_reader_fini(struct wisp_frame_reader *r)
{
    wisp_buf_fini(&r->buf);
}

/* Makes room for at least `need` bytes in total after moving the unread
 * bytes to the front. */
static int reader_room(struct wisp_frame_reader *r, size_t need)
{
    if (r->off) {
        memmove(r->buf.data, r->buf.data + r->off, r->buf.len - r->off);
        r->buf.len -= r->off;
        r->off = 0;
    }
    if (need <= r->buf.cap && r->buf.cap - r->buf.len >= 4096)
        return 0;
    size_t ncap = r->buf.cap ? r->buf.cap : 65536;
    while (ncap < need || ncap - r->buf.len < 4096)
        ncap *= 2;
    char *nd = realloc(r->buf.data, ncap);
    if (!nd)
        return -ENOMEM;
    r->buf.data = nd;
    r->buf.cap = ncap;
    return 0;
}

int wisp_frame_reader_next(struct wisp_frame_reader *r, enum wisp_ipc_type *type,
                           struct wisp_rd *body)
{
    for (;;) {
        const char *p = r->buf.data + r->off;
        size_t have = r->buf.len - r->off;
        long n = wisp_ipc_frame_ready(p, have, type);
        if (n < 0)
            return -EPROTO;
        if (n > 0) {
            body->p = p + WISP_IPC_HEADER;
            body->left = (size_t)n - WISP_IPC_HEADER;
            body->bad = false;
            r->off += (size_t)n;
            return 0;
        }
        size_t need = WISP_IPC_HEADER;
        if (have >= WISP_IPC_HEADER) {
            uint32_t blen;
            memcpy(&blen, p, sizeof(blen));
            need += blen;
        }
        int rc = reader_room(r, need);
        if (rc)
            return rc;
        ssize_t got = read(r->fd, r->buf.data + r->buf.len, r->buf.cap - r->buf.len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -errno;
        if (got == 0)
            return -EPIPE;
        r->buf.len += (size_t)got;
    }
}

long wisp_ipc_frame_ready(const char *p, size_t n, enum wisp_ipc_type *type)
{
    if (n < WISP_IPC_HEADER)
        return 0;
    uint32_t body;
    memcpy(&body, p, sizeof(body));
    if (body > WISP_IPC_MAX_FRAME)
        return -EPROTO;
    if (n < WISP_IPC_HEADER + (size_t)body)
        return 0;
    *type = (enum wisp_ipc_type)(uint8_t)p[4];
    return (long)(WISP_IPC_HEADER + body);
}

void wisp_ipc_encode_load(struct wisp_buf *b, const struct wisp_fnspec *spec)
{
    wisp_ipc_frame_begin(b, WISP_IPC_LOAD);
    wisp_buf_put_str(b, spec->name);
    wisp_buf_put_str(b, spec->version);
    wisp_buf_put_str(b, spec->dir);
    wisp_buf_put_str(b, spec->handler);
    wisp_buf_put_u32(b, (uint32_t)spec->runtime);
    wisp_buf_put_u32(b, spec->memory_kb);
    wisp_buf_put_u32(b, spec->timeout_ms);
    wisp_buf_put_u32(b, (uint32_t)spec->n_env);
    for (size_t i = 0; i < spec->n_env; i++) {
        wisp_buf_put_str(b, spec->env[i].key);
        wisp_buf_put_str(b, spec->env[i].value);
    }
    wisp_ipc_frame_end(b);
}

int wisp_ipc_decode_load(struct wisp_rd *r, struct wisp_fnspec **out)
{
    struct wisp_fnspec *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->name = wisp_rd_strdup(r);
    s->version = wisp_rd_strdup(r);
    s->dir = wisp_rd_strdup(r);
    s->handler = wisp_rd_strdup(r);
    s->runtime = (enum wisp_runtime)wisp_rd_u32(r);
    s->memory_kb = wisp_rd_u32(r);
    s->timeout_ms = wisp_rd_u32(r);
    s->concurrency = 1;
    uint32_t n_env = wisp_rd_u32(r);
    if (!r->bad && n_env <= WISP_MAX_ENV && n_env) {
        s->env = calloc(n_env, sizeof(*s->env));
        if (!s->env)
            r->bad = true;
        for (uint32_t i = 0; !r->bad && i < n_env; i++) {
            s->env[i].key = wisp_rd_strdup(r);
            s->env[i].value = wisp_rd_strdup(r);
            s->n_env = i + 1;
        }
    } else if (n_env > WISP_MAX_ENV) {
        r->bad = true;
    }
    if (!r->bad)
        s->origin = wisp_path_join(s->dir, "function.json");
    if (r->bad || !s->origin) {
        wisp_fnspec_destroy(s);
        return -EPROTO;
    }
    *out = s;
    return 0;
}

void wisp_ipc_encode_loaded(struct wisp_buf *b, int status, const char *err, uint64_t init_ns,
                            uint64_t mem_bytes)
{
    wisp_ipc_frame_begin(b, WISP_IPC_LOADED);
    wisp_buf_put_u32(b, (uint32_t)status);
    wisp_buf_put_str(b, err);
    wisp_buf_put_u64(b, init_ns);
    wisp_buf_put_u64(b, mem_bytes);
    wisp_ipc_frame_end(b);
}

int wisp_ipc_decode_loaded(struct wisp_rd *r, struct wisp_ipc_loaded *out)
{
    out->status = (int)wisp_rd_u32(r);
    out->err = wisp_rd_strdup(r);
    out->init_ns = wisp_rd_u64(r);
    out->mem_bytes = wisp_rd_u64(r);
    if (r->bad) {
        free(out->err);
        out->err = NULL;
        return -EPROTO;
    }
    return 0;
}

/* Optional strings (subject) travel with a presence flag so NULL survives. */
static void put_opt_str(struct wisp_buf *b, const char *s)
{
    wisp_buf_put_u32(b, s != NULL);
    wisp_buf_put_str(b, s);
}

/* Returns a malloc'd copy, or NULL when absent (or on error: r->bad). */
static char *rd_opt_strdup(struct wisp_rd *r)
{
    uint32_t present = wisp_rd_u32(r);
    char *s = wisp_rd_strdup(r);
    if (!present) {
        free(s);
        return NULL;
    }
    return s;
}

void wisp_ipc_encode_invoke(struct wisp_buf *b, uint64_t seq, const struct wisp_event *ev)
{
    wisp_buf_reset(b);
    wisp_ipc_append_invoke(b, seq, ev);
}

void wisp_ipc_append_invoke(struct wisp_buf *b, uint64_t seq, const struct wisp_event *ev)
{
    wisp_ipc_frame_append(b, WISP_IPC_INVOKE);
    wisp_buf_put_u64(b, seq);
    /* Strings are sent with their NUL so the executor can borrow them as C strings. */
    wisp_buf_put_bytes(b, ev->id, strlen(ev->id) + 1);
    wisp_buf_put_bytes(b, ev->source, strlen(ev->source) + 1);
    wisp_buf_put_bytes(b, ev->type, strlen(ev->type) + 1);
    wisp_buf_put_bytes(b, ev->time, strlen(ev->time) + 1);
    wisp_buf_put_u32(b, ev->subject != NULL);
    wisp_buf_put_bytes(b, ev->subject ? ev->subject : "",
                       ev->subject ? strlen(ev->subject) + 1 : 1);
    wisp_buf_put_bytes(b, ev->payload, ev->payload_len);
    wisp_buf_put_u32(b, (uint32_t)ev->qos);
    wisp_buf_put_u32(b, (uint32_t)ev->retain);
    wisp_ipc_frame_end(b);
}

/* Reads a string that was sent with its terminating NUL. */
static const char *rd_cstr(struct wisp_rd *r)
{
    size_t n;
    const char *p = wisp_rd_bytes(r, &n);
    if (r->bad || n == 0 || p[n - 1] != '\0') {
        r->bad = true;
        return "";
    }
    return p;
}

int wisp_ipc_decode_invoke(struct wisp_rd *r, uint64_t *seq, struct wisp_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    *seq = wisp_rd_u64(r);
    ev->id = rd_cstr(r);
    ev->source = rd_cstr(r);
    ev->type = rd_cstr(r);
    ev->time = rd_cstr(r);
    uint32_t has_subject = wisp_rd_u32(r);
    const char *subject = rd_cstr(r);
    ev->subject = has_subject ? subject : NULL;
    ev->payload = wisp_rd_bytes(r, &ev->payload_len);
    ev->qos = (int)wisp_rd_u32(r);
    ev->retain = (int)wisp_rd_u32(r);
    return r->bad ? -EPROTO : 0;
}

void wisp_ipc_encode_result(struct wisp_buf *b, uint64_t seq, const struct wisp_result *res,
                            bool recycled)
{
    wisp_ipc_frame_begin(b, WISP_IPC_RESULT);
    wisp_buf_put_u64(b, seq);
    wisp_buf_put_u32(b, (uint32_t)res->outcome);
    put_opt_str(b, res->error);
    wisp_buf_put_u64(b, res->duration_ns);
    wisp_buf_put_u64(b, res->mem_peak_bytes);
    wisp_buf_put_u32(b, recycled);
    wisp_buf_put_u32(b, (uint32_t)res->n_pubs);
    for (size_t i = 0; i < res->n_pubs; i++) {
        /* The topic travels with its NUL so the supervisor can use it in place. */
        wisp_buf_put_bytes(b, res->pubs[i].topic, strlen(res->pubs[i].topic) + 1);
        wisp_buf_put_bytes(b, res->pubs[i].payload, res->pubs[i].payload_len);
        wisp_buf_put_u32(b, (uint32_t)res->pubs[i].qos);
        wisp_buf_put_u32(b, (uint32_t)res->pubs[i].retain);
    }
    if (res->state && res->outcome == WISP_OUTCOME_OK) {
        wisp_state_encode(res->state, b);
    } else {
        wisp_buf_put_u32(b, 0); /* reads */
        wisp_buf_put_u32(b, 0); /* writes */
    }
    wisp_ipc_frame_end(b);
}

/* The state section of a RESULT: reads (key, version) and writes (key,
 * present, value), views into the frame. */
static void decode_state(struct wisp_rd *r, struct wisp_result *res)
{
    uint32_t nr = wisp_rd_u32(r);
    if (nr > WISP_STATE_MAX_KEYS)
        r->bad = true;
    if (!r->bad && nr) {
        res->reads = calloc(nr, sizeof(*res->reads));
        r->bad = !res->reads;
    }
    for (uint32_t i = 0; i < nr && !r->bad; i++) {
        struct wisp_state_read *rd = &res->reads[res->n_reads++];
        rd->key = wisp_rd_bytes(r, &rd->klen);
        rd->version = wisp_rd_u64(r);
    }
    uint32_t nw = wisp_rd_u32(r);
    if (nw > WISP_STATE_MAX_KEYS)
        r->bad = true;
    if (!r->bad && nw) {
        res->writes = calloc(nw, sizeof(*res->writes));
        r->bad = !res->writes;
    }
    for (uint32_t i = 0; i < nw && !r->bad; i++) {
        struct wisp_state_write *w = &res->writes[res->n_writes++];
        w->key = wisp_rd_bytes(r, &w->klen);
        bool present = wisp_rd_u32(r) != 0;
        const char *v = wisp_rd_bytes(r, &w->vlen);
        w->val = present ? v : NULL;
        if (w->klen == 0 || w->klen > WISP_STATE_MAX_KEY || w->vlen > WISP_STATE_MAX_VALUE)
            r->bad = true;
    }
}

int wisp_ipc_decode_result(struct wisp_rd *r, uint64_t *seq, struct wisp_result *res,
                           bool *recycled)
{
    wisp_result_init(res);
    *seq = wisp_rd_u64(r);
    uint32_t outcome = wisp_rd_u32(r);
    res->error = rd_opt_strdup(r);
    res->duration_ns = wisp_rd_u64(r);
    res->mem_peak_bytes = wisp_rd_u64(r);
    *recycled = wisp_rd_u32(r) != 0;
    uint32_t n = wisp_rd_u32(r);
    if (outcome > WISP_OUTCOME_REJECTED || n > WISP_MAX_PUBLISHES_PER_INVOCATION)
        r->bad = true;
    res->outcome = (enum wisp_outcome)outcome;
    /* Publishes are borrowed from the frame: no copy on the hot path. */
    res->borrowed = true;
    if (!r->bad && n) {
        res->pubs = calloc(n, sizeof(*res->pubs));
        if (!res->pubs)
            r->bad = true;
        res->cap_pubs = n;
    }
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        size_t tl, pl;
        const char *t = rd_cstr(r);
        tl = strlen(t);
        const char *p = wisp_rd_bytes(r, &pl);
        uint32_t qos = wisp_rd_u32(r);
        uint32_t retain = wisp_rd_u32(r);
        if (r->bad || qos > 2 || tl == 0 || res->pub_bytes + tl + pl > WISP_MAX_PUBLISH_BYTES) {
            r->bad = true;
            break;
        }
        struct wisp_publish *m = &res->pubs[res->n_pubs++];
        m->topic = (char *)t;
        m->payload = (char *)p;
        m->payload_len = pl;
        m->qos = (int)qos;
        m->retain = (int)retain;
        res->pub_bytes += tl + pl;
    }
    if (!r->bad)
        decode_state(r, res);
    if (r->bad) {
        wisp_result_fini(res);
        return -EPROTO;
    }
    return 0;
}
