/* What engine_lua.c shares with the parts of ctx kept in their own files
 * (engine_lua_state.c, engine_lua_devices.c). Not a public API. */
#ifndef WISP_ENGINE_LUA_INTERNAL_H
#define WISP_ENGINE_LUA_INTERNAL_H

#include <stdbool.h>

#include <lua.h>

struct wisp_state;

/* The running invocation's state buffer, or NULL outside an invocation or
 * without a store. */
struct wisp_state *wisp_lua_current_state(lua_State *L);
/* Push the engine's own guarded cjson encode / decode (sandbox_lua.h). */
void wisp_lua_push_encode(lua_State *L);
void wisp_lua_push_decode(lua_State *L);
/* True once the invocation hit its memory limit (even if caught). */
bool wisp_lua_oom(lua_State *L);

/* Pushes the ctx.state table. */
void wisp_lua_push_state_api(lua_State *L);
/* Sets ctx.sensor and ctx.gpio in the table on top of the stack. */
void wisp_lua_push_device_api(lua_State *L);

#endif
