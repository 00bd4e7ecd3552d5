/*
 * The HTTP front of serve and of receive, on libmicrohttpd (the only module that includes it,
 * and GnuTLS for client certificates). It owns what both fronts need and must do alike: the
 * listening socket and its limits, TLS, a request body read up to a cap and within a budget
 * shared by every connection, the answers and JSON errors, suspending a request until another
 * thread answers it, and a bounded stop. What a request means is the handler's business: one
 * callback when its headers are in (so a request can be refused before a byte of its body is
 * read), one when its body is complete.
 */
#ifndef CALLHOOK_HTTP_H
#define CALLHOOK_HTTP_H

#include <callhook/error.h>

#include "util/buf.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The JSON error body the server writes, the same for the front's own refusals (413, 503)
 * and the handler's. */
enum http_error_form {
    HTTP_ERROR_CODED,  /* {"error":{"code":"...","message":"..."}}: serve's API */
    HTTP_ERROR_STATUS, /* {"status":413,"message":"..."}: the receiver */
};

#define HTTP_HEADERS_MAX 10 /* headers a handler may add to one answer */

/* One request, as handlers see it. The front owns it; it lives until the connection is done
 * with it (after the answer has been sent). */
struct http_request {
    char method[16];
    char path[512];
    struct buf body;    /* capped at the server's max_body_bytes */
    int64_t arrived_ms; /* wall clock */
    char remote[64];    /* the client's address as text ("127.0.0.1", "::1"); "?" if unknown */
    bool remote_loopback;
    void *state; /* the handler's state_bytes, zeroed, freed with the request */
    /* The answer, set with http_respond*(): */
    int status; /* 0 until set */
    char *response;
    size_t response_len;
    const char *content_type; /* static */
    char retry_after[16];     /* a Retry-After header when not empty */
    /* More headers of the answer (http_add_header): names and values borrowed, static. */
    const char *headers[HTTP_HEADERS_MAX][2];
    int nheaders;
};

struct http_handler {
    /* The headers are in, no body byte has been read. Returns true when it answered (the
     * front sends that and closes the connection without reading the body). */
    bool (*on_headers)(void *ctx, struct http_request *r);
    /* The body is complete (and within the cap and the budget). Returns true when the answer
     * is set, false when another thread will answer later with http_resume(). */
    bool (*on_request)(void *ctx, struct http_request *r);
    /* Optional: the front answered on its own (413 over the body cap, 503 over the body
     * budget), with r->status set; for the handler's counts and log. */
    void (*on_refused)(void *ctx, struct http_request *r);
    void *ctx;
    size_t state_bytes; /* per-request state the handler wants (r->state) */
};

struct http_config {
    const char *listen; /* "HOST:PORT", "[V6]:PORT"; port 0 picks one (http_server_port) */
    size_t max_body_bytes;
    size_t body_budget_bytes;    /* bodies held at once over every connection */
    size_t connection_memory;    /* libmicrohttpd's per-connection buffer (headers) */
    enum http_error_form errors; /* how JSON errors are written */
    /* TLS when tls_cert is set: PEM files, read at start and kept in memory only. With
     * tls_client_ca, a client must present a certificate signed by it (meant for a TLS client)
     * or its connection is closed unanswered. */
    const char *tls_cert, *tls_key, *tls_client_ca;
};

struct http_server;

ch_code http_server_start(const struct http_config *c, const struct http_handler *h,
                          struct http_server **out, struct ch_error *err);
/* The port listened on (the one picked for port 0). */
unsigned http_server_port(const struct http_server *s);
/* Waits (bounded) until every suspended request has been answered and sent, then closes all
 * connections; returns once the server's threads are gone. Whoever answers suspended requests
 * must have answered them, or refuse new ones, before this is called. */
void http_server_stop(struct http_server *s);

/* A request header or query argument; NULL when absent. Valid while the request is. */
const char *http_header(struct http_request *r, const char *name);
const char *http_query(struct http_request *r, const char *name);

/* Checks the names of the query's arguments against known (NULL-terminated; NULL: none is
 * known). false when one is not known or is given twice: its name is in bad (cap bytes, cut
 * short to fit) and *repeated says which. */
bool http_query_check(struct http_request *r, const char *const *known, char *bad, size_t cap,
                      bool *repeated);

/* Sets the answer: the body is copied. */
void http_respond(struct http_request *r, int status, const char *content_type, const char *body,
                  size_t len);
/* Adds a header to the answer. name and value are borrowed and must outlive the request
 * (static strings). false when HTTP_HEADERS_MAX are set already (the header is not added). */
bool http_add_header(struct http_request *r, const char *name, const char *value);
/* Sets a JSON answer, taking ownership of a malloc'd body (NULL: out of memory, a 500). */
void http_respond_json(struct http_request *r, int status, char *body);
/* Sets a JSON answer in the server's form: an error, named by code in HTTP_ERROR_CODED (NULL:
 * "error"); in HTTP_ERROR_STATUS any answer, 2xx included, is a status and a message. */
void http_respond_error(struct http_request *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http_respond_errorv(struct http_request *r, int status, const char *code, const char *fmt,
                         va_list ap) __attribute__((format(printf, 4, 0)));

/* Sends the answer of a request on_request left waiting; any thread may call it, once. */
void http_resume(struct http_request *r);

/* Writes s as a JSON string (quotes included, control characters as \u00XX) into out, cut
 * short to fit cap; returns its length. */
size_t http_json_quote(const char *s, char *out, size_t cap);

#endif
