/*
 * libFuzzer target for the fleet protocol's parsers of untrusted input
 * (cloud-sync/README.md "Fleet protocol"). The first byte chooses the
 * parser, the rest is the message:
 *
 *   device side (cloud-sync/agent/)
 *     0  desired state            agent_desired_parse
 *     1  metering ack             agent_meter_parse_ack
 *     2  signed bundle framing    agent_bundle_split (next byte: max_bundle_kb)
 *     3  active.json              agent_state_from_json, and back
 *   control plane (cloud-sync/server/), through cloud_handle_message on an
 *   in-memory fleet over a stub store (next byte: flags, see FL_*)
 *     4  hello   5  status   6  reported   7  meter batch
 *     8  selector                 cloud_selector_parse, and back
 *
 * Bundle manifests (common/bundle.c) are only read from files: not here.
 * Set WISP_FUZZ_LOG=1 to see the parsers' log lines.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "agent_internal.h"
#include "cloud.h"
#include "config.h"
#include "log.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

enum {
    P_DESIRED,
    P_ACK,
    P_BUNDLE,
    P_ACTIVE,
    P_HELLO,
    P_STATUS,
    P_REPORTED,
    P_METER,
    P_SELECTOR,
    P_COUNT
};

/* Flags byte of the control-plane messages. */
#define FL_TOKEN    0x01u /* the fleet requires the token "fleet-secret" */
#define FL_RETAINED 0x02u /* the message came retained */
#define FL_TOPIC    0x04u /* the topic is the payload's first line */
#define FL_PUT_FAIL 0x08u /* the store's writes fail (-ENOSPC) */
#define FL_KNOWN    0x10u /* gw-1 registered (with labels) before the message */

/* A refusal always says why. (It may quote the bad input, control bytes
 * and all: the log and JSON writers escape them.) */
static void check_err(const char *err)
{
    if (!err[0])
        abort();
}

/* A NUL-terminated copy (the parsers take JSON with a length, but the
 * selector and topics are C strings). */
static char *cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
    }
    return s;
}

/* ---- device side ---- */

static void fuzz_desired(const uint8_t *data, size_t size)
{
    struct agent_desired d;
    char err[512] = "";
    int rc = agent_desired_parse((const char *)data, size, &d, err, sizeof(err));
    if (rc != 0) {
        if ((rc != -EINVAL && rc != -ENOMEM) || d.fns || d.rollout || d.n)
            abort();
        check_err(err);
        return;
    }
    if (d.generation > (1ULL << 53) || d.n > AGENT_MAX_FNS || (d.n && !d.fns) ||
        (d.rollout && strlen(d.rollout) > 128))
        abort();
    if (d.has_health && (d.min_invocations < 1 || d.min_invocations > 1000000 ||
                         !(d.max_error_rate >= 0 && d.max_error_rate <= 1)))
        abort();
    for (size_t i = 0; i < d.n; i++) {
        const struct agent_desired_fn *f = &d.fns[i];
        if (!agent_name_valid(f->name) || !agent_sha_valid(f->bundle) ||
            (f->version && strlen(f->version) > 64))
            abort();
        for (size_t j = 0; j < i; j++)
            if (strcmp(d.fns[j].name, f->name) == 0)
                abort();
    }
    agent_desired_fini(&d);
}

static void fuzz_ack(const uint8_t *data, size_t size)
{
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    if (!root)
        return;
    uint64_t upto = 0;
    const char *error = NULL, *field = NULL;
    int rc = agent_meter_parse_ack(root, &upto, &error, &field);
    if (rc == 0) {
        if (upto > (1ULL << 53) || !cJSON_IsObject(root))
            abort();
        if (error)
            (void)strlen(error);
    } else if (rc != -EINVAL || !field || !field[0]) {
        abort();
    }
    cJSON_Delete(root);
}

static void fuzz_bundle(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    struct wisp_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.cloud_max_bundle_kb = data[0] % 4; /* 0..3 KiB: the size limit is reachable */
    struct wisp_agent a;
    memset(&a, 0, sizeof(a));
    a.cfg = &cfg;
    const unsigned char *msg = data + 1, *sig = NULL, *bundle = NULL;
    size_t len = size - 1, siglen = 0, blen = 0;
    /* A copy of exactly len bytes, so that ASan sees any read past it. */
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return;
    memcpy(copy, msg, len);
    char err[512] = "";
    int rc = agent_bundle_split(&a, copy, len, &sig, &siglen, &bundle, &blen, err, sizeof(err));
    if (rc == 0) {
        if (len < 12 || memcmp(copy, "WISPSIGB", 8) != 0 || sig != copy + 12 ||
            siglen > AGENT_MAX_SIG || bundle != sig + siglen || blen == 0 ||
            bundle + blen != copy + len || blen > (size_t)cfg.cloud_max_bundle_kb * 1024u)
            abort();
    } else {
        if (rc != -EBADMSG && rc != -EFBIG)
            abort();
        check_err(err);
    }
    free(copy);
}

static void fuzz_active(const uint8_t *data, size_t size)
{
    struct agent_state st, st2;
    agent_state_init(&st, 10, 0.5);
    char err[512] = "";
    int rc = agent_state_from_json((const char *)data, size, "active.json", &st, err, sizeof(err));
    if (rc != 0) {
        if (rc != -EINVAL && rc != -ENOMEM)
            abort();
        check_err(err);
        agent_state_fini(&st);
        return;
    }
    for (size_t i = 0; i < st.n; i++) {
        const struct agent_fn *f = &st.fns[i];
        if (!agent_name_valid(f->name) || (f->bundle[0] && !agent_sha_valid(f->bundle)) ||
            f->n_bad > AGENT_MAX_BAD)
            abort();
    }
    /* What the agent writes, it reads back the same. */
    char *j1 = agent_state_to_json(&st);
    if (j1) {
        agent_state_init(&st2, 10, 0.5);
        if (agent_state_from_json(j1, strlen(j1), "active.json", &st2, err, sizeof(err)) != 0)
            abort();
        char *j2 = agent_state_to_json(&st2);
        if (j2 && strcmp(j1, j2) != 0)
            abort();
        free(j2);
        agent_state_fini(&st2);
    }
    free(j1);
    agent_state_fini(&st);
}

/* ---- control plane ---- */

static unsigned store_flags;
static char stub_txn_obj; /* what the stub's txn pointers point at */
#define stub_txn ((struct cloud_txn *)(void *)&stub_txn_obj)

static int stub_begin(struct cloud_store *s, struct cloud_txn *parent, bool write,
                      struct cloud_txn **out)
{
    (void)s, (void)parent, (void)write;
    *out = stub_txn;
    return 0;
}
static int stub_commit(struct cloud_txn *t)
{
    (void)t;
    return 0;
}
static void stub_abort(struct cloud_txn *t)
{
    (void)t;
}
static int stub_get(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen,
                    const void **val, size_t *vlen)
{
    (void)t, (void)tbl, (void)key, (void)klen, (void)val, (void)vlen;
    return -ENOENT;
}
static int stub_put(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen,
                    const void *val, size_t vlen)
{
    (void)t, (void)tbl, (void)key, (void)val, (void)vlen;
    if (klen == 0 || tbl >= CLOUD_T_COUNT)
        abort();
    return store_flags & FL_PUT_FAIL ? -ENOSPC : 0;
}
static int stub_del(struct cloud_txn *t, enum cloud_table tbl, const void *key, size_t klen)
{
    (void)t, (void)tbl, (void)key, (void)klen;
    return 0;
}
static int stub_scan(struct cloud_txn *t, enum cloud_table tbl, const void *from, size_t flen,
                     cloud_store_scan_cb cb, void *ud)
{
    (void)t, (void)tbl, (void)from, (void)flen, (void)cb, (void)ud;
    return 0;
}
static int stub_grow(struct cloud_store *s)
{
    (void)s;
    return -ENOSPC;
}
static void stub_close(struct cloud_store *s)
{
    (void)s;
}

static const struct cloud_store_ops stub_ops = {
    .name = "fuzz",
    .begin = stub_begin,
    .commit = stub_commit,
    .abort = stub_abort,
    .get = stub_get,
    .put = stub_put,
    .del = stub_del,
    .scan = stub_scan,
    .grow = stub_grow,
    .close = stub_close,
};
static struct cloud_store stub_store = {.ops = &stub_ops};

static void check_fleet(const struct cloud *c)
{
    for (size_t i = 0; i < c->ndevs; i++) {
        const struct cloud_device *d = c->devs[i];
        if (!cloud_device_id_valid(d->id, strlen(d->id)) || !cJSON_IsObject(d->labels) ||
            (d->reported && !cJSON_IsObject(d->reported)) ||
            (i > 0 && strcmp(c->devs[i - 1]->id, d->id) >= 0))
            abort();
    }
    for (const struct cloud_pub *p = c->pubs; p; p = p->next) {
        /* Acks must be JSON objects the agent's own parser takes. */
        cJSON *j = cJSON_ParseWithLength(p->payload, p->len);
        uint64_t upto;
        const char *error, *field;
        if (strncmp(p->topic, "wisp/v1/", 8) != 0 || !j ||
            agent_meter_parse_ack(j, &upto, &error, &field) != 0)
            abort();
        cJSON_Delete(j);
    }
}

static void fuzz_cloud(int kind, const uint8_t *data, size_t size)
{
    static const char *const kinds[] = {"hello", "status", "reported", "meter"};
    if (size < 1)
        return;
    unsigned flags = data[0];
    data++;
    size--;
    struct cloud *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->pubs_tail = &c->pubs;
    c->store = &stub_store;
    store_flags = flags;
    if (flags & FL_TOKEN)
        c->fleet_token = strdup("fleet-secret");
    char topic[256];
    const char *payload = (const char *)data;
    size_t len = size;
    char *t = NULL;
    if (flags & FL_TOPIC) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t tl = nl ? (size_t)(nl - data) : size;
        t = cstr(data, tl);
        payload = nl ? (const char *)nl + 1 : "";
        len = nl ? size - tl - 1 : 0;
    } else {
        (void)snprintf(topic, sizeof(topic), "wisp/v1/gw-1/%s", kinds[kind - P_HELLO]);
    }
    if (cloud_batch_begin(c, 1714557600000000000ULL) != 0)
        abort();
    if (flags & FL_KNOWN) {
        struct cloud_device *d = cloud_device_register(c, "gw-1");
        cJSON *l = cJSON_Parse("{\"site\":\"plant-3\",\"tier\":\"canary\"}");
        if (d && l) {
            cJSON_Delete(d->own_labels);
            d->own_labels = l;
            l = NULL;
            (void)cloud_device_merge_labels(d);
        }
        cJSON_Delete(l);
    }
    if (!(flags & FL_TOPIC) || t)
        cloud_handle_message(c, t ? t : topic, payload, len, (flags & FL_RETAINED) != 0);
    check_fleet(c);
    c->txn = NULL; /* the stub's txn needs no abort */
    free(t);
    cloud_destroy(c);
}

static void fuzz_selector(const uint8_t *data, size_t size)
{
    char *s = cstr(data, size);
    if (!s)
        return;
    char err[512] = "";
    cJSON *sel = cloud_selector_parse(s, err, sizeof(err));
    if (!sel) {
        check_err(err);
        free(s);
        return;
    }
    /* Written back as k=v pairs, it parses to the same selector, and it
     * matches labels that are the selector itself. */
    size_t cap = 2 * size + 2, len = 0;
    char *back = malloc(cap);
    if (!back)
        abort();
    back[0] = '\0';
    const cJSON *it;
    cJSON_ArrayForEach(it, sel)
    {
        if (!cJSON_IsString(it) || !it->string || !it->string[0])
            abort();
        len += (size_t)snprintf(back + len, cap - len, "%s%s=%s", len ? "," : "", it->string,
                                it->valuestring);
        if (len >= cap)
            abort();
    }
    cJSON *again = cloud_selector_parse(back, err, sizeof(err));
    if (!again || !cJSON_Compare(sel, again, true) || !cloud_selector_match(sel, sel))
        abort();
    cJSON_Delete(again);
    free(back);
    cJSON_Delete(sel);
    free(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *l = getenv("WISP_FUZZ_LOG");
    wisp_log_threshold = l && l[0] == '1' ? WISP_LOG_DEBUG : WISP_LOG_OFF;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int which = data[0] % P_COUNT;
    data++;
    size--;
    switch (which) {
    case P_DESIRED:
        fuzz_desired(data, size);
        break;
    case P_ACK:
        fuzz_ack(data, size);
        break;
    case P_BUNDLE:
        fuzz_bundle(data, size);
        break;
    case P_ACTIVE:
        fuzz_active(data, size);
        break;
    case P_SELECTOR:
        fuzz_selector(data, size);
        break;
    default:
        fuzz_cloud(which, data, size);
        break;
    }
    return 0;
}
