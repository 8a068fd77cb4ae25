/*
 * The supervisor's event loop: one epoll set, callbacks per file
 * descriptor, and a timeout the caller computes from its own deadlines.
 * Watches removed while a batch of events is being dispatched are retired
 * safely: their callbacks are not called after removal. Deferred tasks
 * run once just before the loop next waits, so that work produced by many
 * callbacks of one pass (packets for one socket) is done once.
 */
#ifndef WISP_LOOP_H
#define WISP_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct wisp_loop;
struct wisp_watch;

/* A task owned by the caller (usually embedded in its struct): set fn and
 * ud, then wisp_loop_defer it as often as needed; it runs once per wait. */
struct wisp_loop_task {
    void (*fn)(void *ud);
    void *ud;
    struct wisp_loop_task *next;
    bool queued;
};

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

/* Queues t to run before the loop next waits (no-op when already queued). */
void wisp_loop_defer(struct wisp_loop *loop, struct wisp_loop_task *t);
/* Unqueues t; call before freeing the struct that holds it. */
void wisp_loop_cancel(struct wisp_loop *loop, struct wisp_loop_task *t);

/* Runs the deferred tasks, then waits up to timeout_ms (-1: forever) and dispatches what is ready.
 * Returns the number of events, 0 on timeout, or a negative errno. */
int wisp_loop_run_once(struct wisp_loop *loop, int timeout_ms);

#endif
