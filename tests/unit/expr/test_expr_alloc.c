/* Evaluation allocates nothing unless the expression builds lists or maps, and then only
 * until the thread's arena is warm: malloc/calloc/realloc are counted around
 * keel_expr_eval (malloc_count.h). */
#include "expr/expr.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "malloc_count.h"

static long evals_allocating(const char *src, int times)
{
    struct keel_expr_error err;
    struct keel_expr *e = keel_expr_compile(src, strlen(src), KEEL_EXPR_CEL, &err);
    if (!e)
        fail_msg("%s: %s", src, err.msg);
    static struct keel_attr_bag bag;
    keel_attr_bag_clear(&bag);
    struct keel_value m = keel_value_str("GET", 3);
    keel_attr_bag_set(&bag, KEEL_ATTR_REQUEST_METHOD, &m);
    struct keel_value v;
    malloc_count_start();
    for (int i = 0; i < times; i++)
        keel_expr_eval(e, &bag, &v, NULL);
    long n = malloc_count_stop();
    keel_expr_free(e);
    return n;
}

static void no_lists_no_malloc(void **state)
{
    (void)state;
    keel_expr_thread_fini(); /* a cold arena: nothing may need it */
    assert_int_equal(evals_allocating("request.method == 'GET' && !(1 + 2 > 3u) ? 'a' : string(1.5)", 100), 0);
    assert_int_equal(evals_allocating("request.method in ['GET', 'HEAD'] && size('abc') == 3", 100), 0);
    assert_int_equal(evals_allocating("timestamp('2009-02-13T23:31:30Z').getHours() + dyn(1)", 100), 0);
}

static void lists_warm_no_malloc(void **state)
{
    (void)state;
    const char *src = "[1, 2, 3].map(x, x * 2).filter(y, y > 2) == [4, 6] && {'a': [1]}.a.size() == 1";
    keel_expr_thread_fini();
    long first = evals_allocating(src, 1); /* the arena's first chunk */
    if (malloc_count_works())
        assert_true(first >= 1); /* the counter counts, so the zeros mean something */
    assert_int_equal(evals_allocating(src, 1000), 0);
    keel_expr_thread_fini();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_lists_no_malloc),
        cmocka_unit_test(lists_warm_no_malloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
