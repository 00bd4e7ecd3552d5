/*
 * The engine's store thread (deliver/storeq.c) against a store that only records what it is
 * given: a batch of results that grew past its first allocation (realloc may move it) is
 * written with its strings, and the written callback, which reads each item's result (the
 * operational webhooks' outcomes), sees them too, not the places they were before the move.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/storeq.h"

#define RESULTS (3 * STOREQ_RESULT_BATCH + 7) /* grown twice (ASan's realloc always moves) */

/* What each side saw, checked on the test's thread (cmocka asserts there only). */
static struct {
    pthread_mutex_t lock;
    size_t recorded, written, wrong_recorded, wrong_written;
} seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool strings_match(const struct attempt_result *r, size_t i)
{
    char want[64];
    snprintf(want, sizeof want, "error %zu", i);
    if (r->error == NULL || strcmp(r->error, want) != 0)
        return false;
    snprintf(want, sizeof want, "app%zu", i % 5);
    if (r->app_id == NULL || strcmp(r->app_id, want) != 0)
        return false;
    snprintf(want, sizeof want, "v1,sig%zu", i);
    if (r->signature == NULL || strcmp(r->signature, want) != 0)
        return false;
    snprintf(want, sizeof want, "response %zu", i);
    return r->response != NULL && r->response_len == strlen(want) &&
           memcmp(r->response, want, r->response_len) == 0;
}

static ch_code fake_record(struct store *s, const struct attempt_result *r, size_t n,
                           struct ch_error *err)
{
    (void)s, (void)err;
    pthread_mutex_lock(&seen.lock);
    for (size_t k = 0; k < n; k++, seen.recorded++)
        if ((size_t)r[k].seq != seen.recorded || !strings_match(&r[k], seen.recorded))
            seen.wrong_recorded++;
    pthread_mutex_unlock(&seen.lock);
    return CH_OK;
}

static void written(void *ctx, const struct storeq_result *r, size_t n)
{
    (void)ctx;
    pthread_mutex_lock(&seen.lock);
    for (size_t k = 0; k < n; k++, seen.written++)
        if (!strings_match(&r[k].r, (size_t)r[k].r.seq))
            seen.wrong_written++;
    pthread_mutex_unlock(&seen.lock);
}

static void wake(void *ctx)
{
    (void)ctx;
}

static void test_grown_batch_keeps_its_strings(void **state)
{
    (void)state;
    static const struct store_ops fake_ops = {.name = "fake", .record_attempts = fake_record};
    struct store fake = {.ops = &fake_ops};
    struct storeq *q = NULL;
    assert_int_equal(storeq_start(&fake, 16, wake, NULL, written, NULL, &q, NULL), CH_OK);
    /* Filled as the engine fills a result: each string in the item, pointed at from r. */
    for (size_t i = 0; i < RESULTS; i++) {
        struct storeq_result *p = storeq_result_add(q);
        assert_non_null(p);
        p->r.seq = (int64_t)i;
        snprintf(p->error, sizeof p->error, "error %zu", i);
        p->r.error = p->error;
        snprintf(p->app_id, sizeof p->app_id, "app%zu", i % 5);
        p->r.app_id = p->app_id;
        snprintf(p->signature, sizeof p->signature, "v1,sig%zu", i);
        p->r.signature = p->signature;
        int len = snprintf(p->response, sizeof p->response, "response %zu", i);
        p->r.response = p->response;
        p->r.response_len = (size_t)len;
    }
    assert_int_equal(storeq_unwritten(q), RESULTS);
    assert_true(storeq_flush(q, true));
    storeq_stop(q, 1000);
    assert_int_equal(seen.recorded, RESULTS);
    assert_int_equal(seen.wrong_recorded, 0);
    assert_int_equal(seen.written, RESULTS);
    assert_int_equal(seen.wrong_written, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grown_batch_keeps_its_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
