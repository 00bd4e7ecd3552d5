/* Routing: selectors by event and CallType (numbers or names), every matching route taking the
 * event, and safe defaults for everything else, unknown CallTypes included. */
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

    /* Each case: the one sink it goes to. */
    static const struct {
        const char *event;
        enum ch_call_type_kind kind;
        long long type;
        const char *want;
    } cases[] = {
        {"end-call", CH_CALL_TYPE_KNOWN, 2, "exec:./missed.sh"},
        {"end-call", CH_CALL_TYPE_KNOWN, 5, "exec:./missed.sh"},
        /* MissedCall on a begin-call: the begin-call route. */
        {"begin-call", CH_CALL_TYPE_KNOWN, 2, "jsonl:begin.jsonl"},
        {"end-call", CH_CALL_TYPE_KNOWN, 8, "jsonl:out.jsonl"},
        /* Unknown and absent CallTypes take the default. */
        {"end-call", CH_CALL_TYPE_UNKNOWN, 42, "exec:./default.sh"},
        {"end-call", CH_CALL_TYPE_ABSENT, 0, "exec:./default.sh"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *names[RECEIVE_MAX_SINKS];
        size_t n =
            route_sinks(&c, cases[i].event, cases[i].kind, cases[i].type, names, RECEIVE_MAX_SINKS);
        assert_int_equal(n, 1);
        assert_string_equal(names[0], cases[i].want);
    }
    /* Every matching route takes the event: an outbound begin-call takes the OutboundCall
     * route and the begin-call route, in the routes' order, and not the default. */
    const char *names[RECEIVE_MAX_SINKS];
    size_t n = route_sinks(&c, "begin-call", CH_CALL_TYPE_KNOWN, 8, names, RECEIVE_MAX_SINKS);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "jsonl:out.jsonl");
    assert_string_equal(names[1], "jsonl:begin.jsonl");
    assert_int_equal(handler_scheme_of(names[0]), SCHEME_JSONL);
    assert_int_equal(handler_scheme_of("exec"), SCHEME_COUNT);
    /* Every sink, each once: the dispatchers. */
    assert_int_equal(route_all_sinks(&c, names, RECEIVE_MAX_SINKS), 4);
}

/* Fan-out: all the defaults given take what no route takes; a sink named twice takes an event
 * once. */
static void test_fan_out(void **state)
{
    (void)state;
    static struct receive_config c;
    config_init(&receive_config_table, &c);
    assert_int_equal(config_set(&receive_config_table, &c, "jsonl", "all.jsonl", NULL), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &c, "exec", "./h.sh", NULL), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &c, "pipe", "./h.py", NULL), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &c, "route", "end-call=jsonl:e.jsonl", NULL),
                     CH_OK);
    assert_int_equal(
        config_set(&receive_config_table, &c, "route", "*/MissedCall=jsonl:e.jsonl", NULL), CH_OK);
    assert_int_equal(
        config_set(&receive_config_table, &c, "route", "*/MissedCall=forward:http://x/", NULL),
        CH_OK);
    const char *names[RECEIVE_MAX_SINKS];
    size_t n = route_sinks(&c, "begin-call", CH_CALL_TYPE_KNOWN, 1, names, RECEIVE_MAX_SINKS);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "exec:./h.sh");
    assert_string_equal(names[1], "jsonl:all.jsonl");
    assert_string_equal(names[2], "pipe:./h.py");
    n = route_sinks(&c, "end-call", CH_CALL_TYPE_KNOWN, 2, names, RECEIVE_MAX_SINKS);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "jsonl:e.jsonl");
    assert_string_equal(names[1], "forward:http://x/");
    assert_int_equal(route_all_sinks(&c, names, RECEIVE_MAX_SINKS), 5);
    /* The cap holds. */
    assert_int_equal(route_sinks(&c, "begin-call", CH_CALL_TYPE_KNOWN, 1, names, 2), 2);
}

static void test_refusals(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "end-call",                 /* no handler */
        "end-call=run:./x",         /* unknown handler kind */
        "end-call=pipe:",           /* empty command */
        "end-call=forward",         /* no scheme separator */
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
    /* One default handler per scheme: a later setting (a flag after the environment) replaces
     * it; another scheme's is another default. */
    assert_int_equal(config_set(&receive_config_table, &c, "exec", "./a", NULL), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &c, "exec", "./a2", NULL), CH_OK);
    assert_int_equal(config_set(&receive_config_table, &c, "jsonl", "b", &err), CH_OK);
    assert_string_equal(c.defaults[SCHEME_EXEC].text, "exec:./a2");
    assert_string_equal(c.defaults[SCHEME_JSONL].text, "jsonl:b");
    assert_string_equal(c.defaults[SCHEME_PIPE].text, "");
    /* The forward secret is a whsec_ secret, never a public key. */
    assert_int_equal(config_set(&receive_config_table, &c, "forward-secret",
                                "whpk_bm90IGEga2V5IGF0IGFsbCwganVzdCAzMiBieXRlcyE=", &err),
                     CH_EINVAL);
    assert_false(c.has_forward_key);
    assert_int_equal(config_set(&receive_config_table, &c, "forward-secret",
                                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &err),
                     CH_OK);
    assert_true(c.has_forward_key);
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
        cmocka_unit_test(test_fan_out),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_mask),
        cmocka_unit_test(test_event_and_required_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
