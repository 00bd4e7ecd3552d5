/* store_uri_for_log(): a database password never reaches a log line. */
#include "store/store.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void test_passwords_are_replaced(void **state)
{
    (void)state;
    static const struct {
        const char *uri, *shown;
    } cases[] = {
        {"sqlite:var/callhook.db", "sqlite:var/callhook.db"},
        {"sqlite:/tmp/password=x.db", "sqlite:/tmp/password=x.db"},
        {"postgres://callhook@127.0.0.1/db", "postgres://callhook@127.0.0.1/db"},
        {"postgres://callhook:s3cret@127.0.0.1:5432/db",
         "postgres://callhook:***@127.0.0.1:5432/db"},
        {"postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"},
        /* Typed unencoded, '@' and '/' in a password: the host is still shown whole. */
        {"postgresql://u:p@ss@db.example:5432/db", "postgresql://u:***@db.example:5432/db"},
        {"postgresql://u:a/b@db.example/db", "postgresql://u:***@db.example/db"},
        {"postgresql://db.example:5432/db", "postgresql://db.example:5432/db"},
        {"postgresql://u@db.example/db?application_name=a@b",
         "postgresql://u@db.example/db?application_name=a@b"},
        {"postgresql://u@h/db?password=s3cret&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"},
        {"postgres:host=127.0.0.1 password=s3cret dbname=db",
         "postgres:host=127.0.0.1 password=*** dbname=db"},
        {"postgres:password='it\\'s a s3cret' dbname=db", "postgres:password=*** dbname=db"},
        {"postgres:host=h password=", "postgres:host=h password=***"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256];
        store_uri_for_log(cases[i].uri, out, sizeof out);
        assert_string_equal(out, cases[i].shown);
        assert_null(strstr(out, "s3cret"));
    }
}

static void test_output_is_capped(void **state)
{
    (void)state;
    char out[12];
    store_uri_for_log("postgres://user:s3cret@host/db", out, sizeof out);
    assert_int_equal(strlen(out), sizeof out - 1);
    assert_null(strstr(out, "s3c"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passwords_are_replaced),
        cmocka_unit_test(test_output_is_capped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
