/* wispd's settings (runtime/src/config.c): defaults, flags and dotted keys,
 * the JSON config file and the cross-field checks of wisp_config_finish. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "testutil.h"

static char err[1024];

/* Loads text as a config file into c; returns the result, err says why. */
static int load_text(struct wisp_config *c, const char *text, char *path, size_t cap)
{
    if (!wisp_test_temp_file(path, cap, "config", text))
        return -EIO;
    err[0] = '\0';
    int rc = wisp_config_load_file(c, path, err, sizeof(err));
    CHECK(unlink(path) == 0);
    return rc;
}

static void test_defaults(void)
{
    struct wisp_config c;
    wisp_config_defaults(&c);
    CHECK(c.functions == NULL);
    CHECK_STR_EQ(c.broker, "tcp://127.0.0.1:1883");
    CHECK_STR_EQ(c.data, "/var/lib/wisp");
    CHECK(c.device == NULL);
    CHECK_STR_EQ(c.log_level, "info");
    CHECK(c.client_id == NULL);
    CHECK_INT_EQ(c.mqtt_version, 5);
    CHECK_INT_EQ(c.keepalive_s, 30);
    CHECK(c.clean_start);
    CHECK(c.username == NULL);
    CHECK(c.password == NULL);
    CHECK_INT_EQ(c.reconnect_min_ms, 250);
    CHECK_INT_EQ(c.reconnect_max_ms, 30000);
    CHECK_INT_EQ(c.max_buffered, 10000);
    CHECK(c.tls_ca == NULL);
    CHECK(c.tls_cert == NULL);
    CHECK(c.tls_key == NULL);
    CHECK(!c.tls_insecure);
    CHECK_INT_EQ(c.executors_max, 16);
    CHECK_INT_EQ(c.idle_timeout_ms, 60000);
    CHECK_INT_EQ(c.queue_max, 10000);
    CHECK_INT_EQ(c.max_payload_kb, 1024);
    CHECK_INT_EQ(c.shutdown_timeout_ms, 10000);
    wisp_config_fini(&c);
    CHECK(c.broker == NULL);
    CHECK(c.data == NULL);
    CHECK(c.log_level == NULL);
}

static void test_set_by_flag_and_key(void)
{
    struct wisp_config c;
    wisp_config_defaults(&c);
    /* Flags (without dashes). */
    CHECK_INT_EQ(wisp_config_set(&c, "broker", "mqtts://b:8883", err, sizeof(err)), 0);
    CHECK_STR_EQ(c.broker, "mqtts://b:8883");
    CHECK_INT_EQ(wisp_config_set(&c, "log-level", "debug", err, sizeof(err)), 0);
    CHECK_STR_EQ(c.log_level, "debug");
    CHECK_INT_EQ(wisp_config_set(&c, "max-executors", "4", err, sizeof(err)), 0);
    CHECK_INT_EQ(c.executors_max, 4);
    CHECK_INT_EQ(wisp_config_set(&c, "tls-ca", "/etc/ca.pem", err, sizeof(err)), 0);
    CHECK_STR_EQ(c.tls_ca, "/etc/ca.pem");
    CHECK_INT_EQ(wisp_config_set(&c, "client-id", "me", err, sizeof(err)), 0);
    CHECK_STR_EQ(c.client_id, "me");
    /* Dotted keys, including settings that have no flag. */
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.version", "3", err, sizeof(err)), 0);
    CHECK_INT_EQ(c.mqtt_version, 3);
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.keepalive_s", "3600", err, sizeof(err)), 0);
    CHECK_INT_EQ(c.keepalive_s, 3600);
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.clean_start", "false", err, sizeof(err)), 0);
    CHECK(!c.clean_start);
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.tls.insecure", "true", err, sizeof(err)), 0);
    CHECK(c.tls_insecure);
    CHECK_INT_EQ(wisp_config_set(&c, "executors.idle_timeout_ms", "0", err, sizeof(err)), 0);
    CHECK_INT_EQ(c.idle_timeout_ms, 0);
    CHECK_INT_EQ(wisp_config_set(&c, "executors.idle_timeout_ms", "2147483647", err, sizeof(err)),
                 0);
    CHECK_INT_EQ(c.idle_timeout_ms, 2147483647);
    CHECK_INT_EQ(wisp_config_set(&c, "log_level", "warn", err, sizeof(err)), 0);
    CHECK_STR_EQ(c.log_level, "warn");
    /* A string set twice replaces (and frees) the first value. */
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.password", "one", err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.password", "two", err, sizeof(err)), 0);
    CHECK_STR_EQ(c.password, "two");

    CHECK(wisp_config_is_flag("broker"));
    CHECK(wisp_config_is_flag("idle-timeout-ms"));
    CHECK(!wisp_config_is_flag("mqtt.version"));
    CHECK(!wisp_config_is_flag("keepalive"));
    CHECK(!wisp_config_is_flag("--broker"));
    wisp_config_fini(&c);
    CHECK(c.password == NULL);
    CHECK(c.tls_ca == NULL);
}

static void test_set_bad_values(void)
{
    struct wisp_config c;
    wisp_config_defaults(&c);
    static const char *const bad_ints[] = {"0",   "1025", "-1",  "12x",
                                           "x12", "",     "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad_ints) / sizeof(bad_ints[0]); i++) {
        err[0] = '\0';
        CHECK_INT_EQ(wisp_config_set(&c, "max-executors", bad_ints[i], err, sizeof(err)), -EINVAL);
        CHECK_CONTAINS(err, "executors.max: must be a whole number from 1 to 1024, got \"");
        CHECK_CONTAINS(err, bad_ints[i]);
        CHECK_INT_EQ(c.executors_max, 16); /* unchanged */
    }
    err[0] = '\0';
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.version", "6", err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "from 3 to 5");
    CHECK_INT_EQ(c.mqtt_version, 5);

    static const char *const bad_bools[] = {"yes", "1", "TRUE", "", "truex"};
    for (size_t i = 0; i < sizeof(bad_bools) / sizeof(bad_bools[0]); i++) {
        err[0] = '\0';
        CHECK_INT_EQ(wisp_config_set(&c, "mqtt.clean_start", bad_bools[i], err, sizeof(err)),
                     -EINVAL);
        CHECK_CONTAINS(err, "mqtt.clean_start: must be true or false");
        CHECK(c.clean_start);
    }

    err[0] = '\0';
    CHECK_INT_EQ(wisp_config_set(&c, "nope", "1", err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, "unknown setting \"nope\"");
    /* Keys are exact: no dashes in dotted keys, no dots in flags. */
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.clean-start", "true", err, sizeof(err)), -EINVAL);
    CHECK_INT_EQ(wisp_config_set(&c, "--broker", "x", err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(c.broker, "tcp://127.0.0.1:1883");
    /* A NULL error buffer is allowed. */
    CHECK_INT_EQ(wisp_config_set(&c, "nope", "1", NULL, 0), -EINVAL);
    wisp_config_fini(&c);
}

static void test_load_file(void)
{
    struct wisp_config c;
    char path[64];
    wisp_config_defaults(&c);
    int rc = load_text(&c,
                       "{\n"
                       "  \"functions\": \"/srv/fns\",\n"
                       "  \"broker\": \"ssl://h:8883\",\n"
                       "  \"log_level\": \"error\",\n"
                       "  \"mqtt\": {\"version\": 3, \"clean_start\": false,\n"
                       "           \"tls\": {\"ca\": \"/etc/ca.pem\", \"insecure\": true},\n"
                       "           \"reconnect_max_ms\": 5000},\n"
                       "  \"executors\": {\"max\": 4, \"idle_timeout_ms\": 0},\n"
                       "  \"events\": {\"max_payload_kb\": 64},\n"
                       "  \"shutdown_timeout_ms\": 1500\n"
                       "}\n",
                       path, sizeof(path));
    CHECK_INT_EQ(rc, 0);
    if (rc)
        (void)fprintf(stderr, "error: %s\n", err);
    CHECK_STR_EQ(c.functions, "/srv/fns");
    CHECK_STR_EQ(c.broker, "ssl://h:8883");
    CHECK_STR_EQ(c.log_level, "error");
    CHECK_INT_EQ(c.mqtt_version, 3);
    CHECK(!c.clean_start);
    CHECK_STR_EQ(c.tls_ca, "/etc/ca.pem");
    CHECK(c.tls_insecure);
    CHECK_INT_EQ(c.reconnect_max_ms, 5000);
    CHECK_INT_EQ(c.executors_max, 4);
    CHECK_INT_EQ(c.idle_timeout_ms, 0);
    CHECK_INT_EQ(c.max_payload_kb, 64);
    CHECK_INT_EQ(c.shutdown_timeout_ms, 1500);
    /* Untouched settings keep their defaults. */
    CHECK_INT_EQ(c.keepalive_s, 30);
    CHECK_STR_EQ(c.data, "/var/lib/wisp");

    /* Flags applied after the file override it. */
    CHECK_INT_EQ(wisp_config_set(&c, "max-executors", "8", err, sizeof(err)), 0);
    CHECK_INT_EQ(c.executors_max, 8);
    /* An empty object changes nothing. */
    CHECK_INT_EQ(load_text(&c, "{}", path, sizeof(path)), 0);
    CHECK_INT_EQ(c.executors_max, 8);
    wisp_config_fini(&c);
}

static void test_load_file_errors(void)
{
    struct wisp_config c;
    char path[64], want[256];
    wisp_config_defaults(&c);

    CHECK_INT_EQ(load_text(&c, "{\"mqtt\": {\"tls\": {\"cafile\": \"/x\"}}}", path, sizeof(path)),
                 -EINVAL);
    (void)snprintf(want, sizeof(want), "%s:mqtt.tls.cafile: unknown setting", path);
    CHECK_CONTAINS(err, want);
    CHECK(c.tls_ca == NULL);

    CHECK_INT_EQ(load_text(&c, "{\"mqtt\": {\"version\": \"5\"}}", path, sizeof(path)), -EINVAL);
    (void)snprintf(want, sizeof(want), "%s:mqtt.version: must be a whole number", path);
    CHECK_CONTAINS(err, want);

    CHECK_INT_EQ(load_text(&c, "{\"mqtt\": {\"version\": 4.5}}", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "mqtt.version: must be a whole number");
    CHECK_INT_EQ(c.mqtt_version, 5);

    CHECK_INT_EQ(load_text(&c, "{\"broker\": 1883}", path, sizeof(path)), -EINVAL);
    (void)snprintf(want, sizeof(want), "%s:broker: must be a string", path);
    CHECK_CONTAINS(err, want);
    CHECK_STR_EQ(c.broker, "tcp://127.0.0.1:1883");

    CHECK_INT_EQ(load_text(&c, "{\"broker\": null}", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "broker: must be a string");

    CHECK_INT_EQ(load_text(&c, "{\"mqtt\": {\"clean_start\": \"true\"}}", path, sizeof(path)),
                 -EINVAL);
    CHECK_CONTAINS(err, "mqtt.clean_start: must be true or false");
    CHECK(c.clean_start);

    CHECK_INT_EQ(load_text(&c, "{\"executors\": {\"max\": 0}}", path, sizeof(path)), -EINVAL);
    (void)snprintf(want, sizeof(want),
                   "%s:executors.max: must be a whole number from 1 to 1024, got \"0\"", path);
    CHECK_CONTAINS(err, want);
    CHECK_INT_EQ(c.executors_max, 16);

    /* Far out of range: rejected, never converted as if it were a long. */
    CHECK_INT_EQ(load_text(&c, "{\"executors\": {\"max\": 1e30}}", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "executors.max: must be");
    CHECK_INT_EQ(load_text(&c, "{\"executors\": {\"max\": -1e30}}", path, sizeof(path)), -EINVAL);
    CHECK_INT_EQ(c.executors_max, 16);

    /* An array is not a section. */
    CHECK_INT_EQ(load_text(&c, "{\"mqtt\": [1]}", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "mqtt: unknown setting");

    CHECK_INT_EQ(load_text(&c, "{\n  \"broker\": \"x\",\n  oops\n}\n", path, sizeof(path)),
                 -EINVAL);
    (void)snprintf(want, sizeof(want), "%s:3: invalid JSON", path);
    CHECK_CONTAINS(err, want);

    CHECK_INT_EQ(load_text(&c, "", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "invalid JSON");

    CHECK_INT_EQ(load_text(&c, "[1, 2]", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "the config must be a JSON object");
    CHECK_INT_EQ(load_text(&c, "\"broker\"", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "the config must be a JSON object");

    err[0] = '\0';
    CHECK_INT_EQ(wisp_config_load_file(&c, "/nonexistent/wisp/config.json", err, sizeof(err)),
                 -ENOENT);
    CHECK_CONTAINS(err, "/nonexistent/wisp/config.json: cannot read");
    CHECK_INT_EQ(wisp_config_load_file(&c, "/tmp", err, sizeof(err)), -EISDIR);

    /* Nothing above changed a setting. */
    CHECK_STR_EQ(c.broker, "tcp://127.0.0.1:1883");
    wisp_config_fini(&c);
}

/* A setting that is a value, not a section, given as an object is a bad
 * value like any other (README: "bad values are errors naming the key"). */
static void test_load_file_object_for_value(void)
{
    struct wisp_config c;
    char path[64], want[256];
    wisp_config_defaults(&c);
    CHECK_INT_EQ(load_text(&c, "{\"broker\": {}}", path, sizeof(path)), -EINVAL);
    (void)snprintf(want, sizeof(want), "%s:broker: must be a string", path);
    CHECK_CONTAINS(err, want);
    CHECK_INT_EQ(load_text(&c, "{\"mqtt\": {\"version\": {}}}", path, sizeof(path)), -EINVAL);
    CHECK_CONTAINS(err, "mqtt.version: must be a whole number");
    wisp_config_fini(&c);
}

/* Defaults, functions set, and key=value when key is given. */
static void config_with(struct wisp_config *c, const char *key, const char *value)
{
    wisp_config_defaults(c);
    CHECK_INT_EQ(wisp_config_set(c, "functions", "/srv/fns", err, sizeof(err)), 0);
    if (key)
        CHECK_INT_EQ(wisp_config_set(c, key, value, err, sizeof(err)), 0);
}

/* wisp_config_finish must refuse c with an error containing want. */
static void finish_refuses(struct wisp_config *c, const char *want)
{
    err[0] = '\0';
    CHECK_INT_EQ(wisp_config_finish(c, err, sizeof(err)), -EINVAL);
    CHECK_CONTAINS(err, want);
}

static void test_finish(void)
{
    struct wisp_config c;
    char host[256] = "";

    /* Device defaults to the host name, client id to "wisp-<device>". */
    config_with(&c, NULL, NULL);
    CHECK_INT_EQ(wisp_config_finish(&c, err, sizeof(err)), 0);
    CHECK(gethostname(host, sizeof(host) - 1) == 0);
    CHECK_STR_EQ(c.device, host);
    char want[300];
    (void)snprintf(want, sizeof(want), "wisp-%s", host);
    CHECK_STR_EQ(c.client_id, want);
    wisp_config_fini(&c);
    CHECK(c.device == NULL);
    CHECK(c.client_id == NULL);
    CHECK(c.functions == NULL);

    config_with(&c, "device", "gw-7");
    CHECK_INT_EQ(wisp_config_finish(&c, err, sizeof(err)), 0);
    CHECK_STR_EQ(c.device, "gw-7");
    CHECK_STR_EQ(c.client_id, "wisp-gw-7");
    wisp_config_fini(&c);

    /* An explicit client id is kept. */
    config_with(&c, "device", "gw-7");
    CHECK_INT_EQ(wisp_config_set(&c, "client-id", "custom", err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_config_finish(&c, err, sizeof(err)), 0);
    CHECK_STR_EQ(c.client_id, "custom");
    wisp_config_fini(&c);

    wisp_config_defaults(&c);
    finish_refuses(&c, "functions: required");
    wisp_config_fini(&c);

    config_with(&c, "mqtt.reconnect_min_ms", "5000");
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.reconnect_max_ms", "1000", err, sizeof(err)), 0);
    finish_refuses(&c, "mqtt.reconnect_min_ms: must not exceed mqtt.reconnect_max_ms");
    /* Equal is fine. */
    CHECK_INT_EQ(wisp_config_set(&c, "mqtt.reconnect_max_ms", "5000", err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_config_finish(&c, err, sizeof(err)), 0);
    wisp_config_fini(&c);

    config_with(&c, "mqtt-version", "4");
    finish_refuses(&c, "mqtt.version: must be 3 or 5, got 4");
    wisp_config_fini(&c);

    config_with(&c, "log-level", "loud");
    finish_refuses(&c, "log_level: must be debug, info, warn or error, got \"loud\"");
    wisp_config_fini(&c);
}

static void test_help(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (!f)
        return;
    wisp_config_print_help(f);
    CHECK(fclose(f) == 0);
    CHECK_CONTAINS(text, "mqtt.tls.ca");
    CHECK_CONTAINS(text, "--tls-ca");
    CHECK_CONTAINS(text, "executors.idle_timeout_ms");
    CHECK_CONTAINS(text, "tcp://127.0.0.1:1883");
    free(text);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"defaults", test_defaults},
        {"set_by_flag_and_key", test_set_by_flag_and_key},
        {"set_bad_values", test_set_bad_values},
        {"load_file", test_load_file},
        {"load_file_errors", test_load_file_errors},
        {"load_file_object_for_value", test_load_file_object_for_value},
        {"finish", test_finish},
        {"help", test_help},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
