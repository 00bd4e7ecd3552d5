/* The SSRF guard's decision on resolved addresses, checked without connecting anywhere. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>

#include "deliver/guard.h"

/* Resolves text numerically only (no DNS), the way inet_aton reads "127.1" and "0x7f000001". */
static bool internal(const char *text)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
    if (getaddrinfo(text, NULL, &hints, &res) != 0)
        fail_msg("'%s' does not parse as an address", text);
    bool r = guard_is_internal(res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return r;
}

static void test_refused_by_default(void **state)
{
    (void)state;
    static const char *const refused[] = {
        "127.0.0.1",        "127.1",
        "0x7f000001",       "::1",
        "::ffff:127.0.0.1", "169.254.169.254",
        "10.0.0.1",         "192.168.1.1",
        "172.16.0.1",       "172.31.255.255",
        "100.64.0.1",       "0.0.0.0",
        "fd00::1",          "64:ff9b::7f00:1",
        "64:ff9b::a00:1",   "fe80::1",
        "ff02::1",          "224.0.0.1",
        "255.255.255.255",  "::",
        "::ffff:10.1.2.3",  "::ffff:169.254.169.254",
        "198.18.0.1",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (!internal(refused[i]))
            fail_msg("'%s' should be refused", refused[i]);
    }
}

static void test_public_allowed(void **state)
{
    (void)state;
    static const char *const allowed[] = {
        "93.184.216.34",  "8.8.8.8",          "172.32.0.1", "100.128.0.1", "2606:4700::1111",
        "::ffff:8.8.8.8", "64:ff9b::808:808", "11.0.0.1",   "192.169.0.1",
    };
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        if (internal(allowed[i]))
            fail_msg("'%s' should be allowed", allowed[i]);
    }
}

static void test_format(void **state)
{
    (void)state;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *res = NULL;
    assert_int_equal(getaddrinfo("::1", NULL, &hints, &res), 0);
    char text[64];
    guard_format(res->ai_addr, text, sizeof text);
    assert_string_equal(text, "::1");
    freeaddrinfo(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_by_default),
        cmocka_unit_test(test_public_allowed),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
