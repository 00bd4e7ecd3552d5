/* The settings in force and their replacement by a reload (live.h): reference-counted copies. */
#include "receive/live.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One version of the settings; cfg first, so a user's pointer leads back to it. */
struct version {
    struct receive_config cfg;
    int refs; /* users, plus one while in force */
};

struct live {
    pthread_mutex_t lock;
    struct version *current;
};

static struct version *version_of(const struct receive_config *c)
{
    return (struct version *)(void *)(uintptr_t)c;
}

static void version_free(struct version *v)
{
    for (size_t i = 0; i < v->cfg.nkeys; i++)
        ch_secret_wipe(&v->cfg.keys[i]);
    ch_secret_wipe(&v->cfg.forward_key);
    free(v);
}

static struct version *version_new(const struct receive_config *c, struct ch_error *err)
{
    struct version *v = malloc(sizeof *v);
    if (v == NULL) {
        ch_error_set(err, CH_ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(&v->cfg, c, sizeof v->cfg);
    v->refs = 1;
    return v;
}

ch_code live_new(const struct receive_config *first, struct live **out, struct ch_error *err)
{
    struct live *l = calloc(1, sizeof *l);
    if (l == NULL)
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    l->current = version_new(first, err);
    if (l->current == NULL) {
        free(l);
        return CH_ENOMEM;
    }
    pthread_mutex_init(&l->lock, NULL);
    *out = l;
    return CH_OK;
}

void live_free(struct live *l)
{
    if (l == NULL)
        return;
    version_free(l->current);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

const struct receive_config *live_get(struct live *l)
{
    pthread_mutex_lock(&l->lock);
    struct version *v = l->current;
    v->refs++;
    pthread_mutex_unlock(&l->lock);
    return &v->cfg;
}

void live_put(struct live *l, const struct receive_config *c)
{
    struct version *v = version_of(c);
    pthread_mutex_lock(&l->lock);
    bool last = --v->refs == 0;
    pthread_mutex_unlock(&l->lock);
    if (last)
        version_free(v);
}

ch_code live_replace(struct live *l, const struct receive_config *next, struct ch_error *err)
{
    struct version *v = version_new(next, err);
    if (v == NULL)
        return CH_ENOMEM;
    pthread_mutex_lock(&l->lock);
    struct version *old = l->current;
    l->current = v;
    bool last = --old->refs == 0;
    pthread_mutex_unlock(&l->lock);
    if (last)
        version_free(old);
    return CH_OK;
}
