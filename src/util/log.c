/* stderr logging with a level threshold; one write per line so threads do not interleave. */
#include "util/log.h"

#include "util/clock.h"
#include "util/mask.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int threshold = LOG_INFO;

void log_set_level(enum log_level level)
{
    atomic_store(&threshold, (int)level);
}

void log_init_from_env(void)
{
    const char *v = getenv("CALLHOOK_LOG");
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; v && i < 4; i++) {
        if (strcmp(v, names[i]) == 0)
            log_set_level((enum log_level)i);
    }
}

/* The log's masking is the API's (util/mask.c): one set of rules. */
void log_mask_personal(char *s)
{
    mask_personal(s, NULL);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&threshold))
        return;
    static const char *const tags[] = {"debug", "info", "warn", "error"};
    char line[1024];
    int64_t now_ms = clock_wall_ms();
    time_t now_s = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&now_s, &tm);
    size_t o = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    o += (size_t)snprintf(line + o, sizeof line - o, ".%03dZ %-5s ", (int)(now_ms % 1000),
                          tags[level]);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + o, sizeof line - o, fmt, ap);
    va_end(ap);
    o = n < 0 ? o : (o + (size_t)n >= sizeof line - 1 ? sizeof line - 2 : o + (size_t)n);
    line[o] = '\0';
    /* A value from a request (an id, a header) must not forge lines or drive a terminal. */
    for (size_t i = 0; i < o; i++) {
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    }
    log_mask_personal(line);
    o = strlen(line);
    line[o++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, o);
    (void)w;
}
