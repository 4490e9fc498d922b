/* Upstream connections and the per-worker keep-alive pool. An idle connection stays
 * registered with epoll: if the server closes it or sends anything while it is idle, it
 * is closed at once rather than handed to the next request. */
#include "proxy/session_int.h" /* s->upgrade */

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define POOL_IDLE_MAX 1024          /* idle connections kept per target per worker */
#define POOL_IDLE_TIMEOUT_MS 60000
#define FREE_UPCONNS_MAX 4096
/* Pools kept with no connection: the registry's targets are few and stay; past this many,
 * as when passthrough (outboundTrafficPolicy ALLOW_ANY) meets many addresses, an unused
 * pool is freed with its last connection, as Envoy's original-destination hosts expire. */
#define POOLS_KEEP 256

static void on_io(struct keel_io *io, uint32_t events);
static void on_idle_timeout(struct keel_timer *t);
static void on_free(struct keel_defer *d);

static void upconn_close(struct upconn *u)
{
    struct worker *w = u->w;
    if (u->closed)
        return;
    u->closed = true;
    keel_timer_cancel(w->loop, &u->idle_timer);
    keel_loop_del(w->loop, &u->io);
    close(u->io.fd);
    u->io.fd = -1;
    keel_buf_release(&u->in);
    keel_buf_release(&u->out);
    keel_loop_defer(w->loop, &u->free_defer);
}

static uint32_t addr_hash(const struct keel_addr *a);

/* u is gone for good: its pool may go too when the worker holds many. */
static void pool_drop_conn(struct worker *w, struct pool *p)
{
    if (p == NULL || --p->n_conns > 0 || p->n_idle > 0 || w->n_pools <= POOLS_KEEP)
        return;
    for (struct pool **pp = &w->pools[addr_hash(&p->addr) % POOL_BUCKETS]; *pp != NULL; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            w->n_pools--;
            free(p);
            return;
        }
}

static void on_free(struct keel_defer *d)
{
    struct upconn *u = (struct upconn *)((char *)d - offsetof(struct upconn, free_defer));
    struct worker *w = u->w;
    pool_drop_conn(w, u->pool);
    u->pool = NULL;
    if (w->n_free_upconns < FREE_UPCONNS_MAX) {
        u->next = w->free_upconns;
        w->free_upconns = u;
        w->n_free_upconns++;
    } else {
        free(u);
    }
}

/* Unlink u from its pool's idle list. */
static void pool_remove(struct upconn *u)
{
    struct pool *p = u->pool;
    for (struct upconn **pp = &p->idle; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            p->n_idle--;
            return;
        }
    }
}

static uint32_t addr_hash(const struct keel_addr *a)
{
    const unsigned char *p = (const unsigned char *)&a->ss;
    uint32_t h = 2166136261u;
    for (socklen_t i = 0; i < a->len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* The pool for an address, created on first use; pools live as long as the worker. */
static struct pool *pool_of(struct worker *w, const struct keel_addr *a)
{
    struct pool **head = &w->pools[addr_hash(a) % POOL_BUCKETS];
    for (struct pool *p = *head; p != NULL; p = p->next)
        if (p->addr.len == a->len && memcmp(&p->addr.ss, &a->ss, a->len) == 0)
            return p;
    struct pool *p = keel_calloc(1, sizeof(*p));
    p->addr = *a;
    p->next = *head;
    *head = p;
    w->n_pools++;
    return p;
}

struct upconn *upconn_new(struct worker *w, struct pool *p, struct session *s)
{
    struct upconn *u = w->free_upconns;
    if (u != NULL) {
        w->free_upconns = u->next;
        w->n_free_upconns--;
        memset(u, 0, sizeof(*u));
    } else {
        u = keel_calloc(1, sizeof(*u));
    }
    u->w = w;
    u->pool = p;
    u->s = s;
    u->free_defer.cb = on_free;
    return u;
}

void upconn_recycle(struct upconn *u)
{
    u->closed = true;
    keel_buf_release(&u->in);
    keel_buf_release(&u->out);
    keel_loop_defer(u->w->loop, &u->free_defer);
}

struct upconn *upconn_acquire(struct worker *w, const struct keel_proxy_target *t,
                              struct session *s, bool fresh, int *err)
{
    struct pool *p = pool_of(w, &t->addr);
    /* a stream on a shared HTTP/2 connection; an Upgrade (WebSocket) has no HTTP/2 form
     * here, so it keeps HTTP/1.1 (the next sidecar takes both) */
    if (t->h2 && !s->upgrade)
        return h2_up_acquire(w, p, s, err);
    struct upconn *u = p->idle;
    if (!fresh && u != NULL) {
        p->idle = u->next;
        p->n_idle--;
        keel_timer_cancel(w->loop, &u->idle_timer);
        u->s = s;
        u->reused = true;
        stat_add(&w->stats.upstream_cx_reused, 1);
        return u;
    }
    u = w->free_upconns;
    if (u != NULL) {
        w->free_upconns = u->next;
        w->n_free_upconns--;
        memset(u, 0, sizeof(*u));
    } else {
        u = keel_calloc(1, sizeof(*u));
    }
    u->w = w;
    u->pool = p;
    p->n_conns++;
    u->s = s;
    u->io.cb = on_io;
    u->idle_timer.cb = on_idle_timeout;
    u->free_defer.cb = on_free;
    stat_add(&w->stats.upstream_cx_total, 1);
    int rc = keel_sock_connect(&p->addr, &u->io.fd);
    if (rc == KEEL_EIO) {
        *err = errno;
        u->io.fd = -1;
        u->closed = true;
        keel_loop_defer(w->loop, &u->free_defer);
        return NULL;
    }
    u->io.ring_reads = true; /* every read is session_read's */
    u->io.connecting = rc != 0;
    if (keel_loop_add(w->loop, &u->io) < 0) {
        *err = errno;
        u->s = NULL;
        upconn_close(u);
        return NULL;
    }
    if (rc == 0) {
        u->connected = true;
        struct keel_addr local;
        keel_sock_local(u->io.fd, &local);
        keel_addr_format((const struct sockaddr *)&local.ss, u->local, sizeof(u->local));
    }
    return u;
}

void upconn_release(struct upconn *u, bool reusable)
{
    struct worker *w = u->w;
    struct pool *p = u->pool;
    u->s = NULL;
    if (u->io.fd == UPCONN_VIRTUAL_FD) {
        h2_up_release(u);
        upconn_recycle(u);
        return;
    }
    if (!reusable || w->draining || u->closed || p->n_idle >= POOL_IDLE_MAX || u->io.hup ||
        u->io.rdhup) { /* the server said it is done with this connection */
        upconn_close(u);
        return;
    }
    keel_buf_release(&u->in);
    keel_buf_release(&u->out);
    u->next = p->idle;
    p->idle = u;
    p->n_idle++;
    keel_timer_set(w->loop, &u->idle_timer, POOL_IDLE_TIMEOUT_MS);
}

void upconn_pool_close_all(struct worker *w)
{
    h2_up_close_all(w);
    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        for (struct pool *p = w->pools[i]; p != NULL; p = p->next) {
            while (p->idle != NULL) {
                struct upconn *u = p->idle;
                p->idle = u->next;
                p->n_idle--;
                upconn_close(u);
            }
        }
    }
}

static void on_idle_timeout(struct keel_timer *t)
{
    struct upconn *u = (struct upconn *)((char *)t - offsetof(struct upconn, idle_timer));
    pool_remove(u);
    upconn_close(u);
}

static void on_io(struct keel_io *io, uint32_t events)
{
    struct upconn *u = (struct upconn *)io;
    if (u->closed)
        return;
    struct session *s = u->s;
    if (s == NULL) {
        /* idle in the pool: EOF or unexpected bytes make it unusable */
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            pool_remove(u);
            upconn_close(u);
        }
        return;
    }
    if (!u->connected) {
        if (!io->writable && !io->hup)
            return;
        int err = keel_sock_connect_result(io->fd);
        if (err != 0) {
            u->s = NULL;
            upconn_close(u);
            session_upstream_failed(s, err);
            session_on_upstream(s);
            return;
        }
        u->connected = true;
        io->hup = false;
        keel_loop_connected(u->w->loop, io);
        struct keel_addr local;
        keel_sock_local(io->fd, &local);
        keel_addr_format((const struct sockaddr *)&local.ss, u->local, sizeof(u->local));
        session_upstream_connected(s);
    }
    session_on_upstream(s);
}

void upconn_free_recycled(struct worker *w)
{
    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        while (w->pools[i] != NULL) {
            struct pool *p = w->pools[i];
            w->pools[i] = p->next;
            free(p);
        }
    }
    while (w->free_upconns != NULL) {
        struct upconn *u = w->free_upconns;
        w->free_upconns = u->next;
        free(u);
    }
    w->n_free_upconns = 0;
}
