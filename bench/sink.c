/*
 * ch-bench-sink: a bare libmicrohttpd receiver that answers 200 to every POST and counts. With
 * a secret it verifies each delivery's Standard Webhooks signature (401 when it fails); it
 * counts each BenchSeq once (duplicates apart) and keeps the latency from the record's
 * BenchSentUs to arrival. The bench reads and resets it over /_bench/ on the same port. With
 * --answer-202 it answers like callhook's ingest (202 and a messageId), so ch-bench-load can
 * measure the bare libmicrohttpd limit the way it measures callhook serve.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <callhook/signature.h>

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BODY_MAX (64 * 1024)

struct sink {
    struct MHD_Response *ok, *unauthorized, *too_big;
    unsigned ok_status;          /* 200, or 202 with --answer-202 */
    pthread_mutex_t config_lock; /* guards key and verify, which /_bench/secret changes */
    struct ch_secret key;
    bool verify;
    /* counters since the last reset */
    atomic_uint_fast64_t requests, verified, bad_signature, unique, duplicates, no_seq;
    atomic_int_fast64_t first_us, last_us, mark_us;
    /* BenchSeq values seen: one bit each */
    _Atomic uint64_t *seen;
    size_t max_seq;
    /* arrival minus BenchSentUs, microseconds, first arrival of each seq only */
    uint32_t *samples;
    atomic_size_t nsamples;
    size_t max_samples;
};

struct request {
    size_t len;
    bool too_big;
    char body[];
};

static struct MHD_Response *fixed_response(const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

static void sink_reset(struct sink *s)
{
    atomic_store(&s->requests, 0);
    atomic_store(&s->verified, 0);
    atomic_store(&s->bad_signature, 0);
    atomic_store(&s->unique, 0);
    atomic_store(&s->duplicates, 0);
    atomic_store(&s->no_seq, 0);
    atomic_store(&s->first_us, 0);
    atomic_store(&s->last_us, 0);
    for (size_t i = 0; i < (s->max_seq + 63) / 64; i++)
        atomic_store_explicit(&s->seen[i], 0, memory_order_relaxed);
    atomic_store(&s->nsamples, 0);
    atomic_store(&s->mark_us, bench_now_us());
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* One line of name=value pairs: easy for a shell to read. */
static enum MHD_Result send_stats(struct sink *s, struct MHD_Connection *c)
{
    size_t n = atomic_load(&s->nsamples);
    if (n > s->max_samples)
        n = s->max_samples;
    uint32_t p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
    const char *pct = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "pct");
    if (n > 0 && (pct == NULL || strcmp(pct, "0") != 0)) {
        uint32_t *copy = malloc(n * sizeof *copy);
        if (copy != NULL) {
            memcpy(copy, s->samples, n * sizeof *copy);
            qsort(copy, n, sizeof *copy, cmp_u32);
            p50 = bench_percentile_sorted(copy, n, 50);
            p90 = bench_percentile_sorted(copy, n, 90);
            p99 = bench_percentile_sorted(copy, n, 99);
            p999 = bench_percentile_sorted(copy, n, 99.9);
            max = copy[n - 1];
            free(copy);
        }
    }
    char text[1024];
    snprintf(text, sizeof text,
             "requests=%" PRIuFAST64 " verified=%" PRIuFAST64 " bad_signature=%" PRIuFAST64
             " unique=%" PRIuFAST64 " duplicates=%" PRIuFAST64 " no_seq=%" PRIuFAST64
             " first_us=%" PRIdFAST64 " last_us=%" PRIdFAST64 " mark_us=%" PRIdFAST64
             " now_us=%" PRId64 " samples=%zu p50_us=%" PRIu32 " p90_us=%" PRIu32 " p99_us=%" PRIu32
             " p999_us=%" PRIu32 " max_us=%" PRIu32 " verify=%d\n",
             atomic_load(&s->requests), atomic_load(&s->verified), atomic_load(&s->bad_signature),
             atomic_load(&s->unique), atomic_load(&s->duplicates), atomic_load(&s->no_seq),
             atomic_load(&s->first_us), atomic_load(&s->last_us), atomic_load(&s->mark_us),
             bench_now_us(), n, p50, p90, p99, p999, max, s->verify ? 1 : 0);
    return send_text(c, 200, text);
}

static enum MHD_Result control(struct sink *s, struct MHD_Connection *c, const char *url,
                               const char *method, struct request *r)
{
    if (strcmp(url, "/_bench/stats") == 0)
        return send_stats(s, c);
    if (strcmp(url, "/_bench/reset") == 0 && strcmp(method, "POST") == 0) {
        sink_reset(s);
        return send_text(c, 200, "reset\n");
    }
    if (strcmp(url, "/_bench/secret") == 0 && strcmp(method, "POST") == 0) {
        char text[CH_SECRET_TEXT_MAX + 8];
        size_t len = r->len < sizeof text - 1 ? r->len : sizeof text - 1;
        memcpy(text, r->body, len);
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
            len--;
        text[len] = '\0';
        struct ch_secret key;
        struct ch_error err = {0};
        if (len == 0) {
            pthread_mutex_lock(&s->config_lock);
            s->verify = false;
            pthread_mutex_unlock(&s->config_lock);
            return send_text(c, 200, "verify off\n");
        }
        if (ch_secret_parse(&key, text, &err) != CH_OK)
            return send_text(c, 400, err.message);
        pthread_mutex_lock(&s->config_lock);
        s->key = key;
        s->verify = true;
        pthread_mutex_unlock(&s->config_lock);
        return send_text(c, 200, "verify on\n");
    }
    return send_text(c, 404, "unknown control path\n");
}

static void note_arrival(struct sink *s, int64_t now)
{
    int_fast64_t zero = 0;
    atomic_compare_exchange_strong(&s->first_us, &zero, now);
    int_fast64_t last = atomic_load(&s->last_us);
    while (last < now && !atomic_compare_exchange_weak(&s->last_us, &last, now))
        ;
}

static enum MHD_Result deliver(struct sink *s, struct MHD_Connection *c, struct request *r)
{
    int64_t now = bench_now_us();
    atomic_fetch_add(&s->requests, 1);
    /* A copy of the key, so verifying holds no lock. */
    pthread_mutex_lock(&s->config_lock);
    bool verify = s->verify;
    struct ch_secret key = s->key;
    pthread_mutex_unlock(&s->config_lock);
    if (verify) {
        const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
        const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
        const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
        struct ch_verifier v = {.keys = &key, .nkeys = 1};
        ch_code rc = ch_verify(&v, id, ts, sig, r->body, r->len, NULL);
        if (rc != CH_OK) {
            atomic_fetch_add(&s->bad_signature, 1);
            return MHD_queue_response(c, MHD_HTTP_UNAUTHORIZED, s->unauthorized);
        }
        atomic_fetch_add(&s->verified, 1);
    }
    note_arrival(s, now);
    int64_t seq = bench_field(r->body, r->len, "BenchSeq");
    if (seq < 0 || (size_t)seq >= s->max_seq) {
        atomic_fetch_add(&s->no_seq, 1);
        return MHD_queue_response(c, s->ok_status, s->ok);
    }
    uint64_t bit = 1ULL << (seq & 63);
    uint64_t before = atomic_fetch_or(&s->seen[seq >> 6], bit);
    if (before & bit) {
        atomic_fetch_add(&s->duplicates, 1);
        return MHD_queue_response(c, s->ok_status, s->ok);
    }
    atomic_fetch_add(&s->unique, 1);
    int64_t sent = bench_field(r->body, r->len, "BenchSentUs");
    if (sent > 0) {
        size_t i = atomic_fetch_add(&s->nsamples, 1);
        int64_t lat = now - sent;
        if (i < s->max_samples)
            s->samples[i] = lat < 0 ? 0 : (lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat);
    }
    return MHD_queue_response(c, s->ok_status, s->ok);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct sink *s = cls;
    (void)version;
    struct request *r = *con_cls;
    if (r == NULL) {
        r = malloc(sizeof *r + BODY_MAX);
        if (r == NULL)
            return MHD_NO;
        r->len = 0;
        r->too_big = false;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (r->len + *upload_size > BODY_MAX)
            r->too_big = true;
        else
            memcpy(r->body + r->len, upload, *upload_size);
        if (!r->too_big)
            r->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    if (strncmp(url, "/_bench/", 8) == 0)
        return control(s, c, url, method, r);
    if (r->too_big)
        return MHD_queue_response(c, 413, s->too_big);
    return deliver(s, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    free(*con_cls);
    *con_cls = NULL;
}

static void usage(void)
{
    fputs("usage: ch-bench-sink [--port N] [--threads N] [--secret whsec_...] [--max-seconds N]\n"
          "                     [--max-seq N] [--max-samples N] [--answer-202]\n"
          "Answers 200 to every POST on 127.0.0.1; prints 'port=N' once listening. With\n"
          "--answer-202, 202 and {\"messageId\": ..., \"duplicate\": false} as callhook's ingest.\n"
          "GET /_bench/stats, POST /_bench/reset, POST /_bench/secret (body: whsec_..., empty\n"
          "to stop verifying). Exits on SIGTERM/SIGINT or after --max-seconds (3600).\n",
          stderr);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"port", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"secret", required_argument, NULL, 's'},
        {"max-seconds", required_argument, NULL, 'm'},
        {"max-seq", required_argument, NULL, 'q'},
        {"max-samples", required_argument, NULL, 'n'},
        {"answer-202", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct sink s;
    bool answer_202 = false;
    unsigned port = 0, threads = 2;
    long max_seconds = 3600;
    s.max_seq = 16u * 1024 * 1024;
    s.max_samples = 4u * 1024 * 1024;
    pthread_mutex_init(&s.config_lock, NULL);
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'p':
            port = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 't':
            threads = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 's': {
            struct ch_error err = {0};
            if (ch_secret_parse(&s.key, optarg, &err) != CH_OK) {
                fprintf(stderr, "ch-bench-sink: --secret: %s\n", err.message);
                return 2;
            }
            s.verify = true;
            break;
        }
        case 'm':
            max_seconds = strtol(optarg, NULL, 10);
            break;
        case 'q':
            s.max_seq = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'n':
            s.max_samples = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'a':
            answer_202 = true;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (threads < 1)
        threads = 1;
    s.seen = calloc((s.max_seq + 63) / 64, sizeof *s.seen);
    s.samples = calloc(s.max_samples ? s.max_samples : 1, sizeof *s.samples);
    /* The same shape and length as callhook's answer (a 31-character message id). */
    s.ok = fixed_response(answer_202 ? "{\"messageId\":\"msg_0123456789abcdefghijklmnopq\","
                                       "\"duplicate\":false}"
                                     : "");
    s.ok_status = answer_202 ? MHD_HTTP_ACCEPTED : MHD_HTTP_OK;
    s.unauthorized = fixed_response("{\"error\":\"bad signature\"}");
    s.too_big = fixed_response("{\"error\":\"too large\"}");
    if (s.seen == NULL || s.samples == NULL || !s.ok || !s.unauthorized || !s.too_big) {
        fputs("ch-bench-sink: out of memory\n", stderr);
        return 1;
    }
    sink_reset(&s);

    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(0x7f000001); /* 127.0.0.1 only */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, &s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, 8192u, MHD_OPTION_CONNECTION_TIMEOUT, 120u,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u, MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "ch-bench-sink: cannot listen on 127.0.0.1:%u\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port=%u\n", info ? (unsigned)info->port : port);
    fflush(stdout);

    struct timespec limit = {max_seconds, 0};
    int sig = sigtimedwait(&stop, NULL, &limit);
    if (sig < 0 && errno == EAGAIN)
        fprintf(stderr, "ch-bench-sink: --max-seconds %ld reached; stopping\n", max_seconds);
    MHD_stop_daemon(d);
    MHD_destroy_response(s.ok);
    MHD_destroy_response(s.unauthorized);
    MHD_destroy_response(s.too_big);
    free(s.seen);
    free(s.samples);
    return 0;
}
