/* The HOST:PORT of a --listen setting, as a socket address. Read by the HTTP front
 * (src/http/), which listens for serve and receive alike. */
#ifndef CALLHOOK_HTTP_LISTEN_H
#define CALLHOOK_HTTP_LISTEN_H

#include <callhook/error.h>

#include <sys/socket.h>

/* Reads "127.0.0.1:8080", "[::1]:8443" (the host must be an IP address; port 0 = any). */
ch_code listen_parse(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                     struct ch_error *err);

/* A socket bound to listen's address and listening (close-on-exec): the caller owns fd_out.
 * CH_EIO saying why not: the port in use, a privileged port, an address not of this machine. */
ch_code listen_open(const char *listen, int *fd_out, struct ch_error *err);

#endif
