/* libFuzzer target: the HTTP/1.x request and response head parsers, the framing
 * analysis, the end-of-head scan and the chunked decoder, on arbitrary bytes. The first
 * byte picks the mode (and how the head is cut for the scan). */
#include "core/err.h"
#include "http/http.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void chunked(const char *p, size_t len)
{
    struct keel_http_chunked c = { 0 };
    while (len > 0) {
        size_t consumed = 0, off = 0, dlen = 0;
        int rc = keel_http_chunked_step(&c, p, len, &consumed, &off, &dlen);
        if (rc < 0 || rc == KEEL_CHUNK_DONE)
            return;
        if (rc == KEEL_CHUNK_DATA && (off + dlen > len || dlen == 0))
            __builtin_trap();
        if (consumed > len || (consumed == 0 && rc != KEEL_CHUNK_DATA))
            __builtin_trap();
        if (rc == KEEL_CHUNK_MORE && consumed != len)
            __builtin_trap();
        p += consumed;
        len -= consumed;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct keel_http_limits lim = { 4096, 1024, 32 };
    struct keel_http_header h[32];
    struct keel_http_perror e;
    struct keel_http_meta m;
    if (size == 0)
        return 0;
    const char *p = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        struct keel_http_response res = { .headers = h };
        int rc = keel_http_parse_response(p, len, &lim, &res, &e);
        if (rc > 0 && keel_http_analyze_response(&res, KEEL_STR("GET"), &m, &e) == 0 &&
            m.body == KEEL_HTTP_BODY_CHUNKED)
            chunked(p + rc, len - (size_t)rc);
        return 0;
    }
    struct keel_http_request req = { .headers = h };
    int rc = keel_http_parse_request(p, len, &lim, &req, &e);
    /* the end-of-head scan, in one go and in pieces, agrees with the parser */
    size_t scanned = 0, piece = 1 + (size_t)data[0] % 7;
    bool done = false;
    for (size_t have = piece; !done && have < len + piece; have += piece)
        done = keel_http_head_complete(p, have < len ? have : len, &scanned);
    size_t whole = 0;
    if (done != keel_http_head_complete(p, len, &whole) || (rc > 0 && !done))
        __builtin_trap();
    if (rc > 0) {
        if (req.n_headers > 0)
            (void)keel_http_authority_valid(h[0].value);
        if ((size_t)rc > len || req.n_headers > lim.max_headers)
            __builtin_trap();
        for (size_t i = 0; i < req.n_headers; i++)
            if (h[i].name.p < p || h[i].value.p + h[i].value.len > p + rc)
                __builtin_trap();
        if (keel_http_analyze_request(&req, &m, &e) == 0 && m.body == KEEL_HTTP_BODY_CHUNKED)
            chunked(p + rc, len - (size_t)rc);
    } else if (rc == KEEL_EINVAL && e.offset > len) {
        __builtin_trap();
    }
    return 0;
}
