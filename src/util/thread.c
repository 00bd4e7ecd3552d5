#include "util/thread.h"

#include <pthread.h>
#include <sys/prctl.h>

void thread_name(const char *name)
{
    /* Linux keeps 16 bytes with the terminating NUL; a longer name is cut, never refused. */
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

void thread_block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}
