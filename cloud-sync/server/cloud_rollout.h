/*
 * Rollouts (cloud_rollout.c): a bundle brought to the devices a selector
 * picks, canaries first, halting and rolling back by itself when devices
 * fail. Driven by reported states (cloud_rollout_on_reported) and a
 * periodic tick (cloud_rollout_tick), always inside a batch.
 */
#ifndef WISP_CLOUD_ROLLOUT_H
#define WISP_CLOUD_ROLLOUT_H

#include "cloud.h"

/* Starts a rollout of cfg->bundle (copied; the bundle must be known: -ENOENT
 * otherwise) with function name fn and version from its manifest. The new
 * rollout supersedes a running one of the same function. *out is owned by
 * c. 0 or a negative errno with the reason (naming the field) in err. */
int cloud_rollout_create(struct cloud *c, const struct cloud_rollout_cfg *cfg, const char *fn,
                         const char *version, struct cloud_rollout **out, char *err, size_t errlen);

/* Manual halt / rollback: -EALREADY (a 409) when the state makes it
 * meaningless, with the reason in err. */
int cloud_rollout_halt(struct cloud *c, struct cloud_rollout *r, const char *why, char *err,
                       size_t errlen);
int cloud_rollout_rollback(struct cloud *c, struct cloud_rollout *r, char *err, size_t errlen);

/* A device's reported state (an object) arrived. */
void cloud_rollout_on_reported(struct cloud *c, struct cloud_device *dev, const cJSON *reported);
/* Promotes canaries after their bake time, finishes rollouts. */
void cloud_rollout_tick(struct cloud *c);

struct cloud_rollout *cloud_rollout_find(const struct cloud *c, const char *id);
const char *cloud_rollout_state_name(enum cloud_rollout_state s);
const char *cloud_rdev_state_name(enum cloud_rdev_state s);

/* The rollout as the API shows it (and as it is stored). */
cJSON *cloud_rollout_json(const struct cloud_rollout *r);
/* Parses a stored rollout. 0, -EBADMSG or -ENOMEM. */
int cloud_rollout_from_json(const cJSON *j, struct cloud_rollout **out);
void cloud_rollout_free(struct cloud_rollout *r);

#endif
