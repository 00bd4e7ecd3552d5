/*
 * GET /v1/status (callhook status): the node, its store and, per Voice App, its state, its
 * messages by the API's statuses, the age of its oldest waiting message and its last error;
 * the apps in trouble first. One read of the whole messages table (store_app_stats): an
 * operator's command, not a dashboard's poll.
 */
#include "api/api.h"

#include <callhook/callhook.h>
#include <jansson.h>

#include "util/clock.h"
#include "util/log.h"

#include <stdlib.h>
#include <string.h>

/* The apps as the store gave them, grown as they come. */
struct app_rows {
    struct app_stats *v;
    size_t n, cap;
    bool oom;
};

static void add_row(void *ctx, const struct app_stats *a)
{
    struct app_rows *rows = ctx;
    if (rows->oom)
        return;
    if (rows->n == rows->cap) {
        size_t cap = rows->cap ? rows->cap * 2 : 16;
        struct app_stats *v = cap < SIZE_MAX / sizeof *v ? realloc(rows->v, cap * sizeof *v) : NULL;
        if (v == NULL) {
            rows->oom = true;
            return;
        }
        rows->v = v;
        rows->cap = cap;
    }
    rows->v[rows->n++] = *a;
}

/* Trouble first: disabled, then with dead messages, then with failed ones (retrying), then
 * by the oldest waiting message (the oldest first, none last); then by id. */
static int by_trouble(const void *x, const void *y)
{
    const struct app_stats *a = x, *b = y;
    if (a->enabled != b->enabled)
        return a->enabled ? 1 : -1;
    if ((a->counts.dead > 0) != (b->counts.dead > 0))
        return a->counts.dead > 0 ? -1 : 1;
    if ((a->counts.failed > 0) != (b->counts.failed > 0))
        return a->counts.failed > 0 ? -1 : 1;
    int64_t ao = a->counts.oldest_pending_at, bo = b->counts.oldest_pending_at;
    if (ao != bo) {
        if (ao == 0 || bo == 0)
            return ao == 0 ? 1 : -1;
        return ao < bo ? -1 : 1;
    }
    return strcmp(a->id, b->id);
}

/* A time and its age now, or two nulls. */
static void set_oldest(json_t *o, int64_t at, int64_t now)
{
    json_object_set_new(o, "oldestPendingAt", at ? json_integer(at) : json_null());
    json_object_set_new(o, "oldestPendingAgeSeconds",
                        at ? json_integer(now > at ? now - at : 0) : json_null());
}

static json_t *counts_json(const struct store_stats *c)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "pending", (json_int_t)c->pending,
                     "failed", (json_int_t)c->failed, "delivering", (json_int_t)c->delivering,
                     "delivered", (json_int_t)c->delivered, "dead", (json_int_t)c->dead, "skipped",
                     (json_int_t)c->skipped, "parked", (json_int_t)c->parked);
}

static json_t *app_json(const struct app_stats *a, int64_t now)
{
    bool err = a->last_error[0] != '\0';
    json_t *o =
        json_pack("{s:s, s:b, s:s?, s:o}", "id", a->id, "enabled", a->enabled, "disabledReason",
                  !a->enabled && a->disabled_reason[0] ? a->disabled_reason : NULL, "counts",
                  counts_json(&a->counts));
    if (o == NULL)
        return NULL;
    set_oldest(o, a->counts.oldest_pending_at, now);
    json_object_set_new(o, "lastError", err ? json_string(a->last_error) : json_null());
    json_object_set_new(o, "lastErrorAt", err ? json_integer(a->last_error_at) : json_null());
    json_object_set_new(o, "lastErrorMessageId",
                        err ? json_string(a->last_error_msg) : json_null());
    return o;
}

static void add_counts(struct store_stats *to, const struct store_stats *c)
{
    to->pending += c->pending;
    to->failed += c->failed;
    to->delivering += c->delivering;
    to->delivered += c->delivered;
    to->dead += c->dead;
    to->skipped += c->skipped;
    to->parked += c->parked;
    if (c->oldest_pending_at &&
        (!to->oldest_pending_at || c->oldest_pending_at < to->oldest_pending_at))
        to->oldest_pending_at = c->oldest_pending_at;
}

static json_t *status_json(const struct api_context *ctx, struct app_rows *rows, int64_t now)
{
    if (rows->n > 1)
        qsort(rows->v, rows->n, sizeof *rows->v, by_trouble);
    json_t *apps = json_array();
    struct store_stats total = {0};
    int64_t disabled = 0;
    for (size_t i = 0; apps && i < rows->n; i++) {
        json_array_append_new(apps, app_json(&rows->v[i], now));
        add_counts(&total, &rows->v[i].counts);
        disabled += !rows->v[i].enabled;
    }
    json_t *totals = counts_json(&total);
    if (totals) {
        json_object_set_new(totals, "apps", json_integer((json_int_t)rows->n));
        json_object_set_new(totals, "disabledApps", json_integer(disabled));
        set_oldest(totals, total.oldest_pending_at, now);
    }
    const struct store *s = ctx->store;
    /* Where the store is, as the logs show it: a SQLite file's path, or a PostgreSQL URI
     * without its password. */
    const char *where = ctx->store_location ? ctx->store_location : "";
    if (strncmp(where, "sqlite:", 7) == 0)
        where += 7;
    return json_pack("{s:{s:s, s:s, s:I, s:I}, s:{s:s, s:s, s:b, s:i}, s:o, s:o}", "node",
                     "version", ch_version(), "listen", ctx->listen ? ctx->listen : "", "startedAt",
                     (json_int_t)ctx->started_at, "uptimeSeconds",
                     (json_int_t)(now > ctx->started_at ? now - ctx->started_at : 0), "store",
                     "kind", s->kind ? s->kind : "unknown", "location", where, "sealed", s->sealed,
                     "schemaVersion", s->schema_version, "apps", apps, "totals", totals);
}

void api_status(struct api_request *r)
{
    struct app_rows rows = {0};
    struct ch_error err = {0};
    if (store_app_stats(r->ctx->store, add_row, &rows, &err) != CH_OK) {
        free(rows.v);
        log_warn("api: store error on GET /v1/status: %s", err.message);
        snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
        http_respond_error(r->http, 503, "unavailable", "the store is unavailable; try again");
        return;
    }
    json_t *v = rows.oom ? NULL : status_json(r->ctx, &rows, clock_wall_s());
    free(rows.v);
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    http_respond_json(r->http, 200, text); /* NULL: out of memory, a 500 */
}
