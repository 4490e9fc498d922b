/* The gRPC side of keel mixer: h2c with prior knowledge (as Istio's proxies spoke to
 * Mixer) through the shared nghttp2 glue (http/h2.h), one unary method,
 * /istio.mixer.v1.Mixer/Report. A call's message is buffered whole (at most
 * KEEL_MIXER_MAX_MESSAGE), decoded, run through the telemetry engine bag by bag, and
 * answered: an empty ReportResponse with grpc-status 0, or a trailers-only error. A bad
 * call costs its own stream only. */
#include "mixer/mixer_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "http/h2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REPORT_PATH "/istio.mixer.v1.Mixer/Report"
#define OUT_HIGH_WATER (64u << 10)
/* stop reading a peer that does not read its responses */
#define OUT_MAX (1u << 20)

struct gstream {
    struct gconn *c;
    int32_t id;
    struct keel_buf body;
    bool path_ok, post, grpc_ct, too_big, done;
    int code;
    char msg[96];
    size_t sent; /* of the 5-byte empty response message */
    struct gstream *next, *prev;
};

struct gconn {
    struct keel_io io;
    struct mixer *m;
    struct keel_h2 *h;
    struct keel_buf out;
    struct gstream *streams;
    struct keel_defer free_defer;
    struct gconn *next, *prev;
    bool closed;
};

static void stream_unlink(struct gstream *s)
{
    struct gconn *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    keel_buf_release(&s->body);
    free(s);
}

static void *on_open(void *arg, int32_t id)
{
    struct gconn *c = arg;
    struct gstream *s = keel_calloc(1, sizeof(*s));
    s->c = c;
    s->id = id;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    return s;
}

static bool nv_is(const struct keel_h2_nv *nv, const char *name)
{
    size_t n = strlen(name);
    return nv->name_len == n && !memcmp(nv->name, name, n);
}

static int on_header(void *arg, void *st, const struct keel_h2_nv *nv, bool trailer)
{
    struct gstream *s = st;
    if (trailer)
        return 0;
    if (nv_is(nv, ":path"))
        s->path_ok = nv->value_len == sizeof(REPORT_PATH) - 1 && !memcmp(nv->value, REPORT_PATH, nv->value_len);
    else if (nv_is(nv, ":method"))
        s->post = nv->value_len == 4 && !memcmp(nv->value, "POST", 4);
    else if (nv_is(nv, "content-type"))
        /* application/grpc, application/grpc+proto, application/grpc;... */
        s->grpc_ct = nv->value_len >= 16 && !memcmp(nv->value, "application/grpc", 16) &&
                     (nv->value_len == 16 || nv->value[16] == '+' || nv->value[16] == ';');
    return 0;
}

static void on_data(void *arg, void *st, const uint8_t *p, size_t n)
{
    struct gconn *c = arg;
    struct gstream *s = st;
    if (!s->too_big && keel_buf_len(&s->body) + n > KEEL_MIXER_MAX_MESSAGE + 5) {
        s->too_big = true;
        keel_buf_release(&s->body);
    }
    if (!s->too_big)
        keel_buf_append(&s->body, p, n);
    keel_h2_consume(c->h, s->id, n); /* copied (or dropped): the window reopens */
}

static void report_bag(void *arg, struct keel_attr_bag *bag)
{
    struct mixer *m = arg;
    keel_telemetry_report(m->tel, m->sh, bag);
}

static void fail(struct gstream *s, int code, const char *msg)
{
    s->code = code;
    snprintf(s->msg, sizeof(s->msg), "%s", msg);
}

/* The call is complete: run it and answer. */
static void finish(struct gconn *c, struct gstream *s)
{
    struct mixer *m = c->m;
    if (s->done)
        return;
    s->done = true;
    /* (a call without DATA, or one dropped for its size, has no storage) */
    const uint8_t *p = s->body.data ? (const uint8_t *)keel_buf_rptr(&s->body) : (const uint8_t *)"";
    size_t n = keel_buf_len(&s->body);
    if (!s->path_ok || !s->post) {
        fail(s, GRPC_UNIMPLEMENTED, "unknown method: keel mixer serves " REPORT_PATH);
    } else if (!s->grpc_ct) {
        fail(s, GRPC_INVALID_ARGUMENT, "content-type is not application/grpc");
    } else if (s->too_big) {
        fail(s, GRPC_RESOURCE_EXHAUSTED, "message larger than 4194304 bytes");
    } else if (n < 5) {
        fail(s, GRPC_INVALID_ARGUMENT, "truncated gRPC message prefix");
    } else if (p[0] != 0) {
        fail(s, p[0] == 1 ? GRPC_UNIMPLEMENTED : GRPC_INVALID_ARGUMENT,
             p[0] == 1 ? "compressed messages are not supported" : "bad gRPC message flags");
    } else if (((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]) != n - 5) {
        fail(s, GRPC_INVALID_ARGUMENT, "gRPC message length does not match the stream (one message per call)");
    } else {
        struct keel_mixer_decode_stats ds = { 0 };
        const char *why = NULL;
        if (keel_mixer_decode(m->dec, p + 5, n - 5, report_bag, m, &ds, &why) < 0)
            fail(s, GRPC_INVALID_ARGUMENT, why);
        else
            s->code = GRPC_OK;
        m->st.bags += ds.bags;
        m->st.unknown_attrs += ds.unknown_attrs;
        m->st.mistyped_attrs += ds.mistyped_attrs;
    }
    keel_buf_release(&s->body);
    m->st.requests[s->code]++;
    if (s->code == GRPC_OK) {
        const struct keel_h2_nv hd[] = { { ":status", 7, "200", 3 },
                                         { "content-type", 12, "application/grpc", 16 } };
        keel_h2_submit_response(c->h, s->id, hd, 2, true);
        return;
    }
    /* trailers-only: the error in the one header block that ends the stream */
    char code[8];
    int cl = snprintf(code, sizeof(code), "%d", s->code);
    const struct keel_h2_nv hd[] = { { ":status", 7, "200", 3 },
                                     { "content-type", 12, "application/grpc", 16 },
                                     { "grpc-status", 11, code, (size_t)cl },
                                     { "grpc-message", 12, s->msg, strlen(s->msg) } };
    keel_h2_submit_response(c->h, s->id, hd, 4, false);
}

static void on_headers_done(void *arg, void *st, bool end_stream, bool trailer)
{
    if (end_stream)
        finish(arg, st);
}

static void on_end(void *arg, void *st) { finish(arg, st); }

static ssize_t on_read_body(void *arg, void *st, uint8_t *buf, size_t len, uint32_t *flags)
{
    struct gconn *c = arg;
    struct gstream *s = st;
    static const uint8_t empty[5] = { 0, 0, 0, 0, 0 }; /* an empty ReportResponse */
    size_t n = sizeof(empty) - s->sent;
    if (n > len)
        n = len;
    memcpy(buf, empty + s->sent, n);
    s->sent += n;
    if (s->sent == sizeof(empty)) {
        const struct keel_h2_nv tr[] = { { "grpc-status", 11, "0", 1 } };
        keel_h2_submit_trailers(c->h, s->id, tr, 1);
        *flags |= KEEL_H2_READ_EOF;
    }
    return (ssize_t)n;
}

static void on_stream_close(void *arg, void *st, uint32_t code) { stream_unlink(st); }

static const struct keel_h2_callbacks callbacks = {
    .open_stream = on_open,
    .header = on_header,
    .headers_done = on_headers_done,
    .data = on_data,
    .end_stream = on_end,
    .read_body = on_read_body,
    .stream_close = on_stream_close,
};

static void on_conn_free(struct keel_defer *d)
{
    free((char *)d - offsetof(struct gconn, free_defer));
}

static void conn_close(struct gconn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct mixer *m = c->m;
    keel_loop_del(m->loop, &c->io);
    close(c->io.fd);
    keel_h2_free(c->h); /* stream_close is not called for open streams: */
    while (c->streams)
        stream_unlink(c->streams);
    keel_buf_release(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->n_conns--;
    keel_loop_defer(m->loop, &c->free_defer);
}

/* Send what nghttp2 has; false when the connection had to be closed. */
static bool flush(struct gconn *c)
{
    for (;;) {
        if (keel_buf_len(&c->out) < OUT_HIGH_WATER && keel_h2_want_write(c->h) &&
            keel_h2_send(c->h, &c->out, OUT_HIGH_WATER) < 0) {
            conn_close(c);
            return false;
        }
        if (keel_buf_len(&c->out) == 0)
            break;
        ssize_t w = write(c->io.fd, keel_buf_rptr(&c->out), keel_buf_len(&c->out));
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->io.writable = false;
            return true;
        }
        if (w <= 0) {
            conn_close(c);
            return false;
        }
        keel_buf_consume(&c->out, (size_t)w);
    }
    if (!keel_h2_alive(c->h)) {
        conn_close(c);
        return false;
    }
    return true;
}

static void on_conn_io(struct keel_io *io, uint32_t events)
{
    struct gconn *c = (struct gconn *)io;
    keel_h2_set_now(c->h, keel_loop_now_ms(c->m->loop));
    if (!flush(c))
        return;
    uint8_t buf[16384];
    while (io->readable && keel_buf_len(&c->out) < OUT_MAX) {
        ssize_t r = read(io->fd, buf, sizeof(buf));
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            io->readable = false;
            break;
        }
        if (r <= 0) {
            conn_close(c);
            return;
        }
        if (keel_h2_recv(c->h, buf, (size_t)r) < 0) {
            flush(c); /* the GOAWAY */
            conn_close(c);
            return;
        }
        if (!flush(c))
            return;
    }
    if (io->hup && !io->readable)
        conn_close(c);
}

void mixer_grpc_accept(struct mixer *m)
{
    for (int i = 0; i < 64; i++) {
        struct keel_addr peer;
        int fd = keel_sock_accept(m->listen_io.fd, &peer);
        if (fd < 0)
            return;
        struct gconn *c = keel_calloc(1, sizeof(*c));
        c->m = m;
        c->io.fd = fd;
        c->io.cb = on_conn_io;
        c->free_defer.cb = on_conn_free;
        c->h = keel_h2_new(true, &callbacks, c, NULL);
        c->next = m->conns;
        if (m->conns)
            m->conns->prev = c;
        m->conns = c;
        m->n_conns++;
        m->st.grpc_conns++;
        if (m->draining)
            keel_h2_drain(c->h);
        keel_loop_add(m->loop, &c->io);
        flush(c); /* our SETTINGS */
    }
}

void mixer_grpc_drain(struct mixer *m)
{
    for (struct gconn *c = m->conns, *next; c; c = next) {
        next = c->next;
        keel_h2_drain(c->h);
        flush(c);
    }
}

void mixer_grpc_close_all(struct mixer *m)
{
    while (m->conns)
        conn_close(m->conns);
}
