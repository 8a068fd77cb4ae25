/*
 * The HTTP side (cloud_http.c): libmicrohttpd in its epoll mode, run from
 * the main loop (no thread of its own), so handlers share the loop thread
 * with MQTT and need no locks. Bearer token checked in constant time; body
 * limits enforced while reading.
 */
#ifndef WISP_CLOUD_HTTP_H
#define WISP_CLOUD_HTTP_H

#include <stdint.h>

#include "cloud.h"

struct cloud_http;

/* Listens on listen ("HOST:PORT", "[v6]:PORT"; port 0 picks one, written to
 * *port). 0 or a negative errno with the reason in err. */
int cloud_http_start(struct cloud *c, const char *where, const char *token, struct cloud_http **out,
                     unsigned *port, char *err, size_t errlen);
/* An fd that becomes readable when cloud_http_run has work. */
int cloud_http_fd(const struct cloud_http *h);
void cloud_http_run(struct cloud_http *h);
/* Milliseconds until cloud_http_run wants to run anyway, or -1. */
int cloud_http_timeout_ms(struct cloud_http *h);
void cloud_http_stop(struct cloud_http *h);

#endif
