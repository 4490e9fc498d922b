/* The trace store: caps and eviction (oldest trace first, counted), Zipkin's merge of a
 * span reported twice, the query filters of /api/v2/traces, the name lists and the
 * dependency links. */
#include "core/err.h"
#include "tracing/store.h"
#include "tracing/zipkin_json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static void add_json(struct keel_trace_store *st, const char *json)
{
    struct keel_zipkin_list l = { 0 };
    char err[256];
    if (keel_zipkin_json_parse(json, strlen(json), &l, err, sizeof(err)) < 0)
        fail_msg("%s: %s", json, err);
    for (size_t i = 0; i < l.n; i++)
        keel_trace_store_add(st, l.spans[i]);
    l.n = 0;
    keel_zipkin_list_fini(&l);
}

/* A span of trace t (1-based small numbers), id i, parent p (0 = root). */
static void add_span(struct keel_trace_store *st, int t, int i, int p, const char *kind,
                     const char *service, const char *remote, const char *name, long long ts,
                     long long dur, const char *tags)
{
    char json[2048], parent[64] = "", k[64] = "", r[128] = "";
    if (p)
        snprintf(parent, sizeof(parent), "\"parentId\":\"%016x\",", p);
    if (kind)
        snprintf(k, sizeof(k), "\"kind\":\"%s\",", kind);
    if (remote)
        snprintf(r, sizeof(r), "\"remoteEndpoint\":{\"serviceName\":\"%s\"},", remote);
    snprintf(json, sizeof(json),
             "[{\"traceId\":\"%032x\",\"id\":\"%016x\",%s%s%s\"name\":\"%s\",\"timestamp\":%lld,"
             "\"duration\":%lld,\"localEndpoint\":{\"serviceName\":\"%s\"},\"tags\":{%s}}]",
             t, i, parent, k, r, name, ts, dur, service, tags ? tags : "");
    add_json(st, json);
}

static struct keel_trace *get(struct keel_trace_store *st, int t)
{
    char id[33];
    snprintf(id, sizeof(id), "%016x", t); /* a 128-bit id with zero high bits is stored as 64 */
    return keel_trace_store_get(st, id);
}

static void eviction_by_spans(void **state)
{
    struct keel_trace_store_limits lim = { 10, 0, 0 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    for (int t = 1; t <= 8; t++)
        for (int i = 1; i <= 3; i++)
            add_span(st, t, i, i - 1, NULL, "svc", NULL, "op", 1000 + t, 5, NULL);
    struct keel_trace_store_stats s;
    keel_trace_store_stats(st, &s);
    assert_true(s.spans <= 10);
    assert_int_equal(s.accepted, 24);
    assert_int_equal(s.evicted, 24 - s.spans);
    assert_int_equal(s.traces, 3); /* 9 spans of the 3 newest; the 4th newest went */
    for (int t = 1; t <= 5; t++)
        assert_null(get(st, t));
    for (int t = 6; t <= 8; t++)
        assert_int_equal(get(st, t)->n_spans, 3);
    keel_trace_store_free(st);
}

static void eviction_by_bytes(void **state)
{
    struct keel_trace_store_limits lim = { 0, 20000, 0 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    char tags[1200];
    snprintf(tags, sizeof(tags), "\"big\":\"%01000d\"", 0);
    for (int t = 1; t <= 100; t++)
        add_span(st, t, 1, 0, NULL, "svc", NULL, "op", 1000, 5, tags);
    struct keel_trace_store_stats s;
    keel_trace_store_stats(st, &s);
    assert_true(s.bytes <= 20000);
    assert_true(s.traces >= 10 && s.traces < 20);
    assert_int_equal(s.evicted, 100 - s.traces);
    assert_non_null(get(st, 100));
    assert_null(get(st, 1));
    /* the oldest kept is the one right after the evicted ones */
    assert_non_null(get(st, 100 - (int)s.traces + 1));
    assert_null(get(st, 100 - (int)s.traces));
    keel_trace_store_free(st);
}

static void trace_cap_rejects(void **state)
{
    struct keel_trace_store_limits lim = { 1000, 0, 5 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    for (int i = 1; i <= 7; i++)
        add_span(st, 1, i, 0, NULL, "svc", NULL, "op", 1000, 5, NULL);
    struct keel_trace_store_stats s;
    keel_trace_store_stats(st, &s);
    assert_int_equal(s.spans, 5);
    assert_int_equal(s.accepted, 5);
    assert_int_equal(s.rejected, 2);
    keel_trace_store_free(st);
}

static void merge_same_span(void **state)
{
    struct keel_trace_store_limits lim = { 1000, 0, 0 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    add_json(st, "[{\"traceId\":\"1\",\"id\":\"2\",\"kind\":\"SERVER\",\"name\":\"unknown\","
                 "\"localEndpoint\":{\"serviceName\":\"a\"},\"tags\":{\"k\":\"early\",\"e\":\"1\"},"
                 "\"annotations\":[{\"timestamp\":5,\"value\":\"x\"}]}]");
    add_json(st, "[{\"traceId\":\"1\",\"id\":\"2\",\"kind\":\"SERVER\",\"name\":\"get\",\"parentId\":\"9\","
                 "\"timestamp\":10,\"duration\":3,\"debug\":true,"
                 "\"localEndpoint\":{\"serviceName\":\"b\",\"ipv4\":\"1.2.3.4\"},"
                 "\"remoteEndpoint\":{\"serviceName\":\"c\"},\"tags\":{\"k\":\"late\"},"
                 "\"annotations\":[{\"timestamp\":5,\"value\":\"x\"},{\"timestamp\":1,\"value\":\"y\"}]}]");
    /* same id, other kind: a different span (the client side of a shared id) */
    add_json(st, "[{\"traceId\":\"1\",\"id\":\"2\",\"kind\":\"CLIENT\"}]");
    struct keel_trace *t = keel_trace_store_get(st, "0000000000000001");
    assert_non_null(t);
    assert_int_equal(t->n_spans, 2);
    struct keel_buf b = { 0 };
    keel_zipkin_json_write_span(&b, t->spans[0]);
    keel_buf_append(&b, "", 1);
    assert_string_equal(keel_buf_rptr(&b),
        "{\"traceId\":\"0000000000000001\",\"parentId\":\"0000000000000009\",\"id\":\"0000000000000002\","
        "\"kind\":\"SERVER\",\"name\":\"get\",\"timestamp\":10,\"duration\":3,"
        "\"localEndpoint\":{\"serviceName\":\"a\",\"ipv4\":\"1.2.3.4\"},"
        "\"remoteEndpoint\":{\"serviceName\":\"c\"},"
        "\"annotations\":[{\"timestamp\":1,\"value\":\"y\"},{\"timestamp\":5,\"value\":\"x\"}],"
        "\"tags\":{\"e\":\"1\",\"k\":\"late\"},\"debug\":true}");
    keel_buf_release(&b);
    struct keel_trace_store_stats s;
    keel_trace_store_stats(st, &s);
    assert_int_equal(s.merged, 1);
    assert_int_equal(s.spans, 2);
    assert_int_equal(t->timestamp, 10);
    keel_trace_store_free(st);
}

static struct keel_trace_query window(void)
{
    return (struct keel_trace_query){ .end_ts = 10000, .lookback = 10000, .limit = 10 };
}

static size_t count(struct keel_trace_store *st, const struct keel_trace_query *q, int *first)
{
    size_t n;
    struct keel_trace **v = keel_trace_store_query(st, q, &n);
    if (first != NULL)
        *first = n > 0 ? (int)strtol(v[0]->id, NULL, 16) : 0;
    free(v);
    return n;
}

static void query_filters(void **state)
{
    struct keel_trace_store_limits lim = { 1000, 0, 0 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    /* trace 1 (t=1 ms): front -> back, back is slow and tagged
     * trace 2 (t=2 ms): front only, annotated
     * trace 3 (t=3 ms): other service */
    add_span(st, 1, 1, 0, "SERVER", "front", NULL, "get /", 1000000, 500, "\"http.status_code\":\"200\"");
    add_span(st, 1, 2, 1, "CLIENT", "front", "back", "get /b", 1000100, 400, NULL);
    add_span(st, 1, 3, 2, "SERVER", "back", NULL, "get /b", 1000200, 300000,
             "\"error\":\"true\",\"http.status_code\":\"500\"");
    add_json(st, "[{\"traceId\":\"00000000000000000000000000000002\",\"id\":\"1\",\"name\":\"get /\","
                 "\"timestamp\":2000000,\"duration\":7,\"localEndpoint\":{\"serviceName\":\"front\"},"
                 "\"annotations\":[{\"timestamp\":2000001,\"value\":\"retried\"}]}]");
    add_span(st, 3, 1, 0, NULL, "other", NULL, "work", 3000000, 10, NULL);
    /* a trace outside the window and one without timestamps */
    add_span(st, 4, 1, 0, NULL, "front", NULL, "get /", 20000000, 10, NULL);
    add_json(st, "[{\"traceId\":\"5\",\"id\":\"1\",\"localEndpoint\":{\"serviceName\":\"front\"}}]");

    struct keel_trace_query q = window();
    int first;
    assert_int_equal(count(st, &q, &first), 3);
    assert_int_equal(first, 3); /* newest first */
    q.limit = 1;
    assert_int_equal(count(st, &q, NULL), 1);

    q = window();
    q.service = "front";
    assert_int_equal(count(st, &q, &first), 2);
    assert_int_equal(first, 2);
    q.span_name = "get /b";
    assert_int_equal(count(st, &q, &first), 1);
    assert_int_equal(first, 1);
    q.service = "other";
    assert_int_equal(count(st, &q, NULL), 0);

    q = window();
    q.remote_service = "back";
    assert_int_equal(count(st, &q, &first), 1);

    q = window();
    q.terms[0].key = "error";
    q.n_terms = 1;
    assert_int_equal(count(st, &q, &first), 1);
    assert_int_equal(first, 1);
    q.terms[0].value = "true";
    assert_int_equal(count(st, &q, NULL), 1);
    q.terms[0].value = "false";
    assert_int_equal(count(st, &q, NULL), 0);
    q.terms[0] = (__typeof__(q.terms[0])){ "retried", NULL }; /* an annotation value */
    assert_int_equal(count(st, &q, &first), 1);
    assert_int_equal(first, 2);
    q.terms[0] = (__typeof__(q.terms[0])){ "http.status_code", "200" };
    q.terms[1] = (__typeof__(q.terms[1])){ "http.status_code", "500" };
    q.n_terms = 2; /* both in one trace, on different spans: a match */
    assert_int_equal(count(st, &q, &first), 1);
    /* with a service, the terms must be on that service's spans */
    q.service = "front";
    assert_int_equal(count(st, &q, NULL), 0);

    q = window();
    q.min_duration = 300000;
    assert_int_equal(count(st, &q, &first), 1);
    assert_int_equal(first, 1);
    q.max_duration = 299999 + 2;
    assert_int_equal(count(st, &q, NULL), 1);
    q.min_duration = 8;
    q.max_duration = 400;
    assert_int_equal(count(st, &q, &first), 2); /* trace 1 (400 µs client) and trace 3 (10) */
    q.service = "back"; /* back's only span is 300000 µs */
    assert_int_equal(count(st, &q, NULL), 0);

    q = window();
    q.end_ts = 2500;
    q.lookback = 1000; /* [1500, 2500] ms: trace 2 only */
    assert_int_equal(count(st, &q, &first), 1);
    assert_int_equal(first, 2);
    keel_trace_store_free(st);
}

static void join(const char **v, size_t n, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? "," : "", v[i]);
    free(v);
}

static void name_lists(void **state)
{
    struct keel_trace_store_limits lim = { 1000, 0, 0 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    add_span(st, 1, 1, 0, "SERVER", "Front", NULL, "GET /", 1000, 5, NULL);
    add_span(st, 1, 2, 1, "CLIENT", "front", "Back", "get /b", 1000, 5, NULL);
    add_span(st, 2, 1, 0, "CLIENT", "front", "db", "query", 1000, 5, NULL);
    add_span(st, 2, 2, 1, "SERVER", "back", NULL, "get /b", 1000, 5, NULL);
    char s[256];
    size_t n;
    const char **v = keel_trace_store_services(st, &n);
    join(v, n, s, sizeof(s));
    assert_string_equal(s, "back,front");
    v = keel_trace_store_span_names(st, "front", &n);
    join(v, n, s, sizeof(s));
    assert_string_equal(s, "get /,get /b,query");
    v = keel_trace_store_remote_services(st, "front", &n);
    join(v, n, s, sizeof(s));
    assert_string_equal(s, "back,db");
    v = keel_trace_store_span_names(st, "nobody", &n);
    join(v, n, s, sizeof(s));
    assert_string_equal(s, "");
    keel_trace_store_free(st);
}

static void dependencies(void **state)
{
    struct keel_trace_store_limits lim = { 1000, 0, 0 };
    struct keel_trace_store *st = keel_trace_store_new(&lim);
    for (int t = 1; t <= 3; t++) {
        /* Istio without shared ids: gateway SERVER -> gateway CLIENT -> productpage SERVER
         * -> productpage CLIENT -> details SERVER (an error in trace 3) */
        add_span(st, t, 1, 0, "SERVER", "gateway", NULL, "in", 1000000, 9, NULL);
        add_span(st, t, 2, 1, "CLIENT", "gateway", "productpage", "out", 1000000, 8, NULL);
        add_span(st, t, 3, 2, "SERVER", "productpage", NULL, "in", 1000000, 7, NULL);
        add_span(st, t, 4, 3, "CLIENT", "productpage", "details", "out", 1000000, 6, NULL);
        add_span(st, t, 5, 4, "SERVER", "details", NULL, "in", 1000000, 5,
                 t == 3 ? "\"error\":\"true\"" : NULL);
    }
    /* a client whose server is not instrumented: the link comes from the client */
    add_span(st, 4, 1, 0, "CLIENT", "details", "mysql", "query", 1000000, 5, "\"error\":\"\"");
    /* messaging */
    add_span(st, 5, 1, 0, "PRODUCER", "details", "kafka", "send", 1000000, 5, NULL);
    add_span(st, 5, 2, 1, "CONSUMER", "ratings", "kafka", "recv", 1000000, 5, NULL);
    /* a shared span id (Zipkin's B3 default): the server takes the client's id */
    add_json(st, "[{\"traceId\":\"6\",\"id\":\"1\",\"kind\":\"CLIENT\",\"timestamp\":1000000,"
                 "\"localEndpoint\":{\"serviceName\":\"web\"}},"
                 "{\"traceId\":\"6\",\"id\":\"1\",\"kind\":\"SERVER\",\"shared\":true,\"timestamp\":1000000,"
                 "\"localEndpoint\":{\"serviceName\":\"api\"}}]");
    /* outside the window */
    add_span(st, 7, 1, 0, "CLIENT", "late", "later", "x", 90000000, 5, NULL);
    size_t n;
    struct keel_dependency_link *l = keel_trace_store_dependencies(st, 2000, 2000, &n);
    char s[1024] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(s + strlen(s), sizeof(s) - strlen(s), "%s>%s:%llu/%llu ", l[i].parent, l[i].child,
                 (unsigned long long)l[i].calls, (unsigned long long)l[i].errors);
    free(l);
    assert_string_equal(s, "details>kafka:1/0 details>mysql:1/1 gateway>productpage:3/0 "
                           "kafka>ratings:1/0 productpage>details:3/1 web>api:1/0 ");
    keel_trace_store_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(eviction_by_spans), cmocka_unit_test(eviction_by_bytes),
        cmocka_unit_test(trace_cap_rejects), cmocka_unit_test(merge_same_span),
        cmocka_unit_test(query_filters),     cmocka_unit_test(name_lists),
        cmocka_unit_test(dependencies),
    };
    return cmocka_run_group_tests_name("tracing/store", tests, NULL, NULL);
}
