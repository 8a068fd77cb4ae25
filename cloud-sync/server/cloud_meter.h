/*
 * Metering (cloud_meter.c): batches of chained records from devices,
 * verified and counted once, into hourly aggregates per (device, function)
 * written in the same transaction as the device's chain cursor.
 */
#ifndef WISP_CLOUD_METER_H
#define WISP_CLOUD_METER_H

#include <stdint.h>

#include "cloud.h"

/* The value stored per (hour, device, function). */
struct cloud_meter_agg {
    uint64_t invocations, errors, billed_ms;
    uint64_t ms_kb; /* sum of billed_ms x mem_limit_kb: GB-s x 1000 x 1048576, exact */
    uint64_t bytes_in, bytes_out;
};

/* A metering batch from dev (inside a batch): verifies, stores, queues the
 * ack on wisp/v1/<device>/meter/ack. */
void cloud_meter_ingest(struct cloud *c, struct cloud_device *dev, const char *payload, size_t len);
/* On every (re)connect: an ack of what is stored to each device that has
 * sent records, so a device whose batch went out while wisp-cloud was away
 * sends again now rather than after its resend timeout. */
void cloud_meter_ack_all(struct cloud *c);

struct cloud_meter_query {
    bool by_device;       /* else by function */
    bool per_day;         /* else per hour */
    uint64_t since;       /* realtime ns, inclusive; 0: from the start */
    uint64_t until;       /* exclusive; 0: no end */
    const char *device;   /* only this device (may be NULL) */
    const char *function; /* only this function (may be NULL) */
};

struct cloud_meter_row {
    uint32_t period_hour; /* hours since the epoch of the period's start */
    char *name;           /* device or function */
    struct cloud_meter_agg agg;
};

/* Aggregates rows ordered by period then name. *rows is freed with
 * cloud_meter_rows_free. 0 or a negative errno. */
int cloud_meter_query(struct cloud *c, const struct cloud_meter_query *q,
                      struct cloud_meter_row **rows, size_t *n);
void cloud_meter_rows_free(struct cloud_meter_row *rows, size_t n);
/* Rows as {"rows": [...]} or as CSV text with a header row (malloc'd). */
cJSON *cloud_meter_rows_json(const struct cloud_meter_query *q, const struct cloud_meter_row *rows,
                             size_t n);
char *cloud_meter_rows_csv(const struct cloud_meter_query *q, const struct cloud_meter_row *rows,
                           size_t n);

#endif
