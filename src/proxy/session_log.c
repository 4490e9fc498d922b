/* The end of an exchange as data: its access-log line and its telemetry report, both
 * from one keel_access_record. */
#include "proxy/session_int.h"

#include "expr/expr.h"

#include <stdlib.h>
#include <string.h>

/* Who a registry workload is, as peer metadata would have said (labels point into the
 * generation's config, which outlives the report). */
static void peer_from_workload(struct session *s, const struct keel_registry_workload *wl,
                               const char *cluster)
{
    struct keel_peer *p = session_peer_slot(s);
    memset(p, 0, sizeof(*p));
    p->present = true;
    p->name = keel_str_c(wl->name);
    p->namespace = keel_str_c(wl->namespace);
    p->service_account = keel_str_c(wl->service_account);
    p->cluster = keel_str_c(cluster); /* the registry is this cluster's */
    for (size_t i = 0; i < wl->n_labels && p->n_labels < KEEL_PEER_MAX_LABELS; i++)
        p->labels[p->n_labels++] = (struct keel_str_pair){ keel_str_c(wl->labels[i].key),
                                                           keel_str_c(wl->labels[i].value) };
    s->peer_from_registry = true;
}

/* A WorkloadEntry at this socket address: by address and one of its ports (port 0: by
 * address alone). Only a unique match counts; several workloads behind one address
 * (one node, one loopback) are not told apart by it. */
static const struct keel_registry_workload *workload_at(const struct keel_config *cfg,
                                                        const struct keel_addr *a, bool with_port)
{
    char host[KEEL_ADDR_STRLEN];
    keel_addr_format((const struct sockaddr *)&a->ss, host, sizeof(host));
    char *colon = strrchr(host, ':');
    if (colon == NULL)
        return NULL;
    *colon = '\0';
    int port = atoi(colon + 1);
    const char *ip = host;
    if (ip[0] == '[') { /* [v6] */
        ip++;
        size_t n = strlen(ip);
        if (n > 0)
            host[n] = '\0';
    }
    const struct keel_registry_workload *found = NULL;
    for (size_t i = 0; i < cfg->n_workloads; i++) {
        const struct keel_registry_workload *wl = &cfg->workloads[i];
        if (wl->address == NULL || strcmp(wl->address, ip) != 0)
            continue;
        bool port_ok = !with_port;
        for (size_t j = 0; j < wl->n_ports && !port_ok; j++)
            port_ok = wl->ports_num != NULL && wl->ports_num[j] == port;
        if (!port_ok)
            continue;
        if (found != NULL)
            return NULL; /* ambiguous */
        found = wl;
    }
    return found;
}

/* TCP has no header to carry peer metadata (Istio exchanges it in an ALPN-negotiated
 * mTLS preamble; keel has no TLS yet), so both sides take it from the registry: the
 * client side names the destination by the endpoint it connects to, the server side the
 * source by the client's address when exactly one WorkloadEntry has it. */
static void tcp_identity(struct session *s, const struct proxy_gen *g)
{
    if (session_peer(s)->present || s->peer_from_registry)
        return;
    s->peer_from_registry = true; /* looked up once per connection, found or not */
    const struct keel_registry_workload *wl = NULL;
    if (s->spec->tcp_inbound) {
        wl = workload_at(g->cfg, &s->remote_addr, false);
        if (g->self_service != NULL) {
            s->svc_host = g->self_svc_host;
            s->svc_name = g->self_svc_name;
            s->svc_ns = g->self_svc_ns;
        }
    } else if (s->target != NULL) {
        wl = s->target->workload != NULL ? s->target->workload
                                         : workload_at(g->cfg, &s->target->addr, true);
        if (wl != NULL && wl->n_services > 0) {
            s->svc_host = keel_str_c(wl->services[0]->fqdn);
            s->svc_name = keel_str_c(wl->services[0]->name);
            s->svc_ns = keel_str_c(wl->services[0]->namespace);
        }
    }
    if (wl != NULL)
        peer_from_workload(s, wl, g->cluster_id);
}

static void on_report_timer(struct keel_timer *t);
static bool session_report_fill(struct session *s, const struct keel_access_record *r, const char *tcp_event,
                                bool want_bag);

/* The telemetry report of the exchange described by r (DESIGN.md data flow 1-3). TCP
 * reports carry the bytes since the connection's previous report. */
void session_report(struct session *s, const struct keel_access_record *r, const char *tcp_event)
{
    session_report_fill(s, r, tcp_event, false);
}

/* Fill the worker's bag for r and, unless bag_only, report it to the telemetry engine.
 * Returns false when nothing was filled (telemetry off and no bag asked for). */
static bool session_report_fill(struct session *s, const struct keel_access_record *r, const char *tcp_event,
                                bool want_bag)
{
    bool report = s->wg != NULL && !session_srv(s)->opt->telemetry_off;
    if (!report && !want_bag)
        return false;
    const struct proxy_gen *g = (s->wg != NULL ? s->wg : s->w->cur)->g;
    bool tcp = s->spec->kind == LISTEN_TCP;
    bool inbound = s->spec->kind == LISTEN_INBOUND || (tcp && s->spec->tcp_inbound);
    if (tcp)
        tcp_identity(s, g);
    else if (!inbound && !session_peer(s)->present && s->target != NULL && s->target->workload != NULL)
        /* no peer header came back (a local reply: UF, UH, timeouts; an ambient workload
         * behind a waypoint): the endpoint we picked still names the destination, as
         * Istio's endpoint metadata does */
        peer_from_workload(s, s->target->workload, g->cluster_id);
    uint64_t rx = 0, tx = 0;
    if (tcp) {
        rx = s->bytes_received - s->reported_rx;
        tx = s->bytes_sent - s->reported_tx;
        s->reported_rx = s->bytes_received;
        s->reported_tx = s->bytes_sent;
    }
    struct report_in in = {
        .r = r,
        .outbound = !inbound,
        .waypoint = session_srv(s)->opt->role == KEEL_PROXY_WAYPOINT && s->spec->kind == LISTEN_OUTBOUND,
        .src_peer = s->rt.src_peer,
        .self = g->self != NULL ? &g->identity : NULL,
        .peer = session_peer(s),
        .downstream_remote = &s->remote_addr,
        .downstream_local = &s->local_addr,
        .upstream = s->up_host[0] != '\0' && s->target != NULL ? &s->target->addr : NULL,
        .service_host = s->svc_host,
        .service_name = s->svc_name,
        .service_namespace = s->svc_ns,
        .reporter_uid = g->self != NULL ? g->self_uid : NULL,
        .tcp_event = tcp_event,
        .tcp_received_delta = rx,
        .tcp_sent_delta = tx,
        .lean = report && !want_bag && keel_telemetry_reads_fixed(g->tel) &&
                !proxy_reports_to_mixer(s->w->srv->opt, g->cfg),
    };
    report_fill(s->w->report, &in);
    if (!report)
        return true;
    keel_telemetry_report(g->tel, s->w->tel, &s->w->report->bag);
    if (proxy_reports_to_mixer(s->w->srv->opt, g->cfg)) /* the bag to mixerReportServer too */
        worker_mixer_report(s->w, g->cfg, &s->w->report->bag);
    if (tcp && !strcmp(tcp_event, "open")) { /* then every reportingInterval while open */
        s->report_timer.cb = on_report_timer;
        keel_timer_set(s->w->loop, &s->report_timer, keel_telemetry_reporting_interval_ms(g->tel));
    }
    return true;
}

/* An open TCP connection's bytes so far (Istio's periodic TCP report): the byte
 * counters grow while it is open, not only when it closes. */
static void on_report_timer(struct keel_timer *t)
{
    struct session *s = (struct session *)((char *)t - offsetof(struct session, report_timer));
    if (s->phase == PH_CLOSED || s->wg == NULL)
        return;
    struct keel_access_record r = { .is_tcp = true, .start_us = s->t_start_wall_us,
                                    .duration_us = keel_loop_now_us(s->w->loop) - s->t_start_us,
                                    .bytes_received = s->bytes_received,
                                    .bytes_sent = s->bytes_sent,
                                    .upstream_host = ((struct keel_str){ s->up_host, s->up_host_len }),
                                    .downstream_local = ((struct keel_str){ s->local, s->local_len }),
                                    .downstream_remote = ((struct keel_str){ s->remote, s->remote_len }) };
    session_report(s, &r, "continue");
    keel_timer_set(s->w->loop, &s->report_timer, keel_telemetry_reporting_interval_ms(s->wg->g->tel));
}

void session_report_stop(struct session *s)
{
    if (keel_timer_armed(&s->report_timer))
        keel_timer_cancel(s->w->loop, &s->report_timer);
}

void session_log_exchange(struct session *s)
{
    struct worker *w = s->w;
    int64_t now = keel_loop_now_us(w->loop);
    struct keel_access_record r = { 0 };
    r.is_tcp = s->spec->kind == LISTEN_TCP;
    r.start_us = s->t_start_wall_us;
    r.duration_us = now - s->t_start_us;
    r.request_duration_us = s->t_req_done_us >= 0 ? s->t_req_done_us - s->t_start_us : -1;
    r.request_tx_duration_us =
        s->t_upstream_sent_us >= 0 ? s->t_upstream_sent_us - s->t_start_us : -1;
    r.response_duration_us = s->t_first_byte_us >= 0 ? s->t_first_byte_us - s->t_start_us : -1;
    r.response_tx_duration_us = s->t_first_byte_us >= 0 ? now - s->t_first_byte_us : -1;
    if (!r.is_tcp && s->started) {
        r.method = s->req.method;
        r.path = s->path;
        r.authority = s->authority;
        r.scheme = LIT("http");
        r.protocol = s->h2s != NULL    ? LIT("HTTP/2")
                     : s->req.minor == 1 ? LIT("HTTP/1.1")
                                         : LIT("HTTP/1.0");
        r.req_headers = s->hdrs;
        r.n_req_headers = s->req.n_headers;
        r.req_first = s->req.first;
        r.request_id = s->rid;
    }
    if (s->grpc)
        session_grpc_fill(s, &r);
    if (s->res_head_done) {
        r.resp_headers = s->rhdrs;
        r.n_resp_headers = s->res.n_headers;
        r.resp_first = s->res.first;
    }
    r.status = s->status;
    r.flags = s->flags;
    r.code_details = keel_str_c(s->details);
    r.bytes_received = s->bytes_received;
    r.bytes_sent = s->bytes_sent;
    r.request_headers_bytes = s->req_head_bytes;
    r.response_headers_bytes = s->res_head_bytes;
    r.connection_id = s->conn_id;
    r.upstream_attempts = s->attempts;
    r.upstream_host = ((struct keel_str){ s->up_host, s->up_host_len });
    if (s->target != NULL)
        r.upstream_cluster = keel_str_c(s->target->cluster);
    r.upstream_local = ((struct keel_str){ s->up_local, s->up_local_len });
    r.downstream_local = ((struct keel_str){ s->local, s->local_len });
    r.downstream_remote = ((struct keel_str){ s->remote, s->remote_len });
    if (!r.is_tcp && s->rt.http != NULL) /* routing: the VirtualService http[].name */
        r.route_name = keel_str_c(s->rt.http->name);
    else if (!r.is_tcp && s->rt.name != NULL) /* allow_any, block_all */
        r.route_name = keel_str_c(s->rt.name);
    else if (!r.is_tcp && s->target != NULL)
        r.route_name = LIT("default");
    /* the log of the generation the request started on (a bad request: the current one);
     * once the Telemetry API configures access logging, the mesh's accessLogFile is its
     * "envoy" provider and no longer logs everything by itself (--access-log still does) */
    const struct proxy_gen *g = (s->wg != NULL ? s->wg : w->cur)->g;
    struct access_log *al = g->log;
    bool log_all = al != NULL && (!g->tlogs_configured || al == session_srv(s)->flag_log);
    /* one bag per exchange: the report's, also read by Telemetry filters and %CEL% */
    bool filled = session_report_fill(s, &r, "close",
                                      g->n_tlogs > 0 || (log_all && keel_accesslog_uses_bag(al->format)));
    if (filled)
        r.bag = &w->report->bag;
    if (log_all)
        worker_log_line(w, al, &r);
    bool outbound = !(s->spec->kind == LISTEN_INBOUND || (r.is_tcp && s->spec->tcp_inbound));
    for (size_t i = 0; i < g->n_tlogs && filled; i++) {
        const struct gen_log *tl = &g->tlogs[i];
        if (tl->client != outbound)
            continue;
        if (tl->filter != NULL) { /* Envoy's CEL filter: logs only on true; an error is false */
            struct keel_value v;
            if (keel_expr_eval(tl->filter, &w->report->bag, &v, NULL) < 0 || v.type != KEEL_VALUE_BOOL ||
                !v.u.b)
                continue;
        }
        worker_log_line(w, tl->al, &r);
    }
    if (!r.is_tcp)
        session_trace_end(s);
}

void session_count_status(struct session *s)
{
    struct proxy_stats *st = &s->w->stats;
    stat_add(&st->downstream_rq_total, 1);
    switch (s->status / 100) {
    case 1: stat_add(&st->downstream_rq_1xx, 1); break;
    case 2: stat_add(&st->downstream_rq_2xx, 1); break;
    case 3: stat_add(&st->downstream_rq_3xx, 1); break;
    case 4: stat_add(&st->downstream_rq_4xx, 1); break;
    case 5: stat_add(&st->downstream_rq_5xx, 1); break;
    default: stat_add(&st->downstream_rq_none, 1); break;
    }
}
