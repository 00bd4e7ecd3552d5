/*
 * The HTTP API's internals: the service context its handlers share, the request as they see
 * it, and the modules' entry points. The API is a handler of the HTTP front (src/http/); no
 * file here sees libmicrohttpd.
 */
#ifndef CALLHOOK_API_H
#define CALLHOOK_API_H

#include <callhook/error.h>

#include "deliver/engine.h"
#include "deliver/metrics.h"
#include "http/http.h"
#include "store/store.h"
#include "util/buf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct ingest_writer;
struct api_cache;

/* What every handler can reach. Owned by serve. */
struct api_context {
    struct store *store;
    struct engine *engine;
    struct metrics *metrics;
    struct ingest_writer *writer;
    struct api_cache *keys; /* key hash -> role, for a few seconds */
    struct api_cache *apps; /* voice app id -> what ingest needs, for a few seconds */
    size_t max_body_bytes;
    int lease_s;
    int64_t started_at;
    const char *listen;         /* the listen address as configured (borrowed) */
    const char *store_location; /* the database URI as logs show it (borrowed) */
    atomic_bool testing;        /* a test send (POST .../test) is under way: one at a time */
};

/* An API request: the front's request and what the API learns of it. The front keeps it (as
 * the request's handler state) until the answer has been sent. */
struct api_request {
    struct http_request *http;
    struct api_context *ctx;
    enum key_role role;
};

/* The API as a handler of the HTTP front: routes each request; what the headers decide (the
 * API key, its role, an unknown endpoint) is answered before a byte of the body is read. */
void api_handler(struct api_context *ctx, struct http_handler *out);

/* Authentication: sets r->role from the Bearer key; false (and a 401 response) when missing
 * or unknown. */
bool api_authenticate(struct api_request *r);

/* Keys: "chk_" + 64 hex characters (one given by the operator: at least API_KEY_MIN_CHARS);
 * the store keeps SHA-256 of it and a random id ("key_" + 12 hex digits) that says nothing of
 * the key. new_key holds at least API_KEY_TEXT_MAX bytes. */
#define API_KEY_TEXT_MAX  80
#define API_KEY_MIN_CHARS 32

ch_code api_key_create(struct store *s, enum key_role role, char *new_key, struct ch_error *err);
ch_code api_key_add_existing(struct store *s, const char *key, enum key_role role,
                             struct ch_error *err);
/* On a store with no keys: CALLHOOK_ADMIN_KEY, or a new admin key written to key_file (its
 * folders made; readable only by the owner) or, when key_file is NULL, printed once to a
 * terminal (refused when stderr is not one). made: whether this call made a key (this node
 * is the one that knows where it is). */
ch_code api_bootstrap_admin(struct store *s, const char *key_file, bool *made,
                            struct ch_error *err);

/* The ingest writer: group commit of ingest requests. */
ch_code ingest_writer_new(struct api_context *ctx, struct ingest_writer **out,
                          struct ch_error *err);
/* Stops the writer once everything queued is written and answered; later ingest requests are
 * answered 503. The struct stays valid (server threads may still look at it) until freed. */
void ingest_writer_stop(struct ingest_writer *w);
void ingest_writer_free(struct ingest_writer *w); /* stops it first if needed */
/* True (and a 403 response) when the request's key may not ingest. */
bool ingest_refused(struct api_request *r);

/* Handles POST /v1/voice-apps/{id}/begin-call|end-call. Returns true when the answer is set,
 * false when the request waits for the ingest writer (which answers it with http_resume). */
bool ingest_handle(struct api_request *r, const char *app_id, const char *event);

/* Answers GET /v1/status (status.c): the node, its store and each Voice App's messages. The
 * caller has checked the key's role and the query. */
void api_status(struct api_request *r);

/* The operational webhooks (ops_events.c). api_ops_events answers GET /v1/ops-events[?limit=
 * &cursor=], newest first; the caller has checked the key's role and the query's names. */
void api_ops_events(struct api_request *r);
/* True (and a 403) when app_id is the internal ops app: nothing is ingested into it. */
bool api_ops_ingest_refused(struct api_request *r, const char *app_id);
/* True (and a 409) when saving cfg as app id would change the internal ops app (stored: as it
 * is now, NULL when absent) in more than its enabled flag: serve's flags own the rest. */
struct app_config;
bool api_ops_save_refused(struct api_request *r, const char *id, const struct app_config *cfg,
                          const struct stored_app *stored);

#endif
