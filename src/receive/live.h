/*
 * The settings in force: a reload (SIGHUP) puts new ones in place while requests and handlers
 * still use those they started with. Each user takes a reference for as long as it reads them
 * (a request's checks, a batch of handlers); the last user of replaced settings frees them,
 * their keys wiped.
 */
#ifndef CALLHOOK_RECEIVE_LIVE_H
#define CALLHOOK_RECEIVE_LIVE_H

#include "receive/receiver.h"

struct live;

/* Starts with a copy of first. CH_ENOMEM. */
ch_code live_new(const struct receive_config *first, struct live **out, struct ch_error *err);

/* Frees the settings in force; no reference may be held any more. NULL is fine. */
void live_free(struct live *l);

/* The settings in force, held until live_put(): they do not change under the caller. */
const struct receive_config *live_get(struct live *l);
void live_put(struct live *l, const struct receive_config *c);

/* Puts a copy of next in force; users holding the old settings keep them until they put
 * them back. CH_ENOMEM leaves the old ones in force. */
ch_code live_replace(struct live *l, const struct receive_config *next, struct ch_error *err);

#endif
