/*
 * The delivery engine: a libcurl multi loop on its own thread. Messages wait in per-app FIFO
 * queues in memory; each app has an in-flight cap and an optional rate limit; every store call
 * (claims, results, app loads, releases, renewals) runs on the store thread (storeq.c), so the
 * loop never waits on the database. What the loop drives lives beside it: the settings each
 * attempt starts with (appgen.c), the easy handles (transfer.c) with the SSRF guard on every
 * socket and request (ssrf.c), the retry policy (retry.c) and the set of seqs held (seqset.c).
 */
#include "deliver/engine.h"

#include <callhook/callhook.h>
#include <curl/curl.h>

#include "deliver/app.h"
#include "deliver/appgen.h"
#include "deliver/retry.h"
#include "deliver/seqset.h"
#include "deliver/storeq.h"
#include "deliver/transfer.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESULT_BATCH    STOREQ_RESULT_BATCH
#define RESULT_FLUSH_MS 10
#define APP_BUCKETS     256
#define RELOAD_RETRY_MS 1000 /* an app whose settings could not be read is tried again */
#define VERSION_POLL_MS 500  /* how often the store is asked whether any app changed */
#define TOKEN_RETRY_MS  20   /* an app refused grants asks again after this */
#define RATE_HELD_MIN   64   /* a rate-limited app keeps this many (or a second's worth) */

struct job {
    struct job *next;
    struct due_message m; /* owns m.body */
    int64_t ingested_ms;  /* wall clock: for the latency histogram */
    int64_t queued_mono;  /* when it entered the app's queue */
};

struct app_state {
    struct app_state *next;       /* hash chain */
    struct app_state *ready_next; /* the engine's list of apps with queued work */
    bool on_ready;
    char id[APP_ID_MAX + 1];
    uint64_t generation; /* of the engine's change counter cur was loaded for; 0: none */
    struct app_gen *cur; /* the settings new attempts start with (a reference) */
    bool loading;        /* a load is asked of the store thread */
    uint64_t load_generation;
    int64_t next_load_ms;  /* monotonic: after a failed load */
    struct transfer *idle; /* finished transfers set up with cur, for reuse */
    int in_flight;
    int queued;
    struct job *head, *tail;
    /* The rate limit: grants from the store, spent at once or forfeited. */
    int64_t tokens;
    int64_t tokens_until_ms; /* monotonic */
    bool taking;             /* a grant is asked of the store thread */
    int64_t take_asked_ms;
    int64_t next_take_ms;
};

struct engine {
    struct engine_config cfg;
    CURLM *multi;
    pthread_t thread;
    bool started;
    atomic_bool stopping;
    atomic_uint_fast64_t generation; /* bumped when any app changes, here or on another node */
    atomic_bool wake_scan;

    pthread_mutex_t inbox_lock;
    struct job *inbox_head, *inbox_tail;

    /* Owned by the engine thread. */
    struct app_state *apps[APP_BUCKETS];
    struct app_state *ready; /* apps with queued messages: what start_ready() walks */
    struct seq_set in_memory;
    int queued;
    int64_t queued_bytes; /* of the queued jobs: records and job structs */
    int in_flight;
    struct transfer *transfers;
    int64_t next_scan_ms; /* monotonic, like every timer below */
    int64_t next_renew_ms;
    int64_t next_poll_ms;
    int64_t next_timer_ms;   /* the earliest per-app timer (grants, reloads) */
    int64_t first_result_ms; /* when the oldest unwritten result came; 0: none */
    struct storeq *sq;       /* every store call, on its own thread */
    bool claiming;           /* a claim is asked for and not yet taken */
    bool polling;            /* a change-counter read is asked for */
    bool have_version;
    int64_t apps_version; /* the store's change counter as last read */
};

/* ---- timers ---- */

/* Brings the loop's next wakeup forward to at (monotonic ms). */
static void timer_at(struct engine *e, int64_t at)
{
    if (e->next_timer_ms == 0 || at < e->next_timer_ms)
        e->next_timer_ms = at;
}

/* ---- apps ---- */

static size_t app_bucket(const char *id)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)(h % APP_BUCKETS);
}

static struct app_state *app_lookup(struct engine *e, const char *id)
{
    for (struct app_state *a = e->apps[app_bucket(id)]; a; a = a->next) {
        if (strcmp(a->id, id) == 0)
            return a;
    }
    return NULL;
}

static struct app_state *app_find(struct engine *e, const char *id)
{
    struct app_state *a = app_lookup(e, id);
    if (a != NULL)
        return a;
    if ((a = calloc(1, sizeof *a)) == NULL)
        return NULL;
    size_t b = app_bucket(id);
    snprintf(a->id, sizeof a->id, "%s", id);
    a->next = e->apps[b];
    e->apps[b] = a;
    return a;
}

/* Frees the app's idle transfers (set up with settings that are no longer current). */
static void drop_idle(struct app_state *a)
{
    while (a->idle) {
        struct transfer *t = a->idle;
        a->idle = t->next;
        transfer_free(t);
    }
}

static void mark_ready(struct engine *e, struct app_state *a)
{
    if (!a->on_ready) {
        a->on_ready = true;
        a->ready_next = e->ready;
        e->ready = a;
    }
}

/* True when the app's settings are those of the engine's latest change counter; otherwise asks
 * the store thread for them (once) and false: nothing new starts under settings a change has
 * replaced. */
static bool app_current(struct engine *e, struct app_state *a)
{
    uint64_t want = atomic_load(&e->generation) + 1; /* never 0 */
    if (a->generation == want)
        return true;
    int64_t now = clock_mono_ms();
    if (a->loading)
        return false;
    if (now < a->next_load_ms) {
        timer_at(e, a->next_load_ms);
        return false;
    }
    struct storeq_req *r = storeq_req_new(STOREQ_APP_LOAD, 0);
    if (r == NULL) {
        a->next_load_ms = now + RELOAD_RETRY_MS;
        timer_at(e, a->next_load_ms);
        return false;
    }
    snprintf(r->app_id, sizeof r->app_id, "%s", a->id);
    a->loading = true;
    a->load_generation = want;
    storeq_post(e->sq, r);
    return false;
}

/* The store thread's answer to app_current()'s question. */
static void app_loaded(struct engine *e, struct storeq_req *r)
{
    struct app_state *a = app_lookup(e, r->app_id);
    if (a == NULL || !a->loading)
        return;
    a->loading = false;
    mark_ready(e, a);
    if (r->rc != CH_OK && r->rc != CH_ENOTFOUND) {
        a->next_load_ms = clock_mono_ms() + RELOAD_RETRY_MS; /* the store is unreachable */
        timer_at(e, a->next_load_ms);
        return;
    }
    if (a->load_generation != atomic_load(&e->generation) + 1)
        return; /* changed again meanwhile: app_current() asks once more */
    struct app_gen *g = app_gen_new(a->id, r->rc, &r->app, e->cfg.allowed, e->cfg.nallowed);
    if (g == NULL) {
        log_error("engine: out of memory loading voice app '%s'", a->id);
        a->next_load_ms = clock_mono_ms() + RELOAD_RETRY_MS;
        timer_at(e, a->next_load_ms);
        return;
    }
    drop_idle(a);
    app_gen_unref(a->cur);
    a->cur = g;
    a->generation = a->load_generation;
    a->tokens = 0;
}

/* ---- results ---- */

static size_t unwritten(struct engine *e)
{
    return storeq_unwritten(e->sq);
}

/* Hands the results gathered so far to the store thread, unless it is still writing the last
 * batch: then they keep gathering (the batch grows) and go with the next hand-over. */
static void flush_results(struct engine *e)
{
    if (unwritten(e) == 0)
        return;
    /* Not handed over: tried again RESULT_FLUSH_MS from now, not on every turn. */
    e->first_result_ms = storeq_flush(e->sq, false) ? 0 : clock_mono_ms();
}

/* A result for job; NULL only when out of memory (the lease brings the message back). */
static struct storeq_result *new_result(struct engine *e, const struct job *job)
{
    if (unwritten(e) >= RESULT_BATCH)
        flush_results(e);
    struct storeq_result *p = storeq_result_add(e->sq);
    if (p == NULL) {
        log_error("engine: out of memory keeping the result of %s", job->m.msg_id);
        return NULL;
    }
    p->r.seq = job->m.seq;
    p->r.at_ms = clock_wall_ms();
    snprintf(p->app_id, sizeof p->app_id, "%s", job->m.app_id);
    p->r.app_id = p->app_id;
    return p;
}

static void job_free(struct engine *e, struct job *job)
{
    seq_set_remove(&e->in_memory, job->m.seq);
    free(job->m.body);
    free(job);
}

/* Gives messages back to the store (due at next_attempt_at), through the store thread. */
static void release_seqs(struct engine *e, const int64_t *seqs, size_t n, int64_t next_attempt_at)
{
    if (n == 0)
        return;
    struct storeq_req *r = storeq_req_new(STOREQ_RELEASE, n);
    if (r == NULL)
        return; /* their leases bring them back */
    memcpy(r->seqs, seqs, n * sizeof *seqs);
    r->nseqs = n;
    r->at = next_attempt_at;
    storeq_post(e->sq, r);
}

/* ---- transfers ---- */

static bool start_transfer(struct engine *e, struct app_state *a, struct job *job)
{
    const char *url = app_config_url(&a->cur->cfg, job->m.event);
    struct transfer *t = a->idle;
    if (t != NULL)
        a->idle = t->next;
    else if ((t = transfer_new(a, a->cur)) == NULL)
        return false;
    t->prev = t->next = NULL;
    t->job = job;
    struct ch_error err = {0};
    if (url == NULL || transfer_prepare(t, url, job->m.msg_id, job->m.event, job->m.body,
                                        job->m.body_len, &err) != CH_OK) {
        log_error("engine: cannot prepare delivery of %s: %s", job->m.msg_id,
                  err.message[0] ? err.message : "no URL");
        transfer_free(t);
        return false;
    }
    CURL *h = t->easy;
    if (curl_multi_add_handle(e->multi, h) != CURLM_OK) {
        transfer_free(t);
        return false;
    }
    t->next = e->transfers;
    if (e->transfers)
        e->transfers->prev = t;
    e->transfers = t;
    a->in_flight++;
    e->in_flight++;
    atomic_fetch_add(&e->cfg.metrics->in_flight, 1);
    return true;
}

/* Takes a transfer off the multi handle and the list; it goes back to its app's idle list
 * while the app's settings are still those it was set up with. */
static void end_transfer(struct engine *e, struct transfer *t)
{
    curl_multi_remove_handle(e->multi, t->easy);
    if (t->prev)
        t->prev->next = t->next;
    else
        e->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    struct app_state *a = t->app;
    a->in_flight--;
    e->in_flight--;
    atomic_fetch_sub(&e->cfg.metrics->in_flight, 1);
    t->job = NULL;
    if (t->gen == a->cur && !atomic_load(&e->stopping)) {
        t->prev = NULL;
        t->next = a->idle;
        a->idle = t;
    } else {
        transfer_free(t);
    }
}

static void observe_latency(struct metrics *m, int64_t ms)
{
    static const int64_t bounds[METRICS_NBUCKETS] = METRICS_LATENCY_BUCKETS_MS;
    int b = 0;
    while (b < METRICS_NBUCKETS && ms > bounds[b])
        b++;
    atomic_fetch_add(&m->latency_bucket[b], 1);
    atomic_fetch_add(&m->latency_sum_ms, ms);
    atomic_fetch_add(&m->latency_count, 1);
}

static void finish_transfer(struct engine *e, CURL *h, CURLcode code)
{
    struct transfer *t = transfer_of(h);
    long status = transfer_http_status(t);
    struct app_state *a = t->app;
    struct job *job = t->job;
    /* The attempt is judged by the settings it started with. */
    const struct app_config *cfg = &t->gen->cfg;

    struct storeq_result *p = new_result(e, job);
    if (p == NULL) {
        end_transfer(e, t);
        job_free(e, job);
        return;
    }
    int64_t end = clock_mono_ms();
    p->r.duration_ms = end - t->start_ms;
    p->r.http_status = code == CURLE_OK ? (int)status : 0;
    memcpy(p->response, t->response, t->response_len + 1);
    p->r.response = p->response;
    p->r.response_len = t->response_len;
    /* What it signed with, for the console's request headers (the rest is rebuilt). */
    p->r.signed_at = t->signed_at;
    memcpy(p->signature, t->sig_short, sizeof p->signature);
    p->r.signature = p->signature;
    int done = job->m.attempts + 1;
    bool begin = strcmp(job->m.event, "begin-call") == 0;

    if (code == CURLE_OK && status >= 200 && status < 300) {
        p->r.new_status = MSG_DELIVERED;
        p->begin_resolved = begin;
        atomic_fetch_add(&e->cfg.metrics->delivered, 1);
        observe_latency(e->cfg.metrics, clock_wall_ms() - job->ingested_ms);
    } else {
        enum failure_class fc = code == CURLE_OK ? FAILURE_http : retry_classify(code, t->refused);
        atomic_fetch_add(&e->cfg.metrics->failed[fc], 1);
        p->r.error_class = failure_class_name(fc);
        if (code == CURLE_OK)
            snprintf(p->error, sizeof p->error, "HTTP %ld", status);
        else if (t->refused)
            snprintf(p->error, sizeof p->error,
                     "refused: %s is an internal address (allow it with allowPrivateNetwork, or "
                     "--allow-private in callhook app put)",
                     t->refused_addr);
        else
            snprintf(p->error, sizeof p->error, "%s", transfer_error_text(t, code));
        p->r.error = p->error;
        if (code == CURLE_OK && status == 410) {
            /* The receiver says this endpoint is gone: stop sending until an admin re-enables
             * it. The message keeps its schedule and goes out again after that. */
            p->r.disable_app = true;
            snprintf(p->error, sizeof p->error, "HTTP 410 Gone: the endpoint was disabled");
            if (a->cur)
                a->cur->enabled = false;
            log_warn("engine: voice app '%s' answered 410 Gone; disabled", a->id);
        }
        long delay = t->refused ? -1 : retry_delay_s(cfg, done, t->retry_after_s, (unsigned)rand());
        if (delay < 0) {
            p->r.new_status = MSG_DEAD;
            p->begin_resolved = begin;
            atomic_fetch_add(&e->cfg.metrics->dead, 1);
        } else {
            /* Due times are whole seconds of the wall clock (they are stored): round up, so
             * the delay is never shortened. The loop's own timer is monotonic. */
            int64_t wall = clock_wall_ms();
            p->r.new_status = MSG_PENDING;
            p->r.next_attempt_at = (wall + 999) / 1000 + delay;
            int64_t due = end + (p->r.next_attempt_at * 1000 - wall);
            if (e->next_scan_ms > due)
                e->next_scan_ms = due;
        }
    }
    end_transfer(e, t);
    job_free(e, job);
}

/* ---- queues ---- */

static int64_t job_bytes(const struct job *job)
{
    return (int64_t)(sizeof *job + job->m.body_len);
}

static bool queue_full(const struct engine *e)
{
    return e->queued >= e->cfg.max_queued || e->queued_bytes >= e->cfg.max_queued_bytes;
}

/* Whether job may join the queue without going over the memory bound (a job alone in an empty
 * queue always may, or nothing could ever be sent). */
static bool fits(const struct engine *e, const struct job *job)
{
    return e->queued == 0 || (e->queued < e->cfg.max_queued &&
                              e->queued_bytes + job_bytes(job) <= e->cfg.max_queued_bytes);
}

static void count_queued(struct engine *e, const struct job *job, int sign)
{
    e->queued += sign;
    e->queued_bytes += sign * job_bytes(job);
    atomic_fetch_add(&e->cfg.metrics->queued_bytes, sign * job_bytes(job));
    atomic_fetch_add(&e->cfg.metrics->queued, sign);
}

static void enqueue(struct engine *e, struct job *job)
{
    struct app_state *a = app_find(e, job->m.app_id);
    if (a == NULL || !seq_set_add(&e->in_memory, job->m.seq)) {
        /* Out of memory: the lease brings the message back later. */
        free(job->m.body);
        free(job);
        return;
    }
    job->next = NULL;
    job->queued_mono = clock_mono_ms();
    if (a->tail)
        a->tail->next = job;
    else
        a->head = job;
    a->tail = job;
    a->queued++;
    mark_ready(e, a);
    count_queued(e, job, 1);
}

static struct job *dequeue(struct engine *e, struct app_state *a)
{
    struct job *job = a->head;
    if (job) {
        a->head = job->next;
        if (a->head == NULL)
            a->tail = NULL;
        a->queued--;
        count_queued(e, job, -1);
    }
    return job;
}

/* Gives a list of jobs back to the store, due at next_attempt_at, and frees them. */
static void release_jobs(struct engine *e, struct job *list, int64_t next_attempt_at)
{
    int64_t seqs[256];
    size_t n = 0;
    while (list) {
        struct job *next = list->next;
        seqs[n++] = list->m.seq;
        job_free(e, list);
        if (n == 256) {
            release_seqs(e, seqs, n, next_attempt_at);
            n = 0;
        }
        list = next;
    }
    release_seqs(e, seqs, n, next_attempt_at);
}

/* Gives every queued message of an app back to the store (disabled now, or at stop). They are
 * due from the oldest one's creation, not from now: a claim takes due messages in due-time
 * order, and "now" would put them behind the app's later messages still in the store (an app
 * seen as disabled a moment after it was enabled again sent its backlog out of order). */
static void release_app(struct engine *e, struct app_state *a)
{
    struct job *list = NULL, **tail = &list, *job;
    int64_t due = 0;
    while ((job = dequeue(e, a)) != NULL) {
        if (due == 0 || job->m.created_at < due)
            due = job->m.created_at;
        *tail = job;
        tail = &job->next;
        job->next = NULL;
    }
    release_jobs(e, list, due);
}

/* A message that cannot be sent (its app or URL is gone, or its URL names an address the
 * guard refuses) ends as dead with the reason, without an HTTP request. */
static void fail_without_attempt(struct engine *e, struct job *job, enum failure_class fc,
                                 const char *why)
{
    struct storeq_result *p = new_result(e, job);
    if (p != NULL) {
        snprintf(p->error, sizeof p->error, "%s", why);
        p->r.error = p->error;
        p->r.error_class = failure_class_name(fc);
        p->r.new_status = MSG_DEAD;
        p->begin_resolved = strcmp(job->m.event, "begin-call") == 0;
        atomic_fetch_add(&e->cfg.metrics->dead, 1);
        if (fc == FAILURE_refused)
            atomic_fetch_add(&e->cfg.metrics->failed[fc], 1);
    }
    job_free(e, job);
}

/* ---- the rate limit ---- */

/* A rate-limited app keeps about a second's worth in memory; the rest goes back to the store,
 * due a second later per second's worth, so what the limit holds back waits on disk and claims
 * are not filled with it. */
static void rate_defer(struct engine *e, struct app_state *a, long limit)
{
    int keep = limit > RATE_HELD_MIN ? (int)limit : RATE_HELD_MIN;
    if (a->queued <= keep)
        return;
    struct job *last = a->head;
    for (int i = 1; i < keep; i++)
        last = last->next;
    struct job *rest = last->next;
    last->next = NULL;
    a->tail = last;
    int64_t now_s = clock_wall_s();
    int64_t second = 1;
    while (rest) {
        struct job *chunk = rest, *end = rest;
        count_queued(e, end, -1);
        a->queued--;
        for (long i = 1; i < limit && end->next; i++) {
            end = end->next;
            count_queued(e, end, -1);
            a->queued--;
        }
        rest = end->next;
        end->next = NULL;
        atomic_fetch_add(&e->cfg.metrics->rate_deferred, 1);
        release_jobs(e, chunk, now_s + second++);
    }
}

/* True when the app may start one more delivery now (and counts it); otherwise asks the store
 * thread for a grant, once at a time. */
static bool rate_allows(struct engine *e, struct app_state *a, long limit)
{
    int64_t now = clock_mono_ms();
    if (a->tokens > 0 && now >= a->tokens_until_ms)
        a->tokens = 0; /* a grant not spent in time is forfeited, so a second never overfills */
    if (a->tokens > 0) {
        a->tokens--;
        return true;
    }
    if (a->taking)
        return false;
    if (now < a->next_take_ms) {
        timer_at(e, a->next_take_ms);
        return false;
    }
    struct storeq_req *r = storeq_req_new(STOREQ_RATE_TAKE, 0);
    if (r == NULL)
        return false;
    /* Ask for what can start at once, and a tenth of a second's worth at most, so grants to
     * several nodes interleave instead of one node taking the whole second. */
    int64_t want = a->queued;
    int64_t slots = a->cur->cfg.max_in_flight - a->in_flight;
    int64_t tenth = limit / 10 > 0 ? limit / 10 : 1;
    if (want > slots)
        want = slots;
    if (want > tenth)
        want = tenth;
    if (want <= 0) {
        storeq_req_free(r);
        return false;
    }
    snprintf(r->app_id, sizeof r->app_id, "%s", a->id);
    r->limit = limit;
    r->want = want;
    a->taking = true;
    a->take_asked_ms = now;
    storeq_post(e->sq, r);
    return false;
}

static void rate_granted(struct engine *e, struct storeq_req *r)
{
    struct app_state *a = app_lookup(e, r->app_id);
    if (a == NULL || !a->taking)
        return;
    a->taking = false;
    /* A grant is spent within STORE_RATE_SPEND_MS of asking for it, or not at all: the store
     * made it after the asking, so every start it allows falls within that much of the grant,
     * which the store's window counts (store.h). */
    a->tokens = r->granted;
    a->tokens_until_ms = a->take_asked_ms + STORE_RATE_SPEND_MS;
    /* Paced: a node asks for a tenth of a second's worth at most every tenth of a second, so
     * the starts spread over the second instead of leaving in one burst at its edge (where a
     * receiver's clock, a few ms off the sender's, would count two bursts in one second). */
    int64_t pace_ms = r->limit > 0 ? 1000 * r->want / r->limit : 0;
    a->next_take_ms = a->take_asked_ms + (pace_ms > TOKEN_RETRY_MS ? pace_ms : TOKEN_RETRY_MS);
    timer_at(e, a->next_take_ms);
    mark_ready(e, a);
}

/* ---- starting work ---- */

/* Starts what an app's queue, its in-flight cap and its rate limit allow (or settles its queue
 * when the app is gone or disabled). */
static void start_app(struct engine *e, struct app_state *a)
{
    if (!app_current(e, a))
        return; /* its settings are being read */
    struct app_gen *g = a->cur;
    if (g->missing) {
        struct job *job;
        while ((job = dequeue(e, a)) != NULL)
            fail_without_attempt(e, job, FAILURE_other, "the voice app was deleted");
        return;
    }
    if (!g->enabled) {
        release_app(e, a);
        return;
    }
    long limit = g->cfg.rate_limit_per_s;
    /* While results cannot be written (the database is down), nothing new starts: what is in
     * flight finishes and its results are kept until the store takes them. */
    bool store_ok = !storeq_failing(e->sq);
    while (store_ok && a->head && a->in_flight < g->cfg.max_in_flight &&
           e->in_flight < e->cfg.max_in_flight) {
        if (limit > 0 && !rate_allows(e, a, limit))
            break;
        struct job *job = dequeue(e, a);
        if (app_config_url(&g->cfg, job->m.event) == NULL) {
            fail_without_attempt(e, job, FAILURE_other, "no URL is configured for this event");
            continue;
        }
        const char *refused = app_gen_refused(g, job->m.event);
        if (refused[0]) {
            char why[160];
            snprintf(why, sizeof why,
                     "refused: %s is an internal address (allow it with allowPrivateNetwork, or "
                     "--allow-private in callhook app put)",
                     refused);
            fail_without_attempt(e, job, FAILURE_refused, why);
            continue;
        }
        if (limit > 0) {
            atomic_fetch_add(&e->cfg.metrics->rate_wait_ms, clock_mono_ms() - job->queued_mono);
            atomic_fetch_add(&e->cfg.metrics->rate_waits, 1);
        }
        if (!start_transfer(e, a, job)) {
            int64_t seq = job->m.seq;
            job_free(e, job);
            release_seqs(e, &seq, 1, clock_wall_s() + 5);
        }
    }
    if (limit > 0)
        rate_defer(e, a, limit);
}

/* Walks the apps with queued work only (not every app known), dropping those left empty. */
static void start_ready(struct engine *e)
{
    struct app_state **pp = &e->ready;
    while (*pp) {
        struct app_state *a = *pp;
        start_app(e, a);
        if (a->head == NULL) {
            *pp = a->ready_next;
            a->on_ready = false;
        } else {
            pp = &a->ready_next;
        }
    }
}

static void drain_inbox(struct engine *e)
{
    pthread_mutex_lock(&e->inbox_lock);
    struct job *list = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    pthread_mutex_unlock(&e->inbox_lock);
    /* Fresh events beyond the memory bound go back to the store, due now: the queue's scans
     * bring them in as it drains, so a slow endpoint cannot make serve's memory grow. */
    struct job *overflow = NULL, **tail = &overflow;
    while (list) {
        struct job *next = list->next;
        list->next = NULL;
        if (!fits(e, list)) {
            *tail = list;
            tail = &list->next;
            int64_t soon = clock_mono_ms() + e->cfg.scan_interval_ms / 10;
            if (e->next_scan_ms > soon)
                e->next_scan_ms = soon;
        } else {
            enqueue(e, list);
        }
        list = next;
    }
    /* They were never in the seq set: release_jobs() only frees them. */
    release_jobs(e, overflow, clock_wall_s());
}

/* Asks the store thread for due messages when there is room for them. */
static void scan_store(struct engine *e)
{
    int room = e->cfg.max_queued - e->queued;
    if (queue_full(e)) {
        /* Full: read again once the queue has drained, not on every turn. */
        e->next_scan_ms = clock_mono_ms() + e->cfg.scan_interval_ms / 10;
        return;
    }
    size_t max = (size_t)(room < e->cfg.claim_batch ? room : e->cfg.claim_batch);
    /* And no more than the bytes left hold, at the size of what is queued now. */
    if (e->queued > 0) {
        int64_t per_job = e->queued_bytes / e->queued + 1;
        int64_t fit = (e->cfg.max_queued_bytes - e->queued_bytes) / per_job + 1;
        if ((int64_t)max > fit)
            max = (size_t)fit;
    }
    int64_t now = clock_wall_s();
    if (storeq_claim(e->sq, max, now, now + e->cfg.lease_s)) {
        e->claiming = true;
        e->next_scan_ms = clock_mono_ms() + e->cfg.scan_interval_ms;
    }
}

/* Queues what the last claim brought, once it is there. */
static void take_claimed(struct engine *e)
{
    struct due_message *batch;
    size_t n, max;
    if (!e->claiming || !storeq_claimed(e->sq, &batch, &n, &max))
        return;
    struct job *back = NULL, **tail = &back;
    int64_t due = 0;
    for (size_t i = 0; i < n; i++) {
        if (seq_set_has(&e->in_memory, batch[i].seq)) {
            free(batch[i].body); /* already here: its lease ran out while it waited */
            continue;
        }
        struct job *job = malloc(sizeof *job);
        if (job == NULL) {
            free(batch[i].body);
            continue;
        }
        job->m = batch[i];
        job->ingested_ms = batch[i].created_at * 1000;
        job->next = NULL;
        if (fits(e, job)) {
            enqueue(e, job);
            continue;
        }
        /* Fresh events filled the queue while the claim ran: the rest go back, due from
         * their creation so they keep their place. */
        *tail = job;
        tail = &job->next;
        if (due == 0 || job->m.created_at < due)
            due = job->m.created_at;
    }
    release_jobs(e, back, due);
    storeq_claimed_done(e->sq);
    e->claiming = false;
    /* A full batch means more is due: read again at once. */
    if (n == max)
        e->next_scan_ms = 0;
}

/* Every third of a lease, the leases of everything held here (queued or in flight) are
 * extended, so another node never takes over work this one still has. */
static void renew_leases(struct engine *e)
{
    int64_t now = clock_mono_ms();
    if (now < e->next_renew_ms)
        return;
    e->next_renew_ms = now + (int64_t)e->cfg.lease_s * 1000 / 3;
    if (e->in_memory.count == 0)
        return;
    struct storeq_req *r = storeq_req_new(STOREQ_RENEW, e->in_memory.count);
    if (r == NULL)
        return;
    r->nseqs = seq_set_copy(&e->in_memory, r->seqs);
    r->now = clock_wall_s();
    r->at = r->now + e->cfg.lease_s;
    storeq_post(e->sq, r);
}

/* Every VERSION_POLL_MS the store's change counter is read: a Voice App changed on another
 * node (or by a 410 here) is reloaded within that, on every node. */
static void poll_apps_version(struct engine *e)
{
    int64_t now = clock_mono_ms();
    if (e->polling || now < e->next_poll_ms)
        return;
    e->next_poll_ms = now + VERSION_POLL_MS;
    struct storeq_req *r = storeq_req_new(STOREQ_APPS_VERSION, 0);
    if (r == NULL)
        return;
    e->polling = true;
    storeq_post(e->sq, r);
}

static void apps_version_read(struct engine *e, const struct storeq_req *r)
{
    e->polling = false;
    if (r->rc != CH_OK)
        return;
    if (e->have_version && r->version != e->apps_version) {
        atomic_fetch_add(&e->generation, 1);
        e->next_scan_ms = 0; /* an app enabled again may have due work */
        for (size_t b = 0; b < APP_BUCKETS; b++) {
            for (struct app_state *a = e->apps[b]; a; a = a->next) {
                if (a->head)
                    mark_ready(e, a);
            }
        }
    }
    e->have_version = true;
    e->apps_version = r->version;
}

/* Takes the store thread's answers. */
static void take_answers(struct engine *e)
{
    struct storeq_req *list = storeq_done(e->sq);
    while (list) {
        struct storeq_req *r = list;
        list = r->next;
        switch (r->op) {
        case STOREQ_APP_LOAD:
            app_loaded(e, r);
            break;
        case STOREQ_RATE_TAKE:
            rate_granted(e, r);
            break;
        case STOREQ_APPS_VERSION:
            apps_version_read(e, r);
            break;
        case STOREQ_RELEASE:
        case STOREQ_RENEW:
            break;
        }
        storeq_req_free(r);
    }
}

static void drain_transfers(struct engine *e)
{
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE)
            finish_transfer(e, msg->easy_handle, msg->data.result);
    }
}

/* At stop: abort what is still in flight and give everything in memory back to the store. */
static void give_back_everything(struct engine *e)
{
    int64_t now = clock_wall_s();
    while (e->transfers) {
        struct transfer *t = e->transfers;
        struct job *job = t->job;
        int64_t seq = job->m.seq;
        release_seqs(e, &seq, 1, now);
        end_transfer(e, t);
        job_free(e, job);
    }
    drain_inbox(e);
    for (size_t b = 0; b < APP_BUCKETS; b++) {
        for (struct app_state *a = e->apps[b]; a; a = a->next)
            release_app(e, a);
    }
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    thread_name("ch-engine");
    int64_t stop_deadline = 0;
    for (;;) {
        bool stopping = atomic_load(&e->stopping);
        if (stopping && stop_deadline == 0)
            stop_deadline = clock_mono_ms() + e->cfg.shutdown_grace_ms;
        if (stopping && (e->in_flight == 0 || clock_mono_ms() >= stop_deadline))
            break;
        if (!stopping) {
            take_answers(e);
            drain_inbox(e);
            take_claimed(e);
            if (atomic_exchange(&e->wake_scan, false) || storeq_rescan(e->sq))
                e->next_scan_ms = 0;
            if (!e->claiming && clock_mono_ms() >= e->next_scan_ms)
                scan_store(e);
            poll_apps_version(e);
            if (e->next_timer_ms && clock_mono_ms() >= e->next_timer_ms)
                e->next_timer_ms = 0; /* start_ready() sets it again for what still waits */
            start_ready(e);
            renew_leases(e);
        }
        int running = 0;
        curl_multi_perform(e->multi, &running);
        drain_transfers(e);
        /* Results are written in groups by the store thread: one transaction per
         * RESULT_FLUSH_MS or half a batch, not per loop turn, so the disk does not pace the
         * deliveries. Until then their leases hold the messages. */
        size_t nresults = unwritten(e);
        int64_t now = clock_mono_ms();
        if (nresults > 0 && e->first_result_ms == 0)
            e->first_result_ms = now;
        if (nresults >= RESULT_BATCH / 2 ||
            (nresults > 0 && now - e->first_result_ms >= RESULT_FLUSH_MS))
            flush_results(e);
        /* Slots freed by the transfers that just ended are filled in the same turn. */
        if (!stopping)
            start_ready(e);
        /* While a claim runs, the store thread wakes the loop when it is ready. */
        now = clock_mono_ms();
        int64_t wait = e->claiming ? e->cfg.scan_interval_ms : e->next_scan_ms - now;
        if (unwritten(e) > 0 && e->first_result_ms + RESULT_FLUSH_MS - now < wait)
            wait = e->first_result_ms + RESULT_FLUSH_MS - now;
        if (e->next_renew_ms - now < wait)
            wait = e->next_renew_ms - now;
        if (e->next_poll_ms - now < wait)
            wait = e->next_poll_ms - now;
        if (e->next_timer_ms && e->next_timer_ms - now < wait)
            wait = e->next_timer_ms - now;
        if (wait > e->cfg.scan_interval_ms)
            wait = e->cfg.scan_interval_ms;
        if (wait < 0)
            wait = 0;
        if (stopping)
            wait = 50;
        curl_multi_poll(e->multi, NULL, 0, (int)wait, NULL);
    }
    storeq_idle(e->sq);
    take_answers(e);
    take_claimed(e);
    give_back_everything(e);
    flush_results(e);
    return NULL;
}

/* ---- public ---- */

ch_code engine_new(const struct engine_config *cfg, struct engine **out, struct ch_error *err)
{
    struct engine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory creating the engine");
    e->cfg = *cfg;
    if (e->cfg.lease_s <= 0)
        e->cfg.lease_s = 300;
    if (e->cfg.scan_interval_ms <= 0)
        e->cfg.scan_interval_ms = 1000;
    if (e->cfg.claim_batch <= 0)
        e->cfg.claim_batch = 256;
    if (e->cfg.max_queued <= 0)
        e->cfg.max_queued = 20000;
    if (e->cfg.max_queued_bytes <= 0)
        e->cfg.max_queued_bytes = 16 << 20;
    if (e->cfg.max_in_flight <= 0)
        e->cfg.max_in_flight = 1024;
    if (e->cfg.shutdown_grace_ms <= 0)
        e->cfg.shutdown_grace_ms = 10000;
    e->multi = curl_multi_init();
    if (e->multi == NULL) {
        engine_free(e);
        return ch_error_set(err, CH_ENOMEM, "out of memory creating the engine");
    }
    curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 256L);
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, 1024L);
    pthread_mutex_init(&e->inbox_lock, NULL);
    *out = e;
    return CH_OK;
}

static void wake_from_store(void *ctx)
{
    struct engine *e = ctx;
    curl_multi_wakeup(e->multi);
}

ch_code engine_start(struct engine *e, struct ch_error *err)
{
    ch_code rc =
        storeq_start(e->cfg.store, (size_t)e->cfg.claim_batch, wake_from_store, e, &e->sq, err);
    if (rc != CH_OK)
        return rc;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        storeq_stop(e->sq, 0);
        e->sq = NULL;
        return ch_error_set(err, CH_ENOMEM, "cannot start the delivery thread");
    }
    e->started = true;
    return CH_OK;
}

void engine_submit(struct engine *e, struct due_message *m, int64_t ingested_ms)
{
    struct job *job = malloc(sizeof *job);
    if (job == NULL) {
        free(m->body); /* the lease brings it back */
        return;
    }
    job->m = *m;
    job->next = NULL;
    job->ingested_ms = ingested_ms;
    pthread_mutex_lock(&e->inbox_lock);
    if (e->inbox_tail)
        e->inbox_tail->next = job;
    else
        e->inbox_head = job;
    e->inbox_tail = job;
    pthread_mutex_unlock(&e->inbox_lock);
}

void engine_kick(struct engine *e)
{
    curl_multi_wakeup(e->multi);
}

void engine_app_changed(struct engine *e)
{
    atomic_fetch_add(&e->generation, 1);
    engine_wake(e);
}

const struct guard_cidr *engine_allowed(const struct engine *e, int *nallowed)
{
    *nallowed = e->cfg.nallowed;
    return e->cfg.allowed;
}

void engine_wake(struct engine *e)
{
    atomic_store(&e->wake_scan, true);
    curl_multi_wakeup(e->multi);
}

void engine_stop(struct engine *e)
{
    if (!e->started)
        return;
    atomic_store(&e->stopping, true);
    curl_multi_wakeup(e->multi);
    pthread_join(e->thread, NULL);
    /* What is left for the store (results, releases) is written now; while the database is
     * unreachable, for up to the shutdown grace period. */
    storeq_stop(e->sq, e->cfg.shutdown_grace_ms);
    e->sq = NULL;
    e->started = false;
}

void engine_free(struct engine *e)
{
    if (e == NULL)
        return;
    engine_stop(e);
    for (size_t b = 0; b < APP_BUCKETS; b++) {
        struct app_state *a = e->apps[b];
        while (a) {
            struct app_state *next = a->next;
            struct job *job;
            while ((job = dequeue(e, a)) != NULL)
                job_free(e, job);
            drop_idle(a);
            app_gen_unref(a->cur);
            free(a);
            a = next;
        }
    }
    struct job *job = e->inbox_head;
    while (job) {
        struct job *next = job->next;
        free(job->m.body);
        free(job);
        job = next;
    }
    if (e->multi)
        curl_multi_cleanup(e->multi);
    pthread_mutex_destroy(&e->inbox_lock);
    seq_set_release(&e->in_memory);
    free(e);
}
