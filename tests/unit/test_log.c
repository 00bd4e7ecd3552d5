/* The personal-data mask: phone numbers and e-mail addresses never reach the log whole, and the
 * fields of a call record the API shows masked (util/mask.c) are masked by what they hold. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "util/log.h"
#include "util/mask.h"

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

/* A call record's fields: by name, a phone number keeps its last two digits in any format, a
 * name or free text the first character of each word (UTF-8 kept whole), anything else only
 * loses the phone numbers and e-mail addresses inside it. */
static void test_fields(void **state)
{
    (void)state;
    static const struct {
        const char *name, *in, *out;
    } cases[] = {
        {"CallerId", "+15550100123", "+*********23"},
        {"CalledNumber", "555 0100 123", "*** **** *23"},
        {"callerId", "12", "12"},
        {"CallerDisplayName", "Jane Example", "J*** E******"},
        {"DisplayName", "Zo\xc3\xab \xc3\x9cn\xc3\xaf \xe6\x9d\x8e\xe9\x9b\xb7 \xf0\x9f\x99\x82",
         "Z** \xc3\x9c** \xe6\x9d\x8e* \xf0\x9f\x99\x82"},
        {"Email", "sam.agent@example.com", "s********************"},
        {"userPrincipalName", "sam@example.com", "s**************"},
        {"Notes", "angry  about\tthe bill", "a****  a****\tt** b***"},
        {"VoiceAppName", "Support Hotline", "Support Hotline"},
        {"QueueName", "Support (English)", "Support (English)"},
        {"ActiveCallId", "291e0700-7a4c", "291e0700-7a4c"},
        {"Direction", "Inbound", "Inbound"},
        {"Comment", "call +15550100123 or a@b.c", "c*** +*********** o* a****"},
        {"crmContactId", "mail sam@example.com", "mail ***@***********"},
        {NULL, "+15550100123", "+*********23"},
        {"Name", "", ""},
        {"Name", "\xe6\x9d", "\xe6\x9d"}, /* a cut character stays as it is */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        strcpy(buf, cases[i].in);
        mask_personal(buf, cases[i].name);
        assert_string_equal(buf, cases[i].out);
    }
    assert_int_equal(mask_field_of("CALLERID"), MASK_FIELD_PHONE);
    assert_int_equal(mask_field_of("agentEmail"), MASK_FIELD_TEXT);
    assert_int_equal(mask_field_of("tenantName"), MASK_FIELD_ANY);
    assert_int_equal(mask_field_of(NULL), MASK_FIELD_ANY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_masks), cmocka_unit_test(test_fields)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
