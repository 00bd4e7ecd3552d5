/* Settings from a command's table: defaults, config file, environment, flags and --help, one
 * parser for every source and every command. */
#include "util/config.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *config_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

const struct config_setting *config_find(const struct config_table *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->settings[i].name, name) == 0)
            return &t->settings[i];
    }
    return NULL;
}

/* A whole decimal number within [min, max]. */
static bool parse_ll(const char *value, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* The spellings of a boolean that config files and variables commonly use; anything else is
 * refused rather than read as false. */
static bool parse_bool(const char *value, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(value, yes[i]) == 0)
            return *out = true, true;
        if (strcasecmp(value, no[i]) == 0)
            return *out = false, true;
    }
    return false;
}

ch_code config_apply(const struct config_setting *s, void *cfg, const char *value,
                     struct ch_error *err)
{
    char *field = (char *)cfg + s->offset;
    long long v = 0;
    switch (s->type) {
    case CONFIG_INT:
    case CONFIG_LLONG:
    case CONFIG_SIZE:
        if (!parse_ll(value, s->min, s->max, &v))
            return ch_error_set(err, CH_EINVAL, "%s: %lld to %lld, not '%s'", s->name, s->min,
                                s->max, value);
        if (s->type == CONFIG_INT) {
            int i = (int)v;
            memcpy(field, &i, sizeof i);
        } else if (s->type == CONFIG_LLONG) {
            memcpy(field, &v, sizeof v);
        } else {
            size_t z = (size_t)v;
            memcpy(field, &z, sizeof z);
        }
        return CH_OK;
    case CONFIG_STRING:
        if (strlen(value) >= s->size)
            return ch_error_set(err, CH_EINVAL, "%s: too long", s->name);
        memcpy(field, value, strlen(value) + 1);
        return CH_OK;
    case CONFIG_BOOL: {
        bool b;
        if (!parse_bool(value, &b))
            return ch_error_set(err, CH_EINVAL,
                                "%s: true, false, yes, no, on, off, 1 or 0, not '%s'", s->name,
                                value);
        memcpy(field, &b, sizeof b);
        return CH_OK;
    }
    case CONFIG_CUSTOM:
        return s->set(cfg, s->name, value, err);
    }
    return ch_error_set(err, CH_EINVAL, "%s: no such type of setting", s->name);
}

ch_code config_defaults(const struct config_table *t, void *cfg, struct ch_error *err)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct config_setting *s = &t->settings[i];
        ch_code rc = s->def[0] ? config_apply(s, cfg, s->def, err) : CH_OK;
        if (rc != CH_OK)
            return rc;
    }
    return CH_OK;
}

void config_init(const struct config_table *t, void *cfg)
{
    memset(cfg, 0, t->size);
    ch_code rc = config_defaults(t, cfg, NULL);
    assert(rc == CH_OK); /* an impossible state: test_config applies every table's defaults */
    (void)rc;
}

ch_code config_set(const struct config_table *t, void *cfg, const char *name, const char *value,
                   struct ch_error *err)
{
    const struct config_setting *s = config_find(t, name);
    if (s == NULL)
        return ch_error_set(err, CH_EINVAL, "unknown setting '%s' (see callhook %s --help)", name,
                            t->command);
    return config_apply(s, cfg, value, err);
}

ch_code config_set_flag(const struct config_table *t, struct config_flags *f, void *cfg,
                        const char *name, const char *value, struct ch_error *err)
{
    const struct config_setting *s = config_find(t, name);
    if (s != NULL && s->flag_reset != NULL) {
        bool done = false;
        for (size_t i = 0; i < f->nreset; i++)
            done = done || f->reset_done[i] == s->flag_reset;
        if (!done && f->nreset < CONFIG_MAX_SETTINGS) {
            s->flag_reset(cfg);
            f->reset_done[f->nreset++] = s->flag_reset;
        }
    }
    return config_set(t, cfg, name, value, err);
}

ch_code config_load_file(const struct config_table *t, void *cfg, const char *path,
                         struct ch_error *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return ch_error_set(err, CH_EIO, "cannot open config '%s': %s", path, strerror(errno));
    char line[4400];
    int lineno = 0;
    ch_code rc = CH_OK;
    while (rc == CH_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = config_trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            rc = ch_error_set(err, CH_EINVAL, "%s:%d: expected 'name = value'", path, lineno);
            break;
        }
        *eq = '\0';
        struct ch_error inner = {0};
        if (config_set(t, cfg, config_trim(s), config_trim(eq + 1), &inner) != CH_OK)
            rc = ch_error_set(err, CH_EINVAL, "%s:%d: %s", path, lineno, inner.message);
    }
    fclose(f);
    return rc;
}

ch_code config_load_env(const struct config_table *t, void *cfg, struct ch_error *err)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct config_setting *s = &t->settings[i];
        const char *v = s->env[0] ? getenv(s->env) : NULL;
        struct ch_error inner = {0};
        if (v && *v && config_apply(s, cfg, v, &inner) != CH_OK)
            return ch_error_set(err, CH_EINVAL, "%s: %s", s->env, inner.message);
    }
    return CH_OK;
}

/* What a setting's line in a config file looks like: "lease-s = N". */
static void file_form(const struct config_setting *s, char *out, size_t cap)
{
    const char *value = s->type == CONFIG_BOOL     ? "yes|no"
                        : s->type == CONFIG_STRING ? "TEXT"
                        : s->type == CONFIG_CUSTOM ? "VALUE"
                                                   : "N";
    snprintf(out, cap, "%s = %s", s->name, value);
}

void config_print_help(const struct config_table *t, FILE *out)
{
    int name_w = 0, file_w = 0, env_w = 0;
    for (size_t i = 0; i < t->n; i++) {
        char file[96];
        file_form(&t->settings[i], file, sizeof file);
        int n = (int)strlen(t->settings[i].name) + 2, e = (int)strlen(t->settings[i].env);
        int k = (int)strlen(file);
        name_w = n > name_w ? n : name_w;
        file_w = k > file_w ? k : file_w;
        env_w = e > env_w ? e : env_w;
    }
    fprintf(out, "settings (flag, config file line, environment variable, default):\n");
    for (size_t i = 0; i < t->n; i++) {
        const struct config_setting *s = &t->settings[i];
        char flag[64], file[96], def[160];
        snprintf(flag, sizeof flag, "--%s", s->name);
        file_form(s, file, sizeof file);
        if (s->type == CONFIG_INT || s->type == CONFIG_LLONG || s->type == CONFIG_SIZE)
            snprintf(def, sizeof def, "%s (%lld to %lld)", s->def, s->min, s->max);
        else
            snprintf(def, sizeof def, "%s", s->def);
        const char *env = s->env[0] ? s->env : "-";
        if (def[0])
            fprintf(out, "  %-*s %-*s %-*s %s\n", name_w, flag, file_w, file, env_w, env, def);
        else
            fprintf(out, "  %-*s %-*s %s\n", name_w, flag, file_w, file, env);
        fprintf(out, "  %-*s %s\n", name_w, "", s->help);
    }
}
