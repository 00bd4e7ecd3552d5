/*
 * ch-bench-sign: pre-signed requests for wrk (bench/receiver.lua). Writes the record's prefix
 * and suffix (one line each), then one line per request: "webhook-id timestamp signature
 * call-id", where the body of request i is prefix + call-id + suffix. Ids and call ids are
 * unique, so a receiver that deduplicates answers every one of them 202. With --hmac-secret,
 * each line has a fifth field, "sha256=HEX": the HMAC-SHA256 of the body with that text as key,
 * as GitHub-style senders put it in X-Signature (what adnanh/webhook's payload-hmac-sha256 rule
 * checks in section 8 of bench/run).
 */
#include "bench.h"

#include <callhook/signature.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(void)
{
    fputs("usage: ch-bench-sign --secret whsec_... --count N --out FILE [--run ID]\n"
          "                     [--hmac-secret TEXT]\n"
          "       ch-bench-sign --size      (prints the size of one record in bytes)\n",
          stderr);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"secret", required_argument, NULL, 's'},
        {"count", required_argument, NULL, 'n'},
        {"out", required_argument, NULL, 'o'},
        {"run", required_argument, NULL, 'r'},
        {"hmac-secret", required_argument, NULL, 'm'},
        {"size", no_argument, NULL, 'z'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *secret = NULL, *out = NULL, *hmac_secret = NULL;
    long long count = 0;
    uint32_t run = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 's':
            secret = optarg;
            break;
        case 'n':
            count = strtoll(optarg, NULL, 10);
            break;
        case 'o':
            out = optarg;
            break;
        case 'r':
            run = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 'm':
            hmac_secret = optarg;
            break;
        case 'z': {
            char body[BENCH_PAYLOAD_MAX], call_id[BENCH_CALL_ID_MAX];
            bench_call_id(call_id, sizeof call_id, run, 0);
            printf("%zu\n", bench_payload(body, sizeof body, call_id, 0, 0));
            return 0;
        }
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (secret == NULL || out == NULL || count < 1) {
        usage();
        return 2;
    }
    struct ch_secret key;
    struct ch_error err = {0};
    if (ch_secret_parse(&key, secret, &err) != CH_OK) {
        fprintf(stderr, "ch-bench-sign: --secret: %s\n", err.message);
        return 2;
    }
    /* The record around a marker call id gives the prefix and the suffix. */
    static const char marker[] = "@CALLID@";
    char tmpl[BENCH_PAYLOAD_MAX];
    bench_payload(tmpl, sizeof tmpl, marker, 0, 0);
    char *at = strstr(tmpl, marker);
    if (at == NULL)
        return 1;
    const char *suffix = at + strlen(marker);
    size_t prefix_len = (size_t)(at - tmpl), suffix_len = strlen(suffix);

    FILE *f = fopen(out, "w");
    if (f == NULL) {
        perror(out);
        return 1;
    }
    fprintf(f, "%.*s\n%s\n", (int)prefix_len, tmpl, suffix);
    long long ts = (long long)time(NULL);
    char body[BENCH_PAYLOAD_MAX], call_id[BENCH_CALL_ID_MAX], msg_id[64],
        sig[CH_SIGNATURE_ENTRY_MAX];
    memcpy(body, tmpl, prefix_len);
    for (long long i = 0; i < count; i++) {
        size_t id_len = bench_call_id(call_id, sizeof call_id, run, (uint64_t)i);
        memcpy(body + prefix_len, call_id, id_len);
        memcpy(body + prefix_len + id_len, suffix, suffix_len);
        size_t len = prefix_len + id_len + suffix_len;
        snprintf(msg_id, sizeof msg_id, "msg_bench_%08" PRIx32 "_%lld", run, i);
        if (ch_sign(&key, 1, msg_id, ts, body, len, sig, sizeof sig, &err) != CH_OK) {
            fprintf(stderr, "ch-bench-sign: %s\n", err.message);
            fclose(f);
            return 1;
        }
        if (hmac_secret == NULL) {
            fprintf(f, "%s %lld %s %s\n", msg_id, ts, sig, call_id);
            continue;
        }
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        if (HMAC(EVP_sha256(), hmac_secret, (int)strlen(hmac_secret), (const unsigned char *)body,
                 len, mac, &mac_len) == NULL) {
            fputs("ch-bench-sign: HMAC-SHA256 failed\n", stderr);
            fclose(f);
            return 1;
        }
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        for (unsigned int k = 0; k < mac_len; k++)
            snprintf(hex + 2 * k, 3, "%02x", mac[k]);
        fprintf(f, "%s %lld %s %s sha256=%s\n", msg_id, ts, sig, call_id, hex);
    }
    if (fclose(f) != 0) {
        perror(out);
        return 1;
    }
    return 0;
}
