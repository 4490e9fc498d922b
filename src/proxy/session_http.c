/* An HTTP/1.1 exchange on a session: the request head (parsed, analysed, routed), the
 * upstream request head, request and response bodies (Content-Length, chunked or
 * close-delimited, re-framed as the client needs), interim responses, local replies,
 * and the end of the exchange (upstream back to its pool, next request or close). */
#include "proxy/session_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/fmt.h"
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

static void begin_upstream(struct session *s, bool fresh);
static void finish_request(struct session *s);

static inline __attribute__((always_inline)) void append_header(struct keel_buf *b, struct keel_str name,
                                                            struct keel_str value)
{
    keel_buf_reserve(b, name.len + value.len + 4);
    char *p = keel_buf_wptr(b);
    keel_copy(p, name.p, name.len);
    p += name.len;
    *p++ = ':';
    *p++ = ' ';
    keel_copy(p, value.p, value.len);
    p += value.len;
    *p++ = '\r';
    *p++ = '\n';
    b->wpos += name.len + value.len + 4;
}

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
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ------------------------------------------------------------------ local replies */

/* Answer the current request ourselves. The connection closes afterwards when asked,
 * or when unread request body bytes would otherwise be taken for the next request. */
void session_local_reply(struct session *s, int status, uint32_t flags, const char *details,
                        const char *body, bool close_after)
{
    session_drop_upstream(s);
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
    keel_buf_printf(&s->out, "HTTP/1.1 %d %s\r\ncontent-length: %zu\r\ncontent-type: text/plain\r\n%s",
                    status, reason_phrase(status), blen,
                    s->keepalive ? "" : "connection: close\r\n");
    /* telemetry: the inbound sidecar names itself on its own error replies too (503 UF
     * from the app), so the client side still knows the destination */
    const struct proxy_gen *lg = (s->wg != NULL ? s->wg : s->w->cur)->g;
    if (s->spec->kind == LISTEN_INBOUND && lg->self != NULL)
        append_header(&s->out, LIT(KEEL_PEER_HEADER),
                      (struct keel_str){ keel_buf_rptr(&lg->metadata), keel_buf_len(&lg->metadata) });
    keel_buf_append(&s->out, "\r\n", 2);
    s->res_head_bytes = keel_buf_len(&s->out) - before;
    bool head = s->started && s->req.method.len == 4 && memcmp(s->req.method.p, "HEAD", 4) == 0;
    if (!head) {
        keel_buf_append(&s->out, body, blen);
        s->bytes_sent = blen;
    }
    s->phase = PH_REPLY;
    session_set_timer(s, T_BODY, session_stream_idle_ms(s));
    session_touch(s);
}

void session_reject_malformed(struct session *s, const struct keel_http_perror *e)
{
    int status = 400;
    switch (e->kind) {
    case KEEL_HTTP_PERR_URI_TOO_LONG: status = 414; break;
    case KEEL_HTTP_PERR_HEADERS_TOO_LARGE: status = 431; break;
    case KEEL_HTTP_PERR_VERSION: status = 505; break;
    case KEEL_HTTP_PERR_NOT_IMPLEMENTED: status = 501; break;
    default: break;
    }
    keel_log_limited(KEEL_LOG_INFO, KEEL_LOG_PER_SEC, "conn %llu from %s: %d: %s at byte %zu",
                     (unsigned long long)s->conn_id, s->remote, status, e->what, e->offset);
    stat_add(&s->w->stats.downstream_rq_bad, 1);
    if (!s->started) {
        s->t_start_us = keel_loop_now_us(s->w->loop);
        s->t_start_wall_us = keel_loop_wall_us(s->w->loop);
    }
    s->req_done = true;
    session_local_reply(s, status, KEEL_RF_DPE, "http1.codec_error",
                        status == 501 ? "Not Implemented" : "Bad Request", true);
}

/* ------------------------------------------------------------------ request head */


/* Pick the target of the current request: the app for inbound; for outbound a --route,
 * else the registry's service for the authority, round-robin over its endpoints. */
static enum route_result route_request(struct session *s)
{
    struct server *srv = session_srv(s);
    if (s->spec->kind == LISTEN_INBOUND) {
        const struct proxy_gen *g = s->wg->g;
        if (g->self_service != NULL) {
            s->svc_host = g->self_svc_host;
            s->svc_name = g->self_svc_name;
            s->svc_ns = g->self_svc_ns;
        }
        s->target = s->spec->target;
        if (s->wg->g->inbound_h2 && s->target != NULL) /* the registry says: h2 (h2_up.c) */
            s->target = &srv->app_h2;
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
        if ((r->port == 0 || r->port == port) && r->host_len == host.len &&
            keel_ascii_caseeq(r->host, host.p, host.len)) {
            s->target = &r->target;
            s->svc_host = s->svc_name = keel_str_c(r->host);
            return ROUTE_OK;
        }
    }
    /* routing: the role's VirtualServices, waypoints, then the registry (route.c) */
    return route_outbound(s, host, port, colon != NULL);
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

/* Received headers not passed on as they came: hop-by-hop ones, x-forwarded-for and the
 * peer's metadata (keel writes its own, below). */
#define UPSTREAM_DROPPED \
    (KEEL_HDR_HOP_BY_HOP | KEEL_HDR_BIT(X_FORWARDED_FOR) | KEEL_HDR_BIT(X_KEEL_PEER_METADATA))

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
        enum keel_hdr id = keel_http_hdr_id(h);
        if (keel_hdr_in(id, UPSTREAM_DROPPED) || keel_http_hop_marked(&s->meta, i))
            continue;
        if (session_trace_skip(s, id)) /* tracing: replaced below */
            continue;
        if (id == KEEL_HDR_HOST) {
            host_sent = true;
            append_header(b, h->name, s->authority);
            continue;
        }
        append_header(b, h->name, h->value);
    }
    if (!host_sent && s->authority.len > 0)
        append_header(b, LIT("host"), s->authority);
    /* x-forwarded-for: every one that came in, in order, as one list (as Envoy does),
     * then the client's address */
    struct keel_str ip = { s->remote[0] == '[' ? s->remote + 1 : s->remote,
                           s->remote[0] == '[' ? s->remote_ip_len - 2 : s->remote_ip_len };
    keel_buf_append(b, "x-forwarded-for: ", 17);
    for (size_t i = 0; s->meta.xff && i < s->req.n_headers; i++) {
        const struct keel_http_header *h = &s->hdrs[i];
        if (h->value.len > 0 && keel_http_hdr_id(h) == KEEL_HDR_X_FORWARDED_FOR) {
            keel_buf_append(b, h->value.p, h->value.len);
            keel_buf_append(b, ", ", 2);
        }
    }
    keel_buf_append(b, ip.p, ip.len);
    keel_buf_append(b, "\r\n", 2);
    if (s->meta.xfp.len == 0)
        append_header(b, LIT("x-forwarded-proto"), LIT("http"));
    const struct proxy_gen *g = s->wg->g;
    if (session_srv(s)->opt->role == KEEL_PROXY_WAYPOINT) {
        /* routing: a waypoint passes the client's identity on to the destination */
        if (s->rt.src_peer_raw.len > 0)
            append_header(b, LIT(KEEL_PEER_HEADER), s->rt.src_peer_raw);
    } else if (s->spec->kind == LISTEN_OUTBOUND && g->self != NULL) {
        append_header(b, LIT(KEEL_PEER_HEADER),
                      (struct keel_str){ keel_buf_rptr(&g->metadata), keel_buf_len(&g->metadata) });
    }
    session_trace_inject(s, b); /* tracing: this hop's context */
    switch (s->meta.body) {
    case KEEL_HTTP_BODY_LENGTH:
        keel_buf_append(b, "content-length: ", 16);
        keel_buf_append_u64(b, s->meta.content_length);
        keel_buf_append(b, "\r\n", 2);
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

/* A complete request head is at the front of s->in: take it. */
static void take_request(struct session *s, size_t head_len)
{
    struct worker *w = s->w;
    /* own the head bytes: s->in moves on as the body streams through; room for a path
     * rebuilt from an absolute-form target, so that slices stay put */
    s->head_scanned = 0;
    size_t room = head_len + s->req.target.len + 1;
    if (keel_buf_len(&s->in) == head_len && s->head.data == NULL && s->in.cap - s->in.rpos >= room) {
        /* the reads brought the head alone (no body, nothing pipelined: the usual GET):
         * its buffer becomes the head's as it is, slices and all; the next read takes a
         * fresh one */
        s->head = s->in;
        s->in = (struct keel_buf){ 0 };
    } else {
        keel_buf_reserve(&s->head, room);
        keel_buf_append(&s->head, keel_buf_rptr(&s->in), head_len);
        ptrdiff_t delta = (s->head.data + s->head.wpos - head_len) - keel_buf_rptr(&s->in);
#define MOVE(str) ((str).p = (str).p ? (str).p + delta : NULL)
        MOVE(s->req.method);
        MOVE(s->req.target);
        for (size_t i = 0; i < s->req.n_headers; i++) {
            MOVE(s->hdrs[i].name);
            MOVE(s->hdrs[i].value);
        }
#undef MOVE
        keel_buf_consume(&s->in, head_len);
    }
    s->started = true;
    s->req_head_bytes = head_len;
    s->t_start_us = keel_loop_now_us(w->loop);
    s->t_start_wall_us = keel_loop_wall_us(w->loop);

    struct keel_http_perror e;
    if (keel_http_analyze_request(&s->req, &s->meta, &e) < 0) {
        s->req_done = true;
        session_reject_malformed(s, &e);
        return;
    }
    if (s->meta.conn_upgrade && h2_upgrade_take(s)) /* Upgrade: h2c (h2_upgrade.c) */
        return;
    if (s->meta.conn_close)
        s->keepalive = false;
    if (split_absolute(s->req.target, &s->authority, &s->path)) {
        if (!keel_http_authority_valid(s->authority)) {
            e = (struct keel_http_perror){ KEEL_HTTP_PERR_SYNTAX, 0, "invalid target authority" };
            session_reject_malformed(s, &e);
            return;
        }
        if (s->path.p[0] == '?') {
            /* "http://a?q" asks for "/?q" (RFC 9112 §3.2.2): built in the head's room */
            char *p = keel_buf_wptr(&s->head);
            p[0] = '/';
            memcpy(p + 1, s->path.p, s->path.len);
            s->head.wpos += s->path.len + 1;
            s->path = (struct keel_str){ p, s->path.len + 1 };
        }
    } else {
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
        s->hdrs[s->req.n_headers] = (struct keel_http_header){ LIT("x-request-id"), s->rid,
                                                               KEEL_HDR_X_REQUEST_ID };
        if (s->req.first[KEEL_HDR_X_REQUEST_ID] == 0)
            s->req.first[KEEL_HDR_X_REQUEST_ID] = (uint8_t)(s->req.n_headers + 1);
        s->req.n_headers++;
    }
    bool inbound = s->spec->kind == LISTEN_INBOUND;
    for (size_t i = 0; i < s->req.n_headers; i++) {
        const struct keel_http_header *h = &s->hdrs[i];
        switch (keel_http_hdr_id(h)) {
        case KEEL_HDR_X_KEEL_PEER_METADATA:
            if (inbound && keel_peer_parse(h->value, session_peer_slot(s)) < 0)
                stat_add(&s->w->stats.peer_metadata_rejected, 1);
            break;
        case KEEL_HDR_CONTENT_TYPE: /* gRPC: messages and status are reported */
            if (h->value.len >= 16 && keel_ascii_caseeq(h->value.p, "application/grpc", 16))
                s->grpc = true;
            break;
        default:
            break;
        }
    }
    s->upgrade = s->meta.conn_upgrade && s->meta.upgrade.len > 0;
    if (s->meta.body == KEEL_HTTP_BODY_LENGTH)
        s->req_left = s->meta.content_length;
    if (s->meta.body == KEEL_HTTP_BODY_NONE ||
        (s->meta.body == KEEL_HTTP_BODY_LENGTH && s->req_left == 0)) {
        s->req_done = true;
        s->t_req_done_us = s->t_start_us;
    }
    s->wg = worker_gen_acquire(w);
    switch (route_request(s)) {
    case ROUTE_OK:
        break;
    case ROUTE_NONE:
        session_local_reply(s, 404, KEEL_RF_NR, "route_not_found", "", false);
        return;
    case ROUTE_NO_ENDPOINT:
        stat_add(&w->stats.upstream_rq_no_endpoint, 1);
        session_local_reply(s, 503, KEEL_RF_UH, "no_healthy_upstream", "no healthy upstream", false);
        return;
    case ROUTE_NO_CLUSTER:
        session_local_reply(s, 503, KEEL_RF_NC, "cluster_not_found", "", false);
        return;
    case ROUTE_REPLY: /* outboundTrafficPolicy: BlackHoleCluster, an unresolvable host */
        session_local_reply(s, s->rt.reply_status, s->rt.reply_flags, s->rt.reply_details,
                            s->rt.reply_body, false);
        return;
    }
    session_trace_begin(s); /* tracing: context in, this hop's span */
    if (route_before_upstream(s)) /* routing: fault abort or delay; rewrites */
        return;
    session_http_proceed(s);
}

void session_http_proceed(struct session *s)
{
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
    s->rhead_scanned = 0;
    s->up_write_failed = false;
    s->u = upconn_acquire(s->w, s->target, s, fresh, &err);
    if (s->u == NULL) {
        session_upstream_failed(s, err);
        return;
    }
    write_upstream_head(s, &s->u->out);
    if (s->u->connected) {
        session_upstream_connected(s);
    } else {
        session_set_timer(s, T_CONNECT, session_srv(s)->opt->connect_timeout_ms);
    }
}

/* snprintf(dst, cap, "%s", src) without printf's cost (once per request each); the length */
static size_t copy_cstr(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

void session_upstream_connected(struct session *s)
{
    keel_buf_release(&s->rhead);
    s->up_host_len = copy_cstr(s->up_host, sizeof(s->up_host), s->target->addr_str);
    s->up_local_len = copy_cstr(s->up_local, sizeof(s->up_local), s->u->local);
    if (s->spec->kind == LISTEN_TCP) {
        s->phase = PH_TUNNEL;
        session_set_timer(s, T_TUNNEL, TUNNEL_IDLE_TIMEOUT_MS);
        session_touch(s);
        struct keel_access_record r = { .is_tcp = true, .start_us = s->t_start_wall_us,
                                        .upstream_host = ((struct keel_str){ s->up_host, s->up_host_len }),
                                        .downstream_local = ((struct keel_str){ s->local, s->local_len }),
                                        .downstream_remote = ((struct keel_str){ s->remote, s->remote_len }) };
        session_report(s, &r, "open");
        return;
    }
    s->phase = PH_FORWARD;
    /* the response timeout starts once the whole request is upstream (Envoy's route
     * timeout); until then only inactivity ends a slow upload */
    session_set_timer(s, T_BODY, session_stream_idle_ms(s));
    session_touch(s);
}

void session_upstream_failed(struct session *s, int err)
{
    s->u = NULL;
    stat_add(&s->w->stats.upstream_cx_connect_fail, 1);
    if (s->spec->kind != LISTEN_TCP && route_retry(s, KEEL_RETRY_CONNECT_FAILURE, 0)) { /* routing */
        begin_upstream(s, false);
        return;
    }
    s->up_host_len = copy_cstr(s->up_host, sizeof(s->up_host), s->target->addr_str);
    if (s->spec->kind == LISTEN_TCP) {
        s->flags |= KEEL_RF_UF;
        session_log_exchange(s);
        session_close(s);
        return;
    }
    keel_log_debug("upstream %s: connect failed: %s", s->up_host, strerror(err));
    session_local_reply(s, 503, KEEL_RF_UF, "upstream_reset_before_response_started{connection_failure}",
                "upstream connect error or disconnect/reset before headers. reset reason: "
                "connection failure",
                false);
}

/* PH_HEAD: read and parse until a request head is complete. */
bool session_http_head(struct session *s)
{
    struct server *srv = session_srv(s);
    if (s->draining && keel_buf_len(&s->in) == 0) {
        session_close(s);
        return false;
    }
    size_t have = keel_buf_len(&s->in);
    bool h2_maybe = false; /* the bytes so far begin the HTTP/2 preface (h2_conn.c) */
    if (!s->h2_checked && have > 0) {
        int rc = h2_conn_detect(s);
        if (rc == 1)
            return true;
        h2_maybe = rc == KEEL_AGAIN;
    }
    /* parse what the first read brought (early errors are answered at once); after that,
     * only once the head is complete or over the limit, so a head sent in many small
     * pieces is not parsed again from its start for each */
    if (have > 0 && !h2_maybe && (s->head_scanned == 0 || have > srv->limits.max_head_bytes ||
                     keel_http_head_complete(keel_buf_rptr(&s->in), have, &s->head_scanned))) {
        s->head_scanned = have;
        session_attach_tables(s);
        s->req.headers = s->hdrs;
        struct keel_http_perror e;
        int rc = keel_http_parse_request(keel_buf_rptr(&s->in), have, &srv->limits, &s->req, &e);
        if (rc > 0) {
            take_request(s, (size_t)rc);
            return true;
        }
        if (rc == KEEL_EINVAL) {
            session_reject_malformed(s, &e);
            return true;
        }
    }
    if (!s->io.readable)
        return false;
    bool was_empty = keel_buf_len(&s->in) == 0;
    ssize_t n = session_read(&s->io, &s->in, srv->limits.max_head_bytes + 1024);
    if (n > 0) {
        if (was_empty)
            session_set_timer(s, T_HEADERS, srv->opt->request_headers_timeout_ms);
        return true;
    }
    if (n == KEEL_AGAIN)
        return false;
    /* EOF or error between requests: a normal close; mid-head: nothing to answer */
    session_close(s);
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
            if (s->grpc)
                keel_grpc_frames_feed(&s->req_msgs, keel_buf_rptr(&s->in), n);
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
                session_reject_malformed(s, &e);
                return true;
            }
            if (rc == KEEL_CHUNK_DATA) {
                keel_buf_printf(out, "%zx\r\n", len);
                keel_buf_append(out, keel_buf_rptr(&s->in) + off, len);
                keel_buf_append(out, "\r\n", 2);
                if (s->grpc)
                    keel_grpc_frames_feed(&s->req_msgs, keel_buf_rptr(&s->in) + off, len);
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

void session_response_timeout(struct session *s)
{
    stat_add(&s->w->stats.upstream_rq_timeout, 1);
    if (!s->res_head_done && route_retry(s, KEEL_RETRY_5XX | KEEL_RETRY_GATEWAY_ERROR, 0)) { /* per try */
        session_drop_upstream(s);
        begin_upstream(s, false);
        session_run(s);
        return;
    }
    if (!s->res_head_done) {
        session_local_reply(s, 504, KEEL_RF_UT, "upstream_response_timeout", "upstream request timeout",
                    false);
        session_run(s);
        return;
    }
    session_abort_exchange(s, KEEL_RF_UT, "upstream_response_timeout");
}

/* The upstream went away before the response was complete. */
/* RFC 9110 §9.2.2: a request that may be sent twice, for all the server can tell. */
static bool method_idempotent(struct keel_str m)
{
    switch (m.len) {
    case 3: return memcmp(m.p, "GET", 3) == 0 || memcmp(m.p, "PUT", 3) == 0;
    case 4: return memcmp(m.p, "HEAD", 4) == 0;
    case 5: return memcmp(m.p, "TRACE", 5) == 0;
    case 6: return memcmp(m.p, "DELETE", 6) == 0;
    case 7: return memcmp(m.p, "OPTIONS", 7) == 0;
    default: return false;
    }
}

static void upstream_gone(struct session *s)
{
    if (!s->res_head_done) {
        /* A pooled connection that the server closed while idle: try once more on a fresh
         * one when nothing of the request body has been consumed yet, and only a request
         * that may be sent twice: the server may have read it and then gone (a POST it
         * acted on must not be acted on again). */
        if (s->u->reused && !s->retried && s->meta.body != KEEL_HTTP_BODY_CHUNKED &&
            s->meta.content_length == 0 && method_idempotent(s->req.method) &&
            keel_buf_len(&s->u->in) == 0) {
            s->retried = true;
            stat_add(&s->w->stats.upstream_rq_retry, 1);
            session_drop_upstream(s);
            begin_upstream(s, true);
            return;
        }
        if (route_retry(s, KEEL_RETRY_RESET, 0)) { /* routing */
            session_drop_upstream(s);
            begin_upstream(s, false);
            return;
        }
        session_local_reply(s, 503, KEEL_RF_UC,
                    "upstream_reset_before_response_started{connection_termination}",
                    "upstream connect error or disconnect/reset before headers. reset reason: "
                    "connection termination",
                    false);
        return;
    }
    /* mid-response: the client can only learn of it by the connection closing */
    session_abort_exchange(s, KEEL_RF_UC, "upstream_reset_after_response_started{connection_termination}");
}

static void write_response_head(struct session *s)
{
    struct keel_buf *b = &s->out;
    size_t before = keel_buf_len(b);
    const struct keel_http_response *res = &s->res;
    /* the parser took exactly three digits: no printf for the status line */
    keel_buf_reserve(b, 15 + res->reason.len);
    char *w = keel_buf_wptr(b);
    memcpy(w, "HTTP/1.1 ", 9);
    w[9] = (char)('0' + res->status / 100);
    w[10] = (char)('0' + res->status / 10 % 10);
    w[11] = (char)('0' + res->status % 10);
    w[12] = ' ';
    memcpy(w + 13, res->reason.p, res->reason.len);
    w[13 + res->reason.len] = '\r';
    w[14 + res->reason.len] = '\n';
    b->wpos += 15 + res->reason.len;
    bool no_body = s->rmeta.body == KEEL_HTTP_BODY_NONE;
    struct keel_http_header *st = NULL; /* the next hop's x-envoy-upstream-service-time */
    for (size_t i = 0; i < res->n_headers; i++) {
        struct keel_http_header *h = &s->rhdrs[i];
        enum keel_hdr id = keel_http_hdr_id(h);
        if (id == KEEL_HDR_X_ENVOY_UPSTREAM_SERVICE_TIME) {
            if (st == NULL) /* ours replaces the next hop's, as Envoy sets it */
                st = h;
            continue;
        }
        if (keel_http_hop_marked(&s->rmeta, i))
            continue;
        switch (id) {
        case KEEL_HDR_CONTENT_LENGTH:
            if (no_body) /* HEAD and 304 answers keep the length they describe */
                append_header(b, h->name, h->value);
            continue;
        case KEEL_HDR_UPGRADE:
            if (s->upgrade && res->status == 101)
                append_header(b, h->name, h->value);
            continue;
        case KEEL_HDR_X_KEEL_PEER_METADATA:
            if (s->spec->kind == LISTEN_OUTBOUND)
                if (keel_peer_parse(h->value, session_peer_slot(s)) < 0)
                    stat_add(&s->w->stats.peer_metadata_rejected, 1);
            if (session_srv(s)->opt->role == KEEL_PROXY_WAYPOINT) /* routing: to the client */
                append_header(b, h->name, h->value);
            continue;
        default:
            if (keel_hdr_in(id, KEEL_HDR_HOP_BY_HOP))
                continue;
            append_header(b, h->name, h->value);
        }
    }
    const struct proxy_gen *g = s->wg->g;
    if (s->spec->kind == LISTEN_INBOUND && g->self != NULL)
        append_header(b, LIT(KEEL_PEER_HEADER),
                      (struct keel_str){ keel_buf_rptr(&g->metadata), keel_buf_len(&g->metadata) });
    if (s->rmeta.body == KEEL_HTTP_BODY_LENGTH) {
        keel_buf_append(b, "content-length: ", 16);
        keel_buf_append_u64(b, s->rmeta.content_length);
        keel_buf_append(b, "\r\n", 2);
    } else if (s->rmeta.body != KEEL_HTTP_BODY_NONE) {
        if (s->req.minor == 1) {
            /* codings other than chunked stay on the body: name them, then our chunked */
            keel_buf_append(b, "transfer-encoding: ", 19);
            for (size_t i = 0; s->rmeta.te_codings && i < res->n_headers; i++) {
                if (keel_http_hdr_id(&s->rhdrs[i]) != KEEL_HDR_TRANSFER_ENCODING)
                    continue;
                struct keel_str v = keel_http_te_strip_chunked(s->rhdrs[i].value);
                if (v.len > 0) {
                    keel_buf_append(b, v.p, v.len);
                    keel_buf_append(b, ", ", 2);
                }
            }
            keel_buf_append(b, "chunked\r\n", 9);
            s->res_chunked_out = true;
        } else {
            s->res_close_delimited = true;
            s->keepalive = false;
        }
    }
    int64_t ust = (s->t_first_byte_us - (s->t_upstream_sent_us >= 0 ? s->t_upstream_sent_us
                                                                     : s->t_start_us)) / 1000;
    int n = 0;
    if (ust < 0) /* never in practice (monotonic clock); written as printf would */
        s->service_time[n++] = '-';
    n += (int)keel_fmt_u64(s->service_time + n, ust < 0 ? 0 - (uint64_t)ust : (uint64_t)ust);
    /* the log sees ours too: in place of the next hop's, else added */
    if (st == NULL) {
        st = &s->rhdrs[s->res.n_headers++];
        s->res.first[KEEL_HDR_X_ENVOY_UPSTREAM_SERVICE_TIME] = (uint8_t)s->res.n_headers;
    }
    *st = (struct keel_http_header){ LIT("x-envoy-upstream-service-time"),
                                     (struct keel_str){ s->service_time, (size_t)n },
                                     KEEL_HDR_X_ENVOY_UPSTREAM_SERVICE_TIME };
    append_header(b, st->name, st->value);
    if (!s->req_done && res->status != 101)
        s->keepalive = false; /* answered before the request's end: the connection will close
                               * (the rest of the body is not ours), and the client is told,
                               * as Envoy does, so that it can stop sending */
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
    const struct keel_http_limits *lim = &session_srv(s)->limits;
    size_t have = keel_buf_len(&u->in);
    /* as for request heads: no re-parse from the start for every small read */
    if (!(s->rhead_scanned == 0 || have > lim->max_head_bytes ||
          keel_http_head_complete(keel_buf_rptr(&u->in), have, &s->rhead_scanned)))
        return false;
    s->rhead_scanned = have;
    s->res.headers = s->rhdrs;
    int rc = keel_http_parse_response(keel_buf_rptr(&u->in), have, lim, &s->res, &e);
    if (rc == KEEL_AGAIN)
        return false;
    if (rc < 0 || keel_http_analyze_response(&s->res, s->req.method, &s->rmeta, &e) < 0) {
        keel_log_limited(KEEL_LOG_INFO, KEEL_LOG_PER_SEC, "upstream %s: bad response: %s",
                         s->up_host, e.what);
        session_local_reply(s, 502, KEEL_RF_UPE, "upstream_reset_before_response_started{protocol_error}",
                    "upstream protocol error", false);
        return true;
    }
    if (s->res.status == 101 && !s->upgrade) {
        /* the connection now speaks something else: it can carry nothing more of ours */
        keel_log_info("upstream %s: bad response: 101 Switching Protocols not asked for",
                      s->up_host);
        session_local_reply(s, 502, KEEL_RF_UPE, "upstream_reset_before_response_started{protocol_error}",
                    "upstream protocol error", false);
        return true;
    }
    if (s->rmeta.te_codings && s->req.minor == 0 && s->rmeta.body != KEEL_HTTP_BODY_NONE) {
        /* RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client, and the body means
         * nothing without its codings */
        keel_log_info("upstream %s: transfer coding cannot be sent to an HTTP/1.0 client",
                      s->up_host);
        session_local_reply(s, 502, KEEL_RF_UPE, "upstream_reset_before_response_started{protocol_error}",
                    "upstream protocol error", false);
        return true;
    }
    size_t head_len = (size_t)rc;
    s->rhead_scanned = 0;
    if (s->res.status >= 100 && s->res.status < 200 && s->res.status != 101) {
        /* interim response: pass 1xx on to HTTP/1.1 clients (not a second 100) */
        if (s->req.minor == 1 && !(s->res.status == 100 && s->sent_continue))
            keel_buf_append(&s->out, keel_buf_rptr(&u->in), head_len);
        keel_buf_consume(&u->in, head_len);
        return true;
    }
    if (route_retry(s, 0, s->res.status)) { /* routing: a retriable status */
        session_drop_upstream(s);
        begin_upstream(s, false);
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
        session_set_timer(s, T_TUNNEL, TUNNEL_IDLE_TIMEOUT_MS);
        return true;
    }
    write_response_head(s);
    s->res_chunked.want_trailers = s->res_chunked_out;
    if (s->rmeta.body == KEEL_HTTP_BODY_NONE ||
        (s->rmeta.body == KEEL_HTTP_BODY_LENGTH && s->res_left == 0))
        s->res_done = true;
    session_set_timer(s, T_BODY, session_stream_idle_ms(s));
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
                session_abort_exchange(s, KEEL_RF_UPE, "upstream_reset_after_response_started{protocol_error}");
                return false;
            }
            if (rc == KEEL_CHUNK_DATA)
                data = keel_buf_rptr(in) + off;
            else if (rc == KEEL_CHUNK_DONE)
                s->res_done = true;
            if (rc == KEEL_CHUNK_TRAILER) { /* only when re-chunked: want_trailers */
                if (!s->res_trailers_out)
                    keel_buf_append(&s->out, "0\r\n", 3);
                s->res_trailers_out = true;
                keel_buf_append(&s->out, keel_buf_rptr(in) + off, len);
                size_t keep = sizeof(s->trailers) - s->trailers_len; /* grpc-status: telemetry */
                keep = len < keep ? len : keep;
                memcpy(s->trailers + s->trailers_len, keel_buf_rptr(in) + off, keep);
                s->trailers_len += keep;
                len = 0;
            }
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
            if (s->grpc)
                keel_grpc_frames_feed(&s->res_msgs, data, len);
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
        if (s->res_done && s->res_chunked_out) /* trailers (grpc-status) pass through */
            keel_buf_append(&s->out, s->res_trailers_out ? "\r\n" : "0\r\n\r\n",
                            s->res_trailers_out ? 2 : 5);
        progress = true;
    }
    return progress;
}

/* The upstream connection may carry another request once this exchange completed
 * cleanly on both sides. */
static bool upstream_reusable(const struct session *s)
{
    return s->res_done && s->req_done && !s->rmeta.conn_close && s->res.status != 101 &&
           s->rmeta.body != KEEL_HTTP_BODY_EOF && keel_buf_len(&s->u->in) == 0 &&
           keel_buf_len(&s->u->out) == 0;
}

bool session_http_forward(struct session *s)
{
    struct upconn *u = s->u;
    bool progress = false;
    ssize_t n;

    /* client -> upstream (not once the upstream refused it: its answer is what is left) */
    if (!s->req_done && !s->up_write_failed) {
        if (keel_buf_len(&s->in) > 0 && forward_request_body(s))
            progress = true;
        if (s->phase != PH_FORWARD)
            return true;
        if (!s->req_done && keel_buf_len(&s->in) == 0 && s->io.readable &&
            sink_has_room(&u->io, &u->out)) {
            n = session_read(&s->io, &s->in, READ_CHUNK);
            if (n > 0) {
                progress = true;
                session_touch(s);
            } else if (n == 0 || n == KEEL_EIO) {
                session_abort_exchange(s, KEEL_RF_DC, "downstream_remote_disconnect");
                return false;
            }
        }
    } else if (s->rdhup && !s->res_done) {
        /* the client left while we wait for or relay the response (Envoy: DC) */
        session_abort_exchange(s, KEEL_RF_DC, "downstream_remote_disconnect");
        return false;
    }
    if (keel_buf_len(&u->out) > 0 && u->io.writable && !s->up_write_failed) {
        n = session_flush(s->w->loop, &u->io, &u->out);
        if (n < 0) {
            /* An upstream that answered early (a 413 before the body) and reset: its
             * answer may be on its way to us, ahead of the reset (the send's failure can
             * be reported first). Read on; the end of the stream decides (EOF or the
             * reset: upstream_gone, as before); the response timer bounds the wait. */
            s->up_write_failed = true;
            s->keepalive = false;
            int64_t t = route_attempt_timeout_ms(s, session_srv(s)->opt->upstream_timeout_ms);
            if (t > 0 && !s->res_head_done)
                session_set_timer(s, T_RESPONSE, t);
            progress = true;
        } else if (n > 0) {
            progress = true;
        }
    }
    if (s->req_done && keel_buf_len(&u->out) == 0 && s->t_upstream_sent_us < 0) {
        s->t_upstream_sent_us = keel_loop_now_us(s->w->loop);
        int64_t t = route_attempt_timeout_ms(s, session_srv(s)->opt->upstream_timeout_ms);
        if (t > 0 && !s->res_head_done)
            session_set_timer(s, T_RESPONSE, t);
    }

    /* upstream -> client: read only once what was read before has moved on (or to
     * complete a head), so an EOF is never seen ahead of unforwarded bytes */
    if (!s->res_done && u->io.readable && sink_has_room(&s->io, &s->out) &&
        (keel_buf_len(&u->in) == 0 || !s->res_head_done)) {
        n = session_read(&u->io, &u->in, READ_CHUNK);
        if (n > 0) {
            if (s->t_first_byte_us < 0)
                s->t_first_byte_us = keel_loop_now_us(s->w->loop);
            progress = true;
            session_touch(s);
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
        n = session_flush(s->w->loop, &s->io, &s->out);
        if (n < 0) {
            session_abort_exchange(s, KEEL_RF_DC, "downstream_remote_disconnect");
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
    session_log_exchange(s);
    session_count_status(s);
    if (!s->keepalive || s->draining || s->rdhup) {
        session_close(s);
        return;
    }
    session_wait_request(s);
}

/* PH_REPLY: flush the local response, then go on or close. */
bool session_http_reply(struct session *s)
{
    if (keel_buf_len(&s->out) > 0) {
        if (!s->io.writable)
            return false;
        ssize_t n = session_flush(s->w->loop, &s->io, &s->out);
        if (n < 0) {
            session_abort_exchange(s, KEEL_RF_DC, NULL);
            return false;
        }
        if (keel_buf_len(&s->out) > 0)
            return false;
    }
    finish_request(s);
    return s->phase != PH_CLOSED;
}
