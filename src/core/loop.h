/* One epoll event loop per thread (STYLE.md "Event loop"). Each iteration, in order: run
 * expired timers and deferred callbacks, the before-sleep hooks (flush batched output such
 * as access-log lines), poll with the nearest timer as timeout, update the cached clock
 * (once a turn, after the wait), dispatch I/O, run deferred callbacks (frees of closed
 * objects). With ring reads the poll is an
 * io_uring_enter that also sends the turn's writes and receives, the epoll set one of
 * its polls (keel_loop_use_sendq).
 * I/O is edge-triggered: an io remembers readiness until a read/write says EAGAIN, and
 * remembers a FIN (rdhup) for good, so that an EOF that arrived with data is not lost. */
#ifndef KEEL_CORE_LOOP_H
#define KEEL_CORE_LOOP_H

#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct keel_loop;
struct keel_recvq;
struct keel_io;
struct keel_timer;
struct keel_defer;

typedef void (*keel_io_cb)(struct keel_io *io, uint32_t events);
typedef void (*keel_timer_cb)(struct keel_timer *t);
typedef void (*keel_defer_cb)(struct keel_defer *d);
typedef void (*keel_hook_cb)(void *arg);

/* An io's ring reads (core/recvq.c): what the kernel received for it, not taken yet. */
struct keel_io_rx {
    struct keel_recvq *q; /* NULL: the io's reads are read(2) */
    struct keel_buf buf;  /* received, not taken yet */
    uint32_t slot;        /* its recv's slot in q + 1 */
    uint32_t ready;       /* its place in q's list of ios to call + 1; 0 = not there */
    int err;              /* the recv ended with this errno: reads fail after the bytes */
    bool eof;             /* the recv saw the FIN: reads return 0 after the bytes */
};

struct keel_io {
    int fd;
    keel_io_cb cb;
    bool ring_reads; /* its owner reads it with keel_io_recv only: the loop may receive
                      * for it (set before keel_loop_add) */
    bool connecting; /* its connect is in progress: no recv until keel_loop_connected (a
                      * recv would take the connect's error, which SO_ERROR then lacks) */
    bool readable; /* an edge said so and no read has hit EAGAIN since */
    bool writable;
    bool hup;      /* peer hung up or error */
    bool rdhup;    /* the peer's FIN (or an error) was seen: once the bytes before it are
                    * read, a read returns 0. Edge-triggered input reports FIN together with
                    * the last bytes, so a short read does not prove the socket drained. */
    bool polled;   /* between keel_loop_add and keel_loop_del: an io deleted by a callback
                    * gets no event left over from the batch being dispatched */
    /* keel_loop_send_later: the buffer whose bytes go out with this turn's batch, its
     * place in the batch (+1; 0 = none), and the errno a batched send failed with */
    struct keel_buf *send_buf;
    uint32_t send_slot;
    int send_err;
    struct keel_io_rx rx;
};

struct keel_timer {
    int64_t when_ms; /* monotonic deadline: the heap's key */
    int64_t due_ms;  /* the deadline asked for; >= when_ms (moved later without a re-sift) */
    size_t slot;     /* heap index + 1; 0 = not armed */
    keel_timer_cb cb;
};

struct keel_defer {
    struct keel_defer *next;
    keel_defer_cb cb;
    bool queued;
};

struct keel_loop *keel_loop_new(void);
void keel_loop_free(struct keel_loop *l);
/* A level-triggered input taken out of the poll set for a while: a listener whose
 * accept failed for want of file descriptors would otherwise be reported ready again at
 * once, and spin. Owned by the io's owner; cancel with keel_loop_pause_cancel. */
struct keel_io_pause {
    struct keel_timer timer;
    struct keel_loop *loop;
    struct keel_io *io;
};

/* Run deferred callbacks now (after the loop has stopped, to finish closes). */
void keel_loop_run_deferred(struct keel_loop *l);
/* Run until keel_loop_stop. */
void keel_loop_run(struct keel_loop *l);
void keel_loop_stop(struct keel_loop *l);

/* Register fd for EPOLLIN|EPOLLOUT|EPOLLRDHUP, edge-triggered. An io with ring_reads set,
 * in a loop with ring reads on (keel_loop_use_sendq with reads), is not polled for input:
 * the loop receives its bytes (io_uring multishot recv) and runs its callback with EPOLLIN
 * (EPOLLRDHUP at the FIN, EPOLLERR on an error) as an edge would. */
int keel_loop_add(struct keel_loop *l, struct keel_io *io);
/* For an io with ring reads (keel_io_ring_reads): take at most max of the bytes the loop
 * received for it into b, as read(2) would: >0, 0 at EOF, KEEL_AGAIN (io no longer
 * readable) or KEEL_EIO (errno set), the bytes before an EOF or an error first. */
ssize_t keel_io_recv(struct keel_io *io, struct keel_buf *b, size_t max);
static inline bool keel_io_ring_reads(const struct keel_io *io) { return io->rx.q != NULL; }
/* io (added with connecting set) is connected: the loop may receive for it now. */
void keel_loop_connected(struct keel_loop *l, struct keel_io *io);
/* Register for input only, level-triggered (listeners, eventfds, signalfd, inotify). */
int keel_loop_add_in(struct keel_loop *l, struct keel_io *io);
/* Deleting an io with a send queued writes it at once (as write(2) would have) and
 * drops it from the batch. */
void keel_loop_del(struct keel_loop *l, struct keel_io *io);

/* Batched sends (io_uring): a loop turn's writes go to the kernel in one io_uring_enter
 * before the loop polls again, instead of a write(2) each. keel_loop_use_sendq turns it
 * on (false when io_uring is not available: writes stay synchronous).
 * keel_loop_send_later(l, io, b) queues io (polled, writable) to send what b holds when
 * the batch goes; b must stay alive until then or until keel_loop_del. It returns false
 * when there is no batch or it is full (KEEL_SENDQ_MAX), and the caller writes itself. While queued the io reads as not
 * writable. When the send is done (some or all of b consumed) the io's callback runs with
 * EPOLLOUT and io->writable set, as after an edge; a send that found no room leaves it
 * unwritable for the next edge; a failed one sets io->send_err.
 * With reads, the ring also receives for the ios with ring_reads (keel_loop_add) and the
 * loop sleeps in io_uring_enter, not epoll_wait (the epoll set is one of the ring's polls);
 * without ring reads where the kernel lacks them. */
bool keel_loop_use_sendq(struct keel_loop *l, bool reads);
bool keel_loop_ring_reads(const struct keel_loop *l);
bool keel_loop_send_later(struct keel_loop *l, struct keel_io *io, struct keel_buf *b);
static inline bool keel_io_send_queued(const struct keel_io *io) { return io->send_slot != 0; }
/* Take io (registered with keel_loop_add_in) out of the poll set for ms, then put it back.
 * Pausing a paused io restarts nothing: the first deadline holds. */
void keel_loop_pause_in(struct keel_loop *l, struct keel_io *io, struct keel_io_pause *p,
                        int64_t ms);
/* Forget a pause (the io is being closed); the io is not put back. */
void keel_loop_pause_cancel(struct keel_io_pause *p);
static inline bool keel_loop_paused(const struct keel_io_pause *p)
{
    return p->timer.slot != 0;
}

void keel_timer_set(struct keel_loop *l, struct keel_timer *t, int64_t after_ms);
void keel_timer_cancel(struct keel_loop *l, struct keel_timer *t);
static inline bool keel_timer_armed(const struct keel_timer *t) { return t->slot != 0; }

/* Run cb after the current dispatch round (never while the object may still be in the
 * event batch being dispatched). Queuing twice is a no-op. */
void keel_loop_defer(struct keel_loop *l, struct keel_defer *d);
/* Called just before the loop sleeps; at most 4 hooks. */
void keel_loop_on_before_sleep(struct keel_loop *l, keel_hook_cb cb, void *arg);

/* Cached clocks, updated once per iteration. */
int64_t keel_loop_now_ms(const struct keel_loop *l);   /* monotonic */
int64_t keel_loop_now_us(const struct keel_loop *l);   /* monotonic */
int64_t keel_loop_wall_us(const struct keel_loop *l);  /* epoch microseconds */
void keel_loop_update_clock(struct keel_loop *l);

/* Uncached clocks. */
int64_t keel_clock_mono_us(void);
int64_t keel_clock_wall_us(void);

#endif
