/*
 * Differential libFuzzer target: jsonscan (the one-pass checker ch_record_parse() uses) against
 * jansson's json_loadb() with the flags record.c used before it, less what callhook refuses on
 * top of jansson: a NUL byte outside a string, and an object of more than JSONSCAN_MAX_MEMBERS
 * keys. Both must accept and refuse the same inputs and
 * report the same top-level members in the same order with the same values; and ch_record_parse()
 * must give what the jansson-only reading of record.c gave.
 */
#include "fuzz.h"

#include "lib/jsonscan.h"

#include <callhook/record.h>

#include <jansson.h>

#include <math.h>
#include <stdbool.h>
#include <string.h>

#define FLAGS (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL)

struct member {
    const char *key; /* copied */
    size_t key_len;
    struct jsonscan_value v;
};

struct members {
    struct member *m;
    size_t n, cap;
};

static void collect(void *ctx, const char *key, size_t key_len, const struct jsonscan_value *v)
{
    struct members *ms = ctx;
    if (ms->n == ms->cap) {
        ms->cap = ms->cap ? ms->cap * 2 : 16;
        ms->m = realloc(ms->m, ms->cap * sizeof *ms->m);
        FUZZ_CHECK(ms->m != NULL);
    }
    char *copy = malloc(key_len + 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, key, key_len);
    copy[key_len] = '\0';
    ms->m[ms->n++] = (struct member){copy, key_len, *v};
}

static void same_value(const struct jsonscan_value *v, const json_t *j)
{
    switch (v->type) {
    case JSONSCAN_STRING: {
        FUZZ_CHECK(json_is_string(j));
        size_t len = jsonscan_unescape(v->raw, v->raw_len, NULL);
        FUZZ_CHECK(len == json_string_length(j));
        char *buf = malloc(len + 1);
        FUZZ_CHECK(buf != NULL);
        FUZZ_CHECK(jsonscan_unescape(v->raw, v->raw_len, buf) == len);
        FUZZ_CHECK(memcmp(buf, json_string_value(j), len) == 0);
        free(buf);
        break;
    }
    case JSONSCAN_NUMBER: {
        FUZZ_CHECK(json_is_real(j));
        double a = jsonscan_number(v->raw, v->raw_len), b = json_real_value(j);
        FUZZ_CHECK(memcmp(&a, &b, sizeof a) == 0);
        break;
    }
    case JSONSCAN_OTHER:
        FUZZ_CHECK(json_is_object(j) || json_is_array(j) || json_is_true(j) || json_is_false(j) ||
                   json_is_null(j));
        break;
    default:
        fuzz_fail(__FILE__, __LINE__, "a jsonscan_type value");
    }
}

/* ---- record.c's reading before jsonscan, kept as the reference ---- */

#define EXACT_INTEGER_LIMIT 9007199254740992.0

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int ref_rank(const char *key, const char *pascal, const char *camel)
{
    if (strcmp(key, pascal) == 0)
        return 0;
    if (strcmp(key, camel) == 0)
        return 1;
    const char *a = key, *b = pascal;
    for (; *a && *b; a++, b++) {
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b))
            return -1;
    }
    return *a == *b ? 2 : -1;
}

static bool ref_integral(const json_t *v, long long *out)
{
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (isfinite(d) && d == floor(d) && fabs(d) < EXACT_INTEGER_LIMIT) {
            *out = (long long)d;
            return true;
        }
    }
    return false;
}

static ch_code ref_copy_id(const json_t *v, char *dst, bool *has)
{
    *has = false;
    dst[0] = '\0';
    long long n;
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        if (len == 0)
            return CH_OK;
        if (len > CH_RECORD_ID_MAX)
            return CH_EINVAL;
        memcpy(dst, json_string_value(v), len);
        dst[len] = '\0';
        *has = true;
    } else if (ref_integral(v, &n)) {
        snprintf(dst, CH_RECORD_ID_MAX + 1, "%lld", n);
        *has = true;
    } else if (json_is_real(v) && fabs(json_real_value(v)) >= EXACT_INTEGER_LIMIT) {
        return CH_EINVAL;
    }
    return CH_OK;
}

/* The reference result for a body that jansson parsed into root. */
static ch_code ref_record(const json_t *root, struct ch_record *out)
{
    if (!json_is_object(root))
        return CH_ENOTOBJECT;
    const json_t *active = NULL, *correlation = NULL, *call_type = NULL;
    int ra = 3, rc_ = 3, rt = 3, r;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)root, key, value)
    {
        if ((r = ref_rank(key, "ActiveCallId", "activeCallId")) >= 0 && r < ra) {
            active = value;
            ra = r;
        } else if ((r = ref_rank(key, "CorrelationId", "correlationId")) >= 0 && r < rc_) {
            correlation = value;
            rc_ = r;
        } else if ((r = ref_rank(key, "CallType", "callType")) >= 0 && r < rt) {
            call_type = value;
            rt = r;
        }
    }
    memset(out, 0, sizeof *out);
    ch_code rc = ref_copy_id(active, out->active_call_id, &out->has_active_call_id);
    if (rc == CH_OK)
        rc = ref_copy_id(correlation, out->correlation_id, &out->has_correlation_id);
    long long t;
    if (rc == CH_OK && call_type != NULL && ref_integral(call_type, &t)) {
        out->call_type = t;
        out->call_type_kind = (t >= CH_CALL_TYPE_GENERIC_CALL && t <= CH_CALL_TYPE_OUTBOUND_CALL)
                                  ? CH_CALL_TYPE_KNOWN
                                  : CH_CALL_TYPE_UNKNOWN;
    }
    return rc;
}

/* Whether v holds an object over the cap, at any depth. */
static bool wide(const json_t *v)
{
    if (json_is_object(v)) {
        if (json_object_size(v) > JSONSCAN_MAX_MEMBERS)
            return true;
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member)
        {
            if (wide(member))
                return true;
        }
    }
    for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++) {
        if (wide(json_array_get(v, i)))
            return true;
    }
    return false;
}

static bool only_space(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r')
            return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, size, FLAGS, &jerr);
    /* jansson refuses a raw NUL inside a string, so a NUL in a body it accepted is outside the
     * strings, where callhook refuses it. */
    bool nul = root != NULL && memchr(data, '\0', size) != NULL;
    bool too_wide = root != NULL && wide(root);
    if (nul || too_wide) {
        json_decref(root);
        root = NULL;
    }
    struct members ms = {0};
    enum jsonscan_result r = jsonscan_run((const char *)data, size, collect, &ms);

    FUZZ_CHECK(r != JSONSCAN_NOMEM);
    /* jsonscan stops at the first reason to refuse, so a body with two reports either. */
    bool refused = r == JSONSCAN_INVALID || r == JSONSCAN_TOO_MANY_MEMBERS;
    FUZZ_CHECK((root == NULL) == refused);
    if (too_wide && !nul)
        FUZZ_CHECK(r == JSONSCAN_TOO_MANY_MEMBERS);
    if (nul && !too_wide)
        FUZZ_CHECK(r == JSONSCAN_INVALID);
    if (root != NULL) {
        FUZZ_CHECK(json_is_object(root) == (r == JSONSCAN_OBJECT));
        if (json_is_object(root)) {
            FUZZ_CHECK(ms.n == json_object_size(root));
            size_t i = 0;
            const char *key;
            json_t *value;
            json_object_foreach(root, key, value)
            {
                FUZZ_CHECK(i < ms.n);
                FUZZ_CHECK(strlen(key) == ms.m[i].key_len);
                FUZZ_CHECK(strcmp(key, ms.m[i].key) == 0);
                same_value(&ms.m[i].v, value);
                i++;
            }
        }
    }

    /* ch_record_parse() against the reference reading. */
    if (size > 0 && !only_space(data, size)) {
        struct ch_record got, want;
        ch_code rc = ch_record_parse(&got, data, size, 0, NULL);
        if (root == NULL) {
            FUZZ_CHECK(rc == (r == JSONSCAN_TOO_MANY_MEMBERS ? CH_ETOOBIG : CH_EJSON));
        } else {
            ch_code ref = ref_record(root, &want);
            FUZZ_CHECK(rc == ref);
            if (rc == CH_OK) {
                FUZZ_CHECK(got.has_active_call_id == want.has_active_call_id);
                FUZZ_CHECK(got.has_correlation_id == want.has_correlation_id);
                FUZZ_CHECK(strcmp(got.active_call_id, want.active_call_id) == 0);
                FUZZ_CHECK(strcmp(got.correlation_id, want.correlation_id) == 0);
                FUZZ_CHECK(got.call_type_kind == want.call_type_kind);
                if (got.call_type_kind != CH_CALL_TYPE_ABSENT)
                    FUZZ_CHECK(got.call_type == want.call_type);
            }
        }
    }

    for (size_t i = 0; i < ms.n; i++)
        free((void *)ms.m[i].key);
    free(ms.m);
    json_decref(root);
    return 0;
}
