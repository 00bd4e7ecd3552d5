/*
 * The receiver's inbox on SQLite: WAL with synchronous=FULL, so an event is on disk when
 * ch_inbox_add returns. Two connections, each behind a mutex (see struct ch_inbox); the
 * receiver batches its writes on both, and statements are prepared once. Schema version 4:
 * events (the record, its dedupe keys and its derived status) and deliveries (one state per
 * event and sink); older versions are migrated at open (upgrade()).
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

/* Version 1: the events, with one status each. Kept as it was, so that a version 1 inbox
 * and a new one differ by the deliveries only. */
static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS events ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, webhook_id TEXT NOT NULL UNIQUE,"
    "  event TEXT NOT NULL, call_key TEXT, call_type INTEGER, body BLOB NOT NULL,"
    "  received_at INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,"
    "  last_error TEXT NOT NULL DEFAULT '', processed_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_call ON events(event, call_key)"
    "  WHERE call_key IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS events_status ON events(status, seq);"
    /* key_window_s: how long a dedupe key outlives its event's arrival at least. */
    "CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);";

/* Version 2: one delivery per (event, sink). The events' status, attempts, next_at,
 * last_error and processed_at are now derived from them (derive below), so that listing and
 * counting read the events alone. A sink takes its due deliveries through the partial index. */
static const char schema_v2[] =
    "CREATE TABLE IF NOT EXISTS deliveries ("
    "  seq INTEGER NOT NULL, sink TEXT NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,"
    "  last_error TEXT NOT NULL DEFAULT '', processed_at INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (seq, sink)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(sink, seq) WHERE status = 0;"
    /* Taking went by the events' own state in version 1. */
    "DROP INDEX IF EXISTS events_due;";

/* Version 3: the request's signature headers, so that a forward passes them on. */
static const char schema_v3[] = "ALTER TABLE events ADD COLUMN webhook_timestamp INTEGER;"
                                "ALTER TABLE events ADD COLUMN webhook_signature TEXT;";

/* Version 4: a sink takes its earliest-due deliveries first. Ordered by (sink, seq) alone, the
 * take's ORDER BY next_at, seq sorted every due delivery of the sink in a temporary b-tree at
 * each take; through (sink, next_at, seq) it reads the first rows of one range. */
static const char schema_v4[] =
    "CREATE INDEX IF NOT EXISTS deliveries_next ON deliveries(sink, next_at, seq)"
    "  WHERE status = 0;"
    "DROP INDEX IF EXISTS deliveries_due;";

/* A version 1 inbox's unprocessed and failed events, as deliveries to the implicit sink "": an
 * event a crash left running is pending again, its attempt counted. */
static const char migrate_v1_v2[] =
    "INSERT INTO deliveries(seq, sink, status, attempts, next_at, last_error, processed_at)"
    "  SELECT seq, '', CASE status WHEN 1 THEN 0 ELSE status END, attempts, next_at,"
    "  last_error, processed_at FROM events WHERE status IN (0, 1, 3);"
    "UPDATE events SET status = 0 WHERE status = 1;";

#define STRINGIFY(x) #x
#define TEXT_OF(x)   STRINGIFY(x)

/* Without a receiver's word: twice the default timestamp tolerance. */
#define DEFAULT_KEY_WINDOW_S (2 * 300LL)

#define ENTRY_COLUMNS                                                                      \
    "seq, webhook_id, event, call_key, call_type, status, attempts, received_at, next_at," \
    " processed_at, last_error, body, webhook_timestamp, webhook_signature"

/* For a delivery d of event e: the call's begin-call, if it arrived earlier (a lower seq) and
 * goes to the same sink, is done for it. Begin-calls never wait: one that arrives after its
 * end-call is not held by it. Reads the dedupe index events_call. */
#define HELD_BY_EARLIER(sink)                                                          \
    "NOT EXISTS (SELECT 1 FROM events AS p JOIN deliveries AS pd ON pd.seq = p.seq"    \
    " AND pd.sink = " sink " WHERE p.event = 'begin-call' AND p.call_key = e.call_key" \
    " AND p.seq < e.seq AND pd.status <> 2)"

/* The cached statements: the first ST_WORK_FIRST on `db`, the rest on `work`. */
enum stmt_id {
    ST_BEGIN = 0,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_BY_ID,
    ST_BY_CALL,
    ST_INSERT,
    ST_INSERT_DELIVERY,
    ST_WORK_FIRST,
    ST_WORK_BEGIN = ST_WORK_FIRST,
    ST_WORK_COMMIT,
    ST_WORK_ROLLBACK,
    ST_TAKE,
    ST_TAKE_IN_CALL_ORDER,
    ST_MARK_RUNNING,
    ST_EVENT,
    ST_NEXT_DUE,
    ST_NEXT_DUE_IN_CALL_ORDER,
    ST_FINISH,
    ST_DERIVE,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_BY_ID] = "SELECT seq FROM events WHERE webhook_id = ?",
    [ST_BY_CALL] = "SELECT seq FROM events WHERE event = ? AND call_key = ?",
    [ST_INSERT] =
        "INSERT INTO events(webhook_id, event, call_key, call_type, body,"
        " received_at, next_at, status, processed_at, webhook_timestamp, webhook_signature,"
        " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    /* Pending, or (handed to its sink in memory) running with its first attempt. */
    [ST_INSERT_DELIVERY] = "INSERT INTO deliveries(seq, sink, next_at, status, attempts)"
                           " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
    [ST_WORK_BEGIN] = "BEGIN IMMEDIATE",
    [ST_WORK_COMMIT] = "COMMIT",
    [ST_WORK_ROLLBACK] = "ROLLBACK",
    /* The earliest due first (first attempts in arrival order), through deliveries_next: the
     * deliveries waiting for a later retry are not read. Selected, then marked running one by
     * one (ST_MARK_RUNNING): an UPDATE ... IN (SELECT ...) RETURNING made SQLite build and
     * free two ephemeral tables, each with its own pager, at every take. */
    [ST_TAKE] = "SELECT seq, attempts, next_at, processed_at, last_error FROM deliveries"
                " WHERE sink = ?3 AND status = 0 AND next_at <= ?1 ORDER BY next_at, seq LIMIT ?2",
    /* As ST_TAKE, but a delivery waits while its call's earlier begin-call is not done for
     * the sink: pending, running or parked. */
    [ST_TAKE_IN_CALL_ORDER] =
        "SELECT d.seq, d.attempts, d.next_at, d.processed_at, d.last_error"
        " FROM deliveries AS d JOIN events AS e ON e.seq = d.seq"
        " WHERE d.sink = ?3 AND d.status = 0 AND d.next_at <= ?1 AND " HELD_BY_EARLIER(
            "?3") " ORDER BY d.next_at, d.seq LIMIT ?2",
    [ST_MARK_RUNNING] = "UPDATE deliveries SET status = 1, attempts = attempts + 1"
                        " WHERE seq = ?1 AND sink = ?2",
    [ST_EVENT] = "SELECT " ENTRY_COLUMNS " FROM events WHERE seq = ?1",
    [ST_NEXT_DUE] = "SELECT min(next_at) FROM deliveries WHERE sink = ?1 AND status = 0",
    /* Held deliveries are left out: they become due when their predecessor is done. */
    [ST_NEXT_DUE_IN_CALL_ORDER] =
        "SELECT min(d.next_at) FROM deliveries AS d JOIN events AS e ON e.seq = d.seq"
        " WHERE d.sink = ?1 AND d.status = 0 AND " HELD_BY_EARLIER("?1"),
    [ST_FINISH] = "UPDATE deliveries SET status = ?1, next_at = ?2, processed_at = ?3,"
                  " last_error = ?5, attempts = max(attempts - ?6, 0) WHERE seq = ?4 AND sink = ?7",
    /* An event's state from its deliveries (enum ch_inbox_status): failed over running over
     * pending over done; the most attempts; the earliest retry; the error of a failed, else of
     * a waiting delivery (a done one has none). A purged event has no deliveries left. */
    [ST_DERIVE] =
        /* One row value from one aggregate over the event's deliveries: no FROM subquery (it
         * made SQLite build, and free, an ephemeral table and its pager at every call), no
         * ORDER BY (a sorter): the error is a failed delivery's, else a waiting one's, else
         * any. */
    "UPDATE events SET (status, attempts, next_at, last_error, processed_at) = ("
    " SELECT st, att, nxt, err, CASE WHEN st <> 2 THEN 0 WHEN proc > 0 THEN proc ELSE ?2 END"
    " FROM (SELECT CASE WHEN max(status = 3) THEN 3 WHEN max(status = 1) THEN 1"
    "  WHEN max(status = 0) THEN 0 ELSE 2 END AS st, coalesce(max(attempts), 0) AS att,"
    "  coalesce(min(CASE WHEN status = 0 THEN next_at END), 0) AS nxt,"
    "  coalesce(max(processed_at), 0) AS proc,"
    "  coalesce(max(CASE WHEN status = 3 AND last_error <> '' THEN last_error END),"
    "   max(CASE WHEN status = 0 AND last_error <> '' THEN last_error END),"
    "   max(CASE WHEN last_error <> '' THEN last_error END), '') AS err"
    "  FROM deliveries WHERE seq = ?1))"
    " WHERE seq = ?1 AND status <> 4",
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
        e->webhook_signature = NULL;
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

/* PRAGMA user_version: 0 for a new file and for version 1 (which did not set it). */
static int schema_version(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (prepare(db, "PRAGMA user_version", &st, NULL) == CH_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Whether the file holds version 1's events table (a user_version of 0 with it is version 1). */
static bool has_events_table(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    bool yes = false;
    if (prepare(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'", &st,
                NULL) == CH_OK)
        yes = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return yes;
}

/* Brings the file to CH_INBOX_SCHEMA_VERSION: creates a new one, migrates a version 1 one. One
 * write transaction, the version read again inside it, so that two processes opening one old
 * inbox at once (the receiver and `callhook inbox`) migrate it once. */
static ch_code upgrade(sqlite3 *db, const char *path, struct ch_error *err)
{
    if (schema_version(db) == CH_INBOX_SCHEMA_VERSION)
        return CH_OK;
    ch_code rc = exec(db, "BEGIN IMMEDIATE", err);
    if (rc != CH_OK)
        return rc;
    int v = schema_version(db);
    if (v < 0 || v > CH_INBOX_SCHEMA_VERSION) {
        exec(db, "ROLLBACK", NULL);
        return ch_error_set(err, CH_ESTORE,
                            "inbox '%s' has schema version %d; this callhook knows %d at most "
                            "(a newer callhook wrote it)",
                            path, v, CH_INBOX_SCHEMA_VERSION);
    }
    if (v == CH_INBOX_SCHEMA_VERSION)
        return exec(db, "COMMIT", err);
    bool from_v1 = has_events_table(db);
    rc = exec(db, schema_v1, err);
    if (rc == CH_OK)
        rc = exec(db, schema_v2, err);
    if (rc == CH_OK && from_v1)
        rc = exec(db, migrate_v1_v2, err);
    if (rc == CH_OK && v < 3) /* 0: a new file or version 1 */
        rc = exec(db, schema_v3, err);
    if (rc == CH_OK && v < 4)
        rc = exec(db, schema_v4, err);
    if (rc == CH_OK)
        rc = exec(db, "PRAGMA user_version = " TEXT_OF(CH_INBOX_SCHEMA_VERSION), err);
    if (rc == CH_OK)
        rc = exec(db, "COMMIT", err);
    if (rc != CH_OK) {
        exec(db, "ROLLBACK", NULL);
        return rc;
    }
    return CH_OK;
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
        rc = upgrade(ib->db, path, err);
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

/* Stores one new event and its deliveries, each due at its arrival, or running with its first
 * attempt where handed (NULL: none) says so. The event's derived state is set as derive()
 * would set it. */
static ch_code add_one(struct ch_inbox *ib, sqlite3_stmt *ins, sqlite3_stmt *ins_delivery,
                       struct ch_inbox_event *e, const struct ch_inbox_sinks *sinks,
                       const bool *handed, struct ch_error *err)
{
    size_t nsinks = sinks ? sinks->n : 0;
    size_t nhanded = 0;
    for (size_t k = 0; handed && k < nsinks; k++)
        nhanded += handed[k];
    enum ch_inbox_status status = nsinks == 0 ? CH_INBOX_DONE
                                  : nhanded   ? CH_INBOX_RUNNING
                                              : CH_INBOX_PENDING;
    sqlite3_bind_text(ins, 1, e->webhook_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, e->event, -1, SQLITE_STATIC);
    if (e->call_key)
        sqlite3_bind_text(ins, 3, e->call_key, -1, SQLITE_STATIC);
    if (e->has_call_type)
        sqlite3_bind_int64(ins, 4, e->call_type);
    sqlite3_bind_blob64(ins, 5, e->body ? e->body : "", e->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 6, e->received_at);
    /* The earliest retry: none when no delivery waits. */
    sqlite3_bind_int64(ins, 7, nhanded < nsinks ? e->received_at * 1000 : 0);
    /* Going nowhere, it is processed as soon as it is stored. */
    sqlite3_bind_int(ins, 8, status);
    sqlite3_bind_int64(ins, 9, nsinks ? 0 : e->received_at);
    if (e->webhook_timestamp)
        sqlite3_bind_int64(ins, 10, e->webhook_timestamp);
    if (e->webhook_signature)
        sqlite3_bind_text(ins, 11, e->webhook_signature, -1, SQLITE_STATIC);
    sqlite3_bind_int(ins, 12, nhanded ? 1 : 0);
    ch_code rc = CH_OK;
    if (sqlite3_step(ins) != SQLITE_DONE)
        rc = db_error(err, ib->db, "store event");
    sqldb_done(ins); /* unbound parameters are NULL: call_key, call_type, ... when absent */
    if (rc != CH_OK)
        return rc;
    long long seq = sqlite3_last_insert_rowid(ib->db);
    for (size_t k = 0; rc == CH_OK && k < nsinks; k++) {
        sqlite3_bind_int64(ins_delivery, 1, seq);
        sqlite3_bind_text(ins_delivery, 2, sinks->names[k], -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins_delivery, 3, e->received_at * 1000);
        bool taken = handed && handed[k];
        sqlite3_bind_int(ins_delivery, 4, taken ? CH_INBOX_RUNNING : CH_INBOX_PENDING);
        sqlite3_bind_int(ins_delivery, 5, taken ? 1 : 0);
        if (sqlite3_step(ins_delivery) != SQLITE_DONE)
            rc = db_error(err, ib->db, "store a delivery");
        sqldb_done(ins_delivery);
    }
    if (rc == CH_OK) {
        e->duplicate = false;
        e->seq = seq;
    }
    return rc;
}

/* Whether every sink name fits. */
static ch_code check_sinks(const struct ch_inbox_sinks *sinks, size_t n, struct ch_error *err)
{
    for (size_t i = 0; sinks && i < n; i++) {
        for (size_t k = 0; k < sinks[i].n; k++) {
            if (sinks[i].names[k] == NULL || strlen(sinks[i].names[k]) >= CH_INBOX_SINK_MAX)
                return ch_error_set(err, CH_EINVAL,
                                    "inbox: a sink name is missing or longer "
                                    "than %d bytes",
                                    CH_INBOX_SINK_MAX - 1);
        }
    }
    return CH_OK;
}

/* sinks NULL: every event to the implicit sink "". handed NULL: no delivery handed. */
static ch_code add_events(struct ch_inbox *ib, struct ch_inbox_event *events,
                          const struct ch_inbox_sinks *sinks, const bool *const *handed, size_t n,
                          struct ch_error *err)
{
    static const char *const implicit_name[] = {""};
    static const struct ch_inbox_sinks implicit = {implicit_name, 1};
    ch_code rc = check_sinks(sinks, n, err);
    if (rc != CH_OK)
        return rc;
    pthread_mutex_lock(&ib->lock);
    pthread_mutex_lock(&ib->write_lock);
    sqlite3_stmt *by_id = stmt(ib, ST_BY_ID, err);
    sqlite3_stmt *by_call = by_id ? stmt(ib, ST_BY_CALL, err) : NULL;
    sqlite3_stmt *ins = by_call ? stmt(ib, ST_INSERT, err) : NULL;
    sqlite3_stmt *ins_delivery = ins ? stmt(ib, ST_INSERT_DELIVERY, err) : NULL;
    rc = ins_delivery ? run_simple(ib, ST_BEGIN, err) : CH_ESTORE;
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
            rc = add_one(ib, ins, ins_delivery, e, sinks ? &sinks[i] : &implicit,
                         handed ? handed[i] : NULL, err);
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

ch_code ch_inbox_add(struct ch_inbox *ib, struct ch_inbox_event *events, size_t n,
                     struct ch_error *err)
{
    return add_events(ib, events, NULL, NULL, n, err);
}

ch_code ch_inbox_add_routed(struct ch_inbox *ib, struct ch_inbox_event *events,
                            const struct ch_inbox_sinks *sinks, size_t n, struct ch_error *err)
{
    if (sinks == NULL && n > 0)
        return ch_error_set(err, CH_EINVAL, "inbox: no sinks given");
    return add_events(ib, events, sinks, NULL, n, err);
}

ch_code inbox_add_handed(struct ch_inbox *ib, struct ch_inbox_event *events,
                         const struct ch_inbox_sinks *sinks, const bool *const *handed, size_t n,
                         struct ch_error *err)
{
    if (sinks == NULL && n > 0)
        return ch_error_set(err, CH_EINVAL, "inbox: no sinks given");
    return add_events(ib, events, sinks, handed, n, err);
}

ch_code inbox_entry_of(const struct ch_inbox_event *e, struct ch_inbox_entry *out,
                       struct ch_error *err)
{
    memset(out, 0, sizeof *out);
    out->seq = e->seq;
    snprintf(out->webhook_id, sizeof out->webhook_id, "%s", e->webhook_id);
    snprintf(out->event, sizeof out->event, "%s", e->event);
    snprintf(out->call_key, sizeof out->call_key, "%s", e->call_key ? e->call_key : "");
    out->has_call_type = e->has_call_type;
    out->call_type = e->has_call_type ? e->call_type : 0;
    out->status = CH_INBOX_RUNNING;
    out->attempts = 1;
    out->received_at = e->received_at;
    out->next_at = e->received_at * 1000;
    out->webhook_timestamp = e->webhook_timestamp;
    /* As entry_row() lays it out: the body, its terminator, the signature and its own. */
    size_t sig_len = e->webhook_signature ? strlen(e->webhook_signature) : 0;
    char *body = malloc(e->body_len + 1 + (e->webhook_signature ? sig_len + 1 : 0));
    if (body == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory handing an event over");
    if (e->body_len > 0)
        memcpy(body, e->body, e->body_len);
    body[e->body_len] = '\0';
    if (e->webhook_signature) {
        memcpy(body + e->body_len + 1, e->webhook_signature, sig_len + 1);
        out->webhook_signature = body + e->body_len + 1;
    }
    out->body = body;
    out->body_len = e->body_len;
    return CH_OK;
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
    e->webhook_timestamp = sqlite3_column_int64(st, 12);
    if (with_body) {
        /* The signature after the body's terminator, in the same allocation. */
        const unsigned char *sig = sqlite3_column_text(st, 13);
        size_t sig_len = sig ? (size_t)sqlite3_column_bytes(st, 13) : 0;
        e->body = malloc((size_t)len + 1 + (sig ? sig_len + 1 : 0));
        if (e->body == NULL)
            return ch_error_set(err, CH_ENOMEM, "out of memory reading an inbox event");
        if (len > 0)
            memcpy(e->body, sqlite3_column_blob(st, 11), (size_t)len);
        ((char *)e->body)[len] = '\0';
        if (sig) {
            char *to = (char *)e->body + len + 1;
            memcpy(to, sig, sig_len);
            to[sig_len] = '\0';
            e->webhook_signature = to;
        }
    }
    return CH_OK;
}

static int by_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static int by_seq(const void *a, const void *b)
{
    long long x = ((const struct ch_inbox_entry *)a)->seq;
    long long y = ((const struct ch_inbox_entry *)b)->seq;
    return (x > y) - (x < y);
}

/* Sets the event seq's derived state from its deliveries (ST_DERIVE); now is unix seconds.
 * Work lock and write lock held, inside the caller's transaction. */
static ch_code derive(struct ch_inbox *ib, long long seq, long long now, struct ch_error *err)
{
    sqlite3_stmt *st = stmt(ib, ST_DERIVE, err);
    if (st == NULL)
        return CH_ESTORE;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int64(st, 2, now);
    ch_code rc = CH_OK;
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(err, ib->work, "derive an event's status");
    sqldb_done(st);
    return rc;
}

/* A taken delivery's columns, as they are once it is marked running. */
struct taken {
    long long seq;
    enum ch_inbox_status status;
    int attempts;
    long long next_at, processed_at;
    char last_error[512];
};

/* Reads the event of a taken delivery into out, with the delivery's state. */
static ch_code read_taken(struct ch_inbox *ib, const struct taken *t, struct ch_inbox_entry *out,
                          struct ch_error *err)
{
    sqlite3_stmt *st = stmt(ib, ST_EVENT, err);
    if (st == NULL)
        return CH_ESTORE;
    sqlite3_bind_int64(st, 1, t->seq);
    int step = sqlite3_step(st);
    ch_code rc;
    if (step == SQLITE_ROW)
        rc = entry_row(st, out, true, err);
    else if (step == SQLITE_DONE)
        rc = ch_error_set(err, CH_ESTORE, "inbox: a delivery of event %lld, which is gone", t->seq);
    else
        rc = db_error(err, ib->work, "read a taken event");
    sqldb_done(st);
    if (rc == CH_OK) {
        out->status = t->status;
        out->attempts = t->attempts;
        out->next_at = t->next_at;
        out->processed_at = t->processed_at;
        snprintf(out->last_error, sizeof out->last_error, "%s", t->last_error);
    }
    return rc;
}

const char *inbox_take_sql(bool in_order)
{
    return stmt_sql[in_order ? ST_TAKE_IN_CALL_ORDER : ST_TAKE];
}

ch_code ch_inbox_take_sink(struct ch_inbox *ib, const char *sink, long long now,
                           struct ch_inbox_entry *out, size_t max, size_t *n, long long *next_due,
                           struct ch_error *err)
{
    return ch_inbox_take_sink_flags(ib, sink, now, 0, out, max, n, next_due, err);
}

ch_code ch_inbox_take_sink_flags(struct ch_inbox *ib, const char *sink, long long now,
                                 unsigned flags, struct ch_inbox_entry *out, size_t max, size_t *n,
                                 long long *next_due, struct ch_error *err)
{
    *n = 0;
    *next_due = 0;
    if (sink == NULL)
        return ch_error_set(err, CH_EINVAL, "inbox: no sink named");
    if ((flags & ~CH_INBOX_TAKE_CALL_ORDER) != 0)
        return ch_error_set(err, CH_EINVAL, "inbox: unknown take flags 0x%x", flags);
    if (max == 0)
        return CH_ENOTFOUND;
    bool in_order = (flags & CH_INBOX_TAKE_CALL_ORDER) != 0;
    struct taken *t = calloc(max, sizeof *t);
    if (t == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory taking events");
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    size_t nt = 0;
    /* now and next_at are milliseconds here. */
    sqlite3_stmt *st = stmt(ib, in_order ? ST_TAKE_IN_CALL_ORDER : ST_TAKE, err);
    ch_code rc = st ? run_simple(ib, ST_WORK_BEGIN, err) : CH_ESTORE;
    bool begun = rc == CH_OK;
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (long long)max);
        sqlite3_bind_text(st, 3, sink, -1, SQLITE_STATIC);
        int step = SQLITE_DONE;
        while (nt < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
            t[nt].seq = sqlite3_column_int64(st, 0);
            t[nt].status = CH_INBOX_RUNNING;
            t[nt].attempts = sqlite3_column_int(st, 1) + 1;
            t[nt].next_at = sqlite3_column_int64(st, 2);
            t[nt].processed_at = sqlite3_column_int64(st, 3);
            text_col(st, 4, t[nt].last_error, sizeof t[nt].last_error);
            nt++;
        }
        if (nt < max && step != SQLITE_DONE)
            rc = db_error(err, ib->work, "take an event");
        sqldb_done(st);
    }
    sqlite3_stmt *mark = rc == CH_OK ? stmt(ib, ST_MARK_RUNNING, err) : NULL;
    if (rc == CH_OK && mark == NULL)
        rc = CH_ESTORE;
    for (size_t i = 0; rc == CH_OK && i < nt; i++) {
        sqlite3_bind_int64(mark, 1, t[i].seq);
        sqlite3_bind_text(mark, 2, sink, -1, SQLITE_STATIC);
        if (sqlite3_step(mark) != SQLITE_DONE)
            rc = db_error(err, ib->work, "take an event");
        sqldb_done(mark);
    }
    long long now_s = now / 1000;
    for (size_t i = 0; rc == CH_OK && i < nt; i++) {
        rc = read_taken(ib, &t[i], &out[i], err);
        if (rc == CH_OK)
            (*n)++;
        if (rc == CH_OK)
            rc = derive(ib, t[i].seq, now_s, err);
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
        st = stmt(ib, in_order ? ST_NEXT_DUE_IN_CALL_ORDER : ST_NEXT_DUE, NULL);
        if (st) {
            sqlite3_bind_text(st, 1, sink, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW)
                *next_due = sqlite3_column_int64(st, 0);
            sqldb_done(st);
        }
    } else if (rc == CH_OK) {
        qsort(out, *n, sizeof *out, by_seq);
    }
    pthread_mutex_unlock(&ib->work_lock);
    free(t);
    return rc;
}

ch_code inbox_take_many(struct ch_inbox *ib, long long now, struct ch_inbox_entry *out, size_t max,
                        size_t *n, long long *next_due, struct ch_error *err)
{
    return ch_inbox_take_sink(ib, "", now, out, max, n, next_due, err);
}

ch_code ch_inbox_take(struct ch_inbox *ib, long long now, struct ch_inbox_entry *out,
                      long long *next_due, struct ch_error *err)
{
    size_t n;
    return ch_inbox_take_sink(ib, "", now, out, 1, &n, next_due, err);
}

static ch_code finish_one(struct ch_inbox *ib, sqlite3_stmt *st, const char *sink,
                          const struct ch_inbox_outcome *o, long long now, struct ch_error *err)
{
    sqlite3_bind_int64(st, 1, o->status);
    sqlite3_bind_int64(st, 2, o->next_at_ms);
    sqlite3_bind_int64(st, 3, o->status == CH_INBOX_DONE ? now : 0);
    sqlite3_bind_int64(st, 4, o->seq);
    sqlite3_bind_text(st, 5, o->error ? o->error : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, o->status == CH_INBOX_PENDING && o->not_attempted ? 1 : 0);
    sqlite3_bind_text(st, 7, sink, -1, SQLITE_STATIC);
    ch_code rc = CH_OK;
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(err, ib->work, "record the outcome");
    sqldb_done(st);
    return rc == CH_OK ? derive(ib, o->seq, now, err) : rc;
}

ch_code ch_inbox_finish_sink(struct ch_inbox *ib, const char *sink,
                             const struct ch_inbox_outcome *o, size_t n, long long now,
                             struct ch_error *err)
{
    if (sink == NULL)
        return ch_error_set(err, CH_EINVAL, "inbox: no sink named");
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    sqlite3_stmt *st = stmt(ib, ST_FINISH, err);
    ch_code rc = st ? run_simple(ib, ST_WORK_BEGIN, err) : CH_ESTORE;
    bool begun = rc == CH_OK;
    for (size_t i = 0; rc == CH_OK && i < n; i++)
        rc = finish_one(ib, st, sink, &o[i], now, err);
    if (rc == CH_OK)
        rc = run_simple(ib, ST_WORK_COMMIT, err);
    if (rc != CH_OK && begun)
        run_simple(ib, ST_WORK_ROLLBACK, NULL);
    pthread_mutex_unlock(&ib->write_lock);
    checkpoint_if_due(ib, ib->work, CHECKPOINT_FRAMES);
    pthread_mutex_unlock(&ib->work_lock);
    return rc;
}

/* The implicit sink's outcomes, in the internal form the receiver's old callers use. */
#define FINISH_CHUNK 64

ch_code inbox_finish_many(struct ch_inbox *ib, const struct inbox_outcome *o, size_t n,
                          long long now, struct ch_error *err)
{
    if (n > FINISH_CHUNK)
        return ch_error_set(err, CH_EINVAL, "inbox: at most %d outcomes at once", FINISH_CHUNK);
    struct ch_inbox_outcome out[FINISH_CHUNK];
    for (size_t i = 0; i < n; i++)
        out[i] = (struct ch_inbox_outcome){.seq = o[i].seq,
                                           .status = o[i].status,
                                           .next_at_ms = o[i].next_at,
                                           .error = o[i].error};
    return ch_inbox_finish_sink(ib, "", out, n, now, err);
}

ch_code ch_inbox_finish(struct ch_inbox *ib, long long seq, enum ch_inbox_status status,
                        long long next_at, const char *error, long long now, struct ch_error *err)
{
    struct ch_inbox_outcome o = {
        .seq = seq, .status = status, .next_at_ms = next_at, .error = error};
    return ch_inbox_finish_sink(ib, "", &o, 1, now, err);
}

/* Runs an UPDATE of deliveries whose RETURNING gives the seq of each row changed, then derives
 * those events' state; one transaction. ints bind ?1.., then the texts (NULL ones as NULL).
 * *deliveries counts the rows, *events the distinct events. */
static ch_code update_deliveries(struct ch_inbox *ib, const char *sql, const char *what,
                                 const long long *ints, int nints, const char *const *texts,
                                 int ntexts, long long now_s, long long *events,
                                 long long *deliveries, struct ch_error *err)
{
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    long long *seqs = NULL;
    size_t nseqs = 0, cap = 0;
    sqlite3_stmt *st = NULL;
    ch_code rc = run_simple(ib, ST_WORK_BEGIN, err);
    bool begun = rc == CH_OK;
    if (rc == CH_OK)
        rc = prepare(ib->work, sql, &st, err);
    if (rc == CH_OK) {
        for (int i = 0; i < nints; i++)
            sqlite3_bind_int64(st, i + 1, ints[i]);
        for (int i = 0; i < ntexts; i++) {
            if (texts[i])
                sqlite3_bind_text(st, nints + i + 1, texts[i], -1, SQLITE_STATIC);
        }
        int step;
        while (rc == CH_OK && (step = sqlite3_step(st)) == SQLITE_ROW) {
            if (nseqs == cap) {
                size_t grown = cap ? cap * 2 : 64;
                long long *more = realloc(seqs, grown * sizeof *seqs);
                if (more == NULL) {
                    rc = ch_error_set(err, CH_ENOMEM, "out of memory: %s", what);
                    break;
                }
                seqs = more;
                cap = grown;
            }
            seqs[nseqs++] = sqlite3_column_int64(st, 0);
        }
        if (rc == CH_OK && step != SQLITE_DONE)
            rc = db_error(err, ib->work, what);
    }
    sqlite3_finalize(st);
    if (rc == CH_OK && nseqs > 1)
        qsort(seqs, nseqs, sizeof *seqs, by_ll);
    long long distinct = 0;
    for (size_t i = 0; rc == CH_OK && i < nseqs; i++) {
        if (i > 0 && seqs[i] == seqs[i - 1])
            continue;
        distinct++;
        rc = derive(ib, seqs[i], now_s, err);
    }
    if (rc == CH_OK)
        rc = run_simple(ib, ST_WORK_COMMIT, err);
    if (rc != CH_OK && begun)
        run_simple(ib, ST_WORK_ROLLBACK, NULL);
    pthread_mutex_unlock(&ib->write_lock);
    pthread_mutex_unlock(&ib->work_lock);
    free(seqs);
    if (rc == CH_OK) {
        if (events)
            *events = distinct;
        if (deliveries)
            *deliveries = (long long)nseqs;
    }
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

ch_code ch_inbox_recover(struct ch_inbox *ib, long long now, long long *requeued,
                         struct ch_error *err)
{
    long long ints[] = {now};
    return update_deliveries(ib,
                             "UPDATE deliveries SET status = 0, next_at = ?1 WHERE status = 1"
                             " RETURNING seq",
                             "requeue interrupted deliveries", ints, 1, NULL, 0, now / 1000, NULL,
                             requeued, err);
}

/* Whether the event webhook_id is in the inbox (for a clear "not found"). */
static bool event_known(struct ch_inbox *ib, const char *webhook_id)
{
    bool seen = false;
    return ch_inbox_seen(ib, webhook_id, "", NULL, &seen, NULL) == CH_OK && seen;
}

ch_code ch_inbox_retry_sink(struct ch_inbox *ib, const char *webhook_id, const char *sink,
                            long long now, long long *events, long long *deliveries,
                            struct ch_error *err)
{
    long long ints[] = {now};
    const char *texts[] = {webhook_id, sink};
    long long nev = 0, ndel = 0;
    ch_code rc = update_deliveries(
        ib,
        "UPDATE deliveries SET status = 0, attempts = 0, next_at = ?1 WHERE status = 3"
        " AND (?2 IS NULL OR seq = (SELECT seq FROM events WHERE webhook_id = ?2))"
        " AND (?3 IS NULL OR sink = ?3) RETURNING seq",
        "retry", ints, 1, texts, 2, now / 1000, &nev, &ndel, err);
    if (rc == CH_OK && webhook_id && nev == 0) {
        if (!event_known(ib, webhook_id))
            rc = ch_error_set(err, CH_ENOTFOUND, "no event '%s' in the inbox", webhook_id);
        else if (sink)
            rc = ch_error_set(err, CH_ENOTFOUND, "event '%s' has no failed delivery to '%s'",
                              webhook_id, sink);
        else
            rc = ch_error_set(err, CH_ENOTFOUND, "no failed event '%s' in the inbox", webhook_id);
    }
    if (rc == CH_OK) {
        if (events)
            *events = nev;
        if (deliveries)
            *deliveries = ndel;
    }
    return rc;
}

ch_code ch_inbox_retry(struct ch_inbox *ib, const char *webhook_id, long long now,
                       long long *requeued, struct ch_error *err)
{
    return ch_inbox_retry_sink(ib, webhook_id, NULL, now, requeued, NULL, err);
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
    /* Done events only (every sink done): their deliveries go with their records. */
    long long ignored = 0;
    if (rc == CH_OK)
        rc = expire_step(ib,
                         "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM events"
                         " WHERE status = 2 AND received_at < ?1)",
                         before, &ignored, err);
    if (rc == CH_OK)
        rc = expire_step(ib, "DELETE FROM events WHERE status IN (2, 4) AND received_at < ?1",
                         keys_before, &n, err);
    if (rc == CH_OK)
        rc = expire_step(
            ib,
            "UPDATE events SET status = 4, body = x'', webhook_signature = NULL, last_error = ''"
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

ch_code ch_inbox_deliveries(struct ch_inbox *ib, long long seq,
                            void (*cb)(void *ctx, const struct ch_inbox_delivery *d), void *ctx,
                            struct ch_error *err)
{
    struct ch_inbox_delivery *d = malloc(sizeof *d);
    if (d == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory reading deliveries");
    pthread_mutex_lock(&ib->work_lock);
    sqlite3_stmt *st = NULL;
    ch_code rc = prepare(ib->work,
                         "SELECT sink, status, attempts, next_at, processed_at, last_error"
                         " FROM deliveries WHERE seq = ?1 ORDER BY sink",
                         &st, err);
    if (rc == CH_OK) {
        sqlite3_bind_int64(st, 1, seq);
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            memset(d, 0, sizeof *d);
            text_col(st, 0, d->sink, sizeof d->sink);
            d->status = (enum ch_inbox_status)sqlite3_column_int(st, 1);
            d->attempts = sqlite3_column_int(st, 2);
            d->next_at = sqlite3_column_int64(st, 3);
            d->processed_at = sqlite3_column_int64(st, 4);
            text_col(st, 5, d->last_error, sizeof d->last_error);
            cb(ctx, d);
        }
        if (step != SQLITE_DONE)
            rc = db_error(err, ib->work, "list deliveries");
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&ib->work_lock);
    free(d);
    return rc;
}

/* Most sinks one event is moved to by inbox_reassign(). */
#define REASSIGN_MAX_SINKS 64

ch_code inbox_reassign(struct ch_inbox *ib, const char *from, inbox_route_cb route, void *ctx,
                       long long *moved, struct ch_error *err)
{
    *moved = 0;
    pthread_mutex_lock(&ib->work_lock);
    pthread_mutex_lock(&ib->write_lock);
    sqlite3_stmt *sel = NULL, *ins = NULL, *del = NULL;
    ch_code rc = run_simple(ib, ST_WORK_BEGIN, err);
    bool begun = rc == CH_OK;
    if (rc == CH_OK)
        rc = prepare(
            ib->work,
            "SELECT e.seq, e.webhook_id, e.event, e.call_key, e.call_type, d.status,"
            " d.attempts, e.received_at, d.next_at, d.processed_at, d.last_error, x'', NULL, NULL"
            " FROM deliveries d JOIN events e ON e.seq = d.seq"
            " WHERE d.sink = ?1 AND d.status <> 2 ORDER BY e.seq",
            &sel, err);
    if (rc == CH_OK)
        rc = prepare(ib->work,
                     "INSERT INTO deliveries(seq, sink, status, attempts, next_at, last_error)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                     &ins, err);
    if (rc == CH_OK)
        rc = prepare(ib->work, "DELETE FROM deliveries WHERE seq = ?1 AND sink = ?2", &del, err);
    long long now_s = (long long)time(NULL);
    int step = SQLITE_DONE;
    struct ch_inbox_entry e;
    /* Rows are read one at a time while others change: the select ran first over what it
     * matches, and the new rows are of other sinks, so none is read twice. */
    while (rc == CH_OK) {
        sqlite3_bind_text(sel, 1, from, -1, SQLITE_STATIC);
        step = sqlite3_step(sel);
        if (step != SQLITE_ROW)
            break;
        entry_row(sel, &e, false, NULL);
        sqlite3_reset(sel); /* the delivery goes below: the next step finds the next one */
        const char *names[REASSIGN_MAX_SINKS];
        size_t n = route(ctx, &e, names, REASSIGN_MAX_SINKS);
        for (size_t k = 0; rc == CH_OK && k < n; k++) {
            if (strcmp(names[k], from) == 0)
                continue;
            sqlite3_bind_int64(ins, 1, e.seq);
            sqlite3_bind_text(ins, 2, names[k], -1, SQLITE_STATIC);
            /* A delivery left running is pending again (ch_inbox_recover runs before). */
            sqlite3_bind_int(ins, 3, e.status == CH_INBOX_RUNNING ? CH_INBOX_PENDING : e.status);
            sqlite3_bind_int(ins, 4, e.attempts);
            sqlite3_bind_int64(ins, 5, e.next_at);
            sqlite3_bind_text(ins, 6, e.last_error, -1, SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE)
                rc = db_error(err, ib->work, "move a delivery");
            sqldb_done(ins);
        }
        if (rc == CH_OK) {
            sqlite3_bind_int64(del, 1, e.seq);
            sqlite3_bind_text(del, 2, from, -1, SQLITE_STATIC);
            if (sqlite3_step(del) != SQLITE_DONE)
                rc = db_error(err, ib->work, "move a delivery");
            sqldb_done(del);
        }
        if (rc == CH_OK)
            rc = derive(ib, e.seq, now_s, err);
        if (rc == CH_OK)
            (*moved)++;
    }
    if (rc == CH_OK && step != SQLITE_DONE)
        rc = db_error(err, ib->work, "read the deliveries to move");
    sqlite3_finalize(sel);
    sqlite3_finalize(ins);
    sqlite3_finalize(del);
    if (rc == CH_OK)
        rc = run_simple(ib, ST_WORK_COMMIT, err);
    if (rc != CH_OK && begun)
        run_simple(ib, ST_WORK_ROLLBACK, NULL);
    pthread_mutex_unlock(&ib->write_lock);
    pthread_mutex_unlock(&ib->work_lock);
    if (rc != CH_OK)
        *moved = 0;
    return rc;
}
