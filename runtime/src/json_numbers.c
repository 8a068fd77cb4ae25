/*
 * lua-cjson decodes every JSON number as a float, so {"n": 20} reads as
 * 20.0 in Lua 5.4 and "room " .. n prints "room 20.0". JSON has one number
 * type; users expect whole numbers to be integers, as they are in the
 * JSON text. This pass turns every float with an integral value that a
 * double represents exactly (|x| <= 2^53) into an integer, in place.
 */
#include "json_numbers.h"

#include <lauxlib.h>
#include <math.h>

#define EXACT_LIMIT 9007199254740992.0 /* 2^53 */

static bool integral(lua_State *L, int idx, lua_Integer *out)
{
    if (lua_type(L, idx) != LUA_TNUMBER || lua_isinteger(L, idx))
        return false;
    lua_Number v = lua_tonumber(L, idx);
    if (!(fabs(v) <= EXACT_LIMIT) || floor(v) != v)
        return false;
    *out = (lua_Integer)v;
    return true;
}

/* Depth is bounded by cjson's own nesting limit (1000); each level costs a
 * few Lua stack slots, checked before use. Assigning to a field that already
 * exists during lua_next is allowed and allocates nothing. */
static void fix_table(lua_State *L, int t, int depth)
{
    if (depth > 1000 || !lua_checkstack(L, 4))
        return;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_Integer iv;
        if (integral(L, -1, &iv)) {
            lua_pushvalue(L, -2);
            lua_pushinteger(L, iv);
            lua_rawset(L, t);
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            fix_table(L, lua_gettop(L), depth + 1);
        }
        lua_pop(L, 1);
    }
}

void wisp_json_integers(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_Integer iv;
    if (integral(L, idx, &iv)) {
        lua_pushinteger(L, iv);
        lua_replace(L, idx);
    } else if (lua_type(L, idx) == LUA_TTABLE) {
        fix_table(L, idx, 0);
    }
}
