/* A loop turn's socket writes, sent together in one io_uring_enter (core/loop.h:
 * keel_loop_send_later). A proxied HTTP/1.1 request costs two reads and two writes; the
 * writes become a share of one enter per turn. Where a syscall is dear (page-table
 * isolation, a VM that traps them) that is most of what a proxy can still save.
 *
 * Sends go with MSG_DONTWAIT: the kernel does each one inline during the submit, or
 * answers -EAGAIN when the socket has no room (it then flags the socket, and epoll reports
 * the next EPOLLOUT edge as after a write(2)). So every completion is there when the
 * submit returns, and the buffers are only read during it. The submit does not wait:
 * a completion that is not there yet (none is expected) is waited for alone.
 *
 * With ring reads the same ring carries the recvs (core/recvq.c) and a poll of the loop's
 * epoll set, and the loop waits in it: every completion names its kind in user_data. */
#include "core/sendq.h"

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/recvq.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define RING_ENTRIES 256
#define CQ_ENTRIES 4096 /* a turn's recv completions come in bursts */
#define MAX_ROUNDS 8    /* per turn: a completion's callback may queue again (the rest) */

struct keel_sendq {
    struct io_uring ring;
    struct keel_io **q;     /* queued this turn (io->send_slot - 1 is the index) */
    struct keel_io **batch; /* being sent: callbacks may queue into q meanwhile */
    size_t nq, cap_q, cap_batch;
    bool broken; /* a submit failed: sends are made one by one (send_now) */
    struct keel_recvq *rq; /* ring reads; NULL: none */
    int epfd;
    bool epoll_ready; /* the epoll set's poll completed since the last wait */
};

struct io_uring_sqe *keel_ring_sqe(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    while (sqe == NULL) { /* a burst of new connections: send the arms so far */
        io_uring_submit(ring);
        sqe = io_uring_get_sqe(ring);
    }
    return sqe;
}

struct keel_sendq *keel_sendq_new(int *err)
{
    struct keel_sendq *sq = keel_calloc(1, sizeof(*sq));
    /* one thread enters the ring, and only in its wait does the kernel finish the recvs
     * (DEFER_TASKRUN, 6.1): no task work interrupts the loop between its waits */
    struct io_uring_params p = {
        .flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
                 IORING_SETUP_DEFER_TASKRUN,
        .cq_entries = CQ_ENTRIES,
    };
    int rc = io_uring_queue_init_params(RING_ENTRIES, &sq->ring, &p);
    if (rc == -EINVAL) /* before 6.1 */
        rc = io_uring_queue_init(RING_ENTRIES, &sq->ring, IORING_SETUP_SUBMIT_ALL);
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
    io_uring_queue_exit(&sq->ring); /* cancels the recvs: their buffers are free after */
    keel_recvq_free(sq->rq);
    free(sq->q);
    free(sq->batch);
    free(sq);
}

static void poll_epoll(struct keel_sendq *sq)
{
    struct io_uring_sqe *sqe = keel_ring_sqe(&sq->ring);
    io_uring_prep_poll_multishot(sqe, sq->epfd, POLLIN);
    io_uring_sqe_set_data64(sqe, KEEL_RING_TAG(KEEL_RING_EPOLL, 0));
}

struct keel_recvq *keel_sendq_use_reads(struct keel_sendq *sq, int epfd, int *err)
{
    if (sq->rq != NULL)
        return sq->rq;
    if (!(sq->ring.flags & IORING_SETUP_DEFER_TASKRUN)) { /* older kernel: no multishot recv */
        *err = EOPNOTSUPP;
        return NULL;
    }
    sq->rq = keel_recvq_new(&sq->ring, err);
    if (sq->rq == NULL)
        return NULL;
    sq->epfd = epfd;
    poll_epoll(sq);
    return sq->rq;
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

/* A completion that is not a send's: a recv's, the epoll set's poll, a cancel's. */
static void other_completion(struct keel_sendq *sq, const struct io_uring_cqe *cqe)
{
    uint64_t tag = io_uring_cqe_get_data64(cqe);
    switch (tag >> 32) {
    case KEEL_RING_RECV:
        keel_recvq_complete(sq->rq, (uint32_t)tag, cqe->res, cqe->flags);
        break;
    case KEEL_RING_EPOLL:
        sq->epoll_ready = true;
        if (!(cqe->flags & IORING_CQE_F_MORE))
            poll_epoll(sq);
        break;
    default: /* a cancel's own completion; a send's only after a failed wait (dropped) */
        break;
    }
}

/* Queue the sends of batch[0, n) (n <= RING_ENTRIES). Returns the SQEs queued before them
 * (recvs armed or cancelled), which go first in the submit. */
static int prep_sends(struct keel_sendq *sq, struct keel_io **batch, size_t n)
{
    if (io_uring_sq_space_left(&sq->ring) < n)
        io_uring_submit(&sq->ring);
    int before = (int)io_uring_sq_ready(&sq->ring);
    for (size_t i = 0; i < n; i++) {
        struct keel_io *io = batch[i];
        struct io_uring_sqe *sqe = io_uring_get_sqe(&sq->ring);
        io_uring_prep_send(sqe, io->fd, keel_buf_rptr(io->send_buf), keel_buf_len(io->send_buf),
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, KEEL_RING_TAG(KEEL_RING_SEND, i));
    }
    return before;
}

/* The sends of a submit that returned rc for `before` + n SQEs: how many of them went. */
static int sends_submitted(struct keel_sendq *sq, int rc, int before, size_t n)
{
    int sent = rc < 0 ? rc : rc < before ? 0 : rc - before;
    if (sent < (int)n) {
        /* the kernel refused some: they stay in the ring, so it is never entered
         * again for sends (they would go twice); this loop writes itself from now on */
        keel_log_warn("io_uring submit: %s; writes are not batched any more",
                      sent < 0 ? strerror(-sent) : "short");
        sq->broken = true;
    }
    return sent < 0 ? 0 : sent;
}

/* One completion of the ring; returns true for a send's (its io is done). */
static bool take_completion(struct keel_sendq *sq, struct keel_io **batch,
                            const struct io_uring_cqe *cqe)
{
    uint64_t tag = io_uring_cqe_get_data64(cqe);
    if (tag >> 32 != KEEL_RING_SEND || batch == NULL) {
        other_completion(sq, cqe);
        return false;
    }
    complete(batch[(uint32_t)tag], cqe->res);
    return true;
}

/* Wait for the completions of the sends still out (`seen` of `submitted` are in), then
 * fail or write what never went. */
static void finish_sends(struct keel_sendq *sq, struct keel_io **batch, size_t n,
                         int submitted, int seen)
{
    while (seen < submitted) {
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
        seen += take_completion(sq, batch, cqe);
        io_uring_cqe_seen(&sq->ring, cqe);
    }
    /* the kernel takes SQEs in order: batch[submitted..] never went and never will; one
     * submitted without a completion may yet go, so it fails rather than go twice */
    for (size_t i = 0; i < n; i++)
        if (batch[i]->send_buf != NULL)
            complete(batch[i], (int)i < submitted ? -EIO : send_now(batch[i]));
}

/* Send batch[0, n) in one submit (sends complete inline), for keel_sendq_flush. */
static void send_chunk(struct keel_sendq *sq, struct keel_io **batch, size_t n)
{
    int submitted = 0;
    if (!sq->broken) {
        int before = prep_sends(sq, batch, n), rc;
        do
            rc = io_uring_submit(&sq->ring);
        while (rc == -EINTR);
        submitted = sends_submitted(sq, rc, before, n);
    }
    finish_sends(sq, batch, n, submitted, 0);
}

/* Move the queue to sq->batch (callbacks may queue again meanwhile): what to send. */
static size_t take_batch(struct keel_sendq *sq)
{
    if (sq->cap_batch < sq->nq) {
        sq->cap_batch = sq->cap_q;
        free(sq->batch);
        sq->batch = keel_alloc(sq->cap_batch * sizeof(*sq->batch));
    }
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
        sq->batch[n++] = io;
    }
    sq->nq = 0;
    return n;
}

/* The sent ios' callbacks; an io deleted by an earlier callback gets none (its memory
 * lives until the loop's deferred frees, which run after this). */
static void call_senders(struct keel_io **batch, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (batch[i]->polled)
            batch[i]->cb(batch[i], EPOLLOUT);
}

bool keel_sendq_wait(struct keel_sendq *sq, int timeout_ms)
{
    if (sq->broken) /* sends are write(2)s now (keel_sendq_flush makes them so) */
        keel_sendq_flush(sq);
    /* the turn's sends go in the same enter (at most KEEL_SENDQ_MAX: one chunk) */
    size_t n = sq->broken ? 0 : take_batch(sq);
    int before = n > 0 ? prep_sends(sq, sq->batch, n) : 0, rc;
    if (n > 0 || timeout_ms <= 0) {
        rc = io_uring_submit_and_get_events(&sq->ring);
    } else {
        struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000,
                                        .tv_nsec = (long long)(timeout_ms % 1000) * 1000000 };
        struct io_uring_cqe *cqe;
        rc = io_uring_submit_and_wait_timeout(&sq->ring, &cqe, 1, &ts, NULL);
    }
    int submitted = n > 0 ? sends_submitted(sq, rc, before, n) : 0;
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
        keel_log_warn("io_uring wait: %s", strerror(-rc)); /* the next turn tries again */
    struct io_uring_cqe *cqe;
    unsigned head, count = 0;
    int seen = 0;
    io_uring_for_each_cqe(&sq->ring, head, cqe) {
        seen += take_completion(sq, n > 0 ? sq->batch : NULL, cqe);
        count++;
    }
    io_uring_cq_advance(&sq->ring, count);
    if (n > 0) {
        finish_sends(sq, sq->batch, n, submitted, seen);
        call_senders(sq->batch, n);
    }
    bool epoll_ready = sq->epoll_ready;
    sq->epoll_ready = false;
    return epoll_ready;
}

bool keel_sendq_pending(const struct keel_sendq *sq) { return sq->nq > 0; }

bool keel_sendq_full(const struct keel_sendq *sq) { return sq->nq >= KEEL_SENDQ_MAX; }

void keel_sendq_flush(struct keel_sendq *sq)
{
    for (int round = 0; round < MAX_ROUNDS && sq->nq > 0; round++) {
        /* what the callbacks below queue waits for the next round */
        size_t n = take_batch(sq);
        for (size_t i = 0; i < n; i += RING_ENTRIES)
            send_chunk(sq, sq->batch + i, n - i < RING_ENTRIES ? n - i : RING_ENTRIES);
        call_senders(sq->batch, n);
    }
}
