/* Where an outbound request goes, by role:
 *   sidecar   a service whose namespace (or itself) is labelled istio.io/use-waypoint
 *             goes to that waypoint; else the mesh VirtualService of the host; else the
 *             registry (round-robin over the service port's endpoints); else the mesh's
 *             outboundTrafficPolicy (passthrough.c).
 *   waypoint  the mesh VirtualService of the host, else the registry.
 *   gateway   only the VirtualServices bound to a Gateway that selects this workload;
 *             nothing else (404 NR), as Istio's ingress gateway.
 * A VirtualService owning the host but matching none of its routes is a 404 NR (as
 * Envoy answers it; the only NR of a sidecar). Then
 * fault injection (abort FI, delay DI), rewrites, the route timeout and retries. */
#include "proxy/session_int.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/rand.h"
#include "telemetry/response_flags.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct route_gen_dest {
    struct gen_port *ports; /* per port of the destination's service */
    size_t n_ports;
};

static bool has_labels(const struct keel_registry_workload *w, const struct keel_config_kv *sel, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool ok = false;
        for (size_t j = 0; w && j < w->n_labels && !ok; j++)
            ok = !strcmp(w->labels[j].key, sel[i].key) && !strcmp(w->labels[j].value, sel[i].value);
        if (!ok)
            return false;
    }
    return true;
}

static bool fill_target(struct keel_proxy_target *t, const char *address, int port, const char *cluster)
{
    char addr[300];
    snprintf(addr, sizeof(addr), strchr(address, ':') ? "[%s]:%d" : "%s:%d", address, port);
    if (keel_addr_parse(addr, &t->addr) < 0)
        return false;
    keel_addr_format((const struct sockaddr *)&t->addr.ss, t->addr_str, sizeof(t->addr_str));
    snprintf(t->cluster, sizeof(t->cluster), "%s", cluster);
    return true;
}

/* The endpoints of a service port that carry the subset's labels (all without one). */
static void build_dest(const struct keel_route_dest *d, struct route_gen_dest *gd)
{
    const struct keel_registry_service *svc = d->service;
    if (svc == NULL || d->subset_missing)
        return;
    gd->n_ports = svc->n_ports;
    gd->ports = keel_calloc(svc->n_ports + 1, sizeof(*gd->ports));
    for (size_t j = 0; j < svc->n_ports; j++) {
        const struct keel_registry_port *rp = &svc->ports[j];
        struct gen_port *gp = &gd->ports[j];
        gp->rp = rp;
        gp->targets = keel_calloc(rp->n_endpoints + 1, sizeof(*gp->targets));
        char cluster[KEEL_CLUSTER_MAX];
        snprintf(cluster, sizeof(cluster), "outbound|%d|%s|%s", rp->port, d->subset ? d->subset : "", svc->fqdn);
        for (size_t k = 0; k < rp->n_endpoints; k++) {
            const struct keel_registry_endpoint *ep = &rp->endpoints[k];
            if (d->subset && !has_labels(ep->workload, d->subset_labels, d->n_subset_labels))
                continue;
            if (fill_target(&gp->targets[gp->n_targets], ep->address, ep->port, cluster))
                gp->targets[gp->n_targets++].workload = ep->workload;
        }
    }
}

void route_gen_build(struct proxy_gen *g, const struct server *srv)
{
    struct route_gen *rg = &g->route;
    const struct keel_config *cfg = g->cfg;
    const struct keel_routing *r = cfg->routing;
    rg->n_dests = r ? r->n_dests : 0;
    rg->dests = keel_calloc(rg->n_dests + 1, sizeof(*rg->dests));
    for (size_t i = 0; i < rg->n_dests; i++)
        build_dest(r->dests[i], &rg->dests[i]);
    rg->waypoints = keel_calloc(g->n_ports + 1, sizeof(*rg->waypoints));
    for (size_t i = 0; r && i < cfg->n_services; i++) {
        const struct keel_route_waypoint *wp = &r->waypoints[i];
        if (wp->workload == NULL)
            continue;
        const struct keel_registry_service *svc = &cfg->services[i];
        for (size_t j = 0; j < svc->n_ports; j++) {
            char cluster[KEEL_CLUSTER_MAX];
            snprintf(cluster, sizeof(cluster), "outbound|%d||%s", svc->ports[j].port, svc->fqdn);
            if (!fill_target(&rg->waypoints[g->port_base[i] + j], wp->workload->address, wp->port, cluster))
                keel_log_warn("waypoint %s of %s: address %s does not resolve", wp->workload->key, svc->fqdn,
                              wp->workload->address);
        }
    }
    if (srv->opt->role == KEEL_PROXY_SIDECAR && cfg->mesh.outbound_mode == KEEL_CONFIG_ALLOW_ANY)
        route_hosts_load(rg, "/etc/hosts");
    if (srv->opt->role == KEEL_PROXY_GATEWAY) {
        if (g->self != NULL)
            rg->n_gw_vs = keel_routing_gateway_vs(cfg, g->self->labels, g->self->n_labels, &rg->gw_vs);
        else
            rg->gw_vs = keel_calloc(1, sizeof(*rg->gw_vs));
    }
}

void route_gen_free(struct proxy_gen *g)
{
    struct route_gen *rg = &g->route;
    for (size_t i = 0; i < rg->n_dests; i++) {
        for (size_t j = 0; j < rg->dests[i].n_ports; j++)
            free(rg->dests[i].ports[j].targets);
        free(rg->dests[i].ports);
    }
    free(rg->dests);
    free(rg->waypoints);
    free(rg->gw_vs);
    route_hosts_free(rg);
}

/* ---- per request ---- */

void route_state_reset(struct session *s)
{
    struct route_state *rt = &s->rt;
    keel_timer_cancel(s->w->loop, &rt->delay);
    keel_buf_release(&rt->path);
    rt->http = NULL;
    rt->which = NULL;
    rt->targets = NULL;
    rt->deadline_us = 0;
    rt->retries_left = 0;
    rt->retried_any = false;
    rt->src_peer = NULL;
    rt->src_peer_raw = (struct keel_str){ NULL, 0 };
    rt->name = NULL;
}

static void set_service(struct session *s, const struct keel_registry_service *svc)
{
    s->svc_host = keel_str_c(svc->fqdn);
    s->svc_name = keel_str_c(svc->name);
    s->svc_ns = keel_str_c(svc->namespace);
}

static enum route_result pick_target(struct session *s, const struct gen_port *gp)
{
    s->rt.targets = gp;
    if (gp == NULL || gp->n_targets == 0)
        return ROUTE_NO_ENDPOINT;
    s->target = &gp->targets[s->w->rr++ % gp->n_targets];
    return ROUTE_OK;
}

/* The port of the destination's service: the route's, else the one the request was
 * for when the service has it, else its first. -1: the route's port does not exist. */
static int dest_port_index(const struct keel_route_dest *d, int req_port)
{
    const struct keel_registry_service *svc = d->service;
    int want = d->port ? d->port : req_port;
    for (size_t i = 0; i < svc->n_ports; i++)
        if (svc->ports[i].port == want)
            return (int)i;
    return d->port ? -1 : 0;
}

static enum route_result route_vs(struct session *s, const struct keel_route_vs *v, int req_port)
{
    const struct proxy_gen *g = s->wg->g;
    /* sourceLabels are the calling workload's: ours, except at a waypoint (not matched there) */
    bool own = session_srv(s)->opt->role != KEEL_PROXY_WAYPOINT && g->self != NULL;
    struct keel_route_req rq = {
        .method = s->req.method, .path = s->path, .authority = s->authority, .scheme = LIT("http"),
        .headers = s->hdrs, .n_headers = s->req.n_headers, .port = req_port,
        .source_labels = own ? g->self->labels : NULL, .n_source_labels = own ? g->self->n_labels : 0,
    };
    const struct keel_route_http *h = keel_route_select(v, &rq, &s->rt.which);
    if (h == NULL)
        return ROUTE_NONE;
    s->rt.http = h;
    s->rt.retries_left = h->retry_attempts;
    const struct keel_route_dest *d = keel_route_pick(h, keel_rand64());
    if (d == NULL)
        return ROUTE_NONE;
    if (d->service == NULL || d->subset_missing) {
        s->svc_host = s->svc_name = keel_str_c(d->host);
        return ROUTE_NO_CLUSTER;
    }
    set_service(s, d->service);
    int pi = dest_port_index(d, req_port);
    if (pi < 0)
        return ROUTE_NO_CLUSTER;
    return pick_target(s, &g->route.dests[d->index].ports[pi]);
}

enum route_result route_outbound(struct session *s, struct keel_str host, int port, bool has_port)
{
    const struct proxy_gen *g = s->wg->g;
    const struct keel_config *cfg = g->cfg;
    enum keel_proxy_role role = session_srv(s)->opt->role;
    if (cfg == NULL || host.len == 0)
        return ROUTE_NONE;
    if (role == KEEL_PROXY_WAYPOINT) {
        for (size_t i = 0; i < s->req.n_headers; i++)
            if (keel_http_hdr_id(&s->hdrs[i]) == KEEL_HDR_X_KEEL_PEER_METADATA) {
                s->rt.src_peer_raw = s->hdrs[i].value;
                keel_peer_parse(s->hdrs[i].value, &s->tables->src_peer);
                s->rt.src_peer = &s->tables->src_peer;
            }
    }
    const char *ns = g->self != NULL ? g->self->namespace : g->self_ns[0] ? g->self_ns : NULL;
    const struct keel_registry_port *rp = keel_registry_resolve(cfg, host.p, host.len, has_port ? port : 0, ns);
    int req_port = has_port ? port : rp ? rp->port : 80;
    if (role == KEEL_PROXY_SIDECAR && rp != NULL) {
        const struct keel_registry_service *svc = rp->service;
        size_t si = (size_t)(svc - cfg->services), pi = (size_t)(rp - svc->ports);
        const struct keel_proxy_target *wt = &g->route.waypoints[g->port_base[si] + pi];
        if (wt->addr_str[0] != '\0') { /* the waypoint applies the routes */
            set_service(s, svc);
            s->target = wt;
            return ROUTE_OK;
        }
    }
    const struct keel_route_vs *v = NULL;
    const char *fqdn = rp ? rp->service->fqdn : NULL;
    if (role == KEEL_PROXY_GATEWAY) {
        for (size_t i = 0; i < g->route.n_gw_vs && v == NULL; i++)
            if (keel_route_vs_has_host(g->route.gw_vs[i], host, fqdn))
                v = g->route.gw_vs[i];
        return v ? route_vs(s, v, req_port) : ROUTE_NONE;
    }
    v = keel_routing_mesh_vs(cfg, host, fqdn);
    if (v != NULL)
        return route_vs(s, v, req_port);
    if (rp == NULL) /* outboundTrafficPolicy (passthrough.c); a gateway or waypoint: NR */
        return role == KEEL_PROXY_SIDECAR ? route_passthrough(s, host, req_port) : ROUTE_NONE;
    set_service(s, rp->service);
    return pick_target(s, gen_port_of(g, rp));
}

static bool roll(uint32_t ppm)
{
    return ppm >= 1000000 || keel_rand64() % 1000000 < ppm;
}

static void on_delay(struct keel_timer *t)
{
    struct session *s = (struct session *)((char *)t - offsetof(struct session, rt.delay));
    if (s->phase == PH_CLOSED)
        return;
    session_http_proceed(s);
    session_run(s);
}

bool route_before_upstream(struct session *s)
{
    const struct keel_route_http *h = s->rt.http;
    if (h == NULL)
        return false;
    if (h->abort_status && roll(h->abort_ppm)) {
        session_local_reply(s, h->abort_status, KEEL_RF_FI, "fault_filter_abort", "fault filter abort", false);
        return true;
    }
    if (h->rewrite_uri != NULL) {
        size_t cap = s->path.len + h->rewrite_uri_len;
        keel_buf_reserve(&s->rt.path, cap);
        size_t n = keel_route_rewrite_path(h, s->rt.which, s->path, keel_buf_wptr(&s->rt.path), cap);
        if (n > 0) {
            s->rt.path.wpos += n;
            s->path = (struct keel_str){ keel_buf_rptr(&s->rt.path), n };
        }
    }
    if (h->rewrite_authority != NULL)
        s->authority = keel_str_c(h->rewrite_authority);
    if (h->delay_ms > 0 && roll(h->delay_ppm)) {
        s->flags |= KEEL_RF_DI;
        s->phase = PH_CONNECT; /* nothing runs until the delay ends */
        session_set_timer(s, T_BODY, session_stream_idle_ms(s));
        s->rt.delay.cb = on_delay;
        keel_timer_set(s->w->loop, &s->rt.delay, h->delay_ms);
        return true;
    }
    return false;
}

int64_t route_attempt_timeout_ms(struct session *s, int64_t listener_ms)
{
    const struct keel_route_http *h = s->rt.http;
    if (h == NULL || (h->timeout_ms == 0 && h->per_try_timeout_ms == 0))
        return listener_ms;
    int64_t now = keel_loop_now_us(s->w->loop);
    if (s->rt.deadline_us == 0 && h->timeout_ms > 0)
        s->rt.deadline_us = now + h->timeout_ms * 1000;
    int64_t t = h->timeout_ms > 0 ? (s->rt.deadline_us - now + 999) / 1000 : listener_ms;
    if (h->per_try_timeout_ms > 0 && (t <= 0 || h->per_try_timeout_ms < t))
        t = h->per_try_timeout_ms;
    return t > 0 ? t : 1;
}

static bool retriable(uint32_t on, uint32_t cond, int status)
{
    if (status != 0)
        return ((on & KEEL_RETRY_5XX) && status >= 500 && status <= 599) ||
               ((on & KEEL_RETRY_GATEWAY_ERROR) && status >= 502 && status <= 504) ||
               ((on & KEEL_RETRY_503) && status == 503) || ((on & KEEL_RETRY_RETRIABLE_4XX) && status == 409);
    /* Envoy: 5xx and gateway-error also cover a connect failure, a reset and a timeout */
    if (on & (KEEL_RETRY_5XX | KEEL_RETRY_GATEWAY_ERROR))
        return true;
    return (on & cond) != 0;
}

bool route_retry(struct session *s, uint32_t cond, int status)
{
    const struct keel_route_http *h = s->rt.http;
    if (h == NULL || h->retry_attempts == 0 || !retriable(h->retry_on, cond, status))
        return false;
    /* the request body streamed upstream is gone: only bodyless requests are replayed */
    if (s->meta.body != KEEL_HTTP_BODY_NONE || s->res_head_done || s->upgrade)
        return false;
    if (s->rt.retries_left == 0 ||
        (s->rt.deadline_us && keel_loop_now_us(s->w->loop) >= s->rt.deadline_us)) {
        if (s->rt.retried_any)
            s->flags |= KEEL_RF_URX;
        return false;
    }
    s->rt.retries_left--;
    s->rt.retried_any = true;
    stat_add(&s->w->stats.upstream_rq_retry, 1);
    const struct gen_port *gp = s->rt.targets;
    if (gp != NULL && gp->n_targets > 0)
        s->target = &gp->targets[s->w->rr++ % gp->n_targets];
    s->t_upstream_sent_us = s->t_first_byte_us = -1;
    keel_buf_release(&s->rhead);
    return true;
}
