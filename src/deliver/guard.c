/* The SSRF guard's address classification. */
#include "deliver/guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool v4_internal(uint32_t a)
{
    uint8_t b0 = (uint8_t)(a >> 24), b1 = (uint8_t)(a >> 16);
    return b0 == 0 ||                                          /* 0.0.0.0/8 "this network" */
           b0 == 10 ||                                         /* RFC 1918 */
           b0 == 127 ||                                        /* loopback */
           (b0 == 100 && (b1 & 0xc0) == 64) ||                 /* 100.64.0.0/10 carrier-grade NAT */
           (b0 == 169 && b1 == 254) ||                         /* link-local, cloud metadata */
           (b0 == 172 && (b1 & 0xf0) == 16) ||                 /* RFC 1918 */
           (b0 == 192 && b1 == 168) ||                         /* RFC 1918 */
           (b0 == 192 && b1 == 0 && (uint8_t)(a >> 8) == 0) || /* 192.0.0.0/24 IETF */
           (b0 == 198 && (b1 & 0xfe) == 18) ||                 /* 198.18.0.0/15 benchmarking */
           b0 >= 224;                                          /* multicast, reserved, broadcast */
}

static bool v6_internal(const uint8_t *a)
{
    static const uint8_t zero[16];
    static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64_prefix[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1))
        return true; /* :: and ::1 */
    if (memcmp(a, mapped_prefix, 12) == 0 || memcmp(a, nat64_prefix, 12) == 0 ||
        memcmp(a, zero, 12) == 0) {
        /* IPv4-mapped, NAT64 well-known prefix, IPv4-compatible: judge the IPv4 inside. */
        uint32_t v4 = (uint32_t)a[12] << 24 | (uint32_t)a[13] << 16 | (uint32_t)a[14] << 8 | a[15];
        return v4_internal(v4);
    }
    return (a[0] & 0xfe) == 0xfc ||                   /* fc00::/7 unique local */
           (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
           (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) || /* fec0::/10 site-local (deprecated) */
           a[0] == 0xff ||                            /* multicast */
           (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8); /* documentation */
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
