/* `callhook simulate`: plays a calling platform against a running serve. Calls start at a set
 * rate; each posts a begin-call record, lasts a random time, then posts its end-call record, and
 * now and then an event is posted twice, as an upstream retry would. A few worker threads, each
 * with its own connection, take due events from one time-ordered queue. */
#include "cli/cli.h"

#include "cli/client.h"
#include "util/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CALLS         1000000
#define MAX_WORKERS       64
#define DEFAULT_WORKERS   8
#define MAX_STATUS        600
#define PROGRESS_EVERY_MS 200
#define DUP_DELAY_MAX_MS  500 /* an upstream retry comes this soon after the original */
#define TENANT_ID         "00000000-1111-2222-3333-444444444444"

void cmd_simulate_help(void)
{
    puts("usage: callhook simulate --app ID --calls N [--rate R] [--duplicates P]\n"
         "                         [--min-duration-ms A] [--max-duration-ms B] [--seed S]\n"
         "                         [--workers W]\n"
         "\n"
         "Plays a calling platform against a running serve, to try a Voice App's receiver or to\n"
         "load serve. Starts N calls at R per second. Each call posts a begin-call record\n"
         "(CallType 4 ActiveCall, or 8 OutboundCall), lasts a random time from A to B ms, then\n"
         "posts its end-call record with the final CallType (1 AnsweredCall, 2 MissedCall,\n"
         "5 VoiceMail, 6 CallTransfered, 7 CallAnsweredManually, and sometimes a value the\n"
         "platform may add later, 42). With probability P an event is posted a second time,\n"
         "as the platform does when it retries: serve must answer it as a duplicate. Records\n"
         "are shaped like tests/data/payloads/; names and numbers (+1555010xxxx) are fictitious.\n"
         "\n"
         "Shows a progress line on a terminal and prints a summary: events sent, accepted (202),\n"
         "duplicates (200), errors by status, time and rate. Exits 1 when any event got an\n"
         "error, or serve's duplicate answers do not match the duplicates sent. Needs an ingest\n"
         "or admin key. Ctrl-C stops early, with the summary so far.\n"
         "\n"
         "  --app ID              the Voice App the calls are for (see 'callhook app list')\n"
         "  --calls N             how many calls, 1 to 1000000\n"
         "  --rate R              calls started per second (default 10; fractions allowed)\n"
         "  --duplicates P        chance from 0 to 1 that an event is posted twice (0.05)\n"
         "  --min-duration-ms A   shortest call (default 1000)\n"
         "  --max-duration-ms B   longest call (default 10000)\n"
         "  --seed S              repeat a run's shape: call types, durations, duplicates,\n"
         "                        names (the call ids are new each run, so serve takes them)\n"
         "  --workers W           requests in flight at once, 1 to 64 (default 8)\n"
         "\n"
         "connection (--json prints the summary as JSON):\n" CLI_CLIENT_OPTIONS_HELP "\n"
         "\n"
         "example:\n"
         "  callhook simulate --app support --calls 200 --rate 20 --duplicates 0.1");
}

enum {
    OPT_APP = CLI_OPT_FIRST_FREE,
    OPT_CALLS,
    OPT_RATE,
    OPT_DUPLICATES,
    OPT_MIN_DURATION,
    OPT_MAX_DURATION,
    OPT_SEED,
    OPT_WORKERS,
};

/* One simulated call: what its records say is derived from its index and the seeds, so a
 * duplicate is the same bytes as its original. */
struct sim_call {
    int64_t begin_due_ms;  /* monotonic */
    int64_t start_wall_ms; /* set when the begin-call goes out */
    int32_t duration_ms;
    int32_t wait_ms; /* ringing or queued before an answer */
    uint8_t begin_type;
    uint8_t end_type;
    bool dup_begin, dup_end;
};

enum sim_kind { SIM_BEGIN, SIM_END };

struct sim_event {
    int64_t due_ms; /* monotonic */
    uint32_t call;
    uint8_t kind; /* enum sim_kind */
    bool dup;
};

struct sim_stats {
    long long calls_started, calls_ended;
    long long sent, accepted, duplicates, dups_sent, errors;
    long long by_status[MAX_STATUS]; /* errors; [0] is no answer */
    char first_error[256];
};

struct sim {
    /* Settings, read-only once the workers run. */
    const char *app;
    char path_begin[512], path_end[512];
    uint32_t ncalls;
    uint64_t seed, id_nonce;
    int64_t t0_ms;
    struct sim_call *calls; /* owned, ncalls */

    /* The queue and the counters, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct sim_event *heap; /* owned: a min-heap on due_ms */
    size_t nheap, heap_cap;
    long long remaining; /* events still to send, duplicates included */
    bool stop;
    long stopped_by; /* an answer every later event would get too (401, 403, 404); 0: none */
    struct sim_stats st;
};

/* Set by SIGINT: the one mutable global, because a signal handler can reach nothing else. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- randomness and time ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static uint32_t rand_below(uint64_t *state, uint32_t n)
{
    return n ? (uint32_t)(splitmix64(state) % n) : 0;
}

static double rand_unit(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) / 9007199254740992.0;
}

/* A seed nobody chose: the kernel's randomness, else the clock and the pid. */
static uint64_t fresh_seed(void)
{
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, &s, sizeof s);
        close(fd);
        if (n == (ssize_t)sizeof s)
            return s;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
}

static void uuid_v4(uint64_t *state, char out[37])
{
    uint64_t hi = splitmix64(state), lo = splitmix64(state);
    hi = (hi & ~0xF000ull) | 0x4000ull;                        /* version 4 */
    lo = (lo & 0x3FFFFFFFFFFFFFFFull) | 0x8000000000000000ull; /* variant 10 */
    snprintf(out, 37, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(hi >> 32),
             (unsigned long long)((hi >> 16) & 0xFFFF), (unsigned long long)(hi & 0xFFFF),
             (unsigned long long)(lo >> 48), (unsigned long long)(lo & 0xFFFFFFFFFFFFull));
}

static void iso_time(int64_t wall_ms, char out[32])
{
    time_t s = (time_t)(wall_ms / 1000);
    struct tm tm;
    char day[24];
    gmtime_r(&s, &tm);
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", day, (int)(wall_ms % 1000));
}

/* ---- the records ---- */

static const char *const first_names[] = {"Jane",  "Omar",  "Mei", "Lars", "Ana",  "Kwame",
                                          "Priya", "Tomás", "Zoë", "Ivan", "Aiko", "Sam"};
static const char *const last_names[] = {"Example", "Sample", "Placeholder", "Doe",     "Roe",
                                         "Testa",   "Muster", "Fictive",     "Ünïcødé", "Lee"};
static const char *const agents[] = {"Sam Agent", "Riley Agent", "Alex Agent", "Jordan Agent"};
static const char *const languages[] = {"en-US", "en-GB", "de-DE", "fr-FR", "es-ES"};
static const char *const queues[][2] = {{"q-support-en", "Support (English)"},
                                        {"q-sales-en", "Sales (English)"},
                                        {"q-billing-en", "Billing (English)"}};

/* Final CallTypes with weights in percent: inbound calls, then outbound ones. */
static const uint8_t inbound_end[][2] = {{1, 45}, {2, 15}, {5, 10}, {6, 12}, {7, 13}, {42, 5}};
static const uint8_t outbound_end[][2] = {{1, 70}, {2, 25}, {42, 5}};

static uint8_t pick_end_type(uint64_t *r, bool outbound)
{
    const uint8_t(*table)[2] = outbound ? outbound_end : inbound_end;
    size_t n = outbound ? sizeof outbound_end / sizeof outbound_end[0]
                        : sizeof inbound_end / sizeof inbound_end[0];
    uint32_t x = rand_below(r, 100);
    for (size_t i = 0; i < n; i++) {
        if (x < table[i][1])
            return table[i][0];
        x -= table[i][1];
    }
    return table[0][0];
}

static bool answered(uint8_t type)
{
    return type == 1 || type == 6 || type == 7 || type == 42;
}

static const char *end_reason(uint8_t type, uint64_t *r)
{
    switch (type) {
    case 2:
        return "QueueTimeout";
    case 5:
        return "VoicemailRecorded";
    case 6:
        return "Transferred";
    default:
        return rand_below(r, 2) ? "CallerHangUp" : "AgentHangUp";
    }
}

/* The record of one event as JSON text (caller frees), or NULL when out of memory. */
static char *make_record(const struct sim *s, uint32_t index, enum sim_kind kind)
{
    const struct sim_call *call = &s->calls[index];
    uint64_t ids = s->id_nonce ^ ((uint64_t)index * 0x9E3779B97F4A7C15ull);
    uint64_t r = s->seed ^ ((uint64_t)index * 0xD1B54A32D192ED03ull);
    char doc_id[37], active_id[37], correlation_id[37], agent_id[37];
    uuid_v4(&ids, doc_id);
    uuid_v4(&ids, active_id);
    uuid_v4(&ids, correlation_id);
    uuid_v4(&r, agent_id);
    bool outbound = call->begin_type == 8;
    bool end = kind == SIM_END;
    uint8_t type = end ? call->end_type : call->begin_type;

    char caller[24], called[24], name[64], agent_email[64], crm[24], app_name[160];
    const char *first = first_names[rand_below(&r, sizeof first_names / sizeof *first_names)];
    const char *last = last_names[rand_below(&r, sizeof last_names / sizeof *last_names)];
    snprintf(name, sizeof name, "%s %s", first, last);
    snprintf(caller, sizeof caller, "+1555010%04u", rand_below(&r, 10000));
    snprintf(called, sizeof called, "+1555010%04u", rand_below(&r, 10000));
    const char *agent = agents[rand_below(&r, sizeof agents / sizeof *agents)];
    snprintf(agent_email, sizeof agent_email, "%.*s.agent@example.com", (int)strcspn(agent, " "),
             agent);
    for (char *p = agent_email; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    const char *const *queue = queues[rand_below(&r, sizeof queues / sizeof *queues)];
    snprintf(crm, sizeof crm, "CRM-%06u", rand_below(&r, 1000000));
    snprintf(app_name, sizeof app_name, "Simulated %s", s->app);
    const char *language = languages[rand_below(&r, sizeof languages / sizeof *languages)];
    bool has_name = rand_below(&r, 4) != 0;
    const char *ivr = outbound ? "" : rand_below(&r, 2) ? "1" : "2";
    int voicemail_s = (int)rand_below(&r, 60) + 5;
    /* Last, as it draws only for some types: what comes before is the same in both records. */
    const char *reason = end_reason(type, &r);

    char start[32], answer[32], finish[32];
    int64_t start_ms = call->start_wall_ms;
    int64_t end_ms = start_ms + call->duration_ms;
    int64_t answer_ms = start_ms + call->wait_ms;
    iso_time(start_ms, start);
    iso_time(answer_ms, answer);
    iso_time(end_ms, finish);
    bool talked = end && answered(type);

    json_t *agent_obj = json_pack("{s:s, s:s, s:s, s:s}", "UserId", agent_id, "DisplayName", agent,
                                  "Email", agent_email, "UserPrincipalName", agent_email);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s?, s:s}", "id", doc_id,
                          "ActiveCallId", active_id, "CorrelationId", correlation_id, "TenantId",
                          TENANT_ID, "VoiceAppId", s->app, "VoiceAppName", app_name, "CallType",
                          (int)type, "Direction", outbound ? "Outbound" : "Inbound", "CallerId",
                          outbound ? called : caller, "CallerDisplayName", has_name ? name : NULL,
                          "CalledNumber", outbound ? caller : called);
    if (o == NULL || agent_obj == NULL) {
        json_decref(o);
        json_decref(agent_obj);
        return NULL;
    }
    json_object_set_new(o, "QueueId", outbound ? json_null() : json_string(queue[0]));
    json_object_set_new(o, "QueueName", outbound ? json_null() : json_string(queue[1]));
    json_object_set_new(o, "StartTimeUtc", json_string(start));
    json_object_set_new(o, "AnswerTimeUtc", talked ? json_string(answer) : json_null());
    json_object_set_new(o, "EndTimeUtc", end ? json_string(finish) : json_null());
    json_object_set_new(
        o, "WaitDurationSeconds",
        json_integer(end ? (talked ? call->wait_ms : call->duration_ms) / 1000 : 0));
    json_object_set_new(o, "TalkDurationSeconds",
                        json_integer(talked ? (call->duration_ms - call->wait_ms) / 1000 : 0));
    /* An outbound call has its agent from the start; an inbound one once answered. */
    if (outbound || talked)
        json_object_set_new(o, "Agent", agent_obj);
    else {
        json_object_set_new(o, "Agent", json_null());
        json_decref(agent_obj);
    }
    json_object_set_new(o, "Language", json_string(language));
    json_object_set_new(o, "CustomData",
                        json_pack("{s:s, s:s}", "crmContactId", crm, "ivrSelection", ivr));
    json_object_set_new(o, "_ts", json_integer((end ? end_ms : start_ms) / 1000));
    if (end) {
        json_object_set_new(o, "EndReason", json_string(reason));
        if (type == 5)
            json_object_set_new(o, "Voicemail",
                                json_pack("{s:i, s:s}", "DurationSeconds", voicemail_s,
                                          "Transcript",
                                          "Hi, this is a simulated caller, please call me back."));
        if (type == 6)
            json_object_set_new(o, "Transfer",
                                json_pack("{s:s, s:s, s:s}", "TargetType", "User", "Target",
                                          "tier2@example.com", "TimeUtc", finish));
        if (type == 42)
            json_object_set_new(o, "SomeFieldAddedLater",
                                json_pack("{s:[i,i,i]}", "nested", 1, 2, 3));
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* ---- the queue ---- */

static void heap_push(struct sim *s, struct sim_event e)
{
    /* Room for every event was made up front: at most four per call. */
    size_t i = s->nheap++;
    while (i > 0 && s->heap[(i - 1) / 2].due_ms > e.due_ms) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
}

static struct sim_event heap_pop(struct sim *s)
{
    struct sim_event top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->nheap)
            break;
        if (child + 1 < s->nheap && s->heap[child + 1].due_ms < s->heap[child].due_ms)
            child++;
        if (s->heap[child].due_ms >= last.due_ms)
            break;
        s->heap[i] = s->heap[child];
        i = child;
    }
    if (s->nheap > 0)
        s->heap[i] = last;
    return top;
}

static void wait_until(struct sim *s, int64_t due_ms)
{
    struct timespec ts = clock_timespec(due_ms);
    pthread_cond_timedwait(&s->changed, &s->lock, &ts);
}

/* Takes the next due event, waiting for it; false when there is nothing more to do. */
static bool next_event(struct sim *s, struct sim_event *e)
{
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (s->stop || s->remaining == 0) {
            pthread_mutex_unlock(&s->lock);
            return false;
        }
        if (s->nheap == 0) {
            /* What is left is pushed when a request under way ends. */
            pthread_cond_wait(&s->changed, &s->lock);
            continue;
        }
        int64_t now = clock_mono_ms();
        if (s->heap[0].due_ms > now) {
            wait_until(s, s->heap[0].due_ms);
            continue;
        }
        *e = heap_pop(s);
        if (e->kind == SIM_BEGIN && !e->dup) {
            s->calls[e->call].start_wall_ms = clock_wall_ms();
            s->st.calls_started++;
        }
        pthread_mutex_unlock(&s->lock);
        return true;
    }
}

/* Counts one answer and queues what follows it: the call's end, or an upstream duplicate. */
static void event_done(struct sim *s, const struct sim_event *e, long status, bool duplicate,
                       const char *error)
{
    uint64_t r = s->seed ^ ((uint64_t)e->call << 1 | e->kind) ^ 0xA5A5A5A5ull;
    const struct sim_call *call = &s->calls[e->call];
    int64_t now = clock_mono_ms();
    pthread_mutex_lock(&s->lock);
    struct sim_stats *st = &s->st;
    st->sent++;
    if (e->dup)
        st->dups_sent++;
    if (status == 202 && !duplicate)
        st->accepted++;
    else if (status == 200 && duplicate)
        st->duplicates++;
    else {
        st->errors++;
        st->by_status[status > 0 && status < MAX_STATUS ? status : 0]++;
        if (st->first_error[0] == '\0')
            snprintf(st->first_error, sizeof st->first_error, "%s", error);
        /* No such app, an unknown key, a key of the wrong role: every other event would get
         * the same answer, so the run stops at the first rather than sending them all. */
        if ((status == 401 || status == 403 || status == 404) && !s->stop) {
            s->stop = true;
            s->stopped_by = status;
        }
    }
    if (!e->dup) {
        bool dup = e->kind == SIM_BEGIN ? call->dup_begin : call->dup_end;
        if (dup)
            heap_push(s, (struct sim_event){.due_ms = now + 1 + rand_below(&r, DUP_DELAY_MAX_MS),
                                            .call = e->call,
                                            .kind = e->kind,
                                            .dup = true});
        if (e->kind == SIM_BEGIN)
            heap_push(
                s, (struct sim_event){.due_ms = s->calls[e->call].begin_due_ms + call->duration_ms,
                                      .call = e->call,
                                      .kind = SIM_END});
        else
            st->calls_ended++;
    }
    s->remaining--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

struct worker {
    struct sim *sim;
    struct cli_client *client; /* owned by the worker's creator */
    pthread_t thread;
};

static void send_event(struct worker *w, const struct sim_event *e, struct cli_response *resp)
{
    struct sim *s = w->sim;
    char error[256] = "";
    long status = 0;
    bool duplicate = false;
    char *body = make_record(s, e->call, (enum sim_kind)e->kind);
    struct ch_error err;
    if (body == NULL)
        snprintf(error, sizeof error, "out of memory making a record");
    else if (cli_client_request(w->client, "POST",
                                e->kind == SIM_BEGIN ? s->path_begin : s->path_end, body,
                                strlen(body), NULL, resp, &err) != CH_OK)
        snprintf(error, sizeof error, "%s", err.message);
    else {
        status = resp->status;
        json_t *answer = json_loadb(resp->body.data, resp->body.len, 0, NULL);
        duplicate = json_is_true(json_object_get(answer, "duplicate"));
        json_decref(answer);
        if (status != 202 && status != 200)
            cli_response_error(resp, error, sizeof error);
        else if ((status == 200) != duplicate)
            snprintf(error, sizeof error, "HTTP %ld with \"duplicate\": %s", status,
                     duplicate ? "true" : "false");
    }
    free(body);
    event_done(s, e, status, duplicate, error);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct cli_response resp;
    cli_response_init(&resp);
    struct sim_event e;
    while (next_event(w->sim, &e))
        send_event(w, &e, &resp);
    cli_response_release(&resp);
    return NULL;
}

/* ---- progress and summary ---- */

static void progress(const struct sim *s, const struct sim_stats *stats, int64_t now_ms)
{
    struct sim_stats st = *stats;
    double elapsed = (double)(now_ms - s->t0_ms) / 1000.0;
    fprintf(stderr,
            "\r\033[Kcalls %lld/%u started, %lld ended | events %lld sent: %lld accepted, %lld "
            "duplicate, %lld error%s | %.1f events/s | %.1f s",
            st.calls_started, s->ncalls, st.calls_ended, st.sent, st.accepted, st.duplicates,
            st.errors, st.errors == 1 ? "" : "s", elapsed > 0 ? (double)st.sent / elapsed : 0.0,
            elapsed);
    fflush(stderr);
}

/* Returns true when the counts show nothing unexpected. */
static bool summary(const struct sim *s, double elapsed_s, bool json)
{
    const struct sim_stats *st = &s->st;
    double rate = elapsed_s > 0 ? (double)st->sent / elapsed_s : 0.0;
    bool dup_mismatch = st->errors == 0 && st->duplicates != st->dups_sent;
    if (json) {
        json_t *by = json_object();
        for (int i = 0; i < MAX_STATUS; i++) {
            char key[8];
            snprintf(key, sizeof key, "%d", i);
            if (st->by_status[i])
                json_object_set_new(by, key, json_integer(st->by_status[i]));
        }
        json_t *o = json_pack(
            "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:s?, s:f, s:f, "
            "s:s, s:b, s:I}",
            "app", s->app, "seed", (json_int_t)s->seed, "calls", (json_int_t)s->ncalls,
            "callsStarted", (json_int_t)st->calls_started, "callsEnded",
            (json_int_t)st->calls_ended, "eventsSent", (json_int_t)st->sent,
            "upstreamDuplicatesSent", (json_int_t)st->dups_sent, "accepted",
            (json_int_t)st->accepted, "duplicates", (json_int_t)st->duplicates, "errors", by,
            "firstError", st->first_error[0] ? st->first_error : NULL, "elapsedSeconds", elapsed_s,
            "eventsPerSecond", rate, "result", st->errors || dup_mismatch ? "failed" : "ok",
            "interrupted", (int)(interrupted != 0), "stoppedByStatus", (json_int_t)s->stopped_by);
        char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(o);
    } else {
        printf("%s %lld of %u calls on voice app '%s' (seed %lld): %lld ended\n",
               interrupted     ? "interrupted after starting"
               : s->stopped_by ? "stopped after starting"
                               : "started",
               st->calls_started, s->ncalls, s->app, (long long)s->seed, st->calls_ended);
        if (s->stopped_by)
            printf("  stopped at the first HTTP %ld: every other event would get it too\n",
                   s->stopped_by);
        printf("  events sent       %lld (%lld of them upstream duplicates)\n", st->sent,
               st->dups_sent);
        printf("  accepted (202)    %lld\n", st->accepted);
        printf("  duplicates (200)  %lld\n", st->duplicates);
        printf("  errors            %lld", st->errors);
        const char *sep = ": ";
        for (int i = 0; i < MAX_STATUS; i++) {
            if (st->by_status[i] == 0)
                continue;
            if (i == 0)
                printf("%sno answer x%lld", sep, st->by_status[i]);
            else
                printf("%sHTTP %d x%lld", sep, i, st->by_status[i]);
            sep = ", ";
        }
        printf("\n");
        if (st->first_error[0])
            printf("  first error       %s\n", st->first_error);
        printf("  elapsed           %.2f s\n", elapsed_s);
        printf("  rate              %.1f events/s\n", rate);
    }
    if (dup_mismatch)
        fprintf(stderr,
                "callhook simulate: %lld upstream duplicates were sent but serve answered %lld "
                "events as duplicates\n",
                st->dups_sent, st->duplicates);
    return st->errors == 0 && !dup_mismatch && !interrupted;
}

/* ---- setup ---- */

struct sim_args {
    struct cli_client_options conn;
    const char *app;
    long long calls, min_ms, max_ms, workers;
    double rate, dup_p;
    uint64_t seed;
    bool have_seed;
};

static bool parse_double(const char *option, const char *text, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "callhook simulate: %s wants a number from %g to %g, not '%s'\n", option,
                lo, hi, text);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_range(const char *option, const char *text, long long lo, long long hi,
                        long long *out)
{
    if (!cli_parse_ll(option, text, out))
        return false;
    if (*out < lo || *out > hi) {
        fprintf(stderr, "callhook simulate: %s must be from %lld to %lld\n", option, lo, hi);
        return false;
    }
    return true;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, struct sim_args *a)
{
    static const struct option options[] = {
        CLI_CLIENT_OPTIONS,
        {"app", required_argument, NULL, OPT_APP},
        {"calls", required_argument, NULL, OPT_CALLS},
        {"rate", required_argument, NULL, OPT_RATE},
        {"duplicates", required_argument, NULL, OPT_DUPLICATES},
        {"min-duration-ms", required_argument, NULL, OPT_MIN_DURATION},
        {"max-duration-ms", required_argument, NULL, OPT_MAX_DURATION},
        {"seed", required_argument, NULL, OPT_SEED},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    cli_client_options_init(&a->conn);
    a->rate = 10;
    a->dup_p = 0.05;
    a->min_ms = 1000;
    a->max_ms = 10000;
    a->workers = DEFAULT_WORKERS;
    long long seed;
    int c;
    optind = 1;
    while ((c = cli_getopt("simulate", argc, argv, "h", options, NULL)) != -1) {
        int shared = cli_client_option(&a->conn, c, optarg);
        if (shared < 0)
            return CLI_USAGE;
        if (shared > 0)
            continue;
        bool ok = true;
        switch (c) {
        case 'h':
            cmd_simulate_help();
            return CLI_OK;
        case OPT_APP:
            a->app = optarg;
            break;
        case OPT_CALLS:
            ok = parse_range("--calls", optarg, 1, MAX_CALLS, &a->calls);
            break;
        case OPT_RATE:
            ok = parse_double("--rate", optarg, 0.001, 100000, &a->rate);
            break;
        case OPT_DUPLICATES:
            ok = parse_double("--duplicates", optarg, 0, 1, &a->dup_p);
            break;
        case OPT_MIN_DURATION:
            ok = parse_range("--min-duration-ms", optarg, 0, 86400000, &a->min_ms);
            break;
        case OPT_MAX_DURATION:
            ok = parse_range("--max-duration-ms", optarg, 0, 86400000, &a->max_ms);
            break;
        case OPT_SEED:
            ok = cli_parse_ll("--seed", optarg, &seed);
            a->seed = (uint64_t)seed;
            a->have_seed = true;
            break;
        case OPT_WORKERS:
            ok = parse_range("--workers", optarg, 1, MAX_WORKERS, &a->workers);
            break;
        default:
            return CLI_USAGE;
        }
        if (!ok)
            return CLI_USAGE;
    }
    if (optind < argc)
        return cli_usage_error("simulate", "unexpected argument '%s'", argv[optind]);
    if (a->app == NULL)
        return cli_usage_error("simulate", "--app is required: the Voice App the calls are for");
    if (a->calls == 0)
        return cli_usage_error("simulate", "--calls is required: how many calls to simulate");
    if (a->min_ms > a->max_ms)
        return cli_usage_error("simulate", "--min-duration-ms is more than --max-duration-ms");
    return -1;
}

/* Draws every call's shape from the seed and queues the begin-calls. */
static bool plan(struct sim *s, const struct sim_args *a)
{
    s->calls = calloc(s->ncalls, sizeof *s->calls);
    s->heap_cap = (size_t)s->ncalls * 4;
    s->heap = calloc(s->heap_cap, sizeof *s->heap);
    if (s->calls == NULL || s->heap == NULL)
        return false;
    uint64_t r = s->seed;
    for (uint32_t i = 0; i < s->ncalls; i++) {
        struct sim_call *call = &s->calls[i];
        call->begin_due_ms = s->t0_ms + (int64_t)((double)i * 1000.0 / a->rate);
        call->duration_ms =
            (int32_t)(a->min_ms + (long long)rand_below(&r, (uint32_t)(a->max_ms - a->min_ms + 1)));
        call->wait_ms = (int32_t)(rand_unit(&r) * 0.3 * call->duration_ms);
        call->begin_type = rand_below(&r, 5) == 0 ? 8 : 4;
        call->end_type = pick_end_type(&r, call->begin_type == 8);
        call->dup_begin = rand_unit(&r) < a->dup_p;
        call->dup_end = rand_unit(&r) < a->dup_p;
        s->remaining += 2 + call->dup_begin + call->dup_end;
        heap_push(s,
                  (struct sim_event){.due_ms = call->begin_due_ms, .call = i, .kind = SIM_BEGIN});
    }
    return true;
}

static int run(struct sim *s, const struct sim_args *a)
{
    struct worker workers[MAX_WORKERS];
    int nworkers = (int)a->workers, started = 0, rc = CLI_FAIL;
    memset(workers, 0, sizeof workers);
    for (int i = 0; i < nworkers; i++) {
        workers[i].sim = s;
        if ((rc = cli_client_open("simulate", &a->conn, &workers[i].client)) != CLI_OK)
            goto done;
    }
    /* Workers leave SIGINT to the main thread, which stops them between requests. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    s->t0_ms = clock_mono_ms();
    if (!plan(s, a)) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        fprintf(stderr, "callhook simulate: out of memory for %u calls\n", s->ncalls);
        rc = CLI_FAIL;
        goto done;
    }
    for (; started < nworkers; started++) {
        if (pthread_create(&workers[started].thread, NULL, worker_main, &workers[started]) != 0) {
            fprintf(stderr, "callhook simulate: cannot start a worker thread\n");
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_sa);

    /* Wakes on every answer (the workers broadcast) and at least every tick, so the end is
     * seen at once and Ctrl-C within a tick. */
    bool tty = isatty(STDERR_FILENO) && started > 0;
    int64_t next_progress = 0, end_ms;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (interrupted || started < nworkers)
            s->stop = true;
        end_ms = clock_mono_ms();
        if (s->remaining == 0 || s->stop)
            break;
        if (tty && end_ms >= next_progress) {
            struct sim_stats st = s->st;
            pthread_mutex_unlock(&s->lock);
            progress(s, &st, end_ms);
            next_progress = end_ms + PROGRESS_EVERY_MS;
            pthread_mutex_lock(&s->lock);
            continue;
        }
        wait_until(s, end_ms + PROGRESS_EVERY_MS);
    }
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < started; i++)
        pthread_join(workers[i].thread, NULL);
    sigaction(SIGINT, &old_sa, NULL);
    if (tty) {
        progress(s, &s->st, end_ms);
        fputc('\n', stderr);
    }
    double elapsed = (double)(end_ms - s->t0_ms) / 1000.0;
    rc = summary(s, elapsed, a->conn.json) && started == nworkers ? CLI_OK : CLI_FAIL;
done:
    for (int i = 0; i < nworkers; i++)
        cli_client_free(workers[i].client);
    return rc;
}

int cmd_simulate(int argc, char **argv)
{
    struct sim_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    struct sim s;
    memset(&s, 0, sizeof s);
    s.app = a.app;
    s.ncalls = (uint32_t)a.calls;
    s.id_nonce = fresh_seed();
    s.seed = a.have_seed ? a.seed : fresh_seed() >> 1;
    char escaped[3 * 128 + 1];
    if (!cli_escape(a.app, escaped, sizeof escaped))
        return cli_usage_error("simulate", "a Voice App id has 1 to 128 characters");
    snprintf(s.path_begin, sizeof s.path_begin, "/v1/voice-apps/%s/begin-call", escaped);
    snprintf(s.path_end, sizeof s.path_end, "/v1/voice-apps/%s/end-call", escaped);
    /* jansson wants its hash seed set once, before threads make objects. */
    json_object_seed(0);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.changed, &attr);
    pthread_condattr_destroy(&attr);
    interrupted = 0;
    rc = run(&s, &a);
    pthread_cond_destroy(&s.changed);
    pthread_mutex_destroy(&s.lock);
    free(s.calls);
    free(s.heap);
    return rc;
}
