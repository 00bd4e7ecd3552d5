/* The SSRF decisions of delivery (ssrf.h). Only the URL parser of libcurl is used here, so a
 * URL's host is read exactly as the transfer that would send to it reads it. */
#define _DEFAULT_SOURCE /* inet_aton(): the legacy IPv4 spellings that URLs may use */
#include "deliver/ssrf.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

bool ssrf_allows(const struct ssrf_rule *r, const struct sockaddr *addr, socklen_t len)
{
    if (r->allow_private_network || !guard_is_internal(addr, len))
        return true;
    for (int i = 0; i < r->nallowed; i++) {
        if (guard_cidr_contains(&r->allowed[i], addr, len))
            return true;
    }
    return false;
}

bool ssrf_url_host(const char *url, char *host, size_t cap)
{
    CURLU *u = curl_url();
    char *h = NULL;
    bool ok = u != NULL && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h[0] != '\0' &&
              strlen(h) < cap;
    if (ok) {
        size_t n = strlen(h);
        if (n > 0 && h[n - 1] == '.')
            n--;
        if (n > 2 && h[0] == '[' && h[n - 1] == ']')
            snprintf(host, cap, "%.*s", (int)(n - 2), h + 1);
        else
            snprintf(host, cap, "%.*s", (int)n, h);
    }
    curl_free(h);
    curl_url_cleanup(u);
    return ok;
}

void ssrf_judge_url(const struct ssrf_rule *r, const char *url, char *refused, size_t cap)
{
    refused[0] = '\0';
    if (url[0] == '\0')
        return;
    CURLU *u = curl_url();
    char *host = NULL;
    if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        curl_url_cleanup(u);
        return;
    }
    char h[256];
    snprintf(h, sizeof h, "%s", host);
    curl_free(host);
    curl_url_cleanup(u);
    size_t n = strlen(h);
    if (n > 0 && h[n - 1] == '.')
        h[--n] = '\0';
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    socklen_t len;
    if (inet_aton(h, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        len = sizeof *v4;
    } else if (n > 2 && h[0] == '[' && h[n - 1] == ']') {
        h[n - 1] = '\0';
        char *zone = strchr(h, '%');
        if (zone)
            *zone = '\0';
        if (inet_pton(AF_INET6, h + 1, &v6->sin6_addr) != 1)
            return;
        v6->sin6_family = AF_INET6;
        len = sizeof *v6;
    } else {
        return; /* a name: judged on the address it resolves to */
    }
    if (!ssrf_allows(r, (struct sockaddr *)&ss, len))
        guard_format((struct sockaddr *)&ss, refused, cap);
}

bool ssrf_judge_ip(const struct ssrf_rule *r, const char *ip, char *refused, size_t cap)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len = 0;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (ip != NULL && inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        len = sizeof *v4;
    } else if (ip != NULL && inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        len = sizeof *v6;
    } else {
        snprintf(refused, cap, "an unknown address");
        return false;
    }
    if (!ssrf_allows(r, (struct sockaddr *)&ss, len)) {
        guard_format((struct sockaddr *)&ss, refused, cap);
        return false;
    }
    return true;
}
