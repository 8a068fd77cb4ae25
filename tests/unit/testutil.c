#include "testutil.h"

#include "fnspec.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "util.h"

bool wisp_test_mkdtemp(char *dir, size_t cap, const char *tag)
{
    (void)snprintf(dir, cap, "/tmp/wisp-test-%s-XXXXXX", tag);
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        dir[0] = '\0';
        return false;
    }
    return true;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void wisp_test_rmtree(const char *dir)
{
    CHECK_INT_EQ(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

void wisp_test_path(char *out, size_t cap, const char *dir, const char *rel)
{
    (void)snprintf(out, cap, "%s/%s", dir, rel);
}

void wisp_test_write(const char *dir, const char *rel, const char *text)
{
    char path[4096];
    wisp_test_path(path, sizeof(path), dir, rel);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

void wisp_test_mkdir(const char *dir, const char *rel)
{
    char path[4096];
    wisp_test_path(path, sizeof(path), dir, rel);
    CHECK_INT_EQ(mkdir(path, 0755), 0);
}

void wisp_test_symlink(const char *target, const char *dir, const char *rel)
{
    char path[4096];
    wisp_test_path(path, sizeof(path), dir, rel);
    CHECK_INT_EQ(symlink(target, path), 0);
}

bool wisp_test_temp_file(char *path, size_t cap, const char *tag, const char *text)
{
    (void)snprintf(path, cap, "/tmp/wisp-test-%s-XXXXXX", tag);
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return false;
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len;
    CHECK(ok);
    CHECK(close(fd) == 0);
    return ok;
}

char *wisp_test_read_file(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    CHECK_INT_EQ(wisp_read_file(path, 1u << 24, &text, &len), 0);
    return text;
}

void wisp_test_write_fn(const char *dir, const char *name, const char *topic, const char *extra,
                        const char *handler)
{
    char json[1024];
    (void)snprintf(json, sizeof(json),
                   "{\"name\":\"%s\",\"triggers\":[{\"type\":\"mqtt\",\"topic\":\"%s\","
                   "\"durable\":false}]%s}",
                   name, topic, extra);
    wisp_test_write(dir, "function.json", json);
    wisp_test_write(dir, "handler.lua", handler);
}

char *wisp_test_repeat(const char *pre, const char *unit, size_t n, const char *post)
{
    size_t lp = strlen(pre), lu = strlen(unit), lq = strlen(post);
    char *s = malloc(lp + lu * n + lq + 1);
    CHECK(s != NULL);
    if (!s)
        return NULL;
    char *o = s;
    memcpy(o, pre, lp);
    o += lp;
    for (size_t i = 0; i < n; i++, o += lu)
        memcpy(o, unit, lu);
    memcpy(o, post, lq + 1);
    return s;
}

pid_t wisp_test_waitpid(pid_t pid, int *status, int ms)
{
    uint64_t deadline = wisp_mono_ns() + (uint64_t)ms * 1000000ULL;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r != 0 || wisp_mono_ns() >= deadline)
            return r;
        struct timespec ts = {0, 5000000L};
        nanosleep(&ts, NULL);
    }
}

int wisp_test_wait_exit(pid_t pid, int ms)
{
    int status = 0;
    if (wisp_test_waitpid(pid, &status, ms) == pid)
        return status;
    if (kill(pid, SIGKILL) == 0)
        (void)waitpid(pid, NULL, 0);
    return -1;
}

struct wisp_event wisp_test_event(const char *subject, const char *payload, size_t len, int qos)
{
    return (struct wisp_event){
        .id = "ev-1",
        .source = "wisp://gw1/mqtt",
        .type = "wisp.mqtt.message",
        .time = "2024-05-01T12:00:00.000Z",
        .subject = subject,
        .payload = payload,
        .payload_len = len,
        .qos = qos,
        .retain = 0,
    };
}

struct wisp_fnspec *wisp_test_parse_q(const char *text, int *rc_out, char *err, size_t errlen)
{
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    struct wisp_fnspec *spec = NULL;
    if (!buf)
        return NULL;
    memcpy(buf, text, len + 1);
    for (char *p = strchr(buf, '\''); p; p = strchr(p, '\''))
        *p = '"';
    err[0] = '\0';
    int rc = wisp_fnspec_parse(buf, len, "fn/function.json", "fn", &spec, err, errlen);
    if (rc_out)
        *rc_out = rc;
    free(buf);
    return spec;
}

static int saved_stderr = -1;
static char capture_path[64];

void wisp_test_capture_stderr(void)
{
    (void)snprintf(capture_path, sizeof(capture_path), "/tmp/wisp-test-log-XXXXXX");
    int fd = mkstemp(capture_path);
    CHECK(fd >= 0);
    saved_stderr = dup(STDERR_FILENO);
    CHECK(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

char *wisp_test_captured_stderr(void)
{
    CHECK(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    char *text = wisp_test_read_file(capture_path);
    CHECK_INT_EQ(unlink(capture_path), 0);
    return text;
}
