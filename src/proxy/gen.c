/* Config generations as the proxy sees them. A proxy_gen wraps one immutable
 * keel_config with what routing needs precomputed (upstream targets per service port).
 * The main thread publishes a new one on reload; each worker switches to it between
 * events and keeps the old one alive while requests that started on it are in flight:
 * the per-request user count is a plain per-worker integer, the atomic refcount moves
 * only once per worker per reload. */
#include "proxy/proxy_int.h"

#include "core/alloc.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How the inbound listener speaks to the app when --upstream-protocol does not say: as
 * Istio does, by the protocol of the workload's port the listener serves (its name, or the
 * appProtocol of a Service port that targets it by name). */
static bool speaks_h2(enum keel_proto p)
{
    return p == KEEL_PROTO_GRPC || p == KEEL_PROTO_GRPC_WEB || p == KEEL_PROTO_HTTP2;
}

static void inbound_protocol(struct proxy_gen *g, const struct server *srv)
{
    const struct keel_proxy_options *o = srv->opt;
    struct keel_addr a;
    if (o->upstream_protocol != 0 || o->inbound == NULL || keel_addr_parse(o->inbound, &a) < 0)
        return;
    int port = keel_addr_port(&a);
    const struct keel_registry_workload *wl = g->self;
    for (size_t i = 0; i < wl->n_ports; i++) {
        if (wl->ports_num[i] != port)
            continue;
        const char *name = wl->ports[i].key;
        g->inbound_h2 |= speaks_h2(keel_proto_of_port(name, NULL, NULL, port));
        for (size_t s = 0; s < wl->n_services; s++)
            for (size_t j = 0; j < wl->services[s]->n_ports; j++) {
                const struct keel_registry_port *rp = &wl->services[s]->ports[j];
                if (rp->target_port_name != NULL && !strcmp(rp->target_port_name, name))
                    g->inbound_h2 |= speaks_h2(rp->protocol);
            }
    }
}

/* Who we are, in the forms the bag, the peer header and the telemetry plan want. */
static void self_identity(struct proxy_gen *g)
{
    const struct keel_registry_workload *wl = g->self;
    struct keel_peer meta = { .present = true };
    g->self_labels = keel_calloc(wl->n_labels + 1, sizeof(*g->self_labels));
    size_t n = wl->n_labels < KEEL_PEER_MAX_LABELS ? wl->n_labels : KEEL_PEER_MAX_LABELS;
    for (size_t i = 0; i < n; i++) {
        g->self_labels[i].k = keel_str_c(wl->labels[i].key);
        g->self_labels[i].v = keel_str_c(wl->labels[i].value);
        meta.labels[i] = g->self_labels[i];
    }
    meta.n_labels = n;
    g->identity = (struct report_identity){ .name = keel_str_c(wl->name),
                                            .namespace = keel_str_c(wl->namespace),
                                            .service_account = keel_str_c(wl->service_account),
                                            .labels = g->self_labels,
                                            .n_labels = n,
                                            .cluster = keel_str_c(g->cluster_id) };
    meta.name = g->identity.name;
    meta.namespace = g->identity.namespace;
    meta.service_account = g->identity.service_account;
    if (wl->n_services > 0) {
        g->self_service = wl->services[0];
        meta.service = keel_str_c(g->self_service->fqdn);
        g->self_svc_host = meta.service;
        g->self_svc_name = keel_str_c(g->self_service->name);
        g->self_svc_ns = keel_str_c(g->self_service->namespace);
    }
    meta.cluster = g->identity.cluster;
    keel_peer_encode(&meta, &g->metadata);
    /* no principal: Istio's principals come from certificates only, and there is no mTLS
     * yet, so source/destination_principal stay "unknown" (a service account is a claim) */
    snprintf(g->self_uid, sizeof(g->self_uid), "kubernetes://%s.%s", wl->name, wl->namespace);
    g->identity.uid = keel_str_c(g->self_uid);

}

/* The generation's access log: the --access-log flag's, else the mesh config's; the
 * running one is kept when its settings did not change, or when the new one cannot be
 * opened (said in the log). Main thread. */
static struct access_log *gen_access_log(struct server *srv, const struct keel_config *cfg)
{
    if (srv->flag_log != NULL)
        return access_log_ref(srv->flag_log);
    const struct keel_config_mesh *m = &cfg->mesh;
    if (m->access_log_file == NULL || m->access_log_file[0] == '\0')
        return NULL;
    enum keel_accesslog_encoding enc =
        m->access_log_encoding == KEEL_CONFIG_LOG_JSON ? KEEL_ACCESSLOG_JSON : KEEL_ACCESSLOG_TEXT;
    const char *fmt = m->access_log_format && *m->access_log_format ? m->access_log_format : NULL;
    struct access_log *cur = srv->gen != NULL ? srv->gen->log : NULL;
    if (access_log_is(cur, m->access_log_file, enc, fmt))
        return access_log_ref(cur);
    struct access_log *al = access_log_open(srv, m->access_log_file, enc, fmt);
    if (al == NULL && cur != NULL) {
        keel_log_warn("access log: still writing %s", cur->path);
        return access_log_ref(cur);
    }
    return al;
}

/* The cluster id the mesh config gives every proxy: ISTIO_META_CLUSTER_ID in
 * defaultConfig.proxyMetadata (Istio sets those as the proxy's environment, under what
 * the pod itself sets), else Istio's default "Kubernetes". */
static const char *mesh_cluster_id(const struct keel_config_mesh *m)
{
    for (size_t i = 0; i < m->n_proxy_metadata; i++)
        if (!strcmp(m->proxy_metadata[i].key, "ISTIO_META_CLUSTER_ID") && m->proxy_metadata[i].value[0])
            return m->proxy_metadata[i].value;
    return "Kubernetes";
}

struct proxy_gen *gen_new(struct server *srv, struct keel_config *cfg)
{
    struct proxy_gen *g = keel_calloc(1, sizeof(*g));
    atomic_init(&g->refs, 1);
    g->cfg = cfg;
    g->cluster_id = srv->opt->cluster_id != NULL ? srv->opt->cluster_id : mesh_cluster_id(&cfg->mesh);
    g->log = gen_access_log(srv, cfg);
    size_t n_ports = 0;
    g->port_base = keel_calloc(cfg->n_services + 1, sizeof(*g->port_base));
    for (size_t i = 0; i < cfg->n_services; i++) {
        g->port_base[i] = n_ports;
        n_ports += cfg->services[i].n_ports;
    }
    g->ports = keel_calloc(n_ports + 1, sizeof(*g->ports));
    g->n_ports = n_ports;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct keel_registry_service *svc = &cfg->services[i];
        for (size_t j = 0; j < svc->n_ports; j++) {
            const struct keel_registry_port *rp = &svc->ports[j];
            struct gen_port *gp = &g->ports[g->port_base[i] + j];
            gp->rp = rp;
            gp->targets = keel_calloc(rp->n_endpoints + 1, sizeof(*gp->targets));
            for (size_t k = 0; k < rp->n_endpoints; k++) {
                const struct keel_registry_endpoint *ep = &rp->endpoints[k];
                struct keel_proxy_target *t = &gp->targets[gp->n_targets];
                char addr[300];
                snprintf(addr, sizeof(addr), strchr(ep->address, ':') ? "[%s]:%d" : "%s:%d",
                         ep->address, ep->port);
                if (keel_addr_parse(addr, &t->addr) < 0) {
                    keel_log_warn("service %s: endpoint %s does not resolve; skipped", svc->fqdn,
                                  addr);
                    continue;
                }
                keel_addr_format((const struct sockaddr *)&t->addr.ss, t->addr_str,
                                 sizeof(t->addr_str));
                snprintf(t->cluster, sizeof(t->cluster), "outbound|%d||%s", rp->port, svc->fqdn);
                t->workload = ep->workload;
                t->h2 = speaks_h2(rp->protocol); /* as Istio: HTTP/2 to these ports */
                /* h2UpgradePolicy: HTTP/1.1 to a sidecar (it takes h2c) goes as HTTP/2 */
                t->h2 |= rp->h2_upgrade && ep->workload != NULL;
                gp->n_targets++;
            }
        }
    }
    struct keel_telemetry_workload tw = { .namespace = "default" };
    if (srv->opt->workload != NULL) {
        const char *dot = strchr(srv->opt->workload, '.');
        snprintf(g->self_name, sizeof(g->self_name), "%.*s",
                 (int)(dot ? (size_t)(dot - srv->opt->workload) : strlen(srv->opt->workload)), srv->opt->workload);
        snprintf(g->self_ns, sizeof(g->self_ns), "%s", dot ? dot + 1 : "default");
        g->self = keel_registry_workload(cfg, srv->opt->workload);
        if (g->self == NULL && srv->opt->role != KEEL_PROXY_WAYPOINT)
            keel_log_warn("--workload %s: no such WorkloadEntry in the config", srv->opt->workload);
    }
    if (g->self != NULL) {
        self_identity(g);
        inbound_protocol(g, srv);
        tw = (struct keel_telemetry_workload){ g->self->name, g->self->namespace, g->self->labels,
                                               g->self->n_labels, NULL };
    }
    if (srv->opt->role == KEEL_PROXY_WAYPOINT && srv->opt->workload != NULL) {
        /* a waypoint is its Gateway: Telemetry and WasmPlugin targetRefs naming it apply */
        if (keel_config_find(cfg, KEEL_CONFIG_GATEWAY, g->self_ns, g->self_name) == NULL)
            keel_log_warn("--workload %s: no waypoint Gateway %s in namespace %s", srv->opt->workload,
                          g->self_name, g->self_ns);
        tw.namespace = g->self_ns;
        tw.gateway = g->self_name;
    }
    gen_telemetry_logs(srv, g, &tw); /* Telemetry API accessLogging */
    route_gen_build(g, srv);
    struct keel_diag d;
    keel_diag_init(&d);
    g->tel = keel_telemetry_new_role(cfg, srv->metrics, &tw,
                                     proxy_runs_rules(srv->opt, cfg) ? KEEL_TELEMETRY_PROXY
                                                                     : KEEL_TELEMETRY_PROXY_NO_RULES, &d);
    struct keel_trace_plan_input ti = {
        .cfg = cfg, .ns = tw.namespace, .name = tw.name, .labels = tw.labels,
        .n_labels = tw.n_labels, .ip = g->self != NULL ? g->self->address : NULL,
        .gateway = tw.gateway, .zipkin_override = srv->opt->zipkin,
        .role = srv->opt->role == KEEL_PROXY_SIDECAR ? "sidecar" : "router",
    };
    if (ti.name == NULL && g->self_name[0] != '\0')
        ti.name = g->self_name;
    g->trace = keel_trace_plan_new(&ti, &d);
    for (size_t i = 0; i < d.n; i++)
        keel_log_warn("%s", d.msgs[i]);
    keel_diag_fini(&d);
    return g;
}

void gen_ref(struct proxy_gen *g)
{
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
}

void gen_unref(struct proxy_gen *g)
{
    if (g == NULL || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    keel_telemetry_free(g->tel);
    keel_trace_plan_free(g->trace);
    access_log_unref(g->log);
    gen_telemetry_logs_free(g);
    free(g->self_labels);
    keel_buf_release(&g->metadata);
    route_gen_free(g);
    for (size_t i = 0; i < g->n_ports; i++)
        free(g->ports[i].targets);
    keel_config_unref(g->cfg);
    free(g->ports);
    free(g->port_base);
    free(g);
}

const struct gen_port *gen_port_of(const struct proxy_gen *g, const struct keel_registry_port *rp)
{
    const struct keel_registry_service *svc = rp->service;
    size_t si = (size_t)(svc - g->cfg->services);
    size_t pi = (size_t)(rp - svc->ports);
    return &g->ports[g->port_base[si] + pi];
}

/* Publish g as the current generation (main thread). Takes over the caller's ref. */
void gen_publish(struct server *srv, struct proxy_gen *g)
{
    pthread_mutex_lock(&srv->gen_lock);
    struct proxy_gen *old = srv->gen;
    srv->gen = g;
    pthread_mutex_unlock(&srv->gen_lock);
    gen_unref(old);
}

/* ---- per worker ---- */

static void retire(struct worker *w, struct worker_gen *wg)
{
    if (wg->users > 0) {
        wg->next = w->retired;
        w->retired = wg;
        return;
    }
    gen_unref(wg->g);
    free(wg);
}

/* Switch to the published generation if it changed (worker thread, between events). */
void worker_gen_switch(struct worker *w)
{
    struct server *srv = w->srv;
    pthread_mutex_lock(&srv->gen_lock);
    struct proxy_gen *g = srv->gen;
    if (w->cur != NULL && w->cur->g == g) {
        pthread_mutex_unlock(&srv->gen_lock);
        return;
    }
    gen_ref(g);
    pthread_mutex_unlock(&srv->gen_lock);
    struct worker_gen *wg = keel_calloc(1, sizeof(*wg));
    wg->g = g;
    if (w->cur != NULL)
        retire(w, w->cur);
    w->cur = wg;
}

struct worker_gen *worker_gen_acquire(struct worker *w)
{
    w->cur->users++;
    return w->cur;
}

void worker_gen_release(struct worker *w, struct worker_gen *wg)
{
    if (--wg->users > 0 || wg == w->cur)
        return;
    for (struct worker_gen **pp = &w->retired; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == wg) {
            *pp = wg->next;
            break;
        }
    }
    gen_unref(wg->g);
    free(wg);
}

void worker_gen_fini(struct worker *w)
{
    while (w->retired != NULL) {
        struct worker_gen *wg = w->retired;
        w->retired = wg->next;
        gen_unref(wg->g);
        free(wg);
    }
    if (w->cur != NULL) {
        gen_unref(w->cur->g);
        free(w->cur);
        w->cur = NULL;
    }
}
