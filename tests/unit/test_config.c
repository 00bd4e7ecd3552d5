/* Settings from a table: the defaults, bounds refused with the message naming the setting,
 * the environment under the flags, lists that add (and keys that flags replace), unknown
 * names, config files, and --help, over serve's and receive's own tables. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve/serve.h"
#include "receive/receiver.h"
#include "util/config.h"

#define SECRET_A "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SECRET_B "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="

static const struct config_table *const tables[] = {&serve_config_table, &receive_config_table};

/* Every default passes its own setting's parser, and every bound fits its field. */
static void test_tables_are_sound(void **state)
{
    (void)state;
    static struct receive_config rc;
    static struct serve_config sc;
    void *cfgs[] = {&sc, &rc};
    for (size_t t = 0; t < 2; t++) {
        assert_true(tables[t]->n <= CONFIG_MAX_SETTINGS);
        struct ch_error err = {0};
        if (config_defaults(tables[t], cfgs[t], &err) != CH_OK)
            fail_msg("%s: %s", tables[t]->command, err.message);
        for (size_t i = 0; i < tables[t]->n; i++) {
            const struct config_setting *s = &tables[t]->settings[i];
            assert_ptr_equal(config_find(tables[t], s->name), s);
            assert_non_null(s->help);
            if (s->type == CONFIG_CUSTOM)
                assert_non_null(s->set);
            if (s->type == CONFIG_INT) {
                assert_true(s->min >= INT_MIN && s->max <= INT_MAX);
                assert_int_equal(s->size, sizeof(int));
            }
            if (s->type == CONFIG_INT || s->type == CONFIG_LLONG || s->type == CONFIG_SIZE) {
                assert_true(s->min <= s->max);
                assert_true(s->def[0] != '\0');
            }
        }
    }
}

static void test_defaults(void **state)
{
    (void)state;
    struct serve_config s;
    config_init(&serve_config_table, &s);
    assert_string_equal(s.listen, "127.0.0.1:8080");
    assert_string_equal(s.db, "sqlite:var/callhook.db");
    assert_int_equal(s.max_body_bytes, 256 * 1024);
    assert_int_equal(s.lease_s, 300);
    assert_int_equal(s.scan_interval_ms, 1000);
    assert_int_equal(s.max_in_flight, 1024);
    assert_int_equal(s.max_queued_mb, 16);
    assert_int_equal(s.shutdown_grace_ms, 10000);
    assert_string_equal(s.data_key_file, "");
    assert_int_equal(s.payload_retention_s, 7 * 86400);
    assert_int_equal(s.attempt_retention_s, 30 * 86400);
    assert_int_equal(s.purge_interval_s, 3600);
    assert_int_equal(s.nallow_cidrs, 0);

    static struct receive_config r;
    config_init(&receive_config_table, &r);
    assert_string_equal(r.listen, "127.0.0.1:8443");
    assert_string_equal(r.store, "var/inbox.db");
    assert_int_equal(r.workers, 4);
    assert_int_equal(r.exec_timeout_s, 30);
    assert_int_equal(r.max_attempts, 5);
    assert_int_equal(r.retry_base_ms, 1000);
    assert_int_equal(r.tolerance_s, CH_DEFAULT_TOLERANCE_S);
    assert_int_equal(r.retention_s, 3 * 86400);
    assert_int_equal(r.max_body_bytes, 256 * 1024);
    assert_false(r.insecure_http);
    assert_int_equal(r.nkeys, 0);
    for (int i = 0; i < SCHEME_COUNT; i++)
        assert_string_equal(r.defaults[i].text, "");
    assert_int_equal(r.pipe_window, 256);
    assert_int_equal(r.forward_timeout_ms, 10000);
    assert_int_equal(r.forward_max_in_flight, 32);
    assert_false(r.has_forward_key);
}

static void test_bounds(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value, *message; /* message NULL: accepted */
    } serve_cases[] = {
        {"lease-s", "4", "lease-s: 5 to 86400, not '4'"},
        {"lease-s", "5", NULL},
        {"lease-s", "86400", NULL},
        {"lease-s", "86401", "lease-s: 5 to 86400, not '86401'"},
        {"lease-s", "60s", "lease-s: 5 to 86400, not '60s'"},
        {"lease-s", "", "lease-s: 5 to 86400, not ''"},
        {"max-body-bytes", "1023", "max-body-bytes: 1024 to 16777216, not '1023'"},
        {"max-body-bytes", "16777216", NULL},
        {"shutdown-grace-ms", "0", NULL},
        {"shutdown-grace-ms", "-1", "shutdown-grace-ms: 0 to 600000, not '-1'"},
        {"payload-retention-s", "315360001",
         "payload-retention-s: 60 to 315360000, not '315360001'"},
        {"attempt-retention-s", "99999999999999999999",
         "attempt-retention-s: 60 to 315360000, not '99999999999999999999'"},
        {"allow-cidr", "10.0.0.0/99",
         "allow-cidr: '10.0.0.0/99' is not ADDRESS/PREFIX (at most "
         "16 ranges)"},
    };
    struct serve_config s;
    config_init(&serve_config_table, &s);
    for (size_t i = 0; i < sizeof serve_cases / sizeof serve_cases[0]; i++) {
        struct ch_error err = {0};
        ch_code rc =
            config_set(&serve_config_table, &s, serve_cases[i].name, serve_cases[i].value, &err);
        if (serve_cases[i].message == NULL) {
            assert_int_equal(rc, CH_OK);
        } else {
            assert_int_equal(rc, CH_EINVAL);
            assert_string_equal(err.message, serve_cases[i].message);
        }
    }
    assert_int_equal(s.lease_s, 86400); /* a refused value leaves the last good one */
    assert_int_equal(s.max_body_bytes, 16777216);
    assert_int_equal(s.shutdown_grace_ms, 0);

    char lng[300];
    memset(lng, 'a', sizeof lng - 1);
    lng[sizeof lng - 1] = '\0';
    struct ch_error err = {0};
    assert_int_equal(config_set(&serve_config_table, &s, "listen", lng, &err), CH_EINVAL);
    assert_string_equal(err.message, "listen: too long");
    assert_string_equal(s.listen, "127.0.0.1:8080");
    lng[sizeof s.listen - 1] = '\0'; /* the longest that fits */
    assert_int_equal(config_set(&serve_config_table, &s, "listen", lng, &err), CH_OK);
    assert_string_equal(s.listen, lng);

    static struct receive_config r;
    config_init(&receive_config_table, &r);
    assert_int_equal(config_set(&receive_config_table, &r, "workers", "0", &err), CH_EINVAL);
    assert_string_equal(err.message, "workers: 1 to 256, not '0'");
    assert_int_equal(config_set(&receive_config_table, &r, "tolerance-s", "31536001", &err),
                     CH_EINVAL);
    assert_string_equal(err.message, "tolerance-s: 1 to 31536000, not '31536001'");
    assert_int_equal(config_set(&receive_config_table, &r, "retention-s", "315360000", &err),
                     CH_OK);
    assert_int_equal(r.retention_s, 315360000LL);
    assert_int_equal(config_set(&receive_config_table, &r, "tls-cert", "", &err), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &r, "exec", "", &err), CH_EINVAL);
    assert_string_equal(err.message, "exec: empty or too long");
    assert_int_equal(config_set(&receive_config_table, &r, "handler-env", "CALLHOOK_X", &err),
                     CH_EINVAL);
    assert_non_null(strstr(err.message, "handler-env: CALLHOOK_X is a setting of callhook"));
}

static void test_unknown_setting(void **state)
{
    (void)state;
    struct serve_config s;
    config_init(&serve_config_table, &s);
    struct ch_error err = {0};
    assert_int_equal(config_set(&serve_config_table, &s, "colour", "blue", &err), CH_EINVAL);
    assert_string_equal(err.message, "unknown setting 'colour' (see callhook serve --help)");
    static struct receive_config r;
    config_init(&receive_config_table, &r);
    assert_int_equal(config_set(&receive_config_table, &r, "config", "x", &err), CH_EINVAL);
    assert_string_equal(err.message, "unknown setting 'config' (see callhook receive --help)");
    assert_null(config_find(&serve_config_table, "lease"));
}

static void test_bools(void **state)
{
    (void)state;
    static struct receive_config r;
    config_init(&receive_config_table, &r);
    static const struct {
        const char *value;
        bool want;
    } cases[] = {{"true", true},   {"1", true},  {"yes", true}, {"on", true},   {"YES", true},
                 {"false", false}, {"0", false}, {"no", false}, {"off", false}, {"Off", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r.insecure_http = !cases[i].want;
        assert_int_equal(
            config_set(&receive_config_table, &r, "insecure-http", cases[i].value, NULL), CH_OK);
        assert_int_equal(r.insecure_http, cases[i].want);
    }
    /* Anything else is refused and changes nothing (it was read as false). */
    static const char *const bad[] = {"", "y", "2", "enabled", "truee"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct ch_error err = {0};
        r.insecure_http = true;
        assert_int_equal(config_set(&receive_config_table, &r, "insecure-http", bad[i], &err),
                         CH_EINVAL);
        assert_true(r.insecure_http);
        assert_non_null(strstr(err.message, "insecure-http: true, false, yes, no, on, off"));
    }
}

/* The environment over the file, the flags over the environment; an empty variable is unset. */
static void test_env_and_flag_precedence(void **state)
{
    (void)state;
    char path[] = "/tmp/callhook-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("# serve\n  lease-s = 30  \n\nmax-in-flight=7\nallow-cidr = 10.1.0.0/16\n", f);
    fclose(f);

    struct serve_config s;
    config_init(&serve_config_table, &s);
    struct ch_error err = {0};
    assert_int_equal(config_load_file(&serve_config_table, &s, path, &err), CH_OK);
    assert_int_equal(s.lease_s, 30);
    assert_int_equal(s.max_in_flight, 7);

    setenv("CALLHOOK_LEASE_S", "60", 1);
    setenv("CALLHOOK_MAX_IN_FLIGHT", "", 1);
    setenv("CALLHOOK_ALLOW_CIDR", "10.2.0.0/16", 1);
    assert_int_equal(config_load_env(&serve_config_table, &s, &err), CH_OK);
    assert_int_equal(s.lease_s, 60);
    assert_int_equal(s.max_in_flight, 7);

    struct config_flags flags = {0};
    assert_int_equal(config_set_flag(&serve_config_table, &flags, &s, "lease-s", "90", &err),
                     CH_OK);
    assert_int_equal(
        config_set_flag(&serve_config_table, &flags, &s, "allow-cidr", "10.3.0.0/16", &err), CH_OK);
    assert_int_equal(s.lease_s, 90);
    /* Ranges add up over every source. */
    assert_int_equal(s.nallow_cidrs, 3);
    assert_string_equal(s.allow_cidrs[0], "10.1.0.0/16");
    assert_string_equal(s.allow_cidrs[2], "10.3.0.0/16");

    /* A bad variable is named in the error, with the setting's own message. */
    setenv("CALLHOOK_LEASE_S", "1", 1);
    assert_int_equal(config_load_env(&serve_config_table, &s, &err), CH_EINVAL);
    assert_string_equal(err.message, "CALLHOOK_LEASE_S: lease-s: 5 to 86400, not '1'");
    unsetenv("CALLHOOK_LEASE_S");
    unsetenv("CALLHOOK_MAX_IN_FLIGHT");
    unsetenv("CALLHOOK_ALLOW_CIDR");

    /* A bad line is named by file and line. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("lease-s = 30\ncolour = blue\n", f);
    fclose(f);
    assert_int_equal(config_load_file(&serve_config_table, &s, path, &err), CH_EINVAL);
    char want[200];
    snprintf(want, sizeof want, "%s:2: unknown setting 'colour' (see callhook serve --help)", path);
    assert_string_equal(err.message, want);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("lease-s 30\n", f);
    fclose(f);
    assert_int_equal(config_load_file(&serve_config_table, &s, path, &err), CH_EINVAL);
    snprintf(want, sizeof want, "%s:1: expected 'name = value'", path);
    assert_string_equal(err.message, want);
    unlink(path);
    assert_int_equal(config_load_file(&serve_config_table, &s, path, &err), CH_EIO);
    assert_non_null(strstr(err.message, "cannot open config"));
}

/* receive's keys: the file and the environment add up; keys given as flags replace them all,
 * and the second flag key adds to the first. */
static void test_flag_keys_replace(void **state)
{
    (void)state;
    static struct receive_config r;
    config_init(&receive_config_table, &r);
    struct ch_error err = {0};
    assert_int_equal(config_set(&receive_config_table, &r, "secret", SECRET_A, &err), CH_OK);
    setenv("CALLHOOK_RECEIVE_SECRET", SECRET_B, 1);
    assert_int_equal(config_load_env(&receive_config_table, &r, &err), CH_OK);
    unsetenv("CALLHOOK_RECEIVE_SECRET");
    assert_int_equal(r.nkeys, 2);

    struct config_flags flags = {0};
    assert_int_equal(config_set_flag(&receive_config_table, &flags, &r, "workers", "8", &err),
                     CH_OK);
    assert_int_equal(r.nkeys, 2);
    assert_int_equal(config_set_flag(&receive_config_table, &flags, &r, "secret", SECRET_B, &err),
                     CH_OK);
    assert_int_equal(r.nkeys, 1);
    assert_int_equal(config_set_flag(&receive_config_table, &flags, &r, "secret", SECRET_A, &err),
                     CH_OK);
    assert_int_equal(r.nkeys, 2);
    /* Routes are a list without that rule: flags add to the file's. */
    assert_int_equal(
        config_set(&receive_config_table, &r, "route", "begin-call=jsonl:a.jsonl", &err), CH_OK);
    assert_int_equal(
        config_set_flag(&receive_config_table, &flags, &r, "route", "end-call=jsonl:b", &err),
        CH_OK);
    assert_int_equal(r.nroutes, 2);
    for (size_t k = 0; k < r.nkeys; k++)
        ch_secret_wipe(&r.keys[k]);
}

/* The help of one table, in a heap string the caller frees. */
static char *help_text(const struct config_table *t)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print_help(t, f);
    fclose(f);
    return text;
}

static void test_help(void **state)
{
    (void)state;
    /* Every setting with its environment variable (or "-") and default on its line, and its
     * help on the next. */
    for (size_t t = 0; t < 2; t++) {
        char *text = help_text(tables[t]);
        for (size_t i = 0; i < tables[t]->n; i++) {
            const struct config_setting *s = &tables[t]->settings[i];
            char flag[64];
            snprintf(flag, sizeof flag, "  --%s ", s->name);
            const char *at = strstr(text, flag);
            if (at == NULL)
                fail_msg("--help has no %s", flag);
            const char *eol = strchr(at, '\n');
            assert_non_null(eol);
            char key[80];
            snprintf(key, sizeof key, " %s = ", s->name);
            const char *file = strstr(at, key);
            assert_true(file != NULL && file < eol);
            const char *env = strstr(at, s->env[0] ? s->env : " -");
            assert_true(env != NULL && env < eol);
            const char *def = strstr(at, s->def);
            assert_true(def != NULL && def <= eol);
            assert_non_null(strstr(eol, s->help));
        }
        if (t == 0) {
            /* The columns are as wide as the longest name (ops-webhook-secret-file). */
            assert_non_null(strstr(text, "  --lease-s                 lease-s = N                  "
                                         "  CALLHOOK_LEASE_S                 300"));
            assert_non_null(strstr(text, "300 (5 to 86400)\n"));
        } else {
            /* The columns are as wide as the longest name (forward-max-in-flight). */
            assert_non_null(
                strstr(text, "  --route                 route = VALUE             -\n"));
            assert_non_null(strstr(text, " insecure-http = yes|no "));
        }
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_are_sound),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_unknown_setting),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_env_and_flag_precedence),
        cmocka_unit_test(test_flag_keys_replace),
        cmocka_unit_test(test_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
