/* A loop turn's socket writes, sent together in one io_uring_enter (core/loop.h:
 * keel_loop_send_later). A proxied HTTP/1.1 request costs two reads and two writes; the
 * writes become a share of one enter per turn. Where a syscall is dear (page-table
 * isolation, a VM that traps them) that is most of what a proxy can still save.
 *
 * Sends go with MSG_DONTWAIT: the kernel does each one inline during the submit, or
 * answers -EAGAIN when the socket has no room (it then flags the socket, and epoll reports
 * the next EPOLLOUT edge as after a write(2)). So every completion is there when the
 * submit returns, and the buffers are only read during it. The submit does not wait:
 * a completion that is not there yet (none is expected) is waited for alone. */
#include "core/sendq.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define RING_ENTRIES 256
#define MAX_ROUNDS 8 /* per turn: a completion's callback may queue again (the rest) */

struct keel_sendq {
    struct io_uring ring;
    struct keel_io **q;     /* queued this turn (io->send_slot - 1 is the index) */
    struct keel_io **batch; /* being sent: callbacks may queue into q meanwhile */
    size_t nq, cap_q, cap_batch;
    bool broken; /* a submit failed: sends are made one by one (send_now) */
};

struct keel_sendq *keel_sendq_new(int *err)
{
    struct keel_sendq *sq = keel_calloc(1, sizeof(*sq));
    int rc = io_uring_queue_init(RING_ENTRIES, &sq->ring, IORING_SETUP_SUBMIT_ALL);
    if (rc == -EINVAL) /* before 5.18 */
        rc = io_uring_queue_init(RING_ENTRIES, &sq->ring, 0);
    if (rc < 0) {
        *err = -rc;
        free(sq);
        return NULL;
    }
    io_uring_register_ring_fd(&sq->ring); /* saves a file lookup per enter where it works */
    return sq;
}

void keel_sendq_free(struct keel_sendq *sq)
{
    if (sq == NULL)
        return;
    io_uring_queue_exit(&sq->ring);
    free(sq->q);
    free(sq->batch);
    free(sq);
}

void keel_sendq_add(struct keel_sendq *sq, struct keel_io *io, struct keel_buf *b)
{
    if (sq->nq == sq->cap_q) {
        sq->cap_q = sq->cap_q ? sq->cap_q * 2 : 64;
        sq->q = keel_realloc(sq->q, sq->cap_q * sizeof(*sq->q));
    }
    sq->q[sq->nq++] = io;
    io->send_slot = (uint32_t)sq->nq;
    io->send_buf = b;
    io->writable = false;
}

/* The io leaves the loop: what it queued is written now, as write(2) would have when it
 * was queued (a reply flushed just before a close). */
void keel_sendq_drop(struct keel_sendq *sq, struct keel_io *io)
{
    struct keel_buf *b = io->send_buf;
    sq->q[io->send_slot - 1] = NULL;
    io->send_slot = 0;
    io->send_buf = NULL;
    if (io->fd >= 0 && keel_buf_len(b) > 0) {
        ssize_t n = send(io->fd, keel_buf_rptr(b), keel_buf_len(b), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            keel_buf_consume(b, (size_t)n);
    }
}

/* The completion of one send: consume what went, and say how the io stands. */
static void complete(struct keel_io *io, int res)
{
    struct keel_buf *b = io->send_buf;
    io->send_buf = NULL;
    if (res >= 0) {
        keel_buf_consume(b, (size_t)res);
        if (keel_buf_len(b) == 0)
            keel_buf_release(b); /* back to the pool until there is more to send */
        io->writable = true; /* a short send: the rest goes next round or meets EAGAIN */
    } else if (res == -EAGAIN) {
        io->writable = false; /* the socket is flagged: an EPOLLOUT edge will come */
    } else {
        io->send_err = -res;
        io->writable = true; /* so that its owner writes again and learns of the error */
    }
}

/* One send made here and now: the way out when the ring cannot take it. */
static int send_now(const struct keel_io *io)
{
    ssize_t n = send(io->fd, keel_buf_rptr(io->send_buf), keel_buf_len(io->send_buf),
                     MSG_DONTWAIT | MSG_NOSIGNAL);
    return n >= 0 ? (int)n : -errno;
}

/* Send batch[0, n): one submit, then the completions (inline: already there). */
static void send_chunk(struct keel_sendq *sq, struct keel_io **batch, size_t n)
{
    int submitted = 0;
    if (!sq->broken) {
        for (size_t i = 0; i < n; i++) {
            struct keel_io *io = batch[i];
            struct io_uring_sqe *sqe = io_uring_get_sqe(&sq->ring);
            io_uring_prep_send(sqe, io->fd, keel_buf_rptr(io->send_buf),
                               keel_buf_len(io->send_buf), MSG_DONTWAIT | MSG_NOSIGNAL);
            io_uring_sqe_set_data64(sqe, i);
        }
        do
            submitted = io_uring_submit(&sq->ring);
        while (submitted == -EINTR);
        if (submitted < (int)n) {
            /* the kernel refused some: they stay in the ring, so it is never entered
             * again (they would go twice); this loop writes itself from now on */
            keel_log_warn("io_uring submit: %s; writes are not batched any more",
                          submitted < 0 ? strerror(-submitted) : "short");
            sq->broken = true;
        }
    }
    for (int seen = 0; seen < submitted; seen++) {
        struct io_uring_cqe *cqe;
        int rc;
        do
            rc = io_uring_wait_cqe(&sq->ring, &cqe);
        while (rc == -EINTR);
        if (rc < 0) {
            keel_log_warn("io_uring wait: %s; writes are not batched any more", strerror(-rc));
            sq->broken = true;
            break;
        }
        complete(batch[io_uring_cqe_get_data64(cqe)], cqe->res);
        io_uring_cqe_seen(&sq->ring, cqe);
    }
    /* the kernel takes SQEs in order: batch[submitted..] never went and never will; one
     * submitted without a completion may yet go, so it fails rather than go twice */
    for (size_t i = 0; i < n; i++)
        if (batch[i]->send_buf != NULL)
            complete(batch[i], (int)i < submitted ? -EIO : send_now(batch[i]));
}

bool keel_sendq_pending(const struct keel_sendq *sq) { return sq->nq > 0; }

bool keel_sendq_full(const struct keel_sendq *sq) { return sq->nq >= KEEL_SENDQ_MAX; }

void keel_sendq_flush(struct keel_sendq *sq)
{
    for (int round = 0; round < MAX_ROUNDS && sq->nq > 0; round++) {
        /* take the queue; what the callbacks below queue waits for the next round */
        if (sq->cap_batch < sq->nq) {
            sq->cap_batch = sq->cap_q;
            free(sq->batch);
            sq->batch = keel_alloc(sq->cap_batch * sizeof(*sq->batch));
        }
        struct keel_io **batch = sq->batch;
        size_t n = 0;
        for (size_t i = 0; i < sq->nq; i++) {
            struct keel_io *io = sq->q[i];
            if (io == NULL) /* dropped */
                continue;
            io->send_slot = 0;
            if (keel_buf_len(io->send_buf) == 0) { /* emptied meanwhile (a reset) */
                io->send_buf = NULL;
                io->writable = true;
                continue;
            }
            batch[n++] = io;
        }
        sq->nq = 0;
        for (size_t i = 0; i < n; i += RING_ENTRIES)
            send_chunk(sq, batch + i, n - i < RING_ENTRIES ? n - i : RING_ENTRIES);
        /* an io deleted by an earlier callback gets no call (its memory lives until the
         * loop's deferred frees, which run after this) */
        for (size_t i = 0; i < n; i++)
            if (batch[i]->polled)
                batch[i]->cb(batch[i], EPOLLOUT);
    }
}
