/* The loop's batched sends (io_uring), used by core/loop.c (its unit test reads
 * KEEL_SENDQ_MAX). See keel_loop_send_later. */
#ifndef KEEL_CORE_SENDQ_H
#define KEEL_CORE_SENDQ_H

#include "core/loop.h"

struct keel_sendq;

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

#endif
