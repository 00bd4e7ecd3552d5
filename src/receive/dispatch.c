/*
 * The dispatchers (dispatch.h): a thread per sink, the inbox's deliveries of that sink in
 * arrival order, the sink's results recorded with the receiver's retry rules.
 */
#define _GNU_SOURCE /* syscall(SYS_gettid): a thread's own nice value is Linux's */

#include "receive/dispatch.h"

#include "lib/inbox.h"

#include "receive/live.h"
#include "receive/sink.h"
#include "receive/stats.h"
#include "lib/crypto.h"

#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_BACKOFF_MS (300 * 1000LL)

/* Most deliveries one process() call gets, whatever a sink's batch_max says. */
#define DISPATCH_BATCH_MAX 1024

/* How long a short batch's successor may gather. Handlers run this much later at most. */
#define COALESCE_MS 5

/* A lane holds at most four of its sink's batches and this many events, and bodies of this
 * many bytes. Past any, the front leaves events pending in the inbox and the dispatcher takes
 * them from there. */
#define LANE_MAX       2048
#define LANE_MAX_BYTES ((size_t)16 * 1024 * 1024)

/* While its lane is busy, a dispatcher still reads the inbox this often (retries due, events
 * that did not fit in the lane). */
#define INBOX_POLL_MS 100

/* The settings a sink reads when it opens: a reload that changes them opens it again. */
struct sink_settings {
    char handler_env[RECEIVE_MAX_HANDLER_ENV][RECEIVE_ENV_NAME_MAX];
    int nhandler_env;
    int exec_timeout_s;
    int workers;
    int pipe_window;
    struct ch_secret forward_key;
    bool has_forward_key;
    char forward_ca[4096];
    int forward_timeout_ms;
    int forward_max_in_flight;
};

/* Events the front stored as taken by one sink (deliveries running, first attempt) and
 * handed over in memory, so that the sink does not read back what was just written. A ring;
 * lock held for each change. The front uses it only while the dispatcher is caught up with
 * the inbox, so a backlog there is taken in order before newer events come this way. */
struct dispatch_lane {
    pthread_mutex_t lock;
    struct ch_inbox_entry *ring;
    size_t cap; /* of ring; 0: a sink without a lane (sink_ops.lane) */
    size_t head, len;
    size_t reserved; /* rooms the front holds for its commit in progress */
    size_t bytes;    /* bodies held and reserved */
    /* Set under the dispatch's lanes lock (dispatcher_signal): no reservation is then
     * outstanding, and none is made again. */
    bool closed;
    /* The last take found no more due than it took: the inbox holds no backlog for the sink.
     * Cleared by the front when the lane had no room (an event went to the inbox instead). */
    atomic_bool caught_up;
};

/* One sink and its thread. */
struct dispatcher {
    struct dispatch *d;
    char name[RECEIVE_HANDLER_MAX];
    char label[256]; /* the name for the log (sink_label) */
    const struct sink_ops *ops;
    /* Closed by the dispatcher's own thread as it ends: a pipe handler forked from it gets
     * PR_SET_PDEATHSIG when that thread exits, so closing from another thread after the join
     * killed it before its stdin was closed and its grace given. sink_lock keeps an
     * interrupt() from another thread off a sink being closed. */
    struct sink *sink;
    pthread_mutex_t sink_lock;
    struct sink_settings settings;
    struct dispatch_lane lane;
    /* The batch buffers, made with the dispatcher, so that its thread never ends before a
     * stop (it gives the lane back then). */
    size_t max;
    struct ch_inbox_entry *batch;
    struct sink_result *res;
    struct ch_inbox_outcome *out;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    struct dispatcher *next;
};

struct dispatch {
    struct live *live;
    struct receive_stats *stats;
    struct ch_inbox *inbox;
    pthread_mutex_t lock; /* wakeups, and the list below (changed by the main thread only) */
    pthread_cond_t cond;
    /* Held by the front from its lane reservations to its hand-over (dispatch_lanes_lock),
     * and by a stop closing a lane: taken before `lock`, never inside it. */
    pthread_mutex_t lanes;
    unsigned long wakeups;
    struct dispatcher *list;
};

const char *mask_text(const char *s, char *out, size_t cap)
{
    size_t n = strlen(s);
    if (n <= 8)
        snprintf(out, cap, "%.*s", (int)n, "********");
    else
        snprintf(out, cap, "%.4s…%s", s, s + n - 4);
    return out;
}

static void settings_of(const struct receive_config *c, struct sink_settings *s)
{
    memset(s, 0, sizeof *s); /* padding too: the settings are compared with memcmp */
    memcpy(s->handler_env, c->handler_env, sizeof s->handler_env);
    s->nhandler_env = c->nhandler_env;
    s->exec_timeout_s = c->exec_timeout_s;
    s->workers = c->workers;
    s->pipe_window = c->pipe_window;
    s->has_forward_key = c->has_forward_key;
    if (c->has_forward_key)
        s->forward_key = c->forward_key;
    memcpy(s->forward_ca, c->forward_ca, sizeof s->forward_ca);
    s->forward_timeout_ms = c->forward_timeout_ms;
    s->forward_max_in_flight = c->forward_max_in_flight;
}

static bool same_settings(const struct sink_settings *a, const struct sink_settings *b)
{
    return crypto_equal(a, b, sizeof *a);
}

/* ---- one dispatcher's loop ---- */

/* The outcome to record for one delivery, logged and counted as it is decided. */
static struct ch_inbox_outcome outcome(struct dispatcher *w, const struct receive_config *c,
                                       const struct ch_inbox_entry *e, const struct sink_result *r,
                                       bool stopping, long long now_ms)
{
    struct receive_stats *stats = w->d->stats;
    char masked[64], name[CH_CALL_TYPE_NAME_MAX];
    mask_text(e->call_key, masked, sizeof masked);
    ch_call_type_name(route_stored_kind(e->has_call_type, e->call_type), e->call_type, name,
                      sizeof name);
    struct ch_inbox_outcome o = {.seq = e->seq, .status = CH_INBOX_DONE};
    if (r->outcome == SINK_DONE) {
        stats_outcome(stats, OUTCOME_DONE);
        log_info("processed %s %s call %s (%s) by %s", e->event, e->webhook_id, masked, name,
                 w->label);
    } else if (r->outcome == SINK_GIVEN_BACK ||
               (stopping && r->outcome == SINK_RETRY && r->error[0] == '\0')) {
        /* Stopping: the sink never got to it, or gave up on it because we asked. It goes back
         * as it was, its try not counted (a real failure seen before the stop is a
         * SINK_RETRY, and counts). */
        o.status = CH_INBOX_PENDING;
        o.next_at_ms = now_ms;
        o.not_attempted = true;
        o.error = e->last_error;
    } else if (r->outcome == SINK_FAILED || e->attempts >= c->max_attempts) {
        stats_outcome(stats, OUTCOME_FAILED);
        o.status = CH_INBOX_FAILED;
        o.error = r->error;
        log_warn("parked %s %s for %s after %d tr%s; 'callhook inbox retry %s' runs it again",
                 e->event, e->webhook_id, w->label, e->attempts, e->attempts == 1 ? "y" : "ies",
                 e->webhook_id);
    } else {
        long long delay = (long long)c->retry_base_ms;
        for (int i = 1; i < e->attempts && delay < MAX_BACKOFF_MS; i++)
            delay *= 2;
        if (delay > MAX_BACKOFF_MS)
            delay = MAX_BACKOFF_MS;
        if (r->retry_after_ms > delay)
            delay = r->retry_after_ms;
        stats_outcome(stats, OUTCOME_RETRY);
        o.status = CH_INBOX_PENDING;
        o.next_at_ms = now_ms + delay;
        o.error = r->error;
        log_warn("handler failed for %s %s by %s (try %d of %d); again in %lld ms", e->event,
                 e->webhook_id, w->label, e->attempts, c->max_attempts, delay);
    }
    return o;
}

static void pause_ms(struct dispatcher *w, long long ms);

/* Hands a batch to the sink and records the results, with the retry rules in force. */
static void run_batch(struct dispatcher *w, struct ch_inbox_entry *e, size_t n,
                      struct sink_result *res, struct ch_inbox_outcome *out)
{
    for (size_t i = 0; i < n; i++) {
        res[i] = (struct sink_result){.outcome = SINK_RETRY};
        snprintf(res[i].error, sizeof res[i].error, "the sink set no result");
    }
    w->ops->process(w->sink, e, n, res);
    bool stopping = atomic_load(&w->stop);
    const struct receive_config *c = live_get(w->d->live);
    long long now = clock_wall_ms(); /* due times are stored: the wall clock */
    for (size_t i = 0; i < n; i++)
        out[i] = outcome(w, c, &e[i], &res[i], stopping, now);
    live_put(w->d->live, c);
    /* Written until it is: left unwritten, the deliveries would stay "running" (and, with
     * --ordered, hold their calls' later events) until the next start recovers them. */
    struct ch_error err = {0};
    for (int tries = 0;
         ch_inbox_finish_sink(w->d->inbox, w->name, out, n, now / 1000, &err) != CH_OK; tries++) {
        if (tries == 0)
            log_error("cannot record the outcomes of %zu events for %s: %s (trying again every "
                      "second; a restart runs them again)",
                      n, w->label, err.message);
        if (atomic_load(&w->stop))
            return;
        pause_ms(w, 1000);
    }
}

/* Sleeps until woken (a new event, a stop), or ms milliseconds. */
static void wait_for(struct dispatcher *w, unsigned long seen, long long ms)
{
    struct dispatch *d = w->d;
    struct timespec until = clock_timespec(clock_mono_ms() + ms);
    pthread_mutex_lock(&d->lock);
    while (!atomic_load(&w->stop) && d->wakeups == seen) {
        if (pthread_cond_timedwait(&d->cond, &d->lock, &until) != 0)
            break;
    }
    pthread_mutex_unlock(&d->lock);
}

/* Sleeps ms milliseconds, or less if stopping. */
static void pause_ms(struct dispatcher *w, long long ms)
{
    struct timespec until = clock_timespec(clock_mono_ms() + ms);
    pthread_mutex_lock(&w->d->lock);
    while (!atomic_load(&w->stop) && pthread_cond_timedwait(&w->d->cond, &w->d->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&w->d->lock);
}

/* The front keeps its CPU: this thread (and, inherited, whatever it forks) yields to it. On
 * Linux a thread's nice value is its own (setpriority on its thread id). */
static void lower_priority(void)
{
    id_t tid = (id_t)syscall(SYS_gettid);
    errno = 0;
    int now = getpriority(PRIO_PROCESS, tid);
    if (errno == 0 && now < DISPATCH_NICE)
        setpriority(PRIO_PROCESS, tid, DISPATCH_NICE);
}

/* ---- the lane ---- */

/* Moves up to max events out of w's lane into batch, oldest first. */
static size_t lane_pop(struct dispatch_lane *l, struct ch_inbox_entry *batch, size_t max)
{
    pthread_mutex_lock(&l->lock);
    size_t n = 0;
    for (; n < max && l->len > 0; n++) {
        batch[n] = l->ring[l->head];
        l->bytes -= batch[n].body_len;
        l->head = (l->head + 1) % l->cap;
        l->len--;
    }
    pthread_mutex_unlock(&l->lock);
    return n;
}

static bool lane_waiting(struct dispatch_lane *l)
{
    pthread_mutex_lock(&l->lock);
    bool any = l->len > 0;
    pthread_mutex_unlock(&l->lock);
    return any;
}

/* Stopping: the lane's events go back to the inbox, pending, their try not counted. */
static void lane_give_back(struct dispatcher *w)
{
    size_t n;
    long long now = clock_wall_ms();
    while ((n = lane_pop(&w->lane, w->batch, w->max)) > 0) {
        for (size_t i = 0; i < n; i++)
            w->out[i] = (struct ch_inbox_outcome){.seq = w->batch[i].seq,
                                                  .status = CH_INBOX_PENDING,
                                                  .next_at_ms = now,
                                                  .not_attempted = true};
        struct ch_error err = {0};
        if (ch_inbox_finish_sink(w->d->inbox, w->name, w->out, n, now / 1000, &err) != CH_OK)
            log_error("cannot give %zu events back to the inbox for %s: %s (the next start "
                      "runs them again)",
                      n, w->label, err.message);
        for (size_t i = 0; i < n; i++)
            ch_inbox_entry_release(&w->batch[i]);
    }
}

static void *dispatcher_main(void *arg)
{
    struct dispatcher *w = arg;
    struct dispatch *d = w->d;
    thread_name("ch-sink");
    lower_priority();
    size_t max = w->max;
    struct ch_inbox_entry *batch = w->batch;
    long long next_inbox_ms =
        0; /* monotonic: when the inbox is read again though the lane is busy */
    while (!atomic_load(&w->stop)) {
        pthread_mutex_lock(&d->lock);
        unsigned long seen = d->wakeups;
        pthread_mutex_unlock(&d->lock);
        /* The events handed over in memory first: they are the oldest not yet taken. */
        size_t n = lane_pop(&w->lane, batch, max);
        if (n > 0) {
            run_batch(w, batch, n, w->res, w->out);
            for (size_t i = 0; i < n; i++)
                ch_inbox_entry_release(&batch[i]);
            if (clock_mono_ms() < next_inbox_ms) {
                /* As below: a short batch lets the next one gather for a moment. */
                if (max > 1 && n < max)
                    pause_ms(w, COALESCE_MS);
                continue;
            }
        }
        long long next_due = 0;
        struct ch_error err = {0};
        /* Read at each take: a reload that turns ordering on or off takes effect at once. */
        const struct receive_config *c = live_get(d->live);
        unsigned flags = c->ordered ? CH_INBOX_TAKE_CALL_ORDER : 0;
        live_put(d->live, c);
        next_inbox_ms = clock_mono_ms() + INBOX_POLL_MS;
        ch_code rc = ch_inbox_take_sink_flags(d->inbox, w->name, clock_wall_ms(), flags, batch, max,
                                              &n, &next_due, &err);
        if (rc == CH_OK || rc == CH_ENOTFOUND)
            atomic_store(&w->lane.caught_up, n < max);
        if (rc == CH_OK) {
            stats_handed(d->stats, false, n);
            run_batch(w, batch, n, w->res, w->out);
            for (size_t i = 0; i < n; i++)
                ch_inbox_entry_release(&batch[i]);
            /* A short batch: let the next one gather for a moment, so that a steady stream is
             * handled in full batches (one sync, two transactions) rather than a few events
             * at a time. */
            if (max > 1 && n < max)
                pause_ms(w, COALESCE_MS);
            continue;
        }
        if (rc != CH_ENOTFOUND)
            log_error("cannot read the inbox for %s: %s", w->label, err.message);
        else if (lane_waiting(&w->lane))
            continue;
        /* Nothing due: sleep until woken by a new event, the next retry, or a second. */
        long long wait_ms = 1000;
        long long now = clock_wall_ms(); /* next_due is a stored due time */
        if (rc == CH_ENOTFOUND && next_due > 0 && next_due - now < wait_ms)
            wait_ms = next_due - now > 0 ? next_due - now : 0;
        wait_for(w, seen, wait_ms);
    }
    lane_give_back(w);
    pthread_mutex_lock(&w->sink_lock);
    w->ops->close(w->sink);
    w->sink = NULL;
    pthread_mutex_unlock(&w->sink_lock);
    return NULL;
}

/* ---- the set ---- */

static void dispatcher_free(struct dispatcher *w);

/* Opens the sink name with c and starts its thread. */
static ch_code dispatcher_new(struct dispatch *d, const char *name, const struct receive_config *c,
                              struct dispatcher **out, struct ch_error *err)
{
    const struct sink_ops *ops = sink_ops_for(name);
    if (ops == NULL)
        return ch_error_set(err, CH_EINVAL, "handler '%s': unknown kind", name);
    struct dispatcher *w = calloc(1, sizeof *w);
    if (w == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    w->d = d;
    w->ops = ops;
    snprintf(w->name, sizeof w->name, "%s", name);
    sink_label(name, w->label, sizeof w->label);
    settings_of(c, &w->settings);
    atomic_init(&w->stop, false);
    pthread_mutex_init(&w->sink_lock, NULL);
    pthread_mutex_init(&w->lane.lock, NULL);
    atomic_init(&w->lane.caught_up, false); /* until its first take: the inbox may hold some */
    const char *target = strchr(name, ':') + 1;
    struct ch_error inner = {0};
    ch_code rc = ops->open(target, c, &w->sink, &inner);
    if (rc != CH_OK) {
        rc = ch_error_set(err, rc == CH_ENOMEM ? CH_ENOMEM : CH_EINVAL, "handler %s: %s", w->label,
                          inner.message);
        dispatcher_free(w);
        return rc;
    }
    w->max = ops->batch_max(w->sink);
    if (w->max < 1)
        w->max = 1;
    if (w->max > DISPATCH_BATCH_MAX)
        w->max = DISPATCH_BATCH_MAX;
    w->batch = calloc(w->max, sizeof *w->batch);
    w->res = calloc(w->max, sizeof *w->res);
    w->out = calloc(w->max, sizeof *w->out);
    w->lane.cap = ops->lane ? (4 * w->max < LANE_MAX ? 4 * w->max : LANE_MAX) : 0;
    if (w->lane.cap > 0)
        w->lane.ring = calloc(w->lane.cap, sizeof *w->lane.ring);
    if (w->batch == NULL || w->res == NULL || w->out == NULL ||
        (w->lane.cap > 0 && w->lane.ring == NULL)) {
        dispatcher_free(w);
        return ch_error_set(err, CH_ENOMEM, "out of memory starting the dispatcher of %s", name);
    }
    if (pthread_create(&w->thread, NULL, dispatcher_main, w) != 0) {
        dispatcher_free(w);
        return ch_error_set(err, CH_ENOMEM, "cannot start the dispatcher of %s", name);
    }
    w->running = true;
    *out = w;
    return CH_OK;
}

/* Asks w to stop: its lane closes (it gives back what it holds), its loop ends, and the sink's
 * process() returns soon. */
static void dispatcher_signal(struct dispatcher *w)
{
    pthread_mutex_lock(&w->d->lanes); /* no reservation of the front's is outstanding */
    pthread_mutex_lock(&w->lane.lock);
    w->lane.closed = true;
    pthread_mutex_unlock(&w->lane.lock);
    pthread_mutex_unlock(&w->d->lanes);
    atomic_store(&w->stop, true);
    pthread_mutex_lock(&w->d->lock);
    pthread_cond_broadcast(&w->d->cond);
    pthread_mutex_unlock(&w->d->lock);
    pthread_mutex_lock(&w->sink_lock);
    if (w->sink != NULL)
        w->ops->interrupt(w->sink);
    pthread_mutex_unlock(&w->sink_lock);
}

static void dispatcher_free(struct dispatcher *w)
{
    if (w->running)
        pthread_join(w->thread, NULL);
    if (w->sink != NULL) /* a thread that never ran; else it closed its sink itself */
        w->ops->close(w->sink);
    pthread_mutex_destroy(&w->sink_lock);
    pthread_mutex_destroy(&w->lane.lock);
    ch_secret_wipe(&w->settings.forward_key);
    free(w->batch);
    free(w->res);
    free(w->out);
    free(w->lane.ring); /* empty: the thread gave it back, or it never ran */
    free(w);
}

/* Stops every dispatcher of list (all signalled first, then joined) and frees them. */
static void stop_list(struct dispatcher *list)
{
    for (struct dispatcher *w = list; w; w = w->next)
        dispatcher_signal(w);
    while (list) {
        struct dispatcher *next = list->next;
        dispatcher_free(list);
        list = next;
    }
}

/* Whether a dispatcher runs name with the settings of c. */
static bool runs(struct dispatch *d, const char *name, const struct sink_settings *s)
{
    for (struct dispatcher *w = d->list; w; w = w->next) {
        if (strcmp(w->name, name) == 0 && same_settings(&w->settings, s))
            return true;
    }
    return false;
}

ch_code dispatch_prepare(struct dispatch *d, const struct receive_config *next,
                         struct ch_error *err)
{
    const char *names[RECEIVE_MAX_SINKS];
    size_t n = route_all_sinks(next, names, RECEIVE_MAX_SINKS);
    struct sink_settings *s = malloc(sizeof *s);
    if (s == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    settings_of(next, s);
    struct dispatcher *added = NULL, *last = NULL;
    ch_code rc = CH_OK;
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        if (runs(d, names[i], s))
            continue;
        struct dispatcher *w = NULL;
        rc = dispatcher_new(d, names[i], next, &w, err);
        if (rc == CH_OK) {
            if (last)
                last->next = w;
            else
                added = w;
            last = w;
        }
    }
    ch_secret_wipe(&s->forward_key);
    free(s);
    if (rc != CH_OK) {
        stop_list(added);
        return rc;
    }
    if (last) {
        pthread_mutex_lock(&d->lock);
        last->next = d->list;
        d->list = added;
        pthread_mutex_unlock(&d->lock);
    }
    return CH_OK;
}

int dispatch_retire(struct dispatch *d, const struct receive_config *in_force)
{
    const char *names[RECEIVE_MAX_SINKS];
    size_t n = route_all_sinks(in_force, names, RECEIVE_MAX_SINKS);
    struct sink_settings *s = malloc(sizeof *s);
    if (s == NULL)
        return 0; /* nothing stopped: the old ones go on beside the new ones */
    settings_of(in_force, s);
    struct dispatcher *gone = NULL;
    int stopped = 0;
    pthread_mutex_lock(&d->lock);
    /* The first dispatcher of each wanted name and settings stays; every other one goes. */
    struct dispatcher **link = &d->list;
    bool *kept = calloc(n ? n : 1, sizeof *kept);
    while (*link) {
        struct dispatcher *w = *link;
        bool keep = false;
        for (size_t i = 0; kept && i < n && !keep; i++) {
            if (!kept[i] && strcmp(w->name, names[i]) == 0 && same_settings(&w->settings, s)) {
                keep = kept[i] = true;
            }
        }
        if (keep || kept == NULL) {
            link = &w->next;
        } else {
            *link = w->next;
            w->next = gone;
            gone = w;
            stopped++;
        }
    }
    pthread_mutex_unlock(&d->lock);
    free(kept);
    ch_secret_wipe(&s->forward_key);
    free(s);
    for (struct dispatcher *w = gone; w; w = w->next)
        log_info("stopping the dispatcher of %s (no longer configured, or its settings "
                 "changed)",
                 w->label);
    stop_list(gone);
    return stopped;
}

void dispatch_describe(struct dispatch *d, char *out, size_t cap)
{
    out[0] = '\0';
    pthread_mutex_lock(&d->lock);
    for (struct dispatcher *w = d->list; w; w = w->next) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", len ? ", " : "", w->label);
    }
    pthread_mutex_unlock(&d->lock);
}

ch_code dispatch_start(struct live *live, struct receive_stats *stats, struct ch_inbox *inbox,
                       struct dispatch **out, struct ch_error *err)
{
    struct dispatch *d = calloc(1, sizeof *d);
    if (d == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    d->live = live;
    d->stats = stats;
    d->inbox = inbox;
    pthread_mutex_init(&d->lock, NULL);
    pthread_mutex_init(&d->lanes, NULL);
    /* Timed waits on the monotonic clock: a clock step back must not stretch a sleep. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cond, &ca);
    pthread_condattr_destroy(&ca);
    const struct receive_config *c = live_get(live);
    ch_code rc = dispatch_prepare(d, c, err);
    live_put(live, c);
    if (rc != CH_OK) {
        pthread_mutex_destroy(&d->lock);
        pthread_mutex_destroy(&d->lanes);
        pthread_cond_destroy(&d->cond);
        free(d);
        return rc;
    }
    *out = d;
    return CH_OK;
}

void dispatch_wake(struct dispatch *d)
{
    pthread_mutex_lock(&d->lock);
    d->wakeups++;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

void dispatch_stop(struct dispatch *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->lock);
    struct dispatcher *list = d->list;
    d->list = NULL;
    pthread_mutex_unlock(&d->lock);
    stop_list(list);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_destroy(&d->lanes);
    pthread_cond_destroy(&d->cond);
    free(d);
}

void dispatch_lanes_lock(struct dispatch *d)
{
    pthread_mutex_lock(&d->lanes);
}

void dispatch_lanes_unlock(struct dispatch *d)
{
    pthread_mutex_unlock(&d->lanes);
}

struct dispatch_lane *dispatch_lane_reserve(struct dispatch *d, const char *name, size_t body_len)
{
    struct dispatch_lane *l = NULL;
    pthread_mutex_lock(&d->lock);
    for (struct dispatcher *w = d->list; w && l == NULL; w = w->next) {
        if (strcmp(w->name, name) == 0)
            l = &w->lane; /* the newest of a name: a reload puts new ones first */
    }
    pthread_mutex_unlock(&d->lock);
    if (l == NULL || !atomic_load(&l->caught_up))
        return NULL;
    pthread_mutex_lock(&l->lock);
    bool room =
        !l->closed && l->len + l->reserved < l->cap && l->bytes + body_len <= LANE_MAX_BYTES;
    if (room) {
        l->reserved++;
        l->bytes += body_len;
    } else {
        atomic_store(&l->caught_up, false); /* this event waits in the inbox: take it from there */
    }
    pthread_mutex_unlock(&l->lock);
    return room ? l : NULL;
}

void dispatch_lane_hand(struct dispatch_lane *l, struct ch_inbox_entry *e)
{
    pthread_mutex_lock(&l->lock);
    l->reserved--;
    l->ring[(l->head + l->len) % l->cap] = *e;
    l->len++;
    pthread_mutex_unlock(&l->lock);
    memset(e, 0, sizeof *e); /* the lane owns its body now */
}

void dispatch_lane_cancel(struct dispatch_lane *l, size_t body_len)
{
    pthread_mutex_lock(&l->lock);
    l->reserved--;
    l->bytes -= body_len;
    pthread_mutex_unlock(&l->lock);
}
