/*
 * Bundle signatures: ECDSA P-256 over the SHA-256 of the whole bundle file,
 * DER-encoded in a detached "<bundle>.sig" — the bytes `openssl dgst -sha256
 * -sign KEY` writes and `openssl dgst -sha256 -verify PUB -signature SIG`
 * checks. Keys are PEM: private SEC1 or PKCS#8, public SubjectPublicKeyInfo.
 *
 * Every function returns 0 or a negative errno and, on failure, writes a
 * complete sentence naming the file into err.
 */
#ifndef WISP_SYNC_SIGN_H
#define WISP_SYNC_SIGN_H

#include <stddef.h>

#include <mbedtls/sha256.h>

/* Streaming SHA-256 (mbedTLS 2.28 and 3.x spell it differently). */
struct wisp_sha256 {
    mbedtls_sha256_context ctx;
};
void wisp_sha256_start(struct wisp_sha256 *h);
void wisp_sha256_update(struct wisp_sha256 *h, const void *data, size_t len);
/* Writes the digest and releases the context. */
void wisp_sha256_finish(struct wisp_sha256 *h, unsigned char out[32]);
/* Lowercase hex of a 32-byte digest into out (65 bytes with the NUL). */
void wisp_sha256_hex(const unsigned char sum[32], char out[65]);

/* Writes a new P-256 key pair: PREFIX.key (SEC1 PEM, mode 0600) and
 * PREFIX.pub (SubjectPublicKeyInfo PEM). Refuses (-EEXIST) when either
 * exists; leaves neither behind on failure. */
int wisp_sign_keygen(const char *prefix, char *err, size_t errlen);

/* Signs the file at path with the private key at key_path and writes
 * "<path>.sig" (replacing an older one atomically). */
int wisp_sign_file(const char *path, const char *key_path, char *err, size_t errlen);

struct wisp_sign_verified {
    unsigned char digest[32]; /* SHA-256 of the file as it was verified */
    char key[256];            /* file name (in the trust directory) of the key that verified */
};

/* Verifies "<path>.sig" against every *.pem public key in trust_dir.
 * Returns -ENODATA when there is no signature file, -EBADMSG when it is not
 * a DER ECDSA signature, -EKEYREJECTED when no trusted key verifies it,
 * -ENOKEY when trust_dir holds no usable P-256 key; other errnos for I/O. */
int wisp_sign_verify(const char *path, const char *trust_dir, struct wisp_sign_verified *out,
                     char *err, size_t errlen);

#endif
