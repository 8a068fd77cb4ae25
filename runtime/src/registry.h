/*
 * Loading the functions folder: every sub-folder is a function. A broken
 * function is reported ("path:field: message") and left out; the others
 * load. Lua handlers are compiled (not run) here so syntax errors show at
 * load time with their line numbers.
 */
#ifndef WISP_REGISTRY_H
#define WISP_REGISTRY_H

#include <stddef.h>

#include "fnspec.h"

struct wisp_registry_scan {
    struct wisp_fnspec **specs; /* owned; hand them over or free with _fini */
    size_t n;
    size_t n_rejected;
};

/* Scans dir. Errors about single functions are logged and counted; only a
 * missing or unreadable dir fails (negative errno, err says why). */
int wisp_registry_scan(const char *dir, struct wisp_registry_scan *out, char *err, size_t errlen);
void wisp_registry_scan_fini(struct wisp_registry_scan *s);

/* Loads and checks one function folder, as the scan does for each: the
 * spec, the handler file, and for Lua a compile of the handler. */
int wisp_registry_load_one(const char *dir, struct wisp_fnspec **out, char *err, size_t errlen);

/* The sub-folders of dir not starting with '.', sorted; *names is an array
 * of malloc'd strings the caller frees (each, then the array). */
int wisp_registry_list_dirs(const char *dir, char ***names, size_t *n);

#endif
