/* Error values: every code has a name and a message, and ch_error_set fills and caps. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <callhook/error.h>

static void test_names_and_messages(void **state)
{
    (void)state;
    assert_string_equal(ch_code_name(CH_OK), "OK");
    assert_string_equal(ch_code_name(CH_ETOOOLD), "ETOOOLD");
    assert_string_equal(ch_strerror(CH_ENOMATCH), "no matching signature");
    assert_string_equal(ch_code_name((ch_code)9999), "UNKNOWN");
    for (int c = 0; c < CH_ERRNO_COUNT_; c++) {
        assert_true(strlen(ch_strerror((ch_code)c)) > 0);
        assert_true(strlen(ch_code_name((ch_code)c)) > 0);
    }
}

static void test_set_formats_and_caps(void **state)
{
    (void)state;
    struct ch_error err;
    assert_int_equal(ch_error_set(&err, CH_EINVAL, "bad '%s' (%d)", "x", 7), CH_EINVAL);
    assert_int_equal(err.code, CH_EINVAL);
    assert_string_equal(err.message, "bad 'x' (7)");
    char long_text[1000];
    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    ch_error_set(&err, CH_EIO, "%s", long_text);
    assert_int_equal(strlen(err.message), CH_ERROR_MESSAGE_MAX - 1);
    assert_int_equal(ch_error_set(NULL, CH_ENOMEM, "ignored"), CH_ENOMEM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_messages),
        cmocka_unit_test(test_set_formats_and_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
