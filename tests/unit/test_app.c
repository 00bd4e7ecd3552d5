/* Voice App settings: defaults, every field validated with a message naming it, round trip. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "deliver/app.h"

static ch_code parse(struct app_config *c, const char *json, struct ch_error *err)
{
    return app_config_parse(c, json, strlen(json), err);
}

static void test_defaults_and_round_trip(void **state)
{
    (void)state;
    struct app_config c, back;
    assert_int_equal(parse(&c,
                           "{\"BeginCallEventProcessingUrl\":\"https://crm.example.com/b\","
                           "\"EndCallEventProcessingUrl\":null,\"headers\":{\"X-Api-Key\":\"s\"},"
                           "\"retryScheduleSeconds\":[1,2,3],\"ordering\":\"none\"}",
                           NULL),
                     CH_OK);
    assert_string_equal(c.begin_url, "https://crm.example.com/b");
    assert_null(app_config_url(&c, "end-call"));
    assert_string_equal(app_config_url(&c, "begin-call"), "https://crm.example.com/b");
    assert_int_equal(c.nretry, 3);
    assert_int_equal(c.retry_s[2], 3);
    assert_false(c.ordering_per_call);
    assert_int_equal(c.timeout_ms, 15000);
    assert_int_equal(c.max_in_flight, 64);
    assert_true(c.enabled);
    assert_false(c.allow_private_network);
    char *json = app_config_to_json(&c, "app-1", "{\"createdAt\":5}");
    assert_non_null(json);
    assert_non_null(strstr(json, "\"id\":\"app-1\""));
    assert_non_null(strstr(json, "\"createdAt\":5"));
    /* What GET returns can be PUT back. */
    assert_int_equal(parse(&back, json, NULL), CH_OK);
    assert_memory_equal(&back, &c, sizeof c);
    free(json);

    /* A short total timeout pulls the connect default down with it. */
    assert_int_equal(parse(&c, "{\"timeoutMs\":3000}", NULL), CH_OK);
    assert_int_equal(c.connect_timeout_ms, 3000);
    assert_int_equal(parse(&c, "{\"updatedAt\":5,\"createdAt\":4,\"id\":\"x\"}", NULL), CH_OK);

    assert_int_equal(parse(&c, "{}", NULL), CH_OK);
    assert_int_equal(c.nretry, 7);
    assert_int_equal(c.retry_s[6], 36000);
    assert_true(c.ordering_per_call);
}

static void test_refusals_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *json, *field;
    } cases[] = {
        {"[]", "object"},
        {"{", "invalid JSON"},
        {"{\"BeginCallEventProcessingUrl\":\"http://x.example.com\"}",
         "BeginCallEventProcessingUrl"},
        /* The way out named as the API key and as the CLI flag (issue 15, point 8). */
        {"{\"BeginCallEventProcessingUrl\":\"http://x.example.com\"}",
         "allowInsecureHttp, or --allow-http"},
        {"{\"EndCallEventProcessingUrl\":\"ftp://x.example.com\"}", "EndCallEventProcessingUrl"},
        {"{\"EndCallEventProcessingUrl\":\"https://u:p@x.example.com/\"}",
         "EndCallEventProcessingUrl"},
        {"{\"EndCallEventProcessingUrl\":\"https:///path\"}", "EndCallEventProcessingUrl"},
        {"{\"EndCallEventProcessingUrl\":\"https://x.example.com/a b\"}",
         "EndCallEventProcessingUrl"},
        {"{\"EndCallEventProcessingUrl\":5}", "EndCallEventProcessingUrl"},
        {"{\"headers\":{\"X-Key\":5}}", "headers.X-Key"},
        {"{\"headers\":{\"Bad Name\":\"v\"}}", "headers"},
        {"{\"headers\":{\"webhook-signature\":\"v\"}}", "headers"},
        {"{\"headers\":{\"X-Key\":\"a\\r\\nInjected: 1\"}}", "headers.X-Key"},
        {"{\"timeoutMs\":0}", "timeoutMs"},
        {"{\"connectTimeoutMs\":\"5\"}", "connectTimeoutMs"},
        {"{\"connectTimeoutMs\":20000,\"timeoutMs\":1000}", "connectTimeoutMs"},
        {"{\"retryScheduleSeconds\":[1,0]}", "retryScheduleSeconds"},
        {"{\"retryScheduleSeconds\":5}", "retryScheduleSeconds"},
        {"{\"maxInFlight\":0}", "maxInFlight"},
        {"{\"ordering\":\"strict\"}", "ordering"},
        {"{\"enabled\":\"yes\"}", "enabled"},
        {"{\"allowPrivateNetwork\":1}", "allowPrivateNetwork"},
        {"{\"colour\":\"blue\"}", "colour"},
        {"{\"timeoutMs\":1000,\"timeoutMs\":2000}", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct app_config c;
        struct ch_error err = {0};
        if (parse(&c, cases[i].json, &err) != CH_EINVAL)
            fail_msg("accepted: %s", cases[i].json);
        if (strstr(err.message, cases[i].field) == NULL)
            fail_msg("'%s': message '%s' does not name '%s'", cases[i].json, err.message,
                     cases[i].field);
    }
}

static void test_http_only_when_allowed(void **state)
{
    (void)state;
    struct app_config c;
    assert_int_equal(parse(&c,
                           "{\"BeginCallEventProcessingUrl\":\"http://127.0.0.1:9/x\","
                           "\"allowInsecureHttp\":true}",
                           NULL),
                     CH_OK);
    assert_true(c.allow_insecure_http);
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(app_id_valid("8f7e6d5c-4b3a-2918-0716-a5b4c3d2e1f0"));
    assert_true(app_id_valid("Support.Hotline_2"));
    assert_false(app_id_valid(""));
    assert_false(app_id_valid("a/b"));
    assert_false(app_id_valid("a b"));
    char long_id[APP_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_false(app_id_valid(long_id));
    long_id[APP_ID_MAX] = '\0';
    assert_true(app_id_valid(long_id));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_round_trip),
        cmocka_unit_test(test_refusals_name_the_field),
        cmocka_unit_test(test_http_only_when_allowed),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
