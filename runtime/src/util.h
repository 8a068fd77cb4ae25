/* Small helpers shared by every module: clocks, files, numbers, errors. */
#ifndef WISP_UTIL_H
#define WISP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WISP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t wisp_mono_ns(void);
/* CLOCK_REALTIME in nanoseconds since the epoch. */
uint64_t wisp_real_ns(void);
/* Formats a realtime ns stamp as RFC 3339 UTC with milliseconds into out (>= 25 bytes). */
void wisp_rfc3339(uint64_t real_ns, char *out, size_t cap);

/* Reads a whole regular file of at most max_bytes. On success *out is a
 * malloc'd NUL-terminated buffer the caller frees and *len its length
 * (without the NUL). Returns 0 or a negative errno (-EFBIG when too large). */
int wisp_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* strtoll with full-string, range and errno checks. 0 or -EINVAL/-ERANGE. */
int wisp_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* snprintf into an error buffer; safe with err == NULL. Returns `code`. */
int wisp_errf(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* malloc'd copy of s[0..len) plus a NUL; NULL on OOM. */
char *wisp_strndup(const char *s, size_t len);
/* malloc'd "a/b" path join; NULL on OOM. */
char *wisp_path_join(const char *a, const char *b);
/* mkdir -p dir (each missing folder with mode). 0 when dir is a folder at
 * the end; -EEXIST when it exists as something else; else -errno. */
int wisp_mkdir_p(const char *dir, unsigned mode);

/* True when buf[0..len) is well-formed UTF-8 without NUL bytes. */
bool wisp_utf8_valid(const char *buf, size_t len);

/* Standard base64 (RFC 4648, padded) of data[0..len): a malloc'd string, or
 * NULL on OOM. */
char *wisp_base64(const void *data, size_t len);

/* Writes all of buf to fd, retrying short writes and EINTR. 0 or -errno. */
int wisp_write_full(int fd, const void *buf, size_t len);

/* The entries of dir sorted by name, leaving out hidden ones (".x") and,
 * when suffix is given, names that do not end with it. *names is an array
 * of malloc'd strings (free each and the array). A directory that does not
 * exist gives 0 entries when missing_ok, else -ENOENT. 0 or -errno. */
int wisp_list_dir(const char *dir, const char *suffix, bool missing_ok, char ***names, size_t *n);

/* 64-bit FNV-1a, for content versions and hashing (not for security). */
uint64_t wisp_fnv1a64(uint64_t h, const void *data, size_t len);
#define WISP_FNV1A64_INIT 0xcbf29ce484222325ULL

#endif
