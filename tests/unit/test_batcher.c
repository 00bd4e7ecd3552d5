/* The group-commit batcher: submission order, at most max_batch per commit, a failed commit
 * reaching every item of its batch, a full queue refused, a stop answering what is queued, and
 * every queued item answered exactly once — with real threads (run under ASan and UBSan). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "util/batcher.h"

#define MAX_ITEMS 20000

struct item {
    int id;
    int producer;
    int seq; /* its place among its producer's submissions */
    bool poison;
};

/* What the callbacks saw, and a gate that holds commits until the test opens it. */
struct probe {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool gate_closed;
    int commits_entered;
    int committed[MAX_ITEMS]; /* ids in commit order */
    int ncommitted;
    size_t batch_sizes[MAX_ITEMS];
    int nbatches;
    int answered[MAX_ITEMS]; /* times done saw each id */
    ch_code rc_of[MAX_ITEMS];
    size_t largest_batch;
    bool bad_thread_name;
    bool done_without_commit;
    int pending_done; /* commits not yet followed by their done */
};

static struct probe *probe_new(void)
{
    struct probe *p = calloc(1, sizeof *p);
    assert_non_null(p);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    return p;
}

static void probe_free(struct probe *p)
{
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

static ch_code commit(void *ctx, void *const *items, size_t n)
{
    struct probe *p = ctx;
    char name[16] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    pthread_mutex_lock(&p->lock);
    if (strcmp(name, "ch-test") != 0)
        p->bad_thread_name = true;
    p->commits_entered++;
    pthread_cond_broadcast(&p->cond);
    while (p->gate_closed)
        pthread_cond_wait(&p->cond, &p->lock);
    bool fail = false;
    for (size_t i = 0; i < n; i++) {
        const struct item *it = items[i];
        p->committed[p->ncommitted++] = it->id;
        fail = fail || it->poison;
    }
    p->batch_sizes[p->nbatches++] = n;
    if (n > p->largest_batch)
        p->largest_batch = n;
    p->pending_done++;
    pthread_mutex_unlock(&p->lock);
    return fail ? CH_ESTORE : CH_OK;
}

static void done(void *ctx, void *const *items, size_t n, ch_code rc)
{
    struct probe *p = ctx;
    pthread_mutex_lock(&p->lock);
    if (p->pending_done-- != 1)
        p->done_without_commit = true;
    for (size_t i = 0; i < n; i++) {
        const struct item *it = items[i];
        p->answered[it->id]++;
        p->rc_of[it->id] = rc;
    }
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static struct batcher *start(struct probe *p, size_t max_batch, size_t max_queued)
{
    struct batcher_config cfg = {.thread_name = "ch-test",
                                 .max_batch = max_batch,
                                 .max_queued = max_queued,
                                 .commit = commit,
                                 .done = done,
                                 .ctx = p};
    struct batcher *b = NULL;
    struct ch_error err = {0};
    assert_int_equal(batcher_new(&cfg, &b, &err), CH_OK);
    assert_non_null(b);
    return b;
}

static void set_gate(struct probe *p, bool closed)
{
    pthread_mutex_lock(&p->lock);
    p->gate_closed = closed;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Waits until `commits` commits have begun (the last may be held at the gate). */
static void wait_commits_entered(struct probe *p, int commits)
{
    pthread_mutex_lock(&p->lock);
    while (p->commits_entered < commits)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

/* A batcher whose first commit (of item 0 alone) is held at the gate: what is submitted next
 * waits in the queue until the test opens the gate. */
static struct batcher *start_held(struct probe *p, size_t max_batch, size_t max_queued,
                                  struct item *items)
{
    set_gate(p, true);
    struct batcher *b = start(p, max_batch, max_queued);
    assert_int_equal(batcher_submit(b, &items[0]), BATCHER_QUEUED);
    wait_commits_entered(p, 1); /* item 0 is taken: the queue is empty again */
    return b;
}

static struct item *items_new(int n)
{
    struct item *items = calloc((size_t)n, sizeof *items);
    assert_non_null(items);
    for (int i = 0; i < n; i++)
        items[i].id = items[i].seq = i;
    return items;
}

static void assert_answered_once(const struct probe *p, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(p->answered[i], 1);
    assert_false(p->done_without_commit);
    assert_false(p->bad_thread_name);
}

static void test_order_and_batch_cap(void **state)
{
    (void)state;
    struct probe *p = probe_new();
    struct item *items = items_new(5000);
    struct batcher *b = start(p, 7, 5000);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(batcher_submit(b, &items[i]), BATCHER_QUEUED);
    batcher_free(b);
    assert_int_equal(p->ncommitted, 5000);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(p->committed[i], i);
    assert_true(p->largest_batch <= 7);
    assert_answered_once(p, 5000);
    free(items);
    probe_free(p);
}

/* While one commit runs, what arrives waits and goes in the next commits, max_batch at a time. */
static void test_groups_what_waits(void **state)
{
    (void)state;
    struct probe *p = probe_new();
    struct item *items = items_new(21);
    struct batcher *b = start_held(p, 8, 64, items);
    for (int i = 1; i < 21; i++)
        assert_int_equal(batcher_submit(b, &items[i]), BATCHER_QUEUED);
    set_gate(p, false);
    batcher_free(b);
    assert_int_equal(p->nbatches, 4);
    assert_int_equal(p->batch_sizes[0], 1);
    assert_int_equal(p->batch_sizes[1], 8);
    assert_int_equal(p->batch_sizes[2], 8);
    assert_int_equal(p->batch_sizes[3], 4);
    for (int i = 0; i < 21; i++)
        assert_int_equal(p->committed[i], i);
    assert_answered_once(p, 21);
    free(items);
    probe_free(p);
}

/* A failed commit reaches every item of its batch, and only those. */
static void test_failure_reaches_the_whole_batch(void **state)
{
    (void)state;
    struct probe *p = probe_new();
    struct item *items = items_new(13);
    items[5].poison = true;
    struct batcher *b = start_held(p, 8, 64, items);
    for (int i = 1; i < 13; i++) /* batches: {0}, {1..8} with the poisoned 5, {9..12} */
        assert_int_equal(batcher_submit(b, &items[i]), BATCHER_QUEUED);
    set_gate(p, false);
    batcher_free(b);
    assert_int_equal(p->nbatches, 3);
    for (int i = 0; i < 13; i++)
        assert_int_equal(p->rc_of[i], i >= 1 && i <= 8 ? CH_ESTORE : CH_OK);
    assert_answered_once(p, 13);
    free(items);
    probe_free(p);
}

/* A full queue refuses at once; the refused item never reaches done; room comes back. */
static void test_full_queue_is_refused(void **state)
{
    (void)state;
    struct probe *p = probe_new();
    struct item *items = items_new(7);
    struct batcher *b = start_held(p, 2, 4, items);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(batcher_submit(b, &items[i]), BATCHER_QUEUED);
    assert_int_equal(batcher_submit(b, &items[5]), BATCHER_FULL);
    set_gate(p, false);
    /* Once items 1 and 2 are answered, there is room again. */
    pthread_mutex_lock(&p->lock);
    while (p->answered[2] == 0)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    assert_int_equal(batcher_submit(b, &items[6]), BATCHER_QUEUED);
    batcher_free(b);
    assert_int_equal(p->answered[5], 0);
    for (int i = 0; i < 7; i++)
        if (i != 5)
            assert_int_equal(p->answered[i], 1);
    free(items);
    probe_free(p);
}

static void *stopper(void *arg)
{
    batcher_stop(arg);
    return NULL;
}

/* Stop with items queued: each is still committed and answered; a later submit is refused. */
static void test_stop_answers_what_is_queued(void **state)
{
    (void)state;
    struct probe *p = probe_new();
    struct item *items = items_new(MAX_ITEMS);
    struct batcher *b = start_held(p, 16, MAX_ITEMS - 2, items); /* items[n] stays in bounds */
    int n = 1;
    for (; n < 100; n++)
        assert_int_equal(batcher_submit(b, &items[n]), BATCHER_QUEUED);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, stopper, b), 0);
    /* Submits race the stop until it is seen: each one that was queued must be answered. */
    enum batcher_submit_result res;
    while ((res = batcher_submit(b, &items[n])) != BATCHER_STOPPED) {
        if (res == BATCHER_QUEUED)
            n++;
        sched_yield();
    }
    assert_int_equal(res, BATCHER_STOPPED);
    set_gate(p, false);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(p->ncommitted, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(p->committed[i], i);
    assert_answered_once(p, n);
    assert_int_equal(p->answered[n], 0);
    assert_int_equal(batcher_submit(b, &items[n]), BATCHER_STOPPED);
    batcher_stop(b); /* again: a no-op */
    batcher_free(b);
    free(items);
    probe_free(p);
}

#define PRODUCERS    4
#define PER_PRODUCER 4000

struct producer {
    struct batcher *b;
    struct item *items;     /* PER_PRODUCER of them */
    bool refused_otherwise; /* checked by the main thread: cmocka asserts there only */
};

static void *produce(void *arg)
{
    struct producer *pr = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        enum batcher_submit_result res;
        while ((res = batcher_submit(pr->b, &pr->items[i])) == BATCHER_FULL)
            sched_yield(); /* the queue is small on purpose: wait for room */
        if (res != BATCHER_QUEUED)
            pr->refused_otherwise = true;
    }
    return NULL;
}

/* Several threads at once, a small queue, some failed commits: nothing lost or answered twice,
 * and each thread's items committed in the order it queued them. */
static void test_many_producers(void **state)
{
    (void)state;
    struct probe *p = probe_new();
    struct item *items = items_new(PRODUCERS * PER_PRODUCER);
    struct batcher *b = start(p, 16, 32);
    struct producer prs[PRODUCERS];
    pthread_t threads[PRODUCERS];
    for (int k = 0; k < PRODUCERS; k++) {
        prs[k] = (struct producer){.b = b, .items = items + k * PER_PRODUCER};
        for (int i = 0; i < PER_PRODUCER; i++) {
            prs[k].items[i].producer = k;
            prs[k].items[i].seq = i;
            prs[k].items[i].poison = i % 997 == 0;
        }
        assert_int_equal(pthread_create(&threads[k], NULL, produce, &prs[k]), 0);
    }
    for (int k = 0; k < PRODUCERS; k++) {
        assert_int_equal(pthread_join(threads[k], NULL), 0);
        assert_false(prs[k].refused_otherwise);
    }
    batcher_free(b);
    assert_int_equal(p->ncommitted, PRODUCERS * PER_PRODUCER);
    assert_answered_once(p, PRODUCERS * PER_PRODUCER);
    int next[PRODUCERS] = {0};
    for (int i = 0; i < p->ncommitted; i++) {
        const struct item *it = &items[p->committed[i]];
        assert_int_equal(it->seq, next[it->producer]);
        next[it->producer]++;
    }
    assert_true(p->largest_batch <= 16);
    free(items);
    probe_free(p);
}

static void test_bad_config_and_free_null(void **state)
{
    (void)state;
    struct batcher_config cfg = {.max_batch = 0, .max_queued = 1, .commit = commit, .done = done};
    struct batcher *b = NULL;
    struct ch_error err = {0};
    assert_int_equal(batcher_new(&cfg, &b, &err), CH_EINVAL);
    assert_null(b);
    cfg.max_batch = 1;
    cfg.done = NULL;
    assert_int_equal(batcher_new(&cfg, &b, &err), CH_EINVAL);
    batcher_free(NULL);
    batcher_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_batch_cap),
        cmocka_unit_test(test_groups_what_waits),
        cmocka_unit_test(test_failure_reaches_the_whole_batch),
        cmocka_unit_test(test_full_queue_is_refused),
        cmocka_unit_test(test_stop_answers_what_is_queued),
        cmocka_unit_test(test_many_producers),
        cmocka_unit_test(test_bad_config_and_free_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
