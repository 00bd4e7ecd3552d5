/* Routing events to handlers by event and CallType, with a default for everything else; which
 * event a request carries, and whether it has the required headers. */
#include "receive/receiver.h"

#include "lib/crypto.h"

#include <stdio.h>
#include <string.h>

static ch_code parse_handler(struct handler *h, const char *text, struct ch_error *err)
{
    memset(h, 0, sizeof *h);
    const char *arg;
    if (strncmp(text, "exec:", 5) == 0) {
        h->kind = HANDLER_EXEC;
        arg = text + 5;
    } else if (strncmp(text, "jsonl:", 6) == 0) {
        h->kind = HANDLER_JSONL;
        arg = text + 6;
    } else {
        return ch_error_set(err, CH_EINVAL, "route handler '%s': use exec:COMMAND or jsonl:FILE",
                            text);
    }
    if (*arg == '\0' || strlen(arg) >= sizeof h->target)
        return ch_error_set(err, CH_EINVAL, "route handler '%s': empty or too long", text);
    snprintf(h->target, sizeof h->target, "%s", arg);
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

const struct handler *route_pick(const struct receive_config *c, const char *event,
                                 enum ch_call_type_kind kind, long long call_type)
{
    for (int i = 0; i < c->nroutes; i++) {
        const struct route *r = &c->routes[i];
        if (r->event[0] && strcmp(r->event, event) != 0)
            continue;
        if (r->ntypes > 0) {
            bool hit = false;
            for (int t = 0; t < r->ntypes && kind != CH_CALL_TYPE_ABSENT; t++)
                hit |= r->types[t] == call_type;
            if (!hit)
                continue;
        }
        return &r->handler;
    }
    /* Unknown CallType values, absent ones and everything unrouted take the safe default. */
    return &c->fallback;
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
