/*
 * The store's front door: choosing a backend from a URI, the names shared by every backend,
 * and one store_<op>() per operation, through which every caller goes, so the contract written
 * in store.h is checked in one place whatever the backend.
 */
#include "store/store.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

ch_code store_open(const char *uri, struct store **out, struct ch_error *err)
{
    if (uri != NULL && strncmp(uri, "sqlite:", 7) == 0)
        return store_sqlite_open(uri + 7, out, err);
    /* libpq URIs as they are; "postgres:" + any libpq connection string too. */
    if (uri != NULL &&
        (strncmp(uri, "postgres://", 11) == 0 || strncmp(uri, "postgresql://", 13) == 0))
        return store_postgres_open(uri, out, err);
    if (uri != NULL && strncmp(uri, "postgres:", 9) == 0)
        return store_postgres_open(uri + 9, out, err);
    char shown[512];
    store_uri_for_log(uri ? uri : "", shown, sizeof shown);
    return ch_error_set(err, CH_EINVAL,
                        "unknown database '%s': use sqlite:PATH or postgres://USER@HOST/DB", shown);
}

ch_code store_open_existing(const char *uri, struct store **out, struct ch_error *err)
{
    struct stat st;
    if (uri != NULL && strncmp(uri, "sqlite:", 7) == 0 && stat(uri + 7, &st) != 0)
        return ch_error_set(err, CH_ENOTFOUND,
                            "no database at '%s' (%s): callhook serve makes it on its first "
                            "start; give the one it uses with --db sqlite:PATH or CALLHOOK_DB",
                            uri + 7, strerror(errno));
    return store_open(uri, out, err);
}

const char *msg_status_name(enum msg_status s, int attempts)
{
    switch (s) {
    case MSG_PENDING:
        return attempts > 0 ? "failed" : "pending";
    case MSG_DELIVERING:
        return "delivering";
    case MSG_DELIVERED:
        return "delivered";
    case MSG_DEAD:
        return "dead";
    case MSG_SKIPPED:
        return "skipped";
    }
    return "unknown";
}

bool msg_status_parse(const char *name, enum msg_status *out)
{
    static const struct {
        const char *name;
        enum msg_status status;
    } names[] = {
        {"pending", MSG_PENDING},     {"failed", MSG_PENDING}, {"delivering", MSG_DELIVERING},
        {"delivered", MSG_DELIVERED}, {"dead", MSG_DEAD},      {"skipped", MSG_SKIPPED}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].status;
            return true;
        }
    }
    return false;
}

const char *key_role_name(enum key_role r)
{
    switch (r) {
    case ROLE_INGEST:
        return "ingest";
    case ROLE_READ:
        return "read";
    case ROLE_ADMIN:
        return "admin";
    case ROLE_NONE:
        break;
    }
    return "none";
}

bool key_role_parse(const char *name, enum key_role *out)
{
    for (int r = ROLE_INGEST; r <= ROLE_ADMIN; r++) {
        if (strcmp(name, key_role_name((enum key_role)r)) == 0) {
            *out = (enum key_role)r;
            return true;
        }
    }
    return false;
}

void store_stats_add(struct store_stats *st, int status, bool attempted, bool parked, int64_t n)
{
    if (parked && (status == MSG_PENDING || status == MSG_DELIVERING))
        st->parked += n;
    switch (status) {
    case MSG_PENDING:
        if (attempted)
            st->failed += n;
        else
            st->pending += n;
        break;
    case MSG_DELIVERING:
        st->delivering += n;
        break;
    case MSG_DELIVERED:
        st->delivered += n;
        break;
    case MSG_DEAD:
        st->dead += n;
        break;
    case MSG_SKIPPED:
        st->skipped += n;
        break;
    default:
        break;
    }
}

/* ---- the front door ---- */

void store_close(struct store *s)
{
    if (s != NULL)
        s->ops->close(s);
}

/* A count out-parameter: the backend's value on success, 0 on error. (Call the backend
 * before this: the order in which arguments are evaluated is not defined.) */
static ch_code counted(ch_code rc, int64_t got, int64_t *out)
{
    *out = rc == CH_OK ? got : 0;
    return rc;
}

ch_code store_startup(struct store *s, int64_t now, int64_t *released, struct ch_error *err)
{
    int64_t n = 0;
    ch_code rc = s->ops->startup(s, now, &n, err);
    return counted(rc, n, released);
}

ch_code store_key_count(struct store *s, int64_t *n, struct ch_error *err)
{
    int64_t got = 0;
    ch_code rc = s->ops->key_count(s, &got, err);
    return counted(rc, got, n);
}

ch_code store_key_add(struct store *s, const char *key_id, const unsigned char hash[32],
                      enum key_role role, int64_t now, struct ch_error *err)
{
    return s->ops->key_add(s, key_id, hash, role, now, err);
}

ch_code store_key_lookup(struct store *s, const unsigned char hash[32], enum key_role *role,
                         struct ch_error *err)
{
    enum key_role got = ROLE_NONE;
    ch_code rc = s->ops->key_lookup(s, hash, &got, err);
    if (rc == CH_OK)
        *role = got;
    return rc;
}

ch_code store_key_list(struct store *s,
                       void (*cb)(void *ctx, const char *key_id, enum key_role role,
                                  int64_t created_at, bool revoked),
                       void *ctx, struct ch_error *err)
{
    return s->ops->key_list(s, cb, ctx, err);
}

ch_code store_key_revoke(struct store *s, const char *key_id, struct ch_error *err)
{
    return s->ops->key_revoke(s, key_id, err);
}

ch_code store_app_put(struct store *s, const struct stored_app *a, bool *created,
                      struct ch_error *err)
{
    bool got = false;
    ch_code rc = s->ops->app_put(s, a, &got, err);
    if (rc == CH_OK)
        *created = got;
    return rc;
}

ch_code store_app_get(struct store *s, const char *id, struct stored_app *out, struct ch_error *err)
{
    /* Zeroed first, so whatever a backend left behind on error can be released here. */
    memset(out, 0, sizeof *out);
    ch_code rc = s->ops->app_get(s, id, out, err);
    if (rc != CH_OK) {
        stored_app_release(out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

ch_code store_app_list(struct store *s, void (*cb)(void *ctx, const struct stored_app *a),
                       void *ctx, struct ch_error *err)
{
    return s->ops->app_list(s, cb, ctx, err);
}

ch_code store_app_delete(struct store *s, const char *id, struct ch_error *err)
{
    return s->ops->app_delete(s, id, err);
}

ch_code store_ingest(struct store *s, struct ingest_item *items, size_t n, struct ch_error *err)
{
    return s->ops->ingest(s, items, n, err);
}

static int by_seq(const void *a, const void *b)
{
    int64_t x = ((const struct due_message *)a)->seq, y = ((const struct due_message *)b)->seq;
    return (x > y) - (x < y);
}

ch_code store_claim_due(struct store *s, int64_t now, int64_t lease_until, struct due_message *out,
                        size_t max, size_t *n, struct ch_error *err)
{
    size_t got = 0;
    ch_code rc = s->ops->claim_due(s, now, lease_until, out, max, &got, err);
    assert(got <= max);
    if (got > max)
        got = max;
    if (rc != CH_OK) {
        /* Nothing returned, nothing left allocated, whatever the backend handed over. */
        for (size_t i = 0; i < got; i++) {
            free(out[i].body);
            out[i].body = NULL;
        }
        got = 0;
    }
    /* In the order they were stored, so each app's queue stays first in, first out. The
     * backends already give that order; a sort is only paid for if one did not. */
    for (size_t i = 1; i < got; i++) {
        if (out[i - 1].seq > out[i].seq) {
            qsort(out, got, sizeof *out, by_seq);
            break;
        }
    }
    *n = got;
    return rc;
}

ch_code store_release(struct store *s, const int64_t *seqs, size_t n, int64_t next_attempt_at,
                      struct ch_error *err)
{
    return n == 0 ? CH_OK : s->ops->release(s, seqs, n, next_attempt_at, err);
}

ch_code store_renew(struct store *s, const int64_t *seqs, size_t n, int64_t now,
                    int64_t lease_until, struct ch_error *err)
{
    return n == 0 ? CH_OK : s->ops->renew(s, seqs, n, now, lease_until, err);
}

ch_code store_meta_get(struct store *s, const char *name, char *value, size_t cap,
                       struct ch_error *err)
{
    ch_code rc = s->ops->meta_get(s, name, value, cap, err);
    if (rc != CH_OK && cap > 0)
        value[0] = '\0';
    return rc;
}

ch_code store_meta_put(struct store *s, const char *name, const char *value, bool replace,
                       struct ch_error *err)
{
    return s->ops->meta_put(s, name, value, replace, err);
}

ch_code store_body_page(struct store *s, int64_t after_seq, struct stored_body *out, size_t max,
                        size_t *n, struct ch_error *err)
{
    *n = 0;
    if (max == 0)
        return CH_OK;
    ch_code rc = s->ops->body_page(s, after_seq, out, max, n, err);
    if (rc != CH_OK) {
        for (size_t i = 0; i < *n && i < max; i++)
            free(out[i].body);
        *n = 0;
    }
    return rc;
}

ch_code store_values_replace(struct store *s, const struct value_swap *v, size_t n,
                             size_t *replaced, struct ch_error *err)
{
    *replaced = 0;
    if (n == 0)
        return CH_OK;
    ch_code rc = s->ops->values_replace(s, v, n, replaced, err);
    if (rc != CH_OK)
        *replaced = 0;
    return rc;
}

ch_code store_scrub(struct store *s, struct ch_error *err)
{
    return s->ops->scrub(s, err);
}

ch_code store_record_attempts(struct store *s, const struct attempt_result *r, size_t n,
                              struct ch_error *err)
{
    return n == 0 ? CH_OK : s->ops->record_attempts(s, r, n, err);
}

ch_code store_message_get(struct store *s, const char *msg_id, struct message_view *out,
                          struct ch_error *err)
{
    ch_code rc = s->ops->message_get(s, msg_id, out, err);
    if (rc != CH_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

ch_code store_message_attempts(struct store *s, int64_t seq,
                               void (*cb)(void *ctx, const struct attempt_view *a), void *ctx,
                               struct ch_error *err)
{
    return s->ops->message_attempts(s, seq, cb, ctx, err);
}

ch_code store_message_list(struct store *s, const struct message_filter *f,
                           void (*cb)(void *ctx, const struct message_view *m), void *ctx,
                           struct ch_error *err)
{
    return s->ops->message_list(s, f, cb, ctx, err);
}

ch_code store_message_requeue(struct store *s, const char *msg_id, int64_t now,
                              struct ch_error *err)
{
    return s->ops->message_requeue(s, msg_id, now, err);
}

ch_code store_message_copy(struct store *s, const char *msg_id, const char *new_msg_id,
                           const void *body, size_t body_len, int64_t now, struct ch_error *err)
{
    if (new_msg_id == NULL || strcmp(msg_id, new_msg_id) == 0)
        return ch_error_set(err, CH_EINVAL, "a copy of message '%s' needs an id of its own",
                            msg_id);
    return s->ops->message_copy(s, msg_id, new_msg_id, body, body_len, now, err);
}

ch_code store_app_recover(struct store *s, const char *app_id, int64_t since, int64_t now,
                          int64_t *requeued, struct ch_error *err)
{
    int64_t got = 0;
    ch_code rc = s->ops->app_recover(s, app_id, since, now, &got, err);
    return counted(rc, got, requeued);
}

ch_code store_purge(struct store *s, int64_t payload_before, int64_t attempts_before_ms,
                    int64_t *payloads, int64_t *attempts, struct ch_error *err)
{
    int64_t p = 0, a = 0;
    ch_code rc = s->ops->purge(s, payload_before, attempts_before_ms, &p, &a, err);
    counted(rc, p, payloads);
    return counted(rc, a, attempts);
}

ch_code store_stats(struct store *s, struct store_stats *out, struct ch_error *err)
{
    ch_code rc = s->ops->stats(s, out, err);
    if (rc != CH_OK)
        memset(out, 0, sizeof *out);
    return rc;
}

ch_code store_app_stats(struct store *s, void (*cb)(void *ctx, const struct app_stats *a),
                        void *ctx, struct ch_error *err)
{
    return s->ops->app_stats(s, cb, ctx, err);
}

ch_code store_apps_version(struct store *s, int64_t *version, struct ch_error *err)
{
    int64_t v = 0;
    ch_code rc = s->ops->apps_version(s, &v, err);
    if (rc == CH_OK)
        *version = v;
    return rc;
}

ch_code store_rate_take(struct store *s, const char *app_id, int64_t limit_per_s, int64_t want,
                        int64_t *granted, struct ch_error *err)
{
    *granted = 0;
    if (limit_per_s <= 0)
        return ch_error_set(err, CH_EINVAL, "rate limit %lld per second: must be at least 1",
                            (long long)limit_per_s);
    if (want <= 0)
        return CH_OK;
    int64_t g = 0;
    ch_code rc = s->ops->rate_take(s, app_id, limit_per_s, want, &g, err);
    if (rc == CH_OK)
        *granted = g;
    assert(*granted >= 0 && *granted <= want);
    return rc;
}

/* Copies n bytes of src to out at *o, keeping room for the terminator. */
static void put(char *out, size_t cap, size_t *o, const char *src, size_t n)
{
    while (n-- > 0 && *o + 1 < cap)
        out[(*o)++] = *src++;
    out[*o] = '\0';
}

void store_uri_for_log(const char *uri, char *out, size_t cap)
{
    if (cap == 0)
        return;
    size_t o = 0;
    out[0] = '\0';
    const char *p = uri;
    /* postgres://user:password@host...: the part between the user's ':' and the '@'. */
    const char *scheme = strstr(p, "://");
    if (scheme != NULL && strncmp(p, "sqlite:", 7) != 0) {
        /* The userinfo ends at the last '@' before the query: a password may hold '@' or
         * '/' typed unencoded, and the host after it is shown whole. */
        const char *auth = scheme + 3;
        const char *query = strchr(auth, '?');
        const char *at = NULL;
        for (const char *q = auth; *q && (query == NULL || q < query); q++)
            at = *q == '@' ? q : at;
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (at != NULL && colon != NULL) {
            put(out, cap, &o, p, (size_t)(colon + 1 - p));
            put(out, cap, &o, "***", 3);
            p = at;
        }
    }
    /* password=VALUE, as a conninfo key (space separated, maybe quoted) or a URI parameter. */
    while (*p) {
        const char *k = strstr(p, "password=");
        if (k == NULL || strncmp(uri, "sqlite:", 7) == 0) {
            put(out, cap, &o, p, strlen(p));
            break;
        }
        k += 9;
        put(out, cap, &o, p, (size_t)(k - p));
        put(out, cap, &o, "***", 3);
        if (*k == '\'') {
            for (k++; *k && *k != '\''; k++) {
                if (*k == '\\' && k[1])
                    k++;
            }
            if (*k)
                k++;
        } else {
            k += strcspn(k, " &");
        }
        p = k;
    }
}

void stored_app_release(struct stored_app *a)
{
    if (a != NULL) {
        free(a->config_json);
        a->config_json = NULL;
    }
}

/* ---- the operators' console ---- */

void store_signature_short(const char *sig, char *out, size_t cap)
{
    if (cap == 0)
        return;
    size_t o = 0;
    out[0] = '\0';
    for (const char *p = sig ? sig : ""; *p;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        /* One entry: its version ("v1,") whole, then the first characters of its base64. */
        size_t len = strcspn(p, " ");
        const char *comma = memchr(p, ',', len);
        size_t keep = comma ? (size_t)(comma - p) + 1 + STORE_SIGNATURE_SHORT_CHARS : len;
        if (keep > len)
            keep = len;
        if (o + (o > 0) + keep + 1 > cap)
            break; /* whole entries only */
        if (o > 0)
            out[o++] = ' ';
        memcpy(out + o, p, keep);
        o += keep;
        out[o] = '\0';
        p += len;
    }
}

int store_latency_bucket(int64_t ms)
{
    int b = 0;
    while (b < STORE_LATENCY_BUCKETS - 1 && ms > ((int64_t)1 << b))
        b++;
    return b;
}

int64_t store_latency_bucket_edge_ms(int bucket)
{
    if (bucket < 0)
        bucket = 0;
    if (bucket > STORE_LATENCY_BUCKETS - 2)
        bucket = STORE_LATENCY_BUCKETS - 2;
    return (int64_t)1 << bucket;
}

/* The entry of app_id's minute at (unix seconds), added when new; NULL when out of memory. */
static struct store_rollup_entry *rollup_entry(struct store_rollup *r, const char *app_id,
                                               int64_t at)
{
    int64_t minute = at - at % 60;
    struct store_rollup_entry *e = r->hit < r->n ? &r->e[r->hit] : NULL;
    if (e && e->m.at == minute && strcmp(e->app_id, app_id) == 0)
        return e;
    for (size_t i = 0; i < r->n; i++) {
        if (r->e[i].m.at == minute && strcmp(r->e[i].app_id, app_id) == 0) {
            r->hit = i;
            return &r->e[i];
        }
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct store_rollup_entry *grown = realloc(r->e, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        r->e = grown;
        r->cap = cap;
    }
    e = &r->e[r->n];
    memset(e, 0, sizeof *e);
    e->app_id = app_id;
    e->m.at = minute;
    e->last_error = "";
    r->hit = r->n++;
    return e;
}

bool store_rollup_add_attempts(struct store_rollup *r, const struct attempt_result *res, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct attempt_result *a = &res[i];
        if (a->app_id == NULL)
            continue;
        struct store_rollup_entry *e = rollup_entry(r, a->app_id, a->at_ms / 1000);
        if (e == NULL)
            return false;
        if (a->new_status == MSG_DELIVERED) {
            e->m.delivered++;
            e->m.latency[store_latency_bucket(a->duration_ms)]++;
            continue;
        }
        e->m.failed++;
        e->m.dead += a->new_status == MSG_DEAD;
        /* The attempt that ended last (results come back in any order). */
        if (a->at_ms >= e->last_error_at_ms) {
            e->last_error = a->error ? a->error : "";
            e->last_error_at_ms = a->at_ms;
            e->last_error_seq = a->seq;
        }
    }
    return true;
}

bool store_rollup_add_ingested(struct store_rollup *r, const char *app_id, int64_t at_s)
{
    struct store_rollup_entry *e = rollup_entry(r, app_id, at_s);
    if (e)
        e->m.ingested++;
    return e != NULL;
}

void store_rollup_release(struct store_rollup *r)
{
    free(r->e);
    memset(r, 0, sizeof *r);
}

ch_code store_app_console(struct store *s, const char *app_id,
                          void (*cb)(void *ctx, const struct app_console *a), void *ctx,
                          struct ch_error *err)
{
    return s->ops->app_console(s, app_id, cb, ctx, err);
}

ch_code store_app_minutes(struct store *s, const char *app_id, int64_t from_minute,
                          void (*cb)(void *ctx, const char *app_id, const struct store_minute *m),
                          void *ctx, struct ch_error *err)
{
    return s->ops->app_minutes(s, app_id, from_minute, cb, ctx, err);
}

ch_code store_message_body(struct store *s, const char *msg_id, struct stored_body *out,
                           struct ch_error *err)
{
    memset(out, 0, sizeof *out);
    ch_code rc = s->ops->message_body(s, msg_id, out, err);
    if (rc != CH_OK) {
        free(out->body);
        memset(out, 0, sizeof *out);
    }
    return rc;
}
