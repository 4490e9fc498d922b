/* Istio parity of the telemetry plan: one definition per metric family, customMetric,
 * reportingInterval, singular targetRef scoping, Envoy's `le` text, and the Telemetry
 * API's access-log plan (providers, defaultProviders, match.mode, disabled, filter). */
#include "telemetry/engine.h"

#include "config/config.h"
#include "core/buf.h"
#include "expr/expr.h"
#include "telemetry/metrics.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static struct keel_config *load_yaml(const char *yaml)
{
    struct keel_config_source s = { "t.yaml", yaml, strlen(yaml) };
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_load_sources(&s, 1, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    keel_diag_fini(&d);
    assert_non_null(cfg);
    return cfg;
}

static char *scrape(struct keel_metrics *reg)
{
    struct keel_buf b = { 0 };
    keel_metrics_scrape(reg, &b);
    char *s = b.data ? strndup(keel_buf_rptr(&b), keel_buf_len(&b)) : strdup("");
    keel_buf_release(&b);
    return s;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static bool diag_has(const struct keel_diag *d, const char *what)
{
    for (size_t i = 0; i < d->n; i++)
        if (strstr(d->msgs[i], what))
            return true;
    return false;
}

static void request_bag(struct keel_attr_bag *bag, bool outbound, int code)
{
    keel_attr_bag_clear(bag);
    struct keel_value v = keel_value_str(outbound ? "outbound" : "inbound", outbound ? 8 : 7);
    keel_attr_bag_set(bag, KEEL_ATTR_CONTEXT_REPORTER_KIND, &v);
    v = keel_value_str("http", 4);
    keel_attr_bag_set(bag, KEEL_ATTR_CONTEXT_PROTOCOL, &v);
    v = keel_value_int(code);
    keel_attr_bag_set(bag, KEEL_ATTR_RESPONSE_CODE, &v);
    v = keel_value_duration(2500000000LL); /* 2.5 s: lands in le="5000" */
    keel_attr_bag_set(bag, KEEL_ATTR_RESPONSE_DURATION, &v);
}

struct plan {
    struct keel_metrics *reg;
    struct keel_telemetry *t;
    struct keel_telemetry_shard *sh;
    struct keel_diag d;
};

static void plan(struct plan *p, const char *yaml, const struct keel_telemetry_workload *self)
{
    struct keel_config *cfg = load_yaml(yaml);
    p->reg = keel_metrics_new();
    keel_diag_init(&p->d);
    p->t = keel_telemetry_new(cfg, p->reg, self, &p->d);
    keel_config_unref(cfg);
    p->sh = keel_telemetry_shard_new(p->reg);
}

static void plan_free(struct plan *p)
{
    keel_telemetry_shard_free(p->sh);
    keel_telemetry_free(p->t);
    keel_metrics_free(p->reg);
    keel_diag_fini(&p->d);
}

static const char REQUESTCOUNT[] =
    "apiVersion: config.istio.io/v1alpha2\nkind: metric\nmetadata: {name: requestcount, namespace: istio-system}\n"
    "spec:\n  value: \"1\"\n  dimensions:\n    code: response.code\n"
    "---\napiVersion: config.istio.io/v1alpha2\nkind: prometheus\nmetadata: {name: handler, namespace: istio-system}\n"
    "spec:\n  metrics:\n  - name: requests_total\n    instance_name: requestcount.metric.istio-system\n"
    "    kind: COUNTER\n    label_names: [code]\n"
    "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: promhttp, namespace: istio-system}\n"
    "spec:\n  actions:\n  - handler: handler.prometheus\n    instances: [requestcount.metric]\n";

/* Mixer's default requestcount beside the standard metrics: dropped with a warning at
 * its file:line:col, and a request counts once in istio_requests_total. */
static void test_mixer_requestcount_not_double(void **state)
{
    (void)state;
    struct plan p;
    plan(&p, REQUESTCOUNT, NULL);
    assert_true(diag_has(&p.d, "t.yaml:"));
    assert_true(diag_has(&p.d, "istio_requests_total is a standard metric of this proxy"));
    struct keel_attr_bag bag;
    request_bag(&bag, true, 200);
    keel_telemetry_report(p.t, p.sh, &bag);
    char *s = scrape(p.reg);
    assert_int_equal(count(s, "\nistio_requests_total{"), 1);
    assert_non_null(strstr(s, "response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\","
                           "connection_security_policy=\"unknown\"} 1\n"));
    assert_null(strstr(s, "istio_requests_total{code="));
    free(s);
    plan_free(&p);
}

/* With the standard metrics off (no prometheus provider), the Mixer metric may have it. */
static void test_mixer_requestcount_when_standard_off(void **state)
{
    (void)state;
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), "%s---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
                                 "metadata: {name: m, namespace: istio-system}\n"
                                 "spec:\n  metrics:\n  - providers: [{name: other}]\n", REQUESTCOUNT);
    struct plan p;
    plan(&p, yaml, NULL);
    assert_false(diag_has(&p.d, "is a standard metric"));
    struct keel_attr_bag bag;
    request_bag(&bag, true, 200);
    keel_telemetry_report(p.t, p.sh, &bag);
    char *s = scrape(p.reg);
    assert_non_null(strstr(s, "istio_requests_total{code=\"200\"} 1\n"));
    free(s);
    plan_free(&p);
}

/* Two handlers defining one family: a load error (never two writers of one family). */
static void test_two_handlers_one_family(void **state)
{
    (void)state;
    const char *yaml =
        "apiVersion: config.istio.io/v1alpha2\nkind: metric\nmetadata: {name: a, namespace: istio-system}\n"
        "spec:\n  value: \"1\"\n  dimensions:\n    code: response.code\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: metric\nmetadata: {name: b, namespace: istio-system}\n"
        "spec:\n  value: \"1\"\n  dimensions:\n    code: response.code\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: prometheus\nmetadata: {name: h1, namespace: istio-system}\n"
        "spec:\n  metrics:\n  - name: hits\n    instance_name: a.metric.istio-system\n    kind: COUNTER\n"
        "    label_names: [code]\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: prometheus\nmetadata: {name: h2, namespace: istio-system}\n"
        "spec:\n  metrics:\n  - name: hits\n    instance_name: b.metric.istio-system\n    kind: COUNTER\n"
        "    label_names: [code]\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r, namespace: istio-system}\n"
        "spec:\n  actions:\n  - handler: h1.prometheus\n    instances: [a.metric]\n"
        "  - handler: h2.prometheus\n    instances: [b.metric]\n";
    /* the loader refuses it, naming both places */
    struct keel_config_source src = { "t.yaml", yaml, strlen(yaml) };
    struct keel_diag d;
    keel_diag_init(&d);
    assert_null(keel_config_load_sources(&src, 1, &d));
    assert_true(diag_has(&d, "t.yaml:32:5: error: Prometheus metric \"istio_hits\" defined twice (first at t.yaml:22:5)"));
    keel_diag_fini(&d);
}

static void test_custom_metric_and_le(void **state)
{
    (void)state;
    struct plan p;
    plan(&p, "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: m, namespace: istio-system}\n"
             "spec:\n  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n"
             "    - match: {customMetric: requests_total}\n      disabled: true\n"
             "    - match: {customMetric: no_such_metric}\n      disabled: true\n",
         NULL);
    assert_true(diag_has(&p.d, "customMetric \"no_such_metric\" names no metric of this proxy"));
    struct keel_attr_bag bag;
    request_bag(&bag, true, 200);
    keel_telemetry_report(p.t, p.sh, &bag);
    char *s = scrape(p.reg);
    assert_null(strstr(s, "istio_requests_total{"));
    /* the other metrics stay, with Envoy's bucket text */
    assert_non_null(strstr(s, "connection_security_policy=\"unknown\",le=\"0.5\"} 0\n"));
    assert_non_null(strstr(s, "connection_security_policy=\"unknown\",le=\"5000\"} 1\n"));
    assert_non_null(strstr(s, "connection_security_policy=\"unknown\",le=\"1800000\"} 1\n"));
    assert_non_null(strstr(s, "connection_security_policy=\"unknown\",le=\"3600000\"} 1\n"));
    assert_null(strstr(s, "e+06"));
    free(s);
    plan_free(&p);
}

static void test_reporting_interval(void **state)
{
    (void)state;
    struct plan p;
    plan(&p, "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n", NULL);
    assert_int_equal(keel_telemetry_reporting_interval_ms(p.t), 5000);
    plan_free(&p);
    const struct keel_config_kv app = { "app", "db", { 0 } };
    struct keel_telemetry_workload db = { "db-v1", "default", &app, 1, NULL };
    const char *yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: m, namespace: istio-system}\n"
                       "spec:\n  metrics:\n  - reportingInterval: 10s\n"
                       "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: w, namespace: default}\n"
                       "spec:\n  selector: {matchLabels: {app: db}}\n  metrics:\n  - reportingInterval: 2s\n";
    plan(&p, yaml, &db);
    assert_int_equal(keel_telemetry_reporting_interval_ms(p.t), 2000);
    plan_free(&p);
    struct keel_telemetry_workload other = { "x", "default", NULL, 0, NULL };
    plan(&p, yaml, &other);
    assert_int_equal(keel_telemetry_reporting_interval_ms(p.t), 10000);
    plan_free(&p);
}

/* A singular targetRef applies to its Gateway only, not to the namespace's sidecars. */
static void test_singular_target_ref_scope(void **state)
{
    (void)state;
    const char *yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: default}\n"
                       "spec:\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: wp}\n"
                       "  metrics:\n  - overrides: [{disabled: true}]\n";
    struct keel_telemetry_workload sidecar = { "x", "default", NULL, 0, NULL };
    struct keel_telemetry_workload waypoint = { "wp", "default", NULL, 0, "wp" };
    struct keel_attr_bag bag;
    request_bag(&bag, true, 200);
    struct plan p;
    plan(&p, yaml, &sidecar);
    keel_telemetry_report(p.t, p.sh, &bag);
    char *s = scrape(p.reg);
    assert_non_null(strstr(s, "istio_requests_total{"));
    free(s);
    plan_free(&p);
    plan(&p, yaml, &waypoint);
    keel_telemetry_report(p.t, p.sh, &bag);
    s = scrape(p.reg);
    assert_null(strstr(s, "istio_requests_total{"));
    free(s);
    plan_free(&p);
}

static const char MESH[] =
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n"
    "    accessLogFile: /tmp/envoy.log\n"
    "%s"
    "    extensionProviders:\n"
    "    - name: text\n      envoyFileAccessLog:\n        path: /tmp/text.log\n"
    "        logFormat: {text: \"%%RESPONSE_CODE%%\\n\"}\n"
    "    - name: json\n      envoyFileAccessLog:\n        path: /tmp/json.log\n"
    "        logFormat: {labels: {code: \"%%RESPONSE_CODE%%\", p: \"%%REQ(:PATH)%%\"}}\n"
    "---\n";

static size_t logs(const char *defaults, const char *telemetry, const struct keel_telemetry_workload *self,
                   struct keel_telemetry_log *out, bool *configured, struct keel_buf *json, struct keel_diag *d)
{
    char yaml[8192];
    int n = snprintf(yaml, sizeof(yaml), MESH, defaults);
    snprintf(yaml + n, sizeof(yaml) - (size_t)n, "%s", telemetry);
    struct keel_config *cfg = load_yaml(yaml);
    keel_diag_init(d);
    size_t r = keel_telemetry_access_logs(cfg, self, out, configured, json, d);
    keel_config_unref(cfg); /* the strings live in cfg: the tests below only compare before this */
    return r;
}

static void test_access_log_plan(void **state)
{
    (void)state;
    struct keel_telemetry_log l[KEEL_TELEMETRY_MAX_LOGS];
    struct keel_buf json = { 0 };
    struct keel_diag d;
    bool configured;
    struct keel_telemetry_workload self = { "x", "default", NULL, 0, NULL };
    /* nothing said: the legacy accessLogFile alone */
    assert_int_equal(logs("", "", &self, l, &configured, &json, &d), 0);
    assert_false(configured);
    keel_diag_fini(&d);
    /* defaultProviders.accessLogging: both sides, no filter */
    assert_int_equal(logs("    defaultProviders: {accessLogging: [envoy]}\n", "", &self, l, &configured, &json, &d), 2);
    assert_true(configured);
    assert_true(l[0].client && !l[1].client);
    assert_null(l[0].filter);
    assert_int_equal(l[0].encoding, KEEL_ACCESSLOG_TEXT);
    keel_diag_fini(&d);
    /* a namespace Telemetry: CLIENT only, with a filter; JSON labels; disabled removes */
    const char *tel = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: default}\n"
                      "spec:\n  accessLogging:\n  - providers: [{name: text}]\n    match: {mode: CLIENT}\n"
                      "    filter: {expression: \"response.code >= 400\"}\n"
                      "  - providers: [{name: json}]\n    match: {mode: SERVER}\n"
                      "  - disabled: true\n";
    size_t n = logs("    defaultProviders: {accessLogging: [envoy]}\n", tel, &self, l, &configured, &json, &d);
    assert_int_equal(n, 2); /* envoy (the default) disabled on both sides */
    assert_true(l[0].client);
    assert_non_null(l[0].filter);
    assert_int_equal(l[0].encoding, KEEL_ACCESSLOG_TEXT);
    assert_false(l[1].client);
    assert_null(l[1].filter);
    assert_int_equal(l[1].encoding, KEEL_ACCESSLOG_JSON);
    assert_string_equal(l[1].format, "{\"code\":\"%RESPONSE_CODE%\",\"p\":\"%REQ(:PATH)%\"}");
    keel_diag_fini(&d);
    /* another namespace: the Telemetry does not apply */
    struct keel_telemetry_workload other = { "y", "shop", NULL, 0, NULL };
    assert_int_equal(logs("    defaultProviders: {accessLogging: [envoy]}\n", tel, &other, l, &configured, &json, &d),
                     2);
    assert_null(l[0].filter);
    keel_diag_fini(&d);
    /* an undefined provider: warned, nothing logged for it */
    const char *bad = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: default}\n"
                      "spec:\n  accessLogging:\n  - providers: [{name: text}]\n";
    assert_int_equal(logs("", bad, &self, l, &configured, &json, &d), 2);
    assert_true(configured);
    keel_diag_fini(&d);
    keel_buf_release(&json);
}

/* The filter compiled at load decides per bag: only errors pass response.code >= 400. */
static void test_access_log_filter_eval(void **state)
{
    (void)state;
    struct keel_telemetry_log l[KEEL_TELEMETRY_MAX_LOGS];
    struct keel_buf json = { 0 };
    struct keel_diag d;
    bool configured;
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), MESH, "");
    strcat(yaml, "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: istio-system}\n"
                 "spec:\n  accessLogging:\n  - providers: [{name: envoy}]\n"
                 "    filter: {expression: \"response.code >= 400\"}\n");
    struct keel_config *cfg = load_yaml(yaml);
    keel_diag_init(&d);
    assert_int_equal(keel_telemetry_access_logs(cfg, NULL, l, &configured, &json, &d), 2);
    assert_string_equal(l[0].path, "/tmp/envoy.log"); /* "envoy": the mesh's accessLogFile */
    struct keel_attr_bag bag;
    struct keel_value v;
    request_bag(&bag, true, 200);
    assert_int_equal(keel_expr_eval(l[0].filter, &bag, &v, NULL), 0);
    assert_false(v.u.b);
    request_bag(&bag, true, 503);
    assert_int_equal(keel_expr_eval(l[0].filter, &bag, &v, NULL), 0);
    assert_true(v.u.b);
    keel_diag_fini(&d);
    keel_buf_release(&json);
    keel_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixer_requestcount_not_double),
        cmocka_unit_test(test_mixer_requestcount_when_standard_off),
        cmocka_unit_test(test_two_handlers_one_family),
        cmocka_unit_test(test_custom_metric_and_le),
        cmocka_unit_test(test_reporting_interval),
        cmocka_unit_test(test_singular_target_ref_scope),
        cmocka_unit_test(test_access_log_plan),
        cmocka_unit_test(test_access_log_filter_eval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
