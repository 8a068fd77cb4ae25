/*
 * wisp-provision (firmware/provision/), run as the program it is on
 * fresh temp directories: what a first boot writes (files, modes, a device
 * key mbedTLS reads as P-256, a wispd.json wispd's own parser loads), that
 * a second run changes nothing, that a changed file updates the config but
 * keeps the key, and that every malformed file is refused with exit status
 * 2 and the directories left byte for byte as they were.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "check.h"
#include "config.h"
#include "testutil.h"
#include "util.h"

#if MBEDTLS_VERSION_MAJOR >= 3
#define GRP_ID(kp)           ((kp)->MBEDTLS_PRIVATE(grp).id)
#define SHA256(in, len, out) mbedtls_sha256((in), (len), (out), 0)
#else
#define GRP_ID(kp)           ((kp)->grp.id)
#define SHA256(in, len, out) mbedtls_sha256_ret((in), (len), (out), 0)
#endif

/* A self-signed P-256 CA, valid until 2126 (the dates are not checked anyway). */
static const char test_ca[] = "-----BEGIN CERTIFICATE-----\n"
                              "MIIBhjCCASugAwIBAgIUUFlF7fjQJfF5+PbAguOK7+uxYYAwCgYIKoZIzj0EAwIw\n"
                              "FzEVMBMGA1UEAwwMd2lzcCB0ZXN0IENBMCAXDTI2MTEyNzA3Mjk1M1oYDzIxMjYx\n"
                              "MTAzMDcyOTUzWjAXMRUwEwYDVQQDDAx3aXNwIHRlc3QgQ0EwWTATBgcqhkjOPQIB\n"
                              "BggqhkjOPQMBBwNCAAQ/nrH4Hj7qOJsLHIuKaF7zBfDkpaH5aJZJDX2HaIw/+/BT\n"
                              "BvGTRs0Bv5c3TQd5NkTcrFwveeZZCjucaYon+k76o1MwUTAdBgNVHQ4EFgQUytD2\n"
                              "leGRuEUkrS5QqaScjeZBu6UwHwYDVR0jBBgwFoAUytD2leGRuEUkrS5QqaScjeZB\n"
                              "u6UwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEA1oA3awZKiFN4\n"
                              "+E1gp3n3pKypvppilURKyyOskOMzf0oCIQCAeC2clkvqkWRNRIhnC1JaYJiBBsre\n"
                              "cR/lSjqbZmXImQ==\n"
                              "-----END CERTIFICATE-----\n";

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

/* Keys made once per run: two P-256 signers, a P-384 key, a private key. */
struct test_key {
    char pub[1024];
    char priv[1024];
    char hash[65];
};
static struct test_key signer1, signer2, p384;

static char out[16384];

/* A temp tree: boot/ holds the provisioning file; etc and state are made
 * by the program (two levels deep, so it has to make their parents). */
struct root {
    char dir[128];
    char input[256], etc[256], state[256], mid[256];
};

static const char machine_id[] = "0123456789abcdef0123456789abcdef\n";

static bool root_make(struct root *r, const char *tag)
{
    if (!wisp_test_mkdtemp(r->dir, sizeof(r->dir), tag))
        return false;
    wisp_test_mkdir(r->dir, "boot");
    wisp_test_path(r->input, sizeof(r->input), r->dir, "boot/wisp-provision.json");
    wisp_test_path(r->etc, sizeof(r->etc), r->dir, "etc/wisp");
    wisp_test_path(r->state, sizeof(r->state), r->dir, "var/lib/wisp");
    wisp_test_path(r->mid, sizeof(r->mid), r->dir, "machine-id");
    wisp_test_write(r->dir, "machine-id", machine_id);
    return true;
}

static void path_in(char *buf, size_t cap, const char *dir, const char *rel)
{
    (void)snprintf(buf, cap, "%s/%s", dir, rel);
}

/* A NULL-terminated list of extra arguments for run(). */
#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Runs wisp-provision on r with the extra arguments (NULL: none); stdout
 * and stderr go to `out`. Returns the exit status, -1 if it did not exit
 * normally. */
static int run(const struct root *r, const char *const *extra)
{
    const char *prog = getenv("WISP_PROVISION");
    const char *argv[48];
    size_t argc = 0;
    /* Cross builds: the program runs under the same emulator as this test. */
    char emu[256];
    (void)snprintf(emu, sizeof(emu), "%s",
                   getenv("WISP_TEST_EMULATOR") ? getenv("WISP_TEST_EMULATOR") : "");
    for (char *save = NULL, *tok = strtok_r(emu, " ", &save); tok && argc < 8;
         tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    const char *const fixed[] = {prog,      "--input", r->input,       "--etc", r->etc,
                                 "--state", r->state,  "--machine-id", r->mid};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        argv[argc++] = fixed[i];
    for (size_t i = 0; extra && extra[i] && argc < 46; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    out[0] = '\0';
    CHECK(prog != NULL);
    if (!prog)
        return -1;
    char log[256];
    path_in(log, sizeof(log), r->dir, "run.log");
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    pid_t pid = fork();
    if (pid == 0) {
        (void)dup2(fd, 1);
        (void)dup2(fd, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    (void)close(fd);
    int status = wisp_test_wait_exit(pid, 60000);
    char *text = wisp_test_read_file(log);
    if (text)
        (void)snprintf(out, sizeof(out), "%s", text);
    free(text);
    (void)unlink(log);
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* What goes into a provisioning file; NULL leaves a key out. */
struct spec {
    const char *broker;
    const char *ca;
    const char *token;
    const char *label_site;
    const char *keys[3];
    const char *user, *pass;
    const char *device_id;
};

static void write_input(const struct root *r, const struct spec *s)
{
    cJSON *o = cJSON_CreateObject();
    (void)cJSON_AddStringToObject(o, "broker", s->broker);
    if (s->ca)
        (void)cJSON_AddStringToObject(o, "ca", s->ca);
    if (s->token)
        (void)cJSON_AddStringToObject(o, "fleet_token", s->token);
    if (s->label_site) {
        cJSON *labels = cJSON_AddObjectToObject(o, "labels");
        (void)cJSON_AddStringToObject(labels, "site", s->label_site);
        (void)cJSON_AddStringToObject(labels, "role", "edge");
    }
    if (s->keys[0]) {
        cJSON *keys = cJSON_AddArrayToObject(o, "trusted_keys");
        for (size_t i = 0; i < 3 && s->keys[i]; i++)
            (void)cJSON_AddItemToArray(keys, cJSON_CreateString(s->keys[i]));
    }
    if (s->user) {
        cJSON *mqtt = cJSON_AddObjectToObject(o, "mqtt");
        (void)cJSON_AddStringToObject(mqtt, "username", s->user);
        if (s->pass)
            (void)cJSON_AddStringToObject(mqtt, "password", s->pass);
    }
    if (s->device_id)
        (void)cJSON_AddStringToObject(o, "device_id", s->device_id);
    char *text = cJSON_Print(o);
    FILE *f = fopen(r->input, "w");
    CHECK(f && text);
    if (f && text)
        CHECK(fputs(text, f) >= 0);
    if (f)
        CHECK(fclose(f) == 0);
    free(text);
    cJSON_Delete(o);
}

static void write_raw_input(const struct root *r, const char *text)
{
    FILE *f = fopen(r->input, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

static const struct spec full = {
    .broker = "mqtts://broker.example:8883",
    .ca = test_ca,
    .token = "fleet-tok-1234",
    .label_site = "plant-3",
    .keys = {signer1.pub, signer2.pub},
    .user = "gw",
    .pass = "s3cret-pw",
};

/* Every entry below dir (sorted): path, type, mode, owner, inode, mtime,
 * size and content, so a rewrite with the same bytes still shows. */
static void snap_dir(FILE *f, const char *dir)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        (void)fprintf(f, "%s: absent\n", dir);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
            char path[1024];
            struct stat st;
            path_in(path, sizeof(path), dir, name);
            CHECK(lstat(path, &st) == 0);
            (void)fprintf(f, "%s %o %u %lu %lld.%09ld %lld\n", path, (unsigned)st.st_mode,
                          (unsigned)st.st_uid, (unsigned long)st.st_ino, (long long)st.st_mtime,
                          st.st_mtim.tv_nsec, (long long)st.st_size);
            if (S_ISDIR(st.st_mode)) {
                snap_dir(f, path);
            } else if (S_ISREG(st.st_mode)) {
                char *text = wisp_test_read_file(path);
                (void)fprintf(f, "%s\n", text ? text : "(unreadable)");
                free(text);
            }
        }
        free(names[i]);
    }
    free(names);
}

static char *snapshot(const struct root *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    if (!f)
        return NULL;
    char dir[256];
    path_in(dir, sizeof(dir), r->dir, "etc");
    snap_dir(f, dir);
    path_in(dir, sizeof(dir), r->dir, "var");
    snap_dir(f, dir);
    CHECK(fclose(f) == 0);
    return buf;
}

static char *read_rel(const char *dir, const char *rel)
{
    char path[512];
    path_in(path, sizeof(path), dir, rel);
    return wisp_test_read_file(path);
}

static int mode_of(const char *dir, const char *rel)
{
    char path[512];
    struct stat st;
    path_in(path, sizeof(path), dir, rel);
    return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static cJSON *read_json(const char *dir, const char *rel)
{
    char *text = read_rel(dir, rel);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    CHECK(j != NULL);
    free(text);
    return j;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* SHA-256 (hex) of a public key's DER, which names its file in trust/. */
static void key_hash(mbedtls_pk_context *pk, char hash[65])
{
    unsigned char der[512], sum[32];
    int n = mbedtls_pk_write_pubkey_der(pk, der, sizeof(der));
    CHECK(n > 0);
    CHECK(SHA256(der + sizeof(der) - n, (size_t)n, sum) == 0);
    for (size_t i = 0; i < sizeof(sum); i++)
        (void)snprintf(hash + 2 * i, 3, "%02x", sum[i]);
}

static void make_key(struct test_key *k, mbedtls_ecp_group_id curve)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    CHECK(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) == 0);
    CHECK(mbedtls_ecp_gen_key(curve, mbedtls_pk_ec(pk), mbedtls_ctr_drbg_random, &drbg) == 0);
    CHECK(mbedtls_pk_write_pubkey_pem(&pk, (unsigned char *)k->pub, sizeof(k->pub)) == 0);
    CHECK(mbedtls_pk_write_key_pem(&pk, (unsigned char *)k->priv, sizeof(k->priv)) == 0);
    key_hash(&pk, k->hash);
    mbedtls_pk_free(&pk);
}

/* device.key is an ECDSA P-256 private key whose public half is device.pub. */
static void check_device_key(const struct root *r)
{
    char path[512], pub[1024] = "";
    path_in(path, sizeof(path), r->etc, "device.key");
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
#if MBEDTLS_VERSION_MAJOR >= 3
    int rc = mbedtls_pk_parse_keyfile(&pk, path, NULL, mbedtls_ctr_drbg_random, &drbg);
#else
    int rc = mbedtls_pk_parse_keyfile(&pk, path, NULL);
#endif
    CHECK_INT_EQ(rc, 0);
    if (rc == 0) {
        CHECK(mbedtls_pk_can_do(&pk, MBEDTLS_PK_ECDSA));
        CHECK(GRP_ID(mbedtls_pk_ec(pk)) == MBEDTLS_ECP_DP_SECP256R1);
        CHECK(mbedtls_pk_write_pubkey_pem(&pk, (unsigned char *)pub, sizeof(pub)) == 0);
    }
    mbedtls_pk_free(&pk);
    char *file = read_rel(r->etc, "device.pub");
    CHECK_STR_EQ(file, pub);
    free(file);
    /* OpenSSL reads it too, when it is installed. */
    if (system("command -v openssl >/dev/null 2>&1") == 0) {
        char cmd[700];
        (void)snprintf(cmd, sizeof(cmd), "openssl pkey -in '%s' -noout 2>/dev/null", path);
        CHECK_INT_EQ(system(cmd), 0);
    }
}

/* wispd.json as wispd itself loads it (the same parser and checks). */
static void load_config(const struct root *r, struct wisp_config *c)
{
    char path[512], err[1024] = "";
    path_in(path, sizeof(path), r->etc, "wispd.json");
    wisp_config_defaults(c);
    CHECK_INT_EQ(wisp_config_load_file(c, path, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_config_finish(c, err, sizeof(err)), 0);
    if (err[0])
        (void)fprintf(stderr, "config: %s\n", err);
}

static void check_fresh_config(const struct root *r, const char *device_id)
{
    struct wisp_config c;
    char want[512];
    load_config(r, &c);
    CHECK_STR_EQ(c.broker, "mqtts://broker.example:8883");
    CHECK_STR_EQ(c.device, device_id);
    CHECK_STR_EQ(c.username, "gw");
    CHECK_STR_EQ(c.password, "s3cret-pw");
    path_in(want, sizeof(want), r->etc, "ca.crt");
    CHECK_STR_EQ(c.tls_ca, want);
    path_in(want, sizeof(want), r->state, "functions");
    CHECK_STR_EQ(c.functions, want);
    CHECK(exists(want));
    CHECK_STR_EQ(c.data, r->state);
    wisp_config_fini(&c);
}

static void check_fresh_files(const struct root *r)
{
    char path[512];
    CHECK_INT_EQ(mode_of(r->etc, "device.key"), 0600);
    CHECK_INT_EQ(mode_of(r->etc, "device.pub"), 0644);
    CHECK_INT_EQ(mode_of(r->etc, "device.json"), 0600);
    CHECK_INT_EQ(mode_of(r->etc, "wispd.json"), 0600); /* it holds the MQTT password */
    CHECK_INT_EQ(mode_of(r->etc, "ca.crt"), 0644);
    CHECK_INT_EQ(mode_of(r->state, "provision"), 0700);
    CHECK_INT_EQ(mode_of(r->state, "provision/register.json"), 0600);
    char *ca = read_rel(r->etc, "ca.crt");
    CHECK_STR_EQ(ca, test_ca);
    free(ca);
    const struct test_key *keys[] = {&signer1, &signer2};
    for (size_t i = 0; i < 2; i++) {
        char rel[128];
        (void)snprintf(rel, sizeof(rel), "trust/%s.pem", keys[i]->hash);
        CHECK_INT_EQ(mode_of(r->etc, rel), 0644);
        char *pem = read_rel(r->etc, rel);
        CHECK_STR_EQ(pem, keys[i]->pub);
        free(pem);
    }
    path_in(path, sizeof(path), r->etc, "trust");
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e = d ? readdir(d) : NULL; e; e = readdir(d))
        n += e->d_name[0] != '.';
    if (d)
        (void)closedir(d);
    CHECK_INT_EQ(n, 2);
}

/* The device id: "wisp-" and 12 lowercase hex digits. */
static bool id_format(const char *id)
{
    return id && strlen(id) == 17 && strncmp(id, "wisp-", 5) == 0 &&
           strspn(id + 5, "0123456789abcdef") == 12;
}

static void test_fresh(void)
{
    struct root r;
    if (!root_make(&r, "prov-fresh"))
        return;
    write_input(&r, &full);
    CHECK_INT_EQ(run(&r, NULL), 0);
    CHECK_CONTAINS(out, "new device key");
    CHECK_CONTAINS(out, "registers this device with");
    check_fresh_files(&r);
    /* A fleet token and trusted keys make it fleet-managed. */
    cJSON *cfg = read_json(r.etc, "wispd.json");
    const cJSON *cloud = cJSON_GetObjectItemCaseSensitive(cfg, "cloud");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cloud, "enabled")));
    CHECK_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cloud, "identity")),
                   "device.json");
    cJSON_Delete(cfg);
    check_device_key(&r);

    cJSON *dev = read_json(r.etc, "device.json");
    const char *id = json_str(dev, "device_id");
    CHECK(id_format(id));
    CHECK_STR_EQ(json_str(dev, "fleet_token"), "fleet-tok-1234");
    CHECK_STR_EQ(json_str(cJSON_GetObjectItemCaseSensitive(dev, "labels"), "site"), "plant-3");
    check_fresh_config(&r, id ? id : "?");

    cJSON *reg = read_json(r.state, "provision/register.json");
    char *pub = read_rel(r.etc, "device.pub");
    CHECK_STR_EQ(json_str(reg, "device_id"), id ? id : "?");
    CHECK_STR_EQ(json_str(reg, "public_key"), pub);
    CHECK_STR_EQ(json_str(reg, "fleet_token"), "fleet-tok-1234");
    CHECK_STR_EQ(json_str(cJSON_GetObjectItemCaseSensitive(reg, "labels"), "role"), "edge");
    free(pub);
    cJSON_Delete(reg);

    /* The input is now FILE.done, without its secrets. */
    char done[300];
    (void)snprintf(done, sizeof(done), "%s.done", r.input);
    CHECK(!exists(r.input));
    char *text = wisp_test_read_file(done);
    CHECK(text && !strstr(text, "fleet-tok-1234") && !strstr(text, "s3cret-pw"));
    CHECK_CONTAINS(text, "removed by wisp-provision");
    CHECK_CONTAINS(text, "plant-3");
    free(text);

    /* The same machine id gives the same device id on another gateway
     * tree; another one gives another id. */
    struct root r2;
    if (root_make(&r2, "prov-fresh2")) {
        write_input(&r2, &full);
        CHECK_INT_EQ(run(&r2, NULL), 0);
        cJSON *dev2 = read_json(r2.etc, "device.json");
        CHECK_STR_EQ(json_str(dev2, "device_id"), id ? id : "?");
        cJSON_Delete(dev2);
        wisp_test_rmtree(r2.dir);
    }
    if (root_make(&r2, "prov-fresh3")) {
        wisp_test_write(r2.dir, "machine-id", "fedcba9876543210fedcba9876543210\n");
        write_input(&r2, &full);
        CHECK_INT_EQ(run(&r2, NULL), 0);
        cJSON *dev2 = read_json(r2.etc, "device.json");
        const char *id2 = json_str(dev2, "device_id");
        CHECK(id_format(id2));
        CHECK(id && id2 && strcmp(id, id2) != 0);
        cJSON_Delete(dev2);
        wisp_test_rmtree(r2.dir);
    }
    cJSON_Delete(dev);
    wisp_test_rmtree(r.dir);
}

static void test_idempotent(void)
{
    struct root r;
    if (!root_make(&r, "prov-again"))
        return;
    write_input(&r, &full);
    CHECK_INT_EQ(run(&r, ARGS("--keep-input")), 0);
    CHECK(exists(r.input));
    char *before = snapshot(&r);
    CHECK_INT_EQ(run(&r, ARGS("--keep-input")), 0);
    CHECK_CONTAINS(out, "already provisioned, nothing to do");
    char *after = snapshot(&r);
    CHECK_STR_EQ(after, before);
    free(after);
    /* Without --keep-input the file is retired even when nothing changed. */
    CHECK_INT_EQ(run(&r, NULL), 0);
    CHECK_CONTAINS(out, "already provisioned, nothing to do");
    CHECK(!exists(r.input));
    char done[300];
    (void)snprintf(done, sizeof(done), "%s.done", r.input);
    CHECK(exists(done));
    CHECK_INT_EQ(unlink(done), 0);
    after = snapshot(&r);
    CHECK_STR_EQ(after, before);
    free(after);
    free(before);
    wisp_test_rmtree(r.dir);
}

static void test_changed_input(void)
{
    struct root r;
    if (!root_make(&r, "prov-change"))
        return;
    write_input(&r, &full);
    CHECK_INT_EQ(run(&r, NULL), 0);
    char *key = read_rel(r.etc, "device.key");
    cJSON *dev = read_json(r.etc, "device.json");
    char *id = wisp_strndup(json_str(dev, "device_id"), 17);
    cJSON_Delete(dev);

    /* The user adds a setting of their own between the runs. */
    cJSON *cfg = read_json(r.etc, "wispd.json");
    (void)cJSON_AddStringToObject(cfg, "log_level", "debug");
    char *text = cJSON_Print(cfg);
    wisp_test_write(r.etc, "wispd.json", text ? text : "");
    free(text);
    cJSON_Delete(cfg);

    struct spec s = full;
    s.broker = "ssl://broker2.example:8884";
    s.label_site = "plant-4";
    s.keys[0] = signer2.pub; /* signer1 is no longer trusted */
    s.keys[1] = NULL;
    s.pass = "new-pw";
    write_input(&r, &s);
    CHECK_INT_EQ(run(&r, NULL), 0);
    CHECK_CONTAINS(out, "key no longer trusted");
    CHECK(!strstr(out, "new device key"));

    char *key2 = read_rel(r.etc, "device.key");
    CHECK_STR_EQ(key2, key);
    check_device_key(&r);
    struct wisp_config c;
    load_config(&r, &c);
    CHECK_STR_EQ(c.broker, "ssl://broker2.example:8884");
    CHECK_STR_EQ(c.password, "new-pw");
    CHECK_STR_EQ(c.log_level, "debug");
    CHECK_STR_EQ(c.device, id);
    wisp_config_fini(&c);
    char rel[128];
    (void)snprintf(rel, sizeof(rel), "trust/%s.pem", signer1.hash);
    CHECK_INT_EQ(mode_of(r.etc, rel), -1);
    (void)snprintf(rel, sizeof(rel), "trust/%s.pem", signer2.hash);
    CHECK_INT_EQ(mode_of(r.etc, rel), 0644);
    cJSON *reg = read_json(r.state, "provision/register.json");
    CHECK_STR_EQ(json_str(cJSON_GetObjectItemCaseSensitive(reg, "labels"), "site"), "plant-4");
    CHECK_STR_EQ(json_str(reg, "device_id"), id);
    cJSON_Delete(reg);

    /* A file without the optional keys keeps what the gateway has. */
    struct spec bare = {.broker = "tcp://10.0.0.2:1883"};
    write_input(&r, &bare);
    CHECK_INT_EQ(run(&r, NULL), 0);
    load_config(&r, &c);
    CHECK_STR_EQ(c.broker, "tcp://10.0.0.2:1883");
    CHECK_STR_EQ(c.username, "gw");
    CHECK_STR_EQ(c.device, id);
    wisp_config_fini(&c);
    dev = read_json(r.etc, "device.json");
    CHECK_STR_EQ(json_str(dev, "fleet_token"), "fleet-tok-1234");
    cJSON_Delete(dev);
    (void)snprintf(rel, sizeof(rel), "trust/%s.pem", signer2.hash);
    CHECK_INT_EQ(mode_of(r.etc, rel), 0644);

    free(key);
    free(key2);
    free(id);
    wisp_test_rmtree(r.dir);
}

/* Malformed provisioning files: each names the file and the key. */
static const struct bad_case {
    /* @K1@: signer1, @K384@: the P-384 key, @PRIV@: a private key, @CA@: the CA */
    const char *text;
    const char *expect;
} bad_cases[] = {
    {"{\"broker\": \"tcp://gw:1883\",", "wisp-provision.json:1: invalid JSON"},
    {"{\"broker\": \"tcp://gw:1883\", \"colour\": \"red\"}",
     "wisp-provision.json:colour: unknown key"},
    {"{\"broker\": \"http://gw:1883\"}", "wisp-provision.json:broker: \"http://gw:1883\": must "
                                         "start with tcp://, mqtt://, ssl:// or mqtts://"},
    {"{\"broker\": \"tcp://gw:70000\"}", "wisp-provision.json:broker: \"tcp://gw:70000\""},
    {"{\"broker\": \"mqtt://gw/x\"}", "wisp-provision.json:broker:"},
    {"{\"labels\": {}}", "wisp-provision.json:broker: required"},
    {"{\"broker\": \"tcp://gw\", \"trusted_keys\": [\"-----BEGIN PUBLIC KEY-----\\nAAAA\\n"
     "-----END PUBLIC KEY-----\\n\"]}",
     "wisp-provision.json:trusted_keys[0]: not a valid PEM public key"},
    {"{\"broker\": \"tcp://gw\", \"trusted_keys\": [\"@K1@\", \"@K384@\"]}",
     "wisp-provision.json:trusted_keys[1]: an EC key on curve secp384r1"},
    {"{\"broker\": \"tcp://gw\", \"trusted_keys\": [\"@PRIV@\"]}",
     "wisp-provision.json:trusted_keys[0]: a private key"},
    {"{\"broker\": \"tcp://gw\", \"trusted_keys\": [\"@K1@\", \"@K1@\"]}",
     "wisp-provision.json:trusted_keys[1]: the same key as trusted_keys[0]"},
    {"{\"broker\": \"tcp://gw\", \"labels\": {\"site\": 3}}",
     "wisp-provision.json:labels.site: must be a string"},
    {"{\"broker\": \"tcp://gw\", \"broker\": \"tcp://other\"}",
     "wisp-provision.json:broker: duplicate key"},
    {"{\"broker\": \"tcp://gw\", \"ca\": \"@CA@\"}",
     "wisp-provision.json:ca: only used with an ssl:// or mqtts:// broker"},
    {"{\"broker\": \"ssl://gw\", \"ca\": \"-----BEGIN CERTIFICATE-----\\nAAAA\\n"
     "-----END CERTIFICATE-----\\n\"}",
     "wisp-provision.json:ca: not a valid PEM certificate"},
    {"{\"broker\": \"ssl://gw\", \"ca\": \"@K1@\"}", "wisp-provision.json:ca: no PEM certificate"},
    {"{\"broker\": \"tcp://gw\", \"device_id\": \"a/b\"}", "wisp-provision.json:device_id: must"},
    {"{\"broker\": \"tcp://gw\", \"mqtt\": {\"password\": \"x\"}}",
     "wisp-provision.json:mqtt.password: needs mqtt.username"},
    {"{\"broker\": \"tcp://gw\", \"fleet_token\": \"(removed by wisp-provision; the gateway keeps "
     "it)\"}",
     "wisp-provision.json:fleet_token: still the placeholder"},
};

/* text with the @...@ slots of bad_cases replaced by JSON-escaped PEM
 * (newlines as \n). */
static void fill_slots(const char *text, char *buf, size_t cap)
{
    static const struct {
        const char *slot;
        const char *pem;
    } slots[] = {
        {"@K1@", signer1.pub}, {"@K384@", p384.pub}, {"@PRIV@", signer1.priv}, {"@CA@", test_ca}};
    size_t o = 0;
    while (*text && o + 3 < cap) {
        size_t i = 0;
        while (i < WISP_ARRAY_LEN(slots) &&
               strncmp(text, slots[i].slot, strlen(slots[i].slot)) != 0)
            i++;
        if (i == WISP_ARRAY_LEN(slots)) {
            buf[o++] = *text++;
            continue;
        }
        text += strlen(slots[i].slot);
        for (const char *p = slots[i].pem; *p && o + 3 < cap; p++) {
            if (*p == '\n') {
                buf[o++] = '\\';
                buf[o++] = 'n';
            } else {
                buf[o++] = *p;
            }
        }
    }
    buf[o] = '\0';
}

static void check_bad(const struct root *r, const char *text, const char *expect)
{
    char *before = snapshot(r);
    write_raw_input(r, text);
    int status = run(r, NULL);
    CHECK_INT_EQ(status, 2);
    CHECK_CONTAINS(out, expect);
    CHECK_CONTAINS(out, "nothing was changed");
    CHECK(exists(r->input)); /* not retired */
    CHECK_INT_EQ(unlink(r->input), 0);
    char *after = snapshot(r);
    CHECK_STR_EQ(after, before);
    if (status != 2 || !strstr(out, expect))
        (void)fprintf(stderr, "  input: %s\n  output: %s\n", text, out);
    free(before);
    free(after);
}

static void test_malformed(void)
{
    static char text[8192];
    struct root empty, done;
    if (!root_make(&empty, "prov-bad-empty") || !root_make(&done, "prov-bad"))
        return;
    write_input(&done, &full);
    CHECK_INT_EQ(run(&done, NULL), 0);
    for (size_t i = 0; i < WISP_ARRAY_LEN(bad_cases); i++) {
        fill_slots(bad_cases[i].text, text, sizeof(text));
        check_bad(&empty, text, bad_cases[i].expect);
        check_bad(&done, text, bad_cases[i].expect);
    }
    /* Several problems are all reported. */
    write_raw_input(&empty, "{\"broker\": \"tcp://gw\", \"a\": 1, \"labels\": [], \"mqtt\": 2}");
    CHECK_INT_EQ(run(&empty, NULL), 2);
    CHECK_CONTAINS(out, "wisp-provision.json:a: unknown key");
    CHECK_CONTAINS(out, "wisp-provision.json:labels: must be an object");
    CHECK_CONTAINS(out, "wisp-provision.json:mqtt: must be an object");
    CHECK_CONTAINS(out, "3 problem(s)");
    CHECK(!exists(empty.etc) && !exists(empty.state));
    wisp_test_rmtree(empty.dir);
    wisp_test_rmtree(done.dir);
}

static void test_dry_run(void)
{
    struct root r;
    if (!root_make(&r, "prov-dry"))
        return;
    write_input(&r, &full);
    char *before = snapshot(&r);
    CHECK_INT_EQ(run(&r, ARGS("--dry-run")), 0);
    CHECK_CONTAINS(out, "would create");
    CHECK_CONTAINS(out, "device.key");
    CHECK_CONTAINS(out, "nothing written");
    char *after = snapshot(&r);
    CHECK_STR_EQ(after, before);
    CHECK(!exists(r.etc) && !exists(r.state));
    free(before);
    free(after);

    /* On a provisioned gateway it shows only what would change. */
    CHECK_INT_EQ(run(&r, NULL), 0);
    struct spec s = full;
    s.broker = "mqtts://elsewhere.example";
    write_input(&r, &s);
    before = snapshot(&r);
    CHECK_INT_EQ(run(&r, ARGS("--dry-run")), 0);
    CHECK_CONTAINS(out, "would update");
    CHECK_CONTAINS(out, "wispd.json");
    CHECK(!strstr(out, "device.key"));
    after = snapshot(&r);
    CHECK_STR_EQ(after, before);
    free(before);
    free(after);
    wisp_test_rmtree(r.dir);
}

/* Problems with what the gateway already has: exit 1, nothing changed. */
static void test_existing_problems(void)
{
    struct root r;
    if (!root_make(&r, "prov-existing"))
        return;
    write_input(&r, &full);
    CHECK_INT_EQ(run(&r, ARGS("--keep-input")), 0);

    char *cfg = read_rel(r.etc, "wispd.json");
    wisp_test_write(r.etc, "wispd.json", "{\"broker\": \"tcp://x\", \"nonsense\": 1}");
    char *before = snapshot(&r);
    CHECK_INT_EQ(run(&r, NULL), 1);
    CHECK_CONTAINS(out, "wispd.json:nonsense: unknown setting");
    char *after = snapshot(&r);
    CHECK_STR_EQ(after, before);
    CHECK(exists(r.input));
    free(before);
    free(after);
    wisp_test_write(r.etc, "wispd.json", cfg ? cfg : "");
    free(cfg);

    /* Something in the way of a file to write: found before writing. */
    char in_way[512];
    path_in(in_way, sizeof(in_way), r.etc, "trust");
    wisp_test_rmtree(in_way);
    wisp_test_write(r.etc, "trust", "a file where a directory belongs\n");
    char *before2 = snapshot(&r);
    CHECK_INT_EQ(run(&r, NULL), 1);
    CHECK_CONTAINS(out, "is not a directory");
    CHECK_CONTAINS(out, "nothing was changed");
    char *after2 = snapshot(&r);
    CHECK_STR_EQ(after2, before2);
    free(before2);
    free(after2);
    CHECK_INT_EQ(unlink(in_way), 0);

    /* A device key that cannot be read is reported, never replaced. */
    char *key = read_rel(r.etc, "device.key");
    wisp_test_write(r.etc, "device.key", "not a key\n");
    before = snapshot(&r);
    CHECK_INT_EQ(run(&r, NULL), 1);
    CHECK_CONTAINS(out, "the existing device key cannot be used");
    after = snapshot(&r);
    CHECK_STR_EQ(after, before);
    free(before);
    free(after);

    /* A key of another curve is refused the same way. */
    wisp_test_write(r.etc, "device.key", p384.priv);
    CHECK_INT_EQ(run(&r, NULL), 1);
    CHECK_CONTAINS(out, "secp384r1");

    /* The right key with a lost device.pub and a loose mode: repaired. */
    wisp_test_write(r.etc, "device.key", key ? key : "");
    char path[512];
    path_in(path, sizeof(path), r.etc, "device.key");
    CHECK_INT_EQ(chmod(path, 0644), 0);
    path_in(path, sizeof(path), r.etc, "device.pub");
    CHECK_INT_EQ(unlink(path), 0);
    CHECK_INT_EQ(run(&r, NULL), 0);
    CHECK_CONTAINS(out, "set the mode/owner of");
    CHECK_INT_EQ(mode_of(r.etc, "device.key"), 0600);
    char *key2 = read_rel(r.etc, "device.key");
    CHECK_STR_EQ(key2, key);
    check_device_key(&r);
    free(key);
    free(key2);
    wisp_test_rmtree(r.dir);
}

/* A config the user wrote before provisioning: their keys stay, their
 * device name is kept as the device id. */
static void test_existing_config(void)
{
    struct root r;
    if (!root_make(&r, "prov-merge"))
        return;
    char parent[256];
    path_in(parent, sizeof(parent), r.dir, "etc");
    CHECK_INT_EQ(mkdir(parent, 0755), 0);
    CHECK_INT_EQ(mkdir(r.etc, 0755), 0);
    wisp_test_write(r.etc, "wispd.json",
                    "{\"functions\": \"/srv/functions\", \"device\": \"kitchen-gw\",\n"
                    " \"executors\": {\"max\": 4}, \"mqtt\": {\"keepalive_s\": 60}}\n");
    /* A temp file left by a power cut is cleaned up. */
    wisp_test_write(r.etc, ".wisp-tmp.wispd.json.Ab12Cd", "{\"half\":");
    struct spec s = {.broker = "tcp://192.168.1.10:1883", .user = "u"};
    write_input(&r, &s);
    CHECK_INT_EQ(run(&r, NULL), 0);
    struct wisp_config c;
    load_config(&r, &c);
    CHECK_STR_EQ(c.functions, "/srv/functions");
    CHECK_STR_EQ(c.device, "kitchen-gw");
    CHECK_INT_EQ(c.executors_max, 4);
    CHECK_INT_EQ(c.keepalive_s, 60);
    CHECK_STR_EQ(c.username, "u");
    CHECK(c.tls_ca == NULL);
    wisp_config_fini(&c);
    CHECK_INT_EQ(mode_of(r.etc, "wispd.json"), 0644); /* no password in it */
    CHECK_INT_EQ(mode_of(r.etc, ".wisp-tmp.wispd.json.Ab12Cd"), -1);
    CHECK_INT_EQ(mode_of(r.state, "functions"), -1); /* not wispd's folder here */
    cJSON *dev = read_json(r.etc, "device.json");
    CHECK_STR_EQ(json_str(dev, "device_id"), "kitchen-gw");
    cJSON_Delete(dev);
    wisp_test_rmtree(r.dir);
}

static void test_no_input_and_usage(void)
{
    struct root r;
    if (!root_make(&r, "prov-none"))
        return;
    CHECK_INT_EQ(run(&r, NULL), 0);
    CHECK_CONTAINS(out, "nothing to do");
    CHECK(!exists(r.etc) && !exists(r.state));
    CHECK_INT_EQ(run(&r, ARGS("--bogus")), 64);
    CHECK_INT_EQ(run(&r, ARGS("extra")), 64);
    CHECK_INT_EQ(run(&r, ARGS("--owner", "no-such-user-wisp")), 64);
    CHECK_INT_EQ(run(&r, ARGS("--help")), 0);
    CHECK_CONTAINS(out, "Exit status");
    wisp_test_rmtree(r.dir);
}

/* --owner: the files and the state directories go to that user (wispd's),
 * the configuration directories stay root's. Needs root to chown. */
static void test_owner(void)
{
    const struct passwd *pw = getpwnam("nobody");
    if (geteuid() != 0 || !pw) {
        (void)fprintf(stderr, "  owner: skipped (needs root and a user \"nobody\")\n");
        return;
    }
    uid_t uid = pw->pw_uid;
    struct root r;
    if (!root_make(&r, "prov-owner"))
        return;
    write_input(&r, &full);
    CHECK_INT_EQ(run(&r, ARGS("--owner", "nobody", "--keep-input")), 0);
    static const char *const owned[] = {"device.key", "device.pub", "device.json", "wispd.json",
                                        "ca.crt"};
    char path[512];
    struct stat st;
    for (size_t i = 0; i < WISP_ARRAY_LEN(owned); i++) {
        path_in(path, sizeof(path), r.etc, owned[i]);
        CHECK(stat(path, &st) == 0 && st.st_uid == uid);
    }
    path_in(path, sizeof(path), r.state, "provision/register.json");
    CHECK(stat(path, &st) == 0 && st.st_uid == uid);
    path_in(path, sizeof(path), r.state, "provision");
    CHECK(stat(path, &st) == 0 && st.st_uid == uid);
    CHECK(stat(r.etc, &st) == 0 && st.st_uid == 0);
    char *before = snapshot(&r);
    CHECK_INT_EQ(run(&r, ARGS("--owner", "nobody", "--keep-input")), 0);
    CHECK_CONTAINS(out, "already provisioned, nothing to do");
    char *after = snapshot(&r);
    CHECK_STR_EQ(after, before);
    free(before);
    free(after);
    /* Without --owner the owner is not checked: still nothing to do. */
    CHECK_INT_EQ(run(&r, NULL), 0);
    CHECK_CONTAINS(out, "already provisioned, nothing to do");
    wisp_test_rmtree(r.dir);
}

static const struct wisp_check_test tests[] = {
    {"fresh", test_fresh},
    {"idempotent", test_idempotent},
    {"changed_input", test_changed_input},
    {"malformed", test_malformed},
    {"dry_run", test_dry_run},
    {"existing_problems", test_existing_problems},
    {"existing_config", test_existing_config},
    {"no_input_and_usage", test_no_input_and_usage},
    {"owner", test_owner},
};

int main(int argc, char **argv)
{
    static const char pers[] = "test_provision";
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    CHECK(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers,
                                sizeof(pers) - 1) == 0);
    make_key(&signer1, MBEDTLS_ECP_DP_SECP256R1);
    make_key(&signer2, MBEDTLS_ECP_DP_SECP256R1);
    make_key(&p384, MBEDTLS_ECP_DP_SECP384R1);
    int rc = WISP_CHECK_RUN(argc, argv, tests);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return rc;
}
