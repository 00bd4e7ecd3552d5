/* The forward sink driven directly, against a local Python HTTP server (127.0.0.1) that fails
 * the first try of half the events (500, a stall past the timeout, a reset, 503 with
 * Retry-After): process() looped on what is not done until all is; every event arrived byte
 * for byte with a signature that verifies with the forward key, over reused connections. Also
 * interrupt(), a sink without a key, HTTPS verified against --forward-ca, and URLs refused at
 * open(). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <callhook/record.h>
#include <callhook/signature.h>
#include <jansson.h>

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "receive/receiver.h"
#include "receive/sink.h"
#include "util/clock.h"

#define NEVENTS 40

static const char *const payload_files[] = {
    "begin-call.json",           "begin-call-camelcase.json",   "begin-call-outbound-minimal.json",
    "end-call-answered.json",    "end-call-future-fields.json", "end-call-missed.json",
    "end-call-transferred.json", "end-call-voicemail.json"};
#define NPAYLOADS (sizeof payload_files / sizeof payload_files[0])

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(1 << 18);
    size_t n = buf ? fread(buf, 1, (1 << 18) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static void make_events(struct ch_inbox_entry *e, size_t n)
{
    const char *dir = getenv("CALLHOOK_PAYLOADS_DIR");
    if (dir == NULL)
        dir = CALLHOOK_PAYLOADS_DIR;
    for (size_t i = 0; i < n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, payload_files[i % NPAYLOADS]);
        e[i].body = read_all(path, &e[i].body_len);
        assert_non_null(e[i].body);
        struct ch_record rec;
        assert_int_equal(ch_record_parse(&rec, e[i].body, e[i].body_len, 0, NULL), CH_OK);
        e[i].seq = (long long)i + 1;
        snprintf(e[i].webhook_id, sizeof e[i].webhook_id, "msg_fwd_%03zu", i);
        snprintf(e[i].event, sizeof e[i].event, "%s",
                 strncmp(payload_files[i % NPAYLOADS], "begin", 5) == 0 ? "begin-call"
                                                                        : "end-call");
        e[i].has_call_type = rec.call_type_kind != CH_CALL_TYPE_ABSENT;
        e[i].call_type = rec.call_type;
        e[i].received_at = 1795770843 + (long long)i;
        e[i].attempts = 1;
    }
}

static void free_events(struct ch_inbox_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].body);
}

/* The server: HTTP/1.1 keep-alive, one thread per connection, every request logged as a JSON
 * line (its connection's number, headers, body in hex, what it was answered). The first try of
 * each odd-numbered event fails, in turn: 500, a stall past the client's timeout, a reset
 * (RST), 503 with Retry-After: 2 (on the plain HTTP server; the TLS one answers all). A
 * request to /stall always stalls. */
static const char server_py[] =
    "import http.server, socketserver, socket, struct, sys, json, threading, time, os\n"
    "state, name = sys.argv[1], sys.argv[2]\n"
    "lock = threading.Lock()\n"
    "conns, tries = [0], {}\n"
    "log = open(state + '/requests-' + name + '.jsonl', 'a')\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "    def log_message(self, *a):\n"
    "        pass\n"
    "    def setup(self):\n"
    "        super().setup()\n"
    "        with lock:\n"
    "            conns[0] += 1\n"
    "            self.conn = conns[0]\n"
    "    def do_POST(self):\n"
    "        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))\n"
    "        wid = self.headers.get('webhook-id', '')\n"
    "        with lock:\n"
    "            k = tries.get(wid, 0)\n"
    "            tries[wid] = k + 1\n"
    "        idx = int(wid.rsplit('_', 1)[1]) if wid.startswith('msg_fwd_') else 0\n"
    "        mode = 'ok'\n"
    "        if self.path == '/stall':\n"
    "            mode = 'stall'\n"
    "        elif k == 0 and idx % 2 == 1 and name == 'plain':\n"
    "            mode = ['500', 'stall', 'reset', '503'][(idx // 2) % 4]\n"
    "        h = self.headers\n"
    "        entry = {'conn': self.conn, 'mode': mode, 'path': self.path, 'id': wid,\n"
    "                 'ts': h.get('webhook-timestamp', ''), 'sig': h.get('webhook-signature', "
    "''),\n"
    "                 'event': h.get('X-Callhook-Event', ''), 'ctype': h.get('Content-Type', ''),\n"
    "                 'body': body.hex()}\n"
    "        with lock:\n"
    "            log.write(json.dumps(entry) + '\\n')\n"
    "            log.flush()\n"
    "        if mode == 'stall':\n"
    "            time.sleep(3)\n"
    "            self.close_connection = True\n"
    "            return\n"
    "        if mode == 'reset':\n"
    "            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,\n"
    "                                       struct.pack('ii', 1, 0))\n"
    "            self.connection.close()\n"
    "            self.close_connection = True\n"
    "            return\n"
    "        code = {'ok': 200, '500': 500, '503': 503}[mode]\n"
    "        text = b'{\"status\":\"' + mode.encode() + b'\"}'\n"
    "        self.send_response(code)\n"
    "        self.send_header('Content-Length', str(len(text)))\n"
    "        if code == 503:\n"
    "            self.send_header('Retry-After', '2')\n"
    "        self.end_headers()\n"
    "        self.wfile.write(text)\n"
    "class S(socketserver.ThreadingMixIn, http.server.HTTPServer):\n"
    "    daemon_threads = True\n"
    "    request_queue_size = 128\n"
    "    def handle_error(self, request, address):\n"
    "        pass\n"
    "srv = S(('127.0.0.1', 0), H)\n"
    "if name == 'tls':\n"
    "    import ssl\n"
    "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "    ctx.load_cert_chain(state + '/server.pem', state + '/server.key')\n"
    "    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n"
    "open(state + '/port.tmp', 'w').write(str(srv.server_address[1]))\n"
    "os.rename(state + '/port.tmp', state + '/port-' + name)\n"
    "srv.serve_forever()\n";

/* A CA and a certificate for 127.0.0.1 that it signed, for the TLS server. */
static const char make_pki_sh[] =
    "set -e; cd \"$1\"\n"
    "ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'\n"
    "openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj '/CN=callhook test ca' "
    "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign\n"
    "printf 'basicConstraints=CA:FALSE\\nsubjectAltName=IP:127.0.0.1\\n"
    "extendedKeyUsage=serverAuth\\n' > server.ext\n"
    "openssl req -new $ec -keyout server.key -out server.csr -subj '/CN=127.0.0.1'\n"
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 2 "
    "-extfile server.ext -out server.pem\n";

static char tmpdir[256];
static pid_t server_pid, tls_server_pid;
static int server_port, tls_server_port;

static pid_t start_one(const char *name, int *port)
{
    char path[512];
    snprintf(path, sizeof path, "%s/server.py", tmpdir);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("python3", "python3", path, tmpdir, name, (char *)NULL);
        _exit(127);
    }
    snprintf(path, sizeof path, "%s/port-%s", tmpdir, name);
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            int ok = fscanf(f, "%d", port);
            fclose(f);
            return ok == 1 ? pid : -1;
        }
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int start_servers(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/callhook-test-forward-XXXXXX");
    if (mkdtemp(tmpdir) == NULL || write_file("server.py", server_py) != 0 ||
        write_file("pki.sh", make_pki_sh) != 0)
        return -1;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sh '%s/pki.sh' '%s' 2>/dev/null", tmpdir, tmpdir);
    if (system(cmd) != 0)
        return -1;
    server_pid = start_one("plain", &server_port);
    tls_server_pid = start_one("tls", &tls_server_port);
    return server_pid > 0 && tls_server_pid > 0 ? 0 : -1;
}

static int stop_servers(void **state)
{
    (void)state;
    kill(server_pid, SIGTERM);
    waitpid(server_pid, NULL, 0);
    kill(tls_server_pid, SIGTERM);
    waitpid(tls_server_pid, NULL, 0);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct receive_config *config(int timeout_ms, int in_flight, bool with_key)
{
    struct receive_config *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->forward_timeout_ms = timeout_ms;
    c->forward_max_in_flight = in_flight;
    if (with_key) {
        assert_int_equal(ch_secret_generate(&c->forward_key, CH_KEY_HMAC, 32, NULL), CH_OK);
        c->has_forward_key = true;
    }
    return c;
}

/* The requests the server logged, in order; the caller frees with json_decref. */
static json_t *read_requests_of(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/requests-%s.jsonl", tmpdir, name);
    size_t len = 0;
    char *text = read_all(path, &len);
    assert_non_null(text);
    json_t *all = json_array();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        json_array_append_new(all, j);
    }
    free(text);
    return all;
}

static json_t *read_requests(void)
{
    return read_requests_of("plain");
}

static bool hex_is(const char *hex, const void *bytes, size_t len)
{
    if (strlen(hex) != 2 * len)
        return false;
    const unsigned char *b = bytes;
    for (size_t i = 0; i < len; i++) {
        unsigned v = 0;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1 || v != b[i])
            return false;
    }
    return true;
}

static void test_forward_through_failures(void **state)
{
    (void)state;
    struct ch_inbox_entry events[NEVENTS];
    make_events(events, NEVENTS);
    struct receive_config *c = config(1000, 8, true);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/calls", server_port);
    struct sink *s = NULL;
    struct ch_error err = {0};
    assert_int_equal(sink_forward_ops.open(url, c, &s, &err), CH_OK);
    assert_int_equal(sink_forward_ops.batch_max(s), 8);

    bool done[NEVENTS] = {false};
    bool saw_500 = false, saw_timeout = false, saw_reset = false, saw_503 = false;
    int rounds = 0, left = NEVENTS;
    while (left > 0 && rounds++ < 5) {
        /* As the dispatcher would: what is not done, batch_max at a time. */
        size_t todo[NEVENTS], n = 0;
        for (size_t i = 0; i < NEVENTS; i++) {
            if (!done[i])
                todo[n++] = i;
        }
        for (size_t from = 0; from < n; from += 8) {
            size_t m = n - from < 8 ? n - from : 8;
            struct ch_inbox_entry batch[8];
            struct sink_result res[8];
            for (size_t k = 0; k < m; k++)
                batch[k] = events[todo[from + k]];
            sink_forward_ops.process(s, batch, m, res);
            for (size_t k = 0; k < m; k++) {
                size_t i = todo[from + k];
                assert_int_not_equal(res[k].outcome, SINK_FAILED);
                if (res[k].outcome == SINK_DONE) {
                    done[i] = true;
                    left--;
                    continue;
                }
                /* The first try of an odd event fails; nothing else does. */
                if (i % 2 != 1 || rounds != 1)
                    fail_msg("event %zu failed in round %d: %s", i, rounds, res[k].error);
                const char *e = res[k].error;
                bool expected = false;
                switch ((i / 2) % 4) {
                case 0:
                    expected = saw_500 = strstr(e, "answered 500") != NULL;
                    break;
                case 1:
                    expected = saw_timeout = strstr(e, "timed out after 1000 ms") != NULL;
                    break;
                case 2:
                    expected = saw_reset = strstr(e, "cannot forward") != NULL;
                    break;
                default:
                    expected = saw_503 =
                        strstr(e, "answered 503") != NULL && res[k].retry_after_ms == 2000;
                    break;
                }
                if (!expected)
                    fail_msg("event %zu: unexpected reason '%s' (retry after %lld ms)", i, e,
                             res[k].retry_after_ms);
            }
        }
    }
    assert_int_equal(left, 0);
    assert_int_equal(rounds, 2);
    assert_true(saw_500 && saw_timeout && saw_reset && saw_503);

    /* What the server got: every try signed with the forward key over the exact body, the
     * webhook-id and event passed on; each event answered 200 exactly once. */
    json_t *reqs = read_requests();
    struct ch_verifier v = {.keys = &c->forward_key, .nkeys = 1};
    int oks[NEVENTS] = {0};
    long long max_conn = 0;
    size_t nreq = json_array_size(reqs);
    for (size_t r = 0; r < nreq; r++) {
        json_t *q = json_array_get(reqs, r);
        const char *id = json_string_value(json_object_get(q, "id"));
        int i = -1;
        assert_int_equal(sscanf(id, "msg_fwd_%d", &i), 1);
        assert_true(i >= 0 && i < NEVENTS);
        const struct ch_inbox_entry *e = &events[i];
        if (!hex_is(json_string_value(json_object_get(q, "body")), e->body, e->body_len))
            fail_msg("event %d did not arrive byte for byte", i);
        ch_code rc =
            ch_verify(&v, id, json_string_value(json_object_get(q, "ts")),
                      json_string_value(json_object_get(q, "sig")), e->body, e->body_len, &err);
        if (rc != CH_OK)
            fail_msg("event %d: the forward signature does not verify: %s", i, err.message);
        assert_string_equal(json_string_value(json_object_get(q, "event")), e->event);
        assert_string_equal(json_string_value(json_object_get(q, "ctype")), "application/json");
        assert_string_equal(json_string_value(json_object_get(q, "path")), "/calls");
        if (strcmp(json_string_value(json_object_get(q, "mode")), "ok") == 0)
            oks[i]++;
        long long conn = json_integer_value(json_object_get(q, "conn"));
        max_conn = conn > max_conn ? conn : max_conn;
    }
    for (int i = 0; i < NEVENTS; i++)
        assert_int_equal(oks[i], 1);
    assert_int_equal(nreq, NEVENTS + NEVENTS / 2);
    /* Keep-alive: 60 requests over at most 8 connections at once, a new one only after a
     * stall or a reset closed one (5 each). */
    print_message("%zu requests over %lld connections\n", nreq, max_conn);
    if (!(max_conn <= 8 + 10 + 2 && max_conn * 2 < (long long)nreq))
        fail_msg("%lld connections for %zu requests: connections were not reused", max_conn, nreq);
    json_decref(reqs);

    /* The next batch reuses the pool: no new connection for a request that succeeds. */
    struct sink_result res[1];
    sink_forward_ops.process(s, &events[0], 1, res);
    assert_int_equal(res[0].outcome, SINK_DONE);
    reqs = read_requests();
    json_t *last = json_array_get(reqs, json_array_size(reqs) - 1);
    assert_true(json_integer_value(json_object_get(last, "conn")) <= max_conn);
    json_decref(reqs);
    sink_forward_ops.close(s);

    /* Without a forward key: the webhook-id alone, no timestamp or signature of ours. */
    struct receive_config *plain = config(2000, 2, false);
    assert_int_equal(sink_forward_ops.open(url, plain, &s, &err), CH_OK);
    sink_forward_ops.process(s, &events[2], 1, res);
    assert_int_equal(res[0].outcome, SINK_DONE);
    reqs = read_requests();
    last = json_array_get(reqs, json_array_size(reqs) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "id")), events[2].webhook_id);
    assert_string_equal(json_string_value(json_object_get(last, "sig")), "");
    assert_string_equal(json_string_value(json_object_get(last, "ts")), "");
    json_decref(reqs);
    sink_forward_ops.close(s);

    free(plain);
    ch_secret_wipe(&c->forward_key);
    free(c);
    free_events(events, NEVENTS);
}

struct interrupter {
    struct sink *s;
    int after_ms;
};

static void *interrupt_later(void *arg)
{
    struct interrupter *it = arg;
    struct timespec ts = {0, it->after_ms * 1000000L};
    nanosleep(&ts, NULL);
    sink_forward_ops.interrupt(it->s);
    return NULL;
}

/* interrupt() from another thread ends requests in flight at once: given back to retry. */
static void test_interrupt(void **state)
{
    (void)state;
    struct ch_inbox_entry events[4];
    make_events(events, 4);
    struct receive_config *c = config(10000, 2, true);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stall", server_port);
    struct sink *s = NULL;
    assert_int_equal(sink_forward_ops.open(url, c, &s, NULL), CH_OK);
    struct sink_result res[4];
    struct interrupter it = {s, 300};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, interrupt_later, &it), 0);
    long long t0 = clock_mono_ms();
    sink_forward_ops.process(s, events, 4, res);
    long long took = clock_mono_ms() - t0;
    pthread_join(t, NULL);
    assert_true(took >= 250 && took < 2500); /* the server stalls 3 s */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res[i].outcome, SINK_GIVEN_BACK);
        assert_non_null(strstr(res[i].error, "interrupted"));
    }
    sink_forward_ops.close(s);
    ch_secret_wipe(&c->forward_key);
    free(c);
    free_events(events, 4);
}

/* HTTPS: the certificate is verified, against --forward-ca when given; without it, the test
 * CA is unknown and nothing is sent. */
static void test_tls(void **state)
{
    (void)state;
    struct ch_inbox_entry events[2];
    make_events(events, 2);
    struct receive_config *c = config(5000, 2, true);
    char url[128];
    snprintf(url, sizeof url, "https://127.0.0.1:%d/calls", tls_server_port);
    struct sink *s = NULL;
    struct ch_error err = {0};
    struct sink_result res[2];

    assert_int_equal(sink_forward_ops.open(url, c, &s, &err), CH_OK);
    sink_forward_ops.process(s, events, 2, res);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(res[i].outcome, SINK_RETRY);
        if (strstr(res[i].error, "certificate") == NULL)
            fail_msg("an unknown CA was not refused: %s", res[i].error);
    }
    sink_forward_ops.close(s);

    snprintf(c->forward_ca, sizeof c->forward_ca, "%s/ca.pem", tmpdir);
    assert_int_equal(sink_forward_ops.open(url, c, &s, &err), CH_OK);
    sink_forward_ops.process(s, events, 2, res);
    for (int i = 0; i < 2; i++) {
        if (res[i].outcome != SINK_DONE)
            fail_msg("with the CA: %s", res[i].error);
    }
    sink_forward_ops.close(s);
    json_t *reqs = read_requests_of("tls");
    assert_int_equal(json_array_size(reqs), 2); /* the refused handshakes sent nothing */
    for (size_t r = 0; r < 2; r++) {
        json_t *q = json_array_get(reqs, r);
        const char *id = json_string_value(json_object_get(q, "id"));
        const struct ch_inbox_entry *e =
            strcmp(id, events[0].webhook_id) == 0 ? &events[0] : &events[1];
        assert_true(hex_is(json_string_value(json_object_get(q, "body")), e->body, e->body_len));
    }
    json_decref(reqs);
    ch_secret_wipe(&c->forward_key);
    free(c);
    free_events(events, 2);
}

/* A URL that is not http(s), or not a URL, and a CA file that is not there: refused at open. */
static void test_open_refuses(void **state)
{
    (void)state;
    struct receive_config *c = config(1000, 4, false);
    struct sink *s = NULL;
    struct ch_error err = {0};
    const char *bad[] = {
        "ftp://127.0.0.1/calls", "127.0.0.1:8080/calls", "file:///etc/passwd", "", "http://",
        "https://[::1/calls"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.message[0] = '\0';
        if (sink_forward_ops.open(bad[i], c, &s, &err) != CH_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(err.message[0] != '\0');
        assert_null(s);
    }
    assert_int_equal(sink_forward_ops.open("ftp://127.0.0.1/calls", c, &s, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "only http:// and https://"));
    snprintf(c->forward_ca, sizeof c->forward_ca, "/nonexistent/ca.pem");
    assert_int_equal(sink_forward_ops.open("https://127.0.0.1:8443/calls", c, &s, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "/nonexistent/ca.pem"));
    c->forward_ca[0] = '\0';
    assert_int_equal(sink_forward_ops.open("HTTPS://events.internal:8443/calls", c, &s, &err),
                     CH_OK);
    assert_int_equal(sink_forward_ops.batch_max(s), 4);
    sink_forward_ops.close(s);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_through_failures),
        cmocka_unit_test(test_interrupt),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_open_refuses),
    };
    return cmocka_run_group_tests(tests, start_servers, stop_servers);
}
