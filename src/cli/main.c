/* The callhook command: finds the subcommand in one table and runs it. */
#include "cli/cli.h"

#include "util/log.h"

#include <callhook/callhook.h>

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const struct cli_command commands[] = {
    {"serve", "run the sender: ingest, store, deliver with retries", cmd_serve, cmd_serve_help},
    {"key", "create, list or revoke API keys of serve", cmd_key, cmd_key_help},
    {"purge", "run serve's retention now", cmd_purge, cmd_purge_help},
    {"store", "seal serve's database in place, or change its data key", cmd_store, cmd_store_help},
    {"receive", "run a verifying, deduplicating, durable receiver", cmd_receive, cmd_receive_help},
    {"inbox", "list, show, retry or purge the receiver's events", cmd_inbox, cmd_inbox_help},
    {"sign", "print the webhook-signature of a body", cmd_sign, cmd_sign_help},
    {"verify", "check a delivery's signature and timestamp", cmd_verify, cmd_verify_help},
    {"secret", "make a new signing secret or Ed25519 key pair", cmd_secret, cmd_secret_help},
    {"inspect", "show what callhook reads from a call record", cmd_inspect, cmd_inspect_help},
    {"msgid", "print the stable webhook-id of an event", cmd_msgid, cmd_msgid_help},
    {"app", "create, show, list, enable or delete Voice Apps on serve", cmd_app, cmd_app_help},
    {"send", "post a begin-call or end-call record to serve", cmd_send, cmd_send_help},
    {"status", "how serve is: its store, and each Voice App's events and errors", cmd_status,
     cmd_status_help},
    {"messages", "list stored events and their delivery state", cmd_messages, cmd_messages_help},
    {"message", "show one stored event and its delivery attempts", cmd_message, cmd_message_help},
    {"replay", "deliver a stored event again", cmd_replay, cmd_replay_help},
    {"recover", "retry a Voice App's dead and failed events now", cmd_recover, cmd_recover_help},
    {"simulate", "play a calling platform: many calls against serve", cmd_simulate,
     cmd_simulate_help},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out,
            "usage: callhook <command> [options]\n"
            "\n"
            "callhook delivers a calling platform's begin-call and end-call events to the URLs\n"
            "configured per Voice App, signed with Standard Webhooks, and receives them on the\n"
            "other side.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n"
                 "'callhook <command> --help' tells more about one. 'callhook --version' prints "
                 "the version.\n");
}

int main(int argc, char **argv)
{
    log_init_from_env();
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        if (argc > 2) {
            for (size_t i = 0; i < NCOMMANDS; i++) {
                if (strcmp(argv[2], commands[i].name) == 0) {
                    commands[i].help();
                    return CLI_OK;
                }
            }
        }
        usage(stdout);
        return CLI_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("callhook %s\n", ch_version());
        return CLI_OK;
    }
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(name, commands[i].name) == 0) {
            optind = 1;
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "callhook: '%s' is not a command\n\n", name);
    usage(stderr);
    return CLI_USAGE;
}
