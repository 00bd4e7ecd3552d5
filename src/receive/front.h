/* The receiver's front: its handler of the HTTP front (src/http/) and its inbox writer. */
#ifndef CALLHOOK_RECEIVE_FRONT_H
#define CALLHOOK_RECEIVE_FRONT_H

#include "receive/receiver.h"

struct dispatch;

struct front;

/* Listens as c says (TLS unless insecure_http: the listening settings are read once, here) and
 * feeds the inbox, checking each request against the settings in force in live and recording
 * the sinks each new event goes to by their routes (route_sinks); wakes the dispatchers after
 * a commit that added a new event (duplicates alone give them nothing to do).
 * Counts and logs what it accepts and refuses in stats; answers GET /metrics as the settings'
 * metrics says. */
ch_code front_start(const struct receive_config *c, struct live *live, struct receive_stats *stats,
                    struct ch_inbox *inbox, struct dispatch *dispatch, struct front **out,
                    struct ch_error *err);

/* Stops accepting, answers every request already taken, closes. */
void front_stop(struct front *f);

#endif
