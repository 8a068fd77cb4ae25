/* wisp: the Wisp command line. `wisp run` runs a function once through the
 * same executor, sandbox and limits as wispd, without a broker. */
#define WISP_LOG_MODULE "wisp"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "pool.h"
#include "config.h"
#include "devices.h"
#include "registry.h"
#include "store.h"
#include "util.h"
#include "wisp_cli.h"

static void usage(FILE *out)
{
    (void)fprintf(out, "Usage: wisp <command> [options]\n"
                       "\n"
                       "Commands:\n"
                       "  run DIR [--event JSON|@FILE] [--topic TOPIC] [--data DIR]\n"
                       "        run the function in DIR once, print what it published and logged;\n"
                       "        exits 1 when the handler fails\n"
                       "  validate DIR...\n"
                       "        check function folders (or folders of them) without running them\n"
                       "  state FUNCTION [get KEY | keys [PREFIX]] [--data DIR]\n"
                       "        show a function's stored state on this gateway\n"
                       "  dlq list|replay|purge ... [--data DIR]\n"
                       "        dead letters: show them, put them back in the inbox, delete them\n"
                       "  backup DEST_DIR [--data DIR]\n"
                       "        compacting copy of the store, safe while wispd runs\n"
                       "  sensors [--config FILE]\n"
                       "        the configured sensors with a reading taken now\n"
                       "  gpio [--config FILE]\n"
                       "        GPIO chips and their lines\n"
                       "  keygen OUT_PREFIX\n"
                       "        new ECDSA P-256 signing key: OUT_PREFIX.key and OUT_PREFIX.pub\n"
                       "  bundle DIR -o FILE\n"
                       "        validate the function in DIR and pack it into a bundle file\n"
                       "  sign FILE --key KEY\n"
                       "        sign a bundle: writes FILE.sig\n"
                       "  verify FILE --trust DIR [--dev-unsigned]\n"
                       "        check a bundle's signature and contents, print its manifest\n"
                       "  unpack FILE --trust DIR -o OUT_DIR [--dev-unsigned]\n"
                       "        verify a bundle and write its files into a new folder\n"
                       "  deploy DIR|BUNDLE --to SELECTOR [--canary PCT%%] [--key KEY] [--wait]\n"
                       "        sign and upload a function, roll it out to the matching devices\n"
                       "  rollout status [ID] | halt ID | rollback ID\n"
                       "        follow, stop or undo a rollout\n"
                       "  devices [--label k=v]\n"
                       "        the fleet: devices, labels, what each one runs\n"
                       "  meter [--by function|device] [--period hour|day] [--since T] [--csv]\n"
                       "        usage counted from the devices' metering records\n"
                       "  version\n"
                       "\n"
                       "Run `wisp <command> --help` for a command's options.\n");
}

static void run_usage(FILE *out)
{
    (void)fprintf(out,
                  "Usage: wisp run DIR [--event JSON|@FILE] [--topic TOPIC] [--data DIR]\n"
                  "                [--config FILE] [--log-level L]\n"
                  "\n"
                  "  DIR            a function folder (function.json + handler)\n"
                  "  --event JSON   the event payload, inline or @file (default: {})\n"
                  "  --topic TOPIC  event.subject (default: the first MQTT trigger's filter with\n"
                  "                 wildcards replaced by \"test\")\n"
                  "  --data DIR     keep ctx.state in DIR/store (inspect it with `wisp state`);\n"
                  "                 default: a throwaway store, removed afterwards\n"
                  "  --config FILE  the gateway's wispd config: ctx.sensor and ctx.gpio use its\n"
                  "                 sensors and GPIO chips (without it they return an error)\n"
                  "  --log-level L  debug, info (default), warn or error\n"
                  "\n"
                  "Published messages go to stdout, one per line: TOPIC qos=N retain=B PAYLOAD.\n"
                  "Logs and the REPORT line go to stderr. Exit status: 0 ok, 1 handler failed,\n"
                  "2 bad usage or invalid function.\n");
}

struct run_state {
    enum wisp_outcome outcome;
    bool done;
    struct wisp_devices *devices; /* with --config: ctx.sensor and ctx.gpio work */
};

static int run_device(void *ud, const struct wisp_fnspec *spec, const struct wisp_devcall_req *req,
                      struct wisp_devcall_reading *reading, int *value, char *msg, size_t msglen,
                      uint64_t *token)
{
    struct run_state *st = ud;
    if (!st->devices)
        return wisp_errf(msg, msglen, -ENOTSUP,
                         "no sensors or GPIO lines here: pass --config with the gateway's wispd "
                         "config to use them");
    return wisp_devices_call(st->devices, spec, req, reading, value, msg, msglen, token);
}

static int print_publish(void *ud, const char *topic, const void *payload, size_t len, int qos,
                         int retain)
{
    (void)ud;
    printf("%s qos=%d retain=%s ", topic, qos, retain ? "true" : "false");
    size_t written = fwrite(payload, 1, len, stdout);
    putchar('\n');
    /* A short write or failed flush (closed pipe, full disk) is reported to
     * the pool as a failed publish rather than lost silently. */
    if (fflush(stdout) != 0 || written != len)
        return -EIO;
    return 0;
}

static void on_report(void *ud, const struct wisp_fnspec *spec, const char *id,
                      const struct wisp_result *res)
{
    struct run_state *st = ud;
    (void)spec;
    (void)id;
    st->outcome = res->outcome;
    st->done = true;
}

/* Replaces '+' and '#' levels with "test" so a filter becomes a topic. */
static void default_subject(const struct wisp_fnspec *spec, char *out, size_t cap)
{
    const char *f = NULL;
    for (size_t i = 0; i < spec->n_triggers && !f; i++) {
        if (spec->triggers[i].kind == &wisp_trigger_mqtt)
            f = spec->triggers[i].topic;
    }
    if (!f) {
        (void)snprintf(out, cap, "wisp/run");
        return;
    }
    size_t o = 0;
    for (const char *p = f; *p && o + 5 < cap; p++) {
        if (*p == '+' || *p == '#') {
            memcpy(out + o, "test", 4);
            o += 4;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static int read_event(const char *arg, char **payload, size_t *len)
{
    if (arg[0] != '@') {
        *payload = wisp_strndup(arg, strlen(arg));
        *len = strlen(arg);
        return *payload ? 0 : -ENOMEM;
    }
    int rc = wisp_read_file(arg + 1, (size_t)64 * 1024 * 1024, payload, len);
    if (rc)
        (void)fprintf(stderr, "wisp run: --event %s: %s\n", arg, strerror(-rc));
    return rc;
}

/* Prints (and deletes) what the run put in the outbox: the publishes of
 * an invocation that wrote state wait there for the commit. */
static void print_outbox(struct wisp_store *store)
{
    struct wisp_out_view v[16];
    int n;
    uint64_t after = 0;
    while ((n = wisp_store_outbox_next(store, after, v, WISP_ARRAY_LEN(v))) > 0) {
        for (int i = 0; i < n; i++) {
            (void)print_publish(NULL, v[i].topic, v[i].payload, v[i].len, v[i].qos, v[i].retain);
            (void)wisp_store_outbox_del(store, v[i].seq);
            after = v[i].seq;
        }
    }
    (void)wisp_store_commit(store);
}

/* The store ctx.state uses: DIR/store with --data DIR, else a throwaway
 * one in a temp dir (tmpdir receives its path, to remove afterwards). */
static struct wisp_store *open_run_store(const char *data, char *tmpdir, size_t cap)
{
    tmpdir[0] = '\0';
    if (!data) {
        const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        (void)snprintf(tmpdir, cap, "%s/wisp-run.XXXXXX", base);
        if (!mkdtemp(tmpdir)) {
            (void)fprintf(stderr, "wisp run: cannot make a temp dir: %s\n", strerror(errno));
            tmpdir[0] = '\0';
            return NULL;
        }
        data = tmpdir;
    }
    struct wisp_store_config c = {.dir = data};
    struct wisp_store *store = NULL;
    char err[512];
    if (wisp_store_open(&c, &store, err, sizeof(err)) != 0)
        (void)fprintf(stderr, "wisp run: %s\n", err);
    return store;
}

static void remove_tree(const char *dir)
{
    char *store = wisp_path_join(dir, "store");
    const char *files[] = {"data.mdb", "lock.mdb"};
    for (size_t i = 0; store && i < WISP_ARRAY_LEN(files); i++) {
        char *f = wisp_path_join(store, files[i]);
        if (f)
            (void)unlink(f);
        free(f);
    }
    if (store)
        (void)rmdir(store);
    free(store);
    (void)rmdir(dir);
}

static int run_once(struct wisp_fnspec *spec, const char *subject, const char *payload, size_t len,
                    const char *data, struct wisp_devices *devices)
{
    struct wisp_loop *loop = NULL;
    struct wisp_pool *pool = NULL;
    char tmpdir[512];
    struct wisp_store *store = open_run_store(data, tmpdir, sizeof(tmpdir));
    if (!store) {
        wisp_fnspec_destroy(spec);
        if (tmpdir[0])
            remove_tree(tmpdir);
        return 2;
    }
    struct run_state st = {.outcome = WISP_OUTCOME_CRASH, .devices = devices};
    char id[40];
    const char *name = spec->name;
    char name_copy[WISP_MAX_NAME_LEN + 1];
    (void)snprintf(name_copy, sizeof(name_copy), "%s", name);
    /* One attempt: retries and dead letters are wispd's business. */
    spec->retry_max = 0;
    free(spec->retry_dead_letter);
    spec->retry_dead_letter = NULL;
    struct wisp_pool_config pc = {.max_executors = 1,
                                  .idle_timeout_ms = 0,
                                  .queue_max = 1,
                                  .device = "local",
                                  .store = store};
    struct wisp_pool_hooks hooks = {.spawn = wisp_executor_spawn_direct,
                                    .publish = print_publish,
                                    .on_report = on_report,
                                    .device = run_device,
                                    .ud = &st};
    if (wisp_loop_create(&loop) != 0 || wisp_pool_create(loop, &pc, &hooks, &pool) != 0) {
        (void)fprintf(stderr, "wisp run: cannot set up: %s\n", strerror(errno));
        wisp_fnspec_destroy(spec);
        goto out;
    }
    wisp_pool_set_functions(pool, &spec, 1);
    if (wisp_pool_submit_to(pool, name_copy, subject, payload, len, id) != 0) {
        (void)fprintf(stderr, "wisp run: cannot queue the event\n");
        goto out;
    }
    while (!st.done) {
        uint64_t now = wisp_mono_ns();
        if (wisp_loop_run_once(loop, wisp_pool_next_timeout_ms(pool, now)) < 0)
            break;
        wisp_pool_tick(pool, wisp_mono_ns());
    }
out:
    wisp_pool_destroy(pool);
    wisp_loop_destroy(loop);
    while (waitpid(-1, NULL, 0) > 0)
        ;
    if (wisp_store_commit(store) == 0)
        print_outbox(store);
    wisp_store_close(store);
    if (tmpdir[0])
        remove_tree(tmpdir);
    return st.outcome == WISP_OUTCOME_OK ? 0 : 1;
}

static int cmd_run(int argc, char **argv)
{
    const char *dir = NULL, *event = "{}", *topic = NULL, *data = NULL, *config = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            run_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--event") == 0 && i + 1 < argc) {
            event = argv[++i];
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            topic = argv[++i];
        } else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
            data = argv[++i];
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            int l = wisp_log_level_parse(argv[++i]);
            if (l < 0) {
                (void)fprintf(stderr, "wisp run: --log-level: unknown level \"%s\"\n", argv[i]);
                return 2;
            }
            wisp_log_threshold = l;
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            (void)fprintf(stderr, "wisp run: unexpected argument \"%s\"\n", argv[i]);
            run_usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        run_usage(stderr);
        return 2;
    }
    struct wisp_fnspec *spec = NULL;
    char err[1024];
    if (wisp_registry_load_one(dir, &spec, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "wisp run: %s\n", err);
        return 2;
    }
    char *payload = NULL;
    size_t len = 0;
    if (read_event(event, &payload, &len) != 0) {
        wisp_fnspec_destroy(spec);
        return 2;
    }
    char subject[512];
    if (topic)
        (void)snprintf(subject, sizeof(subject), "%s", topic); /* long topics are cut */
    else
        default_subject(spec, subject, sizeof(subject));
    struct wisp_config cfg;
    struct wisp_devices *devices = NULL;
    wisp_config_defaults(&cfg);
    if (config && (wisp_config_load_file(&cfg, config, err, sizeof(err)) != 0 ||
                   wisp_devices_open(&cfg, NULL, NULL, &devices, err, sizeof(err)) != 0)) {
        (void)fprintf(stderr, "wisp run: %s\n", err);
        wisp_config_fini(&cfg);
        wisp_fnspec_destroy(spec);
        free(payload);
        return 2;
    }
    int rc = run_once(spec, subject, payload, len, data, devices);
    wisp_devices_close(devices);
    wisp_config_fini(&cfg);
    free(payload);
    return rc;
}

/* A native handler is loaded the way an executor loads it (ABI, entry
 * point, architecture), in a child: its constructors run there, not here.
 * 0, or -1 with err set. */
static int check_native(const struct wisp_fnspec *spec, char *err, size_t errlen)
{
    const struct wisp_engine_ops *eng = wisp_engine_for(spec->runtime);
    int pfd[2];
    if (!eng || pipe(pfd) != 0)
        return wisp_errf(err, errlen, -1, "%s: cannot check the native handler", spec->origin);
    (void)fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char msg[1024] = "";
        void *inst = NULL;
        close(pfd[0]);
        if (eng->create(spec, &inst, msg, sizeof(msg)) == 0) {
            eng->destroy(inst);
            _exit(0);
        }
        (void)!write(pfd[1], msg, strnlen(msg, sizeof(msg)));
        _exit(1);
    }
    close(pfd[1]);
    size_t got = 0;
    for (ssize_t n; got + 1 < errlen && (n = read(pfd[0], err + got, errlen - 1 - got)) > 0;)
        got += (size_t)n;
    if (errlen)
        err[got] = '\0';
    close(pfd[0]);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return wisp_errf(err, errlen, -1, "%s: cannot check the native handler", spec->origin);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (!got)
        (void)wisp_errf(err, errlen, -1, "%s: loading %s crashed the check (%s %d)", spec->origin,
                        spec->handler, WIFSIGNALED(status) ? "signal" : "status",
                        WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    return -1;
}

static int validate_one(const char *dir)
{
    struct wisp_fnspec *spec = NULL;
    char err[1024];
    if (wisp_registry_load_one(dir, &spec, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "invalid %s\n", err);
        return 1;
    }
    if (spec->runtime == WISP_RUNTIME_NATIVE && check_native(spec, err, sizeof(err)) != 0) {
        (void)fprintf(stderr, "invalid %s\n", err);
        wisp_fnspec_destroy(spec);
        return 1;
    }
    printf("ok %s %s (%s)\n", spec->name, spec->version, dir);
    wisp_fnspec_destroy(spec);
    return 0;
}

static int cmd_validate(int argc, char **argv)
{
    int bad = 0;
    if (argc == 0 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        printf("Usage: wisp validate DIR...\n\n"
               "Each DIR is a function folder (with function.json) or a folder of them.\n"
               "Prints \"ok NAME VERSION\" or the problem as path:field: message; exits 1 if\n"
               "any function is invalid.\n");
        return argc == 0 ? 2 : 0;
    }
    for (int i = 0; i < argc; i++) {
        char *fj = wisp_path_join(argv[i], "function.json");
        struct stat st;
        bool single = fj && stat(fj, &st) == 0;
        free(fj);
        if (single) {
            bad |= validate_one(argv[i]);
            continue;
        }
        char **names = NULL;
        size_t n = 0;
        int rc = wisp_registry_list_dirs(argv[i], &names, &n);
        if (rc) {
            (void)fprintf(stderr, "invalid %s: cannot read the folder: %s\n", argv[i],
                          strerror(-rc));
            bad = 1;
        } else if (n == 0) {
            (void)fprintf(stderr, "invalid %s: no function.json and no function folders in it\n",
                          argv[i]);
            bad = 1;
        }
        for (size_t k = 0; k < n; k++) {
            char *sub = wisp_path_join(argv[i], names[k]);
            bad |= sub ? validate_one(sub) : 1;
            free(sub);
            free(names[k]);
        }
        free(names);
    }
    return bad;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("wisp %s\n", WISP_VERSION);
        return 0;
    }
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "validate") == 0)
        return cmd_validate(argc - 2, argv + 2);
    if (strcmp(cmd, "state") == 0)
        return wisp_cmd_state(argc - 2, argv + 2);
    if (strcmp(cmd, "dlq") == 0)
        return wisp_cmd_dlq(argc - 2, argv + 2);
    if (strcmp(cmd, "backup") == 0)
        return wisp_cmd_backup(argc - 2, argv + 2);
    if (strcmp(cmd, "sensors") == 0)
        return wisp_cmd_sensors(argc - 2, argv + 2);
    if (strcmp(cmd, "gpio") == 0)
        return wisp_cmd_gpio(argc - 2, argv + 2);
    if (strcmp(cmd, "keygen") == 0)
        return wisp_cmd_keygen(argc - 2, argv + 2);
    if (strcmp(cmd, "bundle") == 0)
        return wisp_cmd_bundle(argc - 2, argv + 2);
    if (strcmp(cmd, "sign") == 0)
        return wisp_cmd_sign(argc - 2, argv + 2);
    if (strcmp(cmd, "verify") == 0)
        return wisp_cmd_verify(argc - 2, argv + 2);
    if (strcmp(cmd, "unpack") == 0)
        return wisp_cmd_unpack(argc - 2, argv + 2);
    if (strcmp(cmd, "deploy") == 0)
        return wisp_cmd_deploy(argc - 2, argv + 2);
    if (strcmp(cmd, "rollout") == 0)
        return wisp_cmd_rollout(argc - 2, argv + 2);
    if (strcmp(cmd, "devices") == 0)
        return wisp_cmd_devices(argc - 2, argv + 2);
    if (strcmp(cmd, "meter") == 0)
        return wisp_cmd_meter(argc - 2, argv + 2);
    (void)fprintf(stderr, "wisp: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
