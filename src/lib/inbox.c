/*
 * The receiver's inbox on SQLite: WAL with synchronous=FULL, so an event is on disk when
 * ch_inbox_add returns. Two connections, each behind a mutex (see struct ch_inbox); the
 * receiver batches its writes on both, and statements are prepared once.
 */
#include <callhook/inbox.h>

#include <sqlite3.h>

#include "lib/inbox.h"
#include "util/fs.h"
#include "util/sqlite_db.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS events ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, webhook_id TEXT NOT NULL UNIQUE,"
    "  event TEXT NOT NULL, call_key TEXT, call_type INTEGER, body BLOB NOT NULL,"
    "  received_at INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,"
    "  last_error TEXT NOT NULL DEFAULT '', processed_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_call ON events(event, call_key)"
    "  WHERE call_key IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS events_due ON events(next_at) WHERE status = 0;"
    "CREATE INDEX IF NOT EXISTS events_status ON events(status, seq);"
    /* key_window_s: how long a dedupe key outlives its event's arrival at least. */
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);";

/* Without a receiver's word: twice the default timestamp tolerance. */
#define DEFAULT_KEY_WINDOW_S (2 * 300LL)

#define ENTRY_COLUMNS                                                                      \
    "seq, webhook_id, event, call_key, call_type, status, attempts, received_at, next_at," \
    " processed_at, last_error, body"

/* The cached statements: the first ST_WORK_FIRST on `db`, the rest on `work`. */
enum stmt_id {
    ST_BEGIN = 0,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_BY_ID,
    ST_BY_CALL,
    ST_INSERT,
    ST_WORK_FIRST,
    ST_WORK_BEGIN = ST_WORK_FIRST,
    ST_WORK_COMMIT,
    ST_WORK_ROLLBACK,
    ST_TAKE,
    ST_NEXT_DUE,
    ST_FINISH,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_BY_ID] = "SELECT seq FROM events WHERE webhook_id = ?",
    [ST_BY_CALL] = "SELECT seq FROM events WHERE event = ? AND call_key = ?",
    [ST_INSERT] = "INSERT INTO events(webhook_id, event, call_key, call_type, body,"
                  " received_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    [ST_WORK_BEGIN] = "BEGIN IMMEDIATE",
    [ST_WORK_COMMIT] = "COMMIT",
    [ST_WORK_ROLLBACK] = "ROLLBACK",
    /* RETURNING gives no order: the caller sorts by seq. */
    [ST_TAKE] = "UPDATE events SET status = 1, attempts = attempts + 1 WHERE seq IN ("
                "  SELECT seq FROM events WHERE status = 0 AND next_at <= ?1"
                "  ORDER BY seq LIMIT ?2) RETURNING " ENTRY_COLUMNS,
    [ST_NEXT_DUE] = "SELECT min(next_at) FROM events WHERE status = 0",
    [ST_FINISH] = "UPDATE events SET status = ?1, next_at = ?2, processed_at = ?3,"
                  " last_error = ?5 WHERE seq = ?4",
};

/* Two connections: `db` adds events (synchronous=FULL: a 202 is on disk), `work` is for the
 * workers' bookkeeping and reads (synchronous=NORMAL: a lost "done" only means an event runs
 * again, and the next FULL commit syncs it anyway). Apart, the workers never hold up the
 * group commit. */
struct ch_inbox {
    sqlite3 *db;
    pthread_mutex_t lock;
    sqlite3 *work;
    pthread_mutex_t work_lock;
    /* Held around every write transaction of either connection: they take turns here instead
     * of meeting SQLite's lock and its busy handler, which sleeps a millisecond or more. */
    pthread_mutex_t write_lock;
    /* Frames in the WAL after the last commit (sqlite3_wal_hook), for checkpoint_if_due(). */
    atomic_int wal_frames;
    /* Statements of the hot paths, prepared once (on first use) and reset after each use; each
     * belongs to the connection named by its index and is used under that connection's lock. */
    sqlite3_stmt *cached[ST_COUNT];
};

const char *ch_inbox_status_name(enum ch_inbox_status s)
{
    switch (s) {
    case CH_INBOX_PENDING:
        return "pending";
    case CH_INBOX_RUNNING:
        return "running";
    case CH_INBOX_DONE:
        return "done";
    case CH_INBOX_FAILED:
        return "failed";
    case CH_INBOX_PURGED:
        return "purged";
    }
    return "unknown";
}

void ch_inbox_entry_release(struct ch_inbox_entry *e)
{
    if (e) {
        free(e->body);
        e->body = NULL;
    }
}

static ch_code db_error(struct ch_error *err, sqlite3 *db, const char *what)
{
    return sqldb_error(err, db, "inbox: ", what);
}

static ch_code exec(sqlite3 *db, const char *sql, struct ch_error *err)
{
    return sqldb_exec(db, sql, "inbox: ", err);
}

static ch_code prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, struct ch_error *err)
{
    return sqldb_prepare(db, sql, st, "inbox: ", err);
}

/* The cached statement id, prepared on first use; NULL (err set) if it cannot be. Call with
 * the lock of its connection held, and sqldb_done() after use. */
static sqlite3_stmt *stmt(struct ch_inbox *ib, enum stmt_id id, struct ch_error *err)
{
    sqlite3 *db = id < ST_WORK_FIRST ? ib->db : ib->work;
    return sqldb_kept(db, &ib->cached[id], stmt_sql[id], "inbox: ", err) == CH_OK ? ib->cached[id]
                                                                                  : NULL;
}

/* Runs a cached statement without parameters or rows: BEGIN, COMMIT, ROLLBACK. */
static ch_code run_simple(struct ch_inbox *ib, enum stmt_id id, struct ch_error *err)
{
    sqlite3_stmt *st = stmt(ib, id, err);
    if (st == NULL)
        return CH_ESTORE;
    int step = sqlite3_step(st);
    ch_code rc = CH_OK;
    if (step != SQLITE_DONE)
        rc = db_error(err, id < ST_WORK_FIRST ? ib->db : ib->work, stmt_sql[id]);
    sqlite3_reset(st);
    return rc;
}

/* SQLite's default: a checkpoint once the WAL holds this many frames. */
#define CHECKPOINT_FRAMES 1000

/* Past this, the adding connection checkpoints itself: nobody else is doing it (a library user
 * without workers, or workers stuck in long commands). */
#define CHECKPOINT_FRAMES_ADDER (8 * CHECKPOINT_FRAMES)

static int count_frames(void *ctx, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    struct ch_inbox *ib = ctx;
    atomic_store(&ib->wal_frames, frames);
    return SQLITE_OK;
}

/* A checkpoint once the WAL is long enough. The bulk of it is passive, while writers go on;
 * a second pass under the write lock copies what they added meanwhile, so the checkpoint is
 * complete and the next write starts the WAL over instead of growing it. Call with the
 * connection's lock held, not the write lock. */
static void checkpoint_if_due(struct ch_inbox *ib, sqlite3 *db, int frames)
{
    if (atomic_load(&ib->wal_frames) < frames)
        return;
    atomic_store(&ib->wal_frames, 0);
    sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    pthread_mutex_lock(&ib->write_lock);
    sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    pthread_mutex_unlock(&ib->write_lock);
}

ch_code ch_inbox_open(const char *path, struct ch_inbox **out, struct ch_error *err)
{
    if (path == NULL || *path == '\0')
        return ch_error_set(err, CH_EINVAL, "no inbox path given");
    ch_code rc = fs_make_parent_dirs(path, err);
    /* Personal data: the inbox (and its WAL, which copies the mode) is the owner's alone,
     * created so from the start. */
    if (rc == CH_OK)
        rc = fs_private_file(path, "inbox", err);
    if (rc != CH_OK)
        return rc;
    struct ch_inbox *ib = calloc(1, sizeof *ib);
    if (ib == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory opening the inbox");
    pthread_mutex_init(&ib->lock, NULL);
    pthread_mutex_init(&ib->work_lock, NULL);
    pthread_mutex_init(&ib->write_lock, NULL);
    if (sqlite3_open_v2(path, &ib->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        rc = ch_error_set(err, CH_EIO, "cannot open inbox '%s': %s", path,
                          ib->db ? sqlite3_errmsg(ib->db) : "out of memory");
        ch_inbox_close(ib);
        return rc;
    }
    sqlite3_busy_timeout(ib->db, 10000);
    rc = exec(ib->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", err);
    if (rc == CH_OK)
        rc = exec(ib->db, schema, err);
    if (rc == CH_OK && sqlite3_open_v2(path, &ib->work, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                                       NULL) != SQLITE_OK)
        rc = ch_error_set(err, CH_EIO, "cannot open inbox '%s' twice", path);
    if (rc == CH_OK) {
        sqlite3_busy_timeout(ib->work, 10000);
        rc = exec(ib->work, "PRAGMA synchronous=NORMAL;", err);
    }
    if (rc == CH_OK) {
        /* Checkpoints run after a commit, not inside it (checkpoint_if_due()): the work
         * connection's past CHECKPOINT_FRAMES; the adding connection, whose commits answer
         * senders, only past CHECKPOINT_FRAMES_ADDER, when nobody else is doing it. */
        sqlite3_wal_autocheckpoint(ib->db, 0);
        sqlite3_wal_autocheckpoint(ib->work, 0);
        sqlite3_wal_hook(ib->db, count_frames, ib);
        sqlite3_wal_hook(ib->work, count_frames, ib);
    }
    if (rc != CH_OK) {
        ch_inbox_close(ib);
        return rc;
    }
    *out = ib;
    return CH_OK;
}

void ch_inbox_close(struct ch_inbox *ib)
{
    if (ib == NULL)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(ib->cached[i]);
    sqlite3_close(ib->work);
    sqlite3_close(ib->db);
    pthread_mutex_destroy(&ib->lock);
    pthread_mutex_destroy(&ib->work_lock);
    pthread_mutex_destroy(&ib->write_lock);
    free(ib);
}

/* Looks up a duplicate by webhook-id, then by (event, call_key). Leaves both statements reset. */
static int find_existing(sqlite3_stmt *by_id, sqlite3_stmt *by_call, const char *webhook_id,
                         const char *event, const char *call_key, long long *seq)
{
    sqlite3_bind_text(by_id, 1, webhook_id, -1, SQLITE_STATIC);
    int step = sqlite3_step(by_id);
    if (step == SQLITE_ROW)
        *seq = sqlite3_column_int64(by_id, 0);
    sqldb_done(by_id);
    if (step != SQLITE_DONE || call_key == NULL)
        return step;
    sqlite3_bind_text(by_call, 1, event, -1, SQLITE_STATIC);
    sqlite3_bind_text(by_call, 2, call_key, -1, SQLITE_STATIC);
    step = sqlite3_step(by_call);
    if (step == SQLITE_ROW)
        *seq = sqlite3_column_int64(by_call, 0);
    sqldb_done(by_call);
    return step;
}

static ch_code add_one(struct ch_inbox *ib, sqlite3_stmt *ins, struct ch_inbox_event *e,
                       struct ch_error *err)
{
    sqlite3_bind_text(ins, 1, e->webhook_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, e->event, -1, SQLITE_STATIC);
    if (e->call_key)
        sqlite3_bind_text(ins, 3, e->call_key, -1, SQLITE_STATIC);
    if (e->has_call_type)
        sqlite3_bind_int64(ins, 4, e->call_type);
    sqlite3_bind_blob64(ins, 5, e->body ? e->body : "", e->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 6, e->received_at);
    sqlite3_bind_int64(ins, 7, e->received_at * 1000);
    ch_code rc = CH_OK;
    if (sqlite3_step(ins) != SQLITE_DONE)
        rc = db_error(err, ib->db, "store event");
    sqldb_done(ins); /* unbound parameters are NULL: call_key and call_type when absent */
    if (rc == CH_OK) {
        e->duplicate = false;
        e->seq = sqlite3_last_insert_rowid(ib->db);
    }
    return rc;
}

ch_code ch_inbox_add(struct ch_inbox *ib, struct ch_inbox_event *events, size_t n,
                     struct ch_error *err)
{
    pthread_mutex_lock(&ib->lock);
    pthread_mutex_lock(&ib->write_lock);
    sqlite3_stmt *by_id = stmt(ib, ST_BY_ID, err);
    sqlite3_stmt *by_call = by_id ? stmt(ib, ST_BY_CALL, err) : NULL;
    sqlite3_stmt *ins = by_call ? stmt(ib, ST_INSERT, err) : NULL;
    ch_code rc = ins ? run_simple(ib, ST_BEGIN, err) : CH_ESTORE;
    bool begun = rc == CH_OK;
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        struct ch_inbox_event *e = &events[i];
        long long seq = 0;
        int step = find_existing(by_id, by_call, e->webhook_id, e->event, e->call_key, &seq);
        if (step == SQLITE_ROW) {
            e->duplicate = true;
            e->seq = seq;
        } else if (step != SQLITE_DONE) {
            rc = db_error(err, ib->db, "look up duplicate");
        } else {
            rc = add_one(ib, ins, e, err);
        }
    }
    if (rc == CH_OK)
        rc = run_simple(ib, ST_COMMIT, err);
    if (rc != CH_OK) {
        if (begun)
            run_simple(ib, ST_ROLLBACK, NULL);
        rc = CH_EUNAVAILABLE; /* nothing of the batch was stored */
    }
    pthread_mutex_unlock(&ib->write_lock);
    checkpoint_if_due(ib, ib->db, CHECKPOINT_FRAMES_ADDER);
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

ch_code ch_inbox_seen(struct ch_inbox *ib, const char *webhook_id, const char *event,
                      const char *call_key, bool *seen, struct ch_error *err)
{
    pthread_mutex_lock(&ib->lock);
    sqlite3_stmt *by_id = stmt(ib, ST_BY_ID, err);
    sqlite3_stmt *by_call = by_id ? stmt(ib, ST_BY_CALL, err) : NULL;
    ch_code rc = by_call ? CH_OK : CH_ESTORE;
    if (rc == CH_OK) {
        long long seq;
        int step = find_existing(by_id, by_call, webhook_id ? webhook_id : "", event ? event : "",
                                 call_key, &seq);
        if (step == SQLITE_ROW || step == SQLITE_DONE)
            *seen = step == SQLITE_ROW;
        else
            rc = db_error(err, ib->db, "look up duplicate");
    }
    pthread_mutex_unlock(&ib->lock);
    return rc;
}

static void text_col(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static ch_code entry_row(sqlite3_stmt *st, struct ch_inbox_entry *e, bool with_body,
                         struct ch_error *err)
{
    memset(e, 0, sizeof *e);
    e->seq = sqlite3_column_int64(st, 0);
    text_col(st, 1, e->webhook_id, sizeof e->webhook_id);
    text_col(st, 2, e->event, sizeof e->event);
    text_col(st, 3, e->call_key, sizeof e->call_key);
    e->has_call_type = sqlite3_column_type(st, 4) != SQLITE_NULL;
    e->call_type = sqlite3_column_int64(st, 4);
    e->status = (enum ch_inbox_status)sqlite3_column_int(st, 5);
    e->attempts = sqlite3_column_int(st, 6);
    e->received_at = sqlite3_column_int64(st, 7);
    e->next_at = sqlite3_column_int64(st, 8);
    e->processed_at = sqlite3_column_int64(st, 9);
    text_col(st, 10, e->last_error, sizeof e->last_error);
    int len = sqlite3_column_bytes(st, 11);
    e->body_len = (size_t)len;
    if (with_body) {
        e->body = malloc((size_t)len + 1);
        if (e->body == NULL)
            return ch_error_set(err, CH_ENOMEM, "out of memory reading an inbox event");
        if (len > 0)
            memcpy(e->body, sqlite3_column_blob(st, 11), (size_t)len);
        ((char *)e->body)[len] = '\0';
    }
    return CH_OK;
}

static int by_seq(const void *a, const void *b)
{
    long long x = ((const struct ch_inbox_entry *)a)->seq;
    long long y = ((const struct ch_inbox_entry *)b)->seq;
    return (x > y) - (x < y);
}

ch_code inbox_take_many(struct ch_inbox *ib, long long now, struct ch_inbox_entry *out, size_t max,
                        size_t *n, long long *next_due, struct ch_error *err)
{
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    *n = 0;
    *next_due = 0;
    /* now and next_at are milliseconds here. */
    sqlite3_stmt *st = stmt(ib, ST_TAKE, err);
    ch_code rc = st ? run_simple(ib, ST_WORK_BEGIN, err) : CH_ESTORE;
    bool begun = rc == CH_OK;
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (long long)max);
        int step = SQLITE_DONE;
        while (rc == CH_OK && *n < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
            rc = entry_row(st, &out[*n], true, err);
            if (rc == CH_OK)
                (*n)++;
        }
        if (rc == CH_OK && *n < max && step != SQLITE_DONE)
            rc = db_error(err, ib->work, "take an event");
        sqldb_done(st);
    }
    if (rc == CH_OK)
        rc = run_simple(ib, ST_WORK_COMMIT, err);
    if (rc != CH_OK) {
        if (begun)
            run_simple(ib, ST_WORK_ROLLBACK, NULL);
        for (size_t i = 0; i < *n; i++)
            ch_inbox_entry_release(&out[i]);
        *n = 0;
    }
    pthread_mutex_unlock(&ib->write_lock);
    if (rc == CH_OK && *n == 0) {
        rc = CH_ENOTFOUND;
        st = stmt(ib, ST_NEXT_DUE, NULL);
        if (st) {
            if (sqlite3_step(st) == SQLITE_ROW)
                *next_due = sqlite3_column_int64(st, 0);
            sqlite3_reset(st);
        }
    } else if (rc == CH_OK) {
        qsort(out, *n, sizeof *out, by_seq);
    }
    pthread_mutex_unlock(&ib->work_lock);
    return rc;
}

ch_code ch_inbox_take(struct ch_inbox *ib, long long now, struct ch_inbox_entry *out,
                      long long *next_due, struct ch_error *err)
{
    size_t n;
    return inbox_take_many(ib, now, out, 1, &n, next_due, err);
}

static ch_code finish_one(struct ch_inbox *ib, sqlite3_stmt *st, const struct inbox_outcome *o,
                          long long now, struct ch_error *err)
{
    sqlite3_bind_int64(st, 1, o->status);
    sqlite3_bind_int64(st, 2, o->next_at);
    sqlite3_bind_int64(st, 3, o->status == CH_INBOX_DONE ? now : 0);
    sqlite3_bind_int64(st, 4, o->seq);
    sqlite3_bind_text(st, 5, o->error ? o->error : "", -1, SQLITE_STATIC);
    ch_code rc = CH_OK;
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(err, ib->work, "record the outcome");
    sqldb_done(st);
    return rc;
}

ch_code inbox_finish_many(struct ch_inbox *ib, const struct inbox_outcome *o, size_t n,
                          long long now, struct ch_error *err)
{
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    sqlite3_stmt *st = stmt(ib, ST_FINISH, err);
    ch_code rc = st ? CH_OK : CH_ESTORE;
    /* One outcome needs no transaction of its own: the statement is one. */
    bool batch = n > 1;
    if (rc == CH_OK && batch)
        rc = run_simple(ib, ST_WORK_BEGIN, err);
    bool begun = batch && rc == CH_OK;
    for (size_t i = 0; rc == CH_OK && i < n; i++)
        rc = finish_one(ib, st, &o[i], now, err);
    if (rc == CH_OK && batch)
        rc = run_simple(ib, ST_WORK_COMMIT, err);
    if (rc != CH_OK && begun)
        run_simple(ib, ST_WORK_ROLLBACK, NULL);
    pthread_mutex_unlock(&ib->write_lock);
    checkpoint_if_due(ib, ib->work, CHECKPOINT_FRAMES);
    pthread_mutex_unlock(&ib->work_lock);
    return rc;
}

static ch_code run_update(struct ch_inbox *ib, const char *sql, const char *what,
                          const long long *ints, int nints, const char *text, long long *changes,
                          struct ch_error *err)
{
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(ib->work, sql, &st, err);
    if (rc == CH_OK) {
        for (int i = 0; i < nints; i++)
            sqlite3_bind_int64(st, i + 1, ints[i]);
        if (text)
            sqlite3_bind_text(st, nints + 1, text, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, ib->work, what);
        else if (changes)
            *changes = sqlite3_changes(ib->work);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ib->write_lock);
    pthread_mutex_unlock(&ib->work_lock);
    return rc;
}

ch_code ch_inbox_finish(struct ch_inbox *ib, long long seq, enum ch_inbox_status status,
                        long long next_at, const char *error, long long now, struct ch_error *err)
{
    struct inbox_outcome o = {.seq = seq, .status = status, .next_at = next_at, .error = error};
    return inbox_finish_many(ib, &o, 1, now, err);
}

ch_code ch_inbox_recover(struct ch_inbox *ib, long long now, long long *requeued,
                         struct ch_error *err)
{
    long long ints[] = {now};
    return run_update(ib, "UPDATE events SET status = 0, next_at = ?1 WHERE status = 1",
                      "requeue interrupted events", ints, 1, NULL, requeued, err);
}

ch_code ch_inbox_retry(struct ch_inbox *ib, const char *webhook_id, long long now,
                       long long *requeued, struct ch_error *err)
{
    long long ints[] = {now};
    ch_code rc;
    if (webhook_id)
        rc = run_update(ib,
                        "UPDATE events SET status = 0, attempts = 0, next_at = ?1"
                        " WHERE status = 3 AND webhook_id = ?2",
                        "retry", ints, 1, webhook_id, requeued, err);
    else
        rc = run_update(ib,
                        "UPDATE events SET status = 0, attempts = 0, next_at = ?1 WHERE status = 3",
                        "retry", ints, 1, NULL, requeued, err);
    if (rc == CH_OK && webhook_id && *requeued == 0)
        rc = ch_error_set(err, CH_ENOTFOUND, "no failed event '%s' in the inbox", webhook_id);
    return rc;
}

ch_code ch_inbox_keep_keys(struct ch_inbox *ib, long long seconds, struct ch_error *err)
{
    if (seconds < 0)
        return ch_error_set(err, CH_EINVAL, "inbox: a key window cannot be negative");
    long long ints[] = {seconds};
    return run_update(ib,
                      "INSERT INTO meta(name, value) VALUES ('key_window_s', ?1)"
                      " ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
                      "record the dedupe key window", ints, 1, NULL, NULL, err);
}

/* The key window recorded by ch_inbox_keep_keys(), else the default. Work lock held. */
static long long key_window(struct ch_inbox *ib)
{
    sqlite3_stmt *st = NULL;
    long long window = DEFAULT_KEY_WINDOW_S;
    if (prepare(ib->work, "SELECT value FROM meta WHERE name = 'key_window_s'", &st, NULL) ==
            CH_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        window = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return window;
}

/* Runs sql with ?1 = a, adding the rows it changed to *changes. */
static ch_code expire_step(struct ch_inbox *ib, const char *sql, long long a, long long *changes,
                           struct ch_error *err)
{
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(ib->work, sql, &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, a);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = db_error(err, ib->work, "expire processed events");
        else
            *changes += sqlite3_changes(ib->work);
    }
    sqlite3_finalize(st);
    return rc;
}

ch_code ch_inbox_expire(struct ch_inbox *ib, long long before, long long *removed,
                        struct ch_error *err)
{
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    /* A key goes only once its signature can no longer be accepted: a replay of a captured
     * request inside the timestamp tolerance must still meet it. Younger events lose their
     * record only. */
    long long keys_before = (long long)time(NULL) - key_window(ib);
    if (keys_before > before)
        keys_before = before;
    long long n = 0;
    ch_code rc = run_simple(ib, ST_WORK_BEGIN, err);
    bool begun = rc == CH_OK;
    if (rc == CH_OK)
        rc = expire_step(ib, "DELETE FROM events WHERE status IN (2, 4) AND received_at < ?1",
                         keys_before, &n, err);
    if (rc == CH_OK)
        rc = expire_step(ib,
                         "UPDATE events SET status = 4, body = x'', last_error = ''"
                         " WHERE status = 2 AND received_at < ?1",
                         before, &n, err);
    if (rc == CH_OK)
        rc = run_simple(ib, ST_WORK_COMMIT, err);
    if (rc != CH_OK && begun)
        run_simple(ib, ST_WORK_ROLLBACK, NULL);
    pthread_mutex_unlock(&ib->write_lock);
    pthread_mutex_unlock(&ib->work_lock);
    if (rc == CH_OK && removed)
        *removed = n;
    return rc;
}

ch_code ch_inbox_list(struct ch_inbox *ib, int status, int limit,
                      void (*cb)(void *ctx, const struct ch_inbox_entry *e), void *ctx,
                      struct ch_error *err)
{
    pthread_mutex_lock(&ib->work_lock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(ib->work,
                         status < 0 ? "SELECT " ENTRY_COLUMNS " FROM events ORDER BY seq DESC"
                                      " LIMIT ?1"
                                    : "SELECT " ENTRY_COLUMNS " FROM events WHERE status = ?2"
                                      " ORDER BY seq DESC LIMIT ?1",
                         &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int(st, 1, limit);
        if (status >= 0)
            sqlite3_bind_int(st, 2, status);
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            struct ch_inbox_entry e;
            entry_row(st, &e, false, NULL);
            cb(ctx, &e);
        }
        if (step != SQLITE_DONE)
            rc = db_error(err, ib->work, "list events");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ib->work_lock);
    return rc;
}

ch_code ch_inbox_get(struct ch_inbox *ib, const char *webhook_id, struct ch_inbox_entry *out,
                     struct ch_error *err)
{
    pthread_mutex_lock(&ib->work_lock);
    sqlite3_stmt *st = NULL;
    ch_code rc =
        prepare(ib->work, "SELECT " ENTRY_COLUMNS " FROM events WHERE webhook_id = ?", &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_text(st, 1, webhook_id, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            rc = entry_row(st, out, true, err);
        else if (step == SQLITE_DONE)
            rc = ch_error_set(err, CH_ENOTFOUND, "no event '%s' in the inbox", webhook_id);
        else
            rc = db_error(err, ib->work, "read event");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ib->work_lock);
    return rc;
}

/* One number from sql (NULL counts as 0), ?1 bound to event when there is one. Work lock held. */
static ch_code stats_number(struct ch_inbox *ib, const char *sql, const char *event, long long *out,
                            struct ch_error *err)
{
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(ib->work, sql, &st, err);
    if (rc == CH_OK) {
        if (event)
            sqlite3_bind_text(st, 1, event, -1, SQLITE_STATIC);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            *out = sqlite3_column_int64(st, 0);
        else if (step == SQLITE_DONE)
            *out = 0;
        else
            rc = db_error(err, ib->work, "count events");
    }
    sqlite3_finalize(st);
    return rc;
}

ch_code ch_inbox_stats(struct ch_inbox *ib, const char *event, struct ch_inbox_stats *out,
                       struct ch_error *err)
{
    struct ch_inbox_stats s = {0};
    /* Without a kind, the counts come from the (status, seq) index alone. The done events are
     * the bulk of an inbox: the oldest times look only at unprocessed and failed ones. */
    const char *counts = event ? "SELECT status, count(*) FROM events WHERE event = ?1"
                                 " GROUP BY status"
                               : "SELECT status, count(*) FROM events GROUP BY status";
    const char *oldest_unprocessed =
        event ? "SELECT min(received_at) FROM events WHERE status IN (0, 1) AND event = ?1"
              : "SELECT min(received_at) FROM events WHERE status IN (0, 1)";
    const char *oldest_failed =
        event ? "SELECT min(received_at) FROM events WHERE status = 3 AND event = ?1"
              : "SELECT min(received_at) FROM events WHERE status = 3";
    const char *newest =
        event ? "SELECT received_at FROM events WHERE event = ?1 ORDER BY seq DESC LIMIT 1"
              : "SELECT received_at FROM events ORDER BY seq DESC LIMIT 1";
    pthread_mutex_lock(&ib->work_lock);
    ch_code rc = exec(ib->work, "BEGIN", err); /* one snapshot for every number */
    bool begun = rc == CH_OK;
    sqlite3_stmt *st = NULL;
    if (rc == CH_OK)
        rc = prepare(ib->work, counts, &st, err);
    if (rc == CH_OK) {
        if (event)
            sqlite3_bind_text(st, 1, event, -1, SQLITE_STATIC);
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            int status = sqlite3_column_int(st, 0);
            if (status >= 0 && status < CH_INBOX_STATUSES)
                s.count[status] = sqlite3_column_int64(st, 1);
        }
        if (step != SQLITE_DONE)
            rc = db_error(err, ib->work, "count events");
    }
    sqlite3_finalize(st);
    if (rc == CH_OK)
        rc = stats_number(ib, oldest_unprocessed, event, &s.oldest_unprocessed, err);
    if (rc == CH_OK)
        rc = stats_number(ib, oldest_failed, event, &s.oldest_failed, err);
    if (rc == CH_OK)
        rc = stats_number(ib, newest, event, &s.newest, err);
    if (begun)
        exec(ib->work, rc == CH_OK ? "COMMIT" : "ROLLBACK", NULL);
    pthread_mutex_unlock(&ib->work_lock);
    if (rc == CH_OK)
        *out = s;
    return rc;
}
