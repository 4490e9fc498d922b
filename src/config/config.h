/* Configuration: Istio's YAML resources -> one immutable, refcounted generation.
 *
 * Loading (load.c) parses every document with libyaml into a small node tree that keeps
 * file:line:col (yaml.c), binds it to the typed structs below through schema tables
 * (schema.c, kinds.c: unknown keys, wrong types and missing fields are errors), then a
 * model step (model.c) resolves Mixer references, compiles every expression and builds
 * the service registry (registry.c). Everything a generation points to lives in its arena
 * and dies with its last reference. See docs/CONFIG.md. */
#ifndef KEEL_CONFIG_CONFIG_H
#define KEEL_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

struct keel_buf;
struct keel_expr;

/* ---- diagnostics ------------------------------------------------------------------ */

/* Collected "FILE:LINE:COL: error: MESSAGE" / "...: warning: ..." strings, in order. */
struct keel_diag {
    char **msgs;
    size_t n, cap;
    size_t errors, warnings;
};

void keel_diag_init(struct keel_diag *d);
void keel_diag_fini(struct keel_diag *d);
void keel_diag_error(struct keel_diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void keel_diag_warn(struct keel_diag *d, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- building blocks -------------------------------------------------------------- */

struct keel_config_pos {
    const char *file; /* as given to the loader; owned by the generation */
    int line, col;    /* 1-based; 0 when unknown */
};

enum keel_config_dialect { KEEL_CONFIG_CEXL, KEEL_CONFIG_CEL };

/* An expression field: its source text, where it was written, and the compiled form
 * (NULL while no expression compiler is linked in, or for an empty field). */
struct keel_config_expr {
    const char *src; /* NULL when the field was absent */
    struct keel_config_pos pos;
    struct keel_expr *compiled;
    int type; /* enum keel_value_type of the result; -1 unknown */
};

struct keel_config_name { /* a string that a diagnostic may need to point at */
    const char *s;
    struct keel_config_pos pos;
};

struct keel_config_kv { /* labels, selectors, ... */
    const char *key;
    const char *value;
    struct keel_config_pos pos;
};

struct keel_config_named_expr { /* dimensions, variables */
    const char *name;
    struct keel_config_expr expr;
};

/* ---- resources -------------------------------------------------------------------- */

enum keel_config_kind {
    KEEL_CONFIG_METRIC,      /* metric, or instance + compiledTemplate: metric */
    KEEL_CONFIG_LOGENTRY,    /* logentry, or instance + compiledTemplate: logentry */
    KEEL_CONFIG_PROMETHEUS,  /* prometheus, or handler + compiledAdapter: prometheus */
    KEEL_CONFIG_STDIO,       /* stdio, or handler + compiledAdapter: stdio */
    KEEL_CONFIG_RULE,
    KEEL_CONFIG_ATTRIBUTEMANIFEST,
    KEEL_CONFIG_TELEMETRY,
    KEEL_CONFIG_WASMPLUGIN,
    KEEL_CONFIG_SERVICE,
    KEEL_CONFIG_MESH,        /* ConfigMap istio, key mesh */
    KEEL_CONFIG_WORKLOADENTRY,
    KEEL_CONFIG_SERVICEENTRY,
    KEEL_CONFIG_GATEWAY,
    KEEL_CONFIG_VIRTUALSERVICE,   /* networking.istio.io */
    KEEL_CONFIG_DESTINATIONRULE,
    KEEL_CONFIG_ISTIO_GATEWAY,    /* networking.istio.io Gateway (the ingress kind) */
    KEEL_CONFIG_NAMESPACE,        /* v1 Namespace: its labels (istio.io/use-waypoint) */
    KEEL_CONFIG_DEPLOYMENT,       /* apps/v1: read by keel mesh, no effect in the proxy */
    KEEL_CONFIG_SERVICEACCOUNT,   /* v1: likewise */
    KEEL_CONFIG_KIND_COUNT
};

const char *keel_config_kind_name(enum keel_config_kind k); /* "metric", "Service", ... */

/* Common header of every resource. */
struct keel_config_object {
    struct keel_config_pos pos;  /* of the document's top mapping */
    enum keel_config_kind kind;
    const char *api_version;
    const char *kind_written;    /* "metric" or "instance", "prometheus" or "handler", ... */
    const char *name;
    struct keel_config_pos name_pos;
    const char *namespace;
    const char *fqn;             /* Mixer key name.kind.namespace (kind as written) */
    struct keel_config_kv *labels;
    size_t n_labels;
    struct keel_config_kv *annotations;
    size_t n_annotations;
    struct keel_config_object *next; /* next of the same kind, in load order */
    bool invalid;                    /* loader-internal: had errors (the load fails) */
};

/* metric template (mixer-config.md §3.2) */
struct keel_config_metric {
    struct keel_config_object obj;
    struct keel_config_expr value;
    struct keel_config_named_expr *dimensions;
    size_t n_dimensions;
    struct keel_config_expr monitored_resource_type;
    struct keel_config_named_expr *monitored_resource_dimensions;
    size_t n_monitored_resource_dimensions;
};

/* logentry template (§3.3) */
struct keel_config_logentry {
    struct keel_config_object obj;
    struct keel_config_named_expr *variables;
    size_t n_variables;
    struct keel_config_expr timestamp;
    struct keel_config_expr severity;
    struct keel_config_expr monitored_resource_type;
    struct keel_config_named_expr *monitored_resource_dimensions;
    size_t n_monitored_resource_dimensions;
};

enum keel_config_prom_kind {
    KEEL_CONFIG_PROM_UNSPECIFIED,
    KEEL_CONFIG_PROM_GAUGE,
    KEEL_CONFIG_PROM_COUNTER,
    KEEL_CONFIG_PROM_DISTRIBUTION
};

struct keel_config_prom_metric {
    struct keel_config_pos pos;
    const char *name;
    const char *namespace;       /* prefix, default "istio" */
    struct keel_config_name instance_name;
    const char *description;
    enum keel_config_prom_kind kind;
    struct keel_config_name *label_names;
    size_t n_label_names;
    /* buckets: explicit bounds, or linear / exponential parameters (DISTRIBUTION only).
     * bounds/n_bounds are always filled (defaults when none given) by the model step. */
    double *explicit_bounds;
    size_t n_explicit_bounds;
    struct { struct keel_config_pos pos; int64_t num_finite_buckets; double width, offset; } linear;
    struct { struct keel_config_pos pos; int64_t num_finite_buckets; double growth_factor, scale; } exponential;
    double *bounds;
    size_t n_bounds;
    const struct keel_config_metric *instance; /* resolved */
};

/* prometheus adapter (§6.1) */
struct keel_config_prometheus {
    struct keel_config_object obj;
    struct keel_config_prom_metric *metrics;
    size_t n_metrics;
    int64_t expiry_ms;       /* metricsExpirationPolicy.metricsExpiryDuration, 0 = none */
    int64_t expiry_check_ms; /* expiryCheckIntervalDuration, default expiry/2 */
};

enum keel_config_stdio_level { KEEL_CONFIG_LEVEL_INFO, KEEL_CONFIG_LEVEL_WARNING, KEEL_CONFIG_LEVEL_ERROR };
enum keel_config_stdio_stream {
    KEEL_CONFIG_STREAM_STDOUT, KEEL_CONFIG_STREAM_STDERR, KEEL_CONFIG_STREAM_FILE, KEEL_CONFIG_STREAM_ROTATED_FILE
};

struct keel_config_level_map {
    const char *severity;
    int level; /* enum keel_config_stdio_level */
};

/* stdio adapter (§6.3); defaults applied. */
struct keel_config_stdio {
    struct keel_config_object obj;
    int log_stream; /* enum keel_config_stdio_stream */
    struct keel_config_level_map *severity_levels; /* the default map when none given */
    size_t n_severity_levels;
    int metric_level;
    bool output_as_json;
    int output_level;
    const char *output_path;
    int64_t max_megabytes_before_rotation, max_days_before_rotation, max_rotated_files;
};

struct keel_config_action {
    struct keel_config_pos pos;
    struct keel_config_name handler;
    struct keel_config_name *instances;
    size_t n_instances;
    const char *name;
    /* resolved: a KEEL_CONFIG_PROMETHEUS or KEEL_CONFIG_STDIO object, and the
     * KEEL_CONFIG_METRIC / KEEL_CONFIG_LOGENTRY objects, in order */
    const struct keel_config_object *handler_obj;
    const struct keel_config_object **instance_objs;
};

struct keel_config_rule {
    struct keel_config_object obj;
    struct keel_config_expr match; /* src NULL or "" = always */
    struct keel_config_action *actions;
    size_t n_actions;
    bool in_default_namespace; /* applies to every report (mixer-config.md §4.4) */
};

/* ---- Telemetry API (telemetry-api.md §1-4) ---- */

enum keel_config_mode { KEEL_CONFIG_MODE_CLIENT_AND_SERVER, KEEL_CONFIG_MODE_CLIENT, KEEL_CONFIG_MODE_SERVER };
enum keel_config_std_metric {
    KEEL_CONFIG_ALL_METRICS, KEEL_CONFIG_REQUEST_COUNT, KEEL_CONFIG_REQUEST_DURATION,
    KEEL_CONFIG_REQUEST_SIZE, KEEL_CONFIG_RESPONSE_SIZE, KEEL_CONFIG_TCP_OPENED_CONNECTIONS,
    KEEL_CONFIG_TCP_CLOSED_CONNECTIONS, KEEL_CONFIG_TCP_SENT_BYTES, KEEL_CONFIG_TCP_RECEIVED_BYTES,
    KEEL_CONFIG_GRPC_REQUEST_MESSAGES, KEEL_CONFIG_GRPC_RESPONSE_MESSAGES
};
enum keel_config_tag_op { KEEL_CONFIG_TAG_UPSERT, KEEL_CONFIG_TAG_REMOVE };

struct keel_config_target_ref {
    struct keel_config_pos pos;
    const char *group, *kind, *name, *namespace;
};

struct keel_config_provider_ref {
    struct keel_config_pos pos;
    const char *name;
};

struct keel_config_tag_override {
    struct keel_config_pos pos;
    const char *tag;
    int operation;                /* enum keel_config_tag_op */
    struct keel_config_expr value; /* CEL */
};

struct keel_config_metric_override {
    struct keel_config_pos pos;
    bool has_match;
    int metric;                   /* enum keel_config_std_metric */
    const char *custom_metric;    /* set instead of metric */
    int mode;                     /* enum keel_config_mode */
    int disabled;                 /* -1 unset, 0, 1 */
    struct keel_config_tag_override *tags;
    size_t n_tags;
};

struct keel_config_telemetry_metrics {
    struct keel_config_pos pos;
    struct keel_config_provider_ref *providers;
    size_t n_providers;
    int64_t reporting_interval_ms; /* 0 = unset */
    struct keel_config_metric_override *overrides;
    size_t n_overrides;
};

struct keel_config_telemetry_logging {
    struct keel_config_pos pos;
    int mode;
    struct keel_config_provider_ref *providers;
    size_t n_providers;
    int disabled;                  /* -1 unset */
    struct keel_config_expr filter; /* CEL bool */
};

struct keel_config_custom_tag {
    struct keel_config_pos pos;
    const char *tag;
    const char *literal;           /* literal.value */
    const char *env_name, *env_default;
    const char *header_name, *header_default;
};

struct keel_config_telemetry_tracing {
    struct keel_config_pos pos;
    int mode;
    struct keel_config_provider_ref *providers;
    size_t n_providers;
    double random_sampling_percentage; /* < 0 = unset */
    int disable_span_reporting;        /* -1 unset */
    int use_request_id_for_trace_sampling;
    struct keel_config_custom_tag *custom_tags;
    size_t n_custom_tags;
};

struct keel_config_telemetry {
    struct keel_config_object obj;
    struct keel_config_kv *selector; /* selector.matchLabels */
    size_t n_selector;
    struct keel_config_target_ref *target_refs; /* targetRefs, or the singular targetRef */
    size_t n_target_refs;
    struct keel_config_target_ref *target_ref;  /* targetRef as written (model.c folds it in) */
    struct keel_config_telemetry_metrics *metrics;
    size_t n_metrics;
    struct keel_config_telemetry_logging *access_logging;
    size_t n_access_logging;
    struct keel_config_telemetry_tracing *tracing;
    size_t n_tracing;
};

/* ---- WasmPlugin: attributegen (telemetry-api.md §7) ---- */

struct keel_config_attrgen_match {
    struct keel_config_pos pos;
    const char *value;
    struct keel_config_expr condition; /* CEL bool; src NULL/"" = true */
};

struct keel_config_attrgen {
    struct keel_config_pos pos;
    const char *output_attribute;
    int phase; /* 0 AFTER_RESPONSE, 1 ON_REQUEST */
    struct keel_config_attrgen_match *match;
    size_t n_match;
};

struct keel_config_wasmplugin {
    struct keel_config_object obj;
    const char *url;
    const char *plugin_name;
    const char *phase;
    int64_t priority;
    bool is_attributegen; /* false: unsupported plugin, kept but not run */
    struct keel_config_kv *selector;
    size_t n_selector;
    struct keel_config_target_ref *target_refs;
    size_t n_target_refs;
    bool debug;
    struct keel_config_attrgen *attributes;
    size_t n_attributes;
};

/* ---- registry kinds ---- */

enum keel_proto {
    KEEL_PROTO_UNKNOWN, /* sniffed */
    KEEL_PROTO_HTTP,
    KEEL_PROTO_HTTP2,
    KEEL_PROTO_GRPC,
    KEEL_PROTO_GRPC_WEB,
    KEEL_PROTO_HTTP_PROXY,
    KEEL_PROTO_HTTPS,
    KEEL_PROTO_TLS,
    KEEL_PROTO_TCP,
    KEEL_PROTO_MONGO,
    KEEL_PROTO_REDIS,
    KEEL_PROTO_MYSQL,
    KEEL_PROTO_UDP,
};

const char *keel_proto_name(enum keel_proto p); /* "HTTP", "GRPC-Web", ... */
/* access-logs-and-tracing.md §6.1: the protocol of a Service port. */
enum keel_proto keel_proto_of_port(const char *name, const char *app_protocol, const char *l4_protocol, int port);
/* HTTP, HTTP2, GRPC, GRPC_WEB, HTTP_PROXY: the port gets L7 handling. */
bool keel_proto_is_http(enum keel_proto p);

struct keel_config_service_port {
    struct keel_config_pos pos;
    const char *name;
    int64_t port;
    int64_t target_port;          /* 0 when unset or named */
    const char *target_port_name; /* a named targetPort */
    const char *protocol;         /* L4: TCP (default), UDP, SCTP */
    const char *app_protocol;
};

struct keel_config_service {
    struct keel_config_object obj;
    struct keel_config_service_port *ports;
    size_t n_ports;
    struct keel_config_kv *selector;
    size_t n_selector;
    const char *type;
    const char *cluster_ip;
};

struct keel_config_workloadentry_spec {
    struct keel_config_pos pos;
    const char *address;
    struct keel_config_kv *ports; /* port name -> number (value as text), see ports_num */
    int64_t *ports_num;
    size_t n_ports;
    struct keel_config_kv *labels;
    size_t n_labels;
    const char *network, *locality, *service_account;
    int64_t weight;
};

struct keel_config_workloadentry {
    struct keel_config_object obj;
    struct keel_config_workloadentry_spec spec;
};

struct keel_config_se_port {
    struct keel_config_pos pos;
    int64_t number;
    const char *protocol;
    const char *name;
    int64_t target_port;
};

struct keel_config_serviceentry {
    struct keel_config_object obj;
    struct keel_config_name *hosts;
    size_t n_hosts;
    struct keel_config_name *addresses;
    size_t n_addresses;
    struct keel_config_se_port *ports;
    size_t n_ports;
    const char *location, *resolution;
    struct keel_config_kv *workload_selector;
    size_t n_workload_selector;
    struct keel_config_workloadentry_spec *endpoints;
    size_t n_endpoints;
};

struct keel_config_gateway_listener {
    struct keel_config_pos pos;
    const char *name, *hostname, *protocol;
    int64_t port;
};

struct keel_config_gateway {
    struct keel_config_object obj;
    const char *gateway_class_name;
    bool is_waypoint; /* gatewayClassName istio-waypoint */
    struct keel_config_gateway_listener *listeners;
    size_t n_listeners;
};

struct keel_config_attributemanifest {
    struct keel_config_object obj;
};

/* ---- mesh config (ConfigMap istio, key mesh; telemetry-api.md §5) ---- */

enum keel_config_log_encoding { KEEL_CONFIG_LOG_TEXT, KEEL_CONFIG_LOG_JSON };

struct keel_config_ext_provider {
    struct keel_config_pos pos;
    const char *name;
    enum { KEEL_CONFIG_PROVIDER_OTHER, KEEL_CONFIG_PROVIDER_PROMETHEUS, KEEL_CONFIG_PROVIDER_ZIPKIN,
           KEEL_CONFIG_PROVIDER_FILE_LOG } type;
    /* zipkin */
    const char *zipkin_service;
    int64_t zipkin_port;
    int64_t zipkin_max_tag_length;
    bool zipkin_enable_64bit_trace_id;
    const char *zipkin_path;
    /* envoyFileAccessLog */
    const char *log_path;
    const char *log_format_text;
    struct keel_config_kv *log_format_labels; /* JSON template; has_labels with 0 = default */
    size_t n_log_format_labels;
    bool has_log_format_labels;
    bool omit_empty_values;
};

/* outboundTrafficPolicy.mode, with Istio's enum values */
enum keel_config_outbound_mode { KEEL_CONFIG_REGISTRY_ONLY = 0, KEEL_CONFIG_ALLOW_ANY = 1 };

struct keel_config_mesh {
    struct keel_config_pos pos;  /* of the mesh string (or zero: built-in defaults) */
    int outbound_mode;           /* enum keel_config_outbound_mode; default ALLOW_ANY, as Istio */
    struct keel_config_kv *proxy_metadata; /* defaultConfig.proxyMetadata (ISTIO_META_CLUSTER_ID) */
    size_t n_proxy_metadata;
    const char *access_log_file; /* "" = off */
    int access_log_encoding;     /* enum keel_config_log_encoding */
    const char *access_log_format; /* "" = Istio default */
    bool enable_tracing;         /* default true */
    int h2_upgrade_policy;       /* h2UpgradePolicy: 0 DO_NOT_UPGRADE (default), 1 UPGRADE */
    double tracing_sampling;     /* defaultConfig.tracing.sampling; < 0 = unset */
    const char *zipkin_address;  /* defaultConfig.tracing.zipkin.address */
    const char *config_default_namespace; /* default istio-system */
    const char *root_namespace;  /* default istio-system */
    const char *mixer_report_server; /* mixerReportServer, "" = none */
    const char **default_metrics_providers;
    size_t n_default_metrics_providers;
    const char **default_tracing_providers;
    size_t n_default_tracing_providers;
    const char **default_access_logging_providers;
    size_t n_default_access_logging_providers;
    struct keel_config_ext_provider *extension_providers;
    size_t n_extension_providers;
};

/* ---- traffic routing resources (routing.c) ---- */

struct keel_config_string_match { /* Istio StringMatch: one of exact, prefix, regex */
    struct keel_config_pos pos;
    const char *exact, *prefix, *regex;
    struct keel_config_pos regex_pos;
};

struct keel_config_kv_match { /* headers / queryParams / withoutHeaders entry */
    const char *name;
    struct keel_config_string_match m;
};

struct keel_config_http_match {
    struct keel_config_pos pos;
    const char *name;
    struct keel_config_string_match uri, scheme, method, authority;
    struct keel_config_kv_match *headers;
    size_t n_headers;
    struct keel_config_kv_match *without_headers;
    size_t n_without_headers;
    struct keel_config_kv_match *query_params;
    size_t n_query_params;
    int64_t port;
    struct keel_config_kv *source_labels;
    size_t n_source_labels;
    bool ignore_uri_case;
};

struct keel_config_percent {
    double value;
};

struct keel_config_route_dest {
    struct keel_config_pos pos;
    struct keel_config_name host;
    const char *subset;
    struct keel_config_pos subset_pos;
    int64_t port;                 /* destination.port.number; 0 unset */
    int64_t weight;
    struct keel_config_pos weight_pos; /* line 0: no weight given */
};

struct keel_config_http_route {
    struct keel_config_pos pos;
    const char *name;
    struct keel_config_http_match *match;
    size_t n_match;
    struct keel_config_route_dest *route;
    size_t n_route;
    const char *rewrite_uri, *rewrite_authority;
    int64_t timeout_ms;
    struct keel_config_pos timeout_pos;
    struct keel_config_pos retries_pos; /* line 0: no retries */
    int64_t retry_attempts, per_try_timeout_ms;
    const char *retry_on;
    struct keel_config_pos retry_on_pos;
    struct keel_config_pos delay_pos, abort_pos;
    int64_t fixed_delay_ms, abort_status;
    struct keel_config_percent delay_pct, abort_pct;
    struct keel_config_pos delay_pct_pos, abort_pct_pos; /* line 0: 100% */
    int64_t delay_percent, abort_percent; /* the deprecated integer forms, -1 unset */
    struct keel_config_pos abort_status_pos;
};

struct keel_config_virtualservice {
    struct keel_config_object obj;
    struct keel_config_name *hosts;
    size_t n_hosts;
    struct keel_config_name *gateways;
    size_t n_gateways;
    struct keel_config_http_route *http;
    size_t n_http;
};

struct keel_config_subset {
    struct keel_config_pos pos;
    const char *name;
    struct keel_config_kv *labels;
    size_t n_labels;
};

/* trafficPolicy.connectionPool.http.h2UpgradePolicy, Istio's numbers */
enum keel_config_h2_upgrade { KEEL_CONFIG_H2_DEFAULT, KEEL_CONFIG_H2_DO_NOT_UPGRADE, KEEL_CONFIG_H2_UPGRADE };

struct keel_config_port_policy { /* trafficPolicy.portLevelSettings entry */
    int64_t port;
    int h2_upgrade; /* enum keel_config_h2_upgrade */
};

struct keel_config_traffic_policy { /* the parts keel uses; the rest is accepted */
    int h2_upgrade; /* enum keel_config_h2_upgrade */
    struct keel_config_port_policy *ports;
    size_t n_ports;
};

struct keel_config_destinationrule {
    struct keel_config_object obj;
    struct keel_config_name host;
    struct keel_config_subset *subsets;
    size_t n_subsets;
    struct keel_config_traffic_policy tp;
};

struct keel_config_gw_server {
    struct keel_config_pos pos;
    int64_t port_number;
    const char *port_name, *port_protocol;
    struct keel_config_name *hosts;
    size_t n_hosts;
    const char *name;
};

struct keel_config_istio_gateway {
    struct keel_config_object obj;
    struct keel_config_kv *selector;
    size_t n_selector;
    struct keel_config_gw_server *servers;
    size_t n_servers;
};

/* ---- the registry (registry.c) ---- */

struct keel_registry_workload;
struct keel_registry_service;

struct keel_registry_endpoint {
    const struct keel_registry_workload *workload; /* NULL for a ServiceEntry inline endpoint */
    const char *address;
    int port;
};

struct keel_registry_port {
    const struct keel_registry_service *service;
    const char *name;
    int port;
    int target_port;              /* 0: same as port, or named */
    const char *target_port_name;
    const char *app_protocol;
    enum keel_proto protocol;
    bool h2_upgrade; /* HTTP/1.1 to its sidecars goes as HTTP/2 (h2UpgradePolicy, routing.c) */
    struct keel_registry_endpoint *endpoints;
    size_t n_endpoints;
};

struct keel_registry_service {
    const char *name, *namespace;
    const char *fqdn; /* name.ns.svc.cluster.local, or the ServiceEntry host */
    const struct keel_config_object *source; /* Service or ServiceEntry */
    struct keel_registry_port *ports;
    size_t n_ports;
    const struct keel_config_kv *selector;
    size_t n_selector;
};

struct keel_registry_workload {
    const char *name, *namespace;
    const char *key; /* name.namespace */
    const char *address;
    const struct keel_config_kv *ports; /* name -> port */
    const int64_t *ports_num;
    size_t n_ports;
    const struct keel_config_kv *labels;
    size_t n_labels;
    const char *service_account;
    const struct keel_registry_service **services; /* the services it backs */
    size_t n_services;
    const struct keel_config_workloadentry *source;
};

/* ---- the generation ---------------------------------------------------------------- */

struct keel_config {
    _Atomic long refs;
    uint64_t generation;          /* 1, 2, ... per successful load in this process */
    uint64_t fingerprint;         /* of the files read (names, sizes, mtimes) */
    struct keel_config_object *first[KEEL_CONFIG_KIND_COUNT]; /* lists via obj.next */
    size_t count[KEEL_CONFIG_KIND_COUNT];
    struct keel_config_mesh mesh; /* defaults when no ConfigMap istio */
    struct keel_registry_service *services;
    size_t n_services;
    struct keel_registry_workload *workloads;
    size_t n_workloads;
    struct keel_routing *routing;  /* compiled VirtualServices (routing.c); never NULL once loaded */
    struct keel_config_impl *impl; /* arena, indexes, compiled expressions */
};

/* Load files or directories (every .yaml / .yml file, sorted; hidden files skipped). NULL
 * when any error was found; every error and warning is appended to diags. */
struct keel_config *keel_config_load_paths(const char *const *paths, size_t n, struct keel_diag *diags);

/* Load in-memory documents (name is what diagnostics print). */
struct keel_config_source {
    const char *name;
    const char *data;
    size_t len;
};
struct keel_config *keel_config_load_sources(const struct keel_config_source *src, size_t n,
                                             struct keel_diag *diags);

struct keel_config *keel_config_ref(struct keel_config *cfg);
void keel_config_unref(struct keel_config *cfg);

/* Look up a resource by kind, namespace and name (NULL if absent). */
const struct keel_config_object *keel_config_find(const struct keel_config *cfg, enum keel_config_kind k,
                                                  const char *ns, const char *name);
/* Mixer key lookup: "name.kind.namespace" as written (kind "metric", "instance", ...). */
const struct keel_config_object *keel_config_find_fqn(const struct keel_config *cfg, const char *fqn);

/* ---- documents as text (for keel apply) ---- */

/* One document of a multi-document YAML text: bytes [off, off+len) between "---" lines,
 * and who it defines ("" when it is not a resource: comments, a scrape config, ...). */
struct keel_config_doc {
    size_t off, len;
    char kind[64];
    char namespace[128]; /* "default" when omitted */
    char name[256];
};
/* Split data at lines starting with "---"; *out is malloc'ed (free it). Returns count. */
size_t keel_config_split_documents(const char *data, size_t len, struct keel_config_doc **out);

/* ---- reload ---- */

/* Build the next generation from paths. When the files are unchanged (same names, sizes,
 * mtimes) it returns keel_config_ref(old) without parsing. On failure returns NULL, counts
 * the failure and leaves old untouched: the caller keeps running on it. */
struct keel_config *keel_config_reload(struct keel_config *old, const char *const *paths, size_t n,
                                       struct keel_diag *diags);
uint64_t keel_config_reload_failures(void);
uint64_t keel_config_reload_successes(void);

/* inotify on a config dir. fd is non-blocking, readable when something changed;
 * keel_config_watch_changed drains it and says whether a .yaml/.yml file was
 * written, created, deleted or renamed into/out of the dir. */
struct keel_config_watch;
struct keel_config_watch *keel_config_watch_new(const char *dir);
int keel_config_watch_fd(const struct keel_config_watch *w);
bool keel_config_watch_changed(struct keel_config_watch *w);
void keel_config_watch_free(struct keel_config_watch *w);

/* ---- registry lookups ---- */

/* host: "details", "details:9080", "details.default", "details.default.svc",
 * "details.default.svc.cluster.local:9080" or a ServiceEntry host. Short names are
 * resolved in default_ns ("default" when NULL). A port in host wins over port; with
 * neither (port <= 0) the service's first port is chosen. NULL when nothing matches. */
const struct keel_registry_port *keel_registry_resolve(const struct keel_config *cfg, const char *host, size_t len,
                                                       int port, const char *default_ns);
/* "name.namespace" (or "name", meaning namespace default). */
const struct keel_registry_workload *keel_registry_workload(const struct keel_config *cfg, const char *key);

/* {"generation":N,"counts":{...},"services":[...],"workloads":[...]} for /config_dump. */
void keel_config_dump_json(const struct keel_config *cfg, struct keel_buf *out);

/* ---- compiled routing (routing.c, route_match.c) -------------------------------- */

struct keel_http_header;

enum keel_route_sm { KEEL_SM_ANY, KEEL_SM_EXACT, KEEL_SM_PREFIX, KEEL_SM_REGEX, KEEL_SM_PRESENT };

struct keel_route_strmatch {
    enum keel_route_sm kind;
    bool icase;
    const char *s;
    size_t len;
    const void *re; /* regex_t, anchored as Envoy's safe_regex (whole-string match) */
};

struct keel_route_kvmatch {
    struct keel_str name;
    struct keel_route_strmatch m;
    bool negate; /* withoutHeaders */
};

struct keel_route_match {
    struct keel_route_strmatch uri, method, authority, scheme;
    struct keel_route_kvmatch *headers;
    size_t n_headers;
    struct keel_route_kvmatch *query;
    size_t n_query;
    int port;                               /* 0: any */
    const struct keel_config_kv *source_labels;
    size_t n_source_labels;
};

/* Envoy retry_on conditions keel implements. */
enum {
    KEEL_RETRY_5XX = 1u << 0,
    KEEL_RETRY_GATEWAY_ERROR = 1u << 1,   /* 502, 503, 504 */
    KEEL_RETRY_CONNECT_FAILURE = 1u << 2,
    KEEL_RETRY_RESET = 1u << 3,
    KEEL_RETRY_RETRIABLE_4XX = 1u << 4,   /* 409 */
    KEEL_RETRY_REFUSED_STREAM = 1u << 5,  /* HTTP/2 only: accepted, never fires */
    KEEL_RETRY_503 = 1u << 6,             /* retriable-status-codes / unavailable: 503 */
};

struct keel_route_dest {
    size_t index;                           /* 0..routing->n_dests-1, for per-dest data */
    const char *host;                       /* as resolved (an FQDN) */
    const struct keel_registry_service *service; /* NULL: not in the registry -> 503 NC */
    int port;                               /* 0: the request's port if the service has it, else its first */
    const char *subset;                     /* NULL: every endpoint */
    const struct keel_config_kv *subset_labels;
    size_t n_subset_labels;
    bool subset_missing;                    /* no DestinationRule defines it -> 503 NC */
    uint32_t weight;
};

struct keel_route_http {
    const char *name;                       /* http[].name; "" when unnamed */
    struct keel_route_match *match;         /* any of; none: everything matches */
    size_t n_match;
    struct keel_route_dest *dests;
    size_t n_dests;
    uint32_t total_weight;
    const char *rewrite_uri, *rewrite_authority; /* NULL: none */
    size_t rewrite_uri_len;
    int64_t timeout_ms;                     /* 0: none (the listener's --upstream-timeout) */
    uint32_t retry_attempts;                /* 0: no retries */
    int64_t per_try_timeout_ms;
    uint32_t retry_on;                      /* KEEL_RETRY_* */
    int64_t delay_ms;
    uint32_t delay_ppm, abort_ppm;          /* parts per million of requests */
    int abort_status;                       /* 0: no abort */
};

struct keel_route_vs {
    const struct keel_config_virtualservice *vs;
    const char **hosts;                     /* FQDN, "*" or "*.suffix" (lower case) */
    size_t n_hosts;
    bool mesh;                              /* gateways absent or naming "mesh" */
    const char **gateways;                  /* "namespace/name" */
    size_t n_gateways;
    struct keel_route_http *http;
    size_t n_http;
};

struct keel_route_waypoint {                /* per registry service, same index */
    const struct keel_registry_workload *workload; /* NULL: no waypoint */
    int port;
};

struct keel_routing {
    struct keel_route_vs *vs;               /* load order */
    size_t n_vs;
    struct keel_route_dest **dests;         /* every destination, by index */
    size_t n_dests;
    struct keel_route_waypoint *waypoints;  /* [cfg->n_services] */
};

/* What a route decision looks at: slices of the request. */
struct keel_route_req {
    struct keel_str method, path, authority, scheme;
    const struct keel_http_header *headers;
    size_t n_headers;
    int port;
    const struct keel_config_kv *source_labels;
    size_t n_source_labels;
};

/* Does v own host (without port; fqdn: the registry service it resolved to, or NULL)? */
bool keel_route_vs_has_host(const struct keel_route_vs *v, struct keel_str host, const char *fqdn);
/* The first VirtualService bound to the mesh that owns host, or NULL. */
const struct keel_route_vs *keel_routing_mesh_vs(const struct keel_config *cfg, struct keel_str host,
                                                 const char *fqdn);
/* The VirtualServices bound to a networking Gateway whose selector matches labels, in
 * load order; *out is malloc'ed (the caller frees it). Returns the count. */
size_t keel_routing_gateway_vs(const struct keel_config *cfg, const struct keel_config_kv *labels, size_t n_labels,
                               const struct keel_route_vs ***out);
/* The first http route of v matching r (and in *which the match that did, NULL when the
 * route has none), or NULL: Istio answers 404 NR. Allocation-free. */
const struct keel_route_http *keel_route_select(const struct keel_route_vs *v, const struct keel_route_req *r,
                                                const struct keel_route_match **which);
/* A destination by weight; rnd is a uniform random number. */
const struct keel_route_dest *keel_route_pick(const struct keel_route_http *h, uint64_t rnd);
/* The path sent upstream after h's rewrite: writes at most cap bytes to out, returns the
 * length (0: no rewrite). which: the match that selected h. */
size_t keel_route_rewrite_path(const struct keel_route_http *h, const struct keel_route_match *which,
                               struct keel_str path, char *out, size_t cap);

#endif
