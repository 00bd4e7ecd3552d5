/*
 * The receiver's inbox: a durable SQLite store of received events that deduplicates them (by
 * webhook-id, and by event and call id) and hands them out for processing in arrival order.
 * `callhook receive` is built on it; a C service can open one to get the same guarantees.
 *
 * An event goes to one or more sinks (named by text: `callhook receive` uses its handlers,
 * "exec:./h.sh", "jsonl:/var/log/calls.jsonl"), and the inbox keeps one delivery state per
 * (event, sink): each sink takes, retries and parks its deliveries on its own. An event's own
 * status is derived from them (see enum ch_inbox_status). The first functions below
 * (ch_inbox_add, ch_inbox_take, ch_inbox_finish, ch_inbox_retry) work on one implicit sink,
 * named "", for a program with one consumer; the *_sink functions name the sink.
 */
#ifndef CALLHOOK_INBOX_H
#define CALLHOOK_INBOX_H

#include <callhook/error.h>
#include <callhook/export.h>

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A delivery's status, and an event's, derived from its deliveries: FAILED when one of them is
 * parked failed, else RUNNING when one is running, else PENDING when one waits, else DONE
 * (every sink is done, or the event went to none).
 */
enum ch_inbox_status {
    CH_INBOX_PENDING = 0, /* waiting, or waiting for a retry at next_at */
    CH_INBOX_RUNNING = 1, /* a worker has it */
    CH_INBOX_DONE = 2,    /* processed */
    CH_INBOX_FAILED = 3,  /* every try failed: parked until `inbox retry` */
    CH_INBOX_PURGED = 4,  /* processed, record removed: only its dedupe keys are left (events) */
};

/** How many statuses there are (the last one plus one). */
#define CH_INBOX_STATUSES 5

/** The name of a status: "pending", "running", "done", "failed", "purged". */
CH_API const char *ch_inbox_status_name(enum ch_inbox_status s);

struct ch_inbox;

/** One event to add. Strings and body are borrowed for the call. */
struct ch_inbox_event {
    const char *webhook_id; /* required */
    const char *event;      /* "begin-call" or "end-call" */
    const char *call_key;   /* ActiveCallId, else CorrelationId; NULL when the record has none */
    bool has_call_type;
    long long call_type;
    const void *body;
    size_t body_len;
    long long received_at; /* unix seconds */
    /* The request's own signature headers, kept so that a forward can pass them on: its
     * webhook-timestamp (0: none) and webhook-signature (NULL: none). */
    long long webhook_timestamp;
    const char *webhook_signature;
    /* out */
    bool duplicate; /* already in the inbox (same webhook-id, or same event and call_key) */
    long long seq;  /* the event's place in arrival order */
};

/**
 * An event as stored; body is heap memory freed by ch_inbox_entry_release(). Taken for a sink
 * (ch_inbox_take, ch_inbox_take_sink), status, attempts, next_at, processed_at and last_error
 * are that sink's delivery's; listed or read (ch_inbox_list, ch_inbox_get), the event's:
 * status derived as above, attempts the most any sink made, next_at the earliest retry, the
 * last error of a failed (else a waiting) sink.
 */
struct ch_inbox_entry {
    long long seq;
    char webhook_id[257];
    char event[16];
    char call_key[256];
    bool has_call_type;
    long long call_type;
    enum ch_inbox_status status;
    int attempts;
    long long received_at;  /* unix seconds */
    long long next_at;      /* unix milliseconds */
    long long processed_at; /* unix seconds */
    char last_error[512];
    void *body;
    size_t body_len;
    /* The request's webhook-timestamp (0: none kept) and webhook-signature (NULL: none kept, or
     * not read: listings leave it out). It lives in body's allocation. */
    long long webhook_timestamp;
    const char *webhook_signature;
};
CH_API void ch_inbox_entry_release(struct ch_inbox_entry *e);

/**
 * Opens (creating it and its folder) the inbox at path. Thread-safe handle; close with
 * ch_inbox_close(). An inbox of an older schema (version 1: one status per event) is migrated
 * in one transaction: its unprocessed and failed events become deliveries to the implicit sink
 * "", with their attempts and last error. A newer schema than CH_INBOX_SCHEMA_VERSION is
 * CH_ESTORE. CH_EIO or CH_ESTORE with the reason on failure.
 */
CH_API ch_code ch_inbox_open(const char *path, struct ch_inbox **out, struct ch_error *err);
CH_API void ch_inbox_close(struct ch_inbox *ib);

/**
 * Adds events in one transaction (one fsync): when it returns CH_OK every new event is on disk
 * and each event says whether it was a duplicate. Duplicates are recognised for as long as the
 * inbox keeps them (see ch_inbox_expire). CH_EUNAVAILABLE when nothing could be written. Each
 * new event goes to the implicit sink "" (see ch_inbox_add_routed for others).
 */
CH_API ch_code ch_inbox_add(struct ch_inbox *ib, struct ch_inbox_event *events, size_t n,
                            struct ch_error *err);

/** Whether an event with this webhook-id, or this event and call_key, is in the inbox. */
CH_API ch_code ch_inbox_seen(struct ch_inbox *ib, const char *webhook_id, const char *event,
                             const char *call_key, bool *seen, struct ch_error *err);

/**
 * Takes the oldest pending event due at now_ms for processing (status running; attempts counts
 * this one). CH_ENOTFOUND when none is due; *next_due_ms is then the earliest next_at of a
 * pending event (0: none). The caller frees out with ch_inbox_entry_release().
 */
CH_API ch_code ch_inbox_take(struct ch_inbox *ib, long long now_ms, struct ch_inbox_entry *out,
                             long long *next_due_ms, struct ch_error *err);

/** Records the outcome of processing: done, a retry at next_at_ms (pending), or failed. */
CH_API ch_code ch_inbox_finish(struct ch_inbox *ib, long long seq, enum ch_inbox_status status,
                               long long next_at_ms, const char *error, long long now,
                               struct ch_error *err);

/** For one process that owns the inbox: deliveries left running by a crash are pending again,
 * due at now_ms; *requeued counts them. */
CH_API ch_code ch_inbox_recover(struct ch_inbox *ib, long long now_ms, long long *requeued,
                                struct ch_error *err);

/** Calls cb for events (status < 0: all), newest first, at most limit. The inbox is locked
 * while cb runs: cb must not call the inbox. */
CH_API ch_code ch_inbox_list(struct ch_inbox *ib, int status, int limit,
                             void (*cb)(void *ctx, const struct ch_inbox_entry *e), void *ctx,
                             struct ch_error *err);

/** One event by its webhook-id, body included. CH_ENOTFOUND when absent. */
CH_API ch_code ch_inbox_get(struct ch_inbox *ib, const char *webhook_id, struct ch_inbox_entry *out,
                            struct ch_error *err);

/** Makes a failed event (or every failed one, webhook_id NULL) pending again with fresh tries:
 * every failed delivery of it, whatever its sink. *requeued counts events. CH_ENOTFOUND when
 * webhook_id names no failed event. */
CH_API ch_code ch_inbox_retry(struct ch_inbox *ib, const char *webhook_id, long long now_ms,
                              long long *requeued, struct ch_error *err);

/**
 * Dedupe keys are kept at least `seconds` after their event arrived, whatever
 * ch_inbox_expire() is asked: a captured request can be replayed for as long as its signature
 * is accepted, so a receiver sets twice its timestamp tolerance. The inbox keeps the longest
 * window ever set (default 600 s: twice the default tolerance).
 */
CH_API ch_code ch_inbox_keep_keys(struct ch_inbox *ib, long long seconds, struct ch_error *err);

/**
 * The retention window: processed events received before `before` (unix seconds) lose their
 * record. Those also older than the key window (ch_inbox_keep_keys) are removed with their
 * dedupe keys; younger ones stay, status CH_INBOX_PURGED, so that a replay is still a
 * duplicate. An event is processed when every one of its sinks is done: one with a pending,
 * running or failed delivery is never touched. *removed counts both.
 */
CH_API ch_code ch_inbox_expire(struct ch_inbox *ib, long long before, long long *removed,
                               struct ch_error *err);

/** What an inbox holds, as ch_inbox_stats() counts it. Times are unix seconds, 0 for none. */
struct ch_inbox_stats {
    long long count[CH_INBOX_STATUSES]; /* events by status (enum ch_inbox_status) */
    long long oldest_unprocessed;       /* received_at of the oldest pending or running event */
    long long oldest_failed;            /* received_at of the oldest failed event */
    long long newest;                   /* received_at of the event that arrived last */
};

/**
 * Counts the events by status and finds the oldest unprocessed and failed ones, in one read
 * transaction: of one kind of event ("begin-call" or "end-call"), or of all when event is NULL.
 * Over all events the counts read an index only; the oldest times cost as many rows as there
 * are unprocessed (and failed) events. Thread-safe.
 */
CH_API ch_code ch_inbox_stats(struct ch_inbox *ib, const char *event, struct ch_inbox_stats *out,
                              struct ch_error *err);

/* ---- sinks: one delivery state per (event, sink) ---- */

/** Longest sink name, with its NUL. */
#define CH_INBOX_SINK_MAX 1040

/** The sinks one event goes to: names[0..n), borrowed for the call; a name given twice counts
 * once; n == 0: the event goes nowhere and is done as soon as it is stored. */
struct ch_inbox_sinks {
    const char *const *names;
    size_t n;
};

/**
 * ch_inbox_add() with the sinks of each new event: sinks[i] for events[i] (unused for a
 * duplicate, which adds no delivery). Each delivery starts pending, due at once. A name longer
 * than CH_INBOX_SINK_MAX - 1 bytes is CH_EINVAL and nothing is stored. Thread-safe.
 */
CH_API ch_code ch_inbox_add_routed(struct ch_inbox *ib, struct ch_inbox_event *events,
                                   const struct ch_inbox_sinks *sinks, size_t n,
                                   struct ch_error *err);

/**
 * Takes up to max of the deliveries of sink due at now_ms (unix milliseconds), the earliest
 * due first (first attempts in arrival order; a retry when its time comes), in one
 * transaction: out[0..*n) in arrival order, each delivery now running and its attempts
 * counting this one; out's status, attempts, last_error... are the delivery's. The caller
 * frees each with ch_inbox_entry_release(). CH_ENOTFOUND (*n == 0) when none is due;
 * *next_due_ms is then the earliest next_at of the sink's pending deliveries (0: none). On any
 * other error nothing was taken. Thread-safe; two takers of one sink never get the same one.
 */
CH_API ch_code ch_inbox_take_sink(struct ch_inbox *ib, const char *sink, long long now_ms,
                                  struct ch_inbox_entry *out, size_t max, size_t *n,
                                  long long *next_due_ms, struct ch_error *err);

/** ch_inbox_take_sink_flags(): the sink takes the events of one call in order. A delivery
 * is not taken while the same sink has a delivery of the begin-call with the same call_key,
 * stored before it (a lower seq), that is not done: pending (a retry included), running, or
 * parked failed until `inbox retry` gets it done. So an end-call waits for its begin-call's
 * delivery to that sink to be done. A begin-call is never held (not even by an end-call that
 * arrived before it), nor is an event without a call_key, nor one whose begin-call went to
 * other sinks only. */
#define CH_INBOX_TAKE_CALL_ORDER 0x1u

/**
 * ch_inbox_take_sink() with flags (CH_INBOX_TAKE_CALL_ORDER or 0; any other bit is
 * CH_EINVAL). In call order, *next_due_ms leaves out the deliveries that wait for an earlier
 * one: they become due when it is done. Thread-safe.
 */
CH_API ch_code ch_inbox_take_sink_flags(struct ch_inbox *ib, const char *sink, long long now_ms,
                                        unsigned flags, struct ch_inbox_entry *out, size_t max,
                                        size_t *n, long long *next_due_ms, struct ch_error *err);

/** The outcome of one delivery taken by ch_inbox_take_sink(). error is borrowed. */
struct ch_inbox_outcome {
    long long seq;               /* the event's (ch_inbox_entry.seq) */
    enum ch_inbox_status status; /* DONE, PENDING (a retry at next_at_ms) or FAILED */
    long long next_at_ms;        /* PENDING: when it is due again (unix milliseconds) */
    const char *error;           /* NULL or why it failed, kept as its last error */
    bool not_attempted;          /* PENDING: the sink never got to it (a stop), so the take
                                    does not count as an attempt */
};

/**
 * Records n outcomes of sink's deliveries in one transaction (all or none), and the derived
 * status of their events; now is unix seconds (a done delivery's processed_at). Other sinks'
 * deliveries of the same events are not touched. Thread-safe.
 */
CH_API ch_code ch_inbox_finish_sink(struct ch_inbox *ib, const char *sink,
                                    const struct ch_inbox_outcome *o, size_t n, long long now,
                                    struct ch_error *err);

/**
 * Makes failed deliveries pending again, due at now_ms, with fresh tries: of the event
 * webhook_id (NULL: of every event) to sink (NULL: to every sink). *events and *deliveries
 * (either may be NULL) count what was requeued. CH_ENOTFOUND when webhook_id is given and has
 * no such failed delivery (err says whether the event is unknown). Thread-safe.
 */
CH_API ch_code ch_inbox_retry_sink(struct ch_inbox *ib, const char *webhook_id, const char *sink,
                                   long long now_ms, long long *events, long long *deliveries,
                                   struct ch_error *err);

/** One delivery of an event, as ch_inbox_deliveries() reports it. */
struct ch_inbox_delivery {
    char sink[CH_INBOX_SINK_MAX];
    enum ch_inbox_status status; /* PENDING, RUNNING, DONE or FAILED */
    int attempts;
    long long next_at;      /* unix milliseconds: when a pending one is due */
    long long processed_at; /* unix seconds: when it was done, 0 before */
    char last_error[512];
};

/**
 * Calls cb for every delivery of the event seq (ch_inbox_entry.seq), by sink name; none for an
 * event that went to no sink, was purged, or was processed before the inbox kept deliveries
 * (an inbox of schema version 1, migrated by ch_inbox_open). The inbox is locked while cb runs: cb
 * must not call the inbox. Thread-safe.
 */
CH_API ch_code ch_inbox_deliveries(struct ch_inbox *ib, long long seq,
                                   void (*cb)(void *ctx, const struct ch_inbox_delivery *d),
                                   void *ctx, struct ch_error *err);

/** The schema version of inboxes this library writes (ch_inbox_open migrates older ones). */
#define CH_INBOX_SCHEMA_VERSION 4

#ifdef __cplusplus
}
#endif

#endif
