/* The spec's example requests (access-logs-and-tracing.md §2.2) as access records. */
#ifndef KEEL_TEST_AL_FIXTURES_H
#define KEEL_TEST_AL_FIXTURES_H

#include "telemetry/accesslog.h"
#include "telemetry/response_flags.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#define S(lit) KEEL_STR(lit)

/* 2024-05-02T10:11:12 UTC */
static inline int64_t fx_epoch_us(int sec_in_minute, int us)
{
    struct tm tm = { .tm_year = 2024 - 1900, .tm_mon = 4, .tm_mday = 2, .tm_hour = 10, .tm_min = 11,
                     .tm_sec = sec_in_minute };
    return (int64_t)timegm(&tm) * 1000000 + us;
}

static const struct keel_http_header fx_req1[] = {
    { .name = S("Host"), .value = S("httpbin:8000") },
    { .name = S("User-Agent"), .value = S("curl/8.5.0") },
    { .name = S("Accept"), .value = S("*/*") },
    { .name = S("x-request-id"), .value = S("6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11") },
};
static const struct keel_http_header fx_resp1[] = {
    { .name = S("Content-Length"), .value = S("135") },
    { .name = S("x-envoy-upstream-service-time"), .value = S("2") },
};

/* the 418 */
static inline struct keel_access_record fx_418(void)
{
    struct keel_access_record r;
    memset(&r, 0, sizeof(r));
    r.start_us = fx_epoch_us(12, 345678);
    r.duration_us = 3400;
    r.request_duration_us = 120;
    r.request_tx_duration_us = 250;
    r.response_duration_us = 2100;
    r.response_tx_duration_us = 1300;
    r.method = S("GET");
    r.path = S("/status/418");
    r.authority = S("httpbin:8000");
    r.scheme = S("http");
    r.protocol = S("HTTP/1.1");
    r.req_headers = fx_req1;
    r.n_req_headers = sizeof(fx_req1) / sizeof(fx_req1[0]);
    r.resp_headers = fx_resp1;
    r.n_resp_headers = sizeof(fx_resp1) / sizeof(fx_resp1[0]);
    r.status = 418;
    r.code_details = S("via_upstream");
    r.bytes_received = 0;
    r.bytes_sent = 135;
    r.request_headers_bytes = 78;
    r.response_headers_bytes = 96;
    r.connection_id = 17;
    r.upstream_attempts = 1;
    r.upstream_host = S("10.244.1.7:8080");
    r.upstream_cluster = S("outbound|8000||httpbin.foo.svc.cluster.local");
    r.upstream_local = S("10.244.2.4:51442");
    r.downstream_local = S("10.96.12.34:8000");
    r.downstream_remote = S("10.244.2.4:40122");
    r.route_name = S("default");
    r.request_id = S("6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11");
    return r;
}

static const struct keel_http_header fx_req2[] = {
    { .name = S("host"), .value = S("down:80") },
    { .name = S("user-agent"), .value = S("curl/8.5.0") },
    { .name = S("accept"), .value = S("*/*") },
    { .name = S("x-request-id"), .value = S("0d8e4b0e-1f5a-9c2e-9d51-77a0f0c6e2ab") },
};

/* the 503 UF: upstream refused, no upstream connection */
static inline struct keel_access_record fx_503(void)
{
    struct keel_access_record r;
    memset(&r, 0, sizeof(r));
    r.start_us = fx_epoch_us(13, 1999);
    r.duration_us = 1000;
    r.request_duration_us = 50;
    r.request_tx_duration_us = -1;
    r.response_duration_us = -1;
    r.response_tx_duration_us = -1;
    r.method = S("GET");
    r.path = S("/x");
    r.authority = S("down:80");
    r.scheme = S("http");
    r.protocol = S("HTTP/1.1");
    r.req_headers = fx_req2;
    r.n_req_headers = sizeof(fx_req2) / sizeof(fx_req2[0]);
    r.status = 503;
    r.flags = KEEL_RF_UF;
    r.code_details = S("upstream_reset_before_response_started{connection_failure}");
    r.bytes_sent = 91;
    r.upstream_attempts = 1;
    r.upstream_host = S("10.244.1.9:80");
    r.upstream_cluster = S("outbound|80||down.default.svc.cluster.local");
    r.downstream_local = S("10.96.3.3:80");
    r.downstream_remote = S("10.244.2.4:40124");
    r.route_name = S("default");
    r.request_id = S("0d8e4b0e-1f5a-9c2e-9d51-77a0f0c6e2ab");
    return r;
}

/* the TCP connection to mysql */
static inline struct keel_access_record fx_tcp(void)
{
    struct keel_access_record r;
    memset(&r, 0, sizeof(r));
    r.is_tcp = true;
    r.start_us = fx_epoch_us(14, 100000);
    r.duration_us = 10012345;
    r.request_duration_us = -1;
    r.request_tx_duration_us = -1;
    r.response_duration_us = -1;
    r.response_tx_duration_us = -1;
    r.bytes_received = 412;
    r.bytes_sent = 2094;
    r.connection_id = 99;
    r.upstream_attempts = 1;
    r.upstream_host = S("10.244.3.3:3306");
    r.upstream_cluster = S("outbound|3306||mysql.db.svc.cluster.local");
    r.upstream_local = S("10.244.2.4:55002");
    r.downstream_local = S("10.96.9.9:3306");
    r.downstream_remote = S("10.244.2.4:55000");
    r.route_name = S("tcp-route"); /* HTTP-only operator: must still print "-" */
    return r;
}

static const char fx_line_418[] =
    "[2024-05-02T10:11:12.345Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 3 2 \"-\" "
    "\"curl/8.5.0\" \"6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11\" \"httpbin:8000\" \"10.244.1.7:8080\" "
    "outbound|8000||httpbin.foo.svc.cluster.local 10.244.2.4:51442 10.96.12.34:8000 10.244.2.4:40122 - "
    "default\n";
static const char fx_line_503[] =
    "[2024-05-02T10:11:13.001Z] \"GET /x HTTP/1.1\" 503 UF "
    "upstream_reset_before_response_started{connection_failure} - \"-\" 0 91 1 - \"-\" \"curl/8.5.0\" "
    "\"0d8e4b0e-1f5a-9c2e-9d51-77a0f0c6e2ab\" \"down:80\" \"10.244.1.9:80\" "
    "outbound|80||down.default.svc.cluster.local - 10.96.3.3:80 10.244.2.4:40124 - default\n";
static const char fx_line_tcp[] =
    "[2024-05-02T10:11:14.100Z] \"- - -\" 0 - - - \"-\" 412 2094 10012 - \"-\" \"-\" \"-\" \"-\" "
    "\"10.244.3.3:3306\" outbound|3306||mysql.db.svc.cluster.local 10.244.2.4:55002 10.96.9.9:3306 "
    "10.244.2.4:55000 - -\n";

#endif
