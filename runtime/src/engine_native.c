/*
 * The native engine: handlers are shared libraries built against the public
 * ABI in <wisp/wisp.h>, loaded with dlopen inside the executor process. The
 * engine checks the file before dlopen (so a library for another machine or
 * a stray file is refused with a plain reason rather than only dlerror's),
 * then the exported ABI version and entry point, and hands the handler a
 * struct wisp_ctx whose function pointers lead back here.
 *
 * What native code can do wrong is contained by the executor, not here: a
 * crash ends the executor (outcome "crash"), a hang is killed by the
 * supervisor at the timeout, and the seccomp filter applies to the library
 * as to everything else in the process. Memory is capped with RLIMIT_DATA
 * (see set_data_limit).
 *
 * The event strings the executor hands in may move when a state call reads
 * further frames (engine.h), so each invocation copies them, together with
 * the payload, into a buffer of the instance that stays put until it ends.
 */
#define WISP_LOG_MODULE "native"

#include "engine.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "devcall.h"
#include "log.h"
#include "state.h"
#include "topic.h"
#include "util.h"
#include "wisp/wisp.h"

/* Bytes of one log message that reach the log line after quoting. */
enum { LOG_QUOTED_MAX = 4096 };
/* Longest failure message kept from ctx->fail. */
enum { FAIL_MAX = 16384 };
/* Room for wispd's own buffers in an executor (publishes, state values read
 * and written) on top of limits.memory_kb; the running event's frame and
 * its copy get four times its payload besides. */
#define RUNTIME_ALLOWANCE ((size_t)32 * 1024 * 1024)

struct native_inst {
    struct wisp_ctx ctx; /* handed to the handler; its callbacks find the instance from it */
    const struct wisp_fnspec *spec;
    char *path; /* spec->dir + "/" + spec->handler */
    void *dl;
    wisp_handle_fn handle;
    long rss_base_kb; /* peak RSS as the first invocation began; -1 before */
    /* RLIMIT_DATA: the limit found at load (restored at destroy), the data
     * size once loaded and the limit last set. */
    bool limited;
    struct rlimit old_data;
    size_t data_base;
    rlim_t data_set;
    /* During invoke only. */
    const struct wisp_event *ev;
    struct wisp_result *res;
    uint64_t deadline_ns;
    struct wisp_native_event nev;
    char *evbuf; /* the event's strings and payload, copied */
    size_t evcap;
    char *getbuf; /* the last state_get value, NUL-terminated */
    size_t getcap;
    char *fail_msg; /* from ctx->fail */
    size_t log_bytes;
    bool log_truncated;
    char err[512]; /* why the last ctx call failed */
};

static struct native_inst *inst_of(const struct wisp_ctx *ctx)
{
    /* ctx is the first member of the instance, which is never const. */
    return (struct native_inst *)(uintptr_t)ctx;
}

/* ---- loading ------------------------------------------------------------ */

#if defined(__x86_64__)
#define NATIVE_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define NATIVE_MACHINE EM_AARCH64
#elif defined(__arm__)
#define NATIVE_MACHINE EM_ARM
#elif defined(__i386__)
#define NATIVE_MACHINE EM_386
#elif defined(__riscv)
#define NATIVE_MACHINE EM_RISCV
#endif

static const char *machine_name(unsigned m, char *buf, size_t cap)
{
    switch (m) {
    case EM_X86_64:
        return "x86-64";
    case EM_AARCH64:
        return "AArch64 (arm64)";
    case EM_ARM:
        return "32-bit ARM (armhf/armel)";
    case EM_386:
        return "i386";
    case EM_RISCV:
        return "RISC-V";
    case EM_MIPS:
        return "MIPS";
    case EM_PPC64:
        return "64-bit PowerPC";
    default:
        (void)snprintf(buf, cap, "ELF machine %u", m);
        return buf;
    }
}

/* Reads the start of the ELF header and refuses, with the reason, what
 * dlopen could not load here: not ELF, not a shared object, the wrong word
 * size, byte order or machine. */
static int check_elf(const char *path, char *err, size_t errlen)
{
    unsigned char h[20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return wisp_errf(err, errlen, -e, "%s: cannot open: %s", path, strerror(e));
    }
    ssize_t n = read(fd, h, sizeof(h));
    int e = errno;
    close(fd);
    if (n < 0)
        return wisp_errf(err, errlen, -e, "%s: cannot read: %s", path, strerror(e));
    if (n < (ssize_t)sizeof(h) || memcmp(h, ELFMAG, SELFMAG) != 0)
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: not a shared object (no ELF header): build the handler with "
                         "cc -shared -fPIC -I <wisp>/runtime/include",
                         path);
    const unsigned char cls = sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32;
    if (h[EI_CLASS] != cls)
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: a %s library; this wispd is %s: build the handler for this "
                         "gateway's architecture",
                         path, h[EI_CLASS] == ELFCLASS64 ? "64-bit" : "32-bit",
                         cls == ELFCLASS64 ? "64-bit" : "32-bit");
    const unsigned char data =
        __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;
    if (h[EI_DATA] != data)
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: built for the other byte order: build the handler for this "
                         "gateway's architecture",
                         path);
    /* e_type and e_machine are 16-bit fields at bytes 16 and 18, in the
     * file's (now known to be our) byte order. */
    uint16_t type, machine;
    memcpy(&type, h + 16, sizeof(type));
    memcpy(&machine, h + 18, sizeof(machine));
#ifdef NATIVE_MACHINE
    if (machine != NATIVE_MACHINE) {
        char b1[32], b2[32];
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: built for %s; this wispd runs on %s: build the handler for this "
                         "gateway's architecture (e.g. with its cross compiler)",
                         path, machine_name(machine, b1, sizeof(b1)),
                         machine_name(NATIVE_MACHINE, b2, sizeof(b2)));
    }
#else
    (void)machine;
#endif
    if (type != ET_DYN)
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: %s, not a shared object: build the handler with cc -shared -fPIC",
                         path,
                         type == ET_EXEC  ? "an executable"
                         : type == ET_REL ? "an object file (.o)"
                                          : "an ELF file of another kind");
    return 0;
}

/* Caps the executor's data segment (heap, anonymous and writable private
 * mappings, as RLIMIT_DATA counts them) at its size once the library was
 * loaded + limits.memory_kb + the runtime's allowance (+ 4x the payload of
 * the event about to run): past it malloc returns NULL in the handler, and
 * the gateway's memory is safe from a leaking or runaway handler. Only the
 * soft limit moves, never above the limit found at load, which destroy puts
 * back. Sanitizer builds reserve terabytes of shadow memory as data, so the
 * cap is left out there. */
#ifdef WISP_SANITIZED
#define DATA_CAP 0
#else
#define DATA_CAP 1
#endif

/* The data size (plus the stack) from /proc/self/statm; 0 when it cannot
 * be read. */
static size_t data_size(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* Fields: size resident shared text lib data dt, in pages. */
    const char *p = buf;
    unsigned long long v = 0;
    for (int i = 0; i < 6; i++) {
        char *end = NULL;
        errno = 0;
        v = strtoull(p, &end, 10);
        if (end == p || errno != 0)
            return 0;
        p = end;
    }
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)v * (size_t)page : 0;
}

static void set_data_limit(struct native_inst *in, size_t payload_len)
{
    if (!in->limited)
        return;
    /* The payload's share in whole MiB, so that events of similar sizes
     * leave the limit (and the system call) alone. */
    const rlim_t mib = (rlim_t)1024 * 1024;
    rlim_t room = ((rlim_t)payload_len * 4u + mib - 1) / mib * mib;
    rlim_t want =
        (rlim_t)in->data_base + (rlim_t)in->spec->memory_kb * 1024u + RUNTIME_ALLOWANCE + room;
    if (in->old_data.rlim_cur != RLIM_INFINITY && want > in->old_data.rlim_cur)
        want = in->old_data.rlim_cur;
    if (want == in->data_set)
        return;
    struct rlimit rl = {.rlim_cur = want, .rlim_max = in->old_data.rlim_max};
    if (setrlimit(RLIMIT_DATA, &rl) == 0)
        in->data_set = want;
}

static void start_data_limit(struct native_inst *in)
{
    if (!DATA_CAP)
        return;
    in->data_base = data_size();
    if (in->data_base == 0 || getrlimit(RLIMIT_DATA, &in->old_data) != 0) {
        log_debug("%s: no memory cap (cannot read the data size)", in->spec->name);
        return;
    }
    in->limited = true;
    set_data_limit(in, 0);
}

static void end_data_limit(struct native_inst *in)
{
    if (in->limited && in->data_set && setrlimit(RLIMIT_DATA, &in->old_data) != 0)
        log_warn("%s: cannot lift the memory cap: %s", in->spec->name, strerror(errno));
    in->limited = false;
}

static long max_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

/* dlopen and the two symbols, each failure with its own message. */
static int load_library(struct native_inst *in, char *err, size_t errlen)
{
    const char *path = in->path;
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        if (e == ENOENT)
            return wisp_errf(err, errlen, -ENOENT,
                             "%s: not found: a native function needs its compiled handler "
                             "(function.json \"handler\", default handler.so)",
                             path);
        return wisp_errf(err, errlen, -e, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return wisp_errf(err, errlen, -EINVAL, "%s: not a regular file", path);
    int rc = check_elf(path, err, errlen);
    if (rc != 0)
        return rc;
    (void)dlerror();
    in->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!in->dl) {
        const char *why = dlerror();
        return wisp_errf(err, errlen, -ENOEXEC, "%s: cannot load: %s", path,
                         why ? why : "unknown dlopen error");
    }
    const uint32_t *abi = dlsym(in->dl, WISP_SYM_ABI_VERSION);
    if (!abi)
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: does not export %s: not a Wisp handler, or built without "
                         "WISP_HANDLER(fn) from <wisp/wisp.h>",
                         path, WISP_SYM_ABI_VERSION);
    if (*abi != WISP_ABI_VERSION)
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: %s was built for wisp ABI %" PRIu32
                         "; this wispd speaks %d: rebuild it against this wispd's <wisp/wisp.h>",
                         path, in->spec->handler, *abi, WISP_ABI_VERSION);
    void *sym = dlsym(in->dl, WISP_SYM_HANDLE);
    if (!sym)
        return wisp_errf(err, errlen, -ENOEXEC,
                         "%s: does not export the entry point %s: define it with "
                         "WISP_HANDLER(fn) from <wisp/wisp.h>",
                         path, WISP_SYM_HANDLE);
    /* POSIX guarantees that a function's address survives this round trip. */
    memcpy(&in->handle, &sym, sizeof(in->handle));
    return 0;
}

/* ---- ctx: helpers ----------------------------------------------------------- */

static int call_error(struct native_inst *in, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int call_error(struct native_inst *in, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(in->err, sizeof(in->err), fmt, ap);
    va_end(ap);
    return WISP_ERROR;
}

/* Starts a ctx call that needs a running invocation: clears the last
 * error; false (with the error set) outside an invocation. */
static bool begin_call(struct native_inst *in, const char *what)
{
    in->err[0] = '\0';
    if (in->res)
        return true;
    call_error(in, "%s: only allowed while handling an event", what);
    return false;
}

/* The invocation's state buffer, or NULL with the error set. */
static struct wisp_state *need_state(struct native_inst *in, const char *what)
{
    if (!begin_call(in, what))
        return NULL;
    if (!in->ev->state)
        call_error(in, "%s: no state store is available here", what);
    return in->ev->state;
}

static bool key_ok(struct native_inst *in, const char *what, const char *key, size_t *klen)
{
    if (!key) {
        call_error(in, "%s: key is NULL", what);
        return false;
    }
    *klen = strnlen(key, WISP_STATE_MAX_KEY + 1);
    if (*klen == 0 || *klen > WISP_STATE_MAX_KEY) {
        call_error(in, "%s: key must be 1 to %u bytes (got %s)", what, WISP_STATE_MAX_KEY,
                   *klen ? "a longer one" : "an empty one");
        return false;
    }
    return true;
}

/* The error of a failed wisp_state_* call, in words. */
static int state_error(struct native_inst *in, const char *what, int rc)
{
    const struct wisp_state *st = in->ev->state;
    switch (rc) {
    case -E2BIG:
        return call_error(in, "%s: more than %u keys touched in one invocation", what,
                          WISP_STATE_MAX_KEYS);
    case -EFBIG:
        return call_error(in, "%s: value larger than %zu bytes", what, WISP_STATE_MAX_VALUE);
    case -ENOMEM:
        return call_error(in, "%s: out of memory", what);
    case -ENOTSUP:
        return call_error(in, "%s: no state store is available here", what);
    default:
        return call_error(in, "%s: %s", what, st->err ? st->err : strerror(-rc));
    }
}

/* Grows *buf to hold at least need bytes. */
static int reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    char *nb = realloc(*buf, ncap);
    if (!nb)
        return -ENOMEM;
    *buf = nb;
    *cap = ncap;
    return 0;
}

/* ---- ctx: publish, log, env, time, fail ---------------------------------------- */

static int ctx_publish(const struct wisp_ctx *ctx, const char *topic, const void *payload,
                       size_t len, int qos, int retain)
{
    struct native_inst *in = inst_of(ctx);
    const char *why = NULL;
    if (!begin_call(in, "publish"))
        return WISP_ERROR;
    if (!topic)
        return call_error(in, "publish: topic is NULL");
    if (!payload && len)
        return call_error(in, "publish: payload is NULL with length %zu", len);
    if (qos < 0 || qos > 2)
        return call_error(in, "publish: qos must be 0, 1 or 2 (got %d)", qos);
    if (retain != 0 && retain != 1)
        return call_error(in, "publish: retain must be 0 or 1 (got %d)", retain);
    size_t tlen = strnlen(topic, 65536);
    if (!wisp_topic_name_valid(topic, tlen, &why))
        return call_error(in, "publish: invalid topic: %s", why ? why : "?");
    int rc = wisp_result_add_publish(in->res, topic, payload ? payload : "", len, qos, retain);
    if (rc == -E2BIG && in->res->n_pubs >= WISP_MAX_PUBLISHES_PER_INVOCATION)
        return call_error(in, "publish: more than %u messages in one invocation",
                          WISP_MAX_PUBLISHES_PER_INVOCATION);
    if (rc == -E2BIG)
        return call_error(in,
                          "publish: more than %zu bytes (topics and payloads) in one invocation",
                          WISP_MAX_PUBLISH_BYTES);
    if (rc != 0)
        return call_error(in, "publish: out of memory");
    return WISP_OK;
}

static void ctx_log(const struct wisp_ctx *ctx, int level, const char *msg)
{
    struct native_inst *in = inst_of(ctx);
    char quoted[LOG_QUOTED_MAX];
    if (level < WISP_LEVEL_DEBUG)
        level = WISP_LEVEL_DEBUG;
    if (level > WISP_LEVEL_ERROR)
        level = WISP_LEVEL_ERROR;
    /* The public levels are the log module's, in the same order. */
    int lvl = WISP_LOG_DEBUG + (level - WISP_LEVEL_DEBUG);
    if (lvl < wisp_log_threshold || in->log_truncated)
        return;
    if (!msg)
        msg = "(null)";
    const char *id = in->res ? in->nev.id : "-";
    size_t len = strlen(msg);
    if (len > (size_t)WISP_MAX_LOG_BYTES_PER_INVOCATION - in->log_bytes) {
        in->log_truncated = true;
        if (WISP_LOG_WARN >= wisp_log_threshold)
            wisp_log_emit_fields(WISP_LOG_WARN, "fn", "fn=%s id=%s msg=%s", in->spec->name, id,
                                 "\"log output truncated\"");
        return;
    }
    in->log_bytes += len;
    wisp_log_quote(quoted, sizeof(quoted), msg, len);
    wisp_log_emit_fields(lvl, "fn", "fn=%s id=%s msg=%s", in->spec->name, id, quoted);
}

static const char *ctx_env(const struct wisp_ctx *ctx, const char *key)
{
    return wisp_fnspec_env(inst_of(ctx)->spec, key);
}

static uint64_t ctx_now_ns(const struct wisp_ctx *ctx)
{
    (void)ctx;
    return wisp_real_ns();
}

static uint64_t ctx_remaining_ms(const struct wisp_ctx *ctx)
{
    const struct native_inst *in = inst_of(ctx);
    uint64_t now = wisp_mono_ns();
    return in->deadline_ns > now ? (in->deadline_ns - now) / 1000000u : 0;
}

static void ctx_fail(const struct wisp_ctx *ctx, const char *msg)
{
    struct native_inst *in = inst_of(ctx);
    if (!in->res)
        return;
    if (!msg || !*msg)
        msg = "the handler failed (ctx->fail without a message)";
    char *copy = wisp_strndup(msg, strnlen(msg, FAIL_MAX));
    if (!copy)
        return;
    free(in->fail_msg);
    in->fail_msg = copy;
}

static const char *ctx_error(const struct wisp_ctx *ctx)
{
    return inst_of(ctx)->err;
}

/* ---- ctx: state ------------------------------------------------------------- */

static int ctx_state_get(const struct wisp_ctx *ctx, const char *key, const char **json,
                         size_t *len)
{
    struct native_inst *in = inst_of(ctx);
    struct wisp_state *st = need_state(in, "state: get");
    size_t klen;
    if (!st || !key_ok(in, "state: get", key, &klen))
        return WISP_ERROR;
    if (!json)
        return call_error(in, "state: get: json is NULL");
    const char *v;
    size_t vlen;
    int rc = wisp_state_get(st, key, klen, &v, &vlen);
    if (rc == -ENOENT)
        return WISP_NOT_FOUND;
    if (rc != 0)
        return state_error(in, "state: get", rc);
    if (reserve(&in->getbuf, &in->getcap, vlen + 1) != 0)
        return call_error(in, "state: get: out of memory");
    memcpy(in->getbuf, v, vlen);
    in->getbuf[vlen] = '\0';
    *json = in->getbuf;
    if (len)
        *len = vlen;
    return WISP_OK;
}

static int ctx_state_put(const struct wisp_ctx *ctx, const char *key, const char *json)
{
    struct native_inst *in = inst_of(ctx);
    struct wisp_state *st = need_state(in, "state: put");
    size_t klen;
    if (!st || !key_ok(in, "state: put", key, &klen))
        return WISP_ERROR;
    if (!json)
        return call_error(in, "state: put: value is NULL (use state_del to delete)");
    size_t vlen = strnlen(json, WISP_STATE_MAX_VALUE + 1);
    if (vlen > WISP_STATE_MAX_VALUE)
        return call_error(in, "state: put: value larger than %zu bytes", WISP_STATE_MAX_VALUE);
    const char *end = NULL;
    cJSON *parsed = cJSON_ParseWithOpts(json, &end, 1);
    if (!parsed) {
        size_t at = end && end >= json && end <= json + vlen ? (size_t)(end - json) : 0;
        return call_error(in, "state: put: value is not one JSON value (error at byte %zu)", at);
    }
    bool is_null = cJSON_IsNull(parsed);
    cJSON_Delete(parsed);
    if (is_null)
        return call_error(in, "state: put: null cannot be stored (use state_del to delete)");
    int rc = wisp_state_put(st, key, klen, json, vlen);
    return rc ? state_error(in, "state: put", rc) : WISP_OK;
}

static int ctx_state_del(const struct wisp_ctx *ctx, const char *key)
{
    struct native_inst *in = inst_of(ctx);
    struct wisp_state *st = need_state(in, "state: del");
    size_t klen;
    if (!st || !key_ok(in, "state: del", key, &klen))
        return WISP_ERROR;
    int rc = wisp_state_put(st, key, klen, NULL, 0);
    return rc ? state_error(in, "state: del", rc) : WISP_OK;
}

static int ctx_state_incr(const struct wisp_ctx *ctx, const char *key, int64_t by, int64_t *value)
{
    struct native_inst *in = inst_of(ctx);
    struct wisp_state *st = need_state(in, "state: incr");
    size_t klen;
    if (!st || !key_ok(in, "state: incr", key, &klen))
        return WISP_ERROR;
    const char *v;
    size_t vlen;
    int64_t cur = 0;
    int rc = wisp_state_get(st, key, klen, &v, &vlen);
    if (rc != 0 && rc != -ENOENT)
        return state_error(in, "state: incr", rc);
    if (rc == 0) {
        char num[32];
        bool is_int = vlen > 0 && vlen < sizeof(num);
        if (is_int) {
            memcpy(num, v, vlen);
            num[vlen] = '\0';
            is_int = wisp_parse_i64(num, INT64_MIN, INT64_MAX, &cur) == 0;
        }
        if (!is_int)
            return call_error(in, "state: incr: %s holds %.*s, not an integer", key,
                              vlen > 40 ? 40 : (int)vlen, v);
    }
    int64_t sum;
    if (__builtin_add_overflow(cur, by, &sum))
        return call_error(in, "state: incr: %s: %" PRId64 " + %" PRId64 " overflows", key, cur, by);
    char text[24];
    int tn = snprintf(text, sizeof(text), "%" PRId64, sum);
    rc = wisp_state_put(st, key, klen, text, (size_t)tn);
    if (rc != 0)
        return state_error(in, "state: incr", rc);
    if (value)
        *value = sum;
    return WISP_OK;
}

struct keys_walk {
    int (*cb)(void *ud, const char *key, size_t len);
    void *ud;
    int stopped; /* the callback's non-zero value */
    char key[WISP_STATE_MAX_KEY + 1];
};

static int keys_step(void *ud, const char *key, size_t klen)
{
    struct keys_walk *w = ud;
    if (klen > WISP_STATE_MAX_KEY)
        klen = WISP_STATE_MAX_KEY;
    memcpy(w->key, key, klen);
    w->key[klen] = '\0';
    w->stopped = w->cb(w->ud, w->key, klen);
    return w->stopped;
}

static int ctx_state_keys(const struct wisp_ctx *ctx, const char *prefix, size_t limit,
                          int (*cb)(void *ud, const char *key, size_t len), void *ud)
{
    struct native_inst *in = inst_of(ctx);
    struct wisp_state *st = need_state(in, "state: keys");
    if (!st)
        return WISP_ERROR;
    if (!cb)
        return call_error(in, "state: keys: cb is NULL");
    if (limit == 0)
        limit = WISP_STATE_MAX_LISTING;
    if (limit > WISP_STATE_MAX_LISTING)
        return call_error(in, "state: keys: limit must be 1 to %u (got %zu)",
                          WISP_STATE_MAX_LISTING, limit);
    if (!prefix)
        prefix = "";
    size_t plen = strnlen(prefix, WISP_STATE_MAX_KEY + 1);
    if (plen > WISP_STATE_MAX_KEY)
        return call_error(in, "state: keys: prefix longer than %u bytes", WISP_STATE_MAX_KEY);
    struct keys_walk w = {.cb = cb, .ud = ud};
    int rc = wisp_state_keys(st, prefix, plen, limit, keys_step, &w);
    if (w.stopped)
        return w.stopped;
    return rc ? state_error(in, "state: keys", rc) : WISP_OK;
}

/* ---- ctx: devices ----------------------------------------------------------- */

static int ctx_sensor(const struct wisp_ctx *ctx, const char *name, struct wisp_sensor_reading *out)
{
    struct native_inst *in = inst_of(ctx);
    char why[256];
    if (!begin_call(in, "sensor"))
        return WISP_ERROR;
    if (!name || !out)
        return call_error(in, "sensor: %s is NULL", name ? "out" : "name");
    struct wisp_devcall_reading r;
    memset(&r, 0, sizeof(r));
    why[0] = '\0';
    if (wisp_devcall_sensor(in->ev->state, name, &r, why, sizeof(why)) != 0)
        return call_error(in, "sensor: %s: %s", name, why);
    out->value = r.value;
    (void)snprintf(out->unit, sizeof(out->unit), "%.*s", (int)strnlen(r.unit, sizeof(r.unit)),
                   r.unit);
    out->time_ns = r.time_ns;
    return WISP_OK;
}

static int ctx_gpio(const struct wisp_ctx *ctx, const char *chip, uint32_t line, int value,
                    int *out)
{
    struct native_inst *in = inst_of(ctx);
    char why[256];
    int got = 0;
    if (!begin_call(in, "gpio"))
        return WISP_ERROR;
    if (!chip)
        return call_error(in, "gpio: chip is NULL");
    if (value < -1 || value > 1)
        return call_error(in, "gpio: value must be -1 (read), 0 or 1 (got %d)", value);
    why[0] = '\0';
    if (wisp_devcall_gpio(in->ev->state, chip, line, value, &got, why, sizeof(why)) != 0)
        return call_error(in, "gpio: %s line %" PRIu32 ": %s", chip, line, why);
    if (out)
        *out = got;
    return WISP_OK;
}

/* ---- create / destroy ----------------------------------------------------- */

static void engine_destroy(void *p)
{
    struct native_inst *in = p;
    if (!in)
        return;
    if (in->dl)
        (void)dlclose(in->dl);
    end_data_limit(in);
    free(in->path);
    free(in->evbuf);
    free(in->getbuf);
    free(in->fail_msg);
    free(in);
}

static int engine_create(const struct wisp_fnspec *spec, void **out, char *err, size_t errlen)
{
    *out = NULL;
    struct native_inst *in = calloc(1, sizeof(*in));
    if (!in)
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", spec->handler);
    in->spec = spec;
    in->path = wisp_path_join(spec->dir, spec->handler);
    if (!in->path) {
        engine_destroy(in);
        return wisp_errf(err, errlen, -ENOMEM, "%s: out of memory", spec->handler);
    }
    in->rss_base_kb = -1;
    int rc = load_library(in, err, errlen);
    if (rc != 0) {
        engine_destroy(in);
        return rc;
    }
    in->ctx = (struct wisp_ctx){
        .abi_version = WISP_ABI_VERSION,
        .size = (uint32_t)sizeof(struct wisp_ctx),
        .fn_name = spec->name ? spec->name : "",
        .fn_version = spec->version ? spec->version : "",
        .publish = ctx_publish,
        .state_get = ctx_state_get,
        .state_put = ctx_state_put,
        .state_del = ctx_state_del,
        .state_incr = ctx_state_incr,
        .state_keys = ctx_state_keys,
        .log = ctx_log,
        .sensor = ctx_sensor,
        .gpio = ctx_gpio,
        .env = ctx_env,
        .now_ns = ctx_now_ns,
        .remaining_ms = ctx_remaining_ms,
        .fail = ctx_fail,
        .error = ctx_error,
    };
    start_data_limit(in);
    *out = in;
    return 0;
}

/* ---- invoke --------------------------------------------------------------- */

/* Copies the event's strings and payload into the instance, each followed
 * by a NUL, and points nev at the copies. */
static int copy_event(struct native_inst *in, const struct wisp_event *ev)
{
    const char *s[5] = {ev->id, ev->source, ev->type, ev->time, ev->subject};
    size_t l[5], need = ev->payload_len + 1;
    for (int i = 0; i < 5; i++) {
        l[i] = s[i] ? strlen(s[i]) : 0;
        need += l[i] + 1;
    }
    if (reserve(&in->evbuf, &in->evcap, need) != 0)
        return -ENOMEM;
    const char *d[5];
    char *p = in->evbuf;
    for (int i = 0; i < 5; i++) {
        if (l[i])
            memcpy(p, s[i], l[i]);
        p[l[i]] = '\0';
        d[i] = p;
        p += l[i] + 1;
    }
    if (ev->payload_len)
        memcpy(p, ev->payload, ev->payload_len);
    p[ev->payload_len] = '\0';
    in->nev = (struct wisp_native_event){
        .size = (uint32_t)sizeof(struct wisp_native_event),
        .specversion = "1.0",
        .id = d[0],
        .source = d[1],
        .type = d[2],
        .time = d[3],
        .subject = d[4],
        .payload = p,
        .payload_len = ev->payload_len,
        .qos = ev->qos,
        .retain = ev->retain ? 1 : 0,
    };
    return 0;
}

/* `res` is overwritten: the caller releases any previous contents first. */
static int engine_invoke(void *p, const struct wisp_event *ev, struct wisp_result *res)
{
    struct native_inst *in = p;
    wisp_result_init(res);
    uint64_t start = wisp_mono_ns();
    if (copy_event(in, ev) != 0) {
        wisp_result_set_error(res, WISP_OUTCOME_ERROR, "out of memory copying the event");
        res->duration_ns = wisp_mono_ns() - start;
        return 0;
    }
    in->ev = ev;
    in->res = res;
    in->deadline_ns = start + (uint64_t)in->spec->timeout_ms * 1000000u;
    in->log_bytes = 0;
    in->log_truncated = false;
    in->err[0] = '\0';
    free(in->fail_msg);
    in->fail_msg = NULL;
    set_data_limit(in, ev->payload_len);
    if (in->rss_base_kb < 0)
        in->rss_base_kb = max_rss_kb();

    int rc = in->handle(&in->nev, &in->ctx);
    /* Peak memory: how far the executor's peak RSS has grown since its
     * first invocation began (the loader's and the runtime's own start-up
     * pages are not the handler's). Like Lambda's "Max Memory Used" it
     * never decreases during the life of an executor. */
    long rss = max_rss_kb() - in->rss_base_kb;

    res->duration_ns = wisp_mono_ns() - start;
    if (rc == WISP_NOMEM) {
        char msg[512];
        (void)snprintf(msg, sizeof(msg),
                       "memory: handler ran out of memory (limits.memory_kb is %u KiB)%s%.300s",
                       in->spec->memory_kb, in->fail_msg ? ": " : "",
                       in->fail_msg ? in->fail_msg : "");
        wisp_result_set_error(res, WISP_OUTCOME_MEMORY, msg);
    } else if (in->fail_msg) {
        wisp_result_set_error(res, WISP_OUTCOME_ERROR, in->fail_msg);
    } else if (rc != WISP_OK) {
        char msg[128];
        (void)snprintf(msg, sizeof(msg),
                       "handler returned %d (call ctx->fail to say why an invocation failed)", rc);
        wisp_result_set_error(res, WISP_OUTCOME_ERROR, msg);
    } else {
        res->outcome = WISP_OUTCOME_OK;
    }
    if (res->outcome != WISP_OUTCOME_OK)
        wisp_result_drop_publishes(res);
    res->mem_peak_bytes = rss > 0 ? (uint64_t)rss * 1024u : 0;
    in->ev = NULL;
    in->res = NULL;
    in->deadline_ns = 0;
    /* A handler that ran out of memory may have left its heap in any
     * state: the next event gets a freshly loaded library. */
    return res->outcome == WISP_OUTCOME_MEMORY ? -1 : 0;
}

const struct wisp_engine_ops wisp_engine_native = {
    .name = "native",
    .create = engine_create,
    .invoke = engine_invoke,
    .destroy = engine_destroy,
};
