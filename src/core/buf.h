/* Byte buffers: a contiguous region [data, data+cap) holding bytes at [rpos, wpos).
 * Producers append at wpos, consumers take from rpos. Buffers of the standard size come
 * from a per-thread free list, so the request path does not call malloc once warm. */
#ifndef KEEL_CORE_BUF_H
#define KEEL_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KEEL_BUF_SIZE 16384

struct keel_buf {
    char *data;
    size_t cap;
    size_t rpos;
    size_t wpos;
};

/* Per-thread free list of KEEL_BUF_SIZE blocks (the first bytes of a free block link to
 * the next), bounded so an idle worker gives memory back after a burst. Taken and given
 * back inline: a proxied request attaches and releases a handful of buffers. */
#define KEEL_BUF_POOL_MAX 1024
struct keel_buf_pool {
    void *head;
    size_t count;
};
extern _Thread_local struct keel_buf_pool keel_buf_pool;

/* Out of line: an empty pool, an oversized buffer. */
void keel_buf_attach_slow(struct keel_buf *b);
void keel_buf_release_slow(struct keel_buf *b);

/* Attach pooled storage of at least KEEL_BUF_SIZE bytes (no-op when already attached). */
static inline void keel_buf_attach(struct keel_buf *b)
{
    if (b->data != NULL)
        return;
    void *d = keel_buf_pool.head;
    if (__builtin_expect(d == NULL, 0)) {
        keel_buf_attach_slow(b);
        return;
    }
    keel_buf_pool.head = *(void **)d;
    keel_buf_pool.count--;
    b->data = d;
    b->cap = KEEL_BUF_SIZE;
    b->rpos = b->wpos = 0;
}

/* Give storage back to this thread's pool (or free it, when oversized or the pool full). */
static inline void keel_buf_release(struct keel_buf *b)
{
    if (b->data == NULL)
        return;
    if (__builtin_expect(b->cap != KEEL_BUF_SIZE || keel_buf_pool.count >= KEEL_BUF_POOL_MAX, 0)) {
        keel_buf_release_slow(b);
        return;
    }
    *(void **)b->data = keel_buf_pool.head;
    keel_buf_pool.head = b->data;
    keel_buf_pool.count++;
    b->data = NULL;
    b->cap = b->rpos = b->wpos = 0;
}

/* Out of line: attach, compact or grow (keel_buf_reserve / keel_buf_append). */
void keel_buf_reserve_slow(struct keel_buf *b, size_t n);
void keel_buf_append_slow(struct keel_buf *b, const void *p, size_t n);

/* Make room for n more bytes at wpos: compacts, then grows (aborts on OOM). Inline when
 * there is room: a request head is built from ~30 appends. */
static inline void keel_buf_reserve(struct keel_buf *b, size_t n)
{
    if (__builtin_expect(b->data != NULL && b->cap - b->wpos >= n, 1))
        return;
    keel_buf_reserve_slow(b, n);
}

static inline void keel_buf_append(struct keel_buf *b, const void *p, size_t n)
{
    if (__builtin_expect(b->data != NULL && b->cap - b->wpos >= n, 1)) {
        memcpy(b->data + b->wpos, p, n);
        b->wpos += n;
        return;
    }
    keel_buf_append_slow(b, p, n);
}
/* v in decimal (the request path's lengths and codes: no printf). */
void keel_buf_append_u64(struct keel_buf *b, uint64_t v);
void keel_buf_printf(struct keel_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Move unread bytes to the front so the tail has room. */
void keel_buf_compact(struct keel_buf *b);
/* Free every pooled buffer of the calling thread (at thread exit). */
void keel_buf_pool_drain(void);

static inline size_t keel_buf_len(const struct keel_buf *b) { return b->wpos - b->rpos; }
static inline size_t keel_buf_room(const struct keel_buf *b) { return b->cap - b->wpos; }
static inline char *keel_buf_rptr(const struct keel_buf *b) { return b->data + b->rpos; }
static inline char *keel_buf_wptr(const struct keel_buf *b) { return b->data + b->wpos; }
static inline void keel_buf_consume(struct keel_buf *b, size_t n)
{
    b->rpos += n;
    if (b->rpos == b->wpos)
        b->rpos = b->wpos = 0;
}
static inline void keel_buf_append_str(struct keel_buf *b, const char *s)
{
    keel_buf_append(b, s, strlen(s));
}

#endif
