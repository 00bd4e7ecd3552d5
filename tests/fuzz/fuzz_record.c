/*
 * libFuzzer target for ch_record_parse(), which reads the bodies the calling platform posts.
 * Besides not crashing, every result must keep the promises of record.h: what a parsed record
 * holds, which error a body gets, and that a failure always says why.
 */
#include "fuzz.h"

#include <callhook/record.h>

#include <stdbool.h>
#include <string.h>

/* The body limit the target parses with; larger inputs must get CH_ETOOBIG. */
#define MAX_BODY_BYTES (256 * 1024)

/* Filler for the out-parameters, so a missing NUL or a stray write shows. */
#define FILL 0x5a

static bool json_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The first byte that is not JSON white space, or -1 if there is none. */
static int first_significant(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (!json_space(data[i]))
            return data[i];
    }
    return -1;
}

static bool code_documented(ch_code rc)
{
    return rc == CH_OK || rc == CH_ETOOBIG || rc == CH_EEMPTY || rc == CH_EJSON ||
           rc == CH_ENOTOBJECT || rc == CH_EINVAL || rc == CH_ENOMEM;
}

/* A failure names its code and carries a NUL-terminated, non-empty message. */
static void check_error(ch_code rc, const struct ch_error *err)
{
    FUZZ_CHECK(err->code == rc);
    size_t len = strnlen(err->message, sizeof err->message);
    FUZZ_CHECK(len < sizeof err->message);
    FUZZ_CHECK(len > 0);
}

/* An id is NUL-terminated within CH_RECORD_ID_MAX bytes, and "" never counts as present. */
static void check_id(bool has, const char *id)
{
    size_t len = strnlen(id, CH_RECORD_ID_MAX + 1);
    FUZZ_CHECK(len <= CH_RECORD_ID_MAX);
    if (has)
        FUZZ_CHECK(len > 0);
}

static void check_call_type(const struct ch_record *rec)
{
    long long first = CH_CALL_TYPE_GENERIC_CALL, last = CH_CALL_TYPE_OUTBOUND_CALL;
    bool documented = rec->call_type >= first && rec->call_type <= last;
    switch (rec->call_type_kind) {
    case CH_CALL_TYPE_ABSENT:
        break;
    case CH_CALL_TYPE_KNOWN:
        FUZZ_CHECK(documented);
        break;
    case CH_CALL_TYPE_UNKNOWN:
        FUZZ_CHECK(!documented);
        break;
    default:
        fuzz_fail(__FILE__, __LINE__, "call_type_kind is an enum ch_call_type_kind value");
    }

    /* CH_CALL_TYPE_NAME_MAX is documented as always enough: compare with a roomier buffer to
     * catch a name that was cut. */
    char name[CH_CALL_TYPE_NAME_MAX], roomy[4 * CH_CALL_TYPE_NAME_MAX];
    memset(name, FILL, sizeof name);
    FUZZ_CHECK(ch_call_type_name(rec->call_type_kind, rec->call_type, name, sizeof name) == name);
    FUZZ_CHECK(strnlen(name, sizeof name) < sizeof name);
    ch_call_type_name(rec->call_type_kind, rec->call_type, roomy, sizeof roomy);
    FUZZ_CHECK(strcmp(name, roomy) == 0);

    if (rec->call_type_kind == CH_CALL_TYPE_ABSENT) {
        FUZZ_CHECK(strcmp(name, "absent") == 0);
    } else if (rec->call_type_kind == CH_CALL_TYPE_UNKNOWN) {
        FUZZ_CHECK(strncmp(name, "unknown (", 9) == 0);
    } else {
        /* A documented name reads back as its value. */
        long long back = -1;
        FUZZ_CHECK(ch_call_type_parse(name, &back, NULL) == CH_OK);
        FUZZ_CHECK(back == rec->call_type);
    }
}

static void check_record(const struct ch_record *rec, const uint8_t *data, size_t size)
{
    FUZZ_CHECK(rec->body == (const char *)data);
    FUZZ_CHECK(rec->body_len == size);
    check_id(rec->has_active_call_id, rec->active_call_id);
    check_id(rec->has_correlation_id, rec->correlation_id);

    const char *key = ch_record_dedupe_key(rec);
    if (rec->has_active_call_id)
        FUZZ_CHECK(key == rec->active_call_id);
    else if (rec->has_correlation_id)
        FUZZ_CHECK(key == rec->correlation_id);
    else
        FUZZ_CHECK(key == NULL);

    check_call_type(rec);
}

static bool same_record(const struct ch_record *a, const struct ch_record *b)
{
    return a->body == b->body && a->body_len == b->body_len &&
           a->has_active_call_id == b->has_active_call_id &&
           a->has_correlation_id == b->has_correlation_id &&
           strcmp(a->active_call_id, b->active_call_id) == 0 &&
           strcmp(a->correlation_id, b->correlation_id) == 0 &&
           a->call_type_kind == b->call_type_kind && a->call_type == b->call_type;
}

/* Parses with a limit and checks everything record.h says of the outcome. */
static ch_code parse_checked(struct ch_record *rec, const uint8_t *data, size_t size,
                             size_t max_body_bytes)
{
    struct ch_error err, untouched;
    memset(&err, FILL, sizeof err);
    memcpy(&untouched, &err, sizeof err);
    memset(rec, FILL, sizeof *rec);

    ch_code rc = ch_record_parse(rec, data, size, max_body_bytes, &err);
    FUZZ_CHECK(code_documented(rc));
    if (rc != CH_OK) {
        check_error(rc, &err);
        return rc;
    }
    FUZZ_CHECK(memcmp(&err, &untouched, sizeof err) == 0);
    check_record(rec, data, size);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ch_record rec;
    if (size > MAX_BODY_BYTES) {
        FUZZ_CHECK(parse_checked(&rec, data, size, MAX_BODY_BYTES) == CH_ETOOBIG);
        return 0;
    }
    ch_code rc = parse_checked(&rec, data, size, MAX_BODY_BYTES);

    /* Which error a body gets follows from its first significant byte for the cheap cases:
     * white space only is CH_EEMPTY, and valid JSON that starts with '{' is an object. */
    int first = first_significant(data, size);
    FUZZ_CHECK((rc == CH_EEMPTY) == (first < 0));
    if (rc == CH_OK)
        FUZZ_CHECK(first == '{');
    if (rc == CH_ENOTOBJECT)
        FUZZ_CHECK(first != '{');

    /* The limit only decides CH_ETOOBIG: no limit (0) gives the same result, one byte too few
     * refuses the body. */
    struct ch_record again;
    FUZZ_CHECK(parse_checked(&again, data, size, 0) == rc);
    if (rc == CH_OK)
        FUZZ_CHECK(same_record(&rec, &again));
    if (size > 1)
        FUZZ_CHECK(parse_checked(&again, data, size, size - 1) == CH_ETOOBIG);
    return 0;
}
