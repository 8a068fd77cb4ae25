/*
 * The control plane HTTP API (cloud_api.c) without the HTTP: a request
 * (method, path, query, body) in, a status and body out. cloud_http.c
 * feeds it from libmicrohttpd; the unit tests call it directly.
 */
#ifndef WISP_CLOUD_API_H
#define WISP_CLOUD_API_H

#include <stddef.h>

#include "cloud.h"
#include "cloud_bundle.h"

#define CLOUD_API_MAX_JSON (1u << 20) /* bytes of a JSON request body */

struct cloud_api_req {
    const char *method;
    const char *path; /* "/v1/devices/gw-1", without the query */
    /* Query argument by name (NULL: absent). */
    const char *(*query)(void *ud, const char *key);
    void *query_ud;
    const char *body; /* JSON bodies */
    size_t body_len;
    struct cloud_upload *upload; /* POST /v1/bundles: the streamed body */
};

struct cloud_api_resp {
    int status;
    char *body; /* malloc'd */
    size_t len;
    const char *content_type;
};

/* Answers one authenticated request; resp->body is the caller's to free. */
void cloud_api_handle(struct cloud *c, const struct cloud_api_req *req,
                      struct cloud_api_resp *resp);

/* Sets resp to {"error": msg} with status. */
void cloud_api_error(struct cloud_api_resp *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* True when the request needs no token (GET /v1/health). */
bool cloud_api_public(const char *method, const char *path);

#endif
