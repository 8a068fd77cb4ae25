#include "subs.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "topic.h"
#include "util.h"

void wisp_subs_init(struct wisp_subs *s)
{
    memset(s, 0, sizeof(*s));
}

void wisp_subs_fini(struct wisp_subs *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->filters[i]);
    free(s->filters);
    free(s->qos);
    wisp_subs_init(s);
}

int wisp_subs_add(struct wisp_subs *s, const char *filter, int qos)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->filters[i], filter) == 0) {
            if (qos > s->qos[i])
                s->qos[i] = qos;
            return 0;
        }
    }
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        char **nf = realloc(s->filters, ncap * sizeof(*nf));
        if (!nf)
            return -ENOMEM;
        s->filters = nf;
        int *nq = realloc(s->qos, ncap * sizeof(*nq));
        if (!nq)
            return -ENOMEM;
        s->qos = nq;
        s->cap = ncap;
    }
    char *f = wisp_strndup(filter, strlen(filter));
    if (!f)
        return -ENOMEM;
    s->filters[s->n] = f;
    s->qos[s->n] = qos;
    s->n++;
    return 0;
}

void wisp_subs_add_spec(void *ud, const struct wisp_fnspec *spec)
{
    struct wisp_subs *s = ud;
    for (size_t i = 0; i < spec->n_triggers; i++) {
        const struct wisp_trigger *t = &spec->triggers[i];
        if (t->kind == &wisp_trigger_mqtt && t->durable == s->durable)
            (void)wisp_subs_add(s, t->topic, t->qos);
    }
}

/* Length of a "$share/<group>/" prefix, or 0 for a plain filter. */
static size_t share_prefix(const char *f)
{
    if (strncmp(f, "$share/", 7) != 0)
        return 0;
    const char *slash = strchr(f + 7, '/');
    return slash ? (size_t)(slash - f) + 1 : 0;
}

/* A shared subscription delivers only this gateway's share of its topics,
 * so it may stand in for another subscription of the same group only: a
 * plain filter never covers a shared one, nor the other way round. */
static bool same_delivery(const char *a, const char *b)
{
    size_t la = share_prefix(a), lb = share_prefix(b);
    return la == lb && strncmp(a, b, la) == 0;
}

void wisp_subs_reduce(struct wisp_subs *s)
{
    size_t i = 0;
    while (i < s->n) {
        size_t cover = s->n;
        for (size_t j = 0; j < s->n && cover == s->n; j++) {
            /* Filters are distinct, so at most one of a mutual pair exists. */
            if (j != i && same_delivery(s->filters[j], s->filters[i]) &&
                wisp_topic_filter_covers(s->filters[j], s->filters[i]))
                cover = j;
        }
        if (cover == s->n) {
            i++;
            continue;
        }
        if (s->qos[i] > s->qos[cover])
            s->qos[cover] = s->qos[i];
        free(s->filters[i]);
        s->filters[i] = s->filters[s->n - 1];
        s->qos[i] = s->qos[s->n - 1];
        s->n--;
    }
}
