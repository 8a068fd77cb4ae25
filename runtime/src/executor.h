/*
 * Executor processes: where handlers run. An executor hosts one instance of
 * one function, serves one event at a time over its socket and exits when
 * the socket closes. It is confined before it reads anything: no new
 * privileges, a seccomp filter that refuses network sockets, exec, fork and
 * writing files, and it dies with its parent.
 */
#ifndef WISP_EXECUTOR_H
#define WISP_EXECUTOR_H

#include <sys/types.h>

/* Serves the executor protocol on fd until EOF, then exits the process. */
void wisp_executor_main(int fd) __attribute__((noreturn));

/* Forks an executor directly from the calling process, which must be
 * single-threaded (wisp run, tests, the zygote). On success *pid is the
 * child and *fd the caller's end of its socket (close-on-exec, blocking).
 * Returns 0 or a negative errno. */
int wisp_executor_fork(pid_t *pid, int *fd);

/* socketpair + fork for a child that dies with its parent: in the child
 * (*pid == 0) only stdio and its end of the socket (fd 3, in *fd) stay
 * open; the parent gets the child's pid and its own end. 0 or -errno. */
int wisp_fork_with_socket(pid_t *pid, int *fd);

/* How callers obtain executors: the zygote in wispd, wisp_executor_fork
 * elsewhere. */
typedef int (*wisp_spawn_fn)(void *ud, pid_t *pid, int *fd);
int wisp_executor_spawn_direct(void *ud, pid_t *pid, int *fd);

/* Applies the process confinement (no_new_privs + seccomp). Exposed for tests. */
int wisp_executor_confine(void);

#endif
