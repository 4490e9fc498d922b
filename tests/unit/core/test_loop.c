#include "core/loop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/sendq.h"
#include "loop_guard.h"

/* Timers re-armed later keep their heap place and are re-filed when it comes up: each
 * fires once, at its last deadline, in deadline order, and a re-arm earlier or a cancel
 * still takes effect. */
struct rec {
    struct keel_timer t;
    struct keel_loop *l;
    int id;
    int64_t fired_ms;
};

static int order[8], n_fired;

static void on_timer(struct keel_timer *t)
{
    struct rec *r = (struct rec *)t;
    r->fired_ms = keel_loop_now_ms(r->l);
    order[n_fired++] = r->id;
    if (n_fired == 4)
        keel_loop_stop(r->l);
}

static void rearmed_timers_fire_once_in_order(void **state)
{
    (void)state;
    struct keel_loop *l = keel_loop_new();
    struct rec r[5] = { 0 };
    for (int i = 0; i < 5; i++) {
        r[i].l = l;
        r[i].id = i;
        r[i].t.cb = on_timer;
    }
    int64_t t0 = keel_loop_now_ms(l);
    keel_timer_set(l, &r[0].t, 10);
    keel_timer_set(l, &r[0].t, 20);
    keel_timer_set(l, &r[0].t, 60); /* later twice: fires at 60, once */
    keel_timer_set(l, &r[1].t, 40);
    keel_timer_set(l, &r[2].t, 80);
    keel_timer_set(l, &r[2].t, 5); /* earlier: fires first */
    keel_timer_set(l, &r[3].t, 30);
    keel_timer_cancel(l, &r[3].t); /* cancelled: never */
    keel_timer_set(l, &r[4].t, 15);
    keel_timer_set(l, &r[4].t, 70); /* later, behind r[0] */
    keel_loop_run(l);
    assert_int_equal(n_fired, 4);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 0);
    assert_int_equal(order[3], 4);
    assert_true(r[0].fired_ms - t0 >= 60);
    assert_true(r[4].fired_ms - t0 >= 70);
    assert_true(r[1].fired_ms - t0 >= 40);
    assert_int_equal(r[3].fired_ms, 0);
    for (int i = 0; i < 5; i++)
        assert_false(keel_timer_armed(&r[i].t));
    keel_loop_free(l);
}

/* Two pipes ready in one epoll batch: whichever callback runs first deletes and closes
 * the other, as a session's write can end the mixer connection whose event waits later in
 * the same batch. The deleted one must not be called (it was, on a freed HTTP/2 session). */
struct pipe_io {
    struct keel_io io;
    struct keel_loop *l;
    struct pipe_io *other;
    int calls;
};

static void on_pipe(struct keel_io *io, uint32_t events)
{
    (void)events;
    struct pipe_io *p = (struct pipe_io *)io;
    p->calls++;
    keel_loop_del(p->l, &p->other->io);
    close(p->other->io.fd);
    keel_loop_stop(p->l);
}

static void io_deleted_in_a_batch_gets_no_stale_event(void **state)
{
    (void)state;
    struct keel_loop *l = keel_loop_new();
    struct pipe_io a = { .l = l }, b = { .l = l };
    a.other = &b;
    b.other = &a;
    int pa[2], pb[2];
    assert_int_equal(pipe(pa), 0);
    assert_int_equal(pipe(pb), 0);
    a.io = (struct keel_io){ .fd = pa[0], .cb = on_pipe };
    b.io = (struct keel_io){ .fd = pb[0], .cb = on_pipe };
    assert_int_equal(keel_loop_add_in(l, &a.io), 0);
    assert_int_equal(keel_loop_add_in(l, &b.io), 0);
    assert_int_equal(write(pa[1], "x", 1), 1);
    assert_int_equal(write(pb[1], "x", 1), 1);
    keel_loop_run(l);
    assert_int_equal(a.calls + b.calls, 1);
    close(a.calls ? pa[0] : pb[0]);
    close(pa[1]);
    close(pb[1]);
    keel_loop_free(l);
}

/* ---- batched sends (keel_loop_send_later) ----
 * A writer queues its buffer each time it is called writable, as session_flush does; a
 * reader in the same loop drains the other end of a socket pair once told to, so the
 * writer meets a full socket, waits for the edge, and goes on. */
struct writer {
    struct keel_io io;
    struct keel_loop *l;
    struct keel_buf out;
    struct keel_defer *then; /* deferred by the first completion */
    int calls, err;
    int stop_after;          /* calls; 0 = never */
    size_t total;
};

struct reader {
    struct keel_io io;
    struct writer *w;
    struct keel_timer start; /* reading starts when it fires */
    size_t got;
    bool reading;
};

static void on_writer(struct keel_io *io, uint32_t events)
{
    (void)events;
    struct writer *w = (struct writer *)io;
    w->calls++;
    if (io->send_err != 0) {
        w->err = io->send_err;
        keel_loop_stop(w->l);
        return;
    }
    if (w->then != NULL) {
        keel_loop_defer(w->l, w->then);
        w->then = NULL;
    }
    if (keel_buf_len(&w->out) > 0 && io->writable)
        assert_true(keel_loop_send_later(w->l, io, &w->out));
    if (w->calls == w->stop_after)
        keel_loop_stop(w->l);
}

static void on_reader(struct keel_io *io, uint32_t events)
{
    (void)events;
    struct reader *r = (struct reader *)io;
    char buf[65536];
    while (r->reading) {
        ssize_t n = read(io->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        r->got += (size_t)n;
    }
    if (r->got == r->w->total)
        keel_loop_stop(r->w->l);
}

static void on_start_reading(struct keel_timer *t)
{
    struct reader *r = (struct reader *)((char *)t - offsetof(struct reader, start));
    r->reading = true;
    on_reader(&r->io, 0);
}

/* Each send test runs twice: sends flushed before epoll_wait, and (ring reads on) sent in
 * the ring's wait, where the loop then sleeps (the reader's epoll events come through the
 * ring's poll of the epoll set). */
static struct keel_loop *loop_with_sendq(void **state)
{
    bool ring_reads = *(bool *)*state;
    struct keel_loop *l = keel_loop_new();
    assert_true(keel_loop_use_sendq(l, ring_reads)); /* io_uring: Linux >= 5.6, not disabled */
    assert_int_equal(keel_loop_ring_reads(l), ring_reads); /* Linux >= 6.1 for reads */
    return l;
}

static void pair(struct keel_loop *l, struct writer *w, struct reader *r)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    *w = (struct writer){ .l = l };
    *r = (struct reader){ .w = w };
    w->io = (struct keel_io){ .fd = sv[0], .cb = on_writer, .writable = true };
    r->io = (struct keel_io){ .fd = sv[1], .cb = on_reader };
    r->start.cb = on_start_reading;
    assert_int_equal(keel_loop_add(l, &w->io), 0);
    assert_int_equal(keel_loop_add(l, &r->io), 0);
}

static void unpair(struct keel_loop *l, struct writer *w, struct reader *r)
{
    keel_timer_cancel(l, &r->start);
    keel_loop_del(l, &w->io);
    keel_loop_del(l, &r->io);
    close(w->io.fd);
    close(r->io.fd);
    keel_buf_release(&w->out);
}

/* 8 MiB through a socket the reader leaves full for 50 ms: short sends, EAGAIN, the
 * EPOLLOUT edge after it, every byte once (counted), the buffer consumed. */
static void batched_send_survives_a_full_socket(void **state)
{
    struct keel_loop *l = loop_with_sendq(state);
    struct writer w;
    struct reader r;
    pair(l, &w, &r);
    w.total = 8u << 20;
    keel_buf_reserve(&w.out, w.total);
    memset(keel_buf_wptr(&w.out), 'k', w.total);
    w.out.wpos += w.total;
    keel_timer_set(l, &r.start, 50);
    assert_true(keel_loop_send_later(l, &w.io, &w.out));
    assert_false(w.io.writable); /* queued: not writable until it went */
    keel_loop_run(l);
    assert_int_equal(r.got, w.total);
    assert_int_equal(keel_buf_len(&w.out), 0);
    assert_true(w.calls >= 2); /* a short send or an EAGAIN came before the end */
    assert_int_equal(w.err, 0);
    unpair(l, &w, &r);
    keel_loop_free(l);
}

/* A send queued by work deferred from a completion (an HTTP/2 stream woken when its
 * connection's bytes went) goes out at once: the loop must not sleep on it. It did, until
 * the next timer or event; a timer 900 ms away tells. */
struct later {
    struct keel_defer d;
    struct writer *w;
};

static void on_later(struct keel_defer *d)
{
    struct writer *w = ((struct later *)d)->w;
    keel_buf_append(&w->out, "lo", 2);
    assert_true(keel_loop_send_later(w->l, &w->io, &w->out));
}

static void send_queued_by_deferred_work_is_not_left_waiting(void **state)
{
    struct keel_loop *l = loop_with_sendq(state);
    struct writer w;
    struct reader r;
    pair(l, &w, &r);
    keel_loop_del(l, &r.io); /* read below: no event of the reader may wake the loop */
    struct guard g = { .t.cb = on_guard, .l = l };
    keel_timer_set(l, &g.t, 20); /* first a turn that takes the writer's first edge */
    keel_loop_run(l);
    g.fired = false;
    struct later later = { .d.cb = on_later, .w = &w };
    w.then = &later.d;
    keel_buf_append(&w.out, "hel", 3);
    assert_true(keel_loop_send_later(l, &w.io, &w.out));
    keel_timer_set(l, &g.t, 900);
    w.stop_after = w.calls + 2; /* "hel" went, then "lo" */
    keel_loop_run(l);
    assert_false(g.fired);
    char got[8];
    assert_int_equal(read(r.io.fd, got, sizeof(got)), 5);
    assert_memory_equal(got, "hello", 5);
    keel_timer_cancel(l, &g.t);
    unpair(l, &w, &r);
    keel_loop_free(l);
}

/* An io deleted with its send still queued (a reply, then a close) writes it then, as
 * write(2) would have; a send to a peer that left reports the error to its owner. */
static void deleted_io_writes_what_it_queued_and_errors_reach_the_owner(void **state)
{
    struct keel_loop *l = loop_with_sendq(state);
    struct writer w;
    struct reader r;
    pair(l, &w, &r);
    keel_buf_append(&w.out, "bye", 3);
    assert_true(keel_loop_send_later(l, &w.io, &w.out));
    keel_loop_del(l, &w.io);
    assert_int_equal(w.io.send_slot, 0);
    assert_int_equal(keel_buf_len(&w.out), 0);
    char got[8];
    assert_int_equal(read(r.io.fd, got, sizeof(got)), 3);
    assert_memory_equal(got, "bye", 3);
    keel_loop_del(l, &r.io);
    close(r.io.fd);
    r.io.fd = -1;
    assert_int_equal(keel_loop_add(l, &w.io), 0);
    w.io.writable = true;
    keel_buf_append(&w.out, "lost", 4);
    assert_true(keel_loop_send_later(l, &w.io, &w.out));
    keel_loop_run(l);
    assert_int_equal(w.err, EPIPE);
    keel_loop_del(l, &w.io);
    close(w.io.fd);
    keel_buf_release(&w.out);
    keel_loop_free(l);
}

/* A turn queues at most KEEL_SENDQ_MAX sends (each pins its buffer until the batch);
 * past that the caller is told to write itself, and every queued one still goes. */
static void a_full_batch_sends_the_rest_by_write(void **state)
{
    struct keel_loop *l = loop_with_sendq(state);
    enum { N = KEEL_SENDQ_MAX + 1 };
    static struct writer w[N];
    static struct reader r[N];
    for (int i = 0; i < N; i++) {
        pair(l, &w[i], &r[i]);
        keel_buf_append(&w[i].out, "x", 1);
        assert_int_equal(keel_loop_send_later(l, &w[i].io, &w[i].out), i < KEEL_SENDQ_MAX);
    }
    w[0].stop_after = 1; /* the batch went */
    keel_loop_run(l);
    for (int i = 0; i < KEEL_SENDQ_MAX; i++) {
        char c;
        assert_int_equal(read(r[i].io.fd, &c, 1), 1);
        assert_int_equal(keel_buf_len(&w[i].out), 0);
    }
    assert_int_equal(keel_buf_len(&w[N - 1].out), 1); /* its own to write */
    for (int i = 0; i < N; i++)
        unpair(l, &w[i], &r[i]);
    keel_loop_free(l);
}

static bool flushed = false, in_ring_wait = true;

#define BOTH(test) cmocka_unit_test_prestate(test, &flushed), \
                   cmocka_unit_test_prestate(test, &in_ring_wait)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rearmed_timers_fire_once_in_order),
        cmocka_unit_test(io_deleted_in_a_batch_gets_no_stale_event),
        BOTH(batched_send_survives_a_full_socket),
        BOTH(send_queued_by_deferred_work_is_not_left_waiting),
        BOTH(deleted_io_writes_what_it_queued_and_errors_reach_the_owner),
        BOTH(a_full_batch_sends_the_rest_by_write),
    };
    return cmocka_run_group_tests_name("core/loop", tests, NULL, NULL);
}
