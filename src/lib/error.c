/* Error codes' names and messages, generated from the single CH_ERRNO_MAP table. */
#include <callhook/error.h>

#include <stdarg.h>
#include <stdio.h>

static const char *const code_names[] = {
#define CH_ERRNO_NAME(name, msg) #name,
    CH_ERRNO_MAP(CH_ERRNO_NAME)
#undef CH_ERRNO_NAME
};

static const char *const code_messages[] = {
#define CH_ERRNO_MSG(name, msg) msg,
    CH_ERRNO_MAP(CH_ERRNO_MSG)
#undef CH_ERRNO_MSG
};

const char *ch_code_name(ch_code code)
{
    if ((int)code < 0 || code >= CH_ERRNO_COUNT_)
        return "UNKNOWN";
    return code_names[code];
}

const char *ch_strerror(ch_code code)
{
    if ((int)code < 0 || code >= CH_ERRNO_COUNT_)
        return "unknown error";
    return code_messages[code];
}

ch_code ch_error_set(struct ch_error *err, ch_code code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(err->message, sizeof err->message, "%s", ch_strerror(code));
    return code;
}
