/* The telemetry engine against the seed fixtures and Telemetry API cases: bags filled by
 * hand like the seeds' requests (both reporters), exact outputs asserted. */
#include "telemetry/engine.h"

#include "config/config.h"
#include "core/buf.h"
#include "telemetry/metrics.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

static const char *seeds_dir(void)
{
    return "examples/seeds";
}

static struct keel_config *load_seed(const char *file)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", seeds_dir(), file);
    const char *paths[1] = { path };
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_load_paths(paths, 1, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "%s\n", d.msgs[i]);
    keel_diag_fini(&d);
    assert_non_null(cfg);
    return cfg;
}

static struct keel_config *load_yaml(const char *yaml)
{
    struct keel_config_source s = { "test.yaml", yaml, strlen(yaml) };
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

static void set_str(struct keel_attr_bag *bag, int id, const char *s)
{
    struct keel_value v = keel_value_str(s, strlen(s));
    keel_attr_bag_set(bag, id, &v);
}

static void set_int(struct keel_attr_bag *bag, int id, int64_t i)
{
    struct keel_value v = keel_value_int(i);
    keel_attr_bag_set(bag, id, &v);
}

static const struct keel_str_pair pp_labels[] = { { KEEL_STR("app"), KEEL_STR("productpage") },
                                                  { KEEL_STR("version"), KEEL_STR("v1") } };
static const struct keel_str_pair details_labels[] = { { KEEL_STR("app"), KEEL_STR("details") },
                                                       { KEEL_STR("version"), KEEL_STR("v1") } };
static const struct keel_str_pair cluster_md[] = { { KEEL_STR("CLUSTER_ID"), KEEL_STR("Kubernetes") } };

/* productpage -> details, one plaintext request, as either sidecar reports it */
static void bookinfo_bag(struct keel_attr_bag *bag, bool outbound)
{
    keel_attr_bag_clear(bag);
    set_str(bag, KEEL_ATTR_CONTEXT_REPORTER_KIND, outbound ? "outbound" : "inbound");
    set_str(bag, KEEL_ATTR_CONTEXT_PROTOCOL, "http");
    set_str(bag, KEEL_ATTR_SOURCE_WORKLOAD_NAME, "productpage-v1");
    set_str(bag, KEEL_ATTR_SOURCE_WORKLOAD_NAMESPACE, "default");
    set_str(bag, KEEL_ATTR_SOURCE_NAMESPACE, "default");
    struct keel_value m = keel_value_map(pp_labels, 2);
    keel_attr_bag_set(bag, KEEL_ATTR_SOURCE_LABELS, &m);
    m = keel_value_map(cluster_md, 1);
    keel_attr_bag_set(bag, KEEL_ATTR_SOURCE_METADATA, &m);
    keel_attr_bag_set(bag, KEEL_ATTR_DESTINATION_METADATA, &m);
    set_str(bag, KEEL_ATTR_DESTINATION_WORKLOAD_NAME, "details-v1");
    set_str(bag, KEEL_ATTR_DESTINATION_WORKLOAD_NAMESPACE, "default");
    set_str(bag, KEEL_ATTR_DESTINATION_NAMESPACE, "default");
    m = keel_value_map(details_labels, 2);
    keel_attr_bag_set(bag, KEEL_ATTR_DESTINATION_LABELS, &m);
    set_str(bag, KEEL_ATTR_DESTINATION_SERVICE_HOST, "details.default.svc.cluster.local");
    set_str(bag, KEEL_ATTR_DESTINATION_SERVICE_NAME, "details");
    set_str(bag, KEEL_ATTR_DESTINATION_SERVICE_NAMESPACE, "default");
    set_str(bag, KEEL_ATTR_REQUEST_HOST, "details:9080");
    set_str(bag, KEEL_ATTR_REQUEST_METHOD, "GET");
    set_str(bag, KEEL_ATTR_REQUEST_URL_PATH, "/details/0");
    set_int(bag, KEEL_ATTR_RESPONSE_CODE, 200);
    set_int(bag, KEEL_ATTR_RESPONSE_SIZE, 178);
    set_int(bag, KEEL_ATTR_REQUEST_SIZE, 0);
    struct keel_value d = keel_value_duration(1817000); /* 1.817ms */
    keel_attr_bag_set(bag, KEEL_ATTR_RESPONSE_DURATION, &d);
}

static void report(struct keel_telemetry *t, struct keel_telemetry_shard *sh, struct keel_attr_bag *bag)
{
    keel_telemetry_report(t, sh, bag);
}

static char *take_lines(struct keel_telemetry_shard *sh, uint64_t *n)
{
    struct keel_telemetry_output *o = keel_telemetry_shard_output(sh, KEEL_TELEMETRY_STDOUT);
    char *s = strndup(o->buf.data ? keel_buf_rptr(&o->buf) : "", o->buf.data ? keel_buf_len(&o->buf) : 0);
    *n = o->lines;
    o->buf.rpos = o->buf.wpos = 0;
    o->lines = 0;
    return s;
}

struct fixture {
    struct keel_config *cfg;
    struct keel_metrics *reg;
    struct keel_telemetry *t;
    struct keel_telemetry_shard *sh;
    struct keel_attr_bag bag;
};

static struct fixture *fx_new(struct keel_config *cfg, const struct keel_telemetry_workload *self)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->cfg = cfg;
    f->reg = keel_metrics_new();
    struct keel_diag d;
    keel_diag_init(&d);
    f->t = keel_telemetry_new(cfg, f->reg, self, &d);
    for (size_t i = 0; i < d.n; i++)
        fprintf(stderr, "plan: %s\n", d.msgs[i]);
    keel_diag_fini(&d);
    keel_config_unref(cfg); /* the plan holds its own reference */
    f->sh = keel_telemetry_shard_new(f->reg);
    return f;
}

static void fx_free(struct fixture *f)
{
    keel_telemetry_shard_free(f->sh);
    keel_telemetry_free(f->t);
    keel_metrics_free(f->reg);
    free(f);
}

static bool contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fprintf(stderr, "missing: %s\nin:\n%s\n", needle, hay);
        return false;
    }
    return true;
}

/* ---- seed 000: newlog to stdio ---- */
static const struct keel_str_pair curl_labels[] = { { KEEL_STR("app"), KEEL_STR("curl") } };
static const struct keel_str_pair hw_labels[] = { { KEEL_STR("app"), KEEL_STR("helloworld") } };

static void test_seed000_stdio(void **state)
{
    (void)state;
    struct fixture *f = fx_new(load_seed("000-newlog-stdio.yaml"), NULL);
    struct keel_attr_bag *bag = &f->bag;
    for (int side = 0; side < 2; side++) {
        keel_attr_bag_clear(bag);
        set_str(bag, KEEL_ATTR_CONTEXT_REPORTER_KIND, side ? "inbound" : "outbound");
        struct keel_value m = keel_value_map(curl_labels, 1);
        keel_attr_bag_set(bag, KEEL_ATTR_SOURCE_LABELS, &m);
        m = keel_value_map(hw_labels, 1);
        keel_attr_bag_set(bag, KEEL_ATTR_DESTINATION_LABELS, &m);
        set_str(bag, KEEL_ATTR_DESTINATION_NAME, "helloworld-v2-54b97b8585-gwqt9");
        set_str(bag, KEEL_ATTR_SOURCE_NAME, "curl-deploy-5f7684bb65-fpzpr");
        set_int(bag, KEEL_ATTR_RESPONSE_CODE, 200);
        set_int(bag, KEEL_ATTR_RESPONSE_SIZE, 60);
        struct keel_value d = keel_value_duration(157830203);
        keel_attr_bag_set(bag, KEEL_ATTR_RESPONSE_DURATION, &d);
        struct keel_value ts = { .type = KEEL_VALUE_TIMESTAMP };
        ts.u.t.sec = 1545997990;
        ts.u.t.nsec = 82342999; /* microseconds truncated */
        keel_attr_bag_set(bag, KEEL_ATTR_REQUEST_TIME, &ts);
        report(f->t, f->sh, bag);
    }
    const char *line =
        "{\"level\":\"warn\",\"time\":\"2018-12-28T11:53:10.082342Z\",\"instance\":\"newlog.logentry.istio-system\","
        "\"destination\":\"helloworld\",\"destinationName\":\"helloworld-v2-54b97b8585-gwqt9\",\"latency\":"
        "\"157.830203ms\",\"responseCode\":200,\"responseSize\":60,\"source\":\"curl\",\"sourceName\":"
        "\"curl-deploy-5f7684bb65-fpzpr\"}\n";
    uint64_t n;
    char *out = take_lines(f->sh, &n);
    char want[2048];
    snprintf(want, sizeof(want), "%s%s", line, line);
    assert_string_equal(out, want);
    assert_int_equal(n, 2);
    free(out);
    /* a TCP report: request.time absent -> no line, the instance error counted */
    keel_attr_bag_clear(bag);
    set_str(bag, KEEL_ATTR_CONTEXT_PROTOCOL, "tcp");
    report(f->t, f->sh, bag);
    out = take_lines(f->sh, &n);
    assert_string_equal(out, "");
    assert_int_equal(n, 0);
    free(out);
    char *s = scrape(f->reg);
    assert_true(contains(s, "keel_telemetry_instance_errors_total{instance=\"newlog.logentry.istio-system\"} 1\n"));
    free(s);
    fx_free(f);
}

static void test_stdio_console(void **state)
{
    (void)state;
    struct fixture *f = fx_new(load_yaml("apiVersion: config.istio.io/v1alpha2\nkind: logentry\n"
                                         "metadata: {name: l, namespace: istio-system}\n"
                                         "spec:\n  severity: '\"Info\"'\n  timestamp: request.time\n"
                                         "  variables:\n    responseCode: response.code | 0\n"
                                         "    b: '\"x\"'\n"
                                         "---\napiVersion: config.istio.io/v1alpha2\nkind: stdio\n"
                                         "metadata: {name: h, namespace: istio-system}\n"
                                         "spec: {outputAsJson: false}\n"
                                         "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\n"
                                         "metadata: {name: r, namespace: istio-system}\n"
                                         "spec:\n  actions:\n  - handler: h.stdio\n    instances: [l.logentry]\n"),
                               NULL);
    keel_attr_bag_clear(&f->bag);
    struct keel_value ts = { .type = KEEL_VALUE_TIMESTAMP };
    ts.u.t.sec = 1573723802;
    ts.u.t.nsec = 482105000;
    keel_attr_bag_set(&f->bag, KEEL_ATTR_REQUEST_TIME, &ts);
    set_int(&f->bag, KEEL_ATTR_RESPONSE_CODE, 404);
    report(f->t, f->sh, &f->bag);
    uint64_t n;
    char *out = take_lines(f->sh, &n);
    assert_string_equal(out, "2019-11-14T09:30:02.482105Z\tinfo\tl.logentry.istio-system\t{\"b\": \"x\", "
                             "\"responseCode\": 404}\n");
    free(out);
    fx_free(f);
}

/* Reports whose tuple is the previous one's take a shortcut past the hash; runs of one
 * series, alternations and returns to an older series all count exactly. The response
 * code is one byte apart ("200"/"201"/"500"): same lengths, same hash class of bytes. */
static void test_std_series_runs(void **state)
{
    (void)state;
    struct fixture *f = fx_new(load_yaml("apiVersion: v1\nkind: ConfigMap\n"
                                         "metadata: {name: unused, namespace: default}\n"),
                               NULL);
    const int codes[] = { 200, 200, 201, 200, 201, 201, 500, 200, 200, 500, 201, 200 };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        bookinfo_bag(&f->bag, false);
        set_int(&f->bag, KEEL_ATTR_RESPONSE_CODE, codes[i]);
        report(f->t, f->sh, &f->bag);
    }
    char *s = scrape(f->reg);
    const char *want[] = { "response_code=\"200\"", "response_code=\"201\"", "response_code=\"500\"" };
    const int counts[] = { 6, 4, 2 };
    for (int k = 0; k < 3; k++) {
        const char *p = s;
        int found = 0;
        while ((p = strstr(p, "istio_requests_total{")) != NULL) {
            const char *eol = strchr(p, '\n');
            char line[2048];
            snprintf(line, sizeof(line), "%.*s", (int)(eol - p), p);
            if (strstr(line, want[k])) {
                found++;
                char tail[16];
                snprintf(tail, sizeof(tail), "} %d", counts[k]);
                assert_true(contains(line, tail));
            }
            p = eol;
        }
        assert_int_equal(found, 1);
    }
    free(s);
    fx_free(f);
}

/* ---- seed 001: double request count ---- */
static void test_seed001_double(void **state)
{
    (void)state;
    struct fixture *f = fx_new(load_seed("001-doublerequestcount.yaml"), NULL);
    for (int i = 0; i < 3; i++)
        for (int side = 0; side < 2; side++) {
            bookinfo_bag(&f->bag, side == 0);
            report(f->t, f->sh, &f->bag);
        }
    char *s = scrape(f->reg);
    assert_true(contains(s, "# HELP istio_double_request_count double_request_count\n"
                            "# TYPE istio_double_request_count counter\n"
                            "istio_double_request_count{destination=\"details-v1\",message=\"twice the fun!\","
                            "reporter=\"client\",source=\"productpage-v1\"} 6\n"
                            "istio_double_request_count{destination=\"details-v1\",message=\"twice the fun!\","
                            "reporter=\"server\",source=\"productpage-v1\"} 6\n"));
    free(s);
    /* one more inbound report adds exactly 2 */
    bookinfo_bag(&f->bag, false);
    report(f->t, f->sh, &f->bag);
    struct keel_str lv[] = { KEEL_STR("details-v1"), KEEL_STR("twice the fun!"), KEEL_STR("server"),
                             KEEL_STR("productpage-v1") };
    double v;
    assert_int_equal(keel_metrics_get(f->reg, "istio_double_request_count", lv, 4, &v), 0);
    assert_true(v == 8);
    fx_free(f);
}

/* ---- standard metrics: labels for both reporters (telemetry-api.md §6.4) ---- */
static const char std_server[] =
    "istio_requests_total{reporter=\"destination\",source_workload=\"productpage-v1\",source_canonical_service="
    "\"productpage\",source_canonical_revision=\"v1\",source_workload_namespace=\"default\",source_principal="
    "\"unknown\",source_app=\"productpage\",source_version=\"v1\",source_cluster=\"Kubernetes\","
    "destination_workload=\"details-v1\",destination_workload_namespace=\"default\",destination_principal="
    "\"unknown\",destination_app=\"details\",destination_version=\"v1\",destination_service="
    "\"details.default.svc.cluster.local\",destination_canonical_service=\"details\","
    "destination_canonical_revision=\"v1\",destination_service_name=\"details\","
    "destination_service_namespace=\"default\",destination_cluster=\"Kubernetes\",request_protocol=\"http\","
    "response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"none\"";

static void test_standard_labels(void **state)
{
    (void)state;
    struct fixture *f = fx_new(load_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: details}\n"
                                         "spec:\n  ports: [{name: http, port: 9080}]\n"),
                               NULL);
    bookinfo_bag(&f->bag, false);
    report(f->t, f->sh, &f->bag);
    bookinfo_bag(&f->bag, true);
    report(f->t, f->sh, &f->bag);
    bookinfo_bag(&f->bag, true);
    struct keel_value d = keel_value_duration(300000000);
    keel_attr_bag_set(&f->bag, KEEL_ATTR_RESPONSE_DURATION, &d);
    report(f->t, f->sh, &f->bag);
    char *s = scrape(f->reg);
    char want[4096];
    snprintf(want, sizeof(want), "%s} 1\n", std_server);
    assert_true(contains(s, want));
    /* the client side: reporter source, connection_security_policy unknown */
    char client[4096];
    snprintf(client, sizeof(client), "%s", std_server);
    char *p = strstr(client, "destination\"");
    memcpy(p, "source\"", 7);
    memmove(p + 7, p + 12, strlen(p + 12) + 1);
    p = strstr(client, "connection_security_policy=\"none\"");
    strcpy(p, "connection_security_policy=\"unknown\"} 2\n");
    assert_true(contains(s, client));
    assert_true(contains(s, "# TYPE istio_request_duration_milliseconds histogram\n"));
    assert_true(contains(s, "connection_security_policy=\"unknown\",le=\"1\"} 1\n"));
    assert_true(contains(s, "connection_security_policy=\"unknown\",le=\"250\"} 1\n"));
    assert_true(contains(s, "connection_security_policy=\"unknown\",le=\"500\"} 2\n"));
    assert_true(contains(s, "connection_security_policy=\"unknown\",le=\"3600000\"} 2\n"));
    assert_true(contains(s, "connection_security_policy=\"unknown\"} 301\n")); /* _sum: 1 ms + 300 ms */
    assert_true(contains(s, "istio_response_bytes_sum{reporter=\"destination\""));
    assert_null(strstr(s, "istio_tcp_"));
    free(s);
    /* TCP: open + close reports */
    keel_attr_bag_clear(&f->bag);
    set_str(&f->bag, KEEL_ATTR_CONTEXT_PROTOCOL, "tcp");
    set_str(&f->bag, KEEL_ATTR_CONTEXT_REPORTER_KIND, "inbound");
    set_str(&f->bag, KEEL_ATTR_CONNECTION_EVENT, "open");
    set_int(&f->bag, KEEL_ATTR_CONNECTION_SENT_BYTES, 10);
    set_int(&f->bag, KEEL_ATTR_CONNECTION_RECEIVED_BYTES, 20);
    report(f->t, f->sh, &f->bag);
    set_str(&f->bag, KEEL_ATTR_CONNECTION_EVENT, "close");
    set_int(&f->bag, KEEL_ATTR_CONNECTION_SENT_BYTES, 5);
    report(f->t, f->sh, &f->bag);
    s = scrape(f->reg);
    const char *tcp_labels =
        "{reporter=\"destination\",source_workload=\"unknown\",source_canonical_service=\"unknown\","
        "source_canonical_revision=\"latest\",source_workload_namespace=\"unknown\",source_principal=\"unknown\","
        "source_app=\"unknown\",source_version=\"unknown\",source_cluster=\"unknown\",destination_workload="
        "\"unknown\",destination_workload_namespace=\"unknown\",destination_principal=\"unknown\","
        "destination_app=\"unknown\",destination_version=\"unknown\",destination_service=\"unknown\","
        "destination_canonical_service=\"unknown\",destination_canonical_revision=\"latest\","
        "destination_service_name=\"unknown\",destination_service_namespace=\"unknown\",destination_cluster="
        "\"unknown\",request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"none\"}";
    char line[2048];
    snprintf(line, sizeof(line), "istio_tcp_connections_opened_total%s 1\n", tcp_labels);
    assert_true(contains(s, line));
    snprintf(line, sizeof(line), "istio_tcp_connections_closed_total%s 1\n", tcp_labels);
    assert_true(contains(s, line));
    snprintf(line, sizeof(line), "istio_tcp_sent_bytes_total%s 15\n", tcp_labels);
    assert_true(contains(s, line));
    snprintf(line, sizeof(line), "istio_tcp_received_bytes_total%s 40\n", tcp_labels);
    assert_true(contains(s, line));
    free(s);
    fx_free(f);
}

/* ---- seed 004: attributegen + route_name ---- */
static void test_seed004_route_name(void **state)
{
    (void)state;
    struct keel_config_kv labels[] = { { "app", "podinfo", { 0 } } };
    struct keel_telemetry_workload self = { "podinfo", "podinfo", labels, 1, "podinfo-waypoint" };
    struct fixture *f = fx_new(load_seed("004-route-metrics.yaml"), &self);
    static const struct { const char *method, *path; } reqs[] = { { "GET", "/healthz" }, { "GET", "/healthz" },
                                                                  { "POST", "/echo" }, { "GET", "/other" } };
    for (size_t i = 0; i < 4; i++)
        for (int side = 0; side < 2; side++) {
            bookinfo_bag(&f->bag, side == 0);
            set_str(&f->bag, KEEL_ATTR_REQUEST_METHOD, reqs[i].method);
            set_str(&f->bag, KEEL_ATTR_REQUEST_URL_PATH, reqs[i].path);
            report(f->t, f->sh, &f->bag);
            if (i == 0) { /* the bag now carries the generated attribute */
                const struct keel_value *fs = keel_attr_bag_get(&f->bag, KEEL_ATTR_FILTER_STATE);
                assert_non_null(fs);
                const struct keel_str *v = keel_value_map_get(fs, "wasm.istio_operationId", 22);
                assert_non_null(v);
                assert_int_equal(v->len, 12);
                assert_memory_equal(v->p, "GET /healthz", 12);
            }
        }
    char *s = scrape(f->reg);
    assert_true(contains(s, "reporter=\"source\","));
    for (int side = 0; side < 2; side++) {
        const char *pol = side ? "none" : "unknown";
        char line[256];
        snprintf(line, sizeof(line), "connection_security_policy=\"%s\",route_name=\"GET /healthz\"} 2\n", pol);
        assert_true(contains(s, line));
        snprintf(line, sizeof(line), "connection_security_policy=\"%s\",route_name=\"POST /echo\"} 1\n", pol);
        assert_true(contains(s, line));
        snprintf(line, sizeof(line), "connection_security_policy=\"%s\",route_name=\"unknown\"} 1\n", pol);
        assert_true(contains(s, line));
    }
    /* only REQUEST_COUNT gets the tag */
    assert_null(strstr(s, "route_name=\"GET /healthz\",le="));
    free(s);
    fx_free(f);
    /* not the waypoint: the WasmPlugin does not apply -> route_name unknown everywhere */
    struct keel_telemetry_workload other = { "podinfo", "podinfo", labels, 1, NULL };
    f = fx_new(load_seed("004-route-metrics.yaml"), &other);
    bookinfo_bag(&f->bag, false);
    set_str(&f->bag, KEEL_ATTR_REQUEST_URL_PATH, "/healthz");
    report(f->t, f->sh, &f->bag);
    s = scrape(f->reg);
    assert_true(contains(s, "route_name=\"unknown\"} 1\n"));
    free(s);
    fx_free(f);
}

/* ---- Telemetry API: tagOverrides upsert/remove, disabled ---- */
static void test_tag_overrides(void **state)
{
    (void)state;
    struct fixture *f = fx_new(
        load_yaml("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
                  "metadata: {name: mesh-default, namespace: istio-system}\n"
                  "spec:\n  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n"
                  "    - match: {metric: REQUEST_COUNT}\n      tagOverrides:\n"
                  "        request_method: {value: request.method}\n"
                  "        grpc_response_status: {operation: REMOVE}\n"
                  "        source_app: {value: \"'fixed'\"}\n"
                  "        x: {value: \"request.headers['x-missing']\"}\n"
                  "    - match: {metric: REQUEST_DURATION}\n      disabled: true\n"
                  "    - match: {metric: ALL_METRICS, mode: SERVER}\n      disabled: true\n"),
        NULL);
    bookinfo_bag(&f->bag, true);
    report(f->t, f->sh, &f->bag);
    bookinfo_bag(&f->bag, false); /* server side: all disabled */
    report(f->t, f->sh, &f->bag);
    char *s = scrape(f->reg);
    assert_true(contains(s, ",source_app=\"fixed\",source_version=\"v1\","));
    assert_true(contains(s, "response_code=\"200\",response_flags=\"-\",connection_security_policy=\"unknown\","
                            "request_method=\"GET\",x=\"unknown\"} 1\n"));
    assert_null(strstr(s, "istio_requests_total{reporter=\"source\",source_workload=\"productpage-v1\","
                          "source_canonical_service=\"productpage\",source_canonical_revision=\"v1\","
                          "source_workload_namespace=\"default\",source_principal=\"unknown\",source_app=\"fixed\","
                          "source_version=\"v1\",source_cluster=\"Kubernetes\",destination_workload=\"details-v1\","
                          "destination_workload_namespace=\"default\",destination_principal=\"unknown\","
                          "destination_app=\"details\",destination_version=\"v1\",destination_service="
                          "\"details.default.svc.cluster.local\",destination_canonical_service=\"details\","
                          "destination_canonical_revision=\"v1\",destination_service_name=\"details\","
                          "destination_service_namespace=\"default\",destination_cluster=\"Kubernetes\","
                          "request_protocol=\"http\",response_code=\"200\",grpc_response_status"));
    assert_null(strstr(s, "istio_request_duration_milliseconds"));
    assert_null(strstr(s, "reporter=\"destination\""));
    assert_true(contains(s, "istio_response_bytes_bucket{reporter=\"source\""));
    assert_true(contains(s, "grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\","
                            "le=\"1\"}"));
    free(s);
    fx_free(f);
}

/* root disables SERVER; the namespace re-enables it (telemetry-api.md §6.5) */
static void test_scoping_reenable(void **state)
{
    (void)state;
    const char *yaml = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
                       "metadata: {name: root, namespace: istio-system}\n"
                       "spec:\n  metrics:\n  - providers: [{name: prometheus}]\n    overrides:\n"
                       "    - match: {metric: ALL_METRICS, mode: SERVER}\n      disabled: true\n"
                       "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
                       "metadata: {name: ns, namespace: default}\n"
                       "spec:\n  metrics:\n  - overrides:\n    - match: {mode: SERVER}\n";
    struct keel_telemetry_workload in_default = { "details-v1", "default", NULL, 0, NULL };
    struct fixture *f = fx_new(load_yaml(yaml), &in_default);
    bookinfo_bag(&f->bag, false);
    report(f->t, f->sh, &f->bag);
    char *s = scrape(f->reg);
    assert_true(contains(s, "istio_requests_total{reporter=\"destination\""));
    free(s);
    fx_free(f);
    struct keel_telemetry_workload in_other = { "x", "other", NULL, 0, NULL };
    f = fx_new(load_yaml(yaml), &in_other);
    bookinfo_bag(&f->bag, false);
    report(f->t, f->sh, &f->bag);
    s = scrape(f->reg);
    assert_null(strstr(s, "istio_requests_total"));
    free(s);
    fx_free(f);
}

/* ---- Mixer rules: match errors, namespaces, distribution, value types ---- */
static void test_rules_match_and_kinds(void **state)
{
    (void)state;
    const char *yaml =
        "apiVersion: config.istio.io/v1alpha2\nkind: metric\nmetadata: {name: lat, namespace: istio-system}\n"
        "spec:\n  value: response.duration\n  dimensions:\n    code: response.code\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: metric\nmetadata: {name: g, namespace: istio-system}\n"
        "spec:\n  value: \"2.5\"\n  dimensions:\n    my-label: '\"v\"'\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: prometheus\nmetadata: {name: h, namespace: istio-system}\n"
        "spec:\n  metrics:\n  - name: latency.seconds\n    instance_name: lat.metric.istio-system\n"
        "    kind: DISTRIBUTION\n    label_names: [code]\n"
        "    buckets: {explicit_buckets: {bounds: [0.001, 0.01, 0.1]}}\n"
        "  - name: gauge-thing\n    namespace: acme\n    instance_name: g.metric.istio-system\n    kind: GAUGE\n"
        "    label_names: [my-label]\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r1, namespace: istio-system}\n"
        "spec:\n  match: request.path == \"/x\"\n  actions:\n  - handler: h.prometheus\n"
        "    instances: [lat.metric]\n"
        "---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r2, namespace: shop}\n"
        "spec:\n  actions:\n  - handler: h.prometheus.istio-system\n    instances: [g.metric.istio-system]\n";
    struct fixture *f = fx_new(load_yaml(yaml), NULL);
    /* no request.path: match error, counted */
    bookinfo_bag(&f->bag, false);
    report(f->t, f->sh, &f->bag);
    set_str(&f->bag, KEEL_ATTR_REQUEST_PATH, "/x");
    report(f->t, f->sh, &f->bag);
    keel_attr_bag_del(&f->bag, KEEL_ATTR_RESPONSE_CODE); /* dimension error: instance dropped */
    report(f->t, f->sh, &f->bag);
    /* the shop rule: only reports whose identity namespace is shop */
    set_str(&f->bag, KEEL_ATTR_DESTINATION_NAMESPACE, "shop");
    report(f->t, f->sh, &f->bag);
    char *s = scrape(f->reg);
    assert_true(contains(s, "# HELP acme_gaugething gauge-thing\n# TYPE acme_gaugething gauge\n"
                            "acme_gaugething{mylabel=\"v\"} 2.5\n"));
    assert_true(contains(s, "# TYPE istio_latency_seconds histogram\n"
                            "istio_latency_seconds_bucket{code=\"200\",le=\"0.001\"} 0\n"
                            "istio_latency_seconds_bucket{code=\"200\",le=\"0.01\"} 1\n"
                            "istio_latency_seconds_bucket{code=\"200\",le=\"0.1\"} 1\n"
                            "istio_latency_seconds_bucket{code=\"200\",le=\"+Inf\"} 1\n"
                            "istio_latency_seconds_sum{code=\"200\"} 0.001817\n"
                            "istio_latency_seconds_count{code=\"200\"} 1\n"));
    assert_true(contains(s, "keel_telemetry_match_errors_total{rule=\"r1.rule.istio-system\"} 1\n"));
    assert_true(contains(s, "keel_telemetry_instance_errors_total{instance=\"lat.metric.istio-system\"} 2\n"));
    free(s);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed000_stdio),
        cmocka_unit_test(test_std_series_runs),
        cmocka_unit_test(test_stdio_console),
        cmocka_unit_test(test_seed001_double),
        cmocka_unit_test(test_standard_labels),
        cmocka_unit_test(test_seed004_route_name),
        cmocka_unit_test(test_tag_overrides),
        cmocka_unit_test(test_scoping_reenable),
        cmocka_unit_test(test_rules_match_and_kinds),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    keel_buf_pool_drain();
    return rc;
}
