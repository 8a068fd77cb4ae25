/*
 * Function bundles: a function folder as one file, for shipping to gateways.
 *
 *   "WISPBNDL"                 8 bytes, magic
 *   manifest length            u32, big-endian, 1 .. WISP_BUNDLE_MAX_MANIFEST
 *   manifest                   UTF-8 JSON:
 *       {"format":1,"name":"...","version":"...",
 *        "files":[{"path":"function.json","size":N,"sha256":"<64 hex>"}, ...]}
 *   file contents              each file's bytes, in manifest order, nothing after
 *
 * cloud-sync/README.md describes the rules a reader enforces. Every
 * function returns 0 or a negative errno and, on failure, writes a sentence
 * starting with the bundle's (or folder's) path into err.
 */
#ifndef WISP_SYNC_BUNDLE_H
#define WISP_SYNC_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#define WISP_BUNDLE_MAGIC        "WISPBNDL"
#define WISP_BUNDLE_FORMAT       1
#define WISP_BUNDLE_MAX_MANIFEST (1u << 20)  /* bytes of manifest JSON */
#define WISP_BUNDLE_MAX_FILE     (16u << 20) /* bytes per file */
#define WISP_BUNDLE_MAX_TOTAL    (64u << 20) /* bytes of all files together */
#define WISP_BUNDLE_MAX_FILES    1024
#define WISP_BUNDLE_MAX_PATH     255 /* bytes of a relative path */
#define WISP_BUNDLE_MAX_DEPTH    8   /* folders below the function folder */

struct wisp_bundle_file {
    char *path; /* relative, '/'-separated */
    uint64_t size;
    char sha256[65];
};

struct wisp_bundle_info {
    char *name;
    char *version;
    struct wisp_bundle_file *files;
    size_t nfiles;
    uint64_t total;           /* bytes of all files */
    unsigned char digest[32]; /* SHA-256 of the whole bundle file */
};

void wisp_bundle_info_fini(struct wisp_bundle_info *info);

/* Packs the function folder dir into out (written beside it and renamed
 * into place). name and version go into the manifest: the caller takes them
 * from the function's loaded function.json. Every non-hidden entry of the
 * folder is packed, recursively; symlinks and other non-regular files are
 * refused, and so are folders deeper than the limits above. */
int wisp_bundle_pack(const char *dir, const char *name, const char *version, const char *out,
                     char *err, size_t errlen);

/* Reads the whole bundle at path and checks it (manifest, sizes, every
 * file's SHA-256, no truncation, no trailing bytes). With expect, the bundle
 * must also hash to that digest (the one its signature was verified on).
 * info (may be NULL) receives the manifest. */
int wisp_bundle_check(const char *path, const unsigned char *expect, struct wisp_bundle_info *info,
                      char *err, size_t errlen);

/* Like wisp_bundle_check, and writes the files into the new directory dest:
 * into "dest.tmp-XXXXXX" first, synced, then renamed to dest, so dest either
 * appears complete or not at all. dest must not exist. */
int wisp_bundle_unpack(const char *path, const char *dest, const unsigned char *expect,
                       struct wisp_bundle_info *info, char *err, size_t errlen);

#endif
