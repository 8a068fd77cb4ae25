#include "loop.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

struct wisp_watch {
    int fd;
    wisp_loop_cb cb;
    void *ud;
    bool dead;
    struct wisp_watch *next_dead;
};

struct wisp_loop {
    int epfd;
    struct wisp_watch *dead; /* removed during dispatch, freed after it */
    bool dispatching;
    struct wisp_loop_task *tasks; /* deferred, run before the next wait */
};

int wisp_loop_create(struct wisp_loop **out)
{
    struct wisp_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        int e = errno;
        free(l);
        return -e;
    }
    *out = l;
    return 0;
}

static void free_dead(struct wisp_loop *l)
{
    while (l->dead) {
        struct wisp_watch *w = l->dead;
        l->dead = w->next_dead;
        free(w);
    }
}

void wisp_loop_destroy(struct wisp_loop *l)
{
    if (!l)
        return;
    free_dead(l);
    close(l->epfd);
    free(l);
}

struct wisp_watch *wisp_loop_add(struct wisp_loop *l, int fd, uint32_t events, wisp_loop_cb cb,
                                 void *ud)
{
    struct wisp_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->fd = fd;
    w->cb = cb;
    w->ud = ud;
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = errno;
        free(w);
        errno = e;
        return NULL;
    }
    return w;
}

int wisp_loop_modify(struct wisp_loop *l, struct wisp_watch *w, uint32_t events)
{
    if (!w || w->dead)
        return -EINVAL;
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) == 0 ? 0 : -errno;
}

void wisp_loop_remove(struct wisp_loop *l, struct wisp_watch *w)
{
    if (!w)
        return;
    (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->dead = true;
    w->next_dead = l->dead;
    l->dead = w;
    if (!l->dispatching)
        free_dead(l);
}

void wisp_loop_defer(struct wisp_loop *l, struct wisp_loop_task *t)
{
    if (t->queued)
        return;
    t->queued = true;
    t->next = l->tasks;
    l->tasks = t;
}

void wisp_loop_cancel(struct wisp_loop *l, struct wisp_loop_task *t)
{
    if (!l || !t->queued)
        return;
    for (struct wisp_loop_task **p = &l->tasks; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    t->queued = false;
}

/* Tasks queued by tasks run too, up to a bound: a task that always queues
 * itself again turns the wait into a poll instead of a hang. One at a time
 * from the list, so that a task may cancel another (its owner is freed). */
static void run_tasks(struct wisp_loop *l)
{
    for (int n = 0; l->tasks && n < 256; n++) {
        struct wisp_loop_task *t = l->tasks;
        l->tasks = t->next;
        t->queued = false;
        t->fn(t->ud);
    }
}

int wisp_loop_run_once(struct wisp_loop *l, int timeout_ms)
{
    run_tasks(l);
    if (l->tasks)
        timeout_ms = 0;
    struct epoll_event evs[64];
    int n = epoll_wait(l->epfd, evs, 64, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    l->dispatching = true;
    for (int i = 0; i < n; i++) {
        struct wisp_watch *w = evs[i].data.ptr;
        if (!w->dead)
            w->cb(w->ud, w->fd, evs[i].events);
    }
    l->dispatching = false;
    free_dead(l);
    return n;
}
