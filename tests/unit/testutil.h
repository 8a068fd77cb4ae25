/*
 * Small helpers the C tests share: temp dirs and files, function folders,
 * waiting for a child with a deadline, and a sample event. Failures are
 * reported through check.h (file:line of the helper, then the caller goes
 * on), so a test only looks at a return value where it cannot go on.
 */
#ifndef WISP_TESTUTIL_H
#define WISP_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "engine.h"

/* A fresh directory /tmp/wisp-test-<tag>-XXXXXX; its path goes into dir.
 * False (and a failed check) when it could not be made. */
bool wisp_test_mkdtemp(char *dir, size_t cap, const char *tag);

/* Removes dir and everything below it (links are removed, not followed). */
void wisp_test_rmtree(const char *dir);

/* dir/rel into out. */
void wisp_test_path(char *out, size_t cap, const char *dir, const char *rel);

/* Writes text to dir/rel, replacing what was there. */
void wisp_test_write(const char *dir, const char *rel, const char *text);

/* Makes the directory dir/rel. */
void wisp_test_mkdir(const char *dir, const char *rel);

/* Makes dir/rel a symbolic link to target. */
void wisp_test_symlink(const char *target, const char *dir, const char *rel);

/* A new temp file /tmp/wisp-test-<tag>-XXXXXX holding text; its path goes
 * into path. False (and a failed check) when it could not be written. */
bool wisp_test_temp_file(char *path, size_t cap, const char *tag, const char *text);

/* The whole file (NUL-terminated, malloc'd), or NULL after a failed check. */
char *wisp_test_read_file(const char *path);

/* A function folder's files in dir (which must exist): function.json with
 * one MQTT trigger on topic and `extra` added to the object (",\"limits\":
 * {...}" or ""), and handler.lua. */
void wisp_test_write_fn(const char *dir, const char *name, const char *topic, const char *extra,
                        const char *handler);

/* Sends stderr to a temp file until wisp_test_captured_stderr, which
 * restores it and returns what was written (malloc'd; NULL after a failed
 * check). Not nestable. */
void wisp_test_capture_stderr(void);
char *wisp_test_captured_stderr(void);

struct wisp_fnspec;
/* Parses function.json text written with single quotes (turned into double
 * quotes first, to keep test tables readable) with origin
 * "fn/function.json". Returns the spec, or NULL with the message in err. */
struct wisp_fnspec *wisp_test_parse_q(const char *text, int *rc_out, char *err, size_t errlen);

/* `unit` n times between `pre` and `post`, malloc'd (for size limits). */
char *wisp_test_repeat(const char *pre, const char *unit, size_t n, const char *post);

/* waitpid(pid, status, WNOHANG) every 5 ms for up to ms: the pid that was
 * reaped, 0 when none was within ms, or -1 with errno set (ECHILD: no such
 * child). pid -1 means any child. */
pid_t wisp_test_waitpid(pid_t pid, int *status, int ms);

/* Waits up to ms for the child pid to exit and returns its status. When it
 * does not, kills it (SIGKILL), reaps it and returns -1. */
int wisp_test_wait_exit(pid_t pid, int ms);

/* An MQTT event: id "ev-1", source "wisp://gw1/mqtt", type
 * "wisp.mqtt.message", time "2024-05-01T12:00:00.000Z", not retained. */
struct wisp_event wisp_test_event(const char *subject, const char *payload, size_t len, int qos);

#endif
