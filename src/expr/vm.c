/* The VM: a switch over bytecode with a fixed value stack on the C stack. It never
 * allocates (strings it builds go to a per-thread scratch area) and treats errors as
 * values, so CEL's error-absorbing && / || (spec B.3) fall out naturally. */
#include "expr/expr_int.h"

#include "core/err.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char scratch[KEEL_EXPR_SCRATCH];
static _Thread_local size_t scratch_used;
static _Thread_local char errbuf[512];

static char *salloc(size_t n)
{
    if (n > sizeof(scratch) - scratch_used)
        return NULL;
    char *p = scratch + scratch_used;
    scratch_used += n;
    return p;
}

static struct keel_value err(const char *fmt, const char *arg, size_t arglen)
{
    struct keel_value v = { .type = KEEL_VALUE_ERROR };
    v.u.err.fmt = fmt;
    v.u.err.arg = arg;
    v.u.err.arglen = (int)(arglen > 200 ? 200 : arglen);
    return v;
}

static struct keel_value serr(const char *msg) { return err(msg, NULL, 0); }

static struct keel_value vstr(enum keel_value_type t, const char *p, size_t n)
{
    struct keel_value v = { .type = t };
    v.u.s.p = p;
    v.u.s.len = n;
    return v;
}

static struct keel_value vbool(bool b) { return keel_value_bool(b); }

static int cmp(const struct keel_value *a, const struct keel_value *b)
{
    switch (a->type) {
    case KEEL_VALUE_INT64:
    case KEEL_VALUE_DURATION:
        return (a->u.i > b->u.i) - (a->u.i < b->u.i);
    case KEEL_VALUE_UINT64:
        return (a->u.u > b->u.u) - (a->u.u < b->u.u);
    case KEEL_VALUE_DOUBLE:
        return (a->u.d > b->u.d) - (a->u.d < b->u.d);
    case KEEL_VALUE_BOOL:
        return (int)a->u.b - (int)b->u.b;
    case KEEL_VALUE_TIMESTAMP:
        if (a->u.t.sec != b->u.t.sec)
            return (a->u.t.sec > b->u.t.sec) - (a->u.t.sec < b->u.t.sec);
        return (a->u.t.nsec > b->u.t.nsec) - (a->u.t.nsec < b->u.t.nsec);
    default: {
        size_t n = a->u.s.len < b->u.s.len ? a->u.s.len : b->u.s.len;
        int c = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
        return c ? c : (a->u.s.len > b->u.s.len) - (a->u.s.len < b->u.s.len);
    }
    }
}

static struct keel_value concat(enum keel_value_type t, struct keel_str a, struct keel_str b)
{
    char *p = salloc(a.len + b.len);
    if (!p)
        return serr("string result too long");
    if (a.len)
        memcpy(p, a.p, a.len);
    if (b.len)
        memcpy(p + a.len, b.p, b.len);
    return vstr(t, p, a.len + b.len);
}

static struct keel_value no_overload(void) { return serr("no such overload"); }

/* Timestamp and duration arithmetic, list concatenation (CEL). */
static struct keel_value arith_cel(uint8_t op, const struct keel_value *a, const struct keel_value *b)
{
    struct keel_value r = { .type = KEEL_VALUE_TIMESTAMP };
    if (a->type == KEEL_VALUE_LIST && b->type == KEEL_VALUE_LIST && op == OP_ADD) {
        size_t n = a->u.list.n + b->u.list.n;
        struct keel_value *v = n ? expr_arena_alloc(n * sizeof(*v)) : NULL;
        if (n && !v)
            return serr("evaluation needs too much memory");
        if (a->u.list.n)
            memcpy(v, a->u.list.v, a->u.list.n * sizeof(*v));
        if (b->u.list.n)
            memcpy(v + a->u.list.n, b->u.list.v, b->u.list.n * sizeof(*v));
        r.type = KEEL_VALUE_LIST;
        r.u.list.v = v;
        r.u.list.n = n;
        return r;
    }
    if (a->type == KEEL_VALUE_TIMESTAMP && b->type == KEEL_VALUE_TIMESTAMP && op == OP_SUB) {
        r.type = KEEL_VALUE_DURATION;
        if (expr_ts_diff(a->u.t, b->u.t, &r.u.i) < 0)
            return serr("duration out of range");
        return r;
    }
    if (a->type == KEEL_VALUE_TIMESTAMP && b->type == KEEL_VALUE_DURATION && (op == OP_ADD || op == OP_SUB)) {
        if (expr_ts_add(a->u.t, b->u.i, op == OP_SUB, &r.u.t) < 0)
            return serr("timestamp out of range");
        return r;
    }
    if (a->type == KEEL_VALUE_DURATION && b->type == KEEL_VALUE_TIMESTAMP && op == OP_ADD) {
        if (expr_ts_add(b->u.t, a->u.i, false, &r.u.t) < 0)
            return serr("timestamp out of range");
        return r;
    }
    return no_overload();
}

static struct keel_value arith(uint8_t op, const struct keel_value *a, const struct keel_value *b, bool wrap)
{
    struct keel_value r = *a;
    if (a->type != b->type || a->type == KEEL_VALUE_LIST || a->type == KEEL_VALUE_TIMESTAMP)
        return arith_cel(op, a, b);
    switch (a->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
        if (op != OP_ADD && op != OP_ADD_WRAP)
            return no_overload();
        return concat(a->type, a->u.s, b->u.s);
    case KEEL_VALUE_DOUBLE:
        switch (op) {
        case OP_ADD: case OP_ADD_WRAP: r.u.d = a->u.d + b->u.d; break;
        case OP_SUB: r.u.d = a->u.d - b->u.d; break;
        case OP_MUL: r.u.d = a->u.d * b->u.d; break;
        case OP_DIV: r.u.d = a->u.d / b->u.d; break;
        default: return no_overload();
        }
        return r;
    case KEEL_VALUE_UINT64:
        switch (op) {
        case OP_ADD: if (__builtin_add_overflow(a->u.u, b->u.u, &r.u.u)) return serr("unsigned integer overflow"); break;
        case OP_SUB: if (__builtin_sub_overflow(a->u.u, b->u.u, &r.u.u)) return serr("unsigned integer overflow"); break;
        case OP_MUL: if (__builtin_mul_overflow(a->u.u, b->u.u, &r.u.u)) return serr("unsigned integer overflow"); break;
        case OP_DIV: if (!b->u.u) return serr("division by zero"); r.u.u = a->u.u / b->u.u; break;
        default: if (!b->u.u) return serr("modulus by zero"); r.u.u = a->u.u % b->u.u; break;
        }
        return r;
    case KEEL_VALUE_DURATION:
        if (op != OP_ADD && op != OP_SUB && op != OP_ADD_WRAP)
            return no_overload();
        /* fall through */
    case KEEL_VALUE_INT64:
        break;
    default:
        return no_overload();
    }
    {
        if (wrap) {
            r.u.i = (int64_t)((uint64_t)a->u.i + (uint64_t)b->u.i);
            return r;
        }
        switch (op) {
        case OP_ADD: if (__builtin_add_overflow(a->u.i, b->u.i, &r.u.i)) return serr("integer overflow"); break;
        case OP_SUB: if (__builtin_sub_overflow(a->u.i, b->u.i, &r.u.i)) return serr("integer overflow"); break;
        case OP_MUL: if (__builtin_mul_overflow(a->u.i, b->u.i, &r.u.i)) return serr("integer overflow"); break;
        case OP_DIV:
            if (!b->u.i) return serr("division by zero");
            if (a->u.i == INT64_MIN && b->u.i == -1) return serr("integer overflow");
            r.u.i = a->u.i / b->u.i;
            break;
        default:
            if (!b->u.i) return serr("modulus by zero");
            if (b->u.i == -1) { r.u.i = 0; break; }
            r.u.i = a->u.i % b->u.i;
            break;
        }
        return r;
    }
}

/* match(s, p): glob with one '*' at the end or the start (spec A.7). */
static bool glob(struct keel_str s, struct keel_str p)
{
    if (p.len && p.p[p.len - 1] == '*')
        return s.len >= p.len - 1 && (p.len == 1 || !memcmp(s.p, p.p, p.len - 1));
    if (p.len && p.p[0] == '*')
        return s.len >= p.len - 1 && (p.len == 1 || !memcmp(s.p + s.len - (p.len - 1), p.p + 1, p.len - 1));
    return keel_str_eq(s, p);
}

static struct keel_value regex_run(const regex_t *re, struct keel_str s)
{
    /* regexec wants a C string: copy into scratch (no allocation, and sanitizers'
     * interceptors do not understand REG_STARTEND) */
    size_t mark = scratch_used;
    char *p = salloc(s.len + 1);
    if (!p)
        return serr("matches(): subject too long");
    if (s.len)
        memcpy(p, s.p, s.len);
    p[s.len] = 0;
    int rc = regexec(re, p, 0, NULL, 0);
    scratch_used = mark;
    return vbool(rc == 0);
}

static struct keel_value regex_dynamic(struct keel_str pattern, struct keel_str subject)
{
    regex_t re;
    if (expr_regcomp(&re, pattern.p, pattern.len) < 0)
        return err("invalid regular expression '%.*s'", pattern.p, pattern.len);
    struct keel_value v = regex_run(&re, subject);
    regfree(&re);
    return v;
}

/* Lower-casing for ASCII, Latin-1, Greek and Cyrillic: every mapping in these ranges keeps
 * the UTF-8 length, so the result has the input's length. */
static struct keel_value lower(struct keel_str s, bool ascii_only, bool upper)
{
    char *p = salloc(s.len);
    if (!p && s.len)
        return serr("string result too long");
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (!upper && c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        else if (upper && c >= 'a' && c <= 'z')
            c = (unsigned char)(c - 32);
        p[i] = (char)c;
        if (c >= 0xc0 && !ascii_only && !upper && i + 1 < s.len) {
            unsigned cp = ((c & 0x1fu) << 6) | ((unsigned char)s.p[i + 1] & 0x3fu);
            unsigned lc = cp;
            if ((cp >= 0xc0 && cp <= 0xde && cp != 0xd7) || (cp >= 0x391 && cp <= 0x3a9 && cp != 0x3a2) ||
                (cp >= 0x410 && cp <= 0x42f))
                lc = cp + 0x20;
            else if (cp >= 0x400 && cp <= 0x40f)
                lc = cp + 0x50;
            if (c < 0xe0) {
                p[i] = (char)(0xc0 | (lc >> 6));
                p[i + 1] = (char)(0x80 | (lc & 0x3f));
                i++;
            }
        }
    }
    return vstr(KEEL_VALUE_STRING, p ? p : "", s.len);
}

static bool dns_valid(struct keel_str s)
{
    size_t n = s.len;
    if (n && s.p[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return false;
    size_t lab = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s.p[i] == '.') {
            if (lab == 0 || lab > 63 || s.p[i - lab] == '-' || s.p[i - 1] == '-')
                return false;
            lab = 0;
            continue;
        }
        unsigned char c = (unsigned char)s.p[i];
        if (!(c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return false;
        lab++;
    }
    return true;
}

static bool email_valid(struct keel_str s)
{
    const char *at = s.len ? memrchr(s.p, '@', s.len) : NULL;
    if (!at || at == s.p)
        return false;
    for (const char *q = s.p; q < at; q++)
        if ((unsigned char)*q <= ' ' || strchr("<>()[],;:\\", *q))
            if (!(at - s.p >= 2 && s.p[0] == '"' && at[-1] == '"'))
                return false;
    return dns_valid((struct keel_str){ at + 1, (size_t)(s.p + s.len - at - 1) });
}

static bool uri_valid(struct keel_str s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c <= ' ' || c == 0x7f)
            return false;
        if (c == '%' && (i + 2 >= s.len || !strchr("0123456789abcdefABCDEF", s.p[i + 1]) || !s.p[i + 1] ||
                         !strchr("0123456789abcdefABCDEF", s.p[i + 2]) || !s.p[i + 2]))
            return false;
    }
    const char *colon = memchr(s.p, ':', s.len);
    if (colon == s.p)
        return false; /* "missing protocol scheme" */
    return true;
}

static struct keel_value fmt_into(size_t (*f)(const struct keel_value *, char *, size_t), const struct keel_value *v)
{
    char tmp[400];
    size_t n = f(v, tmp, sizeof(tmp));
    if (n > sizeof(tmp))
        n = sizeof(tmp);
    char *p = salloc(n);
    if (!p)
        return serr("string result too long");
    memcpy(p, tmp, n);
    return vstr(KEEL_VALUE_STRING, p, n);
}
static size_t f_int(const struct keel_value *v, char *d, size_t c) { return (size_t)snprintf(d, c, "%lld", (long long)v->u.i); }
static size_t f_uint(const struct keel_value *v, char *d, size_t c) { return (size_t)snprintf(d, c, "%llu", (unsigned long long)v->u.u); }
static size_t f_double(const struct keel_value *v, char *d, size_t c) { return keel_value_fmt_double(v->u.d, d, c); }
static size_t f_dur(const struct keel_value *v, char *d, size_t c) { return expr_fmt_cel_duration(v->u.i, d, c); }
static size_t f_ts(const struct keel_value *v, char *d, size_t c) { return expr_fmt_cel_timestamp(v->u.t, d, c); }

static bool utf8_valid(struct keel_str s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    for (size_t i = 0; i < s.len;) {
        unsigned c = p[i];
        size_t n;
        unsigned long cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (s.len - i <= n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
            return false;
        i += n + 1;
    }
    return true;
}

static struct keel_value call(int fn, struct keel_value *a)
{
    struct keel_value r = { .type = keel_expr_fns[fn].result };
    struct keel_str s = a[0].u.s;
    switch ((enum fn_id)fn) {
    case FN_MATCH: return vbool(glob(a[0].u.s, a[1].u.s));
    case FN_MATCHES_CEXL: return regex_dynamic(a[0].u.s, a[1].u.s);
    case FN_MATCHES_CEL: return regex_dynamic(a[1].u.s, a[0].u.s);
    case FN_STARTS_WITH: return vbool(s.len >= a[1].u.s.len && (!a[1].u.s.len || !memcmp(s.p, a[1].u.s.p, a[1].u.s.len)));
    case FN_ENDS_WITH:
        return vbool(s.len >= a[1].u.s.len &&
                     (!a[1].u.s.len || !memcmp(s.p + s.len - a[1].u.s.len, a[1].u.s.p, a[1].u.s.len)));
    case FN_CONTAINS: return vbool(!a[1].u.s.len || (s.len && memmem(s.p, s.len, a[1].u.s.p, a[1].u.s.len)));
    case FN_TO_LOWER: return lower(s, false, false);
    case FN_LOWER_ASCII: return lower(s, true, false);
    case FN_UPPER_ASCII: return lower(s, true, true);
    case FN_SIZE_BYTES:
    case FN_SIZE_BYTESV: return keel_value_int((int64_t)s.len);
    case FN_SIZE_CHARS: {
        int64_t n = 0;
        for (size_t i = 0; i < s.len; i++)
            n += ((unsigned char)s.p[i] & 0xc0) != 0x80;
        return keel_value_int(n);
    }
    case FN_SIZE_MAP: return keel_value_int((int64_t)a[0].u.map.n);
    case FN_SIZE_LIST:
    case FN_SIZE_DMAP: return keel_value_int((int64_t)a[0].u.list.n);
    case FN_DURATION_D:
    case FN_TIMESTAMP_T:
    case FN_BYTES_B: return a[0];
    case FN_TIMESTAMP_I:
        r.u.t.sec = a[0].u.i;
        r.u.t.nsec = 0;
        if (expr_ts_check(r.u.t) < 0)
            return serr("timestamp out of range");
        return r;
    case FN_UINT_D:
        if (!(a[0].u.d > -1.0 && a[0].u.d < 18446744073709551616.0))
            return serr("uint() range error");
        r.u.u = (uint64_t)a[0].u.d;
        return r;
    case FN_TS_YEAR: case FN_TS_YEAR_TZ: case FN_TS_MONTH: case FN_TS_MONTH_TZ: case FN_TS_DOY: case FN_TS_DOY_TZ:
    case FN_TS_DOM: case FN_TS_DOM_TZ: case FN_TS_DATE: case FN_TS_DATE_TZ: case FN_TS_DOW: case FN_TS_DOW_TZ:
    case FN_TS_HOURS: case FN_TS_HOURS_TZ: case FN_TS_MINUTES: case FN_TS_MINUTES_TZ: case FN_TS_SECONDS:
    case FN_TS_SECONDS_TZ: case FN_TS_MILLIS: case FN_TS_MILLIS_TZ: {
        int k = fn - FN_TS_YEAR;
        bool tz = k & 1;
        if (expr_time_field(k / 2, a[0].u.t, tz ? &a[1].u.s : NULL, &r.u.i) < 0)
            return err("unsupported time zone '%.*s' (keel knows UTC and fixed offsets only)", a[1].u.s.p, a[1].u.s.len);
        return r;
    }
    case FN_DUR_HOURS: return keel_value_int(a[0].u.i / 3600000000000LL);
    case FN_DUR_MINUTES: return keel_value_int(a[0].u.i / 60000000000LL);
    case FN_DUR_SECONDS: return keel_value_int(a[0].u.i / 1000000000LL);
    case FN_DUR_MILLIS: return keel_value_int(a[0].u.i / 1000000LL % 1000);
    case FN_EMPTY_MAP: return keel_value_map(NULL, 0);
    case FN_IP:
        if (keel_value_parse_ip(s.p, s.len, &r) < 0)
            return err("could not convert %.*s to IP_ADDRESS", s.p, s.len);
        return r;
    case FN_TIMESTAMP_CEL:
        if (keel_value_parse_timestamp(s.p, s.len, &r.u.t) < 0 || expr_ts_check(r.u.t) < 0)
            return err("could not convert '%.*s' to TIMESTAMP (RFC 3339, years 1 to 9999)", s.p, s.len);
        return r;
    case FN_TIMESTAMP:
        if (keel_value_parse_timestamp(s.p, s.len, &r.u.t) < 0)
            return err("could not convert '%.*s' to TIMESTAMP. expected format: '2006-01-02T15:04:05Z07:00'", s.p, s.len);
        return r;
    case FN_DURATION:
        if (keel_value_parse_duration(s.p, s.len, &r.u.i) < 0)
            return err("could not convert '%.*s' to DURATION", s.p, s.len);
        return r;
    case FN_DNS_NAME:
        if (!dns_valid(s))
            return err("error converting '%.*s' to dns name", s.p, s.len);
        return vstr(KEEL_VALUE_DNS_NAME, s.p, s.len);
    case FN_EMAIL:
        if (!email_valid(s))
            return err("error converting '%.*s' to e-mail", s.p, s.len);
        return vstr(KEEL_VALUE_EMAIL_ADDRESS, s.p, s.len);
    case FN_URI:
        if (s.len == 0)
            return serr("error converting string to uri: empty string");
        if (!uri_valid(s))
            return err("error converting string to uri '%.*s'", s.p, s.len);
        return vstr(KEEL_VALUE_URI, s.p, s.len);
    case FN_COND_STRING: return a[0].u.b ? a[1] : a[2];
    case FN_STRING_S: return a[0];
    case FN_STRING_BY:
        if (!utf8_valid(s))
            return serr("string(): invalid UTF-8");
        return vstr(KEEL_VALUE_STRING, s.p, s.len);
    case FN_STRING_I: return fmt_into(f_int, &a[0]);
    case FN_STRING_U: return fmt_into(f_uint, &a[0]);
    case FN_STRING_D: return fmt_into(f_double, &a[0]);
    case FN_STRING_B: return a[0].u.b ? vstr(KEEL_VALUE_STRING, "true", 4) : vstr(KEEL_VALUE_STRING, "false", 5);
    case FN_STRING_DUR: return fmt_into(f_dur, &a[0]);
    case FN_STRING_TS: return fmt_into(f_ts, &a[0]);
    case FN_STRING_IP: return fmt_into(keel_value_fmt_ip, &a[0]);
    case FN_INT_I: return a[0];
    case FN_INT_U:
        if (a[0].u.u > (uint64_t)INT64_MAX)
            return serr("int() range error");
        return keel_value_int((int64_t)a[0].u.u);
    case FN_INT_D:
        if (!(a[0].u.d > -9223372036854775808.0 && a[0].u.d < 9223372036854775808.0))
            return serr("int() range error");
        return keel_value_int((int64_t)a[0].u.d);
    case FN_INT_S:
        if (keel_value_parse_int(s.p, s.len, &r.u.i) < 0)
            return err("cannot convert '%.*s' to int", s.p, s.len);
        return r;
    case FN_INT_TS: return keel_value_int(a[0].u.t.sec);
    case FN_UINT_I:
        if (a[0].u.i < 0)
            return serr("uint() range error");
        r.u.u = (uint64_t)a[0].u.i;
        return r;
    case FN_UINT_U: return a[0];
    case FN_UINT_S: {
        uint64_t v = 0;
        bool ok = s.len > 0 && s.len <= 20;
        for (size_t i = 0; ok && i < s.len; i++)
            ok = s.p[i] >= '0' && s.p[i] <= '9' && !__builtin_mul_overflow(v, 10, &v) &&
                 !__builtin_add_overflow(v, (uint64_t)(s.p[i] - '0'), &v);
        if (ok) {
            r.u.u = v;
            return r;
        }
        return err("cannot convert '%.*s' to uint", s.p, s.len);
    }
    case FN_DOUBLE_I: r.u.d = (double)a[0].u.i; return r;
    case FN_DOUBLE_U: r.u.d = (double)a[0].u.u; return r;
    case FN_DOUBLE_D: return a[0];
    case FN_DOUBLE_S:
        if (keel_value_parse_double(s.p, s.len, &r.u.d) < 0)
            return err("cannot convert '%.*s' to double", s.p, s.len);
        return r;
    case FN_BYTES_S: return vstr(KEEL_VALUE_BYTES, s.p, s.len);
    case FN_BOOL_B: return a[0];
    case FN_BOOL_S: {
        /* exactly CEL's spellings (Go's strconv.ParseBool): not 'TrUe' */
        static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True" };
        static const char *const no[] = { "0", "f", "F", "false", "FALSE", "False" };
        for (size_t i = 0; i < 6; i++) {
            if (strlen(yes[i]) == s.len && !memcmp(yes[i], s.p, s.len))
                return vbool(true);
            if (strlen(no[i]) == s.len && !memcmp(no[i], s.p, s.len))
                return vbool(false);
        }
        return err("cannot convert '%.*s' to bool", s.p, s.len);
    }
    case FN__COUNT: break;
    }
    return serr("internal error: unknown function");
}

/* An overload of fn's name and arity whose parameter types are the run-time types. */
static struct keel_value call_dyn(int fn, int nargs, struct keel_value *a)
{
    const char *name = keel_expr_fns[fn].name;
    unsigned dia = keel_expr_fns[fn].dialects;
    for (int f = fn; f < FN__COUNT; f++) {
        const struct fn_desc *fd = &keel_expr_fns[f];
        if (fd->nargs != nargs || !(fd->dialects & dia & FN_CEL) || strcmp(fd->name, name))
            continue;
        bool ok = true;
        for (int i = 0; i < nargs && ok; i++)
            ok = a[i].type == fd->args[i];
        if (ok)
            return call(f, a);
    }
    return no_overload();
}

static struct keel_value index_dyn(const struct keel_value *c, const struct keel_value *k)
{
    if (c->type == KEEL_VALUE_LIST) {
        int64_t i;
        if (k->type == KEEL_VALUE_INT64)
            i = k->u.i;
        else if (k->type == KEEL_VALUE_UINT64 && k->u.u <= (uint64_t)INT64_MAX)
            i = (int64_t)k->u.u;
        else if (k->type == KEEL_VALUE_DOUBLE && k->u.d == floor(k->u.d) && fabs(k->u.d) < 9e18)
            i = (int64_t)k->u.d;
        else
            return no_overload();
        if (i < 0 || (uint64_t)i >= c->u.list.n)
            return serr("index out of range");
        return c->u.list.v[i];
    }
    if (c->type == KEEL_VALUE_MAP) {
        const struct keel_value *v = expr_map_find(c, k);
        if (!v)
            return k->type == KEEL_VALUE_STRING ? err("no such key: '%.*s'", k->u.s.p, k->u.s.len) : serr("no such key");
        return *v;
    }
    if (c->type == KEEL_VALUE_STRING_MAP && k->type == KEEL_VALUE_STRING) {
        const struct keel_str *v = keel_value_map_get(c, k->u.s.p, k->u.s.len);
        if (!v)
            return err("no such key: '%.*s'", k->u.s.p, k->u.s.len);
        return vstr(KEEL_VALUE_STRING, v->p, v->len);
    }
    if (c->type == KEEL_VALUE_STRING_MAP)
        return serr("no such key");
    return no_overload();
}

static struct keel_value in_dyn(const struct keel_value *x, const struct keel_value *c)
{
    if (c->type == KEEL_VALUE_LIST) {
        for (size_t i = 0; i < c->u.list.n; i++)
            if (expr_equal(x, &c->u.list.v[i]))
                return vbool(true);
        return vbool(false);
    }
    if (c->type == KEEL_VALUE_MAP)
        return vbool(expr_map_find(c, x) != NULL);
    if (c->type == KEEL_VALUE_STRING_MAP)
        return vbool(x->type == KEEL_VALUE_STRING && keel_value_map_get(c, x->u.s.p, x->u.s.len));
    return no_overload();
}

static struct keel_value make_map(struct keel_value *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        enum keel_value_type t = kv[2 * i].type;
        if (t != KEEL_VALUE_INT64 && t != KEEL_VALUE_UINT64 && t != KEEL_VALUE_BOOL && t != KEEL_VALUE_STRING)
            return serr("unsupported map key type");
        for (size_t j = 0; j < i; j++)
            if (expr_equal(&kv[2 * j], &kv[2 * i]))
                return serr("duplicate map key");
    }
    struct keel_value r = { .type = KEEL_VALUE_MAP };
    struct keel_value *v = n ? expr_arena_alloc(2 * n * sizeof(*v)) : NULL;
    if (n && !v)
        return serr("evaluation needs too much memory");
    if (n)
        memcpy(v, kv, 2 * n * sizeof(*v));
    r.u.list.v = v;
    r.u.list.n = n;
    return r;
}

static size_t range_len(const struct keel_value *r)
{
    return r->type == KEEL_VALUE_STRING_MAP ? r->u.map.n : r->u.list.n;
}

static struct keel_value range_elem(const struct keel_value *r, size_t i)
{
    if (r->type == KEEL_VALUE_STRING_MAP)
        return vstr(KEEL_VALUE_STRING, r->u.map.kv[i].k.p, r->u.map.kv[i].k.len);
    if (r->type == KEEL_VALUE_MAP)
        return r->u.list.v[2 * i];
    return r->u.list.v[i];
}

static struct keel_value load(const struct keel_attr_bag *bag, const struct insn *in)
{
    if (!keel_attr_bag_has(bag, in->attr)) {
        const char *nm = keel_attr_name(in->attr);
        return err("lookup failed: '%.*s'", nm, strlen(nm));
    }
    const struct keel_value *v = &bag->v[in->attr];
    if (v->type != (enum keel_value_type)in->b) {
        const char *nm = keel_attr_name(in->attr);
        return err("attribute '%.*s' holds a value of the wrong type", nm, strlen(nm));
    }
    return *v;
}

static const struct keel_value *load_map(const struct keel_attr_bag *bag, int id)
{
    if (!keel_attr_bag_has(bag, id) || bag->v[id].type != KEEL_VALUE_STRING_MAP)
        return NULL;
    return &bag->v[id];
}

void expr_vm_run(const struct keel_expr *e, size_t start, size_t end, const struct keel_attr_bag *bag,
                 struct keel_value *out)
{
    struct keel_value st[KEEL_EXPR_MAX_STACK + 1];
    struct keel_value loc[KEEL_EXPR_MAX_LOCALS];
    int sp = 0; /* number of values on the stack */
    size_t pc = start;
    scratch_used = 0;
    expr_arena_reset();
    while (pc < end) {
        const struct insn *in = &e->code[pc++];
        if (in->n) {
            int first = sp - in->n, i;
            for (i = first; i < sp && st[i].type != KEEL_VALUE_ERROR; i++)
                ;
            if (i < sp) {
                st[first] = st[i];
                sp = first + 1;
                continue;
            }
        }
        struct keel_value *t = sp > 0 ? &st[sp - 1] : st; /* top, when there is one */
        switch ((enum op)in->op) {
        case OP_CONST:
            st[sp++] = e->consts[in->a];
            break;
        case OP_LOAD:
            st[sp++] = load(bag, in);
            break;
        case OP_LOAD_OPT:
            if (keel_attr_bag_has(bag, in->attr))
                st[sp++] = load(bag, in);
            else
                pc = (size_t)in->a;
            break;
        case OP_MAPGET:
        case OP_MAPGET_OPT: {
            const struct keel_value *m = load_map(bag, in->attr);
            const struct keel_str *k = &e->consts[in->b].u.s;
            const struct keel_str *v = m ? keel_value_map_get(m, k->p, k->len) : NULL;
            if (v) {
                st[sp++] = vstr(KEEL_VALUE_STRING, v->p, v->len);
            } else if (in->op == OP_MAPGET_OPT) {
                pc = (size_t)in->a;
            } else if (!m) {
                struct insn li = *in;
                li.b = KEEL_VALUE_STRING_MAP;
                st[sp++] = load(bag, &li);
            } else if (e->dialect == KEEL_EXPR_CEL) {
                st[sp++] = err("no such key: '%.*s'", k->p, k->len);
            } else {
                st[sp++] = vstr(KEEL_VALUE_STRING, "", 0);
            }
            break;
        }
        case OP_INDEX:
        case OP_INDEX_CEL:
        case OP_INDEX_OPT: {
            const struct keel_str *v = keel_value_map_get(&st[sp - 2], t->u.s.p, t->u.s.len);
            if (v) {
                st[sp - 2] = vstr(KEEL_VALUE_STRING, v->p, v->len);
                sp--;
            } else if (in->op == OP_INDEX_OPT) {
                sp -= 2;
                pc = (size_t)in->a;
            } else if (in->op == OP_INDEX_CEL) {
                st[sp - 2] = err("no such key: '%.*s'", t->u.s.p, t->u.s.len);
                sp--;
            } else {
                st[sp - 2] = vstr(KEEL_VALUE_STRING, "", 0);
                sp--;
            }
            break;
        }
        case OP_HAS:
            st[sp++] = vbool(keel_attr_bag_has(bag, in->attr));
            break;
        case OP_HAS_KEY: {
            const struct keel_value *m = load_map(bag, in->attr);
            const struct keel_str *k = &e->consts[in->b].u.s;
            st[sp++] = vbool(m && keel_value_map_get(m, k->p, k->len));
            break;
        }
        case OP_POP:
            sp--;
            break;
        case OP_JMP:
            pc = (size_t)in->a;
            break;
        case OP_JF_KEEP:
            if (t->type == KEEL_VALUE_ERROR || !t->u.b)
                pc = (size_t)in->a;
            else
                sp--;
            break;
        case OP_JT_KEEP:
            if (t->type == KEEL_VALUE_ERROR || t->u.b)
                pc = (size_t)in->a;
            else
                sp--;
            break;
        case OP_JF_ONLY:
            if (t->type == KEEL_VALUE_BOOL && !t->u.b)
                pc = (size_t)in->a;
            break;
        case OP_JT_ONLY:
            if (t->type == KEEL_VALUE_BOOL && t->u.b)
                pc = (size_t)in->a;
            break;
        case OP_AND_CEL:
        case OP_OR_CEL: {
            /* a is (true for and / false for or), an error or not a bool; b decides when
             * it is the absorbing value, else the first error wins */
            struct keel_value *a = &st[sp - 2];
            bool absorbing = in->op == OP_AND_CEL ? false : true;
            if (t->type == KEEL_VALUE_BOOL && t->u.b == absorbing)
                *a = *t;
            else if (a->type == KEEL_VALUE_BOOL)
                *a = t->type == KEEL_VALUE_BOOL || t->type == KEEL_VALUE_ERROR ? *t : no_overload();
            else if (a->type != KEEL_VALUE_ERROR)
                *a = no_overload();
            sp--;
            break;
        }
        case OP_BRANCH:
            if (t->type != KEEL_VALUE_BOOL) {
                if (t->type != KEEL_VALUE_ERROR)
                    *t = no_overload();
                pc = (size_t)in->b;
                break;
            }
            sp--;
            if (!t->u.b)
                pc = (size_t)in->a;
            break;
        case OP_EQ:
            st[sp - 2] = vbool(expr_equal(&st[sp - 2], t));
            sp--;
            break;
        case OP_NE:
            st[sp - 2] = vbool(!expr_equal(&st[sp - 2], t));
            sp--;
            break;
        case OP_EQ_ATTR_CONST: {
            const struct keel_value *c = &e->consts[in->b], *bv = &bag->v[in->attr];
            if (keel_attr_bag_has(bag, in->attr) && bv->type == c->type) {
                bool eq;
                if (c->type == KEEL_VALUE_STRING)
                    eq = bv->u.s.len == c->u.s.len && (c->u.s.len == 0 || !memcmp(bv->u.s.p, c->u.s.p, c->u.s.len));
                else if (c->type == KEEL_VALUE_BOOL)
                    eq = bv->u.b == c->u.b;
                else
                    eq = bv->u.i == c->u.i;
                st[sp].type = KEEL_VALUE_BOOL;
                st[sp++].u.b = eq;
                break;
            }
            struct insn li = *in;
            li.b = e->consts[in->b].type;
            struct keel_value v = load(bag, &li);
            st[sp++] = v.type == KEEL_VALUE_ERROR ? v : vbool(keel_value_equal(&v, &e->consts[in->b]));
            break;
        }
        case OP_LT:
        case OP_LE:
        case OP_GT:
        case OP_GE: {
            struct keel_value *a = &st[sp - 2];
            int c = a->type == t->type && a->type != KEEL_VALUE_DOUBLE ? cmp(a, t) : expr_compare(a, t);
            if (c == 3)
                *a = no_overload();
            else
                *a = vbool(c != 2 && (in->op == OP_LT ? c < 0 : in->op == OP_LE ? c <= 0 : in->op == OP_GT ? c > 0 : c >= 0));
            sp--;
            break;
        }
        case OP_ADD:
        case OP_ADD_WRAP:
        case OP_SUB:
        case OP_MUL:
        case OP_DIV:
        case OP_MOD:
            st[sp - 2] = arith(in->op, &st[sp - 2], t, in->op == OP_ADD_WRAP);
            sp--;
            break;
        case OP_NEG:
            if (t->type == KEEL_VALUE_DOUBLE)
                t->u.d = -t->u.d;
            else if (t->type != KEEL_VALUE_INT64 && t->type != KEEL_VALUE_DURATION)
                *t = no_overload();
            else if (t->u.i == INT64_MIN)
                *t = serr("integer overflow");
            else
                t->u.i = -t->u.i;
            break;
        case OP_NOT:
            if (t->type != KEEL_VALUE_BOOL)
                *t = no_overload();
            else
                t->u.b = !t->u.b;
            break;
        case OP_IN_LIST: {
            struct keel_value *x = &st[sp - in->a - 1];
            bool found = false;
            for (int i = 0; i < in->a && !found; i++)
                found = keel_value_equal(x, &st[sp - in->a + i]);
            sp -= in->a;
            *x = vbool(found);
            break;
        }
        case OP_IN_MAP: {
            struct keel_value *k = &st[sp - 2];
            *k = vbool(keel_value_map_get(t, k->u.s.p, k->u.s.len) != NULL);
            sp--;
            break;
        }
        case OP_CALL: {
            int n = keel_expr_fns[in->a].nargs;
            struct keel_value r = call(in->a, &st[sp - n]);
            sp -= n;
            st[sp++] = r;
            break;
        }
        case OP_REGEX:
            *t = regex_run(&e->res[in->a], t->u.s);
            break;
        case OP_MKLIST: {
            struct keel_value r = { .type = KEEL_VALUE_LIST };
            struct keel_value *v = in->a ? expr_arena_alloc((size_t)in->a * sizeof(*v)) : NULL;
            sp -= in->a;
            if (in->a && !v) {
                r = serr("evaluation needs too much memory");
            } else if (in->a) {
                memcpy(v, &st[sp], (size_t)in->a * sizeof(*v));
                r.u.list.v = v;
                r.u.list.n = (size_t)in->a;
            }
            st[sp++] = r;
            break;
        }
        case OP_MKMAP:
            sp -= 2 * in->a;
            st[sp] = make_map(&st[sp], (size_t)in->a);
            sp++;
            break;
        case OP_SELECT: {
            const struct keel_value *k = &e->consts[in->b];
            struct keel_value r;
            if (t->type == KEEL_VALUE_MAP || t->type == KEEL_VALUE_STRING_MAP) {
                r = index_dyn(t, k);
                if (in->a)
                    r = vbool(r.type != KEEL_VALUE_ERROR);
            } else {
                r = err("no such field '%.*s'", k->u.s.p, k->u.s.len);
            }
            *t = r;
            break;
        }
        case OP_LOCAL:
            st[sp++] = loc[in->a];
            break;
        case OP_FAIL:
            st[sp++] = err("undeclared reference to '%.*s'", e->consts[in->b].u.s.p, e->consts[in->b].u.s.len);
            break;
        case OP_TYPEOF: {
            enum keel_value_type ty = expr_type_of(t);
            t->type = KEEL_VALUE_TYPE;
            t->u.i = ty;
            break;
        }
        case OP_CALL_DYN: {
            struct keel_value r = call_dyn(in->a, in->b, &st[sp - in->b]);
            sp -= in->b;
            st[sp++] = r;
            break;
        }
        case OP_INDEX_DYN:
            st[sp - 2] = index_dyn(&st[sp - 2], t);
            sp--;
            break;
        case OP_IN:
            st[sp - 2] = in_dyn(&st[sp - 2], t);
            sp--;
            break;
        case OP_ITER_INIT: {
            if (t->type != KEEL_VALUE_LIST && t->type != KEEL_VALUE_MAP && t->type != KEEL_VALUE_STRING_MAP) {
                if (t->type != KEEL_VALUE_ERROR)
                    *t = no_overload();
                pc = (size_t)in->b;
                break;
            }
            size_t n = range_len(t);
            struct keel_value acc;
            if (in->a == M_ALL || in->a == M_EXISTS) {
                acc = vbool(in->a == M_ALL);
            } else if (in->a == M_EXISTS_ONE) {
                acc = keel_value_int(0);
            } else {
                acc.type = KEEL_VALUE_LIST;
                acc.u.list.n = 0;
                acc.u.list.v = n ? expr_arena_alloc(n * sizeof(struct keel_value)) : NULL;
                if (n && !acc.u.list.v) {
                    *t = serr("evaluation needs too much memory");
                    pc = (size_t)in->b;
                    break;
                }
            }
            st[sp++] = keel_value_int(0);
            st[sp++] = acc;
            break;
        }
        case OP_ITER_NEXT: {
            struct keel_value *idx = &st[sp - 2];
            if ((uint64_t)idx->u.i >= range_len(&st[sp - 3])) {
                pc = (size_t)in->b;
                break;
            }
            loc[in->a] = range_elem(&st[sp - 3], (size_t)idx->u.i);
            idx->u.i++;
            break;
        }
        case OP_FILTER_SKIP: {
            struct keel_value *acc = &st[sp - 2];
            sp--;
            if (t->type == KEEL_VALUE_BOOL && t->u.b)
                break;
            if (t->type != KEEL_VALUE_BOOL && acc->type != KEEL_VALUE_ERROR)
                *acc = t->type == KEEL_VALUE_ERROR ? *t : no_overload();
            pc = (size_t)in->a;
            break;
        }
        case OP_ACCUM: {
            struct keel_value *acc = &st[sp - 2], *idx = &st[sp - 3];
            sp--;
            bool pb = t->type == KEEL_VALUE_BOOL;
            if (in->a == M_ALL || in->a == M_EXISTS) {
                bool absorbing = in->a == M_EXISTS; /* false ends all(), true ends exists() */
                if (pb && t->u.b == absorbing) {
                    *acc = *t;
                    idx->u.i = INT64_MAX; /* decided: stop */
                } else if (!pb && acc->type != KEEL_VALUE_ERROR) {
                    *acc = t->type == KEEL_VALUE_ERROR ? *t : no_overload();
                }
            } else if (acc->type == KEEL_VALUE_ERROR) {
                /* keep the first error */
            } else if (!pb && in->a != M_MAP && in->a != M_MAP3) {
                *acc = t->type == KEEL_VALUE_ERROR ? *t : no_overload();
            } else if (in->a == M_EXISTS_ONE) {
                acc->u.i += t->u.b;
            } else if (in->a == M_FILTER) {
                if (t->u.b)
                    ((struct keel_value *)acc->u.list.v)[acc->u.list.n++] = loc[in->b];
            } else if (t->type == KEEL_VALUE_ERROR) {
                *acc = *t;
            } else {
                ((struct keel_value *)acc->u.list.v)[acc->u.list.n++] = *t;
            }
            break;
        }
        case OP_ITER_END: {
            struct keel_value r = *t;
            if (in->a == M_EXISTS_ONE && r.type == KEEL_VALUE_INT64)
                r = vbool(r.u.i == 1);
            sp -= 2;
            st[sp - 1] = r;
            break;
        }
        case OP__COUNT:
            break;
        }
    }
    *out = sp > 0 ? st[sp - 1] : serr("internal error: empty stack");
}

int keel_expr_eval(const struct keel_expr *e, const struct keel_attr_bag *bag, struct keel_value *out,
                   const char **errmsg)
{
    expr_vm_run(e, 0, e->ncode, bag, out);
    if (out->type != KEEL_VALUE_ERROR)
        return 0;
    if (errmsg) {
        snprintf(errbuf, sizeof(errbuf), out->u.err.fmt, out->u.err.arglen, out->u.err.arg ? out->u.err.arg : "");
        *errmsg = errbuf;
    }
    return KEEL_EINVAL;
}

/* A {n}, {n,} or {n,m} repetition at p (p[0] == '{'): its length, or 0 when it is not
 * one (then '{' is a literal, as in RE2); *count: its largest count. */
static size_t repeat_len(const char *p, size_t len, long *count)
{
    size_t i = 1;
    long lo = 0, hi = -1;
    if (i >= len || p[i] < '0' || p[i] > '9')
        return 0;
    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++)
        lo = lo > 1000 ? lo : lo * 10 + (p[i] - '0');
    if (i < len && p[i] == ',') {
        i++;
        if (i < len && p[i] >= '0' && p[i] <= '9')
            for (hi = 0; i < len && p[i] >= '0' && p[i] <= '9'; i++)
                hi = hi > 1000 ? hi : hi * 10 + (p[i] - '0');
    }
    if (i >= len || p[i] != '}')
        return 0;
    *count = hi > lo ? hi : lo;
    return i + 1;
}

/* RE2 -> POSIX ERE for the common escapes: \d \D \w \W \s \S outside brackets, (?i).
 * What RE2 refuses is refused here too, before glibc's regcomp can blow up on it: a
 * repetition of a repetition (`a**`, `a++`, `a{2}{3}`; a lone lazy `?` after one is
 * accepted and dropped, since only match / no match matters), and counted repetitions
 * adding up to more than 1000 (RE2's limit; glibc expands nested counts in memory). */
int expr_regcomp(regex_t *re, const char *p, size_t len)
{
    char buf[2048];
    size_t o = 0;
    int flags = REG_EXTENDED | REG_NOSUB;
    bool inclass = false;
    bool after_rep = false, after_lazy = false; /* the last token was a repetition */
    long counted = 0;                           /* sum of the {n,m} counts so far */
    if (len >= 4 && !memcmp(p, "(?i)", 4)) {
        flags |= REG_ICASE;
        p += 4;
        len -= 4;
    }
    for (size_t i = 0; i < len; i++) {
        if (o + 16 >= sizeof(buf))
            return -1;
        char c = p[i];
        if (c == 0)
            return -1;
        if (!inclass && (c == '*' || c == '+' || c == '?' || c == '{')) {
            size_t n = 1;
            long count = 0;
            if (c == '{' && (n = repeat_len(p + i, len - i, &count)) == 0) {
                buf[o++] = '\\'; /* not a repetition: a literal brace */
                buf[o++] = c;
                after_rep = false;
                continue;
            }
            counted += count;
            if (counted > 1000 || (after_rep && (c != '?' || after_lazy)))
                return -1;
            if (after_rep) { /* lazy modifier: the same matches */
                after_lazy = true;
                continue;
            }
            if (o + n + 16 >= sizeof(buf))
                return -1;
            memcpy(buf + o, p + i, n);
            o += n;
            i += n - 1;
            after_rep = true;
            after_lazy = false;
            continue;
        }
        if (!inclass)
            after_rep = after_lazy = false;
        if (c == '\\' && i + 1 < len) {
            const char *rep = NULL;
            switch (p[i + 1]) {
            case 'd': rep = inclass ? "0-9" : "[0-9]"; break;
            case 'D': rep = inclass ? NULL : "[^0-9]"; break;
            case 'w': rep = inclass ? "A-Za-z0-9_" : "[A-Za-z0-9_]"; break;
            case 'W': rep = inclass ? NULL : "[^A-Za-z0-9_]"; break;
            case 's': rep = inclass ? "[:space:]" : "[[:space:]]"; break;
            case 'S': rep = inclass ? NULL : "[^[:space:]]"; break;
            default: break;
            }
            if (rep) {
                size_t n = strlen(rep);
                memcpy(buf + o, rep, n);
                o += n;
                i++;
                continue;
            }
            buf[o++] = c;
            buf[o++] = p[++i];
            continue;
        }
        if (c == '[' && !inclass) {
            inclass = true;
            buf[o++] = c;
            if (i + 1 < len && p[i + 1] == '^')
                buf[o++] = p[++i];
            if (i + 1 < len && p[i + 1] == ']')
                buf[o++] = p[++i];
            continue;
        }
        if (c == '[' && inclass && i + 1 < len && p[i + 1] == ':') {
            const char *close = NULL;
            for (size_t j = i + 2; j + 1 < len; j++)
                if (p[j] == ':' && p[j + 1] == ']') {
                    close = p + j;
                    break;
                }
            if (close) {
                size_t n = (size_t)(close - (p + i)) + 2;
                if (o + n + 16 >= sizeof(buf))
                    return -1;
                memcpy(buf + o, p + i, n);
                o += n;
                i += n - 1;
                continue;
            }
        }
        if (c == ']' && inclass)
            inclass = false;
        buf[o++] = c;
    }
    buf[o] = 0;
    return regcomp(re, buf, flags) == 0 ? 0 : -1;
}

int keel_expr_regcomp(void *re, const char *pattern, size_t len)
{
    return expr_regcomp(re, pattern, len);
}
