/*
 * Reads a call record's ids and CallType. The body is checked and read in one pass by jsonscan,
 * which accepts what jansson accepts less a NUL byte outside a string and an object of more than
 * JSONSCAN_MAX_MEMBERS keys; jansson itself (this is the only library file that includes it) is
 * asked again only for a body jsonscan refuses, for its error message, and refuses the same. The
 * body is never re-serialized: callers keep and pass on the raw bytes.
 */
#include <callhook/record.h>

#include "lib/jsonscan.h"

#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Whether key (len bytes) is name in another letter case. */
static bool equal_ignore_case_n(const char *key, size_t len, const char *name)
{
    size_t i = 0;
    for (; i < len && name[i]; i++) {
        if (ascii_lower((unsigned char)key[i]) != ascii_lower((unsigned char)name[i]))
            return false;
    }
    return i == len && name[i] == '\0';
}

static bool equal_ignore_case(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b))
            return false;
    }
    return *a == *b;
}

static bool only_white_space(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
            return false;
    }
    return true;
}

/*
 * How well a key names a field: 0 the documented PascalCase, 1 the camelCase of the platform's
 * prose, 2 any other casing, -1 not this field. The lowest rank present wins, so a record that
 * carries two casings resolves the same way every time.
 */
static int key_rank(const char *key, size_t len, const char *pascal, const char *camel)
{
    size_t n = strlen(pascal);
    if (len != n)
        return -1;
    if (memcmp(key, pascal, n) == 0)
        return 0;
    if (memcmp(key, camel, n) == 0)
        return 1;
    return equal_ignore_case_n(key, len, pascal) ? 2 : -1;
}

/* Largest double below which every integer is exact, so ids and CallTypes keep their value. */
#define EXACT_INTEGER_LIMIT 9007199254740992.0

static bool integral_value(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = (long long)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (isfinite(d) && d == floor(d) && fabs(d) < EXACT_INTEGER_LIMIT) {
            *out = (long long)d;
            return true;
        }
    }
    return false;
}

static ch_code copy_id(const json_t *v, const char *field, char *dst, bool *has,
                       struct ch_error *err)
{
    *has = false;
    dst[0] = '\0';
    long long n;
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        if (len == 0)
            return CH_OK;
        if (len > CH_RECORD_ID_MAX)
            return ch_error_set(err, CH_EINVAL, "%s is %zu bytes long; at most %d are accepted",
                                field, len, CH_RECORD_ID_MAX);
        memcpy(dst, json_string_value(v), len);
        dst[len] = '\0';
        *has = true;
    } else if (integral_value(v, &n)) {
        snprintf(dst, CH_RECORD_ID_MAX + 1, "%lld", n);
        *has = true;
    } else if (json_is_real(v) && fabs(json_real_value(v)) >= EXACT_INTEGER_LIMIT) {
        /* Falling back to the other id would merge different calls: refuse instead. */
        return ch_error_set(err, CH_EINVAL,
                            "%s is a number too large to keep exactly; send it as a string", field);
    }
    return CH_OK;
}

static ch_code too_many_members(struct ch_error *err)
{
    return ch_error_set(err, CH_ETOOBIG,
                        "an object in the body has more than %d members; at most %d are "
                        "accepted (a call record has a few dozen)",
                        JSONSCAN_MAX_MEMBERS, JSONSCAN_MAX_MEMBERS);
}

/* Whether v holds, at any depth, an object over jsonscan's cap. jansson nests at most 2048
 * deep, so the recursion is bounded. */
static bool has_wide_object(const json_t *v)
{
    if (json_is_object(v)) {
        if (json_object_size(v) > JSONSCAN_MAX_MEMBERS)
            return true;
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member)
        {
            if (has_wide_object(member))
                return true;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (has_wide_object(json_array_get(v, i)))
                return true;
        }
    }
    return false;
}

/* The reference reading, with jansson's tree: used when jsonscan refuses a body, for jansson's
 * own error message. */
static ch_code parse_with_jansson(struct ch_record *rec, const void *body, size_t len,
                                  struct ch_error *err)
{
    /* Integers are read as reals so that an integer past 64 bits in a field we never look at
     * does not make jansson reject the whole record ("too big integer"); a number past a
     * double's range (1e400) is still refused. Duplicate keys are refused because two readers
     * could pick different values for the same id. */
    json_error_t jerr;
    json_t *root = json_loadb(
        body, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (root == NULL)
        return ch_error_set(err, CH_EJSON, "invalid JSON at line %d, column %d (byte %d): %s",
                            jerr.line, jerr.column, jerr.position, jerr.text);
    /* jansson skips a NUL byte right after a number or a literal; jsonscan does not, so that a
     * handler never gets a body that is not JSON. jansson refuses a raw NUL inside a string, so
     * any NUL left in a body it accepted is outside the strings. */
    const char *nul = memchr(body, '\0', len);
    if (nul != NULL) {
        json_decref(root);
        return ch_error_set(err, CH_EJSON,
                            "invalid JSON at byte %zu: a NUL byte outside a string; send the "
                            "record without it",
                            (size_t)(nul - (const char *)body));
    }
    if (has_wide_object(root)) {
        json_decref(root);
        return too_many_members(err);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return ch_error_set(err, CH_ENOTOBJECT,
                            "body is valid JSON but not an object; a call record is {...}");
    }

    const json_t *active = NULL, *correlation = NULL, *call_type = NULL;
    int active_rank = 3, correlation_rank = 3, type_rank = 3;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        int r;
        size_t klen = strlen(key);
        if ((r = key_rank(key, klen, "ActiveCallId", "activeCallId")) >= 0 && r < active_rank) {
            active = value;
            active_rank = r;
        } else if ((r = key_rank(key, klen, "CorrelationId", "correlationId")) >= 0 &&
                   r < correlation_rank) {
            correlation = value;
            correlation_rank = r;
        } else if ((r = key_rank(key, klen, "CallType", "callType")) >= 0 && r < type_rank) {
            call_type = value;
            type_rank = r;
        }
    }

    struct ch_record out = {.body = body, .body_len = len};
    ch_code rc = copy_id(active, "ActiveCallId", out.active_call_id, &out.has_active_call_id, err);
    if (rc == CH_OK)
        rc =
            copy_id(correlation, "CorrelationId", out.correlation_id, &out.has_correlation_id, err);
    if (rc == CH_OK) {
        long long t;
        if (call_type != NULL && integral_value(call_type, &t)) {
            out.call_type = t;
            out.call_type_kind = (t >= CH_CALL_TYPE_GENERIC_CALL && t <= CH_CALL_TYPE_OUTBOUND_CALL)
                                     ? CH_CALL_TYPE_KNOWN
                                     : CH_CALL_TYPE_UNKNOWN;
        }
        *rec = out;
    }
    json_decref(root);
    return rc;
}

/* A member jsonscan reported, if it names one of the fields read, and how well. */
struct pick {
    struct jsonscan_value value;
    int rank; /* as key_rank(); 3: not seen */
};

struct picks {
    struct pick active, correlation, call_type;
};

static void pick_member(void *ctx, const char *key, size_t len, const struct jsonscan_value *v)
{
    struct picks *p = ctx;
    int r;
    /* The same order and ranks as the jansson reading: the first best-ranked key wins. */
    if ((r = key_rank(key, len, "ActiveCallId", "activeCallId")) >= 0 && r < p->active.rank)
        p->active = (struct pick){*v, r};
    else if ((r = key_rank(key, len, "CorrelationId", "correlationId")) >= 0 &&
             r < p->correlation.rank)
        p->correlation = (struct pick){*v, r};
    else if ((r = key_rank(key, len, "CallType", "callType")) >= 0 && r < p->call_type.rank)
        p->call_type = (struct pick){*v, r};
}

/* integral_value() for a number jsonscan read (all numbers are reals, as with
 * JSON_DECODE_INT_AS_REAL). */
static bool integral_number(double d, long long *out)
{
    if (isfinite(d) && d == floor(d) && fabs(d) < EXACT_INTEGER_LIMIT) {
        *out = (long long)d;
        return true;
    }
    return false;
}

/* copy_id() for a member jsonscan reported. */
static ch_code copy_picked_id(const struct pick *p, const char *field, char *dst, bool *has,
                              struct ch_error *err)
{
    *has = false;
    dst[0] = '\0';
    if (p->rank > 2)
        return CH_OK;
    const struct jsonscan_value *v = &p->value;
    if (v->type == JSONSCAN_STRING) {
        size_t len = v->escaped ? jsonscan_unescape(v->raw, v->raw_len, NULL) : v->raw_len;
        if (len == 0)
            return CH_OK;
        if (len > CH_RECORD_ID_MAX)
            return ch_error_set(err, CH_EINVAL, "%s is %zu bytes long; at most %d are accepted",
                                field, len, CH_RECORD_ID_MAX);
        if (v->escaped)
            jsonscan_unescape(v->raw, v->raw_len, dst);
        else
            memcpy(dst, v->raw, len);
        dst[len] = '\0';
        *has = true;
    } else if (v->type == JSONSCAN_NUMBER) {
        double d = jsonscan_number(v->raw, v->raw_len);
        long long n;
        if (integral_number(d, &n)) {
            snprintf(dst, CH_RECORD_ID_MAX + 1, "%lld", n);
            *has = true;
        } else if (fabs(d) >= EXACT_INTEGER_LIMIT) {
            /* Falling back to the other id would merge different calls: refuse instead. */
            return ch_error_set(err, CH_EINVAL,
                                "%s is a number too large to keep exactly; send it as a string",
                                field);
        }
    }
    return CH_OK;
}

ch_code ch_record_parse(struct ch_record *rec, const void *body, size_t len, size_t max_body_bytes,
                        struct ch_error *err)
{
    if (rec == NULL || (body == NULL && len > 0))
        return ch_error_set(err, CH_EINVAL, "ch_record_parse: record and body are required");
    if (max_body_bytes > 0 && len > max_body_bytes)
        return ch_error_set(err, CH_ETOOBIG, "body is %zu bytes; the limit is %zu bytes", len,
                            max_body_bytes);
    if (len == 0 || only_white_space(body, len))
        return ch_error_set(err, CH_EEMPTY, "body is empty; a call record is a JSON object");

    struct picks p = {.active.rank = 3, .correlation.rank = 3, .call_type.rank = 3};
    enum jsonscan_result scanned = jsonscan_run(body, len, pick_member, &p);
    if (scanned == JSONSCAN_TOO_MANY_MEMBERS)
        return too_many_members(err);
    if (scanned == JSONSCAN_INVALID || scanned == JSONSCAN_NOMEM)
        return parse_with_jansson(rec, body, len, err);
    if (scanned == JSONSCAN_NOT_OBJECT)
        return ch_error_set(err, CH_ENOTOBJECT,
                            "body is valid JSON but not an object; a call record is {...}");

    struct ch_record out = {.body = body, .body_len = len};
    ch_code rc =
        copy_picked_id(&p.active, "ActiveCallId", out.active_call_id, &out.has_active_call_id, err);
    if (rc == CH_OK)
        rc = copy_picked_id(&p.correlation, "CorrelationId", out.correlation_id,
                            &out.has_correlation_id, err);
    if (rc != CH_OK)
        return rc;
    long long t;
    if (p.call_type.rank <= 2 && p.call_type.value.type == JSONSCAN_NUMBER &&
        integral_number(jsonscan_number(p.call_type.value.raw, p.call_type.value.raw_len), &t)) {
        out.call_type = t;
        out.call_type_kind = (t >= CH_CALL_TYPE_GENERIC_CALL && t <= CH_CALL_TYPE_OUTBOUND_CALL)
                                 ? CH_CALL_TYPE_KNOWN
                                 : CH_CALL_TYPE_UNKNOWN;
    }
    *rec = out;
    return CH_OK;
}

const char *ch_record_dedupe_key(const struct ch_record *rec)
{
    if (rec->has_active_call_id)
        return rec->active_call_id;
    if (rec->has_correlation_id)
        return rec->correlation_id;
    return NULL;
}

static const char *const known_names[] = {
#define CH_CALL_TYPE_NAME(name, value, text) [value] = text,
    CH_CALL_TYPE_MAP(CH_CALL_TYPE_NAME)
#undef CH_CALL_TYPE_NAME
};
#define KNOWN_COUNT ((long long)(sizeof known_names / sizeof known_names[0]))

const char *ch_call_type_name(enum ch_call_type_kind kind, long long value, char *buf, size_t cap)
{
    if (cap == 0)
        return buf;
    if (kind == CH_CALL_TYPE_ABSENT)
        snprintf(buf, cap, "absent");
    else if (value >= 0 && value < KNOWN_COUNT)
        snprintf(buf, cap, "%s", known_names[value]);
    else
        snprintf(buf, cap, "unknown (%lld)", value);
    return buf;
}

ch_code ch_call_type_parse(const char *text, long long *value, struct ch_error *err)
{
    if (text == NULL || *text == '\0')
        return ch_error_set(err, CH_EINVAL, "empty CallType; give a number or a name");
    for (long long i = 0; i < KNOWN_COUNT; i++) {
        if (equal_ignore_case(text, known_names[i])) {
            *value = i;
            return CH_OK;
        }
    }
    const char *p = text;
    bool negative = *p == '-';
    if (negative)
        p++;
    if (*p == '\0')
        return ch_error_set(err, CH_EINVAL, "CallType '%s' is neither a number nor a name", text);
    long long n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || n > (9223372036854775807LL - 9) / 10)
            return ch_error_set(err, CH_EINVAL,
                                "CallType '%s' is neither a number nor a known name (e.g. "
                                "MissedCall)",
                                text);
        n = n * 10 + (*p - '0');
    }
    *value = negative ? -n : n;
    return CH_OK;
}
