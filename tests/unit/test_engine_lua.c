/*
 * The Lua engine, in process: event and ctx, handler errors, file errors and
 * every limit, each followed by a normal invocation that must succeed.
 * Specs are filled by hand; handlers are written into a fresh temp folder.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "engine.h"
#include "fnspec.h"
#include "log.h"
#include "testutil.h"
#include "util.h"

struct fn {
    char dir[64];
    struct wisp_env_var env[2];
    struct wisp_fnspec spec;
    void *inst;
};

static void fn_init(struct fn *f, const char *src, uint32_t memory_kb, uint32_t timeout_ms)
{
    memset(f, 0, sizeof(*f));
    (void)wisp_test_mkdtemp(f->dir, sizeof(f->dir), "lua");
    if (src)
        wisp_test_write(f->dir, "handler.lua", src);
    f->env[0] = (struct wisp_env_var){"THRESHOLD", "30"};
    f->env[1] = (struct wisp_env_var){"MODE", "test"};
    f->spec.dir = f->dir;
    f->spec.name = "temp-alert";
    f->spec.version = "v1";
    f->spec.handler = "handler.lua";
    f->spec.memory_kb = memory_kb;
    f->spec.timeout_ms = timeout_ms;
    f->spec.env = f->env;
    f->spec.n_env = 2;
}

static void fn_fini(struct fn *f)
{
    wisp_engine_lua.destroy(f->inst);
    f->inst = NULL;
    wisp_test_rmtree(f->dir);
}

/* Creates the instance; err receives the message on failure. */
static int fn_create(struct fn *f, char *err, size_t errlen)
{
    err[0] = '\0';
    return wisp_engine_lua.create(&f->spec, &f->inst, err, errlen);
}

/* fn_init, then an instance that must be created. */
static void fn_open(struct fn *f, const char *src, uint32_t memory_kb, uint32_t timeout_ms)
{
    char err[256];
    fn_init(f, src, memory_kb, timeout_ms);
    int rc = fn_create(f, err, sizeof(err));
    if (rc != 0)
        (void)fprintf(stderr, "create: %s\n", err);
    CHECK_INT_EQ(rc, 0);
}

static int invoke_bytes(struct fn *f, const char *payload, size_t len, struct wisp_result *res)
{
    struct wisp_event ev = wisp_test_event("sensors/dev7/temp", payload, len, 1);
    return wisp_engine_lua.invoke(f->inst, &ev, res);
}

static int invoke(struct fn *f, const char *payload, struct wisp_result *res)
{
    return invoke_bytes(f, payload, strlen(payload), res);
}

/* The payload of publish i as a C string (payloads here have no NULs). */
static const char *pub(const struct wisp_result *res, size_t i)
{
    return i < res->n_pubs ? res->pubs[i].payload : "(missing)";
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static const char happy_src[] =
    "local count = 0\n"
    "return function(event, ctx)\n"
    "  count = count + 1\n"
    "  ctx.publish('out/fields', {id = event.id, source = event.source, type = event.type,\n"
    "    time = event.time, subject = event.subject, specversion = event.specversion,\n"
    "    dct = event.datacontenttype, qos = event.qos, retain = event.retain,\n"
    "    payload = event.payload})\n"
    "  ctx.publish('alerts/' .. event.data.dev, {temp = event.data.temp}, {qos = 1})\n"
    "  ctx.publish('out/string', 'raw\\0bytes', {qos = 1, retain = true})\n"
    "  ctx.publish('out/int', 42, {qos = 2})\n"
    "  ctx.publish('out/float', 0.1)\n"
    "  ctx.publish('out/bool', false, {retain = false})\n"
    "  ctx.publish('out/env', ctx.env.THRESHOLD .. ',' .. tostring(ctx.env.NOPE))\n"
    "  ctx.publish('out/fn', ctx.fn.name .. '@' .. ctx.fn.version)\n"
    "  ctx.publish('out/count', count)\n"
    "  ctx.publish('out/now', string.format('%.3f', ctx.now()))\n"
    "  ctx.publish('out/remaining', ctx.remaining_ms())\n"
    "  ctx.log.info('hello', 1, nil, true)\n"
    "  ctx.log.debug('hidden')\n"
    "  ctx.log.warn('careful \"quoted\"\\n')\n"
    "  print('printed', ctx.log ~= nil)\n"
    "end\n";

static void test_happy_path(void)
{
    struct fn f;
    struct wisp_result res;
    fn_open(&f, happy_src, 1024, 1000);
    wisp_test_capture_stderr();
    int rc = invoke(&f, "{\"temp\": 31.5, \"dev\": \"dev7\"}", &res);
    char *log = wisp_test_captured_stderr();
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK(res.error == NULL);
    CHECK_INT_EQ(res.n_pubs, 11);

    cJSON *j = cJSON_Parse(pub(&res, 0));
    CHECK(j != NULL);
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "id")), "ev-1");
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "source")), "wisp://gw1/mqtt");
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "type")), "wisp.mqtt.message");
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "time")), "2024-05-01T12:00:00.000Z");
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "subject")), "sensors/dev7/temp");
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "specversion")), "1.0");
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "dct")), "application/json");
    CHECK_STR_EQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "payload")),
                 "{\"temp\": 31.5, \"dev\": \"dev7\"}");
    CHECK_INT_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "qos")), 1);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(j, "retain")));
    cJSON_Delete(j);

    CHECK_STR_EQ(res.pubs[1].topic, "alerts/dev7");
    CHECK_STR_EQ(pub(&res, 1), "{\"temp\":31.5}");
    CHECK_INT_EQ(res.pubs[1].qos, 1);
    CHECK_INT_EQ(res.pubs[1].retain, 0);
    CHECK_INT_EQ(res.pubs[2].payload_len, 9);
    CHECK(memcmp(res.pubs[2].payload, "raw\0bytes", 9) == 0);
    CHECK_INT_EQ(res.pubs[2].qos, 1);
    CHECK_INT_EQ(res.pubs[2].retain, 1);
    CHECK_STR_EQ(pub(&res, 3), "42");
    CHECK_INT_EQ(res.pubs[3].qos, 2);
    CHECK_STR_EQ(pub(&res, 4), "0.1");
    CHECK_STR_EQ(pub(&res, 5), "false");
    CHECK_STR_EQ(pub(&res, 6), "30,nil");
    CHECK_STR_EQ(pub(&res, 7), "temp-alert@v1");
    CHECK_STR_EQ(pub(&res, 8), "1");
    double now = strtod(pub(&res, 9), NULL);
    CHECK(fabs(now - (double)wisp_real_ns() / 1e9) < 5.0);
    long left = strtol(pub(&res, 10), NULL, 10);
    CHECK(left > 0 && left <= 1000);
    CHECK(res.duration_ns > 0);

    CHECK_CONTAINS(log, "level=info mod=fn fn=temp-alert id=ev-1 msg=\"hello 1 nil true\"");
    CHECK_CONTAINS(log,
                   "level=warn mod=fn fn=temp-alert id=ev-1 msg=\"careful \\\"quoted\\\"\\n\"");
    CHECK_CONTAINS(log, "level=info mod=fn fn=temp-alert id=ev-1 msg=\"printed true\"");
    CHECK(strstr(log, "hidden") == NULL);
    free(log);

    /* Globals persist across invocations of one instance. */
    wisp_result_fini(&res);
    CHECK_INT_EQ(invoke(&f, "{\"temp\": 1, \"dev\": \"d\"}", &res), 0);
    CHECK_STR_EQ(pub(&res, 8), "2");
    wisp_result_fini(&res);
    fn_fini(&f);
}

static const char echo_src[] =
    "local cjson = require('cjson')\n"
    "return function(event, ctx)\n"
    "  local d = event.data\n"
    "  local p = event.payload\n"
    "  ctx.publish('out/payload', #p < 65536 and p or p:sub(1, 16))\n"
    "  ctx.publish('out/data', d == nil and 'nil' or\n"
    "    d == cjson.null and 'null' or type(d))\n"
    "  ctx.publish('out/dct', tostring(event.datacontenttype))\n"
    "  ctx.publish('out/len', #event.payload)\n"
    "  if type(d) == 'table' and d.s then ctx.publish('out/s', #d.s) end\n"
    "end\n";

static void check_echo(struct fn *f, const char *payload, size_t len, const char *data,
                       const char *dct)
{
    struct wisp_result res;
    char lenbuf[32];
    CHECK_INT_EQ(invoke_bytes(f, payload, len, &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK_STR_EQ(res.error ? res.error : "", "");
    if (res.outcome == WISP_OUTCOME_OK) {
        size_t plen = len < 65536 ? len : 16;
        CHECK_INT_EQ(res.pubs[0].payload_len, plen);
        CHECK(memcmp(res.pubs[0].payload, payload, plen) == 0);
        CHECK_STR_EQ(pub(&res, 1), data);
        CHECK_STR_EQ(pub(&res, 2), dct);
        (void)snprintf(lenbuf, sizeof(lenbuf), "%zu", len);
        CHECK_STR_EQ(pub(&res, 3), lenbuf);
    }
    wisp_result_fini(&res);
}

static void test_payloads(void)
{
    struct fn f;
    fn_open(&f, echo_src, 8192, 2000);
    check_echo(&f, "not json at all", 15, "nil", "nil");
    check_echo(&f, "\xff\xfe\0bin\x80", 7, "nil", "nil");
    check_echo(&f, "{\"a\":1}\0tail", 12, "nil", "nil");
    check_echo(&f, "{\"a\":\"\xc3\x28\"}", 10, "nil", "nil");
    check_echo(&f, "", 0, "nil", "nil");
    check_echo(&f, "null", 4, "null", "application/json");
    check_echo(&f, "25", 2, "number", "application/json");
    check_echo(&f, "[1,2,3]", 7, "table", "application/json");

    /* 1 MiB payloads, raw and as one JSON string. */
    size_t big = (size_t)1024 * 1024;
    char *buf = malloc(big);
    if (!buf) {
        CHECK(buf != NULL);
        fn_fini(&f);
        return;
    }
    memset(buf, 'x', big);
    check_echo(&f, buf, big, "nil", "nil");
    /* Now one JSON string member filling the whole payload. */
    const char head[] = "{\"s\":\"";
    for (size_t i = 0; i < sizeof(head) - 1; i++)
        buf[i] = head[i];
    buf[big - 2] = '"';
    buf[big - 1] = '}';
    struct wisp_result res;
    CHECK_INT_EQ(invoke_bytes(&f, buf, big, &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK_STR_EQ(pub(&res, 1), "table");
    CHECK_STR_EQ(pub(&res, 4), "1048568");
    wisp_result_fini(&res);
    free(buf);
    fn_fini(&f);
}

static const char error_src[] = "local function inner(x)\n"
                                "  error('boom ' .. x)\n"
                                "end\n"
                                "return function(event, ctx)\n"
                                "  ctx.publish('a/b', 'dropped')\n"
                                "  local p = event.payload\n"
                                "  if p == 'boom' then inner('now') end\n"
                                "  if p == 'arith' then return nil + 1 end\n"
                                "  if p == 'obj' then\n"
                                "    error(setmetatable({}, {__tostring = function() return "
                                "'custom object' end}))\n"
                                "  end\n"
                                "  if p == 'plain' then error({}) end\n"
                                "  if p == 'huge' then error(string.rep('x', 100000)) end\n"
                                "  if p == 'badts' then\n"
                                "    error(setmetatable({}, {__tostring = function() error('x') "
                                "end}))\n"
                                "  end\n"
                                "end\n";

static void check_error(struct fn *f, const char *mode, const char *want1, const char *want2)
{
    struct wisp_result res;
    CHECK_INT_EQ(invoke(f, mode, &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK_INT_EQ(res.n_pubs, 0);
    CHECK_CONTAINS(res.error, want1);
    CHECK_CONTAINS(res.error, want2);
    CHECK_CONTAINS(res.error, "stack traceback:");
    wisp_result_fini(&res);
    CHECK_INT_EQ(invoke(f, "fine", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK_INT_EQ(res.n_pubs, 1);
    wisp_result_fini(&res);
}

static void test_handler_error(void)
{
    struct fn f;
    fn_open(&f, error_src, 1024, 1000);
    check_error(&f, "boom", "handler.lua:2: boom now", "handler.lua:7: in function");
    check_error(&f, "arith", "handler.lua:8: attempt to perform arithmetic on a nil value",
                "handler.lua:8:");
    check_error(&f, "obj", "custom object", "handler.lua:10:");
    check_error(&f, "plain", "(error object is a table value)", "handler.lua:12:");
    check_error(&f, "badts", "(error object is a table value)", "handler.lua:15:");

    /* An error of any size is cut to a bounded message. */
    struct wisp_result res;
    CHECK_INT_EQ(invoke(&f, "huge", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_ERROR);
    CHECK_CONTAINS(res.error, "handler.lua:13: xxxxxxxx");
    CHECK(res.error && strlen(res.error) == 16384);
    wisp_result_fini(&res);
    fn_fini(&f);
}

/* Creating with src must fail with rc and an error containing want. */
static void check_create_fails(const char *src, uint32_t memory_kb, int rc, const char *want)
{
    struct fn f;
    char err[256];
    fn_init(&f, src, memory_kb, 100);
    CHECK_INT_EQ(fn_create(&f, err, sizeof(err)), rc);
    CHECK(f.inst == NULL);
    CHECK_CONTAINS(err, want);
    fn_fini(&f);
}

static void test_handler_file_errors(void)
{
    check_create_fails("return function(e, ctx)\n  local x = = 1\nend\n", 1024, -EINVAL,
                       "handler.lua:2: unexpected symbol near '='");
    check_create_fails("local x = 1\n", 1024, -EINVAL,
                       "handler.lua: must return a function (got nil)");
    check_create_fails("return {}\n", 1024, -EINVAL,
                       "handler.lua: must return a function (got table)");
    check_create_fails("error('top-level')\n", 1024, -EINVAL, "handler.lua:1: top-level");
    check_create_fails("\x1bLua\x54\x00garbage", 1024, -EINVAL,
                       "attempt to load a binary chunk (mode is 't')");
    check_create_fails("while true do end\n", 1024, -ETIMEDOUT,
                       "handler.lua: timeout: loading the handler exceeded limits.timeout_ms "
                       "(100 ms)");
    check_create_fails("local t = {} for i = 1, 1e9 do t[i] = i end\n", 1024, -ENOMEM,
                       "handler.lua: memory: loading the handler exceeded limits.memory_kb "
                       "(1024 KiB)");
    check_create_fails(NULL, 1024, -ENOENT, "handler.lua: cannot read: No such file");

    /* A handler that is a symlink out of the bundle is not read. */
    struct fn f;
    struct wisp_result res;
    char err[256];
    fn_init(&f, NULL, 1024, 100);
    wisp_test_symlink("/etc/hostname", f.dir, "handler.lua");
    CHECK_INT_EQ(fn_create(&f, err, sizeof(err)), -EXDEV);
    CHECK_STR_EQ(err, "handler.lua: cannot read: resolves outside the bundle");
    fn_fini(&f);

    /* A failed create leaves nothing behind; a good one still works after. */
    fn_open(&f, "print('loading')\nreturn function() end\n", 1024, 100);
    CHECK_INT_EQ(invoke(&f, "", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    wisp_result_fini(&res);
    fn_fini(&f);
}

static const char limits_src[] =
    "return function(event, ctx)\n"
    "  local m = event.payload\n"
    "  if m == 'loop' then while true do end end\n"
    "  if m == 'pcall_loop' then\n"
    "    while true do pcall(function() while true do end end) end\n"
    "  end\n"
    "  if m == 'co_loop' then coroutine.wrap(function() while true do end end)() end\n"
    "  if m == 'close_loop' then\n"
    "    local x <close> = setmetatable({}, {__close = function() while true do end end})\n"
    "  end\n"
    "  if m == 'table_bomb' then local t = {} local i = 0 while true do i = i + 1 t[i] = {i} "
    "end end\n"
    "  if m == 'rep' then local s = string.rep('x', 100 * 1024 * 1024) end\n"
    "  if m == 'recurse' then local function f(n) return f(n + 1) + 1 end f(1) end\n"
    "  if m == 'pcall_mem' then\n"
    "    pcall(function() local t = {} for i = 1, 1e9 do t[i] = i end end)\n"
    "  end\n"
    "  if m == 'pcall_rep' then pcall(string.rep, 'x', 100 * 1024 * 1024) end\n"
    "  if m == 'flood' then for i = 1, 1001 do ctx.publish('flood/' .. i, i) end end\n"
    "  if m == 'big' then\n"
    "    local s = string.rep('x', 600 * 1024)\n"
    "    ctx.publish('big/1', s) ctx.publish('big/2', s)\n"
    "  end\n"
    "  if m == 'big_table' then local s = string.rep('x', 600 * 1024) ctx.publish('t', {s, s}) "
    "end\n"
    "  if m == 'slow_tostring' then\n"
    "    error(setmetatable({}, {__tostring = function() while true do end end}))\n"
    "  end\n"
    "  if m == 'json_bomb' then\n"
    "    local s, t = string.rep('x', 100000), {}\n"
    "    for i = 1, 100 do t[i] = s end\n"
    "    pcall(require('cjson').encode, t)\n"
    "  end\n"
    "  if m == 'json_dag' then\n"
    "    local t = {string.rep('x', 1000)}\n"
    "    for i = 1, 40 do t = {t, t} end\n"
    "    pcall(require('cjson').encode, t)\n"
    "  end\n"
    "  if m == 'decode_bomb' then\n"
    "    local parts = {}\n"
    "    for i = 1, 20000 do parts[i] = '{\"k\":' .. i .. '}' end\n"
    "    local text = '[' .. table.concat(parts, ',') .. ']'\n"
    "    parts = nil\n"
    "    pcall(require('cjson').decode, text)\n"
    "  end\n"
    "  ctx.publish('ok/' .. m, 'fine')\n"
    "end\n";

/* Runs `mode`, expects outcome/rc/error, then a normal invocation on the
 * same instance (or a fresh one when invoke said to discard it). */
static void check_limit(const char *mode, uint32_t memory_kb, uint32_t timeout_ms,
                        enum wisp_outcome want, int want_rc, const char *want_err)
{
    struct fn f;
    struct wisp_result res;
    char err[256];
    fn_open(&f, limits_src, memory_kb, timeout_ms);
    int rc = invoke(&f, mode, &res);
    CHECK_INT_EQ(rc, want_rc);
    CHECK_INT_EQ(res.outcome, want);
    CHECK_CONTAINS(res.error, want_err);
    CHECK_INT_EQ(res.n_pubs, 0);
    if (want == WISP_OUTCOME_TIMEOUT)
        CHECK(res.duration_ns >= timeout_ms * 1000000ull);
    wisp_result_fini(&res);
    if (rc < 0) {
        wisp_engine_lua.destroy(f.inst);
        CHECK_INT_EQ(fn_create(&f, err, sizeof(err)), 0);
    }
    CHECK_INT_EQ(invoke(&f, "normal", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK_STR_EQ(res.n_pubs == 1 ? res.pubs[0].topic : "", "ok/normal");
    wisp_result_fini(&res);
    fn_fini(&f);
}

static const char timeout_msg[] = "timeout: handler exceeded limits.timeout_ms (100 ms)";
static const char memory_msg[] = "memory: handler exceeded limits.memory_kb (1024 KiB)";

static void test_limits(void)
{
    /* Stopped at 1024 KiB or 100 ms; invoke says to discard the instance. */
    static const struct {
        const char *mode;
        enum wisp_outcome want;
    } stopped[] = {
        {"loop", WISP_OUTCOME_TIMEOUT},
        {"pcall_loop", WISP_OUTCOME_TIMEOUT},
        {"co_loop", WISP_OUTCOME_TIMEOUT},
        {"close_loop", WISP_OUTCOME_TIMEOUT},
        {"slow_tostring", WISP_OUTCOME_TIMEOUT},
        {"table_bomb", WISP_OUTCOME_MEMORY},
        {"rep", WISP_OUTCOME_MEMORY},
        {"recurse", WISP_OUTCOME_MEMORY},
        {"pcall_mem", WISP_OUTCOME_MEMORY},
        {"pcall_rep", WISP_OUTCOME_MEMORY},
        {"json_bomb", WISP_OUTCOME_MEMORY},
        /* Its JSON would be terabytes: refused before cjson starts on it. */
        {"json_dag", WISP_OUTCOME_MEMORY},
        {"decode_bomb", WISP_OUTCOME_MEMORY},
    };
    for (size_t i = 0; i < sizeof(stopped) / sizeof(stopped[0]); i++)
        check_limit(stopped[i].mode, 1024, 100, stopped[i].want, -1,
                    stopped[i].want == WISP_OUTCOME_TIMEOUT ? timeout_msg : memory_msg);
    /* With room for a full Lua stack, deep recursion is a plain error. */
    check_limit("recurse", 128 * 1024, 10000, WISP_OUTCOME_ERROR, 0, "stack overflow");
    check_limit("flood", 1024, 100, WISP_OUTCOME_ERROR, 0,
                "publish: more than 1000 messages in one invocation");
    check_limit("big", 4096, 100, WISP_OUTCOME_ERROR, 0,
                "publish: more than 1048576 bytes (topics and payloads) in one invocation");
    check_limit("big_table", 2048, 100, WISP_OUTCOME_ERROR, 0,
                "publish: more than 1048576 bytes (topics and payloads) in one invocation");
}

/* An event payload whose decoded form does not fit: a memory outcome, and
 * (checked by LeakSanitizer) no C memory left behind by cjson. */
static void test_event_decode_memory(void)
{
    struct fn f;
    struct wisp_result res;
    size_t cap = (size_t)600 * 1024, len = 0;
    char *json = malloc(cap);
    if (!json) {
        CHECK(json != NULL);
        return;
    }
    json[len++] = '[';
    for (int i = 0; len + 16 < cap; i++)
        len += (size_t)snprintf(json + len, cap - len, "%s{\"k\":%d}", i ? "," : "", i);
    json[len++] = ']';
    fn_open(&f, echo_src, 1024, 1000);
    CHECK_INT_EQ(invoke_bytes(&f, json, len, &res), -1);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_MEMORY);
    CHECK_CONTAINS(res.error, memory_msg);
    wisp_result_fini(&res);
    free(json);
    fn_fini(&f);
}

static void test_memory_peak(void)
{
    struct fn f;
    struct wisp_result res;
    fn_open(&f,
            "return function(event, ctx)\n"
            "  if event.payload == 'big' then\n"
            "    local s = string.rep('x', 256 * 1024)\n"
            "    ctx.publish('a/b', #s)\n"
            "    s = nil collectgarbage()\n"
            "  end\n"
            "end\n",
            1024, 1000);
    CHECK_INT_EQ(invoke(&f, "big", &res), 0);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK(res.mem_peak_bytes >= (uint64_t)256 * 1024);
    CHECK(res.mem_peak_bytes <= (uint64_t)1024 * 1024);
    wisp_result_fini(&res);
    CHECK_INT_EQ(invoke(&f, "small", &res), 0);
    CHECK(res.mem_peak_bytes > 4096u);
    CHECK(res.mem_peak_bytes < (uint64_t)128 * 1024);
    wisp_result_fini(&res);
    fn_fini(&f);
}

static void test_log_limits(void)
{
    struct fn f;
    struct wisp_result res;
    fn_open(&f,
            "return function(event, ctx)\n"
            "  ctx.log.debug('debug-line')\n"
            "  local line = string.rep('y', 1000)\n"
            "  for i = 1, 100 do ctx.log.error(i, line) end\n"
            "end\n",
            1024, 1000);
    wisp_test_capture_stderr();
    CHECK_INT_EQ(invoke(&f, "", &res), 0);
    wisp_result_fini(&res);
    wisp_log_threshold = WISP_LOG_DEBUG;
    CHECK_INT_EQ(invoke(&f, "", &res), 0);
    wisp_log_threshold = WISP_LOG_ERROR;
    wisp_result_fini(&res);
    CHECK_INT_EQ(invoke(&f, "", &res), 0);
    wisp_log_threshold = WISP_LOG_INFO;
    wisp_result_fini(&res);
    char *log = wisp_test_captured_stderr();
    /* 64 KiB per invocation holds 65 lines of ~1 KB; the cap resets per
     * invocation; debug lines and the warning follow the threshold. */
    CHECK_INT_EQ(count_of(log, "level=error mod=fn"), 3 * 65);
    CHECK_INT_EQ(count_of(log, "msg=\"log output truncated\""), 2);
    CHECK_INT_EQ(count_of(log, "debug-line"), 1);
    free(log);
    fn_fini(&f);
}

static const struct wisp_check_test tests[] = {
    {"happy_path", test_happy_path},
    {"payloads", test_payloads},
    {"handler_error", test_handler_error},
    {"handler_file_errors", test_handler_file_errors},
    {"limits", test_limits},
    {"event_decode_memory", test_event_decode_memory},
    {"memory_peak", test_memory_peak},
    {"log_limits", test_log_limits},
};

int main(int argc, char **argv)
{
    return WISP_CHECK_RUN(argc, argv, tests);
}
