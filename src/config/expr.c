/* The one place where configuration expressions are compiled: every expression field of
 * every kind comes through keel_config_expr_compile, which picks the dialect, maps the
 * compiler's column to FILE:LINE:COL and checks the result type the field requires. */
#include "config/config_int.h"

#include "core/alloc.h"

#include <string.h>

#if defined(__has_include)
#if __has_include("expr/expr.h")
#define KEEL_CONFIG_HAVE_EXPR 1
#endif
#endif

#ifdef KEEL_CONFIG_HAVE_EXPR
#include "expr/expr.h"
#endif

static void remember(struct keel_config_ctx *c, struct keel_config_expr *e)
{
    struct keel_config_impl *im = c->cfg->impl;
    if (im->n_exprs == im->cap_exprs) {
        im->cap_exprs = im->cap_exprs ? 2 * im->cap_exprs : 64;
        im->exprs = keel_realloc(im->exprs, im->cap_exprs * sizeof(*im->exprs));
    }
    im->exprs[im->n_exprs++] = e;
}

/* A column inside a scalar written over several lines (a block scalar, a folded plain or
 * quoted one): walk the value and its source text together to find the line and column of
 * value byte k. The source's extra characters are the quotes, the block indicator line,
 * indentation, escapes and the line breaks that folding turned into spaces. */
static struct keel_config_pos map_multiline(const struct keel_ynode *n, size_t k)
{
    const char *r = n->raw, *end = n->raw + n->raw_len, *v = n->str;
    bool quoted = n->style == KEEL_YSTYLE_SINGLE || n->style == KEEL_YSTYLE_DOUBLE;
    struct keel_config_pos p = keel_config_pos_of(n), last;
    if (n->style == KEEL_YSTYLE_BLOCK)
        while (r < end && *r != '\n')
            r++, p.col++;
    else if (quoted)
        r++, p.col++;
    last = p;
#define SKIPPABLE(ch) ((ch) == ' ' || (ch) == '\t' || (ch) == '\n' || (ch) == '\r' || (quoted && ((ch) == '\\' || (ch) == '\'')))
#define ADVANCE() (*r++ == '\n' ? (p.line++, p.col = 1 + n->raw_col_off) : p.col++)
    size_t ci = 0;
    while (ci < k && ci < n->len && r < end) {
        if (*r == v[ci]) {
            ADVANCE();
            ci++;
            last = p;
        } else if (SKIPPABLE(*r)) {
            ADVANCE();
        } else if (v[ci] == ' ' || v[ci] == '\n') {
            ci++; /* a line break folded into the value */
        } else {
            ADVANCE(); /* an escape sequence: one value byte for several source bytes */
            ci++;
            last = p;
        }
    }
    if (k >= n->len)
        return last; /* just after the value's last character */
    while (r < end && *r != v[k] && SKIPPABLE(*r))
        ADVANCE();
#undef SKIPPABLE
#undef ADVANCE
    return p;
}

int keel_config_expr_compile(struct keel_config_ctx *c, struct keel_config_expr *e, const struct keel_ynode *n,
                             enum keel_config_dialect d, enum keel_expr_want want)
{
    e->src = n->str;
    e->pos = keel_config_pos_of(n);
    e->type = -1;
    e->compiled = NULL;
    if (n->style == KEEL_YSTYLE_SINGLE || n->style == KEEL_YSTYLE_DOUBLE) {
        e->pos.col += 1; /* the expression starts after the quote */
    } else if (n->style == KEEL_YSTYLE_BLOCK && n->block_line) {
        e->pos.line = n->block_line;
        e->pos.col = n->block_indent + 1;
    }
    if (n->len == 0)
        return 0;
#ifdef KEEL_CONFIG_HAVE_EXPR
    struct keel_expr_error err;
    memset(&err, 0, sizeof(err));
    e->compiled = keel_expr_compile(n->str, n->len, d == KEEL_CONFIG_CEL ? KEEL_EXPR_CEL : KEEL_EXPR_CEXL, &err);
    if (e->compiled == NULL) {
        struct keel_config_pos p = e->pos;
        if (err.col > 0 && n->raw != NULL)
            p = map_multiline(n, (size_t)err.col - 1);
        else if (err.col > 0)
            p.col += err.col - 1;
        keel_config_err_at(c, &p, "invalid expression: %s", err.msg[0] ? err.msg : "syntax error");
        return -1;
    }
    remember(c, e);
    e->type = (int)keel_expr_result_type(e->compiled);
    int expect = -1;
    const char *expect_name = NULL;
    switch (want) {
    case KEEL_WANT_STRING: expect = KEEL_VALUE_STRING; expect_name = "STRING"; break;
    case KEEL_WANT_BOOL: expect = KEEL_VALUE_BOOL; expect_name = "BOOL"; break;
    case KEEL_WANT_TIMESTAMP: expect = KEEL_VALUE_TIMESTAMP; expect_name = "TIMESTAMP"; break;
    default: break;
    }
    int t = e->type;
    if (t == KEEL_VALUE_DNS_NAME || t == KEEL_VALUE_EMAIL_ADDRESS || t == KEEL_VALUE_URI)
        t = KEEL_VALUE_STRING;
    /* NONE: the type is only known at run time (CEL dyn); ERROR: never produced */
    if (expect >= 0 && t != expect && t != KEEL_VALUE_NONE) {
        keel_config_err_at(c, &e->pos, "expression type mismatch: expected %s, got %s: %s", expect_name,
                           keel_value_type_name((enum keel_value_type)e->type), e->src);
        return -1;
    }
#else
    (void)c;
    (void)d;
    (void)want;
    (void)remember;
#endif
    return 0;
}

void keel_config_expr_release(struct keel_config_expr *e)
{
#ifdef KEEL_CONFIG_HAVE_EXPR
    if (e->compiled)
        keel_expr_free(e->compiled);
#endif
    e->compiled = NULL;
}
