/* Standard base64 (RFC 4648, "+/" alphabet): what Standard Webhooks uses for secrets and
 * signatures. Decoding is strict about the alphabet and lenient only about missing padding.
 * And hex, for key hashes and ids. */
#ifndef CALLHOOK_UTIL_BASE64_H
#define CALLHOOK_UTIL_BASE64_H

#include <stdbool.h>
#include <stddef.h>

/* Characters needed to encode n bytes, padding included, NUL excluded. */
#define B64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)

/* Encodes len bytes into out, NUL-terminated. Returns the characters written (NUL excluded), or
 * 0 when cap is below B64_ENCODED_LEN(len) + 1. */
size_t b64_encode(const void *in, size_t len, char *out, size_t cap);

/* Decodes len characters (padded or not) into out (cap bytes). Returns false, writing nothing
 * meaningful, on a character outside the alphabet, misplaced or wrong padding, non-zero trailing
 * bits, a length no base64 can have, or output over cap. */
bool b64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len);

/* Lower-case hex of len bytes into out, which holds 2 * len + 1 (NUL-terminated). */
void hex_encode(const void *in, size_t len, char *out);

#endif
