/*
 * Shared by fnspec.c, fnspec_json.c and fnspec_load.c only: buffer sizes
 * and the helpers one of them defines for the others. Not for other modules;
 * trigger kinds use the wisp_fnspec_* helpers declared in fnspec.h.
 */
#ifndef WISP_FNSPEC_INTERNAL_H
#define WISP_FNSPEC_INTERNAL_H

#include <stddef.h>

struct cJSON;

/* Room for one "<field>: <message>" before the origin is prefixed. */
#define MSG_CAP  1024
#define PATH_CAP 192
#define SHOW_CAP 80

/* "a, b, c" into buf, cut at cap. */
void wisp_fnspec_join(const char *const *names, size_t n, char *buf, size_t cap);

/* Parses len bytes of function.json text (not necessarily NUL-terminated)
 * into *out (cJSON_Delete it). Rejects empty and oversized documents, NUL
 * bytes, control characters, invalid UTF-8 and "\u0000" escapes before cJSON
 * sees the text. Errors are "(json): <message>" in err; -EINVAL or -ENOMEM. */
int wisp_fnspec_parse_json(const char *json, size_t len, struct cJSON **out, char *err,
                           size_t errlen);

#endif
