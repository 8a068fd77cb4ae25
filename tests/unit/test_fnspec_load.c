/* Loading function folders with wisp_fnspec_load (runtime/src/fnspec_load.c):
 * handler resolution, content versions and the errors of real files. Parsing
 * itself is covered by test_fnspec.c. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fnspec.h"
#include "testutil.h"

static char err[1024];

#define FN_JSON "{\"name\":\"f\",\"triggers\":[{\"type\":\"mqtt\",\"topic\":\"t\"}]}"

/* A fresh function folder: function.json for function "f" on topic "t",
 * `extra` added to it (see wisp_test_write_fn), and handler.lua. */
static bool make_fn(char *dir, size_t cap, const char *extra)
{
    if (!wisp_test_mkdtemp(dir, cap, "fnspec"))
        return false;
    wisp_test_write_fn(dir, "f", "t", extra, "return function(event, ctx) end\n");
    return true;
}

static char *load_version(const char *dir)
{
    struct wisp_fnspec *spec = NULL;
    int rc = wisp_fnspec_load(dir, &spec, err, sizeof(err));
    if (rc)
        (void)fprintf(stderr, "load: %s\n", err);
    CHECK_INT_EQ(rc, 0);
    char *v = spec ? strdup(spec->version) : NULL;
    wisp_fnspec_destroy(spec);
    return v;
}

static void test_load_ok(void)
{
    char dir[64];
    struct wisp_fnspec *spec = NULL;
    if (!make_fn(dir, sizeof(dir), ""))
        return;
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), 0);
    CHECK(spec != NULL);
    if (spec) {
        char origin[128];
        (void)snprintf(origin, sizeof(origin), "%s/function.json", dir);
        CHECK_STR_EQ(spec->dir, dir);
        CHECK_STR_EQ(spec->origin, origin);
        CHECK_STR_EQ(spec->name, "f");
        CHECK_INT_EQ(strlen(spec->version), 12);
        CHECK(strspn(spec->version, "0123456789abcdef") == 12);
    }
    wisp_fnspec_destroy(spec);

    /* A given version is kept as written. */
    wisp_test_write(
        dir, "function.json",
        "{\"name\":\"f\",\"version\":\"2.0\",\"triggers\":[{\"type\":\"mqtt\",\"topic\":\"t\"}]}");
    char *v = load_version(dir);
    CHECK_STR_EQ(v, "2.0");
    free(v);

    /* A handler in a subfolder, reached through a symlink inside it. */
    wisp_test_mkdir(dir, "src");
    wisp_test_write(dir, "src/real.lua", "return function() end\n");
    wisp_test_write(
        dir, "function.json",
        "{\"name\":\"f\",\"handler\":\"src/h.lua\",\"triggers\":[{\"type\":\"mqtt\",\"topic\":"
        "\"t\"}]}");
    wisp_test_symlink("real.lua", dir, "src/h.lua");
    v = load_version(dir);
    CHECK(v != NULL);
    free(v);
    wisp_test_rmtree(dir);
}

static void test_load_native(void)
{
    char dir[64];
    struct wisp_fnspec *spec = NULL;
    if (!make_fn(dir, sizeof(dir), ",\"runtime\":\"native\""))
        return;
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "handler: file \"handler.so\" not found in");
    wisp_test_write(dir, "handler.so",
                    "\x7f"
                    "ELF");
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), 0);
    wisp_fnspec_destroy(spec);
    wisp_test_rmtree(dir);
}

/* The content version follows function.json, the handler and lib/ *.lua,
 * and nothing else. */
static void test_load_version(void)
{
    char a[64], b[64];
    if (!make_fn(a, sizeof(a), ""))
        return;
    if (!make_fn(b, sizeof(b), "")) {
        wisp_test_rmtree(a);
        return;
    }
    char *v0 = load_version(a), *v1 = load_version(a), *vb = load_version(b);
    CHECK_STR_EQ(v0, v1);
    CHECK_STR_EQ(v0, vb); /* the folder's path is not part of it */
    free(v1);
    free(vb);

    wisp_test_write(a, "README.md", "docs\n");
    v1 = load_version(a);
    CHECK_STR_EQ(v1, v0);
    free(v1);

    wisp_test_write(a, "handler.lua", "return function(event, ctx) return 1 end\n");
    char *vh = load_version(a);
    CHECK(vh && v0 && strcmp(vh, v0) != 0);

    wisp_test_mkdir(a, "lib");
    v1 = load_version(a);
    CHECK_STR_EQ(v1, vh); /* an empty lib/ changes nothing */
    free(v1);
    wisp_test_write(a, "lib/notes.txt", "x");
    wisp_test_mkdir(a, "lib/dir.lua");
    v1 = load_version(a);
    CHECK_STR_EQ(v1, vh); /* neither does a non-.lua file or a folder */
    free(v1);

    wisp_test_write(a, "lib/b.lua", "return 2\n");
    wisp_test_write(a, "lib/a.lua", "return 1\n");
    char *vl = load_version(a);
    CHECK(vl && vh && strcmp(vl, vh) != 0);

    /* Same files created in the other order: same version (sorted names). */
    wisp_test_write(b, "handler.lua", "return function(event, ctx) return 1 end\n");
    wisp_test_mkdir(b, "lib");
    wisp_test_write(b, "lib/a.lua", "return 1\n");
    wisp_test_write(b, "lib/b.lua", "return 2\n");
    vb = load_version(b);
    CHECK_STR_EQ(vb, vl);
    free(vb);

    /* Names count: the same bytes under another name are another version. */
    wisp_test_write(b, "lib/b.lua", "return 1\n");
    wisp_test_write(b, "lib/a.lua", "return 2\n");
    vb = load_version(b);
    CHECK(vb && vl && strcmp(vb, vl) != 0);
    free(vb);

    wisp_test_write(a, "lib/a.lua", "return 3\n");
    v1 = load_version(a);
    CHECK(v1 && vl && strcmp(v1, vl) != 0);
    free(v1);

    wisp_test_write(a, "function.json", FN_JSON "\n");
    v1 = load_version(a);
    CHECK(v1 && vl && strcmp(v1, vl) != 0);

    /* require() also loads nested lib/ modules and the folder's own *.lua:
     * editing either is a new version too. */
    wisp_test_mkdir(a, "lib/sub");
    wisp_test_write(a, "lib/sub/c.lua", "return 'c'\n");
    char *vn = load_version(a);
    CHECK(vn && v1 && strcmp(vn, v1) != 0);
    wisp_test_write(a, "util.lua", "return 'u'\n");
    char *vr = load_version(a);
    CHECK(vr && vn && strcmp(vr, vn) != 0);
    free(vn);
    free(vr);
    free(v1);

    free(v0);
    free(vh);
    free(vl);
    wisp_test_rmtree(a);
    wisp_test_rmtree(b);
}

static void test_load_errors(void)
{
    char dir[64], want[512], outside[128];
    struct wisp_fnspec *spec = NULL;
    if (!make_fn(dir, sizeof(dir), ""))
        return;

    (void)snprintf(outside, sizeof(outside), "%s/handler.lua", dir);
    CHECK(unlink(outside) == 0);
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -EINVAL);
    CHECK(spec == NULL);
    (void)snprintf(want, sizeof(want),
                   "%s/function.json:handler: file \"handler.lua\" not found in %s", dir, dir);
    CHECK_STR_EQ(err, want);

    wisp_test_mkdir(dir, "handler.lua");
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, ":handler: \"handler.lua\" in ");
    CHECK_CONTAINS(err, " is not a regular file");
    CHECK(rmdir(outside) == 0);

    /* A symlink that leads out of the folder is refused. */
    (void)snprintf(outside, sizeof(outside), "%s-outside.lua", dir);
    FILE *f = fopen(outside, "w");
    CHECK(f != NULL);
    if (f)
        CHECK(fclose(f) == 0);
    char link[128];
    (void)snprintf(link, sizeof(link), "%s/handler.lua", dir);
    CHECK(symlink(outside, link) == 0);
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "/function.json:handler: \"handler.lua\" leads outside ");
    CHECK(unlink(outside) == 0);
    CHECK(unlink(link) == 0);

    wisp_test_write(dir, "function.json", "{\"name\":\"f\",\n \"triggers\": 5}");
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -EINVAL);
    (void)snprintf(want, sizeof(want), "%s/function.json:triggers: must be an array", dir);
    CHECK_CONTAINS(err, want);

    wisp_test_write(dir, "function.json", "{\"name\":\"f\",\n \"triggers\": [}");
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "/function.json:(json): invalid JSON at line 2, column 15 near \"}\"");

    char *big = wisp_test_repeat(FN_JSON, " ", (size_t)WISP_MAX_SPEC_BYTES, "");
    if (big)
        wisp_test_write(dir, "function.json", big);
    free(big);
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "/function.json:(json): more than the limit of 262144 bytes");

    (void)snprintf(outside, sizeof(outside), "%s/function.json", dir);
    CHECK(unlink(outside) == 0);
    CHECK_INT_EQ(wisp_fnspec_load(dir, &spec, err, sizeof(err)), -ENOENT);
    (void)snprintf(want, sizeof(want), "%s/function.json:(json): cannot read: No such file", dir);
    CHECK_CONTAINS(err, want);
    CHECK(spec == NULL);
    CHECK_INT_EQ(wisp_fnspec_load(NULL, &spec, err, sizeof(err)), -EINVAL);
    wisp_test_rmtree(dir);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"load_ok", test_load_ok},
        {"load_native", test_load_native},
        {"load_version", test_load_version},
        {"load_errors", test_load_errors},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
