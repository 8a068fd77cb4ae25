/*
 * The Lua engine: one lua_State per function instance, so each instance has
 * its own heap (and memory cap) and its own globals, which persist across the
 * invocations of that instance like a warm Lambda container.
 *
 * Limits. Memory: a counting allocator refuses growth past limits.memory_kb,
 * which Lua turns into LUA_ERRMEM after an emergency collection. Time: a
 * count hook compares the monotonic clock with the deadline every HOOK_COUNT
 * instructions. Neither can stop time spent inside one C function (a
 * backtracking string.find): the supervisor's kill covers that, so nothing
 * here may block signals. cjson works in C memory the allocator never sees,
 * so its encode and decode are guarded (sandbox_lua.c) with the hooks below.
 *
 * Every call from C into Lua is protected: create and invoke run their work
 * as C functions under lua_pcall, and outside those the engine only reads
 * values off the stack, which cannot raise.
 */
#define WISP_LOG_MODULE "lua"

#include "engine.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lua-cjson.h>

#include "engine_lua_internal.h"
#include "log.h"
#include "sandbox_lua.h"
#include "util.h"

/* Instructions between two clock checks: a clock read costs ~20 ns, a
 * thousand instructions a few microseconds, so the check stays below 1%. */
enum { HOOK_COUNT = 1000 };
/* Bytes of one log message that reach the log line after quoting. */
enum { LOG_QUOTED_MAX = 4096 };
/* Bytes of res->error kept: the message and the traceback's 22 levels fit. */
enum { ERROR_MAX = 16384 };

struct lua_inst {
    lua_State *L;
    const struct wisp_fnspec *spec; /* borrowed, outlives the instance */
    size_t used;                    /* bytes the allocator handed out */
    size_t cap;                     /* SIZE_MAX during setup */
    size_t peak;                    /* of used, since the last reset */
    /* A refused growth not yet resolved. Lua retries a refused allocation
     * once after an emergency collection; when anything but that retry
     * follows, the refusal reached the program as a memory error (which it
     * may have swallowed with pcall), so the limit was really hit. */
    size_t refused_osize, refused_nsize;
    bool refused;
    bool oom; /* the memory limit was hit in this invocation */
    bool timed_out;
    uint64_t deadline_ns;        /* 0 (already expired) outside create and invoke */
    int load_errno;              /* why the handler file could not be read */
    struct wisp_result *res;     /* during invoke only */
    const struct wisp_event *ev; /* during invoke only */
    size_t log_bytes;
    bool log_truncated;
    int call_status; /* of the handler call inside invoke_body */
};

/* Registry keys (their addresses are the keys). */
static const char handler_key = 'h';
static const char ctx_key = 'c';
static const char encode_key = 'E';
static const char decode_key = 'D';

static struct lua_inst *inst_of(lua_State *L)
{
    return *(struct lua_inst **)lua_getextraspace(L);
}

/* The message on top of the stack, if it is a string (reading it then
 * cannot allocate, so this is safe outside a protected call). */
static const char *top_message(lua_State *L)
{
    return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
}

/* The counting allocator. When ptr is NULL, osize is a type tag, not a size.
 * Shrinking is never refused: Lua assumes it cannot fail. */
static void *inst_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct lua_inst *in = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        in->used -= old;
        return NULL;
    }
    if (nsize > old && (nsize > in->cap || in->used - old > in->cap - nsize)) {
        in->oom = in->oom || in->refused;
        in->refused = true;
        in->refused_osize = old;
        in->refused_nsize = nsize;
        return NULL;
    }
    void *np = realloc(ptr, nsize);
    if (!np)
        return nsize <= old ? ptr : NULL;
    in->used = in->used - old + nsize;
    if (nsize > old && in->refused) {
        in->oom = in->oom || in->refused_osize != old || in->refused_nsize != nsize;
        in->refused = false;
    }
    if (in->used > in->peak)
        in->peak = in->used;
    return np;
}

/* Was the memory limit hit? A refusal still pending at the end was never
 * retried, so it reached the program as an error. */
static bool limit_hit(const struct lua_inst *in)
{
    return in->oom || in->refused;
}

/* Once the deadline passes, the hook re-arms itself to fire on every
 * instruction, so a handler that pcall's around the error meets it again at
 * once instead of getting another HOOK_COUNT instructions per attempt. */
static void time_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    struct lua_inst *in = inst_of(L);
    if (!in->timed_out && wisp_mono_ns() < in->deadline_ns)
        return;
    in->timed_out = true;
    lua_sethook(L, time_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "timeout: handler exceeded limits.timeout_ms (%d ms)", (int)in->spec->timeout_ms);
}

static void arm_deadline(struct lua_inst *in, uint64_t start_ns)
{
    in->deadline_ns = start_ns + (uint64_t)in->spec->timeout_ms * 1000000u;
    in->timed_out = false;
    in->oom = false;
    in->refused = false;
    lua_sethook(in->L, time_hook, LUA_MASKCOUNT, HOOK_COUNT);
}

static int on_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    log_error("unprotected Lua error: %s", msg ? msg : "(not a string)");
    return 0;
}

/* ---- logging from handlers ---------------------------------------------- */

static void emit_log(struct lua_inst *in, int level, const char *msg, size_t len)
{
    const char *id = in->ev && in->ev->id ? in->ev->id : "-";
    char quoted[LOG_QUOTED_MAX];
    if (in->log_truncated)
        return;
    if (len > (size_t)WISP_MAX_LOG_BYTES_PER_INVOCATION - in->log_bytes) {
        in->log_truncated = true;
        if (WISP_LOG_WARN >= wisp_log_threshold)
            wisp_log_emit_fields(WISP_LOG_WARN, "fn", "fn=%s id=%s msg=%s", in->spec->name, id,
                                 "\"log output truncated\"");
        return;
    }
    in->log_bytes += len;
    wisp_log_quote(quoted, sizeof(quoted), msg, len);
    wisp_log_emit_fields(level, "fn", "fn=%s id=%s msg=%s", in->spec->name, id, quoted);
}

/* Logs the arguments, tostring'ed and joined with spaces, at `level`. */
static int log_args(lua_State *L, int level)
{
    struct lua_inst *in = inst_of(L);
    size_t len;
    if (level < wisp_log_threshold || in->log_truncated)
        return 0;
    wisp_sandbox_lua_push_joined(L, 1);
    const char *msg = lua_tolstring(L, -1, &len);
    emit_log(in, level, msg, len);
    return 0;
}

static int sandbox_print(lua_State *L)
{
    return log_args(L, WISP_LOG_INFO);
}

static int ctx_log(lua_State *L)
{
    return log_args(L, (int)lua_tointeger(L, lua_upvalueindex(1)));
}

/* ---- the heap limit, for the cjson guards ---------------------------------- */

static size_t mem_room(lua_State *L)
{
    const struct lua_inst *in = inst_of(L);
    return in->cap > in->used ? in->cap - in->used : 0;
}

static void mem_lift(lua_State *L, int lifted)
{
    struct lua_inst *in = inst_of(L);
    in->cap = lifted ? SIZE_MAX : (size_t)in->spec->memory_kb * 1024u;
}

static void mem_exceeded(lua_State *L)
{
    inst_of(L)->oom = true;
}

static const struct wisp_sandbox_lua_hooks sandbox_hooks = {
    .print = sandbox_print,
    .mem_room = mem_room,
    .mem_lift = mem_lift,
    .mem_exceeded = mem_exceeded,
};

/* ---- ctx.publish -------------------------------------------------------- */

static int publish_bytes_error(lua_State *L)
{
    return luaL_error(L, "publish: more than %d bytes (topics and payloads) in one invocation",
                      (int)WISP_MAX_PUBLISH_BYTES);
}

/* Pushes the payload bytes for the value at idx: tables as JSON, strings as
 * they are, numbers and booleans as their JSON text. */
static const char *push_payload(lua_State *L, struct lua_inst *in, int idx, size_t *len)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        lua_pushvalue(L, idx);
        break;
    case LUA_TBOOLEAN:
    case LUA_TNUMBER:
        wisp_sandbox_lua_push_json_scalar(L, idx);
        break;
    case LUA_TTABLE: {
        /* The guarded encode checks the heap; this checks the publish cap
         * before cjson builds anything in C memory. */
        size_t pub_room = (size_t)WISP_MAX_PUBLISH_BYTES - in->res->pub_bytes;
        if (wisp_sandbox_lua_json_min_size(L, idx, pub_room) > pub_room)
            publish_bytes_error(L);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &encode_key);
        lua_pushvalue(L, idx);
        int st = lua_pcall(L, 1, 1, 0);
        if (st == LUA_ERRMEM)
            lua_error(L);
        if (st != LUA_OK)
            luaL_error(L, "publish: cannot encode value as JSON: %s", lua_tostring(L, -1));
        break;
    }
    default:
        luaL_error(L, "publish: value must be a table, string, number or boolean (got %s)",
                   luaL_typename(L, idx));
    }
    return lua_tolstring(L, -1, len);
}

/* ctx.publish(topic, value[, opts]): buffers a message in the result; it
 * leaves only if the invocation succeeds. */
static int ctx_publish(lua_State *L)
{
    struct lua_inst *in = inst_of(L);
    size_t tlen, plen;
    int qos, retain;
    if (!in->res)
        return luaL_error(L, "publish: only allowed while handling an event");
    const char *topic = wisp_sandbox_lua_check_topic(L, 1, &tlen);
    wisp_sandbox_lua_publish_opts(L, 3, &qos, &retain);
    const char *payload = push_payload(L, in, 2, &plen);
    int rc = wisp_result_add_publish(in->res, topic, payload, plen, qos, retain);
    if (rc == -E2BIG && in->res->n_pubs >= WISP_MAX_PUBLISHES_PER_INVOCATION)
        return luaL_error(L, "publish: more than %d messages in one invocation",
                          (int)WISP_MAX_PUBLISHES_PER_INVOCATION);
    if (rc == -E2BIG)
        return publish_bytes_error(L);
    if (rc < 0)
        return luaL_error(L, "publish: out of memory");
    return 0;
}

/* ---- the rest of ctx ---------------------------------------------------- */

static int ctx_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)wisp_real_ns() / 1e9);
    return 1;
}

static int ctx_remaining_ms(lua_State *L)
{
    struct lua_inst *in = inst_of(L);
    uint64_t now = wisp_mono_ns();
    uint64_t left = in->deadline_ns > now ? (in->deadline_ns - now) / 1000000u : 0;
    lua_pushinteger(L, (lua_Integer)left);
    return 1;
}

static void set_str(lua_State *L, const char *key, const char *value)
{
    if (!value)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

/* Builds ctx once per instance; handlers get the same table every time. */
static void build_ctx(lua_State *L, const struct wisp_fnspec *spec)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    lua_createtable(L, 0, 6);
    lua_pushcfunction(L, ctx_publish);
    lua_setfield(L, -2, "publish");
    lua_pushcfunction(L, ctx_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, ctx_remaining_ms);
    lua_setfield(L, -2, "remaining_ms");
    lua_createtable(L, 0, 4);
    for (int i = 0; i < (int)WISP_ARRAY_LEN(levels); i++) {
        lua_pushinteger(L, WISP_LOG_DEBUG + i);
        lua_pushcclosure(L, ctx_log, 1);
        lua_setfield(L, -2, levels[i]);
    }
    lua_setfield(L, -2, "log");
    lua_createtable(L, 0, (int)spec->n_env);
    for (size_t i = 0; i < spec->n_env; i++)
        set_str(L, spec->env[i].key, spec->env[i].value);
    lua_setfield(L, -2, "env");
    lua_createtable(L, 0, 2);
    set_str(L, "name", spec->name ? spec->name : "");
    set_str(L, "version", spec->version ? spec->version : "");
    lua_setfield(L, -2, "fn");
    wisp_lua_push_state_api(L);
    lua_setfield(L, -2, "state");
    wisp_lua_push_device_api(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);
}

/* ---- for engine_lua_state.c --------------------------------------------- */

struct wisp_state *wisp_lua_current_state(lua_State *L)
{
    const struct lua_inst *in = inst_of(L);
    return in->res && in->ev ? in->ev->state : NULL;
}

void wisp_lua_push_encode(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &encode_key);
}

void wisp_lua_push_decode(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &decode_key);
}

bool wisp_lua_oom(lua_State *L)
{
    return inst_of(L)->oom;
}

/* ---- create ------------------------------------------------------------- */

/* Everything that exists before user code runs; the memory cap is applied
 * only after this, so the fixed cost does not eat into the handler's limit
 * unpredictably. Runs protected. */
static int setup_body(lua_State *L)
{
    struct lua_inst *in = inst_of(L);
    wisp_sandbox_lua_open(L, in->spec->dir, &sandbox_hooks);
    /* The engine's own cjson instance: handlers can change the settings of
     * theirs (e.g. encode_invalid_numbers), never of this one. */
    lua_pushcfunction(L, luaopen_cjson);
    lua_call(L, 0, 1);
    wisp_sandbox_lua_push_json_fn(L, -1, "encode", &sandbox_hooks);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &encode_key);
    wisp_sandbox_lua_push_json_fn(L, -1, "decode", &sandbox_hooks);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &decode_key);
    lua_pop(L, 1);
    build_ctx(L, in->spec);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}

/* Compiles and runs the handler chunk, which must return the handler. */
static int load_body(lua_State *L)
{
    struct lua_inst *in = inst_of(L);
    const char *rel = in->spec->handler;
    if (wisp_sandbox_lua_loadfile(L, in->spec->dir, rel, &in->load_errno) != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    if (!lua_isfunction(L, -1))
        return luaL_error(L, "%s: must return a function (got %s)", rel, luaL_typename(L, -1));
    lua_rawsetp(L, LUA_REGISTRYINDEX, &handler_key);
    return 0;
}

/* Turns a failed load_body into err and a negative errno. */
static int load_error(struct lua_inst *in, int status, char *err, size_t errlen)
{
    const struct wisp_fnspec *spec = in->spec;
    if (in->timed_out)
        return wisp_errf(err, errlen, -ETIMEDOUT,
                         "%s: timeout: loading the handler exceeded limits.timeout_ms (%u ms)",
                         spec->handler, spec->timeout_ms);
    if (limit_hit(in) || status == LUA_ERRMEM)
        return wisp_errf(err, errlen, -ENOMEM,
                         "%s: memory: loading the handler exceeded limits.memory_kb (%u KiB)",
                         spec->handler, spec->memory_kb);
    const char *msg = top_message(in->L);
    const char *tb = msg ? strstr(msg, "\nstack traceback:") : NULL;
    int len = tb ? (int)(tb - msg) : (int)(msg ? strlen(msg) : 0);
    return wisp_errf(err, errlen, in->load_errno ? -in->load_errno : -EINVAL, "%.*s", len,
                     msg ? msg : "unknown error");
}

static void engine_destroy(void *p)
{
    struct lua_inst *in = p;
    if (!in)
        return;
    if (in->L) {
        /* Handler code that runs at close (a pending __close; the sandbox
         * allows no __gc, whose finalizers would run with hooks off) gets
         * no time of its own: the deadline is already past. */
        in->deadline_ns = 0;
        in->res = NULL;
        in->ev = NULL;
        lua_sethook(in->L, time_hook, LUA_MASKCOUNT, HOOK_COUNT);
        lua_close(in->L);
    }
    free(in);
}

static int engine_create(const struct wisp_fnspec *spec, void **out, char *err, size_t errlen)
{
    int rc = 0;
    *out = NULL;
    struct lua_inst *in = calloc(1, sizeof(*in));
    if (!in)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", spec->handler);
    in->spec = spec;
    in->cap = SIZE_MAX;
    in->L = lua_newstate(inst_alloc, in);
    if (!in->L) {
        rc = wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", spec->handler);
        goto fail;
    }
    *(struct lua_inst **)lua_getextraspace(in->L) = in;
    lua_atpanic(in->L, on_panic);
    lua_pushcfunction(in->L, setup_body);
    if (lua_pcall(in->L, 0, 0, 0) != LUA_OK) {
        const char *msg = top_message(in->L);
        rc = wisp_errf(err, errlen, -ENOMEM, "%s: cannot set up the Lua sandbox: %s", spec->handler,
                       msg ? msg : "unknown error");
        goto fail;
    }
    in->cap = (size_t)spec->memory_kb * 1024u;
    in->peak = in->used;
    arm_deadline(in, wisp_mono_ns());
    lua_pushcfunction(in->L, wisp_sandbox_lua_traceback);
    lua_pushcfunction(in->L, load_body);
    int st = lua_pcall(in->L, 0, 0, 1);
    if (st != LUA_OK || in->timed_out || limit_hit(in)) {
        rc = load_error(in, st, err, errlen);
        goto fail;
    }
    lua_settop(in->L, 0);
    in->deadline_ns = 0;
    *out = in;
    return 0;
fail:
    engine_destroy(in);
    return rc;
}

/* ---- invoke ------------------------------------------------------------- */

/* Sets event.data (and datacontenttype) when the payload is UTF-8 JSON.
 * A payload that does not decode is not an error: data stays nil. Running
 * out of memory while decoding is, like anywhere else. */
static void decode_data(lua_State *L, const struct wisp_event *ev)
{
    if (ev->payload_len == 0 || !wisp_utf8_valid(ev->payload, ev->payload_len))
        return;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &decode_key);
    lua_getfield(L, -2, "payload");
    int st = lua_pcall(L, 1, 1, 0);
    if (st == LUA_ERRMEM || inst_of(L)->oom)
        lua_error(L);
    if (st != LUA_OK) {
        lua_pop(L, 1);
        return;
    }
    lua_setfield(L, -2, "data");
    lua_pushliteral(L, "application/json");
    lua_setfield(L, -2, "datacontenttype");
}

/* A fresh event table per invocation: handlers may keep it. */
static void push_event(lua_State *L, const struct wisp_event *ev)
{
    lua_createtable(L, 0, 12);
    set_str(L, "id", ev->id);
    set_str(L, "source", ev->source);
    set_str(L, "type", ev->type);
    set_str(L, "time", ev->time);
    set_str(L, "subject", ev->subject);
    set_str(L, "specversion", "1.0");
    lua_pushlstring(L, ev->payload ? ev->payload : "", ev->payload ? ev->payload_len : 0);
    lua_setfield(L, -2, "payload");
    if (ev->qos >= 0) {
        lua_pushinteger(L, ev->qos);
        lua_setfield(L, -2, "qos");
    }
    lua_pushboolean(L, ev->retain);
    lua_setfield(L, -2, "retain");
    decode_data(L, ev);
}

/* Builds the event and calls handler(event, ctx) with a traceback handler.
 * Returns the handler's error message, if any, as its one result. */
static int invoke_body(lua_State *L)
{
    struct lua_inst *in = inst_of(L);
    lua_pushcfunction(L, wisp_sandbox_lua_traceback);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &handler_key);
    push_event(L, in->ev);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
    in->call_status = lua_pcall(L, 2, 0, 1);
    return in->call_status == LUA_OK ? 0 : 1;
}

/* res->error = head, then the traceback part of the Lua message if any, cut
 * to ERROR_MAX bytes (a handler may raise an error of any size). */
static void set_error(struct wisp_result *res, enum wisp_outcome o, const char *head,
                      const char *luamsg)
{
    const char *tb = luamsg ? strstr(luamsg, "\nstack traceback:") : NULL;
    size_t hl = strnlen(head, ERROR_MAX), tl = tb ? strnlen(tb, ERROR_MAX - hl) : 0;
    char *msg = malloc(hl + tl + 1);
    res->outcome = o;
    free(res->error);
    res->error = msg;
    if (!msg)
        return;
    memcpy(msg, head, hl);
    if (tl)
        memcpy(msg + hl, tb, tl);
    msg[hl + tl] = '\0';
}

/* Fills outcome and error from the instance flags and the Lua status. */
static void classify(struct lua_inst *in, int status, struct wisp_result *res)
{
    const char *luamsg = top_message(in->L);
    char head[160];
    if (in->timed_out) {
        (void)snprintf(head, sizeof(head), "timeout: handler exceeded limits.timeout_ms (%u ms)",
                       in->spec->timeout_ms);
        set_error(res, WISP_OUTCOME_TIMEOUT, head, luamsg);
    } else if (limit_hit(in) || status == LUA_ERRMEM) {
        (void)snprintf(head, sizeof(head), "memory: handler exceeded limits.memory_kb (%u KiB)",
                       in->spec->memory_kb);
        set_error(res, WISP_OUTCOME_MEMORY, head, status == LUA_ERRMEM ? NULL : luamsg);
    } else if (status != LUA_OK) {
        set_error(res, WISP_OUTCOME_ERROR, luamsg ? luamsg : "unknown error", NULL);
    } else {
        res->outcome = WISP_OUTCOME_OK;
    }
}

/* `res` is overwritten: the caller releases any previous contents first. */
static int engine_invoke(void *p, const struct wisp_event *ev, struct wisp_result *res)
{
    struct lua_inst *in = p;
    lua_State *L = in->L;
    wisp_result_init(res);
    in->res = res;
    in->ev = ev;
    in->log_bytes = 0;
    in->log_truncated = false;
    in->call_status = LUA_OK;
    in->peak = in->used;
    uint64_t start = wisp_mono_ns();
    arm_deadline(in, start);
    lua_settop(L, 0);
    lua_pushcfunction(L, invoke_body);
    int st = lua_pcall(L, 0, 1, 0);
    if (st == LUA_OK)
        st = in->call_status;
    classify(in, st, res);
    if (res->outcome != WISP_OUTCOME_OK)
        wisp_result_drop_publishes(res);
    res->duration_ns = wisp_mono_ns() - start;
    res->mem_peak_bytes = in->peak;
    lua_settop(L, 0);
    in->deadline_ns = 0;
    in->res = NULL;
    in->ev = NULL;
    return res->outcome == WISP_OUTCOME_TIMEOUT || res->outcome == WISP_OUTCOME_MEMORY ? -1 : 0;
}

const struct wisp_engine_ops wisp_engine_lua = {
    .name = "lua",
    .create = engine_create,
    .invoke = engine_invoke,
    .destroy = engine_destroy,
};
