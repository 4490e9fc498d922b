/* What the session files share: a downstream connection (struct session) and the
 * functions one part of its life calls in another.
 *   session.c          lifecycle, timers, dispatch (session_run), drain
 *   session_http.c     an HTTP/1.1 exchange: request head, routing, bodies, response
 *   session_tunnel.c   bytes both ways (TCP routes, WebSocket after 101)
 *   session_log.c      the access-log line and the telemetry report of an exchange
 *   h2_conn.c          an HTTP/2 connection: each stream is a virtual session (below)
 *   h2_upgrade.c       Upgrade: h2c turns an HTTP/1.1 connection into one of those */
#ifndef KEEL_PROXY_SESSION_INT_H
#define KEEL_PROXY_SESSION_INT_H

#include "proxy/proxy_int.h"

#include <sys/types.h>

#define HIGH_WATER (64 * 1024)   /* stop reading a side once its sink holds this much */
#define READ_CHUNK 16384

/* A side is read while its sink holds less than HIGH_WATER and has no send waiting for
 * the loop's batch: bytes read meanwhile would grow the sink past its pooled 16 KiB, to
 * be freed again once the batch went (a malloc and free per turn of a bulk transfer). */
static inline bool sink_has_room(const struct keel_io *io, const struct keel_buf *b)
{
    return keel_buf_len(b) < HIGH_WATER && !keel_io_send_queued(io);
}
#define TUNNEL_IDLE_TIMEOUT_MS (3600 * 1000)
#define FREE_SESSIONS_MAX 4096
#define FREE_HDR_TABLES_MAX 256

/* The header tables of one exchange (13 KiB, five times a session): attached when a
 * request head is parsed, given back to the worker when the exchange ends, so an idle
 * keep-alive connection costs only its session. */
struct hdr_tables {
    struct hdr_tables *next;
    struct keel_http_header req[KEEL_HTTP_MAX_HEADERS + 2];
    struct keel_http_header res[KEEL_HTTP_MAX_HEADERS + 1];
    struct keel_proxy_target passthrough; /* ALLOW_ANY: this exchange's original host */
    /* the exchange's identities (~1 KiB each): here rather than in every session, idle
     * keep-alive connections included */
    struct keel_peer peer, src_peer;
};

enum phase {
    PH_HEAD,        /* waiting for (the rest of) a request head */
    PH_CONNECT,     /* upstream connect in progress */
    PH_FORWARD,     /* request and response in flight */
    PH_REPLY,       /* sending a locally generated response */
    PH_TUNNEL,      /* bytes both ways (TCP route, upgraded HTTP) */
    PH_H2,          /* the connection speaks HTTP/2 (h2_conn.c) */
    PH_CLOSED,
};

/* session_trace.c: the trace context and span of the current exchange */
struct session_trace {
    struct keel_trace_ctx ctx;     /* this hop's span, as sent upstream */
    bool active;                   /* context headers are rewritten upstream */
    bool report;                   /* a span is queued when the exchange ends */
    bool linked;                   /* continued from an inbound request by the detector */
    int slot;                      /* in-flight registration + 1 (inbound); 0: none */
};

enum timer_role { T_NONE, T_IDLE, T_HEADERS, T_CONNECT, T_RESPONSE, T_BODY, T_TUNNEL };

struct session {
    struct keel_io io;
    struct keel_defer free_defer;
    struct keel_defer resume;      /* more work after a fairness yield */
    struct keel_timer timer;
    enum timer_role timer_role;
    int64_t last_activity_ms;
    struct worker *w;
    const struct listener_spec *spec;
    struct session *next, *prev;   /* worker's open sessions */
    struct keel_buf in, out;       /* from / to the client */
    struct upconn *u;
    enum phase phase;
    bool rdhup;                    /* client half-closed or reset */
    bool ds_eof, us_eof;           /* tunnel: FIN seen from the client / the upstream */
    bool draining;
    bool keepalive;                /* another request may follow on this connection */
    uint64_t conn_id;
    int64_t conn_start_us, conn_start_wall_us;
    struct keel_addr remote_addr, local_addr;
    char remote[KEEL_ADDR_STRLEN], local[KEEL_ADDR_STRLEN]; /* the same, as text for logs */
    size_t remote_ip_len;          /* "1.2.3.4" part of remote */
    size_t remote_len, local_len;  /* strlen of each, kept (no strlen per log line) */

    /* the current request */
    struct keel_buf head;          /* request head bytes, owned: slices point here */
    size_t head_scanned, rhead_scanned; /* in / u->in bytes known to hold no end of head */
    struct keel_http_header *hdrs; /* the exchange's header tables (session_attach_tables) */
    struct hdr_tables *tables;
    struct keel_http_request req;
    struct keel_http_meta meta;
    struct keel_str path;          /* origin-form path sent upstream */
    struct keel_str authority;
    const struct keel_proxy_target *target; /* where this exchange goes */
    struct worker_gen *wg;         /* the config generation this request started on */
    bool started;                  /* a request head has been taken */
    bool req_done;                 /* request body fully read and queued upstream */
    bool upgrade;                  /* asked to switch protocols */
    bool sent_continue;
    bool retried;
    bool up_write_failed;          /* the upstream refused the request's bytes: its answer,
                                    * if one came, is still read (session_http_forward) */
    uint64_t req_left;             /* Content-Length bytes still to come */
    struct keel_http_chunked req_chunked;
    char request_id[36];           /* a generated id */
    struct keel_str rid;           /* the id as forwarded: received, or request_id */
    bool generated_id;
    struct keel_peer *peer;        /* the other side's identity (session_peer); NULL: none */
    struct keel_peer *own_peer;    /* its storage without tables: TCP, or a reply before a
                                    * request head; kept until the session is freed */
    bool peer_from_registry;       /* peer filled from the registry endpoint (fallback) */
    struct keel_timer report_timer; /* TCP: periodic report while open (session_log.c) */
    uint64_t reported_rx, reported_tx; /* TCP: bytes already reported */
    struct keel_str svc_host, svc_name, svc_ns; /* the destination service */
    struct route_state rt;         /* VirtualService route, fault, retries (route.c) */
    struct session_trace tr;       /* tracing (session_trace.c) */

    /* the response */
    struct keel_buf rhead;
    struct keel_http_header *rhdrs;
    struct keel_http_response res;
    struct keel_http_meta rmeta;
    bool res_head_done;
    bool res_done;
    bool res_chunked_out;          /* we frame the body with chunked to the client */
    bool res_close_delimited;      /* the client body ends with our close */
    bool res_trailers_out;         /* the chunked trailer section to the client has begun */
    uint64_t res_left;
    struct keel_http_chunked res_chunked;
    char service_time[24];

    /* what the access log says */
    int status;
    uint32_t flags;
    const char *details;
    uint64_t bytes_received, bytes_sent, req_head_bytes, res_head_bytes;
    int64_t t_start_us, t_start_wall_us, t_req_done_us, t_upstream_sent_us, t_first_byte_us;
    uint32_t attempts;
    char up_host[KEEL_ADDR_STRLEN], up_local[KEEL_ADDR_STRLEN];
    size_t up_host_len, up_local_len;

    /* HTTP/2 (h2_conn.c). h2c: this connection speaks h2. h2s: this session is one
     * stream's exchange on such a connection: a virtual session, whose downstream "socket"
     * (io.fd == SESSION_VIRTUAL_FD) is the stream, read and written as HTTP/1.1 bytes so
     * that routing, retries, faults, timeouts and telemetry are the HTTP/1.1 ones. */
    struct h2_conn *h2c;
    struct h2_stream *h2s;
    bool h2_checked;               /* the first bytes were looked at for the h2 preface */

    /* gRPC (content-type application/grpc*): messages each way, the trailer section's
     * start (grpc-status, grpc-message) for telemetry; reset per exchange */
    bool grpc;
    struct keel_grpc_frames req_msgs, res_msgs;
    char trailers[256];
    size_t trailers_len;
};

#define SESSION_VIRTUAL_FD (-2)


#define LIT(s) (struct keel_str){ (s), sizeof(s) - 1 }

static inline struct server *session_srv(const struct session *s) { return s->w->srv; }
/* --stream-idle-timeout: the longest an exchange may go without a byte either way */
static inline int64_t session_stream_idle_ms(const struct session *s)
{
    return s->w->srv->opt->stream_idle_timeout_ms;
}
static inline void session_touch(struct session *s)
{
    s->last_activity_ms = keel_loop_now_ms(s->w->loop);
}

/* session.c */
void session_set_timer(struct session *s, enum timer_role role, int64_t ms);
void session_attach_tables(struct session *s);
/* The other side's identity as known so far (a "not present" one when none is). */
static inline const struct keel_peer *session_peer(const struct session *s)
{
    return s->peer != NULL ? s->peer : &keel_peer_none;
}
/* Storage to fill it: the exchange's tables, else own_peer. */
struct keel_peer *session_peer_slot(struct session *s);
ssize_t session_read(struct keel_io *io, struct keel_buf *b, size_t max);
ssize_t session_flush(struct keel_loop *l, struct keel_io *io, struct keel_buf *b);
void session_wait_request(struct session *s);
void session_close(struct session *s);
void session_drop_upstream(struct session *s);
void session_abort_exchange(struct session *s, uint32_t flag, const char *details);
void session_run(struct session *s);

/* session_http.c */
void session_local_reply(struct session *s, int status, uint32_t flags, const char *details,
                         const char *body, bool close_after);
void session_reject_malformed(struct session *s, const struct keel_http_perror *e);
void session_response_timeout(struct session *s);
bool session_http_head(struct session *s);
bool session_http_forward(struct session *s);
bool session_http_reply(struct session *s);
void session_http_proceed(struct session *s); /* routed: to the upstream (after a fault delay) */

/* session_trace.c */
void session_trace_begin(struct session *s);   /* routed: read the context, decide */
void session_trace_inject(struct session *s, struct keel_buf *b); /* upstream head lines */
void session_trace_end(struct session *s);     /* the exchange ended: queue the span */
void session_trace_reset(struct session *s);   /* between requests and at close */
/* A received header that session_trace_inject replaces. */
static inline bool session_trace_skip(const struct session *s, enum keel_hdr id)
{
    return s->tr.active && keel_trace_rewrites(&s->tr.ctx, id);
}

/* session_tunnel.c */
bool session_tunnel(struct session *s);

/* h2_conn.c */
int h2_conn_detect(struct session *s); /* 1: now PH_H2; 0: HTTP/1.x; KEEL_AGAIN: more bytes */
bool h2_conn_run(struct session *s);
bool h2_conn_start_upgraded(struct session *s, struct keel_str settings, bool head,
                            struct keel_buf *req);
/* h2_upgrade.c: an HTTP/1.1 request asking for Upgrade: h2c was taken (101 queued, the
 * connection now PH_H2, the request stream 1); false: serve it as HTTP/1.1 */
bool h2_upgrade_take(struct session *s);

void h2_conn_drain(struct session *s);
void h2_conn_free(struct session *s);
ssize_t h2_stream_read(struct session *vs, struct keel_buf *b, size_t max);
ssize_t h2_stream_flush(struct session *vs, struct keel_buf *b);
void h2_stream_detach(struct session *vs);
/* session.c: a session for one stream of an HTTP/2 connection */
struct session *session_start_virtual(struct session *parent, struct h2_stream *st);

/* session_grpc.c */
void session_grpc_fill(struct session *s, struct keel_access_record *r);

/* session_log.c */
void session_report(struct session *s, const struct keel_access_record *r, const char *tcp_event);
void session_report_stop(struct session *s); /* session_close: no more periodic reports */
void session_log_exchange(struct session *s);
void session_count_status(struct session *s);

#endif
