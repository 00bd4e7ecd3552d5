/* OpenSSL 3 behind a small interface: HMAC-SHA256, SHA-256, Ed25519, random bytes. */
#include "lib/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <limits.h>
#include <pthread.h>
#include <string.h>

/* Algorithms are fetched once: a fetch per call (OpenSSL 3's implicit fetch included) took
 * longer than hashing a call record. OpenSSL's fetched objects are safe to share. */
static EVP_MAC *hmac_alg;
static EVP_MD *sha256_alg;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void fetch_algorithms(void)
{
    hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    sha256_alg = EVP_MD_fetch(NULL, "SHA256", NULL);
}

bool crypto_hmac_sha256(const unsigned char *key, size_t key_len, const struct crypto_part *parts,
                        size_t nparts, unsigned char out[CRYPTO_SHA256_LEN])
{
    bool ok = false;
    pthread_once(&fetch_once, fetch_algorithms);
    EVP_MAC_CTX *ctx = hmac_alg ? EVP_MAC_CTX_new(hmac_alg) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (ctx == NULL || !EVP_MAC_init(ctx, key, key_len, params))
        goto done;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].len > 0 && !EVP_MAC_update(ctx, parts[i].data, parts[i].len))
            goto done;
    }
    size_t out_len = 0;
    ok = EVP_MAC_final(ctx, out, &out_len, CRYPTO_SHA256_LEN) && out_len == CRYPTO_SHA256_LEN;
done:
    EVP_MAC_CTX_free(ctx);
    return ok;
}

bool crypto_sha256(const struct crypto_part *parts, size_t nparts,
                   unsigned char out[CRYPTO_SHA256_LEN])
{
    bool ok = false;
    pthread_once(&fetch_once, fetch_algorithms);
    EVP_MD_CTX *ctx = sha256_alg ? EVP_MD_CTX_new() : NULL;
    if (ctx == NULL || !EVP_DigestInit_ex(ctx, sha256_alg, NULL))
        goto done;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].len > 0 && !EVP_DigestUpdate(ctx, parts[i].data, parts[i].len))
            goto done;
    }
    unsigned int out_len = 0;
    ok = EVP_DigestFinal_ex(ctx, out, &out_len) && out_len == CRYPTO_SHA256_LEN;
done:
    EVP_MD_CTX_free(ctx);
    return ok;
}

bool crypto_ed25519_sign(const unsigned char seed[CRYPTO_ED25519_SEED_LEN], const void *msg,
                         size_t len, unsigned char sig[CRYPTO_ED25519_SIG_LEN])
{
    bool ok = false;
    EVP_PKEY *pkey =
        EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, CRYPTO_ED25519_SEED_LEN);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t sig_len = CRYPTO_ED25519_SIG_LEN;
    if (pkey && ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
        EVP_DigestSign(ctx, sig, &sig_len, msg, len) == 1)
        ok = sig_len == CRYPTO_ED25519_SIG_LEN;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return ok;
}

bool crypto_ed25519_verify(const unsigned char pub[CRYPTO_ED25519_PUBLIC_LEN], const void *msg,
                           size_t len, const unsigned char sig[CRYPTO_ED25519_SIG_LEN])
{
    bool ok = false;
    EVP_PKEY *pkey =
        EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, CRYPTO_ED25519_PUBLIC_LEN);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (pkey && ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) == 1)
        ok = EVP_DigestVerify(ctx, sig, CRYPTO_ED25519_SIG_LEN, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return ok;
}

bool crypto_ed25519_public(const unsigned char seed[CRYPTO_ED25519_SEED_LEN],
                           unsigned char pub[CRYPTO_ED25519_PUBLIC_LEN])
{
    EVP_PKEY *pkey =
        EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, CRYPTO_ED25519_SEED_LEN);
    size_t pub_len = CRYPTO_ED25519_PUBLIC_LEN;
    bool ok = pkey && EVP_PKEY_get_raw_public_key(pkey, pub, &pub_len) == 1 &&
              pub_len == CRYPTO_ED25519_PUBLIC_LEN;
    EVP_PKEY_free(pkey);
    return ok;
}

bool crypto_random(void *buf, size_t len)
{
    if (len > INT_MAX)
        return false;
    return RAND_bytes(buf, (int)len) == 1;
}

bool crypto_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void crypto_wipe(void *p, size_t len)
{
    OPENSSL_cleanse(p, len);
}

static const unsigned char seal_magic[4] = {'C', 'H', 'E', '1'};
/* The second form: the associated data is the magic and the caller's context. */
static const unsigned char seal_magic_ad[4] = {'C', 'H', 'E', '2'};

bool crypto_is_sealed(const void *in, size_t len)
{
    return len >= CRYPTO_SEAL_OVERHEAD &&
           (memcmp(in, seal_magic, 4) == 0 || memcmp(in, seal_magic_ad, 4) == 0);
}

bool crypto_is_sealed_bound(const void *in, size_t len)
{
    return len >= CRYPTO_SEAL_OVERHEAD && memcmp(in, seal_magic_ad, 4) == 0;
}

/* AES-256-GCM under key with a random nonce: magic (4 bytes) | nonce (12) | ciphertext | tag
 * (16). The associated data is the magic, then ad (which may be empty), so neither the form nor
 * the place a value was sealed for can change unnoticed. */
static bool seal_form(const unsigned char key[CRYPTO_DATA_KEY_LEN], const unsigned char magic[4],
                      const void *ad, size_t ad_len, const void *in, size_t len, unsigned char *out,
                      size_t cap, size_t *out_len)
{
    if (len > INT_MAX - CRYPTO_SEAL_OVERHEAD || cap < len + CRYPTO_SEAL_OVERHEAD ||
        ad_len > INT_MAX)
        return false;
    unsigned char *nonce = out + 4, *ct = out + 16, *tag = out + 16 + len;
    memcpy(out, magic, 4);
    if (RAND_bytes(nonce, 12) != 1)
        return false;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    bool ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
              EVP_EncryptUpdate(ctx, NULL, &n, magic, 4) == 1 &&
              (ad_len == 0 || EVP_EncryptUpdate(ctx, NULL, &n, ad, (int)ad_len) == 1) &&
              EVP_EncryptUpdate(ctx, ct, &n, in, (int)len) == 1 &&
              EVP_EncryptFinal_ex(ctx, ct + n, &fin) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (ok)
        *out_len = len + CRYPTO_SEAL_OVERHEAD;
    return ok;
}

/* Opens what seal_form() sealed with the same magic and ad; false (out wiped) otherwise. */
static bool open_form(const unsigned char key[CRYPTO_DATA_KEY_LEN], const unsigned char magic[4],
                      const void *ad, size_t ad_len, const void *in, size_t len, unsigned char *out,
                      size_t cap, size_t *out_len)
{
    if (len < CRYPTO_SEAL_OVERHEAD || memcmp(in, magic, 4) != 0 || len > INT_MAX ||
        ad_len > INT_MAX || cap < len - CRYPTO_SEAL_OVERHEAD)
        return false;
    const unsigned char *p = in;
    size_t ct_len = len - CRYPTO_SEAL_OVERHEAD;
    unsigned char tag[16];
    memcpy(tag, p + 16 + ct_len, 16);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    bool ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, p + 4) == 1 &&
              EVP_DecryptUpdate(ctx, NULL, &n, magic, 4) == 1 &&
              (ad_len == 0 || EVP_DecryptUpdate(ctx, NULL, &n, ad, (int)ad_len) == 1) &&
              EVP_DecryptUpdate(ctx, out, &n, p + 16, (int)ct_len) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
              EVP_DecryptFinal_ex(ctx, out + n, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (ok)
        *out_len = ct_len;
    else
        OPENSSL_cleanse(out, ct_len);
    return ok;
}

bool crypto_seal_bound(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *ad, size_t ad_len,
                       const void *in, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
    return seal_form(key, seal_magic_ad, ad, ad_len, in, len, out, cap, out_len);
}

bool crypto_open_bound(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *ad, size_t ad_len,
                       const void *in, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
    return open_form(key, seal_magic_ad, ad, ad_len, in, len, out, cap, out_len);
}

bool crypto_seal(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *in, size_t len,
                 unsigned char *out, size_t cap, size_t *out_len)
{
    return seal_form(key, seal_magic, NULL, 0, in, len, out, cap, out_len);
}

bool crypto_open(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *in, size_t len,
                 unsigned char *out, size_t cap, size_t *out_len)
{
    return open_form(key, seal_magic, NULL, 0, in, len, out, cap, out_len);
}
