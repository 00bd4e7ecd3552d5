/* The retry policy and the failure classes: libcurl's outcomes to classes, Retry-After read
 * and capped, the schedule with its lengthening-only jitter, and a spent schedule. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "deliver/retry.h"

static void test_classification_table(void **state)
{
    (void)state;
    static const struct {
        CURLcode rc;
        bool refused;
        enum failure_class want;
        const char *name;
    } cases[] = {
        {CURLE_OPERATION_TIMEDOUT, false, FAILURE_timeout, "timeout"},
        {CURLE_COULDNT_RESOLVE_HOST, false, FAILURE_connect, "connect"},
        {CURLE_COULDNT_CONNECT, false, FAILURE_connect, "connect"},
        {CURLE_COULDNT_RESOLVE_PROXY, false, FAILURE_connect, "connect"},
        {CURLE_SSL_CONNECT_ERROR, false, FAILURE_tls, "tls"},
        {CURLE_PEER_FAILED_VERIFICATION, false, FAILURE_tls, "tls"},
        {CURLE_SSL_CERTPROBLEM, false, FAILURE_tls, "tls"},
        {CURLE_SSL_CIPHER, false, FAILURE_tls, "tls"},
        {CURLE_SSL_CACERT_BADFILE, false, FAILURE_tls, "tls"},
        {CURLE_SSL_ISSUER_ERROR, false, FAILURE_tls, "tls"},
        {CURLE_SEND_ERROR, false, FAILURE_other, "other"},
        {CURLE_RECV_ERROR, false, FAILURE_other, "other"},
        {CURLE_GOT_NOTHING, false, FAILURE_other, "other"},
        {CURLE_ABORTED_BY_CALLBACK, false, FAILURE_other, "other"},
        /* A refusal by the guard is a refusal, whatever libcurl made of the aborted socket. */
        {CURLE_COULDNT_CONNECT, true, FAILURE_refused, "refused"},
        {CURLE_ABORTED_BY_CALLBACK, true, FAILURE_refused, "refused"},
        {CURLE_OPERATION_TIMEDOUT, true, FAILURE_refused, "refused"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum failure_class fc = retry_classify(cases[i].rc, cases[i].refused);
        assert_int_equal(fc, cases[i].want);
        assert_string_equal(failure_class_name(fc), cases[i].name);
    }
    assert_string_equal(failure_class_name(FAILURE_http), "http");
    assert_string_equal(failure_class_name(FAILURE_COUNT_), "other");
    assert_string_equal(failure_class_name((enum failure_class) - 1), "other");
}

static void test_retry_after_header(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        long want;
    } cases[] = {
        {"Retry-After: 120\r\n", 120},
        {"retry-after:5\r\n", 5},
        {"RETRY-AFTER: 0\r\n", 0},
        {"Retry-After: 86400\r\n", RETRY_AFTER_MAX_S},
        {"Retry-After: 86401\r\n", RETRY_AFTER_MAX_S}, /* capped */
        {"Retry-After: 99999999999\r\n", RETRY_AFTER_MAX_S},
        {"Retry-After: -3\r\n", -1},
        {"Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n", -1}, /* a date is not read */
        {"Retry-After: \r\n", -1},
        {"Retry-After:", -1},
        {"Retry-Afte: 5\r\n", -1},
        {"Content-Type: text/plain\r\n", -1},
        {"HTTP/1.1 503 Service Unavailable\r\n", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long got = retry_after_parse(cases[i].line, strlen(cases[i].line));
        if (got != cases[i].want)
            fail_msg("'%s': %ld, want %ld", cases[i].line, got, cases[i].want);
    }
}

static struct app_config schedule(const long *steps, int n)
{
    struct app_config c;
    app_config_defaults(&c);
    for (int i = 0; i < n; i++)
        c.retry_s[i] = steps[i];
    c.nretry = n;
    return c;
}

static void test_schedule_and_jitter(void **state)
{
    (void)state;
    static const long steps[] = {1, 5, 10, 30, 300, 3600};
    struct app_config c = schedule(steps, 6);
    /* Steps under 10 s go exactly. */
    for (unsigned r = 0; r < 100; r++) {
        assert_int_equal(retry_delay_s(&c, 1, 0, r), 1);
        assert_int_equal(retry_delay_s(&c, 2, 0, r), 5);
    }
    /* Longer steps: never shorter, at most 10% longer, and the whole range is reached. */
    for (int done = 3; done <= 6; done++) {
        long base = steps[done - 1];
        long lo = -1, hi = -1;
        for (unsigned r = 0; r < 5000; r++) {
            long d = retry_delay_s(&c, done, 0, r);
            assert_true(d >= base);
            assert_true(d <= base + base / 10);
            lo = lo < 0 || d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_int_equal(lo, base);
        assert_int_equal(hi, base + base / 10);
    }
    assert_int_equal(retry_delay_s(&c, 4, 0, 0), 30);
    assert_int_equal(retry_delay_s(&c, 4, 0, 3), 33);
    assert_int_equal(retry_delay_s(&c, 4, 0, 4), 30);
    assert_int_equal(retry_delay_s(&c, 4, 0, 0xFFFFFFFFu), 30 + 0xFFFFFFFFu % 4);
}

static void test_retry_after_longer_wins(void **state)
{
    (void)state;
    static const long steps[] = {1, 300};
    struct app_config c = schedule(steps, 2);
    assert_int_equal(retry_delay_s(&c, 1, 60, 0), 60);  /* longer than the step: it wins */
    assert_int_equal(retry_delay_s(&c, 1, 1, 0), 1);    /* equal */
    assert_int_equal(retry_delay_s(&c, 2, 10, 0), 300); /* shorter: the step wins */
    assert_int_equal(retry_delay_s(&c, 2, 10, 7), 307);
    assert_int_equal(retry_delay_s(&c, 2, 320, 10), 320); /* beats the jittered step too */
    assert_int_equal(retry_delay_s(&c, 2, 320, 30), 330); /* unless the jitter is longer */
    assert_int_equal(retry_delay_s(&c, 2, 0, 30), 330);
    /* The longest Retry-After the header can bring still beats any step. */
    assert_int_equal(retry_delay_s(&c, 1, retry_after_parse("Retry-After: 999999", 19), 0),
                     RETRY_AFTER_MAX_S);
}

static void test_schedule_spent(void **state)
{
    (void)state;
    static const long steps[] = {1, 2, 3};
    struct app_config c = schedule(steps, 3);
    assert_int_equal(retry_delay_s(&c, 3, 0, 0), 3);
    assert_int_equal(retry_delay_s(&c, 4, 0, 0), -1);
    assert_int_equal(retry_delay_s(&c, 4, 60, 0), -1); /* a Retry-After does not extend it */
    assert_int_equal(retry_delay_s(&c, 100, 0, 0), -1);
    struct app_config none = schedule(steps, 0);
    assert_int_equal(retry_delay_s(&none, 1, 0, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification_table), cmocka_unit_test(test_retry_after_header),
        cmocka_unit_test(test_schedule_and_jitter),  cmocka_unit_test(test_retry_after_longer_wins),
        cmocka_unit_test(test_schedule_spent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
