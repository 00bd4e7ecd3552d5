/*
 * The HTTP API's internals: the request as handlers see it (no libmicrohttpd types), the
 * service context they share, and the modules' entry points. Only server.c sees microhttpd.h.
 */
#ifndef CALLHOOK_API_H
#define CALLHOOK_API_H

#include <callhook/error.h>

#include "deliver/engine.h"
#include "deliver/metrics.h"
#include "store/store.h"
#include "util/buf.h"

#include <pthread.h>
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
    atomic_int suspended; /* requests suspended and not yet answered */
};

enum api_state { REQ_READING = 0, REQ_WAITING, REQ_DONE };

struct api_request {
    struct api_context *ctx;
    void *conn; /* the server's connection, opaque to handlers */
    char method[16];
    char path[512];
    struct buf body; /* owned; capped at the context's max_body_bytes */
    bool too_big;
    int64_t arrived_ms;
    enum key_role role;
    enum api_state state;
    bool was_suspended;
    /* The response, filled by a handler (or the ingest writer): */
    int status;
    char *response; /* owned, malloc'd */
    size_t response_len;
    const char *content_type;
    char retry_after[16];
};

/* Headers and query arguments of the request; NULL when absent. */
const char *api_header(struct api_request *r, const char *name);
const char *api_query(struct api_request *r, const char *name);

/* Sets a response: the body is copied. */
void api_respond(struct api_request *r, int status, const char *content_type, const char *body,
                 size_t len);
/* Sets a JSON response, taking ownership of a malloc'd body (NULL: out of memory, a 500). */
void api_respond_json(struct api_request *r, int status, char *body);
/* Sets the error body of docs/API.md: {"error": {"code": ..., "message": ...}}. */
void api_respond_error(struct api_request *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Lets a suspended request's response go out (called by the ingest writer's thread). */
void api_resume(struct api_request *r);

/* Routes a complete request to its handler. Returns true when the response is set, false when
 * the request waits for the ingest writer (the server suspends it until api_resume). */
bool api_dispatch(struct api_request *r);

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
/* On a store with no keys: CALLHOOK_ADMIN_KEY, or a new admin key written next to the database
 * (key_file), readable only by the owner. */
ch_code api_bootstrap_admin(struct store *s, const char *key_file, struct ch_error *err);

/* The ingest writer: group commit of ingest requests. */
ch_code ingest_writer_new(struct api_context *ctx, struct ingest_writer **out,
                          struct ch_error *err);
/* Stops the writer once everything queued is written and answered; later ingest requests are
 * answered 503. The struct stays valid (server threads may still look at it) until freed. */
void ingest_writer_stop(struct ingest_writer *w);
void ingest_writer_free(struct ingest_writer *w); /* stops it first if needed */
/* Handles POST /v1/voice-apps/{id}/begin-call|end-call. Returns as api_dispatch does. */
bool ingest_handle(struct api_request *r, const char *app_id, const char *event);

/* The HTTP server. */
struct api_server;
ch_code api_server_start(struct api_context *ctx, const char *listen, struct api_server **out,
                         struct ch_error *err);
/* Stops accepting new connections; the open ones are still served. */
/* Closes everything; returns once the server's threads are gone. */
void api_server_stop(struct api_server *s, struct api_context *ctx);

#endif
