/* Secrets and keys: the text forms Standard Webhooks uses, generation, and clear refusals. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <callhook/signature.h>

#define SECRET_B64 "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define ED_SECRET                 \
    "whsk_6Xb/dCcHpPea21PS1N9VY/" \
    "NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="

static void test_prefix_and_padding_optional(void **state)
{
    (void)state;
    struct ch_secret a, b, c, d;
    assert_int_equal(ch_secret_parse(&a, "whsec_" SECRET_B64, NULL), CH_OK);
    assert_int_equal(ch_secret_parse(&b, SECRET_B64, NULL), CH_OK);
    assert_int_equal(a.kind, CH_KEY_HMAC);
    assert_int_equal(a.key_len, 24);
    assert_int_equal(b.key_len, 24);
    assert_memory_equal(a.key, b.key, 24);

    /* 32 bytes need padding; without it the same key comes out. */
    assert_int_equal(
        ch_secret_parse(&c, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", NULL), CH_OK);
    assert_int_equal(ch_secret_parse(&d, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", NULL),
                     CH_OK);
    assert_int_equal(c.key_len, 32);
    assert_int_equal(d.key_len, 32);
    assert_memory_equal(c.key, d.key, 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(c.key[i], i);
}

static void test_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "whsec_",
        "whsec_not base64!",
        "whsec_AAAA", /* 3 bytes: too short */
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7"
        "PD0+P0A=",                                              /* 65 bytes: too long */
        "whsk_AAAA",                                             /* wrong size */
        "whpk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gIQ==", /* 34 bytes */
        "whsk_6Xb/dCcHpPea21PS1N9VY/"
        "NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvw==",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ch_secret s;
        struct ch_error err = {0};
        if (ch_secret_parse(&s, bad[i], &err) != CH_ESECRET)
            fail_msg("case %zu accepted", i);
        assert_true(strlen(err.message) > 0);
        /* The message never repeats the secret. */
        if (strlen(bad[i]) > 10)
            assert_null(strstr(err.message, bad[i] + 6));
    }
}

static void test_ed25519_forms(void **state)
{
    (void)state;
    struct ch_secret sk, pub, again;
    assert_int_equal(ch_secret_parse(&sk, ED_SECRET, NULL), CH_OK);
    assert_int_equal(sk.kind, CH_KEY_ED25519_SECRET);
    char text[CH_SECRET_TEXT_MAX];
    assert_int_equal(ch_secret_format(&sk, text, sizeof text, NULL), CH_OK);
    assert_string_equal(text, ED_SECRET);

    assert_int_equal(ch_secret_public(&sk, &pub, NULL), CH_OK);
    assert_int_equal(ch_secret_format(&pub, text, sizeof text, NULL), CH_OK);
    assert_memory_equal(text, "whpk_", 5);
    assert_int_equal(ch_secret_parse(&again, text, NULL), CH_OK);
    assert_int_equal(again.kind, CH_KEY_ED25519_PUBLIC);
    assert_memory_equal(again.public_key, sk.public_key, 32);

    /* The 32-byte seed alone gives the same key: write the seed as if it were an HMAC key and
     * swap the prefix. */
    char seed_only[CH_SECRET_TEXT_MAX];
    struct ch_secret from_seed, seed_key = sk;
    seed_key.kind = CH_KEY_HMAC;
    seed_key.key_len = 32;
    assert_int_equal(ch_secret_format(&seed_key, text, sizeof text, NULL), CH_OK);
    snprintf(seed_only, sizeof seed_only, "whsk_%s", text + 6);
    assert_int_equal(ch_secret_parse(&from_seed, seed_only, NULL), CH_OK);
    assert_memory_equal(from_seed.public_key, sk.public_key, 32);
}

static void test_generate(void **state)
{
    (void)state;
    struct ch_secret a, b, parsed;
    assert_int_equal(ch_secret_generate(&a, CH_KEY_HMAC, 24, NULL), CH_OK);
    assert_int_equal(ch_secret_generate(&b, CH_KEY_HMAC, 64, NULL), CH_OK);
    assert_int_equal(a.key_len, 24);
    assert_int_equal(b.key_len, 64);
    assert_memory_not_equal(a.key, b.key, 24);
    char text[CH_SECRET_TEXT_MAX];
    assert_int_equal(ch_secret_format(&b, text, sizeof text, NULL), CH_OK);
    assert_memory_equal(text, "whsec_", 6);
    assert_int_equal(ch_secret_parse(&parsed, text, NULL), CH_OK);
    assert_memory_equal(parsed.key, b.key, 64);

    assert_int_equal(ch_secret_generate(&a, CH_KEY_HMAC, 23, NULL), CH_EINVAL);
    assert_int_equal(ch_secret_generate(&a, CH_KEY_HMAC, 65, NULL), CH_EINVAL);
    assert_int_equal(ch_secret_generate(&a, CH_KEY_ED25519_PUBLIC, 32, NULL), CH_EINVAL);

    assert_int_equal(ch_secret_generate(&a, CH_KEY_ED25519_SECRET, 0, NULL), CH_OK);
    assert_int_equal(ch_secret_format(&a, text, sizeof text, NULL), CH_OK);
    assert_int_equal(ch_secret_parse(&parsed, text, NULL), CH_OK);
    assert_memory_equal(parsed.key, a.key, 32);
    assert_memory_equal(parsed.public_key, a.public_key, 32);

    assert_int_equal(ch_secret_format(&a, text, 10, NULL), CH_EINVAL);
    ch_secret_wipe(&a);
    assert_int_equal(a.kind, CH_KEY_NONE);
    assert_int_equal(a.key_len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_and_padding_optional),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_ed25519_forms),
        cmocka_unit_test(test_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
