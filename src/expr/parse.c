/* Lexer and recursive-descent parser for both dialects. CEXL follows Go's expression
 * syntax and precedence (spec A.3/A.4); CEL follows the CEL grammar (spec B.3). Errors
 * carry the 1-based column of the offending token. */
#include "expr/expr_int.h"

#include "core/alloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

void *pool_alloc(struct pool *p, size_t n)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 32;
        p->v = keel_realloc(p->v, p->cap * sizeof(*p->v));
    }
    void *m = keel_calloc(1, n);
    p->v[p->n++] = m;
    return m;
}

char *pool_strndup(struct pool *p, const char *s, size_t n)
{
    char *m = pool_alloc(p, n + 1);
    if (n)
        memcpy(m, s, n);
    return m;
}

void pool_free(struct pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i]);
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

struct parser {
    const char *src, *p, *end;
    enum keel_expr_dialect d;
    struct pool *pool;
    struct keel_expr_error *err;
    struct token tok;
    int depth;
    bool failed;
};

static void fail(struct parser *ps, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(struct parser *ps, int col, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = true;
    if (ps->err) {
        va_list ap;
        va_start(ap, fmt);
        ps->err->col = col;
        vsnprintf(ps->err->msg, sizeof(ps->err->msg), fmt, ap);
        va_end(ap);
    }
}

static int col_of(struct parser *ps, const char *q) { return (int)(q - ps->src) + 1; }

static bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_ident(char c) { return is_ident_start(c) || is_digit(c); }

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t utf8_put(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Scan a quoted literal starting at q (the opening quote run). */
static void lex_string(struct parser *ps, const char *q, bool raw, bool bytes)
{
    char quote = *q;
    size_t qn = 1;
    if (ps->d == KEEL_EXPR_CEL && q + 2 < ps->end && q[1] == quote && q[2] == quote)
        qn = 3;
    if (quote == '`')
        raw = true;
    const char *s = q + qn;
    char *out = pool_alloc(ps->pool, (size_t)(ps->end - s) * 4 + 1);
    size_t o = 0, chars = 0;
    for (;;) {
        if (s >= ps->end || (qn == 1 && *s == '\n' && quote != '`')) {
            fail(ps, col_of(ps, q), quote == '\'' && ps->d == KEEL_EXPR_CEXL ? "rune literal not terminated"
                                                                              : "string literal not terminated");
            return;
        }
        if (*s == quote && (qn == 1 || (s + 2 < ps->end && s[1] == quote && s[2] == quote)))
            break;
        if (*s == '\\' && !raw) {
            const char *e = s;
            s++;
            if (s >= ps->end) {
                fail(ps, col_of(ps, e), "escape sequence not terminated");
                return;
            }
            char c = *s++;
            unsigned long cp = 0;
            int n = 0;
            switch (c) {
            case 'a': out[o++] = '\a'; break;
            case 'b': out[o++] = '\b'; break;
            case 'f': out[o++] = '\f'; break;
            case 'n': out[o++] = '\n'; break;
            case 'r': out[o++] = '\r'; break;
            case 't': out[o++] = '\t'; break;
            case 'v': out[o++] = '\v'; break;
            case '\\': out[o++] = '\\'; break;
            case '\'': case '"': case '`': case '?':
                if ((c == '\'' || c == '"') && c != quote && ps->d == KEEL_EXPR_CEXL) {
                    fail(ps, col_of(ps, e), "unknown escape sequence");
                    return;
                }
                out[o++] = c;
                break;
            case 'x': case 'X': n = 2; break;
            case 'u': n = 4; break;
            case 'U': n = 8; break;
            default:
                if (c >= '0' && c <= '7') {
                    if (s + 2 > ps->end || s[0] < '0' || s[0] > '7' || s[1] < '0' || s[1] > '7') {
                        fail(ps, col_of(ps, e), "invalid octal escape");
                        return;
                    }
                    cp = (unsigned long)((c - '0') * 64 + (s[0] - '0') * 8 + (s[1] - '0'));
                    s += 2;
                    if (cp > 255) {
                        fail(ps, col_of(ps, e), "octal escape value > 255");
                        return;
                    }
                    if (ps->d == KEEL_EXPR_CEL && !bytes)
                        o += utf8_put(out + o, cp); /* CEL: a code point in a string */
                    else
                        out[o++] = (char)cp;
                    break;
                }
                fail(ps, col_of(ps, e), "unknown escape sequence");
                return;
            }
            if (n) {
                for (int i = 0; i < n; i++) {
                    int h = s < ps->end ? hexval(*s) : -1;
                    if (h < 0) {
                        fail(ps, col_of(ps, e), "invalid escape sequence");
                        return;
                    }
                    cp = cp * 16 + (unsigned long)h;
                    s++;
                }
                if (bytes || (n == 2 && ps->d == KEEL_EXPR_CEXL)) {
                    out[o++] = (char)cp;
                } else {
                    if (cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) {
                        fail(ps, col_of(ps, e), "escape sequence is invalid Unicode code point");
                        return;
                    }
                    o += utf8_put(out + o, cp);
                }
            }
            chars++;
            continue;
        }
        if ((unsigned char)*s < 0x80 || ((unsigned char)*s & 0xc0) == 0xc0)
            chars++;
        out[o++] = *s++;
    }
    ps->tok.sval = out;
    ps->tok.slen = o;
    ps->tok.t = bytes ? T_BYTES : (raw && quote == '`') ? T_RAWSTR : T_STRING;
    ps->p = s + qn;
    if (ps->d == KEEL_EXPR_CEXL && quote == '\'' && chars != 1)
        fail(ps, col_of(ps, q), "illegal rune literal");
}

static void lex_number(struct parser *ps, const char *q)
{
    const char *s = q;
    bool isfloat = false;
    if (s + 1 < ps->end && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        while (s < ps->end && is_ident(*s) && !(ps->d == KEEL_EXPR_CEL && (*s == 'u' || *s == 'U')))
            s++;
    } else {
        while (s < ps->end && (is_digit(*s) || *s == '_'))
            s++;
        if (s < ps->end && *s == '.' && !(s + 1 < ps->end && is_ident_start(s[1]))) {
            isfloat = true;
            s++;
            while (s < ps->end && is_digit(*s))
                s++;
        }
        if (s < ps->end && (*s == 'e' || *s == 'E')) {
            const char *e = s + 1;
            if (e < ps->end && (*e == '+' || *e == '-'))
                e++;
            if (e < ps->end && is_digit(*e)) {
                isfloat = true;
                s = e;
                while (s < ps->end && is_digit(*s))
                    s++;
            }
        }
    }
    ps->tok.t = isfloat ? T_FLOAT : T_INT;
    if (s < ps->end && (*s == 'u' || *s == 'U') && ps->d == KEEL_EXPR_CEL && !isfloat) {
        ps->tok.t = T_UINT;
        ps->tok.len = (size_t)(s - q);
        ps->p = s + 1;
        return;
    }
    if (s < ps->end && *s == 'i' && ps->d == KEEL_EXPR_CEXL) {
        fail(ps, col_of(ps, q), "imaginary literals are not supported");
        return;
    }
    if (s < ps->end && is_ident(*s)) {
        fail(ps, col_of(ps, s), "invalid character '%c' in number", *s);
        return;
    }
    ps->tok.len = (size_t)(s - q);
    ps->p = s;
}

static void next(struct parser *ps)
{
    const char *s = ps->p;
    while (s < ps->end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++;
    ps->tok = (struct token){ .t = T_EOF, .col = col_of(ps, s), .p = s };
    ps->p = s;
    if (ps->failed || s >= ps->end)
        return;
    char c = *s;
    if (ps->d == KEEL_EXPR_CEL && strchr("rRbB", c)) {
        const char *q = s + 1;
        bool raw = c == 'r' || c == 'R', bytes = c == 'b' || c == 'B';
        if (q < ps->end && strchr("rRbB", *q) && q + 1 < ps->end && (q[1] == '\'' || q[1] == '"')) {
            raw = raw || *q == 'r' || *q == 'R';
            bytes = bytes || *q == 'b' || *q == 'B';
            q++;
        }
        if (q < ps->end && (*q == '\'' || *q == '"')) {
            lex_string(ps, q, raw, bytes);
            ps->tok.len = (size_t)(ps->p - s);
            return;
        }
    }
    if (c == '`' && ps->d == KEEL_EXPR_CEL) {
        /* a quoted field name: m.`content-type` */
        const char *q = s + 1;
        while (q < ps->end && *q != '`' && *q != '\n')
            q++;
        if (q >= ps->end || *q != '`' || q == s + 1) {
            fail(ps, col_of(ps, s), "quoted field name not terminated");
            return;
        }
        ps->tok.t = T_IDENT;
        ps->tok.quoted = true;
        ps->tok.p = s + 1;
        ps->tok.len = (size_t)(q - s - 1);
        ps->p = q + 1;
        return;
    }
    if (is_ident_start(c)) {
        while (s < ps->end && is_ident(*s))
            s++;
        ps->tok.t = T_IDENT;
        ps->tok.len = (size_t)(s - ps->p);
        if (ps->d == KEEL_EXPR_CEL && ps->tok.len == 2 && !memcmp(ps->p, "in", 2))
            ps->tok.t = T_IN;
        ps->p = s;
        return;
    }
    if (is_digit(c) || (c == '.' && s + 1 < ps->end && is_digit(s[1]))) {
        lex_number(ps, s);
        return;
    }
    if (c == '"' || c == '\'' || (c == '`' && ps->d == KEEL_EXPR_CEXL)) {
        lex_string(ps, s, false, false);
        ps->tok.len = (size_t)(ps->p - s);
        return;
    }
    static const struct { const char *s; enum tok t; } ops[] = {
        { "&^", T_ANDNOT }, { "||", T_OROR }, { "&&", T_ANDAND }, { "==", T_EQ }, { "!=", T_NE },
        { "<=", T_LE }, { ">=", T_GE }, { "<<", T_SHL }, { ">>", T_SHR }, { "<-", T_ARROW },
        { "(", T_LPAREN }, { ")", T_RPAREN }, { "[", T_LBRACK }, { "]", T_RBRACK }, { "{", T_LBRACE },
        { "}", T_RBRACE }, { ",", T_COMMA }, { ".", T_DOT }, { "?", T_QUESTION }, { ":", T_COLON },
        { "|", T_PIPE }, { "&", T_AMP }, { "^", T_CARET }, { "<", T_LT }, { ">", T_GT }, { "+", T_PLUS },
        { "-", T_MINUS }, { "*", T_STAR }, { "/", T_SLASH }, { "%", T_PERCENT }, { "!", T_BANG },
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        size_t n = strlen(ops[i].s);
        if ((size_t)(ps->end - s) >= n && !memcmp(s, ops[i].s, n)) {
            ps->tok.t = ops[i].t;
            ps->tok.len = n;
            ps->p = s + n;
            return;
        }
    }
    if (c == '=')
        fail(ps, col_of(ps, s), "expected '==', found '='");
    else if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
        fail(ps, col_of(ps, s), "illegal character U+%04X '%c'", (unsigned)c, c);
    else
        fail(ps, col_of(ps, s), "illegal character 0x%02X", (unsigned char)c);
}

static struct node *mk(struct parser *ps, enum node_kind k, int col, int nkids)
{
    struct node *n = pool_alloc(ps->pool, sizeof(*n));
    n->kind = k;
    n->col = col;
    n->fn = -1;
    n->attr = -1;
    n->nkids = nkids;
    if (nkids)
        n->kids = pool_alloc(ps->pool, (size_t)nkids * sizeof(*n->kids));
    return n;
}

static const char *tok_text(struct parser *ps, char *buf, size_t cap)
{
    if (ps->tok.t == T_EOF)
        return "end of expression";
    snprintf(buf, cap, "'%.*s'", (int)(ps->tok.len > 40 ? 40 : ps->tok.len), ps->tok.p);
    return buf;
}

static void expect(struct parser *ps, enum tok t, const char *what)
{
    char b[64];
    if (ps->tok.t != t) {
        fail(ps, ps->tok.col, "expected %s, found %s", what, tok_text(ps, b, sizeof(b)));
        return;
    }
    next(ps);
}

static struct node *parse_expr(struct parser *ps);

static int binprec(struct parser *ps, enum tok t)
{
    if (ps->d == KEEL_EXPR_CEXL) {
        switch (t) {
        case T_OROR: return 1;
        case T_ANDAND: return 2;
        case T_EQ: case T_NE: case T_LT: case T_LE: case T_GT: case T_GE: return 3;
        case T_PLUS: case T_MINUS: case T_PIPE: case T_CARET: return 4;
        case T_STAR: case T_SLASH: case T_PERCENT: case T_SHL: case T_SHR: case T_AMP: case T_ANDNOT: return 5;
        default: return 0;
        }
    }
    switch (t) {
    case T_OROR: return 1;
    case T_ANDAND: return 2;
    case T_EQ: case T_NE: case T_LT: case T_LE: case T_GT: case T_GE: case T_IN: return 3;
    case T_PLUS: case T_MINUS: return 4;
    case T_STAR: case T_SLASH: case T_PERCENT: return 5;
    default: return 0;
    }
}

static bool go_keyword(const char *p, size_t n)
{
    static const char *const kw[] = { "break", "case", "chan", "const", "continue", "default", "defer", "else",
                                      "fallthrough", "for", "func", "go", "goto", "if", "import", "interface",
                                      "map", "package", "range", "return", "select", "struct", "switch", "type",
                                      "var" };
    for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
        if (strlen(kw[i]) == n && !memcmp(kw[i], p, n))
            return true;
    return false;
}

static int parse_args(struct parser *ps, struct node ***out, struct node *first)
{
    struct node *tmp[64];
    int n = 0;
    if (first)
        tmp[n++] = first;
    next(ps); /* ( */
    if (ps->tok.t != T_RPAREN) {
        for (;;) {
            if (n == 64) {
                fail(ps, ps->tok.col, "too many arguments");
                return 0;
            }
            tmp[n++] = parse_expr(ps);
            if (ps->failed)
                return 0;
            if (ps->tok.t != T_COMMA)
                break;
            next(ps);
        }
    }
    expect(ps, T_RPAREN, "')'");
    *out = n ? pool_alloc(ps->pool, (size_t)n * sizeof(**out)) : NULL;
    if (n)
        memcpy(*out, tmp, (size_t)n * sizeof(**out));
    return n;
}

static struct node *keyword_check(struct parser *ps)
{
    if (ps->d == KEEL_EXPR_CEXL && go_keyword(ps->tok.p, ps->tok.len)) {
        fail(ps, ps->tok.col, "expected operand, found '%.*s'", (int)ps->tok.len, ps->tok.p);
        return NULL;
    }
    return (struct node *)1;
}

static struct node *parse_operand(struct parser *ps, bool *extendable)
{
    struct token t = ps->tok;
    char b[64];
    struct node *n;
    *extendable = false;
    switch (t.t) {
    case T_INT:
    case T_UINT:
    case T_FLOAT: {
        n = mk(ps, N_CONST, t.col, 0);
        char tmp[64];
        size_t len = t.len < sizeof(tmp) - 1 ? t.len : sizeof(tmp) - 1;
        memcpy(tmp, t.p, len);
        tmp[len] = 0;
        if (t.t == T_FLOAT) {
            n->val.type = KEEL_VALUE_DOUBLE;
            if (keel_value_parse_double(tmp, len, &n->val.u.d) < 0)
                fail(ps, t.col, "invalid floating literal %s", tmp);
        } else if (ps->d == KEEL_EXPR_CEXL) {
            n->val.type = KEEL_VALUE_INT64;
            if (keel_value_parse_int(tmp, len, &n->val.u.i) < 0)
                fail(ps, t.col, "cannot parse %s as a base-10 integer", tmp);
        } else {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(tmp, &end, tmp[0] == '0' && (tmp[1] == 'x' || tmp[1] == 'X') ? 16 : 10);
            if (*end || errno || (t.t == T_INT && v > (unsigned long long)INT64_MAX + 1)) {
                fail(ps, t.col, "invalid integer literal %s", tmp);
            } else if (t.t == T_UINT) {
                n->val.type = KEEL_VALUE_UINT64;
                n->val.u.u = v;
            } else {
                n->val.type = KEEL_VALUE_INT64;
                n->val.u.i = (int64_t)v; /* 2^63 only valid under unary minus; checked there */
                if (v > (unsigned long long)INT64_MAX)
                    n->val.u.u = v, n->op = T_UINT; /* marker: needs negation */
            }
        }
        next(ps);
        return n;
    }
    case T_STRING:
    case T_RAWSTR:
    case T_BYTES:
        n = mk(ps, N_CONST, t.col, 0);
        n->val.type = t.t == T_BYTES ? KEEL_VALUE_BYTES : KEEL_VALUE_STRING;
        n->val.u.s.p = t.sval;
        n->val.u.s.len = t.slen;
        if (ps->d == KEEL_EXPR_CEXL) {
            int64_t ns;
            if (keel_value_parse_duration(t.sval, t.slen, &ns) == 0) {
                n->val.type = KEEL_VALUE_DURATION;
                n->val.u.i = ns;
            }
        }
        next(ps);
        return n;
    case T_LPAREN: {
        next(ps);
        n = parse_expr(ps);
        expect(ps, T_RPAREN, "')'");
        return n;
    }
    case T_LBRACK: {
        if (ps->d != KEEL_EXPR_CEL)
            break;
        struct node *tmp[255];
        int k = 0;
        next(ps);
        while (ps->tok.t != T_RBRACK && !ps->failed) {
            if (k == 255) {
                fail(ps, ps->tok.col, "list literal too long");
                return NULL;
            }
            tmp[k++] = parse_expr(ps);
            if (ps->tok.t != T_COMMA)
                break;
            next(ps);
        }
        expect(ps, T_RBRACK, "']'");
        if (ps->failed)
            return NULL;
        n = mk(ps, N_LIST, t.col, k);
        if (k)
            memcpy(n->kids, tmp, (size_t)k * sizeof(*tmp));
        return n;
    }
    case T_LBRACE: {
        if (ps->d != KEEL_EXPR_CEL)
            break;
        struct node *tmp[254];
        int k = 0;
        next(ps);
        while (ps->tok.t != T_RBRACE && !ps->failed) {
            if (k == 254) {
                fail(ps, ps->tok.col, "map literal too long");
                return NULL;
            }
            tmp[k++] = parse_expr(ps);
            expect(ps, T_COLON, "':'");
            if (ps->failed)
                return NULL;
            tmp[k++] = parse_expr(ps);
            if (ps->tok.t != T_COMMA)
                break;
            next(ps);
        }
        expect(ps, T_RBRACE, "'}'");
        if (ps->failed)
            return NULL;
        n = mk(ps, N_MAP, t.col, k);
        if (k)
            memcpy(n->kids, tmp, (size_t)k * sizeof(*tmp));
        return n;
    }
    case T_IDENT: {
        if (!keyword_check(ps))
            return NULL;
        if (t.quoted) {
            fail(ps, t.col, "a quoted name is only allowed after '.'");
            return NULL;
        }
        next(ps);
        if (ps->tok.t == T_LPAREN) {
            n = mk(ps, N_CALL, t.col, 0);
            n->name = pool_strndup(ps->pool, t.p, t.len);
            n->nkids = parse_args(ps, &n->kids, NULL);
            return n;
        }
        bool cexl = ps->d == KEEL_EXPR_CEXL;
        if ((t.len == 4 && (cexl ? !strncasecmp(t.p, "true", 4) : !memcmp(t.p, "true", 4))) ||
            (t.len == 5 && (cexl ? !strncasecmp(t.p, "false", 5) : !memcmp(t.p, "false", 5)))) {
            if (!(ps->tok.t == T_DOT)) {
                n = mk(ps, N_CONST, t.col, 0);
                n->val.type = KEEL_VALUE_BOOL;
                n->val.u.b = t.len == 4;
                return n;
            }
        }
        if (!cexl && t.len == 4 && !memcmp(t.p, "null", 4)) {
            n = mk(ps, N_CONST, t.col, 0);
            n->val.type = KEEL_VALUE_NULL_TYPE;
            return n;
        }
        n = mk(ps, N_PATH, t.col, 0);
        n->name = pool_strndup(ps->pool, t.p, t.len);
        *extendable = true;
        return n;
    }
    default:
        break;
    }
    fail(ps, t.col, "expected operand, found %s", tok_text(ps, b, sizeof(b)));
    return NULL;
}

/* e.all(x, p), e.exists(x, p), e.exists_one(x, p), e.map(x, f), e.map(x, p, f),
 * e.filter(x, p): the call becomes a comprehension over e binding x. */
static struct node *macro(struct parser *ps, struct node *c)
{
    static const struct { const char *name; int nargs; enum macro m; } macros[] = {
        { "all", 2, M_ALL }, { "exists", 2, M_EXISTS }, { "exists_one", 2, M_EXISTS_ONE },
        { "map", 2, M_MAP }, { "map", 3, M_MAP3 }, { "filter", 2, M_FILTER },
    };
    for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
        if (strcmp(c->name, macros[i].name) || c->nkids != macros[i].nargs + 1)
            continue;
        struct node *v = c->kids[1];
        if (v->kind != N_PATH || strchr(v->name, '.')) {
            fail(ps, v->col, "%s(): argument 1 must be a simple name", c->name);
            return c;
        }
        c->kind = N_COMPR;
        c->fn = (int)macros[i].m;
        return c;
    }
    return c;
}

static struct node *parse_postfix(struct parser *ps)
{
    bool ext;
    struct node *n = parse_operand(ps, &ext);
    while (!ps->failed) {
        if (ps->tok.t == T_LBRACK) {
            int col = ps->tok.col;
            next(ps);
            struct node *k = parse_expr(ps);
            expect(ps, T_RBRACK, "']'");
            struct node *ix = mk(ps, N_INDEX, col, 2);
            ix->kids[0] = n;
            ix->kids[1] = k;
            n = ix;
            ext = false;
        } else if (ps->tok.t == T_DOT) {
            next(ps);
            if (ps->tok.t != T_IDENT) {
                char b[64];
                fail(ps, ps->tok.col, "expected selector or method name, found %s", tok_text(ps, b, sizeof(b)));
                return NULL;
            }
            if (!keyword_check(ps))
                return NULL;
            struct token id = ps->tok;
            next(ps);
            if (id.quoted && (ps->tok.t == T_LPAREN || ps->d != KEEL_EXPR_CEL)) {
                fail(ps, id.col, "a quoted name is a field, not a function");
                return NULL;
            }
            if (id.quoted) {
                struct node *sel = mk(ps, N_SELECT, id.col, 1);
                sel->kids[0] = n;
                sel->name = pool_strndup(ps->pool, id.p, id.len);
                n = sel;
                ext = false;
            } else if (ps->tok.t == T_LPAREN) {
                struct node *c = mk(ps, N_CALL, id.col, 0);
                c->name = pool_strndup(ps->pool, id.p, id.len);
                c->method = true;
                c->nkids = parse_args(ps, &c->kids, n);
                n = ps->d == KEEL_EXPR_CEL ? macro(ps, c) : c;
                ext = false;
            } else if (ext) {
                size_t ol = strlen(n->name);
                char *nm = pool_alloc(ps->pool, ol + 1 + id.len + 1);
                memcpy(nm, n->name, ol);
                nm[ol] = '.';
                memcpy(nm + ol + 1, id.p, id.len);
                n->name = nm;
            } else if (ps->d == KEEL_EXPR_CEL) {
                struct node *sel = mk(ps, N_SELECT, id.col, 1);
                sel->kids[0] = n;
                sel->name = pool_strndup(ps->pool, id.p, id.len);
                n = sel;
            } else {
                fail(ps, id.col, "unexpected expression: field selection '.%.*s' on a value that is not an attribute",
                     (int)id.len, id.p);
                return NULL;
            }
        } else if (ps->tok.t == T_LPAREN) {
            fail(ps, ps->tok.col, "unexpected expression: call of a non-function");
            return NULL;
        } else {
            break;
        }
    }
    return n;
}

static struct node *parse_unary(struct parser *ps)
{
    enum tok t = ps->tok.t;
    bool un = t == T_BANG || t == T_MINUS ||
              (ps->d == KEEL_EXPR_CEXL && (t == T_PLUS || t == T_CARET || t == T_STAR || t == T_AMP || t == T_ARROW));
    if (!un)
        return parse_postfix(ps);
    if (++ps->depth > KEEL_EXPR_MAX_DEPTH) {
        fail(ps, ps->tok.col, "expression nested too deeply");
        return NULL;
    }
    struct node *n = mk(ps, N_UNOP, ps->tok.col, 1);
    n->op = t;
    next(ps);
    n->kids[0] = parse_unary(ps);
    ps->depth--;
    return n;
}

static struct node *parse_binary(struct parser *ps, int minprec)
{
    struct node *left = parse_unary(ps);
    while (!ps->failed) {
        int prec = binprec(ps, ps->tok.t);
        if (prec == 0 || prec < minprec)
            break;
        struct node *n = mk(ps, N_BINOP, ps->tok.col, 2);
        n->op = ps->tok.t;
        next(ps);
        n->kids[0] = left;
        n->kids[1] = parse_binary(ps, prec + 1);
        left = n;
    }
    return left;
}

static struct node *parse_expr(struct parser *ps)
{
    if (++ps->depth > KEEL_EXPR_MAX_DEPTH) {
        fail(ps, ps->tok.col, "expression nested too deeply");
        return NULL;
    }
    struct node *n = parse_binary(ps, 1);
    if (ps->d == KEEL_EXPR_CEL && ps->tok.t == T_QUESTION && !ps->failed) {
        struct node *c = mk(ps, N_COND, ps->tok.col, 3);
        next(ps);
        c->kids[0] = n;
        c->kids[1] = parse_expr(ps);
        expect(ps, T_COLON, "':'");
        if (!ps->failed)
            c->kids[2] = parse_expr(ps);
        n = c;
    }
    ps->depth--;
    return n;
}

int expr_parse(const char *src, size_t len, enum keel_expr_dialect d, struct pool *pool, struct node **out,
               struct keel_expr_error *err)
{
    struct parser ps = { .src = src, .p = src, .end = src + len, .d = d, .pool = pool, .err = err };
    next(&ps);
    if (ps.tok.t == T_EOF && !ps.failed) {
        fail(&ps, 1, "empty expression");
        return -1;
    }
    struct node *n = parse_expr(&ps);
    if (!ps.failed && ps.tok.t != T_EOF) {
        char b[64];
        fail(&ps, ps.tok.col, "unexpected %s after expression", tok_text(&ps, b, sizeof(b)));
    }
    if (ps.failed)
        return -1;
    *out = n;
    return 0;
}
