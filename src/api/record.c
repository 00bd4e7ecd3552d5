/*
 * What the console shows of one message beyond GET /v1/messages/{id}: its call record, masked
 * by the rules the log uses (util/mask.c) unless an admin key asks to reveal it, and the
 * request headers each attempt sent, rebuilt from what the attempt kept.
 */
#include "api/console.h"

#include "deliver/app.h"
#include "util/log.h"
#include "util/mask.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_MASK "********" /* a header value as keys other than admin see it */

/* ---- the record ---- */

/* Masks a string value in place. A JSON string may hold "\u0000": each run between NULs is
 * masked on its own, and the NULs kept. Masking never lengthens a run, and shortens it only by
 * whole characters, so the value stays UTF-8. */
static void mask_string(json_t *v, const char *key)
{
    size_t len = json_string_length(v);
    const char *in = json_string_value(v);
    char *out = malloc(len + 1);
    if (out == NULL) {
        json_string_set(v, HEADER_MASK); /* nothing shown rather than the whole value */
        return;
    }
    size_t o = 0;
    for (size_t i = 0; i <= len;) {
        size_t run = strnlen(in + i, len - i);
        memcpy(out + o, in + i, run);
        out[o + run] = '\0';
        mask_personal(out + o, key);
        o += strlen(out + o);
        i += run + 1;
        if (i <= len)
            out[o++] = '\0';
    }
    if (json_string_setn(v, out, o) != 0)
        json_string_set(v, HEADER_MASK);
    free(out);
}

/* The masked form of v, a value of the field key (NULL at the top): v itself changed in place,
 * or a new value that replaces it (a number of a field that names a phone number or a name
 * becomes a masked string). Returns a new reference. */
static json_t *masked(json_t *v, const char *key)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *child;
        void *tmp;
        json_object_foreach_safe(v, tmp, k, child)
        {
            json_object_set_new(v, k, masked(child, k));
        }
        return json_incref(v);
    }
    case JSON_ARRAY:
        /* An array's items are values of the field that holds it. */
        for (size_t i = 0; i < json_array_size(v); i++)
            json_array_set_new(v, i, masked(json_array_get(v, i), key));
        return json_incref(v);
    case JSON_STRING:
        mask_string(v, key);
        return json_incref(v);
    case JSON_INTEGER:
    case JSON_REAL:
        if (mask_field_of(key) != MASK_FIELD_ANY) {
            char text[64];
            if (json_is_integer(v))
                snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            else
                snprintf(text, sizeof text, "%.17g", json_real_value(v));
            mask_personal(text, key);
            return json_string(text);
        }
        return json_incref(v);
    default:
        return json_incref(v);
    }
}

/* Bytes that are not JSON (a record cannot be, unless the database was changed) as a JSON
 * string: invalid UTF-8 bytes become '?', then the text is masked unless revealed. */
static json_t *record_text(const char *body, size_t len, bool reveal)
{
    char *text = malloc(len + 1);
    if (text == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)body[i];
        size_t n = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        bool ok = n > 0 && i + n <= len && c != 0;
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)body[i + k] & 0xC0) == 0x80;
        if (!ok) {
            text[o++] = '?';
            i++;
            continue;
        }
        memcpy(text + o, body + i, n);
        o += n;
        i += n;
    }
    text[o] = '\0';
    if (!reveal)
        mask_personal(text, NULL);
    json_t *v = json_string(text);
    free(text);
    return v;
}

void api_message_record(struct api_request *r, const char *msg_id)
{
    const char *reveal_text = http_query(r->http, "reveal");
    bool reveal = false;
    if (reveal_text) {
        if (strcmp(reveal_text, "true") == 0 || strcmp(reveal_text, "1") == 0)
            reveal = true;
        else if (strcmp(reveal_text, "false") != 0 && strcmp(reveal_text, "0") != 0) {
            http_respond_error(r->http, 400, "invalid_query", "reveal: true or false, not '%.64s'",
                               reveal_text);
            return;
        }
    }
    if (reveal && r->role != ROLE_ADMIN) {
        http_respond_error(r->http, 403, "forbidden",
                           "this key's role (%s) sees records masked; revealing one takes an "
                           "admin key",
                           key_role_name(r->role));
        return;
    }
    struct stored_body b;
    struct ch_error err = {0};
    ch_code rc = store_message_body(r->ctx->store, msg_id, &b, &err);
    if (rc == CH_ENOTFOUND) {
        http_respond_error(r->http, 404, "not_found", "%s", err.message);
        return;
    }
    if (rc != CH_OK) {
        log_warn("api: store error on %s %s: %s", r->http->method, r->http->path, err.message);
        snprintf(r->http->retry_after, sizeof r->http->retry_after, "1");
        http_respond_error(r->http, 503, "unavailable", "the store is unavailable; try again");
        return;
    }
    if (b.body_len == 0) {
        free(b.body);
        http_respond_error(r->http, 409, "conflict",
                           "the record of message '%s' was removed by retention (or the message "
                           "was stored without one)",
                           msg_id);
        return;
    }
    json_t *v = json_loadb(b.body, b.body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (v != NULL && !reveal) {
        json_t *m = masked(v, NULL);
        json_decref(v);
        v = m;
    } else if (v == NULL) {
        v = record_text(b.body, b.body_len, reveal);
    }
    free(b.body);
    if (v == NULL) {
        http_respond_error(r->http, 500, "internal", "out of memory");
        return;
    }
    if (reveal)
        log_info("api: the record of message '%s' was shown unmasked to an admin key", msg_id);
    json_t *out = json_pack("{s:o, s:b}", "record", v, "masked", !reveal);
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    http_respond_json(r->http, 200, text);
}

/* ---- the request headers of an attempt ---- */

json_t *api_request_headers(const struct attempt_view *a, const struct message_view *m,
                            const struct stored_app *app, bool full)
{
    if (a->signed_at == 0)
        return json_null();
    json_t *h = json_object();
    if (h == NULL)
        return json_null();
    char ts[24], sig[STORE_SIGNATURE_SHORT_MAX * 2];
    snprintf(ts, sizeof ts, "%lld", (long long)a->signed_at);
    /* Each entry as it was cut for the store, marked as cut. */
    size_t o = 0;
    sig[0] = '\0';
    for (const char *p = a->signature; *p && o + 8 < sizeof sig;) {
        size_t len = strcspn(p, " ");
        o += (size_t)snprintf(sig + o, sizeof sig - o, "%s%.*s\xe2\x80\xa6", o ? " " : "", (int)len,
                              p);
        p += len;
        while (*p == ' ')
            p++;
    }
    json_object_set_new(h, "Content-Type", json_string("application/json"));
    json_object_set_new(h, "User-Agent", json_string("callhook/" CALLHOOK_VERSION));
    json_object_set_new(h, "webhook-id", json_string(m->msg_id));
    json_object_set_new(h, "webhook-timestamp", json_string(ts));
    json_object_set_new(h, "webhook-signature", json_string(sig));
    json_object_set_new(h, "X-Call-Event", json_string(m->event));
    struct app_config *cfg = app ? malloc(sizeof *cfg) : NULL;
    if (cfg && app_config_parse(cfg, app->config_json, strlen(app->config_json), NULL) == CH_OK) {
        for (int i = 0; i < cfg->nheaders; i++) {
            json_t *value = json_string(full ? cfg->headers[i].value : HEADER_MASK);
            json_object_set_new(h, cfg->headers[i].name, value ? value : json_null());
        }
    }
    free(cfg);
    return h;
}
