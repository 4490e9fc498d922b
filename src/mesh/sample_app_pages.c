/* The sample app's endpoints: httpbin's /status and /headers, helloworld's /hello,
 * podinfo's /echo, /delay, and the main page that makes the --call calls. */
#include "mesh/sample_app_int.h"

#include "core/rand.h"

#include <stdio.h>
#include <string.h>

#define MAX_DELAY_MS 60000

/* What a handler works with. */
struct page {
    const struct sa_app *app;
    struct sa_downs *downs;
    struct keel_buf *resp; /* the response body */
};

static const char teapot[] =
    "\n    -=[ teapot ]=-\n\n       _...._\n     .'  _ _ `.\n    | .\"` ^ `\". _,\n"
    "    \\_;`\"---\"`|//\n      |       ;/\n      \\_     _/\n        `\"\"\"`\n";

static bool starts(struct keel_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len >= n && memcmp(s.p, lit, n) == 0;
}

/* Digits only, at most max; -1 otherwise. */
static long number(const char *p, size_t len, long max)
{
    long v = 0;
    if (len == 0 || len > 9)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v <= max ? v : -1;
}

/* httpbin's /status/{codes}: one code, or a comma list to pick from at random. */
static void status_page(struct page *pg, struct keel_str codes, struct sa_answer *a)
{
    int pick[16];
    size_t n = 0, i = 0;
    while (i <= codes.len && n < 16) {
        size_t j = i;
        while (j < codes.len && codes.p[j] != ',')
            j++;
        long v = number(codes.p + i, j - i, 599);
        if (v < 200) {
            a->status = 400;
            a->ctype = "text/plain";
            keel_buf_append_str(pg->resp, "invalid status code\n");
            return;
        }
        pick[n++] = (int)v;
        i = j + 1;
    }
    a->status = pick[keel_rand64() % n];
    a->ctype = "text/html; charset=utf-8";
    if (a->status == 418) {
        a->extra = "x-more-info: http://tools.ietf.org/html/rfc2324\r\n";
        keel_buf_append_str(pg->resp, teapot);
    }
}

/* httpbin's /headers: {"headers": {...}}, repeated names joined by commas. */
static void headers_page(struct page *pg, const struct keel_http_request *req, struct sa_answer *a)
{
    keel_buf_append_str(pg->resp, "{\"headers\":{");
    bool first = true;
    for (size_t i = 0; i < req->n_headers; i++) {
        struct keel_str n = req->headers[i].name;
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = keel_str_caseeq(req->headers[k].name, n);
        if (seen)
            continue;
        keel_buf_append_str(pg->resp, first ? "" : ",");
        first = false;
        sa_json_strn(pg->resp, n.p, n.len);
        keel_buf_append_str(pg->resp, ":\"");
        size_t mark = keel_buf_len(pg->resp);
        for (size_t k = i; k < req->n_headers; k++) {
            if (!keel_str_caseeq(req->headers[k].name, n))
                continue;
            if (keel_buf_len(pg->resp) > mark)
                keel_buf_append_str(pg->resp, ",");
            struct keel_str v = req->headers[k].value;
            /* the value without its quotes: the escaped text goes inside ours */
            size_t at = keel_buf_len(pg->resp);
            sa_json_strn(pg->resp, v.p, v.len);
            char *q = keel_buf_rptr(pg->resp) + at;
            size_t qlen = keel_buf_len(pg->resp) - at;
            memmove(q, q + 1, qlen - 2);
            pg->resp->wpos -= 2;
        }
        keel_buf_append_str(pg->resp, "\"");
    }
    keel_buf_append_str(pg->resp, "}}");
    a->ctype = "application/json";
}

/* Istio's trace propagation list, plus what bookinfo's productpage carries on. The first
 * TRACE_HEADERS are the trace context (and the request id that joins it), which
 * --no-propagate drops: the app of istio#7730, whose traces fall apart. */
static const char *const FORWARDED[] = {
    "x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
    "x-b3-flags", "x-ot-span-context", "b3", "traceparent", "tracestate",
    "x-cloud-trace-context", "grpc-trace-bin", "sw8", "x-datadog-trace-id",
    "x-datadog-parent-id", "x-datadog-sampling-priority", "end-user", "user-agent",
    "cookie", "authorization", "jwt",
};
#define TRACE_HEADERS 16

static bool forwarded(struct keel_str name, bool no_propagate)
{
    for (size_t i = no_propagate ? TRACE_HEADERS : 0; i < sizeof(FORWARDED) / sizeof(FORWARDED[0]);
         i++)
        if (keel_str_caseeq(name, keel_str_c(FORWARDED[i])))
            return true;
    return false;
}

/* The main page: the injected fault, else every call in order. */
static void main_page(struct page *pg, const struct keel_http_request *req, bool hello,
                      struct sa_answer *a)
{
    const struct sa_app *app = pg->app;
    const struct keel_sample_app_options *o = app->o;
    if (o->error_rate > 0 && (double)(keel_rand64() >> 11) / 9007199254740992.0 < o->error_rate) {
        a->status = 500;
        a->ctype = "application/json";
        keel_buf_append_str(pg->resp, "{\"name\":");
        sa_json_strn(pg->resp, o->name, strlen(o->name));
        keel_buf_append_str(pg->resp, ",\"version\":");
        sa_json_strn(pg->resp, o->version, strlen(o->version));
        keel_buf_append_str(pg->resp, ",\"path\":");
        sa_json_strn(pg->resp, req->target.p, req->target.len);
        keel_buf_append_str(pg->resp, ",\"error\":\"injected fault (--error-rate)\"}");
        return;
    }
    struct sa_forward fw = { .n = 0 };
    for (size_t i = 0; i < req->n_headers && fw.n < sizeof(fw.h) / sizeof(fw.h[0]); i++) {
        if (!forwarded(req->headers[i].name, o->no_propagate))
            continue;
        fw.h[fw.n++] = req->headers[i];
        fw.has_user_agent |= keel_str_caseeq(req->headers[i].name, KEEL_STR("user-agent"));
    }
    int failed = 0;
    if (hello) {
        /* helloworld's answer; calls, if any, follow as one JSON line */
        a->ctype = "text/plain";
        keel_buf_printf(pg->resp, "Hello version: %s, instance: %s\n", o->version, app->instance);
        if (o->n_calls > 0) {
            failed = sa_calls_run(app, pg->downs, &fw, pg->resp);
            keel_buf_append_str(pg->resp, "\n");
        }
    } else {
        a->ctype = "application/json";
        keel_buf_append_str(pg->resp, "{\"name\":");
        sa_json_strn(pg->resp, o->name, strlen(o->name));
        keel_buf_append_str(pg->resp, ",\"version\":");
        sa_json_strn(pg->resp, o->version, strlen(o->version));
        keel_buf_append_str(pg->resp, ",\"instance\":");
        sa_json_strn(pg->resp, app->instance, strlen(app->instance));
        keel_buf_append_str(pg->resp, ",\"path\":");
        sa_json_strn(pg->resp, req->target.p, req->target.len);
        keel_buf_append_str(pg->resp, ",\"calls\":");
        failed = sa_calls_run(app, pg->downs, &fw, pg->resp);
        keel_buf_append_str(pg->resp, "}");
    }
    a->status = o->strict_calls && failed > 0 ? 503 : 200;
}

void sa_route(const struct sa_app *app, struct sa_downs *downs, struct keel_buf *resp,
              const struct keel_http_request *req, const char *body, size_t body_len,
              struct sa_answer *a)
{
    struct page page = { app, downs, resp }, *pg = &page;
    struct keel_str path = req->target;
    if (starts(path, "http://")) { /* absolute-form: route on the path inside */
        const char *slash = memchr(path.p + 7, '/', path.len - 7);
        path = slash ? (struct keel_str){ slash, path.len - (size_t)(slash - path.p) }
                     : KEEL_STR("/");
    }
    const char *q = memchr(path.p, '?', path.len);
    if (q != NULL)
        path.len = (size_t)(q - path.p);
    a->status = 200;
    if (keel_str_eq(path, KEEL_STR("/healthz")) || keel_str_eq(path, KEEL_STR("/health"))) {
        a->ctype = "text/plain";
        a->no_latency = true;
        keel_buf_append_str(pg->resp, "ok");
    } else if (starts(path, "/status/")) {
        status_page(pg, (struct keel_str){ path.p + 8, path.len - 8 }, a);
    } else if (keel_str_eq(path, KEEL_STR("/headers"))) {
        headers_page(pg, req, a);
    } else if (keel_str_eq(path, KEEL_STR("/echo"))) {
        /* podinfo's echo: the body back, under the type it came with */
        a->ctype = "text/plain";
        for (size_t i = 0; i < req->n_headers; i++)
            if (keel_str_caseeq(req->headers[i].name, KEEL_STR("content-type")))
                a->ctype_in = req->headers[i].value;
        keel_buf_append(pg->resp, body, body_len);
    } else if (starts(path, "/delay/")) {
        long ms = number(path.p + 7, path.len - 7, MAX_DELAY_MS);
        if (ms < 0) {
            a->status = 400;
            a->ctype = "text/plain";
            keel_buf_append_str(pg->resp, "want /delay/MS, MS at most 60000\n");
            return;
        }
        if (sa_sleep(pg->app, ms) < 0)
            a->close = true;
        a->ctype = "application/json";
        keel_buf_printf(pg->resp, "{\"delay_ms\":%ld}", ms);
    } else {
        main_page(pg, req, keel_str_eq(path, KEEL_STR("/hello")), a);
    }
}
