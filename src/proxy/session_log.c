/* The end of an exchange as data: its access-log line and its telemetry report, both
 * from one keel_access_record. */
#include "proxy/session_int.h"

/* The telemetry report of the exchange described by r (DESIGN.md data flow 1-3). */
void session_report(struct session *s, const struct keel_access_record *r, const char *tcp_event)
{
    if (s->wg == NULL || session_srv(s)->opt->telemetry_off)
        return;
    const struct proxy_gen *g = s->wg->g;
    struct report_in in = {
        .r = r,
        .outbound = s->spec->kind != LISTEN_INBOUND,
        .waypoint = session_srv(s)->opt->role == KEEL_PROXY_WAYPOINT && s->spec->kind == LISTEN_OUTBOUND,
        .src_peer = &s->rt.src_peer,
        .self = g->self != NULL ? &g->identity : NULL,
        .peer = &s->peer,
        .downstream_remote = &s->remote_addr,
        .downstream_local = &s->local_addr,
        .upstream = s->up_host[0] != '\0' && s->target != NULL ? &s->target->addr : NULL,
        .service_host = s->svc_host,
        .service_name = s->svc_name,
        .service_namespace = s->svc_ns,
        .reporter_uid = g->self != NULL ? g->self_uid : NULL,
        .tcp_event = tcp_event,
        .tcp_received_delta = r->bytes_received,
        .tcp_sent_delta = r->bytes_sent,
    };
    report_fill(s->w->report, &in);
    keel_telemetry_report(g->tel, s->w->tel, &s->w->report->bag);
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
        r.request_id = s->rid;
    }
    if (s->grpc)
        session_grpc_fill(s, &r);
    if (s->res_head_done) {
        r.resp_headers = s->rhdrs;
        r.n_resp_headers = s->res.n_headers;
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
    r.upstream_host = keel_str_c(s->up_host);
    if (s->target != NULL)
        r.upstream_cluster = keel_str_c(s->target->cluster);
    r.upstream_local = keel_str_c(s->up_local);
    r.downstream_local = keel_str_c(s->local);
    r.downstream_remote = keel_str_c(s->remote);
    if (!r.is_tcp && s->rt.http != NULL) /* routing: the VirtualService http[].name */
        r.route_name = keel_str_c(s->rt.http->name);
    else if (!r.is_tcp && s->target != NULL)
        r.route_name = LIT("default");
    /* the log of the generation the request started on (a bad request: the current one) */
    struct access_log *al = (s->wg != NULL ? s->wg : w->cur)->g->log;
    if (al != NULL)
        worker_log_line(w, al, &r);
    session_report(s, &r, "close");
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
