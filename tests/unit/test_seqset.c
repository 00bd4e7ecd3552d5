/* The engine's set of sequence numbers held in memory: add, has, remove (with the backward
 * shift that keeps probe runs whole, across the end of the table too), growth, copy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "deliver/seqset.h"

/* The slot a seq lands in when it is alone in a set of the first size. */
static size_t home_of(int64_t seq, size_t *cap)
{
    struct seq_set s = {0};
    assert_true(seq_set_add(&s, seq));
    size_t home = s.cap;
    for (size_t i = 0; i < s.cap; i++) {
        if (s.slots[i] == seq)
            home = i;
    }
    *cap = s.cap;
    seq_set_release(&s);
    return home;
}

/* Up to n seqs (from 1 up) whose home is slot want. */
static size_t seqs_at(size_t want, int64_t *out, size_t n)
{
    size_t found = 0, cap;
    for (int64_t seq = 1; found < n && seq < 10000000; seq++) {
        if (home_of(seq, &cap) == want)
            out[found++] = seq;
    }
    return found;
}

static void test_add_has_remove(void **state)
{
    (void)state;
    struct seq_set s = {0};
    assert_false(seq_set_has(&s, 1));
    seq_set_remove(&s, 1); /* removing from an empty set is a no-op */
    assert_true(seq_set_add(&s, 7));
    assert_true(seq_set_add(&s, 7)); /* twice: still one */
    assert_int_equal(s.count, 1);
    assert_true(seq_set_has(&s, 7));
    assert_false(seq_set_has(&s, 8));
    seq_set_remove(&s, 8);
    assert_int_equal(s.count, 1);
    seq_set_remove(&s, 7);
    assert_int_equal(s.count, 0);
    assert_false(seq_set_has(&s, 7));
    seq_set_release(&s);
    assert_null(s.slots);
    assert_int_equal(s.cap, 0);
}

/* A probe run that wraps from the last slot to the first: removing its head shifts the rest
 * back, the one whose home is slot 0 included, and leaves no hole a lookup would stop at. */
static void test_remove_shifts_back_across_the_end(void **state)
{
    (void)state;
    size_t cap;
    home_of(1, &cap);
    int64_t last[3], first[1];
    assert_int_equal(seqs_at(cap - 1, last, 3), 3);
    assert_int_equal(seqs_at(0, first, 1), 1);
    struct seq_set s = {0};
    for (int i = 0; i < 3; i++)
        assert_true(seq_set_add(&s, last[i]));
    assert_true(seq_set_add(&s, first[0]));
    assert_int_equal(s.cap, cap);
    /* The run: last[0] at cap-1, last[1] at 0, last[2] at 1, first[0] at 2. */
    assert_true(s.slots[cap - 1] == last[0]);
    assert_true(s.slots[0] == last[1]);
    assert_true(s.slots[1] == last[2]);
    assert_true(s.slots[2] == first[0]);

    seq_set_remove(&s, last[0]);
    assert_int_equal(s.count, 3);
    assert_true(s.slots[cap - 1] == last[1]);
    assert_true(s.slots[0] == last[2]);
    assert_true(s.slots[1] == first[0]);
    assert_true(s.slots[2] == 0);
    assert_false(seq_set_has(&s, last[0]));
    assert_true(seq_set_has(&s, last[1]));
    assert_true(seq_set_has(&s, last[2]));
    assert_true(seq_set_has(&s, first[0]));

    /* An entry at its own home stays where it is when one before it goes. */
    seq_set_remove(&s, last[2]);
    assert_true(s.slots[cap - 1] == last[1]);
    assert_true(s.slots[0] == first[0]);
    assert_true(seq_set_has(&s, first[0]));
    assert_true(seq_set_has(&s, last[1]));
    seq_set_release(&s);
}

/* Many members: the set grows at half full, keeps every member, and removals in any order
 * leave the others findable. */
static void test_growth_and_many_removals(void **state)
{
    (void)state;
    enum { N = 20000 };
    struct seq_set s = {0};
    for (int64_t seq = 1; seq <= N; seq++)
        assert_true(seq_set_add(&s, seq * 3));
    assert_int_equal(s.count, N);
    assert_true(s.cap >= 2 * (size_t)N);
    assert_int_equal(s.cap & (s.cap - 1), 0); /* a power of two */
    for (int64_t seq = 1; seq <= N; seq++) {
        assert_true(seq_set_has(&s, seq * 3));
        assert_false(seq_set_has(&s, seq * 3 + 1));
    }
    for (int64_t seq = 1; seq <= N; seq += 2)
        seq_set_remove(&s, seq * 3);
    assert_int_equal(s.count, N / 2);
    for (int64_t seq = 1; seq <= N; seq++)
        assert_true(seq_set_has(&s, seq * 3) == (seq % 2 == 0));

    int64_t *all = malloc(s.count * sizeof *all);
    assert_non_null(all);
    assert_int_equal(seq_set_copy(&s, all), N / 2);
    int64_t sum = 0;
    for (size_t i = 0; i < N / 2; i++)
        sum += all[i];
    int64_t want = 0;
    for (int64_t seq = 2; seq <= N; seq += 2)
        want += seq * 3;
    assert_true(sum == want);
    free(all);
    seq_set_release(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_has_remove),
        cmocka_unit_test(test_remove_shifts_back_across_the_end),
        cmocka_unit_test(test_growth_and_many_removals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
