/*
 * The pipe sink (`--pipe CMD`, `pipe:CMD`): one long-lived handler process fed events as JSON
 * lines on its stdin, answering one line per event on its stdout, in any order, many in flight.
 * A handler that dies is restarted with backoff and given again every event it left unanswered.
 */
#define _GNU_SOURCE /* pipe2(), syscall(): Linux, like prctl() below */

#include "receive/escape.h"
#include "receive/receiver.h"
#include "receive/sink.h"

#include "receive/child.h"

#include "util/clock.h"
#include "util/log.h"

#include <callhook/record.h>

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PIPE_WINDOW_DEFAULT 256
#define PIPE_WINDOW_MAX     4096
#define ANSWER_LINE_MAX     (64 * 1024) /* a longer answer line is malformed */
#define ERR_LINE_MAX        512         /* a longer stderr line is cut */
#define ERR_LINES_PER_MIN   120         /* stderr lines logged per minute, the rest counted */
#define BACKOFF_MIN_MS      100
#define BACKOFF_MAX_MS      10000
/* How long one process() waits for a dead handler to come back before it gives the
 * unanswered events back as SINK_RETRY ("handler restarting"). */
#define RESTART_WAIT_MS 5000
#define CLOSE_GRACE_MS  2000
#define HANDLER_NICE    10 /* below the front and the inbox commit */
#define COMMAND_MAX     1024
#define LOG_TEXT_MAX    200

extern char **environ;

/* Bytes read from a descriptor, cut into lines; a line over cap is flagged and dropped. */
struct line_reader {
    char *buf;
    size_t len, cap;
    bool overlong; /* dropping the rest of a line that went over cap */
};

struct sink {
    char command[COMMAND_MAX];
    char env_names[RECEIVE_MAX_HANDLER_ENV][RECEIVE_ENV_NAME_MAX];
    int nenv;
    size_t window;
    long long answer_timeout_ms; /* --exec-timeout-s: no answer at all for this long */

    pid_t pid; /* 0: no handler running */
    int in_fd, out_fd, err_fd;
    long long started_ms;    /* monotonic */
    long long answered;      /* answers from the running handler */
    long long next_start_ms; /* monotonic: no restart before this */
    long long backoff_ms;
    char last_end[256]; /* how the last handler ended */

    struct line_reader out, err;
    long long err_minute_ms;
    int err_lines, err_dropped;

    int wake[2]; /* interrupt()'s self-pipe, read end polled by process() */
    atomic_bool interrupted;
};

/* ---- opening: is the command's program there? ---- */

/* Whether the shell would run this word itself, or parse it, so that no file can be checked. */
static bool shell_syntax(const char *word)
{
    return strpbrk(word, "'\"\\$`=(){}<>|;&*?[~") != NULL;
}

static ch_code check_file(const char *path, const char *command, struct ch_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return ch_error_set(err, CH_EINVAL, "pipe handler '%s': cannot find '%s': %s", command,
                            path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ch_error_set(err, CH_EINVAL, "pipe handler '%s': '%s' is not a file", command, path);
    if (access(path, X_OK) != 0)
        return ch_error_set(err, CH_EINVAL,
                            "pipe handler '%s': '%s' is not executable: %s (chmod +x it, or "
                            "name its interpreter: 'python3 %s')",
                            command, path, strerror(errno), path);
    return CH_OK;
}

/* Finds a plain program name on PATH, as the shell will (PATH goes to handlers unchanged). */
static ch_code check_on_path(const char *name, const char *command, struct ch_error *err)
{
    const char *path = getenv("PATH");
    if (path == NULL || path[0] == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        char full[PATH_MAX];
        int w = n == 0 ? snprintf(full, sizeof full, "./%s", name)
                       : snprintf(full, sizeof full, "%.*s/%s", (int)n, path, name);
        struct stat st;
        if (w > 0 && (size_t)w < sizeof full && stat(full, &st) == 0 && S_ISREG(st.st_mode) &&
            access(full, X_OK) == 0)
            return CH_OK;
        path += n;
        if (*path == ':')
            path++;
    }
    return ch_error_set(err, CH_EINVAL,
                        "pipe handler '%s': '%s' is not a program on PATH (give its path, or "
                        "install it)",
                        command, name);
}

/* The program the shell will run: the first word (after an `exec`), checked so that a command
 * that cannot run is an error at start. Words with shell syntax are left to the shell. */
static ch_code check_command(const char *command, struct ch_error *err)
{
    char word[PATH_MAX];
    const char *p = command;
    for (int round = 0; round < 2; round++) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t\n");
        if (n == 0)
            return ch_error_set(err, CH_EINVAL, "pipe handler: the command is empty");
        if (n >= sizeof word)
            return CH_OK;
        memcpy(word, p, n);
        word[n] = '\0';
        p += n;
        if (strcmp(word, "exec") != 0)
            break;
    }
    if (shell_syntax(word))
        return CH_OK;
    if (strchr(word, '/'))
        return check_file(word, command, err);
    return check_on_path(word, command, err);
}

static ch_code pipe_open(const char *target, const struct receive_config *c, struct sink **out,
                         struct ch_error *err)
{
    if (target == NULL || strlen(target) >= COMMAND_MAX)
        return ch_error_set(err, CH_EINVAL, "pipe handler: the command is missing or too long");
    ch_code rc = check_command(target, err);
    if (rc != CH_OK)
        return rc;
    struct sink *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    snprintf(s->command, sizeof s->command, "%s", target);
    s->nenv = c->nhandler_env < RECEIVE_MAX_HANDLER_ENV ? c->nhandler_env : RECEIVE_MAX_HANDLER_ENV;
    memcpy(s->env_names, c->handler_env, sizeof s->env_names);
    s->window = c->pipe_window > 0 ? (size_t)c->pipe_window : PIPE_WINDOW_DEFAULT;
    if (s->window > PIPE_WINDOW_MAX)
        s->window = PIPE_WINDOW_MAX;
    s->answer_timeout_ms = (c->exec_timeout_s > 0 ? c->exec_timeout_s : 30) * 1000LL;
    s->in_fd = s->out_fd = s->err_fd = -1;
    s->backoff_ms = BACKOFF_MIN_MS;
    s->out.cap = ANSWER_LINE_MAX;
    s->err.cap = ERR_LINE_MAX;
    s->out.buf = malloc(s->out.cap);
    s->err.buf = malloc(s->err.cap);
    if (s->out.buf == NULL || s->err.buf == NULL || pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        free(s->out.buf);
        free(s->err.buf);
        free(s);
        return ch_error_set(err, CH_ENOMEM, "pipe handler '%s': cannot set up: %s", target,
                            strerror(errno));
    }
    /* Started by the first process(): a receiver with nothing to hand over runs no handler. */
    *out = s;
    return CH_OK;
}

static size_t pipe_batch_max(const struct sink *s)
{
    return s->window;
}

/* ---- the handler process ---- */

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Starts the handler: /bin/sh -c COMMAND in its own process group, at a lower priority, with
 * the allow-listed environment and three pipes. False (the reason in why) when it cannot. */
static bool start_handler(struct sink *s, char *why, size_t cap)
{
    int n = 0;
    while (environ[n])
        n++;
    char **envp = calloc((size_t)n + 1, sizeof *envp);
    int in[2] = {-1, -1}, outp[2] = {-1, -1}, errp[2] = {-1, -1};
    if (envp == NULL || pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0 ||
        pipe2(errp, O_CLOEXEC) != 0) {
        snprintf(why, cap, "cannot start the handler: %s", strerror(errno));
        goto fail;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (child_env_passed_on(environ[i], s->env_names[0], s->nenv))
            envp[k++] = environ[i];
    }
    int fd_limit = child_max_fd();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, cap, "cannot start the handler: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        /* Its own group, so stopping it stops what it started; killed if the receiver dies
         * (the restarted receiver hands the unanswered events over again). The death signal
         * follows the thread that forks, so the sink is best driven by one thread. */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (nice(HANDLER_NICE) < 0) {
            /* Already at the lowest priority: fine. */
        }
        dup2(in[0], STDIN_FILENO);
        dup2(outp[1], STDOUT_FILENO);
        dup2(errp[1], STDERR_FILENO);
        child_close_from_3(fd_limit);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        char sh[] = "/bin/sh", dash_c[] = "-c";
        char *argv[] = {sh, dash_c, s->command, NULL};
        execve(sh, argv, envp);
        _exit(127);
    }
    /* Also here: a kill of the group right after fork must not miss a child that has not
     * run setpgid() yet. */
    setpgid(pid, pid);
    free(envp);
    close(in[0]);
    close(outp[1]);
    close(errp[1]);
    s->pid = pid;
    s->in_fd = in[1];
    s->out_fd = outp[0];
    s->err_fd = errp[0];
    /* Non-blocking both ways: a handler slow to read its input must not stall the reading of
     * its answers (it may be blocked writing them). */
    fcntl(s->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(s->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(s->err_fd, F_SETFL, O_NONBLOCK);
    s->out.len = s->err.len = 0;
    s->out.overlong = s->err.overlong = false;
    s->started_ms = clock_mono_ms();
    s->answered = 0;
    log_info("pipe handler '%s' started (pid %d)", s->command, (int)pid);
    return true;

fail:
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&outp[i]);
        close_fd(&errp[i]);
    }
    free(envp);
    return false;
}

static void describe_status(int status, char *out, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, cap, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(out, cap, "ended");
}

static void log_stderr_line(struct sink *s, const char *line, size_t len);

/* Reads what the handler wrote on stderr and logs it line by line (to EOF when final). */
static void drain_stderr(struct sink *s)
{
    char chunk[4096];
    while (s->err_fd >= 0) {
        ssize_t r = read(s->err_fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0 || errno != EAGAIN) {
                if (s->err.len > 0)
                    log_stderr_line(s, s->err.buf, s->err.len);
                s->err.len = 0;
                close_fd(&s->err_fd);
            }
            return;
        }
        for (ssize_t i = 0; i < r; i++) {
            if (chunk[i] == '\n') {
                if (!s->err.overlong || s->err.len > 0)
                    log_stderr_line(s, s->err.buf, s->err.len);
                s->err.len = 0;
                s->err.overlong = false;
            } else if (s->err.len < s->err.cap) {
                s->err.buf[s->err.len++] = chunk[i];
            } else if (!s->err.overlong) {
                /* Cut: the first ERR_LINE_MAX bytes are logged, the rest of the line is not. */
                log_stderr_line(s, s->err.buf, s->err.len);
                s->err.len = 0;
                s->err.overlong = true;
            }
        }
    }
}

static void log_stderr_line(struct sink *s, const char *line, size_t len)
{
    long long now = clock_mono_ms();
    if (now - s->err_minute_ms >= 60000) {
        if (s->err_dropped > 0)
            log_warn("pipe handler '%s': %d more stderr lines not logged", s->command,
                     s->err_dropped);
        s->err_minute_ms = now;
        s->err_lines = s->err_dropped = 0;
    }
    if (s->err_lines >= ERR_LINES_PER_MIN) {
        s->err_dropped++;
        return;
    }
    s->err_lines++;
    char text[TEXT_ESCAPE_GROWTH * ERR_LINE_MAX + 1];
    text_escape(line, len, text, sizeof text);
    log_info("pipe handler [%d]: %s", (int)s->pid, text);
}

/* Ends the running handler: its whole group is killed (a handler that closed its output may
 * still be running, and what it started too) and it is reaped; the next start waits the
 * backoff, reset when this handler had answered. */
static void end_handler(struct sink *s, const char *reason, bool kill_now)
{
    if (s->pid <= 0)
        return;
    if (kill_now) {
        kill(-s->pid, SIGKILL);
        kill(s->pid, SIGKILL);
    }
    close_fd(&s->in_fd);
    close_fd(&s->out_fd);
    /* Give a handler that is exiting a moment, so the log says how it ended; the leader is
     * not reaped before its group is killed, so the group id cannot have been reused. */
    siginfo_t info;
    long long until = clock_mono_ms() + (kill_now ? 0 : 50);
    for (;;) {
        memset(&info, 0, sizeof info);
        if (waitid(P_PID, (id_t)s->pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
            info.si_pid == s->pid || clock_mono_ms() >= until)
            break;
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
    kill(-s->pid, SIGKILL);
    kill(s->pid, SIGKILL); /* the leader, should it have left its group */
    int status = 0;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    drain_stderr(s);
    close_fd(&s->err_fd);
    char how[64];
    describe_status(status, how, sizeof how);
    if (s->answered > 0)
        s->backoff_ms = BACKOFF_MIN_MS;
    long long now = clock_mono_ms();
    s->next_start_ms = now + s->backoff_ms;
    snprintf(s->last_end, sizeof s->last_end, "%s, %s", reason, how);
    log_warn("pipe handler '%s' (pid %d) %s after %lld answers: %s; restarting in %lld ms",
             s->command, (int)s->pid, how, s->answered, reason, s->backoff_ms);
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
    s->pid = 0;
}

/* ---- one batch ---- */

/* An event of the batch: its line, and whether the handler has answered it. */
struct pending {
    size_t off, len; /* in the batch's text */
    bool answered;
};

struct batch {
    const struct ch_inbox_entry *events;
    struct sink_result *results;
    struct pending *p;
    size_t n, left; /* left: not answered yet */
    char *text;     /* every event's line */
    /* What is being written: the events from queue[qpos] on, the first from byte qoff. */
    size_t *queue, qlen, qpos, qoff;
};

static json_t *text_or_null(const char *s, bool present)
{
    if (!present)
        return json_null();
    json_t *j = json_string(s);
    if (j == NULL) {
        /* Not UTF-8: written as text_escape() shows it. */
        char shown[TEXT_ESCAPE_GROWTH * CH_RECORD_ID_MAX + 1];
        text_escape(s, strlen(s), shown, sizeof shown);
        j = json_string(shown);
    }
    return j ? j : json_null();
}

/* The event's line: what the handler needs to route it without parsing the record, then the
 * record itself as received (made one line by json_text_clean(), same meaning). */
static bool event_line(const struct ch_inbox_entry *e, char **text, size_t *len, size_t *cap)
{
    struct ch_record rec;
    bool parsed = ch_record_parse(&rec, e->body, e->body_len, 0, NULL) == CH_OK;
    char name[CH_CALL_TYPE_NAME_MAX];
    enum ch_call_type_kind kind =
        !e->has_call_type ? CH_CALL_TYPE_ABSENT
        : e->call_type >= CH_CALL_TYPE_GENERIC_CALL && e->call_type <= CH_CALL_TYPE_OUTBOUND_CALL
            ? CH_CALL_TYPE_KNOWN
            : CH_CALL_TYPE_UNKNOWN;
    ch_call_type_name(kind, e->call_type, name, sizeof name);
    json_t *head = json_object();
    if (head == NULL)
        return false;
    json_object_set_new(head, "id", text_or_null(e->webhook_id, true));
    json_object_set_new(head, "event", text_or_null(e->event, true));
    json_object_set_new(head, "activeCallId",
                        text_or_null(rec.active_call_id, parsed && rec.has_active_call_id));
    json_object_set_new(head, "correlationId",
                        text_or_null(rec.correlation_id, parsed && rec.has_correlation_id));
    json_object_set_new(head, "callType",
                        e->has_call_type ? json_integer(e->call_type) : json_null());
    json_object_set_new(head, "callTypeName", text_or_null(name, e->has_call_type));
    json_object_set_new(head, "receivedAt", json_integer(e->received_at));
    json_object_set_new(head, "attempt", json_integer(e->attempts));
    char *h = json_dumps(head, JSON_COMPACT);
    json_decref(head);
    if (h == NULL)
        return false;
    size_t hlen = strlen(h);
    size_t blen = e->body_len > 0 ? json_text_clean(e->body, e->body_len, false, NULL, 0) : 4;
    size_t need = *len + hlen + blen + 16;
    if (need > *cap) {
        size_t grown = *cap * 2 > need ? *cap * 2 : need;
        char *more = realloc(*text, grown);
        if (more == NULL) {
            free(h);
            return false;
        }
        *text = more;
        *cap = grown;
    }
    /* head is {...}: its closing brace goes, then ,"body":RECORD} and the newline. */
    char *o = *text + *len;
    memcpy(o, h, hlen - 1);
    o += hlen - 1;
    free(h);
    memcpy(o, ",\"body\":", 8);
    o += 8;
    if (e->body_len > 0)
        o += json_text_clean(e->body, e->body_len, false, o, blen + 1);
    else
        o += (size_t)sprintf(o, "null");
    *o++ = '}';
    *o++ = '\n';
    *len = (size_t)(o - *text);
    return true;
}

/* Every unanswered event, to be written (again) from its first byte: after a (re)start. */
static void queue_unanswered(struct batch *b)
{
    b->qlen = b->qpos = b->qoff = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (!b->p[i].answered)
            b->queue[b->qlen++] = i;
    }
}

/* The rest of the batch gets outcome SINK_RETRY with this reason. */
static void give_back_as(struct batch *b, enum sink_outcome outcome, long long retry_after_ms,
                         const char *reason)
{
    for (size_t i = 0; i < b->n; i++) {
        if (!b->p[i].answered)
            sink_result_set(&b->results[i], outcome, retry_after_ms, "%s", reason);
    }
}

static void give_back(struct batch *b, long long retry_after_ms, const char *reason)
{
    give_back_as(b, SINK_RETRY, retry_after_ms, reason);
}

static void log_bad_line(const struct sink *s, const char *what, const char *line, size_t len)
{
    char shown[TEXT_ESCAPE_GROWTH * LOG_TEXT_MAX + 1];
    text_escape(line, len < LOG_TEXT_MAX ? len : LOG_TEXT_MAX, shown, sizeof shown);
    log_warn("pipe handler '%s' wrote %s, ignored: %s%s", s->command, what, shown,
             len > LOG_TEXT_MAX ? "…" : "");
}

/* One answer line: {"id": ..., "ok": true|false, "retryAfterS": N, "error": "..."}. A line
 * that is not one, or answers an id that is not waiting in this batch (a late answer to an
 * event already given back, say), is logged and ignored: the event stays unanswered. */
static void take_answer(struct sink *s, struct batch *b, const char *line, size_t len)
{
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return;
    json_error_t jerr;
    json_t *a = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *id = json_object_get(a, "id");
    json_t *ok = json_object_get(a, "ok");
    json_t *after = json_object_get(a, "retryAfterS");
    json_t *why = json_object_get(a, "error");
    if (!json_is_object(a) || !json_is_string(id) || !json_is_boolean(ok) ||
        (after && !json_is_null(after) && !json_is_number(after))) {
        log_bad_line(s, "a line that is not an answer ({\"id\":...,\"ok\":true|false})", line, len);
        json_decref(a);
        return;
    }
    const char *wanted = json_string_value(id);
    size_t i = 0;
    while (i < b->n && (b->p[i].answered || strcmp(b->events[i].webhook_id, wanted) != 0))
        i++;
    if (i == b->n) {
        log_bad_line(s, "an answer for an id not waiting for one", line, len);
        json_decref(a);
        return;
    }
    b->p[i].answered = true;
    b->left--;
    s->answered++;
    if (json_is_true(ok)) {
        sink_result_set(&b->results[i], SINK_DONE, 0, "%s", "");
    } else {
        double secs = after && json_is_number(after) ? json_number_value(after) : 0;
        if (!(secs >= 0))
            secs = 0;
        if (secs > 86400.0 * 7)
            secs = 86400.0 * 7;
        const char *text = json_is_string(why) ? json_string_value(why) : "";
        char shown[TEXT_ESCAPE_GROWTH * LOG_TEXT_MAX + 1];
        text_escape(text, strnlen(text, LOG_TEXT_MAX), shown, sizeof shown);
        sink_result_set(&b->results[i], SINK_RETRY, (long long)(secs * 1000.0),
                        "the pipe handler answered ok:false%s%s", shown[0] ? ": " : "", shown);
    }
    json_decref(a);
}

/* Reads the handler's answers. False when its output ended (it exited, or closed it). */
static bool read_answers(struct sink *s, struct batch *b)
{
    char chunk[16384];
    for (;;) {
        ssize_t r = read(s->out_fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return true;
        if (r <= 0)
            return false;
        struct line_reader *lr = &s->out;
        for (ssize_t i = 0; i < r; i++) {
            if (chunk[i] == '\n') {
                if (lr->overlong)
                    log_bad_line(s, "an answer line over 64 KiB", lr->buf, lr->len);
                else
                    take_answer(s, b, lr->buf, lr->len);
                lr->len = 0;
                lr->overlong = false;
            } else if (lr->len < lr->cap) {
                lr->buf[lr->len++] = chunk[i];
            } else {
                lr->overlong = true;
            }
        }
    }
}

/* Writes what it can of the queue without blocking. False when the handler's input is closed. */
static bool write_lines(struct sink *s, struct batch *b)
{
    while (b->qpos < b->qlen) {
        const struct pending *p = &b->p[b->queue[b->qpos]];
        if (p->answered) { /* answered before its line was written out: a resend's case */
            b->qpos++;
            b->qoff = 0;
            continue;
        }
        ssize_t w = write(s->in_fd, b->text + p->off + b->qoff, p->len - b->qoff);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return true;
        if (w < 0)
            return false;
        b->qoff += (size_t)w;
        if (b->qoff == p->len) {
            b->qpos++;
            b->qoff = 0;
        }
    }
    return true;
}

static void drain_wake(struct sink *s)
{
    char buf[64];
    while (read(s->wake[0], buf, sizeof buf) > 0)
        ;
}

/* Runs the batch against the handler until every event is answered, the handler cannot be
 * brought back soon enough, it stays silent past the answer timeout, or interrupt(). */
static void run_batch(struct sink *s, struct batch *b)
{
    long long begun = clock_mono_ms();
    long long progress = begun; /* the last answer, or the last start */
    bool queued = false;
    drain_stderr(s);
    while (b->left > 0) {
        if (atomic_load(&s->interrupted)) {
            give_back_as(b, SINK_GIVEN_BACK, 0, "interrupted: the receiver is stopping");
            return;
        }
        long long now = clock_mono_ms();
        if (s->pid == 0) {
            if (s->next_start_ms > begun + RESTART_WAIT_MS) {
                char reason[300];
                snprintf(reason, sizeof reason, "pipe handler restarting (%s)",
                         s->last_end[0] ? s->last_end : "it could not start");
                give_back(b, s->next_start_ms - now, reason);
                return;
            }
            if (now < s->next_start_ms) {
                struct pollfd w = {.fd = s->wake[0], .events = POLLIN};
                poll(&w, 1, (int)(s->next_start_ms - now));
                drain_wake(s);
                continue;
            }
            char why[200];
            if (!start_handler(s, why, sizeof why)) {
                log_error("pipe handler '%s': %s", s->command, why);
                snprintf(s->last_end, sizeof s->last_end, "%s", why);
                s->next_start_ms = now + s->backoff_ms;
                s->backoff_ms =
                    s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
                continue;
            }
            queued = false; /* a new handler gets every unanswered event (again) */
            progress = clock_mono_ms();
        }
        if (!queued) {
            queue_unanswered(b);
            queued = true;
        }
        if (now - progress >= s->answer_timeout_ms) {
            char reason[200];
            snprintf(reason, sizeof reason, "no answer from the pipe handler within %lld s",
                     s->answer_timeout_ms / 1000);
            end_handler(s, reason, true);
            give_back(b, 0, reason);
            return;
        }
        struct pollfd fds[4];
        nfds_t nf = 0;
        fds[nf++] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        fds[nf++] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
        if (s->err_fd >= 0)
            fds[nf++] = (struct pollfd){.fd = s->err_fd, .events = POLLIN};
        bool writing = b->qpos < b->qlen;
        if (writing)
            fds[nf++] = (struct pollfd){.fd = s->in_fd, .events = POLLOUT};
        long long wait = progress + s->answer_timeout_ms - now;
        if (poll(fds, nf, (int)(wait > 1000 ? 1000 : wait < 0 ? 0 : wait)) < 0 && errno != EINTR)
            continue;
        drain_wake(s);
        drain_stderr(s);
        long long before = s->answered;
        if (!read_answers(s, b)) {
            end_handler(s, "its output ended", false);
        } else if (writing && !write_lines(s, b)) {
            /* It stopped reading (it died, most likely): what it answered before counts. */
            read_answers(s, b);
            end_handler(s, "it stopped reading its input", false);
        }
        if (s->answered != before)
            progress = clock_mono_ms();
    }
}

static void pipe_process(struct sink *s, const struct ch_inbox_entry *events, size_t n,
                         struct sink_result *results)
{
    struct batch b = {.events = events, .results = results, .n = n, .left = n};
    size_t len = 0, cap = 0;
    b.p = calloc(n ? n : 1, sizeof *b.p);
    b.queue = calloc(n ? n : 1, sizeof *b.queue);
    bool ok = b.p != NULL && b.queue != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        b.p[i].off = len;
        ok = event_line(&events[i], &b.text, &len, &cap);
        b.p[i].len = len - b.p[i].off;
    }
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            sink_result_set(&results[i], SINK_RETRY, 0, "out of memory writing the event's line");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        sink_result_set(&results[i], SINK_RETRY, 0, "not answered");
    /* A write to a handler that just died raises SIGPIPE for this thread: blocked for the
     * batch (EPIPE says it instead), and a pending one taken before the mask comes back. */
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    run_batch(s, &b);
    sigset_t pending;
    struct timespec zero = {0, 0};
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) && !sigismember(&old, SIGPIPE))
        sigtimedwait(&pipe_only, NULL, &zero);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
done:
    free(b.text);
    free(b.p);
    free(b.queue);
}

/* Sticky: once interrupted (at stop), process() gives every event back at once until close. */
static void pipe_interrupt(struct sink *s)
{
    atomic_store(&s->interrupted, true);
    ssize_t w = write(s->wake[1], "x", 1);
    (void)w;
}

/* Closes the handler's input (its cue to finish), waits CLOSE_GRACE_MS for it, then kills its
 * group. */
static void pipe_close(struct sink *s)
{
    if (s == NULL)
        return;
    if (s->pid > 0) {
        close_fd(&s->in_fd);
        long long until = clock_mono_ms() + CLOSE_GRACE_MS;
        while (clock_mono_ms() < until) {
            siginfo_t info;
            memset(&info, 0, sizeof info);
            if (waitid(P_PID, (id_t)s->pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
                info.si_pid == s->pid)
                break;
            /* Keep reading, so a handler writing its last lines is not blocked on a full pipe. */
            char buf[4096];
            while (s->out_fd >= 0 && read(s->out_fd, buf, sizeof buf) > 0)
                ;
            drain_stderr(s);
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        kill(-s->pid, SIGKILL);
        kill(s->pid, SIGKILL);
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR)
            ;
        drain_stderr(s);
        close_fd(&s->out_fd);
        close_fd(&s->err_fd);
    }
    close(s->wake[0]);
    close(s->wake[1]);
    free(s->out.buf);
    free(s->err.buf);
    free(s);
}

const struct sink_ops sink_pipe_ops = {
    .scheme = "pipe",
    .open = pipe_open,
    .batch_max = pipe_batch_max,
    .process = pipe_process,
    .interrupt = pipe_interrupt,
    .close = pipe_close,
    .lane = true,
};
