/* Logging to stderr, one line per event: time, level, message. Never given bodies or secrets:
 * callers log ids and counts. */
#ifndef CALLHOOK_UTIL_LOG_H
#define CALLHOOK_UTIL_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Lines below this level are dropped. Default LOG_INFO; CALLHOOK_LOG=debug|info|warn|error. */
void log_set_level(enum log_level level);
void log_init_from_env(void);

/* Masks phone numbers and e-mail addresses in s, in place (log_msg does it to every line):
 * mask_personal(s, NULL) of util/mask.h, the rules the API masks call records with. */
void log_mask_personal(char *s);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
