/* What the standalone benchmark programs (relay.c, ceiling.c, loadgen.c) share. */
#ifndef WISP_BENCH_COMMON_H
#define WISP_BENCH_COMMON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
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

/* The benchmark's transform, as in the Lua function: the input object plus temp_f (temp in
 * Fahrenheit) and alert (temp above threshold), printed (free with cJSON_free); NULL when
 * the input is not an object with a numeric temp (or out of memory). */
static inline char *bench_transform(const void *payload, size_t len, double threshold)
{
    cJSON *obj = cJSON_ParseWithLength(payload, len);
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(obj, "temp");
    char *out = NULL;
    if (cJSON_IsObject(obj) && cJSON_IsNumber(temp)) {
        double t = temp->valuedouble;
        cJSON_AddNumberToObject(obj, "temp_f", t * 9.0 / 5.0 + 32.0);
        cJSON_AddBoolToObject(obj, "alert", t > threshold);
        out = cJSON_PrintUnformatted(obj);
    }
    cJSON_Delete(obj);
    return out;
}

#endif
