/* The engine's store thread (storeq.h): claims and result writes, one of each at a time. */
#include "deliver/storeq.h"

#include "util/log.h"
#include "util/thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

struct storeq {
    struct store *store;
    void (*wake)(void *ctx);
    void *wake_ctx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* work for the thread, or work it finished */

    /* Under lock. */
    bool stopping;
    struct storeq_results *batches[2];
    int filling;  /* the batch the engine fills */
    bool writing; /* the other batch is handed over and not yet written */
    int claim;    /* 0 none, 1 asked for, 2 running, 3 ready to take */
    size_t claim_max, claim_n, claim_cap;
    int64_t claim_now, claim_lease;
    struct due_message *claimed;

    atomic_bool rescan;
};

static void write_batch(struct storeq *q, struct storeq_results *b)
{
    struct attempt_result *r = malloc(b->n * sizeof *r);
    bool begin_resolved = false;
    for (size_t i = 0; r != NULL && i < b->n; i++) {
        r[i] = b->item[i].r;
        begin_resolved |= b->item[i].begin_resolved;
    }
    struct ch_error err = {0};
    /* A failed write is tried again; after that the leases make the messages due again. */
    for (int tries = 0; r != NULL && tries < 3; tries++) {
        if (q->store->ops->record_attempts(q->store, r, b->n, &err) == CH_OK) {
            free(r);
            if (begin_resolved) {
                atomic_store(&q->rescan, true);
                q->wake(q->wake_ctx);
            }
            return;
        }
        log_error("engine: cannot record %zu attempts: %s", b->n, err.message);
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    free(r);
    log_error("engine: dropping %zu attempt results; their leases will make them due again", b->n);
}

static void *storeq_main(void *arg)
{
    struct storeq *q = arg;
    thread_name("ch-store");
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->writing) {
            struct storeq_results *b = q->batches[1 - q->filling];
            pthread_mutex_unlock(&q->lock);
            write_batch(q, b);
            pthread_mutex_lock(&q->lock);
            b->n = 0;
            q->writing = false;
            pthread_cond_broadcast(&q->cond);
            continue;
        }
        if (q->claim == 1) {
            q->claim = 2;
            size_t max = q->claim_max, n = 0;
            int64_t now = q->claim_now, lease = q->claim_lease;
            pthread_mutex_unlock(&q->lock);
            struct ch_error err = {0};
            if (q->store->ops->claim_due(q->store, now, lease, q->claimed, max, &n, &err) != CH_OK)
                log_warn("engine: cannot read due messages: %s", err.message);
            pthread_mutex_lock(&q->lock);
            q->claim_n = n;
            q->claim = 3;
            pthread_cond_broadcast(&q->cond);
            pthread_mutex_unlock(&q->lock);
            q->wake(q->wake_ctx);
            pthread_mutex_lock(&q->lock);
            continue;
        }
        if (q->stopping)
            break;
        pthread_cond_wait(&q->cond, &q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* Frees what storeq_start() allocated (the thread is not running). */
static void storeq_free(struct storeq *q)
{
    free(q->batches[0]);
    free(q->batches[1]);
    free(q->claimed);
    free(q);
}

ch_code storeq_start(struct store *store, size_t claim_batch, void (*wake)(void *ctx), void *ctx,
                     struct storeq **out, struct ch_error *err)
{
    struct storeq *q = calloc(1, sizeof *q);
    if (q == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory starting the store thread");
    q->store = store;
    q->wake = wake;
    q->wake_ctx = ctx;
    q->claim_cap = claim_batch;
    q->batches[0] = calloc(1, sizeof *q->batches[0]);
    q->batches[1] = calloc(1, sizeof *q->batches[1]);
    q->claimed = calloc(claim_batch, sizeof *q->claimed);
    if (q->batches[0] == NULL || q->batches[1] == NULL || q->claimed == NULL) {
        storeq_free(q);
        return ch_error_set(err, CH_ENOMEM, "out of memory starting the store thread");
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    if (pthread_create(&q->thread, NULL, storeq_main, q) != 0) {
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->cond);
        storeq_free(q);
        return ch_error_set(err, CH_ENOMEM, "cannot start the store thread");
    }
    *out = q;
    return CH_OK;
}

struct storeq_results *storeq_results(struct storeq *q)
{
    /* Only the engine changes `filling`, so it reads it without the lock. */
    return q->batches[q->filling];
}

void storeq_write(struct storeq *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->writing)
        pthread_cond_wait(&q->cond, &q->lock);
    if (q->batches[q->filling]->n > 0) {
        q->filling = 1 - q->filling;
        q->writing = true;
        pthread_cond_broadcast(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
}

bool storeq_try_write(struct storeq *q)
{
    pthread_mutex_lock(&q->lock);
    bool free_to_write = !q->writing;
    pthread_mutex_unlock(&q->lock);
    if (free_to_write)
        storeq_write(q); /* only the engine hands over: the thread cannot be busy again by now */
    return free_to_write;
}

bool storeq_claim(struct storeq *q, size_t max, int64_t now, int64_t lease_until)
{
    pthread_mutex_lock(&q->lock);
    bool asked = q->claim == 0;
    if (asked) {
        q->claim = 1;
        q->claim_max = max < q->claim_cap ? max : q->claim_cap;
        q->claim_now = now;
        q->claim_lease = lease_until;
        pthread_cond_broadcast(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
    return asked;
}

bool storeq_claimed(struct storeq *q, struct due_message **out, size_t *n, size_t *max)
{
    pthread_mutex_lock(&q->lock);
    bool ready = q->claim == 3;
    if (ready) {
        *out = q->claimed;
        *n = q->claim_n;
        *max = q->claim_max;
    }
    pthread_mutex_unlock(&q->lock);
    return ready;
}

void storeq_claimed_done(struct storeq *q)
{
    pthread_mutex_lock(&q->lock);
    q->claim = 0;
    q->claim_n = 0;
    pthread_mutex_unlock(&q->lock);
}

bool storeq_rescan(struct storeq *q)
{
    return atomic_exchange(&q->rescan, false);
}

void storeq_idle(struct storeq *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->writing || q->claim == 1 || q->claim == 2)
        pthread_cond_wait(&q->cond, &q->lock);
    pthread_mutex_unlock(&q->lock);
}

void storeq_stop(struct storeq *q)
{
    if (q == NULL)
        return;
    storeq_idle(q);
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    /* A claim nobody took: its messages are due again now rather than after their lease. */
    if (q->claim == 3 && q->claim_n > 0) {
        int64_t *seqs = malloc(q->claim_n * sizeof *seqs);
        for (size_t i = 0; i < q->claim_n; i++) {
            if (seqs)
                seqs[i] = q->claimed[i].seq;
            free(q->claimed[i].body);
        }
        if (seqs)
            q->store->ops->release(q->store, seqs, q->claim_n, q->claim_now, NULL);
        free(seqs);
    }
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    storeq_free(q);
}
