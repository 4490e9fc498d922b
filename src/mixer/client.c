/* The proxy's report client: a worker's bags, batched (KEEL_MIXER_BATCH bags or
 * KEEL_MIXER_FLUSH_MS, whichever first) into Report calls to a keel mixer (or Istio's
 * Mixer) over one h2c connection per worker, on the worker's own loop.
 *
 * It never slows a request: adding a bag is an encode into the open batch. Sealed
 * batches wait in a queue while KEEL_MIXER_MAX_CALLS calls are unanswered or the mixer
 * is unreachable; past KEEL_MIXER_MAX_QUEUED bags queued, new bags are dropped and
 * counted. Memory is bounded by that number. Calls in flight when the connection is lost
 * are counted failed (never resent: the mixer may have counted them); queued ones go out
 * after the reconnect, which is retried with exponential backoff (100 ms .. 5 s). */
#include "mixer/mixer.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/h2.h"
#include "net/sock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CALL_TIMEOUT_MS 5000
#define OUT_HIGH_WATER (64u << 10)

struct call {
    struct keel_mixer_client *c;
    struct keel_buf msg; /* the gRPC message */
    size_t n_bags;
    size_t bytes;        /* of msg when sealed (msg is consumed as it is sent) */
    int32_t id;
    int grpc_status;     /* -1 until a grpc-status header or trailer */
    struct call *next, *prev;
};

struct keel_mixer_client {
    struct keel_loop *loop;
    char addr_str[KEEL_ADDR_STRLEN];
    struct keel_addr addr;
    bool addr_ok;
    struct keel_mixer_client_stats *st;
    struct keel_mixer_batch *batch;
    struct keel_io io;
    struct keel_h2 *h;
    struct keel_buf out;
    bool connecting, connected;
    struct call *calls; /* in flight */
    size_t n_calls;
    struct call *queue, *queue_tail; /* sealed, not yet sent (singly linked via next) */
    size_t queued_bags;               /* in the open batch, the queue and in flight */
    size_t queued_bytes;              /* the sealed messages' bytes, queued and in flight */
    int64_t backoff_ms;
    int64_t last_answer_ms; /* the mixer's last sign of life, for the stall check */
    struct keel_timer flush_timer, retry_timer;
};

static void count(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static void disconnect(struct keel_mixer_client *c, const char *why);

static void call_end(struct call *k, bool ok)
{
    struct keel_mixer_client *c = k->c;
    count(ok ? &c->st->sent : &c->st->failed, k->n_bags);
    c->queued_bags -= k->n_bags;
    c->queued_bytes -= k->bytes;
    if (k->prev)
        k->prev->next = k->next;
    else
        c->calls = k->next;
    if (k->next)
        k->next->prev = k->prev;
    c->n_calls--;
    keel_buf_release(&k->msg);
    free(k);
}

/* ---- h2 callbacks (client side) ---- */

static int on_header(void *arg, void *st, const struct keel_h2_nv *nv, bool trailer)
{
    struct call *k = st;
    if (nv->name_len == 11 && !memcmp(nv->name, "grpc-status", 11)) {
        k->grpc_status = 0;
        for (size_t i = 0; i < nv->value_len; i++)
            k->grpc_status = k->grpc_status * 10 + (nv->value[i] - '0');
    }
    return 0;
}

static void on_data(void *arg, void *st, const uint8_t *p, size_t n)
{
    struct keel_mixer_client *c = arg;
    struct call *k = st;
    keel_h2_consume(c->h, k->id, n); /* the ReportResponse is empty: nothing to keep */
}

static ssize_t on_read_body(void *arg, void *st, uint8_t *buf, size_t len, uint32_t *flags)
{
    struct call *k = st;
    size_t n = keel_buf_len(&k->msg);
    if (n > len)
        n = len;
    memcpy(buf, keel_buf_rptr(&k->msg), n);
    keel_buf_consume(&k->msg, n);
    if (keel_buf_len(&k->msg) == 0)
        *flags |= KEEL_H2_READ_EOF;
    return (ssize_t)n;
}

static void on_stream_close(void *arg, void *st, uint32_t code)
{
    struct keel_mixer_client *c = arg;
    struct call *k = st;
    c->last_answer_ms = keel_loop_now_ms(c->loop);
    call_end(k, code == 0 && k->grpc_status == 0);
}

/* the glue calls every callback but `event`: the client has nothing to do in these */
static void *on_open(void *arg, int32_t id) { return NULL; } /* push is disabled */
static void on_headers_done(void *arg, void *st, bool end_stream, bool trailer) {}
static void on_end(void *arg, void *st) {}

static const struct keel_h2_callbacks callbacks = {
    .open_stream = on_open,
    .headers_done = on_headers_done,
    .end_stream = on_end,
    .header = on_header,
    .data = on_data,
    .read_body = on_read_body,
    .stream_close = on_stream_close,
};

/* ---- connection ---- */

static bool flush_out(struct keel_mixer_client *c)
{
    for (;;) {
        if (keel_buf_len(&c->out) < OUT_HIGH_WATER && keel_h2_want_write(c->h) &&
            keel_h2_send(c->h, &c->out, OUT_HIGH_WATER) < 0) {
            disconnect(c, "HTTP/2 error");
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
            disconnect(c, strerror(errno));
            return false;
        }
        keel_buf_consume(&c->out, (size_t)w);
    }
    if (!keel_h2_alive(c->h)) {
        disconnect(c, "connection ended (GOAWAY)");
        return false;
    }
    return true;
}

static void pump(struct keel_mixer_client *c);
static void connect_now(struct keel_mixer_client *c);

static void on_io(struct keel_io *io, uint32_t events)
{
    struct keel_mixer_client *c = (struct keel_mixer_client *)((char *)io - offsetof(struct keel_mixer_client, io));
    if (c->connecting) {
        if (!io->writable && !io->hup)
            return;
        int err = keel_sock_connect_result(io->fd);
        if (err != 0) {
            disconnect(c, strerror(err));
            return;
        }
        c->connecting = false;
        c->connected = true;
        c->backoff_ms = 0;
        c->last_answer_ms = keel_loop_now_ms(c->loop);
        c->h = keel_h2_new(false, &callbacks, c, NULL);
        keel_log_info("mixer %s: connected", c->addr_str);
    }
    keel_h2_set_now(c->h, keel_loop_now_ms(c->loop));
    if (!flush_out(c))
        return;
    uint8_t buf[16384];
    while (io->readable) {
        ssize_t r = read(io->fd, buf, sizeof(buf));
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            io->readable = false;
            break;
        }
        if (r <= 0) {
            disconnect(c, r == 0 ? "closed by the mixer" : strerror(errno));
            return;
        }
        if (keel_h2_recv(c->h, buf, (size_t)r) < 0) {
            disconnect(c, "HTTP/2 protocol error");
            return;
        }
        if (!flush_out(c))
            return;
    }
    if (io->hup && !io->readable) {
        disconnect(c, "connection lost");
        return;
    }
    pump(c); /* answers made room, or the connection came up */
}

static void on_retry(struct keel_timer *t);

static void connect_now(struct keel_mixer_client *c)
{
    if (!c->addr_ok || c->connected || c->connecting)
        return;
    int fd;
    int rc = keel_sock_connect(&c->addr, &fd);
    if (rc < 0 && rc != KEEL_AGAIN) {
        disconnect(c, strerror(errno));
        return;
    }
    c->io = (struct keel_io){ .fd = fd, .cb = on_io };
    c->connecting = true;
    keel_loop_add(c->loop, &c->io);
    if (rc == 0) { /* connected at once (loopback): finish through the callback path */
        c->io.writable = true;
        on_io(&c->io, 0);
    }
}

static void disconnect(struct keel_mixer_client *c, const char *why)
{
    if (c->connected || c->connecting) {
        if (c->connected)
            keel_log_warn("mixer %s: %s; reconnecting", c->addr_str, why);
        keel_loop_del(c->loop, &c->io);
        close(c->io.fd);
    }
    if (c->h) {
        keel_h2_free(c->h); /* stream_close is not called for the calls in flight: */
        c->h = NULL;
    }
    while (c->calls)
        call_end(c->calls, false);
    c->out.rpos = c->out.wpos = 0;
    keel_buf_release(&c->out);
    c->connected = c->connecting = false;
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    if (!keel_timer_armed(&c->retry_timer))
        keel_timer_set(c->loop, &c->retry_timer, c->backoff_ms);
}

static void on_retry(struct keel_timer *t)
{
    struct keel_mixer_client *c = (struct keel_mixer_client *)((char *)t - offsetof(struct keel_mixer_client, retry_timer));
    connect_now(c);
}

/* The open batch becomes a call waiting in the queue. */
static void seal(struct keel_mixer_client *c)
{
    if (keel_mixer_batch_count(c->batch) == 0)
        return;
    struct call *k = keel_calloc(1, sizeof(*k));
    k->c = c;
    k->grpc_status = -1;
    k->n_bags = keel_mixer_batch_count(c->batch);
    keel_mixer_batch_finish(c->batch, &k->msg);
    k->bytes = keel_buf_len(&k->msg);
    c->queued_bytes += k->bytes;
    if (c->queue_tail)
        c->queue_tail->next = k;
    else
        c->queue = k;
    c->queue_tail = k;
}

/* Queued calls go out while the connection takes them. */
static void pump(struct keel_mixer_client *c)
{
    if (!c->connected) {
        if (c->queue && !keel_timer_armed(&c->retry_timer))
            connect_now(c);
        return;
    }
    bool sent = false;
    while (c->queue && c->n_calls < KEEL_MIXER_MAX_CALLS && keel_h2_can_open(c->h)) {
        struct call *k = c->queue;
        /* pseudo-headers first (RFC 9113 §8.3) */
        const struct keel_h2_nv nv[] = {
            { ":method", 7, "POST", 4 },
            { ":scheme", 7, "http", 4 },
            { ":path", 5, "/istio.mixer.v1.Mixer/Report", 28 },
            { ":authority", 10, c->addr_str, strlen(c->addr_str) },
            { "content-type", 12, "application/grpc", 16 },
            { "te", 2, "trailers", 8 },
        };
        int32_t id = keel_h2_submit_request(c->h, nv, 6, true, k);
        if (id < 0)
            break; /* the session refuses streams now: try again later */
        c->queue = k->next;
        if (c->queue == NULL)
            c->queue_tail = NULL;
        k->id = id;
        k->next = c->calls;
        k->prev = NULL;
        if (c->calls)
            c->calls->prev = k;
        c->calls = k;
        if (c->n_calls++ == 0)
            c->last_answer_ms = keel_loop_now_ms(c->loop);
        sent = true;
    }
    /* a mixer that answers nothing for CALL_TIMEOUT_MS is treated as gone */
    if (c->queue && c->n_calls > 0 && keel_loop_now_ms(c->loop) - c->last_answer_ms > CALL_TIMEOUT_MS) {
        disconnect(c, "no answer");
        return;
    }
    if (sent)
        flush_out(c);
}

static void on_flush(struct keel_timer *t)
{
    struct keel_mixer_client *c = (struct keel_mixer_client *)((char *)t - offsetof(struct keel_mixer_client, flush_timer));
    seal(c);
    pump(c);
    if (c->queue) /* still waiting for room: look again */
        keel_timer_set(c->loop, t, KEEL_MIXER_FLUSH_MS);
}

struct keel_mixer_client *keel_mixer_client_new(struct keel_loop *loop, const char *addr,
                                                struct keel_mixer_client_stats *st)
{
    struct keel_mixer_client *c = keel_calloc(1, sizeof(*c));
    c->loop = loop;
    c->st = st;
    c->batch = keel_mixer_batch_new();
    c->flush_timer.cb = on_flush;
    c->retry_timer.cb = on_retry;
    c->io.fd = -1;
    snprintf(c->addr_str, sizeof(c->addr_str), "%s", addr);
    c->addr_ok = keel_addr_parse(addr, &c->addr) == 0;
    if (!c->addr_ok)
        keel_log_warn("mixerReportServer '%s' is not an address: reports are dropped", addr);
    connect_now(c);
    return c;
}

const char *keel_mixer_client_target(const struct keel_mixer_client *c) { return c->addr_str; }

void keel_mixer_client_report(struct keel_mixer_client *c, const struct keel_attr_bag *bag)
{
    if (!c->addr_ok || c->queued_bags >= KEEL_MIXER_MAX_QUEUED || c->queued_bytes >= KEEL_MIXER_MAX_QUEUED_BYTES) {
        count(&c->st->dropped, 1);
        return;
    }
    if (!keel_mixer_batch_add(c->batch, bag)) { /* drops an attribute: a new batch */
        seal(c);
        pump(c);
        keel_mixer_batch_add(c->batch, bag);
    }
    c->queued_bags++;
    if (keel_mixer_batch_count(c->batch) >= KEEL_MIXER_BATCH ||
        keel_mixer_batch_bytes(c->batch) >= KEEL_MIXER_BATCH_BYTES) {
        seal(c);
        pump(c);
    }
    if (!keel_timer_armed(&c->flush_timer))
        keel_timer_set(c->loop, &c->flush_timer, KEEL_MIXER_FLUSH_MS);
}

bool keel_mixer_client_flush(struct keel_mixer_client *c)
{
    seal(c);
    pump(c);
    /* a mixer in its reconnect backoff is down: waiting would only hold the shutdown up */
    return c->queued_bags == 0 || (!c->connected && keel_timer_armed(&c->retry_timer));
}

void keel_mixer_client_free(struct keel_mixer_client *c)
{
    if (!c)
        return;
    keel_timer_cancel(c->loop, &c->flush_timer);
    keel_timer_cancel(c->loop, &c->retry_timer);
    count(&c->st->dropped, keel_mixer_batch_count(c->batch)); /* never sent */
    while (c->queue) {
        struct call *k = c->queue;
        c->queue = k->next;
        count(&c->st->dropped, k->n_bags);
        keel_buf_release(&k->msg);
        free(k);
    }
    if (c->connected || c->connecting) {
        keel_loop_del(c->loop, &c->io);
        close(c->io.fd);
    }
    if (c->h)
        keel_h2_free(c->h);
    while (c->calls)
        call_end(c->calls, false);
    keel_buf_release(&c->out);
    keel_mixer_batch_free(c->batch);
    free(c);
}
