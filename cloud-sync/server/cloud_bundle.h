/*
 * Bundle uploads (cloud_bundle.c): the signed bundle message of
 * POST /v1/bundles ("WISPSIGB", u32 BE signature length, signature, bundle
 * file) streamed to a temp file under DIR/bundles, checked with
 * wisp_bundle_check, kept as DIR/bundles/<sha256> (+ .sig), recorded in the
 * store and published retained on wisp/v1/bundles/<sha256>.
 */
#ifndef WISP_CLOUD_BUNDLE_H
#define WISP_CLOUD_BUNDLE_H

#include <stdint.h>

#include "cloud.h"

#define CLOUD_SIGB_MAGIC  "WISPSIGB"
#define CLOUD_SIG_MAX     1024
#define CLOUD_UPLOAD_MAX  ((uint64_t)64 << 20) /* bytes of a bundle file */
#define CLOUD_UPLOAD_BODY (CLOUD_UPLOAD_MAX + 12 + CLOUD_SIG_MAX)

struct cloud_upload;

/* Starts an upload: a temp file in DIR/bundles. 0 or a negative errno with
 * the reason in err. */
int cloud_upload_begin(struct cloud *c, struct cloud_upload **out, char *err, size_t errlen);
/* Feeds body bytes. 0, or a negative errno with the reason in err (-EFBIG:
 * over the limit; -EINVAL: not a signed bundle message; the caller stops
 * feeding). */
int cloud_upload_feed(struct cloud_upload *u, const char *data, size_t len, char *err,
                      size_t errlen);
/* Checks and keeps the bundle (inside a batch), queues its publish and
 * returns {"sha256", "name", "version", "size", "signed"} in *out. -EINVAL
 * with the reason for a bad bundle. */
int cloud_upload_finish(struct cloud_upload *u, cJSON **out, char *err, size_t errlen);
/* Removes the temp file if still there; NULL is a no-op. */
void cloud_upload_free(struct cloud_upload *u);

/* The stored record of a bundle ({"name", "version", ...}) or NULL
 * (caller deletes). */
cJSON *cloud_bundle_get(struct cloud *c, const char *sha);
/* {"bundles": [...]} of every stored bundle. */
cJSON *cloud_bundle_list(struct cloud *c);
/* True for 64 lowercase hex digits. */
bool cloud_sha_valid(const char *s);

#endif
