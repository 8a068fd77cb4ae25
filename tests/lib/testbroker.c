/* A private mosquitto per test; see testbroker.h. */
#include "testbroker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef WISP_BROKER_SH
#define WISP_BROKER_SH "tests/lib/broker.sh"
#endif

enum { START_ATTEMPTS = 10, UP_TIMEOUT_MS = 10000, STOP_TIMEOUT_MS = 5000 };

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

int wisp_testbroker_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = loopback(0);
    socklen_t len = sizeof(sa);
    int port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

bool wisp_testbroker_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = loopback(port);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

int wisp_testbroker_tmpdir(const char *tag, char *out, size_t cap)
{
    const char *base = getenv("TMPDIR");
    int n = snprintf(out, cap, "%s/wisp-%s.XXXXXX", base && *base ? base : "/tmp", tag);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    return mkdtemp(out) ? 0 : -errno;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        (void)fprintf(stderr, "testbroker: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

void wisp_testbroker_rmtree(const char *dir)
{
    if (dir && *dir)
        (void)nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Finds an executable in $PATH (plus the sbin dirs mosquitto lives in)
 * before forking: the child of a threaded process should only exec. */
static int find_exe(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    int n = snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/usr/local/sbin:/sbin", path ? path : "");
    if (n < 0 || (size_t)n >= sizeof(dirs))
        return -ENAMETOOLONG;
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        n = snprintf(out, cap, "%s/%s", d, name);
        if (n > 0 && (size_t)n < cap && access(out, X_OK) == 0)
            return 0;
    }
    (void)fprintf(stderr, "testbroker: %s not found in PATH\n", name);
    return -ENOENT;
}

/* fork + exec with stdout/stderr appended to log (or inherited when NULL). */
static pid_t spawn(const char *exe, char *const argv[], const char *log)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Child: only async-signal-safe calls until exec. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int in = open("/dev/null", O_RDONLY);
    if (in >= 0)
        (void)dup2(in, STDIN_FILENO);
    if (log) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            (void)dup2(fd, STDOUT_FILENO);
            (void)dup2(fd, STDERR_FILENO);
        }
    }
    execv(exe, argv);
    _exit(127);
}

static void print_log_tail(const struct wisp_testbroker *b)
{
    char buf[2048];
    int fd = open(b->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t r = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (r > 0) {
        buf[r] = '\0';
        (void)fprintf(stderr, "--- %s:\n%s---\n", b->log_path, buf);
    }
}

/* fprintf that remembers a failure, so write_conf checks once at the end. */
__attribute__((format(printf, 3, 4))) static void conf_add(FILE *f, bool *ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vfprintf(f, fmt, ap) < 0)
        *ok = false;
    va_end(ap);
}

static int write_conf(struct wisp_testbroker *b, const struct wisp_testbroker_opts *o)
{
    FILE *f = fopen(b->conf_path, "w");
    if (!f)
        return -errno;
    bool ok = true;
    const struct passwd *pw = getpwuid(geteuid());
    /* As root mosquitto would become user "mosquitto", who cannot read the
     * private temp dir; stay whoever runs the test. */
    if (pw)
        conf_add(f, &ok, "user %s\n", pw->pw_name);
    conf_add(f, &ok, "per_listener_settings false\nallow_anonymous true\nlog_dest stderr\n");
    conf_add(f, &ok, "log_timestamp_format %%H:%%M:%%S\n");
    if (o->persistence)
        conf_add(f, &ok, "persistence true\npersistence_location %s/\nautosave_interval 0\n",
                 b->dir);
    else
        conf_add(f, &ok, "persistence false\n");
    conf_add(f, &ok, "listener %d 127.0.0.1\n", b->port);
    if (b->tls_port) {
        conf_add(f, &ok, "listener %d 127.0.0.1\n", b->tls_port);
        conf_add(f, &ok, "cafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\n",
                 o->tls_dir, o->tls_dir, o->tls_dir);
        conf_add(f, &ok, "require_certificate true\n");
    }
    if (o->extra_conf)
        conf_add(f, &ok, "%s\n", o->extra_conf);
    if (fclose(f) != 0 || !ok)
        return -EIO;
    return 0;
}

/* Starts mosquitto on b's ports and waits until every listener accepts.
 * -EADDRINUSE when it exits first (a port was taken), -ETIMEDOUT. */
static int launch(struct wisp_testbroker *b)
{
    char exe[512];
    int rc = find_exe("mosquitto", exe, sizeof(exe));
    if (rc)
        return rc;
    char *argv[] = {"mosquitto", "-c", b->conf_path, NULL};
    b->pid = spawn(exe, argv, b->log_path);
    if (b->pid < 0) {
        b->pid = -1;
        return -errno;
    }
    uint64_t deadline = now_ms() + UP_TIMEOUT_MS;
    while (now_ms() < deadline) {
        int status;
        if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
            b->pid = -1;
            return -EADDRINUSE;
        }
        if (wisp_testbroker_port_open(b->port) &&
            (!b->tls_port || wisp_testbroker_port_open(b->tls_port)))
            return 0;
        sleep_ms(10);
    }
    (void)wisp_testbroker_stop(b, true);
    return -ETIMEDOUT;
}

static int pick_ports(struct wisp_testbroker *b, const struct wisp_testbroker_opts *o)
{
    b->port = o->port ? o->port : wisp_testbroker_free_port();
    b->tls_port = 0;
    if (o->tls_dir) {
        do
            b->tls_port = wisp_testbroker_free_port();
        while (b->tls_port == b->port);
    }
    if (!b->port || (o->tls_dir && !b->tls_port))
        return -EADDRNOTAVAIL;
    /* Ports have at most 5 digits: these cannot be truncated. */
    (void)snprintf(b->uri, sizeof(b->uri), "tcp://127.0.0.1:%d", b->port);
    if (b->tls_port)
        (void)snprintf(b->tls_uri, sizeof(b->tls_uri), "ssl://127.0.0.1:%d", b->tls_port);
    return 0;
}

int wisp_testbroker_start(struct wisp_testbroker *b, const struct wisp_testbroker_opts *opts)
{
    static const struct wisp_testbroker_opts none = {0};
    const struct wisp_testbroker_opts *o = opts ? opts : &none;
    memset(b, 0, sizeof(*b));
    b->pid = -1;
    int rc = wisp_testbroker_tmpdir("broker", b->dir, sizeof(b->dir));
    if (rc)
        return rc;
    int n = snprintf(b->conf_path, sizeof(b->conf_path), "%s/mosquitto.conf", b->dir);
    int k = snprintf(b->log_path, sizeof(b->log_path), "%s/mosquitto.log", b->dir);
    if (n < 0 || (size_t)n >= sizeof(b->conf_path) || k < 0 || (size_t)k >= sizeof(b->log_path)) {
        wisp_testbroker_cleanup(b);
        return -ENAMETOOLONG;
    }
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        rc = pick_ports(b, o);
        if (!rc)
            rc = write_conf(b, o);
        if (!rc)
            rc = launch(b);
        if (rc != -EADDRINUSE)
            break;
        sleep_ms(o->port ? 100 : 0); /* a fixed port may still be lingering */
    }
    if (rc) {
        (void)fprintf(stderr, "testbroker: mosquitto did not start: %s\n", strerror(-rc));
        print_log_tail(b);
        wisp_testbroker_cleanup(b);
    }
    return rc;
}

int wisp_testbroker_stop(struct wisp_testbroker *b, bool hard)
{
    if (b->pid <= 0)
        return 0;
    if (kill(b->pid, hard ? SIGKILL : SIGTERM) != 0 && errno != ESRCH)
        return -errno;
    uint64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    int status;
    while (waitpid(b->pid, &status, WNOHANG) == 0) {
        if (now_ms() >= deadline) {
            (void)kill(b->pid, SIGKILL);
            (void)waitpid(b->pid, &status, 0);
            break;
        }
        sleep_ms(5);
    }
    b->pid = -1;
    return 0;
}

int wisp_testbroker_restart(struct wisp_testbroker *b)
{
    int rc = wisp_testbroker_stop(b, false);
    for (int attempt = 0; !rc && attempt < 20; attempt++) {
        rc = launch(b);
        if (rc != -EADDRINUSE)
            break;
        sleep_ms(100); /* the old listener may linger for a moment */
    }
    if (rc) {
        (void)fprintf(stderr, "testbroker: mosquitto did not restart on port %d: %s\n", b->port,
                      strerror(-rc));
        print_log_tail(b);
    }
    return rc;
}

void wisp_testbroker_cleanup(struct wisp_testbroker *b)
{
    (void)wisp_testbroker_stop(b, false);
    wisp_testbroker_rmtree(b->dir);
    b->dir[0] = '\0';
}

int wisp_testbroker_make_certs(const char *dir)
{
    char bash[512];
    const char *src = getenv("WISP_SOURCE_DIR");
    char script[1024];
    int n = src && *src ? snprintf(script, sizeof(script), "%s/tests/lib/broker.sh", src)
                        : snprintf(script, sizeof(script), "%s", WISP_BROKER_SH);
    if (n < 0 || (size_t)n >= sizeof(script))
        return -ENAMETOOLONG;
    int rc = find_exe("bash", bash, sizeof(bash));
    if (rc)
        return rc;
    char *argv[] = {"bash",       "-c",   "source \"$1\" && tls_make_certs \"$2\"",
                    "make-certs", script, (char *)dir,
                    NULL};
    pid_t pid = spawn(bash, argv, NULL);
    if (pid < 0)
        return -errno;
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}
