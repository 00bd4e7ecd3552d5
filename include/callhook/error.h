/*
 * Errors as values: every fallible libcallhook function returns a ch_code (CH_OK is 0) and, when
 * the caller passes one, fills a struct ch_error with a message that says what failed and why.
 */
#ifndef CALLHOOK_ERROR_H
#define CALLHOOK_ERROR_H

#include <callhook/export.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The one table of error codes: name and a short default message. */
#define CH_ERRNO_MAP(X)                          \
    X(OK, "ok")                                  \
    X(EINVAL, "invalid argument")                \
    X(ENOMEM, "out of memory")                   \
    X(EIO, "input/output error")                 \
    X(ETOOBIG, "too large")                      \
    X(EEMPTY, "empty body")                      \
    X(EJSON, "invalid json")                     \
    X(ENOTOBJECT, "not a json object")           \
    X(EBASE64, "invalid base64")                 \
    X(ESECRET, "invalid secret or key")          \
    X(ECRYPTO, "cryptographic operation failed") \
    X(ENOHEADER, "missing header")               \
    X(ETIMESTAMP, "invalid timestamp")           \
    X(ETOOOLD, "timestamp too old")              \
    X(ETOONEW, "timestamp too new")              \
    X(ENOMATCH, "no matching signature")         \
    X(ENOTFOUND, "not found")                    \
    X(ESTORE, "database error")                  \
    X(EUNAVAILABLE, "temporarily unavailable")

typedef enum ch_code {
#define CH_ERRNO_ENUM(name, msg) CH_##name,
    CH_ERRNO_MAP(CH_ERRNO_ENUM)
#undef CH_ERRNO_ENUM
        CH_ERRNO_COUNT_
} ch_code;

/* Longest message a struct ch_error holds, terminating NUL included; longer ones are cut. */
#define CH_ERROR_MESSAGE_MAX 256

/** Detail about a failure. Caller-owned; functions leave it untouched on success. */
struct ch_error {
    ch_code code;
    char message[CH_ERROR_MESSAGE_MAX];
};

/** The code's name without the prefix, e.g. "ETOOOLD"; "UNKNOWN" for a value not in the map. */
CH_API const char *ch_code_name(ch_code code);

/** A short lowercase description of the code, e.g. "timestamp too old". Never NULL. */
CH_API const char *ch_strerror(ch_code code);

/**
 * Fills err (when not NULL) with code and a printf-style message, and returns code, so a
 * function can fail with `return ch_error_set(err, CH_EINVAL, "bad '%s'", name);`.
 */
CH_API ch_code ch_error_set(struct ch_error *err, ch_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif

#endif
