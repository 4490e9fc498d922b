/* Each broken config yields exactly the expected FILE:LINE:COL: error: MESSAGE. */
#include "config_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>

#define MIXER "apiVersion: config.istio.io/v1alpha2\n"
#define META "metadata:\n  name: m\n  namespace: istio-system\n"
/* a valid metric + prometheus handler used by reference cases (lines 1-19) */
#define BASE                                                                                              \
    MIXER "kind: metric\n" META "spec:\n  value: \"1\"\n  dimensions:\n    source: source.workload.name | \"unknown\"\n" \
          "---\n" MIXER "kind: prometheus\n" "metadata:\n  name: p\n  namespace: istio-system\n" "spec:\n"    \
          "  metrics:\n  - name: c\n    instance_name: m.metric.istio-system\n    kind: COUNTER\n"           \
          "    label_names: [source]\n"

static const struct {
    const char *yaml;
    const char *want; /* the first diagnostic */
} cases[] = {
    /* unknown field */
    { MIXER "kind: metric\n" META "spec:\n  valu: \"1\"\n", "t.yaml:7:3: error: unknown field \"valu\" in metric spec" },
    /* wrong type: a list where a map is expected */
    { MIXER "kind: metric\n" META "spec:\n  value: \"1\"\n  dimensions: [a, b]\n",
      "t.yaml:8:15: error: \"dimensions\": expected a mapping, got a list" },
    /* wrong type: integer */
    { "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: eighty\n",
      "t.yaml:7:11: error: expected an integer, got \"eighty\"" },
    /* missing required field */
    { MIXER "kind: rule\n" META "spec:\n  actions:\n  - instances: [x]\n",
      "t.yaml:8:5: error: missing required field \"handler\" in rule action" },
    { "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: x\nspec: {}\n",
      "t.yaml:4:3: error: missing required field \"name\" in metadata" },
    /* expression parse error: column inside the expression */
    { MIXER "kind: metric\n" META "spec:\n  value: request.size +\n",
      "t.yaml:7:24: error: invalid expression: expected operand, found end of expression" },
    /* expression in a quoted scalar: +1 for the quote */
    { MIXER "kind: metric\n" META "spec:\n  value: \"1\"\n  dimensions:\n    a: 'request.nosuch'\n",
      "t.yaml:9:9: error: invalid expression: unknown attribute 'request.nosuch'" },
    /* type error from the compiler */
    { MIXER "kind: metric\n" META "spec:\n  value: response.code | \"x\"\n",
      "t.yaml:7:26: error: invalid expression: type mismatch in '|'*" },
    /* match must be BOOL */
    { MIXER "kind: rule\n" META "spec:\n  match: request.path\n",
      "t.yaml:7:10: error: expression type mismatch: expected BOOL, got STRING: request.path" },
    /* logentry severity must be STRING */
    { MIXER "kind: logentry\n" META "spec:\n  severity: response.code\n",
      "t.yaml:7:13: error: expression type mismatch: expected STRING, got INT64: response.code" },
    /* duplicate names */
    { MIXER "kind: metric\n" META "spec:\n  value: \"1\"\n---\n" MIXER "kind: metric\n" META "spec:\n  value: \"2\"\n",
      "t.yaml:12:9: error: duplicate metric \"m\" in namespace \"istio-system\" (first defined at t.yaml:4:9)" },
    /* missing handler */
    { BASE "---\n" MIXER "kind: rule\nmetadata:\n  name: r\n  namespace: istio-system\nspec:\n  actions:\n"
           "  - handler: nope.prometheus\n    instances: [m.metric]\n",
      "t.yaml:30:14: error: handler \"nope.prometheus\" not found (looked for nope.prometheus.istio-system or "
      "nope.handler.prometheus)" },
    /* missing instance */
    { BASE "---\n" MIXER "kind: rule\nmetadata:\n  name: r\n  namespace: istio-system\nspec:\n  actions:\n"
           "  - handler: p.prometheus\n    instances: [m.metric, gone]\n",
      "t.yaml:31:27: error: instance \"gone\" not found (looked for gone.instance.istio-system)" },
    /* old-style metric not found through a short instance reference (mixer-config.md 4.2) */
    { BASE "---\n" MIXER "kind: rule\nmetadata:\n  name: r\n  namespace: istio-system\nspec:\n  actions:\n"
           "  - handler: p.prometheus\n    instances: [m]\n",
      "t.yaml:31:17: error: instance \"m\" not found (looked for m.instance.istio-system)" },
    /* prometheus instance_name that is not a metric */
    { MIXER "kind: logentry\n" META "spec:\n  severity: '\"info\"'\n---\n" MIXER "kind: prometheus\n"
            "metadata:\n  name: p\n  namespace: istio-system\nspec:\n  metrics:\n  - name: c\n"
            "    instance_name: m.logentry.istio-system\n    kind: COUNTER\n",
      "t.yaml:17:20: error: instance_name \"m.logentry.istio-system\" is not a metric instance (it is a logentry)" },
    /* label_names not among the dimensions */
    { MIXER "kind: metric\n" META "spec:\n  value: \"1\"\n  dimensions:\n    a: '\"x\"'\n---\n" MIXER
            "kind: prometheus\nmetadata:\n  name: p\n  namespace: istio-system\nspec:\n  metrics:\n  - name: c\n"
            "    instance_name: m.metric.istio-system\n    kind: COUNTER\n    label_names: [a, b]\n",
      "t.yaml:21:22: error: label \"b\" is not a dimension of metric instance \"m.metric.istio-system\"" },
    /* metric kind vs value type */
    { MIXER "kind: metric\n" META "spec:\n  value: request.time\n---\n" MIXER
            "kind: prometheus\nmetadata:\n  name: p\n  namespace: istio-system\nspec:\n  metrics:\n  - name: c\n"
            "    instance_name: m.metric.istio-system\n    kind: DISTRIBUTION\n",
      "t.yaml:7:10: error: DISTRIBUTION metric \"c\" needs a numeric value, but \"request.time\" is TIMESTAMP" },
    /* enum */
    { MIXER "kind: prometheus\nmetadata:\n  name: p\n  namespace: istio-system\nspec:\n  metrics:\n"
            "  - instance_name: x\n    kind: COUNTR\n",
      "t.yaml:9:11: error: invalid value \"COUNTR\" for kind (expected one of UNSPECIFIED, GAUGE, COUNTER, "
      "DISTRIBUTION)" },
    /* Telemetry tagOverrides that does not type-check (CEL) */
    { "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: x}\nspec:\n"
      "  metrics:\n  - overrides:\n    - tagOverrides:\n        foo:\n          value: request.nosuch\n",
      "t.yaml:9:18: error: invalid expression: unknown attribute 'request.nosuch'" },
    { "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: x}\nspec:\n"
      "  metrics:\n  - overrides:\n    - tagOverrides:\n        foo: {operation: REMOVE, value: request.host}\n",
      "t.yaml:8:41: error: tag \"foo\": REMOVE takes no value" },
    /* attributegen condition is CEL BOOL */
    { "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: w, namespace: x}\nspec:\n"
      "  url: file:///attributegen.wasm\n  pluginConfig:\n    attributes:\n    - output_attribute: op\n"
      "      match:\n      - value: a\n        condition: request.method\n",
      "t.yaml:11:20: error: expression type mismatch: expected BOOL, got STRING: request.method" },
    /* mesh config: positions inside the mesh string map to the file */
    { "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n"
      "    accessLogFile: /dev/stdout\n    accessLogEncoding: XML\n",
      "t.yaml:7:24: error: invalid value \"XML\" for accessLogEncoding (expected one of TEXT, JSON)" },
    { "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n"
      "    enableTracing: maybe\n",
      "t.yaml:6:20: error: expected true or false, got \"maybe\"" },
    /* YAML syntax */
    { "apiVersion: v1\nkind: Service\nmetadata:\n  name: [a\n", NULL },
    /* duplicate key */
    { "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  type: ClusterIP\n  type: NodePort\n",
      "t.yaml:7:3: error: duplicate key \"type\" (first at line 6)" },
    /* instance spelling with unknown params field */
    { MIXER "kind: instance\n" META "spec:\n  compiledTemplate: metric\n  params:\n    value: \"1\"\n    bogus: x\n",
      "t.yaml:10:5: error: unknown field \"bogus\" in metric params" },
    /* handler spelling: prometheus handler referencing a logentry through a rule */
    { MIXER "kind: logentry\n" META "spec:\n  severity: '\"info\"'\n---\n" MIXER "kind: handler\nmetadata:\n  name: h\n"
            "  namespace: istio-system\nspec:\n  compiledAdapter: prometheus\n---\n" MIXER
            "kind: rule\nmetadata:\n  name: r\n  namespace: istio-system\nspec:\n  actions:\n  - handler: h\n"
            "    instances: [m.logentry]\n",
      "t.yaml:25:17: error: instance \"m.logentry.istio-system\" is of template \"logentry\" which is not supported by "
      "handler \"h.handler.istio-system\"" },
};

static void each_case(void **state)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct keel_diag d;
        struct keel_config *cfg = load_str("t.yaml", cases[i].yaml, &d);
        const char *w = cases[i].want;
        size_t wl = w ? strlen(w) : 0;
        bool prefix = wl && w[wl - 1] == '*'; /* the compiler's wording is the compiler's */
        bool match = w == NULL || (d.n && (prefix ? strncmp(d.msgs[0], w, wl - 1) == 0 : strcmp(d.msgs[0], w) == 0));
        if (cfg != NULL || d.n == 0 || !match) {
            fprintf(stderr, "case %zu: got %s\n  want %s\n", i, d.n ? d.msgs[0] : "(nothing)",
                    cases[i].want ? cases[i].want : "(any error)");
            for (size_t j = 1; j < d.n; j++)
                fprintf(stderr, "  also: %s\n", d.msgs[j]);
            failed++;
            keel_config_unref(cfg);
            keel_diag_fini(&d);
            continue;
        }
        assert_true(d.errors > 0);
        keel_diag_fini(&d);
    }
    assert_int_equal(failed, 0);
}

static void unknown_kind_is_a_warning(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg =
        load_str("w.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n", &d);
    assert_non_null(cfg);
    assert_int_equal(d.errors, 0);
    assert_int_equal(d.warnings, 1);
    assert_string_equal(d.msgs[0],
                        "w.yaml:2:7: warning: unknown kind \"VirtualService\" (apiVersion networking.istio.io/v1), ignored");
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void all_errors_are_listed(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("t.yaml",
                                       MIXER "kind: metric\n" META "spec:\n  valu: 1\n  value: request.size +\n"
                                             "  dimensions:\n    a: nosuch.attr\n",
                                       &d);
    assert_null(cfg);
    assert_int_equal(d.errors, 3);
    keel_diag_fini(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_case),
        cmocka_unit_test(unknown_kind_is_a_warning),
        cmocka_unit_test(all_errors_are_listed),
    };
    return cmocka_run_group_tests_name("config/errors", tests, NULL, NULL);
}
