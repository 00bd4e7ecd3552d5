/* Failure classes and the retry policy (retry.h). */
#include "deliver/retry.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum failure_class retry_classify(CURLcode rc, bool refused)
{
    if (refused)
        return FAILURE_refused;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return FAILURE_timeout;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return FAILURE_connect;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        return FAILURE_tls;
    default:
        return FAILURE_other;
    }
}

long retry_after_parse(const char *line, size_t len)
{
    if (len <= 12 || strncasecmp(line, "retry-after:", 12) != 0)
        return -1;
    char value[32];
    size_t vlen = len - 12 < sizeof value - 1 ? len - 12 : sizeof value - 1;
    memcpy(value, line + 12, vlen);
    value[vlen] = '\0';
    char *end;
    long s = strtol(value, &end, 10);
    if (end == value || s < 0)
        return -1;
    return s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : s;
}

long retry_delay_s(const struct app_config *c, int done, long retry_after_s, unsigned random)
{
    if (done > c->nretry)
        return -1;
    long base = c->retry_s[done - 1];
    long jitter = base >= 10 ? (long)(random % (unsigned)(base / 10 + 1)) : 0;
    long d = base + jitter;
    return retry_after_s > d ? retry_after_s : d;
}

const char *failure_class_name(enum failure_class c)
{
    static const char *const names[] = {
#define METRICS_FC_NAME(name) #name,
        METRICS_FAILURE_CLASSES(METRICS_FC_NAME)
#undef METRICS_FC_NAME
    };
    return (int)c >= 0 && c < FAILURE_COUNT_ ? names[c] : "other";
}
