/* The cryptography libcallhook needs, on OpenSSL 3: the only module that includes OpenSSL.
 * Every function returns false on failure (OpenSSL out of memory or misconfigured), never aborts.
 */
#ifndef CALLHOOK_LIB_CRYPTO_H
#define CALLHOOK_LIB_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#define CRYPTO_SHA256_LEN         32
#define CRYPTO_ED25519_SEED_LEN   32
#define CRYPTO_ED25519_PUBLIC_LEN 32
#define CRYPTO_ED25519_SIG_LEN    64

/* One piece of a message made of several, so nothing has to be copied to be joined. */
struct crypto_part {
    const void *data;
    size_t len;
};

bool crypto_hmac_sha256(const unsigned char *key, size_t key_len, const struct crypto_part *parts,
                        size_t nparts, unsigned char out[CRYPTO_SHA256_LEN]);

bool crypto_sha256(const struct crypto_part *parts, size_t nparts,
                   unsigned char out[CRYPTO_SHA256_LEN]);

/* Ed25519 signs a single contiguous message (it hashes the message twice). */
bool crypto_ed25519_sign(const unsigned char seed[CRYPTO_ED25519_SEED_LEN], const void *msg,
                         size_t len, unsigned char sig[CRYPTO_ED25519_SIG_LEN]);
bool crypto_ed25519_verify(const unsigned char pub[CRYPTO_ED25519_PUBLIC_LEN], const void *msg,
                           size_t len, const unsigned char sig[CRYPTO_ED25519_SIG_LEN]);
bool crypto_ed25519_public(const unsigned char seed[CRYPTO_ED25519_SEED_LEN],
                           unsigned char pub[CRYPTO_ED25519_PUBLIC_LEN]);

/* AES-256-GCM for data at rest: "CHE1" + 12-byte random nonce + ciphertext + 16-byte tag. */
#define CRYPTO_SEAL_OVERHEAD (4 + 12 + 16)
#define CRYPTO_DATA_KEY_LEN  32

/* Encrypts len bytes into out (cap >= len + CRYPTO_SEAL_OVERHEAD); *out_len gets the size. */
bool crypto_seal(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *in, size_t len,
                 unsigned char *out, size_t cap, size_t *out_len);

/* Decrypts and authenticates what crypto_seal wrote; false when it was changed or the key is
 * wrong. out needs len - CRYPTO_SEAL_OVERHEAD bytes. */
bool crypto_open(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *in, size_t len,
                 unsigned char *out, size_t cap, size_t *out_len);

/* True when data starts like something crypto_seal or crypto_seal_bound wrote. */
bool crypto_is_sealed(const void *in, size_t len);

/* The same bound to a context (where the value lives: its table, row and column), which is
 * authenticated with it: "CHE2" + nonce + ciphertext + tag. A value moved to another place
 * (another row's secret, another message's record) does not open there. */
bool crypto_seal_bound(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *ad, size_t ad_len,
                       const void *in, size_t len, unsigned char *out, size_t cap, size_t *out_len);
/* Opens only what crypto_seal_bound wrote for the same context. */
bool crypto_open_bound(const unsigned char key[CRYPTO_DATA_KEY_LEN], const void *ad, size_t ad_len,
                       const void *in, size_t len, unsigned char *out, size_t cap, size_t *out_len);
/* True when data starts like something crypto_seal_bound wrote. */
bool crypto_is_sealed_bound(const void *in, size_t len);

/* Fills buf with len bytes from OpenSSL's CSPRNG (seeded from the OS). */
bool crypto_random(void *buf, size_t len);

/* Compares in time that depends only on len. */
bool crypto_equal(const void *a, const void *b, size_t len);

/* Overwrites memory in a way the compiler cannot drop. */
void crypto_wipe(void *p, size_t len);

#endif
