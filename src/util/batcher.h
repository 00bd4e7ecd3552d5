/* The group-commit batcher behind every durable writer (serve's ingest, the receiver's inbox):
 * callers queue items from any thread; one thread takes up to max_batch of them at a time, in
 * the order they were queued, commits them with one call (one transaction, one fsync), then
 * hands the same batch and the commit's result to a done callback that answers their waiters.
 * It knows nothing of HTTP or databases: both steps are the user's callbacks. */
#ifndef CALLHOOK_UTIL_BATCHER_H
#define CALLHOOK_UTIL_BATCHER_H

#include <callhook/error.h>

#include <stddef.h>

struct batcher;

/* Commits items[0..n) (1 <= n <= max_batch, in queued order) in one durable step. Runs on the
 * batcher's thread. Returns CH_OK, or the error that befell the whole batch. */
typedef ch_code (*batcher_commit_cb)(void *ctx, void *const *items, size_t n);

/* Answers every item of a batch after commit returned rc: called exactly once per batch, right
 * after commit, on the same thread and with the same items (so per-batch results the commit
 * left in ctx are still there). From here on the items are the callback's again; the batcher
 * never touches them after it returns. */
typedef void (*batcher_done_cb)(void *ctx, void *const *items, size_t n, ch_code rc);

struct batcher_config {
    const char *thread_name; /* borrowed; Linux keeps 15 characters */
    size_t max_batch;        /* items per commit, at least 1 */
    size_t max_queued;       /* items waiting (not yet taken) at most, at least 1 */
    batcher_commit_cb commit;
    batcher_done_cb done;
    void *ctx; /* borrowed, handed to both callbacks */
};

enum batcher_submit_result {
    BATCHER_QUEUED = 0, /* it will reach done exactly once */
    BATCHER_FULL,       /* max_queued items wait already: not queued, the caller answers it */
    BATCHER_STOPPED,    /* batcher_stop() was called: not queued, the caller answers it */
};

/**
 * Starts a batcher and its thread. cfg is copied (its pointers are borrowed). Returns CH_OK and
 * *out (caller frees with batcher_free()), CH_EINVAL on a bad config, or CH_ENOMEM.
 */
ch_code batcher_new(const struct batcher_config *cfg, struct batcher **out, struct ch_error *err);

/**
 * Queues item (borrowed until done gets it). Never blocks on a commit and never allocates, so a
 * full queue is refused at once rather than waited on. Thread-safe.
 */
enum batcher_submit_result batcher_submit(struct batcher *b, void *item);

/**
 * Stops the batcher: every item queued before the call is still committed and answered, in
 * batches as usual; then the thread ends and this returns. Items submitted from then on are
 * refused with BATCHER_STOPPED. The batcher stays valid (submit may still be called) until it
 * is freed. Idempotent; not to be called from a callback.
 */
void batcher_stop(struct batcher *b);

/* Stops it if needed, then frees it. NULL is a no-op. */
void batcher_free(struct batcher *b);

#endif
