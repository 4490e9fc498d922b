/* keel mixer's HTTP endpoints (the prometheus handlers' /metrics, the monitoring port):
 * HTTP/1.1 GET, one request per connection, answered whole and closed. Scrapers and
 * probes need no more. A connection gets 10 s. */
#include "mixer/mixer_int.h"

#include "core/alloc.h"
#include "http/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HEAD 8192
#define CONN_TIMEOUT_MS 10000

struct mixer_http {
    struct keel_io io;
    struct mixer *m;
    mixer_http_fn fn;
    char addr[KEEL_ADDR_STRLEN];
    struct hconn *conns;
};

struct hconn {
    struct keel_io io;
    struct keel_timer timer;
    struct keel_defer free_defer;
    struct mixer_http *h;
    struct keel_buf in, out;
    struct hconn *next, *prev;
    bool responded, closed;
};

static void on_free(struct keel_defer *d) { free((char *)d - offsetof(struct hconn, free_defer)); }

static void hclose(struct hconn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct keel_loop *loop = c->h->m->loop;
    keel_timer_cancel(loop, &c->timer);
    keel_loop_del(loop, &c->io);
    close(c->io.fd);
    keel_buf_release(&c->in);
    keel_buf_release(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    keel_loop_defer(loop, &c->free_defer);
}

static void on_timeout(struct keel_timer *t) { hclose((struct hconn *)((char *)t - offsetof(struct hconn, timer))); }

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Bad Request";
    }
}

static void respond(struct hconn *c)
{
    const char *p = keel_buf_rptr(&c->in);
    size_t n = keel_buf_len(&c->in);
    const char *sp1 = memchr(p, ' ', n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(p + n - sp1 - 1)) : NULL;
    int status = 400;
    const char *ctype = "text/plain; charset=utf-8";
    struct keel_buf body = { 0 };
    if (sp2 != NULL) {
        const char *path = sp1 + 1;
        size_t plen = (size_t)(sp2 - path);
        const char *q = memchr(path, '?', plen);
        if (q)
            plen = (size_t)(q - path);
        if ((sp1 - p == 3 && !memcmp(p, "GET", 3)) || (sp1 - p == 4 && !memcmp(p, "HEAD", 4))) {
            c->h->fn(c->h->m, path, plen, &status, &ctype, &body);
        } else {
            status = 405;
            keel_buf_append_str(&body, "GET only\n");
        }
    } else {
        keel_buf_append_str(&body, "bad request line\n");
    }
    bool head = n >= 4 && !memcmp(p, "HEAD", 4);
    keel_buf_printf(&c->out, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                             "connection: close\r\n\r\n",
                    status, reason(status), ctype, keel_buf_len(&body));
    if (!head && keel_buf_len(&body))
        keel_buf_append(&c->out, keel_buf_rptr(&body), keel_buf_len(&body));
    keel_buf_release(&body);
    c->responded = true;
}

static void on_conn(struct keel_io *io, uint32_t events)
{
    struct hconn *c = (struct hconn *)io;
    while (!c->responded && io->readable) {
        keel_buf_reserve(&c->in, 4096);
        ssize_t r = read(io->fd, keel_buf_wptr(&c->in), keel_buf_room(&c->in));
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            io->readable = false;
            break;
        }
        if (r <= 0) {
            hclose(c);
            return;
        }
        c->in.wpos += (size_t)r;
        if (memmem(keel_buf_rptr(&c->in), keel_buf_len(&c->in), "\r\n\r\n", 4) ||
            memmem(keel_buf_rptr(&c->in), keel_buf_len(&c->in), "\n\n", 2))
            respond(c);
        else if (keel_buf_len(&c->in) > MAX_HEAD) {
            hclose(c);
            return;
        }
    }
    while (c->responded && keel_buf_len(&c->out)) {
        ssize_t w = write(io->fd, keel_buf_rptr(&c->out), keel_buf_len(&c->out));
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (w <= 0)
            break;
        keel_buf_consume(&c->out, (size_t)w);
    }
    if (c->responded && keel_buf_len(&c->out) == 0) {
        shutdown(io->fd, SHUT_WR);
        hclose(c);
    } else if (io->hup && !io->readable) {
        hclose(c);
    }
}

static void on_accept(struct keel_io *io, uint32_t events)
{
    struct mixer_http *h = (struct mixer_http *)io;
    for (int i = 0; i < 32; i++) {
        struct keel_addr peer;
        int fd = keel_sock_accept(io->fd, &peer);
        if (fd < 0)
            return;
        struct hconn *c = keel_calloc(1, sizeof(*c));
        c->h = h;
        c->io.fd = fd;
        c->io.cb = on_conn;
        c->timer.cb = on_timeout;
        c->free_defer.cb = on_free;
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        keel_timer_set(h->m->loop, &c->timer, CONN_TIMEOUT_MS);
        keel_loop_add(h->m->loop, &c->io);
    }
}

struct mixer_http *mixer_http_start(struct mixer *m, const char *addr, mixer_http_fn fn)
{
    struct keel_addr a;
    if (keel_addr_parse(addr, &a) < 0)
        return NULL;
    int fd = keel_sock_listen(&a, false);
    if (fd < 0)
        return NULL;
    struct mixer_http *h = keel_calloc(1, sizeof(*h));
    h->m = m;
    h->fn = fn;
    h->io.fd = fd;
    h->io.cb = on_accept;
    struct keel_addr bound;
    keel_sock_local(fd, &bound);
    keel_addr_format((const struct sockaddr *)&bound.ss, h->addr, sizeof(h->addr));
    keel_loop_add_in(m->loop, &h->io);
    return h;
}

const char *mixer_http_addr(const struct mixer_http *h) { return h->addr; }

void mixer_http_stop(struct mixer_http *h)
{
    if (!h)
        return;
    while (h->conns)
        hclose(h->conns);
    keel_loop_del(h->m->loop, &h->io);
    close(h->io.fd);
    keel_loop_run_deferred(h->m->loop);
    free(h);
}
