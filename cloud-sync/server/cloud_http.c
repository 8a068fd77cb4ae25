/* libmicrohttpd glue: listening, authentication, bodies, answers. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#define WISP_LOG_MODULE "cloud"
#include "cloud.h"
#include "cloud_api.h"
#include "cloud_http.h"
#include "log.h"
#include "util.h"

struct cloud_http {
    struct cloud *c;
    struct MHD_Daemon *d;
    int listen_fd;
    char *token;
};

struct req {
    char *body;
    size_t len, cap;
    struct cloud_upload *upload;
    int fail_status; /* a 4xx decided while reading the body */
    char fail[600];
};

/* Constant-time check of "Bearer <token>". */
static bool auth_ok(const char *want, const char *header)
{
    static const char prefix[] = "Bearer ";
    if (!header || strncmp(header, prefix, sizeof(prefix) - 1) != 0)
        return false;
    return cloud_token_ok(want, header + sizeof(prefix) - 1);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct cloud_api_resp *r)
{
    if (!r->body) {
        r->status = 500;
        r->body = strdup("{\"error\":\"out of memory\"}");
        r->len = r->body ? strlen(r->body) : 0;
        r->content_type = "application/json";
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(r->body);
        return MHD_NO;
    }
    r->body = NULL;
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                  r->content_type ? r->content_type : "application/json");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, int status, const char *msg)
{
    struct cloud_api_resp r = {0};
    cloud_api_error(&r, status, "%s", msg);
    return send_resp(conn, &r);
}

static const char *query_arg(void *ud, const char *key)
{
    return MHD_lookup_connection_value(ud, MHD_GET_ARGUMENT_KIND, key);
}

static bool is_upload(const char *method, const char *url)
{
    return strcmp(method, "POST") == 0 && strcmp(url, "/v1/bundles") == 0;
}

/* First call for a request: token and declared length; may answer at once. */
static enum MHD_Result first_call(struct cloud_http *h, struct MHD_Connection *conn,
                                  const char *url, const char *method, void **con_cls)
{
    if (!cloud_api_public(method, url) &&
        !auth_ok(h->token, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization")))
        return send_error(conn, 401, "Authorization: a valid \"Bearer <token>\" is required");
    uint64_t limit = is_upload(method, url) ? CLOUD_UPLOAD_BODY : CLOUD_API_MAX_JSON;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    int64_t declared;
    if (cl && wisp_parse_i64(cl, 0, INT64_MAX, &declared) == 0 && (uint64_t)declared > limit) {
        char msg[128];
        (void)snprintf(msg, sizeof(msg), "body: %lld bytes is over the %llu-byte limit",
                       (long long)declared, (unsigned long long)limit);
        return send_error(conn, 413, msg);
    }
    struct req *rq = calloc(1, sizeof(*rq));
    if (!rq)
        return MHD_NO;
    if (is_upload(method, url)) {
        char err[512];
        if (cloud_upload_begin(h->c, &rq->upload, err, sizeof(err)) != 0) {
            rq->fail_status = 500;
            (void)snprintf(rq->fail, sizeof(rq->fail), "%s", err);
        }
    }
    *con_cls = rq;
    return MHD_YES;
}

/* Takes a piece of the body. */
static void take_body(struct req *rq, const char *data, size_t n)
{
    if (rq->fail_status)
        return;
    if (rq->upload) {
        char err[512];
        int rc = cloud_upload_feed(rq->upload, data, n, err, sizeof(err));
        if (rc != 0) {
            rq->fail_status = rc == -EFBIG ? 413 : rc == -EINVAL ? 400 : 500;
            (void)snprintf(rq->fail, sizeof(rq->fail), "%s", err);
        }
        return;
    }
    if (rq->len + n > CLOUD_API_MAX_JSON) {
        rq->fail_status = 413;
        (void)snprintf(rq->fail, sizeof(rq->fail), "body: over the %u-byte limit",
                       CLOUD_API_MAX_JSON);
        return;
    }
    if (rq->len + n + 1 > rq->cap) {
        size_t cap = rq->cap ? rq->cap : 4096;
        while (cap < rq->len + n + 1)
            cap *= 2;
        char *b = realloc(rq->body, cap);
        if (!b) {
            rq->fail_status = 500;
            (void)snprintf(rq->fail, sizeof(rq->fail), "out of memory reading the body");
            return;
        }
        rq->body = b;
        rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
    rq->body[rq->len] = '\0';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct cloud_http *h = cls;
    struct req *rq = *con_cls;
    if (!rq)
        return first_call(h, conn, url, method, con_cls);
    if (*upload_data_size) {
        take_body(rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
        /* Answering now stops the reading of a body that is too large. */
        if (rq->fail_status == 413)
            return send_error(conn, rq->fail_status, rq->fail);
        return MHD_YES;
    }
    if (rq->fail_status)
        return send_error(conn, rq->fail_status, rq->fail);
    struct cloud_api_req areq = {
        .method = method,
        .path = url,
        .query = query_arg,
        .query_ud = conn,
        .body = rq->body,
        .body_len = rq->len,
        .upload = rq->upload,
    };
    struct cloud_api_resp resp = {0};
    cloud_api_handle(h->c, &areq, &resp);
    log_debug("%s %s -> %d", method, url, resp.status);
    return send_resp(conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct req *rq = *con_cls;
    if (!rq)
        return;
    cloud_upload_free(rq->upload);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

/* "host:port" or "[v6]:port" into host and port text. */
static int split_listen(const char *where, char *host, size_t hcap, const char **port)
{
    const char *colon = strrchr(where, ':');
    if (!colon || !colon[1])
        return -EINVAL;
    const char *h = where;
    size_t hl = (size_t)(colon - where);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hcap)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = colon + 1;
    return 0;
}

static int open_listener(const char *where, unsigned *port, char *err, size_t errlen)
{
    char host[256];
    const char *portstr;
    int64_t pnum;
    if (split_listen(where, host, sizeof(host), &portstr) != 0 ||
        wisp_parse_i64(portstr, 0, 65535, &pnum) != 0)
        return wisp_errf(err, errlen, -EINVAL, "--listen %s: expected HOST:PORT (port 0..65535)",
                         where);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int grc = getaddrinfo(host, portstr, &hints, &ai);
    if (grc != 0)
        return wisp_errf(err, errlen, -EINVAL, "--listen %s: cannot resolve %s: %s", where, host,
                         gai_strerror(grc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    int rc = fd < 0 ? -errno : 0;
    if (rc == 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (rc == 0 && (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0))
        rc = -errno;
    freeaddrinfo(ai);
    if (rc != 0) {
        if (fd >= 0)
            (void)close(fd);
        return wisp_errf(err, errlen, rc, "--listen %s: cannot listen: %s", where, strerror(-rc));
    }
    struct sockaddr_storage ss = {0};
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        struct sockaddr_in6 s6 = {0};
        struct sockaddr_in s4 = {0};
        if (ss.ss_family == AF_INET6) {
            memcpy(&s6, &ss, sizeof(s6));
            *port = ntohs(s6.sin6_port);
        } else {
            memcpy(&s4, &ss, sizeof(s4));
            *port = ntohs(s4.sin_port);
        }
    }
    return fd;
}

int cloud_http_start(struct cloud *c, const char *where, const char *token, struct cloud_http **out,
                     unsigned *port, char *err, size_t errlen)
{
    struct cloud_http *h = calloc(1, sizeof(*h));
    if (!h || !(h->token = strdup(token))) {
        free(h);
        return wisp_errf(err, errlen, -ENOMEM, "out of memory");
    }
    h->c = c;
    h->listen_fd = open_listener(where, port, err, errlen);
    if (h->listen_fd < 0) {
        int rc = h->listen_fd;
        free(h->token);
        free(h);
        return rc;
    }
    h->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_LISTEN_SOCKET, h->listen_fd, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, h, MHD_OPTION_CONNECTION_TIMEOUT, 60u,
                            MHD_OPTION_CONNECTION_LIMIT, 1000u, MHD_OPTION_END);
    if (!h->d) {
        (void)close(h->listen_fd);
        free(h->token);
        free(h);
        return wisp_errf(err, errlen, -EIO, "--listen %s: libmicrohttpd would not start", where);
    }
    *out = h;
    return 0;
}

int cloud_http_fd(const struct cloud_http *h)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    return info ? info->epoll_fd : -1;
}

void cloud_http_run(struct cloud_http *h)
{
    (void)MHD_run(h->d);
}

int cloud_http_timeout_ms(struct cloud_http *h)
{
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(h->d, &ms) != MHD_YES)
        return -1;
    return ms > 60000 ? 60000 : (int)ms;
}

void cloud_http_stop(struct cloud_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    (void)close(h->listen_fd);
    free(h->token);
    free(h);
}
