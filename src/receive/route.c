/* Routing events to handlers (sinks) by event and CallType, every matching route taking the
 * event, with defaults for everything else; which event a request carries, and whether it has
 * the required headers. */
#include "receive/receiver.h"

#include "lib/crypto.h"

#include <stdio.h>
#include <string.h>

static const char *const scheme_names[SCHEME_COUNT] = {"exec", "jsonl", "pipe", "forward",
                                                       "postgres"};

enum handler_scheme handler_scheme_of(const char *text)
{
    for (int i = 0; i < SCHEME_COUNT; i++) {
        size_t n = strlen(scheme_names[i]);
        if (strncmp(text, scheme_names[i], n) == 0 && text[n] == ':')
            return (enum handler_scheme)i;
    }
    return SCHEME_COUNT;
}

static ch_code parse_handler(struct handler *h, const char *text, struct ch_error *err)
{
    memset(h, 0, sizeof *h);
    enum handler_scheme scheme = handler_scheme_of(text);
    if (scheme == SCHEME_COUNT)
        return ch_error_set(err, CH_EINVAL,
                            "route handler '%s': use exec:COMMAND, jsonl:FILE, pipe:COMMAND, "
                            "forward:URL or postgres:DSN",
                            text);
    const char *arg = text + strlen(scheme_names[scheme]) + 1;
    if (*arg == '\0' || strlen(text) >= sizeof h->text)
        return ch_error_set(err, CH_EINVAL, "route handler '%s': empty or too long", text);
    snprintf(h->text, sizeof h->text, "%s", text);
    return CH_OK;
}

ch_code route_parse(struct route *r, const char *text, struct ch_error *err)
{
    memset(r, 0, sizeof *r);
    const char *eq = strchr(text, '=');
    if (eq == NULL)
        return ch_error_set(err, CH_EINVAL,
                            "route '%s': expected SELECTOR=HANDLER, e.g. "
                            "end-call/MissedCall=exec:./missed.sh",
                            text);
    char selector[512];
    if ((size_t)(eq - text) >= sizeof selector)
        return ch_error_set(err, CH_EINVAL, "route '%s': selector too long", text);
    memcpy(selector, text, (size_t)(eq - text));
    selector[eq - text] = '\0';
    char *types = strchr(selector, '/');
    if (types)
        *types++ = '\0';
    if (strcmp(selector, "*") == 0 || selector[0] == '\0')
        r->event[0] = '\0';
    else if (strcmp(selector, "begin-call") == 0 || strcmp(selector, "end-call") == 0)
        snprintf(r->event, sizeof r->event, "%.15s", selector);
    else
        return ch_error_set(err, CH_EINVAL,
                            "route '%s': the event is begin-call, end-call or *, not '%s'", text,
                            selector);
    if (types) {
        char *save = NULL;
        for (char *t = strtok_r(types, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (r->ntypes == RECEIVE_MAX_TYPES)
                return ch_error_set(err, CH_EINVAL, "route '%s': at most %d CallTypes", text,
                                    RECEIVE_MAX_TYPES);
            struct ch_error inner = {0};
            if (ch_call_type_parse(t, &r->types[r->ntypes], &inner) != CH_OK)
                return ch_error_set(err, CH_EINVAL, "route '%s': %s", text, inner.message);
            r->ntypes++;
        }
        if (r->ntypes == 0)
            return ch_error_set(err, CH_EINVAL, "route '%s': no CallType after '/'", text);
    }
    return parse_handler(&r->handler, eq + 1, err);
}

enum ch_call_type_kind route_stored_kind(bool has_call_type, long long call_type)
{
    if (!has_call_type)
        return CH_CALL_TYPE_ABSENT;
    return call_type >= CH_CALL_TYPE_GENERIC_CALL && call_type <= CH_CALL_TYPE_OUTBOUND_CALL
               ? CH_CALL_TYPE_KNOWN
               : CH_CALL_TYPE_UNKNOWN;
}

static bool route_matches(const struct route *r, const char *event, enum ch_call_type_kind kind,
                          long long call_type)
{
    if (r->event[0] && strcmp(r->event, event) != 0)
        return false;
    if (r->ntypes == 0)
        return true;
    for (int t = 0; t < r->ntypes && kind != CH_CALL_TYPE_ABSENT; t++) {
        if (r->types[t] == call_type)
            return true;
    }
    return false;
}

/* Adds name to names[0..*n) unless it is there already or there is no room. */
static void add_once(const char **names, size_t *n, size_t max, const char *name)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(names[i], name) == 0)
            return;
    }
    if (*n < max)
        names[(*n)++] = name;
}

size_t route_sinks(const struct receive_config *c, const char *event, enum ch_call_type_kind kind,
                   long long call_type, const char **names, size_t max)
{
    size_t n = 0;
    bool matched = false;
    for (int i = 0; i < c->nroutes; i++) {
        if (route_matches(&c->routes[i], event, kind, call_type)) {
            matched = true;
            add_once(names, &n, max, c->routes[i].handler.text);
        }
    }
    if (matched)
        return n;
    /* Unknown CallType values, absent ones and everything unrouted take the safe defaults. */
    for (int i = 0; i < SCHEME_COUNT; i++) {
        if (c->defaults[i].text[0])
            add_once(names, &n, max, c->defaults[i].text);
    }
    return n;
}

size_t route_all_sinks(const struct receive_config *c, const char **names, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < c->nroutes; i++)
        add_once(names, &n, max, c->routes[i].handler.text);
    for (int i = 0; i < SCHEME_COUNT; i++) {
        if (c->defaults[i].text[0])
            add_once(names, &n, max, c->defaults[i].text);
    }
    return n;
}

const char *route_event_of(ch_header_cb get_header, void *ctx, const char *path)
{
    const char *h = get_header(ctx, "X-Call-Event");
    if (h && (strcmp(h, "begin-call") == 0 || strcmp(h, "end-call") == 0))
        return h;
    size_t n = strlen(path);
    while (n > 0 && path[n - 1] == '/')
        n--;
    if (n >= 10 && strncmp(path + n - 10, "begin-call", 10) == 0)
        return "begin-call";
    if (n >= 8 && strncmp(path + n - 8, "end-call", 8) == 0)
        return "end-call";
    return NULL;
}

bool route_headers_ok(const struct receive_config *c, ch_header_cb get_header, void *ctx,
                      char *which, size_t cap)
{
    for (int i = 0; i < c->nheaders; i++) {
        const char *v = get_header(ctx, c->headers[i].name);
        size_t want = strlen(c->headers[i].value);
        /* Constant time over the expected value's length; a length mismatch fails too. */
        bool ok = v != NULL && strlen(v) == want && crypto_equal(v, c->headers[i].value, want);
        if (!ok) {
            snprintf(which, cap, "%s", c->headers[i].name);
            return false;
        }
    }
    return true;
}
