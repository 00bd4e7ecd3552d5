/* Escaping of sender-controlled text for handlers' environments, terminals and JSON lines. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "receive/escape.h"

static void test_text_escape(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"call-42", "call-42"},
        {"a\x1b[31mred\x07", "a\\x1b[31mred\\x07"},
        {"tab\there\nline\r", "tab\\x09here\\x0aline\\x0d"},
        {"del\x7f", "del\\x7f"},
        {"c1 \xc2\x9b"
         "2J",
         "c1 \\u009b2J"},                             /* U+009B, a CSI to some terminals */
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x9e", /* é, €, an emoji: kept */
         "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\x9e"},
        {"bad \xff\xc3", "bad \\xff\\xc3"},  /* not UTF-8 */
        {"\xed\xa0\x80", "\\xed\\xa0\\x80"}, /* a surrogate */
        {"back\\slash", "back\\slash"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[128];
        size_t n = text_escape(cases[i].in, strlen(cases[i].in), out, sizeof out);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
        assert_int_equal(text_escape(cases[i].in, strlen(cases[i].in), NULL, 0), n);
    }
    /* Cut short, an escape is left out whole. */
    char small[6];
    assert_int_equal(text_escape("ab\x1b"
                                 "cd",
                                 5, small, sizeof small),
                     8);
    assert_string_equal(small, "ab");
}

static void test_json_text_clean(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        const char *line, *terminal; /* for a JSON line, for a terminal */
    } cases[] = {
        {"{\"a\": 1}", 8, "{\"a\": 1}", "{\"a\": 1}"},
        {"{\r\n\t\"a\":1}", 10, "{   \"a\":1}", "{ \n\t\"a\":1}"},
        {"{\"a\":1\0}", 8, "{\"a\":1 }", "{\"a\":1 }"},           /* NUL after a number */
        {"{\"a\":\"x\\\"\x1b\"}", 12, "{\"a\":\"x\\\"\\u001b\"}", /* raw ESC in a string */
         "{\"a\":\"x\\\"\\u001b\"}"},
        {"{\"a\":\"\\u001b[2J\"}", 17, "{\"a\":\"\\u001b[2J\"}", "{\"a\":\"\\u001b[2J\"}"},
        {"{\"a\":\"\x7f\xc2\x9b\"}", 11, "{\"a\":\"\x7f\xc2\x9b\"}", "{\"a\":\"\\u007f\\u009b\"}"},
        {"{\"a\":\"\xff\"}", 9, "{\"a\":\"\\ufffd\"}", "{\"a\":\"\\ufffd\"}"},
        {"{\"\xc3\xa9\":\"\xe2\x82\xac\"}", 12, "{\"\xc3\xa9\":\"\xe2\x82\xac\"}",
         "{\"\xc3\xa9\":\"\xe2\x82\xac\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int term = 0; term < 2; term++) {
            const char *want = term ? cases[i].terminal : cases[i].line;
            size_t n = json_text_clean(cases[i].in, cases[i].len, term, NULL, 0);
            char *out = malloc(n + 1);
            assert_non_null(out);
            assert_int_equal(json_text_clean(cases[i].in, cases[i].len, term, out, n + 1), n);
            out[n] = '\0';
            assert_string_equal(out, want);
            free(out);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_escape),
        cmocka_unit_test(test_json_text_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
