/* Envoy-style access logs: a format string compiled once into an op list, rendered per
 * request from a keel_access_record, handed to a sink that never blocks the event loop. */
#ifndef KEEL_TELEMETRY_ACCESSLOG_H
#define KEEL_TELEMETRY_ACCESSLOG_H

#include "core/buf.h"
#include "core/str.h"
#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct keel_attr_bag;

/* Everything an access-log line can say about one request or one TCP connection.
 * Filled by the proxy; every slice points into memory that outlives the render call.
 * An empty slice (len 0) means "unset" and renders as "-" (text) / null (JSON). */
struct keel_access_record {
    bool is_tcp;
    int64_t start_us;               /* wall clock, epoch microseconds */
    int64_t duration_us;            /* start to last byte sent downstream (TCP: conn life) */
    int64_t request_duration_us;    /* start to last request byte received, -1 unset */
    int64_t request_tx_duration_us; /* start to last byte sent upstream, -1 unset */
    int64_t response_duration_us;   /* start to first upstream response byte, -1 unset */
    int64_t response_tx_duration_us;/* first upstream byte to last downstream byte, -1 unset */
    struct keel_str method;         /* :METHOD */
    struct keel_str path;           /* :PATH (origin-form, as received) */
    struct keel_str authority;      /* :AUTHORITY (Host) */
    struct keel_str scheme;         /* :SCHEME ("http") */
    struct keel_str protocol;       /* "HTTP/1.1", "HTTP/1.0", "HTTP/2": written unescaped */
    const struct keel_http_header *req_headers; /* as received, plus x-request-id if added */
    size_t n_req_headers;
    const struct keel_http_header *resp_headers; /* as received from upstream */
    size_t n_resp_headers;
    /* where the header of each id is (keel_http_request.first) or NULL: then found by a scan */
    const uint8_t *req_first, *resp_first;
    int status;                     /* 0: no response sent */
    uint32_t flags;                 /* enum keel_rf bits */
    struct keel_str code_details;   /* "via_upstream", "route_not_found", ... */
    struct keel_str termination_details;
    uint64_t bytes_received;        /* request body bytes (TCP: from downstream) */
    uint64_t bytes_sent;            /* response body bytes (TCP: to downstream) */
    uint64_t request_headers_bytes;
    uint64_t response_headers_bytes;
    uint64_t connection_id;
    uint32_t upstream_attempts;
    /* the four addresses: as keel_addr_format writes them (no byte that text logs escape:
     * written without the scan) */
    struct keel_str upstream_host;  /* "ip:port" of the upstream peer */
    struct keel_str upstream_cluster;
    struct keel_str upstream_local; /* "ip:port" of our side of the upstream connection */
    struct keel_str downstream_local;
    struct keel_str downstream_remote;
    struct keel_str route_name;
    struct keel_str request_id;     /* x-request-id as forwarded */
    /* the exchange's attribute bag, for %CEL(...)%; NULL: CEL operators render unset */
    const struct keel_attr_bag *bag;
    /* gRPC (content-type application/grpc*): grpc set, and what it saw */
    bool grpc;
    struct keel_str grpc_status;      /* grpc-status as received: "0".."16" */
    struct keel_str grpc_status_name; /* %GRPC_STATUS%: Envoy's CamelCase name ("NotFound") */
    struct keel_str grpc_message;
    uint64_t grpc_request_messages, grpc_response_messages;
};

enum keel_accesslog_encoding { KEEL_ACCESSLOG_TEXT, KEEL_ACCESSLOG_JSON };

/* Istio's current default text format (spec/access-logs-and-tracing.md §2.2). */
extern const char keel_accesslog_istio_text_format[];

struct keel_accesslog_format;

/* Compile a format. TEXT: an Envoy format string (a "\n" is appended when missing, as
 * Istio does). JSON: fmt is NULL for Istio's default JSON keys, or a JSON object mapping
 * keys to format strings. On error returns NULL and writes a message naming the column
 * to err. */
struct keel_accesslog_format *keel_accesslog_compile(const char *fmt,
                                                     enum keel_accesslog_encoding enc,
                                                     char *err, size_t errlen);
void keel_accesslog_format_free(struct keel_accesslog_format *f);
/* True when the format has %CEL(...)% operators: records rendered with it need their bag. */
bool keel_accesslog_uses_bag(const struct keel_accesslog_format *f);

/* Append one rendered line (with its newline) to out. Bytes from the request that are
 * control characters or not valid to print are escaped, never written raw. */
void keel_accesslog_render(const struct keel_accesslog_format *f,
                           const struct keel_access_record *r, struct keel_buf *out);

#endif
