/* Trace context parsers and formatters. Every value is also parsed at every prefix
 * length placed right before a PROT_NONE page, so a read past the end crashes the test. */
#include "core/err.h"
#include "tracing/tracing.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

static char *guarded(const char *s, size_t len)
{
    static char *region;
    long page = sysconf(_SC_PAGESIZE);
    if (region == NULL) {
        region = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(region != MAP_FAILED);
        assert_int_equal(mprotect(region + page, (size_t)page, PROT_NONE), 0);
    }
    char *p = region + page - len;
    memcpy(p, s, len);
    return p;
}

typedef int (*parse_fn)(const char *, size_t, struct keel_trace_ctx *);

/* Parse s whole (expect rc) and every prefix (must not crash; a prefix of a valid value
 * may only be valid where the grammar allows an end). */
static struct keel_trace_ctx parse_all(parse_fn f, const char *s, int rc)
{
    size_t len = strlen(s);
    struct keel_trace_ctx c = { .sampled = 7 };
    for (size_t i = 0; i < len; i++) {
        struct keel_trace_ctx x = { .sampled = 7 };
        int r = f(guarded(s, i), i, &x);
        if (r != 0)
            assert_int_equal(x.sampled, 7); /* untouched on failure */
    }
    assert_int_equal(f(guarded(s, len), len, &c), rc);
    return c;
}

static int b3(const char *p, size_t n, struct keel_trace_ctx *c) { return keel_trace_parse_b3_single(p, n, c); }
static int tp(const char *p, size_t n, struct keel_trace_ctx *c) { return keel_trace_parse_traceparent(p, n, c); }

static void b3_single_forms(void **state)
{
    struct keel_trace_ctx c =
        parse_all(b3, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90", 0);
    assert_true(c.has_ids && c.trace128);
    assert_true(c.trace_hi == 0x80f198ee56343ba8ULL && c.trace_lo == 0x64fe8b2a57d3eff7ULL);
    assert_true(c.span_id == 0xe457b5a2e4d86bd1ULL && c.parent_id == 0x05e3ac9a4f6e3b90ULL);
    assert_int_equal(c.sampled, 1);
    assert_int_equal(c.formats, KEEL_TRACE_FMT_B3_SINGLE);
    c = parse_all(b3, "80f198ee56343ba8-e457b5a2e4d86bd1", 0);
    assert_true(c.has_ids && !c.trace128 && c.trace_hi == 0 && c.sampled == -1 && c.parent_id == 0);
    c = parse_all(b3, "a1b2c3d4e5f60718-0102030405060708-d", 0);
    assert_true(c.debug && c.sampled == 1);
    c = parse_all(b3, "0", 0);
    assert_true(!c.has_ids && c.sampled == 0);
    c = parse_all(b3, "1", 0);
    assert_true(!c.has_ids && c.sampled == 1);
    c = parse_all(b3, "d", 0);
    assert_true(c.debug);
    /* malformed: never a context */
    const char *bad[] = { "", "-", "x", "2", "80f198ee56343ba8", "80f198ee56343ba8-",
                          "80f198ee56343ba8-e457b5a2e4d86bd", "80f198ee56343ba8-e457b5a2e4d86bd1-",
                          "80f198ee56343ba8-e457b5a2e4d86bd1-2", "80f198ee56343ba8-e457b5a2e4d86bd1-11",
                          "80f198ee56343ba8-e457b5a2e4d86bd1-1-", "80f198ee56343ba8-e457b5a2e4d86bd1-1-0x",
                          "0000000000000000-e457b5a2e4d86bd1", "80f198ee56343ba8-0000000000000000",
                          "80f198ee56343ba8-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-1",
                          "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1", "g0f198ee56343ba8-e457b5a2e4d86bd1" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct keel_trace_ctx x = { .sampled = 7 };
        if (b3(guarded(bad[i], strlen(bad[i])), strlen(bad[i]), &x) != KEEL_EINVAL)
            fail_msg("accepted b3: %s", bad[i]);
    }
}

static void traceparent_forms(void **state)
{
    struct keel_trace_ctx c = parse_all(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0);
    assert_true(c.has_ids && c.trace128 && c.sampled == 1 && c.w3c_flags == 1);
    assert_true(c.trace_hi == 0x4bf92f3577b34da6ULL && c.span_id == 0x00f067aa0ba902b7ULL);
    c = parse_all(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 0);
    assert_int_equal(c.sampled, 0);
    /* a later version may add fields */
    parse_all(tp, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", 0);
    const char *bad[] = { "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                          "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                          "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                          "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-zz-1-01", "" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct keel_trace_ctx x;
        if (tp(guarded(bad[i], strlen(bad[i])), strlen(bad[i]), &x) != KEEL_EINVAL)
            fail_msg("accepted traceparent: %s", bad[i]);
    }
}

#define H(n, v) { .name = { n, sizeof(n) - 1 }, .value = { v, sizeof(v) - 1 } }

static void extract_b3_multi(void **state)
{
    struct keel_http_header h[] = {
        H("Host", "x"), H("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
        H("x-b3-spanid", "a2fb4a1d1a96d312"), H("X-B3-ParentSpanId", "0020000000000001"),
        H("x-b3-sampled", "true"), H("x-b3-spanid", "ffffffffffffffff"),
    };
    struct keel_trace_ctx c;
    keel_trace_extract(h, 6, &c);
    assert_true(c.has_ids && c.trace128 && c.sampled == 1 && !c.debug);
    assert_true(c.span_id == 0xa2fb4a1d1a96d312ULL); /* the first value wins */
    assert_true(c.parent_id == 0x0020000000000001ULL);
    assert_int_equal(c.formats, KEEL_TRACE_FMT_B3);
    /* a malformed member voids the family: "-" as parent is an error, not "absent" */
    struct keel_http_header bad[] = { H("x-b3-traceid", "463ac35c9f6413ad"),
                                      H("x-b3-spanid", "a2fb4a1d1a96d312"), H("x-b3-parentspanid", "-") };
    keel_trace_extract(bad, 3, &c);
    assert_false(c.has_ids);
    assert_int_equal(c.formats, 0);
    /* flags 1 = debug and sampled; other flag values are ignored */
    struct keel_http_header dbg[] = { H("x-b3-flags", "1") };
    keel_trace_extract(dbg, 1, &c);
    assert_true(!c.has_ids && c.debug && c.sampled == 1);
    struct keel_http_header other[] = { H("x-b3-flags", "0"), H("x-b3-sampled", "0") };
    keel_trace_extract(other, 2, &c);
    assert_true(!c.debug && c.sampled == 0);
    struct keel_http_header lone[] = { H("x-b3-spanid", "a2fb4a1d1a96d312") };
    keel_trace_extract(lone, 1, &c);
    assert_false(c.has_ids);
}

static void extract_precedence(void **state)
{
    struct keel_http_header h[] = {
        H("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        H("x-b3-traceid", "1111111111111111"), H("x-b3-spanid", "2222222222222222"),
        H("b3", "3333333333333333-4444444444444444-0"),
    };
    struct keel_trace_ctx c;
    keel_trace_extract(h, 4, &c); /* b3 wins; the families received are written back */
    assert_true(c.trace_lo == 0x3333333333333333ULL && c.span_id == 0x4444444444444444ULL);
    assert_int_equal(c.sampled, 0);
    /* ... but a traceparent of another trace passes unchanged */
    assert_int_equal(c.formats, KEEL_TRACE_FMT_B3 | KEEL_TRACE_FMT_B3_SINGLE);
    assert_true(c.w3c_foreign);
    assert_false(keel_trace_rewrites(&c, KEEL_HDR_TRACEPARENT));
    assert_true(keel_trace_rewrites(&c, KEEL_HDR_X_B3_SPANID));
    struct keel_http_header same[] = {
        H("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        H("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"), H("x-b3-spanid", "2222222222222222"),
    };
    keel_trace_extract(same, 3, &c); /* the same trace in both: both are rewritten */
    assert_int_equal(c.formats, KEEL_TRACE_FMT_B3 | KEEL_TRACE_FMT_W3C);
    assert_true(c.span_id == 0x2222222222222222ULL && !c.w3c_foreign);
    assert_true(keel_trace_rewrites(&c, KEEL_HDR_TRACEPARENT));
    keel_trace_extract(h, 3, &c); /* then x-b3-* */
    assert_true(c.trace_lo == 0x1111111111111111ULL && c.sampled == -1);
    keel_trace_extract(h, 1, &c); /* then W3C */
    assert_true(c.trace_hi == 0x4bf92f3577b34da6ULL && c.sampled == 1);
    /* a bare b3 sampling state over W3C ids keeps the ids */
    struct keel_http_header s[] = { h[0], H("b3", "0") };
    keel_trace_extract(s, 2, &c);
    assert_true(c.trace_hi == 0x4bf92f3577b34da6ULL && c.sampled == 0);
    assert_true(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("X-B3-Sampled"))));
    assert_true(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("B3"))));
    assert_true(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("traceparent"))));
    assert_false(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("tracestate"))));
    assert_false(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("x-request-id"))));
    assert_true(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("X-B3-Whatever"))));
    assert_true(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("x-b3-"))));
    assert_false(keel_trace_is_context_header(keel_http_header_id(KEEL_STR("x-b3"))));
}

static void format_headers(void **state)
{
    struct keel_trace_ctx c = { .trace_hi = 0x463ac35c9f6413adULL, .trace_lo = 0x48485a3953bb6124ULL,
                                .span_id = 0xa2fb4a1d1a96d312ULL, .parent_id = 0x20000000000001ULL,
                                .sampled = 1, .has_ids = true, .trace128 = true };
    char out[KEEL_TRACE_HEADERS_MAX];
    size_t n = keel_trace_format_b3(&c, out);
    assert_true(n < sizeof(out));
    out[n] = '\0';
    assert_string_equal(out, "x-b3-traceid: 463ac35c9f6413ad48485a3953bb6124\r\n"
                             "x-b3-spanid: a2fb4a1d1a96d312\r\n"
                             "x-b3-parentspanid: 0020000000000001\r\nx-b3-sampled: 1\r\n");
    out[keel_trace_format_b3_single(&c, out)] = '\0';
    assert_string_equal(out, "b3: 463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-0020000000000001\r\n");
    out[keel_trace_format_traceparent(&c, out)] = '\0';
    assert_string_equal(out, "traceparent: 00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01\r\n");
    c.debug = true;
    c.parent_id = 0;
    c.trace128 = false;
    c.trace_hi = 0;
    out[keel_trace_format_b3(&c, out)] = '\0';
    assert_string_equal(out, "x-b3-traceid: 48485a3953bb6124\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nx-b3-flags: 1\r\n");
    out[keel_trace_format_traceparent(&c, out)] = '\0'; /* 64-bit ids are padded for W3C */
    assert_string_equal(out, "traceparent: 00-000000000000000048485a3953bb6124-a2fb4a1d1a96d312-01\r\n");
    /* what is written parses back to the same context */
    c.debug = false;
    c.sampled = 0;
    c.parent_id = 7;
    size_t len = keel_trace_format_b3_single(&c, out);
    struct keel_trace_ctx back;
    assert_int_equal(keel_trace_parse_b3_single(out + 4, len - 6, &back), 0);
    assert_true(back.trace_lo == c.trace_lo && back.span_id == c.span_id && back.parent_id == 7 &&
                back.sampled == 0);
}

static void sampling_by_request_id(void **state)
{
    struct keel_str rid = KEEL_STR("00000063-0000-4000-8000-000000000000"); /* 99 */
    assert_true(keel_trace_sample(rid, 1.0));       /* 99 < 100 */
    rid = KEEL_STR("00000064-0000-4000-8000-000000000000"); /* 100 */
    assert_false(keel_trace_sample(rid, 1.0));
    assert_true(keel_trace_sample(rid, 100));
    assert_false(keel_trace_sample(rid, 0));
    rid = KEEL_STR("0000270f-0000-4000-8000-000000000000"); /* 9999 */
    assert_true(keel_trace_sample(rid, 99.995));
    assert_false(keel_trace_sample(rid, 99.98));
    /* not hex: a random draw, about the share asked for */
    int hits = 0;
    for (int i = 0; i < 10000; i++)
        hits += keel_trace_sample(KEEL_STR("not-hex"), 10);
    assert_true(hits > 900 && hits < 1100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(b3_single_forms),     cmocka_unit_test(traceparent_forms),
        cmocka_unit_test(extract_b3_multi),    cmocka_unit_test(extract_precedence),
        cmocka_unit_test(format_headers),      cmocka_unit_test(sampling_by_request_id),
    };
    return cmocka_run_group_tests_name("tracing/context", tests, NULL, NULL);
}
