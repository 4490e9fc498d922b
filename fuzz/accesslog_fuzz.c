/* libFuzzer target: the access-log format compiler (text and JSON) and the renderer over
 * a fixed record whose request values come from the input too.
 * Input: byte 0 bit 0 picks the encoding; the format follows, up to an optional NUL; the
 * bytes after it become the path, the User-Agent and a header value (hostile bytes).
 * Checks the output guarantees: JSON lines are valid JSON strings in valid UTF-8; no
 * value ever puts a raw control byte, quote or invalid UTF-8 into a text line.
 * Replayed by tests/unit/telemetry/test_fuzz_corpus.c. */
#include "core/json.h"
#include "http/http.h"
#include "telemetry/accesslog.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FS(lit) { lit, sizeof(lit) - 1 }

static bool utf8_ok(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad, l = keel_utf8_seq(p + i, n - i, &bad);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

/* A JSON text with strings whose content is valid UTF-8 and holds no raw control byte:
 * a lexical check (strings, escapes), enough to catch any escaping fault. */
static bool json_line_ok(const unsigned char *p, size_t n)
{
    if (n == 0 || p[n - 1] != '\n')
        return false;
    n--;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        if (!in_str) {
            if (c == '"')
                in_str = true;
            continue;
        }
        if (c == '"') {
            in_str = false;
        } else if (c == '\\') {
            if (++i >= n)
                return false;
            if (p[i] == 'u') {
                if (i + 4 >= n)
                    return false;
                i += 4;
            } else if (!strchr("\"\\/bfnrt", p[i]) || p[i] == 0) {
                return false;
            }
        }
    }
    return !in_str && utf8_ok(p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum keel_accesslog_encoding enc = (data[0] & 1) ? KEEL_ACCESSLOG_JSON : KEEL_ACCESSLOG_TEXT;
    const uint8_t *src = data + 1;
    size_t len = size - 1;
    const uint8_t *nul = memchr(src, 0, len);
    struct keel_str hostile = { "\x01\"\\\n\r\xff\xc3\xed\xa0\x80\xc2\x9b", 13 };
    if (nul != NULL) {
        hostile = (struct keel_str){ (const char *)nul + 1, (size_t)(src + len - nul - 1) };
        len = (size_t)(nul - src);
    }
    char *fmt = malloc(len + 1); /* the compiler takes a C string */
    memcpy(fmt, src, len);
    fmt[len] = '\0';
    char err[256];
    err[0] = '\0';
    struct keel_accesslog_format *f = keel_accesslog_compile(len || enc == KEEL_ACCESSLOG_TEXT ? fmt : NULL,
                                                             enc, err, sizeof(err));
    free(fmt);
    if (f == NULL) {
        if (err[0] == '\0')
            __builtin_trap();
        return 0;
    }
    const struct keel_http_header req_h[] = {
        { .name = FS("user-agent"), .value = hostile },
        { .name = FS("x-forwarded-for"), .value = FS("10.0.0.1") },
        { .name = FS("x-hostile"), .value = hostile },
    };
    const struct keel_http_header resp_h[] = { { .name = FS("x-resp"), .value = hostile } };
    struct keel_access_record r = {
        .start_us = 1714644672123456,
        .duration_us = 3000,
        .request_duration_us = -1,
        .request_tx_duration_us = 1000,
        .response_duration_us = 2000,
        .response_tx_duration_us = -1,
        .method = FS("GET"),
        .path = hostile,
        .authority = hostile,
        .scheme = FS("http"),
        .protocol = FS("HTTP/1.1"),
        .req_headers = req_h,
        .n_req_headers = 3,
        .resp_headers = resp_h,
        .n_resp_headers = 1,
        .status = 418,
        .flags = 3,
        .code_details = FS("via_upstream"),
        .bytes_received = 12,
        .bytes_sent = 345,
        .connection_id = 7,
        .upstream_attempts = 1,
        .upstream_host = FS("127.0.0.1:9000"),
        .upstream_cluster = FS("outbound|80||reviews.default.svc.cluster.local"),
        .downstream_local = FS("127.0.0.1:15006"),
        .downstream_remote = FS("127.0.0.1:40000"),
        .route_name = hostile,
        .request_id = hostile,
    };
    struct keel_buf out = { 0 };
    keel_accesslog_render(f, &r, &out);
    const unsigned char *p = (const unsigned char *)keel_buf_rptr(&out);
    size_t n = keel_buf_len(&out);
    if (enc == KEEL_ACCESSLOG_JSON) {
        if (!json_line_ok(p, n))
            __builtin_trap();
    } else {
        /* the same format over clean values: the hostile render may differ from it only
         * by escapes, so count what the format itself contributes */
        struct keel_access_record clean = r;
        const struct keel_http_header creq[] = {
            { .name = FS("user-agent"), .value = FS("a") },
            req_h[1],
            { .name = FS("x-hostile"), .value = FS("a") },
        };
        const struct keel_http_header cresp[] = { { .name = FS("x-resp"), .value = FS("a") } };
        clean.req_headers = creq;
        clean.resp_headers = cresp;
        clean.path = clean.authority = clean.route_name = clean.request_id = (struct keel_str)FS("a");
        struct keel_buf cb = { 0 };
        keel_accesslog_render(f, &clean, &cb);
        size_t raw_clean = 0, raw_hostile = 0;
        for (size_t i = 0; i < keel_buf_len(&cb); i++) {
            unsigned char c = (unsigned char)keel_buf_rptr(&cb)[i];
            raw_clean += c < 0x20 || c == 0x7f || c == '"';
        }
        for (size_t i = 0; i < n; i++)
            raw_hostile += p[i] < 0x20 || p[i] == 0x7f || p[i] == '"';
        /* truncation operators (:N) can only lose a format's own bytes, never add any */
        if (raw_hostile > raw_clean)
            __builtin_trap();
        keel_buf_release(&cb);
    }
    keel_buf_release(&out);
    keel_accesslog_format_free(f);
    return 0;
}
