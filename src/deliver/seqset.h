/* A set of message sequence numbers: the engine keeps one of every message it holds in memory,
 * so that a message claimed again after its lease ran out is noticed and not sent twice. Open
 * addressing with linear probing; deletion by backward shift, so no tombstones accumulate. */
#ifndef CALLHOOK_DELIVER_SEQSET_H
#define CALLHOOK_DELIVER_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Zero-initialised, it is an empty set. Caller-owned; seq_set_release() frees the slots. Not
 * thread-safe: one thread uses it. */
struct seq_set {
    int64_t *slots; /* owned; 0 is empty: sequence numbers start at 1 */
    size_t cap;     /* a power of two, or 0 before the first add */
    size_t count;
};

/* Adds seq (>= 1); adding one already there is a no-op. Grows at half full. False when out of
 * memory (the set is then unchanged). */
bool seq_set_add(struct seq_set *s, int64_t seq);

/* True when seq is in the set. */
bool seq_set_has(const struct seq_set *s, int64_t seq);

/* Removes seq; removing one not there is a no-op. */
void seq_set_remove(struct seq_set *s, int64_t seq);

/* Writes every member, in no particular order, to out (room for s->count); returns how many. */
size_t seq_set_copy(const struct seq_set *s, int64_t *out);

/* Frees the slots; the set is empty again and may be reused. */
void seq_set_release(struct seq_set *s);

#endif
