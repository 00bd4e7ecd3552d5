/* What every handler process the receiver starts shares (the exec: and pipe: sinks): which of
 * the receiver's variables it gets, and the descriptors it must not inherit. */
#ifndef CALLHOOK_RECEIVE_CHILD_H
#define CALLHOOK_RECEIVE_CHILD_H

#include "receive/receiver.h"

#include <stdbool.h>

/* Whether the receiver's variable entry ("NAME=value") goes to handlers: an allow-list, so
 * that the receiver's secrets (its settings, or a WEBHOOK_SECRET read by --secret env:) never
 * do. PATH, HOME and the locale (LANG, LC_*), and the names given (--handler-env): nnames
 * strings of RECEIVE_ENV_NAME_MAX bytes each from names (receive_config.handler_env[0]). */
bool child_env_passed_on(const char *entry, const char *names, int nnames);

/* The highest descriptor a process may hold, read before fork: the child may only make
 * async-signal-safe calls. */
int child_max_fd(void);

/* In the child, before exec: every descriptor but stdin, stdout and stderr is closed,
 * including what the receiver inherited from its own parent without close-on-exec. */
void child_close_from_3(int limit);

#endif
