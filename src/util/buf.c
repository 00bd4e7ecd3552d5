/* Capped growable buffer. */
#include "util/buf.h"

#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max = max;
}

void buf_release(struct buf *b)
{
    free(b->data);
    buf_init(b, b->max);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

bool buf_too_big(const struct buf *b, size_t adding)
{
    return adding > b->max || b->len > b->max - adding;
}

bool buf_add(struct buf *b, const void *data, size_t len)
{
    if (buf_too_big(b, len))
        return false;
    size_t need = b->len + len + 1;
    if (need > b->alloc) {
        size_t alloc = b->alloc ? b->alloc : 256;
        while (alloc < need)
            alloc = (alloc > ((size_t)-1) / 2) ? need : alloc * 2;
        if (alloc > b->max + 1)
            alloc = b->max + 1;
        char *p = realloc(b->data, alloc);
        if (p == NULL)
            return false;
        b->data = p;
        b->alloc = alloc;
    }
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return true;
}
