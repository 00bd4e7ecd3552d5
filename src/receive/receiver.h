/*
 * callhook receive: the receiving side put together. Settings, routing of events to handlers
 * (sinks, receive/sink.h), the dispatchers that feed them (receive/dispatch.h), and its front
 * (a handler of src/http/). The CLI runs the receiver through here; it shows inbox entries
 * with receive/escape.h.
 */
#ifndef CALLHOOK_RECEIVE_RECEIVER_H
#define CALLHOOK_RECEIVE_RECEIVER_H

#include "util/config.h"

#include <callhook/callhook.h>
#include <callhook/inbox.h>

#include <stdbool.h>
#include <stddef.h>

#define RECEIVE_MAX_KEYS        8
#define RECEIVE_MAX_ROUTES      32
#define RECEIVE_MAX_TYPES       16
#define RECEIVE_MAX_HEADERS     4
#define RECEIVE_MAX_HANDLER_ENV 32
#define RECEIVE_ENV_NAME_MAX    64

/* A handler's text, "scheme:target", fits an inbox sink name (it is one). */
#define RECEIVE_HANDLER_MAX CH_INBOX_SINK_MAX

/* The schemes of handlers, in the order of receive_config.defaults. */
enum handler_scheme {
    SCHEME_EXEC = 0,
    SCHEME_JSONL,
    SCHEME_PIPE,
    SCHEME_FORWARD,
    SCHEME_POSTGRES,
    SCHEME_COUNT
};

/* Most sinks one event goes to, and one receiver runs: every route's and every default. */
#define RECEIVE_MAX_SINKS (RECEIVE_MAX_ROUTES + SCHEME_COUNT)

/* A handler: the sink an event goes to, by its text ("exec:./h.sh", "jsonl:/var/log/e.jsonl"),
 * which is also its name in the inbox; "" for none. */
struct handler {
    char text[RECEIVE_HANDLER_MAX];
};

/* Events that match go to the route's handler; every matching route takes the event. */
struct route {
    char event[16]; /* "begin-call", "end-call", or "" for either */
    long long types[RECEIVE_MAX_TYPES];
    int ntypes; /* 0: any CallType */
    struct handler handler;
};

struct required_header {
    char name[128];
    char value[1024];
};

struct receive_config {
    char listen[256];
    char store[4096];
    struct ch_secret keys[RECEIVE_MAX_KEYS];
    size_t nkeys;
    /* Variables that --secret env:NAME read: never passed to handlers. */
    char key_envs[RECEIVE_MAX_KEYS][RECEIVE_ENV_NAME_MAX];
    int nkey_envs;
    /* --handler-env: variables of the receiver's environment that handlers get too. */
    char handler_env[RECEIVE_MAX_HANDLER_ENV][RECEIVE_ENV_NAME_MAX];
    int nhandler_env;
    char tls_cert[4096], tls_key[4096], tls_client_ca[4096];
    bool insecure_http;
    struct required_header headers[RECEIVE_MAX_HEADERS];
    int nheaders;
    /* The default handlers (--exec, --jsonl, --pipe, --forward, --postgres; one of each
     * scheme, by enum handler_scheme): every one given takes the events no route matches. */
    struct handler defaults[SCHEME_COUNT];
    struct route routes[RECEIVE_MAX_ROUTES];
    int nroutes;
    int workers;
    int exec_timeout_s;
    int max_attempts;
    int retry_base_ms;
    long long tolerance_s;
    long long retention_s;
    size_t max_body_bytes;
    char metrics[16];                 /* who may GET /metrics: loopback, any or off */
    long long refusal_log_interval_s; /* one log line per refusal reason per this, at most */
    /* Every sink takes the events of one call in order (ch_inbox_take_sink_flags'
     * CH_INBOX_TAKE_CALL_ORDER): an end-call waits until its begin-call is done for it. */
    bool ordered;
    /* The sinks of issue 16 (src/receive/sink_*.c read these; the table in receiver.c sets
     * them). pipe: */
    int pipe_window; /* events in flight on one pipe handler (default 256) */
    /* forward: */
    struct ch_secret forward_key; /* re-signs each forwarded request when has_forward_key */
    bool has_forward_key;
    char forward_ca[4096];     /* a private CA for the internal service's certificate; "" */
    int forward_timeout_ms;    /* one forwarded request's whole time limit (default 10000) */
    int forward_max_in_flight; /* requests at once per forward sink (default 32) */
};

/* A reload: fills next (zeroed by the caller) with the settings read again as at start (the
 * config file, the environment, the flags) and checks them as at start. CH_EINVAL (err says
 * why, or the reader printed it) leaves the settings in force. */
typedef ch_code (*receive_reload_cb)(void *ctx, struct receive_config *next, struct ch_error *err);

/* The settings of receive: the table that drives the defaults (config_init), the config
 * file, the CALLHOOK_RECEIVE_* variables, the flags and --help. Repeatable settings add; keys
 * given as flags replace those from the file and the environment. */
extern const struct config_table receive_config_table;

/* Checks the whole: keys present, TLS or --insecure-http (a client CA only with TLS),
 * retention against tolerance, no secret passed to handlers. --help is config_print_help()
 * on the table. */
ch_code receive_config_check(const struct receive_config *c, struct ch_error *err);

/* Parses "SELECTOR=HANDLER": SELECTOR is begin-call, end-call or *, optionally followed by
 * "/TYPES" (CallType numbers or names, comma-separated); HANDLER is exec:CMD, jsonl:FILE,
 * pipe:CMD, forward:URL or postgres:DSN. */
ch_code route_parse(struct route *r, const char *text, struct ch_error *err);

/* The scheme of a handler's text ("pipe:./h.py" -> SCHEME_PIPE); SCHEME_COUNT when none. */
enum handler_scheme handler_scheme_of(const char *text);

/* The fan-out rule: the sinks an event goes to are the handlers of every route that matches
 * it, each once, in the order of the routes; when no route matches, every default handler
 * given. names[0..return) point into c; at most max. 0: the event is only stored. */
size_t route_sinks(const struct receive_config *c, const char *event, enum ch_call_type_kind kind,
                   long long call_type, const char **names, size_t max);

/* Every sink c names (routes' and defaults' handlers), each once: the dispatchers it runs. */
size_t route_all_sinks(const struct receive_config *c, const char **names, size_t max);

/* The CallType kind of a stored event, as ch_record_parse() read it at the front. */
enum ch_call_type_kind route_stored_kind(bool has_call_type, long long call_type);

/* The event a request carries: its X-Call-Event header (begin-call or end-call), else the end
 * of its path (trailing slashes aside); NULL when neither says. The result is get_header's
 * string or a constant. */
const char *route_event_of(ch_header_cb get_header, void *ctx, const char *path);

/* Whether every --require-header is present with its exact value (compared in constant time);
 * when not, which gets the first failing header's name. */
bool route_headers_ok(const struct receive_config *c, ch_header_cb get_header, void *ctx,
                      char *which, size_t cap);

/* Which settings a reload may not change (they are read once, at start): "" when none does,
 * else their names ("listen, workers") in changed. */
void receive_config_restart_only(const struct receive_config *now,
                                 const struct receive_config *next, char *changed, size_t cap);

/* Which settings differ ("secret, route"), for the log of a reload; "" when none. */
void receive_config_changes(const struct receive_config *now, const struct receive_config *next,
                            char *changed, size_t cap);

/* Runs until SIGTERM/SIGINT; SIGHUP calls reload and puts the settings it reads in force (or
 * logs why not and keeps those in force). 0 after a clean stop, 1 when it cannot start (err
 * says why). c's keys are wiped. */
int receive_run(struct receive_config *c, receive_reload_cb reload, void *reload_ctx,
                struct ch_error *err);

struct live;          /* receive/live.h: the settings in force */
struct receive_stats; /* receive/stats.h: counters and the refusals' log */

/* Writes s with all but its first and last 4 characters replaced, for logs. */
const char *mask_text(const char *s, char *out, size_t cap);

#endif
