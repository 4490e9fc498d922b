/* Telemetry API fields the loader binds for the parity work: the singular targetRef is a
 * one-element targetRefs (never namespace-wide), customTags accept formatter, and
 * accessLogging's filter is CEL compiled at load (a bad one is a load error). */
#include "config_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static const char *HEAD = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
                          "metadata: {name: t, namespace: default}\nspec:\n";

static struct keel_config *load(const char *spec, struct keel_diag *d)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf), "%s%s", HEAD, spec);
    return load_str("t.yaml", buf, d);
}

static const struct keel_config_telemetry *first(const struct keel_config *cfg)
{
    return (const struct keel_config_telemetry *)cfg->first[KEEL_CONFIG_TELEMETRY];
}

static void test_singular_target_ref(void **state)
{
    (void)state;
    struct keel_diag d;
    struct keel_config *cfg = load("  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"
                                   "  metrics: [{overrides: [{disabled: true}]}]\n", &d);
    assert_non_null(cfg);
    const struct keel_config_telemetry *t = first(cfg);
    assert_int_equal(t->n_target_refs, 1);
    assert_string_equal(t->target_refs[0].kind, "Gateway");
    assert_string_equal(t->target_refs[0].name, "gw");
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    cfg = load("  targetRef: {kind: Gateway, name: gw}\n  targetRefs: [{kind: Gateway, name: gw}]\n", &d);
    assert_null(cfg);
    assert_non_null(strstr(d.msgs[0], "targetRef and targetRefs are mutually exclusive"));
    keel_diag_fini(&d);
    cfg = load("  targetRefs: [{kind: Gateway, name: gw}]\n  targetRef: {kind: Gateway, name: gw}\n", &d);
    assert_null(cfg);
    assert_non_null(strstr(d.msgs[0], "targetRef and targetRefs are mutually exclusive"));
    keel_diag_fini(&d);
}

static void test_custom_tag_formatter_accepted(void **state)
{
    (void)state;
    struct keel_diag d;
    struct keel_config *cfg = load("  tracing:\n  - customTags:\n      path: {formatter: {value: \"%REQ(:PATH)%\"}}\n"
                                   "      lit: {literal: {value: x}}\n", &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    assert_non_null(cfg);
    assert_int_equal(first(cfg)->tracing[0].n_custom_tags, 2);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void test_access_logging_fields(void **state)
{
    (void)state;
    struct keel_diag d;
    struct keel_config *cfg = load("  accessLogging:\n  - providers: [{name: envoy}]\n    match: {mode: CLIENT}\n"
                                   "    filter: {expression: \"response.code >= 400\"}\n"
                                   "  - disabled: true\n", &d);
    assert_non_null(cfg);
    const struct keel_config_telemetry *t = first(cfg);
    assert_int_equal(t->n_access_logging, 2);
    assert_int_equal(t->access_logging[0].mode, KEEL_CONFIG_MODE_CLIENT);
    assert_non_null(t->access_logging[0].filter.compiled);
    assert_int_equal(t->access_logging[1].disabled, 1);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    cfg = load("  accessLogging:\n  - filter: {expression: \"response.code >=\"}\n", &d);
    assert_null(cfg); /* compiled at load: a broken filter does not load */
    keel_diag_fini(&d);
    cfg = load("  metrics:\n  - overrides:\n    - match: {customMetric: requests_total}\n      disabled: true\n", &d);
    assert_non_null(cfg);
    assert_string_equal(first(cfg)->metrics[0].overrides[0].custom_metric, "requests_total");
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_singular_target_ref),
        cmocka_unit_test(test_custom_tag_formatter_accepted),
        cmocka_unit_test(test_access_logging_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
