/*
 * A tiny test harness: each test file defines test functions, lists them in
 * a TESTS table and calls wisp_check_main. Failures print file:line and the
 * expression; the run ends with "N passed, N failed" like other runners.
 */
#ifndef WISP_CHECK_H
#define WISP_CHECK_H

#include <stdio.h>
#include <string.h>

extern int wisp_check_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (void)fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
            wisp_check_failures++;                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            (void)fprintf(stderr, "%s:%d: CHECK_INT_EQ failed: %s == %lld, expected %lld\n",       \
                          __FILE__, __LINE__, #a, va_, vb_);                                       \
            wisp_check_failures++;                                                                 \
        }                                                                                          \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                         \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) {                                               \
            (void)fprintf(stderr, "%s:%d: CHECK_STR_EQ failed: %s is \"%s\", expected \"%s\"\n",   \
                          __FILE__, __LINE__, #a, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");     \
            wisp_check_failures++;                                                                 \
        }                                                                                          \
    } while (0)

/* Checks that haystack contains needle. */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_)) {                                                              \
            (void)fprintf(stderr,                                                                  \
                          "%s:%d: CHECK_CONTAINS failed: \"%s\" does not contain \"%s\"\n",        \
                          __FILE__, __LINE__, h_ ? h_ : "(null)", n_);                             \
            wisp_check_failures++;                                                                 \
        }                                                                                          \
    } while (0)

struct wisp_check_test {
    const char *name;
    void (*fn)(void);
};

/* Runs every test (or only those named in argv), prints a summary line and
 * returns the process exit code. */
int wisp_check_main(int argc, char **argv, const struct wisp_check_test *tests, size_t n);

#define WISP_CHECK_RUN(argc, argv, tests)                                                          \
    wisp_check_main((argc), (argv), (tests), sizeof(tests) / sizeof((tests)[0]))

#endif
