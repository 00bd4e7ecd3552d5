/*
 * Reads a call record's ids and CallType with jansson, the only file that includes it. The body
 * is parsed to be checked and read, never re-serialized: callers keep and pass on the raw bytes.
 */
#include <callhook/record.h>

#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
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
static int key_rank(const char *key, const char *pascal, const char *camel)
{
    if (strcmp(key, pascal) == 0)
        return 0;
    if (strcmp(key, camel) == 0)
        return 1;
    return equal_ignore_case(key, pascal) ? 2 : -1;
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
        if ((r = key_rank(key, "ActiveCallId", "activeCallId")) >= 0 && r < active_rank) {
            active = value;
            active_rank = r;
        } else if ((r = key_rank(key, "CorrelationId", "correlationId")) >= 0 &&
                   r < correlation_rank) {
            correlation = value;
            correlation_rank = r;
        } else if ((r = key_rank(key, "CallType", "callType")) >= 0 && r < type_rank) {
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
