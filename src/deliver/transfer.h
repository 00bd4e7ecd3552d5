/* One delivery attempt's libcurl easy handle: set up once with a generation of a Voice App's
 * settings and reused for the attempts that run under it, with the signed header lines, the
 * capped response, the Retry-After it brought, and the SSRF guard on every socket and every
 * request. The engine adds it to its multi handle and reads the outcome. Engine thread only. */
#ifndef CALLHOOK_DELIVER_TRANSFER_H
#define CALLHOOK_DELIVER_TRANSFER_H

#include <callhook/callhook.h>
#include <curl/curl.h>

#include "deliver/appgen.h"
#include "deliver/storeq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fixed header lines of a delivery, before the app's own. */
#define TRANSFER_FIXED_HEADERS 6

struct app_state; /* the engine's: a transfer only points at them */
struct job;

struct transfer {
    struct transfer *prev, *next; /* the engine's list in flight, or the app's idle list */
    struct app_state *app;        /* borrowed: the app it sends for */
    struct app_gen *gen;          /* the settings the easy handle was set up with (a reference) */
    struct job *job; /* borrowed: the message of the attempt running, NULL between them */
    CURL *easy;      /* owned */
    /* The header list lives here, not in curl_slist_append() nodes: curl only reads it, and a
     * delivery then allocates nothing for its headers. The app's lines belong to gen. */
    struct curl_slist headers[TRANSFER_FIXED_HEADERS + APP_MAX_HEADERS + 1];
    char *marker_line; /* static: a test send's marker header (probe.c); NULL for deliveries */
    char h_id[64];
    char h_ts[48];
    char h_sig[2 * CH_SIGNATURE_ENTRY_MAX + 32];
    char h_event[48];
    int64_t signed_at;                         /* the webhook-timestamp of the attempt */
    char sig_short[STORE_SIGNATURE_SHORT_MAX]; /* its signature as the store keeps it */
    char response[STOREQ_RESPONSE_CAP + 1];    /* the start of the response body, NUL-ended */
    size_t response_len;
    long retry_after_s; /* what the response's Retry-After asked for; 0: none */
    bool refused;       /* the SSRF guard stopped it */
    char refused_addr[64];
    int64_t start_ms; /* monotonic */
    char errbuf[CURL_ERROR_SIZE];
};

/* A transfer for app (NULL for a test send) with the settings g (takes a reference to g); NULL when
 * out of memory. Caller frees with transfer_free(). */
struct transfer *transfer_new(struct app_state *app, struct app_gen *g);

/* Frees the easy handle and drops the reference to the settings. */
void transfer_free(struct transfer *t);

/* Readies t for one attempt: POSTs body (borrowed until the attempt ends) to url, signed now
 * with the generation's keys (the previous one only before its grace period ends), with the
 * webhook-* headers, X-Call-Event and the app's own headers. CH_OK, or the signing error. */
ch_code transfer_prepare(struct transfer *t, const char *url, const char *msg_id, const char *event,
                         const char *body, size_t body_len, struct ch_error *err);

/* The transfer an easy handle belongs to. */
struct transfer *transfer_of(CURL *easy);

/* The HTTP status of the response, 0 when none came. */
long transfer_http_status(const struct transfer *t);

/* What went wrong with an attempt that ended with code (not CURLE_OK), for the message's
 * lastError: libcurl's own detail when it gave one. */
const char *transfer_error_text(const struct transfer *t, CURLcode code);

#endif
