/*
 * A strict single-pass JSON checker that accepts what jansson's json_loadb() accepts with
 * JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, less a NUL byte outside a
 * string (jansson skips one after a number or a literal), without building a tree: it reports
 * the members of a top-level object and keeps nothing else. record.c reads call
 * records with it; tests/fuzz/fuzz_jsonscan.c holds it against jansson.
 */
#ifndef CALLHOOK_LIB_JSONSCAN_H
#define CALLHOOK_LIB_JSONSCAN_H

#include <stdbool.h>
#include <stddef.h>

enum jsonscan_type {
    JSONSCAN_STRING = 0,
    JSONSCAN_NUMBER,
    JSONSCAN_OTHER, /* object, array, true, false, null */
};

/** A member's value as written; raw is borrowed from the scanned buffer. */
struct jsonscan_value {
    enum jsonscan_type type;
    const char *raw; /* a string's bytes between its quotes, escapes as written; a number */
    size_t raw_len;
    bool escaped; /* a string with backslash escapes: decode it with jsonscan_unescape() */
};

/* Called for each member of a top-level object, in order, as it is read: the document may yet
 * turn out invalid. key (key_len bytes, no NUL inside, not NUL-terminated) is decoded and lives
 * until jsonscan_run() returns. */
typedef void (*jsonscan_member_cb)(void *ctx, const char *key, size_t key_len,
                                   const struct jsonscan_value *v);

/* Most keys one object may hold: a call record has a few dozen. Past it the document is refused
 * with JSONSCAN_TOO_MANY_MEMBERS as soon as the extra key is reached. */
#define JSONSCAN_MAX_MEMBERS 4096

enum jsonscan_result {
    JSONSCAN_OBJECT = 0, /* valid, and an object */
    JSONSCAN_NOT_OBJECT, /* valid JSON, but not an object */
    JSONSCAN_INVALID,    /* anything jansson refuses (syntax, UTF-8, \u0000, a duplicate key,
                            a number past a double's range, nesting past 2048), and a NUL byte
                            outside a string */
    JSONSCAN_NOMEM,
    JSONSCAN_TOO_MANY_MEMBERS, /* an object with more than JSONSCAN_MAX_MEMBERS keys (the rest of
                                  the document is not read: it may be invalid too) */
};

/** Checks buf (len bytes, any content) and reports top-level members to cb (may be NULL).
 * Duplicate keys are found with a hash table keyed at random per call (once the document has
 * more than a hundred keys), so that keys chosen to collide cannot make a body slow.
 * Thread-safe. */
enum jsonscan_result jsonscan_run(const char *buf, size_t len, jsonscan_member_cb cb, void *ctx);

/** Decodes a string value jsonscan_run() accepted into dst (NULL: only count). Returns the
 * decoded length in bytes, at most raw_len; dst gets no NUL. */
size_t jsonscan_unescape(const char *raw, size_t raw_len, char *dst);

/** The value of a number jsonscan_run() accepted, read as jansson reads it (strtod). */
double jsonscan_number(const char *raw, size_t raw_len);

#endif
