/*
 * The receiver's counters and its rate-limited log of refusals and duplicates (stats.h).
 * Counters are atomics bumped from the HTTP threads, the inbox writer and the workers; the
 * log's per-reason state sits behind one mutex, taken once per refusal.
 */
#include "receive/stats.h"

#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The log's slots: one per refusal reason, then the duplicates'. */
#define SLOT_DUPLICATE REFUSAL_COUNT
#define SLOTS          (REFUSAL_COUNT + 1)

/* Largest /metrics answer: a few dozen lines. */
#define RENDER_MAX (16 * 1024)

struct log_slot {
    long long logged_ms;  /* wall clock of the last line; 0: none yet */
    long long held;       /* lines held back since */
    long long held_since; /* wall clock of the first of them, ms */
    char last_remote[64]; /* the client of the last one held back */
};

struct receive_stats {
    atomic_llong accepted, duplicates;
    atomic_llong refused[REFUSAL_COUNT];
    atomic_llong outcomes[OUTCOME_COUNT];
    atomic_llong handed_memory, handed_inbox;
    atomic_llong reloads_ok, reloads_failed;
    atomic_llong interval_ms;
    pthread_mutex_t lock; /* the slots */
    struct log_slot slots[SLOTS];
};

static const char *const refusal_names[] = {
#define REFUSAL_NAME(name, text, status) text,
    REFUSAL_MAP(REFUSAL_NAME)
#undef REFUSAL_NAME
};

static const int refusal_statuses[] = {
#define REFUSAL_STATUS(name, text, status) status,
    REFUSAL_MAP(REFUSAL_STATUS)
#undef REFUSAL_STATUS
};

static const char *const outcome_names[] = {"done", "retry", "failed"};

const char *refusal_name(enum refusal why)
{
    return why < REFUSAL_COUNT ? refusal_names[why] : "unknown";
}

int refusal_status(enum refusal why)
{
    return why < REFUSAL_COUNT ? refusal_statuses[why] : 500;
}

struct receive_stats *stats_new(void)
{
    struct receive_stats *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    atomic_store(&s->interval_ms, 60 * 1000LL);
    return s;
}

void stats_free(struct receive_stats *s)
{
    if (s == NULL)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void stats_set_log_interval(struct receive_stats *s, long long interval_s)
{
    atomic_store(&s->interval_ms, interval_s * 1000);
}

/* The time of day a held-back count started, for "since 12:00:03Z". */
static void time_of_day(long long ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%H:%M:%SZ", &tm);
}

/* Whether a line may be logged for slot now; if not, it is counted as held back. When it may,
 * held gets the count of those held back before it (and the slot starts over). */
static bool may_log(struct receive_stats *s, int slot, const char *remote, long long *held,
                    char *since, size_t cap)
{
    long long now = clock_wall_ms();
    long long interval = atomic_load(&s->interval_ms);
    pthread_mutex_lock(&s->lock);
    struct log_slot *l = &s->slots[slot];
    bool ok = l->logged_ms == 0 || now - l->logged_ms >= interval || now < l->logged_ms;
    if (ok) {
        *held = l->held;
        time_of_day(l->held_since, since, cap);
        l->logged_ms = now;
        l->held = 0;
    } else {
        if (l->held++ == 0)
            l->held_since = now;
        snprintf(l->last_remote, sizeof l->last_remote, "%s", remote);
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void stats_refused(struct receive_stats *s, enum refusal why, const char *remote,
                   const char *detail)
{
    if (why >= REFUSAL_COUNT)
        return;
    atomic_fetch_add(&s->refused[why], 1);
    long long held = 0;
    char since[16];
    if (!may_log(s, (int)why, remote, &held, since, sizeof since))
        return;
    char more[96] = "";
    if (held > 0)
        snprintf(more, sizeof more, " (%lld more like it since %s not logged)", held, since);
    log_warn("refused %d %s from %s%s%s%s", refusal_statuses[why], refusal_names[why], remote,
             detail ? ": " : "", detail ? detail : "", more);
}

void stats_accepted(struct receive_stats *s)
{
    atomic_fetch_add(&s->accepted, 1);
}

void stats_duplicate(struct receive_stats *s, const char *webhook_id, const char *event,
                     const char *remote)
{
    atomic_fetch_add(&s->duplicates, 1);
    long long held = 0;
    char since[16];
    if (!may_log(s, SLOT_DUPLICATE, remote, &held, since, sizeof since))
        return;
    char more[96] = "";
    if (held > 0)
        snprintf(more, sizeof more, " (%lld more duplicates since %s not logged)", held, since);
    log_info("duplicate %s %s from %s: already received, answered 200 and not processed again "
             "(a replay keeps its webhook-id: 'callhook replay --new-id' sends a new one)%s",
             event, webhook_id, remote, more);
}

void stats_handed(struct receive_stats *s, bool in_memory, size_t n)
{
    atomic_fetch_add(in_memory ? &s->handed_memory : &s->handed_inbox, (long long)n);
}

void stats_outcome(struct receive_stats *s, enum outcome o)
{
    if (o < OUTCOME_COUNT)
        atomic_fetch_add(&s->outcomes[o], 1);
}

void stats_reload(struct receive_stats *s, bool ok)
{
    atomic_fetch_add(ok ? &s->reloads_ok : &s->reloads_failed, 1);
}

void stats_flush(struct receive_stats *s)
{
    long long now = clock_wall_ms();
    long long interval = atomic_load(&s->interval_ms);
    for (int slot = 0; slot < SLOTS; slot++) {
        pthread_mutex_lock(&s->lock);
        struct log_slot *l = &s->slots[slot];
        long long held = 0;
        char since[16], remote[64];
        if (l->held > 0 && now - l->logged_ms >= interval) {
            held = l->held;
            time_of_day(l->held_since, since, sizeof since);
            snprintf(remote, sizeof remote, "%s", l->last_remote);
            l->held = 0;
            l->logged_ms = now;
        }
        pthread_mutex_unlock(&s->lock);
        if (held == 0)
            continue;
        if (slot == SLOT_DUPLICATE)
            log_info("%lld more duplicates since %s not logged, the last from %s", held, since,
                     remote);
        else
            log_warn("refused %d %s: %lld more like it since %s not logged, the last from %s",
                     refusal_statuses[slot], refusal_names[slot], held, since, remote);
    }
}

/* Appends one formatted line; false once the cap is reached. */
static bool line(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool line(struct buf *b, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return n > 0 && (size_t)n < sizeof text && buf_add(b, text, (size_t)n);
}

char *stats_render(struct receive_stats *s, const struct ch_inbox_stats *inbox, long long now_s)
{
    struct buf b;
    buf_init(&b, RENDER_MAX);
    bool ok = line(&b,
                   "# HELP callhook_receive_accepted_total New events stored in the inbox "
                   "(answered 202).\n# TYPE callhook_receive_accepted_total counter\n"
                   "callhook_receive_accepted_total %lld\n",
                   (long long)atomic_load(&s->accepted)) &&
              line(&b,
                   "# HELP callhook_receive_duplicates_total Events already in the inbox "
                   "(answered 200, not processed again).\n"
                   "# TYPE callhook_receive_duplicates_total counter\n"
                   "callhook_receive_duplicates_total %lld\n",
                   (long long)atomic_load(&s->duplicates)) &&
              line(&b, "# HELP callhook_receive_refused_total Requests refused, by reason.\n"
                       "# TYPE callhook_receive_refused_total counter\n");
    for (int i = 0; ok && i < REFUSAL_COUNT; i++)
        ok = line(&b, "callhook_receive_refused_total{reason=\"%s\",status=\"%d\"} %lld\n",
                  refusal_names[i], refusal_statuses[i], (long long)atomic_load(&s->refused[i]));
    ok = ok && line(&b, "# HELP callhook_receive_handler_runs_total Handler runs by outcome: "
                        "done, retry (failed, to run again), failed (parked after the last "
                        "try).\n# TYPE callhook_receive_handler_runs_total counter\n");
    for (int i = 0; ok && i < OUTCOME_COUNT; i++)
        ok = line(&b, "callhook_receive_handler_runs_total{outcome=\"%s\"} %lld\n",
                  outcome_names[i], (long long)atomic_load(&s->outcomes[i]));
    ok = ok &&
         line(&b,
              "# HELP callhook_receive_deliveries_handed_total Deliveries handed to sinks: by "
              "the front in memory (stored as taken with the event; given back to the inbox if "
              "the sink stops first), or taken from the inbox (a backlog, a retry, a sink "
              "without a lane, --ordered).\n"
              "# TYPE callhook_receive_deliveries_handed_total counter\n"
              "callhook_receive_deliveries_handed_total{via=\"memory\"} %lld\n"
              "callhook_receive_deliveries_handed_total{via=\"inbox\"} %lld\n",
              (long long)atomic_load(&s->handed_memory), (long long)atomic_load(&s->handed_inbox));
    ok = ok &&
         line(&b,
              "# HELP callhook_receive_reloads_total Reloads (SIGHUP) by result.\n"
              "# TYPE callhook_receive_reloads_total counter\n"
              "callhook_receive_reloads_total{result=\"ok\"} %lld\n"
              "callhook_receive_reloads_total{result=\"refused\"} %lld\n",
              (long long)atomic_load(&s->reloads_ok), (long long)atomic_load(&s->reloads_failed));
    if (inbox) {
        ok = ok && line(&b, "# HELP callhook_receive_inbox_events Events in the inbox, by "
                            "status.\n# TYPE callhook_receive_inbox_events gauge\n");
        for (int i = 0; ok && i < CH_INBOX_STATUSES; i++)
            ok = line(&b, "callhook_receive_inbox_events{status=\"%s\"} %lld\n",
                      ch_inbox_status_name((enum ch_inbox_status)i), inbox->count[i]);
        long long age = inbox->oldest_unprocessed > 0 && now_s > inbox->oldest_unprocessed
                            ? now_s - inbox->oldest_unprocessed
                            : 0;
        ok = ok && line(&b,
                        "# HELP callhook_receive_inbox_depth Events not processed yet (pending "
                        "or running).\n# TYPE callhook_receive_inbox_depth gauge\n"
                        "callhook_receive_inbox_depth %lld\n"
                        "# HELP callhook_receive_oldest_unprocessed_age_seconds Age of the "
                        "oldest event not processed yet; 0 when there is none.\n"
                        "# TYPE callhook_receive_oldest_unprocessed_age_seconds gauge\n"
                        "callhook_receive_oldest_unprocessed_age_seconds %lld\n",
                        inbox->count[CH_INBOX_PENDING] + inbox->count[CH_INBOX_RUNNING], age);
    }
    ok = ok && line(&b,
                    "# HELP callhook_receive_inbox_up Whether the inbox could be read for "
                    "this answer.\n# TYPE callhook_receive_inbox_up gauge\n"
                    "callhook_receive_inbox_up %d\n",
                    inbox ? 1 : 0);
    if (!ok || b.data == NULL) {
        buf_release(&b);
        return NULL;
    }
    return b.data;
}
