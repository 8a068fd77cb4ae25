/*
 * The plan: every file and directory the provisioning owns, what it
 * should hold, and how that differs from what is there now. Building it
 * reads and checks everything (the existing files included) and writes
 * nothing, so a problem found here leaves the gateway as it was.
 */
#include "prov.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static void item_free(struct wisp_prov_item *it)
{
    if (it->secret && it->data)
        explicit_bzero(it->data, it->len);
    free(it->data);
    free(it->path);
}

void wisp_prov_plan_fini(struct wisp_prov_plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        item_free(&p->items[i]);
    free(p->items);
    free(p->device_id);
    memset(p, 0, sizeof(*p));
}

int wisp_prov_plan_add(struct wisp_prov_plan *p, enum wisp_prov_op op, char *path, char *data,
                       size_t len, mode_t mode, const char *what)
{
    struct wisp_prov_item it = {
        .op = op, .path = path, .data = data, .len = len, .mode = mode, .what = what};
    if (!path || (op == WISP_PROV_WRITE && !data && len)) {
        item_free(&it);
        return -ENOMEM;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct wisp_prov_item *v = realloc(p->items, cap * sizeof(*v));
        if (!v) {
            item_free(&it);
            return -ENOMEM;
        }
        p->items = v;
        p->cap = cap;
    }
    p->items[p->n++] = it;
    return 0;
}

size_t wisp_prov_plan_changes(const struct wisp_prov_plan *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++)
        n += p->items[i].change != WISP_PROV_SAME;
    return n;
}

static struct wisp_prov_item *last(struct wisp_prov_plan *p)
{
    return &p->items[p->n - 1];
}

static int add_file(struct wisp_prov_plan *p, const char *dir, const char *name, char *data,
                    size_t len, mode_t mode, const char *what)
{
    return wisp_prov_plan_add(p, WISP_PROV_WRITE, wisp_path_join(dir, name), data, len, mode, what);
}

static int add_text(struct wisp_prov_plan *p, const char *dir, const char *name, const char *text,
                    mode_t mode, const char *what)
{
    if (!text)
        return -EINVAL;
    return add_file(p, dir, name, wisp_strndup(text, strlen(text)), strlen(text), mode, what);
}

/* Adds tree as JSON text (with a final newline); deletes tree. */
static int add_json(struct wisp_prov_plan *p, const char *dir, const char *name, cJSON *tree,
                    mode_t mode, const char *what)
{
    char *text = tree ? cJSON_Print(tree) : NULL;
    wisp_prov_json_delete(tree);
    size_t len = text ? strlen(text) : 0;
    char *data = text ? realloc(text, len + 2) : NULL;
    if (!data) {
        if (text)
            explicit_bzero(text, len);
        free(text);
        return -ENOMEM;
    }
    data[len] = '\n';
    data[len + 1] = '\0';
    int rc = add_file(p, dir, name, data, len + 1, mode, what);
    if (!rc)
        last(p)->json = true;
    return rc;
}

/* Reads an existing JSON object file: *out is NULL when the file does not
 * exist. Anything else wrong with it is an error naming the file. */
static int read_json(const char *path, cJSON **out, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = wisp_prov_read(path, &text, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return wisp_errf(err, errlen, rc, "cannot read %s: %s", path, strerror(-rc));
    *out = cJSON_ParseWithLength(text, len);
    explicit_bzero(text, len);
    free(text);
    const char *dup = *out ? wisp_prov_json_duplicate(*out) : NULL;
    if (!cJSON_IsObject(*out) || dup) {
        rc = wisp_errf(err, errlen, -EINVAL,
                       dup ? "%s: the key \"%s\" appears twice; fix or remove the file"
                           : "%s: not a JSON object%s; fix or remove the file",
                       path, dup ? dup : "");
        wisp_prov_json_delete(*out);
        *out = NULL;
    }
    return rc;
}

static bool same_content(const struct wisp_prov_item *it)
{
    char *text = NULL;
    size_t len = 0;
    if (wisp_prov_read(it->path, &text, &len) != 0)
        return false;
    bool same;
    if (it->json) {
        cJSON *a = cJSON_ParseWithLength(text, len), *b = cJSON_Parse(it->data);
        same = a && b && cJSON_Compare(a, b, 1);
        wisp_prov_json_delete(a);
        wisp_prov_json_delete(b);
    } else {
        same = len == it->len && memcmp(text, it->data, len) == 0;
    }
    explicit_bzero(text, len);
    free(text);
    return same;
}

/* Sets how an item differs from what is on disk. */
static int classify(struct wisp_prov_item *it, const struct wisp_prov_opts *o, char *err,
                    size_t errlen)
{
    struct stat st;
    if (lstat(it->path, &st) != 0) {
        if (errno != ENOENT)
            return wisp_errf(err, errlen, -errno, "cannot inspect %s: %s", it->path,
                             strerror(errno));
        it->change = it->op == WISP_PROV_REMOVE ? WISP_PROV_SAME : WISP_PROV_CREATE;
        return 0;
    }
    if (it->op == WISP_PROV_MKDIR) {
        if (!S_ISDIR(st.st_mode))
            return wisp_errf(err, errlen, -ENOTDIR, "%s exists and is not a directory", it->path);
        it->change = WISP_PROV_SAME;
        return 0;
    }
    if (!S_ISREG(st.st_mode))
        return wisp_errf(err, errlen, -EINVAL, "%s exists and is not a regular file", it->path);
    if (it->op == WISP_PROV_REMOVE) {
        it->change = WISP_PROV_DELETE;
        return 0;
    }
    bool attrs = (st.st_mode & 07777) != it->mode ||
                 (o->chown && (st.st_uid != o->uid || st.st_gid != o->gid));
    if (it->data && !same_content(it))
        it->change = WISP_PROV_UPDATE;
    else
        it->change = attrs ? WISP_PROV_ATTRS : WISP_PROV_SAME;
    return 0;
}

/* The device key: the existing one (never replaced), or a new one. */
static int plan_key(struct wisp_prov_plan *p, const struct wisp_prov_opts *o,
                    struct wisp_prov_rng *rng, char **pub, char *err, size_t errlen)
{
    char *path = wisp_path_join(o->etc, "device.key"), *text = NULL, *priv = NULL;
    size_t len = 0;
    if (!path)
        return -ENOMEM;
    int rc = wisp_prov_read(path, &text, &len);
    if (rc == 0) {
        char msg[256];
        rc = wisp_prov_key_public(rng, text, len, pub, msg, sizeof(msg));
        explicit_bzero(text, len);
        free(text);
        if (rc)
            rc = wisp_errf(err, errlen, rc,
                           "%s: the existing device key cannot be used: %s. It is never "
                           "replaced automatically: move it away to have a new one generated",
                           path, msg);
    } else if (rc == -ENOENT) {
        /* On failure keygen leaves priv NULL. */
        rc = wisp_prov_keygen(rng, &priv, pub, err, errlen);
        p->new_key = rc == 0;
    } else {
        rc = wisp_errf(err, errlen, rc, "cannot read %s: %s", path, strerror(-rc));
    }
    free(path);
    if (rc)
        return rc;
    /* Without priv the item keeps the existing key's content. */
    rc = add_file(p, o->etc, "device.key", priv, priv ? strlen(priv) : 0, 0600,
                  p->new_key ? "new device private key, ECDSA P-256" : "device private key");
    if (rc)
        return rc;
    last(p)->secret = true;
    return add_text(p, o->etc, "device.pub", *pub, 0644, "device public key");
}

/* Existing device.json: its keys must have the types provisioning writes. */
static int check_device_json(const cJSON *d, const char *path, char *err, size_t errlen)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(d, "device_id");
    const cJSON *labels = cJSON_GetObjectItemCaseSensitive(d, "labels");
    const cJSON *token = cJSON_GetObjectItemCaseSensitive(d, "fleet_token");
    if (id && !(cJSON_IsString(id) && wisp_prov_device_id_valid(id->valuestring)))
        return wisp_errf(err, errlen, -EINVAL, "%s:device_id: not a valid device id", path);
    if (labels && !cJSON_IsObject(labels))
        return wisp_errf(err, errlen, -EINVAL, "%s:labels: not an object", path);
    if (token && !cJSON_IsString(token))
        return wisp_errf(err, errlen, -EINVAL, "%s:fleet_token: not a string", path);
    return 0;
}

/* "wisp-" and 12 hex digits: hashed from the machine id (the same id again
 * should device.json be lost, without revealing the machine id itself), or
 * random when there is none. */
static int generate_id(struct wisp_prov_plan *p, const struct wisp_prov_opts *o,
                       struct wisp_prov_rng *rng)
{
    static const char salt[] = "wisp-provision device id:";
    char *mid = NULL, id[32];
    size_t len = 0;
    if (o->machine_id && wisp_prov_read(o->machine_id, &mid, &len) == 0) {
        char hash[65];
        while (len && (mid[len - 1] == '\n' || mid[len - 1] == ' '))
            mid[--len] = '\0';
        bool ok = len == 32 && strspn(mid, "0123456789abcdef") == 32;
        char buf[sizeof(salt) + 32];
        (void)snprintf(buf, sizeof(buf), "%s%s", salt, ok ? mid : "");
        free(mid);
        if (ok && wisp_prov_sha256_hex(buf, strlen(buf), hash) == 0) {
            (void)snprintf(id, sizeof(id), "wisp-%.12s", hash);
            p->device_id = wisp_strndup(id, strlen(id));
            return p->device_id ? 0 : -ENOMEM;
        }
    }
    unsigned char r[6];
    if (wisp_prov_rng_bytes(rng, r, sizeof(r)) != 0)
        return -EIO;
    (void)snprintf(id, sizeof(id), "wisp-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4],
                   r[5]);
    p->device_id = wisp_strndup(id, strlen(id));
    return p->device_id ? 0 : -ENOMEM;
}

/* The provisioning file's device_id, else the one the gateway has (from
 * device.json, else wispd.json's "device"), else a generated one. */
static int resolve_device_id(struct wisp_prov_plan *p, const struct wisp_prov_opts *o,
                             const struct wisp_prov_input *in, const cJSON *device,
                             const cJSON *config, struct wisp_prov_rng *rng)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(device, "device_id");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(config, "device");
    const char *id = in->device_id;
    if (!id && cJSON_IsString(d))
        id = d->valuestring;
    if (!id && cJSON_IsString(c) && wisp_prov_device_id_valid(c->valuestring))
        id = c->valuestring;
    if (!id)
        return generate_id(p, o, rng);
    p->device_id = wisp_strndup(id, strlen(id));
    return p->device_id ? 0 : -ENOMEM;
}

static bool is_key_file(const char *name)
{
    return strlen(name) == 68 && strspn(name, "0123456789abcdef") == 64 &&
           strcmp(name + 64, ".pem") == 0;
}

/* trust/<sha256>.pem for every trusted key; other key files there are
 * removed, so a key left out of the provisioning file is no longer trusted. */
static int plan_trust(struct wisp_prov_plan *p, const struct wisp_prov_input *in, const char *dir)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < in->n_trusted; i++) {
        char name[80];
        (void)snprintf(name, sizeof(name), "%s.pem", in->trusted[i].hash);
        rc = add_text(p, dir, name, in->trusted[i].pem, 0644, "trusted bundle-signing key");
    }
    DIR *d = rc ? NULL : opendir(dir);
    for (struct dirent *e = d ? readdir(d) : NULL; !rc && e; e = readdir(d)) {
        size_t i = 0;
        while (i < in->n_trusted && strncmp(e->d_name, in->trusted[i].hash, 64) != 0)
            i++;
        if (is_key_file(e->d_name) && i == in->n_trusted)
            rc = wisp_prov_plan_add(p, WISP_PROV_REMOVE, wisp_path_join(dir, e->d_name), NULL, 0, 0,
                                    "key no longer trusted");
    }
    if (d)
        (void)closedir(d);
    return rc;
}

/* Temp files a power cut left behind in dir. */
static int plan_stale_temps(struct wisp_prov_plan *p, const char *dir)
{
    int rc = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e = d ? readdir(d) : NULL; !rc && e; e = readdir(d)) {
        if (strncmp(e->d_name, WISP_PROV_TEMP_PREFIX, strlen(WISP_PROV_TEMP_PREFIX)) == 0)
            rc = wisp_prov_plan_add(p, WISP_PROV_REMOVE, wisp_path_join(dir, e->d_name), NULL, 0, 0,
                                    "left over from an interrupted run");
    }
    if (d)
        (void)closedir(d);
    return rc;
}

static int add_dir(struct wisp_prov_plan *p, const char *dir, const char *name, mode_t mode,
                   const char *what)
{
    char *path = name ? wisp_path_join(dir, name) : wisp_strndup(dir, strlen(dir));
    return wisp_prov_plan_add(p, WISP_PROV_MKDIR, path, NULL, 0, mode, what);
}

/* The existing wispd.json and device.json, checked. */
static int read_existing(const struct wisp_prov_opts *o, cJSON **config, cJSON **device, char *err,
                         size_t errlen)
{
    char *cfg = wisp_path_join(o->etc, "wispd.json"), *dev = wisp_path_join(o->etc, "device.json");
    int rc = cfg && dev ? 0 : -ENOMEM;
    if (!rc)
        rc = read_json(cfg, config, err, errlen);
    if (!rc && *config) {
        char msg[1024];
        rc = wisp_prov_check_config(cfg, cfg, false, msg, sizeof(msg));
        if (rc)
            (void)wisp_errf(err, errlen, rc,
                            "%s (the existing config must load before it is merged: fix or "
                            "remove it, then run again)",
                            msg);
    }
    if (!rc)
        rc = read_json(dev, device, err, errlen);
    if (!rc && *device)
        rc = check_device_json(*device, dev, err, errlen);
    free(cfg);
    free(dev);
    return rc;
}

static int plan_dirs(struct wisp_prov_plan *p, const struct wisp_prov_opts *o,
                     const struct wisp_prov_input *in, const cJSON *config)
{
    /* wispd only reads these: they stay the caller's (root's) with --owner. */
    int rc = add_dir(p, o->etc, NULL, 0755, "configuration directory");
    if (!rc)
        last(p)->no_chown = true;
    if (!rc && in->has_trusted && !(rc = add_dir(p, o->etc, "trust", 0755, "trusted keys")))
        last(p)->no_chown = true;
    if (!rc)
        rc = add_dir(p, o->state, NULL, 0755, "state directory");
    /* wispd refuses to start without its functions folder. */
    if (!rc && !cJSON_GetObjectItemCaseSensitive(config, "functions"))
        rc = add_dir(p, o->state, "functions", 0755, "functions folder");
    if (!rc)
        rc = add_dir(p, o->state, "provision", 0700, "registration request folder");
    return rc;
}

static int plan_temps(struct wisp_prov_plan *p, const struct wisp_prov_opts *o)
{
    char *trust = wisp_path_join(o->etc, "trust"), *prov = wisp_path_join(o->state, "provision");
    int rc = trust && prov ? 0 : -ENOMEM;
    if (!rc)
        rc = plan_stale_temps(p, o->etc);
    if (!rc)
        rc = plan_stale_temps(p, trust);
    if (!rc)
        rc = plan_stale_temps(p, prov);
    free(trust);
    free(prov);
    return rc;
}

static int plan_ca(struct wisp_prov_plan *p, const struct wisp_prov_opts *o, const char *ca)
{
    size_t len = strlen(ca);
    bool nl = len && ca[len - 1] == '\n';
    char *data = malloc(len + 2);
    if (data) {
        memcpy(data, ca, len);
        if (!nl)
            data[len++] = '\n';
        data[len] = '\0';
    }
    return add_file(p, o->etc, "ca.crt", data, len, 0644, "broker CA certificate");
}

/* device.json, wispd.json and the registration request. */
static int plan_json(struct wisp_prov_plan *p, const struct wisp_prov_opts *o,
                     const struct wisp_prov_input *in, const cJSON *config, const cJSON *device,
                     const char *pub, char *err, size_t errlen)
{
    char *prov = wisp_path_join(o->state, "provision"), *cfg = wisp_path_join(o->etc, "wispd.json");
    cJSON *dev = wisp_prov_merge_device(device, in, p->device_id);
    cJSON *reg = dev ? wisp_prov_register_request(dev, pub) : NULL;
    cJSON *merged = wisp_prov_merge_config(config, in, o, p->device_id);
    bool secret = merged && cJSON_GetObjectItemCaseSensitive(
                                cJSON_GetObjectItemCaseSensitive(merged, "mqtt"), "password");
    int rc = prov && cfg && reg && merged ? 0 : -ENOMEM;
    if (!rc)
        rc = add_json(p, o->etc, "device.json", dev, 0600, "device id, labels, fleet token");
    else
        wisp_prov_json_delete(dev);
    dev = NULL;
    if (!rc) {
        rc = add_json(p, o->etc, "wispd.json", merged, secret ? 0600 : 0644, "wispd config");
        merged = NULL;
    }
    if (!rc) {
        last(p)->config = true;
        last(p)->secret = secret;
        rc = wisp_prov_check_config_text(last(p)->data, last(p)->len, cfg, err, errlen);
    }
    if (!rc) {
        rc = add_json(p, prov, "register.json", reg, 0600, "registration request");
        reg = NULL;
    }
    if (!rc) {
        last(p)->secret = true;
        p->register_item = p->n - 1;
    }
    wisp_prov_json_delete(merged);
    wisp_prov_json_delete(reg);
    free(prov);
    free(cfg);
    return rc;
}

int wisp_prov_plan_build(struct wisp_prov_plan *p, const struct wisp_prov_opts *o,
                         const struct wisp_prov_input *in, struct wisp_prov_rng *rng, char *err,
                         size_t errlen)
{
    cJSON *config = NULL, *device = NULL;
    char *pub = NULL, *trust = wisp_path_join(o->etc, "trust");
    memset(p, 0, sizeof(*p));
    int rc = trust ? read_existing(o, &config, &device, err, errlen) : -ENOMEM;
    if (!rc)
        rc = resolve_device_id(p, o, in, device, config, rng);
    if (!rc)
        rc = plan_dirs(p, o, in, config);
    if (!rc)
        rc = plan_temps(p, o);
    if (!rc)
        rc = plan_key(p, o, rng, &pub, err, errlen);
    if (!rc && in->ca)
        rc = plan_ca(p, o, in->ca);
    if (!rc && in->has_trusted)
        rc = plan_trust(p, in, trust);
    if (!rc)
        rc = plan_json(p, o, in, config, device, pub, err, errlen);
    for (size_t i = 0; !rc && i < p->n; i++)
        rc = classify(&p->items[i], o, err, errlen);
    if (rc == -ENOMEM)
        (void)wisp_errf(err, errlen, rc, "out of memory");
    else if (rc == -EIO && !*err)
        (void)wisp_errf(err, errlen, rc, "the random generator failed");
    wisp_prov_json_delete(config);
    wisp_prov_json_delete(device);
    free(pub);
    free(trust);
    return rc;
}
