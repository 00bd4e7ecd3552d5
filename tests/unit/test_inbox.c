/* The receiver's inbox: durable dedupe by webhook-id and by (event, call), arrival order,
 * retries, parking, recovery after a crash, retention. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <callhook/inbox.h>

#include <sqlite3.h>

#include "lib/inbox.h"

static char dir[256];

static int fresh(void **state)
{
    static int n;
    char path[512];
    snprintf(path, sizeof path, "%s/inbox%d/inbox.db", dir, ++n);
    struct ch_inbox *ib = NULL;
    struct ch_error err = {0};
    if (ch_inbox_open(path, &ib, &err) != CH_OK) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    *state = ib;
    return 0;
}

static int close_inbox(void **state)
{
    ch_inbox_close(*state);
    return 0;
}

static struct ch_inbox_event add(struct ch_inbox *ib, const char *id, const char *event,
                                 const char *key, long long at)
{
    struct ch_inbox_event e = {.webhook_id = id,
                               .event = event,
                               .call_key = key,
                               .has_call_type = true,
                               .call_type = 2,
                               .body = "{\"a\":1}",
                               .body_len = 7,
                               .received_at = at};
    assert_int_equal(ch_inbox_add(ib, &e, 1, NULL), CH_OK);
    return e;
}

static void test_dedupe(void **state)
{
    struct ch_inbox *ib = *state;
    struct ch_inbox_event a = add(ib, "msg_1", "begin-call", "call-1", 100);
    assert_false(a.duplicate);
    /* The same webhook-id again, even for another call. */
    assert_true(add(ib, "msg_1", "begin-call", "call-9", 101).duplicate);
    /* The same call and event under a new webhook-id (an upstream duplicate). */
    struct ch_inbox_event b = add(ib, "msg_2", "begin-call", "call-1", 102);
    assert_true(b.duplicate);
    assert_int_equal(b.seq, a.seq);
    /* The other event of the call is new. */
    assert_false(add(ib, "msg_3", "end-call", "call-1", 103).duplicate);
    /* No call key: only the webhook-id dedupes. */
    assert_false(add(ib, "msg_4", "end-call", NULL, 104).duplicate);
    assert_false(add(ib, "msg_5", "end-call", NULL, 105).duplicate);
    bool seen = false;
    assert_int_equal(ch_inbox_seen(ib, "msg_x", "begin-call", "call-1", &seen, NULL), CH_OK);
    assert_true(seen);
    assert_int_equal(ch_inbox_seen(ib, "msg_x", "begin-call", "call-2", &seen, NULL), CH_OK);
    assert_false(seen);

    /* A batch sees its own earlier members. */
    struct ch_inbox_event batch[2] = {
        {.webhook_id = "msg_6",
         .event = "begin-call",
         .call_key = "c6",
         .body = "{}",
         .body_len = 2,
         .received_at = 106},
        {.webhook_id = "msg_7",
         .event = "begin-call",
         .call_key = "c6",
         .body = "{}",
         .body_len = 2,
         .received_at = 106},
    };
    assert_int_equal(ch_inbox_add(ib, batch, 2, NULL), CH_OK);
    assert_false(batch[0].duplicate);
    assert_true(batch[1].duplicate);
}

static void test_take_in_order_retry_and_park(void **state)
{
    struct ch_inbox *ib = *state;
    add(ib, "msg_1", "begin-call", "c1", 100);
    add(ib, "msg_2", "begin-call", "c2", 100);
    struct ch_inbox_entry e;
    long long next = -1;
    assert_int_equal(ch_inbox_take(ib, 100000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_1");
    assert_int_equal(e.attempts, 1);
    assert_int_equal(e.body_len, 7);
    assert_memory_equal(e.body, "{\"a\":1}", 7);
    assert_true(e.has_call_type);
    long long seq1 = e.seq;
    ch_inbox_entry_release(&e);
    /* It failed: retry at 200000 ms. */
    assert_int_equal(
        ch_inbox_finish(ib, seq1, CH_INBOX_PENDING, 200000, "exit status 1", 100, NULL), CH_OK);
    assert_int_equal(ch_inbox_take(ib, 100000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_2");
    assert_int_equal(ch_inbox_finish(ib, e.seq, CH_INBOX_DONE, 0, NULL, 100, NULL), CH_OK);
    ch_inbox_entry_release(&e);
    assert_int_equal(ch_inbox_take(ib, 100000, &e, &next, NULL), CH_ENOTFOUND);
    assert_int_equal(next, 200000);
    assert_int_equal(ch_inbox_take(ib, 200000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_1");
    assert_int_equal(e.attempts, 2);
    assert_string_equal(e.last_error, "exit status 1");
    assert_int_equal(ch_inbox_finish(ib, e.seq, CH_INBOX_FAILED, 0, "exit status 1", 201, NULL),
                     CH_OK);
    ch_inbox_entry_release(&e);
    assert_int_equal(ch_inbox_take(ib, 999999999, &e, &next, NULL), CH_ENOTFOUND);

    /* Parked: visible, and retry brings it back with fresh tries. */
    struct ch_inbox_entry got;
    assert_int_equal(ch_inbox_get(ib, "msg_1", &got, NULL), CH_OK);
    assert_int_equal(got.status, CH_INBOX_FAILED);
    ch_inbox_entry_release(&got);
    long long n = 0;
    assert_int_equal(ch_inbox_retry(ib, "msg_2", 300000, &n, NULL), CH_ENOTFOUND);
    assert_int_equal(ch_inbox_retry(ib, "msg_1", 300000, &n, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ch_inbox_take(ib, 300000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_1");
    assert_int_equal(e.attempts, 1);
    ch_inbox_entry_release(&e);
}

/* The workers' batch calls: several events taken in arrival order, outcomes in one go. */
static void test_take_and_finish_many(void **state)
{
    struct ch_inbox *ib = *state;
    add(ib, "msg_1", "begin-call", "c1", 100);
    add(ib, "msg_2", "begin-call", "c2", 100);
    add(ib, "msg_3", "begin-call", "c3", 100);
    struct ch_inbox_entry e[4];
    size_t n = 0;
    long long next = -1;
    assert_int_equal(inbox_take_many(ib, 100000, e, 2, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].webhook_id, "msg_1");
    assert_string_equal(e[1].webhook_id, "msg_2");
    assert_true(e[0].seq < e[1].seq);
    struct inbox_outcome o[2] = {
        {.seq = e[0].seq, .status = CH_INBOX_DONE},
        {.seq = e[1].seq, .status = CH_INBOX_PENDING, .next_at = 300000, .error = "exit 1"},
    };
    assert_int_equal(inbox_finish_many(ib, o, 2, 100, NULL), CH_OK);
    ch_inbox_entry_release(&e[0]);
    ch_inbox_entry_release(&e[1]);
    assert_int_equal(inbox_take_many(ib, 100000, e, 4, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].webhook_id, "msg_3");
    ch_inbox_entry_release(&e[0]);
    assert_int_equal(inbox_take_many(ib, 100000, e, 4, &n, &next, NULL), CH_ENOTFOUND);
    assert_int_equal(n, 0);
    assert_int_equal(next, 300000);
    struct ch_inbox_entry got;
    assert_int_equal(ch_inbox_get(ib, "msg_1", &got, NULL), CH_OK);
    assert_int_equal(got.status, CH_INBOX_DONE);
    assert_int_equal(got.processed_at, 100);
    ch_inbox_entry_release(&got);
    assert_int_equal(ch_inbox_get(ib, "msg_2", &got, NULL), CH_OK);
    assert_int_equal(got.status, CH_INBOX_PENDING);
    assert_string_equal(got.last_error, "exit 1");
    ch_inbox_entry_release(&got);
}

static void test_recover_and_expire(void **state)
{
    struct ch_inbox *ib = *state;
    add(ib, "msg_1", "begin-call", "c1", 100);
    add(ib, "msg_2", "begin-call", "c2", 100);
    add(ib, "msg_3", "begin-call", "c3", 500);
    struct ch_inbox_entry e;
    long long next;
    assert_int_equal(ch_inbox_take(ib, 100000, &e, &next, NULL), CH_OK);
    ch_inbox_entry_release(&e); /* a crash: msg_1 stays running */
    long long n = 0;
    assert_int_equal(ch_inbox_recover(ib, 100000, &n, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ch_inbox_take(ib, 100000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_1");
    assert_int_equal(ch_inbox_finish(ib, e.seq, CH_INBOX_DONE, 0, NULL, 101, NULL), CH_OK);
    ch_inbox_entry_release(&e);

    /* Retention: processed events received before 200 go, with their dedupe keys; pending ones
     * stay whatever their age. */
    assert_int_equal(ch_inbox_expire(ib, 200, &n, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_false(add(ib, "msg_1", "begin-call", "c1", 600).duplicate);
    assert_true(add(ib, "msg_2", "begin-call", "c2", 600).duplicate);
}

/* Done at `at`: added, taken and finished. */
static void add_done(struct ch_inbox *ib, const char *id, const char *key, long long at)
{
    add(ib, id, "begin-call", key, at);
    struct ch_inbox_entry e;
    long long next;
    assert_int_equal(ch_inbox_take(ib, at * 1000 + 1000000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, id);
    assert_int_equal(ch_inbox_finish(ib, e.seq, CH_INBOX_DONE, 0, NULL, at, NULL), CH_OK);
    ch_inbox_entry_release(&e);
}

/* A purge of everything keeps the keys of events whose request could still be replayed (younger
 * than the key window) and drops only their records; a replay under either kind stays a
 * duplicate. Older keys go. */
static void test_expire_keeps_young_keys(void **state)
{
    struct ch_inbox *ib = *state;
    long long now = (long long)time(NULL);
    assert_int_equal(ch_inbox_keep_keys(ib, 3000, NULL), CH_OK);
    assert_int_equal(ch_inbox_keep_keys(ib, 600, NULL), CH_OK); /* the longest window stays */
    add_done(ib, "msg_young", "call-young", now - 2000);
    add_done(ib, "msg_old", "call-old", now - 4000);
    add(ib, "msg_pending", "begin-call", "call-pending", now - 9000);
    long long n = 0;
    assert_int_equal(ch_inbox_expire(ib, now + 1, &n, NULL), CH_OK);
    assert_int_equal(n, 2);
    struct ch_inbox_entry e;
    assert_int_equal(ch_inbox_get(ib, "msg_young", &e, NULL), CH_OK);
    assert_int_equal(e.status, CH_INBOX_PURGED);
    assert_int_equal(e.body_len, 0);
    ch_inbox_entry_release(&e);
    assert_int_equal(ch_inbox_get(ib, "msg_old", &e, NULL), CH_ENOTFOUND);
    assert_int_equal(ch_inbox_get(ib, "msg_pending", &e, NULL), CH_OK);
    assert_int_equal(e.status, CH_INBOX_PENDING);
    ch_inbox_entry_release(&e);
    /* The same signed id as the other kind, or the same call under a new id: duplicates. */
    assert_true(add(ib, "msg_young", "end-call", "other", now).duplicate);
    assert_true(add(ib, "msg_new", "begin-call", "call-young", now).duplicate);
    assert_false(add(ib, "msg_old", "begin-call", "call-old", now).duplicate);
    /* Purging again changes nothing more (the young key is still kept). */
    assert_int_equal(ch_inbox_expire(ib, now - 3500, &n, NULL), CH_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ch_inbox_get(ib, "msg_young", &e, NULL), CH_OK);
    ch_inbox_entry_release(&e);
    assert_string_equal(ch_inbox_status_name(CH_INBOX_PURGED), "purged");
}

struct counter {
    int n;
    char first[257];
};

static void count(void *ctx, const struct ch_inbox_entry *e)
{
    struct counter *c = ctx;
    if (c->n++ == 0)
        snprintf(c->first, sizeof c->first, "%s", e->webhook_id);
}

static void test_list_and_reopen(void **state)
{
    struct ch_inbox *ib = *state;
    add(ib, "msg_1", "begin-call", "c1", 100);
    add(ib, "msg_2", "end-call", "c1", 101);
    struct counter c = {0};
    assert_int_equal(ch_inbox_list(ib, -1, 10, count, &c, NULL), CH_OK);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.first, "msg_2");
    memset(&c, 0, sizeof c);
    assert_int_equal(ch_inbox_list(ib, CH_INBOX_FAILED, 10, count, &c, NULL), CH_OK);
    assert_int_equal(c.n, 0);
    assert_string_equal(ch_inbox_status_name(CH_INBOX_FAILED), "failed");
}

/* ch_inbox_stats: counts by status, over all and by kind; the oldest unprocessed and failed. */
static void test_stats(void **state)
{
    struct ch_inbox *ib = *state;
    struct ch_inbox_stats st;
    assert_int_equal(ch_inbox_stats(ib, NULL, &st, NULL), CH_OK);
    for (int i = 0; i < CH_INBOX_STATUSES; i++)
        assert_int_equal(st.count[i], 0);
    assert_int_equal(st.oldest_unprocessed, 0);
    assert_int_equal(st.newest, 0);

    add(ib, "msg_1", "begin-call", "c1", 100);
    add(ib, "msg_2", "end-call", "c1", 200);
    add(ib, "msg_3", "end-call", "c2", 300);
    add(ib, "msg_4", "begin-call", "c3", 400);
    struct ch_inbox_entry e;
    long long next = 0;
    /* msg_1 running, then failed; msg_2 running */
    assert_int_equal(ch_inbox_take(ib, 1000000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_1");
    assert_int_equal(ch_inbox_finish(ib, e.seq, CH_INBOX_FAILED, 0, "no", 500, NULL), CH_OK);
    ch_inbox_entry_release(&e);
    assert_int_equal(ch_inbox_take(ib, 1000000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_2");
    ch_inbox_entry_release(&e);

    assert_int_equal(ch_inbox_stats(ib, NULL, &st, NULL), CH_OK);
    assert_int_equal(st.count[CH_INBOX_PENDING], 2);
    assert_int_equal(st.count[CH_INBOX_RUNNING], 1);
    assert_int_equal(st.count[CH_INBOX_FAILED], 1);
    assert_int_equal(st.count[CH_INBOX_DONE], 0);
    assert_int_equal(st.oldest_unprocessed, 200); /* msg_2, running */
    assert_int_equal(st.oldest_failed, 100);
    assert_int_equal(st.newest, 400);

    assert_int_equal(ch_inbox_stats(ib, "begin-call", &st, NULL), CH_OK);
    assert_int_equal(st.count[CH_INBOX_PENDING], 1);
    assert_int_equal(st.count[CH_INBOX_RUNNING], 0);
    assert_int_equal(st.count[CH_INBOX_FAILED], 1);
    assert_int_equal(st.oldest_unprocessed, 400);
    assert_int_equal(st.newest, 400);
    assert_int_equal(ch_inbox_stats(ib, "end-call", &st, NULL), CH_OK);
    assert_int_equal(st.count[CH_INBOX_PENDING] + st.count[CH_INBOX_RUNNING], 2);
    assert_int_equal(st.oldest_failed, 0);
    assert_int_equal(st.newest, 300);
}

/* ---- sinks: one delivery state per (event, sink) ---- */

static struct ch_inbox_event routed(struct ch_inbox *ib, const char *id, const char *key,
                                    long long at, const char *const *names, size_t n)
{
    struct ch_inbox_event e = {.webhook_id = id,
                               .event = "end-call",
                               .call_key = key,
                               .body = "{}",
                               .body_len = 2,
                               .received_at = at};
    struct ch_inbox_sinks s = {names, n};
    assert_int_equal(ch_inbox_add_routed(ib, &e, &s, 1, NULL), CH_OK);
    return e;
}

static enum ch_inbox_status status_of(struct ch_inbox *ib, const char *id)
{
    struct ch_inbox_entry e;
    assert_int_equal(ch_inbox_get(ib, id, &e, NULL), CH_OK);
    ch_inbox_entry_release(&e);
    return e.status;
}

struct sink_states {
    int n;
    char sink[4][64];
    enum ch_inbox_status status[4];
    int attempts[4];
    char error[4][64];
};

static void note_delivery(void *ctx, const struct ch_inbox_delivery *d)
{
    struct sink_states *s = ctx;
    if (s->n < 4) {
        snprintf(s->sink[s->n], sizeof s->sink[0], "%.63s", d->sink);
        s->status[s->n] = d->status;
        s->attempts[s->n] = d->attempts;
        snprintf(s->error[s->n], sizeof s->error[0], "%.63s", d->last_error);
    }
    s->n++;
}

static struct sink_states states_of(struct ch_inbox *ib, long long seq)
{
    struct sink_states s;
    memset(&s, 0, sizeof s);
    assert_int_equal(ch_inbox_deliveries(ib, seq, note_delivery, &s, NULL), CH_OK);
    return s;
}

/* Two sinks take the same events each in arrival order, and one failing does not hold up, or
 * repeat for, the other. */
static void test_sinks_apart(void **state)
{
    struct ch_inbox *ib = *state;
    static const char *const both[] = {"exec:./a.sh", "jsonl:b.jsonl", "exec:./a.sh"};
    struct ch_inbox_event e1 = routed(ib, "msg_1", "c1", 100, both, 3);
    routed(ib, "msg_2", "c2", 100, both, 2);
    static const char *const only_b[] = {"jsonl:b.jsonl"};
    routed(ib, "msg_3", "c3", 100, only_b, 1);
    routed(ib, "msg_4", "c4", 100, NULL, 0); /* to no sink: done at once */
    assert_int_equal(status_of(ib, "msg_4"), CH_INBOX_DONE);
    assert_int_equal(states_of(ib, e1.seq).n, 2); /* a name given twice counts once */
    /* A duplicate adds no delivery. */
    struct ch_inbox_event dup = routed(ib, "msg_1", "c9", 101, only_b, 1);
    assert_true(dup.duplicate);

    struct ch_inbox_entry a[4], b[4];
    size_t na = 0, nb = 0;
    long long next = -1;
    assert_int_equal(ch_inbox_take_sink(ib, "exec:./a.sh", 100000, a, 4, &na, &next, NULL), CH_OK);
    assert_int_equal(na, 2);
    assert_string_equal(a[0].webhook_id, "msg_1");
    assert_string_equal(a[1].webhook_id, "msg_2");
    assert_int_equal(a[0].attempts, 1);
    assert_int_equal(a[0].status, CH_INBOX_RUNNING);
    assert_int_equal(status_of(ib, "msg_1"), CH_INBOX_RUNNING);
    assert_int_equal(ch_inbox_take_sink(ib, "jsonl:b.jsonl", 100000, b, 4, &nb, &next, NULL),
                     CH_OK);
    assert_int_equal(nb, 3);
    assert_string_equal(b[2].webhook_id, "msg_3");
    assert_memory_equal(b[0].body, "{}", 2);
    /* a: msg_1 fails for now, msg_2 is done; b: all done. */
    struct ch_inbox_outcome oa[2] = {
        {.seq = a[0].seq, .status = CH_INBOX_PENDING, .next_at_ms = 200000, .error = "exit 1"},
        {.seq = a[1].seq, .status = CH_INBOX_DONE},
    };
    assert_int_equal(ch_inbox_finish_sink(ib, "exec:./a.sh", oa, 2, 150, NULL), CH_OK);
    struct ch_inbox_outcome ob[3] = {{.seq = b[0].seq, .status = CH_INBOX_DONE},
                                     {.seq = b[1].seq, .status = CH_INBOX_DONE},
                                     {.seq = b[2].seq, .status = CH_INBOX_DONE}};
    assert_int_equal(ch_inbox_finish_sink(ib, "jsonl:b.jsonl", ob, 3, 160, NULL), CH_OK);
    for (size_t i = 0; i < na; i++)
        ch_inbox_entry_release(&a[i]);
    for (size_t i = 0; i < nb; i++)
        ch_inbox_entry_release(&b[i]);
    assert_int_equal(status_of(ib, "msg_1"), CH_INBOX_PENDING); /* a still owes it */
    assert_int_equal(status_of(ib, "msg_2"), CH_INBOX_DONE);
    struct ch_inbox_entry got;
    assert_int_equal(ch_inbox_get(ib, "msg_2", &got, NULL), CH_OK);
    assert_int_equal(got.processed_at, 160); /* when the last sink finished */
    ch_inbox_entry_release(&got);
    assert_int_equal(ch_inbox_get(ib, "msg_1", &got, NULL), CH_OK);
    assert_string_equal(got.last_error, "exit 1");
    assert_int_equal(got.next_at, 200000);
    ch_inbox_entry_release(&got);
    struct sink_states s = states_of(ib, e1.seq);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.sink[0], "exec:./a.sh");
    assert_int_equal(s.status[0], CH_INBOX_PENDING);
    assert_string_equal(s.error[0], "exit 1");
    assert_string_equal(s.sink[1], "jsonl:b.jsonl");
    assert_int_equal(s.status[1], CH_INBOX_DONE);

    /* b has nothing more; a's retry is not due before 200000. */
    assert_int_equal(ch_inbox_take_sink(ib, "jsonl:b.jsonl", 999999, b, 4, &nb, &next, NULL),
                     CH_ENOTFOUND);
    assert_int_equal(next, 0);
    assert_int_equal(ch_inbox_take_sink(ib, "exec:./a.sh", 150000, a, 4, &na, &next, NULL),
                     CH_ENOTFOUND);
    assert_int_equal(next, 200000);
    /* Nor does the implicit sink see any of it. */
    assert_int_equal(ch_inbox_take(ib, 999999, a, &next, NULL), CH_ENOTFOUND);

    /* Retention: msg_2, msg_3, msg_4 are done everywhere; msg_1 is not and stays. */
    long long n = 0;
    assert_int_equal(ch_inbox_expire(ib, 1000, &n, NULL), CH_OK);
    assert_int_equal(n, 3);
    assert_int_equal(status_of(ib, "msg_1"), CH_INBOX_PENDING);
    assert_int_equal(ch_inbox_get(ib, "msg_2", &got, NULL), CH_ENOTFOUND);

    /* a parks it; a stop gives one back without counting it. */
    assert_int_equal(ch_inbox_take_sink(ib, "exec:./a.sh", 200000, a, 4, &na, &next, NULL), CH_OK);
    assert_int_equal(a[0].attempts, 2);
    struct ch_inbox_outcome back = {
        .seq = a[0].seq, .status = CH_INBOX_PENDING, .next_at_ms = 200000, .not_attempted = true};
    assert_int_equal(ch_inbox_finish_sink(ib, "exec:./a.sh", &back, 1, 201, NULL), CH_OK);
    ch_inbox_entry_release(&a[0]);
    assert_int_equal(ch_inbox_take_sink(ib, "exec:./a.sh", 200000, a, 4, &na, &next, NULL), CH_OK);
    assert_int_equal(a[0].attempts, 2);
    struct ch_inbox_outcome park = {.seq = a[0].seq, .status = CH_INBOX_FAILED, .error = "no"};
    assert_int_equal(ch_inbox_finish_sink(ib, "exec:./a.sh", &park, 1, 202, NULL), CH_OK);
    ch_inbox_entry_release(&a[0]);
    assert_int_equal(status_of(ib, "msg_1"), CH_INBOX_FAILED);
    struct ch_inbox_stats st;
    assert_int_equal(ch_inbox_stats(ib, NULL, &st, NULL), CH_OK);
    assert_int_equal(st.count[CH_INBOX_FAILED], 1);
    assert_int_equal(ch_inbox_expire(ib, 1000, &n, NULL), CH_OK);
    assert_int_equal(n, 0); /* failed for one sink: kept */

    /* Retry for one sink: the other sink's name is refused, the right one requeued. */
    long long ev = 0, del = 0;
    struct ch_error err = {0};
    assert_int_equal(ch_inbox_retry_sink(ib, "msg_1", "jsonl:b.jsonl", 300000, &ev, &del, &err),
                     CH_ENOTFOUND);
    assert_non_null(strstr(err.message, "no failed delivery"));
    assert_int_equal(ch_inbox_retry_sink(ib, "msg_9", NULL, 300000, &ev, &del, &err), CH_ENOTFOUND);
    assert_non_null(strstr(err.message, "no event"));
    assert_int_equal(ch_inbox_retry_sink(ib, "msg_1", "exec:./a.sh", 300000, &ev, &del, NULL),
                     CH_OK);
    assert_int_equal(ev, 1);
    assert_int_equal(del, 1);
    assert_int_equal(status_of(ib, "msg_1"), CH_INBOX_PENDING);
    s = states_of(ib, e1.seq);
    assert_int_equal(s.status[1], CH_INBOX_DONE); /* b's delivery untouched */
    assert_int_equal(ch_inbox_take_sink(ib, "exec:./a.sh", 300000, a, 4, &na, &next, NULL), CH_OK);
    assert_int_equal(a[0].attempts, 1); /* fresh tries */
    ch_inbox_entry_release(&a[0]);
    /* A crash: the running delivery is pending again. */
    assert_int_equal(ch_inbox_recover(ib, 300000, &n, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_int_equal(status_of(ib, "msg_1"), CH_INBOX_PENDING);
}

/* ---- call order: an event waits for its call's earlier event to be done, for that sink ---- */

static long long add_to(struct ch_inbox *ib, const char *id, const char *event, const char *key,
                        const char *const *names, size_t n)
{
    struct ch_inbox_event e = {.webhook_id = id,
                               .event = event,
                               .call_key = key,
                               .body = "{}",
                               .body_len = 2,
                               .received_at = 100};
    struct ch_inbox_sinks s = {names, n};
    assert_int_equal(ch_inbox_add_routed(ib, &e, &s, 1, NULL), CH_OK);
    assert_false(e.duplicate);
    return e.seq;
}

/* Takes in call order for sink at now: the ids taken, space-separated, into ids. */
static ch_code take_ordered(struct ch_inbox *ib, const char *sink, long long now,
                            struct ch_inbox_entry *out, size_t *n, long long *next, char *ids,
                            size_t cap)
{
    ch_code rc =
        ch_inbox_take_sink_flags(ib, sink, now, CH_INBOX_TAKE_CALL_ORDER, out, 8, n, next, NULL);
    ids[0] = '\0';
    for (size_t i = 0; i < *n; i++) {
        size_t len = strlen(ids);
        snprintf(ids + len, cap - len, "%s%s", len ? " " : "", out[i].webhook_id);
    }
    return rc;
}

static void finish_all(struct ch_inbox *ib, const char *sink, struct ch_inbox_entry *e, size_t n,
                       enum ch_inbox_status status, long long next_at)
{
    for (size_t i = 0; i < n; i++) {
        struct ch_inbox_outcome o = {
            .seq = e[i].seq, .status = status, .next_at_ms = next_at, .error = "x"};
        assert_int_equal(ch_inbox_finish_sink(ib, sink, &o, 1, 200, NULL), CH_OK);
        ch_inbox_entry_release(&e[i]);
    }
}

static void test_take_in_call_order(void **state)
{
    struct ch_inbox *ib = *state;
    static const char *const a[] = {"pipe:./h.py"}, *const b[] = {"jsonl:b.jsonl"},
                             *const ab[] = {"pipe:./h.py", "jsonl:b.jsonl"};
    add_to(ib, "b3", "begin-call", "c3", b, 1);  /* call 3's begin goes to b only */
    add_to(ib, "b1", "begin-call", "c1", ab, 2); /* call 1: begin, then end, to both */
    add_to(ib, "e1", "end-call", "c1", ab, 2);
    add_to(ib, "e2", "end-call", "c2", a, 1); /* call 2: the end arrives first */
    add_to(ib, "b2", "begin-call", "c2", a, 1);
    add_to(ib, "n1", "end-call", NULL, a, 1); /* no call key: never held */
    add_to(ib, "e3", "end-call", "c3", a, 1); /* its begin went to b only: not held for a */
    struct ch_inbox_entry ea[8], eb[8];
    size_t na = 0, nb = 0;
    long long next = -1;
    char ids[128];

    /* Taken without the flag, e1 comes with its begin-call. */
    assert_int_equal(ch_inbox_take_sink_flags(ib, a[0], 100000, 0x2, ea, 8, &na, &next, NULL),
                     CH_EINVAL);
    /* In call order, e1 waits; a begin-call that arrived after its end-call does not. */
    assert_int_equal(take_ordered(ib, a[0], 100000, ea, &na, &next, ids, sizeof ids), CH_OK);
    assert_string_equal(ids, "b1 e2 b2 n1 e3");
    /* Nothing else is due, and e1 is not counted as due (else a dispatcher would spin). */
    assert_int_equal(take_ordered(ib, a[0], 100000, eb, &nb, &next, ids, sizeof ids), CH_ENOTFOUND);
    assert_int_equal(next, 0);

    /* Sink b has its own order: its b1 done, its e1 goes, while a's b1 still runs. */
    assert_int_equal(take_ordered(ib, b[0], 100000, eb, &nb, &next, ids, sizeof ids), CH_OK);
    assert_string_equal(ids, "b3 b1");
    finish_all(ib, b[0], eb, nb, CH_INBOX_DONE, 0);
    assert_int_equal(take_ordered(ib, b[0], 100000, eb, &nb, &next, ids, sizeof ids), CH_OK);
    assert_string_equal(ids, "e1");
    finish_all(ib, b[0], eb, nb, CH_INBOX_DONE, 0);

    /* a: b1 is to be retried at 500000; e1 waits for it, and the next due time is b1's. */
    finish_all(ib, a[0], ea, 1, CH_INBOX_PENDING, 500000);
    finish_all(ib, a[0], ea + 1, na - 1, CH_INBOX_DONE, 0);
    assert_int_equal(take_ordered(ib, a[0], 200000, ea, &na, &next, ids, sizeof ids), CH_ENOTFOUND);
    assert_int_equal(next, 500000);
    assert_int_equal(take_ordered(ib, a[0], 500000, ea, &na, &next, ids, sizeof ids), CH_OK);
    assert_string_equal(ids, "b1"); /* still running: e1 waits */
    /* A crash leaves b1 running; recovered, it is pending again and e1 still waits. */
    long long requeued = 0;
    assert_int_equal(ch_inbox_recover(ib, 500000, &requeued, NULL), CH_OK);
    assert_int_equal(requeued, 1);
    ch_inbox_entry_release(&ea[0]);
    assert_int_equal(take_ordered(ib, a[0], 500000, ea, &na, &next, ids, sizeof ids), CH_OK);
    assert_string_equal(ids, "b1");
    /* Parked: e1 waits for `inbox retry`, and is never due meanwhile. */
    finish_all(ib, a[0], ea, na, CH_INBOX_FAILED, 0);
    assert_int_equal(take_ordered(ib, a[0], 900000, ea, &na, &next, ids, sizeof ids), CH_ENOTFOUND);
    assert_int_equal(next, 0);
    assert_int_equal(ch_inbox_retry_sink(ib, "b1", a[0], 900000, NULL, NULL, NULL), CH_OK);
    assert_int_equal(take_ordered(ib, a[0], 900000, ea, &na, &next, ids, sizeof ids), CH_OK);
    assert_string_equal(ids, "b1");
    finish_all(ib, a[0], ea, na, CH_INBOX_DONE, 0);
    assert_int_equal(take_ordered(ib, a[0], 900000, ea, &na, &next, ids, sizeof ids), CH_OK);
    assert_string_equal(ids, "e1");
    finish_all(ib, a[0], ea, na, CH_INBOX_DONE, 0);
    assert_int_equal(status_of(ib, "e1"), CH_INBOX_DONE);
}

/* A sink takes what is due earliest first: a backlog waiting for its retries (the service
 * behind a sink is down) does not stand in front of events that came in since, and a take
 * reads only what is due (deliveries_next), however long that backlog. */
static void test_take_earliest_due_first(void **state)
{
    struct ch_inbox *ib = *state;
    static const char *const sink[] = {"forward:x"};
    char id[32];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "old_%03d", i);
        add_to(ib, id, "begin-call", NULL, sink, 1); /* received at 100: due at 100000 */
    }
    struct ch_inbox_entry e[8];
    size_t n = 0;
    long long next = 0;
    for (int round = 0; round < 25; round++) {
        assert_int_equal(ch_inbox_take_sink(ib, "forward:x", 100000, e, 8, &n, &next, NULL), CH_OK);
        assert_int_equal(n, 8);
        finish_all(ib, "forward:x", e, n, CH_INBOX_PENDING, 500000); /* retry at 500 s */
    }
    assert_int_equal(ch_inbox_take_sink(ib, "forward:x", 100000, e, 8, &n, &next, NULL),
                     CH_ENOTFOUND);
    assert_int_equal(next, 500000);
    /* Ten new events, due at 150 s: taken before the older ones, which are due later. */
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "new_%03d", i);
        struct ch_inbox_event ev = {
            .webhook_id = id, .event = "end-call", .body = "{}", .body_len = 2, .received_at = 150};
        struct ch_inbox_sinks to = {sink, 1};
        assert_int_equal(ch_inbox_add_routed(ib, &ev, &to, 1, NULL), CH_OK);
    }
    assert_int_equal(ch_inbox_take_sink(ib, "forward:x", 600000, e, 8, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 8);
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "new_%03zu", i); /* in arrival order among them */
        assert_string_equal(e[i].webhook_id, id);
    }
    finish_all(ib, "forward:x", e, n, CH_INBOX_DONE, 0);
    assert_int_equal(ch_inbox_take_sink(ib, "forward:x", 600000, e, 8, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 8);
    assert_string_equal(e[0].webhook_id, "old_000"); /* then the retries, oldest first */
    assert_string_equal(e[6].webhook_id, "new_008");
    assert_string_equal(e[7].webhook_id, "new_009");
    finish_all(ib, "forward:x", e, n, CH_INBOX_DONE, 0);
}

/* Deliveries stored as handed (inbox_add_handed): running with their first attempt, not taken
 * again; the event's state derived from them at once; a crash's recovery makes them pending. */
static void test_add_handed(void **state)
{
    struct ch_inbox *ib = *state;
    static const char *const names[] = {"jsonl:a", "exec:b"};
    struct ch_inbox_sinks to = {names, 2};
    bool handed_row[] = {true, false}, none_row[] = {false, false};
    const bool *handed[] = {handed_row, none_row};
    struct ch_inbox_event ev[2] = {
        {.webhook_id = "h1",
         .event = "begin-call",
         .call_key = "c1",
         .body = "{\"n\":1}",
         .body_len = 7,
         .received_at = 100,
         .webhook_timestamp = 99,
         .webhook_signature = "v1,x"},
        {.webhook_id = "h2", .event = "end-call", .body = "{}", .body_len = 2, .received_at = 100},
    };
    struct ch_inbox_sinks both[] = {to, to};
    assert_int_equal(inbox_add_handed(ib, ev, both, handed, 2, NULL), CH_OK);
    struct ch_inbox_entry got;
    assert_int_equal(ch_inbox_get(ib, "h1", &got, NULL), CH_OK);
    assert_int_equal(got.status, CH_INBOX_RUNNING);
    assert_int_equal(got.attempts, 1);
    assert_int_equal(got.next_at, 100000); /* exec:b waits */
    ch_inbox_entry_release(&got);
    assert_int_equal(ch_inbox_get(ib, "h2", &got, NULL), CH_OK);
    assert_int_equal(got.status, CH_INBOX_PENDING);
    assert_int_equal(got.attempts, 0);
    ch_inbox_entry_release(&got);

    /* What the front hands over is what a take would have given. */
    struct ch_inbox_entry mem;
    assert_int_equal(inbox_entry_of(&ev[0], &mem, NULL), CH_OK);
    assert_int_equal(mem.seq, ev[0].seq);
    assert_string_equal(mem.call_key, "c1");
    assert_int_equal(mem.attempts, 1);
    assert_memory_equal(mem.body, "{\"n\":1}", 8);
    assert_string_equal(mem.webhook_signature, "v1,x");

    struct ch_inbox_entry t[4];
    size_t n = 0;
    long long next = 0;
    /* jsonl:a has h2 only: h1 was handed. */
    assert_int_equal(ch_inbox_take_sink(ib, "jsonl:a", 999999, t, 4, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].webhook_id, "h2");
    finish_all(ib, "jsonl:a", t, n, CH_INBOX_DONE, 0);
    finish_all(ib, "jsonl:a", &mem, 1, CH_INBOX_DONE, 0);
    assert_int_equal(ch_inbox_take_sink(ib, "exec:b", 999999, t, 4, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 2);
    finish_all(ib, "exec:b", t, n, CH_INBOX_DONE, 0);
    assert_int_equal(ch_inbox_get(ib, "h1", &got, NULL), CH_OK);
    assert_int_equal(got.status, CH_INBOX_DONE);
    ch_inbox_entry_release(&got);

    /* A crash before the outcome: the next start's recovery makes it pending, its try kept. */
    static const char *const only_a[] = {"jsonl:a"};
    struct ch_inbox_sinks to_a = {only_a, 1};
    bool yes[] = {true};
    const bool *handed_a[] = {yes};
    struct ch_inbox_event e3 = {
        .webhook_id = "h3", .event = "end-call", .body = "{}", .body_len = 2, .received_at = 100};
    assert_int_equal(inbox_add_handed(ib, &e3, &to_a, handed_a, 1, NULL), CH_OK);
    assert_int_equal(ch_inbox_take_sink(ib, "jsonl:a", 999999, t, 4, &n, &next, NULL),
                     CH_ENOTFOUND);
    long long requeued = 0;
    assert_int_equal(ch_inbox_recover(ib, 200000, &requeued, NULL), CH_OK);
    assert_int_equal(requeued, 1);
    assert_int_equal(ch_inbox_take_sink(ib, "jsonl:a", 999999, t, 4, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].webhook_id, "h3");
    assert_int_equal(t[0].attempts, 2);
    finish_all(ib, "jsonl:a", t, n, CH_INBOX_DONE, 0);
}

/* A take reads the first rows of one index range: it neither sorts every due delivery of the
 * sink (a temporary b-tree) nor scans them. Checked on the file at path with its own connection. */
static void assert_take_plan(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    for (int in_order = 0; in_order < 2; in_order++) {
        char sql[2048];
        snprintf(sql, sizeof sql, "EXPLAIN QUERY PLAN %s", inbox_take_sql(in_order));
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        char plan[2048] = "";
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *row = (const char *)sqlite3_column_text(st, 3);
            strncat(plan, row ? row : "", sizeof plan - strlen(plan) - 2);
            strcat(plan, "\n");
        }
        sqlite3_finalize(st);
        if (strstr(plan, "TEMP B-TREE") || !strstr(plan, "deliveries_next (sink=? AND next_at<?)"))
            fail_msg("the take (in call order: %d) does not read one range:\n%s", in_order, plan);
    }
    sqlite3_close(db);
}

static void test_take_plan_reads_one_range(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/plan.db", dir);
    struct ch_inbox *ib = NULL;
    assert_int_equal(ch_inbox_open(path, &ib, NULL), CH_OK);
    ch_inbox_close(ib);
    assert_take_plan(path);
}

/* A version 1 inbox (one status per event), as callhook wrote it before sinks. */
static const char v1_schema[] =
    "CREATE TABLE events ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT, webhook_id TEXT NOT NULL UNIQUE,"
    "  event TEXT NOT NULL, call_key TEXT, call_type INTEGER, body BLOB NOT NULL,"
    "  received_at INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,"
    "  last_error TEXT NOT NULL DEFAULT '', processed_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX events_call ON events(event, call_key) WHERE call_key IS NOT NULL;"
    "CREATE INDEX events_due ON events(next_at) WHERE status = 0;"
    "CREATE INDEX events_status ON events(status, seq);"
    "CREATE TABLE meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT INTO meta VALUES ('key_window_s', 1234);"
    "INSERT INTO events(webhook_id, event, call_key, call_type, body, received_at, status,"
    " attempts, next_at, last_error, processed_at) VALUES"
    " ('msg_p', 'begin-call', 'c1', 2, '{\"p\":1}', 100, 0, 0, 100000, '', 0),"
    " ('msg_r', 'begin-call', 'c2', 2, '{\"r\":1}', 101, 1, 2, 101000, 'exit 1', 0),"
    " ('msg_d', 'end-call', 'c1', 2, '{\"d\":1}', 102, 2, 1, 102000, '', 103),"
    " ('msg_f', 'end-call', 'c2', NULL, '{\"f\":1}', 103, 3, 5, 103000, 'exit 3', 0);";

static size_t route_two(void *ctx, const struct ch_inbox_entry *e, const char **names, size_t max)
{
    (void)ctx;
    (void)max;
    names[0] = "exec:./h.sh";
    if (strcmp(e->event, "end-call") == 0) {
        names[1] = "jsonl:e.jsonl";
        return 2;
    }
    return 1;
}

static void test_migrate_v1(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/v1.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(chmod(path, 0600), 0); /* an inbox is its owner's alone */

    struct ch_inbox *ib = NULL;
    struct ch_error err = {0};
    assert_int_equal(ch_inbox_open(path, &ib, &err), CH_OK);
    /* Statuses and keys as they were; the running one is pending again. */
    assert_int_equal(status_of(ib, "msg_p"), CH_INBOX_PENDING);
    assert_int_equal(status_of(ib, "msg_r"), CH_INBOX_PENDING);
    assert_int_equal(status_of(ib, "msg_d"), CH_INBOX_DONE);
    assert_int_equal(status_of(ib, "msg_f"), CH_INBOX_FAILED);
    assert_true(add(ib, "msg_x", "begin-call", "c1", 200).duplicate);
    /* The unprocessed ones are the implicit sink's: a library user goes on as before. */
    struct ch_inbox_entry e;
    long long next = 0;
    assert_int_equal(ch_inbox_take(ib, 200000, &e, &next, NULL), CH_OK);
    assert_string_equal(e.webhook_id, "msg_p");
    assert_int_equal(e.attempts, 1);
    ch_inbox_entry_release(&e);
    assert_int_equal(ch_inbox_recover(ib, 200000, &next, NULL), CH_OK);
    ch_inbox_close(ib);

    /* Opened again (already version 2), then the receiver moves them to its sinks. */
    assert_int_equal(ch_inbox_open(path, &ib, &err), CH_OK);
    long long moved = 0;
    assert_int_equal(inbox_reassign(ib, "", route_two, NULL, &moved, &err), CH_OK);
    assert_int_equal(moved, 3); /* p, r, f; d was done */
    struct ch_inbox_entry got;
    assert_int_equal(ch_inbox_get(ib, "msg_f", &got, NULL), CH_OK);
    assert_int_equal(got.status, CH_INBOX_FAILED);
    assert_string_equal(got.last_error, "exit 3");
    struct sink_states s = states_of(ib, got.seq);
    ch_inbox_entry_release(&got);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.status[0], CH_INBOX_FAILED);
    assert_int_equal(s.status[1], CH_INBOX_FAILED);
    assert_int_equal(s.attempts[1], 5);
    struct ch_inbox_entry t[4];
    size_t n = 0;
    assert_int_equal(ch_inbox_take_sink(ib, "exec:./h.sh", 999999, t, 4, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].webhook_id, "msg_p");
    assert_string_equal(t[1].webhook_id, "msg_r");
    assert_int_equal(t[1].attempts, 3); /* two before the upgrade */
    for (size_t i = 0; i < n; i++)
        ch_inbox_entry_release(&t[i]);
    assert_int_equal(ch_inbox_take(ib, 999999, &e, &next, NULL), CH_ENOTFOUND);
    long long ev = 0;
    assert_int_equal(ch_inbox_retry_sink(ib, "msg_f", "jsonl:e.jsonl", 999999, &ev, NULL, NULL),
                     CH_OK);
    assert_int_equal(ch_inbox_take_sink(ib, "jsonl:e.jsonl", 999999, t, 4, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].webhook_id, "msg_f");
    assert_memory_equal(t[0].body, "{\"f\":1}", 7);
    ch_inbox_entry_release(&t[0]);
    ch_inbox_close(ib);

    /* A newer schema than this library knows is refused, not read wrong. */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(ch_inbox_open(path, &ib, &err), CH_ESTORE);
    assert_non_null(strstr(err.message, "schema version 99"));
}

/* A version 2 inbox (deliveries per sink, no signature headers): v1's tables plus these. */
static const char v2_more[] =
    "CREATE TABLE deliveries ("
    "  seq INTEGER NOT NULL, sink TEXT NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,"
    "  last_error TEXT NOT NULL DEFAULT '', processed_at INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (seq, sink)) WITHOUT ROWID;"
    "CREATE INDEX deliveries_due ON deliveries(sink, seq) WHERE status = 0;"
    "DROP INDEX events_due;"
    "INSERT INTO deliveries(seq, sink, next_at) SELECT seq, 'forward:x', next_at FROM events"
    " WHERE status = 0;"
    "PRAGMA user_version = 2;";

/* Version 2 to 3: the events kept, the signature headers added (none for the old events); a
 * new event's come back with its body, and a listing leaves the signature out. */
static void test_migrate_v2_signature_headers(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/v2.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v2_more, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(chmod(path, 0600), 0);

    struct ch_inbox *ib = NULL;
    struct ch_error err = {0};
    assert_int_equal(ch_inbox_open(path, &ib, &err), CH_OK);
    static const char *const sink[] = {"forward:x"};
    struct ch_inbox_sinks to = {sink, 1};
    struct ch_inbox_event ev = {.webhook_id = "msg_new",
                                .event = "begin-call",
                                .call_key = "c9",
                                .body = "{\"n\":1}",
                                .body_len = 7,
                                .received_at = 300,
                                .webhook_timestamp = 299,
                                .webhook_signature = "v1,abc= v1,def="};
    assert_int_equal(ch_inbox_add_routed(ib, &ev, &to, 1, &err), CH_OK);
    assert_false(ev.duplicate);
    struct ch_inbox_entry t[4];
    size_t n = 0;
    long long next = 0;
    assert_int_equal(ch_inbox_take_sink(ib, "forward:x", 999999, t, 4, &n, &next, NULL), CH_OK);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].webhook_id, "msg_p"); /* from version 2: none kept */
    assert_int_equal(t[0].webhook_timestamp, 0);
    assert_null(t[0].webhook_signature);
    assert_string_equal(t[1].webhook_id, "msg_new");
    assert_int_equal(t[1].webhook_timestamp, 299);
    assert_string_equal(t[1].webhook_signature, "v1,abc= v1,def=");
    assert_memory_equal(t[1].body, "{\"n\":1}", 8); /* its terminator too */
    for (size_t i = 0; i < n; i++)
        ch_inbox_entry_release(&t[i]);
    struct ch_inbox_entry got;
    assert_int_equal(ch_inbox_get(ib, "msg_new", &got, NULL), CH_OK);
    assert_string_equal(got.webhook_signature, "v1,abc= v1,def=");
    ch_inbox_entry_release(&got);
    assert_null(got.webhook_signature);
    ch_inbox_close(ib);

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), CH_INBOX_SCHEMA_VERSION);
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_take_plan(path); /* the index of version 4 made by the migration */
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/callhook-test-inbox-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dedupe, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_take_in_order_retry_and_park, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_take_and_finish_many, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_recover_and_expire, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_expire_keeps_young_keys, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_list_and_reopen, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_stats, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_sinks_apart, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_take_in_call_order, fresh, close_inbox),
        cmocka_unit_test_setup_teardown(test_take_earliest_due_first, fresh, close_inbox),
        cmocka_unit_test(test_take_plan_reads_one_range),
        cmocka_unit_test_setup_teardown(test_add_handed, fresh, close_inbox),
        cmocka_unit_test(test_migrate_v1),
        cmocka_unit_test(test_migrate_v2_signature_headers),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
