/*
 * Escaping of sender-controlled text before it reaches a handler's environment, a terminal or
 * a JSON-lines file: the front checked that a body is JSON, not that its bytes are harmless.
 */
#include "receive/escape.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The length of the UTF-8 sequence at p (n bytes left), 0 when it is not one: overlong forms,
 * surrogates and code points past U+10FFFF are not. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef)
        need = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        need = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (n < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    return need;
}

/* Appends piece (k bytes) to out at *o if it fits whole; *o counts it either way. */
static void put(char *out, size_t cap, size_t *o, const char *piece, size_t k)
{
    if (cap > 0 && *o + k < cap)
        memcpy(out + *o, piece, k);
    *o += k;
}

/* Appends a \u00HH (json) or \xHH escape of byte b. */
static void put_escape(char *out, size_t cap, size_t *o, unsigned b, bool json)
{
    char e[8];
    int k = snprintf(e, sizeof e, json ? "\\u%04x" : "\\x%02x", b);
    put(out, cap, o, e, (size_t)k);
}

size_t text_escape(const char *s, size_t len, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, done = 0;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_len(p + i, len - i);
        if (k == 0 || p[i] < 0x20 || p[i] == 0x7f) {
            put_escape(out, cap, &o, p[i], false);
            k = 1;
        } else if (k == 2 && p[i] == 0xc2 && p[i + 1] <= 0x9f) {
            put_escape(out, cap, &o, p[i + 1], true); /* C1: U+0080-U+009F */
        } else {
            put(out, cap, &o, (const char *)p + i, k);
        }
        i += k;
        if (cap > 0 && o < cap)
            done = o; /* the escaped text that fits whole */
    }
    if (cap > 0)
        out[o < cap ? o : done] = '\0';
    return o;
}

size_t json_text_clean(const char *s, size_t len, bool for_terminal, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    bool in_string = false;
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (!in_string) {
            bool keep = c >= 0x20 && c < 0x7f;
            if (for_terminal && (c == '\n' || c == '\t'))
                keep = true;
            put(out, cap, &o, keep ? (const char *)p + i : " ", 1);
            in_string = c == '"';
            i++;
            continue;
        }
        if (c == '"') {
            in_string = false;
            put(out, cap, &o, "\"", 1);
            i++;
            continue;
        }
        if (c == '\\' && i + 1 < len && p[i + 1] >= 0x20 && p[i + 1] < 0x7f) {
            put(out, cap, &o, (const char *)p + i, 2); /* an escape: \" does not end it */
            i += 2;
            continue;
        }
        size_t k = utf8_len(p + i, len - i);
        if (k == 0) {
            put(out, cap, &o, "\\ufffd", 6);
            k = 1;
        } else if (c < 0x20 || (for_terminal && c == 0x7f)) {
            put_escape(out, cap, &o, c, true);
        } else if (for_terminal && k == 2 && c == 0xc2 && p[i + 1] <= 0x9f) {
            put_escape(out, cap, &o, p[i + 1], true);
        } else {
            put(out, cap, &o, (const char *)p + i, k);
        }
        i += k;
    }
    return o;
}
