/* Files and folders: what the stores need before they open a database file, and the checks on
 * files that hold secrets or personal data (databases, key files). */
#ifndef CALLHOOK_UTIL_FS_H
#define CALLHOOK_UTIL_FS_H

#include <callhook/error.h>

/* Creates every missing folder on the way to path's file, mode 0700 (they will hold personal
 * data). CH_EIO naming the folder on failure. */
ch_code fs_make_parent_dirs(const char *path, struct ch_error *err);

/* A file that must be its owner's alone (a database, a key). When it does not exist it is
 * created empty with mode 0600 (O_EXCL | O_NOFOLLOW, so it is never created with a wider mode
 * first, nor through a link); when it exists it must be a regular file, not a symbolic link,
 * that neither group nor others can read or write. what names it in errors ("database").
 * CH_EINVAL with the fix in the message when it is not. */
ch_code fs_private_file(const char *path, const char *what, struct ch_error *err);

/* The same checks on an existing file that is only read (a key file): CH_EIO when it cannot
 * be read, CH_EINVAL when it is a link or others may read it. */
ch_code fs_check_private(const char *path, const char *what, struct ch_error *err);

#endif
