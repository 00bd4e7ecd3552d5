/* callhook receive: settings from file, environment and flags; start-up and shutdown. */
#include "receive/receiver.h"

#include "receive/dispatch.h"
#include "receive/front.h"
#include "receive/live.h"
#include "receive/stats.h"
#include "lib/crypto.h"
#include "lib/inbox.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/log.h"
#include "util/notify.h"
#include "util/thread.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One default handler per scheme: a later source (flag over environment over file) replaces
 * it. The setting's name is the scheme. */
static ch_code set_default(void *cfg, enum handler_scheme scheme, const char *name,
                           const char *value, struct ch_error *err)
{
    struct handler *h = &((struct receive_config *)cfg)->defaults[scheme];
    if (*value == '\0' || strlen(name) + 1 + strlen(value) >= sizeof h->text)
        return ch_error_set(err, CH_EINVAL, "%s: empty or too long", name);
    size_t n = strlen(name);
    memcpy(h->text, name, n);
    h->text[n] = ':';
    memcpy(h->text + n + 1, value, strlen(value) + 1); /* fits: checked above */
    return CH_OK;
}

static ch_code set_exec(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    return set_default(cfg, SCHEME_EXEC, name, value, err);
}

static ch_code set_jsonl(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    return set_default(cfg, SCHEME_JSONL, name, value, err);
}

static ch_code set_pipe(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    return set_default(cfg, SCHEME_PIPE, name, value, err);
}

static ch_code set_forward(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    return set_default(cfg, SCHEME_FORWARD, name, value, err);
}

static ch_code set_postgres(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    return set_default(cfg, SCHEME_POSTGRES, name, value, err);
}

/* Largest key file read: a key is well under 200 characters. */
#define KEY_FILE_MAX 4096

/* Reads the key in path: a regular file that only its owner can read (a key that others can
 * read is no secret), its text without the line end. */
static ch_code read_key_file(const char *name, const char *path, char *out, size_t cap,
                             struct ch_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return ch_error_set(err, CH_EINVAL, "%s: cannot open '%s': %s", name, path,
                            strerror(errno));
    struct stat st;
    ch_code rc = CH_OK;
    if (fstat(fd, &st) != 0)
        rc = ch_error_set(err, CH_EINVAL, "%s: cannot read '%s': %s", name, path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = ch_error_set(err, CH_EINVAL, "%s: '%s' is not a regular file", name, path);
    else if ((st.st_mode & 077) != 0)
        rc = ch_error_set(err, CH_EINVAL,
                          "%s: '%s' can be read by group or others (mode %04o); 'chmod 600' it",
                          name, path, (unsigned)(st.st_mode & 07777));
    size_t len = 0;
    while (rc == CH_OK) {
        ssize_t r = read(fd, out + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = ch_error_set(err, CH_EINVAL, "%s: cannot read '%s': %s", name, path,
                              strerror(errno));
        else if (r == 0)
            break;
        else if ((len += (size_t)r) == cap - 1)
            rc = ch_error_set(err, CH_EINVAL, "%s: '%s' is larger than a key (%zu bytes)", name,
                              path, cap - 1);
    }
    close(fd);
    out[len] = '\0';
    while (len > 0 && strchr(" \t\r\n", out[len - 1]))
        out[--len] = '\0';
    if (rc == CH_OK && len == 0)
        rc = ch_error_set(err, CH_EINVAL, "%s: '%s' is empty", name, path);
    return rc;
}

/* A variable name as a shell exports it. */
static bool env_name_ok(const char *s)
{
    if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
        return false;
    for (; *s; s++) {
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9')))
            return false;
    }
    return true;
}

/* A key as given (whsec_..., whpk_...), or read from @FILE or env:NAME, so that it need not be
 * on the command line (where /proc/PID/cmdline shows it to every user): parsed into key. A
 * variable read is remembered in c->key_envs, never passed to handlers. */
static ch_code read_key(struct receive_config *c, const char *name, const char *value,
                        struct ch_secret *key, struct ch_error *err)
{
    char text[KEY_FILE_MAX];
    ch_code rc = CH_OK;
    if (value[0] == '@') {
        rc = read_key_file(name, value + 1, text, sizeof text, err);
    } else if (strncmp(value, "env:", 4) == 0) {
        const char *var = value + 4;
        const char *v = env_name_ok(var) ? getenv(var) : NULL;
        if (!env_name_ok(var) || strlen(var) >= RECEIVE_ENV_NAME_MAX)
            rc = ch_error_set(err, CH_EINVAL, "%s: 'env:%s' does not name a variable", name, var);
        else if (v == NULL || *v == '\0')
            rc = ch_error_set(err, CH_EINVAL, "%s: the environment variable %s is not set", name,
                              var);
        else if (strlen(v) >= sizeof text)
            rc = ch_error_set(err, CH_EINVAL, "%s: %s is longer than a key", name, var);
        else
            snprintf(text, sizeof text, "%s", v);
        if (rc == CH_OK && c->nkey_envs < RECEIVE_MAX_KEYS)
            snprintf(c->key_envs[c->nkey_envs++], RECEIVE_ENV_NAME_MAX, "%s", var);
    } else if (strlen(value) >= sizeof text) {
        rc = ch_error_set(err, CH_EINVAL, "%s: longer than a key", name);
    } else {
        snprintf(text, sizeof text, "%s", value);
    }
    struct ch_error inner = {0};
    if (rc == CH_OK && ch_secret_parse(key, text, &inner) != CH_OK)
        rc = ch_error_set(err, CH_EINVAL, "%s: %s", name, inner.message);
    crypto_wipe(text, sizeof text);
    return rc;
}

static ch_code add_key(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    struct receive_config *c = cfg;
    if (c->nkeys == RECEIVE_MAX_KEYS)
        return ch_error_set(err, CH_EINVAL, "%s: at most %d keys", name, RECEIVE_MAX_KEYS);
    ch_code rc = read_key(c, name, value, &c->keys[c->nkeys], err);
    if (rc == CH_OK)
        c->nkeys++;
    return rc;
}

/* The receiver's own secret for signing forwarded requests: one whsec_ key (a later source
 * replaces it), read like --secret. */
static ch_code set_forward_key(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    struct receive_config *c = cfg;
    struct ch_secret key;
    memset(&key, 0, sizeof key);
    ch_code rc = read_key(c, name, value, &key, err);
    if (rc == CH_OK && key.kind != CH_KEY_HMAC)
        rc = ch_error_set(err, CH_EINVAL,
                          "%s: a whsec_ secret (forwarded requests are signed "
                          "v1), not a public or private key",
                          name);
    if (rc == CH_OK) {
        ch_secret_wipe(&c->forward_key);
        c->forward_key = key;
        c->has_forward_key = true;
    } else {
        ch_secret_wipe(&key);
    }
    return rc;
}

/* Keys given as flags replace those from the environment and the file. */
static void drop_keys(void *cfg)
{
    struct receive_config *c = cfg;
    for (size_t k = 0; k < c->nkeys; k++)
        ch_secret_wipe(&c->keys[k]);
    c->nkeys = 0;
}

/* The variables the receiver sets for a handler itself. */
static const char *const handler_vars[] = {"CALL_EVENT",          "CALL_ACTIVE_CALL_ID",
                                           "CALL_CORRELATION_ID", "CALL_TYPE",
                                           "CALL_TYPE_NAME",      "WEBHOOK_ID"};

static ch_code add_handler_env(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    (void)name;
    struct receive_config *c = cfg;
    if (!env_name_ok(value) || strlen(value) >= RECEIVE_ENV_NAME_MAX)
        return ch_error_set(err, CH_EINVAL,
                            "handler-env: '%s' is not a variable name (letters, digits, _)", value);
    if (strncmp(value, "CALLHOOK_", 9) == 0)
        return ch_error_set(err, CH_EINVAL,
                            "handler-env: %s is a setting of callhook (its secrets among them); "
                            "the receiver's own settings are not passed to handlers",
                            value);
    for (size_t i = 0; i < sizeof handler_vars / sizeof handler_vars[0]; i++) {
        if (strcmp(value, handler_vars[i]) == 0)
            return ch_error_set(err, CH_EINVAL, "handler-env: %s is set by the receiver itself",
                                value);
    }
    if (c->nhandler_env == RECEIVE_MAX_HANDLER_ENV)
        return ch_error_set(err, CH_EINVAL, "handler-env: at most %d", RECEIVE_MAX_HANDLER_ENV);
    snprintf(c->handler_env[c->nhandler_env++], RECEIVE_ENV_NAME_MAX, "%s", value);
    return CH_OK;
}

static ch_code add_route(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    struct receive_config *c = cfg;
    if (c->nroutes == RECEIVE_MAX_ROUTES)
        return ch_error_set(err, CH_EINVAL, "%s: at most %d", name, RECEIVE_MAX_ROUTES);
    ch_code rc = route_parse(&c->routes[c->nroutes], value, err);
    if (rc == CH_OK)
        c->nroutes++;
    return rc;
}

static ch_code add_required_header(void *cfg, const char *name, const char *value,
                                   struct ch_error *err)
{
    struct receive_config *c = cfg;
    const char *eq = strchr(value, '=');
    if (eq == NULL || eq == value || c->nheaders == RECEIVE_MAX_HEADERS)
        return ch_error_set(err, CH_EINVAL, "%s: NAME=VALUE (at most %d)", name,
                            RECEIVE_MAX_HEADERS);
    struct required_header *h = &c->headers[c->nheaders];
    if ((size_t)(eq - value) >= sizeof h->name || strlen(eq + 1) >= sizeof h->value ||
        eq[1] == '\0')
        return ch_error_set(err, CH_EINVAL, "%s: name or value empty or too long", name);
    snprintf(h->name, sizeof h->name, "%.*s", (int)(eq - value), value);
    snprintf(h->value, sizeof h->value, "%s", eq + 1);
    c->nheaders++;
    return CH_OK;
}

#define RECEIVE(field) CONFIG_FIELD(struct receive_config, field)
#define STRINGIFY(x)   #x
#define TEXT_OF(x)     STRINGIFY(x)

/* The settings: name (flag and file key), environment variable, field or setter, bounds,
 * default, what it does. One table for the defaults, the config file, the environment, the
 * flags and --help; repeatable settings add a value each time. */
static const struct config_setting receive_settings[] = {
    {"listen", "CALLHOOK_RECEIVE_LISTEN", RECEIVE(listen), .def = "127.0.0.1:8443",
     .help = "address and port to listen on"},
    {"secret", "CALLHOOK_RECEIVE_SECRET", CONFIG_CUSTOM, .def = "",
     .help = "whsec_ secret, as @FILE (owner-only) or env:NAME (repeat for rotation)",
     .set = add_key, .flag_reset = drop_keys},
    {"public-key", "CALLHOOK_RECEIVE_PUBLIC_KEY", CONFIG_CUSTOM, .def = "",
     .help = "whpk_ key, to verify v1a signatures (also @FILE or env:NAME)", .set = add_key,
     .flag_reset = drop_keys},
    {"tls-cert", "CALLHOOK_RECEIVE_TLS_CERT", RECEIVE(tls_cert), .def = "",
     .help = "PEM certificate (chain) for HTTPS"},
    {"tls-key", "CALLHOOK_RECEIVE_TLS_KEY", RECEIVE(tls_key), .def = "",
     .help = "PEM private key for HTTPS"},
    {"tls-client-ca", "CALLHOOK_RECEIVE_TLS_CLIENT_CA", RECEIVE(tls_client_ca), .def = "",
     .help = "PEM CA: only clients with a certificate it signed get an answer (mTLS)"},
    {"insecure-http", "CALLHOOK_RECEIVE_INSECURE_HTTP", RECEIVE(insecure_http), .def = "false",
     .help = "plain HTTP, for local use or behind a TLS-terminating proxy"},
    {"require-header", "CALLHOOK_RECEIVE_REQUIRE_HEADER", CONFIG_CUSTOM, .def = "",
     .help = "NAME=VALUE that every request must carry (shared secret)",
     .set = add_required_header},
    {"store", "CALLHOOK_RECEIVE_STORE", RECEIVE(store), .def = "var/inbox.db",
     .help = "the inbox database"},
    {"exec", "CALLHOOK_RECEIVE_EXEC", CONFIG_CUSTOM, .def = "",
     .help = "default handler: a command run per event, given the body on stdin", .set = set_exec},
    {"jsonl", "CALLHOOK_RECEIVE_JSONL", CONFIG_CUSTOM, .def = "",
     .help = "default handler: append a JSON line per event to a file", .set = set_jsonl},
    {"pipe", "CALLHOOK_RECEIVE_PIPE", CONFIG_CUSTOM, .def = "",
     .help = "default handler: one long-lived command, events as JSON lines on its stdin",
     .set = set_pipe},
    {"forward", "CALLHOOK_RECEIVE_FORWARD", CONFIG_CUSTOM, .def = "",
     .help = "default handler: POST each event to this http(s) URL", .set = set_forward},
    {"postgres", "CALLHOOK_RECEIVE_POSTGRES", CONFIG_CUSTOM, .def = "",
     .help = "default handler: insert each event into PostgreSQL (a DSN)", .set = set_postgres},
    {"route", "", CONFIG_CUSTOM, .def = "",
     .help = "SELECTOR=HANDLER (exec:, jsonl:, pipe:, forward:, postgres:), e.g. "
             "end-call/MissedCall=exec:./missed.sh; every matching route takes the event",
     .set = add_route},
    {"handler-env", "", CONFIG_CUSTOM, .def = "",
     .help = "NAME of a variable of receive's environment that handlers get too (repeatable)",
     .set = add_handler_env},
    {"ordered", "CALLHOOK_RECEIVE_ORDERED", RECEIVE(ordered), .def = "false",
     .help = "per-call order: a handler gets an end-call only once its begin-call is done "
             "for that handler (a begin-call that arrives after its end-call is not held)"},
    {"workers", "CALLHOOK_RECEIVE_WORKERS", RECEIVE(workers), 1, 256, "4",
     "exec: commands run at once (without one: a single worker)"},
    {"exec-timeout-s", "CALLHOOK_RECEIVE_EXEC_TIMEOUT_S", RECEIVE(exec_timeout_s), 1, 3600, "30",
     "a command's time limit"},
    {"max-attempts", "CALLHOOK_RECEIVE_MAX_ATTEMPTS", RECEIVE(max_attempts), 1, 100, "5",
     "tries before an event is parked"},
    {"retry-base-ms", "CALLHOOK_RECEIVE_RETRY_BASE_MS", RECEIVE(retry_base_ms), 1, 3600000, "1000",
     "first retry delay; doubles each try, at most 5 min"},
    {"tolerance-s", "CALLHOOK_RECEIVE_TOLERANCE_S", RECEIVE(tolerance_s), 1, 86400 * 365,
     TEXT_OF(CH_DEFAULT_TOLERANCE_S), "timestamp window, both directions"},
    {"retention-s", "CALLHOOK_RECEIVE_RETENTION_S", RECEIVE(retention_s), 60, 86400LL * 3650,
     "259200", "how long processed events (and their dedupe keys) are kept"},
    {"max-body-bytes", "CALLHOOK_RECEIVE_MAX_BODY_BYTES", RECEIVE(max_body_bytes), 1024,
     16 * 1024 * 1024, "262144", "largest body accepted"},
    {"metrics", "CALLHOOK_RECEIVE_METRICS", RECEIVE(metrics), .def = "loopback",
     .help = "who may GET /metrics: loopback (clients on this machine), any, or off"},
    {"refusal-log-s", "CALLHOOK_RECEIVE_REFUSAL_LOG_S", RECEIVE(refusal_log_interval_s), 0, 86400,
     "60", "one log line per refusal reason per this, with a count of the others (0: every one)"},
    {"pipe-window", "CALLHOOK_RECEIVE_PIPE_WINDOW", RECEIVE(pipe_window), 1, 65536, "256",
     "pipe: events in flight on the handler at once (unanswered lines)"},
    {"forward-secret", "CALLHOOK_RECEIVE_FORWARD_SECRET", CONFIG_CUSTOM, .def = "",
     .help = "forward: whsec_ secret (@FILE or env:NAME) to sign each forwarded request anew",
     .set = set_forward_key},
    {"forward-ca", "CALLHOOK_RECEIVE_FORWARD_CA", RECEIVE(forward_ca), .def = "",
     .help = "forward: PEM CA that signed the internal service's certificate"},
    {"forward-timeout-ms", "CALLHOOK_RECEIVE_FORWARD_TIMEOUT_MS", RECEIVE(forward_timeout_ms), 100,
     600000, "10000", "forward: one request's whole time limit"},
    {"forward-max-in-flight", "CALLHOOK_RECEIVE_FORWARD_MAX_IN_FLIGHT",
     RECEIVE(forward_max_in_flight), 1, 1024, "32", "forward: requests at once per URL"},
};

const struct config_table receive_config_table = {
    "receive", sizeof(struct receive_config), receive_settings,
    sizeof receive_settings / sizeof receive_settings[0]};

ch_code receive_config_check(const struct receive_config *c, struct ch_error *err)
{
    if (c->nkeys == 0)
        return ch_error_set(err, CH_EINVAL,
                            "no key to verify senders with: give --secret whsec_... (or "
                            "--public-key whpk_...)");
    if (!c->insecure_http && (!c->tls_cert[0] || !c->tls_key[0]))
        return ch_error_set(err, CH_EINVAL,
                            "HTTPS needs --tls-cert and --tls-key; for local use or behind a "
                            "TLS-terminating proxy, say --insecure-http");
    if (c->insecure_http && c->tls_client_ca[0])
        return ch_error_set(err, CH_EINVAL, "--tls-client-ca needs HTTPS, not --insecure-http");
    if (strcmp(c->metrics, "loopback") != 0 && strcmp(c->metrics, "any") != 0 &&
        strcmp(c->metrics, "off") != 0)
        return ch_error_set(err, CH_EINVAL, "--metrics is loopback, any or off, not '%s'",
                            c->metrics);
    /* A captured request is accepted again until its timestamp leaves the window, up to twice
     * the tolerance after it first arrived: its dedupe key must live that long. */
    if (c->retention_s < 2 * c->tolerance_s)
        return ch_error_set(err, CH_EINVAL,
                            "--retention-s %lld is shorter than twice --tolerance-s %lld: a "
                            "replayed request would be accepted again after its dedupe key "
                            "expired; give --retention-s %lld or more",
                            c->retention_s, c->tolerance_s, 2 * c->tolerance_s);
    for (int i = 0; i < c->nhandler_env; i++) {
        for (int k = 0; k < c->nkey_envs; k++) {
            if (strcmp(c->handler_env[i], c->key_envs[k]) == 0)
                return ch_error_set(err, CH_EINVAL,
                                    "--handler-env %s: that variable holds the receiver's key "
                                    "(--secret env:%s); it is not passed to handlers",
                                    c->handler_env[i], c->key_envs[k]);
        }
    }
    return CH_OK;
}

/* Started with stdin, stdout or stderr closed, the receiver's own files and pipes would take
 * those numbers, and a handler's stdin or stderr would be one of them: /dev/null fills them. */
static void fill_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int null = open("/dev/null", O_RDWR);
        if (null >= 0 && null != fd) {
            dup2(null, fd);
            close(null);
        }
    }
}

/* Appends name to the list in out ("a, b"). */
static void add_name(char *out, size_t cap, const char *name)
{
    size_t len = strlen(out);
    snprintf(out + len, cap - len, "%s%s", len ? ", " : "", name);
}

#define DIFFERS(field) (memcmp(&a->field, &b->field, sizeof a->field) != 0)

void receive_config_restart_only(const struct receive_config *a, const struct receive_config *b,
                                 char *changed, size_t cap)
{
    changed[0] = '\0';
    /* The listening socket, its TLS files (read once, into memory), the inbox's file and the
     * body cap the HTTP front was set up with are set up once; so is --workers (the exec
     * sinks' concurrency, which bounds what the receiver starts at once). */
    if (strcmp(a->listen, b->listen) != 0)
        add_name(changed, cap, "listen");
    if (strcmp(a->store, b->store) != 0)
        add_name(changed, cap, "store");
    if (strcmp(a->tls_cert, b->tls_cert) != 0)
        add_name(changed, cap, "tls-cert");
    if (strcmp(a->tls_key, b->tls_key) != 0)
        add_name(changed, cap, "tls-key");
    if (strcmp(a->tls_client_ca, b->tls_client_ca) != 0)
        add_name(changed, cap, "tls-client-ca");
    if (a->insecure_http != b->insecure_http)
        add_name(changed, cap, "insecure-http");
    if (a->max_body_bytes != b->max_body_bytes)
        add_name(changed, cap, "max-body-bytes");
    if (a->workers != b->workers)
        add_name(changed, cap, "workers");
}

/* Whether two key lists hold the same keys in the same order. */
static bool same_keys(const struct receive_config *a, const struct receive_config *b)
{
    if (a->nkeys != b->nkeys)
        return false;
    for (size_t i = 0; i < a->nkeys; i++) {
        if (a->keys[i].kind != b->keys[i].kind || a->keys[i].key_len != b->keys[i].key_len ||
            !crypto_equal(a->keys[i].key, b->keys[i].key, a->keys[i].key_len) ||
            !crypto_equal(a->keys[i].public_key, b->keys[i].public_key,
                          sizeof a->keys[i].public_key))
            return false;
    }
    return true;
}

void receive_config_changes(const struct receive_config *a, const struct receive_config *b,
                            char *changed, size_t cap)
{
    receive_config_restart_only(a, b, changed, cap);
    if (!same_keys(a, b))
        add_name(changed, cap, "secret/public-key");
    if (a->nheaders != b->nheaders || DIFFERS(headers))
        add_name(changed, cap, "require-header");
    if (DIFFERS(defaults[SCHEME_EXEC]) || DIFFERS(defaults[SCHEME_JSONL]))
        add_name(changed, cap, "exec/jsonl");
    if (DIFFERS(defaults[SCHEME_PIPE]))
        add_name(changed, cap, "pipe");
    if (DIFFERS(defaults[SCHEME_FORWARD]))
        add_name(changed, cap, "forward");
    if (DIFFERS(defaults[SCHEME_POSTGRES]))
        add_name(changed, cap, "postgres");
    if (a->nroutes != b->nroutes || DIFFERS(routes))
        add_name(changed, cap, "route");
    if (a->nhandler_env != b->nhandler_env || DIFFERS(handler_env))
        add_name(changed, cap, "handler-env");
    if (a->exec_timeout_s != b->exec_timeout_s)
        add_name(changed, cap, "exec-timeout-s");
    if (a->max_attempts != b->max_attempts)
        add_name(changed, cap, "max-attempts");
    if (a->retry_base_ms != b->retry_base_ms)
        add_name(changed, cap, "retry-base-ms");
    if (a->tolerance_s != b->tolerance_s)
        add_name(changed, cap, "tolerance-s");
    if (a->retention_s != b->retention_s)
        add_name(changed, cap, "retention-s");
    if (strcmp(a->metrics, b->metrics) != 0)
        add_name(changed, cap, "metrics");
    if (a->refusal_log_interval_s != b->refusal_log_interval_s)
        add_name(changed, cap, "refusal-log-s");
    if (a->ordered != b->ordered)
        add_name(changed, cap, "ordered");
    if (a->pipe_window != b->pipe_window)
        add_name(changed, cap, "pipe-window");
    if (a->has_forward_key != b->has_forward_key ||
        (a->has_forward_key &&
         !crypto_equal(a->forward_key.key, b->forward_key.key, sizeof a->forward_key.key)))
        add_name(changed, cap, "forward-secret");
    if (strcmp(a->forward_ca, b->forward_ca) != 0)
        add_name(changed, cap, "forward-ca");
    if (a->forward_timeout_ms != b->forward_timeout_ms)
        add_name(changed, cap, "forward-timeout-ms");
    if (a->forward_max_in_flight != b->forward_max_in_flight)
        add_name(changed, cap, "forward-max-in-flight");
}

/* What a running receiver holds. */
struct running {
    struct live *live;
    struct receive_stats *stats;
    struct ch_inbox *inbox;
    struct dispatch *dispatch;
    receive_reload_cb reload;
    void *reload_ctx;
};

static void wipe_keys(struct receive_config *c)
{
    for (size_t i = 0; i < c->nkeys; i++)
        ch_secret_wipe(&c->keys[i]);
    c->nkeys = 0;
    ch_secret_wipe(&c->forward_key);
    c->has_forward_key = false;
}

/* SIGHUP: the settings read again and put in force, or, when they are refused, the reason
 * logged and the settings in force kept. */
static void reload(struct running *run)
{
    log_info("got SIGHUP: reloading the settings");
    struct receive_config *next = calloc(1, sizeof *next);
    const struct receive_config *now = live_get(run->live);
    struct ch_error err = {0};
    char changed[512] = "";
    ch_code rc = next ? run->reload(run->reload_ctx, next, &err)
                      : ch_error_set(&err, CH_ENOMEM, "out of memory");
    if (rc == CH_OK) {
        receive_config_restart_only(now, next, changed, sizeof changed);
        if (changed[0])
            rc = ch_error_set(&err, CH_EINVAL,
                              "%s cannot change without a restart (read once, at start)", changed);
    }
    /* A longer tolerance needs its dedupe keys kept longer before it takes effect. */
    if (rc == CH_OK && next->tolerance_s > now->tolerance_s)
        rc = ch_inbox_keep_keys(run->inbox, 2 * next->tolerance_s, &err);
    /* The sinks next names that are not running yet (or whose settings changed) open before
     * anything changes: one that cannot (a bad target) refuses the whole reload. */
    if (rc == CH_OK)
        rc = dispatch_prepare(run->dispatch, next, &err);
    if (rc == CH_OK) {
        receive_config_changes(now, next, changed, sizeof changed);
        rc = live_replace(run->live, next, &err);
        /* New events now go to next's sinks: the dispatchers of sinks it dropped stop (their
         * deliveries wait in the inbox). Had the replacement failed, those just started go. */
        dispatch_retire(run->dispatch, rc == CH_OK ? next : now);
    }
    if (rc == CH_OK) {
        stats_set_log_interval(run->stats, next->refusal_log_interval_s);
        char sinks[1024];
        dispatch_describe(run->dispatch, sinks, sizeof sinks);
        log_info("reloaded: %s; %zu key%s; sinks: %s", changed[0] ? changed : "nothing changed",
                 next->nkeys, next->nkeys == 1 ? "" : "s", sinks[0] ? sinks : "none");
    } else {
        log_warn("reload refused, the settings in force stay: %s", err.message);
    }
    stats_reload(run->stats, rc == CH_OK);
    live_put(run->live, now);
    if (next) {
        wipe_keys(next);
        free(next);
    }
}

/* inbox_reassign's router: the sinks an event would go to had it arrived now. */
static size_t route_old_event(void *ctx, const struct ch_inbox_entry *e, const char **names,
                              size_t max)
{
    const struct receive_config *c = ctx;
    return route_sinks(c, e->event, route_stored_kind(e->has_call_type, e->call_type), e->call_type,
                       names, max);
}

int receive_run(struct receive_config *c, receive_reload_cb reload_cb, void *reload_ctx,
                struct ch_error *err)
{
    fill_std_fds();
    /* The sinks' inbox bookkeeping makes SQLite open small temporary tables (UPDATE ... FROM,
     * RETURNING) many times a second; with glibc's defaults each one's memory went back to the
     * kernel when freed (madvise) and was faulted in again, and the TLB flushes this sends to
     * every core stalled the front: 0.03 of the bare sink's rate against 0.2 with the memory
     * kept (bench/run --only receive). Freed memory is kept, up to 64 MiB per arena. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    /* Stop signals and SIGHUP are taken by sigtimedwait in this thread only; every thread
     * started below inherits the blocked mask. */
    sigset_t signals;
    thread_block_stop_signals(&signals);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    struct running run = {.reload = reload_cb, .reload_ctx = reload_ctx};
    struct front *front = NULL;
    int status = 1;
    run.stats = stats_new();
    if (run.stats == NULL) {
        ch_error_set(err, CH_ENOMEM, "out of memory");
        goto out;
    }
    stats_set_log_interval(run.stats, c->refusal_log_interval_s);
    if (live_new(c, &run.live, err) != CH_OK)
        goto out;
    if (ch_inbox_open(c->store, &run.inbox, err) != CH_OK)
        goto out;
    long long requeued = 0, expired = 0;
    long long now_s = clock_wall_s();
    if (ch_inbox_keep_keys(run.inbox, 2 * c->tolerance_s, err) != CH_OK ||
        ch_inbox_recover(run.inbox, now_s * 1000, &requeued, err) != CH_OK ||
        ch_inbox_expire(run.inbox, now_s - c->retention_s, &expired, err) != CH_OK)
        goto out;
    if (requeued > 0)
        log_info("%lld events interrupted by the last stop will run again", requeued);
    /* An inbox of schema version 1 left its unprocessed events on the implicit sink: they go
     * where their routes send them now. */
    long long moved = 0;
    if (inbox_reassign(run.inbox, "", route_old_event, c, &moved, err) != CH_OK)
        goto out;
    if (moved > 0)
        log_info("%lld events of an inbox from before sinks were given to their handlers", moved);
    if (dispatch_start(run.live, run.stats, run.inbox, &run.dispatch, err) != CH_OK)
        goto out;
    if (front_start(c, run.live, run.stats, run.inbox, run.dispatch, &front, err) != CH_OK)
        goto out;
    bool any_default = false;
    for (int i = 0; i < SCHEME_COUNT; i++)
        any_default |= c->defaults[i].text[0] != '\0';
    if (!any_default)
        log_warn("no default handler (--exec, --jsonl, --pipe, --forward or --postgres): events "
                 "without a route are only stored in the inbox");
    if (c->insecure_http)
        log_warn("plain HTTP on %s (--insecure-http): use this only locally or behind a proxy "
                 "that terminates TLS",
                 c->listen);
    log_info("callhook receive %s: listening on %s://%s, inbox %s, %d workers%s%s; /metrics %s",
             CALLHOOK_VERSION, c->insecure_http ? "http" : "https", c->listen, c->store, c->workers,
             c->tls_client_ca[0] ? ", client certificates required" : "",
             c->nheaders ? ", shared-secret header required" : "",
             strcmp(c->metrics, "off") == 0   ? "off"
             : strcmp(c->metrics, "any") == 0 ? "open to any client"
                                              : "for loopback clients");
    /* Only now, with the socket taking connections, is the receiver ready to a service manager. */
    char ready[NOTIFY_STATE_MAX];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=listening on %s://%s",
             c->insecure_http ? "http" : "https", c->listen);
    notify_state(ready);

    /* Wait for a signal; meanwhile, every second, sum up the refusals held back from the log,
     * and once an hour expire old events. */
    long long next_expiry = clock_mono_ms() + 3600 * 1000LL;
    for (;;) {
        struct timespec second = {1, 0};
        int sig = sigtimedwait(&signals, NULL, &second);
        if (sig == SIGTERM || sig == SIGINT) {
            notify_state("STOPPING=1");
            log_info("got %s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (sig == SIGHUP) {
            notify_reloading();
            reload(&run);
            notify_state(ready);
        }
        stats_flush(run.stats);
        if (clock_mono_ms() < next_expiry)
            continue;
        next_expiry = clock_mono_ms() + 3600 * 1000LL;
        const struct receive_config *now = live_get(run.live);
        struct ch_error e2 = {0};
        if (ch_inbox_expire(run.inbox, clock_wall_s() - now->retention_s, &expired, &e2) != CH_OK)
            log_warn("cannot expire old events: %s", e2.message);
        live_put(run.live, now);
    }
    status = 0;
out:
    front_stop(front);
    dispatch_stop(run.dispatch);
    ch_inbox_close(run.inbox);
    live_free(run.live);
    stats_free(run.stats);
    wipe_keys(c);
    if (status == 0)
        log_info("stopped cleanly");
    return status;
}
