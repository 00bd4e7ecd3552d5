#include "util/thread.h"

#include <sys/prctl.h>

void thread_name(const char *name)
{
    /* Linux keeps 16 bytes with the terminating NUL; a longer name is cut, never refused. */
    prctl(PR_SET_NAME, name, 0, 0, 0);
}
