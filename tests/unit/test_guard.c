/* The SSRF guard's decision on resolved addresses, checked without connecting anywhere: every
 * address here is only parsed (inet_pton, getaddrinfo with AI_NUMERICHOST) and classified. One
 * row per range that docs/SECURITY.md lists, and a check that the document lists exactly these. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/guard.h"

/* Resolves text numerically only (no DNS), the way inet_aton reads "127.1" and "0x7f000001". */
static bool internal(const char *text)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
    if (getaddrinfo(text, NULL, &hints, &res) != 0)
        fail_msg("'%s' does not parse as an address", text);
    bool r = guard_is_internal(res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return r;
}

static bool internal6(const unsigned char a[16])
{
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    memcpy(in6.sin6_addr.s6_addr, a, 16);
    return guard_is_internal((const struct sockaddr *)&in6, sizeof in6);
}

/* A refused range: its first and last address, one inside, and its neighbours just below and
 * above, which are allowed (NULL where the neighbour lies in another refused range or does not
 * exist). */
struct range {
    const char *cidr, *first, *last, *inside, *below, *above;
};

static const struct range v4_ranges[] = {
    {"0.0.0.0/8", "0.0.0.0", "0.255.255.255", "0.1.2.3", NULL, "1.0.0.0"},
    {"10.0.0.0/8", "10.0.0.0", "10.255.255.255", "10.1.2.3", "9.255.255.255", "11.0.0.0"},
    {"100.64.0.0/10", "100.64.0.0", "100.127.255.255", "100.100.1.1", "100.63.255.255",
     "100.128.0.0"},
    {"127.0.0.0/8", "127.0.0.0", "127.255.255.255", "127.0.0.1", "126.255.255.255", "128.0.0.0"},
    {"169.254.0.0/16", "169.254.0.0", "169.254.255.255", "169.254.169.254", "169.253.255.255",
     "169.255.0.0"},
    {"172.16.0.0/12", "172.16.0.0", "172.31.255.255", "172.20.1.1", "172.15.255.255", "172.32.0.0"},
    {"192.0.0.0/24", "192.0.0.0", "192.0.0.255", "192.0.0.9", "191.255.255.255", "192.0.1.0"},
    {"192.0.2.0/24", "192.0.2.0", "192.0.2.255", "192.0.2.1", "192.0.1.255", "192.0.3.0"},
    {"192.88.99.0/24", "192.88.99.0", "192.88.99.255", "192.88.99.1", "192.88.98.255",
     "192.88.100.0"},
    {"192.168.0.0/16", "192.168.0.0", "192.168.255.255", "192.168.1.1", "192.167.255.255",
     "192.169.0.0"},
    {"198.18.0.0/15", "198.18.0.0", "198.19.255.255", "198.18.0.1", "198.17.255.255", "198.20.0.0"},
    {"198.51.100.0/24", "198.51.100.0", "198.51.100.255", "198.51.100.7", "198.51.99.255",
     "198.51.101.0"},
    {"203.0.113.0/24", "203.0.113.0", "203.0.113.255", "203.0.113.7", "203.0.112.255",
     "203.0.114.0"},
    {"224.0.0.0/4", "224.0.0.0", "239.255.255.255", "224.0.0.1", "223.255.255.255", NULL},
    {"240.0.0.0/4", "240.0.0.0", "255.255.255.255", "250.1.2.3", NULL, NULL},
};

static const struct range v6_ranges[] = {
    /* Everything outside global unicast (2000::/3), in three blocks... */
    {"::/3", "::", "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "100::1", NULL, "2000::"},
    {"4000::/2", "4000::", "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "5f00::1", NULL, NULL},
    {"8000::/1", "8000::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd00::1", NULL, NULL},
    /* ...which hold these, named in docs/SECURITY.md: */
    {"::/128", "::", "::", "::", NULL, NULL},
    {"::1/128", "::1", "::1", "::1", NULL, NULL},
    {"100::/64", "100::", "100::ffff:ffff:ffff:ffff", "100::1", NULL, NULL},
    {"5f00::/16", "5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "5f00:1::1", NULL, NULL},
    {"fc00::/7", "fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fd12:3456::1", NULL, NULL},
    {"fe80::/10", "fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1", NULL, NULL},
    {"fec0::/10", "fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fec0::1", NULL, NULL},
    {"ff00::/8", "ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ff02::1", NULL, NULL},
    /* Inside 2000::/3. */
    {"2001::/23", "2001::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
     "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
     "2001:200::"},
    {"64:ff9b:1::/48", "64:ff9b:1::", "64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "64:ff9b:1:0:a:0:1:0",
     NULL, NULL}, /* but its /96 form, judged below */
    {"2001::/32", "2001::", "2001:0:ffff:ffff:ffff:ffff:ffff:ffff",
     "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL},
    {"2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::1",
     "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"},
    {"3fff::/20", "3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff::1",
     "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff:1000::"},
};

/* Ranges whose addresses are judged by the IPv4 address inside them: an internal IPv4 is
 * refused, a public one allowed, each form checked with every IPv4 row above. */
struct embedding {
    const char *cidr;
    void (*embed)(const unsigned char v4[4], unsigned char out[16]);
};

static void embed_mapped(const unsigned char v4[4], unsigned char out[16])
{
    static const unsigned char p[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(out, p, 12);
    memcpy(out + 12, v4, 4);
}

static void embed_compatible(const unsigned char v4[4], unsigned char out[16])
{
    memset(out, 0, 12);
    memcpy(out + 12, v4, 4);
}

static void embed_nat64(const unsigned char v4[4], unsigned char out[16])
{
    static const unsigned char p[12] = {0, 0x64, 0xff, 0x9b};
    memcpy(out, p, 12);
    memcpy(out + 12, v4, 4);
}

static void embed_nat64_local(const unsigned char v4[4], unsigned char out[16])
{
    static const unsigned char p[12] = {0, 0x64, 0xff, 0x9b, 0, 0x01};
    memcpy(out, p, 12);
    memcpy(out + 12, v4, 4);
}

/* 6to4: 2002:V4V4:V4V4::/48, with a subnet and host after it. */
static void embed_6to4(const unsigned char v4[4], unsigned char out[16])
{
    memset(out, 0, 16);
    out[0] = 0x20;
    out[1] = 0x02;
    memcpy(out + 2, v4, 4);
    out[7] = 0x01;
    out[15] = 0x01;
}

static const struct embedding embeddings[] = {
    {"::ffff:0:0/96", embed_mapped}, {"::/96", embed_compatible},
    {"64:ff9b::/96", embed_nat64},   {"64:ff9b:1::/96", embed_nat64_local},
    {"2002::/16", embed_6to4},
};

/* Addresses of the same forms that are refused whatever IPv4 they seem to hold. */
static const char *const refused_outright[] = {
    /* Local-use NAT64 outside its /96 form: a translator with a shorter prefix would read
     * another IPv4 from it (here 10.0.0.1 at /64, 127.0.0.1 at /56). */
    "64:ff9b:1:0:a:0:1:0",
    "64:ff9b:1:7f:0:1::",
    "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
    /* Teredo (2001::/32), even with public server and client addresses. */
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "2001::",
};

static void expect(const char *text, bool refused, const char *why)
{
    if (text != NULL && internal(text) != refused)
        fail_msg("%s '%s' should be %s", why, text, refused ? "refused" : "allowed");
}

static void check_ranges(const struct range *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct range *r = &rows[i];
        struct guard_cidr c;
        if (!guard_cidr_parse(r->cidr, &c))
            fail_msg("row %s does not parse", r->cidr);
        expect(r->first, true, r->cidr);
        expect(r->last, true, r->cidr);
        expect(r->inside, true, r->cidr);
        expect(r->below, false, r->cidr);
        expect(r->above, false, r->cidr);
        /* The row's own addresses lie in its range, its neighbours outside it. */
        const char *in[] = {r->first, r->last, r->inside}, *out[] = {r->below, r->above};
        for (size_t k = 0; k < 3; k++) {
            struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
            assert_int_equal(getaddrinfo(in[k], NULL, &hints, &res), 0);
            if (!guard_cidr_contains(&c, res->ai_addr, res->ai_addrlen))
                fail_msg("row %s: '%s' is not in the range", r->cidr, in[k]);
            freeaddrinfo(res);
        }
        for (size_t k = 0; k < 2; k++) {
            if (out[k] == NULL)
                continue;
            struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
            assert_int_equal(getaddrinfo(out[k], NULL, &hints, &res), 0);
            if (guard_cidr_contains(&c, res->ai_addr, res->ai_addrlen))
                fail_msg("row %s: '%s' is in the range", r->cidr, out[k]);
            freeaddrinfo(res);
        }
    }
}

static void test_v4_ranges(void **state)
{
    (void)state;
    check_ranges(v4_ranges, sizeof v4_ranges / sizeof v4_ranges[0]);
}

static void test_v6_ranges(void **state)
{
    (void)state;
    check_ranges(v6_ranges, sizeof v6_ranges / sizeof v6_ranges[0]);
}

/* Every IPv4 row's addresses, carried in each IPv6 form that embeds an IPv4, get the same
 * answer as the IPv4 address itself. */
static void test_embedded_v4(void **state)
{
    (void)state;
    for (size_t e = 0; e < sizeof embeddings / sizeof embeddings[0]; e++) {
        for (size_t i = 0; i < sizeof v4_ranges / sizeof v4_ranges[0]; i++) {
            const struct range *r = &v4_ranges[i];
            const char *texts[] = {r->first, r->last, r->inside, r->below, r->above};
            for (size_t k = 0; k < 5; k++) {
                if (texts[k] == NULL)
                    continue;
                unsigned char v4[4], v6[16];
                assert_int_equal(inet_pton(AF_INET, texts[k], v4), 1);
                embeddings[e].embed(v4, v6);
                bool want = k < 3;
                if (internal6(v6) != want)
                    fail_msg("%s carrying %s (%s) should be %s", embeddings[e].cidr, texts[k],
                             r->cidr, want ? "refused" : "allowed");
            }
        }
    }
    for (size_t i = 0; i < sizeof refused_outright / sizeof refused_outright[0]; i++)
        expect(refused_outright[i], true, "outright");
}

/* Spellings and public addresses the guard must get right. */
static void test_examples(void **state)
{
    (void)state;
    static const char *const refused[] = {
        "127.1",
        "0x7f000001",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "::ffff:10.1.2.3",
        "2002:a9fe:a9fe::",
        "64:ff9b:1::a9fe:a9fe",
        "2002:c000:0201::",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        expect(refused[i], true, "example");
    static const char *const allowed[] = {
        "93.184.216.34",   "8.8.8.8",          "2606:4700::1111",
        "::ffff:8.8.8.8",  "64:ff9b::808:808", "64:ff9b:1::808:808",
        "2002:808:808::1", "2a00:1450::1",     "2620:4f:8000::1",
        "2000::",          "3ffe::1",          "192.31.196.1",
    };
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        expect(allowed[i], false, "example");
}

/* Whether cidr is a row of any table above. */
static bool has_row(const char *cidr)
{
    for (size_t i = 0; i < sizeof v4_ranges / sizeof v4_ranges[0]; i++) {
        if (strcmp(v4_ranges[i].cidr, cidr) == 0)
            return true;
    }
    for (size_t i = 0; i < sizeof v6_ranges / sizeof v6_ranges[0]; i++) {
        if (strcmp(v6_ranges[i].cidr, cidr) == 0)
            return true;
    }
    for (size_t i = 0; i < sizeof embeddings / sizeof embeddings[0]; i++) {
        if (strcmp(embeddings[i].cidr, cidr) == 0)
            return true;
    }
    return false;
}

/* docs/SECURITY.md's SSRF section names exactly the ranges tested here (each as `ADDR/BITS`,
 * outside the --allow-cidr example), so the document cannot drift from the code unseen. */
static void test_security_md_lists_the_ranges(void **state)
{
    (void)state;
    FILE *f = fopen(CALLHOOK_SECURITY_MD, "r");
    if (f == NULL)
        fail_msg("cannot open '%s'", CALLHOOK_SECURITY_MD);
    char line[1024];
    bool in_section = false;
    size_t listed = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "## ", 3) == 0)
            in_section = strstr(line, "(SSRF)") != NULL;
        if (!in_section || strstr(line, "--allow-cidr") != NULL)
            continue;
        for (char *p = strchr(line, '`'); p != NULL; p = strchr(p + 1, '`')) {
            char *end = strchr(p + 1, '`');
            if (end == NULL)
                break;
            char token[128];
            size_t n = (size_t)(end - p - 1);
            struct guard_cidr c;
            if (n < sizeof token) {
                memcpy(token, p + 1, n);
                token[n] = '\0';
                if (strchr(token, '/') != NULL && guard_cidr_parse(token, &c)) {
                    if (!has_row(token))
                        fail_msg("docs/SECURITY.md lists %s, which has no row here", token);
                    listed++;
                }
            }
            p = end;
        }
    }
    fclose(f);
    size_t rows = sizeof v4_ranges / sizeof v4_ranges[0] + sizeof v6_ranges / sizeof v6_ranges[0] +
                  sizeof embeddings / sizeof embeddings[0];
    if (listed != rows)
        fail_msg("docs/SECURITY.md lists %zu ranges; the tables here have %zu rows", listed, rows);
}

static void test_format(void **state)
{
    (void)state;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
    assert_int_equal(getaddrinfo("::1", NULL, &hints, &res), 0);
    char text[64];
    guard_format(res->ai_addr, text, sizeof text);
    assert_string_equal(text, "::1");
    freeaddrinfo(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4_ranges),
        cmocka_unit_test(test_v6_ranges),
        cmocka_unit_test(test_embedded_v4),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_security_md_lists_the_ranges),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
