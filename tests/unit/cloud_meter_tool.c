/*
 * Test helper for tests/integration/cloud_server.sh: prints a metering
 * batch of chained records, as wispd would send it.
 *
 *   cloud_meter_tool DEVICE FROM TO [--edit SEQ] [--time RFC3339] [--fn NAME]
 *
 * Records 1..TO are made deterministically (record n: billed_ms 3,
 * mem_limit_kb 16384, bytes_in 12, bytes_out 40, outcome "error" when n is
 * a multiple of 5, else "ok") and chained from seq 1, so any range of them
 * chains onto the others; FROM..TO are printed. --edit SEQ changes that
 * record's billed_ms after hashing (an edited record).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meter.h"

static int usage(void)
{
    (void)fprintf(stderr, "usage: cloud_meter_tool DEVICE FROM TO [--edit SEQ] [--time T] "
                          "[--fn NAME]\n");
    return 2;
}

static void print_record(const struct wisp_meter_fields *f, const unsigned char prev[32],
                         const unsigned char hash[32], uint64_t billed, bool first)
{
    char ph[65], hh[65];
    wisp_meter_hex(prev, ph);
    wisp_meter_hex(hash, hh);
    (void)printf("%s{\"seq\":%" PRIu64 ",\"fn\":\"%s\",\"version\":\"%s\",\"event_id\":\"%s\","
                 "\"time\":\"%s\",\"billed_ms\":%" PRIu64 ",\"duration_us\":%" PRIu64
                 ",\"mem_peak_bytes\":%" PRIu64 ",\"mem_limit_kb\":%" PRIu64
                 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
                 ",\"outcome\":\"%s\",\"cold\":%s,\"prev\":\"%s\",\"hash\":\"%s\"}",
                 first ? "" : ",", f->seq, f->fn, f->version, f->event_id, f->time, billed,
                 f->duration_us, f->mem_peak_bytes, f->mem_limit_kb, f->bytes_in, f->bytes_out,
                 f->outcome, f->cold ? "true" : "false", ph, hh);
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return usage();
    const char *device = argv[1];
    uint64_t from = strtoull(argv[2], NULL, 10), to = strtoull(argv[3], NULL, 10), edit = 0;
    const char *time = "2024-05-01T10:15:00Z", *fn = "door-watch";
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--edit") == 0)
            edit = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--time") == 0)
            time = argv[i + 1];
        else if (strcmp(argv[i], "--fn") == 0)
            fn = argv[i + 1];
        else
            return usage();
    }
    if (from < 1 || to < from)
        return usage();
    unsigned char prev[32] = {0}, hash[32];
    (void)printf("{\"device\":\"%s\",\"records\":[", device);
    for (uint64_t n = 1; n <= to; n++) {
        char ev[32];
        (void)snprintf(ev, sizeof(ev), "ev-%" PRIu64, n);
        struct wisp_meter_fields f = {
            .seq = n,
            .fn = fn,
            .version = "1.0.0",
            .event_id = ev,
            .time = time,
            .outcome = n % 5 == 0 ? "error" : "ok",
            .billed_ms = 3,
            .duration_us = 2140,
            .mem_peak_bytes = 90112,
            .mem_limit_kb = 16384,
            .bytes_in = 12,
            .bytes_out = 40,
            .cold = n == 1,
        };
        if (wisp_meter_chain(prev, &f, hash) != 0)
            return 1;
        if (n >= from)
            print_record(&f, prev, hash, n == edit ? f.billed_ms + 1 : f.billed_ms, n == from);
        memcpy(prev, hash, 32);
    }
    (void)printf("]}\n");
    return 0;
}
