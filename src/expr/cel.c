/* CEL's run-time value semantics for the VM: the per-thread arena behind lists and maps
 * built during an evaluation, heterogeneous equality and ordering (1 == 1u == 1.0),
 * map lookup, type(), timestamp/duration arithmetic, accessors and CEL's text forms. */
#include "expr/expr_int.h"

#include "core/alloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---------------------------------------------------------------------------
 * Chunks of 4 KiB << i, allocated on first use by a thread and kept: after warm-up an
 * evaluation that builds lists allocates nothing, and one that builds none never touches
 * the arena. Reset at the start of every evaluation (the results live until the next). */
static _Thread_local struct {
    char *chunk[KEEL_EXPR_ARENA_CHUNKS];
    int cur;
    size_t used;
} arena;

void expr_arena_reset(void)
{
    arena.cur = 0;
    arena.used = 0;
}

void *expr_arena_alloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    while (arena.cur < KEEL_EXPR_ARENA_CHUNKS) {
        size_t cap = (size_t)4096 << arena.cur;
        if (!arena.chunk[arena.cur])
            arena.chunk[arena.cur] = keel_alloc(cap);
        if (n <= cap - arena.used) {
            void *p = arena.chunk[arena.cur] + arena.used;
            arena.used += n;
            return p;
        }
        arena.cur++;
        arena.used = 0;
    }
    return NULL;
}

void keel_expr_thread_fini(void)
{
    for (int i = 0; i < KEEL_EXPR_ARENA_CHUNKS; i++) {
        free(arena.chunk[i]);
        arena.chunk[i] = NULL;
    }
    expr_arena_reset();
}

/* ---- equality and ordering ----------------------------------------------------------- */

static bool is_num(enum keel_value_type t)
{
    return t == KEEL_VALUE_INT64 || t == KEEL_VALUE_UINT64 || t == KEEL_VALUE_DOUBLE;
}

/* Exact comparison of two numbers of any CEL numeric type: -1, 0, 1, or 2 (NaN). */
static int num_cmp(const struct keel_value *a, const struct keel_value *b)
{
    if (a->type == KEEL_VALUE_DOUBLE || b->type == KEEL_VALUE_DOUBLE) {
        /* as cel-spec: the integer is converted to double (lossy above 2^53) */
        double x = a->type == KEEL_VALUE_DOUBLE ? a->u.d : a->type == KEEL_VALUE_INT64 ? (double)a->u.i : (double)a->u.u;
        double y = b->type == KEEL_VALUE_DOUBLE ? b->u.d : b->type == KEEL_VALUE_INT64 ? (double)b->u.i : (double)b->u.u;
        if (isnan(x) || isnan(y))
            return 2;
        return (x > y) - (x < y);
    }
    if (a->type == b->type) {
        if (a->type == KEEL_VALUE_INT64)
            return (a->u.i > b->u.i) - (a->u.i < b->u.i);
        return (a->u.u > b->u.u) - (a->u.u < b->u.u);
    }
    if (a->type == KEEL_VALUE_INT64) /* int vs uint */
        return a->u.i < 0 ? -1 : ((uint64_t)a->u.i > b->u.u) - ((uint64_t)a->u.i < b->u.u);
    return b->u.i < 0 ? 1 : (a->u.u > (uint64_t)b->u.i) - (a->u.u < (uint64_t)b->u.i);
}

const struct keel_value *expr_map_find(const struct keel_value *m, const struct keel_value *k)
{
    for (size_t i = 0; i < m->u.list.n; i++)
        if (expr_equal(&m->u.list.v[2 * i], k))
            return &m->u.list.v[2 * i + 1];
    return NULL;
}

bool expr_equal(const struct keel_value *a, const struct keel_value *b)
{
    if (a->type != b->type) {
        if (is_num(a->type) && is_num(b->type))
            return num_cmp(a, b) == 0;
        return false;
    }
    switch (a->type) {
    case KEEL_VALUE_DOUBLE:
        return a->u.d == b->u.d;
    case KEEL_VALUE_NULL_TYPE:
        return true;
    case KEEL_VALUE_TYPE:
        return a->u.i == b->u.i;
    case KEEL_VALUE_LIST:
        if (a->u.list.n != b->u.list.n)
            return false;
        for (size_t i = 0; i < a->u.list.n; i++)
            if (!expr_equal(&a->u.list.v[i], &b->u.list.v[i]))
                return false;
        return true;
    case KEEL_VALUE_MAP:
        if (a->u.list.n != b->u.list.n)
            return false;
        for (size_t i = 0; i < a->u.list.n; i++) {
            const struct keel_value *v = expr_map_find(b, &a->u.list.v[2 * i]);
            if (!v || !expr_equal(v, &a->u.list.v[2 * i + 1]))
                return false;
        }
        return true;
    default:
        return keel_value_equal(a, b);
    }
}

int expr_compare(const struct keel_value *a, const struct keel_value *b)
{
    if (is_num(a->type) && is_num(b->type))
        return num_cmp(a, b);
    if (a->type != b->type)
        return 3;
    switch (a->type) {
    case KEEL_VALUE_BOOL:
        return (int)a->u.b - (int)b->u.b;
    case KEEL_VALUE_DURATION:
        return (a->u.i > b->u.i) - (a->u.i < b->u.i);
    case KEEL_VALUE_TIMESTAMP:
        if (a->u.t.sec != b->u.t.sec)
            return (a->u.t.sec > b->u.t.sec) - (a->u.t.sec < b->u.t.sec);
        return (a->u.t.nsec > b->u.t.nsec) - (a->u.t.nsec < b->u.t.nsec);
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI: {
        size_t n = a->u.s.len < b->u.s.len ? a->u.s.len : b->u.s.len;
        int c = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
        if (c)
            return c < 0 ? -1 : 1;
        return (a->u.s.len > b->u.s.len) - (a->u.s.len < b->u.s.len);
    }
    default:
        return 3;
    }
}

enum keel_value_type expr_type_of(const struct keel_value *v)
{
    switch (v->type) {
    case KEEL_VALUE_STRING_MAP:
        return KEEL_VALUE_MAP;
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        return KEEL_VALUE_STRING;
    default:
        return v->type;
    }
}

/* ---- time ----------------------------------------------------------------------------- */

#define TS_MIN (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define TS_MAX 253402300799LL   /* 9999-12-31T23:59:59Z */

int expr_ts_check(struct keel_time t) { return t.sec < TS_MIN || t.sec > TS_MAX ? -1 : 0; }

int expr_ts_add(struct keel_time t, int64_t ns, bool sub, struct keel_time *out)
{
    int64_t s = ns / 1000000000, n = ns % 1000000000;
    if (sub)
        s = -s, n = -n;
    int64_t sec = t.sec + s, nsec = t.nsec + n;
    if (nsec >= 1000000000)
        sec++, nsec -= 1000000000;
    else if (nsec < 0)
        sec--, nsec += 1000000000;
    out->sec = sec;
    out->nsec = (int32_t)nsec;
    return expr_ts_check(*out);
}

int expr_ts_diff(struct keel_time a, struct keel_time b, int64_t *ns)
{
    int64_t ds = a.sec - b.sec, dn = (int64_t)a.nsec - b.nsec, r;
    if (__builtin_mul_overflow(ds, (int64_t)1000000000, &r) || __builtin_add_overflow(r, dn, &r))
        return -1;
    *ns = r;
    return 0;
}

static void civil(int64_t days, int64_t *y, int *m, int *d)
{
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* "UTC", "+05:30", "-09:30", "02:00": the offset in seconds, or -1 for what keel cannot
 * resolve (IANA zone names: keel carries no time-zone database). */
static int tz_offset(struct keel_str tz, int64_t *off)
{
    const char *p = tz.p;
    size_t n = tz.len;
    if ((n == 3 && !memcmp(p, "UTC", 3)) || (n == 1 && p[0] == 'Z')) {
        *off = 0;
        return 0;
    }
    int sign = 1;
    if (n && (p[0] == '+' || p[0] == '-')) {
        sign = p[0] == '-' ? -1 : 1;
        p++, n--;
    }
    if (n != 5 || p[2] != ':')
        return -1;
    for (int i = 0; i < 5; i++)
        if (i != 2 && (p[i] < '0' || p[i] > '9'))
            return -1;
    int h = (p[0] - '0') * 10 + (p[1] - '0'), m = (p[3] - '0') * 10 + (p[4] - '0');
    if (h > 23 || m > 59)
        return -1;
    *off = sign * (h * 3600 + m * 60);
    return 0;
}

int expr_time_field(int field, struct keel_time t, const struct keel_str *tz, int64_t *out)
{
    int64_t off = 0;
    if (tz && tz_offset(*tz, &off) < 0)
        return -1;
    int64_t s = t.sec + off;
    int64_t days = (s >= 0 ? s : s - 86399) / 86400, rem = s - days * 86400;
    int64_t y;
    int m, d;
    civil(days, &y, &m, &d);
    switch (field) {
    case EXPR_TF_YEAR: *out = y; break;
    case EXPR_TF_MONTH: *out = m - 1; break;
    case EXPR_TF_DAY_OF_YEAR: {
        static const int cum[] = { 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334 };
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        *out = cum[m - 1] + d - 1 + (leap && m > 2);
        break;
    }
    case EXPR_TF_DAY_OF_MONTH: *out = d - 1; break;
    case EXPR_TF_DATE: *out = d; break;
    case EXPR_TF_DAY_OF_WEEK: *out = ((days % 7) + 11) % 7; break; /* 1970-01-01 was a Thursday (4) */
    case EXPR_TF_HOURS: *out = rem / 3600; break;
    case EXPR_TF_MINUTES: *out = rem / 60 % 60; break;
    case EXPR_TF_SECONDS: *out = rem % 60; break;
    default: *out = t.nsec / 1000000; break;
    }
    return 0;
}

static size_t frac9(char *dst, int64_t nsec)
{
    if (!nsec)
        return 0;
    char tmp[16];
    int n = snprintf(tmp, sizeof(tmp), ".%09lld", (long long)nsec);
    while (n > 1 && tmp[n - 1] == '0')
        n--;
    memcpy(dst, tmp, (size_t)n);
    return (size_t)n;
}

size_t expr_fmt_cel_duration(int64_t ns, char *dst, size_t cap)
{
    char tmp[48];
    uint64_t u = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    size_t n = (size_t)snprintf(tmp, sizeof(tmp), "%s%llu", ns < 0 ? "-" : "", (unsigned long long)(u / 1000000000));
    n += frac9(tmp + n, (int64_t)(u % 1000000000));
    tmp[n++] = 's';
    if (n <= cap)
        memcpy(dst, tmp, n);
    return n;
}

size_t expr_fmt_cel_timestamp(struct keel_time t, char *dst, size_t cap)
{
    int64_t days = (t.sec >= 0 ? t.sec : t.sec - 86399) / 86400, rem = t.sec - days * 86400;
    int64_t y;
    int m, d;
    civil(days, &y, &m, &d);
    char tmp[64];
    size_t n = (size_t)snprintf(tmp, sizeof(tmp), "%04lld-%02d-%02dT%02d:%02d:%02d", (long long)y, m, d,
                                (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60));
    n += frac9(tmp + n, t.nsec);
    tmp[n++] = 'Z';
    if (n <= cap)
        memcpy(dst, tmp, n);
    return n;
}

/* ---- repr ------------------------------------------------------------------------------ */

static const char *type_ident_name(enum keel_value_type t)
{
    switch (t) {
    case KEEL_VALUE_INT64: return "int";
    case KEEL_VALUE_UINT64: return "uint";
    case KEEL_VALUE_DOUBLE: return "double";
    case KEEL_VALUE_BOOL: return "bool";
    case KEEL_VALUE_STRING: return "string";
    case KEEL_VALUE_BYTES: return "bytes";
    case KEEL_VALUE_LIST: return "list";
    case KEEL_VALUE_MAP: return "map";
    case KEEL_VALUE_NULL_TYPE: return "null_type";
    case KEEL_VALUE_TYPE: return "type";
    case KEEL_VALUE_TIMESTAMP: return "google.protobuf.Timestamp";
    case KEEL_VALUE_DURATION: return "google.protobuf.Duration";
    default: return keel_value_type_name(t);
    }
}

const char *expr_type_name(enum keel_value_type t) { return type_ident_name(t); }

static void repr_bytes(const char *prefix, struct keel_str s, struct keel_buf *out)
{
    keel_buf_append_str(out, prefix);
    keel_buf_append(out, "\"", 1);
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\')
            keel_buf_printf(out, "\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            keel_buf_append(out, &s.p[i], 1);
        else
            keel_buf_printf(out, "\\x%02x", c);
    }
    keel_buf_append(out, "\"", 1);
}

static int cmp_buf(const void *a, const void *b)
{
    return strcmp(keel_buf_rptr(a), keel_buf_rptr(b));
}

void expr_value_repr(const struct keel_value *v, struct keel_buf *out)
{
    char tmp[64];
    switch (v->type) {
    case KEEL_VALUE_INT64:
        keel_buf_printf(out, "%lld", (long long)v->u.i);
        return;
    case KEEL_VALUE_UINT64:
        keel_buf_printf(out, "%lluu", (unsigned long long)v->u.u);
        return;
    case KEEL_VALUE_DOUBLE:
        if (isnan(v->u.d))
            keel_buf_append_str(out, "double(NaN)");
        else
            keel_buf_printf(out, "double(%.17g)", v->u.d);
        return;
    case KEEL_VALUE_BOOL:
        keel_buf_append_str(out, v->u.b ? "true" : "false");
        return;
    case KEEL_VALUE_STRING:
        repr_bytes("", v->u.s, out);
        return;
    case KEEL_VALUE_BYTES:
        repr_bytes("b", v->u.s, out);
        return;
    case KEEL_VALUE_NULL_TYPE:
        keel_buf_append_str(out, "null");
        return;
    case KEEL_VALUE_TYPE:
        keel_buf_printf(out, "type(%s)", type_ident_name((enum keel_value_type)v->u.i));
        return;
    case KEEL_VALUE_DURATION:
        keel_buf_printf(out, "duration(%.*s)", (int)expr_fmt_cel_duration(v->u.i, tmp, sizeof(tmp)), tmp);
        return;
    case KEEL_VALUE_TIMESTAMP:
        keel_buf_printf(out, "timestamp(%.*s)", (int)expr_fmt_cel_timestamp(v->u.t, tmp, sizeof(tmp)), tmp);
        return;
    case KEEL_VALUE_LIST:
        keel_buf_append(out, "[", 1);
        for (size_t i = 0; i < v->u.list.n; i++) {
            if (i)
                keel_buf_append(out, ", ", 2);
            expr_value_repr(&v->u.list.v[i], out);
        }
        keel_buf_append(out, "]", 1);
        return;
    case KEEL_VALUE_MAP: {
        /* entries sorted by their rendering: maps are unordered */
        size_t n = v->u.list.n;
        struct keel_buf *e = calloc(n ? n : 1, sizeof(*e));
        for (size_t i = 0; i < n; i++) {
            expr_value_repr(&v->u.list.v[2 * i], &e[i]);
            keel_buf_append(&e[i], ": ", 2);
            expr_value_repr(&v->u.list.v[2 * i + 1], &e[i]);
            keel_buf_append(&e[i], "", 1);
        }
        qsort(e, n, sizeof(*e), cmp_buf);
        keel_buf_append(out, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                keel_buf_append(out, ", ", 2);
            keel_buf_append(out, keel_buf_rptr(&e[i]), keel_buf_len(&e[i]) - 1);
            keel_buf_release(&e[i]);
        }
        free(e);
        keel_buf_append(out, "}", 1);
        return;
    }
    default:
        keel_value_format_json(v, out);
        return;
    }
}
