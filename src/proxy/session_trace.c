/* Tracing of an HTTP exchange: the incoming context is read when the request is routed,
 * this hop's span becomes the parent of the upstream request (headers rewritten in the
 * families received, plus B3 multi-header), and the span record is queued for the
 * worker's Zipkin reporter when the exchange ends. Also the broken-propagation detector:
 * an app's outbound request without context while one of its inbound requests is in
 * flight is counted and (unless --trace-link off) continues that inbound trace. */
#include "proxy/session_int.h"

#include "core/log.h"
#include "core/rand.h"
#include "telemetry/response_flags.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t new_id(void)
{
    uint64_t v;
    do
        v = keel_rand64();
    while (v == 0);
    return v;
}

static struct keel_str header(const struct session *s, struct keel_str name)
{
    for (size_t i = 0; i < s->req.n_headers; i++)
        if (keel_str_caseeq(s->hdrs[i].name, name))
            return s->hdrs[i].value;
    return (struct keel_str){ "", 0 };
}

/* The registry port of this exchange, when known: its protocol decides whether it is
 * traced (a port named tcp-* is not), and its number goes into the span name. */
static const struct keel_registry_port *exchange_port(const struct session *s)
{
    if (s->spec->kind == LISTEN_INBOUND) {
        const struct keel_registry_service *svc = s->wg->g->self_service;
        if (svc == NULL || svc->n_ports == 0)
            return NULL;
        int app = s->target != NULL ? keel_addr_port(&s->target->addr) : 0;
        for (size_t i = 0; i < svc->n_ports; i++) /* the port whose target is our app */
            if ((svc->ports[i].target_port ? svc->ports[i].target_port : svc->ports[i].port) == app)
                return &svc->ports[i];
        return &svc->ports[0];
    }
    return s->rt.targets != NULL ? s->rt.targets->rp : NULL;
}

static bool port_is_http(const struct keel_registry_port *rp)
{
    return rp == NULL || rp->protocol == KEEL_PROTO_UNKNOWN || keel_proto_is_http(rp->protocol);
}

/* The detector: no context came with an outbound request of the app. */
static void missing_context(struct session *s, struct keel_trace_ctx *in)
{
    struct server *srv = session_srv(s);
    struct keel_str rid = s->generated_id ? (struct keel_str){ NULL, 0 } : s->rid;
    struct keel_trace_ctx inbound;
    bool found;
    size_t n = keel_trace_inflight_find(srv->inflight, rid, &inbound, &found);
    if (n == 0)
        return; /* a request of its own (a timer, a health check): a root span is right */
    stat_add(&s->w->stats.trace_context_missing, 1);
    if (srv->opt->trace_log)
        keel_log_limited(KEEL_LOG_INFO, 1,
                         "outbound %.*s%.*s without trace headers while %zu inbound request(s) "
                         "in flight: the app does not forward them%s",
                         (int)s->authority.len, s->authority.p, (int)s->path.len, s->path.p, n,
                         found && !srv->opt->trace_link_off ? " (linked)" : "");
    if (!found || srv->opt->trace_link_off)
        return;
    inbound.debug = inbound.debug && in->debug;
    *in = inbound;
    s->tr.linked = true;
}

void session_trace_begin(struct session *s)
{
    const struct keel_trace_plan *p = s->wg->g->trace;
    s->tr = (struct session_trace){ 0 };
    if (p == NULL || !p->enabled || !port_is_http(exchange_port(s)))
        return;
    bool inbound = s->spec->kind == LISTEN_INBOUND;
    const struct keel_trace_mode *m = &p->mode[inbound ? KEEL_TRACE_SERVER : KEEL_TRACE_CLIENT];
    struct keel_trace_ctx in;
    keel_trace_extract(s->hdrs, s->req.n_headers, &in);
    if (!in.has_ids && !inbound && session_srv(s)->opt->role == KEEL_PROXY_SIDECAR)
        missing_context(s, &in);
    struct keel_trace_ctx *c = &s->tr.ctx;
    *c = in;
    if (in.has_ids) {
        c->parent_id = in.span_id; /* Istio's Zipkin: no span id shared with the peer */
    } else {
        c->trace_hi = p->trace64 ? 0 : new_id();
        c->trace_lo = new_id();
        c->trace128 = !p->trace64;
        c->parent_id = 0;
        c->has_ids = true;
    }
    c->span_id = new_id();
    if (in.debug)
        c->sampled = 1;
    else if (in.sampled < 0)
        c->sampled = keel_trace_sample(s->rid, m->sampling);
    c->formats = (uint8_t)(in.formats | KEEL_TRACE_FMT_B3);
    s->tr.active = true;
    s->tr.report = c->sampled == 1 && m->report;
    if (inbound)
        s->tr.slot = keel_trace_inflight_add(session_srv(s)->inflight, s->w->index, s->rid, c) + 1;
}

void session_trace_inject(struct session *s, struct keel_buf *b)
{
    if (!s->tr.active)
        return;
    char h[KEEL_TRACE_HEADERS_MAX * 3];
    size_t n = keel_trace_format_b3(&s->tr.ctx, h);
    if (s->tr.ctx.formats & KEEL_TRACE_FMT_B3_SINGLE)
        n += keel_trace_format_b3_single(&s->tr.ctx, h + n);
    if (s->tr.ctx.formats & KEEL_TRACE_FMT_W3C)
        n += keel_trace_format_traceparent(&s->tr.ctx, h + n);
    keel_buf_append(b, h, n);
}

void session_trace_reset(struct session *s)
{
    if (s->tr.slot > 0)
        keel_trace_inflight_remove(session_srv(s)->inflight, s->w->index, s->tr.slot - 1);
    s->tr.slot = 0;
    s->tr.active = s->tr.report = false;
}

/* "a.b.c.d:port" into the endpoint fields (IPv6 peers are left out of the endpoint). */
static void endpoint(const char *addr, char *ip, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    if (addr[0] == '\0' || addr[0] == '[' || colon == NULL)
        return;
    keel_span_set(ip, cap, addr, (size_t)(colon - addr));
    *port = (uint16_t)atoi(colon + 1);
}

/* Istio's operation name: <service fqdn>:<port><path pattern of the route> */
static void span_name(const struct session *s, const struct keel_registry_port *rp, char *out, size_t cap)
{
    struct keel_str host = s->svc_host.len ? s->svc_host : s->authority;
    int port = rp != NULL ? rp->port : 0;
    const char *colon = memchr(host.p ? host.p : "", ':', host.len);
    if (colon != NULL) { /* an authority with a port */
        if (port == 0)
            port = atoi(colon + 1);
        host.len = (size_t)(colon - host.p);
    }
    if (port == 0)
        port = 80;
    const char *pat = "/*";
    int plen = 2;
    const struct keel_route_match *m = s->rt.which;
    if (m != NULL && m->uri.kind == KEEL_SM_PREFIX) {
        pat = m->uri.s;
        plen = (int)m->uri.len;
    } else if (m != NULL && (m->uri.kind == KEEL_SM_EXACT || m->uri.kind == KEEL_SM_REGEX)) {
        pat = m->uri.s;
        plen = (int)m->uri.len;
    }
    snprintf(out, cap, "%.*s:%d%.*s%s", (int)host.len, host.p ? host.p : "", port, plen, pat,
             m != NULL && m->uri.kind == KEEL_SM_PREFIX ? "*" : "");
    for (char *c = out; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
}

void session_trace_end(struct session *s)
{
    if (s->tr.slot > 0) {
        keel_trace_inflight_remove(session_srv(s)->inflight, s->w->index, s->tr.slot - 1);
        s->tr.slot = 0;
    }
    if (!s->tr.report || s->wg == NULL)
        return;
    s->tr.report = false;
    const struct keel_trace_plan *p = s->wg->g->trace;
    const struct keel_registry_port *rp = exchange_port(s);
    if (!port_is_http(rp))
        return;
    struct keel_span *sp = keel_zipkin_next(s->w->zipkin);
    if (sp == NULL)
        return; /* ring full: counted as dropped */
    bool inbound = s->spec->kind == LISTEN_INBOUND;
    const struct keel_trace_ctx *c = &s->tr.ctx;
    const struct keel_trace_mode *m = &p->mode[inbound ? KEEL_TRACE_SERVER : KEEL_TRACE_CLIENT];
    sp->trace_hi = c->trace_hi;
    sp->trace_lo = c->trace_lo;
    sp->trace128 = c->trace128;
    sp->id = c->span_id;
    sp->parent_id = c->parent_id;
    sp->debug = c->debug;
    sp->kind = inbound ? KEEL_TRACE_SERVER : KEEL_TRACE_CLIENT;
    sp->timestamp_us = s->t_start_wall_us;
    sp->duration_us = keel_loop_now_us(s->w->loop) - s->t_start_us;
    sp->status = s->status;
    sp->request_size = s->bytes_received;
    sp->response_size = s->bytes_sent;
    span_name(s, rp, sp->name, sizeof(sp->name));
    snprintf(sp->local_service, sizeof(sp->local_service), "%s", p->id.service_name);
    snprintf(sp->local_ipv4, sizeof(sp->local_ipv4), "%s", p->id.ipv4);
    sp->remote_ipv4[0] = '\0';
    sp->remote_port = 0;
    if (inbound)
        endpoint(s->remote, sp->remote_ipv4, sizeof(sp->remote_ipv4), &sp->remote_port);
    else if (s->up_host[0] != '\0')
        endpoint(s->up_host, sp->remote_ipv4, sizeof(sp->remote_ipv4), &sp->remote_port);
    KEEL_SPAN_SET(sp->method, s->req.method);
    snprintf(sp->protocol, sizeof(sp->protocol), "%s", s->req.minor == 1 ? "HTTP/1.1" : "HTTP/1.0");
    size_t path_len = s->path.len < p->max_tag_len ? s->path.len : p->max_tag_len;
    snprintf(sp->url, sizeof(sp->url), "http://%.*s%.*s", (int)s->authority.len,
             s->authority.p ? s->authority.p : "", (int)path_len, s->path.p ? s->path.p : "");
    /* a span record is fixed-size: the rare cluster name longer than its tag is cut */
    snprintf(sp->upstream_cluster, sizeof(sp->upstream_cluster), "%.*s",
             (int)sizeof(sp->upstream_cluster) - 1, s->target != NULL ? s->target->cluster : "-");
    KEEL_SPAN_SET(sp->request_id, s->rid);
    keel_span_set(sp->peer_address, sizeof(sp->peer_address),
                  s->remote[0] == '[' ? s->remote + 1 : s->remote,
                  s->remote[0] == '[' ? s->remote_ip_len - 2 : s->remote_ip_len);
    keel_rf_format(s->flags, 0, sp->response_flags, sizeof(sp->response_flags));
    KEEL_SPAN_SET(sp->user_agent, header(s, LIT("user-agent")));
    KEEL_SPAN_SET(sp->downstream_cluster, header(s, LIT("x-envoy-downstream-service-cluster")));
    snprintf(sp->node_id, sizeof(sp->node_id), "%s", p->id.node_id);
    snprintf(sp->canonical_service, sizeof(sp->canonical_service), "%s", p->id.canonical_service);
    snprintf(sp->canonical_revision, sizeof(sp->canonical_revision), "%s", p->id.canonical_revision);
    snprintf(sp->namespace, sizeof(sp->namespace), "%s", p->id.namespace);
    sp->n_custom = 0;
    for (size_t i = 0; i < m->n_tags; i++) {
        const struct keel_trace_custom_tag *t = &m->tags[i];
        snprintf(sp->custom[i].name, sizeof(sp->custom[i].name), "%s", t->name);
        if (t->kind == KEEL_TRACE_TAG_HEADER) {
            struct keel_str v = header(s, keel_str_c(t->header));
            if (v.len == 0)
                v = keel_str_c(t->dflt);
            KEEL_SPAN_SET(sp->custom[i].value, v);
        } else {
            snprintf(sp->custom[i].value, sizeof(sp->custom[i].value), "%s", t->value);
        }
        sp->n_custom++;
    }
    keel_zipkin_commit(s->w->zipkin, &p->addr, p->path);
}
