/* The library's version, fixed at build time from the project's. */
#include <callhook/callhook.h>

const char *ch_version(void)
{
    return CALLHOOK_VERSION;
}
