/*
 * gpio_fake_edge CHIP_PATH LINE rising|falling [TIMESTAMP_NS] [SEQNO]
 *
 * Injects one edge into a line of the fake GPIO chip (gpio_fake.c): writes
 * a struct gpio_v2_line_event record into <CHIP_PATH>.line<LINE>.events,
 * the FIFO a watch of that line reads. The timestamp defaults to
 * CLOCK_MONOTONIC now, SEQNO to 0 (it is both the chip-wide and the
 * per-line sequence number). Exit status 1 with a message when nobody
 * watches the line, 2 on a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/gpio.h>

static int usage(const char *why)
{
    (void)fprintf(stderr,
                  "gpio_fake_edge: %s\n"
                  "usage: gpio_fake_edge CHIP_PATH LINE rising|falling [TIMESTAMP_NS] [SEQNO]\n",
                  why);
    return 2;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 6)
        return usage("wrong number of arguments");
    uint64_t line = 0, ts = 0, seqno = 0;
    if (parse_u64(argv[2], UINT32_MAX, &line))
        return usage("LINE must be a whole number");
    uint32_t id = 0;
    if (strcmp(argv[3], "rising") == 0)
        id = GPIO_V2_LINE_EVENT_RISING_EDGE;
    else if (strcmp(argv[3], "falling") == 0)
        id = GPIO_V2_LINE_EVENT_FALLING_EDGE;
    else
        return usage("the edge must be \"rising\" or \"falling\"");
    if (argc > 4 && parse_u64(argv[4], UINT64_MAX, &ts))
        return usage("TIMESTAMP_NS must be a whole number of nanoseconds");
    if (argc > 5 && parse_u64(argv[5], UINT32_MAX, &seqno))
        return usage("SEQNO must be a whole number below 2^32");
    if (argc <= 4) {
        struct timespec now;
        if (clock_gettime(CLOCK_MONOTONIC, &now) != 0) {
            perror("gpio_fake_edge: clock_gettime");
            return 1;
        }
        ts = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    }

    char path[4096];
    int n = snprintf(path, sizeof(path), "%s.line%u.events", argv[1], (unsigned)line);
    if (n < 0 || (size_t)n >= sizeof(path))
        return usage("CHIP_PATH is too long");
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENXIO || e == ENOENT)
            (void)fprintf(stderr, "gpio_fake_edge: nobody watches line %u of %s (%s: %s)\n",
                          (unsigned)line, argv[1], path, e == ENXIO ? "no reader" : "no such FIFO");
        else
            (void)fprintf(stderr, "gpio_fake_edge: %s: %s\n", path, strerror(e));
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
        (void)fprintf(stderr, "gpio_fake_edge: %s: not a FIFO\n", path);
        (void)close(fd);
        return 1;
    }
    struct gpio_v2_line_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.timestamp_ns = ts;
    ev.id = id;
    ev.offset = (uint32_t)line;
    ev.seqno = (uint32_t)seqno;
    ev.line_seqno = (uint32_t)seqno;
    ssize_t w = write(fd, &ev, sizeof(ev));
    if (w != (ssize_t)sizeof(ev)) {
        (void)fprintf(stderr, "gpio_fake_edge: %s: %s\n", path,
                      w < 0 ? strerror(errno) : "short write");
        (void)close(fd);
        return 1;
    }
    if (close(fd) != 0) {
        perror("gpio_fake_edge: close");
        return 1;
    }
    return 0;
}
