/*
 * Packing a function folder into a bundle file and checking / unpacking
 * one (format in bundle.h and cloud-sync/README.md). A reader trusts
 * nothing in the file: every declared path, size and hash is checked before
 * or while bytes are written, and an unpack either produces the complete
 * folder or leaves nothing behind.
 */
#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <cjson/cJSON.h>

#include "sign.h"
#include "util.h"

enum { HEADER_LEN = 12, CHUNK = 16384, TMP_EXTRA = 16 };

void wisp_bundle_info_fini(struct wisp_bundle_info *info)
{
    if (!info)
        return;
    for (size_t i = 0; i < info->nfiles; i++)
        free(info->files[i].path);
    free(info->files);
    free(info->name);
    free(info->version);
    memset(info, 0, sizeof(*info));
}

/* Reads up to len bytes; returns the count (short only at end of file) or
 * a negative errno. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int oom(char *err, size_t errlen, const char *path)
{
    return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", path);
}

/* NULL when rel is an acceptable path inside a bundle, else why not. */
static const char *bad_path(const char *rel)
{
    size_t len = strlen(rel);
    if (len == 0)
        return "empty";
    if (len > WISP_BUNDLE_MAX_PATH)
        return "longer than 255 bytes";
    if (rel[0] == '/')
        return "absolute: paths must be relative to the function folder";
    if (!wisp_utf8_valid(rel, len))
        return "not valid UTF-8";
    int depth = 0;
    for (const char *c = rel;; depth++) {
        const char *slash = strchr(c, '/');
        size_t n = slash ? (size_t)(slash - c) : strlen(c);
        if (n == 0)
            return "has an empty component (\"//\" or a trailing \"/\")";
        if (n == 2 && c[0] == '.' && c[1] == '.')
            return "has a \"..\" component: paths must stay inside the function folder";
        if (c[0] == '.')
            return "has a component starting with \".\" (hidden files are not bundled)";
        for (size_t i = 0; i < n; i++)
            if (c[i] == '\\' || (unsigned char)c[i] < 0x20)
                return "has a backslash or control character";
        if (!slash)
            break;
        c = slash + 1;
    }
    if (depth > WISP_BUNDLE_MAX_DEPTH)
        return "nested deeper than 8 folders";
    return NULL;
}

/* ---- packing ---- */

struct pack_list {
    char **paths;
    size_t n, cap;
    uint64_t total;
};

static int cmp_paths(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Collects the regular files under dir/rel into list, refusing anything
 * else. */
static int collect(const char *dir, const char *rel, int depth, struct pack_list *list, char *err,
                   size_t errlen)
{
    char *here = *rel ? wisp_path_join(dir, rel) : wisp_strndup(dir, strlen(dir));
    if (!here)
        return oom(err, errlen, dir);
    DIR *d = opendir(here);
    int rc = 0;
    if (!d) {
        rc =
            wisp_errf(err, errlen, -errno, "%s: cannot read the folder: %s", here, strerror(errno));
        free(here);
        return rc;
    }
    for (const struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue; /* ".", ".." and hidden files, as the loader skips them */
        char child[PATH_MAX];
        if ((size_t)snprintf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "", e->d_name) >=
            sizeof(child)) {
            rc = wisp_errf(err, errlen, -ENAMETOOLONG, "%s/%s: path too long", here, e->d_name);
            break;
        }
        char *full = wisp_path_join(dir, child);
        struct stat st;
        const char *why = NULL;
        if (!full) {
            rc = oom(err, errlen, dir);
            break;
        }
        if (lstat(full, &st) != 0)
            rc = wisp_errf(err, errlen, -errno, "%s: %s", full, strerror(errno));
        else if (S_ISLNK(st.st_mode))
            rc =
                wisp_errf(err, errlen, -EINVAL,
                          "%s: a symbolic link: bundles hold only regular files and folders", full);
        else if (S_ISDIR(st.st_mode) && depth >= WISP_BUNDLE_MAX_DEPTH)
            rc = wisp_errf(err, errlen, -EINVAL, "%s: nested deeper than %d folders", full,
                           WISP_BUNDLE_MAX_DEPTH);
        else if (S_ISDIR(st.st_mode))
            rc = collect(dir, child, depth + 1, list, err, errlen);
        else if (!S_ISREG(st.st_mode))
            rc = wisp_errf(err, errlen, -EINVAL, "%s: not a regular file", full);
        else if ((why = bad_path(child)) != NULL)
            rc = wisp_errf(err, errlen, -EINVAL, "%s: cannot be bundled: its path %s", full, why);
        else if ((uint64_t)st.st_size > WISP_BUNDLE_MAX_FILE)
            rc = wisp_errf(err, errlen, -EFBIG,
                           "%s: %" PRIu64 " bytes, more than the limit of %u per file", full,
                           (uint64_t)st.st_size, WISP_BUNDLE_MAX_FILE);
        else if (list->n >= WISP_BUNDLE_MAX_FILES)
            rc = wisp_errf(err, errlen, -EFBIG, "%s: more than %d files", dir,
                           WISP_BUNDLE_MAX_FILES);
        else if ((list->total += (uint64_t)st.st_size) > WISP_BUNDLE_MAX_TOTAL)
            rc = wisp_errf(err, errlen, -EFBIG, "%s: its files exceed the limit of %u bytes in all",
                           dir, WISP_BUNDLE_MAX_TOTAL);
        else {
            if (list->n == list->cap) {
                size_t cap = list->cap ? list->cap * 2 : 16;
                char **grown = realloc(list->paths, cap * sizeof(*grown));
                if (!grown)
                    rc = oom(err, errlen, dir);
                else {
                    list->paths = grown;
                    list->cap = cap;
                }
            }
            if (!rc &&
                (!list->paths || !(list->paths[list->n] = wisp_strndup(child, strlen(child)))))
                rc = oom(err, errlen, dir);
            if (!rc)
                list->n++;
        }
        free(full);
    }
    closedir(d);
    free(here);
    return rc;
}

/* Streams one file: its size and SHA-256, and with out_fd >= 0 its bytes
 * appended there. */
static int pack_stream(const char *full, int out_fd, uint64_t *size, unsigned char sum[32],
                       char *err, size_t errlen)
{
    unsigned char buf[CHUNK];
    int fd = open(full, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return wisp_errf(err, errlen, -errno, "%s: cannot open: %s", full, strerror(errno));
    struct wisp_sha256 h;
    wisp_sha256_start(&h);
    int rc = 0;
    *size = 0;
    for (;;) {
        ssize_t n = read_full(fd, buf, sizeof(buf));
        if (n < 0)
            rc = wisp_errf(err, errlen, (int)n, "%s: cannot read: %s", full, strerror((int)-n));
        if (n <= 0)
            break;
        wisp_sha256_update(&h, buf, (size_t)n);
        *size += (uint64_t)n;
        if (*size > WISP_BUNDLE_MAX_FILE) {
            rc = wisp_errf(err, errlen, -EFBIG, "%s: grew past the limit of %u bytes", full,
                           WISP_BUNDLE_MAX_FILE);
            break;
        }
        if (out_fd >= 0 && (rc = wisp_write_full(out_fd, buf, (size_t)n)) != 0) {
            rc = wisp_errf(err, errlen, rc, "cannot write the bundle: %s", strerror(-rc));
            break;
        }
    }
    wisp_sha256_finish(&h, sum);
    close(fd);
    return rc;
}

static char *build_manifest(const char *name, const char *version, const struct pack_list *list,
                            const uint64_t *sizes, char (*sums)[65])
{
    cJSON *root = cJSON_CreateObject(), *files = NULL;
    char *text = NULL;
    if (!root || !cJSON_AddNumberToObject(root, "format", WISP_BUNDLE_FORMAT) ||
        !cJSON_AddStringToObject(root, "name", name) ||
        !cJSON_AddStringToObject(root, "version", version) ||
        !(files = cJSON_AddArrayToObject(root, "files")))
        goto out;
    for (size_t i = 0; i < list->n; i++) {
        cJSON *f = cJSON_CreateObject();
        if (!f)
            goto out;
        cJSON_AddItemToArray(files, f);
        if (!cJSON_AddStringToObject(f, "path", list->paths[i]) ||
            !cJSON_AddNumberToObject(f, "size", (double)sizes[i]) ||
            !cJSON_AddStringToObject(f, "sha256", sums[i]))
            goto out;
    }
    text = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(root);
    return text;
}

int wisp_bundle_pack(const char *dir, const char *name, const char *version, const char *out,
                     char *err, size_t errlen)
{
    struct pack_list list = {0};
    uint64_t *sizes = NULL;
    char(*sums)[65] = NULL, *manifest = NULL, tmp[PATH_MAX + TMP_EXTRA] = "";
    int fd = -1;
    int rc = collect(dir, "", 0, &list, err, errlen);
    if (!rc && list.n > 1)
        qsort(list.paths, list.n, sizeof(*list.paths), cmp_paths);
    if (!rc && (!(sizes = calloc(list.n + 1, sizeof(*sizes))) ||
                !(sums = calloc(list.n + 1, sizeof(*sums)))))
        rc = oom(err, errlen, dir);
    bool has_spec = false;
    for (size_t i = 0; !rc && i < list.n; i++) {
        char *full = wisp_path_join(dir, list.paths[i]);
        unsigned char sum[32];
        rc = full ? pack_stream(full, -1, &sizes[i], sum, err, errlen) : oom(err, errlen, dir);
        wisp_sha256_hex(sum, sums[i]);
        has_spec |= strcmp(list.paths[i], "function.json") == 0;
        free(full);
    }
    if (!rc && !has_spec)
        rc = wisp_errf(err, errlen, -EINVAL, "%s: no function.json: not a function folder", dir);
    if (!rc && !(manifest = build_manifest(name, version, &list, sizes, sums)))
        rc = oom(err, errlen, dir);
    size_t mlen = manifest ? strlen(manifest) : 0;
    if (!rc && mlen > WISP_BUNDLE_MAX_MANIFEST)
        rc = wisp_errf(err, errlen, -EFBIG, "%s: manifest larger than %u bytes", dir,
                       WISP_BUNDLE_MAX_MANIFEST);
    if (!rc && (size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", out) >= sizeof(tmp))
        rc = wisp_errf(err, errlen, -ENAMETOOLONG, "%s: path too long", out);
    if (!rc && (fd = mkstemp(tmp)) < 0) {
        rc = wisp_errf(err, errlen, -errno, "%s: cannot create: %s", tmp, strerror(errno));
        tmp[0] = '\0';
    }
    if (!rc) {
        unsigned char head[HEADER_LEN];
        for (int i = 0; i < 8; i++)
            head[i] = (unsigned char)WISP_BUNDLE_MAGIC[i];
        for (int i = 0; i < 4; i++)
            head[8 + i] = (unsigned char)(mlen >> (24 - 8 * i));
        rc = wisp_write_full(fd, head, sizeof(head));
        if (!rc)
            rc = wisp_write_full(fd, manifest, mlen);
        if (rc)
            rc = wisp_errf(err, errlen, rc, "%s: cannot write: %s", out, strerror(-rc));
    }
    /* Second pass: copy, and make sure nothing changed since the manifest. */
    for (size_t i = 0; !rc && i < list.n; i++) {
        char *full = wisp_path_join(dir, list.paths[i]);
        unsigned char sum[32];
        char hex[65];
        uint64_t size = 0;
        rc = full ? pack_stream(full, fd, &size, sum, err, errlen) : oom(err, errlen, dir);
        wisp_sha256_hex(sum, hex);
        if (!rc && (size != sizes[i] || strcmp(hex, sums[i]) != 0))
            rc = wisp_errf(err, errlen, -EAGAIN, "%s: changed while it was being packed", full);
        free(full);
    }
    if (!rc && (fchmod(fd, 0644) != 0 || fsync(fd) != 0))
        rc = wisp_errf(err, errlen, -errno, "%s: cannot write: %s", out, strerror(errno));
    if (fd >= 0 && close(fd) != 0 && !rc)
        rc = wisp_errf(err, errlen, -errno, "%s: cannot write: %s", out, strerror(errno));
    if (!rc && rename(tmp, out) != 0)
        rc = wisp_errf(err, errlen, -errno, "%s: cannot rename %s into place: %s", out, tmp,
                       strerror(errno));
    if (rc && tmp[0])
        (void)unlink(tmp);
    for (size_t i = 0; i < list.n; i++)
        free(list.paths[i]);
    free(list.paths);
    free(sizes);
    free(sums);
    cJSON_free(manifest);
    return rc;
}

/* ---- reading ---- */

/* Fills info from the manifest JSON, checking every rule a reader
 * enforces except those that need the file's bytes. */
static int parse_manifest(const char *path, const char *text, size_t len,
                          struct wisp_bundle_info *info, char *err, size_t errlen)
{
    int rc = 0;
    if (!wisp_utf8_valid(text, len))
        return wisp_errf(err, errlen, -EBADMSG, "%s: manifest: not UTF-8 text", path);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return wisp_errf(err, errlen, -EBADMSG, "%s: manifest: not a JSON object", path);
    }
    for (const cJSON *k = root->child; k; k = k->next)
        if (strcmp(k->string, "format") != 0 && strcmp(k->string, "name") != 0 &&
            strcmp(k->string, "version") != 0 && strcmp(k->string, "files") != 0) {
            rc = wisp_errf(err, errlen, -EBADMSG, "%s: manifest: unknown key \"%s\"", path,
                           k->string);
            goto out;
        }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (!cJSON_IsNumber(fmt) || fmt->valuedouble != WISP_BUNDLE_FORMAT) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: manifest: format must be %d (this wisp reads only that)", path,
                       WISP_BUNDLE_FORMAT);
        goto out;
    }
    if (!cJSON_IsString(name) || !name->valuestring[0] || !cJSON_IsString(version) ||
        !version->valuestring[0]) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: manifest: name and version must be non-empty strings", path);
        goto out;
    }
    int count = cJSON_GetArraySize(files);
    if (!cJSON_IsArray(files) || count == 0 || count > WISP_BUNDLE_MAX_FILES) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: manifest: files must be an array of 1 to %d entries", path,
                       WISP_BUNDLE_MAX_FILES);
        goto out;
    }
    info->name = wisp_strndup(name->valuestring, strlen(name->valuestring));
    info->version = wisp_strndup(version->valuestring, strlen(version->valuestring));
    info->files = calloc((size_t)count, sizeof(*info->files));
    if (!info->name || !info->version || !info->files) {
        rc = oom(err, errlen, path);
        goto out;
    }
    bool has_spec = false;
    for (const cJSON *f = files->child; f; f = f->next) {
        size_t i = info->nfiles;
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(f, "path");
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(f, "size");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(f, "sha256");
        if (!cJSON_IsObject(f) || cJSON_GetArraySize(f) != 3 || !cJSON_IsString(p) ||
            !cJSON_IsNumber(sz) || !cJSON_IsString(sha)) {
            rc = wisp_errf(err, errlen, -EBADMSG,
                           "%s: manifest: files[%zu] must be {\"path\": string, \"size\": "
                           "number, \"sha256\": string}",
                           path, i);
            goto out;
        }
        const char *why = bad_path(p->valuestring);
        if (why) {
            rc = wisp_errf(err, errlen, -EBADMSG, "%s: manifest: files[%zu].path \"%.255s\": %s",
                           path, i, p->valuestring, why);
            goto out;
        }
        double size = sz->valuedouble;
        if (!(size >= 0) || size != (double)(uint64_t)size || size > WISP_BUNDLE_MAX_FILE) {
            rc = wisp_errf(err, errlen, -EBADMSG,
                           "%s: file %s: declared size %.0f is not a whole number of bytes up to "
                           "the limit of %u",
                           path, p->valuestring, size, WISP_BUNDLE_MAX_FILE);
            goto out;
        }
        size_t hexlen = strlen(sha->valuestring);
        if (hexlen != 64 || strspn(sha->valuestring, "0123456789abcdef") != 64) {
            rc = wisp_errf(err, errlen, -EBADMSG,
                           "%s: file %s: sha256 must be 64 lowercase hex digits", path,
                           p->valuestring);
            goto out;
        }
        /* Equal paths, or one a folder of the other, cannot both be files. */
        size_t plen = strlen(p->valuestring);
        for (size_t j = 0; j < i; j++) {
            const char *q = info->files[j].path;
            size_t qlen = strlen(q), m = plen < qlen ? plen : qlen;
            if (strncmp(q, p->valuestring, m) == 0 &&
                (plen == qlen || (plen > qlen ? p->valuestring : q)[m] == '/')) {
                rc = wisp_errf(err, errlen, -EBADMSG, "%s: manifest: %s path \"%s\" (and \"%s\")",
                               path, plen == qlen ? "duplicate" : "conflicting", p->valuestring, q);
                goto out;
            }
        }
        info->total += (uint64_t)size;
        if (info->total > WISP_BUNDLE_MAX_TOTAL) {
            rc = wisp_errf(err, errlen, -EBADMSG,
                           "%s: manifest: files exceed the limit of %u bytes in all", path,
                           WISP_BUNDLE_MAX_TOTAL);
            goto out;
        }
        if (!(info->files[i].path = wisp_strndup(p->valuestring, plen))) {
            rc = oom(err, errlen, path);
            goto out;
        }
        info->files[i].size = (uint64_t)size;
        memcpy(info->files[i].sha256, sha->valuestring, 65);
        info->nfiles++;
        has_spec |= strcmp(p->valuestring, "function.json") == 0;
    }
    if (!has_spec)
        rc = wisp_errf(err, errlen, -EBADMSG, "%s: manifest: no function.json in the bundle", path);
out:
    cJSON_Delete(root);
    return rc;
}

/* Creates the folders leading to rel under root (which this process made,
 * so nothing in it is a symlink). */
static int make_parents(const char *root, const char *rel)
{
    char buf[PATH_MAX];
    if ((size_t)snprintf(buf, sizeof(buf), "%s/%s", root, rel) >= sizeof(buf))
        return -ENAMETOOLONG;
    for (char *s = buf + strlen(root) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    return 0;
}

static int fsync_parent(const char *file)
{
    char buf[PATH_MAX];
    (void)snprintf(buf, sizeof(buf), "%s", file);
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = '\0';
    int fd = open(slash ? buf : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    (void)remove(p);
    return 0;
}

/* Copies (or with out NULL only hashes) the next size bytes of in. */
static int read_member(const char *path, int in, const struct wisp_bundle_file *f, int out,
                       struct wisp_sha256 *whole, char *err, size_t errlen)
{
    unsigned char buf[CHUNK], sum[32];
    char hex[65];
    struct wisp_sha256 h;
    uint64_t left = f->size;
    int rc = 0;
    wisp_sha256_start(&h);
    while (left > 0 && rc == 0) {
        size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
        ssize_t n = read_full(in, buf, want);
        if (n < 0)
            rc = wisp_errf(err, errlen, (int)n, "%s: cannot read: %s", path, strerror((int)-n));
        else if ((size_t)n < want)
            rc = wisp_errf(err, errlen, -EBADMSG,
                           "%s: file %s: truncated (%" PRIu64 " of %" PRIu64 " bytes present)",
                           path, f->path, f->size - left + (uint64_t)n, f->size);
        if (rc)
            break;
        wisp_sha256_update(&h, buf, (size_t)n);
        wisp_sha256_update(whole, buf, (size_t)n);
        left -= (uint64_t)n;
        if (out >= 0 && (rc = wisp_write_full(out, buf, (size_t)n)) != 0)
            rc = wisp_errf(err, errlen, rc, "%s: file %s: cannot write: %s", path, f->path,
                           strerror(-rc));
    }
    wisp_sha256_finish(&h, sum);
    wisp_sha256_hex(sum, hex);
    if (!rc && strcmp(hex, f->sha256) != 0)
        rc = wisp_errf(err, errlen, -EBADMSG, "%s: file %s: sha256 mismatch", path, f->path);
    return rc;
}

static int bundle_read(const char *path, const char *dest, const unsigned char *expect,
                       struct wisp_bundle_info *out, char *err, size_t errlen)
{
    struct wisp_bundle_info info = {0};
    struct wisp_sha256 whole;
    char *manifest = NULL, tmp[PATH_MAX] = "";
    unsigned char head[HEADER_LEN];
    struct stat st;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
    wisp_sha256_start(&whole);
    if (out)
        memset(out, 0, sizeof(*out));
    if (fd < 0) {
        rc = wisp_errf(err, errlen, -errno, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = wisp_errf(err, errlen, -EINVAL, "%s: not a regular file", path);
        goto out;
    }
    ssize_t n = read_full(fd, head, sizeof(head));
    if (n >= 0 && (size_t)n >= 8 && memcmp(head, WISP_BUNDLE_MAGIC, 8) != 0)
        rc = wisp_errf(err, errlen, -EBADMSG, "%s: not a Wisp bundle (no WISPBNDL magic)", path);
    else if (n >= 0 && (size_t)n < sizeof(head))
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: truncated: %zd bytes, shorter than the %d-byte header", path, n,
                       HEADER_LEN);
    else if (n < 0)
        rc = wisp_errf(err, errlen, (int)n, "%s: cannot read: %s", path, strerror((int)-n));
    if (rc)
        goto out;
    wisp_sha256_update(&whole, head, sizeof(head));
    uint32_t mlen =
        (uint32_t)head[8] << 24 | (uint32_t)head[9] << 16 | (uint32_t)head[10] << 8 | head[11];
    if (mlen == 0 || mlen > WISP_BUNDLE_MAX_MANIFEST) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: manifest length %" PRIu32 " is outside 1..%u bytes", path, mlen,
                       WISP_BUNDLE_MAX_MANIFEST);
        goto out;
    }
    if (!(manifest = malloc(mlen))) {
        rc = oom(err, errlen, path);
        goto out;
    }
    n = read_full(fd, manifest, mlen);
    if (n < 0)
        rc = wisp_errf(err, errlen, (int)n, "%s: cannot read: %s", path, strerror((int)-n));
    else if ((size_t)n < mlen)
        rc = wisp_errf(err, errlen, -EBADMSG, "%s: truncated inside the manifest", path);
    if (rc)
        goto out;
    wisp_sha256_update(&whole, manifest, mlen);
    rc = parse_manifest(path, manifest, mlen, &info, err, errlen);
    if (rc)
        goto out;
    uint64_t want = (uint64_t)HEADER_LEN + mlen + info.total;
    if ((uint64_t)st.st_size < want) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: truncated: %" PRIu64 " bytes, the manifest declares %" PRIu64, path,
                       (uint64_t)st.st_size, want);
        goto out;
    }
    if ((uint64_t)st.st_size > want) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: %" PRIu64 " bytes of trailing data after the last file", path,
                       (uint64_t)st.st_size - want);
        goto out;
    }
    if (dest) {
        struct stat dst;
        if (lstat(dest, &dst) == 0 || errno != ENOENT) {
            rc = wisp_errf(err, errlen, -EEXIST, "%s: already exists: unpack into a new directory",
                           dest);
            goto out;
        }
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", dest) >= sizeof(tmp)) {
            rc = wisp_errf(err, errlen, -ENAMETOOLONG, "%s: path too long", dest);
            tmp[0] = '\0';
            goto out;
        }
        if (!mkdtemp(tmp)) {
            rc = wisp_errf(err, errlen, -errno, "%s: cannot create: %s", tmp, strerror(errno));
            tmp[0] = '\0';
            goto out;
        }
    }
    for (size_t i = 0; i < info.nfiles; i++) {
        const struct wisp_bundle_file *f = &info.files[i];
        int ofd = -1;
        char full[PATH_MAX];
        if (dest) {
            rc = make_parents(tmp, f->path);
            if (!rc && (size_t)snprintf(full, sizeof(full), "%s/%s", tmp, f->path) >= sizeof(full))
                rc = -ENAMETOOLONG;
            if (!rc &&
                (ofd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644)) < 0)
                rc = -errno;
            if (rc) {
                rc = wisp_errf(err, errlen, rc, "%s: file %s: cannot create in %s: %s", path,
                               f->path, tmp, strerror(-rc));
                goto out;
            }
        }
        rc = read_member(path, fd, f, ofd, &whole, err, errlen);
        if (!rc && ofd >= 0 && (fsync(ofd) != 0 || fsync_parent(full) != 0))
            rc = wisp_errf(err, errlen, -errno, "%s: file %s: cannot sync: %s", path, f->path,
                           strerror(errno));
        if (ofd >= 0 && close(ofd) != 0 && !rc)
            rc = wisp_errf(err, errlen, -errno, "%s: file %s: cannot write: %s", path, f->path,
                           strerror(errno));
        if (rc)
            goto out;
    }
    char extra;
    n = read_full(fd, &extra, 1);
    if (n != 0) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: trailing data after the last file (it grew "
                       "while being read)",
                       path);
        goto out;
    }
    wisp_sha256_finish(&whole, info.digest);
    if (expect && memcmp(expect, info.digest, sizeof(info.digest)) != 0) {
        rc = wisp_errf(err, errlen, -EBADMSG,
                       "%s: changed after its signature was verified: refusing it", path);
        goto out;
    }
    if (dest) {
        int fsd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fsd >= 0) {
            (void)fsync(fsd);
            close(fsd);
        }
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_NOREPLACE) != 0) {
            rc = wisp_errf(err, errlen, -errno, "%s: cannot rename %s to it: %s", dest, tmp,
                           strerror(errno));
            goto out;
        }
        tmp[0] = '\0';
        (void)fsync_parent(dest);
    }
out:
    if (rc && tmp[0])
        (void)nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mbedtls_sha256_free(&whole.ctx);
    if (fd >= 0)
        close(fd);
    free(manifest);
    if (!rc && out)
        *out = info;
    else
        wisp_bundle_info_fini(&info);
    return rc;
}

int wisp_bundle_check(const char *path, const unsigned char *expect, struct wisp_bundle_info *info,
                      char *err, size_t errlen)
{
    return bundle_read(path, NULL, expect, info, err, errlen);
}

int wisp_bundle_unpack(const char *path, const char *dest, const unsigned char *expect,
                       struct wisp_bundle_info *info, char *err, size_t errlen)
{
    return bundle_read(path, dest, expect, info, err, errlen);
}
