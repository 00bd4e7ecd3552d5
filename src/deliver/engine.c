/*
 * The delivery engine: a libcurl multi loop on its own thread. Messages wait in per-app FIFO
 * queues in memory; each app has an in-flight cap; results are written to the store in groups.
 * Nothing here holds a database transaction across an HTTP call. A finished transfer keeps its
 * easy handle (and its connection) for the app's next message: the app's settings are applied
 * once per handle, and a delivery only sets its URL, record and headers.
 */
#include "deliver/engine.h"

#include <callhook/callhook.h>
#include <curl/curl.h>

#include "deliver/app.h"
#include "deliver/guard.h"
#include "deliver/storeq.h"
#include "util/log.h"
#include "util/thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define RESPONSE_CAP      STOREQ_RESPONSE_CAP
#define RESULT_BATCH      STOREQ_RESULT_BATCH
#define RESULT_FLUSH_MS   10
#define APP_BUCKETS       256
#define MAX_RETRY_AFTER_S 86400

struct job {
    struct job *next;
    struct due_message m; /* owns m.body */
    int64_t ingested_ms;
};

struct transfer;

struct app_state {
    struct app_state *next;       /* hash chain */
    struct app_state *ready_next; /* the engine's list of apps with queued work */
    bool on_ready;
    char id[APP_ID_MAX + 1];
    uint64_t generation; /* of the settings loaded; 0: not loaded */
    char *header_lines;  /* the custom headers as "Name: value" lines, one allocation */
    char *header_line[APP_MAX_HEADERS];
    struct transfer *idle; /* finished transfers set up for this generation, for reuse */
    bool missing;          /* deleted */
    bool enabled;
    struct app_config cfg;
    struct ch_secret keys[2];
    size_t nkeys;
    int in_flight;
    struct job *head, *tail;
};

/* The fixed header lines, then the app's own (see set_headers()). */
#define FIXED_HEADERS 6

struct transfer {
    struct transfer *prev, *next; /* the engine's list in flight, or the app's idle list */
    struct engine *e;
    struct app_state *app;
    uint64_t generation; /* of the app's settings the easy handle was set up with */
    struct job *job;
    CURL *easy;
    /* The header list lives here, not in curl_slist_append() nodes: curl only reads it, and a
     * delivery then allocates nothing for its headers. */
    struct curl_slist headers[FIXED_HEADERS + APP_MAX_HEADERS];
    char h_id[64];
    char h_ts[48];
    char h_sig[2 * CH_SIGNATURE_ENTRY_MAX + 32];
    char h_event[48];
    char response[RESPONSE_CAP + 1];
    size_t response_len;
    long retry_after_s;
    bool refused;
    char refused_addr[64];
    int64_t start_ms;
    char errbuf[CURL_ERROR_SIZE];
};

/* Sequence numbers of messages held in memory, so a re-claim after an expired lease is noticed:
 * open addressing with linear probing, deletion by backward shift. */
struct seq_set {
    int64_t *slots; /* 0 is empty: seqs start at 1 */
    size_t cap, count;
};

struct engine {
    struct engine_config cfg;
    CURLM *multi;
    pthread_t thread;
    bool started;
    atomic_bool stopping;
    atomic_uint_fast64_t generation; /* bumped when any app changes */
    atomic_bool wake_scan;

    pthread_mutex_t inbox_lock;
    struct job *inbox_head, *inbox_tail;

    /* Owned by the engine thread. */
    struct app_state *apps[APP_BUCKETS];
    struct app_state *ready; /* apps with queued messages: what start_ready() walks */
    struct seq_set in_memory;
    int queued;
    int64_t queued_bytes; /* of the queued jobs: records and job structs */
    int in_flight;
    struct transfer *transfers;
    int64_t next_scan_ms;
    int64_t next_renew_ms;
    int64_t first_result_ms; /* when the oldest unwritten result came; 0: none */
    struct storeq *sq;       /* claims and result writes, on their own thread */
    bool claiming;           /* a claim is asked for and not yet taken */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the in-memory seq set ---- */

static size_t seq_hash(int64_t seq, size_t cap)
{
    uint64_t x = (uint64_t)seq * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 17) & (cap - 1);
}

static bool seq_set_grow(struct seq_set *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    int64_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return false;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i] == 0)
            continue;
        size_t j = seq_hash(s->slots[i], cap);
        while (slots[j] != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return true;
}

static bool seq_set_has(const struct seq_set *s, int64_t seq)
{
    if (s->cap == 0)
        return false;
    for (size_t j = seq_hash(seq, s->cap); s->slots[j] != 0; j = (j + 1) & (s->cap - 1)) {
        if (s->slots[j] == seq)
            return true;
    }
    return false;
}

static bool seq_set_add(struct seq_set *s, int64_t seq)
{
    if ((s->count + 1) * 2 > s->cap && !seq_set_grow(s))
        return false;
    size_t j = seq_hash(seq, s->cap);
    while (s->slots[j] != 0) {
        if (s->slots[j] == seq)
            return true;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = seq;
    s->count++;
    return true;
}

static void seq_set_remove(struct seq_set *s, int64_t seq)
{
    if (s->cap == 0)
        return;
    size_t j = seq_hash(seq, s->cap);
    while (s->slots[j] != seq) {
        if (s->slots[j] == 0)
            return;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = 0;
    s->count--;
    /* Shift back the entries of the same probe run so lookups still find them. */
    for (size_t k = (j + 1) & (s->cap - 1); s->slots[k] != 0; k = (k + 1) & (s->cap - 1)) {
        int64_t v = s->slots[k];
        size_t home = seq_hash(v, s->cap);
        bool movable = (j <= k) ? (home <= j || home > k) : (home <= j && home > k);
        if (movable) {
            s->slots[j] = v;
            s->slots[k] = 0;
            j = k;
        }
    }
}

/* ---- apps ---- */

static size_t app_bucket(const char *id)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)(h % APP_BUCKETS);
}

static struct app_state *app_find(struct engine *e, const char *id)
{
    size_t b = app_bucket(id);
    for (struct app_state *a = e->apps[b]; a; a = a->next) {
        if (strcmp(a->id, id) == 0)
            return a;
    }
    struct app_state *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    snprintf(a->id, sizeof a->id, "%s", id);
    a->next = e->apps[b];
    e->apps[b] = a;
    return a;
}

static void transfer_free(struct transfer *t)
{
    curl_easy_cleanup(t->easy);
    free(t);
}

/* Frees the app's idle transfers (set up with settings that are about to change). */
static void drop_idle(struct app_state *a)
{
    while (a->idle) {
        struct transfer *t = a->idle;
        a->idle = t->next;
        transfer_free(t);
    }
}

/* Reloads an app's settings and secrets from the store when they changed. */
static void app_refresh(struct engine *e, struct app_state *a)
{
    uint64_t gen = atomic_load(&e->generation) + 1; /* never 0 */
    if (a->generation == gen)
        return;
    struct stored_app sa;
    struct ch_error err = {0};
    ch_code rc = e->cfg.store->ops->app_get(e->cfg.store, a->id, &sa, &err);
    if (rc == CH_ENOTFOUND) {
        a->missing = true;
        a->generation = gen;
        drop_idle(a);
        return;
    }
    if (rc != CH_OK) {
        log_warn("engine: cannot load voice app '%s': %s", a->id, err.message);
        return; /* try again next time */
    }
    a->missing = false;
    if (app_config_parse(&a->cfg, sa.config_json, strlen(sa.config_json), &err) != CH_OK) {
        log_error("engine: stored settings of voice app '%s' are invalid: %s", a->id, err.message);
        a->missing = true;
    }
    a->enabled = sa.enabled && a->cfg.enabled;
    drop_idle(a);
    free(a->header_lines);
    a->header_lines = NULL;
    size_t total = 0;
    for (int i = 0; i < a->cfg.nheaders; i++)
        total += strlen(a->cfg.headers[i].name) + strlen(a->cfg.headers[i].value) + 3;
    if (total > 0 && (a->header_lines = malloc(total)) == NULL) {
        log_error("engine: out of memory loading voice app '%s'", a->id);
        stored_app_release(&sa);
        return; /* try again next time */
    }
    for (int i = 0, o = 0; i < a->cfg.nheaders; i++) {
        a->header_line[i] = a->header_lines + o;
        o += sprintf(a->header_lines + o, "%s: %s", a->cfg.headers[i].name,
                     a->cfg.headers[i].value) +
             1;
    }
    a->nkeys = 0;
    if (ch_secret_parse(&a->keys[0], sa.secret, &err) == CH_OK)
        a->nkeys = 1;
    else
        log_error("engine: signing secret of voice app '%s' is invalid", a->id);
    /* During a rotation's grace period both signatures go out. */
    if (sa.prev_secret[0] && sa.prev_expires_at > now_ms() / 1000 &&
        ch_secret_parse(&a->keys[a->nkeys], sa.prev_secret, &err) == CH_OK)
        a->nkeys++;
    a->generation = gen;
    stored_app_release(&sa);
}

/* ---- results ---- */

static size_t unwritten(struct engine *e)
{
    return storeq_results(e->sq)->n;
}

/* Hands the results gathered so far to the store thread; waits only when wait is set and the
 * previous batch is still being written. */
static void flush_results(struct engine *e, bool wait)
{
    if (unwritten(e) == 0)
        return;
    if (wait)
        storeq_write(e->sq);
    else if (!storeq_try_write(e->sq))
        return;
    e->first_result_ms = 0;
}

static struct storeq_result *new_result(struct engine *e, const struct job *job)
{
    if (unwritten(e) == RESULT_BATCH)
        flush_results(e, true);
    struct storeq_results *b = storeq_results(e->sq);
    struct storeq_result *p = &b->item[b->n++];
    memset(p, 0, sizeof *p);
    p->r.seq = job->m.seq;
    p->r.at_ms = now_ms();
    snprintf(p->app_id, sizeof p->app_id, "%s", job->m.app_id);
    p->r.app_id = p->app_id;
    return p;
}

static void job_free(struct engine *e, struct job *job)
{
    seq_set_remove(&e->in_memory, job->m.seq);
    free(job->m.body);
    free(job);
}

/* ---- transfers ---- */

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    struct transfer *t = ctx;
    size_t len = size * n;
    size_t room = RESPONSE_CAP - t->response_len;
    size_t keep = len < room ? len : room;
    memcpy(t->response + t->response_len, data, keep);
    t->response_len += keep;
    t->response[t->response_len] = '\0';
    return len; /* the rest is read and dropped, so the connection stays reusable */
}

static size_t on_header(char *data, size_t size, size_t n, void *ctx)
{
    struct transfer *t = ctx;
    size_t len = size * n;
    if (len > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
        char value[32];
        size_t vlen = len - 12 < sizeof value - 1 ? len - 12 : sizeof value - 1;
        memcpy(value, data + 12, vlen);
        value[vlen] = '\0';
        char *end;
        long s = strtol(value, &end, 10);
        if (end != value && s >= 0)
            t->retry_after_s = s > MAX_RETRY_AFTER_S ? MAX_RETRY_AFTER_S : s;
    }
    return len;
}

/* Every socket goes through here: the SSRF guard judges the address DNS gave. */
static curl_socket_t on_open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct transfer *t = ctx;
    (void)purpose;
    socklen_t len = (socklen_t)addr->addrlen;
    bool allowed = t->app->cfg.allow_private_network || !guard_is_internal(&addr->addr, len);
    for (int i = 0; !allowed && i < t->e->cfg.nallowed; i++)
        allowed = guard_cidr_contains(&t->e->cfg.allowed[i], &addr->addr, len);
    if (!allowed) {
        t->refused = true;
        guard_format(&addr->addr, t->refused_addr, sizeof t->refused_addr);
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

/* A new transfer for an app: an easy handle with the app's settings, which stay set while the
 * transfer is reused for the same generation of them. */
static struct transfer *new_transfer(struct engine *e, struct app_state *a)
{
    struct transfer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->easy = curl_easy_init();
    if (t->easy == NULL) {
        free(t);
        return NULL;
    }
    t->e = e;
    t->app = a;
    t->generation = a->generation;
    CURL *h = t->easy;
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "callhook/" CALLHOOK_VERSION);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    /* Straight to the endpoint: proxy variables in the environment are not followed (the SSRF
     * guard judges the endpoint's own address, which a proxy would hide). */
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, a->cfg.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, a->cfg.timeout_ms);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, a->cfg.allow_insecure_http ? "http,https" : "https");
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (a->cfg.tls_ca_file[0])
        curl_easy_setopt(h, CURLOPT_CAINFO, a->cfg.tls_ca_file);
    if (a->cfg.tls_client_cert_file[0]) {
        curl_easy_setopt(h, CURLOPT_SSLCERT, a->cfg.tls_client_cert_file);
        curl_easy_setopt(h, CURLOPT_SSLKEY, a->cfg.tls_client_key_file);
    }
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(h, CURLOPT_PRIVATE, t);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers);
    return t;
}

static char content_type_line[] = "Content-Type: application/json";
static char expect_line[] = "Expect: ";

/* Links the header list of a delivery: fixed lines, then the app's own. */
static void set_headers(struct transfer *t, struct app_state *a)
{
    char *lines[FIXED_HEADERS + APP_MAX_HEADERS] = {content_type_line, t->h_id,    t->h_ts,
                                                    t->h_sig,          t->h_event, expect_line};
    size_t n = FIXED_HEADERS;
    for (int i = 0; i < a->cfg.nheaders; i++)
        lines[n++] = a->header_line[i];
    for (size_t i = 0; i < n; i++) {
        t->headers[i].data = lines[i];
        t->headers[i].next = i + 1 < n ? &t->headers[i + 1] : NULL;
    }
}

static bool start_transfer(struct engine *e, struct app_state *a, struct job *job)
{
    const char *url = app_config_url(&a->cfg, job->m.event);
    struct transfer *t = a->idle;
    if (t != NULL)
        a->idle = t->next;
    else if ((t = new_transfer(e, a)) == NULL)
        return false;
    t->prev = t->next = NULL;
    t->job = job;
    t->response_len = 0;
    t->response[0] = '\0';
    t->retry_after_s = 0;
    t->refused = false;
    t->errbuf[0] = '\0';
    t->start_ms = now_ms();
    int64_t ts = t->start_ms / 1000;
    char sig[2 * CH_SIGNATURE_ENTRY_MAX];
    struct ch_error err = {0};
    if (url == NULL || ch_sign(a->keys, a->nkeys, job->m.msg_id, ts, job->m.body, job->m.body_len,
                               sig, sizeof sig, &err) != CH_OK) {
        log_error("engine: cannot prepare delivery of %s: %s", job->m.msg_id,
                  err.message[0] ? err.message : "no URL");
        transfer_free(t);
        return false;
    }
    snprintf(t->h_id, sizeof t->h_id, "webhook-id: %s", job->m.msg_id);
    snprintf(t->h_ts, sizeof t->h_ts, "webhook-timestamp: %lld", (long long)ts);
    snprintf(t->h_sig, sizeof t->h_sig, "webhook-signature: %s", sig);
    snprintf(t->h_event, sizeof t->h_event, "X-Call-Event: %s", job->m.event);
    set_headers(t, a);
    CURL *h = t->easy;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, job->m.body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->m.body_len);
    if (curl_multi_add_handle(e->multi, h) != CURLM_OK) {
        transfer_free(t);
        return false;
    }
    t->next = e->transfers;
    if (e->transfers)
        e->transfers->prev = t;
    e->transfers = t;
    a->in_flight++;
    e->in_flight++;
    atomic_fetch_add(&e->cfg.metrics->in_flight, 1);
    return true;
}

/* Takes a transfer off the multi handle and the list; it goes back to its app's idle list
 * while the app's settings are those it was set up with (not its job). */
static void end_transfer(struct engine *e, struct transfer *t)
{
    curl_multi_remove_handle(e->multi, t->easy);
    if (t->prev)
        t->prev->next = t->next;
    else
        e->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    struct app_state *a = t->app;
    a->in_flight--;
    e->in_flight--;
    atomic_fetch_sub(&e->cfg.metrics->in_flight, 1);
    t->job = NULL;
    if (t->generation == a->generation && !atomic_load(&e->stopping)) {
        t->prev = NULL;
        t->next = a->idle;
        a->idle = t;
    } else {
        transfer_free(t);
    }
}

static enum failure_class classify(CURLcode rc, bool refused)
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

/* The delay before the attempt after `done` attempts, or -1 when the schedule is spent. The
 * jitter only lengthens (up to 10%), so a schedule is a floor a receiver can rely on. */
static long retry_delay_s(const struct app_config *c, int done, long retry_after_s)
{
    if (done > c->nretry)
        return -1;
    long base = c->retry_s[done - 1];
    long jitter = base >= 10 ? (long)(rand() % (int)(base / 10 + 1)) : 0;
    long d = base + jitter;
    return retry_after_s > d ? retry_after_s : d;
}

static void observe_latency(struct metrics *m, int64_t ms)
{
    static const int64_t bounds[METRICS_NBUCKETS] = METRICS_LATENCY_BUCKETS_MS;
    int b = 0;
    while (b < METRICS_NBUCKETS && ms > bounds[b])
        b++;
    atomic_fetch_add(&m->latency_bucket[b], 1);
    atomic_fetch_add(&m->latency_sum_ms, ms);
    atomic_fetch_add(&m->latency_count, 1);
}

static void finish_transfer(struct engine *e, CURL *h, CURLcode code)
{
    struct transfer *t = NULL;
    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&t);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    struct app_state *a = t->app;
    struct job *job = t->job;

    struct storeq_result *p = new_result(e, job);
    int64_t end = now_ms();
    p->r.duration_ms = end - t->start_ms;
    p->r.http_status = code == CURLE_OK ? (int)status : 0;
    memcpy(p->response, t->response, t->response_len + 1);
    p->r.response = p->response;
    p->r.response_len = t->response_len;
    int done = job->m.attempts + 1;
    bool begin = strcmp(job->m.event, "begin-call") == 0;

    if (code == CURLE_OK && status >= 200 && status < 300) {
        p->r.new_status = MSG_DELIVERED;
        p->begin_resolved = begin;
        atomic_fetch_add(&e->cfg.metrics->delivered, 1);
        observe_latency(e->cfg.metrics, end - job->ingested_ms);
    } else {
        enum failure_class fc = code == CURLE_OK ? FAILURE_http : classify(code, t->refused);
        atomic_fetch_add(&e->cfg.metrics->failed[fc], 1);
        p->r.error_class = failure_class_name(fc);
        if (code == CURLE_OK)
            snprintf(p->error, sizeof p->error, "HTTP %ld", status);
        else if (t->refused)
            snprintf(p->error, sizeof p->error,
                     "refused: %s is an internal address (set allowPrivateNetwork to allow it)",
                     t->refused_addr);
        else
            snprintf(p->error, sizeof p->error, "%s",
                     t->errbuf[0] ? t->errbuf : curl_easy_strerror(code));
        p->r.error = p->error;
        if (code == CURLE_OK && status == 410) {
            /* The receiver says this endpoint is gone: stop sending until an admin re-enables
             * it. The message keeps its schedule and goes out again after that. */
            p->r.disable_app = true;
            snprintf(p->error, sizeof p->error, "HTTP 410 Gone: the endpoint was disabled");
            a->enabled = false;
            log_warn("engine: voice app '%s' answered 410 Gone; disabled", a->id);
        }
        long delay = t->refused ? -1 : retry_delay_s(&a->cfg, done, t->retry_after_s);
        if (delay < 0) {
            p->r.new_status = MSG_DEAD;
            p->begin_resolved = begin;
            atomic_fetch_add(&e->cfg.metrics->dead, 1);
        } else {
            /* Due times are whole seconds: round up, so the delay is never shortened. */
            p->r.new_status = MSG_PENDING;
            p->r.next_attempt_at = (end + 999) / 1000 + delay;
            int64_t due_ms = p->r.next_attempt_at * 1000;
            if (e->next_scan_ms > due_ms)
                e->next_scan_ms = due_ms;
        }
    }
    end_transfer(e, t);
    job_free(e, job);
}

/* ---- queues ---- */

static int64_t job_bytes(const struct job *job)
{
    return (int64_t)(sizeof *job + job->m.body_len);
}

static bool queue_full(const struct engine *e)
{
    return e->queued >= e->cfg.max_queued || e->queued_bytes >= e->cfg.max_queued_bytes;
}

static void enqueue(struct engine *e, struct job *job)
{
    struct app_state *a = app_find(e, job->m.app_id);
    if (a == NULL || !seq_set_add(&e->in_memory, job->m.seq)) {
        /* Out of memory: the lease brings the message back later. */
        free(job->m.body);
        free(job);
        return;
    }
    job->next = NULL;
    if (a->tail)
        a->tail->next = job;
    else
        a->head = job;
    a->tail = job;
    if (!a->on_ready) {
        a->on_ready = true;
        a->ready_next = e->ready;
        e->ready = a;
    }
    e->queued++;
    e->queued_bytes += job_bytes(job);
    atomic_fetch_add(&e->cfg.metrics->queued_bytes, job_bytes(job));
    atomic_fetch_add(&e->cfg.metrics->queued, 1);
}

static struct job *dequeue(struct engine *e, struct app_state *a)
{
    struct job *job = a->head;
    if (job) {
        a->head = job->next;
        if (a->head == NULL)
            a->tail = NULL;
        e->queued--;
        e->queued_bytes -= job_bytes(job);
        atomic_fetch_sub(&e->cfg.metrics->queued_bytes, job_bytes(job));
        atomic_fetch_sub(&e->cfg.metrics->queued, 1);
    }
    return job;
}

/* Gives every queued message of an app back to the store (disabled or not loadable now). */
static void release_app(struct engine *e, struct app_state *a, int64_t next_attempt_at)
{
    int64_t seqs[256];
    size_t n = 0;
    struct job *job;
    while ((job = dequeue(e, a)) != NULL) {
        seqs[n++] = job->m.seq;
        job_free(e, job);
        if (n == 256) {
            e->cfg.store->ops->release(e->cfg.store, seqs, n, next_attempt_at, NULL);
            n = 0;
        }
    }
    if (n > 0)
        e->cfg.store->ops->release(e->cfg.store, seqs, n, next_attempt_at, NULL);
}

/* A message whose app or URL is gone ends as dead with the reason, without an HTTP attempt. */
static void fail_without_attempt(struct engine *e, struct job *job, const char *why)
{
    struct storeq_result *p = new_result(e, job);
    snprintf(p->error, sizeof p->error, "%s", why);
    p->r.error = p->error;
    p->r.error_class = failure_class_name(FAILURE_other);
    p->r.new_status = MSG_DEAD;
    p->begin_resolved = strcmp(job->m.event, "begin-call") == 0;
    atomic_fetch_add(&e->cfg.metrics->dead, 1);
    job_free(e, job);
}

/* Starts what an app's queue and its in-flight cap allow (or settles its queue when the app
 * is gone, disabled or not loadable). */
static void start_app(struct engine *e, struct app_state *a)
{
    app_refresh(e, a);
    if (a->generation == 0)
        return; /* could not load: try again next turn */
    if (a->missing) {
        struct job *job;
        while ((job = dequeue(e, a)) != NULL)
            fail_without_attempt(e, job, "the voice app was deleted");
        return;
    }
    if (!a->enabled) {
        release_app(e, a, now_ms() / 1000);
        return;
    }
    while (a->head && a->in_flight < a->cfg.max_in_flight && e->in_flight < e->cfg.max_in_flight) {
        struct job *job = dequeue(e, a);
        if (app_config_url(&a->cfg, job->m.event) == NULL) {
            fail_without_attempt(e, job, "no URL is configured for this event");
            continue;
        }
        if (!start_transfer(e, a, job)) {
            int64_t seq = job->m.seq;
            job_free(e, job);
            e->cfg.store->ops->release(e->cfg.store, &seq, 1, now_ms() / 1000 + 5, NULL);
        }
    }
}

/* Walks the apps with queued work only (not every app known), dropping those left empty. */
static void start_ready(struct engine *e)
{
    struct app_state **pp = &e->ready;
    while (*pp) {
        struct app_state *a = *pp;
        start_app(e, a);
        if (a->head == NULL) {
            *pp = a->ready_next;
            a->on_ready = false;
        } else {
            pp = &a->ready_next;
        }
    }
}

static void drain_inbox(struct engine *e)
{
    pthread_mutex_lock(&e->inbox_lock);
    struct job *list = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    pthread_mutex_unlock(&e->inbox_lock);
    /* Fresh events beyond the memory bound go back to the store, due now: the queue's scans
     * bring them in as it drains, so a slow endpoint cannot make serve's memory grow. */
    int64_t overflow[256];
    size_t n = 0;
    int64_t now = now_ms() / 1000;
    while (list) {
        struct job *next = list->next;
        if (queue_full(e)) {
            overflow[n++] = list->m.seq;
            free(list->m.body);
            free(list);
            if (n == 256) {
                e->cfg.store->ops->release(e->cfg.store, overflow, n, now, NULL);
                n = 0;
            }
            int64_t soon = now_ms() + e->cfg.scan_interval_ms / 10;
            if (e->next_scan_ms > soon)
                e->next_scan_ms = soon;
        } else {
            enqueue(e, list);
        }
        list = next;
    }
    if (n > 0)
        e->cfg.store->ops->release(e->cfg.store, overflow, n, now, NULL);
}

/* Asks the store thread for due messages when there is room for them. */
static void scan_store(struct engine *e)
{
    int room = e->cfg.max_queued - e->queued;
    if (queue_full(e)) {
        /* Full: read again once the queue has drained, not on every turn. */
        e->next_scan_ms = now_ms() + e->cfg.scan_interval_ms / 10;
        return;
    }
    size_t max = (size_t)(room < e->cfg.claim_batch ? room : e->cfg.claim_batch);
    /* And no more than the bytes left hold, at the size of what is queued now. */
    if (e->queued > 0) {
        int64_t per_job = e->queued_bytes / e->queued + 1;
        int64_t fit = (e->cfg.max_queued_bytes - e->queued_bytes) / per_job + 1;
        if ((int64_t)max > fit)
            max = (size_t)fit;
    }
    int64_t now = now_ms() / 1000;
    if (storeq_claim(e->sq, max, now, now + e->cfg.lease_s)) {
        e->claiming = true;
        e->next_scan_ms = now_ms() + e->cfg.scan_interval_ms; /* unless something is due sooner */
    }
}

/* Queues what the last claim brought, once it is there. */
static void take_claimed(struct engine *e)
{
    struct due_message *batch;
    size_t n, max;
    if (!e->claiming || !storeq_claimed(e->sq, &batch, &n, &max))
        return;
    for (size_t i = 0; i < n; i++) {
        if (seq_set_has(&e->in_memory, batch[i].seq)) {
            free(batch[i].body); /* already here: its lease ran out while it waited */
            continue;
        }
        struct job *job = malloc(sizeof *job);
        if (job == NULL) {
            free(batch[i].body);
            continue;
        }
        job->m = batch[i];
        job->ingested_ms = batch[i].created_at * 1000;
        enqueue(e, job);
    }
    storeq_claimed_done(e->sq);
    e->claiming = false;
    /* A full batch means more is due: read again at once. */
    if (n == max)
        e->next_scan_ms = 0;
}

/* Every third of a lease, the leases of everything held here (queued or in flight) are
 * extended, so another node never takes over work this one still has. */
static void renew_leases(struct engine *e)
{
    int64_t now = now_ms();
    if (now < e->next_renew_ms)
        return;
    e->next_renew_ms = now + (int64_t)e->cfg.lease_s * 1000 / 3;
    int64_t batch[512];
    size_t n = 0;
    int64_t lease_until = now / 1000 + e->cfg.lease_s;
    struct ch_error err = {0};
    for (size_t i = 0; i < e->in_memory.cap; i++) {
        if (e->in_memory.slots[i] == 0)
            continue;
        batch[n++] = e->in_memory.slots[i];
        if (n == 512) {
            if (e->cfg.store->ops->renew(e->cfg.store, batch, n, lease_until, &err) != CH_OK)
                log_warn("engine: cannot renew leases: %s", err.message);
            n = 0;
        }
    }
    if (n > 0 && e->cfg.store->ops->renew(e->cfg.store, batch, n, lease_until, &err) != CH_OK)
        log_warn("engine: cannot renew leases: %s", err.message);
}

static void drain_transfers(struct engine *e)
{
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE)
            finish_transfer(e, msg->easy_handle, msg->data.result);
    }
}

/* At stop: abort what is still in flight and give everything in memory back to the store. */
static void give_back_everything(struct engine *e)
{
    int64_t now = now_ms() / 1000;
    while (e->transfers) {
        struct transfer *t = e->transfers;
        struct job *job = t->job;
        int64_t seq = job->m.seq;
        e->cfg.store->ops->release(e->cfg.store, &seq, 1, now, NULL);
        end_transfer(e, t);
        job_free(e, job);
    }
    for (size_t b = 0; b < APP_BUCKETS; b++) {
        for (struct app_state *a = e->apps[b]; a; a = a->next)
            release_app(e, a, now);
    }
    drain_inbox(e);
    for (size_t b = 0; b < APP_BUCKETS; b++) {
        for (struct app_state *a = e->apps[b]; a; a = a->next)
            release_app(e, a, now);
    }
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;
    thread_name("ch-engine");
    int64_t stop_deadline = 0;
    for (;;) {
        bool stopping = atomic_load(&e->stopping);
        if (stopping && stop_deadline == 0)
            stop_deadline = now_ms() + e->cfg.shutdown_grace_ms;
        if (stopping && (e->in_flight == 0 || now_ms() >= stop_deadline))
            break;
        if (!stopping) {
            drain_inbox(e);
            take_claimed(e);
            if (atomic_exchange(&e->wake_scan, false) || storeq_rescan(e->sq))
                e->next_scan_ms = 0;
            if (!e->claiming && now_ms() >= e->next_scan_ms)
                scan_store(e);
            start_ready(e);
            renew_leases(e);
        }
        int running = 0;
        curl_multi_perform(e->multi, &running);
        drain_transfers(e);
        /* Results are written in groups by the store thread: one transaction per
         * RESULT_FLUSH_MS or half a batch, not per loop turn, so the disk does not pace the
         * deliveries. Until then their leases hold the messages. */
        size_t nresults = unwritten(e);
        if (nresults > 0 && e->first_result_ms == 0)
            e->first_result_ms = now_ms();
        if (nresults >= RESULT_BATCH / 2 ||
            (nresults > 0 && now_ms() - e->first_result_ms >= RESULT_FLUSH_MS) || stopping)
            flush_results(e, stopping);
        /* Slots freed by the transfers that just ended are filled in the same turn. */
        if (!stopping)
            start_ready(e);
        /* While a claim runs, the store thread wakes the loop when it is ready. */
        int64_t wait = e->claiming ? e->cfg.scan_interval_ms : e->next_scan_ms - now_ms();
        if (unwritten(e) > 0 && e->first_result_ms + RESULT_FLUSH_MS - now_ms() < wait)
            wait = e->first_result_ms + RESULT_FLUSH_MS - now_ms();
        if (e->next_renew_ms - now_ms() < wait)
            wait = e->next_renew_ms - now_ms();
        if (wait > e->cfg.scan_interval_ms)
            wait = e->cfg.scan_interval_ms;
        if (wait < 0)
            wait = 0;
        if (stopping)
            wait = 50;
        curl_multi_poll(e->multi, NULL, 0, (int)wait, NULL);
    }
    flush_results(e, true);
    storeq_idle(e->sq);
    take_claimed(e);
    give_back_everything(e);
    return NULL;
}

/* ---- public ---- */

ch_code engine_new(const struct engine_config *cfg, struct engine **out, struct ch_error *err)
{
    struct engine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory creating the engine");
    e->cfg = *cfg;
    if (e->cfg.lease_s <= 0)
        e->cfg.lease_s = 300;
    if (e->cfg.scan_interval_ms <= 0)
        e->cfg.scan_interval_ms = 1000;
    if (e->cfg.claim_batch <= 0)
        e->cfg.claim_batch = 256;
    if (e->cfg.max_queued <= 0)
        e->cfg.max_queued = 20000;
    if (e->cfg.max_queued_bytes <= 0)
        e->cfg.max_queued_bytes = 16 << 20;
    if (e->cfg.max_in_flight <= 0)
        e->cfg.max_in_flight = 1024;
    if (e->cfg.shutdown_grace_ms <= 0)
        e->cfg.shutdown_grace_ms = 10000;
    e->multi = curl_multi_init();
    if (e->multi == NULL) {
        engine_free(e);
        return ch_error_set(err, CH_ENOMEM, "out of memory creating the engine");
    }
    curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 256L);
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, 1024L);
    pthread_mutex_init(&e->inbox_lock, NULL);
    *out = e;
    return CH_OK;
}

static void wake_from_store(void *ctx)
{
    struct engine *e = ctx;
    curl_multi_wakeup(e->multi);
}

ch_code engine_start(struct engine *e, struct ch_error *err)
{
    ch_code rc =
        storeq_start(e->cfg.store, (size_t)e->cfg.claim_batch, wake_from_store, e, &e->sq, err);
    if (rc != CH_OK)
        return rc;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        storeq_stop(e->sq);
        e->sq = NULL;
        return ch_error_set(err, CH_ENOMEM, "cannot start the delivery thread");
    }
    e->started = true;
    return CH_OK;
}

void engine_submit(struct engine *e, struct due_message *m, int64_t ingested_ms)
{
    struct job *job = malloc(sizeof *job);
    if (job == NULL) {
        free(m->body); /* the lease brings it back */
        return;
    }
    job->m = *m;
    job->next = NULL;
    job->ingested_ms = ingested_ms;
    pthread_mutex_lock(&e->inbox_lock);
    if (e->inbox_tail)
        e->inbox_tail->next = job;
    else
        e->inbox_head = job;
    e->inbox_tail = job;
    pthread_mutex_unlock(&e->inbox_lock);
}

void engine_kick(struct engine *e)
{
    curl_multi_wakeup(e->multi);
}

void engine_app_changed(struct engine *e)
{
    atomic_fetch_add(&e->generation, 1);
    engine_wake(e);
}

void engine_wake(struct engine *e)
{
    atomic_store(&e->wake_scan, true);
    curl_multi_wakeup(e->multi);
}

void engine_stop(struct engine *e)
{
    if (!e->started)
        return;
    atomic_store(&e->stopping, true);
    curl_multi_wakeup(e->multi);
    pthread_join(e->thread, NULL);
    storeq_stop(e->sq);
    e->sq = NULL;
    e->started = false;
}

void engine_free(struct engine *e)
{
    if (e == NULL)
        return;
    engine_stop(e);
    for (size_t b = 0; b < APP_BUCKETS; b++) {
        struct app_state *a = e->apps[b];
        while (a) {
            struct app_state *next = a->next;
            struct job *job;
            while ((job = dequeue(e, a)) != NULL)
                job_free(e, job);
            ch_secret_wipe(&a->keys[0]);
            ch_secret_wipe(&a->keys[1]);
            drop_idle(a);
            free(a->header_lines);
            free(a);
            a = next;
        }
    }
    struct job *job = e->inbox_head;
    while (job) {
        struct job *next = job->next;
        free(job->m.body);
        free(job);
        job = next;
    }
    if (e->multi)
        curl_multi_cleanup(e->multi);
    pthread_mutex_destroy(&e->inbox_lock);
    free(e->in_memory.slots);
    free(e);
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
