/* Distributed tracing in the proxy: trace context (B3 multi and single header, W3C
 * traceparent), the tracing plan of a config generation (mesh config + Telemetry API),
 * span records and their Zipkin v2 JSON, the per-worker Zipkin reporter, and the table
 * of inbound requests in flight that the broken-propagation detector reads.
 * The layer sits between telemetry/ and proxy/: it uses core, http, net and config. */
#ifndef KEEL_TRACING_TRACING_H
#define KEEL_TRACING_TRACING_H

#include "config/config.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/str.h"
#include "http/http.h"
#include "net/sock.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------------------------ context (context.c) */

/* Which header families a request carried (bits). */
enum {
    KEEL_TRACE_FMT_B3 = 1,       /* x-b3-traceid / x-b3-spanid / ... */
    KEEL_TRACE_FMT_B3_SINGLE = 2, /* b3: */
    KEEL_TRACE_FMT_W3C = 4,      /* traceparent: */
};

struct keel_trace_ctx {
    uint64_t trace_hi;   /* upper 64 bits; 0 with a 64-bit trace id */
    uint64_t trace_lo;
    uint64_t span_id;
    uint64_t parent_id;  /* 0: none */
    int sampled;         /* -1: deferred, 0: deny, 1: accept */
    bool debug;          /* x-b3-flags: 1, b3 ...-d: forced */
    bool has_ids;        /* trace and span ids are valid (else only a sampling state) */
    bool trace128;       /* the trace id was received / is sent with 32 hex digits */
    uint8_t formats;     /* KEEL_TRACE_FMT_* that were found valid */
    uint8_t w3c_flags;   /* traceparent flags byte as received */
    bool w3c_foreign;    /* a valid traceparent of another trace than the B3 one: it is
                          * passed on unchanged, as Istio's Zipkin setup does */
};

/* Value parsers: p[0..len) is the header value (OWS already trimmed). 0, or KEEL_EINVAL
 * when malformed; *c is only written on success. They never read outside p[0..len). */
int keel_trace_hex_id(const char *p, size_t len, uint64_t *hi, uint64_t *lo);
int keel_trace_parse_b3_single(const char *p, size_t len, struct keel_trace_ctx *c);
int keel_trace_parse_traceparent(const char *p, size_t len, struct keel_trace_ctx *c);
int keel_trace_parse_sampled(const char *p, size_t len, int *sampled);

/* The context of a request from its headers: b3 wins over x-b3-*, which win over
 * traceparent (Zipkin's extraction order); a family with a malformed value is ignored as
 * a whole, the first occurrence of a repeated header counts. Never fails: c->has_ids
 * false means "start a new trace" (c->sampled / c->debug may still carry a decision). */
void keel_trace_extract(const struct keel_http_header *h, size_t n, struct keel_trace_ctx *c);
/* A header (its id, http.h) this module rewrites upstream (x-b3-*, b3, traceparent);
 * tracestate and the other vendors' headers pass unchanged. */
static inline bool keel_trace_is_context_header(enum keel_hdr id)
{
    return keel_hdr_in(id, KEEL_HDR_TRACE_CONTEXT);
}
/* Whether a proxy that propagates c replaces the received header upstream: every
 * context header but a foreign traceparent. */
static inline bool keel_trace_rewrites(const struct keel_trace_ctx *c, enum keel_hdr id)
{
    return id == KEEL_HDR_TRACEPARENT ? !c->w3c_foreign : keel_trace_is_context_header(id);
}

/* Header lines ("name: value\r\n") for c. B3 multi: sampled is sent as x-b3-sampled 1/0,
 * or x-b3-flags: 1 when debug. Return the bytes written (out must have
 * KEEL_TRACE_HEADERS_MAX bytes of room). */
#define KEEL_TRACE_HEADERS_MAX 320
size_t keel_trace_format_b3(const struct keel_trace_ctx *c, char *out);
size_t keel_trace_format_b3_single(const struct keel_trace_ctx *c, char *out);
size_t keel_trace_format_traceparent(const struct keel_trace_ctx *c, char *out);
/* Lower-case hex of v in 16 digits at out. */
void keel_trace_hex16(uint64_t v, char out[16]);

/* Envoy's random sampling on the request id: the first 8 hex digits modulo 10000 are
 * below round(percent * 100). Ids that are not 8+ hex digits draw a random number. */
bool keel_trace_sample(struct keel_str request_id, double percent);

/* ------------------------------------------------------------------ plan (plan.c) */

enum keel_trace_kind { KEEL_TRACE_CLIENT, KEEL_TRACE_SERVER };

enum keel_trace_tag_kind { KEEL_TRACE_TAG_LITERAL, KEEL_TRACE_TAG_ENV, KEEL_TRACE_TAG_HEADER };

struct keel_trace_custom_tag {
    char name[64];
    enum keel_trace_tag_kind kind;
    char value[128];    /* literal, or the environment value (its default when unset) */
    char header[64];    /* header name */
    char dflt[64];      /* header default */
};

#define KEEL_TRACE_MAX_CUSTOM_TAGS 8

/* What one kind of span (CLIENT for outbound and gateway, SERVER for inbound) does. */
struct keel_trace_mode {
    double sampling;    /* percent */
    bool report;        /* false: disableSpanReporting (context still propagated) */
    struct keel_trace_custom_tag tags[KEEL_TRACE_MAX_CUSTOM_TAGS];
    size_t n_tags;
};

/* Who the spans say they come from (Istio's Zipkin tracer setup). */
struct keel_trace_identity {
    char service_name[160];   /* <app>.<namespace> */
    char node_id[300];        /* sidecar~IP~name.ns~ns.svc.cluster.local */
    char canonical_service[128], canonical_revision[64], namespace[128];
    char ipv4[48];
};

/* The tracing of one config generation; immutable once built. */
struct keel_trace_plan {
    bool enabled;             /* mesh enableTracing and a collector */
    struct keel_trace_mode mode[2];
    char collector[300];      /* as configured: host:port */
    struct keel_addr addr;
    bool addr_ok;             /* collector resolved */
    size_t max_tag_len;       /* http.url path truncation (Zipkin provider maxTagLength) */
    char path[128];           /* where spans are POSTed (provider path, /api/v2/spans) */
    bool trace64;             /* new traces get 64-bit ids (provider enable64bitTraceId) */
    struct keel_trace_identity id;
};

struct keel_trace_plan_input {
    const struct keel_config *cfg;
    const char *ns;                       /* this workload's namespace ("default") */
    const char *name;                     /* workload name, NULL: unknown */
    const struct keel_config_kv *labels;  /* workload labels */
    size_t n_labels;
    const char *ip;                       /* workload address, NULL: unknown */
    const char *gateway;                  /* a Gateway this proxy is (targetRefs) */
    const char *role;                     /* "sidecar", "router" for node_id */
    const char *zipkin_override;          /* --zipkin ADDR, NULL: from config */
};

/* Never NULL; plan->enabled false when tracing is off or the collector unknown (a
 * warning then goes to diags when not NULL). Free with keel_trace_plan_free. */
struct keel_trace_plan *keel_trace_plan_new(const struct keel_trace_plan_input *in,
                                            struct keel_diag *diags);
void keel_trace_plan_free(struct keel_trace_plan *p);

/* ------------------------------------------------------------------ spans (span.c) */

/* One finished span: a fixed-size record (no pointers), filled on the request path and
 * encoded at flush. Strings are NUL-terminated and truncated to their field. */
struct keel_span {
    uint64_t trace_hi, trace_lo, id, parent_id;
    int64_t timestamp_us, duration_us;
    uint8_t kind;          /* enum keel_trace_kind */
    bool debug, trace128;
    uint16_t remote_port;  /* 0: unknown */
    int status;
    uint64_t request_size, response_size;
    char name[200];
    char local_service[160];
    char local_ipv4[48];
    char remote_ipv4[48];  /* "" unknown */
    char method[16], protocol[12];
    char url[300];
    char upstream_cluster[160];
    char request_id[64];
    char peer_address[64];
    char response_flags[48];
    char user_agent[128];
    char downstream_cluster[64];
    char node_id[300];
    char canonical_service[128], canonical_revision[64], namespace[128];
    uint8_t n_custom;
    struct {
        char name[64];
        char value[128];
    } custom[KEEL_TRACE_MAX_CUSTOM_TAGS];
};

/* Copy s[0..len) into a field of cap bytes, truncated, NUL-terminated. */
void keel_span_set(char *field, size_t cap, const char *s, size_t len);
#define KEEL_SPAN_SET(field, str) keel_span_set((field), sizeof(field), (str).p, (str).len)

/* Append sp as one Zipkin v2 JSON object. */
void keel_span_json(struct keel_buf *out, const struct keel_span *sp);

/* ------------------------------------------------------------------ reporter (reporter.c) */

/* Per worker: a ring of span records, flushed as a JSON array POSTed to /api/v2/spans
 * over one keep-alive connection driven by the worker's loop. */
struct keel_zipkin;

struct keel_zipkin_stats {
    atomic_uint_fast64_t sent, dropped, failed;
};

#define KEEL_ZIPKIN_RING 1024         /* spans queued per worker */
#define KEEL_ZIPKIN_BATCH 128         /* spans per POST at most */
#define KEEL_ZIPKIN_FLUSH_SPANS 32    /* flush as soon as this many wait */
#define KEEL_ZIPKIN_FLUSH_MS 1000     /* ... or this long after the first one */
#define KEEL_ZIPKIN_TIMEOUT_MS 5000   /* a POST without an answer */

/* st: the counters, owned by the caller so that they outlive the reporter. */
struct keel_zipkin *keel_zipkin_new(struct keel_loop *loop, struct keel_zipkin_stats *st);
/* Spans still queued count "dropped", a POST still unanswered "failed". */
void keel_zipkin_free(struct keel_zipkin *z);
/* Draining: send what is queued now rather than at the batch's time bound. True once
 * nothing is left to send or to be answered, or the collector is failing (then waiting
 * would only hold the shutdown up); call it again each loop turn until then. */
bool keel_zipkin_flush(struct keel_zipkin *z);
/* A slot for the next span, or NULL when the ring is full (the span is dropped and
 * counted). Commit it with keel_zipkin_commit once filled. */
struct keel_span *keel_zipkin_next(struct keel_zipkin *z);
/* Queue the slot keel_zipkin_next gave, to be POSTed to path at addr (the plan's). */
void keel_zipkin_commit(struct keel_zipkin *z, const struct keel_addr *addr, const char *path);

/* ------------------------------------------------------------------ in flight (inflight.c) */

/* The inbound requests in flight of this process, readable from every worker without a
 * lock: each worker writes only its own slots (under a sequence counter), readers scan.
 * The broken-propagation detector uses it to continue an outbound request's trace. */
struct keel_trace_inflight;

struct keel_trace_inflight *keel_trace_inflight_new(int n_workers);
void keel_trace_inflight_free(struct keel_trace_inflight *t);
/* Register an inbound request of worker w: returns its slot, or -1 when w's slots are
 * all taken (the request is then not found by lookups). */
int keel_trace_inflight_add(struct keel_trace_inflight *t, int w, struct keel_str request_id,
                            const struct keel_trace_ctx *server_span);
void keel_trace_inflight_remove(struct keel_trace_inflight *t, int w, int slot);
/* The inbound request with that x-request-id, or when request_id is empty (or not found)
 * and exactly one is in flight, that one. Returns the number of inbound requests in flight
 * (0: none, nothing found); *found tells whether c was filled. */
size_t keel_trace_inflight_find(struct keel_trace_inflight *t, struct keel_str request_id,
                                struct keel_trace_ctx *c, bool *found);

#endif
