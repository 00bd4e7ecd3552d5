/* A growable byte buffer with a hard cap (curl's dynbuf): every body and response read into
 * memory goes through one, so no input can make callhook allocate without bound. */
#ifndef CALLHOOK_UTIL_BUF_H
#define CALLHOOK_UTIL_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
    char *data; /* owned; always NUL-terminated when not NULL */
    size_t len;
    size_t alloc;
    size_t max; /* the most len may ever be */
};

/* Sets up an empty buffer that will refuse to grow past max bytes. Allocates nothing. */
void buf_init(struct buf *b, size_t max);

/* Frees the memory and leaves the buffer empty and reusable. */
void buf_release(struct buf *b);

/* Empties the buffer, keeping its memory. */
void buf_reset(struct buf *b);

/* Appends len bytes. Returns false, leaving the buffer as it was, when the cap would be passed
 * (buf_too_big() with the same len then says so) or memory runs out. */
bool buf_add(struct buf *b, const void *data, size_t len);

/* True when adding `adding` more bytes would pass the cap. It remembers nothing: asked with
 * the length a buf_add just failed on, it tells the cap from a lack of memory. */
bool buf_too_big(const struct buf *b, size_t adding);

#endif
