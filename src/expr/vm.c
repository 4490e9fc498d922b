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

static struct keel_value arith(uint8_t op, const struct keel_value *a, const struct keel_value *b, bool wrap)
{
    struct keel_value r = *a;
    switch (a->type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
        return concat(a->type, a->u.s, b->u.s);
    case KEEL_VALUE_DOUBLE:
        switch (op) {
        case OP_ADD: case OP_ADD_WRAP: r.u.d = a->u.d + b->u.d; break;
        case OP_SUB: r.u.d = a->u.d - b->u.d; break;
        case OP_MUL: r.u.d = a->u.d * b->u.d; break;
        default: r.u.d = a->u.d / b->u.d; break;
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
    default: /* INT64, DURATION */
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
static size_t f_dur(const struct keel_value *v, char *d, size_t c) { return keel_value_fmt_duration(v->u.i, d, c); }
static size_t f_ts(const struct keel_value *v, char *d, size_t c) { return keel_value_fmt_timestamp(v->u.t, d, c); }

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
    case FN_EMPTY_MAP: return keel_value_map(NULL, 0);
    case FN_IP:
        if (keel_value_parse_ip(s.p, s.len, &r) < 0)
            return err("could not convert %.*s to IP_ADDRESS", s.p, s.len);
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
    case FN_STRING_BY: return vstr(KEEL_VALUE_STRING, s.p, s.len);
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
        int64_t v;
        if (s.len && s.p[0] != '-' && s.p[0] != '+' && keel_value_parse_int(s.p, s.len, &v) == 0) {
            r.u.u = (uint64_t)v;
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
    case FN_BOOL_S:
        if (keel_value_parse(KEEL_VALUE_BOOL, s.p, s.len, &r) == 0)
            return r;
        if (s.len == 1 && (s.p[0] == 't' || s.p[0] == '1'))
            return vbool(true);
        if (s.len == 1 && (s.p[0] == 'f' || s.p[0] == '0'))
            return vbool(false);
        return err("cannot convert '%.*s' to bool", s.p, s.len);
    case FN__COUNT: break;
    }
    return serr("internal error: unknown function");
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
    int sp = 0; /* number of values on the stack */
    size_t pc = start;
    scratch_used = 0;
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
            /* a is (true for and / false for or) or an error; b decides when it is not an error */
            struct keel_value *a = &st[sp - 2];
            bool absorbing = in->op == OP_AND_CEL ? false : true;
            if (t->type == KEEL_VALUE_BOOL && t->u.b == absorbing)
                *a = *t;
            else if (a->type != KEEL_VALUE_ERROR)
                *a = *t;
            sp--;
            break;
        }
        case OP_BRANCH:
            if (t->type == KEEL_VALUE_ERROR) {
                pc = (size_t)in->b;
                break;
            }
            sp--;
            if (!t->u.b)
                pc = (size_t)in->a;
            break;
        case OP_EQ:
            st[sp - 2] = vbool(keel_value_equal(&st[sp - 2], t));
            sp--;
            break;
        case OP_NE:
            st[sp - 2] = vbool(!keel_value_equal(&st[sp - 2], t));
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
            bool r;
            if (a->type == KEEL_VALUE_DOUBLE && (isnan(a->u.d) || isnan(t->u.d))) {
                r = false;
            } else {
                int c = cmp(a, t);
                r = in->op == OP_LT ? c < 0 : in->op == OP_LE ? c <= 0 : in->op == OP_GT ? c > 0 : c >= 0;
            }
            *a = vbool(r);
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
            else if (t->u.i == INT64_MIN)
                *t = serr("integer overflow");
            else
                t->u.i = -t->u.i;
            break;
        case OP_NOT:
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
