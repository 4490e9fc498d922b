/* The admin listener (Envoy's :15000): /ready, /stats/prometheus, /config_dump and
 * POST /quitquitquit. Served by the main thread; one request per connection. */
#include "proxy/proxy_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"

#include "version.h" /* generated: KEEL_VERSION */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ADMIN_MAX_REQUEST 8192
/* /stats/prometheus is streamed in chunks of about this size, each produced only when
 * the previous one is written: memory stays bounded whatever the series count. */
#define ADMIN_SCRAPE_CHUNK 65536

struct admin {
    struct keel_io io;
    struct keel_io_pause pause;    /* accepting paused: out of file descriptors */
    struct server *srv;
    struct keel_loop *loop;
    struct admin_conn *conns;
};

struct admin_conn {
    struct keel_io io;
    struct keel_defer free_defer;
    struct keel_timer timer;
    struct admin *a;
    struct admin_conn *next, *prev;
    struct keel_buf in, out;
    struct keel_metrics_scrape *scrape; /* a /stats/prometheus body still to produce */
    bool responded;
    bool closed;
};

static void conn_close(struct admin_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    keel_timer_cancel(c->a->loop, &c->timer);
    keel_loop_del(c->a->loop, &c->io);
    close(c->io.fd);
    keel_buf_release(&c->in);
    keel_buf_release(&c->out);
    keel_metrics_scrape_end(c->scrape);
    c->scrape = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    keel_loop_defer(c->a->loop, &c->free_defer);
}

static void on_conn_free(struct keel_defer *d)
{
    free((char *)d - offsetof(struct admin_conn, free_defer));
}

static void on_conn_timeout(struct keel_timer *t)
{
    conn_close((struct admin_conn *)((char *)t - offsetof(struct admin_conn, timer)));
}

/* ---- endpoints ---- */

static uint64_t sum(struct server *srv, size_t offset)
{
    uint64_t total = 0;
    for (int i = 0; i < srv->n_workers; i++) {
        atomic_uint_fast64_t *c =
            (atomic_uint_fast64_t *)((char *)&srv->workers[i].stats + offset);
        total += atomic_load_explicit(c, memory_order_relaxed);
    }
    return total;
}

#define SUM(field) sum(srv, offsetof(struct proxy_stats, field))

static void metric(struct keel_buf *out, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    keel_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
                    (unsigned long long)v);
}

static void tracing_stats(struct server *srv, struct keel_buf *out)
{
    uint64_t sent = 0, dropped = 0, failed = 0;
    for (int i = 0; i < srv->n_workers; i++) {
        const struct keel_zipkin_stats *st = &srv->workers[i].zipkin_stats;
        sent += atomic_load_explicit(&st->sent, memory_order_relaxed);
        dropped += atomic_load_explicit(&st->dropped, memory_order_relaxed);
        failed += atomic_load_explicit(&st->failed, memory_order_relaxed);
    }
    keel_buf_printf(out, "# HELP keel_tracing_spans_total Spans for the Zipkin collector, by what "
                         "became of them (dropped: queue full; failed: the POST failed).\n"
                         "# TYPE keel_tracing_spans_total counter\n"
                         "keel_tracing_spans_total{result=\"sent\"} %llu\n"
                         "keel_tracing_spans_total{result=\"dropped\"} %llu\n"
                         "keel_tracing_spans_total{result=\"failed\"} %llu\n",
                    (unsigned long long)sent, (unsigned long long)dropped,
                    (unsigned long long)failed);
    /* one workload per sidecar; a name that would need escaping is not printed */
    const char *wl = srv->opt->workload;
    if (wl == NULL || strpbrk(wl, "\"\\\n") != NULL)
        wl = "unknown";
    keel_buf_printf(out, "# HELP keel_trace_context_missing_total Outbound requests of the app "
                         "without trace headers while one of its inbound requests was in flight.\n"
                         "# TYPE keel_trace_context_missing_total counter\n"
                         "keel_trace_context_missing_total{workload=\"%s\"} %llu\n",
                    wl, (unsigned long long)SUM(trace_context_missing));
}

void admin_stats_prometheus(struct server *srv, struct keel_buf *out)
{
    metric(out, "keel_downstream_cx_total", "counter", "Downstream connections accepted.",
           SUM(downstream_cx_total));
    metric(out, "keel_downstream_cx_active", "gauge", "Downstream connections open.",
           SUM(downstream_cx_active));
    metric(out, "keel_downstream_cx_overflow_total", "counter",
           "Connections closed at once for being over --max-connections.",
           SUM(downstream_cx_overflow));
    metric(out, "keel_downstream_cx_fd_exhausted_total", "counter",
           "Accepts that failed for want of file descriptors (accepting pauses 200 ms).",
           SUM(downstream_cx_fd_exhausted));
    uint64_t log_written, log_dropped, log_suppressed;
    keel_log_counts(&log_written, &log_dropped, &log_suppressed);
    keel_buf_printf(out, "# HELP keel_log_lines_total Lines of keel's own log (stderr), by what "
                         "became of them.\n# TYPE keel_log_lines_total counter\n"
                         "keel_log_lines_total{result=\"written\"} %llu\n"
                         "keel_log_lines_total{result=\"dropped\"} %llu\n"
                         "keel_log_lines_total{result=\"suppressed\"} %llu\n",
                    (unsigned long long)log_written, (unsigned long long)log_dropped,
                    (unsigned long long)log_suppressed);
    keel_buf_printf(out, "# HELP keel_downstream_rq_total HTTP requests answered, by response "
                         "code class (none: no response was sent).\n"
                         "# TYPE keel_downstream_rq_total counter\n");
    static const struct { const char *cls; size_t off; } classes[] = {
        { "1xx", offsetof(struct proxy_stats, downstream_rq_1xx) },
        { "2xx", offsetof(struct proxy_stats, downstream_rq_2xx) },
        { "3xx", offsetof(struct proxy_stats, downstream_rq_3xx) },
        { "4xx", offsetof(struct proxy_stats, downstream_rq_4xx) },
        { "5xx", offsetof(struct proxy_stats, downstream_rq_5xx) },
        { "none", offsetof(struct proxy_stats, downstream_rq_none) },
    };
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        keel_buf_printf(out, "keel_downstream_rq_total{response_code_class=\"%s\"} %llu\n",
                        classes[i].cls, (unsigned long long)sum(srv, classes[i].off));
    metric(out, "keel_downstream_rq_malformed_total", "counter",
           "Requests refused as malformed (400, 414, 431, 505).", SUM(downstream_rq_bad));
    metric(out, "keel_upstream_cx_total", "counter", "Upstream connections opened.",
           SUM(upstream_cx_total));
    metric(out, "keel_upstream_cx_reused_total", "counter",
           "Requests sent on a pooled upstream connection.", SUM(upstream_cx_reused));
    metric(out, "keel_upstream_cx_connect_fail_total", "counter",
           "Upstream connection failures.", SUM(upstream_cx_connect_fail));
    metric(out, "keel_upstream_rq_timeout_total", "counter", "Upstream requests timed out.",
           SUM(upstream_rq_timeout));
    metric(out, "keel_upstream_rq_retry_total", "counter",
           "Requests retried after a pooled connection turned out closed.",
           SUM(upstream_rq_retry));
    metric(out, "keel_peer_metadata_rejected_total", "counter",
           "Peer metadata headers refused as invalid (the peer counts as unknown).",
           SUM(peer_metadata_rejected));
    keel_buf_printf(out, "# HELP keel_h2_refused_total HTTP/2 streams and connections refused "
                         "by a limit, by reason.\n# TYPE keel_h2_refused_total counter\n");
    static const struct { const char *why; size_t off; } h2[] = {
        { "rapid_reset", offsetof(struct proxy_stats, h2_rapid_reset) },
        { "control_flood", offsetof(struct proxy_stats, h2_control_flood) },
        { "headers_too_large", offsetof(struct proxy_stats, h2_headers_too_large) },
        { "continuation_flood", offsetof(struct proxy_stats, h2_continuation_flood) },
        { "protocol_error", offsetof(struct proxy_stats, h2_protocol_error) },
        { "stream_refused", offsetof(struct proxy_stats, h2_stream_refused) },
    };
    for (size_t i = 0; i < sizeof(h2) / sizeof(h2[0]); i++)
        keel_buf_printf(out, "keel_h2_refused_total{reason=\"%s\"} %llu\n", h2[i].why,
                        (unsigned long long)sum(srv, h2[i].off));
    metric(out, "keel_h2_cx_total", "counter", "Downstream HTTP/2 connections.", SUM(h2_cx_total));
    metric(out, "keel_h2_streams_total", "counter", "Downstream HTTP/2 streams.",
           SUM(h2_streams_total));
    metric(out, "keel_tcp_cx_total", "counter", "TCP proxy connections.", SUM(tcp_cx_total));
    metric(out, "keel_tcp_received_bytes_total", "counter",
           "TCP proxy bytes received from downstream.", SUM(tcp_bytes_received));
    metric(out, "keel_tcp_sent_bytes_total", "counter", "TCP proxy bytes sent to downstream.",
           SUM(tcp_bytes_sent));
    /* closed logs' totals plus the running one's (main thread: srv->gen is stable) */
    uint64_t written = atomic_load(&srv->log_written_closed);
    uint64_t dropped = atomic_load(&srv->log_dropped_closed);
    const struct access_log *al = srv->gen != NULL ? srv->gen->log : NULL;
    if (al != NULL) {
        written += keel_sink_lines_written(al->sink);
        dropped += keel_sink_lines_dropped(al->sink);
    }
    for (size_t i = 0; srv->gen != NULL && i < srv->gen->n_tlogs; i++) { /* Telemetry API logs */
        const struct access_log *tl = srv->gen->tlogs[i].al;
        bool seen = tl == al;
        for (size_t j = 0; j < i && !seen; j++)
            seen = srv->gen->tlogs[j].al == tl;
        if (!seen) {
            written += keel_sink_lines_written(tl->sink);
            dropped += keel_sink_lines_dropped(tl->sink);
        }
    }
    keel_buf_printf(out, "# HELP keel_access_log_lines_total Access-log lines, by what became "
                         "of them.\n# TYPE keel_access_log_lines_total counter\n"
                         "keel_access_log_lines_total{result=\"written\"} %llu\n"
                         "keel_access_log_lines_total{result=\"dropped\"} %llu\n",
                    (unsigned long long)written, (unsigned long long)dropped);
    metric(out, "keel_workers", "gauge", "Worker threads.", (uint64_t)srv->n_workers);
    metric(out, "keel_upstream_rq_no_endpoint_total", "counter",
           "Requests for a registry service that has no endpoints (503 UH).",
           SUM(upstream_rq_no_endpoint));
    keel_buf_printf(out, "# HELP keel_config_reloads_total Config reloads, by outcome; a failed "
                         "one keeps the running config.\n# TYPE keel_config_reloads_total counter\n"
                         "keel_config_reloads_total{result=\"success\"} %llu\n"
                         "keel_config_reloads_total{result=\"failure\"} %llu\n",
                    (unsigned long long)keel_config_reload_successes(),
                    (unsigned long long)keel_config_reload_failures());
    /* Istio's "component versions" panel: istio_build{component="proxy",tag=VERSION} */
    keel_buf_printf(out, "# HELP istio_build Istio component build info\n# TYPE istio_build gauge\n"
                         "istio_build{component=\"proxy\",tag=\"%s\"} 1\n", KEEL_VERSION);
    uint64_t mx[3] = { 0, 0, 0 };
    for (int i = 0; i < srv->n_workers; i++) {
        const struct keel_mixer_client_stats *ms = &srv->workers[i].mixer_stats;
        mx[0] += atomic_load_explicit(&ms->sent, memory_order_relaxed);
        mx[1] += atomic_load_explicit(&ms->failed, memory_order_relaxed);
        mx[2] += atomic_load_explicit(&ms->dropped, memory_order_relaxed);
    }
    keel_buf_printf(out, "# HELP keel_mixer_reports_total Report bags for mixerReportServer, by what became "
                         "of them.\n# TYPE keel_mixer_reports_total counter\n"
                         "keel_mixer_reports_total{result=\"sent\"} %llu\n"
                         "keel_mixer_reports_total{result=\"failed\"} %llu\n"
                         "keel_mixer_reports_total{result=\"dropped\"} %llu\n",
                    (unsigned long long)mx[0], (unsigned long long)mx[1], (unsigned long long)mx[2]);
    metric(out, "keel_config_generation", "gauge", "Generation number of the running config.",
           srv->gen != NULL && srv->gen->cfg != NULL ? srv->gen->cfg->generation : 0);
    tracing_stats(srv, out);
    /* the mesh's own metrics (istio_* standard metrics, Mixer prometheus handlers) follow,
     * streamed by scrape_refill */
}


void admin_config_dump(struct server *srv, struct keel_buf *out)
{
    static const char *const kinds[] = { "inbound", "outbound", "tcp" };
    keel_buf_append_str(out, "{\"listeners\":[");
    for (size_t i = 0; i < srv->n_listeners; i++) {
        const struct listener_spec *l = &srv->listeners[i];
        keel_buf_append_str(out, i ? ",{\"name\":" : "{\"name\":");
        keel_json_str(out, kinds[l->kind]);
        keel_buf_append_str(out, ",\"address\":");
        keel_json_str(out, l->addr_str);
        keel_buf_append_str(out, ",\"protocol\":");
        keel_json_str(out, l->kind == LISTEN_TCP ? "tcp" : "http");
        if (l->target != NULL) {
            keel_buf_append_str(out, ",\"cluster\":");
            keel_json_str(out, l->target->cluster);
        }
        keel_buf_append_str(out, "}");
    }
    keel_buf_append_str(out, "],\"routes\":[");
    for (size_t i = 0; i < srv->opt->n_routes; i++) {
        const struct keel_proxy_route *r = &srv->opt->routes[i];
        keel_buf_append_str(out, i ? ",{\"host\":" : "{\"host\":");
        keel_json_str(out, r->host);
        keel_buf_printf(out, ",\"port\":%d,\"cluster\":", r->port);
        keel_json_str(out, r->target.cluster);
        keel_buf_append_str(out, "}");
    }
    keel_buf_append_str(out, "],\"upstreams\":[");
    bool first = true;
    for (size_t i = 0; i < srv->n_targets; i++) {
        const struct keel_proxy_target *t = &srv->targets[i];
        if (t->cluster[0] == '\0')
            continue;
        keel_buf_append_str(out, first ? "{\"cluster\":" : ",{\"cluster\":");
        first = false;
        keel_json_str(out, t->cluster);
        keel_buf_append_str(out, ",\"address\":");
        keel_json_str(out, t->addr_str);
        keel_buf_append_str(out, ",\"protocol\":");
        keel_json_str(out, i > srv->opt->n_routes ? "tcp" : "http");
        keel_buf_append_str(out, "}");
    }
    keel_buf_printf(out, "],\"concurrency\":%d", srv->n_workers);
    if (srv->gen != NULL && srv->gen->cfg != NULL) {
        keel_buf_append_str(out, ",\"registry\":");
        keel_config_dump_json(srv->gen->cfg, out);
        while (keel_buf_len(out) > 0 && keel_buf_rptr(out)[keel_buf_len(out) - 1] == '\n')
            out->wpos--;
    }
    keel_buf_append_str(out, "}\n");
}

static void respond(struct admin_conn *c, int status, const char *ctype, struct keel_buf *body)
{
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found"
                       : status == 405 ? "Method Not Allowed" : status == 503 ? "Service Unavailable"
                                                                               : "Bad Request";
    keel_buf_printf(&c->out, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                             "connection: close\r\n\r\n",
                    status, reason, ctype, keel_buf_len(body));
    keel_buf_append(&c->out, keel_buf_rptr(body), keel_buf_len(body));
    c->responded = true;
}

/* /stats/prometheus: keel's own counters, then the registry's text, in HTTP/1.1 chunks. */
static void respond_scrape(struct admin_conn *c, bool head)
{
    struct keel_buf first = { 0 };
    admin_stats_prometheus(c->a->srv, &first);
    keel_buf_append_str(&c->out, "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; "
                                 "charset=utf-8\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    if (!head) {
        /* never empty (a 0-size chunk would end the body) */
        keel_buf_printf(&c->out, "%zx\r\n", keel_buf_len(&first));
        keel_buf_append(&c->out, keel_buf_rptr(&first), keel_buf_len(&first));
        keel_buf_append(&c->out, "\r\n", 2);
        c->scrape = keel_metrics_scrape_begin(c->a->srv->metrics);
    }
    keel_buf_release(&first);
    c->responded = true;
}

/* The next chunk of a streamed scrape, called only once the previous one is written
 * (socket backpressure paces the scrape). */
static void scrape_refill(struct admin_conn *c)
{
    struct keel_buf chunk = { 0 };
    bool done = keel_metrics_scrape_next(c->scrape, &chunk, ADMIN_SCRAPE_CHUNK);
    if (keel_buf_len(&chunk) > 0) {
        keel_buf_printf(&c->out, "%zx\r\n", keel_buf_len(&chunk));
        keel_buf_append(&c->out, keel_buf_rptr(&chunk), keel_buf_len(&chunk));
        keel_buf_append(&c->out, "\r\n", 2);
    }
    keel_buf_release(&chunk);
    if (done) {
        keel_buf_append(&c->out, "0\r\n\r\n", 5);
        keel_metrics_scrape_end(c->scrape);
        c->scrape = NULL;
    }
}

static void handle(struct admin_conn *c, const struct keel_http_request *req)
{
    struct server *srv = c->a->srv;
    struct keel_buf body = { 0 };
    struct keel_str path = req->target;
    const char *q = memchr(path.p, '?', path.len);
    if (q != NULL)
        path.len = (size_t)(q - path.p);
    bool get = keel_str_eq(req->method, KEEL_STR("GET")) || keel_str_eq(req->method, KEEL_STR("HEAD"));
    bool post = keel_str_eq(req->method, KEEL_STR("POST"));
    if (keel_str_eq(path, KEEL_STR("/ready"))) {
        bool ready = atomic_load(&srv->ready) && !atomic_load(&srv->quit);
        keel_buf_append_str(&body, ready ? "LIVE\n" : "DRAINING\n");
        respond(c, ready ? 200 : 503, "text/plain", &body);
    } else if (keel_str_eq(path, KEEL_STR("/stats/prometheus")) && get) {
        respond_scrape(c, keel_str_eq(req->method, KEEL_STR("HEAD")));
    } else if (keel_str_eq(path, KEEL_STR("/config_dump")) && get) {
        admin_config_dump(srv, &body);
        respond(c, 200, "application/json", &body);
    } else if (keel_str_eq(path, KEEL_STR("/quitquitquit"))) {
        if (!post) {
            keel_buf_append_str(&body, "use POST\n");
            respond(c, 405, "text/plain", &body);
        } else {
            uint64_t one = 1;
            keel_buf_append_str(&body, "OK\n");
            respond(c, 200, "text/plain", &body);
            if (write(srv->quit_efd, &one, sizeof(one)) < 0)
                keel_log_error("/quitquitquit: %s", strerror(errno));
        }
    } else {
        keel_buf_append_str(&body, "not found\n");
        respond(c, 404, "text/plain", &body);
    }
    keel_buf_release(&body);
}

static void on_conn_io(struct keel_io *io, uint32_t events)
{
    struct admin_conn *c = (struct admin_conn *)io;
    if (c->closed)
        return;
    while (!c->responded && io->readable) {
        keel_buf_reserve(&c->in, 1024);
        ssize_t n = read(io->fd, keel_buf_wptr(&c->in), keel_buf_room(&c->in));
        if (n < 0 && errno == EAGAIN) {
            io->readable = false;
            break;
        }
        if (n <= 0 || keel_buf_len(&c->in) + (size_t)n > ADMIN_MAX_REQUEST) {
            conn_close(c);
            return;
        }
        c->in.wpos += (size_t)n;
        struct keel_http_header hdrs[64];
        struct keel_http_request req = { .headers = hdrs };
        struct keel_http_limits lim = { ADMIN_MAX_REQUEST, 2048, 64 };
        struct keel_http_perror e;
        int rc = keel_http_parse_request(keel_buf_rptr(&c->in), keel_buf_len(&c->in), &lim, &req, &e);
        if (rc > 0) {
            handle(c, &req);
        } else if (rc == KEEL_EINVAL) {
            struct keel_buf body = { 0 };
            keel_buf_append_str(&body, "bad request\n");
            respond(c, 400, "text/plain", &body);
            keel_buf_release(&body);
        }
    }
    for (;;) {
        if (keel_buf_len(&c->out) == 0 && c->scrape != NULL)
            scrape_refill(c);
        if (keel_buf_len(&c->out) == 0 || !io->writable)
            break;
        ssize_t n = write(io->fd, keel_buf_rptr(&c->out), keel_buf_len(&c->out));
        if (n < 0 && errno == EAGAIN) {
            io->writable = false;
            return;
        }
        if (n <= 0) {
            conn_close(c);
            return;
        }
        keel_buf_consume(&c->out, (size_t)n);
    }
    if (c->responded && keel_buf_len(&c->out) == 0)
        conn_close(c);
}

static void on_accept(struct keel_io *io, uint32_t events)
{
    struct admin *a = (struct admin *)io;
    struct keel_addr peer;
    int fd = keel_sock_accept(io->fd, &peer);
    if (fd < 0) {
        /* out of descriptors: the level-triggered listener would spin the main thread */
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            keel_loop_pause_in(a->loop, io, &a->pause, 200);
        return;
    }
    struct admin_conn *c = keel_calloc(1, sizeof(*c));
    c->a = a;
    c->io.fd = fd;
    c->io.cb = on_conn_io;
    c->free_defer.cb = on_conn_free;
    c->timer.cb = on_conn_timeout;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    keel_timer_set(a->loop, &c->timer, 10000);
    keel_loop_add(a->loop, &c->io);
}

int admin_start(struct server *srv, struct keel_loop *loop)
{
    struct admin *a = keel_calloc(1, sizeof(*a));
    a->srv = srv;
    a->loop = loop;
    a->io.cb = on_accept;
    a->io.fd = keel_sock_listen(&srv->admin_addr, false);
    keel_addr_format((const struct sockaddr *)&srv->admin_addr.ss, srv->admin_str,
                     sizeof(srv->admin_str));
    if (a->io.fd < 0) {
        keel_log_error("admin listen on %s: %s", srv->admin_str, strerror(errno));
        free(a);
        return -1;
    }
    srv->admin = a;
    keel_loop_add_in(loop, &a->io);
    return 0;
}

void admin_stop(struct server *srv, struct keel_loop *loop)
{
    struct admin *a = srv->admin;
    if (a == NULL)
        return;
    while (a->conns != NULL)
        conn_close(a->conns);
    keel_loop_pause_cancel(&a->pause);
    keel_loop_del(loop, &a->io);
    close(a->io.fd);
    keel_loop_run_deferred(loop);
    free(a);
    srv->admin = NULL;
}
