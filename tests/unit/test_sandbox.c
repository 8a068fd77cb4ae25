/*
 * The Lua sandbox, driven through the real engine: each escape a handler
 * might try is run as a handler body, and the test checks the actual error
 * text (or value) that comes back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "fnspec.h"
#include "testutil.h"
#include "util.h"

struct fn {
    char dir[64];
    struct wisp_fnspec spec;
    void *inst;
};

/* A bundle whose handler runs `body` as handler(event, ctx), with a few
 * modules under lib/ and one at the top. */
static void fn_init(struct fn *f, const char *body)
{
    char src[4096];
    memset(f, 0, sizeof(*f));
    (void)wisp_test_mkdtemp(f->dir, sizeof(f->dir), "sandbox");
    (void)snprintf(src, sizeof(src), "return function(event, ctx)\n%s\nend\n", body);
    wisp_test_write(f->dir, "handler.lua", src);
    wisp_test_mkdir(f->dir, "lib");
    wisp_test_mkdir(f->dir, "lib/pkg");
    wisp_test_write(f->dir, "lib/util.lua",
                    "local M = {loads = (loads or 0) + 1}\n"
                    "loads = M.loads\n"
                    "function M.greet(who) return 'hello ' .. who end\n"
                    "M.sees_io = io ~= nil\n"
                    "M.args = table.concat({...}, ',')\n"
                    "return M\n");
    wisp_test_write(f->dir, "lib/pkg/mod.lua", "return {name = 'pkg.mod'}\n");
    wisp_test_write(f->dir, "lib/loop.lua", "return require('loop')\n");
    wisp_test_write(f->dir, "lib/broken.lua", "local x = = 2\n");
    wisp_test_write(f->dir, "lib/fails.lua", "error('module failed')\n");
    wisp_test_write(f->dir, "toplevel.lua", "return 'top'\n");
    wisp_test_symlink("/etc/hostname", f->dir, "lib/outside.lua");
    wisp_test_symlink("../toplevel.lua", f->dir, "lib/alias.lua");
    f->spec.dir = f->dir;
    f->spec.name = "sandbox";
    f->spec.version = "1";
    f->spec.handler = "handler.lua";
    f->spec.memory_kb = 1024;
    f->spec.timeout_ms = 1000;
}

static void fn_fini(struct fn *f)
{
    wisp_engine_lua.destroy(f->inst);
    wisp_test_rmtree(f->dir);
}

/* Runs the body once on instance f. Returns a malloc'd string: the publish
 * payloads joined with '|' when the handler succeeded, else "ERR " and the
 * error message. */
static char *run_on(struct fn *f)
{
    struct wisp_event ev = {.id = "e1", .source = "s", .type = "t", .time = "x", .qos = -1};
    struct wisp_result res;
    char out[4096];
    size_t o = 0;
    (void)wisp_engine_lua.invoke(f->inst, &ev, &res);
    if (res.outcome != WISP_OUTCOME_OK) {
        (void)snprintf(out, sizeof(out), "ERR %s", res.error ? res.error : "(none)");
    } else {
        out[0] = '\0';
        for (size_t i = 0; i < res.n_pubs && o + 1 < sizeof(out); i++) {
            int n = snprintf(out + o, sizeof(out) - o, "%s%.*s", i ? "|" : "",
                             (int)res.pubs[i].payload_len, res.pubs[i].payload);
            o += n > 0 ? (size_t)n : 0;
        }
    }
    wisp_result_fini(&res);
    return wisp_strndup(out, strlen(out));
}

static char *run(const char *body)
{
    struct fn f;
    char err[256];
    fn_init(&f, body);
    int rc = wisp_engine_lua.create(&f.spec, &f.inst, err, sizeof(err));
    CHECK_INT_EQ(rc, 0);
    char *out = rc == 0 ? run_on(&f) : wisp_strndup(err, strlen(err));
    fn_fini(&f);
    return out;
}

/* The body's result must contain `want`. */
static void expect(const char *body, const char *want)
{
    char *out = run(body);
    if (!out || !strstr(out, want))
        (void)fprintf(stderr, "body: %s\n", body);
    CHECK_CONTAINS(out, want);
    free(out);
}

/* The body's result must be exactly `want`. */
static void expect_eq(const char *body, const char *want)
{
    char *out = run(body);
    if (!out || strcmp(out, want) != 0)
        (void)fprintf(stderr, "body: %s\n", body);
    CHECK_STR_EQ(out, want);
    free(out);
}

#define P(expr) "ctx.publish('t', tostring(" expr "))"

static void test_globals_whitelist(void)
{
    expect_eq("local n = {} for k in pairs(_G) do n[#n + 1] = k end table.sort(n)\n"
              "ctx.publish('t', table.concat(n, ' '))",
              "_G _VERSION assert collectgarbage coroutine error getmetatable ipairs load "
              "math next os pairs pcall print rawequal rawget rawlen rawset require select "
              "setmetatable string table tonumber tostring type utf8 xpcall");
    expect_eq("local n = {} for k in pairs(os) do n[#n + 1] = k end table.sort(n)\n"
              "ctx.publish('t', table.concat(n, ' '))",
              "clock date difftime time");
    expect_eq("local n = {} for k in pairs(coroutine) do n[#n + 1] = k end table.sort(n)\n"
              "ctx.publish('t', table.concat(n, ' '))",
              "create isyieldable resume running status wrap yield");
    expect_eq("local n = {} for k in pairs(require('cjson')) do n[#n + 1] = k end\n"
              "table.sort(n) ctx.publish('t', table.concat(n, ' '))",
              "decode decode_invalid_numbers encode encode_invalid_numbers "
              "encode_number_precision encode_sparse_array null");
    expect_eq(P("_G == _ENV and _G.io == nil and rawget(_G, 'print') == print"), "true");
}

static void test_escapes_blocked(void)
{
    expect("io.write('x')", "handler.lua:2: attempt to index a nil value (global 'io')");
    expect("os.execute('true')", "handler.lua:2: attempt to call a nil value (field 'execute')");
    expect("os.exit(1)", "handler.lua:2: attempt to call a nil value (field 'exit')");
    expect("os.getenv('HOME')", "handler.lua:2: attempt to call a nil value (field 'getenv')");
    expect_eq(P("os.remove") " " P("os.rename") " " P("os.tmpname"), "nil|nil|nil");
    expect("package.loaded.os = 1",
           "handler.lua:2: attempt to index a nil value (global 'package')");
    expect("debug.getinfo(1)", "handler.lua:2: attempt to index a nil value (global 'debug')");
    expect_eq(P("debug") " " P("dofile") " " P("loadfile") " " P("warn"), "nil|nil|nil|nil");
    expect_eq(P("string.dump") " " P("('').dump") " " P("coroutine.close"), "nil|nil|nil");
    expect_eq(P("require('cjson').new") " " P("require('cjson').encode_max_depth"), "nil|nil");
}

static void test_os_subset_works(void)
{
    expect_eq(P("math.type(os.time())") " " P("os.date('!%Y-%m-%d', 86400)") " " P(
                  "type(os.clock())") " " P("os.difftime(10, 4)"),
              "integer|1970-01-02|number|6.0");
    expect("os.date('%Ez')", "invalid conversion specifier");
}

static void test_require(void)
{
    expect_eq("local u = require('util')\n" P("u.greet('x')") " " P("u.sees_io") " " P(
                  "u.args") " " P("require('util') == u") " " P("u.loads"),
              "hello x|false|util,lib/util.lua|true|1");
    expect_eq(P("require('pkg.mod').name") " " P("require('toplevel')"), "pkg.mod|top");
    expect_eq(P("require('cjson').encode({1, 2})"), "[1,2]");
    expect("require('os')", "require: module 'os' not found in the bundle (tried lib/os.lua, "
                            "os.lua)");
    expect("require('missing')", "require: module 'missing' not found in the bundle");
    expect("require('../x')", "require: invalid module name '../x'");
    expect("require('pkg..mod')", "require: invalid module name 'pkg..mod'");
    expect("require('/etc/passwd')", "require: invalid module name '/etc/passwd'");
    expect("require('.hidden')", "require: invalid module name");
    expect("require('loop')", "require: module 'loop' requires itself while loading");
    /* Symlinks may point within the bundle, not out of it. */
    expect_eq(P("require('alias')"), "top");
    expect("require('outside')",
           "require: cannot read lib/outside.lua: resolves outside the bundle");
    expect("require('broken')", "lib/broken.lua:1: unexpected symbol near '='");
    /* A module that failed can be required again (and fails again). */
    expect_eq("local a = select(2, pcall(require, 'fails'))\n"
              "local b = select(2, pcall(require, 'fails'))\n" P("a == b") " " P("a"),
              "true|lib/fails.lua:1: module failed");
}

static void test_load(void)
{
    expect_eq("local f, e = load('\\27Lua\\84\\0rest')\n" P("f") " " P("e"),
              "nil|attempt to load a binary chunk (mode is 't')");
    expect_eq("local f, e = load('\\27Lua\\84\\0rest', 'x', 'b')\n" P("f") " " P("e"),
              "nil|attempt to load a binary chunk (mode is 't')");
    expect_eq("local f = load('leaked = 42; return io, _G')\n"
              "local a, g = f()\n" P("a") " " P("leaked") " " P("g == _G"),
              "nil|42|true");
    expect_eq(P("load('return x', 'c', 't', {x = 7})()"), "7");
    expect_eq("local parts = {'return ', '5'}\n"
              "local f = load(function() return table.remove(parts, 1) end)\n" P("f()"),
              "5");
    expect_eq("local f, e = load('x = = 1', '=chunk')\n" P("e"),
              "chunk:1: unexpected symbol near '='");
}

static void test_string_metatable(void)
{
    expect_eq(P("getmetatable('')"), "locked");
    expect_eq(P("getmetatable('').__index"), "nil");
    expect("getmetatable('').__index.upper = nil", "attempt to index a nil value");
    expect("setmetatable('', {})", "bad argument #1 to 'setmetatable' (table expected");
    expect_eq(P("('abc'):upper()") " " P("('%d'):format(3)"), "ABC|3");

    /* Changing the sandbox's string table affects only this instance. */
    struct fn a, b;
    char err[256];
    fn_init(&a, "string.upper = function() return 'changed' end\n" P("('a'):upper()"));
    fn_init(&b, P("('a'):upper()"));
    CHECK_INT_EQ(wisp_engine_lua.create(&a.spec, &a.inst, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_engine_lua.create(&b.spec, &b.inst, err, sizeof(err)), 0);
    char *ra = run_on(&a), *rb = run_on(&b);
    CHECK_STR_EQ(ra, "changed");
    CHECK_STR_EQ(rb, "A");
    free(ra);
    free(rb);
    fn_fini(&a);
    fn_fini(&b);
}

static void test_no_finalizers(void)
{
    expect("setmetatable({}, {__gc = function() while true do end end})",
           "handler.lua:2: setmetatable: __gc metamethods are not allowed in handlers");
    expect("setmetatable({}, {__gc = true})", "__gc metamethods are not allowed");
    /* A __gc added after setmetatable is never called. */
    expect_eq("local mt = {}\n"
              "setmetatable({}, mt)\n"
              "mt.__gc = function() ctx.publish('t', 'finalized') end\n"
              "collectgarbage() collectgarbage()\n"
              "ctx.publish('t', 'done')",
              "done");
    expect_eq(P("getmetatable(setmetatable({}, {__index = {x = 1}})).__index.x"), "1");
    expect("setmetatable({})", "bad argument #2 to 'setmetatable' (nil or table expected");
}

/* What may leave the sandbox through ctx.publish. */
static void test_publish_checks(void)
{
    static const struct {
        const char *code, *want;
    } cases[] = {
        {"ctx.publish('a/+/b', 1)", "publish: invalid topic: contains a wildcard ('+' or '#')"},
        {"ctx.publish('a/#', 1)", "publish: invalid topic: contains a wildcard"},
        {"ctx.publish('', 1)", "publish: invalid topic: empty"},
        {"ctx.publish('a\\0b', 1)", "publish: invalid topic: not valid UTF-8 or contains NUL"},
        {"ctx.publish('a\\255', 1)", "publish: invalid topic: not valid UTF-8"},
        {"ctx.publish(string.rep('a', 65536), 1)", "publish: invalid topic: longer than 65535"},
        {"ctx.publish(7, 1)", "publish: topic must be a string (got number)"},
        {"ctx.publish('a', 1, {qos = 3})", "publish: opts.qos must be 0, 1 or 2"},
        {"ctx.publish('a', 1, {qos = '1'})", "publish: opts.qos must be 0, 1 or 2"},
        {"ctx.publish('a', 1, {retain = 1})", "publish: opts.retain must be a boolean"},
        {"ctx.publish('a', 1, 5)", "publish: opts must be a table (got number)"},
        {"ctx.publish('a', nil)", "publish: value must be a table, string, number or boolean"},
        {"ctx.publish('a', print)",
         "publish: value must be a table, string, number or boolean (got function)"},
        {"ctx.publish('a', {f = print})", "publish: cannot encode value as JSON: Cannot serialise"},
        {"ctx.publish('a', 0/0)", "publish: cannot encode NaN or infinity as JSON"},
        {"ctx.publish('a', {[1] = 1, [1000] = 2})", "publish: cannot encode value as JSON"},
    };
    char want[128];
    for (size_t i = 0; i < WISP_ARRAY_LEN(cases); i++) {
        (void)snprintf(want, sizeof(want), "handler.lua:2: %s", cases[i].want);
        expect(cases[i].code, want);
    }
    expect_eq("ctx.publish('a/b', 2^53) ctx.publish('a/b', -0.5) ctx.publish('a/b', 1e300)\n"
              "ctx.publish('a/b', math.mininteger) ctx.publish('a/b', 1/3)",
              "9007199254740992|-0.5|1e+300|-9223372036854775808|0.33333333333333331");
}

static void test_collectgarbage(void)
{
    expect("collectgarbage('stop')",
           "collectgarbage: option 'stop' is not allowed (only \"count\", \"collect\" and "
           "\"step\")");
    expect("collectgarbage('generational')", "option 'generational' is not allowed");
    expect("collectgarbage('setpause', 1000)", "option 'setpause' is not allowed");
    expect_eq(P("math.type(collectgarbage('count'))") " " P("collectgarbage()") " " P(
                  "type(collectgarbage('step'))"),
              "float|0|boolean");
}

static void test_coroutines(void)
{
    expect_eq("local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) "
              "return b * 2 end)\n" P("co(1)") " " P("co(5)"),
              "2|10");
    expect("coroutine.yield(1)", "attempt to yield from outside a coroutine");
}

static const struct wisp_check_test tests[] = {
    {"globals_whitelist", test_globals_whitelist},
    {"escapes_blocked", test_escapes_blocked},
    {"os_subset_works", test_os_subset_works},
    {"require", test_require},
    {"load", test_load},
    {"string_metatable", test_string_metatable},
    {"no_finalizers", test_no_finalizers},
    {"publish_checks", test_publish_checks},
    {"collectgarbage", test_collectgarbage},
    {"coroutines", test_coroutines},
};

int main(int argc, char **argv)
{
    return WISP_CHECK_RUN(argc, argv, tests);
}
