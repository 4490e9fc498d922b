#include "core/loop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rearmed_timers_fire_once_in_order),
    };
    return cmocka_run_group_tests_name("core/loop", tests, NULL, NULL);
}
