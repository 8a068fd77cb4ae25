/* What the standalone benchmark programs (relay.c, ceiling.c, loadgen.c) share. */
#ifndef WISP_BENCH_COMMON_H
#define WISP_BENCH_COMMON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The options of the transform programs (relay.c, ceiling.c). */
struct bench_relay_opts {
    const char *broker, *in_topic, *out_topic;
    int qos;
    double threshold; /* from $THRESHOLD, as in the Lua function */
};

/* Parses --broker URI [--qos 0..max_qos] [--in TOPIC] [--out TOPIC]; false on anything else
 * or without --broker. */
static inline bool bench_relay_parse(int argc, char **argv, int max_qos, struct bench_relay_opts *o)
{
    *o = (struct bench_relay_opts){
        .in_topic = "bench/in", .out_topic = "bench/out", .threshold = 30.0};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--broker"))
            o->broker = v;
        else if (!strcmp(a, "--qos"))
            o->qos = (int)strtol(v, NULL, 10);
        else if (!strcmp(a, "--in"))
            o->in_topic = v;
        else if (!strcmp(a, "--out"))
            o->out_topic = v;
        else
            return false;
    }
    const char *th = getenv("THRESHOLD");
    if (th && *th)
        o->threshold = strtod(th, NULL);
    return argc % 2 == 1 && o->broker && o->qos >= 0 && o->qos <= max_qos;
}

/* main()'s start for both: -1 to go on with *o, else the exit status (help printed, or usage
 * to stderr for bad options). */
static inline int bench_relay_args(int argc, char **argv, int max_qos, void (*usage)(FILE *),
                                   struct bench_relay_opts *o)
{
    if (bench_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    if (!bench_relay_parse(argc, argv, max_qos, o)) {
        usage(stderr);
        return 2;
    }
    return -1;
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
