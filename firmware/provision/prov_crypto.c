/*
 * Keys and certificates through mbedTLS (Debian's 2.28; the few calls that
 * changed in 3.x are behind MBEDTLS_VERSION_MAJOR): the device's ECDSA
 * P-256 key pair, the bundle-signing keys it trusts, and the broker's CA.
 */
#include "prov.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "util.h"

#if MBEDTLS_VERSION_MAJOR >= 3
#define GRP_ID(kp)           ((kp)->MBEDTLS_PRIVATE(grp).id)
#define SHA256(in, len, out) mbedtls_sha256((in), (len), (out), 0)
#define PARSE_KEY(pk, buf, len, rng, ctx)                                                          \
    mbedtls_pk_parse_key((pk), (buf), (len), NULL, 0, rng, ctx)
#else
#define GRP_ID(kp)                        ((kp)->grp.id)
#define SHA256(in, len, out)              mbedtls_sha256_ret((in), (len), (out), 0)
#define PARSE_KEY(pk, buf, len, rng, ctx) mbedtls_pk_parse_key((pk), (buf), (len), NULL, 0)
#endif

enum { PEM_CAP = 1024, DER_CAP = 512 };

struct wisp_prov_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
};

static int tls_errf(char *err, size_t errlen, int code, const char *what, int mbedtls_rc)
{
    char msg[128];
    mbedtls_strerror(mbedtls_rc, msg, sizeof(msg));
    return wisp_errf(err, errlen, code, "%s (mbedTLS: %s)", what, msg);
}

int wisp_prov_rng_create(struct wisp_prov_rng **out, char *err, size_t errlen)
{
    static const char pers[] = "wisp-provision";
    struct wisp_prov_rng *r = calloc(1, sizeof(*r));
    if (!r)
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    int rc = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                                   (const unsigned char *)pers, sizeof(pers) - 1);
    if (rc) {
        wisp_prov_rng_destroy(r);
        return tls_errf(err, errlen, -EIO, "cannot seed the random generator", rc);
    }
    *out = r;
    return 0;
}

void wisp_prov_rng_destroy(struct wisp_prov_rng *r)
{
    if (!r)
        return;
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
    free(r);
}

int wisp_prov_rng_bytes(struct wisp_prov_rng *r, unsigned char *buf, size_t n)
{
    return mbedtls_ctr_drbg_random(&r->drbg, buf, n) == 0 ? 0 : -EIO;
}

int wisp_prov_sha256_hex(const void *data, size_t len, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char sum[32];
    if (SHA256((const unsigned char *)data, len, sum) != 0)
        return -EIO;
    for (size_t i = 0; i < sizeof(sum); i++) {
        out[2 * i] = hex[sum[i] >> 4];
        out[2 * i + 1] = hex[sum[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

/* Checks that pk is an ECDSA-capable key on P-256; err says what it is
 * otherwise. */
static int check_p256(const mbedtls_pk_context *pk, char *err, size_t errlen)
{
    if (!mbedtls_pk_can_do(pk, MBEDTLS_PK_ECDSA))
        return wisp_errf(err, errlen, -EINVAL, "an %s key: must be an ECDSA P-256 (prime256v1) key",
                         mbedtls_pk_get_name(pk));
    mbedtls_ecp_group_id id = GRP_ID(mbedtls_pk_ec(*pk));
    if (id != MBEDTLS_ECP_DP_SECP256R1) {
        const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_grp_id(id);
        return wisp_errf(err, errlen, -EINVAL,
                         "an EC key on curve %s: must be on P-256 (prime256v1, secp256r1)",
                         ci ? ci->name : "unknown");
    }
    return 0;
}

/* The public half of pk as malloc'd PEM; with hash, the SHA-256 of its DER. */
static int write_public(mbedtls_pk_context *pk, char **pem, char *hash, char *err, size_t errlen)
{
    unsigned char der[DER_CAP];
    char buf[PEM_CAP];
    int n = mbedtls_pk_write_pubkey_der(pk, der, sizeof(der));
    if (n <= 0)
        return tls_errf(err, errlen, -EINVAL, "cannot encode the public key", n);
    /* mbedtls writes DER at the end of the buffer. */
    if (hash && wisp_prov_sha256_hex(der + sizeof(der) - (size_t)n, (size_t)n, hash) != 0)
        return wisp_errf(err, errlen, -EIO, "SHA-256 failed");
    int rc = mbedtls_pk_write_pubkey_pem(pk, (unsigned char *)buf, sizeof(buf));
    if (rc)
        return tls_errf(err, errlen, -EINVAL, "cannot encode the public key", rc);
    *pem = wisp_strndup(buf, strlen(buf));
    return *pem ? 0 : wisp_errf(err, errlen, -ENOMEM, "out of memory");
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

int wisp_prov_pubkey_parse(const char *pem, struct wisp_prov_key *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (strstr(pem, "PRIVATE KEY-----"))
        return wisp_errf(err, errlen, -EINVAL,
                         "a private key: give only the public key (openssl pkey -in KEY "
                         "-pubout)");
    if (strstr(pem, "-----BEGIN CERTIFICATE-----"))
        return wisp_errf(err, errlen, -EINVAL,
                         "a certificate: give its public key (openssl x509 -in CERT -pubkey "
                         "-noout)");
    if (count(pem, "-----BEGIN ") != 1)
        return wisp_errf(err, errlen, -EINVAL,
                         "must hold exactly one PEM block \"-----BEGIN PUBLIC KEY-----\"");
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    /* The length counts the terminating NUL, which mbedTLS's PEM reader needs. */
    int rc = mbedtls_pk_parse_public_key(&pk, (const unsigned char *)pem, strlen(pem) + 1);
    if (rc)
        rc = tls_errf(err, errlen, -EINVAL, "not a valid PEM public key", rc);
    if (!rc)
        rc = check_p256(&pk, err, errlen);
    if (!rc)
        rc = write_public(&pk, &out->pem, out->hash, err, errlen);
    mbedtls_pk_free(&pk);
    return rc;
}

void wisp_prov_key_fini(struct wisp_prov_key *k)
{
    free(k->pem);
    k->pem = NULL;
}

int wisp_prov_ca_check(const char *pem, char *err, size_t errlen)
{
    size_t blocks = count(pem, "-----BEGIN ");
    if (count(pem, "-----BEGIN CERTIFICATE-----") == 0)
        return wisp_errf(err, errlen, -EINVAL,
                         "no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it");
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int rc = mbedtls_x509_crt_parse(&crt, (const unsigned char *)pem, strlen(pem) + 1);
    size_t parsed = 0;
    for (const mbedtls_x509_crt *c = &crt; c && c->raw.len; c = c->next)
        parsed++;
    mbedtls_x509_crt_free(&crt);
    if (rc < 0)
        return tls_errf(err, errlen, -EINVAL, "not a valid PEM certificate", rc);
    if (rc > 0)
        return wisp_errf(err, errlen, -EINVAL, "%d of its %zu certificates cannot be parsed", rc,
                         parsed + (size_t)rc);
    if (parsed != blocks)
        return wisp_errf(err, errlen, -EINVAL,
                         "holds %zu PEM blocks that are not certificates (only certificates "
                         "belong here)",
                         blocks - parsed);
    return 0;
}

int wisp_prov_keygen(struct wisp_prov_rng *r, char **priv_pem, char **pub_pem, char *err,
                     size_t errlen)
{
    unsigned char buf[PEM_CAP];
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    *priv_pem = *pub_pem = NULL;
    int rc = mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (!rc)
        rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk),
                                 mbedtls_ctr_drbg_random, &r->drbg);
    if (!rc)
        rc = mbedtls_pk_write_key_pem(&pk, buf, sizeof(buf));
    if (rc) {
        rc = tls_errf(err, errlen, -EIO, "cannot generate the device key", rc);
    } else if (!(*priv_pem = wisp_strndup((const char *)buf, strlen((const char *)buf)))) {
        rc = wisp_errf(err, errlen, -ENOMEM, "out of memory");
    } else {
        rc = write_public(&pk, pub_pem, NULL, err, errlen);
    }
    mbedtls_platform_zeroize(buf, sizeof(buf));
    mbedtls_pk_free(&pk);
    if (rc && *priv_pem) {
        mbedtls_platform_zeroize(*priv_pem, strlen(*priv_pem));
        free(*priv_pem);
        *priv_pem = NULL;
    }
    return rc;
}

int wisp_prov_key_public(struct wisp_prov_rng *r, const char *text, size_t len, char **pub_pem,
                         char *err, size_t errlen)
{
    (void)r; /* only mbedTLS 3 takes a random generator here */
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    *pub_pem = NULL;
    /* PEM must be passed with its terminating NUL (text has one after len). */
    size_t n = strstr(text, "-----BEGIN ") ? len + 1 : len;
    int rc = PARSE_KEY(&pk, (const unsigned char *)text, n, mbedtls_ctr_drbg_random, &r->drbg);
    if (rc)
        rc = tls_errf(err, errlen, -EINVAL, "not a private key mbedTLS can read", rc);
    if (!rc)
        rc = check_p256(&pk, err, errlen);
    if (!rc)
        rc = write_public(&pk, pub_pem, NULL, err, errlen);
    mbedtls_pk_free(&pk);
    return rc;
}
