/* HTTP/2 (h2c) to upstreams whose port speaks it (grpc, grpc-web, http2; --upstream-protocol
 * h2 for the local app): nghttp2 client sessions through src/http/h2.c, one stream per
 * request, up to the server's SETTINGS_MAX_CONCURRENT_STREAMS per connection, connections
 * kept per address and worker.
 *
 * The session does not know: its upconn is virtual (io.fd == UPCONN_VIRTUAL_FD). The
 * HTTP/1.1 request it writes is translated into HEADERS and DATA, and the stream's
 * response is given back to it as HTTP/1.1 bytes, chunked when no content-length came, its
 * HTTP/2 trailers as chunked trailers (which the session passes on: grpc-status). */
#include "proxy/session_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "http/h2.h"
#include "net/sock.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define STREAM_HIGH_WATER (64 * 1024)
#define H2_UP_IDLE_MS 60000

struct h2_up {
    struct keel_io io;
    struct keel_defer run, free_defer;
    struct keel_timer idle_timer;
    struct worker *w;
    struct pool *pool;
    struct h2_up *next;          /* the pool's connections */
    struct keel_h2 *h;
    struct keel_buf in, out;
    struct h2_ustream *streams;
    size_t n_streams;
    bool connected;
    bool dead;                   /* takes no new streams */
    bool closed;                 /* socket and nghttp2 gone; freed with its last stream */
    char local[KEEL_ADDR_STRLEN];
};

enum rq_state { RQ_HEAD, RQ_BODY, RQ_DONE };

struct h2_ustream {
    struct h2_up *c;
    struct upconn *u;            /* NULL once the session let go */
    struct h2_ustream *next, *prev;
    int32_t id;                  /* 0 until the request head was submitted */
    bool h2_closed;

    /* request, from the session's HTTP/1.1 bytes */
    enum rq_state rq;
    enum keel_http_body body_kind;
    uint64_t left;
    struct keel_http_chunked ch;
    struct keel_buf body;
    bool body_eof, deferred;

    /* response, as HTTP/1.1 bytes for the session */
    struct keel_buf resp;
    size_t unacked;
    int status;
    bool got_final, has_cl, chunked, trailers, ended;
};

static void conn_close(struct h2_up *c);

#define FREE_STREAMS_MAX 4096
static _Thread_local struct h2_ustream *free_streams; /* recycled, as sessions are */
static _Thread_local size_t n_free_streams;

void h2_up_free_recycled(void)
{
    while (free_streams != NULL) {
        struct h2_ustream *st = free_streams;
        free_streams = st->next;
        free(st);
    }
    n_free_streams = 0;
}

static void kick(struct h2_up *c)
{
    if (!c->closed)
        keel_loop_defer(c->w->loop, &c->run);
}

static void wake(struct h2_ustream *st)
{
    if (st->u != NULL && st->u->s != NULL) {
        st->u->io.readable = true;
        keel_loop_defer(st->c->w->loop, &st->u->s->resume);
    }
}

static void conn_maybe_free(struct h2_up *c)
{
    if (c->n_streams > 0)
        return;
    if (c->closed) {
        keel_loop_defer(c->w->loop, &c->free_defer);
    } else if (c->dead) {
        kick(c); /* closed from conn_run: never from inside nghttp2's callbacks */
    } else {
        keel_timer_set(c->w->loop, &c->idle_timer, H2_UP_IDLE_MS);
    }
}

static void stream_free(struct h2_ustream *st)
{
    struct h2_up *c = st->c;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    keel_buf_release(&st->body);
    keel_buf_release(&st->resp);
    if (n_free_streams < FREE_STREAMS_MAX) {
        st->next = free_streams;
        free_streams = st;
        n_free_streams++;
    } else {
        free(st);
    }
    c->n_streams--;
    conn_maybe_free(c);
}

/* ------------------------------------------------------------------ nghttp2 callbacks */

static void *on_open(void *arg, int32_t id) { return NULL; /* no server push */ }

static void put(struct keel_buf *b, const char *p, size_t n) { keel_buf_append(b, p, n); }

static int on_header(void *arg, void *stp, const struct keel_h2_nv *nv, bool trailer)
{
    struct h2_ustream *st = stp;
    struct keel_str name = { nv->name, nv->name_len };
    if (st->got_final) { /* trailers: chunked trailer lines */
        if (name.len > 0 && name.p[0] == ':')
            return 0;
        if (!st->chunked)
            return 0; /* a content-length body has no place for them */
        if (!st->trailers)
            put(&st->resp, "0\r\n", 3);
        st->trailers = true;
    } else if (keel_str_eq(name, LIT(":status"))) {
        int code = 0;
        for (size_t i = 0; i < nv->value_len && i < 3; i++)
            code = code * 10 + (nv->value[i] - '0');
        st->status = code;
        keel_buf_printf(&st->resp, "HTTP/1.1 %03d %s\r\n", code, code < 400 ? "OK" : "Error");
        return 0;
    } else if (name.len > 0 && name.p[0] == ':') {
        return 0;
    } else if (keel_str_eq(name, LIT("content-length"))) {
        st->has_cl = true;
    }
    keel_buf_reserve(&st->resp, nv->name_len + nv->value_len + 4);
    put(&st->resp, nv->name, nv->name_len);
    put(&st->resp, ": ", 2);
    put(&st->resp, nv->value, nv->value_len);
    put(&st->resp, "\r\n", 2);
    return 0;
}

static void finish_response(struct h2_ustream *st)
{
    if (st->ended)
        return;
    st->ended = true;
    if (st->chunked)
        put(&st->resp, st->trailers ? "\r\n" : "0\r\n\r\n", st->trailers ? 2 : 5);
    wake(st);
}

static void on_headers_done(void *arg, void *stp, bool end_stream, bool trailer)
{
    struct h2_ustream *st = stp;
    if (st->got_final) {
        if (end_stream)
            finish_response(st);
        return;
    }
    if (st->status >= 100 && st->status < 200) { /* interim: the next head is the answer */
        put(&st->resp, "\r\n", 2);
        st->has_cl = false;
        wake(st);
        return;
    }
    st->got_final = true;
    bool bodiless = st->status == 204 || st->status == 304;
    if (end_stream) {
        if (!st->has_cl && !bodiless)
            put(&st->resp, "content-length: 0\r\n", 19);
    } else if (!st->has_cl && !bodiless) {
        put(&st->resp, "transfer-encoding: chunked\r\n", 28);
        st->chunked = true;
    }
    put(&st->resp, "\r\n", 2);
    if (end_stream)
        finish_response(st);
    wake(st);
}

static void on_data(void *arg, void *stp, const uint8_t *p, size_t n)
{
    struct h2_ustream *st = stp;
    if (st->u == NULL) {
        keel_h2_consume(st->c->h, st->id, n);
        return;
    }
    if (st->chunked) {
        keel_buf_printf(&st->resp, "%zx\r\n", n);
        put(&st->resp, (const char *)p, n);
        put(&st->resp, "\r\n", 2);
    } else {
        put(&st->resp, (const char *)p, n);
    }
    st->unacked += n;
    wake(st);
}

static void on_end_stream(void *arg, void *stp) { finish_response(stp); }

static ssize_t on_read_body(void *arg, void *stp, uint8_t *buf, size_t len, uint32_t *flags)
{
    struct h2_ustream *st = stp;
    ssize_t n = keel_h2_read_queued(&st->body, st->body_eof, &st->deferred, buf, len, flags);
    if (n < 0)
        return n;
    if (st->u != NULL && !st->u->io.writable && keel_buf_len(&st->body) < STREAM_HIGH_WATER / 2) {
        st->u->io.writable = true;
        wake(st);
    }
    return n;
}

static void on_stream_close(void *arg, void *stp, uint32_t code)
{
    struct h2_ustream *st = stp;
    st->h2_closed = true;
    if (st->u == NULL) {
        stream_free(st);
        return;
    }
    wake(st);
}

static const struct keel_h2_callbacks callbacks = {
    .open_stream = on_open,
    .header = on_header,
    .headers_done = on_headers_done,
    .data = on_data,
    .end_stream = on_end_stream,
    .read_body = on_read_body,
    .stream_close = on_stream_close,
};

/* ------------------------------------------------------------------ the connection */

/* The connection is gone: its streams fail (their sessions see a reset upstream). */
static void conn_close(struct h2_up *c)
{
    if (c->closed)
        return;
    c->closed = c->dead = true;
    struct worker *w = c->w;
    keel_timer_cancel(w->loop, &c->idle_timer);
    for (struct h2_up **pp = &c->pool->h2; *pp != NULL; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    keel_loop_del(w->loop, &c->io);
    close(c->io.fd);
    c->io.fd = -1;
    keel_h2_free(c->h);
    c->h = NULL;
    keel_buf_release(&c->in);
    keel_buf_release(&c->out);
    struct h2_ustream *st = c->streams, *next;
    for (; st != NULL; st = next) {
        next = st->next;
        st->h2_closed = true;
        if (st->u == NULL)
            stream_free(st); /* may free c once it is the last: deferred */
        else
            wake(st);
    }
    conn_maybe_free(c);
}

static void connected(struct h2_up *c)
{
    c->connected = true;
    keel_loop_connected(c->w->loop, &c->io);
    struct keel_addr local;
    keel_sock_local(c->io.fd, &local);
    keel_addr_format((const struct sockaddr *)&local.ss, c->local, sizeof(c->local));
    for (struct h2_ustream *st = c->streams; st != NULL; st = st->next) {
        struct upconn *u = st->u;
        if (u == NULL || u->connected || u->s == NULL)
            continue;
        u->connected = true;
        snprintf(u->local, sizeof(u->local), "%s", c->local);
        session_upstream_connected(u->s);
        keel_loop_defer(c->w->loop, &u->s->resume);
    }
}

static void connect_failed(struct h2_up *c, int err)
{
    /* the sessions waiting on it fail as a connect failure would (503 UF, or a retry on
     * another connection: this one is dead) */
    c->dead = true;
    for (struct h2_ustream *st = c->streams; st != NULL; st = st->next) {
        struct upconn *u = st->u;
        if (u == NULL)
            continue;
        struct session *s = u->s;
        st->u = NULL;
        u->h2s = NULL;
        u->s = NULL;
        upconn_recycle(u);
        if (s != NULL) {
            s->u = NULL;
            session_upstream_failed(s, err);
            keel_loop_defer(c->w->loop, &s->resume);
        }
    }
    conn_close(c); /* frees the streams, and c after them */
}

static void conn_run(struct h2_up *c)
{
    if (c->closed)
        return;
    if (!c->connected) {
        if (c->dead && c->n_streams == 0)
            conn_close(c);
        return;
    }
    keel_h2_set_now(c->h, keel_loop_now_ms(c->w->loop));
    for (int rounds = 0; rounds < 16 && c->io.readable; rounds++) {
        ssize_t n = session_read(&c->io, &c->in, READ_CHUNK);
        if (n == KEEL_AGAIN)
            break;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        if (keel_h2_recv(c->h, keel_buf_rptr(&c->in), keel_buf_len(&c->in)) < 0)
            c->dead = true;
        keel_buf_consume(&c->in, keel_buf_len(&c->in));
        if (c->closed)
            return;
    }
    for (;;) {
        if (keel_h2_send(c->h, &c->out, HIGH_WATER) < 0) {
            conn_close(c);
            return;
        }
        if (keel_buf_len(&c->out) == 0 || !c->io.writable)
            break;
        if (session_flush(c->w->loop, &c->io, &c->out) < 0) {
            conn_close(c);
            return;
        }
        if (keel_buf_len(&c->out) > 0)
            break;
    }
    if (!keel_h2_can_open(c->h))
        c->dead = true; /* GOAWAY came, or no stream ids left: new requests go elsewhere */
    if ((!keel_h2_alive(c->h) && keel_buf_len(&c->out) == 0) || (c->dead && c->n_streams == 0))
        conn_close(c);
}

static void on_run(struct keel_defer *d)
{
    conn_run((struct h2_up *)((char *)d - offsetof(struct h2_up, run)));
}

static void on_conn_free(struct keel_defer *d)
{
    free((char *)d - offsetof(struct h2_up, free_defer));
}

static void on_idle(struct keel_timer *t)
{
    struct h2_up *c = (struct h2_up *)((char *)t - offsetof(struct h2_up, idle_timer));
    if (c->n_streams == 0)
        conn_close(c);
}

static void on_io(struct keel_io *io, uint32_t events)
{
    struct h2_up *c = (struct h2_up *)io;
    if (c->closed)
        return;
    if (!c->connected) {
        if (!io->writable && !io->hup)
            return;
        int err = keel_sock_connect_result(io->fd);
        if (err != 0) {
            connect_failed(c, err);
            return;
        }
        io->hup = false;
        connected(c);
    }
    conn_run(c);
}

static struct h2_up *conn_new(struct worker *w, struct pool *p, int *err)
{
    struct h2_up *c = keel_calloc(1, sizeof(*c));
    c->w = w;
    c->pool = p;
    c->io.cb = on_io;
    c->run.cb = on_run;
    c->free_defer.cb = on_conn_free;
    c->idle_timer.cb = on_idle;
    stat_add(&w->stats.upstream_cx_total, 1);
    c->io.ring_reads = true; /* every read is session_read's */
    int rc = keel_sock_connect(&p->addr, &c->io.fd);
    c->io.connecting = rc != 0;
    if (rc == KEEL_EIO || keel_loop_add(w->loop, &c->io) < 0) {
        *err = errno;
        if (c->io.fd >= 0 && rc != KEEL_EIO)
            close(c->io.fd);
        free(c);
        return NULL;
    }
    c->h = keel_h2_new(false, &callbacks, c, NULL);
    c->next = p->h2;
    p->h2 = c;
    if (rc == 0)
        connected(c);
    return c;
}

struct upconn *h2_up_acquire(struct worker *w, struct pool *p, struct session *s, int *err)
{
    struct h2_up *c = p->h2;
    while (c != NULL && (c->dead || (c->connected && !keel_h2_can_open(c->h)) ||
                         c->n_streams >= 100))
        c = c->next;
    if (c == NULL) {
        c = conn_new(w, p, err);
        if (c == NULL)
            return NULL; /* the session counts the failure */
    } else {
        stat_add(&w->stats.upstream_cx_reused, 1);
    }
    keel_timer_cancel(w->loop, &c->idle_timer);
    struct upconn *u = upconn_new(w, p, s);
    u->io.fd = UPCONN_VIRTUAL_FD;
    u->io.writable = true;
    u->connected = c->connected;
    if (c->connected)
        snprintf(u->local, sizeof(u->local), "%s", c->local);
    struct h2_ustream *st = free_streams;
    if (st != NULL) {
        free_streams = st->next;
        n_free_streams--;
        memset(st, 0, sizeof(*st));
    } else {
        st = keel_calloc(1, sizeof(*st));
    }
    st->c = c;
    st->u = u;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->n_streams++;
    u->h2s = st;
    return u;
}

void h2_up_release(struct upconn *u)
{
    struct h2_ustream *st = u->h2s;
    u->h2s = NULL;
    if (st == NULL)
        return;
    st->u = NULL;
    struct h2_up *c = st->c;
    if (c->closed || st->h2_closed || st->id == 0) {
        stream_free(st);
        return;
    }
    /* the session let go before the stream ended on both sides: cancel it */
    keel_h2_reset(c->h, st->id, KEEL_H2_CANCEL);
    kick(c);
}

void h2_up_close_all(struct worker *w)
{
    for (size_t i = 0; i < POOL_BUCKETS; i++)
        for (struct pool *p = w->pools[i]; p != NULL; p = p->next) {
            struct h2_up *c = p->h2, *next;
            for (; c != NULL; c = next) {
                next = c->next;
                c->dead = true; /* streams in flight finish; then it closes */
                if (c->n_streams == 0)
                    conn_close(c);
            }
        }
}

/* ------------------------------------------------------------------ the virtual socket */

ssize_t h2_up_read(struct upconn *u, struct keel_buf *b, size_t max)
{
    struct h2_ustream *st = u->h2s;
    if (st == NULL)
        return KEEL_EIO;
    size_t have = keel_buf_len(&st->resp);
    if (have == 0) {
        u->io.readable = false;
        if (st->h2_closed && !st->ended)
            return KEEL_EIO; /* reset by the upstream, or its connection went */
        return KEEL_AGAIN;
    }
    size_t n = have < max ? have : max;
    keel_buf_reserve(b, n);
    keel_buf_append(b, keel_buf_rptr(&st->resp), n);
    keel_buf_consume(&st->resp, n);
    if (keel_buf_len(&st->resp) == 0)
        keel_buf_release(&st->resp);
    size_t ack = st->unacked < n ? st->unacked : n;
    if (ack > 0 && !st->c->closed && !st->h2_closed) {
        st->unacked -= ack;
        keel_h2_consume(st->c->h, st->id, ack);
        kick(st->c);
    }
    return (ssize_t)n;
}

/* The request head at the front of b: submit it as HEADERS. Returns its length, KEEL_AGAIN,
 * or KEEL_EINVAL / KEEL_ELIMIT. */
static int submit_head(struct h2_ustream *st, struct keel_buf *b)
{
    static _Thread_local struct keel_http_header hdrs[KEEL_HTTP_MAX_HEADERS + 8];
    static _Thread_local struct keel_h2_nv nv[KEEL_HTTP_MAX_HEADERS + 16];
    static _Thread_local char names[16384];
    struct keel_http_limits lim = { keel_buf_len(b), keel_buf_len(b), KEEL_HTTP_MAX_HEADERS + 8 };
    struct keel_http_request req = { .headers = hdrs };
    struct keel_http_perror e;
    int rc = keel_http_parse_request(keel_buf_rptr(b), keel_buf_len(b), &lim, &req, &e);
    if (rc <= 0)
        return rc == KEEL_AGAIN ? KEEL_AGAIN : KEEL_EINVAL;
    struct keel_http_meta m;
    if (keel_http_analyze_request(&req, &m, &e) < 0)
        return KEEL_EINVAL;
    size_t k = 0, used = 0;
    nv[k++] = (struct keel_h2_nv){ ":method", 7, req.method.p, req.method.len };
    nv[k++] = (struct keel_h2_nv){ ":scheme", 7, "http", 4 };
    nv[k++] = (struct keel_h2_nv){ ":authority", 10, m.host.p, m.host.len };
    nv[k++] = (struct keel_h2_nv){ ":path", 5, req.target.p, req.target.len };
    for (size_t i = 0; i < req.n_headers; i++) {
        struct keel_http_header *h = &hdrs[i];
        if (keel_http_hdr_in(h, KEEL_HDR_HOP_BY_HOP | KEEL_HDR_BIT(HOST)) ||
            keel_http_hop_marked(&m, i))
            continue;
        if (used + h->name.len > sizeof(names))
            return KEEL_EINVAL;
        char *name = names + used; /* lowercase (RFC 9113 §8.2.1) */
        for (size_t j = 0; j < h->name.len; j++)
            name[j] = (char)tolower((unsigned char)h->name.p[j]);
        used += h->name.len;
        nv[k++] = (struct keel_h2_nv){ name, h->name.len, h->value.p, h->value.len };
    }
    nv[k++] = (struct keel_h2_nv){ "te", 2, "trailers", 8 }; /* gRPC servers ask for it */
    bool has_body = m.body == KEEL_HTTP_BODY_CHUNKED ||
                    (m.body == KEEL_HTTP_BODY_LENGTH && m.content_length > 0);
    int32_t id = keel_h2_submit_request(st->c->h, nv, k, has_body, st);
    if (id < 0)
        return id;
    st->id = id;
    st->body_kind = m.body;
    st->left = m.content_length;
    st->rq = has_body ? RQ_BODY : RQ_DONE;
    return rc;
}

static ssize_t take_body(struct h2_ustream *st, struct keel_buf *b)
{
    size_t consumed, off = 0, len;
    if (st->body_kind == KEEL_HTTP_BODY_CHUNKED) {
        int rc = keel_http_chunked_step(&st->ch, keel_buf_rptr(b), keel_buf_len(b), &consumed,
                                        &off, &len);
        if (rc < 0)
            return KEEL_EINVAL;
        if (rc != KEEL_CHUNK_DATA)
            len = 0;
        if (rc == KEEL_CHUNK_DONE)
            st->rq = RQ_DONE;
    } else {
        len = keel_buf_len(b);
        if (len > st->left)
            len = (size_t)st->left;
        consumed = len;
        st->left -= len;
        if (st->left == 0)
            st->rq = RQ_DONE;
    }
    if (len > 0)
        keel_buf_append(&st->body, keel_buf_rptr(b) + off, len);
    if (st->rq == RQ_DONE)
        st->body_eof = true;
    return (ssize_t)consumed;
}

ssize_t h2_up_flush(struct upconn *u, struct keel_buf *b)
{
    struct h2_ustream *st = u->h2s;
    if (st == NULL || st->c->closed || st->h2_closed)
        return KEEL_EIO;
    size_t total = 0;
    bool grew = false;
    while (keel_buf_len(b) > 0) {
        ssize_t n;
        if (st->rq == RQ_HEAD) {
            int rc = submit_head(st, b);
            if (rc == KEEL_AGAIN)
                break;
            if (rc < 0)
                return KEEL_EIO;
            n = rc;
        } else if (st->rq == RQ_BODY) {
            if (keel_buf_len(&st->body) >= STREAM_HIGH_WATER) {
                u->io.writable = false; /* on_read_body sets it again */
                break;
            }
            n = take_body(st, b);
            if (n < 0)
                return KEEL_EIO;
        } else {
            n = (ssize_t)keel_buf_len(b);
        }
        grew = true;
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
