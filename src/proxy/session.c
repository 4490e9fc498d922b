/* A downstream connection: HTTP/1.1 request/response exchanges proxied to an upstream
 * connection, or (TCP routes, WebSocket after 101) bytes tunnelled both ways.
 *
 * Everything happens in run(): it is called on any event of either socket and makes all
 * the progress the buffers and readiness flags allow, in a fixed order (read request,
 * forward request body, flush upstream, read response, forward response body, flush
 * downstream). Backpressure is implicit: a side is read only while the buffer it feeds
 * has room, and edge-triggered readiness is remembered until a read says EAGAIN. */
#include "proxy/proxy_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/rand.h"
#include "telemetry/response_flags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HIGH_WATER (64 * 1024)   /* stop reading a side once its sink holds this much */
#define READ_CHUNK 16384
#define BODY_IDLE_TIMEOUT_MS (300 * 1000)
#define TUNNEL_IDLE_TIMEOUT_MS (3600 * 1000)
#define FREE_SESSIONS_MAX 4096

enum phase {
    PH_HEAD,        /* waiting for (the rest of) a request head */
    PH_CONNECT,     /* upstream connect in progress */
    PH_FORWARD,     /* request and response in flight */
    PH_REPLY,       /* sending a locally generated response */
    PH_TUNNEL,      /* bytes both ways (TCP route, upgraded HTTP) */
    PH_CLOSED,
};

enum timer_role { T_NONE, T_IDLE, T_HEADERS, T_CONNECT, T_RESPONSE, T_BODY, T_TUNNEL };

struct session {
    struct keel_io io;
    struct keel_defer free_defer;
    struct keel_defer resume;      /* more work after a fairness yield */
    struct keel_timer timer;
    enum timer_role timer_role;
    int64_t last_activity_ms;
    struct worker *w;
    const struct listener_spec *spec;
    struct session *next, *prev;   /* worker's open sessions */
    struct keel_buf in, out;       /* from / to the client */
    struct upconn *u;
    enum phase phase;
    bool rdhup;                    /* client half-closed or reset */
    bool ds_eof, us_eof;           /* tunnel: FIN seen from the client / the upstream */
    bool draining;
    bool keepalive;                /* another request may follow on this connection */
    uint64_t conn_id;
    int64_t conn_start_us, conn_start_wall_us;
    char remote[KEEL_ADDR_STRLEN], local[KEEL_ADDR_STRLEN];
    size_t remote_ip_len;          /* "1.2.3.4" part of remote */

    /* the current request */
    struct keel_buf head;          /* request head bytes, owned: slices point here */
    struct keel_http_header hdrs[KEEL_HTTP_MAX_HEADERS + 2];
    struct keel_http_request req;
    struct keel_http_meta meta;
    struct keel_str path;          /* origin-form path sent upstream */
    struct keel_str authority;
    const struct keel_proxy_target *target; /* where this exchange goes */
    struct worker_gen *wg;         /* the config generation this request started on */
    bool started;                  /* a request head has been taken */
    bool req_done;                 /* request body fully read and queued upstream */
    bool upgrade;                  /* asked to switch protocols */
    bool sent_continue;
    bool retried;
    uint64_t req_left;             /* Content-Length bytes still to come */
    struct keel_http_chunked req_chunked;
    char request_id[36];           /* a generated id */
    struct keel_str rid;           /* the id as forwarded: received, or request_id */
    bool generated_id;
    struct keel_peer peer;         /* the other sidecar's identity, if it sent one */
    struct keel_str svc_host, svc_name, svc_ns; /* the destination service */

    /* the response */
    struct keel_buf rhead;
    struct keel_http_header rhdrs[KEEL_HTTP_MAX_HEADERS + 1];
    struct keel_http_response res;
    struct keel_http_meta rmeta;
    bool res_head_done;
    bool res_done;
    bool res_chunked_out;          /* we frame the body with chunked to the client */
    bool res_close_delimited;      /* the client body ends with our close */
    uint64_t res_left;
    struct keel_http_chunked res_chunked;
    char service_time[24];

    /* what the access log says */
    int status;
    uint32_t flags;
    const char *details;
    uint64_t bytes_received, bytes_sent, req_head_bytes, res_head_bytes;
    int64_t t_start_us, t_start_wall_us, t_req_done_us, t_upstream_sent_us, t_first_byte_us;
    uint32_t attempts;
    char up_host[KEEL_ADDR_STRLEN], up_local[KEEL_ADDR_STRLEN];
};

static void run(struct session *s);
static void finish_request(struct session *s);
static void close_session(struct session *s);
static void log_exchange(struct session *s);
static void count_status(struct session *s);

/* ------------------------------------------------------------------ helpers */

static inline struct server *srv_of(const struct session *s) { return s->w->srv; }

static void set_timer(struct session *s, enum timer_role role, int64_t ms)
{
    s->timer_role = role;
    if (ms <= 0) {
        keel_timer_cancel(s->w->loop, &s->timer);
        s->timer_role = T_NONE;
        return;
    }
    keel_timer_set(s->w->loop, &s->timer, ms);
}

static void touch(struct session *s) { s->last_activity_ms = keel_loop_now_ms(s->w->loop); }

/* Read from fd into b (at most max bytes). >0 bytes, 0 EOF, KEEL_AGAIN, KEEL_EIO. */
static ssize_t read_into(struct keel_io *io, struct keel_buf *b, size_t max)
{
    keel_buf_reserve(b, max < 4096 ? max : 4096);
    size_t room = keel_buf_room(b);
    if (room > max)
        room = max;
    ssize_t n = read(io->fd, keel_buf_wptr(b), room);
    if (n > 0) {
        b->wpos += (size_t)n;
        if ((size_t)n < room)
            io->readable = false; /* short read: the socket is drained */
        return n;
    }
    if (n == 0)
        return 0;
    if (errno == EAGAIN || errno == EINTR) {
        io->readable = false;
        return KEEL_AGAIN;
    }
    return KEEL_EIO;
}

/* Write b to fd. Returns bytes written (>= 0) or KEEL_EIO. */
static ssize_t flush_to(struct keel_io *io, struct keel_buf *b)
{
    size_t total = 0;
    while (keel_buf_len(b) > 0 && io->writable) {
        ssize_t n = write(io->fd, keel_buf_rptr(b), keel_buf_len(b));
        if (n > 0) {
            total += (size_t)n;
            keel_buf_consume(b, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            io->writable = false;
            break;
        }
        return KEEL_EIO;
    }
    return (ssize_t)total;
}

static void append_header(struct keel_buf *b, struct keel_str name, struct keel_str value)
{
    keel_buf_reserve(b, name.len + value.len + 4);
    char *p = keel_buf_wptr(b);
    memcpy(p, name.p, name.len);
    p += name.len;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, value.p, value.len);
    p += value.len;
    *p++ = '\r';
    *p++ = '\n';
    b->wpos += name.len + value.len + 4;
}

#define LIT(s) (struct keel_str){ (s), sizeof(s) - 1 }

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ------------------------------------------------------------------ lifecycle */

static void on_timer(struct keel_timer *t);
static void on_io(struct keel_io *io, uint32_t events);
static void on_free(struct keel_defer *d);
static void on_resume(struct keel_defer *d);

static void reset_request(struct session *s)
{
    keel_buf_release(&s->head);
    keel_buf_release(&s->rhead);
    s->started = s->req_done = s->upgrade = s->sent_continue = s->retried = false;
    s->generated_id = false;
    s->rid = (struct keel_str){ NULL, 0 };
    s->res_head_done = s->res_done = s->res_chunked_out = s->res_close_delimited = false;
    s->req_left = s->res_left = 0;
    memset(&s->req_chunked, 0, sizeof(s->req_chunked));
    memset(&s->res_chunked, 0, sizeof(s->res_chunked));
    s->status = 0;
    s->flags = 0;
    s->details = NULL;
    s->bytes_received = s->bytes_sent = s->req_head_bytes = s->res_head_bytes = 0;
    s->t_req_done_us = s->t_upstream_sent_us = s->t_first_byte_us = -1;
    s->attempts = 0;
    s->up_host[0] = s->up_local[0] = '\0';
    s->path = s->authority = (struct keel_str){ NULL, 0 };
    s->service_time[0] = '\0';
    s->peer.present = false;
    s->svc_host = s->svc_name = s->svc_ns = (struct keel_str){ NULL, 0 };
    if (s->wg != NULL) {
        worker_gen_release(s->w, s->wg);
        s->wg = NULL;
    }
    if (s->spec->kind != LISTEN_TCP)
        s->target = NULL;
}

static void wait_for_request(struct session *s)
{
    const struct keel_proxy_options *o = srv_of(s)->opt;
    s->phase = PH_HEAD;
    reset_request(s);
    if (keel_buf_len(&s->in) > 0)
        set_timer(s, T_HEADERS, o->request_headers_timeout_ms);
    else
        set_timer(s, T_IDLE, o->idle_timeout_ms);
}

void session_start(struct worker *w, const struct listener_spec *spec, int fd,
                   const struct keel_addr *peer)
{
    struct session *s = w->free_sessions;
    if (s != NULL) {
        w->free_sessions = s->next;
        w->n_free_sessions--;
        memset(s, 0, sizeof(*s));
    } else {
        s = keel_calloc(1, sizeof(*s));
    }
    s->w = w;
    s->spec = spec;
    s->io.fd = fd;
    s->io.cb = on_io;
    s->io.readable = true; /* TCP_DEFER_ACCEPT-style: data is likely there already */
    s->io.writable = true;
    s->timer.cb = on_timer;
    s->free_defer.cb = on_free;
    s->resume.cb = on_resume;
    s->conn_id = w->next_conn_id++;
    s->conn_start_us = keel_loop_now_us(w->loop);
    s->conn_start_wall_us = keel_loop_wall_us(w->loop);
    keel_addr_format((const struct sockaddr *)&peer->ss, s->remote, sizeof(s->remote));
    char *colon = strrchr(s->remote, ':');
    s->remote_ip_len = colon ? (size_t)(colon - s->remote) : strlen(s->remote);
    if (s->remote[0] == '[') /* "[v6]:port": the XFF value is the bare address */
        s->remote_ip_len = s->remote_ip_len >= 2 ? s->remote_ip_len : 0;
    struct keel_addr local;
    keel_sock_local(fd, &local);
    keel_addr_format((const struct sockaddr *)&local.ss, s->local, sizeof(s->local));
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    stat_add(&w->stats.downstream_cx_total, 1);
    stat_add(&w->stats.downstream_cx_active, 1);
    if (keel_loop_add(w->loop, &s->io) < 0) {
        close_session(s);
        return;
    }
    if (spec->kind == LISTEN_TCP) {
        stat_add(&w->stats.tcp_cx_total, 1);
        reset_request(s);
        s->t_start_us = s->conn_start_us;
        s->t_start_wall_us = s->conn_start_wall_us;
        s->target = spec->target;
        s->wg = worker_gen_acquire(w);
        s->phase = PH_CONNECT;
        int err = 0;
        s->attempts = 1;
        s->u = upconn_acquire(w, s->target, s, true, &err);
        if (s->u == NULL) {
            session_upstream_failed(s, err);
            return;
        }
        if (s->u->connected)
            session_upstream_connected(s);
        else
            set_timer(s, T_CONNECT, srv_of(s)->opt->connect_timeout_ms);
        run(s);
        return;
    }
    s->keepalive = true;
    wait_for_request(s);
    run(s);
}

static void on_free(struct keel_defer *d)
{
    struct session *s = (struct session *)((char *)d - offsetof(struct session, free_defer));
    struct worker *w = s->w;
    if (s->resume.queued) { /* let the pending resume see PH_CLOSED first */
        keel_loop_defer(w->loop, &s->free_defer);
        return;
    }
    if (w->n_free_sessions < FREE_SESSIONS_MAX) {
        s->next = w->free_sessions;
        w->free_sessions = s;
        w->n_free_sessions++;
    } else {
        free(s);
    }
}

static void close_session(struct session *s)
{
    struct worker *w = s->w;
    if (s->phase == PH_CLOSED)
        return;
    s->phase = PH_CLOSED;
    keel_timer_cancel(w->loop, &s->timer);
    if (s->u != NULL) {
        upconn_release(s->u, false);
        s->u = NULL;
    }
    keel_loop_del(w->loop, &s->io);
    close(s->io.fd);
    s->io.fd = -1;
    keel_buf_release(&s->in);
    keel_buf_release(&s->out);
    keel_buf_release(&s->head);
    keel_buf_release(&s->rhead);
    if (s->wg != NULL) {
        worker_gen_release(w, s->wg);
        s->wg = NULL;
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    stat_sub(&w->stats.downstream_cx_active, 1);
    keel_loop_defer(w->loop, &s->free_defer);
}

/* Drop the upstream connection without reuse (after an error or a half-done exchange). */
static void drop_upstream(struct session *s)
{
    if (s->u != NULL) {
        upconn_release(s->u, false);
        s->u = NULL;
    }
}

/* End the exchange without a (complete) response: the client learns by the close. */
static void abort_exchange(struct session *s, uint32_t flag, const char *details)
{
    s->flags |= flag;
    if (details != NULL)
        s->details = details;
    drop_upstream(s);
    log_exchange(s);
    if (s->spec->kind != LISTEN_TCP)
        count_status(s);
    close_session(s);
}

/* ------------------------------------------------------------------ access log */

/* The telemetry report of the exchange described by r (DESIGN.md data flow 1-3). */
static void report(struct session *s, const struct keel_access_record *r, const char *tcp_event)
{
    if (s->wg == NULL || srv_of(s)->opt->telemetry_off)
        return;
    const struct proxy_gen *g = s->wg->g;
    struct report_in in = {
        .r = r,
        .outbound = s->spec->kind != LISTEN_INBOUND,
        .self = g->self != NULL ? &g->identity : NULL,
        .peer = &s->peer,
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

static void log_exchange(struct session *s)
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
        r.protocol = s->req.minor == 1 ? LIT("HTTP/1.1") : LIT("HTTP/1.0");
        r.req_headers = s->hdrs;
        r.n_req_headers = s->req.n_headers;
        r.request_id = s->rid;
    }
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
    if (!r.is_tcp && s->target != NULL)
        r.route_name = LIT("default");
    if (srv_of(s)->log_format != NULL)
        worker_log_line(w, &r);
    report(s, &r, "close");
}

static void count_status(struct session *s)
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

/* ------------------------------------------------------------------ local replies */

/* Answer the current request ourselves. The connection closes afterwards when asked,
 * or when unread request body bytes would otherwise be taken for the next request. */
static void local_reply(struct session *s, int status, uint32_t flags, const char *details,
                        const char *body, bool close_after)
{
    drop_upstream(s);
    s->status = status;
    s->flags |= flags;
    s->details = details;
    if (s->started && !s->req_done)
        close_after = true;
    if (s->draining || s->rdhup)
        close_after = true;
    if (close_after)
        s->keepalive = false;
    size_t blen = strlen(body);
    size_t before = keel_buf_len(&s->out);
    keel_buf_printf(&s->out, "HTTP/1.1 %d %s\r\ncontent-length: %zu\r\ncontent-type: text/plain\r\n%s\r\n",
                    status, reason_phrase(status), blen,
                    s->keepalive ? "" : "connection: close\r\n");
    s->res_head_bytes = keel_buf_len(&s->out) - before;
    bool head = s->started && s->req.method.len == 4 && memcmp(s->req.method.p, "HEAD", 4) == 0;
    if (!head) {
        keel_buf_append(&s->out, body, blen);
        s->bytes_sent = blen;
    }
    s->phase = PH_REPLY;
    set_timer(s, T_BODY, BODY_IDLE_TIMEOUT_MS);
    touch(s);
}

static void reject_malformed(struct session *s, const struct keel_http_perror *e)
{
    int status = 400;
    switch (e->kind) {
    case KEEL_HTTP_PERR_URI_TOO_LONG: status = 414; break;
    case KEEL_HTTP_PERR_HEADERS_TOO_LARGE: status = 431; break;
    case KEEL_HTTP_PERR_VERSION: status = 505; break;
    default: break;
    }
    keel_log_info("conn %llu from %s: %d: %s at byte %zu", (unsigned long long)s->conn_id,
                  s->remote, status, e->what, e->offset);
    stat_add(&s->w->stats.downstream_rq_bad, 1);
    if (!s->started) {
        s->t_start_us = keel_loop_now_us(s->w->loop);
        s->t_start_wall_us = keel_loop_wall_us(s->w->loop);
    }
    s->req_done = true;
    local_reply(s, status, KEEL_RF_DPE, "http1.codec_error", "Bad Request", true);
}

/* ------------------------------------------------------------------ request head */

enum route_result { ROUTE_OK, ROUTE_NONE, ROUTE_NO_ENDPOINT };

/* Pick the target of the current request: the app for inbound; for outbound a --route,
 * else the registry's service for the authority, round-robin over its endpoints. */
static enum route_result route_request(struct session *s)
{
    struct server *srv = srv_of(s);
    if (s->spec->kind == LISTEN_INBOUND) {
        const struct keel_registry_service *svc = s->wg->g->self_service;
        if (svc != NULL) {
            s->svc_host = keel_str_c(svc->fqdn);
            s->svc_name = keel_str_c(svc->name);
            s->svc_ns = keel_str_c(svc->namespace);
        }
        s->target = s->spec->target;
        return s->target != NULL ? ROUTE_OK : ROUTE_NONE;
    }
    struct keel_str host = s->authority;
    int port = 80;
    const char *colon = NULL;
    for (size_t i = host.len; i > 0; i--) {
        if (host.p[i - 1] == ':') {
            colon = host.p + i - 1;
            break;
        }
        if (host.p[i - 1] == ']')
            break;
    }
    if (colon != NULL) {
        port = 0;
        for (const char *d = colon + 1; d < host.p + host.len && port <= 65535; d++)
            port = *d >= '0' && *d <= '9' ? port * 10 + (*d - '0') : 65536;
        host.len = (size_t)(colon - host.p);
    }
    for (size_t i = 0; i < srv->opt->n_routes; i++) {
        const struct keel_proxy_route *r = &srv->opt->routes[i];
        if ((r->port == 0 || r->port == port) && strlen(r->host) == host.len &&
            strncasecmp(r->host, host.p, host.len) == 0) {
            s->target = &r->target;
            s->svc_host = s->svc_name = keel_str_c(r->host);
            return ROUTE_OK;
        }
    }
    const struct proxy_gen *g = s->wg->g;
    if (g->cfg == NULL || host.len == 0)
        return ROUTE_NONE;
    const char *ns = g->self != NULL ? g->self->namespace : NULL;
    const struct keel_registry_port *rp =
        keel_registry_resolve(g->cfg, host.p, host.len, colon ? port : 0, ns);
    if (rp == NULL)
        return ROUTE_NONE;
    s->svc_host = keel_str_c(rp->service->fqdn);
    s->svc_name = keel_str_c(rp->service->name);
    s->svc_ns = keel_str_c(rp->service->namespace);
    const struct gen_port *gp = gen_port_of(g, rp);
    if (gp->n_targets == 0)
        return ROUTE_NO_ENDPOINT;
    s->target = &gp->targets[s->w->rr++ % gp->n_targets];
    return ROUTE_OK;
}

/* Split an absolute-form target "http://host[:port]/path?q" into authority and path. */
static bool split_absolute(struct keel_str t, struct keel_str *authority, struct keel_str *path)
{
    if (t.len < 8 || strncasecmp(t.p, "http://", 7) != 0)
        return false;
    const char *a = t.p + 7, *end = t.p + t.len, *p = a;
    while (p < end && *p != '/' && *p != '?')
        p++;
    *authority = (struct keel_str){ a, (size_t)(p - a) };
    *path = p < end ? (struct keel_str){ p, (size_t)(end - p) } : LIT("/");
    return authority->len > 0;
}

/* Write the upstream request head into u->out. */
static void write_upstream_head(struct session *s, struct keel_buf *b)
{
    keel_buf_reserve(b, s->req.method.len + s->path.len + 16);
    keel_buf_append(b, s->req.method.p, s->req.method.len);
    keel_buf_append(b, " ", 1);
    keel_buf_append(b, s->path.p, s->path.len);
    keel_buf_append(b, " HTTP/1.1\r\n", 11);
    bool host_sent = false;
    for (size_t i = 0; i < s->req.n_headers; i++) {
        const struct keel_http_header *h = &s->hdrs[i];
        if (keel_http_is_hop_by_hop(h->name) || keel_http_hop_marked(&s->meta, i))
            continue;
        if (keel_str_caseeq(h->name, LIT("content-length")) ||
            keel_str_caseeq(h->name, LIT("x-forwarded-for")) ||
            keel_str_caseeq(h->name, LIT(KEEL_PEER_HEADER)))
            continue;
        if (keel_str_caseeq(h->name, LIT("host"))) {
            host_sent = true;
            append_header(b, h->name, s->authority);
            continue;
        }
        append_header(b, h->name, h->value);
    }
    if (!host_sent && s->authority.len > 0)
        append_header(b, LIT("host"), s->authority);
    /* x-forwarded-for: append the client's address to what came in */
    struct keel_str ip = { s->remote[0] == '[' ? s->remote + 1 : s->remote,
                           s->remote[0] == '[' ? s->remote_ip_len - 2 : s->remote_ip_len };
    if (s->meta.xff.len > 0) {
        keel_buf_printf(b, "x-forwarded-for: %.*s, %.*s\r\n", (int)s->meta.xff.len,
                        s->meta.xff.p, (int)ip.len, ip.p);
    } else {
        append_header(b, LIT("x-forwarded-for"), ip);
    }
    if (s->meta.xfp.len == 0)
        append_header(b, LIT("x-forwarded-proto"), LIT("http"));
    const struct proxy_gen *g = s->wg->g;
    if (s->spec->kind == LISTEN_OUTBOUND && g->self != NULL)
        append_header(b, LIT(KEEL_PEER_HEADER),
                      (struct keel_str){ keel_buf_rptr(&g->metadata), keel_buf_len(&g->metadata) });
    switch (s->meta.body) {
    case KEEL_HTTP_BODY_LENGTH:
        keel_buf_printf(b, "content-length: %llu\r\n", (unsigned long long)s->meta.content_length);
        break;
    case KEEL_HTTP_BODY_CHUNKED:
        keel_buf_append(b, "transfer-encoding: chunked\r\n", 28);
        break;
    default:
        break;
    }
    if (s->upgrade) {
        append_header(b, LIT("connection"), LIT("upgrade"));
        append_header(b, LIT("upgrade"), s->meta.upgrade);
    }
    keel_buf_append(b, "\r\n", 2);
}

static void begin_upstream(struct session *s, bool fresh);

/* A complete request head is at the front of s->in: take it. */
static void take_request(struct session *s, size_t head_len)
{
    struct worker *w = s->w;
    /* own the head bytes: s->in moves on as the body streams through */
    keel_buf_append(&s->head, keel_buf_rptr(&s->in), head_len);
    ptrdiff_t delta = s->head.data - keel_buf_rptr(&s->in);
#define MOVE(str) ((str).p = (str).p ? (str).p + delta : NULL)
    MOVE(s->req.method);
    MOVE(s->req.target);
    for (size_t i = 0; i < s->req.n_headers; i++) {
        MOVE(s->hdrs[i].name);
        MOVE(s->hdrs[i].value);
    }
#undef MOVE
    keel_buf_consume(&s->in, head_len);
    s->started = true;
    s->req_head_bytes = head_len;
    s->t_start_us = keel_loop_now_us(w->loop);
    s->t_start_wall_us = keel_loop_wall_us(w->loop);

    struct keel_http_perror e;
    if (keel_http_analyze_request(&s->req, &s->meta, &e) < 0) {
        s->req_done = true;
        reject_malformed(s, &e);
        return;
    }
    if (s->meta.conn_close)
        s->keepalive = false;
    if (!split_absolute(s->req.target, &s->authority, &s->path)) {
        s->path = s->req.target;
        s->authority = s->meta.host;
    }
    if (s->meta.request_id.len > 0) {
        s->rid = s->meta.request_id; /* kept as the client sent it, whatever its form */
    } else {
        keel_uuid4(s->request_id);
        s->generated_id = true;
        s->rid = (struct keel_str){ s->request_id, 36 };
        /* forwarded, and visible to %REQ(X-REQUEST-ID)%, like a received header */
        s->hdrs[s->req.n_headers].name = LIT("x-request-id");
        s->hdrs[s->req.n_headers].value = s->rid;
        s->req.n_headers++;
    }
    if (s->spec->kind == LISTEN_INBOUND)
        for (size_t i = 0; i < s->req.n_headers; i++)
            if (keel_str_caseeq(s->hdrs[i].name, LIT(KEEL_PEER_HEADER)))
                keel_peer_parse(s->hdrs[i].value, &s->peer);
    s->upgrade = s->meta.conn_upgrade && s->meta.upgrade.len > 0;
    switch (s->meta.body) {
    case KEEL_HTTP_BODY_LENGTH: s->req_left = s->meta.content_length; break;
    case KEEL_HTTP_BODY_CHUNKED: break;
    default: s->req_done = true; s->t_req_done_us = s->t_start_us; break;
    }
    s->wg = worker_gen_acquire(w);
    switch (route_request(s)) {
    case ROUTE_OK:
        break;
    case ROUTE_NONE:
        local_reply(s, 404, KEEL_RF_NR, "route_not_found", "", false);
        return;
    case ROUTE_NO_ENDPOINT:
        stat_add(&w->stats.upstream_rq_no_endpoint, 1);
        local_reply(s, 503, KEEL_RF_UH, "no_healthy_upstream", "no healthy upstream", false);
        return;
    }
    if (s->meta.expect_continue && s->req.minor == 1 && !s->req_done) {
        keel_buf_append(&s->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        s->sent_continue = true;
    }
    begin_upstream(s, false);
}

static void begin_upstream(struct session *s, bool fresh)
{
    int err = 0;
    s->attempts++;
    s->phase = PH_CONNECT;
    s->u = upconn_acquire(s->w, s->target, s, fresh, &err);
    if (s->u == NULL) {
        session_upstream_failed(s, err);
        return;
    }
    write_upstream_head(s, &s->u->out);
    if (s->u->connected) {
        session_upstream_connected(s);
    } else {
        set_timer(s, T_CONNECT, srv_of(s)->opt->connect_timeout_ms);
    }
}

void session_upstream_connected(struct session *s)
{
    keel_buf_release(&s->rhead);
    snprintf(s->up_host, sizeof(s->up_host), "%s", s->target->addr_str);
    snprintf(s->up_local, sizeof(s->up_local), "%s", s->u->local);
    if (s->spec->kind == LISTEN_TCP) {
        s->phase = PH_TUNNEL;
        set_timer(s, T_TUNNEL, TUNNEL_IDLE_TIMEOUT_MS);
        touch(s);
        struct keel_access_record r = { .is_tcp = true, .start_us = s->t_start_wall_us,
                                        .upstream_host = keel_str_c(s->up_host),
                                        .downstream_local = keel_str_c(s->local),
                                        .downstream_remote = keel_str_c(s->remote) };
        report(s, &r, "open");
        return;
    }
    s->phase = PH_FORWARD;
    /* the response timeout starts once the whole request is upstream (Envoy's route
     * timeout); until then only inactivity ends a slow upload */
    set_timer(s, T_BODY, BODY_IDLE_TIMEOUT_MS);
    touch(s);
}

void session_upstream_failed(struct session *s, int err)
{
    s->u = NULL;
    stat_add(&s->w->stats.upstream_cx_connect_fail, 1);
    snprintf(s->up_host, sizeof(s->up_host), "%s", s->target->addr_str);
    if (s->spec->kind == LISTEN_TCP) {
        s->flags |= KEEL_RF_UF;
        log_exchange(s);
        close_session(s);
        return;
    }
    keel_log_debug("upstream %s: connect failed: %s", s->up_host, strerror(err));
    local_reply(s, 503, KEEL_RF_UF, "upstream_reset_before_response_started{connection_failure}",
                "upstream connect error or disconnect/reset before headers. reset reason: "
                "connection failure",
                false);
}

/* PH_HEAD: read and parse until a request head is complete. */
static bool do_head(struct session *s)
{
    struct server *srv = srv_of(s);
    if (s->draining && keel_buf_len(&s->in) == 0) {
        close_session(s);
        return false;
    }
    if (keel_buf_len(&s->in) > 0) {
        s->req.headers = s->hdrs;
        struct keel_http_perror e;
        int rc = keel_http_parse_request(keel_buf_rptr(&s->in), keel_buf_len(&s->in),
                                         &srv->limits, &s->req, &e);
        if (rc > 0) {
            take_request(s, (size_t)rc);
            return true;
        }
        if (rc == KEEL_EINVAL) {
            reject_malformed(s, &e);
            return true;
        }
    }
    if (!s->io.readable)
        return false;
    bool was_empty = keel_buf_len(&s->in) == 0;
    ssize_t n = read_into(&s->io, &s->in, srv->limits.max_head_bytes + 1024);
    if (n > 0) {
        if (was_empty)
            set_timer(s, T_HEADERS, srv->opt->request_headers_timeout_ms);
        return true;
    }
    if (n == KEEL_AGAIN)
        return false;
    /* EOF or error between requests: a normal close; mid-head: nothing to answer */
    close_session(s);
    return false;
}

/* ------------------------------------------------------------------ forwarding */

/* Move request body bytes from s->in to the upstream's out buffer. */
static bool forward_request_body(struct session *s)
{
    struct keel_buf *out = &s->u->out;
    bool progress = false;
    while (!s->req_done && keel_buf_len(&s->in) > 0 && keel_buf_len(out) < HIGH_WATER) {
        if (s->meta.body == KEEL_HTTP_BODY_LENGTH) {
            size_t n = keel_buf_len(&s->in);
            if (n > s->req_left)
                n = (size_t)s->req_left;
            keel_buf_append(out, keel_buf_rptr(&s->in), n);
            keel_buf_consume(&s->in, n);
            s->req_left -= n;
            s->bytes_received += n;
            if (s->req_left == 0)
                s->req_done = true;
        } else {
            size_t consumed, off, len;
            int rc = keel_http_chunked_step(&s->req_chunked, keel_buf_rptr(&s->in),
                                            keel_buf_len(&s->in), &consumed, &off, &len);
            if (rc < 0) {
                struct keel_http_perror e = { KEEL_HTTP_PERR_SYNTAX, 0, "bad chunked framing" };
                reject_malformed(s, &e);
                return true;
            }
            if (rc == KEEL_CHUNK_DATA) {
                keel_buf_printf(out, "%zx\r\n", len);
                keel_buf_append(out, keel_buf_rptr(&s->in) + off, len);
                keel_buf_append(out, "\r\n", 2);
                s->bytes_received += len;
            } else if (rc == KEEL_CHUNK_DONE) {
                keel_buf_append(out, "0\r\n\r\n", 5);
                s->req_done = true;
            }
            keel_buf_consume(&s->in, consumed);
        }
        progress = true;
        if (s->req_done)
            s->t_req_done_us = keel_loop_now_us(s->w->loop);
    }
    return progress;
}

static void on_response_timeout(struct session *s)
{
    stat_add(&s->w->stats.upstream_rq_timeout, 1);
    if (!s->res_head_done) {
        local_reply(s, 504, KEEL_RF_UT, "upstream_response_timeout", "upstream request timeout",
                    false);
        run(s);
        return;
    }
    abort_exchange(s, KEEL_RF_UT, "upstream_response_timeout");
}

/* The upstream went away before the response was complete. */
static void upstream_gone(struct session *s)
{
    if (!s->res_head_done) {
        /* A pooled connection that the server closed while idle: try once more on a fresh
         * one when nothing of the request body has been consumed yet. */
        if (s->u->reused && !s->retried && s->meta.body == KEEL_HTTP_BODY_NONE &&
            keel_buf_len(&s->u->in) == 0) {
            s->retried = true;
            stat_add(&s->w->stats.upstream_rq_retry, 1);
            drop_upstream(s);
            begin_upstream(s, true);
            return;
        }
        local_reply(s, 503, KEEL_RF_UC,
                    "upstream_reset_before_response_started{connection_termination}",
                    "upstream connect error or disconnect/reset before headers. reset reason: "
                    "connection termination",
                    false);
        return;
    }
    /* mid-response: the client can only learn of it by the connection closing */
    abort_exchange(s, KEEL_RF_UC, "upstream_reset_after_response_started{connection_termination}");
}

static void write_response_head(struct session *s)
{
    struct keel_buf *b = &s->out;
    size_t before = keel_buf_len(b);
    const struct keel_http_response *res = &s->res;
    keel_buf_printf(b, "HTTP/1.1 %d %.*s\r\n", res->status, (int)res->reason.len, res->reason.p);
    bool no_body = s->rmeta.body == KEEL_HTTP_BODY_NONE;
    for (size_t i = 0; i < res->n_headers; i++) {
        const struct keel_http_header *h = &s->rhdrs[i];
        if (keel_http_hop_marked(&s->rmeta, i))
            continue;
        if (keel_str_caseeq(h->name, LIT("content-length"))) {
            if (no_body) /* HEAD and 304 answers keep the length they describe */
                append_header(b, h->name, h->value);
            continue;
        }
        if (keel_http_is_hop_by_hop(h->name) && !(s->upgrade && res->status == 101 &&
                                                  keel_str_caseeq(h->name, LIT("upgrade"))))
            continue;
        if (keel_str_caseeq(h->name, LIT(KEEL_PEER_HEADER))) {
            if (s->spec->kind == LISTEN_OUTBOUND)
                keel_peer_parse(h->value, &s->peer);
            continue;
        }
        append_header(b, h->name, h->value);
    }
    const struct proxy_gen *g = s->wg->g;
    if (s->spec->kind == LISTEN_INBOUND && g->self != NULL)
        append_header(b, LIT(KEEL_PEER_HEADER),
                      (struct keel_str){ keel_buf_rptr(&g->metadata), keel_buf_len(&g->metadata) });
    if (s->rmeta.body == KEEL_HTTP_BODY_LENGTH) {
        keel_buf_printf(b, "content-length: %llu\r\n", (unsigned long long)s->rmeta.content_length);
    } else if (s->rmeta.body != KEEL_HTTP_BODY_NONE) {
        if (s->req.minor == 1) {
            keel_buf_append(b, "transfer-encoding: chunked\r\n", 28);
            s->res_chunked_out = true;
        } else {
            s->res_close_delimited = true;
            s->keepalive = false;
        }
    }
    int64_t ust = (s->t_first_byte_us - (s->t_upstream_sent_us >= 0 ? s->t_upstream_sent_us
                                                                     : s->t_start_us)) / 1000;
    int n = snprintf(s->service_time, sizeof(s->service_time), "%lld", (long long)ust);
    struct keel_http_header *st = &s->rhdrs[s->res.n_headers++]; /* the log sees it too */
    st->name = LIT("x-envoy-upstream-service-time");
    st->value = (struct keel_str){ s->service_time, (size_t)n };
    append_header(b, st->name, st->value);
    if (res->status == 101) {
        append_header(b, LIT("connection"), LIT("upgrade"));
    } else if (!s->keepalive || s->draining) {
        s->keepalive = false;
        append_header(b, LIT("connection"), LIT("close"));
    } else if (s->req.minor == 0) {
        append_header(b, LIT("connection"), LIT("keep-alive"));
    }
    keel_buf_append(b, "\r\n", 2);
    s->res_head_bytes = keel_buf_len(b) - before;
}

/* Parse the response head in u->in. Returns true on progress. */
static bool take_response_head(struct session *s)
{
    struct upconn *u = s->u;
    struct keel_http_perror e;
    s->res.headers = s->rhdrs;
    int rc = keel_http_parse_response(keel_buf_rptr(&u->in), keel_buf_len(&u->in),
                                      &srv_of(s)->limits, &s->res, &e);
    if (rc == KEEL_AGAIN)
        return false;
    if (rc < 0 || keel_http_analyze_response(&s->res, s->req.method, &s->rmeta, &e) < 0) {
        keel_log_info("upstream %s: bad response: %s", s->up_host, e.what);
        local_reply(s, 502, KEEL_RF_UPE, "upstream_reset_before_response_started{protocol_error}",
                    "upstream protocol error", false);
        return true;
    }
    size_t head_len = (size_t)rc;
    if (s->res.status >= 100 && s->res.status < 200 && s->res.status != 101) {
        /* interim response: pass 1xx on to HTTP/1.1 clients (not a second 100) */
        if (s->req.minor == 1 && !(s->res.status == 100 && s->sent_continue))
            keel_buf_append(&s->out, keel_buf_rptr(&u->in), head_len);
        keel_buf_consume(&u->in, head_len);
        return true;
    }
    keel_buf_release(&s->rhead);
    keel_buf_append(&s->rhead, keel_buf_rptr(&u->in), head_len);
    ptrdiff_t delta = s->rhead.data - keel_buf_rptr(&u->in);
    s->res.reason.p += delta;
    for (size_t i = 0; i < s->res.n_headers; i++) {
        s->rhdrs[i].name.p += delta;
        s->rhdrs[i].value.p += delta;
    }
    keel_buf_consume(&u->in, head_len);
    s->status = s->res.status;
    s->details = "via_upstream";
    s->res_head_done = true;
    s->res_left = s->rmeta.content_length;
    if (s->res.status == 101 && s->upgrade) {
        write_response_head(s);
        s->bytes_sent = s->res_head_bytes; /* WebSocket: BYTES_SENT counts the headers */
        s->keepalive = false;
        s->req_done = s->res_done = false; /* from here: "FIN passed on" per direction */
        s->phase = PH_TUNNEL;
        set_timer(s, T_TUNNEL, TUNNEL_IDLE_TIMEOUT_MS);
        return true;
    }
    write_response_head(s);
    if (s->rmeta.body == KEEL_HTTP_BODY_NONE ||
        (s->rmeta.body == KEEL_HTTP_BODY_LENGTH && s->res_left == 0))
        s->res_done = true;
    set_timer(s, T_BODY, BODY_IDLE_TIMEOUT_MS);
    return true;
}

/* Move response body bytes from u->in to s->out. */
static bool forward_response_body(struct session *s)
{
    struct keel_buf *in = &s->u->in;
    bool progress = false;
    while (!s->res_done && keel_buf_len(in) > 0 && keel_buf_len(&s->out) < HIGH_WATER) {
        const char *data = NULL;
        size_t len = 0, consumed;
        if (s->rmeta.body == KEEL_HTTP_BODY_CHUNKED) {
            size_t off;
            int rc = keel_http_chunked_step(&s->res_chunked, keel_buf_rptr(in), keel_buf_len(in),
                                            &consumed, &off, &len);
            if (rc < 0) {
                abort_exchange(s, KEEL_RF_UPE, "upstream_reset_after_response_started{protocol_error}");
                return false;
            }
            if (rc == KEEL_CHUNK_DATA)
                data = keel_buf_rptr(in) + off;
            else if (rc == KEEL_CHUNK_DONE)
                s->res_done = true;
        } else {
            len = keel_buf_len(in);
            if (s->rmeta.body == KEEL_HTTP_BODY_LENGTH && len > s->res_left)
                len = (size_t)s->res_left;
            data = keel_buf_rptr(in);
            consumed = len;
            if (s->rmeta.body == KEEL_HTTP_BODY_LENGTH) {
                s->res_left -= len;
                if (s->res_left == 0)
                    s->res_done = true;
            }
        }
        if (data != NULL && len > 0) {
            if (s->res_chunked_out) {
                keel_buf_printf(&s->out, "%zx\r\n", len);
                keel_buf_append(&s->out, data, len);
                keel_buf_append(&s->out, "\r\n", 2);
            } else {
                keel_buf_append(&s->out, data, len);
            }
            s->bytes_sent += len;
        }
        keel_buf_consume(in, consumed);
        if (s->res_done && s->res_chunked_out)
            keel_buf_append(&s->out, "0\r\n\r\n", 5);
        progress = true;
    }
    return progress;
}

/* The upstream connection may carry another request once this exchange completed
 * cleanly on both sides. */
static bool upstream_reusable(const struct session *s)
{
    return s->res_done && s->req_done && !s->rmeta.conn_close &&
           s->rmeta.body != KEEL_HTTP_BODY_EOF && keel_buf_len(&s->u->in) == 0 &&
           keel_buf_len(&s->u->out) == 0;
}

static bool do_forward(struct session *s)
{
    struct upconn *u = s->u;
    bool progress = false;
    ssize_t n;

    /* client -> upstream */
    if (!s->req_done) {
        if (keel_buf_len(&s->in) > 0 && forward_request_body(s))
            progress = true;
        if (s->phase != PH_FORWARD)
            return true;
        if (!s->req_done && keel_buf_len(&s->in) == 0 && s->io.readable &&
            keel_buf_len(&u->out) < HIGH_WATER) {
            n = read_into(&s->io, &s->in, READ_CHUNK);
            if (n > 0) {
                progress = true;
                touch(s);
            } else if (n == 0 || n == KEEL_EIO) {
                abort_exchange(s, KEEL_RF_DC, "downstream_remote_disconnect");
                return false;
            }
        }
    } else if (s->rdhup && !s->res_done) {
        /* the client left while we wait for or relay the response (Envoy: DC) */
        abort_exchange(s, KEEL_RF_DC, "downstream_remote_disconnect");
        return false;
    }
    if (keel_buf_len(&u->out) > 0 && u->io.writable) {
        n = flush_to(&u->io, &u->out);
        if (n < 0) {
            upstream_gone(s);
            return true;
        }
        if (n > 0)
            progress = true;
    }
    if (s->req_done && keel_buf_len(&u->out) == 0 && s->t_upstream_sent_us < 0) {
        s->t_upstream_sent_us = keel_loop_now_us(s->w->loop);
        int64_t t = srv_of(s)->opt->upstream_timeout_ms;
        if (t > 0 && !s->res_head_done)
            set_timer(s, T_RESPONSE, t);
    }

    /* upstream -> client: read only once what was read before has moved on (or to
     * complete a head), so an EOF is never seen ahead of unforwarded bytes */
    if (!s->res_done && u->io.readable && keel_buf_len(&s->out) < HIGH_WATER &&
        (keel_buf_len(&u->in) == 0 || !s->res_head_done)) {
        n = read_into(&u->io, &u->in, READ_CHUNK);
        if (n > 0) {
            if (s->t_first_byte_us < 0)
                s->t_first_byte_us = keel_loop_now_us(s->w->loop);
            progress = true;
            touch(s);
        } else if (n == 0 || n == KEEL_EIO) {
            if (s->res_head_done && s->rmeta.body == KEEL_HTTP_BODY_EOF) {
                s->res_done = true;
                if (s->res_chunked_out)
                    keel_buf_append(&s->out, "0\r\n\r\n", 5);
                progress = true;
            } else {
                upstream_gone(s);
                return true;
            }
        }
    }
    if (!s->res_head_done && keel_buf_len(&u->in) > 0) {
        if (take_response_head(s))
            progress = true;
        if (s->phase != PH_FORWARD)
            return true;
    }
    if (s->res_head_done && !s->res_done && keel_buf_len(&u->in) > 0 &&
        forward_response_body(s))
        progress = true;
    if (s->phase != PH_FORWARD)
        return false;

    if (keel_buf_len(&s->out) > 0 && s->io.writable) {
        n = flush_to(&s->io, &s->out);
        if (n < 0) {
            abort_exchange(s, KEEL_RF_DC, "downstream_remote_disconnect");
            return false;
        }
        if (n > 0)
            progress = true;
    }
    if (s->res_done && keel_buf_len(&s->out) == 0) {
        if (!s->req_done)
            s->keepalive = false; /* answered early: the rest of the body is not ours */
        finish_request(s);
        return s->phase != PH_CLOSED;
    }
    return progress;
}

static void finish_request(struct session *s)
{
    if (s->u != NULL) {
        bool reuse = upstream_reusable(s);
        upconn_release(s->u, reuse);
        s->u = NULL;
    }
    log_exchange(s);
    count_status(s);
    if (!s->keepalive || s->draining || s->rdhup) {
        close_session(s);
        return;
    }
    wait_for_request(s);
}

/* PH_REPLY: flush the local response, then go on or close. */
static bool do_reply(struct session *s)
{
    if (keel_buf_len(&s->out) > 0) {
        if (!s->io.writable)
            return false;
        ssize_t n = flush_to(&s->io, &s->out);
        if (n < 0) {
            abort_exchange(s, KEEL_RF_DC, NULL);
            return false;
        }
        if (keel_buf_len(&s->out) > 0)
            return false;
    }
    finish_request(s);
    return s->phase != PH_CLOSED;
}

/* ------------------------------------------------------------------ tunnel */

/* One direction of a tunnel: from's socket -> buf -> to's socket. Returns progress; sets
 * *eof when from has closed and everything read was written. */
static bool pump(struct keel_io *from, struct keel_buf *buf, struct keel_io *to, bool *eof,
                 uint64_t *count, bool *err)
{
    bool progress = false;
    for (;;) {
        if (keel_buf_len(buf) > 0 && to->writable) {
            ssize_t n = flush_to(to, buf);
            if (n < 0) {
                *err = true;
                return progress;
            }
            if (n > 0)
                progress = true;
        }
        if (*eof || keel_buf_len(buf) > 0 || !from->readable)
            break;
        ssize_t n = read_into(from, buf, READ_CHUNK);
        if (n > 0) {
            *count += (uint64_t)n;
            progress = true;
            continue;
        }
        if (n == 0 || n == KEEL_EIO) {
            *eof = true;
            progress = true;
        }
        break;
    }
    return progress;
}

static bool do_tunnel(struct session *s)
{
    struct upconn *u = s->u;
    bool err = false, progress = false;
    uint64_t up_bytes = 0, down_bytes = 0;
    /* what was already buffered (the 101 head, early bytes) goes first */
    if (keel_buf_len(&s->in) > 0 && keel_buf_len(&u->out) == 0) {
        up_bytes += keel_buf_len(&s->in);
        keel_buf_append(&u->out, keel_buf_rptr(&s->in), keel_buf_len(&s->in));
        keel_buf_consume(&s->in, keel_buf_len(&s->in));
    }
    if (keel_buf_len(&s->out) > 0 && s->io.writable) {
        if (flush_to(&s->io, &s->out) < 0)
            err = true;
    }
    if (!err && pump(&s->io, &u->out, &u->io, &s->ds_eof, &up_bytes, &err))
        progress = true;
    if (!err && keel_buf_len(&s->out) == 0 &&
        pump(&u->io, &u->in, &s->io, &s->us_eof, &down_bytes, &err))
        progress = true;
    s->bytes_received += up_bytes;
    s->bytes_sent += down_bytes;
    if (s->spec->kind == LISTEN_TCP) {
        stat_add(&s->w->stats.tcp_bytes_received, up_bytes);
        stat_add(&s->w->stats.tcp_bytes_sent, down_bytes);
    }
    if (progress)
        touch(s);
    /* half-close: pass a FIN on once its side's bytes are all written */
    if (s->ds_eof && !s->req_done && keel_buf_len(&u->out) == 0) {
        shutdown(u->io.fd, SHUT_WR);
        s->req_done = true;
    }
    if (s->us_eof && !s->res_done && keel_buf_len(&u->in) == 0) {
        shutdown(s->io.fd, SHUT_WR);
        s->res_done = true;
    }
    if (err || (s->req_done && s->res_done)) {
        abort_exchange(s, 0, NULL);
        return false;
    }
    return progress;
}

/* ------------------------------------------------------------------ dispatch */

static void run(struct session *s)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        bool progress;
        switch (s->phase) {
        case PH_HEAD: progress = do_head(s); break;
        case PH_FORWARD: progress = do_forward(s); break;
        case PH_REPLY: progress = do_reply(s); break;
        case PH_TUNNEL: progress = do_tunnel(s); break;
        default: return;
        }
        if (!progress)
            return;
    }
    /* still busy after 64 rounds (a fast bulk transfer): let the other connections of
     * this worker have a turn, and come back after them */
    keel_loop_defer(s->w->loop, &s->resume);
}

static void on_resume(struct keel_defer *d)
{
    struct session *s = (struct session *)((char *)d - offsetof(struct session, resume));
    if (s->phase != PH_CLOSED)
        run(s);
}

static void on_io(struct keel_io *io, uint32_t events)
{
    struct session *s = (struct session *)io;
    if (s->phase == PH_CLOSED)
        return;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->rdhup = true;
    run(s);
}

void session_on_upstream(struct session *s)
{
    if (s->phase != PH_CLOSED)
        run(s);
}

static void on_timer(struct keel_timer *t)
{
    struct session *s = (struct session *)((char *)t - offsetof(struct session, timer));
    int64_t now = keel_loop_now_ms(s->w->loop);
    switch (s->timer_role) {
    case T_IDLE:
        close_session(s);
        return;
    case T_HEADERS:
        s->t_start_us = keel_loop_now_us(s->w->loop);
        s->t_start_wall_us = keel_loop_wall_us(s->w->loop);
        s->req_done = true;
        local_reply(s, 408, 0, "request_header_timeout", "request timeout", true);
        run(s);
        return;
    case T_CONNECT:
        drop_upstream(s);
        session_upstream_failed(s, ETIMEDOUT);
        run(s);
        return;
    case T_RESPONSE:
        on_response_timeout(s);
        return;
    case T_BODY:
    case T_TUNNEL: {
        int64_t limit = s->timer_role == T_BODY ? BODY_IDLE_TIMEOUT_MS : TUNNEL_IDLE_TIMEOUT_MS;
        if (now - s->last_activity_ms < limit) {
            keel_timer_set(s->w->loop, &s->timer, limit - (now - s->last_activity_ms));
            return;
        }
        abort_exchange(s, s->timer_role == T_BODY ? KEEL_RF_SI : 0, "stream_idle_timeout");
        return;
    }
    default:
        return;
    }
}

void sessions_drain(struct worker *w)
{
    struct session *s = w->sessions, *next;
    for (; s != NULL; s = next) {
        next = s->next;
        s->draining = true;
        if (s->phase == PH_HEAD && keel_buf_len(&s->in) == 0)
            close_session(s);
    }
}

void sessions_abort(struct worker *w)
{
    while (w->sessions != NULL) {
        struct session *s = w->sessions;
        if (s->started && s->phase != PH_HEAD)
            abort_exchange(s, 0, NULL);
        else
            close_session(s);
    }
}

void sessions_free_recycled(struct worker *w)
{
    while (w->free_sessions != NULL) {
        struct session *s = w->free_sessions;
        w->free_sessions = s->next;
        free(s);
    }
    w->n_free_sessions = 0;
}
