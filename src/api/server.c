/*
 * The HTTP front on libmicrohttpd (the only file that includes it): reads each request body up
 * to the cap, hands the complete request to api_dispatch, and suspends ingest requests until
 * the group commit that makes them durable has returned.
 */
#include "api/api.h"
#include "util/clock.h"
#include "util/listen.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IDLE_TIMEOUT_S     60u   /* a keep-alive connection with no request */
#define BODY_TIMEOUT_S     10u   /* an upload that stops arriving */
#define PER_IP_CONNECTIONS 1024u /* of the 4096 connections, at most this many per address */

struct api_server {
    struct MHD_Daemon *daemon;
};

const char *api_header(struct api_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *api_query(struct api_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

void api_respond(struct api_request *r, int status, const char *content_type, const char *body,
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

void api_respond_json(struct api_request *r, int status, char *body)
{
    free(r->response);
    r->response = body;
    r->response_len = body ? strlen(body) : 0;
    r->status = body ? status : 500;
    r->content_type = "application/json";
}

/* Writes s as a JSON string body (quotes included) into out. */
static size_t json_quote(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    if (cap < 3)
        return 0;
    out[o++] = '"';
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return o;
}

void api_respond_error(struct api_request *r, int status, const char *code, const char *fmt, ...)
{
    char message[512], quoted[1200], body[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_quote(message, quoted, sizeof quoted);
    int n =
        snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":%s}}", code, quoted);
    api_respond(r, status, "application/json", body, (size_t)n);
}

void api_resume(struct api_request *r)
{
    r->state = REQ_DONE;
    MHD_resume_connection(r->conn);
}

static enum MHD_Result send_response(struct MHD_Connection *c, struct api_request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r->response_len, r->response ? r->response : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    if (r->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    if (r->retry_after[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, r->retry_after);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct api_context *ctx = cls;
    (void)version;
    struct api_request *r = *con_cls;
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return MHD_NO;
        r->ctx = ctx;
        r->conn = c;
        r->arrived_ms = clock_wall_ms();
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        buf_init(&r->body, ctx->max_body_bytes);
        *con_cls = r;
        /* The headers decide first: a request without a valid key, with the wrong role or
         * for no endpoint is answered before a byte of its body is read (and the connection
         * is then closed), so unauthenticated clients cannot make serve hold bodies. */
        if (api_precheck(r))
            return send_response(c, r);
        /* Refuse a declared oversize body before reading any of it. */
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > ctx->max_body_bytes) {
            api_respond_error(r, 413, "too_large", "the body is over the limit of %zu bytes",
                              ctx->max_body_bytes);
            return send_response(c, r);
        }
        /* A body that is expected must keep arriving: a stalled upload loses its slot after
         * BODY_TIMEOUT_S, not the idle timeout of a keep-alive connection. */
        if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
            MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, BODY_TIMEOUT_S);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0; /* consumed (or dropped, once too big or over the budget) */
        if (r->too_big || r->over_budget)
            return MHD_YES;
        if (atomic_fetch_add(&ctx->body_bytes, n) + n > ctx->body_budget_bytes) {
            atomic_fetch_sub(&ctx->body_bytes, n);
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
            atomic_fetch_sub(&ctx->suspended, 1);
        }
        return send_response(c, r);
    }
    if (r->state == REQ_WAITING)
        return MHD_YES; /* woken early; the writer has not answered yet */
    if (r->too_big) {
        api_respond_error(r, 413, "too_large", "the body is over the limit of %zu bytes",
                          ctx->max_body_bytes);
        return send_response(c, r);
    }
    if (r->over_budget) {
        snprintf(r->retry_after, sizeof r->retry_after, "1");
        api_respond_error(r, 503, "busy",
                          "too many request bodies are being received at once; try again");
        return send_response(c, r);
    }
    /* Suspend before dispatching: the writer may answer before this function returns. */
    r->state = REQ_WAITING;
    r->was_suspended = true;
    atomic_fetch_add(&ctx->suspended, 1);
    MHD_suspend_connection(c);
    if (api_dispatch(r)) {
        r->state = REQ_DONE;
        MHD_resume_connection(c);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    struct api_request *r = *con_cls;
    if (r == NULL)
        return;
    atomic_fetch_sub(&r->ctx->body_bytes, r->budgeted_bytes);
    /* The connection may carry another request: the keep-alive idle timeout again. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, IDLE_TIMEOUT_S);
    buf_release(&r->body);
    free(r->response);
    free(r);
    *con_cls = NULL;
}

ch_code api_server_start(struct api_context *ctx, const char *listen, struct api_server **out,
                         struct ch_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ch_code rc = listen_parse(listen, &ss, &len, err);
    if (rc != CH_OK)
        return rc;
    struct api_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, ctx, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_THREAD_POOL_SIZE, 2u,
        MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_PER_IP_CONNECTION_LIMIT, PER_IP_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(16 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (s->daemon == NULL) {
        free(s);
        return ch_error_set(err, CH_EIO, "cannot listen on '%s' (in use, or not an address here)",
                            listen);
    }
    *out = s;
    return CH_OK;
}

void api_server_stop(struct api_server *s, struct api_context *ctx)
{
    if (s == NULL)
        return;
    /* Stopping MHD with a connection still suspended aborts: wait (bounded) until every
     * resumed request has been answered. */
    for (int i = 0; i < 500 && atomic_load(&ctx->suspended) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(s->daemon);
    free(s);
}
