/* `callhook inspect` and `callhook msgid`: what callhook reads from a call record, and the
 * webhook-id it gives an event. */
#include "cli/cli.h"

#include <callhook/callhook.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cmd_inspect_help(void)
{
    puts("usage: callhook inspect [--max-bytes N] [FILE]\n"
         "\n"
         "Reads a call record from FILE (or standard input) the way callhook does and prints\n"
         "its ActiveCallId, CorrelationId, the dedupe key and the CallType, or says why it is\n"
         "not a call record (with the position of a JSON error). Exits 1 for a bad record.\n"
         "\n"
         "  --max-bytes N   refuse bodies larger than N bytes (default 262144, as serve does)");
}

void cmd_msgid_help(void)
{
    puts("usage: callhook msgid --app VOICE_APP_ID --event begin-call|end-call --key KEY\n"
         "       (--event also takes the short forms begin and end)\n"
         "\n"
         "Prints the webhook-id callhook gives the event: msg_ + 27 characters derived from\n"
         "the Voice App, the event and the dedupe key (the record's ActiveCallId, else its\n"
         "CorrelationId, else the Idempotency-Key), the same on every node and every retry.");
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option options[] = {
        {"max-bytes", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long long max = 256 * 1024;
    int c;
    while ((c = cli_getopt("inspect", argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (!cli_parse_ll("--max-bytes", optarg, &max) || max <= 0)
                return CLI_USAGE;
            break;
        case 'h':
            cmd_inspect_help();
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (argc - optind > 1)
        return cli_usage_error("inspect", "one FILE at most");
    char *body = NULL;
    size_t len = 0;
    /* The library, not the reader, reports a body over --max-bytes, as the daemon would. */
    if (!cli_read_input(optind < argc ? argv[optind] : NULL, CLI_MAX_INPUT_BYTES, &body, &len))
        return CLI_FAIL;
    struct ch_record rec;
    struct ch_error err;
    int rc = CLI_FAIL;
    if (ch_record_parse(&rec, body, len, (size_t)max, &err) != CH_OK) {
        fprintf(stderr, "callhook inspect: %s\n", err.message);
    } else {
        char name[CH_CALL_TYPE_NAME_MAX];
        const char *key = ch_record_dedupe_key(&rec);
        printf("ActiveCallId:  %s\n", rec.has_active_call_id ? rec.active_call_id : "(absent)");
        printf("CorrelationId: %s\n", rec.has_correlation_id ? rec.correlation_id : "(absent)");
        printf("dedupe key:    %s\n", key ? key : "(none: the sender needs an Idempotency-Key)");
        printf("CallType:      %s\n",
               ch_call_type_name(rec.call_type_kind, rec.call_type, name, sizeof name));
        printf("bytes:         %zu\n", rec.body_len);
        rc = CLI_OK;
    }
    free(body);
    return rc;
}

int cmd_msgid(int argc, char **argv)
{
    static const struct option options[] = {
        {"app", required_argument, NULL, 'a'},
        {"event", required_argument, NULL, 'e'},
        {"key", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *app = NULL, *event = NULL, *key = NULL;
    int c;
    while ((c = cli_getopt("msgid", argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'a':
            app = optarg;
            break;
        case 'e':
            event = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'h':
            cmd_msgid_help();
            return CLI_OK;
        default:
            return CLI_USAGE;
        }
    }
    if (app == NULL || event == NULL || key == NULL)
        return cli_usage_error("msgid", "--app, --event and --key are all required");
    const char *given = event;
    if ((event = cli_event_name(given)) == NULL)
        return cli_usage_error("msgid",
                               "--event is begin-call (or begin) or end-call (or end), "
                               "not '%s'",
                               given);
    char id[CH_MSGID_SIZE];
    struct ch_error err;
    if (ch_msgid(app, event, key, id, &err) != CH_OK) {
        fprintf(stderr, "callhook msgid: %s\n", err.message);
        return CLI_FAIL;
    }
    puts(id);
    return CLI_OK;
}
