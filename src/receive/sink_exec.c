/*
 * The exec: sink: a command per event, run by /bin/sh -c with the raw body on its stdin, the
 * event in its environment (an allow-list of the receiver's own: never its settings or keys),
 * stdout shared with the receiver's, stderr kept as the failure reason, nothing else of the
 * receiver's descriptors. Up to --workers commands run at once within one process() call (its
 * batch); exit status 0 is done, anything else (a timeout: --exec-timeout-s) a retry.
 */
#define _GNU_SOURCE /* pipe2(), syscall(): Linux, like prctl() below */

#include "receive/sink.h"

#include "receive/child.h"

#include "receive/dispatch.h"
#include "receive/escape.h"
#include "receive/receiver.h"

#include "util/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STDERR_KEEP 400

extern char **environ;

struct sink {
    char command[RECEIVE_HANDLER_MAX];
    char handler_env[RECEIVE_MAX_HANDLER_ENV][RECEIVE_ENV_NAME_MAX];
    int nhandler_env;
    int timeout_s;
    int workers;
    atomic_bool interrupted; /* start no more commands (those running finish) */
};

/* ---- the environment ---- */

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

/* The handler's environment: what child_env_passed_on() lets through, then the event's variables.
 * Entries from *owned_from on are ours to free (free_env). */
static char **make_env(const struct sink *s, const struct ch_inbox_entry *e, int *owned_from,
                       int *nowned)
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
    int base = 0;
    while (environ[base])
        base++;
    int max = base + 8;
    char **envp = calloc((size_t)max + 1, sizeof *envp);
    if (envp == NULL)
        return NULL;
    int n = 0;
    for (int i = 0; i < base; i++) {
        if (child_env_passed_on(environ[i], s->handler_env[0], s->nhandler_env))
            envp[n++] = environ[i];
    }
    *owned_from = n;
    char type[32] = "", name[CH_CALL_TYPE_NAME_MAX];
    if (e->has_call_type)
        snprintf(type, sizeof type, "%lld", e->call_type);
    ch_call_type_name(route_stored_kind(e->has_call_type, e->call_type), e->call_type, name,
                      sizeof name);
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

static void free_env(char **envp, int owned_from, int nowned)
{
    if (envp == NULL)
        return;
    for (int i = owned_from; i < nowned; i++)
        free(envp[i]);
    free(envp);
}

/* ---- one command ---- */

/* A command under way. */
struct child {
    const struct ch_inbox_entry *e;
    struct sink_result *r;
    pid_t pid;
    int in_fd, err_fd; /* -1 once closed */
    int pid_fd;        /* readable once it exited (pidfd_open); -1: none, poll for the exit */
    size_t written;
    char keep[STDERR_KEEP + 1];
    size_t kept;
    long long deadline; /* monotonic: a clock step neither kills a handler early nor late */
    bool exited;
    int status;
};

/* Starts the command for c->e. False (c->r says why) when it could not. Pipes are made
 * close-on-exec from the start: one made without it and flagged afterwards reaches a sibling
 * command forked in between, which then holds this one's stdin or stderr open. */
static bool spawn(const struct sink *s, struct child *c)
{
    int owned_from = 0, nowned = 0;
    char **envp = make_env(s, c->e, &owned_from, &nowned);
    int in_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    if (envp == NULL || pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
        snprintf(c->r->error, sizeof c->r->error, "cannot start the command: %s",
                 envp ? strerror(errno) : "out of memory");
        goto fail;
    }
    int fd_limit = child_max_fd();
    /* Nice as the dispatcher's thread is (inherited), and at least DISPATCH_NICE. */
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, 0);
    bool renice = errno == 0 && nice_now < DISPATCH_NICE;
    char sh[] = "/bin/sh", dash_c[] = "-c";
    char *argv[] = {sh, dash_c, (char *)s->command, NULL};
    sigset_t none;
    sigemptyset(&none);
    /* vfork: the child borrows this process's memory until it execs, instead of a copy of its
     * page tables (fork's cost grows with the receiver's memory, at every event). Until then
     * it makes system calls only, on values prepared here, and leaves by execve or _exit. */
    pid_t pid = vfork();
    if (pid < 0) {
        snprintf(c->r->error, sizeof c->r->error, "cannot start the command: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        /* The child: its own process group, so a timeout kills everything it started. */
        setpgid(0, 0);
        /* If the receiver dies, so does the handler: the restarted receiver runs it again. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (renice)
            setpriority(PRIO_PROCESS, 0, DISPATCH_NICE);
        dup2(in_pipe[0], STDIN_FILENO);
        dup2(err_pipe[1], STDERR_FILENO);
        child_close_from_3(fd_limit);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL); /* its own copy of the dispositions (no CLONE_SIGHAND) */
        execve(sh, argv, envp);
        _exit(127);
    }
    free_env(envp, owned_from, nowned);
    close(in_pipe[0]);
    close(err_pipe[1]);
    /* Several commands are fed at once: a write must never block on one of them, nor a read
     * of a stderr that something the command left running still holds open. */
    fcntl(in_pipe[1], F_SETFL, fcntl(in_pipe[1], F_GETFL) | O_NONBLOCK);
    fcntl(err_pipe[0], F_SETFL, fcntl(err_pipe[0], F_GETFL) | O_NONBLOCK);
    c->pid = pid;
#ifdef SYS_pidfd_open
    c->pid_fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (c->pid_fd >= 0)
        fcntl(c->pid_fd, F_SETFD, FD_CLOEXEC);
#endif
    c->in_fd = in_pipe[1];
    c->err_fd = err_pipe[0];
    c->deadline = clock_mono_ms() + (long long)s->timeout_s * 1000;
    if (c->e->body_len == 0) {
        close(c->in_fd);
        c->in_fd = -1;
    }
    return true;

fail:
    for (int i = 0; i < 2; i++) {
        if (in_pipe[i] >= 0)
            close(in_pipe[i]);
        if (err_pipe[i] >= 0)
            close(err_pipe[i]);
    }
    free_env(envp, owned_from, nowned);
    return false;
}

/* Feeds stdin as far as the pipe takes it; closes it when all is written or the command
 * stopped reading (EPIPE: a command that does not read its input has still run). */
static void feed(struct child *c)
{
    const char *body = c->e->body;
    ssize_t w = write(c->in_fd, body + c->written, c->e->body_len - c->written);
    if (w > 0)
        c->written += (size_t)w;
    if ((w < 0 && errno != EAGAIN && errno != EINTR) || c->written == c->e->body_len) {
        close(c->in_fd);
        c->in_fd = -1;
    }
}

/* Keeps the first bytes of stderr; closes it at its end. */
static void drain(struct child *c)
{
    char chunk[512];
    ssize_t r = read(c->err_fd, chunk, sizeof chunk);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        close(c->err_fd);
        c->err_fd = -1;
        return;
    }
    if (c->kept < STDERR_KEEP) {
        size_t take = (size_t)r < STDERR_KEEP - c->kept ? (size_t)r : STDERR_KEEP - c->kept;
        memcpy(c->keep + c->kept, chunk, take);
        c->kept += take;
    }
}

/* The result of a command that exited (or was killed at its deadline). */
static void conclude(const struct sink *s, struct child *c, bool timed_out)
{
    c->keep[c->kept] = '\0';
    struct sink_result *r = c->r;
    r->retry_after_ms = 0;
    if (timed_out) {
        r->outcome = SINK_RETRY;
        snprintf(r->error, sizeof r->error, "timed out after %d s", s->timeout_s);
    } else if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0) {
        r->outcome = SINK_DONE;
        r->error[0] = '\0';
    } else if (WIFEXITED(c->status)) {
        r->outcome = SINK_RETRY;
        snprintf(r->error, sizeof r->error, "exit status %d%s%s", WEXITSTATUS(c->status),
                 c->keep[0] ? ": " : "", c->keep);
    } else {
        r->outcome = SINK_RETRY;
        snprintf(r->error, sizeof r->error, "killed by signal %d",
                 WIFSIGNALED(c->status) ? WTERMSIG(c->status) : 0);
    }
}

static void close_fds(struct child *c)
{
    if (c->in_fd >= 0)
        close(c->in_fd);
    if (c->err_fd >= 0)
        close(c->err_fd);
    if (c->pid_fd >= 0)
        close(c->pid_fd);
    c->in_fd = c->err_fd = c->pid_fd = -1;
}

/* Reaps c if it exited: what it wrote to stderr so far is kept, its pipes closed (a process
 * it left running may hold them open: the command's own exit is what counts). */
static bool reap(struct child *c)
{
    if (waitpid(c->pid, &c->status, WNOHANG) != c->pid)
        return false;
    for (int i = 0; i < 8 && c->err_fd >= 0 && c->kept < STDERR_KEEP; i++)
        drain(c);
    close_fds(c);
    c->exited = true;
    return true;
}

/* Runs the started commands ch[0..n) to their ends: feeds their stdin, keeps their stderr,
 * reaps them, kills those past their deadline. */
static void run_all(const struct sink *s, struct child *ch, size_t n)
{
    struct pollfd *fds = calloc(3 * n, sizeof *fds);
    struct child **owner = calloc(3 * n, sizeof *owner);
    size_t left = 0;
    for (size_t i = 0; i < n; i++)
        left += ch[i].pid > 0;
    while (left > 0) {
        size_t nf = 0;
        bool waiting_exit = false;
        long long now = clock_mono_ms(), soonest = now + 1000;
        for (size_t i = 0; i < n; i++) {
            struct child *c = &ch[i];
            if (c->pid <= 0 || c->exited)
                continue;
            if (c->pid_fd < 0 && c->in_fd < 0 && c->err_fd < 0) {
                /* No pidfd, both pipes done: has it exited? (It may close them and go on.) */
                if (reap(c)) {
                    conclude(s, c, false);
                    left--;
                    continue;
                }
                waiting_exit = true;
            } else if (c->pid_fd < 0) {
                waiting_exit = true; /* without a pidfd, its exit is looked for every 5 ms */
                if (reap(c)) {
                    conclude(s, c, false);
                    left--;
                    continue;
                }
            }
            if (now >= c->deadline) {
                kill(-c->pid, SIGKILL);
                waitpid(c->pid, &c->status, 0);
                close_fds(c);
                c->exited = true;
                conclude(s, c, true);
                left--;
                continue;
            }
            if (c->deadline < soonest)
                soonest = c->deadline;
            if (fds && c->in_fd >= 0) {
                fds[nf] = (struct pollfd){.fd = c->in_fd, .events = POLLOUT};
                owner[nf++] = c;
            }
            if (fds && c->err_fd >= 0) {
                fds[nf] = (struct pollfd){.fd = c->err_fd, .events = POLLIN};
                owner[nf++] = c;
            }
            if (fds && c->pid_fd >= 0) {
                fds[nf] = (struct pollfd){.fd = c->pid_fd, .events = POLLIN};
                owner[nf++] = c;
            }
        }
        if (left == 0)
            break;
        long long wait = soonest - now;
        if (waiting_exit && wait > 5)
            wait = 5;
        if (wait < 0)
            wait = 0;
        if (nf == 0 || fds == NULL) {
            struct timespec ts = {0, (long)(wait > 5 ? 5 : wait) * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (poll(fds, (nfds_t)nf, (int)wait) <= 0)
            continue;
        for (size_t k = 0; k < nf; k++) {
            if (fds[k].revents == 0)
                continue;
            struct child *c = owner[k];
            if (c->exited)
                continue;
            if (fds[k].fd == c->pid_fd) {
                if (reap(c)) {
                    conclude(s, c, false);
                    left--;
                }
            } else if (fds[k].fd == c->in_fd) {
                feed(c);
            } else if (fds[k].fd == c->err_fd) {
                drain(c);
            }
        }
    }
    free(fds);
    free(owner);
}

/* ---- the ops ---- */

static ch_code exec_open(const char *target, const struct receive_config *c, struct sink **out,
                         struct ch_error *err)
{
    if (*target == '\0')
        return ch_error_set(err, CH_EINVAL, "no command given");
    struct sink *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    snprintf(s->command, sizeof s->command, "%s", target);
    memcpy(s->handler_env, c->handler_env, sizeof s->handler_env);
    s->nhandler_env = c->nhandler_env;
    s->timeout_s = c->exec_timeout_s;
    s->workers = c->workers > 0 ? c->workers : 1;
    atomic_init(&s->interrupted, false);
    *out = s;
    return CH_OK;
}

/* One event per command, --workers of them side by side: the batch is what runs at once. */
static size_t exec_batch_max(const struct sink *s)
{
    return (size_t)s->workers;
}

static void exec_process(struct sink *s, const struct ch_inbox_entry *events, size_t n,
                         struct sink_result *results)
{
    struct child *ch = calloc(n, sizeof *ch);
    if (ch == NULL) {
        for (size_t i = 0; i < n; i++) {
            results[i].outcome = SINK_RETRY;
            snprintf(results[i].error, sizeof results[i].error, "out of memory");
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        ch[i] = (struct child){
            .e = &events[i], .r = &results[i], .in_fd = -1, .err_fd = -1, .pid_fd = -1};
        results[i].outcome = SINK_RETRY;
        results[i].retry_after_ms = 0;
        if (atomic_load(&s->interrupted)) {
            results[i].outcome = SINK_GIVEN_BACK;
            snprintf(results[i].error, sizeof results[i].error,
                     "not run: the receiver is stopping");
            continue;
        }
        results[i].error[0] = '\0';
        spawn(s, &ch[i]);
    }
    run_all(s, ch, n);
    free(ch);
}

/* Commands already running finish (within their time limit): killing them would only run
 * them again after the restart. No new one starts. */
static void exec_interrupt(struct sink *s)
{
    atomic_store(&s->interrupted, true);
}

static void exec_close(struct sink *s)
{
    free(s);
}

const struct sink_ops sink_exec_ops = {
    .scheme = "exec",
    .open = exec_open,
    .batch_max = exec_batch_max,
    .process = exec_process,
    .interrupt = exec_interrupt,
    .close = exec_close,
};
