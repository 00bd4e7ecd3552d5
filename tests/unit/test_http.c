/* The HTTP front serve and receive share, driven over raw sockets on 127.0.0.1 like a hostile
 * client would: refusals from the headers before the body is read, the body cap declared and
 * not declared, the body budget shared by every connection, an answer set from another thread
 * on a suspended request (and the connection reused after it), stop waiting for such an answer,
 * both JSON error forms, and a handler that forgets to answer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/http.h"

#define MAX_BODY 1000

/* ---- a handler whose behaviour each test picks ---- */

struct probe {
    atomic_int headers_seen;
    atomic_int requests_seen;
    bool answer_later; /* from another thread, after later_ms */
    int later_ms;
    bool forget_answer;
    bool state_was_zero;
};

struct later {
    struct http_request *r;
    int ms;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *answer_later(void *arg)
{
    struct later *l = arg;
    sleep_ms(l->ms);
    char body[64];
    int n = snprintf(body, sizeof body, "{\"len\":%zu}", l->r->body.len);
    http_respond(l->r, 202, "application/json", body, (size_t)n);
    http_resume(l->r);
    free(l);
    return NULL;
}

struct test_state {
    int marker;
};

static bool on_headers(void *ctx, struct http_request *r)
{
    struct probe *p = ctx;
    atomic_fetch_add(&p->headers_seen, 1);
    struct test_state *st = r->state;
    p->state_was_zero = st->marker == 0;
    st->marker = 42;
    if (http_header(r, "X-Refuse")) {
        http_respond_error(r, 401, "unauthorized", "refused \"%s\"\x01",
                           http_header(r, "X-Refuse"));
        return true;
    }
    return false;
}

static bool on_request(void *ctx, struct http_request *r)
{
    struct probe *p = ctx;
    atomic_fetch_add(&p->requests_seen, 1);
    assert_int_equal(((struct test_state *)r->state)->marker, 42);
    if (p->forget_answer)
        return true;
    if (p->answer_later) {
        struct later *l = malloc(sizeof *l);
        assert_non_null(l);
        *l = (struct later){r, p->later_ms};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, answer_later, l), 0);
        pthread_detach(t);
        return false;
    }
    char body[64];
    int n = snprintf(body, sizeof body, "{\"len\":%zu}", r->body.len);
    http_respond(r, 200, "application/json", body, (size_t)n);
    return true;
}

static struct http_server *start(struct probe *p, enum http_error_form form, size_t budget)
{
    struct http_config c = {.listen = "127.0.0.1:0",
                            .max_body_bytes = MAX_BODY,
                            .body_budget_bytes = budget,
                            .connection_memory = 16 * 1024,
                            .errors = form};
    struct http_handler h = {.on_headers = on_headers,
                             .on_request = on_request,
                             .ctx = p,
                             .state_bytes = sizeof(struct test_state)};
    struct http_server *s = NULL;
    struct ch_error err = {0};
    assert_int_equal(http_server_start(&c, &h, &s, &err), CH_OK);
    assert_true(http_server_port(s) > 0);
    return s;
}

/* ---- a raw client ---- */

static int client(struct http_server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)http_server_port(s))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        data += n;
        len -= (size_t)n;
    }
}

static void send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

/* Reads one answer (headers and a Content-Length body) within timeout_ms; returns its status,
 * 0 when none came. */
static int read_answer(int fd, char *out, size_t cap, int timeout_ms)
{
    size_t len = 0;
    out[0] = '\0';
    for (;;) {
        char *end = strstr(out, "\r\n\r\n");
        if (end) {
            const char *cl = strstr(out, "Content-Length:");
            size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
            if (len >= (size_t)(end + 4 - out) + want)
                break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, timeout_ms) <= 0)
            return 0;
        ssize_t n = recv(fd, out + len, cap - 1 - len, 0);
        if (n <= 0)
            return 0;
        len += (size_t)n;
        out[len] = '\0';
    }
    int status = 0;
    sscanf(out, "HTTP/1.1 %d", &status);
    return status;
}

static const char *body_of(const char *answer)
{
    const char *end = strstr(answer, "\r\n\r\n");
    return end ? end + 4 : "";
}

/* ---- tests ---- */

static void refused_from_its_headers_before_the_body(void **state)
{
    (void)state;
    struct probe p = {0};
    struct http_server *s = start(&p, HTTP_ERROR_CODED, 1 << 20);
    int fd = client(s);
    /* Declares a body and sends none of it: the answer must not wait for it. */
    send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nX-Refuse: no\"key\r\nContent-Length: 900\r\n\r\n");
    char a[4096];
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 401);
    assert_string_equal(body_of(a), "{\"error\":{\"code\":\"unauthorized\",\"message\":\"refused "
                                    "\\\"no\\\"key\\\"\\u0001\"}}");
    assert_int_equal(atomic_load(&p.requests_seen), 0);
    assert_true(p.state_was_zero);
    close(fd);
    http_server_stop(s);
}

static void declared_oversize_body_is_refused_unread(void **state)
{
    (void)state;
    struct probe p = {0};
    struct http_server *s = start(&p, HTTP_ERROR_STATUS, 1 << 20);
    int fd = client(s);
    send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n");
    char a[4096];
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 413);
    assert_string_equal(
        body_of(a), "{\"status\":413,\"message\":\"the body is over the limit of 1000 bytes\"}");
    assert_int_equal(atomic_load(&p.requests_seen), 0);
    close(fd);
    http_server_stop(s);
}

static void chunked_body_over_the_cap_is_refused(void **state)
{
    (void)state;
    struct probe p = {0};
    struct http_server *s = start(&p, HTTP_ERROR_CODED, 1 << 20);
    int fd = client(s);
    send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[700];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 2; i++) {
        send_str(fd, "2bc\r\n"); /* 700 */
        send_all(fd, chunk, sizeof chunk);
        send_str(fd, "\r\n");
    }
    send_str(fd, "0\r\n\r\n");
    char a[4096];
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 413);
    assert_non_null(strstr(body_of(a), "\"code\":\"too_large\""));
    assert_int_equal(atomic_load(&p.requests_seen), 0);
    close(fd);

    /* At the cap exactly, it reaches the handler whole. */
    fd = client(s);
    send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    char full[MAX_BODY];
    memset(full, 'y', sizeof full);
    send_all(fd, full, sizeof full);
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 200);
    assert_string_equal(body_of(a), "{\"len\":1000}");
    close(fd);
    http_server_stop(s);
}

static void body_budget_is_shared_and_given_back(void **state)
{
    (void)state;
    struct probe p = {0};
    struct http_server *s = start(&p, HTTP_ERROR_CODED, 1500);
    char body[MAX_BODY];
    memset(body, 'z', sizeof body);
    /* One upload holds 900 bytes of the 1,500 and stalls. */
    int slow = client(s);
    send_str(slow, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    send_all(slow, body, 900);
    sleep_ms(200);
    /* Another whole body does not fit beside it: 503 with Retry-After, nothing handled. */
    int fd = client(s);
    send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    send_all(fd, body, sizeof body);
    char a[4096];
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 503);
    assert_non_null(strstr(a, "Retry-After: 1"));
    assert_non_null(strstr(body_of(a), "\"code\":\"busy\""));
    close(fd);
    assert_int_equal(atomic_load(&p.requests_seen), 0);
    /* The stalled one completes; once answered, its bytes are given back. */
    send_all(slow, body, 100);
    assert_int_equal(read_answer(slow, a, sizeof a, 3000), 200);
    close(slow);
    sleep_ms(100);
    fd = client(s);
    send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    send_all(fd, body, sizeof body);
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 200);
    close(fd);
    http_server_stop(s);
}

static void answered_from_another_thread_on_a_reused_connection(void **state)
{
    (void)state;
    struct probe p = {.answer_later = true, .later_ms = 50};
    struct http_server *s = start(&p, HTTP_ERROR_CODED, 1 << 20);
    int fd = client(s);
    char a[4096];
    for (int i = 0; i < 3; i++) { /* the same keep-alive connection each time */
        send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_int_equal(read_answer(fd, a, sizeof a, 3000), 202);
        assert_string_equal(body_of(a), "{\"len\":5}");
        assert_true(p.state_was_zero); /* each request its own state */
    }
    close(fd);
    http_server_stop(s);
}

static void stop_waits_for_a_suspended_answer(void **state)
{
    (void)state;
    struct probe p = {.answer_later = true, .later_ms = 400};
    struct http_server *s = start(&p, HTTP_ERROR_CODED, 1 << 20);
    int fd = client(s);
    send_str(fd, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok");
    while (atomic_load(&p.requests_seen) == 0)
        sleep_ms(5);
    http_server_stop(s); /* returns only once the answer set 400 ms later has been sent */
    char a[4096];
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 202);
    close(fd);
}

static void a_request_left_unanswered_is_a_500(void **state)
{
    (void)state;
    struct probe p = {.forget_answer = true};
    struct http_server *s = start(&p, HTTP_ERROR_STATUS, 1 << 20);
    int fd = client(s);
    send_str(fd, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    char a[4096];
    assert_int_equal(read_answer(fd, a, sizeof a, 3000), 500);
    assert_string_equal(body_of(a), "{\"status\":500,\"message\":\"no answer was set\"}");
    close(fd);
    http_server_stop(s);
}

static void json_quote_escapes_and_stays_within_its_buffer(void **state)
{
    (void)state;
    char out[64];
    size_t q = http_json_quote("a\"b\\c\n\x7f", out, sizeof out);
    assert_int_equal(q, strlen(out));
    assert_string_equal(out, "\"a\\\"b\\\\c\\u000a\\u007f\"");
    char big[300];
    memset(big, '\x01', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    size_t n = http_json_quote(big, out, sizeof out);
    assert_true(n < sizeof out);
    assert_int_equal(out[0], '"');
    assert_int_equal(out[n - 1], '"');
    assert_int_equal(out[n], '\0');
    assert_int_equal((n - 2) % 6, 0); /* only whole escapes */
}

static void a_bad_listen_address_is_an_error(void **state)
{
    (void)state;
    struct probe p = {0};
    struct http_config c = {.listen = "nowhere:80", .max_body_bytes = 10, .body_budget_bytes = 10};
    struct http_handler h = {.on_headers = on_headers, .on_request = on_request, .ctx = &p};
    struct http_server *s = NULL;
    struct ch_error err = {0};
    assert_int_not_equal(http_server_start(&c, &h, &s, &err), CH_OK);
    assert_null(s);
    assert_true(err.message[0] != '\0');
}

/* A port another server holds: the error says the port is in use, and nothing of
 * libmicrohttpd's own ("Failed to bind to port 0") reaches stderr (issue 15, point 15). */
static void a_busy_port_says_so(void **state)
{
    struct probe p = {0};
    struct http_server *first = start(&p, HTTP_ERROR_CODED, 1 << 20);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", http_server_port(first));
    struct http_config c = {.listen = listen, .max_body_bytes = 10, .body_budget_bytes = 10};
    struct http_handler h = {.on_headers = on_headers, .on_request = on_request, .ctx = &p};
    struct http_server *s = NULL;
    struct ch_error err = {0};
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    char path[] = "/tmp/callhook-test-http-XXXXXX";
    int out = mkstemp(path);
    assert_true(saved >= 0 && out >= 0);
    dup2(out, STDERR_FILENO);
    ch_code rc = http_server_start(&c, &h, &s, &err);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char said[512] = {0};
    ssize_t n = pread(out, said, sizeof said - 1, 0);
    close(out);
    unlink(path);
    assert_int_equal(rc, CH_EIO);
    assert_null(s);
    assert_non_null(strstr(err.message, "the port is in use"));
    assert_non_null(strstr(err.message, listen));
    assert_int_equal(n, 0);
    http_server_stop(first);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refused_from_its_headers_before_the_body),
        cmocka_unit_test(declared_oversize_body_is_refused_unread),
        cmocka_unit_test(chunked_body_over_the_cap_is_refused),
        cmocka_unit_test(body_budget_is_shared_and_given_back),
        cmocka_unit_test(answered_from_another_thread_on_a_reused_connection),
        cmocka_unit_test(stop_waits_for_a_suspended_answer),
        cmocka_unit_test(a_request_left_unanswered_is_a_500),
        cmocka_unit_test(json_quote_escapes_and_stays_within_its_buffer),
        cmocka_unit_test(a_bad_listen_address_is_an_error),
        cmocka_unit_test(a_busy_port_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
