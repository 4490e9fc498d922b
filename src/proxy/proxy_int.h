/* What the files of src/proxy share: the server (process-wide, read-only once running),
 * workers (one thread and loop each), listeners, sessions (downstream connections) and
 * upstream connections. */
#ifndef KEEL_PROXY_INT_H
#define KEEL_PROXY_INT_H

#include "core/buf.h"
#include "core/loop.h"
#include "config/config.h"
#include "core/sink.h"
#include "http/http.h"
#include "proxy/peer.h"
#include "proxy/proxy.h"
#include "proxy/report.h"
#include "proxy/route.h"
#include "mixer/mixer.h"
#include "telemetry/engine.h"
#include "tracing/tracing.h"

#include <pthread.h>
#include <stdatomic.h>

enum listener_kind { LISTEN_INBOUND, LISTEN_OUTBOUND, LISTEN_TCP };

/* A listening address; each worker binds its own socket to it (SO_REUSEPORT). */
struct listener_spec {
    enum listener_kind kind;
    struct keel_addr addr;
    char addr_str[KEEL_ADDR_STRLEN];
    const struct keel_proxy_target *target; /* inbound: the app; tcp: the route's target */
    int target_index;                       /* index into server->targets */
    bool tcp_inbound;                       /* tcp: in front of the local app (--tcp-inbound) */
};

/* Per-worker counters: written only by their worker (relaxed stores), summed at scrape. */
#define PROXY_COUNTERS(X)                                                     \
    X(downstream_cx_total, "Downstream connections accepted")                 \
    X(downstream_cx_active, "Downstream connections open")                    \
    X(downstream_cx_overflow, "Connections closed at once over --max-connections") \
    X(downstream_cx_fd_exhausted, "Accepts failed for want of file descriptors") \
    X(downstream_rq_total, "HTTP requests received")                          \
    X(downstream_rq_1xx, "")                                                  \
    X(downstream_rq_2xx, "")                                                  \
    X(downstream_rq_3xx, "")                                                  \
    X(downstream_rq_4xx, "")                                                  \
    X(downstream_rq_5xx, "")                                                  \
    X(downstream_rq_none, "")                                                 \
    X(downstream_rq_bad, "Requests refused as malformed (400/414/431/505)")   \
    X(upstream_cx_total, "Upstream connections opened")                       \
    X(upstream_cx_reused, "Requests sent on a pooled upstream connection")    \
    X(upstream_cx_connect_fail, "Upstream connection failures")               \
    X(upstream_rq_timeout, "Upstream requests timed out")                     \
    X(upstream_rq_retry, "Requests retried after a stale pooled connection")  \
    X(upstream_rq_no_endpoint, "Requests for a service without endpoints")     \
    X(tcp_cx_total, "TCP proxy connections")                                  \
    X(tcp_bytes_received, "TCP proxy bytes from downstream")                  \
    X(tcp_bytes_sent, "TCP proxy bytes to downstream")                     \
    X(peer_metadata_rejected, "Peer metadata headers refused as invalid")     \
    X(trace_context_missing, "Outbound requests without trace context while an inbound one was in flight") \
    X(h2_cx_total, "Downstream HTTP/2 connections")                           \
    X(h2_streams_total, "Downstream HTTP/2 streams")                          \
    X(h2_rapid_reset, "HTTP/2 connections ended for too many RST_STREAM")     \
    X(h2_control_flood, "HTTP/2 connections ended for a SETTINGS/PING flood") \
    X(h2_headers_too_large, "HTTP/2 streams reset for a header list too large") \
    X(h2_continuation_flood, "HTTP/2 connections ended for a CONTINUATION flood") \
    X(h2_protocol_error, "HTTP/2 connections ended for a protocol error")     \
    X(h2_stream_refused, "HTTP/2 streams refused")

struct proxy_stats {
#define X(name, help) atomic_uint_fast64_t name;
    PROXY_COUNTERS(X)
#undef X
};

static inline void stat_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}
static inline void stat_sub(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

struct server;
struct session;
struct upconn;

/* An access-log destination (access_log.c): shared by generations with the same
 * settings, refcounted; the last reference closes the file. */
struct access_log {
    atomic_long refs;
    struct server *srv;
    char *path;
    enum keel_accesslog_encoding encoding;
    char *format_src;                  /* NULL: Istio's default */
    struct keel_accesslog_format *format;
    struct keel_sink *sink;
};

/* The upstream targets of one service port of the registry. */
struct gen_port {
    const struct keel_registry_port *rp;
    struct keel_proxy_target *targets;
    size_t n_targets;
};

/* A Telemetry API access log of a generation (access_log.c): where, on which side, and
 * behind which filter. */
struct gen_log {
    struct access_log *al;            /* a reference */
    const struct keel_expr *filter;   /* NULL: every exchange */
    bool client;                      /* outbound side; else inbound */
};

/* One config generation as the proxy uses it (gen.c). Immutable once published. */
struct proxy_gen {
    atomic_long refs;
    struct keel_config *cfg;                    /* an empty one without a config dir */
    const struct keel_registry_workload *self;  /* --workload, when found */
    struct report_identity identity;            /* self, as the bag wants it */
    struct keel_str_pair *self_labels;
    struct keel_buf metadata;                   /* our x-keel-peer-metadata value */
    char self_uid[300];
    const char *cluster_id;                     /* Istio's CLUSTER_ID of this proxy */
    const struct keel_registry_service *self_service; /* the first service we back */
    struct keel_str self_svc_host, self_svc_name, self_svc_ns; /* its names, measured once */
    struct keel_telemetry *tel;                 /* the telemetry plan of this config */
    struct access_log *log;                     /* NULL: no access log */
    struct gen_log *tlogs;                      /* Telemetry API access logs */
    size_t n_tlogs;
    bool tlogs_configured;                      /* then the mesh accessLogFile is "envoy" */
    size_t *port_base;                          /* per service: index of its first port */
    struct gen_port *ports;
    size_t n_ports;
    struct route_gen route;                     /* VirtualService targets, waypoints (route.c) */
    char self_ns[128];                          /* the namespace of --workload, found or not */
    char self_name[128];                        /* ... and its name (a waypoint's Gateway) */
    struct keel_trace_plan *trace;              /* tracing of this generation (tracing/plan.c) */
    bool inbound_h2;                            /* the app speaks HTTP/2: --workload's inbound
                                                 * port is grpc, grpc-web or http2 */
};

/* A worker's handle on a generation: users = requests in flight that started on it. */
struct worker_gen {
    struct proxy_gen *g;
    uint32_t users;
    struct worker_gen *next;
};

/* Idle upstream connections to one address, per worker. */
struct pool {
    struct keel_addr addr;
    struct upconn *idle;    /* LIFO: the most recently used is the most likely alive */
    size_t n_idle;
    size_t n_conns;         /* upconns of this pool not yet freed, idle ones included */
    struct h2_up *h2;       /* HTTP/2 connections to this address (h2_up.c) */
    struct pool *next;      /* hash chain */
};

#define POOL_BUCKETS 256

struct worker_listener {
    struct keel_io io;
    struct keel_io_pause pause;    /* accepting paused: out of file descriptors */
    const struct listener_spec *spec;
    struct worker *w;
};

struct worker {
    struct server *srv;
    int index;
    pthread_t thread;
    struct keel_loop *loop;
    struct keel_io wake;           /* eventfd: the main thread asks us to drain */
    struct worker_listener *listeners;
    size_t n_listeners;
    struct pool *pools[POOL_BUCKETS]; /* by upstream address */
    size_t n_pools;
    struct worker_gen *cur;        /* the generation new requests start on */
    struct worker_gen *retired;    /* older ones with requests still in flight */
    uint32_t rr;                   /* round-robin position over endpoints */
    struct session *sessions;      /* open sessions, for drain */
    struct session *free_sessions; /* recycled structs */
    struct upconn *free_upconns;
    struct hdr_tables *free_hdr_tables;
    size_t n_free_sessions, n_free_upconns, n_free_hdr_tables;
    uint64_t next_conn_id;
    bool draining;
    atomic_bool stopping;          /* set by the main thread at the drain deadline */
    struct keel_buf log;           /* access-log lines of this loop turn ... */
    uint64_t log_lines;
    struct access_log *log_target; /* ... for this destination (a reference) */
    struct proxy_stats stats;
    struct keel_telemetry_shard *tel;  /* metric series and stdio lines of this worker */
    struct report_scratch *report;     /* the attribute bag, refilled per report */
    struct keel_zipkin *zipkin;        /* spans of this worker, to the collector */
    struct keel_zipkin_stats zipkin_stats; /* read by the admin thread */
    struct keel_mixer_client *mixer;   /* reports to mixerReportServer (mixer_report.c) */
    struct keel_mixer_client_stats mixer_stats;
};

struct server {
    const struct keel_proxy_options *opt;
    struct keel_http_limits limits;
    struct keel_proxy_target *targets; /* inbound app first, then routes, then tcp */
    size_t n_targets;
    struct listener_spec *listeners;
    size_t n_listeners;
    struct keel_proxy_target app_h2;   /* targets[0] spoken to in HTTP/2 (h2_up.c) */
    struct keel_addr admin_addr;
    char admin_str[KEEL_ADDR_STRLEN];
    struct admin *admin;
    struct access_log *flag_log;   /* --access-log: every generation uses it */
    atomic_uint_fast64_t log_written_closed, log_dropped_closed; /* of closed logs */
    struct keel_metrics *metrics;      /* istio_* and keel_telemetry_* families */
    struct keel_sink *stdio_sinks[KEEL_TELEMETRY_N_STREAMS]; /* Mixer stdio handler output */
    struct worker *workers;
    int n_workers;
    atomic_bool ready;
    atomic_bool quit;              /* drain requested (signal or /quitquitquit) */
    int quit_efd;                  /* wakes the main loop on /quitquitquit */
    int done_efd;                  /* each worker adds 1 when its loop has ended */
    pthread_mutex_t gen_lock;      /* guards gen while a worker takes a ref */
    struct proxy_gen *gen;         /* the current generation (main thread writes) */
    struct keel_trace_inflight *inflight; /* inbound requests in flight (trace linking) */
};

/* gen.c */
struct proxy_gen *gen_new(struct server *srv, struct keel_config *cfg);
void gen_ref(struct proxy_gen *g);
void gen_unref(struct proxy_gen *g);
void gen_publish(struct server *srv, struct proxy_gen *g);
const struct gen_port *gen_port_of(const struct proxy_gen *g, const struct keel_registry_port *rp);
void worker_gen_switch(struct worker *w);
struct worker_gen *worker_gen_acquire(struct worker *w);
void worker_gen_release(struct worker *w, struct worker_gen *wg);
void worker_gen_fini(struct worker *w);

/* worker.c */
int worker_init(struct worker *w, struct server *srv, int index);
int worker_start(struct worker *w);
void worker_wake(struct worker *w); /* first call: drain; after w->stopping is set: stop */
void worker_fini(struct worker *w);
void worker_log_line(struct worker *w, struct access_log *al, const struct keel_access_record *r);

/* mixer_report.c: proxies in mixer mode (mesh config mixerReportServer) */
bool proxy_reports_to_mixer(const struct keel_proxy_options *o, const struct keel_config *cfg);
bool proxy_runs_rules(const struct keel_proxy_options *o, const struct keel_config *cfg);
void worker_mixer_report(struct worker *w, const struct keel_config *cfg, const struct keel_attr_bag *bag);

/* access_log.c */
struct access_log *access_log_open(struct server *srv, const char *path,
                                   enum keel_accesslog_encoding enc, const char *fmt);
bool access_log_is(const struct access_log *al, const char *path,
                   enum keel_accesslog_encoding enc, const char *fmt);
struct access_log *access_log_ref(struct access_log *al);
void access_log_unref(struct access_log *al);
void gen_telemetry_logs(struct server *srv, struct proxy_gen *g, const struct keel_telemetry_workload *self);
void gen_telemetry_logs_free(struct proxy_gen *g);

/* session.c: a downstream connection (HTTP or TCP) */
void session_start(struct worker *w, const struct listener_spec *spec, int fd,
                   const struct keel_addr *peer);
/* drain: close idle connections now, the others once their current request is done */
void sessions_drain(struct worker *w);
/* close every session now, logging exchanges in flight */
void sessions_abort(struct worker *w);
void sessions_free_recycled(struct worker *w);
void session_on_upstream(struct session *s);
/* upconn callbacks into the session */
void session_upstream_connected(struct session *s);
void session_upstream_failed(struct session *s, int err);

/* upstream.c */
struct upconn *upconn_acquire(struct worker *w, const struct keel_proxy_target *t,
                              struct session *s, bool fresh, int *err);
void upconn_release(struct upconn *u, bool reusable);
void upconn_pool_close_all(struct worker *w);
void upconn_free_recycled(struct worker *w);

struct upconn {
    struct keel_io io;
    struct keel_defer free_defer;
    struct keel_timer idle_timer;
    struct worker *w;
    struct pool *pool;
    struct session *s;           /* owner while in use; NULL while idle */
    struct upconn *next;         /* idle list / free list */
    struct keel_buf in, out;
    bool connected;
    bool reused;                 /* came from the pool */
    bool closed;
    char local[KEEL_ADDR_STRLEN];
    struct h2_ustream *h2s; /* an HTTP/2 stream (io.fd == UPCONN_VIRTUAL_FD), h2_up.c */
};

#define UPCONN_VIRTUAL_FD (-3)

/* upstream.c, for h2_up.c: a bare upconn for s (no socket), and its recycling */
struct upconn *upconn_new(struct worker *w, struct pool *p, struct session *s);
void upconn_recycle(struct upconn *u);

/* h2_up.c: HTTP/2 to upstreams whose target says h2: each request is a stream, many per
 * connection, connections shared per address and worker. The session sees an upconn that
 * reads and writes HTTP/1.1 bytes (io.fd == UPCONN_VIRTUAL_FD). */
struct upconn *h2_up_acquire(struct worker *w, struct pool *p, struct session *s, int *err);
void h2_up_release(struct upconn *u);
ssize_t h2_up_read(struct upconn *u, struct keel_buf *b, size_t max);
ssize_t h2_up_flush(struct upconn *u, struct keel_buf *b);
void h2_up_close_all(struct worker *w);
/* h2_conn.c / h2_up.c: free the calling worker thread's recycled stream records */
void h2_free_recycled(void);
void h2_up_free_recycled(void);

/* admin.c: the admin listener, served by the main thread's loop */
int admin_start(struct server *srv, struct keel_loop *loop);
void admin_stop(struct server *srv, struct keel_loop *loop);
void admin_stats_prometheus(struct server *srv, struct keel_buf *out);
void admin_config_dump(struct server *srv, struct keel_buf *out);

#endif
