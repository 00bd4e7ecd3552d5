/* `callhook secret`: make new signing secrets and Ed25519 key pairs. */
#include "cli/cli.h"

#include <callhook/callhook.h>

#include <getopt.h>
#include <stdio.h>
#include <string.h>

void cmd_secret_help(void)
{
    puts("usage: callhook secret new [--bytes N]\n"
         "       callhook secret new --ed25519\n"
         "       callhook secret public KEY\n"
         "\n"
         "new        prints a new random signing secret, whsec_ + base64 of N bytes (24 to 64,\n"
         "           default 32), from the OS-seeded OpenSSL generator. With --ed25519, prints a\n"
         "           whsk_ secret key on the first line and its whpk_ public key on the second.\n"
         "public     prints the whpk_ public key of a whsk_ secret key.");
}

static int print_key(const struct ch_secret *s)
{
    char text[CH_SECRET_TEXT_MAX];
    struct ch_error err;
    if (ch_secret_format(s, text, sizeof text, &err) != CH_OK) {
        fprintf(stderr, "callhook secret: %s\n", err.message);
        return CLI_FAIL;
    }
    puts(text);
    return CLI_OK;
}

static int secret_new(int argc, char **argv)
{
    static const struct option options[] = {
        {"bytes", required_argument, NULL, 'b'},
        {"ed25519", no_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long long nbytes = 32;
    bool ed25519 = false;
    int c;
    while ((c = cli_getopt("secret new", argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (!cli_parse_ll("--bytes", optarg, &nbytes))
                return CLI_USAGE;
            break;
        case 'e':
            ed25519 = true;
            break;
        case 'h':
            cmd_secret_help();
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (optind < argc)
        return cli_usage_error("secret", "unexpected argument '%s'", argv[optind]);
    if (nbytes < CH_SECRET_MIN_BYTES || nbytes > CH_SECRET_MAX_BYTES)
        return cli_usage_error("secret", "--bytes must be %d to %d", CH_SECRET_MIN_BYTES,
                               CH_SECRET_MAX_BYTES);
    struct ch_secret s, pub;
    struct ch_error err;
    if (ch_secret_generate(&s, ed25519 ? CH_KEY_ED25519_SECRET : CH_KEY_HMAC, (size_t)nbytes,
                           &err) != CH_OK) {
        fprintf(stderr, "callhook secret: %s\n", err.message);
        return CLI_FAIL;
    }
    int rc = print_key(&s);
    if (rc == CLI_OK && ed25519 && ch_secret_public(&s, &pub, &err) == CH_OK)
        rc = print_key(&pub);
    ch_secret_wipe(&s);
    return rc;
}

static int secret_public(int argc, char **argv)
{
    if (argc != 2)
        return cli_usage_error("secret", "'secret public' takes one whsk_ key");
    struct ch_secret s, pub;
    struct ch_error err;
    if (ch_secret_parse(&s, argv[1], &err) != CH_OK || ch_secret_public(&s, &pub, &err) != CH_OK) {
        ch_secret_wipe(&s);
        fprintf(stderr, "callhook secret: %s\n", err.message);
        return CLI_FAIL;
    }
    ch_secret_wipe(&s);
    return print_key(&pub);
}

int cmd_secret(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("secret", "which one: 'secret new' or 'secret public'?");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        cmd_secret_help();
        return CLI_OK;
    }
    if (strcmp(argv[1], "new") == 0)
        return secret_new(argc - 1, argv + 1);
    if (strcmp(argv[1], "public") == 0)
        return secret_public(argc - 1, argv + 1);
    return cli_usage_error("secret", "unknown subcommand '%s'", argv[1]);
}
