/* stderr logging with a level threshold; one write per line so threads do not interleave. Under
 * systemd, when stderr is the journal's stream, lines carry a "<N>" priority and no time: the
 * journal stamps them itself. */
#include "util/log.h"

#include "util/clock.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_int threshold = LOG_INFO;
static atomic_bool to_journal;

void log_set_level(enum log_level level)
{
    atomic_store(&threshold, (int)level);
}

bool log_stream_is_journal(const char *journal_stream, int fd)
{
    unsigned long long dev, ino;
    char end;
    struct stat st;
    if (journal_stream == NULL || sscanf(journal_stream, "%llu:%llu%c", &dev, &ino, &end) != 2 ||
        fstat(fd, &st) != 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init_from_env(void)
{
    const char *v = getenv("CALLHOOK_LOG");
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; v && i < 4; i++) {
        if (strcmp(v, names[i]) == 0)
            log_set_level((enum log_level)i);
    }
    /* systemd sets JOURNAL_STREAM to stderr's device and inode; a stderr the service (or a
     * shell it ran) redirected elsewhere no longer matches, and keeps plain lines. */
    atomic_store(&to_journal, log_stream_is_journal(getenv("JOURNAL_STREAM"), STDERR_FILENO));
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_email_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
           c == '_' || c == '-' || c == '+' || c == '%';
}

/* Masks, in place, what looks like personal data wherever a message carries it by accident:
 * phone numbers ("+" and 7 or more digits) keep their last two digits, e-mail addresses keep
 * only their '@'. Messages are built from ids and counts; this is the second line of defence. */
void log_mask_personal(char *s)
{
    for (char *p = s; *p; p++) {
        if (*p == '+' && is_digit(p[1])) {
            char *q = p + 1;
            while (is_digit(*q))
                q++;
            if (q - p - 1 >= 7) {
                for (char *d = p + 1; d < q - 2; d++)
                    *d = '*';
            }
            p = q - 1;
        } else if (*p == '@' && p > s && is_email_char(p[-1]) && is_email_char(p[1])) {
            /* Same length, so the line never grows: every character but the '@' hidden. */
            for (char *q = p - 1; q >= s && is_email_char(*q); q--)
                *q = '*';
            char *q = p + 1;
            for (; is_email_char(*q); q++)
                *q = '*';
            p = q - 1;
        }
    }
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&threshold))
        return;
    static const char *const tags[] = {"debug", "info", "warn", "error"};
    /* syslog's priorities: LOG_DEBUG 7, LOG_INFO 6, LOG_WARNING 4, LOG_ERR 3. */
    static const char *const priorities[] = {"<7>", "<6>", "<4>", "<3>"};
    char line[1024];
    size_t o;
    if (atomic_load(&to_journal)) {
        o = (size_t)snprintf(line, sizeof line, "%s", priorities[level]);
    } else {
        int64_t now_ms = clock_wall_ms();
        time_t now_s = (time_t)(now_ms / 1000);
        struct tm tm;
        gmtime_r(&now_s, &tm);
        o = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
        o += (size_t)snprintf(line + o, sizeof line - o, ".%03dZ %-5s ", (int)(now_ms % 1000),
                              tags[level]);
    }
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
