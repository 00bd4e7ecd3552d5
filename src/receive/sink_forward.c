/*
 * The forward sink (`--forward URL`, `forward:URL`): each event POSTed to an internal HTTP(S)
 * service, the record byte for byte, on a libcurl multi handle whose keep-alive connections
 * outlive a batch. The one file of src/receive/ that sees libcurl.
 */
#include "receive/escape.h"
#include "receive/receiver.h"
#include "receive/sink.h"

#include "util/clock.h"
#include "util/log.h"

#include <callhook/signature.h>

#include <curl/curl.h>

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define URL_MAX            2048
#define IN_FLIGHT_DEFAULT  32
#define IN_FLIGHT_MAX      1024
#define TIMEOUT_DEFAULT_MS 10000
#define RESPONSE_KEEP      200 /* bytes of an error answer kept for the inbox */
#define SLOT_HEADERS       9

/* One request at a time on one easy handle; handles are kept across batches. */
struct slot {
    CURL *easy;
    size_t event; /* index in the batch */
    bool busy;
    char errbuf[CURL_ERROR_SIZE];
    char response[RESPONSE_KEEP + 1];
    size_t response_len;
    char h_id[40 + CH_MESSAGE_ID_MAX], h_ts[64], h_sig[32 + CH_SIGNATURE_ENTRY_MAX];
    char h_event[48];
    /* The sender's signature headers, passed on: a signature header may be long (rotations),
     * so its line grows as needed (up to CH_SIGNATURE_HEADER_MAX) and is kept for the next. */
    char h_sender_ts[64];
    char *h_sender_sig;
    size_t h_sender_sig_cap;
    struct curl_slist headers[SLOT_HEADERS];
};

struct sink {
    char url[URL_MAX];
    struct ch_secret key; /* wiped at close */
    bool has_key;
    long timeout_ms;
    size_t max_in_flight;
    char noproxy[1024];
    char ca[4096];
    CURLM *multi; /* its connection pool is what keeps connections alive between batches */
    struct slot *slots;
    atomic_bool interrupted;
};

static void wipe_free(struct sink *s)
{
    if (s == NULL)
        return;
    ch_secret_wipe(&s->key);
    free(s);
}

/* Checks the URL at start: http:// or https:// with a host, nothing else. */
static ch_code check_url(const char *url, struct ch_error *err)
{
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        return ch_error_set(err, CH_EINVAL,
                            "forward URL '%s': only http:// and https:// URLs can be forwarded "
                            "to (e.g. https://events.internal:8443/calls)",
                            url);
    CURLU *u = curl_url();
    if (u == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    char *host = NULL;
    CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (rc == CURLUE_OK)
        rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    ch_code out = CH_OK;
    if (rc != CURLUE_OK || host == NULL || host[0] == '\0')
        out = ch_error_set(err, CH_EINVAL, "forward URL '%s' is not a valid URL: %s", url,
                           rc != CURLUE_OK ? curl_url_strerror(rc) : "no host");
    curl_free(host);
    curl_url_cleanup(u);
    return out;
}

static ch_code forward_open(const char *target, const struct receive_config *c, struct sink **out,
                            struct ch_error *err)
{
    if (target == NULL || target[0] == '\0')
        return ch_error_set(err, CH_EINVAL, "forward: the URL is missing");
    if (strlen(target) >= URL_MAX)
        return ch_error_set(err, CH_EINVAL, "forward URL is longer than %d bytes", URL_MAX - 1);
    ch_code rc = check_url(target, err);
    if (rc != CH_OK)
        return rc;
    if (c->forward_ca[0] && access(c->forward_ca, R_OK) != 0)
        return ch_error_set(err, CH_EINVAL, "cannot read the forward CA file '%s'", c->forward_ca);
    /* Reference-counted, and thread-safe in the libcurl this builds against (7.84 and later). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return ch_error_set(err, CH_ENOMEM, "cannot initialise libcurl");
    struct sink *s = calloc(1, sizeof *s);
    if (s == NULL) {
        curl_global_cleanup();
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    }
    snprintf(s->url, sizeof s->url, "%s", target);
    s->has_key = c->has_forward_key;
    if (s->has_key)
        s->key = c->forward_key;
    snprintf(s->ca, sizeof s->ca, "%s", c->forward_ca);
    s->timeout_ms = c->forward_timeout_ms > 0 ? c->forward_timeout_ms : TIMEOUT_DEFAULT_MS;
    s->max_in_flight =
        c->forward_max_in_flight > 0 ? (size_t)c->forward_max_in_flight : IN_FLIGHT_DEFAULT;
    if (s->max_in_flight > IN_FLIGHT_MAX)
        s->max_in_flight = IN_FLIGHT_MAX;
    /* A proxy of the environment (https_proxy...) is followed as curl follows it, but never
     * for loopback; NO_PROXY's own entries are kept. */
    const char *env = getenv("NO_PROXY");
    if (env == NULL)
        env = getenv("no_proxy");
    snprintf(s->noproxy, sizeof s->noproxy, "localhost,127.0.0.1,::1%s%s", env && *env ? "," : "",
             env && *env ? env : "");
    s->multi = curl_multi_init();
    s->slots = calloc(s->max_in_flight, sizeof *s->slots);
    if (s->multi == NULL || s->slots == NULL) {
        if (s->multi)
            curl_multi_cleanup(s->multi);
        free(s->slots);
        wipe_free(s);
        curl_global_cleanup();
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    }
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->max_in_flight);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->max_in_flight);
    *out = s;
    return CH_OK;
}

static size_t forward_batch_max(const struct sink *s)
{
    return s->max_in_flight;
}

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    struct slot *sl = ctx;
    size_t len = size * n;
    size_t room = RESPONSE_KEEP - sl->response_len;
    size_t keep = len < room ? len : room;
    memcpy(sl->response + sl->response_len, data, keep);
    sl->response_len += keep;
    sl->response[sl->response_len] = '\0';
    return len; /* the rest is read and dropped, so the connection stays reusable */
}

/* The easy handle's settings that do not change between requests. */
static CURL *new_easy(const struct sink *s, struct slot *sl)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, s->url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "callhook-receive/" CALLHOOK_VERSION);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOPROXY, s->noproxy);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    /* Verified always: a private CA is given with --forward-ca, never by turning checks off. */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (s->ca[0])
        curl_easy_setopt(h, CURLOPT_CAINFO, s->ca);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, sl);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, sl->errbuf);
    curl_easy_setopt(h, CURLOPT_PRIVATE, sl);
    return h;
}

static char content_type_line[] = "Content-Type: application/json";
static char expect_line[] = "Expect: "; /* no 100-continue round trip */

/* The line "name: value" for the sender's signature in the slot's own buffer; false when
 * memory runs out. */
static bool sender_sig_line(struct slot *sl, const char *name, const char *sig)
{
    size_t need = strlen(name) + 2 + strnlen(sig, CH_SIGNATURE_HEADER_MAX) + 1;
    if (need > sl->h_sender_sig_cap) {
        char *p = realloc(sl->h_sender_sig, need);
        if (p == NULL)
            return false;
        sl->h_sender_sig = p;
        sl->h_sender_sig_cap = need;
    }
    snprintf(sl->h_sender_sig, need, "%s: %s", name, sig);
    return true;
}

/* Readies the slot's request for event e: the body as stored, webhook-id, the sender's
 * webhook-timestamp and webhook-signature as received, and when there is a forward key a
 * fresh timestamp and signature of the receiver's own in their place (the sender's then go
 * as X-Callhook-Sender-Timestamp and -Signature). */
static bool prepare(struct sink *s, struct slot *sl, const struct ch_inbox_entry *e,
                    struct sink_result *r)
{
    if (sl->easy == NULL && (sl->easy = new_easy(s, sl)) == NULL) {
        sink_result_set(r, SINK_RETRY, 0, "out of memory");
        return false;
    }
    char *lines[SLOT_HEADERS];
    size_t n = 0;
    lines[n++] = content_type_line;
    lines[n++] = expect_line;
    snprintf(sl->h_id, sizeof sl->h_id, "webhook-id: %s", e->webhook_id);
    lines[n++] = sl->h_id;
    snprintf(sl->h_event, sizeof sl->h_event, "X-Callhook-Event: %s", e->event);
    lines[n++] = sl->h_event;
    if (s->has_key) {
        long long ts = clock_wall_s();
        char sig[CH_SIGNATURE_ENTRY_MAX];
        struct ch_error err = {0};
        if (ch_sign(&s->key, 1, e->webhook_id, ts, e->body, e->body_len, sig, sizeof sig, &err) !=
            CH_OK) {
            sink_result_set(r, SINK_FAILED, 0, "cannot sign the forwarded request: %s",
                            err.message);
            return false;
        }
        snprintf(sl->h_ts, sizeof sl->h_ts, "webhook-timestamp: %lld", ts);
        snprintf(sl->h_sig, sizeof sl->h_sig, "webhook-signature: %s", sig);
        lines[n++] = sl->h_ts;
        lines[n++] = sl->h_sig;
    }
    if (e->webhook_timestamp) {
        snprintf(sl->h_sender_ts, sizeof sl->h_sender_ts, "%s: %lld",
                 s->has_key ? "X-Callhook-Sender-Timestamp" : "webhook-timestamp",
                 e->webhook_timestamp);
        lines[n++] = sl->h_sender_ts;
    }
    if (e->webhook_signature) {
        if (!sender_sig_line(sl, s->has_key ? "X-Callhook-Sender-Signature" : "webhook-signature",
                             e->webhook_signature)) {
            sink_result_set(r, SINK_RETRY, 0, "out of memory");
            return false;
        }
        lines[n++] = sl->h_sender_sig;
    }
    for (size_t i = 0; i < n; i++) {
        sl->headers[i].data = lines[i];
        sl->headers[i].next = i + 1 < n ? &sl->headers[i + 1] : NULL;
    }
    curl_easy_setopt(sl->easy, CURLOPT_HTTPHEADER, sl->headers);
    /* Not copied: the entry outlives the request (process() returns after every result). */
    curl_easy_setopt(sl->easy, CURLOPT_POSTFIELDS, e->body_len ? e->body : "");
    curl_easy_setopt(sl->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)e->body_len);
    sl->response_len = 0;
    sl->response[0] = '\0';
    sl->errbuf[0] = '\0';
    return true;
}

/* The outcome of a finished request. */
static void judge(struct sink *s, struct slot *sl, CURLcode code, struct sink_result *r)
{
    if (code != CURLE_OK) {
        const char *why = sl->errbuf[0] ? sl->errbuf : curl_easy_strerror(code);
        if (code == CURLE_OPERATION_TIMEDOUT)
            sink_result_set(r, SINK_RETRY, 0, "forward timed out after %ld ms: %s", s->timeout_ms,
                            why);
        else
            sink_result_set(r, SINK_RETRY, 0, "cannot forward: %s", why);
        return;
    }
    long status = 0;
    curl_easy_getinfo(sl->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        sink_result_set(r, SINK_DONE, 0, "%s", "");
        return;
    }
    long long after_ms = 0;
    if (status == 429 || status == 503) {
        curl_off_t after_s = 0;
        if (curl_easy_getinfo(sl->easy, CURLINFO_RETRY_AFTER, &after_s) == CURLE_OK && after_s > 0)
            after_ms = (long long)(after_s > 86400 * 7 ? 86400 * 7 : after_s) * 1000;
    }
    char shown[TEXT_ESCAPE_GROWTH * RESPONSE_KEEP + 1];
    text_escape(sl->response, sl->response_len, shown, sizeof shown);
    sink_result_set(r, SINK_RETRY, after_ms, "the forward URL answered %ld%s%s", status,
                    shown[0] ? ": " : "", shown);
}

static void forward_process(struct sink *s, const struct ch_inbox_entry *events, size_t n,
                            struct sink_result *results)
{
    for (size_t i = 0; i < n; i++)
        sink_result_set(&results[i], SINK_RETRY, 0, "not sent");
    size_t next = 0, active = 0;
    while ((next < n || active > 0) && !atomic_load(&s->interrupted)) {
        for (size_t k = 0; k < s->max_in_flight && next < n; k++) {
            struct slot *sl = &s->slots[k];
            if (sl->busy)
                continue;
            size_t i = next++;
            if (!prepare(s, sl, &events[i], &results[i]))
                continue;
            sl->event = i;
            if (curl_multi_add_handle(s->multi, sl->easy) != CURLM_OK) {
                sink_result_set(&results[i], SINK_RETRY, 0, "cannot start the request");
                continue;
            }
            sl->busy = true;
            active++;
        }
        int running = 0;
        curl_multi_perform(s->multi, &running);
        CURLMsg *m;
        int queued;
        while ((m = curl_multi_info_read(s->multi, &queued)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct slot *sl = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&sl);
            CURLcode code = m->data.result;
            curl_multi_remove_handle(s->multi, sl->easy);
            judge(s, sl, code, &results[sl->event]);
            sl->busy = false;
            active--;
        }
        if (active > 0 && !atomic_load(&s->interrupted))
            curl_multi_poll(s->multi, NULL, 0, 1000, NULL);
    }
    /* Interrupted: what is in flight is dropped and retried from the inbox. */
    for (size_t k = 0; k < s->max_in_flight; k++) {
        struct slot *sl = &s->slots[k];
        if (!sl->busy)
            continue;
        curl_multi_remove_handle(s->multi, sl->easy);
        sink_result_set(&results[sl->event], SINK_GIVEN_BACK, 0,
                        "interrupted: the receiver is stopping");
        sl->busy = false;
    }
    for (size_t i = next; i < n; i++)
        sink_result_set(&results[i], SINK_GIVEN_BACK, 0, "interrupted: the receiver is stopping");
}

/* Sticky: once interrupted (at stop), process() gives every event back at once until close. */
static void forward_interrupt(struct sink *s)
{
    atomic_store(&s->interrupted, true);
    curl_multi_wakeup(s->multi);
}

static void forward_close(struct sink *s)
{
    if (s == NULL)
        return;
    for (size_t k = 0; k < s->max_in_flight; k++) {
        if (s->slots[k].easy)
            curl_easy_cleanup(s->slots[k].easy);
        free(s->slots[k].h_sender_sig);
    }
    free(s->slots);
    curl_multi_cleanup(s->multi);
    wipe_free(s);
    curl_global_cleanup();
}

const struct sink_ops sink_forward_ops = {
    .scheme = "forward",
    .open = forward_open,
    .batch_max = forward_batch_max,
    .process = forward_process,
    .interrupt = forward_interrupt,
    .close = forward_close,
    .lane = true,
};
