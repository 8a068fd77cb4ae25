/*
 * The state effects of one invocation, as they travel from an executor to
 * the store: what the handler read (and at which version) and what it
 * wrote. Shared by engine.h (results) and store.h (applying them).
 */
#ifndef WISP_EFFECTS_H
#define WISP_EFFECTS_H

#include <stddef.h>
#include <stdint.h>

struct wisp_state_read {
    const char *key;
    size_t klen;
    uint64_t version; /* as the handler saw it; 0 = the key was absent */
};

struct wisp_state_write {
    const char *key;
    size_t klen;
    const char *val; /* JSON text; NULL = delete */
    size_t vlen;
};

#endif
