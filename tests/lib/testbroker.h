/*
 * A private mosquitto for C integration tests: started on a free 127.0.0.1
 * port with a generated config in its own temp dir, waited for until it
 * accepts connections, stopped, restarted on the same port(s), and removed
 * with everything it wrote. The C twin of tests/lib/broker.sh.
 *
 *   struct wisp_testbroker b;
 *   if (wisp_testbroker_start(&b, NULL) != 0) ...      // b.uri = tcp://127.0.0.1:PORT
 *   ...
 *   wisp_testbroker_restart(&b);                        // same port, waits until up
 *   wisp_testbroker_cleanup(&b);                        // stops it, removes b.dir
 *
 * The broker is started with PR_SET_PDEATHSIG, so it dies with the test even
 * when the test crashes; start it from the main thread (the signal follows
 * the thread that forked).
 */
#ifndef WISP_TESTBROKER_H
#define WISP_TESTBROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct wisp_testbroker_opts {
    int port;               /* 0: pick a free one (retried if mosquitto loses it) */
    bool persistence;       /* keep sessions and retained messages across restarts */
    const char *tls_dir;    /* add a TLS listener that requires client certificates,
                               using tls_dir/{ca.crt,server.crt,server.key} */
    const char *extra_conf; /* appended to the generated mosquitto.conf */
};

struct wisp_testbroker {
    pid_t pid;        /* -1 while stopped */
    int port;         /* plain listener */
    int tls_port;     /* 0 without TLS */
    char dir[256];    /* temp dir: mosquitto.conf, mosquitto.log, db */
    char uri[64];     /* tcp://127.0.0.1:port */
    char tls_uri[64]; /* ssl://127.0.0.1:tls_port, or "" */
    char conf_path[300];
    char log_path[300];
};

/* Starts a broker (opts may be NULL) and waits up to 10 s until every
 * listener accepts connections. Returns 0 or a negative errno (the log's
 * tail is printed to stderr). */
int wisp_testbroker_start(struct wisp_testbroker *b, const struct wisp_testbroker_opts *opts);

/* SIGTERM (mosquitto saves its db when persistence is on), SIGKILL after
 * 5 s. With hard set, SIGKILL at once. 0 or a negative errno. */
int wisp_testbroker_stop(struct wisp_testbroker *b, bool hard);

/* Starts the stopped broker again on the same port(s) with the same config
 * and waits until it accepts connections. 0 or a negative errno. */
int wisp_testbroker_restart(struct wisp_testbroker *b);

/* Stops the broker if running and removes its temp dir. Safe to call twice
 * and on a broker whose start failed. */
void wisp_testbroker_cleanup(struct wisp_testbroker *b);

/* A port on 127.0.0.1 nothing listens on right now (bound to port 0, read
 * back, closed), for tests that start a broker there later. 0 on failure. */
int wisp_testbroker_free_port(void);

/* True when something accepts TCP connections on 127.0.0.1:port. */
bool wisp_testbroker_port_open(int port);

/* Makes a throwaway PKI in dir (created if needed): ca.crt/key, server.crt/key
 * for 127.0.0.1 and localhost, client.crt/key, using tls_make_certs from
 * tests/lib/broker.sh (openssl). 0 or a negative errno. */
int wisp_testbroker_make_certs(const char *dir);

/* A fresh temp dir (mkdtemp) named after `tag`, path into out. 0 or -errno. */
int wisp_testbroker_tmpdir(const char *tag, char *out, size_t cap);

/* Removes a directory tree (for dirs made by wisp_testbroker_tmpdir). */
void wisp_testbroker_rmtree(const char *dir);

#endif
