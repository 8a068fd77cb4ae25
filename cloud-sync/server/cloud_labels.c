/* Label selectors: "k=v,k2=v2", every pair must match; "" matches all. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloud.h"
#include "util.h"

/* s[0..len) without surrounding blanks. */
static void trim(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

/* Adds one "k=v" pair (pair[0..len)) to sel. */
static int add_pair(cJSON *sel, const char *pair, size_t len, size_t index, char *err,
                    size_t errlen)
{
    const char *eq = memchr(pair, '=', len);
    if (!eq)
        return wisp_errf(err, errlen, -EINVAL, "selector: pair %zu (\"%.*s\") has no '='",
                         index + 1, (int)(len > 80 ? 80 : len), pair);
    const char *k = pair, *v = eq + 1;
    size_t kl = (size_t)(eq - pair), vl = len - kl - 1;
    trim(&k, &kl);
    trim(&v, &vl);
    if (kl == 0)
        return wisp_errf(err, errlen, -EINVAL, "selector: pair %zu has an empty label name",
                         index + 1);
    if (memchr(v, '=', vl))
        return wisp_errf(err, errlen, -EINVAL, "selector: pair %zu has more than one '='",
                         index + 1);
    char key[256];
    if (kl >= sizeof(key) || vl > 1024)
        return wisp_errf(err, errlen, -EINVAL, "selector: pair %zu is too long", index + 1);
    memcpy(key, k, kl);
    key[kl] = '\0';
    if (cJSON_GetObjectItemCaseSensitive(sel, key))
        return wisp_errf(err, errlen, -EINVAL, "selector: label %s is given twice", key);
    char *val = wisp_strndup(v, vl);
    if (!val)
        return -ENOMEM;
    cJSON *s = cJSON_CreateString(val);
    free(val);
    if (!s || !cJSON_AddItemToObject(sel, key, s)) {
        cJSON_Delete(s);
        return -ENOMEM;
    }
    return 0;
}

cJSON *cloud_selector_parse(const char *str, char *err, size_t errlen)
{
    cJSON *sel = cJSON_CreateObject();
    if (!sel) {
        (void)wisp_errf(err, errlen, -ENOMEM, "selector: out of memory");
        return NULL;
    }
    const char *p = str;
    size_t all = strlen(str);
    trim(&p, &all);
    if (all == 0)
        return sel;
    for (size_t index = 0;; index++) {
        const char *comma = memchr(p, ',', all);
        size_t len = comma ? (size_t)(comma - p) : all;
        if (add_pair(sel, p, len, index, err, errlen) != 0) {
            cJSON_Delete(sel);
            return NULL;
        }
        if (!comma)
            break;
        all -= len + 1;
        p = comma + 1;
    }
    return sel;
}

bool cloud_selector_match(const cJSON *sel, const cJSON *labels)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, sel)
    {
        const cJSON *have = cJSON_GetObjectItemCaseSensitive(labels, it->string);
        if (!cJSON_IsString(have) || !cJSON_IsString(it) ||
            strcmp(have->valuestring, it->valuestring) != 0)
            return false;
    }
    return true;
}
