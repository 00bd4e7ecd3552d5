/* `callhook receive` and `callhook inbox`: the receiving daemon and its inbox. */
#include "cli/cli.h"

#include "receive/escape.h"
#include "receive/receiver.h"
#include "util/clock.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cmd_receive_help(void)
{
    puts("usage: callhook receive --secret @KEY_FILE (--tls-cert F --tls-key F | --insecure-http)\n"
         "                        [--exec CMD | --jsonl FILE] [--route SEL=HANDLER ...] ...\n"
         "\n"
         "Receives begin-call and end-call deliveries done right: verifies the sender (Standard\n"
         "Webhooks signature and timestamp, and optionally a shared-secret header and client\n"
         "certificates), drops duplicates (same webhook-id, or same event and call), writes each\n"
         "new event to the inbox on disk before answering 202 (a duplicate gets 200), then runs\n"
         "the handler asynchronously, retrying failures and parking what keeps failing.\n"
         "\n"
         "Any path is accepted for POST; the event comes from X-Call-Event or a path ending in\n"
         "begin-call/end-call. Answers: 202 new, 200 duplicate, 401 verification failed (the\n"
         "reason is in the body), 400 not a JSON object, 404 no event kind, 405 not POST, 413\n"
         "too large, 503 send it again (busy, with Retry-After; the store failed; shutting\n"
         "down).\n"
         "\n"
         "Handlers: --exec CMD runs CMD with the raw body on stdin and CALL_EVENT,\n"
         "CALL_ACTIVE_CALL_ID, CALL_CORRELATION_ID, CALL_TYPE, CALL_TYPE_NAME, WEBHOOK_ID in its\n"
         "environment; a non-zero exit is a failure. Of the receiver's environment a command\n"
         "gets PATH, HOME, LANG, LC_* and what --handler-env NAME names, nothing else (never the\n"
         "receiver's settings or keys). --jsonl FILE appends one JSON line per event.\n"
         "--route picks a handler by event and CallType (first match wins); everything else,\n"
         "unknown CallTypes included, goes to the default handler:\n"
         "  --route 'end-call/MissedCall,VoiceMail=exec:./call-back.sh'\n"
         "  --route '*/OutboundCall=jsonl:outbound.jsonl'\n"
         "\n"
         "Keys: --secret (and --public-key) take @FILE (a file only its owner may read) or\n"
         "env:NAME (a variable of receive's environment), keeping the key off the command\n"
         "line, where every user of the machine can read it; a key given as is works too.\n"
         "\n"
         "Settings come from --config FILE (name = value), then the environment, then flags.\n");
    config_print_help(&receive_config_table, stdout);
    puts("\nexample, in front of a script, locally:\n"
         "  callhook receive --insecure-http --listen 127.0.0.1:9000 \\\n"
         "      --secret env:WEBHOOK_SECRET --exec ./on-call-event.sh");
}

void cmd_inbox_help(void)
{
    puts("usage: callhook inbox list [--status pending|running|done|failed|purged] [--limit N]\n"
         "       callhook inbox show WEBHOOK_ID\n"
         "       callhook inbox retry WEBHOOK_ID | --all-failed\n"
         "       callhook inbox purge [--older-than-s N]\n"
         "\n"
         "Looks into the inbox of callhook receive (--store PATH, default CALLHOOK_RECEIVE_STORE\n"
         "or var/inbox.db): what arrived, what failed and why; 'retry' runs failed events again\n"
         "with fresh tries (a running receiver picks them up); 'purge' removes the records of\n"
         "processed events older than N seconds, default all of them. Their dedupe keys stay\n"
         "as long as a replay of their request could still be accepted (twice the receiver's\n"
         "--tolerance-s): listed as 'purged', a replay is still a duplicate. Failed and pending\n"
         "events are never purged.");
}

int cmd_receive(int argc, char **argv)
{
    static struct receive_config cfg; /* large: off the stack */
    config_init(&receive_config_table, &cfg);
    struct ch_error err = {0};
    bool helped;
    int rc = cli_settings_parse("receive", &receive_config_table, &cfg, argc, argv,
                                cmd_receive_help, &helped);
    if (rc != CLI_OK || helped)
        return rc;
    if (receive_config_check(&cfg, &err) != CH_OK) {
        fprintf(stderr, "callhook receive: %s\n", err.message);
        return CLI_USAGE;
    }
    rc = receive_run(&cfg, &err);
    if (rc != 0)
        fprintf(stderr, "callhook receive: %s\n", err.message);
    return rc == 0 ? CLI_OK : CLI_FAIL;
}

/* Fields of an event as the terminal may show them: no control character from a sender or a
 * handler's stderr reaches it raw (an escape sequence could rewrite what the operator sees). */
struct shown {
    char webhook_id[TEXT_ESCAPE_GROWTH * sizeof((struct ch_inbox_entry *)0)->webhook_id];
    char call_key[TEXT_ESCAPE_GROWTH * sizeof((struct ch_inbox_entry *)0)->call_key];
    char last_error[TEXT_ESCAPE_GROWTH * sizeof((struct ch_inbox_entry *)0)->last_error];
};

static void show_fields(const struct ch_inbox_entry *e, struct shown *out)
{
    text_escape(e->webhook_id, strlen(e->webhook_id), out->webhook_id, sizeof out->webhook_id);
    text_escape(e->call_key, strlen(e->call_key), out->call_key, sizeof out->call_key);
    text_escape(e->last_error, strlen(e->last_error), out->last_error, sizeof out->last_error);
}

static void print_entry_row(void *ctx, const struct ch_inbox_entry *e)
{
    (void)ctx;
    char when[32];
    time_t t = (time_t)e->received_at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%SZ", &tm);
    static struct shown f; /* large; one caller at a time */
    show_fields(e, &f);
    printf("%-32s %-10s %-8s %-8d %-21s %s\n", f.webhook_id, e->event,
           ch_inbox_status_name(e->status), e->attempts, when,
           f.last_error[0] ? f.last_error : "-");
}

/* The body as valid JSON of the same meaning, with nothing a terminal would obey. */
static void print_body(const struct ch_inbox_entry *e)
{
    size_t n = json_text_clean(e->body, e->body_len, true, NULL, 0);
    char *clean = malloc(n + 1);
    if (clean == NULL) {
        printf("(out of memory showing %zu bytes)\n", e->body_len);
        return;
    }
    json_text_clean(e->body, e->body_len, true, clean, n + 1);
    fwrite(clean, 1, n, stdout);
    putchar('\n');
    free(clean);
}

static int inbox_show(struct ch_inbox *ib, const char *id)
{
    struct ch_inbox_entry e;
    struct ch_error err = {0};
    if (ch_inbox_get(ib, id, &e, &err) != CH_OK) {
        fprintf(stderr, "callhook inbox: %s\n", err.message);
        return CLI_FAIL;
    }
    char type[CH_CALL_TYPE_NAME_MAX];
    enum ch_call_type_kind kind =
        !e.has_call_type
            ? CH_CALL_TYPE_ABSENT
            : (e.call_type >= 0 && e.call_type <= 8 ? CH_CALL_TYPE_KNOWN : CH_CALL_TYPE_UNKNOWN);
    static struct shown f;
    show_fields(&e, &f);
    printf("webhook-id    %s\nevent         %s\ncall          %s\nCallType      %s\n"
           "status        %s\nattempts      %d\nreceived at   %lld\nlast error    %s\n",
           f.webhook_id, e.event, f.call_key[0] ? f.call_key : "(none)",
           ch_call_type_name(kind, e.call_type, type, sizeof type), ch_inbox_status_name(e.status),
           e.attempts, e.received_at, f.last_error[0] ? f.last_error : "-");
    if (e.status == CH_INBOX_PURGED) {
        puts("body          (purged: only the dedupe keys are kept)");
    } else {
        printf("body (%zu bytes):\n", e.body_len);
        print_body(&e);
    }
    ch_inbox_entry_release(&e);
    return CLI_OK;
}

int cmd_inbox(int argc, char **argv)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"status", required_argument, NULL, 't'},
        {"limit", required_argument, NULL, 'l'},
        {"all-failed", no_argument, NULL, 'a'},
        {"older-than-s", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        return cli_usage_error("inbox", "which one: list, show, retry or purge?");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        cmd_inbox_help();
        return CLI_OK;
    }
    const char *store = getenv("CALLHOOK_RECEIVE_STORE");
    if (store == NULL || *store == '\0')
        store = "var/inbox.db";
    int status = -1;
    long long limit = 50, older = 0;
    bool all_failed = false;
    int c;
    optind = 1;
    argc--;
    argv++;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 's':
            store = optarg;
            break;
        case 't':
            status = -2;
            for (int s = 0; s <= CH_INBOX_PURGED; s++) {
                if (strcmp(optarg, ch_inbox_status_name((enum ch_inbox_status)s)) == 0)
                    status = s;
            }
            if (status == -2)
                return cli_usage_error("inbox",
                                       "--status is pending, running, done, failed or purged");
            break;
        case 'l':
            if (!cli_parse_ll("--limit", optarg, &limit) || limit < 1 || limit > 100000)
                return CLI_USAGE;
            break;
        case 'a':
            all_failed = true;
            break;
        case 'o':
            if (!cli_parse_ll("--older-than-s", optarg, &older) || older < 0)
                return CLI_USAGE;
            break;
        case 'h':
            cmd_inbox_help();
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    const char *arg = optind < argc ? argv[optind] : NULL;
    if (access(store, F_OK) != 0) {
        fprintf(stderr, "callhook inbox: no inbox at '%s' (give --store PATH)\n", store);
        return CLI_FAIL;
    }
    struct ch_inbox *ib = NULL;
    struct ch_error err = {0};
    if (ch_inbox_open(store, &ib, &err) != CH_OK) {
        fprintf(stderr, "callhook inbox: %s\n", err.message);
        return CLI_FAIL;
    }
    int rc = CLI_OK;
    long long n = 0;
    long long now_s = clock_wall_s();
    if (strcmp(sub, "list") == 0) {
        printf("%-32s %-10s %-8s %-8s %-21s %s\n", "WEBHOOK-ID", "EVENT", "STATUS", "ATTEMPTS",
               "RECEIVED", "LAST ERROR");
        if (ch_inbox_list(ib, status, (int)limit, print_entry_row, NULL, &err) != CH_OK)
            rc = CLI_FAIL;
    } else if (strcmp(sub, "show") == 0) {
        rc = arg ? inbox_show(ib, arg) : cli_usage_error("inbox", "show needs a WEBHOOK_ID");
    } else if (strcmp(sub, "retry") == 0) {
        if (!arg && !all_failed)
            rc = cli_usage_error("inbox", "retry needs a WEBHOOK_ID or --all-failed");
        else if (ch_inbox_retry(ib, arg, now_s * 1000, &n, &err) != CH_OK)
            rc = CLI_FAIL;
        else
            printf("%lld event%s will run again\n", n, n == 1 ? "" : "s");
    } else if (strcmp(sub, "purge") == 0) {
        if (ch_inbox_expire(ib, now_s - older + (older == 0 ? 1 : 0), &n, &err) != CH_OK)
            rc = CLI_FAIL;
        else
            printf("purged %lld processed event%s\n", n, n == 1 ? "" : "s");
    } else {
        rc = cli_usage_error("inbox", "unknown subcommand '%s'", sub);
    }
    if (rc == CLI_FAIL && err.message[0])
        fprintf(stderr, "callhook inbox: %s\n", err.message);
    ch_inbox_close(ib);
    return rc;
}
