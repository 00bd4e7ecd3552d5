/*
 * ch-bench-load: concurrent HTTP ingest clients against callhook serve, on one libcurl multi
 * handle. Closed loop (no --rate): keep C requests in flight until N events are acknowledged.
 * Open loop (--rate R): start request i at t0 + i/R whatever the answers do, C at most in
 * flight, and report how late the starts fell. Every record has a unique ActiveCallId, its
 * BenchSeq and, in BenchSentUs, the time its ingest request was due (see bench.h).
 */
#include "bench.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TRIES      10
#define RETRY_DELAY_US 100000
#define RESPONSE_KEEP  300

struct slot {
    CURL *h;
    bool busy;
    uint64_t seq;
    int tries;
    int64_t start_us;
    size_t len;
    char body[BENCH_PAYLOAD_MAX];
    char response[RESPONSE_KEEP + 1];
    size_t response_len;
};

/* An event to send again (503, a reset connection), not before ready_us. */
struct retry {
    uint64_t seq;
    int64_t sent_us;
    int tries;
    int64_t ready_us;
};

struct load {
    const char *url;
    uint32_t run;
    uint64_t seq_base;
    long long count;
    double rate;
    CURLM *multi;
    struct curl_slist *headers;
    struct retry *retries; /* a ring */
    size_t retry_head, retry_count, retry_cap;
    uint32_t *ack_us; /* request start to 202, per acknowledged event */
    long long acked, duplicates, attempt_errors, failed, started, launched_new;
    int64_t max_lag_us;
};

static size_t keep_response(char *data, size_t size, size_t n, void *ctx)
{
    struct slot *s = ctx;
    size_t len = size * n, room = RESPONSE_KEEP - s->response_len;
    size_t keep = len < room ? len : room;
    memcpy(s->response + s->response_len, data, keep);
    s->response_len += keep;
    s->response[s->response_len] = '\0';
    return len;
}

static void launch(struct load *l, struct slot *s, uint64_t seq, int64_t sent_us, int tries)
{
    char call_id[BENCH_CALL_ID_MAX];
    bench_call_id(call_id, sizeof call_id, l->run, l->seq_base + seq);
    s->len = bench_payload(s->body, sizeof s->body, call_id, l->seq_base + seq, sent_us);
    s->seq = seq;
    s->tries = tries;
    s->busy = true;
    s->response_len = 0;
    s->response[0] = '\0';
    s->start_us = bench_now_us();
    CURL *h = s->h;
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, s->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->len);
    curl_multi_add_handle(l->multi, h);
    l->started++;
}

static bool retry_push(struct load *l, uint64_t seq, int64_t sent_us, int tries)
{
    if (l->retry_count == l->retry_cap)
        return false;
    size_t i = (l->retry_head + l->retry_count) % l->retry_cap;
    l->retries[i] = (struct retry){seq, sent_us, tries, bench_now_us() + RETRY_DELAY_US};
    l->retry_count++;
    return true;
}

static void finish(struct load *l, CURLMsg *msg)
{
    struct slot *s = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
    long status = 0;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(l->multi, msg->easy_handle);
    s->busy = false;
    int64_t now = bench_now_us();
    if (msg->data.result == CURLE_OK && status == 202) {
        int64_t took = now - s->start_us;
        l->ack_us[l->acked++] = took > UINT32_MAX ? UINT32_MAX : (uint32_t)took;
        return;
    }
    if (msg->data.result == CURLE_OK && status == 200) {
        /* Acknowledged before (a retry after a lost answer): stored once, counted once. */
        l->duplicates++;
        return;
    }
    if (l->attempt_errors++ < 5)
        fprintf(stderr, "ch-bench-load: seq %" PRIu64 ": %s, HTTP %ld %s\n", s->seq,
                curl_easy_strerror(msg->data.result), status, s->response);
    int64_t sent = bench_field(s->body, s->len, "BenchSentUs");
    if (s->tries + 1 >= MAX_TRIES || !retry_push(l, s->seq, sent, s->tries + 1))
        l->failed++;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(0x7f000001);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("ch-bench-load: free port");
        return 1;
    }
    printf("%u\n", ntohs(a.sin_port));
    close(fd);
    return 0;
}

static void usage(void)
{
    fputs("usage: ch-bench-load --url URL --key KEY [--count N] [--concurrency C] [--rate R]\n"
          "                     [--run ID] [--seq-base N] [--max-seconds S] [--progress]\n"
          "       ch-bench-load --free-port\n"
          "Ingests N records (default 10000) at URL (.../v1/voice-apps/ID/end-call), C at a\n"
          "time (64); with --rate, at R per second (open loop). Records are numbered from\n"
          "--seq-base (0), in BenchSeq and the call id, so batches can share one sink count.\n"
          "The key may also come from BENCH_KEY. Prints: acked= duplicates= errors= failed=\n"
          "seconds= rate= start_us= ...\n",
          stderr);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"url", required_argument, NULL, 'u'},      {"key", required_argument, NULL, 'k'},
        {"count", required_argument, NULL, 'n'},    {"concurrency", required_argument, NULL, 'c'},
        {"rate", required_argument, NULL, 'r'},     {"run", required_argument, NULL, 'R'},
        {"seq-base", required_argument, NULL, 'b'}, {"max-seconds", required_argument, NULL, 'm'},
        {"progress", no_argument, NULL, 'p'},       {"free-port", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    struct load l = {.count = 10000};
    const char *key = getenv("BENCH_KEY");
    long concurrency = 64;
    double max_seconds = 600;
    bool progress = false;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'u':
            l.url = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'n':
            l.count = strtoll(optarg, NULL, 10);
            break;
        case 'c':
            concurrency = strtol(optarg, NULL, 10);
            break;
        case 'r':
            l.rate = strtod(optarg, NULL);
            break;
        case 'R':
            l.run = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 'b':
            l.seq_base = strtoull(optarg, NULL, 10);
            break;
        case 'm':
            max_seconds = strtod(optarg, NULL);
            break;
        case 'p':
            progress = true;
            break;
        case 'f':
            return free_port();
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (l.url == NULL || key == NULL || *key == '\0' || l.count < 1 || concurrency < 1) {
        usage();
        return 2;
    }

    curl_global_init(CURL_GLOBAL_DEFAULT);
    l.multi = curl_multi_init();
    char auth[512];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
    l.headers = curl_slist_append(l.headers, auth);
    l.headers = curl_slist_append(l.headers, "Content-Type: application/json");
    l.headers = curl_slist_append(l.headers, "Expect:");
    l.retry_cap = (size_t)concurrency * MAX_TRIES + 1024;
    l.retries = calloc(l.retry_cap, sizeof *l.retries);
    l.ack_us = calloc((size_t)l.count, sizeof *l.ack_us);
    struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
    if (l.multi == NULL || l.headers == NULL || l.retries == NULL || l.ack_us == NULL ||
        slots == NULL) {
        fputs("ch-bench-load: out of memory\n", stderr);
        return 1;
    }
    curl_multi_setopt(l.multi, CURLMOPT_MAX_HOST_CONNECTIONS, concurrency);
    curl_multi_setopt(l.multi, CURLMOPT_MAXCONNECTS, concurrency);
    for (long i = 0; i < concurrency; i++) {
        CURL *h = curl_easy_init();
        slots[i].h = h;
        curl_easy_setopt(h, CURLOPT_URL, l.url);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, l.headers);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "callhook-bench/load");
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_response);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &slots[i]);
        curl_easy_setopt(h, CURLOPT_PRIVATE, &slots[i]);
    }

    int64_t t0 = bench_now_us(), last_ack = t0, next_report = t0 + 5000000;
    double interval_us = l.rate > 0 ? 1e6 / l.rate : 0;
    bool timed_out = false;
    long in_flight = 0;
    for (;;) {
        int64_t now = bench_now_us();
        long long settled = l.acked + l.duplicates + l.failed;
        if (settled >= l.count || (timed_out && in_flight == 0))
            break;
        if (!timed_out && (double)(now - t0) / 1e6 > max_seconds) {
            fprintf(stderr, "ch-bench-load: --max-seconds %.0f reached\n", max_seconds);
            timed_out = true;
        }
        /* Start what is due, retries first, while a connection is free. */
        for (long i = 0; i < concurrency && !timed_out; i++) {
            if (slots[i].busy)
                continue;
            if (l.retry_count > 0 && l.retries[l.retry_head].ready_us <= now) {
                struct retry r = l.retries[l.retry_head];
                l.retry_head = (l.retry_head + 1) % l.retry_cap;
                l.retry_count--;
                launch(&l, &slots[i], r.seq, r.sent_us, r.tries);
            } else if (l.launched_new < l.count) {
                int64_t due =
                    l.rate > 0 ? t0 + (int64_t)((double)l.launched_new * interval_us) : now;
                if (due > now)
                    break;
                if (now - due > l.max_lag_us)
                    l.max_lag_us = now - due;
                launch(&l, &slots[i], (uint64_t)l.launched_new, due, 0);
                l.launched_new++;
            } else {
                break;
            }
            in_flight++;
        }
        int running = 0;
        curl_multi_perform(l.multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(l.multi, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE) {
                finish(&l, msg);
                in_flight--;
                last_ack = bench_now_us();
            }
        }
        now = bench_now_us();
        if (progress && now >= next_report) {
            fprintf(stderr, "ch-bench-load: %lld acknowledged, %.0f/s\n", l.acked,
                    (double)l.acked * 1e6 / (double)(now - t0));
            next_report = now + 5000000;
        }
        /* Sleep until the next start is due or an answer comes. */
        long wait_ms = 100;
        if (l.rate > 0 && l.launched_new < l.count && in_flight < concurrency) {
            int64_t due = t0 + (int64_t)((double)l.launched_new * interval_us);
            int64_t wait_us = due - now;
            if (wait_us <= 0) {
                wait_ms = 0;
            } else if (wait_us < 1000) {
                curl_multi_poll(l.multi, NULL, 0, 0, NULL);
                struct timespec ts = {0, (long)wait_us * 1000};
                nanosleep(&ts, NULL);
                continue;
            } else {
                wait_ms = (long)(wait_us / 1000);
            }
        } else if (l.rate <= 0 && in_flight < concurrency && l.launched_new < l.count) {
            wait_ms = 0;
        } else if (l.retry_count > 0) {
            wait_ms = 10;
        }
        if (in_flight > 0 || wait_ms > 0)
            curl_multi_poll(l.multi, NULL, 0, (int)wait_ms, NULL);
    }
    double seconds = (double)(last_ack - t0) / 1e6;
    uint32_t p50 = bench_percentile(l.ack_us, (size_t)l.acked, 50);
    uint32_t p99 = bench_percentile_sorted(l.ack_us, (size_t)l.acked, 99);
    uint32_t max = l.acked > 0 ? l.ack_us[l.acked - 1] : 0;
    printf("acked=%lld duplicates=%lld errors=%lld failed=%lld requests=%lld seconds=%.3f "
           "rate=%.0f start_us=%" PRId64 " end_us=%" PRId64 " ack_p50_us=%" PRIu32
           " ack_p99_us=%" PRIu32 " ack_max_us=%" PRIu32 " max_lag_us=%" PRId64
           " concurrency=%ld target_rate=%.0f\n",
           l.acked, l.duplicates, l.attempt_errors, l.failed, l.started, seconds,
           seconds > 0 ? (double)l.acked / seconds : 0.0, t0, last_ack, p50, p99, max, l.max_lag_us,
           concurrency, l.rate);
    for (long i = 0; i < concurrency; i++)
        curl_easy_cleanup(slots[i].h);
    free(slots);
    free(l.retries);
    free(l.ack_us);
    curl_multi_cleanup(l.multi);
    curl_slist_free_all(l.headers);
    curl_global_cleanup();
    return l.failed == 0 && !timed_out && l.acked + l.duplicates == l.count ? 0 : 1;
}
