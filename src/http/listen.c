/* --listen values. */
#include "http/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ch_code listen_parse(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                     struct ch_error *err)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon == listen || (size_t)(colon - listen) >= sizeof host)
        return ch_error_set(err, CH_EINVAL, "--listen '%s': expected HOST:PORT", listen);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return ch_error_set(err, CH_EINVAL, "--listen '%s': bad port", listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    memset(ss, 0, sizeof *ss);
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = '\0';
        h++;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, h, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
    } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
    } else {
        return ch_error_set(err, CH_EINVAL, "--listen '%s': the host must be an IP address",
                            listen);
    }
    return CH_OK;
}

ch_code listen_open(const char *address, int *fd_out, struct ch_error *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    ch_code rc = listen_parse(address, &ss, &len, err);
    if (rc != CH_OK)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ch_error_set(err, CH_EIO, "cannot listen on '%s': %s", address, strerror(errno));
    /* A restart binds again at once, past the old connections' TIME_WAIT; another process
     * still listening there is refused all the same. An IPv6 address is IPv6 only. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        close(fd);
        const char *why = e == EADDRINUSE      ? "the port is in use: another process listens "
                                                 "there (stop it, or choose another --listen)"
                          : e == EACCES        ? "permission denied: ports below 1024 need "
                                                 "privileges; choose a port of 1024 or more"
                          : e == EADDRNOTAVAIL ? "no interface of this machine has that address"
                                               : strerror(e);
        return ch_error_set(err, CH_EIO, "cannot listen on '%s': %s", address, why);
    }
    *fd_out = fd;
    return CH_OK;
}
