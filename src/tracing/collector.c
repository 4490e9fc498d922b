/* keel collector's server: one thread, keel's event loop, HTTP/1.1 with keep-alive and
 * pipelining, Content-Length and chunked bodies, gzip/deflate request bodies (zlib), every
 * size bounded (head 64 KiB, body --max-body after decoding: 413). A connection is
 * closed after 60 s idle. Every request is answered from the store in the loop thread,
 * so the store needs no lock. */
#include "tracing/collector.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/http.h"
#include "net/sock.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zlib.h>

#define IDLE_MS 60000
#define OUT_HIGH (4u << 20) /* stop reading requests while this much output waits */

static const struct keel_http_limits head_limits = { 65536, 16384, 100 };

struct collector {
    struct keel_io listener;
    struct keel_io_pause pause;
    struct keel_io signals;
    struct keel_loop *loop;
    struct keel_trace_store *store;
    struct keel_collector_counters counters;
    const struct keel_collector_options *o;
    struct conn *conns;
};

struct conn {
    struct keel_io io;
    struct keel_defer free_defer;
    struct keel_timer timer;
    struct collector *col;
    struct conn *next, *prev;
    struct keel_buf in, out, body;
    /* the request being read: chunked decoding goes on across reads */
    struct keel_http_chunked ch;
    size_t chunk_pos; /* bytes of in after the head that the decoder has taken */
    bool in_body, sent_continue;
    bool closing; /* answer what is queued, then close */
    bool closed;
};

void keel_collector_options_defaults(struct keel_collector_options *o)
{
    memset(o, 0, sizeof(*o));
    o->listen = "127.0.0.1:9411";
    o->max_spans = 200000;
    o->max_bytes = 256u << 20;
    o->max_body = 16u << 20;
}

static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    keel_timer_cancel(c->col->loop, &c->timer);
    keel_loop_del(c->col->loop, &c->io);
    close(c->io.fd);
    keel_buf_release(&c->in);
    keel_buf_release(&c->out);
    keel_buf_release(&c->body);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->col->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    keel_loop_defer(c->col->loop, &c->free_defer);
}

static void on_conn_free(struct keel_defer *d)
{
    free((char *)d - offsetof(struct conn, free_defer));
}

static void on_conn_timeout(struct keel_timer *t)
{
    conn_close((struct conn *)((char *)t - offsetof(struct conn, timer)));
}

static const char *reason(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 411: return "Length Required";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

static void respond(struct conn *c, int status, const char *ctype, const struct keel_buf *body,
                    bool head_only, bool close_after)
{
    size_t len = body != NULL ? keel_buf_len(body) : 0;
    keel_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nAccess-Control-Allow-Origin: *\r\n", status,
                    reason(status));
    if (len > 0 || status != 202)
        keel_buf_printf(&c->out, "Content-Type: %s\r\n", ctype);
    keel_buf_printf(&c->out, "Content-Length: %zu\r\n%s\r\n", len,
                    close_after ? "Connection: close\r\n" : "");
    if (len > 0 && !head_only)
        keel_buf_append(&c->out, keel_buf_rptr(body), len);
    if (close_after)
        c->closing = true;
}

/* A request that cannot be read to its end: answer and close. */
static void refuse(struct conn *c, int status, const char *msg)
{
    struct keel_buf b = { 0 };
    keel_buf_printf(&b, "%s\n", msg);
    respond(c, status, "text/plain; charset=utf-8", &b, false, true);
    keel_buf_release(&b);
}

static int perr_status(enum keel_http_perr k)
{
    return k == KEEL_HTTP_PERR_URI_TOO_LONG        ? 414
           : k == KEEL_HTTP_PERR_HEADERS_TOO_LARGE ? 431
           : k == KEEL_HTTP_PERR_VERSION           ? 505
                                                   : 400;
}

static struct keel_str header(const struct keel_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++)
        if (keel_str_caseeq(req->headers[i].name, keel_str_c(name)))
            return req->headers[i].value;
    return (struct keel_str){ NULL, 0 };
}

/* Inflate gzip or zlib data into out, at most max bytes: KEEL_ELIMIT when bigger. */
static int inflate_body(const char *p, size_t len, size_t max, struct keel_buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 15 + 32) != Z_OK) /* +32: gzip or zlib header, detected */
        return KEEL_EINVAL;
    z.next_in = (Bytef *)p;
    z.avail_in = (uInt)len;
    int zr = Z_OK, rc = 0;
    while (zr != Z_STREAM_END) {
        if (keel_buf_len(out) >= max) {
            rc = KEEL_ELIMIT;
            break;
        }
        keel_buf_reserve(out, 65536);
        size_t room = keel_buf_room(out);
        if (room > max - keel_buf_len(out) + 1)
            room = max - keel_buf_len(out) + 1; /* one more byte tells "too big" */
        z.next_out = (Bytef *)keel_buf_wptr(out);
        z.avail_out = (uInt)room;
        zr = inflate(&z, Z_NO_FLUSH);
        out->wpos += room - z.avail_out;
        if (zr == Z_STREAM_END)
            break;
        if (zr != Z_OK || (z.avail_in == 0 && z.avail_out != 0)) {
            rc = KEEL_EINVAL; /* corrupt or truncated */
            break;
        }
    }
    if (rc == 0 && keel_buf_len(out) > max)
        rc = KEEL_ELIMIT;
    inflateEnd(&z);
    return rc;
}

static void serve(struct conn *c, const struct keel_http_request *req, const char *body,
                  size_t body_len, bool keep)
{
    struct keel_buf decoded = { 0 }, resp = { 0 };
    struct keel_str enc = header(req, "content-encoding");
    if (enc.len > 0 && !keel_str_caseeq(enc, KEEL_STR("identity"))) {
        if (!keel_str_caseeq(enc, KEEL_STR("gzip")) && !keel_str_caseeq(enc, KEEL_STR("deflate"))) {
            keel_buf_append_str(&resp, "Content-Encoding: only gzip and deflate are supported\n");
            respond(c, 415, "text/plain; charset=utf-8", &resp, false, !keep);
            keel_buf_release(&resp);
            return;
        }
        int rc = inflate_body(body, body_len, c->col->o->max_body, &decoded);
        if (rc < 0) {
            if (rc == KEEL_ELIMIT)
                keel_buf_printf(&resp, "body larger than %zu bytes once inflated\n",
                                c->col->o->max_body);
            else
                keel_buf_printf(&resp, "corrupt %.*s body\n", (int)enc.len, enc.p);
            respond(c, rc == KEEL_ELIMIT ? 413 : 400, "text/plain; charset=utf-8", &resp, false,
                    !keep);
            keel_buf_release(&decoded);
            keel_buf_release(&resp);
            keel_trace_store_count_rejected(c->col->store, 1);
            c->col->counters.reports_rejected++;
            return;
        }
        body = keel_buf_rptr(&decoded);
        body_len = keel_buf_len(&decoded);
    }
    struct keel_collector_request r = { .method = req->method, .path = req->target,
                                        .body = body, .body_len = body_len,
                                        .now_ms = keel_loop_wall_us(c->col->loop) / 1000 };
    const char *q = memchr(r.path.p, '?', r.path.len);
    if (q != NULL) {
        r.query = (struct keel_str){ q + 1, (size_t)(r.path.p + r.path.len - q - 1) };
        r.path.len = (size_t)(q - r.path.p);
    }
    struct keel_collector_response res = { .body = &resp };
    keel_collector_handle(c->col->store, &c->col->counters, &r, &res);
    respond(c, res.status, res.content_type, &resp, keel_str_eq(req->method, KEEL_STR("HEAD")),
            !keep);
    keel_buf_release(&decoded);
    keel_buf_release(&resp);
}

/* Take every complete request in c->in. */
static void take_requests(struct conn *c)
{
    size_t max_body = c->col->o->max_body;
    while (!c->closing && keel_buf_len(&c->out) < OUT_HIGH && keel_buf_len(&c->in) > 0) {
        struct keel_http_header hs[100];
        struct keel_http_request req = { .headers = hs };
        struct keel_http_perror pe;
        struct keel_http_meta m;
        int rc = keel_http_parse_request(keel_buf_rptr(&c->in), keel_buf_len(&c->in),
                                         &head_limits, &req, &pe);
        if (rc == KEEL_AGAIN) {
            if (keel_buf_len(&c->in) >= head_limits.max_head_bytes)
                refuse(c, 431, "request head too large");
            return;
        }
        if (rc < 0) {
            refuse(c, perr_status(pe.kind), pe.what != NULL ? pe.what : "bad request");
            return;
        }
        size_t head = (size_t)rc, msg = head;
        if (keel_http_analyze_request(&req, &m, &pe) < 0) {
            refuse(c, 400, pe.what != NULL ? pe.what : "bad request");
            return;
        }
        if (m.body == KEEL_HTTP_BODY_LENGTH && m.content_length > max_body) {
            refuse(c, 413, "request body too large");
            return;
        }
        if (m.expect_continue && m.body != KEEL_HTTP_BODY_NONE && !c->sent_continue) {
            keel_buf_append_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            c->sent_continue = true;
        }
        const char *body = keel_buf_rptr(&c->in) + head;
        size_t body_len = 0;
        if (m.body == KEEL_HTTP_BODY_LENGTH) {
            if (keel_buf_len(&c->in) - head < m.content_length)
                return; /* wait for the rest */
            body_len = (size_t)m.content_length;
            msg += body_len;
        } else if (m.body == KEEL_HTTP_BODY_CHUNKED) {
            if (!c->in_body) {
                memset(&c->ch, 0, sizeof(c->ch));
                c->chunk_pos = 0;
                keel_buf_consume(&c->body, keel_buf_len(&c->body));
                c->in_body = true;
            }
            for (;;) {
                size_t avail = keel_buf_len(&c->in) - head - c->chunk_pos, used = 0, off = 0, n = 0;
                if (avail == 0)
                    return;
                const char *p = keel_buf_rptr(&c->in) + head + c->chunk_pos;
                rc = keel_http_chunked_step(&c->ch, p, avail, &used, &off, &n);
                if (rc < 0) {
                    refuse(c, 400, "bad chunked framing");
                    return;
                }
                if (rc == KEEL_CHUNK_DATA) {
                    if (keel_buf_len(&c->body) + n > max_body) {
                        refuse(c, 413, "request body too large");
                        return;
                    }
                    keel_buf_append(&c->body, p + off, n);
                }
                c->chunk_pos += used;
                if (rc == KEEL_CHUNK_DONE)
                    break;
            }
            msg += c->chunk_pos;
            body = keel_buf_rptr(&c->body);
            body_len = keel_buf_len(&c->body);
        } else if (m.body == KEEL_HTTP_BODY_EOF) {
            refuse(c, 411, "a request body needs Content-Length or chunked");
            return;
        }
        c->in_body = false;
        c->sent_continue = false;
        serve(c, &req, body, body_len, !m.conn_close);
        keel_buf_consume(&c->in, msg);
        keel_buf_release(&c->body); /* a decoded body may be megabytes: not kept while idle */
    }
}

static void flush(struct conn *c)
{
    while (keel_buf_len(&c->out) > 0 && c->io.writable) {
        ssize_t n = write(c->io.fd, keel_buf_rptr(&c->out), keel_buf_len(&c->out));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            c->io.writable = false;
            return;
        }
        if (n <= 0) {
            conn_close(c);
            return;
        }
        keel_buf_consume(&c->out, (size_t)n);
    }
    if (keel_buf_len(&c->out) == 0)
        keel_buf_release(&c->out); /* an answer may have been megabytes */
}

static void on_conn_io(struct keel_io *io, uint32_t events)
{
    struct conn *c = (struct conn *)io;
    /* bytes buffered: the largest request (head + chunk framing + body) and some pipelining */
    size_t cap = c->col->o->max_body * 2 + head_limits.max_head_bytes + 65536;
    for (;;) {
        if (c->closed)
            return;
        take_requests(c);
        flush(c);
        if (c->closed)
            return;
        if (c->closing) {
            if (keel_buf_len(&c->out) == 0)
                conn_close(c);
            return;
        }
        if (!io->readable || keel_buf_len(&c->out) >= OUT_HIGH)
            return;
        if (keel_buf_len(&c->in) >= cap) {
            refuse(c, 413, "request too large");
            continue;
        }
        keel_buf_reserve(&c->in, 65536);
        size_t room = keel_buf_room(&c->in);
        if (room > cap - keel_buf_len(&c->in))
            room = cap - keel_buf_len(&c->in);
        ssize_t n = read(io->fd, keel_buf_wptr(&c->in), room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            io->readable = false;
            if (keel_buf_len(&c->in) == 0)
                keel_buf_release(&c->in); /* idle: give the buffer back */
            return;
        }
        if (n == 0 && keel_buf_len(&c->out) > 0) {
            c->closing = true; /* a half-close: the answers still go out, then close */
            io->readable = false;
            return;
        }
        if (n <= 0) {
            conn_close(c); /* EOF mid-request loses only that request */
            return;
        }
        c->in.wpos += (size_t)n;
        keel_timer_set(c->col->loop, &c->timer, IDLE_MS);
    }
}

static void on_accept(struct keel_io *io, uint32_t events)
{
    struct collector *col = (struct collector *)io;
    for (int i = 0; i < 64; i++) {
        struct keel_addr peer;
        int fd = keel_sock_accept(io->fd, &peer);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                keel_loop_pause_in(col->loop, io, &col->pause, 200);
            return;
        }
        struct conn *c = keel_calloc(1, sizeof(*c));
        c->col = col;
        c->io.fd = fd;
        c->io.cb = on_conn_io;
        c->free_defer.cb = on_conn_free;
        c->timer.cb = on_conn_timeout;
        c->next = col->conns;
        if (col->conns)
            col->conns->prev = c;
        col->conns = c;
        keel_timer_set(col->loop, &c->timer, IDLE_MS);
        if (keel_loop_add(col->loop, &c->io) < 0)
            conn_close(c);
    }
}

static void on_signal(struct keel_io *io, uint32_t events)
{
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == sizeof(si))
        ;
    struct collector *col = (struct collector *)((char *)io - offsetof(struct collector, signals));
    keel_loop_stop(col->loop);
}

int keel_collector_run(const struct keel_collector_options *o)
{
    struct keel_addr la;
    if (keel_addr_parse(o->listen, &la) < 0) {
        fprintf(stderr, "keel collector: listen address '%s': want HOST:PORT\n", o->listen);
        return 1;
    }
    struct collector *col = keel_calloc(1, sizeof(*col));
    col->o = o;
    struct keel_trace_store_limits lim = { o->max_spans, o->max_bytes, 0 };
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    col->signals.fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    col->signals.cb = on_signal;
    col->listener.fd = keel_sock_listen(&la, false);
    col->listener.cb = on_accept;
    col->loop = keel_loop_new();
    if (col->listener.fd < 0 || col->signals.fd < 0 || col->loop == NULL) {
        fprintf(stderr, "keel collector: cannot listen on %s: %s\n", o->listen, strerror(errno));
        if (col->listener.fd >= 0)
            close(col->listener.fd);
        if (col->signals.fd >= 0)
            close(col->signals.fd);
        keel_loop_free(col->loop);
        free(col);
        return 1;
    }
    col->store = keel_trace_store_new(&lim);
    keel_loop_add_in(col->loop, &col->listener);
    keel_loop_add_in(col->loop, &col->signals);
    struct keel_addr bound;
    char b[KEEL_ADDR_STRLEN];
    keel_sock_local(col->listener.fd, &bound);
    keel_addr_format((const struct sockaddr *)&bound.ss, b, sizeof(b));
    printf("keel collector listening on %s (max %zu spans, %zu bytes)\n", b, o->max_spans,
           o->max_bytes);
    fflush(stdout);

    keel_loop_run(col->loop);

    while (col->conns != NULL)
        conn_close(col->conns);
    keel_loop_pause_cancel(&col->pause);
    keel_loop_del(col->loop, &col->listener);
    close(col->listener.fd);
    close(col->signals.fd);
    keel_loop_run_deferred(col->loop);
    keel_loop_free(col->loop);
    keel_trace_store_free(col->store);
    keel_buf_pool_drain();
    free(col);
    return 0;
}
