#include "core/json.h"

#include <stdint.h>
#include <string.h>

/* 0 copy, 1 escape, 2 lead of a multi-byte sequence (validate), 3 never valid in UTF-8 */
#define E1 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
#define E2 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2
static const unsigned char cls[256] = {
    E1, E1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x22 '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x5c '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* 0x7f DEL */
    E2, E2, E2, E2, E2, E2, E2, E2,
};
#undef E1
#undef E2

static const char hexd[] = "0123456789abcdef";

size_t keel_utf8_seq(const unsigned char *p, size_t n, size_t *bad)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    size_t len;
    *bad = 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates U+D800-U+DFFF */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 (always overlong), F5-FF */
    }
    if (n < 2 || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (i >= n || p[i] < 0x80 || p[i] > 0xbf) {
            *bad = i;
            return 0;
        }
    }
    return len;
}

/* Word-at-a-time: values are mostly clean ASCII, so skip 8 bytes per step while none of
 * them may need attention (control, '"', '\\', DEL, >= 0x80); the table then decides. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#define HAS_ZERO(x) (((x) - ONES) & ~(x) & HIGHS)
#define HAS_LESS(x, k) (((x) - ONES * (k)) & ~(x) & HIGHS)

static inline size_t skip_clean(const char *p, size_t i, size_t n)
{
    while (i + 8 <= n) {
        uint64_t x;
        memcpy(&x, p + i, sizeof(x));
        if (HAS_LESS(x, 0x20) | HAS_ZERO(x ^ (ONES * '"')) | HAS_ZERO(x ^ (ONES * '\\')) |
            HAS_ZERO(x ^ (ONES * 0x7f)) | (x & HIGHS))
            break;
        i += 8;
    }
    while (i < n && cls[(unsigned char)p[i]] == 0)
        i++;
    return i;
}

static size_t put_u00(char *o, unsigned ch)
{
    o[0] = '\\';
    o[1] = 'u';
    o[2] = '0';
    o[3] = '0';
    o[4] = hexd[(ch >> 4) & 15];
    o[5] = hexd[ch & 15];
    return 6;
}

size_t keel_json_escape(char *d, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    char *o = d;
    size_t i = 0;
    while (i < n) {
        size_t run = skip_clean(s, i, n);
        memcpy(o, p + i, run - i);
        o += run - i;
        if (run == n)
            break;
        i = run;
        unsigned char ch = p[i];
        if (cls[ch] == 2) {
            size_t bad, l = keel_utf8_seq(p + i, n - i, &bad);
            if (l == 0) {
                memcpy(o, KEEL_UTF8_REPLACEMENT, 3);
                o += 3;
                i += bad;
            } else if (ch == 0xc2 && p[i + 1] < 0xa0) {
                o += put_u00(o, p[i + 1]); /* C1 control U+0080-U+009F */
                i += 2;
            } else {
                memcpy(o, p + i, l);
                o += l;
                i += l;
            }
            continue;
        }
        const char *short_esc = NULL;
        switch (ch) {
        case '"': short_esc = "\\\""; break;
        case '\\': short_esc = "\\\\"; break;
        case '\n': short_esc = "\\n"; break;
        case '\r': short_esc = "\\r"; break;
        case '\t': short_esc = "\\t"; break;
        case '\b': short_esc = "\\b"; break;
        case '\f': short_esc = "\\f"; break;
        }
        if (short_esc != NULL) {
            memcpy(o, short_esc, 2);
            o += 2;
        } else {
            o += put_u00(o, ch);
        }
        i++;
    }
    return (size_t)(o - d);
}

void keel_json_str_n(struct keel_buf *out, const char *s, size_t n)
{
    keel_buf_reserve(out, n * KEEL_JSON_ESC_MAX + 2);
    char *d = keel_buf_wptr(out);
    *d++ = '"';
    d += keel_json_escape(d, s, n);
    *d++ = '"';
    out->wpos = (size_t)(d - out->data);
}

void keel_json_str(struct keel_buf *out, const char *s)
{
    keel_json_str_n(out, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}
