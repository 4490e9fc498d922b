/* A downstream connection (HTTP or TCP): its lifecycle, timers and dispatch.
 *
 * Everything happens in session_run(): it is called on any event of either socket and
 * makes all the progress the buffers and readiness flags allow, in a fixed order (read
 * request, forward request body, flush upstream, read response, forward response body,
 * flush downstream). Backpressure is implicit: a side is read only while the buffer it
 * feeds has room, and edge-triggered readiness is remembered until a read says EAGAIN. */
#include "proxy/session_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "telemetry/response_flags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void on_timer(struct keel_timer *t);
static void on_io(struct keel_io *io, uint32_t events);
static void on_free(struct keel_defer *d);
static void on_resume(struct keel_defer *d);

/* ------------------------------------------------------------------ helpers */

void session_set_timer(struct session *s, enum timer_role role, int64_t ms)
{
    s->timer_role = role;
    if (ms <= 0) {
        keel_timer_cancel(s->w->loop, &s->timer);
        s->timer_role = T_NONE;
        return;
    }
    keel_timer_set(s->w->loop, &s->timer, ms);
}

/* Read from fd into b (at most max bytes). >0 bytes, 0 EOF, KEEL_AGAIN, KEEL_EIO.
 * Every read of a proxied socket goes through here. A short read ends readiness (the
 * socket is drained, the next edge will say when more comes) unless the peer's FIN has
 * been seen: that edge has come and gone, so io stays readable and the next read, made
 * whenever the reader has room again (after backpressure too), returns the EOF. */
ssize_t session_read(struct keel_io *io, struct keel_buf *b, size_t max)
{
    if (io->fd == SESSION_VIRTUAL_FD) /* an HTTP/2 stream's session (h2_conn.c) */
        return h2_stream_read((struct session *)io, b, max);
    if (io->fd == UPCONN_VIRTUAL_FD) /* a stream to an HTTP/2 upstream (h2_up.c) */
        return h2_up_read((struct upconn *)io, b, max);
    if (keel_io_ring_reads(io)) { /* the loop received the bytes (core/recvq.c) */
        ssize_t n = keel_io_recv(io, b, max);
        if (n == KEEL_AGAIN && keel_buf_len(b) == 0)
            keel_buf_release(b);
        return n;
    }
    keel_buf_reserve(b, max < 4096 ? max : 4096);
    size_t room = keel_buf_room(b);
    if (room > max)
        room = max;
    ssize_t n = read(io->fd, keel_buf_wptr(b), room);
    if (n > 0) {
        b->wpos += (size_t)n;
        if ((size_t)n < room && !io->rdhup)
            io->readable = false;
        return n;
    }
    if (n == 0)
        return 0;
    if (errno == EAGAIN || errno == EINTR) {
        io->readable = false;
        /* an idle connection holds no buffer: 16 KiB x 10,000 keep-alive clients adds up */
        if (keel_buf_len(b) == 0)
            keel_buf_release(b);
        return KEEL_AGAIN;
    }
    return KEEL_EIO;
}

/* Write b to fd. Returns bytes written (>= 0) or KEEL_EIO. With the loop's batched sends
 * it returns 0 and b goes with the turn's batch; io's callback runs once it went. */
ssize_t session_flush(struct keel_loop *l, struct keel_io *io, struct keel_buf *b)
{
    if (io->fd == SESSION_VIRTUAL_FD)
        return h2_stream_flush((struct session *)io, b);
    if (io->fd == UPCONN_VIRTUAL_FD)
        return h2_up_flush((struct upconn *)io, b);
    if (io->send_err != 0)
        return KEEL_EIO;
    if (keel_loop_send_later(l, io, b))
        return 0;
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
    if (keel_buf_len(b) == 0)
        keel_buf_release(b); /* back to the worker's pool until there is more to send */
    return (ssize_t)total;
}

/* ------------------------------------------------------------------ lifecycle */

void session_attach_tables(struct session *s)
{
    if (s->tables != NULL)
        return;
    struct worker *w = s->w;
    struct hdr_tables *t = w->free_hdr_tables;
    if (t != NULL) {
        w->free_hdr_tables = t->next;
        w->n_free_hdr_tables--;
    } else {
        t = keel_alloc(sizeof(*t));
    }
    s->tables = t;
    s->hdrs = t->req;
    s->rhdrs = t->res;
}

struct keel_peer *session_peer_slot(struct session *s)
{
    if (s->peer == NULL) {
        if (s->tables != NULL)
            s->peer = &s->tables->peer;
        else if (s->own_peer != NULL)
            s->peer = s->own_peer;
        else
            s->peer = s->own_peer = keel_alloc(sizeof(*s->own_peer));
        s->peer->present = false;
    }
    return s->peer;
}

static void detach_tables(struct session *s)
{
    struct worker *w = s->w;
    struct hdr_tables *t = s->tables;
    if (t == NULL)
        return;
    if (s->peer == &t->peer)
        s->peer = NULL;
    if (s->rt.src_peer == &t->src_peer)
        s->rt.src_peer = NULL;
    if (w->n_free_hdr_tables < FREE_HDR_TABLES_MAX) {
        t->next = w->free_hdr_tables;
        w->free_hdr_tables = t;
        w->n_free_hdr_tables++;
    } else {
        free(t);
    }
    s->tables = NULL;
    s->hdrs = s->rhdrs = NULL;
    s->req.headers = s->res.headers = NULL;
    s->req.n_headers = s->res.n_headers = 0;
}

static void reset_request(struct session *s)
{
    detach_tables(s);
    keel_buf_release(&s->head);
    keel_buf_release(&s->rhead);
    s->started = s->req_done = s->upgrade = s->sent_continue = s->retried = false;
    s->up_write_failed = false;
    s->generated_id = false;
    s->rid = (struct keel_str){ NULL, 0 };
    s->res_head_done = s->res_done = s->res_chunked_out = s->res_close_delimited = false;
    s->req_left = s->res_left = 0;
    memset(&s->req_chunked, 0, sizeof(s->req_chunked));
    memset(&s->res_chunked, 0, sizeof(s->res_chunked));
    s->res_trailers_out = false;
    s->grpc = false;
    memset(&s->req_msgs, 0, sizeof(s->req_msgs));
    memset(&s->res_msgs, 0, sizeof(s->res_msgs));
    s->trailers_len = 0;
    s->status = 0;
    s->flags = 0;
    s->details = NULL;
    s->bytes_received = s->bytes_sent = s->req_head_bytes = s->res_head_bytes = 0;
    s->t_req_done_us = s->t_upstream_sent_us = s->t_first_byte_us = -1;
    s->attempts = 0;
    s->up_host[0] = s->up_local[0] = '\0';
    s->up_host_len = s->up_local_len = 0;
    s->path = s->authority = (struct keel_str){ NULL, 0 };
    s->service_time[0] = '\0';
    s->peer = NULL; /* own_peer, if any, stays for the next exchange to fill */
    s->peer_from_registry = false;
    s->svc_host = s->svc_name = s->svc_ns = (struct keel_str){ NULL, 0 };
    route_state_reset(s);
    session_trace_reset(s);
    if (s->wg != NULL) {
        worker_gen_release(s->w, s->wg);
        s->wg = NULL;
    }
    if (s->spec->kind != LISTEN_TCP)
        s->target = NULL;
}

void session_wait_request(struct session *s)
{
    const struct keel_proxy_options *o = session_srv(s)->opt;
    s->phase = PH_HEAD;
    reset_request(s);
    if (keel_buf_len(&s->in) > 0) {
        session_set_timer(s, T_HEADERS, o->request_headers_timeout_ms);
    } else {
        /* The read that took the request was short, so no read saw EAGAIN and released
         * the buffer there: a keep-alive client going idle would keep 16 KiB. */
        keel_buf_release(&s->in);
        session_set_timer(s, T_IDLE, o->idle_timeout_ms);
    }
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
    s->io.ring_reads = true; /* every read is session_read's */
    s->io.readable = true; /* TCP_DEFER_ACCEPT-style: data is likely there already */
    s->io.writable = true;
    s->timer.cb = on_timer;
    s->free_defer.cb = on_free;
    s->resume.cb = on_resume;
    s->conn_id = w->next_conn_id++;
    s->conn_start_us = keel_loop_now_us(w->loop);
    s->conn_start_wall_us = keel_loop_wall_us(w->loop);
    s->remote_len = keel_addr_format((const struct sockaddr *)&peer->ss, s->remote, sizeof(s->remote));
    char *colon = strrchr(s->remote, ':');
    s->remote_ip_len = colon ? (size_t)(colon - s->remote) : strlen(s->remote);
    if (s->remote[0] == '[') /* "[v6]:port": the XFF value is the bare address */
        s->remote_ip_len = s->remote_ip_len >= 2 ? s->remote_ip_len : 0;
    s->remote_addr = *peer;
    keel_sock_local(fd, &s->local_addr);
    s->local_len = keel_addr_format((const struct sockaddr *)&s->local_addr.ss, s->local, sizeof(s->local));
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    stat_add(&w->stats.downstream_cx_total, 1);
    stat_add(&w->stats.downstream_cx_active, 1);
    if (keel_loop_add(w->loop, &s->io) < 0) {
        session_close(s);
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
            session_set_timer(s, T_CONNECT, session_srv(s)->opt->connect_timeout_ms);
        session_run(s);
        return;
    }
    s->keepalive = true;
    session_wait_request(s);
    session_run(s);
}

/* A session for one stream of the HTTP/2 connection `parent`: no socket, no connection
 * counted; it reads the stream's request as HTTP/1.1 bytes and writes its response the
 * same way (session_read / session_flush hand those to h2_conn.c). */
struct session *session_start_virtual(struct session *parent, struct h2_stream *st)
{
    struct worker *w = parent->w;
    struct session *s = w->free_sessions;
    if (s != NULL) {
        w->free_sessions = s->next;
        w->n_free_sessions--;
        memset(s, 0, sizeof(*s));
    } else {
        s = keel_calloc(1, sizeof(*s));
    }
    s->w = w;
    s->spec = parent->spec;
    s->h2s = st;
    s->h2_checked = true;
    s->io.fd = SESSION_VIRTUAL_FD;
    s->io.readable = true;
    s->io.writable = true;
    s->timer.cb = on_timer;
    s->free_defer.cb = on_free;
    s->resume.cb = on_resume;
    s->conn_id = parent->conn_id;
    s->conn_start_us = parent->conn_start_us;
    s->conn_start_wall_us = parent->conn_start_wall_us;
    memcpy(s->remote, parent->remote, sizeof(s->remote));
    memcpy(s->local, parent->local, sizeof(s->local));
    s->remote_ip_len = parent->remote_ip_len;
    s->remote_len = parent->remote_len;
    s->local_len = parent->local_len;
    s->remote_addr = parent->remote_addr;
    s->local_addr = parent->local_addr;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    s->keepalive = false; /* one exchange per stream */
    session_wait_request(s);
    return s;
}

static void on_free(struct keel_defer *d)
{
    struct session *s = (struct session *)((char *)d - offsetof(struct session, free_defer));
    struct worker *w = s->w;
    if (s->resume.queued) { /* let the pending resume see PH_CLOSED first */
        keel_loop_defer(w->loop, &s->free_defer);
        return;
    }
    detach_tables(s);
    free(s->own_peer);
    s->own_peer = s->peer = NULL;
    if (w->n_free_sessions < FREE_SESSIONS_MAX) {
        s->next = w->free_sessions;
        w->free_sessions = s;
        w->n_free_sessions++;
    } else {
        free(s);
    }
}

void session_close(struct session *s)
{
    struct worker *w = s->w;
    if (s->phase == PH_CLOSED)
        return;
    s->phase = PH_CLOSED;
    keel_timer_cancel(w->loop, &s->timer);
    session_report_stop(s);
    if (s->u != NULL) {
        upconn_release(s->u, false);
        s->u = NULL;
    }
    if (s->h2c != NULL)
        h2_conn_free(s); /* closes its streams' sessions */
    if (s->io.fd == SESSION_VIRTUAL_FD) {
        h2_stream_detach(s);
        stat_add(&w->stats.downstream_cx_active, 1); /* not a connection: undo the sub below */
    } else {
        keel_loop_del(w->loop, &s->io);
        close(s->io.fd);
    }
    s->io.fd = -1;
    keel_buf_release(&s->in);
    keel_buf_release(&s->out);
    keel_buf_release(&s->head);
    keel_buf_release(&s->rhead);
    route_state_reset(s);
    session_trace_reset(s);
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
void session_drop_upstream(struct session *s)
{
    if (s->u != NULL) {
        upconn_release(s->u, false);
        s->u = NULL;
    }
}

/* End the exchange without a (complete) response: the client learns by the close. */
void session_abort_exchange(struct session *s, uint32_t flag, const char *details)
{
    s->flags |= flag;
    if (details != NULL)
        s->details = details;
    session_drop_upstream(s);
    session_log_exchange(s);
    if (s->spec->kind != LISTEN_TCP)
        session_count_status(s);
    session_close(s);
}

/* ------------------------------------------------------------------ dispatch */

void session_run(struct session *s)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        bool progress;
        switch (s->phase) {
        case PH_HEAD: progress = session_http_head(s); break;
        case PH_FORWARD: progress = session_http_forward(s); break;
        case PH_REPLY: progress = session_http_reply(s); break;
        case PH_TUNNEL: progress = session_tunnel(s); break;
        case PH_H2: progress = h2_conn_run(s); break;
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
        session_run(s);
}

static void on_io(struct keel_io *io, uint32_t events)
{
    struct session *s = (struct session *)io;
    if (s->phase == PH_CLOSED)
        return;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        s->rdhup = true;
    session_run(s);
}

void session_on_upstream(struct session *s)
{
    if (s->phase != PH_CLOSED)
        session_run(s);
}

static void on_timer(struct keel_timer *t)
{
    struct session *s = (struct session *)((char *)t - offsetof(struct session, timer));
    int64_t now = keel_loop_now_ms(s->w->loop);
    switch (s->timer_role) {
    case T_IDLE:
        session_close(s);
        return;
    case T_HEADERS:
        s->t_start_us = keel_loop_now_us(s->w->loop);
        s->t_start_wall_us = keel_loop_wall_us(s->w->loop);
        s->req_done = true;
        session_local_reply(s, 408, 0, "request_header_timeout", "request timeout", true);
        session_run(s);
        return;
    case T_CONNECT:
        session_drop_upstream(s);
        session_upstream_failed(s, ETIMEDOUT);
        session_run(s);
        return;
    case T_RESPONSE:
        session_response_timeout(s);
        return;
    case T_BODY:
    case T_TUNNEL: {
        int64_t limit =
            s->timer_role == T_BODY ? session_stream_idle_ms(s) : TUNNEL_IDLE_TIMEOUT_MS;
        if (now - s->last_activity_ms < limit) {
            keel_timer_set(s->w->loop, &s->timer, limit - (now - s->last_activity_ms));
            return;
        }
        if (s->timer_role == T_BODY && s->phase == PH_FORWARD && !s->res_head_done) {
            /* nothing of a response sent yet: say so, as Envoy does (408, SI) */
            session_local_reply(s, 408, KEEL_RF_SI, "stream_idle_timeout", "stream timeout", true);
            session_run(s);
            return;
        }
        session_abort_exchange(s, s->timer_role == T_BODY ? KEEL_RF_SI : 0, "stream_idle_timeout");
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
        if (s->phase == PH_HEAD && keel_buf_len(&s->in) == 0 && s->io.fd != SESSION_VIRTUAL_FD)
            session_close(s);
        else if (s->phase == PH_H2)
            h2_conn_drain(s);
    }
}

void sessions_abort(struct worker *w)
{
    while (w->sessions != NULL) {
        struct session *s = w->sessions;
        if (s->started && s->phase != PH_HEAD)
            session_abort_exchange(s, 0, NULL);
        else
            session_close(s);
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
    while (w->free_hdr_tables != NULL) {
        struct hdr_tables *t = w->free_hdr_tables;
        w->free_hdr_tables = t->next;
        free(t);
    }
    w->n_free_hdr_tables = 0;
}
