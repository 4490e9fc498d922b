/* Schema tables of the traffic-routing kinds: VirtualService, DestinationRule and the
 * networking.istio.io Gateway. kinds.c routes documents here; routing.c compiles what
 * they bind into struct keel_routing. */
#include "config/config_int.h"

#include <stddef.h>
#include <string.h>

#define END { 0 }

/* ---- StringMatch, and maps of them (headers, queryParams) ---- */

#define SM(f) offsetof(struct keel_config_string_match, f)
static const struct keel_field sm_fields[] = {
    { .name = "exact", .type = KEEL_FT_STR, .off = SM(exact) },
    { .name = "prefix", .type = KEEL_FT_STR, .off = SM(prefix) },
    { .name = "regex", .type = KEEL_FT_STR, .off = SM(regex), .pos_off = SM(regex_pos) },
    END
};
#undef SM
static const struct keel_config_schema sm_schema = { "StringMatch", sm_fields, KEEL_UNKNOWN_ERROR, true };

static int bind_sm(struct keel_config_ctx *c, const struct keel_ynode *n, struct keel_config_string_match *m)
{
    if (keel_config_bind(c, &sm_schema, n, m) < 0)
        return -1;
    if ((m->exact != NULL) + (m->prefix != NULL) + (m->regex != NULL) > 1) {
        keel_config_err(c, n, "StringMatch: give only one of exact, prefix or regex");
        return -1;
    }
    return 0;
}

static int bind_kv_matches(struct keel_config_ctx *c, const struct keel_ynode *n, struct keel_config_kv_match **out,
                           size_t *n_out, const char *what)
{
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"%s\": expected a mapping, got %s", what, keel_ynode_type_name(n));
        return -1;
    }
    struct keel_config_kv_match *m = keel_config_arena_alloc(c->a, (n->n ? n->n : 1) * sizeof(*m));
    int rc = 0;
    for (size_t i = 0; i < n->n; i++) {
        const struct keel_ynode *k = n->kids[2 * i], *v = n->kids[2 * i + 1];
        m[i].name = k->type == KEEL_YNODE_SCALAR ? k->str : "";
        m[i].m.pos = keel_config_pos_of(v);
        if (keel_ynode_is_null(v))
            continue; /* {} or nothing: the header must be present */
        if (bind_sm(c, v, &m[i].m) < 0)
            rc = -1;
    }
    *out = m;
    *n_out = n->n;
    return rc;
}

#define HM(f) offsetof(struct keel_config_http_match, f)
static int bind_uri(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    return bind_sm(c, n, &((struct keel_config_http_match *)base)->uri);
}
static int bind_scheme(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    return bind_sm(c, n, &((struct keel_config_http_match *)base)->scheme);
}
static int bind_method(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    return bind_sm(c, n, &((struct keel_config_http_match *)base)->method);
}
static int bind_authority(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    return bind_sm(c, n, &((struct keel_config_http_match *)base)->authority);
}
static int bind_headers(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_http_match *m = base;
    return bind_kv_matches(c, n, &m->headers, &m->n_headers, "headers");
}
static int bind_without_headers(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_http_match *m = base;
    return bind_kv_matches(c, n, &m->without_headers, &m->n_without_headers, "withoutHeaders");
}
static int bind_query(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_http_match *m = base;
    return bind_kv_matches(c, n, &m->query_params, &m->n_query_params, "queryParams");
}

static const struct keel_field http_match_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = HM(name) },
    { .name = "uri", .type = KEEL_FT_CUSTOM, .fn = bind_uri },
    { .name = "scheme", .type = KEEL_FT_CUSTOM, .fn = bind_scheme },
    { .name = "method", .type = KEEL_FT_CUSTOM, .fn = bind_method },
    { .name = "authority", .type = KEEL_FT_CUSTOM, .fn = bind_authority },
    { .name = "headers", .type = KEEL_FT_CUSTOM, .fn = bind_headers },
    { .name = "withoutHeaders", .type = KEEL_FT_CUSTOM, .fn = bind_without_headers },
    { .name = "queryParams", .type = KEEL_FT_CUSTOM, .fn = bind_query },
    { .name = "port", .type = KEEL_FT_PORT, .off = HM(port) },
    { .name = "sourceLabels", .type = KEEL_FT_KVMAP, .off = HM(source_labels), .off2 = HM(n_source_labels) },
    { .name = "ignoreUriCase", .type = KEEL_FT_BOOL, .off = HM(ignore_uri_case) },
    { .name = "gateways", .type = KEEL_FT_ANY },
    { .name = "sourceNamespace", .type = KEEL_FT_ANY },
    { .name = "statPrefix", .type = KEEL_FT_ANY },
    END
};
#undef HM
static const struct keel_config_schema http_match_schema = { "HTTPMatchRequest", http_match_fields,
                                                             KEEL_UNKNOWN_ERROR, true };

/* ---- route destinations ---- */

#define RD(f) offsetof(struct keel_config_route_dest, f)
static const struct keel_field port_sel_fields[] = {
    { .name = "number", .type = KEEL_FT_PORT, .off = 0 },
    END
};
static const struct keel_config_schema port_sel_schema = { "PortSelector", port_sel_fields, KEEL_UNKNOWN_ERROR,
                                                           false };
static const struct keel_field destination_fields[] = {
    { .name = "host", .type = KEEL_FT_NAME, .off = 0, .required = true },
    { .name = "subset", .type = KEEL_FT_STR, .off = RD(subset) - RD(host), .pos_off = RD(subset_pos) - RD(host) },
    { .name = "port", .type = KEEL_FT_OBJ, .off = RD(port) - RD(host), .sub = &port_sel_schema },
    END
};
static const struct keel_config_schema destination_schema = { "Destination", destination_fields,
                                                              KEEL_UNKNOWN_ERROR, false };
static const struct keel_field route_dest_fields[] = {
    { .name = "destination", .type = KEEL_FT_OBJ, .off = RD(host), .sub = &destination_schema, .required = true },
    { .name = "weight", .type = KEEL_FT_INT, .off = RD(weight), .pos_off = RD(weight_pos) },
    { .name = "headers", .type = KEEL_FT_ANY },
    END
};
#undef RD
static const struct keel_config_schema route_dest_schema = { "HTTPRouteDestination", route_dest_fields,
                                                             KEEL_UNKNOWN_ERROR, true };

/* ---- HTTPRoute ---- */

#define HR(f) offsetof(struct keel_config_http_route, f)
static const struct keel_field rewrite_fields[] = {
    { .name = "uri", .type = KEEL_FT_STR, .off = HR(rewrite_uri) - HR(rewrite_uri) },
    { .name = "authority", .type = KEEL_FT_STR, .off = HR(rewrite_authority) - HR(rewrite_uri) },
    END
};
static const struct keel_config_schema rewrite_schema = { "HTTPRewrite", rewrite_fields, KEEL_UNKNOWN_ERROR, false };

static const struct keel_field pct_fields[] = {
    { .name = "value", .type = KEEL_FT_DOUBLE, .off = 0 },
    END
};
static const struct keel_config_schema pct_schema = { "Percent", pct_fields, KEEL_UNKNOWN_ERROR, false };

/* fault.delay and fault.abort bind into the route itself (offsets from its start) */
static const struct keel_field delay_fields[] = {
    { .name = "fixedDelay", .type = KEEL_FT_DURATION, .off = HR(fixed_delay_ms), .required = true },
    { .name = "percentage", .type = KEEL_FT_OBJ, .off = HR(delay_pct), .sub = &pct_schema,
      .pos_off = HR(delay_pct_pos) },
    { .name = "percent", .type = KEEL_FT_INT, .off = HR(delay_percent) },
    END
};
static const struct keel_config_schema delay_schema = { "HTTPFaultInjection.Delay", delay_fields,
                                                        KEEL_UNKNOWN_ERROR, false };
static const struct keel_field abort_fields[] = {
    { .name = "httpStatus", .type = KEEL_FT_INT, .off = HR(abort_status), .required = true,
      .pos_off = HR(abort_status_pos) },
    { .name = "percentage", .type = KEEL_FT_OBJ, .off = HR(abort_pct), .sub = &pct_schema,
      .pos_off = HR(abort_pct_pos) },
    { .name = "grpcStatus", .type = KEEL_FT_ANY },
    { .name = "percent", .type = KEEL_FT_INT, .off = HR(abort_percent) },
    END
};
static const struct keel_config_schema abort_schema = { "HTTPFaultInjection.Abort", abort_fields,
                                                        KEEL_UNKNOWN_ERROR, false };
static int bind_delay(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_http_route *r = base;
    r->delay_pos = keel_config_pos_of(n);
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"delay\": expected a mapping, got %s", keel_ynode_type_name(n));
        return -1;
    }
    return keel_config_bind(c, &delay_schema, n, base);
}
static int bind_abort(struct keel_config_ctx *c, const struct keel_ynode *n, void *base)
{
    struct keel_config_http_route *r = base;
    r->abort_pos = keel_config_pos_of(n);
    if (n->type != KEEL_YNODE_MAP) {
        keel_config_err(c, n, "\"abort\": expected a mapping, got %s", keel_ynode_type_name(n));
        return -1;
    }
    return keel_config_bind(c, &abort_schema, n, base);
}
static const struct keel_field fault_fields[] = {
    { .name = "delay", .type = KEEL_FT_CUSTOM, .fn = bind_delay },
    { .name = "abort", .type = KEEL_FT_CUSTOM, .fn = bind_abort },
    END
};
static const struct keel_config_schema fault_schema = { "HTTPFaultInjection", fault_fields, KEEL_UNKNOWN_ERROR,
                                                        false };
static const struct keel_field retries_fields[] = {
    { .name = "attempts", .type = KEEL_FT_INT, .off = HR(retry_attempts) },
    { .name = "perTryTimeout", .type = KEEL_FT_DURATION, .off = HR(per_try_timeout_ms) },
    { .name = "retryOn", .type = KEEL_FT_STR, .off = HR(retry_on), .pos_off = HR(retry_on_pos) },
    { .name = "retryRemoteLocalities", .type = KEEL_FT_ANY },
    { .name = "retryIgnorePreviousHosts", .type = KEEL_FT_ANY },
    { .name = "backoff", .type = KEEL_FT_ANY },
    END
};
static const struct keel_config_schema retries_schema = { "HTTPRetry", retries_fields, KEEL_UNKNOWN_ERROR, false };

static const struct keel_field http_route_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = HR(name) },
    { .name = "match", .type = KEEL_FT_LIST, .off = HR(match), .off2 = HR(n_match), .sub = &http_match_schema,
      .elem_size = sizeof(struct keel_config_http_match) },
    { .name = "route", .type = KEEL_FT_LIST, .off = HR(route), .off2 = HR(n_route), .sub = &route_dest_schema,
      .elem_size = sizeof(struct keel_config_route_dest) },
    { .name = "rewrite", .type = KEEL_FT_OBJ, .off = HR(rewrite_uri), .sub = &rewrite_schema },
    { .name = "timeout", .type = KEEL_FT_DURATION, .off = HR(timeout_ms), .pos_off = HR(timeout_pos) },
    { .name = "retries", .type = KEEL_FT_OBJ, .off = 0, .sub = &retries_schema, .pos_off = HR(retries_pos) },
    { .name = "fault", .type = KEEL_FT_OBJ, .off = 0, .sub = &fault_schema },
    { .name = "headers", .type = KEEL_FT_ANY },
    { .name = "mirror", .type = KEEL_FT_ANY },
    { .name = "mirrors", .type = KEEL_FT_ANY },
    { .name = "mirrorPercentage", .type = KEEL_FT_ANY },
    { .name = "corsPolicy", .type = KEEL_FT_ANY },
    { .name = "redirect", .type = KEEL_FT_ANY },
    { .name = "directResponse", .type = KEEL_FT_ANY },
    { .name = "delegate", .type = KEEL_FT_ANY },
    END
};
#undef HR
static const struct keel_config_schema http_route_schema = { "HTTPRoute", http_route_fields, KEEL_UNKNOWN_ERROR,
                                                             true };

#define VS(f) offsetof(struct keel_config_virtualservice, f)
static const struct keel_field vs_fields[] = {
    { .name = "hosts", .type = KEEL_FT_NAMELIST, .off = VS(hosts), .off2 = VS(n_hosts) },
    { .name = "gateways", .type = KEEL_FT_NAMELIST, .off = VS(gateways), .off2 = VS(n_gateways) },
    { .name = "http", .type = KEEL_FT_LIST, .off = VS(http), .off2 = VS(n_http), .sub = &http_route_schema,
      .elem_size = sizeof(struct keel_config_http_route) },
    { .name = "tcp", .type = KEEL_FT_ANY },
    { .name = "tls", .type = KEEL_FT_ANY },
    { .name = "exportTo", .type = KEEL_FT_ANY },
    END
};
#undef VS
const struct keel_config_schema keel_config_vs_schema = { "VirtualService spec", vs_fields, KEEL_UNKNOWN_ERROR,
                                                          false };

/* ---- DestinationRule ---- */

#define SS(f) offsetof(struct keel_config_subset, f)
static const struct keel_field subset_fields[] = {
    { .name = "name", .type = KEEL_FT_STR, .off = SS(name), .required = true },
    { .name = "labels", .type = KEEL_FT_KVMAP, .off = SS(labels), .off2 = SS(n_labels) },
    { .name = "trafficPolicy", .type = KEEL_FT_ANY },
    END
};
#undef SS
static const struct keel_config_schema subset_schema = { "Subset", subset_fields, KEEL_UNKNOWN_ERROR, true };

/* trafficPolicy: connectionPool.http.h2UpgradePolicy, whole and per port; the other
 * settings (loadBalancer, outlierDetection, tls, ...) are accepted and not applied */
static const char *const h2_policies[] = { "DEFAULT", "DO_NOT_UPGRADE", "UPGRADE", NULL };
static const struct keel_field pool_http_fields[] = {
    { .name = "h2UpgradePolicy", .type = KEEL_FT_ENUM, .off = 0, .enum_names = h2_policies },
    END
};
static const struct keel_config_schema pool_http_schema = { "connectionPool.http", pool_http_fields,
                                                            KEEL_UNKNOWN_IGNORE, false };
static const struct keel_field pool_fields[] = {
    { .name = "http", .type = KEEL_FT_OBJ, .off = 0, .sub = &pool_http_schema },
    END
};
static const struct keel_config_schema pool_schema = { "connectionPool", pool_fields, KEEL_UNKNOWN_IGNORE, false };
#define PP(f) offsetof(struct keel_config_port_policy, f)
static const struct keel_field port_policy_fields[] = {
    { .name = "port", .type = KEEL_FT_OBJ, .off = PP(port), .sub = &port_sel_schema, .required = true },
    { .name = "connectionPool", .type = KEEL_FT_OBJ, .off = PP(h2_upgrade), .sub = &pool_schema },
    END
};
#undef PP
static const struct keel_config_schema port_policy_schema = { "portLevelSettings entry", port_policy_fields,
                                                              KEEL_UNKNOWN_IGNORE, false };
#define TP(f) offsetof(struct keel_config_traffic_policy, f)
static const struct keel_field tp_fields[] = {
    { .name = "connectionPool", .type = KEEL_FT_OBJ, .off = TP(h2_upgrade), .sub = &pool_schema },
    { .name = "portLevelSettings", .type = KEEL_FT_LIST, .off = TP(ports), .off2 = TP(n_ports),
      .sub = &port_policy_schema, .elem_size = sizeof(struct keel_config_port_policy) },
    END
};
#undef TP
static const struct keel_config_schema tp_schema = { "trafficPolicy", tp_fields, KEEL_UNKNOWN_IGNORE, false };

#define DR(f) offsetof(struct keel_config_destinationrule, f)
static const struct keel_field dr_fields[] = {
    { .name = "host", .type = KEEL_FT_NAME, .off = DR(host), .required = true },
    { .name = "subsets", .type = KEEL_FT_LIST, .off = DR(subsets), .off2 = DR(n_subsets), .sub = &subset_schema,
      .elem_size = sizeof(struct keel_config_subset) },
    { .name = "trafficPolicy", .type = KEEL_FT_OBJ, .off = DR(tp), .sub = &tp_schema },
    { .name = "exportTo", .type = KEEL_FT_ANY },
    { .name = "workloadSelector", .type = KEEL_FT_ANY },
    END
};
#undef DR
const struct keel_config_schema keel_config_dr_schema = { "DestinationRule spec", dr_fields, KEEL_UNKNOWN_ERROR,
                                                          false };

/* ---- networking.istio.io Gateway ---- */

#define GS(f) offsetof(struct keel_config_gw_server, f)
static const struct keel_field gw_port_fields[] = {
    { .name = "number", .type = KEEL_FT_PORT, .off = GS(port_number), .required = true },
    { .name = "name", .type = KEEL_FT_STR, .off = GS(port_name) },
    { .name = "protocol", .type = KEEL_FT_STR, .off = GS(port_protocol) },
    { .name = "targetPort", .type = KEEL_FT_ANY },
    END
};
static const struct keel_config_schema gw_port_schema = { "Gateway server port", gw_port_fields,
                                                          KEEL_UNKNOWN_ERROR, false };
static const struct keel_field gw_server_fields[] = {
    { .name = "port", .type = KEEL_FT_OBJ, .off = 0, .sub = &gw_port_schema, .required = true },
    { .name = "hosts", .type = KEEL_FT_NAMELIST, .off = GS(hosts), .off2 = GS(n_hosts), .required = true },
    { .name = "name", .type = KEEL_FT_STR, .off = GS(name) },
    { .name = "bind", .type = KEEL_FT_ANY },
    { .name = "defaultEndpoint", .type = KEEL_FT_ANY },
    { .name = "tls", .type = KEEL_FT_ANY },
    END
};
#undef GS
static const struct keel_config_schema gw_server_schema = { "Gateway server", gw_server_fields,
                                                            KEEL_UNKNOWN_ERROR, true };
#define IG(f) offsetof(struct keel_config_istio_gateway, f)
static const struct keel_field igw_fields[] = {
    { .name = "selector", .type = KEEL_FT_KVMAP, .off = IG(selector), .off2 = IG(n_selector) },
    { .name = "servers", .type = KEEL_FT_LIST, .off = IG(servers), .off2 = IG(n_servers), .sub = &gw_server_schema,
      .elem_size = sizeof(struct keel_config_gw_server) },
    END
};
#undef IG
const struct keel_config_schema keel_config_igw_schema = { "Gateway spec", igw_fields, KEEL_UNKNOWN_ERROR, false };
