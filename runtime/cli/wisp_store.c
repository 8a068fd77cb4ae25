/* wisp state / dlq / backup: looking into (and repairing) a gateway's
 * store. The store is LMDB: these work while wispd runs (readers never
 * block it; a write waits for its current commit). */
#define WISP_LOG_MODULE "wisp"
#include "wisp_cli.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

#define DEFAULT_DATA "/var/lib/wisp"

/* Takes "--data DIR" out of argv (in place); returns the data dir. */
static const char *take_data(int *argc, char **argv)
{
    const char *data = getenv("WISP_DATA") ? getenv("WISP_DATA") : DEFAULT_DATA;
    int out = 0;
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < *argc)
            data = argv[++i];
        else
            argv[out++] = argv[i];
    }
    *argc = out;
    return data;
}

static int open_store(const char *data, bool read_only, struct wisp_store **s)
{
    char err[512];
    struct wisp_store_config c = {.dir = data, .read_only = read_only};
    int rc = wisp_store_open(&c, s, err, sizeof(err));
    if (rc != 0)
        (void)fprintf(stderr, "wisp: %s\n", err);
    return rc;
}

static bool is_help(int argc, char **argv)
{
    return argc > 0 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0);
}

/* ---- wisp state ---- */

static void state_usage(FILE *out)
{
    (void)fprintf(out, "Usage: wisp state FUNCTION [get KEY | keys [PREFIX]] [--data DIR]\n"
                       "\n"
                       "Shows a function's state on this gateway: every key with its value\n"
                       "(JSON), one value, or the keys under a prefix. --data defaults to\n"
                       "$WISP_DATA or " DEFAULT_DATA ".\n");
}

static int print_kv(void *ud, const char *key, size_t klen, const char *val, size_t vlen)
{
    bool keys_only = *(bool *)ud;
    (void)fwrite(key, 1, klen, stdout);
    if (!keys_only) {
        putchar('\t');
        (void)fwrite(val, 1, vlen, stdout);
    }
    putchar('\n');
    return 0;
}

int wisp_cmd_state(int argc, char **argv)
{
    if (is_help(argc, argv)) {
        state_usage(stdout);
        return 0;
    }
    const char *data = take_data(&argc, argv);
    if (argc < 1 || argc > 3 ||
        (argc >= 2 && strcmp(argv[1], "get") != 0 && strcmp(argv[1], "keys") != 0) ||
        (argc == 2 && strcmp(argv[1], "get") == 0)) {
        state_usage(stderr);
        return 2;
    }
    struct wisp_store *s;
    if (open_store(data, true, &s) != 0)
        return 1;
    const char *fn = argv[0];
    int rc = 0;
    if (argc == 3 && strcmp(argv[1], "get") == 0) {
        const char *val;
        size_t vlen;
        uint64_t version;
        rc = wisp_store_state_get(s, fn, argv[2], strlen(argv[2]), &val, &vlen, &version);
        if (rc == 0) {
            (void)fwrite(val, 1, vlen, stdout);
            putchar('\n');
        } else {
            (void)fprintf(stderr, "wisp state: %s: %s: %s\n", fn, argv[2],
                          rc == -ENOENT ? "no such key" : strerror(-rc));
        }
    } else {
        bool keys_only = argc >= 2;
        const char *prefix = argc == 3 ? argv[2] : "";
        rc = wisp_store_state_keys(s, fn, prefix, strlen(prefix), 0, print_kv, &keys_only);
        if (rc != 0)
            (void)fprintf(stderr, "wisp state: %s: %s\n", fn, strerror(-rc));
    }
    wisp_store_close(s);
    return rc == 0 ? 0 : 1;
}

/* ---- wisp dlq ---- */

static void dlq_usage(FILE *out)
{
    (void)fprintf(out,
                  "Usage: wisp dlq list [FUNCTION] [--data DIR]\n"
                  "       wisp dlq replay ID... [--data DIR]\n"
                  "       wisp dlq purge [FUNCTION] [--data DIR]\n"
                  "\n"
                  "Events that failed every attempt are kept in the dead-letter store.\n"
                  "list shows them (ID FUNCTION ATTEMPTS LAST-ATTEMPT EVENT-ID SUBJECT ERROR),\n"
                  "replay puts them back in the inbox with their attempts reset (a running\n"
                  "wispd is told with SIGUSR2, from DIR/wispd.pid), purge deletes them.\n");
}

static int print_dlq(void *ud, const struct wisp_dlq_view *v)
{
    size_t *n = ud;
    const char *err = v->error ? v->error : "";
    size_t elen = strcspn(err, "\n"); /* the first line; the traceback follows */
    printf("%llu\t%s\t%u\t%s\t%s\t%s\t%.*s\n", (unsigned long long)v->seq, v->event.fn,
           (unsigned)v->event.attempts, v->last_time ? v->last_time : "", v->event.event_id,
           v->event.subject ? v->event.subject : "-", (int)elen, err);
    (*n)++;
    return 0;
}

/* Tells a running wispd (its pid file in the data dir) to look at the inbox. */
static void poke_wispd(const char *data)
{
    char *path = wisp_path_join(data, "wispd.pid");
    char *text = NULL;
    size_t len;
    int64_t pid = 0;
    if (path && wisp_read_file(path, 64, &text, &len) == 0) {
        text[strcspn(text, "\n")] = '\0';
        if (wisp_parse_i64(text, 2, INT32_MAX, &pid) == 0 && kill((pid_t)pid, SIGUSR2) == 0)
            (void)fprintf(stderr, "wisp dlq: told wispd (pid %lld)\n", (long long)pid);
    }
    free(text);
    free(path);
}

int wisp_cmd_dlq(int argc, char **argv)
{
    if (is_help(argc, argv) || argc == 0) {
        dlq_usage(argc ? stdout : stderr);
        return argc ? 0 : 2;
    }
    const char *data = take_data(&argc, argv);
    const char *verb = argv[0];
    bool list = strcmp(verb, "list") == 0, purge = strcmp(verb, "purge") == 0,
         replay = strcmp(verb, "replay") == 0;
    if ((!list && !purge && !replay) || ((list || purge) && argc > 2) || (replay && argc < 2)) {
        dlq_usage(stderr);
        return 2;
    }
    struct wisp_store *s;
    if (open_store(data, list, &s) != 0)
        return 1;
    int rc = 0;
    if (list) {
        size_t n = 0;
        rc = wisp_store_dlq_foreach(s, argc == 2 ? argv[1] : NULL, print_dlq, &n);
        (void)fprintf(stderr, "%zu dead letter(s)\n", n);
    } else if (purge) {
        size_t n = 0;
        rc = wisp_store_dlq_purge(s, argc == 2 ? argv[1] : NULL, &n);
        if (rc == 0)
            rc = wisp_store_commit(s);
        if (rc == 0)
            (void)fprintf(stderr, "purged %zu dead letter(s)\n", n);
    } else {
        size_t done = 0;
        for (int i = 1; i < argc && rc == 0; i++) {
            int64_t seq;
            uint64_t inbox_id;
            if (wisp_parse_i64(argv[i], 1, INT64_MAX, &seq) != 0) {
                (void)fprintf(stderr, "wisp dlq replay: %s: not a dead-letter ID\n", argv[i]);
                rc = -EINVAL;
            } else if ((rc = wisp_store_dlq_replay(s, (uint64_t)seq, &inbox_id)) == -ENOENT) {
                (void)fprintf(stderr, "wisp dlq replay: %s: no such dead letter\n", argv[i]);
            } else if (rc == 0) {
                done++;
            }
        }
        if (rc == 0)
            rc = wisp_store_commit(s);
        if (rc == 0) {
            (void)fprintf(stderr, "%zu event(s) back in the inbox\n", done);
            poke_wispd(data);
        }
    }
    if (rc != 0 && rc != -ENOENT && rc != -EINVAL)
        (void)fprintf(stderr, "wisp dlq %s: %s\n", verb, strerror(-rc));
    wisp_store_close(s);
    return rc == 0 ? 0 : 1;
}

/* ---- wisp backup ---- */

int wisp_cmd_backup(int argc, char **argv)
{
    if (is_help(argc, argv)) {
        printf("Usage: wisp backup DEST_DIR [--data DIR]\n"
               "\n"
               "Writes a compacted copy of the store to DEST_DIR/data.mdb while wispd runs.\n"
               "To restore: stop wispd, put the copy in DIR/store/ and start it.\n");
        return 0;
    }
    const char *data = take_data(&argc, argv);
    if (argc != 1) {
        (void)fprintf(stderr, "Usage: wisp backup DEST_DIR [--data DIR]\n");
        return 2;
    }
    char err[512];
    if (wisp_store_backup(data, argv[0], err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp backup: %s\n", err);
        return 1;
    }
    (void)fprintf(stderr, "backup of %s written to %s\n", data, argv[0]);
    return 0;
}
