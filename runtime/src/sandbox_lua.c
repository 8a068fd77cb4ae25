/*
 * The Lua sandbox. Handler code never sees the state's real global table:
 * every chunk that enters the state (the handler, bundle modules, text given
 * to load) gets a fresh environment built from the whitelists below, and the
 * only functions in it that could reach the real globals (load, require) are
 * wrappers that always hand out the sandbox environment instead.
 *
 * Library tables are copied name by name, so a function we did not list is
 * absent even if the Lua build adds one; a name we list that the build lacks
 * fails setup loudly instead of silently shrinking the sandbox.
 */
#include "sandbox_lua.h"

#include "json_numbers.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>

#include "util.h"

/* Registry key of the sandbox environment (the address is the key). */
static const char env_key = 'e';
/* Marks a module in the require cache while its chunk runs, to detect loops. */
static const char loading_mark = 'l';

enum { MAX_MODULE_NAME = 128 };

static const char *const base_names[] = {
    "assert",   "error",    "ipairs", "next",         "pairs",    "pcall",
    "xpcall",   "rawequal", "rawget", "rawlen",       "rawset",   "select",
    "tonumber", "tostring", "type",   "getmetatable", "_VERSION", NULL,
};

/* string.dump is left out: it hands out bytecode, the input that can crash
 * the VM, and exposes upvalue layouts. */
static const char *const string_names[] = {
    "byte", "char",    "find", "format", "gmatch", "gsub",     "len",    "lower", "match",
    "rep",  "reverse", "sub",  "upper",  "pack",   "packsize", "unpack", NULL,
};

static const char *const table_names[] = {
    "concat", "insert", "move", "pack", "remove", "sort", "unpack", NULL,
};

static const char *const math_names[] = {
    "abs", "acos",       "asin", "atan",      "ceil", "cos",    "deg",
    "exp", "floor",      "fmod", "huge",      "log",  "max",    "maxinteger",
    "min", "mininteger", "modf", "pi",        "rad",  "random", "randomseed",
    "sin", "sqrt",       "tan",  "tointeger", "type", "ult",    NULL,
};

static const char *const utf8_names[] = {
    "char", "charpattern", "codes", "codepoint", "len", "offset", NULL,
};

/* coroutine.close is left out: chained closes with to-be-closed variables
 * crash Debian's 5.4.4 (fixed upstream in 5.4.5). */
static const char *const coroutine_names[] = {
    "create", "isyieldable", "resume", "running", "status", "wrap", "yield", NULL,
};

static const char *const os_names[] = {"clock", "date", "difftime", "time", NULL};

/* Left out of cjson: the settings that raise nesting limits (deep nesting
 * recurses in C, where only the supervisor's kill could stop a stack
 * overflow); encode_keep_buffer, because without the kept buffer a memory
 * error leaks cjson's C buffer; and "new", which would hand all of them out
 * again. encode and decode are added wrapped (wisp_sandbox_lua_push_json_fn). */
static const char *const cjson_names[] = {
    "null",
    "encode_sparse_array",
    "encode_number_precision",
    "encode_invalid_numbers",
    "decode_invalid_numbers",
    NULL,
};

/* cjson's own limit; deeper values make cjson.encode fail by itself. */
enum { JSON_MAX_DEPTH = 1000 };

static const char *const gc_options[] = {"count", "collect", "step", NULL};

/* Copies src[name] into the table on top of the stack for each name. */
static void copy_names(lua_State *L, int src, const char *const *names, const char *what)
{
    for (size_t i = 0; names[i]; i++) {
        if (lua_getfield(L, src, names[i]) == LUA_TNIL)
            luaL_error(L, "sandbox: %s.%s is missing from this Lua build", what, names[i]);
        lua_setfield(L, -2, names[i]);
    }
}

/* Opens one standard library (without making it a global) and stores a copy
 * restricted to `names` as env[name]. */
static void add_library(lua_State *L, int env, const char *name, lua_CFunction open,
                        const char *const *names)
{
    luaL_requiref(L, name, open, 0);
    lua_createtable(L, 0, 32);
    copy_names(L, -2, names, name);
    lua_setfield(L, env, name);
    lua_pop(L, 1);
}

/* load(chunk [, chunkname [, mode [, env]]]): mode is always "t" (bytecode
 * can crash the VM) and env defaults to the sandbox, not the real globals. */
static int sandbox_load(lua_State *L)
{
    bool has_env = !lua_isnone(L, 4);
    lua_settop(L, 4);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    if (has_env)
        lua_pushvalue(L, 4);
    else
        wisp_sandbox_lua_push_env(L);
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L) - 4;
}

/* setmetatable without __gc. Lua runs finalizers with debug hooks off, so a
 * finalizer could loop forever out of reach of the time limit, during an
 * invocation or at lua_close. Only an object whose metatable has __gc when
 * setmetatable is called gets finalized, so refusing it here is enough: a
 * __gc added to the metatable later is never called. */
static int sandbox_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed in handlers");
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* collectgarbage limited to options that cannot switch the collector off or
 * retune it: a stopped collector would turn every handler into a leak. */
static int sandbox_collectgarbage(lua_State *L)
{
    const char *opt = luaL_optstring(L, 1, "collect");
    bool ok = false;
    for (size_t i = 0; gc_options[i]; i++)
        ok = ok || strcmp(opt, gc_options[i]) == 0;
    if (!ok)
        return luaL_error(L,
                          "collectgarbage: option '%s' is not allowed "
                          "(only \"count\", \"collect\" and \"step\")",
                          opt);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Module names are dot-separated segments of [A-Za-z0-9_]; nothing else can
 * appear, so a name can never climb out of the bundle ("..", "/"). */
static bool module_name_ok(const char *name, size_t len)
{
    bool seg_empty = true;
    if (len == 0 || len > MAX_MODULE_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (c == '.') {
            if (seg_empty)
                return false;
            seg_empty = true;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_') {
            seg_empty = false;
        } else {
            return false;
        }
    }
    return !seg_empty;
}

/* Resolves <dir>/<rel> and checks that it stays inside dir, so that a
 * symlink in a bundle cannot make the sandbox read files from elsewhere.
 * Returns a malloc'd path, or NULL with *err_no set (EXDEV: outside). */
static char *bundle_path(const char *dir, const char *rel, int *err_no)
{
    char *joined = wisp_path_join(dir, rel), *real = NULL, *root = NULL;
    *err_no = ENOMEM;
    if (!joined)
        goto out;
    real = realpath(joined, NULL);
    if (!real) {
        *err_no = errno;
        goto out;
    }
    root = realpath(dir, NULL);
    size_t n = root ? strlen(root) : 0;
    if (!root || strncmp(real, root, n) != 0 || (n > 1 && real[n] != '/')) {
        *err_no = root ? EXDEV : errno;
        free(real);
        real = NULL;
        goto out;
    }
    *err_no = 0;
out:
    free(joined);
    free(root);
    return real;
}

static const char *read_error_text(int err_no)
{
    if (err_no == EFBIG)
        return "file too large";
    if (err_no == EXDEV)
        return "resolves outside the bundle";
    return strerror(err_no);
}

/* Reads and compiles <dir>/<rel>; see wisp_sandbox_lua_loadfile. On a read
 * error pushes nothing, sets *sys_errno and returns LUA_ERRFILE. The file's
 * bytes live in C memory only between the read and the compile, neither of
 * which raises, so a Lua error can never leak them. */
static int load_rel(lua_State *L, const char *dir, const char *rel, int *sys_errno)
{
    char *buf = NULL;
    size_t len = 0;
    int err_no = 0;
    const char *chunkname = lua_pushfstring(L, "@%s", rel);
    char *path = bundle_path(dir, rel, &err_no);
    int rc = path ? wisp_read_file(path, WISP_SANDBOX_MAX_SOURCE, &buf, &len) : -err_no;
    free(path);
    if (rc < 0) {
        lua_pop(L, 1);
        *sys_errno = -rc;
        return LUA_ERRFILE;
    }
    int st = luaL_loadbufferx(L, buf, len, chunkname, "t");
    free(buf);
    lua_remove(L, -2);
    if (st == LUA_OK) {
        wisp_sandbox_lua_push_env(L);
        if (!lua_setupvalue(L, -2, 1))
            lua_pop(L, 1);
    }
    return st;
}

int wisp_sandbox_lua_loadfile(lua_State *L, const char *dir, const char *rel, int *sys_errno)
{
    int err_no = 0;
    int st = load_rel(L, dir, rel, &err_no);
    if (sys_errno)
        *sys_errno = err_no;
    if (st == LUA_ERRFILE)
        lua_pushfstring(L, "%s: cannot read: %s", rel, read_error_text(err_no));
    return st;
}

/* Pushes the compiled chunk of module `name` and its relative path, trying
 * lib/<path>.lua then <path>.lua. Raises when neither exists or on errors. */
static void find_module(lua_State *L, const char *dir, const char *name)
{
    static const char *const patterns[] = {"lib/%s.lua", "%s.lua"};
    const char *path = luaL_gsub(L, name, ".", "/");
    for (size_t i = 0; i < WISP_ARRAY_LEN(patterns); i++) {
        const char *rel = lua_pushfstring(L, patterns[i], path);
        int err_no = 0;
        int st = load_rel(L, dir, rel, &err_no);
        if (st == LUA_OK) {
            lua_insert(L, -2);
            return;
        }
        if (st != LUA_ERRFILE)
            lua_error(L);
        if (err_no != ENOENT && err_no != ENOTDIR)
            luaL_error(L, "require: cannot read %s: %s", rel, read_error_text(err_no));
        lua_pop(L, 1);
    }
    luaL_error(L, "require: module '%s' not found in the bundle (tried lib/%s.lua, %s.lua)", name,
               path, path);
}

/* require(name): bundle modules only, compiled as text in the sandbox
 * environment and cached per instance; "cjson" is pre-seeded in the cache.
 * Upvalues: 1 the bundle folder, 2 the cache table. */
static int sandbox_require(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    int cache = lua_upvalueindex(2);
    lua_settop(L, 1);
    if (!module_name_ok(name, len))
        return luaL_error(L,
                          "require: invalid module name '%s' "
                          "(dot-separated letters, digits and '_')",
                          name);
    lua_pushvalue(L, 1);
    if (lua_rawget(L, cache) != LUA_TNIL) {
        if (lua_touserdata(L, -1) == &loading_mark)
            return luaL_error(L, "require: module '%s' requires itself while loading", name);
        return 1;
    }
    lua_pop(L, 1);
    find_module(L, lua_tostring(L, lua_upvalueindex(1)), name);
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, (void *)&loading_mark);
    lua_rawset(L, cache);
    /* Stack: name, chunk, rel. The chunk gets (name, rel) like Lua's own
     * require; a failed load is forgotten so that it can be retried. */
    lua_pushvalue(L, 1);
    lua_insert(L, -2);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        lua_pushvalue(L, 1);
        lua_pushnil(L);
        lua_rawset(L, cache);
        return lua_error(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
    return 1;
}

static int json_out_of_memory(lua_State *L, const struct wisp_sandbox_lua_hooks *hooks)
{
    hooks->mem_exceeded(L);
    return luaL_error(L, "not enough memory");
}

/* Upvalues: 1 the real cjson.encode, 2 the hooks. */
static int guarded_encode(lua_State *L)
{
    const struct wisp_sandbox_lua_hooks *hooks = lua_touserdata(L, lua_upvalueindex(2));
    size_t room = hooks->mem_room(L);
    if (wisp_sandbox_lua_json_min_size(L, 1, room) > room)
        return json_out_of_memory(L, hooks);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* Upvalues: 1 the real cjson.decode, 2 the hooks. What decode builds is a
 * small multiple of its input, which is already in the heap; with the
 * collector stopped no finalizer, hence no Lua code, runs meanwhile. */
static int guarded_decode(lua_State *L)
{
    const struct wisp_sandbox_lua_hooks *hooks = lua_touserdata(L, lua_upvalueindex(2));
    int gc_was_running = lua_gc(L, LUA_GCISRUNNING);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_gc(L, LUA_GCSTOP);
    hooks->mem_lift(L, 1);
    int st = lua_pcall(L, lua_gettop(L) - 1, 1, 0);
    hooks->mem_lift(L, 0);
    if (gc_was_running)
        lua_gc(L, LUA_GCRESTART);
    if (st != LUA_OK)
        return lua_error(L);
    if (hooks->mem_room(L) == 0) {
        lua_pop(L, 1);
        return json_out_of_memory(L, hooks);
    }
    wisp_json_integers(L, -1);
    return 1;
}

void wisp_sandbox_lua_push_json_fn(lua_State *L, int mod, const char *name,
                                   const struct wisp_sandbox_lua_hooks *hooks)
{
    bool encode = strcmp(name, "encode") == 0;
    lua_getfield(L, mod, name);
    lua_pushlightuserdata(L, (void *)hooks);
    lua_pushcclosure(L, encode ? guarded_encode : guarded_decode, 2);
}

/* Builds env.require with a cache that already holds the restricted cjson. */
static void add_require(lua_State *L, int env, const char *dir,
                        const struct wisp_sandbox_lua_hooks *hooks)
{
    lua_pushstring(L, dir);
    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, luaopen_cjson);
    lua_call(L, 0, 1);
    int mod = lua_gettop(L);
    lua_createtable(L, 0, 12);
    copy_names(L, mod, cjson_names, "cjson");
    wisp_sandbox_lua_push_json_fn(L, mod, "encode", hooks);
    lua_setfield(L, -2, "encode");
    wisp_sandbox_lua_push_json_fn(L, mod, "decode", hooks);
    lua_setfield(L, -2, "decode");
    lua_setfield(L, -3, "cjson");
    lua_pop(L, 1);
    lua_pushcclosure(L, sandbox_require, 2);
    lua_setfield(L, env, "require");
}

/* Points every string's methods at the sandbox's string copy and sets
 * __metatable, so getmetatable("") neither reveals nor lets handlers edit the
 * real metatable. */
static void lock_string_metatable(lua_State *L, int env)
{
    lua_pushliteral(L, "");
    if (!lua_getmetatable(L, -1))
        luaL_error(L, "sandbox: strings have no metatable");
    lua_getfield(L, env, "string");
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
}

void wisp_sandbox_lua_open(lua_State *L, const char *dir,
                           const struct wisp_sandbox_lua_hooks *hooks)
{
    int top = lua_gettop(L);
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    int g = lua_gettop(L);
    lua_createtable(L, 0, 40);
    int env = lua_gettop(L);
    copy_names(L, g, base_names, "_G");
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_pushcfunction(L, hooks->print);
    lua_setfield(L, env, "print");
    lua_getfield(L, g, "load");
    lua_pushcclosure(L, sandbox_load, 1);
    lua_setfield(L, env, "load");
    lua_getfield(L, g, "setmetatable");
    lua_pushcclosure(L, sandbox_setmetatable, 1);
    lua_setfield(L, env, "setmetatable");
    lua_getfield(L, g, "collectgarbage");
    lua_pushcclosure(L, sandbox_collectgarbage, 1);
    lua_setfield(L, env, "collectgarbage");
    add_library(L, env, LUA_STRLIBNAME, luaopen_string, string_names);
    add_library(L, env, LUA_TABLIBNAME, luaopen_table, table_names);
    add_library(L, env, LUA_MATHLIBNAME, luaopen_math, math_names);
    add_library(L, env, LUA_UTF8LIBNAME, luaopen_utf8, utf8_names);
    add_library(L, env, LUA_COLIBNAME, luaopen_coroutine, coroutine_names);
    add_library(L, env, LUA_OSLIBNAME, luaopen_os, os_names);
    add_require(L, env, dir, hooks);
    lock_string_metatable(L, env);
    lua_pushvalue(L, env);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &env_key);
    lua_settop(L, top);
}

void wisp_sandbox_lua_push_env(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &env_key);
}

int wisp_sandbox_lua_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
            lua_pushvalue(L, 1);
            if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING)
                msg = lua_tostring(L, -1);
        }
        if (!msg)
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static size_t json_size(lua_State *L, int idx, size_t limit, int depth)
{
    size_t total = 2;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        return lua_rawlen(L, idx) + 2;
    case LUA_TTABLE:
        break;
    default:
        return 1;
    }
    if (depth >= JSON_MAX_DEPTH || !lua_checkstack(L, 3))
        return total;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (total <= limit && lua_next(L, idx)) {
        /* A separator, and for object members the quoted key and ':'. */
        total += 1 + (lua_type(L, -2) == LUA_TSTRING ? lua_rawlen(L, -2) + 3 : 0);
        total += json_size(L, -1, limit > total ? limit - total : 0, depth + 1);
        lua_pop(L, 1);
    }
    /* Leaving early leaves the last key on the stack. */
    if (total > limit)
        lua_pop(L, 1);
    return total;
}

size_t wisp_sandbox_lua_json_min_size(lua_State *L, int idx, size_t limit)
{
    return json_size(L, idx, limit, 0);
}

/* ---- values that leave the sandbox ------------------------------------- */

/* A topic name that may be published to (MQTT 4.7), checked here so the
 * engine does not depend on the topic module. NULL when valid. */
static const char *topic_problem(const char *t, size_t len)
{
    if (len == 0)
        return "empty";
    if (len > 65535)
        return "longer than 65535 bytes";
    if (memchr(t, '+', len) || memchr(t, '#', len))
        return "contains a wildcard ('+' or '#')";
    if (!wisp_utf8_valid(t, len))
        return "not valid UTF-8 or contains NUL";
    return NULL;
}

const char *wisp_sandbox_lua_check_topic(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "publish: topic must be a string (got %s)", luaL_typename(L, idx));
    const char *topic = lua_tolstring(L, idx, len);
    const char *why = topic_problem(topic, *len);
    if (why)
        luaL_error(L, "publish: invalid topic: %s", why);
    return topic;
}

void wisp_sandbox_lua_publish_opts(lua_State *L, int idx, int *qos, int *retain)
{
    *qos = 0;
    *retain = 0;
    if (lua_isnoneornil(L, idx))
        return;
    if (!lua_istable(L, idx))
        luaL_error(L, "publish: opts must be a table (got %s)", luaL_typename(L, idx));
    if (lua_getfield(L, idx, "qos") != LUA_TNIL) {
        int isint = 0;
        lua_Integer q = lua_tointegerx(L, -1, &isint);
        if (lua_type(L, -1) != LUA_TNUMBER || !isint || q < 0 || q > 2)
            luaL_error(L, "publish: opts.qos must be 0, 1 or 2");
        *qos = (int)q;
    }
    if (lua_getfield(L, idx, "retain") != LUA_TNIL) {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "publish: opts.retain must be a boolean (got %s)", luaL_typename(L, -1));
        *retain = lua_toboolean(L, -1);
    }
    lua_pop(L, 2);
}

void wisp_sandbox_lua_push_json_scalar(lua_State *L, int idx)
{
    char buf[64];
    int n;
    if (lua_type(L, idx) == LUA_TBOOLEAN) {
        lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
        return;
    }
    if (lua_isinteger(L, idx)) {
        n = snprintf(buf, sizeof(buf), "%lld", (long long)lua_tointeger(L, idx));
    } else {
        double d = (double)lua_tonumber(L, idx);
        if (!isfinite(d))
            luaL_error(L, "publish: cannot encode NaN or infinity as JSON");
        n = snprintf(buf, sizeof(buf), "%.15g", d);
        if (n > 0 && strtod(buf, NULL) != d)
            n = snprintf(buf, sizeof(buf), "%.17g", d);
    }
    if (n <= 0 || (size_t)n >= sizeof(buf))
        luaL_error(L, "publish: cannot format number");
    lua_pushlstring(L, buf, (size_t)n);
}

void wisp_sandbox_lua_push_joined(lua_State *L, int first)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = first; i <= n; i++) {
        if (i > first)
            luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
}
