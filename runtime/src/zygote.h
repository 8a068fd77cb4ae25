/*
 * The zygote: a small process forked from wispd before any thread exists,
 * whose only job is to fork executors on request. Forking from it (rather
 * than from the multi-threaded supervisor, whose Paho threads may hold
 * locks) gives every executor a clean, single-threaded image that shares
 * its pages copy-on-write — a new executor costs a fork, not an exec.
 *
 * Executors are the zygote's children: it reaps them. The supervisor gets
 * each executor's pid and socket over the zygote's socket (SCM_RIGHTS).
 */
#ifndef WISP_ZYGOTE_H
#define WISP_ZYGOTE_H

#include <sys/types.h>

struct wisp_zygote {
    pid_t pid;
    int sock;
};

/* Forks the zygote. Call while the process is still single-threaded. */
int wisp_zygote_start(struct wisp_zygote *z);

/* Asks the zygote for a new executor (a wisp_spawn_fn; ud is the zygote).
 * Restarts the zygote once if it has died. Returns 0 or a negative errno. */
int wisp_zygote_spawn(void *ud, pid_t *pid, int *fd);

/* Closes the zygote's socket; it exits, and its executors die with it. */
void wisp_zygote_stop(struct wisp_zygote *z);

#endif
