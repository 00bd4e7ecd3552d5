/*
 * Sinks: where `callhook receive` hands an event once it is durable in the inbox. One ops
 * struct per kind (exec:, jsonl:, pipe:, forward:, postgres:), chosen by the scheme of a
 * handler's text, as curl picks a protocol handler by URL scheme.
 *
 * The dispatcher (one thread per configured sink) owns the loop: it takes up to batch_max due
 * deliveries of its sink from the inbox, calls process() with them, and records each result in
 * the inbox (done, retry with backoff, or parked as failed after --max-attempts). A sink never
 * touches the inbox itself, so every kind gets the same durability, retry and parking rules,
 * and the inbox keeps one retry state per (event, sink): an event fanned out to two sinks is
 * retried for the one that failed only.
 *
 * process() is synchronous for the dispatcher but may run the batch concurrently inside
 * (several processes at once, requests on a libcurl multi handle, lines in flight on a pipe,
 * one database transaction). It fills exactly one result per event and returns when every
 * result is set. interrupt() may be called from another thread (at stop): process() then
 * returns soon, with SINK_GIVEN_BACK for what it did not finish, so nothing acknowledged is
 * lost (a failure it did see before is still a SINK_RETRY, counted as an attempt).
 */
#ifndef CALLHOOK_RECEIVE_SINK_H
#define CALLHOOK_RECEIVE_SINK_H

#include <callhook/error.h>
#include <callhook/inbox.h>

#include <stdbool.h>
#include <stddef.h>

struct receive_config;
struct sink;

enum sink_outcome {
    SINK_DONE = 0,       /* handled: the delivery is done */
    SINK_RETRY = 1,      /* not now: retried with backoff (or at retry_after_ms), parked after the
                            last attempt */
    SINK_FAILED = 2,     /* never: parked as failed at once (e.g. the sink refused it for good) */
    SINK_GIVEN_BACK = 3, /* not tried, or cut short, because the receiver is stopping: pending
                            again as it was, the take not counted as an attempt */
};

struct sink_result {
    enum sink_outcome outcome;
    long long retry_after_ms; /* SINK_RETRY: at the earliest this long from now; 0: backoff */
    char error[512];          /* why, for the inbox and `callhook inbox show` */
};

struct sink_ops {
    const char *scheme; /* "exec", "jsonl", "pipe", "forward", "postgres" */
    /* Checks target (the text after "scheme:") and opens what the sink needs: a file, a
     * process, a connection. A bad target is a clear error here, at start, never a silent
     * drop later. c: the receiver's settings (timeouts, environment allow-list, TLS files). */
    ch_code (*open)(const char *target, const struct receive_config *c, struct sink **out,
                    struct ch_error *err);
    /* Most events one process() call takes (its window). */
    size_t (*batch_max)(const struct sink *s);
    /* Handles events[0..n), filling results[0..n) (one each, in the same order). */
    void (*process)(struct sink *s, const struct ch_inbox_entry *events, size_t n,
                    struct sink_result *results);
    /* Makes a running process() return soon (from any thread). */
    void (*interrupt)(struct sink *s);
    /* Frees the sink; process() is not running. */
    void (*close)(struct sink *s);
    /* Whether the front hands it events in memory (dispatch.h's lanes): for sinks whose
     * process() handles a batch in about the time a take costs, so that reading back what was
     * just written is a good part of their work. Not exec: an event waiting in a lane shows as
     * running, and exec's running events are the commands running. */
    bool lane;
};

/* Sets one result: its outcome, its earliest retry (0: backoff), and why, as printf. */
void sink_result_set(struct sink_result *r, enum sink_outcome outcome, long long retry_after_ms,
                     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The ops of a handler text's scheme ("pipe:./h.py" -> the pipe sink); NULL when unknown. */
const struct sink_ops *sink_ops_for(const char *handler_text);

/* The handler text as the log may show it: a password in a URL ("forward:https://u:PW@h/")
 * or a DSN ("postgres:...password=PW", "postgres://u:PW@h/db") replaced by "***", and cut to
 * cap. Returns out. */
const char *sink_label(const char *handler_text, char *out, size_t cap);

/* A stub's open() (a sink kind not built into this callhook): CH_EINVAL saying so. */
ch_code sink_not_built(const char *scheme, struct ch_error *err);

extern const struct sink_ops sink_exec_ops, sink_jsonl_ops, sink_pipe_ops, sink_forward_ops,
    sink_postgres_ops;

#endif
