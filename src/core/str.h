/* Length-delimited byte strings: slices into buffers that someone else owns. */
#ifndef KEEL_CORE_STR_H
#define KEEL_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

struct keel_str {
    const char *p;
    size_t len;
};

#define KEEL_STR(lit) ((struct keel_str){ (lit), sizeof(lit) - 1 })

static inline struct keel_str keel_str_c(const char *s)
{
    return (struct keel_str){ s, s ? strlen(s) : 0 };
}

static inline bool keel_str_eq(struct keel_str a, struct keel_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* memcpy for the short strings of the request path (names, values, log literals): inline
 * overlapping loads up to 32 bytes, where a call to memcpy costs more than the copy, and
 * no loop under four bytes (log separators are one or two). */
static inline void keel_copy(void *d, const void *s, size_t n)
{
    char *o = d;
    const char *i = s;
    if (n >= 8) {
        uint64_t a, b;
        if (n > 32) {
            memcpy(o, i, n);
            return;
        }
        if (n > 16) {
            uint64_t c, e;
            memcpy(&a, i, 8);
            memcpy(&b, i + 8, 8);
            memcpy(&c, i + n - 16, 8);
            memcpy(&e, i + n - 8, 8);
            memcpy(o, &a, 8);
            memcpy(o + 8, &b, 8);
            memcpy(o + n - 16, &c, 8);
            memcpy(o + n - 8, &e, 8);
            return;
        }
        memcpy(&a, i, 8);
        memcpy(&b, i + n - 8, 8);
        memcpy(o, &a, 8);
        memcpy(o + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, i, 4);
        memcpy(&b, i + n - 4, 4);
        memcpy(o, &a, 4);
        memcpy(o + n - 4, &b, 4);
    } else if (n >= 2) {
        uint16_t a, b;
        memcpy(&a, i, 2);
        memcpy(&b, i + n - 2, 2);
        memcpy(o, &a, 2);
        memcpy(o + n - 2, &b, 2);
    } else if (n == 1) {
        o[0] = i[0];
    }
}

/* Equality of n bytes for the short strings of the request path (labels, map keys): word
 * loads overlapping at the tail rather than a memcmp call or a byte loop. */
static inline bool keel_bytes_eq(const char *a, const char *b, size_t n)
{
    uint64_t x, y;
    uint32_t u, w, u2, w2;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return false;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        memcpy(&u, a, 4);
        memcpy(&w, b, 4);
        memcpy(&u2, a + n - 4, 4);
        memcpy(&w2, b + n - 4, 4);
        return ((u ^ w) | (u2 ^ w2)) == 0;
    }
    if (n >= 2) {
        uint16_t h, k, h2, k2;
        memcpy(&h, a, 2);
        memcpy(&k, b, 2);
        memcpy(&h2, a + n - 2, 2);
        memcpy(&k2, b + n - 2, 2);
        return ((h ^ k) | (h2 ^ k2)) == 0;
    }
    return n == 0 || a[0] == b[0];
}

/* Eight bytes with A-Z turned to a-z, everything else (>= 0x80 too) untouched. */
static inline uint64_t keel_ascii_lower8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t h = x & (ones * 0x7f);            /* no carry between bytes below */
    uint64_t ge_a = h + ones * (0x80 - 'A');   /* high bit: byte >= 'A' */
    uint64_t gt_z = h + ones * (0x80 - 'Z' - 1); /* high bit: byte > 'Z' */
    uint64_t upper = ge_a & ~gt_z & ~x & (ones * 0x80);
    return x | (upper >> 2);
}

static inline char keel_ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

/* n bytes lower-cased from s to d (not overlapping): words, the tail as one overlapping
 * word (or two overlapping halves under 8 bytes), so a header name is two or three steps. */
static inline void keel_ascii_lower_copy(char *d, const char *s, size_t n)
{
    uint64_t x;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, s + i, 8);
            x = keel_ascii_lower8(x);
            memcpy(d + i, &x, 8);
        }
        memcpy(&x, s + n - 8, 8);
        x = keel_ascii_lower8(x);
        memcpy(d + n - 8, &x, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        x = keel_ascii_lower8((uint64_t)a << 32 | b);
        a = (uint32_t)(x >> 32);
        b = (uint32_t)x;
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = keel_ascii_lower(s[i]);
    }
}

/* Equality of n bytes with A-Z folded in a, and in b unless it is lower case already:
 * whole words, then the last eight bytes (overlapping the previous word); under eight,
 * two overlapping four-byte loads. fold_b is a constant where it is inlined. */
static inline bool keel_ascii_eq_fold(const char *a, const char *b, size_t n, bool fold_b)
{
    uint64_t x, y;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (keel_ascii_lower8(x) != (fold_b ? keel_ascii_lower8(y) : y))
                return false;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return keel_ascii_lower8(x) == (fold_b ? keel_ascii_lower8(y) : y);
    }
    if (n >= 4) {
        uint32_t x0, x1, y0, y1;
        memcpy(&x0, a, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y0, b, 4);
        memcpy(&y1, b + n - 4, 4);
        x = (uint64_t)x0 << 32 | x1;
        y = (uint64_t)y0 << 32 | y1;
        return keel_ascii_lower8(x) == (fold_b ? keel_ascii_lower8(y) : y);
    }
    for (size_t i = 0; i < n; i++)
        if (keel_ascii_lower(a[i]) != (fold_b ? keel_ascii_lower(b[i]) : b[i]))
            return false;
    return true;
}

/* ASCII case-insensitive equality of n bytes (header names, tokens). Inline and eight
 * bytes a step: strncasecmp is a call and a locale table lookup per byte, and a request
 * compares a few dozen names. Unlike strncasecmp, a NUL byte is compared, not an end. */
static inline bool keel_ascii_caseeq(const char *a, const char *b, size_t n)
{
    return keel_ascii_eq_fold(a, b, n, true);
}

/* keel_ascii_caseeq where b is lower case already (a compiled name): only a is folded. */
static inline bool keel_ascii_eq_lower(const char *a, const char *b, size_t n)
{
    return keel_ascii_eq_fold(a, b, n, false);
}

static inline bool keel_str_caseeq(struct keel_str a, struct keel_str b)
{
    return a.len == b.len && keel_ascii_caseeq(a.p, b.p, a.len);
}

#endif
