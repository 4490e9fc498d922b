/* The loop's io_uring: batched sends, and with ring reads (core/recvq.c) the loop's wait.
 * Used by core/loop.c (its unit test reads KEEL_SENDQ_MAX). See keel_loop_send_later. */
#ifndef KEEL_CORE_SENDQ_H
#define KEEL_CORE_SENDQ_H

#include "core/loop.h"

#include <stdint.h>

struct io_uring;
struct keel_sendq;

/* What a completion is for: its user_data is KEEL_RING_TAG(kind, index). */
enum keel_ring_kind { KEEL_RING_SEND = 1, KEEL_RING_RECV, KEEL_RING_EPOLL, KEEL_RING_IGNORE };
#define KEEL_RING_TAG(kind, index) ((uint64_t)(kind) << 32 | (uint32_t)(index))
/* A free SQE of ring (never NULL: a full queue is submitted first). */
struct io_uring_sqe *keel_ring_sqe(struct io_uring *ring);

/* Sends queued in one turn at most: each holds its buffer (16 KiB from the pool) until the
 * batch goes, where write(2) gives it back at once. A turn with more (a burst of HTTP/2
 * streams, each with its upstream request) writes the rest itself: 1 MiB pinned at most. */
#define KEEL_SENDQ_MAX 64

/* NULL when io_uring cannot be set up here (*err: the errno). */
struct keel_sendq *keel_sendq_new(int *err);
void keel_sendq_free(struct keel_sendq *sq);
void keel_sendq_add(struct keel_sendq *sq, struct keel_io *io, struct keel_buf *b);
void keel_sendq_drop(struct keel_sendq *sq, struct keel_io *io);
/* Send what is queued and run the callbacks (which may queue more: a few rounds, then
 * the rest waits for the next turn). */
void keel_sendq_flush(struct keel_sendq *sq);
bool keel_sendq_pending(const struct keel_sendq *sq);
bool keel_sendq_full(const struct keel_sendq *sq);

/* Ring reads: receive for the ios with ring_reads, and poll the loop's epoll set epfd
 * from the ring, so that the loop sleeps in keel_sendq_wait. NULL when the kernel cannot
 * (*err: the errno); the ring still sends. */
struct keel_recvq *keel_sendq_use_reads(struct keel_sendq *sq, int epfd, int *err);
/* Submit what is queued, wait up to timeout_ms (0: not at all) for a completion, and take
 * them all: received bytes go to their ios (keel_recvq_dispatch calls them). Returns true
 * when the epoll set has something to report (epoll_wait it without sleeping). */
bool keel_sendq_wait(struct keel_sendq *sq, int timeout_ms);

#endif
