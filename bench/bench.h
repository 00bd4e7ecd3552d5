/*
 * What the benchmark tools share: the call record they send (one line of JSON shaped like
 * tests/data/payloads/end-call-answered.json, about 1.3 KB, with a unique ActiveCallId and the
 * bench's own sequence number and send time), a monotonic clock, and percentiles.
 */
#ifndef CALLHOOK_BENCH_H
#define CALLHOOK_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Room for any record bench_payload() writes, NUL included. */
#define BENCH_PAYLOAD_MAX 2048
/* Room for a call id from bench_call_id(), NUL included. */
#define BENCH_CALL_ID_MAX 40

/* CLOCK_MONOTONIC in microseconds: the same clock in every process on this machine. */
int64_t bench_now_us(void);

/* A UUID-shaped ActiveCallId unique per (run, seq). Returns its length. */
size_t bench_call_id(char *out, size_t cap, uint32_t run, uint64_t seq);

/*
 * Writes the record for call_id into out (at least BENCH_PAYLOAD_MAX bytes), carrying
 * "BenchSeq": seq and "BenchSentUs": sent_us (bench_now_us() at the ingest request; 0 when not
 * measured). Returns its length.
 */
size_t bench_payload(char *out, size_t cap, const char *call_id, uint64_t seq, int64_t sent_us);

/* Reads the integer after "name": in a record, or -1 when it is not there. */
int64_t bench_field(const char *body, size_t len, const char *name);

/* Sorts samples in place and returns the p-th percentile (0..100), nearest rank; 0 if n is 0. */
uint32_t bench_percentile(uint32_t *samples, size_t n, double p);

/* The p-th percentile of samples already sorted. */
uint32_t bench_percentile_sorted(const uint32_t *samples, size_t n, double p);

#endif
