/* libFuzzer target: trace context headers. The input is a header block, one
 * "name: value" per line (names from the first byte's choice when a line has no colon),
 * extracted as a request's context; each value also goes through the single-value
 * parsers, and a context that parsed is formatted and must parse back the same. */
#include "core/err.h"
#include "tracing/tracing.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static const char *const names[] = { "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                                     "x-b3-sampled", "x-b3-flags",  "b3",
                                     "traceparent",  "tracestate" };

static void roundtrip(const struct keel_trace_ctx *c)
{
    char out[KEEL_TRACE_HEADERS_MAX];
    struct keel_trace_ctx back;
    size_t n = keel_trace_format_b3_single(c, out);
    if (n < 6 || n > sizeof(out) || keel_trace_parse_b3_single(out + 4, n - 6, &back) != 0)
        __builtin_trap();
    if (c->has_ids && (back.trace_lo != c->trace_lo || back.span_id != c->span_id))
        __builtin_trap();
    n = keel_trace_format_traceparent(c, out);
    if (c->has_ids && (n != 70 || keel_trace_parse_traceparent(out + 13, n - 15, &back) != 0 ||
                       back.span_id != c->span_id))
        __builtin_trap();
    if (keel_trace_format_b3(c, out) > sizeof(out))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct keel_http_header h[16];
    size_t n = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p < end && n < 16) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        h[n].id = KEEL_HDR_UNSET; /* built by hand: named by keel_trace_extract */
        if (colon != NULL) {
            h[n].name = (struct keel_str){ p, (size_t)(colon - p) };
            const char *v = colon + 1;
            while (v < line_end && *v == ' ')
                v++;
            h[n].value = (struct keel_str){ v, (size_t)(line_end - v) };
        } else {
            const char *nm = names[(unsigned char)(line_end > p ? *p : 0) % 8];
            h[n].name = (struct keel_str){ nm, strlen(nm) };
            h[n].value = (struct keel_str){ p + (line_end > p), (size_t)(line_end - p) - (line_end > p) };
        }
        struct keel_trace_ctx c;
        if (keel_trace_parse_b3_single(h[n].value.p, h[n].value.len, &c) == 0)
            roundtrip(&c);
        if (keel_trace_parse_traceparent(h[n].value.p, h[n].value.len, &c) == 0)
            roundtrip(&c);
        n++;
        p = nl ? nl + 1 : end;
    }
    struct keel_trace_ctx c;
    keel_trace_extract(h, n, &c);
    if (c.has_ids && (c.span_id == 0 || (c.trace_hi == 0 && c.trace_lo == 0)))
        __builtin_trap();
    if (c.sampled < -1 || c.sampled > 1)
        __builtin_trap();
    roundtrip(&c);
    return 0;
}
