/* Delivery attempts' easy handles (transfer.h). */
#include "deliver/transfer.h"

#include "deliver/retry.h"
#include "deliver/ssrf.h"
#include "util/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    struct transfer *t = ctx;
    size_t len = size * n;
    size_t room = STOREQ_RESPONSE_CAP - t->response_len;
    size_t keep = len < room ? len : room;
    memcpy(t->response + t->response_len, data, keep);
    t->response_len += keep;
    t->response[t->response_len] = '\0';
    return len; /* the rest is read and dropped, so the connection stays reusable */
}

static size_t on_header(char *data, size_t size, size_t n, void *ctx)
{
    struct transfer *t = ctx;
    size_t len = size * n;
    long s = retry_after_parse(data, len);
    if (s >= 0)
        t->retry_after_s = s;
    return len;
}

/* Every new socket goes through here: an internal address is not even connected to. */
static curl_socket_t on_open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct transfer *t = ctx;
    (void)purpose;
    if (!ssrf_allows(&t->gen->rule, &addr->addr, (socklen_t)addr->addrlen)) {
        t->refused = true;
        guard_format(&addr->addr, t->refused_addr, sizeof t->refused_addr);
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

/* Every request goes through here right before a byte of it is sent, on a new connection and
 * on one reused from the pool, which another app (with other SSRF settings) may have opened:
 * the guard judges the connected address against the app sending this request. */
static int on_prereq(void *ctx, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    struct transfer *t = ctx;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (!ssrf_judge_ip(&t->gen->rule, primary_ip, t->refused_addr, sizeof t->refused_addr)) {
        t->refused = true;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

struct transfer *transfer_new(struct app_state *app, struct app_gen *g)
{
    struct transfer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->easy = curl_easy_init();
    if (t->easy == NULL) {
        free(t);
        return NULL;
    }
    t->app = app;
    t->gen = app_gen_ref(g);
    const struct app_config *c = &t->gen->cfg;
    CURL *h = t->easy;
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "callhook/" CALLHOOK_VERSION);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    /* Straight to the endpoint: proxy variables in the environment are not followed (the SSRF
     * guard judges the endpoint's own address, which a proxy would hide). */
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->allow_insecure_http ? "http,https" : "https");
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (c->tls_ca_file[0])
        curl_easy_setopt(h, CURLOPT_CAINFO, c->tls_ca_file);
    if (c->tls_client_cert_file[0]) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->tls_client_cert_file);
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->tls_client_key_file);
    }
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(h, CURLOPT_PREREQDATA, t);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(h, CURLOPT_PRIVATE, t);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers);
    return t;
}

void transfer_free(struct transfer *t)
{
    curl_easy_cleanup(t->easy);
    app_gen_unref(t->gen);
    free(t);
}

static char content_type_line[] = "Content-Type: application/json";
static char expect_line[] = "Expect: ";

/* Links the header list of a delivery: fixed lines, then the app's own, from the transfer's
 * own generation of the settings (which it keeps alive until it ends). */
static void set_headers(struct transfer *t)
{
    char *lines[TRANSFER_FIXED_HEADERS + APP_MAX_HEADERS + 1] = {
        content_type_line, t->h_id, t->h_ts, t->h_sig, t->h_event, expect_line};
    size_t n = TRANSFER_FIXED_HEADERS;
    for (int i = 0; i < t->gen->cfg.nheaders; i++)
        lines[n++] = t->gen->header_line[i];
    if (t->marker_line)
        lines[n++] = t->marker_line;
    for (size_t i = 0; i < n; i++) {
        t->headers[i].data = lines[i];
        t->headers[i].next = i + 1 < n ? &t->headers[i + 1] : NULL;
    }
}

ch_code transfer_prepare(struct transfer *t, const char *url, const char *msg_id, const char *event,
                         const char *body, size_t body_len, struct ch_error *err)
{
    t->response_len = 0;
    t->response[0] = '\0';
    t->retry_after_s = 0;
    t->refused = false;
    t->errbuf[0] = '\0';
    t->start_ms = clock_mono_ms();
    int64_t ts = clock_wall_s();
    /* The previous secret signs until its grace period ends, and never after: judged now, at
     * each attempt, not when the settings were loaded. */
    size_t nkeys = t->gen->nkeys;
    if (nkeys == 2 && ts >= t->gen->prev_expires_at)
        nkeys = 1;
    char sig[2 * CH_SIGNATURE_ENTRY_MAX];
    ch_code rc = ch_sign(t->gen->keys, nkeys, msg_id, ts, body, body_len, sig, sizeof sig, err);
    if (rc != CH_OK)
        return rc;
    snprintf(t->h_id, sizeof t->h_id, "webhook-id: %s", msg_id);
    snprintf(t->h_ts, sizeof t->h_ts, "webhook-timestamp: %lld", (long long)ts);
    snprintf(t->h_sig, sizeof t->h_sig, "webhook-signature: %s", sig);
    t->signed_at = ts;
    store_signature_short(sig, t->sig_short, sizeof t->sig_short);
    snprintf(t->h_event, sizeof t->h_event, "X-Call-Event: %s", event);
    set_headers(t);
    curl_easy_setopt(t->easy, CURLOPT_URL, url);
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    return CH_OK;
}

struct transfer *transfer_of(CURL *easy)
{
    struct transfer *t = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    return t;
}

long transfer_http_status(const struct transfer *t)
{
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

const char *transfer_error_text(const struct transfer *t, CURLcode code)
{
    return t->errbuf[0] ? t->errbuf : curl_easy_strerror(code);
}
