/* HTTP/2 session glue over nghttp2's callback API (see h2.h). */
#include "http/h2.h"

#include "core/alloc.h"
#include "core/err.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NV 160 /* headers of one submitted head (keel heads have at most 128) */

const struct keel_h2_limits keel_h2_default_limits = {
    .max_concurrent_streams = 100,
    .max_header_list = 64 * 1024,
    .stream_window = 256 * 1024,
    .max_resets_per_sec = 200,
    .max_control_per_sec = 200,
    .max_continuations = 8, /* nghttp2 1.61 stops at 8 too */
};

struct keel_h2 {
    nghttp2_session *s;
    const struct keel_h2_callbacks *cb;
    void *arg;
    struct keel_h2_limits lim;
    bool server;
    uint32_t fatal;        /* GOAWAY code a callback decided on; 0: none */
    bool failed;
    size_t open;           /* streams with an owner context */
    int64_t now_ms;
    int64_t window_start_ms; /* the second the rate counters below count in */
    uint32_t resets, controls;
    uint32_t continuations; /* in the header block being received */
    uint32_t block_bytes;   /* of the header block being received */
    int32_t trailers_for;   /* stream whose read_body submitted trailers just now */
};

static void event(struct keel_h2 *h, enum keel_h2_event ev)
{
    if (h->cb->event != NULL)
        h->cb->event(h->arg, ev);
}

/* The per-second counters restart when the second they count in has passed. */
static void rate_tick(struct keel_h2 *h)
{
    if (h->now_ms - h->window_start_ms >= 1000) {
        h->window_start_ms = h->now_ms;
        h->resets = h->controls = 0;
    }
}

static int fail(struct keel_h2 *h, uint32_t code, enum keel_h2_event ev)
{
    if (h->fatal == 0)
        event(h, ev);
    h->fatal = code;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    struct keel_h2 *h = ud;
    if (hd->type == NGHTTP2_HEADERS) {
        h->continuations = 0;
        h->block_bytes = 0;
    } else if (hd->type == NGHTTP2_CONTINUATION) {
        /* CONTINUATION flood (2024): nghttp2 before 1.61 keeps decoding an endless block */
        if (++h->continuations > h->lim.max_continuations)
            return fail(h, NGHTTP2_ENHANCE_YOUR_CALM, KEEL_H2_EV_CONTINUATION_FLOOD);
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct keel_h2 *h = ud;
    if (!h->server || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    void *st = h->cb->open_stream(h->arg, f->hd.stream_id);
    if (st == NULL) {
        event(h, KEEL_H2_EV_STREAM_REFUSED);
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h->open++;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    struct keel_h2 *h = ud;
    void *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st == NULL)
        return 0;
    /* HPACK bomb: a few bytes on the wire can decode to a huge list; bound the decoded
     * size (RFC 7541 §4.1 counting) whatever SETTINGS_MAX_HEADER_LIST_SIZE the peer heeds */
    h->block_bytes += (uint32_t)(namelen + valuelen + 32);
    if (h->block_bytes > h->lim.max_header_list) {
        event(h, KEEL_H2_EV_HEADERS_TOO_LARGE);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    struct keel_h2_nv nv = { (const char *)name, namelen, (const char *)value, valuelen };
    bool trailer = f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_HEADERS;
    if (h->cb->header(h->arg, st, &nv, trailer) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct keel_h2 *h = ud;
    rate_tick(h);
    switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
        void *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (st != NULL)
            h->cb->headers_done(h->arg, st, f->hd.flags & NGHTTP2_FLAG_END_STREAM,
                                f->headers.cat == NGHTTP2_HCAT_HEADERS);
        return 0;
    }
    case NGHTTP2_DATA:
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            void *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
            if (st != NULL)
                h->cb->end_stream(h->arg, st);
        }
        return 0;
    case NGHTTP2_RST_STREAM:
        /* rapid reset (CVE-2023-44487): streams opened and cancelled at once cost us a
         * request each while the client pays a frame */
        if (++h->resets > h->lim.max_resets_per_sec)
            return fail(h, NGHTTP2_ENHANCE_YOUR_CALM, KEEL_H2_EV_RAPID_RESET);
        return 0;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && ++h->controls > h->lim.max_control_per_sec)
            return fail(h, NGHTTP2_ENHANCE_YOUR_CALM, KEEL_H2_EV_CONTROL_FLOOD);
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct keel_h2 *h = ud;
    void *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL) { /* a refused or forgotten stream: nobody will consume it */
        nghttp2_session_consume(s, id, len);
        return 0;
    }
    h->cb->data(h->arg, st, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct keel_h2 *h = ud;
    void *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    h->open--;
    h->cb->stream_close(h->arg, st, code);
    return 0;
}

static ssize_t on_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                       uint32_t *data_flags, nghttp2_data_source *src, void *ud)
{
    struct keel_h2 *h = ud;
    void *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    uint32_t flags = 0;
    h->trailers_for = 0;
    ssize_t n = h->cb->read_body(h->arg, st, buf, len, &flags);
    if (n == KEEL_AGAIN)
        return NGHTTP2_ERR_DEFERRED;
    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (flags & KEEL_H2_READ_EOF) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (h->trailers_for == id)
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return n;
}

struct keel_h2 *keel_h2_new(bool server, const struct keel_h2_callbacks *cb, void *arg,
                            const struct keel_h2_limits *limits)
{
    struct keel_h2 *h = keel_calloc(1, sizeof(*h));
    h->cb = cb;
    h->arg = arg;
    h->server = server;
    h->lim = limits != NULL ? *limits : keel_h2_default_limits;

    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        abort();
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0)
        abort();
    /* the window opens as the owner consumes, not as nghttp2 receives: backpressure */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, 256);
    int rc = server ? nghttp2_session_server_new2(&h->s, cbs, h, opt)
                    : nghttp2_session_client_new2(&h->s, cbs, h, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        abort(); /* only NGHTTP2_ERR_NOMEM */

    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h->lim.max_concurrent_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, h->lim.stream_window },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, h->lim.max_header_list },
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
    };
    nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    /* the connection window covers many streams' windows, so that a stalled stream does
     * not stall the others, within a bound on what one connection can make us hold */
    uint64_t conn = (uint64_t)h->lim.stream_window * h->lim.max_concurrent_streams;
    if (conn > 4u << 20)
        conn = 4u << 20;
    if (conn > 65535)
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, (int32_t)conn);
    return h;
}

/* base64url (RFC 4648 §5), padding optional, as HTTP2-Settings carries it. Returns the
 * decoded length or -1. */
static ssize_t b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    while (n > 0 && in[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-' || c == '+' ? 62
                : c == '_' || c == '/' ? 63
                                       : -1;
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (k == cap)
                return -1;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    return (ssize_t)k;
}

int keel_h2_upgrade(struct keel_h2 *h, const char *settings, size_t len, bool head_request,
                    void *st)
{
    uint8_t payload[6 * 32]; /* 32 settings are more than HTTP/2 defines */
    ssize_t n = b64url_decode(settings, len, payload, sizeof(payload));
    if (!h->server || n < 0 || n % 6 != 0)
        return KEEL_EINVAL;
    if (nghttp2_session_upgrade2(h->s, payload, (size_t)n, head_request, st) != 0)
        return KEEL_EINVAL;
    /* nghttp2 keeps stream_user_data for client sessions only */
    nghttp2_session_set_stream_user_data(h->s, 1, st);
    h->open++;
    return 0;
}

void keel_h2_free(struct keel_h2 *h)
{
    if (h == NULL)
        return;
    nghttp2_session_del(h->s); /* no stream_close callbacks: the owner's streams are its own */
    free(h);
}

void keel_h2_set_now(struct keel_h2 *h, int64_t now_ms) { h->now_ms = now_ms; }

ssize_t keel_h2_recv(struct keel_h2 *h, const void *p, size_t n)
{
    if (h->failed)
        return KEEL_EINVAL;
    ssize_t rc = nghttp2_session_mem_recv(h->s, p, n);
    if (rc >= 0)
        return rc;
    h->failed = true;
    if (h->fatal == 0 && rc == -905) /* NGHTTP2_ERR_TOO_MANY_CONTINUATIONS (1.61, backported) */
        fail(h, NGHTTP2_ENHANCE_YOUR_CALM, KEEL_H2_EV_CONTINUATION_FLOOD);
    if (h->fatal != 0) {
        nghttp2_session_terminate_session(h->s, h->fatal);
    } else {
        event(h, KEEL_H2_EV_PROTOCOL_ERROR);
        /* a bad preface or frame: nghttp2 has queued its GOAWAY where the RFC says one */
        if (rc != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            nghttp2_session_terminate_session(h->s, NGHTTP2_PROTOCOL_ERROR);
    }
    return KEEL_EINVAL;
}

ssize_t keel_h2_send(struct keel_h2 *h, struct keel_buf *out, size_t high_water)
{
    size_t total = 0;
    while (keel_buf_len(out) < high_water) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->s, &data);
        if (n < 0) {
            h->failed = true;
            return KEEL_EINVAL;
        }
        if (n == 0)
            break;
        keel_buf_append(out, data, (size_t)n);
        total += (size_t)n;
    }
    return (ssize_t)total;
}

bool keel_h2_want_write(const struct keel_h2 *h) { return nghttp2_session_want_write(h->s); }

bool keel_h2_alive(const struct keel_h2 *h)
{
    if (h->failed)
        return nghttp2_session_want_write(h->s); /* the GOAWAY still to go out */
    return nghttp2_session_want_read(h->s) || nghttp2_session_want_write(h->s);
}

void keel_h2_consume(struct keel_h2 *h, int32_t id, size_t n)
{
    if (n > 0)
        nghttp2_session_consume(h->s, id, n);
}

static size_t to_nv(nghttp2_nv *out, const struct keel_h2_nv *nv, size_t n)
{
    if (n > MAX_NV)
        n = MAX_NV;
    for (size_t i = 0; i < n; i++)
        out[i] = (nghttp2_nv){ (uint8_t *)nv[i].name, (uint8_t *)nv[i].value, nv[i].name_len,
                               nv[i].value_len, NGHTTP2_NV_FLAG_NONE };
    return n;
}

int keel_h2_submit_response(struct keel_h2 *h, int32_t id, const struct keel_h2_nv *nv,
                            size_t n, bool has_body)
{
    nghttp2_nv v[MAX_NV];
    size_t k = to_nv(v, nv, n);
    nghttp2_data_provider dp = { .source.ptr = NULL, .read_callback = on_read };
    int rc = nghttp2_submit_response(h->s, id, v, k, has_body ? &dp : NULL);
    return rc == 0 ? 0 : KEEL_EINVAL;
}

int32_t keel_h2_submit_request(struct keel_h2 *h, const struct keel_h2_nv *nv, size_t n,
                               bool has_body, void *st)
{
    if (!keel_h2_can_open(h))
        return KEEL_ELIMIT;
    nghttp2_nv v[MAX_NV];
    size_t k = to_nv(v, nv, n);
    nghttp2_data_provider dp = { .source.ptr = NULL, .read_callback = on_read };
    int32_t id = nghttp2_submit_request(h->s, NULL, v, k, has_body ? &dp : NULL, st);
    if (id < 0)
        return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? KEEL_ELIMIT : KEEL_EINVAL;
    h->open++;
    return id;
}

int keel_h2_submit_trailers(struct keel_h2 *h, int32_t id, const struct keel_h2_nv *nv,
                            size_t n)
{
    nghttp2_nv v[MAX_NV];
    size_t k = to_nv(v, nv, n);
    h->trailers_for = id;
    return nghttp2_submit_trailer(h->s, id, v, k) == 0 ? 0 : KEEL_EINVAL;
}

void keel_h2_resume(struct keel_h2 *h, int32_t id) { nghttp2_session_resume_data(h->s, id); }

void keel_h2_reset(struct keel_h2 *h, int32_t id, uint32_t code)
{
    nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, id, code);
}

void keel_h2_drain(struct keel_h2 *h)
{
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
}

void keel_h2_terminate(struct keel_h2 *h, uint32_t code)
{
    nghttp2_session_terminate_session(h->s, code);
    h->failed = true;
}

size_t keel_h2_open_streams(const struct keel_h2 *h) { return h->open; }

bool keel_h2_can_open(const struct keel_h2 *h)
{
    if (h->failed || !nghttp2_session_check_request_allowed(h->s))
        return false;
    uint32_t max = nghttp2_session_get_remote_settings(h->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return h->open < max;
}

ssize_t keel_h2_read_queued(struct keel_buf *body, bool eof, bool *deferred, uint8_t *buf, size_t len,
                            uint32_t *flags)
{
    size_t have = keel_buf_len(body);
    if (have == 0 && !eof) {
        *deferred = true;
        return KEEL_AGAIN;
    }
    size_t n = have < len ? have : len;
    if (n > 0) { /* (an empty buffer may have no storage at all) */
        memcpy(buf, keel_buf_rptr(body), n);
        keel_buf_consume(body, n);
    }
    if (keel_buf_len(body) == 0) {
        keel_buf_release(body);
        if (eof)
            *flags |= KEEL_H2_READ_EOF;
    }
    return (ssize_t)n;
}
