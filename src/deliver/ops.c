/*
 * Operational webhooks (ops.h): the internal Voice App made from serve's flags, the queue of
 * dead messages the engine reports, and the thread that stores them and checks, every
 * check interval, which apps are disabled and which backlogs are too old.
 *
 * "Once per state change" comes from the store: an app's disabled state and its backlog are
 * each a run of episodes numbered from 1, and the event opening episode n and the one closing
 * it have dedupe keys of their own ("disabled:APP:CREATED:n", "enabled:...:n"; "backlog:",
 * "recovered:"). A node reads how far the episodes have got (a lookup per key) before it
 * stores the next one, so nodes that see the same change compute the same key and the store
 * keeps one message: the second node's insert is a duplicate. A dead message's key is its id
 * and attempt number.
 */
#include "deliver/ops.h"

#include <callhook/callhook.h>
#include <jansson.h>

#include "deliver/app.h"
#include "deliver/ssrf.h"
#include "lib/crypto.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/thread.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define QUEUE_MAX     20000  /* dead messages waiting to be stored; more are dropped (logged) */
#define STORE_BATCH   256    /* events stored in one transaction */
#define WALK_MAX      100000 /* episodes read forward at most, per app and check */
#define ROUNDS_MAX    8 /* races lost to other nodes in one check before waiting for the next */
#define BUCKETS       1024
#define WAKE_MIN_MS   1000 /* a 410 runs the next check now, but not sooner than this after one */
#define OPS_KEY_MAX   256
#define EPISODE_KEY_X (APP_ID_MAX + 32)

/* A dead message reported by the engine, waiting to be stored as an event. */
struct dead_event {
    struct dead_event *next;
    char app_id[APP_ID_MAX + 1];
    char msg_id[CH_MSGID_SIZE];
    char event[16];
    int attempt, http_status;
    char error_class[16];
    char error[300];
    int64_t at; /* wall seconds */
};

/* What this node knows of one app's run of episodes of one kind. */
struct episode {
    struct episode *next;
    char key[EPISODE_KEY_X]; /* "d:APP:CREATED" or "b:APP:CREATED" */
    int64_t n;               /* the last episode stored; 0: none */
    bool open;               /* its opening event is stored, its closing one is not */
    bool synced;             /* read from the store since this node started */
    uint64_t seen;           /* the check that last saw its app */
};

/* The two kinds of an app's state: the key prefixes and event types that open and close one
 * of its episodes. */
struct kind {
    char tag;
    const char *open_prefix, *close_prefix;
    const char *open_type, *close_type;
};

static const struct kind kind_disabled = {'d', "disabled", "enabled", OPS_TYPE_DISABLED,
                                          OPS_TYPE_ENABLED};
static const struct kind kind_backlog = {'b', "backlog", "recovered", OPS_TYPE_BACKLOG_OLD,
                                         OPS_TYPE_RECOVERED};

struct ops {
    struct store *store;
    struct app_config app;               /* the internal app's settings, from the flags */
    char secret[CH_SECRET_TEXT_MAX + 1]; /* of the secret file; "" for none */
    int alert_age_s, check_interval_s, lease_s;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* Under lock. */
    bool stopping;
    bool check_soon;       /* a 410 was written: check now */
    struct engine *engine; /* NULL once stopped: events are then left due in the store */
    struct dead_event *head, *tail;
    size_t queued;
    int64_t dropped;
    /* The thread's own (and ops_free's, once it has stopped). */
    struct episode *episodes[BUCKETS];
    uint64_t check_no;
    bool warned_missing;
};

bool ops_app_is(const char *app_id)
{
    return app_id != NULL && strcmp(app_id, OPS_APP_ID) == 0;
}

const char *ops_key_type(const char *key, char *app, size_t cap)
{
    static const struct {
        const char *prefix, *type;
    } kinds[] = {{"disabled:", OPS_TYPE_DISABLED},
                 {"enabled:", OPS_TYPE_ENABLED},
                 {"backlog:", OPS_TYPE_BACKLOG_OLD},
                 {"recovered:", OPS_TYPE_RECOVERED},
                 {"dead:", OPS_TYPE_DEAD}};
    if (cap > 0)
        app[0] = '\0';
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(key, kinds[i].prefix, n) != 0)
            continue;
        const char *end = strchr(key + n, ':');
        if (end != NULL && cap > 0)
            snprintf(app, cap, "%.*s", (int)(end - key - n), key + n);
        return kinds[i].type;
    }
    return NULL;
}

/* ---- the internal app, from the flags ---- */

/* The part of a settings error after its field name ("BeginCallEventProcessingUrl: has no
 * host" says "has no host"). */
static const char *after_field(const char *message)
{
    const char *p = strstr(message, ": ");
    return p ? p + 2 : message;
}

/* The internal app's settings for url, checked as an app's URL is, and by the SSRF guard. */
static ch_code ops_app_config(const struct ops_config *c, struct app_config *cfg,
                              struct ch_error *err)
{
    const char *url = c->url;
    bool http = strncasecmp(url, "http://", 7) == 0;
    if (!http && strncasecmp(url, "https://", 8) != 0)
        return ch_error_set(err, CH_EINVAL,
                            "ops-webhook: '%.200s' must start with https:// (or http://)", url);
    if (strlen(url) > APP_URL_MAX)
        return ch_error_set(err, CH_EINVAL, "ops-webhook: a URL of at most %d characters",
                            APP_URL_MAX);
    app_config_defaults(cfg);
    snprintf(cfg->begin_url, sizeof cfg->begin_url, "%s", url);
    snprintf(cfg->end_url, sizeof cfg->end_url, "%s", url);
    cfg->allow_insecure_http = http; /* the operator's own URL: plain http is theirs to choose */
    cfg->ordering_per_call = false;
    /* The checks of any app's URL, through the same parser. */
    char *json = app_config_to_json(cfg, NULL, NULL);
    struct ch_error perr = {0};
    ch_code rc = json ? app_config_parse(cfg, json, strlen(json), &perr) : CH_ENOMEM;
    free(json);
    if (rc == CH_ENOMEM)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    if (rc != CH_OK)
        return ch_error_set(err, CH_EINVAL, "ops-webhook: '%.200s' %s", url,
                            after_field(perr.message));

    /* The SSRF guard, as the engine judges each connection: an address literal now; a name on
     * every address it resolves to now (and again at each connection). */
    struct ssrf_rule rule = {false, c->allowed, c->nallowed};
    char refused[64];
    ssrf_judge_url(&rule, url, refused, sizeof refused);
    if (refused[0])
        return ch_error_set(err, CH_EINVAL,
                            "ops-webhook: '%.200s' is an internal address (%s): callhook sends "
                            "nothing there unless --allow-cidr allows it (e.g. --allow-cidr "
                            "%s/%d)",
                            url, refused, refused, strchr(refused, ':') ? 128 : 32);
    char host[256];
    if (!ssrf_url_host(url, host, sizeof host))
        return ch_error_set(err, CH_EINVAL, "ops-webhook: '%.200s' has no host", url);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0) {
        log_warn("ops-webhook: cannot resolve '%s' now (%s): its addresses are judged when "
                 "callhook connects",
                 host, gai_strerror(gai));
        return CH_OK;
    }
    rc = CH_OK;
    for (struct addrinfo *a = res; a != NULL && rc == CH_OK; a = a->ai_next) {
        if (ssrf_allows(&rule, a->ai_addr, a->ai_addrlen))
            continue;
        guard_format(a->ai_addr, refused, sizeof refused);
        rc = ch_error_set(err, CH_EINVAL,
                          "ops-webhook: '%s' resolves to %s, an internal address: callhook "
                          "sends nothing there unless --allow-cidr allows it (e.g. --allow-cidr "
                          "%s/%d)",
                          host, refused, refused, a->ai_family == AF_INET6 ? 128 : 32);
    }
    freeaddrinfo(res);
    return rc;
}

/* The signing secret in file: its first line, a whsec_ secret or a whsk_ key. */
static ch_code read_secret(const char *file, char *out, size_t cap, struct ch_error *err)
{
    ch_code rc = fs_check_private(file, "ops webhook secret file", err);
    if (rc != CH_OK)
        return rc;
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return ch_error_set(err, CH_EIO, "cannot open the ops webhook secret file '%s': %s", file,
                            strerror(errno));
    char text[512];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    text[strcspn(text, "\r\n")] = '\0';
    char *t = config_trim(text);
    struct ch_secret sec;
    struct ch_error perr = {0};
    rc = ch_secret_parse(&sec, t, &perr);
    if (rc == CH_OK && sec.kind != CH_KEY_HMAC && sec.kind != CH_KEY_ED25519_SECRET)
        rc = ch_error_set(&perr, CH_ESECRET, "a public key cannot sign");
    if (rc == CH_OK && strlen(t) >= cap)
        rc = ch_error_set(&perr, CH_ESECRET, "too long");
    if (rc == CH_OK)
        snprintf(out, cap, "%s", t);
    ch_secret_wipe(&sec);
    crypto_wipe(text, sizeof text);
    if (rc != CH_OK)
        return ch_error_set(err, CH_EINVAL,
                            "ops-webhook-secret-file: '%s' holds no signing secret (%s): put "
                            "one there with 'callhook secret new > FILE'",
                            file, perr.message);
    return CH_OK;
}

/* Creates the internal app, or brings it to the flags: its URL and settings; the secret of the
 * file, else the stored one, else a new one (*made). A new URL enables it again (a 410 from the
 * old one disabled it); otherwise its state is kept. */
static ch_code provision(struct store *s, const struct app_config *cfg, const char *secret,
                         bool *made, struct ch_error *err)
{
    struct stored_app a;
    ch_code rc = store_app_get(s, OPS_APP_ID, &a, err);
    if (rc != CH_OK && rc != CH_ENOTFOUND)
        return rc;
    bool exists = rc == CH_OK;
    int64_t now = clock_wall_s();
    if (!exists) {
        memset(&a, 0, sizeof a);
        snprintf(a.id, sizeof a.id, "%s", OPS_APP_ID);
        a.created_at = now;
        a.enabled = true;
    } else {
        struct app_config old;
        bool same_url =
            app_config_parse(&old, a.config_json, strlen(a.config_json), NULL) == CH_OK &&
            strcmp(old.end_url, cfg->end_url) == 0;
        if (!same_url && !a.enabled) {
            a.enabled = true;
            a.disabled_reason[0] = '\0';
        } else if (!a.enabled) {
            log_warn("the ops webhook's voice app '%s' is disabled (%s): no ops event is sent "
                     "until it is enabled (callhook app enable %s)",
                     OPS_APP_ID, a.disabled_reason[0] ? a.disabled_reason : "by an admin",
                     OPS_APP_ID);
        }
    }
    /* The settings as stored carry the app's enabled state too. */
    struct app_config want = *cfg;
    want.enabled = a.enabled;
    char *json = app_config_to_json(&want, NULL, NULL);
    if (json == NULL) {
        stored_app_release(&a);
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    }
    bool changed = !exists || strcmp(json, a.config_json) != 0;
    if (secret[0] && strcmp(secret, a.secret) != 0) {
        snprintf(a.secret, sizeof a.secret, "%s", secret);
        a.prev_secret[0] = '\0';
        a.prev_expires_at = 0;
        changed = true;
    } else if (a.secret[0] == '\0') {
        struct ch_secret sec;
        rc = ch_secret_generate(&sec, CH_KEY_HMAC, 32, err);
        if (rc == CH_OK)
            rc = ch_secret_format(&sec, a.secret, sizeof a.secret, err);
        ch_secret_wipe(&sec);
        if (rc != CH_OK) {
            free(json);
            stored_app_release(&a);
            return rc;
        }
        *made = true;
        changed = true;
    }
    if (changed) {
        free(a.config_json);
        a.config_json = json;
        json = NULL;
        a.updated_at = now;
        bool created = false;
        rc = store_app_put(s, &a, &created, err);
    }
    free(json);
    crypto_wipe(a.secret, sizeof a.secret);
    stored_app_release(&a);
    return rc;
}

ch_code ops_new(const struct ops_config *c, struct ops **out, struct ch_error *err)
{
    struct ops *o = calloc(1, sizeof *o);
    if (o == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    ch_code rc = ops_app_config(c, &o->app, err);
    if (rc == CH_OK && c->secret_file && c->secret_file[0])
        rc = read_secret(c->secret_file, o->secret, sizeof o->secret, err);
    if (rc != CH_OK) {
        crypto_wipe(o->secret, sizeof o->secret);
        free(o);
        return rc;
    }
    o->alert_age_s = c->alert_age_s > 0 ? c->alert_age_s : 600;
    o->check_interval_s = c->check_interval_s > 0 ? c->check_interval_s : 30;
    o->lease_s = c->lease_s > 0 ? c->lease_s : 300;
    pthread_mutex_init(&o->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = o;
    return CH_OK;
}

/* ---- storing events ---- */

/* One event to store. */
struct pending {
    char key[OPS_KEY_MAX];
    char msg_id[CH_MSGID_SIZE];
    char *body; /* owned */
    size_t len;
};

/* What became of an event: stored now; stored before (by this node or another: the state
 * change is recorded); dropped (the internal app was deleted); not stored (tried again). */
enum stored { STORED_NEW, STORED_DUPLICATE, STORED_DROPPED, STORED_FAILED };

/* "2025-01-31T12:00:00Z". */
static void iso8601(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A JSON string, or null for text jansson refuses (not UTF-8). */
static json_t *str_or_null(const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

/* Fills p with the event of key: {"type", "timestamp", "data"} (data is taken). */
static bool pending_make(struct pending *p, const char *key, const char *type, json_t *data,
                         int64_t now)
{
    char when[32];
    iso8601(now, when, sizeof when);
    json_t *doc =
        data ? json_pack("{s:s, s:s, s:o}", "type", type, "timestamp", when, "data", data) : NULL;
    p->body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    p->len = p->body ? strlen(p->body) : 0;
    snprintf(p->key, sizeof p->key, "%s", key);
    return p->body != NULL && ch_msgid(OPS_APP_ID, OPS_EVENT, key, p->msg_id, NULL) == CH_OK;
}

/* Stores the events in one transaction and hands the new ones to the engine (or, once it has
 * stopped, makes them due now for whichever node delivers next). Frees the bodies the engine
 * did not take. result[i] says what became of each. */
static void store_events(struct ops *o, struct pending *p, size_t n, enum stored *result)
{
    struct ingest_item items[STORE_BATCH];
    int64_t now = clock_wall_s();
    for (size_t i = 0; i < n; i++) {
        items[i] = (struct ingest_item){.msg_id = p[i].msg_id,
                                        .app_id = OPS_APP_ID,
                                        .event = OPS_EVENT,
                                        .dedupe_key = p[i].key,
                                        .body = p[i].body,
                                        .body_len = p[i].len,
                                        .now = now,
                                        .lease_until = now + o->lease_s,
                                        .want = INGEST_DELIVER};
        result[i] = STORED_FAILED;
    }
    struct ch_error err = {0};
    ch_code rc = n > 0 ? store_ingest(o->store, items, n, &err) : CH_OK;
    if (rc != CH_OK)
        log_warn("ops: cannot store %zu ops events (tried again): %s", n, err.message);
    pthread_mutex_lock(&o->lock);
    struct engine *e = o->engine;
    pthread_mutex_unlock(&o->lock);
    bool kick = false;
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        struct ingest_item *it = &items[i];
        if (it->unknown_app) {
            if (!o->warned_missing)
                log_warn("ops: the voice app '%s' was deleted: ops events are not stored until "
                         "serve starts again with --ops-webhook",
                         OPS_APP_ID);
            o->warned_missing = true;
            result[i] = STORED_DROPPED;
            continue;
        }
        if (it->result != CH_OK)
            continue;
        o->warned_missing = false;
        result[i] = it->duplicate ? STORED_DUPLICATE : STORED_NEW;
        if (it->duplicate || it->status != MSG_DELIVERING)
            continue;
        if (e == NULL) {
            /* Claimed by this node, which delivers nothing more: due now instead. */
            store_release(o->store, &it->seq, 1, now, NULL);
            continue;
        }
        struct due_message m = {
            .seq = it->seq, .created_at = now, .body = p[i].body, .body_len = p[i].len};
        snprintf(m.msg_id, sizeof m.msg_id, "%s", p[i].msg_id);
        snprintf(m.app_id, sizeof m.app_id, "%s", OPS_APP_ID);
        snprintf(m.event, sizeof m.event, "%s", OPS_EVENT);
        snprintf(m.dedupe_key, sizeof m.dedupe_key, "%s", p[i].key);
        p[i].body = NULL; /* the engine's now */
        engine_submit(e, &m, now * 1000);
        kick = true;
    }
    if (kick)
        engine_kick(e);
    for (size_t i = 0; i < n; i++) {
        free(p[i].body);
        p[i].body = NULL;
    }
}

/* One event: stored now, already stored (by another node, or earlier), or not stored. */
static enum stored store_one(struct ops *o, const char *key, const char *type, json_t *data)
{
    struct pending p = {0};
    enum stored r = STORED_FAILED;
    if (!pending_make(&p, key, type, data, clock_wall_s())) {
        log_error("ops: out of memory making the event '%s'", key);
        free(p.body);
        return r;
    }
    store_events(o, &p, 1, &r);
    if (r == STORED_NEW)
        log_info("ops: %s event stored as %s (%s)", type, p.msg_id, key);
    return r;
}

/* ---- dead messages ---- */

void ops_outcome(void *ctx, const struct engine_outcome *r)
{
    struct ops *o = ctx;
    if (ops_app_is(r->app_id)) {
        /* The ops webhook's own messages report nothing (no loops): the log says it. */
        if (r->status == MSG_DEAD)
            log_warn("ops: the ops event %s was not delivered to the ops webhook: %s", r->msg_id,
                     r->error);
        return;
    }
    if (r->disabled_app) {
        pthread_mutex_lock(&o->lock);
        o->check_soon = true;
        pthread_cond_broadcast(&o->cond);
        pthread_mutex_unlock(&o->lock);
    }
    if (r->status != MSG_DEAD || r->app_deleted)
        return;
    struct dead_event *d = calloc(1, sizeof *d);
    pthread_mutex_lock(&o->lock);
    if (d == NULL || o->queued >= QUEUE_MAX) {
        if (o->dropped++ % 1000 == 0)
            log_error("ops: %lld message.dead events dropped: more than %d wait to be stored "
                      "(is the database reachable?)",
                      (long long)o->dropped, QUEUE_MAX);
        pthread_mutex_unlock(&o->lock);
        free(d);
        return;
    }
    pthread_mutex_unlock(&o->lock);
    snprintf(d->app_id, sizeof d->app_id, "%s", r->app_id);
    snprintf(d->msg_id, sizeof d->msg_id, "%s", r->msg_id);
    snprintf(d->event, sizeof d->event, "%s", r->event);
    snprintf(d->error_class, sizeof d->error_class, "%s", r->error_class);
    snprintf(d->error, sizeof d->error, "%s", r->error);
    d->attempt = r->attempt;
    d->http_status = r->http_status;
    d->at = clock_wall_s();
    pthread_mutex_lock(&o->lock);
    if (o->tail)
        o->tail->next = d;
    else
        o->head = d;
    o->tail = d;
    o->queued++;
    pthread_cond_broadcast(&o->cond);
    pthread_mutex_unlock(&o->lock);
}

static json_t *dead_data(const struct dead_event *d)
{
    json_t *data = json_pack("{s:s, s:s, s:s, s:i}", "voiceAppId", d->app_id, "messageId",
                             d->msg_id, "event", d->event, "attempts", d->attempt);
    if (data == NULL)
        return NULL;
    json_object_set_new(data, "httpStatus",
                        d->http_status ? json_integer(d->http_status) : json_null());
    json_object_set_new(data, "errorClass",
                        d->error_class[0] ? str_or_null(d->error_class) : json_null());
    json_object_set_new(data, "lastError", d->error[0] ? str_or_null(d->error) : json_null());
    return data;
}

/* Stores a list of dead messages' events, a batch per transaction, and frees them. False
 * when a batch could not be stored (the database is away): it and the rest of the list go
 * back to the head of the queue, in order, to be tried again. */
static bool store_dead(struct ops *o, struct dead_event *list)
{
    while (list) {
        struct pending p[STORE_BATCH];
        struct dead_event *batch = list;
        size_t n = 0;
        for (; list && n < STORE_BATCH; list = list->next) {
            char key[OPS_KEY_MAX];
            snprintf(key, sizeof key, "dead:%s:%s:%d", list->app_id, list->msg_id, list->attempt);
            memset(&p[n], 0, sizeof p[n]);
            if (pending_make(&p[n], key, OPS_TYPE_DEAD, dead_data(list), list->at)) {
                n++;
                continue;
            }
            log_error("ops: out of memory making the event '%s'", key);
            free(p[n].body);
        }
        enum stored r[STORE_BATCH];
        store_events(o, p, n, r);
        bool failed = false;
        for (size_t i = 0; i < n; i++) {
            failed |= r[i] == STORED_FAILED;
            if (r[i] == STORED_NEW)
                log_info("ops: %s event stored as %s (%s)", OPS_TYPE_DEAD, p[i].msg_id, p[i].key);
        }
        if (failed) {
            struct dead_event *last = batch;
            size_t count = 1;
            for (; last->next; last = last->next)
                count++;
            pthread_mutex_lock(&o->lock);
            last->next = o->head;
            o->head = batch;
            if (o->tail == NULL)
                o->tail = last;
            o->queued += count;
            pthread_mutex_unlock(&o->lock);
            return false;
        }
        while (batch != list) {
            struct dead_event *next = batch->next;
            free(batch);
            batch = next;
        }
    }
    return true;
}

/* ---- the checks: disabled apps and old backlogs ---- */

/* An app as a check sees it. */
struct app_row {
    char id[APP_ID_MAX + 1];
    int64_t created_at;
    bool enabled;
    char reason[200];
    const struct app_backlog *backlog; /* NULL: nothing waits */
};

struct rows {
    struct app_row *v;
    size_t n, cap;
    bool oom;
};

struct backlogs {
    struct app_backlog *v;
    size_t n, cap;
    bool oom;
};

/* Appends an element of size bytes to *v (n, cap), growing it; NULL when out of memory. */
static void *grow(void **v, size_t *n, size_t *cap, size_t size)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        void *nv = realloc(*v, c * size);
        if (nv == NULL)
            return NULL;
        *v = nv;
        *cap = c;
    }
    return (char *)*v + (*n)++ * size;
}

static void collect_app(void *ctx, const struct stored_app *a)
{
    struct rows *r = ctx;
    if (ops_app_is(a->id))
        return; /* the ops webhook's own state reports nothing: no loops */
    struct app_row *row = grow((void **)&r->v, &r->n, &r->cap, sizeof *row);
    if (row == NULL) {
        r->oom = true;
        return;
    }
    memset(row, 0, sizeof *row);
    snprintf(row->id, sizeof row->id, "%s", a->id);
    snprintf(row->reason, sizeof row->reason, "%s", a->disabled_reason);
    row->created_at = a->created_at;
    row->enabled = a->enabled;
}

static void collect_backlog(void *ctx, const struct app_backlog *b)
{
    struct backlogs *r = ctx;
    struct app_backlog *row = grow((void **)&r->v, &r->n, &r->cap, sizeof *row);
    if (row == NULL)
        r->oom = true;
    else
        *row = *b;
}

static int by_app_id(const void *a, const void *b)
{
    return strcmp(((const struct app_backlog *)a)->app_id, ((const struct app_backlog *)b)->app_id);
}

static size_t bucket_of(const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (size_t)(h % BUCKETS);
}

/* This node's record of the app's episodes of kind k; NULL when out of memory. */
static struct episode *episode_of(struct ops *o, const struct kind *k, const struct app_row *app)
{
    char key[EPISODE_KEY_X];
    snprintf(key, sizeof key, "%c:%s:%lld", k->tag, app->id, (long long)app->created_at);
    size_t b = bucket_of(key);
    for (struct episode *e = o->episodes[b]; e; e = e->next) {
        if (strcmp(e->key, key) == 0)
            return e;
    }
    struct episode *e = calloc(1, sizeof *e);
    if (e == NULL)
        return NULL;
    snprintf(e->key, sizeof e->key, "%s", key);
    e->next = o->episodes[b];
    o->episodes[b] = e;
    return e;
}

/* The key of the event that moves ep on: the closing one of episode n while it is open, else
 * the opening one of episode n + 1. */
static void next_key(const struct kind *k, const struct app_row *app, const struct episode *ep,
                     char *out, size_t cap)
{
    snprintf(out, cap, "%s:%s:%lld:%lld", ep->open ? k->close_prefix : k->open_prefix, app->id,
             (long long)app->created_at, (long long)(ep->open ? ep->n : ep->n + 1));
}

static void advance(struct episode *ep)
{
    if (ep->open) {
        ep->open = false;
    } else {
        ep->n++;
        ep->open = true;
    }
}

/* Reads from the store how far the app's episodes have got (by this node or any other), from
 * where ep stands. False when the store did not answer. */
static bool walk(struct ops *o, const struct kind *k, const struct app_row *app, struct episode *ep)
{
    for (int i = 0; i < WALK_MAX; i++) {
        char key[OPS_KEY_MAX], id[CH_MSGID_SIZE];
        next_key(k, app, ep, key, sizeof key);
        struct message_view m;
        struct ch_error err = {0};
        if (ch_msgid(OPS_APP_ID, OPS_EVENT, key, id, &err) != CH_OK)
            return false;
        ch_code rc = store_message_get(o->store, id, &m, &err);
        if (rc == CH_ENOTFOUND)
            return true;
        if (rc != CH_OK) {
            log_warn("ops: cannot read the ops events of voice app '%s': %s", app->id, err.message);
            return false;
        }
        advance(ep);
    }
    return true;
}

/* The data of a disabled app's events. */
static json_t *disabled_data(const struct app_row *app, bool opening)
{
    json_t *d = json_pack("{s:s}", "voiceAppId", app->id);
    if (d != NULL && opening)
        json_object_set_new(d, "reason", app->reason[0] ? str_or_null(app->reason) : json_null());
    return d;
}

/* The data of a backlog's events: what waits now. */
static json_t *backlog_data(const struct ops *o, const struct app_row *app, int64_t now)
{
    const struct app_backlog *b = app->backlog;
    json_t *d = json_pack("{s:s, s:I, s:i}", "voiceAppId", app->id, "waiting",
                          (json_int_t)(b ? b->waiting : 0), "alertAgeSeconds", o->alert_age_s);
    if (d == NULL)
        return NULL;
    json_object_set_new(d, "oldestMessageId", b ? str_or_null(b->oldest_msg_id) : json_null());
    json_object_set_new(d, "oldestCreatedAt", b ? json_integer(b->oldest_created_at) : json_null());
    json_object_set_new(d, "oldestAgeSeconds",
                        b ? json_integer(now - b->oldest_created_at) : json_null());
    return d;
}

/* Brings the app's episodes of kind k to cond (true: one is open) with at most one new event:
 * nothing when they are there already (as this node or the store knows it), else the next
 * event, unless another node stored it first. */
static void step(struct ops *o, const struct kind *k, const struct app_row *app, bool cond,
                 int64_t now)
{
    struct episode *ep = episode_of(o, k, app);
    if (ep == NULL)
        return;
    ep->seen = o->check_no;
    if (ep->synced && cond == ep->open)
        return;
    for (int round = 0; round < ROUNDS_MAX; round++) {
        if (!walk(o, k, app, ep))
            return;
        ep->synced = true;
        if (cond == ep->open)
            return;
        char key[OPS_KEY_MAX];
        next_key(k, app, ep, key, sizeof key);
        bool opening = !ep->open;
        json_t *data = k->tag == 'd' ? disabled_data(app, opening) : backlog_data(o, app, now);
        enum stored r = store_one(o, key, opening ? k->open_type : k->close_type, data);
        if (r == STORED_FAILED || r == STORED_DROPPED)
            return; /* the next check tries again */
        advance(ep);
        if (r == STORED_NEW)
            return;
        /* Another node stored it first: read on from there. */
    }
}

/* One check of every app: disabled or not; its backlog older than the alert age or not. */
static void run_check(struct ops *o)
{
    struct rows apps = {0};
    struct backlogs backlogs = {0};
    struct ch_error err = {0};
    o->check_no++;
    if (store_app_list(o->store, collect_app, &apps, &err) != CH_OK ||
        store_app_backlog(o->store, collect_backlog, &backlogs, &err) != CH_OK || apps.oom ||
        backlogs.oom) {
        log_warn("ops: cannot check the voice apps: %s",
                 err.message[0] ? err.message : "out of memory");
        free(apps.v);
        free(backlogs.v);
        return;
    }
    if (backlogs.n > 0)
        qsort(backlogs.v, backlogs.n, sizeof *backlogs.v, by_app_id);
    int64_t now = clock_wall_s();
    for (size_t i = 0; i < apps.n; i++) {
        struct app_row *app = &apps.v[i];
        struct app_backlog probe;
        snprintf(probe.app_id, sizeof probe.app_id, "%s", app->id);
        app->backlog = backlogs.n
                           ? bsearch(&probe, backlogs.v, backlogs.n, sizeof *backlogs.v, by_app_id)
                           : NULL;
        step(o, &kind_disabled, app, !app->enabled, now);
        struct episode *ep = episode_of(o, &kind_backlog, app);
        if (ep == NULL)
            continue;
        ep->seen = o->check_no;
        /* A disabled app's messages are parked, not late: its backlog state waits for it. */
        if (!app->enabled)
            continue;
        if (!ep->synced && !(ep->synced = walk(o, &kind_backlog, app, ep)))
            continue;
        /* Open at the alert age; closed only once nothing waits longer than half of it, so a
         * backlog that hovers around the age does not send a pair of events every check. */
        int64_t age = app->backlog ? now - app->backlog->oldest_created_at : -1;
        bool late = ep->open ? age * 2 >= o->alert_age_s : age >= o->alert_age_s;
        step(o, &kind_backlog, app, late, now);
    }
    /* Forget the apps that are gone (deleted, or made again: a new created_at). */
    for (size_t b = 0; b < BUCKETS; b++) {
        struct episode **pp = &o->episodes[b];
        while (*pp) {
            struct episode *e = *pp;
            if (e->seen == o->check_no) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            free(e);
        }
    }
    free(apps.v);
    free(backlogs.v);
}

/* ---- the thread ---- */

static void *ops_main(void *arg)
{
    struct ops *o = arg;
    thread_name("ch-ops");
    int64_t next_check = clock_mono_ms(), last_check = 0, retry_at = 0;
    pthread_mutex_lock(&o->lock);
    while (!o->stopping) {
        int64_t now = clock_mono_ms();
        if (o->head && now >= retry_at) {
            struct dead_event *list = o->head;
            o->head = o->tail = NULL;
            o->queued = 0;
            pthread_mutex_unlock(&o->lock);
            bool ok = store_dead(o, list);
            pthread_mutex_lock(&o->lock);
            retry_at = ok ? 0 : clock_mono_ms() + WAKE_MIN_MS;
            continue;
        }
        if (o->check_soon && now >= last_check + WAKE_MIN_MS) {
            o->check_soon = false;
            next_check = now;
        }
        if (now >= next_check) {
            pthread_mutex_unlock(&o->lock);
            run_check(o);
            pthread_mutex_lock(&o->lock);
            last_check = clock_mono_ms();
            next_check = last_check + (int64_t)o->check_interval_s * 1000;
            continue;
        }
        int64_t wake = next_check;
        if (o->check_soon && last_check + WAKE_MIN_MS < wake)
            wake = last_check + WAKE_MIN_MS;
        if (o->head && retry_at < wake)
            wake = retry_at;
        struct timespec ts = clock_timespec(wake);
        pthread_cond_timedwait(&o->cond, &o->lock, &ts);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

ch_code ops_start(struct ops *o, struct store *s, struct engine *e, bool *made,
                  struct ch_error *err)
{
    *made = false;
    ch_code rc = provision(s, &o->app, o->secret, made, err);
    crypto_wipe(o->secret, sizeof o->secret); /* it is the store's now */
    if (rc != CH_OK)
        return rc;
    o->store = s;
    o->engine = e;
    if (pthread_create(&o->thread, NULL, ops_main, o) != 0)
        return ch_error_set(err, CH_ENOMEM, "cannot start the ops webhook's thread");
    o->started = true;
    return CH_OK;
}

void ops_stop(struct ops *o)
{
    if (o == NULL)
        return;
    pthread_mutex_lock(&o->lock);
    o->stopping = true;
    pthread_cond_broadcast(&o->cond);
    pthread_mutex_unlock(&o->lock);
    if (o->started)
        pthread_join(o->thread, NULL);
    o->started = false;
    pthread_mutex_lock(&o->lock);
    o->engine = NULL;
    pthread_mutex_unlock(&o->lock);
}

void ops_free(struct ops *o)
{
    if (o == NULL)
        return;
    ops_stop(o);
    crypto_wipe(o->secret, sizeof o->secret);
    /* The engine's last results may have queued some: stored now, due for the next node. */
    pthread_mutex_lock(&o->lock);
    struct dead_event *list = o->head;
    o->head = o->tail = NULL;
    o->queued = 0;
    pthread_mutex_unlock(&o->lock);
    if (o->store == NULL) { /* never started: nothing was stored, nothing can be */
        for (struct dead_event *next; list; list = next) {
            next = list->next;
            free(list);
        }
    }
    if (list && !store_dead(o, list)) {
        pthread_mutex_lock(&o->lock);
        list = o->head;
        o->head = o->tail = NULL;
        pthread_mutex_unlock(&o->lock);
        size_t lost = 0;
        for (struct dead_event *next; list; list = next, lost++) {
            next = list->next;
            free(list);
        }
        log_error("ops: %zu message.dead events could not be stored at stop", lost);
    }
    for (size_t b = 0; b < BUCKETS; b++) {
        for (struct episode *e = o->episodes[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->cond);
    free(o);
}
