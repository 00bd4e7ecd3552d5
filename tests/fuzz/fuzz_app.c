/*
 * libFuzzer target for a Voice App's settings, the body of PUT /v1/voice-apps/{id}:
 * app_config_parse() must answer CH_OK or CH_EINVAL with a message, and what it accepts must
 * hold the limits of app.h, pass the URL rules, and come back the same through
 * app_config_to_json() (what GET returns may be PUT back as it is).
 */
#include "fuzz.h"

#include "deliver/app.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* A string field ends inside its array. */
#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

static bool reserved(const char *name)
{
    static const char *const names[] = {"content-type",      "content-length", "host",
                                        "user-agent",        "webhook-id",     "webhook-timestamp",
                                        "webhook-signature", "x-call-event",   "transfer-encoding",
                                        "connection",        "expect"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(name, names[i]) == 0)
            return true;
    }
    return false;
}

static void check_url(const char *url, bool allow_http)
{
    if (url[0] == '\0')
        return;
    bool https = strncasecmp(url, "https://", 8) == 0;
    bool http = strncasecmp(url, "http://", 7) == 0;
    FUZZ_CHECK(https || (http && allow_http));
    const char *host = url + (https ? 8 : 7);
    size_t host_len = strcspn(host, "/?#");
    FUZZ_CHECK(host_len > 0);
    FUZZ_CHECK(memchr(host, '@', host_len) == NULL);
    FUZZ_CHECK(strchr(url, '#') == NULL);
    for (const char *p = url; *p; p++)
        FUZZ_CHECK((unsigned char)*p > ' ' && *p != 0x7f);
}

/* What an accepted configuration always holds. */
static void check_config(const struct app_config *c)
{
    FUZZ_CHECK(TERMINATED(c->begin_url) && TERMINATED(c->end_url));
    FUZZ_CHECK(TERMINATED(c->tls_ca_file) && TERMINATED(c->tls_client_cert_file) &&
               TERMINATED(c->tls_client_key_file));
    check_url(c->begin_url, c->allow_insecure_http);
    check_url(c->end_url, c->allow_insecure_http);
    FUZZ_CHECK(c->nheaders >= 0 && c->nheaders <= APP_MAX_HEADERS);
    for (int i = 0; i < c->nheaders; i++) {
        const struct app_header *h = &c->headers[i];
        FUZZ_CHECK(TERMINATED(h->name) && TERMINATED(h->value));
        FUZZ_CHECK(h->name[0] != '\0' && !reserved(h->name));
        FUZZ_CHECK(strpbrk(h->value, "\r\n") == NULL);
        for (const char *p = h->name; *p; p++)
            FUZZ_CHECK((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                       (*p >= '0' && *p <= '9') || *p == '-' || *p == '_');
    }
    FUZZ_CHECK(c->nretry >= 0 && c->nretry <= APP_MAX_RETRIES);
    for (int i = 0; i < c->nretry; i++)
        FUZZ_CHECK(c->retry_s[i] >= 1 && c->retry_s[i] <= 7 * 86400);
    FUZZ_CHECK(c->connect_timeout_ms >= 100 && c->connect_timeout_ms <= c->timeout_ms);
    FUZZ_CHECK(c->timeout_ms <= 120000);
    FUZZ_CHECK(c->max_in_flight >= 1 && c->max_in_flight <= 10000);
    FUZZ_CHECK(c->rate_limit_per_s >= 0 && c->rate_limit_per_s <= 1000000);
    const char *tls[] = {c->tls_ca_file, c->tls_client_cert_file, c->tls_client_key_file};
    for (int i = 0; i < 3; i++)
        FUZZ_CHECK(tls[i][0] == '\0' || tls[i][0] == '/');
    FUZZ_CHECK(!c->tls_client_cert_file[0] == !c->tls_client_key_file[0]);
}

static void same_config(const struct app_config *a, const struct app_config *b)
{
    FUZZ_CHECK(strcmp(a->begin_url, b->begin_url) == 0);
    FUZZ_CHECK(strcmp(a->end_url, b->end_url) == 0);
    FUZZ_CHECK(a->nheaders == b->nheaders);
    for (int i = 0; i < a->nheaders; i++) {
        FUZZ_CHECK(strcmp(a->headers[i].name, b->headers[i].name) == 0);
        FUZZ_CHECK(strcmp(a->headers[i].value, b->headers[i].value) == 0);
    }
    FUZZ_CHECK(a->connect_timeout_ms == b->connect_timeout_ms);
    FUZZ_CHECK(a->timeout_ms == b->timeout_ms);
    FUZZ_CHECK(a->nretry == b->nretry);
    for (int i = 0; i < a->nretry; i++)
        FUZZ_CHECK(a->retry_s[i] == b->retry_s[i]);
    FUZZ_CHECK(a->max_in_flight == b->max_in_flight);
    FUZZ_CHECK(a->rate_limit_per_s == b->rate_limit_per_s);
    FUZZ_CHECK(a->ordering_per_call == b->ordering_per_call);
    FUZZ_CHECK(a->enabled == b->enabled);
    FUZZ_CHECK(a->allow_insecure_http == b->allow_insecure_http);
    FUZZ_CHECK(a->allow_private_network == b->allow_private_network);
    FUZZ_CHECK(strcmp(a->tls_ca_file, b->tls_ca_file) == 0);
    FUZZ_CHECK(strcmp(a->tls_client_cert_file, b->tls_client_cert_file) == 0);
    FUZZ_CHECK(strcmp(a->tls_client_key_file, b->tls_client_key_file) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The configurations are large (about 24 KiB each): keep them off the stack. */
    static struct app_config parsed, again;
    struct ch_error err = {0};
    ch_code rc = app_config_parse(&parsed, (const char *)data, size, &err);
    if (rc != CH_OK) {
        FUZZ_CHECK(rc == CH_EINVAL);
        FUZZ_CHECK(err.code == rc && err.message[0] != '\0');
        return 0;
    }
    check_config(&parsed);

    char *json = app_config_to_json(&parsed, "fuzz-app", NULL);
    FUZZ_CHECK(json != NULL);
    struct ch_error err2 = {0};
    rc = app_config_parse(&again, json, strlen(json), &err2);
    if (rc != CH_OK)
        fprintf(stderr, "round trip refused: %s\n%s\n", err2.message, json);
    FUZZ_CHECK(rc == CH_OK);
    same_config(&parsed, &again);
    free(json);
    return 0;
}
