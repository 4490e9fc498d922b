/* Access-log renderer: runs a compiled op list over one keel_access_record.
 *
 * Escaping. Envoy writes request bytes into text logs raw, so a path or header with a
 * newline forges log lines, and a '"' in a quoted field (the User-Agent of Istio's default
 * format) forges fields. keel escapes, in text logs, every control byte (0x00-0x1f, 0x7f),
 * '"', '\\' and every byte of an invalid UTF-8 sequence as \xHH; valid UTF-8 and the rest
 * of ASCII are kept, so lines stay byte-identical to Envoy's for normal traffic. A raw
 * newline, CR or quote can thus never come from a value, and the escaping is reversible
 * (a client's literal "\x0a" is logged as "\x5cx0a"). In JSON logs values are JSON
 * strings escaped by core/json.c (the one JSON escaper: controls escaped, invalid UTF-8 as
 * U+FFFD), so the line is always valid JSON and valid UTF-8.
 *
 * Hot path: no allocation (values are slices of the record or of a stack scratch buffer;
 * %CEL% values that are not strings are printed into a pooled buffer, taken from and
 * given back to the thread's free list), the only growth is keel_buf_reserve on the
 * caller's buffer; the START_TIME second is
 * formatted once per second per thread. */
#include "telemetry/accesslog.h"

#include "core/json.h"
#include "telemetry/accesslog_int.h"

#include "attr/attr.h"
#include "core/rand.h"
#include "expr/expr.h"
#include "telemetry/response_flags.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum val_kind { V_UNSET, V_STR, V_INT };

struct val {
    int kind;
    struct keel_str s;
    uint64_t u;
};

/* ---- character classes ---- */

/* text logs: 1 = escape as \xHH, 2 = lead byte of a UTF-8 sequence to validate */
#define T1 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
#define T2 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2
static const unsigned char text_esc[256] = {
    T1, T1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x22 '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x5c '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, /* 0x7f */
    T2, T2, T2, T2, T2, T2, T2, T2,
};
#undef T1
#undef T2

static const char hexd[] = "0123456789abcdef";

/* Word-at-a-time scanning: values are mostly clean ASCII, so skip 8 bytes per step while
 * none of them needs attention (the byte tables then decide exactly). */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

/* No byte of x needs text escaping (control, '"', '\\', >= 0x7f). */
static inline bool word_clean(uint64_t x)
{
    /* on the low 7 bits of each byte no sum carries into the next byte: a high bit
     * says lo >= 0x20, lo == 0x7f, lo != '"', lo != '\\' respectively */
    uint64_t lo = x & (ONES * 0x7f);
    uint64_t ok = (lo + ONES * (0x80 - 0x20)) & ((lo ^ (ONES * '"')) + ONES * 0x7f) &
                  ((lo ^ (ONES * '\\')) + ONES * 0x7f);
    return ((x | (lo + ONES) | ~ok) & HIGHS) == 0;
}

/* first index >= i where a byte may need text escaping */
static inline size_t skip_text_clean(const char *p, size_t i, size_t n)
{
    while (i + 8 <= n && word_clean(load64(p + i)))
        i += 8;
    return i;
}

/* ---- small writers (callers reserve first) ---- */

static size_t put_u64(char *d, uint64_t v)
{
    if (v < 10) { /* byte counts and durations of small exchanges */
        d[0] = (char)('0' + v);
        return 1;
    }
    if (v < 1000 && v >= 100) { /* status codes */
        unsigned u = (unsigned)v;
        d[0] = (char)('0' + u / 100);
        d[1] = (char)('0' + u / 10 % 10);
        d[2] = (char)('0' + u % 10);
        return 3;
    }
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        d[i] = tmp[n - 1 - i];
    return n;
}

/* Text-log value; worst case 4 bytes out per byte in. */
static size_t put_text_slow(char *d, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    char *o = d;
    size_t i = 0;
    while (i < n) {
        size_t run = skip_text_clean(s, i, n);
        /* a tail under eight bytes: one overlapping word when the value is long enough */
        if (run < n && n >= 8 && run + 8 > n && skip_text_clean(s, n - 8, n) == n)
            run = n;
        while (run < n && !text_esc[p[run]])
            run++;
        keel_copy(o, p + i, run - i);
        o += run - i;
        if (run == n)
            break;
        i = run;
        size_t bad = 1;
        if (text_esc[p[i]] == 2) {
            size_t l = keel_utf8_seq(p + i, n - i, &bad);
            if (l == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)
                bad = 2; /* a C1 control (U+0080-U+009F, CSI among them) */
            else if (l > 0) {
                memcpy(o, p + i, l);
                o += l;
                i += l;
                continue;
            }
        }
        for (size_t k = 0; k < bad; k++, i++) {
            o[0] = '\\';
            o[1] = 'x';
            o[2] = hexd[p[i] >> 4];
            o[3] = hexd[p[i] & 15];
            o += 4;
        }
    }
    return (size_t)(o - d);
}

/* put_text for the usual value, clean throughout: copied while checked, a word a step
 * (the tail as one overlapping word, or two overlapping halves under eight bytes); the
 * first word that is not clean hands the whole value to put_text_slow. */
static inline size_t put_text(char *d, const char *s, size_t n)
{
    uint64_t x;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            x = load64(s + i);
            if (!word_clean(x))
                return put_text_slow(d, s, n);
            memcpy(d + i, &x, 8);
        }
        x = load64(s + n - 8);
        if (!word_clean(x))
            return put_text_slow(d, s, n);
        memcpy(d + n - 8, &x, 8);
        return n;
    }
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        if (!word_clean((uint64_t)a << 32 | b))
            return put_text_slow(d, s, n);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        if (text_esc[(unsigned char)s[i]])
            return put_text_slow(d, s, n);
        d[i] = s[i];
    }
    return n;
}

/* ---- START_TIME ---- */

static void split_time(int64_t us, int64_t *sec, int64_t *frac_us)
{
    int64_t s = us / 1000000, f = us % 1000000;
    if (f < 0) {
        f += 1000000;
        s--;
    }
    *sec = s;
    *frac_us = f;
}

/* The second "YYYY-MM-DDTHH:MM:SS." is cached per thread: log lines of one second share it. */
static _Thread_local int64_t tl_sec = INT64_MIN;
static _Thread_local char tl_date[40];
static _Thread_local size_t tl_date_len;

static size_t fmt_start_time(int64_t us, char *d)
{
    int64_t sec, frac;
    split_time(us, &sec, &frac);
    if (sec != tl_sec) {
        struct tm tm;
        time_t t = (time_t)sec;
        if (gmtime_r(&t, &tm) == NULL)
            memset(&tm, 0, sizeof(tm));
        int n = snprintf(tl_date, sizeof(tl_date), "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        tl_date_len = (n > 0 && (size_t)n < sizeof(tl_date)) ? (size_t)n : 0;
        tl_sec = sec;
    }
    keel_copy(d, tl_date, tl_date_len); /* 24 bytes: inline */
    unsigned ms = (unsigned)(frac / 1000);
    char *o = d + tl_date_len;
    o[0] = (char)('0' + ms / 100);
    o[1] = (char)('0' + ms / 10 % 10);
    o[2] = (char)('0' + ms % 10);
    o[3] = 'Z';
    return tl_date_len + 4;
}

static size_t fmt_start_time_custom(const struct keel_accesslog_format *f, const struct al_op *o, int64_t us,
                                    char *d, size_t cap)
{
    int64_t sec, frac;
    struct tm tm;
    time_t t;
    size_t n = 0;

    split_time(us, &sec, &frac);
    t = (time_t)sec;
    if (gmtime_r(&t, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    for (uint32_t k = 0; k < o->len; k++) {
        const struct al_tseg *ts = &f->tsegs[o->off + k];
        switch (ts->kind) {
        case AL_TS_STRFTIME:
            n += strftime(d + n, cap - n, f->arena + ts->off, &tm);
            break;
        case AL_TS_FRAC: {
            /* nanoseconds, 9 digits, the first `digits` of them */
            uint64_t ns = (uint64_t)frac * 1000;
            char nine[9];
            for (int i = 8; i >= 0; i--) {
                nine[i] = (char)('0' + ns % 10);
                ns /= 10;
            }
            if (cap - n > ts->digits) {
                memcpy(d + n, nine, ts->digits);
                n += ts->digits;
            }
            break;
        }
        case AL_TS_EPOCH:
            if (cap - n > 21) {
                if (sec < 0) {
                    d[n++] = '-';
                    n += put_u64(d + n, (uint64_t)(-sec));
                } else {
                    n += put_u64(d + n, (uint64_t)sec);
                }
            }
            break;
        }
    }
    return n;
}

/* ---- values ---- */

/* The first header of that name (lower case, compiled so). A name with an id of its own
 * (http.h) is where the parser's table says, or found by a byte compare per header. */
static struct keel_str find_header(const struct keel_http_header *h, size_t n, const uint8_t *first,
                                   const char *name, size_t len, enum keel_hdr id)
{
    if (id > KEEL_HDR_OTHER && id < KEEL_HDR_X_B3_OTHER) {
        if (first != NULL && n < 255) {
            size_t at = first[id];
            return at > 0 && at <= n ? h[at - 1].value : (struct keel_str){ NULL, 0 };
        }
        for (size_t i = 0; i < n; i++)
            if (keel_http_hdr_id(&h[i]) == id)
                return h[i].value;
    } else {
        for (size_t i = 0; i < n; i++)
            if (h[i].name.len == len && keel_ascii_eq_lower(h[i].name.p, name, len))
                return h[i].value;
    }
    return (struct keel_str){ NULL, 0 };
}

static struct keel_str pseudo_value(const struct keel_access_record *r, int ps, char *scratch)
{
    switch (ps) {
    case AL_PS_METHOD: return r->method;
    case AL_PS_PATH: return r->path;
    case AL_PS_AUTHORITY: return r->authority;
    case AL_PS_SCHEME: return r->scheme;
    case AL_PS_STATUS:
        if (r->status > 0)
            return (struct keel_str){ scratch, put_u64(scratch, (uint64_t)r->status) };
        return (struct keel_str){ NULL, 0 };
    }
    return (struct keel_str){ NULL, 0 };
}

static inline const struct keel_str *rec_str(const struct keel_access_record *r, uint16_t field)
{
    return (const struct keel_str *)((const char *)r + field);
}

/* %CEL(...)%: the expression's value as Envoy's CEL formatter prints it: strings and bytes
 * as they are, numbers and bools as text, durations and timestamps in their text forms,
 * lists and maps as JSON (Envoy writes a placeholder there). An evaluation error (a
 * missing attribute or header) and null are unset. Text that is not a slice of the bag or
 * of the expression goes to tmp, pooled storage of the render call. */
static void cel_value(const struct keel_accesslog_format *f, const struct al_op *o,
                      const struct keel_access_record *r, struct val *v, struct keel_buf *tmp)
{
    struct keel_value x;
    if (r->bag == NULL || keel_expr_eval(f->exprs[o->off], r->bag, &x, NULL) < 0)
        return;
    switch (x.type) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        v->s = x.u.s;
        return;
    case KEEL_VALUE_NONE:
    case KEEL_VALUE_NULL_TYPE:
    case KEEL_VALUE_ERROR:
        return;
    default:
        break;
    }
    tmp->rpos = tmp->wpos = 0;
    if (x.type == KEEL_VALUE_LIST || x.type == KEEL_VALUE_MAP || x.type == KEEL_VALUE_STRING_MAP ||
        x.type == KEEL_VALUE_TYPE)
        keel_value_format_json(&x, tmp);
    else
        keel_value_format(&x, tmp);
    v->s = (struct keel_str){ keel_buf_rptr(tmp), keel_buf_len(tmp) };
    if (x.type == KEEL_VALUE_TYPE && v->s.len >= 2) { /* a type is its name, not a JSON string */
        v->s.p++;
        v->s.len -= 2;
    }
}

static void get_value(const struct keel_accesslog_format *f, const struct al_op *o,
                      const struct keel_access_record *r, struct val *v, char *scratch, struct keel_buf *tmp)
{
    v->kind = V_UNSET;
    v->s.p = NULL;
    v->s.len = 0;
    if (r->is_tcp && (o->flags & (AL_F_HTTP_ONLY | AL_F_TCP_ZERO))) {
        if (o->flags & AL_F_TCP_ZERO) {
            v->kind = V_INT;
            v->u = 0;
        }
        return;
    }
    switch (o->id) {
    case AL_LIT:   /* folded into pre_off/pre_len at compile */
    case AL_UNSET: /* (but for TCP_ZERO ones, which are not) */
        return;
    case AL_CONST:
        v->s = (struct keel_str){ f->arena + o->off, o->len };
        break;
    case AL_START_TIME:
        v->s = (struct keel_str){ scratch, fmt_start_time(r->start_us, scratch) };
        break;
    case AL_START_TIME_FMT:
        v->s = (struct keel_str){ scratch, fmt_start_time_custom(f, o, r->start_us, scratch, AL_SCRATCH) };
        break;
    case AL_REQ:
    case AL_RESP:
        for (int k = 0; k < o->n_names && v->s.len == 0; k++) {
            if (o->pseudo[k] != AL_PS_NONE)
                v->s = pseudo_value(r, o->pseudo[k], scratch);
            else if (o->id == AL_REQ)
                v->s = find_header(r->req_headers, r->n_req_headers, r->req_first,
                                   f->arena + o->noff[k], o->nlen[k], o->hid[k]);
            else
                v->s = find_header(r->resp_headers, r->n_resp_headers, r->resp_first,
                                   f->arena + o->noff[k], o->nlen[k], o->hid[k]);
        }
        if (v->s.len == 0 && (o->flags & AL_F_REQID))
            v->s = r->request_id;
        if (v->s.len > 0 && (o->flags & AL_F_NOQUERY)) {
            const char *q = memchr(v->s.p, '?', v->s.len);
            if (q != NULL)
                v->s.len = (size_t)(q - v->s.p);
        }
        break;
    case AL_QUERY_PARAM: {
        const char *q = r->path.len ? memchr(r->path.p, '?', r->path.len) : NULL;
        const char *end = r->path.p + r->path.len, *name = f->arena + o->noff[0];
        for (const char *p = q ? q + 1 : end; p < end;) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *stop = amp ? amp : end;
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            const char *kend = eq ? eq : stop;
            if ((size_t)(kend - p) == o->nlen[0] && memcmp(p, name, o->nlen[0]) == 0) {
                if (eq != NULL)
                    v->s = (struct keel_str){ eq + 1, (size_t)(stop - eq - 1) };
                break;
            }
            p = stop + 1;
        }
        break;
    }
    case AL_CEL:
        cel_value(f, o, r, v, tmp);
        break;
    case AL_UNIQUE_ID:
        keel_uuid4(scratch);
        v->s = (struct keel_str){ scratch, 36 };
        break;
    case AL_STRFIELD:
        v->s = *rec_str(r, o->field);
        break;
    case AL_ADDR: {
        struct keel_str a = *rec_str(r, o->field);
        if (a.len == 0 || o->part == AL_PART_FULL) {
            v->s = a;
            break;
        }
        const char *colon = NULL;
        for (size_t i = a.len; i > 0; i--)
            if (a.p[i - 1] == ':') {
                colon = a.p + i - 1;
                break;
            }
        const char *rb = memchr(a.p, ']', a.len);
        if (colon == NULL || (a.p[0] == '[' && (rb == NULL || colon < rb))) {
            /* no port */
            if (o->part == AL_PART_NOPORT)
                v->s = a;
            break;
        }
        if (o->part == AL_PART_NOPORT) {
            const char *b = a.p, *e = colon;
            if (b[0] == '[' && e > b && e[-1] == ']') {
                b++;
                e--;
            }
            v->s = (struct keel_str){ b, (size_t)(e - b) };
        } else {
            uint64_t port = 0;
            const char *p = colon + 1, *end = a.p + a.len;
            if (p == end)
                return;
            for (; p < end; p++) {
                if (*p < '0' || *p > '9')
                    return;
                port = port * 10 + (uint64_t)(*p - '0');
                if (port > 65535)
                    return;
            }
            v->kind = V_INT;
            v->u = port;
            return;
        }
        break;
    }
    case AL_UPSTREAM_PROTOCOL:
        /* keel speaks HTTP/1.1 to every upstream it reaches */
        if (r->upstream_host.len > 0)
            v->s = KEEL_STR("HTTP/1.1");
        break;
    case AL_RESPONSE_CODE:
        v->kind = V_INT;
        v->u = r->status > 0 ? (uint64_t)r->status : 0;
        return;
    case AL_FLAGS:
        v->s = (struct keel_str){ scratch, keel_rf_format(r->flags, o->part, scratch, AL_SCRATCH) };
        break;
    case AL_U64FIELD:
        v->kind = V_INT;
        memcpy(&v->u, (const char *)r + o->field, sizeof(v->u));
        return;
    case AL_ATTEMPTS:
        v->kind = V_INT;
        v->u = r->upstream_attempts;
        return;
    case AL_DURATION: {
        int64_t us;
        memcpy(&us, (const char *)r + o->field, sizeof(us));
        if (us >= 0) {
            v->kind = V_INT;
            v->u = (uint64_t)us / 1000;
        }
        return;
    }
    case AL_ZERO:
        v->kind = V_INT;
        v->u = 0;
        return;
    }
    if (v->s.len > 0)
        v->kind = V_STR;
}

/* ---- rendering ---- */

/* The write position as a local pointer pair: stores through char * could alias the
 * buffer's own fields, so going through out->wpos would reload them after every byte
 * written. Synced back to the buffer only to grow it and at the end. */
struct cursor {
    struct keel_buf *b;
    char *w, *lim;
};

static inline char *room(struct cursor *c, size_t n)
{
    if (__builtin_expect((size_t)(c->lim - c->w) < n, 0)) {
        c->b->wpos = (size_t)(c->w - c->b->data);
        keel_buf_reserve(c->b, n);
        c->w = c->b->data + c->b->wpos;
        c->lim = c->b->data + c->b->cap;
    }
    return c->w;
}

static inline void put(struct cursor *c, const char *p, size_t n)
{
    keel_copy(room(c, n), p, n);
    c->w += n;
}

void keel_accesslog_render(const struct keel_accesslog_format *f, const struct keel_access_record *r,
                           struct keel_buf *out)
{
    char scratch[AL_SCRATCH];
    char num[24];
    struct keel_buf tmp = { 0 }; /* CEL values printed as text; pooled once used */
    const struct al_op *o = f->ops, *end = f->ops + f->n_ops;

    /* also attaches storage, so out->data is never NULL below */
    keel_buf_reserve(out, f->reserve_hint);
    struct cursor c = { out, out->data + out->wpos, out->data + out->cap };
    for (; o < end; o++) {
        put(&c, f->arena + o->pre_off, o->pre_len);
        struct val v = { .kind = V_UNSET }; /* get_value sets what its kind uses */
        get_value(f, o, r, &v, scratch, &tmp);
        if (__builtin_expect(o->flags & AL_F_TRUNC, 0)) {
            if (v.kind == V_INT) {
                /* a truncated number is no longer that number: JSON gets a string */
                v.s = (struct keel_str){ num, put_u64(num, v.u) };
                v.kind = V_STR;
            }
            if (v.kind != V_UNSET && v.s.len > o->trunc)
                v.s.len = o->trunc;
        }
        if (v.kind == V_STR && v.s.len == 0)
            v.kind = V_UNSET;

        switch (o->mode) {
        case AL_MODE_TEXT:
            if (v.kind == V_UNSET) {
                put(&c, "-", 1);
            } else if (v.kind == V_INT) { /* digits, written in place */
                c.w += put_u64(room(&c, 20), v.u);
            } else if (o->flags & AL_F_CLEAN) { /* nothing to escape */
                put(&c, v.s.p, v.s.len);
            } else {
                char *d = room(&c, v.s.len * 4);
                c.w += put_text(d, v.s.p, v.s.len);
            }
            break;
        case AL_MODE_JSON_TYPED:
            if (v.kind == V_UNSET) {
                put(&c, "null", 4);
            } else if (v.kind == V_INT) {
                c.w += put_u64(room(&c, 20), v.u);
            } else {
                char *d = room(&c, v.s.len * KEEL_JSON_ESC_MAX + 2);
                *d++ = '"';
                d += keel_json_escape(d, v.s.p, v.s.len);
                *d++ = '"';
                c.w = d;
            }
            break;
        default: /* AL_MODE_JSON_INSTR */
            if (v.kind == V_UNSET) {
                put(&c, "-", 1);
            } else if (v.kind == V_INT) {
                c.w += put_u64(room(&c, 20), v.u);
            } else {
                char *d = room(&c, v.s.len * KEEL_JSON_ESC_MAX);
                c.w += keel_json_escape(d, v.s.p, v.s.len);
            }
            break;
        }
    }
    put(&c, f->arena + f->tail_off, f->tail_len);
    out->wpos = (size_t)(c.w - out->data);
    keel_buf_release(&tmp);
}
