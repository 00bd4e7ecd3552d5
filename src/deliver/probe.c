/* A Voice App's test send (probe.h): a transfer of its own, performed at once. */
#include "deliver/probe.h"

#include "deliver/appgen.h"
#include "deliver/retry.h"
#include "deliver/transfer.h"
#include "util/clock.h"

#include <curl/curl.h>

#include <stdio.h>
#include <string.h>

static char marker_line[] = PROBE_MARKER_HEADER;

/* Keeps the header lines of the last response (a new status line starts over), cut to fit. */
static size_t on_header(char *data, size_t size, size_t n, void *ctx)
{
    struct probe_result *out = ctx;
    size_t len = size * n, used = strlen(out->headers);
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        out->headers[0] = '\0';
        return size * n;
    }
    if (len == 0 || used + len + 2 > sizeof out->headers)
        return size * n;
    memcpy(out->headers + used, data, len);
    out->headers[used + len] = '\n';
    out->headers[used + len + 1] = '\0';
    return size * n;
}

ch_code probe_send(const char *id, const struct stored_app *sa, const struct guard_cidr *allowed,
                   int nallowed, const char *event, const char *webhook_id, const char *body,
                   size_t body_len, struct probe_result *out, struct ch_error *err)
{
    memset(out, 0, sizeof *out);
    struct app_gen *g = app_gen_new(id, CH_OK, sa, allowed, nallowed);
    if (g == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    ch_code rc = CH_OK;
    const char *url = g->missing ? NULL : app_config_url(&g->cfg, event);
    if (g->missing)
        rc = ch_error_set(err, CH_EINVAL, "the stored settings of voice app '%s' do not read", id);
    else if (g->nkeys == 0)
        rc = ch_error_set(err, CH_EINVAL, "the signing secret of voice app '%s' does not read", id);
    else if (url == NULL)
        rc = ch_error_set(err, CH_ENOTFOUND, "voice app '%s' has no URL for %s", id, event);
    if (rc != CH_OK) {
        app_gen_unref(g);
        return rc;
    }
    snprintf(out->url, sizeof out->url, "%s", url);
    const char *refused = app_gen_refused(g, event);
    if (refused[0]) {
        /* As the engine does: an address literal the guard refuses is not even connected to. */
        out->error_class = failure_class_name(FAILURE_refused);
        snprintf(out->error, sizeof out->error,
                 "refused: %s is an internal address (allowPrivateNetwork, or --allow-private, "
                 "allows it)",
                 refused);
        app_gen_unref(g);
        return CH_OK;
    }
    struct transfer *t = transfer_new(NULL, g);
    app_gen_unref(g); /* the transfer holds its own reference */
    if (t == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    t->marker_line = marker_line;
    rc = transfer_prepare(t, url, webhook_id, event, body, body_len, err);
    if (rc != CH_OK) {
        transfer_free(t);
        return rc;
    }
    curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, out);
    CURLcode code = curl_easy_perform(t->easy);
    out->duration_ms = clock_mono_ms() - t->start_ms;
    long status = transfer_http_status(t);
    out->http_status = code == CURLE_OK ? status : 0;
    memcpy(out->response, t->response, t->response_len + 1);
    out->response_len = t->response_len;
    if (code != CURLE_OK) {
        out->error_class = failure_class_name(retry_classify(code, t->refused));
        if (t->refused)
            snprintf(out->error, sizeof out->error,
                     "refused: %s is an internal address (allowPrivateNetwork, or "
                     "--allow-private, allows it)",
                     t->refused_addr);
        else
            snprintf(out->error, sizeof out->error, "%s", transfer_error_text(t, code));
    } else if (status < 200 || status >= 300) {
        out->error_class = failure_class_name(FAILURE_http);
        snprintf(out->error, sizeof out->error, "HTTP %ld", status);
    }
    transfer_free(t);
    return CH_OK;
}
