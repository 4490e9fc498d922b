/* Routing: VirtualService / DestinationRule / networking Gateway binding and compilation,
 * and route selection over request slices (matches, weights, rewrite, hosts). */
#include "config_test.h"

#include "http/http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

static const char bookinfo[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\n"
    "spec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: productpage, namespace: default}\n"
    "spec:\n  selector: {app: productpage}\n  ports: [{name: http, port: 9080}, {name: http-admin, port: 9090}]\n"
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-v1}\n"
    "spec: {address: 127.0.0.1, ports: {http: 9001}, labels: {app: reviews, version: v1}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-v2}\n"
    "spec: {address: 127.0.0.2, ports: {http: 9002}, labels: {app: reviews, version: v2}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: gw, namespace: istio-system}\n"
    "spec: {address: 127.0.0.3, labels: {istio: ingressgateway, app: istio-ingressgateway}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\n"
    "spec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
    "spec:\n"
    "  hosts: [reviews]\n"
    "  http:\n"
    "  - name: jason\n"
    "    match:\n"
    "    - headers: {end-user: {exact: jason}}\n"
    "    route: [{destination: {host: reviews, subset: v2}}]\n"
    "  - name: uri\n"
    "    match:\n"
    "    - uri: {prefix: /api/}\n"
    "    - uri: {regex: '/r/[0-9]+'}\n"
    "      method: {exact: POST}\n"
    "    - queryParams: {debug: {exact: '1'}}\n"
    "    rewrite: {uri: /v2/, authority: reviews.internal}\n"
    "    timeout: 0.5s\n"
    "    retries: {attempts: 3, perTryTimeout: 100ms, retryOn: 'gateway-error,connect-failure'}\n"
    "    route: [{destination: {host: reviews, subset: v1}}]\n"
    "  - name: split\n"
    "    route:\n"
    "    - destination: {host: reviews, subset: v1}\n"
    "      weight: 80\n"
    "    - destination: {host: reviews.default.svc.cluster.local, subset: v2, port: {number: 9080}}\n"
    "      weight: 20\n"
    "---\napiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: bookinfo-gateway}\n"
    "spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n"
    "    hosts: ['*']\n"
    "---\napiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: bookinfo}\n"
    "spec:\n  hosts: ['*']\n  gateways: [bookinfo-gateway]\n  http:\n"
    "  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}]\n"
    "    fault: {abort: {httpStatus: 503, percentage: {value: 25}}, delay: {fixedDelay: 2s, percent: 10}}\n"
    "    route: [{destination: {host: productpage, port: {number: 9080}}}]\n";

static struct keel_config *load_bookinfo(void)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("bookinfo.yaml", bookinfo, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    assert_non_null(cfg);
    assert_int_equal(d.warnings, 0);
    keel_diag_fini(&d);
    return cfg;
}

static struct keel_route_req req(const char *method, const char *path, const struct keel_http_header *h,
                                 size_t n)
{
    return (struct keel_route_req){ .method = keel_str_c(method), .path = keel_str_c(path),
                                    .authority = KEEL_STR("reviews:9080"), .scheme = KEEL_STR("http"),
                                    .headers = h, .n_headers = n, .port = 9080 };
}

static void compiled_model(void **state)
{
    struct keel_config *cfg = load_bookinfo();
    const struct keel_routing *r = cfg->routing;
    assert_int_equal(r->n_vs, 2);
    const struct keel_route_vs *v = &r->vs[0];
    assert_true(v->mesh);
    assert_int_equal(v->n_hosts, 1);
    assert_string_equal(v->hosts[0], "reviews.default.svc.cluster.local");
    assert_int_equal(v->n_http, 3);
    const struct keel_route_http *u = &v->http[1];
    assert_string_equal(u->name, "uri");
    assert_int_equal(u->timeout_ms, 500);
    assert_int_equal(u->retry_attempts, 3);
    assert_int_equal(u->per_try_timeout_ms, 100);
    assert_int_equal(u->retry_on, KEEL_RETRY_GATEWAY_ERROR | KEEL_RETRY_CONNECT_FAILURE);
    const struct keel_route_http *s = &v->http[2];
    assert_int_equal(s->total_weight, 100);
    assert_non_null(s->dests[1].service);
    assert_string_equal(s->dests[1].service->name, "reviews");
    assert_int_equal(s->dests[1].port, 9080);
    assert_int_equal(s->dests[1].n_subset_labels, 1);
    assert_string_equal(s->dests[1].subset_labels[0].value, "v2");
    assert_int_equal(r->n_dests, 5);
    for (size_t i = 0; i < r->n_dests; i++)
        assert_int_equal(r->dests[i]->index, i);
    /* the gateway VS: bound to default/bookinfo-gateway, not to the mesh */
    const struct keel_route_vs *g = &r->vs[1];
    assert_false(g->mesh);
    assert_int_equal(g->n_gateways, 1);
    assert_string_equal(g->gateways[0], "default/bookinfo-gateway");
    assert_int_equal(g->http[0].abort_status, 503);
    assert_int_equal(g->http[0].abort_ppm, 250000);
    assert_int_equal(g->http[0].delay_ms, 2000);
    assert_int_equal(g->http[0].delay_ppm, 100000);
    keel_config_unref(cfg);
}

static void selection(void **state)
{
    struct keel_config *cfg = load_bookinfo();
    const struct keel_route_vs *v = keel_routing_mesh_vs(cfg, KEEL_STR("reviews"), "reviews.default.svc.cluster.local");
    assert_non_null(v);
    assert_ptr_equal(keel_routing_mesh_vs(cfg, KEEL_STR("x"), "reviews.default.svc.cluster.local"), v);
    assert_ptr_equal(keel_routing_mesh_vs(cfg, KEEL_STR("reviews.default.svc.cluster.local"), NULL), v);
    assert_null(keel_routing_mesh_vs(cfg, KEEL_STR("productpage"), "productpage.default.svc.cluster.local"));
    const struct keel_route_match *which;
    struct keel_http_header jason[] = {
        { .name = KEEL_STR("End-User"), .value = KEEL_STR("jason") },
    };
    struct keel_http_header other[] = {
        { .name = KEEL_STR("end-user"), .value = KEEL_STR("jasonx") },
    };
    struct keel_route_req r = req("GET", "/", jason, 1);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "jason");
    r = req("GET", "/", other, 1);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "split");
    r = req("GET", "/api/x?y=1", NULL, 0);
    const struct keel_route_http *h = keel_route_select(v, &r, &which);
    assert_string_equal(h->name, "uri");
    assert_int_equal(which->uri.kind, KEEL_SM_PREFIX);
    char out[64];
    size_t n = keel_route_rewrite_path(h, which, r.path, out, sizeof(out));
    assert_int_equal(n, 9);
    assert_memory_equal(out, "/v2/x?y=1", 9);
    /* the regex is anchored and the method must match too */
    r = req("POST", "/r/42", NULL, 0);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "uri");
    n = keel_route_rewrite_path(h, which, r.path, out, sizeof(out));
    assert_int_equal(n, 4);
    assert_memory_equal(out, "/v2/", 4);
    r = req("GET", "/r/42", NULL, 0);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "split");
    r = req("POST", "/r/42x", NULL, 0);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "split");
    r = req("GET", "/q?a=2&debug=1", NULL, 0);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "uri");
    r = req("GET", "/q?debug=10", NULL, 0);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "split");
    /* weights: 80/20 over the random space */
    h = &v->http[2];
    int v1 = 0;
    for (uint64_t x = 0; x < 100; x++)
        v1 += keel_route_pick(h, x) == &h->dests[0];
    assert_int_equal(v1, 80);
    /* no weights: the first */
    assert_ptr_equal(keel_route_pick(&v->http[0], 12345), &v->http[0].dests[0]);
    keel_config_unref(cfg);
}

static void gateway_binding(void **state)
{
    struct keel_config *cfg = load_bookinfo();
    const struct keel_registry_workload *gw = keel_registry_workload(cfg, "gw.istio-system");
    assert_non_null(gw);
    const struct keel_route_vs **list;
    size_t n = keel_routing_gateway_vs(cfg, gw->labels, gw->n_labels, &list);
    assert_int_equal(n, 1);
    assert_string_equal(list[0]->vs->obj.name, "bookinfo");
    assert_true(keel_route_vs_has_host(list[0], KEEL_STR("anything.example.com"), NULL));
    const struct keel_route_match *which;
    struct keel_route_req r = req("GET", "/static/css", NULL, 0);
    assert_non_null(keel_route_select(list[0], &r, &which));
    r = req("GET", "/productpage/x", NULL, 0);
    assert_null(keel_route_select(list[0], &r, &which)); /* 404 NR */
    free(list);
    const struct keel_registry_workload *other = keel_registry_workload(cfg, "reviews-v1");
    n = keel_routing_gateway_vs(cfg, other->labels, other->n_labels, &list);
    assert_int_equal(n, 0);
    free(list);
    keel_config_unref(cfg);
}

static void warnings_for_missing_things(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("w.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v9}\n"
        "      weight: 30\n"
        "    - destination: {host: ratings}\n      weight: 30\n", &d);
    assert_non_null(cfg);
    assert_int_equal(d.warnings, 4);
    assert_string_equal(d.msgs[0], "w.yaml:8:27: warning: destination host \"reviews\" is not a Service or "
                                   "ServiceEntry host; requests routed there get 503 NC");
    assert_non_null(strstr(d.msgs[1], "subset \"v9\""));
    assert_non_null(strstr(d.msgs[3], "weights add up to 60"));
    const struct keel_route_http *h = &cfg->routing->vs[0].http[0];
    assert_true(h->dests[0].subset_missing);
    assert_null(h->dests[1].service);
    keel_diag_fini(&d);
    keel_config_unref(cfg);
}

static void other_matches(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("m.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns1}\n"
        "spec:\n  hosts: [svc, '*.example.com']\n  http:\n"
        "  - name: no-debug\n    match: [{withoutHeaders: {x-debug: {}}, uri: {exact: /A, }, ignoreUriCase: true}]\n"
        "    route: [{destination: {host: svc.ns1.svc.cluster.local}}]\n"
        "  - name: auth\n    match: [{authority: {prefix: api.}, port: 8080}]\n"
        "    route: [{destination: {host: svc.ns1.svc.cluster.local}}]\n"
        "  - name: from-sleep\n    match: [{sourceLabels: {app: sleep}}]\n"
        "    route: [{destination: {host: svc.ns1.svc.cluster.local}}]\n", &d);
    assert_non_null(cfg);
    const struct keel_route_vs *v = &cfg->routing->vs[0];
    assert_string_equal(v->hosts[0], "svc.ns1.svc.cluster.local");
    assert_true(keel_route_vs_has_host(v, KEEL_STR("API.example.com"), NULL));
    assert_false(keel_route_vs_has_host(v, KEEL_STR("example.com"), NULL));
    assert_false(keel_route_vs_has_host(v, KEEL_STR("svc"), "svc.default.svc.cluster.local"));
    const struct keel_route_match *which;
    struct keel_http_header dbg[] = { { .name = KEEL_STR("X-Debug"), .value = KEEL_STR("") } };
    struct keel_route_req r = req("GET", "/a", NULL, 0);
    assert_string_equal(keel_route_select(v, &r, &which)->name, "no-debug");
    r = req("GET", "/a", dbg, 1);
    assert_null(keel_route_select(v, &r, &which));
    r = req("GET", "/b", NULL, 0);
    r.authority = KEEL_STR("api.example.com:8080");
    r.port = 8080;
    assert_string_equal(keel_route_select(v, &r, &which)->name, "auth");
    r.port = 80;
    assert_null(keel_route_select(v, &r, &which));
    struct keel_config_kv sleep[] = { { "version", "v1", { 0 } }, { "app", "sleep", { 0 } } };
    r.source_labels = sleep;
    r.n_source_labels = 2;
    assert_string_equal(keel_route_select(v, &r, &which)->name, "from-sleep");
    keel_diag_fini(&d);
    keel_config_unref(cfg);
}

static void waypoint_of_namespace(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("wp.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: podinfo, labels: {istio.io/use-waypoint: wp}}\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: podinfo, namespace: podinfo}\n"
        "spec:\n  selector: {app: podinfo}\n  ports: [{name: http, port: 9898}]\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: default}\n"
        "spec:\n  selector: {app: other}\n  ports: [{name: http, port: 80}]\n"
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: wp, namespace: podinfo}\n"
        "spec: {address: 127.0.0.9, ports: {mesh: 15008, http: 15080},"
        " labels: {gateway.networking.k8s.io/gateway-name: wp}}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo, namespace: podinfo}\n"
        "spec: {replicas: 1, template: {spec: {containers: [{name: c, image: x}]}}}\n"
        "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: podinfo, namespace: podinfo}\n", &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    assert_non_null(cfg);
    assert_int_equal(d.n, 0); /* Deployment and ServiceAccount: known, silent */
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct keel_route_waypoint *w = &cfg->routing->waypoints[i];
        if (!strcmp(cfg->services[i].name, "podinfo")) {
            assert_non_null(w->workload);
            assert_string_equal(w->workload->name, "wp");
            assert_int_equal(w->port, 15080);
        } else {
            assert_null(w->workload);
        }
    }
    assert_int_equal(cfg->count[KEEL_CONFIG_DEPLOYMENT], 1);
    assert_int_equal(cfg->count[KEEL_CONFIG_SERVICEACCOUNT], 1);
    keel_diag_fini(&d);
    keel_config_unref(cfg);
}

/* h2UpgradePolicy: the mesh's, overridden by a DestinationRule for a host or one port;
 * only HTTP ports; the rest of trafficPolicy is accepted silently. */
static const struct keel_registry_port *port_of(const struct keel_config *cfg, const char *svc, int port)
{
    for (size_t i = 0; i < cfg->n_services; i++)
        for (size_t j = 0; !strcmp(cfg->services[i].name, svc) && j < cfg->services[i].n_ports; j++)
            if (cfg->services[i].ports[j].port == port)
                return &cfg->services[i].ports[j];
    return NULL;
}

static void h2_upgrade_policy(void **state)
{
    static const char svcs[] =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n"
        "spec: {selector: {app: a}, ports: [{name: http, port: 80}, {name: http-admin, port: 81}]}\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n"
        "spec: {selector: {app: b}, ports: [{name: http, port: 80}, {name: tcp, port: 90}]}\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\n"
        "spec: {selector: {app: c}, ports: [{name: http, port: 80}]}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\n"
        "spec:\n  host: a\n  trafficPolicy:\n    loadBalancer: {simple: LEAST_REQUEST}\n"
        "    connectionPool: {tcp: {maxConnections: 10}, http: {h2UpgradePolicy: UPGRADE, http1MaxPendingRequests: 5}}\n"
        "    portLevelSettings:\n    - port: {number: 81}\n      connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b}\n"
        "spec: {host: b, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n";
    char yaml[4096];
    for (int mesh = 0; mesh < 3; mesh++) {
        snprintf(yaml, sizeof(yaml), "%s%s", svcs,
                 mesh == 0 ? "" : mesh == 1
                     ? "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                       "data:\n  mesh: 'h2UpgradePolicy: UPGRADE'\n"
                     : "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                       "data:\n  mesh: 'h2UpgradePolicy: DO_NOT_UPGRADE'\n");
        struct keel_diag d;
        struct keel_config *cfg = load_str("h2.yaml", yaml, &d);
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "%s\n", d.msgs[i]);
        assert_non_null(cfg);
        assert_int_equal(d.n, 0);
        assert_true(port_of(cfg, "a", 80)->h2_upgrade);   /* the DR, whatever the mesh */
        assert_false(port_of(cfg, "a", 81)->h2_upgrade);  /* its port-level override */
        assert_int_equal(port_of(cfg, "b", 80)->h2_upgrade, mesh == 1); /* DR says nothing */
        assert_false(port_of(cfg, "b", 90)->h2_upgrade);  /* not HTTP */
        assert_int_equal(port_of(cfg, "c", 80)->h2_upgrade, mesh == 1);
        keel_diag_fini(&d);
        keel_config_unref(cfg);
    }
    struct keel_diag d;
    struct keel_config *cfg = load_str("bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\n"
        "spec: {host: a, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: SOMETIMES}}}}\n", &d);
    bool named = false;
    for (size_t i = 0; i < d.n; i++)
        named |= strstr(d.msgs[i], "SOMETIMES") != NULL;
    assert_true(named);
    keel_diag_fini(&d);
    keel_config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(compiled_model),
        cmocka_unit_test(selection),
        cmocka_unit_test(gateway_binding),
        cmocka_unit_test(warnings_for_missing_things),
        cmocka_unit_test(other_matches),
        cmocka_unit_test(waypoint_of_namespace),
        cmocka_unit_test(h2_upgrade_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
