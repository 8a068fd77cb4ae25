/* The managed set and its file, <data>/deploy/active.json:
 *
 *   {"format": 1, "generation": 7, "rollout": "r-3",
 *    "health": {"min_invocations": 10, "max_error_rate": 0.5},
 *    "functions": {"door-watch": {"bundle": "<sha>", "version": "2.1.0",
 *        "previous": "<sha>" | null, "previous_version": "..." | null,
 *        "desired": "<sha>", "status": "active", "error": null,
 *        "bad": ["<sha>", ...], "watching": false}}}
 *
 * Written whole (temp file, fsync, rename, fsync of the folder), so after a
 * power cut it holds the old set or the new one. */
#define WISP_LOG_MODULE "agent"
#include "agent_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

enum { ACTIVE_FORMAT = 1, ACTIVE_MAX_BYTES = 16 << 20 };

int agent_set_str(char **slot, const char *s)
{
    char *c = NULL;
    if (s && !(c = wisp_strndup(s, strlen(s))))
        return -ENOMEM;
    free(*slot);
    *slot = c;
    return 0;
}

void agent_state_init(struct agent_state *st, uint32_t min_invocations, double max_error_rate)
{
    memset(st, 0, sizeof(*st));
    st->min_invocations = min_invocations;
    st->max_error_rate = max_error_rate;
}

void agent_fn_fini(struct agent_fn *f)
{
    free(f->version);
    free(f->prev_version);
    free(f->error);
    free(f->last_error);
    memset(f, 0, sizeof(*f));
}

void agent_state_fini(struct agent_state *st)
{
    for (size_t i = 0; i < st->n; i++)
        agent_fn_fini(&st->fns[i]);
    free(st->fns);
    free(st->rollout);
    memset(st, 0, sizeof(*st));
}

struct agent_fn *agent_state_find(struct agent_state *st, const char *name)
{
    for (size_t i = 0; i < st->n; i++) {
        if (strcmp(st->fns[i].name, name) == 0)
            return &st->fns[i];
    }
    return NULL;
}

struct agent_fn *agent_state_add(struct agent_state *st, const char *name)
{
    if (!agent_name_valid(name) || st->n >= AGENT_MAX_FNS)
        return NULL;
    if (st->n == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 8;
        struct agent_fn *nf = realloc(st->fns, ncap * sizeof(*nf));
        if (!nf)
            return NULL;
        st->fns = nf;
        st->cap = ncap;
    }
    struct agent_fn *f = &st->fns[st->n++];
    memset(f, 0, sizeof(*f));
    memcpy(f->name, name, strlen(name) + 1);
    f->status = AGENT_FETCHING;
    return f;
}

void agent_state_remove(struct agent_state *st, size_t i)
{
    if (i >= st->n)
        return;
    agent_fn_fini(&st->fns[i]);
    memmove(&st->fns[i], &st->fns[i + 1], (st->n - i - 1) * sizeof(*st->fns));
    st->n--;
}

bool agent_fn_is_bad(const struct agent_fn *f, const char *sha)
{
    for (size_t i = 0; i < f->n_bad; i++) {
        if (strcmp(f->bad[i], sha) == 0)
            return true;
    }
    return false;
}

void agent_fn_mark_bad(struct agent_fn *f, const char *sha)
{
    if (!agent_sha_valid(sha) || agent_fn_is_bad(f, sha))
        return;
    if (f->n_bad == AGENT_MAX_BAD) { /* forget the oldest */
        memmove(f->bad[0], f->bad[1], (AGENT_MAX_BAD - 1) * sizeof(f->bad[0]));
        f->n_bad--;
    }
    memcpy(f->bad[f->n_bad++], sha, AGENT_SHA_LEN + 1);
}

/* ---- JSON ---- */

cJSON *agent_str_or_null(const char *s)
{
    return s && *s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static cJSON *fn_to_json(const struct agent_fn *f)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *bad = cJSON_CreateArray();
    if (!o || !bad) {
        cJSON_Delete(o);
        cJSON_Delete(bad);
        return NULL;
    }
    cJSON_AddItemToObject(o, "bundle", agent_str_or_null(f->bundle));
    cJSON_AddItemToObject(o, "version", agent_str_or_null(f->version));
    cJSON_AddItemToObject(o, "previous", agent_str_or_null(f->previous));
    cJSON_AddItemToObject(o, "previous_version", agent_str_or_null(f->prev_version));
    cJSON_AddItemToObject(o, "desired", agent_str_or_null(f->desired));
    cJSON_AddStringToObject(o, "status", agent_status_name(f->status));
    cJSON_AddItemToObject(o, "error", agent_str_or_null(f->error));
    for (size_t i = 0; i < f->n_bad; i++)
        cJSON_AddItemToArray(bad, cJSON_CreateString(f->bad[i]));
    cJSON_AddItemToObject(o, "bad", bad);
    cJSON_AddBoolToObject(o, "watching", f->watching);
    return o;
}

char *agent_state_to_json(const struct agent_state *st)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *health = cJSON_CreateObject();
    cJSON *fns = cJSON_CreateObject();
    char *text = NULL;
    if (!root || !health || !fns) {
        cJSON_Delete(health);
        cJSON_Delete(fns);
        goto out;
    }
    cJSON_AddNumberToObject(root, "format", ACTIVE_FORMAT);
    cJSON_AddNumberToObject(root, "generation", (double)st->generation);
    cJSON_AddItemToObject(root, "rollout", agent_str_or_null(st->rollout));
    cJSON_AddNumberToObject(health, "min_invocations", st->min_invocations);
    cJSON_AddNumberToObject(health, "max_error_rate", st->max_error_rate);
    cJSON_AddItemToObject(root, "health", health);
    cJSON_AddItemToObject(root, "functions", fns);
    for (size_t i = 0; i < st->n; i++) {
        cJSON *f = fn_to_json(&st->fns[i]);
        if (!f)
            goto out;
        cJSON_AddItemToObject(fns, st->fns[i].name, f);
    }
    text = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(root);
    return text;
}

/* A SHA-256 field: absent or null gives "", else 64 lowercase hex digits. */
static int get_sha(const cJSON *o, const char *key, char out[AGENT_SHA_LEN + 1])
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    out[0] = '\0';
    if (!it || cJSON_IsNull(it))
        return 0;
    if (!cJSON_IsString(it) || !agent_sha_valid(it->valuestring))
        return -EINVAL;
    memcpy(out, it->valuestring, AGENT_SHA_LEN + 1);
    return 0;
}

static int get_opt_str(const cJSON *o, const char *key, char **out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it))
        return 0;
    if (!cJSON_IsString(it) || strlen(it->valuestring) > 4096)
        return -EINVAL;
    return agent_set_str(out, it->valuestring);
}

/* One function entry; on failure *field names the bad key. */
static int fn_from_json(const cJSON *o, struct agent_fn *f, const char **field)
{
    static const char *const shas[] = {"bundle", "previous", "desired"};
    char *dst[] = {f->bundle, f->previous, f->desired};
    if (!cJSON_IsObject(o))
        return *field = "(entry)", -EINVAL;
    for (size_t i = 0; i < WISP_ARRAY_LEN(shas); i++) {
        if (get_sha(o, shas[i], dst[i]) != 0)
            return *field = shas[i], -EINVAL;
    }
    if (get_opt_str(o, "version", &f->version) != 0)
        return *field = "version", -EINVAL;
    if (get_opt_str(o, "previous_version", &f->prev_version) != 0)
        return *field = "previous_version", -EINVAL;
    if (get_opt_str(o, "error", &f->error) != 0)
        return *field = "error", -EINVAL;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "status");
    int status = cJSON_IsString(s) ? agent_status_parse(s->valuestring) : -1;
    if (status < 0)
        return *field = "status", -EINVAL;
    f->status = (enum agent_status)status;
    const cJSON *bad = cJSON_GetObjectItemCaseSensitive(o, "bad");
    if (bad && !cJSON_IsArray(bad))
        return *field = "bad", -EINVAL;
    for (const cJSON *b = bad ? bad->child : NULL; b; b = b->next) {
        if (!cJSON_IsString(b) || !agent_sha_valid(b->valuestring))
            return *field = "bad", -EINVAL;
        agent_fn_mark_bad(f, b->valuestring);
    }
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "watching");
    if (w && !cJSON_IsBool(w))
        return *field = "watching", -EINVAL;
    f->watching = cJSON_IsTrue(w);
    if (f->bundle[0] && !f->version && agent_set_str(&f->version, "") != 0)
        return *field = "version", -ENOMEM;
    return 0;
}

static void header_from_json(const cJSON *root, const char *origin, struct agent_state *st)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "generation");
    if (cJSON_IsNumber(g) && g->valuedouble >= 0 && g->valuedouble <= 9007199254740992.0)
        st->generation = (uint64_t)g->valuedouble;
    else if (g)
        log_error("%s:generation: not a whole number; taken as 0", origin);
    if (get_opt_str(root, "rollout", &st->rollout) != 0)
        log_error("%s:rollout: not a string; left out", origin);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "health");
    const cJSON *mi = cJSON_GetObjectItemCaseSensitive(h, "min_invocations");
    const cJSON *mr = cJSON_GetObjectItemCaseSensitive(h, "max_error_rate");
    if (cJSON_IsNumber(mi) && mi->valuedouble >= 1 && mi->valuedouble <= 1000000 &&
        cJSON_IsNumber(mr) && mr->valuedouble >= 0 && mr->valuedouble <= 1) {
        st->min_invocations = (uint32_t)mi->valuedouble;
        st->max_error_rate = mr->valuedouble;
    }
}

int agent_state_from_json(const char *json, size_t len, const char *origin, struct agent_state *st,
                          char *err, size_t errlen)
{
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *fns = cJSON_GetObjectItemCaseSensitive(root, "functions");
    int rc = 0;
    if (!cJSON_IsObject(root))
        rc = wisp_errf(err, errlen, -EINVAL, "%s: not a JSON object", origin);
    else if (!cJSON_IsNumber(fmt) || fmt->valuedouble != ACTIVE_FORMAT)
        rc = wisp_errf(err, errlen, -EINVAL, "%s:format: must be %d", origin, ACTIVE_FORMAT);
    else if (!cJSON_IsObject(fns))
        rc = wisp_errf(err, errlen, -EINVAL, "%s:functions: must be an object", origin);
    if (rc) {
        cJSON_Delete(root);
        return rc;
    }
    header_from_json(root, origin, st);
    for (const cJSON *it = fns->child; it && rc == 0; it = it->next) {
        const char *field = "";
        if (!agent_name_valid(it->string) || agent_state_find(st, it->string)) {
            log_error("%s:functions: \"%.80s\" is not a function name or given twice; left out",
                      origin, it->string ? it->string : "");
            continue;
        }
        struct agent_fn *f = agent_state_add(st, it->string);
        if (!f) {
            rc = -ENOMEM;
            break;
        }
        int frc = fn_from_json(it, f, &field);
        if (frc == -ENOMEM) {
            rc = frc;
        } else if (frc) {
            log_error("%s:functions.%s.%s: invalid; the function is left out", origin, it->string,
                      field);
            agent_state_remove(st, st->n - 1);
        }
    }
    cJSON_Delete(root);
    return rc;
}

int agent_state_load(const char *path, struct agent_state *st, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = wisp_read_file(path, ACTIVE_MAX_BYTES, &text, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: cannot read: %s", path, strerror(-rc));
    char why[512];
    rc = agent_state_from_json(text, len, path, st, why, sizeof(why));
    free(text);
    if (rc == -EINVAL) {
        /* Not ours to guess at: keep it for a post-mortem and start with no
         * managed functions; the desired state brings them back. */
        char aside[4096];
        (void)snprintf(aside, sizeof(aside), "%s.corrupt", path);
        log_error("%s; moved aside to %s: no managed functions run until the control plane "
                  "sends the desired state",
                  why, aside);
        if (rename(path, aside) != 0)
            log_error("%s: cannot rename: %s", path, strerror(errno));
        uint32_t mi = st->min_invocations;
        double mr = st->max_error_rate;
        agent_state_fini(st);
        agent_state_init(st, mi, mr);
        return 0;
    }
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: %s", path, strerror(-rc));
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    (void)snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        (void)snprintf(dir, sizeof(dir), ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

int agent_state_save(const char *path, const struct agent_state *st, char *err, size_t errlen)
{
    char *text = agent_state_to_json(st);
    if (!text)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", path);
    char tmp[4096];
    (void)snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = wisp_errf(err, errlen, -errno, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    rc = wisp_write_full(fd, text, strlen(text));
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0)
        rc = fsync_dir_of(path);
    if (rc) {
        wisp_errf(err, errlen, rc, "%s: cannot write: %s", path, strerror(-rc));
        (void)unlink(tmp);
    }
out:
    free(text);
    return rc;
}

/* ---- bundle folders ---- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (rc != 0 && errno != ENOENT)
        log_warn("cannot remove %s: %s", path, strerror(errno));
    return 0;
}

int agent_rmtree(const char *path)
{
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        return -errno;
    return 0;
}

static bool in_use(const struct agent_state *st, const char *name)
{
    for (size_t i = 0; i < st->n; i++) {
        if (strcmp(st->fns[i].bundle, name) == 0 || strcmp(st->fns[i].previous, name) == 0)
            return true;
    }
    return false;
}

void agent_bundles_gc(const char *bundles_dir, const struct agent_state *st)
{
    DIR *d = opendir(bundles_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 || in_use(st, de->d_name))
            continue;
        char *full = wisp_path_join(bundles_dir, de->d_name);
        if (!full)
            break;
        log_info("removing bundle folder %s (neither current nor previous of any function)", full);
        if (agent_rmtree(full) != 0)
            log_warn("cannot remove %s: %s", full, strerror(errno));
        free(full);
    }
    closedir(d);
}
