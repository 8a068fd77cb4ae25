/*
 * The broker subscriptions wispd needs: the MQTT trigger filters of every
 * function, merged. Identical filters are sent once at the highest QoS any
 * function asked for, and a filter covered by another (a/b by a/#) is left
 * out so that the broker does not deliver one message twice. Shared
 * subscriptions ($share/<group>/...) only stand in for others of their
 * group.
 */
#ifndef WISP_SUBS_H
#define WISP_SUBS_H

#include <stdbool.h>
#include <stddef.h>

#include "fnspec.h"

struct wisp_subs {
    char **filters;
    int *qos;
    size_t n, cap;
    bool durable; /* wisp_subs_add_spec takes the triggers of this durability */
};

void wisp_subs_init(struct wisp_subs *s);
void wisp_subs_fini(struct wisp_subs *s);
/* Adds a filter (copied); on a duplicate keeps the higher QoS. 0 or -ENOMEM. */
int wisp_subs_add(struct wisp_subs *s, const char *filter, int qos);
/* Adds the mqtt triggers of spec whose durability is s->durable; a
 * callback for wisp_pool_foreach. */
void wisp_subs_add_spec(void *ud, const struct wisp_fnspec *spec);
/* Drops covered filters, raising the covering filter's QoS where needed. */
void wisp_subs_reduce(struct wisp_subs *s);

#endif
