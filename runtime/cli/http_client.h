/*
 * A small HTTP/1.1 client for the wisp CLI talking to wisp-cloud: plain
 * http:// only, one request per connection (Connection: close), answers
 * with Content-Length, chunked or read-to-close bodies, bounded in size and
 * time.
 */
#ifndef WISP_HTTP_CLIENT_H
#define WISP_HTTP_CLIENT_H

#include <stddef.h>

struct wisp_http_response {
    int status;         /* 200, 404 ... */
    char *content_type; /* malloc'd, may be NULL */
    char *body;         /* malloc'd, NUL-terminated (not counted in len) */
    size_t len;
};

void wisp_http_response_fini(struct wisp_http_response *r);

/* Sends method path (with query) to base ("http://host[:port][/prefix]")
 * with an optional bearer token and body, and reads the answer into *out.
 * 0 when an HTTP answer arrived (whatever its status), else a negative
 * errno with err saying what failed and where ("cannot reach the control
 * plane at http://...: Connection refused"). timeout_ms bounds the whole
 * exchange. */
int wisp_http_request(const char *base, const char *method, const char *path, const char *token,
                      const char *content_type, const void *body, size_t body_len, int timeout_ms,
                      struct wisp_http_response *out, char *err, size_t errlen);

#endif
