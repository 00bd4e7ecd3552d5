/*
 * callhook serve put together: the one place that composes the sender (store, keys, engine,
 * ingest writer, the API on the HTTP front). Its settings, start-up in that dependency order,
 * and a shutdown that answers every request it took and gives back every claim it holds.
 */
#include "serve/serve.h"

#include "api/api.h"
#include "api/cache.h"
#include "deliver/ops.h"
#include "lib/crypto.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/log.h"
#include "util/notify.h"
#include "util/thread.h"

#include <curl/curl.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --allow-cidr: each value adds a range, at most 16. */
static ch_code add_allow_cidr(void *cfg, const char *name, const char *value, struct ch_error *err)
{
    struct serve_config *c = cfg;
    struct guard_cidr cidr;
    if (c->nallow_cidrs == 16 || strlen(value) >= sizeof c->allow_cidrs[0] ||
        !guard_cidr_parse(value, &cidr))
        return ch_error_set(err, CH_EINVAL, "%s: '%s' is not ADDRESS/PREFIX (at most 16 ranges)",
                            name, value);
    snprintf(c->allow_cidrs[c->nallow_cidrs++], sizeof c->allow_cidrs[0], "%s", value);
    return CH_OK;
}

#define SERVE(field) CONFIG_FIELD(struct serve_config, field)

/* The settings: name (flag and file key), environment variable, field, bounds, default, what
 * it does. One table for the defaults, the config file, the environment, the flags and --help. */
static const struct config_setting serve_settings[] = {
    {"listen", "CALLHOOK_LISTEN", SERVE(listen), .def = "127.0.0.1:8080",
     .help = "address and port of the HTTP API"},
    {"db", "CALLHOOK_DB", SERVE(db), .def = "sqlite:var/callhook.db",
     .help = "the database (created on first start)"},
    {"max-body-bytes", "CALLHOOK_MAX_BODY_BYTES", SERVE(max_body_bytes), 1024, 16 * 1024 * 1024,
     "262144", "largest call record accepted"},
    {"lease-s", "CALLHOOK_LEASE_S", SERVE(lease_s), 5, 86400, "300",
     "how long a claimed delivery is held"},
    {"scan-interval-ms", "CALLHOOK_SCAN_INTERVAL_MS", SERVE(scan_interval_ms), 10, 60000, "1000",
     "how often the store is read for due retries"},
    {"max-in-flight", "CALLHOOK_MAX_IN_FLIGHT", SERVE(max_in_flight), 1, 100000, "1024",
     "attempts under way over all apps"},
    {"max-queued-mb", "CALLHOOK_MAX_QUEUED_MB", SERVE(max_queued_mb), 1, 65536, "16",
     "records held in memory waiting for delivery (the rest wait in the store)"},
    {"shutdown-grace-ms", "CALLHOOK_SHUTDOWN_GRACE_MS", SERVE(shutdown_grace_ms), 0, 600000,
     "10000", "how long in-flight attempts may finish at stop"},
    {"data-key-file", "CALLHOOK_DATA_KEY_FILE", SERVE(data_key_file), .def = "",
     .help = "file with an AES-256 key (base64 of 32 bytes): records and secrets encrypted at "
             "rest (or the key itself in CALLHOOK_DATA_KEY)"},
    {"payload-retention-s", "CALLHOOK_PAYLOAD_RETENTION_S", SERVE(payload_retention_s), 60,
     86400LL * 3650, "604800",
     "records of delivered (and skipped) messages are removed after this"},
    {"attempt-retention-s", "CALLHOOK_ATTEMPT_RETENTION_S", SERVE(attempt_retention_s), 60,
     86400LL * 3650, "2592000", "the attempt log is removed after this"},
    {"purge-interval-s", "CALLHOOK_PURGE_INTERVAL_S", SERVE(purge_interval_s), 1, 86400, "3600",
     "how often retention runs"},
    {"admin-key-file", "CALLHOOK_ADMIN_KEY_FILE", SERVE(admin_key_file), .def = "",
     .help = "where a first admin key is written when the database has no keys (its folders are "
             "made); default admin.key beside a SQLite database; '-', and the default on "
             "PostgreSQL: printed once, on a terminal only"},
    {"allow-cidr", "CALLHOOK_ALLOW_CIDR", CONFIG_CUSTOM, .def = "",
     .help = "an internal address range every app may reach, e.g. 10.20.0.0/16 (repeatable)",
     .set = add_allow_cidr},
    {"ops-webhook", "CALLHOOK_OPS_WEBHOOK", SERVE(ops_webhook), .def = "",
     .help = "URL callhook POSTs its own signed events to: a voice app disabled or enabled "
             "again, a message dead, a backlog older than ops-alert-age-s and its recovery "
             "(docs/OPERATIONS.md); judged by the SSRF guard like any app's URL"},
    {"ops-webhook-secret-file", "CALLHOOK_OPS_WEBHOOK_SECRET_FILE", SERVE(ops_webhook_secret_file),
     .def = "",
     .help = "file (the owner's alone) with the ops webhook's signing secret, e.g. from "
             "'callhook secret new'; without it the stored one is kept, or one is made on first "
             "start (read it with 'callhook app secret callhook-ops')"},
    {"ops-alert-age-s", "CALLHOOK_OPS_ALERT_AGE_S", SERVE(ops_alert_age_s), 1, 86400 * 30, "600",
     "an app whose oldest waiting event is older than this sends voice_app.backlog_old "
     "(needs ops-webhook)"},
    {"ops-check-interval-s", "CALLHOOK_OPS_CHECK_INTERVAL_S", SERVE(ops_check_interval_s), 1, 3600,
     "30", "how often disabled apps and backlogs are checked for the ops webhook"},
};

const struct config_table serve_config_table = {"serve", sizeof(struct serve_config),
                                                serve_settings,
                                                sizeof serve_settings / sizeof serve_settings[0]};

/* The ops settings act through ops-webhook only: one given without it would do nothing, so
 * it is refused (a value equal to the default cannot be told from none, and does nothing). */
static ch_code check_ops_settings(const struct serve_config *c, struct ch_error *err)
{
    if (c->ops_webhook[0])
        return CH_OK;
    const char *lone = NULL;
    if (c->ops_webhook_secret_file[0])
        lone = "ops-webhook-secret-file";
    else if (c->ops_alert_age_s != atoi(config_find(&serve_config_table, "ops-alert-age-s")->def))
        lone = "ops-alert-age-s";
    else if (c->ops_check_interval_s !=
             atoi(config_find(&serve_config_table, "ops-check-interval-s")->def))
        lone = "ops-check-interval-s";
    if (lone == NULL)
        return CH_OK;
    return ch_error_set(err, CH_EINVAL,
                        "%s is set but ops-webhook is not: give ops-webhook (the URL ops events "
                        "go to), or leave %s out",
                        lone, lone);
}

/* The data key from --data-key-file or CALLHOOK_DATA_KEY: base64 of exactly 32 bytes. */
static ch_code load_data_key(const struct serve_config *c, unsigned char key[32], bool *have,
                             struct ch_error *err)
{
    return store_data_key_load(c->data_key_file, "CALLHOOK_DATA_KEY", key, have, err);
}

/* Opens the store, wrapped in encryption when a data key is configured. A sealed database
 * is refused without its key (and, by the wrapper, with another key). */
/* create: serve makes a SQLite database that is not there; purge does not. */
static ch_code open_store(const struct serve_config *c, bool create, struct store **out,
                          bool *encrypted, struct ch_error *err)
{
    unsigned char key[32];
    bool have = false, is_sealed = false;
    ch_code rc = load_data_key(c, key, &have, err);
    if (rc != CH_OK)
        return rc;
    struct store *s = NULL;
    rc = create ? store_open(c->db, &s, err) : store_open_existing(c->db, &s, err);
    if (rc == CH_OK && have) {
        struct store *wrapped = NULL;
        rc = store_sealed_wrap(s, key, &wrapped, err);
        if (rc == CH_OK)
            s = wrapped;
    } else if (rc == CH_OK && (rc = store_is_sealed(s, &is_sealed, err)) == CH_OK && is_sealed) {
        rc = ch_error_set(err, CH_ESECRET,
                          "this database is sealed: give its data key with --data-key-file or "
                          "CALLHOOK_DATA_KEY");
    }
    crypto_wipe(key, sizeof key);
    if (rc != CH_OK) {
        store_close(s);
        return rc;
    }
    *out = s;
    *encrypted = have;
    return CH_OK;
}

static void run_purge(struct store *s, const struct serve_config *c)
{
    int64_t now = clock_wall_s(), payloads = 0, attempts = 0;
    struct ch_error err = {0};
    if (store_purge(s, now - c->payload_retention_s, (now - c->attempt_retention_s) * 1000,
                    &payloads, &attempts, &err) != CH_OK)
        log_warn("retention: %s", err.message);
    else if (payloads || attempts)
        log_info("retention: removed %lld delivered records and %lld attempts", (long long)payloads,
                 (long long)attempts);
}

ch_code serve_purge(const struct serve_config *c, struct ch_error *err)
{
    struct store *s = NULL;
    bool encrypted;
    ch_code rc = open_store(c, false, &s, &encrypted, err);
    if (rc != CH_OK)
        return rc;
    int64_t now = clock_wall_s(), payloads = 0, attempts = 0;
    rc = store_purge(s, now - c->payload_retention_s, (now - c->attempt_retention_s) * 1000,
                     &payloads, &attempts, err);
    if (rc == CH_OK)
        printf("removed %lld delivered records and %lld attempts\n", (long long)payloads,
               (long long)attempts);
    store_close(s);
    return rc;
}

/* Where a first admin key goes: --admin-key-file; else "admin.key" in a SQLite database's
 * folder; else (PostgreSQL, or "-") nowhere: NULL, printed to the terminal. */
static const char *key_file_path(const struct serve_config *c, char *out, size_t cap)
{
    if (strcmp(c->admin_key_file, "-") == 0)
        return NULL;
    if (c->admin_key_file[0]) {
        snprintf(out, cap, "%s", c->admin_key_file);
        return out;
    }
    if (strncmp(c->db, "sqlite:", 7) != 0)
        return NULL;
    const char *path = c->db + 7;
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(out, cap, "admin.key");
    else
        snprintf(out, cap, "%.*s/admin.key", (int)(slash - path), path);
    return out;
}

/* The flag a client on this machine needs to reach serve: "" when it listens where the CLI
 * looks by default; a wildcard listen address is reached through loopback. */
static void url_flag(const char *listen, char *out, size_t cap)
{
    const char *port = strrchr(listen, ':');
    const char *host = "127.0.0.1";
    int host_len = 9;
    if (port != NULL && strncmp(listen, "0.0.0.0:", 8) != 0 && strncmp(listen, "[::]:", 5) != 0 &&
        strncmp(listen, ":", 1) != 0) {
        host = listen;
        host_len = (int)(port - listen);
    }
    char url[300];
    snprintf(url, sizeof url, "http://%.*s%s", host_len, host, port ? port : ":8080");
    if (strcmp(url, "http://127.0.0.1:8080") == 0) /* the CLI's default (CLI_DEFAULT_URL) */
        out[0] = '\0';
    else
        snprintf(out, cap, " --url %s", url);
}

int serve_run(const struct serve_config *c, struct ch_error *err)
{
    /* Stop signals are taken by sigtimedwait in this thread only; every thread started below
     * inherits the blocked mask. */
    sigset_t stop_signals;
    thread_block_stop_signals(&stop_signals);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ch_error_set(err, CH_ENOMEM, "cannot initialise libcurl");
        return 1;
    }

    struct metrics metrics;
    memset(&metrics, 0, sizeof metrics);
    struct api_context ctx = {.metrics = &metrics,
                              .max_body_bytes = c->max_body_bytes,
                              .lease_s = c->lease_s,
                              .started_at = clock_wall_s()};
    struct http_server *server = NULL;
    struct ops *ops = NULL;
    int status = 1;
    char key_file_buf[4200];
    const char *key_file = key_file_path(c, key_file_buf, sizeof key_file_buf);
    bool made_key = false;

    /* The ops webhook's URL and secret are checked before anything is made or written. */
    struct guard_cidr allowed[16];
    for (int i = 0; i < c->nallow_cidrs; i++)
        guard_cidr_parse(c->allow_cidrs[i], &allowed[i]);
    if (check_ops_settings(c, err) != CH_OK)
        goto out;
    if (c->ops_webhook[0]) {
        struct ops_config oc = {.url = c->ops_webhook,
                                .secret_file = c->ops_webhook_secret_file,
                                .alert_age_s = c->ops_alert_age_s,
                                .check_interval_s = c->ops_check_interval_s,
                                .lease_s = c->lease_s,
                                .allowed = allowed,
                                .nallowed = c->nallow_cidrs};
        if (ops_new(&oc, &ops, err) != CH_OK)
            goto out;
    }

    bool encrypted = false;
    if (open_store(c, true, &ctx.store, &encrypted, err) != CH_OK)
        goto out;
    char db_shown[sizeof c->db];
    store_uri_for_log(c->db, db_shown, sizeof db_shown);
    ctx.store_location = db_shown;
    ctx.listen = c->listen;
    if (!encrypted)
        log_warn("no data key: call records and signing secrets are stored in clear in %s "
                 "(see docs/SECURITY.md)",
                 db_shown);
    else if (store_sealed_reads_old_forms(ctx.store))
        log_warn("%s held data before its data key was set: plaintext and older sealed values "
                 "are still read until 'callhook store seal --db URI' seals them in place "
                 "(see docs/SECURITY.md)",
                 db_shown);
    int64_t released = 0;
    if (store_startup(ctx.store, clock_wall_s(), &released, err) != CH_OK)
        goto out;
    if (released > 0)
        log_info("%lld messages claimed by an earlier run are due again", (long long)released);
    if (api_bootstrap_admin(ctx.store, key_file, &made_key, err) != CH_OK)
        goto out;
    struct engine_config ec = {.store = ctx.store,
                               .allowed = allowed,
                               .nallowed = c->nallow_cidrs,
                               .metrics = &metrics,
                               .lease_s = c->lease_s,
                               .scan_interval_ms = c->scan_interval_ms,
                               .max_in_flight = c->max_in_flight,
                               .max_queued_bytes = (int64_t)c->max_queued_mb << 20,
                               .shutdown_grace_ms = c->shutdown_grace_ms,
                               .outcome = ops ? ops_outcome : NULL,
                               .outcome_ctx = ops};
    if (engine_new(&ec, &ctx.engine, err) != CH_OK || engine_start(ctx.engine, err) != CH_OK)
        goto out;
    bool made_secret = false;
    if (ops != NULL && ops_start(ops, ctx.store, ctx.engine, &made_secret, err) != CH_OK)
        goto out;
    if (made_secret)
        log_info("the ops webhook's signing secret was made: read it with 'callhook app secret "
                 "%s' (an admin key), or give your own with --ops-webhook-secret-file",
                 OPS_APP_ID);
    ctx.keys = api_cache_new(1024, 5000);
    ctx.apps = api_cache_new(4096, 2000);
    if (ctx.keys == NULL || ctx.apps == NULL) {
        ch_error_set(err, CH_ENOMEM, "out of memory");
        goto out;
    }
    if (ingest_writer_new(&ctx, &ctx.writer, err) != CH_OK)
        goto out;
    struct http_config hc = {.listen = c->listen,
                             .max_body_bytes = c->max_body_bytes,
                             /* Bodies held at once: 64 MiB, or four of the largest allowed. */
                             .body_budget_bytes = c->max_body_bytes * 4 > (64u << 20)
                                                      ? c->max_body_bytes * 4
                                                      : (size_t)64 << 20,
                             .connection_memory = 16 * 1024,
                             .errors = HTTP_ERROR_CODED};
    struct http_handler handler;
    api_handler(&ctx, &handler);
    if (http_server_start(&hc, &handler, &server, err) != CH_OK)
        goto out;
    log_info("callhook serve %s: listening on http://%s, store %s", CALLHOOK_VERSION, c->listen,
             db_shown);
    if (ops != NULL)
        log_info("ops webhook: events go to %s (voice app '%s'), backlogs older than %d s are "
                 "reported, checked every %d s",
                 c->ops_webhook, OPS_APP_ID, c->ops_alert_age_s, c->ops_check_interval_s);
    /* Only now, with the socket taking connections, is serve ready to a service manager. */
    char ready[NOTIFY_STATE_MAX];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=listening on http://%s", c->listen);
    notify_state(ready);
    char url[320];
    url_flag(c->listen, url, sizeof url);
    if (made_key && key_file != NULL)
        log_info("the first admin key is in %s: export CALLHOOK_KEY=$(cat %s); then try "
                 "'callhook app list%s' or curl -H \"Authorization: Bearer $CALLHOOK_KEY\" "
                 "http://%s/v1/voice-apps",
                 key_file, key_file, url, c->listen);
    else if (made_key)
        log_info("export CALLHOOK_KEY=<the key above>; then try 'callhook app list%s'", url);

    /* Wait for a stop signal, running retention every purge-interval-s meanwhile. */
    run_purge(ctx.store, c);
    int sig;
    for (;;) {
        struct timespec interval = {c->purge_interval_s, 0};
        sig = sigtimedwait(&stop_signals, NULL, &interval);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        run_purge(ctx.store, c);
    }
    notify_state("STOPPING=1");
    log_info("got %s: stopping (in-flight attempts have %d ms)",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", c->shutdown_grace_ms);
    status = 0;

out:
    /* Stop in reverse: answer every queued ingest (anything later is answered 503), close
     * HTTP once those answers are sent, then let the engine finish or give back its work. */
    ingest_writer_stop(ctx.writer);
    http_server_stop(server);
    ingest_writer_free(ctx.writer);
    ctx.writer = NULL;
    /* The ops checks end before the engine; the dead messages its last results report are
     * stored after it, due for whichever node delivers next. */
    ops_stop(ops);
    engine_free(ctx.engine);
    ops_free(ops);
    api_cache_free(ctx.keys);
    api_cache_free(ctx.apps);
    if (ctx.store)
        store_close(ctx.store);
    curl_global_cleanup();
    if (status == 0)
        log_info("stopped cleanly");
    return status;
}

ch_code serve_key_create(const char *db, const char *role, char *key_out, size_t cap,
                         struct ch_error *err)
{
    enum key_role r;
    if (!key_role_parse(role, &r))
        return ch_error_set(err, CH_EINVAL, "--role is ingest, read or admin, not '%s'", role);
    if (cap < API_KEY_TEXT_MAX)
        return ch_error_set(err, CH_EINVAL, "key buffer too small");
    struct store *s = NULL;
    ch_code rc = store_open_existing(db, &s, err);
    if (rc == CH_OK)
        rc = api_key_create(s, r, key_out, err);
    if (s)
        store_close(s);
    return rc;
}

static void print_key(void *ctx, const char *key_id, enum key_role role, int64_t created_at,
                      bool revoked)
{
    (void)ctx;
    char when[32];
    time_t t = (time_t)created_at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("%-17s %-7s %-21s %s\n", key_id, key_role_name(role), when,
           revoked ? "revoked" : "active");
}

ch_code serve_key_list(const char *db, struct ch_error *err)
{
    struct store *s = NULL;
    ch_code rc = store_open_existing(db, &s, err);
    if (rc == CH_OK) {
        printf("%-17s %-7s %-21s %s\n", "KEY ID", "ROLE", "CREATED", "STATE");
        rc = store_key_list(s, print_key, NULL, err);
    }
    if (s)
        store_close(s);
    return rc;
}

ch_code serve_key_revoke(const char *db, const char *key_id, struct ch_error *err)
{
    struct store *s = NULL;
    ch_code rc = store_open_existing(db, &s, err);
    if (rc == CH_OK)
        rc = store_key_revoke(s, key_id, err);
    if (s)
        store_close(s);
    return rc;
}
