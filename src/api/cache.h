/* A small, bounded, thread-safe map from short strings to short values with a time to live:
 * what the API looks up on every request (API keys, a Voice App's ingest settings) without a
 * database read each time. */
#ifndef CALLHOOK_API_CACHE_H
#define CALLHOOK_API_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#define API_CACHE_KEY_MAX   131
#define API_CACHE_VALUE_MAX 32

struct api_cache;

/* capacity entries at most (when full, everything is dropped: simple and bounded). */
struct api_cache *api_cache_new(size_t capacity, int ttl_ms);
void api_cache_free(struct api_cache *c);

/* Copies the value (len bytes) into value when key is there and fresh. */
bool api_cache_get(struct api_cache *c, const char *key, void *value, size_t len);
void api_cache_put(struct api_cache *c, const char *key, const void *value, size_t len);
void api_cache_clear(struct api_cache *c);

#endif
