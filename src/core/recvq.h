/* The loop's ring reads (io_uring multishot recv), used by core/loop.c and core/sendq.c.
 * See keel_loop_add and keel_io_recv in core/loop.h. */
#ifndef KEEL_CORE_RECVQ_H
#define KEEL_CORE_RECVQ_H

#include "core/loop.h"

#include <stdint.h>

struct io_uring;
struct keel_recvq;

/* A reader stops the kernel's copying into its io once this much waits unread there (the
 * socket's own buffer holds the rest, as with read(2)), and restarts it once all is read. */
#define KEEL_RECVQ_HIGH (64 * 1024)
/* The most one pass of the kernel's copying brings (the provided buffers, NBUFS x BUFSZ
 * in recvq.c): an io holds at most KEEL_RECVQ_HIGH + KEEL_RECVQ_PASS unread. */
#define KEEL_RECVQ_PASS (128 * 4096)

/* NULL when the kernel has no provided-buffer rings or multishot recv (*err: the errno). */
struct keel_recvq *keel_recvq_new(struct io_uring *ring, int *err);
/* After the ring's exit (which cancels the recvs and drops the buffer ring). */
void keel_recvq_free(struct keel_recvq *rq);
/* Start receiving io's bytes (its reads become keel_io_recv). */
void keel_recvq_arm(struct keel_recvq *rq, struct keel_io *io);
/* io leaves the loop: its recv is cancelled, its unread bytes dropped. */
void keel_recvq_drop(struct keel_recvq *rq, struct keel_io *io);
/* One completion of the recv in slot `slot` (from the ring's reaper). */
void keel_recvq_complete(struct keel_recvq *rq, uint32_t slot, int res, uint32_t flags);
/* Ios that received something (bytes, EOF, an error) since the last dispatch. */
bool keel_recvq_ready(const struct keel_recvq *rq);
/* Run their callbacks with EPOLLIN (and EPOLLRDHUP / EPOLLERR), as an epoll edge would. */
void keel_recvq_dispatch(struct keel_recvq *rq);

#endif
