/* Folders for database files, and the checks on files that are their owner's alone. */
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
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

ch_code fs_check_private(const char *path, const char *what, struct ch_error *err)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return ch_error_set(err, CH_EIO, "cannot read the %s '%s': %s", what, path,
                            strerror(errno));
    if (S_ISLNK(st.st_mode))
        return ch_error_set(err, CH_EINVAL,
                            "the %s '%s' is a symbolic link: give the path of the file itself",
                            what, path);
    if (!S_ISREG(st.st_mode))
        return ch_error_set(err, CH_EINVAL, "the %s '%s' is not a regular file", what, path);
    if (st.st_mode & 077)
        return ch_error_set(err, CH_EINVAL,
                            "the %s '%s' can be read or written by other users (mode %03o): "
                            "chmod 600 '%s'",
                            what, path, (unsigned)(st.st_mode & 0777), path);
    return CH_OK;
}

ch_code fs_private_file(const char *path, const char *what, struct ch_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return CH_OK;
    }
    if (errno != EEXIST)
        return ch_error_set(err, CH_EIO, "cannot create the %s '%s': %s", what, path,
                            strerror(errno));
    return fs_check_private(path, what, err);
}
