/*
 * The store interface, backend by backend: every test here goes through the store's front door
 * (store_*()) only, so the same suite runs on each backend and checks the contract there. Each test
 * gets a new SQLite file in a temporary folder; the PostgreSQL backend is to run this same suite.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/crypto.h"
#include "store/store.h"

#include <libpq-fe.h>
#include <sqlite3.h>

static char dir[256];
static char uri[512];

static const unsigned char data_key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                           11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                                           21, 22, 23, 24, 25, 26, 27, 28, 29};

/* With CALLHOOK_TEST_SEALED=1 every test runs through the encrypting decorator too. */
static struct store *open_store(void)
{
    struct store *s = NULL;
    struct ch_error err = {0};
    if (store_open(uri, &s, &err) != CH_OK)
        fail_msg("cannot open %s: %s", uri, err.message);
    const char *sealed = getenv("CALLHOOK_TEST_SEALED");
    if (sealed && strcmp(sealed, "1") == 0) {
        struct store *wrapped = NULL;
        if (store_sealed_wrap(s, data_key, &wrapped, &err) != CH_OK)
            fail_msg("cannot wrap: %s", err.message);
        s = wrapped;
    }
    return s;
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    static char data[4 << 20];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++) {
        if (memcmp(data + i, needle, m) == 0)
            return true;
    }
    return false;
}

/* With CALLHOOK_TEST_STORE_URI (a PostgreSQL database), the suite runs on that backend. */
static const char *pg_uri(void)
{
    const char *u = getenv("CALLHOOK_TEST_STORE_URI");
    return u && *u ? u : NULL;
}

/* Empties the PostgreSQL database: the store creates its schema again when opened. */
static void reset_postgres(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to %s: %s", conninfo, PQerrorMessage(c));
    PGresult *r = PQexec(c, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("cannot reset %s: %s", conninfo, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

/* Runs SQL on the test's database behind the store's back (to inject a failure). */
static void raw_postgres(const char *conninfo, const char *sql)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to %s: %s", conninfo, PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("cannot run %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
}

static void raw_sqlite(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("cannot run %s on %s: %s", sql, path, msg ? msg : sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* Runs SQL on the test's database (either backend) behind the store's back. */
static void raw_sql(const char *sql)
{
    if (pg_uri())
        raw_postgres(pg_uri(), sql);
    else
        raw_sqlite(uri + 7, sql);
}

/* "X'..'" (SQLite) or "'\x..'::bytea" (PostgreSQL): bytes as an SQL literal. */
static void sql_bytes(const unsigned char *b, size_t n, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, pg_uri() ? "'\\x" : "X'");
    for (size_t i = 0; i < n && o + 3 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%02x", b[i]);
    snprintf(out + o, cap - o, pg_uri() ? "'::bytea" : "'");
}

/* Each test starts on an empty database. */
static int fresh(void **state)
{
    static int n;
    if (pg_uri()) {
        reset_postgres(pg_uri());
        snprintf(uri, sizeof uri, "%s", pg_uri());
    } else {
        snprintf(uri, sizeof uri, "sqlite:%s/db%d/callhook.db", dir, ++n);
    }
    *state = open_store();
    return 0;
}

static int close_store(void **state)
{
    struct store *s = *state;
    store_close(s);
    return 0;
}

static void put_app(struct store *s, const char *id, bool enabled)
{
    struct stored_app a = {.enabled = enabled, .created_at = 100, .updated_at = 100};
    snprintf(a.id, sizeof a.id, "%s", id);
    snprintf(a.secret, sizeof a.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    a.config_json = strdup("{}");
    bool created;
    assert_int_equal(store_app_put(s, &a, &created, NULL), CH_OK);
    stored_app_release(&a);
}

/* Ingests one event with a lease of lease_s; status_in says skip (SKIPPED), ordering (PENDING)
 * or neither. */
static struct ingest_item ingest_leased(struct store *s, const char *msg_id, const char *app,
                                        const char *event, const char *key,
                                        enum msg_status status_in, int64_t now, int64_t lease_s)
{
    static const char body[] = "{\"ActiveCallId\":\"k\"}";
    struct ingest_item it = {.msg_id = msg_id,
                             .app_id = app,
                             .event = event,
                             .dedupe_key = key,
                             .has_call_type = true,
                             .call_type = 4,
                             .body = body,
                             .body_len = sizeof body - 1,
                             .now = now,
                             .lease_until = now + lease_s,
                             .want = status_in == MSG_SKIPPED   ? INGEST_SKIP
                                     : status_in == MSG_PENDING ? INGEST_WAIT_BEGIN
                                                                : INGEST_DELIVER};
    assert_int_equal(store_ingest(s, &it, 1, NULL), CH_OK);
    return it;
}

/* The same with a lease of 300 s. */
static struct ingest_item ingest(struct store *s, const char *msg_id, const char *app,
                                 const char *event, const char *key, enum msg_status status_in,
                                 int64_t now)
{
    return ingest_leased(s, msg_id, app, event, key, status_in, now, 300);
}

/* The same with a lease that has run out at once (lease_until == now): on PostgreSQL a lease
 * runs on the database's clock, so this is how a test makes a claimed message free again. */
static struct ingest_item ingest_expired(struct store *s, const char *msg_id, const char *app,
                                         const char *event, const char *key, int64_t now)
{
    return ingest_leased(s, msg_id, app, event, key, MSG_DELIVERING, now, 0);
}

static size_t claim(struct store *s, int64_t now, struct due_message *out, size_t max)
{
    size_t n = 0;
    assert_int_equal(store_claim_due(s, now, now + 300, out, max, &n, NULL), CH_OK);
    return n;
}

static void free_claimed(struct due_message *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i].body);
}

static struct attempt_result result(int64_t seq, enum msg_status st, int64_t next_at)
{
    struct attempt_result r = {.seq = seq,
                               .at_ms = 1000000,
                               .duration_ms = 12,
                               .http_status = st == MSG_DELIVERED ? 200 : 500,
                               .new_status = st,
                               .next_attempt_at = next_at};
    if (st != MSG_DELIVERED) {
        r.error_class = "http";
        r.error = "HTTP 500";
        r.response = "oops";
        r.response_len = 4;
    }
    return r;
}

static void test_keys(void **state)
{
    struct store *s = *state;
    unsigned char h1[32] = {1}, h2[32] = {2}, h3[32] = {3};
    int64_t n = -1;
    assert_int_equal(store_key_count(s, &n, NULL), CH_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_key_add(s, "chk_00000001", h1, ROLE_ADMIN, 1, NULL), CH_OK);
    assert_int_equal(store_key_add(s, "chk_00000002", h2, ROLE_INGEST, 2, NULL), CH_OK);
    enum key_role role = ROLE_NONE;
    assert_int_equal(store_key_lookup(s, h2, &role, NULL), CH_OK);
    assert_int_equal(role, ROLE_INGEST);
    assert_int_equal(store_key_lookup(s, h3, &role, NULL), CH_ENOTFOUND);
    assert_int_equal(store_key_revoke(s, "chk_00000002", NULL), CH_OK);
    assert_int_equal(store_key_lookup(s, h2, &role, NULL), CH_ENOTFOUND);
    assert_int_equal(store_key_revoke(s, "chk_nope", NULL), CH_ENOTFOUND);
    assert_int_equal(store_key_count(s, &n, NULL), CH_OK);
    assert_int_equal(n, 1);
    /* The same hash twice is refused. */
    assert_int_not_equal(store_key_add(s, "chk_00000003", h1, ROLE_READ, 3, NULL), CH_OK);
}

static void count_app(void *ctx, const struct stored_app *a)
{
    (void)a;
    (*(int *)ctx)++;
}

static void test_apps(void **state)
{
    struct store *s = *state;
    struct stored_app a = {.enabled = true, .created_at = 5, .updated_at = 6};
    snprintf(a.id, sizeof a.id, "app-1");
    snprintf(a.secret, sizeof a.secret, "whsec_x");
    a.config_json = strdup("{\"maxInFlight\":3}");
    bool created = false;
    assert_int_equal(store_app_put(s, &a, &created, NULL), CH_OK);
    assert_true(created);
    snprintf(a.prev_secret, sizeof a.prev_secret, "whsec_old");
    a.prev_expires_at = 99;
    assert_int_equal(store_app_put(s, &a, &created, NULL), CH_OK);
    assert_false(created);
    stored_app_release(&a);

    struct stored_app got;
    assert_int_equal(store_app_get(s, "app-1", &got, NULL), CH_OK);
    assert_string_equal(got.config_json, "{\"maxInFlight\":3}");
    assert_string_equal(got.secret, "whsec_x");
    assert_string_equal(got.prev_secret, "whsec_old");
    assert_int_equal(got.prev_expires_at, 99);
    assert_int_equal(got.created_at, 5);
    assert_true(got.enabled);
    stored_app_release(&got);

    put_app(s, "app-2", true);
    int count = 0;
    assert_int_equal(store_app_list(s, count_app, &count, NULL), CH_OK);
    assert_int_equal(count, 2);
    assert_int_equal(store_app_delete(s, "app-2", NULL), CH_OK);
    assert_int_equal(store_app_delete(s, "app-2", NULL), CH_ENOTFOUND);
    assert_int_equal(store_app_get(s, "app-2", &got, NULL), CH_ENOTFOUND);
}

static void test_ingest_and_duplicates(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item a = ingest(s, "msg_a", "app", "begin-call", "call-1", MSG_DELIVERING, 1000);
    assert_false(a.duplicate);
    assert_int_equal(a.status, MSG_DELIVERING);
    assert_true(a.seq > 0);
    struct ingest_item again =
        ingest(s, "msg_a", "app", "begin-call", "call-1", MSG_DELIVERING, 1001);
    assert_true(again.duplicate);
    assert_int_equal(again.seq, a.seq);
    struct ingest_item unknown =
        ingest(s, "msg_b", "nope", "begin-call", "call-1", MSG_DELIVERING, 1000);
    assert_true(unknown.unknown_app);
    struct ingest_item skipped = ingest(s, "msg_c", "app", "end-call", "call-9", MSG_SKIPPED, 1000);
    assert_int_equal(skipped.status, MSG_SKIPPED);

    /* A batch: per-item results, one transaction. */
    static const char body[] = "{}";
    struct ingest_item items[3] = {
        {.msg_id = "msg_d",
         .app_id = "app",
         .event = "begin-call",
         .dedupe_key = "c2",
         .body = body,
         .body_len = 2,
         .now = 5,
         .lease_until = 305,
         .want = INGEST_DELIVER},
        {.msg_id = "msg_d",
         .app_id = "app",
         .event = "begin-call",
         .dedupe_key = "c2",
         .body = body,
         .body_len = 2,
         .now = 5,
         .lease_until = 305,
         .want = INGEST_DELIVER},
        {.msg_id = "msg_e",
         .app_id = "gone",
         .event = "begin-call",
         .dedupe_key = "c3",
         .body = body,
         .body_len = 2,
         .now = 5,
         .lease_until = 305,
         .want = INGEST_DELIVER},
    };
    assert_int_equal(store_ingest(s, items, 3, NULL), CH_OK);
    assert_false(items[0].duplicate);
    assert_true(items[1].duplicate);
    assert_int_equal(items[1].seq, items[0].seq);
    assert_true(items[2].unknown_app);

    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
    assert_string_equal(m.app_id, "app");
    assert_string_equal(m.event, "begin-call");
    assert_string_equal(m.dedupe_key, "call-1");
    assert_true(m.has_call_type);
    assert_int_equal(m.call_type, 4);
    assert_int_equal(m.status, MSG_DELIVERING);
    assert_int_equal(m.body_len, 20);
    assert_int_equal(store_message_get(s, "msg_b", &m, NULL), CH_ENOTFOUND);
}

/* A fresh event is claimed by its ingest: the scan leaves it until its lease runs out.
 * SQLite: on the caller's clock. */
static void test_leases(void **state)
{
    struct store *s = *state;
    if (pg_uri())
        return; /* test_leases_on_database_clock */
    put_app(s, "app", true);
    ingest(s, "msg_a", "app", "begin-call", "call-1", MSG_DELIVERING, 1000);
    struct due_message out[4];
    assert_int_equal(claim(s, 1000, out, 4), 0);
    assert_int_equal(claim(s, 1299, out, 4), 0);
    size_t n = claim(s, 1300, out, 4); /* the lease (1000 + 300) is over: a crash */
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_a");
    assert_int_equal(out[0].body_len, 20);
    assert_memory_equal(out[0].body, "{\"ActiveCallId\":\"k\"}", 20);
    free_claimed(out, n);
    /* Claimed again: held until 1600. */
    assert_int_equal(claim(s, 1599, out, 4), 0);
    /* Renewed while held: still held past the old lease. */
    int64_t seq = out[0].seq;
    assert_int_equal(store_renew(s, &seq, 1, 1500, 2000, NULL), CH_OK);
    assert_int_equal(claim(s, 1700, out, 4), 0);
    /* Given back: due at once. */
    assert_int_equal(store_release(s, &seq, 1, 1400, NULL), CH_OK);
    n = claim(s, 1400, out, 4);
    assert_int_equal(n, 1);
    free_claimed(out, n);
}

/* PostgreSQL: a lease is its length on the database's clock, whatever clock the nodes keep, so a
 * node whose clock is far ahead (a step) does not take over a live lease, and a node whose
 * clock is far behind still renews its own. Due times stay on the callers' clocks. */
static void test_leases_on_database_clock(void **state)
{
    struct store *s = *state;
    if (pg_uri() == NULL)
        return; /* test_leases */
    const int64_t ahead = (int64_t)time(NULL) + 3600, behind = (int64_t)time(NULL) - 3600;
    put_app(s, "app", true);
    ingest(s, "msg_a", "app", "begin-call", "call-1", MSG_DELIVERING, 1000);
    struct due_message out[4];
    /* Held for 300 s from the database's now: an hour ahead on a node is not past it. */
    assert_int_equal(claim(s, ahead, out, 4), 0);
    /* A lease renewed by a node an hour behind is still 300 s long. */
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
    int64_t seq = m.seq;
    assert_int_equal(store_renew(s, &seq, 1, behind, behind + 300, NULL), CH_OK);
    assert_int_equal(claim(s, ahead, out, 4), 0);
    /* A zero-length renewal lets it go at once, whatever the claimer's clock. */
    assert_int_equal(store_renew(s, &seq, 1, behind, behind, NULL), CH_OK);
    size_t n = claim(s, 5, out, 4);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_a");
    free_claimed(out, n);
    /* Claimed for 300 s again, by a claimer whose clock reads 5. */
    assert_int_equal(claim(s, ahead, out, 4), 0);
    /* Given back with a due time: that is on the callers' clocks. */
    assert_int_equal(store_release(s, &seq, 1, 1400, NULL), CH_OK);
    assert_int_equal(claim(s, 1399, out, 4), 0);
    n = claim(s, 1400, out, 4);
    assert_int_equal(n, 1);
    free_claimed(out, n);
}

static void test_end_waits_for_begin(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item b = ingest(s, "msg_b", "app", "begin-call", "call-1", MSG_DELIVERING, 1000);
    /* Ordering asked (PENDING in): the begin-call is open, so the end-call waits. */
    struct ingest_item e = ingest(s, "msg_e", "app", "end-call", "call-1", MSG_PENDING, 1000);
    assert_int_equal(e.status, MSG_PENDING);
    struct due_message out[4];
    assert_int_equal(claim(s, 1000, out, 4), 0);
    /* The begin-call fails and will be retried: still open, the end-call still waits. */
    struct attempt_result r = result(b.seq, MSG_PENDING, 1010);
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    size_t n = claim(s, 1005, out, 4);
    assert_int_equal(n, 0);
    n = claim(s, 1010, out, 4);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_b");
    assert_int_equal(out[0].attempts, 1);
    free_claimed(out, n);
    r = result(b.seq, MSG_DELIVERED, 0);
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    n = claim(s, 1011, out, 4);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_e");
    free_claimed(out, n);

    /* With the begin-call resolved, a new end-call of the same call does not wait. */
    struct ingest_item e2 = ingest(s, "msg_e2", "app", "end-call", "call-1", MSG_PENDING, 1020);
    assert_int_equal(e2.status, MSG_DELIVERING);
    /* Without ordering, an end-call never waits. */
    ingest(s, "msg_b3", "app", "begin-call", "call-3", MSG_DELIVERING, 1020);
    struct ingest_item e3 = ingest(s, "msg_e3", "app", "end-call", "call-3", MSG_DELIVERING, 1020);
    assert_int_equal(e3.status, MSG_DELIVERING);
}

/* In one batch, an end-call waits on a begin-call that came before it in the batch, whatever
 * their message ids (PostgreSQL stores a batch in message-id order); results land on their own
 * items. */
static void test_batch_results_and_order(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item old = ingest(s, "msg_old", "app", "begin-call", "c4", MSG_DELIVERING, 1);
    static const char body[] = "{}";
    struct {
        const char *id, *app, *event, *key;
        enum ingest_want want;
    } in[] = {
        {"msg_a1", "app", "end-call", "c1", INGEST_WAIT_BEGIN}, /* its begin-call comes later */
        {"msg_z1", "app", "begin-call", "c1", INGEST_DELIVER},
        {"msg_z2", "app", "begin-call", "c2", INGEST_DELIVER},
        {"msg_a2", "app", "end-call", "c2", INGEST_WAIT_BEGIN}, /* waits on msg_z2 */
        {"msg_z3", "app", "begin-call", "c3", INGEST_SKIP},
        {"msg_a3", "app", "end-call", "c3", INGEST_WAIT_BEGIN}, /* its begin-call is skipped */
        {"msg_a2", "app", "end-call", "c2", INGEST_WAIT_BEGIN}, /* a duplicate of item 3 */
        {"msg_b1", "gone", "end-call", "c5", INGEST_DELIVER},   /* no such app */
        {"msg_a4", "app", "end-call", "c4", INGEST_WAIT_BEGIN}, /* waits on msg_old */
        {"msg_old", "app", "begin-call", "c4", INGEST_DELIVER}, /* stored before */
        {"msg_a5", "app", "end-call", "c5", INGEST_DELIVER},    /* no ordering asked */
        {"msg_b1", "app", "end-call", "c5", INGEST_DELIVER},    /* item 7's id, an app */
    };
    enum { N = sizeof in / sizeof in[0] };
    struct ingest_item items[N];
    for (size_t i = 0; i < N; i++)
        items[i] = (struct ingest_item){.msg_id = in[i].id,
                                        .app_id = in[i].app,
                                        .event = in[i].event,
                                        .dedupe_key = in[i].key,
                                        .body = body,
                                        .body_len = 2,
                                        .now = 10,
                                        .lease_until = 310,
                                        .want = in[i].want};
    assert_int_equal(store_ingest(s, items, N, NULL), CH_OK);
    static const enum msg_status want_status[N] = {
        MSG_DELIVERING, MSG_DELIVERING, MSG_DELIVERING, MSG_PENDING,
        MSG_SKIPPED,    MSG_DELIVERING, MSG_PENDING,    0,
        MSG_PENDING,    MSG_DELIVERING, MSG_DELIVERING, MSG_DELIVERING};
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(items[i].result, i == 7 ? CH_ENOTFOUND : CH_OK);
        assert_int_equal(items[i].unknown_app, i == 7);
        assert_int_equal(items[i].duplicate, i == 6 || i == 9);
        if (i != 7)
            assert_int_equal(items[i].status, want_status[i]);
    }
    assert_int_equal(items[6].seq, items[3].seq);
    assert_int_equal(items[9].seq, old.seq);
    for (size_t i = 0; i < N; i++) {
        for (size_t j = i + 1; j < N; j++) {
            if (i != 7 && j != 7 && !(i == 3 && j == 6))
                assert_true(items[i].seq != items[j].seq);
        }
    }
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_a2", &m, NULL), CH_OK);
    assert_int_equal(m.seq, items[3].seq);
    assert_int_equal(m.status, MSG_PENDING);
    assert_string_equal(m.dedupe_key, "c2");
    assert_false(m.has_call_type);
    assert_int_equal(m.body_len, 2);
    assert_int_equal(store_message_get(s, "msg_b1", &m, NULL), CH_OK);
    assert_int_equal(m.seq, items[11].seq);
    assert_string_equal(m.app_id, "app");
}

static void count_attempt(void *ctx, const struct attempt_view *a)
{
    int *n = ctx;
    if (*n == 0) {
        assert_int_equal(a->http_status, 500);
        assert_string_equal(a->error_class, "http");
        assert_string_equal(a->response, "oops");
        assert_int_equal(a->duration_ms, 12);
    }
    (*n)++;
}

static void test_attempts_dead_and_recover(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item a = ingest(s, "msg_a", "app", "begin-call", "c", MSG_DELIVERING, 1000);
    struct attempt_result r[2] = {result(a.seq, MSG_PENDING, 1001), result(a.seq, MSG_DEAD, 0)};
    assert_int_equal(store_record_attempts(s, r, 2, NULL), CH_OK);
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
    assert_int_equal(m.status, MSG_DEAD);
    assert_int_equal(m.attempts, 2);
    assert_string_equal(m.last_error, "HTTP 500");
    int n = 0;
    assert_int_equal(store_message_attempts(s, m.seq, count_attempt, &n, NULL), CH_OK);
    assert_int_equal(n, 2);
    struct due_message out[2];
    assert_int_equal(claim(s, 5000, out, 2), 0);

    int64_t requeued = 0;
    assert_int_equal(store_app_recover(s, "app", 1001, 5000, &requeued, NULL), CH_OK);
    assert_int_equal(requeued, 0); /* created before `since` */
    assert_int_equal(store_app_recover(s, "app", 0, 5000, &requeued, NULL), CH_OK);
    assert_int_equal(requeued, 1);
    size_t got = claim(s, 5000, out, 2);
    assert_int_equal(got, 1);
    free_claimed(out, got);
    r[0] = result(a.seq, MSG_DELIVERED, 0);
    assert_int_equal(store_record_attempts(s, r, 1, NULL), CH_OK);
    assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
    assert_int_equal(m.status, MSG_DELIVERED);
    assert_true(m.delivered_at > 0);
    /* Replay makes a delivered message due again. */
    assert_int_equal(store_message_requeue(s, "msg_a", 6000, NULL), CH_OK);
    got = claim(s, 6000, out, 2);
    assert_int_equal(got, 1);
    free_claimed(out, got);
    assert_int_equal(store_message_requeue(s, "msg_none", 6000, NULL), CH_ENOTFOUND);
}

/* replay --new-id: a copy of a message under a new id, with the same record (through the
 * encrypting wrapper too: the record is sealed again to the copy's place, so it opens there),
 * due now; the original is untouched and an upstream repeat is still its duplicate. */
static void test_copy_under_a_new_id(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item a = ingest(s, "msg_a", "app", "end-call", "c", MSG_DELIVERING, 1000);
    struct attempt_result r = result(a.seq, MSG_DELIVERED, 0);
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);

    assert_int_equal(store_message_copy(s, "msg_a", "msg_b", NULL, 0, 7000, NULL), CH_OK);
    struct message_view m, orig;
    assert_int_equal(store_message_get(s, "msg_b", &m, NULL), CH_OK);
    assert_int_equal(store_message_get(s, "msg_a", &orig, NULL), CH_OK);
    assert_string_equal(m.app_id, "app");
    assert_string_equal(m.event, "end-call");
    assert_string_equal(m.dedupe_key, "c");
    assert_true(m.has_call_type);
    assert_int_equal(m.call_type, 4);
    assert_int_equal(m.status, MSG_PENDING);
    assert_int_equal(m.attempts, 0);
    assert_int_equal(m.created_at, 7000);
    assert_int_equal(m.body_len, orig.body_len);
    assert_int_equal(orig.status, MSG_DELIVERED);
    assert_int_equal(orig.attempts, 1);

    struct due_message out[2];
    size_t n = claim(s, 7000, out, 2);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_b");
    static const char body[] = "{\"ActiveCallId\":\"k\"}";
    assert_int_equal(out[0].body_len, sizeof body - 1);
    assert_memory_equal(out[0].body, body, sizeof body - 1);
    free_claimed(out, n);

    /* A given record is what the copy stores; a copy of a copy works the same. */
    assert_int_equal(store_message_copy(s, "msg_b", "msg_c", "{\"x\":1}", 7, 7001, NULL), CH_OK);
    n = claim(s, 7001, out, 2);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_c");
    assert_int_equal(out[0].body_len, 7);
    assert_memory_equal(out[0].body, "{\"x\":1}", 7);
    free_claimed(out, n);

    struct ingest_item again = ingest(s, "msg_a", "app", "end-call", "c", MSG_DELIVERING, 8000);
    assert_true(again.duplicate);
    assert_int_equal(again.seq, a.seq);

    assert_int_equal(store_message_copy(s, "msg_a", "msg_a", NULL, 0, 7000, NULL), CH_EINVAL);
    assert_int_equal(store_message_copy(s, "msg_none", "msg_d", NULL, 0, 7000, NULL), CH_ENOTFOUND);
    assert_int_not_equal(store_message_copy(s, "msg_a", "msg_b", NULL, 0, 7000, NULL), CH_OK);
    struct ingest_item sk = ingest(s, "msg_s", "app", "begin-call", "s", MSG_SKIPPED, 1000);
    assert_int_equal(sk.status, MSG_SKIPPED);
    assert_int_equal(store_message_copy(s, "msg_s", "msg_d", NULL, 0, 7000, NULL), CH_ENOTFOUND);

    /* A copy for a disabled app waits, parked, like any of its messages. */
    put_app(s, "app", false);
    assert_int_equal(store_message_copy(s, "msg_a", "msg_e", NULL, 0, 7100, NULL), CH_OK);
    assert_int_equal(claim(s, 7100, out, 2), 0);
    put_app(s, "app", true);
    n = claim(s, 7100, out, 2); /* (msg_b and msg_c are leased until 7300) */
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_e");
    free_claimed(out, n);

    /* Retention emptied the record: nothing to send again. Deleted app: never again. */
    int64_t payloads = 0, attempts = 0;
    assert_int_equal(store_purge(s, 100000, 0, &payloads, &attempts, NULL), CH_OK);
    assert_int_equal(store_message_copy(s, "msg_a", "msg_f", NULL, 0, 9000, NULL), CH_ENOTFOUND);
    put_app(s, "other", true);
    ingest(s, "msg_o", "other", "begin-call", "o", MSG_DELIVERING, 1000);
    assert_int_equal(store_app_delete(s, "other", NULL), CH_OK);
    assert_int_equal(store_message_copy(s, "msg_o", "msg_g", NULL, 0, 9000, NULL), CH_ENOTFOUND);
}

/* Stats count by the API's statuses (failed apart from pending) and leave a disabled app's
 * backlog out of the oldest pending age. */
static void test_stats_by_api_status(void **state)
{
    struct store *s = *state;
    put_app(s, "on", true);
    put_app(s, "off", false);
    ingest(s, "msg_old", "off", "begin-call", "o", MSG_DELIVERING, 100); /* parked */
    struct ingest_item f = ingest(s, "msg_f", "on", "begin-call", "f", MSG_DELIVERING, 1000);
    struct attempt_result r = result(f.seq, MSG_PENDING, 1001);
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    struct ingest_item d = ingest(s, "msg_d", "on", "begin-call", "d", MSG_DELIVERING, 2000);
    r = result(d.seq, MSG_DELIVERED, 0);
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    ingest(s, "msg_l", "on", "end-call", "l", MSG_DELIVERING, 3000); /* claimed */

    struct store_stats st;
    assert_int_equal(store_stats(s, &st, NULL), CH_OK);
    assert_int_equal(st.pending, 1); /* msg_old */
    assert_int_equal(st.failed, 1);  /* msg_f */
    assert_int_equal(st.delivering, 1);
    assert_int_equal(st.delivered, 1);
    assert_int_equal(st.parked, 1);
    assert_int_equal(st.oldest_pending_at, 1000);
    put_app(s, "on", false);
    assert_int_equal(store_stats(s, &st, NULL), CH_OK);
    assert_int_equal(st.parked, 3);
    assert_int_equal(st.oldest_pending_at, 0);
}

/* app_stats: what the callback was given, by app id. */
struct seen_apps {
    struct app_stats a[8];
    int n;
};

static void see_app(void *ctx, const struct app_stats *a)
{
    struct seen_apps *seen = ctx;
    if (seen->n < 8)
        seen->a[seen->n] = *a;
    seen->n++;
}

/* Per Voice App, in id order: its state, its counts as stats counts them (failed apart from
 * pending, parked for a disabled app's waiting messages), the oldest unparked waiting
 * message, and the last error of its newest message that has one; an app without messages
 * has zeros; a deleted app's messages count for no one, even an app of the same id made
 * later. The store's kind, schema version and sealed flag are set at open. */
static void test_app_stats(void **state)
{
    struct store *s = *state;
    assert_string_equal(s->kind, pg_uri() ? "postgresql" : "sqlite");
    assert_true(s->schema_version >= 6);
    const char *sealed = getenv("CALLHOOK_TEST_SEALED");
    assert_int_equal(s->sealed, sealed != NULL && strcmp(sealed, "1") == 0);

    put_app(s, "on", true);
    put_app(s, "off", false);
    put_app(s, "empty", true);
    put_app(s, "gone", true);
    ingest(s, "msg_g", "gone", "begin-call", "g", MSG_DELIVERING, 50);
    assert_int_equal(store_app_delete(s, "gone", NULL), CH_OK);
    put_app(s, "gone", true); /* starts empty */

    ingest(s, "msg_p1", "off", "begin-call", "p1", MSG_DELIVERING, 100); /* parked */
    ingest(s, "msg_p2", "off", "begin-call", "p2", MSG_DELIVERING, 110); /* parked */
    struct ingest_item f = ingest(s, "msg_f", "on", "begin-call", "f", MSG_DELIVERING, 1000);
    struct attempt_result r = result(f.seq, MSG_PENDING, 1001);
    r.error = "HTTP 500 first";
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    struct ingest_item x = ingest(s, "msg_x", "on", "begin-call", "x", MSG_DELIVERING, 1500);
    r = result(x.seq, MSG_DEAD, 0);
    r.error = "HTTP 503 newest";
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    struct ingest_item d = ingest(s, "msg_d", "on", "begin-call", "d", MSG_DELIVERING, 2000);
    r = result(d.seq, MSG_DELIVERED, 0);
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    ingest(s, "msg_l", "on", "end-call", "l", MSG_DELIVERING, 3000); /* claimed */
    ingest(s, "msg_w", "on", "end-call", "f", MSG_PENDING, 900);     /* waits on msg_f */
    ingest(s, "msg_s", "on", "end-call", "s", MSG_SKIPPED, 4000);

    struct seen_apps seen = {0};
    assert_int_equal(store_app_stats(s, see_app, &seen, NULL), CH_OK);
    assert_int_equal(seen.n, 4);
    assert_string_equal(seen.a[0].id, "empty");
    assert_string_equal(seen.a[1].id, "gone");
    assert_string_equal(seen.a[2].id, "off");
    assert_string_equal(seen.a[3].id, "on");
    for (int i = 0; i < 2; i++) {
        const struct store_stats *c = &seen.a[i].counts;
        assert_true(seen.a[i].enabled);
        assert_int_equal(c->pending + c->failed + c->delivering + c->delivered + c->dead +
                             c->skipped + c->parked + c->oldest_pending_at,
                         0);
        assert_string_equal(seen.a[i].last_error, "");
        assert_int_equal(seen.a[i].last_error_at, 0);
    }
    const struct app_stats *off = &seen.a[2], *on = &seen.a[3];
    assert_false(off->enabled);
    assert_int_equal(off->counts.pending, 2);
    assert_int_equal(off->counts.parked, 2);
    assert_int_equal(off->counts.oldest_pending_at, 0); /* parked: not waiting to be sent */
    assert_string_equal(off->last_error, "");
    assert_true(on->enabled);
    assert_string_equal(on->disabled_reason, "");
    assert_int_equal(on->counts.pending, 1); /* msg_w */
    assert_int_equal(on->counts.failed, 1);  /* msg_f */
    assert_int_equal(on->counts.delivering, 1);
    assert_int_equal(on->counts.delivered, 1);
    assert_int_equal(on->counts.dead, 1);
    assert_int_equal(on->counts.skipped, 1);
    assert_int_equal(on->counts.parked, 0);
    assert_int_equal(on->counts.oldest_pending_at, 900);
    assert_string_equal(on->last_error, "HTTP 503 newest");
    assert_int_equal(on->last_error_at, 1500);
    assert_string_equal(on->last_error_msg, "msg_x");

    /* A 410 disables "on" with its reason: its waiting messages are parked. */
    r = result(f.seq, MSG_PENDING, 5000);
    r.http_status = 410;
    r.disable_app = true;
    r.app_id = "on";
    r.error = "HTTP 410 Gone";
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_app_stats(s, see_app, &seen, NULL), CH_OK);
    assert_int_equal(seen.n, 4);
    on = &seen.a[3];
    assert_false(on->enabled);
    assert_string_equal(on->disabled_reason, "HTTP 410 Gone");
    assert_int_equal(on->counts.parked, 3); /* msg_f, msg_w and the claimed msg_l */
    assert_int_equal(on->counts.oldest_pending_at, 0);
    assert_string_equal(on->last_error, "HTTP 503 newest"); /* msg_x is newer than msg_f */
}

/* A batch of results where one message comes back: each result is an attempt, and the later
 * result is the message's state. */
static void test_attempts_batch_with_a_repeat(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item a = ingest(s, "msg_a", "app", "begin-call", "c1", MSG_DELIVERING, 1000);
    struct ingest_item b = ingest(s, "msg_b", "app", "begin-call", "c2", MSG_DELIVERING, 1000);
    struct ingest_item c = ingest(s, "msg_c", "app", "begin-call", "c3", MSG_DELIVERING, 1000);
    struct attempt_result r[4] = {result(a.seq, MSG_PENDING, 1001), result(b.seq, MSG_DELIVERED, 0),
                                  result(a.seq, MSG_DELIVERED, 0),
                                  result(c.seq, MSG_PENDING, 1002)};
    assert_int_equal(store_record_attempts(s, r, 4, NULL), CH_OK);
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
    assert_int_equal(m.status, MSG_DELIVERED);
    assert_int_equal(m.attempts, 2);
    int n = 0;
    assert_int_equal(store_message_attempts(s, m.seq, count_attempt, &n, NULL), CH_OK);
    assert_int_equal(n, 2);
    assert_int_equal(store_message_get(s, "msg_b", &m, NULL), CH_OK);
    assert_int_equal(m.status, MSG_DELIVERED);
    assert_int_equal(m.attempts, 1);
    assert_int_equal(store_message_get(s, "msg_c", &m, NULL), CH_OK);
    assert_int_equal(m.status, MSG_PENDING);
    assert_int_equal(m.attempts, 1);
    assert_int_equal(m.next_attempt_at, 1002);
    assert_string_equal(m.last_error, "HTTP 500");
}

static void test_disabled_apps_wait(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item a = ingest(s, "msg_a", "app", "begin-call", "c", MSG_DELIVERING, 1000);
    struct attempt_result r = result(a.seq, MSG_PENDING, 1001);
    r.http_status = 410;
    r.disable_app = true;
    r.app_id = "app";
    r.error = "HTTP 410 Gone";
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    struct stored_app got;
    assert_int_equal(store_app_get(s, "app", &got, NULL), CH_OK);
    assert_false(got.enabled);
    assert_string_equal(got.disabled_reason, "HTTP 410 Gone");
    stored_app_release(&got);
    struct due_message out[2];
    assert_int_equal(claim(s, 2000, out, 2), 0);
    put_app(s, "app", true); /* an admin re-enables it */
    size_t n = claim(s, 2000, out, 2);
    assert_int_equal(n, 1);
    free_claimed(out, n);
}

/* A disabled app's events wait, parked, whatever put them there (ingest, a disable with a retry
 * pending, a replay or a recovery while disabled), and all come back, in order, once it is
 * enabled. Ingest into a disabled app does not claim the event for this node. */
static void test_disabled_apps_park(void **state)
{
    struct store *s = *state;
    put_app(s, "off", false);
    const char *ids[] = {"msg_p1", "msg_p2", "msg_p3"};
    for (int i = 0; i < 3; i++) {
        struct ingest_item it =
            ingest(s, ids[i], "off", "begin-call", ids[i], MSG_DELIVERING, 1000);
        assert_int_equal(it.result, CH_OK);
        assert_false(it.duplicate);
        assert_int_equal(it.status, MSG_PENDING);
    }
    struct due_message out[8];
    assert_int_equal(claim(s, 5000, out, 8), 0);

    put_app(s, "on", true);
    struct ingest_item r = ingest(s, "msg_r", "on", "begin-call", "r", MSG_DELIVERING, 1000);
    assert_int_equal(r.status, MSG_DELIVERING);
    struct attempt_result fail = result(r.seq, MSG_PENDING, 1001);
    assert_int_equal(store_record_attempts(s, &fail, 1, NULL), CH_OK);
    put_app(s, "on", false); /* a retry is pending: it parks too */
    assert_int_equal(claim(s, 5000, out, 8), 0);
    assert_int_equal(store_message_requeue(s, "msg_r", 5000, NULL), CH_OK);
    int64_t n = 0;
    assert_int_equal(store_app_recover(s, "on", 0, 5000, &n, NULL), CH_OK);
    assert_int_equal(claim(s, 6000, out, 8), 0);

    put_app(s, "off", true);
    size_t got = claim(s, 6000, out, 8);
    assert_int_equal(got, 3);
    for (size_t i = 0; i < got; i++)
        assert_string_equal(out[i].msg_id, ids[i]);
    free_claimed(out, got);
    put_app(s, "on", true);
    got = claim(s, 6000, out, 8);
    assert_int_equal(got, 1);
    assert_string_equal(out[0].msg_id, "msg_r");
    free_claimed(out, got);
}

/* PostgreSQL: an event another node stores parked while its app is being enabled (the
 * trigger's update cannot see a row not yet committed) is unparked by the next claim's sweep,
 * not left waiting until the app is disabled and enabled again. The race's outcome is made
 * here by enabling the app with the trigger off. */
static void test_parked_by_a_race_comes_back(void **state)
{
    struct store *s = *state;
    if (!pg_uri())
        return; /* one writer: SQLite has no such race */
    put_app(s, "app", false);
    struct ingest_item it = ingest(s, "msg_raced", "app", "begin-call", "k", MSG_DELIVERING, 1000);
    assert_int_equal(it.status, MSG_PENDING);
    raw_sql("ALTER TABLE voice_apps DISABLE TRIGGER voice_apps_parked;"
            "UPDATE voice_apps SET enabled = 1 WHERE id = 'app';"
            "ALTER TABLE voice_apps ENABLE TRIGGER voice_apps_parked;");
    struct due_message out[2];
    size_t n = claim(s, 5000, out, 2);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_raced");
    free_claimed(out, n);
}

/* SQLite under sustained ingest: checkpoints run beside the writer, yet the WAL starts again
 * instead of growing with the database (a first version let it reach the size of everything
 * stored). 60,000 events of 1.4 KB in batches of 500, one commit each; the WAL is checked
 * after every batch against three times the checkpoint threshold (8,000 frames of 4 KiB):
 * without the writer copying the tail it reaches its own bound, four times. */
static void test_wal_stays_bounded(void **state)
{
    struct store *s = *state;
    if (pg_uri())
        return;
    put_app(s, "app", false); /* parked: nothing is claimed meanwhile */
    enum { BATCH = 500, BATCHES = 120 };
    static char ids[BATCH][40], keys[BATCH][40];
    static struct ingest_item items[BATCH];
    char body[1400];
    memset(body, 'x', sizeof body);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", uri + 7);
    long largest = 0;
    for (int b = 0; b < BATCHES; b++) {
        for (int i = 0; i < BATCH; i++) {
            snprintf(ids[i], sizeof ids[i], "msg_%d_%d", b, i);
            snprintf(keys[i], sizeof keys[i], "call-%d-%d", b, i);
            items[i] = (struct ingest_item){.msg_id = ids[i],
                                            .app_id = "app",
                                            .event = "begin-call",
                                            .dedupe_key = keys[i],
                                            .body = body,
                                            .body_len = sizeof body,
                                            .now = 1000,
                                            .lease_until = 1300};
        }
        assert_int_equal(store_ingest(s, items, BATCH, NULL), CH_OK);
        struct stat st;
        if (stat(wal, &st) == 0 && st.st_size > largest)
            largest = (long)st.st_size;
    }
    assert_true(largest > 0);
    assert_true(largest < 3L * 8000 * 4120);
}

/* Deleting an app ends its messages at once; an app made again with its id starts empty, and
 * an attempt that was in flight through the delete does not bring its message back. */
static void test_delete_app_ends_its_messages(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    put_app(s, "other", true);
    struct ingest_item f = ingest(s, "msg_f", "app", "begin-call", "c1", MSG_DELIVERING, 1000);
    struct ingest_item d = ingest(s, "msg_d", "app", "begin-call", "c2", MSG_DELIVERING, 1000);
    struct ingest_item h = ingest(s, "msg_h", "app", "begin-call", "c3", MSG_DELIVERING, 1000);
    ingest_leased(s, "msg_o", "other", "begin-call", "c1", MSG_DELIVERING, 1000, 100000);
    struct attempt_result r[2] = {result(f.seq, MSG_PENDING, 1001),
                                  result(d.seq, MSG_DELIVERED, 0)};
    assert_int_equal(store_record_attempts(s, r, 2, NULL), CH_OK);
    assert_int_equal(store_app_delete(s, "app", NULL), CH_OK);
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_f", &m, NULL), CH_OK); /* was failed */
    assert_int_equal(m.status, MSG_DEAD);
    assert_string_equal(m.last_error, "app deleted");
    assert_true(m.app_deleted);
    assert_true(m.body_len > 0);                                      /* kept for the log */
    assert_int_equal(store_message_get(s, "msg_h", &m, NULL), CH_OK); /* was claimed */
    assert_int_equal(m.status, MSG_DEAD);
    assert_int_equal(store_message_get(s, "msg_d", &m, NULL), CH_OK); /* was delivered */
    assert_int_equal(m.status, MSG_DELIVERED);
    assert_true(m.app_deleted);
    assert_int_equal(store_message_get(s, "msg_o", &m, NULL), CH_OK);
    assert_int_equal(m.status, MSG_DELIVERING);
    assert_false(m.app_deleted);

    put_app(s, "app", true); /* a namesake */
    /* msg_h's attempt was in flight: its retry does not make it due again. */
    struct attempt_result late = result(h.seq, MSG_PENDING, 1001);
    assert_int_equal(store_record_attempts(s, &late, 1, NULL), CH_OK);
    assert_int_equal(store_message_get(s, "msg_h", &m, NULL), CH_OK);
    assert_int_equal(m.status, MSG_DEAD);
    struct due_message out[4];
    assert_int_equal(claim(s, 5000, out, 4), 0);
    assert_int_equal(store_message_requeue(s, "msg_f", 5000, NULL), CH_ENOTFOUND);
    int64_t requeued = -1;
    assert_int_equal(store_app_recover(s, "app", 0, 5000, &requeued, NULL), CH_OK);
    assert_int_equal(requeued, 0);
    assert_int_equal(claim(s, 5000, out, 4), 0);
    /* The namesake's own messages go as usual. */
    ingest_expired(s, "msg_n", "app", "begin-call", "c9", 5000);
    size_t n = claim(s, 5000, out, 4);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].msg_id, "msg_n");
    free_claimed(out, n);
}

struct collected {
    char ids[16][40];
    int n;
    int64_t last_seq;
};

static void collect(void *ctx, const struct message_view *m)
{
    struct collected *c = ctx;
    if (c->n < 16)
        snprintf(c->ids[c->n], sizeof c->ids[0], "%s", m->msg_id);
    c->n++;
    c->last_seq = m->seq;
}

static void test_list_filters_and_cursor(void **state)
{
    struct store *s = *state;
    put_app(s, "a1", true);
    put_app(s, "a2", true);
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "msg_%d", i);
        char key[8];
        snprintf(key, sizeof key, "k%d", i);
        ingest(s, id, i % 2 ? "a2" : "a1", i < 3 ? "begin-call" : "end-call", key, MSG_DELIVERING,
               1000 + i);
    }
    struct message_filter f = {.status = -1, .attempted = -1, .limit = 10};
    struct collected c = {0};
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 5);
    assert_string_equal(c.ids[0], "msg_4"); /* newest first */

    f.app_id = "a1";
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 3);
    f.event = "end-call";
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.ids[0], "msg_4");
    f = (struct message_filter){.attempted = -1, .status = -1, .limit = 10, .dedupe_key = "k2"};
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 1);
    f = (struct message_filter){.attempted = -1, .status = -1, .limit = 10, .since = 1003};
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 2);
    f = (struct message_filter){.attempted = -1, .status = MSG_DELIVERED, .limit = 10};
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 0);

    /* Pages of two, following the cursor, see every message once. */
    f = (struct message_filter){.attempted = -1, .status = -1, .limit = 2};
    int seen = 0;
    for (int page = 0; page < 4; page++) {
        memset(&c, 0, sizeof c);
        assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
        seen += c.n;
        if (c.n < 2)
            break;
        f.before_seq = c.last_seq;
    }
    assert_int_equal(seen, 5);

    struct store_stats st;
    assert_int_equal(store_stats(s, &st, NULL), CH_OK);
    assert_int_equal(st.delivering, 5);
    assert_int_equal(st.oldest_pending_at, 1000);
}

/* What a committed ingest wrote is there after the store is closed and opened again. */
static void test_durable_across_reopen(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    ingest(s, "msg_a", "app", "begin-call", "c", MSG_DELIVERING, 1000);
    store_close(s);
    s = open_store();
    *state = s;
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
    struct ingest_item again = ingest(s, "msg_a", "app", "begin-call", "c", MSG_DELIVERING, 1001);
    assert_true(again.duplicate);
}

/* SQLite: a restarted node gets back its own claims at once, and a second process is refused.
 * PostgreSQL: nodes share the database, so a start takes nothing back (leases run out) and
 * another node may start beside it. */
static void test_startup(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    ingest(s, "msg_a", "app", "begin-call", "c", MSG_DELIVERING, 1000);
    int64_t released = -1;
    if (pg_uri()) {
        assert_int_equal(store_startup(s, 1001, &released, NULL), CH_OK);
        assert_int_equal(released, 0);
        struct due_message none[1];
        assert_int_equal(claim(s, 1001, none, 1), 0);
        struct store *other = open_store();
        assert_int_equal(store_startup(other, 1002, &released, NULL), CH_OK);
        assert_int_equal(claim(other, 1300, none, 1), 0); /* the lease holds */
        /* Its lease runs out (the first node is gone): another node takes it. */
        struct message_view m;
        assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
        assert_int_equal(store_renew(s, &m.seq, 1, 1300, 1300, NULL), CH_OK);
        size_t n = claim(other, 1300, none, 1);
        assert_int_equal(n, 1);
        free_claimed(none, n);
        store_close(other);
        return;
    }
    assert_int_equal(store_startup(s, 1001, &released, NULL), CH_OK);
    assert_int_equal(released, 1);
    struct due_message out[2];
    size_t n = claim(s, 1001, out, 2);
    assert_int_equal(n, 1);
    free_claimed(out, n);

    struct store *other = open_store();
    struct ch_error err = {0};
    assert_int_equal(store_startup(other, 1002, &released, &err), CH_EUNAVAILABLE);
    assert_non_null(strstr(err.message, "another callhook serve"));
    store_close(other);
}

/* Encryption at rest: the file holds no plaintext record or secret; reads give them back. */
static void test_sealed_at_rest(void **state)
{
    (void)state;
    char path[600];
    snprintf(uri, sizeof uri, "sqlite:%s/sealed/callhook.db", dir);
    snprintf(path, sizeof path, "%s/sealed/callhook.db", dir);
    struct store *plain = NULL, *s = NULL;
    assert_int_equal(store_open(uri, &plain, NULL), CH_OK);
    assert_int_equal(store_sealed_wrap(plain, data_key, &s, NULL), CH_OK);
    struct stored_app a = {.enabled = true, .created_at = 1, .updated_at = 1};
    snprintf(a.id, sizeof a.id, "app");
    snprintf(a.secret, sizeof a.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    static const char config[] = "{\"headers\":{\"Authorization\":\"Bearer tok-Hq83nXv27Lp\"}}";
    a.config_json = strdup(config);
    bool created;
    assert_int_equal(store_app_put(s, &a, &created, NULL), CH_OK);
    stored_app_release(&a);
    static const char body[] = "{\"ActiveCallId\":\"k\",\"CallerId\":\"+15550100123\"}";
    struct ingest_item it = {.msg_id = "msg_a",
                             .app_id = "app",
                             .event = "begin-call",
                             .dedupe_key = "k",
                             .body = body,
                             .body_len = sizeof body - 1,
                             .now = 1000,
                             .lease_until = 1000,
                             .want = INGEST_DELIVER};
    assert_int_equal(store_ingest(s, &it, 1, NULL), CH_OK);
    assert_ptr_equal(it.body, body); /* the caller's bytes, untouched */

    struct due_message out[1];
    size_t n = 0;
    assert_int_equal(store_claim_due(s, 1000, 1300, out, 1, &n, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].body_len, sizeof body - 1);
    assert_memory_equal(out[0].body, body, sizeof body - 1);
    free(out[0].body);
    struct stored_app got;
    assert_int_equal(store_app_get(s, "app", &got, NULL), CH_OK);
    assert_string_equal(got.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_string_equal(got.config_json, config);
    stored_app_release(&got);
    int listed = 0;
    assert_int_equal(store_app_list(s, count_app, &listed, NULL), CH_OK);
    assert_int_equal(listed, 1);
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_a", &m, NULL), CH_OK);
    assert_int_equal(m.body_len, sizeof body - 1);
    char wal[620];
    snprintf(wal, sizeof wal, "%s-wal", path);
    /* While the store is open, its writes are in the WAL. */
    assert_false(file_contains(wal, "tok-Hq83nXv27Lp"));
    assert_false(file_contains(wal, "+15550100123"));
    store_close(s);

    assert_false(file_contains(path, "+15550100123"));
    assert_false(file_contains(wal, "+15550100123"));
    assert_false(file_contains(path, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert_false(file_contains(wal, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert_false(file_contains(path, "tok-Hq83nXv27Lp"));
    assert_false(file_contains(wal, "tok-Hq83nXv27Lp"));

    /* The database knows it is sealed, and with which key: another key is refused. */
    static const unsigned char other_key[32] = {9};
    assert_int_equal(store_open(uri, &plain, NULL), CH_OK);
    bool sealed = false;
    assert_int_equal(store_is_sealed(plain, &sealed, NULL), CH_OK);
    assert_true(sealed);
    struct ch_error err = {0};
    assert_int_equal(store_sealed_wrap(plain, other_key, &s, &err), CH_ESECRET);
    assert_non_null(strstr(err.message, "the data key does not match this database's"));
    assert_int_equal(store_sealed_wrap(plain, data_key, &s, NULL), CH_OK);
    assert_int_equal(store_app_get(s, "app", &got, NULL), CH_OK);
    stored_app_release(&got);
    store_close(s);

    /* A database never opened with a key is not sealed. */
    snprintf(uri, sizeof uri, "sqlite:%s/unsealed/callhook.db", dir);
    assert_int_equal(store_open(uri, &plain, NULL), CH_OK);
    assert_int_equal(store_is_sealed(plain, &sealed, NULL), CH_OK);
    assert_false(sealed);
    store_close(plain);
}

/* Retention empties delivered records and old attempts, and nothing else. */
static void test_purge(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item d = ingest(s, "msg_d", "app", "begin-call", "c1", MSG_DELIVERING, 1000);
    struct ingest_item x = ingest(s, "msg_x", "app", "begin-call", "c2", MSG_DELIVERING, 1000);
    ingest(s, "msg_p", "app", "begin-call", "c3", MSG_DELIVERING, 1000);
    struct attempt_result r[2] = {result(d.seq, MSG_DELIVERED, 0), result(x.seq, MSG_DEAD, 0)};
    r[0].at_ms = 2000 * 1000LL;
    r[1].at_ms = 2000 * 1000LL;
    assert_int_equal(store_record_attempts(s, r, 2, NULL), CH_OK);
    int64_t payloads = -1, attempts = -1;
    assert_int_equal(store_purge(s, 2000, 2000 * 1000LL, &payloads, &attempts, NULL), CH_OK);
    assert_int_equal(payloads, 0); /* delivered at 2000: not before 2000 */
    assert_int_equal(attempts, 0);
    assert_int_equal(store_purge(s, 2001, 2001 * 1000LL, &payloads, &attempts, NULL), CH_OK);
    assert_int_equal(payloads, 1);
    assert_int_equal(attempts, 2);
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_d", &m, NULL), CH_OK);
    assert_int_equal(m.body_len, 0);
    assert_int_equal(store_message_get(s, "msg_x", &m, NULL), CH_OK);
    assert_true(m.body_len > 0); /* dead keeps its record */
    assert_int_equal(store_message_get(s, "msg_p", &m, NULL), CH_OK);
    assert_true(m.body_len > 0); /* undelivered keeps its record */
}

static int64_t apps_version(struct store *s)
{
    int64_t v = -1;
    assert_int_equal(store_apps_version(s, &v, NULL), CH_OK);
    return v;
}

/* Every way a Voice App row changes moves the version, and another handle (another node) sees
 * it; reading it changes nothing. */
static void test_apps_version(void **state)
{
    struct store *s = *state;
    struct store *other = open_store();
    int64_t v0 = apps_version(s);
    assert_int_equal(apps_version(s), v0);
    put_app(s, "app", true); /* insert */
    int64_t v1 = apps_version(other);
    assert_int_not_equal(v1, v0);
    put_app(s, "app", false); /* update: disabled */
    int64_t v2 = apps_version(other);
    assert_int_not_equal(v2, v1);
    put_app(s, "app", true);
    int64_t v3 = apps_version(other);
    assert_int_not_equal(v3, v2);
    /* A 410 disables the app from record_attempts. */
    struct ingest_item a = ingest(s, "msg_a", "app", "begin-call", "c", MSG_DELIVERING, 1000);
    assert_int_equal(apps_version(other), v3); /* messages are not apps */
    struct attempt_result r = result(a.seq, MSG_PENDING, 1001);
    r.disable_app = true;
    r.app_id = "app";
    r.error = "HTTP 410 Gone";
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    int64_t v4 = apps_version(other);
    assert_int_not_equal(v4, v3);
    assert_int_equal(store_app_delete(s, "app", NULL), CH_OK);
    int64_t v5 = apps_version(other);
    assert_int_not_equal(v5, v4);
    /* Never back to an earlier value. */
    assert_true(v0 < v1 && v1 < v2 && v2 < v3 && v3 < v4 && v4 < v5);
    store_close(other);
}

static int64_t take(struct store *s, const char *app, int64_t limit, int64_t want)
{
    int64_t g = -1;
    assert_int_equal(store_rate_take(s, app, limit, want, &g, NULL), CH_OK);
    assert_true(g >= 0 && g <= want);
    return g;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The limiter grants at most limit_per_s in any one second, to every handle (node) together,
 * per app; a deleted app's grants go with it. */
static void test_rate_take(void **state)
{
    struct store *s = *state;
    struct store *other = open_store();
    put_app(s, "a1", true);
    put_app(s, "a2", true);
    int64_t g = -1;
    struct ch_error err = {0};
    assert_int_equal(store_rate_take(s, "nope", 10, 1, &g, &err), CH_ENOTFOUND);
    assert_int_equal(g, 0);
    assert_int_equal(store_rate_take(s, "a1", 0, 1, &g, &err), CH_EINVAL);
    assert_int_equal(g, 0);
    assert_int_equal(take(s, "a1", 10, 0), 0);

    /* The grants of one burst, from two nodes, add up to at most the limit; whatever the
     * machine's speed, the calls span some whole number of seconds at most. */
    int64_t start = mono_ms(), total = 0;
    total += take(s, "a1", 10, 6);
    total += take(other, "a1", 10, 6);
    total += take(s, "a1", 10, 3);
    total += take(other, "a1", 10, 1);
    int64_t span = mono_ms() - start;
    assert_true(total >= 10);
    assert_true(total <= 10 * (span / 1000 + 1));
    if (span < 1000)
        assert_int_equal(take(s, "a2", 4, 9), 4); /* another app has its own budget */

    /* Deleted with its app: the same id made again starts with a whole budget. */
    assert_int_equal(store_app_delete(s, "a1", NULL), CH_OK);
    assert_int_equal(store_rate_take(other, "a1", 10, 1, &g, NULL), CH_ENOTFOUND);
    put_app(s, "a1", true);
    assert_int_equal(take(other, "a1", 10, 10), 10);

    /* The window moves on: within a few seconds the budget is back. */
    int64_t again = 0;
    for (int i = 0; i < 300 && again == 0; i++) {
        again = take(s, "a1", 10, 10);
        if (again == 0)
            nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    assert_true(again > 0);
    store_close(other);
}

/* A claim that fails part way returns nothing and leaves nothing allocated (ASan checks the
 * latter), and what it had claimed is claimed again once the failure is gone. The failure is
 * injected from outside: a trigger that refuses to lease the second message. */
static void test_claim_fails_part_way(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    ingest_expired(s, "msg_1", "app", "begin-call", "c1", 1000);
    ingest_expired(s, "msg_2", "app", "begin-call", "c2", 1000);
    ingest_expired(s, "msg_3", "app", "begin-call", "c3", 1000);
    if (pg_uri())
        raw_postgres(pg_uri(), "CREATE FUNCTION refuse_msg_2() RETURNS trigger LANGUAGE plpgsql"
                               " AS $$ BEGIN IF NEW.id = 'msg_2' AND NEW.status = 1 THEN"
                               " RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$;"
                               "CREATE TRIGGER refuse BEFORE UPDATE ON messages FOR EACH ROW"
                               " EXECUTE FUNCTION refuse_msg_2();");
    else
        raw_sqlite(uri + 7, "CREATE TRIGGER refuse BEFORE UPDATE ON messages"
                            " WHEN new.id = 'msg_2' AND new.status = 1"
                            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END;");
    struct due_message out[4];
    size_t n = 99;
    struct ch_error err = {0};
    assert_int_not_equal(store_claim_due(s, 2000, 2300, out, 4, &n, &err), CH_OK);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err.message, "injected failure"));
    if (pg_uri())
        raw_postgres(pg_uri(), "DROP TRIGGER refuse ON messages");
    else
        raw_sqlite(uri + 7, "DROP TRIGGER refuse");
    n = claim(s, 2000, out, 4);
    assert_int_equal(n, 3);
    assert_string_equal(out[0].msg_id, "msg_1");
    assert_string_equal(out[2].msg_id, "msg_3");
    free_claimed(out, n);
}

/* Through the encrypting wrapper: the second of three records was sealed under another data
 * key (written behind the store's back), so the claim fails there after opening the first;
 * nothing is returned or leaked. */
static void test_sealed_claim_fails_part_way(void **state)
{
    (void)state;
    static const unsigned char other_key[32] = {7};
    struct store *raw1 = NULL, *s1 = NULL;
    assert_int_equal(store_open(uri, &raw1, NULL), CH_OK);
    assert_int_equal(store_sealed_wrap(raw1, data_key, &s1, NULL), CH_OK);
    put_app(s1, "app", true);
    ingest_expired(s1, "msg_1", "app", "begin-call", "c1", 1000);
    ingest_expired(s1, "msg_2", "app", "begin-call", "c2", 1000);
    ingest_expired(s1, "msg_3", "app", "begin-call", "c3", 1000);
    unsigned char sealed[64];
    size_t len = 0;
    assert_true(crypto_seal(other_key, "{}", 2, sealed, sizeof sealed, &len));
    char lit[200], sql[400];
    sql_bytes(sealed, len, lit, sizeof lit);
    snprintf(sql, sizeof sql,
             "UPDATE message_bodies SET body = %s"
             " WHERE seq = (SELECT seq FROM messages WHERE id = 'msg_2')",
             lit);
    raw_sql(sql);
    struct due_message out[4];
    size_t n = 99;
    struct ch_error err = {0};
    assert_int_equal(store_claim_due(s1, 2000, 2300, out, 4, &n, &err), CH_ESTORE);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err.message, "msg_2"));
    store_close(s1);
}

/* A sealed value is bound to its place: a secret moved to another app's row, or a record to
 * another message, does not open there; and in a database sealed from its start, a plaintext
 * value written behind the wrapper's back is refused, not read. */
static void test_sealed_values_are_bound(void **state)
{
    (void)state;
    struct store *raw = NULL, *s = NULL;
    assert_int_equal(store_open(uri, &raw, NULL), CH_OK);
    assert_int_equal(store_sealed_wrap(raw, data_key, &s, NULL), CH_OK);
    put_app(s, "a", true);
    struct stored_app b = {.enabled = true, .created_at = 1, .updated_at = 1};
    snprintf(b.id, sizeof b.id, "b");
    snprintf(b.secret, sizeof b.secret, "whsec_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    b.config_json = strdup("{}");
    bool created;
    assert_int_equal(store_app_put(s, &b, &created, NULL), CH_OK);
    stored_app_release(&b);
    put_app(s, "c", true);
    ingest_expired(s, "msg_1", "a", "begin-call", "c1", 1000);
    ingest_expired(s, "msg_2", "a", "begin-call", "c2", 1000);

    /* b's sealed secret copied into a's row. */
    raw_sql("UPDATE voice_apps SET secret = (SELECT secret FROM voice_apps WHERE id = 'b')"
            " WHERE id = 'a'");
    struct stored_app got;
    struct ch_error err = {0};
    assert_int_equal(store_app_get(s, "a", &got, &err), CH_ESTORE);
    assert_non_null(strstr(err.message, "voice app 'a'"));
    assert_int_equal(store_app_get(s, "b", &got, NULL), CH_OK);
    stored_app_release(&got);
    /* b's settings copied into c's row. */
    raw_sql("UPDATE voice_apps SET config = (SELECT config FROM voice_apps WHERE id = 'b')"
            " WHERE id = 'c'");
    assert_int_equal(store_app_get(s, "c", &got, NULL), CH_ESTORE);
    /* A plaintext secret written behind the wrapper's back: a downgrade, refused. */
    raw_sql("UPDATE voice_apps SET secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',"
            " config = (SELECT config FROM voice_apps WHERE id = 'b') WHERE id = 'c'");
    assert_int_equal(store_app_get(s, "c", &got, NULL), CH_ESTORE);

    /* msg_1's record copied onto msg_2: the claim refuses msg_2. */
    raw_sql("UPDATE message_bodies SET body = (SELECT body FROM message_bodies WHERE seq ="
            " (SELECT seq FROM messages WHERE id = 'msg_1'))"
            " WHERE seq = (SELECT seq FROM messages WHERE id = 'msg_2')");
    struct due_message out[4];
    size_t n = 99;
    assert_int_equal(store_claim_due(s, 2000, 2000, out, 4, &n, &err), CH_ESTORE);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err.message, "msg_2"));
    /* And a plaintext record in its place is refused too. */
    char lit2[40], sql2[200];
    sql_bytes((const unsigned char *)"{}", 2, lit2, sizeof lit2);
    snprintf(sql2, sizeof sql2,
             "UPDATE message_bodies SET body = %s"
             " WHERE seq = (SELECT seq FROM messages WHERE id = 'msg_2')",
             lit2);
    raw_sql(sql2);
    n = 99;
    assert_int_equal(store_claim_due(s, 2000, 2000, out, 4, &n, &err), CH_ESTORE);
    assert_int_equal(n, 0);
    store_close(s);
}

/* ---- callhook store seal and rekey ---- */

/* Records of the seal and rekey tests: more than two of seal's pages (500). */
#define OLD_RECORDS 1005
static const char old_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
static const char old_prev[] = "whsec_PrEvPrEvPrEvPrEvPrEvPrEvPrEvPrEv";
static const char old_config[] = "{\"headers\":{\"Authorization\":\"Bearer tok-Hq83nXv27Lp\"}}";

/* A test on a database written without a data key: a fresh database, nothing opened yet. */
static int fresh_unopened(void **state)
{
    static int n;
    if (pg_uri()) {
        reset_postgres(pg_uri());
        snprintf(uri, sizeof uri, "%s", pg_uri());
    } else {
        snprintf(uri, sizeof uri, "sqlite:%s/old%d/callhook.db", dir, ++n);
    }
    *state = NULL;
    return 0;
}

static void old_body(int i, char *out, size_t cap)
{
    snprintf(out, cap, "{\"ActiveCallId\":\"call-%04d\",\"CallerId\":\"+15550100123\"}", i);
}

/* Fills the database as callhook did before a data key was set: two apps (one with a
 * previous secret and a token in its settings) and OLD_RECORDS records in plaintext, the
 * first of them sealed in the first, unbound form (an older callhook with the key). */
static void fill_old(void)
{
    struct store *raw = NULL;
    assert_int_equal(store_open(uri, &raw, NULL), CH_OK);
    const char *ids[] = {"a", "b"};
    for (int k = 0; k < 2; k++) {
        struct stored_app a = {.enabled = true, .created_at = 1, .updated_at = 1};
        snprintf(a.id, sizeof a.id, "%s", ids[k]);
        snprintf(a.secret, sizeof a.secret, "%s", old_secret);
        if (k == 1) {
            snprintf(a.prev_secret, sizeof a.prev_secret, "%s", old_prev);
            a.prev_expires_at = 1LL << 40;
        }
        a.config_json = strdup(old_config);
        bool created;
        assert_int_equal(store_app_put(raw, &a, &created, NULL), CH_OK);
        stored_app_release(&a);
    }
    static char ids_buf[OLD_RECORDS][40], keys[OLD_RECORDS][40], bodies[OLD_RECORDS][100];
    struct ingest_item items[100];
    for (int i = 0; i < OLD_RECORDS;) {
        size_t n = 0;
        for (; n < 100 && i < OLD_RECORDS; n++, i++) {
            snprintf(ids_buf[i], sizeof ids_buf[i], "msg_%04d", i);
            snprintf(keys[i], sizeof keys[i], "call-%04d", i);
            old_body(i, bodies[i], sizeof bodies[i]);
            items[n] = (struct ingest_item){.msg_id = ids_buf[i],
                                            .app_id = "a",
                                            .event = "begin-call",
                                            .dedupe_key = keys[i],
                                            .body = bodies[i],
                                            .body_len = strlen(bodies[i]),
                                            .now = 1000,
                                            .lease_until = 1000,
                                            .want = INGEST_DELIVER};
        }
        assert_int_equal(store_ingest(raw, items, n, NULL), CH_OK);
    }
    store_close(raw);
    unsigned char sealed[200];
    size_t len = 0;
    assert_true(crypto_seal(data_key, bodies[0], strlen(bodies[0]), sealed, sizeof sealed, &len));
    char lit[500], sql[800];
    sql_bytes(sealed, len, lit, sizeof lit);
    snprintf(sql, sizeof sql,
             "UPDATE message_bodies SET body = %s"
             " WHERE seq = (SELECT seq FROM messages WHERE id = 'msg_0000')",
             lit);
    raw_sql(sql);
}

/* Writes msg_<i>'s record sealed bound under key behind the store's back. */
static void put_bound_record(int i, const unsigned char *key)
{
    char body[100], where[64], id[40];
    old_body(i, body, sizeof body);
    snprintf(id, sizeof id, "msg_%04d", i);
    snprintf(where, sizeof where, "messages.body:%s", id);
    unsigned char sealed[200];
    size_t len = 0;
    assert_true(crypto_seal_bound(key, where, strlen(where), body, strlen(body), sealed,
                                  sizeof sealed, &len));
    char lit[500], sql[800];
    sql_bytes(sealed, len, lit, sizeof lit);
    snprintf(sql, sizeof sql,
             "UPDATE message_bodies SET body = %s"
             " WHERE seq = (SELECT seq FROM messages WHERE id = '%s')",
             lit, id);
    raw_sql(sql);
}

/* Opens the database through the wrapper with key: CH_OK or the wrap's error. */
static ch_code open_sealed(const unsigned char *key, struct store **out, struct ch_error *err)
{
    struct store *raw = NULL;
    assert_int_equal(store_open(uri, &raw, NULL), CH_OK);
    ch_code rc = store_sealed_wrap(raw, key, out, err);
    if (rc != CH_OK)
        store_close(raw);
    return rc;
}

/* Every app and every record reads back as it was written, through s. */
static void check_all_read(struct store *s)
{
    struct stored_app got;
    assert_int_equal(store_app_get(s, "a", &got, NULL), CH_OK);
    assert_string_equal(got.secret, old_secret);
    assert_string_equal(got.config_json, old_config);
    stored_app_release(&got);
    assert_int_equal(store_app_get(s, "b", &got, NULL), CH_OK);
    assert_string_equal(got.secret, old_secret);
    assert_string_equal(got.prev_secret, old_prev);
    stored_app_release(&got);
    static int64_t now = 10000;
    now += 1000; /* past every lease taken before */
    size_t total = 0, n;
    struct due_message out[64];
    do {
        struct ch_error err = {0};
        n = 0;
        if (store_claim_due(s, now, now + 300, out, 64, &n, &err) != CH_OK)
            fail_msg("claim: %s", err.message);
        int64_t seqs[64];
        for (size_t i = 0; i < n; i++) {
            char want[100];
            old_body(atoi(out[i].msg_id + 4), want, sizeof want);
            assert_int_equal(out[i].body_len, strlen(want));
            assert_memory_equal(out[i].body, want, strlen(want));
            free(out[i].body);
            seqs[i] = out[i].seq;
        }
        /* Given back, due after this pass (a lease runs on PostgreSQL's clock, not ours). */
        assert_int_equal(store_release(s, seqs, n, now + 1, NULL), CH_OK);
        total += n;
    } while (n > 0);
    assert_int_equal(total, OLD_RECORDS);
}

static ch_code seal(const unsigned char *key, struct store_reseal_counts *c, struct ch_error *err)
{
    struct store *raw = NULL;
    assert_int_equal(store_open(uri, &raw, NULL), CH_OK);
    ch_code rc = store_sealed_seal(raw, key, c, err);
    store_close(raw);
    return rc;
}

static ch_code rekey(const unsigned char *old_key, const unsigned char *new_key,
                     struct store_reseal_counts *c, struct ch_error *err)
{
    struct store *raw = NULL;
    assert_int_equal(store_open(uri, &raw, NULL), CH_OK);
    ch_code rc = store_sealed_rekey(raw, old_key, new_key, c, err);
    store_close(raw);
    return rc;
}

/* A database written before its data key was set: read in its old forms (and said so) until
 * 'store seal', which seals every value bound to its place; then the old forms are refused. */
static void test_store_seal_in_place(void **state)
{
    (void)state;
    fill_old();
    char path[600], wal[620];
    if (!pg_uri()) {
        snprintf(path, sizeof path, "%s", uri + 7);
        snprintf(wal, sizeof wal, "%s-wal", path);
        assert_true(file_contains(path, "+15550100123") || file_contains(wal, "+15550100123"));
    }
    struct store *s = NULL;
    assert_int_equal(open_sealed(data_key, &s, NULL), CH_OK);
    assert_true(store_sealed_reads_old_forms(s));
    check_all_read(s);
    store_close(s);

    struct store_reseal_counts c;
    struct ch_error err = {0};
    if (seal(data_key, &c, &err) != CH_OK)
        fail_msg("seal: %s", err.message);
    assert_int_equal(c.secrets, 3); /* a's secret, b's secret and previous secret */
    assert_int_equal(c.settings, 2);
    assert_int_equal(c.records, OLD_RECORDS);
    assert_int_equal(c.unchanged, 0);
    /* Again: nothing left to do. */
    assert_int_equal(seal(data_key, &c, NULL), CH_OK);
    assert_int_equal(c.secrets + c.settings + c.records, 0);
    assert_int_equal(c.unchanged, 3 + 2 + OLD_RECORDS);
    if (!pg_uri()) {
        /* (The ActiveCallId stays in clear as the dedupe key, by design.) */
        const char *plain[] = {"+15550100123", old_secret, old_prev, "tok-Hq83nXv27Lp"};
        for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
            assert_false(file_contains(path, plain[i]));
            assert_false(file_contains(wal, plain[i]));
        }
    }

    assert_int_equal(open_sealed(data_key, &s, NULL), CH_OK);
    assert_false(store_sealed_reads_old_forms(s));
    check_all_read(s);
    /* A plaintext value written behind its back is refused now, by serve and by seal. */
    raw_sql("UPDATE voice_apps SET secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'"
            " WHERE id = 'a'");
    struct stored_app got;
    assert_int_equal(store_app_get(s, "a", &got, NULL), CH_ESTORE);
    store_close(s);
    assert_int_equal(seal(data_key, &c, &err), CH_ESTORE);
    assert_non_null(strstr(err.message, "'voice_apps.secret:a' is not sealed in the bound form"));
    /* And another key is refused. */
    static const unsigned char other_key[32] = {42};
    assert_int_equal(seal(other_key, &c, &err), CH_ESECRET);
}

/* 'store rekey' re-seals everything under the new key and makes it the database's; stopped
 * part way, it refuses serve meanwhile and is finished by running it again. */
static void test_store_rekey(void **state)
{
    (void)state;
    static const unsigned char new_key[32] = {200, 201, 202, 203, 204, 205};
    static const unsigned char third_key[32] = {77};
    fill_old();
    struct store_reseal_counts c;
    struct ch_error err = {0};
    assert_int_equal(seal(data_key, &c, NULL), CH_OK);

    /* Not sealed yet, or the wrong old key, or the same key: refused. */
    assert_int_equal(rekey(third_key, new_key, &c, &err), CH_ESECRET);
    assert_non_null(strstr(err.message, "does not match"));
    assert_int_equal(rekey(data_key, data_key, &c, &err), CH_EINVAL);

    /* A run that stops part way: msg_0003 is re-sealed already (by the run before), msg_1004
     * opens under neither key, so the run stops at the last page. */
    put_bound_record(3, new_key);
    put_bound_record(1004, third_key);
    assert_int_equal(rekey(data_key, new_key, &c, &err), CH_ESTORE);
    assert_non_null(strstr(err.message, "messages.body:msg_1004"));
    /* Meanwhile serve opens it with neither key. */
    struct store *s = NULL;
    assert_int_equal(open_sealed(data_key, &s, &err), CH_ESECRET);
    assert_non_null(strstr(err.message, "run 'callhook store rekey' again"));
    assert_int_equal(open_sealed(new_key, &s, &err), CH_ESECRET);
    /* Nor is a rekey to a third key started. */
    assert_int_equal(rekey(data_key, third_key, &c, &err), CH_ESECRET);

    /* The value put right, the same run again finishes: what the first run did is done. */
    put_bound_record(1004, data_key);
    if (rekey(data_key, new_key, &c, &err) != CH_OK)
        fail_msg("rekey: %s", err.message);
    assert_int_equal(c.secrets + c.settings, 0);
    assert_int_equal(c.records, 5); /* the last page: msg_1000 .. msg_1004 */
    assert_int_equal(c.unchanged, 3 + 2 + OLD_RECORDS - 5);

    assert_int_equal(open_sealed(data_key, &s, &err), CH_ESECRET);
    assert_non_null(strstr(err.message, "the data key does not match this database's"));
    assert_int_equal(open_sealed(new_key, &s, NULL), CH_OK);
    assert_false(store_sealed_reads_old_forms(s));
    check_all_read(s);
    store_close(s);
    /* Once more: nothing to do. */
    assert_int_equal(rekey(data_key, new_key, &c, NULL), CH_OK);
    assert_int_equal(c.secrets + c.settings + c.records, 0);
}

/* The front door holds the contract whatever a backend does: a backend that returns an error
 * with messages (and their bodies) handed over, or messages out of order. */
static size_t fake_n;
static ch_code fake_rc;

static ch_code fake_claim(struct store *s, int64_t now, int64_t lease_until,
                          struct due_message *out, size_t max, size_t *n, struct ch_error *err)
{
    (void)s, (void)now, (void)lease_until, (void)err;
    for (size_t i = 0; i < fake_n && i < max; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].seq = (int64_t)(fake_n - i); /* newest first: the wrong order */
        out[i].body = strdup("{}");
        out[i].body_len = 2;
    }
    *n = fake_n < max ? fake_n : max;
    return fake_rc;
}

static void test_door_holds_the_claim_contract(void **state)
{
    (void)state;
    static const struct store_ops fake_ops = {.name = "fake", .claim_due = fake_claim};
    struct store fake = {.ops = &fake_ops};
    struct due_message out[4];
    size_t n = 99;
    fake_n = 3;
    fake_rc = CH_EUNAVAILABLE;
    assert_int_equal(store_claim_due(&fake, 1, 2, out, 4, &n, NULL), CH_EUNAVAILABLE);
    assert_int_equal(n, 0); /* and the three bodies were freed: ASan would say otherwise */
    fake_rc = CH_OK;
    assert_int_equal(store_claim_due(&fake, 1, 2, out, 4, &n, NULL), CH_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i].seq, (int64_t)i + 1);
    free_claimed(out, n);
}

static void test_bad_uri(void **state)
{
    (void)state;
    struct store *s = NULL;
    struct ch_error err = {0};
    assert_int_equal(store_open("mysql://x", &s, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "sqlite:PATH"));
    assert_int_not_equal(store_open("sqlite:/proc/nope/x.db", &s, &err), CH_OK);
}

/* A database of schema version 1 (records inside the messages table) opened by this version:
 * the records move to their own table, and every message is still claimed with its record. */
static void test_sqlite_upgrade_keeps_records(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof path, "%s/v1.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    const char *v1 =
        "CREATE TABLE schema_version(version INTEGER NOT NULL); INSERT INTO schema_version "
        "VALUES (1);"
        "CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, role INTEGER"
        " NOT NULL, created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE voice_apps (id TEXT PRIMARY KEY, config TEXT NOT NULL, secret TEXT NOT NULL,"
        " prev_secret TEXT NOT NULL DEFAULT '', prev_expires_at INTEGER NOT NULL DEFAULT 0,"
        " enabled INTEGER NOT NULL DEFAULT 1, disabled_reason TEXT NOT NULL DEFAULT '',"
        " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " app_id TEXT NOT NULL, event TEXT NOT NULL, dedupe_key TEXT NOT NULL, call_type INTEGER,"
        " body BLOB NOT NULL, status INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " created_at INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL,"
        " delivered_at INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',"
        " wait_begin INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX messages_due ON messages(next_attempt_at) WHERE status IN (0, 1);"
        "CREATE INDEX messages_call ON messages(app_id, dedupe_key, event);"
        "CREATE INDEX messages_app ON messages(app_id, seq);"
        "CREATE TABLE attempts (message_seq INTEGER NOT NULL, at_ms INTEGER NOT NULL,"
        " duration_ms INTEGER NOT NULL, http_status INTEGER NOT NULL, error_class TEXT NOT NULL"
        " DEFAULT '', error TEXT NOT NULL DEFAULT '', response BLOB);"
        "CREATE INDEX attempts_message ON attempts(message_seq);"
        "INSERT INTO voice_apps(id, config, secret, created_at, updated_at)"
        " VALUES ('app', '{}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 1, 1);"
        "INSERT INTO voice_apps(id, config, secret, enabled, created_at, updated_at)"
        " VALUES ('off', '{}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 0, 1, 1);"
        "INSERT INTO messages(id, app_id, event, dedupe_key, body, status, created_at,"
        " next_attempt_at) VALUES ('msg_old1', 'app', 'begin-call', 'c1', '{\"n\":1}', 0, 5, 5),"
        " ('msg_old2', 'app', 'end-call', 'c1', '{\"n\":22}', 2, 5, 0),"
        " ('msg_off', 'off', 'begin-call', 'c9', '{\"n\":3}', 0, 6, 6);";
    char *msg = NULL;
    assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, &msg), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(chmod(path, 0600), 0); /* the store opens only an owner-only file */

    snprintf(uri, sizeof uri, "sqlite:%s", path);
    struct store *s = open_store();
    struct message_view v;
    assert_int_equal(store_message_get(s, "msg_old2", &v, NULL), CH_OK);
    assert_int_equal(v.body_len, 8);
    struct due_message m[4];
    assert_int_equal(claim(s, 10, m, 4), 1);
    assert_string_equal(m[0].msg_id, "msg_old1");
    assert_int_equal(m[0].body_len, 7);
    assert_memory_equal(m[0].body, "{\"n\":1}", 7);
    free_claimed(m, 1);
    /* The later migrations gave the old database the apps' version and the rate limit. */
    int64_t version = apps_version(s);
    put_app(s, "app", true);
    assert_true(apps_version(s) > version);
    assert_int_equal(take(s, "app", 5, 9), 5);
    /* The disabled app's message was parked by the upgrade, and comes back when it is enabled. */
    assert_int_equal(claim(s, 10, m, 4), 0);
    put_app(s, "off", true);
    assert_int_equal(claim(s, 10, m, 4), 1);
    assert_string_equal(m[0].msg_id, "msg_off");
    free_claimed(m, 1);
    /* New events go in beside the old ones, and a reopen does not migrate again. */
    ingest(s, "msg_new", "app", "begin-call", "c2", MSG_DELIVERING, 20);
    store_close(s);
    s = open_store();
    assert_int_equal(store_message_get(s, "msg_new", &v, NULL), CH_OK);
    assert_int_equal(v.body_len, 20);
    store_close(s);
}

/* A PostgreSQL database of schema version 6 (records inside the messages table, no queue
 * table) opened by this version: the records move to message_bodies byte for byte, the
 * waiting messages to message_queue (parked or not), and the messages are still claimed, read
 * and delivered with their records. Version 6 is made by undoing migrations 9, 8 and 7 on a fresh
 * database (parked, its indexes and trigger back as they were, the record column back, filled
 * from message_bodies). */
static void test_postgres_upgrade_keeps_records(void **state)
{
    (void)state;
    reset_postgres(pg_uri());
    snprintf(uri, sizeof uri, "%s", pg_uri());
    struct store *s = NULL;
    assert_int_equal(store_open(uri, &s, NULL), CH_OK);
    put_app(s, "app", true);
    put_app(s, "off", false);
    /* Every byte value, a NUL first, and one record of 2,000 bytes (past the inline size). */
    enum { N = 4 };
    static unsigned char bodies[N][2000];
    static const size_t lens[N] = {256, 2000, 7, 1};
    for (size_t k = 0; k < N; k++)
        for (size_t i = 0; i < lens[k]; i++)
            bodies[k][i] = (unsigned char)(i * (k + 1) + k);
    static const char *const ids[N] = {"msg_a", "msg_b", "msg_d", "msg_off"};
    static const char *const apps[N] = {"app", "app", "app", "off"};
    struct ingest_item items[N];
    for (size_t k = 0; k < N; k++)
        items[k] = (struct ingest_item){.msg_id = ids[k],
                                        .app_id = apps[k],
                                        .event = "begin-call",
                                        .dedupe_key = ids[k],
                                        .body = (const char *)bodies[k],
                                        .body_len = lens[k],
                                        .now = 1000,
                                        .lease_until = 1000,
                                        .want = INGEST_DELIVER};
    assert_int_equal(store_ingest(s, items, N, NULL), CH_OK);
    /* msg_d delivered before the upgrade: it keeps its record too. */
    struct attempt_result r = result(items[2].seq, MSG_DELIVERED, 0);
    assert_int_equal(store_record_attempts(s, &r, 1, NULL), CH_OK);
    store_close(s);
    raw_postgres(pg_uri(), "DROP TABLE app_minutes; DROP INDEX messages_correlation;"
                           "DROP FUNCTION callhook_rollup_add;"
                           "ALTER TABLE messages DROP COLUMN correlation_id;"
                           "ALTER TABLE attempts DROP COLUMN signed_at, DROP COLUMN signature;"
                           "ALTER TABLE messages ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;"
                           "UPDATE messages m SET parked = q.parked FROM message_queue q"
                           " WHERE q.seq = m.seq;"
                           "ALTER TABLE messages RESET (fillfactor);"
                           "DROP TABLE message_queue;"
                           "CREATE INDEX messages_due ON messages(next_attempt_at, seq)"
                           " WHERE status IN (0, 1) AND parked = 0;"
                           "CREATE INDEX messages_begin_open ON messages(app_id, dedupe_key)"
                           " WHERE event = 'begin-call' AND status IN (0, 1);"
                           "CREATE INDEX messages_parked ON messages(app_id)"
                           " WHERE parked = 1 AND status IN (0, 1);"
                           "CREATE OR REPLACE FUNCTION callhook_app_parked() RETURNS trigger"
                           " LANGUAGE plpgsql AS $$ BEGIN UPDATE messages"
                           " SET parked = 1 - NEW.enabled WHERE app_id = NEW.id"
                           " AND status IN (0, 1); RETURN NULL; END $$;"
                           "ALTER TABLE messages ADD COLUMN body BYTEA;"
                           "UPDATE messages m SET body = b.body FROM message_bodies b"
                           " WHERE b.seq = m.seq;"
                           "ALTER TABLE messages ALTER COLUMN body SET NOT NULL;"
                           "DROP TABLE message_bodies;"
                           "DELETE FROM schema_version WHERE version > 6;");

    assert_int_equal(store_open(uri, &s, NULL), CH_OK);
    /* Every record, byte for byte, where the store keeps them. */
    struct stored_body page[N + 1];
    size_t got = 0;
    assert_int_equal(store_body_page(s, 0, page, N + 1, &got, NULL), CH_OK);
    assert_int_equal(got, N);
    for (size_t k = 0; k < N; k++) {
        assert_int_equal(page[k].seq, items[k].seq);
        assert_string_equal(page[k].msg_id, ids[k]);
        assert_int_equal(page[k].body_len, lens[k]);
        assert_memory_equal(page[k].body, bodies[k], lens[k]);
        free(page[k].body);
        struct message_view v;
        assert_int_equal(store_message_get(s, ids[k], &v, NULL), CH_OK);
        assert_int_equal(v.body_len, lens[k]);
    }
    /* The waiting messages are claimed with their records; the disabled app's stays parked
     * until it is enabled. */
    struct due_message m[N];
    assert_int_equal(claim(s, 2000, m, N), 2);
    assert_string_equal(m[0].msg_id, "msg_a");
    assert_int_equal(m[0].body_len, lens[0]);
    assert_memory_equal(m[0].body, bodies[0], lens[0]);
    assert_string_equal(m[1].msg_id, "msg_b");
    assert_int_equal(m[1].body_len, lens[1]);
    assert_memory_equal(m[1].body, bodies[1], lens[1]);
    struct attempt_result done[2] = {result(m[0].seq, MSG_DELIVERED, 0),
                                     result(m[1].seq, MSG_DELIVERED, 0)};
    assert_int_equal(store_record_attempts(s, done, 2, NULL), CH_OK);
    free_claimed(m, 2);
    put_app(s, "off", true);
    assert_int_equal(claim(s, 2000, m, N), 1);
    assert_string_equal(m[0].msg_id, "msg_off");
    assert_int_equal(m[0].body_len, lens[3]);
    assert_memory_equal(m[0].body, bodies[3], lens[3]);
    free_claimed(m, 1);
    /* New events go in beside the old ones, and a reopen does not migrate again. */
    ingest(s, "msg_new", "app", "begin-call", "c2", MSG_DELIVERING, 20);
    store_close(s);
    assert_int_equal(store_open(uri, &s, NULL), CH_OK);
    struct message_view v;
    assert_int_equal(store_message_get(s, "msg_new", &v, NULL), CH_OK);
    assert_int_equal(v.body_len, 20);
    assert_int_equal(store_message_get(s, "msg_a", &v, NULL), CH_OK);
    assert_int_equal(v.status, MSG_DELIVERED);
    store_close(s);
}

/* ---- the operators' console ---- */

/* The latency histogram's buckets: 0-1 ms, then powers of two up to 16,384 ms, then the rest. */
static void test_latency_buckets(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        int bucket;
    } cases[] = {{0, 0},   {1, 0},   {2, 1},      {3, 2},      {4, 2},        {5, 3}, {100, 7},
                 {128, 7}, {129, 8}, {16384, 14}, {16385, 15}, {1 << 30, 15}, {-5, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(store_latency_bucket(cases[i].ms), cases[i].bucket);
    assert_int_equal(store_latency_bucket_edge_ms(0), 1);
    assert_int_equal(store_latency_bucket_edge_ms(7), 128);
    assert_int_equal(store_latency_bucket_edge_ms(14), 16384);
    assert_int_equal(store_latency_bucket_edge_ms(15), 16384);

    char out[STORE_SIGNATURE_SHORT_MAX];
    store_signature_short("v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", out, sizeof out);
    assert_string_equal(out, "v1,K5oZfz");
    store_signature_short("v1,abcdefghij v1,ZYXWVUTSRQ", out, sizeof out);
    assert_string_equal(out, "v1,abcdef v1,ZYXWVU");
    store_signature_short("v1,ab", out, sizeof out);
    assert_string_equal(out, "v1,ab");
    store_signature_short("v1,abcdefghij v1,ZYXWVUTSRQ", out, 12);
    assert_string_equal(out, "v1,abcdef"); /* whole entries only */
    store_signature_short(NULL, out, sizeof out);
    assert_string_equal(out, "");
}

struct minutes_seen {
    struct {
        char app[32];
        struct store_minute m;
    } row[16];
    int n;
};

static void see_minute(void *ctx, const char *app_id, const struct store_minute *m)
{
    struct minutes_seen *seen = ctx;
    if (seen->n < 16) {
        snprintf(seen->row[seen->n].app, sizeof seen->row[0].app, "%s", app_id);
        seen->row[seen->n].m = *m;
    }
    seen->n++;
}

/* The minute of app at (a multiple of 60) among the rows seen; fails when it is not there. */
static const struct store_minute *minute_of(const struct minutes_seen *seen, const char *app,
                                            int64_t at)
{
    for (int i = 0; i < seen->n && i < 16; i++) {
        if (strcmp(seen->row[i].app, app) == 0 && seen->row[i].m.at == at)
            return &seen->row[i].m;
    }
    fail_msg("no minute %lld of '%s' in the rollup", (long long)at, app);
    return NULL;
}

struct consoles_seen {
    struct app_console a[8];
    int n;
};

static void see_console(void *ctx, const struct app_console *a)
{
    struct consoles_seen *seen = ctx;
    if (seen->n < 8)
        seen->a[seen->n] = *a;
    seen->n++;
}

static struct attempt_result attempt_at(const char *app, int64_t seq, enum msg_status st,
                                        int64_t at_ms, int64_t duration_ms, const char *error)
{
    struct attempt_result r = result(seq, st, st == MSG_PENDING ? at_ms / 1000 + 60 : 0);
    r.app_id = app;
    r.at_ms = at_ms;
    r.duration_ms = duration_ms;
    if (error)
        r.error = error;
    return r;
}

/* Ingest and attempt results add to the rollup of their app and minute in the same
 * transaction: events stored (not duplicates, not unknown apps), attempts delivered, failed
 * and dead, the delivered ones' durations by bucket, the last failed attempt's error (by when
 * it ended, whatever the order of the batches). Two handles (two nodes on PostgreSQL) write
 * rows of their own that reads sum. The console's apps: waiting messages (parked ones too),
 * the first-stored one's time, the last error with its message. Rows older than two hours go
 * once a later minute is written. */
static void test_console_rollup(void **state)
{
    struct store *s = *state;
    const int64_t T = 1800000000, M = T - T % 60; /* a minute's start */
    put_app(s, "a", true);
    put_app(s, "b", true);
    put_app(s, "off", false);
    struct ingest_item i1 = ingest(s, "msg_1", "a", "begin-call", "c1", MSG_DELIVERING, M + 1);
    struct ingest_item i2 = ingest(s, "msg_2", "a", "begin-call", "c2", MSG_DELIVERING, M + 2);
    struct ingest_item i3 = ingest(s, "msg_3", "a", "begin-call", "c3", MSG_DELIVERING, M + 3);
    struct ingest_item i4 = ingest(s, "msg_4", "a", "begin-call", "c4", MSG_DELIVERING, M + 4);
    ingest(s, "msg_1", "a", "begin-call", "c1", MSG_DELIVERING, M + 5);    /* a duplicate */
    ingest(s, "msg_o1", "off", "begin-call", "o1", MSG_DELIVERING, M + 6); /* parked */
    ingest(s, "msg_o2", "off", "begin-call", "o2", MSG_DELIVERING, M + 7); /* parked */
    struct ingest_item b0 =
        ingest(s, "msg_b0", "b", "begin-call", "b0", MSG_DELIVERING, M - 60); /* a minute before */
    struct ingest_item u = {.msg_id = "msg_u",
                            .app_id = "nope",
                            .event = "begin-call",
                            .dedupe_key = "u",
                            .body = "{}",
                            .body_len = 2,
                            .now = M + 8,
                            .lease_until = M + 300};
    assert_int_equal(store_ingest(s, &u, 1, NULL), CH_OK);
    assert_true(u.unknown_app);

    /* One batch of two apps: two delivered (1 and 100 ms), a retry, a dead end; b's
     * delivered (3 ms); and one without its app, which the rollup cannot count. */
    struct attempt_result batch[] = {
        attempt_at("a", i1.seq, MSG_DELIVERED, M * 1000 + 10000, 1, NULL),
        attempt_at("b", b0.seq, MSG_DELIVERED, M * 1000 + 10500, 3, NULL),
        attempt_at("a", i2.seq, MSG_DELIVERED, M * 1000 + 11000, 100, NULL),
        attempt_at("a", i3.seq, MSG_PENDING, M * 1000 + 30000, 40, "HTTP 500 later"),
        attempt_at("a", i4.seq, MSG_DEAD, M * 1000 + 20000, 40, "HTTP 503 earlier"),
        attempt_at(NULL, i1.seq, MSG_DELIVERED, M * 1000 + 50000, 1, NULL),
    };
    assert_int_equal(store_record_attempts(s, batch, 6, NULL), CH_OK);
    /* A second node: another delivered attempt, and a failure that ended before the last one
     * seen, which does not become the last error. */
    struct store *s2 = open_store();
    struct attempt_result more[] = {
        attempt_at("a", i3.seq, MSG_DELIVERED, M * 1000 + 40000, 20000, NULL),
        attempt_at("a", i4.seq, MSG_PENDING, M * 1000 + 25000, 40, "HTTP 502 old news"),
    };
    assert_int_equal(store_record_attempts(s2, more, 2, NULL), CH_OK);
    ingest(s2, "msg_5", "a", "end-call", "c1", MSG_DELIVERING, M + 9);

    struct minutes_seen seen = {0};
    assert_int_equal(store_app_minutes(s, NULL, M - 60, see_minute, &seen, NULL), CH_OK);
    assert_int_equal(seen.n, 4); /* a at M, off at M, b at M - 60 and at M */
    const struct store_minute *a = minute_of(&seen, "a", M);
    assert_int_equal(a->ingested, 5);
    assert_int_equal(a->delivered, 3);
    assert_int_equal(a->failed, 3);
    assert_int_equal(a->dead, 1);
    int64_t total = 0;
    for (int b = 0; b < STORE_LATENCY_BUCKETS; b++)
        total += a->latency[b];
    assert_int_equal(total, 3);
    assert_int_equal(a->latency[0], 1);  /* 1 ms */
    assert_int_equal(a->latency[7], 1);  /* 100 ms */
    assert_int_equal(a->latency[15], 1); /* 20,000 ms */
    assert_int_equal(minute_of(&seen, "off", M)->ingested, 2);
    assert_int_equal(minute_of(&seen, "b", M - 60)->ingested, 1);
    assert_int_equal(minute_of(&seen, "b", M - 60)->delivered, 0);
    assert_int_equal(minute_of(&seen, "b", M)->delivered, 1);
    assert_int_equal(minute_of(&seen, "b", M)->latency[2], 1);
    /* From a later minute, and for one app. */
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_app_minutes(s2, "b", M - 60, see_minute, &seen, NULL), CH_OK);
    assert_int_equal(seen.n, 2);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_app_minutes(s2, NULL, M, see_minute, &seen, NULL), CH_OK);
    assert_int_equal(seen.n, 3);

    struct consoles_seen cs = {0};
    assert_int_equal(store_app_console(s, NULL, see_console, &cs, NULL), CH_OK);
    assert_int_equal(cs.n, 3);
    assert_string_equal(cs.a[0].id, "a");
    assert_string_equal(cs.a[1].id, "b");
    assert_string_equal(cs.a[2].id, "off");
    assert_true(cs.a[0].enabled);
    assert_int_equal(cs.a[0].waiting, 2); /* msg_4 (a retry) and msg_5 (claimed) */
    assert_int_equal(cs.a[0].oldest_waiting_at, M + 4);
    assert_string_equal(cs.a[0].last_error, "HTTP 500 later");
    assert_int_equal(cs.a[0].last_error_at_ms, M * 1000 + 30000);
    assert_string_equal(cs.a[0].last_error_msg, "msg_3");
    assert_int_equal(cs.a[1].waiting, 0);
    assert_string_equal(cs.a[1].last_error, "");
    assert_int_equal(cs.a[1].last_error_at_ms, 0);
    assert_string_equal(cs.a[1].last_error_msg, "");
    assert_false(cs.a[2].enabled);
    assert_int_equal(cs.a[2].waiting, 2); /* parked, still waiting */
    assert_int_equal(cs.a[2].oldest_waiting_at, M + 6);
    memset(&cs, 0, sizeof cs);
    assert_int_equal(store_app_console(s2, "off", see_console, &cs, NULL), CH_OK);
    assert_int_equal(cs.n, 1);
    assert_string_equal(cs.a[0].id, "off");
    assert_int_equal(cs.a[0].waiting, 2);
    memset(&cs, 0, sizeof cs);
    assert_int_equal(store_app_console(s2, "nope", see_console, &cs, NULL), CH_OK);
    assert_int_equal(cs.n, 0);

    /* Two hours and more later, a write prunes the old minutes (on each node that writes). */
    struct ingest_item late = ingest(s, "msg_late", "b", "begin-call", "l", MSG_DELIVERING,
                                     M + STORE_ROLLUP_KEEP_S + 120);
    struct attempt_result done =
        attempt_at("b", late.seq, MSG_DELIVERED, (M + STORE_ROLLUP_KEEP_S + 120) * 1000, 5, NULL);
    assert_int_equal(store_record_attempts(s2, &done, 1, NULL), CH_OK);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(store_app_minutes(s, NULL, 0, see_minute, &seen, NULL), CH_OK);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.row[0].app, "b");
    assert_int_equal(seen.row[0].m.ingested, 1);
    assert_int_equal(seen.row[0].m.delivered, 1);
    assert_int_equal(seen.row[0].m.latency[3], 1);
    memset(&cs, 0, sizeof cs);
    assert_int_equal(store_app_console(s, "a", see_console, &cs, NULL), CH_OK);
    assert_string_equal(cs.a[0].last_error, ""); /* went with its minute */
    store_close(s2);
}

/* A record's CorrelationId is kept, listed and searched by, with an upper bound on the time a
 * message was stored; a copy keeps it; a record without one has none. */
static void test_correlation_and_until(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    static const char body[] = "{}";
    const struct {
        const char *id, *key, *corr;
        int64_t at;
    } in[] = {{"msg_1", "k1", "corr-A", 1000},
              {"msg_2", "k2", "corr-A", 2000},
              {"msg_3", "k3", "corr-B", 3000},
              {"msg_4", "k4", NULL, 4000}};
    for (size_t i = 0; i < 4; i++) {
        struct ingest_item it = {.msg_id = in[i].id,
                                 .app_id = "app",
                                 .event = "begin-call",
                                 .dedupe_key = in[i].key,
                                 .correlation_id = in[i].corr,
                                 .body = body,
                                 .body_len = 2,
                                 .now = in[i].at,
                                 .lease_until = in[i].at + 300,
                                 .want = INGEST_DELIVER};
        assert_int_equal(store_ingest(s, &it, 1, NULL), CH_OK);
    }
    struct message_view m;
    assert_int_equal(store_message_get(s, "msg_2", &m, NULL), CH_OK);
    assert_string_equal(m.correlation_id, "corr-A");
    assert_int_equal(store_message_get(s, "msg_4", &m, NULL), CH_OK);
    assert_string_equal(m.correlation_id, "");

    struct message_filter f = {
        .status = -1, .attempted = -1, .limit = 10, .correlation_id = "corr-A"};
    struct collected c = {0};
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ids[0], "msg_2");
    assert_string_equal(c.ids[1], "msg_1");
    f.until = 2000; /* created before 2000 */
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.ids[0], "msg_1");
    f = (struct message_filter){
        .status = -1, .attempted = -1, .limit = 10, .since = 2000, .until = 4000};
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ids[0], "msg_3");
    assert_string_equal(c.ids[1], "msg_2");
    f = (struct message_filter){
        .status = -1, .attempted = -1, .limit = 10, .correlation_id = "corr-none"};
    memset(&c, 0, sizeof c);
    assert_int_equal(store_message_list(s, &f, collect, &c, NULL), CH_OK);
    assert_int_equal(c.n, 0);

    assert_int_equal(store_message_copy(s, "msg_3", "msg_3copy", NULL, 0, 5000, NULL), CH_OK);
    assert_int_equal(store_message_get(s, "msg_3copy", &m, NULL), CH_OK);
    assert_string_equal(m.correlation_id, "corr-B");
}

static void see_signed(void *ctx, const struct attempt_view *a)
{
    struct attempt_view *out = ctx;
    out[out[0].at_ms == 0 ? 0 : 1] = *a;
}

/* What an attempt signed with is kept with it: its webhook-timestamp and signature cut
 * short; and a message's record is read back as ingested (opened when sealed), empty once
 * retention took it, CH_ENOTFOUND for no message. */
static void test_attempt_signature_and_record(void **state)
{
    struct store *s = *state;
    put_app(s, "app", true);
    struct ingest_item d = ingest(s, "msg_d", "app", "begin-call", "c1", MSG_DELIVERING, 1000);
    struct attempt_result r[2] = {result(d.seq, MSG_PENDING, 1001),
                                  result(d.seq, MSG_DELIVERED, 0)};
    r[0].signed_at = 1000;
    r[0].signature = "v1,AbCdEf v1,GhIjKl";
    r[1].at_ms = 2000000;
    r[1].signed_at = 1999;
    r[1].signature = "v1,MnOpQr";
    assert_int_equal(store_record_attempts(s, r, 2, NULL), CH_OK);
    struct attempt_view seen[2] = {0};
    assert_int_equal(store_message_attempts(s, d.seq, see_signed, seen, NULL), CH_OK);
    assert_int_equal(seen[0].signed_at, 1000);
    assert_string_equal(seen[0].signature, "v1,AbCdEf v1,GhIjKl");
    assert_int_equal(seen[1].signed_at, 1999);
    assert_string_equal(seen[1].signature, "v1,MnOpQr");

    struct stored_body b;
    assert_int_equal(store_message_body(s, "msg_d", &b, NULL), CH_OK);
    assert_int_equal(b.seq, d.seq);
    assert_string_equal(b.msg_id, "msg_d");
    assert_int_equal(b.body_len, strlen("{\"ActiveCallId\":\"k\"}"));
    assert_memory_equal(b.body, "{\"ActiveCallId\":\"k\"}", b.body_len);
    free(b.body);
    struct ch_error err = {0};
    assert_int_equal(store_message_body(s, "msg_none", &b, &err), CH_ENOTFOUND);
    assert_null(b.body);
    int64_t payloads = 0, attempts = 0;
    assert_int_equal(store_purge(s, 3000, 0, &payloads, &attempts, NULL), CH_OK);
    assert_int_equal(payloads, 1);
    assert_int_equal(store_message_body(s, "msg_d", &b, NULL), CH_OK);
    assert_int_equal(b.body_len, 0);
    free(b.body);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/callhook-test-store-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keys, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_apps, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_ingest_and_duplicates, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_leases, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_leases_on_database_clock, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_end_waits_for_begin, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_batch_results_and_order, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_attempts_dead_and_recover, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_attempts_batch_with_a_repeat, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_copy_under_a_new_id, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_stats_by_api_status, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_app_stats, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_disabled_apps_wait, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_disabled_apps_park, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_parked_by_a_race_comes_back, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_wal_stays_bounded, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_delete_app_ends_its_messages, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_list_filters_and_cursor, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_durable_across_reopen, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_startup, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_purge, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_apps_version, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_rate_take, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_claim_fails_part_way, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_sealed_claim_fails_part_way, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_sealed_values_are_bound, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_console_rollup, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_correlation_and_until, fresh, close_store),
        cmocka_unit_test_setup_teardown(test_attempt_signature_and_record, fresh, close_store),
        cmocka_unit_test(test_latency_buckets),
        cmocka_unit_test_setup_teardown(test_store_seal_in_place, fresh_unopened, close_store),
        cmocka_unit_test_setup_teardown(test_store_rekey, fresh_unopened, close_store),
        cmocka_unit_test(test_door_holds_the_claim_contract),
        cmocka_unit_test(test_sealed_at_rest),
        cmocka_unit_test(test_bad_uri),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (pg_uri() == NULL) {
        const struct CMUnitTest sqlite_only[] = {
            cmocka_unit_test(test_sqlite_upgrade_keeps_records),
        };
        rc |= cmocka_run_group_tests(sqlite_only, NULL, NULL);
    } else {
        const struct CMUnitTest postgres_only[] = {
            cmocka_unit_test(test_postgres_upgrade_keeps_records),
        };
        rc |= cmocka_run_group_tests(postgres_only, NULL, NULL);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
