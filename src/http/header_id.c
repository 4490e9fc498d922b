/* Header ids (http.h, KEEL_HTTP_HEADER_IDS): the parser names each header once, so that
 * the layers above compare a byte where they compared names. */
#include "http/http.h"

/* n.len == sizeof(lit) - 1 already; lit is lower case. The first byte first: names of a
 * length mostly differ there. */
static inline bool is(struct keel_str n, const char *lit, size_t len)
{
    return (n.p[0] | 0x20) == lit[0] && keel_ascii_eq_lower(n.p, lit, len);
}
#define IS(n, lit) is((n), (lit), sizeof(lit) - 1)

/* A switch on the length, then a compare or two: the names of KEEL_HTTP_HEADER_IDS by
 * length (tests/unit/http/test_header_id.c holds this to that list). */
enum keel_hdr keel_http_header_id(struct keel_str n)
{
    switch (n.len) {
    case 2:
        if (IS(n, "te")) return KEEL_HDR_TE;
        if (IS(n, "b3")) return KEEL_HDR_B3;
        return KEEL_HDR_OTHER;
    case 4:
        return IS(n, "host") ? KEEL_HDR_HOST : KEEL_HDR_OTHER;
    case 6:
        if (IS(n, "expect")) return KEEL_HDR_EXPECT;
        break;
    case 7:
        if (IS(n, "upgrade")) return KEEL_HDR_UPGRADE;
        if (IS(n, "trailer")) return KEEL_HDR_TRAILER;
        break;
    case 10:
        if (IS(n, "connection")) return KEEL_HDR_CONNECTION;
        if (IS(n, "user-agent")) return KEEL_HDR_USER_AGENT;
        if (IS(n, "keep-alive")) return KEEL_HDR_KEEP_ALIVE;
        if (IS(n, "x-b3-flags")) return KEEL_HDR_X_B3_FLAGS;
        break;
    case 11:
        if (IS(n, "traceparent")) return KEEL_HDR_TRACEPARENT;
        if (IS(n, "x-b3-spanid")) return KEEL_HDR_X_B3_SPANID;
        break;
    case 12:
        if (IS(n, "content-type")) return KEEL_HDR_CONTENT_TYPE;
        if (IS(n, "x-request-id")) return KEEL_HDR_X_REQUEST_ID;
        if (IS(n, "x-b3-traceid")) return KEEL_HDR_X_B3_TRACEID;
        if (IS(n, "x-b3-sampled")) return KEEL_HDR_X_B3_SAMPLED;
        break;
    case 14:
        if (IS(n, "content-length")) return KEEL_HDR_CONTENT_LENGTH;
        break;
    case 15:
        if (IS(n, "x-forwarded-for")) return KEEL_HDR_X_FORWARDED_FOR;
        break;
    case 16:
        if (IS(n, "proxy-connection")) return KEEL_HDR_PROXY_CONNECTION;
        break;
    case 17:
        if (IS(n, "transfer-encoding")) return KEEL_HDR_TRANSFER_ENCODING;
        if (IS(n, "x-forwarded-proto")) return KEEL_HDR_X_FORWARDED_PROTO;
        if (IS(n, "x-b3-parentspanid")) return KEEL_HDR_X_B3_PARENTSPANID;
        break;
    case 20:
        if (IS(n, "x-keel-peer-metadata")) return KEEL_HDR_X_KEEL_PEER_METADATA;
        break;
    case 21:
        if (IS(n, "x-envoy-original-path")) return KEEL_HDR_X_ENVOY_ORIGINAL_PATH;
        break;
    case 29:
        if (IS(n, "x-envoy-upstream-service-time")) return KEEL_HDR_X_ENVOY_UPSTREAM_SERVICE_TIME;
        break;
    }
    return n.len >= 5 && is(n, "x-b3-", 5) ? KEEL_HDR_X_B3_OTHER : KEEL_HDR_OTHER;
}
