/* Signing secrets and keys: parsing and writing their text forms, generating new ones. */
#include <callhook/signature.h>

#include "lib/crypto.h"
#include "util/base64.h"

#include <string.h>

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static ch_code parse_ed25519(struct ch_secret *out, const char *b64, bool is_public,
                             struct ch_error *err)
{
    unsigned char raw[64];
    size_t n = 0;
    const char *what = is_public ? "whpk_ public key" : "whsk_ secret key";
    if (!b64_decode(b64, strlen(b64), raw, sizeof raw, &n))
        return ch_error_set(err, CH_ESECRET, "%s is not valid base64", what);
    struct ch_secret s = {.kind = is_public ? CH_KEY_ED25519_PUBLIC : CH_KEY_ED25519_SECRET};
    ch_code rc = CH_OK;
    if (is_public) {
        if (n != 32) {
            rc = ch_error_set(err, CH_ESECRET, "%s must decode to 32 bytes, not %zu", what, n);
            goto done;
        }
        memcpy(s.public_key, raw, 32);
    } else {
        if (n != 32 && n != 64) {
            rc = ch_error_set(err, CH_ESECRET,
                              "%s must decode to 32 bytes (seed) or 64 (seed and public key), "
                              "not %zu",
                              what, n);
            goto done;
        }
        memcpy(s.key, raw, 32);
        s.key_len = 32;
        if (!crypto_ed25519_public(s.key, s.public_key)) {
            rc = ch_error_set(err, CH_ECRYPTO, "cannot derive the Ed25519 public key");
            goto done;
        }
        /* The 64-byte form carries its public half: a mismatch means a damaged key. */
        if (n == 64 && !crypto_equal(raw + 32, s.public_key, 32)) {
            rc = ch_error_set(err, CH_ESECRET,
                              "%s: its last 32 bytes are not the public key of its seed", what);
            goto done;
        }
    }
    *out = s;
done:
    crypto_wipe(raw, sizeof raw);
    crypto_wipe(&s, sizeof s);
    return rc;
}

ch_code ch_secret_parse(struct ch_secret *out, const char *text, struct ch_error *err)
{
    if (out == NULL || text == NULL || *text == '\0')
        return ch_error_set(err, CH_ESECRET, "empty secret; expected whsec_ followed by base64");
    if (has_prefix(text, "whsk_"))
        return parse_ed25519(out, text + 5, false, err);
    if (has_prefix(text, "whpk_"))
        return parse_ed25519(out, text + 5, true, err);

    const char *b64 = has_prefix(text, "whsec_") ? text + 6 : text;
    struct ch_secret s = {.kind = CH_KEY_HMAC};
    /* Decode into a buffer larger than the largest secret, so an oversized one is reported as
     * such rather than as bad base64. */
    unsigned char raw[CH_SECRET_MAX_BYTES * 2];
    size_t n = 0;
    size_t len = strlen(b64);
    ch_code rc = CH_OK;
    if (len > B64_ENCODED_LEN(sizeof raw))
        rc = ch_error_set(err, CH_ESECRET, "secret is too long: at most %d bytes are allowed",
                          CH_SECRET_MAX_BYTES);
    else if (!b64_decode(b64, len, raw, sizeof raw, &n))
        rc = ch_error_set(err, CH_ESECRET,
                          "secret is not valid base64 (expected whsec_ followed by base64)");
    else if (n < CH_SECRET_MIN_BYTES || n > CH_SECRET_MAX_BYTES)
        rc = ch_error_set(err, CH_ESECRET,
                          "secret decodes to %zu bytes; Standard Webhooks needs %d to %d", n,
                          CH_SECRET_MIN_BYTES, CH_SECRET_MAX_BYTES);
    if (rc == CH_OK) {
        memcpy(s.key, raw, n);
        s.key_len = n;
        *out = s;
    }
    crypto_wipe(raw, sizeof raw);
    crypto_wipe(&s, sizeof s);
    return rc;
}

ch_code ch_secret_generate(struct ch_secret *out, enum ch_key_kind kind, size_t nbytes,
                           struct ch_error *err)
{
    struct ch_secret s = {.kind = kind};
    if (kind == CH_KEY_HMAC) {
        if (nbytes < CH_SECRET_MIN_BYTES || nbytes > CH_SECRET_MAX_BYTES)
            return ch_error_set(err, CH_EINVAL, "a secret has %d to %d bytes, not %zu",
                                CH_SECRET_MIN_BYTES, CH_SECRET_MAX_BYTES, nbytes);
        s.key_len = nbytes;
    } else if (kind == CH_KEY_ED25519_SECRET) {
        s.key_len = 32;
    } else {
        return ch_error_set(err, CH_EINVAL, "only HMAC secrets and Ed25519 keys can be generated");
    }
    if (!crypto_random(s.key, s.key_len) ||
        (kind == CH_KEY_ED25519_SECRET && !crypto_ed25519_public(s.key, s.public_key))) {
        crypto_wipe(&s, sizeof s);
        return ch_error_set(err, CH_ECRYPTO, "cannot generate a key: the random source failed");
    }
    *out = s;
    crypto_wipe(&s, sizeof s);
    return CH_OK;
}

ch_code ch_secret_format(const struct ch_secret *s, char *buf, size_t cap, struct ch_error *err)
{
    if (cap < CH_SECRET_TEXT_MAX)
        return ch_error_set(err, CH_EINVAL, "buffer for a key must hold %d bytes",
                            CH_SECRET_TEXT_MAX);
    unsigned char raw[64];
    size_t n;
    const char *prefix;
    switch (s->kind) {
    case CH_KEY_HMAC:
        prefix = "whsec_";
        n = s->key_len;
        memcpy(raw, s->key, n);
        break;
    case CH_KEY_ED25519_SECRET:
        prefix = "whsk_";
        n = 64;
        memcpy(raw, s->key, 32);
        memcpy(raw + 32, s->public_key, 32);
        break;
    case CH_KEY_ED25519_PUBLIC:
        prefix = "whpk_";
        n = 32;
        memcpy(raw, s->public_key, 32);
        break;
    default:
        return ch_error_set(err, CH_EINVAL, "no key to format");
    }
    size_t plen = strlen(prefix);
    memcpy(buf, prefix, plen);
    b64_encode(raw, n, buf + plen, cap - plen);
    crypto_wipe(raw, sizeof raw);
    return CH_OK;
}

ch_code ch_secret_public(const struct ch_secret *s, struct ch_secret *out, struct ch_error *err)
{
    if (s->kind != CH_KEY_ED25519_SECRET && s->kind != CH_KEY_ED25519_PUBLIC)
        return ch_error_set(err, CH_EINVAL, "only Ed25519 keys have a public key");
    struct ch_secret p = {.kind = CH_KEY_ED25519_PUBLIC};
    memcpy(p.public_key, s->public_key, sizeof p.public_key);
    *out = p;
    return CH_OK;
}

void ch_secret_wipe(struct ch_secret *s)
{
    if (s != NULL)
        crypto_wipe(s, sizeof *s);
}
