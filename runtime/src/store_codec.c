/* The store's record formats (see store_internal.h), the meter JSON and
 * byte helpers. Every decoder checks bounds: a damaged record is reported
 * as such, never read past its end. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meter.h"
#include "store_internal.h"
#include "util.h"

#define REC_V1 1
#define REC_V2 2 /* metering records with mem_limit_kb and the chain */

void st_be64_put(unsigned char *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        b[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

uint64_t st_be64_get(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | b[i];
    return v;
}

void st_be32_put(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

uint32_t st_be32_get(const unsigned char *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* ---- building ---- */

void st_buf_reset(struct st_buf *b)
{
    b->len = 0;
    b->oom = false;
}

void st_buf_free(struct st_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

bool st_buf_reserve(struct st_buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (more <= b->cap - b->len)
        return true;
    if (more > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < more)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void st_buf_add(struct st_buf *b, const void *d, size_t n)
{
    if (!n || !st_buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

void st_buf_u8(struct st_buf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    st_buf_add(b, &c, 1);
}

void st_buf_u32(struct st_buf *b, uint32_t v)
{
    unsigned char x[4];
    st_be32_put(x, v);
    st_buf_add(b, x, sizeof(x));
}

void st_buf_u64(struct st_buf *b, uint64_t v)
{
    unsigned char x[8];
    st_be64_put(x, v);
    st_buf_add(b, x, sizeof(x));
}

/* Lengths are u32: the callers limit everything far below 4 GiB. */
static void buf_blob(struct st_buf *b, const void *d, size_t n)
{
    if (n > UINT32_MAX) {
        b->oom = true;
        return;
    }
    st_buf_u32(b, (uint32_t)n);
    st_buf_add(b, d, n);
}

void st_buf_str(struct st_buf *b, const char *s)
{
    if (!s)
        s = "";
    buf_blob(b, s, strlen(s));
    st_buf_u8(b, 0);
}

void st_buf_cstr(struct st_buf *b, const char *s)
{
    st_buf_add(b, s, strlen(s));
}

static void buf_var(struct st_buf *b, uint64_t v)
{
    unsigned char x[10];
    size_t n = 0;
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        x[n++] = v ? (unsigned char)(c | 0x80) : c;
    } while (v);
    st_buf_add(b, x, n);
}

static void buf_vstr(struct st_buf *b, const char *s)
{
    if (!s)
        s = "";
    size_t n = strlen(s);
    buf_var(b, n);
    st_buf_add(b, s, n);
}

/* ---- reading ---- */

static const unsigned char *rd_take(struct st_rd *r, size_t n)
{
    if (r->bad || n > r->n - r->off) {
        r->bad = true;
        return NULL;
    }
    const unsigned char *p = r->p + r->off;
    r->off += n;
    return p;
}

unsigned st_rd_u8(struct st_rd *r)
{
    const unsigned char *p = rd_take(r, 1);
    return p ? *p : 0;
}

uint32_t st_rd_u32(struct st_rd *r)
{
    const unsigned char *p = rd_take(r, 4);
    return p ? st_be32_get(p) : 0;
}

const void *st_rd_blob(struct st_rd *r, size_t *len)
{
    size_t n = st_rd_u32(r);
    const unsigned char *p = rd_take(r, n);
    *len = p ? n : 0;
    return p;
}

const char *st_rd_str(struct st_rd *r, size_t *len)
{
    size_t n = 0;
    const char *s = st_rd_blob(r, &n);
    const unsigned char *nul = rd_take(r, 1);
    if (!s || !nul || *nul != 0 || memchr(s, 0, n)) {
        r->bad = true;
        return NULL;
    }
    if (len)
        *len = n;
    return s;
}

static uint64_t rd_var(struct st_rd *r)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        const unsigned char *p = rd_take(r, 1);
        if (!p)
            return 0;
        v |= (uint64_t)(*p & 0x7f) << shift;
        if (!(*p & 0x80))
            return v;
    }
    r->bad = true;
    return 0;
}

static const char *rd_vstr(struct st_rd *r, size_t *len)
{
    uint64_t n = rd_var(r);
    if (n > SIZE_MAX) {
        r->bad = true;
        return NULL;
    }
    const unsigned char *p = rd_take(r, (size_t)n);
    *len = p ? (size_t)n : 0;
    return (const char *)p;
}

/* ---- inbox and dead letters ---- */

void st_inbox_encode(struct st_buf *b, const struct wisp_inbox_rec *rec, uint32_t attempts)
{
    st_buf_u8(b, REC_V1);
    st_buf_u8(b, (unsigned)rec->qos);
    st_buf_u8(b, rec->retain ? 1 : 0);
    st_buf_u8(b, rec->subject ? 1 : 0);
    st_buf_u32(b, attempts);
    st_buf_str(b, rec->fn);
    st_buf_str(b, rec->event_id);
    st_buf_str(b, rec->time);
    st_buf_str(b, rec->type);
    st_buf_str(b, rec->subject);
    buf_blob(b, rec->payload, rec->payload ? rec->payload_len : 0);
}

bool st_inbox_decode(struct st_rd *r, struct wisp_inbox_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
    if (st_rd_u8(r) != REC_V1)
        return false;
    rec->qos = (int)st_rd_u8(r);
    rec->retain = (int)st_rd_u8(r);
    unsigned flags = st_rd_u8(r);
    rec->attempts = st_rd_u32(r);
    rec->fn = st_rd_str(r, NULL);
    rec->event_id = st_rd_str(r, NULL);
    rec->time = st_rd_str(r, NULL);
    rec->type = st_rd_str(r, NULL);
    rec->subject = st_rd_str(r, NULL);
    rec->payload = st_rd_blob(r, &rec->payload_len);
    if (!(flags & 1))
        rec->subject = NULL;
    return !r->bad;
}

void st_dlq_encode(struct st_buf *b, const struct wisp_dlq_rec *d)
{
    st_inbox_encode(b, d->event, d->event->attempts);
    st_buf_str(b, d->error);
    st_buf_str(b, d->last_time);
}

bool st_dlq_decode(const void *p, size_t n, struct wisp_dlq_view *v)
{
    struct st_rd r = {p, n, 0, false};
    memset(v, 0, sizeof(*v));
    if (!st_inbox_decode(&r, &v->event))
        return false;
    v->error = st_rd_str(&r, NULL);
    v->last_time = st_rd_str(&r, NULL);
    return !r.bad;
}

/* ---- outbox ---- */

uint64_t st_out_msg_bytes(const struct wisp_out_msg *m)
{
    return (uint64_t)strlen(m->topic) + (uint64_t)m->len + (uint64_t)strlen(m->msg_id);
}

void st_out_encode(struct st_buf *b, const struct wisp_out_msg *m)
{
    st_buf_u8(b, REC_V1);
    st_buf_u8(b, (unsigned)m->qos);
    st_buf_u8(b, m->retain ? 1 : 0);
    st_buf_u8(b, 0);
    st_buf_str(b, m->topic);
    st_buf_str(b, m->msg_id);
    buf_blob(b, m->payload, m->payload ? m->len : 0);
}

bool st_out_decode(const void *p, size_t n, struct wisp_out_view *v)
{
    struct st_rd r = {p, n, 0, false};
    uint64_t seq = v->seq;
    memset(v, 0, sizeof(*v));
    v->seq = seq;
    if (st_rd_u8(&r) != REC_V1)
        return false;
    v->qos = (int)st_rd_u8(&r);
    v->retain = (int)st_rd_u8(&r);
    (void)st_rd_u8(&r);
    v->topic = st_rd_str(&r, NULL);
    v->msg_id = st_rd_str(&r, NULL);
    v->payload = st_rd_blob(&r, &v->len);
    return !r.bad;
}

bool st_out_rec_bytes(const void *p, size_t n, uint64_t *bytes)
{
    struct wisp_out_view v = {0};
    if (!st_out_decode(p, n, &v))
        return false;
    *bytes = (uint64_t)strlen(v.topic) + (uint64_t)v.len + (uint64_t)strlen(v.msg_id);
    return true;
}

/* ---- metering ---- */

void st_meter_encode(struct st_buf *b, const struct wisp_meter_rec *m, const char *fn,
                     const unsigned char prev[32], const unsigned char hash[32])
{
    st_buf_u8(b, REC_V2);
    st_buf_u8(b, m->cold ? 1 : 0);
    buf_var(b, m->billed_ms);
    buf_var(b, m->duration_us);
    buf_var(b, m->mem_peak_bytes);
    buf_var(b, m->bytes_in);
    buf_var(b, m->bytes_out);
    buf_vstr(b, m->fn ? m->fn : fn);
    buf_vstr(b, m->version);
    buf_vstr(b, m->event_id);
    buf_vstr(b, m->time);
    buf_vstr(b, m->outcome);
    buf_var(b, m->mem_limit_kb);
    st_buf_add(b, prev, 32);
    st_buf_add(b, hash, 32);
}

/* A JSON string. Text that is not valid UTF-8 has its high bytes written
 * as \u00XX so the output always parses. */
static void json_str(struct st_buf *b, const char *s, size_t n)
{
    bool utf8 = wisp_utf8_valid(s, n);
    st_buf_u8(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            st_buf_add(b, esc, 2);
        } else if (c == '\n') {
            st_buf_add(b, "\\n", 2);
        } else if (c == '\t') {
            st_buf_add(b, "\\t", 2);
        } else if (c == '\r') {
            st_buf_add(b, "\\r", 2);
        } else if (c < 0x20 || (c >= 0x80 && !utf8)) {
            (void)snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)c);
            st_buf_add(b, esc, 6);
        } else {
            st_buf_u8(b, c);
        }
    }
    st_buf_u8(b, '"');
}

static void json_num(struct st_buf *b, const char *name, uint64_t v)
{
    char num[48];
    int n = snprintf(num, sizeof(num), ",\"%s\":%" PRIu64, name, v);
    if (n > 0 && (size_t)n < sizeof(num))
        st_buf_add(b, num, (size_t)n);
}

static void json_field(struct st_buf *b, const char *name, const char *s, size_t n)
{
    st_buf_u8(b, ',');
    json_str(b, name, strlen(name));
    st_buf_u8(b, ':');
    json_str(b, s, n);
}

bool st_meter_json(struct st_buf *b, uint64_t seq, const void *p, size_t n)
{
    struct st_rd r = {p, n, 0, false};
    uint64_t nums[5];
    const char *strs[5];
    size_t lens[5];
    st_buf_reset(b);
    unsigned format = st_rd_u8(&r);
    if (format != REC_V1 && format != REC_V2)
        return false;
    unsigned flags = st_rd_u8(&r);
    for (size_t i = 0; i < 5; i++)
        nums[i] = rd_var(&r);
    for (size_t i = 0; i < 5; i++)
        strs[i] = rd_vstr(&r, &lens[i]);
    uint64_t mem_limit_kb = 0;
    char prev[65], hash[65];
    if (format == REC_V2) {
        mem_limit_kb = rd_var(&r);
        const unsigned char *ph = rd_take(&r, 32), *h = rd_take(&r, 32);
        if (ph && h) {
            wisp_meter_hex(ph, prev);
            wisp_meter_hex(h, hash);
        }
    }
    if (r.bad)
        return false;
    char head[40];
    int hn = snprintf(head, sizeof(head), "{\"seq\":%" PRIu64, seq);
    if (hn <= 0 || (size_t)hn >= sizeof(head))
        return false;
    st_buf_add(b, head, (size_t)hn);
    json_field(b, "fn", strs[0], lens[0]);
    json_field(b, "version", strs[1], lens[1]);
    json_field(b, "event_id", strs[2], lens[2]);
    json_field(b, "time", strs[3], lens[3]);
    json_num(b, "billed_ms", nums[0]);
    json_num(b, "duration_us", nums[1]);
    json_num(b, "mem_peak_bytes", nums[2]);
    json_num(b, "bytes_in", nums[3]);
    json_num(b, "bytes_out", nums[4]);
    json_field(b, "outcome", strs[4], lens[4]);
    st_buf_cstr(b, (flags & 1) ? ",\"cold\":true" : ",\"cold\":false");
    if (format == REC_V2) {
        json_num(b, "mem_limit_kb", mem_limit_kb);
        json_field(b, "prev", prev, 64);
        json_field(b, "hash", hash, 64);
    }
    st_buf_u8(b, '}');
    st_buf_u8(b, 0); /* a NUL after the text, not counted */
    if (b->oom)
        return false;
    b->len--;
    return true;
}

void st_fmt_key(char *out, size_t cap, const char *k, size_t klen)
{
    size_t o = 0;
    if (!cap)
        return;
    for (size_t i = 0; i < klen; i++) {
        unsigned char c = (unsigned char)k[i];
        if (o + 8 >= cap) {
            if (o + 4 <= cap) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            out[o++] = (char)c;
        } else {
            int n = snprintf(out + o, cap - o, "\\x%02x", (unsigned)c);
            if (n > 0)
                o += (size_t)n;
        }
    }
    out[o < cap ? o : cap - 1] = '\0';
}
