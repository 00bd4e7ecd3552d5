/* Folders for database files. */
#include "util/fs.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

ch_code fs_make_parent_dirs(const char *path, struct ch_error *err)
{
    char dir[4096];
    if (strlen(path) >= sizeof dir)
        return ch_error_set(err, CH_EINVAL, "path '%.40s...' is too long", path);
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return CH_OK;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        bool last = *p == '\0';
        if (*p != '/' && !last)
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return ch_error_set(err, CH_EIO, "cannot create '%s': %s", dir, strerror(errno));
        if (last)
            break;
        *p = '/';
    }
    return CH_OK;
}
