/* The two clocks: monotonic for timers, leases held in memory and durations; the wall clock
 * only for timestamps that are stored or sent (a clock step must not shorten a timer). */
#ifndef CALLHOOK_UTIL_CLOCK_H
#define CALLHOOK_UTIL_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC: only differences mean anything. */
int64_t clock_mono_ms(void);

/* Milliseconds and seconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_wall_ms(void);
int64_t clock_wall_s(void);

#endif
