/* The pipe: sink is not built in this build: a stub whose open() says so at start, so that a
 * handler naming it is a clear error rather than a silent drop. */
#include "receive/sink.h"

#include <stddef.h>

static ch_code stub_open(const char *target, const struct receive_config *c, struct sink **out,
                         struct ch_error *err)
{
    (void)target;
    (void)c;
    *out = NULL;
    return sink_not_built("pipe", err);
}

static size_t stub_batch_max(const struct sink *s)
{
    (void)s;
    return 1;
}

static void stub_process(struct sink *s, const struct ch_inbox_entry *events, size_t n,
                         struct sink_result *results)
{
    (void)s;
    (void)events;
    for (size_t i = 0; i < n; i++)
        results[i].outcome = SINK_RETRY;
}

static void stub_nothing(struct sink *s)
{
    (void)s;
}

const struct sink_ops sink_pipe_ops = {
    .scheme = "pipe",
    .open = stub_open,
    .batch_max = stub_batch_max,
    .process = stub_process,
    .interrupt = stub_nothing,
    .close = stub_nothing,
};
