/* Typed values: equality, text and JSON forms, parsers of the text forms.
 * Nothing here allocates except through the caller's keel_buf. */
#include "attr/attr.h"

#include "core/fmt.h"
#include "core/json.h"
#include "core/err.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const struct keel_str *keel_value_map_get(const struct keel_value *m, const char *k, size_t klen)
{
    for (size_t i = 0; i < m->u.map.n; i++) {
        const struct keel_str_pair *p = &m->u.map.kv[i];
        if (p->k.len == klen && keel_bytes_eq(p->k.p, k, klen))
            return &p->v;
    }
    return NULL;
}

/* ---- equality ---------------------------------------------------------------- */

static struct keel_str strip_dot(struct keel_str s)
{
    if (s.len && s.p[s.len - 1] == '.')
        s.len--;
    return s;
}

static bool dns_equal(struct keel_str a, struct keel_str b)
{
    return keel_str_caseeq(strip_dot(a), strip_dot(b));
}

static bool email_equal(struct keel_str a, struct keel_str b)
{
    const char *at1 = memrchr(a.p, '@', a.len), *at2 = memrchr(b.p, '@', b.len);
    if (!at1 || !at2)
        return keel_str_eq(a, b);
    struct keel_str l1 = { a.p, (size_t)(at1 - a.p) }, l2 = { b.p, (size_t)(at2 - b.p) };
    if (l1.len >= 2 && l1.p[0] == '"' && l1.p[l1.len - 1] == '"')
        l1 = (struct keel_str){ l1.p + 1, l1.len - 2 };
    if (l2.len >= 2 && l2.p[0] == '"' && l2.p[l2.len - 1] == '"')
        l2 = (struct keel_str){ l2.p + 1, l2.len - 2 };
    struct keel_str d1 = { at1 + 1, (size_t)(a.p + a.len - at1 - 1) };
    struct keel_str d2 = { at2 + 1, (size_t)(b.p + b.len - at2 - 1) };
    return keel_str_eq(l1, l2) && dns_equal(d1, d2);
}

/* scheme (case-insensitive), authority (case-insensitive host, exact port), rest exact. */
static bool uri_equal(struct keel_str a, struct keel_str b)
{
    const char *c1 = memchr(a.p, ':', a.len), *c2 = memchr(b.p, ':', b.len);
    if (!c1 || !c2)
        return keel_str_eq(a, b);
    struct keel_str s1 = { a.p, (size_t)(c1 - a.p) }, s2 = { b.p, (size_t)(c2 - b.p) };
    if (!keel_str_caseeq(s1, s2))
        return false;
    struct keel_str r1 = { c1 + 1, a.len - s1.len - 1 }, r2 = { c2 + 1, b.len - s2.len - 1 };
    if (r1.len >= 2 && r2.len >= 2 && !memcmp(r1.p, "//", 2) && !memcmp(r2.p, "//", 2)) {
        size_t e1 = 2, e2 = 2;
        while (e1 < r1.len && !strchr("/?#", r1.p[e1]))
            e1++;
        while (e2 < r2.len && !strchr("/?#", r2.p[e2]))
            e2++;
        if (!keel_str_caseeq((struct keel_str){ r1.p, e1 }, (struct keel_str){ r2.p, e2 }))
            return false;
        r1 = (struct keel_str){ r1.p + e1, r1.len - e1 };
        r2 = (struct keel_str){ r2.p + e2, r2.len - e2 };
    }
    return keel_str_eq(r1, r2);
}

static void ip16(const struct keel_value *v, uint8_t out[16])
{
    if (v->u.ip.len == 4) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, v->u.ip.a, 4);
    } else {
        memcpy(out, v->u.ip.a, 16);
    }
}

bool keel_value_equal(const struct keel_value *a, const struct keel_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
        return keel_str_eq(a->u.s, b->u.s);
    case KEEL_VALUE_DNS_NAME:
        return dns_equal(a->u.s, b->u.s);
    case KEEL_VALUE_EMAIL_ADDRESS:
        return email_equal(a->u.s, b->u.s);
    case KEEL_VALUE_URI:
        return uri_equal(a->u.s, b->u.s);
    case KEEL_VALUE_INT64:
    case KEEL_VALUE_DURATION:
        return a->u.i == b->u.i;
    case KEEL_VALUE_UINT64:
        return a->u.u == b->u.u;
    case KEEL_VALUE_DOUBLE:
        return a->u.d == b->u.d;
    case KEEL_VALUE_BOOL:
        return a->u.b == b->u.b;
    case KEEL_VALUE_TIMESTAMP:
        return a->u.t.sec == b->u.t.sec && a->u.t.nsec == b->u.t.nsec;
    case KEEL_VALUE_IP_ADDRESS: {
        uint8_t x[16], y[16];
        ip16(a, x);
        ip16(b, y);
        return memcmp(x, y, 16) == 0;
    }
    case KEEL_VALUE_STRING_MAP:
        if (a->u.map.n != b->u.map.n)
            return false;
        for (size_t i = 0; i < a->u.map.n; i++) {
            const struct keel_str *v = keel_value_map_get(b, a->u.map.kv[i].k.p, a->u.map.kv[i].k.len);
            if (!v || !keel_str_eq(*v, a->u.map.kv[i].v))
                return false;
        }
        return true;
    default:
        return true;
    }
}

/* ---- writers ----------------------------------------------------------------- */

static size_t put(char *dst, size_t cap, size_t pos, const char *s, size_t n)
{
    if (pos < cap)
        memcpy(dst + pos, s, pos + n <= cap ? n : cap - pos);
    return pos + n;
}

/* Go's time.Duration.String. */
static size_t fmt_frac(char *buf, size_t w, uint64_t *v, int prec)
{
    int print = 0;
    for (int i = 0; i < prec; i++) {
        int digit = (int)(*v % 10);
        print = print || digit != 0;
        if (print)
            buf[--w] = (char)('0' + digit);
        *v /= 10;
    }
    if (print)
        buf[--w] = '.';
    return w;
}

static size_t fmt_uint(char *buf, size_t w, uint64_t v)
{
    if (v == 0) {
        buf[--w] = '0';
        return w;
    }
    while (v > 0) {
        buf[--w] = (char)('0' + v % 10);
        v /= 10;
    }
    return w;
}

size_t keel_value_fmt_duration(int64_t ns, char *dst, size_t cap)
{
    char buf[40];
    size_t w = sizeof(buf);
    uint64_t u = (uint64_t)ns;
    bool neg = ns < 0;
    if (neg)
        u = -u;
    if (u < 1000000000ull) {
        int prec;
        buf[--w] = 's';
        if (u == 0)
            return put(dst, cap, 0, "0s", 2);
        if (u < 1000ull) {
            prec = 0;
            buf[--w] = 'n';
        } else if (u < 1000000ull) {
            prec = 3;
            buf[--w] = (char)0xb5; /* U+00B5 micro sign */
            buf[--w] = (char)0xc2;
        } else {
            prec = 6;
            buf[--w] = 'm';
        }
        w = fmt_frac(buf, w, &u, prec);
        w = fmt_uint(buf, w, u);
    } else {
        buf[--w] = 's';
        w = fmt_frac(buf, w, &u, 9);
        w = fmt_uint(buf, w, u % 60);
        u /= 60;
        if (u > 0) {
            buf[--w] = 'm';
            w = fmt_uint(buf, w, u % 60);
            u /= 60;
            if (u > 0) {
                buf[--w] = 'h';
                w = fmt_uint(buf, w, u);
            }
        }
    }
    if (neg)
        buf[--w] = '-';
    return put(dst, cap, 0, buf + w, sizeof(buf) - w);
}

/* days since 1970-01-01 <-> civil date (Howard Hinnant's algorithms). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* Epoch seconds -> civil date and the seconds into that day. */
static void civil_from_seconds(int64_t sec, int64_t *y, unsigned *m, unsigned *d, int64_t *rem)
{
    int64_t days = sec / 86400;
    *rem = sec % 86400;
    if (*rem < 0) {
        *rem += 86400;
        days--;
    }
    civil_from_days(days, y, m, d);
}

static inline void put2(char *d, unsigned v)
{
    d[0] = (char)('0' + v / 10);
    d[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ". Reports in one second share their first 19 bytes: each
 * thread keeps the last second it formatted. Years outside 0..9999 and out-of-range
 * nanoseconds take the printf path (its exact output). */
size_t keel_value_fmt_timestamp(struct keel_time t, char *dst, size_t cap)
{
    static _Thread_local bool cached_ok;
    static _Thread_local int64_t cached_sec;
    static _Thread_local char cached[19];
    char buf[64];
    if (t.nsec >= 0 && t.nsec < 1000000000) {
        if (!cached_ok || t.sec != cached_sec) {
            int64_t y, rem;
            unsigned m, d;
            civil_from_seconds(t.sec, &y, &m, &d, &rem);
            if (y < 0 || y > 9999)
                goto slow;
            unsigned r = (unsigned)rem;
            put2(cached, (unsigned)(y / 100));
            put2(cached + 2, (unsigned)(y % 100));
            cached[4] = '-';
            put2(cached + 5, m);
            cached[7] = '-';
            put2(cached + 8, d);
            cached[10] = 'T';
            put2(cached + 11, r / 3600);
            cached[13] = ':';
            put2(cached + 14, r / 60 % 60);
            cached[16] = ':';
            put2(cached + 17, r % 60);
            cached_sec = t.sec;
            cached_ok = true;
        }
        unsigned us = (unsigned)t.nsec / 1000;
        memcpy(buf, cached, 19);
        buf[19] = '.';
        put2(buf + 20, us / 10000);
        put2(buf + 22, us / 100 % 100);
        put2(buf + 24, us % 100);
        buf[26] = 'Z';
        return put(dst, cap, 0, buf, 27);
    }
slow:;
    int64_t y, rem;
    unsigned m, d;
    civil_from_seconds(t.sec, &y, &m, &d, &rem);
    int n = snprintf(buf, sizeof(buf), "%04lld-%02u-%02uT%02d:%02d:%02d.%06dZ", (long long)y, m, d,
                     (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)(t.nsec / 1000));
    return put(dst, cap, 0, buf, (size_t)n);
}

/* Go strconv.FormatFloat(d, 'f', -1, 64): shortest round-trip digits, no exponent. */
size_t keel_value_fmt_double(double d, char *dst, size_t cap)
{
    char out[KEEL_FMT_DOUBLE_MAX];
    size_t n = keel_fmt_double(d, 'f', out);
    return put(dst, cap, 0, out, n);
}

size_t keel_value_fmt_ip(const struct keel_value *v, char *dst, size_t cap)
{
    char buf[INET6_ADDRSTRLEN];
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (v->u.ip.len == 4)
        inet_ntop(AF_INET, v->u.ip.a, buf, sizeof(buf));
    else if (v->u.ip.len == 16 && memcmp(v->u.ip.a, mapped, 12) == 0)
        inet_ntop(AF_INET, v->u.ip.a + 12, buf, sizeof(buf));
    else if (v->u.ip.len == 16)
        inet_ntop(AF_INET6, v->u.ip.a, buf, sizeof(buf));
    else
        return put(dst, cap, 0, "<invalid IP>", 12);
    return put(dst, cap, 0, buf, strlen(buf));
}

/* ---- format -------------------------------------------------------------------- */

static int cmp_pair(const void *a, const void *b)
{
    const struct keel_str_pair *x = *(const struct keel_str_pair *const *)a;
    const struct keel_str_pair *y = *(const struct keel_str_pair *const *)b;
    size_t n = x->k.len < y->k.len ? x->k.len : y->k.len;
    int c = n ? memcmp(x->k.p, y->k.p, n) : 0;
    return c ? c : (x->k.len > y->k.len) - (x->k.len < y->k.len);
}

/* Sorted view of a map; small maps on the stack, big ones on the heap (not a hot path). */
static const struct keel_str_pair **sorted(const struct keel_value *v, const struct keel_str_pair **small,
                                           size_t nsmall)
{
    const struct keel_str_pair **s = v->u.map.n <= nsmall ? small : malloc(v->u.map.n * sizeof(*s));
    if (!s)
        abort();
    for (size_t i = 0; i < v->u.map.n; i++)
        s[i] = &v->u.map.kv[i];
    qsort(s, v->u.map.n, sizeof(*s), cmp_pair);
    return s;
}

static void append_scalar(const struct keel_value *v, struct keel_buf *out)
{
    char tmp[512];
    size_t n = 0;
    switch (v->type) {
    case KEEL_VALUE_INT64: {
        uint64_t u = v->u.i < 0 ? (uint64_t)0 - (uint64_t)v->u.i : (uint64_t)v->u.i;
        size_t w = fmt_uint(tmp, 24, u);
        if (v->u.i < 0)
            tmp[--w] = '-';
        keel_buf_append(out, tmp + w, 24 - w);
        return;
    }
    case KEEL_VALUE_UINT64: {
        size_t w = fmt_uint(tmp, 24, v->u.u);
        keel_buf_append(out, tmp + w, 24 - w);
        return;
    }
    case KEEL_VALUE_DOUBLE:
        n = keel_value_fmt_double(v->u.d, tmp, sizeof(tmp));
        break;
    case KEEL_VALUE_BOOL:
        if (v->u.b)
            keel_buf_append(out, "true", 4);
        else
            keel_buf_append(out, "false", 5);
        return;
    case KEEL_VALUE_DURATION:
        n = keel_value_fmt_duration(v->u.i, tmp, sizeof(tmp));
        break;
    case KEEL_VALUE_TIMESTAMP:
        n = keel_value_fmt_timestamp(v->u.t, tmp, sizeof(tmp));
        break;
    case KEEL_VALUE_IP_ADDRESS:
        n = keel_value_fmt_ip(v, tmp, sizeof(tmp));
        break;
    default:
        break;
    }
    keel_buf_append(out, tmp, n < sizeof(tmp) ? n : sizeof(tmp));
}

void keel_value_format(const struct keel_value *v, struct keel_buf *out)
{
    switch (v->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        keel_buf_append(out, v->u.s.p, v->u.s.len);
        return;
    case KEEL_VALUE_ERROR:
        keel_buf_printf(out, v->u.err.fmt, v->u.err.arglen, v->u.err.arg ? v->u.err.arg : "");
        return;
    case KEEL_VALUE_STRING_MAP: {
        const struct keel_str_pair *small[32];
        const struct keel_str_pair **s = sorted(v, small, 32);
        for (size_t i = 0; i < v->u.map.n; i++) {
            if (i)
                keel_buf_append(out, "&", 1);
            keel_buf_append(out, s[i]->k.p, s[i]->k.len);
            keel_buf_append(out, "=", 1);
            keel_buf_append(out, s[i]->v.p, s[i]->v.len);
        }
        if (s != small)
            free(s);
        return;
    }
    case KEEL_VALUE_NONE:
        return;
    default:
        append_scalar(v, out);
    }
}

/* Strings go through the one JSON escaper (core/json.c): controls escaped, invalid UTF-8
 * as U+FFFD, so a stdio line stays valid JSON and UTF-8 whatever a client sent. */
static void json_str(const char *p, size_t n, struct keel_buf *out)
{
    keel_json_str_n(out, p, n);
}

void keel_value_format_json(const struct keel_value *v, struct keel_buf *out)
{
    switch (v->type) {
    case KEEL_VALUE_INT64:
    case KEEL_VALUE_UINT64:
    case KEEL_VALUE_BOOL:
        append_scalar(v, out);
        return;
    case KEEL_VALUE_DOUBLE:
        if (!isfinite(v->u.d)) {
            keel_buf_append_str(out, "null");
            return;
        }
        append_scalar(v, out);
        return;
    case KEEL_VALUE_STRING_MAP: {
        const struct keel_str_pair *small[32];
        const struct keel_str_pair **s = sorted(v, small, 32);
        keel_buf_append(out, "{", 1);
        for (size_t i = 0; i < v->u.map.n; i++) {
            if (i)
                keel_buf_append(out, ",", 1);
            json_str(s[i]->k.p, s[i]->k.len, out);
            keel_buf_append(out, ":", 1);
            json_str(s[i]->v.p, s[i]->v.len, out);
        }
        keel_buf_append(out, "}", 1);
        if (s != small)
            free(s);
        return;
    }
    case KEEL_VALUE_NONE:
    case KEEL_VALUE_NULL_TYPE:
        keel_buf_append_str(out, "null");
        return;
    case KEEL_VALUE_LIST:
    case KEEL_VALUE_MAP: {
        /* CEL values: a map's keys are written as JSON strings */
        bool map = v->type == KEEL_VALUE_MAP;
        keel_buf_append(out, map ? "{" : "[", 1);
        for (size_t i = 0; i < v->u.list.n; i++) {
            if (i)
                keel_buf_append(out, ",", 1);
            if (map) {
                const struct keel_value *k = &v->u.list.v[2 * i];
                if (k->type == KEEL_VALUE_STRING) {
                    keel_value_format_json(k, out);
                } else {
                    struct keel_buf tmp = { 0 };
                    keel_value_format(k, &tmp);
                    json_str(keel_buf_rptr(&tmp), keel_buf_len(&tmp), out);
                    keel_buf_release(&tmp);
                }
                keel_buf_append(out, ":", 1);
                keel_value_format_json(&v->u.list.v[2 * i + 1], out);
            } else {
                keel_value_format_json(&v->u.list.v[i], out);
            }
        }
        keel_buf_append(out, map ? "}" : "]", 1);
        return;
    }
    case KEEL_VALUE_TYPE: {
        static const char *const names[KEEL_VALUE__COUNT] = {
            [KEEL_VALUE_INT64] = "int", [KEEL_VALUE_UINT64] = "uint", [KEEL_VALUE_DOUBLE] = "double",
            [KEEL_VALUE_BOOL] = "bool", [KEEL_VALUE_STRING] = "string", [KEEL_VALUE_BYTES] = "bytes",
            [KEEL_VALUE_LIST] = "list", [KEEL_VALUE_MAP] = "map", [KEEL_VALUE_NULL_TYPE] = "null_type",
            [KEEL_VALUE_TYPE] = "type", [KEEL_VALUE_TIMESTAMP] = "google.protobuf.Timestamp",
            [KEEL_VALUE_DURATION] = "google.protobuf.Duration",
        };
        const char *n = v->u.i >= 0 && v->u.i < KEEL_VALUE__COUNT && names[v->u.i] ? names[v->u.i]
                                                                                     : keel_value_type_name((enum keel_value_type)v->u.i);
        json_str(n, strlen(n), out);
        return;
    }
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        json_str(v->u.s.p, v->u.s.len, out);
        return;
    case KEEL_VALUE_DURATION:
    case KEEL_VALUE_TIMESTAMP: {
        /* short and never escaped, but quoted the same way */
        char tmp[64];
        size_t n = v->type == KEEL_VALUE_DURATION ? keel_value_fmt_duration(v->u.i, tmp, sizeof(tmp))
                                                  : keel_value_fmt_timestamp(v->u.t, tmp, sizeof(tmp));
        json_str(tmp, n < sizeof(tmp) ? n : sizeof(tmp), out);
        return;
    }
    default: {
        struct keel_buf tmp = { 0 };
        keel_value_format(v, &tmp);
        json_str(keel_buf_rptr(&tmp), keel_buf_len(&tmp), out);
        keel_buf_release(&tmp);
    }
    }
}

/* ---- parsers ------------------------------------------------------------------- */

int keel_value_parse_int(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (len && (s[0] == '-' || s[0] == '+'))
        neg = s[i++] == '-';
    if (i == len)
        return KEEL_EINVAL;
    uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return KEEL_EINVAL;
        unsigned dgt = (unsigned)(s[i] - '0');
        if (v > (lim - dgt) / 10)
            return KEEL_EINVAL;
        v = v * 10 + dgt;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

int keel_value_parse_double(const char *s, size_t len, double *out)
{
    char tmp[64];
    if (len == 0 || len >= sizeof(tmp))
        return KEEL_EINVAL;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    if (strchr(tmp, 'x') || strchr(tmp, 'X') || tmp[0] == ' ')
        return KEEL_EINVAL;
    char *end;
    *out = strtod(tmp, &end);
    return *end == 0 ? 0 : KEEL_EINVAL;
}

/* Go time.ParseDuration. */
int keel_value_parse_duration(const char *s, size_t len, int64_t *ns)
{
    static const struct { const char *u; size_t n; uint64_t mult; } units[] = {
        { "ns", 2, 1 }, { "us", 2, 1000 }, { "\xc2\xb5s", 3, 1000 }, { "\xce\xbcs", 3, 1000 },
        { "ms", 2, 1000000 }, { "s", 1, 1000000000ull }, { "m", 1, 60000000000ull },
        { "h", 1, 3600000000000ull },
    };
    size_t i = 0;
    bool neg = false;
    uint64_t d = 0;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (len - i == 1 && s[i] == '0') {
        *ns = 0;
        return 0;
    }
    if (i == len)
        return KEEL_EINVAL;
    while (i < len) {
        uint64_t v = 0, f = 0;
        double scale = 1;
        size_t start = i;
        bool overflow = false;
        if (!(s[i] == '.' || (s[i] >= '0' && s[i] <= '9')))
            return KEEL_EINVAL;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (v > (UINT64_MAX / 10) - 1)
                overflow = true;
            v = v * 10 + (uint64_t)(s[i] - '0');
            i++;
        }
        if (overflow || v > (uint64_t)INT64_MAX)
            return KEEL_EINVAL;
        bool pre = i != start, post = false;
        if (i < len && s[i] == '.') {
            i++;
            size_t fs = i;
            while (i < len && s[i] >= '0' && s[i] <= '9') {
                if (f <= (UINT64_MAX / 10) - 1 && scale < 1e18) {
                    f = f * 10 + (uint64_t)(s[i] - '0');
                    scale *= 10;
                }
                i++;
            }
            post = i != fs;
        }
        if (!pre && !post)
            return KEEL_EINVAL;
        size_t us = i;
        while (i < len && s[i] != '.' && !(s[i] >= '0' && s[i] <= '9'))
            i++;
        if (us == i)
            return KEEL_EINVAL; /* missing unit */
        uint64_t mult = 0;
        for (size_t k = 0; k < sizeof(units) / sizeof(units[0]); k++)
            if (units[k].n == i - us && memcmp(units[k].u, s + us, units[k].n) == 0)
                mult = units[k].mult;
        if (!mult)
            return KEEL_EINVAL;
        if (v > (uint64_t)INT64_MAX / mult)
            return KEEL_EINVAL;
        v *= mult;
        if (f > 0) {
            v += (uint64_t)((double)f * ((double)mult / scale));
            if (v > (uint64_t)INT64_MAX)
                return KEEL_EINVAL;
        }
        d += v;
        if (d > (uint64_t)INT64_MAX)
            return KEEL_EINVAL;
    }
    *ns = neg ? -(int64_t)d : (int64_t)d;
    return 0;
}

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm). */
int keel_value_parse_timestamp(const char *s, size_t len, struct keel_time *t)
{
    int Y, M, D, h, m, sec;
    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return KEEL_EINVAL;
    if (digits(s, 4, &Y) || digits(s + 5, 2, &M) || digits(s + 8, 2, &D) || digits(s + 11, 2, &h) ||
        digits(s + 14, 2, &m) || digits(s + 17, 2, &sec))
        return KEEL_EINVAL;
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 59)
        return KEEL_EINVAL;
    bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (M == 2 && D == 29 && !leap)
        return KEEL_EINVAL;
    size_t i = 19;
    int32_t nsec = 0;
    if (i < len && s[i] == '.') {
        i++;
        size_t fs = i;
        int32_t scale = 100000000;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            nsec += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == fs)
            return KEEL_EINVAL;
    }
    int64_t off = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return KEEL_EINVAL;
        off = (oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return KEEL_EINVAL;
    }
    if (i != len)
        return KEEL_EINVAL;
    t->sec = days_from_civil(Y, (unsigned)M, (unsigned)D) * 86400 + h * 3600 + m * 60 + sec - off;
    t->nsec = nsec;
    return 0;
}

int keel_value_parse_ip(const char *s, size_t len, struct keel_value *out)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof(tmp))
        return KEEL_EINVAL;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    out->type = KEEL_VALUE_IP_ADDRESS;
    memset(out->u.ip.a, 0, sizeof(out->u.ip.a));
    if (inet_pton(AF_INET, tmp, out->u.ip.a) == 1) {
        out->u.ip.len = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, tmp, out->u.ip.a) == 1) {
        out->u.ip.len = 16;
        return 0;
    }
    return KEEL_EINVAL;
}

int keel_value_parse(enum keel_value_type t, const char *s, size_t len, struct keel_value *out)
{
    memset(out, 0, sizeof(*out));
    out->type = t;
    switch (t) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        out->u.s.p = s;
        out->u.s.len = len;
        return 0;
    case KEEL_VALUE_INT64:
        return keel_value_parse_int(s, len, &out->u.i);
    case KEEL_VALUE_DOUBLE:
        return keel_value_parse_double(s, len, &out->u.d);
    case KEEL_VALUE_BOOL:
        if (len == 4 && !strncasecmp(s, "true", 4))
            out->u.b = true;
        else if (len == 5 && !strncasecmp(s, "false", 5))
            out->u.b = false;
        else
            return KEEL_EINVAL;
        return 0;
    case KEEL_VALUE_DURATION:
        return keel_value_parse_duration(s, len, &out->u.i);
    case KEEL_VALUE_TIMESTAMP:
        return keel_value_parse_timestamp(s, len, &out->u.t);
    case KEEL_VALUE_IP_ADDRESS:
        return keel_value_parse_ip(s, len, out);
    default:
        return KEEL_EINVAL;
    }
}
