/* wispd: the Wisp gateway daemon. See README.md for the reference. */
#define WISP_LOG_MODULE "wispd"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "supervisor.h"

static void usage(FILE *out)
{
    (void)fprintf(out, "Usage: wispd --functions DIR [--broker URI] [--data DIR] [--config FILE]\n"
                       "             [--log-level debug|info|warn|error] [--SETTING VALUE ...]\n"
                       "\n"
                       "Runs the functions under DIR when their MQTT triggers fire.\n"
                       "A config file (JSON) holds the same settings; flags override it.\n"
                       "A true/false flag given alone means true (--cloud).\n"
                       "Signals: SIGTERM/SIGINT drain and exit 0, SIGHUP reloads DIR, SIGUSR1 logs "
                       "counters.\n\n");
    wisp_config_print_help(out);
}

/* Splits "--key=value" or "--key value"; returns the number of argv slots
 * used (1 or 2), or 0 when a value is missing. */
static int flag_value(int argc, char **argv, int i, char *key, size_t keycap, const char **value)
{
    const char *arg = argv[i] + 2;
    const char *eq = strchr(arg, '=');
    /* A key too long for keycap is cut; no setting is that long, so it is
     * then rejected as unknown. */
    if (eq) {
        (void)snprintf(key, keycap, "%.*s", (int)(eq - arg), arg);
        *value = eq + 1;
        return 1;
    }
    (void)snprintf(key, keycap, "%s", arg);
    /* A true/false flag alone ("--cloud") means true. */
    if (wisp_config_flag_is_bool(key) && (i + 1 >= argc || (strcmp(argv[i + 1], "true") != 0 &&
                                                            strcmp(argv[i + 1], "false") != 0))) {
        *value = "true";
        return 1;
    }
    if (i + 1 >= argc)
        return 0;
    *value = argv[i + 1];
    return 2;
}

static int parse_args(int argc, char **argv, struct wisp_config *cfg)
{
    char err[1024];
    /* The config file first, so that flags given anywhere override it. */
    for (int i = 1; i < argc; i++) {
        char key[64];
        const char *value = NULL;
        if (strncmp(argv[i], "--config", 8) != 0 || (argv[i][8] && argv[i][8] != '='))
            continue;
        if (!flag_value(argc, argv, i, key, sizeof(key), &value)) {
            (void)fprintf(stderr, "wispd: --config needs a FILE\n");
            return 2;
        }
        if (wisp_config_load_file(cfg, value, err, sizeof(err)) != 0) {
            (void)fprintf(stderr, "wispd: %s\n", err);
            return 2;
        }
    }
    for (int i = 1; i < argc;) {
        char key[64];
        const char *value = NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("wispd %s\n", WISP_VERSION);
            exit(0);
        }
        if (strncmp(argv[i], "--", 2) != 0) {
            (void)fprintf(stderr, "wispd: unexpected argument \"%s\" (see wispd --help)\n",
                          argv[i]);
            return 2;
        }
        int used = flag_value(argc, argv, i, key, sizeof(key), &value);
        if (!used) {
            (void)fprintf(stderr, "wispd: --%s needs a value\n", key);
            return 2;
        }
        if (strcmp(key, "config") != 0) {
            if (!wisp_config_is_flag(key)) {
                (void)fprintf(stderr, "wispd: unknown option --%s (see wispd --help)\n", key);
                return 2;
            }
            if (wisp_config_set(cfg, key, value, err, sizeof(err)) != 0) {
                (void)fprintf(stderr, "wispd: --%s: %s\n", key, err);
                return 2;
            }
        }
        i += used;
    }
    if (wisp_config_finish(cfg, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wispd: %s\n", err);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct wisp_config cfg;
    wisp_config_defaults(&cfg);
    int rc = parse_args(argc, argv, &cfg);
    if (rc == 0) {
        wisp_log_threshold = wisp_log_level_parse(cfg.log_level);
        rc = wisp_supervisor_run(&cfg);
    }
    wisp_config_fini(&cfg);
    return rc;
}
