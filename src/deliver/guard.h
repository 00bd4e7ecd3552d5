/* Where the engine may connect: the address check applied to every socket libcurl opens, after
 * DNS, so a name cannot smuggle in an internal address. */
#ifndef CALLHOOK_DELIVER_GUARD_H
#define CALLHOOK_DELIVER_GUARD_H

#include <stdbool.h>
#include <sys/socket.h>

/* True when addr is loopback, private (RFC 1918, CGNAT, ULA), link-local, unspecified,
 * multicast, broadcast or reserved, including IPv4-mapped and NAT64 forms of those. */
bool guard_is_internal(const struct sockaddr *addr, socklen_t len);

/* Writes the address as text ("10.0.0.1", "::1") for error messages. */
void guard_format(const struct sockaddr *addr, char *buf, size_t cap);

#endif
