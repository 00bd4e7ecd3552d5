/* Standard Webhooks signatures: the published vectors byte for byte, and every way a
 * verification must fail. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <callhook/signature.h>

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define ED_SECRET                 \
    "whsk_6Xb/dCcHpPea21PS1N9VY/" \
    "NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
#define MSG_ID  "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define TS      1614265330LL
#define TS_TEXT "1614265330"
#define BODY    "{\"test\": 2432232314}"
#define V1_SIG  "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
#define V1A_SIG \
    "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="

static long long fixed_clock(void *ctx)
{
    return *(const long long *)ctx;
}

/* The test's keys and clock: [0] the HMAC vector secret, [1] the Ed25519 vector key. */
struct fixture {
    struct ch_secret keys[2];
    long long now;
};

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof f);
    if (ch_secret_parse(&f.keys[0], SECRET, NULL) != CH_OK ||
        ch_secret_parse(&f.keys[1], ED_SECRET, NULL) != CH_OK)
        return -1;
    f.now = TS;
    *state = &f;
    return 0;
}

static ch_code verify_with(struct fixture *f, size_t first_key, size_t nkeys, const char *id,
                           const char *ts, const char *sig, const char *body, struct ch_error *err)
{
    struct ch_verifier v = {
        .keys = f->keys + first_key, .nkeys = nkeys, .clock = fixed_clock, .clock_ctx = &f->now};
    return ch_verify(&v, id, ts, sig, body, body ? strlen(body) : 0, err);
}

static void test_v1_vector(void **state)
{
    struct fixture *f = *state;
    char sig[CH_SIGNATURE_ENTRY_MAX];
    assert_int_equal(ch_sign(&f->keys[0], 1, MSG_ID, TS, BODY, strlen(BODY), sig, sizeof sig, NULL),
                     CH_OK);
    assert_string_equal(sig, V1_SIG);
    assert_int_equal(verify_with(f, 0, 1, MSG_ID, TS_TEXT, V1_SIG, BODY, NULL), CH_OK);
}

static void test_v1a_vector(void **state)
{
    struct fixture *f = *state;
    char sig[CH_SIGNATURE_ENTRY_MAX];
    assert_int_equal(ch_sign(&f->keys[1], 1, MSG_ID, TS, BODY, strlen(BODY), sig, sizeof sig, NULL),
                     CH_OK);
    assert_string_equal(sig, V1A_SIG);
    assert_int_equal(verify_with(f, 1, 1, MSG_ID, TS_TEXT, V1A_SIG, BODY, NULL), CH_OK);

    /* A verifier holding only the public key. */
    struct ch_secret pub;
    assert_int_equal(ch_secret_public(&f->keys[1], &pub, NULL), CH_OK);
    struct ch_verifier v = {.keys = &pub, .nkeys = 1, .clock = fixed_clock, .clock_ctx = &f->now};
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1A_SIG, BODY, strlen(BODY), NULL), CH_OK);
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1_SIG, BODY, strlen(BODY), NULL), CH_ENOMATCH);
}

static void test_sign_with_two_keys(void **state)
{
    struct fixture *f = *state;
    char sig[2 * CH_SIGNATURE_ENTRY_MAX];
    assert_int_equal(ch_sign(f->keys, 2, MSG_ID, TS, BODY, strlen(BODY), sig, sizeof sig, NULL),
                     CH_OK);
    assert_string_equal(sig, V1_SIG " " V1A_SIG);
}

/* Each case changes one thing of the valid vector; all must fail with the given code. */
static void test_negative_cases(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *what, *id, *ts, *sig, *body;
        ch_code code;
    } cases[] = {
        {"one changed character", MSG_ID, TS_TEXT,
         "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=", BODY, CH_ENOMATCH},
        {"one changed character, first", MSG_ID, TS_TEXT,
         "v1,h0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY, CH_ENOMATCH},
        {"truncated", MSG_ID, TS_TEXT, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O", BODY,
         CH_ENOMATCH},
        {"no padding", MSG_ID, TS_TEXT, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", BODY,
         CH_ENOMATCH},
        {"empty value", MSG_ID, TS_TEXT, "v1,", BODY, CH_ENOMATCH},
        {"wrong version", MSG_ID, TS_TEXT, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY,
         CH_ENOMATCH},
        {"version with other case", MSG_ID, TS_TEXT,
         "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY, CH_ENOMATCH},
        {"no comma", MSG_ID, TS_TEXT, "v1g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY,
         CH_ENOMATCH},
        {"v1 value under v1a", MSG_ID, TS_TEXT,
         "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY, CH_ENOMATCH},
        {"body changed", MSG_ID, TS_TEXT, V1_SIG, "{\"test\": 2432232315}", CH_ENOMATCH},
        {"body with a space more", MSG_ID, TS_TEXT, V1_SIG, "{\"test\":  2432232314}", CH_ENOMATCH},
        {"empty body", MSG_ID, TS_TEXT, V1_SIG, "", CH_ENOMATCH},
        {"id changed", "msg_p5jXN8AQM9LWM0D4loKWxJeK", TS_TEXT, V1_SIG, BODY, CH_ENOMATCH},
        {"timestamp changed", MSG_ID, "1614265331", V1_SIG, BODY, CH_ENOMATCH},
        {"empty signature", MSG_ID, TS_TEXT, "", BODY, CH_ENOHEADER},
        {"missing signature", MSG_ID, TS_TEXT, NULL, BODY, CH_ENOHEADER},
        {"missing id", NULL, TS_TEXT, V1_SIG, BODY, CH_ENOHEADER},
        {"empty id", "", TS_TEXT, V1_SIG, BODY, CH_ENOHEADER},
        {"missing timestamp", MSG_ID, NULL, V1_SIG, BODY, CH_ENOHEADER},
        {"leading zero", MSG_ID, "01614265330", V1_SIG, BODY, CH_ETIMESTAMP},
        {"plus sign", MSG_ID, "+1614265330", V1_SIG, BODY, CH_ETIMESTAMP},
        {"minus sign", MSG_ID, "-1614265330", V1_SIG, BODY, CH_ETIMESTAMP},
        {"decimal point", MSG_ID, "1614265330.0", V1_SIG, BODY, CH_ETIMESTAMP},
        {"space", MSG_ID, " 1614265330", V1_SIG, BODY, CH_ETIMESTAMP},
        {"letters", MSG_ID, "16142653e0", V1_SIG, BODY, CH_ETIMESTAMP},
        {"milliseconds", MSG_ID, "1614265330000", V1_SIG, BODY, CH_ETOONEW},
        {"overlong", MSG_ID, "1614265330000000000000", V1_SIG, BODY, CH_ETIMESTAMP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ch_error err = {0};
        ch_code rc =
            verify_with(f, 0, 2, cases[i].id, cases[i].ts, cases[i].sig, cases[i].body, &err);
        if (rc != cases[i].code)
            fail_msg("%s: got %s, want %s (%s)", cases[i].what, ch_code_name(rc),
                     ch_code_name(cases[i].code), err.message);
        assert_true(strlen(err.message) > 0);
    }
}

static void test_missing_header_named(void **state)
{
    struct fixture *f = *state;
    struct ch_error err = {0};
    verify_with(f, 0, 1, NULL, TS_TEXT, V1_SIG, BODY, &err);
    assert_non_null(strstr(err.message, "webhook-id"));
    verify_with(f, 0, 1, MSG_ID, NULL, V1_SIG, BODY, &err);
    assert_non_null(strstr(err.message, "webhook-timestamp"));
    verify_with(f, 0, 1, MSG_ID, TS_TEXT, NULL, BODY, &err);
    assert_non_null(strstr(err.message, "webhook-signature"));
}

static void test_decoys_and_versions(void **state)
{
    struct fixture *f = *state;
    static const char *const passing[] = {
        "v1,AAAA v2,abc v1a,Zm9v " V1_SIG,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF= " V1_SIG,
        "garbage   " V1_SIG "   ",
        "v0,x v1b,y , ,, " V1_SIG,
        V1A_SIG " " V1_SIG,
        "v1,bad " V1A_SIG,
    };
    for (size_t i = 0; i < sizeof passing / sizeof passing[0]; i++) {
        struct ch_error err = {0};
        if (verify_with(f, 0, 2, MSG_ID, TS_TEXT, passing[i], BODY, &err) != CH_OK)
            fail_msg("'%s': %s", passing[i], err.message);
    }
    /* An HMAC-only verifier skips v1a entries and an Ed25519-only one skips v1 entries. */
    assert_int_equal(verify_with(f, 0, 1, MSG_ID, TS_TEXT, V1A_SIG, BODY, NULL), CH_ENOMATCH);
    assert_int_equal(verify_with(f, 1, 1, MSG_ID, TS_TEXT, V1_SIG, BODY, NULL), CH_ENOMATCH);
}

/* Only the first CH_SIGNATURE_MAX_ENTRIES entries are looked at, so a header cannot make a
 * verifier compute without bound. */
static void test_entry_cap(void **state)
{
    struct fixture *f = *state;
    char header[CH_SIGNATURE_HEADER_MAX];
    size_t o = 0;
    for (int i = 0; i < CH_SIGNATURE_MAX_ENTRIES; i++)
        o += (size_t)snprintf(header + o, sizeof header - o, "v1,decoy%d ", i);
    snprintf(header + o, sizeof header - o, "%s", V1_SIG);
    assert_int_equal(verify_with(f, 0, 1, MSG_ID, TS_TEXT, header, BODY, NULL), CH_ENOMATCH);
    /* One decoy fewer and the valid entry is reached. */
    char *second = strchr(header, ' ') + 1;
    assert_int_equal(verify_with(f, 0, 1, MSG_ID, TS_TEXT, second, BODY, NULL), CH_OK);

    char huge[CH_SIGNATURE_HEADER_MAX + 64];
    memset(huge, ' ', sizeof huge);
    memcpy(huge + sizeof huge - 1 - strlen(V1_SIG), V1_SIG, strlen(V1_SIG));
    huge[sizeof huge - 1] = '\0';
    assert_int_equal(verify_with(f, 0, 1, MSG_ID, TS_TEXT, huge, BODY, NULL), CH_ENOMATCH);
}

static void test_timestamp_window(void **state)
{
    struct fixture *f = *state;
    static const struct {
        long long offset; /* now - timestamp */
        ch_code code;
    } cases[] = {
        {0, CH_OK},         {299, CH_OK},        {-299, CH_OK},
        {300, CH_OK},       {-300, CH_OK},       {301, CH_ETOOOLD},
        {-301, CH_ETOONEW}, {86400, CH_ETOOOLD}, {-86400, CH_ETOONEW},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        f->now = TS + cases[i].offset;
        struct ch_error err = {0};
        ch_code rc = verify_with(f, 0, 1, MSG_ID, TS_TEXT, V1_SIG, BODY, &err);
        if (rc != cases[i].code)
            fail_msg("offset %lld: got %s (%s)", cases[i].offset, ch_code_name(rc), err.message);
    }
    /* A wider window set by the caller. */
    f->now = TS + 1000;
    struct ch_verifier v = {.keys = f->keys,
                            .nkeys = 1,
                            .tolerance_s = 1000,
                            .clock = fixed_clock,
                            .clock_ctx = &f->now};
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1_SIG, BODY, strlen(BODY), NULL), CH_OK);
    f->now = TS + 1001;
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1_SIG, BODY, strlen(BODY), NULL), CH_ETOOOLD);
    f->now = TS;

    /* Extreme clocks and windows must not overflow (UBSan would stop the test). */
    v.tolerance_s = 9223372036854775807LL;
    f->now = 9223372036854775807LL;
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1_SIG, BODY, strlen(BODY), NULL), CH_OK);
    v.tolerance_s = 0;
    f->now = -9223372036854775807LL - 1;
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1_SIG, BODY, strlen(BODY), NULL), CH_ETOONEW);
    f->now = 9223372036854775807LL;
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1_SIG, BODY, strlen(BODY), NULL), CH_ETOOOLD);
    f->now = TS;
}

/* A rotation: the verifier holds the old and the new secret, either signature passes. */
static void test_rotated_secrets(void **state)
{
    struct fixture *f = *state;
    struct ch_secret keys[2];
    assert_int_equal(ch_secret_generate(&keys[0], CH_KEY_HMAC, 32, NULL), CH_OK);
    keys[1] = f->keys[0];
    struct ch_verifier v = {.keys = keys, .nkeys = 2, .clock = fixed_clock, .clock_ctx = &f->now};
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, V1_SIG, BODY, strlen(BODY), NULL), CH_OK);
    char sig[CH_SIGNATURE_ENTRY_MAX];
    assert_int_equal(ch_sign(&keys[0], 1, MSG_ID, TS, BODY, strlen(BODY), sig, sizeof sig, NULL),
                     CH_OK);
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, sig, BODY, strlen(BODY), NULL), CH_OK);
    v.keys = &keys[1];
    v.nkeys = 1;
    assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, sig, BODY, strlen(BODY), NULL), CH_ENOMATCH);
}

/* The signature covers the raw bytes: NULs and invalid UTF-8 included, every byte counting. */
static void test_binary_body(void **state)
{
    struct fixture *f = *state;
    unsigned char body[300];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)(i * 7);
    body[10] = 0;
    body[11] = 0xff;
    body[12] = 0xc0;
    for (size_t k = 0; k < 2; k++) {
        char sig[CH_SIGNATURE_ENTRY_MAX];
        assert_int_equal(
            ch_sign(&f->keys[k], 1, MSG_ID, TS, body, sizeof body, sig, sizeof sig, NULL), CH_OK);
        struct ch_verifier v = {
            .keys = &f->keys[k], .nkeys = 1, .clock = fixed_clock, .clock_ctx = &f->now};
        assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, sig, body, sizeof body, NULL), CH_OK);
        body[299] ^= 1; /* after the NUL: a strlen-based verifier would not notice */
        assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, sig, body, sizeof body, NULL), CH_ENOMATCH);
        body[299] ^= 1;
        assert_int_equal(ch_verify(&v, MSG_ID, TS_TEXT, sig, body, sizeof body - 1, NULL),
                         CH_ENOMATCH);
    }
}

static void test_sign_refusals(void **state)
{
    struct fixture *f = *state;
    char sig[CH_SIGNATURE_ENTRY_MAX];
    struct ch_error err = {0};
    assert_int_equal(ch_sign(&f->keys[0], 1, "", TS, BODY, 3, sig, sizeof sig, &err), CH_EINVAL);
    assert_int_equal(ch_sign(&f->keys[0], 1, MSG_ID, -1, BODY, 3, sig, sizeof sig, &err),
                     CH_EINVAL);
    assert_int_equal(ch_sign(&f->keys[0], 1, MSG_ID, TS, BODY, 3, sig, 10, &err), CH_EINVAL);
    assert_int_equal(ch_sign(&f->keys[0], 0, MSG_ID, TS, BODY, 3, sig, sizeof sig, &err),
                     CH_EINVAL);
    struct ch_secret pub;
    assert_int_equal(ch_secret_public(&f->keys[1], &pub, NULL), CH_OK);
    assert_int_equal(ch_sign(&pub, 1, MSG_ID, TS, BODY, 3, sig, sizeof sig, &err), CH_EINVAL);
    char long_id[CH_MESSAGE_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_int_equal(ch_sign(&f->keys[0], 1, long_id, TS, BODY, 3, sig, sizeof sig, &err),
                     CH_EINVAL);
}

static void test_header_iteration(void **state)
{
    (void)state;
    const char *header = "  v1,abc nocomma v1a,x,y ,z   v2,  ";
    const char *cursor = header;
    struct ch_signature_entry e;
    const char *want[][2] = {{"v1", "abc"}, {"v1a", "x,y"}, {"", "z"}, {"v2", ""}};
    size_t n = 0;
    while (ch_signature_next(&cursor, &e)) {
        assert_true(n < 4);
        assert_int_equal(e.version_len, strlen(want[n][0]));
        assert_memory_equal(e.version, want[n][0], e.version_len);
        assert_int_equal(e.value_len, strlen(want[n][1]));
        assert_memory_equal(e.value, want[n][1], e.value_len);
        n++;
    }
    assert_int_equal(n, 4);
    assert_int_equal(*cursor, '\0');
    assert_false(ch_signature_next(&cursor, &e));
}

/* Headers as "name: value" strings, looked up by exact name (enough for the table below). */
struct headers {
    const char *id_name, *id, *ts_name, *ts, *sig_name, *sig;
};

static const char *lookup(void *ctx, const char *name)
{
    const struct headers *h = ctx;
    if (strcmp(name, h->id_name) == 0)
        return h->id;
    if (strcmp(name, h->ts_name) == 0)
        return h->ts;
    if (strcmp(name, h->sig_name) == 0)
        return h->sig;
    return NULL;
}

/* ch_verify_request_headers() refuses exactly what no body could make pass, with the code
 * ch_verify_request() gives, and lets through what only the body decides. */
static void test_headers_before_body(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *what, *id, *ts, *sig;
        bool svix, ed25519_only;
        ch_code code; /* of the headers alone */
    } cases[] = {
        {"the vector", MSG_ID, TS_TEXT, V1_SIG, false, false, CH_OK},
        {"svix names", MSG_ID, TS_TEXT, V1_SIG, true, false, CH_OK},
        {"a well-formed wrong v1", MSG_ID, TS_TEXT,
         "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false, false, CH_OK},
        {"no id", NULL, TS_TEXT, V1_SIG, false, false, CH_ENOHEADER},
        {"no timestamp", MSG_ID, NULL, V1_SIG, false, false, CH_ENOHEADER},
        {"no signature", MSG_ID, TS_TEXT, NULL, false, false, CH_ENOHEADER},
        {"empty signature", MSG_ID, TS_TEXT, "", false, false, CH_ENOHEADER},
        {"timestamp not a number", MSG_ID, "12ab", V1_SIG, false, false, CH_ETIMESTAMP},
        {"an hour old", MSG_ID, "1614261730", V1_SIG, false, false, CH_ETOOOLD},
        {"an hour ahead", MSG_ID, "1614268930", V1_SIG, false, false, CH_ETOONEW},
        {"only an unknown version", MSG_ID, TS_TEXT,
         "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", false, false, CH_ENOMATCH},
        {"v1 of the wrong length", MSG_ID, TS_TEXT, "v1,AAAA", false, false, CH_ENOMATCH},
        {"garbage", MSG_ID, TS_TEXT, "garbage", false, false, CH_ENOMATCH},
        {"v1 for an Ed25519-only verifier", MSG_ID, TS_TEXT, V1_SIG, false, true, CH_ENOMATCH},
        {"v1a for an Ed25519-only verifier", MSG_ID, TS_TEXT, V1A_SIG, false, true, CH_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct headers h = {
            cases[i].svix ? "svix-id" : "webhook-id",
            cases[i].id,
            cases[i].svix ? "svix-timestamp" : "webhook-timestamp",
            cases[i].ts,
            cases[i].svix ? "svix-signature" : "webhook-signature",
            cases[i].sig,
        };
        struct ch_verifier v = {.keys = f->keys + (cases[i].ed25519_only ? 1 : 0),
                                .nkeys = 1,
                                .clock = fixed_clock,
                                .clock_ctx = &f->now};
        struct ch_error err = {0}, full_err = {0};
        ch_code rc = ch_verify_request_headers(&v, lookup, &h, &err);
        if (rc != cases[i].code)
            fail_msg("%s: got %s, want %s (%s)", cases[i].what, ch_code_name(rc),
                     ch_code_name(cases[i].code), err.message);
        if (rc != CH_OK) {
            /* The same answer as after the body, message included. */
            ch_code full = ch_verify_request(&v, lookup, &h, BODY, strlen(BODY), &full_err);
            assert_int_equal(full, rc);
            assert_string_equal(full_err.message, err.message);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_vector),
        cmocka_unit_test(test_v1a_vector),
        cmocka_unit_test(test_sign_with_two_keys),
        cmocka_unit_test(test_negative_cases),
        cmocka_unit_test(test_missing_header_named),
        cmocka_unit_test(test_decoys_and_versions),
        cmocka_unit_test(test_entry_cap),
        cmocka_unit_test(test_timestamp_window),
        cmocka_unit_test(test_rotated_secrets),
        cmocka_unit_test(test_binary_body),
        cmocka_unit_test(test_sign_refusals),
        cmocka_unit_test(test_header_iteration),
        cmocka_unit_test(test_headers_before_body),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
