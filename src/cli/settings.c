/* The settings of serve, purge and receive from the command line: getopt options made from
 * the command's table, then --config FILE, the environment and the flags, in that order. */
#include "cli/cli.h"

#include "util/config.h"

#include <getopt.h>
#include <stdio.h>

int cli_settings_parse(const char *cmd, const struct config_table *t, void *cfg, int argc,
                       char **argv, void (*help)(void), bool *helped)
{
    struct option options[CONFIG_MAX_SETTINGS + 3];
    *helped = false;
    if (t->n > CONFIG_MAX_SETTINGS)
        return cli_usage_error(cmd, "more than %d settings", CONFIG_MAX_SETTINGS);
    for (size_t i = 0; i < t->n; i++) {
        bool is_bool = t->settings[i].type == CONFIG_BOOL;
        options[i] = (struct option){t->settings[i].name, is_bool ? no_argument : required_argument,
                                     NULL, 0};
    }
    options[t->n] = (struct option){"config", required_argument, NULL, 'c'};
    options[t->n + 1] = (struct option){"help", no_argument, NULL, 'h'};
    options[t->n + 2] = (struct option){NULL, 0, NULL, 0};

    struct ch_error err = {0};
    /* First pass: the config file only, so flags given in any order still win over it. */
    int c, idx;
    optind = 1;
    while ((c = cli_getopt(cmd, argc, argv, "", options, &idx)) != -1) {
        if (c == 'h') {
            help();
            *helped = true;
            return CLI_OK;
        }
        if (c == '?')
            return CLI_USAGE;
        if (c == 'c' && config_load_file(t, cfg, optarg, &err) != CH_OK) {
            fprintf(stderr, "callhook %s: %s\n", cmd, err.message);
            return CLI_USAGE;
        }
    }
    if (optind < argc)
        return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (config_load_env(t, cfg, &err) != CH_OK) {
        fprintf(stderr, "callhook %s: %s\n", cmd, err.message);
        return CLI_USAGE;
    }
    struct config_flags flags = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", options, &idx)) != -1) {
        if (c != 0)
            continue;
        const char *value = t->settings[idx].type == CONFIG_BOOL ? "true" : optarg;
        if (config_set_flag(t, &flags, cfg, options[idx].name, value, &err) != CH_OK) {
            fprintf(stderr, "callhook %s: --%s\n", cmd, err.message);
            return CLI_USAGE;
        }
    }
    return CLI_OK;
}
