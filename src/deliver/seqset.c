/* The engine's set of sequence numbers held in memory (seqset.h). */
#include "deliver/seqset.h"

#include <stdlib.h>

#define SEQ_SET_FIRST_CAP 1024

static size_t seq_hash(int64_t seq, size_t cap)
{
    uint64_t x = (uint64_t)seq * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 17) & (cap - 1);
}

static bool seq_set_grow(struct seq_set *s)
{
    size_t cap = s->cap ? s->cap * 2 : SEQ_SET_FIRST_CAP;
    int64_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return false;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i] == 0)
            continue;
        size_t j = seq_hash(s->slots[i], cap);
        while (slots[j] != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return true;
}

bool seq_set_has(const struct seq_set *s, int64_t seq)
{
    if (s->cap == 0)
        return false;
    for (size_t j = seq_hash(seq, s->cap); s->slots[j] != 0; j = (j + 1) & (s->cap - 1)) {
        if (s->slots[j] == seq)
            return true;
    }
    return false;
}

bool seq_set_add(struct seq_set *s, int64_t seq)
{
    if ((s->count + 1) * 2 > s->cap && !seq_set_grow(s))
        return false;
    size_t j = seq_hash(seq, s->cap);
    while (s->slots[j] != 0) {
        if (s->slots[j] == seq)
            return true;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = seq;
    s->count++;
    return true;
}

void seq_set_remove(struct seq_set *s, int64_t seq)
{
    if (s->cap == 0)
        return;
    size_t j = seq_hash(seq, s->cap);
    while (s->slots[j] != seq) {
        if (s->slots[j] == 0)
            return;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = 0;
    s->count--;
    /* Shift back the entries of the same probe run so lookups still find them. */
    for (size_t k = (j + 1) & (s->cap - 1); s->slots[k] != 0; k = (k + 1) & (s->cap - 1)) {
        int64_t v = s->slots[k];
        size_t home = seq_hash(v, s->cap);
        bool movable = (j <= k) ? (home <= j || home > k) : (home <= j && home > k);
        if (movable) {
            s->slots[j] = v;
            s->slots[k] = 0;
            j = k;
        }
    }
}

size_t seq_set_copy(const struct seq_set *s, int64_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->slots[i] != 0)
            out[n++] = s->slots[i];
    }
    return n;
}

void seq_set_release(struct seq_set *s)
{
    free(s->slots);
    s->slots = NULL;
    s->cap = s->count = 0;
}
