#include "core/loop.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/recvq.h"
#include "core/sendq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define MAX_HOOKS 4

struct keel_loop {
    int epfd;
    bool stop;
    int64_t now_us, wall_us;
    /* timers: binary min-heap on when_ms */
    struct keel_timer **heap;
    size_t nheap, capheap;
    struct keel_defer *deferred;
    struct { keel_hook_cb cb; void *arg; } hooks[MAX_HOOKS];
    int nhooks;
    struct keel_sendq *sendq; /* NULL: writes are the caller's write(2) */
    struct keel_recvq *recvq; /* ring reads; the loop then sleeps in sendq's ring */
    bool epoll_more;          /* the last epoll_wait reported: look again without sleeping */
};

int64_t keel_clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t keel_clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void keel_loop_update_clock(struct keel_loop *l)
{
    l->now_us = keel_clock_mono_us();
    l->wall_us = keel_clock_wall_us();
}

int64_t keel_loop_now_ms(const struct keel_loop *l) { return l->now_us / 1000; }
int64_t keel_loop_now_us(const struct keel_loop *l) { return l->now_us; }
int64_t keel_loop_wall_us(const struct keel_loop *l) { return l->wall_us; }

struct keel_loop *keel_loop_new(void)
{
    struct keel_loop *l = keel_calloc(1, sizeof(*l));
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        keel_log_error("epoll_create1: %s", strerror(errno));
        free(l);
        return NULL;
    }
    keel_loop_update_clock(l);
    return l;
}

void keel_loop_free(struct keel_loop *l)
{
    if (l == NULL)
        return;
    close(l->epfd);
    keel_sendq_free(l->sendq);
    free(l->heap);
    free(l);
}

void keel_loop_stop(struct keel_loop *l) { l->stop = true; }

static int add(struct keel_loop *l, struct keel_io *io, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = io };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0) {
        keel_log_error("epoll_ctl(ADD, %d): %s", io->fd, strerror(errno));
        return -1;
    }
    io->polled = true;
    return 0;
}

int keel_loop_add(struct keel_loop *l, struct keel_io *io)
{
    if (l->recvq == NULL || !io->ring_reads)
        return add(l, io, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
    /* input comes from the ring; epoll still tells when a full socket has room again */
    if (add(l, io, EPOLLOUT | EPOLLET) < 0)
        return -1;
    if (!io->connecting)
        keel_recvq_arm(l->recvq, io);
    return 0;
}

void keel_loop_connected(struct keel_loop *l, struct keel_io *io)
{
    io->connecting = false;
    if (l->recvq != NULL && io->ring_reads && io->polled && !keel_io_ring_reads(io))
        keel_recvq_arm(l->recvq, io);
}

int keel_loop_add_in(struct keel_loop *l, struct keel_io *io)
{
    return add(l, io, EPOLLIN);
}

void keel_loop_del(struct keel_loop *l, struct keel_io *io)
{
    if (keel_io_send_queued(io))
        keel_sendq_drop(l->sendq, io);
    if (keel_io_ring_reads(io))
        keel_recvq_drop(l->recvq, io);
    if (io->fd >= 0)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->polled = false;
}

bool keel_loop_use_sendq(struct keel_loop *l, bool reads)
{
    int err = 0;
    if (l->sendq == NULL) {
        l->sendq = keel_sendq_new(&err);
        if (l->sendq == NULL) {
            keel_log_info("io_uring not available (%s): writes are not batched", strerror(err));
            return false;
        }
    }
    if (reads && l->recvq == NULL) {
        l->recvq = keel_sendq_use_reads(l->sendq, l->epfd, &err);
        if (l->recvq == NULL)
            keel_log_info("io_uring cannot receive here (%s): reads are read(2)", strerror(err));
    }
    return true;
}

bool keel_loop_ring_reads(const struct keel_loop *l) { return l->recvq != NULL; }

bool keel_loop_send_later(struct keel_loop *l, struct keel_io *io, struct keel_buf *b)
{
    if (keel_io_send_queued(io))
        return true;
    if (l->sendq == NULL || !io->polled || !io->writable || keel_buf_len(b) == 0 ||
        keel_sendq_full(l->sendq))
        return false;
    keel_sendq_add(l->sendq, io, b);
    return true;
}

static void on_pause_end(struct keel_timer *t)
{
    struct keel_io_pause *p =
        (struct keel_io_pause *)((char *)t - offsetof(struct keel_io_pause, timer));
    if (p->io->fd >= 0)
        add(p->loop, p->io, EPOLLIN);
}

void keel_loop_pause_in(struct keel_loop *l, struct keel_io *io, struct keel_io_pause *p,
                        int64_t ms)
{
    if (keel_loop_paused(p))
        return;
    keel_loop_del(l, io);
    p->loop = l;
    p->io = io;
    p->timer.cb = on_pause_end;
    keel_timer_set(l, &p->timer, ms);
}

void keel_loop_pause_cancel(struct keel_io_pause *p)
{
    if (p->loop != NULL)
        keel_timer_cancel(p->loop, &p->timer);
}

/* ---- timer heap ---- */

static void heap_put(struct keel_loop *l, size_t i, struct keel_timer *t)
{
    l->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(struct keel_loop *l, size_t i)
{
    struct keel_timer *t = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->when_ms <= t->when_ms)
            break;
        heap_put(l, i, l->heap[parent]);
        i = parent;
    }
    heap_put(l, i, t);
}

static void sift_down(struct keel_loop *l, size_t i)
{
    struct keel_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->when_ms < l->heap[c]->when_ms)
            c++;
        if (t->when_ms <= l->heap[c]->when_ms)
            break;
        heap_put(l, i, l->heap[c]);
        i = c;
    }
    heap_put(l, i, t);
}

void keel_timer_cancel(struct keel_loop *l, struct keel_timer *t)
{
    if (t->slot == 0)
        return;
    size_t i = t->slot - 1;
    t->slot = 0;
    l->nheap--;
    if (i == l->nheap)
        return;
    heap_put(l, i, l->heap[l->nheap]);
    sift_down(l, i);
    sift_up(l, l->heap[i]->slot - 1);
}

void keel_timer_set(struct keel_loop *l, struct keel_timer *t, int64_t after_ms)
{
    int64_t due = keel_loop_now_ms(l) + after_ms;
    if (t->slot != 0 && due >= t->when_ms) {
        /* later than its place in the heap (a session re-arms its timer several times a
         * request, each later than the last): keep the place, run_timers re-files it */
        t->due_ms = due;
        return;
    }
    keel_timer_cancel(l, t);
    t->when_ms = t->due_ms = due;
    if (l->nheap == l->capheap) {
        l->capheap = l->capheap ? l->capheap * 2 : 64;
        l->heap = keel_realloc(l->heap, l->capheap * sizeof(*l->heap));
    }
    heap_put(l, l->nheap++, t);
    sift_up(l, l->nheap - 1);
}

static void run_timers(struct keel_loop *l)
{
    int64_t now = keel_loop_now_ms(l);
    while (l->nheap > 0 && l->heap[0]->when_ms <= now) {
        struct keel_timer *t = l->heap[0];
        if (t->due_ms > now) { /* moved later since it was filed: file it again */
            t->when_ms = t->due_ms;
            sift_down(l, 0);
            continue;
        }
        keel_timer_cancel(l, t);
        t->cb(t);
    }
}

static int poll_timeout(const struct keel_loop *l)
{
    /* deferred work, or sends queued after the flush (by deferred callbacks, hooks):
     * poll without sleeping, and come back to them */
    if (l->deferred != NULL || (l->sendq != NULL && keel_sendq_pending(l->sendq)) ||
        l->epoll_more || (l->recvq != NULL && keel_recvq_ready(l->recvq)))
        return 0;
    if (l->nheap == 0)
        return 1000;
    int64_t d = l->heap[0]->when_ms - keel_loop_now_ms(l);
    return d < 0 ? 0 : d > 1000 ? 1000 : (int)d;
}

/* ---- deferred callbacks and hooks ---- */

void keel_loop_defer(struct keel_loop *l, struct keel_defer *d)
{
    if (d->queued)
        return;
    d->queued = true;
    d->next = l->deferred;
    l->deferred = d;
}

void keel_loop_run_deferred(struct keel_loop *l)
{
    while (l->deferred != NULL) {
        struct keel_defer *d = l->deferred;
        l->deferred = NULL;
        /* callbacks may defer more; those run in the next pass of this while */
        while (d != NULL) {
            struct keel_defer *next = d->next;
            d->queued = false;
            d->cb(d);
            d = next;
        }
    }
}

void keel_loop_on_before_sleep(struct keel_loop *l, keel_hook_cb cb, void *arg)
{
    if (l->nhooks == MAX_HOOKS)
        abort(); /* a programming error: the table is static */
    l->hooks[l->nhooks].cb = cb;
    l->hooks[l->nhooks].arg = arg;
    l->nhooks++;
}

/* Poll the epoll set, waiting up to timeout_ms, and run the callbacks of what it reports;
 * tick: read the clock after the wait (the turn's one reading). False on a failure that
 * ends the loop. */
static bool poll_epoll(struct keel_loop *l, int timeout_ms, bool tick)
{
    struct epoll_event events[MAX_EVENTS];
    int n = epoll_wait(l->epfd, events, MAX_EVENTS, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return true;
        keel_log_error("epoll_wait: %s", strerror(errno));
        return false;
    }
    /* under ring reads the ring's poll of the set fires on new readiness only: what a
     * level-triggered io still has (a listener's backlog) is looked at again next turn */
    l->epoll_more = n > 0 && l->recvq != NULL;
    if (tick)
        keel_loop_update_clock(l);
    for (int i = 0; i < n; i++) {
        struct keel_io *io = events[i].data.ptr;
        uint32_t ev = events[i].events;
        if (!io->polled) /* deleted by an earlier callback of this batch (its memory
                          * lives on: owners free through keel_loop_defer) */
            continue;
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            io->readable = true;
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            io->writable = true;
        if (ev & (EPOLLHUP | EPOLLERR))
            io->hup = true;
        if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            io->rdhup = true;
        io->cb(io, ev);
    }
    return true;
}

void keel_loop_run(struct keel_loop *l)
{
    l->stop = false;
    keel_loop_update_clock(l);
    /* the clock is read once a turn, when the wait returns (as nginx does): the callbacks,
     * the timers and the next turn's hooks see the time of their events */
    while (!l->stop) {
        run_timers(l);
        keel_loop_run_deferred(l);
        if (l->sendq != NULL && l->recvq == NULL) { /* with ring reads: in the wait */
            keel_sendq_flush(l->sendq);
            keel_loop_run_deferred(l); /* the callbacks' closes */
        }
        for (int i = 0; i < l->nhooks; i++)
            l->hooks[i].cb(l->hooks[i].arg);
        if (l->stop)
            break;
        if (l->recvq == NULL) {
            if (!poll_epoll(l, poll_timeout(l), true))
                break;
        } else {
            /* the ring is where the loop sleeps: one enter sends the turn's writes,
             * receives, and polls the epoll set */
            bool epoll_ready = keel_sendq_wait(l->sendq, poll_timeout(l));
            keel_loop_update_clock(l);
            if ((epoll_ready || l->epoll_more) && !poll_epoll(l, 0, false))
                break;
            keel_recvq_dispatch(l->recvq);
        }
        keel_loop_run_deferred(l);
    }
    keel_loop_run_deferred(l);
}
