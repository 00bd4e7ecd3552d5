/* Stable message ids: same event, same id; any other field, another id; fixed shape. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <callhook/msgid.h>

static void id(const char *app, const char *event, const char *key, char out[CH_MSGID_SIZE])
{
    assert_int_equal(ch_msgid(app, event, key, out, NULL), CH_OK);
}

static void test_stable_and_shaped(void **state)
{
    (void)state;
    char a[CH_MSGID_SIZE], b[CH_MSGID_SIZE];
    id("app-1", "begin-call", "291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10", a);
    id("app-1", "begin-call", "291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10", b);
    assert_string_equal(a, b);
    /* Pinned, so a change of derivation (which would break dedupe across versions) is seen. */
    assert_string_equal(a, "msg_FfNCag812YSOMIBS9XgbzMQCLGW");
    assert_int_equal(strlen(a), CH_MSGID_LEN);
    assert_memory_equal(a, "msg_", 4);
    for (size_t i = 4; i < CH_MSGID_LEN; i++) {
        char c = a[i];
        assert_true((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'));
    }
}

static void test_fields_matter(void **state)
{
    (void)state;
    char base[CH_MSGID_SIZE], other[CH_MSGID_SIZE];
    id("app", "begin-call", "key", base);
    id("app", "end-call", "key", other);
    assert_string_not_equal(base, other);
    id("app2", "begin-call", "key", other);
    assert_string_not_equal(base, other);
    id("app", "begin-call", "key2", other);
    assert_string_not_equal(base, other);
    /* Moving a character from one field to the next changes the id: fields are delimited. */
    id("ap", "pbegin-call", "key", other);
    assert_string_not_equal(base, other);
    id("", "", "", other);
    assert_int_equal(strlen(other), CH_MSGID_LEN);
    /* Small ids keep their leading zeros: the length never varies. */
    assert_int_equal(ch_msgid(NULL, "e", "k", other, NULL), CH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stable_and_shaped),
        cmocka_unit_test(test_fields_matter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
