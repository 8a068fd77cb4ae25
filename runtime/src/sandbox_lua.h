/*
 * The Lua sandbox: the environment handler code runs in, built fresh from a
 * whitelist in each lua_State, plus the only ways code gets into that state
 * (text chunks from the bundle, require from the bundle, load of text).
 *
 * What handlers see: assert error ipairs next pairs pcall xpcall rawequal
 * rawget rawlen rawset select tonumber tostring type getmetatable _VERSION
 * _G (the sandbox itself); setmetatable (refusing __gc: finalizers run with
 * hooks off, out of reach of the time limit); print (given by the engine);
 * load (text only, sandbox env by default); require (bundle modules and
 * "cjson"); collectgarbage ("count", "collect", "step"); copies of string
 * (no dump), table, math, utf8, coroutine (no close); os.time/clock/date/
 * difftime. The shared string metatable is locked and indexes the sandbox's
 * string copy, so handlers reach neither string.dump nor the real library.
 *
 * Nothing here sets limits: the engine owns the allocator and the hook.
 */
#ifndef WISP_SANDBOX_LUA_H
#define WISP_SANDBOX_LUA_H

#include <stddef.h>

#include <lua.h>

/* Largest source file require or the engine will read. */
#define WISP_SANDBOX_MAX_SOURCE ((size_t)4 * 1024 * 1024)

/* What the engine plugs into the sandbox: print, and its heap limit as far
 * as the cjson guards need it (cjson works in C memory the Lua allocator
 * never sees). Each function gets the calling state. The struct must
 * outlive the state. */
struct wisp_sandbox_lua_hooks {
    lua_CFunction print;                        /* replaces print */
    size_t (*mem_room)(lua_State *L);           /* bytes the heap may still grow by */
    void (*mem_lift)(lua_State *L, int lifted); /* lifts the cap (1), restores it (0) */
    void (*mem_exceeded)(lua_State *L);         /* the limit was hit, even if caught */
};

/* Opens the standard libraries the sandbox copies from (not io, debug or
 * package), builds the sandbox environment and locks the string metatable.
 * `dir` is the bundle folder (copied into the state); `hooks` is borrowed.
 * Must run inside a protected call (it raises on errors, e.g. memory), on a
 * state no user code has run in yet. Leaves the stack as it found it. */
void wisp_sandbox_lua_open(lua_State *L, const char *dir,
                           const struct wisp_sandbox_lua_hooks *hooks);

/* Pushes cjson's `name` ("encode" or "decode") from the module at index
 * `mod`, wrapped to keep within the heap limit: encode refuses up front a
 * value whose JSON cannot fit the heap (cjson would build it in C memory
 * first); decode runs with the cap lifted and the collector stopped and
 * checks the cap afterwards, because cjson leaks its C buffer when a Lua
 * allocation fails halfway. Both raise "not enough memory" and report
 * mem_exceeded when the limit is hit. Must run inside a protected call. */
void wisp_sandbox_lua_push_json_fn(lua_State *L, int mod, const char *name,
                                   const struct wisp_sandbox_lua_hooks *hooks);

/* Pushes the sandbox environment table (nil before wisp_sandbox_lua_open).
 * Raises nothing. */
void wisp_sandbox_lua_push_env(lua_State *L);

/* Reads <dir>/<rel> (both borrowed) and compiles it as a text chunk named
 * "@<rel>" whose _ENV is the sandbox environment. Returns LUA_OK with the
 * function pushed, or an error status with a message pushed: LUA_ERRFILE
 * when the file cannot be read ("<rel>: cannot read: <reason>", and the
 * errno in *sys_errno when that is not NULL), LUA_ERRSYNTAX with file:line,
 * or LUA_ERRMEM. May raise a memory error while building the message, so
 * call it inside a protected call. */
int wisp_sandbox_lua_loadfile(lua_State *L, const char *dir, const char *rel, int *sys_errno);

/* A message handler for lua_pcall: turns the error object into a string
 * (a __tostring metamethod runs protected, as Lua code under the engine's
 * hook) and appends a traceback. */
int wisp_sandbox_lua_traceback(lua_State *L);

/* A lower bound of the size of the JSON text cjson.encode would produce for
 * the value at idx, walking tables without calling any metamethod. Stops as
 * soon as the bound passes `limit` (so the walk costs O(limit) even for
 * tables shared many times over), and does not descend past cjson's default
 * nesting limit, where cjson itself fails. Raises nothing. */
size_t wisp_sandbox_lua_json_min_size(lua_State *L, int idx, size_t limit);

/* ---- values that leave the sandbox (ctx.publish, logs) ----
 * Each raises a "publish: ..." error with the reason on bad input. */

/* Checks that the value at idx is a topic name one may publish to (1..65535
 * bytes of UTF-8, no NUL, no '+' or '#'). Returns it, borrowed from the stack,
 * with its length in *len. */
const char *wisp_sandbox_lua_check_topic(lua_State *L, int idx, size_t *len);

/* Reads publish options at idx: nil, or a table with qos (0, 1 or 2;
 * default 0) and retain (a boolean; default false). */
void wisp_sandbox_lua_publish_opts(lua_State *L, int idx, int *qos, int *retain);

/* Pushes the JSON text of the number or boolean at idx: integers exactly,
 * floats with the fewest digits that read back to the same double. NaN and
 * infinities have no JSON text and raise. */
void wisp_sandbox_lua_push_json_scalar(lua_State *L, int idx);

/* Pushes the values from index `first` to the top, converted like tostring
 * (__tostring and __name included) and joined with single spaces. */
void wisp_sandbox_lua_push_joined(lua_State *L, int first);

#endif
