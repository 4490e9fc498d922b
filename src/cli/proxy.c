/* keel proxy: the sidecar. Options map onto struct keel_proxy_options. */
#include "cli/commands.h"

#include "core/alloc.h"
#include "core/log.h"
#include "proxy/proxy.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: keel proxy [OPTIONS]\n"
    "\n"
    "  --inbound ADDR              inbound listener, in front of the app (127.0.0.1:15006; off)\n"
    "  --upstream ADDR             the local app that inbound requests go to\n"
    "  --upstream-protocol P       http1 or h2: how to speak to the app (h2c, for gRPC); default:\n"
    "                              h2 when --workload's inbound port is grpc/grpc-web/http2\n"
    "  --outbound ADDR             outbound listener, the app's HTTP proxy (127.0.0.1:15001; off)\n"
    "  --route HOST[:PORT]=ADDR    outbound destination (repeatable), checked before the registry\n"
    "  --config-dir DIR            Istio YAML resources, watched and reloaded (./keel.d if present)\n"
    "  --workload NAME.NAMESPACE   the WorkloadEntry this sidecar runs for (waypoint: its Gateway)\n"
    "  --role ROLE                 sidecar, gateway (Istio ingress: Gateway + VirtualService routes\n"
    "                              on --outbound) or waypoint (reporter=\"waypoint\") (sidecar)\n"
    "  --telemetry on|off          istio_* metrics and Mixer rules per request (on)\n"
    "  --report-mode MODE          local, mixer or both: where the Mixer rules run when the mesh\n"
    "                              config names a mixerReportServer (mixer; local without one)\n"
    "  --metric-series-limit N     series per metric before new ones are refused (10000)\n"
    "  --metric-expiry MS          drop metric series not updated for MS (0 = never)\n"
    "  --tcp-route LISTEN=ADDR     proxy a TCP port as bytes (repeatable), reporter=\"source\"\n"
    "  --tcp-inbound LISTEN=ADDR   a TCP port in front of the local app, reporter=\"destination\"\n"
    "  --cluster-id ID             source/destination_cluster ($ISTIO_META_CLUSTER_ID, Kubernetes)\n"
    "  --admin ADDR                admin listener (127.0.0.1:15000)\n"
    "  --concurrency N             worker threads (default: CPUs this process may use)\n"
    "  --io-uring on|writes|off    io_uring: on receives the sockets' bytes in the ring and\n"
    "                              sends a loop turn's writes in one call; writes: only the\n"
    "                              writes (reads are read(2)); off, or no io_uring here:\n"
    "                              read(2) and write(2)\n"
    "  --access-log PATH           access log file; /dev/stdout works\n"
    "  --access-log-format FMT     Envoy format string (default: Istio's)\n"
    "  --access-log-encoding ENC   TEXT or JSON (JSON default keys: Istio's)\n"
    "  --request-headers-timeout MS  time to receive a request head (10000) -> 408\n"
    "  --idle-timeout MS           keep-alive idle time of client connections (3600000)\n"
    "  --connect-timeout MS        upstream connect timeout (10000) -> 503 UF\n"
    "  --upstream-timeout MS       time to the upstream response head (15000, 0 = none) -> 504 UT\n"
    "  --drain-timeout MS          on SIGTERM, time given to requests in flight (5000)\n"
    "  --stream-idle-timeout MS    an exchange without a byte either way for MS (300000)\n"
    "                              -> 408 SI, or the connection closed once a response started\n"
    "  --max-connections N         client connections per worker; more are closed at once and\n"
    "                              counted in keel_downstream_cx_overflow_total (0 = no limit)\n"
    "  --max-request-headers-kb N  request head size limit (60) -> 431\n"
    "  --max-headers N             request header count limit (100, at most 128) -> 431\n"
    "  --max-uri-bytes N           request target length limit (8192) -> 414\n"
    "  --zipkin ADDR               Zipkin collector host:port for spans, over the mesh config's\n"
    "                              (defaultConfig.tracing.zipkin.address, zipkin.istio-system:9411)\n"
    "  --trace-link on|off         an outbound request without trace headers while an inbound one\n"
    "                              is in flight continues that inbound trace (on)\n"
    "  --trace-missing-log on|off  log such requests, at most once a second (off)\n"
    "  --log-level LEVEL           debug, info, warning, error (info)\n";

enum {
    OPT_INBOUND = 256, OPT_UPSTREAM, OPT_OUTBOUND, OPT_ROUTE, OPT_TCP_ROUTE, OPT_ADMIN,
    OPT_CONCURRENCY, OPT_ACCESS_LOG, OPT_ACCESS_LOG_FORMAT, OPT_ACCESS_LOG_ENCODING,
    OPT_HEADERS_TIMEOUT, OPT_IDLE_TIMEOUT, OPT_CONNECT_TIMEOUT, OPT_UPSTREAM_TIMEOUT,
    OPT_DRAIN_TIMEOUT, OPT_MAX_HEADERS_KB, OPT_MAX_HEADERS, OPT_MAX_URI, OPT_LOG_LEVEL,
    OPT_CONFIG_DIR, OPT_WORKLOAD, OPT_TELEMETRY, OPT_IO_URING, OPT_SERIES_LIMIT, OPT_METRIC_EXPIRY,
    OPT_STREAM_IDLE_TIMEOUT, OPT_MAX_CONNECTIONS, OPT_ROLE, OPT_TCP_INBOUND, OPT_CLUSTER_ID,
    OPT_ZIPKIN, OPT_TRACE_LINK, OPT_TRACE_LOG, OPT_UPSTREAM_PROTOCOL, OPT_REPORT_MODE,
};

static const struct option options[] = {
    { "inbound", required_argument, NULL, OPT_INBOUND },
    { "upstream", required_argument, NULL, OPT_UPSTREAM },
    { "outbound", required_argument, NULL, OPT_OUTBOUND },
    { "route", required_argument, NULL, OPT_ROUTE },
    { "tcp-route", required_argument, NULL, OPT_TCP_ROUTE },
    { "tcp-inbound", required_argument, NULL, OPT_TCP_INBOUND },
    { "cluster-id", required_argument, NULL, OPT_CLUSTER_ID },
    { "admin", required_argument, NULL, OPT_ADMIN },
    { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
    { "access-log", required_argument, NULL, OPT_ACCESS_LOG },
    { "access-log-format", required_argument, NULL, OPT_ACCESS_LOG_FORMAT },
    { "access-log-encoding", required_argument, NULL, OPT_ACCESS_LOG_ENCODING },
    { "request-headers-timeout", required_argument, NULL, OPT_HEADERS_TIMEOUT },
    { "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
    { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
    { "upstream-timeout", required_argument, NULL, OPT_UPSTREAM_TIMEOUT },
    { "drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT },
    { "max-request-headers-kb", required_argument, NULL, OPT_MAX_HEADERS_KB },
    { "max-headers", required_argument, NULL, OPT_MAX_HEADERS },
    { "max-uri-bytes", required_argument, NULL, OPT_MAX_URI },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "config-dir", required_argument, NULL, OPT_CONFIG_DIR },
    { "workload", required_argument, NULL, OPT_WORKLOAD },
    { "role", required_argument, NULL, OPT_ROLE },
    { "upstream-protocol", required_argument, NULL, OPT_UPSTREAM_PROTOCOL },
    { "telemetry", required_argument, NULL, OPT_TELEMETRY },
    { "io-uring", required_argument, NULL, OPT_IO_URING },
    { "report-mode", required_argument, NULL, OPT_REPORT_MODE },
    { "metric-series-limit", required_argument, NULL, OPT_SERIES_LIMIT },
    { "metric-expiry", required_argument, NULL, OPT_METRIC_EXPIRY },
    { "stream-idle-timeout", required_argument, NULL, OPT_STREAM_IDLE_TIMEOUT },
    { "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
    { "zipkin", required_argument, NULL, OPT_ZIPKIN },
    { "trace-link", required_argument, NULL, OPT_TRACE_LINK },
    { "trace-missing-log", required_argument, NULL, OPT_TRACE_LOG },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

/* An on|off switch into *off; false (and a message) for anything else. */
static bool parse_off(const char *opt, const char *arg, bool *off)
{
    if (strcmp(arg, "on") && strcmp(arg, "off")) {
        fprintf(stderr, "keel proxy: %s: on or off\n", opt);
        return false;
    }
    *off = !strcmp(arg, "off");
    return true;
}

int keel_cmd_proxy(int argc, char **argv)
{
    struct keel_proxy_options o;
    keel_proxy_options_defaults(&o);
    o.routes = keel_calloc((size_t)argc, sizeof(*o.routes));
    o.tcp_routes = keel_calloc((size_t)argc, sizeof(*o.tcp_routes));
    int rc = 2, c, idx;
    long long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, &idx)) != -1) {
        switch (c) {
        case OPT_INBOUND: o.inbound = optarg; break;
        case OPT_UPSTREAM: o.upstream = optarg; break;
        case OPT_OUTBOUND: o.outbound = optarg; break;
        case OPT_ADMIN: o.admin = optarg; break;
        case OPT_CONFIG_DIR: o.config_dir = optarg; break;
        case OPT_WORKLOAD: o.workload = optarg; break;
        case OPT_UPSTREAM_PROTOCOL:
            if (strcmp(optarg, "h2") != 0 && strcmp(optarg, "http1") != 0) {
                fprintf(stderr, "keel proxy: --upstream-protocol: http1 or h2\n");
                goto out;
            }
            o.upstream_protocol = !strcmp(optarg, "h2") ? 2 : 1;
            break;
        case OPT_ROLE:
            if (!strcmp(optarg, "sidecar")) {
                o.role = KEEL_PROXY_SIDECAR;
            } else if (!strcmp(optarg, "gateway")) {
                o.role = KEEL_PROXY_GATEWAY;
            } else if (!strcmp(optarg, "waypoint")) {
                o.role = KEEL_PROXY_WAYPOINT;
            } else {
                fprintf(stderr, "keel proxy: --role: sidecar, gateway or waypoint\n");
                goto out;
            }
            break;
        case OPT_TELEMETRY:
            if (!parse_off("--telemetry", optarg, &o.telemetry_off))
                goto out;
            break;
        case OPT_IO_URING:
            if (strcmp(optarg, "on") && strcmp(optarg, "writes") && strcmp(optarg, "off")) {
                fprintf(stderr, "keel proxy: --io-uring: on, writes or off\n");
                goto out;
            }
            o.io_uring_off = !strcmp(optarg, "off");
            o.io_uring_writes_only = !strcmp(optarg, "writes");
            break;
        case OPT_REPORT_MODE:
            if (!strcmp(optarg, "local")) {
                o.report_mode = KEEL_REPORT_LOCAL;
            } else if (!strcmp(optarg, "mixer")) {
                o.report_mode = KEEL_REPORT_MIXER;
            } else if (!strcmp(optarg, "both")) {
                o.report_mode = KEEL_REPORT_BOTH;
            } else {
                fprintf(stderr, "keel proxy: --report-mode: local, mixer or both\n");
                goto out;
            }
            break;
        case OPT_ROUTE:
            if (keel_proxy_route_parse(optarg, &o.routes[o.n_routes]) < 0) {
                fprintf(stderr, "keel proxy: --route '%s': want HOST[:PORT]=ADDR\n", optarg);
                goto out;
            }
            o.n_routes++;
            break;
        case OPT_CLUSTER_ID: o.cluster_id = optarg; break;
        case OPT_TCP_ROUTE:
        case OPT_TCP_INBOUND:
            o.tcp_routes[o.n_tcp_routes].inbound = c == OPT_TCP_INBOUND;
            if (keel_proxy_tcp_route_parse(optarg, &o.tcp_routes[o.n_tcp_routes]) < 0) {
                fprintf(stderr, "keel proxy: --tcp-route '%s': want LISTEN_ADDR=ADDR\n", optarg);
                goto out;
            }
            o.n_tcp_routes++;
            break;
        case OPT_ZIPKIN: o.zipkin = optarg; break;
        case OPT_TRACE_LINK:
        case OPT_TRACE_LOG:
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
                fprintf(stderr, "keel proxy: --%s: on or off\n", options[idx].name);
                goto out;
            }
            if (c == OPT_TRACE_LINK)
                o.trace_link_off = !strcmp(optarg, "off");
            else
                o.trace_log = !strcmp(optarg, "on");
            break;
        case OPT_ACCESS_LOG: o.access_log = optarg; break;
        case OPT_ACCESS_LOG_FORMAT: o.access_log_format = optarg; break;
        case OPT_ACCESS_LOG_ENCODING:
            if (!strcasecmp(optarg, "TEXT")) {
                o.access_log_encoding = KEEL_ACCESSLOG_TEXT;
            } else if (!strcasecmp(optarg, "JSON")) {
                o.access_log_encoding = KEEL_ACCESSLOG_JSON;
            } else {
                fprintf(stderr, "keel proxy: --access-log-encoding: TEXT or JSON\n");
                goto out;
            }
            break;
        case OPT_LOG_LEVEL:
            if (!strcmp(optarg, "debug")) keel_log_min = KEEL_LOG_DEBUG;
            else if (!strcmp(optarg, "info")) keel_log_min = KEEL_LOG_INFO;
            else if (!strcmp(optarg, "warning")) keel_log_min = KEEL_LOG_WARN;
            else if (!strcmp(optarg, "error")) keel_log_min = KEEL_LOG_ERROR;
            else {
                fprintf(stderr, "keel proxy: --log-level: debug, info, warning or error\n");
                goto out;
            }
            break;
        case OPT_CONCURRENCY:
        case OPT_HEADERS_TIMEOUT:
        case OPT_IDLE_TIMEOUT:
        case OPT_CONNECT_TIMEOUT:
        case OPT_UPSTREAM_TIMEOUT:
        case OPT_DRAIN_TIMEOUT:
        case OPT_MAX_HEADERS_KB:
        case OPT_MAX_HEADERS:
        case OPT_MAX_URI:
        case OPT_SERIES_LIMIT:
        case OPT_METRIC_EXPIRY:
        case OPT_STREAM_IDLE_TIMEOUT:
        case OPT_MAX_CONNECTIONS:
            if (keel_cli_number("proxy", options[idx].name, optarg,
                                c == OPT_UPSTREAM_TIMEOUT || c == OPT_METRIC_EXPIRY ||
                                        c == OPT_MAX_CONNECTIONS
                                    ? 0
                                    : 1,
                                LLONG_MAX, &v) < 0)
                goto out;
            switch (c) {
            case OPT_CONCURRENCY: o.concurrency = (int)v; break;
            case OPT_HEADERS_TIMEOUT: o.request_headers_timeout_ms = v; break;
            case OPT_IDLE_TIMEOUT: o.idle_timeout_ms = v; break;
            case OPT_CONNECT_TIMEOUT: o.connect_timeout_ms = v; break;
            case OPT_UPSTREAM_TIMEOUT: o.upstream_timeout_ms = v; break;
            case OPT_DRAIN_TIMEOUT: o.drain_timeout_ms = v; break;
            case OPT_MAX_HEADERS_KB: o.max_request_headers_kb = (size_t)v; break;
            case OPT_MAX_HEADERS: o.max_headers = (size_t)v; break;
            case OPT_SERIES_LIMIT: o.metric_series_limit = (size_t)v; break;
            case OPT_METRIC_EXPIRY: o.metric_expiry_ms = v; break;
            case OPT_STREAM_IDLE_TIMEOUT: o.stream_idle_timeout_ms = v; break;
            case OPT_MAX_CONNECTIONS: o.max_connections = (size_t)v; break;
            default: o.max_uri_bytes = (size_t)v; break;
            }
            break;
        case 'h':
            fputs(usage_text, stdout);
            rc = 0;
            goto out;
        default:
            fputs(usage_text, stderr);
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keel proxy: unexpected argument '%s'\n", argv[optind]);
        goto out;
    }
    rc = keel_proxy_run(&o);
out:
    free(o.routes);
    free(o.tcp_routes);
    return rc;
}
