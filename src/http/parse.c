/* HTTP/1.x head parsers. Strict where laxness enables smuggling (no obs-fold, no space
 * before the colon, no bare CR, no control bytes in values); lenient where clients
 * differ harmlessly (bare LF line ends are accepted, as nginx does). */
#include "http/http.h"

#include "core/err.h"

#include <stdint.h>
#include <string.h>

/* RFC 9110 tchar */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static int fail(struct keel_http_perror *e, enum keel_http_perr kind, const char *base,
                const char *at, const char *what)
{
    e->kind = kind;
    e->offset = (size_t)(at - base);
    e->what = what;
    return KEEL_EINVAL;
}

/* End of the line starting at p: returns the '\n' or NULL; *content_end excludes a CR. */
static const char *line_end(const char *p, const char *end, const char **content_end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl != NULL)
        *content_end = (nl > p && nl[-1] == '\r') ? nl - 1 : nl;
    return nl;
}

static bool parse_version(const char *p, const char *end, int *minor)
{
    if (end - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return false;
    *minor = p[7] - '0';
    return true;
}

/* Bytes of x (little-endian) that are not a letter, digit or '-' (the bytes of nearly
 * every header name), as high bits; the lowest is exact: no sum carries between bytes. */
static inline uint64_t name_word_other(uint64_t x)
{
    uint64_t lo = x & (ONES * 0x7f), l = lo | (ONES * 0x20); /* letters folded to a-z */
    uint64_t alpha = (l + ONES * (0x80 - 'a')) & ~(l + ONES * (0x80 - 'z' - 1));
    uint64_t digit = (lo + ONES * (0x80 - '0')) & ~(lo + ONES * (0x80 - '9' - 1));
    uint64_t dash = ~((lo ^ (ONES * '-')) + ONES * 0x7f);
    return (~(alpha | digit | dash) | x) & HIGHS;
}

/* Bytes of x that are control bytes (< 0x20, DEL), as high bits; the lowest is exact. */
static inline uint64_t value_word_ctl(uint64_t x)
{
    uint64_t del = x ^ (ONES * 0x7f); /* zero bytes where x has DEL */
    return ((x - ONES * 0x20) & ~x & HIGHS) | ((del - ONES) & ~del & HIGHS);
}

#if defined(__SSE2__) /* every x86-64: sixteen bytes a step before the eight-byte words */
#include <emmintrin.h>

/* Bit i set where p[i] is not a letter, digit or '-'. Unsigned ranges by min + compare:
 * (x | 0x20) - 'a' <= 25 is a letter, x - '0' <= 9 a digit; bytes >= 0x80 are neither. */
static inline unsigned name_vec_other(const char *p)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i l = _mm_sub_epi8(_mm_or_si128(x, _mm_set1_epi8(0x20)), _mm_set1_epi8('a'));
    __m128i d = _mm_sub_epi8(x, _mm_set1_epi8('0'));
    __m128i ok = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(l, _mm_set1_epi8(25)), l),
                              _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d));
    ok = _mm_or_si128(ok, _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    return ~(unsigned)_mm_movemask_epi8(ok) & 0xffffu;
}

/* Bit i set where p[i] is a control byte (<= 0x1f, DEL). */
static inline unsigned value_vec_ctl(const char *p)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i ctl = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x),
                               _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f)));
    return (unsigned)_mm_movemask_epi8(ctl);
}
#else /* elsewhere the eight-byte words alone (skip_until never calls these) */
static inline unsigned name_vec_other(const char *p)
{
    (void)p;
    return 0;
}
static inline unsigned value_vec_ctl(const char *p)
{
    (void)p;
    return 0;
}
#endif

/* The first byte at or after p that `vec` / `word` flag (sixteen, then eight bytes a
 * step), or a point less than eight bytes before end: the caller's byte loop takes the
 * rest. Inlined with its two tests as constants. */
static inline __attribute__((always_inline)) const char *
skip_until(const char *p, const char *end, unsigned (*vec)(const char *), uint64_t (*word)(uint64_t))
{
    uint64_t x, m;
#if defined(__SSE2__)
    for (; end - p >= 16; p += 16) {
        unsigned v = vec(p);
        if (v != 0)
            return p + __builtin_ctz(v);
    }
#else
    (void)vec;
#endif
    for (; end - p >= 8; p += 8) {
        memcpy(&x, p, 8);
        if ((m = word(x)) != 0)
            return p + (__builtin_ctzll(m) >> 3);
    }
    return p;
}

/* A syntax error at `at` counts once its line is complete (until then: need more). */
static int line_fail(struct keel_http_perror *e, const char *base, const char *at, const char *end,
                     const char *what)
{
    if (memchr(at, '\n', (size_t)(end - at)) == NULL)
        return KEEL_AGAIN;
    return fail(e, KEEL_HTTP_PERR_SYNTAX, base, at, what);
}

/* Parse header lines from p until the empty line. Returns the head length, KEEL_AGAIN or
 * KEEL_EINVAL. One pass per line: the name, then the value up to its first control byte,
 * which is the line end (CR LF or LF), a tab (allowed) or an error; sixteen or eight
 * bytes a step. */
static int parse_headers(const char *base, const char *p, const char *end,
                         const struct keel_http_limits *lim, struct keel_http_header *h,
                         size_t *n_out, uint8_t first[KEEL_HDR_COUNT], struct keel_http_perror *e)
{
    size_t n = 0;
    memset(first, 0, KEEL_HDR_COUNT);
    for (;;) {
        if (p == end)
            goto need_more;
        if (*p == '\n')
            return (int)(p + 1 - base);
        if (*p == '\r') {
            if (p + 1 == end)
                goto need_more;
            if (p[1] != '\n')
                return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "bare CR");
            return (int)(p + 2 - base);
        }
        if (*p == ' ' || *p == '\t')
            return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "obsolete line folding");
        const char *name = p;
        p = skip_until(p, end, name_vec_other, name_word_other); /* other tchars below */
        while (p < end && tchar[(unsigned char)*p])
            p++;
        if (p == end)
            goto need_more;
        if (p == name || *p != ':') {
            int rc = line_fail(e, base, p, end, "bad header name");
            if (rc == KEEL_AGAIN)
                goto need_more;
            return rc;
        }
        size_t name_len = (size_t)(p - name);
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *value = p;
        /* to the first control byte that is not a tab */
        for (;;) {
            p = skip_until(p, end, value_vec_ctl, value_word_ctl);
            while (p < end && (unsigned char)*p >= 0x20 && *p != 0x7f)
                p++;
            if (p == end)
                goto need_more;
            if (*p != '\t')
                break;
            p++;
        }
        const char *ce = p, *nl;
        if (*p == '\n') {
            nl = p;
        } else if (*p == '\r' && p + 1 < end && p[1] == '\n') {
            nl = p + 1;
        } else if (*p == '\r' && p + 1 == end) {
            goto need_more;
        } else {
            int rc = line_fail(e, base, p, end, "control byte in header value");
            if (rc == KEEL_AGAIN)
                goto need_more;
            return rc;
        }
        const char *vend = ce;
        while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        if (n == lim->max_headers)
            return fail(e, KEEL_HTTP_PERR_HEADERS_TOO_LARGE, base, name, "too many headers");
        h[n].name = (struct keel_str){ name, name_len };
        h[n].value = (struct keel_str){ value, (size_t)(vend - value) };
        enum keel_hdr id = keel_http_header_id(h[n].name);
        h[n].id = (uint8_t)id;
        if (first[id] == 0 && n < 255)
            first[id] = (uint8_t)(n + 1);
        *n_out = ++n;
        p = nl + 1;
        if ((size_t)(p - base) > lim->max_head_bytes)
            return fail(e, KEEL_HTTP_PERR_HEADERS_TOO_LARGE, base, p, "header bytes over limit");
    }
need_more:
    /* Over the limit only if certain: a complete head's empty line is not counted (above),
     * so a CR that may begin it is not counted either; the answer must not depend on
     * where the reads split the head. */
    if ((size_t)(end - base) > lim->max_head_bytes &&
        !((size_t)(end - base) == lim->max_head_bytes + 1 && end - base >= 2 && end[-1] == '\r' &&
          end[-2] == '\n'))
        return fail(e, KEEL_HTTP_PERR_HEADERS_TOO_LARGE, base, end, "header bytes over limit");
    return KEEL_AGAIN;
}

bool keel_http_head_complete(const char *p, size_t len, size_t *scanned)
{
    /* an empty line is LF, optional CR, LF: the first LF may be two bytes back */
    size_t i = *scanned > 2 ? *scanned - 2 : 0;
    while (i < len) {
        const char *nl = memchr(p + i, '\n', len - i);
        if (nl == NULL)
            break;
        i = (size_t)(nl - p) + 1;
        if (i < len && (p[i] == '\n' || (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n'))) {
            *scanned = len;
            return true;
        }
    }
    *scanned = len;
    return false;
}

int keel_http_parse_request(const char *base, size_t len, const struct keel_http_limits *lim,
                            struct keel_http_request *req, struct keel_http_perror *e)
{
    const char *p = base, *end = base + len;
    req->n_headers = 0;
    /* tolerate empty lines before the request line (RFC 9112 §2.2) */
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    if (p - base > 8)
        return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "too many empty lines");
    const char *method = p;
    while (p < end && tchar[(unsigned char)*p])
        p++;
    if (p == end)
        return (size_t)(p - method) > 32 ? fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "method too long")
                                         : KEEL_AGAIN;
    if (p == method || *p != ' ')
        return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "bad method");
    req->method = (struct keel_str){ method, (size_t)(p - method) };
    const char *target = ++p;
    for (; p < end && *p != ' '; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f)
            return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "bad byte in request target");
    }
    if ((size_t)(p - target) > lim->max_uri_bytes)
        return fail(e, KEEL_HTTP_PERR_URI_TOO_LONG, base, target, "request target too long");
    if (p == end)
        return KEEL_AGAIN;
    if (p == target)
        return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "empty request target");
    req->target = (struct keel_str){ target, (size_t)(p - target) };
    const char *version = ++p;
    const char *ce;
    const char *nl = line_end(p, end, &ce);
    if (nl == NULL)
        return end - version > 10 ? fail(e, KEEL_HTTP_PERR_SYNTAX, base, version, "bad version")
                                  : KEEL_AGAIN;
    if (ce - version == 8 && memcmp(version, "HTTP/", 5) == 0 && version[6] == '.' &&
        !parse_version(version, ce, &req->minor))
        return fail(e, KEEL_HTTP_PERR_VERSION, base, version, "unsupported HTTP version");
    if (!parse_version(version, ce, &req->minor))
        return fail(e, KEEL_HTTP_PERR_SYNTAX, base, version, "bad HTTP version");
    return parse_headers(base, nl + 1, end, lim, req->headers, &req->n_headers, req->first, e);
}

int keel_http_parse_response(const char *base, size_t len, const struct keel_http_limits *lim,
                             struct keel_http_response *res, struct keel_http_perror *e)
{
    const char *p = base, *end = base + len;
    res->n_headers = 0;
    if (len < 12)
        return memcmp(base, "HTTP/1.", len < 7 ? len : 7) == 0
                   ? KEEL_AGAIN
                   : fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "bad status line");
    if (!parse_version(p, p + 8, &res->minor) || p[8] != ' ')
        return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "bad status line");
    p += 9;
    if (p[0] < '1' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
        return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "bad status code");
    res->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 3;
    const char *ce;
    const char *nl = line_end(p, end, &ce);
    if (nl == NULL)
        return (size_t)(end - base) > lim->max_head_bytes
                   ? fail(e, KEEL_HTTP_PERR_HEADERS_TOO_LARGE, base, end, "status line too long")
                   : KEEL_AGAIN;
    if (p < ce && *p != ' ')
        return fail(e, KEEL_HTTP_PERR_SYNTAX, base, p, "bad status line");
    if (p < ce)
        p++;
    /* reason-phrase = *( HTAB / SP / VCHAR / obs-text ): a bare CR or NUL here would be
     * passed on verbatim to the client otherwise */
    for (const char *r = p; r < ce; r++) {
        unsigned char c = (unsigned char)*r;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(e, KEEL_HTTP_PERR_SYNTAX, base, r, "control byte in reason phrase");
    }
    res->reason = (struct keel_str){ p, (size_t)(ce - p) };
    return parse_headers(base, nl + 1, end, lim, res->headers, &res->n_headers, res->first, e);
}
