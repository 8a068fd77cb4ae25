/* wisp deploy / rollout / devices / meter: the control plane (wisp-cloud)
 * from the command line, in the shape of `fission <noun> <verb>`. Every
 * command talks to the HTTP API described in cloud-sync/README.md. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http_client.h"
#include "sign.h"
#include "util.h"
#include "wisp_cli.h"

enum { ERR_CAP = 2048, TIMEOUT_MS = 30000, MAX_SIG = 1024 };
#define DEFAULT_CLOUD "http://127.0.0.1:8080"

/* Options every fleet command takes, and the rest of its arguments. */
struct fleet {
    const char *cmd;
    const char *cloud, *token, *token_file;
    char *token_buf;
    bool json;
    int argc;
    char **argv;
};

static void fleet_fini(struct fleet *f)
{
    if (f->token_buf)
        explicit_bzero(f->token_buf, strlen(f->token_buf));
    free(f->token_buf);
    free(f->argv);
}

static const char common_help[] =
    "Control plane options (every fleet command):\n"
    "  --cloud URL        wisp-cloud's API (default $WISP_CLOUD_URL, else " DEFAULT_CLOUD ")\n"
    "  --token TOKEN      API token (default $WISP_CLOUD_TOKEN)\n"
    "  --token-file FILE  read the API token from FILE\n"
    "  --json             print the control plane's JSON answer as it is\n";

/* Takes the common options out of argv; false on a usage error. */
static bool fleet_parse(struct fleet *f, const char *cmd, int argc, char **argv)
{
    memset(f, 0, sizeof(*f));
    f->cmd = cmd;
    f->argv = calloc((size_t)argc + 1, sizeof(*f->argv));
    if (!f->argv)
        return false;
    for (int i = 0; i < argc; i++) {
        const char **slot = strcmp(argv[i], "--cloud") == 0        ? &f->cloud
                            : strcmp(argv[i], "--token") == 0      ? &f->token
                            : strcmp(argv[i], "--token-file") == 0 ? &f->token_file
                                                                   : NULL;
        if (slot) {
            if (i + 1 >= argc) {
                (void)fprintf(stderr, "wisp %s: %s needs a value\n", cmd, argv[i]);
                return false;
            }
            *slot = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            f->json = true;
        } else {
            f->argv[f->argc++] = argv[i];
        }
    }
    const char *env = getenv("WISP_CLOUD_URL");
    if (!f->cloud)
        f->cloud = env && *env ? env : DEFAULT_CLOUD;
    if (f->token_file) {
        size_t len = 0;
        int rc = wisp_read_file(f->token_file, 4096, &f->token_buf, &len);
        if (rc != 0) {
            (void)fprintf(stderr, "wisp %s: --token-file %s: %s\n", cmd, f->token_file,
                          strerror(-rc));
            return false;
        }
        while (len && (f->token_buf[len - 1] == '\n' || f->token_buf[len - 1] == '\r'))
            f->token_buf[--len] = '\0';
        f->token = f->token_buf;
    }
    if (!f->token)
        f->token = getenv("WISP_CLOUD_TOKEN");
    return true;
}

/* One API call. Prints the reason and returns NULL on any failure
 * (unreachable, an error status, not JSON); else the parsed answer (with
 * raw set to the body when asked). */
static cJSON *call(const struct fleet *f, const char *method, const char *path, const char *ctype,
                   const void *body, size_t len, char **raw)
{
    char err[ERR_CAP];
    struct wisp_http_response r;
    if (wisp_http_request(f->cloud, method, path, f->token, ctype, body, len, TIMEOUT_MS, &r, err,
                          sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp %s: %s\n", f->cmd, err);
        return NULL;
    }
    cJSON *j = NULL;
    bool is_json = r.content_type && strstr(r.content_type, "json");
    if (is_json)
        j = cJSON_ParseWithLength(r.body, r.len);
    if (r.status >= 400) {
        const char *why = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "error"));
        (void)fprintf(stderr, "wisp %s: the control plane refused %s %s (%d): %s\n", f->cmd, method,
                      path, r.status, why ? why : (r.len ? r.body : "no reason given"));
        if (r.status == 401)
            (void)fprintf(stderr,
                          "wisp %s: set the API token with --token, --token-file or "
                          "WISP_CLOUD_TOKEN\n",
                          f->cmd);
        cJSON_Delete(j);
        j = NULL;
    } else if (raw) {
        *raw = r.body;
        r.body = NULL;
        if (!j)
            j = cJSON_CreateObject();
    } else if (!j) {
        (void)fprintf(stderr, "wisp %s: %s %s: the answer is not JSON\n", f->cmd, method, path);
    }
    wisp_http_response_fini(&r);
    return j;
}

static void print_json(const cJSON *j)
{
    char *s = cJSON_Print(j);
    if (s)
        printf("%s\n", s);
    free(s);
}

static const char *str_or(const cJSON *o, const char *key, const char *dflt)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
    return s ? s : dflt;
}

static double num_or(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* "k=v,k2=v2" from a labels object, into buf. */
static void labels_text(const cJSON *labels, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (const cJSON *l = labels ? labels->child : NULL; l && o + 1 < cap; l = l->next) {
        int n = snprintf(buf + o, cap - o, "%s%s=%s", o ? "," : "", l->string,
                         cJSON_IsString(l) ? l->valuestring : "?");
        if (n < 0)
            break;
        o += (size_t)n;
    }
    if (!buf[0])
        (void)snprintf(buf, cap, "-");
}

static bool path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Appends prefix and value, percent-encoding the value, to out. */
static int url_query(char *out, size_t cap, const char *prefix, const char *value)
{
    size_t o = strlen(prefix);
    if (o >= cap)
        return -ENAMETOOLONG;
    memcpy(out, prefix, o);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || strchr("-._~", *p);
        if (o + 4 >= cap)
            return -ENAMETOOLONG;
        if (plain)
            out[o++] = (char)*p;
        else
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", (unsigned)*p);
    }
    out[o] = '\0';
    return 0;
}

/* ---- wisp deploy ---- */

struct deploy_opts {
    const char *src, *to, *key;
    double canary, max_failure_rate, health_rate;
    long bake_s, health_min, wait_s;
    bool dev_unsigned, wait;
};

static const char deploy_help[] =
    "Usage: wisp deploy DIR|BUNDLE --to SELECTOR [options]\n"
    "\n"
    "Bundles and signs the function in DIR (or takes BUNDLE and BUNDLE.sig made with\n"
    "`wisp bundle` and `wisp sign`), uploads it and starts a staged rollout to the\n"
    "devices whose labels match SELECTOR (`site=plant-3,role=door`; `all` = every device).\n"
    "\n"
    "  --to SELECTOR            which devices (required)\n"
    "  --key KEY                the publisher's private key to sign with (needed for DIR\n"
    "                           unless --dev-unsigned)\n"
    "  --canary PCT%            canary share of the devices first (default 0: all at once)\n"
    "  --bake DURATION          how long the canaries must run cleanly (default 30s)\n"
    "  --max-failure-rate R     share of failed devices (0..1) that halts and rolls back\n"
    "                           (default 0: any failed device)\n"
    "  --health-min N           invocations a device watches a new version for (default 10)\n"
    "  --health-max-error-rate R  error share over those that rolls a device back (default 0.5)\n"
    "  --dev-unsigned           upload without a signature (devices accept it only with\n"
    "                           cloud.dev_unsigned)\n"
    "  --wait [SECONDS]         wait for the rollout to finish (default 120 s); exit 1 unless\n"
    "                           it is done\n";

/* Seconds from "30", "30s", "500ms", "2m", "1h"; -1 when malformed. */
static long parse_duration_s(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0 || !isfinite(v))
        return -1;
    double mult = strcmp(end, "") == 0 || strcmp(end, "s") == 0 ? 1
                  : strcmp(end, "ms") == 0                      ? 0.001
                  : strcmp(end, "m") == 0                       ? 60
                  : strcmp(end, "h") == 0                       ? 3600
                                                                : -1;
    if (mult < 0 || v * mult > 30 * 86400.0)
        return -1;
    return (long)ceil(v * mult);
}

static bool parse_rate(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v))
        return false;
    if (*end == '%') {
        v /= 100.0;
        end++;
    }
    if (*end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool deploy_parse(const struct fleet *f, struct deploy_opts *o)
{
    *o = (struct deploy_opts){.bake_s = 30, .health_min = 10, .health_rate = 0.5, .wait_s = 120};
    for (int i = 0; i < f->argc; i++) {
        const char *a = f->argv[i], *v = i + 1 < f->argc ? f->argv[i + 1] : NULL;
        bool ok = true, takes = true;
        if (!a)
            break;
        if (strcmp(a, "--to") == 0 && v) {
            o->to = v;
        } else if (strcmp(a, "--key") == 0 && v) {
            o->key = v;
        } else if (strcmp(a, "--canary") == 0 && v) {
            ok = parse_rate(v, 0, 1, &o->canary) && strchr(v, '%');
            if (!ok && parse_rate(v, 0, 100, &o->canary) && !strchr(v, '%')) {
                o->canary /= 100.0; /* "10" means 10 % */
                ok = true;
            }
        } else if (strcmp(a, "--bake") == 0 && v) {
            ok = (o->bake_s = parse_duration_s(v)) >= 0;
        } else if (strcmp(a, "--max-failure-rate") == 0 && v) {
            ok = parse_rate(v, 0, 1, &o->max_failure_rate);
        } else if (strcmp(a, "--health-min") == 0 && v) {
            char *end;
            o->health_min = strtol(v, &end, 10);
            ok = *end == '\0' && o->health_min >= 1 && o->health_min <= 1000000;
        } else if (strcmp(a, "--health-max-error-rate") == 0 && v) {
            ok = parse_rate(v, 0, 1, &o->health_rate);
        } else if (strcmp(a, "--dev-unsigned") == 0) {
            o->dev_unsigned = true;
            takes = false;
        } else if (strcmp(a, "--wait") == 0) {
            o->wait = true;
            takes = v && v[0] >= '0' && v[0] <= '9';
            if (takes)
                ok = (o->wait_s = parse_duration_s(v)) > 0;
        } else if (a[0] == '-' && a[1]) {
            (void)fprintf(stderr, "wisp deploy: %s %s\n", a,
                          v || strcmp(a, "--to") != 0 ? "is not an option here (or needs a value)"
                                                      : "needs a value");
            return false;
        } else if (!o->src) {
            o->src = a;
            takes = false;
        } else {
            (void)fprintf(stderr, "wisp deploy: unexpected argument %s\n", a);
            return false;
        }
        if (!ok) {
            (void)fprintf(stderr, "wisp deploy: %s: bad value %s\n", a, v ? v : "");
            return false;
        }
        i += takes ? 1 : 0;
    }
    if (!o->src || !o->to) {
        (void)fprintf(stderr, "wisp deploy: %s\n",
                      !o->src ? "missing the function folder or bundle" : "--to is required");
        return false;
    }
    return true;
}

/* The signed bundle message (cloud-sync/README.md): magic, signature
 * length, signature, bundle. */
static int build_message(const char *bundle, bool dev_unsigned, char **msg, size_t *len, char *err,
                         size_t errlen)
{
    char *b = NULL, *sig = NULL, sig_path[4096];
    size_t blen = 0, slen = 0;
    int n = snprintf(sig_path, sizeof(sig_path), "%s.sig", bundle);
    if (n < 0 || (size_t)n >= sizeof(sig_path))
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s: path too long", bundle);
    int rc = wisp_read_file(bundle, (size_t)64 << 20, &b, &blen);
    if (rc)
        return wisp_errf(err, errlen, rc, "%s: %s", bundle, strerror(-rc));
    if (access(sig_path, F_OK) == 0) {
        rc = wisp_read_file(sig_path, MAX_SIG, &sig, &slen);
        if (rc)
            rc = wisp_errf(err, errlen, rc, "%s: %s", sig_path, strerror(-rc));
    } else if (!dev_unsigned) {
        rc = wisp_errf(err, errlen, -ENOENT,
                       "%s: not signed (no %s): sign it with `wisp sign` or pass --key; "
                       "--dev-unsigned uploads it unsigned",
                       bundle, sig_path);
    }
    if (!rc && !(*msg = malloc(12 + slen + blen)))
        rc = -ENOMEM;
    if (!rc) {
        memcpy(*msg, "WISPSIGB", 8);
        for (int i = 0; i < 4; i++)
            (*msg)[8 + i] = (char)((slen >> (24 - 8 * i)) & 0xffu);
        if (slen)
            memcpy(*msg + 12, sig, slen);
        memcpy(*msg + 12 + slen, b, blen);
        *len = 12 + slen + blen;
    }
    free(b);
    free(sig);
    return rc;
}

/* Packs and signs DIR into tmpdir/bundle.wb; returns its path (malloc'd). */
static char *pack_dir(const char *dir, const char *key, const char *tmpdir, char *err,
                      size_t errlen)
{
    char *out = wisp_path_join(tmpdir, "bundle.wb");
    int rc = out ? wisp_cli_pack(dir, out, NULL, err, errlen) : -ENOMEM;
    if (!rc && key)
        rc = wisp_sign_file(out, key, err, errlen);
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}

static void remove_tmp(const char *tmpdir, const char *bundle)
{
    if (bundle) {
        char sig[4096];
        (void)snprintf(sig, sizeof(sig), "%s.sig", bundle);
        (void)unlink(sig);
        (void)unlink(bundle);
    }
    (void)rmdir(tmpdir);
}

static cJSON *upload(const struct fleet *f, const struct deploy_opts *o)
{
    char err[ERR_CAP], tmpdir[] = "/tmp/wisp-deploy-XXXXXX";
    char *msg = NULL, *packed = NULL;
    size_t len = 0;
    bool is_dir = path_is_dir(o->src);
    if (is_dir && !o->key && !o->dev_unsigned) {
        (void)fprintf(stderr, "wisp deploy: --key KEY is needed to sign %s (or --dev-unsigned)\n",
                      o->src);
        return NULL;
    }
    if (is_dir && !mkdtemp(tmpdir)) {
        (void)fprintf(stderr, "wisp deploy: cannot make a temporary folder: %s\n", strerror(errno));
        return NULL;
    }
    const char *bundle = o->src;
    int rc = 0;
    if (is_dir) {
        packed = pack_dir(o->src, o->key, tmpdir, err, sizeof(err));
        bundle = packed;
        rc = packed ? 0 : -EINVAL;
    } else if (o->key) {
        rc = wisp_sign_file(bundle, o->key, err, sizeof(err));
    }
    if (!rc)
        rc = build_message(bundle, o->dev_unsigned, &msg, &len, err, sizeof(err));
    if (is_dir)
        remove_tmp(tmpdir, packed);
    free(packed);
    if (rc) {
        (void)fprintf(stderr, "wisp deploy: %s\n", err);
        return NULL;
    }
    cJSON *j = call(f, "POST", "/v1/bundles", "application/octet-stream", msg, len, NULL);
    free(msg);
    return j;
}

static cJSON *start_rollout(const struct fleet *f, const struct deploy_opts *o, const char *sha)
{
    cJSON *req = cJSON_CreateObject(), *health = cJSON_CreateObject();
    if (!req || !health) {
        cJSON_Delete(req);
        cJSON_Delete(health);
        return NULL;
    }
    cJSON_AddStringToObject(req, "bundle", sha);
    cJSON_AddStringToObject(req, "selector", strcmp(o->to, "all") == 0 ? "" : o->to);
    cJSON_AddNumberToObject(req, "canary_percent", o->canary * 100.0);
    cJSON_AddNumberToObject(req, "bake_s", (double)o->bake_s);
    cJSON_AddNumberToObject(req, "max_failure_rate", o->max_failure_rate);
    cJSON_AddNumberToObject(health, "min_invocations", (double)o->health_min);
    cJSON_AddNumberToObject(health, "max_error_rate", o->health_rate);
    cJSON_AddItemToObject(req, "health", health);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    cJSON *j =
        body ? call(f, "POST", "/v1/rollouts", "application/json", body, strlen(body), NULL) : NULL;
    free(body);
    return j;
}

/* Counts devices by their state in a rollout answer. */
static void rollout_counts(const cJSON *r, int *total, int *active, int *failed)
{
    *total = *active = *failed = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(r, "devices"))
    {
        const char *st = str_or(d, "state", "");
        (*total)++;
        *active += strcmp(st, "active") == 0;
        *failed += strcmp(st, "failed") == 0;
    }
}

static bool rollout_final(const char *state)
{
    return strcmp(state, "done") == 0 || strcmp(state, "halted") == 0 ||
           strcmp(state, "rolled_back") == 0 || strcmp(state, "superseded") == 0;
}

static int wait_rollout(const struct fleet *f, const char *id, long wait_s)
{
    char path[256], last[128] = "";
    (void)snprintf(path, sizeof(path), "/v1/rollouts/%s", id);
    uint64_t t0 = wisp_mono_ns(), deadline = t0 + (uint64_t)wait_s * 1000000000ULL;
    for (;;) {
        cJSON *r = call(f, "GET", path, NULL, NULL, 0, NULL);
        if (!r)
            return 1;
        const char *state = str_or(r, "state", "?");
        int total, active, failed;
        rollout_counts(r, &total, &active, &failed);
        char line[128];
        (void)snprintf(line, sizeof(line), "%s: %d of %d devices active, %d failed", state, active,
                       total, failed);
        if (strcmp(line, last) != 0) {
            printf("  %6.1f s  %s\n", (double)(wisp_mono_ns() - t0) / 1e9, line);
            (void)fflush(stdout);
            (void)snprintf(last, sizeof(last), "%s", line);
        }
        bool fin = rollout_final(state);
        int code = strcmp(state, "done") == 0 ? 0 : 1;
        if (fin && code)
            (void)fprintf(stderr, "wisp deploy: rollout %s ended %s: %s\n", id, state,
                          str_or(r, "halted_reason", "no reason given"));
        cJSON_Delete(r);
        if (fin)
            return code;
        if (wisp_mono_ns() >= deadline) {
            (void)fprintf(stderr, "wisp deploy: rollout %s not finished after %ld s\n", id, wait_s);
            return 1;
        }
        (void)usleep(200000);
    }
}

int wisp_cmd_deploy(int argc, char **argv)
{
    struct fleet f;
    struct deploy_opts o;
    if (wisp_cli_is_help(argc, argv)) {
        printf("%s\n%s", deploy_help, common_help);
        return 0;
    }
    if (!fleet_parse(&f, "deploy", argc, argv) || !deploy_parse(&f, &o)) {
        fleet_fini(&f);
        return 2;
    }
    if (o.dev_unsigned)
        (void)fprintf(stderr, "wisp deploy: WARNING: uploading an UNSIGNED bundle; only devices "
                              "with cloud.dev_unsigned will run it\n");
    int code = 1;
    cJSON *b = upload(&f, &o), *r = NULL;
    const char *sha = str_or(b, "sha256", NULL);
    if (b && !sha)
        (void)fprintf(stderr, "wisp deploy: the control plane did not say the bundle's sha256\n");
    if (sha)
        r = start_rollout(&f, &o, sha);
    if (r && f.json) {
        print_json(r);
        code = 0;
    } else if (r) {
        int total, active, failed;
        rollout_counts(r, &total, &active, &failed);
        printf("rollout %s: %s %s (bundle %.12s) to %s: %d device(s), canary %g%%, bake %ld s\n",
               str_or(r, "id", "?"), str_or(b, "name", "?"), str_or(b, "version", "?"), sha,
               strcmp(o.to, "all") == 0 ? "all devices" : o.to, total, o.canary * 100.0, o.bake_s);
        code = o.wait ? wait_rollout(&f, str_or(r, "id", "?"), o.wait_s) : 0;
    }
    cJSON_Delete(b);
    cJSON_Delete(r);
    fleet_fini(&f);
    return code;
}

/* ---- wisp rollout ---- */

static void print_rollout_row(const cJSON *r)
{
    int total, active, failed;
    rollout_counts(r, &total, &active, &failed);
    printf("%-10s %-20s %-14s %-12s %3d/%-3d %3d  %s\n", str_or(r, "id", "?"),
           str_or(r, "function", "?"), str_or(r, "version", "?"), str_or(r, "state", "?"), active,
           total, failed, str_or(r, "created", "-"));
}

static void print_rollout(const cJSON *r)
{
    printf("rollout   %s\nfunction  %s %s (bundle %s)\nselector  %s\nstate     %s\n",
           str_or(r, "id", "?"), str_or(r, "function", "?"), str_or(r, "version", "?"),
           str_or(r, "bundle", "?"),
           str_or(r, "selector", "")[0] ? str_or(r, "selector", "") : "(all devices)",
           str_or(r, "state", "?"));
    const char *why = str_or(r, "halted_reason", NULL);
    if (why)
        printf("reason    %s\n", why);
    static const char *times[] = {"created", "completed_at", "halted_at", "rolled_back_at"};
    for (size_t i = 0; i < WISP_ARRAY_LEN(times); i++)
        if (str_or(r, times[i], NULL))
            printf("%-9s %s\n", times[i], str_or(r, times[i], NULL));
    printf("\n%-24s %-8s %-12s %s\n", "DEVICE", "PHASE", "STATE", "PREVIOUS");
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(r, "devices"))
    {
        const char *prev = str_or(d, "previous", "-");
        printf("%-24s %-8s %-12s %.12s\n", str_or(d, "device", "?"), str_or(d, "phase", "-"),
               str_or(d, "state", "?"), prev);
    }
}

static const char rollout_help[] =
    "Usage: wisp rollout status [ID] | halt ID | rollback ID\n"
    "\n"
    "  status       list the rollouts, newest first\n"
    "  status ID    one rollout with the state of each of its devices\n"
    "  halt ID      stop promoting; devices keep what they run\n"
    "  rollback ID  every device of the rollout gets its previous version back\n";

int wisp_cmd_rollout(int argc, char **argv)
{
    struct fleet f;
    if (argc == 0 || wisp_cli_is_help(argc, argv)) {
        (void)fprintf(argc ? stdout : stderr, "%s\n%s", rollout_help, common_help);
        return argc ? 0 : 2;
    }
    if (!fleet_parse(&f, "rollout", argc, argv)) {
        fleet_fini(&f);
        return 2;
    }
    const char *verb = f.argc > 0 ? f.argv[0] : "", *id = f.argc > 1 ? f.argv[1] : NULL;
    bool status = strcmp(verb, "status") == 0 || strcmp(verb, "list") == 0;
    bool act = strcmp(verb, "halt") == 0 || strcmp(verb, "rollback") == 0;
    if ((!status && !act) || (act && !id) || f.argc > 2 ||
        (id && (strchr(id, '/') || strchr(id, '?')))) {
        (void)fprintf(stderr, "wisp rollout: %s\n%s", f.argc > 2 ? "too many arguments" : "",
                      rollout_help);
        fleet_fini(&f);
        return 2;
    }
    char path[512];
    if (act)
        (void)snprintf(path, sizeof(path), "/v1/rollouts/%s/%s", id, verb);
    else
        (void)snprintf(path, sizeof(path), "/v1/rollouts%s%s", id ? "/" : "", id ? id : "");
    cJSON *j = call(&f, act ? "POST" : "GET", path, act ? "application/json" : NULL, "{}",
                    act ? 2 : 0, NULL);
    int code = j ? 0 : 1;
    if (j && f.json) {
        print_json(j);
    } else if (j && id) {
        print_rollout(j);
    } else if (j) {
        printf("%-10s %-20s %-14s %-12s %-7s %4s  %s\n", "ID", "FUNCTION", "VERSION", "STATE",
               "ACTIVE", "FAIL", "CREATED");
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(j, "rollouts"))
        {
            print_rollout_row(r);
        }
    }
    cJSON_Delete(j);
    fleet_fini(&f);
    return code;
}

/* ---- wisp devices ---- */

static void print_device(const cJSON *d)
{
    char labels[256], fns[512];
    labels_text(cJSON_GetObjectItemCaseSensitive(d, "labels"), labels, sizeof(labels));
    size_t o = 0;
    fns[0] = '\0';
    const cJSON *fn;
    cJSON_ArrayForEach(fn, cJSON_GetObjectItemCaseSensitive(d, "functions"))
    {
        int n = snprintf(fns + o, sizeof(fns) - o, "%s%s@%s(%s)", o ? " " : "", fn->string,
                         str_or(fn, "version", "?"), str_or(fn, "status", "?"));
        if (n < 0 || (size_t)n >= sizeof(fns) - o)
            break;
        o += (size_t)n;
    }
    const cJSON *online = cJSON_GetObjectItemCaseSensitive(d, "online");
    printf("%-24s %-7s %-30s %-24s %s\n", str_or(d, "device", "?"),
           cJSON_IsTrue(online) ? "online" : "offline", labels, str_or(d, "last_seen", "-"),
           fns[0] ? fns : "-");
}

int wisp_cmd_devices(int argc, char **argv)
{
    struct fleet f;
    if (wisp_cli_is_help(argc, argv)) {
        printf("Usage: wisp devices [--label k=v[,k2=v2]]\n\n"
               "The registered devices: online or not, labels, last contact and the managed\n"
               "functions each one runs (name@version(status)).\n\n%s",
               common_help);
        return 0;
    }
    if (!fleet_parse(&f, "devices", argc, argv)) {
        fleet_fini(&f);
        return 2;
    }
    const char *label = NULL;
    for (int i = 0; i < f.argc; i++) {
        if (strcmp(f.argv[i], "--label") == 0 && i + 1 < f.argc && !label) {
            label = f.argv[++i];
        } else {
            (void)fprintf(stderr, "wisp devices: unexpected argument %s\n", f.argv[i]);
            fleet_fini(&f);
            return 2;
        }
    }
    char path[1024] = "/v1/devices";
    if (label && url_query(path, sizeof(path), "/v1/devices?label=", label) != 0) {
        (void)fprintf(stderr, "wisp devices: --label is too long\n");
        fleet_fini(&f);
        return 2;
    }
    cJSON *j = call(&f, "GET", path, NULL, NULL, 0, NULL);
    if (j && f.json) {
        print_json(j);
    } else if (j) {
        printf("%-24s %-7s %-30s %-24s %s\n", "DEVICE", "STATUS", "LABELS", "LAST SEEN",
               "FUNCTIONS");
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(j, "devices"))
        {
            print_device(d);
        }
    }
    int code = j ? 0 : 1;
    cJSON_Delete(j);
    fleet_fini(&f);
    return code;
}

/* ---- wisp meter ---- */

static const char meter_help[] =
    "Usage: wisp meter [--by function|device] [--period hour|day] [--since T] [--until T] "
    "[--csv]\n"
    "\n"
    "Usage the control plane has counted from the devices' metering records: invocations,\n"
    "errors, billed milliseconds, GB-seconds and bytes, per function (default) or device and\n"
    "per day (default) or hour. T is RFC 3339 (2026-11-27T00:00:00Z) or a date (2026-11-27).\n"
    "--csv prints the control plane's CSV export.\n";

static void print_meter(const cJSON *j, const char *by)
{
    printf("%-20s %-24s %12s %8s %12s %12s %12s %12s\n", "PERIOD",
           strcmp(by, "device") == 0 ? "DEVICE" : "FUNCTION", "INVOCATIONS", "ERRORS", "BILLED_MS",
           "GB_SECONDS", "BYTES_IN", "BYTES_OUT");
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(j, "rows"))
    {
        printf("%-20s %-24s %12.0f %8.0f %12.0f %12.9f %12.0f %12.0f\n", str_or(r, "period", "?"),
               str_or(r, by, "?"), num_or(r, "invocations", 0), num_or(r, "errors", 0),
               num_or(r, "billed_ms", 0), num_or(r, "gb_seconds", 0), num_or(r, "bytes_in", 0),
               num_or(r, "bytes_out", 0));
    }
}

/* A bare date (2026-11-27) means its start, UTC; anything else goes as it is. */
static const char *full_time(const char *t, char *buf, size_t cap)
{
    bool date = strlen(t) == 10 && t[4] == '-' && t[7] == '-';
    for (size_t i = 0; date && i < 10; i++)
        date = i == 4 || i == 7 || (t[i] >= '0' && t[i] <= '9');
    if (!date)
        return t;
    (void)snprintf(buf, cap, "%sT00:00:00Z", t);
    return buf;
}

int wisp_cmd_meter(int argc, char **argv)
{
    struct fleet f;
    if (wisp_cli_is_help(argc, argv)) {
        printf("%s\n%s", meter_help, common_help);
        return 0;
    }
    if (!fleet_parse(&f, "meter", argc, argv)) {
        fleet_fini(&f);
        return 2;
    }
    const char *by = "function", *period = "day", *since = NULL, *until = NULL;
    bool csv = false;
    for (int i = 0; i < f.argc; i++) {
        const char *a = f.argv[i], *v = i + 1 < f.argc ? f.argv[i + 1] : NULL;
        if (!a)
            break;
        const char **slot = strcmp(a, "--by") == 0       ? &by
                            : strcmp(a, "--period") == 0 ? &period
                            : strcmp(a, "--since") == 0  ? &since
                            : strcmp(a, "--until") == 0  ? &until
                                                         : NULL;
        if (slot && v) {
            *slot = v;
            i++;
        } else if (strcmp(a, "--csv") == 0) {
            csv = true;
        } else {
            (void)fprintf(stderr, "wisp meter: %s %s\n%s", a,
                          slot ? "needs a value" : "is not an option here", meter_help);
            fleet_fini(&f);
            return 2;
        }
    }
    if ((strcmp(by, "function") != 0 && strcmp(by, "device") != 0) ||
        (strcmp(period, "hour") != 0 && strcmp(period, "day") != 0)) {
        (void)fprintf(stderr, "wisp meter: --by takes function or device, --period hour or day\n");
        fleet_fini(&f);
        return 2;
    }
    char path[1024];
    int n = snprintf(path, sizeof(path), "/v1/meter?by=%s&period=%s%s", by, period,
                     csv ? "&format=csv" : "");
    int rc = n > 0 && (size_t)n < sizeof(path) ? 0 : -ENAMETOOLONG;
    const char *names[] = {"&since=", "&until="}, *vals[] = {since, until};
    for (size_t k = 0; k < 2 && !rc; k++) {
        if (vals[k]) {
            char buf[64];
            rc = url_query(path + strlen(path), sizeof(path) - strlen(path), names[k],
                           full_time(vals[k], buf, sizeof(buf)));
        }
    }
    if (rc) {
        (void)fprintf(stderr, "wisp meter: --since/--until too long\n");
        fleet_fini(&f);
        return 2;
    }
    char *raw = NULL;
    cJSON *j = call(&f, "GET", path, NULL, NULL, 0, csv ? &raw : NULL);
    if (j && csv)
        (void)fputs(raw ? raw : "", stdout);
    else if (j && f.json)
        print_json(j);
    else if (j)
        print_meter(j, by);
    int code = j ? 0 : 1;
    free(raw);
    cJSON_Delete(j);
    fleet_fini(&f);
    return code;
}
