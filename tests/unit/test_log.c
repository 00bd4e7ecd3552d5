/* The personal-data mask: phone numbers and e-mail addresses never reach the log whole, and the
 * fields of a call record the API shows masked (util/mask.c) are masked by what they hold; and
 * the journal's form of a line (a "<N>" priority, no time) when stderr is the journal's stream
 * that JOURNAL_STREAM names, the plain form otherwise. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "util/mask.h"

static void test_masks(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"call from +15550100123 ended", "call from +*********23 ended"},
        {"short +1234 stays", "short +1234 stays"},
        {"agent sam.agent@example.com left", "agent *********@*********** left"},
        {"a@b", "*@*"},
        {"no @ here, 2026-11-27T08:00:00Z, msg_123", "no @ here, 2026-11-27T08:00:00Z, msg_123"},
        {"+15550100123,+15550199000", "+*********23,+*********00"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        strcpy(buf, cases[i].in);
        log_mask_personal(buf);
        assert_string_equal(buf, cases[i].out);
    }
}

/* Runs log_init_from_env() with JOURNAL_STREAM set to journal_stream ("" for the device and
 * inode of the file stderr is sent to, as systemd sets it), logs two lines with stderr sent to
 * a temporary file, and returns what was written (static). */
static const char *logged_with(const char *journal_stream)
{
    static char out[1024];
    char path[] = "/tmp/callhook-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    char stream[64];
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    snprintf(stream, sizeof stream, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    setenv("JOURNAL_STREAM", journal_stream[0] ? journal_stream : stream, 1);
    log_init_from_env();
    log_info("listening on %s", "127.0.0.1:8080");
    log_warn("call from +15550100123");
    log_debug("dropped: below the threshold");
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, out, sizeof out - 1, 0);
    assert_true(n >= 0);
    out[n] = '\0';
    close(fd);
    unsetenv("JOURNAL_STREAM");
    log_init_from_env();
    return out;
}

static void test_journal_form(void **state)
{
    (void)state;
    /* stderr is the journal's stream: the priority, the message, no time of its own. */
    assert_string_equal(logged_with(""), "<6>listening on 127.0.0.1:8080\n"
                                         "<4>call from +*********23\n");
}

static void test_plain_form_unless_stderr_is_the_stream(void **state)
{
    (void)state;
    /* Another file's numbers (the service's stderr redirected elsewhere), and values that are
     * not DEVICE:INODE, keep the plain form: a UTC time, the level, the message. */
    static const char *const others[] = {"1:1", "junk", "12:34x", "-"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        const char *out = logged_with(others[i]);
        assert_int_equal(strlen(out) > 30, 1);
        assert_true(out[0] == '2' && out[4] == '-' && out[10] == 'T' && out[23] == 'Z');
        assert_non_null(strstr(out, "Z info  listening on 127.0.0.1:8080\n"));
        assert_non_null(strstr(out, "Z warn  call from +*********23\n"));
        assert_null(strchr(out, '<'));
    }
}

static void test_stream_match(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(fstat(STDIN_FILENO, &st), 0);
    char exact[64];
    snprintf(exact, sizeof exact, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    assert_true(log_stream_is_journal(exact, STDIN_FILENO));
    assert_false(log_stream_is_journal(NULL, STDIN_FILENO));
    assert_false(log_stream_is_journal("", STDIN_FILENO));
    assert_false(log_stream_is_journal(exact, -1));
    char off_by_one[80];
    snprintf(off_by_one, sizeof off_by_one, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    assert_false(log_stream_is_journal(off_by_one, STDIN_FILENO));
}

/* A call record's fields: by name, a phone number keeps its last two digits in any format, a
 * name or free text the first character of each word (UTF-8 kept whole), anything else only
 * loses the phone numbers and e-mail addresses inside it. */
static void test_fields(void **state)
{
    (void)state;
    static const struct {
        const char *name, *in, *out;
    } cases[] = {
        {"CallerId", "+15550100123", "+*********23"},
        {"CalledNumber", "555 0100 123", "*** **** *23"},
        {"callerId", "12", "12"},
        {"CallerDisplayName", "Jane Example", "J*** E******"},
        {"DisplayName", "Zo\xc3\xab \xc3\x9cn\xc3\xaf \xe6\x9d\x8e\xe9\x9b\xb7 \xf0\x9f\x99\x82",
         "Z** \xc3\x9c** \xe6\x9d\x8e* \xf0\x9f\x99\x82"},
        {"Email", "sam.agent@example.com", "s********************"},
        {"userPrincipalName", "sam@example.com", "s**************"},
        {"Notes", "angry  about\tthe bill", "a****  a****\tt** b***"},
        {"VoiceAppName", "Support Hotline", "Support Hotline"},
        {"QueueName", "Support (English)", "Support (English)"},
        {"ActiveCallId", "291e0700-7a4c", "291e0700-7a4c"},
        {"Direction", "Inbound", "Inbound"},
        {"Comment", "call +15550100123 or a@b.c", "c*** +*********** o* a****"},
        {"crmContactId", "mail sam@example.com", "mail ***@***********"},
        {NULL, "+15550100123", "+*********23"},
        {"Name", "", ""},
        {"Name", "\xe6\x9d", "\xe6\x9d"}, /* a cut character stays as it is */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[256];
        strcpy(buf, cases[i].in);
        mask_personal(buf, cases[i].name);
        assert_string_equal(buf, cases[i].out);
    }
    assert_int_equal(mask_field_of("CALLERID"), MASK_FIELD_PHONE);
    assert_int_equal(mask_field_of("agentEmail"), MASK_FIELD_TEXT);
    assert_int_equal(mask_field_of("tenantName"), MASK_FIELD_ANY);
    assert_int_equal(mask_field_of(NULL), MASK_FIELD_ANY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_journal_form),
        cmocka_unit_test(test_plain_form_unless_stderr_is_the_stream),
        cmocka_unit_test(test_stream_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
