/* The HTTP client of the commands that talk to a running `callhook serve` (app, send, messages,
 * message, replay, recover, simulate): where serve is, the API key, one request at a time with a
 * capped response, and the API's errors turned into messages that say what to do. It also holds
 * what those commands share for output: tables, times, escaping. Only client.c sees curl.h. */
#ifndef CALLHOOK_CLI_CLIENT_H
#define CALLHOOK_CLI_CLIENT_H

#include <callhook/error.h>
#include <jansson.h>

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/buf.h"

#define CLI_DEFAULT_URL        "http://127.0.0.1:8080"
#define CLI_DEFAULT_TIMEOUT_MS 30000L
#define CLI_CONNECT_TIMEOUT_MS 5000L
#define CLI_MAX_RESPONSE_BYTES (16u * 1024 * 1024)
#define CLI_URL_MAX            1024
#define CLI_KEY_MAX            256

/* getopt_long values of the options every client command takes (above any short option). */
enum {
    CLI_OPT_URL = 0x100,
    CLI_OPT_KEY,
    CLI_OPT_TIMEOUT_MS,
    CLI_OPT_JSON,
    CLI_OPT_FIRST_FREE /* commands number their own long-only options from here */
};

/* Entries for a command's struct option table. */
#define CLI_CLIENT_OPTIONS                                                                        \
    {"url", required_argument, NULL, CLI_OPT_URL}, {"key", required_argument, NULL, CLI_OPT_KEY}, \
        {"request-timeout-ms", required_argument, NULL, CLI_OPT_TIMEOUT_MS},                      \
    {                                                                                             \
        "json", no_argument, NULL, CLI_OPT_JSON                                                   \
    }

/* The --help text of those options. */
#define CLI_CLIENT_OPTIONS_HELP                                                                 \
    "  --url URL               where serve listens (default: CALLHOOK_URL, else\n"              \
    "                          " CLI_DEFAULT_URL ")\n"                                          \
    "  --key KEY               the API key (default: CALLHOOK_KEY, which is safer: arguments\n" \
    "                          show in ps); 'callhook key create' makes one\n"                  \
    "  --request-timeout-ms N  give up on an answer of serve after N ms (default 30000)\n"      \
    "  --json                  print serve's JSON answer as it is, not a table"

/** The shared options as given. Strings are borrowed from argv or the environment. */
struct cli_client_options {
    const char *url; /* NULL: CALLHOOK_URL, else CLI_DEFAULT_URL */
    const char *key; /* NULL: CALLHOOK_KEY */
    long timeout_ms; /* total time per request */
    bool json;       /* raw JSON output */
};

/** Sets the defaults. */
void cli_client_options_init(struct cli_client_options *o);

/**
 * Handles getopt_long's value c when it is one of the shared options. Returns 1 when it was one,
 * 0 when it was not, -1 when its argument is bad (the reason is printed to stderr).
 */
int cli_client_option(struct cli_client_options *o, int c, const char *arg);

/** A connection to serve: one libcurl handle, reused so requests share a connection. */
struct cli_client;

/**
 * Makes a client from the options and the environment. Returns CH_OK, CH_EINVAL (no API key,
 * or a URL that is too long or not http(s)://), or CH_ENOMEM. *out is freed with
 * cli_client_free(). One client must not be used by two threads at once; several clients may.
 */
ch_code cli_client_new(struct cli_client **out, const struct cli_client_options *o,
                       struct ch_error *err);

/** Frees a client; NULL is a no-op. */
void cli_client_free(struct cli_client *c);

/** The base URL in use (borrowed from c), without a trailing slash. */
const char *cli_client_url(const struct cli_client *c);

/** One answer of serve. Caller-owned: cli_response_init() then cli_response_release(). */
struct cli_response {
    long status;     /* the HTTP status; 0 when there was no answer */
    struct buf body; /* the body, capped at CLI_MAX_RESPONSE_BYTES */
};

void cli_response_init(struct cli_response *r);
void cli_response_release(struct cli_response *r);

/**
 * Sends one request: method ("GET", "PUT", "POST", "DELETE") to base URL + path (path starts
 * with '/', already escaped), with body (body_len bytes, may be NULL) as application/json, and
 * extra_header (one "Name: value" line, or NULL). Fills resp, reset first. Returns CH_OK when
 * serve answered, whatever the status; CH_EUNAVAILABLE when it could not be reached or did not
 * answer in time, CH_ETOOBIG when the answer passed the cap, CH_EINVAL for a bad URL, CH_EIO for
 * any other transport failure, each with a message naming the URL.
 */
ch_code cli_client_request(struct cli_client *c, const char *method, const char *path,
                           const char *body, size_t body_len, const char *extra_header,
                           struct cli_response *resp, struct ch_error *err);

/**
 * Writes what an error answer says into buf: the message of {"error": {"code", "message"}},
 * else the start of the body, else the status. Returns buf.
 */
const char *cli_response_error(const struct cli_response *r, char *buf, size_t cap);

/**
 * For the commands: makes the client, printing "callhook CMD: ..." and returning CLI_USAGE when
 * the key is missing or the URL bad. Returns CLI_OK with *out set otherwise.
 */
int cli_client_open(const char *cmd, const struct cli_client_options *o, struct cli_client **out);

/**
 * For the commands: one request whose answer must be a 2xx. On a transport failure or another
 * status, prints "callhook CMD: ..." with a hint (serve not running, wrong key, wrong role) and
 * returns CLI_FAIL. Otherwise returns CLI_OK and, when json is not NULL, sets *json to the
 * parsed body (NULL when the body is empty; the caller json_decref()s it). resp may be NULL.
 */
int cli_api(struct cli_client *c, const char *cmd, const char *method, const char *path,
            const char *body, size_t body_len, const char *extra_header, struct cli_response *resp,
            json_t **json);

/**
 * Percent-encodes text for one path segment or query value (everything but A-Z a-z 0-9 - . _ ~)
 * into out (cap bytes). Returns false when it does not fit.
 */
bool cli_escape(const char *text, char *out, size_t cap);

/**
 * Reads a --since value: unix seconds, or a time ago as a number with s, m, h or d ("90s",
 * "15m", "2h", "7d"). Prints an error naming the option and returns false when it is neither.
 */
bool cli_parse_since(const char *option, const char *text, long long *out);

/** Writes unix seconds as "2026-11-27 09:14:03Z" (UTC), or "-" for 0. Returns buf. */
const char *cli_format_time(long long unix_s, char *buf, size_t cap);

/* A text table whose columns are as wide as their widest cell (cells cut at CLI_CELL_MAX
 * characters). Rows are buffered until cli_table_flush(); widths persist across flushes so a
 * table printed page by page stays aligned as well as it can. */
#define CLI_TABLE_MAX_COLS 10
#define CLI_CELL_MAX       60

struct cli_table {
    int ncols;
    const char *const *headers; /* borrowed */
    size_t widths[CLI_TABLE_MAX_COLS];
    char **cells; /* owned: nrows * ncols copies */
    size_t nrows, alloc_rows;
    bool header_done;
};

void cli_table_init(struct cli_table *t, int ncols, const char *const *headers);

/** Adds a row of ncols cells (NULL or "" shows as "-"); copies them. False when out of memory. */
bool cli_table_add(struct cli_table *t, const char *const *cells);

/** Prints the header (the first time) and the buffered rows to out, then drops the rows. */
void cli_table_flush(struct cli_table *t, FILE *out);

void cli_table_release(struct cli_table *t);

/** A label for one member of an object printed by cli_print_object(). */
struct cli_label {
    const char *key;
    const char *label;
};

/**
 * Prints a JSON object as aligned "label  value" lines: the labelled members first, in the
 * labels' order, then any other member under its own name, except those named in skip (a
 * NULL-terminated list, or NULL). null shows as "-", booleans as yes/no, "...At" integers as
 * times, "...Ms" integers with "ms", arrays of scalars comma-separated, objects of strings as
 * "Name: value" pairs; anything else as compact JSON.
 */
void cli_print_object(const json_t *o, const struct cli_label *labels, size_t nlabels,
                      const char *const *skip, FILE *out);

/** Writes a scalar JSON value as cli_print_object() shows it into buf. Returns buf. */
const char *cli_format_value(const char *key, const json_t *v, char *buf, size_t cap);

#endif
