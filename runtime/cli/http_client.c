/* The wisp CLI's HTTP client (http_client.h). */
#include "http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

enum { MAX_RESPONSE = 256 << 20, HOST_MAX = 256 };

struct url {
    char host[HOST_MAX];
    char port[8];
    const char *prefix; /* path prefix inside base, "" when none */
};

void wisp_http_response_fini(struct wisp_http_response *r)
{
    free(r->content_type);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static int parse_base(const char *base, struct url *u, char *err, size_t errlen)
{
    if (strncmp(base, "https://", 8) == 0)
        return wisp_errf(err, errlen, -EPROTONOSUPPORT,
                         "%s: https is not supported; use http:// (on loopback or behind a "
                         "TLS-terminating proxy on the same host)",
                         base);
    if (strncmp(base, "http://", 7) != 0)
        return wisp_errf(err, errlen, -EINVAL, "%s: the control plane URL must start with http://",
                         base);
    const char *h = base + 7, *end;
    size_t hl;
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end)
            return wisp_errf(err, errlen, -EINVAL, "%s: unclosed [ in the host", base);
        hl = (size_t)(end - h - 1);
        h++;
        end++;
    } else {
        end = h + strcspn(h, ":/");
        hl = (size_t)(end - h);
    }
    if (hl == 0 || hl >= sizeof(u->host))
        return wisp_errf(err, errlen, -EINVAL, "%s: missing or overlong host", base);
    memcpy(u->host, h, hl);
    u->host[hl] = '\0';
    (void)snprintf(u->port, sizeof(u->port), "80");
    if (*end == ':') {
        char *pend;
        long p = strtol(end + 1, &pend, 10);
        if (pend == end + 1 || p < 1 || p > 65535 || (*pend && *pend != '/'))
            return wisp_errf(err, errlen, -EINVAL, "%s: bad port", base);
        (void)snprintf(u->port, sizeof(u->port), "%ld", p);
        end = pend;
    }
    u->prefix = end;
    if (*end && *end != '/')
        return wisp_errf(err, errlen, -EINVAL, "%s: unexpected text after the host", base);
    return 0;
}

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = wisp_mono_ns();
    return now >= deadline ? 0 : (int)((deadline - now) / 1000000u) + 1;
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int ms = remaining_ms(deadline);
        if (ms == 0)
            return -ETIMEDOUT;
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static int connect_to(const struct url *u, uint64_t deadline, int *out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(u->host, u->port, &hints, &ai);
    if (g != 0)
        return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    int rc = -ECONNREFUSED;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            rc = -errno;
            close(fd);
            continue;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        rc = wait_fd(fd, POLLOUT, deadline);
        if (!rc && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
            rc = -errno;
        else if (!rc && soerr)
            rc = -soerr;
        if (!rc) {
            *out = fd;
            break;
        }
        close(fd);
    }
    freeaddrinfo(ai);
    return rc;
}

static int send_all(int fd, const void *p, size_t n, uint64_t deadline)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w > 0) {
            c += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        int rc = wait_fd(fd, POLLOUT, deadline);
        if (rc)
            return rc;
    }
    return 0;
}

static int recv_all(int fd, char **buf, size_t *len, uint64_t deadline)
{
    size_t cap = 16384;
    char *b = malloc(cap + 1);
    if (!b)
        return -ENOMEM;
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_RESPONSE) {
                free(b);
                return -EFBIG;
            }
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                return -ENOMEM;
            }
            b = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, b + n, cap - n, 0);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        int rc = errno == EAGAIN || errno == EINTR ? wait_fd(fd, POLLIN, deadline) : -errno;
        if (rc) {
            free(b);
            return rc;
        }
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

/* The value of header name in the header block [h, end), or NULL. */
static const char *header(const char *h, const char *end, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *line = h; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = eol + 1;
    }
    return NULL;
}

/* Decodes a chunked body in place; false when malformed. */
static bool dechunk(char *p, size_t n, size_t *out)
{
    size_t r = 0, w = 0;
    for (;;) {
        char *eol = memchr(p + r, '\n', n - r);
        if (!eol)
            return false;
        char *num_end;
        unsigned long long sz = strtoull(p + r, &num_end, 16);
        if (num_end == p + r)
            return false;
        r = (size_t)(eol - p) + 1;
        if (sz == 0) {
            *out = w;
            return true;
        }
        if (sz > n - r)
            return false;
        memmove(p + w, p + r, (size_t)sz);
        w += (size_t)sz;
        r += (size_t)sz;
        if (r < n && p[r] == '\r')
            r++;
        if (r < n && p[r] == '\n')
            r++;
    }
}

static int parse_response(char *raw, size_t n, struct wisp_http_response *out)
{
    char *hend = strstr(raw, "\r\n\r\n");
    if (strncmp(raw, "HTTP/1.", 7) != 0 || n < 12 || !hend)
        return -EPROTO;
    out->status = (int)strtol(raw + 9, NULL, 10);
    if (out->status < 100 || out->status > 599)
        return -EPROTO;
    char *body = hend + 4;
    size_t blen = n - (size_t)(body - raw), vl = 0;
    const char *te = header(raw, hend, "Transfer-Encoding", &vl);
    if (te && vl == 7 && strncasecmp(te, "chunked", 7) == 0) {
        if (!dechunk(body, blen, &blen))
            return -EPROTO;
    } else {
        const char *cl = header(raw, hend, "Content-Length", &vl);
        if (cl) {
            unsigned long long want = strtoull(cl, NULL, 10);
            if (want > blen)
                return -EPROTO; /* cut off */
            blen = (size_t)want;
        }
    }
    const char *ct = header(raw, hend, "Content-Type", &vl);
    if (ct && !(out->content_type = wisp_strndup(ct, vl)))
        return -ENOMEM;
    out->body = malloc(blen + 1);
    if (!out->body)
        return -ENOMEM;
    memcpy(out->body, body, blen);
    out->body[blen] = '\0';
    out->len = blen;
    return 0;
}

static int exchange(int fd, const struct url *u, const char *method, const char *path,
                    const char *token, const char *ctype, const void *body, size_t blen,
                    uint64_t deadline, struct wisp_http_response *out)
{
    char head[2048];
    int hn = snprintf(
        head, sizeof(head),
        "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n"
        "Accept: application/json, text/csv\r\nUser-Agent: wisp/" WISP_VERSION "\r\n%s%s%s%s%s%s"
        "Content-Length: %zu\r\n\r\n",
        method, strcmp(u->prefix, "/") == 0 ? "" : u->prefix, path, u->host, u->port,
        token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
        ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "", blen);
    if (hn < 0 || (size_t)hn >= sizeof(head))
        return -ENAMETOOLONG;
    int rc = send_all(fd, head, (size_t)hn, deadline);
    if (!rc && blen)
        rc = send_all(fd, body, blen, deadline);
    char *raw = NULL;
    size_t n = 0;
    if (!rc)
        rc = recv_all(fd, &raw, &n, deadline);
    if (!rc)
        rc = parse_response(raw, n, out);
    free(raw);
    return rc;
}

int wisp_http_request(const char *base, const char *method, const char *path, const char *token,
                      const char *content_type, const void *body, size_t body_len, int timeout_ms,
                      struct wisp_http_response *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    struct url u = {.prefix = ""};
    int rc = parse_base(base, &u, err, errlen);
    if (rc)
        return rc;
    if (token && strpbrk(token, "\r\n"))
        return wisp_errf(err, errlen, -EINVAL, "the token contains a line break");
    uint64_t deadline = wisp_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    int fd = -1;
    rc = connect_to(&u, deadline, &fd);
    if (rc)
        return wisp_errf(err, errlen, rc, "cannot reach the control plane at %s: %s", base,
                         rc == -EHOSTUNREACH ? "unknown host" : strerror(-rc));
    rc = exchange(fd, &u, method, path, token, content_type, body, body_len, deadline, out);
    close(fd);
    if (rc) {
        wisp_http_response_fini(out);
        return wisp_errf(err, errlen, rc, "%s %s at %s: %s", method, path, base,
                         rc == -EPROTO ? "not an HTTP answer (or cut off)" : strerror(-rc));
    }
    return 0;
}
