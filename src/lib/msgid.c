/* Stable message ids: SHA-256 of the event's identity, written in base62. */
#include <callhook/callhook.h>

#include "lib/crypto.h"

#include <stdint.h>
#include <string.h>

/* 160 bits need 27 base62 digits (62^27 > 2^160). */
#define ID_BYTES  20
#define ID_DIGITS 27

static const char digits62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

ch_code ch_msgid(const char *voice_app_id, const char *event, const char *dedupe_key,
                 char out[CH_MSGID_SIZE], struct ch_error *err)
{
    if (voice_app_id == NULL || event == NULL || dedupe_key == NULL || out == NULL)
        return ch_error_set(err, CH_EINVAL, "a message id needs a voice app, an event and a key");

    /* Domain tag, then each field as an 8-byte big-endian length and its bytes. */
    const char *fields[] = {voice_app_id, event, dedupe_key};
    unsigned char lens[3][8];
    struct crypto_part parts[1 + 3 * 2] = {{"callhook-msgid-v1", 17}};
    for (int i = 0; i < 3; i++) {
        uint64_t n = strlen(fields[i]);
        for (int b = 0; b < 8; b++)
            lens[i][b] = (unsigned char)(n >> (56 - 8 * b));
        parts[1 + 2 * i] = (struct crypto_part){lens[i], 8};
        parts[2 + 2 * i] = (struct crypto_part){fields[i], (size_t)n};
    }
    unsigned char digest[CRYPTO_SHA256_LEN];
    if (!crypto_sha256(parts, 7, digest))
        return ch_error_set(err, CH_ECRYPTO, "SHA-256 failed");

    /* Long division of the 20-byte number by 62, least significant digit first. */
    unsigned char num[ID_BYTES];
    memcpy(num, digest, ID_BYTES);
    memcpy(out, "msg_", 4);
    for (int d = ID_DIGITS - 1; d >= 0; d--) {
        unsigned rem = 0;
        for (int i = 0; i < ID_BYTES; i++) {
            unsigned acc = (rem << 8) | num[i];
            num[i] = (unsigned char)(acc / 62);
            rem = acc % 62;
        }
        out[4 + d] = digits62[rem];
    }
    out[CH_MSGID_LEN] = '\0';
    return CH_OK;
}
