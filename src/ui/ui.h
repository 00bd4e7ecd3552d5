/*
 * The operators' console: the static page that callhook serve answers at GET /ui/ (HTML, CSS
 * and JavaScript modules from src/ui/assets, turned into C at build time by embed.cmake). The
 * files need no key; everything the page shows comes through the JSON API, with one.
 */
#ifndef CALLHOOK_UI_H
#define CALLHOOK_UI_H

#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>

/* One file of the console, as the build embedded it (ui_assets.c, generated). */
struct ui_asset {
    const char *name;         /* "index.html", "main.js": a flat folder */
    const char *content_type; /* with its charset where it is text */
    const unsigned char *data;
    size_t len;
    const char *etag; /* "\"<first 20 hex digits of the SHA-256>\"" */
};

extern const struct ui_asset ui_assets[];
extern const size_t ui_asset_count;

/* Whether path (no query) is the console's: "/ui" or under "/ui/". */
bool ui_path(const char *path);

/* Answers a request for a path of the console: the file with its type, ETag (a 304 for a
 * matching If-None-Match), Cache-Control: no-cache and the security headers (a strict
 * Content-Security-Policy, nosniff, no referrer, no framing); "/ui" is redirected to "ui/"
 * (relative, so it works behind a path prefix); 404 for a file it does not have, 405 for a
 * method other than GET and HEAD. */
void ui_respond(struct http_request *r);

#endif
