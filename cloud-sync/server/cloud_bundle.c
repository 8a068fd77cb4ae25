/* Bundle uploads, their files under DIR/bundles and their store records. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WISP_LOG_MODULE "cloud"
#include "bundle.h"
#include "cloud_bundle.h"
#include "log.h"
#include "sign.h"
#include "util.h"

struct cloud_upload {
    struct cloud *c;
    unsigned char hdr[12];
    size_t hdr_have;
    uint32_t siglen;
    unsigned char sig[CLOUD_SIG_MAX];
    size_t sig_have;
    int fd;
    char *tmp;
    uint64_t bytes; /* of the bundle file */
};

bool cloud_sha_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 64;
}

int cloud_upload_begin(struct cloud *c, struct cloud_upload **out, char *err, size_t errlen)
{
    struct cloud_upload *u = calloc(1, sizeof(*u));
    if (!u)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    u->c = c;
    size_t n = strlen(c->bundle_dir) + 32;
    u->tmp = malloc(n);
    if (!u->tmp) {
        free(u);
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    }
    (void)snprintf(u->tmp, n, "%s/.upload-XXXXXX", c->bundle_dir);
    u->fd = mkstemp(u->tmp);
    if (u->fd < 0) {
        int e = errno;
        (void)wisp_errf(err, errlen, -e, "%s: cannot create an upload file: %s", c->bundle_dir,
                        strerror(e));
        free(u->tmp);
        free(u);
        return -e;
    }
    *out = u;
    return 0;
}

static size_t take_hdr(struct cloud_upload *u, const char *data, size_t len)
{
    size_t n = sizeof(u->hdr) - u->hdr_have;
    n = n < len ? n : len;
    memcpy(u->hdr + u->hdr_have, data, n);
    u->hdr_have += n;
    return n;
}

int cloud_upload_feed(struct cloud_upload *u, const char *data, size_t len, char *err,
                      size_t errlen)
{
    if (u->hdr_have < sizeof(u->hdr)) {
        size_t n = take_hdr(u, data, len);
        data += n;
        len -= n;
        if (u->hdr_have < sizeof(u->hdr))
            return 0;
        if (memcmp(u->hdr, CLOUD_SIGB_MAGIC, 8) != 0)
            return wisp_errf(err, errlen, -EINVAL,
                             "body: not a signed bundle message (no WISPSIGB magic)");
        u->siglen = (uint32_t)u->hdr[8] << 24 | (uint32_t)u->hdr[9] << 16 |
                    (uint32_t)u->hdr[10] << 8 | u->hdr[11];
        if (u->siglen > CLOUD_SIG_MAX)
            return wisp_errf(err, errlen, -EINVAL,
                             "body: signature length %u is over the %d-byte limit", u->siglen,
                             CLOUD_SIG_MAX);
    }
    if (u->sig_have < u->siglen) {
        size_t n = u->siglen - u->sig_have;
        n = n < len ? n : len;
        memcpy(u->sig + u->sig_have, data, n);
        u->sig_have += n;
        data += n;
        len -= n;
    }
    if (!len)
        return 0;
    if (u->bytes + len > CLOUD_UPLOAD_MAX)
        return wisp_errf(err, errlen, -EFBIG, "body: the bundle is over the %llu-byte limit",
                         (unsigned long long)CLOUD_UPLOAD_MAX);
    int rc = wisp_write_full(u->fd, data, len);
    if (rc != 0)
        return wisp_errf(err, errlen, rc, "%s: write failed: %s", u->tmp, strerror(-rc));
    u->bytes += len;
    return 0;
}

void cloud_upload_free(struct cloud_upload *u)
{
    if (!u)
        return;
    if (u->fd >= 0)
        (void)close(u->fd);
    if (u->tmp)
        (void)unlink(u->tmp);
    free(u->tmp);
    free(u);
}

/* Writes data to path through a temp file, synced and renamed. */
static int write_atomic(const char *path, const void *data, size_t len)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (!tmp)
        return -ENOMEM;
    (void)snprintf(tmp, n, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd < 0 ? -errno : wisp_write_full(fd, data, len);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        (void)unlink(tmp);
    free(tmp);
    return rc;
}

/* The message published on wisp/v1/bundles/<sha>: header, signature and
 * the bundle file read back. malloc'd in *out. */
static int build_message(struct cloud_upload *u, const char *path, void **out, size_t *len)
{
    char *file;
    size_t flen;
    int rc = wisp_read_file(path, CLOUD_UPLOAD_MAX, &file, &flen);
    if (rc != 0)
        return rc;
    size_t total = 12 + u->siglen + flen;
    unsigned char *m = malloc(total);
    if (!m) {
        free(file);
        return -ENOMEM;
    }
    memcpy(m, u->hdr, 12);
    memcpy(m + 12, u->sig, u->siglen);
    memcpy(m + 12 + u->siglen, file, flen);
    free(file);
    *out = m;
    *len = total;
    return 0;
}

static cJSON *bundle_record(const struct wisp_bundle_info *info, const char *sha, uint64_t size,
                            bool is_signed, uint64_t now)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "sha256", sha) ||
        !cJSON_AddStringToObject(o, "name", info->name) ||
        !cJSON_AddStringToObject(o, "version", info->version) ||
        !cJSON_AddNumberToObject(o, "size", (double)size) ||
        !cJSON_AddNumberToObject(o, "files", (double)info->nfiles) ||
        !cJSON_AddBoolToObject(o, "signed", is_signed) ||
        !cJSON_AddItemToObject(o, "uploaded", cloud_time_json(now))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Keeps the checked file as DIR/bundles/<sha> (+ .sig) and records it. */
static int keep(struct cloud_upload *u, const struct wisp_bundle_info *info, const char *sha,
                cJSON **out, char *err, size_t errlen)
{
    struct cloud *c = u->c;
    char *path = wisp_path_join(c->bundle_dir, sha);
    char *sigpath = path ? malloc(strlen(path) + 5) : NULL;
    cJSON *rec = bundle_record(info, sha, u->bytes, u->siglen > 0, c->now);
    char *txt = rec ? cJSON_PrintUnformatted(rec) : NULL;
    void *msg = NULL;
    size_t mlen = 0;
    int rc = path && sigpath && txt ? 0 : -ENOMEM;
    if (rc == 0 && rename(u->tmp, path) != 0)
        rc = -errno;
    if (rc == 0) {
        (void)snprintf(sigpath, strlen(path) + 5, "%s.sig", path);
        rc = u->siglen ? write_atomic(sigpath, u->sig, u->siglen)
                       : (unlink(sigpath) == 0 || errno == ENOENT ? 0 : -errno);
    }
    if (rc == 0)
        rc = c->store->ops->put(c->txn, CLOUD_T_BUNDLES, sha, 64, txt, strlen(txt));
    if (rc == 0)
        rc = build_message(u, path, &msg, &mlen);
    if (rc == 0) {
        char topic[96];
        (void)snprintf(topic, sizeof(topic), "wisp/v1/bundles/%s", sha);
        rc = cloud_queue_publish_take(c, topic, msg, mlen, 1, 1);
    }
    if (rc != 0)
        (void)wisp_errf(err, errlen, rc, "%s: cannot keep the bundle: %s",
                        path ? path : c->bundle_dir, strerror(-rc));
    free(path);
    free(sigpath);
    free(txt);
    if (rc == 0)
        *out = rec;
    else
        cJSON_Delete(rec);
    return rc;
}

int cloud_upload_finish(struct cloud_upload *u, cJSON **out, char *err, size_t errlen)
{
    if (u->hdr_have < 12)
        return wisp_errf(err, errlen, -EINVAL,
                         "body: %zu bytes, shorter than the 12-byte WISPSIGB header", u->hdr_have);
    if (u->sig_have < u->siglen)
        return wisp_errf(err, errlen, -EINVAL, "body: the %u-byte signature is cut short",
                         u->siglen);
    if (fsync(u->fd) != 0 || close(u->fd) != 0) {
        u->fd = -1;
        return wisp_errf(err, errlen, -EIO, "%s: cannot sync the upload", u->tmp);
    }
    u->fd = -1;
    struct wisp_bundle_info info = {0};
    char berr[512];
    int rc = wisp_bundle_check(u->tmp, NULL, &info, berr, sizeof(berr));
    if (rc != 0) {
        /* berr starts with the temp path: name the field instead */
        const char *why = strncmp(berr, u->tmp, strlen(u->tmp)) == 0 ? berr + strlen(u->tmp) : berr;
        while (*why == ':' || *why == ' ')
            why++;
        wisp_bundle_info_fini(&info);
        return wisp_errf(err, errlen, -EINVAL, "bundle: %s", why);
    }
    char sha[65];
    wisp_sha256_hex(info.digest, sha);
    rc = keep(u, &info, sha, out, err, errlen);
    if (rc == 0)
        log_info("bundle %s (%s %s, %llu bytes, %s) stored and published", sha, info.name,
                 info.version, (unsigned long long)u->bytes, u->siglen ? "signed" : "unsigned");
    wisp_bundle_info_fini(&info);
    return rc;
}

cJSON *cloud_bundle_get(struct cloud *c, const char *sha)
{
    if (!cloud_sha_valid(sha))
        return NULL;
    struct cloud_txn *t = c->txn;
    if (!t && c->store->ops->begin(c->store, NULL, false, &t) != 0)
        return NULL;
    const void *v;
    size_t vl;
    cJSON *j = NULL;
    if (c->store->ops->get(t, CLOUD_T_BUNDLES, sha, 64, &v, &vl) == 0)
        j = cJSON_ParseWithLength(v, vl);
    if (t != c->txn)
        c->store->ops->abort(t);
    return j;
}

static int list_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen)
{
    (void)key;
    (void)klen;
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    if (j && !cJSON_AddItemToArray(ud, j)) {
        cJSON_Delete(j);
        return -ENOMEM;
    }
    return 0;
}

cJSON *cloud_bundle_list(struct cloud *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "bundles");
    struct cloud_txn *t = c->txn;
    if (!arr || (!t && c->store->ops->begin(c->store, NULL, false, &t) != 0)) {
        cJSON_Delete(o);
        return NULL;
    }
    int rc = c->store->ops->scan(t, CLOUD_T_BUNDLES, NULL, 0, list_one, arr);
    if (t != c->txn)
        c->store->ops->abort(t);
    if (rc != 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
