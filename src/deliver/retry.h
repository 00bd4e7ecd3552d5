/* What a failed attempt was and when the next one goes: libcurl's outcome translated into the
 * failure classes /metrics counts, a receiver's Retry-After read, and the retry schedule. Pure
 * functions: no clock, no state; the caller brings the random number. */
#ifndef CALLHOOK_DELIVER_RETRY_H
#define CALLHOOK_DELIVER_RETRY_H

#include <curl/curl.h>

#include "deliver/app.h"
#include "deliver/metrics.h"

#include <stdbool.h>
#include <stddef.h>

/* The longest Retry-After honoured, in seconds: a longer one counts as this. */
#define RETRY_AFTER_MAX_S 86400

/* The failure class of an attempt that ended with rc before any HTTP status: refused (by the
 * SSRF guard) wins over rc; timeouts, connection and TLS failures have their own class; the
 * rest is "other". An HTTP status that is not 2xx is FAILURE_http, decided by the caller. */
enum failure_class retry_classify(CURLcode rc, bool refused);

/* The seconds a "Retry-After: N" response header line of len bytes (as libcurl hands it over,
 * the name in any case) asks for, capped at RETRY_AFTER_MAX_S; -1 when the line is another
 * header or its value is not a number of seconds (an HTTP date is not read). */
long retry_after_parse(const char *line, size_t len);

/* The delay in seconds before the attempt after `done` (>= 1) attempts, or -1 when c's
 * schedule is spent. The jitter only lengthens, by random % (step / 10 + 1) seconds for steps
 * of 10 s or more, so a schedule is a floor a receiver can rely on; a longer retry_after_s
 * (0: none) wins over the step. */
long retry_delay_s(const struct app_config *c, int done, long retry_after_s, unsigned random);

#endif
