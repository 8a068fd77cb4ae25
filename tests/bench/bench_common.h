/* What the standalone benchmark programs (relay.c, loadgen.c) share. */
#ifndef WISP_BENCH_COMMON_H
#define WISP_BENCH_COMMON_H

#include <stdbool.h>
#include <string.h>

/* True when --help or -h stands among the options (before any "--"). */
static inline bool bench_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    }
    return false;
}

#endif
