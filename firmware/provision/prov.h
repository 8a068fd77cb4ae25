/*
 * wisp-provision's parts: the provisioning file (prov_input.c), keys and
 * certificates through mbedTLS (prov_crypto.c), the plan of what the
 * gateway's files should hold (prov_plan.c, prov_merge.c) and carrying it
 * out with atomic writes (prov_fs.c). provision.c is the program around
 * them. Nothing here is a public interface of Wisp.
 */
#ifndef WISP_PROV_H
#define WISP_PROV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

struct cJSON;

/* Exit statuses of wisp-provision. */
enum {
    WISP_PROV_EXIT_OK = 0,      /* provisioned, updated, or nothing to do */
    WISP_PROV_EXIT_FAILED = 1,  /* a problem on the gateway's side (files, keys, I/O) */
    WISP_PROV_EXIT_INVALID = 2, /* the provisioning file is malformed; nothing changed */
    WISP_PROV_EXIT_USAGE = 64,  /* bad command line */
};

/* The largest provisioning file (and existing JSON file) read. */
#define WISP_PROV_MAX_FILE ((size_t)1024 * 1024)
/* What FILE.done holds in place of each secret. A provisioning file that
 * still has it (a .done file copied back) is refused. */
#define WISP_PROV_REDACTED "(removed by wisp-provision; the gateway keeps it)"
/* Temp files start with this; ones a power cut left behind are removed. */
#define WISP_PROV_TEMP_PREFIX ".wisp-tmp."

/* ---- prov_input.c: the provisioning file ---- */

/* One trusted bundle-signing key, re-encoded by mbedTLS. */
struct wisp_prov_key {
    char hash[65]; /* SHA-256 of the key's DER SubjectPublicKeyInfo, lowercase hex */
    char *pem;     /* "-----BEGIN PUBLIC KEY-----" text, malloc'd */
};

/* A valid provisioning file. The strings borrow from root (NULL when the
 * file does not set them); trusted is owned. */
struct wisp_prov_input {
    struct cJSON *root;
    const char *broker;
    bool tls; /* ssl:// or mqtts:// */
    const char *ca;
    const char *fleet_token;
    const struct cJSON *labels; /* object of strings */
    const char *device_id;
    const char *username;
    const char *password;
    bool has_trusted; /* "trusted_keys" is present (even empty) */
    struct wisp_prov_key *trusted;
    size_t n_trusted;
};

/* Parses and checks the provisioning file text[0..len) read from path.
 * Every problem is printed to errs as "<path>:<key>: <what is wrong>".
 * Returns 0 when the file is valid, the number of problems (> 0) when it
 * is not, or -ENOMEM. in is filled in every case; release it with
 * wisp_prov_input_fini. text is only borrowed. */
int wisp_prov_input_parse(struct wisp_prov_input *in, const char *path, const char *text,
                          size_t len, FILE *errs);
/* Frees what in holds (wiping the secrets); in itself is the caller's. */
void wisp_prov_input_fini(struct wisp_prov_input *in);
/* The provisioning file as JSON text with its secrets (fleet_token,
 * mqtt.password) replaced by note: what stays on the boot partition.
 * malloc'd (the caller frees it), or NULL on OOM. */
char *wisp_prov_input_redacted(const struct wisp_prov_input *in, const char *note);

/* True when s is a valid device id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
bool wisp_prov_device_id_valid(const char *s);

/* ---- prov_crypto.c: mbedTLS ---- */

/* mbedTLS's CTR_DRBG seeded from its entropy source. */
struct wisp_prov_rng;
/* Returns 0 with *out set, or a negative errno with err filled. */
int wisp_prov_rng_create(struct wisp_prov_rng **out, char *err, size_t errlen);
void wisp_prov_rng_destroy(struct wisp_prov_rng *r); /* NULL is a no-op */
/* Fills buf[0..n). 0 or -EIO. */
int wisp_prov_rng_bytes(struct wisp_prov_rng *r, unsigned char *buf, size_t n);

/* SHA-256 of data[0..len) as 64 lowercase hex digits and a NUL. 0 or -EIO. */
int wisp_prov_sha256_hex(const void *data, size_t len, char out[65]);

/* Parses pem (one public key, NUL-terminated) and checks that it is an
 * ECDSA key on P-256. On success fills out (free it with
 * wisp_prov_key_fini) and returns 0; else -EINVAL (or -ENOMEM) with err
 * saying what is wrong. */
int wisp_prov_pubkey_parse(const char *pem, struct wisp_prov_key *out, char *err, size_t errlen);
void wisp_prov_key_fini(struct wisp_prov_key *k);

/* Checks that pem (NUL-terminated) holds one or more PEM X.509 certificates
 * and nothing else. 0, or -EINVAL with err. Validity dates are not checked:
 * a gateway's clock is often wrong at first boot. */
int wisp_prov_ca_check(const char *pem, char *err, size_t errlen);

/* Generates an ECDSA P-256 key pair. *priv_pem (SEC1 "EC PRIVATE KEY") and
 * *pub_pem are malloc'd NUL-terminated PEM texts the caller frees (wiping
 * *priv_pem first). 0 or a negative errno with err. */
int wisp_prov_keygen(struct wisp_prov_rng *r, char **priv_pem, char **pub_pem, char *err,
                     size_t errlen);
/* The public key (malloc'd PEM) of the private key text[0..len), which must
 * be an ECDSA P-256 key. 0, or -EINVAL / -ENOMEM with err. */
int wisp_prov_key_public(struct wisp_prov_rng *r, const char *text, size_t len, char **pub_pem,
                         char *err, size_t errlen);

/* ---- prov_plan.c, prov_merge.c: what the files should hold ---- */

/* What the command line chose. etc and state are absolute paths. */
struct wisp_prov_opts {
    const char *input;
    const char *etc;
    const char *state;
    const char *machine_id; /* file with the machine id, for the default device id */
    bool dry_run;
    bool keep_input;
    bool chown; /* give uid:gid the files and state directories written (--owner) */
    uid_t uid;
    gid_t gid;
};

enum wisp_prov_op {
    WISP_PROV_MKDIR,
    WISP_PROV_WRITE,
    WISP_PROV_REMOVE,
};

enum wisp_prov_change {
    WISP_PROV_SAME,   /* already as it should be */
    WISP_PROV_CREATE, /* absent: to be created */
    WISP_PROV_UPDATE, /* different content: to be replaced */
    WISP_PROV_ATTRS,  /* same content, wrong mode or owner */
    WISP_PROV_DELETE, /* to be removed */
};

/* One file or directory the provisioning owns, in the order of writing. */
struct wisp_prov_item {
    enum wisp_prov_op op;
    enum wisp_prov_change change;
    char *path;
    char *data; /* WRITE: the content; NULL keeps the file's content (mode only) */
    size_t len;
    mode_t mode;
    bool secret;   /* data is wiped when freed */
    bool json;     /* compared with the file as JSON, not byte by byte */
    bool config;   /* wispd.json: checked with wispd's parser before it is put in place */
    bool no_chown; /* MKDIR: keeps the caller's owner (configuration directories) */
    const char *what;
};

struct wisp_prov_plan {
    struct wisp_prov_item *items;
    size_t n, cap;
    char *device_id;
    bool new_key;         /* the device key is generated now */
    size_t register_item; /* the registration request's index in items */
};

/* Works out every file the provisioning writes and how each differs from
 * what is there now. Nothing is written. 0, or a negative errno with err
 * (an existing file that cannot be read or used). */
int wisp_prov_plan_build(struct wisp_prov_plan *p, const struct wisp_prov_opts *o,
                         const struct wisp_prov_input *in, struct wisp_prov_rng *rng, char *err,
                         size_t errlen);
void wisp_prov_plan_fini(struct wisp_prov_plan *p);
/* Appends an item; takes over path and data (also on failure). 0 or -ENOMEM. */
int wisp_prov_plan_add(struct wisp_prov_plan *p, enum wisp_prov_op op, char *path, char *data,
                       size_t len, mode_t mode, const char *what);
/* Items whose change is not WISP_PROV_SAME. */
size_t wisp_prov_plan_changes(const struct wisp_prov_plan *p);

/* The merged wispd.json: the existing config (existing, may be NULL) with
 * the keys the provisioning sets. Returns a new tree or NULL on OOM. */
struct cJSON *wisp_prov_merge_config(const struct cJSON *existing, const struct wisp_prov_input *in,
                                     const struct wisp_prov_opts *o, const char *device_id);
/* The merged device.json and the registration request. NULL on OOM. */
struct cJSON *wisp_prov_merge_device(const struct cJSON *existing, const struct wisp_prov_input *in,
                                     const char *device_id);
struct cJSON *wisp_prov_register_request(const struct cJSON *device, const char *pub_pem);

/* Deletes a tree after wiping its strings (they may be secrets). NULL is a
 * no-op. */
void wisp_prov_json_delete(struct cJSON *tree);
/* A key that appears twice in one object anywhere below node, or NULL. */
const char *wisp_prov_json_duplicate(const struct cJSON *node);

/* Checks a wispd config file with wispd's own parser: loading it, and with
 * finish the cross-field checks wispd makes at start. Messages name
 * `shown` instead of path. 0 or -EINVAL with err. */
int wisp_prov_check_config(const char *path, const char *shown, bool finish, char *err,
                           size_t errlen);
/* The same for config text held in memory. */
int wisp_prov_check_config_text(const char *text, size_t len, const char *shown, char *err,
                                size_t errlen);

/* ---- prov_fs.c: files ---- */

/* Reads a regular file of at most WISP_PROV_MAX_FILE bytes (wisp_read_file). */
int wisp_prov_read(const char *path, char **out, size_t *len);
/* Writes data to path through a temp file in the same directory: mode (and
 * owner with o->chown) set, fsync'ed, checked with wispd's config parser
 * when config is true, renamed over path, directory fsync'ed. On failure
 * nothing at path changed. 0 or a negative errno with err. */
int wisp_prov_write_atomic(const char *path, const void *data, size_t len, mode_t mode, bool config,
                           const struct wisp_prov_opts *o, char *err, size_t errlen);
/* Makes the directories of path that are missing (mkdir -p). */
int wisp_prov_mkdirs(const char *path, mode_t mode, const struct wisp_prov_opts *o, char *err,
                     size_t errlen);
/* Fsyncs the directory that holds path. 0 or a negative errno. */
int wisp_prov_sync_parent(const char *path);
/* Prints one line saying what the item's change does (or, with dry, would
 * do). */
void wisp_prov_describe(const struct wisp_prov_item *it, bool dry, FILE *out);
/* Carries out every item that is not WISP_PROV_SAME, in order, printing one
 * line per change to out. 0 or a negative errno with err; the items before
 * the failing one are in place. */
int wisp_prov_apply(const struct wisp_prov_plan *p, const struct wisp_prov_opts *o, FILE *out,
                    char *err, size_t errlen);

#endif
