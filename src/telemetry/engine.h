/* The telemetry engine: one request's attribute bag in, Istio's metrics and Mixer log
 * lines out (DESIGN.md "Data flow", steps 1-3). It sees the request only through the bag
 * (STYLE.md habit 1), so it runs the same in a sidecar, in `keel mixer` and in unit tests.
 *
 * Lifecycle:
 *   reg = keel_metrics_new()                      once per process (survives reloads)
 *   t   = keel_telemetry_new(cfg, reg, &self, d)  once per config generation: compiles
 *                                                 the plan (attributegen, standard metrics
 *                                                 with Telemetry overrides, Mixer rules)
 *   sh  = keel_telemetry_shard_new(reg)           once per worker thread, kept across reloads
 *   keel_telemetry_report(t, sh, bag)             per request / TCP report, on sh's thread
 *   lines: keel_telemetry_shard_output(sh, KEEL_TELEMETRY_STDOUT) -> submit + reset
 *   scrape: keel_metrics_scrape(reg, out)         any thread
 * Reload: build t2 from the new generation, publish it to the workers, free t after
 * every worker has moved on (t holds a reference on its config). The shard and the
 * registry are independent of t, so counters continue.
 *
 * The report path allocates nothing once warm (a new series, a first-time line-buffer
 * growth excepted), takes no lock and resolves no names: every attribute, label and
 * handler was bound to an index when the plan was built.
 *
 * Bag attributes read (see docs/TELEMETRY.md for the full table):
 *   context.protocol      absent, "http*", "grpc*" -> HTTP report; anything else -> TCP
 *   context.reporter.kind "outbound" -> reporter="source", Telemetry mode CLIENT;
 *                         "waypoint" -> reporter="waypoint", mode SERVER;
 *                         otherwise reporter="destination", mode SERVER
 *   connection.event      TCP: "open" counts a connection opened, "close" one closed;
 *                         connection.sent.bytes / received.bytes are deltas since the
 *                         previous report of the connection
 *   and, for labels, source.* / destination.* / request.* / response.* as documented. */
#ifndef KEEL_TELEMETRY_ENGINE_H
#define KEEL_TELEMETRY_ENGINE_H

#include "attr/attr.h"
#include "config/config.h"
#include "core/buf.h"
#include "telemetry/accesslog.h"
#include "telemetry/metrics.h"

#include <stdint.h>

/* Who this proxy is, for Telemetry and WasmPlugin scoping (selector / namespace /
 * root namespace / targetRefs). NULL self: namespace "default", no labels, no gateway. */
struct keel_telemetry_workload {
    const char *name;      /* workload name (informational) */
    const char *namespace; /* NULL = "default" */
    const struct keel_config_kv *labels;
    size_t n_labels;
    const char *gateway;   /* set when this proxy *is* a Gateway (ingress/waypoint) of that
                            * name in namespace: then targetRefs to it apply */
};

struct keel_telemetry;
struct keel_telemetry_shard;

/* The Telemetry resources that apply to self, weakest first: the root namespace's
 * selector-less one, then its namespace's (selector-less, no targetRef), then those that
 * select this workload by labels or name it (a Gateway) by targetRef(s). Up to cap go to
 * out; returns how many. */
size_t keel_telemetry_scope(const struct keel_config *cfg, const struct keel_telemetry_workload *self,
                            const struct keel_config_telemetry **out, size_t cap);

/* Compile the plan. Problems that drop a piece (a prometheus metric that conflicts with
 * a registered family, an unsupported stdio stream, ...) are warnings in diags (may be
 * NULL); the rest still runs. Never NULL. Takes a reference on cfg. */
struct keel_telemetry *keel_telemetry_new(const struct keel_config *cfg, struct keel_metrics *reg,
                                          const struct keel_telemetry_workload *self, struct keel_diag *diags);
void keel_telemetry_free(struct keel_telemetry *t);

/* What a plan runs. */
enum keel_telemetry_role {
    KEEL_TELEMETRY_PROXY,          /* everything (keel_telemetry_new) */
    KEEL_TELEMETRY_PROXY_NO_RULES, /* a proxy that ships its bags to a mixer: no Mixer rules */
    KEEL_TELEMETRY_MIXER,          /* keel mixer: Mixer rules only (no standard metrics), each
                                    * rule's dispatches counted (keel_telemetry_rule_dispatches_total) */
};
struct keel_telemetry *keel_telemetry_new_role(const struct keel_config *cfg, struct keel_metrics *reg,
                                               const struct keel_telemetry_workload *self,
                                               enum keel_telemetry_role role, struct keel_diag *diags);

struct keel_telemetry_shard *keel_telemetry_shard_new(struct keel_metrics *reg);
void keel_telemetry_shard_free(struct keel_telemetry_shard *sh);

/* True when no expression of t reads a bag (no attributegen, no rules, no tagOverrides
 * value): a report then reads only the attributes the standard labels and values are
 * derived from (standard_metrics.c), and the bag's filler may leave out the rest (the
 * header maps of responses, the uids). */
bool keel_telemetry_reads_fixed(const struct keel_telemetry *t);

/* Run steps 1-3 for one report. Sets bag's filter_state (attributegen output) to a map
 * held in sh: valid until the next report on sh. */
void keel_telemetry_report(const struct keel_telemetry *t, struct keel_telemetry_shard *sh,
                           struct keel_attr_bag *bag);

/* stdio handler output, per stream: complete lines ready for keel_sink_submit. The
 * caller drains it (submit, then buf.rpos = buf.wpos = 0, lines = 0) when it likes,
 * e.g. once per event-loop round. Handlers with logStream FILE/ROTATED_FILE write to
 * STDOUT (warning at plan time). */
enum { KEEL_TELEMETRY_STDOUT, KEEL_TELEMETRY_STDERR, KEEL_TELEMETRY_N_STREAMS };
struct keel_telemetry_output {
    struct keel_buf buf;
    uint64_t lines;
};
struct keel_telemetry_output *keel_telemetry_shard_output(struct keel_telemetry_shard *sh, int stream);

/* Once per event-loop turn on sh's thread: advance the shard's clock and, when
 * max_age_ns > 0, every max_age_ns / 2 drop the series not updated for max_age_ns. */
void keel_telemetry_shard_tick(struct keel_telemetry_shard *sh, uint64_t now_ns, uint64_t max_age_ns);
/* Expire now: series not updated for max_age_ns, or for their family's own max age
 * (keel_metrics_family_set_expiry; max_age_ns 0 = only those). On sh's thread. */
void keel_telemetry_shard_sweep(struct keel_telemetry_shard *sh, uint64_t max_age_ns);

/* How often an open TCP connection reports its bytes: the reportingInterval of the
 * Telemetry resources in scope (the most specific one that sets it wins), else Istio's
 * default, 5 s (KEEL_TELEMETRY_REPORTING_INTERVAL_MS). */
#define KEEL_TELEMETRY_REPORTING_INTERVAL_MS 5000

/* Telemetry API access logging (log_plan.c): one entry per provider and reporter side
 * that logs. The proxy opens a destination per distinct (path, encoding, format) and
 * writes a line when the side matches and the filter (CEL, compiled at load) is true. */
struct keel_telemetry_log {
    const char *provider;
    const char *path;
    enum keel_accesslog_encoding encoding;
    const char *format;        /* TEXT: the format string; JSON: a JSON object; NULL: Istio's */
    const struct keel_expr *filter; /* NULL: every exchange */
    bool client;               /* the client side (outbound, reporter="source"); else server */
};
#define KEEL_TELEMETRY_MAX_LOGS 32
/* Fill out (at most KEEL_TELEMETRY_MAX_LOGS). *configured: whether the Telemetry API or
 * defaultProviders.accessLogging speak about access logging for this proxy at all (then
 * the mesh's legacy accessLogFile no longer logs by itself: it is the "envoy" provider).
 * Strings point into cfg, except JSON formats built from labels, which go to *json (the
 * caller frees it after opening the logs). */
size_t keel_telemetry_access_logs(const struct keel_config *cfg, const struct keel_telemetry_workload *self,
                                  struct keel_telemetry_log *out, bool *configured, struct keel_buf *json,
                                  struct keel_diag *diags);
int64_t keel_telemetry_reporting_interval_ms(const struct keel_telemetry *t);

#endif
