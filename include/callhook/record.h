/*
 * The call record: the JSON object the calling platform posts at the beginning and the end of a
 * call. libcallhook reads only what it needs from it (the ids and the CallType) and never
 * re-serializes it: the bytes that arrive are the bytes that are stored, signed and delivered.
 */
#ifndef CALLHOOK_RECORD_H
#define CALLHOOK_RECORD_H

#include <callhook/error.h>
#include <callhook/export.h>

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CallType values the platform documents. Any other integer is kept as an unknown value. */
#define CH_CALL_TYPE_MAP(X)                              \
    X(GENERIC_CALL, 0, "GenericCall")                    \
    X(ANSWERED_CALL, 1, "AnsweredCall")                  \
    X(MISSED_CALL, 2, "MissedCall")                      \
    X(INITIAL_ANSWERED_CALL, 3, "InitialAnsweredCall")   \
    X(ACTIVE_CALL, 4, "ActiveCall")                      \
    X(VOICE_MAIL, 5, "VoiceMail")                        \
    X(CALL_TRANSFERED, 6, "CallTransfered")              \
    X(CALL_ANSWERED_MANUALLY, 7, "CallAnsweredManually") \
    X(OUTBOUND_CALL, 8, "OutboundCall")

enum ch_call_type {
#define CH_CALL_TYPE_ENUM(name, value, text) CH_CALL_TYPE_##name = value,
    CH_CALL_TYPE_MAP(CH_CALL_TYPE_ENUM)
#undef CH_CALL_TYPE_ENUM
};

/* Whether a record's CallType is one of the documented values, another integer, or not there. */
enum ch_call_type_kind {
    CH_CALL_TYPE_ABSENT = 0, /* missing, null, or not an integer: never an error */
    CH_CALL_TYPE_KNOWN,      /* one of enum ch_call_type */
    CH_CALL_TYPE_UNKNOWN,    /* an integer the platform may add later */
};

/* Room for any CallType name, "unknown (-9223372036854775808)" included. */
#define CH_CALL_TYPE_NAME_MAX 40

/* Longest ActiveCallId or CorrelationId kept, in bytes; a longer one is an error. */
#define CH_RECORD_ID_MAX 255

/** What libcallhook read from a call record. Caller-owned; holds no heap memory. */
struct ch_record {
    const char *body; /* borrowed: the raw bytes parsed, exactly as given */
    size_t body_len;
    bool has_active_call_id;
    bool has_correlation_id;
    char active_call_id[CH_RECORD_ID_MAX + 1];
    char correlation_id[CH_RECORD_ID_MAX + 1];
    enum ch_call_type_kind call_type_kind;
    long long call_type; /* valid unless call_type_kind is CH_CALL_TYPE_ABSENT */
};

/**
 * Parses body (len bytes, not NUL-terminated) as a call record and fills rec.
 *
 * ActiveCallId and CorrelationId are looked up among the top-level keys whatever their letter
 * case; the exact spellings "ActiveCallId" / "activeCallId" win over other casings. A string
 * value is kept as is; an integer is kept as its decimal text (one of 2^53 or more is refused
 * with CH_EINVAL, as it cannot be kept exactly); null, "", a fraction or any other type means
 * the id is absent. Unknown fields, nulls, nesting and `_` fields are accepted.
 *
 * Returns CH_OK, or: CH_ETOOBIG (len > max_body_bytes; 0 means no limit), CH_EEMPTY (nothing but
 * white space), CH_EJSON (not valid JSON, a key repeated, or a number past a double's range;
 * the message gives line, column and byte offset), CH_ENOTOBJECT (valid JSON but not an
 * object), CH_EINVAL (an id longer than CH_RECORD_ID_MAX bytes, or too large a number),
 * CH_ENOMEM. rec->body borrows body: keep it alive while rec is used.
 * Thread-safe.
 */
CH_API ch_code ch_record_parse(struct ch_record *rec, const void *body, size_t len,
                               size_t max_body_bytes, struct ch_error *err);

/**
 * The key a duplicate of this event is recognised by: the ActiveCallId, else the
 * CorrelationId, else NULL. Borrowed from rec.
 */
CH_API const char *ch_record_dedupe_key(const struct ch_record *rec);

/**
 * Writes the CallType's name into buf (cap bytes, CH_CALL_TYPE_NAME_MAX is always enough):
 * "MissedCall" for a known value, "unknown (42)" for another integer, "absent" when there is
 * none. Returns buf.
 */
CH_API const char *ch_call_type_name(enum ch_call_type_kind kind, long long value, char *buf,
                                     size_t cap);

/**
 * Reads a CallType given as a number ("2", "42") or a documented name ("MissedCall", any letter
 * case). Returns CH_OK and sets *value, or CH_EINVAL naming the text.
 */
CH_API ch_code ch_call_type_parse(const char *text, long long *value, struct ch_error *err);

#ifdef __cplusplus
}
#endif

#endif
