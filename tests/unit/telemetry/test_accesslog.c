#include "telemetry/accesslog.h"

#include "al_fixtures.h"
#include "attr/attr.h"
#include "core/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

/* Compile fmt (TEXT), render r, return the line (without its newline) in a static buffer. */
static char line[65536];

static const char *render_with(const struct keel_accesslog_format *f, const struct keel_access_record *r)
{
    struct keel_buf b = { 0 };
    keel_accesslog_render(f, r, &b);
    size_t n = keel_buf_len(&b);
    assert_true(n > 0 && n < sizeof(line));
    memcpy(line, keel_buf_rptr(&b), n);
    line[n] = '\0';
    keel_buf_release(&b);
    return line;
}

static const char *render1(const char *fmt, const struct keel_access_record *r)
{
    char err[256];
    struct keel_accesslog_format *f = keel_accesslog_compile(fmt, KEEL_ACCESSLOG_TEXT, err, sizeof(err));
    if (f == NULL)
        fail_msg("compile \"%s\": %s", fmt, err);
    render_with(f, r);
    keel_accesslog_format_free(f);
    size_t n = strlen(line);
    assert_true(n > 0 && line[n - 1] == '\n');
    line[n - 1] = '\0';
    return line;
}

#define EXPECT(fmt, rec, want) assert_string_equal(render1((fmt), (rec)), (want))

static void teardown_pool(void)
{
    keel_buf_pool_drain();
}

/* ---- the spec's example lines ---- */

static void istio_default_418(void **state)
{
    struct keel_access_record r = fx_418();
    struct keel_accesslog_format *f = keel_accesslog_compile(keel_accesslog_istio_text_format,
                                                             KEEL_ACCESSLOG_TEXT, NULL, 0);
    assert_non_null(f);
    assert_string_equal(render_with(f, &r), fx_line_418);
    assert_non_null(strstr(line, "\"GET /status/418 HTTP/1.1\" 418"));
    /* NULL means the same default */
    keel_accesslog_format_free(f);
    f = keel_accesslog_compile(NULL, KEEL_ACCESSLOG_TEXT, NULL, 0);
    assert_string_equal(render_with(f, &r), fx_line_418);
    keel_accesslog_format_free(f);
    teardown_pool();
}

static void istio_default_503_uf(void **state)
{
    struct keel_access_record r = fx_503();
    struct keel_accesslog_format *f = keel_accesslog_compile(keel_accesslog_istio_text_format,
                                                             KEEL_ACCESSLOG_TEXT, NULL, 0);
    assert_string_equal(render_with(f, &r), fx_line_503);
    keel_accesslog_format_free(f);
    teardown_pool();
}

static void istio_default_tcp(void **state)
{
    struct keel_access_record r = fx_tcp();
    struct keel_accesslog_format *f = keel_accesslog_compile(keel_accesslog_istio_text_format,
                                                             KEEL_ACCESSLOG_TEXT, NULL, 0);
    assert_string_equal(render_with(f, &r), fx_line_tcp);
    keel_accesslog_format_free(f);
    teardown_pool();
}

static void renders_append_and_reuse(void **state)
{
    /* several lines into one buffer, as a worker batches them per loop turn */
    struct keel_access_record r1 = fx_418(), r2 = fx_503(), r3 = fx_tcp();
    struct keel_accesslog_format *f = keel_accesslog_compile(NULL, KEEL_ACCESSLOG_TEXT, NULL, 0);
    struct keel_buf b = { 0 };
    for (int i = 0; i < 100; i++) {
        keel_accesslog_render(f, &r1, &b);
        keel_accesslog_render(f, &r2, &b);
        keel_accesslog_render(f, &r3, &b);
    }
    size_t l1 = strlen(fx_line_418), l2 = strlen(fx_line_503), l3 = strlen(fx_line_tcp);
    assert_int_equal(keel_buf_len(&b), 100 * (l1 + l2 + l3));
    const char *p = keel_buf_rptr(&b) + 99 * (l1 + l2 + l3);
    assert_memory_equal(p, fx_line_418, l1);
    assert_memory_equal(p + l1, fx_line_503, l2);
    assert_memory_equal(p + l1 + l2, fx_line_tcp, l3);
    keel_buf_release(&b);
    keel_accesslog_format_free(f);
    teardown_pool();
}

/* ---- operators ---- */

static void every_operator_http(void **state)
{
    struct keel_access_record r = fx_418();
    static const char *const cases[][2] = {
        { "%START_TIME%", "2024-05-02T10:11:12.345Z" },
        { "%REQ(:METHOD)%", "GET" },
        { "%REQ(:PATH)%", "/status/418" },
        { "%REQ(:AUTHORITY)%", "httpbin:8000" },
        { "%REQ(:SCHEME)%", "http" },
        { "%REQ(X-ENVOY-ORIGINAL-PATH)%", "/status/418" },
        { "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/status/418" },
        { "%REQ(USER-AGENT)%", "curl/8.5.0" },
        { "%REQ(accept)%", "*/*" },
        { "%REQ(X-MISSING)%", "-" },
        { "%RESP(CONTENT-LENGTH)%", "135" },
        { "%RESP(:STATUS)%", "418" },
        { "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "2" },
        { "%TRAILER(GRPC-STATUS)%", "-" },
        { "%PROTOCOL%", "HTTP/1.1" },
        { "%UPSTREAM_PROTOCOL%", "HTTP/1.1" },
        { "%RESPONSE_CODE%", "418" },
        { "%RESPONSE_CODE_DETAILS%", "via_upstream" },
        { "%CONNECTION_TERMINATION_DETAILS%", "-" },
        { "%RESPONSE_FLAGS%", "-" },
        { "%RESPONSE_FLAGS_LONG%", "-" },
        { "%BYTES_RECEIVED%", "0" },
        { "%BYTES_SENT%", "135" },
        { "%REQUEST_HEADERS_BYTES%", "78" },
        { "%RESPONSE_HEADERS_BYTES%", "96" },
        { "%RESPONSE_TRAILERS_BYTES%", "0" },
        { "%DOWNSTREAM_HEADER_BYTES_RECEIVED%", "78" },
        { "%DOWNSTREAM_WIRE_BYTES_SENT%", "-" },
        { "%DURATION%", "3" },
        { "%REQUEST_DURATION%", "0" },
        { "%REQUEST_TX_DURATION%", "0" },
        { "%RESPONSE_DURATION%", "2" },
        { "%RESPONSE_TX_DURATION%", "1" },
        { "%UPSTREAM_HOST%", "10.244.1.7:8080" },
        { "%UPSTREAM_CLUSTER%", "outbound|8000||httpbin.foo.svc.cluster.local" },
        { "%UPSTREAM_CLUSTER_RAW%", "outbound|8000||httpbin.foo.svc.cluster.local" },
        { "%UPSTREAM_LOCAL_ADDRESS%", "10.244.2.4:51442" },
        { "%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.244.2.4" },
        { "%UPSTREAM_LOCAL_PORT%", "51442" },
        { "%UPSTREAM_REMOTE_ADDRESS%", "10.244.1.7:8080" },
        { "%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.244.1.7" },
        { "%UPSTREAM_REMOTE_PORT%", "8080" },
        { "%DOWNSTREAM_LOCAL_ADDRESS%", "10.96.12.34:8000" },
        { "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.96.12.34" },
        { "%DOWNSTREAM_LOCAL_PORT%", "8000" },
        { "%DOWNSTREAM_REMOTE_ADDRESS%", "10.244.2.4:40122" },
        { "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.244.2.4" },
        { "%DOWNSTREAM_REMOTE_PORT%", "40122" },
        { "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "10.244.2.4:40122" },
        { "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", "10.244.2.4" },
        { "%DOWNSTREAM_DIRECT_REMOTE_PORT%", "40122" },
        { "%ROUTE_NAME%", "default" },
        { "%CONNECTION_ID%", "17" },
        { "%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "1" },
        { "%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-" },
        { "%REQUESTED_SERVER_NAME%", "-" },
        { "%DYNAMIC_METADATA(istio.mixer:status)%", "-" },
        { "%FILTER_STATE(foo:PLAIN)%", "-" },
        { "%VIRTUAL_CLUSTER_NAME%", "-" },
        { "%REQ_WITHOUT_QUERY(:PATH)%", "/status/418" },
        { "%PATH%", "/status/418" },
        { "%PATH(NQ)%", "/status/418" },
        { "%UPSTREAM_HOST_NAME%", "10.244.1.7:8080" },
        { "%UPSTREAM_HOST_NAME_WITHOUT_PORT%", "10.244.1.7" },
        { "%QUERY_PARAM(a)%", "-" },
        { "%METADATA(ROUTE:istio:x)%", "-" },
        { "%ENVIRONMENT(KEEL_TEST_SURELY_UNSET_VAR)%", "-" },
        { "", "" },
        { "plain text", "plain text" },
        { "100%% done", "100% done" },
        { "%%%RESPONSE_CODE%%%", "%418%" },
        { "a%BYTES_SENT%b%DURATION%c", "a135b3c" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = render1(cases[i][0], &r);
        if (strcmp(got, cases[i][1]) != 0)
            fail_msg("format \"%s\": got \"%s\", want \"%s\"", cases[i][0], got, cases[i][1]);
    }
    teardown_pool();
}

static void every_operator_tcp(void **state)
{
    struct keel_access_record r = fx_tcp();
    static const char *const cases[][2] = {
        { "%START_TIME%", "2024-05-02T10:11:14.100Z" },
        { "%REQ(:METHOD)%", "-" },
        { "%REQ(X-REQUEST-ID)%", "-" },
        { "%RESP(:STATUS)%", "-" },
        { "%PROTOCOL%", "-" },
        { "%UPSTREAM_PROTOCOL%", "-" },
        { "%RESPONSE_CODE%", "0" },
        { "%RESPONSE_CODE_DETAILS%", "-" },
        { "%RESPONSE_FLAGS%", "-" },
        { "%BYTES_RECEIVED%", "412" },
        { "%BYTES_SENT%", "2094" },
        { "%REQUEST_HEADERS_BYTES%", "0" },
        { "%RESPONSE_HEADERS_BYTES%", "0" },
        { "%DURATION%", "10012" },
        { "%REQUEST_DURATION%", "-" },
        { "%RESPONSE_TX_DURATION%", "-" },
        { "%UPSTREAM_HOST%", "10.244.3.3:3306" },
        { "%UPSTREAM_CLUSTER_RAW%", "outbound|3306||mysql.db.svc.cluster.local" },
        { "%DOWNSTREAM_REMOTE_PORT%", "55000" },
        { "%ROUTE_NAME%", "-" },
        { "%CONNECTION_ID%", "99" },
        { "%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "1" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = render1(cases[i][0], &r);
        if (strcmp(got, cases[i][1]) != 0)
            fail_msg("format \"%s\": got \"%s\", want \"%s\"", cases[i][0], got, cases[i][1]);
    }
    r.flags = KEEL_RF_UF | KEEL_RF_URX;
    EXPECT("%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%", &r, "UF,URX UpstreamConnectionFailure,UpstreamRetryLimitExceeded");
    teardown_pool();
}

static void unset_durations_and_empty_fields(void **state)
{
    struct keel_access_record r = fx_503();
    EXPECT("%REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION%", &r,
           "0 - - -");
    EXPECT("%UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_LOCAL_PORT% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", &r, "- - -");
    EXPECT("%RESP(:STATUS)% %RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%", &r, "503 UF UpstreamConnectionFailure");
    r.status = 0;
    r.flags = KEEL_RF_DC;
    EXPECT("%RESPONSE_CODE% %RESP(:STATUS)% %RESPONSE_FLAGS%", &r, "0 - DC");
    r.flags = KEEL_RF_UT | KEEL_RF_URX | KEEL_RF_UF;
    EXPECT("%RESPONSE_FLAGS%", &r, "UT,UF,URX");
    r.duration_us = 999;
    EXPECT("%DURATION%", &r, "0");
    r.duration_us = 123456789;
    EXPECT("%DURATION%", &r, "123456");
    teardown_pool();
}

static void header_lookup_and_fallback(void **state)
{
    struct keel_access_record r = fx_418();
    static const struct keel_http_header h[] = {
        { .name = S("X-Forwarded-For"), .value = S("1.2.3.4") },
        { .name = S("x-dup"), .value = S("first") },
        { .name = S("X-DUP"), .value = S("second") },
        { .name = S("x-empty"), .value = S("") },
    };
    r.req_headers = h;
    r.n_req_headers = 4;
    /* case-insensitive both ways */
    EXPECT("%REQ(x-forwarded-for)% %REQ(X-FORWARDED-FOR)% %REQ(X-Forwarded-For)%", &r, "1.2.3.4 1.2.3.4 1.2.3.4");
    EXPECT("%REQ(:method)% %REQ(:Path)%", &r, "GET /status/418");
    /* first of duplicates */
    EXPECT("%REQ(X-DUP)%", &r, "first");
    /* ? fallback: first present wins; missing or empty falls through */
    EXPECT("%REQ(X-MISSING?X-FORWARDED-FOR)%", &r, "1.2.3.4");
    EXPECT("%REQ(X-DUP?X-FORWARDED-FOR)%", &r, "first");
    EXPECT("%REQ(X-MISSING?X-ALSO-MISSING)%", &r, "-");
    EXPECT("%REQ(X-EMPTY?:AUTHORITY)%", &r, "httpbin:8000");
    EXPECT("%REQ(X-EMPTY)%", &r, "-");
    EXPECT("%RESP(X-MISSING?content-length)%", &r, "135");
    /* x-envoy-original-path wins over :path when the client sent one */
    static const struct keel_http_header h2[] = {
        { .name = S("X-Envoy-Original-Path"), .value = S("/before/rewrite") },
    };
    r.req_headers = h2;
    r.n_req_headers = 1;
    EXPECT("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(X-ENVOY-ORIGINAL-PATH)%", &r, "/before/rewrite /before/rewrite");
    /* x-request-id falls back to the record's request id (added by the proxy) */
    EXPECT("%REQ(X-REQUEST-ID)%", &r, "6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11");
    r.request_id = (struct keel_str){ NULL, 0 };
    EXPECT("%REQ(X-REQUEST-ID)%", &r, "-");
    teardown_pool();
}

/* Headers as the parser gives them (ids, the table of each id's first header): the same
 * values as a scan of the names finds, whatever the case, order and duplicates. */
static void header_lookup_by_parser_ids(void **state)
{
    static const char head[] = "GET /p HTTP/1.1\r\nHost: h\r\nX-B3-Odd: b3\r\nuser-agent: ua1\r\n"
                               "Accept: */*\r\nUSER-AGENT: ua2\r\nX-Forwarded-For: 10.0.0.1\r\n"
                               "x-request-id: \r\nX-Request-Id: rid2\r\n\r\n";
    struct keel_http_header hs[16];
    struct keel_http_request req = { .headers = hs };
    struct keel_http_limits lim = { 8192, 1024, 16 };
    struct keel_http_perror e;
    assert_true(keel_http_parse_request(head, sizeof(head) - 1, &lim, &req, &e) > 0);
    static const char fmt[] = "%REQ(User-Agent)%|%REQ(x-forwarded-for)%|%REQ(x-b3-odd)%|"
                              "%REQ(accept)%|%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%|"
                              "%REQ(x-request-id)%|%REQ(host)%|"
                              "%RESP(x-envoy-upstream-service-time)%|%REQ(content-type)%";
    static const char want[] = "ua1|10.0.0.1|b3|*/*|/p|6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11|h|2|-";
    struct keel_access_record r = fx_418();
    r.req_headers = hs;
    r.n_req_headers = req.n_headers;
    r.req_first = req.first;
    r.path = KEEL_STR("/p");
    EXPECT(fmt, &r, want); /* the empty x-request-id falls back to the record's id */
    r.req_first = NULL; /* a record built by hand: names scanned */
    EXPECT(fmt, &r, want);
    r.req_first = req.first; /* fewer headers than the table knows (the id's header is past n) */
    r.n_req_headers = 2;
    EXPECT("%REQ(user-agent)%|%REQ(host)%", &r, "-|h");
    teardown_pool();
}

static void truncation(void **state)
{
    struct keel_access_record r = fx_418();
    EXPECT("%REQ(USER-AGENT):4%", &r, "curl");
    EXPECT("%REQ(USER-AGENT):100%", &r, "curl/8.5.0");
    EXPECT("%REQ(X-MISSING?USER-AGENT):2%", &r, "cu");
    EXPECT("%REQ(X-MISSING):1%", &r, "-");
    EXPECT("%RESPONSE_CODE:2%", &r, "41");
    EXPECT("%START_TIME:10%", &r, "2024-05-02");
    EXPECT("%START_TIME(%s):3%", &r, "171");
    EXPECT("%UPSTREAM_CLUSTER:8%|", &r, "outbound|");
    EXPECT("[%PROTOCOL:0%]", &r, "[-]");
    teardown_pool();
}

static void start_time_formats(void **state)
{
    struct keel_access_record r = fx_418(); /* 10:11:12.345678 */
    EXPECT("%START_TIME(%s.%3f)%", &r, "1714644672.345");
    EXPECT("%START_TIME(%s)%", &r, "1714644672");
    EXPECT("%START_TIME(%Y/%m/%d %H:%M:%S)%", &r, "2024/05/02 10:11:12");
    EXPECT("%START_TIME(%f)%", &r, "345678000");
    EXPECT("%START_TIME(%9f)%", &r, "345678000");
    EXPECT("%START_TIME(%6f)%", &r, "345678");
    EXPECT("%START_TIME(%3f)%", &r, "345");
    EXPECT("%START_TIME(%1f)%", &r, "3");
    EXPECT("%START_TIME(%H:%M:%S.%3fZ on %a)%", &r, "10:11:12.345Z on Thu");
    EXPECT("%START_TIME(%%f %%s)%", &r, "%f %s");
    EXPECT("%START_TIME(%Y-%m-%dT%H:%M:%S%z)%", &r, "2024-05-02T10:11:12+0000");
    EXPECT("%START_TIME()%", &r, "2024-05-02T10:11:12.345Z");
    /* the cached second: successive renders in and across seconds */
    struct keel_accesslog_format *f = keel_accesslog_compile("%START_TIME%", KEEL_ACCESSLOG_TEXT, NULL, 0);
    r.start_us = fx_epoch_us(12, 999999);
    assert_string_equal(render_with(f, &r), "2024-05-02T10:11:12.999Z\n");
    r.start_us = fx_epoch_us(13, 0);
    assert_string_equal(render_with(f, &r), "2024-05-02T10:11:13.000Z\n");
    r.start_us = fx_epoch_us(12, 7000);
    assert_string_equal(render_with(f, &r), "2024-05-02T10:11:12.007Z\n");
    r.start_us = 0;
    assert_string_equal(render_with(f, &r), "1970-01-01T00:00:00.000Z\n");
    r.start_us = -1000;
    assert_string_equal(render_with(f, &r), "1969-12-31T23:59:59.999Z\n");
    keel_accesslog_format_free(f);
    teardown_pool();
}

static void hostname_and_environment(void **state)
{
    struct keel_access_record r = fx_418();
    char host[256];
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    host[sizeof(host) - 1] = '\0';
    EXPECT("%HOSTNAME%", &r, host[0] ? host : "-");
    setenv("KEEL_TEST_AL_ENV", "pod-7", 1);
    struct keel_accesslog_format *f = keel_accesslog_compile("%ENVIRONMENT(KEEL_TEST_AL_ENV)% %ENVIRONMENT(KEEL_TEST_AL_ENV):3%",
                                                             KEEL_ACCESSLOG_TEXT, NULL, 0);
    /* resolved at compile: later changes do not show */
    setenv("KEEL_TEST_AL_ENV", "changed", 1);
    assert_string_equal(render_with(f, &r), "pod-7 pod\n");
    keel_accesslog_format_free(f);
    unsetenv("KEEL_TEST_AL_ENV");
    teardown_pool();
}

static void ipv6_addresses(void **state)
{
    struct keel_access_record r = fx_418();
    r.downstream_remote = S("[2001:db8::7]:40122");
    r.downstream_local = S("[::1]");
    r.upstream_host = S("unix-socket");
    EXPECT("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_REMOTE_PORT%", &r,
           "[2001:db8::7]:40122 2001:db8::7 40122");
    EXPECT("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_PORT%", &r, "[::1] -");
    EXPECT("%UPSTREAM_HOST% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT%", &r,
           "unix-socket unix-socket -");
    teardown_pool();
}

static void newline_appended_once(void **state)
{
    struct keel_access_record r = fx_418();
    char err[128];
    struct keel_accesslog_format *f = keel_accesslog_compile("%RESPONSE_CODE%", KEEL_ACCESSLOG_TEXT, err, sizeof(err));
    assert_string_equal(render_with(f, &r), "418\n");
    keel_accesslog_format_free(f);
    f = keel_accesslog_compile("%RESPONSE_CODE%\n", KEEL_ACCESSLOG_TEXT, err, sizeof(err));
    assert_string_equal(render_with(f, &r), "418\n");
    keel_accesslog_format_free(f);
    f = keel_accesslog_compile("a\nb", KEEL_ACCESSLOG_TEXT, err, sizeof(err));
    assert_string_equal(render_with(f, &r), "a\nb\n");
    keel_accesslog_format_free(f);
    teardown_pool();
}

/* ---- escaping ---- */

static void assert_no_raw_controls(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 || c == 0x7f) && !(c == '\n' && i == n - 1))
            fail_msg("raw control byte 0x%02x at %zu in \"%s\"", c, i, s);
    }
}

/* Every ASCII byte at every offset of a 24-byte value: the word-at-a-time scan and the
 * overlapping tail check escape exactly the bytes the byte table names. */
static void text_escape_every_byte_every_offset(void **state)
{
    (void)state;
    struct keel_access_record r = fx_418();
    for (int c = 1; c < 0x80; c++) {
        for (size_t off = 0; off < 24; off++) {
            char path[24];
            memset(path, 'p', sizeof(path));
            path[off] = (char)c;
            r.path = (struct keel_str){ path, sizeof(path) };
            char want[128];
            size_t n = 0;
            for (size_t i = 0; i < sizeof(path); i++) {
                unsigned char b = (unsigned char)path[i];
                if (b < 0x20 || b == '"' || b == '\\' || b == 0x7f)
                    n += (size_t)snprintf(want + n, sizeof(want) - n, "\\x%02x", b);
                else
                    want[n++] = (char)b;
            }
            want[n] = '\0';
            assert_string_equal(render1("%REQ(:PATH)%", &r), want);
        }
    }
}

static void control_chars_escaped(void **state)
{
    struct keel_access_record r = fx_418();
    static const char path[] = "/a\x01" "b\nc\r\x7f\x1b[31m";
    static const char ua[] = "evil\n[2024-01-01T00:00:00.000Z] \"GET /forged\"\t\x00x";
    static const struct keel_http_header h[] = {
        { .name = S("User-Agent"), .value = { ua, sizeof(ua) - 1 } },
        { .name = S("X-Quote"), .value = S("say \"hi\" \\ back") },
        { .name = S("X-Utf8"), .value = S("caf\xc3\xa9 \xff") },
    };
    r.path = (struct keel_str){ path, sizeof(path) - 1 };
    r.req_headers = h;
    r.n_req_headers = 3;
    struct keel_accesslog_format *f = keel_accesslog_compile(NULL, KEEL_ACCESSLOG_TEXT, NULL, 0);
    render_with(f, &r);
    assert_no_raw_controls(line);
    assert_non_null(strstr(line, "\"GET /a\\x01b\\x0ac\\x0d\\x7f\\x1b[31m HTTP/1.1\" 418"));
    /* a quote cannot close the quoted field either: no forged line, no forged field */
    assert_non_null(strstr(line, "\"evil\\x0a[2024-01-01T00:00:00.000Z] \\x22GET /forged\\x22\\x09\\x00x\""));
    /* exactly one line */
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
    keel_accesslog_format_free(f);
    /* quotes and backslashes escaped (reversible), invalid UTF-8 bytes and C1 controls as
     * \xHH, valid UTF-8 kept as Envoy writes it */
    EXPECT("%REQ(X-QUOTE)%|%REQ(X-UTF8)%", &r, "say \\x22hi\\x22 \\x5c back|caf\xc3\xa9 \\xff");
    static const struct keel_http_header h2[] = {
        { .name = S("X-Utf8"), .value = S("a\xc2\x9b[31m\xe2\x82|\xf4\x90\x80\x80") },
    };
    r.req_headers = h2;
    r.n_req_headers = 1;
    EXPECT("%REQ(X-UTF8)%", &r, "a\\xc2\\x9b[31m\\xe2\\x82|\\xf4\\x90\\x80\\x80");
    r.req_headers = h;
    r.n_req_headers = 3;
    /* truncation counts raw bytes, before escaping */
    EXPECT("%REQ(:PATH):4%", &r, "/a\\x01b");
    /* method and authority are request bytes too */
    r.method = S("G\x01T");
    r.authority = S("h\nst");
    EXPECT("%REQ(:METHOD)% %REQ(:AUTHORITY)%", &r, "G\\x01T h\\x0ast");
    teardown_pool();
}

/* ---- compile errors ---- */

static void expect_error(const char *fmt, const char *want1, const char *want2)
{
    char err[256];
    struct keel_accesslog_format *f = keel_accesslog_compile(fmt, KEEL_ACCESSLOG_TEXT, err, sizeof(err));
    if (f != NULL)
        fail_msg("format \"%s\" compiled, expected an error", fmt);
    if (strstr(err, want1) == NULL || (want2 != NULL && strstr(err, want2) == NULL))
        fail_msg("format \"%s\": error \"%s\" lacks \"%s\"/\"%s\"", fmt, err, want1, want2 ? want2 : "");
}

/* REQ_WITHOUT_QUERY, PATH(NQ), QUERY_PARAM, UNIQUE_ID on a path with a query */
static void path_and_query_operators(void **state)
{
    (void)state;
    struct keel_access_record r = fx_418();
    r.path = S("/api/v1?a=1&bb=two&c&a=3");
    static const char *const cases[][2] = {
        { "%REQ_WITHOUT_QUERY(:PATH)%", "/api/v1" },
        { "%REQ(:PATH)%", "/api/v1?a=1&bb=two&c&a=3" },
        { "%PATH%", "/api/v1?a=1&bb=two&c&a=3" },
        { "%PATH(WQ:ORIG)%", "/api/v1?a=1&bb=two&c&a=3" },
        { "%PATH(NQ)%", "/api/v1" },
        { "%QUERY_PARAM(a)%", "1" },
        { "%QUERY_PARAM(bb)%", "two" },
        { "%QUERY_PARAM(c)%", "-" },
        { "%QUERY_PARAM(zz)%", "-" },
        { "%REQ_WITHOUT_QUERY(:PATH):4%", "/api" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = render1(cases[i][0], &r);
        if (strcmp(got, cases[i][1]) != 0)
            fail_msg("format \"%s\": got \"%s\", want \"%s\"", cases[i][0], got, cases[i][1]);
    }
    char a[64], b[64];
    snprintf(a, sizeof(a), "%s", render1("%UNIQUE_ID%", &r));
    snprintf(b, sizeof(b), "%s", render1("%UNIQUE_ID%", &r));
    assert_int_equal(strlen(a), 36);
    assert_int_equal(a[14], '4');
    assert_string_not_equal(a, b); /* one per line */
    teardown_pool();
}

static void compile_errors(void **state)
{
    expect_error("abc %FOO% x", "column 5", "unknown operator FOO");
    /* operators that cannot apply to plaintext HTTP/1.1 and TCP: refused, saying why */
    expect_error("%DOWNSTREAM_PEER_URI_SAN%", "column 1", "cannot apply: keel has no TLS yet");
    expect_error("x %UPSTREAM_TLS_VERSION%", "column 3", "no TLS");
    expect_error("%PATH(XQ)%", "column 1", "WQ or NQ");
    expect_error("%RESPONSE_CODE% %BYTES_SENT% %DURATON%", "column 30", "DURATON");
    expect_error("x %", "column 3", "%%");
    expect_error("x % y", "column 3", "operator name");
    expect_error("%RESPONSE_CODE", "column 1", "not closed");
    expect_error("%REQ(USER-AGENT%", "column 5", "unterminated");
    expect_error("%REQ(USER-AGENT):%", "column 17", "length");
    expect_error("%REQ(USER-AGENT):99999999999%", "column 17", "too large");
    expect_error("%REQ%", "column 1", "needs an argument");
    expect_error("%REQ()%", "column 1", "needs an argument");
    expect_error("%ENVIRONMENT%", "column 1", "needs an argument");
    expect_error("%DURATION(x)%", "column 1", "takes no argument");
    expect_error("%REQ(A?B?C)%", "column 1", "invalid character");
    expect_error("%REQ(?B)%", "column 1", "empty header name");
    expect_error("%REQ(a b)%", "column 1", "invalid character");
    expect_error("%start_time%", "column 1", "operator name");
    /* err may be NULL */
    assert_null(keel_accesslog_compile("%NOPE%", KEEL_ACCESSLOG_TEXT, NULL, 0));
    /* tiny err buffers are still terminated */
    char tiny[8];
    assert_null(keel_accesslog_compile("%NOPE%", KEEL_ACCESSLOG_TEXT, tiny, sizeof(tiny)));
    assert_true(strlen(tiny) < sizeof(tiny));
}

static void big_values_grow_the_buffer(void **state)
{
    struct keel_access_record r = fx_418();
    static char big[200000];
    memset(big, 'a', sizeof(big));
    for (size_t i = 0; i < sizeof(big); i += 1000)
        big[i] = '\n';
    struct keel_http_header h[] = { { .name = S("User-Agent"), .value = { big, sizeof(big) } } };
    r.req_headers = h;
    r.n_req_headers = 1;
    struct keel_accesslog_format *f = keel_accesslog_compile("%REQ(USER-AGENT)%", KEEL_ACCESSLOG_TEXT, NULL, 0);
    struct keel_buf b = { 0 };
    keel_buf_append(&b, "prefix", 6);
    keel_accesslog_render(f, &r, &b);
    assert_int_equal(keel_buf_len(&b), 6 + sizeof(big) + 3 * (sizeof(big) / 1000) + 1);
    assert_memory_equal(keel_buf_rptr(&b), "prefix\\x0aaaa", 13);
    keel_buf_release(&b);
    keel_accesslog_format_free(f);
    teardown_pool();
}

/* ---- %CEL(...)%: Envoy's CEL formatter over the record's attribute bag ---- */

static const struct keel_str_pair cel_headers[] = {
    { S("x-user"), S("bob") },
    { S("host"), S("web:80") },
};

static void cel_bag(struct keel_attr_bag *bag)
{
    keel_attr_bag_clear(bag);
    struct keel_value v = keel_value_map(cel_headers, 2);
    keel_attr_bag_set(bag, keel_attr_lookup("request.headers", 15), &v);
    v = keel_value_int(404);
    keel_attr_bag_set(bag, keel_attr_lookup("response.code", 13), &v);
    v = keel_value_str("/a(b)", 5);
    keel_attr_bag_set(bag, keel_attr_lookup("request.path", 12), &v);
    v = keel_value_duration(1500000000);
    keel_attr_bag_set(bag, keel_attr_lookup("response.duration", 17), &v);
}

static void cel_operator(void **state)
{
    (void)state;
    struct keel_attr_bag bag;
    cel_bag(&bag);
    struct keel_access_record r = fx_418();
    r.bag = &bag;
    static const char *const cases[][2] = {
        { "%CEL(request.headers['x-user'])%", "bob" },
        { "%CEL(request.headers[\"x-user\"])% %CEL(response.code >= 400)%", "bob true" },
        { "%CEL(response.code)%", "404" },
        { "%CEL(response.code < 400)%", "false" },
        { "%CEL(request.headers['nope'])%", "-" },           /* an evaluation error: unset */
        { "%CEL(source.workload.name)%", "-" },              /* an absent attribute */
        { "%CEL(null)%", "-" },
        { "%CEL(size(request.path) * 2)%", "10" },
        { "%CEL(1.5)%", "1.5" },
        { "%CEL(response.duration)%", "1.5s" },
        { "%CEL(type(1))%", "int" },
        { "%CEL([1, 'a'])%", "[1,\\x22a\\x22]" },          /* JSON, escaped as any text value */
        { "%CEL({'k': true})%", "{\\x22k\\x22:true}" },
        { "%CEL(request.headers)%", "{\\x22host\\x22:\\x22web:80\\x22,\\x22x-user\\x22:\\x22bob\\x22}" },
        { "%CEL(request.path)%", "/a(b)" },                  /* parentheses inside the argument */
        { "%CEL(request.path + ')')%", "/a(b))" },
        { "%CEL(request.path):3%", "/a(" },                  /* :Z truncates, as Envoy's syntax */
        { "%CEL(request.headers['x-user']):1%|%CEL(response.code):2%", "b|40" },
        { "%CEL('a\\nb')%", "a\\x0ab" },                     /* never a raw newline */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = render1(cases[i][0], &r);
        if (strcmp(got, cases[i][1]) != 0)
            fail_msg("format \"%s\": got \"%s\", want \"%s\"", cases[i][0], got, cases[i][1]);
    }
    /* without a bag (nothing filled it) every CEL operator is unset */
    r.bag = NULL;
    EXPECT("%CEL(response.code)% %CEL('x')%", &r, "- -");
    teardown_pool();
}

static void cel_operator_json_and_bag_use(void **state)
{
    (void)state;
    struct keel_attr_bag bag;
    cel_bag(&bag);
    struct keel_access_record r = fx_418();
    r.bag = &bag;
    char err[256];
    /* Envoy's CEL formatter gives strings in JSON logs too; an error is null */
    struct keel_accesslog_format *f = keel_accesslog_compile(
        "{\"u\":\"%CEL(request.headers['x-user'])%\",\"c\":\"%CEL(response.code)%\",\"n\":\"%CEL(request.headers['no'])%\","
        "\"in\":\"<%CEL(response.code == 404)%>\"}",
        KEEL_ACCESSLOG_JSON, err, sizeof(err));
    if (f == NULL)
        fail_msg("%s", err);
    assert_true(keel_accesslog_uses_bag(f));
    assert_string_equal(render_with(f, &r), "{\"u\":\"bob\",\"c\":\"404\",\"n\":null,\"in\":\"<true>\"}\n");
    keel_accesslog_format_free(f);
    f = keel_accesslog_compile(NULL, KEEL_ACCESSLOG_TEXT, NULL, 0);
    assert_false(keel_accesslog_uses_bag(f));
    keel_accesslog_format_free(f);
    teardown_pool();
}

static void cel_compile_errors(void **state)
{
    (void)state;
    /* the column points into the expression: "a %CEL(" is 7 bytes */
    expect_error("a %CEL(request.nope)%", "column 8", "CEL: ");
    expect_error("a %CEL(1 + )%", "CEL: ", NULL);
    expect_error("%CEL()%", "column 1", "needs an argument");
    expect_error("%CEL(size(request.path)%", "column 5", "unterminated");
    expect_error("%CEL('a)%", "column 5", "unterminated");
    /* in a JSON format the column is the one in the JSON text */
    char err[256];
    assert_null(keel_accesslog_compile("{\"k\": \"%CEL(nope.nope)%\"}", KEEL_ACCESSLOG_JSON, err, sizeof(err)));
    assert_non_null(strstr(err, "key \"k\": column 13"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(istio_default_418),
        cmocka_unit_test(istio_default_503_uf),
        cmocka_unit_test(istio_default_tcp),
        cmocka_unit_test(renders_append_and_reuse),
        cmocka_unit_test(every_operator_http),
        cmocka_unit_test(every_operator_tcp),
        cmocka_unit_test(unset_durations_and_empty_fields),
        cmocka_unit_test(header_lookup_and_fallback), cmocka_unit_test(header_lookup_by_parser_ids),
        cmocka_unit_test(truncation),
        cmocka_unit_test(start_time_formats),
        cmocka_unit_test(hostname_and_environment),
        cmocka_unit_test(ipv6_addresses),
        cmocka_unit_test(newline_appended_once),
        cmocka_unit_test(control_chars_escaped),
        cmocka_unit_test(text_escape_every_byte_every_offset),
        cmocka_unit_test(compile_errors),
        cmocka_unit_test(path_and_query_operators),
        cmocka_unit_test(big_values_grow_the_buffer),
        cmocka_unit_test(cel_operator),
        cmocka_unit_test(cel_operator_json_and_bag_use),
        cmocka_unit_test(cel_compile_errors),
    };
    return cmocka_run_group_tests_name("telemetry/accesslog", tests, NULL, NULL);
}
