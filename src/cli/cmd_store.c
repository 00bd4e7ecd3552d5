/* callhook store: maintenance of serve's database at rest. 'seal' re-writes what was stored
 * before a data key was set in the sealed, bound form; 'rekey' re-seals everything under a new
 * data key. Both work on the database directly, with serve stopped on SQLite. */
#include "cli/cli.h"

#include "store/store.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cmd_store_help(void)
{
    puts("usage: callhook store seal  [--db URI] [--data-key-file F]\n"
         "       callhook store rekey [--db URI] [--data-key-file F] --new-key-file F\n"
         "\n"
         "Encryption at rest of serve's database (docs/SECURITY.md). The data key is taken as\n"
         "serve takes it: --data-key-file F (or CALLHOOK_DATA_KEY_FILE), else the key itself in\n"
         "CALLHOOK_DATA_KEY. --db (or CALLHOOK_DB) is serve's database, default\n"
         "sqlite:var/callhook.db. On SQLite, stop serve first: both refuse to run while it has\n"
         "the database.\n"
         "\n"
         "  seal   For a database that held data before its data key was set (or was written\n"
         "         by an older callhook): re-writes every signing secret, previous secret,\n"
         "         Voice App settings and call record that is in plaintext or in the older\n"
         "         sealed form in the sealed form bound to its place (call records 500,\n"
         "         apps 100 per transaction), then records that the database holds only such\n"
         "         values: serve refuses plaintext and older forms from then on (until then it\n"
         "         reads them and warns at start). A database without a key yet gets this one.\n"
         "         Running it again does nothing more.\n"
         "  rekey  Re-seals every value under the key in --new-key-file (base64 of 32 bytes,\n"
         "         owner-only: openssl rand -base64 32), then makes it the database's key:\n"
         "         serve starts only with the new key afterwards. Until it ends serve refuses\n"
         "         the database; if it is stopped, run it again with the same keys (the old\n"
         "         key still opens what was not re-sealed yet). On PostgreSQL, stop every\n"
         "         node first.\n"
         "\n"
         "Both print how many values they re-wrote and how many were already done.");
}

static void print_counts(const char *what, const struct store_reseal_counts *c)
{
    printf("%s: %lld signing secrets, %lld Voice App settings, %lld call records (%lld values "
           "were already done)\n",
           what, (long long)c->secrets, (long long)c->settings, (long long)c->records,
           (long long)c->unchanged);
}

/* Opens the database for maintenance: on SQLite it takes the file as serve does, so a running
 * serve and this command never write it at once. */
static ch_code open_alone(const char *db, struct store **out, struct ch_error *err)
{
    struct store *s = NULL;
    ch_code rc = store_open_existing(db, &s, err);
    int64_t released = 0;
    if (rc == CH_OK)
        rc = store_startup(s, (int64_t)time(NULL), &released, err);
    if (rc == CH_EUNAVAILABLE && strncmp(db, "sqlite:", 7) == 0)
        rc = ch_error_set(err, CH_EUNAVAILABLE,
                          "callhook serve is running on '%s': stop it first (this command "
                          "re-writes the database)",
                          db + 7);
    if (rc != CH_OK) {
        store_close(s);
        return rc;
    }
    *out = s;
    return CH_OK;
}

static ch_code run(bool rekey, const char *db, const char *key_file, const char *new_key_file,
                   struct ch_error *err)
{
    unsigned char key[32], new_key[32];
    bool have = false, have_new = false;
    ch_code rc = store_data_key_load(key_file, "CALLHOOK_DATA_KEY", key, &have, err);
    if (rc == CH_OK && !have)
        rc = ch_error_set(err, CH_EINVAL,
                          "no data key: give it with --data-key-file or CALLHOOK_DATA_KEY");
    if (rc == CH_OK && rekey) {
        rc = store_data_key_load(new_key_file, NULL, new_key, &have_new, err);
        if (rc == CH_OK && !have_new)
            rc = ch_error_set(err, CH_EINVAL, "rekey needs --new-key-file F (the new data key)");
    }
    struct store *s = NULL;
    if (rc == CH_OK)
        rc = open_alone(db, &s, err);
    struct store_reseal_counts counts;
    char shown[4096];
    store_uri_for_log(db, shown, sizeof shown);
    if (rc == CH_OK && rekey) {
        rc = store_sealed_rekey(s, key, new_key, &counts, err);
        if (rc == CH_OK) {
            print_counts("re-sealed under the new data key", &counts);
            printf("%s now has the new data key: start serve with it (the old one is "
                   "refused)\n",
                   shown);
        }
    } else if (rc == CH_OK) {
        rc = store_sealed_seal(s, key, &counts, err);
        if (rc == CH_OK) {
            print_counts("sealed in place", &counts);
            printf("%s holds only sealed, bound values: serve refuses plaintext and older "
                   "forms from now on\n",
                   shown);
        }
    }
    store_close(s);
    memset(key, 0, sizeof key);
    memset(new_key, 0, sizeof new_key);
    return rc;
}

int cmd_store(int argc, char **argv)
{
    static const struct option options[] = {
        {"db", required_argument, NULL, 'd'},
        {"data-key-file", required_argument, NULL, 'k'},
        {"new-key-file", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        return cli_usage_error("store", "which one: seal or rekey?");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        cmd_store_help();
        return CLI_OK;
    }
    bool rekey = strcmp(sub, "rekey") == 0;
    if (!rekey && strcmp(sub, "seal") != 0)
        return cli_usage_error("store", "unknown subcommand '%s' (seal or rekey)", sub);
    const char *db = getenv("CALLHOOK_DB");
    if (db == NULL || *db == '\0')
        db = "sqlite:var/callhook.db";
    const char *key_file = getenv("CALLHOOK_DATA_KEY_FILE");
    const char *new_key_file = NULL;
    int c;
    optind = 1;
    argc--;
    argv++;
    while ((c = cli_getopt("store", argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'd':
            db = optarg;
            break;
        case 'k':
            key_file = optarg;
            break;
        case 'n':
            new_key_file = optarg;
            break;
        case 'h':
            cmd_store_help();
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (optind < argc)
        return cli_usage_error("store", "unexpected '%s'", argv[optind]);
    if (!rekey && new_key_file)
        return cli_usage_error("store", "--new-key-file is for 'store rekey'");
    struct ch_error err = {0};
    if (run(rekey, db, key_file, new_key_file, &err) != CH_OK) {
        fprintf(stderr, "callhook store %s: %s\n", sub, err.message);
        return CLI_FAIL;
    }
    return CLI_OK;
}
