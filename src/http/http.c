/*
 * The HTTP front on libmicrohttpd: one thread pool on epoll, requests suspended while another
 * thread (a group commit) decides their answer. See http.h for what it owns and what the
 * handler decides.
 */
#include "http/http.h"

#include "lib/crypto.h"
#include "util/clock.h"
#include "util/log.h"
#include "http/listen.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>

#include <errno.h>
#include <stdarg.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IDLE_TIMEOUT_S     60u   /* a keep-alive connection with no request */
#define BODY_TIMEOUT_S     10u   /* an upload that stops arriving */
#define CONNECTIONS        4096u /* at most, over every address */
#define PER_IP_CONNECTIONS 1024u /* of those, at most this many per address */
#define THREADS            2u
#define PEM_MAX            (1024 * 1024)
#define STOP_WAIT_MS       5000 /* for suspended requests to be answered, at stop */

struct http_server {
    struct MHD_Daemon *daemon;
    struct http_handler handler;
    size_t max_body_bytes;
    size_t body_budget_bytes;
    enum http_error_form errors;
    bool client_certificates; /* a client must present one signed by the trusted CA */
    char *cert_pem, *key_pem, *ca_pem;
    /* Requests suspended and not yet done with: stopping MHD while one is suspended aborts. */
    atomic_int suspended;
    /* Body bytes held by every request at once. */
    atomic_size_t body_bytes;
};

enum req_state { REQ_READING = 0, REQ_WAITING, REQ_DONE };

/* A request with what only the front sees; the handler's state follows it in memory. */
struct req {
    struct http_request pub; /* first: a struct http_request * is a struct req * */
    struct http_server *s;
    struct MHD_Connection *conn;
    bool too_big;
    bool over_budget;      /* its bytes are dropped: it is answered 503 */
    size_t budgeted_bytes; /* what it counts in s->body_bytes */
    enum req_state state;
    bool was_suspended; /* counted in s->suspended until done */
};

#define STATE_OFFSET \
    ((sizeof(struct req) + alignof(max_align_t) - 1) / alignof(max_align_t) * alignof(max_align_t))

static struct req *req_of(struct http_request *r)
{
    return (struct req *)r;
}

/* ---- answers ---- */

const char *http_header(struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(req_of(r)->conn, MHD_HEADER_KIND, name);
}

const char *http_query(struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(req_of(r)->conn, MHD_GET_ARGUMENT_KIND, name);
}

#define QUERY_KNOWN_MAX 16

struct query_check {
    const char *const *known;
    unsigned seen; /* bit i: known[i] was given */
    char *bad;
    size_t cap;
    bool failed, repeated;
};

static enum MHD_Result check_arg(void *ctx, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    struct query_check *q = ctx;
    (void)kind;
    (void)value;
    int i = 0;
    while (q->known && q->known[i] && i < QUERY_KNOWN_MAX && strcmp(q->known[i], key) != 0)
        i++;
    bool known = q->known && i < QUERY_KNOWN_MAX && q->known[i];
    if (known && !(q->seen & (1u << i))) {
        q->seen |= 1u << i;
        return MHD_YES;
    }
    q->failed = true;
    q->repeated = known;
    snprintf(q->bad, q->cap, "%s", key);
    return MHD_NO; /* the first one is enough */
}

bool http_query_check(struct http_request *r, const char *const *known, char *bad, size_t cap,
                      bool *repeated)
{
    struct query_check q = {.known = known, .bad = bad, .cap = cap};
    MHD_get_connection_values(req_of(r)->conn, MHD_GET_ARGUMENT_KIND, check_arg, &q);
    *repeated = q.repeated;
    return !q.failed;
}

void http_respond(struct http_request *r, int status, const char *content_type, const char *body,
                  size_t len)
{
    free(r->response);
    r->response = malloc(len ? len : 1);
    r->response_len = r->response ? len : 0;
    if (r->response && len)
        memcpy(r->response, body, len);
    r->status = r->response ? status : 500;
    r->content_type = content_type;
}

bool http_add_header(struct http_request *r, const char *name, const char *value)
{
    if (r->nheaders >= HTTP_HEADERS_MAX)
        return false;
    r->headers[r->nheaders][0] = name;
    r->headers[r->nheaders][1] = value;
    r->nheaders++;
    return true;
}

void http_respond_json(struct http_request *r, int status, char *body)
{
    free(r->response);
    r->response = body;
    r->response_len = body ? strlen(body) : 0;
    r->status = body ? status : 500;
    r->content_type = "application/json";
}

size_t http_json_quote(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    if (cap < 3)
        return 0;
    out[o++] = '"';
    for (; *s && o + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}

void http_respond_errorv(struct http_request *r, int status, const char *code, const char *fmt,
                         va_list ap)
{
    char message[512], quoted[1200], body[1400];
    vsnprintf(message, sizeof message, fmt, ap);
    http_json_quote(message, quoted, sizeof quoted);
    int n;
    if (req_of(r)->s->errors == HTTP_ERROR_STATUS)
        n = snprintf(body, sizeof body, "{\"status\":%d,\"message\":%s}", status, quoted);
    else
        n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":%s}}",
                     code ? code : "error", quoted);
    http_respond(r, status, "application/json", body, (size_t)n);
}

void http_respond_error(struct http_request *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    http_respond_errorv(r, status, code, fmt, ap);
    va_end(ap);
}

void http_resume(struct http_request *r)
{
    struct req *q = req_of(r);
    q->state = REQ_DONE;
    MHD_resume_connection(q->conn);
}

static enum MHD_Result send_answer(struct MHD_Connection *c, struct http_request *r)
{
    if (r->status == 0) /* a handler that forgot: never an empty 200 */
        http_respond_error(r, 500, "internal", "no answer was set");
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r->response_len, r->response ? r->response : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    if (r->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    if (r->retry_after[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, r->retry_after);
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->headers[i][0], r->headers[i][1]);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- the request's life ---- */

/* With a trusted client CA: a client certificate that GnuTLS verified against it, meant for a
 * TLS client (not, say, a server's own certificate). */
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
    gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                     .data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT};
    unsigned int status = 0;
    return gnutls_certificate_verify_peers(session, &purpose, 1, &status) == GNUTLS_E_SUCCESS &&
           status == 0;
}

/* Sends an answer the front decided on its own, telling the handler first. */
static enum MHD_Result refused(struct http_server *s, struct MHD_Connection *c,
                               struct http_request *r)
{
    if (s->handler.on_refused)
        s->handler.on_refused(s->handler.ctx, r);
    return send_answer(c, r);
}

static bool expects_body(const char *method)
{
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 &&
           strcmp(method, "DELETE") != 0 && strcmp(method, "OPTIONS") != 0;
}

/* The client's address as text, and whether it is a loopback one (127.0.0.0/8, ::1, or
 * ::ffff:127.x.y.z). */
static void note_remote(struct MHD_Connection *c, struct http_request *r)
{
    snprintf(r->remote, sizeof r->remote, "?");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci == NULL || ci->client_addr == NULL)
        return;
    if (ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)ci->client_addr;
        inet_ntop(AF_INET, &a->sin_addr, r->remote, sizeof r->remote);
        r->remote_loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (ci->client_addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)ci->client_addr;
        inet_ntop(AF_INET6, &a->sin6_addr, r->remote, sizeof r->remote);
        r->remote_loopback =
            IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
            (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127);
    }
}

static struct req *req_new(struct http_server *s, struct MHD_Connection *c, const char *url,
                           const char *method)
{
    struct req *q = calloc(1, STATE_OFFSET + s->handler.state_bytes);
    if (q == NULL)
        return NULL;
    q->s = s;
    q->conn = c;
    struct http_request *r = &q->pub;
    r->arrived_ms = clock_wall_ms();
    note_remote(c, r);
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    buf_init(&r->body, s->max_body_bytes);
    r->state = s->handler.state_bytes ? (char *)q + STATE_OFFSET : NULL;
    return q;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_server *s = cls;
    (void)version;
    struct req *q = *con_cls;
    if (q == NULL) {
        /* Only clients with a certificate from the trusted CA get any answer. */
        if (s->client_certificates && !client_certificate_ok(c))
            return MHD_NO;
        q = req_new(s, c, url, method);
        if (q == NULL)
            return MHD_NO;
        *con_cls = q;
        /* The headers decide first: a request the handler refuses from them is answered
         * before a byte of its body is read (and the connection is then closed), so a client
         * that cannot authenticate cannot make the server hold bodies. */
        if (s->handler.on_headers(s->handler.ctx, &q->pub))
            return send_answer(c, &q->pub);
        /* Refuse a declared oversize body before reading any of it. */
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->max_body_bytes) {
            http_respond_error(&q->pub, 413, "too_large", "the body is over the limit of %zu bytes",
                               s->max_body_bytes);
            return refused(s, c, &q->pub);
        }
        /* A body that is expected must keep arriving: a stalled upload loses its slot after
         * BODY_TIMEOUT_S, not the idle timeout of a keep-alive connection. */
        if (expects_body(method))
            MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, BODY_TIMEOUT_S);
        return MHD_YES;
    }
    struct http_request *r = &q->pub;
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0; /* consumed (or dropped, once too big or over the budget) */
        if (q->too_big || q->over_budget)
            return MHD_YES;
        if (atomic_fetch_add(&s->body_bytes, n) + n > s->body_budget_bytes) {
            atomic_fetch_sub(&s->body_bytes, n);
            q->over_budget = true;
            return MHD_YES;
        }
        q->budgeted_bytes += n;
        if (!buf_add(&r->body, upload_data, n))
            q->too_big = true;
        return MHD_YES;
    }
    if (q->state == REQ_DONE)
        return send_answer(c, r);
    if (q->state == REQ_WAITING)
        return MHD_YES; /* woken early; the answer is not set yet */
    if (q->too_big) {
        http_respond_error(r, 413, "too_large", "the body is over the limit of %zu bytes",
                           s->max_body_bytes);
        return refused(s, c, r);
    }
    if (q->over_budget) {
        snprintf(r->retry_after, sizeof r->retry_after, "1");
        http_respond_error(r, 503, "busy",
                           "too many request bodies are being received at once; try again");
        return refused(s, c, r);
    }
    /* Suspend before the handler runs: another thread may answer before it returns. */
    q->state = REQ_WAITING;
    q->was_suspended = true;
    atomic_fetch_add(&s->suspended, 1);
    MHD_suspend_connection(c);
    if (s->handler.on_request(s->handler.ctx, r))
        http_resume(r);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *s = cls;
    (void)toe;
    struct req *q = *con_cls;
    if (q == NULL)
        return;
    atomic_fetch_sub(&s->body_bytes, q->budgeted_bytes);
    /* Counted until here, not until its answer was queued: stop waits for it to be sent. */
    if (q->was_suspended)
        atomic_fetch_sub(&s->suspended, 1);
    /* The connection may carry another request: the keep-alive idle timeout again. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, IDLE_TIMEOUT_S);
    buf_release(&q->pub.body);
    free(q->pub.response);
    free(q);
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

static void server_free(struct http_server *s)
{
    free(s->cert_pem);
    if (s->key_pem) {
        crypto_wipe(s->key_pem, strlen(s->key_pem));
        free(s->key_pem);
    }
    free(s->ca_pem);
    free(s);
}

/* libmicrohttpd's own messages, into the log with a prefix, rather than bare on stderr. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    log_warn("http: %s", line);
}

ch_code http_server_start(const struct http_config *c, const struct http_handler *h,
                          struct http_server **out, struct ch_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ch_code rc = listen_parse(c->listen, &ss, &len, err);
    if (rc != CH_OK)
        return rc;
    struct http_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    /* Bound here, so that a refusal says why (libmicrohttpd logs "Failed to bind to port 0"). */
    int fd = -1;
    if ((rc = listen_open(c->listen, &fd, err)) != CH_OK) {
        free(s);
        return rc;
    }
    s->handler = *h;
    s->max_body_bytes = c->max_body_bytes;
    s->body_budget_bytes = c->body_budget_bytes;
    s->errors = c->errors;
    bool tls = c->tls_cert && c->tls_cert[0];
    if (tls) {
        rc = read_pem(c->tls_cert, &s->cert_pem, err);
        if (rc == CH_OK)
            rc = read_pem(c->tls_key, &s->key_pem, err);
        if (rc == CH_OK && c->tls_client_ca && c->tls_client_ca[0])
            rc = read_pem(c->tls_client_ca, &s->ca_pem, err);
        if (rc != CH_OK) {
            close(fd);
            server_free(s);
            return rc;
        }
        s->client_certificates = s->ca_pem != NULL;
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
        {MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)priorities},
        {s->ca_pem ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, s->ca_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem no_opts[] = {{MHD_OPTION_END, 0, NULL}};
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_THREAD_POOL_SIZE, THREADS, MHD_OPTION_CONNECTION_LIMIT, CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, PER_IP_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, c->connection_memory,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_ARRAY, tls ? tls_opts : no_opts,
        MHD_OPTION_END);
    if (s->daemon == NULL) {
        close(fd);
        server_free(s);
        return ch_error_set(err, CH_EIO, "cannot start the HTTP server on '%s'%s", c->listen,
                            tls ? " (do the TLS certificate and key load?)" : "");
    }
    *out = s;
    return CH_OK;
}

unsigned http_server_port(const struct http_server *s)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return di ? di->port : 0;
}

void http_server_stop(struct http_server *s)
{
    if (s == NULL)
        return;
    /* Not MHD_quiesce_daemon(): with a thread pool on epoll, libmicrohttpd 0.9.75 can abort in
     * it ("Failed to remove listen FD from epoll set") when a worker takes the listen socket
     * out at the same moment. Stopping it with a connection still suspended aborts too: wait
     * (bounded) until every suspended request has been answered and sent. */
    int64_t until = clock_mono_ms() + STOP_WAIT_MS;
    while (atomic_load(&s->suspended) > 0 && clock_mono_ms() < until) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Answers set without suspending (refusals, health checks) may still be leaving. */
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    MHD_stop_daemon(s->daemon);
    server_free(s);
}
