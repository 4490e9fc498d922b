/* What both forwarders share: the HTTP/1.1 framing they need (end of head, Content-Length)
 * and the upstream connect. Kept in one header so the epoll and io_uring loops differ in
 * their event handling only, never in the per-request work. */
#ifndef FWD_HTTP_H
#define FWD_HTTP_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* One message (request or response) must fit: wrk's GETs and the backend's 6-byte 200s are
 * ~100-200 bytes. A larger one closes the connection (this is a benchmark, not a proxy). */
#define FWD_BUF 16384

/* Bytes of the complete message at the start of buf[0..n): the head plus its
 * Content-Length body. 0: not complete yet. -1: malformed or larger than FWD_BUF. */
static inline long fwd_msg_len(const char *buf, size_t n)
{
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end)
        return n >= FWD_BUF ? -1 : 0;
    size_t head = (size_t)(end - buf) + 4;
    unsigned long body = 0;
    /* header lines start after the first CRLF; only Content-Length matters here */
    const char *p = memchr(buf, '\n', head);
    while (p && p + 1 < end) {
        p++;
        if ((size_t)(end - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) {
            const char *d = p + 15;
            while (*d == ' ' || *d == '\t')
                d++;
            if (*d < '0' || *d > '9')
                return -1;
            for (body = 0; *d >= '0' && *d <= '9'; d++)
                if ((body = body * 10 + (unsigned long)(*d - '0')) > FWD_BUF)
                    return -1;
        }
        p = memchr(p, '\n', (size_t)(end - p) + 1);
    }
    if (head + body > FWD_BUF)
        return -1;
    return head + body <= n ? (long)(head + body) : 0;
}

static inline void fwd_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Blocking connect to 127.0.0.1:port, once per client connection (keep-alive, so outside
 * the per-request path); both loops call it the same way so setup costs cancel out. */
static inline int fwd_connect_upstream(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    fwd_nodelay(fd);
    return fd;
}

/* Listening socket on 127.0.0.1:port (non-blocking for epoll's accept loop). */
static inline int fwd_listen(int port, int nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    int one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline int fwd_args(int argc, char **argv, int *port, int *up_port)
{
    if (argc < 3 || (*port = atoi(argv[1])) <= 0 || (*up_port = atoi(argv[2])) <= 0) {
        fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT [options]\n", argv[0]);
        return -1;
    }
    return 0;
}

#endif
