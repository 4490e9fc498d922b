/* Ring reads: each proxied socket has one multishot recv armed in the loop's io_uring, and
 * the kernel copies what arrives into buffers of a provided-buffer ring; the loop appends
 * it to the io's rx buffer and runs the io's callback as for an EPOLLIN edge. The reader
 * takes the bytes with keel_io_recv instead of read(2): a request's two reads and the
 * epoll work behind them leave the request path (they ride the loop's one enter a turn).
 *
 * Backpressure as with read(2): once KEEL_RECVQ_HIGH bytes wait unread in an io, its recv
 * is cancelled and the socket's buffer fills; it is armed again when the reader has taken
 * everything (the rx storage, grown by the pass that overshot, is kept meanwhile). A recv
 * ends by itself on EOF, an error, or no free ring buffer (ENOBUFS: it is armed again at
 * once; the buffers of a turn are given back as they are copied).
 *
 * A recv outlives its io when the io is deleted while armed: its slot is orphaned and
 * cancelled, and freed only by the recv's last completion (no F_MORE), so a completion
 * never reaches an io that is gone nor a slot that serves another io. */
#include "core/recvq.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/err.h"
#include "core/sendq.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/types.h>

#define NBUFS 128  /* a turn's completions at most before ENOBUFS (power of two) */
#define BUFSZ 4096 /* a completion's bytes at most */
_Static_assert(NBUFS * BUFSZ == KEEL_RECVQ_PASS, "recvq.h says what one pass brings");
#define BGID 0

enum slot_state {
    S_FREE,      /* on the free list */
    S_ARMED,     /* a multishot recv runs */
    S_CANCELING, /* cancelled, its last completion not seen yet */
    S_IDLE,      /* no recv runs (paused for backpressure, or ended) */
};

struct slot {
    struct keel_io *io; /* NULL: orphaned (the io was deleted) */
    uint8_t state;
    uint32_t next_free;
};

struct keel_recvq {
    struct io_uring *ring;
    struct io_uring_buf_ring *br;
    char *bufs;
    struct slot *slots;
    uint32_t nslots, free_head; /* free_head: slot + 1, 0 = none */
    struct keel_io **ready;     /* got something since the last dispatch */
    size_t nready, cap_ready;
};

struct keel_recvq *keel_recvq_new(struct io_uring *ring, int *err)
{
    struct keel_recvq *rq = keel_calloc(1, sizeof(*rq));
    rq->ring = ring;
    /* zeroed: what the kernel writes there is invisible to valgrind, which must see the
     * bytes copied out of it as defined */
    rq->bufs = keel_calloc(NBUFS, BUFSZ);
    struct io_uring_buf_reg reg = { .ring_entries = NBUFS, .bgid = BGID };
    int rc = posix_memalign((void **)&rq->br, 4096, NBUFS * sizeof(struct io_uring_buf));
    if (rc == 0) {
        reg.ring_addr = (uintptr_t)rq->br;
        rc = -io_uring_register_buf_ring(ring, &reg, 0);
    }
    if (rc != 0) {
        *err = rc;
        free(rq->br);
        free(rq->bufs);
        free(rq);
        return NULL;
    }
    io_uring_buf_ring_init(rq->br);
    for (int i = 0; i < NBUFS; i++)
        io_uring_buf_ring_add(rq->br, rq->bufs + (size_t)i * BUFSZ, BUFSZ, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUFS), i);
    io_uring_buf_ring_advance(rq->br, NBUFS);
    return rq;
}

void keel_recvq_free(struct keel_recvq *rq)
{
    if (rq == NULL)
        return;
    free(rq->br); /* the ring is gone (keel_sendq_free): nothing refers to them now */
    free(rq->bufs);
    free(rq->slots);
    free(rq->ready);
    free(rq);
}

static uint32_t slot_alloc(struct keel_recvq *rq)
{
    if (rq->free_head == 0) {
        uint32_t n = rq->nslots ? rq->nslots * 2 : 64;
        rq->slots = keel_realloc(rq->slots, n * sizeof(*rq->slots));
        for (uint32_t i = n; i-- > rq->nslots;) {
            rq->slots[i] = (struct slot){ .state = S_FREE, .next_free = rq->free_head };
            rq->free_head = i + 1;
        }
        rq->nslots = n;
    }
    uint32_t s = rq->free_head - 1;
    rq->free_head = rq->slots[s].next_free;
    return s;
}

static void slot_free(struct keel_recvq *rq, uint32_t s)
{
    rq->slots[s] = (struct slot){ .state = S_FREE, .next_free = rq->free_head };
    rq->free_head = s + 1;
}

static void start_recv(struct keel_recvq *rq, uint32_t s)
{
    struct io_uring_sqe *sqe = keel_ring_sqe(rq->ring);
    io_uring_prep_recv_multishot(sqe, rq->slots[s].io->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, KEEL_RING_TAG(KEEL_RING_RECV, s));
    rq->slots[s].state = S_ARMED;
}

static void stop_recv(struct keel_recvq *rq, uint32_t s)
{
    struct io_uring_sqe *sqe = keel_ring_sqe(rq->ring);
    io_uring_prep_cancel64(sqe, KEEL_RING_TAG(KEEL_RING_RECV, s), 0);
    io_uring_sqe_set_data64(sqe, KEEL_RING_TAG(KEEL_RING_IGNORE, 0));
    rq->slots[s].state = S_CANCELING;
}

void keel_recvq_arm(struct keel_recvq *rq, struct keel_io *io)
{
    uint32_t s = slot_alloc(rq);
    rq->slots[s].io = io;
    io->rx.q = rq;
    io->rx.slot = s + 1;
    io->rx.eof = false;
    io->rx.err = 0;
    start_recv(rq, s);
}

void keel_recvq_drop(struct keel_recvq *rq, struct keel_io *io)
{
    uint32_t s = io->rx.slot - 1;
    rq->slots[s].io = NULL;
    if (rq->slots[s].state == S_ARMED)
        stop_recv(rq, s);
    else if (rq->slots[s].state == S_IDLE)
        slot_free(rq, s); /* nothing runs: no completion will come */
    if (io->rx.ready != 0)
        rq->ready[io->rx.ready - 1] = NULL;
    io->rx.ready = 0;
    io->rx.slot = 0;
    io->rx.q = NULL;
    keel_buf_release(&io->rx.buf);
}

static void mark_ready(struct keel_recvq *rq, struct keel_io *io)
{
    if (io->rx.ready != 0)
        return;
    if (rq->nready == rq->cap_ready) {
        rq->cap_ready = rq->cap_ready ? rq->cap_ready * 2 : 64;
        rq->ready = keel_realloc(rq->ready, rq->cap_ready * sizeof(*rq->ready));
    }
    rq->ready[rq->nready++] = io;
    io->rx.ready = (uint32_t)rq->nready;
}

/* The recv of slot s is not running: start it again unless the io is done (EOF, error)
 * or holds enough unread (backpressure: keel_io_recv restarts it). */
static void maybe_restart(struct keel_recvq *rq, uint32_t s)
{
    struct keel_io *io = rq->slots[s].io;
    if (rq->slots[s].state == S_IDLE && !io->rx.eof && io->rx.err == 0 &&
        keel_buf_len(&io->rx.buf) < KEEL_RECVQ_HIGH)
        start_recv(rq, s);
}

void keel_recvq_complete(struct keel_recvq *rq, uint32_t s, int res, uint32_t flags)
{
    struct slot *sl = &rq->slots[s];
    struct keel_io *io = sl->io;
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (io != NULL && res > 0)
            keel_buf_append(&io->rx.buf, rq->bufs + (size_t)bid * BUFSZ, (size_t)res);
        io_uring_buf_ring_add(rq->br, rq->bufs + (size_t)bid * BUFSZ, BUFSZ,
                              (unsigned short)bid, io_uring_buf_ring_mask(NBUFS), 0);
        io_uring_buf_ring_advance(rq->br, 1);
    }
    bool last = !(flags & IORING_CQE_F_MORE);
    if (last)
        sl->state = S_IDLE;
    if (io == NULL) {
        if (last)
            slot_free(rq, s);
        return;
    }
    if (res > 0) {
        mark_ready(rq, io);
        if (!last && sl->state == S_ARMED && keel_buf_len(&io->rx.buf) >= KEEL_RECVQ_HIGH)
            stop_recv(rq, s);
    } else if (res == 0) {
        io->rx.eof = true;
        mark_ready(rq, io);
    } else if (res != -ENOBUFS && res != -ECANCELED) {
        io->rx.err = -res;
        mark_ready(rq, io);
    }
    if (last)
        maybe_restart(rq, s);
}

bool keel_recvq_ready(const struct keel_recvq *rq) { return rq->nready > 0; }

void keel_recvq_dispatch(struct keel_recvq *rq)
{
    /* callbacks may delete ios of the list (their entries become NULL) but add none:
     * only completions add, and none are reaped here */
    for (size_t i = 0; i < rq->nready; i++) {
        struct keel_io *io = rq->ready[i];
        if (io == NULL)
            continue;
        io->rx.ready = 0;
        if (!io->polled)
            continue;
        uint32_t ev = EPOLLIN;
        io->readable = true;
        if (io->rx.eof || io->rx.err != 0) {
            io->rdhup = true;
            ev |= EPOLLRDHUP;
        }
        if (io->rx.err != 0) {
            io->hup = true;
            io->writable = true; /* its owner writes again and learns of the error */
            ev |= EPOLLERR;
        }
        io->cb(io, ev);
    }
    rq->nready = 0;
}

ssize_t keel_io_recv(struct keel_io *io, struct keel_buf *b, size_t max)
{
    struct keel_buf *rx = &io->rx.buf;
    size_t have = keel_buf_len(rx);
    if (have == 0) {
        if (io->rx.eof)
            return 0;
        if (io->rx.err != 0) {
            errno = io->rx.err;
            return KEEL_EIO;
        }
        io->readable = false;
        return KEEL_AGAIN;
    }
    keel_buf_reserve(b, max < 4096 ? max : 4096); /* as read(2) into b would */
    size_t n = keel_buf_room(b);
    n = n < max ? n : max;
    n = n < have ? n : have;
    memcpy(keel_buf_wptr(b), keel_buf_rptr(rx), n);
    b->wpos += n;
    keel_buf_consume(rx, n);
    if (keel_buf_len(rx) == 0) {
        struct keel_recvq *rq = io->rx.q;
        uint32_t s = io->rx.slot - 1;
        /* stopped for backpressure (a bulk transfer to a slow reader): the storage, grown
         * past the pooled size by a pass of the kernel's copying, stays for the next one
         * rather than go back to malloc each time */
        if (rq->slots[s].state == S_ARMED)
            keel_buf_release(rx);
        if (!io->rx.eof && io->rx.err == 0)
            io->readable = false; /* the next completion says when more came */
        maybe_restart(rq, s);
    }
    return (ssize_t)n;
}
