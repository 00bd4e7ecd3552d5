/*
 * libFuzzer target for what `callhook receive` does with a request's headers and body after the
 * HTTP front has them: ch_verify_request() (webhook-* headers, or svix-* when absent), then
 * ch_record_parse() and route_sinks(). The input is a header block, "Name: value" lines, then an
 * empty line and the body. When the block has no signature header, the target signs the
 * request itself, so the fuzzer gets past verification to the record and the routing.
 */
#include "fuzz.h"

#include "receive/receiver.h"

#include <callhook/record.h>
#include <callhook/signature.h>

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#define MAX_HEADERS 32
#define NOW         1795770843LL
#define TOLERANCE_S 300

struct header {
    char *name, *value; /* copied, NUL-terminated */
};

struct request {
    struct header h[MAX_HEADERS + 1]; /* one more for the signature the target adds */
    int n;
    char signature[2 * CH_SIGNATURE_ENTRY_MAX];
};

/* Set up on the first input: a fuzz target has no other place to keep it. */
static struct {
    bool ready;
    struct ch_secret key;
    struct ch_verifier verifier;
    struct receive_config cfg;
} fx;

static long long fixed_clock(void *ctx)
{
    (void)ctx;
    return NOW;
}

static void setup(void)
{
    FUZZ_CHECK(ch_secret_parse(&fx.key, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", NULL) == CH_OK);
    fx.verifier = (struct ch_verifier){
        .keys = &fx.key, .nkeys = 1, .tolerance_s = TOLERANCE_S, .clock = fixed_clock};
    config_init(&receive_config_table, &fx.cfg);
    static const char *const routes[] = {"end-call/MissedCall,VoiceMail=exec:./missed.sh",
                                         "begin-call=jsonl:/tmp/begin.jsonl",
                                         "*/3=exec:./answered.sh"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        FUZZ_CHECK(route_parse(&fx.cfg.routes[fx.cfg.nroutes++], routes[i], NULL) == CH_OK);
    fx.ready = true;
}

/* The first header of that name in any letter case, as libmicrohttpd looks one up. */
static const char *lookup(void *ctx, const char *name)
{
    const struct request *r = ctx;
    for (int i = 0; i < r->n; i++) {
        if (strcasecmp(r->h[i].name, name) == 0)
            return r->h[i].value;
    }
    return NULL;
}

static char *copy(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Splits the input into headers (a line without a colon is skipped, as a server would refuse
 * it) and returns where the body starts. Names and values never hold a NUL, as in HTTP. */
static size_t read_headers(struct request *r, const uint8_t *data, size_t size)
{
    size_t at = 0;
    while (at < size) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t next = nl ? end + 1 : size;
        size_t len = end - at;
        if (len > 0 && data[at + len - 1] == '\r')
            len--;
        if (len == 0)
            return next; /* the empty line: the body follows */
        const uint8_t *line = data + at;
        const uint8_t *colon = memchr(line, ':', len);
        if (colon != NULL && memchr(line, '\0', len) == NULL && r->n < MAX_HEADERS) {
            size_t name_len = (size_t)(colon - line);
            size_t v = name_len + 1;
            while (v < len && (line[v] == ' ' || line[v] == '\t'))
                v++;
            r->h[r->n].name = copy(line, name_len);
            r->h[r->n].value = copy(line + v, len - v);
            r->n++;
        }
        at = next;
    }
    return size;
}

static const char *either(struct request *r, const char *name, const char *alt)
{
    const char *v = lookup(r, name);
    return v ? v : lookup(r, alt);
}

/* Adds a genuine signature over the id, timestamp and body given, when none was sent. */
static void sign_if_unsigned(struct request *r, const uint8_t *body, size_t len)
{
    if (either(r, "webhook-signature", "svix-signature") != NULL)
        return;
    const char *id = either(r, "webhook-id", "svix-id");
    const char *ts = either(r, "webhook-timestamp", "svix-timestamp");
    if (id == NULL || ts == NULL)
        return;
    char *end;
    long long t = strtoll(ts, &end, 10);
    if (*end != '\0' || t < 0 ||
        ch_sign(&fx.key, 1, id, t, body, len, r->signature, sizeof r->signature, NULL) != CH_OK)
        return;
    r->h[r->n].name = copy((const uint8_t *)"webhook-signature", 17);
    r->h[r->n].value = copy((const uint8_t *)r->signature, strlen(r->signature));
    r->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fx.ready)
        setup();
    struct request r = {.n = 0};
    size_t at = read_headers(&r, data, size);
    const uint8_t *body = data + at;
    size_t len = size - at;
    sign_if_unsigned(&r, body, len);

    /* The webhook-* spelling wins over svix-*, header by header. */
    struct ch_error err = {0};
    ch_code rc = ch_verify_request(&fx.verifier, lookup, &r, body, len, &err);
    ch_code want = ch_verify(&fx.verifier, either(&r, "webhook-id", "svix-id"),
                             either(&r, "webhook-timestamp", "svix-timestamp"),
                             either(&r, "webhook-signature", "svix-signature"), body, len, NULL);
    FUZZ_CHECK(rc == want);
    FUZZ_CHECK(rc == CH_OK || (err.code == rc && err.message[0] != '\0'));

    if (rc == CH_OK) {
        struct ch_record rec;
        if (ch_record_parse(&rec, body, len, fx.cfg.max_body_bytes, &err) == CH_OK) {
            /* What a handler gets is JSON: never a NUL byte (jsonl handlers write it as a line). */
            FUZZ_CHECK(memchr(body, '\0', len) == NULL);
            const char *key = ch_record_dedupe_key(&rec);
            FUZZ_CHECK(key == NULL || strlen(key) <= CH_RECORD_ID_MAX);
            const char *event = lookup(&r, "X-Call-Event");
            if (event != NULL && strcmp(event, "begin-call") != 0 && strcmp(event, "end-call") != 0)
                event = NULL;
            const char *names[RECEIVE_MAX_SINKS];
            size_t nsinks = route_sinks(&fx.cfg, event ? event : "end-call", rec.call_type_kind,
                                        rec.call_type, names, RECEIVE_MAX_SINKS);
            FUZZ_CHECK(nsinks <= RECEIVE_MAX_SINKS);
            for (size_t k = 0; k < nsinks; k++)
                FUZZ_CHECK(memchr(names[k], '\0', RECEIVE_HANDLER_MAX) != NULL);
        }
    }

    for (int i = 0; i < r.n; i++) {
        free(r.h[i].name);
        free(r.h[i].value);
    }
    return 0;
}
