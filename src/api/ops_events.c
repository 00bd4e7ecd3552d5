/*
 * The operational webhooks in the API (docs/API.md, "Operational events"): GET /v1/ops-events
 * lists the events callhook stored for its ops webhook, and the internal Voice App that carries
 * them is kept as serve's flags made it: nobody ingests into it, and an admin may only enable,
 * disable, delete it or rotate its secret.
 */
#include "api/api.h"

#include <jansson.h>

#include "deliver/app.h"
#include "deliver/ops.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPS_LIST_DEFAULT 50
#define OPS_LIST_MAX     200

struct views {
    struct message_view *v;
    int n, cap;
};

static void add_view(void *ctx, const struct message_view *m)
{
    struct views *l = ctx;
    if (l->n < l->cap)
        l->v[l->n++] = *m;
}

/* One event as the list shows it; the payload is null once retention emptied the record. */
static json_t *event_json(struct store *s, const struct message_view *m)
{
    char app[APP_ID_MAX + 1];
    const char *type = ops_key_type(m->dedupe_key, app, sizeof app);
    struct stored_body b;
    struct ch_error err = {0};
    json_t *payload = NULL;
    if (store_message_body(s, m->msg_id, &b, &err) != CH_OK) {
        log_warn("api: cannot read ops event '%s': %s", m->msg_id, err.message);
    } else {
        if (b.body_len > 0) /* 0: retention emptied it */
            payload = json_loadb(b.body, b.body_len, 0, NULL);
        free(b.body);
    }
    json_t *o =
        json_pack("{s:s, s:s?, s:s?, s:I, s:s, s:i}", "id", m->msg_id, "type", type, "voiceAppId",
                  app[0] ? app : NULL, "createdAt", (json_int_t)m->created_at, "status",
                  msg_status_name(m->status, m->attempts), "attemptCount", m->attempts);
    if (o == NULL) {
        json_decref(payload);
        return NULL;
    }
    json_t *last = m->last_error[0] ? json_string(m->last_error) : NULL;
    json_object_set_new(o, "lastError", last ? last : json_null());
    json_object_set_new(o, "payload", payload ? payload : json_null());
    return o;
}

void api_ops_events(struct api_request *r)
{
    const char *limit = http_query(r->http, "limit");
    const char *cursor = http_query(r->http, "cursor");
    struct message_filter f = {
        .app_id = OPS_APP_ID, .status = -1, .attempted = -1, .limit = OPS_LIST_DEFAULT};
    char *end;
    if (limit &&
        ((f.limit = (int)strtol(limit, &end, 10)) < 1 || f.limit > OPS_LIST_MAX || *end != '\0')) {
        http_respond_error(r->http, 400, "invalid_query", "limit: 1 to %d", OPS_LIST_MAX);
        return;
    }
    if (cursor && ((f.before_seq = strtoll(cursor, &end, 10)) <= 0 || *end != '\0')) {
        http_respond_error(r->http, 400, "invalid_query",
                           "cursor: use nextCursor of the last page");
        return;
    }
    /* The page first, then each record: a list callback must not call the store again. */
    struct views l = {.v = calloc((size_t)f.limit, sizeof *l.v), .cap = f.limit};
    json_t *data = json_array();
    struct ch_error err = {0};
    if (l.v == NULL || data == NULL) {
        free(l.v);
        json_decref(data);
        http_respond_error(r->http, 500, "internal", "out of memory");
        return;
    }
    if (store_message_list(r->ctx->store, &f, add_view, &l, &err) != CH_OK) {
        free(l.v);
        json_decref(data);
        log_warn("api: store error on GET /v1/ops-events: %s", err.message);
        snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
        http_respond_error(r->http, 503, "unavailable", "the store is unavailable; try again");
        return;
    }
    for (int i = 0; i < l.n; i++)
        json_array_append_new(data, event_json(r->ctx->store, &l.v[i]));
    char next[32];
    snprintf(next, sizeof next, "%lld", l.n > 0 ? (long long)l.v[l.n - 1].seq : 0LL);
    bool more = l.n == f.limit;
    free(l.v);
    json_t *v = json_pack("{s:o, s:s?}", "data", data, "nextCursor", more ? next : NULL);
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    http_respond_json(r->http, 200, text);
}

bool api_ops_ingest_refused(struct api_request *r, const char *app_id)
{
    if (!ops_app_is(app_id))
        return false;
    http_respond_error(r->http, 403, "forbidden",
                       "'%s' carries callhook's own operational events: nothing is ingested "
                       "into it",
                       OPS_APP_ID);
    return true;
}

bool api_ops_save_refused(struct api_request *r, const char *id, const struct app_config *cfg,
                          const struct stored_app *stored)
{
    if (!ops_app_is(id))
        return false;
    /* Only its enabled flag may change: the rest is serve's --ops-webhook. */
    struct app_config old, want = *cfg;
    bool same = false;
    if (stored != NULL &&
        app_config_parse(&old, stored->config_json, strlen(stored->config_json), NULL) == CH_OK) {
        want.enabled = old.enabled;
        char *a = app_config_to_json(&old, NULL, NULL), *b = app_config_to_json(&want, NULL, NULL);
        same = a && b && strcmp(a, b) == 0;
        free(a);
        free(b);
    }
    if (same)
        return false;
    http_respond_error(r->http, 409, "conflict",
                       "'%s' is callhook's ops webhook, set by serve's --ops-webhook settings: "
                       "change those and restart serve (only \"enabled\" may be changed here)",
                       OPS_APP_ID);
    return true;
}
