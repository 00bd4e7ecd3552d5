/* Names for callhook's own threads, so `top -H`, `ps -L` and perf say which is which. */
#ifndef CALLHOOK_UTIL_THREAD_H
#define CALLHOOK_UTIL_THREAD_H

/* Names the calling thread (at most 15 characters are kept). */
void thread_name(const char *name);

#endif
