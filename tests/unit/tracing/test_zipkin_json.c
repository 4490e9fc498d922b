/* The Zipkin v2 JSON parser: spans from Zipkin's docs, Zipkin's normalisation, every model
 * violation and its message, hostile JSON, and the writer's round trip. */
#include "core/err.h"
#include "tracing/zipkin_json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

/* Parse, write back, and return the written JSON (static), or NULL with err filled. */
static char err[512];
static const char *roundtrip(const char *json)
{
    static char out[65536];
    struct keel_zipkin_list l = { 0 };
    err[0] = '\0';
    if (keel_zipkin_json_parse(json, strlen(json), &l, err, sizeof(err)) < 0) {
        assert_int_equal(l.n, 0);
        assert_true(err[0] != '\0');
        return NULL;
    }
    struct keel_buf b = { 0 };
    keel_zipkin_json_write_spans(&b, l.spans, l.n);
    assert_true(keel_buf_len(&b) < sizeof(out));
    memcpy(out, keel_buf_rptr(&b), keel_buf_len(&b));
    out[keel_buf_len(&b)] = '\0';
    keel_buf_release(&b);
    keel_zipkin_list_fini(&l);
    return out;
}

static void expect_error(const char *json, const char *msg)
{
    const char *out = roundtrip(json);
    if (out != NULL)
        fail_msg("accepted %s as %s", json, out);
    if (strstr(err, msg) == NULL)
        fail_msg("error for %s: '%s', want '%s'", json, err, msg);
}

static void zipkin_example(void **state)
{
    /* the example span of zipkin2-api.yaml: every field comes back as sent */
    const char *in =
        "[{\"traceId\":\"5af7183fb1d4cf5f\",\"parentId\":\"6b221d5bc9e6496c\",\"id\":\"352bff9a74ca9ad2\","
        "\"kind\":\"SERVER\",\"name\":\"get /api\",\"timestamp\":1556604172355737,\"duration\":1431,"
        "\"localEndpoint\":{\"serviceName\":\"backend\",\"ipv4\":\"192.168.99.1\",\"port\":3306},"
        "\"remoteEndpoint\":{\"ipv4\":\"172.19.0.2\",\"port\":58648},"
        "\"tags\":{\"http.method\":\"GET\",\"http.path\":\"/api\"}}]";
    assert_string_equal(roundtrip(in), in);
}

static void all_fields(void **state)
{
    const char *in =
        "[{\"traceId\":\"463ac35c9f6413ad48485a3953bb6124\",\"id\":\"a000000000000001\",\"kind\":\"CLIENT\","
        "\"name\":\"x\",\"timestamp\":1,\"duration\":2,"
        "\"localEndpoint\":{\"serviceName\":\"a\",\"ipv6\":\"2001:db8::c001\",\"port\":1},"
        "\"remoteEndpoint\":{\"serviceName\":\"b\",\"ipv4\":\"10.0.0.1\"},"
        "\"annotations\":[{\"timestamp\":3,\"value\":\"ws\"},{\"timestamp\":4,\"value\":\"wr\"}],"
        "\"tags\":{\"a\":\"\",\"b\":\"\\u00e9\\n\\\"\"},\"debug\":true,\"shared\":true},"
        "{\"traceId\":\"463ac35c9f6413ad48485a3953bb6124\",\"id\":\"a000000000000002\",\"kind\":\"PRODUCER\"},"
        "{\"traceId\":\"463ac35c9f6413ad48485a3953bb6124\",\"id\":\"a000000000000003\",\"kind\":\"CONSUMER\"}]";
    const char *want =
        "[{\"traceId\":\"463ac35c9f6413ad48485a3953bb6124\",\"id\":\"a000000000000001\",\"kind\":\"CLIENT\","
        "\"name\":\"x\",\"timestamp\":1,\"duration\":2,"
        "\"localEndpoint\":{\"serviceName\":\"a\",\"ipv6\":\"2001:db8::c001\",\"port\":1},"
        "\"remoteEndpoint\":{\"serviceName\":\"b\",\"ipv4\":\"10.0.0.1\"},"
        "\"annotations\":[{\"timestamp\":3,\"value\":\"ws\"},{\"timestamp\":4,\"value\":\"wr\"}],"
        "\"tags\":{\"a\":\"\",\"b\":\"\xc3\xa9\\n\\\"\"},\"debug\":true,\"shared\":true},"
        "{\"traceId\":\"463ac35c9f6413ad48485a3953bb6124\",\"id\":\"a000000000000002\",\"kind\":\"PRODUCER\"},"
        "{\"traceId\":\"463ac35c9f6413ad48485a3953bb6124\",\"id\":\"a000000000000003\",\"kind\":\"CONSUMER\"}]";
    assert_string_equal(roundtrip(in), want);
}

static void normalisation(void **state)
{
    /* short ids padded; a 128-bit id with zero high bits is the 64-bit one; an all-zero
     * parent is a root; names and service names lower-cased; empty strings, zero numbers,
     * false flags and empty endpoints are absent; annotations sorted and deduplicated;
     * tags sorted by key; unknown fields ignored; nulls are absent */
    assert_string_equal(
        roundtrip("[{\"traceId\":\"00000000000000000000000000000abc\",\"id\":\"abc\","
                  "\"parentId\":\"0000000000000000\",\"name\":\"GET /Foo\",\"timestamp\":0,"
                  "\"duration\":0,\"debug\":false,\"shared\":null,\"unknown\":{\"x\":[1]},"
                  "\"localEndpoint\":{\"serviceName\":\"FrontEnd\",\"port\":0,\"ipv4\":\"\"},"
                  "\"remoteEndpoint\":{},"
                  "\"annotations\":[{\"timestamp\":5,\"value\":\"b\"},{\"timestamp\":5,\"value\":\"a\"},"
                  "{\"timestamp\":1,\"value\":\"z\"},{\"timestamp\":5,\"value\":\"b\"}],"
                  "\"tags\":{\"z\":\"1\",\"a\":\"2\"}}]"),
        "[{\"traceId\":\"0000000000000abc\",\"id\":\"0000000000000abc\",\"name\":\"get /foo\","
        "\"localEndpoint\":{\"serviceName\":\"frontend\"},"
        "\"annotations\":[{\"timestamp\":1,\"value\":\"z\"},{\"timestamp\":5,\"value\":\"a\"},"
        "{\"timestamp\":5,\"value\":\"b\"}],\"tags\":{\"a\":\"2\",\"z\":\"1\"}}]");
    /* 17..31 hex digits pad to 32 */
    assert_string_equal(roundtrip("[{\"traceId\":\"10000000000000000\",\"id\":\"1\"}]"),
                        "[{\"traceId\":\"00000000000000010000000000000000\",\"id\":\"0000000000000001\"}]");
    assert_string_equal(roundtrip("[]"), "[]");
    assert_string_equal(roundtrip(" \n[ ] \n"), "[]");
}

static void model_violations(void **state)
{
    expect_error("[{\"id\":\"1\"}]", "spans[0]: traceId is required");
    expect_error("[{\"traceId\":null,\"id\":\"1\"}]", "traceId is required");
    expect_error("[{\"traceId\":1,\"id\":\"1\"}]", "traceId must be a string");
    expect_error("[{\"traceId\":\"\",\"id\":\"1\"}]", "traceId is empty");
    expect_error("[{\"traceId\":\"123456789012345678901234567890123\",\"id\":\"1\"}]",
                 "traceId.length > 32");
    expect_error("[{\"traceId\":\"48485A3953BB6124\",\"id\":\"1\"}]",
                 "traceId 48485A3953BB6124 should be lower-hex encoded with no prefix");
    expect_error("[{\"traceId\":\"0x1\",\"id\":\"1\"}]", "should be lower-hex encoded");
    expect_error("[{\"traceId\":\"0000\",\"id\":\"1\"}]", "traceId is all zeros");
    expect_error("[{\"traceId\":\"1\"}]", "id is required");
    expect_error("[{\"traceId\":\"1\",\"id\":\"12345678901234567\"}]", "id.length > 16");
    expect_error("[{\"traceId\":\"1\",\"id\":\"000\"}]", "id is all zeros");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"parentId\":\"g\"}]",
                 "parentId g should be lower-hex");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"parentId\":\"00000000000000000\"}]",
                 "parentId.length > 16");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"kind\":\"client\"}]",
                 "kind client is not one of CLIENT, SERVER, PRODUCER, CONSUMER");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"kind\":1}]", "kind must be a string");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":[]}]", "name must be a string");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":\"a\\u0000b\"}]",
                 "name contains a NUL character");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"timestamp\":1.5}]", "timestamp must be an integer");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"timestamp\":\"1\"}]", "timestamp must be an integer");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"timestamp\":-1}]", "timestamp must not be negative");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"duration\":1e3}]", "duration must be an integer");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"debug\":1}]", "debug must be a boolean");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"shared\":\"true\"}]", "shared must be a boolean");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"localEndpoint\":\"a\"}]",
                 "localEndpoint must be an object");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"localEndpoint\":{\"serviceName\":1}}]",
                 "localEndpoint.serviceName must be a string");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"remoteEndpoint\":{\"ipv4\":\"1.2.3\"}}]",
                 "remoteEndpoint.ipv4 1.2.3 is not an IPv4 address");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"remoteEndpoint\":{\"ipv6\":\"1.2.3.4\"}}]",
                 "remoteEndpoint.ipv6 1.2.3.4 is not an IPv6 address");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"localEndpoint\":{\"port\":65536}}]",
                 "invalid port 65536 in localEndpoint");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"localEndpoint\":{\"port\":-1}}]",
                 "localEndpoint.port must not be negative");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"annotations\":{}}]", "annotations must be an array");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"annotations\":[1]}]",
                 "annotations[0] must be an object");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"annotations\":[{\"value\":\"x\"}]}]",
                 "incomplete annotation: annotations[0].timestamp is missing");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"annotations\":[{\"timestamp\":1}]}]",
                 "incomplete annotation: annotations[0].value is missing");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":[]}]", "tags must be an object");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"http.status_code\":200}}]",
                 "tags.http.status_code must be a string");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"a\":null}}]", "tags.a must be a string");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"\":\"x\"}}]", "tags: empty key");
    expect_error("[1]", "spans[0]: a span must be an object");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\"},{\"traceId\":\"1\"}]", "spans[1]: id is required");
    expect_error("{\"traceId\":\"1\",\"id\":\"1\"}", "expected a JSON array of spans");
}

static void hostile_json(void **state)
{
    expect_error("", "empty body");
    expect_error("[{\"traceId\":\"1\"", "unexpected end of input");
    expect_error("hello", "malformed JSON at byte");
    expect_error("[1,]", "malformed JSON");
    expect_error("[] []", "malformed JSON");
    expect_error("[{'traceId':'1'}]", "malformed JSON");
    /* nesting beyond what the model needs */
    char deep[4096];
    memset(deep, '[', 2000);
    memset(deep + 2000, ']', 2000);
    deep[4000] = '\0';
    expect_error(deep, "nesting too deep");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":1}}}}}}}]",
                 "nesting too deep");
    /* numbers beyond 64 bits, either way */
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"timestamp\":99999999999999999999999}]",
                 "timestamp is out of range");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"timestamp\":9223372036854775808}]",
                 "timestamp is out of range");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"duration\":-99999999999999999999999}]",
                 "duration is out of range");
    assert_non_null(roundtrip("[{\"traceId\":\"1\",\"id\":\"1\",\"timestamp\":9223372036854775807}]"));
    /* invalid UTF-8, raw or in a key */
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":\"\xff\"}]", "invalid utf-8");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"\xc3\x28\":\"x\"}}]", "invalid utf-8");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":\"\xed\xa0\x80\"}]", "not valid UTF-8");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":\"\xc0\xaf\"}]", "not valid UTF-8");
    expect_error("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":\"\xf4\x90\x80\x80\"}]", "UTF-8");
    /* a lone surrogate escape becomes U+FFFD (json-c), so what is stored is valid UTF-8 */
    assert_string_equal(roundtrip("[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{\"a\":\"\\ud800\"}}]"),
                        "[{\"traceId\":\"0000000000000001\",\"id\":\"0000000000000001\",\"tags\":{\"a\":\"\xef\xbf\xbd\"}}]");
    assert_string_equal(roundtrip("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":\"\\ud83d\\ude00\"}]"),
                        "[{\"traceId\":\"0000000000000001\",\"id\":\"0000000000000001\",\"name\":\"\xf0\x9f\x98\x80\"}]");
    /* a raw control byte in a string (json-c takes it): written back escaped */
    assert_string_equal(roundtrip("[{\"traceId\":\"1\",\"id\":\"1\",\"name\":\"a\x01\"}]"),
                        "[{\"traceId\":\"0000000000000001\",\"id\":\"0000000000000001\",\"name\":\"a\\u0001\"}]");
    /* duplicate keys: the later wins, as in Zipkin's reader */
    assert_string_equal(
        roundtrip("[{\"traceId\":\"1\",\"id\":\"1\",\"id\":\"2\",\"tags\":{\"k\":\"1\",\"k\":\"2\"}}]"),
        "[{\"traceId\":\"0000000000000001\",\"id\":\"0000000000000002\",\"tags\":{\"k\":\"2\"}}]");
    /* too many tags */
    static char many[200000];
    size_t n = (size_t)snprintf(many, sizeof(many), "[{\"traceId\":\"1\",\"id\":\"1\",\"tags\":{");
    for (int i = 0; i <= KEEL_ZIPKIN_MAX_TAGS; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "%s\"k%d\":\"v\"", i ? "," : "", i);
    snprintf(many + n, sizeof(many) - n, "}}]");
    expect_error(many, "more than 1024 tags");
}

/* Every prefix of a valid report, placed against a guard page: either an error or (the
 * whole report) the spans; never a read past the end. */
static void prefixes_at_guard_page(void **state)
{
    const char *in =
        "[{\"traceId\":\"5af7183fb1d4cf5f\",\"id\":\"352bff9a74ca9ad2\",\"kind\":\"SERVER\","
        "\"name\":\"get\",\"timestamp\":1556604172355737,\"duration\":1431,"
        "\"localEndpoint\":{\"serviceName\":\"backend\",\"ipv4\":\"192.168.99.1\",\"port\":3306},"
        "\"annotations\":[{\"timestamp\":1,\"value\":\"x\"}],\"tags\":{\"a\":\"\\u00e9\"}}]";
    size_t page = (size_t)sysconf(_SC_PAGESIZE), len = strlen(in);
    char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + page, page, PROT_NONE), 0);
    for (size_t k = 0; k <= len; k++) {
        char *p = m + page - k;
        memcpy(p, in, k);
        struct keel_zipkin_list l = { 0 };
        int rc = keel_zipkin_json_parse(p, k, &l, err, sizeof(err));
        assert_int_equal(rc, k == len ? 0 : KEEL_EINVAL);
        assert_int_equal(l.n, k == len ? 1 : 0);
        keel_zipkin_list_fini(&l);
    }
    munmap(m, 2 * page);
}

static void failure_adds_nothing(void **state)
{
    struct keel_zipkin_list l = { 0 };
    const char *ok = "[{\"traceId\":\"1\",\"id\":\"1\"}]";
    const char *bad = "[{\"traceId\":\"1\",\"id\":\"2\"},{\"traceId\":\"1\",\"id\":\"3\",\"kind\":\"X\"}]";
    assert_int_equal(keel_zipkin_json_parse(ok, strlen(ok), &l, err, sizeof(err)), 0);
    assert_int_equal(keel_zipkin_json_parse(bad, strlen(bad), &l, err, sizeof(err)), KEEL_EINVAL);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.spans[0]->id, "0000000000000001");
    keel_zipkin_list_fini(&l);
}


static const char *v1(const char *json)
{
    static char out[65536];
    struct keel_zipkin_list l = { 0 };
    err[0] = '\0';
    if (keel_zipkin_json_parse_v1(json, strlen(json), &l, err, sizeof(err)) < 0) {
        assert_int_equal(l.n, 0);
        return NULL;
    }
    struct keel_buf b = { 0 };
    keel_zipkin_json_write_spans(&b, l.spans, l.n);
    memcpy(out, keel_buf_rptr(&b), keel_buf_len(&b));
    out[keel_buf_len(&b)] = '\0';
    keel_buf_release(&b);
    keel_zipkin_list_fini(&l);
    return out;
}

/* v1 -> v2 as Zipkin's V1SpanConverter: one v1 span with both sides is a CLIENT span and a
 * shared SERVER span; addresses become remote endpoints; the rest lands on the side whose
 * service recorded it. */
static void v1_shared_span(void **state)
{
    const char *in =
        "[{\"traceId\":\"1\",\"id\":\"2\",\"parentId\":\"1\",\"name\":\"GET\",\"timestamp\":100,"
        "\"duration\":50,\"annotations\":["
        "{\"timestamp\":100,\"value\":\"cs\",\"endpoint\":{\"serviceName\":\"Frontend\",\"ipv4\":\"1.2.3.4\"}},"
        "{\"timestamp\":110,\"value\":\"sr\",\"endpoint\":{\"serviceName\":\"backend\",\"ipv4\":\"1.2.3.5\"}},"
        "{\"timestamp\":120,\"value\":\"db.start\",\"endpoint\":{\"serviceName\":\"backend\"}},"
        "{\"timestamp\":140,\"value\":\"ss\",\"endpoint\":{\"serviceName\":\"backend\",\"ipv4\":\"1.2.3.5\"}},"
        "{\"timestamp\":150,\"value\":\"cr\",\"endpoint\":{\"serviceName\":\"Frontend\",\"ipv4\":\"1.2.3.4\"}}],"
        "\"binaryAnnotations\":["
        "{\"key\":\"http.path\",\"value\":\"/api\",\"endpoint\":{\"serviceName\":\"frontend\"}},"
        "{\"key\":\"sa\",\"value\":true,\"endpoint\":{\"serviceName\":\"backend\",\"port\":8080}},"
        "{\"key\":\"ca\",\"value\":true,\"endpoint\":{\"ipv4\":\"1.2.3.4\",\"port\":5555}},"
        "{\"key\":\"sql\",\"value\":\"select\",\"endpoint\":{\"serviceName\":\"backend\"}},"
        "{\"key\":\"retries\",\"value\":3,\"type\":\"I64\"}]}]";
    assert_string_equal(v1(in),
        "[{\"traceId\":\"0000000000000001\",\"parentId\":\"0000000000000001\",\"id\":\"0000000000000002\","
        "\"kind\":\"CLIENT\",\"name\":\"get\",\"timestamp\":100,\"duration\":50,"
        "\"localEndpoint\":{\"serviceName\":\"frontend\",\"ipv4\":\"1.2.3.4\"},"
        "\"remoteEndpoint\":{\"serviceName\":\"backend\",\"port\":8080},"
        "\"tags\":{\"http.path\":\"/api\",\"retries\":\"3\"}},"
        "{\"traceId\":\"0000000000000001\",\"parentId\":\"0000000000000001\",\"id\":\"0000000000000002\","
        "\"kind\":\"SERVER\",\"name\":\"get\",\"timestamp\":110,\"duration\":30,"
        "\"localEndpoint\":{\"serviceName\":\"backend\",\"ipv4\":\"1.2.3.5\"},"
        "\"remoteEndpoint\":{\"ipv4\":\"1.2.3.4\",\"port\":5555},"
        "\"annotations\":[{\"timestamp\":120,\"value\":\"db.start\"}],"
        "\"tags\":{\"sql\":\"select\"},\"shared\":true}]");
}

static void v1_one_side_and_local(void **state)
{
    /* a server side alone: the span's own timestamp and duration win */
    assert_string_equal(
        v1("[{\"traceId\":\"a\",\"id\":\"b\",\"name\":\"x\",\"timestamp\":10,\"duration\":7,"
           "\"annotations\":[{\"timestamp\":11,\"value\":\"sr\",\"endpoint\":{\"serviceName\":\"s\"}}],"
           "\"debug\":true}]"),
        "[{\"traceId\":\"000000000000000a\",\"id\":\"000000000000000b\",\"kind\":\"SERVER\",\"name\":\"x\","
        "\"timestamp\":10,\"duration\":7,\"localEndpoint\":{\"serviceName\":\"s\"},\"debug\":true}]");
    /* a local span: the local component's endpoint */
    assert_string_equal(
        v1("[{\"traceId\":\"a\",\"id\":\"b\",\"name\":\"work\",\"timestamp\":10,\"duration\":7,"
           "\"binaryAnnotations\":[{\"key\":\"lc\",\"value\":\"cache\",\"endpoint\":{\"serviceName\":\"s\"}}]}]"),
        "[{\"traceId\":\"000000000000000a\",\"id\":\"000000000000000b\",\"name\":\"work\","
        "\"timestamp\":10,\"duration\":7,\"localEndpoint\":{\"serviceName\":\"s\"},\"tags\":{\"lc\":\"cache\"}}]");
    /* a producer */
    assert_string_equal(
        v1("[{\"traceId\":\"a\",\"id\":\"b\",\"annotations\":[{\"timestamp\":5,\"value\":\"ms\","
           "\"endpoint\":{\"serviceName\":\"p\"}}],\"binaryAnnotations\":[{\"key\":\"ma\",\"value\":true,"
           "\"endpoint\":{\"serviceName\":\"kafka\"}}]}]"),
        "[{\"traceId\":\"000000000000000a\",\"id\":\"000000000000000b\",\"kind\":\"PRODUCER\",\"timestamp\":5,"
        "\"localEndpoint\":{\"serviceName\":\"p\"},\"remoteEndpoint\":{\"serviceName\":\"kafka\"}}]");
}

static void v1_violations(void **state)
{
    assert_null(v1("[{\"id\":\"1\"}]"));
    assert_string_equal(err, "spans[0]: traceId is required");
    assert_null(v1("[{\"traceId\":\"1\",\"id\":\"1\",\"binaryAnnotations\":{}}]"));
    assert_string_equal(err, "spans[0]: binaryAnnotations must be an array");
    assert_null(v1("[{\"traceId\":\"1\",\"id\":\"1\",\"binaryAnnotations\":[{\"value\":\"x\"}]}]"));
    assert_string_equal(err, "spans[0]: binaryAnnotations[0].key is missing");
    assert_null(v1("[{\"traceId\":\"1\",\"id\":\"1\",\"binaryAnnotations\":[{\"key\":\"k\",\"value\":[]}]}]"));
    assert_string_equal(err, "spans[0]: binaryAnnotations[0].value must be a string, number or boolean");
    assert_null(v1("[{\"traceId\":\"1\",\"id\":\"1\"},{\"traceId\":\"1\",\"id\":\"2\","
                   "\"annotations\":[{\"timestamp\":1,\"value\":\"cs\",\"endpoint\":{\"ipv4\":\"x\"}}]}]"));
    assert_string_equal(err, "spans[1]: annotations[0].endpoint.ipv4 x is not an IPv4 address");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zipkin_example), cmocka_unit_test(all_fields),
        cmocka_unit_test(normalisation), cmocka_unit_test(model_violations),
        cmocka_unit_test(hostile_json), cmocka_unit_test(prefixes_at_guard_page),
        cmocka_unit_test(failure_adds_nothing), cmocka_unit_test(v1_shared_span),
        cmocka_unit_test(v1_one_side_and_local), cmocka_unit_test(v1_violations),
    };
    return cmocka_run_group_tests_name("tracing/zipkin_json", tests, NULL, NULL);
}
