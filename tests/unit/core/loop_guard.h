/* A timer that stops a loop under test, so that a lost wake-up fails instead of hanging.
 * For the core tests (each includes it once). */
#ifndef KEEL_TESTS_LOOP_GUARD_H
#define KEEL_TESTS_LOOP_GUARD_H

#include "core/loop.h"

#include <stdbool.h>

struct guard {
    struct keel_timer t;
    struct keel_loop *l;
    bool fired;
};

static void on_guard(struct keel_timer *t)
{
    struct guard *g = (struct guard *)t;
    g->fired = true;
    keel_loop_stop(g->l);
}

/* Run l until something stops it or ms pass; true when the guard stopped it. */
static inline bool run_for(struct keel_loop *l, int64_t ms)
{
    struct guard g = { .t.cb = on_guard, .l = l };
    keel_timer_set(l, &g.t, ms);
    keel_loop_run(l);
    keel_timer_cancel(l, &g.t);
    return g.fired;
}

#endif
