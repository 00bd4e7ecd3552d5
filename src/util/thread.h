/* What callhook's daemons do alike with their threads: name them, so `top -H`, `ps -L` and perf
 * say which is which, and keep stop signals for the main thread to take. */
#ifndef CALLHOOK_UTIL_THREAD_H
#define CALLHOOK_UTIL_THREAD_H

#include <signal.h>

/* Names the calling thread (at most 15 characters are kept). */
void thread_name(const char *name);

/* Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it starts after) and
 * ignores SIGPIPE: a daemon's main thread then takes its stop signal with sigtimedwait(set). */
void thread_block_stop_signals(sigset_t *set);

#endif
