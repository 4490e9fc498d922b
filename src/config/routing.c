/* VirtualServices, DestinationRules, networking Gateways and waypoint Namespaces compiled
 * into struct keel_routing once per generation: hosts resolved to FQDNs, destinations to
 * registry services with their subset labels, regexes compiled, fault percentages in
 * parts per million, retryOn as a bit set. The request path (route_match.c) then only
 * compares bytes. */
#include "config/config_int.h"

#include "core/alloc.h"
#include "expr/expr.h"

#include <ctype.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A VirtualService / DestinationRule host as an FQDN: a short name is a Service of the
 * resource's namespace ("reviews" -> reviews.default.svc.cluster.local); anything with a
 * dot or a wildcard is taken as written. Lower case, as DNS compares. */
static const char *resolve_host(struct keel_config_ctx *c, const char *h, const char *ns)
{
    char *out;
    if (strchr(h, '.') == NULL && strchr(h, '*') == NULL)
        out = keel_config_arena_printf(c->a, "%s.%s.svc.cluster.local", h, ns);
    else
        out = keel_config_arena_printf(c->a, "%s", h);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

static void keep_regex(struct keel_config_ctx *c, regex_t *re)
{
    struct keel_config_impl *im = c->cfg->impl;
    if (im->n_regexes == im->cap_regexes) {
        im->cap_regexes = im->cap_regexes ? 2 * im->cap_regexes : 8;
        im->regexes = keel_realloc(im->regexes, im->cap_regexes * sizeof(*im->regexes));
    }
    im->regexes[im->n_regexes++] = re;
}

/* Envoy's safe_regex matches the whole value: anchor it. The expr layer's compiler
 * refuses what RE2 refuses, so a config valid for Istio behaves the same here. */
static int compile_regex(struct keel_config_ctx *c, const struct keel_config_string_match *m,
                         struct keel_route_strmatch *out, bool icase)
{
    const char *p = m->regex;
    bool ci = icase;
    if (!strncmp(p, "(?i)", 4)) {
        ci = true;
        p += 4;
    }
    char *anchored = keel_config_arena_printf(c->a, "%s^(%s)$", ci ? "(?i)" : "", p);
    regex_t *re = keel_config_arena_alloc(c->a, sizeof(*re));
    if (keel_expr_regcomp(re, anchored, strlen(anchored)) < 0) {
        keel_config_err_at(c, &m->regex_pos, "invalid regex \"%s\" (RE2 syntax, as Envoy's safe_regex)", m->regex);
        return -1;
    }
    keep_regex(c, re);
    out->re = re;
    return 0;
}

static int compile_sm(struct keel_config_ctx *c, const struct keel_config_string_match *m,
                      struct keel_route_strmatch *out, bool icase)
{
    memset(out, 0, sizeof(*out));
    out->icase = icase;
    if (m->exact) {
        out->kind = KEEL_SM_EXACT;
        out->s = m->exact;
    } else if (m->prefix) {
        out->kind = KEEL_SM_PREFIX;
        out->s = m->prefix;
    } else if (m->regex) {
        out->kind = KEEL_SM_REGEX;
        out->s = m->regex;
        out->len = strlen(m->regex);
        return compile_regex(c, m, out, icase);
    } else {
        return 0;
    }
    out->len = strlen(out->s);
    return 0;
}

static int compile_kvs(struct keel_config_ctx *c, const struct keel_config_kv_match *in, size_t n, bool negate,
                       struct keel_route_kvmatch *out)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        out[i].name = keel_str_c(in[i].name);
        out[i].negate = negate;
        if (compile_sm(c, &in[i].m, &out[i].m, false) < 0)
            rc = -1;
        if (out[i].m.kind == KEEL_SM_ANY)
            out[i].m.kind = KEEL_SM_PRESENT;
    }
    return rc;
}

static void compile_match(struct keel_config_ctx *c, const struct keel_config_http_match *in,
                          struct keel_route_match *out)
{
    compile_sm(c, &in->uri, &out->uri, in->ignore_uri_case);
    compile_sm(c, &in->method, &out->method, false);
    compile_sm(c, &in->authority, &out->authority, true);
    compile_sm(c, &in->scheme, &out->scheme, false);
    out->n_headers = in->n_headers + in->n_without_headers;
    out->headers = keel_config_arena_alloc(c->a, (out->n_headers ? out->n_headers : 1) * sizeof(*out->headers));
    compile_kvs(c, in->headers, in->n_headers, false, out->headers);
    compile_kvs(c, in->without_headers, in->n_without_headers, true, out->headers + in->n_headers);
    out->n_query = in->n_query_params;
    out->query = keel_config_arena_alloc(c->a, (out->n_query ? out->n_query : 1) * sizeof(*out->query));
    compile_kvs(c, in->query_params, in->n_query_params, false, out->query);
    out->port = (int)in->port;
    out->source_labels = in->source_labels;
    out->n_source_labels = in->n_source_labels;
}

static const struct keel_config_destinationrule *find_dr(struct keel_config_ctx *c, const char *fqdn)
{
    for (struct keel_config_object *o = c->cfg->first[KEEL_CONFIG_DESTINATIONRULE]; o; o = o->next) {
        const struct keel_config_destinationrule *dr = (const struct keel_config_destinationrule *)o;
        if (!o->invalid && dr->host.s && !strcmp(resolve_host(c, dr->host.s, o->namespace), fqdn))
            return dr;
    }
    return NULL;
}

static void compile_dest(struct keel_config_ctx *c, struct keel_routing *r, const struct keel_config_virtualservice *vs,
                         const struct keel_config_route_dest *in, struct keel_route_dest *out)
{
    const char *ns = vs->obj.namespace;
    out->host = resolve_host(c, in->host.s, ns);
    const struct keel_registry_port *rp = keel_registry_resolve(c->cfg, in->host.s, strlen(in->host.s), 0, ns);
    out->service = rp ? rp->service : NULL;
    out->port = (int)in->port;
    if (out->service == NULL) {
        keel_config_warn_at(c, &in->host.pos,
                            "destination host \"%s\" is not a Service or ServiceEntry host; requests routed "
                            "there get 503 NC", in->host.s);
    } else if (out->port) {
        bool found = false;
        for (size_t i = 0; i < out->service->n_ports && !found; i++)
            found = out->service->ports[i].port == out->port;
        if (!found)
            keel_config_warn_at(c, &in->host.pos, "service \"%s\" has no port %d; requests routed there get 503 NC",
                                out->service->fqdn, out->port);
    }
    if (in->weight < 0 || in->weight > 100000)
        keel_config_err_at(c, &in->weight_pos, "weight %lld out of range 0-100", (long long)in->weight);
    out->weight = in->weight > 0 && in->weight <= 100000 ? (uint32_t)in->weight : 0;
    if (in->subset) {
        out->subset = in->subset;
        const struct keel_config_destinationrule *dr =
            find_dr(c, out->service ? out->service->fqdn : out->host);
        const struct keel_config_subset *ss = NULL;
        for (size_t i = 0; dr && i < dr->n_subsets && !ss; i++)
            if (!strcmp(dr->subsets[i].name, in->subset))
                ss = &dr->subsets[i];
        if (ss) {
            out->subset_labels = ss->labels;
            out->n_subset_labels = ss->n_labels;
        } else {
            out->subset_missing = true;
            keel_config_warn_at(c, &in->subset_pos,
                                "subset \"%s\" of \"%s\" is not defined by any DestinationRule; requests routed "
                                "there get 503 NC", in->subset, out->host);
        }
    }
    out->index = r->n_dests; /* r->dests was sized by a count of every route[] entry */
    r->dests[r->n_dests++] = out;
}

/* Envoy's retry_on list: what keel can see over HTTP/1.1 is implemented, the gRPC and
 * HTTP/2 conditions are accepted and never fire. */
static uint32_t parse_retry_on(struct keel_config_ctx *c, const struct keel_config_http_route *in)
{
    if (in->retry_on == NULL || in->retry_on[0] == '\0') /* Istio's default policy */
        return KEEL_RETRY_CONNECT_FAILURE | KEEL_RETRY_REFUSED_STREAM | KEEL_RETRY_503;
    static const struct { const char *name; uint32_t bits; } names[] = {
        { "5xx", KEEL_RETRY_5XX }, { "gateway-error", KEEL_RETRY_GATEWAY_ERROR },
        { "connect-failure", KEEL_RETRY_CONNECT_FAILURE }, { "reset", KEEL_RETRY_RESET },
        { "retriable-4xx", KEEL_RETRY_RETRIABLE_4XX }, { "refused-stream", KEEL_RETRY_REFUSED_STREAM },
        { "retriable-status-codes", KEEL_RETRY_503 }, { "unavailable", KEEL_RETRY_503 },
        { "cancelled", 0 }, { "deadline-exceeded", 0 }, { "resource-exhausted", 0 }, { "internal", 0 },
        { "envoy-ratelimited", 0 }, { "retriable-headers", 0 }, { "http3-post-connect-failure", 0 },
        { "reset-before-request", KEEL_RETRY_RESET },
    };
    uint32_t bits = 0;
    const char *p = in->retry_on;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *tok = p;
        size_t tn = n;
        while (tn && isspace((unsigned char)*tok)) {
            tok++;
            tn--;
        }
        while (tn && isspace((unsigned char)tok[tn - 1]))
            tn--;
        bool known = false;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && !known; i++)
            if (strlen(names[i].name) == tn && !strncmp(names[i].name, tok, tn)) {
                bits |= names[i].bits;
                known = true;
            }
        bool code = tn > 0;
        for (size_t i = 0; i < tn; i++)
            code = code && isdigit((unsigned char)tok[i]);
        if (code && tn == 3 && !strncmp(tok, "503", 3)) {
            bits |= KEEL_RETRY_503;
            known = true;
        } else if (code) {
            known = true; /* other status codes: Envoy retries them with retriable-status-codes */
        }
        if (!known && tn)
            keel_config_warn_at(c, &in->retry_on_pos, "retryOn \"%.*s\" is not a retry condition keel knows; ignored",
                                (int)tn, tok);
        p += n;
        if (*p == ',')
            p++;
    }
    return bits;
}

static uint32_t ppm(struct keel_config_ctx *c, const struct keel_config_pos *pct_pos, double pct, int64_t percent,
                    const struct keel_config_pos *at)
{
    double v = pct_pos->line ? pct : percent > 0 ? (double)percent : 100.0;
    if (v < 0 || v > 100) {
        keel_config_err_at(c, pct_pos->line ? pct_pos : at, "percentage %g out of range 0-100", v);
        return 0;
    }
    return (uint32_t)(v * 10000.0 + 0.5);
}

static void compile_http(struct keel_config_ctx *c, struct keel_routing *r, const struct keel_config_virtualservice *vs,
                         const struct keel_config_http_route *in, struct keel_route_http *out)
{
    out->name = in->name ? in->name : "";
    out->n_match = in->n_match;
    out->match = keel_config_arena_alloc(c->a, (in->n_match ? in->n_match : 1) * sizeof(*out->match));
    for (size_t i = 0; i < in->n_match; i++)
        compile_match(c, &in->match[i], &out->match[i]);
    if (in->n_route == 0)
        keel_config_err_at(c, &in->pos, "HTTPRoute%s%s%s has no route (keel supports route destinations, not "
                           "redirect or directResponse)", in->name ? " \"" : "", in->name ? in->name : "",
                           in->name ? "\"" : "");
    out->n_dests = in->n_route;
    out->dests = keel_config_arena_alloc(c->a, (in->n_route ? in->n_route : 1) * sizeof(*out->dests));
    uint32_t total = 0;
    bool any_weight = false;
    for (size_t i = 0; i < in->n_route; i++) {
        compile_dest(c, r, vs, &in->route[i], &out->dests[i]);
        total += out->dests[i].weight;
        any_weight |= in->route[i].weight_pos.line != 0;
    }
    /* no weights (or all zero): everything to the first destination, as Istio does */
    out->total_weight = any_weight ? total : 0;
    if (any_weight && total != 100 && in->n_route > 0)
        keel_config_warn_at(c, &in->route[0].pos, "route weights add up to %u, not 100; traffic is split in "
                            "proportion", total);
    out->rewrite_uri = in->rewrite_uri;
    out->rewrite_uri_len = in->rewrite_uri ? strlen(in->rewrite_uri) : 0;
    out->rewrite_authority = in->rewrite_authority;
    out->timeout_ms = in->timeout_ms;
    if (in->retries_pos.line && in->retry_attempts > 0) {
        out->retry_attempts = in->retry_attempts > 10 ? 10 : (uint32_t)in->retry_attempts;
        out->per_try_timeout_ms = in->per_try_timeout_ms;
        out->retry_on = parse_retry_on(c, in);
    }
    if (in->retry_attempts < 0)
        keel_config_err_at(c, &in->retries_pos, "retries.attempts must be >= 0");
    if (in->delay_pos.line) {
        out->delay_ms = in->fixed_delay_ms;
        out->delay_ppm = ppm(c, &in->delay_pct_pos, in->delay_pct.value, in->delay_percent, &in->delay_pos);
    }
    if (in->abort_pos.line) {
        if (in->abort_status < 200 || in->abort_status > 599)
            keel_config_err_at(c, &in->abort_status_pos, "fault abort httpStatus %lld is not an HTTP status "
                               "(200-599)", (long long)in->abort_status);
        out->abort_status = (int)in->abort_status;
        out->abort_ppm = ppm(c, &in->abort_pct_pos, in->abort_pct.value, in->abort_percent, &in->abort_pos);
    }
    if ((in->delay_pos.line || in->abort_pos.line) && (in->retries_pos.line || in->timeout_pos.line))
        keel_config_warn_at(c, in->timeout_pos.line ? &in->timeout_pos : &in->retries_pos,
                            "with a fault, Istio does not apply this route's timeout or retries; neither does keel");
    if (in->delay_pos.line || in->abort_pos.line) {
        out->timeout_ms = 0;
        out->retry_attempts = 0;
    }
}

static void compile_vs(struct keel_config_ctx *c, struct keel_routing *r, const struct keel_config_virtualservice *vs,
                       struct keel_route_vs *out)
{
    const char *ns = vs->obj.namespace;
    out->vs = vs;
    if (vs->n_hosts == 0)
        keel_config_err_at(c, &vs->obj.pos, "VirtualService \"%s\" has no hosts", vs->obj.name);
    out->n_hosts = vs->n_hosts;
    out->hosts = keel_config_arena_alloc(c->a, (vs->n_hosts ? vs->n_hosts : 1) * sizeof(*out->hosts));
    for (size_t i = 0; i < vs->n_hosts; i++)
        out->hosts[i] = resolve_host(c, vs->hosts[i].s, ns);
    out->mesh = vs->n_gateways == 0;
    out->gateways = keel_config_arena_alloc(c->a, (vs->n_gateways ? vs->n_gateways : 1) * sizeof(*out->gateways));
    for (size_t i = 0; i < vs->n_gateways; i++) {
        const char *g = vs->gateways[i].s;
        if (!strcmp(g, "mesh")) {
            out->mesh = true;
            continue;
        }
        out->gateways[out->n_gateways++] =
            strchr(g, '/') ? g : keel_config_arena_printf(c->a, "%s/%s", ns, g);
    }
    out->n_http = vs->n_http;
    out->http = keel_config_arena_alloc(c->a, (vs->n_http ? vs->n_http : 1) * sizeof(*out->http));
    for (size_t i = 0; i < vs->n_http; i++)
        compile_http(c, r, vs, &vs->http[i], &out->http[i]);
}

static const char *label_of(const struct keel_config_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(kv[i].key, key))
            return kv[i].value;
    return NULL;
}

/* istio.io/use-waypoint on the Service, else on its Namespace: the WorkloadEntry of that
 * namespace labelled gateway.networking.k8s.io/gateway-name receives its traffic. */
static void find_waypoint(struct keel_config_ctx *c, const struct keel_registry_service *s,
                          struct keel_route_waypoint *out)
{
    const char *w = label_of(s->source->labels, s->source->n_labels, "istio.io/use-waypoint");
    const struct keel_config_object *nso = NULL;
    if (w == NULL) {
        nso = keel_config_find(c->cfg, KEEL_CONFIG_NAMESPACE, NULL, s->namespace);
        if (nso)
            w = label_of(nso->labels, nso->n_labels, "istio.io/use-waypoint");
    }
    if (w == NULL || !strcmp(w, "none") || w[0] == '\0')
        return;
    for (size_t i = 0; i < c->cfg->n_workloads; i++) {
        const struct keel_registry_workload *wl = &c->cfg->workloads[i];
        const char *gn = label_of(wl->labels, wl->n_labels, "gateway.networking.k8s.io/gateway-name");
        if (strcmp(wl->namespace, s->namespace) || gn == NULL || strcmp(gn, w) || wl->n_ports == 0)
            continue;
        out->workload = wl;
        out->port = (int)wl->ports_num[0];
        for (size_t j = 0; j < wl->n_ports; j++)
            if (!strcmp(wl->ports[j].key, "http"))
                out->port = (int)wl->ports_num[j];
        return;
    }
    keel_config_warn_at(c, nso ? &nso->pos : &s->source->pos,
                        "\"%s\" uses waypoint \"%s\", but no WorkloadEntry in namespace \"%s\" is labelled "
                        "gateway.networking.k8s.io/gateway-name: %s with a port; its traffic goes direct",
                        s->fqdn, w, s->namespace, w);
}

/* h2UpgradePolicy per HTTP port (Istio's): the mesh's, unless a DestinationRule for the
 * host says otherwise, for the whole host or (portLevelSettings) for the port. */
static void h2_upgrade_ports(struct keel_config_ctx *c)
{
    struct keel_config *cfg = c->cfg;
    for (size_t i = 0; i < cfg->n_services; i++) {
        struct keel_registry_service *svc = &cfg->services[i];
        const struct keel_config_destinationrule *dr = find_dr(c, svc->fqdn);
        for (size_t j = 0; j < svc->n_ports; j++) {
            struct keel_registry_port *rp = &svc->ports[j];
            int p = dr ? dr->tp.h2_upgrade : KEEL_CONFIG_H2_DEFAULT;
            for (size_t k = 0; dr && k < dr->tp.n_ports; k++)
                if (dr->tp.ports[k].port == rp->port && dr->tp.ports[k].h2_upgrade != KEEL_CONFIG_H2_DEFAULT)
                    p = dr->tp.ports[k].h2_upgrade;
            if (p == KEEL_CONFIG_H2_DEFAULT)
                p = cfg->mesh.h2_upgrade_policy == 1 ? KEEL_CONFIG_H2_UPGRADE : KEEL_CONFIG_H2_DO_NOT_UPGRADE;
            rp->h2_upgrade = p == KEEL_CONFIG_H2_UPGRADE && rp->protocol == KEEL_PROTO_HTTP;
        }
    }
}

int keel_config_build_routing(struct keel_config_ctx *c)
{
    struct keel_config *cfg = c->cfg;
    struct keel_routing *r = keel_config_arena_alloc(c->a, sizeof(*r));
    cfg->routing = r;
    int before = c->errors;
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_DESTINATIONRULE]; o; o = o->next) {
        const struct keel_config_destinationrule *dr = (const struct keel_config_destinationrule *)o;
        for (size_t i = 0; i < dr->n_subsets; i++)
            for (size_t j = 0; j < i; j++)
                if (!strcmp(dr->subsets[i].name, dr->subsets[j].name))
                    keel_config_err_at(c, &dr->subsets[i].pos, "subset \"%s\" defined twice (first at line %d)",
                                       dr->subsets[i].name, dr->subsets[j].pos.line);
    }
    h2_upgrade_ports(c);
    size_t n_dests = 0;
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_VIRTUALSERVICE]; o; o = o->next) {
        const struct keel_config_virtualservice *vs = (const struct keel_config_virtualservice *)o;
        for (size_t i = 0; !o->invalid && i < vs->n_http; i++)
            n_dests += vs->http[i].n_route;
    }
    r->dests = keel_config_arena_alloc(c->a, (n_dests ? n_dests : 1) * sizeof(*r->dests));
    r->vs = keel_config_arena_alloc(c->a, (cfg->count[KEEL_CONFIG_VIRTUALSERVICE] + 1) * sizeof(*r->vs));
    for (struct keel_config_object *o = cfg->first[KEEL_CONFIG_VIRTUALSERVICE]; o; o = o->next)
        if (!o->invalid)
            compile_vs(c, r, (const struct keel_config_virtualservice *)o, &r->vs[r->n_vs++]);
    r->waypoints = keel_config_arena_alloc(c->a, (cfg->n_services ? cfg->n_services : 1) * sizeof(*r->waypoints));
    for (size_t i = 0; i < cfg->n_services; i++)
        find_waypoint(c, &cfg->services[i], &r->waypoints[i]);
    return c->errors > before ? -1 : 0;
}

void keel_config_routing_fini(struct keel_config_impl *im)
{
    for (size_t i = 0; i < im->n_regexes; i++)
        regfree(im->regexes[i]);
    free(im->regexes);
}

/* ---- gateway binding ---- */

static bool selects_all(const struct keel_config_kv *sel, size_t n_sel, const struct keel_config_kv *labels,
                        size_t n_labels)
{
    for (size_t i = 0; i < n_sel; i++) {
        const char *v = label_of(labels, n_labels, sel[i].key);
        if (v == NULL || strcmp(v, sel[i].value))
            return false;
    }
    return true;
}

size_t keel_routing_gateway_vs(const struct keel_config *cfg, const struct keel_config_kv *labels, size_t n_labels,
                               const struct keel_route_vs ***out)
{
    const struct keel_routing *r = cfg->routing;
    size_t n = 0;
    *out = keel_calloc((r ? r->n_vs : 0) + 1, sizeof(**out));
    for (size_t i = 0; r && i < r->n_vs; i++) {
        const struct keel_route_vs *v = &r->vs[i];
        bool bound = false;
        for (size_t g = 0; g < v->n_gateways && !bound; g++) {
            const char *slash = strchr(v->gateways[g], '/');
            for (const struct keel_config_object *o = cfg->first[KEEL_CONFIG_ISTIO_GATEWAY]; o && !bound;
                 o = o->next) {
                const struct keel_config_istio_gateway *gw = (const struct keel_config_istio_gateway *)o;
                bound = strlen(o->namespace) == (size_t)(slash - v->gateways[g]) &&
                        !strncmp(o->namespace, v->gateways[g], (size_t)(slash - v->gateways[g])) &&
                        !strcmp(o->name, slash + 1) &&
                        selects_all(gw->selector, gw->n_selector, labels, n_labels);
            }
        }
        if (bound)
            (*out)[n++] = v;
    }
    return n;
}
