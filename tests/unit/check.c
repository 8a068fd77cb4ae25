#include "check.h"

int wisp_check_failures;

int wisp_check_main(int argc, char **argv, const struct wisp_check_test *tests, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1) {
            int wanted = 0;
            for (int a = 1; a < argc; a++)
                wanted |= strcmp(argv[a], tests[i].name) == 0;
            if (!wanted)
                continue;
        }
        int before = wisp_check_failures;
        tests[i].fn();
        if (wisp_check_failures == before) {
            passed++;
            (void)fprintf(stderr, "ok   %s\n", tests[i].name);
        } else {
            failed++;
            (void)fprintf(stderr, "FAIL %s\n", tests[i].name);
        }
    }
    (void)printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
