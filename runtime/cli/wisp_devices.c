/* wisp sensors and wisp gpio: the devices of a gateway's config, read live. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "devices.h"
#include "gpio.h"
#include "util.h"
#include "wisp_cli.h"

#define DEFAULT_CONFIG "/etc/wisp/wispd.json"

static void devices_usage(FILE *out, const char *cmd)
{
    (void)fprintf(out,
                  "Usage: wisp %s [--config FILE] [--sysfs-root DIR] [--dev-root DIR]\n"
                  "\n"
                  "  --config FILE      wispd's config (default %s when it exists)\n"
                  "  --sysfs-root DIR   overrides ports.sysfs_root\n"
                  "  --dev-root DIR     overrides ports.dev_root\n"
                  "\n",
                  cmd, DEFAULT_CONFIG);
    if (strcmp(cmd, "sensors") == 0)
        (void)fprintf(out, "Lists the configured sensors with a reading taken now. Exit status: 0 "
                           "every sensor read, 1 some did not, 2 bad usage or config.\n");
    else
        (void)fprintf(out, "Lists GPIO chips (the config's and every gpiochipN under the dev "
                           "root) and their lines. Exit status: 0, 1 a chip could not be read, "
                           "2 bad usage or config.\n");
}

/* Parses the options into cfg; 0, 1 (help printed) or 2. */
static int load_config(int argc, char **argv, const char *cmd, struct wisp_config *cfg)
{
    const char *path = NULL, *sysfs = NULL, *dev = NULL;
    char err[1024];
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            devices_usage(stdout, cmd);
            return 1;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--sysfs-root") == 0 && i + 1 < argc) {
            sysfs = argv[++i];
        } else if (strcmp(argv[i], "--dev-root") == 0 && i + 1 < argc) {
            dev = argv[++i];
        } else {
            (void)fprintf(stderr, "wisp %s: unexpected argument \"%s\"\n\n", cmd, argv[i]);
            devices_usage(stderr, cmd);
            return 2;
        }
    }
    wisp_config_defaults(cfg);
    if (!path && access(DEFAULT_CONFIG, R_OK) == 0)
        path = DEFAULT_CONFIG;
    if ((path && wisp_config_load_file(cfg, path, err, sizeof(err)) != 0) ||
        (sysfs && wisp_config_set(cfg, "sysfs-root", sysfs, err, sizeof(err)) != 0) ||
        (dev && wisp_config_set(cfg, "dev-root", dev, err, sizeof(err)) != 0)) {
        (void)fprintf(stderr, "wisp %s: %s\n", cmd, err);
        return 2;
    }
    return 0;
}

int wisp_cmd_sensors(int argc, char **argv)
{
    struct wisp_config cfg;
    struct wisp_devices *d = NULL;
    char err[1024];
    int rc = load_config(argc, argv, "sensors", &cfg);
    if (rc != 0) {
        wisp_config_fini(&cfg);
        return rc == 1 ? 0 : 2;
    }
    if (wisp_devices_open(&cfg, NULL, NULL, &d, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp sensors: %s\n", err);
        wisp_config_fini(&cfg);
        return 2;
    }
    size_t n = wisp_devices_sensor_count(d);
    if (n == 0)
        printf("no sensors configured (add a \"sensors\" section to %s)\n",
               cfg.origin ? cfg.origin : "wispd's config");
    else
        printf("%-24s %-8s %16s  %-8s %s\n", "SENSOR", "PORT", "VALUE", "UNIT", "TIME");
    int bad = 0;
    const cJSON *it = cfg.sensors ? cfg.sensors->child : NULL;
    for (size_t i = 0; i < n; i++, it = it ? it->next : NULL) {
        struct wisp_devcall_reading r;
        const cJSON *port = it ? cJSON_GetObjectItemCaseSensitive(it, "port") : NULL;
        const char *pname = "?";
        if (port && cJSON_IsString(port))
            pname = port->valuestring;
        if (wisp_devices_sensor_read(d, i, &r, err, sizeof(err)) != 0) {
            printf("%-24s %-8s %16s  %-8s error: %s\n", wisp_devices_sensor_name(d, i), pname, "-",
                   "-", err);
            bad = 1;
            continue;
        }
        char when[40];
        wisp_rfc3339(r.time_ns, when, sizeof(when));
        /* Pad the unit by characters, not bytes ("°C" is three bytes). */
        int width = 8;
        for (const unsigned char *u = (const unsigned char *)r.unit; *u; u++)
            width += (*u & 0xC0) == 0x80;
        printf("%-24s %-8s %16.6g  %-*s %s\n", wisp_devices_sensor_name(d, i), pname, r.value,
               width, r.unit, when);
    }
    wisp_devices_close(d);
    wisp_config_fini(&cfg);
    return bad;
}

static int list_chip(const cJSON *settings, const char *name, const struct wisp_port_env *env)
{
    struct wisp_gpio_chip *c;
    struct wisp_gpio_chip_info ci;
    char err[512];
    if (wisp_gpio_chip_open(settings, name, env, &c, err, sizeof(err)) != 0) {
        printf("%s: error: %s\n", name, err);
        return 1;
    }
    if (wisp_gpio_chip_info(c, &ci, err, sizeof(err)) != 0) {
        printf("%s: error: %s\n", name, err);
        wisp_gpio_chip_close(c);
        return 1;
    }
    printf("%s [%s] %u lines%s\n", name, ci.label, (unsigned)ci.lines,
           settings ? " (from the config)" : "");
    int bad = 0;
    for (uint32_t l = 0; l < ci.lines; l++) {
        struct wisp_gpio_line_info li;
        if (wisp_gpio_line_info(c, l, &li, err, sizeof(err)) != 0) {
            printf("  line %3u: error: %s\n", (unsigned)l, err);
            bad = 1;
            continue;
        }
        printf("  line %3u: %-16s %-6s %s%s%s\n", (unsigned)l, li.name[0] ? li.name : "unnamed",
               li.output ? "output" : "input", li.used ? "used by \"" : "unused",
               li.used ? li.consumer : "", li.used ? "\"" : "");
    }
    wisp_gpio_chip_close(c);
    return bad;
}

static int cmp_names(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x, y); /* gpiochip2 before gpiochip10 */
}

int wisp_cmd_gpio(int argc, char **argv)
{
    struct wisp_config cfg;
    int rc = load_config(argc, argv, "gpio", &cfg);
    if (rc != 0) {
        wisp_config_fini(&cfg);
        return rc == 1 ? 0 : 2;
    }
    struct wisp_port_env env = {.sysfs_root = cfg.sysfs_root, .dev_root = cfg.dev_root};
    int bad = 0;
    size_t shown = 0;
    for (const cJSON *it = cfg.gpio ? cfg.gpio->child : NULL; it; it = it->next, shown++)
        bad |= list_chip(it, it->string, &env);
    char **names = NULL;
    size_t n = 0, keep = 0;
    (void)wisp_list_dir(cfg.dev_root, NULL, true, &names, &n);
    for (size_t i = 0; i < n; i++) {
        const char *c = names[i];
        bool chip = strncmp(c, "gpiochip", 8) == 0 && c[8] &&
                    strspn(c + 8, "0123456789") == strlen(c + 8) &&
                    !(cfg.gpio && cJSON_GetObjectItemCaseSensitive(cfg.gpio, c));
        if (chip)
            names[keep++] = names[i];
        else
            free(names[i]);
    }
    if (keep > 1)
        qsort(names, keep, sizeof(names[0]), cmp_names);
    for (size_t i = 0; i < keep; i++, shown++) {
        bad |= list_chip(NULL, names[i], &env);
        free(names[i]);
    }
    free(names);
    if (!shown)
        printf("no GPIO chips: none under %s and none in the config\n", cfg.dev_root);
    wisp_config_fini(&cfg);
    return bad;
}
