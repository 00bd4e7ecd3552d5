/* Sinks by scheme (sink.h): the ops of a handler's text, and its name as the log shows it. */
#include "receive/sink.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct sink_ops *const all_sinks[] = {&sink_exec_ops, &sink_jsonl_ops, &sink_pipe_ops,
                                                   &sink_forward_ops, &sink_postgres_ops};

const struct sink_ops *sink_ops_for(const char *handler_text)
{
    for (size_t i = 0; i < sizeof all_sinks / sizeof all_sinks[0]; i++) {
        size_t n = strlen(all_sinks[i]->scheme);
        if (strncmp(handler_text, all_sinks[i]->scheme, n) == 0 && handler_text[n] == ':')
            return all_sinks[i];
    }
    return NULL;
}

/* Copies src[0..n) to out at *o, within cap. */
static void put(char *out, size_t cap, size_t *o, const char *src, size_t n)
{
    while (n-- > 0 && *o + 1 < cap)
        out[(*o)++] = *src++;
    out[*o] = '\0';
}

const char *sink_label(const char *text, char *out, size_t cap)
{
    if (cap == 0)
        return out;
    size_t o = 0;
    out[0] = '\0';
    const char *p = text;
    /* "scheme://user:password@host": the password goes. */
    const char *slashes = strstr(p, "://");
    if (slashes) {
        const char *auth = slashes + 3;
        size_t host_start = strcspn(auth, "/?#");
        const char *at = memchr(auth, '@', host_start);
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon) {
            put(out, cap, &o, p, (size_t)(colon + 1 - p));
            put(out, cap, &o, "***", 3);
            p = at;
        }
    }
    /* "password=..." in a key=value DSN: up to the next space. */
    for (;;) {
        const char *pw = strstr(p, "password=");
        if (pw == NULL)
            break;
        put(out, cap, &o, p, (size_t)(pw + 9 - p));
        put(out, cap, &o, "***", 3);
        p = pw + 9 + strcspn(pw + 9, " &");
    }
    put(out, cap, &o, p, strlen(p));
    return out;
}

ch_code sink_not_built(const char *scheme, struct ch_error *err)
{
    return ch_error_set(err, CH_EINVAL, "%s: handlers are not built in this build of callhook",
                        scheme);
}

void sink_result_set(struct sink_result *r, enum sink_outcome outcome, long long retry_after_ms,
                     const char *fmt, ...)
{
    r->outcome = outcome;
    r->retry_after_ms = retry_after_ms;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
}
