/* HTTP/1.x head parser, framing analysis and chunked decoder. Every input is also fed
 * split at every byte boundary, and placed right before a PROT_NONE page so that any
 * read past the end crashes the test (picohttpparser's discipline). */
#include "core/err.h"
#include "http/http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

static const struct keel_http_limits lim = { 8192, 1024, 32 };

/* Copy s to the end of a page followed by a guard page. */
static char *guarded(const char *s, size_t len)
{
    static char *region;
    long page = sysconf(_SC_PAGESIZE);
    if (region == NULL) {
        region = mmap(NULL, (size_t)page * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(region != MAP_FAILED);
        assert_int_equal(mprotect(region + page * 3, (size_t)page, PROT_NONE), 0);
    }
    assert_true(len <= (size_t)page * 3);
    char *p = region + page * 3 - len;
    memcpy(p, s, len);
    return p;
}

static int parse_req(const char *s, size_t len, struct keel_http_request *req,
                     struct keel_http_header *h, struct keel_http_perror *e)
{
    req->headers = h;
    return keel_http_parse_request(guarded(s, len), len, &lim, req, e);
}

/* A complete head parses to the same result from every prefix: prefixes need more. */
static void check_splits(const char *s)
{
    size_t len = strlen(s);
    struct keel_http_header h[32];
    struct keel_http_request req;
    struct keel_http_perror e;
    for (size_t i = 0; i < len; i++) {
        int rc = parse_req(s, i, &req, h, &e);
        if (rc != KEEL_AGAIN)
            fail_msg("prefix of %zu bytes: rc %d (%s)", i, rc, rc == KEEL_EINVAL ? e.what : "");
    }
    assert_int_equal(parse_req(s, len, &req, h, &e), (int)len);
}

static void simple_get(void **state)
{
    const char *s = "GET /status/418?x=1 HTTP/1.1\r\nHost: httpbin:8000\r\nUser-Agent:  curl/8.5.0  \r\n"
                    "Accept: */*\r\n\r\n";
    struct keel_http_header h[32];
    struct keel_http_request req;
    struct keel_http_perror e;
    assert_int_equal(parse_req(s, strlen(s), &req, h, &e), (int)strlen(s));
    assert_int_equal(req.minor, 1);
    assert_int_equal(req.method.len, 3);
    assert_memory_equal(req.method.p, "GET", 3);
    assert_int_equal(req.target.len, 15);
    assert_memory_equal(req.target.p, "/status/418?x=1", 15);
    assert_int_equal(req.n_headers, 3);
    assert_int_equal(h[1].value.len, 10); /* OWS trimmed both sides */
    assert_memory_equal(h[1].value.p, "curl/8.5.0", 10);
    check_splits(s);
}

static void bare_lf_and_leading_empty_lines(void **state)
{
    check_splits("\r\nGET / HTTP/1.0\nHost: a\n\n");
    check_splits("POST http://x:1/p HTTP/1.1\r\nHost: x:1\r\nContent-Length: 0\r\n\r\n");
}

static void empty_header_value(void **state)
{
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n";
    struct keel_http_header h[32];
    struct keel_http_request req;
    struct keel_http_perror e;
    assert_int_equal(parse_req(s, strlen(s), &req, h, &e), (int)strlen(s));
    assert_int_equal(h[1].value.len, 0);
    check_splits(s);
}

static void expect_error(const char *s, enum keel_http_perr kind)
{
    struct keel_http_header h[32];
    struct keel_http_request req;
    struct keel_http_perror e;
    int rc = parse_req(s, strlen(s), &req, h, &e);
    if (rc != KEEL_EINVAL || e.kind != kind)
        fail_msg("'%s': rc %d kind %d, want error kind %d", s, rc, e.kind, kind);
}

/* A control byte anywhere in a long value is refused, a tab or 0x80-0xff accepted: the
 * value scan goes eight bytes a step, so every offset within a word is tried. */
static void control_byte_at_every_offset(void **state)
{
    const unsigned char bad[] = { 0x00, 0x01, 0x0b, 0x1f, 0x7f };
    const unsigned char good[] = { '\t', 0x20, 0x7e, 0x80, 0xff };
    for (size_t off = 0; off < 40; off++) {
        for (size_t k = 0; k < sizeof(bad) + sizeof(good); k++) {
            char head[128];
            char value[41];
            memset(value, 'v', 40);
            value[40] = '\0';
            int n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nX-Long: %s\r\n\r\n", value);
            size_t at = (size_t)(n - 44) + off; /* the value's offset within the head */
            bool is_bad = k < sizeof(bad);
            head[at] = (char)(is_bad ? bad[k] : good[k - sizeof(bad)]);
            struct keel_http_header h[32];
            struct keel_http_request req;
            struct keel_http_perror e;
            int rc = parse_req(head, (size_t)n, &req, h, &e);
            if (is_bad) {
                assert_int_equal(rc, KEEL_EINVAL);
                assert_int_equal(e.offset, at);
            } else if (off == 0 && good[k - sizeof(bad)] <= 0x20) {
                assert_int_equal(rc, n); /* leading OWS is not part of the value */
                assert_int_equal(h[0].value.len, 39);
            } else {
                assert_int_equal(rc, n);
                assert_int_equal(h[0].value.len, off == 39 && good[k - sizeof(bad)] <= 0x20 ? 39 : 40);
            }
        }
    }
    (void)state;
}

/* Every byte value at every offset of a long name: the name scan goes sixteen and eight
 * bytes a step for letters, digits and '-', then byte by byte for the other tchars, so
 * each kind of byte must land at each place within a step. */
static void name_byte_at_every_offset(void **state)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~0123456789"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for (size_t off = 0; off < 40; off++) {
        for (int c = 1; c < 256; c++) {
            if (c == ':' || (c == '\n' && off == 0))
                continue; /* ends the name early / the head: not a bad name */
            char head[128];
            char name[41];
            memset(name, 'n', 40);
            name[40] = '\0';
            name[off] = (char)c;
            int n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\n%s: v\r\n\r\n", name);
            size_t at = 16 + off; /* the byte's offset within the head */
            struct keel_http_header h[32];
            struct keel_http_request req;
            struct keel_http_perror e;
            int rc = parse_req(head, (size_t)n, &req, h, &e);
            if (strchr(tchars, c) != NULL) {
                if (rc != n || h[0].name.len != 40)
                    fail_msg("byte 0x%02x at %zu of a name: rc %d, want %d", c, off, rc, n);
            } else if (c == ' ' || c == '\t') {
                assert_int_equal(rc, KEEL_EINVAL); /* obs-fold at 0, space before ':' after */
            } else if (rc != KEEL_EINVAL || (off > 0 && e.offset != at)) {
                fail_msg("byte 0x%02x at %zu of a name: rc %d offset %zu, want an error at %zu", c, off, rc,
                         e.offset, at);
            }
        }
    }
    (void)state;
}

static void rejects(void **state)
{
    expect_error("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/1.1\r\nHost : a\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/1.1\r\nX: a\r\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/1.1\r\n\rX\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET /a\x7f HTTP/1.1\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET  / HTTP/1.1\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("G@T / HTTP/1.1\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/1.1 \r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTX/1.1\r\n\r\n", KEEL_HTTP_PERR_SYNTAX);
    expect_error("GET / HTTP/2.0\r\n\r\n", KEEL_HTTP_PERR_VERSION);
    expect_error("GET / HTTP/1.2\r\n\r\n", KEEL_HTTP_PERR_VERSION);
}

static void limits(void **state)
{
    char buf[10000];
    /* target over max_uri_bytes: 414 even before the line is complete */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    buf[2000] = '\0';
    expect_error(buf, KEEL_HTTP_PERR_URI_TOO_LONG);
    /* head over max_head_bytes */
    int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nX: ");
    memset(buf + n, 'b', 9000);
    buf[n + 9000] = '\0';
    expect_error(buf, KEEL_HTTP_PERR_HEADERS_TOO_LARGE);
    /* more headers than max_headers */
    n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 40; i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "X-%d: v\r\n", i);
    snprintf(buf + n, sizeof(buf) - (size_t)n, "\r\n");
    expect_error(buf, KEEL_HTTP_PERR_HEADERS_TOO_LARGE);
}

static void response_heads(void **state)
{
    const char *s = "HTTP/1.1 418 I'm a teapot\r\nContent-Length: 5\r\n\r\nhello";
    struct keel_http_header h[32];
    struct keel_http_response res = { .headers = h };
    struct keel_http_perror e;
    size_t head = strlen(s) - 5;
    for (size_t i = 0; i < head; i++)
        assert_int_equal(keel_http_parse_response(guarded(s, i), i, &lim, &res, &e), KEEL_AGAIN);
    assert_int_equal(keel_http_parse_response(guarded(s, strlen(s)), strlen(s), &lim, &res, &e),
                     (int)head);
    assert_int_equal(res.status, 418);
    assert_int_equal(res.reason.len, 12);
    const char *noreason = "HTTP/1.1 204\r\n\r\n";
    assert_int_equal(keel_http_parse_response(noreason, strlen(noreason), &lim, &res, &e), 16);
    assert_int_equal(res.status, 204);
    assert_int_equal(res.reason.len, 0);
    const char *bad = "HTTP/1.1 2x0 OK\r\n\r\n";
    assert_int_equal(keel_http_parse_response(bad, strlen(bad), &lim, &res, &e), KEEL_EINVAL);
    bad = "ICY 200 OK\r\n\r\n";
    assert_int_equal(keel_http_parse_response(bad, strlen(bad), &lim, &res, &e), KEEL_EINVAL);
    /* a reason phrase is HTAB, SP, VCHAR and obs-text: a bare CR, NUL or other control
     * byte would otherwise be passed on to the client verbatim */
    static const char *const bad_reason[] = {
        "HTTP/1.1 200 O\rK\r\n\r\n", "HTTP/1.1 200 OK\r\r\n\r\n", "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 200 O\x7fK\r\n\r\n", "HTTP/1.1 200 \x1b[2J\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad_reason) / sizeof(bad_reason[0]); i++) {
        const char *b = bad_reason[i];
        if (keel_http_parse_response(guarded(b, strlen(b)), strlen(b), &lim, &res, &e) != KEEL_EINVAL)
            fail_msg("accepted reason phrase #%zu", i);
    }
    const char nul[] = "HTTP/1.1 200 O\0K\r\n\r\n";
    assert_int_equal(keel_http_parse_response(guarded(nul, sizeof(nul) - 1), sizeof(nul) - 1, &lim,
                                              &res, &e), KEEL_EINVAL);
    const char *fine = "HTTP/1.1 200 Tout\tva \xc3\xa9t\xc3\xa9 bien\r\n\r\n";
    assert_int_equal(keel_http_parse_response(guarded(fine, strlen(fine)), strlen(fine), &lim, &res,
                                              &e), (int)strlen(fine));
}

static int analyze(const char *s, struct keel_http_meta *m)
{
    struct keel_http_header h[32];
    struct keel_http_request req = { .headers = h };
    struct keel_http_perror e;
    int rc = keel_http_parse_request(s, strlen(s), &lim, &req, &e);
    assert_true(rc > 0);
    return keel_http_analyze_request(&req, m, &e);
}

static void framing(void **state)
{
    struct keel_http_meta m;
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", &m), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_LENGTH);
    assert_int_equal(m.content_length, 12);
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", &m), 0);
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &m), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_CHUNKED);
    assert_false(m.te_codings);
    /* Content-Length: 0 is a length, forwarded as such (some origins want it) */
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &m), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_LENGTH);
    assert_int_equal(m.content_length, 0);
    assert_int_equal(analyze("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &m), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_NONE);
    assert_false(m.conn_close);
    assert_int_equal(analyze("GET / HTTP/1.0\r\n\r\n", &m), 0);
    assert_true(m.conn_close);
    assert_int_equal(analyze("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &m), 0);
    assert_false(m.conn_close);
    assert_int_equal(analyze("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\nExpect: 100-continue\r\n\r\n", &m), 0);
    assert_true(m.conn_close);
    assert_true(m.expect_continue);
    assert_true(keel_http_hop_marked(&m, 2));
    assert_false(keel_http_hop_marked(&m, 0));
    assert_int_equal(analyze("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", &m), 0);
    assert_true(m.conn_upgrade);
    assert_int_equal(m.upgrade.len, 9);
    assert_false(keel_http_hop_marked(&m, 2)); /* an option, not a name: Upgrade goes with a 101 */
    /* every header a Connection list names, however long the list (the ninth and tenth of
     * ten used to be passed on), over two Connection headers; too long a list is refused */
    char head[1024];
    int n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: a\r\n"
                                         "Connection: h1, h2, h3, h4, h5, h6, h7, h8\r\n"
                                         "Connection: h9,h10\r\n");
    for (int i = 1; i <= 10; i++)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "H%d: x\r\n", i);
    snprintf(head + n, sizeof(head) - (size_t)n, "Keep: y\r\n\r\n");
    assert_int_equal(analyze(head, &m), 0);
    for (size_t i = 3; i < 13; i++)
        assert_true(keel_http_hop_marked(&m, i));
    assert_false(keel_http_hop_marked(&m, 13));
    n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close");
    for (int i = 0; i < 33; i++)
        n += snprintf(head + n, sizeof(head) - (size_t)n, ", o%d", i);
    snprintf(head + n, sizeof(head) - (size_t)n, "\r\n\r\n");
    assert_int_equal(analyze(head, &m), KEEL_EINVAL);
    /* smuggling */
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("GET / HTTP/1.1\r\n\r\n", &m), KEEL_EINVAL);
    assert_int_equal(analyze("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &m), KEEL_EINVAL);
}

static enum keel_http_perr analyze_err(const char *s)
{
    struct keel_http_header h[32];
    struct keel_http_request req = { .headers = h };
    struct keel_http_perror e = { 0 };
    struct keel_http_meta m;
    assert_true(keel_http_parse_request(s, strlen(s), &lim, &req, &e) > 0);
    return keel_http_analyze_request(&req, &m, &e) == 0 ? KEEL_HTTP_PERR_NONE : e.kind;
}

static void request_transfer_codings(void **state)
{
#define TE(v) analyze_err("POST / HTTP/1.1\r\nHost: a\r\n" v "\r\n\r\n")
    /* codings keel does not decode: 501, as nginx and Envoy answer */
    assert_int_equal(TE("Transfer-Encoding: gzip, chunked"), KEEL_HTTP_PERR_NOT_IMPLEMENTED);
    assert_int_equal(TE("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"),
                     KEEL_HTTP_PERR_NOT_IMPLEMENTED);
    /* not delimited by a final chunked, or chunked twice: 400 (RFC 9112 §6.3) */
    assert_int_equal(TE("Transfer-Encoding: gzip"), KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(TE("Transfer-Encoding: chunked, gzip"), KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(TE("Transfer-Encoding: chunked, chunked"), KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(TE("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
                     KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(TE("Transfer-Encoding: "), KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(TE("Transfer-Encoding: Chunked , "), KEEL_HTTP_PERR_NONE);
#undef TE
}

static void hosts(void **state)
{
    static const char *const good[] = {
        "a", "a.example", "a.example:8080", "a.example:", "127.0.0.1:80", "[::1]", "[::1]:443",
        "[v1.fe80::a+en1]", "xn--bcher-kva.example", "a%41b", "a-b_c~d!$&'()*+,;=", "",
    };
    static const char *const bad[] = {
        "a b", "a/b", "\"a\"", "a\\b", "a@b", "a:8x", "[::1", "[]", "[::1]x", "a<b>", "a{b}",
        "a%zz", "a%4", "a:80:80", "a?b", "a#b", "a|b", "a^b", "a`b", "\x80",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!keel_http_authority_valid(keel_str_c(good[i])))
            fail_msg("refused valid authority '%s'", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (keel_http_authority_valid(keel_str_c(bad[i])))
            fail_msg("accepted invalid authority '%s'", bad[i]);
    assert_int_equal(analyze_err("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(analyze_err("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(analyze_err("GET / HTTP/1.0\r\nHost: \"q\"\r\n\r\n"), KEEL_HTTP_PERR_SYNTAX);
    assert_int_equal(analyze_err("GET / HTTP/1.1\r\nHost: a.example:80\r\n\r\n"), KEEL_HTTP_PERR_NONE);
    /* every byte in a reg-name: exactly RFC 3986's unreserved and sub-delims */
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                  "-._~!$&'()*+,;=";
    for (int c = 0; c < 256; c++) {
        char host[3] = { 'a', (char)c, 'b' };
        bool want = c != 0 && memchr(allowed, c, sizeof(allowed) - 1) != NULL;
        if (c == ':' || c == '%')
            continue; /* a port, a pct-encoding: their own rules, above */
        if (keel_http_authority_valid((struct keel_str){ host, 3 }) != want)
            fail_msg("byte 0x%02x in a host: %s", c, want ? "refused" : "accepted");
    }
}

static void forwarded_for_seen(void **state)
{
    struct keel_http_meta m;
    assert_int_equal(analyze("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &m), 0);
    assert_false(m.xff);
    assert_int_equal(analyze("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", &m), 0);
    assert_true(m.xff);
}

/* The end-of-head scan finds the empty line whatever the pieces the head came in. */
/* The head limit counts the request line and header lines, not the empty line: a head
 * whose lines end exactly at the limit is taken whole and from every prefix (which need
 * more, even with the empty line's CR pending); one byte more is refused whole, and no
 * prefix of it is taken. The answer used to depend on the split (431 once the CR came
 * alone). Both for requests and responses. */
static void limit_is_the_same_for_every_split(void **state)
{
    (void)state;
    struct keel_http_limits l = { 0, 1024, 32 };
    for (int over = 0; over <= 1; over++) {
        for (int response = 0; response <= 1; response++) {
            char head[200];
            int n = snprintf(head, sizeof(head), "%s\r\nX-Pad: %.*s\r\n\r\n",
                             response ? "HTTP/1.1 200 OK" : "GET / HTTP/1.1", 40 + over,
                             "pppppppppppppppppppppppppppppppppppppppppppppp");
            l.max_head_bytes = (size_t)n - 2 - (size_t)over; /* lines end at the limit (+1) */
            for (int i = 1; i <= n; i++) {
                struct keel_http_header h[32];
                struct keel_http_request req = { .headers = h };
                struct keel_http_response res = { .headers = h };
                struct keel_http_perror e;
                const char *p = guarded(head, (size_t)i);
                int rc = response ? keel_http_parse_response(p, (size_t)i, &l, &res, &e)
                                  : keel_http_parse_request(p, (size_t)i, &l, &req, &e);
                if (!over)
                    assert_int_equal(rc, i == n ? n : KEEL_AGAIN);
                else if (i == n)
                    assert_int_equal(rc, KEEL_EINVAL);
                if (rc == KEEL_EINVAL)
                    assert_int_equal(e.kind, KEEL_HTTP_PERR_HEADERS_TOO_LARGE);
            }
        }
    }
}

static void head_complete(void **state)
{
    static const char *const heads[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / HTTP/1.0\nHost: a\n\n",
        "GET / HTTP/1.1\r\nA: b\n\r\n", "HTTP/1.1 200 OK\r\nX: y\r\n\n",
    };
    for (size_t k = 0; k < sizeof(heads) / sizeof(heads[0]); k++) {
        const char *s = heads[k];
        size_t len = strlen(s);
        /* byte by byte: complete exactly when the last byte arrives */
        size_t scanned = 0;
        for (size_t i = 1; i <= len; i++) {
            bool done = keel_http_head_complete(guarded(s, i), i, &scanned);
            if (done != (i == len))
                fail_msg("head %zu: complete=%d after %zu of %zu bytes", k, done, i, len);
            assert_int_equal(scanned, i);
        }
        /* in two pieces, split anywhere */
        for (size_t cut = 0; cut < len; cut++) {
            scanned = 0;
            assert_false(keel_http_head_complete(guarded(s, cut), cut, &scanned));
            assert_true(keel_http_head_complete(guarded(s, len), len, &scanned));
        }
    }
    /* bytes after the end of the head (a body, a pipelined request) change nothing */
    size_t scanned = 0;
    const char *piped = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /";
    assert_true(keel_http_head_complete(guarded(piped, strlen(piped)), strlen(piped), &scanned));
    /* no empty line: never complete, and bytes already seen are not looked at again */
    scanned = 0;
    const char *open = "GET / HTTP/1.1\r\nHost: a\r\nX: \r";
    assert_false(keel_http_head_complete(guarded(open, strlen(open)), strlen(open), &scanned));
    assert_int_equal(scanned, strlen(open));
}

static void response_framing(void **state)
{
    struct keel_http_header h[32];
    struct keel_http_response res = { .headers = h };
    struct keel_http_meta m;
    struct keel_http_perror e;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    keel_http_parse_response(s, strlen(s), &lim, &res, &e);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("HEAD"), &m, &e), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_NONE);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_LENGTH);
    s = "HTTP/1.1 200 OK\r\n\r\n";
    keel_http_parse_response(s, strlen(s), &lim, &res, &e);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_EOF);
    s = "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n";
    keel_http_parse_response(s, strlen(s), &lim, &res, &e);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_NONE);
    /* codings besides chunked: kept (te_codings); a final coding other than chunked makes
     * the body end at the close (RFC 9112 §6.3) */
    s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    keel_http_parse_response(s, strlen(s), &lim, &res, &e);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_CHUNKED);
    assert_true(m.te_codings);
    s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    keel_http_parse_response(s, strlen(s), &lim, &res, &e);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e), 0);
    assert_int_equal(m.body, KEEL_HTTP_BODY_EOF);
    assert_true(m.te_codings);
    s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    keel_http_parse_response(s, strlen(s), &lim, &res, &e);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e), 0);
    assert_false(m.te_codings);
    s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n";
    keel_http_parse_response(s, strlen(s), &lim, &res, &e);
    assert_int_equal(keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e), KEEL_EINVAL);
}

static void te_strip_chunked(void **state)
{
    static const char *const cases[][2] = {
        { "chunked", "" },          { "gzip, chunked", "gzip" }, { "gzip,chunked", "gzip" },
        { "gzip , Chunked ,", "gzip" }, { "gzip", "gzip" },     { "x-chunked", "x-chunked" },
        { "gzip, deflate", "gzip, deflate" }, { "", "" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct keel_str v = keel_http_te_strip_chunked(keel_str_c(cases[i][0]));
        if (v.len != strlen(cases[i][1]) || memcmp(v.p, cases[i][1], v.len) != 0)
            fail_msg("'%s' stripped to '%.*s', want '%s'", cases[i][0], (int)v.len, v.p,
                     cases[i][1]);
    }
}

/* Decode a whole chunked body, fed in pieces of `step` bytes. */
static int decode_all(const char *in, size_t len, size_t step, char *out, size_t *out_len)
{
    struct keel_http_chunked c = { 0 };
    char buf[4096];
    size_t have = 0, fed = 0;
    *out_len = 0;
    for (;;) {
        if (have == 0 || fed < len) {
            size_t n = len - fed < step ? len - fed : step;
            memcpy(buf + have, in + fed, n);
            have += n;
            fed += n;
        }
        size_t consumed, off, dlen;
        int rc = keel_http_chunked_step(&c, guarded(buf, have), have, &consumed, &off, &dlen);
        if (rc < 0)
            return rc;
        if (rc == KEEL_CHUNK_DATA) {
            memcpy(out + *out_len, buf + off, dlen);
            *out_len += dlen;
        }
        memmove(buf, buf + consumed, have - consumed);
        have -= consumed;
        if (rc == KEEL_CHUNK_DONE)
            return (int)(len - fed + have); /* bytes left after the body */
        if (rc == KEEL_CHUNK_MORE && fed == len && have == 0)
            return KEEL_AGAIN;
    }
}

static void chunked(void **state)
{
    const char *body = "5\r\nhello\r\n7;ext=1\r\n, world\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    char out[256];
    size_t out_len;
    for (size_t step = 1; step <= strlen(body); step++) {
        int left = decode_all(body, strlen(body), step, out, &out_len);
        assert_int_equal(left, 4);
        assert_int_equal(out_len, 22);
        assert_memory_equal(out, "hello, world0123456789", 22);
    }
    assert_int_equal(decode_all("0\r\n\r\n", 5, 1, out, &out_len), 0);
    assert_int_equal(decode_all("5\r\nhel", 6, 2, out, &out_len), KEEL_AGAIN);
    static const char *const bad[] = {
        "zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n", "\r\n", "-5\r\nhello\r\n",
        "fffffffffffffffff\r\n", "5\r\nhello\r\n0\r\nX\x01: y\r\n\r\n", "5\rXhello",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (decode_all(bad[i], strlen(bad[i]), 3, out, &out_len) != KEEL_EINVAL)
            fail_msg("accepted bad chunked body #%zu", i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(simple_get),       cmocka_unit_test(bare_lf_and_leading_empty_lines),
        cmocka_unit_test(empty_header_value), cmocka_unit_test(rejects),
        cmocka_unit_test(control_byte_at_every_offset),
        cmocka_unit_test(name_byte_at_every_offset),
        cmocka_unit_test(limits),           cmocka_unit_test(response_heads),
        cmocka_unit_test(framing),          cmocka_unit_test(response_framing),
        cmocka_unit_test(chunked),
        cmocka_unit_test(request_transfer_codings), cmocka_unit_test(hosts),
        cmocka_unit_test(forwarded_for_seen), cmocka_unit_test(head_complete),
        cmocka_unit_test(te_strip_chunked), cmocka_unit_test(limit_is_the_same_for_every_split),
    };
    return cmocka_run_group_tests_name("http/parse", tests, NULL, NULL);
}
