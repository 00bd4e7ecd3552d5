/*
 * The receiver's front, a handler of the HTTP front (src/http/): checks each request in the
 * documented order — its headers before a byte of its body is read — then queues it for a
 * writer thread that adds whatever is waiting to the inbox in one transaction and only then
 * answers. Nothing is acknowledged before it is on disk.
 */
#include "receive/front.h"

#include "http/http.h"
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

/* What the receiver learns of a request on its way into the inbox (the request's state). */
struct inbound {
    struct http_request *http;
    char webhook_id[CH_MESSAGE_ID_MAX + 1];
    char event[16];
    char call_key[CH_RECORD_ID_MAX + 1];
    bool has_call_key;
    bool has_call_type;
    long long call_type;
};

struct front {
    const struct receive_config *cfg;
    struct ch_inbox *inbox;
    struct worker_pool *workers;
    struct http_server *http;
    struct batcher *writer;
    /* The batch being stored, one per request: filled by commit_batch, read by answer_batch on
     * the writer's thread. */
    struct ch_inbox_event events[WRITER_BATCH];
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

/* ---- the writer: group commit into the inbox ---- */

/* The batcher's commit: the requests of one batch into the inbox in one transaction. */
static ch_code commit_batch(void *arg, void *const *items, size_t n)
{
    struct front *f = arg;
    long long now = (long long)time(NULL);
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
        };
    }
    struct ch_error err = {0};
    ch_code rc = ch_inbox_add(f->inbox, f->events, n, &err);
    if (rc != CH_OK)
        log_error("cannot store %zu events: %s", n, err.message);
    return rc;
}

/* The batcher's done: answers and resumes every request of the batch, then wakes the workers
 * when there is something new for them. */
static void answer_batch(void *arg, void *const *items, size_t n, ch_code rc)
{
    struct front *f = arg;
    bool any_new = false;
    for (size_t i = 0; i < n; i++) {
        struct http_request *r = ((struct inbound *)items[i])->http;
        if (rc != CH_OK)
            answer(r, 503, "the event could not be stored; send it again");
        else if (f->events[i].duplicate)
            answer(r, 200, "duplicate: already received");
        else {
            answer(r, 202, "accepted");
            any_new = true;
        }
        http_resume(r);
    }
    if (any_new)
        worker_pool_wake(f->workers);
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

/* The checks that need only the headers, in the documented order, made before a byte of the
 * body is read: so a client that cannot sign (or lacks the required header) cannot make the
 * receiver hold its body. Returns true when the request is refused (the answer is set). */
static bool refuse_from_headers(void *arg, struct http_request *r)
{
    struct front *f = arg;
    const struct receive_config *c = f->cfg;
    struct inbound *in = r->state;
    in->http = r;
    if (is_health_check(r))
        return false; /* answered once the (empty) request is complete */
    if (strcmp(r->method, "POST") != 0) {
        answer(r, 405, "only POST is accepted");
        return true;
    }
    if (route_event_of(get_header, r, r->path) == NULL) {
        answer(r, 404,
               "no X-Call-Event header and the path does not end in begin-call or end-call");
        return true;
    }
    char which[128];
    if (!route_headers_ok(c, get_header, r, which, sizeof which)) {
        answer(r, 401, "header %s is missing or wrong", which);
        return true;
    }
    /* The signature covers the body: here only its headers and the timestamp window. */
    struct ch_verifier v = {.keys = c->keys, .nkeys = c->nkeys, .tolerance_s = c->tolerance_s};
    struct ch_error err = {0};
    if (ch_verify_request_headers(&v, get_header, r, &err) != CH_OK) {
        answer(r, 401, "%s", err.message);
        return true;
    }
    return false;
}

/* The checks of a complete request whose headers passed, in order. Returns true when the
 * answer is set now, false when the request went to the writer. */
static bool check_and_queue(void *arg, struct http_request *r)
{
    struct front *f = arg;
    const struct receive_config *c = f->cfg;
    struct inbound *in = r->state;
    if (is_health_check(r)) {
        answer(r, 200, "ok");
        return true;
    }
    const char *event = route_event_of(get_header, r, r->path);
    if (event == NULL) { /* refuse_from_headers() answered it; here for safety */
        answer(r, 404, "no event kind");
        return true;
    }
    struct ch_verifier v = {.keys = c->keys, .nkeys = c->nkeys, .tolerance_s = c->tolerance_s};
    struct ch_error err = {0};
    const char *body = r->body.data ? r->body.data : "";
    if (ch_verify_request(&v, get_header, r, body, r->body.len, &err) != CH_OK) {
        answer(r, 401, "%s", err.message);
        return true;
    }
    struct ch_record rec;
    if (ch_record_parse(&rec, body, r->body.len, c->max_body_bytes, &err) != CH_OK) {
        answer(r, err.code == CH_ETOOBIG ? 413 : 400, "%s", err.message);
        return true;
    }
    const char *id =
        http_header(r, "webhook-id") ? http_header(r, "webhook-id") : http_header(r, "svix-id");
    for (const char *p = id; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            answer(r, 400, "webhook-id contains control characters");
            return true;
        }
    }
    snprintf(in->webhook_id, sizeof in->webhook_id, "%s", id);
    snprintf(in->event, sizeof in->event, "%s", event);
    const char *key = ch_record_dedupe_key(&rec);
    in->has_call_key = key != NULL;
    if (key)
        snprintf(in->call_key, sizeof in->call_key, "%s", key);
    in->has_call_type = rec.call_type_kind != CH_CALL_TYPE_ABSENT;
    in->call_type = rec.call_type;

    enum batcher_submit_result queued = batcher_submit(f->writer, in);
    if (queued == BATCHER_QUEUED)
        return false;
    if (queued == BATCHER_STOPPED) {
        answer(r, 503, "shutting down; send it again");
    } else {
        snprintf(r->retry_after, sizeof r->retry_after, "1");
        answer(r, 503, "busy: too many events are waiting to be stored; try again");
    }
    return true;
}

/* ---- start and stop ---- */

ch_code front_start(const struct receive_config *c, struct ch_inbox *inbox,
                    struct worker_pool *workers, struct front **out, struct ch_error *err)
{
    struct front *f = calloc(1, sizeof *f);
    if (f == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    f->cfg = c;
    f->inbox = inbox;
    f->workers = workers;
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
