/* The pipe sink driven directly: a Python handler that answers out of order, once ok:false,
 * writes stray lines, and kills itself midway; the lines it reads; the restart and the resend;
 * the answer timeout, interrupt(), a handler that cannot stay up, commands refused at open(),
 * and the examples of docs/examples. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <callhook/record.h>
#include <jansson.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "receive/receiver.h"
#include "receive/sink.h"
#include "util/clock.h"

#define NEVENTS 40
#define REFUSED 7 /* the event the handler answers ok:false */

static const char *const payload_files[] = {
    "begin-call.json",           "begin-call-camelcase.json",   "begin-call-outbound-minimal.json",
    "end-call-answered.json",    "end-call-future-fields.json", "end-call-missed.json",
    "end-call-transferred.json", "end-call-voicemail.json"};
#define NPAYLOADS (sizeof payload_files / sizeof payload_files[0])

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

/* Events as the inbox would hand them out: the sample payloads in turn, unique webhook-ids. */
static void make_events(struct ch_inbox_entry *e, size_t n)
{
    const char *dir = getenv("CALLHOOK_PAYLOADS_DIR");
    if (dir == NULL)
        dir = CALLHOOK_PAYLOADS_DIR;
    for (size_t i = 0; i < n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, payload_files[i % NPAYLOADS]);
        e[i].body = read_all(path, &e[i].body_len);
        assert_non_null(e[i].body);
        struct ch_record rec;
        assert_int_equal(ch_record_parse(&rec, e[i].body, e[i].body_len, 0, NULL), CH_OK);
        e[i].seq = (long long)i + 1;
        snprintf(e[i].webhook_id, sizeof e[i].webhook_id, "msg_pipe_%03zu", i);
        snprintf(e[i].event, sizeof e[i].event, "%s",
                 strncmp(payload_files[i % NPAYLOADS], "begin", 5) == 0 ? "begin-call"
                                                                        : "end-call");
        e[i].has_call_type = rec.call_type_kind != CH_CALL_TYPE_ABSENT;
        e[i].call_type = rec.call_type;
        e[i].received_at = 1795770843 + (long long)i;
        e[i].attempts = 1;
        e[i].status = CH_INBOX_RUNNING;
    }
}

static void free_events(struct ch_inbox_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].body);
}

static struct receive_config *config(int window, int timeout_s)
{
    struct receive_config *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->pipe_window = window;
    c->exec_timeout_s = timeout_s;
    return c;
}

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/callhook-test-pipe-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
}

/* Reads its input with os.read (no read-ahead of its own), logs every line as received
 * (lines.jsonl) and every answer (answers.log) with its pid, answers in reverse order at the
 * end of each group of 5 (and, after the restart, of each chunk read), answers REFUSED ok:false,
 * writes at start an ok:false for an unknown id, a line that is not JSON and one whose "ok" is
 * not a boolean (all three must be ignored: no event is refused by them), and in its first life
 * kills itself (signal 9) on its 12th line, with lines 11 and 12 unanswered. */
static const char handler_py[] =
    "import json, os, sys\n"
    "state = sys.argv[1]\n"
    "first_life = not os.path.exists(state + '/killed')\n"
    "lines = open(state + '/lines.jsonl', 'a')\n"
    "answers = open(state + '/answers.log', 'a')\n"
    "pid = os.getpid()\n"
    "pending, buf, count = [], b'', 0\n"
    "def answer():\n"
    "    global pending\n"
    "    out = ''\n"
    "    for ev_id in reversed(pending):\n"
    "        if ev_id == 'msg_pipe_%03d':\n"
    "            out += json.dumps({'id': ev_id, 'ok': False, 'retryAfterS': 7,\n"
    "                               'error': 'not today'}) + '\\n'\n"
    "        else:\n"
    "            out += json.dumps({'id': ev_id, 'ok': True}) + '\\n'\n"
    "        answers.write('%%d %%s\\n' %% (pid, ev_id))\n"
    "    answers.flush()\n"
    "    pending = []\n"
    "    os.write(1, out.encode())\n"
    "os.write(1, b'{\"id\": \"msg_nobody\", \"ok\": false}\\nthis is not json\\n'\n"
    "         b'{\"id\": \"msg_pipe_003\", \"ok\": \"no\"}\\n')\n"
    "sys.stderr.write('handler %%d up\\n' %% pid); sys.stderr.flush()\n"
    "while True:\n"
    "    chunk = os.read(0, 65536)\n"
    "    if not chunk:\n"
    "        break\n"
    "    buf += chunk\n"
    "    while b'\\n' in buf:\n"
    "        line, buf = buf.split(b'\\n', 1)\n"
    "        lines.write('%%d %%s\\n' %% (pid, line.decode())); lines.flush()\n"
    "        pending.append(json.loads(line)['id'])\n"
    "        count += 1\n"
    "        if first_life and count == 12:\n"
    "            open(state + '/killed', 'w').close()\n"
    "            os.kill(pid, 9)\n"
    "        if len(pending) == 5:\n"
    "            answer()\n"
    "    if not first_life:\n"
    "        answer()\n";

static void write_handler(char *command, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/handler.py", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, handler_py, REFUSED);
    fclose(f);
    snprintf(command, cap, "exec python3 '%s' '%s'", path, tmpdir);
}

/* What the handlers logged: for each event, the pids that received it and that answered it. */
struct seen {
    int received_by[NEVENTS][4], nreceived[NEVENTS];
    int answered_by[NEVENTS][4], nanswered[NEVENTS];
    json_t *first_line[NEVENTS];
};

static int index_of(const char *id)
{
    int i = -1;
    if (sscanf(id, "msg_pipe_%d", &i) != 1 || i < 0 || i >= NEVENTS)
        fail_msg("a line for an unexpected id '%s'", id);
    return i;
}

static void read_logs(struct seen *s)
{
    memset(s, 0, sizeof *s);
    char path[512], line[1 << 16];
    snprintf(path, sizeof path, "%s/lines.jsonl", tmpdir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f)) {
        int pid = atoi(line);
        const char *text = strchr(line, ' ') + 1;
        json_error_t jerr;
        json_t *j = json_loads(text, 0, &jerr);
        if (j == NULL)
            fail_msg("the handler read a line that is not JSON: %s (%s)", text, jerr.text);
        int i = index_of(json_string_value(json_object_get(j, "id")));
        assert_true(s->nreceived[i] < 4);
        s->received_by[i][s->nreceived[i]++] = pid;
        if (s->first_line[i] == NULL)
            s->first_line[i] = j;
        else
            json_decref(j);
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/answers.log", tmpdir);
    f = fopen(path, "r");
    assert_non_null(f);
    char id[300];
    int pid;
    while (fscanf(f, "%d %299s", &pid, id) == 2) {
        int i = index_of(id);
        assert_true(s->nanswered[i] < 4);
        s->answered_by[i][s->nanswered[i]++] = pid;
    }
    fclose(f);
}

/* The line of an event has the fields of the protocol, with the entry's values. */
static void check_line(const json_t *j, const struct ch_inbox_entry *e)
{
    const char *keys[] = {"id",           "event",      "activeCallId", "correlationId", "callType",
                          "callTypeName", "receivedAt", "attempt",      "body"};
    assert_int_equal(json_object_size(j), sizeof keys / sizeof keys[0]);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        if (json_object_get(j, keys[k]) == NULL)
            fail_msg("the line has no '%s'", keys[k]);
    }
    assert_string_equal(json_string_value(json_object_get(j, "id")), e->webhook_id);
    assert_string_equal(json_string_value(json_object_get(j, "event")), e->event);
    assert_int_equal(json_integer_value(json_object_get(j, "receivedAt")), e->received_at);
    assert_int_equal(json_integer_value(json_object_get(j, "attempt")), e->attempts);
    struct ch_record rec;
    assert_int_equal(ch_record_parse(&rec, e->body, e->body_len, 0, NULL), CH_OK);
    json_t *active = json_object_get(j, "activeCallId");
    if (rec.has_active_call_id)
        assert_string_equal(json_string_value(active), rec.active_call_id);
    else
        assert_true(json_is_null(active));
    json_t *type = json_object_get(j, "callType"), *name = json_object_get(j, "callTypeName");
    if (e->has_call_type) {
        char want[CH_CALL_TYPE_NAME_MAX];
        ch_call_type_name(rec.call_type_kind, rec.call_type, want, sizeof want);
        assert_int_equal(json_integer_value(type), e->call_type);
        assert_string_equal(json_string_value(name), want);
    } else {
        assert_true(json_is_null(type));
        assert_true(json_is_null(name));
    }
    /* The body: the record as received, as a JSON value. */
    json_t *record = json_loadb(e->body, e->body_len, 0, NULL);
    assert_non_null(record);
    assert_true(json_equal(record, json_object_get(j, "body")));
    json_decref(record);
}

static void test_out_of_order_refusal_and_restart(void **state)
{
    (void)state;
    make_tmpdir();
    char command[1024];
    write_handler(command, sizeof command);
    struct ch_inbox_entry events[NEVENTS];
    make_events(events, NEVENTS);
    struct receive_config *c = config(64, 30);
    struct sink *s = NULL;
    struct ch_error err = {0};
    assert_int_equal(sink_pipe_ops.open(command, c, &s, &err), CH_OK);
    assert_int_equal(sink_pipe_ops.batch_max(s), 64);

    struct sink_result res[NEVENTS];
    memset(res, 0xff, sizeof res);
    sink_pipe_ops.process(s, events, NEVENTS, res);
    for (int i = 0; i < NEVENTS; i++) {
        if (i == REFUSED) {
            assert_int_equal(res[i].outcome, SINK_RETRY);
            assert_int_equal(res[i].retry_after_ms, 7000);
            assert_non_null(strstr(res[i].error, "ok:false"));
            assert_non_null(strstr(res[i].error, "not today"));
        } else {
            if (res[i].outcome != SINK_DONE)
                fail_msg("event %d: outcome %d (%s)", i, res[i].outcome, res[i].error);
        }
    }

    /* Two handlers ran: the first answered events 0-9 and died with 10 and 11 read but not
     * answered; the second got every event the first had not answered, and none it had. */
    struct seen seen;
    read_logs(&seen);
    int first = seen.received_by[0][0], second = 0;
    for (int i = 0; i < NEVENTS; i++) {
        assert_true(seen.nreceived[i] >= 1);
        assert_int_equal(seen.nanswered[i], 1);
        if (seen.answered_by[i][0] != first)
            second = seen.answered_by[i][0];
    }
    assert_true(second != 0 && second != first);
    for (int i = 0; i < NEVENTS; i++) {
        bool answered_first = seen.answered_by[i][0] == first;
        assert_int_equal(answered_first, i < 10);
        bool to_second = false;
        for (int k = 0; k < seen.nreceived[i]; k++)
            to_second |= seen.received_by[i][k] == second;
        if (to_second == answered_first)
            fail_msg("event %d: answered by the first handler %d, sent to the second %d", i,
                     answered_first, to_second);
        if (i == 10 || i == 11) { /* read by the first, resent to the second */
            assert_int_equal(seen.nreceived[i], 2);
            assert_int_equal(seen.received_by[i][0], first);
        }
        check_line(seen.first_line[i], &events[i]);
        json_decref(seen.first_line[i]);
    }

    /* The handler stays up between batches: the refused event again, now done by the same
     * second handler. */
    events[REFUSED].attempts = 2;
    char keep[sizeof events[0].webhook_id];
    snprintf(keep, sizeof keep, "%s", events[REFUSED].webhook_id);
    snprintf(events[REFUSED].webhook_id, sizeof events[REFUSED].webhook_id, "msg_pipe_%03d", 12);
    sink_pipe_ops.process(s, &events[REFUSED], 1, res);
    assert_int_equal(res[0].outcome, SINK_DONE);
    snprintf(events[REFUSED].webhook_id, sizeof events[REFUSED].webhook_id, "%s", keep);

    sink_pipe_ops.close(s);
    free(c);
    free_events(events, NEVENTS);
    remove_tmpdir();
}

/* A handler that reads but never answers: the batch comes back after the answer timeout, and
 * the handler is ended (the next batch starts a new one). */
static void test_answer_timeout(void **state)
{
    (void)state;
    struct ch_inbox_entry events[3];
    make_events(events, 3);
    struct receive_config *c = config(8, 1);
    struct sink *s = NULL;
    assert_int_equal(sink_pipe_ops.open("cat > /dev/null", c, &s, NULL), CH_OK);
    struct sink_result res[3];
    long long t0 = clock_mono_ms();
    sink_pipe_ops.process(s, events, 3, res);
    long long took = clock_mono_ms() - t0;
    assert_true(took >= 900 && took < 5000);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].outcome, SINK_RETRY);
        assert_non_null(strstr(res[i].error, "no answer"));
    }
    sink_pipe_ops.close(s);
    free(c);
    free_events(events, 3);
}

struct interrupter {
    struct sink *s;
    int after_ms;
};

static void *interrupt_later(void *arg)
{
    struct interrupter *it = arg;
    struct timespec ts = {0, it->after_ms * 1000000L};
    nanosleep(&ts, NULL);
    sink_pipe_ops.interrupt(it->s);
    return NULL;
}

/* interrupt() from another thread makes a waiting process() return at once, every event given
 * back, and the next process() too. */
static void test_interrupt(void **state)
{
    (void)state;
    struct ch_inbox_entry events[4];
    make_events(events, 4);
    struct receive_config *c = config(8, 60);
    struct sink *s = NULL;
    assert_int_equal(sink_pipe_ops.open("exec sleep 600", c, &s, NULL), CH_OK);
    struct sink_result res[4];
    struct interrupter it = {s, 300};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, interrupt_later, &it), 0);
    long long t0 = clock_mono_ms();
    sink_pipe_ops.process(s, events, 4, res);
    long long took = clock_mono_ms() - t0;
    pthread_join(t, NULL);
    assert_true(took >= 250 && took < 3000);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res[i].outcome, SINK_GIVEN_BACK);
        assert_non_null(strstr(res[i].error, "interrupted"));
    }
    t0 = clock_mono_ms();
    sink_pipe_ops.process(s, events, 4, res);
    assert_true(clock_mono_ms() - t0 < 1000);
    assert_int_equal(res[0].outcome, SINK_GIVEN_BACK);
    /* close(): its input closed, sleep does not notice, killed after the grace. */
    t0 = clock_mono_ms();
    sink_pipe_ops.close(s);
    assert_true(clock_mono_ms() - t0 < 5000);
    free(c);
    free_events(events, 4);
}

/* A handler that exits at once: restarted with growing backoff within the call, then the
 * events are given back as "handler restarting" with the time of the next start. */
static void test_restart_limit(void **state)
{
    (void)state;
    struct ch_inbox_entry events[2];
    make_events(events, 2);
    struct receive_config *c = config(8, 30);
    struct sink *s = NULL;
    assert_int_equal(sink_pipe_ops.open("echo starting >&2; exit 3", c, &s, NULL), CH_OK);
    struct sink_result res[2];
    long long t0 = clock_mono_ms();
    sink_pipe_ops.process(s, events, 2, res);
    long long took = clock_mono_ms() - t0;
    /* Starts at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s; the next at 6.3 s is past the 5 s limit. */
    assert_true(took >= 3000 && took < 6000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(res[i].outcome, SINK_RETRY);
        assert_non_null(strstr(res[i].error, "restarting"));
        assert_non_null(strstr(res[i].error, "status 3"));
        assert_true(res[i].retry_after_ms > 2000 && res[i].retry_after_ms <= 3300);
    }
    sink_pipe_ops.close(s);
    free(c);
    free_events(events, 2);
}

/* A command that cannot run is refused at open(), saying which program and why. */
static void test_open_refuses(void **state)
{
    (void)state;
    make_tmpdir();
    struct receive_config *c = config(0, 30);
    struct sink *s = NULL;
    struct ch_error err = {0};
    assert_int_equal(sink_pipe_ops.open("callhook-no-such-handler --serve", c, &s, &err),
                     CH_EINVAL);
    assert_non_null(strstr(err.message, "'callhook-no-such-handler' is not a program on PATH"));
    assert_null(s);
    assert_int_equal(sink_pipe_ops.open("exec /nonexistent/handler.py", c, &s, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "cannot find '/nonexistent/handler.py'"));
    char path[512];
    snprintf(path, sizeof path, "%s/not-executable.sh", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(sink_pipe_ops.open(path, c, &s, &err), CH_EINVAL);
    assert_non_null(strstr(err.message, "is not executable"));
    assert_int_equal(sink_pipe_ops.open("   ", c, &s, &err), CH_EINVAL);
    assert_null(s);
    /* On PATH, or left to the shell: accepted; the default window. */
    assert_int_equal(sink_pipe_ops.open("python3 -u handler.py", c, &s, &err), CH_OK);
    assert_int_equal(sink_pipe_ops.batch_max(s), 256);
    sink_pipe_ops.close(s);
    assert_int_equal(sink_pipe_ops.open("FOO=1 ./handler", c, &s, &err), CH_OK);
    sink_pipe_ops.close(s);
    free(c);
    remove_tmpdir();
}

/* The examples of docs/examples, run as a user would run them: every event answered ok. */
static void run_example(const char *command)
{
    struct ch_inbox_entry events[24];
    make_events(events, 24);
    struct receive_config *c = config(16, 30);
    struct sink *s = NULL;
    struct ch_error err = {0};
    if (sink_pipe_ops.open(command, c, &s, &err) != CH_OK)
        fail_msg("%s", err.message);
    struct sink_result res[24];
    sink_pipe_ops.process(s, events, 16, res);
    sink_pipe_ops.process(s, events + 16, 8, res + 16);
    for (int i = 0; i < 24; i++) {
        if (res[i].outcome != SINK_DONE)
            fail_msg("%s: event %d: %s", command, i, res[i].error);
    }
    sink_pipe_ops.close(s);
    free(c);
    free_events(events, 24);
}

static void test_examples(void **state)
{
    (void)state;
    run_example("exec python3 " CALLHOOK_EXAMPLES_DIR "/pipe_handler.py");
    run_example("exec node " CALLHOOK_EXAMPLES_DIR "/pipe_handler.mjs");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_order_refusal_and_restart),
        cmocka_unit_test(test_answer_timeout),
        cmocka_unit_test(test_interrupt),
        cmocka_unit_test(test_restart_limit),
        cmocka_unit_test(test_open_refuses),
        cmocka_unit_test(test_examples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
