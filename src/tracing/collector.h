/* keel collector: a Zipkin-compatible trace collector in one thread (keel's event loop).
 * POST /api/v2/spans into a bounded store; Zipkin's v2 query API out of it. */
#ifndef KEEL_TRACING_COLLECTOR_H
#define KEEL_TRACING_COLLECTOR_H

#include "core/buf.h"
#include "core/str.h"
#include "tracing/store.h"

#include <stddef.h>
#include <stdint.h>

struct keel_collector_options {
    const char *listen;    /* default 127.0.0.1:9411 */
    size_t max_spans;      /* store cap, spans */
    size_t max_bytes;      /* store cap, bytes of span records */
    size_t max_body;       /* one request body, also after gunzip */
};

void keel_collector_options_defaults(struct keel_collector_options *o);
/* Serve until SIGTERM/SIGINT. 0 on a clean stop, 1 when the listener could not start. */
int keel_collector_run(const struct keel_collector_options *o);

/* One request as the API sees it: the body already de-chunked and gunzipped. */
struct keel_collector_request {
    struct keel_str method;
    struct keel_str path;  /* without the query */
    struct keel_str query; /* after '?', may be empty */
    const char *body;
    size_t body_len;
    int64_t now_ms;        /* wall clock, for endTs defaults */
};

struct keel_collector_response {
    int status;
    const char *content_type;
    struct keel_buf *body; /* filled by the API */
};

struct keel_collector_counters {
    uint64_t reports_accepted, reports_rejected;
};

/* Route one request (collector_api.c). */
void keel_collector_handle(struct keel_trace_store *st, struct keel_collector_counters *cnt,
                           const struct keel_collector_request *req,
                           struct keel_collector_response *res);

#endif
