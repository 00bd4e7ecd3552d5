/* `callhook app`: create, change, show, list, delete, test, enable and disable Voice Apps on a
 * running serve, and read or rotate their signing secrets (docs/API.md, "Voice Apps"). */
#include "cli/cli.h"

#include "cli/client.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RETRIES                20
#define DEFAULT_CONNECT_TIMEOUT_MS 5000

void cmd_app_help(void)
{
    fputs("usage: callhook app put ID [FILE|-]            create or replace a Voice App\n"
          "       callhook app put ID --begin-url URL [--end-url URL] [settings flags]\n"
          "       callhook app set ID [settings flags] [--unset NAME] [--remove-header NAME]\n"
          "                                                change some settings, keep the rest\n"
          "       callhook app get ID                      show its settings\n"
          "       callhook app list                        all Voice Apps, one a line\n"
          "       callhook app rm ID                       delete it\n"
          "       callhook app test ID [--event begin|end] send a signed sample record now\n"
          "       callhook app secret ID                   show its signing secret(s)\n"
          "       callhook app rotate-secret ID [--grace-s N]  new secret; the old one keeps\n"
          "                                                signing for N s (default 86400)\n"
          "       callhook app enable ID | disable ID      start or stop deliveries\n"
          "\n"
          "Manages the Voice Apps of a running 'callhook serve': where each event is delivered,\n"
          "with which headers, timeouts and retry schedule. 'put' takes the settings as JSON\n"
          "(docs/API.md lists the keys) from FILE or standard input ('-'), or builds them from\n"
          "flags. put replaces every setting: what you leave out gets its default. 'set' changes\n"
          "only what its flags name (a JSON merge patch) and is checked as put is: a change that\n"
          "does not check changes nothing. get, list need a read or admin key; the rest an admin\n"
          "key.\n"
          "\n"
          "'test' sends one signed sample record (CallhookTest: true, a fresh call id, header\n"
          "X-Callhook-Test: 1) to the app's URL for the event (default: begin-call, or end-call\n"
          "when only that URL is set), now, as a delivery goes: same headers, TLS files, address\n"
          "checks and signature. It prints the receiver's status, headers and the start of its\n"
          "answer, and exits 0 only for a 2xx. Nothing is stored: it is no message and is not\n"
          "retried. Works on a disabled app too.\n"
          "\n",
          stdout);
    puts("settings flags (put and set):\n"
         "  --begin-url URL        where begin-call events go (BeginCallEventProcessingUrl)\n"
         "  --end-url URL          where end-call events go (EndCallEventProcessingUrl)\n"
         "  --header 'Name: value' an extra header on every delivery; repeat for more\n"
         "  --retry 5,300,1800     seconds to wait before each retry (retryScheduleSeconds)\n"
         "  --timeout-ms N         a delivery attempt's whole time limit (default 15000)\n"
         "  --connect-timeout-ms N its connect time limit (default 5000, or --timeout-ms\n"
         "                         when that is less)\n"
         "  --max-in-flight N      attempts under way at once for this app (default 64)\n"
         "  --rate-limit N         at most N attempts start per second (rateLimitPerSecond;\n"
         "                         0: none)\n"
         "  --ordering per-call|none  per-call: an end-call waits for its begin-call\n"
         "  --disabled             store it disabled (nothing is delivered); --enabled\n"
         "  --allow-http           allow http:// URLs (allowInsecureHttp)\n"
         "  --allow-private        allow private and loopback addresses (allowPrivateNetwork)\n"
         "  --ca-file FILE         trust this CA for the app's HTTPS (tls.caFile)\n"
         "  --client-cert FILE     a client certificate to present (tls.clientCertFile), with\n"
         "  --client-key FILE      its key (tls.clientKeyFile); absolute paths on serve's\n"
         "                         machine\n"
         "set only:\n"
         "  --unset NAME           back to its default: a flag's name without '--' (begin-url,\n"
         "                         end-url, header, retry, ..., ca-file, client-cert,\n"
         "                         client-key) or tls for all three; repeat for more\n"
         "  --remove-header NAME   drop one extra header; repeat for more\n"
         "\n"
         "connection:\n" CLI_CLIENT_OPTIONS_HELP "\n"
         "\n"
         "examples:\n"
         "  export CALLHOOK_KEY=...   # an admin key of serve\n"
         "  callhook app put support --begin-url https://crm.example.com/hooks/begin \\\n"
         "      --end-url https://crm.example.com/hooks/end --header 'X-Tenant: 42'\n"
         "  callhook app put support settings.json\n"
         "  callhook app set support --timeout-ms 5000 --unset retry\n"
         "  callhook app test support --event end\n"
         "  callhook app secret support      # give this to the receiver to verify with");
}

enum {
    OPT_BEGIN_URL = CLI_OPT_FIRST_FREE,
    OPT_END_URL,
    OPT_HEADER,
    OPT_RETRY,
    OPT_TIMEOUT,
    OPT_CONNECT_TIMEOUT,
    OPT_MAX_IN_FLIGHT,
    OPT_ORDERING,
    OPT_DISABLED,
    OPT_ALLOW_HTTP,
    OPT_ALLOW_PRIVATE,
    OPT_GRACE,
    OPT_RATE_LIMIT,
    OPT_ENABLED,
    OPT_CA_FILE,
    OPT_CLIENT_CERT,
    OPT_CLIENT_KEY,
    OPT_UNSET,
    OPT_REMOVE_HEADER,
    OPT_EVENT,
};

/* The settings flags' names and the JSON keys they set ("tls." for a member of tls). */
static const struct {
    const char *flag, *key;
} setting_keys[] = {
    {"begin-url", "BeginCallEventProcessingUrl"},
    {"end-url", "EndCallEventProcessingUrl"},
    {"header", "headers"},
    {"retry", "retryScheduleSeconds"},
    {"timeout-ms", "timeoutMs"},
    {"connect-timeout-ms", "connectTimeoutMs"},
    {"max-in-flight", "maxInFlight"},
    {"rate-limit", "rateLimitPerSecond"},
    {"ordering", "ordering"},
    {"disabled", "enabled"},
    {"enabled", "enabled"},
    {"allow-http", "allowInsecureHttp"},
    {"allow-private", "allowPrivateNetwork"},
    {"tls", "tls"},
    {"ca-file", "tls.caFile"},
    {"client-cert", "tls.clientCertFile"},
    {"client-key", "tls.clientKeyFile"},
};

/* What the command line asked for, beyond the connection options. */
struct app_args {
    json_t *settings; /* owned: the PUT body (or PATCH, for set) built from flags */
    bool have_settings;
    bool have_unset;   /* --unset or --remove-header: set only */
    long long grace_s; /* -1: not given */
    const char *event; /* test --event, full name; NULL: not given */
};

/* Sets key (a name of setting_keys, "tls.x" inside tls) to v (taken) in the settings. */
static bool set_key(json_t *s, const char *key, json_t *v)
{
    if (strncmp(key, "tls.", 4) != 0)
        return json_object_set_new(s, key, v) == 0;
    json_t *tls = json_object_get(s, "tls");
    if (!json_is_object(tls)) {
        tls = json_object();
        json_object_set_new(s, "tls", tls);
    }
    return json_object_set_new(tls, key + 4, v) == 0;
}

static bool parse_header(json_t *headers, const char *text)
{
    const char *colon = strchr(text, ':');
    size_t name_len = colon ? (size_t)(colon - text) : 0;
    if (colon == NULL || name_len == 0 || name_len > 127) {
        fprintf(stderr, "callhook app: --header wants 'Name: value', not '%s'\n", text);
        return false;
    }
    for (size_t i = 0; i < name_len; i++) {
        if (!isgraph((unsigned char)text[i])) {
            fprintf(stderr,
                    "callhook app: the header name in '%s' has a space or control "
                    "character\n",
                    text);
            return false;
        }
    }
    char name[128];
    memcpy(name, text, name_len);
    name[name_len] = '\0';
    const char *value = colon + 1;
    while (*value == ' ' || *value == '\t')
        value++;
    return json_object_set_new(headers, name, json_string(value)) == 0;
}

static bool parse_retry(json_t *settings, const char *text)
{
    json_t *list = json_array();
    const char *p = text;
    for (int n = 0; list != NULL; n++) {
        char *end = NULL;
        long long v = strtoll(p, &end, 10);
        if (end == p || v <= 0 || v > 10L * 365 * 86400 || n == MAX_RETRIES ||
            (*end != ',' && *end != '\0')) {
            fprintf(stderr,
                    "callhook app: --retry wants up to %d positive whole seconds separated by "
                    "commas, e.g. 5,300,1800; not '%s'\n",
                    MAX_RETRIES, text);
            json_decref(list);
            return false;
        }
        json_array_append_new(list, json_integer(v));
        if (*end == '\0')
            break;
        p = end + 1;
    }
    return list != NULL && json_object_set_new(settings, "retryScheduleSeconds", list) == 0;
}

static bool set_positive(json_t *settings, const char *key, const char *option, const char *text)
{
    long long v;
    if (!cli_parse_ll(option, text, &v))
        return false;
    if (v <= 0) {
        fprintf(stderr, "callhook app: %s must be positive\n", option);
        return false;
    }
    return json_object_set_new(settings, key, json_integer(v)) == 0;
}

/* Handles one settings flag or --grace-s. Returns false (message printed) on a bad value. */
static bool app_option(struct app_args *a, int c, const char *arg)
{
    json_t *s = a->settings;
    if (c == OPT_UNSET || c == OPT_REMOVE_HEADER)
        a->have_unset = true;
    else if (c != OPT_GRACE && c != OPT_EVENT)
        a->have_settings = true;
    switch (c) {
    case OPT_BEGIN_URL:
        return json_object_set_new(s, "BeginCallEventProcessingUrl", json_string(arg)) == 0;
    case OPT_END_URL:
        return json_object_set_new(s, "EndCallEventProcessingUrl", json_string(arg)) == 0;
    case OPT_HEADER: {
        json_t *h = json_object_get(s, "headers");
        if (!json_is_object(h)) {
            h = json_object();
            json_object_set_new(s, "headers", h);
        }
        return parse_header(h, arg);
    }
    case OPT_RETRY:
        return parse_retry(s, arg);
    case OPT_TIMEOUT:
        return set_positive(s, "timeoutMs", "--timeout-ms", arg);
    case OPT_CONNECT_TIMEOUT:
        return set_positive(s, "connectTimeoutMs", "--connect-timeout-ms", arg);
    case OPT_MAX_IN_FLIGHT:
        return set_positive(s, "maxInFlight", "--max-in-flight", arg);
    case OPT_ORDERING:
        if (strcmp(arg, "per-call") != 0 && strcmp(arg, "none") != 0) {
            fprintf(stderr, "callhook app: --ordering is per-call or none, not '%s'\n", arg);
            return false;
        }
        return json_object_set_new(s, "ordering", json_string(arg)) == 0;
    case OPT_DISABLED:
        return json_object_set_new(s, "enabled", json_false()) == 0;
    case OPT_ENABLED:
        return json_object_set_new(s, "enabled", json_true()) == 0;
    case OPT_RATE_LIMIT: {
        long long v;
        if (!cli_parse_ll("--rate-limit", arg, &v))
            return false;
        if (v < 0) {
            fprintf(stderr, "callhook app: --rate-limit must not be negative (0: none)\n");
            return false;
        }
        return json_object_set_new(s, "rateLimitPerSecond", json_integer(v)) == 0;
    }
    case OPT_CA_FILE:
        return set_key(s, "tls.caFile", json_string(arg));
    case OPT_CLIENT_CERT:
        return set_key(s, "tls.clientCertFile", json_string(arg));
    case OPT_CLIENT_KEY:
        return set_key(s, "tls.clientKeyFile", json_string(arg));
    case OPT_UNSET:
        for (size_t i = 0; i < sizeof setting_keys / sizeof setting_keys[0]; i++) {
            if (strcmp(arg, setting_keys[i].flag) == 0)
                return set_key(s, setting_keys[i].key, json_null());
        }
        fprintf(stderr,
                "callhook app: --unset takes a settings flag's name without '--' (begin-url, "
                "end-url, header, retry, timeout-ms, connect-timeout-ms, max-in-flight, "
                "rate-limit, ordering, enabled, allow-http, allow-private, tls, ca-file, "
                "client-cert, client-key), not '%s'\n",
                arg);
        return false;
    case OPT_REMOVE_HEADER: {
        json_t *h = json_object_get(s, "headers");
        if (h == NULL) {
            h = json_object();
            json_object_set_new(s, "headers", h);
        }
        /* After --unset header every header goes anyway. */
        return !json_is_object(h) || json_object_set_new(h, arg, json_null()) == 0;
    }
    case OPT_EVENT:
        if ((a->event = cli_event_name(arg)) == NULL) {
            fprintf(stderr,
                    "callhook app: --event is begin or end (or begin-call, end-call), not '%s'\n",
                    arg);
            return false;
        }
        return true;
    case OPT_ALLOW_HTTP:
        return json_object_set_new(s, "allowInsecureHttp", json_true()) == 0;
    case OPT_ALLOW_PRIVATE:
        return json_object_set_new(s, "allowPrivateNetwork", json_true()) == 0;
    case OPT_GRACE:
        if (!cli_parse_ll("--grace-s", arg, &a->grace_s))
            return false;
        if (a->grace_s < 0) {
            fprintf(stderr, "callhook app: --grace-s must not be negative\n");
            return false;
        }
        return true;
    default:
        return false;
    }
}

static const struct cli_label app_labels[] = {
    {"id", "id"},
    {"enabled", "enabled"},
    {"disabledReason", "disabled reason"},
    {"BeginCallEventProcessingUrl", "begin-call URL"},
    {"EndCallEventProcessingUrl", "end-call URL"},
    {"headers", "headers"},
    {"connectTimeoutMs", "connect timeout"},
    {"timeoutMs", "timeout"},
    {"retryScheduleSeconds", "retry schedule (s)"},
    {"maxInFlight", "max in flight"},
    {"ordering", "ordering"},
    {"allowInsecureHttp", "allow http"},
    {"allowPrivateNetwork", "allow private network"},
    {"rateLimitPerSecond", "rate limit (/s)"},
    {"tls", "tls"},
    {"createdAt", "created"},
    {"updatedAt", "updated"},
};

/* "/v1/voice-apps/ID" + suffix into path; prints why when the id is too long. */
static bool app_path(char *path, size_t cap, const char *id, const char *suffix)
{
    char escaped[3 * 128 + 1];
    if (*id == '\0' || !cli_escape(id, escaped, sizeof escaped)) {
        fprintf(stderr, "callhook app: a Voice App id has 1 to 128 characters of "
                        "A-Z a-z 0-9 . _ -\n");
        return false;
    }
    snprintf(path, cap, "/v1/voice-apps/%s%s", escaped, suffix);
    return true;
}

/* Prints the raw body for --json (nothing for an empty one). */
static void print_raw(const struct cli_response *r)
{
    if (r->body.len > 0)
        printf("%s\n", r->body.data);
}

static int app_put(struct cli_client *c, const struct cli_client_options *o, struct app_args *a,
                   const char *id, const char *file)
{
    char path[512];
    if (!app_path(path, sizeof path, id, ""))
        return CLI_USAGE;
    char *body = NULL;
    size_t len = 0;
    if (file != NULL) {
        if (!cli_read_input(file, CLI_MAX_INPUT_BYTES, &body, &len))
            return CLI_FAIL;
    } else {
        /* serve refuses a connect limit above the whole limit, and the connect default is
         * 5000: a shorter --timeout-ms alone brings the connect limit down with it. */
        json_t *t = json_object_get(a->settings, "timeoutMs");
        if (t && !json_object_get(a->settings, "connectTimeoutMs") &&
            json_integer_value(t) < DEFAULT_CONNECT_TIMEOUT_MS)
            json_object_set_new(a->settings, "connectTimeoutMs",
                                json_integer(json_integer_value(t)));
        body = json_dumps(a->settings, JSON_COMPACT);
        if (body == NULL) {
            fprintf(stderr, "callhook app: out of memory\n");
            return CLI_FAIL;
        }
        len = strlen(body);
    }
    struct cli_response r;
    cli_response_init(&r);
    json_t *app = NULL;
    int rc = cli_api(c, "app put", "PUT", path, body, len, NULL, &r, &app);
    if (rc == CLI_OK && o->json)
        print_raw(&r);
    else if (rc == CLI_OK) {
        printf("%s voice app '%s'\n", r.status == 201 ? "created" : "updated", id);
        cli_print_object(app, app_labels, sizeof app_labels / sizeof app_labels[0], NULL, stdout);
    }
    json_decref(app);
    cli_response_release(&r);
    free(body);
    return rc;
}

static int app_get(struct cli_client *c, const struct cli_client_options *o, const char *id)
{
    char path[512];
    if (!app_path(path, sizeof path, id, ""))
        return CLI_USAGE;
    struct cli_response r;
    cli_response_init(&r);
    json_t *app = NULL;
    int rc = cli_api(c, "app get", "GET", path, NULL, 0, NULL, &r, &app);
    if (rc == CLI_OK && o->json)
        print_raw(&r);
    else if (rc == CLI_OK)
        cli_print_object(app, app_labels, sizeof app_labels / sizeof app_labels[0], NULL, stdout);
    json_decref(app);
    cli_response_release(&r);
    return rc;
}

static int app_list(struct cli_client *c, const struct cli_client_options *o)
{
    struct cli_response r;
    cli_response_init(&r);
    json_t *list = NULL;
    int rc = cli_api(c, "app list", "GET", "/v1/voice-apps", NULL, 0, NULL, &r, &list);
    if (rc == CLI_OK && o->json)
        print_raw(&r);
    else if (rc == CLI_OK) {
        static const char *const headers[] = {"ID",           "ENABLED", "BEGIN-CALL URL",
                                              "END-CALL URL", "RETRIES", "CREATED"};
        struct cli_table t;
        cli_table_init(&t, 6, headers);
        size_t i;
        json_t *app;
        json_t *data = json_object_get(list, "data");
        json_array_foreach(data, i, app)
        {
            char enabled[160], retries[32], created[40];
            const char *reason = json_string_value(json_object_get(app, "disabledReason"));
            bool on = json_is_true(json_object_get(app, "enabled"));
            if (on)
                snprintf(enabled, sizeof enabled, "yes");
            else
                snprintf(enabled, sizeof enabled, "no%s%s%s", reason ? " (" : "",
                         reason ? reason : "", reason ? ")" : "");
            snprintf(retries, sizeof retries, "%zu",
                     json_array_size(json_object_get(app, "retryScheduleSeconds")));
            const char *row[] = {
                json_string_value(json_object_get(app, "id")),
                enabled,
                json_string_value(json_object_get(app, "BeginCallEventProcessingUrl")),
                json_string_value(json_object_get(app, "EndCallEventProcessingUrl")),
                retries,
                cli_format_time((long long)json_integer_value(json_object_get(app, "createdAt")),
                                created, sizeof created),
            };
            if (!cli_table_add(&t, row)) {
                fprintf(stderr, "callhook app list: out of memory\n");
                rc = CLI_FAIL;
                break;
            }
        }
        if (rc == CLI_OK) {
            if (json_array_size(data) == 0)
                printf("no voice apps yet: 'callhook app put ID --begin-url URL' makes one\n");
            else
                cli_table_flush(&t, stdout);
        }
        cli_table_release(&t);
    }
    json_decref(list);
    cli_response_release(&r);
    return rc;
}

static int app_rm(struct cli_client *c, const struct cli_client_options *o, const char *id)
{
    char path[512];
    if (!app_path(path, sizeof path, id, ""))
        return CLI_USAGE;
    int rc = cli_api(c, "app rm", "DELETE", path, NULL, 0, NULL, NULL, NULL);
    if (rc == CLI_OK && !o->json)
        printf("deleted voice app '%s'\n", id);
    return rc;
}

static void print_secret(const json_t *s)
{
    char when[40];
    printf("secret    %s\n", json_string_value(json_object_get(s, "secret")));
    const char *prev = json_string_value(json_object_get(s, "previous"));
    if (prev != NULL)
        printf(
            "previous  %s (also signs until %s)\n", prev,
            cli_format_time((long long)json_integer_value(json_object_get(s, "previousExpiresAt")),
                            when, sizeof when));
}

static int app_secret(struct cli_client *c, const struct cli_client_options *o, const char *id,
                      bool rotate, long long grace_s)
{
    char path[512], body[64];
    if (!app_path(path, sizeof path, id, rotate ? "/secret/rotate" : "/secret"))
        return CLI_USAGE;
    const char *b = NULL;
    if (rotate && grace_s >= 0) {
        snprintf(body, sizeof body, "{\"graceSeconds\":%lld}", grace_s);
        b = body;
    }
    struct cli_response r;
    cli_response_init(&r);
    json_t *s = NULL;
    int rc = cli_api(c, rotate ? "app rotate-secret" : "app secret", rotate ? "POST" : "GET", path,
                     b, b ? strlen(b) : 0, NULL, &r, &s);
    if (rc == CLI_OK && o->json)
        print_raw(&r);
    else if (rc == CLI_OK)
        print_secret(s);
    json_decref(s);
    cli_response_release(&r);
    return rc;
}

/* PATCH with what the flags name: a JSON merge patch (null puts a setting back to its
 * default). */
static int app_set(struct cli_client *c, const struct cli_client_options *o, struct app_args *a,
                   const char *id)
{
    char path[512];
    if (!app_path(path, sizeof path, id, ""))
        return CLI_USAGE;
    char *body = json_dumps(a->settings, JSON_COMPACT);
    if (body == NULL) {
        fprintf(stderr, "callhook app: out of memory\n");
        return CLI_FAIL;
    }
    struct cli_response r;
    cli_response_init(&r);
    json_t *app = NULL;
    int rc = cli_api(c, "app set", "PATCH", path, body, strlen(body), NULL, &r, &app);
    if (rc == CLI_OK && o->json)
        print_raw(&r);
    else if (rc == CLI_OK) {
        printf("updated voice app '%s'\n", id);
        cli_print_object(app, app_labels, sizeof app_labels / sizeof app_labels[0], NULL, stdout);
    }
    json_decref(app);
    cli_response_release(&r);
    free(body);
    return rc;
}

/* POST .../test and what the receiver answered; CLI_OK only for a 2xx. */
static int app_test(struct cli_client *c, const struct cli_client_options *o, const char *id,
                    const char *event)
{
    char path[512], suffix[48];
    snprintf(suffix, sizeof suffix, "/test%s%s", event ? "?event=" : "", event ? event : "");
    if (!app_path(path, sizeof path, id, suffix))
        return CLI_USAGE;
    struct cli_response r;
    cli_response_init(&r);
    json_t *t = NULL;
    int rc = cli_api(c, "app test", "POST", path, NULL, 0, NULL, &r, &t);
    long status = (long)json_integer_value(json_object_get(t, "httpStatus"));
    const char *error = json_string_value(json_object_get(t, "error"));
    if (rc == CLI_OK && o->json)
        print_raw(&r);
    else if (rc == CLI_OK) {
        printf("test send of voice app '%s' (%s) to %s\n", id,
               json_string_value(json_object_get(t, "event")),
               json_string_value(json_object_get(t, "url")));
        printf("webhook-id %s, marked X-Callhook-Test: 1; not stored as a message\n",
               json_string_value(json_object_get(t, "webhookId")));
        if (status > 0)
            printf("HTTP %ld in %lld ms\n", status,
                   (long long)json_integer_value(json_object_get(t, "durationMs")));
        else
            printf("no answer: %s (%s)\n", error ? error : "?",
                   json_string_value(json_object_get(t, "errorClass")));
        size_t i;
        json_t *h;
        json_array_foreach(json_object_get(t, "headers"), i, h)
        {
            printf("%s\n", json_string_value(h));
        }
        const char *resp = json_string_value(json_object_get(t, "response"));
        if (resp && *resp)
            printf("\n%s\n", resp);
        else if (status > 0 && json_is_null(json_object_get(t, "response")))
            printf("\n(the answer's body is not UTF-8 text)\n");
    }
    if (rc == CLI_OK && (status < 200 || status > 299)) {
        if (!o->json)
            fprintf(stderr, "callhook app test: the receiver did not accept it: %s\n",
                    error ? error : "no 2xx");
        rc = CLI_FAIL;
    }
    json_decref(t);
    cli_response_release(&r);
    return rc;
}

/* GET (to say whether it already was), then PATCH "enabled". */
static int app_enable(struct cli_client *c, const struct cli_client_options *o, const char *id,
                      bool enable)
{
    const char *cmd = enable ? "app enable" : "app disable";
    char path[512];
    if (!app_path(path, sizeof path, id, ""))
        return CLI_USAGE;
    json_t *app = NULL;
    int rc = cli_api(c, cmd, "GET", path, NULL, 0, NULL, NULL, &app);
    if (rc != CLI_OK)
        return rc;
    bool was = json_is_true(json_object_get(app, "enabled"));
    json_decref(app);
    const char *body = enable ? "{\"enabled\":true}" : "{\"enabled\":false}";
    struct cli_response r;
    cli_response_init(&r);
    rc = cli_api(c, cmd, "PATCH", path, body, strlen(body), NULL, &r, NULL);
    if (rc == CLI_OK && o->json)
        print_raw(&r);
    else if (rc == CLI_OK)
        printf("voice app '%s' %s%s\n", id, enable ? "enabled" : "disabled",
               was == enable ? " (it already was)" : "");
    cli_response_release(&r);
    return rc;
}

/* Checks the arguments before anything is sent: a usage error needs no key nor server. */
static int check_args(const char *sub, const struct app_args *a, int nargs, char **args)
{
    bool put = strcmp(sub, "put") == 0, set = strcmp(sub, "set") == 0;
    bool takes_id = strcmp(sub, "list") != 0;
    int max_args = put ? 2 : takes_id ? 1 : 0;
    if (takes_id && nargs < 1)
        return cli_usage_error("app", "%s needs a Voice App ID", sub);
    if (nargs > max_args)
        return cli_usage_error("app", "unexpected argument '%s'", args[max_args]);
    if (a->have_settings && !put && !set)
        return cli_usage_error("app", "settings flags go with 'app put' and 'app set' only");
    if (a->have_unset && !set)
        return cli_usage_error("app", "--unset and --remove-header go with 'app set' only");
    if (set && !a->have_settings && !a->have_unset)
        return cli_usage_error("app", "set needs something to change: settings flags such as "
                                      "--end-url URL, or --unset NAME");
    if (a->event && strcmp(sub, "test") != 0)
        return cli_usage_error("app", "--event goes with 'app test' only");
    if (a->grace_s >= 0 && strcmp(sub, "rotate-secret") != 0)
        return cli_usage_error("app", "--grace-s goes with 'app rotate-secret' only");
    if (put && nargs > 1 && a->have_settings)
        return cli_usage_error("app", "give a settings FILE or settings flags, not both");
    if (put && nargs < 2 && !a->have_settings)
        return cli_usage_error("app", "put needs settings: a JSON FILE ('-' for standard input) "
                                      "or flags such as --begin-url URL");
    return CLI_OK;
}

static int run(const char *sub, struct cli_client *c, const struct cli_client_options *o,
               struct app_args *a, int nargs, char **args)
{
    const char *id = nargs > 0 ? args[0] : NULL;
    if (strcmp(sub, "put") == 0)
        return app_put(c, o, a, id, nargs > 1 ? args[1] : NULL);
    if (strcmp(sub, "set") == 0)
        return app_set(c, o, a, id);
    if (strcmp(sub, "test") == 0)
        return app_test(c, o, id, a->event);
    if (strcmp(sub, "get") == 0)
        return app_get(c, o, id);
    if (strcmp(sub, "list") == 0)
        return app_list(c, o);
    if (strcmp(sub, "rm") == 0)
        return app_rm(c, o, id);
    if (strcmp(sub, "secret") == 0)
        return app_secret(c, o, id, false, -1);
    if (strcmp(sub, "rotate-secret") == 0)
        return app_secret(c, o, id, true, a->grace_s);
    return app_enable(c, o, id, strcmp(sub, "enable") == 0);
}

int cmd_app(int argc, char **argv)
{
    static const struct option options[] = {
        CLI_CLIENT_OPTIONS,
        {"begin-url", required_argument, NULL, OPT_BEGIN_URL},
        {"end-url", required_argument, NULL, OPT_END_URL},
        {"header", required_argument, NULL, OPT_HEADER},
        {"retry", required_argument, NULL, OPT_RETRY},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"connect-timeout-ms", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"max-in-flight", required_argument, NULL, OPT_MAX_IN_FLIGHT},
        {"ordering", required_argument, NULL, OPT_ORDERING},
        {"disabled", no_argument, NULL, OPT_DISABLED},
        {"allow-http", no_argument, NULL, OPT_ALLOW_HTTP},
        {"allow-private", no_argument, NULL, OPT_ALLOW_PRIVATE},
        {"grace-s", required_argument, NULL, OPT_GRACE},
        {"rate-limit", required_argument, NULL, OPT_RATE_LIMIT},
        {"enabled", no_argument, NULL, OPT_ENABLED},
        {"ca-file", required_argument, NULL, OPT_CA_FILE},
        {"client-cert", required_argument, NULL, OPT_CLIENT_CERT},
        {"client-key", required_argument, NULL, OPT_CLIENT_KEY},
        {"unset", required_argument, NULL, OPT_UNSET},
        {"remove-header", required_argument, NULL, OPT_REMOVE_HEADER},
        {"event", required_argument, NULL, OPT_EVENT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *const subs[] = {"put",  "set",    "get",           "list",   "rm",
                                       "test", "secret", "rotate-secret", "enable", "disable"};
    if (argc < 2)
        return cli_usage_error("app", "which one: put, set, get, list, rm, test, secret, "
                                      "rotate-secret, enable or disable?");
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        cmd_app_help();
        return CLI_OK;
    }
    bool known = false;
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        known = known || strcmp(sub, subs[i]) == 0;
    if (!known)
        return cli_usage_error("app", "unknown subcommand '%s'", sub);

    struct cli_client_options o;
    cli_client_options_init(&o);
    struct app_args a = {.settings = json_object(), .grace_s = -1};
    int rc = CLI_USAGE, c;
    if (a.settings == NULL) {
        fprintf(stderr, "callhook app: out of memory\n");
        return CLI_FAIL;
    }
    argc--;
    argv++;
    optind = 1;
    char typed[32];
    snprintf(typed, sizeof typed, "app %s", sub);
    while ((c = cli_getopt(typed, argc, argv, "h", options, NULL)) != -1) {
        int shared = cli_client_option(&o, c, optarg);
        if (shared < 0)
            goto done;
        if (shared > 0)
            continue;
        if (c == 'h') {
            cmd_app_help();
            rc = CLI_OK;
            goto done;
        }
        if (c == '?' || !app_option(&a, c, optarg))
            goto done;
    }
    struct cli_client *client = NULL;
    if ((rc = check_args(sub, &a, argc - optind, argv + optind)) == CLI_OK &&
        (rc = cli_client_open("app", &o, &client)) == CLI_OK)
        rc = run(sub, client, &o, &a, argc - optind, argv + optind);
    cli_client_free(client);
done:
    json_decref(a.settings);
    return rc;
}
