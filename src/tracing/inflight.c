/* Inbound requests in flight, for the broken-propagation detector. A sidecar's inbound
 * and outbound requests may run on different workers, so the table is shared; but every
 * inbound request writes it and only the rare outbound request without trace context
 * reads it, so writes take no lock: each worker owns a block of slots and publishes a
 * slot under a sequence counter (odd while it changes); readers retry a slot that moved. */
#include "tracing/tracing.h"

#include "core/alloc.h"

#include <stdlib.h>
#include <string.h>

#define SLOTS_PER_WORKER 256

struct slot {
    atomic_uint_fast64_t seq;      /* even: stable; odd: being written */
    atomic_uint_fast64_t used;
    atomic_uint_fast64_t rid_hash; /* of x-request-id */
    atomic_uint_fast64_t trace_hi, trace_lo, span_id, bits; /* bits: sampled, debug, 128 */
};

struct block {                     /* one worker's */
    uint16_t free[SLOTS_PER_WORKER];
    size_t n_free;                 /* only the owner touches free / n_free */
};

struct keel_trace_inflight {
    int n_workers;
    struct slot *slots;            /* n_workers * SLOTS_PER_WORKER */
    struct block *blocks;
};

/* Eight bytes a step (every inbound request hashes its 36-byte x-request-id): a multiply
 * and a rotate per word, the tail as one word overlapping the last (the length is in the
 * seed), bytes one at a time only under eight. Only compared within a process. */
static uint64_t hash(struct keel_str s)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ s.len, x;
    size_t i = 0;
    for (; i + 8 <= s.len; i += 8) {
        memcpy(&x, s.p + i, 8);
        h = (h ^ x) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    if (i < s.len && s.len >= 8) {
        memcpy(&x, s.p + s.len - 8, 8);
        h = (h ^ x) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    } else {
        for (; i < s.len; i++)
            h = (h ^ (unsigned char)s.p[i]) * 0x100000001b3ULL;
    }
    return h | 1; /* 0 means "no id" */
}

struct keel_trace_inflight *keel_trace_inflight_new(int n_workers)
{
    struct keel_trace_inflight *t = keel_calloc(1, sizeof(*t));
    t->n_workers = n_workers;
    t->slots = keel_calloc((size_t)n_workers * SLOTS_PER_WORKER, sizeof(*t->slots));
    t->blocks = keel_calloc((size_t)n_workers, sizeof(*t->blocks));
    for (int w = 0; w < n_workers; w++) {
        for (int i = 0; i < SLOTS_PER_WORKER; i++)
            t->blocks[w].free[i] = (uint16_t)(SLOTS_PER_WORKER - 1 - i);
        t->blocks[w].n_free = SLOTS_PER_WORKER;
    }
    return t;
}

void keel_trace_inflight_free(struct keel_trace_inflight *t)
{
    if (t == NULL)
        return;
    free(t->slots);
    free(t->blocks);
    free(t);
}

static void publish(struct slot *s, uint64_t used, uint64_t rid, const struct keel_trace_ctx *c)
{
    uint64_t q = atomic_load_explicit(&s->seq, memory_order_relaxed);
    atomic_store_explicit(&s->seq, q + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&s->used, used, memory_order_relaxed);
    if (c != NULL) {
        atomic_store_explicit(&s->rid_hash, rid, memory_order_relaxed);
        atomic_store_explicit(&s->trace_hi, c->trace_hi, memory_order_relaxed);
        atomic_store_explicit(&s->trace_lo, c->trace_lo, memory_order_relaxed);
        atomic_store_explicit(&s->span_id, c->span_id, memory_order_relaxed);
        atomic_store_explicit(&s->bits,
                              (uint64_t)(c->sampled == 1) | (uint64_t)c->debug << 1 |
                                  (uint64_t)c->trace128 << 2,
                              memory_order_relaxed);
    }
    atomic_store_explicit(&s->seq, q + 2, memory_order_release);
}

int keel_trace_inflight_add(struct keel_trace_inflight *t, int w, struct keel_str rid,
                            const struct keel_trace_ctx *c)
{
    if (t == NULL || w < 0 || w >= t->n_workers || t->blocks[w].n_free == 0)
        return -1;
    struct block *b = &t->blocks[w];
    int i = b->free[--b->n_free];
    publish(&t->slots[(size_t)w * SLOTS_PER_WORKER + (size_t)i], 1, rid.len ? hash(rid) : 0, c);
    return i;
}

void keel_trace_inflight_remove(struct keel_trace_inflight *t, int w, int i)
{
    if (t == NULL || i < 0 || w < 0 || w >= t->n_workers)
        return;
    publish(&t->slots[(size_t)w * SLOTS_PER_WORKER + (size_t)i], 0, 0, NULL);
    struct block *b = &t->blocks[w];
    b->free[b->n_free++] = (uint16_t)i;
}

/* A consistent copy of slot s; false when it is not in use. */
static bool read_slot(struct slot *s, uint64_t *rid, struct keel_trace_ctx *c)
{
    for (int tries = 0; tries < 16; tries++) {
        uint64_t q = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (q & 1)
            continue;
        uint64_t used = atomic_load_explicit(&s->used, memory_order_relaxed);
        *rid = atomic_load_explicit(&s->rid_hash, memory_order_relaxed);
        uint64_t bits = atomic_load_explicit(&s->bits, memory_order_relaxed);
        *c = (struct keel_trace_ctx){
            .trace_hi = atomic_load_explicit(&s->trace_hi, memory_order_relaxed),
            .trace_lo = atomic_load_explicit(&s->trace_lo, memory_order_relaxed),
            .span_id = atomic_load_explicit(&s->span_id, memory_order_relaxed),
            .sampled = (int)(bits & 1),
            .debug = (bits >> 1) & 1,
            .trace128 = (bits >> 2) & 1,
            .has_ids = true,
        };
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->seq, memory_order_relaxed) == q)
            return used != 0;
    }
    return false; /* kept changing: treat as gone */
}

size_t keel_trace_inflight_find(struct keel_trace_inflight *t, struct keel_str rid,
                                struct keel_trace_ctx *c, bool *found)
{
    *found = false;
    if (t == NULL)
        return 0;
    uint64_t want = rid.len ? hash(rid) : 0, h;
    size_t n = 0;
    struct keel_trace_ctx one, x;
    for (size_t i = 0; i < (size_t)t->n_workers * SLOTS_PER_WORKER; i++) {
        if (!read_slot(&t->slots[i], &h, &x))
            continue;
        n++;
        if (want != 0 && h == want && !*found) {
            *c = x;
            *found = true;
        }
        one = x;
    }
    if (!*found && n == 1) {
        *c = one;
        *found = true;
    }
    return n;
}
