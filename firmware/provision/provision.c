/*
 * wisp-provision: turns the provisioning file a user put on the boot
 * partition into this gateway's configuration. It runs at every boot and
 * is idempotent: the whole file is checked and the whole plan worked out
 * before anything is written, unchanged files are left alone, and the
 * device key, once made, is never replaced. See README.md next to it.
 */
#include "prov.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#ifndef WISP_VERSION
#define WISP_VERSION "unknown"
#endif

static const char *const default_inputs[] = {
    "/boot/firmware/wisp-provision.json", /* Raspberry Pi OS bookworm and later */
    "/boot/wisp-provision.json",          /* older Raspberry Pi OS */
};

static void usage(FILE *out)
{
    (void)fprintf(
        out,
        "Usage: wisp-provision [--input FILE] [--etc DIR] [--state DIR] [--dry-run]\n"
        "                      [--keep-input] [--owner USER] [--machine-id FILE]\n"
        "\n"
        "Turns a provisioning file into this gateway's configuration: the device key pair\n"
        "(made once, never replaced), wispd.json (merged into the one there), the broker's\n"
        "CA, the trusted bundle-signing keys, device.json and a registration request for\n"
        "the control plane. Everything is checked before anything is written; running it\n"
        "again with the same file changes nothing.\n"
        "\n"
        "  --input FILE       the provisioning file (default: %s,\n"
        "                     else %s)\n"
        "  --etc DIR          configuration directory (default /etc/wisp)\n"
        "  --state DIR        state directory (default /var/lib/wisp)\n"
        "  --dry-run          check the file and show what would change; write nothing\n"
        "  --keep-input       leave the provisioning file as it is (by default, once\n"
        "                     provisioned, it becomes FILE.done with its secrets removed)\n"
        "  --owner USER       give what is written to USER and its group (wispd's user)\n"
        "  --machine-id FILE  the default device id is hashed from it (default\n"
        "                     /etc/machine-id; random when it is missing)\n"
        "  --help, --version\n"
        "\n"
        "Exit status:\n"
        "  0   provisioned, updated, or nothing to do (also when there is no provisioning file)\n"
        "  1   a problem on the gateway's side (an existing file that cannot be used, I/O,\n"
        "      keys); the provisioning file stays, so the next run finishes the job\n"
        "  2   the provisioning file is malformed (every problem is printed as\n"
        "      FILE:KEY: what is wrong); nothing was changed\n"
        "  64  bad command line\n",
        default_inputs[0], default_inputs[1]);
}

/* path made absolute (wispd runs from /) and without trailing slashes;
 * malloc'd, NULL on failure. */
static char *absolute(const char *path)
{
    char cwd[4096];
    char *abs = path[0] == '/'             ? wisp_strndup(path, strlen(path))
                : getcwd(cwd, sizeof(cwd)) ? wisp_path_join(cwd, path)
                                           : NULL;
    for (size_t n = abs ? strlen(abs) : 0; n > 1 && abs[n - 1] == '/'; n--)
        abs[n - 1] = '\0';
    return abs;
}

struct args {
    struct wisp_prov_opts o;
    const char *etc, *state, *owner;
};

/* Returns 0, -1 for --help/--version (done), or WISP_PROV_EXIT_USAGE. */
static int parse_args(struct args *a, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"input", required_argument, NULL, 'i'},      {"etc", required_argument, NULL, 'e'},
        {"state", required_argument, NULL, 's'},      {"dry-run", no_argument, NULL, 'n'},
        {"keep-input", no_argument, NULL, 'k'},       {"owner", required_argument, NULL, 'o'},
        {"machine-id", required_argument, NULL, 'm'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},          {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            a->o.input = optarg;
            break;
        case 'e':
            a->etc = optarg;
            break;
        case 's':
            a->state = optarg;
            break;
        case 'n':
            a->o.dry_run = true;
            break;
        case 'k':
            a->o.keep_input = true;
            break;
        case 'o':
            a->owner = optarg;
            break;
        case 'm':
            a->o.machine_id = optarg;
            break;
        case 'h':
            usage(stdout);
            return -1;
        case 'V':
            (void)printf("wisp-provision %s\n", WISP_VERSION);
            return -1;
        default:
            usage(stderr);
            return WISP_PROV_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        (void)fprintf(stderr, "wisp-provision: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return WISP_PROV_EXIT_USAGE;
    }
    if (!*a->etc || !*a->state || (a->o.input && !*a->o.input)) {
        (void)fprintf(stderr, "wisp-provision: --input, --etc and --state need a path\n");
        return WISP_PROV_EXIT_USAGE;
    }
    if (a->owner) {
        const struct passwd *pw = getpwnam(a->owner);
        if (!pw) {
            (void)fprintf(stderr, "wisp-provision: --owner: no user \"%s\"\n", a->owner);
            return WISP_PROV_EXIT_USAGE;
        }
        a->o.chown = true;
        a->o.uid = pw->pw_uid;
        a->o.gid = pw->pw_gid;
    }
    return 0;
}

/* Reads the provisioning file: 0; -1 when there is none; else an exit status. */
static int read_input(struct wisp_prov_opts *o, char **text, size_t *len)
{
    struct stat st;
    *text = NULL;
    for (size_t i = 0; !o->input && i < WISP_ARRAY_LEN(default_inputs); i++) {
        if (stat(default_inputs[i], &st) == 0)
            o->input = default_inputs[i];
    }
    if (!o->input) {
        (void)printf("wisp-provision: no provisioning file (%s, %s): nothing to do\n",
                     default_inputs[0], default_inputs[1]);
        return -1;
    }
    int rc = wisp_prov_read(o->input, text, len);
    if (rc == -ENOENT) {
        (void)printf("wisp-provision: no provisioning file at %s: nothing to do\n", o->input);
        return -1;
    }
    if (rc == -EFBIG) {
        (void)fprintf(stderr, "%s: larger than %zu bytes: not a provisioning file\n", o->input,
                      WISP_PROV_MAX_FILE);
        return WISP_PROV_EXIT_INVALID;
    }
    if (rc) {
        (void)fprintf(stderr, "wisp-provision: cannot read %s: %s\n", o->input, strerror(-rc));
        return WISP_PROV_EXIT_FAILED;
    }
    return 0;
}

/* Replaces the provisioning file by FILE.done without its secrets: the
 * FAT boot partition is readable by anyone holding the card. */
static int retire_input(const struct wisp_prov_opts *o, const struct wisp_prov_input *in, char *err,
                        size_t errlen)
{
    char *text = wisp_prov_input_redacted(in, WISP_PROV_REDACTED);
    size_t cap = strlen(o->input) + sizeof(".done");
    char *done = malloc(cap);
    int rc;
    if (!text || !done) {
        rc = wisp_errf(err, errlen, -ENOMEM, "out of memory");
        goto out;
    }
    (void)snprintf(done, cap, "%s.done", o->input);
    /* Mode 0: FAT cannot store one, and refuses some chmods. */
    rc = wisp_prov_write_atomic(done, text, strlen(text), 0, false, NULL, err, errlen);
    if (!rc && unlink(o->input) != 0)
        rc = wisp_errf(err, errlen, -errno, "cannot remove %s: %s", o->input, strerror(errno));
    if (!rc && wisp_prov_sync_parent(o->input) != 0)
        rc = wisp_errf(err, errlen, -EIO, "cannot sync the directory of %s", o->input);
    if (!rc)
        (void)printf("wisp-provision: %s is now %s (secrets removed)\n", o->input, done);
out:
    free(text);
    free(done);
    return rc;
}

static void print_registration(const struct wisp_prov_plan *p)
{
    const struct wisp_prov_item *reg = &p->items[p->register_item];
    if (reg->change != WISP_PROV_CREATE && reg->change != WISP_PROV_UPDATE)
        return;
    (void)printf("wisp-provision: registration: wispd (cloud sync on) registers this device with\n"
                 "  the control plane when it first reaches the broker, with its labels and\n"
                 "  fleet token (the request is also kept in %s)\n",
                 reg->path);
}

/* Works out the plan and carries it out (or shows it). */
static int provision(const struct wisp_prov_opts *o, const struct wisp_prov_input *in)
{
    struct wisp_prov_rng *rng = NULL;
    struct wisp_prov_plan plan = {0};
    char err[2048] = "";
    int rc = wisp_prov_rng_create(&rng, err, sizeof(err));
    if (!rc)
        rc = wisp_prov_plan_build(&plan, o, in, rng, err, sizeof(err));
    if (rc) {
        (void)fprintf(stderr, "wisp-provision: %s\nwisp-provision: nothing was changed\n", err);
        goto out;
    }
    size_t changes = wisp_prov_plan_changes(&plan);
    (void)printf("wisp-provision: %s: device %s%s\n", o->input, plan.device_id,
                 plan.new_key ? " (new device key)" : "");
    if (o->dry_run) {
        for (size_t i = 0; i < plan.n; i++) {
            if (plan.items[i].change != WISP_PROV_SAME)
                wisp_prov_describe(&plan.items[i], true, stdout);
        }
        (void)printf("wisp-provision: dry run: %zu change(s) found, nothing written\n", changes);
        goto out;
    }
    if (changes == 0) {
        (void)printf("wisp-provision: already provisioned, nothing to do\n");
    } else {
        rc = wisp_prov_apply(&plan, o, stdout, err, sizeof(err));
        if (rc) {
            (void)fprintf(stderr,
                          "wisp-provision: %s\nwisp-provision: the provisioning file is kept: "
                          "the next run finishes the job\n",
                          err);
            goto out;
        }
        print_registration(&plan);
        (void)printf("wisp-provision: provisioned (%zu change(s))\n", changes);
    }
    if (!o->keep_input && (rc = retire_input(o, in, err, sizeof(err))) != 0)
        (void)fprintf(stderr, "wisp-provision: %s\n", err);
out:
    wisp_prov_plan_fini(&plan);
    wisp_prov_rng_destroy(rng);
    return rc ? WISP_PROV_EXIT_FAILED : WISP_PROV_EXIT_OK;
}

static int run(struct wisp_prov_opts *o)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_input(o, &text, &len);
    if (rc)
        return rc < 0 ? WISP_PROV_EXIT_OK : rc;
    struct wisp_prov_input in;
    int problems = wisp_prov_input_parse(&in, o->input, text, len, stderr);
    explicit_bzero(text, len);
    free(text);
    if (problems < 0) {
        (void)fprintf(stderr, "wisp-provision: out of memory\n");
        rc = WISP_PROV_EXIT_FAILED;
    } else if (problems > 0) {
        (void)fprintf(stderr, "wisp-provision: %s: %d problem(s); nothing was changed\n", o->input,
                      problems);
        rc = WISP_PROV_EXIT_INVALID;
    } else {
        rc = provision(o, &in);
    }
    wisp_prov_input_fini(&in);
    return rc;
}

int main(int argc, char **argv)
{
    struct args a = {.etc = "/etc/wisp", .state = "/var/lib/wisp"};
    a.o.machine_id = "/etc/machine-id";
    int rc = parse_args(&a, argc, argv);
    if (rc)
        return rc < 0 ? WISP_PROV_EXIT_OK : rc;
    /* One line at a time, in order with stderr, also into the journal. */
    (void)setvbuf(stdout, NULL, _IOLBF, 0);
    /* Nothing written here is for other users unless its mode says so. */
    (void)umask(077);
    char *etc = absolute(a.etc), *state = absolute(a.state);
    if (!etc || !state) {
        (void)fprintf(stderr, "wisp-provision: cannot make --etc and --state absolute\n");
        rc = WISP_PROV_EXIT_FAILED;
    } else {
        a.o.etc = etc;
        a.o.state = state;
        rc = run(&a.o);
    }
    free(etc);
    free(state);
    return rc;
}
