/* A worker: one thread, one event loop, its own listening sockets (SO_REUSEPORT), its
 * own upstream pools, counters and access-log batch. Nothing here is shared with other
 * workers except the read-only server and the log sink. */
#include "proxy/proxy_int.h"

#include "core/alloc.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h> /* RUNNING_ON_VALGRIND: a no-op instruction sequence */
#else
#define RUNNING_ON_VALGRIND 0
#endif
#include <unistd.h>

#define ACCEPT_BATCH 64
#define LOG_FLUSH_BYTES (64 * 1024)

/* Mixer stdio handler lines of this turn, to the process's stdout / stderr sinks. */
static void flush_stdio(struct worker *w)
{
    for (int i = 0; i < KEEL_TELEMETRY_N_STREAMS; i++) {
        struct keel_telemetry_output *o = keel_telemetry_shard_output(w->tel, i);
        if (o->lines == 0)
            continue;
        if (w->srv->stdio_sinks[i] != NULL)
            keel_sink_submit(w->srv->stdio_sinks[i], keel_buf_rptr(&o->buf), keel_buf_len(&o->buf),
                             o->lines);
        o->buf.rpos = o->buf.wpos = 0;
        o->lines = 0;
    }
}

static void flush_access_log(struct worker *w)
{
    if (w->log_lines == 0)
        return;
    keel_sink_submit(w->log_target->sink, keel_buf_rptr(&w->log), keel_buf_len(&w->log),
                     w->log_lines);
    w->log.rpos = w->log.wpos = 0;
    w->log_lines = 0;
}

/* The end of a loop turn: advance the telemetry shard's clock (and expire stale series),
 * hand this turn's log lines to their writer threads. */
static void before_sleep(void *arg)
{
    struct worker *w = arg;
    keel_telemetry_shard_tick(w->tel, (uint64_t)keel_loop_now_us(w->loop) * 1000,
                              (uint64_t)w->srv->opt->metric_expiry_ms * 1000000);
    flush_stdio(w);
    flush_access_log(w);
}

void worker_log_line(struct worker *w, struct access_log *al, const struct keel_access_record *r)
{
    if (al != w->log_target) { /* a reload changed the destination: batch per destination */
        flush_access_log(w);
        access_log_unref(w->log_target);
        w->log_target = access_log_ref(al);
    }
    keel_accesslog_render(al->format, r, &w->log);
    w->log_lines++;
    if (keel_buf_len(&w->log) >= LOG_FLUSH_BYTES)
        flush_access_log(w);
}

/* How long a listener stops accepting when the process is out of file descriptors: a
 * level-triggered listener would be reported ready again at once and spin (nginx waits
 * 500 ms). The connections wait in the kernel's backlog meanwhile. */
#define ACCEPT_PAUSE_MS 200

static void on_accept(struct keel_io *io, uint32_t events)
{
    struct worker_listener *wl = (struct worker_listener *)io;
    struct worker *w = wl->w;
    size_t max = w->srv->opt->max_connections;
    for (int i = 0; i < ACCEPT_BATCH && !w->draining; i++) {
        struct keel_addr peer;
        int fd = keel_sock_accept(io->fd, &peer);
        if (fd < 0) {
            int e = errno;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                stat_add(&w->stats.downstream_cx_fd_exhausted, 1);
                keel_log_limited(KEEL_LOG_WARN, 1, "accept on %s: %s: not accepting for %d ms",
                                 wl->spec->addr_str, strerror(e), ACCEPT_PAUSE_MS);
                keel_loop_pause_in(w->loop, io, &wl->pause, ACCEPT_PAUSE_MS);
            } else if (e != EAGAIN && e != EINTR && e != ECONNABORTED) {
                keel_log_limited(KEEL_LOG_WARN, 1, "accept on %s: %s", wl->spec->addr_str,
                                 strerror(e));
            }
            return;
        }
        if (max > 0 && atomic_load_explicit(&w->stats.downstream_cx_active,
                                            memory_order_relaxed) >= max) {
            /* over the limit: Envoy's listener connection limit closes at once, before
             * reading anything, and counts it; nothing is logged per connection */
            stat_add(&w->stats.downstream_cx_overflow, 1);
            close(fd);
            continue;
        }
        session_start(w, wl->spec, fd, &peer);
    }
}

static void close_listeners(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++) {
        struct keel_io *io = &w->listeners[i].io;
        keel_loop_pause_cancel(&w->listeners[i].pause);
        if (io->fd >= 0) {
            keel_loop_del(w->loop, io);
            close(io->fd);
            io->fd = -1;
        }
    }
}

/* Spans and Mixer reports wait up to a second to fill a batch: a drain sends them now
 * rather than dropping them with the worker (the drain deadline still bounds it). */
static bool telemetry_sent(struct worker *w)
{
    bool spans = keel_zipkin_flush(w->zipkin);
    return (w->mixer == NULL || keel_mixer_client_flush(w->mixer)) && spans;
}

/* Called each loop turn while draining: stop once no session is left and what they
 * reported has gone out. */
static void check_drained(void *arg)
{
    struct worker *w = arg;
    if (w->draining && w->sessions == NULL && telemetry_sent(w))
        keel_loop_stop(w->loop);
}

static void on_wake(struct keel_io *io, uint32_t events)
{
    struct worker *w = (struct worker *)((char *)io - offsetof(struct worker, wake));
    uint64_t v;
    if (read(io->fd, &v, sizeof(v)) < 0)
        return;
    worker_gen_switch(w);
    if (atomic_load(&w->stopping)) {
        /* the drain deadline passed: end what is left */
        sessions_abort(w);
        keel_loop_stop(w->loop);
        return;
    }
    if (atomic_load(&w->srv->quit) && !w->draining) {
        w->draining = true;
        close_listeners(w);
        upconn_pool_close_all(w);
        sessions_drain(w);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* here, not in worker_init: the ring's registered fd belongs to the thread using it */
    const struct keel_proxy_options *o = w->srv->opt;
    bool reads = !o->io_uring_off && !o->io_uring_writes_only;
    if (reads && RUNNING_ON_VALGRIND) {
        /* valgrind keeps its lock through io_uring_enter (it does not know the call
         * blocks): a worker asleep there would stop the process's other threads */
        reads = false;
        if (w->index == 0)
            keel_log_info("under valgrind: reads are read(2), workers sleep in epoll_wait");
    }
    if (!o->io_uring_off && keel_loop_use_sendq(w->loop, reads) && w->index == 0)
        keel_log_info(keel_loop_ring_reads(w->loop)
                          ? "sockets read and written through io_uring (a loop turn: one call)"
                          : "socket writes batched per loop turn (io_uring)");
    keel_loop_run(w->loop);
    before_sleep(w);
    upconn_pool_close_all(w);
    close_listeners(w);
    keel_loop_run_deferred(w->loop);
    keel_zipkin_free(w->zipkin); /* spans still queued are lost; their buffers go back here */
    w->zipkin = NULL;
    h2_free_recycled();
    keel_buf_release(&w->log);
    keel_buf_pool_drain();
    uint64_t one = 1;
    if (write(w->srv->done_efd, &one, sizeof(one)) < 0)
        keel_log_error("worker %d: cannot report its end: %s", w->index, strerror(errno));
    return NULL;
}

/* Bind this worker's listeners; the main thread calls it before starting the thread so
 * that a bad address fails startup. On failure it leaves nothing behind (worker_fini
 * has run): the caller finishes only the workers that were initialized. */
int worker_init(struct worker *w, struct server *srv, int index)
{
    w->srv = srv;
    w->index = index;
    w->next_conn_id = (uint64_t)index << 48;
    w->loop = keel_loop_new();
    if (w->loop == NULL)
        return -1;
    worker_gen_switch(w);
    w->listeners = keel_calloc(srv->n_listeners, sizeof(*w->listeners));
    /* n_listeners counts the bound ones, so that worker_fini closes no more than those */
    for (size_t i = 0; i < srv->n_listeners; i++) {
        struct worker_listener *wl = &w->listeners[i];
        wl->w = w;
        wl->spec = &srv->listeners[i];
        wl->io.cb = on_accept;
        wl->io.fd = keel_sock_listen(&wl->spec->addr, true);
        if (wl->io.fd < 0) {
            keel_log_error("listen on %s: %s", wl->spec->addr_str, strerror(errno));
            worker_fini(w);
            return -1;
        }
        w->n_listeners = i + 1;
        keel_loop_add_in(w->loop, &wl->io);
    }
    w->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->wake.cb = on_wake;
    keel_loop_add_in(w->loop, &w->wake);
    w->tel = keel_telemetry_shard_new(srv->metrics);
    w->report = report_scratch_new();
    w->zipkin = keel_zipkin_new(w->loop, &w->zipkin_stats);
    keel_loop_on_before_sleep(w->loop, before_sleep, w);
    keel_loop_on_before_sleep(w->loop, check_drained, w);
    return 0;
}

int worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w);
}

void worker_wake(struct worker *w)
{
    uint64_t one = 1;
    if (write(w->wake.fd, &one, sizeof(one)) < 0)
        keel_log_warn("waking worker %d: %s", w->index, strerror(errno));
}

void worker_fini(struct worker *w)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        if (w->listeners[i].io.fd >= 0)
            close(w->listeners[i].io.fd);
    if (w->wake.fd > 0)
        close(w->wake.fd);
    sessions_free_recycled(w);
    upconn_free_recycled(w);
    worker_gen_fini(w);
    access_log_unref(w->log_target);
    keel_telemetry_shard_free(w->tel);
    report_scratch_free(w->report);
    keel_zipkin_free(w->zipkin); /* a worker that never started */
    keel_mixer_client_free(w->mixer);
    free(w->listeners);
    keel_loop_free(w->loop);
}
