/*
 * Loading a function folder: reads <dir>/function.json, resolves the handler
 * inside the folder (through symlinks) and computes the content version from
 * function.json and every Lua file require() can load (the folder's own
 * *.lua and lib/ recursively) when no "version" is given.
 */
#include "fnspec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fnspec_internal.h"
#include "util.h"

/* Feeds one named part into the content hash: name, bytes, then the length,
 * so that moving bytes between parts changes the version. */
static uint64_t hash_tail(uint64_t h, uint64_t len)
{
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(len >> (8 * i));
    return wisp_fnv1a64(h, le, sizeof(le));
}

static int hash_file(uint64_t *h, const char *name, const char *path)
{
    char buf[16384];
    uint64_t total = 0;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    *h = wisp_fnv1a64(*h, name, strlen(name) + 1);
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : 0;
            break;
        }
        *h = wisp_fnv1a64(*h, buf, (size_t)r);
        total += (uint64_t)r;
    }
    *h = hash_tail(*h, total);
    close(fd);
    return rc;
}

static bool is_lua(const char *name)
{
    size_t len = strlen(name);
    return len > 4 && strcmp(name + len - 4, ".lua") == 0;
}

/* Hashes every *.lua that require() can load: those at the top of the
 * folder and, recursively (depth <= 8), under lib/, in sorted order, each
 * with its relative path as label. */
static int hash_lua(uint64_t *h, const char *dir, const char *rel, bool recurse, int depth,
                    char *msg, size_t cap)
{
    char **names = NULL;
    size_t n = 0;
    char *path = *rel ? wisp_path_join(dir, rel) : wisp_strndup(dir, strlen(dir));
    int rc = path ? wisp_list_dir(path, NULL, true, &names, &n) : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char label[PATH_MAX];
        wisp_errf(label, sizeof(label), 0, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        char *full = wisp_path_join(dir, label);
        struct stat st;
        if (!full) {
            rc = -ENOMEM;
            break;
        }
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && is_lua(names[i]))
            rc = hash_file(h, label, full);
        else if (stat(full, &st) == 0 && S_ISDIR(st.st_mode) && depth < 8 &&
                 (recurse || strcmp(label, "lib") == 0))
            rc = hash_lua(h, dir, label, true, depth + 1, msg, cap);
        free(full);
    }
    if (rc && rc != -ENOMEM && !*msg)
        wisp_errf(msg, cap, rc, "cannot read %s: %s", path ? path : dir, strerror(-rc));
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(path);
    return rc;
}

/* Resolves the handler and checks that it is a regular file inside the
 * folder even through symlinks. *out is malloc'd. */
static int resolve_handler(const char *dir, const char *handler, char **out, char *msg, size_t cap)
{
    char show[SHOW_CAP];
    if (!handler)
        return -EINVAL; /* parse always sets it; this keeps the analyzer sure */
    char *path = wisp_path_join(dir, handler), *root = realpath(dir, NULL);
    char *real = path ? realpath(path, NULL) : NULL;
    int rc = 0, e = errno;
    struct stat st;
    wisp_fnspec_quote(handler, strlen(handler), show, sizeof(show));
    if (!path || (!real && e == ENOMEM)) {
        rc = -ENOMEM;
    } else if (!real || !root) {
        rc = wisp_errf(msg, cap, -EINVAL, "handler: file %s not found in %s%s%s", show, dir,
                       e == ENOENT || e == ENOTDIR ? "" : ": ",
                       e == ENOENT || e == ENOTDIR ? "" : strerror(e));
    } else if (strncmp(real, root, strlen(root)) != 0 ||
               (real[strlen(root)] != '/' && strcmp(root, "/") != 0)) {
        rc = wisp_errf(msg, cap, -EINVAL, "handler: %s leads outside %s (to %s)", show, dir, real);
    } else if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = wisp_errf(msg, cap, -EINVAL, "handler: %s in %s is not a regular file", show, dir);
    } else {
        *out = real;
        real = NULL;
    }
    free(path);
    free(root);
    free(real);
    return rc;
}

int wisp_fnspec_load(const char *dir, struct wisp_fnspec **out, char *err, size_t errlen)
{
    char msg[MSG_CAP] = "", *origin = NULL, *json = NULL, *handler = NULL;
    size_t len = 0;
    struct wisp_fnspec *spec = NULL;
    int rc;
    *out = NULL;
    if (!dir)
        return wisp_errf(err, errlen, -EINVAL, "function.json:(root): no folder given");
    if (!(origin = wisp_path_join(dir, "function.json")))
        return wisp_errf(err, errlen, -ENOMEM, "%s/function.json: out of memory", dir);
    rc = wisp_read_file(origin, (size_t)WISP_MAX_SPEC_BYTES, &json, &len);
    if (rc == -EFBIG)
        wisp_errf(msg, sizeof(msg), -EINVAL, "(json): more than the limit of %u bytes",
                  WISP_MAX_SPEC_BYTES);
    else if (rc)
        wisp_errf(msg, sizeof(msg), rc, "(json): cannot read: %s", strerror(-rc));
    if (rc == -EFBIG)
        rc = -EINVAL;
    if (rc)
        goto out;
    rc = wisp_fnspec_parse(json, len, origin, dir, &spec, err, errlen);
    if (rc)
        goto out;
    rc = resolve_handler(dir, spec->handler, &handler, msg, sizeof(msg));
    if (rc == 0 && !handler)
        rc = -EINVAL; /* set on success; this keeps the analyzer sure across files */
    if (rc == 0 && spec->version[0] == '\0') {
        uint64_t h = wisp_fnv1a64(WISP_FNV1A64_INIT, "function.json", sizeof("function.json"));
        h = hash_tail(wisp_fnv1a64(h, json, len), len);
        rc = hash_file(&h, spec->handler, handler);
        if (rc)
            wisp_errf(msg, sizeof(msg), rc, "handler: cannot read %s: %s", handler, strerror(-rc));
        else
            rc = hash_lua(&h, dir, "", false, 0, msg, sizeof(msg));
        char version[17];
        wisp_errf(version, sizeof(version), 0, "%012" PRIx64, h >> 16);
        char *dup = rc == 0 ? wisp_strndup(version, 12) : NULL;
        if (rc == 0 && !dup)
            rc = -ENOMEM;
        if (dup) {
            free(spec->version);
            spec->version = dup;
        }
    }
    if (rc == 0) {
        *out = spec;
        spec = NULL;
    }
out:
    if (rc == -ENOMEM)
        wisp_errf(err, errlen, rc, "%s: out of memory", origin);
    else if (rc && msg[0])
        wisp_errf(err, errlen, rc, "%s:%s", origin, msg);
    wisp_fnspec_destroy(spec);
    free(handler);
    free(json);
    free(origin);
    return rc;
}
