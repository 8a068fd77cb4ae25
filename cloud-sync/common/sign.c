/*
 * Bundle signing and verification with mbedTLS (Debian's 2.28; the calls
 * that changed in 3.x are behind MBEDTLS_VERSION_MAJOR). The signature is
 * the plain DER ECDSA-Sig-Value openssl writes, so publishers can sign with
 * either tool.
 */
#include "sign.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/asn1.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/version.h>

#include "util.h"

#if MBEDTLS_VERSION_MAJOR >= 3
#define GRP_ID(kp)          ((kp)->MBEDTLS_PRIVATE(grp).id)
#define SHA_START(c)        mbedtls_sha256_starts((c), 0)
#define SHA_UPDATE(c, p, n) mbedtls_sha256_update((c), (p), (n))
#define SHA_FINISH(c, out)  mbedtls_sha256_finish((c), (out))
#define PK_SIGN(pk, h, sig, cap, len, rng, p)                                                      \
    mbedtls_pk_sign((pk), MBEDTLS_MD_SHA256, (h), 32, (sig), (cap), (len), (rng), (p))
#define PARSE_KEY(pk, buf, len, rng, p) mbedtls_pk_parse_key((pk), (buf), (len), NULL, 0, rng, p)
#else
#define GRP_ID(kp)          ((kp)->grp.id)
#define SHA_START(c)        mbedtls_sha256_starts_ret((c), 0)
#define SHA_UPDATE(c, p, n) mbedtls_sha256_update_ret((c), (p), (n))
#define SHA_FINISH(c, out)  mbedtls_sha256_finish_ret((c), (out))
#define PK_SIGN(pk, h, sig, cap, len, rng, p)                                                      \
    ((void)(cap), mbedtls_pk_sign((pk), MBEDTLS_MD_SHA256, (h), 32, (sig), (len), (rng), (p)))
#define PARSE_KEY(pk, buf, len, rng, p)                                                            \
    ((void)(rng), (void)(p), mbedtls_pk_parse_key((pk), (buf), (len), NULL, 0))
#endif

enum {
    KEY_FILE_MAX = 16384, /* a PEM key is a few hundred bytes */
    SIG_FILE_MAX = 1024,  /* a P-256 DER signature is at most 72 bytes */
    PEM_CAP = 1024,
    SHOW_CAP = 4352, /* a path and a sentence */
};

void wisp_sha256_start(struct wisp_sha256 *h)
{
    mbedtls_sha256_init(&h->ctx);
    (void)SHA_START(&h->ctx); /* cannot fail for a software context */
}

void wisp_sha256_update(struct wisp_sha256 *h, const void *data, size_t len)
{
    (void)SHA_UPDATE(&h->ctx, (const unsigned char *)data, len);
}

void wisp_sha256_finish(struct wisp_sha256 *h, unsigned char out[32])
{
    (void)SHA_FINISH(&h->ctx, out);
    mbedtls_sha256_free(&h->ctx);
}

void wisp_sha256_hex(const unsigned char sum[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        out[2 * i] = digits[sum[i] >> 4];
        out[2 * i + 1] = digits[sum[i] & 15];
    }
    out[64] = '\0';
}

static int tls_errf(char *err, size_t errlen, int code, const char *what, int mbedtls_rc)
{
    char msg[128];
    mbedtls_strerror(mbedtls_rc, msg, sizeof(msg));
    return wisp_errf(err, errlen, code, "%s (mbedTLS: %s)", what, msg);
}

/* A seeded CTR-DRBG for key generation and ECDSA blinding. */
struct rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

static int rng_init(struct rng *r, char *err, size_t errlen)
{
    static const char pers[] = "wisp-sign";
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    int rc = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                                   (const unsigned char *)pers, sizeof(pers) - 1);
    return rc ? tls_errf(err, errlen, -EIO, "cannot seed the random generator", rc) : 0;
}

static void rng_free(struct rng *r)
{
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}

/* NULL when pk is an ECDSA-capable key on P-256, else why it is not. */
static const char *not_p256(const mbedtls_pk_context *pk, char *buf, size_t cap)
{
    if (!mbedtls_pk_can_do(pk, MBEDTLS_PK_ECDSA)) {
        wisp_errf(buf, cap, 0, "an %s key: must be an ECDSA P-256 (prime256v1) key",
                  mbedtls_pk_get_name(pk));
        return buf;
    }
    mbedtls_ecp_group_id id = GRP_ID(mbedtls_pk_ec(*pk));
    if (id == MBEDTLS_ECP_DP_SECP256R1)
        return NULL;
    const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_grp_id(id);
    wisp_errf(buf, cap, 0, "an EC key on curve %s: must be on P-256 (prime256v1)",
              ci ? ci->name : "unknown");
    return buf;
}

/* Reads a key file and parses it as a private (priv) or public key. PEM
 * is handed to mbedTLS with its terminating NUL, which its reader needs. */
static int load_key(mbedtls_pk_context *pk, const char *path, bool priv, struct rng *r, char *err,
                    size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = wisp_read_file(path, KEY_FILE_MAX, &text, &len);
    if (rc == -EFBIG)
        return wisp_errf(err, errlen, -EINVAL, "%s: larger than %d bytes: not a key file", path,
                         KEY_FILE_MAX);
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: cannot read: %s", path, strerror(-rc));
    size_t n = strstr(text, "-----BEGIN ") ? len + 1 : len;
    char what[SHOW_CAP];
    if (priv) {
        rc = PARSE_KEY(pk, (const unsigned char *)text, n, mbedtls_ctr_drbg_random, &r->drbg);
        wisp_errf(what, sizeof(what), 0, "%s: not a private key (PEM, SEC1 or PKCS#8)", path);
    } else {
        rc = mbedtls_pk_parse_public_key(pk, (const unsigned char *)text, n);
        wisp_errf(what, sizeof(what), 0, "%s: not a public key (PEM SubjectPublicKeyInfo)", path);
    }
    mbedtls_platform_zeroize(text, len);
    free(text);
    if (rc)
        return tls_errf(err, errlen, -EINVAL, what, rc);
    char why[128];
    if (not_p256(pk, why, sizeof(why)))
        return wisp_errf(err, errlen, -EINVAL, "%s: %s", path, why);
    return 0;
}

/* SHA-256 of the whole file at path. */
static int hash_file(const char *path, unsigned char out[32], char *err, size_t errlen)
{
    unsigned char buf[16384];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wisp_errf(err, errlen, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct wisp_sha256 h;
    wisp_sha256_start(&h);
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = wisp_errf(err, errlen, -errno, "%s: cannot read: %s", path, strerror(errno));
        if (n <= 0)
            break;
        wisp_sha256_update(&h, buf, (size_t)n);
    }
    wisp_sha256_finish(&h, out);
    close(fd);
    return rc;
}

/* Creates path (never replacing one) with the given mode and contents,
 * synced to disk. */
static int create_file(const char *path, mode_t mode, const void *data, size_t len, char *err,
                       size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return wisp_errf(err, errlen, -errno, "%s: cannot create: %s", path, strerror(errno));
    int rc = wisp_write_full(fd, data, len);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && !rc)
        rc = -errno;
    if (rc) {
        (void)unlink(path);
        return wisp_errf(err, errlen, rc, "%s: cannot write: %s", path, strerror(-rc));
    }
    return 0;
}

int wisp_sign_keygen(const char *prefix, char *err, size_t errlen)
{
    char key_path[SHOW_CAP], pub_path[SHOW_CAP];
    if ((size_t)snprintf(key_path, sizeof(key_path), "%s.key", prefix) >= sizeof(key_path) ||
        (size_t)snprintf(pub_path, sizeof(pub_path), "%s.pub", prefix) >= sizeof(pub_path))
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s: prefix too long", prefix);
    struct stat st;
    if (lstat(key_path, &st) == 0 || lstat(pub_path, &st) == 0)
        return wisp_errf(err, errlen, -EEXIST, "%s exists: refusing to overwrite a key",
                         lstat(key_path, &st) == 0 ? key_path : pub_path);
    struct rng r;
    mbedtls_pk_context pk;
    unsigned char priv[PEM_CAP], pub[PEM_CAP];
    mbedtls_pk_init(&pk);
    int rc = rng_init(&r, err, errlen);
    if (!rc) {
        int mrc = mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
        if (!mrc)
            mrc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk),
                                      mbedtls_ctr_drbg_random, &r.drbg);
        if (!mrc)
            mrc = mbedtls_pk_write_key_pem(&pk, priv, sizeof(priv));
        if (!mrc)
            mrc = mbedtls_pk_write_pubkey_pem(&pk, pub, sizeof(pub));
        if (mrc)
            rc = tls_errf(err, errlen, -EIO, "cannot generate a P-256 key", mrc);
    }
    if (!rc)
        rc = create_file(key_path, 0600, priv, strlen((const char *)priv), err, errlen);
    if (!rc) {
        rc = create_file(pub_path, 0644, pub, strlen((const char *)pub), err, errlen);
        if (rc)
            (void)unlink(key_path);
    }
    mbedtls_platform_zeroize(priv, sizeof(priv));
    mbedtls_pk_free(&pk);
    rng_free(&r);
    return rc;
}

int wisp_sign_file(const char *path, const char *key_path, char *err, size_t errlen)
{
    unsigned char sum[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sig_len = 0;
    char sig_path[SHOW_CAP];
    if ((size_t)snprintf(sig_path, sizeof(sig_path), "%s.sig", path) >= sizeof(sig_path))
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s: path too long", path);
    struct rng r;
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    int rc = rng_init(&r, err, errlen);
    if (!rc)
        rc = load_key(&pk, key_path, true, &r, err, errlen);
    if (!rc)
        rc = hash_file(path, sum, err, errlen);
    if (!rc) {
        int mrc = PK_SIGN(&pk, sum, sig, sizeof(sig), &sig_len, mbedtls_ctr_drbg_random, &r.drbg);
        if (mrc)
            rc = tls_errf(err, errlen, -EIO, "cannot sign", mrc);
    }
    if (!rc) {
        /* Written beside the target and renamed over it: a reader never
         * sees half a signature. */
        char tmp[SHOW_CAP + 16];
        (void)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", sig_path);
        int fd = mkstemp(tmp);
        if (fd < 0) {
            rc = wisp_errf(err, errlen, -errno, "%s: cannot create: %s", tmp, strerror(errno));
        } else {
            rc = wisp_write_full(fd, sig, sig_len);
            if (!rc && fchmod(fd, 0644) != 0)
                rc = -errno;
            if (!rc && fsync(fd) != 0)
                rc = -errno;
            if (close(fd) != 0 && !rc)
                rc = -errno;
            if (!rc && rename(tmp, sig_path) != 0)
                rc = -errno;
            if (rc) {
                (void)unlink(tmp);
                rc = wisp_errf(err, errlen, rc, "%s: cannot write: %s", sig_path, strerror(-rc));
            }
        }
    }
    mbedtls_pk_free(&pk);
    rng_free(&r);
    return rc;
}

/* Checks that sig is exactly one DER SEQUENCE of two positive INTEGERs. */
static bool der_signature_ok(const unsigned char *sig, size_t len)
{
    unsigned char *p = (unsigned char *)sig;
    const unsigned char *end = sig + len;
    size_t n = 0;
    if (mbedtls_asn1_get_tag(&p, end, &n, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0 ||
        p + n != end)
        return false;
    for (int i = 0; i < 2; i++) {
        if (mbedtls_asn1_get_tag(&p, end, &n, MBEDTLS_ASN1_INTEGER) != 0 || n == 0 || n > 67 ||
            (p[0] & 0x80) != 0)
            return false;
        p += n;
    }
    return p == end;
}

/* Appends "; NAME: why" to the notes about keys that were skipped. */
static void note(char *notes, size_t cap, const char *name, const char *why)
{
    size_t used = strlen(notes);
    if (used + 1 < cap)
        (void)snprintf(notes + used, cap - used, "; %.200s: %.300s", name, why);
}

int wisp_sign_verify(const char *path, const char *trust_dir, struct wisp_sign_verified *out,
                     char *err, size_t errlen)
{
    char sig_path[SHOW_CAP];
    memset(out, 0, sizeof(*out));
    if ((size_t)snprintf(sig_path, sizeof(sig_path), "%s.sig", path) >= sizeof(sig_path))
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s: path too long", path);
    struct stat st;
    if (stat(path, &st) != 0)
        return wisp_errf(err, errlen, -errno, "%s: cannot open: %s", path, strerror(errno));
    char *sig = NULL;
    size_t sig_len = 0;
    int rc = wisp_read_file(sig_path, SIG_FILE_MAX, &sig, &sig_len);
    if (rc == -ENOENT)
        return wisp_errf(err, errlen, -ENODATA,
                         "%s: no signature (%s not found); sign it with `wisp sign` or "
                         "`openssl dgst -sha256 -sign`",
                         path, sig_path);
    if (rc == -EFBIG || (rc == 0 && !der_signature_ok((const unsigned char *)sig, sig_len))) {
        free(sig);
        return wisp_errf(err, errlen, -EBADMSG,
                         "%s: malformed signature: not a DER ECDSA signature (SEQUENCE of two "
                         "INTEGERs) as `openssl dgst -sha256 -sign` writes",
                         sig_path);
    }
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: cannot read: %s", sig_path, strerror(-rc));
    rc = hash_file(path, out->digest, err, errlen);
    char **names = NULL;
    size_t n = 0, usable = 0;
    if (!rc) {
        rc = wisp_list_dir(trust_dir, ".pem", false, &names, &n);
        if (rc)
            rc = wisp_errf(err, errlen, rc, "trust directory %s: cannot read: %s", trust_dir,
                           strerror(-rc));
    }
    char notes[1024] = "";
    bool verified = false;
    for (size_t i = 0; !rc && !verified && i < n; i++) {
        char *kp = wisp_path_join(trust_dir, names[i]);
        char why[SHOW_CAP];
        mbedtls_pk_context pk;
        mbedtls_pk_init(&pk);
        if (!kp) {
            rc = wisp_errf(err, errlen, -ENOMEM, "out of memory");
        } else if (load_key(&pk, kp, false, NULL, why, sizeof(why)) != 0) {
            /* The message starts with the path; the notes show the name. */
            const char *tail = strncmp(why, kp, strlen(kp)) == 0 ? why + strlen(kp) + 2 : why;
            note(notes, sizeof(notes), names[i], tail);
        } else {
            usable++;
            if (mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, out->digest, sizeof(out->digest),
                                  (const unsigned char *)sig, sig_len) == 0) {
                verified = true;
                (void)snprintf(out->key, sizeof(out->key), "%s", names[i]);
            }
        }
        mbedtls_pk_free(&pk);
        free(kp);
    }
    if (!rc && !verified && usable == 0)
        rc = wisp_errf(err, errlen, -ENOKEY, "%s: no usable trusted key in %s (%s%s)", path,
                       trust_dir, n == 0 ? "no *.pem files" : "skipped", n == 0 ? "" : notes + 1);
    else if (!rc && !verified)
        rc = wisp_errf(err, errlen, -EKEYREJECTED,
                       "%s: bad signature: it verifies with none of the %zu trusted key(s) in %s "
                       "(signed by a key that is not trusted, or the file changed after it was "
                       "signed)%s%s",
                       path, usable, trust_dir, notes[0] ? "; skipped" : "",
                       notes + (notes[0] != 0));
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(sig);
    return rc;
}
