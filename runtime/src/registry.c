#define WISP_LOG_MODULE "registry"
#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "util.h"

/* Compiles (never runs) a Lua handler in a throwaway state, so a syntax
 * error is reported when the function is loaded, not at its first event. */
static int check_lua(const struct wisp_fnspec *spec, char *err, size_t errlen)
{
    char *path = wisp_path_join(spec->dir, spec->handler);
    char *src = NULL;
    size_t len = 0;
    int rc = 0;
    lua_State *L = NULL;
    if (!path)
        return -ENOMEM;
    rc = wisp_read_file(path, (size_t)16 * 1024 * 1024, &src, &len);
    if (rc) {
        wisp_errf(err, errlen, rc, "%s: cannot read: %s", path, strerror(-rc));
        goto out;
    }
    L = luaL_newstate();
    if (!L) {
        rc = -ENOMEM;
        goto out;
    }
    char chunk[300];
    (void)snprintf(chunk, sizeof(chunk), "@%s", path); /* a cut chunk name is fine */
    if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        rc = wisp_errf(err, errlen, -EINVAL, "%s", m ? m : "cannot compile the handler");
    }
out:
    if (L)
        lua_close(L);
    free(src);
    free(path);
    return rc;
}

int wisp_registry_load_one(const char *dir, struct wisp_fnspec **out, char *err, size_t errlen)
{
    struct wisp_fnspec *spec = NULL;
    int rc = wisp_fnspec_load(dir, &spec, err, errlen);
    if (rc)
        return rc;
    if (spec->runtime == WISP_RUNTIME_LUA)
        rc = check_lua(spec, err, errlen);
    if (rc) {
        wisp_fnspec_destroy(spec);
        return rc;
    }
    *out = spec;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the sub-folders of dir (not starting with '.'), sorted so that the
 * load order, and so which of two same-named functions wins, is stable. */
int wisp_registry_list_dirs(const char *dir, char ***names, size_t *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char *full = wisp_path_join(dir, de->d_name);
        struct stat st;
        bool is_dir = full && stat(full, &st) == 0 && S_ISDIR(st.st_mode);
        free(full);
        if (!is_dir)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(*names, cap * sizeof(*nn));
            if (!nn) {
                rc = -ENOMEM;
                break;
            }
            *names = nn;
        }
        if (!((*names)[*n] = wisp_strndup(de->d_name, strlen(de->d_name)))) {
            rc = -ENOMEM;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(*names, *n, sizeof(**names), cmp_names);
    return rc;
}

static bool name_taken(struct wisp_fnspec *const *specs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (specs[i] && strcmp(specs[i]->name, name) == 0)
            return true;
    }
    return false;
}

static void free_specs(struct wisp_fnspec **specs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wisp_fnspec_destroy(specs[i]);
    free(specs);
}

int wisp_registry_scan(const char *dir, struct wisp_registry_scan *out, char *err, size_t errlen)
{
    char **names = NULL;
    size_t n = 0;
    /* Built in locals and handed to *out only on success, so that *out is
     * either complete or all zero. */
    struct wisp_fnspec **specs = NULL;
    size_t kept = 0, rejected = 0;
    memset(out, 0, sizeof(*out));
    int rc = wisp_registry_list_dirs(dir, &names, &n);
    if (rc) {
        wisp_errf(err, errlen, rc, "%s: cannot read the functions folder: %s", dir, strerror(-rc));
        goto out;
    }
    specs = calloc(n ? n : 1, sizeof(struct wisp_fnspec *));
    if (!specs) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char *path = wisp_path_join(dir, names[i]);
        struct wisp_fnspec *spec = NULL;
        char why[1024] = "";
        if (!path) {
            rc = -ENOMEM;
            goto out;
        }
        if (wisp_registry_load_one(path, &spec, why, sizeof(why)) != 0 || !spec) {
            log_error("rejected %s", why);
            rejected++;
        } else if (name_taken(specs, kept, spec->name)) {
            log_error("rejected %s:name: \"%s\" is already used by another folder", spec->origin,
                      spec->name);
            wisp_fnspec_destroy(spec);
            rejected++;
        } else {
            specs[kept++] = spec;
        }
        free(path);
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (rc) {
        free_specs(specs, kept);
        return rc;
    }
    out->specs = specs;
    out->n = kept;
    out->n_rejected = rejected;
    return 0;
}

void wisp_registry_scan_fini(struct wisp_registry_scan *s)
{
    if (s->specs)
        free_specs(s->specs, s->n);
    memset(s, 0, sizeof(*s));
}
