/*
 * The delivery engine: one thread driving one libcurl multi handle. Fresh events arrive in
 * memory from the ingest commit (engine_submit); retries, recoveries and backlog are claimed
 * from the store in bounded batches. Attempt results are written back in batches.
 */
#ifndef CALLHOOK_DELIVER_ENGINE_H
#define CALLHOOK_DELIVER_ENGINE_H

#include <callhook/error.h>

#include "deliver/guard.h"
#include "deliver/metrics.h"
#include "store/store.h"

/* An attempt's result that ended its message (dead) or disabled its Voice App (a 410), as
 * written to the store. Borrowed for the call. */
struct engine_outcome {
    const char *app_id, *msg_id, *event;
    int attempt;             /* the message's attempt number, 1 for the first */
    enum msg_status status;  /* what the message became: MSG_DEAD, or MSG_PENDING (a 410) */
    bool disabled_app;       /* the attempt disabled the app (HTTP 410) */
    bool app_deleted;        /* dead because its app was deleted */
    int http_status;         /* 0 when there was no response */
    const char *error_class; /* "http", "timeout", "refused", ... */
    const char *error;
};

struct engine_config {
    struct store *store;      /* borrowed */
    struct metrics *metrics;  /* borrowed */
    int lease_s;              /* how long a claim holds; default 300 */
    int scan_interval_ms;     /* how often the store is read for due work; default 1000 */
    int claim_batch;          /* most messages claimed per read; default 256 */
    int max_queued;           /* most messages held in memory; default 20000 */
    int64_t max_queued_bytes; /* most bytes of them (records and bookkeeping); default 16 MiB */
    int max_in_flight;        /* most transfers at once over all apps; default 1024 */
    int shutdown_grace_ms;    /* how long in-flight attempts may finish at stop; default 10000 */
    const struct guard_cidr *allowed; /* internal ranges the operator allows for every app */
    int nallowed;
    /* Called (when not NULL) on the engine's store thread for each outcome of struct
     * engine_outcome once it is written, with outcome_ctx: it must not block for long. */
    void (*outcome)(void *ctx, const struct engine_outcome *o);
    void *outcome_ctx;
};

struct engine;

/* Creates the engine (not started). Caller frees with engine_free(). */
ch_code engine_new(const struct engine_config *cfg, struct engine **out, struct ch_error *err);

/* Starts the engine's thread. */
ch_code engine_start(struct engine *e, struct ch_error *err);

/* Hands a freshly ingested, already claimed message to the engine. Takes ownership of m->body.
 * ingested_ms is when its ingest request arrived (for the latency histogram). Thread-safe.
 * The engine looks at what was handed over when woken: engine_kick() after a batch. */
void engine_submit(struct engine *e, struct due_message *m, int64_t ingested_ms);

/* Wakes the engine for what engine_submit() handed over (one wakeup per batch, not per event). */
void engine_kick(struct engine *e);

/* A Voice App's settings or secret changed: the engine reloads them before its next attempt.
 * Also makes the engine read the store for due work now. Thread-safe. */
void engine_app_changed(struct engine *e);

/* The internal ranges the operator allows for every app (the engine's configuration), for a
 * test send judged as the engine judges deliveries. Borrowed; valid while e is. */
const struct guard_cidr *engine_allowed(const struct engine *e, int *nallowed);

/* Makes the engine read the store for due work now (after replay or recover). Thread-safe. */
void engine_wake(struct engine *e);

/* Stops taking new work, lets in-flight attempts finish within the grace period, gives back
 * everything else to the store, and joins the thread. */
void engine_stop(struct engine *e);

void engine_free(struct engine *e);

#endif
