/* Semantics of a parsed head: body framing and connection options. This is where
 * request smuggling is refused (RFC 9112 §6.3). */
#include "http/http.h"

#include "core/err.h"

#include <ctype.h>

/* lit: lower case. The first byte first: most names of a length are not the one asked. */
static bool name_is(struct keel_str n, const char *lit, size_t len)
{
    return n.len == len && (n.p[0] | 0x20) == lit[0] && keel_ascii_caseeq(n.p, lit, len);
}
#define NAME_IS(n, lit) name_is((n), (lit), sizeof(lit) - 1)

/* Connection tokens that are options of the connection, not names of headers to drop. */
static bool connection_option(struct keel_str t)
{
    return NAME_IS(t, "close") || NAME_IS(t, "keep-alive") || NAME_IS(t, "upgrade");
}

static int bad(struct keel_http_perror *e, const char *what)
{
    e->kind = KEEL_HTTP_PERR_SYNTAX;
    e->offset = 0;
    e->what = what;
    return KEEL_EINVAL;
}

/* Next comma-separated token of v starting at *pos, OWS trimmed; false at the end. */
static bool next_token(struct keel_str v, size_t *pos, struct keel_str *tok)
{
    size_t i = *pos;
    while (i < v.len && (v.p[i] == ',' || v.p[i] == ' ' || v.p[i] == '\t'))
        i++;
    if (i >= v.len)
        return false;
    size_t start = i;
    while (i < v.len && v.p[i] != ',')
        i++;
    size_t stop = i;
    while (stop > start && (v.p[stop - 1] == ' ' || v.p[stop - 1] == '\t'))
        stop--;
    *tok = (struct keel_str){ v.p + start, stop - start };
    *pos = i;
    return true;
}

static int parse_length(struct keel_str v, uint64_t *out)
{
    if (v.len == 0 || v.len > 19)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = n;
    return 0;
}

/* What the Transfer-Encoding headers say, all of them read as one list. */
struct te_seen {
    bool present;
    bool chunked_last;   /* the final coding is chunked */
    bool chunked_inner;  /* chunked is followed by another coding (applied twice, or not last) */
};

/* Connection tokens naming other headers, at most: a longer list is refused, not cut
 * short (a header it names past the cut would be passed on), and the pass below stays
 * bounded (tokens x headers). */
#define MAX_CONNECTION_NAMED 32

/* The headers that Connection tokens name are hop-by-hop too: every token of every
 * Connection header (a rare second pass); close, keep-alive and upgrade are handled as
 * options (an Upgrade header still goes with a 101). */
static void mark_connection_named(const struct keel_http_header *h, size_t n,
                                  struct keel_http_meta *m)
{
    for (size_t c = 0; c < n; c++) {
        if (keel_http_hdr_id(&h[c]) != KEEL_HDR_CONNECTION)
            continue;
        size_t pos = 0;
        struct keel_str t;
        while (next_token(h[c].value, &pos, &t)) {
            if (connection_option(t))
                continue;
            for (size_t i = 0; i < n && i < 128; i++)
                if (keel_str_caseeq(h[i].name, t))
                    m->hop_mask[i / 64] |= 1ULL << (i % 64);
        }
    }
}

/* Common header scan. For Connection tokens naming other headers, the mask is filled in
 * a second pass once all tokens are known. */
static int scan(const struct keel_http_header *h, size_t n, int minor, struct keel_http_meta *m,
                struct te_seen *te, struct keel_http_perror *e)
{
    bool have_cl = false;
    size_t n_named = 0; /* Connection tokens naming other headers */
    memset(m, 0, sizeof(*m));
    for (size_t i = 0; i < n; i++) {
        struct keel_str v = h[i].value;
        switch (keel_http_hdr_id(&h[i])) {
        case KEEL_HDR_HOST:
            if (m->host.p != NULL)
                return bad(e, "duplicate Host");
            m->host = v;
            break;
        case KEEL_HDR_EXPECT:
            if (v.len == 12 && strncasecmp(v.p, "100-continue", 12) == 0)
                m->expect_continue = true;
            break;
        case KEEL_HDR_UPGRADE:
            m->upgrade = v;
            break;
        case KEEL_HDR_CONNECTION: {
            size_t pos = 0;
            struct keel_str t;
            while (next_token(v, &pos, &t)) {
                if (NAME_IS(t, "close"))
                    m->conn_close = true;
                else if (NAME_IS(t, "keep-alive"))
                    m->conn_keep_alive = true;
                else if (NAME_IS(t, "upgrade"))
                    m->conn_upgrade = true;
                else if (++n_named > MAX_CONNECTION_NAMED)
                    return bad(e, "too many Connection options");
            }
            break;
        }
        case KEEL_HDR_X_REQUEST_ID:
            m->request_id = v;
            break;
        case KEEL_HDR_CONTENT_LENGTH: {
            uint64_t cl;
            if (parse_length(v, &cl) < 0)
                return bad(e, "bad Content-Length");
            if (have_cl && cl != m->content_length)
                return bad(e, "differing Content-Length headers");
            have_cl = true;
            m->content_length = cl;
            break;
        }
        case KEEL_HDR_X_FORWARDED_FOR:
            m->xff = true;
            break;
        case KEEL_HDR_TRANSFER_ENCODING: {
            size_t pos = 0;
            struct keel_str t;
            te->present = true;
            /* a later TE header's codings follow the earlier ones' */
            while (next_token(v, &pos, &t)) {
                if (te->chunked_last)
                    te->chunked_inner = true;
                te->chunked_last = NAME_IS(t, "chunked");
                if (!te->chunked_last)
                    m->te_codings = true;
            }
            break;
        }
        case KEEL_HDR_X_FORWARDED_PROTO:
            m->xfp = v;
            break;
        default:
            break;
        }
    }
    if (minor == 0 && !m->conn_keep_alive)
        m->conn_close = true;
    if (te->present && have_cl)
        return bad(e, "both Content-Length and Transfer-Encoding");
    if (te->present) {
        if (minor == 0)
            return bad(e, "Transfer-Encoding in HTTP/1.0");
        if (te->chunked_inner)
            return bad(e, "chunked is not the final transfer coding");
        m->body = te->chunked_last ? KEEL_HTTP_BODY_CHUNKED : KEEL_HTTP_BODY_EOF;
    } else if (have_cl) {
        m->body = KEEL_HTTP_BODY_LENGTH;
    }
    if (n_named > 0)
        mark_connection_named(h, n, m);
    return 0;
}

int keel_http_analyze_request(const struct keel_http_request *req, struct keel_http_meta *m,
                              struct keel_http_perror *e)
{
    struct te_seen te = { 0 };
    int rc = scan(req->headers, req->n_headers, req->minor, m, &te, e);
    if (rc < 0)
        return rc;
    /* a request body without a length cannot end at a close (RFC 9112 §6.3) */
    if (te.present && !te.chunked_last)
        return bad(e, "Transfer-Encoding does not end in chunked");
    if (m->te_codings) {
        bad(e, "transfer coding other than chunked");
        e->kind = KEEL_HTTP_PERR_NOT_IMPLEMENTED;
        return KEEL_EINVAL;
    }
    if (req->minor == 1 && m->host.p == NULL)
        return bad(e, "missing Host header");
    if (m->host.p != NULL && !keel_http_authority_valid(m->host))
        return bad(e, "invalid Host");
    return 0;
}

int keel_http_analyze_response(const struct keel_http_response *res, struct keel_str method,
                               struct keel_http_meta *m, struct keel_http_perror *e)
{
    /* an upstream framing error (e.g. both CL and TE) is answered with 502 UPE */
    struct te_seen te = { 0 };
    int rc = scan(res->headers, res->n_headers, res->minor, m, &te, e);
    if (rc < 0)
        return rc;
    bool head = method.len == 4 && memcmp(method.p, "HEAD", 4) == 0;
    if (head || res->status < 200 || res->status == 204 || res->status == 304) {
        m->body = KEEL_HTTP_BODY_NONE;
    } else if (m->body == KEEL_HTTP_BODY_NONE) {
        bool has_cl = false;
        for (size_t i = 0; i < res->n_headers; i++)
            if (keel_http_hdr_id(&res->headers[i]) == KEEL_HDR_CONTENT_LENGTH)
                has_cl = true;
        if (!has_cl)
            m->body = KEEL_HTTP_BODY_EOF;
    }
    return 0;
}

struct keel_str keel_http_te_strip_chunked(struct keel_str v)
{
    size_t end = v.len;
    while (end > 0 && (v.p[end - 1] == ' ' || v.p[end - 1] == '\t' || v.p[end - 1] == ','))
        end--;
    if (end >= 7 && strncasecmp(v.p + end - 7, "chunked", 7) == 0 &&
        (end == 7 || v.p[end - 8] == ',' || v.p[end - 8] == ' ' || v.p[end - 8] == '\t')) {
        end -= 7;
        while (end > 0 && (v.p[end - 1] == ' ' || v.p[end - 1] == '\t' || v.p[end - 1] == ','))
            end--;
    }
    return (struct keel_str){ v.p, end };
}

/* RFC 3986 unreserved / sub-delims, the bytes of a reg-name besides pct-encoded: a bit per
 * byte, 0-63 then 64-127 (every Host is checked; a mesh's names run to 40 bytes). */
static inline bool host_char(unsigned char c)
{
    static const uint64_t bits[2] = {
        0x2bff7fd200000000ULL, /* ! $ & ' ( ) * + , - . 0-9 ; = */
        0x47fffffe87fffffeULL, /* A-Z _ a-z ~ */
    };
    return c < 128 && (bits[c >> 6] >> (c & 63)) & 1;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

bool keel_http_authority_valid(struct keel_str v)
{
    size_t i = 0;
    if (v.len > 0 && v.p[0] == '[') {
        /* IP-literal: IPv6address / IPvFuture; the bytes are checked, not the grammar */
        for (i = 1; i < v.len && v.p[i] != ']'; i++)
            if (!host_char((unsigned char)v.p[i]) && v.p[i] != ':')
                return false;
        if (i == v.len || i == 1)
            return false;
        i++;
    } else {
        for (; i < v.len && v.p[i] != ':'; i++) {
            if (v.p[i] == '%') {
                if (i + 2 >= v.len || !is_hex(v.p[i + 1]) || !is_hex(v.p[i + 2]))
                    return false;
                i += 2;
            } else if (!host_char((unsigned char)v.p[i])) {
                return false;
            }
        }
    }
    if (i == v.len)
        return true;
    if (v.p[i] != ':')
        return false;
    for (i++; i < v.len; i++)
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
    return true;
}
