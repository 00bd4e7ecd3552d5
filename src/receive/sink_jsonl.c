/*
 * The jsonl: sink: one JSON line per event, {"webhookId", "event", "receivedAt", "record"},
 * appended to a file; a batch's lines are written whole and synced once (fdatasync) before
 * any of them counts as done. The file is opened for each batch, so a log rotation that moves
 * it is followed.
 */
#include "receive/sink.h"

#include "receive/escape.h"
#include "receive/receiver.h"
#include "util/log.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Lines one batch writes at once. */
#define JSONL_BATCH 64

struct sink {
    char path[RECEIVE_HANDLER_MAX];
    /* A batch's lines, kept from one batch to the next: freed and made again each time, a
     * buffer of a few hundred KiB made glibc give its pages back (madvise) and fault them in
     * again, with TLB flushes that stalled the front on the other core. Only process() uses it. */
    char *lines;
    size_t room;
};

/* One writer at a time in this process, so lines never interleave (two handlers may name one
 * file; a reload may run two dispatchers of one sink for a moment). */
static pthread_mutex_t jsonl_lock = PTHREAD_MUTEX_INITIALIZER;

/* Appends the event's line to line (grown as needed). False when out of memory. */
static bool jsonl_line(const struct ch_inbox_entry *e, char **line, size_t *len, size_t *cap)
{
    /* The record goes in as received, not re-serialized (so numbers past 64 bits survive): the
     * front checked it is a JSON object, and json_text_clean() makes every byte that could
     * break the line (a line break between tokens, a stray control byte) harmless without
     * changing what it means. */
    json_t *meta = json_pack("{s:s, s:s, s:I}", "webhookId", e->webhook_id, "event", e->event,
                             "receivedAt", (json_int_t)e->received_at);
    char *head = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    if (head == NULL)
        return false;
    size_t head_len = strlen(head);
    size_t body_len = json_text_clean(e->body, e->body_len, false, NULL, 0);
    size_t need = *len + head_len + body_len + 16;
    if (need > *cap) {
        size_t grown = *cap * 2 > need ? *cap * 2 : need;
        char *more = realloc(*line, grown);
        if (more == NULL) {
            free(head);
            return false;
        }
        *line = more;
        *cap = grown;
    }
    /* head is {...}: drop its closing brace, add ,"record":BODY} and a newline. */
    char *out = *line;
    size_t o = *len;
    memcpy(out + o, head, head_len - 1);
    o += head_len - 1;
    free(head);
    memcpy(out + o, ",\"record\":", 10);
    o += 10;
    o += json_text_clean(e->body, e->body_len, false, out + o, body_len + 1);
    out[o++] = '}';
    out[o++] = '\n';
    *len = o;
    return true;
}

/* A failure's reason, cut to cap bytes: that is all the inbox keeps. */
static void say(char *error, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *error, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, cap, fmt, ap);
    va_end(ap);
}

/* Appends lines[0..len) to path and syncs it: all of them durable when it returns true. */
static bool append_synced(const char *path, const char *lines, size_t len, char *error, size_t cap)
{
    bool ok = false;
    pthread_mutex_lock(&jsonl_lock);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        say(error, cap, "cannot open '%s': %s", path, strerror(errno));
    } else {
        /* Where the batch starts: a batch that fails halfway is cut off again, so that its
         * retry does not follow a torn line and a copy of the lines before it. */
        struct stat st;
        off_t start = fstat(fd, &st) == 0 ? st.st_size : -1;
        size_t done = 0;
        ssize_t w = 0;
        while (done < len) {
            w = write(fd, lines + done, len - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            done += (size_t)w;
        }
        if (done != len) {
            int e = w < 0 ? errno : ENOSPC;
            if (done > 0 && start >= 0 && ftruncate(fd, start) != 0)
                log_warn("cannot cut a half-written batch off '%s': %s", path, strerror(errno));
            say(error, cap, "cannot write '%s': %s", path, strerror(e));
        } else if (fdatasync(fd) != 0)
            say(error, cap, "cannot sync '%s': %s", path, strerror(errno));
        else
            ok = true;
        close(fd);
    }
    pthread_mutex_unlock(&jsonl_lock);
    return ok;
}

static ch_code jsonl_open(const char *target, const struct receive_config *c, struct sink **out,
                          struct ch_error *err)
{
    (void)c;
    if (*target == '\0')
        return ch_error_set(err, CH_EINVAL, "no file given");
    /* A file that cannot be written is said at start, not found out at the first event. */
    int fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return ch_error_set(err, CH_EINVAL, "cannot open '%s' to append: %s", target,
                            strerror(errno));
    close(fd);
    struct sink *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    snprintf(s->path, sizeof s->path, "%s", target);
    *out = s;
    return CH_OK;
}

static size_t jsonl_batch_max(const struct sink *s)
{
    (void)s;
    return JSONL_BATCH;
}

static void jsonl_process(struct sink *s, const struct ch_inbox_entry *events, size_t n,
                          struct sink_result *results)
{
    size_t len = 0;
    char error[sizeof results[0].error] = "";
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        if (!jsonl_line(&events[i], &s->lines, &len, &s->room)) {
            say(error, sizeof error, "out of memory writing a line");
            ok = false;
        }
    }
    if (ok)
        ok = append_synced(s->path, s->lines, len, error, sizeof error);
    for (size_t i = 0; i < n; i++) {
        results[i].outcome = ok ? SINK_DONE : SINK_RETRY;
        results[i].retry_after_ms = 0;
        snprintf(results[i].error, sizeof results[i].error, "%s", ok ? "" : error);
    }
}

/* A batch is one write and one sync: nothing to cut short. */
static void jsonl_interrupt(struct sink *s)
{
    (void)s;
}

static void jsonl_close(struct sink *s)
{
    if (s)
        free(s->lines);
    free(s);
}

const struct sink_ops sink_jsonl_ops = {
    .scheme = "jsonl",
    .open = jsonl_open,
    .batch_max = jsonl_batch_max,
    .process = jsonl_process,
    .interrupt = jsonl_interrupt,
    .close = jsonl_close,
    .lane = true,
};
