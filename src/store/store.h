/*
 * The store: the one interface between callhook serve and its database. A backend (SQLite, or
 * PostgreSQL for several nodes; the encrypting decorator wraps either) implements struct
 * store_ops; callers use the store_*() door in store.c, which holds the contract written here.
 * Nothing above this header sees SQL, locking or a driver's types. Every function is safe to
 * call from any thread.
 */
#ifndef CALLHOOK_STORE_H
#define CALLHOOK_STORE_H

#include <callhook/error.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum msg_status {
    MSG_PENDING = 0, /* due at next_attempt_at (first try, retry, or waiting on its begin-call) */
    MSG_DELIVERING = 1, /* claimed by an engine until lease_until */
    MSG_DELIVERED = 2,
    MSG_DEAD = 3,    /* the retry schedule is spent */
    MSG_SKIPPED = 4, /* the app has no URL for this event: recorded, nothing sent */
};

const char *msg_status_name(enum msg_status s, int attempts);
bool msg_status_parse(const char *name, enum msg_status *out);

enum key_role { ROLE_NONE = 0, ROLE_INGEST = 1, ROLE_READ = 2, ROLE_ADMIN = 3 };
const char *key_role_name(enum key_role r);
bool key_role_parse(const char *name, enum key_role *out);

/* An attempt's webhook-signature as the store keeps it: each "v1,<base64>" entry cut to its
 * first STORE_SIGNATURE_SHORT_CHARS characters of base64, entries space-separated (two while a
 * rotated secret's grace period runs). Enough to tell signatures apart, nothing to forge. */
#define STORE_SIGNATURE_SHORT_CHARS 6
#define STORE_SIGNATURE_SHORT_MAX   64

/* Cuts sig (a webhook-signature header value) into out (cap bytes, always terminated). */
void store_signature_short(const char *sig, char *out, size_t cap);

/* A Voice App as stored: its settings as validated JSON text, and what the store keeps beside. */
struct stored_app {
    char id[129];
    char *config_json; /* owned: free with stored_app_release() (sealed as "enc:..." at rest
                          when a data key is set: its headers carry receivers' tokens) */
    char secret[256];  /* whsec_... (sealed as "enc:..." at rest when a data key is set) */
    char prev_secret[256];
    int64_t prev_expires_at; /* 0 when there is no previous secret */
    bool enabled;
    char disabled_reason[200];
    int64_t created_at;
    int64_t updated_at;
};
void stored_app_release(struct stored_app *a);

/* What ingest asks the store to do with an event. */
enum ingest_want {
    INGEST_DELIVER = 0,    /* stored as claimed by this node: the engine delivers it now */
    INGEST_WAIT_BEGIN = 1, /* per-call ordering: pending while its begin-call is undelivered */
    INGEST_SKIP = 2,       /* the app has no URL for this event: recorded, nothing sent */
};

/* One event to ingest, and what became of it. */
struct ingest_item {
    /* in (borrowed) */
    const char *msg_id;
    const char *app_id;
    const char *event; /* "begin-call" or "end-call" */
    const char *dedupe_key;
    const char *correlation_id; /* the record's CorrelationId; NULL when it has none */
    bool has_call_type;
    long long call_type;
    const void *body;
    size_t body_len;
    int64_t now;
    int64_t lease_until; /* a fresh event is claimed by the node that ingests it */
    enum ingest_want want;
    /* out */
    ch_code result;         /* CH_OK, or the error for this item alone */
    bool duplicate;         /* already stored: nothing was written */
    bool unknown_app;       /* no such Voice App: nothing was written */
    int64_t seq;            /* the message's row */
    enum msg_status status; /* what it was stored as: DELIVERING (hand it to the engine now),
                               PENDING (waits on its begin-call) or SKIPPED */
};

/* A message to deliver, as the engine needs it. */
struct due_message {
    int64_t seq;
    char msg_id[40];
    char app_id[129];
    char event[16];
    char dedupe_key[256];
    int attempts;
    int64_t created_at;
    void *body; /* owned: malloc'd */
    size_t body_len;
};

/* The result of one attempt, and the message's next state. */
struct attempt_result {
    int64_t seq;
    int64_t at_ms;
    int64_t duration_ms;
    int http_status;         /* 0 when there was no response */
    const char *error_class; /* NULL on success */
    const char *error;       /* NULL on success */
    const char *response;    /* first bytes of the response body, may be NULL */
    size_t response_len;
    enum msg_status new_status; /* DELIVERED, PENDING (retry at next_attempt_at) or DEAD */
    int64_t next_attempt_at;
    bool disable_app;      /* a 410: disable the app with the reason in error */
    const char *app_id;    /* the message's Voice App: the console's rollup counts the attempt
                              under it (a result without one is not counted) */
    int64_t signed_at;     /* the attempt's webhook-timestamp; 0 when it was not signed */
    const char *signature; /* its webhook-signature cut short (store_signature_short); NULL */
};

/* A message as the API shows it. */
struct message_view {
    int64_t seq;
    char msg_id[40];
    char app_id[129];
    char event[16];
    char dedupe_key[256];
    char correlation_id[256]; /* "" when the record had none (or was stored before it was kept) */
    bool has_call_type;
    long long call_type;
    enum msg_status status;
    int attempts;
    int64_t created_at, next_attempt_at, delivered_at;
    char last_error[300];
    size_t body_len;
    bool app_deleted; /* its Voice App was deleted: it is never delivered or replayed again */
};

struct attempt_view {
    int64_t at_ms, duration_ms;
    int http_status;
    char error_class[16];
    char error[300];
    char response[513];
    int64_t signed_at; /* the webhook-timestamp it sent; 0 for attempts stored before it was */
    char signature[STORE_SIGNATURE_SHORT_MAX]; /* its webhook-signature cut short; "" likewise */
};

struct message_filter {
    const char *app_id, *event, *dedupe_key; /* NULL: any */
    const char *correlation_id;              /* NULL: any */
    int status;                              /* -1: any */
    int attempted;                           /* -1: any; 0: never attempted; 1: attempted */
    int64_t since;                           /* created_at >= since */
    int64_t until;                           /* created_at < until; 0: no bound */
    int64_t before_seq;                      /* cursor: seq < before_seq; 0: from the newest */
    int limit;
};

/* Counts by status as the API names them: pending (never tried) and failed (tried, to be
 * retried) are one stored status, told apart by attempts. */
struct store_stats {
    int64_t pending, failed, delivering, delivered, dead, skipped;
    int64_t parked;            /* of pending, failed and delivering: those of disabled apps */
    int64_t oldest_pending_at; /* created_at of the oldest message still to be delivered whose
                                  app is enabled (not parked); 0 when there is none */
};

/* One Voice App as callhook status shows it (store_ops.app_stats): its state, its messages'
 * counts as store_stats counts them (oldest_pending_at of its unparked waiting messages), and
 * its last error. Messages of a deleted app of the same id are not counted. */
struct app_stats {
    char id[129];
    bool enabled;
    char disabled_reason[200];
    struct store_stats counts;
    char last_error[300];    /* of the app's most recently stored message that has one; "" */
    int64_t last_error_at;   /* that message's created_at (messages keep no time of their
                                last attempt); 0 when there is none */
    char last_error_msg[40]; /* that message's id: its attempts tell when it failed */
};

/* ---- the operators' console's figures ----
 * Every writer adds to a rollup by Voice App and minute (the app_minutes table), in the same
 * transaction as what it counts, once per batch per app and minute rather than per event: the
 * events ingest stored, the attempts that delivered and that failed (and of those, the ones
 * that made their message dead), a histogram of the delivered attempts' durations, and the
 * last failed attempt's error. Writers prune the rows older than STORE_ROLLUP_KEEP_S once a
 * minute. On PostgreSQL each connection writes rows of its own (keyed by its backend pid) that
 * reads sum, so nodes never wait on one another's row. */
#define STORE_ROLLUP_KEEP_S   7200
#define STORE_LATENCY_BUCKETS 16

/* The histogram bucket of a duration: bucket 0 holds 0-1 ms, bucket b (1 to 14) holds
 * (2^(b-1), 2^b] ms, bucket 15 everything over 16,384 ms. */
int store_latency_bucket(int64_t ms);
/* The bucket's upper edge in ms (1, 2, 4, ... 16384); bucket 15's lower edge (16384) for it. */
int64_t store_latency_bucket_edge_ms(int bucket);

/* One minute of one app's rollup (summed over the writers). */
struct store_minute {
    int64_t at;                /* the minute's start, unix seconds (a multiple of 60) */
    int64_t ingested;          /* events stored (duplicates and unknown apps are not) */
    int64_t delivered, failed; /* attempts that ended so, by the time they ended */
    int64_t dead;              /* of the failed ones, those that made their message dead */
    int64_t latency[STORE_LATENCY_BUCKETS]; /* the delivered attempts' durations */
};

/* The rollup of a batch, gathered in C by the backends before they write it (one entry per app
 * and minute), so both count alike: store_rollup_add_*() add to it, n = 0 empties it. */
struct store_rollup_entry {
    const char *app_id; /* borrowed from what was added */
    struct store_minute m;
    const char *last_error; /* borrowed; "" when none */
    int64_t last_error_at_ms, last_error_seq;
};
struct store_rollup {
    struct store_rollup_entry *e; /* owned: free with store_rollup_release() */
    size_t n, cap;
    size_t hit; /* the entry found last: a batch's items mostly come app after app */
};
/* Each result's attempt under its app_id (none without one) and the minute it ended. False
 * when out of memory: what was added stays (figures, not data: the write goes on). */
bool store_rollup_add_attempts(struct store_rollup *r, const struct attempt_result *res, size_t n);
/* One event stored for app_id at at_s. False when out of memory. */
bool store_rollup_add_ingested(struct store_rollup *r, const char *app_id, int64_t at_s);
void store_rollup_release(struct store_rollup *r);

/* One Voice App as the console shows it beside its minutes (store_ops.app_console). */
struct app_console {
    char id[129];
    bool enabled;
    char disabled_reason[200];
    int64_t waiting;           /* messages pending, failed or being delivered, parked included */
    int64_t oldest_waiting_at; /* created_at of the first-stored of them (lowest seq); 0: none */
    char last_error[300];      /* the last failed attempt's error within the rollup's rows
                                  (STORE_ROLLUP_KEEP_S); "" when none */
    int64_t last_error_at_ms;  /* when that attempt ended; 0 when none */
    char last_error_msg[40];   /* its message's id; "" when none */
};

/* A call record as it is at rest, for encryption's maintenance (store_ops.body_page). */
struct stored_body {
    int64_t seq;
    char msg_id[40];
    void *body; /* owned: malloc'd */
    size_t body_len;
};

/* The columns whose values are sealed when a data key is set. */
enum sealed_column {
    SEALED_APP_SECRET,      /* voice_apps.secret */
    SEALED_APP_PREV_SECRET, /* voice_apps.prev_secret */
    SEALED_APP_CONFIG,      /* voice_apps.config */
    SEALED_MESSAGE_BODY,    /* a message's record */
};

/* One stored value to replace (store_ops.values_replace): in column, at the app app_id or the
 * message seq, only where the row still holds old_value. Values are borrowed; those of the
 * app columns are text (no NUL). */
struct value_swap {
    enum sealed_column column;
    const char *app_id;
    int64_t seq;
    const void *old_value, *new_value;
    size_t old_len, new_len;
};

struct store;

/*
 * The store contract, held by every backend and by the encrypting wrapper, and checked once in
 * the front door below (store_<op>(), which is what callers use):
 *
 * - Every operation returns CH_OK or an error code; err (optional) gets the detail on error and
 *   is untouched on success.
 * - On error, nothing is returned and nothing is left allocated: counts (*n, *released,
 *   *requeued, *payloads, *attempts, *granted) are 0, a claim's out[] holds no body to free,
 *   app_get's out owns no config_json, stats' and message_get's out are zeroed. Other
 *   out-parameters (a role, a version, created) are left as they were. A callback of a list
 *   operation may already have been called for some rows before the error.
 * - A claim that fails after its UPDATE (a record that cannot be decrypted) returns nothing
 *   but leaves those messages leased: their lease brings them back. An ingest that fails
 *   stored nothing of its batch, and its per-item results mean nothing.
 * - Ordering: claim_due gives messages in seq order (the order they were stored); key_list
 *   newest first; app_list by id; message_list newest first (seq descending), message_attempts
 *   oldest first.
 */
/* The window of store_ops.rate_take: a second, and the STORE_RATE_SPEND_MS within which the
 * engine starts what it was granted or forfeits it (counted from when it asked). A grant made
 * at g is then spent in [g, g + 50 ms], so the starts in any one second come from grants of
 * one window: never more than the limit start in any second. */
#define STORE_RATE_SPEND_MS  50
#define STORE_RATE_WINDOW_MS (1000 + STORE_RATE_SPEND_MS)

struct store_ops {
    const char *name;
    void (*close)(struct store *s);

    /* The delivering node starts: takes what only it may take (SQLite: the database file, for
     * this process alone) and makes due again what an earlier run of it left claimed, so a
     * restart after a crash does not wait for leases to run out. CH_EUNAVAILABLE when another
     * process holds the database. */
    ch_code (*startup)(struct store *s, int64_t now, int64_t *released, struct ch_error *err);

    /* Keys: the hash is SHA-256 of the key text. */
    ch_code (*key_count)(struct store *s, int64_t *n, struct ch_error *err);
    ch_code (*key_add)(struct store *s, const char *key_id, const unsigned char hash[32],
                       enum key_role role, int64_t now, struct ch_error *err);
    ch_code (*key_lookup)(struct store *s, const unsigned char hash[32], enum key_role *role,
                          struct ch_error *err);
    /* Calls cb for each key, newest first. */
    ch_code (*key_list)(struct store *s,
                        void (*cb)(void *ctx, const char *key_id, enum key_role role,
                                   int64_t created_at, bool revoked),
                        void *ctx, struct ch_error *err);
    ch_code (*key_revoke)(struct store *s, const char *key_id, struct ch_error *err);

    /* Voice Apps. app_put returns created = true when the id was new. */
    ch_code (*app_put)(struct store *s, const struct stored_app *a, bool *created,
                       struct ch_error *err);
    ch_code (*app_get)(struct store *s, const char *id, struct stored_app *out,
                       struct ch_error *err); /* CH_ENOTFOUND when absent */
    ch_code (*app_list)(struct store *s, void (*cb)(void *ctx, const struct stored_app *a),
                        void *ctx, struct ch_error *err);
    /* Deleting an app ends its messages in the same transaction: pending, failed and claimed
     * ones become dead with last_error "app deleted", and all of them (with their records and
     * attempts, kept for the log) are marked app_deleted, so an app created later with the
     * same id starts empty and none of them is delivered, replayed or recovered again. */
    ch_code (*app_delete)(struct store *s, const char *id, struct ch_error *err);

    /* Ingest: all items in one transaction and one fsync; per-item results in the items. */
    ch_code (*ingest)(struct store *s, struct ingest_item *items, size_t n, struct ch_error *err);

    /* Claims up to max due messages (pending and due, app enabled, not waiting on a begin-call)
     * for lease_until. Fills out[0..*n); the caller frees each body.
     *
     * Leases and clocks: a pending message's due time (next_attempt_at) is on the callers'
     * clocks, as written. A lease is a length, lease_until - now: on SQLite (one node, one
     * clock) it runs on the caller's clock; on PostgreSQL it is taken, renewed and checked on
     * the database's clock, so a node whose wall clock steps neither loses its leases nor sees
     * another node's as run out (ingest's lease_until - now likewise). */
    ch_code (*claim_due)(struct store *s, int64_t now, int64_t lease_until, struct due_message *out,
                         size_t max, size_t *n, struct ch_error *err);

    /* Gives claimed messages back without an attempt: due again at next_attempt_at. */
    ch_code (*release)(struct store *s, const int64_t *seqs, size_t n, int64_t next_attempt_at,
                       struct ch_error *err);

    /* Extends the leases of claimed messages this node still holds (in memory or in flight),
     * so no other node takes them over while this one lives. */
    ch_code (*renew)(struct store *s, const int64_t *seqs, size_t n, int64_t now,
                     int64_t lease_until, struct ch_error *err);

    /* Writes attempt results in one transaction. */
    ch_code (*record_attempts)(struct store *s, const struct attempt_result *r, size_t n,
                               struct ch_error *err);

    ch_code (*message_get)(struct store *s, const char *msg_id, struct message_view *out,
                           struct ch_error *err); /* CH_ENOTFOUND when absent */
    ch_code (*message_attempts)(struct store *s, int64_t seq,
                                void (*cb)(void *ctx, const struct attempt_view *a), void *ctx,
                                struct ch_error *err);
    ch_code (*message_list)(struct store *s, const struct message_filter *f,
                            void (*cb)(void *ctx, const struct message_view *m), void *ctx,
                            struct ch_error *err);
    /* Makes one message due now (replay). CH_ENOTFOUND when there is no such message, or it
     * is being delivered, or its app was deleted. */
    ch_code (*message_requeue)(struct store *s, const char *msg_id, int64_t now,
                               struct ch_error *err);
    /* A replay under a new webhook-id: a new message new_msg_id of msg_id's app, event,
     * dedupe key and call type, with its record, created and due at now (parked when its app
     * is disabled), no attempts. msg_id is left as it is; an upstream repeat of the event is
     * still a duplicate of msg_id (message ids derive from the dedupe key). body (body_len
     * bytes) is the record as the copy stores it; NULL: msg_id's record as it is stored.
     * CH_ENOTFOUND when there is no such message, or it was skipped, or retention emptied its
     * record, or its app was deleted. */
    ch_code (*message_copy)(struct store *s, const char *msg_id, const char *new_msg_id,
                            const void *body, size_t body_len, int64_t now, struct ch_error *err);
    /* Makes every dead or failed message of an app created since `since` due now (not those
     * of an earlier app of the same id, which was deleted). */
    ch_code (*app_recover)(struct store *s, const char *app_id, int64_t since, int64_t now,
                           int64_t *requeued, struct ch_error *err);

    /* Retention: empties the stored record of messages delivered or skipped before
     * payload_before (unix seconds) and deletes attempts older than attempts_before_ms. Dead
     * and undelivered messages keep their record. */
    ch_code (*purge)(struct store *s, int64_t payload_before, int64_t attempts_before_ms,
                     int64_t *payloads, int64_t *attempts, struct ch_error *err);

    ch_code (*stats)(struct store *s, struct store_stats *out, struct ch_error *err);
    /* Calls cb once per Voice App (apps without messages too, with zero counts), by id. It
     * reads the whole messages table (one GROUP BY): for an operator's command, not for
     * something polled every second. */
    ch_code (*app_stats)(struct store *s, void (*cb)(void *ctx, const struct app_stats *a),
                         void *ctx, struct ch_error *err);

    /* The console's reads, bounded by what waits and by the rollup, never by every message.
     * app_console calls cb once per Voice App (app_id: that one only, NULL: all), by id. It
     * counts the waiting messages through the indexes that hold only them (SQLite: the due
     * index and the parked index; PostgreSQL: message_queue), takes the last error from the
     * rollup's rows, and reads two messages rows per app (the oldest waiting, the last
     * error's). app_minutes calls cb once per app and minute of the rollup from from_minute
     * on (unix seconds), summed over the writers, in no set order, for app_id (NULL: every
     * app, deleted ones included). */
    ch_code (*app_console)(struct store *s, const char *app_id,
                           void (*cb)(void *ctx, const struct app_console *a), void *ctx,
                           struct ch_error *err);
    ch_code (*app_minutes)(struct store *s, const char *app_id, int64_t from_minute,
                           void (*cb)(void *ctx, const char *app_id, const struct store_minute *m),
                           void *ctx, struct ch_error *err);

    /* A message's record (the sealed wrapper opens it): out's seq, msg_id and body (the
     * caller frees it). CH_ENOTFOUND when there is no such message; body_len 0 when retention
     * emptied the record. */
    ch_code (*message_body)(struct store *s, const char *msg_id, struct stored_body *out,
                            struct ch_error *err);

    /* A number that changes whenever any Voice App row is inserted, updated or deleted, by any
     * node and any path (the API, a 410 written by record_attempts): the database's triggers
     * keep it, so nodes watch it with one cheap read to learn that their settings are stale.
     * Only its changes mean something; it never goes back. */
    ch_code (*apps_version)(struct store *s, int64_t *version, struct ch_error *err);

    /* The cluster-wide rate limit of an app: grants up to want delivery starts, so that all
     * grants for app_id in any window of STORE_RATE_WINDOW_MS, by every node together, add up
     * to at most limit_per_s (up to that much may be granted at once). *granted is 0..want.
     * The window runs on the database's clock on PostgreSQL and on this process's wall clock
     * on SQLite. CH_ENOTFOUND (and *granted 0) when there is no such app. */
    ch_code (*rate_take)(struct store *s, const char *app_id, int64_t limit_per_s, int64_t want,
                         int64_t *granted, struct ch_error *err);

    /* The store's own settings, by name (a data key's check value). meta_get fills value (cap
     * bytes, terminated) or answers CH_ENOTFOUND; meta_put writes value, over an existing one
     * only when replace (else an existing value stays: the first writer wins). */
    ch_code (*meta_get)(struct store *s, const char *name, char *value, size_t cap,
                        struct ch_error *err);
    ch_code (*meta_put)(struct store *s, const char *name, const char *value, bool replace,
                        struct ch_error *err);

    /* Encryption at rest's maintenance (callhook store seal and rekey), on values as stored.
     * body_page fills out[0..*n) with up to max records of messages with seq > after_seq, in
     * seq order, leaving out records emptied by retention; the caller frees each body.
     * values_replace writes the n swaps in one transaction, each only where its row still
     * holds old_value (a value changed or removed meanwhile stays as it is); *replaced is how
     * many were written. */
    ch_code (*body_page)(struct store *s, int64_t after_seq, struct stored_body *out, size_t max,
                         size_t *n, struct ch_error *err);
    ch_code (*values_replace)(struct store *s, const struct value_swap *v, size_t n,
                              size_t *replaced, struct ch_error *err);
    /* After values_replace: leaves no copy of the values it replaced in the database's files
     * where the backend can. SQLite (secure_delete is on) empties its WAL; PostgreSQL keeps
     * old row versions until its own VACUUM, which is the operator's (docs/SECURITY.md). */
    ch_code (*scrub)(struct store *s, struct ch_error *err);
};

/* What app_delete does to the deleted app's messages ($1 / ?1: the app id), the same SQL on
 * every backend: ends what was still to be delivered, marks them all. */
/* SET clause of a message made to wait again (a replay, a recovery): parked when its app is
 * disabled (both backends' voice_apps_parked trigger keeps the flag with the app from then on;
 * claims read only unparked messages). */
#define PARKED_IF_DISABLED_EXPR \
    "COALESCE((SELECT 1 - a.enabled FROM voice_apps a WHERE a.id = messages.app_id), 0)"
#define PARKED_IF_DISABLED_SQL "parked = " PARKED_IF_DISABLED_EXPR

#define DELETED_APP_MESSAGES_SQL                                                      \
    "UPDATE messages SET app_deleted = 1,"                                            \
    " status = CASE WHEN status IN (0, 1) THEN 3 ELSE status END,"                    \
    " last_error = CASE WHEN status IN (0, 1) THEN 'app deleted' ELSE last_error END" \
    " WHERE app_id = $1 AND app_deleted = 0"

/* app_stats, the same SQL on every backend: one row per Voice App, in id order: id, enabled,
 * disabled_reason, pending, failed, delivering, delivered, dead, skipped, parked, the oldest
 * unparked waiting message's created_at (NULL when none), then the last error, its message's
 * created_at and id (NULLs when none). Messages of a deleted app of the same id are left out.
 * PARKED: the expression of a message's parked flag; QUEUE_JOIN: what joins the table that
 * holds it when messages does not (PostgreSQL keeps it in message_queue). */
#define APP_STATS_SQL(PARKED, QUEUE_JOIN)                                                          \
    "SELECT c.id, c.enabled, c.disabled_reason, c.pending, c.failed, c.delivering,"                \
    " c.delivered, c.dead, c.skipped, c.parked, c.oldest, e.last_error, e.created_at, e.id"        \
    " FROM (SELECT a.id, a.enabled, a.disabled_reason,"                                            \
    "  count(CASE WHEN m.status = 0 AND m.attempts = 0 THEN 1 END) AS pending,"                    \
    "  count(CASE WHEN m.status = 0 AND m.attempts > 0 THEN 1 END) AS failed,"                     \
    "  count(CASE WHEN m.status = 1 THEN 1 END) AS delivering,"                                    \
    "  count(CASE WHEN m.status = 2 THEN 1 END) AS delivered,"                                     \
    "  count(CASE WHEN m.status = 3 THEN 1 END) AS dead,"                                          \
    "  count(CASE WHEN m.status = 4 THEN 1 END) AS skipped,"                                       \
    "  count(CASE WHEN m.status IN (0, 1) AND " PARKED " = 1 THEN 1 END) AS parked,"               \
    "  min(CASE WHEN m.status IN (0, 1) AND " PARKED " = 0 THEN m.created_at END) AS oldest,"      \
    "  max(CASE WHEN m.last_error <> '' THEN m.seq END) AS error_seq"                              \
    "  FROM voice_apps a LEFT JOIN messages m ON m.app_id = a.id AND m.app_deleted = 0" QUEUE_JOIN \
    "  GROUP BY a.id, a.enabled, a.disabled_reason) c"                                             \
    " LEFT JOIN messages e ON e.seq = c.error_seq"                                                 \
    " ORDER BY c.id"

/* The rollup's histogram columns h0..h15, spelled out by the backends' SQL: X(i) for each. */
#define STORE_LATENCY_COLUMNS(X) \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define STORE_LATENCY_COLUMN_(i) ", h" #i
#define STORE_LATENCY_LIST       STORE_LATENCY_COLUMNS(STORE_LATENCY_COLUMN_) /* ", h0, h1..." */

/* Adds a count of messages in status (attempted: tried at least once; parked: its app is
 * disabled) to the matching fields of st (backends' GROUP BY). */
void store_stats_add(struct store_stats *st, int status, bool attempted, bool parked, int64_t n);

/* A store handle: the backend's ops, what it is, and its private state. */
struct store {
    const struct store_ops *ops;
    /* Set at open by the backend; the sealed wrapper copies its inner store's and sets
     * sealed. Read by callhook status. */
    const char *kind;   /* "sqlite" or "postgresql" */
    int schema_version; /* the database's schema version (migrations brought it there) */
    bool sealed;        /* encrypted at rest (the sealed wrapper) */
};

/* ---- the store's front door: callers use these, never ->ops-> ----
 * Each is the store_ops operation of the same name (see there), with the contract above made
 * good here whatever the backend did. store_close(NULL) is a no-op. */

void store_close(struct store *s);
ch_code store_startup(struct store *s, int64_t now, int64_t *released, struct ch_error *err);
ch_code store_key_count(struct store *s, int64_t *n, struct ch_error *err);
ch_code store_key_add(struct store *s, const char *key_id, const unsigned char hash[32],
                      enum key_role role, int64_t now, struct ch_error *err);
ch_code store_key_lookup(struct store *s, const unsigned char hash[32], enum key_role *role,
                         struct ch_error *err);
ch_code store_key_list(struct store *s,
                       void (*cb)(void *ctx, const char *key_id, enum key_role role,
                                  int64_t created_at, bool revoked),
                       void *ctx, struct ch_error *err);
ch_code store_key_revoke(struct store *s, const char *key_id, struct ch_error *err);
ch_code store_app_put(struct store *s, const struct stored_app *a, bool *created,
                      struct ch_error *err);
/** On CH_OK the caller releases out with stored_app_release(); on error out owns nothing. */
ch_code store_app_get(struct store *s, const char *id, struct stored_app *out,
                      struct ch_error *err);
ch_code store_app_list(struct store *s, void (*cb)(void *ctx, const struct stored_app *a),
                       void *ctx, struct ch_error *err);
ch_code store_app_delete(struct store *s, const char *id, struct ch_error *err);
ch_code store_ingest(struct store *s, struct ingest_item *items, size_t n, struct ch_error *err);
/** Fills out[0..*n) in seq order; the caller frees each body. On error *n is 0 and nothing is
 * left to free. */
ch_code store_claim_due(struct store *s, int64_t now, int64_t lease_until, struct due_message *out,
                        size_t max, size_t *n, struct ch_error *err);
ch_code store_release(struct store *s, const int64_t *seqs, size_t n, int64_t next_attempt_at,
                      struct ch_error *err);
/** Extends the leases to lease_until - now from now (see claim_due on clocks). */
ch_code store_renew(struct store *s, const int64_t *seqs, size_t n, int64_t now,
                    int64_t lease_until, struct ch_error *err);
ch_code store_record_attempts(struct store *s, const struct attempt_result *r, size_t n,
                              struct ch_error *err);
ch_code store_message_get(struct store *s, const char *msg_id, struct message_view *out,
                          struct ch_error *err);
ch_code store_message_attempts(struct store *s, int64_t seq,
                               void (*cb)(void *ctx, const struct attempt_view *a), void *ctx,
                               struct ch_error *err);
ch_code store_message_list(struct store *s, const struct message_filter *f,
                           void (*cb)(void *ctx, const struct message_view *m), void *ctx,
                           struct ch_error *err);
ch_code store_message_requeue(struct store *s, const char *msg_id, int64_t now,
                              struct ch_error *err);
/** See store_ops.message_copy; new_msg_id must differ from msg_id (CH_EINVAL). */
ch_code store_message_copy(struct store *s, const char *msg_id, const char *new_msg_id,
                           const void *body, size_t body_len, int64_t now, struct ch_error *err);
ch_code store_app_recover(struct store *s, const char *app_id, int64_t since, int64_t now,
                          int64_t *requeued, struct ch_error *err);
ch_code store_purge(struct store *s, int64_t payload_before, int64_t attempts_before_ms,
                    int64_t *payloads, int64_t *attempts, struct ch_error *err);
ch_code store_stats(struct store *s, struct store_stats *out, struct ch_error *err);
/** Each Voice App's state, counts and last error, by id (see store_ops.app_stats). */
ch_code store_app_stats(struct store *s, void (*cb)(void *ctx, const struct app_stats *a),
                        void *ctx, struct ch_error *err);

/** The console's reads (see store_ops.app_console and app_minutes). */
ch_code store_app_console(struct store *s, const char *app_id,
                          void (*cb)(void *ctx, const struct app_console *a), void *ctx,
                          struct ch_error *err);
ch_code store_app_minutes(struct store *s, const char *app_id, int64_t from_minute,
                          void (*cb)(void *ctx, const char *app_id, const struct store_minute *m),
                          void *ctx, struct ch_error *err);
/** A message's record (see store_ops.message_body): on CH_OK the caller frees out->body; on
 * error out holds nothing. */
ch_code store_message_body(struct store *s, const char *msg_id, struct stored_body *out,
                           struct ch_error *err);

/** The Voice Apps' change counter (see store_ops.apps_version). *version is untouched on
 * error. */
ch_code store_apps_version(struct store *s, int64_t *version, struct ch_error *err);

/** Takes up to want delivery starts of app_id's cluster-wide budget of limit_per_s per second
 * (see store_ops.rate_take). want <= 0 grants 0 without asking the database; limit_per_s <= 0
 * is CH_EINVAL. *granted is 0 on every error. */
ch_code store_rate_take(struct store *s, const char *app_id, int64_t limit_per_s, int64_t want,
                        int64_t *granted, struct ch_error *err);

/** A store setting (see store_ops.meta_get); value is "" on every error. */
ch_code store_meta_get(struct store *s, const char *name, char *value, size_t cap,
                       struct ch_error *err);
ch_code store_meta_put(struct store *s, const char *name, const char *value, bool replace,
                       struct ch_error *err);

/** Records as stored, in seq order (see store_ops.body_page): the caller frees each body. On
 * error *n is 0 and nothing is left to free. */
ch_code store_body_page(struct store *s, int64_t after_seq, struct stored_body *out, size_t max,
                        size_t *n, struct ch_error *err);
/** Replaces stored values where they are unchanged (see store_ops.values_replace); *replaced
 * is 0 on error. */
ch_code store_values_replace(struct store *s, const struct value_swap *v, size_t n,
                             size_t *replaced, struct ch_error *err);
ch_code store_scrub(struct store *s, struct ch_error *err);

/* Opens the store a URI names: "sqlite:PATH" (the file and its folder are created), or
 * "postgres://..." / "postgresql://..." / "postgres:CONNINFO" (the schema is created). */
ch_code store_open(const char *uri, struct store **out, struct ch_error *err);

/* store_open for commands that only read or maintain a database: a SQLite file that is not
 * there is CH_ENOTFOUND saying where it looked, never created (a mistyped path would make an
 * empty database and answer as if it were the real one). */
ch_code store_open_existing(const char *uri, struct store **out, struct ch_error *err);

/* uri as it may be shown in a log: a PostgreSQL password (in "user:password@", a
 * "password=" key or a "?password=" parameter) is replaced with "***". Always terminates out. */
void store_uri_for_log(const char *uri, char *out, size_t cap);

/* The SQLite backend. */
ch_code store_sqlite_open(const char *path, struct store **out, struct ch_error *err);

/* The PostgreSQL backend, on any libpq connection string or URI. */
ch_code store_postgres_open(const char *conninfo, struct store **out, struct ch_error *err);

/* Wraps a store so that call records and signing secrets are encrypted at rest with
 * AES-256-GCM under key (32 bytes). On CH_OK it takes ownership of inner (closing the wrapper
 * closes it); on error inner is still the caller's.
 *
 * The database records that it is sealed, with a check value of its key: the first wrap of a
 * database without one writes it; a wrap with another key is refused (CH_ESECRET, "the data
 * key does not match this database's"), and so is a database whose change of key
 * (store_sealed_rekey) was not finished. Records and secrets written before encryption was
 * turned on are still read until 'callhook store seal' has run (store_sealed_reads_old_forms);
 * a database sealed from its start, or sealed by that command, refuses them. */
ch_code store_sealed_wrap(struct store *inner, const unsigned char key[32], struct store **out,
                          struct ch_error *err);

/* The wrapper s (from store_sealed_wrap) still reads plaintext and first-form values: its
 * database held data before it was sealed, and 'callhook store seal' has not run on it. */
bool store_sealed_reads_old_forms(struct store *s);

/* The data key from the file (when file is non-empty) or else from the environment variable
 * env_name (when not NULL): base64 of 32 bytes. *have is false when neither is given. The file
 * must be the owner's alone (CH_EINVAL otherwise). */
ch_code store_data_key_load(const char *file, const char *env_name, unsigned char key[32],
                            bool *have, struct ch_error *err);

/* What store_sealed_seal and store_sealed_rekey did. */
struct store_reseal_counts {
    int64_t secrets;   /* signing secrets and previous secrets re-written */
    int64_t settings;  /* Voice App settings re-written */
    int64_t records;   /* call records re-written */
    int64_t unchanged; /* values already sealed bound under the key (an earlier run) */
};

/* callhook store seal, on a raw store (not a wrapper; it stays the caller's): re-writes every
 * signing secret, previous secret, Voice App setting and call record that is in plaintext or
 * in the first sealed form in the bound form under key, a bounded transaction at a time, then
 * records that the database holds only bound values (serve refuses anything else from then
 * on). A value changed meanwhile (by a serve on PostgreSQL) is read again. Running it again
 * finds nothing to do. CH_ESECRET when the database is sealed with another key; CH_ESTORE
 * when a value does not open, or is not bound in a database already sealed so. */
ch_code store_sealed_seal(struct store *s, const unsigned char key[32],
                          struct store_reseal_counts *counts, struct ch_error *err);

/* callhook store rekey, on a raw store: re-seals every value under new_key (bound form), then
 * makes new_key's check value the database's. Until it ends, the database is marked as being
 * re-keyed (store_sealed_wrap refuses it) and old_key still opens what is not re-sealed yet, so
 * a run that was stopped is finished by running it again with the same keys. */
ch_code store_sealed_rekey(struct store *s, const unsigned char old_key[32],
                           const unsigned char new_key[32], struct store_reseal_counts *counts,
                           struct ch_error *err);

/* *sealed is whether the database was sealed with a data key (it holds a check value): such
 * a database is opened through store_sealed_wrap() only. */
ch_code store_is_sealed(struct store *s, bool *sealed, struct ch_error *err);

#endif
