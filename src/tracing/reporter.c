/* The Zipkin reporter of one worker: finished spans wait as fixed-size records in a ring
 * and are encoded as one JSON array per POST /api/v2/spans, sent from the worker's loop
 * over one keep-alive HTTP/1.1 connection (non-blocking connect, write and read).
 * Nothing here can slow traffic: a full ring drops the new span (counted "dropped"), a
 * POST that fails or is not answered within KEEL_ZIPKIN_TIMEOUT_MS counts its spans as
 * "failed", and the next attempt waits a backoff (100 ms doubling to 5 s). */
#include "tracing/tracing.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define RESPONSE_MAX 65536

enum zstate { Z_DOWN, Z_CONNECTING, Z_READY, Z_BUSY };

struct keel_zipkin {
    struct keel_loop *loop;
    struct keel_span *ring;       /* KEEL_ZIPKIN_RING records */
    size_t head, count;           /* oldest queued, how many queued */
    struct keel_zipkin_stats *st;
    struct keel_addr addr;        /* where the queued spans go */
    bool have_addr;
    struct keel_io io;
    enum zstate state;
    struct keel_buf out, in;
    size_t inflight;              /* spans of the POST on the wire */
    struct keel_timer flush;      /* the time bound of a batch */
    struct keel_timer guard;      /* connect/response timeout, or the backoff */
    int64_t backoff_ms;
    int64_t retry_at_ms;          /* no connect before this (monotonic ms) */
    char host[KEEL_ADDR_STRLEN];
    char path[128];
};

static void kick(struct keel_zipkin *z);

#define OWNER(ptr, field) ((struct keel_zipkin *)((char *)(ptr) - offsetof(struct keel_zipkin, field)))

static void count(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static void disconnect(struct keel_zipkin *z)
{
    if (z->io.fd >= 0) {
        keel_loop_del(z->loop, &z->io);
        close(z->io.fd);
        z->io.fd = -1;
    }
    z->io.readable = z->io.writable = z->io.hup = z->io.rdhup = false;
    keel_buf_release(&z->out);
    keel_buf_release(&z->in);
    z->state = Z_DOWN;
}

/* The connection or the POST failed: its spans are lost, try again after a while. */
static void fail(struct keel_zipkin *z, const char *why)
{
    if (z->inflight > 0) {
        count(&z->st->failed, z->inflight);
        z->inflight = 0;
    }
    keel_log_limited(KEEL_LOG_INFO, 1, "zipkin collector %s: %s; spans are dropped until it answers",
                     z->host, why);
    disconnect(z);
    z->backoff_ms = z->backoff_ms ? z->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (z->backoff_ms > BACKOFF_MAX_MS)
        z->backoff_ms = BACKOFF_MAX_MS;
    z->retry_at_ms = keel_loop_now_ms(z->loop) + z->backoff_ms;
    keel_timer_set(z->loop, &z->guard, z->backoff_ms);
}

static void send_batch(struct keel_zipkin *z)
{
    size_t n = z->count < KEEL_ZIPKIN_BATCH ? z->count : KEEL_ZIPKIN_BATCH;
    struct keel_buf body = { 0 };
    keel_buf_append(&body, "[", 1);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            keel_buf_append(&body, ",", 1);
        keel_span_json(&body, &z->ring[(z->head + i) % KEEL_ZIPKIN_RING]);
    }
    keel_buf_append(&body, "]", 1);
    z->head = (z->head + n) % KEEL_ZIPKIN_RING;
    z->count -= n;
    z->inflight = n;
    /* b3: 0 so that a proxy in front of the collector does not trace the tracer */
    keel_buf_printf(&z->out,
                    "POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
                    "b3: 0\r\ncontent-length: %zu\r\n\r\n",
                    z->path, z->host, keel_buf_len(&body));
    keel_buf_append(&z->out, keel_buf_rptr(&body), keel_buf_len(&body));
    keel_buf_release(&body);
    z->state = Z_BUSY;
    keel_timer_set(z->loop, &z->guard, KEEL_ZIPKIN_TIMEOUT_MS);
}

/* A complete response at the front of z->in: 1 when done, 0 for more bytes, < 0 bad. */
static int take_response(struct keel_zipkin *z, bool *close_after)
{
    struct keel_http_header h[32];
    struct keel_http_response res = { .headers = h };
    struct keel_http_perror e;
    static const struct keel_http_limits lim = { RESPONSE_MAX, 1024, 32 };
    int rc = keel_http_parse_response(keel_buf_rptr(&z->in), keel_buf_len(&z->in), &lim, &res, &e);
    if (rc == KEEL_AGAIN)
        return keel_buf_len(&z->in) > RESPONSE_MAX ? KEEL_EINVAL : 0;
    struct keel_http_meta m;
    if (rc < 0 || keel_http_analyze_response(&res, KEEL_STR("POST"), &m, &e) < 0)
        return KEEL_EINVAL;
    size_t head = (size_t)rc, avail = keel_buf_len(&z->in) - head;
    if (m.body == KEEL_HTTP_BODY_LENGTH) {
        if (avail < m.content_length)
            return m.content_length > RESPONSE_MAX ? KEEL_EINVAL : 0;
    } else if (m.body == KEEL_HTTP_BODY_CHUNKED) {
        struct keel_http_chunked ch = { 0 };
        const char *p = keel_buf_rptr(&z->in) + head;
        size_t left = avail;
        for (;;) {
            size_t used, off, len;
            int r = keel_http_chunked_step(&ch, p, left, &used, &off, &len);
            if (r < 0)
                return KEEL_EINVAL;
            if (r == KEEL_CHUNK_DONE)
                break;
            if (r == KEEL_CHUNK_MORE && used == left)
                return avail > RESPONSE_MAX ? KEEL_EINVAL : 0;
            p += used;
            left -= used;
        }
    } else if (m.body == KEEL_HTTP_BODY_EOF) {
        if (!z->io.rdhup)
            return avail > RESPONSE_MAX ? KEEL_EINVAL : 0;
    }
    *close_after = m.conn_close || m.body == KEEL_HTTP_BODY_EOF;
    if (res.status >= 200 && res.status < 300) {
        count(&z->st->sent, z->inflight);
    } else {
        keel_log_limited(KEEL_LOG_INFO, 1, "zipkin collector %s answered %d", z->host, res.status);
        count(&z->st->failed, z->inflight);
    }
    z->inflight = 0;
    z->backoff_ms = 0;
    keel_buf_release(&z->in);
    return 1;
}

static void on_io(struct keel_io *io, uint32_t events)
{
    struct keel_zipkin *z = OWNER(io, io);
    if (z->state == Z_CONNECTING) {
        if (!io->writable && !io->hup)
            return;
        int err = keel_sock_connect_result(io->fd);
        if (err != 0) {
            fail(z, strerror(err));
            return;
        }
        z->state = Z_READY;
        keel_timer_cancel(z->loop, &z->guard);
        kick(z);
        return;
    }
    if (z->state != Z_BUSY) {
        if (z->state == Z_READY && (io->rdhup || io->hup)) /* the collector closed an idle one */
            disconnect(z);
        return;
    }
    while (keel_buf_len(&z->out) > 0 && io->writable) {
        ssize_t n = send(io->fd, keel_buf_rptr(&z->out), keel_buf_len(&z->out), MSG_NOSIGNAL);
        if (n > 0) {
            keel_buf_consume(&z->out, (size_t)n);
        } else if (n < 0 && errno == EAGAIN) {
            io->writable = false;
        } else {
            fail(z, "write failed");
            return;
        }
    }
    bool eof = false;
    while (io->readable) {
        keel_buf_reserve(&z->in, 4096);
        ssize_t n = recv(io->fd, keel_buf_wptr(&z->in), keel_buf_room(&z->in), 0);
        if (n > 0) {
            z->in.wpos += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            io->readable = false;
        } else {
            eof = true;
            io->rdhup = true;
            break;
        }
    }
    bool close_after = false;
    int rc = keel_buf_len(&z->in) > 0 ? take_response(z, &close_after) : 0;
    if (rc < 0) {
        fail(z, "bad response");
        return;
    }
    if (rc == 0) {
        if (eof)
            fail(z, "connection closed before the response");
        return;
    }
    keel_timer_cancel(z->loop, &z->guard);
    if (close_after || eof)
        disconnect(z);
    else
        z->state = Z_READY;
    if (z->count >= KEEL_ZIPKIN_FLUSH_SPANS)
        kick(z);
    else if (z->count > 0 && !keel_timer_armed(&z->flush))
        keel_timer_set(z->loop, &z->flush, KEEL_ZIPKIN_FLUSH_MS);
}

/* Send what is queued when the connection allows. */
static void kick(struct keel_zipkin *z)
{
    if (z->count == 0 || !z->have_addr)
        return;
    keel_timer_cancel(z->loop, &z->flush);
    switch (z->state) {
    case Z_CONNECTING:
    case Z_BUSY:
        return; /* the end of this step kicks again */
    case Z_READY:
        send_batch(z);
        on_io(&z->io, 0);
        return;
    case Z_DOWN:
        break;
    }
    if (keel_loop_now_ms(z->loop) < z->retry_at_ms)
        return; /* the guard timer is armed for the end of the backoff */
    keel_addr_format((const struct sockaddr *)&z->addr.ss, z->host, sizeof(z->host));
    int fd = -1;
    int rc = keel_sock_connect(&z->addr, &fd);
    if (rc == KEEL_EIO) {
        fail(z, strerror(errno));
        return;
    }
    z->io.fd = fd;
    z->io.cb = on_io;
    z->io.readable = z->io.writable = z->io.hup = z->io.rdhup = false;
    if (keel_loop_add(z->loop, &z->io) < 0) {
        close(fd);
        z->io.fd = -1;
        fail(z, "epoll");
        return;
    }
    z->state = Z_CONNECTING;
    keel_timer_set(z->loop, &z->guard, KEEL_ZIPKIN_TIMEOUT_MS);
    if (rc == 0) {
        z->io.writable = true;
        on_io(&z->io, 0);
    }
}

static void on_flush(struct keel_timer *t)
{
    kick(OWNER(t, flush));
}

static void on_guard(struct keel_timer *t)
{
    struct keel_zipkin *z = OWNER(t, guard);
    if (z->state == Z_CONNECTING) {
        fail(z, "connect timed out");
    } else if (z->state == Z_BUSY) {
        fail(z, "no response in time");
    } else if (z->state == Z_DOWN) {
        kick(z); /* the backoff is over */
        if (z->state == Z_DOWN && z->count > 0 && !keel_timer_armed(&z->guard))
            keel_timer_set(z->loop, &z->guard, KEEL_ZIPKIN_FLUSH_MS);
    }
}

struct keel_zipkin *keel_zipkin_new(struct keel_loop *loop, struct keel_zipkin_stats *st)
{
    struct keel_zipkin *z = keel_calloc(1, sizeof(*z));
    z->st = st;
    z->loop = loop;
    z->ring = keel_calloc(KEEL_ZIPKIN_RING, sizeof(*z->ring)); /* pages touched as used */
    z->io.fd = -1;
    z->flush.cb = on_flush;
    z->guard.cb = on_guard;
    return z;
}

bool keel_zipkin_flush(struct keel_zipkin *z)
{
    if (z->count > 0 && z->state != Z_BUSY && z->state != Z_CONNECTING)
        kick(z);
    if (z->state == Z_BUSY || z->state == Z_CONNECTING)
        return false;
    /* a collector in its backoff failed a moment ago: waiting for it would only hold
     * the shutdown up */
    return z->count == 0 || !z->have_addr || keel_loop_now_ms(z->loop) < z->retry_at_ms;
}

void keel_zipkin_free(struct keel_zipkin *z)
{
    if (z == NULL)
        return;
    count(&z->st->dropped, z->count);    /* never sent */
    count(&z->st->failed, z->inflight);  /* sent, never answered */
    keel_timer_cancel(z->loop, &z->flush);
    keel_timer_cancel(z->loop, &z->guard);
    disconnect(z);
    free(z->ring);
    free(z);
}

struct keel_span *keel_zipkin_next(struct keel_zipkin *z)
{
    if (z->count == KEEL_ZIPKIN_RING) {
        count(&z->st->dropped, 1);
        return NULL;
    }
    struct keel_span *sp = &z->ring[(z->head + z->count) % KEEL_ZIPKIN_RING];
    sp->n_custom = 0;
    return sp;
}

void keel_zipkin_commit(struct keel_zipkin *z, const struct keel_addr *addr, const char *path)
{
    if (strcmp(z->path, path) != 0)
        snprintf(z->path, sizeof(z->path), "%s", path);
    if (!z->have_addr || z->addr.len != addr->len || memcmp(&z->addr.ss, &addr->ss, addr->len) != 0) {
        /* a reload moved the collector: what is queued goes to the new one */
        z->addr = *addr;
        z->have_addr = true;
        if (z->state == Z_READY)
            disconnect(z);
        z->retry_at_ms = 0;
    }
    z->count++;
    if (z->count >= KEEL_ZIPKIN_FLUSH_SPANS)
        kick(z);
    else if (!keel_timer_armed(&z->flush) && z->state != Z_BUSY && z->state != Z_CONNECTING)
        keel_timer_set(z->loop, &z->flush, KEEL_ZIPKIN_FLUSH_MS);
}

