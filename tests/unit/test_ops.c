/*
 * The operational webhooks' pure parts, without a store or a connection: which event a stored
 * key stands for, and what ops_new() refuses at start (URLs the SSRF guard refuses as
 * literals, other schemes, secret files that are not private or hold no secret).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "deliver/ops.h"

static void test_key_types(void **state)
{
    (void)state;
    static const struct {
        const char *key, *type, *app;
    } cases[] = {
        {"disabled:crm:1700000000:1", OPS_TYPE_DISABLED, "crm"},
        {"enabled:crm:1700000000:1", OPS_TYPE_ENABLED, "crm"},
        {"backlog:a.b-c_d:5:12", OPS_TYPE_BACKLOG_OLD, "a.b-c_d"},
        {"recovered:x:5:12", OPS_TYPE_RECOVERED, "x"},
        {"dead:crm:msg_abc:3", OPS_TYPE_DEAD, "crm"},
        {"call-123", NULL, ""},
        {"disabled", NULL, ""},
        {"", NULL, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char app[129] = "unset";
        const char *type = ops_key_type(cases[i].key, app, sizeof app);
        if (cases[i].type == NULL)
            assert_null(type);
        else
            assert_string_equal(type, cases[i].type);
        assert_string_equal(app, cases[i].app);
    }
    assert_true(ops_app_is(OPS_APP_ID));
    assert_false(ops_app_is("callhook-ops2"));
    assert_false(ops_app_is(NULL));
}

static char dir[] = "/tmp/callhook-test-ops-XXXXXX";

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

/* ops_new's verdict on a URL (and secret file): CH_OK, or the error and its message. */
static ch_code try_new(const char *url, const char *secret_file, const struct guard_cidr *allowed,
                       int nallowed, char *message, size_t cap)
{
    struct ops_config c = {.url = url,
                           .secret_file = secret_file,
                           .alert_age_s = 60,
                           .check_interval_s = 1,
                           .lease_s = 30,
                           .allowed = allowed,
                           .nallowed = nallowed};
    struct ops *o = NULL;
    struct ch_error err = {0};
    ch_code rc = ops_new(&c, &o, &err);
    snprintf(message, cap, "%s", rc == CH_OK ? "" : err.message);
    ops_free(o);
    return rc;
}

static void test_refused_at_start(void **state)
{
    (void)state;
    struct guard_cidr lo;
    assert_true(guard_cidr_parse("127.0.0.1/32", &lo));
    static const struct {
        const char *url;
        bool allow_loopback;
        const char *needle; /* NULL: accepted */
    } cases[] = {
        {"http://10.0.0.1/ops", true, "internal address (10.0.0.1)"},
        {"https://169.254.169.254/latest", true, "internal address (169.254.169.254)"},
        {"https://[::1]:8443/ops", true, "internal address (::1)"},
        {"https://2130706433/ops", false, "internal address (127.0.0.1)"},
        {"http://127.0.0.1:9/ops", false, "--allow-cidr 127.0.0.1/32"},
        {"http://127.0.0.1:9/ops", true, NULL},
        {"https://127.0.0.1/ops", true, NULL},
        {"ftp://127.0.0.1/ops", true, "must start with https://"},
        {"https:///ops", true, "has no host"},
        {"https://user:pw@127.0.0.1/ops", true, "user or password"},
        {"https://127.0.0.1/ops#frag", true, "fragment"},
    };
    char message[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ch_code rc = try_new(cases[i].url, "", &lo, cases[i].allow_loopback ? 1 : 0, message,
                             sizeof message);
        if (cases[i].needle == NULL) {
            if (rc != CH_OK)
                fail_msg("'%s' refused: %s", cases[i].url, message);
            continue;
        }
        if (rc != CH_EINVAL || strstr(message, cases[i].needle) == NULL ||
            strstr(message, "ops-webhook") == NULL)
            fail_msg("'%s': %d '%s', want '%s'", cases[i].url, rc, message, cases[i].needle);
    }
}

static void test_secret_file(void **state)
{
    (void)state;
    struct guard_cidr lo;
    assert_true(guard_cidr_parse("127.0.0.1/32", &lo));
    const char *url = "http://127.0.0.1:9/ops";
    char message[512];
    assert_int_equal(try_new(url,
                             write_file("ok", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", 0600),
                             &lo, 1, message, sizeof message),
                     CH_OK);
    assert_int_equal(try_new(url,
                             write_file("open", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", 0644),
                             &lo, 1, message, sizeof message),
                     CH_EINVAL);
    assert_non_null(strstr(message, "chmod 600"));
    assert_int_equal(
        try_new(url, write_file("junk", "not a secret\n", 0600), &lo, 1, message, sizeof message),
        CH_EINVAL);
    assert_non_null(strstr(message, "holds no signing secret"));
    assert_null(strstr(message, "not a secret")); /* the file's text is not repeated */
    /* A public key cannot sign. */
    assert_int_equal(
        try_new(url, write_file("pub", "whpk_fnMVwf5i0SJF1wo7tRoIryIkYxZC4GaLC6ujlwwHZrg=\n", 0600),
                &lo, 1, message, sizeof message),
        CH_EINVAL);
    assert_non_null(strstr(message, "a public key cannot sign"));
    assert_int_equal(try_new(url, "/nonexistent/ops.secret", &lo, 1, message, sizeof message),
                     CH_EIO);
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_types),
        cmocka_unit_test(test_refused_at_start),
        cmocka_unit_test(test_secret_file),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
