/* Base64: round trips, RFC 4648 vectors, and everything the strict decoder must refuse. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "util/base64.h"

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        size_t n = b64_encode(plain[i], strlen(plain[i]), out, sizeof out);
        assert_int_equal(n, strlen(coded[i]));
        assert_string_equal(out, coded[i]);
        unsigned char back[16];
        size_t m = 99;
        assert_true(b64_decode(coded[i], strlen(coded[i]), back, sizeof back, &m));
        assert_int_equal(m, strlen(plain[i]));
        assert_memory_equal(back, plain[i], m);
    }
}

static void test_unpadded_accepted(void **state)
{
    (void)state;
    unsigned char out[8];
    size_t n;
    assert_true(b64_decode("Zg", 2, out, sizeof out, &n));
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 'f');
    assert_true(b64_decode("Zm9vYmE", 7, out, sizeof out, &n));
    assert_int_equal(n, 5);
    assert_memory_equal(out, "fooba", 5);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Z",      /* a length no encoding has */
        "Zg=",    /* padding that does not make four */
        "Zg===",  /* three padding characters */
        "Z===",   /* three padding characters */
        "Zh==",   /* non-zero trailing bits */
        "Zm9v\n", /* white space */
        "Zm-v",   /* the URL-safe alphabet */
        "Zm_v",   /* the URL-safe alphabet */
        "Zm=v",   /* padding in the middle */
        "=Zm9",   /* padding first */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char out[8];
        size_t n;
        assert_false(b64_decode(bad[i], strlen(bad[i]), out, sizeof out, &n));
    }
}

static void test_caps(void **state)
{
    (void)state;
    char small[4];
    assert_int_equal(b64_encode("foo", 3, small, sizeof small), 0); /* no room for the NUL */
    unsigned char out[2];
    size_t n;
    assert_false(b64_decode("Zm9v", 4, out, sizeof out, &n));
}

static void test_all_bytes_round_trip(void **state)
{
    (void)state;
    unsigned char in[256], back[256];
    for (int i = 0; i < 256; i++)
        in[i] = (unsigned char)i;
    for (size_t len = 0; len <= sizeof in; len += 17) {
        char text[B64_ENCODED_LEN(256) + 1];
        size_t n = b64_encode(in, len, text, sizeof text);
        assert_int_equal(n, B64_ENCODED_LEN(len));
        size_t m;
        assert_true(b64_decode(text, n, back, sizeof back, &m));
        assert_int_equal(m, len);
        assert_memory_equal(back, in, len);
    }
}

static void test_hex(void **state)
{
    (void)state;
    const unsigned char in[] = {0x00, 0x0f, 0xa5, 0xff, 0x10};
    char out[2 * sizeof in + 1];
    memset(out, 'x', sizeof out);
    hex_encode(in, sizeof in, out);
    assert_string_equal(out, "000fa5ff10");
    hex_encode(in, 0, out);
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_unpadded_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_all_bytes_round_trip),
        cmocka_unit_test(test_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
