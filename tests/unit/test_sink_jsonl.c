/* The jsonl sink driven directly: a batch the file system refuses halfway (the file size
 * limit, as a full disk would) leaves no torn line and no half of the batch behind, so its
 * retry writes every line once. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "receive/receiver.h"
#include "receive/sink.h"

#define NEVENTS 64

static char body[] = "{\"ActiveCallId\":\"c\",\"CallType\":4,\"Note\":\"a line of some length, "
                     "so that a batch is several kilobytes\"}";

static void make_events(struct ch_inbox_entry *e, size_t n, int round)
{
    for (size_t i = 0; i < n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].seq = (long long)i + 1;
        snprintf(e[i].webhook_id, sizeof e[i].webhook_id, "msg_%d_%03zu", round, i);
        snprintf(e[i].event, sizeof e[i].event, "begin-call");
        e[i].body = body;
        e[i].body_len = strlen(body);
        e[i].received_at = 1795770843;
        e[i].attempts = 1;
        e[i].status = CH_INBOX_RUNNING;
    }
}

static off_t size_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Every line of the file is whole JSON; counts each webhook id's lines into seen[round][i]. */
static void check_lines(const char *path, int seen[2][NEVENTS])
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        assert_true(len > 0 && line[len - 1] == '\n'); /* no torn last line */
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        if (o == NULL)
            fail_msg("not a JSON line: %s (%s)", line, jerr.text);
        int round = 0;
        unsigned i = 0;
        assert_int_equal(
            sscanf(json_string_value(json_object_get(o, "webhookId")), "msg_%d_%u", &round, &i), 2);
        assert_true(round >= 0 && round < 2 && i < NEVENTS);
        seen[round][i]++;
        json_decref(o);
    }
    fclose(f);
}

static void test_half_written_batch_is_cut_off(void **state)
{
    (void)state;
    char dir[] = "/tmp/callhook-test-jsonl-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/calls.jsonl", dir);
    struct receive_config c = {0};
    struct sink *s = NULL;
    struct ch_error err = {0};
    assert_int_equal(sink_jsonl_ops.open(path, &c, &s, &err), CH_OK);
    assert_true(sink_jsonl_ops.batch_max(s) >= NEVENTS);

    struct ch_inbox_entry e[NEVENTS];
    struct sink_result res[NEVENTS];
    make_events(e, NEVENTS, 0);
    sink_jsonl_ops.process(s, e, NEVENTS, res);
    for (int i = 0; i < NEVENTS; i++)
        assert_int_equal(res[i].outcome, SINK_DONE);
    off_t one_batch = size_of(path);
    assert_true(one_batch > 4096);

    /* Room for half of the next batch: the write stops there (EFBIG, not a signal). */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)(one_batch + one_batch / 2);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    make_events(e, NEVENTS, 1);
    sink_jsonl_ops.process(s, e, NEVENTS, res);
    for (int i = 0; i < NEVENTS; i++) {
        assert_int_equal(res[i].outcome, SINK_RETRY);
        assert_non_null(strstr(res[i].error, "cannot write"));
    }
    assert_int_equal(size_of(path), one_batch); /* the half written is gone */

    /* The room is back: the retry writes the batch, each line once. */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    sink_jsonl_ops.process(s, e, NEVENTS, res);
    for (int i = 0; i < NEVENTS; i++)
        assert_int_equal(res[i].outcome, SINK_DONE);
    int seen[2][NEVENTS] = {{0}};
    check_lines(path, seen);
    for (int r = 0; r < 2; r++) {
        for (int i = 0; i < NEVENTS; i++) {
            if (seen[r][i] != 1)
                fail_msg("msg_%d_%03d: %d lines", r, i, seen[r][i]);
        }
    }
    sink_jsonl_ops.close(s);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_written_batch_is_cut_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
