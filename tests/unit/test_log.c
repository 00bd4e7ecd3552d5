/* Logging's personal-data mask: phone numbers and e-mail addresses never reach the log whole. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "util/log.h"

static void test_masks(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"call from +15550100123 ended", "call from +*********23 ended"},
        {"short +1234 stays", "short +1234 stays"},
        {"agent sam.agent@example.com left", "agent *********@*********** left"},
        {"a@b", "*@*"},
        {"no @ here, 2026-11-27T08:00:00Z, msg_123", "no @ here, 2026-11-27T08:00:00Z, msg_123"},
        {"+15550100123,+15550199000", "+*********23,+*********00"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        strcpy(buf, cases[i].in);
        log_mask_personal(buf);
        assert_string_equal(buf, cases[i].out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_masks)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
