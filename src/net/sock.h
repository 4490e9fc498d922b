/* Sockets: addresses, non-blocking listeners and connects. */
#ifndef KEEL_NET_SOCK_H
#define KEEL_NET_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct keel_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

#define KEEL_ADDR_STRLEN 64 /* "[ipv6]:port" fits */

/* "ip:port", "[v6]:port", "host:port" (resolved now, first result), ":port". */
int keel_addr_parse(const char *s, struct keel_addr *a);
/* "ip:port" / "[v6]:port" into out; returns its length. */
size_t keel_addr_format(const struct sockaddr *sa, char *out, size_t cap);
int keel_addr_port(const struct keel_addr *a);

/* Listening socket, non-blocking, SO_REUSEADDR (+ SO_REUSEPORT when asked). -1 on error
 * with errno set. */
int keel_sock_listen(const struct keel_addr *a, bool reuseport);
/* Non-blocking connect. Returns 0 (connected), KEEL_AGAIN (in progress: wait for
 * writability, then keel_sock_connect_result) or KEEL_EIO with errno. */
int keel_sock_connect(const struct keel_addr *a, int *fd);
/* 0 when the pending connect succeeded, else the errno it failed with. */
int keel_sock_connect_result(int fd);
/* Accept one connection, non-blocking with TCP_NODELAY. -1 with errno (EAGAIN when none). */
int keel_sock_accept(int lfd, struct keel_addr *peer);
void keel_sock_local(int fd, struct keel_addr *a);

#endif
