/*
 * The SQLite store: one database file in WAL mode. One connection writes (ingest batches,
 * claims, attempt results), one reads (the API's GETs); each has its own lock, and WAL lets the
 * reader run beside the writer. An ingest commit is fsynced (synchronous=FULL) before it
 * returns; claims, leases and attempt results are not (NORMAL): losing them to a power cut only
 * makes messages due again (a repeated delivery, which receivers dedupe), and the next ingest
 * commit syncs them anyway. The statements of the hot paths are prepared once and kept.
 */
#include "store/store.h"

#include <sqlite3.h>

#include "util/fs.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/sqlite_db.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The rollup table's histogram columns, as created, bound (one parameter each) and added to on
 * conflict. */
#define ROLLUP_COLUMN_DEF(i)  ", h" #i " INTEGER NOT NULL DEFAULT 0"
#define ROLLUP_PARAM(i)       ", ?"
#define ROLLUP_ADD(i)         ", h" #i " = h" #i " + excluded.h" #i
#define ROLLUP_HISTOGRAM_DEF  STORE_LATENCY_COLUMNS(ROLLUP_COLUMN_DEF)
#define ROLLUP_HISTOGRAM_BIND STORE_LATENCY_COLUMNS(ROLLUP_PARAM)
#define ROLLUP_HISTOGRAM_ADD  STORE_LATENCY_COLUMNS(ROLLUP_ADD)

/* Each migration moves the schema one version up; they run in order inside a transaction. */
static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE api_keys ("
    "  key_id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, role INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE voice_apps ("
    "  id TEXT PRIMARY KEY, config TEXT NOT NULL, secret TEXT NOT NULL,"
    "  prev_secret TEXT NOT NULL DEFAULT '', prev_expires_at INTEGER NOT NULL DEFAULT 0,"
    "  enabled INTEGER NOT NULL DEFAULT 1, disabled_reason TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE TABLE messages ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, app_id TEXT NOT NULL,"
    "  event TEXT NOT NULL, dedupe_key TEXT NOT NULL, call_type INTEGER, body BLOB NOT NULL,"
    "  status INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,"
    "  delivered_at INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',"
    "  wait_begin INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX messages_due ON messages(next_attempt_at) WHERE status IN (0, 1);"
    "CREATE INDEX messages_call ON messages(app_id, dedupe_key, event);"
    "CREATE INDEX messages_app ON messages(app_id, seq);"
    "CREATE TABLE attempts ("
    "  message_seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, duration_ms INTEGER NOT NULL,"
    "  http_status INTEGER NOT NULL, error_class TEXT NOT NULL DEFAULT '',"
    "  error TEXT NOT NULL DEFAULT '', response BLOB);"
    "CREATE INDEX attempts_message ON attempts(message_seq);",
    /* 2: records in a table of their own, so a status change rewrites a ~150-byte row and not
     * the whole record (claims and results were writing every record to the WAL twice). */
    "CREATE TABLE message_bodies (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);"
    "INSERT INTO message_bodies(seq, body) SELECT seq, body FROM messages;"
    "ALTER TABLE messages DROP COLUMN body;",
    /* 3: the apps' change counter, kept by triggers so that no write path can forget it, and
     * the cluster-wide rate limit's grants of the last second (a deleted app's go with it). */
    "CREATE TABLE apps_version (id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  version INTEGER NOT NULL);"
    "INSERT INTO apps_version VALUES (1, 0);"
    "CREATE TABLE rate_grants (app_id TEXT NOT NULL, at_ms INTEGER NOT NULL,"
    "  n INTEGER NOT NULL);"
    "CREATE INDEX rate_grants_app ON rate_grants(app_id, at_ms);"
    "CREATE TRIGGER voice_apps_inserted AFTER INSERT ON voice_apps BEGIN"
    "  UPDATE apps_version SET version = version + 1 WHERE id = 1; END;"
    "CREATE TRIGGER voice_apps_updated AFTER UPDATE ON voice_apps BEGIN"
    "  UPDATE apps_version SET version = version + 1 WHERE id = 1; END;"
    "CREATE TRIGGER voice_apps_deleted AFTER DELETE ON voice_apps BEGIN"
    "  UPDATE apps_version SET version = version + 1 WHERE id = 1;"
    "  DELETE FROM rate_grants WHERE app_id = old.id; END;",
    /* 4: a message of a deleted Voice App is marked so: it is never delivered, replayed or
     * recovered, even when an app of the same id is created later. */
    "ALTER TABLE messages ADD COLUMN app_deleted INTEGER NOT NULL DEFAULT 0;",
    /* 5: a disabled app's waiting messages are parked, out of the index claims read: with a
     * million of them pending, each claim walked them all (and held the write lock meanwhile).
     * A trigger keeps the flag with the app's state, so no write path can forget it; ingest
     * and requeues set it from the app as they write. */
    "ALTER TABLE messages ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;"
    "UPDATE messages SET parked = 1 WHERE status IN (0, 1)"
    "  AND app_id IN (SELECT id FROM voice_apps WHERE enabled = 0);"
    "DROP INDEX messages_due;"
    "CREATE INDEX messages_due ON messages(next_attempt_at) WHERE status IN (0, 1) AND parked = 0;"
    "CREATE TRIGGER voice_apps_parked AFTER UPDATE OF enabled ON voice_apps"
    "  WHEN old.enabled <> new.enabled BEGIN"
    "  UPDATE messages SET parked = 1 - new.enabled WHERE app_id = new.id AND status IN (0, 1);"
    "  END;",
    /* 5: the store's own settings (a data key's check value). */
    "CREATE TABLE store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    /* 7: the operators' console. A record's CorrelationId (to search by; messages stored
     * before have none), the parked messages indexed (the console counts a disabled app's
     * waiting messages without reading the table; only parked rows are in it), what each
     * attempt signed with (its webhook-timestamp and its signature cut short), and the
     * per-minute rollup of each app (store.h, "the operators' console's figures"). */
    "ALTER TABLE messages ADD COLUMN correlation_id TEXT;"
    "CREATE INDEX messages_correlation ON messages(correlation_id)"
    " WHERE correlation_id IS NOT NULL;"
    "CREATE INDEX messages_parked ON messages(app_id) WHERE parked = 1 AND status IN (0, 1);"
    "ALTER TABLE attempts ADD COLUMN signed_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE attempts ADD COLUMN signature TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE app_minutes (app_id TEXT NOT NULL, minute INTEGER NOT NULL,"
    " ingested INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0,"
    " failed INTEGER NOT NULL DEFAULT 0, dead INTEGER NOT NULL DEFAULT 0" ROLLUP_HISTOGRAM_DEF
    ", last_error TEXT NOT NULL DEFAULT '', last_error_at_ms INTEGER NOT NULL DEFAULT 0,"
    " last_error_seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (app_id, minute)) WITHOUT ROWID;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* The statements prepared once per connection (W_ on the writer, R_ on the reader). */
enum stmt_id {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SYNC_FULL,
    W_SYNC_NORMAL,
    W_INGEST_APP,
    W_INGEST_FIND,
    W_INGEST_BEGIN_OPEN,
    W_INGEST_INSERT,
    W_INGEST_BODY,
    W_CLAIM,
    W_ATTEMPT_INSERT,
    W_ATTEMPT_UPDATE,
    W_APP_DISABLE,
    W_RELEASE,
    W_RENEW,
    W_RATE_TRIM,
    W_RATE_SUM,
    W_RATE_INSERT,
    W_ROLLUP_INGESTED,
    W_ROLLUP_ATTEMPTS,
    W_ROLLUP_PRUNE,
    R_FIRST_,
    R_KEY_LOOKUP = R_FIRST_,
    R_APP_GET,
    R_APPS_VERSION,
    STMT_COUNT_
};

#define APP_COLUMNS                                                                           \
    "id, config, secret, prev_secret, prev_expires_at, enabled, disabled_reason, created_at," \
    " updated_at"

static const char *const stmt_sql[STMT_COUNT_] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SYNC_FULL] = "PRAGMA synchronous=FULL",
    [W_SYNC_NORMAL] = "PRAGMA synchronous=NORMAL",
    [W_INGEST_APP] = "SELECT enabled FROM voice_apps WHERE id = ?",
    [W_INGEST_FIND] = "SELECT seq, status FROM messages WHERE id = ?",
    [W_INGEST_BEGIN_OPEN] = "SELECT 1 FROM messages WHERE app_id = ? AND dedupe_key = ?"
                            " AND event = 'begin-call' AND status IN (0, 1) LIMIT 1",
    [W_INGEST_INSERT] = "INSERT INTO messages(id, app_id, event, dedupe_key, call_type, status,"
                        " created_at, next_attempt_at, wait_begin, parked, correlation_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
    [W_INGEST_BODY] = "INSERT INTO message_bodies(seq, body) VALUES (?, ?)",
    /* One statement claims the batch: the subquery picks (in due order, leaving end-calls
     * whose begin-call is still open), the UPDATE leases them and returns them with their
     * records. RETURNING gives no order: claim_due() sorts by seq. */
    [W_CLAIM] =
        "UPDATE messages SET status = 1, next_attempt_at = ?3 WHERE seq IN ("
        " SELECT m.seq FROM messages m JOIN voice_apps a ON a.id = m.app_id AND a.enabled = 1"
        " WHERE m.status IN (0, 1) AND m.parked = 0 AND m.next_attempt_at <= ?1"
        " AND m.app_deleted = 0"
        " AND NOT (m.event = 'end-call' AND m.wait_begin = 1 AND EXISTS ("
        "   SELECT 1 FROM messages p WHERE p.app_id = m.app_id"
        "   AND p.dedupe_key = m.dedupe_key AND p.event = 'begin-call'"
        "   AND p.status IN (0, 1)))"
        " ORDER BY m.next_attempt_at, m.seq LIMIT ?2)"
        " RETURNING seq, id, app_id, event, dedupe_key, attempts, created_at,"
        " (SELECT body FROM message_bodies b WHERE b.seq = messages.seq)",
    [W_ATTEMPT_INSERT] = "INSERT INTO attempts(message_seq, at_ms, duration_ms, http_status,"
                         " error_class, error, response, signed_at, signature)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    /* An attempt that was in flight when its app was deleted does not bring it back. */
    [W_ATTEMPT_UPDATE] =
        "UPDATE messages SET status = CASE WHEN app_deleted = 1 AND ?1 = 0 THEN 3 ELSE ?1 END,"
        " attempts = attempts + 1, next_attempt_at = ?2, delivered_at = ?3, last_error = ?4"
        " WHERE seq = ?5",
    [W_APP_DISABLE] = "UPDATE voice_apps SET enabled = 0, disabled_reason = ? WHERE id = ?",
    [W_RELEASE] =
        "UPDATE messages SET status = 0, next_attempt_at = ? WHERE seq = ? AND status = 1",
    [W_RENEW] = "UPDATE messages SET next_attempt_at = ? WHERE seq = ? AND status = 1",
    [W_RATE_TRIM] = "DELETE FROM rate_grants WHERE app_id = ? AND at_ms <= ?",
    [W_RATE_SUM] = "SELECT coalesce(sum(n), 0) FROM rate_grants WHERE app_id = ?",
    [W_RATE_INSERT] = "INSERT INTO rate_grants(app_id, at_ms, n) VALUES (?, ?, ?)",
    [W_ROLLUP_INGESTED] = "INSERT INTO app_minutes(app_id, minute, ingested) VALUES (?, ?, ?)"
                          " ON CONFLICT(app_id, minute) DO UPDATE"
                          " SET ingested = ingested + excluded.ingested",
    /* The last error is the one of the attempt that ended last (a later batch may hold an
     * earlier attempt: results come back in any order). */
    [W_ROLLUP_ATTEMPTS] =
        "INSERT INTO app_minutes(app_id, minute, delivered, failed, dead" STORE_LATENCY_LIST
        ", last_error, last_error_at_ms, last_error_seq)"
        " VALUES (?, ?, ?, ?, ?" ROLLUP_HISTOGRAM_BIND ", ?, ?, ?)"
        " ON CONFLICT(app_id, minute) DO UPDATE SET delivered = delivered + excluded.delivered,"
        " failed = failed + excluded.failed, dead = dead + excluded.dead" ROLLUP_HISTOGRAM_ADD
        ", last_error = CASE WHEN excluded.last_error_at_ms >= last_error_at_ms"
        "  THEN excluded.last_error ELSE last_error END,"
        " last_error_seq = CASE WHEN excluded.last_error_at_ms >= last_error_at_ms"
        "  THEN excluded.last_error_seq ELSE last_error_seq END,"
        " last_error_at_ms = max(last_error_at_ms, excluded.last_error_at_ms)",
    [W_ROLLUP_PRUNE] = "DELETE FROM app_minutes WHERE minute < ?",
    [R_APPS_VERSION] = "SELECT version FROM apps_version WHERE id = 1",
    [R_KEY_LOOKUP] = "SELECT role FROM api_keys WHERE hash = ? AND revoked = 0",
    [R_APP_GET] = "SELECT " APP_COLUMNS " FROM voice_apps WHERE id = ?",
};

/* Checkpoints copy the WAL back into the database file: a thread of their own does it, with a
 * connection of its own, once the WAL holds CHECKPOINT_FRAMES, so that the copy and the
 * database file's fsync are not paid by the commit that crossed the line (an ingest waiting
 * for its 202). Passive: writers go on meanwhile, and copy the last few frames themselves
 * (CHECKPOINT_TAIL_FRAMES) so the WAL can start again; should the thread fall behind, the
 * writer checkpoints itself past CHECKPOINT_FRAMES_WRITER. The WAL stays near 10,000 frames. Each
 * page is copied once per checkpoint however many commits rewrote it, so a longer WAL copies fewer
 * pages per event: 8,000 frames (32 MiB) wrote 12 KB per ingested event against 14 KB with SQLite's
 * default of 1,000. */
#define CHECKPOINT_FRAMES        8000
#define CHECKPOINT_FRAMES_WRITER (4 * CHECKPOINT_FRAMES)

/* Frames the writer may copy itself after the thread's pass: a passive checkpoint beside a
 * writer never catches up, and the WAL starts again from its beginning only once every frame
 * is copied back; the writer finishing the last few between its commits is what lets it. */
#define CHECKPOINT_TAIL_FRAMES 2000

struct checkpointer {
    pthread_t thread;
    bool started, stop, due;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    sqlite3 *db;
    atomic_int copied; /* frames the thread's last pass copied back, 0 once the writer did */
};

struct sqlite_store {
    struct store base;
    sqlite3 *w, *r;
    struct checkpointer cp;
    struct store_rollup rollup;   /* the batch's, on the writer */
    int64_t rollup_pruned;        /* the minute the rollup was last pruned at */
    sqlite3_stmt *q[STMT_COUNT_]; /* prepared on first use, under the connection's lock */
    bool sync_normal;             /* the writer is at synchronous=NORMAL (inside begin/finish) */
    int lock_fd;                  /* the ".lock" file held by the serving process, or -1 */
    pthread_mutex_t wlock, rlock;
    char path[4096];
};

static struct sqlite_store *self(struct store *s)
{
    return (struct sqlite_store *)s;
}

static ch_code db_error(struct ch_error *err, sqlite3 *db, const char *what)
{
    return sqldb_error(err, db, "", what);
}

static ch_code exec(sqlite3 *db, const char *sql, struct ch_error *err)
{
    return sqldb_exec(db, sql, "sqlite: ", err);
}

static ch_code prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, struct ch_error *err)
{
    return sqldb_prepare(db, sql, st, "", err);
}

/* A kept statement, ready to bind; the caller holds the connection's lock and calls
 * sqldb_done() when through with it. */
static ch_code stmt(struct sqlite_store *db, enum stmt_id id, sqlite3_stmt **out,
                    struct ch_error *err)
{
    ch_code rc = sqldb_kept(id >= R_FIRST_ ? db->r : db->w, &db->q[id], stmt_sql[id], "", err);
    *out = db->q[id];
    return rc;
}

/* Runs a kept statement that returns no rows (transaction control, pragmas). */
static ch_code run(struct sqlite_store *db, enum stmt_id id, struct ch_error *err)
{
    sqlite3_stmt *st = NULL;
    ch_code rc = stmt(db, id, &st, err);
    if (rc != CH_OK)
        return rc;
    int step = sqlite3_step(st);
    if (step != SQLITE_DONE && step != SQLITE_ROW)
        rc = db_error(err, db->w, stmt_sql[id]);
    sqldb_done(st);
    return rc;
}

/* BEGIN IMMEDIATE on the writer. durable = false: its COMMIT is not fsynced (the writer is
 * back to synchronous=FULL after it, for everything else). */
static ch_code begin(struct sqlite_store *db, bool durable, struct ch_error *err)
{
    if (!durable) {
        ch_code rc = run(db, W_SYNC_NORMAL, err);
        if (rc != CH_OK)
            return rc;
        db->sync_normal = true;
    }
    return run(db, W_BEGIN, err);
}

/* COMMIT when rc is CH_OK, else ROLLBACK; returns the first error. */
static ch_code finish(struct sqlite_store *db, ch_code rc, struct ch_error *err)
{
    if (rc == CH_OK)
        rc = run(db, W_COMMIT, err);
    if (rc != CH_OK && !sqlite3_get_autocommit(db->w))
        run(db, W_ROLLBACK, NULL);
    if (db->sync_normal && run(db, W_SYNC_FULL, NULL) == CH_OK)
        db->sync_normal = false;
    return rc;
}

static void text_col(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

/* ---- start ---- */

static ch_code startup(struct store *s, int64_t now, int64_t *released, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    char lock_path[4200];
    snprintf(lock_path, sizeof lock_path, "%s.lock", db->path);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return ch_error_set(err, CH_EIO, "cannot open '%s': %s", lock_path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return ch_error_set(err, CH_EUNAVAILABLE,
                            "another callhook serve is using '%s' (one process per SQLite "
                            "database; use PostgreSQL for several nodes)",
                            db->path);
    }
    db->lock_fd = fd;
    /* With the file to ourselves, every claim in it was made by a run of ours that has ended. */
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(
        db->w, "UPDATE messages SET status = 0, next_attempt_at = ? WHERE status = 1", &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, now);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "release old claims");
        else
            *released = sqlite3_changes(db->w);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* ---- keys ---- */

static ch_code key_count(struct store *s, int64_t *n, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r, "SELECT count(*) FROM api_keys WHERE revoked = 0", &st, err);
    if (rc == CH_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            *n = sqlite3_column_int64(st, 0);
        else
            rc = db_error(err, db->r, "count keys");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code key_add(struct store *s, const char *key_id, const unsigned char hash[32],
                       enum key_role role, int64_t now, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc =
        prepare(db->w, "INSERT INTO api_keys(key_id, hash, role, created_at) VALUES (?, ?, ?, ?)",
                &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, hash, 32, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, role);
        sqlite3_bind_int64(st, 4, now);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "add key");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code key_lookup(struct store *s, const unsigned char hash[32], enum key_role *role,
                          struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = stmt(db, R_KEY_LOOKUP, &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            *role = (enum key_role)sqlite3_column_int(st, 0);
        else if (step == SQLITE_DONE)
            rc = ch_error_set(err, CH_ENOTFOUND, "no such key");
        else
            rc = db_error(err, db->r, "look up key");
    }
    sqldb_done(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code key_list(struct store *s,
                        void (*cb)(void *ctx, const char *key_id, enum key_role role,
                                   int64_t created_at, bool revoked),
                        void *ctx, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r,
                         "SELECT key_id, role, created_at, revoked FROM api_keys "
                         "ORDER BY created_at DESC, key_id",
                         &st, err);
    int step;
    while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW)
        cb(ctx, (const char *)sqlite3_column_text(st, 0), (enum key_role)sqlite3_column_int(st, 1),
           sqlite3_column_int64(st, 2), sqlite3_column_int(st, 3) != 0);
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, db->r, "list keys");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code key_revoke(struct store *s, const char *key_id, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->w, "UPDATE api_keys SET revoked = 1 WHERE key_id = ?", &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "revoke key");
        else if (sqlite3_changes(db->w) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no key '%s'", key_id);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* ---- voice apps ---- */

static ch_code app_put(struct store *s, const struct stored_app *a, bool *created,
                       struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = exec(db->w, "BEGIN IMMEDIATE", err);
    if (rc == CH_OK)
        rc = prepare(db->w, "SELECT 1 FROM voice_apps WHERE id = ?", &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, a->id, -1, SQLITE_STATIC);
        *created = sqlite3_step(st) != SQLITE_ROW;
        sqlite3_finalize(st);
        st = NULL;
        rc = prepare(db->w,
                     "INSERT INTO voice_apps(id, config, secret, prev_secret, prev_expires_at,"
                     " enabled, disabled_reason, created_at, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                     " ON CONFLICT(id) DO UPDATE SET config = ?2, secret = ?3, prev_secret = ?4,"
                     " prev_expires_at = ?5, enabled = ?6, disabled_reason = ?7, updated_at = ?9",
                     &st, err);
    }
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, a->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, a->config_json, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, a->secret, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, a->prev_secret, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, a->prev_expires_at);
        sqlite3_bind_int(st, 6, a->enabled);
        sqlite3_bind_text(st, 7, a->disabled_reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, a->created_at);
        sqlite3_bind_int64(st, 9, a->updated_at);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "save voice app");
    }
    sqlite3_finalize(st);
    if (rc == CH_OK)
        rc = exec(db->w, "COMMIT", err);
    else
        exec(db->w, "ROLLBACK", NULL);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code app_row(sqlite3_stmt *st, struct stored_app *out, struct ch_error *err)
{
    memset(out, 0, sizeof *out);
    text_col(st, 0, out->id, sizeof out->id);
    const char *config = (const char *)sqlite3_column_text(st, 1);
    out->config_json = strdup(config ? config : "{}");
    if (out->config_json == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory reading a voice app");
    text_col(st, 2, out->secret, sizeof out->secret);
    text_col(st, 3, out->prev_secret, sizeof out->prev_secret);
    out->prev_expires_at = sqlite3_column_int64(st, 4);
    out->enabled = sqlite3_column_int(st, 5) != 0;
    text_col(st, 6, out->disabled_reason, sizeof out->disabled_reason);
    out->created_at = sqlite3_column_int64(st, 7);
    out->updated_at = sqlite3_column_int64(st, 8);
    return CH_OK;
}

static ch_code app_get(struct store *s, const char *id, struct stored_app *out,
                       struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = stmt(db, R_APP_GET, &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            rc = app_row(st, out, err);
        else if (step == SQLITE_DONE)
            rc = ch_error_set(err, CH_ENOTFOUND, "no voice app '%s'", id);
        else
            rc = db_error(err, db->r, "read voice app");
    }
    sqldb_done(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code app_list(struct store *s, void (*cb)(void *ctx, const struct stored_app *a),
                        void *ctx, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r, "SELECT " APP_COLUMNS " FROM voice_apps ORDER BY id", &st, err);
    int step = SQLITE_DONE;
    while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct stored_app a;
        rc = app_row(st, &a, err);
        if (rc == CH_OK)
            cb(ctx, &a);
        stored_app_release(&a);
    }
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, db->r, "list voice apps");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code app_delete(struct store *s, const char *id, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = exec(db->w, "BEGIN IMMEDIATE", err);
    if (rc == CH_OK)
        rc = prepare(db->w, "DELETE FROM voice_apps WHERE id = ?", &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "delete voice app");
        else if (sqlite3_changes(db->w) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no voice app '%s'", id);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == CH_OK)
        rc = prepare(db->w, DELETED_APP_MESSAGES_SQL, &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "end the deleted voice app's messages");
    }
    sqlite3_finalize(st);
    if (rc == CH_OK)
        rc = exec(db->w, "COMMIT", err);
    else
        exec(db->w, "ROLLBACK", NULL);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* ---- the console's rollup (store.h, "the operators' console's figures") ---- */

/* Writes the batch's entries and empties it; once a minute (by the batch's time) also prunes
 * the rows older than STORE_ROLLUP_KEEP_S. In the caller's transaction, on the writer. */
static ch_code rollup_write(struct sqlite_store *db, enum stmt_id id, struct ch_error *err)
{
    struct store_rollup *r = &db->rollup;
    sqlite3_stmt *st = NULL;
    ch_code rc = r->n > 0 ? stmt(db, id, &st, err) : CH_OK;
    int64_t latest = 0;
    for (size_t i = 0; rc == CH_OK && i < r->n; i++) {
        const struct store_rollup_entry *e = &r->e[i];
        int k = 1;
        sqlite3_bind_text(st, k++, e->app_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, k++, e->m.at);
        if (id == W_ROLLUP_INGESTED) {
            sqlite3_bind_int64(st, k++, e->m.ingested);
        } else {
            sqlite3_bind_int64(st, k++, e->m.delivered);
            sqlite3_bind_int64(st, k++, e->m.failed);
            sqlite3_bind_int64(st, k++, e->m.dead);
            for (int b = 0; b < STORE_LATENCY_BUCKETS; b++)
                sqlite3_bind_int64(st, k++, e->m.latency[b]);
            sqlite3_bind_text(st, k++, e->last_error, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, k++, e->last_error_at_ms);
            sqlite3_bind_int64(st, k++, e->last_error_seq);
        }
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "rollup");
        sqldb_done(st);
        latest = e->m.at > latest ? e->m.at : latest;
    }
    r->n = 0;
    r->hit = 0;
    if (rc == CH_OK && latest > db->rollup_pruned) {
        rc = stmt(db, W_ROLLUP_PRUNE, &st, err);
        if (rc == CH_OK) {
            sqlite3_bind_int64(st, 1, latest - STORE_ROLLUP_KEEP_S);
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = db_error(err, db->w, "prune the rollup");
            sqldb_done(st);
        }
        if (rc == CH_OK)
            db->rollup_pruned = latest;
    }
    return rc;
}

/* ---- ingest ---- */

static ch_code ingest_one(struct sqlite_store *db, struct ingest_item *it, bool skip,
                          bool wait_begin, struct ch_error *err)
{
    sqlite3_stmt *app = NULL, *find = NULL, *begin_open = NULL, *ins = NULL, *body = NULL;
    ch_code rc = stmt(db, W_INGEST_APP, &app, err);
    if (rc == CH_OK)
        rc = stmt(db, W_INGEST_FIND, &find, err);
    if (rc == CH_OK)
        rc = stmt(db, W_INGEST_BEGIN_OPEN, &begin_open, err);
    if (rc == CH_OK)
        rc = stmt(db, W_INGEST_INSERT, &ins, err);
    if (rc == CH_OK)
        rc = stmt(db, W_INGEST_BODY, &body, err);
    if (rc != CH_OK)
        return rc;

    sqlite3_bind_text(app, 1, it->app_id, -1, SQLITE_STATIC);
    int step = sqlite3_step(app);
    bool enabled = step == SQLITE_ROW && sqlite3_column_int(app, 0) != 0;
    sqldb_done(app);
    if (step == SQLITE_DONE) {
        it->unknown_app = true;
        it->result = CH_ENOTFOUND;
        return CH_OK;
    }
    if (step != SQLITE_ROW)
        return db_error(err, db->w, "ingest: find voice app");

    /* An end-call waits while its call's begin-call is still to be delivered; an event of a
     * disabled app waits, parked, until the app is enabled. */
    enum msg_status status = skip ? MSG_SKIPPED : enabled ? MSG_DELIVERING : MSG_PENDING;
    if (status == MSG_DELIVERING && wait_begin && strcmp(it->event, "end-call") == 0) {
        sqlite3_bind_text(begin_open, 1, it->app_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(begin_open, 2, it->dedupe_key, -1, SQLITE_STATIC);
        step = sqlite3_step(begin_open);
        sqldb_done(begin_open);
        if (step == SQLITE_ROW)
            status = MSG_PENDING;
        else if (step != SQLITE_DONE)
            return db_error(err, db->w, "ingest: find begin-call");
    }

    sqlite3_bind_text(ins, 1, it->msg_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, it->app_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, it->event, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 4, it->dedupe_key, -1, SQLITE_STATIC);
    if (it->has_call_type)
        sqlite3_bind_int64(ins, 5, it->call_type);
    else
        sqlite3_bind_null(ins, 5);
    sqlite3_bind_int(ins, 6, status);
    sqlite3_bind_int64(ins, 7, it->now);
    sqlite3_bind_int64(ins, 8, status == MSG_DELIVERING ? it->lease_until : it->now);
    sqlite3_bind_int(ins, 9, wait_begin);
    sqlite3_bind_int(ins, 10, !enabled);
    if (it->correlation_id)
        sqlite3_bind_text(ins, 11, it->correlation_id, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(ins, 11);
    step = sqlite3_step(ins);
    sqldb_done(ins);
    if (step != SQLITE_DONE)
        return db_error(err, db->w, "ingest: insert message");
    if (sqlite3_changes(db->w) == 0) {
        /* Already stored (its id is taken): a duplicate, answered with what it is now. The
         * insert tried first: one walk of the id index for a new event, the usual case. */
        sqlite3_bind_text(find, 1, it->msg_id, -1, SQLITE_STATIC);
        step = sqlite3_step(find);
        if (step == SQLITE_ROW) {
            it->duplicate = true;
            it->seq = sqlite3_column_int64(find, 0);
            it->status = (enum msg_status)sqlite3_column_int(find, 1);
            it->result = CH_OK;
        }
        sqldb_done(find);
        return step == SQLITE_ROW ? CH_OK : db_error(err, db->w, "ingest: find message");
    }
    it->seq = sqlite3_last_insert_rowid(db->w);

    sqlite3_bind_int64(body, 1, it->seq);
    sqlite3_bind_blob64(body, 2, it->body, it->body_len, SQLITE_STATIC);
    step = sqlite3_step(body);
    sqldb_done(body);
    if (step != SQLITE_DONE)
        return db_error(err, db->w, "ingest: insert record");
    it->status = status;
    it->result = CH_OK;
    store_rollup_add_ingested(&db->rollup, it->app_id, it->now);
    return CH_OK;
}

static ch_code ingest(struct store *s, struct ingest_item *items, size_t n, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    /* What ingest acknowledges is on disk when COMMIT returns. */
    ch_code rc = begin(db, true, err);
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        /* What the caller asked for (want) decides skip and ordering; status is only an out. */
        bool skip = items[i].want == INGEST_SKIP;
        bool wait_begin = items[i].want == INGEST_WAIT_BEGIN;
        rc = ingest_one(db, &items[i], skip, wait_begin, err);
    }
    if (rc == CH_OK)
        rc = rollup_write(db, W_ROLLUP_INGESTED, err);
    db->rollup.n = 0; /* a failed batch counts nothing */
    rc = finish(db, rc, err);
    if (rc == CH_ESTORE)
        rc = CH_EUNAVAILABLE; /* nothing was stored: the caller answers 503 */
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* ---- delivery ---- */

static int by_seq(const void *a, const void *b)
{
    int64_t x = ((const struct due_message *)a)->seq, y = ((const struct due_message *)b)->seq;
    return (x > y) - (x < y);
}

static ch_code claim_due(struct store *s, int64_t now, int64_t lease_until, struct due_message *out,
                         size_t max, size_t *n, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    *n = 0;
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = begin(db, false, err);
    if (rc == CH_OK)
        rc = stmt(db, W_CLAIM, &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
        sqlite3_bind_int64(st, 3, lease_until);
        int step = SQLITE_DONE;
        while ((step = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
            struct due_message *m = &out[*n];
            memset(m, 0, sizeof *m);
            m->seq = sqlite3_column_int64(st, 0);
            text_col(st, 1, m->msg_id, sizeof m->msg_id);
            text_col(st, 2, m->app_id, sizeof m->app_id);
            text_col(st, 3, m->event, sizeof m->event);
            text_col(st, 4, m->dedupe_key, sizeof m->dedupe_key);
            m->attempts = sqlite3_column_int(st, 5);
            m->created_at = sqlite3_column_int64(st, 6);
            int len = sqlite3_column_bytes(st, 7);
            m->body = malloc(len > 0 ? (size_t)len : 1);
            if (m->body == NULL) {
                rc = ch_error_set(err, CH_ENOMEM, "out of memory claiming messages");
                break;
            }
            if (len > 0)
                memcpy(m->body, sqlite3_column_blob(st, 7), (size_t)len);
            m->body_len = (size_t)len;
            (*n)++;
        }
        if (rc == CH_OK && step != SQLITE_DONE && step != SQLITE_ROW)
            rc = db_error(err, db->w, "claim");
    }
    sqldb_done(st);
    rc = finish(db, rc, err);
    if (rc != CH_OK) {
        for (size_t i = 0; i < *n; i++)
            free(out[i].body);
        *n = 0;
    }
    pthread_mutex_unlock(&db->wlock);
    /* In the order they were stored, so each app's queue stays first in, first out. */
    qsort(out, *n, sizeof *out, by_seq);
    return rc;
}

static ch_code record_attempts(struct store *s, const struct attempt_result *r, size_t n,
                               struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *ins = NULL, *upd = NULL, *dis = NULL;
    /* Not fsynced: a result lost to a power cut makes its message due again. */
    ch_code rc = begin(db, false, err);
    if (rc == CH_OK)
        rc = stmt(db, W_ATTEMPT_INSERT, &ins, err);
    if (rc == CH_OK)
        rc = stmt(db, W_ATTEMPT_UPDATE, &upd, err);
    if (rc == CH_OK)
        rc = stmt(db, W_APP_DISABLE, &dis, err);
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        const struct attempt_result *a = &r[i];
        sqlite3_bind_int64(ins, 1, a->seq);
        sqlite3_bind_int64(ins, 2, a->at_ms);
        sqlite3_bind_int64(ins, 3, a->duration_ms);
        sqlite3_bind_int(ins, 4, a->http_status);
        sqlite3_bind_text(ins, 5, a->error_class ? a->error_class : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 6, a->error ? a->error : "", -1, SQLITE_STATIC);
        if (a->response && a->response_len > 0)
            sqlite3_bind_blob64(ins, 7, a->response, a->response_len, SQLITE_STATIC);
        else
            sqlite3_bind_null(ins, 7);
        sqlite3_bind_int64(ins, 8, a->signed_at);
        sqlite3_bind_text(ins, 9, a->signature ? a->signature : "", -1, SQLITE_STATIC);
        int step = sqlite3_step(ins);
        sqldb_done(ins);
        if (step != SQLITE_DONE) {
            rc = db_error(err, db->w, "record attempt");
            break;
        }
        sqlite3_bind_int(upd, 1, a->new_status);
        sqlite3_bind_int64(upd, 2, a->next_attempt_at);
        sqlite3_bind_int64(upd, 3, a->new_status == MSG_DELIVERED ? a->at_ms / 1000 : 0);
        sqlite3_bind_text(upd, 4, a->error ? a->error : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(upd, 5, a->seq);
        step = sqlite3_step(upd);
        sqldb_done(upd);
        if (step != SQLITE_DONE) {
            rc = db_error(err, db->w, "update message");
            break;
        }
        if (a->disable_app && a->app_id) {
            sqlite3_bind_text(dis, 1, a->error ? a->error : "disabled", -1, SQLITE_STATIC);
            sqlite3_bind_text(dis, 2, a->app_id, -1, SQLITE_STATIC);
            step = sqlite3_step(dis);
            sqldb_done(dis);
            if (step != SQLITE_DONE)
                rc = db_error(err, db->w, "disable voice app");
        }
    }
    if (rc == CH_OK) {
        store_rollup_add_attempts(&db->rollup, r, n);
        rc = rollup_write(db, W_ROLLUP_ATTEMPTS, err);
    }
    db->rollup.n = 0; /* a failed batch counts nothing */
    rc = finish(db, rc, err);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* Sets next_attempt_at of claimed messages (release: and makes them pending again). */
static ch_code update_claimed(struct store *s, enum stmt_id id, const int64_t *seqs, size_t n,
                              int64_t at, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = begin(db, false, err);
    if (rc == CH_OK)
        rc = stmt(db, id, &st, err);
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        sqlite3_bind_int64(st, 1, at);
        sqlite3_bind_int64(st, 2, seqs[i]);
        int step = sqlite3_step(st);
        sqldb_done(st);
        if (step != SQLITE_DONE)
            rc = db_error(err, db->w, id == W_RELEASE ? "release" : "renew leases");
    }
    rc = finish(db, rc, err);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code release(struct store *s, const int64_t *seqs, size_t n, int64_t next_attempt_at,
                       struct ch_error *err)
{
    return update_claimed(s, W_RELEASE, seqs, n, next_attempt_at, err);
}

static ch_code renew(struct store *s, const int64_t *seqs, size_t n, int64_t now,
                     int64_t lease_until, struct ch_error *err)
{
    /* One node, one clock: the lease ends at the caller's lease_until. */
    (void)now;
    return update_claimed(s, W_RENEW, seqs, n, lease_until, err);
}

/* ---- the store's own settings ---- */

static ch_code meta_get(struct store *s, const char *name, char *value, size_t cap,
                        struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    /* On the writer: a value just put is seen at once. */
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->w, "SELECT value FROM store_meta WHERE name = ?", &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            text_col(st, 0, value, cap);
        else if (step == SQLITE_DONE)
            rc = ch_error_set(err, CH_ENOTFOUND, "no store setting '%s'", name);
        else
            rc = db_error(err, db->w, "read a store setting");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code meta_put(struct store *s, const char *name, const char *value, bool replace,
                        struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->w,
                         replace ? "INSERT INTO store_meta(name, value) VALUES (?1, ?2)"
                                   " ON CONFLICT(name) DO UPDATE SET value = ?2"
                                 : "INSERT INTO store_meta(name, value) VALUES (?1, ?2)"
                                   " ON CONFLICT(name) DO NOTHING",
                         &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "write a store setting");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* ---- values as stored, for encryption's maintenance ---- */

static ch_code body_page(struct store *s, int64_t after_seq, struct stored_body *out, size_t max,
                         size_t *n, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r,
                         "SELECT m.seq, m.id, b.body FROM messages m"
                         " JOIN message_bodies b ON b.seq = m.seq"
                         " WHERE m.seq > ? AND length(b.body) > 0 ORDER BY m.seq LIMIT ?",
                         &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, after_seq);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
        int step = SQLITE_DONE;
        while (*n < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
            struct stored_body *b = &out[*n];
            b->seq = sqlite3_column_int64(st, 0);
            text_col(st, 1, b->msg_id, sizeof b->msg_id);
            size_t len = (size_t)sqlite3_column_bytes(st, 2);
            b->body = malloc(len);
            if (b->body == NULL) {
                rc = ch_error_set(err, CH_ENOMEM, "out of memory reading records");
                break;
            }
            memcpy(b->body, sqlite3_column_blob(st, 2), len);
            b->body_len = len;
            (*n)++;
        }
        if (rc == CH_OK && *n < max && step != SQLITE_DONE)
            rc = db_error(err, db->r, "read records");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static const char *const swap_sql[] = {
    [SEALED_APP_SECRET] = "UPDATE voice_apps SET secret = ?1 WHERE id = ?2 AND secret = ?3",
    [SEALED_APP_PREV_SECRET] =
        "UPDATE voice_apps SET prev_secret = ?1 WHERE id = ?2 AND prev_secret = ?3",
    [SEALED_APP_CONFIG] = "UPDATE voice_apps SET config = ?1 WHERE id = ?2 AND config = ?3",
    [SEALED_MESSAGE_BODY] = "UPDATE message_bodies SET body = ?1 WHERE seq = ?2 AND body = ?3",
};

static ch_code values_replace(struct store *s, const struct value_swap *v, size_t n,
                              size_t *replaced, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    ch_code rc = exec(db->w, "BEGIN IMMEDIATE", err);
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        sqlite3_stmt *st = NULL;
        rc = prepare(db->w, swap_sql[v[i].column], &st, err);
        if (rc != CH_OK)
            break;
        if (v[i].column == SEALED_MESSAGE_BODY) {
            sqlite3_bind_blob(st, 1, v[i].new_value, (int)v[i].new_len, SQLITE_STATIC);
            sqlite3_bind_int64(st, 2, v[i].seq);
            sqlite3_bind_blob(st, 3, v[i].old_value, (int)v[i].old_len, SQLITE_STATIC);
        } else {
            sqlite3_bind_text(st, 1, v[i].new_value, (int)v[i].new_len, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, v[i].app_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, v[i].old_value, (int)v[i].old_len, SQLITE_STATIC);
        }
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "replace a sealed value");
        else
            *replaced += (size_t)sqlite3_changes(db->w);
        sqlite3_finalize(st);
    }
    if (rc == CH_OK)
        rc = exec(db->w, "COMMIT", err);
    else
        exec(db->w, "ROLLBACK", NULL);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* The replaced values' cells were zeroed (secure_delete); their old pages are still in the
 * WAL until it is checkpointed and emptied. */
static ch_code scrub(struct store *s, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    int log_frames = 0, done_frames = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->w, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_frames,
                                       &done_frames);
    ch_code out = CH_OK;
    if (rc == SQLITE_BUSY)
        out = ch_error_set(err, CH_EUNAVAILABLE,
                           "cannot empty the WAL of '%s': another process is reading it", db->path);
    else if (rc != SQLITE_OK)
        out = db_error(err, db->w, "empty the WAL");
    pthread_mutex_unlock(&db->wlock);
    return out;
}

/* ---- voice app changes and the rate limit ---- */

static ch_code apps_version(struct store *s, int64_t *version, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = stmt(db, R_APPS_VERSION, &st, err);
    if (rc == CH_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            *version = sqlite3_column_int64(st, 0);
        else
            rc = db_error(err, db->r, "read the voice apps' version");
    }
    sqldb_done(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

/* One process uses a SQLite database, so its own wall clock is the only clock there is. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Steps one kept statement of the rate limit with the app and up to two numbers bound. */
static int rate_step(sqlite3_stmt *st, const char *app_id, int64_t a, int64_t b)
{
    sqlite3_bind_text(st, 1, app_id, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, a);
    if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_int64(st, 3, b);
    return sqlite3_step(st);
}

static ch_code rate_take(struct store *s, const char *app_id, int64_t limit_per_s, int64_t want,
                         int64_t *granted, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    *granted = 0;
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *app = NULL, *trim = NULL, *sum = NULL, *ins = NULL;
    /* The write transaction serialises every taker of this database. */
    ch_code rc = begin(db, false, err);
    if (rc == CH_OK)
        rc = stmt(db, W_INGEST_APP, &app, err);
    if (rc == CH_OK)
        rc = stmt(db, W_RATE_TRIM, &trim, err);
    if (rc == CH_OK)
        rc = stmt(db, W_RATE_SUM, &sum, err);
    if (rc == CH_OK)
        rc = stmt(db, W_RATE_INSERT, &ins, err);
    int64_t now = wall_ms(), g = 0;
    if (rc == CH_OK) {
        int step = rate_step(app, app_id, 0, 0);
        if (step == SQLITE_DONE)
            rc = ch_error_set(err, CH_ENOTFOUND, "no voice app '%s'", app_id);
        else if (step != SQLITE_ROW)
            rc = db_error(err, db->w, "rate limit: find voice app");
    }
    /* What was granted at or before now - the window is outside every window that holds now. */
    if (rc == CH_OK && rate_step(trim, app_id, now - STORE_RATE_WINDOW_MS, 0) != SQLITE_DONE)
        rc = db_error(err, db->w, "rate limit: forget old grants");
    if (rc == CH_OK) {
        if (rate_step(sum, app_id, 0, 0) == SQLITE_ROW) {
            int64_t left = limit_per_s - sqlite3_column_int64(sum, 0);
            g = want < left ? want : left;
            if (g < 0)
                g = 0;
        } else {
            rc = db_error(err, db->w, "rate limit: sum grants");
        }
    }
    if (rc == CH_OK && g > 0 && rate_step(ins, app_id, now, g) != SQLITE_DONE)
        rc = db_error(err, db->w, "rate limit: grant");
    sqldb_done(app);
    sqldb_done(trim);
    sqldb_done(sum);
    sqldb_done(ins);
    rc = finish(db, rc, err);
    if (rc == CH_OK)
        *granted = g;
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

/* ---- messages for the API ---- */

#define MESSAGE_COLUMNS                                                                     \
    "seq, id, app_id, event, dedupe_key, call_type, status, attempts, created_at,"          \
    " next_attempt_at, delivered_at, last_error,"                                           \
    " (SELECT length(body) FROM message_bodies b WHERE b.seq = messages.seq), app_deleted," \
    " correlation_id"

static void message_row(sqlite3_stmt *st, struct message_view *m)
{
    memset(m, 0, sizeof *m);
    m->seq = sqlite3_column_int64(st, 0);
    text_col(st, 1, m->msg_id, sizeof m->msg_id);
    text_col(st, 2, m->app_id, sizeof m->app_id);
    text_col(st, 3, m->event, sizeof m->event);
    text_col(st, 4, m->dedupe_key, sizeof m->dedupe_key);
    m->has_call_type = sqlite3_column_type(st, 5) != SQLITE_NULL;
    m->call_type = sqlite3_column_int64(st, 5);
    m->status = (enum msg_status)sqlite3_column_int(st, 6);
    m->attempts = sqlite3_column_int(st, 7);
    m->created_at = sqlite3_column_int64(st, 8);
    m->next_attempt_at = sqlite3_column_int64(st, 9);
    m->delivered_at = sqlite3_column_int64(st, 10);
    text_col(st, 11, m->last_error, sizeof m->last_error);
    m->body_len = (size_t)sqlite3_column_int64(st, 12);
    m->app_deleted = sqlite3_column_int(st, 13) != 0;
    text_col(st, 14, m->correlation_id, sizeof m->correlation_id);
}

static ch_code message_get(struct store *s, const char *msg_id, struct message_view *out,
                           struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r, "SELECT " MESSAGE_COLUMNS " FROM messages WHERE id = ?", &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            message_row(st, out);
        else if (step == SQLITE_DONE)
            rc = ch_error_set(err, CH_ENOTFOUND, "no message '%s'", msg_id);
        else
            rc = db_error(err, db->r, "read message");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code message_attempts(struct store *s, int64_t seq,
                                void (*cb)(void *ctx, const struct attempt_view *a), void *ctx,
                                struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r,
                         "SELECT at_ms, duration_ms, http_status, error_class, error, response,"
                         " signed_at, signature FROM attempts WHERE message_seq = ? ORDER BY rowid",
                         &st, err);
    int step = SQLITE_DONE;
    if (rc == CH_OK)
        sqlite3_bind_int64(st, 1, seq);
    while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct attempt_view a;
        memset(&a, 0, sizeof a);
        a.at_ms = sqlite3_column_int64(st, 0);
        a.duration_ms = sqlite3_column_int64(st, 1);
        a.http_status = sqlite3_column_int(st, 2);
        text_col(st, 3, a.error_class, sizeof a.error_class);
        text_col(st, 4, a.error, sizeof a.error);
        int len = sqlite3_column_bytes(st, 5);
        if (len > (int)sizeof a.response - 1)
            len = (int)sizeof a.response - 1;
        if (len > 0)
            memcpy(a.response, sqlite3_column_blob(st, 5), (size_t)len);
        a.response[len > 0 ? len : 0] = '\0';
        a.signed_at = sqlite3_column_int64(st, 6);
        text_col(st, 7, a.signature, sizeof a.signature);
        cb(ctx, &a);
    }
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, db->r, "read attempts");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code message_list(struct store *s, const struct message_filter *f,
                            void (*cb)(void *ctx, const struct message_view *m), void *ctx,
                            struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    char sql[1024];
    size_t o =
        (size_t)snprintf(sql, sizeof sql, "SELECT " MESSAGE_COLUMNS " FROM messages WHERE 1");
    /* Every filter is a bound parameter; only the shape of the query varies. */
    if (f->app_id)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND app_id = :app");
    if (f->event)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND event = :event");
    if (f->dedupe_key)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND dedupe_key = :key");
    if (f->correlation_id)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND correlation_id = :corr");
    if (f->status >= 0)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND status = :status");
    if (f->attempted == 0)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND attempts = 0");
    else if (f->attempted == 1)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND attempts > 0");
    if (f->since > 0)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND created_at >= :since");
    if (f->until > 0)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND created_at < :until");
    if (f->before_seq > 0)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND seq < :before");
    snprintf(sql + o, sizeof sql - o, " ORDER BY seq DESC LIMIT :limit");

    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r, sql, &st, err);
    int step = SQLITE_DONE;
    if (rc == CH_OK) {
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":app"), f->app_id, -1,
                          SQLITE_STATIC);
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":event"), f->event, -1,
                          SQLITE_STATIC);
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":key"), f->dedupe_key, -1,
                          SQLITE_STATIC);
        sqlite3_bind_int(st, sqlite3_bind_parameter_index(st, ":status"), f->status);
        sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":corr"), f->correlation_id, -1,
                          SQLITE_STATIC);
        sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":since"), f->since);
        sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":until"), f->until);
        sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":before"), f->before_seq);
        sqlite3_bind_int(st, sqlite3_bind_parameter_index(st, ":limit"), f->limit);
    }
    while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct message_view m;
        message_row(st, &m);
        cb(ctx, &m);
    }
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, db->r, "list messages");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code message_requeue(struct store *s, const char *msg_id, int64_t now,
                               struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    /* A message being delivered right now is left alone; its attempt decides. */
    ch_code rc =
        prepare(db->w,
                "UPDATE messages SET status = 0, next_attempt_at = ?, " PARKED_IF_DISABLED_SQL
                " WHERE id = ? AND status <> 1 AND app_deleted = 0",
                &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_text(st, 2, msg_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "replay");
        else if (sqlite3_changes(db->w) == 0)
            rc =
                ch_error_set(err, CH_ENOTFOUND, "no message '%s' that can be replayed now", msg_id);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code message_copy(struct store *s, const char *msg_id, const char *new_msg_id,
                            const void *body, size_t body_len, int64_t now, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *ins = NULL, *rec = NULL;
    ch_code rc = begin(db, true, err);
    if (rc == CH_OK)
        rc = prepare(
            db->w,
            "INSERT INTO messages(id, app_id, event, dedupe_key, call_type, status,"
            " created_at, next_attempt_at, parked, correlation_id)"
            " SELECT ?1, app_id, event, dedupe_key, call_type, 0, ?2, ?2, " PARKED_IF_DISABLED_EXPR
            ", correlation_id"
            " FROM messages"
            " JOIN message_bodies b ON b.seq = messages.seq"
            " WHERE messages.id = ?3 AND status <> 4 AND app_deleted = 0"
            " AND length(b.body) > 0",
            &ins, err);
    if (rc == CH_OK)
        rc = prepare(db->w,
                     "INSERT INTO message_bodies(seq, body) SELECT ?1, coalesce(?2, b.body)"
                     " FROM messages m JOIN message_bodies b ON b.seq = m.seq WHERE m.id = ?3",
                     &rec, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(ins, 1, new_msg_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 2, now);
        sqlite3_bind_text(ins, 3, msg_id, -1, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE)
            rc = db_error(err, db->w, "copy message");
        else if (sqlite3_changes(db->w) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no message '%s' with a record to send again",
                              msg_id);
    }
    if (rc == CH_OK) {
        sqlite3_bind_int64(rec, 1, sqlite3_last_insert_rowid(db->w));
        if (body)
            sqlite3_bind_blob64(rec, 2, body, body_len, SQLITE_STATIC);
        sqlite3_bind_text(rec, 3, msg_id, -1, SQLITE_STATIC);
        if (sqlite3_step(rec) != SQLITE_DONE || sqlite3_changes(db->w) != 1)
            rc = db_error(err, db->w, "copy record");
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(rec);
    rc = finish(db, rc, err);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code app_recover(struct store *s, const char *app_id, int64_t since, int64_t now,
                           int64_t *requeued, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *st = NULL;
    ch_code rc =
        prepare(db->w,
                "UPDATE messages SET status = 0, next_attempt_at = ?, " PARKED_IF_DISABLED_SQL
                " WHERE app_id = ? AND created_at >= ?"
                " AND (status = 3 OR (status = 0 AND attempts > 0)) AND app_deleted = 0",
                &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_text(st, 2, app_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, since);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, db->w, "recover");
        else
            *requeued = sqlite3_changes(db->w);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code purge(struct store *s, int64_t payload_before, int64_t attempts_before_ms,
                     int64_t *payloads, int64_t *attempts, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->wlock);
    sqlite3_stmt *a = NULL, *b = NULL;
    ch_code rc = exec(db->w, "BEGIN IMMEDIATE", err);
    /* A skipped message was never delivered: its record goes after the same time. */
    if (rc == CH_OK)
        rc = prepare(db->w,
                     "UPDATE message_bodies SET body = x'' WHERE length(body) > 0 AND seq IN ("
                     " SELECT seq FROM messages WHERE (status = 2 AND delivered_at < ?1)"
                     " OR (status = 4 AND created_at < ?1))",
                     &a, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(a, 1, payload_before);
        if (sqlite3_step(a) != SQLITE_DONE)
            rc = db_error(err, db->w, "purge records");
        else
            *payloads = sqlite3_changes(db->w);
    }
    if (rc == CH_OK)
        rc = prepare(db->w, "DELETE FROM attempts WHERE at_ms < ?1", &b, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(b, 1, attempts_before_ms);
        if (sqlite3_step(b) != SQLITE_DONE)
            rc = db_error(err, db->w, "purge attempts");
        else
            *attempts = sqlite3_changes(db->w);
    }
    sqlite3_finalize(a);
    sqlite3_finalize(b);
    if (rc == CH_OK)
        rc = exec(db->w, "COMMIT", err);
    else
        exec(db->w, "ROLLBACK", NULL);
    pthread_mutex_unlock(&db->wlock);
    return rc;
}

static ch_code stats(struct store *s, struct store_stats *out, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r,
                         "SELECT status, attempts > 0, parked, count(*) FROM messages"
                         " GROUP BY 1, 2, 3",
                         &st, err);
    while (rc == CH_OK && sqlite3_step(st) == SQLITE_ROW) {
        store_stats_add(out, sqlite3_column_int(st, 0), sqlite3_column_int(st, 1) != 0,
                        sqlite3_column_int(st, 2) != 0, sqlite3_column_int64(st, 3));
    }
    sqlite3_finalize(st);
    st = NULL;
    /* A disabled app's backlog is parked: it does not age the queue of the apps that send. */
    if (rc == CH_OK)
        rc = prepare(db->r,
                     "SELECT min(created_at) FROM messages WHERE status IN (0, 1) AND parked = 0",
                     &st, err);
    if (rc == CH_OK && sqlite3_step(st) == SQLITE_ROW)
        out->oldest_pending_at = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code app_stats(struct store *s, void (*cb)(void *ctx, const struct app_stats *a),
                         void *ctx, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r, APP_STATS_SQL("m.parked", ""), &st, err);
    int step = SQLITE_DONE;
    while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct app_stats a = {.enabled = sqlite3_column_int(st, 1) != 0,
                              .counts = {.pending = sqlite3_column_int64(st, 3),
                                         .failed = sqlite3_column_int64(st, 4),
                                         .delivering = sqlite3_column_int64(st, 5),
                                         .delivered = sqlite3_column_int64(st, 6),
                                         .dead = sqlite3_column_int64(st, 7),
                                         .skipped = sqlite3_column_int64(st, 8),
                                         .parked = sqlite3_column_int64(st, 9),
                                         .oldest_pending_at = sqlite3_column_int64(st, 10)},
                              .last_error_at = sqlite3_column_int64(st, 12)};
        text_col(st, 0, a.id, sizeof a.id);
        text_col(st, 2, a.disabled_reason, sizeof a.disabled_reason);
        text_col(st, 11, a.last_error, sizeof a.last_error);
        text_col(st, 13, a.last_error_msg, sizeof a.last_error_msg);
        cb(ctx, &a);
    }
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, db->r, "app stats");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

/* ---- the console's reads ---- */

/* Per app: the waiting messages, through the two partial indexes that hold only them (the due
 * index: unparked; messages_parked: parked), the first-stored one's created_at, and the last
 * error of the rollup's rows (the row with the latest: SQLite takes a bare column from the row
 * where max() is found). ?1: one app, or NULL for all. */
static const char app_console_sql[] =
    "SELECT a.id, a.enabled, a.disabled_reason, coalesce(q.waiting, 0),"
    " coalesce((SELECT created_at FROM messages m WHERE m.seq = q.oldest), 0),"
    " e.last_error, e.at_ms, (SELECT id FROM messages m WHERE m.seq = e.last_error_seq)"
    " FROM voice_apps a"
    " LEFT JOIN (SELECT app_id, count(*) AS waiting, min(seq) AS oldest FROM ("
    "  SELECT app_id, seq FROM messages INDEXED BY messages_due"
    "  WHERE status IN (0, 1) AND parked = 0 AND (?1 IS NULL OR app_id = ?1)"
    "  UNION ALL SELECT app_id, seq FROM messages INDEXED BY messages_parked"
    "  WHERE status IN (0, 1) AND parked = 1 AND (?1 IS NULL OR app_id = ?1))"
    "  GROUP BY app_id) q ON q.app_id = a.id"
    " LEFT JOIN (SELECT app_id, last_error, max(last_error_at_ms) AS at_ms, last_error_seq"
    "  FROM app_minutes WHERE last_error_at_ms > 0 AND (?1 IS NULL OR app_id = ?1)"
    "  GROUP BY app_id) e ON e.app_id = a.id"
    " WHERE ?1 IS NULL OR a.id = ?1 ORDER BY a.id";

static ch_code app_console(struct store *s, const char *app_id,
                           void (*cb)(void *ctx, const struct app_console *a), void *ctx,
                           struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r, app_console_sql, &st, err);
    int step = SQLITE_DONE;
    if (rc == CH_OK) {
        if (app_id)
            sqlite3_bind_text(st, 1, app_id, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 1);
    }
    while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct app_console a = {.enabled = sqlite3_column_int(st, 1) != 0,
                                .waiting = sqlite3_column_int64(st, 3),
                                .oldest_waiting_at = sqlite3_column_int64(st, 4),
                                .last_error_at_ms = sqlite3_column_int64(st, 6)};
        text_col(st, 0, a.id, sizeof a.id);
        text_col(st, 2, a.disabled_reason, sizeof a.disabled_reason);
        text_col(st, 5, a.last_error, sizeof a.last_error);
        text_col(st, 7, a.last_error_msg, sizeof a.last_error_msg);
        cb(ctx, &a);
    }
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, db->r, "the console's apps");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code app_minutes(struct store *s, const char *app_id, int64_t from_minute,
                           void (*cb)(void *ctx, const char *app_id, const struct store_minute *m),
                           void *ctx, struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc =
        prepare(db->r,
                "SELECT app_id, minute, ingested, delivered, failed, dead" STORE_LATENCY_LIST
                " FROM app_minutes WHERE minute >= ?1 AND (?2 IS NULL OR app_id = ?2)",
                &st, err);
    int step = SQLITE_DONE;
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, from_minute);
        if (app_id)
            sqlite3_bind_text(st, 2, app_id, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 2);
    }
    while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_minute m = {.at = sqlite3_column_int64(st, 1),
                                 .ingested = sqlite3_column_int64(st, 2),
                                 .delivered = sqlite3_column_int64(st, 3),
                                 .failed = sqlite3_column_int64(st, 4),
                                 .dead = sqlite3_column_int64(st, 5)};
        for (int b = 0; b < STORE_LATENCY_BUCKETS; b++)
            m.latency[b] = sqlite3_column_int64(st, 6 + b);
        cb(ctx, (const char *)sqlite3_column_text(st, 0), &m);
    }
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, db->r, "the console's minutes");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

static ch_code message_body(struct store *s, const char *msg_id, struct stored_body *out,
                            struct ch_error *err)
{
    struct sqlite_store *db = self(s);
    pthread_mutex_lock(&db->rlock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(db->r,
                         "SELECT m.seq, m.id, b.body FROM messages m"
                         " LEFT JOIN message_bodies b ON b.seq = m.seq WHERE m.id = ?",
                         &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, msg_id, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW) {
            out->seq = sqlite3_column_int64(st, 0);
            text_col(st, 1, out->msg_id, sizeof out->msg_id);
            size_t len = (size_t)sqlite3_column_bytes(st, 2);
            out->body = malloc(len + 1);
            if (out->body == NULL) {
                rc = ch_error_set(err, CH_ENOMEM, "out of memory reading a record");
            } else {
                if (len > 0)
                    memcpy(out->body, sqlite3_column_blob(st, 2), len);
                ((char *)out->body)[len] = '\0';
                out->body_len = len;
            }
        } else if (step == SQLITE_DONE) {
            rc = ch_error_set(err, CH_ENOTFOUND, "no message '%s'", msg_id);
        } else {
            rc = db_error(err, db->r, "read a record");
        }
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->rlock);
    return rc;
}

/* ---- checkpoints ---- */

static void *checkpoint_main(void *arg)
{
    struct sqlite_store *db = arg;
    struct checkpointer *cp = &db->cp;
    thread_name("ch-checkpoint");
    pthread_mutex_lock(&cp->lock);
    for (;;) {
        while (!cp->due && !cp->stop)
            pthread_cond_wait(&cp->wake, &cp->lock);
        if (cp->stop)
            break;
        cp->due = false;
        pthread_mutex_unlock(&cp->lock);
        int copied = 0;
        int rc = sqlite3_wal_checkpoint_v2(cp->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, &copied);
        atomic_store(&cp->copied, copied > 0 ? copied : 0);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            log_warn("sqlite: checkpoint: %s (the writer will checkpoint itself)",
                     sqlite3_errmsg(cp->db));
        pthread_mutex_lock(&cp->lock);
    }
    pthread_mutex_unlock(&cp->lock);
    return NULL;
}

static ch_code open_conn(const char *path, sqlite3 **out, struct ch_error *err);

/* The thread starts at the first checkpoint due, so the CLI's short uses of a store never
 * start it. Called on the writer's thread, under its lock. */
static void checkpoint_soon(struct sqlite_store *db)
{
    struct checkpointer *cp = &db->cp;
    if (!cp->started) {
        if (open_conn(db->path, &cp->db, NULL) != CH_OK ||
            pthread_create(&cp->thread, NULL, checkpoint_main, db) != 0) {
            sqlite3_close(cp->db);
            cp->db = NULL;
            return; /* the writer checkpoints itself past CHECKPOINT_FRAMES_WRITER */
        }
        cp->started = true;
    }
    pthread_mutex_lock(&cp->lock);
    cp->due = true;
    pthread_cond_signal(&cp->wake);
    pthread_mutex_unlock(&cp->lock);
}

/* sqlite3_wal_hook on the writer: after each commit, with the WAL's length in frames. */
static int on_wal_commit(void *arg, sqlite3 *w, const char *name, int frames)
{
    struct sqlite_store *db = arg;
    if (frames < CHECKPOINT_FRAMES)
        return SQLITE_OK;
    if (frames >= CHECKPOINT_FRAMES_WRITER ||
        frames - atomic_load(&db->cp.copied) <= CHECKPOINT_TAIL_FRAMES) {
        sqlite3_wal_checkpoint_v2(w, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        atomic_store(&db->cp.copied, 0);
    } else {
        checkpoint_soon(db);
    }
    return SQLITE_OK;
}

static void checkpointer_stop(struct checkpointer *cp)
{
    if (cp->started) {
        pthread_mutex_lock(&cp->lock);
        cp->stop = true;
        pthread_cond_signal(&cp->wake);
        pthread_mutex_unlock(&cp->lock);
        pthread_join(cp->thread, NULL);
        cp->started = false;
    }
    sqlite3_close(cp->db);
    cp->db = NULL;
}

/* ---- opening ---- */

static void sqlite_close(struct store *s)
{
    struct sqlite_store *db = self(s);
    if (db == NULL)
        return;
    checkpointer_stop(&db->cp);
    for (int i = 0; i < STMT_COUNT_; i++)
        sqlite3_finalize(db->q[i]);
    sqlite3_close(db->r);
    sqlite3_close(db->w);
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    pthread_mutex_destroy(&db->wlock);
    pthread_mutex_destroy(&db->rlock);
    pthread_mutex_destroy(&db->cp.lock);
    pthread_cond_destroy(&db->cp.wake);
    store_rollup_release(&db->rollup);
    free(db);
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sqlite_close,
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

static ch_code open_conn(const char *path, sqlite3 **out, struct ch_error *err)
{
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, out, flags, NULL) != SQLITE_OK) {
        ch_code rc = ch_error_set(err, CH_EIO, "cannot open database '%s': %s", path,
                                  *out ? sqlite3_errmsg(*out) : "out of memory");
        sqlite3_close(*out);
        *out = NULL;
        return rc;
    }
    sqlite3_busy_timeout(*out, 10000);
    /* WAL with synchronous=FULL: a returned COMMIT is on disk, power loss included. */
    /* secure_delete: what retention removes is overwritten, not left in free pages. */
    return exec(*out, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;",
                err);
}

static ch_code migrate(sqlite3 *db, struct ch_error *err)
{
    ch_code rc = exec(db, "BEGIN IMMEDIATE", err);
    if (rc != CH_OK)
        return rc;
    sqlite3_stmt *st = NULL;
    int version = 0;
    rc = exec(db, "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)", err);
    if (rc == CH_OK)
        rc = prepare(db, "SELECT max(version) FROM schema_version", &st, err);
    if (rc == CH_OK && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc == CH_OK && version > SCHEMA_VERSION)
        rc = ch_error_set(err, CH_ESTORE,
                          "database schema version %d is newer than this callhook knows (%d): "
                          "upgrade callhook",
                          version, SCHEMA_VERSION);
    for (int v = version; rc == CH_OK && v < SCHEMA_VERSION; v++) {
        rc = exec(db, migrations[v], err);
        char sql[80];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version VALUES (%d)", v + 1);
        if (rc == CH_OK)
            rc = exec(db, sql, err);
    }
    if (rc == CH_OK)
        return exec(db, "COMMIT", err);
    exec(db, "ROLLBACK", NULL);
    return rc;
}

ch_code store_sqlite_open(const char *path, struct store **out, struct ch_error *err)
{
    if (path == NULL || *path == '\0')
        return ch_error_set(err, CH_EINVAL, "no database path (use sqlite:PATH)");
    ch_code rc = fs_make_parent_dirs(path, err);
    /* Call records and secrets: the database (and its WAL, which copies the mode) is the
     * owner's alone, created so from the start. */
    if (rc == CH_OK)
        rc = fs_private_file(path, "database", err);
    if (rc != CH_OK)
        return rc;
    struct sqlite_store *db = calloc(1, sizeof *db);
    if (db == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory opening the store");
    db->base.ops = &sqlite_ops;
    db->base.kind = "sqlite";
    db->base.schema_version = SCHEMA_VERSION;
    db->lock_fd = -1;
    snprintf(db->path, sizeof db->path, "%s", path);
    pthread_mutex_init(&db->wlock, NULL);
    pthread_mutex_init(&db->rlock, NULL);
    pthread_mutex_init(&db->cp.lock, NULL);
    pthread_cond_init(&db->cp.wake, NULL);
    rc = open_conn(path, &db->w, err);
    if (rc == CH_OK)
        rc = migrate(db->w, err);
    if (rc == CH_OK) {
        sqlite3_wal_autocheckpoint(db->w, 0);
        sqlite3_wal_hook(db->w, on_wal_commit, db);
    }
    if (rc == CH_OK)
        rc = open_conn(path, &db->r, err);
    if (rc != CH_OK) {
        sqlite_close(&db->base);
        return rc;
    }
    *out = &db->base;
    return CH_OK;
}
