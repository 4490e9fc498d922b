/* What the files of expr/ share: tokens, the syntax tree, the bytecode. */
#ifndef KEEL_EXPR_EXPR_INT_H
#define KEEL_EXPR_EXPR_INT_H

#include "expr/expr.h"

#include <regex.h>
#include <stdint.h>

#define KEEL_EXPR_MAX_STACK 64  /* VM value stack; deeper expressions are rejected */
#define KEEL_EXPR_MAX_DEPTH 100 /* parser recursion */
#define KEEL_EXPR_SCRATCH 16384 /* per-thread bytes for built strings */

/* ---- lexer ---- */
enum tok {
    T_EOF, T_IDENT, T_INT, T_UINT, T_FLOAT, T_STRING, T_BYTES, T_RAWSTR,
    T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK, T_LBRACE, T_RBRACE, T_COMMA, T_DOT, T_QUESTION, T_COLON,
    T_OROR, T_ANDAND, T_PIPE, T_AMP, T_CARET, T_ANDNOT, T_SHL, T_SHR,
    T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE,
    T_PLUS, T_MINUS, T_STAR, T_SLASH, T_PERCENT, T_BANG, T_ARROW, T_IN,
};

struct token {
    enum tok t;
    int col;           /* 1-based */
    const char *p;     /* source text of the token */
    size_t len;
    char *sval;        /* decoded string literal (owned by the parser's list) */
    size_t slen;
};

/* ---- tree ---- */
enum node_kind { N_CONST, N_PATH, N_ATTR, N_INDEX, N_CALL, N_BINOP, N_UNOP, N_COND, N_LIST, N_HAS };

struct node {
    enum node_kind kind;
    int col;
    enum tok op;              /* N_BINOP / N_UNOP */
    enum keel_value_type type;  /* set by the checker */
    bool is_const;            /* no attribute in the subtree: foldable */
    bool method;              /* N_CALL: x.f() */
    struct keel_value val;    /* N_CONST */
    int attr;                 /* N_ATTR, N_HAS */
    char *name;               /* N_PATH dotted name, N_CALL function name */
    int fn;                   /* N_CALL: resolved function id, -1 for conditional */
    int nkids;
    struct node **kids;       /* N_CALL: args (target first); N_INDEX: map, key; ... */
};

struct pool {                 /* compile-time allocations, freed together */
    void **v;
    size_t n, cap;
};
void *pool_alloc(struct pool *p, size_t n);
char *pool_strndup(struct pool *p, const char *s, size_t n);
void pool_free(struct pool *p);

int expr_parse(const char *src, size_t len, enum keel_expr_dialect d, struct pool *pool, struct node **out,
               struct keel_expr_error *err);

/* ---- functions ---- */
enum fn_id {
#define X(id, name, dia, form, n, t0, t1, t2, r) FN_##id,
#include "expr/func.def"
#undef X
    FN__COUNT
};
enum { FN_CEXL = 1, FN_CEL = 2, FN_BOTH = 3, FN_FUNC = 1, FN_METHOD = 2, FN_ANY = 3 };
struct fn_desc {
    const char *name;
    unsigned char dialects, form, nargs;
    enum keel_value_type args[3], result;
};
extern const struct fn_desc keel_expr_fns[FN__COUNT];

/* ---- bytecode ---- */
enum op {
#define X(name, text) OP_##name,
#include "expr/op.def"
#undef X
    OP__COUNT
};

struct insn {
    uint8_t op;
    uint8_t n;      /* operands popped, error-propagated generically before dispatch */
    uint16_t attr;
    int32_t a;
    int32_t b;
};

struct keel_expr {
    enum keel_expr_dialect dialect;
    enum keel_value_type type;
    struct insn *code;
    size_t ncode, capcode;
    struct keel_value *consts;
    size_t nconsts, capconsts;
    regex_t *res;
    size_t nres;
    char **strs;    /* owned bytes behind constant strings/maps */
    size_t nstrs;
};

/* Run code[start, end) with the stack empty; returns the top value (ERROR on failure). */
void expr_vm_run(const struct keel_expr *e, size_t start, size_t end, const struct keel_attr_bag *bag,
                 struct keel_value *out);
/* Compile an RE2-ish pattern with POSIX ERE (translating \d \w \s and (?i)). 0 or -1. */
int expr_regcomp(regex_t *re, const char *p, size_t len);

#endif
