/*
 * The dispatchers of callhook receive: one thread per configured sink (receive/sink.h), each
 * taking its sink's due deliveries from the inbox in arrival order (up to the sink's
 * batch_max), handing them to process() and recording the results: done, a retry with
 * backoff (--retry-base-ms, doubling, at most 5 minutes; a result's retry_after_ms at the
 * earliest), parked failed after --max-attempts. A dispatcher wakes when the front has
 * committed new events and when its earliest retry is due. Its thread, and so every process a
 * sink starts from it, runs at a lower priority (nice DISPATCH_NICE) than the front, whose
 * verification and inbox commits answer senders.
 */
#ifndef CALLHOOK_RECEIVE_DISPATCH_H
#define CALLHOOK_RECEIVE_DISPATCH_H

#include "receive/receiver.h"

/* The nice value of the dispatchers' threads (Linux: per thread) and of sinks' children. */
#define DISPATCH_NICE 10

struct dispatch;

/* Opens every sink of the settings in force and starts its dispatcher. A sink that cannot
 * open (a bad target) is CH_EINVAL naming it, and nothing is left running. */
ch_code dispatch_start(struct live *live, struct receive_stats *stats, struct ch_inbox *inbox,
                       struct dispatch **out, struct ch_error *err);

/*
 * The lanes: the front hands the events it commits to their sinks in memory, their deliveries
 * stored as taken (inbox_add_handed), so a sink does not read back what was just written. A
 * lane is used only while its dispatcher is caught up with the inbox (no backlog there to keep
 * in order before newer events) and has room (a count and a byte cap); else the event waits in
 * the inbox, pending, as without lanes. Not with --ordered: its holds are the inbox's.
 *
 * The front, one thread: dispatch_lanes_lock(); a dispatch_lane_reserve() per delivery; the
 * commit; then per reservation dispatch_lane_hand() for an event stored, or
 * dispatch_lane_cancel() for one that was not (a duplicate, a failed commit);
 * dispatch_lanes_unlock(); dispatch_wake(). A stop waits for the unlock and then gives back
 * what its lane holds: pending again, its try not counted.
 */
struct dispatch_lane;
void dispatch_lanes_lock(struct dispatch *d);
void dispatch_lanes_unlock(struct dispatch *d);

/* Room in sink name's lane for one event of body_len bytes, or NULL (the delivery goes to the
 * inbox pending). */
struct dispatch_lane *dispatch_lane_reserve(struct dispatch *d, const char *name, size_t body_len);

/* Hands e (inbox_entry_of) to the lane that reserved room for it; the lane owns it after. */
void dispatch_lane_hand(struct dispatch_lane *l, struct ch_inbox_entry *e);

/* Gives back a reservation whose event was not stored. */
void dispatch_lane_cancel(struct dispatch_lane *l, size_t body_len);

/* New events are in the inbox (the front, after its commit). */
void dispatch_wake(struct dispatch *d);

/* A reload, before next is put in force: opens and starts a dispatcher for each sink of next
 * that has none yet, or whose sink settings (handler-env, exec-timeout-s, pipe-window,
 * forward-*) differ from the running one's. All or nothing: on failure (err names the sink)
 * nothing new is left running. */
ch_code dispatch_prepare(struct dispatch *d, const struct receive_config *next,
                         struct ch_error *err);

/* After a reload (with the settings now in force) or a failed one (with those kept): stops
 * the dispatchers that in_force does not run, as dispatch_stop() stops them. Their sinks'
 * deliveries wait in the inbox, pending, until a reload brings the sink back. Returns how
 * many it stopped. */
int dispatch_retire(struct dispatch *d, const struct receive_config *in_force);

/* The names of the sinks running, comma-separated, for the log ("" when none). */
void dispatch_describe(struct dispatch *d, char *out, size_t cap);

/* Interrupts every sink (what it has not finished is given back to the inbox, not counted as
 * a try), joins the threads, closes the sinks. NULL is fine. */
void dispatch_stop(struct dispatch *d);

#endif
