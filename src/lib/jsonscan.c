/*
 * The JSON checker behind ch_record_parse(): one pass over the bytes, no tree, no allocation for
 * a usual record. Every rule follows jansson 2.14's parser (load.c, utf.c, strconv.c) with the
 * flags record.c used, but one quirk: jansson skips a NUL byte right after a number or a literal,
 * which would let a body that is not JSON reach the handlers; here a NUL outside a string is
 * refused like any other stray byte. tests/fuzz/fuzz_jsonscan.c compares the two.
 */
#include "lib/jsonscan.h"

#include "lib/crypto.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* jansson's JSON_PARSER_MAX_DEPTH: a value nested deeper than this is refused. */
#define MAX_DEPTH 2048

/* Keys remembered without allocating: enough for a record of a hundred members. Until the table
 * outgrows them keys are hashed under a fixed key, so the worst chosen collisions can cost is a
 * few thousand comparisons; from the first growth on, under a random key drawn for that call,
 * so that nobody can choose keys that collide, and a usual record draws no random bytes. */
#define INLINE_SLOTS 256

/* Numbers this short are converted on the stack. */
#define NUMBER_INLINE 128

/* A key seen in an object (object 0 marks a free slot). */
struct key_slot {
    const char *key;
    size_t len;
    uint32_t hash;
    uint32_t object;
};

/* Room for keys that had escapes, decoded; chunks never move, so keys stay put. */
struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
};

/* An open container. */
struct level {
    uint32_t object;  /* an object's serial, 0 for an array */
    uint32_t members; /* keys read so far in that object */
};

struct scan {
    const unsigned char *p, *end;
    jsonscan_member_cb cb;
    void *ctx;
    struct key_slot *slots; /* open addressing, nslots a power of two */
    size_t nslots, used;
    uint64_t hash_key[2]; /* SipHash key: zero until the table first grows, then random */
    bool seeded;
    struct chunk *chunks;
    bool nomem;
    bool too_many_members;
    uint32_t objects; /* serial of the last object opened */
    struct level stack[MAX_DEPTH];
    struct key_slot inline_slots[INLINE_SLOTS];
};

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_space(struct scan *s)
{
    while (s->p < s->end && is_space(*s->p))
        s->p++;
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The value of the 4 hex digits after "\u" at p (p points at the backslash), or -1. */
static int32_t unicode_escape(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    int32_t v = 0;
    for (int i = 2; i < 6; i++) {
        int d = hex_digit(p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0: jansson's
 * utf8_check_first() and utf8_check_full(). */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned char u = p[0];
    size_t size;
    int32_t value;
    if (u >= 0xC2 && u <= 0xDF) {
        size = 2;
        value = u & 0x1F;
    } else if (u >= 0xE0 && u <= 0xEF) {
        size = 3;
        value = u & 0xF;
    } else if (u >= 0xF0 && u <= 0xF4) {
        size = 4;
        value = u & 0x7;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < size)
        return 0;
    for (size_t i = 1; i < size; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
        value = (value << 6) + (p[i] & 0x3F);
    }
    if (value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF))
        return 0;
    if ((size == 3 && value < 0x800) || (size == 4 && value < 0x10000))
        return 0;
    return size;
}

/* Bytes that stand for themselves inside a string: ASCII from the space up, but the quote and
 * the backslash (the rest, bytes 0x80 and up, are 0). */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* Reads a string whose opening quote is at s->p; leaves s->p after the closing quote. Refuses
 * what jansson refuses: control characters, bad escapes, lone surrogates, \u0000, bad UTF-8. */
static bool scan_string(struct scan *s, const char **raw, size_t *raw_len, bool *escaped)
{
    const unsigned char *p = s->p + 1, *end = s->end;
    *escaped = false;
    *raw = (const char *)p;
    for (;;) {
        /* The common run of plain ASCII. */
        while (p < end && plain[*p])
            p++;
        if (p >= end)
            return false;
        unsigned char c = *p;
        if (c == '"')
            break;
        if (c < 0x20)
            return false;
        if (c >= 0x80) {
            size_t n = utf8_sequence(p, end);
            if (n == 0)
                return false;
            p += n;
            continue;
        }
        /* A backslash. */
        *escaped = true;
        if (end - p < 2)
            return false;
        c = p[1];
        if (c != 'u') {
            if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
                c != 't')
                return false;
            p += 2;
            continue;
        }
        int32_t v = unicode_escape(p, end);
        if (v <= 0 || (v >= 0xDC00 && v <= 0xDFFF))
            return false; /* bad hex, \u0000, or a low surrogate alone */
        p += 6;
        if (v >= 0xD800 && v <= 0xDBFF) {
            int32_t low = unicode_escape(p, end);
            if (low < 0xDC00 || low > 0xDFFF)
                return false;
            p += 6;
        }
    }
    *raw_len = (size_t)((const char *)p - *raw);
    s->p = p + 1;
    return true;
}

static size_t utf8_encode(int32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 + (cp >> 6));
        out[1] = (char)(0x80 + (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 + (cp >> 12));
        out[1] = (char)(0x80 + ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 + (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 + (cp >> 18));
    out[1] = (char)(0x80 + ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 + ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 + (cp & 0x3F));
    return 4;
}

size_t jsonscan_unescape(const char *raw, size_t raw_len, char *dst)
{
    const unsigned char *p = (const unsigned char *)raw, *end = p + raw_len;
    size_t o = 0;
    char tmp[4];
    while (p < end) {
        if (*p != '\\') {
            if (dst)
                dst[o] = (char)*p;
            o++;
            p++;
            continue;
        }
        unsigned char c = p[1];
        if (c == 'u') {
            int32_t v = unicode_escape(p, end);
            p += 6;
            if (v >= 0xD800 && v <= 0xDBFF) {
                v = ((v - 0xD800) << 10) + (unicode_escape(p, end) - 0xDC00) + 0x10000;
                p += 6;
            }
            size_t n = utf8_encode(v, dst ? dst + o : tmp);
            o += n;
            continue;
        }
        char out = (char)c;
        if (c == 'b')
            out = '\b';
        else if (c == 'f')
            out = '\f';
        else if (c == 'n')
            out = '\n';
        else if (c == 'r')
            out = '\r';
        else if (c == 't')
            out = '\t';
        if (dst)
            dst[o] = out;
        o++;
        p += 2;
    }
    return o;
}

/* strtod as jansson's jsonp_strtod() calls it: the locale's decimal point, and a result of
 * +-HUGE_VAL with ERANGE is an overflow. Returns false on overflow or out of memory. */
static bool convert_number(const char *raw, size_t len, double *out, bool *nomem)
{
    char local[NUMBER_INLINE];
    char *buf = len < sizeof local ? local : malloc(len + 1);
    if (buf == NULL) {
        *nomem = true;
        return false;
    }
    memcpy(buf, raw, len);
    buf[len] = '\0';
    const char *point = localeconv()->decimal_point;
    if (*point != '.') {
        char *dot = strchr(buf, '.');
        if (dot)
            *dot = *point;
    }
    errno = 0;
    double v = strtod(buf, NULL);
    bool overflow = (v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE;
    if (buf != local)
        free(buf);
    *out = v;
    return !overflow;
}

double jsonscan_number(const char *raw, size_t raw_len)
{
    double v = 0;
    bool nomem = false;
    convert_number(raw, raw_len, &v, &nomem);
    return v;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Reads a number at s->p with jansson's grammar, and refuses one past a double's range. */
static bool scan_number(struct scan *s)
{
    const unsigned char *start = s->p, *p = s->p, *end = s->end;
    if (*p == '-')
        p++;
    if (p >= end)
        return false;
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p))
            return false;
    } else if (is_digit(*p)) {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return false;
    }
    size_t int_digits = (size_t)(p - start);
    bool exponent = false;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        exponent = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || !is_digit(*p))
            return false;
        while (p < end && is_digit(*p))
            p++;
    }
    s->p = p;
    /* Without an exponent, up to 308 digits stay below DBL_MAX: no need to convert. */
    if (!exponent && int_digits <= 308)
        return true;
    double v;
    return convert_number((const char *)start, (size_t)(p - start), &v, &s->nomem);
}

static bool scan_literal(struct scan *s)
{
    /* jansson reads the whole run of letters, then compares it. */
    const unsigned char *p = s->p;
    while (p < s->end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        p++;
    size_t n = (size_t)(p - s->p);
    const char *w = (const char *)s->p;
    bool ok = (n == 4 && memcmp(w, "true", 4) == 0) || (n == 5 && memcmp(w, "false", 5) == 0) ||
              (n == 4 && memcmp(w, "null", 4) == 0);
    s->p = p;
    return ok;
}

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotl(v[0], 32);
    v[2] += v[3];
    v[3] = rotl(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = rotl(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = rotl(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotl(v[2], 32);
}

/* SipHash-1-3 (one round per word, three to finish, as Python's and Rust's hash tables use) of
 * len bytes under the 128-bit key k0, k1. */
static uint64_t siphash13(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v[4] = {0x736f6d6570736575ULL ^ k0, 0x646f72616e646f6dULL ^ k1,
                     0x6c7967656e657261ULL ^ k0, 0x7465646279746573ULL ^ k1};
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int b = 7; b >= 0; b--)
            m = (m << 8) | in[i + (size_t)b];
        v[3] ^= m;
        sip_round(v);
        v[0] ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t b = len % 8; b > 0; b--)
        last |= (uint64_t)in[whole + b - 1] << (8 * (b - 1));
    v[3] ^= last;
    sip_round(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sip_round(v);
    sip_round(v);
    sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* The same key in different objects hashes apart: the object's serial is part of the hash key. */
static uint32_t key_hash(const struct scan *s, const char *key, size_t len, uint32_t object)
{
    uint64_t h =
        siphash13(s->hash_key[0], s->hash_key[1] ^ object, (const unsigned char *)key, len);
    return (uint32_t)(h ^ (h >> 32));
}

/* Doubles the table; the first time, draws the random hash key and hashes every key again. */
static bool grow_slots(struct scan *s)
{
    size_t n = s->nslots * 2;
    struct key_slot *more = calloc(n, sizeof *more);
    if (more == NULL)
        return false;
    bool reseed = !s->seeded;
    /* Without random bytes the table cannot be kept safe from chosen keys: report it as a
     * resource failure (ch_record_parse() then asks jansson, whose tables are seeded). */
    if (reseed && !crypto_random(s->hash_key, sizeof s->hash_key)) {
        free(more);
        return false;
    }
    s->seeded = true;
    for (size_t i = 0; i < s->nslots; i++) {
        struct key_slot *k = &s->slots[i];
        if (k->object == 0)
            continue;
        if (reseed)
            k->hash = key_hash(s, k->key, k->len, k->object);
        size_t j = k->hash & (n - 1);
        while (more[j].object != 0)
            j = (j + 1) & (n - 1);
        more[j] = *k;
    }
    if (s->slots != s->inline_slots)
        free(s->slots);
    s->slots = more;
    s->nslots = n;
    return true;
}

/* Remembers key in object; false for a duplicate (or out of memory, s->nomem set). */
static bool add_key(struct scan *s, uint32_t object, const char *key, size_t len)
{
    if ((s->used + 1) * 2 > s->nslots && !grow_slots(s)) {
        s->nomem = true;
        return false;
    }
    uint32_t h = key_hash(s, key, len, object);
    size_t j = h & (s->nslots - 1);
    for (; s->slots[j].object != 0; j = (j + 1) & (s->nslots - 1)) {
        const struct key_slot *k = &s->slots[j];
        if (k->hash == h && k->object == object && k->len == len && memcmp(k->key, key, len) == 0)
            return false;
    }
    s->slots[j] = (struct key_slot){.key = key, .len = len, .hash = h, .object = object};
    s->used++;
    return true;
}

/* Room for len decoded bytes that stays put until the scan ends. */
static char *keep(struct scan *s, size_t len)
{
    struct chunk *c = s->chunks;
    if (c == NULL || c->cap - c->used < len) {
        size_t cap = len > 4096 ? len : 4096;
        c = malloc(sizeof *c + cap);
        if (c == NULL) {
            s->nomem = true;
            return NULL;
        }
        c->next = s->chunks;
        c->used = 0;
        c->cap = cap;
        s->chunks = c;
    }
    char *at = c->data + c->used;
    c->used += len;
    return at;
}

/* Reads a key of the object open at level (s->p at its quote) and the colon after it; false if
 * either is wrong, the key repeats one of the same object, or the object has too many. */
static bool scan_key(struct scan *s, struct level *level, const char **key, size_t *len)
{
    const char *raw;
    size_t raw_len;
    bool escaped;
    if (level->members == JSONSCAN_MAX_MEMBERS) {
        s->too_many_members = true;
        return false;
    }
    level->members++;
    if (s->p >= s->end || *s->p != '"' || !scan_string(s, &raw, &raw_len, &escaped))
        return false;
    *key = raw;
    *len = raw_len;
    if (escaped) {
        char *decoded = keep(s, raw_len);
        if (decoded == NULL)
            return false;
        *len = jsonscan_unescape(raw, raw_len, decoded);
        *key = decoded;
    }
    if (!add_key(s, level->object, *key, *len))
        return false;
    skip_space(s);
    if (s->p >= s->end || *s->p != ':')
        return false;
    s->p++;
    return true;
}

/* Why scan_key() failed. */
static enum jsonscan_result key_failure(const struct scan *s)
{
    if (s->nomem)
        return JSONSCAN_NOMEM;
    return s->too_many_members ? JSONSCAN_TOO_MANY_MEMBERS : JSONSCAN_INVALID;
}

/* The whole document; the state machine keeps nesting on s->stack instead of the C stack. */
static enum jsonscan_result scan_document(struct scan *s)
{
    size_t depth = 0; /* open containers */
    bool top_object = false;
    const char *member = NULL; /* the top-level key whose value comes next */
    size_t member_len = 0;
    for (;;) {
        /* A value. */
        skip_space(s);
        if (s->p >= s->end || depth + 1 > MAX_DEPTH)
            return JSONSCAN_INVALID;
        struct jsonscan_value v = {.type = JSONSCAN_OTHER};
        const unsigned char *start = s->p;
        unsigned char c = *s->p;
        bool opened = false;
        if (c == '{' || c == '[') {
            s->p++;
            skip_space(s);
            if (depth == 0 && c == '{')
                top_object = true;
            if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
                s->p++;
            } else {
                s->stack[depth++] = (struct level){.object = c == '{' ? ++s->objects : 0};
                opened = true;
            }
        } else if (c == '"') {
            v.type = JSONSCAN_STRING;
            if (!scan_string(s, &v.raw, &v.raw_len, &v.escaped))
                return JSONSCAN_INVALID;
        } else if (c == '-' || is_digit(c)) {
            if (!scan_number(s))
                return s->nomem ? JSONSCAN_NOMEM : JSONSCAN_INVALID;
            v.type = JSONSCAN_NUMBER;
            v.raw = (const char *)start;
            v.raw_len = (size_t)(s->p - start);
        } else if (!scan_literal(s)) {
            return JSONSCAN_INVALID;
        }
        if (member != NULL && s->cb)
            s->cb(s->ctx, member, member_len, &v);
        member = NULL;
        if (opened && s->stack[depth - 1].object != 0) {
            /* A new object: its first key. */
            if (!scan_key(s, &s->stack[depth - 1], &member, &member_len))
                return key_failure(s);
            if (depth != 1)
                member = NULL;
            continue;
        }
        if (opened)
            continue; /* a new array: its first value */
        /* After a value: a comma, or the end of containers, or of the document. */
        for (;;) {
            skip_space(s);
            if (depth == 0) {
                if (s->p != s->end)
                    return JSONSCAN_INVALID;
                return top_object ? JSONSCAN_OBJECT : JSONSCAN_NOT_OBJECT;
            }
            if (s->p >= s->end)
                return JSONSCAN_INVALID;
            uint32_t object = s->stack[depth - 1].object;
            c = *s->p++;
            if (c == ',') {
                if (object != 0) {
                    skip_space(s);
                    if (!scan_key(s, &s->stack[depth - 1], &member, &member_len))
                        return key_failure(s);
                    if (depth != 1)
                        member = NULL;
                }
                break;
            }
            if (c != (object != 0 ? '}' : ']'))
                return JSONSCAN_INVALID;
            depth--;
        }
    }
}

enum jsonscan_result jsonscan_run(const char *buf, size_t len, jsonscan_member_cb cb, void *ctx)
{
    struct scan *s = malloc(sizeof *s);
    if (s == NULL)
        return JSONSCAN_NOMEM;
    s->p = (const unsigned char *)buf;
    s->end = s->p + len;
    s->cb = cb;
    s->ctx = ctx;
    s->slots = s->inline_slots;
    s->nslots = INLINE_SLOTS;
    s->used = 0;
    s->hash_key[0] = s->hash_key[1] = 0;
    s->seeded = false;
    s->chunks = NULL;
    s->nomem = false;
    s->too_many_members = false;
    s->objects = 0;
    memset(s->inline_slots, 0, sizeof s->inline_slots);
    enum jsonscan_result r = scan_document(s);
    if (s->slots != s->inline_slots)
        free(s->slots);
    while (s->chunks) {
        struct chunk *next = s->chunks->next;
        free(s->chunks);
        s->chunks = next;
    }
    free(s);
    return r;
}
