/* Executor processes (runtime/src/executor.c): the confinement a handler
 * runs under, and the life cycle of a forked executor. Every check runs in
 * a child process, which reports through a pipe created before it was
 * confined and leaves with _exit (LSan cannot run under the filter). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "executor.h"
#include "fnspec.h"
#include "ipc.h"
#include "testutil.h"
#include "util.h"

/* One probe's outcome as the child saw it. */
struct probe {
    char name[32];
    long rc;
    int err;
};

static void report(int fd, const char *name, long rc, int err)
{
    struct probe p;
    memset(&p, 0, sizeof(p));
    (void)snprintf(p.name, sizeof(p.name), "%s", name);
    p.rc = rc;
    p.err = rc < 0 ? err : 0;
    if (write(fd, &p, sizeof(p)) != (ssize_t)sizeof(p))
        _exit(3);
}

/* Runs fn(arg, fd) in a child after confining it; collects what it reports
 * into probes (at most cap). Returns how many were read, or -1. */
static int run_confined(void (*fn)(const char *arg, int fd), const char *arg, struct probe *probes,
                        int cap)
{
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(pfd[0]);
        int rc = wisp_executor_confine();
        report(pfd[1], "confine", rc, -rc);
        if (rc == 0)
            fn(arg, pfd[1]);
        _exit(0);
    }
    close(pfd[1]);
    int n = 0;
    while (n < cap) {
        ssize_t r = read(pfd[0], &probes[n], sizeof(probes[n]));
        if (r < 0 && errno == EINTR)
            continue;
        if (r != (ssize_t)sizeof(probes[n]))
            break;
        n++;
    }
    close(pfd[0]);
    int status = wisp_test_wait_exit(pid, 10000);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return n;
}

static const struct probe *find(const struct probe *p, int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(p[i].name, name) == 0)
            return &p[i];
    }
    (void)fprintf(stderr, "probe %s did not report\n", name);
    return NULL;
}

/* Checks that the probe failed with EPERM. */
static void check_eperm(const struct probe *p, int n, const char *name)
{
    const struct probe *q = find(p, n, name);
    CHECK(q != NULL);
    if (!q)
        return;
    if (q->rc >= 0 || q->err != EPERM)
        (void)fprintf(stderr, "%s: rc %ld errno %d (%s), expected EPERM\n", name, q->rc, q->err,
                      strerror(q->err));
    CHECK(q->rc < 0 && q->err == EPERM);
}

/* Checks that the probe failed with EPERM, or ENOSYS where the kernel does
 * not have the call at all (nothing to get around then). */
static void check_eperm_or_absent(const struct probe *p, int n, const char *name)
{
    const struct probe *q = find(p, n, name);
    CHECK(q != NULL);
    if (!q)
        return;
    bool refused = q->rc < 0 && (q->err == EPERM || q->err == ENOSYS);
    if (!refused)
        (void)fprintf(stderr, "%s: rc %ld errno %d (%s), expected EPERM\n", name, q->rc, q->err,
                      strerror(q->err));
    CHECK(refused);
}

static void check_ok(const struct probe *p, int n, const char *name)
{
    const struct probe *q = find(p, n, name);
    CHECK(q != NULL);
    if (q && q->rc < 0)
        (void)fprintf(stderr, "%s: failed with %s\n", name, strerror(q->err));
    CHECK(q && q->rc >= 0);
}

static char tmpdir[64];

static void probe_nothing(const char *arg, int fd)
{
    (void)arg;
    (void)fd;
}

/* qemu-user (scripts/cross-test.sh runs the tests under it and sets
 * WISP_UNDER_QEMU=1) refuses PR_SET_SECCOMP with EINVAL, so no filter can
 * be installed and the executor runs unconfined with a warning. Only then
 * are the checks that need the kernel filter skipped: the variable alone
 * skips nothing while confinement works, and on the host it is not set. */
static bool seccomp_missing_under_qemu(const char *test)
{
    const char *q = getenv("WISP_UNDER_QEMU");
    if (!q || strcmp(q, "1") != 0)
        return false;
    struct probe p[4];
    int n = run_confined(probe_nothing, "", p, 4);
    const struct probe *c = n > 0 ? find(p, n, "confine") : NULL;
    if (!c || c->rc >= 0 || c->err != EINVAL)
        return false;
    (void)fprintf(stderr, "skip %s: seccomp filters unavailable under qemu-user (EINVAL)\n", test);
    return true;
}

/* What a confined process may and may not do. Runs in the child. */
static void probe_basics(const char *dir, int fd)
{
    char path[128], other[128];
    long rc;

    rc = socket(AF_INET, SOCK_STREAM, 0);
    report(fd, "socket_inet", rc, errno);
    rc = socket(AF_INET6, SOCK_DGRAM, 0);
    report(fd, "socket_inet6", rc, errno);
    rc = socket(AF_UNIX, SOCK_STREAM, 0);
    report(fd, "socket_unix", rc, errno);

    (void)snprintf(path, sizeof(path), "%s/created", dir);
    rc = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    report(fd, "open_create", rc, errno);
    rc = open("/tmp/x", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    report(fd, "open_tmp_x", rc, errno);
    rc = creat(path, 0600);
    report(fd, "creat", rc, errno);

    (void)snprintf(path, sizeof(path), "%s/existing", dir);
    rc = open(path, O_RDWR | O_CLOEXEC);
    report(fd, "open_rdwr", rc, errno);
    rc = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    report(fd, "open_append", rc, errno);
    rc = open(path, O_RDONLY | O_TRUNC | O_CLOEXEC);
    report(fd, "open_trunc", rc, errno);
    rc = truncate(path, 0);
    report(fd, "truncate", rc, errno);

    /* Reading stays possible: handlers load their own files. */
    rc = open(path, O_RDONLY | O_CLOEXEC);
    report(fd, "open_rdonly", rc, errno);
    if (rc >= 0) {
        char buf[16] = "";
        ssize_t r = read((int)rc, buf, sizeof(buf) - 1);
        report(fd, strcmp(buf, "hello") == 0 && r == 5 ? "read_ok" : "read_wrong", r, errno);
        close((int)rc);
    }

    (void)snprintf(other, sizeof(other), "%s/renamed", dir);
    rc = rename(path, other);
    report(fd, "rename", rc, errno);
    rc = unlink(path);
    report(fd, "unlink", rc, errno);
    (void)snprintf(other, sizeof(other), "%s/newdir", dir);
    rc = mkdir(other, 0700);
    report(fd, "mkdir", rc, errno);
    rc = chmod(path, 0777);
    report(fd, "chmod", rc, errno);
    rc = symlink(path, other);
    report(fd, "symlink", rc, errno);

    pid_t pid = fork();
    if (pid == 0)
        _exit(0); /* it must not get here; if it does, leave quietly */
    report(fd, "fork", pid, errno);
    if (pid > 0)
        (void)waitpid(pid, NULL, 0);

    char *const argv[] = {"/bin/true", NULL};
    char *const envp[] = {NULL};
    rc = execve("/bin/true", argv, envp);
    report(fd, "execve", rc, errno);

    rc = kill(getppid(), 0);
    report(fd, "kill", rc, errno);

    rc = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
    report(fd, "no_new_privs", rc == 1 ? 0 : -1, EINVAL);
    report(fd, "still_alive", 0, 0);
}

static void test_confine(void)
{
    if (seccomp_missing_under_qemu("confine"))
        return;
    if (!wisp_test_mkdtemp(tmpdir, sizeof(tmpdir), "executor"))
        return;
    wisp_test_write(tmpdir, "existing", "hello");
    struct probe p[64];
    int n = run_confined(probe_basics, tmpdir, p, 64);
    CHECK(n > 0);
    check_ok(p, n, "confine");
    check_eperm(p, n, "socket_inet");
    check_eperm(p, n, "socket_inet6");
    check_eperm(p, n, "socket_unix");
    check_eperm(p, n, "open_create");
    check_eperm(p, n, "open_tmp_x");
    check_eperm(p, n, "creat");
    check_eperm(p, n, "open_rdwr");
    check_eperm(p, n, "open_append");
    check_eperm(p, n, "open_trunc");
    check_eperm(p, n, "truncate");
    check_ok(p, n, "open_rdonly");
    check_ok(p, n, "read_ok");
    check_eperm(p, n, "rename");
    check_eperm(p, n, "unlink");
    check_eperm(p, n, "mkdir");
    check_eperm(p, n, "chmod");
    check_eperm(p, n, "symlink");
    check_eperm(p, n, "fork");
    check_eperm(p, n, "execve");
    check_eperm(p, n, "kill");
    check_ok(p, n, "no_new_privs");
    check_ok(p, n, "still_alive");

    /* Nothing the child tried changed the file system. */
    char path[128];
    struct stat st;
    wisp_test_path(path, sizeof(path), tmpdir, "created");
    CHECK(stat(path, &st) != 0 && errno == ENOENT);
    wisp_test_path(path, sizeof(path), tmpdir, "newdir");
    CHECK(stat(path, &st) != 0 && errno == ENOENT);
    wisp_test_path(path, sizeof(path), tmpdir, "existing");
    CHECK(stat(path, &st) == 0 && st.st_size == 5 && (st.st_mode & 0777) != 0777);
    wisp_test_rmtree(tmpdir);
}

/* Other doors to the same rooms: signalling another process without kill(2),
 * and io_uring, whose requests (IORING_OP_OPENAT, IORING_OP_SOCKET) the
 * kernel performs without consulting the seccomp filter. */
static void probe_bypasses(const char *dir, int fd)
{
    (void)dir;
    long rc = syscall(SYS_tgkill, (long)getppid(), (long)getppid(), 0L);
    report(fd, "tgkill", rc, errno);
#ifdef SYS_pidfd_open
    rc = syscall(SYS_pidfd_open, (long)getppid(), 0L);
    if (rc >= 0) {
        int pidfd = (int)rc;
        rc = syscall(SYS_pidfd_send_signal, (long)pidfd, 0L, NULL, 0L);
        close(pidfd);
    }
    report(fd, "pidfd_send_signal", rc, errno);
#endif
#ifdef SYS_io_uring_setup
    /* struct io_uring_params is 120 bytes; zeroed asks for nothing special. */
    uint64_t params[16];
    memset(params, 0, sizeof(params));
    rc = syscall(SYS_io_uring_setup, 4L, params);
    if (rc >= 0)
        close((int)rc);
    report(fd, "io_uring_setup", rc, errno);
#endif
}

static void test_confine_no_bypass(void)
{
    if (seccomp_missing_under_qemu("confine_no_bypass"))
        return;
    struct probe p[16];
    int n = run_confined(probe_bypasses, "", p, 16);
    check_ok(p, n, "confine");
    check_eperm(p, n, "tgkill");
#ifdef SYS_pidfd_open
    check_eperm_or_absent(p, n, "pidfd_send_signal");
#endif
#ifdef SYS_io_uring_setup
    check_eperm_or_absent(p, n, "io_uring_setup");
#endif
}

static void test_exits_on_close(void)
{
    pid_t pid = -1;
    int fd = -1;
    CHECK_INT_EQ(wisp_executor_fork(&pid, &fd), 0);
    CHECK(pid > 0 && fd >= 0);
    if (pid <= 0)
        return;
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    /* It is waiting for its LOAD frame, not gone. */
    CHECK_INT_EQ(waitpid(pid, NULL, WNOHANG), 0);
    close(fd);
    int status = wisp_test_wait_exit(pid, 5000);
    CHECK(status != -1);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Through the spawn hook the pool uses, likewise. */
    CHECK_INT_EQ(wisp_executor_spawn_direct(NULL, &pid, &fd), 0);
    close(fd);
    status = wisp_test_wait_exit(pid, 5000);
    CHECK(status != -1 && WIFEXITED(status));
}

static void test_exits_on_garbage(void)
{
    pid_t pid = -1;
    int fd = -1;
    CHECK_INT_EQ(wisp_executor_fork(&pid, &fd), 0);
    if (pid <= 0)
        return;
    /* A LOAD frame whose body is cut short: the executor gives up. */
    struct wisp_buf b;
    wisp_buf_init(&b);
    wisp_ipc_frame_begin(&b, WISP_IPC_LOAD);
    wisp_buf_put_str(&b, "only-a-name");
    wisp_ipc_frame_end(&b);
    CHECK_INT_EQ(wisp_ipc_write_all(fd, b.data, b.len), 0);
    int status = wisp_test_wait_exit(pid, 5000);
    CHECK(status != -1);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    close(fd);
    wisp_buf_fini(&b);
}

/* Reads "Seccomp:" and "NoNewPrivs:" of a process from /proc. */
static void proc_status(pid_t pid, int *seccomp, int *nnp)
{
    char path[64], line[256];
    *seccomp = *nnp = -1;
    (void)snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "Seccomp:", 8) == 0)
            *seccomp = (int)strtol(line + 8, NULL, 10);
        else if (strncmp(line, "NoNewPrivs:", 11) == 0)
            *nnp = (int)strtol(line + 11, NULL, 10);
    }
    CHECK(fclose(f) == 0);
}

/* A whole session: LOAD, LOADED, INVOKE, RESULT, then EOF and exit. */
static void test_session(void)
{
    char err[512] = "";
    if (!wisp_test_mkdtemp(tmpdir, sizeof(tmpdir), "executor"))
        return;
    wisp_test_write_fn(tmpdir, "echo", "in/#", "",
                       "return function(event, ctx)\n"
                       "  ctx.publish('out/' .. event.subject, event.payload, {qos = 1})\n"
                       "end\n");
    struct wisp_fnspec *spec = NULL;
    CHECK_INT_EQ(wisp_fnspec_load(tmpdir, &spec, err, sizeof(err)), 0);
    if (!spec) {
        (void)fprintf(stderr, "%s\n", err);
        wisp_test_rmtree(tmpdir);
        return;
    }
    pid_t pid = -1;
    int fd = -1;
    CHECK_INT_EQ(wisp_executor_fork(&pid, &fd), 0);
    struct wisp_buf b, in;
    enum wisp_ipc_type type = 0;
    wisp_buf_init(&b);
    wisp_buf_init(&in);
    wisp_ipc_encode_load(&b, spec);
    CHECK_INT_EQ(wisp_ipc_write_all(fd, b.data, b.len), 0);
    CHECK_INT_EQ(wisp_ipc_read_frame(fd, &in, &type), 0);
    CHECK_INT_EQ(type, WISP_IPC_LOADED);
    struct wisp_rd rd = {.p = in.data, .left = in.len};
    struct wisp_ipc_loaded l = {0};
    CHECK_INT_EQ(wisp_ipc_decode_loaded(&rd, &l), 0);
    CHECK_INT_EQ(l.status, 0);
    free(l.err);

    /* The executor that is serving is the confined one (under qemu-user it
     * serves unconfined: see seccomp_missing_under_qemu). */
    int seccomp = -1, nnp = -1;
    proc_status(pid, &seccomp, &nnp);
    if (!seccomp_missing_under_qemu("session: Seccomp: 2"))
        CHECK_INT_EQ(seccomp, 2);
    CHECK_INT_EQ(nnp, 1);

    struct wisp_event ev = wisp_test_event("in/a", "hi", 2, 0);
    wisp_ipc_encode_invoke(&b, 41, &ev);
    CHECK_INT_EQ(wisp_ipc_write_all(fd, b.data, b.len), 0);
    CHECK_INT_EQ(wisp_ipc_read_frame(fd, &in, &type), 0);
    CHECK_INT_EQ(type, WISP_IPC_RESULT);
    rd = (struct wisp_rd){.p = in.data, .left = in.len};
    struct wisp_result res;
    uint64_t seq = 0;
    bool recycled = true;
    CHECK_INT_EQ(wisp_ipc_decode_result(&rd, &seq, &res, &recycled), 0);
    CHECK_INT_EQ(seq, 41);
    CHECK(!recycled);
    CHECK_INT_EQ(res.outcome, WISP_OUTCOME_OK);
    CHECK_INT_EQ(res.n_pubs, 1);
    if (res.n_pubs == 1) {
        CHECK_STR_EQ(res.pubs[0].topic, "out/in/a");
        CHECK(res.pubs[0].payload_len == 2 && memcmp(res.pubs[0].payload, "hi", 2) == 0);
        CHECK_INT_EQ(res.pubs[0].qos, 1);
    }
    wisp_result_fini(&res);

    close(fd);
    int status = wisp_test_wait_exit(pid, 5000);
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    wisp_buf_fini(&b);
    wisp_buf_fini(&in);
    wisp_fnspec_destroy(spec);
    wisp_test_rmtree(tmpdir);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"confine", test_confine},
        {"confine_no_bypass", test_confine_no_bypass},
        {"exits_on_close", test_exits_on_close},
        {"exits_on_garbage", test_exits_on_garbage},
        {"session", test_session},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
