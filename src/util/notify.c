/* sd_notify(3)'s protocol: one datagram per state change to $NOTIFY_SOCKET. */
#include "util/notify.h"

#include "util/log.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

ch_code notify_send(const char *state, struct ch_error *err)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (name == NULL || name[0] == '\0')
        return CH_OK;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(name), len = strlen(state);
    if ((name[0] != '/' && name[0] != '@') || n < 2 || n >= sizeof sa.sun_path)
        return ch_error_set(err, CH_EINVAL,
                            "NOTIFY_SOCKET '%.200s' is neither a socket's path nor '@' and an "
                            "abstract name",
                            name);
    if (len > NOTIFY_STATE_MAX)
        return ch_error_set(err, CH_EINVAL, "a state of %zu bytes, more than %d", len,
                            NOTIFY_STATE_MAX);
    memcpy(sa.sun_path, name, n);
    /* An abstract name starts with a NUL byte and is exactly as long as the address says. */
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    socklen_t sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ch_error_set(err, CH_EIO, "cannot open a socket for NOTIFY_SOCKET: %s",
                            strerror(errno));
    /* The manager reads at once; a socket that stays full must not hold a daemon forever. */
    struct timeval timeout = {5, 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    ssize_t w;
    do {
        w = sendto(fd, state, len, MSG_NOSIGNAL, (const struct sockaddr *)&sa, sa_len);
    } while (w < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (w < 0)
        return ch_error_set(err, CH_EIO, "cannot send to NOTIFY_SOCKET '%.200s': %s", name,
                            strerror(saved));
    return CH_OK;
}

void notify_state(const char *state)
{
    struct ch_error err = {0};
    if (notify_send(state, &err) != CH_OK)
        log_warn("cannot tell the service manager '%.40s': %s", state, err.message);
}

void notify_reloading(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    char state[64];
    snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%lld",
             (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
    notify_state(state);
}
