/*
 * Routing and the handlers of docs/API.md other than ingest: Voice Apps, messages, replay,
 * recover, health and metrics. JSON is built with jansson.
 */
#include "api/api.h"

#include <callhook/callhook.h>
#include <jansson.h>

#include "api/cache.h"
#include "deliver/app.h"
#include "util/clock.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROTATE_GRACE_DEFAULT_S 86400
#define LIST_LIMIT_DEFAULT     50
#define LIST_LIMIT_MAX         500

static bool method_is(const struct api_request *r, const char *m)
{
    return strcmp(r->http->method, m) == 0;
}

static bool need_role(struct api_request *r, bool read_ok)
{
    if (r->role == ROLE_ADMIN || (read_ok && r->role == ROLE_READ))
        return true;
    http_respond_error(r->http, 403, "forbidden", "this key's role (%s) cannot do this",
                       key_role_name(r->role));
    return false;
}

static void store_failed(struct api_request *r, const struct ch_error *err)
{
    if (err->code == CH_ENOTFOUND) {
        http_respond_error(r->http, 404, "not_found", "%s", err->message);
        return;
    }
    log_warn("api: store error on %s %s: %s", r->http->method, r->http->path, err->message);
    snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
    http_respond_error(r->http, 503, "unavailable", "the store is unavailable; try again");
}

static void respond_json_value(struct api_request *r, int status, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    http_respond_json(r->http, status, text);
}

/* ---- voice apps ---- */

#define HEADER_MASK "********" /* a header value as keys other than admin see it */

/* What the API shows of a Voice App. Its extra headers carry receivers' bearer tokens and
 * shared secrets: only an admin key sees their values (full); others see the names. */
static json_t *app_json(const struct stored_app *a, bool full)
{
    struct app_config cfg;
    if (app_config_parse(&cfg, a->config_json, strlen(a->config_json), NULL) != CH_OK)
        app_config_defaults(&cfg);
    cfg.enabled = a->enabled;
    for (int i = 0; !full && i < cfg.nheaders; i++)
        snprintf(cfg.headers[i].value, sizeof cfg.headers[i].value, "%s", HEADER_MASK);
    json_t *extra = json_pack("{s:I, s:I, s:s?}", "createdAt", (json_int_t)a->created_at,
                              "updatedAt", (json_int_t)a->updated_at, "disabledReason",
                              a->disabled_reason[0] ? a->disabled_reason : NULL);
    char *extra_text = extra ? json_dumps(extra, JSON_COMPACT) : NULL;
    json_decref(extra);
    char *text = app_config_to_json(&cfg, a->id, extra_text);
    free(extra_text);
    json_t *v = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return v;
}

static void app_put(struct api_request *r, const char *id)
{
    struct api_context *ctx = r->ctx;
    if (!app_id_valid(id)) {
        http_respond_error(r->http, 400, "invalid_id",
                           "a voice app id has 1 to 128 characters of A-Z a-z 0-9 . _ -");
        return;
    }
    struct app_config cfg;
    struct ch_error err = {0};
    if (app_config_parse(&cfg, r->http->body.data ? r->http->body.data : "", r->http->body.len,
                         &err) != CH_OK ||
        app_config_check_files(&cfg, &err) != CH_OK) {
        http_respond_error(r->http, 400, "invalid_settings", "%s", err.message);
        return;
    }
    struct stored_app a;
    ch_code rc = store_app_get(ctx->store, id, &a, &err);
    if (rc != CH_OK && rc != CH_ENOTFOUND) {
        store_failed(r, &err);
        return;
    }
    int64_t now = clock_wall_s();
    if (rc == CH_ENOTFOUND) {
        memset(&a, 0, sizeof a);
        snprintf(a.id, sizeof a.id, "%s", id);
        a.created_at = now;
        struct ch_secret s;
        if (ch_secret_generate(&s, CH_KEY_HMAC, 32, &err) != CH_OK ||
            ch_secret_format(&s, a.secret, sizeof a.secret, &err) != CH_OK) {
            ch_secret_wipe(&s);
            http_respond_error(r->http, 500, "internal", "cannot make a signing secret");
            return;
        }
        ch_secret_wipe(&s);
    }
    free(a.config_json);
    a.config_json = app_config_to_json(&cfg, NULL, NULL);
    a.updated_at = now;
    a.enabled = cfg.enabled;
    if (cfg.enabled)
        a.disabled_reason[0] = '\0';
    bool created = false;
    if (a.config_json == NULL)
        http_respond_error(r->http, 500, "internal", "out of memory");
    else if ((rc = store_app_put(ctx->store, &a, &created, &err)) != CH_OK)
        store_failed(r, &err);
    else {
        engine_app_changed(ctx->engine);
        api_cache_clear(ctx->apps);
        respond_json_value(r, created ? 201 : 200, app_json(&a, true));
    }
    stored_app_release(&a);
}

static void app_get(struct api_request *r, const char *id)
{
    struct stored_app a;
    struct ch_error err = {0};
    if (store_app_get(r->ctx->store, id, &a, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    respond_json_value(r, 200, app_json(&a, r->role == ROLE_ADMIN));
    stored_app_release(&a);
}

struct app_list_ctx {
    json_t *data;
    bool full;
};

static void add_app(void *ctx, const struct stored_app *a)
{
    struct app_list_ctx *c = ctx;
    json_array_append_new(c->data, app_json(a, c->full));
}

static void app_list(struct api_request *r)
{
    json_t *data = json_array();
    struct ch_error err = {0};
    struct app_list_ctx c = {data, r->role == ROLE_ADMIN};
    if (store_app_list(r->ctx->store, add_app, &c, &err) != CH_OK) {
        json_decref(data);
        store_failed(r, &err);
        return;
    }
    respond_json_value(r, 200, json_pack("{s:o}", "data", data));
}

static void app_delete(struct api_request *r, const char *id)
{
    struct ch_error err = {0};
    if (store_app_delete(r->ctx->store, id, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    engine_app_changed(r->ctx->engine);
    api_cache_clear(r->ctx->apps);
    http_respond(r->http, 204, NULL, "", 0);
}

static json_t *secret_json(const struct stored_app *a)
{
    bool prev = a->prev_secret[0] && a->prev_expires_at > clock_wall_s();
    return json_pack("{s:s, s:s?, s:o}", "secret", a->secret, "previous",
                     prev ? a->prev_secret : NULL, "previousExpiresAt",
                     prev ? json_integer(a->prev_expires_at) : json_null());
}

static void app_secret(struct api_request *r, const char *id, bool rotate)
{
    struct api_context *ctx = r->ctx;
    struct stored_app a;
    struct ch_error err = {0};
    if (store_app_get(ctx->store, id, &a, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    if (rotate) {
        long grace = ROTATE_GRACE_DEFAULT_S;
        if (r->http->body.len > 0) {
            json_t *b = json_loadb(r->http->body.data, r->http->body.len, 0, NULL);
            json_t *g = json_object_get(b, "graceSeconds");
            if (!json_is_object(b) || (g && (!json_is_integer(g) || json_integer_value(g) < 0 ||
                                             json_integer_value(g) > 30 * 86400))) {
                json_decref(b);
                stored_app_release(&a);
                http_respond_error(r->http, 400, "invalid_settings",
                                   "graceSeconds: must be a whole number from 0 to 2592000");
                return;
            }
            if (g)
                grace = (long)json_integer_value(g);
            json_decref(b);
        }
        struct ch_secret s;
        snprintf(a.prev_secret, sizeof a.prev_secret, "%s", a.secret);
        a.prev_expires_at = clock_wall_s() + grace;
        if (ch_secret_generate(&s, CH_KEY_HMAC, 32, &err) != CH_OK ||
            ch_secret_format(&s, a.secret, sizeof a.secret, &err) != CH_OK) {
            ch_secret_wipe(&s);
            stored_app_release(&a);
            http_respond_error(r->http, 500, "internal", "cannot make a signing secret");
            return;
        }
        ch_secret_wipe(&s);
        a.updated_at = clock_wall_s();
        bool created;
        if (store_app_put(ctx->store, &a, &created, &err) != CH_OK) {
            stored_app_release(&a);
            store_failed(r, &err);
            return;
        }
        engine_app_changed(ctx->engine);
        log_info("api: rotated the signing secret of voice app '%s' (old one signs for %ld s)", id,
                 grace);
    }
    respond_json_value(r, 200, secret_json(&a));
    stored_app_release(&a);
}

static void app_recover(struct api_request *r, const char *id)
{
    const char *since_text = http_query(r->http, "since");
    char *end = NULL;
    long long since = since_text ? strtoll(since_text, &end, 10) : 0;
    if (since_text && (*since_text == '\0' || *end != '\0' || since < 0)) {
        http_respond_error(r->http, 400, "invalid_query", "since: must be unix seconds");
        return;
    }
    struct stored_app a;
    struct ch_error err = {0};
    if (store_app_get(r->ctx->store, id, &a, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    stored_app_release(&a);
    int64_t n = 0;
    if (store_app_recover(r->ctx->store, id, since, clock_wall_s(), &n, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    engine_wake(r->ctx->engine);
    log_info("api: recover of voice app '%s' since %lld requeued %lld messages", id, since,
             (long long)n);
    respond_json_value(r, 200, json_pack("{s:I}", "requeued", (json_int_t)n));
}

/* ---- messages ---- */

static json_t *message_json(const struct message_view *m)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I}", "id", m->msg_id, "voiceAppId",
        m->app_id, "event", m->event, "dedupeKey", m->dedupe_key, "status",
        msg_status_name(m->status, m->attempts), "attemptCount", m->attempts, "createdAt",
        (json_int_t)m->created_at, "nextAttemptAt",
        (json_int_t)(m->status == MSG_PENDING || m->status == MSG_DELIVERING ? m->next_attempt_at
                                                                             : 0),
        "deliveredAt", (json_int_t)m->delivered_at, "bodyBytes", (json_int_t)m->body_len);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "callType", m->has_call_type ? json_integer(m->call_type) : json_null());
    json_object_set_new(o, "lastError",
                        m->last_error[0] ? json_string(m->last_error) : json_null());
    json_object_set_new(o, "appDeleted", json_boolean(m->app_deleted));
    return o;
}

struct list_ctx {
    json_t *data;
    int64_t last_seq;
    int count;
};

static void add_message(void *ctx, const struct message_view *m)
{
    struct list_ctx *l = ctx;
    json_array_append_new(l->data, message_json(m));
    l->last_seq = m->seq;
    l->count++;
}

static void messages_list(struct api_request *r)
{
    struct message_filter f = {.status = -1, .attempted = -1, .limit = LIST_LIMIT_DEFAULT};
    f.app_id = http_query(r->http, "voiceAppId");
    f.event = http_query(r->http, "event");
    f.dedupe_key = http_query(r->http, "activeCallId");
    const char *status = http_query(r->http, "status");
    const char *since = http_query(r->http, "since");
    const char *limit = http_query(r->http, "limit");
    const char *cursor = http_query(r->http, "cursor");
    if (status) {
        enum msg_status st;
        if (!msg_status_parse(status, &st)) {
            http_respond_error(r->http, 400, "invalid_query",
                               "status: one of pending, failed, delivering, delivered, dead, "
                               "skipped");
            return;
        }
        f.status = (int)st;
        /* "pending" and "failed" share a stored state: attempts tell them apart. */
        if (strcmp(status, "failed") == 0)
            f.attempted = 1;
        else if (strcmp(status, "pending") == 0)
            f.attempted = 0;
    }
    char *end;
    if (since && ((f.since = strtoll(since, &end, 10)) < 0 || *end != '\0')) {
        http_respond_error(r->http, 400, "invalid_query", "since: must be unix seconds");
        return;
    }
    if (limit && ((f.limit = (int)strtol(limit, &end, 10)) < 1 || f.limit > LIST_LIMIT_MAX ||
                  *end != '\0')) {
        http_respond_error(r->http, 400, "invalid_query", "limit: 1 to %d", LIST_LIMIT_MAX);
        return;
    }
    if (cursor && ((f.before_seq = strtoll(cursor, &end, 10)) <= 0 || *end != '\0')) {
        http_respond_error(r->http, 400, "invalid_query",
                           "cursor: use nextCursor of the last page");
        return;
    }
    struct list_ctx l = {.data = json_array()};
    struct ch_error err = {0};
    if (store_message_list(r->ctx->store, &f, add_message, &l, &err) != CH_OK) {
        json_decref(l.data);
        store_failed(r, &err);
        return;
    }
    char next[32];
    snprintf(next, sizeof next, "%lld", (long long)l.last_seq);
    respond_json_value(
        r, 200,
        json_pack("{s:o, s:s?}", "data", l.data, "nextCursor", l.count == f.limit ? next : NULL));
}

static void add_attempt(void *ctx, const struct attempt_view *a)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:i}", "at", (json_int_t)(a->at_ms / 1000), "atMs",
                          (json_int_t)a->at_ms, "durationMs", (json_int_t)a->duration_ms,
                          "httpStatus", a->http_status);
    if (o == NULL)
        return;
    json_object_set_new(o, "errorClass",
                        a->error_class[0] ? json_string(a->error_class) : json_null());
    json_object_set_new(o, "error", a->error[0] ? json_string(a->error) : json_null());
    /* A response may not be UTF-8: jansson refuses such strings, so those show as null. */
    json_t *resp = json_string(a->response);
    json_object_set_new(o, "response", resp ? resp : json_null());
    json_array_append_new(ctx, o);
}

static void message_get(struct api_request *r, const char *id)
{
    struct message_view m;
    struct ch_error err = {0};
    if (store_message_get(r->ctx->store, id, &m, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    json_t *o = message_json(&m);
    json_t *attempts = json_array();
    if (store_message_attempts(r->ctx->store, m.seq, add_attempt, attempts, &err) != CH_OK) {
        json_decref(o);
        json_decref(attempts);
        store_failed(r, &err);
        return;
    }
    json_object_set_new(o, "attempts", attempts);
    respond_json_value(r, 200, o);
}

static void message_replay(struct api_request *r, const char *id)
{
    struct ch_error err = {0};
    struct message_view m;
    if (store_message_get(r->ctx->store, id, &m, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    if (m.app_deleted) {
        http_respond_error(r->http, 409, "app_deleted",
                           "message '%s' belongs to voice app '%s', which was deleted: it is not "
                           "delivered again (an app created since with that id starts empty)",
                           id, m.app_id);
        return;
    }
    if (m.status == MSG_SKIPPED) {
        http_respond_error(r->http, 409, "conflict",
                           "message '%s' was skipped: its voice app has no URL for %s", id,
                           m.event);
        return;
    }
    if (m.body_len == 0) {
        http_respond_error(r->http, 409, "conflict",
                           "message '%s' has no record any more: retention removed it", id);
        return;
    }
    if (m.status == MSG_DELIVERING) {
        http_respond_error(r->http, 409, "conflict",
                           "message '%s' is being delivered now; replay it once the attempt ends",
                           id);
        return;
    }
    if (store_message_requeue(r->ctx->store, id, clock_wall_s(), &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    engine_wake(r->ctx->engine);
    respond_json_value(r, 202, json_pack("{s:s}", "messageId", id));
}

/* ---- operations ---- */

static void healthz(struct api_request *r)
{
    struct store_stats st;
    struct ch_error err = {0};
    if (store_stats(r->ctx->store, &st, &err) != CH_OK) {
        http_respond_error(r->http, 503, "unavailable", "the store does not answer");
        return;
    }
    const char *ok = "{\"status\":\"ok\"}";
    http_respond(r->http, 200, "application/json", ok, strlen(ok));
}

static void metrics_text(struct api_request *r)
{
    struct metrics *m = r->ctx->metrics;
    struct store_stats st = {0};
    struct ch_error err = {0};
    bool have_stats = store_stats(r->ctx->store, &st, &err) == CH_OK;
    struct buf b;
    buf_init(&b, 64 * 1024);
    char line[512];
#define EMIT(...)                                          \
    do {                                                   \
        int n_ = snprintf(line, sizeof line, __VA_ARGS__); \
        buf_add(&b, line, n_ > 0 ? (size_t)n_ : 0);        \
    } while (0)
    EMIT("# HELP callhook_ingested_total Events accepted and stored.\n"
         "# TYPE callhook_ingested_total counter\ncallhook_ingested_total %lld\n",
         (long long)atomic_load(&m->ingested));
    EMIT("# HELP callhook_duplicates_total Upstream duplicates answered without storing.\n"
         "# TYPE callhook_duplicates_total counter\ncallhook_duplicates_total %lld\n",
         (long long)atomic_load(&m->duplicates));
    EMIT("# HELP callhook_delivered_total Deliveries answered with a 2xx.\n"
         "# TYPE callhook_delivered_total counter\ncallhook_delivered_total %lld\n",
         (long long)atomic_load(&m->delivered));
    EMIT("# HELP callhook_failed_attempts_total Failed attempts by class.\n"
         "# TYPE callhook_failed_attempts_total counter\n");
    for (int c = 0; c < FAILURE_COUNT_; c++)
        EMIT("callhook_failed_attempts_total{class=\"%s\"} %lld\n",
             failure_class_name((enum failure_class)c), (long long)atomic_load(&m->failed[c]));
    EMIT("# HELP callhook_dead_total Messages whose retry schedule ran out.\n"
         "# TYPE callhook_dead_total counter\ncallhook_dead_total %lld\n",
         (long long)atomic_load(&m->dead));
    EMIT("# HELP callhook_in_flight Attempts under way.\n"
         "# TYPE callhook_in_flight gauge\ncallhook_in_flight %lld\n",
         (long long)atomic_load(&m->in_flight));
    EMIT("# HELP callhook_engine_queued Messages in memory waiting for a connection slot.\n"
         "# TYPE callhook_engine_queued gauge\ncallhook_engine_queued %lld\n"
         "# HELP callhook_engine_queued_bytes Bytes they hold (bounded by --max-queued-mb).\n"
         "# TYPE callhook_engine_queued_bytes gauge\ncallhook_engine_queued_bytes %lld\n",
         (long long)atomic_load(&m->queued), (long long)atomic_load(&m->queued_bytes));
    EMIT("# HELP callhook_ratelimit_wait_seconds Time deliveries of rate-limited voice apps "
         "waited in the engine's queue.\n"
         "# TYPE callhook_ratelimit_wait_seconds summary\n"
         "callhook_ratelimit_wait_seconds_sum %.3f\ncallhook_ratelimit_wait_seconds_count %lld\n"
         "# HELP callhook_ratelimit_deferred_total Groups of messages a rate limit put back in "
         "the store to wait there.\n"
         "# TYPE callhook_ratelimit_deferred_total counter\ncallhook_ratelimit_deferred_total "
         "%lld\n",
         (double)atomic_load(&m->rate_wait_ms) / 1000.0, (long long)atomic_load(&m->rate_waits),
         (long long)atomic_load(&m->rate_deferred));
    if (have_stats) {
        int64_t now = clock_wall_s();
        EMIT("# HELP callhook_queue_depth Messages not yet delivered, dead or skipped.\n"
             "# TYPE callhook_queue_depth gauge\ncallhook_queue_depth %lld\n",
             (long long)(st.pending + st.delivering));
        EMIT("# HELP callhook_oldest_pending_age_seconds Age of the oldest undelivered message.\n"
             "# TYPE callhook_oldest_pending_age_seconds gauge\n"
             "callhook_oldest_pending_age_seconds %lld\n",
             (long long)(st.oldest_pending_at ? now - st.oldest_pending_at : 0));
        EMIT("# HELP callhook_messages Stored messages by status.\n"
             "# TYPE callhook_messages gauge\n"
             "callhook_messages{status=\"pending\"} %lld\n"
             "callhook_messages{status=\"delivering\"} %lld\n"
             "callhook_messages{status=\"delivered\"} %lld\n"
             "callhook_messages{status=\"dead\"} %lld\n"
             "callhook_messages{status=\"skipped\"} %lld\n",
             (long long)st.pending, (long long)st.delivering, (long long)st.delivered,
             (long long)st.dead, (long long)st.skipped);
    }
    static const long bounds[METRICS_NBUCKETS] = METRICS_LATENCY_BUCKETS_MS;
    EMIT("# HELP callhook_delivery_latency_seconds From ingest to a 2xx.\n"
         "# TYPE callhook_delivery_latency_seconds histogram\n");
    long long cumulative = 0;
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        cumulative += (long long)atomic_load(&m->latency_bucket[i]);
        EMIT("callhook_delivery_latency_seconds_bucket{le=\"%g\"} %lld\n", (double)bounds[i] / 1000,
             cumulative);
    }
    cumulative += (long long)atomic_load(&m->latency_bucket[METRICS_NBUCKETS]);
    EMIT("callhook_delivery_latency_seconds_bucket{le=\"+Inf\"} %lld\n", cumulative);
    EMIT("callhook_delivery_latency_seconds_sum %g\n",
         (double)atomic_load(&m->latency_sum_ms) / 1000);
    EMIT("callhook_delivery_latency_seconds_count %lld\n",
         (long long)atomic_load(&m->latency_count));
#undef EMIT
    http_respond(r->http, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
    buf_release(&b);
}

/* ---- routing ---- */

/* Splits "/v1/voice-apps/x/begin-call" into at most 6 segments, in place. */
static int split_path(char *path, char *seg[6])
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(path, "/", &save); t && n < 6; t = strtok_r(NULL, "/", &save))
        seg[n++] = t;
    return strtok_r(NULL, "/", &save) ? 7 : n;
}

/* Routes a request. run = false: only what the headers decide (the key, its role, whether the
 * endpoint exists), before a byte of the body is read; true when that answered the request.
 * run = true: the whole request, its body read. */
static bool route(struct api_request *r, bool run)
{
    char path[sizeof r->http->path];
    snprintf(path, sizeof path, "%s", r->http->path);
    char *seg[6] = {0};
    int n = split_path(path, seg);

    if (n == 1 && strcmp(seg[0], "healthz") == 0 && method_is(r, "GET")) {
        if (run)
            healthz(r);
        return run;
    }
    if (!run && !api_authenticate(r))
        return true;
    if (n == 1 && strcmp(seg[0], "metrics") == 0 && method_is(r, "GET")) {
        if (need_role(r, true) && run)
            metrics_text(r);
        return run || r->http->status != 0;
    }
    if (n < 2 || strcmp(seg[0], "v1") != 0) {
        http_respond_error(r->http, 404, "not_found", "no such endpoint: %s", r->http->path);
        return true;
    }
    if (strcmp(seg[1], "voice-apps") == 0) {
        if (n == 2 && method_is(r, "GET")) {
            if (need_role(r, true) && run)
                app_list(r);
            return run || r->http->status != 0;
        }
        if (n == 4 && method_is(r, "POST") &&
            (strcmp(seg[3], "begin-call") == 0 || strcmp(seg[3], "end-call") == 0))
            return run ? ingest_handle(r, seg[2], seg[3]) : ingest_refused(r);
        if (n == 3) {
            if (method_is(r, "PUT") && need_role(r, false)) {
                if (run)
                    app_put(r, seg[2]);
            } else if (method_is(r, "GET") && need_role(r, true)) {
                if (run)
                    app_get(r, seg[2]);
            } else if (method_is(r, "DELETE") && need_role(r, false)) {
                if (run)
                    app_delete(r, seg[2]);
            } else if (r->http->status == 0) {
                http_respond_error(r->http, 405, "method_not_allowed", "use GET, PUT or DELETE");
            }
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "secret") == 0 && method_is(r, "GET")) {
            if (need_role(r, false) && run)
                app_secret(r, seg[2], false);
            return run || r->http->status != 0;
        }
        if (n == 5 && strcmp(seg[3], "secret") == 0 && strcmp(seg[4], "rotate") == 0 &&
            method_is(r, "POST")) {
            if (need_role(r, false) && run)
                app_secret(r, seg[2], true);
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "recover") == 0 && method_is(r, "POST")) {
            if (need_role(r, false) && run)
                app_recover(r, seg[2]);
            return run || r->http->status != 0;
        }
    } else if (strcmp(seg[1], "messages") == 0) {
        if (n == 2 && method_is(r, "GET")) {
            if (need_role(r, true) && run)
                messages_list(r);
            return run || r->http->status != 0;
        }
        if (n == 3 && method_is(r, "GET")) {
            if (need_role(r, true) && run)
                message_get(r, seg[2]);
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "replay") == 0 && method_is(r, "POST")) {
            if (need_role(r, false) && run)
                message_replay(r, seg[2]);
            return run || r->http->status != 0;
        }
    }
    http_respond_error(r->http, 404, "not_found", "no such endpoint: %s %s", r->http->method,
                       r->http->path);
    return true;
}

static bool on_headers(void *ctx, struct http_request *h)
{
    struct api_request *r = h->state;
    r->http = h;
    r->ctx = ctx;
    return route(r, false);
}

static bool on_request(void *ctx, struct http_request *h)
{
    (void)ctx;
    return route(h->state, true);
}

void api_handler(struct api_context *ctx, struct http_handler *out)
{
    *out = (struct http_handler){.on_headers = on_headers,
                                 .on_request = on_request,
                                 .ctx = ctx,
                                 .state_bytes = sizeof(struct api_request)};
}
