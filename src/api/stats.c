/*
 * The Voice Apps' figures for the operators' console (GET /v1/voice-apps/stats and
 * /v1/voice-apps/{id}/stats) and GET /v1/whoami. The figures come from the store's per-minute
 * rollup and its waiting messages (store_app_console, store_app_minutes), never from a scan of
 * every message: a request costs the apps times the rollup's minutes, plus the waiting ones.
 */
#include "api/console.h"

#include "util/clock.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERIES_MINUTES 60 /* the last hour by minute, the current one last */
#define RECENT_MINUTES 5  /* last5m: the current minute and the four before it */
#define RATE_WINDOW_S  60

/* Sums of the rollup's minutes over a window. */
struct window {
    int64_t ingested, delivered, failed, dead;
    int64_t latency[STORE_LATENCY_BUCKETS];
};

struct app_figures {
    struct app_console c;
    struct window last5m, last1h;
};

/* What one request gathers: the apps (by id), and, for one app, its series. */
struct figures {
    struct app_figures *app;
    size_t n, cap;
    bool oom;
    int64_t now, minute; /* the current minute's start */
    struct window series[SERIES_MINUTES];
    struct window this_minute, last_minute; /* every app's, deleted ones too: the rates */
};

static void add_to(struct window *w, const struct store_minute *m)
{
    w->ingested += m->ingested;
    w->delivered += m->delivered;
    w->failed += m->failed;
    w->dead += m->dead;
    for (int b = 0; b < STORE_LATENCY_BUCKETS; b++)
        w->latency[b] += m->latency[b];
}

static void gather_app(void *ctx, const struct app_console *a)
{
    struct figures *f = ctx;
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 32;
        struct app_figures *app = realloc(f->app, cap * sizeof *app);
        if (app == NULL) {
            f->oom = true;
            return;
        }
        f->app = app;
        f->cap = cap;
    }
    memset(&f->app[f->n], 0, sizeof f->app[0]);
    f->app[f->n++].c = *a;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct app_figures *)a)->c.id, ((const struct app_figures *)b)->c.id);
}

static int id_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct app_figures *)elem)->c.id);
}

static void gather_minute(void *ctx, const char *app_id, const struct store_minute *m)
{
    struct figures *f = ctx;
    /* A minute ahead of this node's clock (another node's clock runs ahead) is its now. */
    int64_t ago = m->at >= f->minute ? 0 : (f->minute - m->at) / 60;
    if (ago == 0)
        add_to(&f->this_minute, m);
    else if (ago == 1)
        add_to(&f->last_minute, m);
    if (ago >= SERIES_MINUTES)
        return;
    struct app_figures *a = f->n > 0 ? bsearch(app_id, f->app, f->n, sizeof *f->app, id_cmp) : NULL;
    if (a == NULL)
        return; /* a deleted app's minutes count in the rates only */
    add_to(&a->last1h, m);
    if (ago < RECENT_MINUTES)
        add_to(&a->last5m, m);
    add_to(&f->series[SERIES_MINUTES - 1 - ago], m);
}

/* The q-quantile (0..1) of the histogram h, in ms: found in its bucket, then placed in it
 * linearly by rank (so within the bucket's width: at most a factor of two off). The last
 * bucket has no upper edge: its lower edge, 16,384 ms, stands for anything in it. JSON null
 * when the histogram is empty. */
static json_t *quantile(const int64_t h[STORE_LATENCY_BUCKETS], double q)
{
    int64_t total = 0;
    for (int b = 0; b < STORE_LATENCY_BUCKETS; b++)
        total += h[b];
    if (total == 0)
        return json_null();
    int64_t rank = (int64_t)ceil(q * (double)total);
    if (rank < 1)
        rank = 1;
    int64_t below = 0;
    for (int b = 0; b < STORE_LATENCY_BUCKETS; b++) {
        if (h[b] == 0 || below + h[b] < rank) {
            below += h[b];
            continue;
        }
        if (b == STORE_LATENCY_BUCKETS - 1)
            return json_integer(store_latency_bucket_edge_ms(b));
        double lo = b == 0 ? 0 : (double)store_latency_bucket_edge_ms(b - 1);
        double hi = (double)store_latency_bucket_edge_ms(b);
        double v = lo + (hi - lo) * (double)(rank - below) / (double)h[b];
        return json_integer((json_int_t)llround(v));
    }
    return json_null(); /* not reached */
}

static json_t *window_json(const struct window *w)
{
    int64_t attempts = w->delivered + w->failed;
    json_t *o = json_pack("{s:I, s:I, s:I, s:I}", "ingested", (json_int_t)w->ingested, "delivered",
                          (json_int_t)w->delivered, "failed", (json_int_t)w->failed, "dead",
                          (json_int_t)w->dead);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "successRate",
                        attempts ? json_real((double)w->delivered / (double)attempts)
                                 : json_null());
    json_object_set_new(o, "p50Ms", quantile(w->latency, 0.50));
    json_object_set_new(o, "p95Ms", quantile(w->latency, 0.95));
    return o;
}

static json_t *string_or_null(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

static json_t *time_or_null(int64_t t)
{
    return t ? json_integer(t) : json_null();
}

static json_t *app_json(const struct app_figures *a, int64_t now)
{
    const struct app_console *c = &a->c;
    json_t *o = json_pack("{s:s, s:b, s:I}", "id", c->id, "enabled", c->enabled, "queueDepth",
                          (json_int_t)c->waiting);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "disabledReason",
                        c->enabled ? json_null() : string_or_null(c->disabled_reason));
    json_object_set_new(o, "last5m", window_json(&a->last5m));
    json_object_set_new(o, "last1h", window_json(&a->last1h));
    json_object_set_new(o, "oldestPendingAt", time_or_null(c->oldest_waiting_at));
    int64_t age = now - c->oldest_waiting_at;
    json_object_set_new(o, "oldestPendingAgeSeconds",
                        c->oldest_waiting_at ? json_integer(age > 0 ? age : 0) : json_null());
    json_object_set_new(o, "lastError", string_or_null(c->last_error));
    json_object_set_new(o, "lastErrorAt", time_or_null(c->last_error_at_ms / 1000));
    json_object_set_new(o, "lastErrorAtMs", time_or_null(c->last_error_at_ms));
    json_object_set_new(o, "lastErrorMessageId", string_or_null(c->last_error_msg));
    return o;
}

/* The apps in trouble first: disabled, then with a message gone dead in the last hour, then
 * failing (a failed attempt in the last five minutes), then by their oldest waiting message
 * (oldest first, none last); then by id. */
static int by_trouble(const void *pa, const void *pb)
{
    const struct app_figures *a = pa, *b = pb;
    if (a->c.enabled != b->c.enabled)
        return a->c.enabled ? 1 : -1;
    bool da = a->last1h.dead > 0, db = b->last1h.dead > 0;
    if (da != db)
        return da ? -1 : 1;
    bool fa = a->last5m.failed > 0, fb = b->last5m.failed > 0;
    if (fa != fb)
        return fa ? -1 : 1;
    int64_t oa = a->c.oldest_waiting_at, ob = b->c.oldest_waiting_at;
    if (oa != ob) {
        if (oa == 0 || ob == 0)
            return oa == 0 ? 1 : -1;
        return oa < ob ? -1 : 1;
    }
    return strcmp(a->c.id, b->c.id);
}

/* Per second over the last RATE_WINDOW_S: the current minute so far, and the part of the last
 * minute the window still covers, taken as spread evenly over that minute. */
static double rate(int64_t this_minute, int64_t last_minute, int64_t elapsed_s)
{
    double covered = (double)(RATE_WINDOW_S - elapsed_s) / RATE_WINDOW_S;
    return ((double)this_minute + (double)last_minute * covered) / RATE_WINDOW_S;
}

static json_t *rates_json(const struct figures *f)
{
    int64_t elapsed = f->now - f->minute;
    json_t *o = json_pack("{s:i}", "windowSeconds", RATE_WINDOW_S);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "ingestedPerSecond",
                        json_real(rate(f->this_minute.ingested, f->last_minute.ingested, elapsed)));
    json_object_set_new(
        o, "deliveredPerSecond",
        json_real(rate(f->this_minute.delivered, f->last_minute.delivered, elapsed)));
    json_object_set_new(o, "failedPerSecond",
                        json_real(rate(f->this_minute.failed, f->last_minute.failed, elapsed)));
    return o;
}

static json_t *series_json(const struct figures *f)
{
    json_t *list = json_array();
    for (int i = 0; list && i < SERIES_MINUTES; i++) {
        const struct window *w = &f->series[i];
        json_array_append_new(
            list, json_pack("{s:I, s:I, s:I, s:I}", "at",
                            (json_int_t)(f->minute - (SERIES_MINUTES - 1 - i) * 60), "delivered",
                            (json_int_t)w->delivered, "failed", (json_int_t)w->failed, "ingested",
                            (json_int_t)w->ingested));
    }
    return list;
}

static void respond(struct api_request *r, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (text == NULL)
        http_respond_error(r->http, 500, "internal", "out of memory");
    else
        http_respond_json(r->http, 200, text);
}

void api_console_stats(struct api_request *r, const char *app_id)
{
    struct figures *f = calloc(1, sizeof *f);
    if (f == NULL) {
        http_respond_error(r->http, 500, "internal", "out of memory");
        return;
    }
    f->now = clock_wall_s();
    f->minute = f->now - f->now % 60;
    struct ch_error err = {0};
    ch_code rc = store_app_console(r->ctx->store, app_id, gather_app, f, &err);
    if (rc == CH_OK && !f->oom) {
        if (f->n > 1)
            qsort(f->app, f->n, sizeof *f->app, by_id);
        /* The list's rates are every app's: its minutes are read for all of them. */
        rc = store_app_minutes(r->ctx->store, app_id, f->minute - (SERIES_MINUTES - 1) * 60,
                               gather_minute, f, &err);
    }
    if (rc != CH_OK) {
        log_warn("api: store error on %s %s: %s", r->http->method, r->http->path, err.message);
        snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
        http_respond_error(r->http, 503, "unavailable", "the store is unavailable; try again");
    } else if (f->oom) {
        http_respond_error(r->http, 500, "internal", "out of memory");
    } else if (app_id != NULL && f->n == 0) {
        http_respond_error(r->http, 404, "not_found", "no voice app '%s'", app_id);
    } else if (app_id != NULL) {
        json_t *o = app_json(&f->app[0], f->now);
        if (o) {
            json_object_set_new(o, "now", json_integer(f->now));
            json_object_set_new(o, "series", series_json(f));
        }
        respond(r, o);
    } else {
        if (f->n > 1)
            qsort(f->app, f->n, sizeof *f->app, by_trouble);
        json_t *data = json_array();
        for (size_t i = 0; data && i < f->n; i++)
            json_array_append_new(data, app_json(&f->app[i], f->now));
        respond(r, json_pack("{s:I, s:o, s:o}", "now", (json_int_t)f->now, "rates", rates_json(f),
                             "data", data));
    }
    free(f->app);
    free(f);
}

void api_whoami(struct api_request *r)
{
    respond(r, json_pack("{s:s}", "role", key_role_name(r->role)));
}
