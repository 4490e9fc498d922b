#include "telemetry/accesslog.h"

#include "al_fixtures.h"
#include "core/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* ---- a strict little parser for flat JSON objects (string / integer / null values) ---- */

enum jt { JT_STR, JT_NUM, JT_NULL };

struct jkv {
    char key[64];
    enum jt type;
    char val[4096]; /* decoded string, or the number's text */
};

struct jobj {
    struct jkv kv[64];
    int n;
};

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (h < 0)
            return -1;
        *v = *v << 4 | (unsigned)h;
    }
    return 0;
}

/* Parses a JSON string at *pp into out; checks the raw bytes are valid UTF-8 with no
 * control characters. */
static int jstr(const char **pp, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)*pp;
    size_t n = 0;
    if (*p++ != '"')
        return -1;
    while (*p != '"') {
        if (*p == 0 || *p < 0x20 || n + 4 >= cap)
            return -1;
        if (*p == '\\') {
            p++;
            unsigned cp;
            switch (*p) {
            case '"': out[n++] = '"'; break;
            case '\\': out[n++] = '\\'; break;
            case '/': out[n++] = '/'; break;
            case 'n': out[n++] = '\n'; break;
            case 'r': out[n++] = '\r'; break;
            case 't': out[n++] = '\t'; break;
            case 'b': out[n++] = '\b'; break;
            case 'f': out[n++] = '\f'; break;
            case 'u':
                if (hex4((const char *)p + 1, &cp) < 0 || cp >= 0xd800)
                    return -1;
                p += 4;
                if (cp < 0x80) {
                    out[n++] = (char)cp;
                } else if (cp < 0x800) {
                    out[n++] = (char)(0xc0 | cp >> 6);
                    out[n++] = (char)(0x80 | (cp & 0x3f));
                } else {
                    out[n++] = (char)(0xe0 | cp >> 12);
                    out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    out[n++] = (char)(0x80 | (cp & 0x3f));
                }
                break;
            default:
                return -1;
            }
            p++;
            continue;
        }
        if (*p >= 0x80) {
            /* structural UTF-8 check (enough for these tests) */
            int len = (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
            if (len == 0 || *p == 0xc0 || *p == 0xc1 || *p > 0xf4)
                return -1;
            for (int i = 1; i < len; i++)
                if ((p[i] & 0xc0) != 0x80)
                    return -1;
            memcpy(out + n, p, (size_t)len);
            n += (size_t)len;
            p += len;
            continue;
        }
        out[n++] = (char)*p++;
    }
    out[n] = '\0';
    *pp = (const char *)p + 1;
    return 0;
}

/* One line: the object then exactly "\n". */
static int jparse(const char *s, struct jobj *o)
{
    o->n = 0;
    if (*s++ != '{')
        return -1;
    if (*s == '}')
        return strcmp(s + 1, "\n") == 0 ? 0 : -1;
    for (;;) {
        struct jkv *kv = &o->kv[o->n++];
        if (jstr(&s, kv->key, sizeof(kv->key)) < 0 || *s++ != ':')
            return -1;
        if (*s == '"') {
            kv->type = JT_STR;
            if (jstr(&s, kv->val, sizeof(kv->val)) < 0)
                return -1;
        } else if (strncmp(s, "null", 4) == 0) {
            kv->type = JT_NULL;
            kv->val[0] = '\0';
            s += 4;
        } else if (*s >= '0' && *s <= '9') {
            kv->type = JT_NUM;
            size_t n = 0;
            while (*s >= '0' && *s <= '9' && n + 1 < sizeof(kv->val))
                kv->val[n++] = *s++;
            kv->val[n] = '\0';
            if (n > 1 && kv->val[0] == '0')
                return -1;
        } else {
            return -1;
        }
        if (*s == ',') {
            s++;
            continue;
        }
        if (*s++ != '}')
            return -1;
        return strcmp(s, "\n") == 0 ? 0 : -1;
    }
}

static const struct jkv *jget(const struct jobj *o, const char *key)
{
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->kv[i].key, key) == 0)
            return &o->kv[i];
    return NULL;
}

static char line[65536];

static const char *render_with(const struct keel_accesslog_format *f, const struct keel_access_record *r)
{
    struct keel_buf b = { 0 };
    keel_accesslog_render(f, r, &b);
    size_t n = keel_buf_len(&b);
    assert_true(n > 0 && n < sizeof(line));
    memcpy(line, keel_buf_rptr(&b), n);
    line[n] = '\0';
    keel_buf_release(&b);
    return line;
}

static const char *render_json(const char *fmt, const struct keel_access_record *r)
{
    char err[256];
    struct keel_accesslog_format *f = keel_accesslog_compile(fmt, KEEL_ACCESSLOG_JSON, err, sizeof(err));
    if (f == NULL)
        fail_msg("compile %s: %s", fmt ? fmt : "(default)", err);
    render_with(f, r);
    keel_accesslog_format_free(f);
    return line;
}

/* ---- Istio's default JSON, spec §2.3 example ---- */

static void default_json_matches_spec_example(void **state)
{
    static const struct { const char *key; enum jt type; const char *val; } want[] = {
        { "authority", JT_STR, "httpbin:8000" },
        { "bytes_received", JT_NUM, "0" },
        { "bytes_sent", JT_NUM, "135" },
        { "connection_termination_details", JT_NULL, "" },
        { "downstream_local_address", JT_STR, "10.96.12.34:8000" },
        { "downstream_remote_address", JT_STR, "10.244.2.4:40122" },
        { "duration", JT_NUM, "3" },
        { "method", JT_STR, "GET" },
        { "path", JT_STR, "/status/418" },
        { "protocol", JT_STR, "HTTP/1.1" },
        { "request_id", JT_STR, "6f3c1a52-0e9d-9b4a-8f0e-3c0d2f1b7a11" },
        { "requested_server_name", JT_NULL, "" },
        { "response_code", JT_NUM, "418" },
        { "response_code_details", JT_STR, "via_upstream" },
        { "response_flags", JT_STR, "-" },
        { "route_name", JT_STR, "default" },
        { "start_time", JT_STR, "2024-05-02T10:11:12.345Z" },
        { "upstream_cluster", JT_STR, "outbound|8000||httpbin.foo.svc.cluster.local" },
        { "upstream_host", JT_STR, "10.244.1.7:8080" },
        { "upstream_local_address", JT_STR, "10.244.2.4:51442" },
        { "upstream_service_time", JT_STR, "2" },
        { "upstream_transport_failure_reason", JT_NULL, "" },
        { "user_agent", JT_STR, "curl/8.5.0" },
        { "x_forwarded_for", JT_NULL, "" },
    };
    struct keel_access_record r = fx_418();
    struct jobj o;
    const char *s = render_json(NULL, &r);
    if (jparse(s, &o) < 0)
        fail_msg("not one JSON object line: %s", s);
    assert_int_equal(o.n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct jkv *kv = jget(&o, want[i].key);
        if (kv == NULL)
            fail_msg("key %s missing in %s", want[i].key, s);
        if (kv->type != want[i].type || strcmp(kv->val, want[i].val) != 0)
            fail_msg("key %s: got type %d \"%s\", want type %d \"%s\"", want[i].key, kv->type, kv->val,
                     want[i].type, want[i].val);
    }
    /* Istio's key order */
    assert_int_equal(strncmp(s, "{\"start_time\":\"2024-05-02T10:11:12.345Z\",\"route_name\":\"default\",", 64), 0);
    keel_buf_pool_drain();
}

static void default_json_tcp_and_503(void **state)
{
    struct jobj o;
    struct keel_access_record r = fx_tcp();
    const char *s = render_json(NULL, &r);
    assert_int_equal(jparse(s, &o), 0);
    assert_int_equal(jget(&o, "response_code")->type, JT_NUM);
    assert_string_equal(jget(&o, "response_code")->val, "0");
    assert_int_equal(jget(&o, "method")->type, JT_NULL);
    assert_int_equal(jget(&o, "protocol")->type, JT_NULL);
    assert_int_equal(jget(&o, "route_name")->type, JT_NULL);
    assert_string_equal(jget(&o, "duration")->val, "10012");
    assert_string_equal(jget(&o, "bytes_received")->val, "412");
    assert_string_equal(jget(&o, "upstream_host")->val, "10.244.3.3:3306");

    r = fx_503();
    s = render_json(NULL, &r);
    assert_int_equal(jparse(s, &o), 0);
    assert_string_equal(jget(&o, "response_flags")->val, "UF");
    assert_string_equal(jget(&o, "response_code_details")->val,
                        "upstream_reset_before_response_started{connection_failure}");
    assert_int_equal(jget(&o, "upstream_local_address")->type, JT_NULL);
    assert_int_equal(jget(&o, "upstream_service_time")->type, JT_NULL);
    keel_buf_pool_drain();
}

/* ---- user JSON formats ---- */

static void user_json_typed_values(void **state)
{
    struct keel_access_record r = fx_418();
    const char *fmt = "{\n  \"d\": \"%DURATION%\",\n  \"dms\": \"%DURATION%ms\", \"lit\": \"plain\","
                      " \"none\": \"%REQ(X-NONE)%\", \"mixed\": \"x %REQ(X-NONE)% y\","
                      " \"pct\": \"100%%\", \"port\": \"%DOWNSTREAM_LOCAL_PORT%\","
                      " \"code_trunc\": \"%RESPONSE_CODE:2%\", \"ua\": \"%REQ(USER-AGENT):4%\","
                      " \"k\\\"q\\u00e9\": \"\\u00e9\\n%PROTOCOL%\", \"empty\": \"\", \"t\": \"%START_TIME(%s)%\","
                      " \"flags\": \"%RESPONSE_FLAGS_LONG%\", \"dur_unset\": \"%RESPONSE_TX_DURATION%\" }";
    const char *s = render_json(fmt, &r);
    assert_string_equal(s, "{\"d\":3,\"dms\":\"3ms\",\"lit\":\"plain\",\"none\":null,\"mixed\":\"x - y\","
                           "\"pct\":\"100%\",\"port\":8000,\"code_trunc\":\"41\",\"ua\":\"curl\","
                           "\"k\\\"q\xc3\xa9\":\"\xc3\xa9\\nHTTP/1.1\",\"empty\":\"\",\"t\":\"1714644672\","
                           "\"flags\":\"-\",\"dur_unset\":1}\n");
    r.response_tx_duration_us = -1;
    r.flags = KEEL_RF_UT | KEEL_RF_URX;
    s = render_json("{\"flags\":\"%RESPONSE_FLAGS_LONG%\",\"dur_unset\":\"%RESPONSE_TX_DURATION%\"}", &r);
    assert_string_equal(s, "{\"flags\":\"UpstreamRequestTimeout,UpstreamRetryLimitExceeded\",\"dur_unset\":null}\n");
    s = render_json("{}", &r);
    assert_string_equal(s, "{}\n");
    s = render_json("  { }  ", &r);
    assert_string_equal(s, "{}\n");
    keel_buf_pool_drain();
}

static void json_escaping(void **state)
{
    struct keel_access_record r = fx_418();
    static const char path[] = "/a\x01" "b\nc\"d\\e\x7f/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80";
    static const char bad[] = "x\xff" "y\xc3" "z\xe0\x80\x80" "w\xed\xa0\x80" "v\xf4\x90\x80\x80";
    static const struct keel_http_header h[] = {
        { .name = S("User-Agent"), .value = { bad, sizeof(bad) - 1 } },
    };
    r.path = (struct keel_str){ path, sizeof(path) - 1 };
    r.req_headers = h;
    r.n_req_headers = 1;
    const char *s = render_json("{\"p\":\"%REQ(:PATH)%\",\"in\":\"[%REQ(:PATH)%]\",\"ua\":\"%REQ(USER-AGENT)%\"}", &r);
    assert_string_equal(s, "{\"p\":\"/a\\u0001b\\nc\\\"d\\\\e\\u007f/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80\","
                           "\"in\":\"[/a\\u0001b\\nc\\\"d\\\\e\\u007f/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80]\","
                           "\"ua\":\"x\xef\xbf\xbdy\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdw\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdv\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}\n"); /* each maximal invalid subpart: U+FFFD */
    struct jobj o;
    assert_int_equal(jparse(s, &o), 0);
    assert_string_equal(jget(&o, "p")->val, "/a\x01" "b\nc\"d\\e\x7f/caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80");
    /* no raw control byte anywhere but the final newline */
    for (const char *p = s; p[1] != '\0'; p++)
        assert_false((unsigned char)*p < 0x20 || *p == 0x7f);
    /* truncation in the middle of a UTF-8 sequence still yields valid JSON */
    static const char utf[] = "\xc3\xa9\xc3\xa9";
    r.path = (struct keel_str){ utf, 4 };
    s = render_json("{\"p\":\"%REQ(:PATH):3%\"}", &r);
    assert_string_equal(s, "{\"p\":\"\xc3\xa9\xef\xbf\xbd\"}\n");
    keel_buf_pool_drain();
}

static void expect_json_error(const char *fmt, const char *want1, const char *want2)
{
    char err[256];
    struct keel_accesslog_format *f = keel_accesslog_compile(fmt, KEEL_ACCESSLOG_JSON, err, sizeof(err));
    if (f != NULL)
        fail_msg("format %s compiled, expected an error", fmt);
    if (strstr(err, want1) == NULL || (want2 != NULL && strstr(err, want2) == NULL))
        fail_msg("format %s: error \"%s\" lacks \"%s\"/\"%s\"", fmt, err, want1, want2 ? want2 : "");
}

static void json_format_errors(void **state)
{
    expect_json_error("", "column 1", "object");
    expect_json_error("[\"a\"]", "column 1", "object");
    expect_json_error("{\"a\": 5}", "column 7", "must be a string");
    expect_json_error("{\"a\": {\"b\": \"%DURATION%\"}}", "column 7", "must be a string");
    expect_json_error("{\"a\": \"%DURATION%\" \"b\": \"x\"}", "column 20", "expected ',' or '}'");
    expect_json_error("{\"a\" \"x\"}", "column 6", "expected ':'");
    expect_json_error("{\"a\": \"x\"} x", "column 12", "trailing");
    expect_json_error("{\"a\": \"x", "column 7", "unterminated");
    expect_json_error("{\"a\": \"x\", \"a\": \"y\"}", "column 12", "duplicate key");
    expect_json_error("{\"a\": \"\\q\"}", "column 8", "bad escape");
    expect_json_error("{\"a\": \"\\ud800\"}", "column 8", "surrogate");
    expect_json_error("{\"a\": \"\tx\"}", "column 8", "control character");
    /* operator errors name the key and the column in the JSON text */
    expect_json_error("{\"a\": \"%DURATION%\", \"bad\": \"xy %NOPE%\"}", "key \"bad\": column 32", "unknown operator NOPE");
    expect_json_error("{\"bad\": \"%NOPE%\"}", "column 10", "unknown operator NOPE");
    expect_json_error("{\"bad\": \"%REQ%\"}", "column 10", "needs an argument");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_json_matches_spec_example),
        cmocka_unit_test(default_json_tcp_and_503),
        cmocka_unit_test(user_json_typed_values),
        cmocka_unit_test(json_escaping),
        cmocka_unit_test(json_format_errors),
    };
    return cmocka_run_group_tests_name("telemetry/accesslog_json", tests, NULL, NULL);
}
