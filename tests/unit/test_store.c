/* The durable store (runtime/src/store*.c) on real LMDB files in a fresh
 * temp dir: the batch and its commit, all-or-nothing applies, optimistic
 * concurrency, limits, the outbox policies, map growth and its end,
 * damaged or foreign files, read-only use, dedupe, dead letters, metering
 * and backups. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "meter.h"
#include "store.h"
#include "testutil.h"

static char err[1024];
static char dir[256];

static struct wisp_store_config base_cfg(void)
{
    struct wisp_store_config c = {0};
    c.dir = dir;
    c.durability = WISP_DURABILITY_NONE;
    return c;
}

static struct wisp_store *open_cfg(const struct wisp_store_config *c)
{
    struct wisp_store *s = NULL;
    err[0] = '\0';
    int rc = wisp_store_open(c, &s, err, sizeof(err));
    if (rc)
        (void)fprintf(stderr, "open: %s\n", err);
    CHECK_INT_EQ(rc, 0);
    return s;
}

static struct wisp_store *open_default(void)
{
    struct wisp_store_config c = base_cfg();
    return open_cfg(&c);
}

static bool setup(const char *tag)
{
    return wisp_test_mkdtemp(dir, sizeof(dir), tag);
}

static void teardown(void)
{
    if (dir[0])
        wisp_test_rmtree(dir);
    dir[0] = '\0';
}

static struct wisp_inbox_rec sample_event(const char *fn, const char *id, const char *payload)
{
    struct wisp_inbox_rec r = {0};
    r.fn = fn;
    r.event_id = id;
    r.time = "2024-05-01T12:00:00.000Z";
    r.type = "wisp.mqtt.message";
    r.subject = "sensors/t1";
    r.payload = payload;
    r.payload_len = strlen(payload);
    r.qos = 1;
    return r;
}

/* One write (val NULL: delete) of fn's key, nothing else. */
static int put_state(struct wisp_store *s, const char *fn, const char *key, const char *val)
{
    struct wisp_state_write w = {key, strlen(key), val, val ? strlen(val) : 0};
    struct wisp_commit c = {.fn = fn, .writes = &w, .n_writes = 1};
    err[0] = '\0';
    return wisp_store_apply(s, &c, NULL, err, sizeof(err));
}

/* The value of fn's key as a malloc'd string, NULL when absent. */
static char *get_state(struct wisp_store *s, const char *fn, const char *key, uint64_t *version)
{
    const char *val = NULL;
    size_t vlen = 0;
    uint64_t v = 0;
    int rc = wisp_store_state_get(s, fn, key, strlen(key), &val, &vlen, &v);
    if (version)
        *version = v;
    if (rc == -ENOENT) {
        CHECK(v == 0);
        return NULL;
    }
    CHECK_INT_EQ(rc, 0);
    if (rc)
        return NULL;
    CHECK(v > 0);
    char *out = malloc(vlen + 1);
    CHECK(out != NULL);
    if (!out)
        return NULL;
    memcpy(out, val, vlen);
    out[vlen] = '\0';
    return out;
}

static void check_state(struct wisp_store *s, const char *fn, const char *key, const char *want)
{
    char *got = get_state(s, fn, key, NULL);
    if (!want)
        CHECK(got == NULL);
    else
        CHECK_STR_EQ(got, want);
    free(got);
}

static int send_out(struct wisp_store *s, const char *fn, const char *topic, const char *payload,
                    uint64_t *first)
{
    struct wisp_out_msg m = {topic, payload, strlen(payload), 1, 0, "ev-1/0"};
    struct wisp_commit c = {.fn = fn, .outs = &m, .n_outs = 1};
    err[0] = '\0';
    return wisp_store_apply(s, &c, first, err, sizeof(err));
}

static int count_cb(void *ud, uint64_t id, const struct wisp_inbox_rec *rec)
{
    (void)id;
    (void)rec;
    (*(size_t *)ud)++;
    return 0;
}

static size_t inbox_walk_count(struct wisp_store *s)
{
    size_t n = 0;
    CHECK_INT_EQ(wisp_store_inbox_foreach(s, count_cb, &n), 0);
    return n;
}

/* ---- tests ---- */

static void test_open_commit_reopen(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    if (!s)
        goto out;
    CHECK_INT_EQ(wisp_store_pending(s), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0); /* nothing to commit */
    struct wisp_inbox_rec ev = sample_event("fa", "ev-1", "{\"t\":21}");
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(id, 1);
    CHECK_INT_EQ(put_state(s, "fa", "count", "1"), 0);
    CHECK_INT_EQ(wisp_store_pending(s), 2);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_pending(s), 0);
    /* Uncommitted when closed: lost, as in a crash. */
    CHECK_INT_EQ(put_state(s, "fa", "count", "2"), 0);
    CHECK_INT_EQ(put_state(s, "fa", "other", "true"), 0);
    struct wisp_inbox_rec ev2 = sample_event("fa", "ev-2", "{}");
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev2, &id), 0);
    CHECK_INT_EQ(id, 2);
    check_state(s, "fa", "count", "2");
    wisp_store_close(s);

    s = open_default();
    if (!s)
        goto out;
    check_state(s, "fa", "count", "1");
    check_state(s, "fa", "other", NULL);
    CHECK_INT_EQ(wisp_store_inbox_count(s), 1);
    CHECK_INT_EQ(inbox_walk_count(s), 1);
    /* The lost id is handed out again: it never existed. */
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev2, &id), 0);
    CHECK_INT_EQ(id, 2);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);
    wisp_store_close(NULL);
out:
    teardown();
}

struct seen_inbox {
    uint64_t ids[16];
    uint32_t attempts[16];
    char payload[16][32];
    size_t n;
};

static int collect_inbox(void *ud, uint64_t id, const struct wisp_inbox_rec *rec)
{
    struct seen_inbox *si = ud;
    if (si->n < 16) {
        si->ids[si->n] = id;
        si->attempts[si->n] = rec->attempts;
        (void)snprintf(si->payload[si->n], sizeof(si->payload[0]), "%.*s", (int)rec->payload_len,
                       (const char *)rec->payload);
        si->n++;
    }
    return 0;
}

static void test_sequences_survive(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    if (!s)
        goto out;
    struct wisp_inbox_rec ev = sample_event("fa", "ev", "x");
    uint64_t ids[3] = {0};
    for (int i = 0; i < 3; i++)
        CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &ids[i]), 0);
    CHECK_INT_EQ(ids[2], 3);
    uint64_t first = 0;
    CHECK_INT_EQ(send_out(s, "fa", "out/a", "one", &first), 0);
    CHECK_INT_EQ(first, 1);
    CHECK_INT_EQ(send_out(s, "fa", "out/a", "two", &first), 0);
    CHECK_INT_EQ(first, 2);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    /* Drain everything: inbox through apply, outbox through del. */
    for (int i = 0; i < 3; i++) {
        struct wisp_commit c = {.fn = "fa", .inbox_id = ids[i]};
        CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), 0);
    }
    CHECK_INT_EQ(wisp_store_outbox_del(s, 1), 0);
    CHECK_INT_EQ(wisp_store_outbox_del(s, 2), 0);
    CHECK_INT_EQ(wisp_store_outbox_del(s, 2), 0); /* already gone */
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_inbox_count(s), 0);
    CHECK_INT_EQ(wisp_store_outbox_count(s), 0);
    CHECK_INT_EQ(wisp_store_outbox_bytes(s), 0);
    wisp_store_close(s);

    s = open_default();
    if (!s)
        goto out;
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(id, 4);
    first = 0;
    CHECK_INT_EQ(send_out(s, "fa", "out/a", "three", &first), 0);
    CHECK_INT_EQ(first, 3);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    /* Attempts are kept. */
    CHECK_INT_EQ(wisp_store_inbox_set_attempts(s, 4, 2), 0);
    CHECK_INT_EQ(wisp_store_inbox_set_attempts(s, 99, 1), -ENOENT);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);

    s = open_default();
    if (!s)
        goto out;
    struct seen_inbox si = {0};
    CHECK_INT_EQ(wisp_store_inbox_foreach(s, collect_inbox, &si), 0);
    CHECK_INT_EQ(si.n, 1);
    CHECK_INT_EQ(si.ids[0], 4);
    CHECK_INT_EQ(si.attempts[0], 2);
    CHECK_STR_EQ(si.payload[0], "x");
    wisp_store_close(s);
out:
    teardown();
}

static void test_apply_all_or_nothing(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.max_value_bytes = 16;
    cfg.max_key_bytes = 8;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    struct wisp_inbox_rec ev = sample_event("fa", "ev-1", "{}");
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(put_state(s, "fa", "k1", "\"first\""), 0);
    size_t pending = wisp_store_pending(s);

    /* Fails on its second write: the first write, the inbox removal and
     * the message must not land. */
    struct wisp_state_write w[2] = {{"k2", 2, "2", 1}, {"k3", 2, "\"far too long a value\"", 22}};
    struct wisp_out_msg m = {"out/x", "p", 1, 1, 0, "ev-1/0"};
    struct wisp_meter_rec meter = {.outcome = "ok"};
    struct wisp_commit c = {.fn = "fa",
                            .inbox_id = id,
                            .writes = w,
                            .n_writes = 2,
                            .outs = &m,
                            .n_outs = 1,
                            .meter = &meter};
    uint64_t first = 777;
    CHECK_INT_EQ(wisp_store_apply(s, &c, &first, err, sizeof(err)), -EFBIG);
    CHECK_CONTAINS(err, "fa");
    CHECK_CONTAINS(err, "k3");
    CHECK_INT_EQ(first, 777);
    check_state(s, "fa", "k2", NULL);
    check_state(s, "fa", "k1", "\"first\"");
    CHECK_INT_EQ(wisp_store_inbox_count(s), 1);
    CHECK_INT_EQ(wisp_store_outbox_count(s), 0);
    CHECK_INT_EQ(wisp_store_meter_count(s), 0);
    CHECK_INT_EQ(wisp_store_pending(s), pending);

    /* Key limits name the function and the key. */
    CHECK_INT_EQ(put_state(s, "fa", "", "1"), -EFBIG);
    CHECK_CONTAINS(err, "fa: key \"\"");
    CHECK_INT_EQ(put_state(s, "fa", "longer-than-8", "1"), -EFBIG);
    CHECK_CONTAINS(err, "longer-than-8");

    /* A stale read: nothing of it lands either. */
    struct wisp_state_read r = {"k1", 2, 12345};
    struct wisp_commit c2 = {.fn = "fa",
                             .inbox_id = id,
                             .reads = &r,
                             .n_reads = 1,
                             .writes = w,
                             .n_writes = 1,
                             .outs = &m,
                             .n_outs = 1};
    CHECK_INT_EQ(wisp_store_apply(s, &c2, &first, err, sizeof(err)), -EAGAIN);
    CHECK_INT_EQ(first, 777);
    check_state(s, "fa", "k2", NULL);
    CHECK_INT_EQ(wisp_store_inbox_count(s), 1);
    CHECK_INT_EQ(wisp_store_outbox_count(s), 0);

    /* The same, valid: everything lands. */
    c.n_writes = 1;
    CHECK_INT_EQ(wisp_store_apply(s, &c, &first, err, sizeof(err)), 0);
    CHECK_INT_EQ(first, 1);
    check_state(s, "fa", "k2", "2");
    CHECK_INT_EQ(wisp_store_inbox_count(s), 0);
    CHECK_INT_EQ(wisp_store_outbox_count(s), 1);
    CHECK_INT_EQ(wisp_store_meter_count(s), 1);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);

    s = open_cfg(&cfg);
    if (!s)
        goto out;
    check_state(s, "fa", "k1", "\"first\"");
    check_state(s, "fa", "k2", "2");
    CHECK_INT_EQ(wisp_store_inbox_count(s), 0);
    CHECK_INT_EQ(wisp_store_outbox_count(s), 1);
    wisp_store_close(s);
out:
    teardown();
}

static void test_occ(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    if (!s)
        goto out;
    uint64_t v1 = 0, v2 = 0, v3 = 0;
    CHECK_INT_EQ(put_state(s, "fa", "n", "1"), 0);
    free(get_state(s, "fa", "n", &v1));
    CHECK(v1 > 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);

    /* Two handlers read n at v1; the first to apply wins. */
    struct wisp_state_read r = {"n", 1, v1};
    struct wisp_state_write w = {"n", 1, "2", 1};
    struct wisp_commit c = {.fn = "fa", .reads = &r, .n_reads = 1, .writes = &w, .n_writes = 1};
    CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), 0);
    free(get_state(s, "fa", "n", &v2));
    CHECK(v2 > v1);
    w.val = "3";
    CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), -EAGAIN);
    CHECK_CONTAINS(err, "fa: key \"n\" changed");
    check_state(s, "fa", "n", "2");

    /* Absent (version 0) must still be absent. */
    struct wisp_state_read r0 = {"fresh", 5, 0};
    struct wisp_state_write w0 = {"fresh", 5, "1", 1};
    struct wisp_commit c0 = {.fn = "fa", .reads = &r0, .n_reads = 1, .writes = &w0, .n_writes = 1};
    CHECK_INT_EQ(wisp_store_apply(s, &c0, NULL, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_store_apply(s, &c0, NULL, err, sizeof(err)), -EAGAIN);
    /* Same key name in another function is another key. */
    c0.fn = "fb";
    CHECK_INT_EQ(wisp_store_apply(s, &c0, NULL, err, sizeof(err)), 0);

    /* A delete removes the key; a read of it at 0 then passes. */
    CHECK_INT_EQ(put_state(s, "fa", "n", NULL), 0);
    check_state(s, "fa", "n", NULL);
    r.version = 0;
    w.val = "4";
    CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), 0);
    free(get_state(s, "fa", "n", &v3));
    CHECK(v3 > v2);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);

    /* Versions keep increasing across restarts. */
    s = open_default();
    if (!s)
        goto out;
    CHECK_INT_EQ(put_state(s, "fa", "n", "5"), 0);
    uint64_t v4 = 0;
    free(get_state(s, "fa", "n", &v4));
    CHECK(v4 > v3);
    wisp_store_close(s);
out:
    teardown();
}

struct keys_seen {
    char text[512];
    size_t n;
};

static int collect_keys(void *ud, const char *key, size_t klen, const char *val, size_t vlen)
{
    struct keys_seen *ks = ud;
    size_t used = strlen(ks->text);
    (void)snprintf(ks->text + used, sizeof(ks->text) - used, "%.*s=%.*s;", (int)klen, key,
                   (int)vlen, val);
    ks->n++;
    return 0;
}

static void test_read_your_batch(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    if (!s)
        goto out;
    struct wisp_out_view v[4];
    CHECK_INT_EQ(put_state(s, "fa", "a/1", "1"), 0);
    CHECK_INT_EQ(put_state(s, "fa", "a/2", "2"), 0);
    CHECK_INT_EQ(put_state(s, "fa", "b/1", "3"), 0);
    CHECK_INT_EQ(put_state(s, "fab", "a/9", "9"), 0);
    uint64_t first = 0;
    CHECK_INT_EQ(send_out(s, "fa", "out/t", "hello", &first), 0);
    /* State reads see the batch; the outbox shows committed entries only. */
    check_state(s, "fa", "a/2", "2");
    struct keys_seen ks = {"", 0};
    CHECK_INT_EQ(wisp_store_state_keys(s, "fa", "a/", 2, 0, collect_keys, &ks), 0);
    CHECK_STR_EQ(ks.text, "a/1=1;a/2=2;");
    memset(&ks, 0, sizeof(ks));
    CHECK_INT_EQ(wisp_store_state_keys(s, "fa", NULL, 0, 2, collect_keys, &ks), 0);
    CHECK_STR_EQ(ks.text, "a/1=1;a/2=2;");
    memset(&ks, 0, sizeof(ks));
    CHECK_INT_EQ(wisp_store_state_keys(s, "fa", NULL, 0, 0, collect_keys, &ks), 0);
    CHECK_INT_EQ(ks.n, 3);
    CHECK_INT_EQ(wisp_store_outbox_next(s, 0, v, 4), 0);
    /* The inbox walk (recovery) reads committed entries only; the count
     * is the batch's. */
    struct wisp_inbox_rec ev = sample_event("fa", "ev-1", "{}");
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(inbox_walk_count(s), 0);
    CHECK_INT_EQ(wisp_store_inbox_count(s), 1);

    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(inbox_walk_count(s), 1);
    CHECK_INT_EQ(wisp_store_outbox_next(s, 0, v, 4), 1);
    CHECK_INT_EQ(v[0].seq, first);
    CHECK_STR_EQ(v[0].topic, "out/t");
    CHECK_STR_EQ(v[0].msg_id, "ev-1/0");
    CHECK_INT_EQ(v[0].len, 5);
    CHECK(memcmp(v[0].payload, "hello", 5) == 0);
    CHECK_INT_EQ(v[0].qos, 1);
    CHECK_INT_EQ(wisp_store_outbox_next(s, first, v, 4), 0);

    /* Binary keys, with NUL bytes inside. */
    struct wisp_state_write bw = {"a\0b", 3, "[1]", 3};
    struct wisp_commit bc = {.fn = "fa", .writes = &bw, .n_writes = 1};
    CHECK_INT_EQ(wisp_store_apply(s, &bc, NULL, err, sizeof(err)), 0);
    const char *val = NULL;
    size_t vlen = 0;
    uint64_t ver = 0;
    CHECK_INT_EQ(wisp_store_state_get(s, "fa", "a\0b", 3, &val, &vlen, &ver), 0);
    CHECK_INT_EQ(vlen, 3);
    CHECK_INT_EQ(wisp_store_state_get(s, "fa", "a", 1, &val, &vlen, &ver), -ENOENT);
    wisp_store_close(s);
out:
    teardown();
}

static void test_fn_limit(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.max_fn_bytes = 100;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    char *v50 = wisp_test_repeat("\"", "x", 48, "\""); /* 50 bytes */
    if (!v50)
        goto close;
    CHECK_INT_EQ(put_state(s, "fa", "k1", v50), 0); /* 52 */
    CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), 52);
    CHECK_INT_EQ(put_state(s, "fa", "k2", v50), -EFBIG);
    CHECK_CONTAINS(err, "fa: state would hold 104 bytes, limit 100");
    check_state(s, "fa", "k2", NULL);
    CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), 52);
    /* Other functions have their own budget. */
    CHECK_INT_EQ(put_state(s, "fb", "k2", v50), 0);
    /* Overwriting counts the difference; deleting frees. */
    CHECK_INT_EQ(put_state(s, "fa", "k1", "1"), 0);
    CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), 3);
    CHECK_INT_EQ(put_state(s, "fa", "k2", v50), 0);
    CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), 55);
    CHECK_INT_EQ(put_state(s, "fa", "k2", NULL), 0);
    CHECK_INT_EQ(put_state(s, "fa", "k1", NULL), 0);
    CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), 0);
    CHECK_INT_EQ(put_state(s, "fa", "k1", v50), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);
    s = open_cfg(&cfg);
    if (s) {
        CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), 52);
        CHECK_INT_EQ(wisp_store_state_bytes(s, "fb"), 52);
    }
close:
    free(v50);
    wisp_store_close(s);
out:
    teardown();
}

static void test_outbox_refuse(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.outbox_max_bytes = 100;
    cfg.outbox_full = WISP_OUTBOX_REFUSE;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    /* topic 5 + payload 29 + id 6 = 40 bytes each. */
    const char *p29 = "12345678901234567890123456789";
    uint64_t first = 0;
    CHECK_INT_EQ(send_out(s, "fa", "out/a", p29, &first), 0);
    CHECK_INT_EQ(send_out(s, "fa", "out/a", p29, &first), 0);
    CHECK_INT_EQ(wisp_store_outbox_bytes(s), 80);
    CHECK_INT_EQ(send_out(s, "fa", "out/a", p29, &first), -ENOBUFS);
    CHECK_CONTAINS(err, "outbox is full");
    CHECK_INT_EQ(first, 2);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_outbox_bytes(s), 80);
    CHECK_INT_EQ(wisp_store_outbox_del(s, 1), 0);
    CHECK_INT_EQ(wisp_store_outbox_bytes(s), 40);
    CHECK_INT_EQ(send_out(s, "fa", "out/a", p29, &first), 0);
    CHECK_INT_EQ(first, 3);
    CHECK_INT_EQ(wisp_store_outbox_dropped(s), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);
    s = open_cfg(&cfg);
    if (s)
        CHECK_INT_EQ(wisp_store_outbox_bytes(s), 80);
    wisp_store_close(s);
out:
    teardown();
}

static void test_outbox_drop_oldest(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.outbox_max_bytes = 100;
    cfg.outbox_full = WISP_OUTBOX_DROP_OLDEST;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    const char *p29 = "12345678901234567890123456789";
    uint64_t first = 0;
    CHECK_INT_EQ(send_out(s, "fa", "out/a", p29, &first), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(send_out(s, "fa", "out/a", p29, &first), 0);
    CHECK_INT_EQ(send_out(s, "fa", "out/a", p29, &first), 0);
    CHECK_INT_EQ(first, 3);
    CHECK_INT_EQ(wisp_store_outbox_dropped(s), 1);
    CHECK_INT_EQ(wisp_store_outbox_bytes(s), 80);
    CHECK_INT_EQ(wisp_store_outbox_count(s), 2);
    /* More than the whole outbox holds: refused even so. */
    char *big = wisp_test_repeat("", "y", 120, "");
    if (big)
        CHECK_INT_EQ(send_out(s, "fa", "out/a", big, &first), -ENOBUFS);
    free(big);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    struct wisp_out_view v[4];
    CHECK_INT_EQ(wisp_store_outbox_next(s, 0, v, 4), 2);
    CHECK_INT_EQ(v[0].seq, 2);
    CHECK_INT_EQ(v[1].seq, 3);
    CHECK_INT_EQ(wisp_store_outbox_next(s, 0, v, 1), 1);
    wisp_store_close(s);
out:
    teardown();
}

static void test_map_growth(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.map_initial = (uint64_t)256 * 1024;
    cfg.map_max = (uint64_t)64 * 1024 * 1024;
    cfg.max_value_bytes = 8192;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    char *val = wisp_test_repeat("\"", "v", 4000, "\"");
    if (!val)
        goto close;
    /* ~8 MB in one batch: many growths, each replaying the batch so far. */
    enum { N = 2000 };
    char key[32];
    uint64_t last_id = 0;
    for (int i = 0; i < N; i++) {
        (void)snprintf(key, sizeof(key), "k%05d", i);
        struct wisp_state_write w = {key, strlen(key), val, strlen(val)};
        struct wisp_out_msg m = {"out/big", val, 1000, 1, 0, key};
        struct wisp_commit c = {.fn = "fa",
                                .writes = &w,
                                .n_writes = 1,
                                .outs = i % 10 ? NULL : &m,
                                .n_outs = i % 10 ? 0 : 1};
        int rc = wisp_store_apply(s, &c, NULL, err, sizeof(err));
        if (rc) {
            (void)fprintf(stderr, "apply %d: %d %s\n", i, rc, err);
            CHECK_INT_EQ(rc, 0);
            break;
        }
        if (i % 100 == 0) {
            struct wisp_inbox_rec ev = sample_event("fa", key, val);
            uint64_t id = 0;
            CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
            CHECK_INT_EQ(id, last_id + 1);
            last_id = id;
        }
    }
    check_state(s, "fa", "k00000", val);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_inbox_count(s), N / 100);
    CHECK_INT_EQ(wisp_store_outbox_count(s), N / 10);
    /* Sequences handed out before a growth still name the same entries. */
    struct wisp_out_view ov[2];
    CHECK_INT_EQ(wisp_store_outbox_next(s, 0, ov, 2), 2);
    CHECK_INT_EQ(ov[0].seq, 1);
    CHECK_STR_EQ(ov[0].msg_id, "k00000");
    CHECK_STR_EQ(ov[1].msg_id, "k00010");
    wisp_store_close(s);

    s = open_cfg(&cfg);
    if (!s)
        goto close;
    int missing = 0;
    for (int i = 0; i < N; i++) {
        (void)snprintf(key, sizeof(key), "k%05d", i);
        char *got = get_state(s, "fa", key, NULL);
        if (!got || strcmp(got, val) != 0)
            missing++;
        free(got);
    }
    CHECK_INT_EQ(missing, 0);
    CHECK_INT_EQ(inbox_walk_count(s), N / 100);
    CHECK_INT_EQ(wisp_store_outbox_count(s), N / 10);
    CHECK_INT_EQ(wisp_store_outbox_bytes(s), (N / 10) * (7 + 1000 + 6));
    CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), (uint64_t)N * (6 + strlen(val)));
close:
    free(val);
    wisp_store_close(s);
out:
    teardown();
}

static void test_map_max(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.map_initial = (uint64_t)256 * 1024;
    cfg.map_max = (uint64_t)1024 * 1024;
    cfg.max_value_bytes = 8192;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    CHECK_INT_EQ(put_state(s, "fa", "keep", "\"committed\""), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    char *val = wisp_test_repeat("\"", "v", 4000, "\"");
    char key[32];
    int rc = 0, i = 0;
    for (; val && i < 1000; i++) {
        (void)snprintf(key, sizeof(key), "k%05d", i);
        rc = put_state(s, "fa", key, val);
        if (rc)
            break;
    }
    CHECK_INT_EQ(rc, -ENOSPC);
    CHECK_CONTAINS(err, "store is full");
    CHECK(i > 10);
    /* Earlier applies of the batch are intact; the failed one left nothing. */
    check_state(s, "fa", "k00000", val);
    check_state(s, "fa", key, NULL);
    /* Deleting makes no room inside the same batch, but commit either
     * succeeds or reports the loss; never a crash. */
    rc = wisp_store_commit(s);
    CHECK(rc == 0 || rc == -ENOSPC);
    wisp_store_close(s);
    s = open_cfg(&cfg);
    if (s) {
        check_state(s, "fa", "keep", "\"committed\"");
        CHECK_INT_EQ(put_state(s, "fa", "small", "1"), 0);
        CHECK_INT_EQ(wisp_store_commit(s), 0);
    }
    free(val);
    wisp_store_close(s);
out:
    teardown();
}

static void test_not_a_store(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = NULL;
    struct wisp_store_config cfg = base_cfg();
    char path[512];
    /* Garbage where data.mdb should be. */
    wisp_test_mkdir(dir, "store");
    char *junk = wisp_test_repeat("", "this is not an LMDB file. ", 400, "");
    if (junk)
        wisp_test_write(dir, "store/data.mdb", junk);
    free(junk);
    CHECK(wisp_store_open(&cfg, &s, err, sizeof(err)) < 0);
    CHECK(s == NULL);
    wisp_test_path(path, sizeof(path), dir, "store");
    CHECK_CONTAINS(err, path);
    CHECK_CONTAINS(err, "not a Wisp store (MDB_INVALID");
    cfg.read_only = true;
    CHECK(wisp_store_open(&cfg, &s, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "not a Wisp store");
    cfg.read_only = false;
    /* A short garbage file too. */
    wisp_test_write(dir, "store/data.mdb", "short");
    CHECK(wisp_store_open(&cfg, &s, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "not a Wisp store");

    /* A real LMDB environment that is somebody else's. */
    char odir[512], oenv[600];
    wisp_test_path(odir, sizeof(odir), dir, "other");
    (void)snprintf(oenv, sizeof(oenv), "%s/store", odir);
    CHECK_INT_EQ(mkdir(odir, 0700), 0);
    CHECK_INT_EQ(mkdir(oenv, 0700), 0);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    CHECK_INT_EQ(mdb_env_create(&env), 0);
    CHECK_INT_EQ(mdb_env_open(env, oenv, 0, 0600), 0);
    CHECK_INT_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_INT_EQ(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    MDB_val k = {5, "hello"}, v = {5, "world"};
    CHECK_INT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
    CHECK_INT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    cfg.dir = odir;
    CHECK(wisp_store_open(&cfg, &s, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "not a Wisp store");
    CHECK_CONTAINS(err, oenv);

    /* A Wisp store of another format. */
    wisp_test_path(odir, sizeof(odir), dir, "newer");
    (void)snprintf(oenv, sizeof(oenv), "%s/store", odir);
    s = open_cfg(&cfg);
    wisp_store_close(s);
    s = NULL;
    CHECK_INT_EQ(mdb_env_create(&env), 0);
    CHECK_INT_EQ(mdb_env_set_maxdbs(env, 16), 0);
    CHECK_INT_EQ(mdb_env_open(env, oenv, 0, 0600), 0);
    CHECK_INT_EQ(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_INT_EQ(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    unsigned char two[8] = {0, 0, 0, 0, 0, 0, 0, 2};
    MDB_val fk = {6, "format"}, fv = {8, two};
    CHECK_INT_EQ(mdb_put(txn, dbi, &fk, &fv, 0), 0);
    CHECK_INT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    CHECK(wisp_store_open(&cfg, &s, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "store format 2 is not supported");

    /* Read-only where nothing exists. */
    wisp_test_path(odir, sizeof(odir), dir, "nothing");
    cfg.read_only = true;
    CHECK_INT_EQ(wisp_store_open(&cfg, &s, err, sizeof(err)), -ENOENT);
    CHECK_CONTAINS(err, "nothing/store");
    teardown();
}

static void test_read_only(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    CHECK_INT_EQ(put_state(s, "fa", "k", "1"), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    /* A reader next to the writer (as `wisp state` next to wispd). */
    cfg.read_only = true;
    struct wisp_store *ro = open_cfg(&cfg);
    if (ro) {
        check_state(ro, "fa", "k", "1");
        CHECK_INT_EQ(put_state(ro, "fa", "k", "2"), -EROFS);
        struct wisp_inbox_rec ev = sample_event("fa", "e", "{}");
        uint64_t id = 0;
        CHECK_INT_EQ(wisp_store_inbox_put(ro, &ev, &id), -EROFS);
        CHECK_INT_EQ(wisp_store_inbox_set_attempts(ro, 1, 1), -EROFS);
        CHECK_INT_EQ(wisp_store_dedupe(ro, 1, 2, false), -EROFS);
        CHECK_INT_EQ(wisp_store_outbox_del(ro, 1), -EROFS);
        CHECK_INT_EQ(wisp_store_dlq_replay(ro, 1, &id), -EROFS);
        size_t n = 0;
        CHECK_INT_EQ(wisp_store_dlq_purge(ro, NULL, &n), -EROFS);
        CHECK_INT_EQ(wisp_store_commit(ro), 0);
        CHECK_INT_EQ(wisp_store_pending(ro), 0);
        /* The writer commits; the reader sees it on its next read. */
        CHECK_INT_EQ(put_state(s, "fa", "k", "3"), 0);
        CHECK_INT_EQ(wisp_store_commit(s), 0);
        check_state(ro, "fa", "k", "3");
        wisp_store_close(ro);
    }
    wisp_store_close(s);
out:
    teardown();
}

/* Another process writes between our batches (as `wisp dlq replay` next
 * to wispd): our sequences continue after its entries. */
static void test_another_writer(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    if (!s)
        goto out;
    struct wisp_inbox_rec ev = sample_event("fa", "ev", "{}");
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(put_state(s, "fa", "k", "1"), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct wisp_store_config c = base_cfg();
        struct wisp_store *o = NULL;
        uint64_t oid = 0;
        int ok = wisp_store_open(&c, &o, NULL, 0) == 0 && wisp_store_inbox_put(o, &ev, &oid) == 0 &&
                 oid == 2 && put_state(o, "fa", "k", "2") == 0 && wisp_store_commit(o) == 0;
        wisp_store_close(o);
        _exit(ok ? 0 : 1);
    }
    if (pid > 0)
        CHECK_INT_EQ(wisp_test_wait_exit(pid, 20000), 0);
    uint64_t v_before = 0, v_after = 0;
    char *got = get_state(s, "fa", "k", &v_before);
    CHECK_STR_EQ(got, "2");
    free(got);
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(id, 3);
    CHECK_INT_EQ(put_state(s, "fa", "k", "3"), 0);
    free(get_state(s, "fa", "k", &v_after));
    CHECK(v_after > v_before);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(inbox_walk_count(s), 3);
    wisp_store_close(s);
out:
    teardown();
}

static void test_dedupe(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    if (!s)
        goto out;
    CHECK_INT_EQ(wisp_store_dedupe(s, 7, 0xabc, false), 0);
    CHECK_INT_EQ(wisp_store_dedupe(s, 7, 0xabc, true), 1); /* redelivery, uncommitted */
    CHECK_INT_EQ(wisp_store_dedupe(s, 7, 0xdef, true), 0); /* new message, same pid */
    CHECK_INT_EQ(wisp_store_dedupe(s, 7, 0xabc, true), 0); /* the old one is forgotten */
    CHECK_INT_EQ(wisp_store_dedupe(s, 8, 0xabc, true), 0); /* unknown pid */
    CHECK_INT_EQ(wisp_store_dedupe(s, 9, 0x123, false), 0);
    CHECK_INT_EQ(wisp_store_dedupe(s, 9, 0x123, false), 0); /* no dup flag: never a repeat */
    size_t pending = wisp_store_pending(s);
    CHECK_INT_EQ(wisp_store_dedupe(s, 9, 0x123, true), 1);
    CHECK_INT_EQ(wisp_store_pending(s), pending); /* a repeat writes nothing */
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);
    s = open_default();
    if (s) {
        CHECK_INT_EQ(wisp_store_dedupe(s, 7, 0xabc, true), 1);
        CHECK_INT_EQ(wisp_store_dedupe(s, 9, 0x123, true), 1);
        CHECK_INT_EQ(wisp_store_dedupe(s, 65535, 1, true), 0);
    }
    wisp_store_close(s);
out:
    teardown();
}

struct dlq_seen {
    uint64_t seqs[8];
    char fns[8][16];
    char errors[8][64];
    size_t n;
};

static int collect_dlq(void *ud, const struct wisp_dlq_view *v)
{
    struct dlq_seen *d = ud;
    if (d->n < 8) {
        d->seqs[d->n] = v->seq;
        (void)snprintf(d->fns[d->n], sizeof(d->fns[0]), "%s", v->event.fn);
        (void)snprintf(d->errors[d->n], sizeof(d->errors[0]), "%s|%s|%u|%s", v->error, v->last_time,
                       v->event.attempts, v->event.subject ? v->event.subject : "-");
        d->n++;
    }
    return 0;
}

static int dead_letter(struct wisp_store *s, const char *fn, const char *id, uint64_t inbox_id)
{
    struct wisp_inbox_rec ev = sample_event(fn, id, "{\"bad\":true}");
    ev.attempts = 3;
    struct wisp_dlq_rec d = {&ev, "handler error: boom", "2024-05-01T12:00:03.000Z"};
    struct wisp_commit c = {.fn = fn, .inbox_id = inbox_id, .dlq = &d};
    return wisp_store_apply(s, &c, NULL, err, sizeof(err));
}

static void test_dlq(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    if (!s)
        goto out;
    struct wisp_inbox_rec ev = sample_event("fa", "ev-1", "{\"bad\":true}");
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(dead_letter(s, "fa", "ev-1", id), 0);
    CHECK_INT_EQ(dead_letter(s, "fb", "ev-2", 0), 0);
    CHECK_INT_EQ(dead_letter(s, "fa", "ev-3", 0), 0);
    struct dlq_seen d = {0};
    CHECK_INT_EQ(wisp_store_dlq_foreach(s, NULL, collect_dlq, &d), 0);
    CHECK_INT_EQ(d.n, 0); /* not committed yet */
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_inbox_count(s), 0);

    CHECK_INT_EQ(wisp_store_dlq_foreach(s, NULL, collect_dlq, &d), 0);
    CHECK_INT_EQ(d.n, 3);
    CHECK_INT_EQ(d.seqs[0], 1);
    CHECK_STR_EQ(d.fns[1], "fb");
    CHECK_STR_EQ(d.errors[0], "handler error: boom|2024-05-01T12:00:03.000Z|3|sensors/t1");
    memset(&d, 0, sizeof(d));
    CHECK_INT_EQ(wisp_store_dlq_foreach(s, "fa", collect_dlq, &d), 0);
    CHECK_INT_EQ(d.n, 2);
    CHECK_INT_EQ(d.seqs[1], 3);

    /* Replay: back to the inbox with attempts reset. */
    uint64_t inbox_id = 0;
    CHECK_INT_EQ(wisp_store_dlq_replay(s, 1, &inbox_id), 0);
    CHECK_INT_EQ(inbox_id, 2);
    CHECK_INT_EQ(wisp_store_dlq_replay(s, 1, &inbox_id), -ENOENT);
    CHECK_INT_EQ(wisp_store_dlq_replay(s, 42, &inbox_id), -ENOENT);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    struct seen_inbox si = {0};
    CHECK_INT_EQ(wisp_store_inbox_foreach(s, collect_inbox, &si), 0);
    CHECK_INT_EQ(si.n, 1);
    CHECK_INT_EQ(si.ids[0], 2);
    CHECK_INT_EQ(si.attempts[0], 0);
    CHECK_STR_EQ(si.payload[0], "{\"bad\":true}");

    /* Purge one function, then all. */
    size_t n = 99;
    CHECK_INT_EQ(wisp_store_dlq_purge(s, "fa", &n), 0);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    memset(&d, 0, sizeof(d));
    CHECK_INT_EQ(wisp_store_dlq_foreach(s, NULL, collect_dlq, &d), 0);
    CHECK_INT_EQ(d.n, 1);
    CHECK_STR_EQ(d.fns[0], "fb");
    CHECK_INT_EQ(dead_letter(s, "fc", "ev-4", 0), 0);
    CHECK_INT_EQ(wisp_store_dlq_purge(s, NULL, &n), 0);
    CHECK_INT_EQ(n, 2);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    memset(&d, 0, sizeof(d));
    CHECK_INT_EQ(wisp_store_dlq_foreach(s, NULL, collect_dlq, &d), 0);
    CHECK_INT_EQ(d.n, 0);
    /* Sequences go on after the queue drained. */
    CHECK_INT_EQ(dead_letter(s, "fa", "ev-5", 0), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_dlq_foreach(s, NULL, collect_dlq, &d), 0);
    CHECK_INT_EQ(d.n, 1);
    CHECK_INT_EQ(d.seqs[0], 5);
    wisp_store_close(s);
out:
    teardown();
}

struct meter_seen {
    uint64_t seqs[8];
    cJSON *last;
    size_t n;
    bool all_parse;
};

static int collect_meter(void *ud, uint64_t seq, const char *json, size_t len)
{
    struct meter_seen *m = ud;
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!j)
        m->all_parse = false;
    if (m->n < 8)
        m->seqs[m->n] = seq;
    m->n++;
    cJSON_Delete(m->last);
    m->last = j;
    return 0;
}

static int stop_meter(void *ud, uint64_t seq, const char *json, size_t len)
{
    (void)seq;
    (void)json;
    (void)len;
    (*(int *)ud)++;
    return 42;
}

static void test_meter(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.meter_max_records = 3;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    for (int i = 1; i <= 5; i++) {
        char id[16];
        (void)snprintf(id, sizeof(id), "ev-%d", i);
        struct wisp_meter_rec m = {.fn = NULL, /* the commit's */
                                   .version = "v\"1\"",
                                   .event_id = id,
                                   .time = "2024-05-01T12:00:00.000Z",
                                   .billed_ms = 2,
                                   .duration_us = 1500 + (uint64_t)i,
                                   .mem_peak_bytes = 123456,
                                   .bytes_in = 10,
                                   .bytes_out = 20,
                                   .outcome = i == 5 ? "timeout" : "ok",
                                   .cold = i == 5};
        struct wisp_commit c = {.fn = "fa", .meter = &m};
        CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), 0);
    }
    CHECK_INT_EQ(wisp_store_meter_count(s), 3);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    struct meter_seen ms = {.all_parse = true};
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 0, collect_meter, &ms), 0);
    CHECK(ms.all_parse);
    CHECK_INT_EQ(ms.n, 3);
    CHECK_INT_EQ(ms.seqs[0], 3);
    CHECK_INT_EQ(ms.seqs[2], 5);
    cJSON *j = ms.last;
    CHECK(j != NULL);
    if (j) {
        CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "seq")), 5);
        CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "fn")), "fa");
        CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "version")), "v\"1\"");
        CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "event_id")), "ev-5");
        CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "time")),
                     "2024-05-01T12:00:00.000Z");
        CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "billed_ms")), 2);
        CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "duration_us")), 1505);
        CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "mem_peak_bytes")), 123456);
        CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes_in")), 10);
        CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes_out")), 20);
        CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "outcome")), "timeout");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "cold")));
        CHECK_INT_EQ(cJSON_GetArraySize(j), 15); /* + mem_limit_kb, prev, hash */
    }
    cJSON_Delete(ms.last);
    /* after and limit. */
    memset(&ms, 0, sizeof(ms));
    ms.all_parse = true;
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 3, 1, collect_meter, &ms), 0);
    CHECK_INT_EQ(ms.n, 1);
    CHECK_INT_EQ(ms.seqs[0], 4);
    cJSON_Delete(ms.last);
    int calls = 0;
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 0, stop_meter, &calls), 42);
    CHECK_INT_EQ(calls, 1);
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 1, stop_meter, &calls), 42);
    CHECK_INT_EQ(calls, 2);
    wisp_store_close(s);
out:
    teardown();
}

static void put_meter(struct wisp_store *s, int i)
{
    char id[16];
    (void)snprintf(id, sizeof(id), "ev-%d", i);
    struct wisp_meter_rec m = {.version = "1",
                               .event_id = id,
                               .time = "2026-11-27T09:00:00.000Z",
                               .billed_ms = (uint64_t)i,
                               .duration_us = 900,
                               .mem_limit_kb = 16384,
                               .outcome = "ok"};
    struct wisp_commit c = {.fn = "fa", .meter = &m};
    CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), 0);
}

/* Recomputes a record's hash from its JSON fields, as the control plane does. */
static bool chain_ok(const cJSON *j, unsigned char prev[WISP_METER_HASH_LEN])
{
    unsigned char claimed_prev[WISP_METER_HASH_LEN], claimed[WISP_METER_HASH_LEN];
    unsigned char want[WISP_METER_HASH_LEN];
    struct wisp_meter_fields f = {
        .seq = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "seq")),
        .fn = cJSON_GetStringValue(cJSON_GetObjectItem(j, "fn")),
        .version = cJSON_GetStringValue(cJSON_GetObjectItem(j, "version")),
        .event_id = cJSON_GetStringValue(cJSON_GetObjectItem(j, "event_id")),
        .time = cJSON_GetStringValue(cJSON_GetObjectItem(j, "time")),
        .outcome = cJSON_GetStringValue(cJSON_GetObjectItem(j, "outcome")),
        .billed_ms = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "billed_ms")),
        .duration_us = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "duration_us")),
        .mem_peak_bytes = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "mem_peak_bytes")),
        .mem_limit_kb = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "mem_limit_kb")),
        .bytes_in = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes_in")),
        .bytes_out = (uint64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes_out")),
        .cold = cJSON_IsTrue(cJSON_GetObjectItem(j, "cold")),
    };
    if (!wisp_meter_unhex(cJSON_GetStringValue(cJSON_GetObjectItem(j, "prev")), claimed_prev) ||
        !wisp_meter_unhex(cJSON_GetStringValue(cJSON_GetObjectItem(j, "hash")), claimed) ||
        memcmp(claimed_prev, prev, WISP_METER_HASH_LEN) != 0 ||
        wisp_meter_chain(prev, &f, want) != 0 || memcmp(want, claimed, WISP_METER_HASH_LEN) != 0)
        return false;
    memcpy(prev, claimed, WISP_METER_HASH_LEN);
    return true;
}

struct chain_walk {
    unsigned char head[WISP_METER_HASH_LEN];
    int n, broken;
    uint64_t first;
};

static int walk_chain(void *ud, uint64_t seq, const char *json, size_t len)
{
    struct chain_walk *w = ud;
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!w->n)
        w->first = seq;
    w->n++;
    if (!j || !chain_ok(j, w->head))
        w->broken++;
    cJSON_Delete(j);
    return 0;
}

/* Cloud sync: records are chained, kept past meter_max_records until
 * acknowledged, and the chain continues across acks and reopening. */
static void test_meter_chain(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.meter_max_records = 3;
    cfg.meter_keep_unacked = true;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    for (int i = 1; i <= 5; i++)
        put_meter(s, i);
    CHECK_INT_EQ(wisp_store_meter_last(s), 0); /* not committed yet */
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_meter_count(s), 5); /* not trimmed to 3 */
    CHECK_INT_EQ(wisp_store_meter_last(s), 5);
    struct chain_walk w = {0};
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 0, walk_chain, &w), 0);
    CHECK_INT_EQ(w.n, 5);
    CHECK_INT_EQ(w.broken, 0); /* the first prev is all zeros */
    size_t n = 0;
    CHECK_INT_EQ(wisp_store_meter_ack(s, 3, &n), 0);
    CHECK_INT_EQ(n, 3);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_meter_count(s), 2);
    CHECK_INT_EQ(wisp_store_meter_ack(s, 99, &n), 0);
    CHECK_INT_EQ(n, 2);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(wisp_store_meter_count(s), 0);
    wisp_store_close(s);
    /* Reopened with everything acknowledged: seq 6 chains onto seq 5. */
    s = open_cfg(&cfg);
    if (!s)
        goto out;
    put_meter(s, 6);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    struct chain_walk w2 = {0};
    memcpy(w2.head, w.head, sizeof(w.head)); /* seq 5's hash */
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 0, walk_chain, &w2), 0);
    CHECK_INT_EQ(w2.n, 1);
    CHECK_INT_EQ(w2.first, 6);
    CHECK_INT_EQ(w2.broken, 0);
    /* An edited record no longer verifies. */
    struct chain_walk w3 = {0};
    memcpy(w3.head, w.head, sizeof(w.head));
    w3.head[0] ^= 1;
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 0, walk_chain, &w3), 0);
    CHECK_INT_EQ(w3.broken, 1);
    wisp_store_close(s);
out:
    teardown();
}

/* Deletes inside a growing batch (DROP_OLDEST, meter trimming, state
 * deletes) replay as well as puts. */
static void test_map_growth_deletes(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.map_initial = (uint64_t)256 * 1024;
    cfg.map_max = (uint64_t)64 * 1024 * 1024;
    cfg.max_value_bytes = 8192;
    cfg.outbox_max_bytes = (uint64_t)50 * (7 + 2000 + 6);
    cfg.outbox_full = WISP_OUTBOX_DROP_OLDEST;
    cfg.meter_max_records = 50;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    char *val = wisp_test_repeat("\"", "w", 3000, "\"");
    if (!val)
        goto close;
    enum { N = 1000 };
    char key[32], prev[32] = "";
    for (int i = 0; i < N; i++) {
        (void)snprintf(key, sizeof(key), "k%05d", i);
        /* Write this key, delete the previous odd one. */
        struct wisp_state_write w[2] = {{key, strlen(key), val, strlen(val)},
                                        {prev, strlen(prev), NULL, 0}};
        struct wisp_out_msg m = {"out/big", val, 2000, 1, 0, key};
        struct wisp_meter_rec meter = {.event_id = key, .outcome = "ok", .billed_ms = 1};
        struct wisp_commit c = {.fn = "fa",
                                .writes = w,
                                .n_writes = i % 2 == 0 && prev[0] ? 2 : 1,
                                .outs = &m,
                                .n_outs = 1,
                                .meter = &meter};
        int rc = wisp_store_apply(s, &c, NULL, err, sizeof(err));
        if (rc) {
            (void)fprintf(stderr, "apply %d: %d %s\n", i, rc, err);
            CHECK_INT_EQ(rc, 0);
            break;
        }
        memcpy(prev, key, sizeof(prev));
    }
    CHECK_INT_EQ(wisp_store_outbox_dropped(s), N - 50);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);

    s = open_cfg(&cfg);
    if (!s)
        goto close;
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        (void)snprintf(key, sizeof(key), "k%05d", i);
        char *got = get_state(s, "fa", key, NULL);
        bool want = i % 2 == 0 || i == N - 1;
        if (want != (got != NULL))
            wrong++;
        free(got);
    }
    CHECK_INT_EQ(wrong, 0);
    CHECK_INT_EQ(wisp_store_state_bytes(s, "fa"), (uint64_t)(N / 2 + 1) * (6 + strlen(val)));
    CHECK_INT_EQ(wisp_store_outbox_count(s), 50);
    CHECK_INT_EQ(wisp_store_outbox_bytes(s), cfg.outbox_max_bytes);
    struct wisp_out_view ov[1];
    CHECK_INT_EQ(wisp_store_outbox_next(s, 0, ov, 1), 1);
    CHECK_INT_EQ(ov[0].seq, N - 49);
    CHECK_INT_EQ(wisp_store_meter_count(s), 50);
    struct meter_seen ms = {.all_parse = true};
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 1, collect_meter, &ms), 0);
    CHECK_INT_EQ(ms.seqs[0], N - 49);
    cJSON_Delete(ms.last);
close:
    free(val);
    wisp_store_close(s);
out:
    teardown();
}

static void test_backup(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = open_default();
    char bk[512], bkstore[600];
    if (!s)
        goto out;
    CHECK_INT_EQ(put_state(s, "fa", "k", "\"backed up\""), 0);
    struct wisp_inbox_rec ev = sample_event("fa", "ev-1", "{}");
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    CHECK_INT_EQ(put_state(s, "fa", "k2", "\"uncommitted\""), 0);
    /* From another process (as `wisp backup` next to wispd: LMDB must not
     * be opened twice in one process) while a batch is pending here. */
    wisp_test_path(bk, sizeof(bk), dir, "bk");
    (void)snprintf(bkstore, sizeof(bkstore), "%s/store", bk);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(wisp_store_backup(dir, bkstore, NULL, 0) == 0 ? 0 : 1);
    if (pid > 0)
        CHECK_INT_EQ(wisp_test_wait_exit(pid, 20000), 0);
    wisp_store_close(s);
    CHECK_INT_EQ(wisp_store_backup(dir, bkstore, err, sizeof(err)), -EEXIST);
    CHECK_CONTAINS(err, bkstore);
    /* The copy opens as a store of its own. */
    struct wisp_store_config cfg = base_cfg();
    cfg.dir = bk;
    s = open_cfg(&cfg);
    if (s) {
        check_state(s, "fa", "k", "\"backed up\"");
        check_state(s, "fa", "k2", NULL);
        CHECK_INT_EQ(wisp_store_inbox_count(s), 1);
        CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
        CHECK_INT_EQ(id, 2);
        wisp_store_close(s);
    }
    /* Not a store: an error naming the path, and no copy. */
    wisp_test_path(bk, sizeof(bk), dir, "nowhere");
    wisp_test_path(bkstore, sizeof(bkstore), dir, "bk2");
    CHECK(wisp_store_backup(bk, bkstore, err, sizeof(err)) < 0);
    CHECK_CONTAINS(err, "nowhere/store");
    CHECK_INT_EQ(wisp_store_backup(NULL, bkstore, err, sizeof(err)), -EINVAL);
out:
    teardown();
}

static int stop_inbox(void *ud, uint64_t id, const struct wisp_inbox_rec *rec)
{
    (void)rec;
    *(uint64_t *)ud = id;
    return 7;
}

/* A callback may use the store, even write and commit, during a walk. */
static int reentrant_inbox(void *ud, uint64_t id, const struct wisp_inbox_rec *rec)
{
    struct wisp_store *s = ud;
    struct wisp_commit c = {.fn = rec->fn, .inbox_id = id};
    CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    return 0;
}

static void test_walks(void)
{
    if (!setup("store"))
        return;
    struct wisp_store_config cfg = base_cfg();
    cfg.map_initial = (uint64_t)256 * 1024;
    struct wisp_store *s = open_cfg(&cfg);
    if (!s)
        goto out;
    char *payload = wisp_test_repeat("", "p", 30000, "");
    for (int i = 0; payload && i < 100; i++) {
        struct wisp_inbox_rec ev = sample_event("fa", "e", payload);
        uint64_t id = 0;
        CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0);
    }
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    uint64_t stopped = 0;
    CHECK_INT_EQ(wisp_store_inbox_foreach(s, stop_inbox, &stopped), 7);
    CHECK_INT_EQ(stopped, 1);
    CHECK_INT_EQ(inbox_walk_count(s), 100);
    CHECK_INT_EQ(wisp_store_inbox_foreach(s, reentrant_inbox, s), 0);
    CHECK_INT_EQ(wisp_store_inbox_count(s), 0);
    free(payload);
    wisp_store_close(s);
out:
    teardown();
}

static void test_bad_args(void)
{
    if (!setup("store"))
        return;
    struct wisp_store *s = NULL;
    struct wisp_store_config cfg = base_cfg();
    CHECK_INT_EQ(wisp_store_open(NULL, &s, err, sizeof(err)), -EINVAL);
    CHECK_INT_EQ(wisp_store_open(&cfg, NULL, err, sizeof(err)), -EINVAL);
    cfg.dir = "";
    CHECK_INT_EQ(wisp_store_open(&cfg, &s, NULL, 0), -EINVAL);
    cfg = base_cfg();
    cfg.durability = (enum wisp_durability)9;
    CHECK_INT_EQ(wisp_store_open(&cfg, &s, err, sizeof(err)), -EINVAL);
    CHECK_INT_EQ(wisp_store_commit(NULL), -EINVAL);
    CHECK_INT_EQ(wisp_store_pending(NULL), 0);
    wisp_store_maintain(NULL);
    CHECK_INT_EQ(wisp_store_inbox_put(NULL, NULL, NULL), -EINVAL);
    CHECK_INT_EQ(wisp_store_inbox_count(NULL), 0);
    CHECK_INT_EQ(wisp_store_outbox_bytes(NULL), 0);
    CHECK_INT_EQ(wisp_store_outbox_dropped(NULL), 0);
    CHECK_INT_EQ(wisp_store_apply(NULL, NULL, NULL, err, sizeof(err)), -EINVAL);

    s = open_default();
    if (!s)
        goto out;
    wisp_store_maintain(s);
    CHECK_INT_EQ(wisp_store_inbox_put(s, NULL, NULL), -EINVAL);
    struct wisp_inbox_rec ev = sample_event("fa", "e", "x");
    ev.qos = 3;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, NULL), -EINVAL);
    ev = sample_event("", "e", "x");
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, NULL), -EINVAL);
    ev = sample_event("fa", "e", "x");
    ev.payload = NULL;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, NULL), -EINVAL);
    ev.payload_len = 0;
    ev.subject = NULL;
    uint64_t id = 0;
    CHECK_INT_EQ(wisp_store_inbox_put(s, &ev, &id), 0); /* empty payload, no subject */
    CHECK_INT_EQ(wisp_store_apply(s, NULL, NULL, err, sizeof(err)), -EINVAL);
    struct wisp_commit c = {.fn = "fa", .n_writes = 2};
    CHECK_INT_EQ(wisp_store_apply(s, &c, NULL, err, sizeof(err)), -EINVAL);
    struct wisp_out_msg m = {NULL, "p", 1, 1, 0, "id"};
    struct wisp_commit co = {.fn = "fa", .outs = &m, .n_outs = 1};
    CHECK_INT_EQ(wisp_store_apply(s, &co, NULL, NULL, 0), -EINVAL);
    char *longfn = wisp_test_repeat("", "f", 600, "");
    struct wisp_commit cl = {.fn = longfn};
    CHECK_INT_EQ(wisp_store_apply(s, &cl, NULL, err, sizeof(err)), -EINVAL);
    const char *val = NULL;
    size_t vlen = 0;
    uint64_t ver = 0;
    CHECK_INT_EQ(wisp_store_state_get(s, "fa", NULL, 3, &val, &vlen, &ver), -EINVAL);
    CHECK_INT_EQ(wisp_store_state_get(s, "fa", "k", 0, &val, &vlen, &ver), -EFBIG);
    CHECK_INT_EQ(wisp_store_state_get(s, longfn, "k", 1, &val, &vlen, &ver), -EFBIG);
    CHECK_INT_EQ(wisp_store_state_get(s, NULL, "k", 1, &val, &vlen, &ver), -EINVAL);
    CHECK_INT_EQ(wisp_store_state_keys(s, "fa", NULL, 0, 0, NULL, NULL), -EINVAL);
    CHECK_INT_EQ(wisp_store_state_keys(s, longfn, "a", 1, 0, collect_keys, NULL), 0);
    CHECK_INT_EQ(wisp_store_state_bytes(s, NULL), 0);
    CHECK_INT_EQ(wisp_store_state_bytes(s, longfn), 0);
    free(longfn);
    CHECK_INT_EQ(wisp_store_outbox_next(s, 0, NULL, 3), -EINVAL);
    CHECK_INT_EQ(wisp_store_outbox_next(s, UINT64_MAX, NULL, 0), 0);
    CHECK_INT_EQ(wisp_store_outbox_del(s, 0), -EINVAL);
    CHECK_INT_EQ(wisp_store_inbox_set_attempts(s, 0, 1), -EINVAL);
    CHECK_INT_EQ(wisp_store_inbox_foreach(s, NULL, NULL), -EINVAL);
    CHECK_INT_EQ(wisp_store_meter_foreach(s, 0, 0, NULL, NULL), -EINVAL);
    CHECK_INT_EQ(wisp_store_dlq_foreach(s, NULL, NULL, NULL), -EINVAL);
    CHECK_INT_EQ(wisp_store_dlq_replay(s, 0, NULL), -EINVAL);
    struct wisp_dlq_rec d = {NULL, "e", "t"};
    struct wisp_commit cd = {.fn = "fa", .dlq = &d};
    CHECK_INT_EQ(wisp_store_apply(s, &cd, NULL, err, sizeof(err)), -EINVAL);
    CHECK_INT_EQ(wisp_store_commit(s), 0);
    wisp_store_close(s);
out:
    teardown();
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"open_commit_reopen", test_open_commit_reopen},
        {"sequences_survive", test_sequences_survive},
        {"apply_all_or_nothing", test_apply_all_or_nothing},
        {"occ", test_occ},
        {"read_your_batch", test_read_your_batch},
        {"fn_limit", test_fn_limit},
        {"outbox_refuse", test_outbox_refuse},
        {"outbox_drop_oldest", test_outbox_drop_oldest},
        {"map_growth", test_map_growth},
        {"map_max", test_map_max},
        {"not_a_store", test_not_a_store},
        {"read_only", test_read_only},
        {"another_writer", test_another_writer},
        {"dedupe", test_dedupe},
        {"dlq", test_dlq},
        {"meter", test_meter},
        {"meter_chain", test_meter_chain},
        {"map_growth_deletes", test_map_growth_deletes},
        {"backup", test_backup},
        {"walks", test_walks},
        {"bad_args", test_bad_args},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
