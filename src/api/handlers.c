/*
 * Routing and the handlers of docs/API.md other than ingest and status: Voice Apps, messages,
 * replay, recover, health and metrics. JSON is built with jansson.
 */
#include "api/api.h"

#include <callhook/callhook.h>
#include <jansson.h>

#include "api/cache.h"
#include "api/console.h"
#include "deliver/app.h"
#include "deliver/ops.h"
#include "deliver/probe.h"
#include "lib/crypto.h"
#include "ui/ui.h"
#include "util/clock.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROTATE_GRACE_DEFAULT_S 86400
#define LIST_LIMIT_DEFAULT     50
#define LIST_LIMIT_MAX         500
#define DEDUPE_KEY_MAX         255
#define STATS_PATH             "stats" /* GET /v1/voice-apps/stats, so no app has that id */

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

/* An event's name as a filter or option takes it: "begin-call" or "begin", "end-call" or
 * "end" (the CLI's short forms), given back in the one form stored and shown; NULL for
 * anything else. */
static const char *event_param(const char *text)
{
    if (strcmp(text, "begin-call") == 0 || strcmp(text, "begin") == 0)
        return "begin-call";
    if (strcmp(text, "end-call") == 0 || strcmp(text, "end") == 0)
        return "end-call";
    return NULL;
}

/* true/false (or 1/0) of a query argument; false (and a 400 naming it) for anything else. */
static bool bool_param(struct api_request *r, const char *name, const char *text, bool *out)
{
    if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)
        *out = true;
    else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)
        *out = false;
    else {
        http_respond_error(r->http, 400, "invalid_query", "%s: true or false, not '%.64s'", name,
                           text);
        return false;
    }
    return true;
}

/* Unix seconds of the query argument name, >= 0; false (and a 400 naming it) when it is not. */
static bool time_param(struct api_request *r, const char *name, const char *text, int64_t *out)
{
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 0) {
        http_respond_error(r->http, 400, "invalid_query", "%s: must be unix seconds, not '%.64s'",
                           name, text);
        return false;
    }
    *out = v;
    return true;
}

static bool since_param(struct api_request *r, const char *text, int64_t *out)
{
    return time_param(r, "since", text, out);
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
    if (v != NULL && ops_app_is(a->id))
        json_object_set_new(v, "opsWebhook", json_true()); /* callhook's own, not a customer's */
    return v;
}

/* Stores the settings cfg (checked) for app a (exists: read from the store; else new, with a
 * new signing secret) and answers with the app. Releases a. */
static void app_save(struct api_request *r, const char *id, const struct app_config *cfg,
                     struct stored_app *a, bool exists)
{
    struct api_context *ctx = r->ctx;
    struct ch_error err = {0};
    int64_t now = clock_wall_s();
    if (api_ops_save_refused(r, id, cfg, exists ? a : NULL)) {
        if (exists)
            stored_app_release(a);
        return;
    }
    if (!exists) {
        memset(a, 0, sizeof *a);
        snprintf(a->id, sizeof a->id, "%s", id);
        a->created_at = now;
        struct ch_secret sec;
        if (ch_secret_generate(&sec, CH_KEY_HMAC, 32, &err) != CH_OK ||
            ch_secret_format(&sec, a->secret, sizeof a->secret, &err) != CH_OK) {
            ch_secret_wipe(&sec);
            http_respond_error(r->http, 500, "internal", "cannot make a signing secret");
            return;
        }
        ch_secret_wipe(&sec);
    }
    free(a->config_json);
    a->config_json = app_config_to_json(cfg, NULL, NULL);
    a->updated_at = now;
    a->enabled = cfg->enabled;
    if (cfg->enabled)
        a->disabled_reason[0] = '\0';
    bool created = false;
    if (a->config_json == NULL)
        http_respond_error(r->http, 500, "internal", "out of memory");
    else if (store_app_put(ctx->store, a, &created, &err) != CH_OK)
        store_failed(r, &err);
    else {
        engine_app_changed(ctx->engine);
        api_cache_clear(ctx->apps);
        respond_json_value(r, created ? 201 : 200, app_json(a, true));
    }
    stored_app_release(a);
}

static void app_put(struct api_request *r, const char *id)
{
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
    ch_code rc = store_app_get(r->ctx->store, id, &a, &err);
    if (rc != CH_OK && rc != CH_ENOTFOUND) {
        store_failed(r, &err);
        return;
    }
    if (rc == CH_ENOTFOUND && strcmp(id, STATS_PATH) == 0) {
        /* GET /v1/voice-apps/stats is the apps' figures: an app of that id could not be read. */
        http_respond_error(r->http, 400, "invalid_id",
                           "'%s' is reserved (GET /v1/voice-apps/%s lists the apps' figures); "
                           "choose another id",
                           id, STATS_PATH);
        return;
    }
    app_save(r, id, &cfg, &a, rc == CH_OK);
}

/* RFC 7396 on jansson: target (taken) merged with patch (borrowed), returned. An object patch
 * merges member by member, a null member removes the target's, anything else replaces. */
static json_t *merge_patch(json_t *target, const json_t *patch)
{
    if (!json_is_object(patch)) {
        json_decref(target);
        return json_deep_copy(patch);
    }
    if (!json_is_object(target)) {
        json_decref(target);
        target = json_object();
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)patch, k, v)
    {
        if (json_is_null(v)) {
            json_object_del(target, k);
            continue;
        }
        json_t *cur = json_object_get(target, k);
        json_object_set_new(target, k, merge_patch(cur ? json_incref(cur) : NULL, v));
    }
    return target;
}

/* PATCH: the app's settings as GET shows them, merged with the body (a JSON merge patch), then
 * checked exactly as a PUT body. A patch that does not check changes nothing. */
static void app_patch(struct api_request *r, const char *id)
{
    json_error_t jerr;
    json_t *patch =
        json_loadb(r->http->body.data ? r->http->body.data : "", r->http->body.len, 0, &jerr);
    if (patch == NULL) {
        http_respond_error(r->http, 400, "invalid_json", "the body is not JSON: %s", jerr.text);
        return;
    }
    if (!json_is_object(patch)) {
        json_decref(patch);
        http_respond_error(r->http, 400, "invalid_settings",
                           "a merge patch is a JSON object of the settings to change");
        return;
    }
    struct stored_app a;
    struct ch_error err = {0};
    if (store_app_get(r->ctx->store, id, &a, &err) != CH_OK) {
        json_decref(patch);
        store_failed(r, &err);
        return;
    }
    json_t *doc = app_json(&a, true);
    doc = doc ? merge_patch(doc, patch) : NULL;
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    struct app_config cfg;
    ch_code rc = text ? app_config_parse(&cfg, text, strlen(text), &err) : CH_ENOMEM;
    /* As in a PUT that leaves connectTimeoutMs out, a new timeoutMs brings the connect limit
     * down with it when it is less (the first error is the one told when that does not help). */
    json_t *t = json_object_get(patch, "timeoutMs"), *c = json_object_get(doc, "connectTimeoutMs");
    if (rc == CH_EINVAL && json_is_integer(t) &&
        json_object_get(patch, "connectTimeoutMs") == NULL && json_is_integer(c) &&
        json_integer_value(c) > json_integer_value(t)) {
        json_object_set_new(doc, "connectTimeoutMs", json_integer(json_integer_value(t)));
        char *lowered = json_dumps(doc, JSON_COMPACT);
        if (lowered && app_config_parse(&cfg, lowered, strlen(lowered), NULL) == CH_OK) {
            free(text);
            text = lowered;
            rc = CH_OK;
        } else {
            free(lowered);
        }
    }
    json_decref(patch);
    json_decref(doc);
    if (rc == CH_OK)
        rc = app_config_check_files(&cfg, &err);
    free(text);
    if (rc == CH_ENOMEM)
        http_respond_error(r->http, 500, "internal", "out of memory");
    else if (rc != CH_OK)
        http_respond_error(r->http, 400, "invalid_settings", "%s", err.message);
    if (rc != CH_OK) {
        stored_app_release(&a);
        return;
    }
    app_save(r, id, &cfg, &a, true);
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
    int64_t since = 0;
    if (since_text && !since_param(r, since_text, &since))
        return;
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
    log_info("api: recover of voice app '%s' since %lld requeued %lld messages", id,
             (long long)since, (long long)n);
    respond_json_value(r, 200, json_pack("{s:I}", "requeued", (json_int_t)n));
}

/* A sample record for a test send, clearly marked as one: its ids say so and CallhookTest is
 * true. A fresh call id each time, so a receiver that dedupes takes it as a new call. */
static char *test_record(const char *event, const char *call_id, int64_t now)
{
    char when[32];
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    bool begin = strcmp(event, "begin-call") == 0;
    json_t *rec = json_pack("{s:s, s:s, s:b, s:i, s:s, s:s, s:s, s:s?}", "ActiveCallId", call_id,
                            "CorrelationId", call_id, "CallhookTest", 1, "CallType", begin ? 4 : 1,
                            "Direction", "Inbound", "CallerId", "+15550100000", "StartTimeUtc",
                            when, "EndTimeUtc", begin ? NULL : when);
    char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    return text;
}

/* POST /v1/voice-apps/{id}/test[?event=]: one signed sample record sent now, answered with what
 * the receiver said. Not stored as a message. One at a time: it holds one of the server's
 * threads for up to the app's timeoutMs. */
static void app_test(struct api_request *r, const char *id)
{
    struct api_context *ctx = r->ctx;
    const char *event_text = http_query(r->http, "event");
    const char *event = event_text ? event_param(event_text) : NULL;
    if (event_text && event == NULL) {
        http_respond_error(r->http, 400, "invalid_query",
                           "event: begin-call (or begin) or end-call (or end), not '%.64s'",
                           event_text);
        return;
    }
    if (r->http->body.len > 0) {
        http_respond_error(r->http, 400, "invalid_json",
                           "a test send takes no body: it sends a sample record of its own");
        return;
    }
    struct stored_app a;
    struct ch_error err = {0};
    if (store_app_get(ctx->store, id, &a, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    if (event == NULL) {
        /* The begin-call URL when there is one, else the end-call URL. */
        struct app_config cfg;
        event = app_config_parse(&cfg, a.config_json, strlen(a.config_json), NULL) == CH_OK &&
                        cfg.begin_url[0] == '\0' && cfg.end_url[0] != '\0'
                    ? "end-call"
                    : "begin-call";
    }
    if (atomic_exchange(&ctx->testing, true)) {
        stored_app_release(&a);
        snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
        http_respond_error(r->http, 503, "busy", "another test send is under way; try again");
        return;
    }
    unsigned char nonce[12];
    char call_id[64], webhook_id[CH_MSGID_SIZE];
    int64_t now = clock_wall_s();
    bool made = crypto_random(nonce, sizeof nonce);
    int o = snprintf(call_id, sizeof call_id, "callhook-test-");
    for (size_t i = 0; i < sizeof nonce; i++)
        o += snprintf(call_id + o, sizeof call_id - (size_t)o, "%02x", nonce[i]);
    char *body = made ? test_record(event, call_id, now) : NULL;
    struct probe_result *out = malloc(sizeof *out);
    int nallowed = 0;
    const struct guard_cidr *allowed = engine_allowed(ctx->engine, &nallowed);
    ch_code rc = body && out && ch_msgid(id, event, call_id, webhook_id, &err) == CH_OK
                     ? probe_send(id, &a, allowed, nallowed, event, webhook_id, body, strlen(body),
                                  out, &err)
                     : ch_error_set(&err, CH_ENOMEM, "cannot make a sample record");
    atomic_store(&ctx->testing, false);
    stored_app_release(&a);
    if (rc == CH_ENOTFOUND)
        http_respond_error(r->http, 409, "conflict", "%s: nothing to test", err.message);
    else if (rc != CH_OK)
        http_respond_error(r->http, 500, "internal", "%s", err.message);
    else {
        json_t *headers = json_array();
        for (char *line = out->headers, *nl; *line && (nl = strchr(line, '\n')); line = nl + 1) {
            *nl = '\0';
            json_t *h = json_string(line);
            json_array_append_new(headers, h ? h : json_string("(not UTF-8)"));
        }
        json_t *resp = json_stringn(out->response, out->response_len);
        json_t *v = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b, s:i, s:I}", "voiceAppId", id, "event",
                              event, "url", out->url, "webhookId", webhook_id, "test", 1, "stored",
                              0, "httpStatus", (int)out->http_status, "durationMs",
                              (json_int_t)out->duration_ms);
        if (v) {
            json_object_set_new(v, "errorClass",
                                out->error_class ? json_string(out->error_class) : json_null());
            json_object_set_new(v, "error", out->error[0] ? json_string(out->error) : json_null());
            json_object_set_new(v, "headers", headers ? headers : json_array());
            /* An answer that is not UTF-8 shows as null, as an attempt's does. */
            json_object_set_new(v, "response", resp ? resp : json_null());
            json_object_set_new(v, "record", json_string(body));
        } else {
            json_decref(headers);
            json_decref(resp);
        }
        log_info("api: test send of voice app '%s' (%s) to %s: %s", id, event, out->url,
                 out->error[0] ? out->error : "2xx");
        respond_json_value(r, 200, v);
    }
    free(out);
    free(body);
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
    json_object_set_new(o, "correlationId",
                        m->correlation_id[0] ? json_string(m->correlation_id) : json_null());
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
    const char *event = http_query(r->http, "event");
    f.dedupe_key = http_query(r->http, "activeCallId");
    f.correlation_id = http_query(r->http, "correlationId");
    const char *status = http_query(r->http, "status");
    if (f.app_id && !app_id_valid(f.app_id)) {
        http_respond_error(r->http, 400, "invalid_query",
                           "voiceAppId: 1 to 128 characters of A-Z a-z 0-9 . _ -, not '%.64s'",
                           f.app_id);
        return;
    }
    if (event && (f.event = event_param(event)) == NULL) {
        http_respond_error(r->http, 400, "invalid_query",
                           "event: begin-call (or begin) or end-call (or end), not '%.64s'", event);
        return;
    }
    if (f.dedupe_key && (f.dedupe_key[0] == '\0' || strlen(f.dedupe_key) > DEDUPE_KEY_MAX)) {
        http_respond_error(r->http, 400, "invalid_query",
                           "activeCallId: 1 to %d characters (a call's dedupe key)",
                           DEDUPE_KEY_MAX);
        return;
    }
    if (f.correlation_id &&
        (f.correlation_id[0] == '\0' || strlen(f.correlation_id) > DEDUPE_KEY_MAX)) {
        http_respond_error(r->http, 400, "invalid_query",
                           "correlationId: 1 to %d characters (a record's CorrelationId)",
                           DEDUPE_KEY_MAX);
        return;
    }
    const char *since = http_query(r->http, "since");
    const char *until = http_query(r->http, "until");
    const char *limit = http_query(r->http, "limit");
    const char *cursor = http_query(r->http, "cursor");
    if (status) {
        enum msg_status st;
        if (!msg_status_parse(status, &st)) {
            http_respond_error(r->http, 400, "invalid_query",
                               "status: one of pending, failed, delivering, delivered, dead, "
                               "skipped; not '%.64s'",
                               status);
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
    if (since && !since_param(r, since, &f.since))
        return;
    if (until && !time_param(r, "until", until, &f.until))
        return;
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

/* What add_attempt needs beside the attempt: the list, and for its request headers the
 * message, its app's settings (NULL when gone) and whether the key sees header values. */
struct attempts_ctx {
    json_t *list;
    const struct message_view *m;
    const struct stored_app *app;
    bool full;
};

static void add_attempt(void *arg, const struct attempt_view *a)
{
    struct attempts_ctx *ctx = arg;
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
    json_object_set_new(o, "requestHeaders", api_request_headers(a, ctx->m, ctx->app, ctx->full));
    json_array_append_new(ctx->list, o);
}

static void message_get(struct api_request *r, const char *id)
{
    struct message_view m;
    struct ch_error err = {0};
    if (store_message_get(r->ctx->store, id, &m, &err) != CH_OK) {
        store_failed(r, &err);
        return;
    }
    /* The app's extra headers, as its settings are now, for the attempts' request headers. */
    struct stored_app app;
    ch_code rc = m.app_deleted ? CH_ENOTFOUND : store_app_get(r->ctx->store, m.app_id, &app, &err);
    if (rc != CH_OK && rc != CH_ENOTFOUND) {
        store_failed(r, &err);
        return;
    }
    json_t *o = message_json(&m);
    struct attempts_ctx ctx = {.list = json_array(),
                               .m = &m,
                               .app = rc == CH_OK ? &app : NULL,
                               .full = r->role == ROLE_ADMIN};
    if (store_message_attempts(r->ctx->store, m.seq, add_attempt, &ctx, &err) != CH_OK) {
        json_decref(o);
        json_decref(ctx.list);
        if (rc == CH_OK)
            stored_app_release(&app);
        store_failed(r, &err);
        return;
    }
    if (rc == CH_OK)
        stored_app_release(&app);
    json_object_set_new(o, "attempts", ctx.list);
    respond_json_value(r, 200, o);
}

/* Whether a replay asks for a new webhook-id: ?newId=true, or {"newId": true} as the body
 * (either; both must agree). false (and a 400) when either is something else. */
static bool replay_new_id(struct api_request *r, bool *new_id)
{
    const char *q = http_query(r->http, "newId");
    bool from_query = false;
    if (q && !bool_param(r, "newId", q, &from_query))
        return false;
    *new_id = from_query;
    if (r->http->body.len == 0)
        return true;
    json_error_t jerr;
    json_t *b = json_loadb(r->http->body.data, r->http->body.len, 0, &jerr);
    if (b == NULL) {
        http_respond_error(r->http, 400, "invalid_json", "the body is not JSON: %s", jerr.text);
        return false;
    }
    char bad[200] = "";
    const char *k;
    json_t *v;
    if (!json_is_object(b))
        snprintf(bad, sizeof bad, "the body is an object such as {\"newId\": true}");
    json_object_foreach(b, k, v)
    {
        if (strcmp(k, "newId") != 0)
            snprintf(bad, sizeof bad, "%.64s: unknown key (a replay takes newId only)", k);
        else if (!json_is_boolean(v))
            snprintf(bad, sizeof bad, "newId: true or false");
        else if (q && json_is_true(v) != from_query)
            snprintf(bad, sizeof bad, "newId: the query and the body disagree");
        else
            *new_id = json_is_true(v);
        if (bad[0])
            break;
    }
    json_decref(b);
    if (bad[0])
        http_respond_error(r->http, 400, "invalid_settings", "%s", bad);
    return bad[0] == '\0';
}

static void message_replay(struct api_request *r, const char *id)
{
    struct ch_error err = {0};
    struct message_view m;
    bool new_id = false;
    if (!replay_new_id(r, &new_id))
        return;
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
    if (!new_id) {
        if (store_message_requeue(r->ctx->store, id, clock_wall_s(), &err) != CH_OK) {
            store_failed(r, &err);
            return;
        }
        engine_wake(r->ctx->engine);
        respond_json_value(r, 202, json_pack("{s:s}", "messageId", id));
        return;
    }
    /* A new message, hence a new webhook-id, with the same record: for a receiver that lost
     * an event after acknowledging it and dedupes by webhook-id. Its id is a message id of a
     * key nothing else has (the original's id and random bytes). */
    unsigned char nonce[16];
    char key[160], copy_id[CH_MSGID_SIZE];
    int o = snprintf(key, sizeof key, "replay:%s:", id);
    bool made = crypto_random(nonce, sizeof nonce);
    for (size_t i = 0; i < sizeof nonce; i++)
        o += snprintf(key + o, sizeof key - (size_t)o, "%02x", nonce[i]);
    if (!made || ch_msgid(m.app_id, m.event, key, copy_id, &err) != CH_OK) {
        http_respond_error(r->http, 500, "internal", "cannot make a message id");
        return;
    }
    ch_code rc = store_message_copy(r->ctx->store, id, copy_id, NULL, 0, clock_wall_s(), &err);
    if (rc == CH_ENOTFOUND) {
        http_respond_error(r->http, 409, "conflict", "%s", err.message);
        return;
    }
    if (rc != CH_OK) {
        store_failed(r, &err);
        return;
    }
    engine_wake(r->ctx->engine);
    log_info("api: message '%s' replayed as '%s' (a new webhook-id)", id, copy_id);
    respond_json_value(r, 202, json_pack("{s:s, s:s}", "messageId", copy_id, "replayOf", id));
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
             (long long)(st.pending + st.failed + st.delivering));
        EMIT("# HELP callhook_parked_messages Of those, the messages of disabled voice apps "
             "(waiting until the app is enabled).\n"
             "# TYPE callhook_parked_messages gauge\ncallhook_parked_messages %lld\n",
             (long long)st.parked);
        EMIT("# HELP callhook_oldest_pending_age_seconds Age of the oldest message still to be "
             "delivered whose voice app is enabled.\n"
             "# TYPE callhook_oldest_pending_age_seconds gauge\n"
             "callhook_oldest_pending_age_seconds %lld\n",
             (long long)(st.oldest_pending_at ? now - st.oldest_pending_at : 0));
        /* The statuses of the API's messages, failed (waiting to retry) apart from pending. */
        EMIT("# HELP callhook_messages Stored messages by status (as the API names them).\n"
             "# TYPE callhook_messages gauge\n"
             "callhook_messages{status=\"pending\"} %lld\n"
             "callhook_messages{status=\"failed\"} %lld\n"
             "callhook_messages{status=\"delivering\"} %lld\n"
             "callhook_messages{status=\"delivered\"} %lld\n"
             "callhook_messages{status=\"dead\"} %lld\n"
             "callhook_messages{status=\"skipped\"} %lld\n",
             (long long)st.pending, (long long)st.failed, (long long)st.delivering,
             (long long)st.delivered, (long long)st.dead, (long long)st.skipped);
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

/* The query arguments each endpoint takes (NULL-terminated). */
static const char *const no_args[] = {NULL};
static const char *const list_args[] = {"voiceAppId",    "event", "status", "activeCallId",
                                        "correlationId", "since", "until",  "limit",
                                        "cursor",        NULL};
static const char *const record_args[] = {"reveal", NULL};
static const char *const recover_args[] = {"since", NULL};
static const char *const replay_args[] = {"newId", NULL};
static const char *const test_args[] = {"event", NULL};
static const char *const ops_events_args[] = {"limit", "cursor", NULL};

/* At the headers (run = false): false, with a 400 naming it, when the query has an argument
 * the endpoint does not take or one given twice (nothing is ignored silently). */
static bool args_ok(struct api_request *r, bool run, const char *const *known)
{
    char bad[64];
    bool repeated = false;
    if (run || http_query_check(r->http, known, bad, sizeof bad, &repeated))
        return true;
    char list[160] = "";
    for (size_t i = 0, o = 0; known[i] && o < sizeof list; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", known[i]);
    if (repeated)
        http_respond_error(r->http, 400, "invalid_query", "%s: given twice", bad);
    else
        http_respond_error(r->http, 400, "invalid_query", "%s: unknown query argument (%s%s)", bad,
                           known[0] ? "this endpoint takes " : "this endpoint takes none", list);
    return false;
}

/* Routes a request. run = false: only what the headers decide (the key, its role, whether the
 * endpoint exists, its query's argument names), before a byte of the body is read; true when
 * that answered the request. run = true: the whole request, its body read. */
static bool route(struct api_request *r, bool run)
{
    char path[sizeof r->http->path];
    snprintf(path, sizeof path, "%s", r->http->path);
    char *seg[6] = {0};
    int n = split_path(path, seg);

    /* The console's own files need no key: what it shows comes through the API, with one. A
     * GET is answered once the (empty) request is complete, so the connection stays open for
     * the page's next file; another method is refused from the headers. */
    if (ui_path(r->http->path)) {
        bool get = method_is(r, "GET") || method_is(r, "HEAD");
        if (run || !get)
            ui_respond(r->http);
        return run || !get;
    }
    /* healthz and metrics ignore a query: monitoring tools may add their own. */
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
    if (n == 2 && strcmp(seg[0], "v1") == 0 && strcmp(seg[1], "status") == 0 &&
        method_is(r, "GET")) {
        if (need_role(r, true) && args_ok(r, run, no_args) && run)
            api_status(r);
        return run || r->http->status != 0;
    }
    if (n < 2 || strcmp(seg[0], "v1") != 0) {
        http_respond_error(r->http, 404, "not_found", "no such endpoint: %s", r->http->path);
        return true;
    }
    if (n == 2 && strcmp(seg[1], "whoami") == 0 && method_is(r, "GET")) {
        if (args_ok(r, run, no_args) && run)
            api_whoami(r);
        return run || r->http->status != 0;
    }
    if (strcmp(seg[1], "voice-apps") == 0) {
        if (n == 2 && method_is(r, "GET")) {
            if (need_role(r, true) && args_ok(r, run, no_args) && run)
                app_list(r);
            return run || r->http->status != 0;
        }
        /* The console's figures: the list, and one app's (stats.c). Other methods on
         * .../voice-apps/stats are an app's (a PUT that would make it is refused). */
        if (((n == 3 && strcmp(seg[2], STATS_PATH) == 0) ||
             (n == 4 && strcmp(seg[3], STATS_PATH) == 0)) &&
            method_is(r, "GET")) {
            if (need_role(r, true) && args_ok(r, run, no_args) && run)
                api_console_stats(r, n == 4 ? seg[2] : NULL);
            return run || r->http->status != 0;
        }
        if (n == 4 && method_is(r, "POST") &&
            (strcmp(seg[3], "begin-call") == 0 || strcmp(seg[3], "end-call") == 0)) {
            if (run)
                return ingest_handle(r, seg[2], seg[3]);
            return ingest_refused(r) || api_ops_ingest_refused(r, seg[2]) ||
                   !args_ok(r, run, no_args);
        }
        if (n == 3) {
            if (method_is(r, "PUT") && need_role(r, false)) {
                if (args_ok(r, run, no_args) && run)
                    app_put(r, seg[2]);
            } else if (method_is(r, "PATCH") && need_role(r, false)) {
                if (args_ok(r, run, no_args) && run)
                    app_patch(r, seg[2]);
            } else if (method_is(r, "GET") && need_role(r, true)) {
                if (args_ok(r, run, no_args) && run)
                    app_get(r, seg[2]);
            } else if (method_is(r, "DELETE") && need_role(r, false)) {
                if (args_ok(r, run, no_args) && run)
                    app_delete(r, seg[2]);
            } else if (r->http->status == 0) {
                http_respond_error(r->http, 405, "method_not_allowed",
                                   "use GET, PUT, PATCH or DELETE");
            }
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "secret") == 0 && method_is(r, "GET")) {
            if (need_role(r, false) && args_ok(r, run, no_args) && run)
                app_secret(r, seg[2], false);
            return run || r->http->status != 0;
        }
        if (n == 5 && strcmp(seg[3], "secret") == 0 && strcmp(seg[4], "rotate") == 0 &&
            method_is(r, "POST")) {
            if (need_role(r, false) && args_ok(r, run, no_args) && run)
                app_secret(r, seg[2], true);
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "recover") == 0 && method_is(r, "POST")) {
            if (need_role(r, false) && args_ok(r, run, recover_args) && run)
                app_recover(r, seg[2]);
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "test") == 0 && method_is(r, "POST")) {
            if (need_role(r, false) && args_ok(r, run, test_args) && run)
                app_test(r, seg[2]);
            return run || r->http->status != 0;
        }
    } else if (strcmp(seg[1], "ops-events") == 0 && n == 2 && method_is(r, "GET")) {
        if (need_role(r, true) && args_ok(r, run, ops_events_args) && run)
            api_ops_events(r);
        return run || r->http->status != 0;
    } else if (strcmp(seg[1], "messages") == 0) {
        if (n == 2 && method_is(r, "GET")) {
            if (need_role(r, true) && args_ok(r, run, list_args) && run)
                messages_list(r);
            return run || r->http->status != 0;
        }
        if (n == 3 && method_is(r, "GET")) {
            if (need_role(r, true) && args_ok(r, run, no_args) && run)
                message_get(r, seg[2]);
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "record") == 0 && method_is(r, "GET")) {
            if (need_role(r, true) && args_ok(r, run, record_args) && run)
                api_message_record(r, seg[2]);
            return run || r->http->status != 0;
        }
        if (n == 4 && strcmp(seg[3], "replay") == 0 && method_is(r, "POST")) {
            if (need_role(r, false) && args_ok(r, run, replay_args) && run)
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
