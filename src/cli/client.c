/* The client commands' HTTP client (libcurl, one easy handle per client) and their shared
 * output helpers. CURLcode stays in this file: callers see ch_code values and messages. */
#include "cli/client.h"

#include "cli/cli.h"

#include <curl/curl.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cli_client {
    CURL *curl;
    char base_url[CLI_URL_MAX];
    char auth_header[CLI_KEY_MAX + 32]; /* "Authorization: Bearer <key>" */
    char no_proxy[1024];                /* loopback, then the user's NO_PROXY */
    long timeout_ms;
};

void cli_client_options_init(struct cli_client_options *o)
{
    o->url = NULL;
    o->key = NULL;
    o->timeout_ms = CLI_DEFAULT_TIMEOUT_MS;
    o->json = false;
}

int cli_client_option(struct cli_client_options *o, int c, const char *arg)
{
    long long v;
    switch (c) {
    case CLI_OPT_URL:
        o->url = arg;
        return 1;
    case CLI_OPT_KEY:
        o->key = arg;
        return 1;
    case CLI_OPT_TIMEOUT_MS:
        if (!cli_parse_ll("--request-timeout-ms", arg, &v))
            return -1;
        if (v < 1 || v > 3600000) {
            fprintf(stderr, "callhook: --request-timeout-ms must be from 1 to 3600000\n");
            return -1;
        }
        o->timeout_ms = (long)v;
        return 1;
    case CLI_OPT_JSON:
        o->json = true;
        return 1;
    default:
        return 0;
    }
}

static const char *env_or(const char *value, const char *name)
{
    if (value != NULL)
        return value;
    const char *env = getenv(name);
    return env != NULL && *env != '\0' ? env : NULL;
}

ch_code cli_client_new(struct cli_client **out, const struct cli_client_options *o,
                       struct ch_error *err)
{
    const char *url = env_or(o->url, "CALLHOOK_URL");
    const char *key = env_or(o->key, "CALLHOOK_KEY");
    if (url == NULL)
        url = CLI_DEFAULT_URL;
    if (key == NULL)
        return ch_error_set(err, CH_EINVAL,
                            "no API key: set CALLHOOK_KEY (or pass --key) to a key of serve, "
                            "e.g. one from 'callhook key create --role admin'");
    size_t url_len = strlen(url);
    while (url_len > 0 && url[url_len - 1] == '/')
        url_len--;
    if (url_len >= CLI_URL_MAX)
        return ch_error_set(err, CH_EINVAL, "the URL of serve is longer than %d bytes",
                            CLI_URL_MAX - 1);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return ch_error_set(err, CH_EINVAL,
                            "'%s' is not a URL of serve: use http://HOST:PORT, e.g. %s", url,
                            CLI_DEFAULT_URL);
    if (strlen(key) > CLI_KEY_MAX || strpbrk(key, "\r\n") != NULL)
        return ch_error_set(err, CH_EINVAL,
                            "the API key is not one serve makes (too long or "
                            "has a line break)");

    /* Reference-counted by libcurl, so each client may hold one; the first is made before any
     * thread starts (simulate makes all of its clients up front). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return ch_error_set(err, CH_ENOMEM, "cannot initialise libcurl");
    struct cli_client *c = calloc(1, sizeof *c);
    if (c == NULL || (c->curl = curl_easy_init()) == NULL) {
        free(c);
        curl_global_cleanup();
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    }
    memcpy(c->base_url, url, url_len);
    c->base_url[url_len] = '\0';
    snprintf(c->auth_header, sizeof c->auth_header, "Authorization: Bearer %s", key);
    c->timeout_ms = o->timeout_ms;
    /* serve is usually on this machine: a loopback address never goes through a proxy (which
     * would see the key). Setting the option replaces NO_PROXY, so the user's list is kept. */
    const char *user_no_proxy = env_or(NULL, "NO_PROXY");
    if (user_no_proxy == NULL)
        user_no_proxy = env_or(NULL, "no_proxy");
    snprintf(c->no_proxy, sizeof c->no_proxy, "localhost,127.0.0.1,::1%s%s",
             user_no_proxy ? "," : "", user_no_proxy ? user_no_proxy : "");
    *out = c;
    return CH_OK;
}

void cli_client_free(struct cli_client *c)
{
    if (c == NULL)
        return;
    curl_easy_cleanup(c->curl);
    free(c);
    curl_global_cleanup();
}

const char *cli_client_url(const struct cli_client *c)
{
    return c->base_url;
}

void cli_response_init(struct cli_response *r)
{
    r->status = 0;
    buf_init(&r->body, CLI_MAX_RESPONSE_BYTES);
}

void cli_response_release(struct cli_response *r)
{
    buf_release(&r->body);
    r->status = 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct buf *b = userdata;
    size_t n = size * nmemb;
    /* Returning less than n makes libcurl stop with CURLE_WRITE_ERROR: the cap is reached. */
    return buf_add(b, data, n) ? n : 0;
}

/* Turns a failed transfer into a ch_code and a message that says what to do. */
static ch_code transfer_failed(const struct cli_client *c, CURLcode rc, const char *detail,
                               const struct cli_response *resp, struct ch_error *err)
{
    const char *why = detail[0] ? detail : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        return ch_error_set(err, CH_EUNAVAILABLE,
                            "serve is not reachable at %s (%s): start 'callhook serve', or point "
                            "--url or CALLHOOK_URL at where it listens",
                            c->base_url, why);
    case CURLE_COULDNT_RESOLVE_HOST:
        return ch_error_set(err, CH_EUNAVAILABLE,
                            "cannot resolve the host of %s (%s): check --url or CALLHOOK_URL",
                            c->base_url, why);
    case CURLE_OPERATION_TIMEDOUT:
        return ch_error_set(err, CH_EUNAVAILABLE,
                            "serve at %s did not answer within %ld ms: is it overloaded or "
                            "stopped? (--request-timeout-ms sets the limit)",
                            c->base_url, c->timeout_ms);
    case CURLE_WRITE_ERROR:
        if (buf_too_big(&resp->body, 1))
            return ch_error_set(err, CH_ETOOBIG,
                                "the answer of serve at %s is larger than %u bytes: ask for less "
                                "(e.g. --limit)",
                                c->base_url, CLI_MAX_RESPONSE_BYTES);
        return ch_error_set(err, CH_ENOMEM, "out of memory reading the answer of serve");
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return ch_error_set(err, CH_EINVAL, "'%s' is not a usable URL of serve (%s)", c->base_url,
                            why);
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        return ch_error_set(err, CH_EUNAVAILABLE,
                            "serve at %s closed the connection without an answer (%s): is it "
                            "shutting down?",
                            c->base_url, why);
    default:
        return ch_error_set(err, CH_EIO, "request to %s failed: %s", c->base_url, why);
    }
}

ch_code cli_client_request(struct cli_client *c, const char *method, const char *path,
                           const char *body, size_t body_len, const char *extra_header,
                           struct cli_response *resp, struct ch_error *err)
{
    buf_reset(&resp->body);
    resp->status = 0;
    char url[CLI_URL_MAX + 2048];
    int n = snprintf(url, sizeof url, "%s%s", c->base_url, path);
    if (n < 0 || (size_t)n >= sizeof url)
        return ch_error_set(err, CH_EINVAL, "the request URL is too long");

    CURL *h = c->curl;
    curl_easy_reset(h);
    struct curl_slist *headers = NULL, *tmp;
    /* "Expect:" keeps libcurl from waiting for a 100 Continue before larger bodies. */
    /* "Content-Type:" alone removes the form type libcurl would give an empty POST or PUT. */
    const char *lines[] = {c->auth_header, "Accept: application/json", "Expect:",
                           body ? "Content-Type: application/json" : "Content-Type:", extra_header};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (lines[i] == NULL)
            continue;
        if ((tmp = curl_slist_append(headers, lines[i])) == NULL) {
            curl_slist_free_all(headers);
            return ch_error_set(err, CH_ENOMEM, "out of memory");
        }
        headers = tmp;
    }
    char detail[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* simulate runs clients on threads */
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     c->timeout_ms < CLI_CONNECT_TIMEOUT_MS ? c->timeout_ms
                                                            : CLI_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOPROXY, c->no_proxy);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "callhook-cli/" CALLHOOK_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp->body);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else if (strcmp(method, "GET") != 0) {
        /* PUT/POST without a body still send Content-Length: 0. */
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    CURLcode rc = curl_easy_perform(h);
    /* The handle must not keep pointers to this frame's list and buffer past the call. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        /* "connection refused" says more than libcurl's "Couldn't connect to server". */
        long os_errno = 0;
        if (rc == CURLE_COULDNT_CONNECT &&
            curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK && os_errno != 0) {
            snprintf(detail, sizeof detail, "%s", strerror((int)os_errno));
            detail[0] = (char)tolower((unsigned char)detail[0]);
        }
        return transfer_failed(c, rc, detail, resp, err);
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (resp->body.data == NULL && !buf_add(&resp->body, "", 0))
        return ch_error_set(err, CH_ENOMEM, "out of memory");
    return CH_OK;
}

/* Copies text into buf with control characters as spaces, cut to fit. */
static void copy_printable(char *buf, size_t cap, const char *text, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++)
        buf[n++] = (unsigned char)text[i] < 0x20 ? ' ' : text[i];
    buf[n] = '\0';
}

const char *cli_response_error(const struct cli_response *r, char *buf, size_t cap)
{
    json_t *root = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    json_t *e = json_object_get(root, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *message = json_string_value(json_object_get(e, "message"));
    if (message != NULL)
        snprintf(buf, cap, "%s (HTTP %ld %s)", message, r->status, code ? code : "error");
    else if (r->body.len > 0) {
        char start[200];
        copy_printable(start, sizeof start, r->body.data, r->body.len);
        snprintf(buf, cap, "HTTP %ld: %s", r->status, start);
    } else
        snprintf(buf, cap, "HTTP %ld with no body", r->status);
    json_decref(root);
    return buf;
}

int cli_client_open(const char *cmd, const struct cli_client_options *o, struct cli_client **out)
{
    struct ch_error err;
    ch_code rc = cli_client_new(out, o, &err);
    if (rc == CH_OK)
        return CLI_OK;
    fprintf(stderr, "callhook %s: %s\n", cmd, err.message);
    return rc == CH_EINVAL ? CLI_USAGE : CLI_FAIL;
}

/* What to do about an error status, beyond what serve said. */
static const char *status_hint(long status)
{
    switch (status) {
    case 401:
        return "check CALLHOOK_KEY (or --key): this serve does not know the key; or check "
               "--url (CALLHOOK_URL): is it the serve you meant?";
    case 403:
        return "this needs a key with another role: 'callhook key create --role admin'";
    case 503:
        return "serve's store is unavailable; try again shortly";
    default:
        return NULL;
    }
}

int cli_api(struct cli_client *c, const char *cmd, const char *method, const char *path,
            const char *body, size_t body_len, const char *extra_header, struct cli_response *resp,
            json_t **json)
{
    struct cli_response local;
    if (resp == NULL) {
        cli_response_init(&local);
        resp = &local;
    }
    if (json != NULL)
        *json = NULL;
    int rc = CLI_FAIL;
    struct ch_error err;
    if (cli_client_request(c, method, path, body, body_len, extra_header, resp, &err) != CH_OK) {
        fprintf(stderr, "callhook %s: %s\n", cmd, err.message);
        goto done;
    }
    if (resp->status < 200 || resp->status > 299) {
        char msg[512];
        const char *hint = status_hint(resp->status);
        fprintf(stderr, "callhook %s: %s from %s%s%s\n", cmd,
                cli_response_error(resp, msg, sizeof msg), c->base_url, hint ? "\n  hint: " : "",
                hint ? hint : "");
        goto done;
    }
    if (json != NULL && resp->body.len > 0) {
        json_error_t jerr;
        *json = json_loadb(resp->body.data, resp->body.len, 0, &jerr);
        if (*json == NULL) {
            fprintf(stderr, "callhook %s: serve answered %s %s with invalid JSON: %s\n", cmd,
                    method, path, jerr.text);
            goto done;
        }
    }
    rc = CLI_OK;
done:
    if (resp == &local)
        cli_response_release(&local);
    return rc;
}

bool cli_escape(const char *text, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        bool plain = isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~';
        size_t need = plain ? 1 : 3;
        if (n + need >= cap)
            return false;
        if (plain)
            out[n++] = (char)*p;
        else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    if (cap == 0)
        return false;
    out[n] = '\0';
    return true;
}

bool cli_parse_since(const char *option, const char *text, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno == 0 && end != text && v >= 0 && isdigit((unsigned char)text[0])) {
        long long unit = 0;
        if (*end == '\0') {
            *out = v;
            return true;
        }
        if (end[1] == '\0') {
            unit = *end == 's'   ? 1
                   : *end == 'm' ? 60
                   : *end == 'h' ? 3600
                   : *end == 'd' ? 86400
                                 : 0;
        }
        long long now = (long long)time(NULL);
        if (unit != 0 && v <= now / unit) {
            *out = now - v * unit;
            return true;
        }
    }
    fprintf(stderr,
            "callhook: %s wants unix seconds or a time ago such as 90s, 15m, 2h or 7d, not '%s'\n",
            option, text);
    return false;
}

const char *cli_format_time(long long unix_s, char *buf, size_t cap)
{
    struct tm tm;
    time_t t = (time_t)unix_s;
    if (unix_s <= 0 || gmtime_r(&t, &tm) == NULL ||
        strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "-");
    return buf;
}

/* ---- tables ---- */

void cli_table_init(struct cli_table *t, int ncols, const char *const *headers)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols < CLI_TABLE_MAX_COLS ? ncols : CLI_TABLE_MAX_COLS;
    t->headers = headers;
}

/* Characters shown, counting a UTF-8 sequence as one. */
static size_t display_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

/* A copy of text for a cell: control characters as spaces, at most CLI_CELL_MAX characters
 * (a cut one ends in "..."), never splitting a UTF-8 sequence. */
static char *cell_copy(const char *text)
{
    if (text == NULL || *text == '\0')
        text = "-";
    size_t len = strlen(text);
    char *out = malloc(len + 4);
    if (out == NULL)
        return NULL;
    size_t n = 0, chars = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        bool starts_char = (ch & 0xC0) != 0x80;
        if (starts_char && chars == CLI_CELL_MAX - 3 && display_width(text + i) > 3) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        if (starts_char)
            chars++;
        out[n++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    out[n] = '\0';
    return out;
}

bool cli_table_add(struct cli_table *t, const char *const *cells)
{
    if (t->nrows == t->alloc_rows) {
        size_t rows = t->alloc_rows ? t->alloc_rows * 2 : 32;
        if (rows > SIZE_MAX / sizeof(char *) / CLI_TABLE_MAX_COLS)
            return false;
        char **p = realloc(t->cells, rows * CLI_TABLE_MAX_COLS * sizeof(char *));
        if (p == NULL)
            return false;
        t->cells = p;
        t->alloc_rows = rows;
    }
    char **row = t->cells + t->nrows * CLI_TABLE_MAX_COLS;
    for (int i = 0; i < t->ncols; i++) {
        if ((row[i] = cell_copy(cells[i])) == NULL) {
            while (i-- > 0)
                free(row[i]);
            return false;
        }
    }
    t->nrows++;
    return true;
}

static void print_row(const struct cli_table *t, FILE *out, const char *const *cells)
{
    for (int i = 0; i < t->ncols; i++) {
        bool last = i == t->ncols - 1;
        fputs(cells[i], out);
        if (!last) {
            size_t w = display_width(cells[i]);
            for (size_t pad = w; pad < t->widths[i] + 2; pad++)
                fputc(' ', out);
        }
    }
    fputc('\n', out);
}

void cli_table_flush(struct cli_table *t, FILE *out)
{
    for (int i = 0; i < t->ncols; i++) {
        size_t w = display_width(t->headers[i]);
        if (w > t->widths[i])
            t->widths[i] = w;
        for (size_t r = 0; r < t->nrows; r++) {
            w = display_width(t->cells[r * CLI_TABLE_MAX_COLS + i]);
            if (w > t->widths[i])
                t->widths[i] = w;
        }
    }
    if (!t->header_done) {
        print_row(t, out, t->headers);
        t->header_done = true;
    }
    for (size_t r = 0; r < t->nrows; r++) {
        char **row = t->cells + r * CLI_TABLE_MAX_COLS;
        print_row(t, out, (const char *const *)row);
        for (int i = 0; i < t->ncols; i++)
            free(row[i]);
    }
    t->nrows = 0;
}

void cli_table_release(struct cli_table *t)
{
    for (size_t r = 0; r < t->nrows; r++)
        for (int i = 0; i < t->ncols; i++)
            free(t->cells[r * CLI_TABLE_MAX_COLS + i]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->alloc_rows = 0;
}

/* ---- objects as labelled lines ---- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Appends printf output to buf at *n, cutting at cap. */
static void append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
    if (*n + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (k > 0)
        *n = (size_t)k >= cap - *n ? cap - 1 : *n + (size_t)k;
}

const char *cli_format_value(const char *key, const json_t *v, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    if (v == NULL || json_is_null(v))
        append(buf, cap, &n, "-");
    else if (json_is_boolean(v))
        append(buf, cap, &n, "%s", json_is_true(v) ? "yes" : "no");
    else if (json_is_integer(v) && ends_with(key, "At")) {
        char t[40];
        long long s = (long long)json_integer_value(v);
        append(buf, cap, &n, "%s", cli_format_time(s, t, sizeof t));
    } else if (json_is_integer(v))
        append(buf, cap, &n, "%lld%s", (long long)json_integer_value(v),
               ends_with(key, "Ms") ? " ms" : "");
    else if (json_is_string(v))
        append(buf, cap, &n, "%s", json_string_value(v));
    else if (json_is_array(v) && json_array_size(v) > 0 && !json_is_object(json_array_get(v, 0))) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            char one[256];
            append(buf, cap, &n, "%s%s", i ? ", " : "",
                   cli_format_value("", item, one, sizeof one));
        }
    } else if (json_is_object(v) && json_object_size(v) == 0)
        append(buf, cap, &n, "-");
    else if (json_is_object(v)) {
        const char *k;
        json_t *item;
        bool first = true;
        json_object_foreach((json_t *)v, k, item)
        {
            char one[1024];
            append(buf, cap, &n, "%s%s: %s", first ? "" : "; ", k,
                   cli_format_value("", item, one, sizeof one));
            first = false;
        }
    } else {
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        append(buf, cap, &n, "%s", text ? text : "?");
        free(text);
    }
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    return buf;
}

static bool in_list(const char *key, const char *const *list)
{
    for (; list && *list; list++)
        if (strcmp(key, *list) == 0)
            return true;
    return false;
}

static bool labelled(const char *key, const struct cli_label *labels, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(key, labels[i].key) == 0)
            return true;
    return false;
}

void cli_print_object(const json_t *o, const struct cli_label *labels, size_t nlabels,
                      const char *const *skip, FILE *out)
{
    size_t width = 0;
    const char *key;
    json_t *v;
    for (size_t i = 0; i < nlabels; i++)
        if (json_object_get(o, labels[i].key) && strlen(labels[i].label) > width)
            width = strlen(labels[i].label);
    json_object_foreach((json_t *)o, key, v)
    {
        if (!labelled(key, labels, nlabels) && !in_list(key, skip) && strlen(key) > width)
            width = strlen(key);
    }
    char value[4096];
    for (size_t i = 0; i < nlabels; i++) {
        json_t *member = json_object_get(o, labels[i].key);
        if (member != NULL)
            fprintf(out, "%-*s  %s\n", (int)width, labels[i].label,
                    cli_format_value(labels[i].key, member, value, sizeof value));
    }
    json_object_foreach((json_t *)o, key, v)
    {
        if (!labelled(key, labels, nlabels) && !in_list(key, skip))
            fprintf(out, "%-*s  %s\n", (int)width, key,
                    cli_format_value(key, v, value, sizeof value));
    }
}
