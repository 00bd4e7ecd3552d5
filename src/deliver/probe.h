/* A test send of a Voice App (`callhook app test`, POST /v1/voice-apps/{id}/test): one signed
 * request made now, on the calling thread, with what a real delivery has (the app's settings,
 * headers, TLS files, SSRF guard and signing keys, through a transfer of its own), marked with
 * the header X-Callhook-Test: 1. Nothing is stored and no metric counts it. */
#ifndef CALLHOOK_DELIVER_PROBE_H
#define CALLHOOK_DELIVER_PROBE_H

#include <callhook/error.h>

#include "deliver/guard.h"
#include "deliver/storeq.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The header line that marks a test send. */
#define PROBE_MARKER_HEADER "X-Callhook-Test: 1"
#define PROBE_HEADERS_CAP   4096

/* What the receiver answered, or why nothing came. */
struct probe_result {
    char url[2049];                  /* where it was sent */
    long http_status;                /* 0 when no answer came */
    const char *error_class;         /* NULL for a 2xx; else as an attempt's ("http" for another
                                        status, "refused", "timeout", ...) */
    char error[320];                 /* "" for a 2xx */
    char headers[PROBE_HEADERS_CAP]; /* the answer's header lines, '\n' after each, cut short
                                        to fit (the status line left out) */
    char response[STOREQ_RESPONSE_CAP + 1]; /* the start of the answer's body, NUL-ended */
    size_t response_len;
    int64_t duration_ms;
};

/* Sends body (the record, body_len bytes) as event ("begin-call" or "end-call") of app id with
 * the stored settings sa, under webhook_id, and fills out. allowed: the internal ranges the
 * operator allows for every app (as the engine's). CH_OK when a request was tried, whatever the
 * receiver said (out says it); CH_ENOTFOUND when the app has no URL for event, CH_EINVAL when
 * its stored settings do not read, CH_ENOMEM. Blocks up to the app's timeoutMs. Any thread;
 * curl_global_init must have run. */
ch_code probe_send(const char *id, const struct stored_app *sa, const struct guard_cidr *allowed,
                   int nallowed, const char *event, const char *webhook_id, const char *body,
                   size_t body_len, struct probe_result *out, struct ch_error *err);

#endif
