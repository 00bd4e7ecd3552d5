/*
 * Ingest and its group commit: requests are checked on the server's threads, then queued for
 * one writer thread that stores whatever is waiting in one transaction (one fsync), answers
 * every request of the batch, and hands the new events to the engine in memory.
 */
#include "api/api.h"

#include <callhook/callhook.h>

#include "api/cache.h"
#include "deliver/app.h"
#include "util/batcher.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define WRITER_BATCH 512
/* The HTTP server's connection limit: each connection waits on one ingest at most, so the queue
 * is never full in practice; if it were, the request is answered 503 like a store error. */
#define WRITER_QUEUE 4096

struct ingest_job {
    struct api_request *req;
    char msg_id[CH_MSGID_SIZE];
    char app_id[APP_ID_MAX + 1];
    char event[16];
    char dedupe_key[CH_RECORD_ID_MAX + 1];
    char correlation_id[CH_RECORD_ID_MAX + 1]; /* "" when the record has none */
    bool has_call_type;
    long long call_type;
    bool skip;       /* no URL for this event: record it, send nothing */
    bool wait_begin; /* per-call ordering */
};

struct ingest_writer {
    struct api_context *ctx;
    struct batcher *batcher;
    /* The batch being stored, one per job: filled by commit_batch, read by answer_batch on the
     * batcher's thread. */
    struct ingest_item items[WRITER_BATCH];
};

static void answer(struct ingest_job *j, struct ingest_item *it, ch_code batch_rc,
                   struct api_context *ctx)
{
    struct api_request *r = j->req;
    char body[160];
    if (batch_rc != CH_OK) {
        snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
        http_respond_error(r->http, 503, "unavailable",
                           "the event could not be stored; nothing was accepted, send it again");
    } else if (it->unknown_app) {
        http_respond_error(r->http, 404, "unknown_voice_app", "no voice app '%s'", j->app_id);
    } else if (it->duplicate) {
        atomic_fetch_add(&ctx->metrics->duplicates, 1);
        int n = snprintf(body, sizeof body, "{\"messageId\":\"%s\",\"duplicate\":true}", j->msg_id);
        http_respond(r->http, 200, "application/json", body, (size_t)n);
    } else {
        atomic_fetch_add(&ctx->metrics->ingested, 1);
        /* What it was stored as, so that a client can say it: a skipped event is recorded
         * but never sent (the app has no URL for it); a pending one waits for its begin-call
         * or for its app to be enabled. */
        const char *status = it->status == MSG_SKIPPED      ? "skipped"
                             : it->status == MSG_DELIVERING ? "delivering"
                                                            : "pending";
        int n = snprintf(body, sizeof body,
                         "{\"messageId\":\"%s\",\"duplicate\":false,\"status\":\"%s\"}", j->msg_id,
                         status);
        http_respond(r->http, 202, "application/json", body, (size_t)n);
        if (it->status == MSG_DELIVERING) {
            /* The engine takes the body the request read: no copy. */
            struct due_message m = {.seq = it->seq, .attempts = 0, .created_at = it->now};
            snprintf(m.msg_id, sizeof m.msg_id, "%s", j->msg_id);
            snprintf(m.app_id, sizeof m.app_id, "%s", j->app_id);
            snprintf(m.event, sizeof m.event, "%s", j->event);
            snprintf(m.dedupe_key, sizeof m.dedupe_key, "%s", j->dedupe_key);
            m.body = r->http->body.data;
            m.body_len = r->http->body.len;
            buf_init(&r->http->body, 0);
            engine_submit(ctx->engine, &m, r->http->arrived_ms);
        }
    }
}

/* The batcher's commit: the jobs of one batch in one store transaction (one fsync). */
static ch_code commit_batch(void *arg, void *const *jobs, size_t n)
{
    struct ingest_writer *w = arg;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n; i++) {
        const struct ingest_job *j = jobs[i];
        struct ingest_item *it = &w->items[i];
        memset(it, 0, sizeof *it);
        it->msg_id = j->msg_id;
        it->app_id = j->app_id;
        it->event = j->event;
        it->dedupe_key = j->dedupe_key;
        it->correlation_id = j->correlation_id[0] ? j->correlation_id : NULL;
        it->has_call_type = j->has_call_type;
        it->call_type = j->call_type;
        it->body = j->req->http->body.data ? j->req->http->body.data : "";
        it->body_len = j->req->http->body.len;
        it->now = now;
        it->lease_until = now + w->ctx->lease_s;
        it->want = j->skip ? INGEST_SKIP : (j->wait_begin ? INGEST_WAIT_BEGIN : INGEST_DELIVER);
    }
    struct ch_error err = {0};
    ch_code rc = store_ingest(w->ctx->store, w->items, n, &err);
    if (rc != CH_OK)
        log_error("ingest: cannot store a batch of %zu events: %s", n, err.message);
    return rc;
}

/* The batcher's done: answers every request of the batch, then wakes the engine once. */
static void answer_batch(void *arg, void *const *jobs, size_t n, ch_code rc)
{
    struct ingest_writer *w = arg;
    for (size_t i = 0; i < n; i++) {
        struct ingest_job *j = jobs[i];
        answer(j, &w->items[i], rc, w->ctx);
        http_resume(j->req->http);
        free(j);
    }
    engine_kick(w->ctx->engine);
}

ch_code ingest_writer_new(struct api_context *ctx, struct ingest_writer **out, struct ch_error *err)
{
    struct ingest_writer *w = calloc(1, sizeof *w);
    if (w == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    w->ctx = ctx;
    struct batcher_config cfg = {.thread_name = "ch-ingest",
                                 .max_batch = WRITER_BATCH,
                                 .max_queued = WRITER_QUEUE,
                                 .commit = commit_batch,
                                 .done = answer_batch,
                                 .ctx = w};
    ch_code rc = batcher_new(&cfg, &w->batcher, err);
    if (rc != CH_OK) {
        free(w);
        return rc;
    }
    *out = w;
    return CH_OK;
}

void ingest_writer_stop(struct ingest_writer *w)
{
    if (w != NULL)
        batcher_stop(w->batcher);
}

void ingest_writer_free(struct ingest_writer *w)
{
    if (w == NULL)
        return;
    batcher_free(w->batcher);
    free(w);
}

/* What ingest needs of a Voice App, cached for a few seconds (an app changed through this
 * node's API is forgotten at once). */
struct ingest_settings {
    bool has_begin_url, has_end_url, ordering_per_call;
};

/* Fills set, or answers 404/503/500 and returns false. */
static bool ingest_settings(struct api_request *r, const char *app_id, struct ingest_settings *set)
{
    struct api_context *ctx = r->ctx;
    if (api_cache_get(ctx->apps, app_id, set, sizeof *set))
        return true;
    struct stored_app app;
    struct ch_error err = {0};
    ch_code rc = store_app_get(ctx->store, app_id, &app, &err);
    if (rc == CH_ENOTFOUND) {
        http_respond_error(r->http, 404, "unknown_voice_app", "no voice app '%s'", app_id);
        return false;
    }
    if (rc != CH_OK) {
        snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
        http_respond_error(r->http, 503, "unavailable", "the store is unavailable; send it again");
        return false;
    }
    static _Thread_local struct app_config cfg; /* large: not on the stack of a server thread */
    rc = app_config_parse(&cfg, app.config_json, strlen(app.config_json), &err);
    stored_app_release(&app);
    if (rc != CH_OK) {
        http_respond_error(r->http, 500, "internal", "the voice app's stored settings are invalid");
        return false;
    }
    *set = (struct ingest_settings){.has_begin_url = cfg.begin_url[0] != '\0',
                                    .has_end_url = cfg.end_url[0] != '\0',
                                    .ordering_per_call = cfg.ordering_per_call};
    api_cache_put(ctx->apps, app_id, set, sizeof *set);
    return true;
}

static bool is_json_content_type(const char *ct)
{
    if (ct == NULL)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

bool ingest_refused(struct api_request *r)
{
    if (r->role == ROLE_INGEST || r->role == ROLE_ADMIN)
        return false;
    http_respond_error(r->http, 403, "forbidden", "this key's role (%s) cannot ingest events",
                       key_role_name(r->role));
    return true;
}

bool ingest_handle(struct api_request *r, const char *app_id, const char *event)
{
    struct api_context *ctx = r->ctx;
    if (ingest_refused(r))
        return true;
    if (!is_json_content_type(http_header(r->http, "Content-Type"))) {
        http_respond_error(r->http, 415, "unsupported_media_type",
                           "send the call record with Content-Type: application/json");
        return true;
    }
    struct ch_record rec;
    struct ch_error err = {0};
    ch_code rc = ch_record_parse(&rec, r->http->body.data ? r->http->body.data : "",
                                 r->http->body.len, ctx->max_body_bytes, &err);
    if (rc == CH_ETOOBIG) {
        http_respond_error(r->http, 413, "too_large", "%s", err.message);
        return true;
    }
    if (rc == CH_ENOTOBJECT) {
        http_respond_error(r->http, 400, "not_an_object", "%s", err.message);
        return true;
    }
    if (rc != CH_OK) {
        http_respond_error(r->http, 400, "invalid_json", "%s", err.message);
        return true;
    }
    const char *key = ch_record_dedupe_key(&rec);
    if (key == NULL) {
        key = http_header(r->http, "Idempotency-Key");
        if (key == NULL || *key == '\0' || strlen(key) > CH_RECORD_ID_MAX) {
            http_respond_error(r->http, 400, "no_dedupe_key",
                               "the record has no ActiveCallId or CorrelationId; send an "
                               "Idempotency-Key header (1 to %d bytes)",
                               CH_RECORD_ID_MAX);
            return true;
        }
    }
    struct ingest_settings set;
    if (!ingest_settings(r, app_id, &set))
        return true;
    struct ingest_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        http_respond_error(r->http, 503, "unavailable", "out of memory; send it again");
        return true;
    }
    j->req = r;
    snprintf(j->app_id, sizeof j->app_id, "%s", app_id);
    snprintf(j->event, sizeof j->event, "%s", event);
    snprintf(j->dedupe_key, sizeof j->dedupe_key, "%s", key);
    if (rec.has_correlation_id)
        snprintf(j->correlation_id, sizeof j->correlation_id, "%s", rec.correlation_id);
    j->has_call_type = rec.call_type_kind != CH_CALL_TYPE_ABSENT;
    j->call_type = rec.call_type;
    j->skip = strcmp(event, "begin-call") == 0 ? !set.has_begin_url : !set.has_end_url;
    j->wait_begin = set.ordering_per_call;
    if (ch_msgid(app_id, event, key, j->msg_id, &err) != CH_OK) {
        free(j);
        http_respond_error(r->http, 500, "internal", "cannot derive the message id");
        return true;
    }
    enum batcher_submit_result queued = batcher_submit(ctx->writer->batcher, j);
    if (queued == BATCHER_QUEUED)
        return false;
    free(j);
    snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
    if (queued == BATCHER_STOPPED)
        http_respond_error(r->http, 503, "unavailable", "callhook is shutting down; send it again");
    else
        http_respond_error(r->http, 503, "unavailable",
                           "too many events are waiting to be stored; send it again");
    return true;
}
