/*
 * The supervisor's event loop: one epoll set, callbacks per file
 * descriptor, and a timeout the caller computes from its own deadlines.
 * Watches removed while a batch of events is being dispatched are retired
 * safely: their callbacks are not called after removal.
 */
#ifndef WISP_LOOP_H
#define WISP_LOOP_H

#include <stdint.h>

struct wisp_loop;
struct wisp_watch;

typedef void (*wisp_loop_cb)(void *ud, int fd, uint32_t events);

int wisp_loop_create(struct wisp_loop **out);
void wisp_loop_destroy(struct wisp_loop *loop);

/* Watches fd for `events` (EPOLLIN...). The fd stays owned by the caller.
 * Returns a handle or NULL (errno set). */
struct wisp_watch *wisp_loop_add(struct wisp_loop *loop, int fd, uint32_t events, wisp_loop_cb cb,
                                 void *ud);
/* Changes the events watched for (EPOLLIN, EPOLLOUT...). 0 or a negative
 * errno. */
int wisp_loop_modify(struct wisp_loop *loop, struct wisp_watch *w, uint32_t events);
/* Stops watching; the handle is freed once the current dispatch ends.
 * Call before closing the fd. NULL is a no-op. */
void wisp_loop_remove(struct wisp_loop *loop, struct wisp_watch *w);

/* Waits up to timeout_ms (-1: forever) and dispatches what is ready.
 * Returns the number of events, 0 on timeout, or a negative errno. */
int wisp_loop_run_once(struct wisp_loop *loop, int timeout_ms);

#endif
