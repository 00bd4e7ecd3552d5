/*
 * The postgres sink (`--postgres DSN`, `postgres:DSN`): each event inserted once into
 * `call_events`, and a `calls` row per call that joins its begin-call and end-call, whichever
 * comes first. A batch is one transaction, sent as a libpq pipeline. The one file of
 * src/receive/ that sees libpq; the tables and their columns are in docs/RECEIVER.md.
 */
#include "receive/escape.h"
#include "receive/receiver.h"
#include "receive/sink.h"

#include <callhook/record.h>

#include <jansson.h>
#include <libpq-fe.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DSN_MAX        4096
#define BATCH_MAX      256
#define SQL_MAX        8192
#define SCHEMA_VERSION 1
/* "YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM", with room for what -Wformat-truncation assumes an int
 * may hold. */
#define TIME_TEXT 64
#define NUM_TEXT  32

/* How a record's field becomes a column of `calls`. */
enum col_kind {
    COL_TEXT, /* a string (an integer is kept as its decimal text) */
    COL_TIME, /* an ISO 8601 time, to timestamptz */
    COL_NUM,  /* a number, to numeric */
};

/* The columns of `calls` read from the record, beside the ids, CallType and started_at. A
 * field is looked up by its name in any letter case; path[1] is a member of path[0]'s object. */
struct field {
    const char *column;
    const char *path[2];
    enum col_kind kind;
};

static const struct field fields[] = {
    {"answered_at", {"AnswerTimeUtc", NULL}, COL_TIME},
    {"ended_at", {"EndTimeUtc", NULL}, COL_TIME},
    {"wait_s", {"WaitDurationSeconds", NULL}, COL_NUM},
    {"talk_s", {"TalkDurationSeconds", NULL}, COL_NUM},
    {"direction", {"Direction", NULL}, COL_TEXT},
    {"caller_id", {"CallerId", NULL}, COL_TEXT},
    {"caller_name", {"CallerDisplayName", NULL}, COL_TEXT},
    {"called_number", {"CalledNumber", NULL}, COL_TEXT},
    {"tenant_id", {"TenantId", NULL}, COL_TEXT},
    {"voice_app_id", {"VoiceAppId", NULL}, COL_TEXT},
    {"voice_app_name", {"VoiceAppName", NULL}, COL_TEXT},
    {"queue_id", {"QueueId", NULL}, COL_TEXT},
    {"queue_name", {"QueueName", NULL}, COL_TEXT},
    {"agent_id", {"Agent", "UserId"}, COL_TEXT},
    {"agent_name", {"Agent", "DisplayName"}, COL_TEXT},
    {"agent_email", {"Agent", "Email"}, COL_TEXT},
    {"end_reason", {"EndReason", NULL}, COL_TEXT},
};
#define NFIELDS (sizeof fields / sizeof fields[0])

/* The parameters of the statements: call_events' ten, then started_at and the fields. */
enum {
    P_WEBHOOK_ID,
    P_EVENT,
    P_CALL_KEY,
    P_ACTIVE_CALL_ID,
    P_CORRELATION_ID,
    P_CALL_TYPE,
    P_CALL_TYPE_NAME,
    P_RECEIVED_AT,
    P_RECORD,
    P_RECORD_TEXT,
    P_EVENT_PARAMS,
    P_STARTED_AT = P_EVENT_PARAMS,
    P_FIELDS,
    P_ALL = P_FIELDS + (int)NFIELDS,
};

/* The schema of version SCHEMA_VERSION, each statement idempotent. */
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS callhook_receive_schema ("
    " version integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS call_events ("
    " webhook_id text PRIMARY KEY,"
    " event text NOT NULL,"
    " call_key text,"
    " active_call_id text,"
    " correlation_id text,"
    " call_type bigint,"
    " call_type_name text,"
    " received_at timestamptz NOT NULL,"
    " inserted_at timestamptz NOT NULL DEFAULT now(),"
    " record jsonb,"
    " record_text text,"
    " UNIQUE (event, call_key));"
    "CREATE INDEX IF NOT EXISTS call_events_received_at ON call_events (received_at);"
    "CREATE TABLE IF NOT EXISTS calls ("
    " call_key text PRIMARY KEY,"
    " active_call_id text,"
    " correlation_id text,"
    " call_type bigint,"
    " call_type_name text,"
    " started_at timestamptz,"
    " answered_at timestamptz,"
    " ended_at timestamptz,"
    " duration_s numeric GENERATED ALWAYS AS (extract(epoch FROM ended_at - started_at)) STORED,"
    " wait_s numeric,"
    " talk_s numeric,"
    " direction text,"
    " caller_id text,"
    " caller_name text,"
    " called_number text,"
    " tenant_id text,"
    " voice_app_id text,"
    " voice_app_name text,"
    " queue_id text,"
    " queue_name text,"
    " agent_id text,"
    " agent_name text,"
    " agent_email text,"
    " end_reason text,"
    " begin_webhook_id text,"
    " end_webhook_id text,"
    " updated_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at);";

/* The prepared statements, one per kind of event. */
enum stmt { STMT_EVENT, STMT_BEGIN, STMT_END, STMT_COUNT };
static const char *const stmt_names[STMT_COUNT] = {"ch_event", "ch_begin", "ch_end"};
static const int stmt_params[STMT_COUNT] = {P_EVENT_PARAMS, P_ALL, P_ALL};

struct sink {
    char dsn[DSN_MAX];
    char label[DSN_MAX]; /* the DSN as the log may show it */
    PGconn *conn;        /* owned; NULL when the next process() must connect again */
    char sql[STMT_COUNT][SQL_MAX];
    pthread_mutex_t lock; /* guards cancel, which interrupt() uses from another thread */
    PGcancel *cancel;
    atomic_bool interrupted;
};

/* One event's parameters, as text; every pointer borrows from the row or from doc. */
struct row {
    enum stmt stmt;
    json_t *doc;       /* owned: the record, kept while values borrow its strings */
    char *record_text; /* owned: the escaped body of a record that is not JSON */
    const char *values[P_ALL];
    char call_type[NUM_TEXT], received_at[NUM_TEXT];
    struct ch_record rec;
    char call_type_name[CH_CALL_TYPE_NAME_MAX];
    char started_at[TIME_TEXT];
    char text[NFIELDS][TIME_TEXT];
};

/* libpq's message on one line: its line breaks become "; ", the last one goes. */
static const char *one_line(const char *msg, char *out, size_t cap)
{
    snprintf(out, cap, "%s", msg ? msg : "");
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        out[--n] = '\0';
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    return out[0] ? out : "no message from libpq";
}

/* ---- SQL made from the field table ---- */

/* Appends to a SQL buffer; false when it would not fit (a programming error: SQL_MAX). */
static bool add(char *sql, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool add(char *sql, const char *fmt, ...)
{
    size_t n = strlen(sql);
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(sql + n, SQL_MAX - n, fmt, ap);
    va_end(ap);
    return w >= 0 && (size_t)w < SQL_MAX - n;
}

static const char *cast_of(enum col_kind k)
{
    return k == COL_TIME ? "::timestamptz" : k == COL_NUM ? "::numeric" : "";
}

static const char event_insert[] =
    "INSERT INTO call_events (webhook_id, event, call_key, active_call_id, correlation_id,"
    " call_type, call_type_name, received_at, record, record_text)"
    " VALUES ($1, $2, $3, $4, $5, $6::bigint, $7, to_timestamp($8::double precision),"
    " $9::jsonb, $10) ON CONFLICT DO NOTHING";

/*
 * The upsert of a begin-call (end false) or an end-call into `calls`, run only when the event
 * was new to call_events (the CTE), so a re-delivery changes nothing. The merge makes the row
 * the same whichever event comes first: every column is the end-call's value when it has one,
 * else the begin-call's; started_at is the begin-call's, else the end-call's.
 */
static bool upsert_sql(char *sql, bool end)
{
    const char *mine = end ? "end_webhook_id" : "begin_webhook_id";
    sql[0] = '\0';
    bool ok = add(sql,
                  "WITH ev AS (%s RETURNING 1) INSERT INTO calls (call_key, active_call_id,"
                  " correlation_id, call_type, call_type_name, started_at",
                  event_insert);
    for (size_t i = 0; i < NFIELDS; i++)
        ok = ok && add(sql, ", %s", fields[i].column);
    ok = ok && add(sql, ", %s, updated_at) SELECT $3, $4, $5, $6::bigint, $7, $%d::timestamptz",
                   mine, P_STARTED_AT + 1);
    for (size_t i = 0; i < NFIELDS; i++)
        ok = ok && add(sql, ", $%d%s", P_FIELDS + (int)i + 1, cast_of(fields[i].kind));
    ok = ok && add(sql, ", $1, now() FROM ev ON CONFLICT (call_key) DO UPDATE SET ");
    /* end: coalesce(new, old); begin: coalesce(old, new), the end-call's value winning. */
    const char *first = end ? "EXCLUDED" : "calls", *second = end ? "calls" : "EXCLUDED";
    static const char *const merged[] = {"active_call_id", "correlation_id", "call_type",
                                         "call_type_name"};
    for (size_t i = 0; i < sizeof merged / sizeof merged[0]; i++)
        ok = ok && add(sql, "%s = coalesce(%s.%s, %s.%s), ", merged[i], first, merged[i], second,
                       merged[i]);
    for (size_t i = 0; i < NFIELDS; i++)
        ok = ok && add(sql, "%s = coalesce(%s.%s, %s.%s), ", fields[i].column, first,
                       fields[i].column, second, fields[i].column);
    ok = ok && add(sql, "started_at = coalesce(%s.started_at, %s.started_at), ", second, first);
    ok = ok && add(sql, "%s = EXCLUDED.%s, updated_at = now()", mine, mine);
    return ok;
}

static bool make_sql(struct sink *s)
{
    snprintf(s->sql[STMT_EVENT], SQL_MAX, "%s", event_insert);
    return upsert_sql(s->sql[STMT_BEGIN], false) && upsert_sql(s->sql[STMT_END], true);
}

/* ---- the connection ---- */

static void drop_connection(struct sink *s)
{
    pthread_mutex_lock(&s->lock);
    if (s->cancel)
        PQfreeCancel(s->cancel);
    s->cancel = NULL;
    pthread_mutex_unlock(&s->lock);
    if (s->conn)
        PQfinish(s->conn);
    s->conn = NULL;
}

/* Runs one statement of no parameters; on failure its message goes to why. */
static bool exec_ok(PGconn *conn, const char *sql, PGresult **keep, char *why, size_t cap)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (keep)
            *keep = res;
        else
            PQclear(res);
        return true;
    }
    one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(conn), why, cap);
    PQclear(res);
    return false;
}

/* The first column of the first row as a number: 0 when NULL. */
static long long scalar(PGresult *res)
{
    long long v = 0;
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/*
 * Creates the tables when the version table is missing, under an advisory lock so that two
 * receivers starting at once do not race; refuses a schema newer than this callhook's. The
 * CREATE statements run only when needed: a user who may write the tables but not create
 * them works once they exist.
 */
static ch_code ensure_schema(struct sink *s, struct ch_error *err)
{
    char why[512];
    PGresult *res = NULL;
    if (!exec_ok(s->conn, "BEGIN", NULL, why, sizeof why) ||
        !exec_ok(s->conn, "SELECT pg_advisory_xact_lock(hashtext('callhook_receive_schema'))", NULL,
                 why, sizeof why) ||
        !exec_ok(s->conn, "SELECT (to_regclass('callhook_receive_schema') IS NOT NULL)::int", &res,
                 why, sizeof why))
        goto failed;
    long long version = 0;
    if (scalar(res) == 1) {
        if (!exec_ok(s->conn, "SELECT max(version) FROM callhook_receive_schema", &res, why,
                     sizeof why))
            goto failed;
        version = scalar(res);
    }
    if (version > SCHEMA_VERSION) {
        exec_ok(s->conn, "ROLLBACK", NULL, why, sizeof why);
        return ch_error_set(err, CH_ESTORE,
                            "postgres '%s': the tables are of schema version %lld, newer than "
                            "this callhook's (%d): upgrade callhook",
                            s->label, version, SCHEMA_VERSION);
    }
    if (version < SCHEMA_VERSION) {
        char insert[128];
        snprintf(insert, sizeof insert, "INSERT INTO callhook_receive_schema (version) VALUES (%d)",
                 SCHEMA_VERSION);
        if (!exec_ok(s->conn, schema_sql, NULL, why, sizeof why) ||
            !exec_ok(s->conn, insert, NULL, why, sizeof why))
            goto failed;
    }
    if (!exec_ok(s->conn, "COMMIT", NULL, why, sizeof why))
        goto failed;
    if (!exec_ok(s->conn,
                 "SELECT (has_table_privilege('call_events', 'INSERT')"
                 " AND has_table_privilege('calls', 'INSERT')"
                 " AND has_table_privilege('calls', 'UPDATE')"
                 " AND has_table_privilege('calls', 'SELECT'))::int",
                 &res, why, sizeof why))
        goto failed;
    if (scalar(res) != 1)
        return ch_error_set(err, CH_ESTORE,
                            "postgres '%s': the user may not write callhook's tables: GRANT "
                            "INSERT ON call_events TO it, and INSERT, UPDATE, SELECT ON calls",
                            s->label);
    return CH_OK;
failed:
    return ch_error_set(err, CH_ESTORE,
                        "postgres '%s': cannot create or read callhook's tables: %s (the user "
                        "needs CREATE on the schema, or the tables made beforehand: "
                        "docs/RECEIVER.md)",
                        s->label, why);
}

/* Connects, checks the schema and prepares the statements: at start and after a lost
 * connection. */
static ch_code connect_db(struct sink *s, struct ch_error *err)
{
    /* Processed in order, the DSN last: what it sets itself (connect_timeout...) wins. */
    const char *const keys[] = {"connect_timeout", "application_name", "client_encoding", "dbname",
                                NULL};
    const char *const values[] = {"5", "callhook-receive", "UTF8", s->dsn, NULL};
    s->conn = PQconnectdbParams(keys, values, 1);
    char why[512];
    if (s->conn == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    if (PQstatus(s->conn) != CONNECTION_OK) {
        one_line(PQerrorMessage(s->conn), why, sizeof why);
        drop_connection(s);
        return ch_error_set(err, CH_EUNAVAILABLE,
                            "cannot connect (check the DSN and that the server is up): %s", why);
    }
    ch_code rc = ensure_schema(s, err);
    for (int k = 0; rc == CH_OK && k < STMT_COUNT; k++) {
        PGresult *res = PQprepare(s->conn, stmt_names[k], s->sql[k], stmt_params[k], NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = ch_error_set(err, CH_ESTORE, "postgres '%s': cannot prepare a statement: %s",
                              s->label,
                              one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn),
                                       why, sizeof why));
        PQclear(res);
    }
    if (rc != CH_OK) {
        drop_connection(s);
        return rc;
    }
    pthread_mutex_lock(&s->lock);
    s->cancel = PQgetCancel(s->conn);
    pthread_mutex_unlock(&s->lock);
    return CH_OK;
}

static ch_code postgres_open(const char *target, const struct receive_config *c, struct sink **out,
                             struct ch_error *err)
{
    (void)c;
    if (target == NULL || target[0] == '\0')
        return ch_error_set(err, CH_EINVAL,
                            "postgres: the DSN is missing (e.g. postgres:postgresql://user@host/db "
                            "or postgres:'host=... dbname=...')");
    if (strlen(target) >= DSN_MAX)
        return ch_error_set(err, CH_EINVAL, "postgres DSN is longer than %d bytes", DSN_MAX - 1);
    struct sink *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    snprintf(s->dsn, sizeof s->dsn, "%s", target);
    sink_label(target, s->label, sizeof s->label);
    pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->interrupted, false);
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(target, &perr);
    if (opts == NULL) {
        char why[512];
        ch_code rc = ch_error_set(err, CH_EINVAL, "postgres DSN '%s' is not valid: %s", s->label,
                                  one_line(perr ? perr : "out of memory", why, sizeof why));
        PQfreemem(perr);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return rc;
    }
    PQconninfoFree(opts);
    ch_code rc = make_sql(s) ? connect_db(s, err)
                             : ch_error_set(err, CH_EINVAL, "postgres: statements too long");
    if (rc != CH_OK) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return rc;
    }
    *out = s;
    return CH_OK;
}

static size_t postgres_batch_max(const struct sink *s)
{
    (void)s;
    return BATCH_MAX;
}

/* ---- an event's parameters ---- */

/* obj's member key in any letter case, the exact spelling first. */
static json_t *member(json_t *obj, const char *key)
{
    if (!json_is_object(obj))
        return NULL;
    json_t *v = json_object_get(obj, key);
    if (v)
        return v;
    const char *k;
    json_object_foreach(obj, k, v) if (strcasecmp(k, key) == 0) return v;
    return NULL;
}

static int days_in(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* Reads n digits at *p into *v. */
static bool digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return false;
        *v = *v * 10 + (**p - '0');
    }
    return true;
}

/*
 * An ISO 8601 time ("2026-11-27T09:14:03.512Z", an offset "+02:00", or none: UTC) written
 * as PostgreSQL reads it whatever its settings, or false when it is not one. Checked here so
 * that a malformed time in one record is a NULL, not a failed batch.
 */
static bool iso_time(const char *t, char out[TIME_TEXT])
{
    int y, mo, d, h, mi, sec = 0, oh = 0, om = 0;
    char frac[7] = "0";
    const char *p = t;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return false;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
        return false;
    if (*p == ':') {
        p++;
        if (!digits(&p, 2, &sec))
            return false;
        if (*p == '.' || *p == ',') {
            p++;
            size_t n = 0;
            while (*p >= '0' && *p <= '9') {
                if (n < 6)
                    frac[n++] = *p;
                p++;
            }
            if (n == 0)
                return false;
            frac[n] = '\0';
        }
    }
    char sign = '+';
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++;
        if (!digits(&p, 2, &oh))
            return false;
        if (*p == ':')
            p++;
        if (*p != '\0' && !digits(&p, 2, &om))
            return false;
    }
    if (*p != '\0' || y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in(y, mo) || h > 23 ||
        mi > 59 || sec > 59 || oh > 15 || om > 59)
        return false;
    snprintf(out, TIME_TEXT, "%04d-%02d-%02dT%02d:%02d:%02d.%s%c%02d:%02d", y, mo, d, h, mi, sec,
             frac, sign, oh, om);
    return true;
}

/* A field's value as the text of its parameter, or NULL (missing, null or of another type). */
static const char *field_text(json_t *doc, const struct field *f, char buf[TIME_TEXT])
{
    json_t *v = member(doc, f->path[0]);
    if (f->path[1])
        v = member(v, f->path[1]);
    switch (f->kind) {
    case COL_TIME:
        return json_is_string(v) && iso_time(json_string_value(v), buf) ? buf : NULL;
    case COL_NUM:
        if (json_is_real(v)) {
            snprintf(buf, TIME_TEXT, "%.17g", json_real_value(v));
            return buf;
        }
        return NULL;
    case COL_TEXT:
        /* A number that is a whole one, kept exactly (below 2^53), as its decimal text. */
        if (json_is_real(v)) {
            double x = json_real_value(v);
            if (x >= 9007199254740992.0 || x <= -9007199254740992.0 || x != (double)(long long)x)
                return NULL;
            snprintf(buf, TIME_TEXT, "%lld", (long long)x);
            return buf;
        }
        return json_is_string(v) ? json_string_value(v) : NULL;
    }
    return NULL;
}

/*
 * Fills a row's parameters from an inbox entry. A body that is not JSON PostgreSQL takes (not
 * UTF-8, a NUL, malformed) goes to call_events with record NULL and record_text its escaped
 * text; only a JSON object with a call key (ActiveCallId, else CorrelationId) and an event
 * of begin-call or end-call goes on to `calls`.
 */
static bool fill_row(struct row *r, const struct ch_inbox_entry *e)
{
    const char **v = r->values;
    const char *body = e->body_len ? e->body : "";
    v[P_WEBHOOK_ID] = e->webhook_id;
    v[P_EVENT] = e->event;
    snprintf(r->received_at, sizeof r->received_at, "%lld", e->received_at);
    v[P_RECEIVED_AT] = r->received_at;
    r->stmt = STMT_EVENT;
    /* Jansson refuses what jsonb refuses too: bytes that are not UTF-8 and \u0000. Numbers are
     * read as doubles, so an integer past 64 bits is no reason to refuse a record. */
    if (memchr(body, '\0', e->body_len) == NULL)
        r->doc = json_loadb(body, e->body_len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
    if (r->doc == NULL) {
        size_t need = text_escape(body, e->body_len, NULL, 0) + 1;
        r->record_text = malloc(need);
        if (r->record_text == NULL)
            return false;
        text_escape(body, e->body_len, r->record_text, need);
        v[P_RECORD_TEXT] = r->record_text;
        return true;
    }
    v[P_RECORD] = body;
    if (!json_is_object(r->doc) || ch_record_parse(&r->rec, body, e->body_len, 0, NULL) != CH_OK)
        return true;
    const char *key = ch_record_dedupe_key(&r->rec);
    v[P_CALL_KEY] = key;
    v[P_ACTIVE_CALL_ID] = r->rec.has_active_call_id ? r->rec.active_call_id : NULL;
    v[P_CORRELATION_ID] = r->rec.has_correlation_id ? r->rec.correlation_id : NULL;
    if (r->rec.call_type_kind != CH_CALL_TYPE_ABSENT) {
        snprintf(r->call_type, sizeof r->call_type, "%lld", r->rec.call_type);
        v[P_CALL_TYPE] = r->call_type;
        v[P_CALL_TYPE_NAME] = ch_call_type_name(r->rec.call_type_kind, r->rec.call_type,
                                                r->call_type_name, sizeof r->call_type_name);
    }
    bool begin = strcmp(e->event, "begin-call") == 0, end = strcmp(e->event, "end-call") == 0;
    if (key == NULL || (!begin && !end))
        return true;
    r->stmt = begin ? STMT_BEGIN : STMT_END;
    json_t *start = member(r->doc, "StartTimeUtc");
    if (json_is_string(start) && iso_time(json_string_value(start), r->started_at))
        v[P_STARTED_AT] = r->started_at;
    for (size_t i = 0; i < NFIELDS; i++)
        v[P_FIELDS + i] = field_text(r->doc, &fields[i], r->text[i]);
    return true;
}

static void release_rows(struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(rows[i].doc);
        free(rows[i].record_text);
    }
    free(rows);
}

/* ---- running a batch ---- */

enum run { RUN_OK, RUN_LOST, RUN_TRANSIENT, RUN_DATA };

/* Whether an error of this SQLSTATE may pass by itself (connection, cancel, shutdown, lock,
 * deadlock, resources), so the batch is retried whole rather than event by event. */
static bool transient(const char *state)
{
    if (state == NULL)
        return true;
    static const char *const classes[] = {"08", "40", "53", "57", "58", "55P03", "XX"};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
        if (strncmp(state, classes[i], strlen(classes[i])) == 0)
            return true;
    return false;
}

/*
 * Sends rows[idx[0..m)] as one pipeline: one implicit transaction, committed at the sync or
 * rolled back whole at the first error (its message in why). The connection is dropped when
 * it is lost or left in a state it should not be in.
 */
static enum run run_pipeline(struct sink *s, struct row *rows, const size_t *idx, size_t m,
                             char *why, size_t cap)
{
    PGconn *c = s->conn;
    enum run out = RUN_OK;
    why[0] = '\0';
    if (!PQenterPipelineMode(c)) {
        one_line(PQerrorMessage(c), why, cap);
        drop_connection(s);
        return RUN_LOST;
    }
    size_t sent = 0;
    for (; sent < m; sent++) {
        struct row *r = &rows[idx[sent]];
        if (!PQsendQueryPrepared(c, stmt_names[r->stmt], stmt_params[r->stmt], r->values, NULL,
                                 NULL, 0))
            break;
    }
    if (sent < m || !PQpipelineSync(c)) {
        one_line(PQerrorMessage(c), why, cap);
        drop_connection(s);
        return RUN_LOST;
    }
    for (size_t i = 0; i < sent && out != RUN_LOST; i++) {
        PGresult *res = PQgetResult(c);
        if (res == NULL) {
            one_line(PQerrorMessage(c), why, cap);
            out = RUN_LOST;
            break;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR && out == RUN_OK) {
            one_line(PQresultErrorMessage(res), why, cap);
            out = transient(PQresultErrorField(res, PG_DIAG_SQLSTATE)) ? RUN_TRANSIENT : RUN_DATA;
        } else if (st != PGRES_COMMAND_OK && st != PGRES_PIPELINE_ABORTED &&
                   st != PGRES_FATAL_ERROR) {
            snprintf(why, cap, "unexpected result %s", PQresStatus(st));
            out = RUN_LOST;
        }
        PQclear(res);
        /* Each query's results end with a NULL. */
        if (out != RUN_LOST && (res = PQgetResult(c)) != NULL) {
            PQclear(res);
            snprintf(why, cap, "more results than expected");
            out = RUN_LOST;
        }
    }
    if (out != RUN_LOST) {
        PGresult *res = PQgetResult(c);
        if (PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
            if (why[0] == '\0')
                one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(c), why, cap);
            out = RUN_LOST;
        }
        PQclear(res);
    }
    if (out != RUN_LOST && (!PQexitPipelineMode(c) || PQtransactionStatus(c) != PQTRANS_IDLE)) {
        if (why[0] == '\0')
            one_line(PQerrorMessage(c), why, cap);
        out = RUN_LOST;
    }
    if (out == RUN_LOST || PQstatus(c) != CONNECTION_OK) {
        drop_connection(s);
        out = RUN_LOST;
    }
    return out;
}

static void postgres_process(struct sink *s, const struct ch_inbox_entry *events, size_t n,
                             struct sink_result *results)
{
    if (n == 0)
        return;
    if (atomic_load(&s->interrupted)) {
        for (size_t i = 0; i < n; i++)
            sink_result_set(&results[i], SINK_GIVEN_BACK, 0,
                            "interrupted: the receiver is stopping");
        return;
    }
    struct row *rows = calloc(n, sizeof *rows);
    size_t *idx = calloc(n, sizeof *idx);
    bool ok = rows != NULL && idx != NULL;
    for (size_t i = 0; ok && i < n; i++)
        ok = fill_row(&rows[i], &events[i]);
    if (!ok) {
        for (size_t i = 0; i < n; i++)
            sink_result_set(&results[i], SINK_RETRY, 0, "out of memory");
        if (rows)
            release_rows(rows, n);
        free(idx);
        return;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    char why[400];
    struct ch_error err = {0};
    enum run run = RUN_LOST;
    if (s->conn == NULL && connect_db(s, &err) != CH_OK)
        snprintf(why, sizeof why, "%s", err.message);
    else
        run = run_pipeline(s, rows, idx, n, why, sizeof why);
    if (run == RUN_DATA && !atomic_load(&s->interrupted)) {
        /* One event the database refuses must not hold back the others: each alone. */
        for (size_t i = 0; i < n; i++) {
            char one[400];
            snprintf(one, sizeof one, "%s", why);
            enum run r1 = RUN_LOST;
            if (s->conn != NULL && !atomic_load(&s->interrupted))
                r1 = run_pipeline(s, rows, &idx[i], 1, one, sizeof one);
            if (r1 == RUN_OK)
                sink_result_set(&results[i], SINK_DONE, 0, "%s", "");
            else
                sink_result_set(&results[i], SINK_RETRY, 0, "postgres: %s", one);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            if (run == RUN_OK)
                sink_result_set(&results[i], SINK_DONE, 0, "%s", "");
            else if (atomic_load(&s->interrupted))
                sink_result_set(&results[i], SINK_GIVEN_BACK, 0,
                                "interrupted: the receiver is stopping");
            else
                sink_result_set(&results[i], SINK_RETRY, 0, "postgres%s: %s",
                                run == RUN_LOST ? " (connection lost, reconnecting)" : "", why);
        }
    }
    release_rows(rows, n);
    free(idx);
}

/* Sticky: once interrupted (at stop), process() gives every event back at once until close.
 * A statement running now is cancelled (PQcancel is safe from another thread). */
static void postgres_interrupt(struct sink *s)
{
    atomic_store(&s->interrupted, true);
    pthread_mutex_lock(&s->lock);
    if (s->cancel) {
        char buf[256];
        PQcancel(s->cancel, buf, sizeof buf);
    }
    pthread_mutex_unlock(&s->lock);
}

static void postgres_close(struct sink *s)
{
    if (s == NULL)
        return;
    drop_connection(s);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

const struct sink_ops sink_postgres_ops = {
    .scheme = "postgres",
    .open = postgres_open,
    .batch_max = postgres_batch_max,
    .process = postgres_process,
    .interrupt = postgres_interrupt,
    .close = postgres_close,
    .lane = true,
};
