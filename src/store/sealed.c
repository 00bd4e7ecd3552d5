/*
 * Encryption at rest as a store decorator: it implements the store interface over another
 * store, sealing call records on their way in and Voice Apps' signing secrets and settings
 * (their headers carry receivers' tokens) on every write, opening them on the way out. The backends
 * never see a plaintext record, so neither does the database file.
 */
#include "store/store.h"

#include "lib/crypto.h"
#include "util/base64.h"
#include "util/config.h"
#include "util/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET_PREFIX "enc:"

struct sealed_store {
    struct store base;
    struct store *inner;
    unsigned char key[CRYPTO_DATA_KEY_LEN];
    /* Every value of this database was sealed bound to its place (it was empty when it was
     * first sealed): a plaintext or unbound value is refused, not read. */
    bool strict;
};

/* Where a value lives, authenticated with it: "table.column:row id". */
static int place(char *buf, size_t cap, const char *column, const char *row)
{
    return snprintf(buf, cap, "%s:%s", column, row);
}

static struct sealed_store *self(struct store *s)
{
    return (struct sealed_store *)s;
}

static struct store *inner(struct store *s)
{
    return self(s)->inner;
}

/* ---- secrets: "enc:" + base64 of the sealed text ---- */

static bool seal_secret(const unsigned char *key, const char *where, const char *plain, char *out,
                        size_t cap)
{
    size_t len = strlen(plain);
    if (len == 0) {
        out[0] = '\0';
        return true;
    }
    unsigned char sealed[128 + CRYPTO_SEAL_OVERHEAD];
    size_t n = 0;
    if (len > 128 ||
        !crypto_seal_bound(key, where, strlen(where), plain, len, sealed, sizeof sealed, &n) ||
        B64_ENCODED_LEN(n) + strlen(SECRET_PREFIX) + 1 > cap)
        return false;
    memcpy(out, SECRET_PREFIX, strlen(SECRET_PREFIX));
    b64_encode(sealed, n, out + strlen(SECRET_PREFIX), cap - strlen(SECRET_PREFIX));
    return true;
}

/* Opens a sealed value in place: bound to where, or (not strict) in the first form, unbound.
 * false when it does not open, or is unbound or plain in a strict database. */
static bool open_value(const struct sealed_store *st, const char *where, const unsigned char *in,
                       size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
    if (crypto_is_sealed_bound(in, len))
        return crypto_open_bound(st->key, where, strlen(where), in, len, out, cap, out_len);
    return !st->strict && crypto_open(st->key, in, len, out, cap, out_len);
}

static bool open_secret(const struct sealed_store *st, const char *where, char *text, size_t cap)
{
    if (strncmp(text, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
        return text[0] == '\0' || !st->strict; /* plain: written before encryption was on */
    unsigned char sealed[256], plain[256];
    size_t n = 0, m = 0;
    const char *b64 = text + strlen(SECRET_PREFIX);
    if (!b64_decode(b64, strlen(b64), sealed, sizeof sealed, &n) ||
        !open_value(st, where, sealed, n, plain, sizeof plain - 1, &m) || m >= cap)
        return false;
    memcpy(text, plain, m);
    text[m] = '\0';
    crypto_wipe(plain, sizeof plain);
    return true;
}

/* ---- settings: the whole config_json as "enc:" + base64 of the sealed text, since its
 * headers carry receivers' tokens ---- */

/* A malloc'd sealed copy of plain, or NULL (out of memory, or too large to be a setting). */
static char *seal_config(const unsigned char *key, const char *where, const char *plain)
{
    size_t len = strlen(plain);
    if (len > (1u << 24))
        return NULL;
    size_t sealed_cap = len + CRYPTO_SEAL_OVERHEAD, n = 0;
    size_t cap = strlen(SECRET_PREFIX) + B64_ENCODED_LEN(sealed_cap) + 1;
    unsigned char *sealed = malloc(sealed_cap);
    char *out = malloc(cap);
    if (sealed == NULL || out == NULL ||
        !crypto_seal_bound(key, where, strlen(where), plain, len, sealed, sealed_cap, &n)) {
        free(sealed);
        free(out);
        return NULL;
    }
    memcpy(out, SECRET_PREFIX, strlen(SECRET_PREFIX));
    b64_encode(sealed, n, out + strlen(SECRET_PREFIX), cap - strlen(SECRET_PREFIX));
    free(sealed);
    return out;
}

/* Replaces *text (malloc'd) with its opened form; true when it was written before encryption
 * was turned on (left as it is). */
static bool open_config(const struct sealed_store *st, const char *where, char **text)
{
    if (strncmp(*text, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
        return !st->strict;
    const char *b64 = *text + strlen(SECRET_PREFIX);
    size_t b64_len = strlen(b64), cap = b64_len / 4 * 3 + 3, n = 0, m = 0;
    unsigned char *sealed = malloc(cap);
    char *plain = malloc(cap + 1);
    bool ok = sealed && plain && b64_decode(b64, b64_len, sealed, cap, &n) &&
              open_value(st, where, sealed, n, (unsigned char *)plain, cap, &m);
    free(sealed);
    if (!ok) {
        free(plain);
        return false;
    }
    plain[m] = '\0';
    free(*text);
    *text = plain;
    return true;
}

static ch_code open_app(struct sealed_store *st, struct stored_app *a, struct ch_error *err)
{
    char w1[200], w2[200], w3[200];
    place(w1, sizeof w1, "voice_apps.secret", a->id);
    place(w2, sizeof w2, "voice_apps.prev_secret", a->id);
    place(w3, sizeof w3, "voice_apps.config", a->id);
    if (!open_secret(st, w1, a->secret, sizeof a->secret) ||
        !open_secret(st, w2, a->prev_secret, sizeof a->prev_secret))
        return ch_error_set(err, CH_ESTORE,
                            "cannot decrypt the signing secret of voice app '%s': wrong data key, "
                            "or the database was changed",
                            a->id);
    if (!open_config(st, w3, &a->config_json))
        return ch_error_set(err, CH_ESTORE,
                            "cannot decrypt the settings of voice app '%s': wrong data key, or "
                            "the database was changed",
                            a->id);
    return CH_OK;
}

/* ---- operations that change something on the way ---- */

static ch_code app_put(struct store *s, const struct stored_app *a, bool *created,
                       struct ch_error *err)
{
    struct sealed_store *st = self(s);
    struct stored_app copy = *a;
    char w1[200], w2[200], w3[200];
    place(w1, sizeof w1, "voice_apps.secret", a->id);
    place(w2, sizeof w2, "voice_apps.prev_secret", a->id);
    place(w3, sizeof w3, "voice_apps.config", a->id);
    if (!seal_secret(st->key, w1, a->secret, copy.secret, sizeof copy.secret) ||
        !seal_secret(st->key, w2, a->prev_secret, copy.prev_secret, sizeof copy.prev_secret))
        return ch_error_set(err, CH_ECRYPTO, "cannot encrypt a signing secret");
    copy.config_json = seal_config(st->key, w3, a->config_json ? a->config_json : "{}");
    if (copy.config_json == NULL)
        return ch_error_set(err, CH_ECRYPTO, "cannot encrypt the settings of voice app '%s'",
                            a->id);
    ch_code rc = st->inner->ops->app_put(st->inner, &copy, created, err);
    crypto_wipe(copy.secret, sizeof copy.secret);
    free(copy.config_json);
    return rc;
}

static ch_code app_get(struct store *s, const char *id, struct stored_app *out,
                       struct ch_error *err)
{
    ch_code rc = inner(s)->ops->app_get(inner(s), id, out, err);
    if (rc == CH_OK && (rc = open_app(self(s), out, err)) != CH_OK)
        stored_app_release(out);
    return rc;
}

struct list_ctx {
    struct sealed_store *st;
    void (*cb)(void *ctx, const struct stored_app *a);
    void *ctx;
};

static void open_each(void *ctx, const struct stored_app *a)
{
    struct list_ctx *l = ctx;
    struct stored_app copy = *a;
    /* The copy's settings are its own: the inner store frees a's. */
    copy.config_json = strdup(a->config_json ? a->config_json : "{}");
    if (copy.config_json && open_app(l->st, &copy, NULL) == CH_OK)
        l->cb(l->ctx, &copy);
    crypto_wipe(copy.secret, sizeof copy.secret);
    stored_app_release(&copy);
}

static ch_code app_list(struct store *s, void (*cb)(void *ctx, const struct stored_app *a),
                        void *ctx, struct ch_error *err)
{
    struct list_ctx l = {self(s), cb, ctx};
    return inner(s)->ops->app_list(inner(s), open_each, &l, err);
}

static ch_code ingest(struct store *s, struct ingest_item *items, size_t n, struct ch_error *err)
{
    struct sealed_store *st = self(s);
    const void **plain = calloc(n, sizeof *plain);
    size_t *plain_len = calloc(n, sizeof *plain_len);
    unsigned char **sealed = calloc(n, sizeof *sealed);
    ch_code rc = CH_OK;
    if (plain == NULL || plain_len == NULL || sealed == NULL)
        rc = ch_error_set(err, CH_ENOMEM, "out of memory encrypting a batch");
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        size_t cap = items[i].body_len + CRYPTO_SEAL_OVERHEAD, len = 0;
        char where[100];
        place(where, sizeof where, "messages.body", items[i].msg_id);
        sealed[i] = malloc(cap);
        if (sealed[i] == NULL || !crypto_seal_bound(st->key, where, strlen(where), items[i].body,
                                                    items[i].body_len, sealed[i], cap, &len)) {
            rc = ch_error_set(err, CH_EUNAVAILABLE, "cannot encrypt a call record");
            break;
        }
        plain[i] = items[i].body;
        plain_len[i] = items[i].body_len;
        items[i].body = sealed[i];
        items[i].body_len = len;
    }
    if (rc == CH_OK)
        rc = st->inner->ops->ingest(st->inner, items, n, err);
    /* The caller's items point at its own bytes again. */
    for (size_t i = 0; plain && plain_len && sealed && i < n; i++) {
        if (plain[i]) {
            items[i].body = plain[i];
            items[i].body_len = plain_len[i];
        }
        free(sealed[i]);
    }
    free(plain);
    free(plain_len);
    free(sealed);
    return rc;
}

static ch_code claim_due(struct store *s, int64_t now, int64_t lease_until, struct due_message *out,
                         size_t max, size_t *n, struct ch_error *err)
{
    struct sealed_store *st = self(s);
    ch_code rc = st->inner->ops->claim_due(st->inner, now, lease_until, out, max, n, err);
    if (rc != CH_OK) {
        /* Nothing is returned on error, even if the inner store handed something over. */
        for (size_t k = 0; k < *n; k++)
            free(out[k].body);
        *n = 0;
    }
    for (size_t i = 0; rc == CH_OK && i < *n; i++) {
        /* Plain: stored before encryption was turned on (refused when strict), or emptied by
         * retention. */
        bool plain_ok = out[i].body_len == 0 || !st->strict;
        if (!crypto_is_sealed(out[i].body, out[i].body_len) && plain_ok)
            continue;
        size_t len = 0;
        char where[100];
        place(where, sizeof where, "messages.body", out[i].msg_id);
        unsigned char *plain = out[i].body_len ? malloc(out[i].body_len) : NULL;
        if (plain == NULL ||
            !open_value(st, where, out[i].body, out[i].body_len, plain, out[i].body_len, &len)) {
            free(plain);
            /* Leave it claimed: the lease brings it back, and the log says why. */
            rc = ch_error_set(err, CH_ESTORE,
                              "cannot decrypt message '%s': wrong data key, or the database "
                              "was changed",
                              out[i].msg_id);
            for (size_t k = 0; k < *n; k++)
                free(out[k].body);
            *n = 0;
            break;
        }
        free(out[i].body);
        out[i].body = plain;
        out[i].body_len = len;
    }
    return rc;
}

/* ---- everything else passes through ---- */

static void sealed_close(struct store *s)
{
    struct sealed_store *st = self(s);
    st->inner->ops->close(st->inner);
    crypto_wipe(st->key, sizeof st->key);
    free(st);
}

static ch_code startup(struct store *s, int64_t now, int64_t *released, struct ch_error *err)
{
    return inner(s)->ops->startup(inner(s), now, released, err);
}

static ch_code key_count(struct store *s, int64_t *n, struct ch_error *err)
{
    return inner(s)->ops->key_count(inner(s), n, err);
}

static ch_code key_add(struct store *s, const char *key_id, const unsigned char hash[32],
                       enum key_role role, int64_t now, struct ch_error *err)
{
    return inner(s)->ops->key_add(inner(s), key_id, hash, role, now, err);
}

static ch_code key_lookup(struct store *s, const unsigned char hash[32], enum key_role *role,
                          struct ch_error *err)
{
    return inner(s)->ops->key_lookup(inner(s), hash, role, err);
}

static ch_code key_list(struct store *s,
                        void (*cb)(void *ctx, const char *key_id, enum key_role role,
                                   int64_t created_at, bool revoked),
                        void *ctx, struct ch_error *err)
{
    return inner(s)->ops->key_list(inner(s), cb, ctx, err);
}

static ch_code key_revoke(struct store *s, const char *key_id, struct ch_error *err)
{
    return inner(s)->ops->key_revoke(inner(s), key_id, err);
}

static ch_code app_delete(struct store *s, const char *id, struct ch_error *err)
{
    return inner(s)->ops->app_delete(inner(s), id, err);
}

static ch_code release(struct store *s, const int64_t *seqs, size_t n, int64_t next_attempt_at,
                       struct ch_error *err)
{
    return inner(s)->ops->release(inner(s), seqs, n, next_attempt_at, err);
}

static ch_code renew(struct store *s, const int64_t *seqs, size_t n, int64_t now,
                     int64_t lease_until, struct ch_error *err)
{
    return inner(s)->ops->renew(inner(s), seqs, n, now, lease_until, err);
}

static ch_code record_attempts(struct store *s, const struct attempt_result *r, size_t n,
                               struct ch_error *err)
{
    return inner(s)->ops->record_attempts(inner(s), r, n, err);
}

static ch_code message_get(struct store *s, const char *msg_id, struct message_view *out,
                           struct ch_error *err)
{
    ch_code rc = inner(s)->ops->message_get(inner(s), msg_id, out, err);
    if (rc == CH_OK && out->body_len >= CRYPTO_SEAL_OVERHEAD)
        out->body_len -= CRYPTO_SEAL_OVERHEAD; /* the record's own size */
    return rc;
}

static ch_code message_attempts(struct store *s, int64_t seq,
                                void (*cb)(void *ctx, const struct attempt_view *a), void *ctx,
                                struct ch_error *err)
{
    return inner(s)->ops->message_attempts(inner(s), seq, cb, ctx, err);
}

struct message_list_ctx {
    void (*cb)(void *ctx, const struct message_view *m);
    void *ctx;
};

static void fix_size(void *ctx, const struct message_view *m)
{
    struct message_list_ctx *l = ctx;
    struct message_view copy = *m;
    if (copy.body_len >= CRYPTO_SEAL_OVERHEAD)
        copy.body_len -= CRYPTO_SEAL_OVERHEAD;
    l->cb(l->ctx, &copy);
}

static ch_code message_list(struct store *s, const struct message_filter *f,
                            void (*cb)(void *ctx, const struct message_view *m), void *ctx,
                            struct ch_error *err)
{
    struct message_list_ctx l = {cb, ctx};
    return inner(s)->ops->message_list(inner(s), f, fix_size, &l, err);
}

static ch_code message_requeue(struct store *s, const char *msg_id, int64_t now,
                               struct ch_error *err)
{
    return inner(s)->ops->message_requeue(inner(s), msg_id, now, err);
}

/* A record is sealed bound to its message's id: a copy under a new id is opened from the
 * original's place and sealed again to its own, so it opens there and nowhere else. */
static ch_code message_copy(struct store *s, const char *msg_id, const char *new_msg_id,
                            const void *body, size_t body_len, int64_t now, struct ch_error *err)
{
    struct sealed_store *st = self(s);
    struct stored_body rec = {0};
    unsigned char *plain = NULL, *sealed = NULL;
    size_t plain_cap = 0;
    ch_code rc = CH_OK;
    if (body == NULL) {
        struct message_view m;
        size_t n = 0;
        rc = st->inner->ops->message_get(st->inner, msg_id, &m, err);
        if (rc == CH_OK)
            rc = st->inner->ops->body_page(st->inner, m.seq - 1, &rec, 1, &n, err);
        if (rc == CH_OK && (n == 0 || rec.seq != m.seq)) {
            /* Emptied by retention: the inner store says so. */
            if (n == 1)
                free(rec.body);
            return st->inner->ops->message_copy(st->inner, msg_id, new_msg_id, NULL, 0, now, err);
        }
        if (rc != CH_OK)
            return rc;
        char where[100];
        place(where, sizeof where, "messages.body", msg_id);
        size_t len = 0;
        bool plain_ok = !st->strict && !crypto_is_sealed(rec.body, rec.body_len);
        plain_cap = rec.body_len ? rec.body_len : 1;
        plain = malloc(plain_cap);
        if (plain != NULL && plain_ok) {
            memcpy(plain, rec.body, rec.body_len);
            len = rec.body_len;
        } else if (plain == NULL ||
                   !open_value(st, where, rec.body, rec.body_len, plain, rec.body_len, &len)) {
            rc = ch_error_set(err, CH_ESTORE,
                              "cannot decrypt message '%s': wrong data key, or the database "
                              "was changed",
                              msg_id);
        }
        free(rec.body);
        body = plain;
        body_len = len;
    }
    size_t cap = body_len + CRYPTO_SEAL_OVERHEAD, sealed_len = 0;
    char where[100];
    place(where, sizeof where, "messages.body", new_msg_id);
    if (rc == CH_OK &&
        ((sealed = malloc(cap)) == NULL || !crypto_seal_bound(st->key, where, strlen(where), body,
                                                              body_len, sealed, cap, &sealed_len)))
        rc = ch_error_set(err, CH_EUNAVAILABLE, "cannot encrypt a call record");
    if (rc == CH_OK)
        rc = st->inner->ops->message_copy(st->inner, msg_id, new_msg_id, sealed, sealed_len, now,
                                          err);
    if (plain)
        crypto_wipe(plain, plain_cap);
    free(plain);
    free(sealed);
    return rc;
}

static ch_code app_recover(struct store *s, const char *app_id, int64_t since, int64_t now,
                           int64_t *requeued, struct ch_error *err)
{
    return inner(s)->ops->app_recover(inner(s), app_id, since, now, requeued, err);
}

static ch_code purge(struct store *s, int64_t payload_before, int64_t attempts_before_ms,
                     int64_t *payloads, int64_t *attempts, struct ch_error *err)
{
    return inner(s)->ops->purge(inner(s), payload_before, attempts_before_ms, payloads, attempts,
                                err);
}

static ch_code stats(struct store *s, struct store_stats *out, struct ch_error *err)
{
    return inner(s)->ops->stats(inner(s), out, err);
}

static ch_code app_stats(struct store *s, void (*cb)(void *ctx, const struct app_stats *a),
                         void *ctx, struct ch_error *err)
{
    return inner(s)->ops->app_stats(inner(s), cb, ctx, err); /* nothing in it is sealed */
}

/* The console's figures hold nothing sealed (errors and counts, as app_stats). */
static ch_code app_console(struct store *s, const char *app_id,
                           void (*cb)(void *ctx, const struct app_console *a), void *ctx,
                           struct ch_error *err)
{
    return inner(s)->ops->app_console(inner(s), app_id, cb, ctx, err);
}

static ch_code app_minutes(struct store *s, const char *app_id, int64_t from_minute,
                           void (*cb)(void *ctx, const char *app_id, const struct store_minute *m),
                           void *ctx, struct ch_error *err)
{
    return inner(s)->ops->app_minutes(inner(s), app_id, from_minute, cb, ctx, err);
}

/* A record opened from its place, as a claim opens it. */
static ch_code message_body(struct store *s, const char *msg_id, struct stored_body *out,
                            struct ch_error *err)
{
    struct sealed_store *st = self(s);
    ch_code rc = st->inner->ops->message_body(st->inner, msg_id, out, err);
    if (rc != CH_OK || out->body_len == 0)
        return rc;
    if (!crypto_is_sealed(out->body, out->body_len) && !st->strict)
        return CH_OK; /* stored before encryption was turned on */
    char where[100];
    place(where, sizeof where, "messages.body", out->msg_id);
    size_t len = 0;
    unsigned char *plain = malloc(out->body_len + 1);
    if (plain == NULL ||
        !open_value(st, where, out->body, out->body_len, plain, out->body_len, &len)) {
        free(plain);
        free(out->body);
        out->body = NULL;
        out->body_len = 0;
        return ch_error_set(err, CH_ESTORE,
                            "cannot decrypt message '%s': wrong data key, or the database was "
                            "changed",
                            msg_id);
    }
    plain[len] = '\0';
    free(out->body);
    out->body = plain;
    out->body_len = len;
    return CH_OK;
}

static ch_code apps_version(struct store *s, int64_t *version, struct ch_error *err)
{
    return inner(s)->ops->apps_version(inner(s), version, err);
}

static ch_code rate_take(struct store *s, const char *app_id, int64_t limit_per_s, int64_t want,
                         int64_t *granted, struct ch_error *err)
{
    return inner(s)->ops->rate_take(inner(s), app_id, limit_per_s, want, granted, err);
}

static ch_code meta_get(struct store *s, const char *name, char *value, size_t cap,
                        struct ch_error *err)
{
    return inner(s)->ops->meta_get(inner(s), name, value, cap, err);
}

static ch_code meta_put(struct store *s, const char *name, const char *value, bool replace,
                        struct ch_error *err)
{
    return inner(s)->ops->meta_put(inner(s), name, value, replace, err);
}

static ch_code body_page(struct store *s, int64_t after_seq, struct stored_body *out, size_t max,
                         size_t *n, struct ch_error *err)
{
    return inner(s)->ops->body_page(inner(s), after_seq, out, max, n, err);
}

static ch_code values_replace(struct store *s, const struct value_swap *v, size_t n,
                              size_t *replaced, struct ch_error *err)
{
    return inner(s)->ops->values_replace(inner(s), v, n, replaced, err);
}

static ch_code scrub(struct store *s, struct ch_error *err)
{
    return inner(s)->ops->scrub(inner(s), err);
}

static const struct store_ops sealed_ops = {
    .name = "sealed",
    .close = sealed_close,
    .startup = startup,
    .key_count = key_count,
    .key_add = key_add,
    .key_lookup = key_lookup,
    .key_list = key_list,
    .key_revoke = key_revoke,
    .app_put = app_put,
    .app_get = app_get,
    .app_list = app_list,
    .app_delete = app_delete,
    .ingest = ingest,
    .claim_due = claim_due,
    .release = release,
    .renew = renew,
    .record_attempts = record_attempts,
    .message_get = message_get,
    .message_attempts = message_attempts,
    .message_list = message_list,
    .message_requeue = message_requeue,
    .message_copy = message_copy,
    .app_recover = app_recover,
    .purge = purge,
    .stats = stats,
    .app_stats = app_stats,
    .app_console = app_console,
    .app_minutes = app_minutes,
    .message_body = message_body,
    .apps_version = apps_version,
    .rate_take = rate_take,
    .meta_get = meta_get,
    .meta_put = meta_put,
    .body_page = body_page,
    .values_replace = values_replace,
    .scrub = scrub,
};

/* ---- the database's check value of its key ---- */

#define CHECK_NAME  "data_key_check"
#define CHECK_LABEL "callhook data key check v1"

/* "hmac-sha256:" + base64 of HMAC-SHA256(key, CHECK_LABEL): it tells a key from another and
 * tells nothing about the key. */
static bool key_check(const unsigned char key[CRYPTO_DATA_KEY_LEN], char *out, size_t cap)
{
    static const char prefix[] = "hmac-sha256:";
    struct crypto_part label = {CHECK_LABEL, sizeof CHECK_LABEL - 1};
    unsigned char mac[CRYPTO_SHA256_LEN];
    if (cap < sizeof prefix + B64_ENCODED_LEN(sizeof mac) ||
        !crypto_hmac_sha256(key, CRYPTO_DATA_KEY_LEN, &label, 1, mac))
        return false;
    memcpy(out, prefix, sizeof prefix - 1);
    b64_encode(mac, sizeof mac, out + sizeof prefix - 1, cap - (sizeof prefix - 1));
    return true;
}

ch_code store_is_sealed(struct store *s, bool *sealed, struct ch_error *err)
{
    char value[128];
    ch_code rc = store_meta_get(s, CHECK_NAME, value, sizeof value, err);
    if (rc == CH_ENOTFOUND) {
        *sealed = false;
        return CH_OK;
    }
    if (rc == CH_OK)
        *sealed = true;
    return rc;
}

#define FORM_NAME  "sealed_form"
#define FORM_BOUND "bound"

static void count_apps(void *ctx, const struct stored_app *a)
{
    (void)a;
    (*(int64_t *)ctx)++;
}

/* A database empty when first sealed holds only bound values from then on: it is strict. */
static ch_code decide_form(struct store *in, bool *strict, struct ch_error *err)
{
    char form[32];
    ch_code rc = store_meta_get(in, FORM_NAME, form, sizeof form, err);
    if (rc == CH_OK) {
        *strict = strcmp(form, FORM_BOUND) == 0;
        return CH_OK;
    }
    if (rc != CH_ENOTFOUND)
        return rc;
    struct store_stats st;
    int64_t apps = 0;
    rc = store_stats(in, &st, err);
    if (rc == CH_OK)
        rc = store_app_list(in, count_apps, &apps, err);
    *strict = false;
    if (rc != CH_OK || apps + st.pending + st.delivering + st.delivered + st.dead + st.skipped != 0)
        return rc;
    rc = store_meta_put(in, FORM_NAME, FORM_BOUND, false, err);
    if (rc == CH_OK)
        rc = store_meta_get(in, FORM_NAME, form, sizeof form, err);
    if (rc == CH_OK)
        *strict = strcmp(form, FORM_BOUND) == 0;
    return rc;
}

#define REKEY_NAME "rekey_to"

/* A change of key that was started and not finished (callhook store rekey writes the new
 * key's check value here first and empties it last): some values are under the new key. */
static ch_code check_no_rekey(struct store *in, struct ch_error *err)
{
    char to[128];
    ch_code rc = store_meta_get(in, REKEY_NAME, to, sizeof to, err);
    if (rc == CH_ENOTFOUND || (rc == CH_OK && to[0] == '\0'))
        return CH_OK;
    if (rc == CH_OK)
        rc = ch_error_set(err, CH_ESECRET,
                          "a change of this database's data key was started and not finished: "
                          "run 'callhook store rekey' again with the same new key");
    return rc;
}

/* The first key a database is opened with becomes its key; any other is refused. */
static ch_code check_key(struct store *in, const unsigned char key[CRYPTO_DATA_KEY_LEN],
                         struct ch_error *err)
{
    char want[128], have[128];
    if (!key_check(key, want, sizeof want))
        return ch_error_set(err, CH_ECRYPTO, "cannot compute the data key's check value");
    /* Several nodes may start at once: the first check value written stays, and each node
     * compares its key with that one. */
    ch_code rc = store_meta_put(in, CHECK_NAME, want, false, err);
    if (rc == CH_OK)
        rc = store_meta_get(in, CHECK_NAME, have, sizeof have, err);
    if (rc == CH_OK && (strlen(have) != strlen(want) || !crypto_equal(have, want, strlen(want))))
        rc = ch_error_set(err, CH_ESECRET,
                          "the data key does not match this database's: give the key it was "
                          "sealed with (--data-key-file or CALLHOOK_DATA_KEY)");
    return rc;
}

ch_code store_sealed_wrap(struct store *in, const unsigned char key[32], struct store **out,
                          struct ch_error *err)
{
    bool strict = false;
    ch_code rc = check_no_rekey(in, err);
    if (rc == CH_OK)
        rc = check_key(in, key, err);
    if (rc == CH_OK)
        rc = decide_form(in, &strict, err);
    if (rc != CH_OK)
        return rc;
    struct sealed_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    st->base.ops = &sealed_ops;
    st->base.kind = in->kind;
    st->base.schema_version = in->schema_version;
    st->base.sealed = true;
    st->inner = in;
    st->strict = strict;
    memcpy(st->key, key, sizeof st->key);
    *out = &st->base;
    return CH_OK;
}

bool store_sealed_reads_old_forms(struct store *s)
{
    return s != NULL && s->ops == &sealed_ops && !self(s)->strict;
}

/* ---- the data key, as serve and callhook store take it ---- */

ch_code store_data_key_load(const char *file, const char *env_name,
                            unsigned char key[CRYPTO_DATA_KEY_LEN], bool *have,
                            struct ch_error *err)
{
    char text[256] = "";
    *have = false;
    const char *env = env_name ? getenv(env_name) : NULL;
    if (file && file[0]) {
        ch_code rc = fs_check_private(file, "data key file", err);
        if (rc != CH_OK)
            return rc;
        FILE *f = fopen(file, "r");
        if (f == NULL)
            return ch_error_set(err, CH_EIO, "cannot open the data key '%s': %s", file,
                                strerror(errno));
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
    } else if (env && *env) {
        snprintf(text, sizeof text, "%s", env);
    } else {
        return CH_OK;
    }
    char *t = config_trim(text);
    size_t n = 0;
    bool ok = b64_decode(t, strlen(t), key, CRYPTO_DATA_KEY_LEN, &n) && n == CRYPTO_DATA_KEY_LEN;
    crypto_wipe(text, sizeof text);
    if (!ok)
        return ch_error_set(err, CH_EINVAL,
                            "the data key must be base64 of 32 random bytes (openssl rand "
                            "-base64 32)");
    *have = true;
    return CH_OK;
}

/* ---- callhook store seal and rekey: every value re-sealed in the bound form ---- */

/* Records per page, and apps per transaction: each transaction stays small. */
#define RESEAL_RECORDS 500
#define RESEAL_APPS    100

struct reseal {
    struct store *s;                        /* the raw store */
    const unsigned char *old_key, *new_key; /* the same key for seal */
    bool two_keys;                          /* rekey: old_key also opens the bound form */
    bool strict; /* the database holds only bound values: anything else was put there */
    struct store_reseal_counts *counts;
    int64_t pass_changed; /* values changed meanwhile in this pass */
};

/* value (len bytes, as stored) re-sealed bound to where under the new key: *out is malloc'd,
 * or NULL when the value is already so. Opens the bound form under either key and, unless the
 * database is strict, the first form and plaintext. */
static ch_code reseal_value(const struct reseal *r, const char *where, const unsigned char *in,
                            size_t len, unsigned char **out, size_t *out_len, struct ch_error *err)
{
    *out = NULL;
    size_t wlen = strlen(where), m = 0;
    unsigned char *plain = malloc(len + 1);
    if (plain == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory re-sealing '%s'", where);
    const unsigned char *p = plain;
    bool opened;
    if (crypto_is_sealed_bound(in, len)) {
        if (crypto_open_bound(r->new_key, where, wlen, in, len, plain, len, &m)) {
            crypto_wipe(plain, len + 1);
            free(plain);
            return CH_OK; /* done already (by an earlier run, or written so) */
        }
        opened = r->two_keys && crypto_open_bound(r->old_key, where, wlen, in, len, plain, len, &m);
    } else if (r->strict) {
        free(plain);
        return ch_error_set(err, CH_ESTORE,
                            "'%s' is not sealed in the bound form, in a database that holds "
                            "only bound values: it was written behind callhook's back (restore "
                            "it from a backup, or delete it) before running this again",
                            where);
    } else if (crypto_is_sealed(in, len)) {
        opened = crypto_open(r->old_key, in, len, plain, len, &m);
    } else {
        p = in; /* plaintext, written before the key was set */
        m = len;
        opened = true;
    }
    if (!opened) {
        free(plain);
        return ch_error_set(err, CH_ESTORE,
                            "cannot decrypt '%s': it is under neither key given, or the "
                            "database was changed",
                            where);
    }
    size_t cap = m + CRYPTO_SEAL_OVERHEAD;
    *out = malloc(cap);
    bool sealed = *out && crypto_seal_bound(r->new_key, where, wlen, p, m, *out, cap, out_len);
    crypto_wipe(plain, len + 1);
    free(plain);
    if (!sealed) {
        free(*out);
        *out = NULL;
        return ch_error_set(err, CH_ECRYPTO, "cannot encrypt '%s'", where);
    }
    return CH_OK;
}

/* The same for a secret or a setting, stored as text ("enc:" + base64, or plaintext): *out
 * is the malloc'd new text, or NULL when there is nothing to do (already so, or empty). */
static ch_code reseal_text(const struct reseal *r, const char *where, const char *text, char **out,
                           struct ch_error *err)
{
    *out = NULL;
    size_t tlen = strlen(text);
    if (tlen == 0)
        return CH_OK; /* no previous secret */
    const unsigned char *in = (const unsigned char *)text;
    unsigned char *decoded = NULL;
    size_t len = tlen;
    if (strncmp(text, SECRET_PREFIX, strlen(SECRET_PREFIX)) == 0) {
        const char *b64 = text + strlen(SECRET_PREFIX);
        size_t cap = strlen(b64) / 4 * 3 + 3;
        decoded = malloc(cap);
        /* Sealed by callhook: never taken for plaintext, whatever it holds. */
        if (decoded == NULL || !b64_decode(b64, strlen(b64), decoded, cap, &len) ||
            !crypto_is_sealed(decoded, len)) {
            free(decoded);
            return ch_error_set(err, CH_ESTORE,
                                "'%s' starts with 'enc:' but is not a sealed value: the "
                                "database was changed",
                                where);
        }
        in = decoded;
    }
    unsigned char *sealed = NULL;
    size_t n = 0;
    ch_code rc = reseal_value(r, where, in, len, &sealed, &n, err);
    free(decoded);
    if (rc != CH_OK || sealed == NULL)
        return rc;
    size_t cap = strlen(SECRET_PREFIX) + B64_ENCODED_LEN(n) + 1;
    *out = malloc(cap);
    if (*out == NULL) {
        free(sealed);
        return ch_error_set(err, CH_ENOMEM, "out of memory re-sealing '%s'", where);
    }
    memcpy(*out, SECRET_PREFIX, strlen(SECRET_PREFIX));
    b64_encode(sealed, n, *out + strlen(SECRET_PREFIX), cap - strlen(SECRET_PREFIX));
    free(sealed);
    return CH_OK;
}

/* The apps as stored, copied (app_list's rows are only lent to its callback). */
struct app_rows {
    struct stored_app *v;
    size_t n, cap;
    bool failed;
};

static void keep_app(void *ctx, const struct stored_app *a)
{
    struct app_rows *rows = ctx;
    if (rows->failed)
        return;
    if (rows->n == rows->cap) {
        size_t cap = rows->cap ? rows->cap * 2 : 64;
        struct stored_app *v = realloc(rows->v, cap * sizeof *v);
        if (v == NULL) {
            rows->failed = true;
            return;
        }
        rows->v = v;
        rows->cap = cap;
    }
    struct stored_app *copy = &rows->v[rows->n];
    *copy = *a;
    copy->config_json = strdup(a->config_json ? a->config_json : "");
    if (copy->config_json == NULL)
        rows->failed = true;
    else
        rows->n++;
}

static void app_rows_release(struct app_rows *rows)
{
    for (size_t i = 0; i < rows->n; i++) {
        crypto_wipe(rows->v[i].secret, sizeof rows->v[i].secret);
        crypto_wipe(rows->v[i].prev_secret, sizeof rows->v[i].prev_secret);
        stored_app_release(&rows->v[i]);
    }
    free(rows->v);
}

/* Writes the swaps (their new values are malloc'd, and freed here) in one transaction and
 * counts them. */
static ch_code write_swaps(struct reseal *r, struct value_swap *v, size_t n, int64_t *counter,
                           ch_code rc, struct ch_error *err)
{
    size_t replaced = 0;
    if (rc == CH_OK)
        rc = store_values_replace(r->s, v, n, &replaced, err);
    if (rc == CH_OK) {
        *counter += (int64_t)replaced;
        r->pass_changed += (int64_t)(n - replaced);
    }
    for (size_t i = 0; i < n; i++)
        free((void *)v[i].new_value);
    return rc;
}

static const char *app_column_name(enum sealed_column col)
{
    return col == SEALED_APP_SECRET        ? "voice_apps.secret"
           : col == SEALED_APP_PREV_SECRET ? "voice_apps.prev_secret"
                                           : "voice_apps.config";
}

static const char *app_column_value(const struct stored_app *a, enum sealed_column col)
{
    return col == SEALED_APP_SECRET        ? a->secret
           : col == SEALED_APP_PREV_SECRET ? a->prev_secret
                                           : a->config_json;
}

/* One column of the apps [first, last) re-sealed, in one transaction. */
static ch_code reseal_app_column(struct reseal *r, const struct app_rows *rows, size_t first,
                                 size_t last, enum sealed_column col, int64_t *counter,
                                 struct ch_error *err)
{
    struct value_swap swaps[RESEAL_APPS];
    size_t n = 0;
    ch_code rc = CH_OK;
    for (size_t k = first; rc == CH_OK && k < last; k++) {
        const struct stored_app *a = &rows->v[k];
        const char *old = app_column_value(a, col);
        char where[200], *text = NULL;
        place(where, sizeof where, app_column_name(col), a->id);
        rc = reseal_text(r, where, old, &text, err);
        if (rc == CH_OK && text == NULL)
            r->counts->unchanged += old[0] != '\0';
        else if (rc == CH_OK)
            swaps[n++] = (struct value_swap){.column = col,
                                             .app_id = a->id,
                                             .old_value = old,
                                             .old_len = strlen(old),
                                             .new_value = text,
                                             .new_len = strlen(text)};
    }
    return write_swaps(r, swaps, n, counter, rc, err);
}

static ch_code reseal_apps(struct reseal *r, struct ch_error *err)
{
    struct app_rows rows = {0};
    ch_code rc = store_app_list(r->s, keep_app, &rows, err);
    if (rc == CH_OK && rows.failed)
        rc = ch_error_set(err, CH_ENOMEM, "out of memory reading the voice apps");
    for (size_t i = 0; rc == CH_OK && i < rows.n; i += RESEAL_APPS) {
        size_t last = i + RESEAL_APPS < rows.n ? i + RESEAL_APPS : rows.n;
        rc = reseal_app_column(r, &rows, i, last, SEALED_APP_SECRET, &r->counts->secrets, err);
        if (rc == CH_OK)
            rc = reseal_app_column(r, &rows, i, last, SEALED_APP_PREV_SECRET, &r->counts->secrets,
                                   err);
        if (rc == CH_OK)
            rc = reseal_app_column(r, &rows, i, last, SEALED_APP_CONFIG, &r->counts->settings, err);
    }
    app_rows_release(&rows);
    return rc;
}

/* The records, a page (one transaction) at a time, in seq order. */
static ch_code reseal_records(struct reseal *r, struct ch_error *err)
{
    struct stored_body *page = calloc(RESEAL_RECORDS, sizeof *page);
    struct value_swap *swaps = calloc(RESEAL_RECORDS, sizeof *swaps);
    ch_code rc = page && swaps ? CH_OK : ch_error_set(err, CH_ENOMEM, "out of memory");
    int64_t after = 0;
    size_t got = RESEAL_RECORDS;
    while (rc == CH_OK && got == RESEAL_RECORDS) {
        rc = store_body_page(r->s, after, page, RESEAL_RECORDS, &got, err);
        size_t n = 0;
        for (size_t i = 0; rc == CH_OK && i < got; i++) {
            char where[100];
            unsigned char *sealed = NULL;
            size_t len = 0;
            place(where, sizeof where, "messages.body", page[i].msg_id);
            rc = reseal_value(r, where, page[i].body, page[i].body_len, &sealed, &len, err);
            if (rc == CH_OK && sealed == NULL)
                r->counts->unchanged++;
            else if (rc == CH_OK)
                swaps[n++] = (struct value_swap){.column = SEALED_MESSAGE_BODY,
                                                 .seq = page[i].seq,
                                                 .old_value = page[i].body,
                                                 .old_len = page[i].body_len,
                                                 .new_value = sealed,
                                                 .new_len = len};
        }
        rc = write_swaps(r, swaps, n, &r->counts->records, rc, err);
        if (got > 0)
            after = page[got - 1].seq;
        for (size_t i = 0; i < got; i++) {
            crypto_wipe(page[i].body, page[i].body_len);
            free(page[i].body);
        }
    }
    free(page);
    free(swaps);
    return rc;
}

/* Passes over every value until one finds nothing changed meanwhile (by a serve on
 * PostgreSQL writing at the same time): a value changed between its read and its write is
 * read again. */
static ch_code reseal_all(struct reseal *r, struct ch_error *err)
{
    for (int pass = 0; pass < 5; pass++) {
        int64_t unchanged = r->counts->unchanged;
        r->pass_changed = 0;
        ch_code rc = reseal_apps(r, err);
        if (rc == CH_OK)
            rc = reseal_records(r, err);
        if (rc != CH_OK || r->pass_changed == 0)
            return rc;
        r->counts->unchanged = unchanged; /* counted again on the next pass */
    }
    return ch_error_set(err, CH_EUNAVAILABLE,
                        "values kept changing while they were re-sealed: run this again");
}

/* The database's form becomes bound: from now on a plaintext or first-form value is refused. */
static ch_code mark_bound(struct store *s, struct ch_error *err)
{
    return store_meta_put(s, FORM_NAME, FORM_BOUND, true, err);
}

static ch_code read_form(struct store *s, bool *strict, struct ch_error *err)
{
    char form[32];
    ch_code rc = store_meta_get(s, FORM_NAME, form, sizeof form, err);
    *strict = rc == CH_OK && strcmp(form, FORM_BOUND) == 0;
    return rc == CH_ENOTFOUND ? CH_OK : rc;
}

ch_code store_sealed_seal(struct store *s, const unsigned char key[CRYPTO_DATA_KEY_LEN],
                          struct store_reseal_counts *counts, struct ch_error *err)
{
    memset(counts, 0, sizeof *counts);
    struct reseal r = {.s = s, .old_key = key, .new_key = key, .counts = counts};
    ch_code rc = check_no_rekey(s, err);
    if (rc == CH_OK)
        rc = check_key(s, key, err);
    if (rc == CH_OK)
        rc = read_form(s, &r.strict, err);
    if (rc == CH_OK)
        rc = reseal_all(&r, err);
    if (rc == CH_OK)
        rc = mark_bound(s, err);
    if (rc == CH_OK)
        rc = store_scrub(s, err);
    return rc;
}

ch_code store_sealed_rekey(struct store *s, const unsigned char old_key[CRYPTO_DATA_KEY_LEN],
                           const unsigned char new_key[CRYPTO_DATA_KEY_LEN],
                           struct store_reseal_counts *counts, struct ch_error *err)
{
    memset(counts, 0, sizeof *counts);
    struct reseal r = {
        .s = s, .old_key = old_key, .new_key = new_key, .two_keys = true, .counts = counts};
    char old_check[128], new_check[128], have[128], to[128];
    if (!key_check(old_key, old_check, sizeof old_check) ||
        !key_check(new_key, new_check, sizeof new_check))
        return ch_error_set(err, CH_ECRYPTO, "cannot compute the data keys' check values");
    if (strcmp(old_check, new_check) == 0)
        return ch_error_set(err, CH_EINVAL,
                            "the new key is the key in use: make a new one with "
                            "openssl rand -base64 32");
    ch_code rc = store_meta_get(s, CHECK_NAME, have, sizeof have, err);
    if (rc == CH_ENOTFOUND)
        return ch_error_set(err, CH_EINVAL,
                            "this database is not sealed: seal it first with 'callhook store "
                            "seal' (it then has a data key to change)");
    if (rc != CH_OK)
        return rc;
    /* The check value is the old key's, or already the new key's (a run that got to its end:
     * running it again does nothing more). */
    if (strcmp(have, old_check) != 0 && strcmp(have, new_check) != 0)
        return ch_error_set(err, CH_ESECRET,
                            "the data key does not match this database's: give the key it is "
                            "sealed with (--data-key-file or CALLHOOK_DATA_KEY)");
    rc = store_meta_get(s, REKEY_NAME, to, sizeof to, err);
    if (rc == CH_OK && to[0] != '\0' && strcmp(to, new_check) != 0)
        return ch_error_set(err, CH_ESECRET,
                            "a change to another data key was started and not finished: run "
                            "'callhook store rekey' with that key to finish it first");
    if (rc != CH_OK && rc != CH_ENOTFOUND)
        return rc;
    /* From here until the end, serve refuses to start: some values are under each key. */
    rc = store_meta_put(s, REKEY_NAME, new_check, true, err);
    if (rc == CH_OK)
        rc = read_form(s, &r.strict, err);
    if (rc == CH_OK)
        rc = reseal_all(&r, err);
    /* The check value first, then the mark taken away: a run stopped between the two is
     * finished by running it again. */
    if (rc == CH_OK)
        rc = store_meta_put(s, CHECK_NAME, new_check, true, err);
    if (rc == CH_OK)
        rc = mark_bound(s, err);
    if (rc == CH_OK)
        rc = store_meta_put(s, REKEY_NAME, "", true, err);
    if (rc == CH_OK)
        rc = store_scrub(s, err);
    return rc;
}
