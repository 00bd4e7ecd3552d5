/*
 * The receiver's HTTPS front on libmicrohttpd (with GnuTLS for client certificates): checks
 * each request in the documented order — its headers before a byte of its body is read — then
 * queues it for a writer thread that adds whatever is waiting to the inbox in one transaction
 * and only then answers. Nothing is acknowledged before it is on disk.
 */
#include "receive/front.h"

#include "lib/crypto.h"
#include "util/batcher.h"
#include "util/buf.h"
#include "util/listen.h"
#include "util/log.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WRITER_BATCH 512
/* The connection limit: each connection waits on one event at most, so the writer's queue is
 * never full in practice; if it were, the request is answered 503 with Retry-After. */
#define WRITER_QUEUE 4096
#define PEM_MAX      (1024 * 1024)

#define IDLE_TIMEOUT_S     60u   /* a keep-alive connection with no request */
#define BODY_TIMEOUT_S     10u   /* an upload that stops arriving */
#define PER_IP_CONNECTIONS 1024u /* of the 4096 connections, at most this many per address */
#define BODY_BUDGET_BYTES  ((size_t)64 * 1024 * 1024) /* bodies held at once, at the least */

enum req_state { REQ_READING = 0, REQ_WAITING, REQ_DONE };

struct request {
    struct front *f;
    struct MHD_Connection *conn;
    char path[512];
    char method[16];
    struct buf body;
    bool too_big;
    bool over_budget;      /* its bytes are dropped: it is answered 503 */
    size_t budgeted_bytes; /* what it counts in front.body_bytes */
    bool retry_after;
    enum req_state state;
    bool was_suspended;
    int status;
    char response[600];
    /* what the writer stores */
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
    struct MHD_Daemon *daemon;
    char *cert_pem, *key_pem, *ca_pem;
    struct batcher *writer;
    /* The batch being stored, one per request: filled by commit_batch, read by answer_batch on
     * the writer's thread. */
    struct ch_inbox_event events[WRITER_BATCH];
    /* Requests suspended and not yet answered: MHD must not be stopped while there are any. */
    atomic_int suspended;
    /* Body bytes held by all requests at once, and the most they may hold. */
    atomic_size_t body_bytes;
    size_t body_budget_bytes;
};

/* ---- answers ---- */

static void set_answer(struct request *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_answer(struct request *r, int status, const char *fmt, ...)
{
    char message[400], quoted[450];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    size_t o = 0;
    for (const char *p = message; *p && o + 3 < sizeof quoted; p++) {
        if (*p == '"' || *p == '\\')
            quoted[o++] = '\\';
        quoted[o++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    }
    quoted[o] = '\0';
    r->status = status;
    snprintf(r->response, sizeof r->response, "{\"status\":%d,\"message\":\"%s\"}", status, quoted);
}

static enum MHD_Result send_answer(struct MHD_Connection *c, struct request *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(r->response), r->response, MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (r->retry_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- the writer: group commit into the inbox ---- */

/* The batcher's commit: the requests of one batch into the inbox in one transaction. */
static ch_code commit_batch(void *arg, void *const *reqs, size_t n)
{
    struct front *f = arg;
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < n; i++) {
        const struct request *r = reqs[i];
        f->events[i] = (struct ch_inbox_event){
            .webhook_id = r->webhook_id,
            .event = r->event,
            .call_key = r->has_call_key ? r->call_key : NULL,
            .has_call_type = r->has_call_type,
            .call_type = r->call_type,
            .body = r->body.data,
            .body_len = r->body.len,
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
static void answer_batch(void *arg, void *const *reqs, size_t n, ch_code rc)
{
    struct front *f = arg;
    bool any_new = false;
    for (size_t i = 0; i < n; i++) {
        struct request *r = reqs[i];
        if (rc != CH_OK)
            set_answer(r, 503, "the event could not be stored; send it again");
        else if (f->events[i].duplicate)
            set_answer(r, 200, "duplicate: already received");
        else {
            set_answer(r, 202, "accepted");
            any_new = true;
        }
        r->state = REQ_DONE;
        MHD_resume_connection(r->conn);
    }
    if (any_new)
        worker_pool_wake(f->workers);
}

/* ---- checks ---- */

static const char *get_header(void *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

/* With --tls-client-ca: a client certificate that GnuTLS verified against that CA. */
static bool client_certificate_ok(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (ci == NULL || ci->tls_session == NULL)
        return false;
    gnutls_session_t session = (gnutls_session_t)ci->tls_session;
    unsigned int listed = 0;
    if (gnutls_certificate_get_peers(session, &listed) == NULL || listed == 0)
        return false;
    /* Signed by the CA, and meant for a TLS client (not, say, a server's own certificate). */
    gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                     .data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT};
    unsigned int status = 0;
    return gnutls_certificate_verify_peers(session, &purpose, 1, &status) == GNUTLS_E_SUCCESS &&
           status == 0;
}

static bool is_health_check(const struct request *r)
{
    return strcmp(r->method, "GET") == 0 && strcmp(r->path, "/healthz") == 0;
}

/* The checks that need only the headers, in the documented order, made before a byte of the
 * body is read: so a client that cannot sign (or lacks the required header) cannot make the
 * receiver hold its body. Returns true when the request is refused (the answer is set). */
static bool refuse_from_headers(struct front *f, struct request *r)
{
    const struct receive_config *c = f->cfg;
    if (is_health_check(r))
        return false; /* answered once the (empty) request is complete */
    if (strcmp(r->method, "POST") != 0) {
        set_answer(r, 405, "only POST is accepted");
        return true;
    }
    if (route_event_of(get_header, r->conn, r->path) == NULL) {
        set_answer(r, 404,
                   "no X-Call-Event header and the path does not end in begin-call or end-call");
        return true;
    }
    char which[128];
    if (!route_headers_ok(c, get_header, r->conn, which, sizeof which)) {
        set_answer(r, 401, "header %s is missing or wrong", which);
        return true;
    }
    /* The signature covers the body: here only its headers and the timestamp window. */
    struct ch_verifier v = {.keys = c->keys, .nkeys = c->nkeys, .tolerance_s = c->tolerance_s};
    struct ch_error err = {0};
    if (ch_verify_request_headers(&v, get_header, r->conn, &err) != CH_OK) {
        set_answer(r, 401, "%s", err.message);
        return true;
    }
    const char *cl =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > c->max_body_bytes) {
        set_answer(r, 413, "the body is over the limit of %zu bytes", c->max_body_bytes);
        return true;
    }
    return false;
}

/* The checks of a complete request whose headers passed, in order. Returns true when the
 * answer is set now, false when the request went to the writer. */
static bool check_and_queue(struct front *f, struct request *r)
{
    const struct receive_config *c = f->cfg;
    if (is_health_check(r)) {
        set_answer(r, 200, "ok");
        return true;
    }
    const char *event = route_event_of(get_header, r->conn, r->path);
    if (event == NULL) { /* refuse_from_headers() answered it; here for safety */
        set_answer(r, 404, "no event kind");
        return true;
    }
    struct ch_verifier v = {.keys = c->keys, .nkeys = c->nkeys, .tolerance_s = c->tolerance_s};
    struct ch_error err = {0};
    const char *body = r->body.data ? r->body.data : "";
    if (ch_verify_request(&v, get_header, r->conn, body, r->body.len, &err) != CH_OK) {
        set_answer(r, 401, "%s", err.message);
        return true;
    }
    struct ch_record rec;
    if (ch_record_parse(&rec, body, r->body.len, c->max_body_bytes, &err) != CH_OK) {
        set_answer(r, err.code == CH_ETOOBIG ? 413 : 400, "%s", err.message);
        return true;
    }
    for (const char *p = get_header(r->conn, "webhook-id") ? get_header(r->conn, "webhook-id")
                                                           : get_header(r->conn, "svix-id");
         *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            set_answer(r, 400, "webhook-id contains control characters");
            return true;
        }
    }
    snprintf(r->webhook_id, sizeof r->webhook_id, "%s",
             get_header(r->conn, "webhook-id") ? get_header(r->conn, "webhook-id")
                                               : get_header(r->conn, "svix-id"));
    snprintf(r->event, sizeof r->event, "%s", event);
    const char *key = ch_record_dedupe_key(&rec);
    r->has_call_key = key != NULL;
    if (key)
        snprintf(r->call_key, sizeof r->call_key, "%s", key);
    r->has_call_type = rec.call_type_kind != CH_CALL_TYPE_ABSENT;
    r->call_type = rec.call_type;

    enum batcher_submit_result queued = batcher_submit(f->writer, r);
    if (queued == BATCHER_QUEUED)
        return false;
    if (queued == BATCHER_STOPPED) {
        set_answer(r, 503, "shutting down; send it again");
    } else {
        r->retry_after = true;
        set_answer(r, 503, "busy: too many events are waiting to be stored; try again");
    }
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct front *f = cls;
    (void)version;
    struct request *r = *con_cls;
    if (r == NULL) {
        /* Only clients with a certificate from the configured CA get any answer. */
        if (f->cfg->tls_client_ca[0] && !client_certificate_ok(c))
            return MHD_NO;
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return MHD_NO;
        r->f = f;
        r->conn = c;
        snprintf(r->path, sizeof r->path, "%s", url);
        snprintf(r->method, sizeof r->method, "%s", method);
        buf_init(&r->body, f->cfg->max_body_bytes);
        *con_cls = r;
        /* Refused from its headers: answered now, and libmicrohttpd closes the connection
         * without reading the body. */
        if (refuse_from_headers(f, r))
            return send_answer(c, r);
        /* A body that is expected must keep arriving: a stalled upload loses its slot after
         * BODY_TIMEOUT_S, not the idle timeout of a keep-alive connection. */
        if (strcmp(method, "POST") == 0)
            MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, BODY_TIMEOUT_S);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0; /* consumed (or dropped, once too big or over the budget) */
        if (r->too_big || r->over_budget)
            return MHD_YES;
        if (atomic_fetch_add(&f->body_bytes, n) + n > f->body_budget_bytes) {
            atomic_fetch_sub(&f->body_bytes, n);
            r->over_budget = true;
            return MHD_YES;
        }
        r->budgeted_bytes += n;
        if (!buf_add(&r->body, upload_data, n))
            r->too_big = true;
        return MHD_YES;
    }
    if (r->state == REQ_DONE) {
        if (r->was_suspended) {
            r->was_suspended = false;
            atomic_fetch_sub(&f->suspended, 1);
        }
        return send_answer(c, r);
    }
    if (r->state == REQ_WAITING)
        return MHD_YES;
    if (r->too_big) {
        set_answer(r, 413, "the body is over the limit of %zu bytes", f->cfg->max_body_bytes);
        return send_answer(c, r);
    }
    if (r->over_budget) {
        r->retry_after = true;
        set_answer(r, 503, "busy: too many request bodies are being received at once; try again");
        return send_answer(c, r);
    }
    r->state = REQ_WAITING;
    r->was_suspended = true;
    atomic_fetch_add(&f->suspended, 1);
    MHD_suspend_connection(c);
    if (check_and_queue(f, r)) {
        r->state = REQ_DONE;
        MHD_resume_connection(c);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct front *f = cls;
    (void)toe;
    struct request *r = *con_cls;
    if (r == NULL)
        return;
    atomic_fetch_sub(&f->body_bytes, r->budgeted_bytes);
    /* The connection may carry another request: the keep-alive idle timeout again. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, IDLE_TIMEOUT_S);
    buf_release(&r->body);
    free(r);
    *con_cls = NULL;
}

/* ---- start and stop ---- */

static ch_code read_pem(const char *path, char **out, struct ch_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return ch_error_set(err, CH_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct buf b;
    buf_init(&b, PEM_MAX);
    char chunk[4096];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        ok = buf_add(&b, chunk, n);
    fclose(fp);
    if (!ok || b.data == NULL) {
        buf_release(&b);
        return ch_error_set(err, CH_EIO, "'%s' is empty or larger than %d bytes", path, PEM_MAX);
    }
    *out = b.data;
    return CH_OK;
}

ch_code front_start(const struct receive_config *c, struct ch_inbox *inbox,
                    struct worker_pool *workers, struct front **out, struct ch_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ch_code rc = listen_parse(c->listen, &ss, &len, err);
    if (rc != CH_OK)
        return rc;
    struct front *f = calloc(1, sizeof *f);
    if (f == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    f->cfg = c;
    f->inbox = inbox;
    f->workers = workers;
    /* Room for several bodies of the largest size at once (max_body_bytes is at most 16 MiB). */
    f->body_budget_bytes =
        c->max_body_bytes > BODY_BUDGET_BYTES / 4 ? 4 * c->max_body_bytes : BODY_BUDGET_BYTES;
    bool tls = !c->insecure_http;
    if (tls) {
        rc = read_pem(c->tls_cert, &f->cert_pem, err);
        if (rc == CH_OK)
            rc = read_pem(c->tls_key, &f->key_pem, err);
        if (rc == CH_OK && c->tls_client_ca[0])
            rc = read_pem(c->tls_client_ca, &f->ca_pem, err);
        if (rc != CH_OK) {
            front_stop(f);
            return rc;
        }
    }
    struct batcher_config writer = {.thread_name = "ch-inbox",
                                    .max_batch = WRITER_BATCH,
                                    .max_queued = WRITER_QUEUE,
                                    .commit = commit_batch,
                                    .done = answer_batch,
                                    .ctx = f};
    rc = batcher_new(&writer, &f->writer, err);
    if (rc != CH_OK) {
        front_stop(f);
        return rc;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (tls)
        flags |= MHD_USE_TLS;
    /* TLS 1.2 at least; the key material stays in this process's memory only. */
    static const char priorities[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, f->cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, f->key_pem},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)priorities},
        {f->ca_pem ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, f->ca_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
    f->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, f, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, f, MHD_OPTION_THREAD_POOL_SIZE, 2u,
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_PER_IP_CONNECTION_LIMIT, PER_IP_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_ARRAY,
        tls ? tls_opts : no_opts, MHD_OPTION_END);
    if (f->daemon == NULL) {
        front_stop(f);
        return ch_error_set(err, CH_EIO,
                            "cannot listen on '%s' (address in use, or the TLS certificate "
                            "and key do not load)",
                            c->listen);
    }
    *out = f;
    return CH_OK;
}

void front_stop(struct front *f)
{
    if (f == NULL)
        return;
    /* The writer answers everything queued before it exits; requests after that are answered
     * 503. Not MHD_quiesce_daemon(): with a thread pool on epoll, libmicrohttpd 0.9.75 can
     * abort in it ("Failed to remove listen FD from epoll set") when a worker takes the listen
     * socket out at the same moment. */
    batcher_stop(f->writer);
    if (f->daemon) {
        /* Every suspended request has been resumed by now; wait (bounded) until MHD has sent
         * their answers, since stopping it with a connection still suspended aborts. */
        for (int i = 0; i < 500 && atomic_load(&f->suspended) > 0; i++) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL); /* let the last answers leave */
        MHD_stop_daemon(f->daemon);
    }
    batcher_free(f->writer); /* after MHD: until then a request may still be refused by it */
    free(f->cert_pem);
    if (f->key_pem) {
        crypto_wipe(f->key_pem, strlen(f->key_pem));
        free(f->key_pem);
    }
    free(f->ca_pem);
    free(f);
}
