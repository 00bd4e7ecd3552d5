/*
 * What the receiver uses of the inbox beyond the public API (include/callhook/inbox.h): the
 * implicit sink's batch calls (taking several events at once and recording several outcomes in
 * one transaction), and moving the deliveries an old inbox left on the implicit sink to the
 * receiver's sinks.
 */
#ifndef CALLHOOK_LIB_INBOX_H
#define CALLHOOK_LIB_INBOX_H

#include <callhook/inbox.h>

/**
 * As ch_inbox_add_routed(), but the deliveries that handed marks (handed[i][k] for sinks[i]'s
 * k-th sink; handed NULL or handed[i] NULL: none) are stored taken: running, with their first
 * attempt, as a take would leave them. The receiver hands those events to their sinks in
 * memory (inbox_entry_of()), so that a sink does not read back what was just written; a crash
 * before their outcomes are recorded leaves them running, and ch_inbox_recover() makes them
 * pending again at the next start.
 */
ch_code inbox_add_handed(struct ch_inbox *ib, struct ch_inbox_event *events,
                         const struct ch_inbox_sinks *sinks, const bool *const *handed, size_t n,
                         struct ch_error *err);

/**
 * The entry a take would give for e, an event just added with a delivery handed: running, its
 * first attempt, no error; the body and signature copied (ch_inbox_entry_release() frees them).
 */
ch_code inbox_entry_of(const struct ch_inbox_event *e, struct ch_inbox_entry *out,
                       struct ch_error *err);

/** The outcome of processing one event, as ch_inbox_finish() takes it. error is borrowed. */
struct inbox_outcome {
    long long seq;
    enum ch_inbox_status status;
    long long next_at; /* unix milliseconds, for a retry */
    const char *error; /* NULL or the reason of a failure */
};

/**
 * Takes up to max of the oldest pending events due at now_ms, in one transaction, as
 * ch_inbox_take() takes one: out[0..*n) in arrival order, each freed by the caller with
 * ch_inbox_entry_release(). CH_ENOTFOUND (*n == 0) when none is due, with *next_due_ms as
 * ch_inbox_take() sets it. On any other error nothing was taken.
 */
ch_code inbox_take_many(struct ch_inbox *ib, long long now_ms, struct ch_inbox_entry *out,
                        size_t max, size_t *n, long long *next_due_ms, struct ch_error *err);

/** Records n outcomes in one transaction (all or none); now is unix seconds. */
ch_code inbox_finish_many(struct ch_inbox *ib, const struct inbox_outcome *o, size_t n,
                          long long now, struct ch_error *err);

/** Where route sends an event (the sinks' names, at most max of them): see inbox_reassign. */
typedef size_t (*inbox_route_cb)(void *ctx, const struct ch_inbox_entry *e, const char **names,
                                 size_t max);

/**
 * Moves every delivery of from_sink that is not done to the sinks route names for its event,
 * with its state (pending, failed, attempts, last error); an event route sends nowhere is
 * done. One transaction. The receiver runs it at start on the implicit sink "", where an inbox
 * of schema version 1 left its unprocessed events. *moved counts the deliveries moved.
 */
ch_code inbox_reassign(struct ch_inbox *ib, const char *from_sink, inbox_route_cb route, void *ctx,
                       long long *moved, struct ch_error *err);

/** The SQL a sink's take runs (ST_TAKE or, in_order, ST_TAKE_IN_CALL_ORDER): for a test of its
 * query plan. */
const char *inbox_take_sql(bool in_order);

#endif
