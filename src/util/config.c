/* Configuration files: one setting per line. */
#include "util/config.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

char *config_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

ch_code config_load_file(const char *path, config_set_cb set, void *ctx, struct ch_error *err)
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
        if (set(ctx, config_trim(s), config_trim(eq + 1), &inner) != CH_OK)
            rc = ch_error_set(err, CH_EINVAL, "%s:%d: %s", path, lineno, inner.message);
    }
    fclose(f);
    return rc;
}

ch_code config_load_env(const struct config_setting *settings, size_t n, config_set_cb set,
                        void *ctx, struct ch_error *err)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = settings[i].env[0] ? getenv(settings[i].env) : NULL;
        struct ch_error inner = {0};
        if (v && *v && set(ctx, settings[i].name, v, &inner) != CH_OK)
            return ch_error_set(err, CH_EINVAL, "%s: %s", settings[i].env, inner.message);
    }
    return CH_OK;
}
