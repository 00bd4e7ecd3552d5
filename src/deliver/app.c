/* Voice App settings: strict validation of what an admin PUTs, canonical JSON for the store. */
#include "deliver/app.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <unistd.h>

static const long default_retry_s[] = {5, 300, 1800, 7200, 18000, 36000, 36000};

void app_config_defaults(struct app_config *c)
{
    memset(c, 0, sizeof *c);
    c->connect_timeout_ms = 5000;
    c->timeout_ms = 15000;
    c->nretry = (int)(sizeof default_retry_s / sizeof default_retry_s[0]);
    memcpy(c->retry_s, default_retry_s, sizeof default_retry_s);
    c->max_in_flight = 64;
    c->ordering_per_call = true;
    c->enabled = true;
}

bool app_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > APP_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

const char *app_config_url(const struct app_config *c, const char *event)
{
    const char *url = strcmp(event, "begin-call") == 0 ? c->begin_url : c->end_url;
    return url[0] ? url : NULL;
}

/* A URL the engine may be asked to call: http(s), a host, no credentials, no fragment. */
static ch_code check_url(const char *field, const char *url, bool allow_http, struct ch_error *err)
{
    const char *rest;
    if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    else if (strncasecmp(url, "http://", 7) == 0) {
        if (!allow_http)
            return ch_error_set(err, CH_EINVAL,
                                "%s: only https:// URLs are allowed (allow plain http with "
                                "allowInsecureHttp, or --allow-http in callhook app put)",
                                field);
        rest = url + 7;
    } else
        return ch_error_set(err, CH_EINVAL, "%s: must start with https://", field);
    size_t host_len = strcspn(rest, "/?#");
    if (host_len == 0)
        return ch_error_set(err, CH_EINVAL, "%s: has no host", field);
    if (memchr(rest, '@', host_len) != NULL)
        return ch_error_set(err, CH_EINVAL, "%s: must not carry a user or password", field);
    for (const char *p = url; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return ch_error_set(err, CH_EINVAL, "%s: contains spaces or control characters", field);
    }
    if (strchr(url, '#') != NULL)
        return ch_error_set(err, CH_EINVAL, "%s: must not have a #fragment", field);
    return CH_OK;
}

static ch_code get_int(json_t *v, const char *field, long min, long max, long *out,
                       struct ch_error *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return ch_error_set(err, CH_EINVAL, "%s: must be a whole number from %ld to %ld", field,
                            min, max);
    *out = (long)json_integer_value(v);
    return CH_OK;
}

static ch_code get_bool(json_t *v, const char *field, bool *out, struct ch_error *err)
{
    if (!json_is_boolean(v))
        return ch_error_set(err, CH_EINVAL, "%s: must be true or false", field);
    *out = json_is_true(v);
    return CH_OK;
}

static ch_code get_url(json_t *v, const char *field, char *dst, struct ch_error *err)
{
    if (json_is_null(v)) {
        dst[0] = '\0';
        return CH_OK;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > APP_URL_MAX)
        return ch_error_set(err, CH_EINVAL, "%s: must be a URL of at most %d characters, or null",
                            field, APP_URL_MAX);
    snprintf(dst, APP_URL_MAX + 1, "%s", json_string_value(v));
    return CH_OK;
}

/* Header names a Voice App may not set: callhook owns them. */
static bool reserved_header(const char *name)
{
    static const char *const reserved[] = {
        "content-type",      "content-length", "host",
        "user-agent",        "webhook-id",     "webhook-timestamp",
        "webhook-signature", "x-call-event",   "transfer-encoding",
        "connection",        "expect",         "x-callhook-test"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (strcasecmp(name, reserved[i]) == 0)
            return true;
    }
    return false;
}

static ch_code get_headers(json_t *v, struct app_config *c, struct ch_error *err)
{
    if (!json_is_object(v))
        return ch_error_set(err, CH_EINVAL, "headers: must be an object of string values");
    if (json_object_size(v) > APP_MAX_HEADERS)
        return ch_error_set(err, CH_EINVAL, "headers: at most %d", APP_MAX_HEADERS);
    const char *name;
    json_t *value;
    c->nheaders = 0;
    json_object_foreach(v, name, value)
    {
        size_t n = strlen(name);
        if (n == 0 || n >= sizeof c->headers[0].name)
            return ch_error_set(err, CH_EINVAL, "headers: a name must have 1 to 127 characters");
        for (size_t i = 0; i < n; i++) {
            char ch = name[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
                return ch_error_set(err, CH_EINVAL, "headers: '%s' is not a valid header name",
                                    name);
        }
        if (reserved_header(name))
            return ch_error_set(err, CH_EINVAL, "headers: '%s' is set by callhook itself", name);
        if (!json_is_string(value) || json_string_length(value) >= APP_HEADER_MAX)
            return ch_error_set(err, CH_EINVAL, "headers.%s: must be a string under %d bytes", name,
                                APP_HEADER_MAX);
        const char *val = json_string_value(value);
        for (const char *p = val; *p; p++) {
            if (*p == '\r' || *p == '\n' || *p == '\0')
                return ch_error_set(err, CH_EINVAL, "headers.%s: no line breaks allowed", name);
        }
        snprintf(c->headers[c->nheaders].name, sizeof c->headers[0].name, "%s", name);
        snprintf(c->headers[c->nheaders].value, sizeof c->headers[0].value, "%s", val);
        c->nheaders++;
    }
    return CH_OK;
}

static ch_code get_retries(json_t *v, struct app_config *c, struct ch_error *err)
{
    if (!json_is_array(v) || json_array_size(v) > APP_MAX_RETRIES)
        return ch_error_set(err, CH_EINVAL,
                            "retryScheduleSeconds: must be an array of at most %d delays",
                            APP_MAX_RETRIES);
    size_t i;
    json_t *d;
    c->nretry = 0;
    json_array_foreach(v, i, d)
    {
        long s = 0;
        if (get_int(d, "retryScheduleSeconds[]", 1, 7 * 86400, &s, err) != CH_OK)
            return CH_EINVAL;
        c->retry_s[c->nretry++] = s;
    }
    return CH_OK;
}

static ch_code get_path(json_t *v, const char *field, char *dst, size_t cap, struct ch_error *err)
{
    if (json_is_null(v)) {
        dst[0] = '\0';
        return CH_OK;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap ||
        json_string_value(v)[0] != '/')
        return ch_error_set(err, CH_EINVAL, "%s: must be an absolute file path, or null", field);
    snprintf(dst, cap, "%s", json_string_value(v));
    return CH_OK;
}

static ch_code get_tls(json_t *v, struct app_config *c, struct ch_error *err)
{
    if (!json_is_object(v))
        return ch_error_set(err, CH_EINVAL,
                            "tls: must be an object with caFile, clientCertFile, clientKeyFile");
    const char *key;
    json_t *value;
    json_object_foreach(v, key, value)
    {
        ch_code rc;
        if (strcmp(key, "caFile") == 0)
            rc = get_path(value, "tls.caFile", c->tls_ca_file, sizeof c->tls_ca_file, err);
        else if (strcmp(key, "clientCertFile") == 0)
            rc = get_path(value, "tls.clientCertFile", c->tls_client_cert_file,
                          sizeof c->tls_client_cert_file, err);
        else if (strcmp(key, "clientKeyFile") == 0)
            rc = get_path(value, "tls.clientKeyFile", c->tls_client_key_file,
                          sizeof c->tls_client_key_file, err);
        else
            rc = ch_error_set(err, CH_EINVAL, "tls.%s: unknown setting", key);
        if (rc != CH_OK)
            return rc;
    }
    if (!c->tls_client_cert_file[0] != !c->tls_client_key_file[0])
        return ch_error_set(err, CH_EINVAL,
                            "tls: clientCertFile and clientKeyFile go together (mTLS)");
    return CH_OK;
}

ch_code app_config_check_files(const struct app_config *c, struct ch_error *err)
{
    const struct {
        const char *field, *path;
    } files[] = {{"tls.caFile", c->tls_ca_file},
                 {"tls.clientCertFile", c->tls_client_cert_file},
                 {"tls.clientKeyFile", c->tls_client_key_file}};
    for (size_t i = 0; i < 3; i++) {
        if (files[i].path[0] && access(files[i].path, R_OK) != 0)
            return ch_error_set(err, CH_EINVAL, "%s: cannot read '%s': %s", files[i].field,
                                files[i].path, strerror(errno));
    }
    return CH_OK;
}

static ch_code parse_member(struct app_config *c, const char *key, json_t *v, bool *connect_given,
                            struct ch_error *err)
{
    long n = 0;
    ch_code rc;
    if (strcmp(key, "BeginCallEventProcessingUrl") == 0)
        return get_url(v, key, c->begin_url, err);
    if (strcmp(key, "EndCallEventProcessingUrl") == 0)
        return get_url(v, key, c->end_url, err);
    if (strcmp(key, "headers") == 0)
        return get_headers(v, c, err);
    if (strcmp(key, "tls") == 0)
        return get_tls(v, c, err);
    if (strcmp(key, "connectTimeoutMs") == 0) {
        rc = get_int(v, key, 100, 60000, &n, err);
        c->connect_timeout_ms = n;
        *connect_given = true;
        return rc;
    }
    if (strcmp(key, "timeoutMs") == 0) {
        rc = get_int(v, key, 100, 120000, &n, err);
        c->timeout_ms = n;
        return rc;
    }
    if (strcmp(key, "retryScheduleSeconds") == 0)
        return get_retries(v, c, err);
    if (strcmp(key, "maxInFlight") == 0) {
        rc = get_int(v, key, 1, 10000, &n, err);
        c->max_in_flight = (int)n;
        return rc;
    }
    if (strcmp(key, "rateLimitPerSecond") == 0) {
        rc = get_int(v, key, 0, 1000000, &n, err);
        c->rate_limit_per_s = n;
        return rc;
    }
    if (strcmp(key, "ordering") == 0) {
        const char *s = json_string_value(v);
        if (s == NULL || (strcmp(s, "per-call") != 0 && strcmp(s, "none") != 0))
            return ch_error_set(err, CH_EINVAL, "ordering: must be \"per-call\" or \"none\"");
        c->ordering_per_call = strcmp(s, "per-call") == 0;
        return CH_OK;
    }
    if (strcmp(key, "enabled") == 0)
        return get_bool(v, key, &c->enabled, err);
    if (strcmp(key, "allowInsecureHttp") == 0)
        return get_bool(v, key, &c->allow_insecure_http, err);
    if (strcmp(key, "allowPrivateNetwork") == 0)
        return get_bool(v, key, &c->allow_private_network, err);
    return ch_error_set(err, CH_EINVAL, "%s: unknown setting (see docs/API.md)", key);
}

ch_code app_config_parse(struct app_config *c, const char *json, size_t len, struct ch_error *err)
{
    app_config_defaults(c);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return ch_error_set(err, CH_EINVAL, "invalid JSON at line %d, column %d: %s", jerr.line,
                            jerr.column, jerr.text);
    ch_code rc = CH_OK;
    bool connect_given = false;
    if (!json_is_object(root))
        rc = ch_error_set(err, CH_EINVAL, "the settings must be a JSON object");
    const char *key;
    json_t *v;
    if (rc == CH_OK) {
        json_object_foreach(root, key, v)
        {
            if (strcmp(key, "id") == 0 || strcmp(key, "createdAt") == 0 ||
                strcmp(key, "updatedAt") == 0 || strcmp(key, "disabledReason") == 0 ||
                strcmp(key, "opsWebhook") == 0)
                continue; /* what GET returns may be PUT back as it is */
            rc = parse_member(c, key, v, &connect_given, err);
            if (rc != CH_OK)
                break;
        }
    }
    json_decref(root);
    if (rc == CH_OK && c->begin_url[0])
        rc = check_url("BeginCallEventProcessingUrl", c->begin_url, c->allow_insecure_http, err);
    if (rc == CH_OK && c->end_url[0])
        rc = check_url("EndCallEventProcessingUrl", c->end_url, c->allow_insecure_http, err);
    /* The connect default follows a shorter total timeout; one given explicitly must fit. */
    if (rc == CH_OK && !connect_given && c->connect_timeout_ms > c->timeout_ms)
        c->connect_timeout_ms = c->timeout_ms;
    if (rc == CH_OK && c->connect_timeout_ms > c->timeout_ms)
        rc = ch_error_set(err, CH_EINVAL, "connectTimeoutMs: must not exceed timeoutMs");
    return rc;
}

char *app_config_to_json(const struct app_config *c, const char *id, const char *extra_members)
{
    json_t *o = json_object();
    json_t *h = json_object();
    json_t *r = json_array();
    if (o == NULL || h == NULL || r == NULL) {
        json_decref(o);
        json_decref(h);
        json_decref(r);
        return NULL;
    }
    if (id)
        json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "BeginCallEventProcessingUrl",
                        c->begin_url[0] ? json_string(c->begin_url) : json_null());
    json_object_set_new(o, "EndCallEventProcessingUrl",
                        c->end_url[0] ? json_string(c->end_url) : json_null());
    for (int i = 0; i < c->nheaders; i++)
        json_object_set_new(h, c->headers[i].name, json_string(c->headers[i].value));
    json_object_set_new(o, "headers", h);
    json_object_set_new(o, "connectTimeoutMs", json_integer(c->connect_timeout_ms));
    json_object_set_new(o, "timeoutMs", json_integer(c->timeout_ms));
    for (int i = 0; i < c->nretry; i++)
        json_array_append_new(r, json_integer(c->retry_s[i]));
    json_object_set_new(o, "retryScheduleSeconds", r);
    json_object_set_new(o, "maxInFlight", json_integer(c->max_in_flight));
    json_object_set_new(o, "rateLimitPerSecond", json_integer(c->rate_limit_per_s));
    json_object_set_new(o, "ordering", json_string(c->ordering_per_call ? "per-call" : "none"));
    json_object_set_new(o, "enabled", json_boolean(c->enabled));
    json_object_set_new(o, "allowInsecureHttp", json_boolean(c->allow_insecure_http));
    json_object_set_new(o, "allowPrivateNetwork", json_boolean(c->allow_private_network));
    json_t *tls = json_object();
    if (tls) {
        json_object_set_new(tls, "caFile",
                            c->tls_ca_file[0] ? json_string(c->tls_ca_file) : json_null());
        json_object_set_new(tls, "clientCertFile",
                            c->tls_client_cert_file[0] ? json_string(c->tls_client_cert_file)
                                                       : json_null());
        json_object_set_new(tls, "clientKeyFile",
                            c->tls_client_key_file[0] ? json_string(c->tls_client_key_file)
                                                      : json_null());
        json_object_set_new(o, "tls", tls);
    }
    if (extra_members) {
        json_t *extra = json_loads(extra_members, 0, NULL);
        if (json_is_object(extra))
            json_object_update(o, extra);
        json_decref(extra);
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}
