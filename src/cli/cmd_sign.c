/* `callhook sign` and `callhook verify`: Standard Webhooks signatures from the command line. */
#include "cli/cli.h"

#include <callhook/callhook.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_KEYS 8

void cmd_sign_help(void)
{
    puts("usage: callhook sign --secret KEY [--secret KEY ...] --id ID [--timestamp T] [FILE]\n"
         "\n"
         "Prints the webhook-signature header value for the body in FILE (or standard input),\n"
         "signed over \"ID.T.body\" byte for byte, as Standard Webhooks 1.0 specifies.\n"
         "\n"
         "  --secret KEY     whsec_... (HMAC-SHA256, gives a v1 entry) or whsk_... (Ed25519,\n"
         "                   gives v1a). Repeat it to sign with several keys, as during a\n"
         "                   rotation. Default: the CALLHOOK_SECRET environment variable.\n"
         "  --id ID          the webhook-id, e.g. msg_p5jXN8AQM9LWM0D4loKWxJek\n"
         "  --timestamp T    the webhook-timestamp in unix seconds (default: now)\n"
         "\n"
         "example:\n"
         "  printf '{\"test\": 2432232314}' | callhook sign \\\n"
         "      --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \\\n"
         "      --id msg_p5jXN8AQM9LWM0D4loKWxJek --timestamp 1614265330");
}

void cmd_verify_help(void)
{
    puts("usage: callhook verify --secret KEY [--secret KEY ...] --id ID --timestamp T\n"
         "                       --signature SIG [--now T] [--tolerance-s N] [FILE]\n"
         "\n"
         "Checks a delivery's webhook-signature against the body in FILE (or standard input).\n"
         "Prints 'ok' and exits 0, or prints the failed check and exits 1: missing header, bad\n"
         "timestamp, too old, too new, or no matching signature.\n"
         "\n"
         "  --secret KEY       whsec_... for v1 entries, whpk_... or whsk_... for v1a entries.\n"
         "                     Repeat for several (rotation): any match passes. Default: the\n"
         "                     CALLHOOK_SECRET environment variable.\n"
         "  --public-key KEY   the same as --secret, for a whpk_... key\n"
         "  --id ID            the webhook-id header\n"
         "  --timestamp T      the webhook-timestamp header\n"
         "  --signature SIG    the webhook-signature header (space-separated entries)\n"
         "  --now T            the time to check against, unix seconds (default: the clock)\n"
         "  --tolerance-s N    the window around now, both directions (default 300)");
}

static long long fixed_clock(void *ctx)
{
    return *(const long long *)ctx;
}

/* Parses one key argument into keys[*n]; prints the library's reason on failure. */
static bool add_key(const char *cmd, const char *text, struct ch_secret *keys, size_t *n)
{
    if (*n == MAX_KEYS) {
        fprintf(stderr, "callhook %s: at most %d keys\n", cmd, MAX_KEYS);
        return false;
    }
    struct ch_error err;
    if (ch_secret_parse(&keys[*n], text, &err) != CH_OK) {
        fprintf(stderr, "callhook %s: %s\n", cmd, err.message);
        return false;
    }
    (*n)++;
    return true;
}

static bool default_key(const char *cmd, struct ch_secret *keys, size_t *n)
{
    const char *env = getenv("CALLHOOK_SECRET");
    if (*n > 0)
        return true;
    if (env == NULL || *env == '\0') {
        cli_usage_error(cmd, "--secret is required (or set CALLHOOK_SECRET)");
        return false;
    }
    return add_key(cmd, env, keys, n);
}

int cmd_sign(int argc, char **argv)
{
    static const struct option options[] = {
        {"secret", required_argument, NULL, 's'},
        {"id", required_argument, NULL, 'i'},
        {"timestamp", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct ch_secret keys[MAX_KEYS];
    size_t nkeys = 0;
    const char *id = NULL;
    long long ts = (long long)time(NULL);
    int rc = CLI_USAGE, c;
    while ((c = cli_getopt("sign", argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!add_key("sign", optarg, keys, &nkeys))
                goto done;
            break;
        case 'i':
            id = optarg;
            break;
        case 't':
            if (!cli_parse_ll("--timestamp", optarg, &ts))
                goto done;
            break;
        case 'h':
            cmd_sign_help();
            rc = CLI_OK;
            goto done;
        default:
            goto done;
        }
    }
    if (!default_key("sign", keys, &nkeys))
        goto done;
    if (id == NULL) {
        rc = cli_usage_error("sign", "--id is required");
        goto done;
    }
    if (argc - optind > 1) {
        rc = cli_usage_error("sign", "one FILE at most");
        goto done;
    }
    char *body = NULL;
    size_t len = 0;
    rc = CLI_FAIL;
    if (!cli_read_input(optind < argc ? argv[optind] : NULL, CLI_MAX_INPUT_BYTES, &body, &len))
        goto done;
    char sig[MAX_KEYS * CH_SIGNATURE_ENTRY_MAX];
    struct ch_error err;
    if (ch_sign(keys, nkeys, id, ts, body, len, sig, sizeof sig, &err) != CH_OK)
        fprintf(stderr, "callhook sign: %s\n", err.message);
    else {
        puts(sig);
        rc = CLI_OK;
    }
    free(body);
done:
    for (size_t i = 0; i < nkeys; i++)
        ch_secret_wipe(&keys[i]);
    return rc;
}

int cmd_verify(int argc, char **argv)
{
    static const struct option options[] = {
        {"secret", required_argument, NULL, 's'},
        {"public-key", required_argument, NULL, 's'},
        {"id", required_argument, NULL, 'i'},
        {"timestamp", required_argument, NULL, 't'},
        {"signature", required_argument, NULL, 'g'},
        {"now", required_argument, NULL, 'n'},
        {"tolerance-s", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct ch_secret keys[MAX_KEYS];
    size_t nkeys = 0;
    const char *id = NULL, *ts = NULL, *sig = NULL;
    long long now = 0, tolerance = CH_DEFAULT_TOLERANCE_S;
    bool fixed_now = false;
    int rc = CLI_USAGE, c;
    while ((c = cli_getopt("verify", argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!add_key("verify", optarg, keys, &nkeys))
                goto done;
            break;
        case 'i':
            id = optarg;
            break;
        case 't':
            ts = optarg;
            break;
        case 'g':
            sig = optarg;
            break;
        case 'n':
            if (!cli_parse_ll("--now", optarg, &now))
                goto done;
            fixed_now = true;
            break;
        case 'w':
            if (!cli_parse_ll("--tolerance-s", optarg, &tolerance) || tolerance <= 0) {
                fprintf(stderr, "callhook verify: --tolerance-s must be a positive number\n");
                goto done;
            }
            break;
        case 'h':
            cmd_verify_help();
            rc = CLI_OK;
            goto done;
        default:
            goto done;
        }
    }
    if (!default_key("verify", keys, &nkeys))
        goto done;
    if (argc - optind > 1) {
        rc = cli_usage_error("verify", "one FILE at most");
        goto done;
    }
    char *body = NULL;
    size_t len = 0;
    rc = CLI_FAIL;
    if (!cli_read_input(optind < argc ? argv[optind] : NULL, CLI_MAX_INPUT_BYTES, &body, &len))
        goto done;
    struct ch_verifier v = {
        .keys = keys,
        .nkeys = nkeys,
        .tolerance_s = tolerance,
        .clock = fixed_now ? fixed_clock : NULL,
        .clock_ctx = &now,
    };
    struct ch_error err;
    ch_code code = ch_verify(&v, id, ts, sig, body, len, &err);
    if (code == CH_OK) {
        puts("ok");
        rc = CLI_OK;
    } else {
        printf("%s: %s\n", ch_strerror(code), err.message);
    }
    free(body);
done:
    for (size_t i = 0; i < nkeys; i++)
        ch_secret_wipe(&keys[i]);
    return rc;
}
