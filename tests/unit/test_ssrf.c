/* The SSRF decisions of delivery, without any connection: URLs whose host is an address
 * literal in any spelling, the address a request is about to go to, and what an app's
 * allowPrivateNetwork and the operator's allowed ranges let through. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "deliver/ssrf.h"

static void test_url_literals(void **state)
{
    (void)state;
    const struct ssrf_rule strict = {false, NULL, 0};
    static const struct {
        const char *url;
        const char *refused;
    } cases[] = {
        {"https://127.0.0.1/hook", "127.0.0.1"},
        {"https://127.1/hook", "127.0.0.1"},
        {"https://0x7f000001/hook", "127.0.0.1"},
        {"https://2130706433./hook", "127.0.0.1"},
        {"https://10.0.0.1:8443/hook", "10.0.0.1"},
        {"https://169.254.169.254/latest/meta-data", "169.254.169.254"},
        {"https://[::1]/hook", "::1"},
        {"https://[::ffff:10.0.0.1]/hook", "::ffff:10.0.0.1"},
        {"https://93.184.215.14/hook", ""},   /* a public address */
        {"https://crm.example.com/hook", ""}, /* a name: judged once resolved */
        {"https://localhost/hook", ""},       /* a name too */
        {"", ""},                             /* no URL for the event */
        {"not a url", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char refused[64] = "unset";
        ssrf_judge_url(&strict, cases[i].url, refused, sizeof refused);
        if (strcmp(refused, cases[i].refused) != 0)
            fail_msg("'%s': refused '%s', want '%s'", cases[i].url, refused, cases[i].refused);
    }
}

/* The host a URL names, as libcurl reads it: what the ops webhook's check resolves. */
static void test_url_host(void **state)
{
    (void)state;
    static const struct {
        const char *url, *host; /* NULL: no host */
    } cases[] = {
        {"https://alerts.example.com/hook", "alerts.example.com"},
        {"https://alerts.example.com./hook", "alerts.example.com"},
        {"http://127.0.0.1:8080/ops?x=1", "127.0.0.1"},
        {"https://[::1]:8443/ops", "::1"},
        {"https://LOCALHOST/ops", "LOCALHOST"},
        {"https:///ops", "ops"}, /* libcurl's reading (the app's URL check refuses it first) */
        {"http://", NULL},
        {"not a url", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char host[64] = "unset";
        bool ok = ssrf_url_host(cases[i].url, host, sizeof host);
        if (cases[i].host == NULL) {
            if (ok)
                fail_msg("'%s': host '%s', want none", cases[i].url, host);
        } else if (!ok || strcmp(host, cases[i].host) != 0) {
            fail_msg("'%s': host '%s' (%d), want '%s'", cases[i].url, host, ok, cases[i].host);
        }
    }
    char small[4];
    assert_false(ssrf_url_host("https://alerts.example.com/", small, sizeof small));
}

static void test_allowed_by_the_app_or_the_operator(void **state)
{
    (void)state;
    struct guard_cidr ten;
    assert_true(guard_cidr_parse("10.20.0.0/16", &ten));
    const struct ssrf_rule private_ok = {true, NULL, 0};
    const struct ssrf_rule operator_ok = {false, &ten, 1};
    char refused[64];
    ssrf_judge_url(&private_ok, "https://127.0.0.1/hook", refused, sizeof refused);
    assert_string_equal(refused, "");
    ssrf_judge_url(&operator_ok, "https://10.20.3.4/hook", refused, sizeof refused);
    assert_string_equal(refused, "");
    ssrf_judge_url(&operator_ok, "https://10.21.3.4/hook", refused, sizeof refused);
    assert_string_equal(refused, "10.21.3.4");
    assert_true(ssrf_judge_ip(&operator_ok, "10.20.0.9", refused, sizeof refused));
    assert_false(ssrf_judge_ip(&operator_ok, "127.0.0.1", refused, sizeof refused));
    assert_string_equal(refused, "127.0.0.1");
    assert_true(ssrf_judge_ip(&private_ok, "::1", refused, sizeof refused));
}

static void test_connected_address(void **state)
{
    (void)state;
    const struct ssrf_rule strict = {false, NULL, 0};
    char refused[64] = "";
    assert_true(ssrf_judge_ip(&strict, "93.184.215.14", refused, sizeof refused));
    assert_true(
        ssrf_judge_ip(&strict, "2606:2800:21f:cb07:6820:80da:af6b:8b2c", refused, sizeof refused));
    assert_false(ssrf_judge_ip(&strict, "::1", refused, sizeof refused));
    assert_string_equal(refused, "::1");
    assert_false(ssrf_judge_ip(&strict, "192.168.1.1", refused, sizeof refused));
    assert_string_equal(refused, "192.168.1.1");
    /* No address, or one that does not parse: refused rather than guessed. */
    assert_false(ssrf_judge_ip(&strict, NULL, refused, sizeof refused));
    assert_string_equal(refused, "an unknown address");
    assert_false(ssrf_judge_ip(&strict, "", refused, sizeof refused));
    assert_string_equal(refused, "an unknown address");
    assert_false(ssrf_judge_ip(&strict, "127.1", refused, sizeof refused));
    assert_string_equal(refused, "an unknown address");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_literals),
        cmocka_unit_test(test_url_host),
        cmocka_unit_test(test_allowed_by_the_app_or_the_operator),
        cmocka_unit_test(test_connected_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
