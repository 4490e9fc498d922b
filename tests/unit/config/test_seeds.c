/* Every seed fixture loads, with the typed content its walkthrough relies on. */
#include "config_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void seed000_newlog_stdio(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_seed("000-newlog-stdio.yaml", &d);
    assert_non_null(cfg);
    assert_int_equal(d.errors, 0);
    assert_int_equal(cfg->count[KEEL_CONFIG_LOGENTRY], 1);
    const struct keel_config_logentry *le = (const void *)cfg->first[KEEL_CONFIG_LOGENTRY];
    assert_string_equal(le->obj.fqn, "newlog.logentry.istio-system");
    assert_int_equal(le->obj.name_pos.line, 7);
    assert_int_equal(le->n_variables, 7);
    assert_string_equal(le->variables[0].name, "source");
    assert_string_equal(le->variables[0].expr.src, "source.labels[\"app\"] | source.workload.name | \"unknown\"");
    assert_int_equal(le->variables[0].expr.pos.line, 13);
    assert_int_equal(le->variables[0].expr.pos.col, 13);
    assert_non_null(le->variables[0].expr.compiled);
    assert_string_equal(le->severity.src, "\"warning\"");
    assert_int_equal(le->severity.pos.col, 14); /* after the single quote */
    const struct keel_config_stdio *st = (const void *)cfg->first[KEEL_CONFIG_STDIO];
    assert_true(st->output_as_json);
    assert_int_equal(st->n_severity_levels, 1);
    assert_string_equal(st->severity_levels[0].severity, "warning");
    assert_int_equal(st->severity_levels[0].level, KEEL_CONFIG_LEVEL_WARNING);
    const struct keel_config_rule *r = (const void *)cfg->first[KEEL_CONFIG_RULE];
    assert_string_equal(r->match.src, "true");
    assert_true(r->in_default_namespace);
    assert_int_equal(r->n_actions, 1);
    assert_ptr_equal(r->actions[0].handler_obj, &st->obj);
    assert_int_equal(r->actions[0].n_instances, 1);
    assert_ptr_equal(r->actions[0].instance_objs[0], &le->obj);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void seed001_doublerequestcount(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_seed("001-doublerequestcount.yaml", &d);
    assert_non_null(cfg);
    const struct keel_config_metric *m = (const void *)cfg->first[KEEL_CONFIG_METRIC];
    assert_string_equal(m->value.src, "2");
    assert_int_equal(m->n_dimensions, 4);
    const struct keel_config_prometheus *p = (const void *)cfg->first[KEEL_CONFIG_PROMETHEUS];
    assert_int_equal(p->n_metrics, 1);
    assert_string_equal(p->metrics[0].name, "double_request_count");
    assert_int_equal(p->metrics[0].kind, KEEL_CONFIG_PROM_COUNTER);
    assert_ptr_equal(p->metrics[0].instance, m);
    assert_int_equal(p->metrics[0].n_label_names, 4);
    assert_string_equal(p->metrics[0].label_names[3].s, "message");
    const struct keel_config_rule *r = (const void *)cfg->first[KEEL_CONFIG_RULE];
    assert_null(r->match.src);
    assert_ptr_equal(r->actions[0].handler_obj, &p->obj);
    assert_ptr_equal(r->actions[0].instance_objs[0], &m->obj);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void seed001_mesh(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_seed("001-mesh-access-log.yaml", &d);
    assert_non_null(cfg);
    assert_int_equal(cfg->count[KEEL_CONFIG_MESH], 1);
    assert_string_equal(cfg->mesh.access_log_file, "/dev/stdout");
    assert_int_equal(cfg->mesh.access_log_encoding, KEEL_CONFIG_LOG_TEXT);
    assert_true(cfg->mesh.tracing_sampling == 100.0);
    assert_string_equal(cfg->mesh.zipkin_address, "zipkin.istio-system:9411");
    assert_true(cfg->mesh.enable_tracing);
    assert_string_equal(cfg->mesh.config_default_namespace, "istio-system");
    assert_int_equal(cfg->mesh.pos.line, 13); /* inside the mesh string, mapped to the file */
    assert_int_equal(cfg->mesh.pos.col, 5);
    assert_int_equal(cfg->mesh.outbound_mode, KEEL_CONFIG_ALLOW_ANY); /* Istio's default */
    assert_int_equal(cfg->mesh.n_proxy_metadata, 0);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static struct keel_config *load_mesh(const char *mesh, struct keel_diag *d)
{
    static char buf[1024];
    snprintf(buf, sizeof(buf),
             "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
             "data:\n  mesh: |-\n    %s\n",
             mesh);
    struct keel_config_source src = { "mesh.yaml", buf, strlen(buf) };
    keel_diag_init(d);
    return keel_config_load_sources(&src, 1, d);
}

/* outboundTrafficPolicy.mode by name or by Istio's enum number; defaultConfig.proxyMetadata */
static void mesh_outbound_policy_and_proxy_metadata(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_mesh("outboundTrafficPolicy: {mode: REGISTRY_ONLY}", &d);
    assert_non_null(cfg);
    assert_int_equal(cfg->mesh.outbound_mode, KEEL_CONFIG_REGISTRY_ONLY);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    cfg = load_mesh("outboundTrafficPolicy: {mode: 1}", &d);
    assert_non_null(cfg);
    assert_int_equal(cfg->mesh.outbound_mode, KEEL_CONFIG_ALLOW_ANY);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    cfg = load_mesh("outboundTrafficPolicy: {}", &d); /* merged over the defaults, as Istio */
    assert_non_null(cfg);
    assert_int_equal(cfg->mesh.outbound_mode, KEEL_CONFIG_ALLOW_ANY);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
    assert_null(load_mesh("outboundTrafficPolicy: {mode: ALLOW_SOME}", &d));
    assert_true(d.n > 0 && strstr(d.msgs[0], "REGISTRY_ONLY, ALLOW_ANY") != NULL);
    keel_diag_fini(&d);
    cfg = load_mesh("defaultConfig: {proxyMetadata: {ISTIO_META_CLUSTER_ID: east, OTHER: x}}", &d);
    assert_non_null(cfg);
    assert_int_equal(cfg->mesh.n_proxy_metadata, 2);
    assert_string_equal(cfg->mesh.proxy_metadata[0].key, "ISTIO_META_CLUSTER_ID");
    assert_string_equal(cfg->mesh.proxy_metadata[0].value, "east");
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void seed001_user_and_details(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_seed("001-newlog-user.yaml", &d);
    assert_non_null(cfg);
    const struct keel_config_logentry *le = (const void *)cfg->first[KEEL_CONFIG_LOGENTRY];
    assert_int_equal(le->n_variables, 6);
    assert_string_equal(le->variables[1].name, "user");
    keel_config_unref(cfg);
    keel_diag_fini(&d);

    /* details-only is an overlay: it loads on top of the user file's handler */
    char p1[512], p2[512];
    snprintf(p1, sizeof(p1), "%s/001-newlog-details-only.yaml", seeds_dir());
    snprintf(p2, sizeof(p2), "%s/000-newlog-stdio.yaml", seeds_dir());
    (void)p2;
    FILE *f = fopen(p1, "r");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    static const char handler[] = "apiVersion: config.istio.io/v1alpha2\nkind: stdio\nmetadata:\n  name: newhandler\n"
                                  "  namespace: istio-system\nspec:\n  outputAsJson: true\n";
    struct keel_config_source src[2] = { { p1, buf, n }, { "handler.yaml", handler, strlen(handler) } };
    keel_diag_init(&d);
    cfg = keel_config_load_sources(src, 2, &d);
    assert_non_null(cfg);
    le = (const void *)cfg->first[KEEL_CONFIG_LOGENTRY];
    assert_int_equal(le->n_variables, 2);
    const struct keel_config_rule *r = (const void *)cfg->first[KEEL_CONFIG_RULE];
    assert_string_equal(r->match.src, "destination.service.name==\"details\"");
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void seed003_service(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_seed("003-service-port-naming.yaml", &d);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_services, 1);
    assert_string_equal(cfg->services[0].fqdn, "nginx.default.svc.cluster.local");
    assert_int_equal(cfg->services[0].ports[0].protocol, KEEL_PROTO_HTTP);
    assert_int_equal(cfg->services[0].ports[0].port, 80);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void seed004(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_seed("004-route-metrics.yaml", &d);
    assert_non_null(cfg);
    const struct keel_config_wasmplugin *w = (const void *)cfg->first[KEEL_CONFIG_WASMPLUGIN];
    assert_true(w->is_attributegen);
    assert_int_equal(w->n_attributes, 1);
    assert_string_equal(w->attributes[0].output_attribute, "istio_operationId");
    assert_int_equal(w->attributes[0].n_match, 2);
    assert_string_equal(w->attributes[0].match[1].value, "POST /echo");
    assert_non_null(w->attributes[0].match[0].condition.compiled);
    assert_int_equal(w->attributes[0].match[0].condition.pos.line, 24);
    assert_int_equal(w->n_target_refs, 1);
    assert_string_equal(w->target_refs[0].name, "podinfo-waypoint");
    const struct keel_config_telemetry *t = (const void *)cfg->first[KEEL_CONFIG_TELEMETRY];
    assert_int_equal(t->n_metrics, 1);
    assert_int_equal(t->metrics[0].n_providers, 1);
    assert_string_equal(t->metrics[0].providers[0].name, "prometheus");
    const struct keel_config_metric_override *o = &t->metrics[0].overrides[0];
    assert_int_equal(o->metric, KEEL_CONFIG_REQUEST_COUNT);
    assert_int_equal(o->mode, KEEL_CONFIG_MODE_CLIENT_AND_SERVER);
    assert_int_equal(o->disabled, -1);
    assert_int_equal(o->n_tags, 1);
    assert_string_equal(o->tags[0].tag, "route_name");
    assert_string_equal(o->tags[0].value.src, "filter_state['wasm.istio_operationId']");
    assert_non_null(o->tags[0].value.compiled);
    keel_config_unref(cfg);
    keel_diag_fini(&d);

    cfg = load_seed("004-waypoint.yaml", &d);
    assert_non_null(cfg);
    const struct keel_config_gateway *g = (const void *)cfg->first[KEEL_CONFIG_GATEWAY];
    assert_true(g->is_waypoint);
    assert_int_equal(g->listeners[0].port, 15008);
    keel_config_unref(cfg);
    keel_diag_fini(&d);

    cfg = load_seed("004-prometheus-scrape.yaml", &d);
    assert_non_null(cfg); /* not a resource: a warning only */
    assert_int_equal(d.warnings, 1);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed000_newlog_stdio), cmocka_unit_test(seed001_doublerequestcount),
        cmocka_unit_test(seed001_mesh),         cmocka_unit_test(seed001_user_and_details),
        cmocka_unit_test(mesh_outbound_policy_and_proxy_metadata),
        cmocka_unit_test(seed003_service),      cmocka_unit_test(seed004),
    };
    return cmocka_run_group_tests_name("config/seeds", tests, NULL, NULL);
}
