/* What the command-line front end's command files share: the command table entry, input
 * reading with a cap, and the exit codes. Commands use libcallhook's public API, except where
 * they start or open what lives inside callhook: serve/serve.h, receive/ (receiver.h,
 * escape.h), store/store.h (callhook store) and util/ (config.h for settings, clock.h,
 * buf.h). */
#ifndef CALLHOOK_CLI_H
#define CALLHOOK_CLI_H

#include <stdbool.h>
#include <stddef.h>

/* Exit codes: success, the operation failed (e.g. a signature did not verify), bad usage. */
#define CLI_OK    0
#define CLI_FAIL  1
#define CLI_USAGE 2

/* Largest body the sign/verify/inspect commands read. */
#define CLI_MAX_INPUT_BYTES (16u * 1024 * 1024)

struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the command's name */
    void (*help)(void);
};

/* Reads a whole file, or standard input when path is NULL or "-", up to max bytes. On success
 * *data is heap memory the caller frees (NUL-terminated, *len excludes it); on failure prints
 * why to stderr and returns false. */
bool cli_read_input(const char *path, size_t max, char **data, size_t *len);

/* Parses a whole decimal number (optionally negative) from an option; prints an error naming
 * the option and returns false when it is not one. */
bool cli_parse_ll(const char *option, const char *text, long long *out);

/* getopt_long for a command: the same results, but an unknown option or a missing value is
 * reported as "callhook CMD: unknown option '--x'" with a pointer to 'callhook CMD --help'
 * (getopt's own message names only argv[0], which is the subcommand: "put: ..."); it then
 * returns '?'. cmd is the command as typed ("app put"). */
struct option;
int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts, int *longindex);

/* An event's name as every command takes it: "begin-call" or "begin", "end-call" or "end";
 * returns the full name (static), or NULL for anything else. */
const char *cli_event_name(const char *text);

/* Prints "callhook <cmd>: <message>" to stderr and returns CLI_USAGE, for option errors. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads the settings of a command driven by a table (serve, purge, receive) into cfg, which
 * holds the defaults: --config FILE, then the environment, then the flags. --help calls help
 * and sets *helped. CLI_OK to go on; CLI_USAGE after an error, printed as "callhook CMD: ...". */
struct config_table;
int cli_settings_parse(const char *cmd, const struct config_table *t, void *cfg, int argc,
                       char **argv, void (*help)(void), bool *helped);

/* The commands, one group per file. */
int cmd_sign(int argc, char **argv);
void cmd_sign_help(void);
int cmd_verify(int argc, char **argv);
void cmd_verify_help(void);
int cmd_secret(int argc, char **argv);
void cmd_secret_help(void);
int cmd_inspect(int argc, char **argv);
void cmd_inspect_help(void);
int cmd_msgid(int argc, char **argv);
void cmd_msgid_help(void);
int cmd_serve(int argc, char **argv);
void cmd_serve_help(void);
int cmd_purge(int argc, char **argv);
void cmd_purge_help(void);
int cmd_key(int argc, char **argv);
void cmd_key_help(void);
int cmd_store(int argc, char **argv);
void cmd_store_help(void);
int cmd_receive(int argc, char **argv);
void cmd_receive_help(void);
int cmd_inbox(int argc, char **argv);
void cmd_inbox_help(void);

/* The client commands: they talk to a running serve over HTTP (client.h). */
int cmd_app(int argc, char **argv);
void cmd_app_help(void);
int cmd_send(int argc, char **argv);
void cmd_send_help(void);
int cmd_messages(int argc, char **argv);
void cmd_messages_help(void);
int cmd_message(int argc, char **argv);
void cmd_message_help(void);
int cmd_replay(int argc, char **argv);
void cmd_replay_help(void);
int cmd_recover(int argc, char **argv);
void cmd_recover_help(void);
int cmd_status(int argc, char **argv);
void cmd_status_help(void);
int cmd_simulate(int argc, char **argv);
void cmd_simulate_help(void);

#endif
