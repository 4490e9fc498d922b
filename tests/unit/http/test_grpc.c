/* gRPC message counting and chunked trailers as spans (what the proxy's gRPC telemetry
 * stands on): the same answer whatever the cut of the input. */
#include "core/err.h"
#include "http/http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static size_t msg(char *p, const char *body, size_t n, int compressed)
{
    p[0] = (char)compressed;
    p[1] = (char)(n >> 24);
    p[2] = (char)(n >> 16);
    p[3] = (char)(n >> 8);
    p[4] = (char)n;
    memcpy(p + 5, body, n);
    return n + 5;
}

static void grpc_messages_in_any_pieces(void **state)
{
    static char big[70000];
    memset(big, 0x00, sizeof(big)); /* zeros that look like prefixes, if miscounted */
    char buf[80000];
    size_t len = 0;
    len += msg(buf + len, "", 0, 0);         /* an empty message counts */
    len += msg(buf + len, "hello", 5, 1);
    len += msg(buf + len, big, sizeof(big), 0);
    len += msg(buf + len, "\x00\x00\x00\x00\x05", 5, 0);
    for (size_t piece = 1; piece <= 9; piece++) {
        struct keel_grpc_frames f = { 0 };
        for (size_t i = 0; i < len; i += piece)
            keel_grpc_frames_feed(&f, buf + i, len - i < piece ? len - i : piece);
        assert_int_equal(f.messages, 4);
        assert_int_equal(f.left, 0);
        assert_int_equal(f.hdr, 0);
    }
    /* a prefix alone counts; the message it announces is then awaited */
    struct keel_grpc_frames f = { 0 };
    keel_grpc_frames_feed(&f, "\x00\x00\x00\x01\x00", 5);
    assert_int_equal(f.messages, 1);
    assert_int_equal(f.left, 256);
}

/* want_trailers: the trailer lines come out as spans whose concatenation is the trailer
 * section, at every cut; without it they are dropped as before. */
static void chunked_trailer_spans(void **state)
{
    static const char body[] = "5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n";
    static const char want[] = "grpc-status: 0\r\ngrpc-message: ok\r\n";
    size_t len = sizeof(body) - 1;
    for (size_t piece = 1; piece <= len; piece++) {
        struct keel_http_chunked c = { .want_trailers = true };
        char data[16] = "", tr[64] = "";
        size_t dl = 0, tl = 0, pos = 0, avail = piece;
        int rc = KEEL_CHUNK_MORE;
        while (rc != KEEL_CHUNK_DONE) {
            size_t consumed, off = 0, n = 0;
            rc = keel_http_chunked_step(&c, body + pos, avail - pos, &consumed, &off, &n);
            assert_true(rc > 0);
            if (rc == KEEL_CHUNK_DATA) {
                memcpy(data + dl, body + pos + off, n);
                dl += n;
            } else if (rc == KEEL_CHUNK_TRAILER) {
                memcpy(tr + tl, body + pos + off, n);
                tl += n;
            }
            pos += consumed;
            if (pos == avail && avail < len)
                avail = avail + piece < len ? avail + piece : len;
        }
        assert_int_equal(pos, len);
        assert_int_equal(dl, 5);
        assert_memory_equal(data, "hello", 5);
        assert_int_equal(tl, sizeof(want) - 1);
        assert_memory_equal(tr, want, tl);
    }
    struct keel_http_chunked c = { 0 };
    size_t consumed, off, n;
    assert_int_equal(keel_http_chunked_step(&c, body + 10, len - 10, &consumed, &off, &n),
                     KEEL_CHUNK_DONE);
    /* a control character in a trailer is refused either way */
    struct keel_http_chunked c2 = { .want_trailers = true };
    assert_int_equal(keel_http_chunked_step(&c2, "0\r\nx: \x01\r\n\r\n", 11, &consumed, &off, &n),
                     KEEL_EINVAL);
}

/* Trailer lines passed on hold a header line's bytes: a CR only right before the LF (also
 * when the CR ends one piece and the LF begins the next), no DEL. A bare CR and DEL used to
 * be passed on. Every cut of each body. */
static int feed_in_two(const char *body, size_t len, size_t cut)
{
    struct keel_http_chunked c = { .want_trailers = true };
    size_t pos = 0, avail = cut;
    for (;;) {
        size_t consumed, off = 0, n = 0;
        int rc = keel_http_chunked_step(&c, body + pos, avail - pos, &consumed, &off, &n);
        if (rc < 0 || rc == KEEL_CHUNK_DONE)
            return rc;
        pos += consumed;
        if (pos == avail) {
            if (avail == len)
                return KEEL_CHUNK_MORE;
            avail = len;
        }
    }
}

static void trailer_bytes_held_to_header_bytes(void **state)
{
    (void)state;
    static const char *const bad[] = { "0\r\nx-t: a\rb\r\n\r\n", "0\r\nx-t: a\x7f\r\n\r\n",
                                       "0\r\nx-t: a\r\r\n\r\n", "0\r\nx-t: a\r" };
    static const char good[] = "0\r\nx-t: a\tb \xff\r\ny: 2\n\r\n";
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        size_t len = strlen(bad[k]);
        for (size_t cut = 1; cut <= len; cut++) {
            int rc = feed_in_two(bad[k], len, cut);
            if (k == 3 ? rc != KEEL_CHUNK_MORE : rc != KEEL_EINVAL)
                fail_msg("bad trailer #%zu cut at %zu: %d", k, cut, rc);
        }
    }
    for (size_t cut = 1; cut <= sizeof(good) - 1; cut++)
        assert_int_equal(feed_in_two(good, sizeof(good) - 1, cut), KEEL_CHUNK_DONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grpc_messages_in_any_pieces),
        cmocka_unit_test(chunked_trailer_spans),
        cmocka_unit_test(trailer_bytes_held_to_header_bytes),
    };
    return cmocka_run_group_tests_name("http/grpc", tests, NULL, NULL);
}
