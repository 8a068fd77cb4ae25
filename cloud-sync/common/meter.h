/*
 * Metering records and their hash chain, shared by wispd's store (which
 * writes and chains them), the device agent (which sends them) and the
 * control plane (which verifies and counts them). No dependency but
 * mbedcrypto, so the store can use it.
 *
 * hash(n) = SHA-256("wisp-meter/1\0" || hash(n-1) || seq as u64 BE ||
 *                   for fn, version, event_id, time, outcome: u32 BE length || bytes ||
 *                   billed_ms, duration_us, mem_peak_bytes, mem_limit_kb, bytes_in,
 *                   bytes_out as u64 BE || cold as one byte 0/1)
 * with hash(0) = 32 zero bytes. Any change to a record, a removed record
 * or records out of order change every later hash.
 */
#ifndef WISP_METER_H
#define WISP_METER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WISP_METER_HASH_LEN 32

struct wisp_meter_fields {
    uint64_t seq;
    const char *fn, *version, *event_id, *time, *outcome; /* NULL is taken as "" */
    uint64_t billed_ms, duration_us, mem_peak_bytes, mem_limit_kb, bytes_in, bytes_out;
    bool cold;
};

/* out = the record's chain hash given the previous record's. 0, or a
 * negative errno when hashing failed. */
int wisp_meter_chain(const unsigned char prev[WISP_METER_HASH_LEN],
                     const struct wisp_meter_fields *f, unsigned char out[WISP_METER_HASH_LEN]);

/* 64 lowercase hex digits + NUL. */
void wisp_meter_hex(const unsigned char h[WISP_METER_HASH_LEN],
                    char out[2 * WISP_METER_HASH_LEN + 1]);
/* Parses 64 hex digits (either case); false when s is anything else. */
bool wisp_meter_unhex(const char *s, unsigned char out[WISP_METER_HASH_LEN]);

#endif
