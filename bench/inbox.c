/*
 * ch-bench-inbox: the receiver's inbox on its own, CPU per event of each step a receiver with
 * one sink takes: add (the front's group commit, fsynced), take (a sink's batch marked
 * running, with its records) and finish (the outcomes and each event's derived state).
 * Batches of 64, a 1,200-byte record; the process's CPU time around each call.
 *
 *   ch-bench-inbox --store FILE [--batches N] [--malloc-default]
 *
 * callhook receive raises glibc's trim and mmap thresholds (mallopt); --malloc-default leaves
 * them as a program linking libcallhook would have them, which is where SQLite's temporary
 * structures used to cost ten times more (a heap trimmed and grown at every statement).
 */
#include <callhook/inbox.h>

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 64

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: ch-bench-inbox --store FILE [--batches N] [--malloc-default]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *store = NULL;
    long batches = 300;
    int malloc_default = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store = argv[++i];
        else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc)
            batches = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--malloc-default") == 0)
            malloc_default = 1;
        else
            return usage();
    }
    if (store == NULL || batches < 1)
        return usage();
    if (!malloc_default) { /* as callhook receive sets them */
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
        mallopt(M_MMAP_THRESHOLD, 8 << 20);
    }
    struct ch_inbox *ib = NULL;
    struct ch_error err = {0};
    if (ch_inbox_open(store, &ib, &err) != CH_OK) {
        fprintf(stderr, "ch-bench-inbox: %s\n", err.message);
        return 1;
    }
    static char body[1200];
    memset(body, 'x', sizeof body);
    body[0] = '{';
    body[sizeof body - 1] = '}';
    static const char *const sink[] = {"jsonl:/dev/null"};
    struct ch_inbox_sinks to[BATCH];
    struct ch_inbox_event ev[BATCH];
    struct ch_inbox_entry e[BATCH];
    struct ch_inbox_outcome o[BATCH];
    char ids[BATCH][64], keys[BATCH][64];
    double add = 0, take = 0, finish = 0;
    long long events = 0;
    for (long b = 0; b < batches; b++) {
        long long now = (long long)time(NULL);
        for (int i = 0; i < BATCH; i++) {
            snprintf(ids[i], sizeof ids[i], "msg_bench_%ld_%d", b, i);
            snprintf(keys[i], sizeof keys[i], "call_bench_%ld_%d", b, i);
            to[i] = (struct ch_inbox_sinks){sink, 1};
            ev[i] = (struct ch_inbox_event){.webhook_id = ids[i],
                                            .event = "begin-call",
                                            .call_key = keys[i],
                                            .has_call_type = true,
                                            .call_type = 4,
                                            .body = body,
                                            .body_len = sizeof body,
                                            .received_at = now,
                                            .webhook_timestamp = now,
                                            .webhook_signature =
                                                "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="};
        }
        double t0 = cpu_s();
        if (ch_inbox_add_routed(ib, ev, to, BATCH, &err) != CH_OK)
            goto fail;
        double t1 = cpu_s();
        size_t n = 0;
        long long next = 0;
        if (ch_inbox_take_sink(ib, sink[0], (now + 1) * 1000, e, BATCH, &n, &next, &err) != CH_OK)
            goto fail;
        double t2 = cpu_s();
        for (size_t i = 0; i < n; i++)
            o[i] = (struct ch_inbox_outcome){.seq = e[i].seq, .status = CH_INBOX_DONE};
        if (ch_inbox_finish_sink(ib, sink[0], o, n, now, &err) != CH_OK)
            goto fail;
        double t3 = cpu_s();
        for (size_t i = 0; i < n; i++)
            ch_inbox_entry_release(&e[i]);
        add += t1 - t0;
        take += t2 - t1;
        finish += t3 - t2;
        events += (long long)n;
    }
    ch_inbox_close(ib);
    printf("BENCH events=%lld add_us=%.1f take_us=%.1f finish_us=%.1f\n", events,
           add / (double)events * 1e6, take / (double)events * 1e6, finish / (double)events * 1e6);
    return 0;
fail:
    fprintf(stderr, "ch-bench-inbox: %s\n", err.message);
    ch_inbox_close(ib);
    return 1;
}
