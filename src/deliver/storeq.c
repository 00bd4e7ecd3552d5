/* The engine's store thread (storeq.h): every store call the delivery engine makes. */
#include "deliver/storeq.h"

#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RETRY_MIN_MS 100  /* a failed write of results is tried again after this, */
#define RETRY_MAX_MS 2000 /* doubling up to this */

/* Where the one claim at a time stands. */
enum claim_state {
    CLAIM_NONE,    /* nothing asked: storeq_claim() may ask */
    CLAIM_ASKED,   /* asked for, waiting for the store thread */
    CLAIM_RUNNING, /* the store thread is claiming */
    CLAIM_READY,   /* claimed (perhaps nothing): the engine takes it */
};

struct storeq {
    struct store *store;
    void (*wake)(void *ctx);
    void *wake_ctx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* work for the thread, or work it finished */

    /* Under lock. */
    bool stopping;
    int64_t give_up_at; /* monotonic: at stop, when a failing write is dropped */
    struct storeq_results batches[2];
    int filling;           /* the batch the engine fills; only the engine changes it */
    bool writing;          /* the other batch is handed over and not yet written */
    int64_t next_write_ms; /* monotonic: when a failed write is tried again */
    int retry_ms;
    enum claim_state claim;
    size_t claim_max, claim_n, claim_cap;
    int64_t claim_now, claim_lease;
    struct due_message *claimed;
    struct storeq_req *req_head, *req_tail;   /* posted, not yet run */
    struct storeq_req *done_head, *done_tail; /* answered, not yet taken */
    bool req_running;

    atomic_bool failing;
    atomic_bool rescan;
};

struct storeq_req *storeq_req_new(enum storeq_op op, size_t nseqs)
{
    struct storeq_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->op = op;
    if (nseqs > 0 && (r->seqs = malloc(nseqs * sizeof *r->seqs)) == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

void storeq_req_free(struct storeq_req *r)
{
    if (r == NULL)
        return;
    if (r->op == STOREQ_APP_LOAD && r->rc == CH_OK)
        stored_app_release(&r->app);
    free(r->seqs);
    free(r);
}

/* Writes one batch; false when the store refused it (it is kept and tried again). */
static bool write_batch(struct storeq *q, struct storeq_results *b)
{
    struct attempt_result *r = malloc(b->n * sizeof *r);
    if (r == NULL)
        return false;
    bool begin_resolved = false;
    for (size_t i = 0; i < b->n; i++) {
        /* The strings live in the item; a batch that grew (realloc) moved them, so they are
         * pointed at again here rather than trusted from when the result was made. */
        struct storeq_result *it = &b->item[i];
        r[i] = it->r;
        r[i].error = it->r.error ? it->error : NULL;
        r[i].response = it->r.response ? it->response : NULL;
        r[i].app_id = it->r.app_id ? it->app_id : NULL;
        r[i].signature = it->r.signature ? it->signature : NULL;
        begin_resolved |= it->begin_resolved;
    }
    struct ch_error err = {0};
    ch_code rc = store_record_attempts(q->store, r, b->n, &err);
    free(r);
    if (rc != CH_OK) {
        log_error("engine: cannot record %zu attempts (kept, tried again): %s", b->n, err.message);
        return false;
    }
    if (begin_resolved) {
        atomic_store(&q->rescan, true);
        q->wake(q->wake_ctx);
    }
    return true;
}

static void run_request(struct storeq *q, struct storeq_req *r)
{
    struct ch_error err = {0};
    struct store *s = q->store;
    switch (r->op) {
    case STOREQ_APP_LOAD:
        r->rc = store_app_get(s, r->app_id, &r->app, &err);
        if (r->rc != CH_OK && r->rc != CH_ENOTFOUND)
            log_warn("engine: cannot load voice app '%s': %s", r->app_id, err.message);
        break;
    case STOREQ_RELEASE:
        r->rc = store_release(s, r->seqs, r->nseqs, r->at, &err);
        if (r->rc != CH_OK)
            log_warn("engine: cannot give back %zu messages (their leases will): %s", r->nseqs,
                     err.message);
        break;
    case STOREQ_RENEW:
        r->rc = store_renew(s, r->seqs, r->nseqs, r->now, r->at, &err);
        if (r->rc != CH_OK)
            log_warn("engine: cannot renew leases: %s", err.message);
        break;
    case STOREQ_RATE_TAKE:
        r->rc = store_rate_take(s, r->app_id, r->limit, r->want, &r->granted, &err);
        if (r->rc != CH_OK) {
            r->granted = 0;
            log_warn("engine: cannot read the rate limit of voice app '%s': %s", r->app_id,
                     err.message);
        }
        break;
    case STOREQ_APPS_VERSION:
        r->rc = store_apps_version(s, &r->version, &err);
        break;
    }
}

static bool answers(const struct storeq_req *r)
{
    return r->op != STOREQ_RELEASE && r->op != STOREQ_RENEW;
}

/* Runs every posted request; the caller holds the lock, which is let go meanwhile. */
static void run_requests(struct storeq *q)
{
    struct storeq_req *list = q->req_head;
    q->req_head = q->req_tail = NULL;
    q->req_running = true;
    pthread_mutex_unlock(&q->lock);
    bool answered = false;
    struct storeq_req *done = NULL, **tail = &done;
    while (list) {
        struct storeq_req *r = list;
        list = r->next;
        r->next = NULL;
        run_request(q, r);
        if (answers(r)) {
            *tail = r;
            tail = &r->next;
            answered = true;
        } else {
            storeq_req_free(r);
        }
    }
    pthread_mutex_lock(&q->lock);
    if (done) {
        if (q->done_tail)
            q->done_tail->next = done;
        else
            q->done_head = done;
        for (q->done_tail = done; q->done_tail->next; q->done_tail = q->done_tail->next) {
        }
    }
    q->req_running = false;
    pthread_cond_broadcast(&q->cond);
    if (answered) {
        pthread_mutex_unlock(&q->lock);
        q->wake(q->wake_ctx);
        pthread_mutex_lock(&q->lock);
    }
}

static void run_claim(struct storeq *q)
{
    q->claim = CLAIM_RUNNING;
    size_t max = q->claim_max, n = 0;
    int64_t now = q->claim_now, lease = q->claim_lease;
    pthread_mutex_unlock(&q->lock);
    struct ch_error err = {0};
    if (store_claim_due(q->store, now, lease, q->claimed, max, &n, &err) != CH_OK) {
        log_warn("engine: cannot read due messages: %s", err.message);
        n = 0;
    }
    pthread_mutex_lock(&q->lock);
    q->claim_n = n;
    q->claim = CLAIM_READY;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    q->wake(q->wake_ctx);
    pthread_mutex_lock(&q->lock);
}

/* Tries the handed-over batch once; on failure schedules the next try. Lock held. */
static void run_write(struct storeq *q)
{
    struct storeq_results *b = &q->batches[1 - q->filling];
    pthread_mutex_unlock(&q->lock);
    bool ok = write_batch(q, b);
    pthread_mutex_lock(&q->lock);
    if (ok) {
        b->n = 0;
        q->writing = false;
        q->retry_ms = 0;
        atomic_store(&q->failing, false);
        pthread_cond_broadcast(&q->cond);
        return;
    }
    atomic_store(&q->failing, true);
    q->retry_ms = q->retry_ms ? q->retry_ms * 2 : RETRY_MIN_MS;
    if (q->retry_ms > RETRY_MAX_MS)
        q->retry_ms = RETRY_MAX_MS;
    q->next_write_ms = clock_mono_ms() + q->retry_ms;
    if (q->stopping && clock_mono_ms() >= q->give_up_at) {
        log_error("engine: dropping %zu attempt results at stop; their leases will make them "
                  "due again",
                  b->n);
        b->n = 0;
        q->writing = false;
        pthread_cond_broadcast(&q->cond);
    }
}

static void wait_until(struct storeq *q, int64_t mono_ms)
{
    int64_t left = mono_ms - clock_mono_ms();
    if (left <= 0)
        return;
    struct timespec ts = clock_timespec(mono_ms);
    pthread_cond_timedwait(&q->cond, &q->lock, &ts);
}

static void *storeq_main(void *arg)
{
    struct storeq *q = arg;
    thread_name("ch-store");
    pthread_mutex_lock(&q->lock);
    for (;;) {
        /* One turn each, in a round: while results keep coming (a write as soon as the last
         * one ends), lease renewals, app loads and claims still get theirs. */
        bool worked = false;
        if (q->req_head) {
            run_requests(q);
            worked = true;
        }
        if (q->writing && clock_mono_ms() >= q->next_write_ms) {
            run_write(q);
            worked = true;
        }
        if (q->claim == CLAIM_ASKED) {
            if (q->stopping) {
                q->claim = CLAIM_READY; /* nothing is claimed at stop */
                q->claim_n = 0;
                pthread_cond_broadcast(&q->cond);
            } else {
                run_claim(q);
            }
            worked = true;
        }
        if (worked)
            continue;
        if (q->stopping && !q->writing && q->batches[q->filling].n > 0) {
            /* The engine has stopped filling: its last batch is written here. */
            q->filling = 1 - q->filling;
            q->writing = true;
            q->next_write_ms = 0;
            continue;
        }
        if (q->stopping && !q->writing)
            break;
        if (q->writing)
            wait_until(q, q->next_write_ms);
        else
            pthread_cond_wait(&q->cond, &q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* Frees what storeq_start() allocated (the thread is not running). */
static void storeq_free(struct storeq *q)
{
    free(q->batches[0].item);
    free(q->batches[1].item);
    free(q->claimed);
    for (struct storeq_req *r = q->req_head, *next; r; r = next) {
        next = r->next;
        storeq_req_free(r);
    }
    for (struct storeq_req *r = q->done_head, *next; r; r = next) {
        next = r->next;
        storeq_req_free(r);
    }
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
    q->claimed = calloc(claim_batch, sizeof *q->claimed);
    if (q->claimed == NULL) {
        storeq_free(q);
        return ch_error_set(err, CH_ENOMEM, "out of memory starting the store thread");
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&q->thread, NULL, storeq_main, q) != 0) {
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->cond);
        storeq_free(q);
        return ch_error_set(err, CH_ENOMEM, "cannot start the store thread");
    }
    *out = q;
    return CH_OK;
}

struct storeq_result *storeq_result_add(struct storeq *q)
{
    /* Only the engine changes `filling` and touches that batch, so no lock is needed. */
    struct storeq_results *b = &q->batches[q->filling];
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : STOREQ_RESULT_BATCH;
        struct storeq_result *item = realloc(b->item, cap * sizeof *item);
        if (item == NULL)
            return NULL;
        b->item = item;
        b->cap = cap;
    }
    struct storeq_result *p = &b->item[b->n++];
    memset(p, 0, sizeof *p);
    return p;
}

size_t storeq_unwritten(struct storeq *q)
{
    return q->batches[q->filling].n;
}

bool storeq_flush(struct storeq *q, bool wait)
{
    pthread_mutex_lock(&q->lock);
    while (wait && q->writing)
        pthread_cond_wait(&q->cond, &q->lock);
    bool handed = !q->writing;
    if (handed && q->batches[q->filling].n > 0) {
        q->filling = 1 - q->filling;
        q->writing = true;
        q->next_write_ms = 0;
        pthread_cond_broadcast(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
    return handed;
}

bool storeq_failing(struct storeq *q)
{
    return atomic_load(&q->failing);
}

bool storeq_claim(struct storeq *q, size_t max, int64_t now, int64_t lease_until)
{
    pthread_mutex_lock(&q->lock);
    bool asked = q->claim == CLAIM_NONE;
    if (asked) {
        q->claim = CLAIM_ASKED;
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
    bool ready = q->claim == CLAIM_READY;
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
    q->claim = CLAIM_NONE;
    q->claim_n = 0;
    pthread_mutex_unlock(&q->lock);
}

void storeq_post(struct storeq *q, struct storeq_req *r)
{
    r->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->req_tail)
        q->req_tail->next = r;
    else
        q->req_head = r;
    q->req_tail = r;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

struct storeq_req *storeq_done(struct storeq *q)
{
    pthread_mutex_lock(&q->lock);
    struct storeq_req *list = q->done_head;
    q->done_head = q->done_tail = NULL;
    pthread_mutex_unlock(&q->lock);
    return list;
}

bool storeq_rescan(struct storeq *q)
{
    return atomic_exchange(&q->rescan, false);
}

void storeq_idle(struct storeq *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->claim == CLAIM_ASKED || q->claim == CLAIM_RUNNING || q->req_head || q->req_running)
        pthread_cond_wait(&q->cond, &q->lock);
    pthread_mutex_unlock(&q->lock);
}

void storeq_stop(struct storeq *q, int give_up_ms)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    q->give_up_at = clock_mono_ms() + give_up_ms;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    /* A claim nobody took: its messages are due again now rather than after their lease. */
    if (q->claim == CLAIM_READY && q->claim_n > 0) {
        int64_t *seqs = malloc(q->claim_n * sizeof *seqs);
        for (size_t i = 0; i < q->claim_n; i++) {
            if (seqs)
                seqs[i] = q->claimed[i].seq;
            free(q->claimed[i].body);
        }
        if (seqs)
            store_release(q->store, seqs, q->claim_n, q->claim_now, NULL);
        free(seqs);
    }
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    storeq_free(q);
}
