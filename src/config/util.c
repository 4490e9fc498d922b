/* Arena, diagnostics and the string index used by the loader. */
#include "config/config_int.h"

#include "core/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char keel_config_ignored[] = "ignored";

/* ---- arena ---- */

struct keel_config_chunk {
    struct keel_config_chunk *next;
    size_t used, cap;
    _Alignas(max_align_t) char data[];
};

#define CHUNK_SIZE (64 * 1024)

void *keel_config_arena_alloc(struct keel_config_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct keel_config_chunk *c = a->head;
    if (c == NULL || c->cap - c->used < n) {
        size_t cap = n > CHUNK_SIZE / 4 ? n : CHUNK_SIZE;
        struct keel_config_chunk *nc = keel_alloc(sizeof(*nc) + cap);
        nc->used = 0;
        nc->cap = cap;
        if (cap == n && c != NULL) { /* big block: keep filling the current chunk */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            a->head = nc;
        }
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *keel_config_arena_strndup(struct keel_config_arena *a, const char *s, size_t n)
{
    char *p = keel_config_arena_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *keel_config_arena_printf(struct keel_config_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = keel_config_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void keel_config_arena_free(struct keel_config_arena *a)
{
    struct keel_config_chunk *c = a->head;
    while (c) {
        struct keel_config_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

/* ---- diagnostics ---- */

void keel_diag_init(struct keel_diag *d)
{
    memset(d, 0, sizeof(*d));
}

void keel_diag_fini(struct keel_diag *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->msgs[i]);
    free(d->msgs);
    memset(d, 0, sizeof(*d));
}

static void diag_add(struct keel_diag *d, const char *sev, const char *file, int line, int col, const char *fmt,
                     va_list ap)
{
    if (d == NULL)
        return;
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    char *s;
    if (line > 0) {
        int n = snprintf(NULL, 0, "%s:%d:%d: %s: %s", file, line, col, sev, msg);
        s = keel_alloc((size_t)n + 1);
        snprintf(s, (size_t)n + 1, "%s:%d:%d: %s: %s", file, line, col, sev, msg);
    } else {
        int n = snprintf(NULL, 0, "%s: %s: %s", file ? file : "keel", sev, msg);
        s = keel_alloc((size_t)n + 1);
        snprintf(s, (size_t)n + 1, "%s: %s: %s", file ? file : "keel", sev, msg);
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->msgs = keel_realloc(d->msgs, d->cap * sizeof(*d->msgs));
    }
    d->msgs[d->n++] = s;
}

void keel_diag_error(struct keel_diag *d, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_add(d, "error", file, line, col, fmt, ap);
    va_end(ap);
    if (d)
        d->errors++;
}

void keel_diag_warn(struct keel_diag *d, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_add(d, "warning", file, line, col, fmt, ap);
    va_end(ap);
    if (d)
        d->warnings++;
}

static void ctx_vdiag(struct keel_config_ctx *c, bool err, const struct keel_config_pos *p, const char *fmt,
                      va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (err) {
        c->errors++;
        keel_diag_error(c->diag, p->file, p->line, p->col, "%s", msg);
    } else {
        keel_diag_warn(c->diag, p->file, p->line, p->col, "%s", msg);
    }
}

void keel_config_err(struct keel_config_ctx *c, const struct keel_ynode *n, const char *fmt, ...)
{
    struct keel_config_pos p = keel_config_pos_of(n);
    va_list ap;
    va_start(ap, fmt);
    ctx_vdiag(c, true, &p, fmt, ap);
    va_end(ap);
}

void keel_config_warn(struct keel_config_ctx *c, const struct keel_ynode *n, const char *fmt, ...)
{
    struct keel_config_pos p = keel_config_pos_of(n);
    va_list ap;
    va_start(ap, fmt);
    ctx_vdiag(c, false, &p, fmt, ap);
    va_end(ap);
}

void keel_config_err_at(struct keel_config_ctx *c, const struct keel_config_pos *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctx_vdiag(c, true, p, fmt, ap);
    va_end(ap);
}

void keel_config_warn_at(struct keel_config_ctx *c, const struct keel_config_pos *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctx_vdiag(c, false, p, fmt, ap);
    va_end(ap);
}

/* ---- string index: open addressing, FNV-1a ---- */

static uint64_t hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

void *keel_config_index_get(const struct keel_config_index *ix, const char *key, size_t len)
{
    if (ix->cap == 0)
        return NULL;
    for (size_t i = hash(key, len) & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
        if (ix->keys[i] == NULL)
            return NULL;
        if (strncmp(ix->keys[i], key, len) == 0 && ix->keys[i][len] == '\0')
            return ix->vals[i];
    }
}

static void grow(struct keel_config_index *ix)
{
    struct keel_config_index old = *ix;
    ix->cap = old.cap ? old.cap * 2 : 64;
    ix->keys = keel_calloc(ix->cap, sizeof(*ix->keys));
    ix->vals = keel_calloc(ix->cap, sizeof(*ix->vals));
    ix->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i])
            keel_config_index_put(ix, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

void *keel_config_index_put(struct keel_config_index *ix, const char *key, void *val)
{
    if ((ix->n + 1) * 2 > ix->cap)
        grow(ix);
    size_t len = strlen(key);
    size_t i = hash(key, len) & (ix->cap - 1);
    for (; ix->keys[i] != NULL; i = (i + 1) & (ix->cap - 1))
        if (strcmp(ix->keys[i], key) == 0)
            return ix->vals[i];
    ix->keys[i] = key;
    ix->vals[i] = val;
    ix->n++;
    return NULL;
}

void keel_config_index_fini(struct keel_config_index *ix)
{
    free(ix->keys);
    free(ix->vals);
    memset(ix, 0, sizeof(*ix));
}
