/* Trace context headers (B3 multi and single, W3C traceparent): pure parsers and
 * formatters. A malformed value is never fatal: the family it belongs to is ignored and
 * the proxy starts a new trace. */
#include "tracing/tracing.h"

#include "core/err.h"
#include "core/fmt.h"
#include "core/rand.h"

#include <string.h>

static const char hexdig[] = "0123456789abcdef";

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') /* B3 asks for lower case; Envoy's reader takes both */
        return ch - 'A' + 10;
    return -1;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Eight hex digits (either case) at p, a word at a time: false if one is not. */
static bool hex8(const char *p, uint32_t *out)
{
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t lo = x & (ONES * 0x7f), l = lo | (ONES * 0x20); /* no carry between bytes */
    uint64_t digit = (lo + ONES * (0x80 - '0')) & ~(lo + ONES * (0x80 - '9' - 1));
    uint64_t alpha = (l + ONES * (0x80 - 'a')) & ~(l + ONES * (0x80 - 'f' - 1));
    if ((~(digit | alpha) | x) & HIGHS)
        return false;
    /* each byte's value (letters have bit 6: low nibble + 9), then the nibbles packed,
     * the first character the most significant */
    uint64_t v = (x & (ONES * 0x0f)) + ((x >> 6) & ONES) * 9;
    v = ((v << 4) | (v >> 8)) & 0x00ff00ff00ff00ffull;
    v = ((v << 8) | (v >> 16)) & 0x0000ffff0000ffffull;
    v = (v << 16) | (v >> 32);
    *out = (uint32_t)v;
    return true;
}

static int hex64(const char *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 8 || len == 16) {
        uint32_t a, b = 0;
        if (!hex8(p, &a) || (len == 16 && !hex8(p + 8, &b)))
            return KEEL_EINVAL;
        *out = len == 16 ? (uint64_t)a << 32 | b : a;
        return 0;
    }
    if (len == 0 || len > 16)
        return KEEL_EINVAL;
    for (size_t i = 0; i < len; i++) {
        int d = hexval(p[i]);
        if (d < 0)
            return KEEL_EINVAL;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

/* A trace id: 16 or 32 hex digits, not all zero. */
int keel_trace_hex_id(const char *p, size_t len, uint64_t *hi, uint64_t *lo)
{
    uint64_t h = 0, l;
    if (len == 32) {
        if (hex64(p, 16, &h) < 0 || hex64(p + 16, 16, &l) < 0)
            return KEEL_EINVAL;
    } else if (len == 16) {
        if (hex64(p, 16, &l) < 0)
            return KEEL_EINVAL;
    } else {
        return KEEL_EINVAL;
    }
    if (h == 0 && l == 0)
        return KEEL_EINVAL;
    *hi = h;
    *lo = l;
    return 0;
}

/* A span id: 16 hex digits, not zero. */
static int span_id(const char *p, size_t len, uint64_t *out)
{
    uint64_t v;
    if (len != 16 || hex64(p, len, &v) < 0 || v == 0)
        return KEEL_EINVAL;
    *out = v;
    return 0;
}

int keel_trace_parse_sampled(const char *p, size_t len, int *sampled)
{
    if ((len == 1 && p[0] == '1') || (len == 4 && strncasecmp(p, "true", 4) == 0)) {
        *sampled = 1;
        return 0;
    }
    if ((len == 1 && p[0] == '0') || (len == 5 && strncasecmp(p, "false", 5) == 0)) {
        *sampled = 0;
        return 0;
    }
    return KEEL_EINVAL;
}

/* b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]] or b3: {SamplingState} */
int keel_trace_parse_b3_single(const char *p, size_t len, struct keel_trace_ctx *c)
{
    struct keel_trace_ctx r = { .sampled = -1 };
    if (len == 1) {
        if (p[0] == '1' || p[0] == '0')
            r.sampled = p[0] == '1';
        else if (p[0] == 'd')
            r.sampled = 1, r.debug = true;
        else
            return KEEL_EINVAL;
        r.formats = KEEL_TRACE_FMT_B3_SINGLE;
        *c = r;
        return 0;
    }
    const char *end = p + len, *dash = memchr(p, '-', len);
    if (dash == NULL || keel_trace_hex_id(p, (size_t)(dash - p), &r.trace_hi, &r.trace_lo) < 0)
        return KEEL_EINVAL;
    r.trace128 = dash - p == 32;
    const char *q = dash + 1;
    dash = memchr(q, '-', (size_t)(end - q));
    if (span_id(q, (size_t)((dash ? dash : end) - q), &r.span_id) < 0)
        return KEEL_EINVAL;
    if (dash != NULL) {
        q = dash + 1;
        dash = memchr(q, '-', (size_t)(end - q));
        size_t n = (size_t)((dash ? dash : end) - q);
        if (n != 1)
            return KEEL_EINVAL;
        if (q[0] == '1' || q[0] == '0')
            r.sampled = q[0] == '1';
        else if (q[0] == 'd')
            r.sampled = 1, r.debug = true;
        else
            return KEEL_EINVAL;
        if (dash != NULL && span_id(dash + 1, (size_t)(end - dash - 1), &r.parent_id) < 0)
            return KEEL_EINVAL;
    }
    r.has_ids = true;
    r.formats = KEEL_TRACE_FMT_B3_SINGLE;
    *c = r;
    return 0;
}

/* traceparent: 00-{32 hex trace}-{16 hex parent}-{2 hex flags}. A higher version may
 * append fields after another dash (W3C: parse the known prefix). */
int keel_trace_parse_traceparent(const char *p, size_t len, struct keel_trace_ctx *c)
{
    struct keel_trace_ctx r = { .sampled = -1 };
    uint64_t ver, flags;
    if (len < 55 || hex64(p, 2, &ver) < 0 || ver == 0xff || p[2] != '-' || p[35] != '-' ||
        p[52] != '-' || hex64(p + 53, 2, &flags) < 0)
        return KEEL_EINVAL;
    if (len > 55 && (ver == 0 || p[55] != '-'))
        return KEEL_EINVAL;
    for (size_t i = 0; i < 55; i++) /* W3C: lower-case only */
        if (p[i] >= 'A' && p[i] <= 'F')
            return KEEL_EINVAL;
    if (keel_trace_hex_id(p + 3, 32, &r.trace_hi, &r.trace_lo) < 0 ||
        span_id(p + 36, 16, &r.span_id) < 0)
        return KEEL_EINVAL;
    r.trace128 = true;
    r.has_ids = true;
    r.w3c_flags = (uint8_t)flags;
    r.sampled = flags & 1;
    r.formats = KEEL_TRACE_FMT_W3C;
    *c = r;
    return 0;
}

/* Fold a context of a higher-priority family into c. */
static void merge(struct keel_trace_ctx *c, const struct keel_trace_ctx *r, uint8_t fmt)
{
    uint8_t formats = c->formats | fmt;
    if (r->has_ids || !c->has_ids) {
        *c = *r;
    } else {
        c->sampled = r->sampled;
        c->debug = r->debug;
    }
    c->formats = formats;
}

enum { H_TRACEID, H_SPANID, H_PARENT, H_SAMPLED, H_FLAGS, H_B3, H_TRACEPARENT, H__COUNT };

void keel_trace_extract(const struct keel_http_header *h, size_t n, struct keel_trace_ctx *c)
{
    const struct keel_str *v[H__COUNT] = { 0 };
    for (size_t i = 0; i < n; i++) {
        int k;
        switch (keel_http_hdr_id(&h[i])) {
        case KEEL_HDR_X_B3_TRACEID: k = H_TRACEID; break;
        case KEEL_HDR_X_B3_SPANID: k = H_SPANID; break;
        case KEEL_HDR_X_B3_PARENTSPANID: k = H_PARENT; break;
        case KEEL_HDR_X_B3_SAMPLED: k = H_SAMPLED; break;
        case KEEL_HDR_X_B3_FLAGS: k = H_FLAGS; break;
        case KEEL_HDR_B3: k = H_B3; break;
        case KEEL_HDR_TRACEPARENT: k = H_TRACEPARENT; break;
        default: continue;
        }
        if (v[k] == NULL) /* the first value wins */
            v[k] = &h[i].value;
    }
    *c = (struct keel_trace_ctx){ .sampled = -1 };
    struct keel_trace_ctx r, w3c = { 0 };
    if (v[H_TRACEPARENT] && keel_trace_parse_traceparent(v[H_TRACEPARENT]->p, v[H_TRACEPARENT]->len, &r) == 0)
        *c = w3c = r;
    /* x-b3-*: every header present must be well formed */
    r = (struct keel_trace_ctx){ .sampled = -1 };
    bool ok = v[H_TRACEID] || v[H_SPANID] || v[H_PARENT] || v[H_SAMPLED] || v[H_FLAGS];
    if (v[H_SAMPLED] && keel_trace_parse_sampled(v[H_SAMPLED]->p, v[H_SAMPLED]->len, &r.sampled) < 0)
        ok = false;
    if (v[H_FLAGS] && v[H_FLAGS]->len == 1 && v[H_FLAGS]->p[0] == '1') { /* other values: ignored */
        r.debug = true;
        r.sampled = 1;
    }
    if (v[H_TRACEID] || v[H_SPANID]) {
        if (!v[H_TRACEID] || !v[H_SPANID] ||
            keel_trace_hex_id(v[H_TRACEID]->p, v[H_TRACEID]->len, &r.trace_hi, &r.trace_lo) < 0 ||
            span_id(v[H_SPANID]->p, v[H_SPANID]->len, &r.span_id) < 0)
            ok = false;
        r.trace128 = v[H_TRACEID] && v[H_TRACEID]->len == 32;
        r.has_ids = true;
    }
    if (v[H_PARENT] && (!r.has_ids || span_id(v[H_PARENT]->p, v[H_PARENT]->len, &r.parent_id) < 0))
        ok = false;
    if (ok) /* B3 ids win over W3C ones; a bare B3 sampling state applies to either */
        merge(c, &r, KEEL_TRACE_FMT_B3);
    if (v[H_B3] && keel_trace_parse_b3_single(v[H_B3]->p, v[H_B3]->len, &r) == 0)
        merge(c, &r, KEEL_TRACE_FMT_B3_SINGLE);
    if ((c->formats & KEEL_TRACE_FMT_W3C) && (c->trace_hi != w3c.trace_hi || c->trace_lo != w3c.trace_lo)) {
        c->formats &= (uint8_t)~KEEL_TRACE_FMT_W3C; /* B3 won with another trace */
        c->w3c_foreign = true;
    }
}

void keel_trace_hex16(uint64_t v, char out[16])
{
    keel_fmt_hex16(v, out);
}

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

static char *put_trace(char *o, const struct keel_trace_ctx *c, bool force128)
{
    if (c->trace128 || force128) {
        keel_fmt_hex16(c->trace_hi, o);
        o += 16;
    }
    keel_fmt_hex16(c->trace_lo, o);
    return o + 16;
}

size_t keel_trace_format_b3(const struct keel_trace_ctx *c, char *out)
{
    char *o = out;
    if (c->has_ids) {
        o = put(o, "x-b3-traceid: ", 14);
        o = put_trace(o, c, false);
        o = put(o, "\r\nx-b3-spanid: ", 15);
        keel_fmt_hex16(c->span_id, o);
        o += 16;
        o = put(o, "\r\n", 2);
        if (c->parent_id != 0) {
            o = put(o, "x-b3-parentspanid: ", 19);
            keel_fmt_hex16(c->parent_id, o);
            o += 16;
            o = put(o, "\r\n", 2);
        }
    }
    if (c->debug)
        o = put(o, "x-b3-flags: 1\r\n", 15);
    else if (c->sampled >= 0)
        o = put(o, c->sampled ? "x-b3-sampled: 1\r\n" : "x-b3-sampled: 0\r\n", 17);
    return (size_t)(o - out);
}

size_t keel_trace_format_b3_single(const struct keel_trace_ctx *c, char *out)
{
    char *o = put(out, "b3: ", 4);
    char state = c->debug ? 'd' : c->sampled == 1 ? '1' : '0';
    if (!c->has_ids) {
        *o++ = state;
    } else {
        o = put_trace(o, c, false);
        *o++ = '-';
        keel_fmt_hex16(c->span_id, o);
        o += 16;
        if (c->sampled >= 0 || c->debug) {
            *o++ = '-';
            *o++ = state;
            if (c->parent_id != 0) {
                *o++ = '-';
                keel_fmt_hex16(c->parent_id, o);
                o += 16;
            }
        }
    }
    return (size_t)(put(o, "\r\n", 2) - out);
}

size_t keel_trace_format_traceparent(const struct keel_trace_ctx *c, char *out)
{
    if (!c->has_ids)
        return 0;
    char *o = put(out, "traceparent: 00-", 16);
    o = put_trace(o, c, true); /* a 64-bit trace id is left-padded with zeros */
    *o++ = '-';
    keel_fmt_hex16(c->span_id, o);
    o += 16;
    unsigned flags = (c->w3c_flags & ~1u) | (c->sampled == 1 || c->debug ? 1u : 0u);
    *o++ = '-';
    *o++ = hexdig[(flags >> 4) & 15];
    *o++ = hexdig[flags & 15];
    return (size_t)(put(o, "\r\n", 2) - out);
}

bool keel_trace_sample(struct keel_str rid, double percent)
{
    if (percent <= 0)
        return false;
    if (percent >= 100)
        return true;
    uint64_t threshold = (uint64_t)(percent * 100 + 0.5);
    uint64_t v;
    if (rid.len < 8 || hex64(rid.p, 8, &v) < 0)
        v = keel_rand64();
    return v % 10000 < threshold;
}
