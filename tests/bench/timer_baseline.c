/*
 * Baseline for the timer-jitter benchmark (scripts/bench-devices.sh): a
 * bare C loop that sleeps until absolute CLOCK_REALTIME deadlines every
 * PERIOD_MS and records how late it woke, the best a process on this
 * machine can do. Prints one lateness in microseconds per line.
 *
 *   wisp-timer-baseline PERIOD_MS COUNT
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        (void)fprintf(stderr, "usage: wisp-timer-baseline PERIOD_MS COUNT\n");
        return 2;
    }
    long period_ms = strtol(argv[1], NULL, 10), count = strtol(argv[2], NULL, 10);
    if (period_ms < 1 || period_ms > 60000 || count < 1 || count > 1000000) {
        (void)fprintf(stderr, "wisp-timer-baseline: PERIOD_MS 1-60000, COUNT 1-1000000\n");
        return 2;
    }
    uint64_t period = (uint64_t)period_ms * 1000000ULL, anchor = now_ns();
    for (long k = 1; k <= count; k++) {
        uint64_t due = anchor + (uint64_t)k * period;
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ULL),
                              .tv_nsec = (long)(due % 1000000000ULL)};
        while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        printf("%llu\n", (unsigned long long)((now_ns() - due) / 1000ULL));
    }
    return 0;
}
