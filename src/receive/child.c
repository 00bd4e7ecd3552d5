/* The handler processes' shared setup: the environment allow-list and closing descriptors. */
#define _GNU_SOURCE /* syscall(SYS_close_range) */

#include "receive/child.h"

#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

bool child_env_passed_on(const char *entry, const char *names, int nnames)
{
    static const char *const always[] = {"PATH", "HOME", "LANG"};
    size_t n = strcspn(entry, "=");
    if (entry[n] != '=')
        return false;
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++) {
        if (strlen(always[i]) == n && strncmp(entry, always[i], n) == 0)
            return true;
    }
    if (strncmp(entry, "LC_", 3) == 0)
        return true;
    for (int i = 0; i < nnames; i++) {
        const char *name = names + (size_t)i * RECEIVE_ENV_NAME_MAX;
        if (strlen(name) == n && strncmp(entry, name, n) == 0)
            return true;
    }
    return false;
}

int child_max_fd(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 65536)
        return 65536;
    return (int)rl.rlim_cur;
}

void child_close_from_3(int limit)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
        return;
#endif
    for (int fd = 3; fd < limit; fd++)
        close(fd);
}
