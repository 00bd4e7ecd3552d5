/* The SSRF decisions of delivery: whether a Voice App's request may reach an address, judged
 * with guard.c's list of internal ranges, the app's allowPrivateNetwork and the ranges the
 * operator allows for every app. Decides without any network access. */
#ifndef CALLHOOK_DELIVER_SSRF_H
#define CALLHOOK_DELIVER_SSRF_H

#include "deliver/guard.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* What one app's requests may reach. */
struct ssrf_rule {
    bool allow_private_network;       /* the app's allowPrivateNetwork */
    const struct guard_cidr *allowed; /* borrowed: internal ranges allowed for every app */
    int nallowed;
};

/* True when a request under rule r may reach addr. */
bool ssrf_allows(const struct ssrf_rule *r, const struct sockaddr *addr, socklen_t len);

/* Judges a URL whose host is an address literal before any connection: the spellings the C
 * library reads as IPv4 (127.1, 0x7f000001, 2130706433, with or without a trailing dot) and
 * IPv6 literals. Writes the refused address to refused ("" when allowed, when the host is a
 * name, judged later on the address it resolves to, or when the URL does not parse). */
void ssrf_judge_url(const struct ssrf_rule *r, const char *url, char *refused, size_t cap);

/* The host of url as libcurl reads it, without the brackets of an IPv6 literal or a
 * trailing dot, into host (cap bytes). False when the URL does not parse or has no host. */
bool ssrf_url_host(const char *url, char *host, size_t cap);

/* Judges the address a request is about to be sent to, as libcurl gives it in text ("10.0.0.1",
 * "::1"). True when allowed; otherwise false with the address in refused ("an unknown address"
 * when ip is NULL or does not parse: refused rather than guessed). */
bool ssrf_judge_ip(const struct ssrf_rule *r, const char *ip, char *refused, size_t cap);

#endif
