/* Where the engine may connect: which addresses are internal, and the operator's CIDR ranges.
 * It only classifies; ssrf.c decides with it, on every socket libcurl opens (after DNS, so a
 * name cannot smuggle in an internal address) through transfer.c's callbacks. */
#ifndef CALLHOOK_DELIVER_GUARD_H
#define CALLHOOK_DELIVER_GUARD_H

#include <stdbool.h>
#include <sys/socket.h>

/* True when addr is not a public unicast address: any block of IANA's special-purpose
 * registries that is not globally reachable (loopback, private, CGNAT, link-local,
 * documentation, benchmarking, ...), multicast, and reserved space; IPv4-mapped,
 * IPv4-compatible, NAT64 (64:ff9b::/96, 64:ff9b:1::/96) and 6to4 addresses are judged by the
 * IPv4 address inside. docs/SECURITY.md has the list. Decides without any network access. */
bool guard_is_internal(const struct sockaddr *addr, socklen_t len);

/* Writes the address as text ("10.0.0.1", "::1") for error messages. */
void guard_format(const struct sockaddr *addr, char *buf, size_t cap);

/* An address range the operator allows even though it is internal, e.g. 10.20.0.0/16. */
struct guard_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    int prefix;
};

/* Parses "ADDRESS/PREFIX" (a lone address means /32 or /128). */
bool guard_cidr_parse(const char *text, struct guard_cidr *out);

/* True when addr lies in the range (IPv4-mapped IPv6 addresses count as IPv4). */
bool guard_cidr_contains(const struct guard_cidr *c, const struct sockaddr *addr, socklen_t len);

#endif
