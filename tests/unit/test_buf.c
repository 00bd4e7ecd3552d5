/* The capped buffer: grows, refuses to pass its cap, and stays as it was when it refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "util/buf.h"

static void test_grows_and_terminates(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 100000);
    for (int i = 0; i < 1000; i++)
        assert_true(buf_add(&b, "0123456789", 10));
    assert_int_equal(b.len, 10000);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 9990, "0123456789", 10);
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    buf_release(&b);
    assert_null(b.data);
}

static void test_cap_is_hard(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_true(buf_add(&b, "12345", 5));
    assert_false(buf_add(&b, "123456", 6));
    assert_true(buf_too_big(&b, 6));
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");
    assert_true(buf_add(&b, "67890", 5));
    assert_int_equal(b.len, 10);
    assert_false(buf_add(&b, "x", 1));
    assert_false(buf_add(&b, "x", (size_t)-1));
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_and_terminates),
        cmocka_unit_test(test_cap_is_hard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
