/*
 * The delivery engine's store thread: it claims due messages and writes attempt results, so
 * the HTTP loop never waits on the database. One claim and one result batch are in its hands at
 * most; the engine fills the other batch meanwhile (double buffering), and the thread wakes the
 * engine through a callback when a claim is ready or a write has made end-calls due.
 */
#ifndef CALLHOOK_DELIVER_STOREQ_H
#define CALLHOOK_DELIVER_STOREQ_H

#include <callhook/error.h>

#include "deliver/app.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

#define STOREQ_RESPONSE_CAP 512
#define STOREQ_RESULT_BATCH 512

/* A result waiting to be written, with room for the strings it points at. */
struct storeq_result {
    struct attempt_result r;
    char error[300];
    char response[STOREQ_RESPONSE_CAP + 1];
    char app_id[APP_ID_MAX + 1];
    bool begin_resolved; /* a begin-call ended: its end-call may be due now */
};

struct storeq_results {
    size_t n;
    struct storeq_result item[STOREQ_RESULT_BATCH];
};

struct storeq;

/* Starts the thread. wake(ctx) is called from it when storeq_claimed() or storeq_rescan()
 * has something new. claim_batch is the most messages one claim takes. */
ch_code storeq_start(struct store *store, size_t claim_batch, void (*wake)(void *ctx), void *ctx,
                     struct storeq **out, struct ch_error *err);

/* The batch to fill with results (empty). The engine owns it until it hands it over. */
struct storeq_results *storeq_results(struct storeq *q);

/* Hands over the filled batch for writing, and makes the other one the batch to fill; waits
 * while the previous write is still running. */
void storeq_write(struct storeq *q);

/* The same, but false at once (nothing handed over) while the previous write is running. */
bool storeq_try_write(struct storeq *q);

/* Asks for up to max due messages to be claimed until lease_until. False when a claim is
 * already asked for or waiting to be taken. */
bool storeq_claim(struct storeq *q, size_t max, int64_t now, int64_t lease_until);

/* The messages of the last claim, when it has finished: *n of them in *out (the store thread's
 * buffer; the caller takes each body) and *max what was asked. False while none is ready. Call
 * storeq_claimed_done() after taking them. */
bool storeq_claimed(struct storeq *q, struct due_message **out, size_t *n, size_t *max);
void storeq_claimed_done(struct storeq *q);

/* True (once) when a written batch ended a begin-call: the engine should read the store. */
bool storeq_rescan(struct storeq *q);

/* Waits until nothing is being claimed or written. */
void storeq_idle(struct storeq *q);

/* Waits for the running work, stops the thread and frees q; a claim not taken is given back to
 * the store. */
void storeq_stop(struct storeq *q);

#endif
