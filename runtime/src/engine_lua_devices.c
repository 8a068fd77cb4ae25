/*
 * ctx.sensor and ctx.gpio for Lua handlers (devcall.h: the supervisor reads
 * the sensor or drives the line and answers).
 *   local r, err = ctx.sensor("cpu-temp")   -- {value=, unit=, time=} or nil, message
 *   local v, err = ctx.gpio("gpiochip0", 17)     -- read: 0 or 1, or nil, message
 *   ctx.gpio("gpiochip0", 18, 1)                 -- drive a line from "gpio.outputs"
 * A read error or an unknown sensor is an error value (nil, message); a
 * line the function may not use and bad arguments raise an error.
 */
#include <errno.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "devcall.h"
#include "engine_lua_internal.h"

static int ctx_sensor(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    struct wisp_devcall_reading r;
    char err[600];
    int rc = wisp_devcall_sensor(wisp_lua_current_state(L), name, &r, err, sizeof(err));
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "sensor: %s", err);
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, r.value);
    lua_setfield(L, -2, "value");
    lua_pushstring(L, r.unit);
    lua_setfield(L, -2, "unit");
    lua_pushnumber(L, (lua_Number)r.time_ns / 1e9);
    lua_setfield(L, -2, "time");
    return 1;
}

static int ctx_gpio(lua_State *L)
{
    const char *chip = luaL_checkstring(L, 1);
    lua_Integer line = luaL_checkinteger(L, 2);
    int value = -1;
    if (line < 0 || line > UINT32_MAX)
        return luaL_error(L, "gpio: line must be 0 or more, got %d", (int)line);
    if (!lua_isnoneornil(L, 3)) {
        if (lua_isboolean(L, 3))
            value = lua_toboolean(L, 3);
        else {
            lua_Integer v = luaL_checkinteger(L, 3);
            if (v != 0 && v != 1)
                return luaL_error(L, "gpio: value must be 0, 1, true or false");
            value = (int)v;
        }
    }
    char err[600];
    int out = 0;
    int rc = wisp_devcall_gpio(wisp_lua_current_state(L), chip, (uint32_t)line, value, &out, err,
                               sizeof(err));
    if (rc == -EPERM || rc == -EINVAL)
        return luaL_error(L, "gpio: %s", err);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "gpio: %s", err);
        return 2;
    }
    lua_pushinteger(L, out);
    return 1;
}

void wisp_lua_push_device_api(lua_State *L)
{
    lua_pushcfunction(L, ctx_sensor);
    lua_setfield(L, -2, "sensor");
    lua_pushcfunction(L, ctx_gpio);
    lua_setfield(L, -2, "gpio");
}
