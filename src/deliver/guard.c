/* The SSRF guard's address classification: which resolved addresses the sender refuses to
 * connect to. It decides on the address alone; docs/SECURITY.md lists the same ranges. */
#include "deliver/guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An IPv4 range the guard refuses. */
struct v4_range {
    uint32_t net;
    int bits;
};

/* Every block of IANA's IPv4 special-purpose registry that is not globally reachable, and
 * multicast. 192.0.0.0/24 is refused whole: its few globally reachable addresses (anycast
 * services) are no place for a webhook endpoint. docs/SECURITY.md lists the same. */
static const struct v4_range refused_v4[] = {
    {0x00000000, 8},  /* 0.0.0.0/8 "this network" */
    {0x0a000000, 8},  /* 10.0.0.0/8 private */
    {0x64400000, 10}, /* 100.64.0.0/10 shared address space (carrier-grade NAT) */
    {0x7f000000, 8},  /* 127.0.0.0/8 loopback */
    {0xa9fe0000, 16}, /* 169.254.0.0/16 link-local, cloud metadata */
    {0xac100000, 12}, /* 172.16.0.0/12 private */
    {0xc0000000, 24}, /* 192.0.0.0/24 IETF protocol assignments */
    {0xc0000200, 24}, /* 192.0.2.0/24 documentation (TEST-NET-1) */
    {0xc0586300, 24}, /* 192.88.99.0/24 6to4 relay anycast (deprecated) */
    {0xc0a80000, 16}, /* 192.168.0.0/16 private */
    {0xc6120000, 15}, /* 198.18.0.0/15 benchmarking */
    {0xc6336400, 24}, /* 198.51.100.0/24 documentation (TEST-NET-2) */
    {0xcb007100, 24}, /* 203.0.113.0/24 documentation (TEST-NET-3) */
    {0xe0000000, 4},  /* 224.0.0.0/4 multicast */
    {0xf0000000, 4},  /* 240.0.0.0/4 reserved, and the broadcast 255.255.255.255 */
};

static bool v4_internal(uint32_t a)
{
    for (size_t i = 0; i < sizeof refused_v4 / sizeof refused_v4[0]; i++) {
        uint32_t mask = 0xffffffffu << (32 - refused_v4[i].bits);
        if ((a & mask) == refused_v4[i].net)
            return true;
    }
    return false;
}

static uint32_t v4_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Whether the first bits bits of a and b agree. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    int full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

/* An IPv6 range the guard refuses, inside 2000::/3 (all else outside it is refused anyway). */
struct v6_range {
    uint8_t prefix[16];
    int bits;
};

static const struct v6_range refused_v6[] = {
    /* 2001::/23 IETF protocol assignments, refused whole: Teredo (2001::/32) is a tunnel to a
     * host behind NAT through relays the guard cannot see, and the rest (benchmarking, ORCHID,
     * anycast services) are no place for a webhook endpoint. */
    {{0x20, 0x01}, 23},
    {{0x20, 0x01, 0x0d, 0xb8}, 32}, /* 2001:db8::/32 documentation */
    {{0x3f, 0xff}, 20},             /* 3fff::/20 documentation */
};

static bool v6_internal(const uint8_t *a)
{
    static const uint8_t zero[16];
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const uint8_t nat64_local[12] = {0, 0x64, 0xff, 0x9b, 0, 0x01};
    if (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1))
        return true; /* :: and ::1 */
    /* IPv4-mapped, IPv4-compatible and the NAT64 well-known prefix: judge the IPv4 inside. */
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, zero, 12) == 0 || memcmp(a, nat64, 12) == 0)
        return v4_internal(v4_at(a + 12));
    /* Local-use NAT64, 64:ff9b:1::/48: only its /96 form, 64:ff9b:1::a.b.c.d, is judged by the
     * IPv4 inside. Read with any other RFC 6052 prefix length that address holds an IPv4 in
     * 0.0.0.0/8, which no translator can forward to; any other address of the /48 is refused,
     * since the guard cannot know which prefix length a local translator uses. */
    if (prefix_equal(a, nat64_local, 48))
        return !(memcmp(a + 6, zero, 6) == 0) || v4_internal(v4_at(a + 12));
    /* 6to4, 2002::/16: the IPv4 of the site follows the prefix. */
    if (a[0] == 0x20 && a[1] == 0x02)
        return v4_internal(v4_at(a + 2));
    /* Only global unicast, 2000::/3, is outside: the rest is loopback, unspecified, discard
     * (100::/64), unique local (fc00::/7), link-local (fe80::/10), site-local (fec0::/10),
     * multicast (ff00::/8), SRv6 (5f00::/16) or reserved by the IETF. */
    if ((a[0] & 0xe0) != 0x20)
        return true;
    for (size_t i = 0; i < sizeof refused_v6 / sizeof refused_v6[0]; i++) {
        if (prefix_equal(a, refused_v6[i].prefix, refused_v6[i].bits))
            return true;
    }
    return false;
}

bool guard_is_internal(const struct sockaddr *addr, socklen_t len)
{
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)addr;
        return v4_internal(ntohl(in->sin_addr.s_addr));
    }
    if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)addr;
        return v6_internal(in6->sin6_addr.s6_addr);
    }
    return true; /* anything that is not IP is not a webhook endpoint */
}

void guard_format(const struct sockaddr *addr, char *buf, size_t cap)
{
    const void *src = NULL;
    if (addr->sa_family == AF_INET)
        src = &((const struct sockaddr_in *)(const void *)addr)->sin_addr;
    else if (addr->sa_family == AF_INET6)
        src = &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr;
    if (src == NULL || inet_ntop(addr->sa_family, src, buf, (socklen_t)cap) == NULL)
        snprintf(buf, cap, "(address family %d)", addr->sa_family);
}

bool guard_cidr_parse(const char *text, struct guard_cidr *out)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n == 0 || n >= sizeof host)
        return false;
    memcpy(host, text, n);
    host[n] = '\0';
    memset(out, 0, sizeof *out);
    int max;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return false;
    }
    out->prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || p < 0 || p > max)
            return false;
        out->prefix = (int)p;
    }
    return true;
}

bool guard_cidr_contains(const struct guard_cidr *c, const struct sockaddr *addr, socklen_t len)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned char a[16];
    int family;
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(a, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, 4);
        family = AF_INET;
    } else if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(a, &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr, 16);
        family = AF_INET6;
        if (c->family == AF_INET && memcmp(a, mapped, 12) == 0) {
            memmove(a, a + 12, 4);
            family = AF_INET;
        }
    } else {
        return false;
    }
    return family == c->family && prefix_equal(a, c->addr, c->prefix);
}
