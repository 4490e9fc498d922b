#include "core/buf.h"

#include "core/alloc.h"
#include "core/fmt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

_Thread_local struct keel_buf_pool keel_buf_pool;

void keel_buf_attach_slow(struct keel_buf *b)
{
    b->data = keel_alloc(KEEL_BUF_SIZE);
    b->cap = KEEL_BUF_SIZE;
    b->rpos = b->wpos = 0;
}

void keel_buf_release_slow(struct keel_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = b->rpos = b->wpos = 0;
}

void keel_buf_pool_drain(void)
{
    while (keel_buf_pool.head != NULL) {
        void *next = *(void **)keel_buf_pool.head;
        free(keel_buf_pool.head);
        keel_buf_pool.head = next;
    }
    keel_buf_pool.count = 0;
}

void keel_buf_compact(struct keel_buf *b)
{
    if (b->rpos == 0)
        return;
    size_t n = b->wpos - b->rpos;
    memmove(b->data, b->data + b->rpos, n);
    b->rpos = 0;
    b->wpos = n;
}

void keel_buf_reserve_slow(struct keel_buf *b, size_t n)
{
    keel_buf_attach(b);
    if (keel_buf_room(b) >= n)
        return;
    keel_buf_compact(b);
    if (keel_buf_room(b) >= n)
        return;
    size_t cap = b->cap;
    while (cap - b->wpos < n)
        cap *= 2;
    if (b->cap == KEEL_BUF_SIZE) {
        /* leaving the pooled size class: move to a private allocation */
        char *d = keel_alloc(cap);
        memcpy(d, b->data, b->wpos);
        struct keel_buf old = *b;
        keel_buf_release(&old);
        b->data = d;
    } else {
        b->data = keel_realloc(b->data, cap);
    }
    b->cap = cap;
}

void keel_buf_append_slow(struct keel_buf *b, const void *p, size_t n)
{
    keel_buf_reserve(b, n);
    memcpy(b->data + b->wpos, p, n);
    b->wpos += n;
}

void keel_buf_append_u64(struct keel_buf *b, uint64_t v)
{
    keel_buf_reserve(b, 20);
    b->wpos += keel_fmt_u64(b->data + b->wpos, v);
}

void keel_buf_printf(struct keel_buf *b, const char *fmt, ...)
{
    va_list ap;
    keel_buf_reserve(b, 64);
    va_start(ap, fmt);
    int n = vsnprintf(keel_buf_wptr(b), keel_buf_room(b), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= keel_buf_room(b)) {
        keel_buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(keel_buf_wptr(b), keel_buf_room(b), fmt, ap);
        va_end(ap);
    }
    b->wpos += (size_t)n;
}
