/* `callhook status`: what a running serve says of itself, its store and each Voice App
 * (docs/API.md, "GET /v1/status"), as tables, or its JSON as it is. */
#include "cli/cli.h"

#include "cli/client.h"

#include <stdio.h>
#include <string.h>

void cmd_status_help(void)
{
    puts("usage: callhook status [--json]\n"
         "\n"
         "Asks a running serve how it is: its version, listen address and uptime; its store\n"
         "(SQLite file or PostgreSQL host, password masked), whether it is sealed (encrypted at\n"
         "rest) and its schema version; and for each Voice App, those in trouble first: enabled\n"
         "or disabled and why, its events by status (pending, failed: will retry, delivering,\n"
         "delivered, dead: retries ran out, skipped: no URL for the event; parked: waiting for\n"
         "the app to be enabled), how long the oldest event still to be sent has waited (of\n"
         "enabled apps), and its last error. Needs a read or admin key. It reads every stored\n"
         "event: run it when you need it, do not poll it (GET /metrics is for that).\n"
         "\n" CLI_CLIENT_OPTIONS_HELP "\n"
         "\n"
         "examples:\n"
         "  callhook status\n"
         "  callhook messages --app ID --status dead   # what an app's DEAD column counts");
}

static const struct option status_options[] = {
    CLI_CLIENT_OPTIONS,
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* A number of seconds as "45s", "5m12s", "3h04m" or "2d03h"; "-" for none. */
static const char *format_age(const json_t *v, char *buf, size_t cap)
{
    if (!json_is_integer(v)) {
        snprintf(buf, cap, "-");
        return buf;
    }
    long long s = (long long)json_integer_value(v);
    if (s < 60)
        snprintf(buf, cap, "%llds", s);
    else if (s < 3600)
        snprintf(buf, cap, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, cap, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, cap, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
    return buf;
}

static long long int_of(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

static const char *str_of(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* One row of the apps' table: the app's (or the totals') state and counts. */
static bool add_counts_row(struct cli_table *t, const char *name, const char *state,
                           const json_t *counts, const json_t *oldest_age)
{
    static const char *const keys[] = {"pending", "failed",  "delivering", "delivered",
                                       "dead",    "skipped", "parked"};
    char nums[7][24], age[32];
    const char *row[10] = {name, state};
    for (int i = 0; i < 7; i++) {
        snprintf(nums[i], sizeof nums[i], "%lld", int_of(counts, keys[i]));
        row[2 + i] = nums[i];
    }
    row[9] = format_age(oldest_age, age, sizeof age);
    return cli_table_add(t, row);
}

/* A string member for printf: "?" when absent. */
static const char *shown(const json_t *o, const char *key)
{
    const char *s = str_of(o, key);
    return s ? s : "?";
}

static void print_head(const json_t *status)
{
    const json_t *node = json_object_get(status, "node");
    const json_t *store = json_object_get(status, "store");
    char started[40], up[32];
    printf("node    callhook %s listening on %s, up %s (started %s)\n", shown(node, "version"),
           shown(node, "listen"), format_age(json_object_get(node, "uptimeSeconds"), up, sizeof up),
           cli_format_time(int_of(node, "startedAt"), started, sizeof started));
    printf("store   %s %s, schema version %lld, %s\n", shown(store, "kind"),
           shown(store, "location"), int_of(store, "schemaVersion"),
           json_is_true(json_object_get(store, "sealed")) ? "sealed (encrypted at rest)"
                                                          : "not sealed (stored in clear)");
}

/* The apps' table, then their last errors. False when out of memory. */
static bool print_apps(const json_t *status)
{
    static const char *const headers[] = {"APP",        "STATE",         "PENDING", "FAILED",
                                          "DELIVERING", "DELIVERED",     "DEAD",    "SKIPPED",
                                          "PARKED",     "OLDEST PENDING"};
    static const char *const error_headers[] = {"APP", "MESSAGE", "ARRIVED", "LAST ERROR"};
    const json_t *apps = json_object_get(status, "apps");
    const json_t *totals = json_object_get(status, "totals");
    struct cli_table t, e;
    cli_table_init(&t, 10, headers);
    cli_table_init(&e, 4, error_headers);
    bool ok = true;
    size_t i;
    const json_t *a;
    json_array_foreach(apps, i, a)
    {
        char state[240], at[40];
        const char *reason = str_of(a, "disabledReason");
        if (json_is_true(json_object_get(a, "enabled")))
            snprintf(state, sizeof state, "enabled");
        else
            snprintf(state, sizeof state, "disabled%s%s", reason ? ": " : "", reason ? reason : "");
        ok = ok && add_counts_row(&t, str_of(a, "id"), state, json_object_get(a, "counts"),
                                  json_object_get(a, "oldestPendingAgeSeconds"));
        if (str_of(a, "lastError") != NULL) {
            const char *row[] = {str_of(a, "id"), str_of(a, "lastErrorMessageId"),
                                 cli_format_time(int_of(a, "lastErrorAt"), at, sizeof at),
                                 str_of(a, "lastError")};
            ok = ok && cli_table_add(&e, row);
        }
    }
    char state[64];
    snprintf(state, sizeof state, "%lld apps, %lld disabled", int_of(totals, "apps"),
             int_of(totals, "disabledApps"));
    ok = ok && add_counts_row(&t, "(total)", state, totals,
                              json_object_get(totals, "oldestPendingAgeSeconds"));
    if (ok) {
        putchar('\n');
        cli_table_flush(&t, stdout);
        if (e.nrows > 0) {
            puts("\nlast errors (each app's newest message that has one; 'callhook message ID' "
                 "shows its attempts):");
            cli_table_flush(&e, stdout);
        }
    }
    cli_table_release(&t);
    cli_table_release(&e);
    return ok;
}

int cmd_status(int argc, char **argv)
{
    struct cli_client_options o;
    cli_client_options_init(&o);
    int c;
    optind = 1;
    while ((c = cli_getopt("status", argc, argv, "h", status_options, NULL)) != -1) {
        int shared = cli_client_option(&o, c, optarg);
        if (shared < 0)
            return CLI_USAGE;
        if (shared > 0)
            continue;
        if (c == 'h') {
            cmd_status_help();
            return CLI_OK;
        }
        return CLI_USAGE;
    }
    if (optind < argc)
        return cli_usage_error("status", "takes no arguments, not '%s'", argv[optind]);
    struct cli_client *client = NULL;
    int rc = cli_client_open("status", &o, &client);
    if (rc != CLI_OK)
        return rc;
    struct cli_response r;
    cli_response_init(&r);
    json_t *status = NULL;
    rc = cli_api(client, "status", "GET", "/v1/status", NULL, 0, NULL, &r, &status);
    if (rc == CLI_OK && o.json) {
        printf("%s\n", r.body.data ? r.body.data : "");
    } else if (rc == CLI_OK) {
        print_head(status);
        if (json_array_size(json_object_get(status, "apps")) == 0)
            printf("\nno voice apps yet: 'callhook app put ID --begin-url URL' makes one\n");
        else if (!print_apps(status)) {
            fprintf(stderr, "callhook status: out of memory\n");
            rc = CLI_FAIL;
        }
    }
    json_decref(status);
    cli_response_release(&r);
    cli_client_free(client);
    return rc;
}
