/* libFuzzer target: the Zipkin v2 and v1 JSON parsers on arbitrary bytes. What they
 * accept must write back as v2 JSON that parses again to the same spans (the collector
 * answers queries with that writer), and must go into a store and out of its queries
 * without harm. */
#include "core/buf.h"
#include "core/err.h"
#include "tracing/store.h"
#include "tracing/zipkin_json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(const uint8_t *data, size_t size, bool v1)
{
    struct keel_zipkin_list l = { 0 }, again = { 0 };
    char err[512] = "";
    int rc = v1 ? keel_zipkin_json_parse_v1((const char *)data, size, &l, err, sizeof(err))
                : keel_zipkin_json_parse((const char *)data, size, &l, err, sizeof(err));
    if (rc < 0) {
        if (l.n != 0 || err[0] == '\0')
            __builtin_trap();
        return;
    }
    struct keel_buf a = { 0 }, b = { 0 };
    keel_zipkin_json_write_spans(&a, l.spans, l.n);
    if (keel_zipkin_json_parse(keel_buf_rptr(&a), keel_buf_len(&a), &again, err, sizeof(err)) < 0 ||
        again.n != l.n)
        __builtin_trap();
    keel_zipkin_json_write_spans(&b, again.spans, again.n);
    if (keel_buf_len(&a) != keel_buf_len(&b) || memcmp(keel_buf_rptr(&a), keel_buf_rptr(&b), keel_buf_len(&a)))
        __builtin_trap();
    struct keel_trace_store_limits lim = { 8, 4096, 4 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    for (size_t i = 0; i < l.n; i++)
        keel_trace_store_add(st, l.spans[i]);
    l.n = 0;
    struct keel_trace_query q = { .end_ts = INT64_MAX / 1000, .lookback = INT64_MAX / 1000,
                                  .limit = 10 };
    size_t n;
    free(keel_trace_store_query(st, &q, &n));
    free(keel_trace_store_dependencies(st, INT64_MAX / 1000, INT64_MAX / 1000, &n));
    free(keel_trace_store_services(st, &n));
    struct keel_trace_store_stats s;
    keel_trace_store_stats(st, &s);
    if (s.spans > 8)
        __builtin_trap();
    keel_trace_store_free(st);
    keel_zipkin_list_fini(&l);
    keel_zipkin_list_fini(&again);
    keel_buf_release(&a);
    keel_buf_release(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size, false);
    check(data, size, true);
    return 0;
}
