/*
 * A fake GPIO chip below the linux GPIO port: it replaces ioctl(2), so the
 * port's real code runs against files instead of a kernel. Linked into unit
 * tests, or LD_PRELOADed as libwisp_gpio_fake.so.
 *
 * A chip is a regular file <dev_root>/gpiochipN holding
 *     label=<label>\n lines=<n>\n [name<k>=<line name>\n ...]
 * (and optionally "debounce=unsupported": line requests with a debounce
 * attribute then fail with EINVAL, like a chip without debounce). GPIO
 * ioctls on a regular file are answered from it; on anything else (a real
 * character device) they go to the kernel.
 *
 * Line requests (one line each) leave files next to the chip:
 *   <chip>.line<k>.request  what was asked, e.g.
 *                           "input edges=both debounce_us=20000 consumer=wisp"
 *                           or "output value=1 consumer=wisp"
 *   <chip>.line<k>.events   a FIFO for an input with edges; the request's fd
 *                           reads it, so writing raw struct gpio_v2_line_event
 *                           records into it injects edges
 *   <chip>.line<k>.value    "0\n"/"1\n": written by outputs (initial value,
 *                           then SET_VALUES), read by GET_VALUES (missing: 0)
 * A line is held while its request fd is open (this process only); a second
 * request then fails with EBUSY and line info shows the consumer.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/gpio.h>

#define FAKE_HELD_MAX  256
#define FAKE_LINES_MAX 65535u
#define CHIP_FILE_MAX  ((size_t)64 * 1024)
#define GPIO_IOC_MAGIC 0xB4

struct held {
    dev_t dev; /* the fd's file, to tell a closed and reused fd number */
    ino_t ino;
    dev_t chip_dev;
    ino_t chip_ino;
    uint64_t flags;
    int fd;
    int accmode;
    uint32_t line;
    bool used;
    char consumer[GPIO_MAX_NAME_SIZE];
    char value_path[PATH_MAX];
};

struct chip {
    char path[PATH_MAX];
    dev_t dev;
    ino_t ino;
    char name[GPIO_MAX_NAME_SIZE];
    char label[GPIO_MAX_NAME_SIZE];
    uint32_t lines;
    bool no_debounce;
    char text[CHIP_FILE_MAX + 1];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct held held[FAKE_HELD_MAX];
static struct chip chip_buf; /* guarded by lock; too large for the stack */

typedef int (*ioctl_fn)(int, unsigned long, ...);
static ioctl_fn real_ioctl;
static pthread_once_t real_once = PTHREAD_ONCE_INIT;

static void find_real(void)
{
    real_ioctl = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
}

/* Whether entry h still describes an open request fd. Caller holds lock. */
static bool held_live(struct held *h)
{
    if (!h->used)
        return false;
    struct stat st;
    int fl = fcntl(h->fd, F_GETFL);
    if (fcntl(h->fd, F_GETFD) == -1 || fl == -1 || fstat(h->fd, &st) != 0 || st.st_dev != h->dev ||
        st.st_ino != h->ino || (fl & O_ACCMODE) != h->accmode) {
        h->used = false;
        return false;
    }
    return true;
}

static struct held *held_by_fd(int fd)
{
    for (size_t i = 0; i < FAKE_HELD_MAX; i++)
        if (held[i].used && held[i].fd == fd && held_live(&held[i]))
            return &held[i];
    return NULL;
}

static struct held *held_by_line(const struct chip *c, uint32_t line)
{
    for (size_t i = 0; i < FAKE_HELD_MAX; i++)
        if (held[i].used && held[i].chip_dev == c->dev && held[i].chip_ino == c->ino &&
            held[i].line == line && held_live(&held[i]))
            return &held[i];
    return NULL;
}

static struct held *held_free_slot(int fd)
{
    struct held *slot = NULL;
    for (size_t i = 0; i < FAKE_HELD_MAX; i++) {
        /* An fd number the kernel handed out again replaces its old entry. */
        if (held[i].used && held[i].fd == fd)
            held[i].used = false;
        if (!slot && !held_live(&held[i]))
            slot = &held[i];
    }
    return slot;
}

static bool parse_u32(const char *s, size_t len, uint32_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 10)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static void copy_field(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* The value of key in the chip text ("key=value" lines): its start and
 * length, or NULL. */
static const char *chip_value(const struct chip *c, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    for (const char *p = c->text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t llen = nl ? (size_t)(nl - p) : strlen(p);
        if (llen > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            *len = llen - klen - 1;
            return p + klen + 1;
        }
        p += llen + (nl ? 1 : 0);
    }
    return NULL;
}

/* Loads the chip behind fd (a regular file) into chip_buf: 0 or an errno.
 * Caller holds lock. */
static int load_chip(int fd, struct chip *c)
{
    struct stat st;
    char link[64];
    if (fstat(fd, &st) != 0)
        return errno;
    (void)snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, c->path, sizeof(c->path) - 1);
    if (n < 0)
        return errno;
    c->path[n] = '\0';
    if (n > 10 && strcmp(c->path + n - 10, " (deleted)") == 0)
        return ENODEV;
    c->dev = st.st_dev;
    c->ino = st.st_ino;
    size_t used = 0;
    for (;;) {
        ssize_t r = pread(fd, c->text + used, CHIP_FILE_MAX - used, (off_t)used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            break;
        used += (size_t)r;
        if (used == CHIP_FILE_MAX)
            return ENOTTY;
    }
    c->text[used] = '\0';
    if (memchr(c->text, '\0', used))
        return ENOTTY;
    const char *base = strrchr(c->path, '/');
    base = base ? base + 1 : c->path;
    copy_field(c->name, sizeof(c->name), base, strlen(base));
    size_t len = 0;
    const char *v = chip_value(c, "lines", &len);
    if (!v || !parse_u32(v, len, &c->lines) || c->lines == 0 || c->lines > FAKE_LINES_MAX)
        return ENOTTY; /* not a chip file */
    v = chip_value(c, "label", &len);
    copy_field(c->label, sizeof(c->label), v ? v : "", v ? len : 0);
    v = chip_value(c, "debounce", &len);
    c->no_debounce = v && len == 11 && strncmp(v, "unsupported", 11) == 0;
    return 0;
}

static int line_path(char *out, size_t cap, const struct chip *c, uint32_t line, const char *what)
{
    int n = snprintf(out, cap, "%s.line%u.%s", c->path, line, what);
    return n < 0 || (size_t)n >= cap ? ENAMETOOLONG : 0;
}

static int chip_info(const struct chip *c, struct gpiochip_info *info)
{
    memset(info, 0, sizeof(*info));
    copy_field(info->name, sizeof(info->name), c->name, strlen(c->name));
    copy_field(info->label, sizeof(info->label), c->label, strlen(c->label));
    info->lines = c->lines;
    return 0;
}

static int line_info(const struct chip *c, struct gpio_v2_line_info *li)
{
    uint32_t line = li->offset;
    if (line >= c->lines)
        return EINVAL;
    memset(li, 0, sizeof(*li));
    li->offset = line;
    char key[32];
    size_t len = 0;
    (void)snprintf(key, sizeof(key), "name%u", line);
    const char *v = chip_value(c, key, &len);
    if (v)
        copy_field(li->name, sizeof(li->name), v, len);
    const struct held *h = held_by_line(c, line);
    li->flags = GPIO_V2_LINE_FLAG_INPUT;
    if (h) {
        copy_field(li->consumer, sizeof(li->consumer), h->consumer, strlen(h->consumer));
        li->flags = GPIO_V2_LINE_FLAG_USED | h->flags;
    }
    return 0;
}

static const char *edge_text(uint64_t flags)
{
    bool r = flags & GPIO_V2_LINE_FLAG_EDGE_RISING, f = flags & GPIO_V2_LINE_FLAG_EDGE_FALLING;
    return r && f ? "both" : r ? "rising" : f ? "falling" : "none";
}

static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int e = w < 0 ? errno : (size_t)w != len ? EIO : 0;
    if (close(fd) != 0 && !e)
        e = errno;
    return e;
}

/* Opens the fd a request returns. */
static int open_line_fd(const struct chip *c, uint32_t line, bool output, bool edges, int initial,
                        const char *value_path, int *out)
{
    char path[PATH_MAX + 32];
    int fd;
    if (output) {
        int e = write_text(value_path, initial ? "1\n" : "0\n");
        if (e)
            return e;
        fd = open(value_path, O_RDWR | O_CLOEXEC);
    } else if (edges) {
        int e = line_path(path, sizeof(path), c, line, "events");
        if (e)
            return e;
        if (mkfifo(path, 0600) != 0 && errno != EEXIST)
            return errno;
        fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        struct stat st;
        if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode))) {
            (void)close(fd);
            return EIO;
        }
    } else {
        /* A plain input: any fd of its own; values come from the value file. */
        fd = memfd_create("gpio-fake-line", MFD_CLOEXEC);
    }
    if (fd < 0)
        return errno;
    *out = fd;
    return 0;
}

static int get_line(const struct chip *c, struct gpio_v2_line_request *req)
{
    if (req->num_lines != 1 || req->config.num_attrs > GPIO_V2_LINE_NUM_ATTRS_MAX)
        return EINVAL;
    uint32_t line = req->offsets[0];
    if (line >= c->lines)
        return EINVAL;
    uint64_t flags = req->config.flags;
    uint32_t debounce_us = 0;
    int initial = 0;
    for (uint32_t i = 0; i < req->config.num_attrs; i++) {
        const struct gpio_v2_line_config_attribute *a = &req->config.attrs[i];
        if (!(a->mask & 1u))
            continue;
        if (a->attr.id == GPIO_V2_LINE_ATTR_ID_FLAGS)
            flags = a->attr.flags;
        else if (a->attr.id == GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES)
            initial = (a->attr.values & 1u) ? 1 : 0;
        else if (a->attr.id == GPIO_V2_LINE_ATTR_ID_DEBOUNCE)
            debounce_us = a->attr.debounce_period_us;
        else
            return EINVAL;
    }
    bool input = flags & GPIO_V2_LINE_FLAG_INPUT, output = flags & GPIO_V2_LINE_FLAG_OUTPUT;
    bool edges = flags & (GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING);
    if ((input && output) || (edges && !input) || (debounce_us && !input))
        return EINVAL;
    if (debounce_us && c->no_debounce)
        return EINVAL;
    if (!output)
        flags |= GPIO_V2_LINE_FLAG_INPUT;
    if (held_by_line(c, line))
        return EBUSY;

    char value_path[PATH_MAX], request_path[PATH_MAX], text[128];
    char consumer[GPIO_MAX_NAME_SIZE];
    copy_field(consumer, sizeof(consumer), req->consumer,
               strnlen(req->consumer, sizeof(req->consumer)));
    int e = line_path(value_path, sizeof(value_path), c, line, "value");
    if (!e)
        e = line_path(request_path, sizeof(request_path), c, line, "request");
    if (e)
        return e;
    if (output)
        (void)snprintf(text, sizeof(text), "output value=%d consumer=%s\n", initial, consumer);
    else
        (void)snprintf(text, sizeof(text), "input edges=%s debounce_us=%u consumer=%s\n",
                       edge_text(flags), debounce_us, consumer);
    int fd = -1;
    e = open_line_fd(c, line, output, edges, initial, value_path, &fd);
    if (e)
        return e;
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fstat(fd, &st) != 0)
        e = errno;
    struct held *h = e ? NULL : held_free_slot(fd);
    if (!e && !h)
        e = ENOMEM; /* more requests open than the fake tracks */
    if (!e)
        e = write_text(request_path, text);
    if (e) {
        (void)close(fd);
        return e;
    }
    memset(h, 0, sizeof(*h));
    h->used = true;
    h->fd = fd;
    h->dev = st.st_dev;
    h->ino = st.st_ino;
    h->accmode = fl & O_ACCMODE;
    h->chip_dev = c->dev;
    h->chip_ino = c->ino;
    h->line = line;
    h->flags = flags;
    copy_field(h->consumer, sizeof(h->consumer), consumer, strlen(consumer));
    copy_field(h->value_path, sizeof(h->value_path), value_path, strlen(value_path));
    req->fd = fd;
    return 0;
}

static int read_value(const char *path, int *value)
{
    char buf[8];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            *value = 0;
            return 0;
        }
        return errno;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int e = errno;
    (void)close(fd);
    if (n < 0)
        return e;
    buf[(size_t)n] = '\0';
    if (n == 0 || buf[0] == '0')
        *value = 0;
    else if (buf[0] == '1')
        *value = 1;
    else
        return EIO;
    return 0;
}

static int line_values(const struct held *h, unsigned long req, struct gpio_v2_line_values *v)
{
    if (req == GPIO_V2_LINE_GET_VALUES_IOCTL) {
        int value = 0;
        int e = read_value(h->value_path, &value);
        if (e)
            return e;
        v->bits = (v->mask & 1u) && value ? 1u : 0u;
        return 0;
    }
    if (!(h->flags & GPIO_V2_LINE_FLAG_OUTPUT))
        return EPERM;
    if (!(v->mask & 1u))
        return 0;
    return write_text(h->value_path, (v->bits & 1u) ? "1\n" : "0\n");
}

/* Handles a GPIO ioctl on one of the fake's fds: true with *rc set, or false
 * when fd is not the fake's. */
static bool fake_ioctl(int fd, unsigned long req, void *arg, int *rc)
{
    int e = 0;
    (void)pthread_mutex_lock(&lock);
    const struct held *h = held_by_fd(fd);
    if (h) {
        if (req == GPIO_V2_LINE_GET_VALUES_IOCTL || req == GPIO_V2_LINE_SET_VALUES_IOCTL)
            e = arg ? line_values(h, req, arg) : EFAULT;
        else
            e = ENOTTY;
    } else {
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            (void)pthread_mutex_unlock(&lock);
            return false;
        }
        struct chip *c = &chip_buf;
        e = load_chip(fd, c);
        if (!e && !arg)
            e = EFAULT;
        if (!e) {
            if (req == GPIO_GET_CHIPINFO_IOCTL)
                e = chip_info(c, arg);
            else if (req == GPIO_V2_GET_LINEINFO_IOCTL)
                e = line_info(c, arg);
            else if (req == GPIO_V2_GET_LINE_IOCTL)
                e = get_line(c, arg);
            else
                e = ENOTTY;
        }
    }
    (void)pthread_mutex_unlock(&lock);
    if (e) {
        errno = e;
        *rc = -1;
    } else {
        *rc = 0;
    }
    return true;
}

__attribute__((visibility("default"))) int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int rc = 0;
    if (_IOC_TYPE(req) == GPIO_IOC_MAGIC && fake_ioctl(fd, req, arg, &rc))
        return rc;
    (void)pthread_once(&real_once, find_real);
    if (!real_ioctl) {
        errno = ENOSYS;
        return -1;
    }
    return real_ioctl(fd, req, arg);
}
