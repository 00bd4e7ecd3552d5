/* Input reading and option helpers shared by the commands. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

bool cli_read_input(const char *path, size_t max, char **data, size_t *len)
{
    bool from_stdin = path == NULL || strcmp(path, "-") == 0;
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "callhook: cannot open '%s': %s\n", path, strerror(errno));
        return false;
    }
    struct buf b;
    buf_init(&b, max);
    char chunk[16384];
    size_t n;
    bool ok = true;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (!buf_add(&b, chunk, n)) {
            if (buf_too_big(&b, n))
                fprintf(stderr, "callhook: '%s' is larger than %zu bytes\n",
                        from_stdin ? "stdin" : path, max);
            else
                fprintf(stderr, "callhook: out of memory reading '%s'\n",
                        from_stdin ? "stdin" : path);
            ok = false;
            break;
        }
    }
    if (ok && ferror(f)) {
        fprintf(stderr, "callhook: cannot read '%s': %s\n", from_stdin ? "stdin" : path,
                strerror(errno));
        ok = false;
    }
    if (!from_stdin)
        fclose(f);
    if (ok && b.data == NULL && !buf_add(&b, "", 0)) {
        fprintf(stderr, "callhook: out of memory\n");
        ok = false;
    }
    if (!ok) {
        buf_release(&b);
        return false;
    }
    *data = b.data;
    *len = b.len;
    return true;
}

bool cli_parse_ll(const char *option, const char *text, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') {
        fprintf(stderr, "callhook: %s wants a whole number, not '%s'\n", option, text);
        return false;
    }
    *out = v;
    return true;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    fprintf(stderr, "callhook %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'callhook %s --help')\n", cmd);
    return CLI_USAGE;
}

int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
               const struct option *longopts, int *longindex)
{
    opterr = 0;
    /* A leading ':' makes getopt tell a missing value (':') from an unknown option ('?'). */
    char opts[64];
    snprintf(opts, sizeof opts, ":%s", shortopts);
    int c = getopt_long(argc, argv, opts, longopts, longindex);
    if (c != '?' && c != ':')
        return c;
    const char *seen = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    char shortopt[3] = {'-', (char)optopt, '\0'};
    /* For a short option in a group (-xy), argv[optind - 1] is the group: name the letter. */
    const char *name = optopt && (seen[0] != '-' || seen[1] != '-') ? shortopt : seen;
    if (c == ':')
        cli_usage_error(cmd, "option '%s' needs a value", name);
    else
        cli_usage_error(cmd, "unknown option '%s'", name);
    return '?';
}
