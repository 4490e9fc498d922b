/* The tracing plan from Istio config: mesh defaults, extensionProviders zipkin with
 * defaultProviders.tracing, and Telemetry tracing[] with root < namespace < workload
 * precedence per match.mode. */
#include "../config/config_test.h"
#include "tracing/tracing.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

static const char MESH[] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                           "data:\n  mesh: |-\n";

static struct keel_trace_plan *plan_of(const char *yaml, const char *ns, const char *app,
                                       struct keel_config **cfg)
{
    struct keel_diag d;
    *cfg = load_str("t.yaml", yaml, &d);
    if (*cfg == NULL)
        fail_msg("config: %s", d.n ? d.msgs[0] : "?");
    keel_diag_fini(&d);
    static struct keel_config_kv labels[2];
    labels[0] = (struct keel_config_kv){ .key = "app", .value = app };
    labels[1] = (struct keel_config_kv){ .key = "version", .value = "v2" };
    struct keel_trace_plan_input in = { .cfg = *cfg, .ns = ns, .name = "w-1", .labels = labels,
                                        .n_labels = app ? 2 : 0, .ip = "10.0.0.5" };
    return keel_trace_plan_new(&in, NULL);
}

static void defaults(void **state)
{
    struct keel_config *cfg;
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "%s    enableTracing: true\n", MESH);
    struct keel_trace_plan *p = plan_of(yaml, "default", "reviews", &cfg);
    assert_true(p->enabled);
    assert_true(p->mode[0].sampling == 1.0 && p->mode[1].sampling == 1.0); /* Istio's 1 % */
    assert_string_equal(p->collector, "zipkin.istio-system:9411");
    assert_false(p->addr_ok); /* not in the registry: context flows, no spans */
    assert_false(p->mode[0].report);
    assert_string_equal(p->id.service_name, "reviews.default");
    assert_string_equal(p->id.canonical_service, "reviews");
    assert_string_equal(p->id.canonical_revision, "v2");
    assert_string_equal(p->id.node_id, "sidecar~10.0.0.5~w-1.default~default.svc.cluster.local");
    assert_string_equal(p->path, "/api/v2/spans");
    keel_trace_plan_free(p);
    keel_config_unref(cfg);
    /* no app label: the workload name */
    snprintf(yaml, sizeof(yaml), "%s    enableTracing: false\n    defaultConfig:\n      tracing:\n"
                                 "        sampling: 25\n        zipkin: {address: '127.0.0.1:9411'}\n", MESH);
    p = plan_of(yaml, "shop", NULL, &cfg);
    assert_false(p->enabled);
    assert_true(p->addr_ok && p->mode[1].report && p->mode[1].sampling == 25);
    assert_string_equal(p->id.service_name, "w-1.shop");
    keel_trace_plan_free(p);
    keel_config_unref(cfg);
}

static const char TELEMETRY[] =
    "    defaultProviders: {tracing: [zk]}\n"
    "    extensionProviders:\n"
    "    - name: zk\n      zipkin: {service: 127.0.0.1, port: 9411, maxTagLength: 64}\n"
    "    - name: zk2\n      zipkin: {service: 127.0.0.2, port: 9412, path: /v2/spans, enable64bitTraceId: true}\n"
    "    - name: otel\n      opentelemetry: {service: otel.x, port: 4317}\n"
    "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\n"
    "spec:\n  tracing:\n  - randomSamplingPercentage: 10\n    customTags:\n"
    "      team: {literal: {value: core}}\n      home: {environment: {name: KEEL_TEST_NO_SUCH_VAR, defaultValue: none}}\n"
    "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: ns, namespace: shop}\n"
    "spec:\n  tracing:\n  - match: {mode: SERVER}\n    randomSamplingPercentage: 50\n"
    "    customTags: {team: {literal: {value: shop}}, ua: {header: {name: user-agent, defaultValue: none}}}\n"
    "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: wl, namespace: shop}\n"
    "spec:\n  selector: {matchLabels: {app: cart}}\n  tracing:\n  - providers: [{name: zk2}]\n"
    "    match: {mode: CLIENT}\n    disableSpanReporting: true\n";

static void telemetry_precedence(void **state)
{
    struct keel_config *cfg;
    char yaml[4096];
    snprintf(yaml, sizeof(yaml), "%s%s", MESH, TELEMETRY);
    /* root only */
    struct keel_trace_plan *p = plan_of(yaml, "default", "reviews", &cfg);
    assert_true(p->enabled && p->addr_ok);
    assert_string_equal(p->collector, "127.0.0.1:9411");
    assert_int_equal(p->max_tag_len, 64);
    assert_true(p->mode[KEEL_TRACE_CLIENT].sampling == 10 && p->mode[KEEL_TRACE_SERVER].sampling == 10);
    assert_int_equal(p->mode[KEEL_TRACE_SERVER].n_tags, 2);
    assert_string_equal(p->mode[KEEL_TRACE_SERVER].tags[0].value, "core");
    assert_string_equal(p->mode[KEEL_TRACE_SERVER].tags[1].value, "none"); /* env unset: default */
    keel_trace_plan_free(p);
    keel_config_unref(cfg);
    /* namespace over root, SERVER only; a tag of the same name is replaced */
    p = plan_of(yaml, "shop", "reviews", &cfg);
    assert_true(p->mode[KEEL_TRACE_CLIENT].sampling == 10 && p->mode[KEEL_TRACE_SERVER].sampling == 50);
    const struct keel_trace_mode *m = &p->mode[KEEL_TRACE_SERVER];
    assert_int_equal(m->n_tags, 3);
    assert_string_equal(m->tags[0].value, "shop");
    assert_int_equal(m->tags[2].kind, KEEL_TRACE_TAG_HEADER);
    assert_string_equal(m->tags[2].header, "user-agent");
    assert_string_equal(p->mode[KEEL_TRACE_CLIENT].tags[0].value, "core");
    assert_true(p->mode[KEEL_TRACE_CLIENT].report);
    keel_trace_plan_free(p);
    keel_config_unref(cfg);
    /* the workload's own: provider zk2 and no CLIENT spans */
    p = plan_of(yaml, "shop", "cart", &cfg);
    assert_string_equal(p->collector, "127.0.0.2:9412");
    assert_string_equal(p->path, "/v2/spans");
    assert_true(p->trace64);
    assert_false(p->mode[KEEL_TRACE_CLIENT].report);
    assert_true(p->mode[KEEL_TRACE_SERVER].report);
    keel_trace_plan_free(p);
    keel_config_unref(cfg);
    /* a provider that is not zipkin: no spans (a warning), context still propagated */
    snprintf(yaml, sizeof(yaml), "%s    defaultProviders: {tracing: [otel]}\n%s", MESH,
             strstr(TELEMETRY, "    extensionProviders:"));
    struct keel_diag d;
    cfg = load_str("t.yaml", yaml, &d);
    if (cfg == NULL)
        fail_msg("config: %s", d.n ? d.msgs[0] : "?");
    keel_diag_fini(&d);
    keel_diag_init(&d);
    struct keel_trace_plan_input in = { .cfg = cfg, .ns = "default" };
    p = keel_trace_plan_new(&in, &d);
    assert_true(p->enabled);
    assert_false(p->mode[0].report || p->mode[1].report);
    assert_true(d.n >= 1 && strstr(d.msgs[0], "otel") != NULL);
    keel_diag_fini(&d);
    keel_trace_plan_free(p);
    keel_config_unref(cfg);
}

static void seed003_mesh(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_seed("003-tracing-mesh.yaml", &d);
    assert_non_null(cfg);
    keel_diag_fini(&d);
    struct keel_trace_plan_input in = { .cfg = cfg, .ns = "default" };
    struct keel_trace_plan *p = keel_trace_plan_new(&in, NULL);
    assert_true(p->enabled && p->mode[0].sampling == 100 && p->mode[1].sampling == 100);
    assert_string_equal(p->collector, "tracing-collector.tracing:9411");
    keel_trace_plan_free(p);
    keel_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed003_mesh),
        cmocka_unit_test(defaults),
        cmocka_unit_test(telemetry_precedence),
    };
    return cmocka_run_group_tests_name("tracing/plan", tests, NULL, NULL);
}
