/* Signed bundle messages (cloud-sync/README.md "Signed bundle message"):
 *
 *   "WISPSIGB" | u32 BE signature length L (0..1024) | signature | bundle
 *
 * checked against the topic's SHA-256, verified against cloud.trust,
 * unpacked into <data>/deploy/bundles/<sha256>/ (atomically, by bundle.c)
 * and only then activated. The message is never trusted: every length is
 * checked before it is used. */
#define WISP_LOG_MODULE "agent"
#include "agent_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"
#include "config.h"
#include "log.h"
#include "sign.h"
#include "util.h"

#define SIGB_MAGIC  "WISPSIGB"
#define SIGB_HEADER 12u

static int write_file(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return wisp_errf(err, errlen, -errno, "%s: cannot create: %s", path, strerror(errno));
    int rc = wisp_write_full(fd, data, len);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: cannot write: %s", path, strerror(-rc));
    return 0;
}

/* Splits the message into signature and bundle, checking the framing.
 * Declared in agent_internal.h (for the fuzz target). */
int agent_bundle_split(const struct wisp_agent *a, const unsigned char *msg, size_t len,
                       const unsigned char **sig, size_t *siglen, const unsigned char **bundle,
                       size_t *blen, char *err, size_t errlen)
{
    if (len < SIGB_HEADER || memcmp(msg, SIGB_MAGIC, 8) != 0)
        return wisp_errf(err, errlen, -EBADMSG,
                         "not a signed bundle message (%zu bytes, no WISPSIGB header)", len);
    uint32_t l = (uint32_t)msg[8] << 24 | (uint32_t)msg[9] << 16 | (uint32_t)msg[10] << 8 |
                 (uint32_t)msg[11];
    if (l > AGENT_MAX_SIG)
        return wisp_errf(err, errlen, -EBADMSG, "signature length %u is over %d bytes", l,
                         AGENT_MAX_SIG);
    if (len - SIGB_HEADER < l)
        return wisp_errf(err, errlen, -EBADMSG,
                         "truncated: signature length %u, but the message has %zu bytes", l, len);
    *sig = msg + SIGB_HEADER;
    *siglen = l;
    *bundle = msg + SIGB_HEADER + l;
    *blen = len - SIGB_HEADER - l;
    size_t max = (size_t)a->cfg->cloud_max_bundle_kb * 1024u;
    if (*blen == 0)
        return wisp_errf(err, errlen, -EBADMSG, "the message holds no bundle");
    if (*blen > max)
        return wisp_errf(err, errlen, -EFBIG,
                         "the bundle has %zu bytes, more than cloud.max_bundle_kb (%d KiB)", *blen,
                         a->cfg->cloud_max_bundle_kb);
    return 0;
}

/* Writes the bundle (and its signature) to the temp folder and verifies. */
static int verify(const struct wisp_agent *a, const char *path, const char *sha,
                  const unsigned char *sig, size_t siglen, const unsigned char digest[32],
                  char *err, size_t errlen)
{
    if (siglen == 0) {
        if (!a->cfg->cloud_dev_unsigned)
            return wisp_errf(err, errlen, -ENODATA,
                             "the bundle is unsigned (signature length 0) and cloud.dev_unsigned "
                             "is off");
        log_warn("WARNING: bundle %s is UNSIGNED and runs only because cloud.dev_unsigned is "
                 "on; never use that setting in production",
                 sha);
        return 0;
    }
    char sigpath[4200];
    (void)snprintf(sigpath, sizeof(sigpath), "%s.sig", path);
    int rc = write_file(sigpath, sig, siglen, err, errlen);
    if (rc)
        return rc;
    struct wisp_sign_verified v;
    char why[768];
    rc = wisp_sign_verify(path, a->cfg->cloud_trust, &v, why, sizeof(why));
    (void)unlink(sigpath);
    if (rc)
        return wisp_errf(err, errlen, rc, "signature: %s", why);
    if (memcmp(v.digest, digest, 32) != 0)
        return wisp_errf(err, errlen, -EBADMSG, "the bundle file changed while it was verified");
    log_info("bundle %.12s: signature verified with trusted key %s", sha, v.key);
    return 0;
}

int agent_bundle_install(struct wisp_agent *a, const char *sha, const unsigned char *msg,
                         size_t len, char *err, size_t errlen)
{
    const unsigned char *sig = NULL, *bundle = NULL;
    size_t siglen = 0, blen = 0;
    int rc = agent_bundle_split(a, msg, len, &sig, &siglen, &bundle, &blen, err, errlen);
    if (rc)
        return rc;
    unsigned char digest[32];
    char hex[65];
    struct wisp_sha256 h;
    wisp_sha256_start(&h);
    wisp_sha256_update(&h, bundle, blen);
    wisp_sha256_finish(&h, digest);
    wisp_sha256_hex(digest, hex);
    if (strcmp(hex, sha) != 0)
        return wisp_errf(err, errlen, -EBADMSG,
                         "sha256 mismatch: the bundle hashes to %s, the topic names %s", hex, sha);
    rc = wisp_mkdir_p(a->tmp_dir, 0750);
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: cannot create: %s", a->tmp_dir, strerror(-rc));
    char path[4096];
    (void)snprintf(path, sizeof(path), "%s/%s.wb", a->tmp_dir, sha);
    rc = write_file(path, bundle, blen, err, errlen);
    if (rc == 0)
        rc = verify(a, path, sha, sig, siglen, digest, err, errlen);
    char *dest = rc == 0 ? agent_bundle_dir(a, sha) : NULL;
    if (rc == 0 && !dest)
        rc = wisp_errf(err, errlen, -ENOMEM, "out of memory");
    struct stat sb;
    if (rc == 0 && dest && stat(dest, &sb) != 0) {
        struct wisp_bundle_info info = {0};
        char why[768];
        rc = wisp_bundle_unpack(path, dest, digest, &info, why, sizeof(why));
        if (rc)
            wisp_errf(err, errlen, rc, "unpack: %s", why);
        else
            log_info("bundle %.12s: unpacked %s %s (%zu files) into %s", sha, info.name,
                     info.version, info.nfiles, dest);
        wisp_bundle_info_fini(&info);
    }
    free(dest);
    (void)unlink(path);
    return rc;
}

void agent_on_bundle(struct wisp_agent *a, const char *sha, const unsigned char *msg, size_t len)
{
    if (!agent_fetching(a, sha)) {
        log_debug("wisp/v1/bundles/%s: not needed (any more); ignored", sha);
        return;
    }
    char err[1024];
    int rc = agent_bundle_install(a, sha, msg, len, err, sizeof(err));
    if (rc)
        log_error("wisp/v1/bundles/%s: refused: %s", sha, err);
    for (size_t i = 0; i < a->st.n; i++) {
        struct agent_fn *f = &a->st.fns[i];
        if (f->status != AGENT_FETCHING || strcmp(f->desired, sha) != 0)
            continue;
        if (rc)
            agent_refuse(a, f, err);
        else
            agent_activate(a, f, sha);
    }
    a->flags |= WISP_AGENT_RESUBSCRIBE;
}
