/* HTTP/2 glue (src/http/h2.c): a server session and a client session of the same glue,
 * wired to each other in memory; raw frames for the attack cases. */
#include "core/err.h"
#include "http/h2.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#define MAXS 600

struct tstream {
    int32_t id;
    char hdrs[2048];   /* "name: value\n"... of the head */
    char trailers[512];
    size_t body_len;   /* DATA bytes received */
    size_t unconsumed; /* not yet given back to flow control */
    bool ended, closed, head_done;
    uint32_t close_code;
    /* what to send back */
    const char *out_body;
    size_t out_len, out_pos;
    bool ready;        /* read_body may give bytes (else KEEL_AGAIN) */
    bool with_trailers;
};

struct side {
    struct keel_h2 *h;
    bool server;
    bool refuse;       /* open_stream says no */
    bool auto_consume;
    struct tstream st[MAXS];
    int n;
    int events[KEEL_H2_EV_COUNT];
    struct keel_buf out;
};

static void *t_open(void *arg, int32_t id)
{
    struct side *sd = arg;
    if (sd->refuse || sd->n >= MAXS)
        return NULL;
    struct tstream *t = &sd->st[sd->n++];
    memset(t, 0, sizeof(*t));
    t->id = id;
    return t;
}

static int t_header(void *arg, void *stp, const struct keel_h2_nv *nv, bool trailer)
{
    struct tstream *t = stp;
    char *dst = trailer ? t->trailers : t->hdrs;
    size_t cap = trailer ? sizeof(t->trailers) : sizeof(t->hdrs);
    size_t len = strlen(dst);
    snprintf(dst + len, cap - len, "%.*s: %.*s\n", (int)nv->name_len, nv->name,
             (int)nv->value_len, nv->value);
    return 0;
}

static void t_headers_done(void *arg, void *stp, bool end_stream, bool trailer)
{
    struct tstream *t = stp;
    t->head_done = true;
    if (end_stream)
        t->ended = true;
}

static void t_data(void *arg, void *stp, const uint8_t *p, size_t n)
{
    struct side *sd = arg;
    struct tstream *t = stp;
    t->body_len += n;
    if (sd->auto_consume)
        keel_h2_consume(sd->h, t->id, n);
    else
        t->unconsumed += n;
}

static void t_end(void *arg, void *stp) { ((struct tstream *)stp)->ended = true; }

static ssize_t t_read(void *arg, void *stp, uint8_t *buf, size_t len, uint32_t *flags)
{
    struct side *sd = arg;
    struct tstream *t = stp;
    if (!t->ready)
        return KEEL_AGAIN;
    size_t n = t->out_len - t->out_pos;
    if (n > len)
        n = len;
    memcpy(buf, t->out_body + t->out_pos, n);
    t->out_pos += n;
    if (t->out_pos == t->out_len) {
        if (t->with_trailers) {
            struct keel_h2_nv tr[] = { { "grpc-status", 11, "0", 1 } };
            assert_int_equal(keel_h2_submit_trailers(sd->h, t->id, tr, 1), 0);
        }
        *flags |= KEEL_H2_READ_EOF;
    }
    return (ssize_t)n;
}

static void t_close(void *arg, void *stp, uint32_t code)
{
    struct tstream *t = stp;
    t->closed = true;
    t->close_code = code;
}

static void t_event(void *arg, enum keel_h2_event ev) { ((struct side *)arg)->events[ev]++; }

static const struct keel_h2_callbacks cbs = {
    .open_stream = t_open, .header = t_header, .headers_done = t_headers_done,
    .data = t_data, .end_stream = t_end, .read_body = t_read, .stream_close = t_close,
    .event = t_event,
};

static struct side srv, cli;

static void setup_pair(const struct keel_h2_limits *lim)
{
    memset(&srv, 0, sizeof(srv));
    memset(&cli, 0, sizeof(cli));
    srv.server = true;
    srv.auto_consume = cli.auto_consume = true;
    srv.h = keel_h2_new(true, &cbs, &srv, lim);
    cli.h = keel_h2_new(false, &cbs, &cli, NULL);
}

static void teardown_pair(void)
{
    keel_h2_free(srv.h);
    keel_h2_free(cli.h);
    keel_buf_release(&srv.out);
    keel_buf_release(&cli.out);
}

/* Move bytes both ways until neither side has anything to say; the receiving side gets
 * them `chunk` bytes at a time. Returns false when the server refused the input. */
static bool pump(size_t chunk)
{
    bool ok = true;
    for (int round = 0; round < 10000; round++) {
        keel_h2_send(cli.h, &cli.out, 1 << 20);
        keel_h2_send(srv.h, &srv.out, 1 << 20);
        if (keel_buf_len(&cli.out) == 0 && keel_buf_len(&srv.out) == 0)
            return ok;
        while (keel_buf_len(&cli.out) > 0) {
            size_t n = keel_buf_len(&cli.out) < chunk ? keel_buf_len(&cli.out) : chunk;
            ssize_t rc = ok ? keel_h2_recv(srv.h, keel_buf_rptr(&cli.out), n) : (ssize_t)n;
            if (rc < 0) {
                ok = false;
                rc = (ssize_t)n;
            }
            keel_buf_consume(&cli.out, (size_t)rc);
        }
        while (keel_buf_len(&srv.out) > 0) {
            size_t n = keel_buf_len(&srv.out) < chunk ? keel_buf_len(&srv.out) : chunk;
            ssize_t rc = keel_h2_recv(cli.h, keel_buf_rptr(&srv.out), n);
            if (rc < 0)
                rc = (ssize_t)n;
            keel_buf_consume(&srv.out, (size_t)rc);
        }
    }
    fail_msg("pump did not settle");
    return ok;
}

static const struct keel_h2_nv get_req[] = {
    { ":method", 7, "GET", 3 }, { ":scheme", 7, "http", 4 },
    { ":authority", 10, "svc.local", 9 }, { ":path", 5, "/x", 2 },
};

static struct tstream *client_request(const struct keel_h2_nv *nv, size_t n, bool body)
{
    struct tstream *t = &cli.st[cli.n++];
    memset(t, 0, sizeof(*t));
    int32_t id = keel_h2_submit_request(cli.h, nv, n, body, t);
    assert_true(id > 0);
    t->id = id;
    return t;
}

static void respond(struct tstream *t, const char *body, bool trailers, bool ready)
{
    static const struct keel_h2_nv head[] = { { ":status", 7, "200", 3 },
                                              { "content-type", 12, "text/plain", 10 } };
    t->out_body = body;
    t->out_len = strlen(body);
    t->ready = ready;
    t->with_trailers = trailers;
    assert_int_equal(keel_h2_submit_response(srv.h, t->id, head, 2, true), 0);
}

static void exchange_at(size_t chunk)
{
    setup_pair(NULL);
    struct tstream *c = client_request(get_req, 4, false);
    assert_true(pump(chunk));
    assert_int_equal(srv.n, 1);
    struct tstream *s = &srv.st[0];
    assert_true(s->head_done && s->ended);
    assert_non_null(strstr(s->hdrs, ":method: GET\n"));
    assert_non_null(strstr(s->hdrs, ":authority: svc.local\n"));
    assert_non_null(strstr(s->hdrs, ":path: /x\n"));
    respond(s, "hello, h2", true, true);
    assert_true(pump(chunk));
    assert_non_null(strstr(c->hdrs, ":status: 200\n"));
    assert_int_equal(c->body_len, 9);
    assert_string_equal(c->trailers, "grpc-status: 0\n");
    assert_true(c->ended && c->closed && s->closed);
    assert_int_equal(c->close_code, 0);
    assert_int_equal(keel_h2_open_streams(srv.h), 0);
    assert_true(keel_h2_alive(srv.h));
    teardown_pair();
}

/* A request and a response with a body and trailers, in one piece and a byte at a time. */
static void test_exchange(void **state)
{
    exchange_at(1 << 20);
    exchange_at(1);
    exchange_at(7);
}

/* A body that is not ready yet waits (KEEL_AGAIN) until keel_h2_resume. */
static void test_deferred_body(void **state)
{
    setup_pair(NULL);
    struct tstream *c = client_request(get_req, 4, false);
    assert_true(pump(1 << 20));
    struct tstream *s = &srv.st[0];
    respond(s, "later", false, false);
    assert_true(pump(1 << 20));
    assert_true(c->head_done);
    assert_int_equal(c->body_len, 0);
    assert_false(c->ended);
    s->ready = true;
    keel_h2_resume(srv.h, s->id);
    assert_true(pump(1 << 20));
    assert_int_equal(c->body_len, 5);
    assert_true(c->ended && c->closed);
    teardown_pair();
}

/* DATA the owner has not consumed holds the peer at the stream window; consuming it lets
 * the rest through: memory per stream is bounded by the window. */
static void test_flow_control(void **state)
{
    static char big[1 << 20];
    memset(big, 'b', sizeof(big) - 1);
    struct keel_h2_limits lim = keel_h2_default_limits;
    lim.stream_window = 65536;
    setup_pair(&lim);
    srv.auto_consume = false;
    static const struct keel_h2_nv post[] = {
        { ":method", 7, "POST", 4 }, { ":scheme", 7, "http", 4 },
        { ":authority", 10, "svc.local", 9 }, { ":path", 5, "/up", 3 },
    };
    struct tstream *c = client_request(post, 4, true);
    c->out_body = big;
    c->out_len = sizeof(big) - 1;
    c->ready = true;
    assert_true(pump(1 << 20));
    struct tstream *s = &srv.st[0];
    assert_true(s->body_len > 0);
    assert_true(s->body_len <= 65536);
    assert_false(s->ended);
    for (int i = 0; i < 100 && !s->ended; i++) {
        keel_h2_consume(srv.h, s->id, s->unconsumed);
        s->unconsumed = 0;
        assert_true(pump(1 << 20));
        assert_true(s->unconsumed <= 65536);
    }
    assert_true(s->ended);
    assert_int_equal(s->body_len, sizeof(big) - 1);
    teardown_pair();
}

/* The owner refusing a stream resets it with REFUSED_STREAM; the connection lives on. */
static void test_refused(void **state)
{
    setup_pair(NULL);
    srv.refuse = true;
    struct tstream *c = client_request(get_req, 4, false);
    assert_true(pump(1 << 20));
    assert_true(c->closed);
    assert_int_equal(c->close_code, KEEL_H2_REFUSED_STREAM);
    assert_int_equal(srv.events[KEEL_H2_EV_STREAM_REFUSED], 1);
    assert_true(keel_h2_alive(srv.h));
    teardown_pair();
}

/* A header block over max_header_list resets that stream only. */
static void test_header_list_limit(void **state)
{
    struct keel_h2_limits lim = keel_h2_default_limits;
    lim.max_header_list = 4096;
    setup_pair(&lim);
    static char big[3000];
    memset(big, 'v', sizeof(big));
    struct keel_h2_nv nv[6];
    memcpy(nv, get_req, sizeof(get_req));
    nv[4] = (struct keel_h2_nv){ "x-a", 3, big, sizeof(big) };
    nv[5] = (struct keel_h2_nv){ "x-b", 3, big, sizeof(big) };
    struct tstream *c = client_request(nv, 6, false);
    struct tstream *ok = client_request(get_req, 4, false);
    assert_true(pump(1 << 20));
    assert_true(c->closed);
    assert_int_not_equal(c->close_code, 0);
    assert_int_equal(srv.events[KEEL_H2_EV_HEADERS_TOO_LARGE], 1);
    /* the other stream goes on */
    assert_int_equal(srv.n, 2);
    respond(&srv.st[1], "ok", false, true);
    assert_true(pump(1 << 20));
    assert_int_equal(ok->body_len, 2);
    teardown_pair();
}

/* Rapid reset (CVE-2023-44487): streams opened and reset at once, over the per-second cap,
 * end the connection with GOAWAY(ENHANCE_YOUR_CALM). */
static void test_rapid_reset(void **state)
{
    setup_pair(NULL);
    keel_h2_set_now(srv.h, 1000);
    bool ok = true;
    for (int i = 0; i < 300 && ok; i++) {
        struct tstream *c = client_request(get_req, 4, false);
        keel_h2_send(cli.h, &cli.out, 1 << 20); /* HEADERS and RST in one flight */
        keel_h2_reset(cli.h, c->id, KEEL_H2_CANCEL);
        ok = pump(1 << 20);
        if (cli.n >= MAXS - 1)
            cli.n = 0;
    }
    assert_false(ok);
    assert_int_equal(srv.events[KEEL_H2_EV_RAPID_RESET], 1);
    assert_false(keel_h2_can_open(cli.h)); /* the client got the GOAWAY */
    assert_false(keel_h2_alive(srv.h));
    teardown_pair();
}

/* The same resets spread over seconds are fine. */
static void test_resets_under_rate(void **state)
{
    setup_pair(NULL);
    for (int i = 0; i < 600; i++) {
        keel_h2_set_now(srv.h, 1000 + i * 10); /* 100 per second */
        struct tstream *c = client_request(get_req, 4, false);
        keel_h2_send(cli.h, &cli.out, 1 << 20);
        keel_h2_reset(cli.h, c->id, KEEL_H2_CANCEL);
        assert_true(pump(1 << 20));
        if (cli.n >= MAXS - 1)
            cli.n = 0;
    }
    assert_int_equal(srv.events[KEEL_H2_EV_RAPID_RESET], 0);
    assert_true(keel_h2_alive(srv.h));
    teardown_pair();
}

static size_t frame(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags, uint32_t id)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(id >> 24);
    p[6] = (uint8_t)(id >> 16);
    p[7] = (uint8_t)(id >> 8);
    p[8] = (uint8_t)id;
    return 9;
}

/* Feed the server the preface, an empty SETTINGS and then `extra`. */
static ssize_t feed_raw(const uint8_t *extra, size_t n)
{
    uint8_t pre[64];
    memcpy(pre, KEEL_H2_PREFACE, KEEL_H2_PREFACE_LEN);
    size_t k = KEEL_H2_PREFACE_LEN + frame(pre + KEEL_H2_PREFACE_LEN, 0, 0x4, 0, 0);
    assert_int_equal(keel_h2_recv(srv.h, pre, k), (ssize_t)k);
    return keel_h2_recv(srv.h, extra, n);
}

/* CONTINUATION flood: a header block that never ends is cut off after max_continuations
 * frames, with GOAWAY(ENHANCE_YOUR_CALM). */
static void test_continuation_flood(void **state)
{
    setup_pair(NULL);
    static uint8_t buf[100 * 64];
    size_t k = 0;
    /* HEADERS without END_HEADERS: ":method: GET" (indexed 2) */
    k += frame(buf + k, 1, 0x1, 0x1 /* END_STREAM */, 1);
    buf[k++] = 0x82;
    for (int i = 0; i < 100; i++) { /* each: a literal "x-f: a" without indexing */
        k += frame(buf + k, 7, 0x9, 0, 1);
        memcpy(buf + k, "\x00\x03x-f\x01" "a", 7);
        k += 7;
    }
    assert_int_equal(feed_raw(buf, k), KEEL_EINVAL);
    assert_int_equal(srv.events[KEEL_H2_EV_CONTINUATION_FLOOD], 1);
    keel_h2_send(srv.h, &srv.out, 1 << 20);
    /* the last frame out is GOAWAY (type 7) with ENHANCE_YOUR_CALM (0xb) */
    const uint8_t *p = (const uint8_t *)keel_buf_rptr(&srv.out);
    size_t len = keel_buf_len(&srv.out);
    assert_true(len >= 17);
    assert_int_equal(p[len - 17 + 3], 0x7);
    assert_int_equal(p[len - 1], 0xb);
    teardown_pair();
}

/* A PING flood ends the connection: the cap is per second. */
static void test_ping_flood(void **state)
{
    setup_pair(NULL);
    keel_h2_set_now(srv.h, 5000);
    static uint8_t buf[300 * 17];
    size_t k = 0;
    for (int i = 0; i < 300; i++) {
        k += frame(buf + k, 8, 0x6, 0, 0);
        memset(buf + k, i, 8);
        k += 8;
    }
    assert_int_equal(feed_raw(buf, k), KEEL_EINVAL);
    assert_int_equal(srv.events[KEEL_H2_EV_CONTROL_FLOOD], 1);
    teardown_pair();
}

/* Garbage instead of the preface: a protocol error, counted. */
static void test_bad_preface(void **state)
{
    setup_pair(NULL);
    assert_int_equal(keel_h2_recv(srv.h, "GET / HTTP/1.1\r\n\r\n", 18), KEEL_EINVAL);
    assert_int_equal(srv.events[KEEL_H2_EV_PROTOCOL_ERROR], 1);
    assert_int_equal(keel_h2_recv(srv.h, "x", 1), KEEL_EINVAL);
    teardown_pair();
}

/* Drain: GOAWAY lets the stream in flight finish, refuses new ones; then the connection
 * has no more use. */
static void test_drain(void **state)
{
    setup_pair(NULL);
    struct tstream *c = client_request(get_req, 4, false);
    assert_true(pump(1 << 20));
    keel_h2_drain(srv.h);
    assert_true(pump(1 << 20));
    assert_false(keel_h2_can_open(cli.h));
    respond(&srv.st[0], "bye", false, true);
    assert_true(pump(1 << 20));
    assert_int_equal(c->body_len, 3);
    assert_true(c->closed);
    assert_int_equal(c->close_code, 0);
    assert_false(keel_h2_alive(srv.h));
    teardown_pair();
}

/* Freeing a session with streams open calls nobody back (the owner ends its streams),
 * and frees nghttp2's state (the ASan/valgrind runs check that). */
static void test_free_with_streams(void **state)
{
    setup_pair(NULL);
    client_request(get_req, 4, false);
    assert_true(pump(1 << 20));
    assert_int_equal(keel_h2_open_streams(srv.h), 1);
    keel_h2_free(srv.h);
    srv.h = NULL;
    assert_false(srv.st[0].closed);
    teardown_pair();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exchange),           cmocka_unit_test(test_deferred_body),
        cmocka_unit_test(test_flow_control),       cmocka_unit_test(test_refused),
        cmocka_unit_test(test_header_list_limit),  cmocka_unit_test(test_rapid_reset),
        cmocka_unit_test(test_resets_under_rate),  cmocka_unit_test(test_continuation_flood),
        cmocka_unit_test(test_ping_flood),         cmocka_unit_test(test_bad_preface),
        cmocka_unit_test(test_drain),              cmocka_unit_test(test_free_with_streams),
    };
    return cmocka_run_group_tests_name("http/h2", tests, NULL, NULL);
}
