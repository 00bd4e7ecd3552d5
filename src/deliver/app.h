/* A Voice App's delivery settings: validated from the API's JSON, stored as canonical JSON,
 * and read back by the engine. The JSON keys are those of docs/API.md. */
#ifndef CALLHOOK_DELIVER_APP_H
#define CALLHOOK_DELIVER_APP_H

#include <callhook/error.h>

#include <stdbool.h>
#include <stddef.h>

#define APP_ID_MAX      128
#define APP_URL_MAX     2048
#define APP_MAX_HEADERS 16
#define APP_HEADER_MAX  1024
#define APP_MAX_RETRIES 20

struct app_header {
    char name[128];
    char value[APP_HEADER_MAX];
};

struct app_config {
    char begin_url[APP_URL_MAX + 1]; /* "" when the event is not sent */
    char end_url[APP_URL_MAX + 1];
    struct app_header headers[APP_MAX_HEADERS];
    int nheaders;
    long connect_timeout_ms;
    long timeout_ms;
    long retry_s[APP_MAX_RETRIES];
    int nretry;
    int max_in_flight;
    long rate_limit_per_s; /* 0: none */
    bool ordering_per_call;
    bool enabled;
    bool allow_insecure_http;
    bool allow_private_network;
    /* TLS per Voice App: files on the sender's machine; "" for none. Never their contents. */
    char tls_ca_file[1024];
    char tls_client_cert_file[1024];
    char tls_client_key_file[1024];
};

/* Fills c with the defaults of docs/API.md. */
void app_config_defaults(struct app_config *c);

/* Parses and validates a PUT body. CH_EINVAL with a message naming the field on any problem. */
ch_code app_config_parse(struct app_config *c, const char *json, size_t len, struct ch_error *err);

/* Checks that the TLS files the settings name can be read by this process (at PUT time). */
ch_code app_config_check_files(const struct app_config *c, struct ch_error *err);

/* Writes c as canonical JSON (every key); caller frees the result. NULL when out of memory.
 * With id/extra, adds "id" and the given already-formatted JSON members (may be NULL). */
char *app_config_to_json(const struct app_config *c, const char *id, const char *extra_members);

/* True for 1–128 characters of [A-Za-z0-9._-]. */
bool app_id_valid(const char *id);

/* The URL for an event ("begin-call"/"end-call"), or NULL when not configured. */
const char *app_config_url(const struct app_config *c, const char *event);

#endif
