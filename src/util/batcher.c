/*
 * The group-commit batcher: a fixed ring of queued item pointers under one lock, and one thread
 * that takes up to a batch from it, commits the batch and answers it outside the lock, so
 * submitters wait on nothing but the lock while a commit runs.
 */
#include "util/batcher.h"

#include "util/thread.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct batcher {
    struct batcher_config cfg;
    char thread_name[16];
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* The queue: ring[(head + i) % max_queued] for i < queued. */
    void **ring;
    size_t head, queued;
    bool stop;    /* no more submits; the thread ends once the queue is empty */
    bool running; /* the thread has not been joined */
    /* The batch being committed: used by the batcher's thread only. */
    void **batch;
};

/* Moves up to max_batch items from the front of the queue into b->batch. Holds b->lock. */
static size_t take_batch(struct batcher *b)
{
    size_t n = b->queued < b->cfg.max_batch ? b->queued : b->cfg.max_batch;
    for (size_t i = 0; i < n; i++) {
        b->batch[i] = b->ring[b->head];
        b->head = (b->head + 1) % b->cfg.max_queued;
    }
    b->queued -= n;
    return n;
}

static void *batcher_main(void *arg)
{
    struct batcher *b = arg;
    thread_name(b->thread_name);
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->queued == 0 && !b->stop)
            pthread_cond_wait(&b->cond, &b->lock);
        if (b->queued == 0)
            break; /* stopped, and everything queued before has been answered */
        /* Whatever waits now, up to one batch, is the group of this commit. */
        size_t n = take_batch(b);
        pthread_mutex_unlock(&b->lock);
        ch_code rc = b->cfg.commit(b->cfg.ctx, b->batch, n);
        b->cfg.done(b->cfg.ctx, b->batch, n, rc);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

static void release(struct batcher *b)
{
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b->ring);
    free(b->batch);
    free(b);
}

ch_code batcher_new(const struct batcher_config *cfg, struct batcher **out, struct ch_error *err)
{
    if (cfg->max_batch == 0 || cfg->max_queued == 0 || cfg->max_batch > SIZE_MAX / sizeof(void *) ||
        cfg->max_queued > SIZE_MAX / sizeof(void *) || cfg->commit == NULL || cfg->done == NULL)
        return ch_error_set(err, CH_EINVAL,
                            "a batcher needs max_batch and max_queued of at least 1, a commit "
                            "and a done callback");
    struct batcher *b = calloc(1, sizeof *b);
    if (b == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    b->cfg = *cfg;
    snprintf(b->thread_name, sizeof b->thread_name, "%s",
             cfg->thread_name ? cfg->thread_name : "ch-batcher");
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->ring = calloc(cfg->max_queued, sizeof *b->ring);
    b->batch = calloc(cfg->max_batch, sizeof *b->batch);
    if (b->ring == NULL || b->batch == NULL) {
        release(b);
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    }
    if (pthread_create(&b->thread, NULL, batcher_main, b) != 0) {
        release(b);
        return ch_error_set(err, CH_ENOMEM, "cannot start the thread '%s'", b->thread_name);
    }
    b->running = true;
    *out = b;
    return CH_OK;
}

enum batcher_submit_result batcher_submit(struct batcher *b, void *item)
{
    pthread_mutex_lock(&b->lock);
    enum batcher_submit_result res = BATCHER_QUEUED;
    if (b->stop)
        res = BATCHER_STOPPED;
    else if (b->queued == b->cfg.max_queued)
        res = BATCHER_FULL;
    else {
        b->ring[(b->head + b->queued) % b->cfg.max_queued] = item;
        b->queued++;
        pthread_cond_signal(&b->cond);
    }
    pthread_mutex_unlock(&b->lock);
    return res;
}

void batcher_stop(struct batcher *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = true;
    bool join = b->running;
    b->running = false;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
    if (join)
        pthread_join(b->thread, NULL);
}

void batcher_free(struct batcher *b)
{
    if (b == NULL)
        return;
    batcher_stop(b);
    release(b);
}
