/* The "linux" GPIO port: <dev_root>/gpiochipN through the GPIO character
 * device, uAPI v2. One line per request: inputs with edge detection (and the
 * kernel's debounce when it has one for the chip), outputs with an initial
 * value. Event fds are non-blocking and close-on-exec; the event records are
 * struct gpio_v2_line_event as the kernel writes them. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/gpio.h>

#include <cjson/cJSON.h>

#include "gpio.h"
#include "util.h"

/* Events read per read(2): enough for a burst without a large stack. */
#define READ_BATCH 16

struct lgpio;

struct lreq {
    struct lgpio *chip;
    struct lreq *prev, *next;
    uint32_t line;
    int fd;
};

struct lgpio {
    char path[PATH_MAX];
    char name[32];
    int fd;
    struct lreq *reqs; /* open requests, so get reads a held line through its request */
};

static const char *const linux_keys[] = {"device", NULL};

static const char *dev_root(const struct wisp_port_env *env)
{
    return env && env->dev_root ? env->dev_root : "/dev";
}

/* The kernel answers a GPIO ioctl on something that is not a chip with
 * ENOTTY; qemu-user answers ioctls it cannot translate with ENOSYS. */
static bool not_a_chip(int e)
{
    return e == ENOTTY || e == ENOSYS;
}

static int errno_msg(char *err, size_t errlen, const char *path, int e)
{
    if (not_a_chip(e))
        return wisp_errf(err, errlen, -ENOTTY, "%s: not a GPIO chip", path);
    return wisp_errf(err, errlen, -e, "%s: %s", path, strerror(e));
}

static int linux_open(const cJSON *cfg, const char *chip, const struct wisp_port_env *env,
                      void **state, char *err, size_t errlen)
{
    const char *device = chip;
    if (cfg) {
        int rc = wisp_gpio_check_keys(cfg, chip, linux_keys, err, errlen);
        if (rc)
            return rc;
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(cfg, "device");
        if (d) {
            if (!cJSON_IsString(d) || !d->valuestring)
                return wisp_errf(err, errlen, -EINVAL, "%s.device: must be a string", chip);
            device = d->valuestring;
            if (!*device || strchr(device, '/') || strcmp(device, ".") == 0 ||
                strcmp(device, "..") == 0 || strlen(device) > 255)
                return wisp_errf(err, errlen, -EINVAL,
                                 "%s.device: \"%.40s\" is not a device name (like \"gpiochip0\")",
                                 chip, device);
        }
    }
    struct lgpio *s = calloc(1, sizeof(*s));
    if (!s)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", chip);
    int n = snprintf(s->path, sizeof(s->path), "%s/%s", dev_root(env), device);
    if (n < 0 || (size_t)n >= sizeof(s->path)) {
        free(s);
        return wisp_errf(err, errlen, -ENAMETOOLONG, "%s: device path too long", chip);
    }
    (void)snprintf(s->name, sizeof(s->name), "%s", chip);
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (s->fd < 0) {
        int e = errno;
        int rc = wisp_errf(err, errlen, -e, "%s: %s", s->path, strerror(e));
        free(s);
        return rc;
    }
    /* A chip that does not answer chip info is no chip. */
    struct gpiochip_info info;
    memset(&info, 0, sizeof(info));
    if (ioctl(s->fd, GPIO_GET_CHIPINFO_IOCTL, &info) != 0) {
        int e = errno;
        int rc = errno_msg(err, errlen, s->path, e);
        (void)close(s->fd);
        free(s);
        return rc;
    }
    *state = s;
    return 0;
}

static void copy_name(char *dst, size_t cap, const char *src, size_t srclen)
{
    size_t n = strnlen(src, srclen);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int linux_info(void *state, struct wisp_gpio_chip_info *out, char *err, size_t errlen)
{
    const struct lgpio *s = state;
    struct gpiochip_info info;
    memset(&info, 0, sizeof(info));
    if (ioctl(s->fd, GPIO_GET_CHIPINFO_IOCTL, &info) != 0)
        return errno_msg(err, errlen, s->path, errno);
    copy_name(out->name, sizeof(out->name), info.name, sizeof(info.name));
    copy_name(out->label, sizeof(out->label), info.label, sizeof(info.label));
    out->lines = info.lines;
    return 0;
}

static int get_line_info(const struct lgpio *s, uint32_t line, struct gpio_v2_line_info *li,
                         char *err, size_t errlen)
{
    memset(li, 0, sizeof(*li));
    li->offset = line;
    if (ioctl(s->fd, GPIO_V2_GET_LINEINFO_IOCTL, li) != 0) {
        int e = errno;
        return wisp_errf(err, errlen, -e, "%s: line %u: %s", s->path, line,
                         not_a_chip(e) ? "not a GPIO chip" : strerror(e));
    }
    return 0;
}

static int linux_line_info(void *state, uint32_t line, struct wisp_gpio_line_info *out, char *err,
                           size_t errlen)
{
    const struct lgpio *s = state;
    struct gpio_v2_line_info li;
    int rc = get_line_info(s, line, &li, err, errlen);
    if (rc)
        return rc;
    out->line = line;
    copy_name(out->name, sizeof(out->name), li.name, sizeof(li.name));
    copy_name(out->consumer, sizeof(out->consumer), li.consumer, sizeof(li.consumer));
    out->used = (li.flags & GPIO_V2_LINE_FLAG_USED) != 0;
    out->output = (li.flags & GPIO_V2_LINE_FLAG_OUTPUT) != 0;
    out->active_low = (li.flags & GPIO_V2_LINE_FLAG_ACTIVE_LOW) != 0;
    return 0;
}

/* The message for a failed line request: who holds a busy line. */
static int request_error(const struct lgpio *s, uint32_t line, int e, char *err, size_t errlen)
{
    if (e == EBUSY) {
        struct gpio_v2_line_info li;
        char consumer[GPIO_MAX_NAME_SIZE];
        consumer[0] = '\0';
        if (get_line_info(s, line, &li, NULL, 0) == 0)
            copy_name(consumer, sizeof(consumer), li.consumer, sizeof(li.consumer));
        if (consumer[0])
            return wisp_errf(err, errlen, -EBUSY, "%s: line %u is busy (held by \"%s\")", s->path,
                             line, consumer);
        return wisp_errf(err, errlen, -EBUSY, "%s: line %u is busy (held by an unnamed consumer)",
                         s->path, line);
    }
    if (not_a_chip(e))
        return wisp_errf(err, errlen, -ENOTTY, "%s: not a GPIO chip", s->path);
    return wisp_errf(err, errlen, -e, "%s: line %u: request failed: %s", s->path, line,
                     strerror(e));
}

/* Requests one line; the request's fd, or a negative errno (err filled). */
static int request_line(const struct lgpio *s, uint32_t line, uint64_t flags, uint32_t debounce_us,
                        int initial, const char *consumer, char *err, size_t errlen)
{
    struct gpio_v2_line_request req;
    memset(&req, 0, sizeof(req));
    req.offsets[0] = line;
    req.num_lines = 1;
    copy_name(req.consumer, sizeof(req.consumer), consumer, strlen(consumer) + 1);
    req.config.flags = flags;
    if (flags & GPIO_V2_LINE_FLAG_OUTPUT) {
        struct gpio_v2_line_config_attribute *a = &req.config.attrs[req.config.num_attrs++];
        a->attr.id = GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES;
        a->attr.values = initial ? 1u : 0u;
        a->mask = 1;
    }
    if (debounce_us) {
        struct gpio_v2_line_config_attribute *a = &req.config.attrs[req.config.num_attrs++];
        a->attr.id = GPIO_V2_LINE_ATTR_ID_DEBOUNCE;
        a->attr.debounce_period_us = debounce_us;
        a->mask = 1;
    }
    int rc = ioctl(s->fd, GPIO_V2_GET_LINE_IOCTL, &req);
    if (rc != 0 && errno == EINVAL && debounce_us) {
        /* Not every chip debounces in hardware or the kernel; the generic
         * layer's software debounce still applies. */
        req.config.num_attrs--;
        memset(&req.config.attrs[req.config.num_attrs], 0, sizeof(req.config.attrs[0]));
        rc = ioctl(s->fd, GPIO_V2_GET_LINE_IOCTL, &req);
    }
    if (rc != 0)
        return request_error(s, line, errno, err, errlen);
    int fd = req.fd;
    if (fd < 0)
        return wisp_errf(err, errlen, -EIO, "%s: line %u: the kernel returned no request fd",
                         s->path, line);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        int e = errno;
        (void)close(fd);
        return wisp_errf(err, errlen, -e, "%s: line %u: %s", s->path, line, strerror(e));
    }
    return fd;
}

static struct lreq *add_req(struct lgpio *s, uint32_t line, int fd, const char *chip, char *err,
                            size_t errlen)
{
    struct lreq *r = calloc(1, sizeof(*r));
    if (!r) {
        (void)close(fd);
        (void)wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", chip);
        return NULL;
    }
    r->chip = s;
    r->line = line;
    r->fd = fd;
    r->next = s->reqs;
    if (s->reqs)
        s->reqs->prev = r;
    s->reqs = r;
    return r;
}

static void drop_req(struct lreq *r)
{
    if (!r)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        r->chip->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    (void)close(r->fd);
    free(r);
}

static int linux_watch(void *state, uint32_t line, enum wisp_gpio_edge edge, uint32_t debounce_ms,
                       const char *consumer, void **req, int *fd, char *err, size_t errlen)
{
    struct lgpio *s = state;
    uint64_t flags = GPIO_V2_LINE_FLAG_INPUT;
    if (edge & WISP_GPIO_EDGE_RISING)
        flags |= GPIO_V2_LINE_FLAG_EDGE_RISING;
    if (edge & WISP_GPIO_EDGE_FALLING)
        flags |= GPIO_V2_LINE_FLAG_EDGE_FALLING;
    int rfd = request_line(s, line, flags, debounce_ms * 1000u, 0, wisp_gpio_consumer(consumer),
                           err, errlen);
    if (rfd < 0)
        return rfd;
    struct lreq *r = add_req(s, line, rfd, s->name, err, errlen);
    if (!r)
        return -ENOMEM;
    *req = r;
    *fd = rfd;
    return 0;
}

static int linux_read_events(void *req, struct wisp_gpio_event *out, size_t max, char *err,
                             size_t errlen)
{
    const struct lreq *r = req;
    struct gpio_v2_line_event ev[READ_BATCH];
    if (max == 0)
        return 0;
    size_t want = max < READ_BATCH ? max : READ_BATCH;
    ssize_t got;
    do
        got = read(r->fd, ev, want * sizeof(ev[0]));
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK)
            return 0;
        return wisp_errf(err, errlen, -e, "%s: line %u: reading events: %s", r->chip->path, r->line,
                         strerror(e));
    }
    if ((size_t)got % sizeof(ev[0]) != 0)
        return wisp_errf(err, errlen, -EIO,
                         "%s: line %u: short event read (%zd bytes, not a multiple of %zu)",
                         r->chip->path, r->line, got, sizeof(ev[0]));
    size_t n = (size_t)got / sizeof(ev[0]);
    for (size_t i = 0; i < n; i++) {
        if (ev[i].id != GPIO_V2_LINE_EVENT_RISING_EDGE &&
            ev[i].id != GPIO_V2_LINE_EVENT_FALLING_EDGE)
            return wisp_errf(err, errlen, -EIO, "%s: line %u: garbled event (unknown kind %u)",
                             r->chip->path, r->line, ev[i].id);
        if (ev[i].offset != r->line)
            return wisp_errf(err, errlen, -EIO, "%s: line %u: garbled event (for line %u)",
                             r->chip->path, r->line, ev[i].offset);
        out[i].edge = ev[i].id == GPIO_V2_LINE_EVENT_RISING_EDGE ? WISP_GPIO_EDGE_RISING
                                                                 : WISP_GPIO_EDGE_FALLING;
        out[i].timestamp_ns = ev[i].timestamp_ns;
        out[i].line = ev[i].offset;
        out[i].seqno = ev[i].line_seqno;
    }
    return (int)n;
}

static void linux_unwatch(void *req)
{
    drop_req(req);
}

static int linux_output(void *state, uint32_t line, int initial, const char *consumer, void **req,
                        char *err, size_t errlen)
{
    struct lgpio *s = state;
    int rfd = request_line(s, line, GPIO_V2_LINE_FLAG_OUTPUT, 0, initial,
                           wisp_gpio_consumer(consumer), err, errlen);
    if (rfd < 0)
        return rfd;
    struct lreq *r = add_req(s, line, rfd, s->name, err, errlen);
    if (!r)
        return -ENOMEM;
    *req = r;
    return 0;
}

static int linux_set(void *req, int value, char *err, size_t errlen)
{
    const struct lreq *r = req;
    struct gpio_v2_line_values v;
    memset(&v, 0, sizeof(v));
    v.bits = value ? 1u : 0u;
    v.mask = 1;
    if (ioctl(r->fd, GPIO_V2_LINE_SET_VALUES_IOCTL, &v) != 0) {
        int e = errno;
        return wisp_errf(err, errlen, -e, "%s: line %u: setting the value: %s", r->chip->path,
                         r->line, strerror(e));
    }
    return 0;
}

static void linux_release(void *req)
{
    drop_req(req);
}

static int read_value(const struct lgpio *s, uint32_t line, int fd, int *value, char *err,
                      size_t errlen)
{
    struct gpio_v2_line_values v;
    memset(&v, 0, sizeof(v));
    v.mask = 1;
    if (ioctl(fd, GPIO_V2_LINE_GET_VALUES_IOCTL, &v) != 0) {
        int e = errno;
        return wisp_errf(err, errlen, -e, "%s: line %u: reading the value: %s", s->path, line,
                         strerror(e));
    }
    *value = (v.bits & 1u) ? 1 : 0;
    return 0;
}

static int linux_get(void *state, uint32_t line, int *value, char *err, size_t errlen)
{
    const struct lgpio *s = state;
    for (const struct lreq *r = s->reqs; r; r = r->next)
        if (r->line == line)
            return read_value(s, line, r->fd, value, err, errlen);
    int fd = request_line(s, line, GPIO_V2_LINE_FLAG_INPUT, 0, 0, "wisp", err, errlen);
    if (fd < 0)
        return fd;
    int rc = read_value(s, line, fd, value, err, errlen);
    (void)close(fd);
    return rc;
}

static void linux_close(void *state)
{
    struct lgpio *s = state;
    if (!s)
        return;
    /* Requests the caller did not release; normally none. */
    for (struct lreq *r = s->reqs, *next = NULL; r; r = next) {
        next = r->next;
        (void)close(r->fd);
        free(r);
    }
    (void)close(s->fd);
    free(s);
}

const struct wisp_gpio_ops wisp_gpio_port_linux = {
    .name = "linux",
    .open = linux_open,
    .info = linux_info,
    .line_info = linux_line_info,
    .watch = linux_watch,
    .read_events = linux_read_events,
    .unwatch = linux_unwatch,
    .output = linux_output,
    .set = linux_set,
    .release = linux_release,
    .get = linux_get,
    .close = linux_close,
};
