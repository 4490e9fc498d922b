#include "core/log.h"

#include "core/sink.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

/* A budget of 3 a second: 3 lines pass, the rest are suppressed and counted, and the
 * first line of a later second carries the count of those suppressed before it. */
static void test_limit_budget_per_second(void **state)
{
    (void)state;
    static struct keel_log_limit l;
    uint64_t sup, w0, d0, s0, w1, d1, s1;
    keel_log_counts(&w0, &d0, &s0);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    while (ts.tv_nsec > 700000000) { /* keep the burst inside one second */
        usleep(50000);
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    }
    for (int i = 0; i < 3; i++) {
        assert_true(keel_log_limit_take(&l, 3, &sup));
        assert_int_equal(sup, 0);
    }
    for (int i = 0; i < 7; i++)
        assert_false(keel_log_limit_take(&l, 3, &sup));
    keel_log_counts(&w1, &d1, &s1);
    assert_int_equal(s1 - s0, 7);
    time_t start = ts.tv_sec;
    do {
        usleep(50000);
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    } while (ts.tv_sec == start);
    assert_true(keel_log_limit_take(&l, 3, &sup));
    assert_int_equal(sup, 7);
}

/* With a sink installed, lines go to it (and are counted there), not to stderr. */
static void test_lines_go_through_the_sink(void **state)
{
    (void)state;
    char path[] = "/tmp/keel-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    struct keel_sink *s = keel_sink_open(path, 4096, err, sizeof(err));
    assert_non_null(s);
    keel_log_set_sink(s);
    keel_log_warn("hello %d", 42);
    keel_log_limited(KEEL_LOG_WARN, 1, "limited %d", 1);
    keel_log_limited(KEEL_LOG_WARN, 1, "limited %d", 2); /* another call site: its own budget */
    keel_sink_flush(s);
    uint64_t w, d, sup;
    keel_log_counts(&w, &d, &sup);
    assert_true(w >= 3);
    keel_log_set_sink(NULL);
    keel_sink_close(s);
    FILE *fp = fopen(path, "r");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "keel warning: hello 42\n"));
    assert_non_null(strstr(buf, "limited 1\n"));
    assert_non_null(strstr(buf, "limited 2\n"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_budget_per_second),
        cmocka_unit_test(test_lines_go_through_the_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
