/* MQTT topic names and filters (MQTT 3.1.1 section 4.7, MQTT 5 section 4.7). */
#ifndef WISP_TOPIC_H
#define WISP_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

/* A topic name that may be published to: 1..65535 bytes of UTF-8, no NUL,
 * no '+' or '#'. Returns true or sets *why to a static reason. */
bool wisp_topic_name_valid(const char *topic, size_t len, const char **why);

/* A subscription filter: 1..65535 bytes of UTF-8, no NUL; '+' occupies a whole
 * level; '#' occupies the last level only. Shared subscriptions
 * ("$share/group/filter") are accepted. Returns true or sets *why. */
bool wisp_topic_filter_valid(const char *filter, size_t len, const char **why);

/* Does the topic name match the (valid) filter? Topics starting with '$' are
 * not matched by filters whose first level is '+' or '#'. A "$share/g/"
 * prefix on the filter is ignored for matching. */
bool wisp_topic_matches(const char *filter, const char *topic, size_t topic_len);

/* Does filter a match every topic that filter b matches (so subscribing to
 * a alone receives everything b would)? */
bool wisp_topic_filter_covers(const char *a, const char *b);

#endif
