#include "core/loop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <unistd.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rearmed_timers_fire_once_in_order),
        cmocka_unit_test(io_deleted_in_a_batch_gets_no_stale_event),
    };
    return cmocka_run_group_tests_name("core/loop", tests, NULL, NULL);
}
