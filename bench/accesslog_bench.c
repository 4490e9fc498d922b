/* Access-log micro-benchmark: renders the spec's 418 request with Istio's default text
 * format (and the default JSON format) into one reused buffer, as a worker does, and
 * prints nanoseconds per line. Usage: accesslog_bench [iterations] */
#include "core/buf.h"
#include "telemetry/accesslog.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S(lit) KEEL_STR(lit)

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double run(const struct keel_accesslog_format *f, struct keel_access_record *r, long iters, size_t *bytes)
{
    struct keel_buf b = { 0 };
    size_t total = 0;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        r->start_us += 37; /* time moves: the cached second is re-formatted now and then */
        keel_accesslog_render(f, r, &b);
        if (keel_buf_len(&b) > 12000) { /* a worker hands the batch to the sink each turn */
            total += keel_buf_len(&b);
            b.rpos = b.wpos = 0;
        }
    }
    double t = now_ns() - t0;
    total += keel_buf_len(&b);
    keel_buf_release(&b);
    *bytes = total;
    return t / (double)iters;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    static const struct keel_http_header req[] = {
        { .name = S("Host"), .value = S("httpbin:8000") },
        { .name = S("User-Agent"), .value = S("curl/8.5.0") },
        { .name = S("Accept"), .value = S("*/*") },
        { .name = S("X-Forwarded-Proto"), .value = S("http") },
        { .name = S("x-request-id"), .value = S("6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11") },
    };
    static const struct keel_http_header resp[] = {
        { .name = S("Content-Type"), .value = S("text/plain") },
        { .name = S("Content-Length"), .value = S("135") },
        { .name = S("x-envoy-upstream-service-time"), .value = S("2") },
    };
    struct keel_access_record r = {
        .start_us = 1714644672345678,
        .duration_us = 3400,
        .request_duration_us = 100,
        .request_tx_duration_us = 200,
        .response_duration_us = 2000,
        .response_tx_duration_us = 1400,
        .method = S("GET"),
        .path = S("/status/418"),
        .authority = S("httpbin:8000"),
        .scheme = S("http"),
        .protocol = S("HTTP/1.1"),
        .req_headers = req,
        .n_req_headers = sizeof(req) / sizeof(req[0]),
        .resp_headers = resp,
        .n_resp_headers = sizeof(resp) / sizeof(resp[0]),
        .status = 418,
        .code_details = S("via_upstream"),
        .bytes_sent = 135,
        .upstream_attempts = 1,
        .upstream_host = S("10.244.1.7:8080"),
        .upstream_cluster = S("outbound|8000||httpbin.foo.svc.cluster.local"),
        .upstream_local = S("10.244.2.4:51442"),
        .downstream_local = S("10.96.12.34:8000"),
        .downstream_remote = S("10.244.2.4:40122"),
        .route_name = S("default"),
        .request_id = S("6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11"),
    };
    char err[256];
    struct keel_accesslog_format *text = keel_accesslog_compile(NULL, KEEL_ACCESSLOG_TEXT, err, sizeof(err));
    struct keel_accesslog_format *json = keel_accesslog_compile(NULL, KEEL_ACCESSLOG_JSON, err, sizeof(err));
    if (text == NULL || json == NULL) {
        fprintf(stderr, "compile: %s\n", err);
        return 1;
    }
    size_t bytes;
    run(text, &r, iters / 10, &bytes); /* warm up */
    double t = run(text, &r, iters, &bytes);
    printf("accesslog text (istio default): %.1f ns/line, %.0f bytes/line, %ld lines\n", t,
           (double)bytes / (double)iters, iters);
    double j = run(json, &r, iters, &bytes);
    printf("accesslog json (istio default): %.1f ns/line, %.0f bytes/line, %ld lines\n", j,
           (double)bytes / (double)iters, iters);
    keel_accesslog_format_free(text);
    keel_accesslog_format_free(json);
    keel_buf_pool_drain();
    return 0;
}
