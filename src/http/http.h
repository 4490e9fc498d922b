/* HTTP/1.1 message heads: pure parsers (bytes in; consumed / need more / error with the
 * byte offset), no I/O and no allocation. Header names and values are slices of the
 * input, so the input must stay put while they are used. */
#ifndef KEEL_HTTP_HTTP_H
#define KEEL_HTTP_HTTP_H

#include "core/str.h"

#include <stdbool.h>
#include <stdint.h>

struct keel_http_header {
    struct keel_str name;
    struct keel_str value;
    uint8_t id; /* enum keel_hdr: set by the parser; KEEL_HDR_UNSET where built by hand */
};

/* The header names the request path looks for, each given an id once, by the parser: a
 * lookup is then a byte compare. A request's headers are otherwise compared by name a
 * dozen times over (framing, hop-by-hop, tracing, peer metadata, gRPC, the access log),
 * which made each header cost more to look at than to parse. Names in lower case. */
#define KEEL_HTTP_HEADER_IDS(X)                                        \
    X(HOST, "host")                                                    \
    X(CONTENT_LENGTH, "content-length")                                \
    X(TRANSFER_ENCODING, "transfer-encoding")                          \
    X(CONNECTION, "connection")                                        \
    X(KEEP_ALIVE, "keep-alive")                                        \
    X(PROXY_CONNECTION, "proxy-connection")                            \
    X(TE, "te")                                                        \
    X(TRAILER, "trailer")                                              \
    X(UPGRADE, "upgrade")                                              \
    X(EXPECT, "expect")                                                \
    X(CONTENT_TYPE, "content-type")                                    \
    X(USER_AGENT, "user-agent")                                        \
    X(X_REQUEST_ID, "x-request-id")                                    \
    X(X_FORWARDED_FOR, "x-forwarded-for")                              \
    X(X_FORWARDED_PROTO, "x-forwarded-proto")                          \
    X(X_ENVOY_ORIGINAL_PATH, "x-envoy-original-path")                  \
    X(X_ENVOY_UPSTREAM_SERVICE_TIME, "x-envoy-upstream-service-time")  \
    X(X_KEEL_PEER_METADATA, "x-keel-peer-metadata")                    \
    X(TRACEPARENT, "traceparent")                                      \
    X(B3, "b3")                                                        \
    X(X_B3_TRACEID, "x-b3-traceid")                                    \
    X(X_B3_SPANID, "x-b3-spanid")                                      \
    X(X_B3_PARENTSPANID, "x-b3-parentspanid")                          \
    X(X_B3_SAMPLED, "x-b3-sampled")                                    \
    X(X_B3_FLAGS, "x-b3-flags")

enum keel_hdr {
    KEEL_HDR_UNSET,       /* not classified: keel_http_hdr_id does it on the spot */
    KEEL_HDR_OTHER,       /* none of the names below */
#define KEEL_HDR_ENUM_(id, name) KEEL_HDR_##id,
    KEEL_HTTP_HEADER_IDS(KEEL_HDR_ENUM_)
#undef KEEL_HDR_ENUM_
    KEEL_HDR_X_B3_OTHER,  /* another x-b3-* name: a trace context header all the same */
    KEEL_HDR_COUNT
};

/* The id of a header name, any case (header_id.c). */
enum keel_hdr keel_http_header_id(struct keel_str name);

static inline enum keel_hdr keel_http_hdr_id(const struct keel_http_header *h)
{
    return h->id != KEEL_HDR_UNSET ? (enum keel_hdr)h->id : keel_http_header_id(h->name);
}

#define KEEL_HDR_BIT(id) (1ull << KEEL_HDR_##id)
/* Not forwarded (RFC 9110 §7.6.1), plus the ones keel regenerates or answers itself:
 * Content-Length from the framing it sends, Expect (keel sends the 100 Continue). */
#define KEEL_HDR_HOP_BY_HOP                                                                 \
    (KEEL_HDR_BIT(CONNECTION) | KEEL_HDR_BIT(KEEP_ALIVE) | KEEL_HDR_BIT(PROXY_CONNECTION) | \
     KEEL_HDR_BIT(TE) | KEEL_HDR_BIT(TRAILER) | KEEL_HDR_BIT(UPGRADE) | KEEL_HDR_BIT(EXPECT) | \
     KEEL_HDR_BIT(TRANSFER_ENCODING) | KEEL_HDR_BIT(CONTENT_LENGTH))
/* B3 and W3C trace context: replaced by each hop's own */
#define KEEL_HDR_TRACE_CONTEXT                                                          \
    (KEEL_HDR_BIT(TRACEPARENT) | KEEL_HDR_BIT(B3) | KEEL_HDR_BIT(X_B3_TRACEID) |        \
     KEEL_HDR_BIT(X_B3_SPANID) | KEEL_HDR_BIT(X_B3_PARENTSPANID) | KEEL_HDR_BIT(X_B3_SAMPLED) | \
     KEEL_HDR_BIT(X_B3_FLAGS) | KEEL_HDR_BIT(X_B3_OTHER))

/* Whether an id is in a set of KEEL_HDR_BIT()s. */
static inline bool keel_hdr_in(enum keel_hdr id, uint64_t set)
{
    return (set >> id) & 1;
}

static inline bool keel_http_hdr_in(const struct keel_http_header *h, uint64_t set)
{
    return keel_hdr_in(keel_http_hdr_id(h), set);
}

/* Why a head was rejected; the proxy maps these to 400/414/431/501/505. */
enum keel_http_perr {
    KEEL_HTTP_PERR_NONE,
    KEEL_HTTP_PERR_SYNTAX,       /* 400 */
    KEEL_HTTP_PERR_URI_TOO_LONG, /* 414 */
    KEEL_HTTP_PERR_HEADERS_TOO_LARGE, /* 431: bytes or count */
    KEEL_HTTP_PERR_VERSION,      /* 505 */
    KEEL_HTTP_PERR_NOT_IMPLEMENTED, /* 501: a transfer coding other than chunked */
};

struct keel_http_limits {
    size_t max_head_bytes;   /* request line + headers */
    size_t max_uri_bytes;    /* request target */
    size_t max_headers;      /* count */
};

struct keel_http_request {
    struct keel_str method;
    struct keel_str target;
    int minor;               /* HTTP/1.<minor> */
    struct keel_http_header *headers; /* caller's array, max_headers long */
    size_t n_headers;
    uint8_t first[KEEL_HDR_COUNT]; /* per header id: 1 + the index of its first header, 0: none */
};

struct keel_http_response {
    int minor;
    int status;
    struct keel_str reason;
    struct keel_http_header *headers;
    size_t n_headers;
    uint8_t first[KEEL_HDR_COUNT]; /* as in keel_http_request */
};

struct keel_http_perror {
    enum keel_http_perr kind;
    size_t offset;           /* byte offset of the offending byte */
    const char *what;        /* static text for the log line */
};

/* Whether p[0..len) holds the empty line that ends a head, looking only at bytes an
 * earlier call has not seen: *scanned is how far earlier calls got (0 at first); it is
 * set to len. A head that arrives in many small reads then costs linear time: parse it once
 * this says it is complete (picohttpparser's last_len idea). */
bool keel_http_head_complete(const char *p, size_t len, size_t *scanned);

/* Parse a request head from p[0..len). Returns the head length (> 0) when complete,
 * KEEL_AGAIN when more bytes are needed, KEEL_EINVAL with *e filled on error.
 * req->headers must have room for lim->max_headers entries. */
int keel_http_parse_request(const char *p, size_t len, const struct keel_http_limits *lim,
                            struct keel_http_request *req, struct keel_http_perror *e);
int keel_http_parse_response(const char *p, size_t len, const struct keel_http_limits *lim,
                             struct keel_http_response *res, struct keel_http_perror *e);

/* What the head says about framing and the connection (RFC 9112 §6). */
enum keel_http_body { KEEL_HTTP_BODY_NONE, KEEL_HTTP_BODY_LENGTH, KEEL_HTTP_BODY_CHUNKED,
                      KEEL_HTTP_BODY_EOF };

struct keel_http_meta {
    enum keel_http_body body;
    uint64_t content_length;
    bool conn_close;       /* Connection: close (or HTTP/1.0 without keep-alive) */
    bool conn_keep_alive;  /* Connection: keep-alive */
    bool conn_upgrade;     /* Connection: upgrade */
    bool expect_continue;  /* Expect: 100-continue */
    struct keel_str host;
    struct keel_str upgrade;
    struct keel_str request_id; /* x-request-id */
    bool xff;                   /* some x-forwarded-for header is present */
    bool te_codings;            /* Transfer-Encoding names codings besides chunked */
    struct keel_str xfp;        /* x-forwarded-proto */
    /* Connection header tokens other than close/keep-alive/upgrade name more hop-by-hop
     * headers; a bit per header index (heads have at most 128 headers). */
    uint64_t hop_mask[2];
};

#define KEEL_HTTP_MAX_HEADERS 128

/* Analyse a parsed request. Returns 0, or KEEL_EINVAL with e filled for a request that
 * must be refused with a close: 400 (PERR_SYNTAX) for smuggling (Content-Length together
 * with Transfer-Encoding, differing Content-Lengths, a Transfer-Encoding that does not end
 * in chunked or applies it twice, a bad Content-Length) and for a Host that is not
 * uri-host[:port]; 501 (PERR_NOT_IMPLEMENTED) for transfer codings other than chunked, as
 * nginx and Envoy do. A Content-Length of 0 stays BODY_LENGTH: it is forwarded. */
int keel_http_analyze_request(const struct keel_http_request *req, struct keel_http_meta *m,
                              struct keel_http_perror *e);
/* Same for a response to a request with method `method`. A Transfer-Encoding whose final
 * coding is not chunked makes the body close-delimited (RFC 9112 §6.3); te_codings tells
 * that codings other than chunked must be passed on (keel_http_te_strip_chunked). */
int keel_http_analyze_response(const struct keel_http_response *res, struct keel_str method,
                               struct keel_http_meta *m, struct keel_http_perror *e);

/* A Transfer-Encoding value without its final "chunked" coding (the codings the body
 * still carries once keel has removed or will redo the chunked framing). */
struct keel_str keel_http_te_strip_chunked(struct keel_str v);

/* Whether v is uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986 §3.2.2): a reg-name of
 * unreserved, pct-encoded and sub-delims characters, an IPv4 address, or an IP literal in
 * brackets. Empty is allowed (a Host for a target without authority). */
bool keel_http_authority_valid(struct keel_str v);

static inline bool keel_http_hop_marked(const struct keel_http_meta *m, size_t i)
{
    return i < 128 && (m->hop_mask[i / 64] >> (i % 64)) & 1;
}

/* Chunked transfer decoding, incremental: feed bytes, get data spans out. */
struct keel_http_chunked {
    bool want_trailers;   /* return trailer lines as KEEL_CHUNK_TRAILER spans (else dropped) */
    int state;
    uint64_t remaining;   /* bytes left in the current chunk */
    size_t line_bytes;    /* bytes of the current size/trailer line (bounded) */
    size_t trailer_bytes;
    bool trailer_cr;      /* the last piece ended in a trailer line's CR: LF must follow */
};

enum keel_chunk_result {
    KEEL_CHUNK_DATA = 1,  /* data_off, data_len: a span of body data inside p */
    KEEL_CHUNK_MORE = 2,  /* all of p consumed as framing; feed more */
    KEEL_CHUNK_DONE = 3,  /* last chunk and trailers consumed */
    KEEL_CHUNK_TRAILER = 4, /* data_off, data_len: bytes of trailer lines ("name: v\r\n"),
                             * a line possibly split over spans (want_trailers only) */
};

/* Consume from p[0..len). Returns a keel_chunk_result with *consumed set (bytes of p
 * that the caller may drop after using the data span), or KEEL_EINVAL on bad framing. */
int keel_http_chunked_step(struct keel_http_chunked *c, const char *p, size_t len,
                           size_t *consumed, size_t *data_off, size_t *data_len);

/* gRPC messages in a body (5-byte prefix: flag, 32-bit length): counted incrementally
 * from body bytes in any pieces (grpc.c). A message counts once its prefix is complete. */
struct keel_grpc_frames {
    uint64_t messages;
    uint64_t left;  /* bytes of the current message still to come */
    uint32_t len;   /* the length being read */
    uint8_t hdr;    /* prefix bytes seen of the next message */
};
void keel_grpc_frames_feed(struct keel_grpc_frames *f, const char *p, size_t n);

#endif
