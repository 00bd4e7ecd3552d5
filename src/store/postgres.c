/*
 * The PostgreSQL store (libpq): several callhook serve nodes share one database. Claims use
 * FOR UPDATE SKIP LOCKED with a lease, so a due message is in flight on one node at a time and
 * a dead node's work is taken over when its leases run out. A small pool of connections is
 * shared by the node's threads; a broken connection is reset on its next use, and while the
 * database is away every operation answers CH_EUNAVAILABLE (ingest says 503).
 */
#include "store/store.h"

#include "util/clock.h"
#include "util/log.h"

#include <libpq-fe.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_SIZE 4
/* The first key of the rate limit's advisory locks (the second is the app id's hash); the
 * two-key lock space is apart from the migration lock's one-key space. */
#define RATE_LOCK_CLASS "7413"

/* Each migration moves the schema one version up; they run in order in one transaction, under
 * an advisory lock so nodes starting together do not race. */
#define CH_XSTR(x) #x
#define CH_STR(x)  CH_XSTR(x) /* a macro's value as a string literal, for the SQL below */
/* The share of a messages page filled by inserts: the rest is room for the in-place (HOT)
 * updates of claims and results. */
#define MESSAGES_FILLFACTOR 50

/* The rollup table's histogram columns: as created; taken from callhook_rollup_add's
 * a_latency (STORE_LATENCY_BUCKETS per entry); added to on conflict; summed over the writers. */
#define ROLLUP_COLUMN_DEF(i) ", h" #i " BIGINT NOT NULL DEFAULT 0"
#define ROLLUP_ARG(i)        ", a_latency[(u.o - 1) * 16 + " #i " + 1]"
#define ROLLUP_ADD(i)        ", h" #i " = t.h" #i " + excluded.h" #i
#define ROLLUP_SUM(i)        ", sum(h" #i ")"
#define ROLLUP_HISTOGRAM_DEF STORE_LATENCY_COLUMNS(ROLLUP_COLUMN_DEF)
#define ROLLUP_HISTOGRAM_ARG STORE_LATENCY_COLUMNS(ROLLUP_ARG)
#define ROLLUP_HISTOGRAM_ADD STORE_LATENCY_COLUMNS(ROLLUP_ADD)
#define ROLLUP_HISTOGRAM_SUM STORE_LATENCY_COLUMNS(ROLLUP_SUM)
_Static_assert(STORE_LATENCY_BUCKETS == 16, "ROLLUP_ARG spells the buckets per entry");

static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE api_keys ("
    "  key_id TEXT PRIMARY KEY, hash BYTEA NOT NULL UNIQUE, role INTEGER NOT NULL,"
    "  created_at BIGINT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE voice_apps ("
    "  id TEXT PRIMARY KEY, config TEXT NOT NULL, secret TEXT NOT NULL,"
    "  prev_secret TEXT NOT NULL DEFAULT '', prev_expires_at BIGINT NOT NULL DEFAULT 0,"
    "  enabled INTEGER NOT NULL DEFAULT 1, disabled_reason TEXT NOT NULL DEFAULT '',"
    "  created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    "CREATE TABLE messages ("
    "  seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, app_id TEXT NOT NULL,"
    "  event TEXT NOT NULL, dedupe_key TEXT NOT NULL, call_type BIGINT, body BYTEA NOT NULL,"
    "  status INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    "  created_at BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL,"
    "  delivered_at BIGINT NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',"
    "  wait_begin INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX messages_due ON messages(next_attempt_at) WHERE status IN (0, 1);"
    "CREATE INDEX messages_call ON messages(app_id, dedupe_key, event);"
    "CREATE INDEX messages_app ON messages(app_id, seq);"
    "CREATE TABLE attempts ("
    "  message_seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, duration_ms BIGINT NOT NULL,"
    "  http_status INTEGER NOT NULL, error_class TEXT NOT NULL DEFAULT '',"
    "  error TEXT NOT NULL DEFAULT '', response BYTEA);"
    "CREATE INDEX attempts_message ON attempts(message_seq);"
    "CREATE INDEX attempts_at ON attempts(at_ms);",
    /* 2: the apps' change counter, kept by a trigger so that no write path (on any node) can
     * forget it, and the cluster-wide rate limit: the grants of the last second, taken by one
     * function that serialises the takers of an app with an advisory lock and reads the
     * database's clock, so the nodes' clocks do not matter. */
    "CREATE TABLE apps_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);"
    "INSERT INTO apps_version VALUES (1, 0);"
    "CREATE TABLE rate_grants (app_id TEXT NOT NULL, at_ms BIGINT NOT NULL, n BIGINT NOT NULL);"
    "CREATE INDEX rate_grants_app ON rate_grants(app_id, at_ms);"
    "CREATE FUNCTION callhook_apps_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  UPDATE apps_version SET version = version + 1 WHERE id = 1;"
    "  IF TG_OP = 'DELETE' THEN DELETE FROM rate_grants WHERE app_id = OLD.id; END IF;"
    "  RETURN NULL;"
    " END $$;"
    "CREATE TRIGGER voice_apps_changed AFTER INSERT OR UPDATE OR DELETE ON voice_apps"
    " FOR EACH ROW EXECUTE FUNCTION callhook_apps_changed();"
    /* NULL when there is no such app. The key-share lock keeps the app from being deleted
     * (and its grants with it) before this commits; each statement of a volatile function
     * reads a new snapshot, so the sum sees what the previous holder of the lock wrote. */
    "CREATE FUNCTION callhook_rate_take(a_app TEXT, a_limit BIGINT, a_want BIGINT)"
    " RETURNS BIGINT LANGUAGE plpgsql AS $$"
    " DECLARE now_ms BIGINT; used BIGINT; g BIGINT;"
    " BEGIN"
    "  PERFORM 1 FROM voice_apps WHERE id = a_app FOR KEY SHARE;"
    "  IF NOT FOUND THEN RETURN NULL; END IF;"
    "  PERFORM pg_advisory_xact_lock(" RATE_LOCK_CLASS ", hashtext(a_app));"
    "  now_ms := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;"
    "  DELETE FROM rate_grants WHERE app_id = a_app AND at_ms <= now_ms - " CH_STR(
        STORE_RATE_WINDOW_MS) ";"
                              "  SELECT coalesce(sum(n), 0) INTO used FROM rate_grants WHERE "
                              "app_id = a_app;"
                              "  g := greatest(0, least(a_want, a_limit - used));"
                              "  IF g > 0 THEN INSERT INTO rate_grants(app_id, at_ms, n) VALUES "
                              "(a_app, now_ms, g); END IF;"
                              "  RETURN g;"
                              " END $$;",
    /* 3: a message of a deleted Voice App is marked so: it is never delivered, replayed or
     * recovered, even when an app of the same id is created later. */
    "ALTER TABLE messages ADD COLUMN app_deleted INTEGER NOT NULL DEFAULT 0;",
    /* 4: the store's own settings (a data key's check value). */
    "CREATE TABLE store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    /* 5: the due index in the claim's order, so a claim reads its LIMIT of rows from it and
     * stops, instead of every due row and a sort (see claim_due); the open begin-calls, which
     * ingest and the claim look up for every end-call that waits on one (messages_call holds
     * every message ever stored, and without statistics the planner read it whole). */
    "DROP INDEX messages_due;"
    "CREATE INDEX messages_due ON messages(next_attempt_at, seq) WHERE status IN (0, 1);"
    "CREATE INDEX messages_begin_open ON messages(app_id, dedupe_key)"
    " WHERE event = 'begin-call' AND status IN (0, 1);",
    /* 6: a disabled app's waiting messages are parked, out of the index claims read (each claim
     * walked them all, and locked them, while the app stayed disabled). A trigger keeps the
     * flag with the app's state; ingest, replays and recoveries set it as they write. The
     * trigger cannot see what another node stores while it runs: a message stored unparked
     * as its app is disabled is only skipped by the claim's join, and one stored parked as its
     * app is enabled is unparked by the next claim's sweep (UNPARK_EVERY_MS, messages_parked). */
    "ALTER TABLE messages ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;"
    "UPDATE messages SET parked = 1 WHERE status IN (0, 1)"
    " AND app_id IN (SELECT id FROM voice_apps WHERE enabled = 0);"
    "DROP INDEX messages_due;"
    "CREATE INDEX messages_due ON messages(next_attempt_at, seq)"
    " WHERE status IN (0, 1) AND parked = 0;"
    "CREATE FUNCTION callhook_app_parked() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  UPDATE messages SET parked = 1 - NEW.enabled WHERE app_id = NEW.id AND status IN (0, 1);"
    "  RETURN NULL;"
    " END $$;"
    "CREATE TRIGGER voice_apps_parked AFTER UPDATE OF enabled ON voice_apps FOR EACH ROW"
    " WHEN (OLD.enabled <> NEW.enabled) EXECUTE FUNCTION callhook_app_parked();"
    "CREATE INDEX messages_parked ON messages(app_id) WHERE parked = 1 AND status IN (0, 1);",
    /* 7: records in a table of their own, written once: a claim or a result then writes a
     * narrow messages row (its updates change indexed columns, so each is a new row version
     * with new index entries) instead of copying the ~1.5 KB record. DROP COLUMN rewrites
     * nothing: an old row gives its record's space back when it is next updated (or by the
     * operator's VACUUM FULL). */
    "CREATE TABLE message_bodies (seq BIGINT PRIMARY KEY, body BYTEA NOT NULL);"
    "INSERT INTO message_bodies(seq, body) SELECT seq, body FROM messages ORDER BY seq;"
    "ALTER TABLE messages DROP COLUMN body;",
    /* 8: the waiting messages (pending or claimed) in a narrow table of their own, which
     * carries what claims look up: the due index, the open begin-calls, the parked. A claim or
     * a result then changes no indexed column of messages, so PostgreSQL updates that row in
     * place (a HOT update: no new index entries; fillfactor leaves the page room for it), and
     * only the queue's small rows take new entries in its indexes. A row is in message_queue
     * exactly while its message's status is 0 or 1; every writer of status keeps it so. */
    "CREATE TABLE message_queue ("
    "  seq BIGINT PRIMARY KEY, app_id TEXT NOT NULL, status INTEGER NOT NULL,"
    "  next_attempt_at BIGINT NOT NULL, parked INTEGER NOT NULL DEFAULT 0,"
    "  begin_key TEXT, wait_key TEXT);"
    "INSERT INTO message_queue SELECT seq, app_id, status, next_attempt_at, parked,"
    " CASE WHEN event = 'begin-call' THEN dedupe_key END,"
    " CASE WHEN event = 'end-call' AND wait_begin = 1 THEN dedupe_key END"
    " FROM messages WHERE status IN (0, 1) AND app_deleted = 0 ORDER BY seq;"
    "CREATE INDEX message_queue_due ON message_queue(next_attempt_at, seq) WHERE parked = 0;"
    "CREATE INDEX message_queue_begin ON message_queue(app_id, begin_key)"
    " WHERE begin_key IS NOT NULL;"
    "CREATE INDEX message_queue_parked ON message_queue(app_id) WHERE parked = 1;"
    "DROP INDEX messages_due; DROP INDEX messages_begin_open; DROP INDEX messages_parked;"
    "ALTER TABLE messages DROP COLUMN parked;"
    "ALTER TABLE messages SET (fillfactor = " CH_STR(
        MESSAGES_FILLFACTOR) ");"
                             "CREATE OR REPLACE FUNCTION callhook_app_parked() RETURNS trigger "
                             "LANGUAGE plpgsql AS $$"
                             " BEGIN"
                             "  IF NEW.enabled = 1 THEN"
                             "   UPDATE message_queue SET parked = 0 WHERE app_id = NEW.id AND "
                             "parked = 1;"
                             "  ELSE"
                             "   UPDATE message_queue SET parked = 1 WHERE parked = 0"
                             "    AND seq IN (SELECT seq FROM messages WHERE app_id = NEW.id AND "
                             "status IN (0, 1));"
                             "  END IF;"
                             "  RETURN NULL;"
                             " END $$;",
    /* 9: the operators' console. A record's CorrelationId (to search by; messages stored
     * before have none), what each attempt signed with (its webhook-timestamp and its
     * signature cut short), and the per-minute rollup of each app (store.h, "the operators'
     * console's figures"), a row per connection that writes (writer: its backend pid), so no
     * two transactions, of one node or of several, ever update one row. */
    "ALTER TABLE messages ADD COLUMN correlation_id TEXT;"
    "CREATE INDEX messages_correlation ON messages(correlation_id)"
    " WHERE correlation_id IS NOT NULL;"
    "ALTER TABLE attempts ADD COLUMN signed_at BIGINT NOT NULL DEFAULT 0;"
    "ALTER TABLE attempts ADD COLUMN signature TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE app_minutes (app_id TEXT NOT NULL, minute BIGINT NOT NULL,"
    " writer INTEGER NOT NULL, ingested BIGINT NOT NULL DEFAULT 0,"
    " delivered BIGINT NOT NULL DEFAULT 0, failed BIGINT NOT NULL DEFAULT 0,"
    " dead BIGINT NOT NULL DEFAULT 0" ROLLUP_HISTOGRAM_DEF
    ", last_error TEXT NOT NULL DEFAULT '', last_error_at_ms BIGINT NOT NULL DEFAULT 0,"
    " last_error_seq BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (app_id, minute, writer));"
    /* A batch's results gathered by app and minute (store_rollup_add_attempts), added to this
     * connection's rows. A function with a plan of its own made once per session: planned
     * with each record statement (the session plans custom), the rollup cost more to plan
     * than to run. */
    "CREATE FUNCTION callhook_rollup_add(a_app TEXT[], a_minute BIGINT[], a_delivered BIGINT[],"
    " a_failed BIGINT[], a_dead BIGINT[], a_latency BIGINT[], a_error TEXT[],"
    " a_error_at BIGINT[], a_error_seq BIGINT[]) RETURNS INTEGER LANGUAGE plpgsql"
    " SET plan_cache_mode = force_generic_plan AS $$"
    " BEGIN"
    "  INSERT INTO app_minutes AS t (app_id, minute, writer, delivered, failed,"
    "   dead" STORE_LATENCY_LIST ", last_error, last_error_at_ms, last_error_seq)"
    "  SELECT u.app_id, u.minute, pg_backend_pid(), u.delivered, u.failed,"
    "   u.dead" ROLLUP_HISTOGRAM_ARG ", u.error, u.error_at, u.error_seq"
    "  FROM unnest(a_app, a_minute, a_delivered, a_failed, a_dead, a_error, a_error_at,"
    "   a_error_seq) WITH ORDINALITY"
    "   AS u(app_id, minute, delivered, failed, dead, error, error_at, error_seq, o)"
    "  ON CONFLICT (app_id, minute, writer) DO UPDATE SET"
    "   delivered = t.delivered + excluded.delivered, failed = t.failed + excluded.failed,"
    "   dead = t.dead + excluded.dead" ROLLUP_HISTOGRAM_ADD ","
    "   last_error = CASE WHEN excluded.last_error_at_ms >= t.last_error_at_ms"
    "    THEN excluded.last_error ELSE t.last_error END,"
    "   last_error_seq = CASE WHEN excluded.last_error_at_ms >= t.last_error_at_ms"
    "    THEN excluded.last_error_seq ELSE t.last_error_seq END,"
    "   last_error_at_ms = greatest(t.last_error_at_ms, excluded.last_error_at_ms);"
    "  RETURN 0;"
    " END $$;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* Puts the messages of src (rows with seq, app_id, status, next_attempt_at, event, dedupe_key,
 * wait_begin: their values after a write) that wait (status 0 or 1) into message_queue, or
 * updates their queue rows; a new row is parked when its app is disabled. */
#define QUEUE_UPSERT_SQL(src)                                                            \
    "INSERT INTO message_queue(seq, app_id, status, next_attempt_at, parked, begin_key," \
    " wait_key) SELECT u.seq, u.app_id, u.status, u.next_attempt_at,"                    \
    " coalesce((SELECT 1 - a.enabled FROM voice_apps a WHERE a.id = u.app_id), 0),"      \
    " CASE WHEN u.event = 'begin-call' THEN u.dedupe_key END,"                           \
    " CASE WHEN u.event = 'end-call' AND u.wait_begin = 1 THEN u.dedupe_key END"         \
    " FROM " src " u WHERE u.status IN (0, 1)"                                           \
    " ON CONFLICT (seq) DO UPDATE SET status = excluded.status,"                         \
    " next_attempt_at = excluded.next_attempt_at"
#define QUEUE_COLUMNS  "seq, app_id, status, next_attempt_at, event, dedupe_key, wait_begin"
#define MIGRATION_LOCK "7413690021"
/* The database's clock in unix seconds: leases are taken and checked on it. */
#define DB_NOW_S "floor(extract(epoch FROM statement_timestamp()))::bigint"

/* A pooled connection and what this process set up on its session. */
struct pooled {
    PGconn *pg;
    bool busy;
    bool ready;        /* the session settings (session_setup) are made */
    unsigned prepared; /* bit i: the statement of enum prepared_id i is prepared on it */
};

/* How often a claim first unparks the messages of enabled apps that a race left parked. */
#define UNPARK_EVERY_MS 1000

struct pg_store {
    struct store base;
    _Atomic int64_t unparked_at_ms; /* the last sweep, monotonic */
    _Atomic int64_t rollup_pruned;  /* the minute this node last pruned the rollup at */
    char conninfo[1024];
    struct pooled pool[POOL_SIZE];
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

static struct pg_store *self(struct store *s)
{
    return (struct pg_store *)s;
}

/* The statements run for every event or every batch, prepared once per connection (the first
 * time it runs each) so the server parses and analyses them once, not on every call. */
enum prepared_id {
    P_CLAIM,
    P_RELEASE,
    P_RENEW,
    P_APPS_VERSION,
    P_RATE_TAKE,
    P_KEY_LOOKUP,
    P_APP_GET,
    P_INGEST,
    P_RECORD,
    P_UNPARK,
    P_COUNT
};
_Static_assert(P_COUNT <= 32, "struct pooled keeps the prepared statements in 32 bits");

struct prepared {
    enum prepared_id id;
    const char *name; /* the statement's name on the server */
    const char *sql;
};

/* ---- the pool ---- */

static bool ok(PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

static struct pooled *slot_of(struct pg_store *db, PGconn *c)
{
    for (int i = 0; i < POOL_SIZE; i++) {
        if (db->pool[i].pg == c)
            return &db->pool[i];
    }
    return NULL; /* not reached: every connection used here comes from the pool */
}

/* Reconnects a connection the server dropped: a new session, with nothing prepared on it. */
static void reset(struct pg_store *db, PGconn *c)
{
    struct pooled *p = slot_of(db, c);
    p->ready = false;
    p->prepared = 0;
    PQreset(c);
}

/* Settings of every session. Custom plans, as for a statement sent with its text: a plan
 * cached on a new database (an empty messages table) scans the table in full, and is kept
 * while the table grows, until the next ANALYZE. A prepared statement still saves its
 * parsing and analysis, and is planned once per batch, not per event. No JIT: compiling
 * takes hundreds of milliseconds, and a misestimate (or the claim's enable_sort, which adds
 * its cost to the plan) is enough to start it for a statement that runs in one. */
/* The server's notices go to the log, not to stderr as libpq would print them: a NOTICE
 * ("relation ... already exists, skipping" at every start) is for debugging; anything
 * stronger (a WARNING) is the operator's business. */
static void log_notice(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    while (n > 0 && message[n - 1] == '\n')
        n--;
    if (strncmp(message, "NOTICE:", 7) == 0 || strncmp(message, "DEBUG", 5) == 0 ||
        strncmp(message, "INFO:", 5) == 0 || strncmp(message, "LOG:", 4) == 0)
        log_debug("PostgreSQL: %.*s", (int)n, message);
    else
        log_warn("PostgreSQL: %.*s", (int)n, message);
}

static bool session_setup(PGconn *c)
{
    PQsetNoticeProcessor(c, log_notice, NULL);
    PGresult *r = PQexec(c, "SET plan_cache_mode = force_custom_plan; SET jit = off");
    bool done = ok(r);
    PQclear(r);
    return done;
}

/* Borrows a connection, (re)connecting as needed. NULL (and CH_EUNAVAILABLE) when the
 * database cannot be reached. */
static PGconn *borrow(struct pg_store *db, struct ch_error *err)
{
    pthread_mutex_lock(&db->lock);
    int i;
    for (;;) {
        for (i = 0; i < POOL_SIZE && db->pool[i].busy; i++)
            ;
        if (i < POOL_SIZE)
            break;
        pthread_cond_wait(&db->cond, &db->lock);
    }
    struct pooled *p = &db->pool[i];
    p->busy = true;
    pthread_mutex_unlock(&db->lock);
    PGconn *c = p->pg;
    if (c == NULL) {
        /* A bounded connect, unless the connection string says otherwise (it comes later and
         * overrides): while the database is away, ingest answers 503 instead of hanging. */
        const char *const keys[] = {"connect_timeout", "dbname", NULL};
        const char *const values[] = {"5", db->conninfo, NULL};
        c = p->pg = PQconnectdbParams(keys, values, 1);
        p->ready = false;
        p->prepared = 0;
    } else if (PQstatus(c) != CONNECTION_OK) {
        reset(db, c);
    }
    if (c != NULL && PQstatus(c) == CONNECTION_OK && !p->ready)
        p->ready = session_setup(c);
    if (c == NULL || PQstatus(c) != CONNECTION_OK || !p->ready) {
        ch_error_set(err, CH_EUNAVAILABLE, "cannot reach PostgreSQL: %s",
                     c ? PQerrorMessage(c) : "out of memory");
        pthread_mutex_lock(&db->lock);
        p->busy = false;
        pthread_cond_signal(&db->cond);
        pthread_mutex_unlock(&db->lock);
        return NULL;
    }
    return c;
}

static void give_back(struct pg_store *db, PGconn *c)
{
    pthread_mutex_lock(&db->lock);
    slot_of(db, c)->busy = false;
    pthread_cond_signal(&db->cond);
    pthread_mutex_unlock(&db->lock);
}

/* ---- results ---- */

/* Turns a failed result into an error: a lost connection is CH_EUNAVAILABLE (try again), a
 * constraint is CH_ESTORE. Clears r. */
static ch_code fail(PGconn *c, PGresult *r, const char *what, struct ch_error *err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    bool gone = PQstatus(c) != CONNECTION_OK ||
                (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
                           strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0));
    ch_code rc = ch_error_set(err, gone ? CH_EUNAVAILABLE : CH_ESTORE, "postgres: %s: %s", what,
                              r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    return rc;
}

static PGresult *run(PGconn *c, const char *sql, int n, const char *const *values,
                     const int *lengths, const int *formats)
{
    return PQexecParams(c, sql, n, NULL, values, lengths, formats, 0);
}

static bool sqlstate_is(PGresult *r, const char *state)
{
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s && strcmp(s, state) == 0;
}

/* Prepares p on c unless this session has it: NULL when it has, else the failed result. */
static PGresult *ensure_prepared(struct pg_store *db, PGconn *c, const struct prepared *p)
{
    struct pooled *slot = slot_of(db, c);
    unsigned bit = 1u << p->id;
    if (slot->prepared & bit)
        return NULL;
    PGresult *r = PQprepare(c, p->name, p->sql, 0, NULL);
    /* 42P05: the session has it already (see 26000 in run_prepared). */
    if (!ok(r) && !sqlstate_is(r, "42P05"))
        return r;
    PQclear(r);
    slot->prepared |= bit;
    return NULL;
}

/* Runs p on c, preparing it first when this session has not. Results in text (result_format
 * 0) or binary (1). */
static PGresult *run_prepared(struct pg_store *db, PGconn *c, const struct prepared *p, int n,
                              const char *const *values, const int *lengths, const int *formats,
                              int result_format)
{
    for (int tries = 0;; tries++) {
        PGresult *r = ensure_prepared(db, c, p);
        if (r)
            return r;
        r = PQexecPrepared(c, p->name, n, values, lengths, formats, result_format);
        /* 26000: the session lost it (a DISCARD ALL, from a pooler in front of the server):
         * prepared again, once. */
        if (tries > 0 || !sqlstate_is(r, "26000"))
            return r;
        PQclear(r);
        slot_of(db, c)->prepared &= ~(1u << p->id);
    }
}

static void col_text(PGresult *r, int row, int col, char *dst, size_t cap)
{
    snprintf(dst, cap, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

static long long col_ll(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A bytea column in text format, unescaped into malloc'd memory (NUL-terminated). */
static void *col_bytes(PGresult *r, int row, int col, size_t *len)
{
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    if (raw == NULL)
        return NULL;
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, raw, n);
        out[n] = '\0';
        *len = n;
    }
    PQfreemem(raw);
    return out;
}

/* An integer column (int2, int4 or int8) of a binary result; 0 when NULL. */
static int64_t bin_int(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    uint64_t v = len > 0 && (p[0] & 0x80) ? UINT64_MAX : 0; /* the sign, for short types */
    for (int i = 0; i < len && i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

/* A bytea column of a binary result, copied into malloc'd memory (NUL-terminated). */
static void *bin_bytes(PGresult *r, int row, int col, size_t *len)
{
    size_t n = (size_t)PQgetlength(r, row, col);
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, PQgetvalue(r, row, col), n);
        out[n] = '\0';
        *len = n;
    }
    return out;
}

/* Runs one statement, prepared (p) or not (sql), on a borrowed connection (given back before
 * this returns) and checks it: *out is the result, for the caller to read and PQclear, when
 * the code is CH_OK. */
static ch_code query_any(struct pg_store *db, const struct prepared *p, const char *sql, int n,
                         const char *const *values, const int *lengths, const int *formats,
                         const char *what, PGresult **out, struct ch_error *err)
{
    *out = NULL;
    PGconn *c = borrow(db, err);
    if (c == NULL)
        return CH_EUNAVAILABLE;
    const char *text = p ? p->sql : sql;
    PGresult *r = p ? run_prepared(db, c, p, n, values, lengths, formats, 0)
                    : run(c, sql, n, values, lengths, formats);
    /* A pooled connection the server dropped while it sat idle (a restart) is seen only when
     * it is used: a read is run once more on a fresh connection rather than failing a request
     * that nothing was wrong with. Writes are not, as they may have been applied. */
    if (!ok(r) && PQstatus(c) == CONNECTION_BAD && strncmp(text, "SELECT", 6) == 0) {
        PQclear(r);
        reset(db, c);
        r = NULL;
        struct pooled *slot = slot_of(db, c);
        slot->ready = PQstatus(c) == CONNECTION_OK && session_setup(c);
        if (slot->ready)
            r = p ? run_prepared(db, c, p, n, values, lengths, formats, 0)
                  : run(c, sql, n, values, lengths, formats);
    }
    ch_code rc = CH_OK;
    if (!ok(r))
        rc = fail(c, r, what, err);
    else
        *out = r;
    give_back(db, c);
    return rc;
}

static ch_code query(struct pg_store *db, const char *sql, int n, const char *const *values,
                     const int *lengths, const int *formats, const char *what, PGresult **out,
                     struct ch_error *err)
{
    return query_any(db, NULL, sql, n, values, lengths, formats, what, out, err);
}

static ch_code query_prepared(struct pg_store *db, const struct prepared *p, int n,
                              const char *const *values, const int *lengths, const int *formats,
                              const char *what, PGresult **out, struct ch_error *err)
{
    return query_any(db, p, NULL, n, values, lengths, formats, what, out, err);
}

/* One statement without rows; *changes (when asked) is how many rows it changed. */
static ch_code exec1(struct pg_store *db, const char *sql, int n, const char *const *values,
                     const char *what, long long *changes, struct ch_error *err)
{
    PGresult *r = NULL;
    ch_code rc = query(db, sql, n, values, NULL, NULL, what, &r, err);
    if (rc == CH_OK) {
        if (changes)
            *changes = strtoll(PQcmdTuples(r), NULL, 10);
        PQclear(r);
    }
    return rc;
}

#define LL(buf, v) (snprintf(buf, sizeof buf, "%lld", (long long)(v)), buf)

/* ---- start ---- */

static ch_code startup(struct store *s, int64_t now, int64_t *released, struct ch_error *err)
{
    /* Other nodes may hold leases: nothing is taken back here; leases run out by themselves. */
    (void)s;
    (void)now;
    (void)err;
    *released = 0;
    return CH_OK;
}

static ch_code migrate(struct pg_store *db, struct ch_error *err)
{
    PGconn *c = borrow(db, err);
    if (c == NULL)
        return CH_EUNAVAILABLE;
    ch_code rc = CH_OK;
    PGresult *r = PQexec(c, "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ");"
                            "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL);");
    if (!ok(r))
        rc = fail(c, r, "migrate", err);
    else
        PQclear(r);
    int version = 0;
    if (rc == CH_OK) {
        r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_version");
        if (!ok(r))
            rc = fail(c, r, "read schema version", err);
        else {
            version = (int)col_ll(r, 0, 0);
            PQclear(r);
        }
    }
    if (rc == CH_OK && version > SCHEMA_VERSION)
        rc = ch_error_set(err, CH_ESTORE,
                          "database schema version %d is newer than this callhook knows (%d): "
                          "upgrade callhook",
                          version, SCHEMA_VERSION);
    for (int v = version; rc == CH_OK && v < SCHEMA_VERSION; v++) {
        r = PQexec(c, migrations[v]);
        if (!ok(r)) {
            rc = fail(c, r, "migrate", err);
            break;
        }
        PQclear(r);
        char sql[80], vb[16];
        snprintf(sql, sizeof sql, "INSERT INTO schema_version VALUES (%s)", LL(vb, v + 1));
        r = PQexec(c, sql);
        if (!ok(r))
            rc = fail(c, r, "migrate", err);
        else
            PQclear(r);
    }
    PQclear(PQexec(c, rc == CH_OK ? "COMMIT" : "ROLLBACK"));
    give_back(db, c);
    return rc;
}

/* ---- keys ---- */

static ch_code key_count(struct store *s, int64_t *n, struct ch_error *err)
{
    struct pg_store *db = self(s);
    PGresult *r = NULL;
    ch_code rc = query(db, "SELECT count(*) FROM api_keys WHERE revoked = 0", 0, NULL, NULL, NULL,
                       "count keys", &r, err);
    if (rc == CH_OK) {
        *n = col_ll(r, 0, 0);
        PQclear(r);
    }
    return rc;
}

static ch_code key_add(struct store *s, const char *key_id, const unsigned char hash[32],
                       enum key_role role, int64_t now, struct ch_error *err)
{
    struct pg_store *db = self(s);
    char rb[24], nb[24];
    const char *values[] = {key_id, (const char *)hash, LL(rb, role), LL(nb, now)};
    int lengths[] = {0, 32, 0, 0};
    int formats[] = {0, 1, 0, 0};
    PGresult *r = NULL;
    ch_code rc =
        query(db, "INSERT INTO api_keys(key_id, hash, role, created_at) VALUES ($1, $2, $3, $4)", 4,
              values, lengths, formats, "add key", &r, err);
    if (rc == CH_OK)
        PQclear(r);
    return rc;
}

static ch_code key_lookup(struct store *s, const unsigned char hash[32], enum key_role *role,
                          struct ch_error *err)
{
    struct pg_store *db = self(s);
    const char *values[] = {(const char *)hash};
    int lengths[] = {32};
    int formats[] = {1};
    PGresult *r = NULL;
    static const struct prepared lookup = {P_KEY_LOOKUP, "ch_key_lookup",
                                           "SELECT role FROM api_keys WHERE hash = $1"
                                           " AND revoked = 0"};
    ch_code rc = query_prepared(db, &lookup, 1, values, lengths, formats, "look up key", &r, err);
    if (rc == CH_OK) {
        if (PQntuples(r) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no such key");
        else
            *role = (enum key_role)col_ll(r, 0, 0);
        PQclear(r);
    }
    return rc;
}

static ch_code key_list(struct store *s,
                        void (*cb)(void *ctx, const char *key_id, enum key_role role,
                                   int64_t created_at, bool revoked),
                        void *ctx, struct ch_error *err)
{
    struct pg_store *db = self(s);
    PGresult *r = NULL;
    ch_code rc = query(db,
                       "SELECT key_id, role, created_at, revoked FROM api_keys "
                       "ORDER BY created_at DESC, key_id",
                       0, NULL, NULL, NULL, "list keys", &r, err);
    if (rc == CH_OK) {
        for (int i = 0; i < PQntuples(r); i++)
            cb(ctx, PQgetvalue(r, i, 0), (enum key_role)col_ll(r, i, 1), col_ll(r, i, 2),
               col_ll(r, i, 3) != 0);
        PQclear(r);
    }
    return rc;
}

static ch_code key_revoke(struct store *s, const char *key_id, struct ch_error *err)
{
    long long n = 0;
    const char *values[] = {key_id};
    ch_code rc = exec1(self(s), "UPDATE api_keys SET revoked = 1 WHERE key_id = $1", 1, values,
                       "revoke key", &n, err);
    if (rc == CH_OK && n == 0)
        rc = ch_error_set(err, CH_ENOTFOUND, "no key '%s'", key_id);
    return rc;
}

/* ---- voice apps ---- */

static ch_code app_put(struct store *s, const struct stored_app *a, bool *created,
                       struct ch_error *err)
{
    struct pg_store *db = self(s);
    char pe[24], en[24], ca[24], ua[24];
    const char *values[] = {a->id,
                            a->config_json,
                            a->secret,
                            a->prev_secret,
                            LL(pe, a->prev_expires_at),
                            LL(en, a->enabled),
                            a->disabled_reason,
                            LL(ca, a->created_at),
                            LL(ua, a->updated_at)};
    PGconn *c = borrow(db, err);
    if (c == NULL)
        return CH_EUNAVAILABLE;
    /* xmax = 0 tells an insert from an update in one statement. */
    PGresult *r = run(c,
                      "INSERT INTO voice_apps(id, config, secret, prev_secret, prev_expires_at,"
                      " enabled, disabled_reason, created_at, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                      " ON CONFLICT(id) DO UPDATE SET config = $2, secret = $3, prev_secret = $4,"
                      " prev_expires_at = $5, enabled = $6, disabled_reason = $7, updated_at = $9"
                      " RETURNING (xmax = 0)",
                      9, values, NULL, NULL);
    ch_code rc = CH_OK;
    if (!ok(r))
        rc = fail(c, r, "save voice app", err);
    else {
        *created = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
    }
    give_back(db, c);
    return rc;
}

#define APP_COLUMNS                                                                           \
    "id, config, secret, prev_secret, prev_expires_at, enabled, disabled_reason, created_at," \
    " updated_at"

static ch_code app_row(PGresult *r, int i, struct stored_app *out, struct ch_error *err)
{
    memset(out, 0, sizeof *out);
    col_text(r, i, 0, out->id, sizeof out->id);
    out->config_json = strdup(PQgetvalue(r, i, 1));
    if (out->config_json == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory reading a voice app");
    col_text(r, i, 2, out->secret, sizeof out->secret);
    col_text(r, i, 3, out->prev_secret, sizeof out->prev_secret);
    out->prev_expires_at = col_ll(r, i, 4);
    out->enabled = col_ll(r, i, 5) != 0;
    col_text(r, i, 6, out->disabled_reason, sizeof out->disabled_reason);
    out->created_at = col_ll(r, i, 7);
    out->updated_at = col_ll(r, i, 8);
    return CH_OK;
}

static ch_code app_get(struct store *s, const char *id, struct stored_app *out,
                       struct ch_error *err)
{
    struct pg_store *db = self(s);
    const char *values[] = {id};
    PGresult *r = NULL;
    static const struct prepared get = {P_APP_GET, "ch_app_get",
                                        "SELECT " APP_COLUMNS " FROM voice_apps WHERE id = $1"};
    ch_code rc = query_prepared(db, &get, 1, values, NULL, NULL, "read voice app", &r, err);
    if (rc == CH_OK) {
        if (PQntuples(r) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no voice app '%s'", id);
        else
            rc = app_row(r, 0, out, err);
        PQclear(r);
    }
    return rc;
}

static ch_code app_list(struct store *s, void (*cb)(void *ctx, const struct stored_app *a),
                        void *ctx, struct ch_error *err)
{
    struct pg_store *db = self(s);
    PGresult *r = NULL;
    ch_code rc = query(db, "SELECT " APP_COLUMNS " FROM voice_apps ORDER BY id", 0, NULL, NULL,
                       NULL, "list voice apps", &r, err);
    if (rc == CH_OK) {
        for (int i = 0; rc == CH_OK && i < PQntuples(r); i++) {
            struct stored_app a;
            rc = app_row(r, i, &a, err);
            if (rc == CH_OK)
                cb(ctx, &a);
            stored_app_release(&a);
        }
        PQclear(r);
    }
    return rc;
}

static ch_code run_simple(PGconn *c, const char *sql, const char *what, struct ch_error *err)
{
    PGresult *r = PQexec(c, sql);
    if (!ok(r))
        return fail(c, r, what, err);
    PQclear(r);
    return CH_OK;
}

/* Commits what a multi-statement transaction did (rc == CH_OK) or rolls it back; the result. */
static ch_code end_transaction(PGconn *c, ch_code rc, const char *what, struct ch_error *err)
{
    if (rc != CH_OK) {
        PQclear(PQexec(c, "ROLLBACK"));
        return rc;
    }
    PGresult *r = PQexec(c, "COMMIT");
    if (!ok(r))
        return fail(c, r, what, err);
    PQclear(r);
    return CH_OK;
}
static ch_code app_delete(struct store *s, const char *id, struct ch_error *err)
{
    struct pg_store *db = self(s);
    PGconn *c = borrow(db, err);
    if (c == NULL)
        return CH_EUNAVAILABLE;
    const char *values[] = {id};
    ch_code rc = CH_OK;
    PGresult *r = PQexec(c, "BEGIN");
    if (!ok(r))
        rc = fail(c, r, "delete voice app", err);
    else
        PQclear(r);
    if (rc == CH_OK) {
        r = run(c, "DELETE FROM voice_apps WHERE id = $1", 1, values, NULL, NULL);
        if (!ok(r))
            rc = fail(c, r, "delete voice app", err);
        else {
            if (strtoll(PQcmdTuples(r), NULL, 10) == 0)
                rc = ch_error_set(err, CH_ENOTFOUND, "no voice app '%s'", id);
            PQclear(r);
        }
    }
    if (rc == CH_OK) {
        /* The queue rows first, as claims take them (see record_sql). */
        r = run(c,
                "DELETE FROM message_queue WHERE seq IN (SELECT seq FROM messages"
                " WHERE app_id = $1 AND status IN (0, 1))",
                1, values, NULL, NULL);
        if (ok(r)) {
            PQclear(r);
            r = run(c, DELETED_APP_MESSAGES_SQL, 1, values, NULL, NULL);
        }
        if (!ok(r))
            rc = fail(c, r, "end the deleted voice app's messages", err);
        else
            PQclear(r);
    }
    rc = end_transaction(c, rc, "delete voice app", err);
    give_back(db, c);
    return rc;
}

/* ---- array parameters ---- */

/* Element types of the arrays sent (pg_type.h's OIDs, fixed since PostgreSQL 7). */
#define OID_BYTEA       17
#define OID_INT8        20
#define OID_INT4        23
#define OID_TEXT        25
#define ARRAY_MAX_BYTES (512u << 20) /* under the server's 1 GB for one value */

/* One array parameter in PostgreSQL's binary form (what array_recv reads): a header, then
 * each element as a 4-byte big-endian length (-1: NULL) and its bytes. The capacity is worked
 * out before anything is written, so nothing grows. */
struct bin_array {
    unsigned char *data;
    size_t len, cap;
};

static void put_u32(struct bin_array *a, uint32_t v)
{
    unsigned char *p = a->data + a->len;
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    a->len += 4;
}

/* An array of n elements whose values take payload bytes together. False when out of memory
 * or too large. */
static bool array_init(struct bin_array *a, uint32_t elem_oid, size_t n, size_t payload)
{
    a->data = NULL;
    a->len = 0;
    if (n > ARRAY_MAX_BYTES / 4 || payload > ARRAY_MAX_BYTES - 4 * n)
        return false;
    a->cap = 20 + 4 * n + payload;
    a->data = malloc(a->cap);
    if (a->data == NULL)
        return false;
    put_u32(a, 1); /* dimensions */
    put_u32(a, 0); /* has NULLs: set by array_put */
    put_u32(a, elem_oid);
    put_u32(a, (uint32_t)n);
    put_u32(a, 1); /* lower bound */
    return true;
}

/* Appends an element: len bytes at v, or NULL when v is. */
static void array_put(struct bin_array *a, const void *v, size_t len)
{
    if (v == NULL) {
        a->data[7] = 1;
        put_u32(a, UINT32_MAX);
        return;
    }
    put_u32(a, (uint32_t)len);
    memcpy(a->data + a->len, v, len);
    a->len += len;
}

static void array_put_int(struct bin_array *a, int64_t v, size_t bytes)
{
    unsigned char b[8];
    for (size_t i = 0; i < bytes; i++)
        b[i] = (unsigned char)((uint64_t)v >> (8 * (bytes - 1 - i)));
    array_put(a, b, bytes);
}

static void array_release(struct bin_array *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i].data);
}

/* ---- the console's rollup (store.h, "the operators' console's figures") ---- */

/* Once a minute per node (by the time of what it writes), the rows older than
 * STORE_ROLLUP_KEEP_S go: a statement of its own, outside the writes' transactions. Every node
 * may delete the same old rows; nobody writes them any more, so it costs a wait at most. A
 * failure is logged: the next minute's prune takes them. */
static void rollup_prune(struct pg_store *db, int64_t at_s)
{
    int64_t minute = at_s - at_s % 60;
    int64_t last = atomic_load(&db->rollup_pruned);
    if (minute <= last || !atomic_compare_exchange_strong(&db->rollup_pruned, &last, minute))
        return;
    char mb[24];
    const char *values[] = {LL(mb, minute - STORE_ROLLUP_KEEP_S)};
    struct ch_error err = {0};
    if (exec1(db, "DELETE FROM app_minutes WHERE minute < $1::bigint", 1, values,
              "prune the console's rollup", NULL, &err) != CH_OK)
        log_warn("%s", err.message);
}

/* ---- ingest: one statement for the batch ---- */

/* The batch comes as arrays, one row per item in message-id order ($10 is the item's place in
 * the caller's batch). Each row: the app must exist, an id already stored (or met earlier in
 * the batch) inserts nothing, and an end-call asking for ordering waits while its call's
 * begin-call is open: stored and not delivered, or new in this batch before it (every
 * statement sees the table as it was before the statement, so those are looked for in the
 * batch itself). Rows go in in message-id order: two nodes storing the same events at the same
 * moment (an upstream retry sent to both) then wait on each other in one order, never in a
 * cycle (which PostgreSQL ends as a deadlock, failing both batches). */
/* $7 is the item's enum ingest_want (0 deliver, 1 wait on the begin-call, 2 skip); the status
 * stored is an enum msg_status (1 delivering, 0 pending, 4 skipped), as in every column. */
_Static_assert(INGEST_DELIVER == 0 && INGEST_WAIT_BEGIN == 1 && INGEST_SKIP == 2,
               "ingest_sql spells enum ingest_want as numbers");
_Static_assert(MSG_PENDING == 0 && MSG_DELIVERING == 1 && MSG_SKIPPED == 4,
               "the SQL spells enum msg_status as numbers");
static const struct prepared ingest_sql = {
    P_INGEST, "ch_ingest",
    "WITH batch AS ("
    " SELECT b.*, a.id IS NOT NULL AS app, a.enabled,"
    "  (SELECT m.seq FROM messages m WHERE m.id = b.id) AS old_seq"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],"
    "  $6::bytea[], $7::int[], $8::bigint[], $9::bigint[], $10::int[], $11::text[])"
    "  WITH ORDINALITY AS b(id, app_id, event, dedupe_key, call_type, body, want, at,"
    "  lease_until, pos, corr, ord)"
    " LEFT JOIN voice_apps a ON a.id = b.app_id),"
    " seen AS ("
    " SELECT b.*, (SELECT m.status FROM messages m WHERE m.seq = b.old_seq) AS old_status,"
    "  row_number() OVER (PARTITION BY b.id, b.app ORDER BY b.ord) = 1 AS first"
    " FROM batch b),"
    " fresh AS (SELECT * FROM seen WHERE app AND old_seq IS NULL AND first),"
    " ins AS ("
    " INSERT INTO messages(id, app_id, event, dedupe_key, call_type, status, created_at,"
    "  next_attempt_at, wait_begin, correlation_id)"
    /* A message stored as claimed (1) is this node's until its lease ends, on the database's
     * clock (see claim_due). */
    " SELECT id, app_id, event, dedupe_key, call_type, st, at,"
    "  CASE WHEN st = 1 THEN " DB_NOW_S " + (lease_until - at) ELSE at END,"
    "  CASE WHEN want = 1 THEN 1 ELSE 0 END, corr"
    /* An event of a disabled app waits (0), parked, until the app is enabled. */
    " FROM (SELECT f.*, CASE WHEN f.want = 2 THEN 4 WHEN f.enabled = 0 THEN 0"
    "   WHEN f.want = 1 AND f.event = 'end-call' AND ("
    "    EXISTS (SELECT 1 FROM message_queue o WHERE o.app_id = f.app_id"
    "     AND o.begin_key = f.dedupe_key)"
    "    OR EXISTS (SELECT 1 FROM fresh o WHERE o.app_id = f.app_id"
    "     AND o.dedupe_key = f.dedupe_key AND o.event = 'begin-call' AND o.want <> 2"
    "     AND o.pos < f.pos)) THEN 0"
    "   ELSE 1 END AS st FROM fresh f) f"
    " ORDER BY ord"
    " ON CONFLICT (id) DO NOTHING RETURNING id, seq, status, next_attempt_at, app_id,"
    "  created_at),"
    " bodies AS ("
    " INSERT INTO message_bodies(seq, body)"
    " SELECT i.seq, f.body FROM ins i JOIN fresh f ON f.id = i.id ORDER BY i.seq),"
    /* Waiting (0 or 1): queued, parked while the app is disabled. */
    " queued AS ("
    " INSERT INTO message_queue(seq, app_id, status, next_attempt_at, parked, begin_key,"
    "  wait_key)"
    " SELECT i.seq, f.app_id, i.status, i.next_attempt_at, 1 - f.enabled,"
    "  CASE WHEN f.event = 'begin-call' THEN f.dedupe_key END,"
    "  CASE WHEN f.event = 'end-call' AND f.want = 1 THEN f.dedupe_key END"
    " FROM ins i JOIN fresh f ON f.id = i.id WHERE i.status IN (0, 1) ORDER BY i.seq),"
    /* The console's rollup: this connection's row of each app and minute. */
    " counted AS ("
    " INSERT INTO app_minutes AS t (app_id, minute, writer, ingested)"
    " SELECT i.app_id, i.created_at - i.created_at % 60, pg_backend_pid(), count(*)"
    " FROM ins i GROUP BY 1, 2 ORDER BY 1, 2"
    " ON CONFLICT (app_id, minute, writer) DO UPDATE SET ingested = t.ingested + excluded.ingested)"
    " SELECT s.app, i.seq, i.status, s.old_seq, s.old_status, s.first"
    " FROM seen s LEFT JOIN ins i ON i.id = s.id ORDER BY s.ord"};

struct ingest_order {
    const char *msg_id;
    size_t index;
};

/* By message id, then by place in the batch: the first of two items with one id is stored. */
static int by_msg_id(const void *a, const void *b)
{
    const struct ingest_order *x = a, *y = b;
    int c = strcmp(x->msg_id, y->msg_id);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

enum {
    ING_ID,
    ING_APP,
    ING_EVENT,
    ING_KEY,
    ING_TYPE,
    ING_BODY,
    ING_WANT,
    ING_AT,
    ING_LEASE,
    ING_POS,
    ING_CORR,
    ING_COLUMNS
};

/* The batch as ING_COLUMNS arrays, in the order of order[]. False when out of memory or too
 * large (what was made is released). */
static bool ingest_arrays(const struct ingest_item *items, const struct ingest_order *order,
                          size_t n, struct bin_array *a)
{
    size_t text[5] = {0}, body = 0;
    for (size_t i = 0; i < n; i++) {
        const struct ingest_item *it = &items[i];
        text[0] += strlen(it->msg_id);
        text[1] += strlen(it->app_id);
        text[2] += strlen(it->event);
        text[3] += strlen(it->dedupe_key);
        text[4] += it->correlation_id ? strlen(it->correlation_id) : 0;
        if (it->body_len > ARRAY_MAX_BYTES || body > ARRAY_MAX_BYTES)
            return false;
        body += it->body_len;
    }
    static const uint32_t oids[ING_COLUMNS] = {OID_TEXT, OID_TEXT,  OID_TEXT, OID_TEXT,
                                               OID_INT8, OID_BYTEA, OID_INT4, OID_INT8,
                                               OID_INT8, OID_INT4,  OID_TEXT};
    size_t payload[ING_COLUMNS] = {text[0], text[1], text[2], text[3], 8 * n,  body,
                                   4 * n,   8 * n,   8 * n,   4 * n,   text[4]};
    for (int k = 0; k < ING_COLUMNS; k++) {
        if (!array_init(&a[k], oids[k], n, payload[k])) {
            array_release(a, (size_t)k + 1);
            return false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct ingest_item *it = &items[order[i].index];
        array_put(&a[ING_ID], it->msg_id, strlen(it->msg_id));
        array_put(&a[ING_APP], it->app_id, strlen(it->app_id));
        array_put(&a[ING_EVENT], it->event, strlen(it->event));
        array_put(&a[ING_KEY], it->dedupe_key, strlen(it->dedupe_key));
        if (it->has_call_type)
            array_put_int(&a[ING_TYPE], it->call_type, 8);
        else
            array_put(&a[ING_TYPE], NULL, 0);
        array_put(&a[ING_BODY], it->body_len ? it->body : "", it->body_len);
        array_put_int(&a[ING_WANT], (int64_t)it->want, 4);
        array_put_int(&a[ING_AT], it->now, 8);
        array_put_int(&a[ING_LEASE], it->lease_until, 8);
        array_put_int(&a[ING_POS], (int64_t)order[i].index, 4);
        array_put(&a[ING_CORR], it->correlation_id,
                  it->correlation_id ? strlen(it->correlation_id) : 0);
    }
    return true;
}

/* Reads what became of each item from the statement's rows (one per item, in order[]). */
static void ingest_results(PGresult *r, struct ingest_item *items, const struct ingest_order *order,
                           size_t n)
{
    for (size_t k = 0; k < n; k++) {
        struct ingest_item *it = &items[order[k].index];
        int row = (int)k;
        if (strcmp(PQgetvalue(r, row, 0), "t") != 0) {
            it->unknown_app = true;
            it->result = CH_ENOTFOUND;
        } else if (!PQgetisnull(r, row, 1) && strcmp(PQgetvalue(r, row, 5), "t") == 0) {
            it->seq = col_ll(r, row, 1);
            it->status = (enum msg_status)col_ll(r, row, 2);
            it->result = CH_OK;
        } else if (!PQgetisnull(r, row, 1)) {
            /* The same id earlier in this batch, stored by it. */
            it->duplicate = true;
            it->seq = col_ll(r, row, 1);
            it->status = (enum msg_status)col_ll(r, row, 2);
            it->result = CH_OK;
        } else {
            /* Already there, or inserted by another node this very moment: either way the
             * same message id is stored once. */
            it->duplicate = true;
            it->seq = col_ll(r, row, 3);
            it->status = (enum msg_status)col_ll(r, row, 4);
            it->result = CH_OK;
        }
    }
}

static ch_code ingest(struct store *s, struct ingest_item *items, size_t n, struct ch_error *err)
{
    if (n == 0)
        return CH_OK;
    if (n > INT32_MAX)
        return ch_error_set(err, CH_EINVAL, "a batch of %zu events is too large", n);
    struct ingest_order *order = malloc(n * sizeof *order);
    if (order == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory storing %zu events", n);
    for (size_t i = 0; i < n; i++)
        order[i] = (struct ingest_order){items[i].msg_id, i};
    qsort(order, n, sizeof *order, by_msg_id);
    struct bin_array a[ING_COLUMNS];
    if (!ingest_arrays(items, order, n, a)) {
        free(order);
        return ch_error_set(err, CH_ENOMEM,
                            "cannot pass %zu events to PostgreSQL: out of memory,"
                            " or over 512 MiB",
                            n);
    }
    const char *values[ING_COLUMNS];
    int lengths[ING_COLUMNS], formats[ING_COLUMNS];
    for (int k = 0; k < ING_COLUMNS; k++) {
        values[k] = (const char *)a[k].data;
        lengths[k] = (int)a[k].len;
        formats[k] = 1;
    }
    /* One transaction: the batch is stored whole or not at all. The statement's plan is made
     * once per connection (a generic plan): every row is found through an index whatever the
     * table's size, and planning it for each batch cost as much as running it. */
    struct pg_store *db = self(s);
    PGresult *r = NULL;
    PGconn *c = borrow(db, err);
    ch_code rc =
        c ? run_simple(c, "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan", "ingest", err)
          : CH_EUNAVAILABLE;
    if (rc == CH_OK) {
        r = run_prepared(db, c, &ingest_sql, ING_COLUMNS, values, lengths, formats, 0);
        if (!ok(r)) {
            rc = fail(c, r, "ingest", err);
            r = NULL;
        }
    }
    if (c) {
        rc = end_transaction(c, rc, "ingest", err);
        give_back(db, c);
    }
    array_release(a, ING_COLUMNS);
    if (rc == CH_OK && PQntuples(r) != (int)n)
        rc = ch_error_set(err, CH_ESTORE, "postgres: ingest: %d results for %zu events",
                          PQntuples(r), n);
    if (rc == CH_OK)
        ingest_results(r, items, order, n);
    PQclear(r);
    free(order);
    if (rc == CH_ESTORE)
        rc = CH_EUNAVAILABLE; /* nothing of the batch was stored: the callers answer 503 */
    if (rc == CH_OK)
        rollup_prune(db, items[0].now);
    return rc;
}

/* ---- delivery ---- */

static ch_code claim_due(struct store *s, int64_t now, int64_t lease_until, struct due_message *out,
                         size_t max, size_t *n, struct ch_error *err)
{
    struct pg_store *db = self(s);
    *n = 0;
    PGconn *c = borrow(db, err);
    /* Due times are the callers' (pending rows); leases are the database's (claimed rows),
     * taken for the caller's length, so no node's clock step makes a live lease look over. */
    if (c == NULL)
        return CH_EUNAVAILABLE;
    /* SKIP LOCKED: nodes claiming at once take different rows instead of waiting. RETURNING
     * gives the rows in whatever order the update met them: the outer SELECT puts them in the
     * order they were stored, so each app's queue stays first in, first out. The first
     * next_attempt_at bound is the one message_queue_due ranges over. The queue rows are
     * locked (and skipped) first, then the messages rows updated: every writer of both takes
     * them in that order (see record_sql). */
    static const struct prepared claim = {
        P_CLAIM, "ch_claim",
        "WITH due AS ("
        " SELECT q.seq FROM message_queue q JOIN voice_apps a ON a.id = q.app_id AND a.enabled = 1"
        " WHERE q.parked = 0 AND q.next_attempt_at <= greatest($1::bigint, " DB_NOW_S ")"
        " AND ((q.status = 0 AND q.next_attempt_at <= $1::bigint)"
        "  OR (q.status = 1 AND q.next_attempt_at <= " DB_NOW_S "))"
        " AND NOT (q.wait_key IS NOT NULL AND EXISTS ("
        "   SELECT 1 FROM message_queue b WHERE b.app_id = q.app_id AND b.begin_key = q.wait_key))"
        " ORDER BY q.next_attempt_at, q.seq LIMIT $3::bigint FOR UPDATE OF q SKIP LOCKED),"
        " leased AS ("
        " UPDATE message_queue q SET status = 1, next_attempt_at = " DB_NOW_S
        " + ($2::bigint - $1::bigint) WHERE q.seq = ANY(ARRAY(SELECT seq FROM due))),"
        " claimed AS ("
        " UPDATE messages m SET status = 1, next_attempt_at = " DB_NOW_S
        " + ($2::bigint - $1::bigint) WHERE m.seq = ANY(ARRAY(SELECT seq FROM due))"
        " RETURNING m.seq, m.id, m.app_id, m.event, m.dedupe_key, m.attempts, m.created_at)"
        " SELECT c.*, coalesce(b.body, ''::bytea) FROM claimed c"
        " LEFT JOIN message_bodies b ON b.seq = c.seq ORDER BY c.seq"};
    /* The claim walks message_queue_due in its order and stops at the limit. Its estimates (a
     * voice_apps table never analysed, a table that grew since its last ANALYZE) often make
     * the planner prefer reading every due row and sorting them, which with a backlog of
     * 30,000 took 110 ms a claim: with sorting off for its transaction, the index's order is
     * the one plan left. The rows come in binary: a record as it is, not hex to unescape. */
    static const struct prepared unpark = {
        P_UNPARK, "ch_unpark",
        "UPDATE message_queue SET parked = 0 WHERE parked = 1"
        " AND app_id IN (SELECT id FROM voice_apps WHERE enabled = 1)"};
    char nb[24], lb[24], mb[24];
    const char *values[] = {LL(nb, now), LL(lb, lease_until), LL(mb, max)};
    ch_code rc = run_simple(c, "BEGIN; SET LOCAL enable_sort = off", "claim", err);
    PGresult *r = NULL;
    int64_t mono = clock_mono_ms();
    int64_t last = atomic_load(&db->unparked_at_ms);
    if (rc == CH_OK && mono - last >= UNPARK_EVERY_MS &&
        atomic_compare_exchange_strong(&db->unparked_at_ms, &last, mono)) {
        r = run_prepared(db, c, &unpark, 0, NULL, NULL, NULL, 0);
        if (!ok(r))
            rc = fail(c, r, "claim: unpark", err);
        else
            PQclear(r);
        r = NULL;
    }
    if (rc == CH_OK) {
        r = run_prepared(db, c, &claim, 3, values, NULL, NULL, 1);
        if (!ok(r)) {
            rc = fail(c, r, "claim", err);
            r = NULL;
        }
    }
    rc = end_transaction(c, rc, "claim", err);
    if (rc == CH_OK && PQnfields(r) != 8)
        rc = ch_error_set(err, CH_ESTORE, "postgres: claim: %d columns", PQnfields(r));
    for (int i = 0; rc == CH_OK && i < PQntuples(r) && *n < max; i++) {
        struct due_message *m = &out[*n];
        memset(m, 0, sizeof *m);
        m->seq = bin_int(r, i, 0);
        col_text(r, i, 1, m->msg_id, sizeof m->msg_id);
        col_text(r, i, 2, m->app_id, sizeof m->app_id);
        col_text(r, i, 3, m->event, sizeof m->event);
        col_text(r, i, 4, m->dedupe_key, sizeof m->dedupe_key);
        m->attempts = (int)bin_int(r, i, 5);
        m->created_at = bin_int(r, i, 6);
        m->body = bin_bytes(r, i, 7, &m->body_len);
        if (m->body == NULL) {
            rc = ch_error_set(err, CH_ENOMEM, "out of memory claiming messages");
            break;
        }
        (*n)++;
    }
    PQclear(r);
    give_back(db, c);
    if (rc != CH_OK) {
        /* The contract: nothing returned on error. What was claimed comes back with its lease. */
        for (size_t i = 0; i < *n; i++)
            free(out[i].body);
        *n = 0;
    }
    return rc;
}

/* "{1,2,3}" for an array parameter; caller frees. */
static char *int_array(const int64_t *v, size_t n)
{
    size_t cap = n * 21 + 3;
    char *s = malloc(cap);
    if (s == NULL)
        return NULL;
    size_t o = 0;
    s[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s%lld", i ? "," : "", (long long)v[i]);
    s[o++] = '}';
    s[o] = '\0';
    return s;
}

/* Sets next_attempt_at of claimed messages (release: and makes them pending again): their
 * queue rows first, then the messages rows, found by seq through ANY(ARRAY(...)), an index
 * condition worked out before the scan starts. */
static ch_code update_claimed(struct store *s, const struct prepared *p, const char *what,
                              const int64_t *seqs, size_t n, int64_t at, struct ch_error *err)
{
    char *arr = int_array(seqs, n);
    if (arr == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    char ab[24];
    const char *values[] = {LL(ab, at), arr};
    PGresult *r = NULL;
    ch_code rc = query_prepared(self(s), p, 2, values, NULL, NULL, what, &r, err);
    PQclear(r);
    free(arr);
    return rc;
}

static ch_code release(struct store *s, const int64_t *seqs, size_t n, int64_t next_attempt_at,
                       struct ch_error *err)
{
    static const struct prepared release_sql = {
        P_RELEASE, "ch_release",
        "WITH q AS (UPDATE message_queue SET status = 0, next_attempt_at = $1::bigint"
        " WHERE seq = ANY($2::bigint[]) AND status = 1 RETURNING seq)"
        " UPDATE messages SET status = 0, next_attempt_at = $1::bigint"
        " WHERE seq = ANY(ARRAY(SELECT seq FROM q))"};
    return update_claimed(s, &release_sql, "release", seqs, n, next_attempt_at, err);
}

/* The lease is renewed for its length from the database's now (see claim_due). */
static ch_code renew(struct store *s, const int64_t *seqs, size_t n, int64_t now,
                     int64_t lease_until, struct ch_error *err)
{
    static const struct prepared renew_sql = {
        P_RENEW, "ch_renew",
        "WITH q AS (UPDATE message_queue SET next_attempt_at"
        " = " DB_NOW_S " + $1::bigint"
        " WHERE seq = ANY($2::bigint[]) AND status = 1"
        " RETURNING seq)"
        " UPDATE messages SET next_attempt_at = " DB_NOW_S
        " + $1::bigint WHERE seq = ANY(ARRAY(SELECT seq FROM q))"};
    return update_claimed(s, &renew_sql, "renew leases", seqs, n, lease_until - now, err);
}

/* A batch of results as one statement: the attempts inserted in the batch's order, each
 * message updated from its result. A message appears once per statement (record_attempts
 * cuts the batch where one comes back). */
static const struct prepared record_sql = {
    P_RECORD, "ch_record",
    "WITH r AS ("
    " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::text[],"
    "  $6::text[], $7::bytea[], $8::int[], $9::bigint[], $10::bigint[], $11::bigint[],"
    "  $12::text[]) WITH ORDINALITY"
    "  AS r(seq, at_ms, duration_ms, http_status, error_class, error, response, status, next_at,"
    "  delivered_at, signed_at, signature, ord)),"
    " ins AS ("
    " INSERT INTO attempts(message_seq, at_ms, duration_ms, http_status, error_class, error,"
    "  response, signed_at, signature)"
    " SELECT seq, at_ms, duration_ms, http_status, error_class, error, response, signed_at,"
    "  signature FROM r ORDER BY ord),"
    /* The console's rollup, gathered by app and minute in C (store_rollup_add_attempts) and
     * written by callhook_rollup_add (migration 9), whose plan is made once per session. */
    " rolled AS (SELECT callhook_rollup_add($13::text[], $14::bigint[], $15::bigint[],"
    "  $16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::bigint[],"
    "  $21::bigint[]) AS n),"
    /* Done: out of the queue. A retry: its queue row updated, or made again when a late
     * result (its lease ran out and another node delivered it) brings a message back; not
     * for a deleted app's (see below). */
    " gone AS (DELETE FROM message_queue"
    "  WHERE seq = ANY(ARRAY(SELECT seq FROM r WHERE status NOT IN (0, 1))) RETURNING seq),"
    " kept AS ("
    " INSERT INTO message_queue(seq, app_id, status, next_attempt_at, parked, begin_key,"
    "  wait_key)"
    " SELECT m.seq, m.app_id, r.status, r.next_at,"
    "  coalesce((SELECT 1 - a.enabled FROM voice_apps a WHERE a.id = m.app_id), 0),"
    "  CASE WHEN m.event = 'begin-call' THEN m.dedupe_key END,"
    "  CASE WHEN m.event = 'end-call' AND m.wait_begin = 1 THEN m.dedupe_key END"
    " FROM r JOIN messages m ON m.seq = r.seq"
    " WHERE r.status IN (0, 1) AND m.seq = ANY($1::bigint[]) AND m.app_deleted = 0"
    " ON CONFLICT (seq) DO UPDATE SET status = excluded.status,"
    "  next_attempt_at = excluded.next_attempt_at RETURNING seq)"
    /* The queue rows first, then the messages, as a claim takes them (its FOR UPDATE on the
     * queue, then its update of messages): the condition on gone and kept is a one-time
     * filter, run before any messages row is touched, so a claim and a result meeting on a
     * message whose lease ran out wait on each other in one order, never in a cycle (the
     * rollup's rows are this connection's alone: no other writer waits on them). An attempt in
     * flight when its app was deleted does not bring it back. */
    " UPDATE messages m SET status = CASE WHEN m.app_deleted = 1 AND r.status = 0 THEN 3"
    "  ELSE r.status END, attempts = m.attempts + 1, next_attempt_at = r.next_at,"
    "  delivered_at = r.delivered_at, last_error = r.error"
    " FROM r WHERE m.seq = ANY($1::bigint[]) AND m.seq = r.seq"
    " AND (SELECT count(*) FROM gone) + (SELECT count(*) FROM kept)"
    " + (SELECT count(*) FROM rolled) >= 0"};

enum {
    REC_SEQ,
    REC_AT,
    REC_DURATION,
    REC_HTTP,
    REC_CLASS,
    REC_ERROR,
    REC_RESPONSE,
    REC_STATUS,
    REC_NEXT,
    REC_DELIVERED,
    REC_SIGNED_AT,
    REC_SIGNATURE,
    REC_COLUMNS
};

/* The rollup's arrays of a batch (callhook_rollup_add's arguments), after REC_COLUMNS. */
enum {
    ROLL_APP,
    ROLL_MINUTE,
    ROLL_DELIVERED,
    ROLL_FAILED,
    ROLL_DEAD,
    ROLL_LATENCY, /* STORE_LATENCY_BUCKETS per entry, one entry after the other */
    ROLL_ERROR,
    ROLL_ERROR_AT,
    ROLL_ERROR_SEQ,
    ROLL_COLUMNS
};

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

/* The results res[0..n) as REC_COLUMNS arrays. False when out of memory or too large (what
 * was made is released). */
static bool record_arrays(const struct attempt_result *res, size_t n, struct bin_array *a)
{
    size_t class_len = 0, error_len = 0, response_len = 0, sig_len = 0;
    for (size_t i = 0; i < n; i++) {
        class_len += strlen(or_empty(res[i].error_class));
        error_len += strlen(or_empty(res[i].error));
        sig_len += strlen(or_empty(res[i].signature));
        if (res[i].response_len > ARRAY_MAX_BYTES || response_len > ARRAY_MAX_BYTES)
            return false;
        response_len += res[i].response ? res[i].response_len : 0;
    }
    static const uint32_t oids[REC_COLUMNS] = {OID_INT8, OID_INT8, OID_INT8,  OID_INT4,
                                               OID_TEXT, OID_TEXT, OID_BYTEA, OID_INT4,
                                               OID_INT8, OID_INT8, OID_INT8,  OID_TEXT};
    size_t payload[REC_COLUMNS] = {8 * n,        8 * n, 8 * n, 4 * n, class_len, error_len,
                                   response_len, 4 * n, 8 * n, 8 * n, 8 * n,     sig_len};
    for (int k = 0; k < REC_COLUMNS; k++) {
        if (!array_init(&a[k], oids[k], n, payload[k])) {
            array_release(a, (size_t)k + 1);
            return false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct attempt_result *r = &res[i];
        array_put_int(&a[REC_SEQ], r->seq, 8);
        array_put_int(&a[REC_AT], r->at_ms, 8);
        array_put_int(&a[REC_DURATION], r->duration_ms, 8);
        array_put_int(&a[REC_HTTP], r->http_status, 4);
        array_put(&a[REC_CLASS], or_empty(r->error_class), strlen(or_empty(r->error_class)));
        array_put(&a[REC_ERROR], or_empty(r->error), strlen(or_empty(r->error)));
        array_put(&a[REC_RESPONSE], r->response && r->response_len ? r->response : NULL,
                  r->response_len);
        array_put_int(&a[REC_STATUS], r->new_status, 4);
        array_put_int(&a[REC_NEXT], r->next_attempt_at, 8);
        array_put_int(&a[REC_DELIVERED], r->new_status == MSG_DELIVERED ? r->at_ms / 1000 : 0, 8);
        array_put_int(&a[REC_SIGNED_AT], r->signed_at, 8);
        array_put(&a[REC_SIGNATURE], or_empty(r->signature), strlen(or_empty(r->signature)));
    }
    return true;
}

/* The rollup of results res[0..n) as ROLL_COLUMNS arrays. False when out of memory (what was
 * made is released). */
static bool rollup_arrays(const struct attempt_result *res, size_t n, struct bin_array *a)
{
    struct store_rollup roll = {0};
    if (!store_rollup_add_attempts(&roll, res, n)) {
        store_rollup_release(&roll);
        return false;
    }
    size_t k = roll.n, app_len = 0, error_len = 0;
    for (size_t i = 0; i < k; i++) {
        app_len += strlen(roll.e[i].app_id);
        error_len += strlen(roll.e[i].last_error);
    }
    static const uint32_t oids[ROLL_COLUMNS] = {OID_TEXT, OID_INT8, OID_INT8, OID_INT8, OID_INT8,
                                                OID_INT8, OID_TEXT, OID_INT8, OID_INT8};
    size_t count[ROLL_COLUMNS] = {k, k, k, k, k, k * STORE_LATENCY_BUCKETS, k, k, k};
    size_t payload[ROLL_COLUMNS] = {app_len,   8 * k, 8 * k,
                                    8 * k,     8 * k, 8 * k * STORE_LATENCY_BUCKETS,
                                    error_len, 8 * k, 8 * k};
    for (int c = 0; c < ROLL_COLUMNS; c++) {
        if (!array_init(&a[c], oids[c], count[c], payload[c])) {
            array_release(a, (size_t)c + 1);
            store_rollup_release(&roll);
            return false;
        }
    }
    for (size_t i = 0; i < k; i++) {
        const struct store_rollup_entry *e = &roll.e[i];
        array_put(&a[ROLL_APP], e->app_id, strlen(e->app_id));
        array_put_int(&a[ROLL_MINUTE], e->m.at, 8);
        array_put_int(&a[ROLL_DELIVERED], e->m.delivered, 8);
        array_put_int(&a[ROLL_FAILED], e->m.failed, 8);
        array_put_int(&a[ROLL_DEAD], e->m.dead, 8);
        for (int b = 0; b < STORE_LATENCY_BUCKETS; b++)
            array_put_int(&a[ROLL_LATENCY], e->m.latency[b], 8);
        array_put(&a[ROLL_ERROR], e->last_error, strlen(e->last_error));
        array_put_int(&a[ROLL_ERROR_AT], e->last_error_at_ms, 8);
        array_put_int(&a[ROLL_ERROR_SEQ], e->last_error_seq, 8);
    }
    store_rollup_release(&roll);
    return true;
}

/* Writes res[0..n) with one statement on c (in the caller's transaction, if any). */
static ch_code record_run(struct pg_store *db, PGconn *c, const struct attempt_result *res,
                          size_t n, struct ch_error *err)
{
    enum { N = REC_COLUMNS + ROLL_COLUMNS };
    struct bin_array a[N];
    bool made = record_arrays(res, n, a);
    if (made && !rollup_arrays(res, n, a + REC_COLUMNS)) {
        array_release(a, REC_COLUMNS);
        made = false;
    }
    if (!made)
        return ch_error_set(err, CH_ENOMEM,
                            "cannot pass %zu results to PostgreSQL: out of memory, or over "
                            "512 MiB",
                            n);
    const char *values[N];
    int lengths[N], formats[N];
    for (int k = 0; k < N; k++) {
        values[k] = (const char *)a[k].data;
        lengths[k] = (int)a[k].len;
        formats[k] = 1;
    }
    PGresult *r = run_prepared(db, c, &record_sql, N, values, lengths, formats, 0);
    array_release(a, N);
    if (!ok(r))
        return fail(c, r, "record attempts", err);
    PQclear(r);
    return CH_OK;
}

struct seq_at {
    int64_t seq;
    size_t index;
};

static int by_seq_then_index(const void *a, const void *b)
{
    const struct seq_at *x = a, *y = b;
    if (x->seq != y->seq)
        return (x->seq > y->seq) - (x->seq < y->seq);
    return (x->index > y->index) - (x->index < y->index);
}

/* prev[i]: the index of the result before i of the same message, or SIZE_MAX. False when out
 * of memory. *repeats is whether any message has two results. */
static bool previous_of_same(const struct attempt_result *res, size_t n, size_t *prev,
                             bool *repeats)
{
    struct seq_at *v = malloc(n * sizeof *v);
    if (v == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        v[i] = (struct seq_at){res[i].seq, i};
    qsort(v, n, sizeof *v, by_seq_then_index);
    *repeats = false;
    for (size_t k = 0; k < n; k++) {
        bool same = k > 0 && v[k - 1].seq == v[k].seq;
        prev[v[k].index] = same ? v[k - 1].index : SIZE_MAX;
        *repeats |= same;
    }
    free(v);
    return true;
}

static ch_code record_attempts(struct store *s, const struct attempt_result *res, size_t n,
                               struct ch_error *err)
{
    if (n == 0)
        return CH_OK;
    if (n > INT32_MAX)
        return ch_error_set(err, CH_EINVAL, "a batch of %zu results is too large", n);
    struct pg_store *db = self(s);
    size_t *prev = malloc(n * sizeof *prev);
    bool repeats = false;
    if (prev == NULL || !previous_of_same(res, n, prev, &repeats)) {
        free(prev);
        return ch_error_set(err, CH_ENOMEM, "out of memory recording %zu attempts", n);
    }
    bool disables = false;
    for (size_t i = 0; i < n; i++)
        disables |= res[i].disable_app && res[i].app_id;
    PGconn *c = borrow(db, err);
    if (c == NULL) {
        free(prev);
        return CH_EUNAVAILABLE;
    }
    /* Usually one statement, its own transaction. A message with two results (a retry
     * written with the attempt before it) cuts the batch in parts, written in order so the
     * later result is the one kept; parts and apps disabled by a 410 share one transaction. */
    bool block = repeats || disables;
    ch_code rc = block ? run_simple(c, "BEGIN", "record attempts", err) : CH_OK;
    for (size_t from = 0; rc == CH_OK && from < n;) {
        size_t to = from + 1;
        while (to < n && (prev[to] == SIZE_MAX || prev[to] < from))
            to++;
        rc = record_run(db, c, res + from, to - from, err);
        from = to;
    }
    for (size_t i = 0; rc == CH_OK && i < n; i++) {
        if (!res[i].disable_app || res[i].app_id == NULL)
            continue;
        const char *dis[] = {res[i].error ? res[i].error : "disabled", res[i].app_id};
        PGresult *r =
            run(c, "UPDATE voice_apps SET enabled = 0, disabled_reason = $1 WHERE id = $2", 2, dis,
                NULL, NULL);
        if (!ok(r))
            rc = fail(c, r, "disable voice app", err);
        else
            PQclear(r);
    }
    if (block)
        rc = end_transaction(c, rc, "record attempts", err);
    give_back(db, c);
    free(prev);
    if (rc == CH_OK)
        rollup_prune(db, res[n - 1].at_ms / 1000);
    return rc;
}

/* ---- messages for the API ---- */

#define MESSAGE_COLUMNS                                                                       \
    "seq, id, app_id, event, dedupe_key, call_type, status, attempts, created_at,"            \
    " next_attempt_at, delivered_at, last_error,"                                             \
    " (SELECT length(b.body) FROM message_bodies b WHERE b.seq = messages.seq), app_deleted," \
    " correlation_id"

static void message_row(PGresult *r, int i, struct message_view *m)
{
    memset(m, 0, sizeof *m);
    m->seq = col_ll(r, i, 0);
    col_text(r, i, 1, m->msg_id, sizeof m->msg_id);
    col_text(r, i, 2, m->app_id, sizeof m->app_id);
    col_text(r, i, 3, m->event, sizeof m->event);
    col_text(r, i, 4, m->dedupe_key, sizeof m->dedupe_key);
    m->has_call_type = !PQgetisnull(r, i, 5);
    m->call_type = col_ll(r, i, 5);
    m->status = (enum msg_status)col_ll(r, i, 6);
    m->attempts = (int)col_ll(r, i, 7);
    m->created_at = col_ll(r, i, 8);
    m->next_attempt_at = col_ll(r, i, 9);
    m->delivered_at = col_ll(r, i, 10);
    col_text(r, i, 11, m->last_error, sizeof m->last_error);
    m->body_len = (size_t)col_ll(r, i, 12);
    m->app_deleted = col_ll(r, i, 13) != 0;
    col_text(r, i, 14, m->correlation_id, sizeof m->correlation_id);
}

static ch_code message_get(struct store *s, const char *msg_id, struct message_view *out,
                           struct ch_error *err)
{
    struct pg_store *db = self(s);
    const char *values[] = {msg_id};
    PGresult *r = NULL;
    ch_code rc = query(db, "SELECT " MESSAGE_COLUMNS " FROM messages WHERE id = $1", 1, values,
                       NULL, NULL, "read message", &r, err);
    if (rc == CH_OK) {
        if (PQntuples(r) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no message '%s'", msg_id);
        else
            message_row(r, 0, out);
        PQclear(r);
    }
    return rc;
}

static ch_code message_attempts(struct store *s, int64_t seq,
                                void (*cb)(void *ctx, const struct attempt_view *a), void *ctx,
                                struct ch_error *err)
{
    struct pg_store *db = self(s);
    char sb[24];
    const char *values[] = {LL(sb, seq)};
    PGresult *r = NULL;
    ch_code rc = query(db,
                       "SELECT at_ms, duration_ms, http_status, error_class, error, response,"
                       " signed_at, signature FROM attempts WHERE message_seq = $1"
                       " ORDER BY at_ms, ctid",
                       1, values, NULL, NULL, "read attempts", &r, err);
    if (rc == CH_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            struct attempt_view a;
            memset(&a, 0, sizeof a);
            a.at_ms = col_ll(r, i, 0);
            a.duration_ms = col_ll(r, i, 1);
            a.http_status = (int)col_ll(r, i, 2);
            col_text(r, i, 3, a.error_class, sizeof a.error_class);
            col_text(r, i, 4, a.error, sizeof a.error);
            if (!PQgetisnull(r, i, 5)) {
                size_t len = 0;
                char *resp = col_bytes(r, i, 5, &len);
                if (resp) {
                    snprintf(a.response, sizeof a.response, "%.*s", (int)len, resp);
                    free(resp);
                }
            }
            a.signed_at = col_ll(r, i, 6);
            col_text(r, i, 7, a.signature, sizeof a.signature);
            cb(ctx, &a);
        }
        PQclear(r);
    }
    return rc;
}

static ch_code message_list(struct store *s, const struct message_filter *f,
                            void (*cb)(void *ctx, const struct message_view *m), void *ctx,
                            struct ch_error *err)
{
    struct pg_store *db = self(s);
    char sql[1024];
    const char *values[10];
    char bufs[5][24];
    int n = 0;
    size_t o =
        (size_t)snprintf(sql, sizeof sql, "SELECT " MESSAGE_COLUMNS " FROM messages WHERE true");
    /* Every filter is a parameter; only the shape of the query varies. */
    if (f->app_id) {
        values[n++] = f->app_id;
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND app_id = $%d", n);
    }
    if (f->event) {
        values[n++] = f->event;
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND event = $%d", n);
    }
    if (f->dedupe_key) {
        values[n++] = f->dedupe_key;
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND dedupe_key = $%d", n);
    }
    if (f->correlation_id) {
        values[n++] = f->correlation_id;
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND correlation_id = $%d", n);
    }
    if (f->status >= 0) {
        values[n++] = LL(bufs[0], f->status);
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND status = $%d", n);
    }
    if (f->attempted == 0)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND attempts = 0");
    else if (f->attempted == 1)
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND attempts > 0");
    if (f->since > 0) {
        values[n++] = LL(bufs[1], f->since);
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND created_at >= $%d", n);
    }
    if (f->until > 0) {
        values[n++] = LL(bufs[4], f->until);
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND created_at < $%d", n);
    }
    if (f->before_seq > 0) {
        values[n++] = LL(bufs[2], f->before_seq);
        o += (size_t)snprintf(sql + o, sizeof sql - o, " AND seq < $%d", n);
    }
    values[n++] = LL(bufs[3], f->limit);
    snprintf(sql + o, sizeof sql - o, " ORDER BY seq DESC LIMIT $%d", n);

    PGresult *r = NULL;
    ch_code rc = query(db, sql, n, values, NULL, NULL, "list messages", &r, err);
    if (rc == CH_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            struct message_view m;
            message_row(r, i, &m);
            cb(ctx, &m);
        }
        PQclear(r);
    }
    return rc;
}

/* A replay or a recovery of a message that still waits (a retry) takes its queue row first
 * (lk, a one-time filter of the update), as a claim does: see record_sql. */
static ch_code message_requeue(struct store *s, const char *msg_id, int64_t now,
                               struct ch_error *err)
{
    char nb[24];
    long long n = 0;
    const char *values[] = {LL(nb, now), msg_id};
    ch_code rc = exec1(self(s),
                       "WITH lk AS (SELECT seq FROM message_queue"
                       " WHERE seq = (SELECT seq FROM messages WHERE id = $2) FOR UPDATE),"
                       " m AS (UPDATE messages SET status = 0, next_attempt_at = $1"
                       " WHERE id = $2 AND status <> 1 AND app_deleted = 0"
                       " AND (SELECT count(*) FROM lk) >= 0 RETURNING " QUEUE_COLUMNS ")"
                       " " QUEUE_UPSERT_SQL("m"),
                       2, values, "replay", &n, err);
    if (rc == CH_OK && n == 0)
        rc = ch_error_set(err, CH_ENOTFOUND, "no message '%s' that can be replayed now", msg_id);
    return rc;
}

static ch_code message_copy(struct store *s, const char *msg_id, const char *new_msg_id,
                            const void *body, size_t body_len, int64_t now, struct ch_error *err)
{
    char nb[24];
    if (body_len > INT32_MAX)
        return ch_error_set(err, CH_EINVAL, "a record of %zu bytes is too big", body_len);
    const char *values[] = {new_msg_id, LL(nb, now), msg_id, body};
    int lengths[] = {0, 0, 0, (int)body_len};
    int formats[] = {0, 0, 0, 1};
    /* The copy is a new message, its record in message_bodies and its row in the queue (parked
     * when its app is disabled), in one statement. */
    PGresult *r = NULL;
    ch_code rc = query(self(s),
                       "WITH src AS (SELECT m.app_id, m.event, m.dedupe_key, m.call_type,"
                       " m.correlation_id, coalesce($4::bytea, b.body) AS body FROM messages m"
                       " JOIN message_bodies b ON b.seq = m.seq"
                       " WHERE m.id = $3 AND m.status <> 4 AND m.app_deleted = 0"
                       " AND length(b.body) > 0),"
                       " ins AS (INSERT INTO messages(id, app_id, event, dedupe_key, call_type,"
                       " status, created_at, next_attempt_at, correlation_id)"
                       " SELECT $1, app_id, event, dedupe_key, call_type, 0, $2, $2,"
                       " correlation_id FROM src"
                       " RETURNING " QUEUE_COLUMNS "),"
                       " bod AS (INSERT INTO message_bodies(seq, body)"
                       " SELECT ins.seq, src.body FROM ins, src)"
                       " " QUEUE_UPSERT_SQL("ins"),
                       4, values, lengths, formats, "copy message", &r, err);
    if (rc == CH_OK) {
        if (strtoll(PQcmdTuples(r), NULL, 10) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no message '%s' with a record to send again",
                              msg_id);
        PQclear(r);
    }
    return rc;
}

static ch_code app_recover(struct store *s, const char *app_id, int64_t since, int64_t now,
                           int64_t *requeued, struct ch_error *err)
{
    char nb[24], sb[24];
    long long n = 0;
    const char *values[] = {LL(nb, now), app_id, LL(sb, since)};
    ch_code rc = exec1(self(s),
                       "WITH lk AS (SELECT seq FROM message_queue WHERE seq IN ("
                       " SELECT seq FROM messages WHERE app_id = $2 AND created_at >= $3"
                       " AND status = 0 AND attempts > 0 AND app_deleted = 0) FOR UPDATE),"
                       " m AS (UPDATE messages SET status = 0, next_attempt_at = $1"
                       " WHERE app_id = $2 AND created_at >= $3"
                       " AND (status = 3 OR (status = 0 AND attempts > 0)) AND app_deleted = 0"
                       " AND (SELECT count(*) FROM lk) >= 0 RETURNING " QUEUE_COLUMNS ")"
                       " " QUEUE_UPSERT_SQL("m"),
                       3, values, "recover", &n, err);
    if (rc == CH_OK)
        *requeued = n;
    return rc;
}

static ch_code purge(struct store *s, int64_t payload_before, int64_t attempts_before_ms,
                     int64_t *payloads, int64_t *attempts, struct ch_error *err)
{
    char pb[24], ab[24];
    long long n1 = 0, n2 = 0;
    const char *v1[] = {LL(pb, payload_before)};
    const char *v2[] = {LL(ab, attempts_before_ms)};
    ch_code rc = exec1(self(s),
                       "UPDATE message_bodies b SET body = ''::bytea FROM messages m"
                       " WHERE m.seq = b.seq AND length(b.body) > 0 AND ("
                       " (m.status = 2 AND m.delivered_at < $1)"
                       " OR (m.status = 4 AND m.created_at < $1))",
                       1, v1, "purge records", &n1, err);
    if (rc == CH_OK)
        rc = exec1(self(s), "DELETE FROM attempts WHERE at_ms < $1", 1, v2, "purge attempts", &n2,
                   err);
    *payloads = n1;
    *attempts = n2;
    return rc;
}

static ch_code stats(struct store *s, struct store_stats *out, struct ch_error *err)
{
    struct pg_store *db = self(s);
    memset(out, 0, sizeof *out);
    PGresult *r = NULL;
    ch_code rc = query(db,
                       "SELECT m.status, (m.attempts > 0)::int, coalesce(q.parked, 0), count(*)"
                       " FROM messages m LEFT JOIN message_queue q ON q.seq = m.seq"
                       " GROUP BY 1, 2, 3",
                       0, NULL, NULL, NULL, "stats", &r, err);
    if (rc == CH_OK) {
        for (int i = 0; i < PQntuples(r); i++) {
            store_stats_add(out, (int)col_ll(r, i, 0), col_ll(r, i, 1) != 0, col_ll(r, i, 2) != 0,
                            col_ll(r, i, 3));
        }
        PQclear(r);
        /* A disabled app's backlog is parked: it does not age the queue of the apps that send. */
        rc = query(db,
                   "SELECT coalesce(min(m.created_at), 0) FROM message_queue q"
                   " JOIN messages m ON m.seq = q.seq WHERE q.parked = 0",
                   0, NULL, NULL, NULL, "stats", &r, err);
    }
    if (rc == CH_OK) {
        out->oldest_pending_at = col_ll(r, 0, 0);
        PQclear(r);
    }
    return rc;
}

static ch_code app_stats(struct store *s, void (*cb)(void *ctx, const struct app_stats *a),
                         void *ctx, struct ch_error *err)
{
    PGresult *r = NULL;
    ch_code rc =
        query(self(s),
              APP_STATS_SQL("coalesce(q.parked, 0)", " LEFT JOIN message_queue q ON q.seq = m.seq"),
              0, NULL, NULL, NULL, "app stats", &r, err);
    for (int i = 0; rc == CH_OK && i < PQntuples(r); i++) {
        struct app_stats a = {.enabled = col_ll(r, i, 1) != 0,
                              .counts = {.pending = col_ll(r, i, 3),
                                         .failed = col_ll(r, i, 4),
                                         .delivering = col_ll(r, i, 5),
                                         .delivered = col_ll(r, i, 6),
                                         .dead = col_ll(r, i, 7),
                                         .skipped = col_ll(r, i, 8),
                                         .parked = col_ll(r, i, 9),
                                         .oldest_pending_at = col_ll(r, i, 10)},
                              .last_error_at = col_ll(r, i, 12)};
        col_text(r, i, 0, a.id, sizeof a.id);
        col_text(r, i, 2, a.disabled_reason, sizeof a.disabled_reason);
        col_text(r, i, 11, a.last_error, sizeof a.last_error);
        col_text(r, i, 13, a.last_error_msg, sizeof a.last_error_msg);
        cb(ctx, &a);
    }
    PQclear(r);
    return rc;
}

/* ---- the console's reads ---- */

/* Per app: its waiting messages from message_queue (which holds only them, parked or not), the
 * first-stored one's created_at, and the last error of the rollup's rows. Ordered by id byte
 * by byte ("C"), as SQLite orders. $1: one app, or NULL for all. */
static ch_code app_console(struct store *s, const char *app_id,
                           void (*cb)(void *ctx, const struct app_console *a), void *ctx,
                           struct ch_error *err)
{
    const char *values[] = {app_id};
    PGresult *r = NULL;
    ch_code rc = query(
        self(s),
        "SELECT a.id, a.enabled, a.disabled_reason, coalesce(q.waiting, 0),"
        " coalesce((SELECT m.created_at FROM messages m WHERE m.seq = q.oldest), 0),"
        " e.last_error, e.last_error_at_ms,"
        " (SELECT m.id FROM messages m WHERE m.seq = e.last_error_seq)"
        " FROM voice_apps a"
        " LEFT JOIN (SELECT app_id, count(*) AS waiting, min(seq) AS oldest FROM message_queue"
        "  WHERE $1::text IS NULL OR app_id = $1 GROUP BY app_id) q ON q.app_id = a.id"
        " LEFT JOIN (SELECT DISTINCT ON (app_id) app_id, last_error, last_error_at_ms,"
        "  last_error_seq FROM app_minutes"
        "  WHERE last_error_at_ms > 0 AND ($1::text IS NULL OR app_id = $1)"
        "  ORDER BY app_id, last_error_at_ms DESC) e ON e.app_id = a.id"
        " WHERE $1::text IS NULL OR a.id = $1 ORDER BY a.id COLLATE \"C\"",
        1, values, NULL, NULL, "the console's apps", &r, err);
    for (int i = 0; rc == CH_OK && i < PQntuples(r); i++) {
        struct app_console a = {.enabled = col_ll(r, i, 1) != 0,
                                .waiting = col_ll(r, i, 3),
                                .oldest_waiting_at = col_ll(r, i, 4),
                                .last_error_at_ms = col_ll(r, i, 6)};
        col_text(r, i, 0, a.id, sizeof a.id);
        col_text(r, i, 2, a.disabled_reason, sizeof a.disabled_reason);
        col_text(r, i, 5, a.last_error, sizeof a.last_error);
        col_text(r, i, 7, a.last_error_msg, sizeof a.last_error_msg);
        cb(ctx, &a);
    }
    PQclear(r);
    return rc;
}

static ch_code app_minutes(struct store *s, const char *app_id, int64_t from_minute,
                           void (*cb)(void *ctx, const char *app_id, const struct store_minute *m),
                           void *ctx, struct ch_error *err)
{
    char fb[24];
    const char *values[] = {LL(fb, from_minute), app_id};
    PGresult *r = NULL;
    ch_code rc = query(self(s),
                       "SELECT app_id, minute, sum(ingested), sum(delivered), sum(failed),"
                       " sum(dead)" ROLLUP_HISTOGRAM_SUM " FROM app_minutes"
                       " WHERE minute >= $1::bigint AND ($2::text IS NULL OR app_id = $2)"
                       " GROUP BY app_id, minute",
                       2, values, NULL, NULL, "the console's minutes", &r, err);
    for (int i = 0; rc == CH_OK && i < PQntuples(r); i++) {
        struct store_minute m = {.at = col_ll(r, i, 1),
                                 .ingested = col_ll(r, i, 2),
                                 .delivered = col_ll(r, i, 3),
                                 .failed = col_ll(r, i, 4),
                                 .dead = col_ll(r, i, 5)};
        for (int b = 0; b < STORE_LATENCY_BUCKETS; b++)
            m.latency[b] = col_ll(r, i, 6 + b);
        cb(ctx, PQgetvalue(r, i, 0), &m);
    }
    PQclear(r);
    return rc;
}

static ch_code message_body(struct store *s, const char *msg_id, struct stored_body *out,
                            struct ch_error *err)
{
    const char *values[] = {msg_id};
    PGresult *r = NULL;
    ch_code rc = query(self(s),
                       "SELECT m.seq, m.id, b.body FROM messages m"
                       " LEFT JOIN message_bodies b ON b.seq = m.seq WHERE m.id = $1",
                       1, values, NULL, NULL, "read a record", &r, err);
    if (rc == CH_OK && PQntuples(r) == 0)
        rc = ch_error_set(err, CH_ENOTFOUND, "no message '%s'", msg_id);
    if (rc == CH_OK) {
        out->seq = col_ll(r, 0, 0);
        col_text(r, 0, 1, out->msg_id, sizeof out->msg_id);
        out->body_len = 0;
        out->body = PQgetisnull(r, 0, 2) ? calloc(1, 1) : col_bytes(r, 0, 2, &out->body_len);
        if (out->body == NULL)
            rc = ch_error_set(err, CH_ENOMEM, "out of memory reading a record");
    }
    PQclear(r);
    return rc;
}

/* ---- voice app changes and the rate limit ---- */

static ch_code apps_version(struct store *s, int64_t *version, struct ch_error *err)
{
    PGresult *r = NULL;
    static const struct prepared read_version = {P_APPS_VERSION, "ch_apps_version",
                                                 "SELECT version FROM apps_version WHERE id = 1"};
    ch_code rc = query_prepared(self(s), &read_version, 0, NULL, NULL, NULL,
                                "read the voice apps' version", &r, err);
    if (rc == CH_OK) {
        if (PQntuples(r) == 1)
            *version = col_ll(r, 0, 0);
        else
            rc = ch_error_set(err, CH_ESTORE, "postgres: the voice apps' version is missing");
        PQclear(r);
    }
    return rc;
}

static ch_code rate_take(struct store *s, const char *app_id, int64_t limit_per_s, int64_t want,
                         int64_t *granted, struct ch_error *err)
{
    *granted = 0;
    char lb[24], wb[24];
    const char *values[] = {app_id, LL(lb, limit_per_s), LL(wb, want)};
    PGresult *r = NULL;
    static const struct prepared take = {P_RATE_TAKE, "ch_rate_take",
                                         "SELECT callhook_rate_take($1, $2::bigint, $3::bigint)"};
    ch_code rc = query_prepared(self(s), &take, 3, values, NULL, NULL, "rate limit", &r, err);
    if (rc == CH_OK) {
        if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
            rc = ch_error_set(err, CH_ENOTFOUND, "no voice app '%s'", app_id);
        else
            *granted = col_ll(r, 0, 0);
        PQclear(r);
    }
    return rc;
}

/* ---- the store's own settings ---- */

static ch_code meta_get(struct store *s, const char *name, char *value, size_t cap,
                        struct ch_error *err)
{
    const char *values[] = {name};
    PGresult *r = NULL;
    ch_code rc = query(self(s), "SELECT value FROM store_meta WHERE name = $1", 1, values, NULL,
                       NULL, "read a store setting", &r, err);
    if (rc == CH_OK) {
        if (PQntuples(r) == 0)
            rc = ch_error_set(err, CH_ENOTFOUND, "no store setting '%s'", name);
        else
            col_text(r, 0, 0, value, cap);
        PQclear(r);
    }
    return rc;
}

static ch_code meta_put(struct store *s, const char *name, const char *value, bool replace,
                        struct ch_error *err)
{
    const char *values[] = {name, value};
    return exec1(self(s),
                 replace ? "INSERT INTO store_meta(name, value) VALUES ($1, $2)"
                           " ON CONFLICT(name) DO UPDATE SET value = $2"
                         : "INSERT INTO store_meta(name, value) VALUES ($1, $2)"
                           " ON CONFLICT(name) DO NOTHING",
                 2, values, "write a store setting", NULL, err);
}

/* ---- values as stored, for encryption's maintenance ---- */

static ch_code body_page(struct store *s, int64_t after_seq, struct stored_body *out, size_t max,
                         size_t *n, struct ch_error *err)
{
    char after[24], limit[24];
    const char *values[] = {LL(after, after_seq), LL(limit, max)};
    PGresult *r = NULL;
    ch_code rc = query(self(s),
                       "SELECT b.seq, m.id, b.body FROM message_bodies b"
                       " JOIN messages m ON m.seq = b.seq WHERE b.seq > $1 AND length(b.body) > 0"
                       " ORDER BY b.seq LIMIT $2",
                       2, values, NULL, NULL, "read records", &r, err);
    if (rc != CH_OK)
        return rc;
    for (int i = 0; i < PQntuples(r) && *n < max; i++) {
        struct stored_body *b = &out[*n];
        b->seq = col_ll(r, i, 0);
        col_text(r, i, 1, b->msg_id, sizeof b->msg_id);
        b->body = col_bytes(r, i, 2, &b->body_len);
        if (b->body == NULL) {
            rc = ch_error_set(err, CH_ENOMEM, "out of memory reading records");
            break;
        }
        (*n)++;
    }
    PQclear(r);
    return rc;
}

static const char *const swap_sql[] = {
    [SEALED_APP_SECRET] = "UPDATE voice_apps SET secret = $1 WHERE id = $2 AND secret = $3",
    [SEALED_APP_PREV_SECRET] =
        "UPDATE voice_apps SET prev_secret = $1 WHERE id = $2 AND prev_secret = $3",
    [SEALED_APP_CONFIG] = "UPDATE voice_apps SET config = $1 WHERE id = $2 AND config = $3",
    [SEALED_MESSAGE_BODY] =
        "UPDATE message_bodies SET body = $1 WHERE seq = $2::bigint AND body = $3",
};

/* One swap on c: text values as text (they hold no NUL), a record's as binary bytea. */
static ch_code replace_one(PGconn *c, const struct value_swap *v, size_t *replaced,
                           struct ch_error *err)
{
    char seq[24];
    bool body = v->column == SEALED_MESSAGE_BODY;
    char *new_text = NULL, *old_text = NULL;
    if (!body) {
        new_text = strndup(v->new_value, v->new_len);
        old_text = strndup(v->old_value, v->old_len);
    }
    if (!body && (new_text == NULL || old_text == NULL)) {
        free(new_text);
        free(old_text);
        return ch_error_set(err, CH_ENOMEM, "out of memory replacing a sealed value");
    }
    const char *values[] = {body ? v->new_value : new_text, body ? LL(seq, v->seq) : v->app_id,
                            body ? v->old_value : old_text};
    int lengths[] = {(int)v->new_len, 0, (int)v->old_len};
    int formats[] = {body, 0, body};
    PGresult *r = run(c, swap_sql[v->column], 3, values, lengths, formats);
    free(new_text);
    free(old_text);
    if (!ok(r))
        return fail(c, r, "replace a sealed value", err);
    *replaced += (size_t)strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return CH_OK;
}

static ch_code values_replace(struct store *s, const struct value_swap *v, size_t n,
                              size_t *replaced, struct ch_error *err)
{
    struct pg_store *db = self(s);
    PGconn *c = borrow(db, err);
    if (c == NULL)
        return CH_EUNAVAILABLE;
    ch_code rc = CH_OK;
    PGresult *r = PQexec(c, "BEGIN");
    if (!ok(r))
        rc = fail(c, r, "replace sealed values", err);
    else
        PQclear(r);
    for (size_t i = 0; rc == CH_OK && i < n; i++)
        rc = replace_one(c, &v[i], replaced, err);
    rc = end_transaction(c, rc, "replace sealed values", err);
    give_back(db, c);
    return rc;
}

/* Old row versions stay in the tables until VACUUM (FULL, to give the space back), and in
 * the server's WAL and backups: the operator's (docs/SECURITY.md), as it locks the tables. */
static ch_code scrub(struct store *s, struct ch_error *err)
{
    (void)s;
    (void)err;
    return CH_OK;
}

/* ---- opening ---- */

static void pg_close(struct store *s)
{
    struct pg_store *db = self(s);
    if (db == NULL)
        return;
    for (int i = 0; i < POOL_SIZE; i++)
        PQfinish(db->pool[i].pg);
    pthread_mutex_destroy(&db->lock);
    pthread_cond_destroy(&db->cond);
    free(db);
}

static const struct store_ops pg_ops = {
    .name = "postgres",
    .close = pg_close,
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

ch_code store_postgres_open(const char *conninfo, struct store **out, struct ch_error *err)
{
    if (conninfo == NULL || strlen(conninfo) >= sizeof((struct pg_store *)0)->conninfo)
        return ch_error_set(err, CH_EINVAL, "PostgreSQL connection string missing or too long");
    struct pg_store *db = calloc(1, sizeof *db);
    if (db == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory opening the store");
    db->base.ops = &pg_ops;
    db->base.kind = "postgresql";
    db->base.schema_version = SCHEMA_VERSION;
    snprintf(db->conninfo, sizeof db->conninfo, "%s", conninfo);
    pthread_mutex_init(&db->lock, NULL);
    pthread_cond_init(&db->cond, NULL);
    ch_code rc = migrate(db, err);
    if (rc != CH_OK) {
        pg_close(&db->base);
        return rc;
    }
    *out = &db->base;
    return CH_OK;
}
