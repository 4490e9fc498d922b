/* Registry: protocol selection (access-logs-and-tracing.md §6.1), host resolution,
 * endpoints from WorkloadEntries, workloads and the services they back. */
#include "config_test.h"

#include "core/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void protocol_by_name_and_app_protocol(void **state)
{
    /* the spec's examples */
    assert_int_equal(keel_proto_of_port("http-api", NULL, NULL, 80), KEEL_PROTO_HTTP);
    assert_int_equal(keel_proto_of_port("HTTP2-internal", NULL, NULL, 80), KEEL_PROTO_HTTP2);
    assert_int_equal(keel_proto_of_port("grpc-web-ui", NULL, NULL, 80), KEEL_PROTO_GRPC_WEB);
    assert_int_equal(keel_proto_of_port("tcp-db", NULL, NULL, 5432), KEEL_PROTO_TCP);
    assert_int_equal(keel_proto_of_port("metrics", NULL, NULL, 9090), KEEL_PROTO_UNKNOWN);
    assert_int_equal(keel_proto_of_port("web", NULL, NULL, 3306), KEEL_PROTO_TCP);
    assert_int_equal(keel_proto_of_port("web", "http", NULL, 8080), KEEL_PROTO_HTTP);
    assert_int_equal(keel_proto_of_port("http", "tcp", NULL, 80), KEEL_PROTO_TCP);
    /* the rest of the table */
    assert_int_equal(keel_proto_of_port("http-magic", NULL, NULL, 80), KEEL_PROTO_HTTP);
    assert_int_equal(keel_proto_of_port("grpc", NULL, NULL, 80), KEEL_PROTO_GRPC);
    assert_int_equal(keel_proto_of_port("https", NULL, NULL, 443), KEEL_PROTO_HTTPS);
    assert_int_equal(keel_proto_of_port("tls-x", NULL, NULL, 443), KEEL_PROTO_TLS);
    assert_int_equal(keel_proto_of_port("mongo", NULL, NULL, 1), KEEL_PROTO_MONGO);
    assert_int_equal(keel_proto_of_port("redis", NULL, NULL, 1), KEEL_PROTO_REDIS);
    assert_int_equal(keel_proto_of_port("mysql", NULL, NULL, 1), KEEL_PROTO_MYSQL);
    assert_int_equal(keel_proto_of_port("http_proxy", NULL, NULL, 1), KEEL_PROTO_HTTP_PROXY);
    assert_int_equal(keel_proto_of_port("http", NULL, "UDP", 53), KEEL_PROTO_UDP);
    assert_int_equal(keel_proto_of_port("x", "kubernetes.io/h2c", NULL, 1), KEEL_PROTO_HTTP2);
    assert_int_equal(keel_proto_of_port("x", "kubernetes.io/ws", NULL, 1), KEEL_PROTO_HTTP);
    assert_int_equal(keel_proto_of_port("x", "kubernetes.io/wss", NULL, 1), KEEL_PROTO_HTTPS);
    assert_int_equal(keel_proto_of_port("foo", NULL, NULL, 27017), KEEL_PROTO_TCP);
    assert_int_equal(keel_proto_of_port("foo", NULL, NULL, 25), KEEL_PROTO_TCP);
    /* unnamed: plain TCP (seed 003) */
    assert_int_equal(keel_proto_of_port(NULL, NULL, NULL, 80), KEEL_PROTO_TCP);
    assert_int_equal(keel_proto_of_port("", NULL, NULL, 80), KEEL_PROTO_TCP);
    assert_true(keel_proto_is_http(KEEL_PROTO_GRPC));
    assert_false(keel_proto_is_http(KEEL_PROTO_TCP));
}

static const char mesh_yaml[] =
    "apiVersion: v1\nkind: Service\nmetadata: {name: details, namespace: default}\n"
    "spec:\n  selector: {app: details}\n  ports:\n  - {name: http, port: 9080, targetPort: 9080}\n"
    "  - {name: tcp-admin, port: 9999, targetPort: admin}\n"
    "---\napiVersion: v1\nkind: Service\nmetadata: {name: productpage}\n"
    "spec:\n  selector: {app: productpage}\n  ports:\n  - {name: web, port: 9080, appProtocol: http}\n"
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: details-v1, namespace: default}\n"
    "spec:\n  address: 127.0.0.1\n  ports: {http: 19080, admin: 19999}\n  labels: {app: details, version: v1}\n"
    "  serviceAccount: bookinfo-details\n"
    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: details-v2, namespace: default}\n"
    "spec:\n  address: 127.0.0.2\n  labels: {app: details, version: v2}\n"
    "---\napiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: productpage-v1}\n"
    "spec:\n  address: 127.0.0.1\n  ports: {web: 18080}\n  labels: {app: productpage}\n"
    "---\napiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\nmetadata: {name: ext, namespace: default}\n"
    "spec:\n  hosts: [api.example.com]\n  ports:\n  - {number: 443, name: tls, protocol: TLS}\n"
    "  - {number: 80, name: web, protocol: HTTP}\n  resolution: STATIC\n"
    "  endpoints:\n  - address: 10.0.0.1\n";

static void resolve_hosts(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("reg.yaml", mesh_yaml, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    assert_non_null(cfg);
    assert_int_equal(cfg->n_services, 3);
    const char *forms[] = { "details", "details:9080", "details.default", "details.default.svc",
                            "details.default.svc.cluster.local:9080", "details.default.svc.cluster.local" };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        const struct keel_registry_port *p = keel_registry_resolve(cfg, forms[i], strlen(forms[i]), 0, "default");
        assert_non_null(p);
        assert_string_equal(p->service->fqdn, "details.default.svc.cluster.local");
        assert_int_equal(p->port, 9080);
        assert_int_equal(p->protocol, KEEL_PROTO_HTTP);
        /* details-v1 via its "http" port; details-v2 has no ports map: targetPort */
        assert_int_equal(p->n_endpoints, 2);
        assert_string_equal(p->endpoints[0].address, "127.0.0.1");
        assert_int_equal(p->endpoints[0].port, 19080);
        assert_string_equal(p->endpoints[0].workload->name, "details-v1");
        assert_string_equal(p->endpoints[1].address, "127.0.0.2");
        assert_int_equal(p->endpoints[1].port, 9080);
    }
    /* explicit port argument, port in host wins, unknown port */
    const struct keel_registry_port *p = keel_registry_resolve(cfg, "details", 7, 9999, NULL);
    assert_non_null(p);
    assert_int_equal(p->protocol, KEEL_PROTO_TCP);
    assert_int_equal(p->n_endpoints, 1); /* named targetPort "admin": only v1 has it */
    assert_int_equal(p->endpoints[0].port, 19999);
    assert_null(keel_registry_resolve(cfg, "details:1234", 12, 0, NULL));
    assert_null(keel_registry_resolve(cfg, "details", 7, 0, "other"));
    assert_null(keel_registry_resolve(cfg, "nosuch", 6, 0, NULL));
    /* appProtocol wins over the name */
    p = keel_registry_resolve(cfg, "productpage:9080", 16, 0, NULL);
    assert_non_null(p);
    assert_int_equal(p->protocol, KEEL_PROTO_HTTP);
    assert_int_equal(p->endpoints[0].port, 18080);
    /* ServiceEntry */
    p = keel_registry_resolve(cfg, "api.example.com:80", 18, 0, NULL);
    assert_non_null(p);
    assert_int_equal(p->protocol, KEEL_PROTO_HTTP);
    assert_string_equal(p->endpoints[0].address, "10.0.0.1");
    assert_int_equal(p->endpoints[0].port, 80);
    p = keel_registry_resolve(cfg, "api.example.com", 15, 0, NULL);
    assert_int_equal(p->protocol, KEEL_PROTO_TLS);
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

static void workloads(void **state)
{
    struct keel_diag d;
    struct keel_config *cfg = load_str("reg.yaml", mesh_yaml, &d);
    assert_non_null(cfg);
    const struct keel_registry_workload *w = keel_registry_workload(cfg, "details-v1.default");
    assert_non_null(w);
    assert_string_equal(w->service_account, "bookinfo-details");
    assert_string_equal(w->address, "127.0.0.1");
    assert_int_equal(w->n_labels, 2);
    assert_string_equal(w->labels[1].key, "version");
    assert_string_equal(w->labels[1].value, "v1");
    assert_int_equal(w->n_services, 1);
    assert_string_equal(w->services[0]->name, "details");
    w = keel_registry_workload(cfg, "productpage-v1");
    assert_non_null(w);
    assert_string_equal(w->service_account, "default");
    assert_null(keel_registry_workload(cfg, "nosuch.default"));

    struct keel_buf b = { 0 };
    keel_config_dump_json(cfg, &b);
    keel_buf_append(&b, "", 1);
    const char *j = keel_buf_rptr(&b);
    assert_non_null(strstr(j, "\"host\":\"details.default.svc.cluster.local\""));
    assert_non_null(strstr(j, "\"name\":\"http\",\"port\":9080,\"targetPort\":9080,\"protocol\":\"HTTP\""));
    assert_non_null(strstr(j, "\"workload\":\"details-v1.default\""));
    assert_non_null(strstr(j, "\"Service\":2"));
    keel_buf_release(&b);
    keel_buf_pool_drain();
    keel_config_unref(cfg);
    keel_diag_fini(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(protocol_by_name_and_app_protocol),
        cmocka_unit_test(resolve_hosts),
        cmocka_unit_test(workloads),
    };
    return cmocka_run_group_tests_name("config/registry", tests, NULL, NULL);
}
