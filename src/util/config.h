/* "name = value" configuration files (# comments), shared by serve and receive: each line
 * goes to the caller's setter, and an error names the file and line. */
#ifndef CALLHOOK_UTIL_CONFIG_H
#define CALLHOOK_UTIL_CONFIG_H

#include <callhook/error.h>

typedef ch_code (*config_set_cb)(void *ctx, const char *name, const char *value,
                                 struct ch_error *err);

ch_code config_load_file(const char *path, config_set_cb set, void *ctx, struct ch_error *err);

/* Strips spaces, tabs and line ends from both ends, in place; returns the start. */
char *config_trim(char *s);

#endif
