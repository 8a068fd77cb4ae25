#define WISP_LOG_MODULE "executor"
#include "executor.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine.h"
#include "ipc.h"
#include "log.h"
#include "state.h"
#include "util.h"

#if defined(__x86_64__)
#define WISP_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define WISP_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__arm__)
#define WISP_AUDIT_ARCH AUDIT_ARCH_ARM
#elif defined(__i386__)
#define WISP_AUDIT_ARCH AUDIT_ARCH_I386
#endif

/* System calls an executor never needs: they would let a handler reach the
 * network, start programs, create processes or change files. Refused with
 * EPERM rather than killing, so a C library probing for one fails softly.
 * (Laid out by hand, so kept out of clang-format.) */
/* clang-format off */
static const int denied_syscalls[] = {
    SYS_socket, SYS_connect, SYS_bind, SYS_listen, SYS_accept4, SYS_execve, SYS_execveat,
    SYS_clone, SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kill,
    SYS_unlinkat, SYS_renameat2, SYS_mkdirat, SYS_linkat, SYS_symlinkat, SYS_fchmodat,
    SYS_fchownat, SYS_truncate, SYS_ftruncate, SYS_mknodat, SYS_mount, SYS_umount2,
    SYS_fchmod, SYS_fchown, SYS_setuid, SYS_setgid, SYS_setns, SYS_unshare,
#ifdef SYS_accept
    SYS_accept,
#endif
    /* Ways around the filter or at other processes. */
    SYS_tkill, SYS_rt_sigqueueinfo, SYS_rt_tgsigqueueinfo, SYS_bpf, SYS_perf_event_open,
    SYS_keyctl, SYS_add_key, SYS_request_key,
#ifdef SYS_io_uring_setup
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register,
#endif
#ifdef SYS_pidfd_send_signal
    SYS_pidfd_send_signal, SYS_pidfd_open,
#endif
#ifdef SYS_pidfd_getfd
    SYS_pidfd_getfd,
#endif
#ifdef SYS_userfaultfd
    SYS_userfaultfd,
#endif
#ifdef SYS_fork
    SYS_fork, SYS_vfork,
#endif
#ifdef SYS_clone3
    SYS_clone3,
#endif
#ifdef SYS_openat2
    SYS_openat2,
#endif
#ifdef SYS_unlink
    SYS_unlink, SYS_rename, SYS_renameat, SYS_mkdir, SYS_rmdir, SYS_link, SYS_symlink, SYS_chmod,
    SYS_chown, SYS_lchown, SYS_mknod, SYS_creat,
#endif
};
/* clang-format on */

#define WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)

int wisp_executor_confine(void)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
#ifdef WISP_AUDIT_ARCH
    enum { N_DENIED = sizeof(denied_syscalls) / sizeof(denied_syscalls[0]) };
    struct sock_filter prog[8 + 2 * N_DENIED + 20];
    size_t n = 0;
    const __u32 eperm = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    /* Wrong architecture: refuse everything rather than misread numbers. */
    prog[n++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, WISP_AUDIT_ARCH, 1, 0);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    prog[n++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (size_t i = 0; i < N_DENIED; i++) {
        prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
                                                 (__u32)denied_syscalls[i], 0, 1);
        prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, eperm);
    }
    /* tgkill only at ourselves: abort() and raise() use it, and nothing
     * else in an executor has a reason to signal another process. The
     * syscall number in A is restored afterwards for the checks below. */
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_tgkill, 0, 3);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, args[0]));
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (__u32)getpid(), 1, 0);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, eperm);
    prog[n++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    /* openat(dirfd, path, flags) and open(path, flags): read-only opens
     * pass, anything that could write or create a file is refused. Layout:
     *   0 JEQ openat ? 1 : 3     1 LD flags(arg 2)   2 JSET write ? DENY : ALLOW
     *   3 JEQ open ? 4 : ALLOW   4 LD flags(arg 1)   5 JSET write ? DENY : ALLOW
     *   6 DENY                   7 ALLOW                                         */
#ifdef SYS_open
    const __u32 nr_open = SYS_open;
#else
    const __u32 nr_open = 0xffffffffu; /* never matches */
#endif
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 2);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, args[2]));
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, WRITE_FLAGS, 3, 4);
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr_open, 0, 3);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, args[1]));
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, WRITE_FLAGS, 0, 1);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, eperm);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0)
        return -errno;
#endif
    return 0;
}

/* Executors answer only to their socket: terminal and service-manager
 * signals are for the supervisor, which drains and then closes the socket. */
static void reset_signals(void)
{
    sigset_t all;
    sigemptyset(&all);
    if (sigprocmask(SIG_SETMASK, &all, NULL) != 0)
        log_warn("cannot reset the signal mask: %s", strerror(errno));
    /* These cannot fail: the signals are valid and catchable. */
    (void)signal(SIGINT, SIG_IGN);
    (void)signal(SIGTERM, SIG_IGN);
    (void)signal(SIGHUP, SIG_IGN);
    (void)signal(SIGPIPE, SIG_IGN);
    (void)signal(SIGCHLD, SIG_DFL);
}

static void send_frame(int fd, struct wisp_buf *b)
{
    if (b->oom) {
        log_error("out of memory encoding a reply; exiting");
        _exit(3);
    }
    if (wisp_ipc_write_all(fd, b->data, b->len) != 0)
        _exit(0); /* the supervisor went away */
}

static void *load_instance(struct wisp_frame_reader *in, struct wisp_buf *b,
                           const struct wisp_engine_ops **eng, struct wisp_fnspec **specp)
{
    enum wisp_ipc_type type;
    char err[1024] = "";
    void *inst = NULL;
    int fd = in->fd;
    struct wisp_rd rd;
    if (wisp_frame_reader_next(in, &type, &rd) != 0 || type != WISP_IPC_LOAD)
        _exit(0);
    if (wisp_ipc_decode_load(&rd, specp) != 0)
        _exit(2);
    uint64_t t0 = wisp_mono_ns();
    *eng = wisp_engine_for((*specp)->runtime);
    int rc = -ENOTSUP;
    if (!*eng)
        wisp_errf(err, sizeof(err), 0, "%s: no engine for this runtime", (*specp)->origin);
    else
        rc = (*eng)->create(*specp, &inst, err, sizeof(err));
    wisp_ipc_encode_loaded(b, rc, rc ? err : NULL, wisp_mono_ns() - t0, 0);
    send_frame(fd, b);
    if (rc != 0)
        _exit(1);
    return inst;
}

/* INVOKE frames that arrived while the running handler waited for a state
 * reply, kept (copied) in arrival order. */
struct stashed {
    struct stashed *next;
    size_t len;
    char body[];
};

struct exec_io {
    struct wisp_frame_reader in;
    struct stashed *stash_head, *stash_tail;
    /* The running event and where its frame body lives. A frame still in
     * the reader's buffer moves when the reader reads on (a state call), so
     * the first call copies it and re-points the event (pinning it). */
    struct wisp_event *ev;
    const char *body;
    size_t body_len;
    char *own; /* the copy, or the stashed frame being run */
};

static int stash(struct exec_io *x, const struct wisp_rd *rd)
{
    struct stashed *s = malloc(sizeof(*s) + rd->left);
    if (!s)
        return -ENOMEM;
    s->next = NULL;
    s->len = rd->left;
    memcpy(s->body, rd->p, rd->left);
    if (x->stash_tail)
        x->stash_tail->next = s;
    else
        x->stash_head = s;
    x->stash_tail = s;
    return 0;
}

static int pin_event(struct exec_io *x)
{
    if (x->own)
        return 0;
    x->own = malloc(x->body_len ? x->body_len : 1);
    if (!x->own)
        return -ENOMEM;
    memcpy(x->own, x->body, x->body_len);
    struct wisp_rd rd = {.p = x->own, .left = x->body_len};
    struct wisp_state *st = x->ev->state;
    uint64_t seq;
    int rc = wisp_ipc_decode_invoke(&rd, &seq, x->ev);
    x->ev->state = st;
    return rc;
}

/* The state RPC (state.h): the request goes out, frames are read until the
 * reply; INVOKE frames pipelined in front of it are stashed. */
static int state_rpc(void *ud, struct wisp_buf *req, struct wisp_buf *reply)
{
    struct exec_io *x = ud;
    if (pin_event(x) != 0)
        return -ENOMEM;
    int rc = wisp_ipc_write_all(x->in.fd, req->data, req->len);
    if (rc != 0)
        _exit(0); /* the supervisor went away */
    for (;;) {
        enum wisp_ipc_type type;
        struct wisp_rd rd;
        rc = wisp_frame_reader_next(&x->in, &type, &rd);
        if (rc == -EPIPE)
            _exit(0);
        if (rc != 0)
            return rc;
        if (type == WISP_IPC_INVOKE) {
            if ((rc = stash(x, &rd)) != 0)
                return rc;
            continue;
        }
        if (type != WISP_IPC_STATE_REPLY)
            return -EPROTO;
        wisp_buf_reset(reply);
        wisp_buf_put(reply, rd.p, rd.left);
        return reply->oom ? -ENOMEM : 0;
    }
}

/* The next INVOKE frame's body: a stashed one first, else from the socket.
 * 0, or non-zero when the executor should end. */
static int next_invoke(struct exec_io *x, struct wisp_rd *rd)
{
    free(x->own);
    x->own = NULL;
    if (x->stash_head) {
        struct stashed *s = x->stash_head;
        x->stash_head = s->next;
        if (!x->stash_head)
            x->stash_tail = NULL;
        /* The stashed block is owned: the event needs no pinning. */
        memmove(s, s->body, s->len);
        x->own = (char *)s;
        rd->p = x->own;
        rd->left = s->len;
        rd->bad = false;
        return 0;
    }
    enum wisp_ipc_type type;
    if (wisp_frame_reader_next(&x->in, &type, rd) != 0 || type != WISP_IPC_INVOKE)
        return -1;
    return 0;
}

void wisp_executor_main(int fd)
{
    struct exec_io x = {0};
    struct wisp_buf out;
    struct wisp_fnspec *spec = NULL;
    const struct wisp_engine_ops *eng = NULL;
    struct wisp_state st;
    reset_signals();
    if (wisp_executor_confine() != 0)
        log_warn("executor confinement unavailable: %s", strerror(errno));
    wisp_frame_reader_init(&x.in, fd);
    wisp_buf_init(&out);
    wisp_state_init(&st, state_rpc, &x);
    void *inst = load_instance(&x.in, &out, &eng, &spec);
    for (;;) {
        struct wisp_rd rd;
        if (next_invoke(&x, &rd) != 0)
            break;
        struct wisp_event ev;
        uint64_t seq;
        x.body = rd.p;
        x.body_len = rd.left;
        if (wisp_ipc_decode_invoke(&rd, &seq, &ev) != 0)
            break;
        wisp_state_reset(&st);
        ev.state = &st;
        x.ev = &ev;
        struct wisp_result res;
        wisp_result_init(&res);
        bool recycled = false;
        if (eng->invoke(inst, &ev, &res) != 0) {
            /* The instance is unusable (timeout, memory): start afresh so
             * the next event meets a clean state. */
            char err[1024];
            eng->destroy(inst);
            inst = NULL;
            recycled = true;
            if (eng->create(spec, &inst, err, sizeof(err)) != 0)
                log_error("re-creating %s failed: %s", spec->name, err);
        }
        res.state = &st;
        wisp_ipc_encode_result(&out, seq, &res, recycled);
        wisp_result_fini(&res);
        x.ev = NULL;
        send_frame(fd, &out);
        if (!inst)
            break;
    }
    if (inst)
        eng->destroy(inst);
    wisp_fnspec_destroy(spec);
    wisp_state_fini(&st);
    free(x.own);
    for (struct stashed *s = x.stash_head, *nx; s; s = nx) {
        nx = s->next;
        free(s);
    }
    wisp_frame_reader_fini(&x.in);
    wisp_buf_fini(&out);
    _exit(0);
}

int wisp_fork_with_socket(pid_t *pid, int *fd)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    pid_t parent = getpid();
    pid_t p = fork();
    if (p < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    if (p == 0) {
        /* Cannot fail for a valid signal; the check below covers a parent
         * that died before it took effect. */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        /* Keep only stdio and our end of the socket, moved to fd 3. */
        if (dup2(sv[1], 3) < 0)
            _exit(2);
        syscall(SYS_close_range, 4U, ~0U, 0U);
        *pid = 0;
        *fd = 3;
        return 0;
    }
    close(sv[1]);
    *pid = p;
    *fd = sv[0];
    return 0;
}

int wisp_executor_fork(pid_t *pid, int *fd)
{
    int rc = wisp_fork_with_socket(pid, fd);
    if (rc != 0 || *pid != 0)
        return rc;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        (void)dup2(devnull, STDIN_FILENO);
        close(devnull);
    }
    wisp_executor_main(3);
}

int wisp_executor_spawn_direct(void *ud, pid_t *pid, int *fd)
{
    (void)ud;
    return wisp_executor_fork(pid, fd);
}
