/*
 * The C side of the interop test: reads cases from stdin, one per line, makes secrets, signs or
 * verifies each with libcallhook's public API, and answers one line per case, so interop.mjs can
 * hold callhook against the npm Standard Webhooks implementations with one run of this program.
 *
 * Requests are tab-separated; bodies are hex so that any byte passes; <keys> is one or more keys
 * (whsec_, whsk_, whpk_) separated by single spaces:
 *   secret <nbytes>|ed25519                           -> whsec_... | whsk_...
 *   sign   <keys> <msg-id> <timestamp> <hex-body>       -> <webhook-signature> | error <CODE>:
 * <why> verify <keys> <msg-id> <timestamp> <signature> <hex-body>   -> ok | fail <CODE>: <why>
 * verify checks the timestamp against the system clock, as the npm libraries do. A malformed
 * request is a bug in the test: it is reported on stderr and the program exits with status 2.
 */
#include <callhook/error.h>
#include <callhook/signature.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest request line, newline excluded: room for a body of almost 512 KiB in hex. */
#define LINE_MAX_BYTES (1024 * 1024)
#define MAX_FIELDS     6
#define MAX_KEYS       8

enum line_status { LINE_OK, LINE_EOF, LINE_TOO_LONG, LINE_NUL, LINE_EIO };

/* Reads one line, without its newline, into buf (cap bytes, NUL included). A last line without
 * a newline counts; the rest of an over-long line is not read. */
static enum line_status read_line(FILE *in, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    int c;
    while ((c = getc(in)) != EOF && c != '\n') {
        if (c == '\0')
            return LINE_NUL;
        if (n + 1 >= cap)
            return LINE_TOO_LONG;
        buf[n++] = (char)c;
    }
    if (c == EOF && ferror(in))
        return LINE_EIO;
    if (c == EOF && n == 0)
        return LINE_EOF;
    buf[n] = '\0';
    *len = n;
    return LINE_OK;
}

/* Splits line in place at every tab, keeping empty fields. Returns the field count, or max + 1
 * when there are more fields than max. */
static size_t split_fields(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    for (;;) {
        if (n == max)
            return max + 1;
        fields[n++] = p;
        char *tab = strchr(p, '\t');
        if (tab == NULL)
            return n;
        *tab = '\0';
        p = tab + 1;
    }
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes hex into out (cap bytes). Returns false on an odd length or a non-hex character. */
static bool hex_decode(const char *hex, unsigned char *out, size_t cap, size_t *out_len)
{
    size_t n = strlen(hex);
    if (n % 2 != 0 || n / 2 > cap)
        return false;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    *out_len = n / 2;
    return true;
}

/* A sign timestamp or a secret size: decimal digits only, as the test writes them. */
static bool parse_decimal(const char *s, long long *out)
{
    if (*s == '\0' || strlen(s) > 18)
        return false;
    long long v = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return true;
}

/* Everything one request needs, allocated once for the whole run. */
struct peer {
    char *line;          /* LINE_MAX_BYTES + 1 */
    unsigned char *body; /* LINE_MAX_BYTES / 2 */
    size_t lineno;
    const char *why; /* set when a request is malformed */
};

/* Parses the space-separated key list in place into keys. Returns the count, 0 with *rc and err
 * set when a key does not parse, or 0 with peer->why set when the list itself is malformed. */
static size_t parse_keys(struct peer *p, char *list, struct ch_secret keys[MAX_KEYS], ch_code *rc,
                         struct ch_error *err)
{
    size_t n = 0;
    char *key = list;
    for (;;) {
        char *space = strchr(key, ' ');
        if (space != NULL)
            *space = '\0';
        if (*key == '\0' || n == MAX_KEYS) {
            p->why = *key == '\0' ? "empty key in the key list" : "more than 8 keys";
            return 0;
        }
        *rc = ch_secret_parse(&keys[n], key, err);
        if (*rc != CH_OK)
            return 0;
        n++;
        if (space == NULL)
            return n;
        key = space + 1;
    }
}

static void wipe_keys(struct ch_secret keys[MAX_KEYS])
{
    for (size_t i = 0; i < MAX_KEYS; i++)
        ch_secret_wipe(&keys[i]);
}

static void do_secret(struct peer *p, char **f, size_t nf)
{
    if (nf != 2) {
        p->why = "secret takes 1 field";
        return;
    }
    struct ch_secret s;
    struct ch_error err = {0};
    ch_code rc;
    if (strcmp(f[1], "ed25519") == 0) {
        rc = ch_secret_generate(&s, CH_KEY_ED25519_SECRET, 0, &err);
    } else {
        long long nbytes;
        if (!parse_decimal(f[1], &nbytes) || nbytes > 1024) {
            p->why = "secret size is not a small number";
            return;
        }
        rc = ch_secret_generate(&s, CH_KEY_HMAC, (size_t)nbytes, &err);
    }
    char text[CH_SECRET_TEXT_MAX];
    if (rc == CH_OK)
        rc = ch_secret_format(&s, text, sizeof text, &err);
    if (rc == CH_OK)
        printf("%s\n", text);
    else
        printf("error %s: %s\n", ch_code_name(rc), err.message);
    ch_secret_wipe(&s);
}

static void do_sign(struct peer *p, char **f, size_t nf)
{
    long long ts;
    size_t len;
    if (nf != 5) {
        p->why = "sign takes 4 fields";
        return;
    }
    if (!parse_decimal(f[3], &ts)) {
        p->why = "sign timestamp is not decimal digits";
        return;
    }
    if (!hex_decode(f[4], p->body, LINE_MAX_BYTES / 2, &len)) {
        p->why = "body is not hex";
        return;
    }
    struct ch_secret keys[MAX_KEYS] = {0};
    struct ch_error err = {0};
    ch_code rc = CH_OK;
    size_t nkeys = parse_keys(p, f[1], keys, &rc, &err);
    char sig[MAX_KEYS * CH_SIGNATURE_ENTRY_MAX];
    if (nkeys > 0)
        rc = ch_sign(keys, nkeys, f[2], ts, p->body, len, sig, sizeof sig, &err);
    if (p->why == NULL && rc == CH_OK)
        printf("%s\n", sig);
    else if (p->why == NULL)
        printf("error %s: %s\n", ch_code_name(rc), err.message);
    wipe_keys(keys);
}

static void do_verify(struct peer *p, char **f, size_t nf)
{
    size_t len;
    if (nf != 6) {
        p->why = "verify takes 5 fields";
        return;
    }
    if (!hex_decode(f[5], p->body, LINE_MAX_BYTES / 2, &len)) {
        p->why = "body is not hex";
        return;
    }
    struct ch_secret keys[MAX_KEYS] = {0};
    struct ch_error err = {0};
    ch_code rc = CH_OK;
    size_t nkeys = parse_keys(p, f[1], keys, &rc, &err);
    if (nkeys > 0) {
        /* The system clock and the default window: what the npm libraries check against. */
        struct ch_verifier v = {.keys = keys, .nkeys = nkeys};
        rc = ch_verify(&v, f[2], f[3], f[4], p->body, len, &err);
    }
    if (p->why == NULL && rc == CH_OK)
        printf("ok\n");
    else if (p->why == NULL)
        printf("fail %s: %s\n", ch_code_name(rc), err.message);
    wipe_keys(keys);
}

static void handle_line(struct peer *p)
{
    char *f[MAX_FIELDS];
    size_t nf = split_fields(p->line, f, MAX_FIELDS);
    if (nf > MAX_FIELDS)
        p->why = "too many fields";
    else if (strcmp(f[0], "secret") == 0)
        do_secret(p, f, nf);
    else if (strcmp(f[0], "sign") == 0)
        do_sign(p, f, nf);
    else if (strcmp(f[0], "verify") == 0)
        do_verify(p, f, nf);
    else
        p->why = "unknown command (expected secret, sign or verify)";
}

static int run(struct peer *p)
{
    for (;;) {
        size_t len = 0;
        enum line_status st = read_line(stdin, p->line, LINE_MAX_BYTES + 1, &len);
        if (st == LINE_EOF)
            return 0;
        p->lineno++;
        if (st == LINE_TOO_LONG)
            p->why = "line longer than 1 MiB";
        else if (st == LINE_NUL)
            p->why = "NUL byte in the line";
        else if (st == LINE_EIO)
            p->why = "cannot read standard input";
        else
            handle_line(p);
        if (p->why != NULL) {
            fprintf(stderr, "interop_peer: line %zu: %s\n", p->lineno, p->why);
            return 2;
        }
    }
}

int main(void)
{
    struct peer p = {.line = malloc(LINE_MAX_BYTES + 1), .body = malloc(LINE_MAX_BYTES / 2)};
    if (p.line == NULL || p.body == NULL) {
        fprintf(stderr, "interop_peer: out of memory\n");
        free(p.line);
        free(p.body);
        return 2;
    }
    int status = run(&p);
    free(p.line);
    free(p.body);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "interop_peer: cannot write standard output\n");
        return 2;
    }
    return status;
}
