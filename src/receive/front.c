/*
 * The receiver's front, a handler of the HTTP front (src/http/): checks each request in the
 * documented order — its headers before a byte of its body is read — then queues it for a
 * writer thread that adds whatever is waiting to the inbox in one transaction and only then
 * answers. Nothing is acknowledged before it is on disk.
 */
#include "receive/front.h"

#include "receive/dispatch.h"
#include "receive/live.h"
#include "receive/stats.h"
#include "lib/inbox.h"
#include "http/http.h"
#include "util/clock.h"
#include "util/batcher.h"
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITER_BATCH 512
/* The connection limit: each connection waits on one event at most, so the writer's queue is
 * never full in practice; if it were, the request is answered 503 with Retry-After. */
#define WRITER_QUEUE      4096
#define BODY_BUDGET_BYTES ((size_t)64 * 1024 * 1024) /* bodies held at once, at the least */
/* Deliveries of one batch handed to their sinks in memory, at most (the rest wait in the
 * inbox as pending). */
#define HAND_MAX (2 * WRITER_BATCH)

/* What the receiver learns of a request on its way into the inbox (the request's state). */
struct inbound {
    struct http_request *http;
    char webhook_id[CH_MESSAGE_ID_MAX + 1];
    char event[16];
    char call_key[CH_RECORD_ID_MAX + 1];
    bool has_call_key;
    bool has_call_type;
    long long call_type;
    /* The request's signature headers, verified (the signature points into the request). */
    long long webhook_timestamp;
    const char *webhook_signature;
};

struct front {
    struct live *live;
    struct receive_stats *stats;
    struct ch_inbox *inbox;
    struct dispatch *dispatch;
    struct http_server *http;
    struct batcher *writer;
    /* The batch being stored, one per request, and where each goes: filled by commit_batch,
     * read by answer_batch on the writer's thread. */
    struct ch_inbox_event events[WRITER_BATCH];
    struct ch_inbox_sinks sinks[WRITER_BATCH];
    const char *names[WRITER_BATCH][RECEIVE_MAX_SINKS];
    /* Which deliveries of the batch go to their sinks' lanes (dispatch.h), and the entries
     * made for them before the commit. */
    bool handed[WRITER_BATCH][RECEIVE_MAX_SINKS];
    const bool *handed_rows[WRITER_BATCH];
    struct handoff {
        struct dispatch_lane *lane;
        size_t event;
        struct ch_inbox_entry entry;
    } hand[HAND_MAX];
    size_t nhand;
};

/* The receiver's answers are {"status": N, "message": "..."} (the server's error form). */
static void answer(struct http_request *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void answer(struct http_request *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    http_respond_errorv(r, status, NULL, fmt, ap);
    va_end(ap);
}

/* Refuses a request: answers why's status with the message, counts it and logs it
 * (rate-limited) with the client's address and logged, or the message when logged is NULL. */
static void refuse(struct front *f, struct http_request *r, enum refusal why, const char *logged,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void refuse(struct front *f, struct http_request *r, enum refusal why, const char *logged,
                   const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    http_respond_error(r, refusal_status(why), NULL, "%s", message);
    stats_refused(f->stats, why, r->remote, logged ? logged : message);
}

/* The reason of a verification failure: the headers, the timestamp, or the signature. */
static enum refusal verify_refusal(ch_code code)
{
    switch (code) {
    case CH_ENOHEADER:
    case CH_EINVAL:
        return REFUSED_SIGNATURE_HEADERS;
    case CH_ETIMESTAMP:
    case CH_ETOOOLD:
    case CH_ETOONEW:
        return REFUSED_TIMESTAMP;
    default:
        return REFUSED_SIGNATURE;
    }
}

/* ---- the writer: group commit into the inbox ---- */

/* Room in the sinks' lanes for the batch's deliveries, each with its entry made (the seq comes
 * with the commit): none with --ordered, whose holds are the inbox's to decide. */
static void reserve_lanes(struct front *f, size_t n, bool ordered)
{
    f->nhand = 0;
    for (size_t i = 0; i < n; i++) {
        f->handed_rows[i] = f->handed[i];
        for (size_t k = 0; k < f->sinks[i].n; k++) {
            f->handed[i][k] = false;
            if (ordered || f->nhand == HAND_MAX)
                continue;
            struct handoff *h = &f->hand[f->nhand];
            h->lane = dispatch_lane_reserve(f->dispatch, f->names[i][k], f->events[i].body_len);
            if (h->lane == NULL)
                continue;
            if (inbox_entry_of(&f->events[i], &h->entry, NULL) != CH_OK) {
                dispatch_lane_cancel(h->lane, f->events[i].body_len);
                continue;
            }
            h->event = i;
            f->handed[i][k] = true;
            f->nhand++;
        }
    }
}

/* After the commit: each reserved delivery's event to its lane if it was stored (stored is
 * the commit's success; a duplicate was not), else the room given back. */
static void hand_over(struct front *f, bool stored)
{
    size_t handed = 0;
    for (size_t j = 0; j < f->nhand; j++) {
        struct handoff *h = &f->hand[j];
        const struct ch_inbox_event *e = &f->events[h->event];
        if (stored && !e->duplicate) {
            h->entry.seq = e->seq;
            dispatch_lane_hand(h->lane, &h->entry);
            handed++;
        } else {
            ch_inbox_entry_release(&h->entry);
            dispatch_lane_cancel(h->lane, e->body_len);
        }
    }
    f->nhand = 0;
    if (handed > 0)
        stats_handed(f->stats, true, handed);
}

/* The batcher's commit: the requests of one batch into the inbox in one transaction, each new
 * event with the sinks its routes name in the settings in force (held until the commit: the
 * names point into them). */
static ch_code commit_batch(void *arg, void *const *items, size_t n)
{
    struct front *f = arg;
    long long now = (long long)time(NULL);
    const struct receive_config *c = live_get(f->live);
    for (size_t i = 0; i < n; i++) {
        const struct inbound *in = items[i];
        f->events[i] = (struct ch_inbox_event){
            .webhook_id = in->webhook_id,
            .event = in->event,
            .call_key = in->has_call_key ? in->call_key : NULL,
            .has_call_type = in->has_call_type,
            .call_type = in->call_type,
            .body = in->http->body.data,
            .body_len = in->http->body.len,
            .received_at = now,
            .webhook_timestamp = in->webhook_timestamp,
            .webhook_signature = in->webhook_signature,
        };
        f->sinks[i].names = f->names[i];
        f->sinks[i].n =
            route_sinks(c, in->event, route_stored_kind(in->has_call_type, in->call_type),
                        in->call_type, f->names[i], RECEIVE_MAX_SINKS);
    }
    /* Held until the deliveries reserved are handed over: a stop waits for it. */
    dispatch_lanes_lock(f->dispatch);
    reserve_lanes(f, n, c->ordered);
    struct ch_error err = {0};
    ch_code rc = inbox_add_handed(f->inbox, f->events, f->sinks, f->handed_rows, n, &err);
    live_put(f->live, c);
    hand_over(f, rc == CH_OK);
    dispatch_lanes_unlock(f->dispatch);
    if (rc != CH_OK)
        log_error("cannot store %zu events: %s", n, err.message);
    return rc;
}

/* The batcher's done: answers and resumes every request of the batch, then wakes the
 * dispatchers when there is something new for them. */
static void answer_batch(void *arg, void *const *items, size_t n, ch_code rc)
{
    struct front *f = arg;
    bool any_new = false;
    for (size_t i = 0; i < n; i++) {
        const struct inbound *in = items[i];
        struct http_request *r = in->http;
        if (rc != CH_OK) {
            refuse(f, r, REFUSED_STORE, NULL, "the event could not be stored; send it again");
        } else if (f->events[i].duplicate) {
            answer(r, 200, "duplicate: already received");
            stats_duplicate(f->stats, in->webhook_id, in->event, r->remote);
        } else {
            answer(r, 202, "accepted");
            stats_accepted(f->stats);
            any_new = true;
        }
        http_resume(r);
    }
    if (any_new)
        dispatch_wake(f->dispatch);
}

/* ---- checks ---- */

static const char *get_header(void *ctx, const char *name)
{
    return http_header(ctx, name);
}

static bool is_health_check(const struct http_request *r)
{
    return strcmp(r->method, "GET") == 0 && strcmp(r->path, "/healthz") == 0;
}

static bool is_metrics(const struct http_request *r)
{
    return strcmp(r->method, "GET") == 0 && strcmp(r->path, "/metrics") == 0;
}

/* The checks that need only the headers, in the documented order, made before a byte of the
 * body is read: so a client that cannot sign (or lacks the required header) cannot make the
 * receiver hold its body. Returns true when the request is refused (the answer is set). */
static bool refuse_from_headers(void *arg, struct http_request *r)
{
    struct front *f = arg;
    struct inbound *in = r->state;
    in->http = r;
    if (is_health_check(r))
        return false; /* answered once the (empty) request is complete */
    const struct receive_config *c = live_get(f->live);
    bool refused = true;
    char which[128];
    struct ch_error err = {0};
    /* The signature covers the body: here only its headers and the timestamp window. */
    struct ch_verifier v = {.keys = c->keys, .nkeys = c->nkeys, .tolerance_s = c->tolerance_s};
    if (is_metrics(r) && strcmp(c->metrics, "off") != 0) {
        if (!r->remote_loopback && strcmp(c->metrics, "any") != 0)
            refuse(f, r, REFUSED_METRICS, NULL,
                   "/metrics is answered to loopback clients only (--metrics any opens it)");
        else
            refused = false; /* answered once the (empty) request is complete */
    } else if (strcmp(r->method, "POST") != 0) {
        refuse(f, r, REFUSED_METHOD, NULL, "only POST is accepted");
    } else if (route_event_of(get_header, r, r->path) == NULL) {
        refuse(f, r, REFUSED_NO_EVENT, NULL,
               "no X-Call-Event header and the path does not end in begin-call or end-call");
    } else if (!route_headers_ok(c, get_header, r, which, sizeof which)) {
        refuse(f, r, REFUSED_REQUIRED_HEADER, NULL, "header %s is missing or wrong", which);
    } else if (ch_verify_request_headers(&v, get_header, r, &err) != CH_OK) {
        refuse(f, r, verify_refusal(err.code), NULL, "%s", err.message);
    } else {
        refused = false;
    }
    live_put(f->live, c);
    return refused;
}

/* GET /metrics: the counters and the inbox's state, as Prometheus reads them. */
static void answer_metrics(struct front *f, struct http_request *r)
{
    struct ch_inbox_stats inbox;
    struct ch_error err = {0};
    bool read = ch_inbox_stats(f->inbox, NULL, &inbox, &err) == CH_OK;
    if (!read)
        log_warn("cannot read the inbox for /metrics: %s", err.message);
    char *text = stats_render(f->stats, read ? &inbox : NULL, clock_wall_s());
    if (text == NULL) {
        answer(r, 500, "out of memory");
        return;
    }
    http_respond(r, 200, "text/plain; version=0.0.4", text, strlen(text));
    free(text);
}

/* The checks of a complete request whose headers passed, in order, against the settings c.
 * Returns true when the request is refused (the answer is set), false when it is ready for the
 * writer (its state filled in). */
static bool check(struct front *f, const struct receive_config *c, struct http_request *r)
{
    struct inbound *in = r->state;
    const char *event = route_event_of(get_header, r, r->path);
    if (event == NULL) { /* refuse_from_headers() answered it; here for safety */
        refuse(f, r, REFUSED_NO_EVENT, NULL, "no event kind");
        return true;
    }
    struct ch_verifier v = {.keys = c->keys, .nkeys = c->nkeys, .tolerance_s = c->tolerance_s};
    struct ch_error err = {0};
    const char *body = r->body.data ? r->body.data : "";
    if (ch_verify_request(&v, get_header, r, body, r->body.len, &err) != CH_OK) {
        refuse(f, r, verify_refusal(err.code), NULL, "%s", err.message);
        return true;
    }
    struct ch_record rec;
    if (ch_record_parse(&rec, body, r->body.len, c->max_body_bytes, &err) != CH_OK) {
        /* The log gets the kind of fault only: a parser's message may quote the body. */
        refuse(f, r, err.code == CH_ETOOBIG ? REFUSED_TOO_LARGE : REFUSED_BAD_BODY,
               ch_strerror(err.code), "%s", err.message);
        return true;
    }
    const char *id =
        http_header(r, "webhook-id") ? http_header(r, "webhook-id") : http_header(r, "svix-id");
    for (const char *p = id; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            refuse(f, r, REFUSED_BAD_BODY, NULL, "webhook-id contains control characters");
            return true;
        }
    }
    snprintf(in->webhook_id, sizeof in->webhook_id, "%s", id);
    /* Both verified above: kept for a forward to pass on. */
    const char *ts = http_header(r, "webhook-timestamp") ? http_header(r, "webhook-timestamp")
                                                         : http_header(r, "svix-timestamp");
    in->webhook_timestamp = ts ? strtoll(ts, NULL, 10) : 0;
    in->webhook_signature = http_header(r, "webhook-signature")
                                ? http_header(r, "webhook-signature")
                                : http_header(r, "svix-signature");
    snprintf(in->event, sizeof in->event, "%s", event);
    const char *key = ch_record_dedupe_key(&rec);
    in->has_call_key = key != NULL;
    if (key)
        snprintf(in->call_key, sizeof in->call_key, "%s", key);
    in->has_call_type = rec.call_type_kind != CH_CALL_TYPE_ABSENT;
    in->call_type = rec.call_type;
    return false;
}

static bool check_and_queue(void *arg, struct http_request *r)
{
    struct front *f = arg;
    if (is_health_check(r)) {
        answer(r, 200, "ok");
        return true;
    }
    if (is_metrics(r)) { /* refuse_from_headers() let it through */
        answer_metrics(f, r);
        return true;
    }
    const struct receive_config *c = live_get(f->live);
    bool answered = check(f, c, r);
    live_put(f->live, c);
    if (answered)
        return true;
    enum batcher_submit_result queued = batcher_submit(f->writer, r->state);
    if (queued == BATCHER_QUEUED)
        return false;
    if (queued == BATCHER_STOPPED) {
        refuse(f, r, REFUSED_STOPPING, NULL, "shutting down; send it again");
    } else {
        snprintf(r->retry_after, sizeof r->retry_after, "1");
        refuse(f, r, REFUSED_BUSY, NULL,
               "busy: too many events are waiting to be stored; try again");
    }
    return true;
}

/* The front answered on its own (413 over the cap, 503 over the body budget). */
static void refused_by_http(void *arg, struct http_request *r)
{
    struct front *f = arg;
    stats_refused(f->stats, r->status == 413 ? REFUSED_TOO_LARGE : REFUSED_BUSY, r->remote,
                  r->status == 413 ? "the body is over --max-body-bytes"
                                   : "too many request bodies are being received at once");
}

/* ---- start and stop ---- */

ch_code front_start(const struct receive_config *c, struct live *live, struct receive_stats *stats,
                    struct ch_inbox *inbox, struct dispatch *dispatch, struct front **out,
                    struct ch_error *err)
{
    struct front *f = calloc(1, sizeof *f);
    if (f == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    f->live = live;
    f->stats = stats;
    f->inbox = inbox;
    f->dispatch = dispatch;
    struct batcher_config writer = {.thread_name = "ch-inbox",
                                    .max_batch = WRITER_BATCH,
                                    .max_queued = WRITER_QUEUE,
                                    .commit = commit_batch,
                                    .done = answer_batch,
                                    .ctx = f};
    ch_code rc = batcher_new(&writer, &f->writer, err);
    if (rc != CH_OK) {
        front_stop(f);
        return rc;
    }
    struct http_config hc = {
        .listen = c->listen,
        .max_body_bytes = c->max_body_bytes,
        /* Room for several bodies of the largest size at once (at most 16 MiB each). */
        .body_budget_bytes =
            c->max_body_bytes > BODY_BUDGET_BYTES / 4 ? 4 * c->max_body_bytes : BODY_BUDGET_BYTES,
        .connection_memory = 64 * 1024, /* TLS records and signature headers */
        .errors = HTTP_ERROR_STATUS,
        .tls_cert = c->insecure_http ? NULL : c->tls_cert,
        .tls_key = c->tls_key,
        .tls_client_ca = c->tls_client_ca,
    };
    struct http_handler handler = {.on_headers = refuse_from_headers,
                                   .on_request = check_and_queue,
                                   .on_refused = refused_by_http,
                                   .ctx = f,
                                   .state_bytes = sizeof(struct inbound)};
    rc = http_server_start(&hc, &handler, &f->http, err);
    if (rc != CH_OK) {
        front_stop(f);
        return rc;
    }
    *out = f;
    return CH_OK;
}

void front_stop(struct front *f)
{
    if (f == NULL)
        return;
    /* The writer answers everything queued before it exits; requests after that are answered
     * 503. Then HTTP closes once those answers are sent. */
    batcher_stop(f->writer);
    http_server_stop(f->http);
    batcher_free(f->writer); /* after HTTP: until then a request may still be refused by it */
    free(f);
}
