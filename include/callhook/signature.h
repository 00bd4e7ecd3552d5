/*
 * Standard Webhooks 1.0 signatures: `v1` (HMAC-SHA256) and `v1a` (Ed25519) over
 * "{webhook-id}.{webhook-timestamp}.{body}", byte-exact over the raw body, and the secrets and
 * keys they use (`whsec_`, `whsk_`, `whpk_`).
 */
#ifndef CALLHOOK_SIGNATURE_H
#define CALLHOOK_SIGNATURE_H

#include <callhook/error.h>
#include <callhook/export.h>

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum ch_key_kind {
    CH_KEY_NONE = 0,
    CH_KEY_HMAC,           /* whsec_: signs and verifies v1 */
    CH_KEY_ED25519_SECRET, /* whsk_: signs v1a (and verifies it, through its public half) */
    CH_KEY_ED25519_PUBLIC, /* whpk_: verifies v1a */
};

/* Sizes the specification sets for HMAC secrets. */
#define CH_SECRET_MIN_BYTES 24
#define CH_SECRET_MAX_BYTES 64
/* Room for any key written out as text ("whsk_" + 88 base64 characters), NUL included. */
#define CH_SECRET_TEXT_MAX 100
/* Room for one signature entry ("v1a," + 88), NUL included. */
#define CH_SIGNATURE_ENTRY_MAX 96
/* Longest webhook-id accepted for signing and verifying, in bytes. */
#define CH_MESSAGE_ID_MAX 256
/* Signature headers longer than this, or entries past this count, are not looked at. */
#define CH_SIGNATURE_HEADER_MAX  8192
#define CH_SIGNATURE_MAX_ENTRIES 32
/* The timestamp window of the specification, both directions. */
#define CH_DEFAULT_TOLERANCE_S 300

/** A secret or key. Caller-owned, no heap memory; wipe with ch_secret_wipe() when done. */
struct ch_secret {
    enum ch_key_kind kind;
    unsigned char key[CH_SECRET_MAX_BYTES]; /* HMAC secret, or the Ed25519 seed (32 bytes) */
    size_t key_len;
    unsigned char public_key[32]; /* Ed25519 only: the public key */
};

/**
 * Reads a secret or key from text: `whsec_` + base64 (the prefix is optional; padding too),
 * `whsk_` + base64 of the 32-byte seed or the 64-byte seed-and-public-key, `whpk_` + base64 of
 * the 32-byte public key. An HMAC secret must decode to CH_SECRET_MIN_BYTES..CH_SECRET_MAX_BYTES.
 * Returns CH_OK or CH_ESECRET with a message saying what is wrong (never the secret itself).
 */
CH_API ch_code ch_secret_parse(struct ch_secret *out, const char *text, struct ch_error *err);

/**
 * Makes a new random key from the OS-seeded OpenSSL generator: an HMAC secret of nbytes
 * (CH_SECRET_MIN_BYTES..CH_SECRET_MAX_BYTES) for CH_KEY_HMAC, or an Ed25519 key pair for
 * CH_KEY_ED25519_SECRET (nbytes ignored). Returns CH_OK, CH_EINVAL or CH_ECRYPTO.
 */
CH_API ch_code ch_secret_generate(struct ch_secret *out, enum ch_key_kind kind, size_t nbytes,
                                  struct ch_error *err);

/**
 * Writes the key as text ("whsec_…", "whsk_…" with seed and public key, "whpk_…") into buf.
 * Returns CH_OK, or CH_EINVAL when cap is below CH_SECRET_TEXT_MAX.
 */
CH_API ch_code ch_secret_format(const struct ch_secret *s, char *buf, size_t cap,
                                struct ch_error *err);

/** The public key of an Ed25519 secret key (or a copy of a public key) into *out. */
CH_API ch_code ch_secret_public(const struct ch_secret *s, struct ch_secret *out,
                                struct ch_error *err);

/** Overwrites the key material. */
CH_API void ch_secret_wipe(struct ch_secret *s);

/**
 * Signs body (len raw bytes) for webhook-id msg_id and webhook-timestamp timestamp with each of
 * nkeys keys, writing the webhook-signature header value into out: one entry per key ("v1,…"
 * for HMAC secrets, "v1a,…" for Ed25519 secret keys), separated by single spaces. Several keys
 * are how a rotation signs with the old and the new secret at once.
 * Returns CH_OK; CH_EINVAL for a bad id (empty, over CH_MESSAGE_ID_MAX), a negative timestamp, a
 * public key, or cap below nkeys * CH_SIGNATURE_ENTRY_MAX; CH_ENOMEM; CH_ECRYPTO.
 */
CH_API ch_code ch_sign(const struct ch_secret *keys, size_t nkeys, const char *msg_id,
                       long long timestamp, const void *body, size_t len, char *out, size_t cap,
                       struct ch_error *err);

/** A clock for verification: the current unix time in seconds. */
typedef long long (*ch_clock_cb)(void *ctx);

/** What ch_verify() checks against. Caller-owned; keys are borrowed. */
struct ch_verifier {
    const struct ch_secret *keys; /* any of them may match (rotation) */
    size_t nkeys;
    long long tolerance_s; /* the window, both directions; 0 means CH_DEFAULT_TOLERANCE_S */
    ch_clock_cb clock;     /* NULL means the system clock */
    void *clock_ctx;
};

/**
 * Verifies a delivery from its three headers and raw body. Checks, in this order: every header
 * present and non-empty (CH_ENOHEADER, naming it), the timestamp a canonical decimal integer
 * (CH_ETIMESTAMP), within the window (CH_ETOOOLD, CH_ETOONEW), then the signature list: any `v1`
 * entry matching an HMAC key, or `v1a` entry matching an Ed25519 key, passes; entries of other
 * versions are skipped; comparisons take constant time (CH_ENOMATCH otherwise).
 * Thread-safe as long as v is not changed meanwhile.
 */
CH_API ch_code ch_verify(const struct ch_verifier *v, const char *msg_id, const char *timestamp,
                         const char *signature, const void *body, size_t len, struct ch_error *err);

/** Looks up a request header by name, any letter case; NULL when absent. */
typedef const char *(*ch_header_cb)(void *ctx, const char *name);

/**
 * Verifies a request from its headers and raw body: reads webhook-id, webhook-timestamp and
 * webhook-signature (or their svix-id, svix-timestamp, svix-signature spellings) through
 * get_header, then does what ch_verify() does. This is what `callhook receive` calls.
 */
CH_API ch_code ch_verify_request(const struct ch_verifier *v, ch_header_cb get_header, void *ctx,
                                 const void *body, size_t len, struct ch_error *err);

/**
 * The part of ch_verify_request() that needs no body, with the same codes and messages: the
 * headers present, the id, the timestamp canonical and inside the window, and at least one
 * signature entry of a version and length that one of v's keys verifies. CH_OK says only that
 * the body is worth reading: the signature covers the body, so ch_verify_request() must still
 * follow. For a server that refuses requests before reading their bodies.
 */
CH_API ch_code ch_verify_request_headers(const struct ch_verifier *v, ch_header_cb get_header,
                                         void *ctx, struct ch_error *err);

/** One entry of a webhook-signature header: "version,base64". Both point into the header. */
struct ch_signature_entry {
    const char *version;
    size_t version_len;
    const char *value;
    size_t value_len;
};

/**
 * Iterates the space-separated entries of a webhook-signature header. *cursor starts at the
 * header and is advanced; returns false when no entry is left. Entries without a comma are
 * skipped. Never reads past the terminating NUL.
 */
CH_API bool ch_signature_next(const char **cursor, struct ch_signature_entry *entry);

#ifdef __cplusplus
}
#endif

#endif
