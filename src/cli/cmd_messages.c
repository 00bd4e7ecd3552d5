/* `callhook send`, `messages`, `message`, `replay` and `recover`: post events to a running serve
 * and follow what became of them (docs/API.md, "Ingest" and "Messages"). */
#include "cli/cli.h"

#include "cli/client.h"

#include <callhook/callhook.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PAGES 100000 /* --all gives up after this many pages: a cursor that never ends */

enum {
    OPT_APP = CLI_OPT_FIRST_FREE,
    OPT_IDEMPOTENCY_KEY,
    OPT_EVENT,
    OPT_STATUS,
    OPT_CALL,
    OPT_SINCE,
    OPT_LIMIT,
    OPT_CURSOR,
    OPT_ALL,
    OPT_NEW_ID,
};

void cmd_send_help(void)
{
    puts("usage: callhook send begin|end --app ID [--idempotency-key K] [FILE|-]\n"
         "\n"
         "Posts one call record (the JSON the calling platform sends, from FILE or standard\n"
         "input) to a running serve as a begin-call or end-call event of Voice App ID, as the\n"
         "platform would. serve stores it and delivers it to the app's URL. Prints the message\n"
         "id, and whether serve had it already: a repeat of the same event for the same call\n"
         "(same ActiveCallId, else CorrelationId, else idempotency key) is a duplicate, answered\n"
         "with the first one's id and not delivered again. Needs an ingest or admin key.\n"
         "\n"
         "  --app ID               the Voice App (see 'callhook app list')\n"
         "  --idempotency-key K    the dedupe key for a record with neither ActiveCallId nor\n"
         "                         CorrelationId\n" CLI_CLIENT_OPTIONS_HELP "\n"
         "\n"
         "example:\n"
         "  callhook send begin --app support tests/data/payloads/begin-call.json\n"
         "  callhook messages --app support --limit 5");
}

void cmd_messages_help(void)
{
    puts("usage: callhook messages [--app ID] [--event begin|end] [--status S] [--call ID]\n"
         "                         [--since T] [--limit N] [--cursor C | --all]\n"
         "\n"
         "Lists the events serve has stored, newest first, with their delivery state: id, Voice\n"
         "App, event, status, attempts so far, when it arrived, and the last attempt's error.\n"
         "Needs a read or admin key.\n"
         "\n"
         "  --app ID         only this Voice App's\n"
         "  --event E        only begin (begin-call) or end (end-call) events\n"
         "  --status S       only those pending, delivering, delivered, failed (will retry),\n"
         "                   dead (retries ran out) or skipped (no URL for the event)\n"
         "  --call ID        only this call's (its ActiveCallId, or what else deduped it)\n"
         "  --since T        only those that arrived since T: unix seconds, or a time ago\n"
         "                   such as 90s, 15m, 2h, 7d\n"
         "  --limit N        at most N per page, 1 to 500 (default 50)\n"
         "  --cursor C       the page after the one whose nextCursor was C\n"
         "  --all            every page, not just the first\n" CLI_CLIENT_OPTIONS_HELP "\n"
         "\n"
         "examples:\n"
         "  callhook messages --status dead --since 1d      # what needs a replay or recover\n"
         "  callhook message msg_2xU9...                    # one of them, with its attempts");
}

void cmd_message_help(void)
{
    puts("usage: callhook message ID\n"
         "\n"
         "Shows one stored event (ID from 'callhook send' or 'callhook messages') and every\n"
         "delivery attempt made for it: when, how long it took, the HTTP status, the error and\n"
         "the start of the receiver's answer. Needs a read or admin key.\n"
         "\n" CLI_CLIENT_OPTIONS_HELP);
}

void cmd_replay_help(void)
{
    puts("usage: callhook replay ID [--new-id]\n"
         "\n"
         "Delivers a stored event again, now, whatever its state (delivered, dead, ...). A\n"
         "plain replay makes new attempts with the same webhook-id: a receiver that dedupes\n"
         "(callhook receive does) answers 200 duplicate and runs nothing again. Needs an admin\n"
         "key.\n"
         "\n"
         "  --new-id   send the same record as a new message, with a new webhook-id (printed),\n"
         "             for a receiver that acknowledged the event, then lost it, and dedupes by\n"
         "             webhook-id. callhook receive also dedupes by event and call id: while its\n"
         "             inbox holds the call, it still answers 200 duplicate (docs/OPERATIONS.md)\n"
         "\n" CLI_CLIENT_OPTIONS_HELP);
}

void cmd_recover_help(void)
{
    puts("usage: callhook recover --app ID [--since T]\n"
         "\n"
         "After a receiver's outage: makes every event of the Voice App that is dead (retries\n"
         "ran out) or failed (waiting to retry) and arrived since T due again now. Prints how\n"
         "many were requeued. Needs an admin key.\n"
         "\n"
         "  --app ID     the Voice App\n"
         "  --since T    unix seconds, or a time ago such as 90s, 15m, 2h, 7d (default: all)\n"
         "\n" CLI_CLIENT_OPTIONS_HELP);
}

/* The options the message commands take, between them; each checks which ones it accepts. */
struct msg_args {
    struct cli_client_options conn;
    const char *app, *idempotency_key, *event, *status, *call, *cursor;
    long long since; /* -1: not given */
    long long limit; /* 0: not given */
    bool all;
    bool new_id;
};

static const struct option msg_options[] = {
    CLI_CLIENT_OPTIONS,
    {"app", required_argument, NULL, OPT_APP},
    {"idempotency-key", required_argument, NULL, OPT_IDEMPOTENCY_KEY},
    {"event", required_argument, NULL, OPT_EVENT},
    {"status", required_argument, NULL, OPT_STATUS},
    {"call", required_argument, NULL, OPT_CALL},
    {"since", required_argument, NULL, OPT_SINCE},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"cursor", required_argument, NULL, OPT_CURSOR},
    {"all", no_argument, NULL, OPT_ALL},
    {"new-id", no_argument, NULL, OPT_NEW_ID},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

const char *cli_event_name(const char *text)
{
    if (strcmp(text, "begin") == 0 || strcmp(text, "begin-call") == 0)
        return "begin-call";
    if (strcmp(text, "end") == 0 || strcmp(text, "end-call") == 0)
        return "end-call";
    return NULL;
}

/*
 * Parses argv into a. `allowed` lists the option values (OPT_*) the command takes. Returns -1
 * to go on, else the exit code (after --help or a bad option).
 */
static int parse_args(const char *cmd, void (*help)(void), int argc, char **argv,
                      const int *allowed, size_t nallowed, struct msg_args *a)
{
    memset(a, 0, sizeof *a);
    cli_client_options_init(&a->conn);
    a->since = -1;
    int c;
    optind = 1;
    while ((c = cli_getopt(cmd, argc, argv, "h", msg_options, NULL)) != -1) {
        int shared = cli_client_option(&a->conn, c, optarg);
        if (shared < 0)
            return CLI_USAGE;
        if (shared > 0)
            continue;
        if (c == 'h') {
            help();
            return CLI_OK;
        }
        if (c == '?')
            return CLI_USAGE;
        bool ok = false;
        for (size_t i = 0; i < nallowed; i++)
            ok = ok || allowed[i] == c;
        if (!ok) {
            for (const struct option *o = msg_options; o->name; o++)
                if (o->val == c)
                    return cli_usage_error(cmd, "--%s does not go with '%s'", o->name, cmd);
            return CLI_USAGE;
        }
        switch (c) {
        case OPT_APP:
            a->app = optarg;
            break;
        case OPT_IDEMPOTENCY_KEY:
            if (*optarg == '\0' || strpbrk(optarg, "\r\n") != NULL || strlen(optarg) > 255)
                return cli_usage_error(cmd, "--idempotency-key wants 1 to 255 characters on "
                                            "one line");
            a->idempotency_key = optarg;
            break;
        case OPT_EVENT:
            if ((a->event = cli_event_name(optarg)) == NULL)
                return cli_usage_error(
                    cmd, "--event is begin or end (or begin-call, end-call), not '%s'", optarg);
            break;
        case OPT_STATUS:
            a->status = optarg;
            break;
        case OPT_CALL:
            a->call = optarg;
            break;
        case OPT_SINCE:
            if (!cli_parse_since("--since", optarg, &a->since))
                return CLI_USAGE;
            break;
        case OPT_LIMIT:
            if (!cli_parse_ll("--limit", optarg, &a->limit))
                return CLI_USAGE;
            if (a->limit < 1 || a->limit > 500)
                return cli_usage_error(cmd, "--limit is 1 to 500");
            break;
        case OPT_CURSOR:
            a->cursor = optarg;
            break;
        case OPT_ALL:
            a->all = true;
            break;
        case OPT_NEW_ID:
            a->new_id = true;
            break;
        default:
            return CLI_USAGE;
        }
    }
    return -1;
}

/* Builds "/v1/voice-apps/ID/SUFFIX" (or the messages equivalent) with ID escaped. */
static bool id_path(const char *cmd, char *out, size_t cap, const char *prefix, const char *id,
                    const char *suffix)
{
    char escaped[3 * 256 + 1];
    if (*id == '\0' || !cli_escape(id, escaped, sizeof escaped)) {
        cli_usage_error(cmd, "'%s' is not an id (1 to 256 characters)", id);
        return false;
    }
    snprintf(out, cap, "%s/%s%s", prefix, escaped, suffix);
    return true;
}

/* ---- send ---- */

int cmd_send(int argc, char **argv)
{
    static const int allowed[] = {OPT_APP, OPT_IDEMPOTENCY_KEY};
    struct msg_args a;
    int rc = parse_args("send", cmd_send_help, argc, argv, allowed, 2, &a);
    if (rc >= 0)
        return rc;
    if (optind >= argc)
        return cli_usage_error("send", "which event: begin or end?");
    const char *event = cli_event_name(argv[optind]);
    if (event == NULL)
        return cli_usage_error("send", "the event is begin or end, not '%s'", argv[optind]);
    if (a.app == NULL)
        return cli_usage_error("send", "--app is required: the Voice App the event is for");
    if (argc - optind > 2)
        return cli_usage_error("send", "one FILE at most");
    if (argc - optind < 2 && isatty(STDIN_FILENO))
        return cli_usage_error("send", "give the record: a FILE, or '-' for standard input");
    char path[1024];
    char suffix[16];
    snprintf(suffix, sizeof suffix, "/%s", event);
    if (!id_path("send", path, sizeof path, "/v1/voice-apps", a.app, suffix))
        return CLI_USAGE;
    struct cli_client *c = NULL;
    if ((rc = cli_client_open("send", &a.conn, &c)) != CLI_OK)
        return rc;
    char *body = NULL;
    size_t len = 0;
    rc = CLI_FAIL;
    if (!cli_read_input(argc - optind > 1 ? argv[optind + 1] : NULL, CLI_MAX_INPUT_BYTES, &body,
                        &len))
        goto done;
    char header[300];
    if (a.idempotency_key)
        snprintf(header, sizeof header, "Idempotency-Key: %s", a.idempotency_key);
    struct cli_response r;
    cli_response_init(&r);
    json_t *answer = NULL;
    rc =
        cli_api(c, "send", "POST", path, body, len, a.idempotency_key ? header : NULL, &r, &answer);
    if (rc != CLI_OK && r.status == 400 && r.body.data && strstr(r.body.data, "no_dedupe_key"))
        fprintf(stderr,
                "  hint: pass --idempotency-key K, the same K for a repeat of this event\n");
    if (rc == CLI_OK && a.conn.json)
        printf("%s\n", r.body.data);
    else if (rc == CLI_OK) {
        const char *id = json_string_value(json_object_get(answer, "messageId"));
        if (json_is_true(json_object_get(answer, "duplicate")))
            printf("%s duplicate: serve already has this %s, so it is not delivered again\n",
                   id ? id : "?", event);
        else {
            /* What serve says it stored, not what we hope: a skipped event is never sent. */
            const char *status = json_string_value(json_object_get(answer, "status"));
            const char *app = a.app ? a.app : "ID";
            if (status && strcmp(status, "skipped") == 0)
                printf("%s recorded as skipped: voice app '%s' has no URL for %s, so nothing "
                       "is sent (give it one: callhook app set %s --%s-url URL)\n",
                       id ? id : "?", app, event, app,
                       strcmp(event, "begin-call") == 0 ? "begin" : "end");
            else if (status && strcmp(status, "pending") == 0)
                printf("%s accepted: stored, waiting for its begin-call or for the voice app to "
                       "be enabled (see 'callhook message %s')\n",
                       id ? id : "?", id ? id : "ID");
            else
                printf("%s accepted: stored, being delivered (see 'callhook message %s')\n",
                       id ? id : "?", id ? id : "ID");
        }
    }
    json_decref(answer);
    cli_response_release(&r);
done:
    free(body);
    cli_client_free(c);
    return rc;
}

/* ---- messages ---- */

static bool add_query(struct buf *q, const char *name, const char *value)
{
    char escaped[1024];
    if (value == NULL)
        return true;
    if (!cli_escape(value, escaped, sizeof escaped))
        return false;
    return buf_add(q, q->len ? "&" : "?", 1) && buf_add(q, name, strlen(name)) &&
           buf_add(q, "=", 1) && buf_add(q, escaped, strlen(escaped));
}

static bool add_message_row(struct cli_table *t, const json_t *m)
{
    char attempts[24], created[40];
    snprintf(attempts, sizeof attempts, "%lld",
             (long long)json_integer_value(json_object_get(m, "attemptCount")));
    const char *row[] = {
        json_string_value(json_object_get(m, "id")),
        json_string_value(json_object_get(m, "voiceAppId")),
        json_string_value(json_object_get(m, "event")),
        json_string_value(json_object_get(m, "status")),
        attempts,
        cli_format_time((long long)json_integer_value(json_object_get(m, "createdAt")), created,
                        sizeof created),
        json_string_value(json_object_get(m, "lastError")),
    };
    return cli_table_add(t, row);
}

static int list_messages(struct cli_client *c, const struct msg_args *a)
{
    char since[24], limit[24];
    snprintf(since, sizeof since, "%lld", a->since);
    snprintf(limit, sizeof limit, "%lld", a->limit);
    static const char *const headers[] = {"ID",       "APP",     "EVENT",     "STATUS",
                                          "ATTEMPTS", "CREATED", "LAST ERROR"};
    struct cli_table t;
    cli_table_init(&t, 7, headers);
    json_t *all = a->conn.json && a->all ? json_array() : NULL;
    char cursor[64] = "";
    if (a->cursor)
        snprintf(cursor, sizeof cursor, "%s", a->cursor);
    struct cli_response r;
    cli_response_init(&r);
    size_t shown = 0;
    bool more_pages = false; /* the page had a nextCursor and --all was not given */
    int rc = CLI_OK;
    for (int page = 0; rc == CLI_OK; page++) {
        struct buf q;
        buf_init(&q, 4096);
        bool ok = add_query(&q, "voiceAppId", a->app) && add_query(&q, "event", a->event) &&
                  add_query(&q, "status", a->status) && add_query(&q, "activeCallId", a->call) &&
                  add_query(&q, "since", a->since >= 0 ? since : NULL) &&
                  add_query(&q, "limit", a->limit > 0 ? limit : NULL) &&
                  add_query(&q, "cursor", cursor[0] ? cursor : NULL);
        char path[4200];
        snprintf(path, sizeof path, "/v1/messages%s", q.data ? q.data : "");
        buf_release(&q);
        if (!ok) {
            fprintf(stderr, "callhook messages: a filter value is too long\n");
            rc = CLI_USAGE;
            break;
        }
        json_t *answer = NULL;
        if ((rc = cli_api(c, "messages", "GET", path, NULL, 0, NULL, &r, &answer)) != CLI_OK)
            break;
        json_t *data = json_object_get(answer, "data");
        const char *next = json_string_value(json_object_get(answer, "nextCursor"));
        size_t i;
        json_t *m;
        if (a->conn.json && !a->all)
            printf("%s\n", r.body.data);
        else if (all != NULL)
            json_array_extend(all, data);
        else {
            json_array_foreach(data, i, m)
            {
                if (!add_message_row(&t, m)) {
                    fprintf(stderr, "callhook messages: out of memory\n");
                    rc = CLI_FAIL;
                }
            }
            shown += json_array_size(data);
            if (json_array_size(data) > 0)
                cli_table_flush(&t, stdout);
        }
        bool more = next != NULL && a->all && page + 1 < MAX_PAGES;
        if (more && strcmp(next, cursor) == 0) {
            fprintf(stderr, "callhook messages: serve gave the same cursor twice; stopping\n");
            rc = CLI_FAIL;
            more = false;
        }
        more_pages = next != NULL && !a->all;
        if (next != NULL && !a->all && !a->conn.json)
            fprintf(stderr, "(more: --cursor %s for the next page, or --all)\n", next);
        if (more)
            snprintf(cursor, sizeof cursor, "%s", next);
        json_decref(answer);
        if (!more)
            break;
    }
    if (rc == CLI_OK && all != NULL) {
        json_t *out = json_pack("{s:o, s:n}", "data", all, "nextCursor");
        all = NULL;
        char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
        if (text)
            printf("%s\n", text);
        else {
            fprintf(stderr, "callhook messages: out of memory\n");
            rc = CLI_FAIL;
        }
        free(text);
        json_decref(out);
    }
    if (rc == CLI_OK && !a->conn.json && shown == 0) {
        bool filtered = a->app || a->event || a->status || a->call || a->since >= 0;
        printf("%s\n", more_pages ? "none on this page"
                       : filtered ? "no messages match these filters"
                                  : "no messages yet: 'callhook send' posts one");
    }
    json_decref(all);
    cli_response_release(&r);
    cli_table_release(&t);
    return rc;
}

int cmd_messages(int argc, char **argv)
{
    static const int allowed[] = {OPT_APP,   OPT_EVENT, OPT_STATUS, OPT_CALL,
                                  OPT_SINCE, OPT_LIMIT, OPT_CURSOR, OPT_ALL};
    struct msg_args a;
    int rc = parse_args("messages", cmd_messages_help, argc, argv, allowed,
                        sizeof allowed / sizeof allowed[0], &a);
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return cli_usage_error("messages",
                               "unexpected argument '%s' (for one message: "
                               "'callhook message ID')",
                               argv[optind]);
    if (a.all && a.cursor)
        return cli_usage_error("messages", "--all starts at the newest: leave out --cursor");
    struct cli_client *c = NULL;
    if ((rc = cli_client_open("messages", &a.conn, &c)) != CLI_OK)
        return rc;
    rc = list_messages(c, &a);
    cli_client_free(c);
    return rc;
}

/* ---- message ---- */

static void print_attempts(const json_t *attempts)
{
    static const char *const headers[] = {"#",     "AT",    "DURATION", "HTTP",
                                          "CLASS", "ERROR", "RESPONSE"};
    struct cli_table t;
    cli_table_init(&t, 7, headers);
    size_t i;
    json_t *at;
    json_array_foreach(attempts, i, at)
    {
        char n[24], when[64], duration[32], status[24];
        long long at_ms = (long long)json_integer_value(json_object_get(at, "atMs"));
        char day[40];
        cli_format_time(at_ms / 1000, day, sizeof day);
        /* "2026-11-27 09:14:03Z" shown as "2026-11-27 09:14:03.123Z". */
        size_t dlen = strlen(day);
        if (dlen > 1 && day[dlen - 1] == 'Z')
            snprintf(when, sizeof when, "%.*s.%03lldZ", (int)(dlen - 1), day, at_ms % 1000);
        else
            snprintf(when, sizeof when, "%s", day);
        snprintf(n, sizeof n, "%zu", i + 1);
        snprintf(duration, sizeof duration, "%lld ms",
                 (long long)json_integer_value(json_object_get(at, "durationMs")));
        long long http = (long long)json_integer_value(json_object_get(at, "httpStatus"));
        snprintf(status, sizeof status, "%lld", http);
        const char *row[] = {
            n,
            when,
            duration,
            http ? status : "-",
            json_string_value(json_object_get(at, "errorClass")),
            json_string_value(json_object_get(at, "error")),
            json_string_value(json_object_get(at, "response")),
        };
        if (!cli_table_add(&t, row))
            break;
    }
    if (json_array_size(attempts) == 0)
        printf("no attempts yet\n");
    else
        cli_table_flush(&t, stdout);
    cli_table_release(&t);
}

static const struct cli_label message_labels[] = {
    {"id", "id"},
    {"voiceAppId", "voice app"},
    {"event", "event"},
    {"dedupeKey", "dedupe key"},
    {"correlationId", "correlation"},
    {"callType", "call type"},
    {"status", "status"},
    {"attemptCount", "attempts"},
    {"createdAt", "created"},
    {"nextAttemptAt", "next attempt"},
    {"deliveredAt", "delivered"},
    {"lastError", "last error"},
    {"bodyBytes", "body bytes"},
};

int cmd_message(int argc, char **argv)
{
    struct msg_args a;
    int rc = parse_args("message", cmd_message_help, argc, argv, NULL, 0, &a);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return cli_usage_error("message", "give one message ID (e.g. from 'callhook messages')");
    char path[1024];
    if (!id_path("message", path, sizeof path, "/v1/messages", argv[optind], ""))
        return CLI_USAGE;
    struct cli_client *c = NULL;
    if ((rc = cli_client_open("message", &a.conn, &c)) != CLI_OK)
        return rc;
    struct cli_response r;
    cli_response_init(&r);
    json_t *m = NULL;
    rc = cli_api(c, "message", "GET", path, NULL, 0, NULL, &r, &m);
    if (rc == CLI_OK && a.conn.json)
        printf("%s\n", r.body.data);
    else if (rc == CLI_OK) {
        json_t *ct = json_object_get(m, "callType");
        if (json_is_integer(ct)) {
            char name[CH_CALL_TYPE_NAME_MAX], text[CH_CALL_TYPE_NAME_MAX + 24];
            long long v = (long long)json_integer_value(ct);
            ch_call_type_name(v >= 0 && v <= 8 ? CH_CALL_TYPE_KNOWN : CH_CALL_TYPE_UNKNOWN, v, name,
                              sizeof name);
            snprintf(text, sizeof text, "%lld (%s)", v, name);
            json_object_set_new(m, "callType", json_string(text));
        }
        static const char *const skip[] = {"attempts", NULL};
        cli_print_object(m, message_labels, sizeof message_labels / sizeof message_labels[0], skip,
                         stdout);
        printf("\n");
        print_attempts(json_object_get(m, "attempts"));
    }
    json_decref(m);
    cli_response_release(&r);
    cli_client_free(c);
    return rc;
}

/* ---- replay, recover ---- */

int cmd_replay(int argc, char **argv)
{
    static const int allowed[] = {OPT_NEW_ID};
    struct msg_args a;
    int rc = parse_args("replay", cmd_replay_help, argc, argv, allowed, 1, &a);
    if (rc >= 0)
        return rc;
    if (argc - optind != 1)
        return cli_usage_error("replay", "give one message ID (e.g. from 'callhook messages')");
    const char *id = argv[optind];
    char path[1024];
    if (!id_path("replay", path, sizeof path, "/v1/messages", id,
                 a.new_id ? "/replay?newId=true" : "/replay"))
        return CLI_USAGE;
    struct cli_client *c = NULL;
    if ((rc = cli_client_open("replay", &a.conn, &c)) != CLI_OK)
        return rc;
    struct cli_response r;
    cli_response_init(&r);
    json_t *answer = NULL;
    rc = cli_api(c, "replay", "POST", path, NULL, 0, NULL, &r, &answer);
    const char *copy = json_string_value(json_object_get(answer, "messageId"));
    if (rc == CLI_OK && a.conn.json)
        printf("%s\n", r.body.data);
    else if (rc == CLI_OK && a.new_id)
        printf("%s is sent again as %s, a new webhook-id, due now (see 'callhook message %s')\n",
               id, copy ? copy : "?", copy ? copy : "ID");
    else if (rc == CLI_OK)
        printf("%s is due again now, with the same webhook-id (see 'callhook message %s')\n", id,
               id);
    json_decref(answer);
    cli_response_release(&r);
    cli_client_free(c);
    return rc;
}

int cmd_recover(int argc, char **argv)
{
    static const int allowed[] = {OPT_APP, OPT_SINCE};
    struct msg_args a;
    int rc = parse_args("recover", cmd_recover_help, argc, argv, allowed, 2, &a);
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return cli_usage_error("recover", "unexpected argument '%s'", argv[optind]);
    if (a.app == NULL)
        return cli_usage_error("recover", "--app is required: the Voice App to recover");
    char path[1024], suffix[48];
    snprintf(suffix, sizeof suffix, "/recover?since=%lld", a.since >= 0 ? a.since : 0);
    if (!id_path("recover", path, sizeof path, "/v1/voice-apps", a.app, suffix))
        return CLI_USAGE;
    struct cli_client *c = NULL;
    if ((rc = cli_client_open("recover", &a.conn, &c)) != CLI_OK)
        return rc;
    struct cli_response r;
    cli_response_init(&r);
    json_t *answer = NULL;
    rc = cli_api(c, "recover", "POST", path, NULL, 0, NULL, &r, &answer);
    if (rc == CLI_OK && a.conn.json)
        printf("%s\n", r.body.data);
    else if (rc == CLI_OK) {
        long long n = (long long)json_integer_value(json_object_get(answer, "requeued"));
        printf("requeued %lld message%s of voice app '%s'%s\n", n, n == 1 ? "" : "s", a.app,
               n ? ": they are due now (see 'callhook messages')" : "");
    }
    json_decref(answer);
    cli_response_release(&r);
    cli_client_free(c);
    return rc;
}
