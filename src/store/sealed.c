/*
 * Encryption at rest as a store decorator: it implements the store interface over another
 * store, sealing call records on their way in and Voice Apps' signing secrets and settings
 * (their headers carry receivers' tokens) on every write, opening them on the way out. The backends
 * never see a plaintext record, so neither does the database file.
 */
#include "store/store.h"

#include "lib/crypto.h"
#include "util/base64.h"

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
    .app_recover = app_recover,
    .purge = purge,
    .stats = stats,
    .apps_version = apps_version,
    .rate_take = rate_take,
    .meta_get = meta_get,
    .meta_put = meta_put,
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
    ch_code rc = check_key(in, key, err);
    if (rc == CH_OK)
        rc = decide_form(in, &strict, err);
    if (rc != CH_OK)
        return rc;
    struct sealed_store *st = calloc(1, sizeof *st);
    if (st == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    st->base.ops = &sealed_ops;
    st->inner = in;
    st->strict = strict;
    memcpy(st->key, key, sizeof st->key);
    *out = &st->base;
    return CH_OK;
}
