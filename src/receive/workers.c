/*
 * The receiver's workers: each takes the oldest due events from the inbox, runs their handlers
 * (a command fed the raw body, or a JSON-lines file: a batch's lines share one sync), and
 * records the outcomes in one transaction. A failure is
 * retried with exponential backoff; after the last try the event is parked as failed, never
 * dropped.
 */
#define _GNU_SOURCE /* pipe2(), syscall(): Linux, like prctl() below */

#include "receive/receiver.h"

#include "receive/escape.h"
#include "receive/live.h"
#include "receive/stats.h"
#include "lib/inbox.h"

#include "util/clock.h"
#include "util/log.h"
#include "util/thread.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_BACKOFF_MS (300 * 1000LL)
#define STDERR_KEEP    400

extern char **environ;

struct worker_pool {
    struct live *live;
    struct receive_stats *stats;
    struct ch_inbox *inbox;
    pthread_t *threads;
    int nthreads;
    atomic_int started; /* gives each thread its number */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned long wakeups;
    bool stop;
};

const char *mask_text(const char *s, char *out, size_t cap)
{
    size_t n = strlen(s);
    if (n <= 8)
        snprintf(out, cap, "%.*s", (int)n, "********");
    else
        snprintf(out, cap, "%.4s…%s", s, s + n - 4);
    return out;
}

/* ---- the exec handler ---- */

static bool set_env(char **envp, int *n, int max, const char *name, const char *value)
{
    if (*n >= max - 1)
        return false;
    size_t len = strlen(name) + strlen(value) + 2;
    char *kv = malloc(len);
    if (kv == NULL)
        return false;
    snprintf(kv, len, "%s=%s", name, value);
    envp[(*n)++] = kv;
    envp[*n] = NULL;
    return true;
}

/* Whether the receiver's variable entry ("NAME=value") goes to handlers: an allow-list, so
 * that the receiver's secrets (its settings, or a WEBHOOK_SECRET read by --secret env:) never
 * do. PATH, HOME and the locale, and what --handler-env names. */
static bool passed_on(const struct receive_config *c, const char *entry)
{
    static const char *const always[] = {"PATH", "HOME", "LANG"};
    size_t n = strcspn(entry, "=");
    if (entry[n] != '=')
        return false;
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) {
        if (strlen(always[i]) == n && strncmp(entry, always[i], n) == 0)
            return true;
    }
    if (strncmp(entry, "LC_", 3) == 0)
        return true;
    for (int i = 0; i < c->nhandler_env; i++) {
        if (strlen(c->handler_env[i]) == n && strncmp(entry, c->handler_env[i], n) == 0)
            return true;
    }
    return false;
}

/* The handler's environment: what passed_on() lets through, then the event's variables.
 * Entries from *owned_from on are ours to free. */
static char **make_env(const struct receive_config *c, const struct ch_inbox_entry *e,
                       const char *active, const char *corr, int *owned_from, int *nowned)
{
    int base = 0;
    while (environ[base])
        base++;
    int max = base + 8;
    char **envp = calloc((size_t)max + 1, sizeof *envp);
    if (envp == NULL)
        return NULL;
    int n = 0;
    for (int i = 0; i < base; i++) {
        if (passed_on(c, environ[i]))
            envp[n++] = environ[i];
    }
    *owned_from = n; /* entries from here on are ours to free */
    char type[32] = "", name[CH_CALL_TYPE_NAME_MAX];
    enum ch_call_type_kind kind = CH_CALL_TYPE_ABSENT;
    if (e->has_call_type) {
        snprintf(type, sizeof type, "%lld", e->call_type);
        kind = e->call_type >= 0 && e->call_type <= 8 ? CH_CALL_TYPE_KNOWN : CH_CALL_TYPE_UNKNOWN;
    }
    ch_call_type_name(kind, e->call_type, name, sizeof name);
    bool ok = set_env(envp, &n, max, "CALL_EVENT", e->event) &&
              set_env(envp, &n, max, "CALL_ACTIVE_CALL_ID", active) &&
              set_env(envp, &n, max, "CALL_CORRELATION_ID", corr) &&
              set_env(envp, &n, max, "CALL_TYPE", type) &&
              set_env(envp, &n, max, "CALL_TYPE_NAME", name) &&
              set_env(envp, &n, max, "WEBHOOK_ID", e->webhook_id);
    *nowned = n;
    if (!ok) {
        for (int i = *owned_from; i < n; i++)
            free(envp[i]);
        free(envp);
        return NULL;
    }
    return envp;
}

/* Feeds the body to the child's stdin and keeps the first bytes of its stderr, until both are
 * done or the deadline passes. Returns false on timeout. */
static bool pump(int in_fd, const char *body, size_t len, int err_fd, char *keep, size_t cap,
                 long long deadline_ms)
{
    size_t written = 0, kept = 0;
    bool in_open = true, err_open = true;
    if (len == 0) {
        close(in_fd);
        in_open = false;
    }
    while (in_open || err_open) {
        struct pollfd fds[2];
        int n = 0;
        if (in_open)
            fds[n++] = (struct pollfd){.fd = in_fd, .events = POLLOUT};
        if (err_open)
            fds[n++] = (struct pollfd){.fd = err_fd, .events = POLLIN};
        long long left = deadline_ms - clock_mono_ms();
        if (left <= 0)
            break;
        if (poll(fds, (nfds_t)n, (int)(left > 1000 ? 1000 : left)) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            if (fds[i].revents == 0)
                continue;
            if (fds[i].fd == in_fd) {
                ssize_t w = write(in_fd, body + written, len - written);
                if (w > 0)
                    written += (size_t)w;
                /* A command that does not read its input has still run: EPIPE ends feeding. */
                if (w < 0 || written == len) {
                    close(in_fd);
                    in_open = false;
                }
            } else {
                char chunk[512];
                ssize_t r = read(err_fd, chunk, sizeof chunk);
                if (r <= 0) {
                    err_open = false;
                } else if (kept + 1 < cap) {
                    size_t take = (size_t)r < cap - 1 - kept ? (size_t)r : cap - 1 - kept;
                    memcpy(keep + kept, chunk, take);
                    kept += take;
                }
            }
        }
    }
    keep[kept] = '\0';
    if (in_open)
        close(in_fd);
    return !(in_open || err_open);
}

/* Close-on-exec from the start: a pipe made without it and flagged afterwards reaches a
 * sibling worker's child forked in between, which then holds this handler's stdin or stderr
 * open (and the handler looks timed out). */
static bool cloexec_pipe(int fds[2])
{
    return pipe2(fds, O_CLOEXEC) == 0;
}

/* The highest descriptor a process may hold, read before fork: the child may only make
 * async-signal-safe calls. */
static int max_fd(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 65536)
        return 65536;
    return (int)rl.rlim_cur;
}

/* In the child, before exec: everything but stdin, stdout and stderr goes, including what the
 * receiver inherited from its own parent without close-on-exec. */
static void close_from_3(int limit)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
        return;
#endif
    for (int fd = 3; fd < limit; fd++)
        close(fd);
}

static bool run_exec(const struct receive_config *c, const struct handler *h,
                     const struct ch_inbox_entry *e, char *error, size_t cap)
{
    struct ch_record rec;
    /* The ids as text a shell can show: an escaped control character in the record (say an
     * ESC) must not arrive raw in the handler's variables. */
    char active[TEXT_ESCAPE_GROWTH * CH_RECORD_ID_MAX + 1] = "";
    char corr[TEXT_ESCAPE_GROWTH * CH_RECORD_ID_MAX + 1] = "";
    if (ch_record_parse(&rec, e->body, e->body_len, 0, NULL) == CH_OK) {
        if (rec.has_active_call_id)
            text_escape(rec.active_call_id, strlen(rec.active_call_id), active, sizeof active);
        if (rec.has_correlation_id)
            text_escape(rec.correlation_id, strlen(rec.correlation_id), corr, sizeof corr);
    }
    int owned_from = 0, nowned = 0;
    char **envp = make_env(c, e, active, corr, &owned_from, &nowned);
    int in_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    if (envp == NULL || !cloexec_pipe(in_pipe) || !cloexec_pipe(err_pipe)) {
        snprintf(error, cap, "cannot start the command: %s", strerror(errno));
        goto fail_early;
    }
    int fd_limit = max_fd();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(error, cap, "cannot start the command: %s", strerror(errno));
        goto fail_early;
    }
    if (pid == 0) {
        /* The child: its own process group, so a timeout kills everything it started. */
        setpgid(0, 0);
        /* If the receiver dies, so does the handler: the restarted receiver runs it again. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in_pipe[0], STDIN_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        close_from_3(fd_limit);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        char sh[] = "/bin/sh", dash_c[] = "-c";
        char *argv[] = {sh, dash_c, (char *)h->target, NULL};
        execve(sh, argv, envp);
        _exit(127);
    }
    close(in_pipe[0]);
    close(err_pipe[1]);
    char keep[STDERR_KEEP + 1];
    /* Monotonic: a clock step neither kills a handler early nor lets it run on. */
    long long deadline = clock_mono_ms() + (long long)c->exec_timeout_s * 1000;
    bool finished =
        pump(in_pipe[1], e->body, e->body_len, err_pipe[0], keep, sizeof keep, deadline);
    close(err_pipe[0]);
    int status = 0;
    bool timed_out = !finished;
    while (!timed_out) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (clock_mono_ms() >= deadline) {
            timed_out = true;
            break;
        }
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (timed_out) {
        kill(-pid, SIGKILL);
        waitpid(pid, &status, 0);
        snprintf(error, cap, "timed out after %d s", c->exec_timeout_s);
    }
    for (int i = owned_from; i < nowned; i++)
        free(envp[i]);
    free(envp);
    if (timed_out)
        return false;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    if (WIFEXITED(status))
        snprintf(error, cap, "exit status %d%s%s", WEXITSTATUS(status), keep[0] ? ": " : "", keep);
    else
        snprintf(error, cap, "killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return false;

fail_early:
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    if (envp) {
        for (int i = owned_from; i < nowned; i++)
            free(envp[i]);
        free(envp);
    }
    return false;
}

/* ---- the jsonl handler ---- */

/* One writer at a time in this process, so lines never interleave. */
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

/* Appends the lines of events e[0..n) to the handler's file and syncs it once: all of them are
 * durable when it returns true. */
static bool run_jsonl(const struct handler *h, const struct ch_inbox_entry *const *e, size_t n,
                      char *error, size_t cap)
{
    char *lines = NULL;
    size_t len = 0, room = 0;
    for (size_t i = 0; i < n; i++) {
        if (!jsonl_line(e[i], &lines, &len, &room)) {
            free(lines);
            snprintf(error, cap, "out of memory writing a line");
            return false;
        }
    }
    bool ok = false;
    pthread_mutex_lock(&jsonl_lock);
    int fd = open(h->target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        say(error, cap, "cannot open '%s': %s", h->target, strerror(errno));
    } else {
        /* Whole lines, then an fsync before any of these events counts as processed. */
        size_t done = 0;
        ssize_t w = 0;
        while (done < len && (w = write(fd, lines + done, len - done)) > 0)
            done += (size_t)w;
        if (done != len)
            say(error, cap, "cannot write '%s': %s", h->target,
                w < 0 ? strerror(errno) : "short write");
        else if (fdatasync(fd) != 0)
            say(error, cap, "cannot sync '%s': %s", h->target, strerror(errno));
        else
            ok = true;
        close(fd);
    }
    pthread_mutex_unlock(&jsonl_lock);
    free(lines);
    return ok;
}

bool handler_run(const struct receive_config *c, const struct handler *h,
                 const struct ch_inbox_entry *e, char *error, size_t cap)
{
    error[0] = '\0';
    switch (h->kind) {
    case HANDLER_EXEC:
        return run_exec(c, h, e, error, cap);
    case HANDLER_JSONL:
        return run_jsonl(h, &e, 1, error, cap);
    case HANDLER_NONE:
        break;
    }
    return true; /* no handler: stored durably is all that was asked */
}

/* ---- the pool ---- */

/* Events a worker takes at once. With a command among the handlers, one: commands take
 * milliseconds, and --workers of them are meant to run side by side. */
#define WORKER_BATCH 64

/* How long a short batch's successor may gather. Handlers run this much later at most. */
#define COALESCE_MS 5

/* The CallType as the front stored it, read as ch_record_parse() reads it. */
static enum ch_call_type_kind stored_kind(const struct ch_inbox_entry *e)
{
    if (!e->has_call_type)
        return CH_CALL_TYPE_ABSENT;
    return e->call_type >= CH_CALL_TYPE_GENERIC_CALL && e->call_type <= CH_CALL_TYPE_OUTBOUND_CALL
               ? CH_CALL_TYPE_KNOWN
               : CH_CALL_TYPE_UNKNOWN;
}

/* What became of one event of a batch. */
struct result {
    const struct handler *h;
    bool ran; /* the handler has run (for jsonl: its line is written and synced) */
    bool ok;
    char error[512];
};

/* Runs the handlers of a batch: the JSON-lines events of one file together (one sync), the
 * others one by one. */
static void run_batch(const struct receive_config *c, struct ch_inbox_entry *e, struct result *res,
                      size_t n)
{
    for (size_t i = 0; i < n; i++) {
        res[i].h = route_pick(c, e[i].event, stored_kind(&e[i]), e[i].call_type);
        res[i].ran = false;
        res[i].error[0] = '\0';
    }
    for (size_t i = 0; i < n; i++) {
        if (res[i].ran)
            continue;
        const struct handler *h = res[i].h;
        if (h->kind != HANDLER_JSONL) {
            res[i].ok = handler_run(c, h, &e[i], res[i].error, sizeof res[i].error);
            res[i].ran = true;
            continue;
        }
        const struct ch_inbox_entry *group[WORKER_BATCH];
        size_t members[WORKER_BATCH], m = 0;
        for (size_t k = i; k < n; k++) {
            if (!res[k].ran && res[k].h->kind == HANDLER_JSONL &&
                strcmp(res[k].h->target, h->target) == 0) {
                group[m] = &e[k];
                members[m++] = k;
            }
        }
        char error[512] = "";
        bool ok = run_jsonl(h, group, m, error, sizeof error);
        for (size_t k = 0; k < m; k++) {
            struct result *r = &res[members[k]];
            r->ran = true;
            r->ok = ok;
            snprintf(r->error, sizeof r->error, "%s", error);
        }
    }
}

/* The outcome to record for one event, logged and counted as it is decided. */
static struct inbox_outcome outcome(const struct receive_config *c, struct receive_stats *stats,
                                    const struct ch_inbox_entry *e, const struct result *r,
                                    long long now)
{
    char masked[64], name[CH_CALL_TYPE_NAME_MAX];
    mask_text(e->call_key, masked, sizeof masked);
    ch_call_type_name(stored_kind(e), e->call_type, name, sizeof name);
    struct inbox_outcome o = {.seq = e->seq, .status = CH_INBOX_DONE};
    if (r->ok) {
        stats_outcome(stats, OUTCOME_DONE);
        log_info("processed %s %s call %s (%s)", e->event, e->webhook_id, masked, name);
    } else if (e->attempts >= c->max_attempts) {
        stats_outcome(stats, OUTCOME_FAILED);
        o.status = CH_INBOX_FAILED;
        o.error = r->error;
        log_warn("parked %s %s after %d tries; 'callhook inbox retry %s' runs it again", e->event,
                 e->webhook_id, e->attempts, e->webhook_id);
    } else {
        long long delay = (long long)c->retry_base_ms;
        for (int i = 1; i < e->attempts && delay < MAX_BACKOFF_MS; i++)
            delay *= 2;
        if (delay > MAX_BACKOFF_MS)
            delay = MAX_BACKOFF_MS;
        stats_outcome(stats, OUTCOME_RETRY);
        o.status = CH_INBOX_PENDING;
        o.next_at = now + delay;
        o.error = r->error;
        log_warn("handler failed for %s %s (try %d of %d); again in %lld ms", e->event,
                 e->webhook_id, e->attempts, c->max_attempts, delay);
    }
    return o;
}

/* Runs a batch with the settings c (held: a reload meanwhile does not change them under the
 * handlers) and records the outcomes. */
static void process(struct worker_pool *p, const struct receive_config *c, struct ch_inbox_entry *e,
                    size_t n)
{
    struct result res[WORKER_BATCH];
    struct inbox_outcome out[WORKER_BATCH];
    run_batch(c, e, res, n);
    long long now = clock_wall_ms(); /* due times are stored: the wall clock */
    for (size_t i = 0; i < n; i++)
        out[i] = outcome(c, p->stats, &e[i], &res[i], now);
    struct ch_error err = {0};
    if (inbox_finish_many(p->inbox, out, n, now / 1000, &err) != CH_OK) {
        for (size_t i = 0; i < n; i++)
            log_error("cannot record the outcome of %s: %s (it runs again after a restart)",
                      e[i].webhook_id, err.message);
    }
}

/* Sleeps ms milliseconds, or less if the pool is stopping. */
static void pause_ms(struct worker_pool *p, long long ms)
{
    struct timespec until = clock_timespec(clock_mono_ms() + ms);
    pthread_mutex_lock(&p->lock);
    while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&p->lock);
}

static bool runs_commands(const struct receive_config *c)
{
    bool any = c->fallback.kind == HANDLER_EXEC;
    for (int i = 0; i < c->nroutes; i++)
        any |= c->routes[i].handler.kind == HANDLER_EXEC;
    return any;
}

static void *worker_main(void *arg)
{
    struct worker_pool *p = arg;
    struct ch_inbox_entry batch[WORKER_BATCH];
    int me = atomic_fetch_add(&p->started, 1);
    thread_name("ch-worker");
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool stop = p->stop;
        unsigned long seen = p->wakeups;
        pthread_mutex_unlock(&p->lock);
        if (stop)
            break;
        /* Commands run side by side, one event each. JSON-lines files are written one batch
         * at a time anyway (jsonl_lock), so without commands the first thread does it all:
         * more would only add transactions that the front's commits wait behind. The
         * settings in force decide, so a reload that adds or removes a command is followed. */
        const struct receive_config *c = live_get(p->live);
        bool commands = runs_commands(c);
        size_t max = commands ? 1 : WORKER_BATCH;
        size_t n = 0;
        long long next_due = 0;
        struct ch_error err = {0};
        ch_code rc = commands || me == 0 ? inbox_take_many(p->inbox, clock_wall_ms(), batch, max,
                                                           &n, &next_due, &err)
                                         : CH_ENOTFOUND;
        if (rc == CH_OK)
            process(p, c, batch, n);
        live_put(p->live, c);
        if (rc == CH_OK) {
            for (size_t i = 0; i < n; i++)
                ch_inbox_entry_release(&batch[i]);
            /* A short batch: let the next one gather for a moment, so that a steady stream is
             * processed in full batches (one sync, two transactions) rather than a few events
             * at a time. */
            if (max > 1 && n < max)
                pause_ms(p, COALESCE_MS);
            continue;
        }
        if (rc != CH_ENOTFOUND)
            log_error("cannot read the inbox: %s", err.message);
        /* Nothing due: sleep until woken by a new event, the next retry, or a second. */
        long long wait_ms = 1000;
        long long now = clock_wall_ms(); /* next_due is a stored due time */
        if (next_due > 0 && next_due - now < wait_ms)
            wait_ms = next_due - now > 0 ? next_due - now : 0;
        struct timespec until = clock_timespec(clock_mono_ms() + wait_ms);
        pthread_mutex_lock(&p->lock);
        while (!p->stop && p->wakeups == seen) {
            if (pthread_cond_timedwait(&p->cond, &p->lock, &until) != 0)
                break;
        }
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

ch_code worker_pool_start(struct live *live, struct receive_stats *stats, struct ch_inbox *inbox,
                          int nthreads, struct worker_pool **out, struct ch_error *err)
{
    struct worker_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    p->live = live;
    p->stats = stats;
    p->inbox = inbox;
    pthread_mutex_init(&p->lock, NULL);
    /* Timed waits on the monotonic clock: a clock step back must not stretch a sleep. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (p->threads == NULL) {
        free(p);
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    }
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0)
            break;
        p->nthreads++;
    }
    if (p->nthreads == 0) {
        free(p->threads);
        free(p);
        return ch_error_set(err, CH_ENOMEM, "cannot start worker threads");
    }
    *out = p;
    return CH_OK;
}

void worker_pool_wake(struct worker_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->wakeups++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

void worker_pool_stop(struct worker_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p->threads);
    free(p);
}
