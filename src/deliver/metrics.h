/* Counters the engine and the API bump and /metrics prints. Lock-free: C11 atomics. */
#ifndef CALLHOOK_DELIVER_METRICS_H
#define CALLHOOK_DELIVER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

/* Failure classes of an attempt, in the order /metrics lists them. */
#define METRICS_FAILURE_CLASSES(X) X(http) X(timeout) X(connect) X(tls) X(refused) X(other)

enum failure_class {
#define METRICS_FC_ENUM(name) FAILURE_##name,
    METRICS_FAILURE_CLASSES(METRICS_FC_ENUM)
#undef METRICS_FC_ENUM
        FAILURE_COUNT_
};

/* Upper bounds, in milliseconds, of the delivery latency histogram's buckets. */
#define METRICS_LATENCY_BUCKETS_MS                                   \
    {                                                                \
        5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 \
    }
#define METRICS_NBUCKETS 12

struct metrics {
    atomic_int_fast64_t ingested;
    atomic_int_fast64_t duplicates;
    atomic_int_fast64_t delivered;
    atomic_int_fast64_t dead;
    atomic_int_fast64_t failed[FAILURE_COUNT_];
    atomic_int_fast64_t in_flight;
    atomic_int_fast64_t queued;       /* in the engine's memory, waiting for a connection slot */
    atomic_int_fast64_t queued_bytes; /* their records and bookkeeping */
    /* Ingest to 2xx, for first-attempt deliveries and retries alike. */
    atomic_int_fast64_t latency_bucket[METRICS_NBUCKETS + 1];
    atomic_int_fast64_t latency_sum_ms;
    atomic_int_fast64_t latency_count;
    /* The per-app rate limit: how long deliveries of rate-limited apps waited in the queue
     * (sum and count), and how many groups of them were put back in the store to wait there. */
    atomic_int_fast64_t rate_wait_ms;
    atomic_int_fast64_t rate_waits;
    atomic_int_fast64_t rate_deferred;
};

const char *failure_class_name(enum failure_class c);

#endif
