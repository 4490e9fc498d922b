/* Type checker and code generator: resolves attribute names to ids, checks every operator
 * and call against the vocabulary's types (spec A.5), folds constant subtrees, and emits
 * bytecode for the VM (vm.c). Runs at config time; allocation is fine here. */
#include "expr/expr_int.h"

#include "core/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct fn_desc keel_expr_fns[FN__COUNT] = {
#define X(id, name, dia, form, n, t0, t1, t2, r) \
    { name, FN_##dia, FN_##form, n, { KEEL_VALUE_##t0, KEEL_VALUE_##t1, KEEL_VALUE_##t2 }, KEEL_VALUE_##r },
#include "expr/func.def"
#undef X
};

struct cstate {
    struct keel_expr *e;
    enum keel_expr_dialect d;
    struct pool *pool;
    struct insn *code;
    size_t n, cap;
    int *labels;
    size_t nlabels, caplabels;
    int depth, maxdepth;
    bool nofold;
    bool failed;
    struct keel_expr_error *err;
    const char *locals[KEEL_EXPR_MAX_LOCALS]; /* CEL comprehension variables in scope */
    int nlocals;
    const struct expr_binding *bind;
    int nbind;
    bool unchecked;
};

static void cfail(struct cstate *cs, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cfail(struct cstate *cs, int col, const char *fmt, ...)
{
    if (cs->failed)
        return;
    cs->failed = true;
    if (cs->err) {
        va_list ap;
        va_start(ap, fmt);
        cs->err->col = col;
        vsnprintf(cs->err->msg, sizeof(cs->err->msg), fmt, ap);
        va_end(ap);
    }
}

static const char *tn(enum keel_value_type t) { return keel_value_type_name(t); }

static const char *op_text(enum tok t)
{
    switch (t) {
    case T_OROR: return "||";
    case T_ANDAND: return "&&";
    case T_PIPE: return "|";
    case T_EQ: return "==";
    case T_NE: return "!=";
    case T_LT: return "<";
    case T_LE: return "<=";
    case T_GT: return ">";
    case T_GE: return ">=";
    case T_PLUS: return "+";
    case T_MINUS: return "-";
    case T_STAR: return "*";
    case T_SLASH: return "/";
    case T_PERCENT: return "%";
    case T_IN: return "in";
    case T_BANG: return "!";
    default: return "?";
    }
}

/* Mixer's function names for the Go operators it does not implement (spec A.3.1). */
static const char *cexl_unsupported(enum tok t, bool unary)
{
    switch (t) {
    case T_MINUS: return "SUB";
    case T_STAR: return unary ? NULL : "MUL";
    case T_SLASH: return "QUO";
    case T_PERCENT: return "REM";
    case T_CARET: return "XOR";
    case T_AMP: return unary ? NULL : "AND";
    case T_BANG: return "NOT";
    case T_SHL: return "SHL";
    case T_SHR: return "SHR";
    case T_ANDNOT: return "AND_NOT";
    default: return NULL;
    }
}

/* ---- checker ---------------------------------------------------------------------- */

static int check(struct cstate *cs, struct node *n);

static bool str_like(enum keel_value_type t)
{
    return t == KEEL_VALUE_STRING || t == KEEL_VALUE_DNS_NAME || t == KEEL_VALUE_EMAIL_ADDRESS || t == KEEL_VALUE_URI;
}

static struct node *new_node(struct cstate *cs, enum node_kind k, int col)
{
    struct node *n = pool_alloc(cs->pool, sizeof(*n));
    n->kind = k;
    n->col = col;
    n->attr = -1;
    n->fn = -1;
    return n;
}

static void unknown_attr(struct cstate *cs, struct node *n)
{
    const char *s = keel_attr_suggest(n->name, strlen(n->name));
    if (s)
        cfail(cs, n->col, "unknown attribute '%s' (did you mean '%s'?)", n->name, s);
    else
        cfail(cs, n->col, "unknown attribute '%s'", n->name);
}

static bool is_dyn(enum keel_value_type t) { return t == KEEL_VALUE_DYN; }

static bool numeric(enum keel_value_type t)
{
    return t == KEEL_VALUE_INT64 || t == KEEL_VALUE_UINT64 || t == KEEL_VALUE_DOUBLE;
}

/* CEL's type identifiers, as TYPE values. */
static int type_ident(const char *name)
{
    static const struct { const char *n; enum keel_value_type t; } types[] = {
        { "int", KEEL_VALUE_INT64 }, { "uint", KEEL_VALUE_UINT64 }, { "double", KEEL_VALUE_DOUBLE },
        { "bool", KEEL_VALUE_BOOL }, { "string", KEEL_VALUE_STRING }, { "bytes", KEEL_VALUE_BYTES },
        { "list", KEEL_VALUE_LIST }, { "map", KEEL_VALUE_MAP }, { "null_type", KEEL_VALUE_NULL_TYPE },
        { "type", KEEL_VALUE_TYPE }, { "google.protobuf.Timestamp", KEEL_VALUE_TIMESTAMP },
        { "google.protobuf.Duration", KEEL_VALUE_DURATION },
    };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (!strcmp(types[i].n, name))
            return (int)types[i].t;
    return -1;
}

/* CEL: the head of a dotted name is a comprehension variable or a binding: the rest are
 * field selections on its value. 1 when resolved so, 0 when not, -1 on error. */
static int resolve_scoped(struct cstate *cs, struct node *n, bool for_has)
{
    const char *name = n->name, *dot = strchr(name, '.');
    size_t hl = dot ? (size_t)(dot - name) : strlen(name);
    struct node *base = NULL;
    for (int i = cs->nlocals - 1; i >= 0 && !base; i--) {
        if (strlen(cs->locals[i]) == hl && !memcmp(cs->locals[i], name, hl)) {
            base = new_node(cs, N_LOCAL, n->col);
            base->slot = i;
            base->type = KEEL_VALUE_DYN;
        }
    }
    int best = -1;
    for (int i = 0; i < cs->nbind && !base; i++) {
        size_t bl = strlen(cs->bind[i].name);
        if (!strncmp(cs->bind[i].name, name, bl) && (name[bl] == 0 || name[bl] == '.') &&
            (best < 0 || bl > strlen(cs->bind[best].name)))
            best = i;
    }
    if (best >= 0 && !base) {
        hl = strlen(cs->bind[best].name);
        dot = name[hl] ? name + hl : NULL;
    }
    if (best >= 0 && !base) {
        int i = best;
        if (!cs->bind[i].src) {
            base = new_node(cs, N_FAIL, n->col);
            base->name = pool_strndup(cs->pool, name, hl);
            base->type = KEEL_VALUE_DYN;
        } else {
            struct keel_expr_error e2;
            if (expr_parse(cs->bind[i].src, strlen(cs->bind[i].src), cs->d, cs->pool, &base, &e2) < 0) {
                cfail(cs, n->col, "binding %s: %s", cs->bind[i].name, e2.msg);
                return -1;
            }
            struct cstate sub = *cs;
            sub.nlocals = 0;
            sub.nbind = 0; /* a binding's value does not see the bindings */
            if (check(&sub, base) < 0) {
                cfail(cs, n->col, "binding %s: %s", cs->bind[i].name, sub.err ? sub.err->msg : "");
                return -1;
            }
            base->is_const = false; /* a variable: not folded */
        }
    }
    if (!base)
        return 0;
    if (for_has && !dot) {
        cfail(cs, n->col, "has() takes a field selection");
        return -1;
    }
    while (dot) {
        const char *seg = dot + 1;
        dot = strchr(seg, '.');
        size_t sl = dot ? (size_t)(dot - seg) : strlen(seg);
        struct node *sel = new_node(cs, N_SELECT, n->col);
        sel->nkids = 1;
        sel->kids = pool_alloc(cs->pool, sizeof(*sel->kids));
        sel->kids[0] = base;
        sel->name = pool_strndup(cs->pool, seg, sl);
        sel->test_only = for_has && !dot;
        base = sel;
    }
    if (base->kind == N_SELECT) {
        *n = *base;
        n->kind = N_SELECT;
        return check(cs, n) < 0 ? -1 : 1;
    }
    *n = *base;
    return 1;
}

/* N_PATH -> N_ATTR, or (CEL) m.key on a map attribute -> N_INDEX / has -> HAS_KEY. */
static int resolve_path(struct cstate *cs, struct node *n, bool for_has)
{
    if (cs->d == KEEL_EXPR_CEL) {
        int r = resolve_scoped(cs, n, for_has);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    int id = keel_attr_lookup(n->name, strlen(n->name));
    if (id >= 0) {
        n->kind = for_has ? N_HAS : N_ATTR;
        n->attr = id;
        n->type = for_has ? KEEL_VALUE_BOOL : keel_attr_type(id);
        return 0;
    }
    const char *dot = strrchr(n->name, '.');
    if (cs->d == KEEL_EXPR_CEL && dot) {
        int mid = keel_attr_lookup(n->name, (size_t)(dot - n->name));
        if (mid >= 0 && keel_attr_type(mid) == KEEL_VALUE_STRING_MAP) {
            struct node *m = new_node(cs, N_ATTR, n->col), *k = new_node(cs, N_CONST, n->col);
            m->attr = mid;
            m->type = KEEL_VALUE_STRING_MAP;
            k->val = keel_value_str(dot + 1, strlen(dot + 1));
            k->type = KEEL_VALUE_STRING;
            k->is_const = true;
            n->kind = for_has ? N_HAS : N_INDEX;
            n->nkids = 2;
            n->kids = pool_alloc(cs->pool, 2 * sizeof(*n->kids));
            n->kids[0] = m;
            n->kids[1] = k;
            n->attr = mid;
            n->type = for_has ? KEEL_VALUE_BOOL : KEEL_VALUE_STRING;
            return 0;
        }
    }
    int ty = cs->d == KEEL_EXPR_CEL && !for_has ? type_ident(n->name) : -1;
    if (ty >= 0) {
        n->kind = N_CONST;
        n->val.type = KEEL_VALUE_TYPE;
        n->val.u.i = ty;
        n->type = KEEL_VALUE_TYPE;
        n->is_const = true;
        return 0;
    }
    if (cs->unchecked) {
        n->kind = N_FAIL;
        n->type = KEEL_VALUE_DYN;
        return 0;
    }
    if (cs->d == KEEL_EXPR_CEL && !for_has && !strchr(n->name, '.')) {
        cfail(cs, n->col, "undeclared reference to '%s'", n->name);
        return -1;
    }
    unknown_attr(cs, n);
    return -1;
}

static int want(struct cstate *cs, struct node *n, enum keel_value_type t, const char *what)
{
    if (n->type != t) {
        cfail(cs, n->col, "%s: got %s, expected %s", what, tn(n->type), tn(t));
        return -1;
    }
    return 0;
}

static bool eq_ok(struct cstate *cs, enum keel_value_type t)
{
    if (t == KEEL_VALUE_STRING_MAP)
        return cs->d == KEEL_EXPR_CEL;
    return true;
}

static bool ord_ok(struct cstate *cs, enum keel_value_type t)
{
    switch (t) {
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_INT64:
    case KEEL_VALUE_DOUBLE:
    case KEEL_VALUE_TIMESTAMP:
    case KEEL_VALUE_DNS_NAME:
    case KEEL_VALUE_EMAIL_ADDRESS:
    case KEEL_VALUE_URI:
        return true;
    case KEEL_VALUE_DURATION:
    case KEEL_VALUE_UINT64:
    case KEEL_VALUE_BOOL:
    case KEEL_VALUE_BYTES:
        return cs->d == KEEL_EXPR_CEL;
    default:
        return false;
    }
}

static bool arith_ok(struct cstate *cs, enum tok op, enum keel_value_type t)
{
    if (cs->d == KEEL_EXPR_CEXL)
        return op == T_PLUS && (t == KEEL_VALUE_STRING || t == KEEL_VALUE_INT64 || t == KEEL_VALUE_DOUBLE);
    switch (t) {
    case KEEL_VALUE_INT64:
    case KEEL_VALUE_UINT64:
        return true;
    case KEEL_VALUE_DOUBLE:
        return op != T_PERCENT;
    case KEEL_VALUE_STRING:
    case KEEL_VALUE_BYTES:
        return op == T_PLUS;
    case KEEL_VALUE_DURATION:
        return op == T_PLUS || op == T_MINUS;
    default:
        return false;
    }
}

static bool boolish(enum keel_value_type t) { return t == KEEL_VALUE_BOOL || is_dyn(t); }

static bool mapish(enum keel_value_type t)
{
    return t == KEEL_VALUE_MAP || t == KEEL_VALUE_STRING_MAP;
}

/* CEL: operands typed DYN (dyn(), list elements, comprehension variables) are checked at
 * run time; statically known types are checked here as the CEL checker does. */
static int check_binop_cel(struct cstate *cs, struct node *n)
{
    struct node *a = n->kids[0], *b = n->kids[1];
    if (n->op == T_IN && b->kind == N_LIST) {
        bool same = true;
        if (check(cs, a) < 0)
            return -1;
        for (int i = 0; i < b->nkids; i++) {
            if (check(cs, b->kids[i]) < 0)
                return -1;
            same = same && b->kids[i]->type == a->type && !is_dyn(a->type) && a->type != KEEL_VALUE_LIST &&
                   a->type != KEEL_VALUE_MAP;
        }
        n->type = KEEL_VALUE_BOOL;
        if (same) { /* inline: no list is built */
            n->is_const = a->is_const;
            for (int i = 0; i < b->nkids; i++)
                n->is_const = n->is_const && b->kids[i]->is_const;
            return 0;
        }
        b->type = KEEL_VALUE_LIST;
        b->fn = 1; /* built: the generic 'in' */
        return 0;
    }
    if (check(cs, a) < 0 || check(cs, b) < 0)
        return -1;
    enum keel_value_type ta = a->type, tb = b->type;
    bool dyn = is_dyn(ta) || is_dyn(tb);
    n->is_const = a->is_const && b->is_const;
    n->type = KEEL_VALUE_BOOL;
    switch (n->op) {
    case T_IN:
        if (!(tb == KEEL_VALUE_LIST || mapish(tb) || is_dyn(tb))) {
            cfail(cs, b->col, "'in': right operand is %s, expected a list or map", tn(tb));
            return -1;
        }
        if (tb == KEEL_VALUE_STRING_MAP && ta != KEEL_VALUE_STRING && !is_dyn(ta)) {
            cfail(cs, a->col, "'in': map key: got %s, expected STRING", tn(ta));
            return -1;
        }
        return 0;
    case T_OROR:
    case T_ANDAND:
        if ((!boolish(ta) || !boolish(tb)) && !cs->unchecked) {
            struct node *bad = boolish(ta) ? b : a;
            cfail(cs, bad->col, "%s operand of '%s': got %s, expected BOOL", bad == a ? "left" : "right",
                  op_text(n->op), tn(bad->type));
            return -1;
        }
        return 0;
    case T_EQ:
    case T_NE:
        if (ta == tb || dyn || ta == KEEL_VALUE_NULL_TYPE || tb == KEEL_VALUE_NULL_TYPE ||
            (mapish(ta) && mapish(tb)) || (numeric(ta) && numeric(tb)))
            return 0;
        cfail(cs, b->col, "type mismatch in '%s': right operand is %s, expected %s", op_text(n->op), tn(tb), tn(ta));
        return -1;
    case T_LT:
    case T_LE:
    case T_GT:
    case T_GE:
        if (dyn || (ta == tb && ord_ok(cs, ta)) || (numeric(ta) && numeric(tb)))
            return 0;
        if (ta != tb)
            cfail(cs, b->col, "type mismatch in '%s': right operand is %s, expected %s", op_text(n->op), tn(tb),
                  tn(ta));
        else
            cfail(cs, n->col, "operator '%s' is not defined for %s", op_text(n->op), tn(ta));
        return -1;
    default:
        break;
    }
    /* arithmetic */
    if (dyn) {
        n->type = KEEL_VALUE_DYN;
        return 0;
    }
    if (ta == tb && (arith_ok(cs, n->op, ta) || (ta == KEEL_VALUE_LIST && n->op == T_PLUS))) {
        n->type = ta;
        return 0;
    }
    if (ta == KEEL_VALUE_TIMESTAMP && tb == KEEL_VALUE_TIMESTAMP && n->op == T_MINUS) {
        n->type = KEEL_VALUE_DURATION;
        return 0;
    }
    if ((ta == KEEL_VALUE_TIMESTAMP && tb == KEEL_VALUE_DURATION && (n->op == T_PLUS || n->op == T_MINUS)) ||
        (ta == KEEL_VALUE_DURATION && tb == KEEL_VALUE_TIMESTAMP && n->op == T_PLUS)) {
        n->type = KEEL_VALUE_TIMESTAMP;
        return 0;
    }
    if (ta != tb)
        cfail(cs, b->col, "type mismatch in '%s': right operand is %s, expected %s", op_text(n->op), tn(tb), tn(ta));
    else
        cfail(cs, n->col, "operator '%s' is not defined for %s", op_text(n->op), tn(ta));
    return -1;
}

static int check_binop(struct cstate *cs, struct node *n)
{
    struct node *a = n->kids[0], *b = n->kids[1];
    if (cs->d == KEEL_EXPR_CEL)
        return check_binop_cel(cs, n);
    if (cs->d == KEEL_EXPR_CEXL) {
        const char *u = cexl_unsupported(n->op, false);
        if (u) {
            cfail(cs, n->col, "unknown function: %s ('%s' is not supported in CEXL)", u,
                  n->op == T_SHL ? "<<" : n->op == T_SHR ? ">>" : n->op == T_ANDNOT ? "&^" : n->op == T_CARET ? "^"
                  : n->op == T_AMP ? "&" : op_text(n->op));
            return -1;
        }
    }
    if (n->op == T_IN) {
        if (check(cs, a) < 0)
            return -1;
        if (b->kind == N_LIST) {
            for (int i = 0; i < b->nkids; i++) {
                if (check(cs, b->kids[i]) < 0)
                    return -1;
                if (b->kids[i]->type != a->type) {
                    cfail(cs, b->kids[i]->col, "'in': list element is %s, expected %s", tn(b->kids[i]->type),
                          tn(a->type));
                    return -1;
                }
            }
            n->is_const = a->is_const;
            for (int i = 0; i < b->nkids; i++)
                n->is_const = n->is_const && b->kids[i]->is_const;
        } else {
            if (check(cs, b) < 0)
                return -1;
            if (b->type != KEEL_VALUE_STRING_MAP) {
                cfail(cs, b->col, "'in': right operand is %s, expected a list or STRING_MAP", tn(b->type));
                return -1;
            }
            if (want(cs, a, KEEL_VALUE_STRING, "'in': map key") < 0)
                return -1;
            n->is_const = a->is_const && b->is_const;
        }
        n->type = KEEL_VALUE_BOOL;
        return 0;
    }
    if (check(cs, a) < 0 || check(cs, b) < 0)
        return -1;
    n->is_const = a->is_const && b->is_const;
    switch (n->op) {
    case T_OROR:
    case T_ANDAND:
        if (want(cs, a, KEEL_VALUE_BOOL, n->op == T_OROR ? "left operand of '||'" : "left operand of '&&'") < 0 ||
            want(cs, b, KEEL_VALUE_BOOL, n->op == T_OROR ? "right operand of '||'" : "right operand of '&&'") < 0)
            return -1;
        n->type = KEEL_VALUE_BOOL;
        return 0;
    case T_PIPE:
        if (a->type != b->type) {
            cfail(cs, b->col, "type mismatch in '|': got %s, expected %s (the fallback must have the left operand's type)",
                  tn(b->type), tn(a->type));
            return -1;
        }
        n->type = a->type;
        return 0;
    case T_EQ:
    case T_NE:
    case T_LT:
    case T_LE:
    case T_GT:
    case T_GE: {
        if (a->type != b->type) {
            cfail(cs, b->col, "type mismatch in '%s': right operand is %s, expected %s", op_text(n->op), tn(b->type),
                  tn(a->type));
            return -1;
        }
        bool ok = (n->op == T_EQ || n->op == T_NE) ? eq_ok(cs, a->type) : ord_ok(cs, a->type);
        if (!ok) {
            cfail(cs, n->col, "operator '%s' is not defined for %s", op_text(n->op), tn(a->type));
            return -1;
        }
        if (a->kind == N_CONST && a->op == T_UINT)
            a->is_const = false;
        n->type = KEEL_VALUE_BOOL;
        return 0;
    }
    default:
        if (a->type != b->type) {
            cfail(cs, b->col, "type mismatch in '%s': right operand is %s, expected %s", op_text(n->op), tn(b->type),
                  tn(a->type));
            return -1;
        }
        if (!arith_ok(cs, n->op, a->type)) {
            cfail(cs, n->col, "operator '%s' is not defined for %s", op_text(n->op), tn(a->type));
            return -1;
        }
        n->type = a->type;
        return 0;
    }
}

static int check_call(struct cstate *cs, struct node *n)
{
    unsigned dmask = cs->d == KEEL_EXPR_CEXL ? FN_CEXL : FN_CEL;
    if (!strcmp(n->name, "conditional") && !n->method) {
        if (n->nkids != 3) {
            cfail(cs, n->col, "conditional() arity mismatch. Got %d arg(s), expected 3 arg(s)", n->nkids);
            return -1;
        }
        for (int i = 0; i < 3; i++)
            if (check(cs, n->kids[i]) < 0)
                return -1;
        if (want(cs, n->kids[0], KEEL_VALUE_BOOL, "conditional() arg 1") < 0)
            return -1;
        if (n->kids[2]->type != n->kids[1]->type) {
            cfail(cs, n->kids[2]->col, "conditional() arg 3 typeError got %s, expected %s", tn(n->kids[2]->type),
                  tn(n->kids[1]->type));
            return -1;
        }
        n->kind = N_COND;
        n->type = n->kids[1]->type;
        n->is_const = n->kids[0]->is_const && n->kids[1]->is_const && n->kids[2]->is_const;
        return 0;
    }
    if (cs->d == KEEL_EXPR_CEL && !n->method && n->nkids == 1 && !strcmp(n->name, "dyn")) {
        struct node *k = n->kids[0];
        if (check(cs, k) < 0)
            return -1;
        *n = *k;
        n->type = KEEL_VALUE_DYN;
        return 0;
    }
    if (cs->d == KEEL_EXPR_CEL && !n->method && n->nkids == 1 && !strcmp(n->name, "type")) {
        if (check(cs, n->kids[0]) < 0)
            return -1;
        n->kind = N_TYPEOF;
        n->type = KEEL_VALUE_TYPE;
        n->is_const = false;
        return 0;
    }
    if (!strcmp(n->name, "has") && !n->method && cs->d == KEEL_EXPR_CEL && n->nkids == 1 &&
        n->kids[0]->kind == N_SELECT) {
        struct node *p = n->kids[0];
        p->test_only = true;
        if (check(cs, p) < 0)
            return -1;
        *n = *p;
        return 0;
    }
    if (!strcmp(n->name, "has") && !n->method && cs->d == KEEL_EXPR_CEL) {
        if (n->nkids != 1 || n->kids[0]->kind != N_PATH || !strchr(n->kids[0]->name, '.')) {
            cfail(cs, n->col, "has() takes one field selection, e.g. has(request.useragent)");
            return -1;
        }
        struct node *p = n->kids[0];
        if (resolve_path(cs, p, true) < 0)
            return -1;
        *n = *p;
        return 0;
    }
    for (int i = 0; i < n->nkids; i++)
        if (check(cs, n->kids[i]) < 0)
            return -1;
    int first = -1, firstform = -1;
    bool any_name = false;
    for (int f = 0; f < FN__COUNT; f++) {
        const struct fn_desc *fd = &keel_expr_fns[f];
        if (strcmp(fd->name, n->name))
            continue;
        any_name = true;
        if (!(fd->dialects & dmask))
            continue;
        if (first < 0)
            first = f;
        if (!(fd->form & (n->method ? FN_METHOD : FN_FUNC)))
            continue;
        if (firstform < 0)
            firstform = f;
        if (fd->nargs != n->nkids)
            continue;
        bool ok = true, dyn = false;
        for (int i = 0; i < n->nkids; i++) {
            dyn = dyn || is_dyn(n->kids[i]->type);
            ok = ok && (n->kids[i]->type == fd->args[i] || is_dyn(n->kids[i]->type));
        }
        if (!ok)
            continue;
        if (dyn) {
            /* resolved at run time among the overloads of this name and arity */
            n->fn = f;
            n->dyncall = true;
            n->type = fd->result;
            for (int g = f + 1; g < FN__COUNT; g++) {
                const struct fn_desc *gd = &keel_expr_fns[g];
                if (!strcmp(gd->name, n->name) && (gd->dialects & dmask) && gd->nargs == n->nkids &&
                    gd->result != n->type)
                    n->type = KEEL_VALUE_DYN;
            }
            n->is_const = false;
            return 0;
        }
        n->fn = f;
        n->type = fd->result;
        n->is_const = true;
        for (int i = 0; i < n->nkids; i++)
            n->is_const = n->is_const && n->kids[i]->is_const;
        return 0;
    }
    if (cs->unchecked) {
        n->kind = N_FAIL;
        n->type = KEEL_VALUE_DYN;
        return 0;
    }
    if (first < 0) {
        if (any_name)
            cfail(cs, n->col, "function '%s' is not available in %s", n->name,
                  cs->d == KEEL_EXPR_CEXL ? "CEXL (use --cel?)" : "CEL");
        else
            cfail(cs, n->col, "unknown function: %s", n->name);
        return -1;
    }
    if (firstform < 0) {
        if (n->method)
            cfail(cs, n->col, "invoking regular function on instance method: %s", n->name);
        else
            cfail(cs, n->col, "invoking instance method without an instance: %s", n->name);
        return -1;
    }
    const struct fn_desc *fd = &keel_expr_fns[firstform];
    int given = n->nkids - (n->method ? 1 : 0), expected = fd->nargs - ((fd->form == FN_METHOD && n->method) || n->method ? 1 : 0);
    if (n->nkids != fd->nargs) {
        /* an overload with the right count may still exist */
        bool countok = false;
        for (int f = firstform; f < FN__COUNT; f++)
            if (!strcmp(keel_expr_fns[f].name, n->name) && (keel_expr_fns[f].dialects & dmask) &&
                keel_expr_fns[f].nargs == n->nkids)
                countok = true, fd = &keel_expr_fns[f];
        if (!countok) {
            cfail(cs, n->col, "%s() arity mismatch. Got %d arg(s), expected %d arg(s)", n->name, given, expected);
            return -1;
        }
    }
    for (int i = 0; i < n->nkids; i++) {
        if (n->kids[i]->type != fd->args[i]) {
            if (n->method && i == 0)
                cfail(cs, n->kids[i]->col, "%s() target typeError got %s, expected %s", n->name, tn(n->kids[i]->type),
                      tn(fd->args[i]));
            else
                cfail(cs, n->kids[i]->col, "%s() arg %d typeError got %s, expected %s", n->name,
                      i + (n->method ? 0 : 1), tn(n->kids[i]->type), tn(fd->args[i]));
            return -1;
        }
    }
    cfail(cs, n->col, "no overload of %s() for these argument types", n->name);
    return -1;
}

static int check(struct cstate *cs, struct node *n)
{
    switch (n->kind) {
    case N_CONST:
        n->type = n->val.type;
        n->is_const = true;
        if (n->op == T_UINT) {
            cfail(cs, n->col, "integer literal out of range");
            return -1;
        }
        return 0;
    case N_PATH:
        return resolve_path(cs, n, false);
    case N_ATTR:
    case N_HAS:
        return 0;
    case N_LIST:
    case N_MAP:
        for (int i = 0; i < n->nkids; i++) {
            if (check(cs, n->kids[i]) < 0)
                return -1;
            enum keel_value_type kt = n->kids[i]->type;
            if (n->kind == N_MAP && i % 2 == 0 && kt != KEEL_VALUE_INT64 && kt != KEEL_VALUE_UINT64 &&
                kt != KEEL_VALUE_BOOL && kt != KEEL_VALUE_STRING && !is_dyn(kt)) {
                cfail(cs, n->kids[i]->col, "unsupported map key type %s", tn(kt));
                return -1;
            }
        }
        n->type = n->kind == N_LIST ? KEEL_VALUE_LIST : KEEL_VALUE_MAP;
        n->is_const = false; /* built per evaluation, never folded into a constant */
        return 0;
    case N_SELECT: {
        struct node *k = n->kids[0];
        if (check(cs, k) < 0)
            return -1;
        if (k->type == KEEL_VALUE_STRING_MAP)
            n->type = KEEL_VALUE_STRING;
        else if (k->type == KEEL_VALUE_MAP || is_dyn(k->type))
            n->type = KEEL_VALUE_DYN;
        else {
            cfail(cs, n->col, "type %s has no field '%s'", tn(k->type), n->name);
            return -1;
        }
        if (n->test_only)
            n->type = KEEL_VALUE_BOOL;
        n->is_const = false;
        return 0;
    }
    case N_LOCAL:
    case N_TYPEOF:
    case N_FAIL:
        return 0;
    case N_COMPR: {
        struct node *r = n->kids[0];
        if (check(cs, r) < 0)
            return -1;
        if (r->type != KEEL_VALUE_LIST && !mapish(r->type) && !is_dyn(r->type)) {
            cfail(cs, r->col, "%s(): cannot iterate over %s", n->name, tn(r->type));
            return -1;
        }
        if (cs->nlocals == KEEL_EXPR_MAX_LOCALS) {
            cfail(cs, n->col, "macros nested too deeply");
            return -1;
        }
        n->slot = cs->nlocals;
        cs->locals[cs->nlocals++] = n->kids[1]->name;
        for (int i = 2; i < n->nkids; i++) {
            if (check(cs, n->kids[i]) < 0)
                return -1;
            bool pred = n->fn != M_MAP && !(n->fn == M_MAP3 && i == 3);
            if (pred && !boolish(n->kids[i]->type)) {
                cfail(cs, n->kids[i]->col, "%s(): predicate is %s, expected BOOL", n->name, tn(n->kids[i]->type));
                return -1;
            }
        }
        cs->nlocals--;
        n->type = n->fn == M_MAP || n->fn == M_MAP3 || n->fn == M_FILTER ? KEEL_VALUE_LIST : KEEL_VALUE_BOOL;
        n->is_const = false;
        return 0;
    }
    case N_INDEX:
        if (check(cs, n->kids[0]) < 0 || check(cs, n->kids[1]) < 0)
            return -1;
        if (cs->d == KEEL_EXPR_CEL && (n->kids[0]->type == KEEL_VALUE_LIST || n->kids[0]->type == KEEL_VALUE_MAP ||
                                       is_dyn(n->kids[0]->type) || is_dyn(n->kids[1]->type))) {
            enum keel_value_type kt = n->kids[1]->type;
            if (n->kids[0]->type == KEEL_VALUE_LIST && kt != KEEL_VALUE_INT64 && kt != KEEL_VALUE_UINT64 &&
                kt != KEEL_VALUE_DOUBLE && !is_dyn(kt)) {
                cfail(cs, n->kids[1]->col, "list index: got %s, expected INT64", tn(kt));
                return -1;
            }
            n->type = n->kids[0]->type == KEEL_VALUE_STRING_MAP ? KEEL_VALUE_STRING : KEEL_VALUE_DYN;
            n->dyncall = true;
            n->is_const = false;
            return 0;
        }
        if (n->kids[0]->type != KEEL_VALUE_STRING_MAP) {
            cfail(cs, n->kids[0]->col, "cannot index a value of type %s (expected STRING_MAP)", tn(n->kids[0]->type));
            return -1;
        }
        if (want(cs, n->kids[1], KEEL_VALUE_STRING, "map key") < 0)
            return -1;
        n->type = KEEL_VALUE_STRING;
        n->is_const = n->kids[0]->is_const && n->kids[1]->is_const;
        return 0;
    case N_UNOP: {
        struct node *k = n->kids[0];
        if (cs->d == KEEL_EXPR_CEXL) {
            const char *u = cexl_unsupported(n->op, true);
            if (u)
                cfail(cs, n->col, "unknown function: %s ('%s' is not supported in CEXL%s)", u,
                      n->op == T_BANG ? "!" : n->op == T_CARET ? "^" : "-",
                      n->op == T_BANG ? "; write x == false" : "");
            else if (n->op == T_PLUS)
                cfail(cs, n->col, "ADD arity mismatch. Got 1 arg(s), expected 2 arg(s)");
            else
                cfail(cs, n->col, "unexpected expression");
            return -1;
        }
        if (n->op == T_MINUS && k->kind == N_CONST && k->op == T_UINT) {
            /* -9223372036854775808 */
            k->op = 0;
            k->val.u.i = INT64_MIN;
            n->kind = N_CONST;
            n->val = k->val;
            n->op = 0;
            return check(cs, n);
        }
        if (check(cs, k) < 0)
            return -1;
        n->is_const = k->is_const;
        if (n->op == T_BANG) {
            if (!is_dyn(k->type) && want(cs, k, KEEL_VALUE_BOOL, "operand of '!'") < 0)
                return -1;
        } else if (k->type != KEEL_VALUE_INT64 && k->type != KEEL_VALUE_DOUBLE && k->type != KEEL_VALUE_DURATION &&
                   !is_dyn(k->type)) {
            cfail(cs, k->col, "operator '-' is not defined for %s", tn(k->type));
            return -1;
        }
        n->type = k->type;
        return 0;
    }
    case N_BINOP:
        return check_binop(cs, n);
    case N_COND:
        for (int i = 0; i < 3; i++)
            if (check(cs, n->kids[i]) < 0)
                return -1;
        if (!is_dyn(n->kids[0]->type) && want(cs, n->kids[0], KEEL_VALUE_BOOL, "condition of '?:'") < 0)
            return -1;
        if (n->kids[1]->type != n->kids[2]->type && cs->d == KEEL_EXPR_CEL &&
            (cs->unchecked || is_dyn(n->kids[1]->type) || is_dyn(n->kids[2]->type) || n->kids[1]->type == KEEL_VALUE_NULL_TYPE ||
             n->kids[2]->type == KEEL_VALUE_NULL_TYPE)) {
            n->type = KEEL_VALUE_DYN; /* CEL: the branches unify to dyn */
        } else if (n->kids[1]->type != n->kids[2]->type) {
            cfail(cs, n->kids[2]->col, "type mismatch in '?:': branches are %s and %s", tn(n->kids[1]->type),
                  tn(n->kids[2]->type));
            return -1;
        } else {
            n->type = n->kids[1]->type;
        }
        n->is_const = n->kids[0]->is_const && n->kids[1]->is_const && n->kids[2]->is_const;
        return 0;
    case N_CALL:
        return check_call(cs, n);
    }
    return -1;
}

/* ---- code generation -------------------------------------------------------------- */

static int label(struct cstate *cs)
{
    if (cs->nlabels == cs->caplabels) {
        cs->caplabels = cs->caplabels ? cs->caplabels * 2 : 16;
        cs->labels = keel_realloc(cs->labels, cs->caplabels * sizeof(*cs->labels));
    }
    cs->labels[cs->nlabels] = -1;
    return (int)cs->nlabels++;
}

static void place(struct cstate *cs, int l) { cs->labels[l] = (int)cs->n; }

static void emit(struct cstate *cs, enum op op, int npop, int npush, int attr, int a, int b)
{
    if (cs->n == cs->cap) {
        cs->cap = cs->cap ? cs->cap * 2 : 32;
        cs->code = keel_realloc(cs->code, cs->cap * sizeof(*cs->code));
    }
    /* ops that look at error operands themselves do not get the generic propagation */
    bool own = op == OP_AND_CEL || op == OP_OR_CEL || op == OP_BRANCH || op == OP_JF_KEEP || op == OP_JT_KEEP ||
               op == OP_POP || op == OP_ITER_INIT || op == OP_ACCUM || op == OP_FILTER_SKIP || op == OP_ITER_END;
    if ((op == OP_LOAD || op == OP_LOAD_OPT) && attr >= 0)
        b = (int)keel_attr_type(attr); /* the VM rejects bag values of the wrong type */
    cs->code[cs->n++] = (struct insn){ .op = (uint8_t)op, .n = (uint8_t)(own ? 0 : npop),
                                       .attr = (uint16_t)(attr < 0 ? 0 : attr), .a = a, .b = b };
    cs->depth += npush - npop;
    if (cs->depth > cs->maxdepth)
        cs->maxdepth = cs->depth;
}

static int add_const(struct cstate *cs, const struct keel_value *v)
{
    struct keel_expr *e = cs->e;
    if (e->nconsts == e->capconsts) {
        e->capconsts = e->capconsts ? e->capconsts * 2 : 8;
        e->consts = keel_realloc(e->consts, e->capconsts * sizeof(*e->consts));
    }
    struct keel_value c = *v;
    bool strv = str_like(c.type) || c.type == KEEL_VALUE_BYTES;
    if (strv) {
        /* constants own their bytes (the parse pool dies after compile) */
        for (size_t i = 0; i < e->nconsts; i++)
            if (e->consts[i].type == c.type && keel_str_eq(e->consts[i].u.s, c.u.s))
                return (int)i;
        char *s = keel_alloc(c.u.s.len + 1);
        if (c.u.s.len)
            memcpy(s, c.u.s.p, c.u.s.len);
        s[c.u.s.len] = 0;
        e->strs = keel_realloc(e->strs, (e->nstrs + 1) * sizeof(*e->strs));
        e->strs[e->nstrs++] = s;
        c.u.s.p = s;
    } else if (c.type == KEEL_VALUE_STRING_MAP) {
        c.u.map.kv = NULL; /* only the empty map is ever a constant */
        c.u.map.n = 0;
    }
    e->consts[e->nconsts] = c;
    return (int)e->nconsts++;
}

static void gen(struct cstate *cs, struct node *n);

static bool absent_capable(const struct node *n)
{
    return n->kind == N_ATTR || n->kind == N_INDEX || (n->kind == N_BINOP && n->op == T_PIPE);
}

/* Push the value of n, or jump to label fail (stack unchanged) when n is absent (A.6.2). */
static void gen_opt(struct cstate *cs, struct node *n, int fail)
{
    if (n->kind == N_ATTR) {
        emit(cs, OP_LOAD_OPT, 0, 1, n->attr, fail, 0);
    } else if (n->kind == N_INDEX) {
        struct node *m = n->kids[0], *k = n->kids[1];
        if (m->kind == N_ATTR && k->kind == N_CONST) {
            emit(cs, OP_MAPGET_OPT, 0, 1, m->attr, fail, add_const(cs, &k->val));
            return;
        }
        if (absent_capable(m))
            gen_opt(cs, m, fail);
        else
            gen(cs, m);
        if (absent_capable(k)) {
            int popm = label(cs), skip = label(cs);
            gen_opt(cs, k, popm);
            emit(cs, OP_INDEX_OPT, 2, 1, 0, fail, 0);
            emit(cs, OP_JMP, 0, 0, 0, skip, 0);
            place(cs, popm);
            emit(cs, OP_POP, 1, 0, 0, 0, 0);
            emit(cs, OP_JMP, 0, 0, 0, fail, 0);
            cs->depth += 1; /* at skip: the value */
            place(cs, skip);
        } else {
            gen(cs, k);
            emit(cs, OP_INDEX_OPT, 2, 1, 0, fail, 0);
        }
    } else if (n->kind == N_BINOP && n->op == T_PIPE) {
        int end = label(cs), next = label(cs);
        gen_opt(cs, n->kids[0], next);
        emit(cs, OP_JMP, 0, 0, 0, end, 0);
        cs->depth -= 1;
        place(cs, next);
        gen_opt(cs, n->kids[1], fail);
        place(cs, end);
    } else {
        gen(cs, n);
    }
}

static void fix_labels(struct cstate *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        struct insn *in = &cs->code[i];
        if (in->op == OP_LOAD_OPT || in->op == OP_MAPGET_OPT || in->op == OP_INDEX_OPT || in->op == OP_JMP ||
            in->op == OP_JF_KEEP || in->op == OP_JT_KEEP || in->op == OP_JF_ONLY || in->op == OP_JT_ONLY ||
            in->op == OP_FILTER_SKIP)
            in->a = cs->labels[in->a];
        else if (in->op == OP_BRANCH)
            in->a = cs->labels[in->a], in->b = cs->labels[in->b];
        else if (in->op == OP_ITER_INIT || in->op == OP_ITER_NEXT)
            in->b = cs->labels[in->b];
    }
}

static bool try_fold(struct cstate *cs, struct node *n)
{
    struct cstate sub = { .e = cs->e, .d = cs->d, .pool = cs->pool, .nofold = true };
    gen(&sub, n);
    fix_labels(&sub);
    bool ok = false;
    if (sub.maxdepth <= KEEL_EXPR_MAX_STACK) {
        struct keel_expr tmp = *cs->e;
        tmp.code = sub.code;
        tmp.ncode = sub.n;
        static const struct keel_attr_bag empty; /* zero: nothing present */
        struct keel_value v;
        expr_vm_run(&tmp, 0, sub.n, &empty, &v);
        if (v.type != KEEL_VALUE_ERROR && v.type != KEEL_VALUE_LIST && v.type != KEEL_VALUE_MAP &&
            (v.type != KEEL_VALUE_STRING_MAP || v.u.map.n == 0)) {
            emit(cs, OP_CONST, 0, 1, 0, add_const(cs, &v), 0);
            ok = true;
        }
    }
    free(sub.code);
    free(sub.labels);
    return ok;
}

static void gen(struct cstate *cs, struct node *n)
{
    if (n->is_const && n->kind != N_CONST && !cs->nofold && try_fold(cs, n))
        return;
    switch (n->kind) {
    case N_CONST:
        emit(cs, OP_CONST, 0, 1, 0, add_const(cs, &n->val), 0);
        return;
    case N_ATTR:
        emit(cs, OP_LOAD, 0, 1, n->attr, 0, 0);
        return;
    case N_HAS:
        if (n->nkids == 2)
            emit(cs, OP_HAS_KEY, 0, 1, n->attr, 0, add_const(cs, &n->kids[1]->val));
        else
            emit(cs, OP_HAS, 0, 1, n->attr, 0, 0);
        return;
    case N_INDEX: {
        struct node *m = n->kids[0], *k = n->kids[1];
        if (m->kind == N_ATTR && k->kind == N_CONST) {
            emit(cs, OP_MAPGET, 0, 1, m->attr, 0, add_const(cs, &k->val));
            return;
        }
        gen(cs, m);
        gen(cs, k);
        emit(cs, n->dyncall ? OP_INDEX_DYN : cs->d == KEEL_EXPR_CEL ? OP_INDEX_CEL : OP_INDEX, 2, 1, 0, 0, 0);
        return;
    }
    case N_UNOP:
        gen(cs, n->kids[0]);
        emit(cs, n->op == T_BANG ? OP_NOT : OP_NEG, 1, 1, 0, 0, 0);
        return;
    case N_COND: {
        int els = label(cs), end = label(cs);
        gen(cs, n->kids[0]);
        emit(cs, OP_BRANCH, 1, 0, 0, els, end);
        gen(cs, n->kids[1]);
        emit(cs, OP_JMP, 0, 0, 0, end, 0);
        cs->depth -= 1;
        place(cs, els);
        gen(cs, n->kids[2]);
        place(cs, end);
        return;
    }
    case N_LIST:
    case N_MAP:
        for (int i = 0; i < n->nkids; i++)
            gen(cs, n->kids[i]);
        emit(cs, n->kind == N_LIST ? OP_MKLIST : OP_MKMAP, n->nkids, 1, 0, n->kind == N_LIST ? n->nkids : n->nkids / 2, 0);
        return;
    case N_SELECT: {
        struct keel_value k = keel_value_str(n->name, strlen(n->name));
        gen(cs, n->kids[0]);
        emit(cs, OP_SELECT, 1, 1, 0, n->test_only, add_const(cs, &k));
        return;
    }
    case N_LOCAL:
        emit(cs, OP_LOCAL, 0, 1, 0, n->slot, 0);
        return;
    case N_FAIL: {
        struct keel_value k = keel_value_str(n->name, strlen(n->name));
        emit(cs, OP_FAIL, 0, 1, 0, 0, add_const(cs, &k));
        return;
    }
    case N_TYPEOF:
        gen(cs, n->kids[0]);
        emit(cs, OP_TYPEOF, 1, 1, 0, 0, 0);
        return;
    case N_COMPR: {
        int top = label(cs), done = label(cs), end = label(cs);
        gen(cs, n->kids[0]);
        emit(cs, OP_ITER_INIT, 1, 3, 0, n->fn, end);
        place(cs, top);
        emit(cs, OP_ITER_NEXT, 0, 0, 0, n->slot, done);
        gen(cs, n->kids[2]);
        if (n->fn == M_MAP3) {
            emit(cs, OP_FILTER_SKIP, 1, 0, 0, top, 0);
            gen(cs, n->kids[3]);
        }
        emit(cs, OP_ACCUM, 1, 0, 0, n->fn, n->slot);
        emit(cs, OP_JMP, 0, 0, 0, top, 0);
        place(cs, done);
        emit(cs, OP_ITER_END, 3, 1, 0, n->fn, 0);
        place(cs, end);
        return;
    }
    case N_CALL: {
        const struct fn_desc *fd = &keel_expr_fns[n->fn];
        if (n->dyncall) {
            for (int i = 0; i < n->nkids; i++)
                gen(cs, n->kids[i]);
            emit(cs, OP_CALL_DYN, n->nkids, 1, 0, n->fn, n->nkids);
            return;
        }
        int re_arg = n->fn == FN_MATCHES_CEXL ? 0 : n->fn == FN_MATCHES_CEL ? 1 : -1;
        if (re_arg >= 0 && n->kids[re_arg]->kind == N_CONST) {
            regex_t re;
            const struct keel_value *pv = &n->kids[re_arg]->val;
            if (expr_regcomp(&re, pv->u.s.p, pv->u.s.len) == 0) {
                cs->e->res = keel_realloc(cs->e->res, (cs->e->nres + 1) * sizeof(regex_t));
                cs->e->res[cs->e->nres] = re;
                gen(cs, n->kids[1 - re_arg]);
                emit(cs, OP_REGEX, 1, 1, 0, (int)cs->e->nres++, 0);
                return;
            }
        }
        for (int i = 0; i < n->nkids; i++)
            gen(cs, n->kids[i]);
        emit(cs, OP_CALL, fd->nargs, 1, 0, n->fn, 0);
        return;
    }
    case N_BINOP:
        break;
    default:
        return;
    }
    struct node *a = n->kids[0], *b = n->kids[1];
    switch (n->op) {
    case T_PIPE: {
        int end = label(cs), next = label(cs);
        gen_opt(cs, a, next);
        emit(cs, OP_JMP, 0, 0, 0, end, 0);
        cs->depth -= 1;
        place(cs, next);
        gen(cs, b);
        place(cs, end);
        return;
    }
    case T_ANDAND:
    case T_OROR: {
        int end = label(cs);
        bool and = n->op == T_ANDAND;
        gen(cs, a);
        if (cs->d == KEEL_EXPR_CEXL) {
            emit(cs, and ? OP_JF_KEEP : OP_JT_KEEP, 1, 0, 0, end, 0);
            gen(cs, b);
        } else {
            emit(cs, and ? OP_JF_ONLY : OP_JT_ONLY, 0, 0, 0, end, 0);
            gen(cs, b);
            emit(cs, and ? OP_AND_CEL : OP_OR_CEL, 2, 1, 0, 0, 0);
        }
        place(cs, end);
        return;
    }
    case T_IN:
        gen(cs, a);
        if (b->kind == N_LIST && b->fn != 1) {
            for (int i = 0; i < b->nkids; i++)
                gen(cs, b->kids[i]);
            emit(cs, OP_IN_LIST, b->nkids + 1, 1, 0, b->nkids, 0);
        } else {
            gen(cs, b);
            emit(cs, cs->d == KEEL_EXPR_CEL ? OP_IN : OP_IN_MAP, 2, 1, 0, 0, 0);
        }
        return;
    case T_EQ:
        if (a->kind == N_ATTR && b->kind == N_CONST && a->type == b->type &&
            (a->type == KEEL_VALUE_STRING || a->type == KEEL_VALUE_INT64 || a->type == KEEL_VALUE_BOOL)) {
            emit(cs, OP_EQ_ATTR_CONST, 0, 1, a->attr, 0, add_const(cs, &b->val));
            return;
        }
        break;
    default:
        break;
    }
    gen(cs, a);
    gen(cs, b);
    enum op op;
    switch (n->op) {
    case T_EQ: op = OP_EQ; break;
    case T_NE: op = OP_NE; break;
    case T_LT: op = OP_LT; break;
    case T_LE: op = OP_LE; break;
    case T_GT: op = OP_GT; break;
    case T_GE: op = OP_GE; break;
    case T_PLUS: op = cs->d == KEEL_EXPR_CEXL ? OP_ADD_WRAP : OP_ADD; break;
    case T_MINUS: op = OP_SUB; break;
    case T_STAR: op = OP_MUL; break;
    case T_SLASH: op = OP_DIV; break;
    default: op = OP_MOD; break;
    }
    emit(cs, op, 2, 1, 0, 0, 0);
}

struct keel_expr *keel_expr_compile(const char *src, size_t len, enum keel_expr_dialect d,
                                    struct keel_expr_error *err)
{
    return expr_compile_bound(src, len, d, NULL, 0, false, err);
}

struct keel_expr *expr_compile_bound(const char *src, size_t len, enum keel_expr_dialect d,
                                     const struct expr_binding *b, int nb, bool unchecked,
                                     struct keel_expr_error *err)
{
    struct keel_expr_error dummy;
    if (!err)
        err = &dummy;
    err->col = 0;
    err->msg[0] = 0;
    struct pool pool = { 0 };
    struct node *root;
    if (expr_parse(src, len, d, &pool, &root, err) < 0) {
        pool_free(&pool);
        return NULL;
    }
    struct keel_expr *e = keel_calloc(1, sizeof(*e));
    e->dialect = d;
    struct cstate cs = { .e = e, .d = d, .pool = &pool, .err = err, .bind = b, .nbind = nb, .unchecked = unchecked };
    if (check(&cs, root) == 0) {
        gen(&cs, root);
        if (cs.maxdepth > KEEL_EXPR_MAX_STACK)
            cfail(&cs, 1, "expression too complex (needs %d stack slots, limit %d)", cs.maxdepth,
                  KEEL_EXPR_MAX_STACK);
    }
    if (cs.failed) {
        free(cs.code);
        free(cs.labels);
        pool_free(&pool);
        keel_expr_free(e);
        return NULL;
    }
    fix_labels(&cs);
    e->code = cs.code;
    e->ncode = cs.n;
    e->type = root->type;
    free(cs.labels);
    pool_free(&pool);
    return e;
}

enum keel_value_type keel_expr_result_type(const struct keel_expr *e) { return e->type; }

void keel_expr_free(struct keel_expr *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nres; i++)
        regfree(&e->res[i]);
    for (size_t i = 0; i < e->nstrs; i++)
        free(e->strs[i]);
    free(e->res);
    free(e->strs);
    free(e->consts);
    free(e->code);
    free(e);
}

void keel_expr_disasm(const struct keel_expr *e, struct keel_buf *out)
{
    static const char *const names[OP__COUNT] = {
#define X(name, text) text,
#include "expr/op.def"
#undef X
    };
    for (size_t i = 0; i < e->ncode; i++) {
        const struct insn *in = &e->code[i];
        keel_buf_printf(out, "%3zu %-14s", i, names[in->op]);
        switch (in->op) {
        case OP_CONST:
            keel_value_format_json(&e->consts[in->a], out);
            break;
        case OP_LOAD: case OP_HAS:
            keel_buf_printf(out, "%s", keel_attr_name(in->attr));
            break;
        case OP_LOAD_OPT:
            keel_buf_printf(out, "%s else ->%d", keel_attr_name(in->attr), in->a);
            break;
        case OP_MAPGET: case OP_HAS_KEY: case OP_EQ_ATTR_CONST:
            keel_buf_printf(out, "%s ", keel_attr_name(in->attr));
            keel_value_format_json(&e->consts[in->b], out);
            break;
        case OP_MAPGET_OPT:
            keel_buf_printf(out, "%s ", keel_attr_name(in->attr));
            keel_value_format_json(&e->consts[in->b], out);
            keel_buf_printf(out, " else ->%d", in->a);
            break;
        case OP_CALL:
            keel_buf_printf(out, "%s/%d", keel_expr_fns[in->a].name, keel_expr_fns[in->a].nargs);
            break;
        case OP_BRANCH:
            keel_buf_printf(out, "else ->%d end ->%d", in->a, in->b);
            break;
        case OP_INDEX_OPT: case OP_JMP: case OP_JF_KEEP: case OP_JT_KEEP: case OP_JF_ONLY: case OP_JT_ONLY:
            keel_buf_printf(out, "->%d", in->a);
            break;
        case OP_IN_LIST: case OP_REGEX:
            keel_buf_printf(out, "%d", in->a);
            break;
        default:
            break;
        }
        keel_buf_append(out, "\n", 1);
    }
}
