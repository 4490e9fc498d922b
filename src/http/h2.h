/* HTTP/2 session glue: nghttp2 (framing, HPACK, flow control) driven by its owner's event
 * loop, no threads and no I/O of its own. The owner feeds the bytes it read with
 * keel_h2_recv and drains frames to send with keel_h2_send into its own bounded out
 * buffer (backpressure: stop calling keel_h2_send while the buffer is full, nghttp2 keeps
 * the rest queued). Received DATA is acknowledged to the peer's flow control only when the
 * owner says it has consumed it (keel_h2_consume), so a slow consumer stalls its stream,
 * not the process. Independent of src/proxy: a gRPC server can use it as well.
 *
 * Streams are the owner's: open_stream returns the owner's context for a stream, which
 * every later callback receives. Callbacks run inside keel_h2_recv / keel_h2_send. */
#ifndef KEEL_HTTP_H2_H
#define KEEL_HTTP_H2_H

#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct keel_h2;

/* RFC 9113 §7 error codes the owner uses */
#define KEEL_H2_NO_ERROR 0x0
#define KEEL_H2_PROTOCOL_ERROR 0x1
#define KEEL_H2_INTERNAL_ERROR 0x2
#define KEEL_H2_REFUSED_STREAM 0x7
#define KEEL_H2_CANCEL 0x8
#define KEEL_H2_ENHANCE_YOUR_CALM 0xb

/* The connection preface a client sends first (prior knowledge h2c). */
#define KEEL_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define KEEL_H2_PREFACE_LEN 24

struct keel_h2_nv {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* Why the glue refused something; the owner counts these (for /stats/prometheus). */
enum keel_h2_event {
    KEEL_H2_EV_RAPID_RESET,       /* too many RST_STREAM from the peer in a second: GOAWAY */
    KEEL_H2_EV_CONTROL_FLOOD,     /* too many SETTINGS / PING frames in a second: GOAWAY */
    KEEL_H2_EV_HEADERS_TOO_LARGE, /* a header block over max_header_list: stream reset */
    KEEL_H2_EV_CONTINUATION_FLOOD,/* too many CONTINUATION frames in one block: GOAWAY */
    KEEL_H2_EV_PROTOCOL_ERROR,    /* nghttp2 refused the input */
    KEEL_H2_EV_STREAM_REFUSED,    /* over max concurrent streams, or the owner said no */
    KEEL_H2_EV_COUNT,
};

struct keel_h2_limits {
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS we announce */
    uint32_t max_header_list;        /* bytes of one header block (RFC 7541 size: +32 each) */
    uint32_t stream_window;          /* SETTINGS_INITIAL_WINDOW_SIZE we announce */
    uint32_t max_resets_per_sec;     /* peer RST_STREAM frames per second */
    uint32_t max_control_per_sec;    /* peer SETTINGS + PING frames per second */
    uint32_t max_continuations;      /* CONTINUATION frames in one header block */
};

/* What keel_h2_new fills in when limits is NULL. */
extern const struct keel_h2_limits keel_h2_default_limits;

/* Flags of a response-body read. */
#define KEEL_H2_READ_EOF 0x1 /* the body ends with these bytes */

struct keel_h2_callbacks {
    /* A peer opened stream `id` (server) / a pushed... (never: push is disabled).
     * Return the owner's stream context, or NULL to refuse it (RST REFUSED_STREAM).
     * On a client session, streams are opened by keel_h2_submit_request instead. */
    void *(*open_stream)(void *arg, int32_t id);
    /* One header field of the current header block (pseudo-headers first, as received).
     * Return 0, or a negative value to reset the stream (PROTOCOL_ERROR). */
    int (*header)(void *arg, void *st, const struct keel_h2_nv *nv, bool trailer);
    /* The header block has ended. end_stream: no DATA follows. trailer: it was a trailer
     * block (after DATA). */
    void (*headers_done)(void *arg, void *st, bool end_stream, bool trailer);
    /* DATA payload; the owner calls keel_h2_consume(h, id, n) once it no longer holds it. */
    void (*data)(void *arg, void *st, const uint8_t *p, size_t n);
    /* The peer ended its side (END_STREAM on DATA; headers_done says it for HEADERS). */
    void (*end_stream)(void *arg, void *st);
    /* Body bytes to send on a stream started with has_body: copy up to len bytes into buf.
     * Return the byte count (set KEEL_H2_READ_EOF in *flags at the end; call
     * keel_h2_submit_trailers before returning EOF to end with trailers), KEEL_AGAIN when
     * nothing is ready yet (the stream waits for keel_h2_resume), or another negative
     * value to reset the stream. */
    ssize_t (*read_body)(void *arg, void *st, uint8_t *buf, size_t len, uint32_t *flags);
    /* The stream is gone (both sides done, reset by either side, or the session freed).
     * error_code is the RST / GOAWAY code (0 on a clean end). Last callback for st. */
    void (*stream_close)(void *arg, void *st, uint32_t error_code);
    /* A limit refused something (optional). */
    void (*event)(void *arg, enum keel_h2_event ev);
};

/* A server session (the peer is the client; its preface is expected first) or a client
 * session. now_ms is the owner's clock for the per-second rate limits. The session sends
 * its SETTINGS at once (ready in the first keel_h2_send). */
struct keel_h2 *keel_h2_new(bool server, const struct keel_h2_callbacks *cb, void *arg,
                            const struct keel_h2_limits *limits);
/* Server: the connection was upgraded from HTTP/1.1 (RFC 7540 §3.2). settings is the
 * HTTP2-Settings header's value (base64url SETTINGS payload); the upgrading request becomes
 * stream 1, half-closed from the client, with owner context st (no open_stream call; its
 * response is submitted as for any stream). Call before the first keel_h2_recv. Returns 0
 * or KEEL_EINVAL (a malformed HTTP2-Settings: answer the request as HTTP/1.1). */
int keel_h2_upgrade(struct keel_h2 *h, const char *settings, size_t len, bool head_request,
                    void *st);
/* Frees nghttp2's state. stream_close is NOT called for streams still open (nghttp2 does
 * not say which they are): the owner ends its stream contexts itself. */
void keel_h2_free(struct keel_h2 *h);

/* Set the clock used by the rate limits (monotonic milliseconds). */
void keel_h2_set_now(struct keel_h2 *h, int64_t now_ms);

/* Feed received bytes. Returns n (all consumed), or KEEL_EINVAL when the connection must
 * end (protocol error or a limit: a GOAWAY is queued, send it then close). */
ssize_t keel_h2_recv(struct keel_h2 *h, const void *p, size_t n);
/* Append frames to out until out holds at least high_water bytes or nothing is left.
 * Returns bytes appended (>= 0) or KEEL_EINVAL. */
ssize_t keel_h2_send(struct keel_h2 *h, struct keel_buf *out, size_t high_water);
/* Whether frames are waiting to be sent. */
bool keel_h2_want_write(const struct keel_h2 *h);
/* Whether the connection still has a use: false once GOAWAY has been exchanged and every
 * stream is done, or after a fatal error (then flush out and close). */
bool keel_h2_alive(const struct keel_h2 *h);

/* Acknowledge n bytes of DATA of stream id as consumed (opens the flow-control window). */
void keel_h2_consume(struct keel_h2 *h, int32_t id, size_t n);

/* Response / request heads. has_body: read_body will be asked for the body; otherwise the
 * head ends the stream. Returns 0 or KEEL_EINVAL. */
int keel_h2_submit_response(struct keel_h2 *h, int32_t id, const struct keel_h2_nv *nv,
                            size_t n, bool has_body);
/* Client: open a stream; returns its id (> 0) or KEEL_EINVAL / KEEL_ELIMIT (no stream
 * ids or concurrency left). st is passed to the callbacks for this stream. */
int32_t keel_h2_submit_request(struct keel_h2 *h, const struct keel_h2_nv *nv, size_t n,
                               bool has_body, void *st);
/* Trailers end the stream; call from read_body before it returns EOF, or instead of a
 * body-less end. */
int keel_h2_submit_trailers(struct keel_h2 *h, int32_t id, const struct keel_h2_nv *nv,
                            size_t n);
/* The usual read_body for a body queued in a buffer: moves up to len bytes of body into
 * buf and releases the buffer once empty; at its end with eof set, KEEL_H2_READ_EOF.
 * Nothing queued and no eof: sets *deferred and returns KEEL_AGAIN (keel_h2_resume when
 * more is queued). */
ssize_t keel_h2_read_queued(struct keel_buf *body, bool eof, bool *deferred, uint8_t *buf, size_t len,
                            uint32_t *flags);

/* More body is ready on a stream whose read_body said KEEL_AGAIN. */
void keel_h2_resume(struct keel_h2 *h, int32_t id);
/* Reset a stream (RST_STREAM with code). */
void keel_h2_reset(struct keel_h2 *h, int32_t id, uint32_t code);
/* Graceful end: GOAWAY(NO_ERROR) naming the last stream taken; streams in flight finish. */
void keel_h2_drain(struct keel_h2 *h);
/* Fatal end: GOAWAY with code; the connection ends once it is sent. */
void keel_h2_terminate(struct keel_h2 *h, uint32_t code);

/* Open streams (for the owner's idle / drain decisions). */
size_t keel_h2_open_streams(const struct keel_h2 *h);
/* Whether the peer may still open streams / we may open one (client: under the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS and no GOAWAY). */
bool keel_h2_can_open(const struct keel_h2 *h);

#endif
