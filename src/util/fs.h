/* Files and folders: what the stores need before they open a database file. */
#ifndef CALLHOOK_UTIL_FS_H
#define CALLHOOK_UTIL_FS_H

#include <callhook/error.h>

/* Creates every missing folder on the way to path's file, mode 0700 (they will hold personal
 * data). CH_EIO naming the folder on failure. */
ch_code fs_make_parent_dirs(const char *path, struct ch_error *err);

#endif
