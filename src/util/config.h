/* Settings as data, shared by serve and receive: one table per command (name, environment
 * variable, type, field, bounds, default, help) drives the defaults, the "name = value" config
 * file, the environment, the flags and --help, as redis's config.c does with standardConfig. */
#ifndef CALLHOOK_UTIL_CONFIG_H
#define CALLHOOK_UTIL_CONFIG_H

#include <callhook/error.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Most settings one table may hold (the CLI builds its getopt options on the stack). */
#define CONFIG_MAX_SETTINGS 48

enum config_type {
    CONFIG_INT,    /* int, within [min, max] */
    CONFIG_LLONG,  /* long long, within [min, max] */
    CONFIG_SIZE,   /* size_t, within [min, max] */
    CONFIG_STRING, /* char[size]: a value of size bytes or more is refused */
    CONFIG_BOOL,   /* bool: true/yes/on/1 or false/no/off/0, else an error; a flag takes no value */
    CONFIG_CUSTOM, /* the setting's own setter: lists (each value adds) and special values */
};

/* A custom setter: applies value to the command's config struct cfg. name is the setting's,
 * for messages ("route: at most 32"). CH_EINVAL with a message naming the setting. */
typedef ch_code (*config_custom_cb)(void *cfg, const char *name, const char *value,
                                    struct ch_error *err);

/* One setting of a command. Fill type, offset and size with CONFIG_FIELD(), which takes the
 * type from the field's own (a field of the wrong type does not compile). */
struct config_setting {
    const char *name; /* the flag (--name) and the config file key */
    const char *env;  /* environment variable; "" for none */
    enum config_type type;
    size_t offset, size; /* of the field in the config struct; unused by CONFIG_CUSTOM */
    long long min, max;  /* integer bounds */
    const char *def;     /* default as text, parsed like any value ("" for none); --help shows it */
    const char *help;
    config_custom_cb set; /* CONFIG_CUSTOM only */
    /* Set on a list whose values given as flags replace those from the file and the
     * environment: called before the first such flag (once per function, so two settings
     * that fill one list clear it once). */
    void (*flag_reset)(void *cfg);
};

#define CONFIG_FIELD(st, field) \
    .type = _Generic(((st *)0)->field,                                                             \
        int: CONFIG_INT,                                                                           \
        long long: CONFIG_LLONG,                                                                   \
        size_t: CONFIG_SIZE,                                                                       \
        bool: CONFIG_BOOL,                                                                         \
        char *: CONFIG_STRING),                                                                    \
    .offset = offsetof(st, field), .size = sizeof(((st *)0)->field)

/* A command's table. */
struct config_table {
    const char *command; /* "serve": errors say "see callhook serve --help" */
    size_t size;         /* of the command's config struct */
    const struct config_setting *settings;
    size_t n;
};

/* The setting called name; NULL when there is none. */
const struct config_setting *config_find(const struct config_table *t, const char *name);

/* Applies every setting's default to cfg (which the caller zeroed). An error is a bug in the
 * table: a default its own type or bounds refuse (test_config runs this on every table). */
ch_code config_defaults(const struct config_table *t, void *cfg, struct ch_error *err);

/* Zeroes cfg (t->size bytes) and fills in the defaults. */
void config_init(const struct config_table *t, void *cfg);

/* Applies one value to one setting: bounds and lengths checked; lists add. CH_EINVAL with
 * "NAME: ..." when the value is wrong. */
ch_code config_apply(const struct config_setting *s, void *cfg, const char *value,
                     struct ch_error *err);

/* Applies one setting by name; an unknown name is CH_EINVAL, "unknown setting 'x' (see
 * callhook COMMAND --help)". */
ch_code config_set(const struct config_table *t, void *cfg, const char *name, const char *value,
                   struct ch_error *err);

/* The flags of one command line, applied in order after the file and the environment: zero
 * one per command line. */
struct config_flags {
    void (*reset_done[CONFIG_MAX_SETTINGS])(void *cfg);
    size_t nreset;
};

/* Applies one flag like config_set, first calling the setting's flag_reset if this command
 * line has not called it yet. */
ch_code config_set_flag(const struct config_table *t, struct config_flags *f, void *cfg,
                        const char *name, const char *value, struct ch_error *err);

/* Reads "name = value" lines (# comments) from a file; an error names the file and line. */
ch_code config_load_file(const struct config_table *t, void *cfg, const char *path,
                         struct ch_error *err);

/* Applies each setting whose environment variable is set and not empty; an error names the
 * variable. */
ch_code config_load_env(const struct config_table *t, void *cfg, struct ch_error *err);

/* Prints the settings for --help: flag, environment variable, default, bounds, what it does. */
void config_print_help(const struct config_table *t, FILE *out);

/* Strips spaces, tabs and line ends from both ends, in place; returns the start. */
char *config_trim(char *s);

#endif
