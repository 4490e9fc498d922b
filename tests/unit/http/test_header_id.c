/* Header ids: the hand-written switch of header_id.c against the list in http.h, in any
 * case; near misses; the x-b3-* family; the parser naming every header; the sets built
 * on the ids (hop-by-hop, trace context). */
#include "http/http.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static const struct {
    enum keel_hdr id;
    const char *name;
} known[] = {
#define ROW(id, name) { KEEL_HDR_##id, name },
    KEEL_HTTP_HEADER_IDS(ROW)
#undef ROW
};
#define N_KNOWN (sizeof(known) / sizeof(known[0]))

static enum keel_hdr id_of(const char *s, size_t n)
{
    return keel_http_header_id((struct keel_str){ s, n });
}

static void every_name_in_any_case(void **state)
{
    (void)state;
    assert_int_equal(N_KNOWN + 3, KEEL_HDR_COUNT); /* UNSET, OTHER, X_B3_OTHER */
    char buf[64];
    for (size_t i = 0; i < N_KNOWN; i++) {
        size_t n = strlen(known[i].name);
        assert_int_equal(id_of(known[i].name, n), known[i].id);
        for (size_t j = 0; j < n; j++)
            buf[j] = (char)toupper((unsigned char)known[i].name[j]);
        assert_int_equal(id_of(buf, n), known[i].id);
        for (size_t j = 0; j < n; j++) /* every other byte upper */
            buf[j] = j % 2 ? buf[j] : known[i].name[j];
        assert_int_equal(id_of(buf, n), known[i].id);
    }
}

/* One byte off anywhere, one byte more or less: never the id of the name it resembles.
 * (0x20 folding is the trap: '-' | 0x20 is '-', but '\r' | 0x20 is '-' too.) */
static void near_misses(void **state)
{
    (void)state;
    static const char subst[] = { '_', 'q', '\r', '\0', 0x7f, (char)0xc5, '-', '3' };
    char buf[64];
    for (size_t i = 0; i < N_KNOWN; i++) {
        size_t n = strlen(known[i].name);
        for (size_t j = 0; j < n; j++)
            for (size_t k = 0; k < sizeof(subst); k++) {
                memcpy(buf, known[i].name, n);
                if (tolower((unsigned char)subst[k]) == known[i].name[j])
                    continue;
                buf[j] = subst[k];
                if (id_of(buf, n) == known[i].id)
                    fail_msg("\"%s\" with byte %zu = 0x%02x is still its id", known[i].name, j,
                             (unsigned char)subst[k]);
            }
        memcpy(buf, known[i].name, n);
        buf[n] = 's';
        assert_int_not_equal(id_of(buf, n + 1), known[i].id);
        assert_int_not_equal(id_of(buf, n - 1), known[i].id);
    }
    assert_int_equal(id_of("", 0), KEEL_HDR_OTHER);
    assert_int_equal(id_of("referer", 7), KEEL_HDR_OTHER);
    assert_int_equal(id_of("content-types", 13), KEEL_HDR_OTHER);
}

/* Any other x-b3-* name is a trace context header (the tracer replaces the family). */
static void x_b3_family(void **state)
{
    (void)state;
    char buf[48] = "X-B3-";
    for (size_t n = 5; n < sizeof(buf); n++) { /* "X-B3-", "X-B3-z", "X-B3-zz", ... */
        assert_int_equal(id_of(buf, n), KEEL_HDR_X_B3_OTHER);
        buf[n] = 'z';
    }
    assert_int_equal(id_of("x-b3-spanid", 11), KEEL_HDR_X_B3_SPANID);
    assert_int_equal(id_of("x-b3-spanidx", 12), KEEL_HDR_X_B3_OTHER);
    assert_int_equal(id_of("x-b3", 4), KEEL_HDR_OTHER);
    assert_int_equal(id_of("x_b3-traceid", 12), KEEL_HDR_OTHER);
}

static void parser_names_every_header(void **state)
{
    (void)state;
    static const char head[] = "GET / HTTP/1.1\r\nHost: a\r\nUSER-AGENT: x\r\nX-B3-Foo: 1\r\n"
                               "Accept: */*\r\ncontent-length: 0\r\n"
                               "X-Keel-Peer-Metadata: m\r\n\r\n";
    struct keel_http_header h[16];
    struct keel_http_request req = { .headers = h };
    struct keel_http_limits lim = { 8192, 1024, 16 };
    struct keel_http_perror e;
    int n = (int)sizeof(head) - 1;
    assert_int_equal(keel_http_parse_request(head, (size_t)n, &lim, &req, &e), n);
    static const enum keel_hdr want[] = { KEEL_HDR_HOST, KEEL_HDR_USER_AGENT, KEEL_HDR_X_B3_OTHER,
                                          KEEL_HDR_OTHER, KEEL_HDR_CONTENT_LENGTH,
                                          KEEL_HDR_X_KEEL_PEER_METADATA };
    assert_int_equal(req.n_headers, 6);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(h[i].id, want[i]);
    /* a header built by hand (no id) is named on the spot, the same way */
    struct keel_http_header hand = { .name = KEEL_STR("Content-Type"), .value = KEEL_STR("x") };
    assert_int_equal(keel_http_hdr_id(&hand), KEEL_HDR_CONTENT_TYPE);
}

static bool in(const char *name, uint64_t set)
{
    struct keel_http_header h = { .name = { name, strlen(name) } };
    return keel_http_hdr_in(&h, set);
}

static void sets(void **state)
{
    (void)state;
    static const char *hop[] = { "Connection", "keep-alive",     "TE",
                                 "Transfer-Encoding", "Proxy-Connection", "Upgrade",
                                 "Trailer", "Expect", "Content-Length" };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        assert_true(in(hop[i], KEEL_HDR_HOP_BY_HOP));
    assert_false(in("Host", KEEL_HDR_HOP_BY_HOP));
    assert_false(in("x-request-id", KEEL_HDR_HOP_BY_HOP));
    assert_false(in("trailers", KEEL_HDR_HOP_BY_HOP));
    assert_true(in("traceparent", KEEL_HDR_TRACE_CONTEXT));
    assert_true(in("B3", KEEL_HDR_TRACE_CONTEXT));
    assert_true(in("x-b3-anything", KEEL_HDR_TRACE_CONTEXT));
    assert_false(in("tracestate", KEEL_HDR_TRACE_CONTEXT));
    assert_false(in("x-request-id", KEEL_HDR_TRACE_CONTEXT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_name_in_any_case), cmocka_unit_test(near_misses),
        cmocka_unit_test(x_b3_family),            cmocka_unit_test(parser_names_every_header),
        cmocka_unit_test(sets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
