#include "core/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

static void append_and_consume(void **state)
{
    struct keel_buf b = { 0 };
    keel_buf_append(&b, "hello", 5);
    assert_int_equal(keel_buf_len(&b), 5);
    assert_memory_equal(keel_buf_rptr(&b), "hello", 5);
    keel_buf_consume(&b, 5);
    assert_int_equal(keel_buf_len(&b), 0);
    assert_int_equal(b.rpos, 0);
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

static void grows_past_pool_size(void **state)
{
    struct keel_buf b = { 0 };
    char chunk[1000];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 40; i++)
        keel_buf_append(&b, chunk, sizeof(chunk));
    assert_int_equal(keel_buf_len(&b), 40000);
    assert_true(b.cap >= 40000);
    keel_buf_printf(&b, "%d-%s", 42, "end");
    assert_memory_equal(keel_buf_rptr(&b) + 40000, "42-end", 6);
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

static void compacts_before_growing(void **state)
{
    struct keel_buf b = { 0 };
    char chunk[KEEL_BUF_SIZE - 10];
    memset(chunk, 'y', sizeof(chunk));
    keel_buf_append(&b, chunk, sizeof(chunk));
    keel_buf_consume(&b, 100);
    keel_buf_append(&b, "0123456789abc", 13);
    assert_int_equal(b.cap, KEEL_BUF_SIZE);
    assert_int_equal(b.rpos, 0);
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

/* the request path's decimal writer matches printf's %llu at every digit count */
static void append_u64_matches_printf(void **state)
{
    (void)state;
    struct keel_buf b = { 0 };
    uint64_t v = 0;
    for (int digits = 0; digits < 21; digits++) {
        uint64_t cases[3] = { v, v + 1, v * 10 + 9 };
        for (int k = 0; k < 3; k++) {
            char want[32];
            int n = snprintf(want, sizeof(want), "%llu", (unsigned long long)cases[k]);
            b.rpos = b.wpos = 0;
            keel_buf_append_u64(&b, cases[k]);
            assert_int_equal(keel_buf_len(&b), n);
            assert_memory_equal(keel_buf_rptr(&b), want, (size_t)n);
        }
        v = v * 10 + 9;
    }
    b.rpos = b.wpos = 0;
    keel_buf_append_u64(&b, UINT64_MAX);
    assert_int_equal(keel_buf_len(&b), 20);
    assert_memory_equal(keel_buf_rptr(&b), "18446744073709551615", 20);
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_and_consume),
        cmocka_unit_test(grows_past_pool_size),
        cmocka_unit_test(compacts_before_growing),
        cmocka_unit_test(append_u64_matches_printf),
    };
    return cmocka_run_group_tests_name("core/buf", tests, NULL, NULL);
}
