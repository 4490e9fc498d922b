/* The collector's HTTP API: POST /api/v2/spans, Zipkin's v2 query endpoints (as
 * zipkin2-api.yaml defines them), /health and Prometheus counters. */
#include "tracing/collector.h"

#include "core/alloc.h"
#include "core/err.h"
#include "tracing/zipkin_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 32
#define DEFAULT_LOOKBACK_MS 86400000 /* Zipkin's QUERY_LOOKBACK */
#define DEFAULT_LIMIT 10

struct params {
    struct {
        char *key, *value;
    } v[MAX_PARAMS];
    size_t n;
    char *mem;
};

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decode in place ('+' is a space, %XX a byte); false on a bad escape or a NUL. */
static bool url_decode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r == '%') {
            int hi = unhex(r[1]), lo = hi < 0 ? -1 : unhex(r[2]);
            if (lo < 0 || (hi == 0 && lo == 0))
                return false;
            *w++ = (char)(hi * 16 + lo);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return true;
}

static int parse_params(struct keel_str q, struct params *p, char *err, size_t errcap)
{
    p->n = 0;
    p->mem = keel_strndup(q.p == NULL ? "" : q.p, q.len);
    for (char *save = NULL, *kv = strtok_r(p->mem, "&", &save); kv != NULL;
         kv = strtok_r(NULL, "&", &save)) {
        if (p->n == MAX_PARAMS) {
            snprintf(err, errcap, "more than %d query parameters", MAX_PARAMS);
            return KEEL_EINVAL;
        }
        char *eq = strchr(kv, '=');
        if (eq != NULL)
            *eq = '\0';
        p->v[p->n].key = kv;
        p->v[p->n].value = eq != NULL ? eq + 1 : kv + strlen(kv);
        if (!url_decode(p->v[p->n].key) || !url_decode(p->v[p->n].value)) {
            snprintf(err, errcap, "bad %%-escape in the query");
            return KEEL_EINVAL;
        }
        p->n++;
    }
    return 0;
}

/* The last value of key, NULL when absent or empty (Zipkin treats both the same). */
static const char *param(const struct params *p, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->v[i].key, key))
            v = p->v[i].value;
    return v != NULL && *v != '\0' ? v : NULL;
}

static char *lower(const char *s)
{
    if (s == NULL)
        return NULL;
    char *d = keel_strdup(s);
    for (char *c = d; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return d;
}

/* A positive decimal integer; 0 when absent; KEEL_EINVAL with err set otherwise. */
static int number(const struct params *p, const char *key, int64_t *out, char *err, size_t errcap)
{
    const char *s = param(p, key);
    *out = 0;
    if (s == NULL)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno == ERANGE || v <= 0) {
        snprintf(err, errcap, "%s must be a positive integer: %s", key, s);
        return KEEL_EINVAL;
    }
    *out = v;
    return 0;
}

static void write_names(struct keel_buf *out, const char **v, size_t n)
{
    keel_buf_append_str(out, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            keel_buf_append_str(out, ",");
        keel_zipkin_json_str(out, v[i]);
    }
    keel_buf_append_str(out, "]");
    free(v);
}

static void write_trace(struct keel_buf *out, const struct keel_trace *t)
{
    keel_zipkin_json_write_spans(out, t->spans, t->n_spans);
}

static void text(struct keel_collector_response *res, int status, const char *msg)
{
    res->status = status;
    res->content_type = "text/plain; charset=utf-8";
    keel_buf_printf(res->body, "%s\n", msg);
}

/* ---- endpoints ---- */

static void post_spans(struct keel_trace_store *st, struct keel_collector_counters *cnt,
                       const struct keel_collector_request *req, struct keel_collector_response *res)
{
    struct keel_zipkin_list l = { 0 };
    char err[512];
    bool v1 = keel_str_eq(req->path, KEEL_STR("/api/v1/spans"));
    int rc = v1 ? keel_zipkin_json_parse_v1(req->body, req->body_len, &l, err, sizeof(err))
                : keel_zipkin_json_parse(req->body, req->body_len, &l, err, sizeof(err));
    if (rc < 0) {
        cnt->reports_rejected++;
        keel_trace_store_count_rejected(st, 1);
        text(res, 400, err);
        return;
    }
    for (size_t i = 0; i < l.n; i++)
        keel_trace_store_add(st, l.spans[i]); /* the store owns them now */
    l.n = 0;
    keel_zipkin_list_fini(&l);
    cnt->reports_accepted++;
    res->status = 202;
}

static int query(const struct params *p, int64_t now_ms, struct keel_trace_query *q, char *err,
                 size_t errcap)
{
    int64_t limit;
    memset(q, 0, sizeof(*q));
    if (number(p, "minDuration", &q->min_duration, err, errcap) < 0 ||
        number(p, "maxDuration", &q->max_duration, err, errcap) < 0 ||
        number(p, "endTs", &q->end_ts, err, errcap) < 0 ||
        number(p, "lookback", &q->lookback, err, errcap) < 0 ||
        number(p, "limit", &limit, err, errcap) < 0)
        return KEEL_EINVAL;
    if (q->max_duration != 0 && q->min_duration == 0) {
        snprintf(err, errcap, "minDuration is required when specifying maxDuration");
        return KEEL_EINVAL;
    }
    if (q->max_duration != 0 && q->max_duration < q->min_duration) {
        snprintf(err, errcap, "maxDuration should be >= minDuration");
        return KEEL_EINVAL;
    }
    if (q->end_ts == 0)
        q->end_ts = now_ms;
    if (q->lookback == 0)
        q->lookback = DEFAULT_LOOKBACK_MS;
    if (q->lookback > q->end_ts)
        q->lookback = q->end_ts;
    q->limit = limit > 0 ? (size_t)limit : DEFAULT_LIMIT;
    return 0;
}

/* "http.uri=/foo and retried": terms joined by " and "; s is ours to cut up. */
static int annotation_query(char *s, struct keel_trace_query *q, char *err, size_t errcap)
{
    while (s != NULL && *s != '\0') {
        char *next = strstr(s, " and ");
        if (next != NULL) {
            *next = '\0';
            next += 5;
        }
        while (*s == ' ')
            s++;
        size_t len = strlen(s);
        while (len > 0 && s[len - 1] == ' ')
            s[--len] = '\0';
        if (len > 0) {
            if (q->n_terms == KEEL_TRACE_QUERY_MAX_TERMS) {
                snprintf(err, errcap, "annotationQuery: more than %d terms",
                         KEEL_TRACE_QUERY_MAX_TERMS);
                return KEEL_EINVAL;
            }
            char *eq = strchr(s, '=');
            if (eq != NULL)
                *eq = '\0';
            q->terms[q->n_terms].key = s;
            q->terms[q->n_terms].value = eq != NULL ? eq + 1 : NULL;
            q->n_terms++;
        }
        s = next;
    }
    return 0;
}

static void get_traces(struct keel_trace_store *st, const struct params *p, int64_t now_ms,
                       struct keel_collector_response *res)
{
    struct keel_trace_query q;
    char err[256];
    char *service = lower(param(p, "serviceName")), *remote = lower(param(p, "remoteServiceName"));
    char *name = lower(param(p, "spanName"));
    char *aq = param(p, "annotationQuery") ? keel_strdup(param(p, "annotationQuery")) : NULL;
    if (query(p, now_ms, &q, err, sizeof(err)) < 0 ||
        annotation_query(aq, &q, err, sizeof(err)) < 0) {
        text(res, 400, err);
    } else {
        q.service = service;
        q.remote_service = remote;
        q.span_name = name != NULL && strcmp(name, "all") ? name : NULL; /* "all": the old UI */
        size_t n;
        struct keel_trace **v = keel_trace_store_query(st, &q, &n);
        keel_buf_append_str(res->body, "[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                keel_buf_append_str(res->body, ",");
            write_trace(res->body, v[i]);
        }
        keel_buf_append_str(res->body, "]");
        free(v);
    }
    free(service);
    free(remote);
    free(name);
    free(aq);
}

static void get_trace(struct keel_trace_store *st, struct keel_str id,
                      struct keel_collector_response *res)
{
    char tid[33], err[256], *raw = keel_strndup(id.p, id.len);
    /* ids in URLs are matched case-insensitively, as Zipkin's lenient lookup does */
    char *low = lower(raw);
    if (keel_zipkin_trace_id(low, strlen(low), tid, err, sizeof(err)) < 0) {
        text(res, 400, err);
    } else {
        struct keel_trace *t = keel_trace_store_get(st, tid);
        if (t == NULL) {
            char msg[128];
            snprintf(msg, sizeof(msg), "%s not found", tid);
            text(res, 404, msg);
        } else {
            write_trace(res->body, t);
        }
    }
    free(raw);
    free(low);
}

static void get_trace_many(struct keel_trace_store *st, const struct params *p,
                           struct keel_collector_response *res)
{
    const char *ids = param(p, "traceIds");
    if (ids == NULL) {
        text(res, 400, "traceIds parameter is empty");
        return;
    }
    char *all = lower(ids), err[256];
    bool first = true;
    struct keel_buf body = { 0 };
    keel_buf_append_str(&body, "[");
    for (char *save = NULL, *id = strtok_r(all, ",", &save); id != NULL;
         id = strtok_r(NULL, ",", &save)) {
        char tid[33];
        if (keel_zipkin_trace_id(id, strlen(id), tid, err, sizeof(err)) < 0) {
            text(res, 400, err);
            keel_buf_release(&body);
            free(all);
            return;
        }
        struct keel_trace *t = keel_trace_store_get(st, tid);
        if (t == NULL)
            continue;
        if (!first)
            keel_buf_append_str(&body, ",");
        write_trace(&body, t);
        first = false;
    }
    keel_buf_append_str(&body, "]");
    keel_buf_append(res->body, keel_buf_rptr(&body), keel_buf_len(&body));
    keel_buf_release(&body);
    free(all);
}

static void get_dependencies(struct keel_trace_store *st, const struct params *p, int64_t now_ms,
                             struct keel_collector_response *res)
{
    int64_t end_ts, lookback;
    char err[256];
    if (number(p, "endTs", &end_ts, err, sizeof(err)) < 0 ||
        number(p, "lookback", &lookback, err, sizeof(err)) < 0) {
        text(res, 400, err);
        return;
    }
    if (end_ts == 0) {
        text(res, 400, "endTs is required");
        return;
    }
    if (lookback == 0 || lookback > end_ts)
        lookback = lookback == 0 ? DEFAULT_LOOKBACK_MS : end_ts;
    if (lookback > end_ts)
        lookback = end_ts;
    size_t n;
    struct keel_dependency_link *v = keel_trace_store_dependencies(st, end_ts, lookback, &n);
    keel_buf_append_str(res->body, "[");
    for (size_t i = 0; i < n; i++) {
        keel_buf_append_str(res->body, i ? ",{\"parent\":" : "{\"parent\":");
        keel_zipkin_json_str(res->body, v[i].parent);
        keel_buf_append_str(res->body, ",\"child\":");
        keel_zipkin_json_str(res->body, v[i].child);
        keel_buf_printf(res->body, ",\"callCount\":%" PRIu64, v[i].calls);
        if (v[i].errors > 0)
            keel_buf_printf(res->body, ",\"errorCount\":%" PRIu64, v[i].errors);
        keel_buf_append_str(res->body, "}");
    }
    keel_buf_append_str(res->body, "]");
    free(v);
}

static void metrics(struct keel_trace_store *st, const struct keel_collector_counters *cnt,
                    struct keel_collector_response *res)
{
    struct keel_trace_store_stats s;
    keel_trace_store_stats(st, &s);
    struct keel_buf *o = res->body;
    keel_buf_append_str(o, "# HELP keel_collector_spans_total Spans received by the collector, "
                           "by what became of them.\n# TYPE keel_collector_spans_total counter\n");
    keel_buf_printf(o, "keel_collector_spans_total{result=\"accepted\"} %" PRIu64 "\n", s.accepted);
    keel_buf_printf(o, "keel_collector_spans_total{result=\"rejected\"} %" PRIu64 "\n", s.rejected);
    keel_buf_printf(o, "keel_collector_spans_total{result=\"evicted\"} %" PRIu64 "\n", s.evicted);
    keel_buf_printf(o, "keel_collector_spans_total{result=\"merged\"} %" PRIu64 "\n", s.merged);
    keel_buf_append_str(o, "# HELP keel_collector_reports_total POST /api/v2/spans requests.\n"
                           "# TYPE keel_collector_reports_total counter\n");
    keel_buf_printf(o, "keel_collector_reports_total{result=\"accepted\"} %" PRIu64 "\n",
                    cnt->reports_accepted);
    keel_buf_printf(o, "keel_collector_reports_total{result=\"rejected\"} %" PRIu64 "\n",
                    cnt->reports_rejected);
    keel_buf_printf(o, "# HELP keel_collector_traces Traces in the store.\n"
                       "# TYPE keel_collector_traces gauge\nkeel_collector_traces %zu\n", s.traces);
    keel_buf_printf(o, "# HELP keel_collector_spans Spans in the store.\n"
                       "# TYPE keel_collector_spans gauge\nkeel_collector_spans %zu\n", s.spans);
    keel_buf_printf(o, "# HELP keel_collector_bytes Bytes of span records in the store.\n"
                       "# TYPE keel_collector_bytes gauge\nkeel_collector_bytes %zu\n", s.bytes);
    res->status = 200;
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

static bool is(struct keel_str a, const char *b) { return keel_str_eq(a, keel_str_c(b)); }

void keel_collector_handle(struct keel_trace_store *st, struct keel_collector_counters *cnt,
                           const struct keel_collector_request *req,
                           struct keel_collector_response *res)
{
    res->status = 200;
    res->content_type = "application/json";
    bool get = is(req->method, "GET") || is(req->method, "HEAD");
    bool post = is(req->method, "POST");
    struct keel_str path = req->path;
    if ((is(path, "/api/v2/spans") || is(path, "/api/v1/spans")) && post) {
        post_spans(st, cnt, req, res);
        return;
    }
    if (!get) {
        text(res, 405, "method not allowed");
        return;
    }
    struct params p;
    char err[256];
    if (parse_params(req->query, &p, err, sizeof(err)) < 0) {
        text(res, 400, err);
        free(p.mem);
        return;
    }
    const char *trace_prefix = "/api/v2/trace/";
    if (is(path, "/api/v2/services")) {
        size_t n;
        const char **v = keel_trace_store_services(st, &n); /* n is set by this call */
        write_names(res->body, v, n);
    } else if (is(path, "/api/v2/spans") || is(path, "/api/v2/remoteServices")) {
        char *service = lower(param(&p, "serviceName"));
        if (service == NULL) {
            text(res, 400, "serviceName is required");
        } else {
            size_t n;
            const char **v = is(path, "/api/v2/spans")
                                 ? keel_trace_store_span_names(st, service, &n)
                                 : keel_trace_store_remote_services(st, service, &n);
            write_names(res->body, v, n);
        }
        free(service);
    } else if (is(path, "/api/v2/traces")) {
        get_traces(st, &p, req->now_ms, res);
    } else if (path.len > strlen(trace_prefix) && !memcmp(path.p, trace_prefix, strlen(trace_prefix))) {
        struct keel_str id = { path.p + strlen(trace_prefix), path.len - strlen(trace_prefix) };
        get_trace(st, id, res);
    } else if (is(path, "/api/v2/traceMany")) {
        get_trace_many(st, &p, res);
    } else if (is(path, "/api/v2/dependencies")) {
        get_dependencies(st, &p, req->now_ms, res);
    } else if (is(path, "/api/v2/autocompleteKeys") || is(path, "/api/v2/autocompleteValues")) {
        keel_buf_append_str(res->body, "[]"); /* no keys configured for autocompletion */
    } else if (is(path, "/health")) {
        keel_buf_append_str(res->body, "{\"status\":\"UP\",\"zipkin\":{\"status\":\"UP\"}}");
    } else if (is(path, "/metrics") || is(path, "/prometheus")) {
        metrics(st, cnt, res);
    } else {
        text(res, 404, "not found");
    }
    free(p.mem);
}
