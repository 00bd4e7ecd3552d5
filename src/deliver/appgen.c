/* Generations of a Voice App's settings (appgen.h). */
#include "deliver/appgen.h"

#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Joins the custom headers into "Name: value" lines in one allocation. False when out of
 * memory. */
static bool format_header_lines(struct app_gen *g)
{
    size_t total = 0;
    for (int i = 0; i < g->cfg.nheaders; i++)
        total += strlen(g->cfg.headers[i].name) + strlen(g->cfg.headers[i].value) + 3;
    if (total > 0 && (g->header_lines = malloc(total)) == NULL)
        return false;
    for (int i = 0, o = 0; i < g->cfg.nheaders; i++) {
        g->header_line[i] = g->header_lines + o;
        o += sprintf(g->header_lines + o, "%s: %s", g->cfg.headers[i].name,
                     g->cfg.headers[i].value) +
             1;
    }
    return true;
}

struct app_gen *app_gen_new(const char *id, ch_code rc, const struct stored_app *sa,
                            const struct guard_cidr *allowed, int nallowed)
{
    struct app_gen *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->refs = 1;
    if (rc == CH_ENOTFOUND) {
        g->missing = true;
        return g;
    }
    struct ch_error err = {0};
    if (app_config_parse(&g->cfg, sa->config_json, strlen(sa->config_json), &err) != CH_OK) {
        log_error("engine: stored settings of voice app '%s' are invalid: %s", id, err.message);
        g->missing = true;
        return g;
    }
    g->enabled = sa->enabled && g->cfg.enabled;
    g->rule.allow_private_network = g->cfg.allow_private_network;
    g->rule.allowed = allowed;
    g->rule.nallowed = nallowed;
    if (!format_header_lines(g)) {
        free(g);
        return NULL;
    }
    if (ch_secret_parse(&g->keys[0], sa->secret, &err) == CH_OK)
        g->nkeys = 1;
    else
        log_error("engine: signing secret of voice app '%s' is invalid", id);
    /* The previous secret signs too until its grace period ends (checked at each attempt). */
    if (g->nkeys == 1 && sa->prev_secret[0] &&
        ch_secret_parse(&g->keys[1], sa->prev_secret, &err) == CH_OK) {
        g->nkeys = 2;
        g->prev_expires_at = sa->prev_expires_at;
    }
    ssrf_judge_url(&g->rule, g->cfg.begin_url, g->refused_begin, sizeof g->refused_begin);
    ssrf_judge_url(&g->rule, g->cfg.end_url, g->refused_end, sizeof g->refused_end);
    return g;
}

struct app_gen *app_gen_ref(struct app_gen *g)
{
    g->refs++;
    return g;
}

void app_gen_unref(struct app_gen *g)
{
    if (g == NULL || --g->refs > 0)
        return;
    ch_secret_wipe(&g->keys[0]);
    ch_secret_wipe(&g->keys[1]);
    free(g->header_lines);
    free(g);
}

const char *app_gen_refused(const struct app_gen *g, const char *event)
{
    return strcmp(event, "begin-call") == 0 ? g->refused_begin : g->refused_end;
}
