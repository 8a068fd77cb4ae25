#include "engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

extern const struct wisp_engine_ops wisp_engine_native; /* engine_native.c */

static const struct wisp_engine_ops *const engines[] = {
    &wisp_engine_lua,
    &wisp_engine_native,
};

const struct wisp_engine_ops *wisp_engine_find(const char *name)
{
    for (size_t i = 0; i < WISP_ARRAY_LEN(engines); i++) {
        if (strcmp(engines[i]->name, name) == 0)
            return engines[i];
    }
    return NULL;
}

const struct wisp_engine_ops *wisp_engine_for(enum wisp_runtime rt)
{
    switch (rt) {
    case WISP_RUNTIME_LUA:
        return &wisp_engine_lua;
    case WISP_RUNTIME_NATIVE:
        return wisp_engine_find("native");
    }
    return NULL;
}

const char *wisp_outcome_name(enum wisp_outcome o)
{
    switch (o) {
    case WISP_OUTCOME_OK:
        return "ok";
    case WISP_OUTCOME_ERROR:
        return "error";
    case WISP_OUTCOME_TIMEOUT:
        return "timeout";
    case WISP_OUTCOME_MEMORY:
        return "memory";
    case WISP_OUTCOME_CRASH:
        return "crash";
    case WISP_OUTCOME_REJECTED:
        return "rejected";
    }
    return "unknown";
}

void wisp_result_drop_publishes(struct wisp_result *r)
{
    enum wisp_outcome o = r->outcome;
    char *error = r->error;
    r->error = NULL;
    wisp_result_fini(r);
    r->outcome = o;
    r->error = error;
}

void wisp_result_init(struct wisp_result *r)
{
    memset(r, 0, sizeof(*r));
}

void wisp_result_fini(struct wisp_result *r)
{
    for (size_t i = 0; i < r->n_pubs && !r->borrowed; i++) {
        free(r->pubs[i].topic);
        free(r->pubs[i].payload);
    }
    free(r->pubs);
    free(r->error);
    free(r->reads);
    free(r->writes);
    wisp_result_init(r);
}

int wisp_result_add_publish(struct wisp_result *r, const char *topic, const char *payload,
                            size_t payload_len, int qos, int retain)
{
    size_t tlen = strlen(topic);
    if (r->n_pubs >= WISP_MAX_PUBLISHES_PER_INVOCATION ||
        r->pub_bytes + tlen + payload_len > WISP_MAX_PUBLISH_BYTES)
        return -E2BIG;
    if (r->n_pubs == r->cap_pubs) {
        size_t ncap = r->cap_pubs ? r->cap_pubs * 2 : 4;
        struct wisp_publish *np = realloc(r->pubs, ncap * sizeof(*np));
        if (!np)
            return -ENOMEM;
        r->pubs = np;
        r->cap_pubs = ncap;
    }
    struct wisp_publish *p = &r->pubs[r->n_pubs];
    p->topic = wisp_strndup(topic, tlen);
    p->payload = wisp_strndup(payload, payload_len);
    if (!p->topic || !p->payload) {
        free(p->topic);
        free(p->payload);
        return -ENOMEM;
    }
    p->payload_len = payload_len;
    p->qos = qos;
    p->retain = retain;
    r->n_pubs++;
    r->pub_bytes += tlen + payload_len;
    return 0;
}

void wisp_result_set_error(struct wisp_result *r, enum wisp_outcome o, const char *msg)
{
    free(r->error);
    r->error = msg ? wisp_strndup(msg, strlen(msg)) : NULL;
    r->outcome = o;
}
