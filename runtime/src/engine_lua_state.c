/*
 * ctx.state for Lua handlers: get, put, del, incr, keys. Values are stored
 * as JSON (state.h): strings, numbers, booleans and tables go in, the same
 * come out; nil is "absent". Every call raises a "state: ..." error with
 * the reason when it cannot do what it was asked.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "engine_lua_internal.h"
#include "sandbox_lua.h"
#include "state.h"

static struct wisp_state *need_state(lua_State *L)
{
    struct wisp_state *st = wisp_lua_current_state(L);
    if (!st)
        luaL_error(L, "state: only available while handling an event");
    return st;
}

static const char *check_key(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "state: key must be a string (got %s)", luaL_typename(L, idx));
    const char *k = lua_tolstring(L, idx, len);
    if (*len == 0 || *len > WISP_STATE_MAX_KEY)
        luaL_error(L, "state: key must be 1 to %d bytes (got %d)", (int)WISP_STATE_MAX_KEY,
                   (int)*len);
    return k;
}

/* Raises the error for a failed state call. */
static int state_error(lua_State *L, struct wisp_state *st, const char *what, int rc)
{
    switch (rc) {
    case -E2BIG:
        return luaL_error(L, "state: %s: more than %d keys touched in one invocation", what,
                          (int)WISP_STATE_MAX_KEYS);
    case -EFBIG:
        return luaL_error(L, "state: %s: value larger than %d bytes as JSON", what,
                          (int)WISP_STATE_MAX_VALUE);
    case -ENOMEM:
        return luaL_error(L, "state: %s: out of memory", what);
    default:
        return luaL_error(L, "state: %s: %s", what, st->err ? st->err : strerror(-rc));
    }
}

/* Pushes the stored value of key (nil when absent). */
static void push_value(lua_State *L, struct wisp_state *st, const char *key, size_t klen)
{
    const char *v;
    size_t vlen;
    int rc = wisp_state_get(st, key, klen, &v, &vlen);
    if (rc == -ENOENT) {
        lua_pushnil(L);
        return;
    }
    if (rc != 0)
        state_error(L, st, "get", rc);
    wisp_lua_push_decode(L);
    lua_pushlstring(L, v, vlen);
    int s = lua_pcall(L, 1, 1, 0);
    if (s == LUA_ERRMEM || wisp_lua_oom(L))
        lua_error(L);
    if (s != LUA_OK)
        luaL_error(L, "state: get: stored value is not valid JSON: %s", lua_tostring(L, -1));
}

/* ctx.state.get(key) -> value or nil */
static int l_get(lua_State *L)
{
    struct wisp_state *st = need_state(L);
    size_t klen;
    const char *key = check_key(L, 1, &klen);
    push_value(L, st, key, klen);
    return 1;
}

/* Pushes the JSON text of the value at idx. */
static void push_json(lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
    case LUA_TBOOLEAN:
        if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx)) {
            lua_Number n = lua_tonumber(L, idx);
            if (n != n || n - n != 0) /* NaN or infinite */
                luaL_error(L, "state: put: NaN and infinities cannot be stored");
        }
        wisp_sandbox_lua_push_json_scalar(L, idx);
        return;
    case LUA_TSTRING:
    case LUA_TTABLE:
        if (wisp_sandbox_lua_json_min_size(L, idx, WISP_STATE_MAX_VALUE) > WISP_STATE_MAX_VALUE)
            luaL_error(L, "state: put: value larger than %d bytes as JSON",
                       (int)WISP_STATE_MAX_VALUE);
        wisp_lua_push_encode(L);
        lua_pushvalue(L, idx);
        int s = lua_pcall(L, 1, 1, 0);
        if (s == LUA_ERRMEM || wisp_lua_oom(L))
            lua_error(L);
        if (s != LUA_OK)
            luaL_error(L, "state: put: cannot encode value as JSON: %s", lua_tostring(L, -1));
        return;
    default:
        luaL_error(L, "state: put: value must be a table, string, number, boolean or nil (got %s)",
                   luaL_typename(L, idx));
    }
}

static void do_put(lua_State *L, struct wisp_state *st, const char *key, size_t klen, int idx)
{
    int rc;
    if (lua_isnil(L, idx)) {
        rc = wisp_state_put(st, key, klen, NULL, 0);
    } else {
        size_t vlen;
        push_json(L, idx);
        const char *v = lua_tolstring(L, -1, &vlen);
        rc = wisp_state_put(st, key, klen, v, vlen);
        lua_pop(L, 1);
    }
    if (rc != 0)
        state_error(L, st, "put", rc);
}

/* ctx.state.put(key, value): value nil deletes. */
static int l_put(lua_State *L)
{
    struct wisp_state *st = need_state(L);
    size_t klen;
    const char *key = check_key(L, 1, &klen);
    lua_settop(L, 2);
    do_put(L, st, key, klen, 2);
    return 0;
}

/* ctx.state.del(key) */
static int l_del(lua_State *L)
{
    struct wisp_state *st = need_state(L);
    size_t klen;
    const char *key = check_key(L, 1, &klen);
    int rc = wisp_state_put(st, key, klen, NULL, 0);
    if (rc != 0)
        state_error(L, st, "del", rc);
    return 0;
}

/* ctx.state.incr(key[, by]) -> the new value. The key must be absent
 * (counts from 0) or hold a number; by defaults to 1. Integers stay
 * integers. The read is validated at commit: concurrent increments are
 * never lost (one of them runs again). */
static int l_incr(lua_State *L)
{
    struct wisp_state *st = need_state(L);
    size_t klen;
    const char *key = check_key(L, 1, &klen);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushinteger(L, 1);
    } else if (lua_type(L, 2) != LUA_TNUMBER) {
        return luaL_error(L, "state: incr: amount must be a number (got %s)", luaL_typename(L, 2));
    }
    lua_settop(L, 2);
    push_value(L, st, key, klen);
    if (lua_isnil(L, 3)) {
        lua_pop(L, 1);
        lua_pushinteger(L, 0);
    } else if (lua_type(L, 3) != LUA_TNUMBER) {
        return luaL_error(L, "state: incr: %s holds a %s, not a number", key, luaL_typename(L, 3));
    }
    lua_arith(L, LUA_OPADD); /* stored + by, integer when both are */
    do_put(L, st, key, klen, 2);
    return 1;
}

static int add_key(void *ud, const char *key, size_t klen)
{
    lua_State *L = ud;
    lua_pushlstring(L, key, klen);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* ctx.state.keys([prefix[, limit]]) -> sorted array of keys */
static int l_keys(lua_State *L)
{
    struct wisp_state *st = need_state(L);
    size_t plen = 0;
    const char *prefix = "";
    if (!lua_isnoneornil(L, 1)) {
        if (lua_type(L, 1) != LUA_TSTRING)
            return luaL_error(L, "state: keys: prefix must be a string (got %s)",
                              luaL_typename(L, 1));
        prefix = lua_tolstring(L, 1, &plen);
        if (plen > WISP_STATE_MAX_KEY)
            return luaL_error(L, "state: keys: prefix longer than %d bytes",
                              (int)WISP_STATE_MAX_KEY);
    }
    lua_Integer limit = luaL_optinteger(L, 2, WISP_STATE_MAX_LISTING);
    if (limit < 1 || limit > (lua_Integer)WISP_STATE_MAX_LISTING)
        return luaL_error(L, "state: keys: limit must be 1 to %d", (int)WISP_STATE_MAX_LISTING);
    lua_newtable(L);
    int rc = wisp_state_keys(st, prefix, plen, (size_t)limit, add_key, L);
    if (rc != 0)
        state_error(L, st, "keys", rc);
    return 1;
}

void wisp_lua_push_state_api(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"get", l_get},   {"put", l_put},   {"del", l_del},
        {"incr", l_incr}, {"keys", l_keys}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
}
