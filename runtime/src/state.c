#include "state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct wisp_state_entry {
    char *key;
    size_t klen;
    char *val; /* current value as this invocation sees it; NULL = absent */
    size_t vlen;
    uint64_t version; /* seen in the store (0 = absent), when fetched */
    bool fetched;     /* read from the store: a read to validate */
    bool dirty;       /* written by this invocation */
};

void wisp_state_init(struct wisp_state *st, wisp_state_rpc_fn rpc, void *ud)
{
    memset(st, 0, sizeof(*st));
    st->rpc = rpc;
    st->rpc_ud = ud;
    wisp_buf_init(&st->req);
    wisp_buf_init(&st->reply);
}

void wisp_state_reset(struct wisp_state *st)
{
    for (size_t i = 0; i < st->n; i++) {
        free(st->e[i].key);
        free(st->e[i].val);
    }
    st->n = 0;
    free(st->err);
    st->err = NULL;
}

void wisp_state_fini(struct wisp_state *st)
{
    wisp_state_reset(st);
    free(st->e);
    wisp_buf_fini(&st->req);
    wisp_buf_fini(&st->reply);
    memset(st, 0, sizeof(*st));
}

static void set_err(struct wisp_state *st, const char *msg)
{
    free(st->err);
    st->err = wisp_strndup(msg, strlen(msg));
}

static bool key_ok(const char *key, size_t klen)
{
    return key && klen > 0 && klen <= WISP_STATE_MAX_KEY;
}

static struct wisp_state_entry *find(struct wisp_state *st, const char *key, size_t klen)
{
    for (size_t i = 0; i < st->n; i++)
        if (st->e[i].klen == klen && memcmp(st->e[i].key, key, klen) == 0)
            return &st->e[i];
    return NULL;
}

static struct wisp_state_entry *add(struct wisp_state *st, const char *key, size_t klen, int *rc)
{
    if (st->n >= WISP_STATE_MAX_KEYS) {
        *rc = -E2BIG;
        return NULL;
    }
    if (st->n == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 8;
        struct wisp_state_entry *ne = realloc(st->e, ncap * sizeof(*ne));
        if (!ne) {
            *rc = -ENOMEM;
            return NULL;
        }
        st->e = ne;
        st->cap = ncap;
    }
    struct wisp_state_entry *e = &st->e[st->n];
    memset(e, 0, sizeof(*e));
    e->key = wisp_strndup(key, klen);
    if (!e->key) {
        *rc = -ENOMEM;
        return NULL;
    }
    e->klen = klen;
    st->n++;
    return e;
}

/* One request/reply exchange; the reply body is left in st->reply. */
static int call(struct wisp_state *st, enum wisp_state_op op, const char *key, size_t klen,
                uint32_t limit)
{
    if (!st->rpc)
        return -ENOTSUP;
    wisp_ipc_frame_begin(&st->req, WISP_IPC_STATE_REQ);
    wisp_buf_put_u32(&st->req, (uint32_t)op);
    wisp_buf_put_bytes(&st->req, key, klen);
    wisp_buf_put_u32(&st->req, limit);
    wisp_ipc_frame_end(&st->req);
    if (st->req.oom)
        return -ENOMEM;
    int rc = st->rpc(st->rpc_ud, &st->req, &st->reply);
    if (rc != 0)
        set_err(st, "the supervisor did not answer");
    return rc ? -EIO : 0;
}

/* Reads a reply's leading status: 0 or a negative errno. */
static int reply_status(struct wisp_state *st, struct wisp_rd *rd)
{
    rd->p = st->reply.data;
    rd->left = st->reply.len;
    rd->bad = false;
    uint32_t code = wisp_rd_u32(rd);
    if (rd->bad || code > 4095) {
        set_err(st, "malformed reply from the supervisor");
        return -EIO;
    }
    return -(int)code;
}

static int fetch(struct wisp_state *st, const char *key, size_t klen, struct wisp_state_entry **out)
{
    int rc = call(st, WISP_STATE_GET, key, klen, 0);
    if (rc != 0)
        return rc;
    struct wisp_rd rd;
    rc = reply_status(st, &rd);
    uint64_t version = 0;
    const char *v = NULL;
    size_t vlen = 0;
    if (rc == 0) {
        version = wisp_rd_u64(&rd);
        v = wisp_rd_bytes(&rd, &vlen);
        if (rd.bad || version == 0) {
            set_err(st, "malformed reply from the supervisor");
            return -EIO;
        }
    } else if (rc == -ENOTSUP) {
        set_err(st, "no state store is available here");
        return rc;
    } else if (rc != -ENOENT) {
        char msg[128];
        (void)snprintf(msg, sizeof(msg), "the store could not read the key: %s", strerror(-rc));
        set_err(st, msg);
        return -EIO;
    }
    struct wisp_state_entry *e = add(st, key, klen, &rc);
    if (!e)
        return rc;
    if (v) {
        e->val = wisp_strndup(v, vlen);
        if (!e->val) {
            free(e->key);
            st->n--;
            return -ENOMEM;
        }
        e->vlen = vlen;
    }
    e->version = version;
    e->fetched = true;
    *out = e;
    return 0;
}

int wisp_state_get(struct wisp_state *st, const char *key, size_t klen, const char **val,
                   size_t *vlen)
{
    if (!key_ok(key, klen))
        return -EINVAL;
    struct wisp_state_entry *e = find(st, key, klen);
    if (!e) {
        int rc = fetch(st, key, klen, &e);
        if (rc != 0)
            return rc;
    }
    if (!e->val)
        return -ENOENT;
    *val = e->val;
    *vlen = e->vlen;
    return 0;
}

int wisp_state_put(struct wisp_state *st, const char *key, size_t klen, const char *val,
                   size_t vlen)
{
    if (!key_ok(key, klen))
        return -EINVAL;
    if (val && vlen > WISP_STATE_MAX_VALUE)
        return -EFBIG;
    if (!st->rpc)
        return -ENOTSUP;
    char *copy = NULL;
    if (val && !(copy = wisp_strndup(val, vlen)))
        return -ENOMEM;
    int rc = 0;
    struct wisp_state_entry *e = find(st, key, klen);
    if (!e && !(e = add(st, key, klen, &rc))) {
        free(copy);
        return rc;
    }
    free(e->val);
    e->val = copy;
    e->vlen = val ? vlen : 0;
    e->dirty = true;
    return 0;
}

static int cmp_key(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

struct listing {
    const char **k;
    size_t *l;
    size_t n, cap;
};

static int listing_add(struct listing *ls, const char *k, size_t l)
{
    if (ls->n == ls->cap) {
        size_t ncap = ls->cap ? ls->cap * 2 : 16;
        const char **nk = realloc(ls->k, ncap * sizeof(*nk));
        if (!nk)
            return -ENOMEM;
        ls->k = nk;
        size_t *nl = realloc(ls->l, ncap * sizeof(*nl));
        if (!nl)
            return -ENOMEM;
        ls->l = nl;
        ls->cap = ncap;
    }
    ls->k[ls->n] = k;
    ls->l[ls->n++] = l;
    return 0;
}

static void listing_sort(struct listing *ls)
{
    /* Insertion sort: listings are small (at most a few thousand). */
    for (size_t i = 1; i < ls->n; i++) {
        const char *k = ls->k[i];
        size_t l = ls->l[i], j = i;
        while (j > 0 && cmp_key(ls->k[j - 1], ls->l[j - 1], k, l) > 0) {
            ls->k[j] = ls->k[j - 1];
            ls->l[j] = ls->l[j - 1];
            j--;
        }
        ls->k[j] = k;
        ls->l[j] = l;
    }
}

static bool has_prefix(const char *k, size_t kl, const char *p, size_t pl)
{
    return kl >= pl && memcmp(k, p, pl) == 0;
}

int wisp_state_keys(struct wisp_state *st, const char *prefix, size_t plen, size_t limit,
                    int (*cb)(void *ud, const char *key, size_t klen), void *ud)
{
    if (plen > WISP_STATE_MAX_KEY)
        return -EINVAL;
    if (limit == 0 || limit > WISP_STATE_MAX_LISTING)
        limit = WISP_STATE_MAX_LISTING;
    /* Ask for more than limit: our own deletes may remove some. */
    int rc = call(st, WISP_STATE_KEYS, prefix, plen, (uint32_t)(limit + st->n));
    if (rc != 0)
        return rc;
    struct wisp_rd rd;
    rc = reply_status(st, &rd);
    if (rc != 0) {
        if (rc != -EIO)
            set_err(st, "the store could not list the keys");
        return -EIO;
    }
    struct listing ls = {0};
    uint32_t n = wisp_rd_u32(&rd);
    for (uint32_t i = 0; i < n && !rd.bad && rc == 0; i++) {
        size_t kl;
        const char *k = wisp_rd_bytes(&rd, &kl);
        const struct wisp_state_entry *e = rd.bad ? NULL : find(st, k, kl);
        if (!rd.bad && !(e && e->dirty))
            rc = listing_add(&ls, k, kl);
    }
    if (rd.bad) {
        set_err(st, "malformed reply from the supervisor");
        rc = -EIO;
    }
    for (size_t i = 0; i < st->n && rc == 0; i++) {
        const struct wisp_state_entry *e = &st->e[i];
        if (e->dirty && e->val && has_prefix(e->key, e->klen, prefix, plen))
            rc = listing_add(&ls, e->key, e->klen);
    }
    if (rc == 0) {
        listing_sort(&ls);
        for (size_t i = 0; i < ls.n && i < limit && rc == 0; i++)
            rc = cb(ud, ls.k[i], ls.l[i]);
    }
    free(ls.k);
    free(ls.l);
    return rc;
}

bool wisp_state_used(const struct wisp_state *st)
{
    return st->n > 0;
}

void wisp_state_encode(const struct wisp_state *st, struct wisp_buf *b)
{
    uint32_t nr = 0, nw = 0;
    for (size_t i = 0; i < st->n; i++) {
        nr += st->e[i].fetched;
        nw += st->e[i].dirty;
    }
    wisp_buf_put_u32(b, nr);
    for (size_t i = 0; i < st->n; i++) {
        if (!st->e[i].fetched)
            continue;
        wisp_buf_put_bytes(b, st->e[i].key, st->e[i].klen);
        wisp_buf_put_u64(b, st->e[i].version);
    }
    wisp_buf_put_u32(b, nw);
    for (size_t i = 0; i < st->n; i++) {
        if (!st->e[i].dirty)
            continue;
        wisp_buf_put_bytes(b, st->e[i].key, st->e[i].klen);
        wisp_buf_put_u32(b, st->e[i].val != NULL);
        wisp_buf_put_bytes(b, st->e[i].val, st->e[i].vlen);
    }
}

int wisp_state_decode_req(struct wisp_rd *r, struct wisp_state_req *out)
{
    uint32_t op = wisp_rd_u32(r);
    out->key = wisp_rd_bytes(r, &out->klen);
    out->limit = wisp_rd_u32(r);
    if (r->bad || (op != WISP_STATE_GET && op != WISP_STATE_KEYS) ||
        out->klen > WISP_STATE_MAX_KEY || (op == WISP_STATE_GET && out->klen == 0))
        return -EPROTO;
    out->op = (enum wisp_state_op)op;
    return 0;
}

static uint32_t status_code(int status)
{
    return status < 0 && status > -4096 ? (uint32_t)-status : (status ? EIO : 0);
}

void wisp_state_encode_get_reply(struct wisp_buf *b, int status, const char *val, size_t vlen,
                                 uint64_t version)
{
    wisp_ipc_frame_append(b, WISP_IPC_STATE_REPLY);
    wisp_buf_put_u32(b, status_code(status));
    if (status == 0) {
        wisp_buf_put_u64(b, version);
        wisp_buf_put_bytes(b, val, vlen);
    }
    wisp_ipc_frame_end(b);
}

/* KEYS reply: [u32 status][u32 n][n keys]; status and n are patched in at
 * the end, at fixed offsets after the frame header. */
void wisp_state_keys_reply_begin(struct wisp_buf *b)
{
    wisp_ipc_frame_append(b, WISP_IPC_STATE_REPLY);
    wisp_buf_put_u32(b, 0);
    wisp_buf_put_u32(b, 0);
}

void wisp_state_keys_reply_add(struct wisp_buf *b, const char *key, size_t klen)
{
    wisp_buf_put_bytes(b, key, klen);
    if (b->oom)
        return;
    uint32_t n;
    char *at = b->data + b->frame_start + WISP_IPC_HEADER + 4;
    memcpy(&n, at, sizeof(n));
    n++;
    memcpy(at, &n, sizeof(n));
}

void wisp_state_keys_reply_end(struct wisp_buf *b, int status)
{
    if (!b->oom && status != 0) {
        /* An error: status only, no keys. */
        b->len = b->frame_start + WISP_IPC_HEADER;
        wisp_buf_put_u32(b, status_code(status));
        wisp_buf_put_u32(b, 0);
    }
    wisp_ipc_frame_end(b);
}
