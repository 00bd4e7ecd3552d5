/* The two clocks: monotonic for timers, leases held in memory and durations; the wall clock
 * only for timestamps that are stored or sent (a clock step must not shorten a timer). */
#ifndef CALLHOOK_UTIL_CLOCK_H
#define CALLHOOK_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC: only differences mean anything. */
int64_t clock_mono_ms(void);

/* Milliseconds and seconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_wall_ms(void);
int64_t clock_wall_s(void);

/* A time in milliseconds (of clock_mono_ms(), for a condition variable set to CLOCK_MONOTONIC)
 * as the struct timespec pthread_cond_timedwait() takes. */
struct timespec clock_timespec(int64_t ms);

#endif
