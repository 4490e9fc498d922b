/* Metric registry and text exposition: number format, ordering, escaping, histograms,
 * variants, conflicts, the series limit, promtool, and exact sums under concurrency. */
#include "telemetry/metrics.h"

#include "core/buf.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

static char *scrape(struct keel_metrics *reg)
{
    struct keel_buf b = { 0 };
    keel_metrics_scrape(reg, &b);
    char *s = b.data ? strndup(keel_buf_rptr(&b), keel_buf_len(&b)) : strdup("");
    keel_buf_release(&b);
    return s;
}

/* promtool check metrics on text. promtool 2.42 exits 1 on a parse error and 3 on lint
 * findings only; Istio's own names (istio_double_request_count: a counter without
 * _total) draw lint findings, so 3 counts as valid text here. Returns 0 when valid. */
static int promtool(const char *text)
{
    char path[] = "/tmp/keel-prom-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s > %s.out 2>&1", path, path);
    int rc = system(cmd);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 3)
        rc = 0;
    if (rc != 0) {
        snprintf(cmd, sizeof(cmd), "cat %s.out", path);
        (void)system(cmd);
    }
    snprintf(cmd, sizeof(cmd), "%s.out", path);
    unlink(cmd);
    unlink(path);
    return rc;
}

static void test_fmt_float(void **state)
{
    (void)state;
    static const struct { double v; const char *s; } cases[] = {
        { 0, "0" }, { 1, "1" }, { 2, "2" }, { 999999, "999999" }, { 1e6, "1e+06" }, { 1234567, "1.234567e+06" },
        { 0.5, "0.5" }, { 0.005, "0.005" }, { 0.0001, "0.0001" }, { 1e-05, "1e-05" }, { 2.5, "2.5" },
        { 100000, "100000" }, { 1e8, "1e+08" }, { 3600000, "3.6e+06" }, { 7.5, "7.5" }, { -3, "-3" },
        { 0.323, "0.323" }, { 1.0 / 0.0, "+Inf" }, { -1.0 / 0.0, "-Inf" },
    };
    char buf[40];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        keel_metrics_fmt_float(cases[i].v, buf);
        assert_string_equal(buf, cases[i].s);
    }
}

static void test_counter_exposition(void **state)
{
    (void)state;
    struct keel_metrics *reg = keel_metrics_new();
    const char *labels[] = { "destination", "message", "reporter", "source" };
    struct keel_metrics_family *f = keel_metrics_family(reg, "istio_double_request_count", KEEL_METRIC_COUNTER,
                                                        "double_request_count", labels, 4, NULL, 0, NULL, 0);
    assert_non_null(f);
    /* idempotent */
    assert_ptr_equal(f, keel_metrics_family(reg, "istio_double_request_count", KEEL_METRIC_COUNTER, "x", labels, 4,
                                            NULL, 0, NULL, 0));
    /* conflict: other type */
    char err[128];
    assert_null(keel_metrics_family(reg, "istio_double_request_count", KEEL_METRIC_GAUGE, "x", labels, 4, NULL, 0,
                                    err, sizeof(err)));
    assert_non_null(strstr(err, "already defined"));
    struct keel_metrics_shard *sh = keel_metrics_shard_new(reg);
    struct keel_str server[] = { KEEL_STR("details-v1"), KEEL_STR("twice the fun!"), KEEL_STR("server"),
                                 KEEL_STR("productpage-v1") };
    struct keel_str client[] = { KEEL_STR("details-v1"), KEEL_STR("twice the fun!"), KEEL_STR("client"),
                                 KEEL_STR("productpage-v1") };
    for (int i = 0; i < 3; i++) {
        keel_metrics_add(sh, f, server, 2);
        keel_metrics_add(sh, f, client, 2);
    }
    char *s = scrape(reg);
    assert_string_equal(s,
                        "# HELP istio_double_request_count double_request_count\n"
                        "# TYPE istio_double_request_count counter\n"
                        "istio_double_request_count{destination=\"details-v1\",message=\"twice the fun!\","
                        "reporter=\"client\",source=\"productpage-v1\"} 6\n"
                        "istio_double_request_count{destination=\"details-v1\",message=\"twice the fun!\","
                        "reporter=\"server\",source=\"productpage-v1\"} 6\n");
    assert_int_equal(promtool(s), 0);
    free(s);
    keel_metrics_free(reg);
}

static void test_histogram_escape_gauge(void **state)
{
    (void)state;
    struct keel_metrics *reg = keel_metrics_new();
    const double b[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
    const char *l[] = { "reporter" };
    struct keel_metrics_family *h = keel_metrics_family(reg, "istio_request_duration_seconds", KEEL_METRIC_HISTOGRAM,
                                                        "request_duration_seconds", l, 1, b, 11, NULL, 0);
    const char *gl[] = { "path", "msg" };
    struct keel_metrics_family *g =
        keel_metrics_family(reg, "shop_note", KEEL_METRIC_GAUGE, "Free text \\ and\nnewline", gl, 2, NULL, 0, NULL, 0);
    struct keel_metrics_family *nolab =
        keel_metrics_family(reg, "a_total", KEEL_METRIC_COUNTER, "no labels", NULL, 0, NULL, 0, NULL, 0);
    assert_non_null(h);
    assert_non_null(g);
    assert_non_null(nolab);
    /* le is reserved */
    const char *bad[] = { "le" };
    assert_null(keel_metrics_family(reg, "x_hist", KEEL_METRIC_HISTOGRAM, "x", bad, 1, b, 11, NULL, 0));
    struct keel_metrics_shard *sh = keel_metrics_shard_new(reg);
    struct keel_metrics_shard *sh2 = keel_metrics_shard_new(reg);
    struct keel_str dst = KEEL_STR("destination");
    keel_metrics_observe(sh, h, &dst, 0.003);
    keel_metrics_observe(sh2, h, &dst, 0.02);
    keel_metrics_observe(sh, h, &dst, 0.3);
    keel_metrics_observe(sh, h, &dst, 0.005); /* le is inclusive */
    struct keel_str gv[] = { KEEL_STR("C:\\tmp"), KEEL_STR("say \"hi\"\nbye") };
    keel_metrics_set(sh, g, gv, 5);
    keel_metrics_set(sh2, g, gv, 1); /* the later set wins across shards */
    keel_metrics_add(sh2, nolab, NULL, 1);
    keel_metrics_add(sh2, nolab, NULL, -1); /* rejected, counted */
    char *s = scrape(reg);
    const char *want =
        "# HELP a_total no labels\n# TYPE a_total counter\na_total 1\n"
        "# HELP istio_request_duration_seconds request_duration_seconds\n"
        "# TYPE istio_request_duration_seconds histogram\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.005\"} 2\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.01\"} 2\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.025\"} 3\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.05\"} 3\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.1\"} 3\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.25\"} 3\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"0.5\"} 4\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"1\"} 4\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"2.5\"} 4\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"5\"} 4\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"10\"} 4\n"
        "istio_request_duration_seconds_bucket{reporter=\"destination\",le=\"+Inf\"} 4\n"
        "istio_request_duration_seconds_sum{reporter=\"destination\"} 0.328\n"
        "istio_request_duration_seconds_count{reporter=\"destination\"} 4\n"
        "# HELP keel_metrics_rejected_samples_total Samples rejected (negative or NaN counter increments).\n"
        "# TYPE keel_metrics_rejected_samples_total counter\n"
        "keel_metrics_rejected_samples_total{metric=\"a_total\"} 1\n"
        "# HELP shop_note Free text \\\\ and\\nnewline\n# TYPE shop_note gauge\n"
        "shop_note{path=\"C:\\\\tmp\",msg=\"say \\\"hi\\\"\\nbye\"} 1\n";
    assert_string_equal(s, want);
    assert_int_equal(promtool(s), 0);
    free(s);
    keel_metrics_free(reg);
}

static void test_variants_and_limit(void **state)
{
    (void)state;
    struct keel_metrics *reg = keel_metrics_new();
    keel_metrics_set_series_limit(reg, 2);
    const char *l1[] = { "a" }, *l2[] = { "a", "route_name" };
    struct keel_metrics_family *f1 = keel_metrics_family(reg, "x_total", KEEL_METRIC_COUNTER, "x", l1, 1, NULL, 0,
                                                         NULL, 0);
    struct keel_metrics_family *f2 = keel_metrics_family(reg, "x_total", KEEL_METRIC_COUNTER, "x", l2, 2, NULL, 0,
                                                         NULL, 0);
    assert_non_null(f1);
    assert_non_null(f2);
    assert_ptr_not_equal(f1, f2);
    struct keel_metrics_shard *sh = keel_metrics_shard_new(reg);
    struct keel_str v[] = { KEEL_STR("1"), KEEL_STR("r") };
    keel_metrics_add(sh, f1, v, 1);
    keel_metrics_add(sh, f2, v, 1);
    struct keel_str v2 = KEEL_STR("2"), v3 = KEEL_STR("3");
    keel_metrics_add(sh, f1, &v2, 1);
    keel_metrics_add(sh, f1, &v3, 1); /* third series: over the limit */
    keel_metrics_add(sh, f1, &v3, 1);
    char *s = scrape(reg);
    assert_string_equal(s, "# HELP keel_metrics_series_overflow_total Updates dropped because a metric reached its "
                           "series limit.\n# TYPE keel_metrics_series_overflow_total counter\n"
                           "keel_metrics_series_overflow_total{metric=\"x_total\"} 2\n"
                           "# HELP x_total x\n# TYPE x_total counter\n"
                           "x_total{a=\"1\"} 1\nx_total{a=\"2\"} 1\nx_total{a=\"1\",route_name=\"r\"} 1\n");
    assert_int_equal(promtool(s), 0);
    free(s);
    keel_metrics_free(reg);
}

/* Series not updated for max_age are dropped (and may come back); the others stay. */
static void test_expiry(void **state)
{
    (void)state;
    struct keel_metrics *reg = keel_metrics_new();
    const char *l[] = { "k" };
    struct keel_metrics_family *c = keel_metrics_family(reg, "c_total", KEEL_METRIC_COUNTER, "c", l, 1, NULL, 0,
                                                        NULL, 0);
    double bounds[] = { 1, 10 };
    struct keel_metrics_family *h = keel_metrics_family(reg, "h", KEEL_METRIC_HISTOGRAM, "h", l, 1, bounds, 2,
                                                        NULL, 0);
    struct keel_metrics_shard *sh = keel_metrics_shard_new(reg);
    struct keel_str old = KEEL_STR("old"), fresh = KEEL_STR("fresh");
    keel_metrics_shard_tick(sh, 1000);
    keel_metrics_add(sh, c, &old, 1);
    keel_metrics_observe(sh, h, &old, 5);
    for (int i = 0; i < 40; i++) { /* enough to grow the table past its first size */
        char name[8];
        snprintf(name, sizeof(name), "n%d", i);
        struct keel_str v = keel_str_c(name);
        keel_metrics_add(sh, c, &v, 1);
    }
    keel_metrics_shard_tick(sh, 5000);
    keel_metrics_add(sh, c, &fresh, 2);
    assert_int_equal(keel_metrics_shard_expire(sh, 3000), 42); /* old in c and h, n0..n39 */
    char *s = scrape(reg);
    assert_string_equal(s, "# HELP c_total c\n# TYPE c_total counter\nc_total{k=\"fresh\"} 2\n");
    free(s);
    /* the survivor is still found (the table was rebuilt), an expired one starts over */
    keel_metrics_add(sh, c, &fresh, 1);
    keel_metrics_add(sh, c, &old, 1);
    s = scrape(reg);
    assert_string_equal(s, "# HELP c_total c\n# TYPE c_total counter\nc_total{k=\"fresh\"} 3\n"
                           "c_total{k=\"old\"} 1\n");
    free(s);
    keel_metrics_free(reg);
}

/* 2 writers x 100k while a third thread scrapes: sums exact */
struct writer {
    struct keel_metrics *reg;
    struct keel_metrics_family *c, *h;
    int id;
};

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    struct keel_metrics_shard *sh = keel_metrics_shard_new(w->reg);
    char lab[16];
    for (int i = 0; i < 100000; i++) {
        snprintf(lab, sizeof(lab), "s%d", i % 50); /* series appear while the scraper runs */
        struct keel_str v = keel_str_c(lab);
        keel_metrics_add(sh, w->c, &v, 1);
        keel_metrics_observe(sh, w->h, &v, (double)(i % 7));
    }
    keel_buf_pool_drain();
    return NULL;
}

static volatile int stop_scraper;
static void *scrape_loop(void *arg)
{
    struct keel_metrics *reg = arg;
    int n = 0;
    while (!stop_scraper || n == 0) {
        struct keel_buf b = { 0 };
        keel_metrics_scrape(reg, &b);
        keel_buf_release(&b);
        n++;
    }
    keel_buf_pool_drain();
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    struct keel_metrics *reg = keel_metrics_new();
    const char *l[] = { "s" };
    const double b[] = { 1, 2, 5 };
    struct keel_metrics_family *c = keel_metrics_family(reg, "c_total", KEEL_METRIC_COUNTER, "c", l, 1, NULL, 0, NULL, 0);
    struct keel_metrics_family *h = keel_metrics_family(reg, "h", KEEL_METRIC_HISTOGRAM, "h", l, 1, b, 3, NULL, 0);
    struct writer w[2] = { { reg, c, h, 0 }, { reg, c, h, 1 } };
    pthread_t t[3];
    stop_scraper = 0;
    pthread_create(&t[2], NULL, scrape_loop, reg);
    pthread_create(&t[0], NULL, write_loop, &w[0]);
    pthread_create(&t[1], NULL, write_loop, &w[1]);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    stop_scraper = 1;
    pthread_join(t[2], NULL);
    double total = 0, htotal = 0;
    for (int i = 0; i < 50; i++) {
        char lab[16];
        snprintf(lab, sizeof(lab), "s%d", i);
        struct keel_str v = keel_str_c(lab);
        double x;
        assert_int_equal(keel_metrics_get(reg, "c_total", &v, 1, &x), 0);
        assert_true(x == 4000); /* 2 x 100000 / 50 */
        total += x;
        assert_int_equal(keel_metrics_get(reg, "h", &v, 1, &x), 0);
        htotal += x;
    }
    assert_true(total == 200000);
    assert_true(htotal == 200000);
    char *s = scrape(reg);
    assert_int_equal(promtool(s), 0);
    free(s);
    keel_metrics_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_float),
        cmocka_unit_test(test_counter_exposition),
        cmocka_unit_test(test_histogram_escape_gauge),
        cmocka_unit_test(test_variants_and_limit),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_expiry),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    keel_buf_pool_drain();
    return rc;
}
