/* The kinds: one schema table per resource spec, and the envelope (apiVersion, kind,
 * metadata) that routes a document to its table. Adding a kind = a table + a row in
 * kinds[]. */
#include "config/config_int.h"

#include "core/alloc.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define END { 0 }

static const char *const prom_kinds[] = { "UNSPECIFIED", "GAUGE", "COUNTER", "DISTRIBUTION", NULL };
static const char *const levels[] = { "INFO", "WARNING", "ERROR", NULL };
static const char *const streams[] = { "STDOUT", "STDERR", "FILE", "ROTATED_FILE", NULL };
static const char *const modes[] = { "CLIENT_AND_SERVER", "CLIENT", "SERVER", NULL };
static const char *const std_metrics[] = {
    "ALL_METRICS", "REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES", "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES", NULL
};
static const char *const tag_ops[] = { "UPSERT", "REMOVE", NULL };
static const char *const encodings[] = { "TEXT", "JSON", NULL };
static const char *const outbound_modes[] = { "REGISTRY_ONLY", "ALLOW_ANY", NULL }; /* Istio's numbers */
static const char *const h2_upgrade_policies[] = { "DO_NOT_UPGRADE", "UPGRADE", NULL }; /* MeshConfig's */
static const char *const attrgen_phases[] = { "AFTER_RESPONSE", "ON_REQUEST", NULL };

/* ---- metric / logentry templates ---- */

#define M(f) offsetof(struct keel_config_metric, f)
static const struct keel_field metric_fields[] = {
    { .name = "value", .type = KEEL_FT_EXPR, .off = M(value) },
    { .name = "dimensions", .type = KEEL_FT_EXPRMAP, .off = M(dimensions), .off2 = M(n_dimensions) },
    { .name = "monitored_resource_type", .alt = "monitoredResourceType", .type = KEEL_FT_EXPR,
      .off = M(monitored_resource_type), .want = KEEL_WANT_STRING },
    { .name = "monitored_resource_dimensions", .alt = "monitoredResourceDimensions", .type = KEEL_FT_EXPRMAP,
      .off = M(monitored_resource_dimensions), .off2 = M(n_monitored_resource_dimensions) },
    END
};
#undef M
static const struct keel_config_schema metric_schema = { "metric spec", metric_fields, KEEL_UNKNOWN_ERROR, false };

#define L(f) offsetof(struct keel_config_logentry, f)
static const struct keel_field logentry_fields[] = {
    { .name = "variables", .type = KEEL_FT_EXPRMAP, .off = L(variables), .off2 = L(n_variables) },
    { .name = "timestamp", .type = KEEL_FT_EXPR, .off = L(timestamp), .want = KEEL_WANT_TIMESTAMP },
    { .name = "severity", .type = KEEL_FT_EXPR, .off = L(severity), .want = KEEL_WANT_STRING },
    { .name = "monitored_resource_type", .alt = "monitoredResourceType", .type = KEEL_FT_EXPR,
      .off = L(monitored_resource_type), .want = KEEL_WANT_STRING },
    { .name = "monitored_resource_dimensions", .alt = "monitoredResourceDimensions", .type = KEEL_FT_EXPRMAP,
      .off = L(monitored_resource_dimensions), .off2 = L(n_monitored_resource_dimensions) },
    END
};
#undef L
static const struct keel_config_schema logentry_schema = { "logentry spec", logentry_fields, KEEL_UNKNOWN_ERROR,
                                                           false };

/* ---- prometheus adapter ---- */

#define PM(f) offsetof(struct keel_config_prom_metric, f)
static const struct keel_field explicit_fields[] = {
    { .name = "bounds", .type = KEEL_FT_DBLLIST, .off = PM(explicit_bounds), .off2 = PM(n_explicit_bounds) },
    END
};
static const struct keel_config_schema explicit_schema = { "explicit_buckets", explicit_fields,
                                                           KEEL_UNKNOWN_ERROR, false };
static const struct keel_field linear_fields[] = {
    { .name = "num_finite_buckets", .alt = "numFiniteBuckets", .type = KEEL_FT_INT,
      .off = PM(linear.num_finite_buckets) },
    { .name = "width", .type = KEEL_FT_DOUBLE, .off = PM(linear.width) },
    { .name = "offset", .type = KEEL_FT_DOUBLE, .off = PM(linear.offset) },
    END
};
static const struct keel_config_schema linear_schema = { "linear_buckets", linear_fields, KEEL_UNKNOWN_ERROR,
                                                         false };
static const struct keel_field exp_fields[] = {
    { .name = "num_finite_buckets", .alt = "numFiniteBuckets", .type = KEEL_FT_INT,
      .off = PM(exponential.num_finite_buckets) },
    { .name = "growth_factor", .alt = "growthFactor", .type = KEEL_FT_DOUBLE, .off = PM(exponential.growth_factor) },
    { .name = "scale", .type = KEEL_FT_DOUBLE, .off = PM(exponential.scale) },
    END
};
static const struct keel_config_schema exp_schema = { "exponential_buckets", exp_fields, KEEL_UNKNOWN_ERROR, false };
static const struct keel_field buckets_fields[] = {
    { .name = "explicit_buckets", .alt = "explicitBuckets", .type = KEEL_FT_OBJ, .sub = &explicit_schema },
    { .name = "linear_buckets", .alt = "linearBuckets", .type = KEEL_FT_OBJ, .sub = &linear_schema,
      .pos_off = PM(linear.pos) },
    { .name = "exponential_buckets", .alt = "exponentialBuckets", .type = KEEL_FT_OBJ, .sub = &exp_schema,
      .pos_off = PM(exponential.pos) },
    END
};
static const struct keel_config_schema buckets_schema = { "buckets", buckets_fields, KEEL_UNKNOWN_ERROR, false };
static const struct keel_field prom_metric_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = PM(name) },
    { .name = "namespace", .type = KEEL_FT_STR, .off = PM(namespace) },
    { .name = "instance_name", .alt = "instanceName", .type = KEEL_FT_NAME, .off = PM(instance_name),
      .required = true },
    { .name = "description", .type = KEEL_FT_STR, .off = PM(description) },
    { .name = "kind", .type = KEEL_FT_ENUM, .off = PM(kind), .enum_names = prom_kinds, .required = true },
    { .name = "label_names", .alt = "labelNames", .type = KEEL_FT_NAMELIST, .off = PM(label_names),
      .off2 = PM(n_label_names) },
    { .name = "buckets", .type = KEEL_FT_OBJ, .sub = &buckets_schema },
    END
};
#undef PM
static const struct keel_config_schema prom_metric_schema = { "prometheus metric", prom_metric_fields,
                                                              KEEL_UNKNOWN_ERROR, true };

#define P(f) offsetof(struct keel_config_prometheus, f)
static const struct keel_field expiry_fields[] = {
    { .name = "metricsExpiryDuration", .alt = "metrics_expiry_duration", .type = KEEL_FT_DURATION,
      .off = P(expiry_ms), .required = true },
    { .name = "expiryCheckIntervalDuration", .alt = "expiry_check_interval_duration", .type = KEEL_FT_DURATION,
      .off = P(expiry_check_ms) },
    END
};
static const struct keel_config_schema expiry_schema = { "metricsExpirationPolicy", expiry_fields,
                                                         KEEL_UNKNOWN_ERROR, false };
static const struct keel_field prometheus_fields[] = {
    { .name = "metrics", .type = KEEL_FT_LIST, .off = P(metrics), .off2 = P(n_metrics), .sub = &prom_metric_schema,
      .elem_size = sizeof(struct keel_config_prom_metric) },
    { .name = "metricsExpirationPolicy", .alt = "metrics_expiration_policy", .type = KEEL_FT_OBJ,
      .sub = &expiry_schema },
    END
};
#undef P
static const struct keel_config_schema prometheus_schema = { "prometheus spec", prometheus_fields,
                                                             KEEL_UNKNOWN_ERROR, false };

/* ---- stdio adapter ---- */

static int bind_severity_levels(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_stdio *s = base;
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"severity_levels\": expected a mapping, got %s", keel_ynode_type_name(n));
        return -1;
    }
    int rc = 0;
    s->severity_levels = keel_config_arena_alloc(c->a, (n->n ? n->n : 1) * sizeof(*s->severity_levels));
    s->n_severity_levels = n->n;
    for (size_t i = 0; i < n->n; i++) {
        const struct keel_ynode *k = n->kids[2 * i], *v = n->kids[2 * i + 1];
        s->severity_levels[i].severity = k->str ? k->str : "";
        int lv = -1;
        if (v->type == KEEL_YNODE_SCALAR) {
            for (int j = 0; levels[j]; j++)
                if (!strcasecmp(v->str, levels[j]) || (v->str[0] == '0' + j && v->str[1] == '\0'))
                    lv = j;
        }
        if (lv < 0) {
            keel_config_err(c, v, "invalid level \"%s\" (expected INFO, WARNING, ERROR or 0-2)",
                            v->type == KEEL_YNODE_SCALAR ? v->str : "");
            rc = -1;
        }
        s->severity_levels[i].level = lv < 0 ? 0 : lv;
    }
    return rc;
}

#define S(f) offsetof(struct keel_config_stdio, f)
static const struct keel_field stdio_fields[] = {
    { .name = "log_stream", .alt = "logStream", .type = KEEL_FT_ENUM, .off = S(log_stream), .enum_names = streams },
    { .name = "severity_levels", .alt = "severityLevels", .type = KEEL_FT_CUSTOM, .fn = bind_severity_levels },
    { .name = "metric_level", .alt = "metricLevel", .type = KEEL_FT_ENUM, .off = S(metric_level),
      .enum_names = levels },
    { .name = "output_as_json", .alt = "outputAsJson", .type = KEEL_FT_BOOL, .off = S(output_as_json) },
    { .name = "output_level", .alt = "outputLevel", .type = KEEL_FT_ENUM, .off = S(output_level),
      .enum_names = levels },
    { .name = "output_path", .alt = "outputPath", .type = KEEL_FT_STR, .off = S(output_path) },
    { .name = "max_megabytes_before_rotation", .alt = "maxMegabytesBeforeRotation", .type = KEEL_FT_INT,
      .off = S(max_megabytes_before_rotation) },
    { .name = "max_days_before_rotation", .alt = "maxDaysBeforeRotation", .type = KEEL_FT_INT,
      .off = S(max_days_before_rotation) },
    { .name = "max_rotated_files", .alt = "maxRotatedFiles", .type = KEEL_FT_INT, .off = S(max_rotated_files) },
    END
};
#undef S
static const struct keel_config_schema stdio_schema = { "stdio spec", stdio_fields, KEEL_UNKNOWN_ERROR, false };

static void stdio_defaults(struct keel_config_ctx *c, struct keel_config_stdio *s)
{
    static const struct { const char *sev; int lv; } def[] = {
        { "INFORMATIONAL", 0 }, { "informational", 0 }, { "INFO", 0 }, { "info", 0 },
        { "WARNING", 1 }, { "warning", 1 }, { "WARN", 1 }, { "warn", 1 },
        { "ERROR", 2 }, { "error", 2 }, { "ERR", 2 }, { "err", 2 }, { "FATAL", 2 }, { "fatal", 2 },
    };
    size_t n = sizeof(def) / sizeof(def[0]);
    s->severity_levels = keel_config_arena_alloc(c->a, n * sizeof(*s->severity_levels));
    for (size_t i = 0; i < n; i++) {
        s->severity_levels[i].severity = def[i].sev;
        s->severity_levels[i].level = def[i].lv;
    }
    s->n_severity_levels = n;
    s->output_as_json = true;
    s->output_path = "";
    s->max_megabytes_before_rotation = 100;
    s->max_days_before_rotation = 30;
    s->max_rotated_files = 1000;
}

/* ---- rule ---- */

#define A(f) offsetof(struct keel_config_action, f)
static const struct keel_field action_fields[] = {
    { .name = "handler", .type = KEEL_FT_NAME, .off = A(handler), .required = true },
    { .name = "instances", .type = KEEL_FT_NAMELIST, .off = A(instances), .off2 = A(n_instances), .required = true },
    { .name = "name", .type = KEEL_FT_STR, .off = A(name) },
    END
};
#undef A
static const struct keel_config_schema action_schema = { "rule action", action_fields, KEEL_UNKNOWN_ERROR, true };

#define R(f) offsetof(struct keel_config_rule, f)
static const struct keel_field rule_fields[] = {
    { .name = "match", .type = KEEL_FT_EXPR, .off = R(match), .want = KEEL_WANT_BOOL },
    { .name = "actions", .type = KEEL_FT_LIST, .off = R(actions), .off2 = R(n_actions), .sub = &action_schema,
      .elem_size = sizeof(struct keel_config_action) },
    { .name = "requestHeaderOperations", .alt = "request_header_operations", .type = KEEL_FT_ANY },
    { .name = "responseHeaderOperations", .alt = "response_header_operations", .type = KEEL_FT_ANY },
    { .name = "sampling", .type = KEEL_FT_ANY },
    END
};
#undef R
static const struct keel_config_schema rule_schema = { "rule spec", rule_fields, KEEL_UNKNOWN_ERROR, false };

/* ---- Telemetry ---- */

static const struct keel_field selector_fields[] = {
    { .name = "matchLabels", .alt = "match_labels", .type = KEEL_FT_KVMAP, .off = 0,
      .off2 = sizeof(struct keel_config_kv *) },
    END
};
/* binds into a { kv *; size_t n; } pair */
static const struct keel_config_schema selector_schema = { "selector", selector_fields, KEEL_UNKNOWN_ERROR, false };
static const struct keel_field wlsel_fields[] = {
    { .name = "labels", .type = KEEL_FT_KVMAP, .off = 0, .off2 = sizeof(struct keel_config_kv *) },
    END
};
static const struct keel_config_schema wlsel_schema = { "workloadSelector", wlsel_fields, KEEL_UNKNOWN_ERROR, false };

#define TR(f) offsetof(struct keel_config_target_ref, f)
static const struct keel_field target_ref_fields[] = {
    { .name = "group", .type = KEEL_FT_STR, .off = TR(group) },
    { .name = "kind", .type = KEEL_FT_STR, .off = TR(kind), .required = true },
    { .name = "name", .type = KEEL_FT_STR, .off = TR(name), .required = true },
    { .name = "namespace", .type = KEEL_FT_STR, .off = TR(namespace) },
    END
};
#undef TR
static const struct keel_config_schema target_ref_schema = { "targetRef", target_ref_fields, KEEL_UNKNOWN_ERROR,
                                                             true };
static const struct keel_field provider_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = offsetof(struct keel_config_provider_ref, name), .required = true },
    END
};
static const struct keel_config_schema provider_schema = { "provider", provider_fields, KEEL_UNKNOWN_ERROR, true };

static int bind_override_match(struct keel_config_ctx *c, const struct keel_ynode *n, void *base);

static int bind_tag_overrides(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_metric_override *o = base;
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"tagOverrides\": expected a mapping, got %s", keel_ynode_type_name(n));
        return -1;
    }
    static const struct keel_field tag_fields[] = {
        { .name = "operation", .type = KEEL_FT_ENUM, .off = offsetof(struct keel_config_tag_override, operation),
          .enum_names = tag_ops },
        { .name = "value", .type = KEEL_FT_EXPR, .off = offsetof(struct keel_config_tag_override, value),
          .lang = KEEL_LANG_CEL },
        END
    };
    static const struct keel_config_schema tag_schema = { "tagOverride", tag_fields, KEEL_UNKNOWN_ERROR, true };
    int rc = 0;
    o->tags = keel_config_arena_alloc(c->a, (n->n ? n->n : 1) * sizeof(*o->tags));
    o->n_tags = n->n;
    for (size_t i = 0; i < n->n; i++) {
        const struct keel_ynode *k = n->kids[2 * i], *v = n->kids[2 * i + 1];
        struct keel_config_tag_override *t = &o->tags[i];
        t->tag = k->str ? k->str : "";
        if (keel_ynode_is_null(v)) {
            keel_config_err(c, k, "tag \"%s\": an UPSERT needs a value", t->tag);
            rc = -1;
            continue;
        }
        if (keel_config_bind(c, &tag_schema, v, t) < 0) {
            rc = -1;
            continue;
        }
        if (t->operation == KEEL_CONFIG_TAG_UPSERT && (t->value.src == NULL || t->value.src[0] == '\0')) {
            keel_config_err(c, v, "tag \"%s\": an UPSERT needs a value", t->tag);
            rc = -1;
        } else if (t->operation == KEEL_CONFIG_TAG_REMOVE && t->value.src != NULL) {
            keel_config_err_at(c, &t->value.pos, "tag \"%s\": REMOVE takes no value", t->tag);
            rc = -1;
        }
    }
    return rc;
}

#define MO(f) offsetof(struct keel_config_metric_override, f)
static const struct keel_field override_fields[] = {
    { .name = "match", .type = KEEL_FT_CUSTOM, .fn = bind_override_match },
    { .name = "disabled", .type = KEEL_FT_BOOL3, .off = MO(disabled) },
    { .name = "tagOverrides", .alt = "tag_overrides", .type = KEEL_FT_CUSTOM, .fn = bind_tag_overrides },
    END
};
static const struct keel_config_schema override_schema = { "metrics override", override_fields,
                                                           KEEL_UNKNOWN_ERROR, true };
static const struct keel_field override_match_fields[] = {
    { .name = "metric", .type = KEEL_FT_ENUM, .off = MO(metric), .enum_names = std_metrics },
    { .name = "customMetric", .alt = "custom_metric", .type = KEEL_FT_STR, .off = MO(custom_metric) },
    { .name = "mode", .type = KEEL_FT_ENUM, .off = MO(mode), .enum_names = modes },
    END
};
#undef MO
static const struct keel_config_schema override_match_schema = { "metric selector", override_match_fields,
                                                                 KEEL_UNKNOWN_ERROR, false };

static int bind_override_match(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_metric_override *o = base;
    o->has_match = true;
    int rc = keel_config_bind(c, &override_match_schema, n, base);
    if (rc == 0 && o->custom_metric && keel_ynode_get(n, "metric")) {
        keel_config_err(c, n, "metric selector: metric and customMetric are mutually exclusive");
        rc = -1;
    }
    return rc;
}

#define TM(f) offsetof(struct keel_config_telemetry_metrics, f)
static const struct keel_field tmetrics_fields[] = {
    { .name = "providers", .type = KEEL_FT_LIST, .off = TM(providers), .off2 = TM(n_providers),
      .sub = &provider_schema, .elem_size = sizeof(struct keel_config_provider_ref) },
    { .name = "reportingInterval", .alt = "reporting_interval", .type = KEEL_FT_DURATION,
      .off = TM(reporting_interval_ms) },
    { .name = "overrides", .type = KEEL_FT_LIST, .off = TM(overrides), .off2 = TM(n_overrides),
      .sub = &override_schema, .elem_size = sizeof(struct keel_config_metric_override) },
    END
};
#undef TM
static const struct keel_config_schema tmetrics_schema = { "metrics", tmetrics_fields, KEEL_UNKNOWN_ERROR, true };

/* {mode} selectors bind straight into the int at offset 0 of a struct holding it */
#define TL(f) offsetof(struct keel_config_telemetry_logging, f)
static const struct keel_field log_match_fields[] = {
    { .name = "mode", .type = KEEL_FT_ENUM, .off = TL(mode), .enum_names = modes },
    END
};
static const struct keel_config_schema log_match_schema = { "match", log_match_fields, KEEL_UNKNOWN_ERROR, false };
static const struct keel_field filter_fields[] = {
    { .name = "expression", .type = KEEL_FT_EXPR, .off = TL(filter), .lang = KEEL_LANG_CEL, .want = KEEL_WANT_BOOL },
    END
};
static const struct keel_config_schema filter_schema = { "filter", filter_fields, KEEL_UNKNOWN_ERROR, false };
static const struct keel_field tlog_fields[] = {
    { .name = "match", .type = KEEL_FT_OBJ, .sub = &log_match_schema },
    { .name = "providers", .type = KEEL_FT_LIST, .off = TL(providers), .off2 = TL(n_providers),
      .sub = &provider_schema, .elem_size = sizeof(struct keel_config_provider_ref) },
    { .name = "disabled", .type = KEEL_FT_BOOL3, .off = TL(disabled) },
    { .name = "filter", .type = KEEL_FT_OBJ, .sub = &filter_schema },
    END
};
#undef TL
static const struct keel_config_schema tlog_schema = { "accessLogging", tlog_fields, KEEL_UNKNOWN_ERROR, true };

static int bind_custom_tags(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_telemetry_tracing *t = base;
#define CT(f) offsetof(struct keel_config_custom_tag, f)
    static const struct keel_field lit_fields[] = {
        { .name = "value", .type = KEEL_FT_STR, .off = CT(literal), .required = true }, END
    };
    static const struct keel_config_schema lit_schema = { "literal", lit_fields, KEEL_UNKNOWN_ERROR, false };
    static const struct keel_field env_fields[] = {
        { .name = "name", .type = KEEL_FT_STR, .off = CT(env_name), .required = true },
        { .name = "defaultValue", .alt = "default_value", .type = KEEL_FT_STR, .off = CT(env_default) },
        END
    };
    static const struct keel_config_schema env_schema = { "environment", env_fields, KEEL_UNKNOWN_ERROR, false };
    static const struct keel_field hdr_fields[] = {
        { .name = "name", .type = KEEL_FT_STR, .off = CT(header_name), .required = true },
        { .name = "defaultValue", .alt = "default_value", .type = KEEL_FT_STR, .off = CT(header_default) },
        END
    };
    static const struct keel_config_schema hdr_schema = { "header", hdr_fields, KEEL_UNKNOWN_ERROR, false };
    static const struct keel_field tag_fields[] = {
        { .name = "literal", .type = KEEL_FT_OBJ, .sub = &lit_schema },
        { .name = "environment", .type = KEEL_FT_OBJ, .sub = &env_schema },
        { .name = "header", .type = KEEL_FT_OBJ, .sub = &hdr_schema },
        /* newer Istio: a tag from an Envoy format string; accepted, not a load failure */
        { .name = "formatter", .type = KEEL_FT_ANY },
        END
    };
#undef CT
    static const struct keel_config_schema tag_schema = { "customTag", tag_fields, KEEL_UNKNOWN_ERROR, true };
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"customTags\": expected a mapping, got %s", keel_ynode_type_name(n));
        return -1;
    }
    int rc = 0;
    t->custom_tags = keel_config_arena_alloc(c->a, (n->n ? n->n : 1) * sizeof(*t->custom_tags));
    t->n_custom_tags = n->n;
    for (size_t i = 0; i < n->n; i++) {
        t->custom_tags[i].tag = n->kids[2 * i]->str ? n->kids[2 * i]->str : "";
        if (keel_config_bind(c, &tag_schema, n->kids[2 * i + 1], &t->custom_tags[i]) < 0)
            rc = -1;
    }
    return rc;
}

#define TT(f) offsetof(struct keel_config_telemetry_tracing, f)
static const struct keel_field trace_match_fields[] = {
    { .name = "mode", .type = KEEL_FT_ENUM, .off = TT(mode), .enum_names = modes },
    END
};
static const struct keel_config_schema trace_match_schema = { "match", trace_match_fields, KEEL_UNKNOWN_ERROR,
                                                              false };
static const struct keel_field ttrace_fields[] = {
    { .name = "match", .type = KEEL_FT_OBJ, .sub = &trace_match_schema },
    { .name = "providers", .type = KEEL_FT_LIST, .off = TT(providers), .off2 = TT(n_providers),
      .sub = &provider_schema, .elem_size = sizeof(struct keel_config_provider_ref) },
    { .name = "randomSamplingPercentage", .alt = "random_sampling_percentage", .type = KEEL_FT_DOUBLE,
      .off = TT(random_sampling_percentage), .neg_default = true },
    { .name = "disableSpanReporting", .alt = "disable_span_reporting", .type = KEEL_FT_BOOL3,
      .off = TT(disable_span_reporting) },
    { .name = "useRequestIdForTraceSampling", .alt = "use_request_id_for_trace_sampling", .type = KEEL_FT_BOOL3,
      .off = TT(use_request_id_for_trace_sampling) },
    { .name = "customTags", .alt = "custom_tags", .type = KEEL_FT_CUSTOM, .fn = bind_custom_tags },
    { .name = "enableIstioTags", .type = KEEL_FT_ANY },
    { .name = "disableContextPropagation", .type = KEEL_FT_ANY },
    END
};
#undef TT
static const struct keel_config_schema ttrace_schema = { "tracing", ttrace_fields, KEEL_UNKNOWN_ERROR, true };

/* The singular targetRef is the one-element targetRefs (Istio): it applies to its target
 * only, never to the whole namespace. */
static int bind_target_ref(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_telemetry *t = base;
    t->target_ref = keel_config_arena_alloc(c->a, sizeof(*t->target_ref));
    memset(t->target_ref, 0, sizeof(*t->target_ref));
    t->target_ref->pos = keel_config_pos_of(n);
    return keel_config_bind(c, &target_ref_schema, n, t->target_ref);
}

#define T(f) offsetof(struct keel_config_telemetry, f)
static const struct keel_field telemetry_fields[] = {
    { .name = "selector", .type = KEEL_FT_OBJ, .off = T(selector), .sub = &selector_schema },
    { .name = "targetRefs", .alt = "target_refs", .type = KEEL_FT_LIST, .off = T(target_refs),
      .off2 = T(n_target_refs), .sub = &target_ref_schema, .elem_size = sizeof(struct keel_config_target_ref) },
    { .name = "targetRef", .alt = "target_ref", .type = KEEL_FT_CUSTOM, .fn = bind_target_ref },
    { .name = "metrics", .type = KEEL_FT_LIST, .off = T(metrics), .off2 = T(n_metrics), .sub = &tmetrics_schema,
      .elem_size = sizeof(struct keel_config_telemetry_metrics) },
    { .name = "accessLogging", .alt = "access_logging", .type = KEEL_FT_LIST, .off = T(access_logging),
      .off2 = T(n_access_logging), .sub = &tlog_schema, .elem_size = sizeof(struct keel_config_telemetry_logging) },
    { .name = "tracing", .type = KEEL_FT_LIST, .off = T(tracing), .off2 = T(n_tracing), .sub = &ttrace_schema,
      .elem_size = sizeof(struct keel_config_telemetry_tracing) },
    END
};
#undef T
static const struct keel_config_schema telemetry_schema = { "Telemetry spec", telemetry_fields,
                                                            KEEL_UNKNOWN_ERROR, false };

/* ---- WasmPlugin / attributegen ---- */

#define AM(f) offsetof(struct keel_config_attrgen_match, f)
static const struct keel_field attrgen_match_fields[] = {
    { .name = "value", .type = KEEL_FT_STR, .off = AM(value), .required = true },
    { .name = "condition", .type = KEEL_FT_EXPR, .off = AM(condition), .lang = KEEL_LANG_CEL,
      .want = KEEL_WANT_BOOL },
    END
};
#undef AM
static const struct keel_config_schema attrgen_match_schema = { "attributegen match", attrgen_match_fields,
                                                                KEEL_UNKNOWN_WARN, true };
#define AG(f) offsetof(struct keel_config_attrgen, f)
static const struct keel_field attrgen_fields[] = {
    { .name = "output_attribute", .alt = "outputAttribute", .type = KEEL_FT_STR, .off = AG(output_attribute),
      .required = true },
    { .name = "phase", .type = KEEL_FT_ENUM, .off = AG(phase), .enum_names = attrgen_phases },
    { .name = "match", .type = KEEL_FT_LIST, .off = AG(match), .off2 = AG(n_match), .sub = &attrgen_match_schema,
      .elem_size = sizeof(struct keel_config_attrgen_match) },
    END
};
#undef AG
static const struct keel_config_schema attrgen_schema = { "attributegen attribute", attrgen_fields,
                                                          KEEL_UNKNOWN_WARN, true };
#define W(f) offsetof(struct keel_config_wasmplugin, f)
static const struct keel_field attrgen_config_fields[] = {
    { .name = "debug", .type = KEEL_FT_BOOL, .off = W(debug) },
    { .name = "attributes", .type = KEEL_FT_LIST, .off = W(attributes), .off2 = W(n_attributes),
      .sub = &attrgen_schema, .elem_size = sizeof(struct keel_config_attrgen) },
    END
};
static const struct keel_config_schema attrgen_config_schema = { "attributegen pluginConfig", attrgen_config_fields,
                                                                 KEEL_UNKNOWN_WARN, false };
static const struct keel_field wasm_fields[] = {
    { .name = "selector", .type = KEEL_FT_OBJ, .off = W(selector), .sub = &selector_schema },
    { .name = "targetRefs", .alt = "target_refs", .type = KEEL_FT_LIST, .off = W(target_refs),
      .off2 = W(n_target_refs), .sub = &target_ref_schema, .elem_size = sizeof(struct keel_config_target_ref) },
    { .name = "targetRef", .type = KEEL_FT_ANY },
    { .name = "url", .type = KEEL_FT_STR, .off = W(url) },
    { .name = "sha256", .type = KEEL_FT_ANY },
    { .name = "imagePullPolicy", .type = KEEL_FT_ANY },
    { .name = "imagePullSecret", .type = KEEL_FT_ANY },
    { .name = "phase", .type = KEEL_FT_STR, .off = W(phase) },
    { .name = "priority", .type = KEEL_FT_INT, .off = W(priority) },
    { .name = "pluginName", .type = KEEL_FT_STR, .off = W(plugin_name) },
    { .name = "pluginConfig", .type = KEEL_FT_ANY },
    { .name = "vmConfig", .type = KEEL_FT_ANY },
    { .name = "match", .type = KEEL_FT_ANY },
    { .name = "failStrategy", .type = KEEL_FT_ANY },
    { .name = "type", .type = KEEL_FT_ANY },
    { .name = "verificationKey", .type = KEEL_FT_ANY },
    END
};
#undef W
static const struct keel_config_schema wasm_schema = { "WasmPlugin spec", wasm_fields, KEEL_UNKNOWN_ERROR, false };

/* ---- Service / WorkloadEntry / ServiceEntry / Gateway ---- */

static int bind_target_port(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_service_port *p = base;
    if (n->type != KEEL_YNODE_SCALAR) {
        keel_config_err(c, n, "\"targetPort\": expected a port number or name, got %s", keel_ynode_type_name(n));
        return -1;
    }
    if (n->style == KEEL_YSTYLE_PLAIN && n->str[0] >= '0' && n->str[0] <= '9')
        return keel_config_scalar_port(c, n, &p->target_port);
    p->target_port_name = n->str;
    return 0;
}

#define SP(f) offsetof(struct keel_config_service_port, f)
static const struct keel_field service_port_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = SP(name) },
    { .name = "port", .type = KEEL_FT_PORT, .off = SP(port), .required = true },
    { .name = "targetPort", .type = KEEL_FT_CUSTOM, .fn = bind_target_port },
    { .name = "protocol", .type = KEEL_FT_STR, .off = SP(protocol) },
    { .name = "appProtocol", .type = KEEL_FT_STR, .off = SP(app_protocol) },
    { .name = "nodePort", .type = KEEL_FT_ANY },
    END
};
#undef SP
static const struct keel_config_schema service_port_schema = { "Service port", service_port_fields,
                                                               KEEL_UNKNOWN_ERROR, true };
#define SV(f) offsetof(struct keel_config_service, f)
static const struct keel_field service_fields[] = {
    { .name = "ports", .type = KEEL_FT_LIST, .off = SV(ports), .off2 = SV(n_ports), .sub = &service_port_schema,
      .elem_size = sizeof(struct keel_config_service_port) },
    { .name = "selector", .type = KEEL_FT_KVMAP, .off = SV(selector), .off2 = SV(n_selector) },
    { .name = "type", .type = KEEL_FT_STR, .off = SV(type) },
    { .name = "clusterIP", .type = KEEL_FT_STR, .off = SV(cluster_ip) },
    { .name = "clusterIPs", .type = KEEL_FT_ANY },
    { .name = "externalIPs", .type = KEEL_FT_ANY },
    { .name = "externalName", .type = KEEL_FT_ANY },
    { .name = "sessionAffinity", .type = KEEL_FT_ANY },
    { .name = "sessionAffinityConfig", .type = KEEL_FT_ANY },
    { .name = "loadBalancerIP", .type = KEEL_FT_ANY },
    { .name = "loadBalancerClass", .type = KEEL_FT_ANY },
    { .name = "loadBalancerSourceRanges", .type = KEEL_FT_ANY },
    { .name = "externalTrafficPolicy", .type = KEEL_FT_ANY },
    { .name = "internalTrafficPolicy", .type = KEEL_FT_ANY },
    { .name = "healthCheckNodePort", .type = KEEL_FT_ANY },
    { .name = "publishNotReadyAddresses", .type = KEEL_FT_ANY },
    { .name = "ipFamilies", .type = KEEL_FT_ANY },
    { .name = "ipFamilyPolicy", .type = KEEL_FT_ANY },
    { .name = "allocateLoadBalancerNodePorts", .type = KEEL_FT_ANY },
    { .name = "trafficDistribution", .type = KEEL_FT_ANY },
    END
};
#undef SV
static const struct keel_config_schema service_schema = { "Service spec", service_fields, KEEL_UNKNOWN_ERROR, false };

static int bind_we_ports(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_workloadentry_spec *w = base;
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"ports\": expected a mapping of port name to number, got %s",
                        keel_ynode_type_name(n));
        return -1;
    }
    int rc = 0;
    w->ports = keel_config_arena_alloc(c->a, (n->n ? n->n : 1) * sizeof(*w->ports));
    w->ports_num = keel_config_arena_alloc(c->a, (n->n ? n->n : 1) * sizeof(*w->ports_num));
    w->n_ports = n->n;
    for (size_t i = 0; i < n->n; i++) {
        const struct keel_ynode *k = n->kids[2 * i], *v = n->kids[2 * i + 1];
        w->ports[i].key = k->str ? k->str : "";
        w->ports[i].value = v->str ? v->str : "";
        w->ports[i].pos = keel_config_pos_of(v);
        if (keel_config_scalar_port(c, v, &w->ports_num[i]) < 0)
            rc = -1;
    }
    return rc;
}

/* An IP address, a DNS name or unix://PATH (as Istio validates it); not "host:port". */
static int bind_we_address(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_workloadentry_spec *w = base;
    if (n->type != KEEL_YNODE_SCALAR) {
        keel_config_err(c, n, "\"address\": expected a string, got %s", keel_ynode_type_name(n));
        return -1;
    }
    const char *s = n->str;
    unsigned char buf[sizeof(struct in6_addr)];
    bool ok = inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1 ||
              (!strncmp(s, "unix://", 7) && s[7] != '\0');
    if (!ok && n->len > 0 && n->len <= 253) {
        ok = true;
        size_t label = 0;
        for (size_t i = 0; i <= n->len && ok; i++) {
            char ch = s[i];
            if (ch == '.' || ch == '\0') {
                ok = label > 0 && label <= 63 && s[i - 1] != '-';
                label = 0;
            } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                       (ch == '-' && label > 0)) {
                label++;
            } else {
                ok = false;
            }
        }
    }
    if (!ok) {
        keel_config_err(c, n, "invalid address \"%s\" (expected an IP address, a host name or unix://PATH)", s);
        return -1;
    }
    w->address = s;
    return 0;
}

#define WE(f) offsetof(struct keel_config_workloadentry_spec, f)
static const struct keel_field we_fields[] = {
    { .name = "address", .type = KEEL_FT_CUSTOM, .fn = bind_we_address },
    { .name = "ports", .type = KEEL_FT_CUSTOM, .fn = bind_we_ports },
    { .name = "labels", .type = KEEL_FT_KVMAP, .off = WE(labels), .off2 = WE(n_labels) },
    { .name = "network", .type = KEEL_FT_STR, .off = WE(network) },
    { .name = "locality", .type = KEEL_FT_STR, .off = WE(locality) },
    { .name = "weight", .type = KEEL_FT_INT, .off = WE(weight) },
    { .name = "serviceAccount", .type = KEEL_FT_STR, .off = WE(service_account) },
    END
};
#undef WE
static const struct keel_config_schema we_schema = { "WorkloadEntry spec", we_fields, KEEL_UNKNOWN_ERROR, true };

#define SEP(f) offsetof(struct keel_config_se_port, f)
static const struct keel_field se_port_fields[] = {
    { .name = "number", .type = KEEL_FT_PORT, .off = SEP(number), .required = true },
    { .name = "protocol", .type = KEEL_FT_STR, .off = SEP(protocol) },
    { .name = "name", .type = KEEL_FT_STR, .off = SEP(name) },
    { .name = "targetPort", .type = KEEL_FT_PORT, .off = SEP(target_port) },
    END
};
#undef SEP
static const struct keel_config_schema se_port_schema = { "ServiceEntry port", se_port_fields, KEEL_UNKNOWN_ERROR,
                                                          true };
#define SE(f) offsetof(struct keel_config_serviceentry, f)
static const struct keel_field se_fields[] = {
    { .name = "hosts", .type = KEEL_FT_NAMELIST, .off = SE(hosts), .off2 = SE(n_hosts), .required = true },
    { .name = "addresses", .type = KEEL_FT_NAMELIST, .off = SE(addresses), .off2 = SE(n_addresses) },
    { .name = "ports", .type = KEEL_FT_LIST, .off = SE(ports), .off2 = SE(n_ports), .sub = &se_port_schema,
      .elem_size = sizeof(struct keel_config_se_port) },
    { .name = "location", .type = KEEL_FT_STR, .off = SE(location) },
    { .name = "resolution", .type = KEEL_FT_STR, .off = SE(resolution) },
    { .name = "endpoints", .type = KEEL_FT_LIST, .off = SE(endpoints), .off2 = SE(n_endpoints), .sub = &we_schema,
      .elem_size = sizeof(struct keel_config_workloadentry_spec) },
    { .name = "workloadSelector", .type = KEEL_FT_OBJ, .off = SE(workload_selector), .sub = &wlsel_schema },
    { .name = "exportTo", .type = KEEL_FT_ANY },
    { .name = "subjectAltNames", .type = KEEL_FT_ANY },
    END
};
#undef SE
static const struct keel_config_schema se_schema = { "ServiceEntry spec", se_fields, KEEL_UNKNOWN_ERROR, false };

#define GL(f) offsetof(struct keel_config_gateway_listener, f)
static const struct keel_field gw_listener_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = GL(name), .required = true },
    { .name = "hostname", .type = KEEL_FT_STR, .off = GL(hostname) },
    { .name = "port", .type = KEEL_FT_PORT, .off = GL(port), .required = true },
    { .name = "protocol", .type = KEEL_FT_STR, .off = GL(protocol), .required = true },
    { .name = "allowedRoutes", .type = KEEL_FT_ANY },
    { .name = "tls", .type = KEEL_FT_ANY },
    END
};
#undef GL
static const struct keel_config_schema gw_listener_schema = { "Gateway listener", gw_listener_fields,
                                                              KEEL_UNKNOWN_ERROR, true };
#define G(f) offsetof(struct keel_config_gateway, f)
static const struct keel_field gw_fields[] = {
    { .name = "gatewayClassName", .type = KEEL_FT_STR, .off = G(gateway_class_name), .required = true },
    { .name = "listeners", .type = KEEL_FT_LIST, .off = G(listeners), .off2 = G(n_listeners),
      .sub = &gw_listener_schema, .elem_size = sizeof(struct keel_config_gateway_listener) },
    { .name = "addresses", .type = KEEL_FT_ANY },
    { .name = "infrastructure", .type = KEEL_FT_ANY },
    { .name = "backendTLS", .type = KEEL_FT_ANY },
    END
};
#undef G
static const struct keel_config_schema gw_schema = { "Gateway spec", gw_fields, KEEL_UNKNOWN_ERROR, false };

/* ---- mesh config ---- */

static const struct keel_field zipkin_addr_fields[] = {
    { .name = "address", .type = KEEL_FT_STR, .off = offsetof(struct keel_config_mesh, zipkin_address) },
    END
};
static const struct keel_config_schema zipkin_addr_schema = { "defaultConfig.tracing.zipkin", zipkin_addr_fields,
                                                              KEEL_UNKNOWN_WARN, false };
static const struct keel_field dc_tracing_fields[] = {
    { .name = "sampling", .type = KEEL_FT_DOUBLE, .off = offsetof(struct keel_config_mesh, tracing_sampling) },
    { .name = "zipkin", .type = KEEL_FT_OBJ, .sub = &zipkin_addr_schema },
    END
};
static const struct keel_config_schema dc_tracing_schema = { "defaultConfig.tracing", dc_tracing_fields,
                                                             KEEL_UNKNOWN_WARN, false };
static const struct keel_field default_config_fields[] = {
    { .name = "tracing", .type = KEEL_FT_OBJ, .sub = &dc_tracing_schema },
    /* the proxies' environment: ISTIO_META_CLUSTER_ID names the cluster when the
     * proxy's own environment does not */
    { .name = "proxyMetadata", .type = KEEL_FT_KVMAP, .off = offsetof(struct keel_config_mesh, proxy_metadata),
      .off2 = offsetof(struct keel_config_mesh, n_proxy_metadata) },
    END
};
static const struct keel_config_schema default_config_schema = { "defaultConfig", default_config_fields,
                                                                 KEEL_UNKNOWN_IGNORE, false };
#define MS(f) offsetof(struct keel_config_mesh, f)
static const struct keel_field default_providers_fields[] = {
    { .name = "metrics", .type = KEEL_FT_STRLIST, .off = MS(default_metrics_providers),
      .off2 = MS(n_default_metrics_providers) },
    { .name = "tracing", .type = KEEL_FT_STRLIST, .off = MS(default_tracing_providers),
      .off2 = MS(n_default_tracing_providers) },
    { .name = "accessLogging", .type = KEEL_FT_STRLIST, .off = MS(default_access_logging_providers),
      .off2 = MS(n_default_access_logging_providers) },
    END
};
static const struct keel_config_schema default_providers_schema = { "defaultProviders", default_providers_fields,
                                                                    KEEL_UNKNOWN_ERROR, false };

#define EP(f) offsetof(struct keel_config_ext_provider, f)
static const struct keel_field zipkin_fields[] = {
    { .name = "service", .type = KEEL_FT_STR, .off = EP(zipkin_service), .required = true },
    { .name = "port", .type = KEEL_FT_PORT, .off = EP(zipkin_port), .required = true },
    { .name = "maxTagLength", .type = KEEL_FT_INT, .off = EP(zipkin_max_tag_length) },
    { .name = "enable64bitTraceId", .type = KEEL_FT_BOOL, .off = EP(zipkin_enable_64bit_trace_id) },
    { .name = "path", .type = KEEL_FT_STR, .off = EP(zipkin_path) },
    { .name = "headers", .type = KEEL_FT_ANY },
    { .name = "traceContextOption", .type = KEEL_FT_ANY },
    END
};
static const struct keel_config_schema zipkin_schema = { "zipkin provider", zipkin_fields, KEEL_UNKNOWN_ERROR, false };

static int bind_log_labels(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_ext_provider *p = base;
    p->has_log_format_labels = true;
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"labels\": expected a mapping, got %s", keel_ynode_type_name(n));
        return -1;
    }
    p->log_format_labels = keel_config_arena_alloc(c->a, (n->n ? n->n : 1) * sizeof(*p->log_format_labels));
    p->n_log_format_labels = n->n;
    for (size_t i = 0; i < n->n; i++) {
        const struct keel_ynode *v = n->kids[2 * i + 1];
        p->log_format_labels[i].key = n->kids[2 * i]->str ? n->kids[2 * i]->str : "";
        p->log_format_labels[i].value = v->type == KEEL_YNODE_SCALAR ? v->str : "";
        p->log_format_labels[i].pos = keel_config_pos_of(v);
        if (v->type != KEEL_YNODE_SCALAR) {
            keel_config_err(c, v, "log format label: expected a string, got %s", keel_ynode_type_name(v));
            return -1;
        }
    }
    return 0;
}

static const struct keel_field log_format_fields[] = {
    { .name = "text", .type = KEEL_FT_STR, .off = EP(log_format_text) },
    { .name = "labels", .type = KEEL_FT_CUSTOM, .fn = bind_log_labels },
    END
};
static const struct keel_config_schema log_format_schema = { "logFormat", log_format_fields, KEEL_UNKNOWN_ERROR,
                                                             false };
static const struct keel_field file_log_fields[] = {
    { .name = "path", .type = KEEL_FT_STR, .off = EP(log_path) },
    { .name = "logFormat", .type = KEEL_FT_OBJ, .sub = &log_format_schema },
    { .name = "omitEmptyValues", .type = KEEL_FT_BOOL, .off = EP(omit_empty_values) },
    END
};
static const struct keel_config_schema file_log_schema = { "envoyFileAccessLog provider", file_log_fields,
                                                           KEEL_UNKNOWN_ERROR, false };

static int bind_provider_kind(struct keel_config_ctx *c, const struct keel_ynode *n, void *base, int type,
                              const struct keel_config_schema *s)
{
    struct keel_config_ext_provider *p = base;
    if (p->type != KEEL_CONFIG_PROVIDER_OTHER) {
        keel_config_err(c, n, "extension provider \"%s\" has more than one provider kind", p->name ? p->name : "");
        return -1;
    }
    p->type = type;
    if (s == NULL)
        return 0;
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "%s: expected a mapping, got %s", s->what, keel_ynode_type_name(n));
        return -1;
    }
    return keel_config_bind(c, s, n, base);
}
static int bind_prom_provider(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    return bind_provider_kind(c, n, base, KEEL_CONFIG_PROVIDER_PROMETHEUS, NULL);
}
static int bind_zipkin_provider(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    return bind_provider_kind(c, n, base, KEEL_CONFIG_PROVIDER_ZIPKIN, &zipkin_schema);
}
static int bind_file_provider(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    return bind_provider_kind(c, n, base, KEEL_CONFIG_PROVIDER_FILE_LOG, &file_log_schema);
}

static const struct keel_field ext_provider_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = EP(name), .required = true },
    { .name = "prometheus", .type = KEEL_FT_CUSTOM, .fn = bind_prom_provider },
    { .name = "zipkin", .type = KEEL_FT_CUSTOM, .fn = bind_zipkin_provider },
    { .name = "envoyFileAccessLog", .type = KEEL_FT_CUSTOM, .fn = bind_file_provider },
    END
};
#undef EP
/* other provider kinds (opentelemetry, stackdriver, ...) are out of scope: warn */
static const struct keel_config_schema ext_provider_schema = { "extensionProviders entry", ext_provider_fields,
                                                               KEEL_UNKNOWN_WARN, true };

static const struct keel_field outbound_policy_fields[] = {
    { .name = "mode", .type = KEEL_FT_ENUM, .off = MS(outbound_mode), .enum_names = outbound_modes },
    END
};
static const struct keel_config_schema outbound_policy_schema = { "outboundTrafficPolicy", outbound_policy_fields,
                                                                  KEEL_UNKNOWN_WARN, false };

static const struct keel_field mesh_fields[] = {
    { .name = "outboundTrafficPolicy", .type = KEEL_FT_OBJ, .sub = &outbound_policy_schema },
    { .name = "accessLogFile", .type = KEEL_FT_STR, .off = MS(access_log_file) },
    { .name = "accessLogEncoding", .type = KEEL_FT_ENUM, .off = MS(access_log_encoding), .enum_names = encodings },
    { .name = "accessLogFormat", .type = KEEL_FT_STR, .off = MS(access_log_format) },
    { .name = "enableTracing", .type = KEEL_FT_BOOL, .off = MS(enable_tracing) },
    { .name = "h2UpgradePolicy", .type = KEEL_FT_ENUM, .off = MS(h2_upgrade_policy),
      .enum_names = h2_upgrade_policies },
    { .name = "defaultConfig", .type = KEEL_FT_OBJ, .sub = &default_config_schema },
    { .name = "configDefaultNamespace", .type = KEEL_FT_STR, .off = MS(config_default_namespace) },
    { .name = "rootNamespace", .type = KEEL_FT_STR, .off = MS(root_namespace) },
    { .name = "mixerReportServer", .type = KEEL_FT_STR, .off = MS(mixer_report_server) },
    { .name = "defaultProviders", .type = KEEL_FT_OBJ, .sub = &default_providers_schema },
    { .name = "extensionProviders", .type = KEEL_FT_LIST, .off = MS(extension_providers),
      .off2 = MS(n_extension_providers), .sub = &ext_provider_schema,
      .elem_size = sizeof(struct keel_config_ext_provider) },
    END
};
#undef MS
/* MeshConfig has dozens of fields keel does not use: warn, do not fail */
static const struct keel_config_schema mesh_schema = { "mesh config", mesh_fields, KEEL_UNKNOWN_WARN, false };

void keel_config_mesh_defaults(struct keel_config_mesh *m)
{
    memset(m, 0, sizeof(*m));
    m->access_log_file = "";
    m->access_log_format = "";
    m->outbound_mode = KEEL_CONFIG_ALLOW_ANY;
    m->enable_tracing = true;
    m->tracing_sampling = -1;
    m->zipkin_address = "";
    m->config_default_namespace = "istio-system";
    m->root_namespace = "istio-system";
    m->mixer_report_server = "";
}

int keel_config_bind_mesh(struct keel_config_ctx *c, const struct keel_ynode *root, struct keel_config_mesh *m)
{
    m->pos = keel_config_pos_of(root);
    if (keel_ynode_is_null(root))
        return 0;
    return keel_config_bind(c, &mesh_schema, root, m);
}

/* ---- the envelope ---- */

enum group { G_MIXER, G_TELEMETRY, G_EXTENSIONS, G_CORE, G_NETWORKING, G_GATEWAY, G_APPS, G_OTHER };

static enum group group_of(const char *api)
{
    if (!strcmp(api, "config.istio.io/v1alpha2"))
        return G_MIXER;
    if (!strcmp(api, "telemetry.istio.io/v1") || !strcmp(api, "telemetry.istio.io/v1alpha1"))
        return G_TELEMETRY;
    if (!strcmp(api, "extensions.istio.io/v1alpha1"))
        return G_EXTENSIONS;
    if (!strcmp(api, "v1"))
        return G_CORE;
    if (!strcmp(api, "networking.istio.io/v1") || !strcmp(api, "networking.istio.io/v1beta1") ||
        !strcmp(api, "networking.istio.io/v1alpha3"))
        return G_NETWORKING;
    if (!strcmp(api, "gateway.networking.k8s.io/v1") || !strcmp(api, "gateway.networking.k8s.io/v1beta1"))
        return G_GATEWAY;
    if (!strcmp(api, "apps/v1"))
        return G_APPS;
    return G_OTHER;
}

static const struct kind_row {
    enum group group;
    const char *kind;
    enum keel_config_kind k;
    size_t size;
    const struct keel_config_schema *spec;
} kinds[] = {
    { G_MIXER, "metric", KEEL_CONFIG_METRIC, sizeof(struct keel_config_metric), &metric_schema },
    { G_MIXER, "logentry", KEEL_CONFIG_LOGENTRY, sizeof(struct keel_config_logentry), &logentry_schema },
    { G_MIXER, "prometheus", KEEL_CONFIG_PROMETHEUS, sizeof(struct keel_config_prometheus), &prometheus_schema },
    { G_MIXER, "stdio", KEEL_CONFIG_STDIO, sizeof(struct keel_config_stdio), &stdio_schema },
    { G_MIXER, "rule", KEEL_CONFIG_RULE, sizeof(struct keel_config_rule), &rule_schema },
    { G_MIXER, "attributemanifest", KEEL_CONFIG_ATTRIBUTEMANIFEST, sizeof(struct keel_config_attributemanifest),
      NULL },
    { G_TELEMETRY, "Telemetry", KEEL_CONFIG_TELEMETRY, sizeof(struct keel_config_telemetry), &telemetry_schema },
    { G_EXTENSIONS, "WasmPlugin", KEEL_CONFIG_WASMPLUGIN, sizeof(struct keel_config_wasmplugin), &wasm_schema },
    { G_CORE, "Service", KEEL_CONFIG_SERVICE, sizeof(struct keel_config_service), &service_schema },
    { G_NETWORKING, "WorkloadEntry", KEEL_CONFIG_WORKLOADENTRY, sizeof(struct keel_config_workloadentry), NULL },
    { G_NETWORKING, "ServiceEntry", KEEL_CONFIG_SERVICEENTRY, sizeof(struct keel_config_serviceentry), &se_schema },
    { G_GATEWAY, "Gateway", KEEL_CONFIG_GATEWAY, sizeof(struct keel_config_gateway), &gw_schema },
    /* traffic routing (routing_kinds.c, routing.c) */
    { G_NETWORKING, "VirtualService", KEEL_CONFIG_VIRTUALSERVICE, sizeof(struct keel_config_virtualservice),
      &keel_config_vs_schema },
    { G_NETWORKING, "DestinationRule", KEEL_CONFIG_DESTINATIONRULE, sizeof(struct keel_config_destinationrule),
      &keel_config_dr_schema },
    { G_NETWORKING, "Gateway", KEEL_CONFIG_ISTIO_GATEWAY, sizeof(struct keel_config_istio_gateway),
      &keel_config_igw_schema },
    { G_CORE, "Namespace", KEEL_CONFIG_NAMESPACE, sizeof(struct keel_config_object), NULL },
    /* read by keel mesh from the same files; nothing for the proxy */
    { G_APPS, "Deployment", KEEL_CONFIG_DEPLOYMENT, sizeof(struct keel_config_object), NULL },
    { G_CORE, "ServiceAccount", KEEL_CONFIG_SERVICEACCOUNT, sizeof(struct keel_config_object), NULL },
};

static const char *const kind_names[KEEL_CONFIG_KIND_COUNT] = {
    "metric", "logentry", "prometheus", "stdio", "rule", "attributemanifest", "Telemetry", "WasmPlugin",
    "Service", "ConfigMap", "WorkloadEntry", "ServiceEntry", "Gateway",
    "VirtualService", "DestinationRule", "networking.istio.io/Gateway", "Namespace", "Deployment", "ServiceAccount",
};

const char *keel_config_kind_name(enum keel_config_kind k)
{
    return (unsigned)k < KEEL_CONFIG_KIND_COUNT ? kind_names[k] : "?";
}

/* Mixer template / adapter kinds we know but do not implement: a warning, not an error. */
static bool mixer_unsupported(const char *k)
{
    static const char *const names[] = { "tracespan", "listentry", "quota", "checknothing", "reportnothing",
                                         "apikey", "authorization", "edge", "kubernetes", "zipkin", "fluentd",
                                         "kubernetesenv", "denier", "listchecker", "memquota", "statsd",
                                         "stackdriver", "adapter", "template", "circonus", "cloudwatch",
                                         "dogstatsd", "opa", "rbac", "redisquota", "signalfx", "solarwinds",
                                         "noop", "bypass", NULL };
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], k))
            return true;
    return false;
}

static const struct keel_field meta_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = offsetof(struct keel_config_object, name), .required = true,
      .pos_off = offsetof(struct keel_config_object, name_pos) },
    { .name = "namespace", .type = KEEL_FT_STR, .off = offsetof(struct keel_config_object, namespace) },
    { .name = "labels", .type = KEEL_FT_KVMAP, .off = offsetof(struct keel_config_object, labels),
      .off2 = offsetof(struct keel_config_object, n_labels) },
    { .name = "annotations", .type = KEEL_FT_KVMAP, .off = offsetof(struct keel_config_object, annotations),
      .off2 = offsetof(struct keel_config_object, n_annotations) },
    END
};
/* ObjectMeta has more (uid, creationTimestamp, managedFields, ...): ignored */
static const struct keel_config_schema meta_schema = { "metadata", meta_fields, KEEL_UNKNOWN_IGNORE, false };


static struct keel_config_object *new_object(struct keel_config_ctx *c, size_t size, enum keel_config_kind k,
                                             const struct keel_ynode *doc, const char *api, const char *kind,
                                             const struct keel_ynode *meta)
{
    struct keel_config_object *o = keel_config_arena_alloc(c->a, size);
    o->pos = keel_config_pos_of(doc);
    o->kind = k;
    o->api_version = api;
    o->kind_written = kind;
    if (keel_config_bind(c, &meta_schema, meta, o) < 0)
        return NULL;
    if (o->namespace == NULL || o->namespace[0] == '\0')
        o->namespace = "default";
    o->fqn = keel_config_arena_printf(c->a, "%s.%s.%s", o->name, kind, o->namespace);
    c->mixer_dialect = KEEL_CONFIG_CEXL;
    for (size_t i = 0; i < o->n_annotations; i++)
        if (!strcmp(o->annotations[i].key, "policy.istio.io/lang") && !strcasecmp(o->annotations[i].value, "CEL"))
            c->mixer_dialect = KEEL_CONFIG_CEL;
    return o;
}

static int bind_spec(struct keel_config_ctx *c, const struct keel_config_schema *s, const struct keel_ynode *spec,
                     const struct keel_ynode *doc, void *base)
{
    if (spec == NULL || keel_ynode_is_null(spec))
        return 0; /* an empty spec binds to defaults; required fields are checked per kind */
    (void)doc;
    return keel_config_bind(c, s, spec, base);
}

static void bind_configmap(struct keel_config_ctx *c, const struct keel_ynode *doc, const char *api,
                           const struct keel_ynode *meta)
{
    struct keel_config_object *o =
        new_object(c, sizeof(struct keel_config_object), KEEL_CONFIG_MESH, doc, api, "ConfigMap", meta);
    if (o == NULL)
        return;
    if (strcmp(o->name, "istio") != 0) {
        keel_config_warn(c, keel_ynode_get(meta, "name"), "ConfigMap \"%s\" ignored (only ConfigMap istio is read)",
                         o->name);
        return;
    }
    const struct keel_ynode *data = keel_ynode_get(doc, "data");
    const struct keel_ynode *mesh = keel_ynode_get(data, "mesh");
    if (data && data->type != KEEL_YNODE_MAP) {
        keel_config_err(c, data, "\"data\": expected a mapping, got %s", keel_ynode_type_name(data));
        return;
    }
    if (mesh == NULL) {
        keel_config_warn(c, doc, "ConfigMap istio has no key \"mesh\"; mesh defaults apply");
    } else if (mesh->type != KEEL_YNODE_SCALAR) {
        keel_config_err(c, mesh, "\"mesh\": expected a YAML string, got %s", keel_ynode_type_name(mesh));
        return;
    } else {
        /* the value is YAML itself: parse it with positions mapped into this file */
        int line_off = mesh->line - 1, col_off = mesh->col - 1;
        if (mesh->style == KEEL_YSTYLE_BLOCK && mesh->block_line) {
            line_off = mesh->block_line - 1;
            col_off = mesh->block_indent;
        } else if (mesh->style != KEEL_YSTYLE_PLAIN) {
            col_off++;
        }
        struct keel_ynode **docs;
        int nd = keel_yaml_parse(c->a, mesh->file, mesh->str, mesh->len, line_off, col_off, &docs, c->diag);
        if (nd < 0) {
            c->errors++;
            return;
        }
        if (c->cfg->count[KEEL_CONFIG_MESH] > 0) {
            keel_config_err(c, doc, "a second ConfigMap istio (%s); only one mesh config may be loaded",
                            o->namespace);
            return;
        }
        if (nd > 0 && docs[0] && keel_config_bind_mesh(c, docs[0], &c->cfg->mesh) < 0)
            return;
        if (nd > 0 && docs[0] && docs[0]->type == KEEL_YNODE_MAP)
            c->cfg->mesh.pos = keel_config_pos_of(docs[0]);
    }
    keel_config_add_object(c, o);
}

static void bind_instance_or_handler(struct keel_config_ctx *c, const struct keel_ynode *doc, const char *api,
                                     const char *kind, const struct keel_ynode *meta, const struct keel_ynode *spec)
{
    bool inst = !strcmp(kind, "instance");
    const char *key = inst ? "compiledTemplate" : "compiledAdapter";
    const struct keel_ynode *which = keel_ynode_get(spec, key);
    if (spec == NULL || spec->type != KEEL_YNODE_MAP) {
        keel_config_err(c, spec ? spec : doc, "%s: missing spec", kind);
        return;
    }
    if (which == NULL || which->type != KEEL_YNODE_SCALAR || which->len == 0) {
        keel_config_err(c, which ? which : spec, "missing required field \"%s\" in %s spec", key, kind);
        return;
    }
    const struct kind_row *row = NULL;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (kinds[i].group == G_MIXER && !strcmp(kinds[i].kind, which->str) &&
            (inst ? kinds[i].k == KEEL_CONFIG_METRIC || kinds[i].k == KEEL_CONFIG_LOGENTRY
                  : kinds[i].k == KEEL_CONFIG_PROMETHEUS || kinds[i].k == KEEL_CONFIG_STDIO))
            row = &kinds[i];
    if (row == NULL) {
        if (mixer_unsupported(which->str)) {
            struct keel_config_object *o =
                new_object(c, sizeof(struct keel_config_object), KEEL_CONFIG_ATTRIBUTEMANIFEST, doc, api, kind, meta);
            keel_config_warn(c, which, "%s \"%s\" is not supported by keel; %s ignored", inst ? "template" : "adapter",
                             which->str, kind);
            if (o)
                keel_config_index_put(&c->cfg->impl->by_fqn, o->fqn, (void *)keel_config_ignored);
        } else {
            keel_config_err(c, which, "unknown %s \"%s\"", inst ? "template" : "adapter", which->str);
        }
        return;
    }
    struct keel_config_object *o = new_object(c, row->size, row->k, doc, api, kind, meta);
    if (o == NULL)
        return;
    if (row->k == KEEL_CONFIG_STDIO)
        stdio_defaults(c, (struct keel_config_stdio *)o);
    static const struct keel_field env_fields_inst[] = {
        { .name = "compiledTemplate", .type = KEEL_FT_ANY },
        { .name = "params", .type = KEEL_FT_ANY },
        { .name = "attributeBindings", .type = KEEL_FT_ANY },
        END
    };
    static const struct keel_field env_fields_hdl[] = {
        { .name = "compiledAdapter", .type = KEEL_FT_ANY },
        { .name = "params", .type = KEEL_FT_ANY },
        { .name = "adapter", .type = KEEL_FT_ANY },
        { .name = "connection", .type = KEEL_FT_ANY },
        END
    };
    static const struct keel_config_schema env_inst = { "instance spec", env_fields_inst, KEEL_UNKNOWN_ERROR, false };
    static const struct keel_config_schema env_hdl = { "handler spec", env_fields_hdl, KEEL_UNKNOWN_ERROR, false };
    int rc = keel_config_bind(c, inst ? &env_inst : &env_hdl, spec, o);
    const struct keel_ynode *params = keel_ynode_get(spec, "params");
    if (rc == 0 && params && !keel_ynode_is_null(params)) {
        struct keel_config_schema s = *row->spec;
        s.what = inst ? (row->k == KEEL_CONFIG_METRIC ? "metric params" : "logentry params")
                      : (row->k == KEEL_CONFIG_PROMETHEUS ? "prometheus params" : "stdio params");
        rc = keel_config_bind(c, &s, params, o);
    }
    o->invalid = rc < 0;
    keel_config_add_object(c, o);
}

static void bind_list(struct keel_config_ctx *c, const struct keel_ynode *doc)
{
    const struct keel_ynode *items = keel_ynode_get(doc, "items");
    if (items == NULL || keel_ynode_is_null(items))
        return;
    if (items->type != KEEL_YNODE_SEQ) {
        keel_config_err(c, items, "\"items\": expected a list, got %s", keel_ynode_type_name(items));
        return;
    }
    for (size_t i = 0; i < items->n; i++)
        keel_config_bind_document(c, items->kids[i]);
}

void keel_config_bind_document(struct keel_config_ctx *c, const struct keel_ynode *doc)
{
    if (doc == NULL || keel_ynode_is_null(doc))
        return;
    const struct keel_ynode *api_n = keel_ynode_get(doc, "apiVersion"), *kind_n = keel_ynode_get(doc, "kind");
    if (doc->type != KEEL_YNODE_MAP || (api_n == NULL && kind_n == NULL)) {
        keel_config_warn(c, doc, "document has no apiVersion and kind: not a Kubernetes resource, ignored");
        return;
    }
    const char *api, *kind;
    if (api_n == NULL || kind_n == NULL) {
        keel_config_err(c, doc, "missing required field \"%s\"", api_n ? "kind" : "apiVersion");
        return;
    }
    if (keel_config_scalar_str(c, api_n, &api) < 0 || keel_config_scalar_str(c, kind_n, &kind) < 0)
        return;
    if (!strcmp(kind, "List") && !strcmp(api, "v1")) {
        bind_list(c, doc);
        return;
    }
    enum group g = group_of(api);
    const struct keel_ynode *meta = keel_ynode_get(doc, "metadata");
    const struct keel_ynode *spec = keel_ynode_get(doc, "spec");
    bool known = false;
    if (g == G_CORE && !strcmp(kind, "ConfigMap"))
        known = true;
    if (g == G_MIXER && (!strcmp(kind, "instance") || !strcmp(kind, "handler")))
        known = true;
    const struct kind_row *row = NULL;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (kinds[i].group == g && !strcmp(kinds[i].kind, kind))
            row = &kinds[i];
    if (row == NULL && !known) {
        if (g == G_MIXER && mixer_unsupported(kind))
            keel_config_warn(c, kind_n, "kind \"%s\" (%s) is not supported by keel, ignored", kind, api);
        else
            keel_config_warn(c, kind_n, "unknown kind \"%s\" (apiVersion %s), ignored", kind, api);
        return;
    }
    if (meta == NULL || meta->type != KEEL_YNODE_MAP) {
        if (meta)
            keel_config_err(c, meta, "\"metadata\": expected a mapping, got %s", keel_ynode_type_name(meta));
        else
            keel_config_err(c, doc, "missing required field \"metadata\"");
        return;
    }
    if (g == G_CORE && !strcmp(kind, "ConfigMap")) {
        bind_configmap(c, doc, api, meta);
        return;
    }
    if (row == NULL) {
        bind_instance_or_handler(c, doc, api, kind, meta, spec);
        return;
    }
    struct keel_config_object *o = new_object(c, row->size, row->k, doc, api, kind, meta);
    if (o == NULL)
        return;
    int rc = 0;
    switch (row->k) {
    case KEEL_CONFIG_STDIO:
        stdio_defaults(c, (struct keel_config_stdio *)o);
        break;
    case KEEL_CONFIG_WORKLOADENTRY: {
        struct keel_config_workloadentry *w = (struct keel_config_workloadentry *)o;
        if (spec && !keel_ynode_is_null(spec))
            rc = keel_config_bind(c, &we_schema, spec, &w->spec);
        goto done;
    }
    default:
        break;
    }
    if (row->spec == NULL)
        goto done; /* attributemanifest: accepted as is */
    if (spec && !keel_ynode_is_null(spec) && spec->type != KEEL_YNODE_MAP) {
        keel_config_err(c, spec, "\"spec\": expected a mapping, got %s", keel_ynode_type_name(spec));
        return;
    }
    rc = bind_spec(c, row->spec, spec, doc, o);
    if (row->k == KEEL_CONFIG_WASMPLUGIN && rc == 0) {
        struct keel_config_wasmplugin *w = (struct keel_config_wasmplugin *)o;
        w->is_attributegen = (w->url && strstr(w->url, "attributegen")) ||
                             (w->plugin_name && strstr(w->plugin_name, "attributegen"));
        const struct keel_ynode *pc = keel_ynode_get(spec, "pluginConfig");
        if (!w->is_attributegen) {
            keel_config_warn(c, keel_ynode_get(spec, "url") ? keel_ynode_get(spec, "url") : spec,
                             "unsupported plugin %s: only attributegen runs in keel; plugin ignored",
                             w->url ? w->url : o->name);
        } else if (pc && !keel_ynode_is_null(pc)) {
            rc = keel_config_bind(c, &attrgen_config_schema, pc, o);
        }
    }
    if (row->k == KEEL_CONFIG_GATEWAY && rc == 0) {
        struct keel_config_gateway *gw = (struct keel_config_gateway *)o;
        gw->is_waypoint = gw->gateway_class_name && !strcmp(gw->gateway_class_name, "istio-waypoint");
        if (!gw->is_waypoint)
            keel_config_warn(c, keel_ynode_get(spec, "gatewayClassName"),
                             "Gateway class \"%s\" is not istio-waypoint; keel treats it as an ingress gateway",
                             gw->gateway_class_name ? gw->gateway_class_name : "");
    }
    if (row->k == KEEL_CONFIG_SERVICEENTRY && rc == 0 && (spec == NULL || keel_ynode_is_null(spec))) {
        keel_config_err(c, doc, "missing required field \"hosts\" in ServiceEntry spec");
        rc = -1;
    }
done:
    /* added even when invalid, so references to it resolve and do not cascade */
    o->invalid = rc < 0;
    keel_config_add_object(c, o);
}
