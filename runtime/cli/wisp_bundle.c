/* wisp keygen / bundle / sign / verify / unpack: packing a function folder
 * into a signed bundle and checking one as a gateway would before using it. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "fnspec.h"
#include "sign.h"
#include "util.h"
#include "wisp_cli.h"

enum { ERR_CAP = 2048 };

bool wisp_cli_is_help(int argc, char **argv)
{
    return argc > 0 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0);
}

int wisp_cli_pack(const char *dir, const char *out, char **name_version, char *err, size_t errlen)
{
    struct wisp_fnspec *spec = NULL;
    int rc = wisp_fnspec_load(dir, &spec, err, errlen);
    if (rc) {
        char why[ERR_CAP];
        (void)snprintf(why, sizeof(why), "%s", err);
        return wisp_errf(err, errlen, rc, "invalid function: %s", why);
    }
    rc = wisp_bundle_pack(dir, spec->name, spec->version, out, err, errlen);
    if (!rc && name_version && asprintf(name_version, "%s %s", spec->name, spec->version) < 0) {
        *name_version = NULL;
        rc = -ENOMEM;
    }
    wisp_fnspec_destroy(spec);
    return rc;
}

/* Splits argv into one positional argument and the values of the named
 * options (NULL when absent); flag is set by --dev-unsigned when allowed.
 * Returns false on a usage error (already reported). */
static bool parse_args(const char *cmd, int argc, char **argv, const char **pos,
                       const char *opt_names[], const char *opt_vals[], size_t nopts, bool *flag)
{
    *pos = NULL;
    for (int i = 0; i < argc; i++) {
        size_t k = 0;
        while (k < nopts && strcmp(argv[i], opt_names[k]) != 0)
            k++;
        if (k < nopts) {
            if (i + 1 >= argc) {
                (void)fprintf(stderr, "wisp %s: %s needs a value\n", cmd, argv[i]);
                return false;
            }
            opt_vals[k] = argv[++i];
        } else if (flag && strcmp(argv[i], "--dev-unsigned") == 0) {
            *flag = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            (void)fprintf(stderr, "wisp %s: unknown option %s\n", cmd, argv[i]);
            return false;
        } else if (*pos) {
            (void)fprintf(stderr, "wisp %s: unexpected argument %s\n", cmd, argv[i]);
            return false;
        } else {
            *pos = argv[i];
        }
    }
    for (size_t k = 0; k < nopts; k++)
        if (!opt_vals[k]) {
            (void)fprintf(stderr, "wisp %s: %s is required\n", cmd, opt_names[k]);
            return false;
        }
    if (!*pos) {
        (void)fprintf(stderr, "wisp %s: missing the file or folder argument\n", cmd);
        return false;
    }
    return true;
}

int wisp_cmd_keygen(int argc, char **argv)
{
    char err[ERR_CAP];
    if (wisp_cli_is_help(argc, argv) || argc != 1) {
        (void)fprintf(argc == 1 ? stdout : stderr,
                      "Usage: wisp keygen OUT_PREFIX\n\n"
                      "Writes a new ECDSA P-256 signing key: OUT_PREFIX.key (private, mode 0600)\n"
                      "and OUT_PREFIX.pub (public; copy it into the gateways' trust directory).\n"
                      "Never overwrites an existing file.\n");
        return argc == 1 ? 0 : 2;
    }
    if (wisp_sign_keygen(argv[0], err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp keygen: %s\n", err);
        return 1;
    }
    printf("wrote %s.key (private, keep it secret) and %s.pub (public)\n", argv[0], argv[0]);
    return 0;
}

int wisp_cmd_bundle(int argc, char **argv)
{
    static const char *names[] = {"-o"};
    const char *vals[1] = {NULL}, *dir = NULL;
    char err[ERR_CAP];
    if (wisp_cli_is_help(argc, argv)) {
        printf("Usage: wisp bundle DIR -o FILE\n\n"
               "Checks the function in DIR like `wisp validate`, then packs the folder (every\n"
               "non-hidden file; no symlinks) into the bundle FILE. Sign it with `wisp sign`.\n");
        return 0;
    }
    if (!parse_args("bundle", argc, argv, &dir, names, vals, 1, NULL))
        return 2;
    char *what = NULL;
    int rc = wisp_cli_pack(dir, vals[0], &what, err, sizeof(err));
    if (rc == 0)
        printf("bundled %s into %s\n", what, vals[0]);
    else
        (void)fprintf(stderr, "wisp bundle: %s\n", err);
    free(what);
    return rc == 0 ? 0 : 1;
}

int wisp_cmd_sign(int argc, char **argv)
{
    static const char *names[] = {"--key"};
    const char *vals[1] = {NULL}, *file = NULL;
    char err[ERR_CAP];
    if (wisp_cli_is_help(argc, argv)) {
        printf("Usage: wisp sign FILE --key KEY\n\n"
               "Writes FILE.sig: an ECDSA P-256 / SHA-256 signature (DER) of FILE with the\n"
               "private key KEY (PEM), the same as `openssl dgst -sha256 -sign KEY`.\n");
        return 0;
    }
    if (!parse_args("sign", argc, argv, &file, names, vals, 1, NULL))
        return 2;
    /* Signing something that is not a bundle is a mistake worth stopping. */
    if (wisp_bundle_check(file, NULL, NULL, err, sizeof(err)) != 0 ||
        wisp_sign_file(file, vals[0], err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp sign: %s\n", err);
        return 1;
    }
    printf("wrote %s.sig\n", file);
    return 0;
}

/* Verifies file's signature (or, with dev_unsigned, accepts its absence
 * loudly) and checks the bundle; info receives its manifest. */
static int verify_bundle(const char *cmd, const char *file, const char *trust, bool dev_unsigned,
                         const char *dest, struct wisp_bundle_info *info)
{
    char err[ERR_CAP];
    struct wisp_sign_verified v;
    int rc = wisp_sign_verify(file, trust, &v, err, sizeof(err));
    bool unsigned_ok = rc == -ENODATA && dev_unsigned;
    if (rc != 0 && !unsigned_ok) {
        /* A changed bundle usually also breaks its own hashes: say so. */
        char err2[ERR_CAP];
        if (rc == -EKEYREJECTED && wisp_bundle_check(file, NULL, NULL, err2, sizeof(err2)) != 0)
            (void)fprintf(stderr, "wisp %s: %s: bad signature: the bundle was modified (%s)\n", cmd,
                          file, err2);
        else
            (void)fprintf(stderr, "wisp %s: %s\n", cmd, err);
        return 1;
    }
    if (unsigned_ok)
        (void)fprintf(stderr,
                      "WARNING: %s is NOT SIGNED; accepted only because of --dev-unsigned. "
                      "Never use this on a production gateway.\n",
                      file);
    const unsigned char *expect = unsigned_ok ? NULL : v.digest;
    rc = dest ? wisp_bundle_unpack(file, dest, expect, info, err, sizeof(err))
              : wisp_bundle_check(file, expect, info, err, sizeof(err));
    if (rc != 0) {
        (void)fprintf(stderr, "wisp %s: %s\n", cmd, err);
        return 1;
    }
    char hex[65];
    wisp_sha256_hex(info->digest, hex);
    printf("bundle %s\n  function %s version %s\n  sha256 %s\n", file, info->name, info->version,
           hex);
    if (unsigned_ok)
        printf("  UNSIGNED (accepted with --dev-unsigned)\n");
    else
        printf("  signed by trusted key %s/%s\n", trust, v.key);
    printf("  %zu files, %llu bytes:\n", info->nfiles, (unsigned long long)info->total);
    for (size_t i = 0; i < info->nfiles; i++)
        printf("    %10llu  %s  %s\n", (unsigned long long)info->files[i].size,
               info->files[i].sha256, info->files[i].path);
    return 0;
}

int wisp_cmd_verify(int argc, char **argv)
{
    static const char *names[] = {"--trust"};
    const char *vals[1] = {NULL}, *file = NULL;
    bool dev = false;
    if (wisp_cli_is_help(argc, argv)) {
        printf("Usage: wisp verify FILE --trust DIR [--dev-unsigned]\n\n"
               "Checks FILE.sig against every *.pem public key in DIR and every file in the\n"
               "bundle against its manifest, then prints the manifest. --dev-unsigned accepts\n"
               "a bundle without a signature (with a warning), for development only.\n"
               "Exit status: 0 ok, 1 refused (the reason is printed), 2 bad usage.\n");
        return 0;
    }
    if (!parse_args("verify", argc, argv, &file, names, vals, 1, &dev))
        return 2;
    struct wisp_bundle_info info;
    int rc = verify_bundle("verify", file, vals[0], dev, NULL, &info);
    if (rc == 0)
        wisp_bundle_info_fini(&info);
    return rc;
}

int wisp_cmd_unpack(int argc, char **argv)
{
    static const char *names[] = {"--trust", "-o"};
    const char *vals[2] = {NULL, NULL}, *file = NULL;
    bool dev = false;
    if (wisp_cli_is_help(argc, argv)) {
        printf("Usage: wisp unpack FILE --trust DIR -o OUT_DIR [--dev-unsigned]\n\n"
               "Verifies FILE like `wisp verify`, then writes its files into the new folder\n"
               "OUT_DIR (which must not exist): all of them, checked and synced, or nothing.\n");
        return 0;
    }
    if (!parse_args("unpack", argc, argv, &file, names, vals, 2, &dev))
        return 2;
    struct wisp_bundle_info info;
    int rc = verify_bundle("unpack", file, vals[0], dev, vals[1], &info);
    if (rc == 0) {
        printf("unpacked into %s\n", vals[1]);
        wisp_bundle_info_fini(&info);
    }
    return rc;
}
