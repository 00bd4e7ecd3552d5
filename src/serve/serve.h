/* callhook serve: the sender daemon put together (store, ingest writer, engine, HTTP API), and
 * the key commands that work on its database directly. The CLI's only door into the daemon. */
#ifndef CALLHOOK_SERVE_H
#define CALLHOOK_SERVE_H

#include "util/config.h"

#include <callhook/error.h>

#include <stddef.h>

struct serve_config {
    char listen[256];              /* HOST:PORT; default 127.0.0.1:8080 */
    char db[4096];                 /* sqlite:PATH; default sqlite:var/callhook.db */
    size_t max_body_bytes;         /* default 256 KiB */
    int lease_s;                   /* default 300 */
    int scan_interval_ms;          /* default 1000 */
    int max_in_flight;             /* over all apps; default 1024 */
    int max_queued_mb;             /* records held in memory for delivery; default 16 */
    int shutdown_grace_ms;         /* default 10000 */
    char data_key_file[4096];      /* AES-256 key (base64 of 32 bytes); or CALLHOOK_DATA_KEY */
    char admin_key_file[4096];     /* a first admin key's file; "-" printed; "" see serve.c */
    long long payload_retention_s; /* delivered records kept; default 7 days */
    long long attempt_retention_s; /* attempt log kept; default 30 days */
    int purge_interval_s;          /* how often retention runs; default 3600 */
    char allow_cidrs[16][64];      /* internal ranges every app may reach */
    int nallow_cidrs;
    char ops_webhook[2049];             /* the operational webhook's URL; "" for none */
    char ops_webhook_secret_file[4096]; /* its signing secret; "" keeps or makes one */
    int ops_alert_age_s;                /* a backlog older than this is reported; default 600 */
    int ops_check_interval_s;           /* how often apps are checked; default 30 */
};

/* The settings of serve (and purge): the table that drives the defaults (config_init), the
 * config file, the CALLHOOK_* variables, the flags and --help. */
extern const struct config_table serve_config_table;

/* Runs the daemon until SIGTERM or SIGINT. Returns 0 after a clean stop, 1 on a failure to
 * start (err says why). */
int serve_run(const struct serve_config *c, struct ch_error *err);

/* Runs retention once on the database (callhook purge): prints what it removed. */
ch_code serve_purge(const struct serve_config *c, struct ch_error *err);

/* Key management on the database itself. key_create prints nothing: the key comes back in
 * key_out (API_KEY_TEXT_MAX bytes). */
ch_code serve_key_create(const char *db, const char *role, char *key_out, size_t cap,
                         struct ch_error *err);
ch_code serve_key_list(const char *db, struct ch_error *err); /* prints a table to stdout */
ch_code serve_key_revoke(const char *db, const char *key_id, struct ch_error *err);

#endif
