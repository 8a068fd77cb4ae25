#define WISP_LOG_MODULE "zygote"
#include "zygote.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "executor.h"
#include "log.h"

static int send_fd(int sock, pid_t pid, int fd)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof(cbuf));
    struct iovec iov = {.iov_base = &pid, .iov_len = sizeof(pid)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof(cbuf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    ssize_t w;
    do {
        w = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    return w == (ssize_t)sizeof(pid) ? 0 : -EPIPE;
}

static void zygote_loop(int sock) __attribute__((noreturn));
static void zygote_loop(int sock)
{
    /* Executors are reaped automatically; the supervisor learns of their
     * end from their sockets. */
    (void)signal(SIGCHLD, SIG_IGN);
    (void)signal(SIGINT, SIG_IGN);
    (void)signal(SIGTERM, SIG_IGN);
    (void)signal(SIGHUP, SIG_IGN);
    (void)signal(SIGPIPE, SIG_IGN);
    for (;;) {
        char req;
        ssize_t r = read(sock, &req, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            _exit(0);
        pid_t pid = -1;
        int fd = -1;
        int rc = wisp_executor_fork(&pid, &fd);
        if (rc != 0)
            pid = (pid_t)rc; /* a negative errno travels in place of the pid */
        int sent = send_fd(sock, pid, fd);
        if (fd >= 0)
            close(fd);
        if (sent != 0)
            _exit(0);
    }
}

int wisp_zygote_start(struct wisp_zygote *z)
{
    pid_t p;
    int fd;
    int rc = wisp_fork_with_socket(&p, &fd);
    if (rc != 0)
        return rc;
    if (p == 0) {
        (void)prctl(PR_SET_NAME, "wispd-zygote"); /* cosmetic */
        sigset_t none;
        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) != 0)
            log_warn("cannot reset the zygote's signal mask: %s", strerror(errno));
        zygote_loop(fd);
    }
    /* A zygote that stops answering must not hang the supervisor's loop. */
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    z->pid = p;
    z->sock = fd;
    return 0;
}

static int request(struct wisp_zygote *z, pid_t *pid, int *fd)
{
    char req = 'x';
    char cbuf[CMSG_SPACE(sizeof(int))];
    pid_t got = -1;
    struct iovec iov = {.iov_base = &got, .iov_len = sizeof(got)};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
    if (z->sock < 0)
        return -EPIPE;
    if (send(z->sock, &req, 1, MSG_NOSIGNAL) != 1)
        return -EPIPE;
    ssize_t r;
    do {
        r = recvmsg(z->sock, &msg, MSG_CMSG_CLOEXEC);
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)sizeof(got))
        return -EPIPE;
    if (got < 0)
        return (int)got;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_type != SCM_RIGHTS)
        return -EPROTO;
    memcpy(fd, CMSG_DATA(c), sizeof(int));
    *pid = got;
    return 0;
}

int wisp_zygote_spawn(void *ud, pid_t *pid, int *fd)
{
    struct wisp_zygote *z = ud;
    int rc = request(z, pid, fd);
    if (rc != -EPIPE)
        return rc;
    /* The zygote died (killed by hand, or by the OOM killer). Forking a new
     * one from this multi-threaded process is the fallback: the child only
     * forks and runs executor code, which takes no lock a Paho thread holds. */
    log_warn("zygote %d is gone; starting a new one", (int)z->pid);
    wisp_zygote_stop(z);
    rc = wisp_zygote_start(z);
    if (rc != 0)
        return rc;
    return request(z, pid, fd);
}

void wisp_zygote_stop(struct wisp_zygote *z)
{
    if (z->sock >= 0)
        close(z->sock);
    z->sock = -1;
    z->pid = -1;
}
