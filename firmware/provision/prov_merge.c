/*
 * What wispd.json, device.json and the registration request hold after
 * provisioning. The JSON files are merged: keys the provisioning file does
 * not set keep the values the gateway already has. wispd.json is checked
 * with wispd's own config parser (runtime/src/config.c), so a file it
 * would refuse never replaces one it accepts.
 */
#include "prov.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

/* parent[key] = item, in place of an existing value (keeping its position)
 * or appended. Takes over item, also on failure. */
static bool set(cJSON *parent, const char *key, cJSON *item)
{
    if (!item)
        return false;
    bool ok = cJSON_GetObjectItemCaseSensitive(parent, key)
                  ? cJSON_ReplaceItemInObjectCaseSensitive(parent, key, item)
                  : cJSON_AddItemToObject(parent, key, item);
    if (!ok)
        cJSON_Delete(item);
    return ok;
}

static bool set_str(cJSON *parent, const char *key, const char *value)
{
    return set(parent, key, cJSON_CreateString(value));
}

/* parent[key] as an object, made when absent. */
static cJSON *object(cJSON *parent, const char *key)
{
    cJSON *o = cJSON_GetObjectItemCaseSensitive(parent, key);
    if (cJSON_IsObject(o))
        return o;
    o = cJSON_CreateObject();
    return set(parent, key, o) ? o : NULL;
}

static bool set_path(cJSON *parent, const char *key, const char *dir, const char *name)
{
    char *path = name ? wisp_path_join(dir, name) : wisp_strndup(dir, strlen(dir));
    bool ok = path && set_str(parent, key, path);
    free(path);
    return ok;
}

cJSON *wisp_prov_merge_config(const cJSON *existing, const struct wisp_prov_input *in,
                              const struct wisp_prov_opts *o, const char *device_id)
{
    cJSON *c = existing ? cJSON_Duplicate(existing, 1) : cJSON_CreateObject();
    if (!c)
        return NULL;
    bool ok = true;
    /* wispd needs both; the defaults live under the state directory. */
    if (!cJSON_GetObjectItemCaseSensitive(c, "functions"))
        ok = set_path(c, "functions", o->state, "functions");
    if (ok && !cJSON_GetObjectItemCaseSensitive(c, "data"))
        ok = set_path(c, "data", o->state, NULL);
    ok = ok && set_str(c, "broker", in->broker) && set_str(c, "device", device_id);
    if (ok && (in->username || in->ca)) {
        cJSON *mqtt = object(c, "mqtt");
        ok = mqtt != NULL;
        if (ok && in->username)
            ok = set_str(mqtt, "username", in->username);
        if (ok && in->password)
            ok = set_str(mqtt, "password", in->password);
        if (ok && in->ca) {
            cJSON *tls = object(mqtt, "tls");
            ok = tls && set_path(tls, "ca", o->etc, "ca.crt");
        }
    }
    /* A device given a fleet token or trusted keys is managed by the control
     * plane: wispd syncs with it. */
    if (ok && (in->fleet_token || in->has_trusted)) {
        cJSON *cloud = object(c, "cloud");
        ok = cloud && set(cloud, "enabled", cJSON_CreateTrue()) &&
             set_path(cloud, "identity", o->etc, "device.json") &&
             set_path(cloud, "trust", o->etc, "trust");
    }
    if (!ok) {
        wisp_prov_json_delete(c);
        return NULL;
    }
    return c;
}

cJSON *wisp_prov_merge_device(const cJSON *existing, const struct wisp_prov_input *in,
                              const char *device_id)
{
    cJSON *d = existing ? cJSON_Duplicate(existing, 1) : cJSON_CreateObject();
    if (!d)
        return NULL;
    bool ok = set_str(d, "device_id", device_id);
    if (ok && in->labels)
        ok = set(d, "labels", cJSON_Duplicate(in->labels, 1));
    else if (ok && !cJSON_GetObjectItemCaseSensitive(d, "labels"))
        ok = set(d, "labels", cJSON_CreateObject());
    if (ok && in->fleet_token)
        ok = set_str(d, "fleet_token", in->fleet_token);
    if (!ok) {
        wisp_prov_json_delete(d);
        return NULL;
    }
    return d;
}

cJSON *wisp_prov_register_request(const cJSON *device, const char *pub_pem)
{
    const cJSON *token = cJSON_GetObjectItemCaseSensitive(device, "fleet_token");
    cJSON *r = cJSON_CreateObject();
    bool ok =
        r && set_str(r, "format", "wisp-register/1") &&
        set(r, "device_id",
            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(device, "device_id"), 1)) &&
        set_str(r, "public_key", pub_pem) &&
        set(r, "labels", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(device, "labels"), 1));
    if (ok && token)
        ok = set(r, "fleet_token", cJSON_Duplicate(token, 1));
    if (!ok) {
        wisp_prov_json_delete(r);
        return NULL;
    }
    return r;
}

static void wipe_strings(cJSON *node)
{
    for (; node; node = node->next) {
        if (cJSON_IsString(node))
            explicit_bzero(node->valuestring, strlen(node->valuestring));
        wipe_strings(node->child);
    }
}

void wisp_prov_json_delete(cJSON *tree)
{
    if (!tree)
        return;
    wipe_strings(tree);
    cJSON_Delete(tree);
}

const char *wisp_prov_json_duplicate(const cJSON *node)
{
    for (const cJSON *a = node ? node->child : NULL; a; a = a->next) {
        if (cJSON_IsObject(node)) {
            for (const cJSON *b = a->next; b; b = b->next) {
                if (strcmp(a->string, b->string) == 0)
                    return a->string;
            }
        }
        const char *inner = wisp_prov_json_duplicate(a);
        if (inner)
            return inner;
    }
    return NULL;
}

int wisp_prov_check_config(const char *path, const char *shown, bool finish, char *err,
                           size_t errlen)
{
    struct wisp_config c;
    char msg[1024] = "";
    wisp_config_defaults(&c);
    int rc = wisp_config_load_file(&c, path, msg, sizeof(msg));
    if (!rc && finish)
        rc = wisp_config_finish(&c, msg, sizeof(msg));
    wisp_config_fini(&c);
    if (!rc)
        return 0;
    /* The loader's messages start with the path it read; the cross-field
     * checks name only the key. Either way the message names `shown`. */
    size_t n = strlen(path);
    const char *rest = strncmp(msg, path, n) == 0 ? msg + n : NULL;
    if (rest)
        return wisp_errf(err, errlen, -EINVAL, "%s%s", shown, rest);
    return wisp_errf(err, errlen, -EINVAL, "%s:%s", shown, msg);
}

/* Writes the text to a temp file in $TMPDIR (or /tmp) for the check, when
 * the kernel has no memfd. */
static int check_via_tmp(const char *text, size_t len, const char *shown, char *err, size_t errlen)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    (void)snprintf(path, sizeof(path), "%s/wisp-provision-check.XXXXXX",
                   dir && *dir ? dir : "/tmp");
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return wisp_errf(err, errlen, -errno, "cannot check %s: temp file: %s", shown,
                         strerror(errno));
    bool ok = write(fd, text, len) == (ssize_t)len;
    (void)close(fd);
    int rc = ok ? wisp_prov_check_config(path, shown, true, err, errlen)
                : wisp_errf(err, errlen, -EIO, "cannot check %s: temp file", shown);
    (void)unlink(path);
    return rc;
}

int wisp_prov_check_config_text(const char *text, size_t len, const char *shown, char *err,
                                size_t errlen)
{
    /* An anonymous memory file keeps the secrets in it off every disk. */
    int fd = memfd_create("wispd.json", MFD_CLOEXEC);
    if (fd < 0)
        return check_via_tmp(text, len, shown, err, errlen);
    char path[64];
    (void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int rc;
    if (write(fd, text, len) != (ssize_t)len)
        rc = wisp_errf(err, errlen, -EIO, "cannot check %s: memfd write failed", shown);
    else if (access(path, R_OK) != 0) /* /proc is not mounted */
        rc = check_via_tmp(text, len, shown, err, errlen);
    else
        rc = wisp_prov_check_config(path, shown, true, err, errlen);
    (void)close(fd);
    return rc;
}
