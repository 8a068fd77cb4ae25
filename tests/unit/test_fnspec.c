/* function.json parsing (runtime/src/fnspec.c, fnspec_json.c,
 * trigger_mqtt.c); loading folders is in test_fnspec_load.c. JSON in this
 * file is written with single quotes, turned into double quotes by parse_q(),
 * to keep the tables readable. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fnspec.h"
#include "testutil.h"

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

#define TRIG         "{'type':'mqtt','topic':'t'}"
#define DOC(extra)   "{'name':'a','triggers':[" TRIG "]" extra "}"
#define DOC_T(trigs) "{'name':'a','triggers':[" trigs "]}"

static char err[1024];

static struct wisp_fnspec *parse_q(const char *text, int *rc_out)
{
    return wisp_test_parse_q(text, rc_out, err, sizeof(err));
}

static void expect_ok(const char *text)
{
    struct wisp_fnspec *spec = parse_q(text, NULL);
    if (!spec)
        (void)fprintf(stderr, "unexpected error for %s: %s\n", text, err);
    CHECK(spec != NULL);
    wisp_fnspec_destroy(spec);
}

static void expect_err(const char *text, const char *needle)
{
    int rc = 0;
    struct wisp_fnspec *spec = parse_q(text, &rc);
    CHECK(spec == NULL);
    CHECK_INT_EQ(rc, -EINVAL);
    CHECK_CONTAINS(err, needle);
    /* Every error is one line that starts with the origin. */
    CHECK(strncmp(err, "fn/function.json:", 17) == 0);
    CHECK(strchr(err, '\n') == NULL);
    wisp_fnspec_destroy(spec);
}

static void test_defaults(void)
{
    struct wisp_fnspec *spec = parse_q(DOC(""), NULL);
    CHECK(spec != NULL);
    if (!spec)
        return;
    CHECK_STR_EQ(spec->name, "a");
    CHECK_STR_EQ(spec->dir, "fn");
    CHECK_STR_EQ(spec->origin, "fn/function.json");
    CHECK_STR_EQ(spec->version, "");
    CHECK(spec->description == NULL);
    CHECK_INT_EQ(spec->runtime, WISP_RUNTIME_LUA);
    CHECK_STR_EQ(spec->handler, "handler.lua");
    CHECK_INT_EQ(spec->n_triggers, 1);
    CHECK(spec->triggers[0].kind == &wisp_trigger_mqtt);
    CHECK_STR_EQ(spec->triggers[0].topic, "t");
    CHECK_INT_EQ(spec->triggers[0].qos, 1);
    CHECK(spec->triggers[0].durable); /* QoS 1 and 2 are durable unless told otherwise */
    CHECK(!spec->envelope);
    CHECK_INT_EQ(spec->memory_kb, WISP_DEFAULT_MEMORY_KB);
    CHECK_INT_EQ(spec->timeout_ms, WISP_DEFAULT_TIMEOUT_MS);
    CHECK_INT_EQ(spec->concurrency, WISP_DEFAULT_CONCURRENCY);
    CHECK_INT_EQ(spec->retry_max, WISP_DEFAULT_RETRY_MAX);
    CHECK_INT_EQ(spec->retry_backoff_ms, WISP_DEFAULT_BACKOFF_MS);
    CHECK(spec->retry_dead_letter == NULL);
    CHECK_INT_EQ(spec->n_env, 0);
    CHECK(wisp_fnspec_env(spec, "X") == NULL);
    wisp_fnspec_destroy(spec);

    spec = parse_q(DOC(",'runtime':'native'"), NULL);
    CHECK(spec != NULL);
    if (spec) {
        CHECK_INT_EQ(spec->runtime, WISP_RUNTIME_NATIVE);
        CHECK_STR_EQ(spec->handler, "handler.so");
    }
    wisp_fnspec_destroy(spec);
    /* Empty sections take every default. */
    spec = parse_q(DOC(",'limits':{},'retry':{},'env':{}"), NULL);
    CHECK(spec != NULL);
    if (spec)
        CHECK_INT_EQ(spec->timeout_ms, WISP_DEFAULT_TIMEOUT_MS);
    wisp_fnspec_destroy(spec);
}

static void test_full(void)
{
    struct wisp_fnspec *spec = parse_q(
        "{\n 'name': 'temp-alert_2',\n 'description': 'Alerts \\u00e9\\n',\n"
        " 'version': '1.2.0+build_7-rc.1',\n 'runtime': 'lua',\n 'handler': 'src/main.lua',\n"
        " 'triggers': [{'type': 'mqtt', 'topic': 'sensors/+/temp', 'qos': 0},\n"
        "              {'qos': 2, 'topic': '$share/g/alerts/#', 'type': 'mqtt', 'durable': "
        "false}],\n"
        " 'limits': {'memory_kb': 262144, 'timeout_ms': 900000, 'concurrency': 64},\n"
        " 'retry': {'max': 100, 'backoff_ms': 3600000, 'dead_letter': 'wisp/dlq/temp-alert'},\n"
        " 'output': {'envelope': 'cloudevents'},\n"
        " 'env': {'THRESHOLD': '30', '_x9': '', 'EMPTY': ''}\n}\n",
        NULL);
    CHECK(spec != NULL);
    if (!spec) {
        (void)fprintf(stderr, "%s\n", err);
        return;
    }
    CHECK_STR_EQ(spec->name, "temp-alert_2");
    CHECK_STR_EQ(spec->description, "Alerts \xc3\xa9\n");
    CHECK_STR_EQ(spec->version, "1.2.0+build_7-rc.1");
    CHECK_STR_EQ(spec->handler, "src/main.lua");
    CHECK_INT_EQ(spec->n_triggers, 2);
    CHECK_STR_EQ(spec->triggers[0].topic, "sensors/+/temp");
    CHECK_INT_EQ(spec->triggers[0].qos, 0);
    CHECK(!spec->triggers[0].durable);
    CHECK_STR_EQ(spec->triggers[1].topic, "$share/g/alerts/#");
    CHECK_INT_EQ(spec->triggers[1].qos, 2);
    CHECK(!spec->triggers[1].durable);
    CHECK(spec->envelope);
    CHECK_INT_EQ(spec->memory_kb, 262144);
    CHECK_INT_EQ(spec->timeout_ms, 900000);
    CHECK_INT_EQ(spec->concurrency, 64);
    CHECK_INT_EQ(spec->retry_max, 100);
    CHECK_INT_EQ(spec->retry_backoff_ms, 3600000);
    CHECK_STR_EQ(spec->retry_dead_letter, "wisp/dlq/temp-alert");
    CHECK_INT_EQ(spec->n_env, 3);
    CHECK_STR_EQ(wisp_fnspec_env(spec, "THRESHOLD"), "30");
    CHECK_STR_EQ(wisp_fnspec_env(spec, "_x9"), "");
    CHECK(wisp_fnspec_env(spec, "threshold") == NULL);
    CHECK(wisp_fnspec_env(NULL, "THRESHOLD") == NULL);
    wisp_fnspec_destroy(spec);
    wisp_fnspec_destroy(NULL);
}

static void test_boundaries_ok(void)
{
    static const char *const ok[] = {
        DOC(",'limits':{'memory_kb':64,'timeout_ms':1,'concurrency':1}"),
        DOC(",'limits':{'memory_kb':1024.0,'timeout_ms':1e3}"),
        DOC(",'retry':{'max':-0}"),
        /* cJSON skips a UTF-8 byte order mark; editors on Windows add one. */
        "\xef\xbb\xbf" DOC(""),
        DOC(",'retry':{'max':0,'backoff_ms':1}"),
        DOC(",'retry':{'dead_letter':'/'}"),
        DOC(",'version':'0'"),
        DOC(",'handler':'a/b/c.lua'"),
        DOC(",'handler':'.hidden/h.lua'"),
        DOC(",'handler':'..x/h.lua'"),
        DOC(",'description':''"),
        "{'name':'0','triggers':[" TRIG "]}",
        "{'name':'a-_','triggers':[" TRIG "]}",
        DOC_T("{'type':'mqtt','topic':'#','qos':0}"),
        DOC_T("{'type':'mqtt','topic':'$SYS/+'}"),
        DOC_T("{'type':'mqtt','topic':'a//b/'}"),
        DOC_T("{'type':'mqtt','topic':'caf\\u00e9/+'}"),
        " \t\r\n" DOC("") " \n",
    };
    for (size_t i = 0; i < LEN(ok); i++)
        expect_ok(ok[i]);
}

struct bad_case {
    const char *json;
    const char *needle;
};

static const struct bad_case bad_root[] = {
    {"[]", "fn/function.json:(root): must be a JSON object, got an array"},
    {"5", "(root): must be a JSON object, got 5"},
    {"'x'", "(root): must be a JSON object, got \"x\""},
    {"null", "(root): must be a JSON object, got null"},
    {"{", "(json): invalid JSON at line 1, column"},
    {"{'name':'a'} x", "(json): invalid JSON at line 1, column 14"},
    {"{'name':'a',}", "(json): invalid JSON"},
    {"{'name':'a'}{}", "(json): invalid JSON"},
    {"{\n  'name': 'a',\n  'triggers': [,]\n}", "(json): invalid JSON at line 3, column 16"},
    {" ", "(json): invalid JSON at line 1"},
    {DOC(",'nmae':'x'"), "(root): unknown key \"nmae\" (allowed: name, description, version, "
                         "runtime, handler, triggers, limits, retry, output, env, gpio)"},
    {DOC(",'Name':'x'"), "(root): unknown key \"Name\""},
    {DOC(",'$schema':'x'"), "(root): unknown key \"$schema\""},
    {DOC(",'name':'b'"), "(root): duplicate key \"name\""},
    {DOC(",'env':{},'env':{}"), "(root): duplicate key \"env\""},
    {"{'name':'a','triggers':[" TRIG "],'triggers':[" TRIG "]}", "(root): duplicate key"},
    /* A key with bytes that must not reach a terminal raw. */
    {DOC(",'a\\u001bb':1"), "(root): unknown key \"a\\x1bb\""},
};

static const struct bad_case bad_fields[] = {
    {"{'triggers':[" TRIG "]}", "name: missing"},
    {"{'name':5,'triggers':[" TRIG "]}", "name: must be a string, got 5"},
    {"{'name':null,'triggers':[" TRIG "]}", "name: must be a string, got null"},
    {"{'name':'','triggers':[" TRIG "]}", "name: must be 1 to 64 characters of a-z, 0-9, '_' "
                                          "and '-', starting with a letter or digit, got \"\""},
    {"{'name':'Temp','triggers':[" TRIG "]}", "name: must be 1 to 64 characters"},
    {"{'name':'-a','triggers':[" TRIG "]}", "got \"-a\""},
    {"{'name':'_a','triggers':[" TRIG "]}", "got \"_a\""},
    {"{'name':'a b','triggers':[" TRIG "]}", "got \"a b\""},
    {"{'name':'a.b','triggers':[" TRIG "]}", "got \"a.b\""},
    {"{'name':'a/b','triggers':[" TRIG "]}", "got \"a/b\""},
    {"{'name':'caf\\u00e9','triggers':[" TRIG "]}", "got \"caf\\xc3\\xa9\""},
    {DOC(",'description':5"), "description: must be a string, got 5"},
    {DOC(",'description':null"), "description: must be a string, got null"},
    {DOC(",'version':''"), "version: must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '+' "
                           "and '-', got \"\""},
    {DOC(",'version':'1 0'"), "version: must be 1 to 64 characters"},
    {DOC(",'version':'v/1'"), "got \"v/1\""},
    {DOC(",'version':1"), "version: must be a string, got 1"},
    {DOC(",'runtime':'python'"), "runtime: must be \"lua\" or \"native\", got \"python\""},
    {DOC(",'runtime':'Lua'"), "runtime: must be \"lua\" or \"native\", got \"Lua\""},
    {DOC(",'runtime':1"), "runtime: must be a string, got 1"},
    {DOC(",'handler':5"), "handler: must be a string, got 5"},
    {DOC(",'handler':''"), "handler: must not be empty"},
    {DOC(",'handler':'/etc/h.lua'"), "handler: must be relative to the function folder, not start "
                                     "with '/', got \"/etc/h.lua\""},
    {DOC(",'handler':'../h.lua'"), "handler: must stay inside the function folder (no \"..\" "
                                   "segments), got \"../h.lua\""},
    {DOC(",'handler':'a/../../h.lua'"), "handler: must stay inside the function folder"},
    {DOC(",'handler':'a/..'"), "handler: must stay inside the function folder"},
    {DOC(",'handler':'..'"), "handler: must stay inside the function folder"},
    {DOC(",'handler':'a//h.lua'"), "handler: must not be empty or contain empty segments"},
    {DOC(",'handler':'a/'"), "handler: must not be empty or contain empty segments"},
    {DOC(",'handler':'./h.lua'"), "handler: must not contain \".\" segments"},
    {DOC(",'handler':'a/./h.lua'"), "handler: must not contain \".\" segments"},
    {DOC(",'handler':'h\\n.lua'"), "handler: must not contain control characters, got "
                                   "\"h\\x0a.lua\""},
};

static const struct bad_case bad_triggers[] = {
    {"{'name':'a'}", "triggers: missing; at least one trigger is required"},
    {"{'name':'a','triggers':{}}", "triggers: must be an array of 1 to 64 trigger objects, "
                                   "got an object"},
    {"{'name':'a','triggers':'mqtt'}", "triggers: must be an array"},
    {"{'name':'a','triggers':[]}", "triggers: must have 1 to 64 entries, got 0"},
    {DOC_T("5"),
     "triggers[0]: must be an object with a \"type\" (known: mqtt, timer, sensor, gpio), got 5"},
    {DOC_T("[]"), "triggers[0]: must be an object with a \"type\""},
    {DOC_T("null"), "triggers[0]: must be an object"},
    {DOC_T("{}"),
     "triggers[0].type: missing; every trigger needs a type (known: mqtt, timer, sensor, gpio)"},
    {DOC_T("{'topic':'t'}"), "triggers[0].type: missing"},
    {DOC_T("{'type':5}"),
     "triggers[0].type: must be a string (known: mqtt, timer, sensor, gpio), got 5"},
    {DOC_T("{'type':'webhook','path':'/x'}"),
     "fn/function.json:triggers[0].type: unknown trigger type \"webhook\" (known: mqtt, timer, "
     "sensor, gpio)"},
    {DOC_T("{'type':'MQTT','topic':'t'}"), "unknown trigger type \"MQTT\""},
    {DOC_T(TRIG ",{'type':'mqtt','topic':'a/#/b'}"),
     "triggers[1].topic: must be an MQTT topic filter like \"sensors/+/temp\" ('#' must be the "
     "whole last level, as in \"a/#\"), got \"a/#/b\""},
    {DOC_T(TRIG "," TRIG ",{'type':'pigeon'}"),
     "triggers[2].type: unknown trigger type \"pigeon\""},
    {DOC_T("{'type':'mqtt'}"), "triggers[0].topic: missing; an mqtt trigger needs a topic filter"},
    {DOC_T("{'type':'mqtt','topic':5}"), "triggers[0].topic: must be a string, got 5"},
    {DOC_T("{'type':'mqtt','topic':''}"), "triggers[0].topic: must be an MQTT topic filter like "
                                          "\"sensors/+/temp\" (must not be empty), got \"\""},
    {DOC_T("{'type':'mqtt','topic':'a+'}"), "('+' must occupy a whole level"},
    {DOC_T("{'type':'mqtt','topic':'a/+b'}"), "('+' must occupy a whole level"},
    {DOC_T("{'type':'mqtt','topic':'#/a'}"), "('#' must be the whole last level"},
    {DOC_T("{'type':'mqtt','topic':'a#'}"), "('#' must be the whole last level"},
    {DOC_T("{'type':'mqtt','topic':'$share/g'}"), "triggers[0].topic: must be an MQTT topic"},
    {DOC_T("{'type':'mqtt','topic':'t','qos':3}"),
     "triggers[0].qos: must be a whole number from 0 to 2, got 3"},
    {DOC_T("{'type':'mqtt','topic':'t','qos':-1}"), "triggers[0].qos: must be a whole number"},
    {DOC_T("{'type':'mqtt','topic':'t','qos':1.5}"), "got 1.5"},
    {DOC_T("{'type':'mqtt','topic':'t','qos':'1'}"), "triggers[0].qos: must be a whole number "
                                                     "from 0 to 2, got \"1\""},
    {DOC_T("{'type':'mqtt','topic':'t','qos':true}"), "got true"},
    {DOC_T("{'type':'mqtt','topic':'t','qos':null}"), "got null"},
    {DOC_T("{'type':'mqtt','topic':'t','every':'5s'}"),
     "triggers[0]: unknown key \"every\" (allowed: type, topic, qos, durable)"},
    {DOC_T("{'type':'mqtt','topic':'t','durable':1}"),
     "triggers[0].durable: must be true or false"},
    {DOC_T("{'type':'mqtt','topic':'t','qos':0,'durable':true}"),
     "triggers[0].durable: a durable trigger needs qos 1 or 2"},
    {DOC_T("{'type':'mqtt','topic':'t','topic':'u'}"), "triggers[0]: duplicate key \"topic\""},
    {DOC_T("{'type':'mqtt','type':'mqtt','topic':'t'}"), "triggers[0]: duplicate key \"type\""},
};

static const struct bad_case bad_sections[] = {
    {DOC(",'limits':5"), "limits: must be an object, got 5"},
    {DOC(",'limits':[]"), "limits: must be an object, got an array"},
    {DOC(",'limits':null"), "limits: must be an object, got null"},
    {DOC(",'limits':{'memory':1}"),
     "limits: unknown key \"memory\" (allowed: memory_kb, timeout_ms, concurrency)"},
    {DOC(",'limits':{'timeout_ms':5,'timeout_ms':5}"), "limits: duplicate key \"timeout_ms\""},
    {DOC(",'limits':{'timeout_ms':0}"),
     "fn/function.json:limits.timeout_ms: must be a whole number from 1 to 900000, got 0"},
    {DOC(",'limits':{'timeout_ms':900001}"), "limits.timeout_ms: must be a whole number from 1 "
                                             "to 900000, got 900001"},
    {DOC(",'limits':{'timeout_ms':1.5}"), "limits.timeout_ms: must be a whole number from 1 to "
                                          "900000, got 1.5"},
    {DOC(",'limits':{'timeout_ms':'10'}"), "got \"10\""},
    {DOC(",'limits':{'timeout_ms':true}"), "got true"},
    {DOC(",'limits':{'timeout_ms':1e100}"), "got 1e+100"},
    {DOC(",'limits':{'timeout_ms':-5}"), "got -5"},
    {DOC(",'limits':{'timeout_ms':{}}"), "got an object"},
    {DOC(",'limits':{'timeout_ms':4294967297}"), "got 4294967297"},
    {DOC(",'limits':{'memory_kb':63}"), "limits.memory_kb: must be a whole number from 64 to "
                                        "262144, got 63"},
    {DOC(",'limits':{'memory_kb':262145}"), "limits.memory_kb: must be a whole number"},
    {DOC(",'limits':{'concurrency':0}"), "limits.concurrency: must be a whole number from 1 to "
                                         "64, got 0"},
    {DOC(",'limits':{'concurrency':65}"), "limits.concurrency: must be a whole number"},
    {DOC(",'retry':'x'"), "retry: must be an object, got \"x\""},
    {DOC(",'retry':{'tries':1}"),
     "retry: unknown key \"tries\" (allowed: max, backoff_ms, dead_letter)"},
    {DOC(",'retry':{'max':1,'max':2}"), "retry: duplicate key \"max\""},
    {DOC(",'retry':{'max':101}"), "retry.max: must be a whole number from 0 to 100, got 101"},
    {DOC(",'retry':{'max':-1}"), "retry.max: must be a whole number"},
    {DOC(",'retry':{'backoff_ms':0}"), "retry.backoff_ms: must be a whole number from 1 to "
                                       "3600000, got 0"},
    {DOC(",'retry':{'backoff_ms':3600001}"), "retry.backoff_ms: must be a whole number"},
    {DOC(",'retry':{'dead_letter':5}"), "retry.dead_letter: must be a string, got 5"},
    {DOC(",'output':{'envelope':'xml'}"), "output.envelope: must be \"none\" or \"cloudevents\""},
    {DOC(",'output':{'wrap':true}"), "output: unknown key \"wrap\" (allowed: envelope)"},
    {DOC(",'output':[]"), "output: must be an object"},
    {DOC(",'retry':{'dead_letter':'a/+'}"),
     "retry.dead_letter: must be an MQTT topic name to publish to (wildcards '+' and '#' are "
     "only allowed in subscription filters), got \"a/+\""},
    {DOC(",'retry':{'dead_letter':'dlq/#'}"), "retry.dead_letter: must be an MQTT topic name"},
    {DOC(",'retry':{'dead_letter':''}"), "retry.dead_letter: must be an MQTT topic name to "
                                         "publish to (must not be empty)"},
    {DOC(",'retry':{'dead_letter':'$SYS/dlq'}"), "('$' topics are reserved for the broker)"},
    {DOC(",'env':[]"), "env: must be an object of string values, got an array"},
    {DOC(",'env':'A=1'"), "env: must be an object of string values, got \"A=1\""},
    {DOC(",'env':{'THRESHOLD':30}"),
     "env.THRESHOLD: must be a string (quote numbers, e.g. \"30\"), got 30"},
    {DOC(",'env':{'A':null}"), "env.A: must be a string"},
    {DOC(",'env':{'A':{}}"), "env.A: must be a string (quote numbers, e.g. \"30\"), got an "
                             "object"},
    {DOC(",'env':{'1X':'v'}"), "env: invalid variable name \"1X\"; names must match "
                               "[A-Za-z_][A-Za-z0-9_]{0,127}"},
    {DOC(",'env':{'A-B':'v'}"), "env: invalid variable name \"A-B\""},
    {DOC(",'env':{'':'v'}"), "env: invalid variable name \"\""},
    {DOC(",'env':{'A B':'v'}"), "env: invalid variable name \"A B\""},
    {DOC(",'env':{'A=B':'v'}"), "env: invalid variable name \"A=B\""},
    {DOC(",'env':{'A':'1','B':'2','A':'3'}"), "env: duplicate key \"A\""},
};

static void run_bad(const struct bad_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int before = wisp_check_failures;
        expect_err(cases[i].json, cases[i].needle);
        if (wisp_check_failures != before)
            (void)fprintf(stderr, "  case: %s\n", cases[i].json);
    }
}

static void test_bad_root(void)
{
    run_bad(bad_root, LEN(bad_root));
}

static void test_bad_fields(void)
{
    run_bad(bad_fields, LEN(bad_fields));
}

static void test_bad_triggers(void)
{
    run_bad(bad_triggers, LEN(bad_triggers));
}

static void test_bad_sections(void)
{
    run_bad(bad_sections, LEN(bad_sections));
}

/* Upper bounds on counts and sizes, just inside and just outside. */
static void test_sizes(void)
{
    char *s;
    static const struct {
        const char *pre, *unit, *post;
        size_t ok, bad;
        const char *needle;
    } cases[] = {
        {"{'name':'", "a", "','triggers':[" TRIG "]}", 64, 65, "name: must be 1 to 64"},
        {"{'name':'a','triggers':[", TRIG ",", TRIG "]}", 63, 64,
         "triggers: must have 1 to 64 entries, got 65"},
        {"{'name':'a','triggers':[" TRIG "],'description':'", "d", "'}", 1024, 1025,
         "description: must be at most 1024 bytes long, got 1025 bytes"},
        {"{'name':'a','triggers':[" TRIG "],'version':'", "1", "'}", 64, 65,
         "version: must be 1 to 64"},
        {"{'name':'a','triggers':[" TRIG "],'handler':'", "h", "'}", 1024, 1025,
         "handler: must be at most 1024 bytes long, got 1025 bytes"},
        {"{'name':'a','triggers':[" TRIG "],'env':{'", "K", "':'v'}}", 128, 129,
         "env: invalid variable name \"KKKK"},
        {"{'name':'a','triggers':[" TRIG "],'env':{'K':'", "v", "'}}", 4096, 4097,
         "env.K: must be at most 4096 bytes long, got 4097 bytes"},
    };
    for (size_t i = 0; i < LEN(cases); i++) {
        s = wisp_test_repeat(cases[i].pre, cases[i].unit, cases[i].ok, cases[i].post);
        if (s)
            expect_ok(s);
        free(s);
        s = wisp_test_repeat(cases[i].pre, cases[i].unit, cases[i].bad, cases[i].post);
        if (s)
            expect_err(s, cases[i].needle);
        /* Long offending values are cut, so the line stays short. */
        CHECK(strlen(err) < 300);
        free(s);
    }
}

static void test_env_count(void)
{
    char doc[8192];
    for (int n = 128; n <= 129; n++) {
        size_t o = (size_t)snprintf(doc, sizeof(doc), "{'name':'a','triggers':[" TRIG "],'env':{");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(doc + o, sizeof(doc) - o, "%s'V%d':'%d'", i ? "," : "", i, i);
        (void)snprintf(doc + o, sizeof(doc) - o, "}}");
        if (n == 128) {
            struct wisp_fnspec *spec = parse_q(doc, NULL);
            CHECK(spec != NULL);
            if (spec) {
                CHECK_INT_EQ(spec->n_env, 128);
                CHECK_STR_EQ(wisp_fnspec_env(spec, "V127"), "127");
            }
            wisp_fnspec_destroy(spec);
        } else {
            expect_err(doc, "env: at most 128 variables allowed, got 129");
        }
    }
}

/* Bytes that are not JSON text: lengths, NULs, invalid UTF-8, control
 * characters. */
static void test_raw_bytes(void)
{
    static const struct {
        const char *bytes;
        size_t len;
        const char *needle;
    } cases[] = {
        {"{\"name\":\"a\0b\"}", 14, "(json): a NUL byte at line 1, column 11"},
        {"\0", 1, "(json): a NUL byte at line 1, column 1"},
        {"{\"name\":\"a\xff\"}", 14, "(json): invalid UTF-8 at line 1, column 11"},
        {"{\n\"name\":\"\xc3\"}", 13, "(json): invalid UTF-8 at line 2, column 9"},
        {"{\"name\":\"\xed\xa0\x80\"}", 15, "(json): invalid UTF-8"},
        {"{\"name\":\"\xc0\xaf\"}", 14, "(json): invalid UTF-8"},
        {"{\"name\":\"\xe2\x82", 11, "(json): invalid UTF-8"},
        {"{\"name\":\"a\x01\"}", 14, "(json): a control character at line 1, column 11"},
        {"{\x0b\"name\":1}", 11, "(json): a control character at line 1, column 2"},
        {"{\"name\":\"a\\u0000b\"}", 19,
         "(json): a \\u0000 escape (strings cannot contain NUL) "
         "at line 1, column 11"},
        {"{\"env\":{\"A\\u0000\":\"v\"}}", 22, "a \\u0000 escape"},
        {"{\"name\":\"\\ud800\"}", 16, "(json): invalid JSON"},
        {"", 0, "(json): empty document"},
    };
    for (size_t i = 0; i < LEN(cases); i++) {
        struct wisp_fnspec *spec = NULL;
        err[0] = '\0';
        int rc = wisp_fnspec_parse(cases[i].bytes, cases[i].len, "x.json", NULL, &spec, err,
                                   sizeof(err));
        CHECK_INT_EQ(rc, -EINVAL);
        CHECK(spec == NULL);
        CHECK_CONTAINS(err, cases[i].needle);
        CHECK(strchr(err, '\n') == NULL);
    }
    /* An escaped backslash before "u0000" is text, not an escape. */
    expect_ok("{'name':'a','description':'\\\\u0000','triggers':[" TRIG "]}");

    /* The length bounds the document: what follows it is not read. */
    const char *doc = "{\"name\":\"a\",\"triggers\":[{\"type\":\"mqtt\",\"topic\":\"t\"}]}garbage";
    struct wisp_fnspec *spec = NULL;
    CHECK_INT_EQ(wisp_fnspec_parse(doc, strlen(doc) - 7, NULL, NULL, &spec, err, sizeof(err)), 0);
    CHECK(spec != NULL);
    if (spec) {
        CHECK_STR_EQ(spec->origin, "function.json");
        CHECK(spec->dir == NULL);
    }
    wisp_fnspec_destroy(spec);
    spec = NULL;
    CHECK_INT_EQ(wisp_fnspec_parse(doc, strlen(doc) - 8, "o", NULL, &spec, err, sizeof(err)),
                 -EINVAL);
    CHECK_CONTAINS(err, "o:(json): invalid JSON at line 1, column");
    CHECK_INT_EQ(wisp_fnspec_parse(NULL, 0, "o", NULL, &spec, err, sizeof(err)), -EINVAL);

    /* Size bound, even for a document that is otherwise fine. */
    char *big =
        wisp_test_repeat("{\"name\":\"a\",\"triggers\":[{\"type\":\"mqtt\",\"topic\":\"t\"}]}", " ",
                         (size_t)WISP_MAX_SPEC_BYTES, "");
    if (big) {
        CHECK_INT_EQ(wisp_fnspec_parse(big, strlen(big), "o", NULL, &spec, err, sizeof(err)),
                     -EINVAL);
        CHECK_CONTAINS(err, "o:(json): ");
        CHECK_CONTAINS(err, "bytes, more than the limit of 262144");
        CHECK_INT_EQ(
            wisp_fnspec_parse(big, (size_t)WISP_MAX_SPEC_BYTES, "o", NULL, &spec, err, sizeof(err)),
            0);
        wisp_fnspec_destroy(spec);
    }
    free(big);
}

/* Error buffers of any size (or none) are safe; long values are cut. */
static void test_error_buffers(void)
{
    char small[8];
    struct wisp_fnspec *spec = NULL;
    const char *doc = "{\"name\":\"a\"}";
    memset(small, 'x', sizeof(small));
    CHECK_INT_EQ(wisp_fnspec_parse(doc, strlen(doc), "origin", NULL, &spec, small, sizeof(small)),
                 -EINVAL);
    CHECK_STR_EQ(small, "origin:");
    CHECK_INT_EQ(wisp_fnspec_parse(doc, strlen(doc), "origin", NULL, &spec, NULL, 0), -EINVAL);
    CHECK_INT_EQ(wisp_fnspec_parse(doc, strlen(doc), "origin", NULL, NULL, err, sizeof(err)),
                 -EINVAL);

    char *long_name = wisp_test_repeat("{'name':'", "\\u00e9", 500, "','triggers':[" TRIG "]}");
    if (long_name)
        expect_err(long_name, "\\xa9...\"");
    CHECK(strlen(err) < 400);
    free(long_name);
}

static void test_helpers(void)
{
    char buf[128];
    CHECK(wisp_trigger_kind_find("mqtt") == &wisp_trigger_mqtt);
    CHECK(wisp_trigger_kind_find("timer") == &wisp_trigger_timer);
    CHECK(wisp_trigger_kind_find("webhook") == NULL);
    CHECK(wisp_trigger_kind_find("") == NULL);
    CHECK(wisp_trigger_kind_find(NULL) == NULL);
    CHECK_STR_EQ(wisp_trigger_mqtt.name, "mqtt");

    wisp_fnspec_quote("a\"b\\c\n\x01\xff", 8, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "\"a\\\"b\\\\c\\x0a\\x01\\xff\"");
    wisp_fnspec_quote("abcdefghij", 10, buf, 12);
    CHECK(strlen(buf) < 12);
    CHECK(buf[0] == '"');
    wisp_fnspec_quote("abc", 3, buf, 4);
    CHECK_STR_EQ(buf, "");
    wisp_fnspec_describe(NULL, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "nothing");
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"defaults", test_defaults},
        {"full", test_full},
        {"boundaries_ok", test_boundaries_ok},
        {"bad_root", test_bad_root},
        {"bad_fields", test_bad_fields},
        {"bad_triggers", test_bad_triggers},
        {"bad_sections", test_bad_sections},
        /* Sizes, raw bytes, error buffers and the shared helpers. */
        {"sizes", test_sizes},
        {"env_count", test_env_count},
        {"raw_bytes", test_raw_bytes},
        {"error_buffers", test_error_buffers},
        {"helpers", test_helpers},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
