/* A downstream HTTP/2 connection (h2c, prior knowledge): nghttp2 through src/http/h2.c on
 * the connection's session (phase PH_H2), and one virtual session per stream.
 *
 * A stream's exchange is an ordinary session whose downstream is the stream instead of a
 * socket: the stream's request is written for it as HTTP/1.1 bytes (head from the HEADERS,
 * body from DATA, chunked when no content-length came), and the HTTP/1.1 response it
 * writes is translated back into HEADERS and DATA. Routing, retries, faults, timeouts,
 * peer metadata, the access log and the telemetry report are then the HTTP/1.1 path's,
 * with %PROTOCOL% "HTTP/2". Flow control runs end to end: DATA is acknowledged to the
 * client as the session reads it, and the session stops writing (io.writable) while the
 * stream's response buffer is full, so it stops reading its upstream. */
#include "proxy/session_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "http/h2.h"
#include "telemetry/response_flags.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_HIGH_WATER (64 * 1024) /* response bytes a stream holds for nghttp2 */

struct h2_conn {
    struct session *s;          /* the connection's own session (PH_H2) */
    struct keel_h2 *h;
    struct h2_stream *streams;  /* every stream with state here */
    bool closing;               /* being freed: streams are dropped, nghttp2 left alone */
};

enum res_state { RS_HEAD, RS_BODY, RS_DONE };

struct h2_stream {
    struct h2_conn *c;
    int32_t id;
    struct session *vs;         /* the exchange; NULL once it has closed */
    struct h2_stream *next, *prev;
    bool h2_closed;             /* nghttp2 is done with the stream */

    /* request: HTTP/1.1 bytes for vs to read */
    struct keel_buf pseudo;     /* :method, :path, :authority until the request line */
    struct keel_str method, path, authority; /* offsets into pseudo (p is the offset) */
    struct keel_buf cookie;     /* cookie crumbs, joined with "; " (RFC 9113 §8.2.3) */
    struct keel_buf req;
    bool line_done;             /* request line and host written */
    bool head_done;
    bool has_cl;
    bool chunked;               /* we frame the body chunked */
    bool req_ended;             /* END_STREAM seen */
    size_t unacked;             /* DATA bytes in req not yet acknowledged */

    /* response: from vs's HTTP/1.1 bytes */
    enum res_state rs;
    enum keel_http_body body_kind;
    uint64_t res_left;
    struct keel_http_chunked ch;
    struct keel_buf body;       /* DATA waiting for nghttp2 */
    struct keel_buf trailers;   /* "name: value\r\n" lines of the chunked trailer section */
    bool body_eof;
    bool deferred;              /* read_body said KEEL_AGAIN: resume when body grows */
};

static struct h2_conn *conn_of(void *arg) { return arg; }

/* Stream records are recycled per worker thread, as sessions are: no malloc per request
 * once warm (nghttp2's own per-stream state aside). */
#define FREE_STREAMS_MAX 4096
static _Thread_local struct h2_stream *free_streams;
static _Thread_local size_t n_free_streams;

static struct h2_stream *stream_alloc(void)
{
    struct h2_stream *st = free_streams;
    if (st == NULL)
        return keel_calloc(1, sizeof(*st));
    free_streams = st->next;
    n_free_streams--;
    memset(st, 0, sizeof(*st));
    return st;
}

void h2_free_recycled(void)
{
    while (free_streams != NULL) {
        struct h2_stream *st = free_streams;
        free_streams = st->next;
        free(st);
    }
    n_free_streams = 0;
    h2_up_free_recycled();
}

static void kick(struct h2_conn *c)
{
    if (!c->closing)
        keel_loop_defer(c->s->w->loop, &c->s->resume);
}

static void wake_stream(struct h2_stream *st)
{
    if (st->vs != NULL)
        keel_loop_defer(st->vs->w->loop, &st->vs->resume);
}

static void stream_free(struct h2_stream *st)
{
    struct h2_conn *c = st->c;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    keel_buf_release(&st->pseudo);
    keel_buf_release(&st->cookie);
    keel_buf_release(&st->req);
    keel_buf_release(&st->body);
    keel_buf_release(&st->trailers);
    if (n_free_streams < FREE_STREAMS_MAX) {
        st->next = free_streams;
        free_streams = st;
        n_free_streams++;
    } else {
        free(st);
    }
    if (c->streams == NULL && !c->closing)
        session_set_timer(c->s, T_IDLE, session_srv(c->s)->opt->idle_timeout_ms);
}

/* ------------------------------------------------------------------ nghttp2 callbacks */

static void *on_open(void *arg, int32_t id)
{
    struct h2_conn *c = conn_of(arg);
    if (c->s->draining)
        return NULL;
    struct h2_stream *st = stream_alloc();
    st->c = c;
    st->id = id;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    session_set_timer(c->s, T_NONE, 0); /* the streams have timers of their own */
    stat_add(&c->s->w->stats.h2_streams_total, 1);
    return st;
}

static struct keel_str pseudo_get(const struct h2_stream *st, struct keel_str off)
{
    return (struct keel_str){ st->pseudo.data + st->pseudo.rpos + (size_t)off.p, off.len };
}

static void put_line(struct keel_buf *b, const char *name, size_t nlen, const char *value,
                     size_t vlen)
{
    keel_buf_reserve(b, nlen + vlen + 4);
    keel_buf_append(b, name, nlen);
    keel_buf_append(b, ": ", 2);
    keel_buf_append(b, value, vlen);
    keel_buf_append(b, "\r\n", 2);
}

/* The pseudo-headers have all come (they precede the others): the request line. */
static int request_line(struct h2_stream *st)
{
    st->line_done = true;
    if (st->method.len == 0 || st->path.len == 0)
        return KEEL_EINVAL; /* CONNECT and friends: not proxied over h2 */
    struct keel_str m = pseudo_get(st, st->method), p = pseudo_get(st, st->path);
    keel_buf_reserve(&st->req, m.len + p.len + 16);
    keel_buf_append(&st->req, m.p, m.len);
    keel_buf_append(&st->req, " ", 1);
    keel_buf_append(&st->req, p.p, p.len);
    keel_buf_append(&st->req, " HTTP/1.1\r\n", 11);
    if (st->authority.len > 0) {
        struct keel_str a = pseudo_get(st, st->authority);
        put_line(&st->req, "host", 4, a.p, a.len);
    }
    return 0;
}

static int on_header(void *arg, void *stp, const struct keel_h2_nv *nv, bool trailer)
{
    struct h2_stream *st = stp;
    if (trailer || st->head_done)
        return 0; /* request trailers: the HTTP/1.1 upstream gets none */
    struct keel_str name = { nv->name, nv->name_len };
    if (name.len > 0 && name.p[0] == ':') {
        if (st->line_done)
            return KEEL_EINVAL;
        struct keel_str *slot = keel_str_eq(name, LIT(":method"))      ? &st->method
                                : keel_str_eq(name, LIT(":path"))      ? &st->path
                                : keel_str_eq(name, LIT(":authority")) ? &st->authority
                                                                       : NULL;
        if (slot != NULL) {
            *slot = (struct keel_str){ (const char *)(uintptr_t)keel_buf_len(&st->pseudo),
                                       nv->value_len };
            keel_buf_append(&st->pseudo, nv->value, nv->value_len);
        }
        return 0;
    }
    if (!st->line_done && request_line(st) < 0)
        return KEEL_EINVAL;
    if (keel_str_eq(name, LIT("host")) && st->authority.len > 0)
        return 0; /* :authority wins (RFC 9113 §8.3.1) */
    if (keel_str_eq(name, LIT("te")))
        return 0;
    if (keel_str_eq(name, LIT("content-length")))
        st->has_cl = true;
    if (keel_str_eq(name, LIT("cookie"))) {
        if (keel_buf_len(&st->cookie) > 0)
            keel_buf_append(&st->cookie, "; ", 2);
        keel_buf_append(&st->cookie, nv->value, nv->value_len);
        return 0;
    }
    put_line(&st->req, nv->name, nv->name_len, nv->value, nv->value_len);
    return 0;
}

static void end_request(struct h2_stream *st)
{
    if (st->req_ended)
        return;
    st->req_ended = true;
    if (st->chunked)
        keel_buf_append(&st->req, "0\r\n\r\n", 5);
    if (st->vs != NULL)
        st->vs->io.readable = true;
    wake_stream(st);
}

static void on_headers_done(void *arg, void *stp, bool end_stream, bool trailer)
{
    struct h2_conn *c = conn_of(arg);
    struct h2_stream *st = stp;
    if (st->head_done) { /* trailers (they end the stream) */
        if (end_stream)
            end_request(st);
        return;
    }
    st->head_done = true;
    if (!st->line_done && request_line(st) < 0) {
        keel_h2_reset(c->h, st->id, KEEL_H2_PROTOCOL_ERROR);
        return;
    }
    keel_buf_release(&st->pseudo);
    if (keel_buf_len(&st->cookie) > 0) {
        put_line(&st->req, "cookie", 6, keel_buf_rptr(&st->cookie), keel_buf_len(&st->cookie));
        keel_buf_release(&st->cookie);
    }
    if (!end_stream && !st->has_cl) {
        keel_buf_append(&st->req, "transfer-encoding: chunked\r\n", 28);
        st->chunked = true;
    }
    keel_buf_append(&st->req, "\r\n", 2);
    st->vs = session_start_virtual(c->s, st);
    if (end_stream)
        end_request(st);
    wake_stream(st);
}

static void on_data(void *arg, void *stp, const uint8_t *p, size_t n)
{
    struct h2_stream *st = stp;
    if (st->vs == NULL || st->req_ended) { /* nobody reads it any more */
        keel_h2_consume(st->c->h, st->id, n);
        return;
    }
    if (st->chunked) {
        char line[24];
        int k = snprintf(line, sizeof(line), "%zx\r\n", n);
        keel_buf_reserve(&st->req, n + (size_t)k + 2);
        keel_buf_append(&st->req, line, (size_t)k);
        keel_buf_append(&st->req, p, n);
        keel_buf_append(&st->req, "\r\n", 2);
    } else {
        keel_buf_append(&st->req, p, n);
    }
    st->unacked += n;
    st->vs->io.readable = true;
    wake_stream(st);
}

static void on_end_stream(void *arg, void *stp) { end_request(stp); }

/* The chunked trailer lines as HTTP/2 trailers (grpc-status lives there). */
static void submit_trailers(struct h2_stream *st)
{
    struct keel_h2_nv nv[64];
    size_t k = 0;
    char *p = keel_buf_rptr(&st->trailers), *end = p + keel_buf_len(&st->trailers);
    while (p < end && k < 64) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *line_end = eol != NULL ? eol : end;
        char *next = eol != NULL ? eol + 1 : end;
        if (line_end > p && line_end[-1] == '\r')
            line_end--;
        char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon != NULL && colon > p) {
            for (char *q = p; q < colon; q++)
                *q = (char)tolower((unsigned char)*q);
            char *v = colon + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            char *ve = line_end;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            struct keel_str name = { p, (size_t)(colon - p) };
            if (!keel_hdr_in(keel_http_header_id(name), KEEL_HDR_HOP_BY_HOP))
                nv[k++] = (struct keel_h2_nv){ p, name.len, v, (size_t)(ve - v) };
        }
        p = next;
    }
    if (k > 0)
        keel_h2_submit_trailers(st->c->h, st->id, nv, k);
}

static ssize_t on_read_body(void *arg, void *stp, uint8_t *buf, size_t len, uint32_t *flags)
{
    struct h2_stream *st = stp;
    ssize_t n = keel_h2_read_queued(&st->body, st->body_eof, &st->deferred, buf, len, flags);
    if (n < 0)
        return n;
    if ((*flags & KEEL_H2_READ_EOF) && keel_buf_len(&st->trailers) > 0)
        submit_trailers(st);
    if (st->vs != NULL && !st->vs->io.writable && keel_buf_len(&st->body) < STREAM_HIGH_WATER / 2) {
        st->vs->io.writable = true;
        wake_stream(st);
    }
    return n;
}

static void on_stream_close(void *arg, void *stp, uint32_t code)
{
    struct h2_stream *st = stp;
    st->h2_closed = true;
    if (st->vs == NULL) {
        stream_free(st);
        return;
    }
    if (st->rs != RS_DONE || !st->req_ended) {
        /* reset by the client: its exchange ends as a downstream disconnect */
        st->vs->rdhup = true;
        st->vs->io.readable = true;
    }
    wake_stream(st);
}

static void on_event(void *arg, enum keel_h2_event ev)
{
    struct proxy_stats *s = &conn_of(arg)->s->w->stats;
    switch (ev) {
    case KEEL_H2_EV_RAPID_RESET: stat_add(&s->h2_rapid_reset, 1); break;
    case KEEL_H2_EV_CONTROL_FLOOD: stat_add(&s->h2_control_flood, 1); break;
    case KEEL_H2_EV_HEADERS_TOO_LARGE: stat_add(&s->h2_headers_too_large, 1); break;
    case KEEL_H2_EV_CONTINUATION_FLOOD: stat_add(&s->h2_continuation_flood, 1); break;
    case KEEL_H2_EV_PROTOCOL_ERROR: stat_add(&s->h2_protocol_error, 1); break;
    case KEEL_H2_EV_STREAM_REFUSED: stat_add(&s->h2_stream_refused, 1); break;
    default: break;
    }
}

static const struct keel_h2_callbacks callbacks = {
    .open_stream = on_open,
    .header = on_header,
    .headers_done = on_headers_done,
    .data = on_data,
    .end_stream = on_end_stream,
    .read_body = on_read_body,
    .stream_close = on_stream_close,
    .event = on_event,
};

/* ------------------------------------------------------------------ the virtual socket */

ssize_t h2_stream_read(struct session *vs, struct keel_buf *b, size_t max)
{
    struct h2_stream *st = vs->h2s;
    if (st == NULL)
        return KEEL_EIO;
    size_t have = keel_buf_len(&st->req);
    if (have == 0) {
        if (st->h2_closed && !st->req_ended)
            return KEEL_EIO; /* reset by the client */
        if (st->req_ended)
            return 0;
        vs->io.readable = false;
        return KEEL_AGAIN;
    }
    size_t n = have < max ? have : max;
    keel_buf_reserve(b, n);
    keel_buf_append(b, keel_buf_rptr(&st->req), n);
    keel_buf_consume(&st->req, n);
    if (keel_buf_len(&st->req) == 0) {
        keel_buf_release(&st->req);
        vs->io.readable = st->req_ended;
    }
    size_t ack = st->unacked < n ? st->unacked : n;
    if (ack > 0 && !st->h2_closed) {
        st->unacked -= ack;
        keel_h2_consume(st->c->h, st->id, ack);
        kick(st->c);
    }
    return (ssize_t)n;
}

static void lower_copy(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
}

/* The response head at the front of b: submit it as HEADERS. Returns its length, 0 for an
 * interim (1xx) head that was skipped, KEEL_AGAIN or KEEL_EINVAL. */
static int take_head(struct h2_stream *st, struct keel_buf *b)
{
    struct session *vs = st->vs;
    static _Thread_local struct keel_http_header hdrs[KEEL_HTTP_MAX_HEADERS + 2];
    static _Thread_local struct keel_h2_nv nv[KEEL_HTTP_MAX_HEADERS + 2];
    static _Thread_local char names[16384];
    size_t used = 0;
    struct keel_http_limits lim = session_srv(vs)->limits;
    lim.max_headers = KEEL_HTTP_MAX_HEADERS + 2; /* what keel wrote, plus its own */
    lim.max_head_bytes = keel_buf_len(b);
    struct keel_http_response res = { .headers = hdrs };
    struct keel_http_perror e;
    int rc = keel_http_parse_response(keel_buf_rptr(b), keel_buf_len(b), &lim, &res, &e);
    if (rc <= 0)
        return rc == KEEL_AGAIN ? KEEL_AGAIN : KEEL_EINVAL;
    if (res.status >= 100 && res.status < 200)
        return rc; /* 100 Continue and friends: not passed on */
    struct keel_http_meta m;
    if (keel_http_analyze_response(&res, vs->req.method, &m, &e) < 0)
        return KEEL_EINVAL;
    int code = res.status % 1000;
    char status[3] = { (char)('0' + code / 100), (char)('0' + code / 10 % 10), (char)('0' + code % 10) };
    size_t k = 0;
    nv[k++] = (struct keel_h2_nv){ ":status", 7, status, 3 };
    for (size_t i = 0; i < res.n_headers; i++) {
        struct keel_http_header *h = &hdrs[i];
        if (keel_http_hdr_in(h, KEEL_HDR_HOP_BY_HOP) || keel_http_hop_marked(&m, i))
            continue;
        if (used + h->name.len > sizeof(names))
            return KEEL_EINVAL; /* over 16 KiB of names: the head limits forbid it anyway */
        char *name = names + used; /* RFC 9113 §8.2.1: lowercase names */
        lower_copy(name, h->name.p, h->name.len);
        used += h->name.len;
        nv[k++] = (struct keel_h2_nv){ name, h->name.len, h->value.p, h->value.len };
    }
    bool has_body = m.body != KEEL_HTTP_BODY_NONE &&
                    !(m.body == KEEL_HTTP_BODY_LENGTH && m.content_length == 0);
    if (keel_h2_submit_response(st->c->h, st->id, nv, k, has_body) < 0)
        return KEEL_EINVAL;
    st->body_kind = m.body;
    st->res_left = m.content_length;
    st->ch.want_trailers = true;
    st->rs = has_body ? RS_BODY : RS_DONE;
    return rc;
}

/* Body bytes at the front of b into st->body. Returns bytes of b used, or KEEL_EINVAL. */
static ssize_t take_body(struct h2_stream *st, struct keel_buf *b)
{
    size_t consumed, off = 0, len;
    if (st->body_kind == KEEL_HTTP_BODY_CHUNKED) {
        int rc = keel_http_chunked_step(&st->ch, keel_buf_rptr(b), keel_buf_len(b), &consumed,
                                        &off, &len);
        if (rc < 0)
            return KEEL_EINVAL;
        if (rc == KEEL_CHUNK_TRAILER) {
            keel_buf_append(&st->trailers, keel_buf_rptr(b) + off, len);
            len = 0;
        } else if (rc != KEEL_CHUNK_DATA) {
            len = 0;
        }
        if (rc == KEEL_CHUNK_DONE)
            st->rs = RS_DONE;
    } else {
        len = keel_buf_len(b);
        if (st->body_kind == KEEL_HTTP_BODY_LENGTH && len > st->res_left)
            len = (size_t)st->res_left;
        consumed = len;
        if (st->body_kind == KEEL_HTTP_BODY_LENGTH) {
            st->res_left -= len;
            if (st->res_left == 0)
                st->rs = RS_DONE;
        }
    }
    if (len > 0)
        keel_buf_append(&st->body, keel_buf_rptr(b) + off, len);
    if (st->rs == RS_DONE)
        st->body_eof = true;
    return (ssize_t)consumed;
}

ssize_t h2_stream_flush(struct session *vs, struct keel_buf *b)
{
    struct h2_stream *st = vs->h2s;
    size_t total = 0;
    if (st == NULL || st->h2_closed) { /* nobody to tell: the bytes go nowhere */
        total = keel_buf_len(b);
        keel_buf_consume(b, total);
        keel_buf_release(b);
        return (ssize_t)total;
    }
    bool grew = false;
    while (keel_buf_len(b) > 0) {
        ssize_t n;
        if (st->rs == RS_HEAD) {
            int rc = take_head(st, b);
            if (rc == KEEL_AGAIN)
                break;
            n = rc;
            grew = true;
        } else if (st->rs == RS_BODY) {
            if (keel_buf_len(&st->body) >= STREAM_HIGH_WATER) {
                vs->io.writable = false; /* on_read_body sets it again */
                break;
            }
            n = take_body(st, b);
            grew = true;
        } else {
            n = (ssize_t)keel_buf_len(b); /* nothing may follow a complete response */
        }
        if (n < 0) {
            keel_log_limited(KEEL_LOG_INFO, KEEL_LOG_PER_SEC, "h2 stream %d: untranslatable response",
                             (int)st->id);
            keel_h2_reset(st->c->h, st->id, KEEL_H2_INTERNAL_ERROR);
            n = (ssize_t)keel_buf_len(b);
        }
        keel_buf_consume(b, (size_t)n);
        total += (size_t)n;
    }
    if (keel_buf_len(b) == 0)
        keel_buf_release(b);
    if (grew) {
        if (st->deferred && (keel_buf_len(&st->body) > 0 || st->body_eof)) {
            st->deferred = false;
            keel_h2_resume(st->c->h, st->id);
        }
        kick(st->c);
    }
    return (ssize_t)total;
}

/* The stream's session has closed. */
void h2_stream_detach(struct session *vs)
{
    struct h2_stream *st = vs->h2s;
    vs->h2s = NULL;
    if (st == NULL)
        return;
    st->vs = NULL;
    struct h2_conn *c = st->c;
    if (c->closing || st->h2_closed) {
        stream_free(st);
        return;
    }
    if (st->rs != RS_DONE) /* ended mid-response: the client learns by a reset */
        keel_h2_reset(c->h, st->id, KEEL_H2_INTERNAL_ERROR);
    else if (!st->req_ended) /* answered before the request ended (RFC 9113 §8.1) */
        keel_h2_reset(c->h, st->id, KEEL_H2_NO_ERROR);
    kick(c);
}

/* ------------------------------------------------------------------ the connection */

int h2_conn_detect(struct session *s)
{
    size_t have = keel_buf_len(&s->in);
    size_t n = have < KEEL_H2_PREFACE_LEN ? have : KEEL_H2_PREFACE_LEN;
    if (memcmp(keel_buf_rptr(&s->in), KEEL_H2_PREFACE, n) != 0) {
        s->h2_checked = true;
        return 0;
    }
    if (have < KEEL_H2_PREFACE_LEN)
        return KEEL_AGAIN;
    s->h2_checked = true;
    struct h2_conn *c = keel_calloc(1, sizeof(*c));
    c->s = s;
    c->h = keel_h2_new(true, &callbacks, c, NULL);
    s->h2c = c;
    s->phase = PH_H2;
    session_set_timer(s, T_IDLE, session_srv(s)->opt->idle_timeout_ms);
    stat_add(&s->w->stats.h2_cx_total, 1);
    if (s->draining)
        keel_h2_drain(c->h);
    return 1;
}

/* Upgrade: h2c (h2_upgrade.c decided it): s becomes the HTTP/2 connection and the request
 * whose HTTP/1.1 bytes are in req (moved from) stream 1's exchange. */
bool h2_conn_start_upgraded(struct session *s, struct keel_str settings, bool head,
                            struct keel_buf *req)
{
    struct h2_conn *c = keel_calloc(1, sizeof(*c));
    c->s = s;
    c->h = keel_h2_new(true, &callbacks, c, NULL);
    struct h2_stream *st = stream_alloc();
    if (keel_h2_upgrade(c->h, settings.p, settings.len, head, st) < 0) {
        keel_h2_free(c->h);
        free(c);
        free(st);
        return false;
    }
    s->h2_checked = true;
    s->h2c = c;
    s->phase = PH_H2;
    stat_add(&s->w->stats.h2_cx_total, 1);
    stat_add(&s->w->stats.h2_streams_total, 1);
    st->c = c;
    st->id = 1;
    c->streams = st;
    st->req = *req;
    *req = (struct keel_buf){ 0 };
    st->line_done = st->head_done = st->req_ended = true; /* bodies do not upgrade */
    st->vs = session_start_virtual(s, st);
    wake_stream(st);
    if (s->draining)
        keel_h2_drain(c->h);
    return true;
}

bool h2_conn_run(struct session *s)
{
    struct h2_conn *c = s->h2c;
    bool progress = false;
    keel_h2_set_now(c->h, keel_loop_now_ms(s->w->loop));
    /* input: only while the output keeps up (a PING flood must not grow our buffer) */
    if (keel_buf_len(&s->out) < HIGH_WATER) {
        if (keel_buf_len(&s->in) == 0 && s->io.readable) {
            ssize_t n = session_read(&s->io, &s->in, READ_CHUNK);
            if (n == 0 || n == KEEL_EIO) {
                session_close(s);
                return false;
            }
        }
        size_t have = keel_buf_len(&s->in);
        if (have > 0) {
            ssize_t rc = keel_h2_recv(c->h, keel_buf_rptr(&s->in), have);
            keel_buf_consume(&s->in, have); /* all, or nothing more is wanted */
            progress = true;
            if (rc < 0)
                s->io.readable = false;
            if (s->phase == PH_CLOSED)
                return false;
        }
    }
    ssize_t n = keel_h2_send(c->h, &s->out, HIGH_WATER);
    if (n < 0) {
        session_close(s);
        return false;
    }
    if (keel_buf_len(&s->out) > 0 && s->io.writable) {
        n = session_flush(s->w->loop, &s->io, &s->out);
        if (n < 0) {
            session_close(s);
            return false;
        }
        if (n > 0)
            progress = true;
    }
    /* done (a GOAWAY, the last frames): close now even if they wait for the loop's batch
     * (the close writes them), before streams opened in the same read start upstream */
    if (!keel_h2_alive(c->h) && (keel_buf_len(&s->out) == 0 || keel_io_send_queued(&s->io))) {
        session_close(s);
        return false;
    }
    return progress;
}

void h2_conn_drain(struct session *s)
{
    keel_h2_drain(s->h2c->h);
    kick(s->h2c);
}

/* The connection is closing (session_close): its streams' exchanges end with it. */
void h2_conn_free(struct session *s)
{
    struct h2_conn *c = s->h2c;
    s->h2c = NULL;
    c->closing = true;
    while (c->streams != NULL) {
        struct h2_stream *st = c->streams;
        struct session *vs = st->vs;
        if (vs == NULL) {
            stream_free(st);
            continue;
        }
        vs->rdhup = true;
        if (vs->started && vs->phase != PH_HEAD)
            session_abort_exchange(vs, KEEL_RF_DC, "downstream_remote_disconnect");
        else
            session_close(vs); /* detach frees st */
    }
    keel_h2_free(c->h);
    free(c);
}
