/* The service manager's readiness protocol (sd_notify(3)), written by hand rather than linking
 * libsystemd for one datagram: "READY=1", "STOPPING=1"... sent to the AF_UNIX datagram socket
 * that $NOTIFY_SOCKET names (a path, or "@name" for an abstract one). Without the variable
 * nothing is sent, so the daemons run the same under systemd and outside it. */
#ifndef CALLHOOK_UTIL_NOTIFY_H
#define CALLHOOK_UTIL_NOTIFY_H

#include <callhook/error.h>

/* Longest state sent: systemd reads a datagram of up to its page size. */
#define NOTIFY_STATE_MAX 1024

/* Sends state (newline-separated VAR=VALUE assignments) to $NOTIFY_SOCKET. CH_OK when it was
 * sent, or when the variable is unset or empty; CH_EINVAL for an address that is neither a
 * path nor an abstract name, or a state longer than NOTIFY_STATE_MAX; CH_EIO when it cannot
 * be sent. Waits at most 5 s for a full socket. Thread-safe. */
ch_code notify_send(const char *state, struct ch_error *err);

/* notify_send(), a failure logged as a warning: a lost READY=1 is the service manager's start
 * timeout to handle, not a reason to stop. */
void notify_state(const char *state);

/* "RELOADING=1" with MONOTONIC_USEC, as systemd asks before a reload; READY=1 ends it. */
void notify_reloading(void);

#endif
