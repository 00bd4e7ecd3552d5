/* Routing: selectors by event and CallType (numbers or names), first match wins, and a safe
 * default for everything else, unknown CallTypes included. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "receive/receiver.h"

static void test_parse_and_pick(void **state)
{
    (void)state;
    static struct receive_config c;
    config_init(&receive_config_table, &c);
    assert_int_equal(config_set(&receive_config_table, &c, "exec", "./default.sh", NULL), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &c, "route",
                                "end-call/MissedCall,5=exec:./missed.sh", NULL),
                     CH_OK);
    assert_int_equal(
        config_set(&receive_config_table, &c, "route", "*/OutboundCall=jsonl:out.jsonl", NULL),
        CH_OK);
    assert_int_equal(
        config_set(&receive_config_table, &c, "route", "begin-call=jsonl:begin.jsonl", NULL),
        CH_OK);

    const struct handler *h = route_pick(&c, "end-call", CH_CALL_TYPE_KNOWN, 2);
    assert_string_equal(h->target, "./missed.sh");
    assert_int_equal(h->kind, HANDLER_EXEC);
    assert_string_equal(route_pick(&c, "end-call", CH_CALL_TYPE_KNOWN, 5)->target, "./missed.sh");
    /* MissedCall on a begin-call: the begin-call route. */
    assert_string_equal(route_pick(&c, "begin-call", CH_CALL_TYPE_KNOWN, 2)->target, "begin.jsonl");
    assert_string_equal(route_pick(&c, "end-call", CH_CALL_TYPE_KNOWN, 8)->target, "out.jsonl");
    /* First match wins: an outbound begin-call takes the OutboundCall route. */
    assert_string_equal(route_pick(&c, "begin-call", CH_CALL_TYPE_KNOWN, 8)->target, "out.jsonl");
    /* Unknown and absent CallTypes take the default. */
    assert_string_equal(route_pick(&c, "end-call", CH_CALL_TYPE_UNKNOWN, 42)->target,
                        "./default.sh");
    assert_string_equal(route_pick(&c, "end-call", CH_CALL_TYPE_ABSENT, 0)->target, "./default.sh");
}

static void test_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "end-call",                 /* no handler */
        "end-call=run:./x",         /* unknown handler kind */
        "start-call=exec:./x",      /* unknown event */
        "end-call/Missed=exec:./x", /* unknown CallType name */
        "end-call/=exec:./x",       /* no CallType after '/' */
        "end-call=exec:",           /* empty command */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct route r;
        struct ch_error err = {0};
        if (route_parse(&r, bad[i], &err) != CH_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_non_null(strstr(err.message, "route"));
    }
    static struct receive_config c;
    config_init(&receive_config_table, &c);
    struct ch_error err = {0};
    /* One default handler: a later setting (a flag after the environment) replaces it. */
    assert_int_equal(config_set(&receive_config_table, &c, "exec", "./a", NULL), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &c, "jsonl", "b", &err), CH_OK);
    assert_int_equal(c.fallback.kind, HANDLER_JSONL);
    assert_string_equal(c.fallback.target, "b");
    assert_int_equal(config_set(&receive_config_table, &c, "secret", "whsec_nope!", &err),
                     CH_EINVAL);
    assert_int_equal(config_set(&receive_config_table, &c, "workers", "0", &err), CH_EINVAL);
    assert_int_equal(config_set(&receive_config_table, &c, "require-header", "X-Key", &err),
                     CH_EINVAL);
    assert_int_equal(config_set(&receive_config_table, &c, "colour", "blue", &err), CH_EINVAL);
    /* No key, and no TLS without --insecure-http: refused before starting. */
    assert_int_equal(receive_config_check(&c, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "--secret"));
    assert_int_equal(config_set(&receive_config_table, &c, "secret",
                                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", NULL),
                     CH_OK);
    assert_int_equal(receive_config_check(&c, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "--insecure-http"));
    assert_int_equal(config_set(&receive_config_table, &c, "insecure-http", "true", NULL), CH_OK);
    assert_int_equal(receive_config_check(&c, &err), CH_OK);
}

static void test_mask(void **state)
{
    (void)state;
    char out[64];
    assert_string_equal(mask_text("291e0700-7a4c-4e3b-b1f2-9d6a3c5e8f10", out, sizeof out),
                        "291e…8f10");
    assert_string_equal(mask_text("+1555", out, sizeof out), "*****");
}

/* One header (or none) for route_event_of() and route_headers_ok(). */
struct one_header {
    const char *name, *value;
};

static const char *one_lookup(void *ctx, const char *name)
{
    const struct one_header *h = ctx;
    return h->name && strcasecmp(h->name, name) == 0 ? h->value : NULL;
}

static void test_event_and_required_header(void **state)
{
    (void)state;
    static const struct {
        const char *header, *path, *want;
    } cases[] = {
        {NULL, "/hooks/begin-call", "begin-call"},
        {NULL, "/hooks/end-call///", "end-call"},
        {NULL, "/end-call/x", NULL},
        {NULL, "/", NULL},
        {"end-call", "/hooks", "end-call"},
        {"begin-call", "/hooks/end-call", "begin-call"},
        {"other", "/hooks/end-call", "end-call"},
        {"other", "/hooks", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct one_header h = {cases[i].header ? "X-Call-Event" : NULL, cases[i].header};
        const char *got = route_event_of(one_lookup, &h, cases[i].path);
        if (cases[i].want == NULL)
            assert_null(got);
        else
            assert_string_equal(got, cases[i].want);
    }

    static struct receive_config c;
    config_init(&receive_config_table, &c);
    char which[128] = "";
    struct one_header none = {NULL, NULL};
    assert_true(route_headers_ok(&c, one_lookup, &none, which, sizeof which));
    assert_int_equal(
        config_set(&receive_config_table, &c, "require-header", "X-Token=s3cr3t", NULL), CH_OK);
    static const struct {
        struct one_header h;
        bool ok;
    } tokens[] = {
        {{"X-Token", "s3cr3t"}, true}, {{"x-token", "s3cr3t"}, true},
        {{"X-Token", "s3cr3"}, false}, {{"X-Token", "s3cr3t!"}, false},
        {{"X-Token", ""}, false},      {{NULL, NULL}, false},
    };
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        which[0] = '\0';
        struct one_header h = tokens[i].h;
        assert_int_equal(route_headers_ok(&c, one_lookup, &h, which, sizeof which), tokens[i].ok);
        if (!tokens[i].ok)
            assert_string_equal(which, "X-Token");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_pick),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_event_and_required_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
