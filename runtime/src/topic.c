/*
 * MQTT topic names and filters. Both are UTF-8 strings split into levels by
 * '/'; levels may be empty. Filters add '+' (exactly one level) and '#' (this
 * level and everything below it, including the parent level itself).
 */
#include "topic.h"

#include <string.h>

#include "util.h"

#define TOPIC_MAX_LEN    65535u
#define SHARE_PREFIX     "$share/"
#define SHARE_PREFIX_LEN (sizeof(SHARE_PREFIX) - 1)

static bool fail(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return false;
}

static bool common_valid(const char *s, size_t len, const char **why)
{
    if (!s || len == 0)
        return fail(why, "must not be empty");
    if (len > TOPIC_MAX_LEN)
        return fail(why, "must be at most 65535 bytes");
    if (memchr(s, '\0', len))
        return fail(why, "must not contain NUL bytes");
    if (!wisp_utf8_valid(s, len))
        return fail(why, "must be valid UTF-8");
    return true;
}

bool wisp_topic_name_valid(const char *topic, size_t len, const char **why)
{
    if (!common_valid(topic, len, why))
        return false;
    if (memchr(topic, '+', len) || memchr(topic, '#', len))
        return fail(why, "wildcards '+' and '#' are only allowed in subscription filters");
    return true;
}

/* Checks the wildcard placement of a plain (non-shared) filter. */
static bool levels_valid(const char *f, size_t len, const char **why)
{
    for (size_t i = 0; i < len; i++) {
        bool level_start = i == 0 || f[i - 1] == '/';
        bool level_end = i + 1 == len || f[i + 1] == '/';
        if (f[i] == '+' && !(level_start && level_end))
            return fail(why, "'+' must occupy a whole level, as in \"a/+/b\"");
        if (f[i] == '#' && !(level_start && i + 1 == len))
            return fail(why, "'#' must be the whole last level, as in \"a/#\"");
    }
    return true;
}

bool wisp_topic_filter_valid(const char *filter, size_t len, const char **why)
{
    if (!common_valid(filter, len, why))
        return false;
    if (len >= SHARE_PREFIX_LEN && memcmp(filter, SHARE_PREFIX, SHARE_PREFIX_LEN) == 0) {
        /* MQTT 5 4.8.2: "$share/{ShareName}/{filter}", ShareName non-empty
         * and free of '/', '+' and '#'. */
        const char *group = filter + SHARE_PREFIX_LEN;
        size_t rest = len - SHARE_PREFIX_LEN;
        const char *slash = memchr(group, '/', rest);
        if (!slash || slash == group)
            return fail(why, "a shared subscription must look like \"$share/<group>/<filter>\"");
        size_t glen = (size_t)(slash - group);
        if (memchr(group, '+', glen) || memchr(group, '#', glen))
            return fail(why, "a shared subscription group must not contain '+' or '#'");
        filter = slash + 1;
        len = rest - glen - 1;
        if (len == 0)
            return fail(why, "a shared subscription needs a filter after the group");
    }
    return levels_valid(filter, len, why);
}

/* Skips a "$share/<group>/" prefix; the broker hands each message of the
 * group to one member, but which messages qualify depends on the rest. */
static const char *strip_share(const char *filter)
{
    if (strncmp(filter, SHARE_PREFIX, SHARE_PREFIX_LEN) != 0)
        return filter;
    const char *slash = strchr(filter + SHARE_PREFIX_LEN, '/');
    return slash ? slash + 1 : NULL;
}

static bool is_wild_first(const char *f)
{
    return (f[0] == '+' || f[0] == '#') && (f[1] == '\0' || f[1] == '/');
}

bool wisp_topic_matches(const char *filter, const char *topic, size_t topic_len)
{
    if (!filter || !topic || topic_len == 0)
        return false;
    const char *f = strip_share(filter);
    if (!f || *f == '\0')
        return false;
    /* MQTT 4.7.2: topics beginning with '$' are the server's; a wildcard in
     * the first level must not match them. */
    if (topic[0] == '$' && is_wild_first(f))
        return false;
    size_t t = 0;
    for (;;) {
        if (f[0] == '#')
            return true;
        size_t flen = strcspn(f, "/");
        const char *tslash = memchr(topic + t, '/', topic_len - t);
        size_t tend = tslash ? (size_t)(tslash - topic) : topic_len;
        bool plus = flen == 1 && f[0] == '+';
        if (!plus && (flen != tend - t || memcmp(f, topic + t, flen) != 0))
            return false;
        bool f_done = f[flen] == '\0', t_done = tend == topic_len;
        if (f_done || t_done)
            /* "a/#" also matches "a": the '#' stands for zero levels too. */
            return f_done ? t_done : strcmp(f + flen, "/#") == 0;
        f += flen + 1;
        t = tend + 1;
    }
}

/* Length of the level that starts at s. */
static size_t level_len(const char *s)
{
    return strcspn(s, "/");
}

bool wisp_topic_filter_covers(const char *a, const char *b)
{
    if (!a || !b)
        return false;
    a = strip_share(a);
    b = strip_share(b);
    if (!a || !b || !*a || !*b)
        return false;
    /* b may reach '$' topics only through a literal first level; a wildcard
     * first level in a cannot follow it there. */
    if (is_wild_first(a) && b[0] == '$')
        return false;
    bool first = true;
    for (;;) {
        size_t alen = level_len(a), blen = level_len(b);
        bool a_hash = alen == 1 && a[0] == '#', a_plus = alen == 1 && a[0] == '+';
        bool b_hash = blen == 1 && b[0] == '#', b_plus = blen == 1 && b[0] == '+';
        if (a_hash)
            return true;
        if (b_hash) {
            /* At the first level "#" means "one or more levels", which
             * "+/#" also matches; deeper, "#" includes the parent level. */
            return first && a_plus && strcmp(a + 1, "/#") == 0;
        }
        if (!a_plus && (b_plus || alen != blen || memcmp(a, b, alen) != 0))
            return false;
        bool a_done = a[alen] == '\0', b_done = b[blen] == '\0';
        if (a_done || b_done)
            return a_done ? b_done : strcmp(a + alen, "/#") == 0;
        a += alen + 1;
        b += blen + 1;
        first = false;
    }
}
