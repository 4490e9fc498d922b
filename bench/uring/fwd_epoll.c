/* fwd_epoll: a minimal HTTP/1.1 keep-alive forwarder on epoll, the baseline for fwd_uring.
 * One thread; each client connection gets its own upstream connection; one request in
 * flight per connection (wrk does not pipeline). Edge-triggered like keel's loop: one read
 * per readiness unless it filled the buffer, one write per message, 256 events a wait. */
#include "fwd_http.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>

enum state { IDLE, WAIT_RES, SENDING_RES };

struct conn;
struct end { struct conn *c; int fd; };

struct conn {
    struct end cl, up;
    enum state st;
    long req_len;                 /* bytes of creq being forwarded */
    struct end *wr_to;            /* a write the socket did not take whole */
    const char *wr_p;
    size_t wr_left;
    int dead;
    struct conn *prev, *next;     /* every live conn, to free them at exit */
    struct conn *next_dead;       /* freed after the batch: later events may name it */
    size_t creq_len, ures_len;
    char creq[FWD_BUF], ures[FWD_BUF];
};

static struct conn *live, *dead;
static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static void kill_conn(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    close(c->cl.fd);              /* close removes the fds from the epoll set */
    close(c->up.fd);
    if (c->prev) c->prev->next = c->next; else live = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next_dead = dead;
    dead = c;
}

/* One write per message; what the socket does not take waits for EPOLLOUT. */
static int write_msg(struct conn *c, struct end *to, const char *p, size_t n)
{
    ssize_t w = write(to->fd, p, n);
    if (w < 0 && errno != EAGAIN)
        return -1;
    if (w < 0)
        w = 0;
    c->wr_to = to;
    c->wr_p = p + w;
    c->wr_left = n - (size_t)w;
    return 0;
}

/* Move the connection on as far as its buffers allow. */
static void advance(struct conn *c)
{
    while (!c->dead && c->wr_left == 0) {
        if (c->st == IDLE) {
            long m = fwd_msg_len(c->creq, c->creq_len);
            if (m <= 0) {
                if (m < 0) kill_conn(c);
                return;
            }
            c->req_len = m;
            c->st = WAIT_RES;
            if (write_msg(c, &c->up, c->creq, (size_t)m) < 0) kill_conn(c);
        } else if (c->st == WAIT_RES) {
            long r = fwd_msg_len(c->ures, c->ures_len);
            if (r <= 0 || (size_t)r != c->ures_len) {  /* bytes past the response: no */
                if (r != 0) kill_conn(c);
                return;
            }
            c->st = SENDING_RES;
            if (write_msg(c, &c->cl, c->ures, (size_t)r) < 0) kill_conn(c);
        } else {                  /* response written: the next request, if any */
            c->creq_len -= (size_t)c->req_len;
            memmove(c->creq, c->creq + c->req_len, c->creq_len);
            c->ures_len = 0;
            c->st = IDLE;
        }
    }
}

static void on_readable(struct end *e)
{
    struct conn *c = e->c;
    char *buf = e == &c->cl ? c->creq : c->ures;
    size_t *len = e == &c->cl ? &c->creq_len : &c->ures_len;
    for (;;) {
        size_t room = FWD_BUF - *len;
        if (room == 0) { kill_conn(c); return; }
        ssize_t n = read(e->fd, buf + *len, room);
        if (n > 0) {
            *len += (size_t)n;
            if ((size_t)n == room) continue;   /* filled: more may wait (edge-triggered) */
            break;
        }
        if (n < 0 && errno == EAGAIN) break;
        if (n < 0 && errno == EINTR) continue;
        kill_conn(c);             /* EOF or error on either side ends both */
        return;
    }
    advance(c);
}

static void on_writable(struct end *e)
{
    struct conn *c = e->c;
    if (c->wr_to != e || c->wr_left == 0)
        return;
    ssize_t w = write(e->fd, c->wr_p, c->wr_left);
    if (w < 0) {
        if (errno != EAGAIN) kill_conn(c);
        return;
    }
    c->wr_p += w;
    c->wr_left -= (size_t)w;
    advance(c);
}

static int add_end(int ep, struct end *e)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = e};
    return epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &ev);
}

static void accept_all(int ep, int lfd, int up_port)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;               /* EAGAIN: drained; anything else: next readiness */
        int ufd = fwd_connect_upstream(up_port);
        struct conn *c = ufd < 0 ? NULL : calloc(1, sizeof *c);
        if (!c) {
            if (ufd >= 0) close(ufd);
            close(fd);
            continue;
        }
        fcntl(ufd, F_SETFL, O_NONBLOCK);
        fwd_nodelay(fd);
        c->cl = (struct end){c, fd};
        c->up = (struct end){c, ufd};
        c->next = live;
        if (live) live->prev = c;
        live = c;
        if (add_end(ep, &c->cl) < 0 || add_end(ep, &c->up) < 0)
            kill_conn(c);
    }
}

int main(int argc, char **argv)
{
    int port, up_port;
    if (fwd_args(argc, argv, &port, &up_port) < 0)
        return 2;
    struct sigaction sa = {.sa_handler = on_term};   /* no SA_RESTART: the wait returns */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int lfd = fwd_listen(port, 1), ep = epoll_create1(EPOLL_CLOEXEC);
    if (lfd < 0 || ep < 0) {
        perror("fwd_epoll: listen");
        return 1;
    }
    struct epoll_event lev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct end *e = evs[i].data.ptr;
            if (!e) {
                accept_all(ep, lfd, up_port);
                continue;
            }
            if (e->c->dead)
                continue;
            if (evs[i].events & EPOLLERR) {
                kill_conn(e->c);
                continue;
            }
            if (evs[i].events & EPOLLOUT) on_writable(e);
            if ((evs[i].events & (EPOLLIN | EPOLLHUP)) && !e->c->dead) on_readable(e);
        }
        while (dead) {
            struct conn *c = dead;
            dead = c->next_dead;
            free(c);
        }
    }
    while (live)
        kill_conn(live);
    while (dead) {
        struct conn *c = dead;
        dead = c->next_dead;
        free(c);
    }
    close(ep);
    close(lfd);
    return 0;
}
