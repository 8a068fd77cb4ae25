/* The GPIO ports: the linux port's real code against the fake chip below it
 * (tests/fakes/gpio_fake.c, linked in: chips are files in a temp dev root),
 * the generic layer's checks and software debounce, and the sim port. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/gpio.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "gpio.h"
#include "testutil.h"
#include "util.h"

#define MS 1000000ULL

static char err[1024];
static char root[256];
static struct wisp_port_env env;

static bool setup(const char *tag)
{
    if (!wisp_test_mkdtemp(root, sizeof(root), tag))
        return false;
    env.sysfs_root = NULL;
    env.dev_root = root;
    return true;
}

/* The standard fake chip: gpiochip0, 32 lines, line 17 named BUTTON. */
static void write_chip0(void)
{
    wisp_test_write(root, "gpiochip0", "label=fake-chip\nlines=32\nname17=BUTTON\n");
}

/* Opens a chip from JSON settings (NULL: none); err says why it failed. */
static int open_chip(const char *json, const char *name, struct wisp_gpio_chip **c)
{
    cJSON *cfg = NULL;
    if (json) {
        cfg = cJSON_Parse(json);
        CHECK(cfg != NULL);
    }
    err[0] = '\0';
    *c = NULL;
    int rc = wisp_gpio_chip_open(cfg, name, &env, c, err, sizeof(err));
    cJSON_Delete(cfg);
    if (rc == 0)
        CHECK(*c != NULL);
    else
        CHECK(*c == NULL);
    return rc;
}

/* Expects opening to fail with -EINVAL and exactly message want. */
static void open_fails(const char *json, const char *name, const char *want)
{
    struct wisp_gpio_chip *c = NULL;
    CHECK_INT_EQ(open_chip(json, name, &c), -EINVAL);
    CHECK_STR_EQ(err, want);
    wisp_gpio_chip_close(c);
}

/* root/rel's text, or "" when it cannot be read (a failed check then). */
static const char *file_text(const char *rel)
{
    static char buf[512];
    char path[512];
    wisp_test_path(path, sizeof(path), root, rel);
    char *t = wisp_test_read_file(path);
    (void)snprintf(buf, sizeof(buf), "%s", t ? t : "");
    free(t);
    return buf;
}

/* Writes raw bytes into a line's event FIFO, as an edge source would. */
static void inject_raw(uint32_t line, const void *data, size_t len)
{
    char path[512];
    (void)snprintf(path, sizeof(path), "%s/gpiochip0.line%u.events", root, line);
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK_INT_EQ(write(fd, data, len), (long long)len);
    CHECK_INT_EQ(close(fd), 0);
}

static void inject(uint32_t line, uint32_t id, uint64_t ts, uint32_t seqno)
{
    struct gpio_v2_line_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.timestamp_ns = ts;
    ev.id = id;
    ev.offset = line;
    ev.seqno = seqno;
    ev.line_seqno = seqno;
    inject_raw(line, &ev, sizeof(ev));
}

static bool readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void test_edge_names(void)
{
    enum wisp_gpio_edge e = WISP_GPIO_EDGE_BOTH;
    CHECK_STR_EQ(wisp_gpio_edge_name(WISP_GPIO_EDGE_RISING), "rising");
    CHECK_STR_EQ(wisp_gpio_edge_name(WISP_GPIO_EDGE_FALLING), "falling");
    CHECK_STR_EQ(wisp_gpio_edge_name(WISP_GPIO_EDGE_BOTH), "both");
    CHECK_INT_EQ(wisp_gpio_edge_parse("rising", &e), 0);
    CHECK_INT_EQ(e, WISP_GPIO_EDGE_RISING);
    CHECK_INT_EQ(wisp_gpio_edge_parse("falling", &e), 0);
    CHECK_INT_EQ(e, WISP_GPIO_EDGE_FALLING);
    CHECK_INT_EQ(wisp_gpio_edge_parse("both", &e), 0);
    CHECK_INT_EQ(e, WISP_GPIO_EDGE_BOTH);
    CHECK_INT_EQ(wisp_gpio_edge_parse("Rising", &e), -EINVAL);
    CHECK_INT_EQ(wisp_gpio_edge_parse("", &e), -EINVAL);
    CHECK_INT_EQ(wisp_gpio_edge_parse("rising ", &e), -EINVAL);
    CHECK_INT_EQ(wisp_gpio_edge_parse(NULL, &e), -EINVAL);
    CHECK_INT_EQ(e, WISP_GPIO_EDGE_BOTH);
}

static void test_registry(void)
{
    CHECK_STR_EQ(wisp_gpio_port_find("linux")->name, "linux");
    CHECK_STR_EQ(wisp_gpio_port_find("sim")->name, "sim");
    CHECK(wisp_gpio_port_find("iio") == NULL);
    CHECK(wisp_gpio_port_find(NULL) == NULL);
}

static void test_chip_info(void)
{
    if (!setup("gpio-info"))
        return;
    write_chip0();
    struct wisp_gpio_chip *c = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    CHECK_STR_EQ(wisp_gpio_chip_name(c), "gpiochip0");
    struct wisp_gpio_chip_info ci;
    CHECK_INT_EQ(wisp_gpio_chip_info(c, &ci, err, sizeof(err)), 0);
    CHECK_STR_EQ(ci.name, "gpiochip0");
    CHECK_STR_EQ(ci.label, "fake-chip");
    CHECK_INT_EQ(ci.lines, 32);

    struct wisp_gpio_line_info li;
    CHECK_INT_EQ(wisp_gpio_line_info(c, 17, &li, err, sizeof(err)), 0);
    CHECK_INT_EQ(li.line, 17);
    CHECK_STR_EQ(li.name, "BUTTON");
    CHECK_STR_EQ(li.consumer, "");
    CHECK(!li.used && !li.output && !li.active_low);
    CHECK_INT_EQ(wisp_gpio_line_info(c, 3, &li, err, sizeof(err)), 0);
    CHECK_STR_EQ(li.name, "");

    /* Lines this process holds show as used, with their consumer. */
    struct wisp_gpio_watch *w = NULL;
    CHECK_INT_EQ(wisp_gpio_watch(c, 17, WISP_GPIO_EDGE_BOTH, 0, "door", &w, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_line_info(c, 17, &li, err, sizeof(err)), 0);
    CHECK(li.used && !li.output);
    CHECK_STR_EQ(li.consumer, "door");
    CHECK_INT_EQ(wisp_gpio_set(c, 5, 1, NULL, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_line_info(c, 5, &li, err, sizeof(err)), 0);
    CHECK(li.used && li.output);
    CHECK_STR_EQ(li.consumer, "wisp");
    wisp_gpio_unwatch(w);
    CHECK_INT_EQ(wisp_gpio_line_info(c, 17, &li, err, sizeof(err)), 0);
    CHECK(!li.used);
    CHECK_STR_EQ(li.consumer, "");
    wisp_gpio_chip_close(c);

    /* Closing the chip released the output. */
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (c) {
        CHECK_INT_EQ(wisp_gpio_line_info(c, 5, &li, err, sizeof(err)), 0);
        CHECK(!li.used);
        wisp_gpio_chip_close(c);
    }
out:
    wisp_test_rmtree(root);
}

static void test_watch_events(void)
{
    if (!setup("gpio-watch"))
        return;
    write_chip0();
    struct wisp_gpio_chip *c = NULL;
    struct wisp_gpio_watch *w = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    CHECK_INT_EQ(wisp_gpio_watch(c, 17, WISP_GPIO_EDGE_BOTH, 0, "door", &w, err, sizeof(err)), 0);
    if (!w)
        goto out;
    CHECK_STR_EQ(file_text("gpiochip0.line17.request"),
                 "input edges=both debounce_us=0 consumer=door\n");
    int fd = wisp_gpio_watch_fd(w);
    CHECK(fd >= 0);
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);

    struct wisp_gpio_event ev[8];
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 8, err, sizeof(err)), 0);
    CHECK(!readable(fd, 0));

    inject(17, GPIO_V2_LINE_EVENT_RISING_EDGE, 1000 * MS, 1);
    inject(17, GPIO_V2_LINE_EVENT_FALLING_EDGE, 1000 * MS + 250, 2);
    CHECK(readable(fd, 1000));
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 8, err, sizeof(err)), 2);
    CHECK_INT_EQ(ev[0].edge, WISP_GPIO_EDGE_RISING);
    CHECK(ev[0].timestamp_ns == 1000 * MS);
    CHECK_INT_EQ(ev[0].line, 17);
    CHECK_INT_EQ(ev[0].seqno, 1);
    CHECK_INT_EQ(ev[1].edge, WISP_GPIO_EDGE_FALLING);
    CHECK(ev[1].timestamp_ns == 1000 * MS + 250);
    CHECK_INT_EQ(ev[1].line, 17);
    CHECK_INT_EQ(ev[1].seqno, 2);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 8, err, sizeof(err)), 0);
    CHECK(!readable(fd, 0));

    /* More waiting than fit: the rest stays for the next read. */
    for (uint32_t i = 0; i < 3; i++)
        inject(17, i % 2 ? GPIO_V2_LINE_EVENT_FALLING_EDGE : GPIO_V2_LINE_EVENT_RISING_EDGE,
               2000 * MS + i, 3 + i);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 2, err, sizeof(err)), 2);
    CHECK_INT_EQ(ev[1].seqno, 4);
    CHECK(readable(fd, 0));
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 2, err, sizeof(err)), 1);
    CHECK_INT_EQ(ev[0].seqno, 5);
    CHECK_INT_EQ(ev[0].edge, WISP_GPIO_EDGE_RISING);
    CHECK_INT_EQ(wisp_gpio_watch_dropped(w), 0);

    /* The edge tool writes the same records (when the build has it). */
    const char *bdir = getenv("WISP_BUILD_DIR");
    char tool[512], chip[512];
    (void)snprintf(tool, sizeof(tool), "%s/tests/gpio_fake_edge", bdir ? bdir : ".");
    wisp_test_path(chip, sizeof(chip), root, "gpiochip0");
    const char *emu = getenv("WISP_TEST_EMULATOR"); /* cross builds: qemu-user */
    if (bdir && access(tool, X_OK) == 0) {
        char cmd[2200], prog[1000];
        (void)snprintf(prog, sizeof(prog), "%s '%s'", emu ? emu : "", tool);
        (void)snprintf(cmd, sizeof(cmd), "%s '%s' 17 falling 123456789 42", prog, chip);
        CHECK_INT_EQ(system(cmd), 0);
        CHECK(readable(fd, 1000));
        CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 8, err, sizeof(err)), 1);
        CHECK_INT_EQ(ev[0].edge, WISP_GPIO_EDGE_FALLING);
        CHECK(ev[0].timestamp_ns == 123456789);
        CHECK_INT_EQ(ev[0].seqno, 42);
        /* Default timestamp: the monotonic clock now. */
        uint64_t before = wisp_mono_ns();
        (void)snprintf(cmd, sizeof(cmd), "%s '%s' 17 rising", prog, chip);
        CHECK_INT_EQ(system(cmd), 0);
        CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 8, err, sizeof(err)), 1);
        CHECK(ev[0].timestamp_ns >= before && ev[0].timestamp_ns <= wisp_mono_ns());
        /* Nobody watches line 3; bad arguments. */
        (void)snprintf(cmd, sizeof(cmd), "%s '%s' 3 rising 2>/dev/null", prog, chip);
        int st = system(cmd);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        (void)snprintf(cmd, sizeof(cmd), "%s '%s' 17 up 2>/dev/null", prog, chip);
        st = system(cmd);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    }

    /* Unwatched, the line has no reader any more. */
    wisp_gpio_unwatch(w);
    w = NULL;
    char fifo[512];
    wisp_test_path(fifo, sizeof(fifo), root, "gpiochip0.line17.events");
    errno = 0;
    CHECK_INT_EQ(open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC), -1);
    CHECK_INT_EQ(errno, ENXIO);
out:
    wisp_gpio_unwatch(w);
    wisp_gpio_chip_close(c);
    wisp_test_rmtree(root);
}

static void test_edge_filter(void)
{
    if (!setup("gpio-filter"))
        return;
    write_chip0();
    struct wisp_gpio_chip *c = NULL;
    struct wisp_gpio_watch *w = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    CHECK_INT_EQ(wisp_gpio_watch(c, 4, WISP_GPIO_EDGE_RISING, 0, NULL, &w, err, sizeof(err)), 0);
    if (!w)
        goto out;
    /* The kernel is asked for rising edges only. */
    CHECK_STR_EQ(file_text("gpiochip0.line4.request"),
                 "input edges=rising debounce_us=0 consumer=wisp\n");
    /* A falling edge that gets through anyway is not passed on. */
    inject(4, GPIO_V2_LINE_EVENT_RISING_EDGE, 10 * MS, 1);
    inject(4, GPIO_V2_LINE_EVENT_FALLING_EDGE, 11 * MS, 2);
    inject(4, GPIO_V2_LINE_EVENT_RISING_EDGE, 12 * MS, 3);
    struct wisp_gpio_event ev[8];
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 8, err, sizeof(err)), 2);
    CHECK_INT_EQ(ev[0].edge, WISP_GPIO_EDGE_RISING);
    CHECK_INT_EQ(ev[1].edge, WISP_GPIO_EDGE_RISING);
    CHECK(ev[1].timestamp_ns == 12 * MS);
    CHECK_INT_EQ(wisp_gpio_watch_dropped(w), 0);
    wisp_gpio_unwatch(w);
    w = NULL;

    CHECK_INT_EQ(wisp_gpio_watch(c, 4, WISP_GPIO_EDGE_FALLING, 0, "f", &w, err, sizeof(err)), 0);
    CHECK_STR_EQ(file_text("gpiochip0.line4.request"),
                 "input edges=falling debounce_us=0 consumer=f\n");
out:
    wisp_gpio_unwatch(w);
    wisp_gpio_chip_close(c);
    wisp_test_rmtree(root);
}

static void test_debounce(void)
{
    if (!setup("gpio-debounce"))
        return;
    write_chip0();
    struct wisp_gpio_chip *c = NULL;
    struct wisp_gpio_watch *w = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    CHECK_INT_EQ(wisp_gpio_watch(c, 17, WISP_GPIO_EDGE_BOTH, 20, "btn", &w, err, sizeof(err)), 0);
    if (!w)
        goto out;
    /* The kernel is asked to debounce too. */
    CHECK_STR_EQ(file_text("gpiochip0.line17.request"),
                 "input edges=both debounce_us=20000 consumer=btn\n");
    /* A bounce: 5 ms apart after the first edge, then edges 30 ms apart. */
    const uint64_t t0 = 5000 * MS;
    const uint64_t at[] = {0, 5, 10, 15, 45, 75, 80, 105};
    const int kept[] = {1, 0, 0, 0, 1, 1, 0, 1};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
        inject(17, i % 2 ? GPIO_V2_LINE_EVENT_FALLING_EDGE : GPIO_V2_LINE_EVENT_RISING_EDGE,
               t0 + at[i] * MS, (uint32_t)i + 1);
    struct wisp_gpio_event ev[16];
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 16, err, sizeof(err)), 4);
    size_t k = 0;
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]) && k < 4; i++) {
        if (!kept[i])
            continue;
        CHECK(ev[k].timestamp_ns == t0 + at[i] * MS);
        CHECK_INT_EQ(ev[k].seqno, i + 1);
        k++;
    }
    CHECK_INT_EQ(wisp_gpio_watch_dropped(w), 4);
    /* Exactly debounce_ms after the last accepted edge is kept. */
    inject(17, GPIO_V2_LINE_EVENT_RISING_EDGE, t0 + 125 * MS, 9);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 16, err, sizeof(err)), 1);
    /* Everything read was bounce: 0, and the fd is drained. */
    inject(17, GPIO_V2_LINE_EVENT_FALLING_EDGE, t0 + 126 * MS, 10);
    inject(17, GPIO_V2_LINE_EVENT_RISING_EDGE, t0 + 127 * MS, 11);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 16, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_watch_dropped(w), 6);
    CHECK(!readable(wisp_gpio_watch_fd(w), 0));
    /* Debounce works across reads of one event each. */
    inject(17, GPIO_V2_LINE_EVENT_FALLING_EDGE, t0 + 200 * MS, 12);
    inject(17, GPIO_V2_LINE_EVENT_RISING_EDGE, t0 + 201 * MS, 13);
    inject(17, GPIO_V2_LINE_EVENT_FALLING_EDGE, t0 + 230 * MS, 14);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 1, err, sizeof(err)), 1);
    CHECK_INT_EQ(ev[0].seqno, 12);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 1, err, sizeof(err)), 1);
    CHECK_INT_EQ(ev[0].seqno, 14);
    CHECK_INT_EQ(wisp_gpio_watch_dropped(w), 7);
    wisp_gpio_unwatch(w);
    w = NULL;
    wisp_gpio_chip_close(c);
    c = NULL;

    /* A chip that cannot debounce: the request goes without it and the
     * software debounce still applies. */
    wisp_test_write(root, "gpiochip0", "label=plain\nlines=8\ndebounce=unsupported\n");
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    CHECK_INT_EQ(wisp_gpio_watch(c, 2, WISP_GPIO_EDGE_BOTH, 50, "btn", &w, err, sizeof(err)), 0);
    if (!w)
        goto out;
    CHECK_STR_EQ(file_text("gpiochip0.line2.request"),
                 "input edges=both debounce_us=0 consumer=btn\n");
    inject(2, GPIO_V2_LINE_EVENT_RISING_EDGE, 100 * MS, 1);
    inject(2, GPIO_V2_LINE_EVENT_FALLING_EDGE, 149 * MS, 2);
    inject(2, GPIO_V2_LINE_EVENT_RISING_EDGE, 150 * MS, 3);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 16, err, sizeof(err)), 2);
    CHECK_INT_EQ(wisp_gpio_watch_dropped(w), 1);

    /* Too long a debounce is refused. */
    struct wisp_gpio_watch *w2 = NULL;
    CHECK_INT_EQ(wisp_gpio_watch(c, 3, WISP_GPIO_EDGE_BOTH, WISP_GPIO_DEBOUNCE_MAX_MS + 1, "x", &w2,
                                 err, sizeof(err)),
                 -EINVAL);
    CHECK_STR_EQ(err, "gpiochip0: line 3: debounce 10001 ms is too long (at most 10000 ms)");
    CHECK(w2 == NULL);
out:
    wisp_gpio_unwatch(w);
    wisp_gpio_chip_close(c);
    wisp_test_rmtree(root);
}

static void test_garbled(void)
{
    if (!setup("gpio-garbled"))
        return;
    write_chip0();
    struct wisp_gpio_chip *c = NULL;
    struct wisp_gpio_watch *w = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    CHECK_INT_EQ(wisp_gpio_watch(c, 17, WISP_GPIO_EDGE_BOTH, 0, "g", &w, err, sizeof(err)), 0);
    if (!w)
        goto out;
    struct wisp_gpio_event ev[4];
    char expect[512];
    /* Part of a record. */
    inject_raw(17, "0123456789", 10);
    err[0] = '\0';
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 4, err, sizeof(err)), -EIO);
    (void)snprintf(expect, sizeof(expect),
                   "%s/gpiochip0: line 17: short event read (10 bytes, not a multiple of %zu)",
                   root, sizeof(struct gpio_v2_line_event));
    CHECK_STR_EQ(err, expect);
    /* A whole record of an unknown kind. */
    struct gpio_v2_line_event bad;
    memset(&bad, 0, sizeof(bad));
    bad.id = 7;
    bad.offset = 17;
    inject_raw(17, &bad, sizeof(bad));
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 4, err, sizeof(err)), -EIO);
    (void)snprintf(expect, sizeof(expect), "%s/gpiochip0: line 17: garbled event (unknown kind 7)",
                   root);
    CHECK_STR_EQ(err, expect);
    /* A record for another line. */
    bad.id = GPIO_V2_LINE_EVENT_RISING_EDGE;
    bad.offset = 3;
    inject_raw(17, &bad, sizeof(bad));
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 4, err, sizeof(err)), -EIO);
    CHECK_CONTAINS(err, "garbled event (for line 3)");
    /* Good records still decode afterwards. */
    inject(17, GPIO_V2_LINE_EVENT_FALLING_EDGE, 77, 1);
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 4, err, sizeof(err)), 1);
    CHECK_INT_EQ(ev[0].edge, WISP_GPIO_EDGE_FALLING);
out:
    wisp_gpio_unwatch(w);
    wisp_gpio_chip_close(c);
    wisp_test_rmtree(root);
}

static void test_outputs(void)
{
    if (!setup("gpio-out"))
        return;
    write_chip0();
    struct wisp_gpio_chip *c = NULL;
    struct wisp_gpio_watch *w = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    int v = -1;
    CHECK_INT_EQ(wisp_gpio_set(c, 5, 1, "relay", err, sizeof(err)), 0);
    CHECK_STR_EQ(file_text("gpiochip0.line5.request"), "output value=1 consumer=relay\n");
    CHECK_STR_EQ(file_text("gpiochip0.line5.value"), "1\n");
    CHECK_INT_EQ(wisp_gpio_get(c, 5, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 1);
    /* Later sets reuse the request (a second request would be busy). */
    CHECK_INT_EQ(wisp_gpio_set(c, 5, 0, "relay", err, sizeof(err)), 0);
    CHECK_STR_EQ(file_text("gpiochip0.line5.value"), "0\n");
    CHECK_INT_EQ(wisp_gpio_set(c, 5, 1, "other", err, sizeof(err)), 0);
    CHECK_STR_EQ(file_text("gpiochip0.line5.value"), "1\n");
    CHECK_STR_EQ(file_text("gpiochip0.line5.request"), "output value=1 consumer=relay\n");
    /* A driven line reads back what this chip drives. */
    wisp_test_write(root, "gpiochip0.line5.value", "0\n");
    CHECK_INT_EQ(wisp_gpio_get(c, 5, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 1);
    /* Output initially low. */
    CHECK_INT_EQ(wisp_gpio_set(c, 6, 0, NULL, err, sizeof(err)), 0);
    CHECK_STR_EQ(file_text("gpiochip0.line6.request"), "output value=0 consumer=wisp\n");
    CHECK_STR_EQ(file_text("gpiochip0.line6.value"), "0\n");

    /* Inputs: a brief request reads the value file (missing: 0). */
    CHECK_INT_EQ(wisp_gpio_get(c, 9, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 0);
    wisp_test_write(root, "gpiochip0.line9.value", "1\n");
    CHECK_INT_EQ(wisp_gpio_get(c, 9, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 1);
    struct wisp_gpio_line_info li;
    CHECK_INT_EQ(wisp_gpio_line_info(c, 9, &li, err, sizeof(err)), 0);
    CHECK(!li.used); /* released again */
    /* A watched line reads through its watch request. */
    CHECK_INT_EQ(wisp_gpio_watch(c, 17, WISP_GPIO_EDGE_BOTH, 0, "door", &w, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_get(c, 17, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 0);
    wisp_test_write(root, "gpiochip0.line17.value", "1\n");
    CHECK_INT_EQ(wisp_gpio_get(c, 17, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 1);
    /* A garbled value file is an error, not a value. */
    wisp_test_write(root, "gpiochip0.line9.value", "x\n");
    CHECK_INT_EQ(wisp_gpio_get(c, 9, &v, err, sizeof(err)), -EIO);
    CHECK_CONTAINS(err, "gpiochip0: line 9: reading the value:");

    /* Bad values; a watched line cannot be driven. */
    CHECK_INT_EQ(wisp_gpio_set(c, 5, 2, NULL, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "gpiochip0: line 5: value must be 0 or 1, got 2");
    CHECK_INT_EQ(wisp_gpio_set(c, 17, 1, NULL, err, sizeof(err)), -EBUSY);
    CHECK_CONTAINS(err, "/gpiochip0: line 17 is busy (held by \"door\")");
out:
    wisp_gpio_unwatch(w);
    wisp_gpio_chip_close(c);
    wisp_test_rmtree(root);
}

static void test_busy(void)
{
    if (!setup("gpio-busy"))
        return;
    write_chip0();
    struct wisp_gpio_chip *a = NULL, *b = NULL;
    struct wisp_gpio_watch *w = NULL, *w2 = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &a), 0);
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &b), 0);
    if (!a || !b)
        goto out;
    CHECK_INT_EQ(wisp_gpio_watch(a, 17, WISP_GPIO_EDGE_BOTH, 0, "foo", &w, err, sizeof(err)), 0);
    char expect[512];
    (void)snprintf(expect, sizeof(expect), "%s/gpiochip0: line 17 is busy (held by \"foo\")", root);
    CHECK_INT_EQ(wisp_gpio_watch(b, 17, WISP_GPIO_EDGE_RISING, 0, "bar", &w2, err, sizeof(err)),
                 -EBUSY);
    CHECK_STR_EQ(err, expect);
    CHECK(w2 == NULL);
    /* The same chip handle cannot watch it twice either. */
    CHECK_INT_EQ(wisp_gpio_watch(a, 17, WISP_GPIO_EDGE_BOTH, 0, "foo2", &w2, err, sizeof(err)),
                 -EBUSY);
    CHECK_STR_EQ(err, expect);
    CHECK_INT_EQ(wisp_gpio_set(b, 17, 1, "bar", err, sizeof(err)), -EBUSY);
    CHECK_STR_EQ(err, expect);
    int v = 0;
    CHECK_INT_EQ(wisp_gpio_get(b, 17, &v, err, sizeof(err)), -EBUSY);
    /* Released, the line is free for the other handle. */
    wisp_gpio_unwatch(w);
    w = NULL;
    CHECK_INT_EQ(wisp_gpio_watch(b, 17, WISP_GPIO_EDGE_RISING, 0, "bar", &w2, err, sizeof(err)), 0);
    CHECK_STR_EQ(file_text("gpiochip0.line17.request"),
                 "input edges=rising debounce_us=0 consumer=bar\n");
    /* An output held by one handle is busy for the other. */
    CHECK_INT_EQ(wisp_gpio_set(a, 8, 1, "lamp", err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_set(b, 8, 0, "x", err, sizeof(err)), -EBUSY);
    CHECK_CONTAINS(err, "line 8 is busy (held by \"lamp\")");
    CHECK_STR_EQ(file_text("gpiochip0.line8.value"), "1\n");
out:
    wisp_gpio_unwatch(w);
    wisp_gpio_unwatch(w2);
    wisp_gpio_chip_close(a);
    wisp_gpio_chip_close(b);
    wisp_test_rmtree(root);
}

static void test_missing_chip(void)
{
    if (!setup("gpio-missing"))
        return;
    struct wisp_gpio_chip *c = NULL;
    char expect[512];
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), -ENOENT);
    (void)snprintf(expect, sizeof(expect), "%s/gpiochip0: No such file or directory", root);
    CHECK_STR_EQ(err, expect);
    /* The default dev root. */
    env.dev_root = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip99999", &c), -ENOENT);
    CHECK_STR_EQ(err, "/dev/gpiochip99999: No such file or directory");
    env.dev_root = root;
    /* Files that are not chips. */
    wisp_test_write(root, "gpiochip1", "hello\n");
    CHECK_INT_EQ(open_chip(NULL, "gpiochip1", &c), -ENOTTY);
    (void)snprintf(expect, sizeof(expect), "%s/gpiochip1: not a GPIO chip", root);
    CHECK_STR_EQ(err, expect);
    wisp_test_write(root, "gpiochip2", "label=x\nlines=0\n");
    CHECK_INT_EQ(open_chip(NULL, "gpiochip2", &c), -ENOTTY);
    wisp_test_mkdir(root, "gpiochip3");
    CHECK_INT_EQ(open_chip(NULL, "gpiochip3", &c), -ENOTTY);
    (void)snprintf(expect, sizeof(expect), "%s/gpiochip3: not a GPIO chip", root);
    CHECK_STR_EQ(err, expect);
    /* A settings "device" names the file. */
    write_chip0();
    CHECK_INT_EQ(open_chip("{\"port\":\"linux\",\"device\":\"gpiochip0\"}", "buttons", &c), 0);
    if (c) {
        CHECK_STR_EQ(wisp_gpio_chip_name(c), "buttons");
        struct wisp_gpio_chip_info ci;
        CHECK_INT_EQ(wisp_gpio_chip_info(c, &ci, err, sizeof(err)), 0);
        CHECK_STR_EQ(ci.name, "gpiochip0");
        wisp_gpio_chip_close(c);
    }
    CHECK_INT_EQ(open_chip("{\"device\":\"gpiochip7\"}", "buttons", &c), -ENOENT);
    (void)snprintf(expect, sizeof(expect), "%s/gpiochip7: No such file or directory", root);
    CHECK_STR_EQ(err, expect);
    wisp_test_rmtree(root);
}

static void test_line_range(void)
{
    if (!setup("gpio-range"))
        return;
    write_chip0();
    struct wisp_gpio_chip *c = NULL;
    CHECK_INT_EQ(open_chip(NULL, "gpiochip0", &c), 0);
    if (!c)
        goto out;
    const char *want = "gpiochip0: line 32 does not exist (the chip has 32 lines)";
    struct wisp_gpio_watch *w = NULL;
    struct wisp_gpio_line_info li;
    int v = 0;
    CHECK_INT_EQ(wisp_gpio_watch(c, 32, WISP_GPIO_EDGE_BOTH, 0, NULL, &w, err, sizeof(err)),
                 -EINVAL);
    CHECK_STR_EQ(err, want);
    CHECK(w == NULL);
    CHECK_INT_EQ(wisp_gpio_line_info(c, 32, &li, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, want);
    CHECK_INT_EQ(wisp_gpio_set(c, 32, 1, NULL, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, want);
    CHECK_INT_EQ(wisp_gpio_get(c, 32, &v, err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, want);
    CHECK_INT_EQ(wisp_gpio_watch(c, UINT32_MAX, WISP_GPIO_EDGE_BOTH, 0, NULL, &w, err, sizeof(err)),
                 -EINVAL);
    CHECK_STR_EQ(err, "gpiochip0: line 4294967295 does not exist (the chip has 32 lines)");
    CHECK_INT_EQ(wisp_gpio_watch(c, 31, (enum wisp_gpio_edge)0, 0, NULL, &w, err, sizeof(err)),
                 -EINVAL);
    CHECK_STR_EQ(err, "gpiochip0: line 31: unknown edge kind 0");
    /* The last line works. */
    CHECK_INT_EQ(wisp_gpio_watch(c, 31, WISP_GPIO_EDGE_BOTH, 0, NULL, &w, err, sizeof(err)), 0);
    wisp_gpio_unwatch(w);
out:
    wisp_gpio_chip_close(c);
    wisp_test_rmtree(root);
}

static void test_config(void)
{
    if (!setup("gpio-config"))
        return;
    open_fails(NULL, "buttons",
               "buttons: not a GPIO chip device name (like \"gpiochip0\"); other chips need "
               "settings with a \"port\"");
    open_fails(NULL, "gpiochip",
               "gpiochip: not a GPIO chip device name (like \"gpiochip0\"); "
               "other chips need settings with a \"port\"");
    open_fails(NULL, "gpiochip0x",
               "gpiochip0x: not a GPIO chip device name (like \"gpiochip0\"); "
               "other chips need settings with a \"port\"");
    open_fails(NULL, "", "gpio: chip name must not be empty");
    open_fails("{\"port\":\"sim\"}", "a/b",
               "gpio: chip name \"a/b\" must be 1 to 31 letters, digits, '_', '-' or '.' (not "
               "starting with '.' or '-')");
    open_fails("{\"port\":\"sim\"}", "..",
               "gpio: chip name \"..\" must be 1 to 31 letters, digits, '_', '-' or '.' (not "
               "starting with '.' or '-')");
    open_fails("[]", "sim0", "sim0: settings must be an object");
    open_fails("{\"port\":5}", "sim0", "sim0.port: must be a string");
    open_fails("{\"port\":\"spi\"}", "sim0", "sim0.port: unknown port \"spi\" (known: linux, sim)");
    open_fails("{\"port\":\"sim\",\"bogus\":1}", "sim0",
               "sim0.bogus: unknown key (allowed: port, lines, label, edges)");
    open_fails("{\"port\":\"linux\",\"lines\":4}", "gpiochip0",
               "gpiochip0.lines: unknown key (allowed: port, device)");
    open_fails("{\"port\":\"linux\",\"device\":\"../etc\"}", "c",
               "c.device: \"../etc\" is not a device name (like \"gpiochip0\")");
    open_fails("{\"port\":\"linux\",\"device\":7}", "c", "c.device: must be a string");
    const char *lines_msg = "sim0.lines: must be a whole number from 1 to 512";
    open_fails("{\"port\":\"sim\",\"lines\":0}", "sim0", lines_msg);
    open_fails("{\"port\":\"sim\",\"lines\":513}", "sim0", lines_msg);
    open_fails("{\"port\":\"sim\",\"lines\":1.5}", "sim0", lines_msg);
    open_fails("{\"port\":\"sim\",\"lines\":-1}", "sim0", lines_msg);
    open_fails("{\"port\":\"sim\",\"lines\":\"32\"}", "sim0", lines_msg);
    open_fails("{\"port\":\"sim\",\"label\":5}", "sim0",
               "sim0.label: must be a string of at most 31 bytes");
    open_fails("{\"port\":\"sim\",\"label\":\"0123456789012345678901234567890123\"}", "sim0",
               "sim0.label: must be a string of at most 31 bytes");
    open_fails("{\"port\":\"sim\",\"edges\":{}}", "sim0",
               "sim0.edges: must be an array like [{\"line\": 17, \"every\": \"2s\"}]");
    open_fails("{\"port\":\"sim\",\"edges\":[3]}", "sim0",
               "sim0.edges[0]: must be an object like {\"line\": 17, \"every\": \"2s\"}");
    open_fails("{\"port\":\"sim\",\"edges\":[{\"every\":\"1s\"}]}", "sim0",
               "sim0.edges[0].line: required");
    open_fails("{\"port\":\"sim\",\"edges\":[{\"line\":1}]}", "sim0",
               "sim0.edges[0].every: required");
    open_fails("{\"port\":\"sim\",\"edges\":[{\"line\":1,\"every\":\"1s\",\"x\":1}]}", "sim0",
               "sim0.edges[0].x: unknown key (allowed: line, every)");
    open_fails("{\"port\":\"sim\",\"lines\":8,\"edges\":[{\"line\":8,\"every\":\"1s\"}]}", "sim0",
               "sim0.edges[0].line: line 8 does not exist (the chip has 8 lines)");
    open_fails("{\"port\":\"sim\",\"edges\":[{\"line\":-1,\"every\":\"1s\"}]}", "sim0",
               "sim0.edges[0].line: must be a whole number from 0 to 31");
    open_fails("{\"port\":\"sim\",\"edges\":[{\"line\":1,\"every\":1}]}", "sim0",
               "sim0.edges[0].every: must be a duration string like \"2s\"");
    open_fails("{\"port\":\"sim\",\"edges\":[{\"line\":1,\"every\":\"1s\"},"
               "{\"line\":1,\"every\":\"2s\"}]}",
               "sim0", "sim0.edges[1].line: line 1 already has edges");
    struct wisp_gpio_chip *c = NULL;
    CHECK_INT_EQ(
        open_chip("{\"port\":\"sim\",\"edges\":[{\"line\":1,\"every\":\"2x\"}]}", "sim0", &c),
        -EINVAL);
    CHECK(strncmp(err, "sim0.edges[0].every: ", 21) == 0);
    CHECK_CONTAINS(err, "\"2x\"");
    /* A port given by settings defaults the rest. */
    CHECK_INT_EQ(open_chip("{\"port\":\"sim\"}", "sim0", &c), 0);
    if (c) {
        struct wisp_gpio_chip_info ci;
        CHECK_INT_EQ(wisp_gpio_chip_info(c, &ci, err, sizeof(err)), 0);
        CHECK_STR_EQ(ci.name, "sim0");
        CHECK_STR_EQ(ci.label, "wisp-sim");
        CHECK_INT_EQ(ci.lines, 32);
        wisp_gpio_chip_close(c);
    }
    wisp_test_rmtree(root);
}

/* Collects at least want events of w within ms, polling its fd. */
static size_t collect(struct wisp_gpio_watch *w, struct wisp_gpio_event *ev, size_t cap,
                      size_t want, int ms)
{
    size_t n = 0;
    uint64_t deadline = wisp_mono_ns() + (uint64_t)ms * MS;
    while (n < want && wisp_mono_ns() < deadline) {
        if (!readable(wisp_gpio_watch_fd(w), 50))
            continue;
        int r = wisp_gpio_watch_read(w, ev + n, cap - n, err, sizeof(err));
        CHECK(r >= 0);
        if (r < 0)
            break;
        n += (size_t)r;
    }
    return n;
}

static void test_sim_edges(void)
{
    struct wisp_gpio_chip *c = NULL;
    struct wisp_gpio_watch *w = NULL, *quiet = NULL, *w2 = NULL;
    CHECK_INT_EQ(open_chip("{\"port\":\"sim\",\"lines\":8,\"label\":\"bench\","
                           "\"edges\":[{\"line\":3,\"every\":\"20ms\"},"
                           "{\"line\":5,\"every\":\"20ms\"}]}",
                           "sim0", &c),
                 0);
    if (!c)
        return;
    struct wisp_gpio_chip_info ci;
    CHECK_INT_EQ(wisp_gpio_chip_info(c, &ci, err, sizeof(err)), 0);
    CHECK_STR_EQ(ci.label, "bench");
    CHECK_INT_EQ(ci.lines, 8);

    uint64_t start = wisp_mono_ns();
    CHECK_INT_EQ(wisp_gpio_watch(c, 3, WISP_GPIO_EDGE_BOTH, 0, "s", &w, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_watch(c, 4, WISP_GPIO_EDGE_BOTH, 0, "q", &quiet, err, sizeof(err)), 0);
    if (!w || !quiet)
        goto out;
    int fd = wisp_gpio_watch_fd(w);
    CHECK(fd >= 0);
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    struct wisp_gpio_event ev[16];
    size_t n = collect(w, ev, 16, 4, 3000);
    CHECK(n >= 4);
    for (size_t i = 0; i < n; i++) {
        CHECK_INT_EQ(ev[i].edge, i % 2 ? WISP_GPIO_EDGE_FALLING : WISP_GPIO_EDGE_RISING);
        CHECK_INT_EQ(ev[i].line, 3);
        CHECK_INT_EQ(ev[i].seqno, i + 1);
        CHECK(ev[i].timestamp_ns >= start + 20 * MS * (i + 1));
        CHECK(ev[i].timestamp_ns <= wisp_mono_ns());
        if (i)
            CHECK(ev[i].timestamp_ns - ev[i - 1].timestamp_ns == 20 * MS);
    }
    /* The line's level follows its edges. */
    int v = -1;
    CHECK_INT_EQ(wisp_gpio_get(c, 3, &v, err, sizeof(err)), 0);
    if (n > 0)
        CHECK_INT_EQ(v, ev[n - 1].edge == WISP_GPIO_EDGE_RISING ? 1 : 0);
    /* A line without edges never fires. */
    CHECK(!readable(wisp_gpio_watch_fd(quiet), 60));
    CHECK_INT_EQ(wisp_gpio_watch_read(quiet, ev, 16, err, sizeof(err)), 0);
    /* Rising only: every other edge, 40 ms apart. */
    CHECK_INT_EQ(wisp_gpio_watch(c, 5, WISP_GPIO_EDGE_RISING, 0, "r", &w2, err, sizeof(err)), 0);
    if (w2) {
        n = collect(w2, ev, 16, 3, 3000);
        CHECK(n >= 3);
        for (size_t i = 0; i < n; i++) {
            CHECK_INT_EQ(ev[i].edge, WISP_GPIO_EDGE_RISING);
            CHECK_INT_EQ(ev[i].seqno, i + 1);
            if (i)
                CHECK(ev[i].timestamp_ns - ev[i - 1].timestamp_ns == 40 * MS);
        }
    }
    /* Busy, like a real chip. */
    struct wisp_gpio_watch *again = NULL;
    CHECK_INT_EQ(wisp_gpio_watch(c, 3, WISP_GPIO_EDGE_BOTH, 0, "t", &again, err, sizeof(err)),
                 -EBUSY);
    CHECK_STR_EQ(err, "sim0: line 3 is busy (held by \"s\")");
    struct wisp_gpio_line_info li;
    CHECK_INT_EQ(wisp_gpio_line_info(c, 3, &li, err, sizeof(err)), 0);
    CHECK(li.used && !li.output);
    CHECK_STR_EQ(li.consumer, "s");
    /* A software debounce longer than the period drops every other edge. */
    wisp_gpio_unwatch(w);
    w = NULL;
    CHECK_INT_EQ(wisp_gpio_watch(c, 3, WISP_GPIO_EDGE_BOTH, 30, "s", &w, err, sizeof(err)), 0);
    if (w) {
        n = collect(w, ev, 16, 3, 3000);
        CHECK(n >= 3);
        for (size_t i = 1; i < n; i++)
            CHECK(ev[i].timestamp_ns - ev[i - 1].timestamp_ns == 40 * MS);
        CHECK(wisp_gpio_watch_dropped(w) >= 2);
    }
out:
    wisp_gpio_unwatch(w);
    wisp_gpio_unwatch(w2);
    wisp_gpio_unwatch(quiet);
    wisp_gpio_chip_close(c);
}

static void test_sim_outputs(void)
{
    struct wisp_gpio_chip *c = NULL;
    CHECK_INT_EQ(open_chip("{\"port\":\"sim\",\"lines\":4}", "relays", &c), 0);
    if (!c)
        return;
    int v = -1;
    CHECK_INT_EQ(wisp_gpio_get(c, 2, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 0);
    CHECK_INT_EQ(wisp_gpio_set(c, 2, 1, "pump", err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_get(c, 2, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 1);
    struct wisp_gpio_line_info li;
    CHECK_INT_EQ(wisp_gpio_line_info(c, 2, &li, err, sizeof(err)), 0);
    CHECK(li.used && li.output);
    CHECK_STR_EQ(li.consumer, "pump");
    CHECK_INT_EQ(wisp_gpio_set(c, 2, 0, "pump", err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_get(c, 2, &v, err, sizeof(err)), 0);
    CHECK_INT_EQ(v, 0);
    CHECK_INT_EQ(wisp_gpio_set(c, 4, 0, "pump", err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "relays: line 4 does not exist (the chip has 4 lines)");
    CHECK_INT_EQ(wisp_gpio_set(c, 1, -1, "pump", err, sizeof(err)), -EINVAL);
    CHECK_STR_EQ(err, "relays: line 1: value must be 0 or 1, got -1");
    /* An output cannot be watched. */
    struct wisp_gpio_watch *w = NULL;
    CHECK_INT_EQ(wisp_gpio_watch(c, 2, WISP_GPIO_EDGE_BOTH, 0, "x", &w, err, sizeof(err)), -EBUSY);
    CHECK_STR_EQ(err, "relays: line 2 is busy (held by \"pump\")");
    /* Nor a watched line driven. */
    CHECK_INT_EQ(wisp_gpio_watch(c, 3, WISP_GPIO_EDGE_BOTH, 0, "x", &w, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_set(c, 3, 1, "pump", err, sizeof(err)), -EBUSY);
    CHECK_STR_EQ(err, "relays: line 3 is busy (held by \"x\")");
    wisp_gpio_unwatch(w);
    wisp_gpio_chip_close(c);
}

static void test_close_before_unwatch(void)
{
    struct wisp_gpio_chip *c = NULL;
    CHECK_INT_EQ(
        open_chip("{\"port\":\"sim\",\"edges\":[{\"line\":0,\"every\":\"10ms\"}]}", "sim0", &c), 0);
    if (!c)
        return;
    struct wisp_gpio_watch *w = NULL, *w2 = NULL;
    CHECK_INT_EQ(wisp_gpio_watch(c, 0, WISP_GPIO_EDGE_BOTH, 0, NULL, &w, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_watch(c, 1, WISP_GPIO_EDGE_BOTH, 0, NULL, &w2, err, sizeof(err)), 0);
    CHECK_INT_EQ(wisp_gpio_set(c, 2, 1, NULL, err, sizeof(err)), 0);
    wisp_gpio_unwatch(w2);
    wisp_gpio_chip_close(c);
    if (!w)
        return;
    CHECK_INT_EQ(wisp_gpio_watch_fd(w), -1);
    struct wisp_gpio_event ev[4];
    CHECK_INT_EQ(wisp_gpio_watch_read(w, ev, 4, err, sizeof(err)), -ENODEV);
    CHECK_STR_EQ(err, "gpio: line 0: the chip was closed");
    wisp_gpio_unwatch(w);
    wisp_gpio_unwatch(NULL);
    wisp_gpio_chip_close(NULL);
}

int main(int argc, char **argv)
{
    static const struct wisp_check_test tests[] = {
        {"edge_names", test_edge_names},
        {"registry", test_registry},
        {"chip_info", test_chip_info},
        {"watch_events", test_watch_events},
        {"edge_filter", test_edge_filter},
        {"debounce", test_debounce},
        {"garbled", test_garbled},
        {"outputs", test_outputs},
        {"busy", test_busy},
        {"missing_chip", test_missing_chip},
        {"line_range", test_line_range},
        {"config", test_config},
        {"sim_edges", test_sim_edges},
        {"sim_outputs", test_sim_outputs},
        {"close_before_unwatch", test_close_before_unwatch},
    };
    return WISP_CHECK_RUN(argc, argv, tests);
}
