/*
 * The delivery engine's store thread: the engine thread never calls the store itself. Claims,
 * attempt results, app loads, releases, lease renewals, rate-limit grants and the watch on Voice
 * App changes all run here, so the HTTP loop never waits on the database, even while it is
 * unreachable. Results are double-buffered (the engine fills one batch while the other is
 * written) and kept until they are written; the thread wakes the engine through a callback.
 */
#ifndef CALLHOOK_DELIVER_STOREQ_H
#define CALLHOOK_DELIVER_STOREQ_H

#include <callhook/error.h>

#include "deliver/app.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

#define STOREQ_RESPONSE_CAP 512
#define STOREQ_RESULT_BATCH 512 /* a batch is handed over at this size; it grows past it */

/* A result waiting to be written, with room for the strings it points at. */
struct storeq_result {
    struct attempt_result r;
    char error[300];
    char response[STOREQ_RESPONSE_CAP + 1];
    char app_id[APP_ID_MAX + 1];
    char signature[STORE_SIGNATURE_SHORT_MAX];
    bool begin_resolved; /* a begin-call ended: its end-call may be due now */
};

/* A batch of results: grows while the store cannot take it (the database is down), so a
 * finished attempt never waits for the disk and is never dropped. */
struct storeq_results {
    size_t n, cap;
    struct storeq_result *item; /* owned by the batch */
};

/* What the engine asks of the store besides claims and results. */
enum storeq_op {
    STOREQ_APP_LOAD,     /* in: app_id; out: rc, app (CH_ENOTFOUND when deleted) */
    STOREQ_RELEASE,      /* in: seqs, at (next_attempt_at) */
    STOREQ_RENEW,        /* in: seqs, at (lease_until) */
    STOREQ_RATE_TAKE,    /* in: app_id, limit, want; out: rc, granted */
    STOREQ_APPS_VERSION, /* out: rc, version */
};

/* One request: the engine allocates it with storeq_req_new(), hands it to storeq_post(), and
 * gets it back from storeq_done() when it asked for an answer (APP_LOAD, RATE_TAKE,
 * APPS_VERSION); RELEASE and RENEW are freed by the store thread. */
struct storeq_req {
    struct storeq_req *next;
    enum storeq_op op;
    ch_code rc;
    char app_id[APP_ID_MAX + 1];
    struct stored_app app; /* APP_LOAD's answer: release with storeq_req_free() */
    int64_t *seqs;         /* owned */
    size_t nseqs;
    int64_t now, at;
    int64_t limit, want, granted;
    int64_t version;
};

/* A request for op with room for nseqs sequence numbers; NULL when out of memory. */
struct storeq_req *storeq_req_new(enum storeq_op op, size_t nseqs);
void storeq_req_free(struct storeq_req *r);

struct storeq;

/* Starts the thread. wake(ctx) is called from it when a claim, an answer or a rescan is ready.
 * claim_batch is the most messages one claim takes. */
ch_code storeq_start(struct store *store, size_t claim_batch, void (*wake)(void *ctx), void *ctx,
                     struct storeq **out, struct ch_error *err);

/* Appends a result to the batch being filled (growing it); NULL when out of memory. Engine
 * thread only. */
struct storeq_result *storeq_result_add(struct storeq *q);

/* How many results the batch being filled holds. */
size_t storeq_unwritten(struct storeq *q);

/* Hands the filled batch over for writing unless the previous one is still being written
 * (then false, and nothing changes). wait: wait for that write instead (at stop). */
bool storeq_flush(struct storeq *q, bool wait);

/* True while the last write of results failed and is being tried again. */
bool storeq_failing(struct storeq *q);

/* Asks for up to max due messages to be claimed until lease_until. False when a claim is
 * already asked for or waiting to be taken. */
bool storeq_claim(struct storeq *q, size_t max, int64_t now, int64_t lease_until);

/* The messages of the last claim, when it has finished: *n of them in *out (the store thread's
 * buffer; the caller takes each body) and *max what was asked. False while none is ready. Call
 * storeq_claimed_done() after taking them. */
bool storeq_claimed(struct storeq *q, struct due_message **out, size_t *n, size_t *max);
void storeq_claimed_done(struct storeq *q);

/* Queues a request (takes ownership); requests run in the order posted. */
void storeq_post(struct storeq *q, struct storeq_req *r);

/* The answered requests, oldest first, as a list the caller frees with storeq_req_free(). */
struct storeq_req *storeq_done(struct storeq *q);

/* True (once) when a written batch ended a begin-call: the engine should read the store. */
bool storeq_rescan(struct storeq *q);

/* Waits until nothing is being claimed, written or asked. */
void storeq_idle(struct storeq *q);

/* Finishes the queued requests and writes (a failing write is tried for up to give_up_ms more),
 * stops the thread and frees q; a claim not taken is given back to the store. */
void storeq_stop(struct storeq *q, int give_up_ms);

#endif
