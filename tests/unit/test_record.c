/* The call record: every sample payload, tolerance of what the platform may send, and a clear
 * error for everything that is not a call record. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <callhook/record.h>

static ch_code parse(struct ch_record *rec, const char *text, struct ch_error *err)
{
    return ch_record_parse(rec, text, strlen(text), 0, err);
}

/* What each sample payload must give. */
static const struct expected {
    const char *file;
    const char *active_call_id;
    const char *correlation_id;
    enum ch_call_type_kind kind;
    long long call_type;
    const char *call_type_name;
} expected_payloads[] = {
    {"begin-call.json", "291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10",
     "6b8a9c1d-2e3f-4a5b-8c7d-0e1f2a3b4c5d", CH_CALL_TYPE_KNOWN, 4, "ActiveCall"},
    {"begin-call-camelcase.json", "c4d5e6f7-0819-4a2b-8c3d-4e5f60718293",
     "d5e6f708-192a-4b3c-9d4e-5f6071829304", CH_CALL_TYPE_KNOWN, 3, "InitialAnsweredCall"},
    {"begin-call-outbound-minimal.json", "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
     "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f9a0", CH_CALL_TYPE_KNOWN, 8, "OutboundCall"},
    {"end-call-answered.json", "291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10",
     "6b8a9c1d-2e3f-4a5b-8c7d-0e1f2a3b4c5d", CH_CALL_TYPE_KNOWN, 1, "AnsweredCall"},
    {"end-call-missed.json", "7c2d4e6f-8a0b-4c1d-9e2f-3a4b5c6d7e8f",
     "1a2b3c4d-5e6f-4071-8293-a4b5c6d7e8f9", CH_CALL_TYPE_KNOWN, 2, "MissedCall"},
    {"end-call-voicemail.json", "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a",
     "1a2b3c4d-5e6f-4071-8293-a4b5c6d7e8f9", CH_CALL_TYPE_KNOWN, 5, "VoiceMail"},
    {"end-call-transferred.json", "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7",
     "6b8a9c1d-2e3f-4a5b-8c7d-0e1f2a3b4c5d", CH_CALL_TYPE_KNOWN, 6, "CallTransfered"},
    {"end-call-future-fields.json", "f0e1d2c3-b4a5-4968-8776-655443322110",
     "6b8a9c1d-2e3f-4a5b-8c7d-0e1f2a3b4c5d", CH_CALL_TYPE_UNKNOWN, 42, "unknown (42)"},
};
#define NEXPECTED (sizeof expected_payloads / sizeof expected_payloads[0])

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *data = malloc(1 << 20);
    *len = data ? fread(data, 1, 1 << 20, f) : 0;
    fclose(f);
    return data;
}

/* Every *.json file in the folder parses; the known ones give exactly the expected values,
 * and every known one is there. The folder comes from CALLHOOK_PAYLOADS_DIR. */
static void test_every_sample_payload(void **state)
{
    (void)state;
    const char *dir = getenv("CALLHOOK_PAYLOADS_DIR");
    if (dir == NULL)
        dir = CALLHOOK_PAYLOADS_DIR;
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t parsed = 0, matched = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) != NULL) {
        size_t n = strlen(ent->d_name);
        if (n < 6 || strcmp(ent->d_name + n - 5, ".json") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        size_t len = 0;
        char *body = read_file(path, &len);
        assert_non_null(body);
        struct ch_record rec;
        struct ch_error err = {0};
        ch_code rc = ch_record_parse(&rec, body, len, 256 * 1024, &err);
        if (rc != CH_OK)
            fail_msg("%s: %s", ent->d_name, err.message);
        assert_ptr_equal(rec.body, body);
        assert_int_equal(rec.body_len, len);
        assert_non_null(ch_record_dedupe_key(&rec));
        parsed++;
        for (size_t i = 0; i < NEXPECTED; i++) {
            const struct expected *e = &expected_payloads[i];
            if (strcmp(e->file, ent->d_name) != 0)
                continue;
            char name[CH_CALL_TYPE_NAME_MAX];
            assert_true(rec.has_active_call_id);
            assert_true(rec.has_correlation_id);
            assert_string_equal(rec.active_call_id, e->active_call_id);
            assert_string_equal(rec.correlation_id, e->correlation_id);
            assert_string_equal(ch_record_dedupe_key(&rec), e->active_call_id);
            assert_int_equal(rec.call_type_kind, e->kind);
            assert_int_equal(rec.call_type, e->call_type);
            assert_string_equal(
                ch_call_type_name(rec.call_type_kind, rec.call_type, name, sizeof name),
                e->call_type_name);
            matched++;
        }
        free(body);
    }
    closedir(d);
    assert_int_equal(matched, NEXPECTED);
    assert_true(parsed >= NEXPECTED);
}

static void test_id_key_casing(void **state)
{
    (void)state;
    struct ch_record rec;
    assert_int_equal(parse(&rec, "{\"ACTIVECALLID\":\"a\",\"correlationid\":\"c\"}", NULL), CH_OK);
    assert_string_equal(rec.active_call_id, "a");
    assert_string_equal(rec.correlation_id, "c");

    /* The documented spelling wins whatever the order. */
    assert_int_equal(parse(&rec, "{\"activecallid\":\"x\",\"ActiveCallId\":\"a\"}", NULL), CH_OK);
    assert_string_equal(rec.active_call_id, "a");
    assert_int_equal(parse(&rec, "{\"ActiveCallId\":\"a\",\"activeCallId\":\"b\"}", NULL), CH_OK);
    assert_string_equal(rec.active_call_id, "a");
    assert_int_equal(parse(&rec, "{\"ACTIVECALLID\":\"x\",\"activeCallId\":\"b\"}", NULL), CH_OK);
    assert_string_equal(rec.active_call_id, "b");

    /* Only the top level counts. */
    assert_int_equal(parse(&rec, "{\"Call\":{\"ActiveCallId\":\"n\"}}", NULL), CH_OK);
    assert_false(rec.has_active_call_id);
    assert_null(ch_record_dedupe_key(&rec));
}

static void test_id_values(void **state)
{
    (void)state;
    struct ch_record rec;
    assert_int_equal(parse(&rec, "{\"ActiveCallId\":12345,\"CorrelationId\":\"c\"}", NULL), CH_OK);
    assert_string_equal(rec.active_call_id, "12345");
    assert_string_equal(ch_record_dedupe_key(&rec), "12345");

    static const char *const absent[] = {
        "{\"ActiveCallId\":null,\"CorrelationId\":\"c\"}",
        "{\"ActiveCallId\":\"\",\"CorrelationId\":\"c\"}",
        "{\"ActiveCallId\":{},\"CorrelationId\":\"c\"}",
        "{\"ActiveCallId\":[1],\"CorrelationId\":\"c\"}",
        "{\"ActiveCallId\":true,\"CorrelationId\":\"c\"}",
        "{\"ActiveCallId\":1.5,\"CorrelationId\":\"c\"}",
        "{\"CorrelationId\":\"c\"}",
    };
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        assert_int_equal(parse(&rec, absent[i], NULL), CH_OK);
        assert_false(rec.has_active_call_id);
        assert_string_equal(ch_record_dedupe_key(&rec), "c");
    }
    assert_int_equal(parse(&rec, "{}", NULL), CH_OK);
    assert_null(ch_record_dedupe_key(&rec));

    /* An integer id that a double cannot hold exactly is refused, not dropped: falling back to
     * the CorrelationId would merge different calls. */
    struct ch_error err = {0};
    assert_int_equal(
        parse(&rec, "{\"ActiveCallId\":123456789012345678901234567890,\"CorrelationId\":\"c\"}",
              &err),
        CH_EINVAL);
    assert_non_null(strstr(err.message, "as a string"));
    assert_int_equal(parse(&rec, "{\"ActiveCallId\":9007199254740991}", NULL), CH_OK);
    assert_string_equal(rec.active_call_id, "9007199254740991");

    /* Non-ASCII ids are kept byte for byte. */
    assert_int_equal(parse(&rec, "{\"ActiveCallId\":\"z\\u00f6\xc3\xa9\"}", NULL), CH_OK);
    assert_string_equal(rec.active_call_id, "z\xc3\xb6\xc3\xa9");
}

static void test_id_length_cap(void **state)
{
    (void)state;
    char text[600];
    char id[CH_RECORD_ID_MAX + 2];
    memset(id, 'x', sizeof id - 1);
    id[CH_RECORD_ID_MAX] = '\0'; /* exactly the maximum */
    snprintf(text, sizeof text, "{\"ActiveCallId\":\"%s\"}", id);
    struct ch_record rec;
    assert_int_equal(parse(&rec, text, NULL), CH_OK);
    assert_int_equal(strlen(rec.active_call_id), CH_RECORD_ID_MAX);

    id[CH_RECORD_ID_MAX] = 'x';
    id[CH_RECORD_ID_MAX + 1] = '\0'; /* one over */
    snprintf(text, sizeof text, "{\"CorrelationId\":\"%s\"}", id);
    struct ch_error err = {0};
    assert_int_equal(parse(&rec, text, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "CorrelationId"));
}

static void test_call_type_values(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        enum ch_call_type_kind kind;
        long long value;
        const char *name;
    } cases[] = {
        {"{\"CallType\":0}", CH_CALL_TYPE_KNOWN, 0, "GenericCall"},
        {"{\"CallType\":7}", CH_CALL_TYPE_KNOWN, 7, "CallAnsweredManually"},
        {"{\"callType\":8}", CH_CALL_TYPE_KNOWN, 8, "OutboundCall"},
        {"{\"CallType\":9}", CH_CALL_TYPE_UNKNOWN, 9, "unknown (9)"},
        {"{\"CallType\":-1}", CH_CALL_TYPE_UNKNOWN, -1, "unknown (-1)"},
        {"{\"CallType\":42}", CH_CALL_TYPE_UNKNOWN, 42, "unknown (42)"},
        {"{\"CallType\":null}", CH_CALL_TYPE_ABSENT, 0, "absent"},
        {"{\"CallType\":\"4\"}", CH_CALL_TYPE_ABSENT, 0, "absent"},
        {"{\"CallType\":4.5}", CH_CALL_TYPE_ABSENT, 0, "absent"},
        {"{\"CallType\":1e300}", CH_CALL_TYPE_ABSENT, 0, "absent"},
        {"{\"CallType\":[4]}", CH_CALL_TYPE_ABSENT, 0, "absent"},
        {"{}", CH_CALL_TYPE_ABSENT, 0, "absent"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ch_record rec;
        struct ch_error err = {0};
        if (parse(&rec, cases[i].json, &err) != CH_OK)
            fail_msg("%s: %s", cases[i].json, err.message);
        assert_int_equal(rec.call_type_kind, cases[i].kind);
        if (cases[i].kind != CH_CALL_TYPE_ABSENT)
            assert_int_equal(rec.call_type, cases[i].value);
        char name[CH_CALL_TYPE_NAME_MAX];
        assert_string_equal(ch_call_type_name(rec.call_type_kind, rec.call_type, name, sizeof name),
                            cases[i].name);
    }
    char name[CH_CALL_TYPE_NAME_MAX];
    ch_call_type_name(CH_CALL_TYPE_UNKNOWN, -9223372036854775807LL - 1, name, sizeof name);
    assert_string_equal(name, "unknown (-9223372036854775808)");
}

static void test_call_type_parse(void **state)
{
    (void)state;
    long long v = -5;
    assert_int_equal(ch_call_type_parse("MissedCall", &v, NULL), CH_OK);
    assert_int_equal(v, 2);
    assert_int_equal(ch_call_type_parse("outboundcall", &v, NULL), CH_OK);
    assert_int_equal(v, 8);
    assert_int_equal(ch_call_type_parse("42", &v, NULL), CH_OK);
    assert_int_equal(v, 42);
    assert_int_equal(ch_call_type_parse("-3", &v, NULL), CH_OK);
    assert_int_equal(v, -3);
    struct ch_error err = {0};
    assert_int_equal(ch_call_type_parse("Missed", &v, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "'Missed'"));
    assert_int_equal(ch_call_type_parse("", &v, NULL), CH_EINVAL);
    assert_int_equal(ch_call_type_parse("-", &v, NULL), CH_EINVAL);
    assert_int_equal(ch_call_type_parse("4x", &v, NULL), CH_EINVAL);
    assert_int_equal(ch_call_type_parse("99999999999999999999", &v, NULL), CH_EINVAL);
}

/* What the platform may send and a receiver must take: nulls, nesting, `_` metadata, non-ASCII,
 * numbers too large for an integer in fields nobody reads. */
static void test_tolerant(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "{\"ActiveCallId\":\"a\",\"Agent\":null,\"_rid\":\"x==\",\"_ts\":1795770843}",
        "{\"ActiveCallId\":\"a\",\"Deep\":{\"a\":[{\"b\":[[[{\"c\":null}]]]}]}}",
        ("{\"ActiveCallId\":\"a\",\"Name\":\"Zo\xc3\xab \xe6\x9d\x8e\xe9\x9b\xb7 "
         "\xf0\x9f\x99\x82\"}"),
        "{\"ActiveCallId\":\"a\",\"Big\":123456789012345678901234567890}",
        "{\"ActiveCallId\":\"a\",\"Neg\":-1e300}",
        "  \n{\"ActiveCallId\":\"a\"}\n  ",
        "{\"ActiveCallId\":\"a\",\"\":\"empty key\",\"_\":{}}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct ch_record rec;
        struct ch_error err = {0};
        if (parse(&rec, ok[i], &err) != CH_OK)
            fail_msg("case %zu: %s", i, err.message);
        assert_string_equal(rec.active_call_id, "a");
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        ch_code code;
        const char *in_message;
    } cases[] = {
        {"", CH_EEMPTY, "empty"},
        {" \r\n\t", CH_EEMPTY, "empty"},
        {"[]", CH_ENOTOBJECT, "not an object"},
        {"[{\"ActiveCallId\":\"a\"}]", CH_ENOTOBJECT, "not an object"},
        {"42", CH_ENOTOBJECT, "not an object"},
        {"\"text\"", CH_ENOTOBJECT, "not an object"},
        {"null", CH_ENOTOBJECT, "not an object"},
        {"{", CH_EJSON, "line 1"},
        {"{\n  \"a\": ,\n}", CH_EJSON, "line 2"},
        {"{} trailing", CH_EJSON, "invalid JSON"},
        {"{\"a\":1,\"a\":2}", CH_EJSON, "duplicate"},
        {"{\"a\":\"\xff\"}", CH_EJSON, "invalid JSON"},
        {"{'a':1}", CH_EJSON, "invalid JSON"},
        {"{\"a\":\"\\u0000\"}", CH_EJSON, "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ch_record rec;
        struct ch_error err = {0};
        ch_code rc = parse(&rec, cases[i].text, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: got %s, want %s (%s)", i, ch_code_name(rc),
                     ch_code_name(cases[i].code), err.message);
        assert_int_equal(err.code, cases[i].code);
        if (strstr(err.message, cases[i].in_message) == NULL)
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.message, cases[i].in_message);
    }
}

static void test_size_limit(void **state)
{
    (void)state;
    const char *text = "{\"ActiveCallId\":\"a\"}";
    size_t len = strlen(text);
    struct ch_record rec;
    struct ch_error err = {0};
    assert_int_equal(ch_record_parse(&rec, text, len, len, &err), CH_OK);
    assert_int_equal(ch_record_parse(&rec, text, len, len - 1, &err), CH_ETOOBIG);
    assert_non_null(strstr(err.message, "limit"));
}

/* A body with a NUL byte inside a string is refused, not cut short. */
static void test_embedded_nul(void **state)
{
    (void)state;
    const char text[] = "{\"ActiveCallId\":\"a\0b\"}";
    struct ch_record rec;
    assert_int_not_equal(ch_record_parse(&rec, text, sizeof text - 1, 0, NULL), CH_OK);
}

/* A body with its length, for cases that hold NUL bytes. */
#define BODY(text) text, sizeof text - 1

/* A NUL byte outside a string is refused wherever it is, including right after a number or a
 * literal, where jansson alone would skip it: a handler must never get a body that is not JSON.
 * Inside a string a raw NUL, and the escape \u0000 (as jansson without JSON_ALLOW_NUL), are
 * refused too. */
static void test_nul_outside_strings(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
        const char *in_message;
    } cases[] = {
        /* Where jansson would accept: its message would not say why, ours names the NUL. */
        {BODY("{\"ActiveCallId\":7\0}"), "NUL byte outside a string"},
        {BODY("{\"ActiveCallId\":7\0,\"b\":1}"), "NUL byte outside a string"},
        {BODY("{\"a\":true\0}"), "NUL byte outside a string"},
        {BODY("{\"a\":false\0,\"ActiveCallId\":\"x\"}"), "NUL byte outside a string"},
        {BODY("{\"a\":null\0}"), "NUL byte outside a string"},
        {BODY("{\"a\":[1\0,2]}"), "NUL byte outside a string"},
        {BODY("{\"a\":{\"b\":-1.5e3\0}}"), "NUL byte outside a string"},
        {BODY("{\"ActiveCallId\":\"a\",\"n\":0\0}"), "NUL byte outside a string"},
        /* Everywhere else jansson refuses too. */
        {BODY("\0{\"a\":1}"), "invalid JSON"},
        {BODY("{\"a\":1}\0"), "invalid JSON"},
        {BODY("{\0\"a\":1}"), "invalid JSON"},
        {BODY("{\"a\"\0:1}"), "invalid JSON"},
        {BODY("{\"a\":\0 1}"), "invalid JSON"},
        {BODY("{\"a\":\"x\"\0}"), "invalid JSON"},
        {BODY("{\"a\":1 \0}"), "invalid JSON"},
        {BODY("{\"a\":\"x\0y\"}"), "invalid JSON"},
        {BODY("{\"a\":\"x\\u0000y\"}"), "invalid JSON"},
        {BODY("{\"\\u0000\":1}"), "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ch_record rec;
        struct ch_error err = {0};
        ch_code rc = ch_record_parse(&rec, cases[i].text, cases[i].len, 0, &err);
        if (rc != CH_EJSON)
            fail_msg("case %zu: got %s, want CH_EJSON", i, ch_code_name(rc));
        if (strstr(err.message, cases[i].in_message) == NULL)
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.message, cases[i].in_message);
    }
}

/* The edges of jansson's rules, which the one-pass reading keeps (tests/fuzz/fuzz_jsonscan.c
 * compares the two on every input; these pin the outcome down). */

static void test_jansson_rules(void **state)
{
    (void)state;
    static char deep_ok[2 * 2048 + 1], deep_bad[2 * 2049 + 1];
    memset(deep_ok, '[', 2048);
    memset(deep_ok + 2048, ']', 2048);
    memset(deep_bad, '[', 2049);
    memset(deep_bad + 2049, ']', 2049);
    static const struct {
        const char *text;
        size_t len;
        ch_code code;
        const char *active; /* with CH_OK: the ActiveCallId, "" when absent */
    } cases[] = {
        /* jansson skips one NUL right after a number or a literal; callhook does not (see
         * test_nul_outside_strings). */
        {BODY("{\"ActiveCallId\":7\0,\"b\":true\0}"), CH_EJSON, NULL},
        {BODY("{\"ActiveCallId\":7\0\0}"), CH_EJSON, NULL},
        {BODY("{\"ActiveCallId\":\"a\"\0}"), CH_EJSON, NULL},
        {BODY("{\"a\":{}\0}"), CH_EJSON, NULL},
        /* Keys compare decoded, per object, at every level. */
        {BODY("{\"a\":1,\"\\u0061\":2}"), CH_EJSON, NULL},
        {BODY("{\"x\":{\"a\":1,\"a\":2}}"), CH_EJSON, NULL},
        {BODY("{\"x\":{\"a\":1},\"y\":{\"a\":2},\"a\":3}"), CH_OK, ""},
        {BODY("{\"Active\\u0043allId\":\"\\u00e9\\ud83d\\ude00\"}"), CH_OK,
         "\xc3\xa9\xf0\x9f\x98\x80"},
        /* Among other casings the first wins; PascalCase and camelCase beat them. */
        {BODY("{\"ACTIVECALLID\":\"1\",\"activecallid\":\"2\"}"), CH_OK, "1"},
        {BODY("{\"ACTIVECALLID\":\"1\",\"activeCallId\":\"2\",\"ActiveCallId\":\"3\"}"), CH_OK,
         "3"},
        /* Numbers: every one is a double; past its range refused, underflow is zero. */
        {BODY("{\"ActiveCallId\":1e2,\"n\":1e-400}"), CH_OK, "100"},
        {BODY("{\"ActiveCallId\":-0}"), CH_OK, "0"},
        {BODY("{\"n\":1e309}"), CH_EJSON, NULL},
        {BODY("{\"n\":-1e400}"), CH_EJSON, NULL},
        {BODY("{\"n\":1.7976931348623157e308}"), CH_OK, ""},
        {BODY("{\"ActiveCallId\":9007199254740992}"), CH_EINVAL, NULL},
        {BODY("{\"ActiveCallId\":9007199254740991}"), CH_OK, "9007199254740991"},
        {BODY("{\"ActiveCallId\":1.5}"), CH_OK, ""},
        {BODY("{\"n\":01}"), CH_EJSON, NULL},
        {BODY("{\"n\":1.}"), CH_EJSON, NULL},
        {BODY("{\"n\":-}"), CH_EJSON, NULL},
        {BODY("{\"n\":[1,]}"), CH_EJSON, NULL},
        /* Strings: lone surrogates, bad UTF-8 (overlong, surrogate, past U+10FFFF), raw
         * control characters are refused; DEL is not a control character to JSON. */
        {BODY("{\"a\":\"\\ud800\"}"), CH_EJSON, NULL},
        {BODY("{\"a\":\"\\udc00\"}"), CH_EJSON, NULL},
        {BODY("{\"a\":\"\xc0\x80\"}"), CH_EJSON, NULL},
        {BODY("{\"a\":\"\xed\xa0\x80\"}"), CH_EJSON, NULL},
        {BODY("{\"a\":\"\xf4\x90\x80\x80\"}"), CH_EJSON, NULL},
        {BODY("{\"a\":\"\t\"}"), CH_EJSON, NULL},
        {BODY("{\"ActiveCallId\":\"a\x7f\"}"), CH_OK, "a\x7f"},
        {BODY("{\"a\":truex}"), CH_EJSON, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ch_record rec;
        struct ch_error err = {0};
        ch_code rc = ch_record_parse(&rec, cases[i].text, cases[i].len, 0, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: got %s, want %s (%s)", i, ch_code_name(rc),
                     ch_code_name(cases[i].code), err.message);
        if (rc == CH_OK)
            assert_string_equal(rec.active_call_id, cases[i].active);
    }
    /* Nesting: 2048 levels are accepted, 2049 refused (as an array: not an object). */
    struct ch_record rec;
    assert_int_equal(ch_record_parse(&rec, deep_ok, 2 * 2048, 0, NULL), CH_ENOTOBJECT);
    assert_int_equal(ch_record_parse(&rec, deep_bad, 2 * 2049, 0, NULL), CH_EJSON);
}

/* ---- Keys chosen to collide (hash flooding) ---- */

/* Most members one object may have (docs/SIGNATURES.md). */
#define MEMBERS_CAP 4096

#define FNV_PRIME 16777619u

/* The hash state jsonscan started each key of object number `object` (1 for the top level,
 * then in order of opening) from, before its hash was keyed at random: FNV-1a. */
static uint32_t old_hash_start(uint32_t object)
{
    return 2166136261u ^ (object * 0x9e3779b9u);
}

static bool alnum(unsigned c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* A body under construction: room is reserved up front. */
struct body {
    char *text;
    size_t len, cap;
};

static void body_add(struct body *b, const char *text)
{
    size_t n = strlen(text);
    assert_true(b->len + n < b->cap);
    memcpy(b->text + b->len, text, n + 1);
    b->len += n;
}

/*
 * Appends n members "KEY":0 to b, 7-byte keys that all share the low 16 bits of the old FNV-1a
 * hash in object number `object`, so that under the old hash they all land in one run of slots
 * of any table up to 65536 slots. Each key is 5 unique characters and 2 more chosen to steer the
 * hash: the low 16 bits of FNV-1a depend only on the low 16 bits before each byte. With
 * colliding false, the 7 characters are as many distinct, unsteered keys.
 */
static void add_members(struct body *b, uint32_t object, size_t n, bool colliding)
{
    const uint32_t target = 0x5eed;
    uint32_t inverse = FNV_PRIME; /* FNV_PRIME's inverse modulo 2^32, by Newton's method */
    for (int i = 0; i < 5; i++)
        inverse *= 2 - FNV_PRIME * inverse;
    const uint32_t before_last = (target * inverse) & 0xffff; /* state ^ last byte must be this */
    size_t added = 0;
    for (uint32_t counter = 0; added < n; counter++) {
        assert_true(counter < 0x100000);
        char key[8];
        snprintf(key, sizeof key, "%05x", counter);
        if (!colliding) {
            snprintf(key + 5, 3, "zz");
            char member[16];
            snprintf(member, sizeof member, "%s\"%s\":0", b->text[b->len - 1] != '{' ? "," : "",
                     key);
            body_add(b, member);
            added++;
            continue;
        }
        uint32_t h = old_hash_start(object);
        for (int i = 0; i < 5; i++)
            h = (h ^ (unsigned char)key[i]) * FNV_PRIME;
        for (unsigned c1 = '0'; c1 <= 'z' && added < n; c1++) {
            if (!alnum(c1))
                continue;
            uint32_t h1 = (h ^ c1) * FNV_PRIME;
            unsigned c2 = (h1 ^ before_last) & 0xff;
            if ((h1 & 0xff00) != (before_last & 0xff00) || !alnum(c2))
                continue;
            assert_int_equal(((h1 ^ c2) * FNV_PRIME) & 0xffff, target);
            key[5] = (char)c1;
            key[6] = (char)c2;
            key[7] = '\0';
            char member[16];
            snprintf(member, sizeof member, "%s\"%s\":0", b->text[b->len - 1] != '{' ? "," : "",
                     key);
            body_add(b, member);
            added++;
        }
    }
}

/* A body of nobjects objects of n members each, inside a top-level object: {"o0":{...},...}.
 * Object numbers: the top level is 1, the inner ones 2, 3, ... in order. */
static struct body members_body(size_t nobjects, size_t n, bool colliding)
{
    struct body b = {.cap = nobjects * (n * 12 + 16) + 16};
    b.text = malloc(b.cap);
    assert_non_null(b.text);
    body_add(&b, "{");
    for (size_t o = 0; o < nobjects; o++) {
        char head[32];
        snprintf(head, sizeof head, "%s\"o%zu\":{", o > 0 ? "," : "", o);
        body_add(&b, head);
        add_members(&b, (uint32_t)(2 + o), n, colliding);
        body_add(&b, "}");
    }
    body_add(&b, "}");
    return b;
}

/* Processor time of the fastest of a few parses of b (the fastest is the least disturbed by
 * other work on the machine), and the code they returned. */
static double parse_seconds(const struct body *b, ch_code *rc)
{
    double best = 0;
    for (int run = 0; run < 5; run++) {
        struct timespec t0, t1;
        struct ch_record rec;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
        *rc = ch_record_parse(&rec, b->text, b->len, 0, NULL);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        if (run == 0 || s < best)
            best = s;
    }
    return best;
}

/* How much longer keys chosen to collide take than as many ordinary keys, in the same shape.
 * Linear work gives about 1; the old unkeyed hash gave hundreds. */
static double collision_ratio(size_t nobjects, size_t n, ch_code want)
{
    struct body colliding = members_body(nobjects, n, true);
    struct body distinct = members_body(nobjects, n, false);
    ch_code rc;
    double slow = parse_seconds(&colliding, &rc);
    if (rc != want)
        fail_msg("colliding keys: got %s, want %s", ch_code_name(rc), ch_code_name(want));
    double fast = parse_seconds(&distinct, &rc);
    if (rc != want)
        fail_msg("distinct keys: got %s, want %s", ch_code_name(rc), ch_code_name(want));
    free(colliding.text);
    free(distinct.text);
    double ratio = slow / (fast > 1e-6 ? fast : 1e-6);
    print_message("%zu x %zu keys: colliding %.4f s, distinct %.4f s, ratio %.2f\n", nobjects, n,
                  slow, fast, ratio);
    return ratio;
}

/* 20,000 keys that collided under the old hash, in 5 objects under the cap, are accepted in
 * about the time of 20,000 ordinary keys. */
static void test_colliding_keys_linear(void **state)
{
    (void)state;
    double ratio = collision_ratio(5, 4000, CH_OK);
    if (ratio >= 5)
        fail_msg("20,000 colliding keys took %.1f times as long as distinct ones", ratio);
}

/* 20,000 colliding keys in one object are refused at the cap, as early as ordinary keys. */
static void test_colliding_keys_over_cap(void **state)
{
    (void)state;
    double ratio = collision_ratio(1, 20000, CH_ETOOBIG);
    if (ratio >= 5)
        fail_msg("refusing 20,000 colliding keys took %.1f times as long as distinct ones", ratio);
}

/* The cap: MEMBERS_CAP members are accepted in any object, one more is refused, saying why. */
static void test_members_cap(void **state)
{
    (void)state;
    for (size_t nobjects = 1; nobjects <= 2; nobjects++) {
        struct body ok = members_body(nobjects, MEMBERS_CAP, false);
        struct body over = members_body(nobjects, MEMBERS_CAP + 1, false);
        struct ch_record rec;
        struct ch_error err = {0};
        assert_int_equal(ch_record_parse(&rec, ok.text, ok.len, 0, &err), CH_OK);
        assert_int_equal(ch_record_parse(&rec, over.text, over.len, 0, &err), CH_ETOOBIG);
        assert_non_null(strstr(err.message, "more than 4096 members"));
        free(ok.text);
        free(over.text);
    }
}

/* A repeated key is found however many keys come between, across the point where the table
 * outgrows its first slots and every key is hashed again under a random key. */
static void test_duplicate_among_many(void **state)
{
    (void)state;
    static const size_t between[] = {1, 127, 128, 129, 255, 1000, 4000};
    for (size_t i = 0; i < sizeof between / sizeof between[0]; i++) {
        struct body b = members_body(1, between[i] + 1, false);
        /* Repeat the first key ("00000zz") at the end of the inner object. */
        b.len -= 2;
        body_add(&b, ",\"00000zz\":1}}");
        struct ch_record rec;
        struct ch_error err = {0};
        if (ch_record_parse(&rec, b.text, b.len, 0, &err) != CH_EJSON)
            fail_msg("a key repeated after %zu others was not refused", between[i]);
        free(b.text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_sample_payload),
        cmocka_unit_test(test_id_key_casing),
        cmocka_unit_test(test_id_values),
        cmocka_unit_test(test_id_length_cap),
        cmocka_unit_test(test_call_type_values),
        cmocka_unit_test(test_call_type_parse),
        cmocka_unit_test(test_tolerant),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_jansson_rules),
        cmocka_unit_test(test_nul_outside_strings),
        cmocka_unit_test(test_members_cap),
        cmocka_unit_test(test_duplicate_among_many),
        cmocka_unit_test(test_colliding_keys_linear),
        cmocka_unit_test(test_colliding_keys_over_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
