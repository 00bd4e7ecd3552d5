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
