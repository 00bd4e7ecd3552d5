/* `callhook receive` and `callhook inbox`: the receiving daemon and its inbox. */
#include "cli/cli.h"

#include "receive/escape.h"
#include "receive/receiver.h"
#include "receive/sink.h"
#include "util/clock.h"

#include <jansson.h>

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cmd_receive_help(void)
{
    puts("usage: callhook receive --secret @KEY_FILE (--tls-cert F --tls-key F | --insecure-http)\n"
         "                        [--exec CMD] [--jsonl FILE] [--pipe CMD] [--forward URL]\n"
         "                        [--postgres DSN] [--route SEL=HANDLER ...] ...\n"
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
         "Handlers (sinks): --exec CMD runs CMD per event with the raw body on stdin and\n"
         "CALL_EVENT, CALL_ACTIVE_CALL_ID, CALL_CORRELATION_ID, CALL_TYPE, CALL_TYPE_NAME,\n"
         "WEBHOOK_ID in its environment (up to --workers at once); a non-zero exit is a\n"
         "failure. Of the receiver's environment a command gets PATH, HOME, LANG, LC_* and\n"
         "what --handler-env NAME names, nothing else (never the receiver's settings or keys).\n"
         "--jsonl FILE appends one JSON line per event. --pipe CMD starts CMD once and writes\n"
         "each event to its stdin as a JSON line ({\"id\", \"event\", \"activeCallId\",\n"
         "\"correlationId\", \"callType\", \"callTypeName\", \"receivedAt\", \"attempt\",\n"
         "\"body\"}); it answers one line per event on stdout, in any order: {\"id\": ...,\n"
         "\"ok\": true}, or \"ok\": false (retried; \"retryAfterS\": N not before N s). Up to\n"
         "--pipe-window events are in flight; a handler that dies is restarted with backoff\n"
         "and given every unanswered event again (docs/examples/pipe_handler.py, .mjs).\n"
         "--forward URL POSTs each record byte for byte to an http(s) URL, with webhook-id and\n"
         "X-Callhook-Event headers and, with --forward-secret, a fresh Standard Webhooks\n"
         "signature of the receiver's own; 2xx is done, anything else (or no answer within\n"
         "--forward-timeout-ms) is retried. TLS is verified (--forward-ca for a private CA).\n"
         "--postgres DSN as below. Handlers run from the inbox at nice 10: acknowledging\n"
         "never waits on them. --ordered: a handler gets an end-call only once its\n"
         "begin-call is done for that handler.\n"
         "Fan-out: --route SELECTOR=HANDLER (exec:, jsonl:, pipe:, forward:, postgres:) sends\n"
         "an event by event and CallType; every route that matches takes it, each handler\n"
         "once. What no route matches, unknown CallTypes included, goes to every default\n"
         "handler given (--exec, --jsonl, --pipe, --forward, --postgres: one of each kind).\n"
         "Each handler retries and parks its events on its own ('callhook inbox show ID').\n"
         "  --route 'end-call/MissedCall,VoiceMail=exec:./call-back.sh'\n"
         "  --route '*/OutboundCall=jsonl:outbound.jsonl'\n"
         "\n"
         "Keys: --secret (and --public-key) take @FILE (a file only its owner may read) or\n"
         "env:NAME (a variable of receive's environment), keeping the key off the command\n"
         "line, where every user of the machine can read it; a key given as is works too.\n"
         "\n"
         "Refusals are logged with their reason and the client's address, at most one line\n"
         "per reason per --refusal-log-s (the others are counted); duplicates too.\n"
         "GET /metrics answers Prometheus text (counts by outcome and reason, inbox depth and\n"
         "the oldest unprocessed event's age) to loopback clients (--metrics any|off).\n"
         "\n"
         "Settings come from --config FILE (name = value), then the environment, then flags.\n"
         "SIGHUP reads the config file and key files again (rotate a secret without a\n"
         "restart); a reload that fails, or that changes listen, store, tls-*, insecure-http,\n"
         "max-body-bytes or workers, is refused and the settings in force stay\n"
         "(docs/RECEIVER.md). A reload that changes the handlers opens the new ones first (one\n"
         "that cannot open refuses the reload), then stops those no longer named.\n");
    config_print_help(&receive_config_table, stdout);
    puts("\nexample, in front of a script, locally:\n"
         "  callhook receive --insecure-http --listen 127.0.0.1:9000 \\\n"
         "      --secret env:WEBHOOK_SECRET --exec ./on-call-event.sh\n"
         "a long-lived handler, each call's events in order:\n"
         "  callhook receive ... --pipe 'python3 pipe_handler.py' --ordered\n"
         "to an internal service, signed again:\n"
         "  callhook receive ... --forward https://events.internal:8443/calls \\\n"
         "      --forward-secret @/etc/callhook/forward.secret --forward-ca internal-ca.pem");
}

void cmd_inbox_help(void)
{
    puts("usage: callhook inbox list [--status pending|running|done|failed|purged] [--limit N]\n"
         "       callhook inbox show WEBHOOK_ID\n"
         "       callhook inbox stats [--json]\n"
         "       callhook inbox retry (WEBHOOK_ID | --all-failed) [--sink HANDLER]\n"
         "       callhook inbox purge [--older-than-s N]\n"
         "\n"
         "Looks into the inbox of callhook receive (--store PATH, default CALLHOOK_RECEIVE_STORE\n"
         "or var/inbox.db): what arrived, what failed and why. An event has a state per sink\n"
         "(each handler it went to, e.g. exec:./h.sh): 'list' shows them under each event,\n"
         "'show' in full; the event's own status is failed when a sink parked it, else running,\n"
         "pending or done as its sinks are. 'retry' runs failed deliveries again with fresh\n"
         "tries (a running receiver picks them up): every failed sink of the event, or only\n"
         "--sink HANDLER (as list shows it); 'stats' counts the events by\n"
         "status and by kind and shows the oldest not yet processed (times in UTC, ISO 8601;\n"
         "--json gives unix seconds); 'purge' removes the records of\n"
         "processed events older than N seconds, default all of them. Their dedupe keys stay\n"
         "as long as a replay of their request could still be accepted (twice the receiver's\n"
         "--tolerance-s): listed as 'purged', a replay is still a duplicate. Failed and pending\n"
         "events are never purged.");
}

/* The command line, read again by a reload. */
struct command_line {
    int argc;
    char **argv;
};

/* SIGHUP: the settings read as at start (the config file and key files again; the environment
 * and the flags are what they were). A value refused by the reading is printed by it as
 * "callhook receive: ..." on stderr, where the log goes. */
static ch_code reload_settings(void *ctx, struct receive_config *next, struct ch_error *err)
{
    const struct command_line *cl = ctx;
    config_init(&receive_config_table, next);
    bool helped = false;
    if (cli_settings_parse("receive", &receive_config_table, next, cl->argc, cl->argv,
                           cmd_receive_help, &helped) != CLI_OK)
        return ch_error_set(err, CH_EINVAL,
                            "the settings read again were refused (see the line "
                            "above)");
    return receive_config_check(next, err);
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
    struct command_line cl = {argc, argv};
    rc = receive_run(&cfg, reload_settings, &cl, &err);
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

/* A time for a person: ISO 8601 in UTC ("2025-01-31T12:00:00Z"), "-" for none (0). */
static const char *iso_time(long long unix_s, char *out, size_t cap)
{
    if (unix_s <= 0) {
        snprintf(out, cap, "-");
        return out;
    }
    time_t t = (time_t)unix_s;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%lld", unix_s);
    return out;
}

/* A formatted row in a malloc'd string (*out, the caller frees); -1 when out of memory. */
static int asprintf_row(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int asprintf_row(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || (*out = malloc((size_t)n + 1)) == NULL)
        return -1;
    va_start(ap, fmt);
    vsnprintf(*out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return n;
}

/* The rows of `inbox list`, kept while the inbox is locked for listing, printed after (each
 * followed by its sinks' lines, which need the inbox again). */
struct listed {
    long long seq;
    char *row; /* malloc'd */
};

struct listing {
    struct listed *rows;
    size_t n, cap;
    bool failed; /* out of memory: rows are missing */
};

static void keep_entry_row(void *ctx, const struct ch_inbox_entry *e)
{
    struct listing *l = ctx;
    char when[32];
    iso_time(e->received_at, when, sizeof when);
    static struct shown f; /* large; one caller at a time */
    show_fields(e, &f);
    char *row = NULL;
    if (l->n == l->cap) {
        size_t grown = l->cap ? l->cap * 2 : 64;
        struct listed *more = realloc(l->rows, grown * sizeof *more);
        if (more == NULL) {
            l->failed = true;
            return;
        }
        l->rows = more;
        l->cap = grown;
    }
    if (asprintf_row(&row, "%-32s %-10s %-8s %-8d %-21s %s", f.webhook_id, e->event,
                     ch_inbox_status_name(e->status), e->attempts, when,
                     f.last_error[0] ? f.last_error : "-") < 0) {
        l->failed = true;
        return;
    }
    l->rows[l->n++] = (struct listed){e->seq, row};
}

/* A sink's name as the terminal may show it: no password of a URL or DSN, no control
 * character. */
static void shown_sink(const char *name, char *out, size_t cap)
{
    char label[512];
    sink_label(name, label, sizeof label);
    text_escape(label, strlen(label), out, cap);
}

/* One line per delivery under an event's row in `inbox list`. */
static void print_sink_line(void *ctx, const struct ch_inbox_delivery *d)
{
    (void)ctx;
    char name[TEXT_ESCAPE_GROWTH * 512];
    shown_sink(d->sink, name, sizeof name);
    static char error[TEXT_ESCAPE_GROWTH * sizeof d->last_error];
    text_escape(d->last_error, strlen(d->last_error), error, sizeof error);
    printf("  -> %-40s %-8s %-8d %s\n", name[0] ? name : "(implicit sink)",
           ch_inbox_status_name(d->status), d->attempts, error[0] ? error : "-");
}

/* `inbox show`: one paragraph per delivery. */
static void print_sink_block(void *ctx, const struct ch_inbox_delivery *d)
{
    int *count = ctx;
    (*count)++;
    char name[TEXT_ESCAPE_GROWTH * 512];
    shown_sink(d->sink, name, sizeof name);
    static char error[TEXT_ESCAPE_GROWTH * sizeof d->last_error];
    text_escape(d->last_error, strlen(d->last_error), error, sizeof error);
    char processed[32], next[32];
    printf("  %s\n    status        %s\n    attempts      %d\n", name[0] ? name : "(implicit sink)",
           ch_inbox_status_name(d->status), d->attempts);
    if (d->status == CH_INBOX_PENDING)
        printf("    due at        %s\n", iso_time(d->next_at / 1000, next, sizeof next));
    if (d->status == CH_INBOX_DONE)
        printf("    processed at  %s\n", iso_time(d->processed_at, processed, sizeof processed));
    printf("    last error    %s\n", error[0] ? error : "-");
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
    char received[32], processed[32];
    printf("webhook-id    %s\nevent         %s\ncall          %s\nCallType      %s\n"
           "status        %s\nattempts      %d\nreceived at   %s\nprocessed at  %s\n"
           "last error    %s\n",
           f.webhook_id, e.event, f.call_key[0] ? f.call_key : "(none)",
           ch_call_type_name(kind, e.call_type, type, sizeof type), ch_inbox_status_name(e.status),
           e.attempts, iso_time(e.received_at, received, sizeof received),
           iso_time(e.processed_at, processed, sizeof processed),
           f.last_error[0] ? f.last_error : "-");
    int sinks = 0;
    puts("sinks");
    struct ch_error derr = {0};
    if (ch_inbox_deliveries(ib, e.seq, print_sink_block, &sinks, &derr) != CH_OK)
        printf("  (cannot read them: %s)\n", derr.message);
    else if (sinks == 0)
        puts("  (none: no handler took it, or it was processed before the inbox kept a state "
             "per sink, or purged)");
    if (e.status == CH_INBOX_PURGED) {
        puts("body          (purged: only the dedupe keys are kept)");
    } else {
        printf("body (%zu bytes):\n", e.body_len);
        print_body(&e);
    }
    ch_inbox_entry_release(&e);
    return CLI_OK;
}

/* `inbox list`: a row per event (its derived status), then a line per sink. */
static int inbox_list(struct ch_inbox *ib, int status, int limit, struct ch_error *err)
{
    printf("%-32s %-10s %-8s %-8s %-21s %s\n", "WEBHOOK-ID", "EVENT", "STATUS", "ATTEMPTS",
           "RECEIVED", "LAST ERROR");
    struct listing l = {0};
    int rc = ch_inbox_list(ib, status, limit, keep_entry_row, &l, err) == CH_OK ? CLI_OK : CLI_FAIL;
    for (size_t i = 0; i < l.n; i++) {
        puts(l.rows[i].row);
        free(l.rows[i].row);
        if (rc == CLI_OK &&
            ch_inbox_deliveries(ib, l.rows[i].seq, print_sink_line, NULL, err) != CH_OK)
            rc = CLI_FAIL;
    }
    free(l.rows);
    if (l.failed && rc == CLI_OK) {
        ch_error_set(err, CH_ENOMEM, "out of memory: the list is not complete");
        rc = CLI_FAIL;
    }
    return rc;
}

/* Finds the delivery of an event whose sink is named, or labelled (as list and show print
 * it), as asked. */
struct sink_match {
    const char *asked;
    char name[CH_INBOX_SINK_MAX];
    int found;
};

static void match_sink(void *ctx, const struct ch_inbox_delivery *d)
{
    struct sink_match *m = ctx;
    char label[512];
    sink_label(d->sink, label, sizeof label);
    if (strcmp(d->sink, m->asked) == 0 || strcmp(label, m->asked) == 0) {
        if (m->found++ == 0)
            snprintf(m->name, sizeof m->name, "%s", d->sink);
    }
}

/* `inbox retry ID|--all-failed [--sink NAME]`: the failed deliveries again, with fresh tries. */
static int inbox_retry(struct ch_inbox *ib, const char *id, const char *sink, long long now_ms,
                       struct ch_error *err)
{
    static struct sink_match m; /* large */
    if (sink && id) {
        /* The name as list and show print it works too (a password left out). */
        struct ch_inbox_entry e;
        if (ch_inbox_get(ib, id, &e, err) != CH_OK)
            return CLI_FAIL;
        ch_inbox_entry_release(&e);
        memset(&m, 0, sizeof m);
        m.asked = sink;
        if (ch_inbox_deliveries(ib, e.seq, match_sink, &m, err) != CH_OK)
            return CLI_FAIL;
        if (m.found == 0) {
            ch_error_set(err, CH_ENOTFOUND,
                         "event '%s' does not go to '%s' (see 'callhook inbox "
                         "show %s')",
                         id, sink, id);
            return CLI_FAIL;
        }
        sink = m.name;
    }
    long long events = 0, deliveries = 0;
    if (ch_inbox_retry_sink(ib, id, sink, now_ms, &events, &deliveries, err) != CH_OK)
        return CLI_FAIL;
    printf("%lld event%s will run again", events, events == 1 ? "" : "s");
    if (deliveries != events)
        printf(" (%lld deliveries)", deliveries);
    putchar('\n');
    return CLI_OK;
}

/* The kinds of event `inbox stats` counts apart. */
static const char *const event_kinds[] = {"begin-call", "end-call"};
#define EVENT_KINDS 2

static json_t *stats_json(const struct ch_inbox_stats *st)
{
    json_t *counts = json_object();
    for (int i = 0; i < CH_INBOX_STATUSES; i++)
        json_object_set_new(counts, ch_inbox_status_name((enum ch_inbox_status)i),
                            json_integer(st->count[i]));
    json_t *o = json_object();
    json_object_set_new(o, "counts", counts);
    json_object_set_new(o, "unprocessed",
                        json_integer(st->count[CH_INBOX_PENDING] + st->count[CH_INBOX_RUNNING]));
    json_object_set_new(o, "oldestUnprocessedAt",
                        st->oldest_unprocessed ? json_integer(st->oldest_unprocessed)
                                               : json_null());
    json_object_set_new(o, "oldestFailedAt",
                        st->oldest_failed ? json_integer(st->oldest_failed) : json_null());
    json_object_set_new(o, "newestAt", st->newest ? json_integer(st->newest) : json_null());
    return o;
}

/* "2025-01-31T12:00:00Z (3 min ago)", or "-". */
static const char *when_and_age(long long at, long long now, char *out, size_t cap)
{
    char iso[32];
    iso_time(at, iso, sizeof iso);
    long long age = now - at;
    if (at <= 0)
        snprintf(out, cap, "-");
    else if (age < 120)
        snprintf(out, cap, "%s (%lld s ago)", iso, age < 0 ? 0 : age);
    else if (age < 2 * 3600)
        snprintf(out, cap, "%s (%lld min ago)", iso, age / 60);
    else
        snprintf(out, cap, "%s (%lld h ago)", iso, age / 3600);
    return out;
}

/* `inbox stats`: counts by status, over all and by kind of event, and the oldest times. */
static int inbox_stats(struct ch_inbox *ib, const char *store, bool as_json, struct ch_error *err)
{
    struct ch_inbox_stats all, kind[EVENT_KINDS];
    if (ch_inbox_stats(ib, NULL, &all, err) != CH_OK)
        return CLI_FAIL;
    for (int k = 0; k < EVENT_KINDS; k++) {
        if (ch_inbox_stats(ib, event_kinds[k], &kind[k], err) != CH_OK)
            return CLI_FAIL;
    }
    if (as_json) {
        json_t *o = stats_json(&all);
        json_object_set_new(o, "store", json_string(store));
        json_t *by = json_object();
        for (int k = 0; k < EVENT_KINDS; k++)
            json_object_set_new(by, event_kinds[k], stats_json(&kind[k]));
        json_object_set_new(o, "byEvent", by);
        char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (text == NULL) {
            ch_error_set(err, CH_ENOMEM, "out of memory");
            return CLI_FAIL;
        }
        puts(text);
        free(text);
        return CLI_OK;
    }
    long long now = clock_wall_s();
    printf("inbox %s\n\n%-12s", store, "EVENT");
    for (int i = 0; i < CH_INBOX_STATUSES; i++)
        printf(" %9s", ch_inbox_status_name((enum ch_inbox_status)i));
    printf("   %s\n", "OLDEST UNPROCESSED");
    for (int k = 0; k <= EVENT_KINDS; k++) {
        const struct ch_inbox_stats *st = k < EVENT_KINDS ? &kind[k] : &all;
        char iso[32];
        printf("%-12s", k < EVENT_KINDS ? event_kinds[k] : "all");
        for (int i = 0; i < CH_INBOX_STATUSES; i++)
            printf(" %9lld", st->count[i]);
        printf("   %s\n", iso_time(st->oldest_unprocessed, iso, sizeof iso));
    }
    char when[80];
    printf("\nunprocessed          %lld (pending or running)\n",
           all.count[CH_INBOX_PENDING] + all.count[CH_INBOX_RUNNING]);
    printf("oldest unprocessed   %s\n",
           when_and_age(all.oldest_unprocessed, now, when, sizeof when));
    printf("oldest failed        %s%s\n", when_and_age(all.oldest_failed, now, when, sizeof when),
           all.count[CH_INBOX_FAILED] ? "   ('callhook inbox list --status failed')" : "");
    printf("last received        %s\n", when_and_age(all.newest, now, when, sizeof when));
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
        {"json", no_argument, NULL, 'j'},
        {"sink", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        return cli_usage_error("inbox", "which one: list, show, stats, retry or purge?");
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
    bool all_failed = false, as_json = false;
    const char *sink = NULL;
    int c;
    optind = 1;
    argc--;
    argv++;
    char typed[32];
    snprintf(typed, sizeof typed, "inbox %.20s", sub);
    while ((c = cli_getopt(typed, argc, argv, "", options, NULL)) != -1) {
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
        case 'j':
            as_json = true;
            break;
        case 'k':
            sink = optarg;
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
    if (as_json && strcmp(sub, "stats") != 0)
        return cli_usage_error("inbox", "--json goes with 'inbox stats' only");
    if (sink && strcmp(sub, "retry") != 0)
        return cli_usage_error("inbox", "--sink goes with 'inbox retry' only");
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
        rc = inbox_list(ib, status, (int)limit, &err);
    } else if (strcmp(sub, "stats") == 0) {
        rc = inbox_stats(ib, store, as_json, &err);
    } else if (strcmp(sub, "show") == 0) {
        rc = arg ? inbox_show(ib, arg) : cli_usage_error("inbox", "show needs a WEBHOOK_ID");
    } else if (strcmp(sub, "retry") == 0) {
        if (!arg && !all_failed)
            rc = cli_usage_error("inbox", "retry needs a WEBHOOK_ID or --all-failed");
        else
            rc = inbox_retry(ib, arg, sink, now_s * 1000, &err);
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
