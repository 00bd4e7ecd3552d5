/* Standard Webhooks signing and verification over "{id}.{timestamp}.{body}". */
#include <callhook/signature.h>

#include "lib/crypto.h"
#include "util/base64.h"
#include "util/clock.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Characters of a decimal timestamp we accept: enough for any date this side of year 30000. */
#define TIMESTAMP_MAX_DIGITS 18
#define HMAC_B64_LEN         B64_ENCODED_LEN(CRYPTO_SHA256_LEN)
#define ED25519_B64_LEN      B64_ENCODED_LEN(CRYPTO_ED25519_SIG_LEN)

static ch_code check_msg_id(const char *msg_id, struct ch_error *err)
{
    if (msg_id == NULL || *msg_id == '\0')
        return ch_error_set(err, CH_EINVAL, "webhook-id is empty");
    if (strnlen(msg_id, CH_MESSAGE_ID_MAX + 1) > CH_MESSAGE_ID_MAX)
        return ch_error_set(err, CH_EINVAL, "webhook-id is longer than %d bytes",
                            CH_MESSAGE_ID_MAX);
    return CH_OK;
}

/* The signed content as one buffer, for Ed25519, which cannot sign in pieces. Caller frees. */
static unsigned char *join_content(const char *msg_id, const char *ts, const void *body, size_t len,
                                   size_t *out_len)
{
    size_t id_len = strlen(msg_id), ts_len = strlen(ts);
    if (len > SIZE_MAX - id_len - ts_len - 2)
        return NULL;
    size_t total = id_len + 1 + ts_len + 1 + len;
    unsigned char *p = malloc(total ? total : 1);
    if (p == NULL)
        return NULL;
    memcpy(p, msg_id, id_len);
    p[id_len] = '.';
    memcpy(p + id_len + 1, ts, ts_len);
    p[id_len + 1 + ts_len] = '.';
    if (len > 0)
        memcpy(p + id_len + ts_len + 2, body, len);
    *out_len = total;
    return p;
}

static bool hmac_b64(const struct ch_secret *key, const char *msg_id, const char *ts,
                     const void *body, size_t len, char out[HMAC_B64_LEN + 1])
{
    struct crypto_part parts[] = {
        {msg_id, strlen(msg_id)}, {".", 1}, {ts, strlen(ts)}, {".", 1}, {body, len},
    };
    unsigned char mac[CRYPTO_SHA256_LEN];
    bool ok = crypto_hmac_sha256(key->key, key->key_len, parts, 5, mac);
    if (ok)
        b64_encode(mac, sizeof mac, out, HMAC_B64_LEN + 1);
    crypto_wipe(mac, sizeof mac);
    return ok;
}

ch_code ch_sign(const struct ch_secret *keys, size_t nkeys, const char *msg_id, long long timestamp,
                const void *body, size_t len, char *out, size_t cap, struct ch_error *err)
{
    ch_code rc = check_msg_id(msg_id, err);
    if (rc != CH_OK)
        return rc;
    if (timestamp < 0)
        return ch_error_set(err, CH_EINVAL, "timestamp %lld is negative", timestamp);
    if (nkeys == 0 || nkeys > CH_SIGNATURE_MAX_ENTRIES)
        return ch_error_set(err, CH_EINVAL, "signing needs 1 to %d keys, not %zu",
                            CH_SIGNATURE_MAX_ENTRIES, nkeys);
    if (cap < nkeys * CH_SIGNATURE_ENTRY_MAX)
        return ch_error_set(err, CH_EINVAL, "signature buffer must hold %zu bytes",
                            nkeys * CH_SIGNATURE_ENTRY_MAX);
    if (body == NULL && len > 0)
        return ch_error_set(err, CH_EINVAL, "no body given");

    char ts[24];
    snprintf(ts, sizeof ts, "%lld", timestamp);
    unsigned char *content = NULL;
    size_t content_len = 0;
    size_t o = 0;
    for (size_t i = 0; i < nkeys && rc == CH_OK; i++) {
        if (o > 0)
            out[o++] = ' ';
        if (keys[i].kind == CH_KEY_HMAC) {
            memcpy(out + o, "v1,", 3);
            if (!hmac_b64(&keys[i], msg_id, ts, body, len, out + o + 3))
                rc = ch_error_set(err, CH_ECRYPTO, "HMAC-SHA256 failed");
            o += 3 + HMAC_B64_LEN;
        } else if (keys[i].kind == CH_KEY_ED25519_SECRET) {
            if (content == NULL)
                content = join_content(msg_id, ts, body, len, &content_len);
            unsigned char sig[CRYPTO_ED25519_SIG_LEN];
            if (content == NULL)
                rc = ch_error_set(err, CH_ENOMEM, "out of memory signing %zu bytes", len);
            else if (!crypto_ed25519_sign(keys[i].key, content, content_len, sig))
                rc = ch_error_set(err, CH_ECRYPTO, "Ed25519 signing failed");
            else {
                memcpy(out + o, "v1a,", 4);
                b64_encode(sig, sizeof sig, out + o + 4, ED25519_B64_LEN + 1);
                o += 4 + ED25519_B64_LEN;
            }
        } else {
            rc = ch_error_set(err, CH_EINVAL, "key %zu cannot sign: it is not a secret key", i);
        }
    }
    free(content);
    out[o] = '\0';
    if (rc != CH_OK)
        out[0] = '\0';
    return rc;
}

bool ch_signature_next(const char **cursor, struct ch_signature_entry *entry)
{
    const char *p = *cursor;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0') {
            *cursor = p;
            return false;
        }
        const char *start = p;
        const char *comma = NULL;
        while (*p != '\0' && *p != ' ') {
            if (comma == NULL && *p == ',')
                comma = p;
            p++;
        }
        if (comma != NULL) {
            entry->version = start;
            entry->version_len = (size_t)(comma - start);
            entry->value = comma + 1;
            entry->value_len = (size_t)(p - comma - 1);
            *cursor = p;
            return true;
        }
    }
}

/* A canonical decimal: digits only, no sign, no leading zero, not too many digits. */
static bool parse_timestamp(const char *s, long long *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > TIMESTAMP_MAX_DIGITS || (n > 1 && s[0] == '0'))
        return false;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool version_is(const struct ch_signature_entry *e, const char *v)
{
    return e->version_len == strlen(v) && memcmp(e->version, v, e->version_len) == 0;
}

static long long system_clock(void)
{
    return clock_wall_s();
}

/* State of one verification: what has been computed lazily so far. */
struct verify_state {
    const struct ch_verifier *v;
    const char *msg_id, *ts;
    const void *body;
    size_t len;
    char (*hmacs)[HMAC_B64_LEN + 1]; /* one per key, computed on the first v1 entry */
    unsigned char *content;          /* joined content, made on the first v1a entry */
    size_t content_len;
    ch_code failure; /* CH_ENOMEM or CH_ECRYPTO if computing failed */
};

static bool match_v1(struct verify_state *st, const struct ch_signature_entry *e)
{
    if (e->value_len != HMAC_B64_LEN)
        return false;
    if (st->hmacs == NULL) {
        st->hmacs = calloc(st->v->nkeys, sizeof *st->hmacs);
        if (st->hmacs == NULL) {
            st->failure = CH_ENOMEM;
            return false;
        }
        for (size_t k = 0; k < st->v->nkeys; k++) {
            if (st->v->keys[k].kind == CH_KEY_HMAC &&
                !hmac_b64(&st->v->keys[k], st->msg_id, st->ts, st->body, st->len, st->hmacs[k]))
                st->failure = CH_ECRYPTO;
        }
    }
    bool matched = false;
    for (size_t k = 0; k < st->v->nkeys; k++) {
        /* Every HMAC key is compared, so timing does not tell which one matched. */
        if (st->v->keys[k].kind == CH_KEY_HMAC && st->hmacs[k][0] != '\0')
            matched |= crypto_equal(st->hmacs[k], e->value, HMAC_B64_LEN);
    }
    return matched;
}

static bool match_v1a(struct verify_state *st, const struct ch_signature_entry *e)
{
    unsigned char sig[CRYPTO_ED25519_SIG_LEN];
    size_t n = 0;
    if (e->value_len != ED25519_B64_LEN ||
        !b64_decode(e->value, e->value_len, sig, sizeof sig, &n) || n != sizeof sig)
        return false;
    if (st->content == NULL) {
        st->content = join_content(st->msg_id, st->ts, st->body, st->len, &st->content_len);
        if (st->content == NULL) {
            st->failure = CH_ENOMEM;
            return false;
        }
    }
    for (size_t k = 0; k < st->v->nkeys; k++) {
        enum ch_key_kind kind = st->v->keys[k].kind;
        if ((kind == CH_KEY_ED25519_PUBLIC || kind == CH_KEY_ED25519_SECRET) &&
            crypto_ed25519_verify(st->v->keys[k].public_key, st->content, st->content_len, sig))
            return true;
    }
    return false;
}

/* Could one of the keys match this entry at all: a version it verifies, a value of its length. */
static bool entry_usable(const struct ch_verifier *v, const struct ch_signature_entry *e)
{
    bool v1 = version_is(e, "v1") && e->value_len == HMAC_B64_LEN;
    bool v1a = version_is(e, "v1a") && e->value_len == ED25519_B64_LEN;
    for (size_t k = 0; k < v->nkeys; k++) {
        enum ch_key_kind kind = v->keys[k].kind;
        if ((v1 && kind == CH_KEY_HMAC) ||
            (v1a && (kind == CH_KEY_ED25519_PUBLIC || kind == CH_KEY_ED25519_SECRET)))
            return true;
    }
    return false;
}

/* Everything ch_verify() decides without the body, in its order, with its codes and messages:
 * the headers present, the id, the timestamp and its window, the signature header's size, and
 * one entry some key could match (if none could, no body can make the signature match). */
static ch_code check_headers(const struct ch_verifier *v, const char *msg_id, const char *timestamp,
                             const char *signature, struct ch_error *err)
{
    if (msg_id == NULL || *msg_id == '\0')
        return ch_error_set(err, CH_ENOHEADER, "missing webhook-id header");
    if (timestamp == NULL || *timestamp == '\0')
        return ch_error_set(err, CH_ENOHEADER, "missing webhook-timestamp header");
    if (signature == NULL || *signature == '\0')
        return ch_error_set(err, CH_ENOHEADER, "missing webhook-signature header");
    ch_code rc = check_msg_id(msg_id, err);
    if (rc != CH_OK)
        return rc;

    long long ts;
    if (!parse_timestamp(timestamp, &ts))
        return ch_error_set(err, CH_ETIMESTAMP,
                            "webhook-timestamp is not a whole number of unix seconds");
    long long now = v->clock ? v->clock(v->clock_ctx) : system_clock();
    long long tolerance = v->tolerance_s > 0 ? v->tolerance_s : CH_DEFAULT_TOLERANCE_S;
    /* age = now - ts without overflow, whatever clock and window the caller gives. */
    long long age;
    if (__builtin_sub_overflow(now, ts, &age))
        age = now < 0 ? LLONG_MIN : LLONG_MAX;
    if (age > tolerance)
        return ch_error_set(err, CH_ETOOOLD,
                            "webhook-timestamp is %lld s in the past; the window is %lld s", age,
                            tolerance);
    if (age < -tolerance)
        return ch_error_set(err, CH_ETOONEW,
                            "webhook-timestamp is %lld s in the future; the window is %lld s",
                            age == LLONG_MIN ? LLONG_MAX : -age, tolerance);
    if (strnlen(signature, CH_SIGNATURE_HEADER_MAX + 1) > CH_SIGNATURE_HEADER_MAX)
        return ch_error_set(err, CH_ENOMATCH, "webhook-signature header is over %d bytes",
                            CH_SIGNATURE_HEADER_MAX);
    const char *cursor = signature;
    struct ch_signature_entry e;
    for (int seen = 0; seen < CH_SIGNATURE_MAX_ENTRIES && ch_signature_next(&cursor, &e); seen++) {
        if (entry_usable(v, &e))
            return CH_OK;
    }
    return ch_error_set(err, CH_ENOMATCH, "no signature in webhook-signature matches");
}

ch_code ch_verify(const struct ch_verifier *v, const char *msg_id, const char *timestamp,
                  const char *signature, const void *body, size_t len, struct ch_error *err)
{
    if (v == NULL || v->nkeys == 0 || (body == NULL && len > 0))
        return ch_error_set(err, CH_EINVAL, "ch_verify: a verifier with keys and a body needed");
    ch_code rc = check_headers(v, msg_id, timestamp, signature, err);
    if (rc != CH_OK)
        return rc;

    struct verify_state st = {
        .v = v, .msg_id = msg_id, .ts = timestamp, .body = body, .len = len, .failure = CH_OK};
    bool matched = false;
    const char *cursor = signature;
    struct ch_signature_entry e;
    for (int seen = 0;
         !matched && seen < CH_SIGNATURE_MAX_ENTRIES && ch_signature_next(&cursor, &e); seen++) {
        if (version_is(&e, "v1"))
            matched = match_v1(&st, &e);
        else if (version_is(&e, "v1a"))
            matched = match_v1a(&st, &e);
        if (st.failure != CH_OK)
            break;
    }
    free(st.hmacs);
    free(st.content);
    if (matched)
        return CH_OK;
    if (st.failure != CH_OK)
        return ch_error_set(err, st.failure, "cannot compute the expected signature: %s",
                            ch_strerror(st.failure));
    return ch_error_set(err, CH_ENOMATCH, "no signature in webhook-signature matches");
}

static const char *header_either(ch_header_cb get, void *ctx, const char *name, const char *alt)
{
    const char *v = get(ctx, name);
    return v ? v : get(ctx, alt);
}

ch_code ch_verify_request(const struct ch_verifier *v, ch_header_cb get_header, void *ctx,
                          const void *body, size_t len, struct ch_error *err)
{
    if (get_header == NULL)
        return ch_error_set(err, CH_EINVAL, "ch_verify_request: no header lookup given");
    return ch_verify(v, header_either(get_header, ctx, "webhook-id", "svix-id"),
                     header_either(get_header, ctx, "webhook-timestamp", "svix-timestamp"),
                     header_either(get_header, ctx, "webhook-signature", "svix-signature"), body,
                     len, err);
}

ch_code ch_verify_request_headers(const struct ch_verifier *v, ch_header_cb get_header, void *ctx,
                                  struct ch_error *err)
{
    if (v == NULL || v->nkeys == 0 || get_header == NULL)
        return ch_error_set(err, CH_EINVAL,
                            "ch_verify_request_headers: a verifier with keys and a header lookup "
                            "needed");
    return check_headers(v, header_either(get_header, ctx, "webhook-id", "svix-id"),
                         header_either(get_header, ctx, "webhook-timestamp", "svix-timestamp"),
                         header_either(get_header, ctx, "webhook-signature", "svix-signature"),
                         err);
}
