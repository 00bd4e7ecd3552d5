/* `callhook serve` and `callhook key`: start the sender daemon; manage its API keys. */
#include "cli/cli.h"

#include "serve/serve.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cmd_serve_help(void)
{
    puts("usage: callhook serve [--listen HOST:PORT] [--db sqlite:PATH] [--config FILE] ...\n"
         "\n"
         "Runs the sender: takes begin-call and end-call events over HTTP (docs/API.md), stores\n"
         "them durably, and delivers them signed to each Voice App's URLs with retries.\n"
         "SIGTERM or SIGINT stops it cleanly. Settings come from the defaults, then the config\n"
         "file (name = value lines), then CALLHOOK_* variables, then the flags.\n");
    config_print_help(&serve_config_table, stdout);
    puts("  CALLHOOK_ADMIN_KEY: on first start (no keys yet), the admin API key; without it\n"
         "  a key is made and written to --admin-key-file (default admin.key beside a SQLite\n"
         "  database), or printed once when serve runs on a terminal.\n"
         "  CALLHOOK_LOG: debug, info (default), warn or error.");
}

void cmd_key_help(void)
{
    puts("usage: callhook key create --role ingest|read|admin [--db sqlite:PATH]\n"
         "       callhook key list [--db sqlite:PATH]\n"
         "       callhook key revoke KEY_ID [--db sqlite:PATH]\n"
         "\n"
         "Manages the API keys of callhook serve, on its database (default: CALLHOOK_DB, else\n"
         "sqlite:var/callhook.db). 'create' prints the new key once; only its hash is kept.\n"
         "Roles: ingest (post events), read (GET messages, apps, metrics), admin (everything).");
}

void cmd_purge_help(void)
{
    puts("usage: callhook purge [--db sqlite:PATH] [--payload-retention-s N]\n"
         "                      [--attempt-retention-s N] [--data-key-file F] [--config FILE]\n"
         "\n"
         "Runs retention now, as callhook serve does every purge-interval-s: removes the call\n"
         "records of messages delivered (or skipped: no URL for their event) more than\n"
         "payload-retention-s ago (default 7 days) and attempts older than\n"
         "attempt-retention-s (default 30 days). Dead and undelivered messages keep their\n"
         "record until delivered or recovered. Takes serve's settings.");
}

static int run_serve_or_purge(int argc, char **argv, bool purge);

int cmd_serve(int argc, char **argv)
{
    return run_serve_or_purge(argc, argv, false);
}

int cmd_purge(int argc, char **argv)
{
    return run_serve_or_purge(argc, argv, true);
}

static int run_serve_or_purge(int argc, char **argv, bool purge)
{
    struct serve_config cfg;
    config_init(&serve_config_table, &cfg);
    struct ch_error err = {0};
    bool helped;
    /* Errors of purge's settings say "callhook serve" too: they are serve's settings. */
    int rc = cli_settings_parse("serve", &serve_config_table, &cfg, argc, argv,
                                purge ? cmd_purge_help : cmd_serve_help, &helped);
    if (rc != CLI_OK || helped)
        return rc;
    if (purge) {
        if (serve_purge(&cfg, &err) != CH_OK) {
            fprintf(stderr, "callhook purge: %s\n", err.message);
            return CLI_FAIL;
        }
        return CLI_OK;
    }
    rc = serve_run(&cfg, &err);
    if (rc != 0)
        fprintf(stderr, "callhook serve: %s\n", err.message);
    return rc == 0 ? CLI_OK : CLI_FAIL;
}

int cmd_key(int argc, char **argv)
{
    static const struct option options[] = {
        {"role", required_argument, NULL, 'r'},
        {"db", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        return cli_usage_error("key", "which one: create, list or revoke?");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        cmd_key_help();
        return CLI_OK;
    }
    const char *role = NULL;
    const char *db = getenv("CALLHOOK_DB");
    if (db == NULL || *db == '\0')
        db = "sqlite:var/callhook.db";
    int c;
    optind = 1;
    argc--;
    argv++;
    while ((c = cli_getopt("key", argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'r':
            role = optarg;
            break;
        case 'd':
            db = optarg;
            break;
        case 'h':
            cmd_key_help();
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    struct ch_error err = {0};
    ch_code rc;
    if (strcmp(sub, "create") == 0) {
        if (role == NULL)
            return cli_usage_error("key", "--role is required (ingest, read or admin)");
        char key[128];
        rc = serve_key_create(db, role, key, sizeof key, &err);
        if (rc == CH_OK)
            puts(key);
    } else if (strcmp(sub, "list") == 0) {
        rc = serve_key_list(db, &err);
    } else if (strcmp(sub, "revoke") == 0) {
        if (optind >= argc)
            return cli_usage_error("key", "revoke needs a KEY_ID (see 'callhook key list')");
        rc = serve_key_revoke(db, argv[optind], &err);
        if (rc == CH_OK)
            printf("revoked %s\n", argv[optind]);
    } else {
        return cli_usage_error("key", "unknown subcommand '%s'", sub);
    }
    if (rc != CH_OK) {
        fprintf(stderr, "callhook key: %s\n", err.message);
        return rc == CH_EINVAL ? CLI_USAGE : CLI_FAIL;
    }
    return CLI_OK;
}
