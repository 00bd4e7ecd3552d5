/*
 * What the receiver counts and says about its traffic: events accepted and duplicates,
 * requests refused by reason, handler outcomes and reloads, for /metrics (Prometheus text);
 * and the log of refusals and duplicates, at most one line per reason per interval with a
 * count of the lines held back, so a misconfigured sender is seen without flooding the log.
 */
#ifndef CALLHOOK_RECEIVE_STATS_H
#define CALLHOOK_RECEIVE_STATS_H

#include <callhook/inbox.h>

#include <stdbool.h>
#include <stddef.h>

/* Why a request was refused: its name (the metric's reason label) and its status. */
#define REFUSAL_MAP(X)                                                                          \
    X(METHOD, "method", 405)                       /* not POST */                               \
    X(NO_EVENT, "no_event", 404)                   /* no X-Call-Event, path says no event */    \
    X(REQUIRED_HEADER, "required_header", 401)     /* --require-header missing or wrong */      \
    X(SIGNATURE_HEADERS, "signature_headers", 401) /* a webhook-* header missing */             \
    X(TIMESTAMP, "timestamp", 401)                 /* outside --tolerance-s, or not a number */ \
    X(SIGNATURE, "signature", 401)                 /* no signature matches a key */             \
    X(TOO_LARGE, "too_large", 413)                                                              \
    X(BAD_BODY, "bad_body", 400) /* not a JSON object, a NUL, a control character in the id */  \
    X(BUSY, "busy", 503)         /* too many bodies or events waiting */                        \
    X(STORE, "store", 503)       /* the inbox could not be written */                           \
    X(STOPPING, "stopping", 503)                                                                \
    X(METRICS, "metrics", 403) /* /metrics from an address --metrics does not allow */

enum refusal {
#define REFUSAL_ENUM(name, text, status) REFUSED_##name,
    REFUSAL_MAP(REFUSAL_ENUM)
#undef REFUSAL_ENUM
        REFUSAL_COUNT
};

/* A handler's outcome for one event. */
enum outcome { OUTCOME_DONE = 0, OUTCOME_RETRY, OUTCOME_FAILED, OUTCOME_COUNT };

struct receive_stats;

/* NULL when out of memory. Free with stats_free() (NULL is fine). */
struct receive_stats *stats_new(void);
void stats_free(struct receive_stats *s);

/* At most one log line per reason per interval_s (0: a line for every refusal); a reload may
 * change it. */
void stats_set_log_interval(struct receive_stats *s, long long interval_s);

/* Counts a refusal and logs it (rate-limited): the status, the reason, the client's address
 * and detail (the message answered, or NULL). Thread-safe. */
void stats_refused(struct receive_stats *s, enum refusal why, const char *remote,
                   const char *detail);

/* Counts an accepted event. */
void stats_accepted(struct receive_stats *s);

/* Counts a duplicate and logs it at info level (rate-limited like a refusal reason): its
 * webhook-id, kind and client's address. */
void stats_duplicate(struct receive_stats *s, const char *webhook_id, const char *event,
                     const char *remote);

void stats_outcome(struct receive_stats *s, enum outcome o);

/* Counts n deliveries handed to a sink: in memory by the front (dispatch.h's lanes), or
 * taken from the inbox. */
void stats_handed(struct receive_stats *s, bool in_memory, size_t n);
void stats_reload(struct receive_stats *s, bool ok);

/* Logs the lines held back whose interval has ended (their count and the last address): the
 * receiver calls it every second or so, so a burst is summed up even when nothing follows. */
void stats_flush(struct receive_stats *s);

/* Writes the Prometheus text exposition of the counters and of the inbox (ib's counts, the
 * oldest unprocessed event's age at now_s) into a malloc'd string; NULL when out of memory.
 * inbox NULL: the inbox lines are left out (it could not be read). */
char *stats_render(struct receive_stats *s, const struct ch_inbox_stats *inbox, long long now_s);

/* The reason's name and its status. */
const char *refusal_name(enum refusal why);
int refusal_status(enum refusal why);

#endif
