/* "name = value" configuration files (# comments), shared by serve and receive: each line
 * goes to the caller's setter, and an error names the file and line. */
#ifndef CALLHOOK_UTIL_CONFIG_H
#define CALLHOOK_UTIL_CONFIG_H

#include <callhook/error.h>

#include <stddef.h>

typedef ch_code (*config_set_cb)(void *ctx, const char *name, const char *value,
                                 struct ch_error *err);

ch_code config_load_file(const char *path, config_set_cb set, void *ctx, struct ch_error *err);

/* One setting of a command: its name (flag and file key), environment variable ("" for none),
 * default and help. A command keeps one table of them for --help, the file, the environment
 * and the flags. */
struct config_setting {
    const char *name, *env, *def, *help;
};

/* Each setting whose environment variable is set and not empty goes to the setter; an error
 * names the variable. */
ch_code config_load_env(const struct config_setting *settings, size_t n, config_set_cb set,
                        void *ctx, struct ch_error *err);

/* Strips spaces, tabs and line ends from both ends, in place; returns the start. */
char *config_trim(char *s);

#endif
