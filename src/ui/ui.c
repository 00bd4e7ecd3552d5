/*
 * The console's files over HTTP: a lookup in the embedded table and the headers that keep the
 * page safe. Every answer under /ui carries the same security headers, errors included.
 */
#include "ui/ui.h"

#include <string.h>

#define PREFIX "/ui"

/* No inline script or style, nothing from another origin, no forms posted, no framing: the
 * page is its own files and the API of the same origin. */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'";

static void security_headers(struct http_request *r)
{
    http_add_header(r, "Content-Security-Policy", csp);
    http_add_header(r, "X-Content-Type-Options", "nosniff");
    http_add_header(r, "Referrer-Policy", "no-referrer");
    http_add_header(r, "X-Frame-Options", "DENY");
    http_add_header(r, "Cross-Origin-Resource-Policy", "same-origin");
}

bool ui_path(const char *path)
{
    size_t n = strlen(PREFIX);
    return strncmp(path, PREFIX, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static const struct ui_asset *find(const char *name)
{
    for (size_t i = 0; i < ui_asset_count; i++)
        if (strcmp(ui_assets[i].name, name) == 0)
            return &ui_assets[i];
    return NULL;
}

static void plain(struct http_request *r, int status, const char *text)
{
    http_respond(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* If-None-Match names the file's tag (or is "*"): a weak comparison, as RFC 9110 asks for it. */
static bool not_modified(struct http_request *r, const struct ui_asset *a)
{
    const char *inm = http_header(r, "If-None-Match");
    return inm && (strcmp(inm, "*") == 0 || strstr(inm, a->etag) != NULL);
}

void ui_respond(struct http_request *r)
{
    security_headers(r);
    const char *path = r->path + strlen(PREFIX);
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0) {
        http_add_header(r, "Allow", "GET, HEAD");
        plain(r, 405, "the console's files are read with GET\n");
        return;
    }
    if (*path == '\0') {
        /* Relative, so that behind a proxy's path prefix it stays under that prefix. */
        http_add_header(r, "Location", "ui/");
        plain(r, 308, "the console is at ui/\n");
        return;
    }
    const char *name = path[1] ? path + 1 : "index.html";
    const struct ui_asset *a = find(name);
    if (a == NULL) {
        plain(r, 404, "no such file in the console\n");
        return;
    }
    /* Revalidated on each load (a 304 costs one round trip), so an upgraded serve's page is
     * never mixed with modules of the one before. */
    http_add_header(r, "Cache-Control", "no-cache");
    http_add_header(r, "ETag", a->etag);
    if (not_modified(r, a)) {
        http_respond(r, 304, NULL, "", 0);
        return;
    }
    http_respond(r, 200, a->content_type, (const char *)a->data, a->len);
}
