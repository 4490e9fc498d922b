/* The sidecar proxy: inbound and outbound HTTP/1.1 listeners, TCP listeners, the admin
 * listener, N worker threads (SO_REUSEPORT, shared-nothing) and graceful drain. */
#ifndef KEEL_PROXY_PROXY_H
#define KEEL_PROXY_PROXY_H

#include "net/sock.h"
#include "telemetry/accesslog.h"

#include <stdbool.h>
#include <stdint.h>

struct keel_registry_workload;

/* An Envoy cluster name, "outbound|PORT|SUBSET|FQDN": a subset is a DNS label (63), an
 * FQDN 253 bytes, so the longest fits without truncating a telemetry label. */
#define KEEL_CLUSTER_MAX 352

/* Where a request or connection goes. */
struct keel_proxy_target {
    struct keel_addr addr;
    char addr_str[KEEL_ADDR_STRLEN];
    char cluster[KEEL_CLUSTER_MAX]; /* e.g. "outbound|9080||details" */
    /* the registry endpoint's workload (NULL: none): who the destination is when it did
     * not say (a local reply, TCP, an ambient workload behind a waypoint), as Istio falls
     * back to endpoint metadata */
    const struct keel_registry_workload *workload;
    bool h2;                       /* speaks HTTP/2 (h2c): a grpc/grpc-web/http2 port (h2_up.c) */
};

/* --route HOST[:PORT]=ADDR: an outbound request for HOST (and PORT, when given) goes to
 * target. */
struct keel_proxy_route {
    char host[128];
    size_t host_len;
    int port;                      /* 0: any port */
    struct keel_proxy_target target;
};

/* --tcp-route LISTEN=ADDR (outbound, reporter="source"), --tcp-inbound LISTEN=ADDR (in
 * front of the local app, reporter="destination") */
struct keel_proxy_tcp_route {
    bool inbound;
    struct keel_addr listen;
    char listen_str[KEEL_ADDR_STRLEN];
    struct keel_proxy_target target;
};

/* --role: what the outbound listener routes by (route.c). */
enum keel_proxy_role { KEEL_PROXY_SIDECAR, KEEL_PROXY_GATEWAY, KEEL_PROXY_WAYPOINT };

/* --report-mode: who runs the Mixer rules (mesh config mixerReportServer names a mixer).
 * AUTO: MIXER when a mixer is named, else LOCAL. */
enum keel_proxy_report_mode { KEEL_REPORT_AUTO, KEEL_REPORT_LOCAL, KEEL_REPORT_MIXER, KEEL_REPORT_BOTH };

struct keel_proxy_options {
    const char *inbound;           /* NULL: 127.0.0.1:15006; "" or "off": no inbound */
    const char *outbound;          /* NULL: 127.0.0.1:15001; "off": none */
    const char *admin;             /* NULL: 127.0.0.1:15000 */
    const char *upstream;          /* the local app, target of inbound */
    const char *config_dir;        /* NULL: ./keel.d when it exists */
    const char *workload;          /* NAME.NAMESPACE: who this sidecar is */
    enum keel_proxy_role role;     /* sidecar (default), gateway or waypoint */
    const char *cluster_id;        /* --cluster-id, else $ISTIO_META_CLUSTER_ID; NULL: the mesh
                                    * config's proxyMetadata, else Kubernetes */
    int upstream_protocol;         /* --upstream-protocol: 0 the registry's (the protocol of
                                    * --workload's port for the inbound listener), 1 http1,
                                    * 2 h2 (the app speaks HTTP/2, h2c) */
    bool telemetry_off;            /* no metrics or Mixer rules (access log unaffected) */
    bool io_uring_off;             /* read(2) and write(2) after epoll_wait: no io_uring */
    bool io_uring_writes_only;     /* batched writes, but reads are read(2) (no ring reads) */
    enum keel_proxy_report_mode report_mode;
    size_t metric_series_limit;    /* per metric family; 0: the registry's default */
    int64_t metric_expiry_ms;      /* drop series not updated for this long; 0: never */
    struct keel_proxy_route *routes;
    size_t n_routes;
    struct keel_proxy_tcp_route *tcp_routes;
    size_t n_tcp_routes;
    int concurrency;               /* 0: CPUs we may run on */
    const char *access_log;        /* path, NULL: none */
    const char *access_log_format; /* NULL: Istio default */
    enum keel_accesslog_encoding access_log_encoding;
    int64_t request_headers_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t connect_timeout_ms;
    int64_t upstream_timeout_ms;   /* 0: none */
    int64_t drain_timeout_ms;
    int64_t stream_idle_timeout_ms; /* no bytes either way during an exchange -> 408 SI */
    size_t max_connections;        /* per worker; above it new connections are closed at
                                    * once (Envoy's listener limit); 0: no limit */
    size_t max_request_headers_kb;
    size_t max_headers;
    size_t max_uri_bytes;
    const char *zipkin;            /* --zipkin ADDR: the collector, over the mesh config */
    bool trace_link_off;           /* --trace-link off: the detector only counts */
    bool trace_log;                /* --trace-missing-log: log each outbound without context */
};

void keel_proxy_options_defaults(struct keel_proxy_options *o);
/* Parse "HOST[:PORT]=ADDR" into r. 0 or KEEL_EINVAL. */
int keel_proxy_route_parse(const char *spec, struct keel_proxy_route *r);
int keel_proxy_tcp_route_parse(const char *spec, struct keel_proxy_tcp_route *r);
/* Run until SIGTERM/SIGINT or POST /quitquitquit, then drain. Returns the exit status. */
int keel_proxy_run(const struct keel_proxy_options *o);

#endif
