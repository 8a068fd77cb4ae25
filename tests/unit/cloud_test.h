/* Shared helpers of the wisp-cloud unit tests (header only). */
#ifndef WISP_CLOUD_TEST_H
#define WISP_CLOUD_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cloud.h"
#include "testutil.h"

#define T0  1714557600000000000ULL /* 2024-05-01T10:00:00Z */
#define SEC 1000000000ULL

struct pubs {
    char topic[64][96];
    char payload[64][2048];
    int retain[64];
    int n;
};

static struct pubs g_pubs;

static void capture(void *ud, const char *topic, const void *payload, size_t len, int qos,
                    int retain)
{
    (void)ud;
    (void)qos;
    if (g_pubs.n >= 64)
        return;
    (void)snprintf(g_pubs.topic[g_pubs.n], sizeof(g_pubs.topic[0]), "%s", topic);
    (void)snprintf(g_pubs.payload[g_pubs.n], sizeof(g_pubs.payload[0]), "%.*s",
                   (int)(len < 2047 ? len : 2047), (const char *)payload);
    g_pubs.retain[g_pubs.n] = retain;
    g_pubs.n++;
}

/* The last payload published on topic, or NULL. */
static const char *last_pub(const char *topic)
{
    for (int i = g_pubs.n - 1; i >= 0; i--)
        if (strcmp(g_pubs.topic[i], topic) == 0)
            return g_pubs.payload[i];
    return NULL;
}

static int count_pubs(const char *topic)
{
    int n = 0;
    for (int i = 0; i < g_pubs.n; i++)
        n += strcmp(g_pubs.topic[i], topic) == 0;
    return n;
}

static struct cloud *open_cloud(const char *dir, const char *fleet_token)
{
    struct cloud_config cfg = {
        .data_dir = dir, .fleet_token = fleet_token, .publish = capture, .publish_ud = NULL};
    struct cloud *c = NULL;
    char err[512];
    int rc = cloud_create(&cfg, &c, err, sizeof(err));
    if (rc != 0)
        (void)fprintf(stderr, "cloud_create: %s\n", err);
    CHECK_INT_EQ(rc, 0);
    return c;
}

/* One message in its own batch at time now. */
static void msg(struct cloud *c, uint64_t now, const char *topic, const char *payload)
{
    CHECK_INT_EQ(cloud_batch_begin(c, now), 0);
    cloud_handle_message(c, topic, payload, strlen(payload), false);
    CHECK_INT_EQ(cloud_batch_end(c), 0);
}

static void hello(struct cloud *c, const char *id, const char *labels)
{
    char topic[128], body[512];
    (void)snprintf(topic, sizeof(topic), "wisp/v1/%s/hello", id);
    (void)snprintf(body, sizeof(body), "{\"device\":\"%s\",\"labels\":%s,\"wispd\":\"0.1.0\"}", id,
                   labels);
    msg(c, T0, topic, body);
}

#endif
