/* Function bundles and their signatures (cloud-sync/common): round trips,
 * every malformed bundle a reader must refuse, and signature checks. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>

#include "bundle.h"
#include "check.h"
#include "testutil.h"
#include "sign.h"

static char root[64];
static char err[4096];

static const char *at(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    (void)snprintf(b, sizeof(bufs[0]), "%s/%s", root, name);
    return b;
}

static void put(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fwrite(data, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}

static void put_str(const char *path, const char *s)
{
    put(path, s, strlen(s));
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    (void)fclose(f);
    return buf;
}

/* A fresh temp tree with a function folder "fn" in it. */
static void setup(void)
{
    if (root[0])
        wisp_test_rmtree(root);
    (void)snprintf(root, sizeof(root), "/tmp/wisp-test-bundle-XXXXXX");
    CHECK(mkdtemp(root) != NULL);
    CHECK(mkdir(at("fn"), 0755) == 0);
    CHECK(mkdir(at("fn/lib"), 0755) == 0);
    CHECK(mkdir(at("fn/lib/sub"), 0755) == 0);
    put_str(at("fn/function.json"), "{\"name\":\"demo\",\"triggers\":[]}");
    put_str(at("fn/handler.lua"), "return function() end\n");
    put_str(at("fn/lib/util.lua"), "return {x = 1}\n");
    put_str(at("fn/lib/sub/deep.lua"), "return 2\n");
    put_str(at("fn/.hidden"), "not bundled");
}

static void pack_ok(const char *out)
{
    int rc = wisp_bundle_pack(at("fn"), "demo", "1.0", out, err, sizeof(err));
    if (rc)
        (void)fprintf(stderr, "pack: %s\n", err);
    CHECK_INT_EQ(rc, 0);
}

/* Writes a bundle from a manifest and payload, trusting nothing. */
static void craft(const char *path, const char *manifest, const char *payload)
{
    size_t mlen = strlen(manifest), plen = strlen(payload);
    unsigned char *buf = malloc(12 + mlen + plen);
    CHECK(buf != NULL);
    if (!buf)
        return;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)"WISPBNDL"[i];
    for (int i = 0; i < 4; i++)
        buf[8 + i] = (unsigned char)(mlen >> (24 - 8 * i));
    for (size_t i = 0; i < mlen; i++)
        buf[12 + i] = (unsigned char)manifest[i];
    for (size_t i = 0; i < plen; i++)
        buf[12 + mlen + i] = (unsigned char)payload[i];
    put(path, buf, 12 + mlen + plen);
    free(buf);
}

static void craft_one(const char *path, const char *file_path, const char *size)
{
    /* sha256("{}") and sha256("x"). */
    char manifest[1024];
    (void)snprintf(manifest, sizeof(manifest),
                   "{\"format\":1,\"name\":\"demo\",\"version\":\"1\",\"files\":["
                   "{\"path\":\"function.json\",\"size\":2,\"sha256\":"
                   "\"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\"},"
                   "{\"path\":\"%s\",\"size\":%s,\"sha256\":"
                   "\"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\"}]}",
                   file_path, size);
    craft(path, manifest, "{}x");
}

static int refuse(const char *bundle, const char *want)
{
    struct wisp_bundle_info info;
    err[0] = '\0';
    int rc = wisp_bundle_check(bundle, NULL, &info, err, sizeof(err));
    CHECK(rc != 0);
    CHECK_CONTAINS(err, want);
    return rc;
}

static void test_round_trip(void)
{
    setup();
    pack_ok(at("b.wb"));
    struct wisp_bundle_info info;
    CHECK_INT_EQ(wisp_bundle_check(at("b.wb"), NULL, &info, err, sizeof(err)), 0);
    CHECK_STR_EQ(info.name, "demo");
    CHECK_STR_EQ(info.version, "1.0");
    CHECK_INT_EQ(info.nfiles, 4);
    if (info.nfiles == 4) {
        CHECK_STR_EQ(info.files[0].path, "function.json");
        CHECK_STR_EQ(info.files[2].path, "lib/sub/deep.lua");
    }
    unsigned char digest[32];
    memcpy(digest, info.digest, sizeof(digest));
    wisp_bundle_info_fini(&info);

    CHECK_INT_EQ(wisp_bundle_unpack(at("b.wb"), at("out"), digest, &info, err, sizeof(err)), 0);
    wisp_bundle_info_fini(&info);
    size_t len = 0;
    char *text = slurp(at("out/lib/sub/deep.lua"), &len);
    CHECK(text && len == 9 && memcmp(text, "return 2\n", 9) == 0);
    free(text);
    struct stat st;
    CHECK(stat(at("out/.hidden"), &st) != 0);

    /* The target must be new; a different expected digest is refused. */
    CHECK_INT_EQ(wisp_bundle_unpack(at("b.wb"), at("out"), NULL, NULL, err, sizeof(err)), -EEXIST);
    CHECK_CONTAINS(err, "already exists");
    digest[0] ^= 1;
    CHECK(wisp_bundle_check(at("b.wb"), digest, NULL, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "changed after its signature was verified");
}

static void test_pack_refuses(void)
{
    setup();
    CHECK(symlink("handler.lua", at("fn/lib/link.lua")) == 0);
    CHECK(wisp_bundle_pack(at("fn"), "demo", "1", at("b.wb"), err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "a symbolic link");
    struct stat st;
    CHECK(lstat(at("b.wb"), &st) != 0);
    CHECK(unlink(at("fn/lib/link.lua")) == 0);
    CHECK(truncate(at("fn/lib/util.lua"), (off_t)WISP_BUNDLE_MAX_FILE + 1) == 0);
    CHECK_INT_EQ(wisp_bundle_pack(at("fn"), "demo", "1", at("b.wb"), err, sizeof(err)), -EFBIG);
    CHECK_CONTAINS(err, "more than the limit");
    CHECK(unlink(at("fn/function.json")) == 0 && unlink(at("fn/lib/util.lua")) == 0);
    CHECK(wisp_bundle_pack(at("fn"), "demo", "1", at("b.wb"), err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "no function.json");
}

static void test_truncated_and_trailing(void)
{
    setup();
    pack_ok(at("b.wb"));
    struct stat st;
    CHECK(stat(at("b.wb"), &st) == 0);
    CHECK(truncate(at("b.wb"), st.st_size - 3) == 0);
    refuse(at("b.wb"), "truncated");
    CHECK(truncate(at("b.wb"), 5) == 0);
    refuse(at("b.wb"), "truncated");
    pack_ok(at("b.wb"));
    FILE *f = fopen(at("b.wb"), "ab");
    CHECK(f && fputs("junk", f) >= 0 && fclose(f) == 0);
    refuse(at("b.wb"), "4 bytes of trailing data");
    put_str(at("c.wb"), "PK\3\4 definitely not a bundle");
    refuse(at("c.wb"), "not a Wisp bundle");
}

static void test_flipped_byte(void)
{
    setup();
    pack_ok(at("b.wb"));
    struct stat st;
    CHECK(stat(at("b.wb"), &st) == 0);
    int fd = open(at("b.wb"), O_RDWR);
    char c = 0;
    CHECK(fd >= 0 && pread(fd, &c, 1, st.st_size - 2) == 1);
    c ^= 0x20;
    CHECK(pwrite(fd, &c, 1, st.st_size - 2) == 1);
    close(fd);
    refuse(at("b.wb"), "b.wb: file lib/util.lua: sha256 mismatch");
    /* A failed unpack leaves neither the target nor its temporary. */
    CHECK(wisp_bundle_unpack(at("b.wb"), at("out"), NULL, NULL, err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "sha256 mismatch");
    CHECK(lstat(at("out"), &st) != 0);
    char cmd[256];
    (void)snprintf(cmd, sizeof(cmd), "ls %s | grep -q tmp", root);
    CHECK(system(cmd) != 0);
}

static void test_bad_manifests(void)
{
    setup();
    craft_one(at("ok.wb"), "x.lua", "1");
    struct wisp_bundle_info info;
    CHECK_INT_EQ(wisp_bundle_check(at("ok.wb"), NULL, &info, err, sizeof(err)), 0);
    wisp_bundle_info_fini(&info);
    CHECK_INT_EQ(wisp_bundle_unpack(at("ok.wb"), at("ok"), NULL, NULL, err, sizeof(err)), 0);

    craft_one(at("b.wb"), "../x", "1");
    refuse(at("b.wb"), "\"..\" component");
    CHECK(wisp_bundle_unpack(at("b.wb"), at("o1"), NULL, NULL, err, sizeof(err)) != 0);
    struct stat st;
    CHECK(lstat(at("x"), &st) != 0 && lstat(at("o1"), &st) != 0);
    static const struct {
        const char *path, *size, *why;
    } bad[] = {
        {"lib/../../x", "1", "\"..\" component"},
        {"/abs", "1", "absolute"},
        {"function.json", "1", "duplicate path \"function.json\""},
        {"function.json/x", "1", "conflicting path"},
        {"x.lua", "1e15", "declared size"},
        {"x.lua", "16777216", "truncated"},
        {"x.lua", "-1", "declared size"},
        {"x.lua", "0", "trailing data"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        craft_one(at("b.wb"), bad[i].path, bad[i].size);
        refuse(at("b.wb"), bad[i].why);
    }
    craft(at("b.wb"), "{\"format\":2,\"name\":\"d\",\"version\":\"1\",\"files\":[]}", "");
    refuse(at("b.wb"), "format must be 1");
    craft(at("b.wb"), "not json", "");
    refuse(at("b.wb"), "not a JSON object");
    craft(at("b.wb"), "{\"format\":1,\"name\":\"d\",\"version\":\"1\",\"files\":[],\"x\":1}", "");
    refuse(at("b.wb"), "unknown key \"x\"");
}

/* Writes a P-384 key pair as PEM (the curve a signer must not use). */
static void p384_keys(const char *priv_path, const char *pub_path)
{
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context pk;
    unsigned char buf[2048];
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_pk_init(&pk);
    CHECK(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, NULL, 0) == 0);
    CHECK(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) == 0);
    CHECK(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP384R1, mbedtls_pk_ec(pk), mbedtls_ctr_drbg_random,
                              &drbg) == 0);
    CHECK(mbedtls_pk_write_key_pem(&pk, buf, sizeof(buf)) == 0);
    put_str(priv_path, (const char *)buf);
    CHECK(mbedtls_pk_write_pubkey_pem(&pk, buf, sizeof(buf)) == 0);
    put_str(pub_path, (const char *)buf);
    mbedtls_pk_free(&pk);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
}

static void copy(const char *from, const char *to)
{
    size_t len = 0;
    char *text = slurp(from, &len);
    CHECK(text != NULL);
    if (text)
        put(to, text, len);
    free(text);
}

static void test_signatures(void)
{
    setup();
    struct wisp_sign_verified v;
    pack_ok(at("b.wb"));
    CHECK(mkdir(at("trust"), 0755) == 0);
    CHECK_INT_EQ(wisp_sign_keygen(at("a"), err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_sign_keygen(at("b"), err, sizeof(err)), 0);
    struct stat st;
    CHECK(stat(at("a.key"), &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_INT_EQ(wisp_sign_keygen(at("a"), err, sizeof(err)), -EEXIST);
    CHECK_CONTAINS(err, "refusing to overwrite");

    /* Unsigned; then an empty trust directory. */
    CHECK_INT_EQ(wisp_sign_verify(at("b.wb"), at("trust"), &v, err, sizeof(err)), -ENODATA);
    CHECK_CONTAINS(err, "no signature");
    CHECK_INT_EQ(wisp_sign_file(at("b.wb"), at("a.key"), err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_sign_verify(at("b.wb"), at("trust"), &v, err, sizeof(err)), -ENOKEY);
    CHECK_CONTAINS(err, "no usable trusted key");

    /* Trusted key: good, and the digest is the bundle's. */
    copy(at("a.pub"), at("trust/a.pem"));
    CHECK_INT_EQ(wisp_sign_verify(at("b.wb"), at("trust"), &v, err, sizeof(err)), 0);
    CHECK_STR_EQ(v.key, "a.pem");
    CHECK_INT_EQ(wisp_bundle_check(at("b.wb"), v.digest, NULL, err, sizeof(err)), 0);

    /* Signed by a key that is not trusted. */
    CHECK_INT_EQ(wisp_sign_file(at("b.wb"), at("b.key"), err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_sign_verify(at("b.wb"), at("trust"), &v, err, sizeof(err)), -EKEYREJECTED);
    CHECK_CONTAINS(err, "bad signature");

    /* Tampered after signing. */
    CHECK_INT_EQ(wisp_sign_file(at("b.wb"), at("a.key"), err, sizeof(err)), 0);
    FILE *f = fopen(at("b.wb"), "ab");
    CHECK(f && fputc('!', f) != EOF && fclose(f) == 0);
    CHECK_INT_EQ(wisp_sign_verify(at("b.wb"), at("trust"), &v, err, sizeof(err)), -EKEYREJECTED);

    /* Malformed signature; a public key given as the signing key. */
    put_str(at("b.wb.sig"), "not DER at all");
    CHECK_INT_EQ(wisp_sign_verify(at("b.wb"), at("trust"), &v, err, sizeof(err)), -EBADMSG);
    CHECK_CONTAINS(err, "malformed signature");
    CHECK(wisp_sign_file(at("b.wb"), at("a.pub"), err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "not a private key");

    /* P-384: refused for signing, skipped (with the reason) when trusted. */
    p384_keys(at("p384.key"), at("p384.pub"));
    CHECK(wisp_sign_file(at("b.wb"), at("p384.key"), err, sizeof(err)) != 0);
    CHECK_CONTAINS(err, "must be on P-256");
    CHECK(unlink(at("trust/a.pem")) == 0);
    copy(at("p384.pub"), at("trust/p384.pem"));
    CHECK_INT_EQ(wisp_sign_file(at("b.wb"), at("a.key"), err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_sign_verify(at("b.wb"), at("trust"), &v, err, sizeof(err)), -ENOKEY);
    CHECK_CONTAINS(err, "secp384r1");
}

static void test_cleanup(void)
{
    if (root[0])
        wisp_test_rmtree(root);
    root[0] = '\0';
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"round_trip", test_round_trip},
        {"pack_refuses", test_pack_refuses},
        {"truncated_and_trailing", test_truncated_and_trailing},
        {"flipped_byte", test_flipped_byte},
        {"bad_manifests", test_bad_manifests},
        {"signatures", test_signatures},
        {"cleanup", test_cleanup},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
