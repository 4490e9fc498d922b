/* A span record as Zipkin v2 JSON, checked against the v2 model (zipkin2-api): traceId 16
 * or 32 lower-hex, id and parentId 16, kind CLIENT/SERVER, timestamp and duration integer
 * microseconds (duration >= 1), localEndpoint.serviceName, tags string -> string, unknown
 * fields omitted. */
#include "mesh/sample_app_int.h"
#include "tracing/tracing.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static void fill(struct keel_span *sp)
{
    memset(sp, 0, sizeof(*sp));
    sp->trace_hi = 0x5b8aa5a2d2c872e8ULL;
    sp->trace_lo = 0x321cf37308d69df2ULL;
    sp->trace128 = true;
    sp->id = 0xc1a7d6c3e4b2a190ULL;
    sp->parent_id = 0x51ad2f6b0e8c4d7aULL;
    sp->kind = KEEL_TRACE_SERVER;
    sp->timestamp_us = 1714644672345000;
    sp->duration_us = 2512;
    sp->status = 200;
    sp->request_size = 0;
    sp->response_size = 178;
    strcpy(sp->name, "details.default.svc.cluster.local:9080/*");
    strcpy(sp->local_service, "details.default");
    strcpy(sp->local_ipv4, "10.244.1.12");
    strcpy(sp->method, "GET");
    strcpy(sp->protocol, "HTTP/1.1");
    strcpy(sp->url, "http://details:9080/details/0");
    strcpy(sp->upstream_cluster, "inbound|9080||");
    strcpy(sp->request_id, "6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11");
    strcpy(sp->peer_address, "10.244.2.4");
    strcpy(sp->response_flags, "-");
    strcpy(sp->user_agent, "Python-urllib/3.12");
    strcpy(sp->node_id, "sidecar~10.244.1.12~details-v1.default~default.svc.cluster.local");
    strcpy(sp->canonical_service, "details");
    strcpy(sp->canonical_revision, "v1");
    strcpy(sp->namespace, "default");
}

static char *encode(const struct keel_span *sp, struct keel_buf *b)
{
    *b = (struct keel_buf){ 0 };
    keel_span_json(b, sp);
    keel_buf_append(b, "", 1);
    char *s = keel_buf_rptr(b);
    assert_true(sa_json_valid(s, strlen(s)));
    return s;
}

static void server_span_exact(void **state)
{
    struct keel_span sp;
    fill(&sp);
    struct keel_buf b;
    assert_string_equal(
        encode(&sp, &b),
        "{\"traceId\":\"5b8aa5a2d2c872e8321cf37308d69df2\",\"id\":\"c1a7d6c3e4b2a190\","
        "\"parentId\":\"51ad2f6b0e8c4d7a\",\"kind\":\"SERVER\","
        "\"name\":\"details.default.svc.cluster.local:9080/*\","
        "\"timestamp\":1714644672345000,\"duration\":2512,"
        "\"localEndpoint\":{\"serviceName\":\"details.default\",\"ipv4\":\"10.244.1.12\"},"
        "\"tags\":{\"component\":\"proxy\","
        "\"node_id\":\"sidecar~10.244.1.12~details-v1.default~default.svc.cluster.local\","
        "\"guid:x-request-id\":\"6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11\","
        "\"http.url\":\"http://details:9080/details/0\",\"http.method\":\"GET\","
        "\"http.protocol\":\"HTTP/1.1\",\"downstream_cluster\":\"-\","
        "\"user_agent\":\"Python-urllib/3.12\",\"peer.address\":\"10.244.2.4\","
        "\"request_size\":\"0\",\"response_size\":\"178\",\"upstream_cluster\":\"inbound|9080||\","
        "\"upstream_cluster.name\":\"inbound|9080||\",\"http.status_code\":\"200\","
        "\"response_flags\":\"-\",\"istio.canonical_service\":\"details\","
        "\"istio.canonical_revision\":\"v1\",\"istio.namespace\":\"default\","
        "\"istio.mesh_id\":\"cluster.local\"}}");
    keel_buf_release(&b);
}

static void client_root_64bit_error(void **state)
{
    struct keel_span sp;
    fill(&sp);
    sp.kind = KEEL_TRACE_CLIENT;
    sp.trace_hi = 0;
    sp.trace128 = false;
    sp.parent_id = 0;
    sp.duration_us = 0; /* sub-microsecond rounds up: duration >= 1 */
    sp.status = 503;
    sp.debug = true;
    strcpy(sp.remote_ipv4, "10.0.0.7");
    sp.remote_port = 9080;
    sp.n_custom = 1;
    strcpy(sp.custom[0].name, "team");
    strcpy(sp.custom[0].value, "a\"b\\c\n");
    struct keel_buf b;
    char *s = encode(&sp, &b);
    assert_non_null(strstr(s, "{\"traceId\":\"321cf37308d69df2\",\"id\":\"c1a7d6c3e4b2a190\",\"kind\":\"CLIENT\""));
    assert_null(strstr(s, "parentId"));
    assert_non_null(strstr(s, "\"duration\":1,\"debug\":true,"));
    assert_non_null(strstr(s, "\"remoteEndpoint\":{\"ipv4\":\"10.0.0.7\",\"port\":9080}"));
    assert_non_null(strstr(s, "\"http.status_code\":\"503\""));
    assert_non_null(strstr(s, "\"error\":\"true\""));
    assert_non_null(strstr(s, "\"team\":\"a\\\"b\\\\c\\n\"}}"));
    keel_buf_release(&b);
    /* a trace id with high bits set is 32 digits even if it came as 64-bit: never cut */
    sp.trace_hi = 1;
    s = encode(&sp, &b);
    assert_non_null(strstr(s, "{\"traceId\":\"0000000000000001321cf37308d69df2\""));
    keel_buf_release(&b);
}

static void hostile_strings_stay_json(void **state)
{
    struct keel_span sp;
    fill(&sp);
    for (int c = 0; c < 256; c++) { /* every byte in every string field */
        memset(sp.user_agent, c ? c : 1, sizeof(sp.user_agent) - 1);
        sp.user_agent[sizeof(sp.user_agent) - 1] = '\0';
        memset(sp.url, c ? c : 1, 20);
        sp.url[20] = '\0';
        struct keel_buf b;
        char *s = encode(&sp, &b);
        (void)s;
        keel_buf_release(&b);
    }
    /* keel_span_set truncates and terminates */
    char f[8];
    keel_span_set(f, sizeof(f), "abcdefghijkl", 12);
    assert_string_equal(f, "abcdefg");
    keel_span_set(f, sizeof(f), NULL, 0);
    assert_string_equal(f, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(server_span_exact),
        cmocka_unit_test(client_root_64bit_error),
        cmocka_unit_test(hostile_strings_stay_json),
    };
    return cmocka_run_group_tests_name("tracing/span_json", tests, NULL, NULL);
}
