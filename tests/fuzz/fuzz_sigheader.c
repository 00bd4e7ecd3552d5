/*
 * libFuzzer target for the webhook-signature header: ch_signature_next() against an independent
 * reading of the format, and ch_verify() against the order of checks signature.h documents.
 * The input is the header; with one line break it is "timestamp\nheader", with two
 * "id\ntimestamp\nheader", so the fuzzer reaches the id and timestamp checks too.
 */
#include "fuzz.h"

#include <callhook/signature.h>

#include <stdbool.h>
#include <string.h>

/* Filler for the out-parameters, so a missing NUL or a stray write shows. */
#define FILL 0x5a

/* The delivery every input is checked against, and the fixed clock it is checked at. */
#define MSG_ID         "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define TIMESTAMP_TEXT "1795770843"
#define TIMESTAMP      1795770843LL
#define NOW            (TIMESTAMP + 100)
#define TOLERANCE_S    300
static const char body[] =
    "{\"ActiveCallId\":\"291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10\",\"CallType\":1}";
#define BODY_LEN (sizeof body - 1)

/* Two HMAC secrets (a rotation) and an Ed25519 pair: the verifier holds only the public half;
 * the secret half is here to tell a genuine signature from a forged one. Test keys only. */
#define NKEYS 3
static const char *const signer_texts[NKEYS] = {
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_3hO0oCspIUuHhjYOr3RQapcGLDvjHoEV/Km+ZCBQKK8=",
    "whsk_hMdK0ItRf0WCio1WqoBi3ACuR+nD9zoABZ5551Bfxbdr02aaKjxo4/mgBzGig1xGfR0SvFaCfYzCaehOjLgnEA==",
};
static const char *const verifier_texts[NKEYS] = {
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_3hO0oCspIUuHhjYOr3RQapcGLDvjHoEV/Km+ZCBQKK8=",
    "whpk_a9Nmmio8aOP5oAcxooNcRn0dErxWgn2MwmnoToy4JxA=",
};

/* Set up on the first input: a fuzz target has no other place to keep it. */
static struct {
    bool ready;
    struct ch_secret signers[NKEYS];
    struct ch_secret keys[NKEYS];
    struct ch_verifier verifier;
} fx;

static long long fixed_clock(void *ctx)
{
    (void)ctx;
    return NOW;
}

/*
 * The next space-separated token that holds a comma, from p, with its length in *len; NULL at
 * the end. A second reading of the header format, written apart from ch_signature_next().
 */
static const char *next_token(const char *p, size_t *len)
{
    for (;;) {
        p += strspn(p, " ");
        if (*p == '\0')
            return NULL;
        size_t n = strcspn(p, " ");
        if (memchr(p, ',', n) != NULL) {
            *len = n;
            return p;
        }
        p += n;
    }
}

/* Whether the token tok (len bytes) is one of the space-separated entries of list. */
static bool in_list(const char *tok, size_t len, const char *list)
{
    size_t n;
    for (const char *e = next_token(list, &n); e != NULL; e = next_token(e + n, &n)) {
        if (n == len && memcmp(e, tok, len) == 0)
            return true;
    }
    return false;
}

static void setup(void)
{
    for (size_t i = 0; i < NKEYS; i++) {
        FUZZ_CHECK(ch_secret_parse(&fx.signers[i], signer_texts[i], NULL) == CH_OK);
        FUZZ_CHECK(ch_secret_parse(&fx.keys[i], verifier_texts[i], NULL) == CH_OK);
    }
    fx.verifier = (struct ch_verifier){
        .keys = fx.keys, .nkeys = NKEYS, .tolerance_s = TOLERANCE_S, .clock = fixed_clock};

    /* Each genuine entry passes alone, so a v1a match through the public key is reachable and
     * the oracle below is not vacuous. */
    char header[NKEYS * CH_SIGNATURE_ENTRY_MAX], one[CH_SIGNATURE_ENTRY_MAX];
    FUZZ_CHECK(ch_sign(fx.signers, NKEYS, MSG_ID, TIMESTAMP, body, BODY_LEN, header, sizeof header,
                       NULL) == CH_OK);
    size_t n;
    for (const char *e = next_token(header, &n); e != NULL; e = next_token(e + n, &n)) {
        FUZZ_CHECK(n < sizeof one);
        memcpy(one, e, n);
        one[n] = '\0';
        FUZZ_CHECK(ch_verify(&fx.verifier, MSG_ID, TIMESTAMP_TEXT, one, body, BODY_LEN, NULL) ==
                   CH_OK);
    }
    fx.ready = true;
}

/* ch_signature_next() yields exactly the comma-holding tokens, split at their first comma. */
static void check_entries(const char *header)
{
    size_t header_len = strlen(header);
    const char *cursor = header, *ref = header;
    struct ch_signature_entry e;
    size_t count = 0, n;
    while (ch_signature_next(&cursor, &e)) {
        const char *tok = next_token(ref, &n);
        FUZZ_CHECK(tok != NULL);
        count++;
        FUZZ_CHECK(count <= header_len);
        FUZZ_CHECK(e.version == tok);
        FUZZ_CHECK(e.version_len == (size_t)((const char *)memchr(tok, ',', n) - tok));
        FUZZ_CHECK(e.value == e.version + e.version_len + 1);
        FUZZ_CHECK(e.value + e.value_len == tok + n);
        FUZZ_CHECK(cursor >= e.value + e.value_len && cursor <= header + header_len);
        ref = tok + n;
    }
    FUZZ_CHECK(next_token(ref, &n) == NULL);
    FUZZ_CHECK(cursor <= header + header_len);
    FUZZ_CHECK(!ch_signature_next(&cursor, &e));
}

/* A canonical decimal: digits only, no sign, no leading zero. */
static bool canonical(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && strspn(s, "0123456789") == n && (n == 1 || s[0] != '0');
}

/*
 * Whether one of the first CH_SIGNATURE_MAX_ENTRIES entries of header is a genuine signature of
 * the body for id and timestamp t: what an accepted header must hold, since nothing else can be
 * forged by a fuzzer.
 */
static bool has_genuine_entry(const char *id, long long t, const char *header)
{
    char genuine[NKEYS * CH_SIGNATURE_ENTRY_MAX];
    FUZZ_CHECK(ch_sign(fx.signers, NKEYS, id, t, body, BODY_LEN, genuine, sizeof genuine, NULL) ==
               CH_OK);
    size_t n;
    const char *e = next_token(header, &n);
    for (int i = 0; i < CH_SIGNATURE_MAX_ENTRIES && e != NULL; i++, e = next_token(e + n, &n)) {
        if (in_list(e, n, genuine))
            return true;
    }
    return false;
}

/* The answer must follow from the checks signature.h lists for ch_verify(), in their order. */
static void check_outcome(ch_code rc, const char *id, const char *ts, const char *header)
{
    if (*id == '\0' || *ts == '\0' || *header == '\0') {
        FUZZ_CHECK(rc == CH_ENOHEADER);
        return;
    }
    if (strlen(id) > CH_MESSAGE_ID_MAX) {
        FUZZ_CHECK(rc == CH_EINVAL);
        return;
    }
    if (!canonical(ts)) {
        FUZZ_CHECK(rc == CH_ETIMESTAMP);
        return;
    }
    /* Past 18 digits a timestamp may be refused as such or as being too far ahead. */
    if (strlen(ts) > 18) {
        FUZZ_CHECK(rc == CH_ETIMESTAMP || rc == CH_ETOONEW);
        return;
    }
    long long t = 0;
    for (const char *p = ts; *p; p++)
        t = t * 10 + (*p - '0');
    if (t < NOW - TOLERANCE_S) {
        FUZZ_CHECK(rc == CH_ETOOOLD);
        return;
    }
    if (t > NOW + TOLERANCE_S) {
        FUZZ_CHECK(rc == CH_ETOONEW);
        return;
    }
    FUZZ_CHECK(rc == CH_OK || rc == CH_ENOMATCH || rc == CH_ENOMEM);
    if (rc == CH_OK) {
        FUZZ_CHECK(strlen(header) <= CH_SIGNATURE_HEADER_MAX);
        FUZZ_CHECK(has_genuine_entry(id, t, header));
    }
    if (strlen(header) > CH_SIGNATURE_HEADER_MAX)
        FUZZ_CHECK(rc == CH_ENOMATCH);
}

static void check_verify(const char *id, const char *ts, const char *header)
{
    struct ch_error err, untouched;
    memset(&err, FILL, sizeof err);
    memcpy(&untouched, &err, sizeof err);
    ch_code rc = ch_verify(&fx.verifier, id, ts, header, body, BODY_LEN, &err);
    if (rc == CH_OK) {
        FUZZ_CHECK(memcmp(&err, &untouched, sizeof err) == 0);
    } else {
        FUZZ_CHECK(err.code == rc);
        size_t len = strnlen(err.message, sizeof err.message);
        FUZZ_CHECK(len > 0 && len < sizeof err.message);
    }
    check_outcome(rc, id, ts, header);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fx.ready)
        setup();
    /* Headers are C strings: an embedded NUL ends one, as it would for the caller. */
    char *copy = malloc(size + 1);
    if (copy == NULL)
        return 0;
    if (size > 0)
        memcpy(copy, data, size);
    copy[size] = '\0';

    check_entries(copy);
    check_verify(MSG_ID, TIMESTAMP_TEXT, copy);

    char *first_break = memchr(copy, '\n', size);
    if (first_break != NULL) {
        *first_break = '\0';
        char *rest = first_break + 1;
        char *second_break = memchr(rest, '\n', size - (size_t)(rest - copy));
        const char *id = MSG_ID, *ts = copy, *header = rest;
        if (second_break != NULL) {
            *second_break = '\0';
            id = copy;
            ts = rest;
            header = second_break + 1;
        }
        check_entries(header);
        check_verify(id, ts, header);
    }
    free(copy);
    return 0;
}
