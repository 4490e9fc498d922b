/* Micro-benchmark of keel_expr_eval on the seed expressions (docs/PERFORMANCE.md,
 * "Expression evaluation"). Plain C: compile once, evaluate N times over a bag like the
 * proxy's, report the best of 5 runs in ns per evaluation. Usage: expr_bench [N]. */
#include "expr/expr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static volatile int64_t sink;

static double bench(const char *src, enum keel_expr_dialect d, const struct keel_attr_bag *bag, long n,
                    const char *bar_label, double bar)
{
    struct keel_expr_error err;
    struct keel_expr *e = keel_expr_compile(src, strlen(src), d, &err);
    if (!e) {
        fprintf(stderr, "compile %s: col %d: %s\n", src, err.col, err.msg);
        exit(2);
    }
    double best = 1e18;
    for (int run = 0; run < 5; run++) {
        struct keel_value v;
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            keel_expr_eval(e, bag, &v, NULL);
            sink += v.type;
        }
        double per = (now_ns() - t0) / (double)n;
        if (per < best)
            best = per;
    }
    printf("%8.1f ns/eval  %-4s %s%s%s\n", best, d == KEEL_EXPR_CEL ? "CEL" : "CEXL", src, bar_label ? "  " : "",
           bar_label ? bar_label : "");
    keel_expr_free(e);
    return bar > 0 && best > bar ? 1 : 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 5000000;
    static struct keel_attr_bag bag;
    keel_attr_bag_clear(&bag);
    static const struct keel_str_pair labels[] = {
        { KEEL_STR("app"), KEEL_STR("productpage") },
        { KEEL_STR("pod-template-hash"), KEEL_STR("6b746f74dc") },
        { KEEL_STR("version"), KEEL_STR("v1") },
    };
    struct keel_value v;
    /* labels present but without "app" in the second bag below: the fallback path */
    v = keel_value_map(labels, 3);
    keel_attr_bag_set(&bag, KEEL_ATTR_SOURCE_LABELS, &v);
    v = keel_value_str("productpage-v1", 14);
    keel_attr_bag_set(&bag, KEEL_ATTR_SOURCE_WORKLOAD_NAME, &v);
    v = keel_value_str("GET", 3);
    keel_attr_bag_set(&bag, KEEL_ATTR_REQUEST_METHOD, &v);
    v = keel_value_str("/healthz", 8);
    keel_attr_bag_set(&bag, KEEL_ATTR_REQUEST_URL_PATH, &v);
    v = keel_value_str("outbound", 8);
    keel_attr_bag_set(&bag, KEEL_ATTR_CONTEXT_REPORTER_KIND, &v);
    v = keel_value_int(200);
    keel_attr_bag_set(&bag, KEEL_ATTR_RESPONSE_CODE, &v);
    v = keel_value_duration(157830203);
    keel_attr_bag_set(&bag, KEEL_ATTR_RESPONSE_DURATION, &v);
    v = keel_value_str("details", 7);
    keel_attr_bag_set(&bag, KEEL_ATTR_DESTINATION_SERVICE_NAME, &v);

    static struct keel_attr_bag bag2; /* no labels: falls through to workload name */
    bag2 = bag;
    keel_attr_bag_del(&bag2, KEEL_ATTR_SOURCE_LABELS);

    int over = 0;
    printf("keel expression VM, best of 5 x %ld evaluations, one thread\n", n);
    over += bench("source.labels[\"app\"] | source.workload.name | \"unknown\"", KEEL_EXPR_CEXL, &bag, n,
                  "(bar < 50 ns)", 50);
    over += bench("source.labels[\"app\"] | source.workload.name | \"unknown\"", KEEL_EXPR_CEXL, &bag2, n,
                  "(labels absent; bar < 50 ns)", 50);
    over += bench("request.method == 'GET' && request.url_path == '/healthz'", KEEL_EXPR_CEL, &bag, n,
                  "(bar < 30 ns)", 30);
    bench("conditional((context.reporter.kind | \"inbound\") == \"outbound\", \"client\", \"server\")", KEEL_EXPR_CEXL,
          &bag, n, NULL, 0);
    bench("response.duration | \"0ms\"", KEEL_EXPR_CEXL, &bag, n, NULL, 0);
    bench("destination.service.name==\"details\"", KEEL_EXPR_CEXL, &bag, n, NULL, 0);
    bench("response.code | 0", KEEL_EXPR_CEXL, &bag, n, NULL, 0);
    if (over)
        printf("%d expression(s) above their bar\n", over);
    return over ? 1 : 0;
}
