/* The TTL cache: open addressing over a fixed array, one mutex. */
#include "api/cache.h"

#include "util/clock.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    bool used;
    char key[API_CACHE_KEY_MAX + 1];
    unsigned char value[API_CACHE_VALUE_MAX];
    int64_t expires_ms;
};

struct api_cache {
    pthread_mutex_t lock;
    struct entry *slots;
    size_t cap, count;
    int ttl_ms;
};

static size_t hash(const char *s, size_t cap)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % cap);
}

struct api_cache *api_cache_new(size_t capacity, int ttl_ms)
{
    struct api_cache *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    /* Twice the capacity in slots keeps probe runs short. */
    c->cap = capacity * 2;
    c->slots = calloc(c->cap, sizeof *c->slots);
    if (c->slots == NULL) {
        free(c);
        return NULL;
    }
    c->ttl_ms = ttl_ms;
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void api_cache_free(struct api_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c);
}

bool api_cache_get(struct api_cache *c, const char *key, void *value, size_t len)
{
    if (c == NULL || len > API_CACHE_VALUE_MAX || strlen(key) > API_CACHE_KEY_MAX)
        return false;
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    for (size_t i = hash(key, c->cap), n = 0; c->slots[i].used && n < c->cap;
         i = (i + 1) % c->cap, n++) {
        if (strcmp(c->slots[i].key, key) == 0) {
            if (c->slots[i].expires_ms > clock_mono_ms()) {
                memcpy(value, c->slots[i].value, len);
                hit = true;
            }
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void api_cache_put(struct api_cache *c, const char *key, const void *value, size_t len)
{
    if (c == NULL || len > API_CACHE_VALUE_MAX || strlen(key) > API_CACHE_KEY_MAX)
        return;
    pthread_mutex_lock(&c->lock);
    if (c->count * 2 >= c->cap) {
        memset(c->slots, 0, c->cap * sizeof *c->slots);
        c->count = 0;
    }
    size_t i = hash(key, c->cap);
    while (c->slots[i].used && strcmp(c->slots[i].key, key) != 0)
        i = (i + 1) % c->cap;
    if (!c->slots[i].used) {
        c->slots[i].used = true;
        strcpy(c->slots[i].key, key);
        c->count++;
    }
    memcpy(c->slots[i].value, value, len);
    c->slots[i].expires_ms = clock_mono_ms() + c->ttl_ms;
    pthread_mutex_unlock(&c->lock);
}

void api_cache_clear(struct api_cache *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    memset(c->slots, 0, c->cap * sizeof *c->slots);
    c->count = 0;
    pthread_mutex_unlock(&c->lock);
}
