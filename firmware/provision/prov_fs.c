/*
 * Files: every one is written to a temp file in its own directory,
 * fsync'ed, renamed over the old one and the directory fsync'ed, so a
 * power cut leaves either the old file or the new one, never a mix.
 */
#include "prov.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

int wisp_prov_read(const char *path, char **out, size_t *len)
{
    return wisp_read_file(path, WISP_PROV_MAX_FILE, out, len);
}

/* The directory part of path (malloc'd): "." when there is none. */
static char *parent_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return wisp_strndup(".", 1);
    return wisp_strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

int wisp_prov_sync_parent(const char *path)
{
    char *dir = parent_of(path);
    if (!dir)
        return -ENOMEM;
    int rc = 0, fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
    } else {
        /* Some file systems cannot sync a directory (EINVAL): nothing to wait for. */
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = -errno;
        (void)close(fd);
    }
    free(dir);
    return rc;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Fills the temp file fd: mode, owner, content, fsync. */
static int fill(int fd, const void *data, size_t len, mode_t mode, const struct wisp_prov_opts *o)
{
    if (mode && fchmod(fd, mode) != 0)
        return -errno;
    if (o && o->chown && fchown(fd, o->uid, o->gid) != 0)
        return -errno;
    int rc = write_all(fd, data, len);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    return rc;
}

int wisp_prov_write_atomic(const char *path, const void *data, size_t len, mode_t mode, bool config,
                           const struct wisp_prov_opts *o, char *err, size_t errlen)
{
    char *dir = parent_of(path);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t cap = (dir ? strlen(dir) : 0) + strlen(base) + sizeof(WISP_PROV_TEMP_PREFIX) + 9;
    char *tmp = dir ? malloc(cap) : NULL;
    if (!tmp) {
        free(dir);
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    }
    (void)snprintf(tmp, cap, "%s/%s%s.XXXXXX", dir, WISP_PROV_TEMP_PREFIX, base);
    int rc = 0, fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = wisp_errf(err, errlen, -errno, "cannot create a temp file in %s: %s", dir,
                       strerror(errno));
        goto out;
    }
    rc = fill(fd, data, len, mode, o);
    if (close(fd) != 0 && !rc)
        rc = -errno;
    if (rc) {
        (void)wisp_errf(err, errlen, rc, "cannot write %s: %s", tmp, strerror(-rc));
    } else if (config) {
        /* The file as written must be one wispd accepts. */
        rc = wisp_prov_check_config(tmp, path, true, err, errlen);
    }
    if (!rc && rename(tmp, path) != 0)
        rc = wisp_errf(err, errlen, -errno, "cannot rename %s to %s: %s", tmp, path,
                       strerror(errno));
    if (rc) {
        (void)unlink(tmp);
        goto out;
    }
    rc = wisp_prov_sync_parent(path);
    if (rc)
        (void)wisp_errf(err, errlen, rc, "cannot sync the directory of %s: %s", path,
                        strerror(-rc));
out:
    free(tmp);
    free(dir);
    return rc;
}

/* Makes one directory with mode (umask aside) and the owner asked for. */
static int make_dir(const char *path, mode_t mode, const struct wisp_prov_opts *o)
{
    if (mkdir(path, mode) != 0)
        return errno == EEXIST ? 0 : -errno;
    if (chmod(path, mode) != 0)
        return -errno;
    if (o && o->chown && chown(path, o->uid, o->gid) != 0)
        return -errno;
    return wisp_prov_sync_parent(path);
}

int wisp_prov_mkdirs(const char *path, mode_t mode, const struct wisp_prov_opts *o, char *err,
                     size_t errlen)
{
    char *p = wisp_strndup(path, strlen(path));
    if (!p)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    int rc = 0;
    /* Parents are made 0755 and keep their owner; only path gets mode and o's owner. */
    for (char *s = p + 1; !rc; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        rc = c ? make_dir(p, 0755, NULL) : make_dir(p, mode, o);
        if (rc)
            (void)wisp_errf(err, errlen, rc, "cannot make the directory %s: %s", p, strerror(-rc));
        *s = c;
        if (!c)
            break;
    }
    free(p);
    return rc;
}

static int set_attrs(const struct wisp_prov_item *it, const struct wisp_prov_opts *o, char *err,
                     size_t errlen)
{
    if (chmod(it->path, it->mode) != 0 || (o->chown && chown(it->path, o->uid, o->gid) != 0))
        return wisp_errf(err, errlen, -errno, "cannot set the mode or owner of %s: %s", it->path,
                         strerror(errno));
    return 0;
}

static int remove_file(const struct wisp_prov_item *it, char *err, size_t errlen)
{
    if (unlink(it->path) != 0 && errno != ENOENT)
        return wisp_errf(err, errlen, -errno, "cannot remove %s: %s", it->path, strerror(errno));
    int rc = wisp_prov_sync_parent(it->path);
    if (rc)
        return wisp_errf(err, errlen, rc, "cannot sync the directory of %s: %s", it->path,
                         strerror(-rc));
    return 0;
}

void wisp_prov_describe(const struct wisp_prov_item *it, bool dry, FILE *out)
{
    static const char *const done[] = {"unchanged", "created", "updated", "set the mode/owner of",
                                       "removed"};
    static const char *const would[] = {"unchanged", "would create", "would update",
                                        "would set the mode/owner of", "would remove"};
    const char *verb = (dry ? would : done)[it->change];
    if (it->op == WISP_PROV_MKDIR)
        (void)fprintf(out, "  %s %s/ (%s)\n", verb, it->path, it->what);
    else if (it->op == WISP_PROV_REMOVE)
        (void)fprintf(out, "  %s %s (%s)\n", verb, it->path, it->what);
    else
        (void)fprintf(out, "  %s %s (%s; mode %04o)\n", verb, it->path, it->what,
                      (unsigned)it->mode);
}

int wisp_prov_apply(const struct wisp_prov_plan *p, const struct wisp_prov_opts *o, FILE *out,
                    char *err, size_t errlen)
{
    for (size_t i = 0; i < p->n; i++) {
        const struct wisp_prov_item *it = &p->items[i];
        int rc = 0;
        if (it->change == WISP_PROV_SAME)
            continue;
        if (it->op == WISP_PROV_MKDIR)
            rc = wisp_prov_mkdirs(it->path, it->mode, it->no_chown ? NULL : o, err, errlen);
        else if (it->op == WISP_PROV_REMOVE)
            rc = remove_file(it, err, errlen);
        else if (it->change == WISP_PROV_ATTRS)
            rc = set_attrs(it, o, err, errlen);
        else if (!it->data) /* a kept file (the device key) vanished since the plan */
            rc = wisp_errf(err, errlen, -ENOENT, "%s disappeared while provisioning", it->path);
        else
            rc = wisp_prov_write_atomic(it->path, it->data, it->len, it->mode, it->config, o, err,
                                        errlen);
        if (rc)
            return rc;
        wisp_prov_describe(it, false, out);
    }
    return 0;
}
