/*
 * ch-bench-send: the send limit. A bare libcurl multi loop that POSTs the same signed record to
 * the same URL with a fixed number of transfers in flight, reusing its easy handles, and nothing
 * else: no store, no queue. What callhook serve's delivery engine can at best approach.
 */
#include "bench.h"

#include <callhook/signature.h>

#include <curl/curl.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t discard(char *data, size_t size, size_t n, void *ctx)
{
    (void)data;
    (void)ctx;
    return size * n;
}

static void usage(void)
{
    fputs("usage: ch-bench-send --url URL --secret whsec_... [--count N] [--concurrency C]\n"
          "                     [--max-seconds S]\n"
          "POSTs one signed ~1.3 KB record N times (default 100000), C at a time (64), and\n"
          "prints: sent= ok= errors= seconds= rate=\n",
          stderr);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"url", required_argument, NULL, 'u'},
        {"secret", required_argument, NULL, 's'},
        {"count", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"max-seconds", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL, *secret = NULL;
    long long count = 100000;
    long concurrency = 64;
    double max_seconds = 600;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'u':
            url = optarg;
            break;
        case 's':
            secret = optarg;
            break;
        case 'n':
            count = strtoll(optarg, NULL, 10);
            break;
        case 'c':
            concurrency = strtol(optarg, NULL, 10);
            break;
        case 'm':
            max_seconds = strtod(optarg, NULL);
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (url == NULL || secret == NULL || count < 1 || concurrency < 1) {
        usage();
        return 2;
    }

    /* One record, signed once: the same bytes every time. */
    static char body[BENCH_PAYLOAD_MAX];
    char call_id[BENCH_CALL_ID_MAX];
    bench_call_id(call_id, sizeof call_id, 0xfeedu, 0);
    size_t body_len = bench_payload(body, sizeof body, call_id, 0, 0);
    struct ch_secret key;
    struct ch_error err = {0};
    if (ch_secret_parse(&key, secret, &err) != CH_OK) {
        fprintf(stderr, "ch-bench-send: --secret: %s\n", err.message);
        return 2;
    }
    const char *msg_id = "msg_bench_send_limit";
    long long ts = (long long)time(NULL);
    char sig[CH_SIGNATURE_ENTRY_MAX];
    if (ch_sign(&key, 1, msg_id, ts, body, body_len, sig, sizeof sig, &err) != CH_OK) {
        fprintf(stderr, "ch-bench-send: cannot sign: %s\n", err.message);
        return 1;
    }
    /* The headers callhook's engine sends (src/deliver/transfer.c). */
    char line[256];
    struct curl_slist *headers = NULL;
    headers = curl_slist_append(headers, "Content-Type: application/json");
    snprintf(line, sizeof line, "webhook-id: %s", msg_id);
    headers = curl_slist_append(headers, line);
    snprintf(line, sizeof line, "webhook-timestamp: %lld", ts);
    headers = curl_slist_append(headers, line);
    snprintf(line, sizeof line, "webhook-signature: %s", sig);
    headers = curl_slist_append(headers, line);
    headers = curl_slist_append(headers, "X-Call-Event: end-call");
    headers = curl_slist_append(headers, "Expect:");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, concurrency);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, concurrency);
    CURL **easy = calloc((size_t)concurrency, sizeof *easy);
    if (multi == NULL || headers == NULL || easy == NULL) {
        fputs("ch-bench-send: out of memory\n", stderr);
        return 1;
    }
    long long started = 0, ok = 0, errors = 0, done = 0;
    int64_t t0 = bench_now_us();
    for (long i = 0; i < concurrency && started < count; i++) {
        CURL *h = curl_easy_init();
        easy[i] = h;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "callhook-bench/send-limit");
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 15000L);
        curl_multi_add_handle(multi, h);
        started++;
    }
    int running = 1;
    bool timed_out = false;
    while (done < started) {
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *h = msg->easy_handle;
            long status = 0;
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result == CURLE_OK && status >= 200 && status < 300)
                ok++;
            else if (errors++ < 5)
                fprintf(stderr, "ch-bench-send: %s, HTTP %ld\n",
                        curl_easy_strerror(msg->data.result), status);
            done++;
            curl_multi_remove_handle(multi, h);
            if (started < count && !timed_out) {
                curl_multi_add_handle(multi, h);
                started++;
            }
        }
        if (!timed_out && (double)(bench_now_us() - t0) / 1e6 > max_seconds) {
            fprintf(stderr, "ch-bench-send: --max-seconds reached after %lld\n", done);
            timed_out = true;
        }
        if (done < started)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    double seconds = (double)(bench_now_us() - t0) / 1e6;
    printf("sent=%lld ok=%lld errors=%lld seconds=%.3f rate=%.0f concurrency=%ld bytes=%zu\n", done,
           ok, errors, seconds, seconds > 0 ? (double)ok / seconds : 0.0, concurrency, body_len);
    for (long i = 0; i < concurrency; i++) {
        if (easy[i])
            curl_easy_cleanup(easy[i]);
    }
    free(easy);
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    curl_global_cleanup();
    return errors == 0 && !timed_out ? 0 : 1;
}
