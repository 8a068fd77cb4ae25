/* The event loop (runtime/src/loop.c): watches and deferred tasks. */
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "check.h"
#include "loop.h"

struct counter {
    struct wisp_loop *loop;
    struct wisp_loop_task task;
    struct wisp_loop_task *other; /* cancelled by this task, if set */
    int runs;
    int requeue; /* times it queues itself again */
    int fd_calls;
};

static void count_task(void *ud)
{
    struct counter *c = ud;
    c->runs++;
    if (c->other)
        wisp_loop_cancel(c->loop, c->other);
    if (c->requeue > 0) {
        c->requeue--;
        wisp_loop_defer(c->loop, &c->task);
    }
}

static void init_counter(struct counter *c, struct wisp_loop *loop)
{
    *c = (struct counter){.loop = loop};
    c->task = (struct wisp_loop_task){.fn = count_task, .ud = c};
}

/* A task queued many times in one pass runs once, before the wait. */
static void test_defer_once(void)
{
    struct wisp_loop *loop = NULL;
    CHECK_INT_EQ(wisp_loop_create(&loop), 0);
    struct counter a;
    init_counter(&a, loop);
    for (int i = 0; i < 5; i++)
        wisp_loop_defer(loop, &a.task);
    CHECK_INT_EQ(a.runs, 0);
    CHECK_INT_EQ(wisp_loop_run_once(loop, 0), 0);
    CHECK_INT_EQ(a.runs, 1);
    CHECK_INT_EQ(wisp_loop_run_once(loop, 0), 0);
    CHECK_INT_EQ(a.runs, 1); /* not queued again */
    wisp_loop_defer(loop, &a.task);
    CHECK_INT_EQ(wisp_loop_run_once(loop, 0), 0);
    CHECK_INT_EQ(a.runs, 2);
    wisp_loop_destroy(loop);
}

/* Tasks queued by tasks run before the same wait; one that always queues
 * itself again is bounded and turns the wait into a poll (no hang). */
static void test_defer_from_task(void)
{
    struct wisp_loop *loop = NULL;
    CHECK_INT_EQ(wisp_loop_create(&loop), 0);
    struct counter a;
    init_counter(&a, loop);
    a.requeue = 3;
    wisp_loop_defer(loop, &a.task);
    CHECK_INT_EQ(wisp_loop_run_once(loop, 0), 0);
    CHECK_INT_EQ(a.runs, 4);

    /* the task reads requeue through the loop, unseen by cppcheck */
    // cppcheck-suppress redundantAssignment
    a.requeue = 1000000;
    wisp_loop_defer(loop, &a.task);
    /* -1 would block forever if the still-queued task did not force a poll */
    CHECK_INT_EQ(wisp_loop_run_once(loop, -1), 0);
    CHECK(a.runs > 4 && a.runs < 4 + 1000000);
    // cppcheck-suppress redundantAssignment
    a.requeue = 0;
    wisp_loop_cancel(loop, &a.task);
    wisp_loop_destroy(loop);
}

/* A cancelled task does not run, also when a task cancels another that was
 * queued in the same round. */
static void test_cancel(void)
{
    struct wisp_loop *loop = NULL;
    CHECK_INT_EQ(wisp_loop_create(&loop), 0);
    struct counter a, b, c;
    init_counter(&a, loop);
    init_counter(&b, loop);
    init_counter(&c, loop);
    wisp_loop_defer(loop, &a.task);
    wisp_loop_cancel(loop, &a.task);
    wisp_loop_cancel(loop, &a.task); /* twice: harmless */
    CHECK_INT_EQ(wisp_loop_run_once(loop, 0), 0);
    CHECK_INT_EQ(a.runs, 0);

    /* queued first, run last: whichever runs first cancels the other */
    b.other = &c.task;
    c.other = &b.task;
    wisp_loop_defer(loop, &b.task);
    wisp_loop_defer(loop, &c.task);
    CHECK_INT_EQ(wisp_loop_run_once(loop, 0), 0);
    CHECK_INT_EQ(b.runs + c.runs, 1);
    wisp_loop_destroy(loop);
}

static void on_readable(void *ud, int fd, uint32_t events)
{
    struct counter *c = ud;
    char buf[16];
    CHECK((events & EPOLLIN) != 0);
    CHECK(read(fd, buf, sizeof(buf)) > 0);
    c->fd_calls++;
    wisp_loop_defer(c->loop, &c->task); /* work produced by a callback */
}

/* Work deferred by a callback is done before the loop next waits, once
 * for all the callbacks of that pass. */
static void test_defer_after_dispatch(void)
{
    struct wisp_loop *loop = NULL;
    CHECK_INT_EQ(wisp_loop_create(&loop), 0);
    int p1[2], p2[2];
    CHECK_INT_EQ(pipe(p1), 0);
    CHECK_INT_EQ(pipe(p2), 0);
    struct counter a;
    init_counter(&a, loop);
    struct wisp_watch *w1 = wisp_loop_add(loop, p1[0], EPOLLIN, on_readable, &a);
    struct wisp_watch *w2 = wisp_loop_add(loop, p2[0], EPOLLIN, on_readable, &a);
    CHECK(w1 && w2);
    CHECK_INT_EQ(write(p1[1], "x", 1), 1);
    CHECK_INT_EQ(write(p2[1], "y", 1), 1);
    CHECK_INT_EQ(wisp_loop_run_once(loop, 1000), 2);
    CHECK_INT_EQ(a.fd_calls, 2);
    CHECK_INT_EQ(a.runs, 0); /* not yet: it runs before the next wait */
    CHECK_INT_EQ(wisp_loop_run_once(loop, 0), 0);
    CHECK_INT_EQ(a.runs, 1);
    wisp_loop_remove(loop, w1);
    wisp_loop_remove(loop, w2);
    for (int i = 0; i < 2; i++) {
        (void)close(p1[i]);
        (void)close(p2[i]);
    }
    wisp_loop_destroy(loop);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"defer_once", test_defer_once},
        {"defer_from_task", test_defer_from_task},
        {"cancel", test_cancel},
        {"defer_after_dispatch", test_defer_after_dispatch},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
