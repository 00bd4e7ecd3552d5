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
#include <unistd.h>

#include <callhook/inbox.h>

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
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
