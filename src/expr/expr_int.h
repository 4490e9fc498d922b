/* What the files of expr/ share: tokens, the syntax tree, the bytecode. */
#ifndef KEEL_EXPR_EXPR_INT_H
#define KEEL_EXPR_EXPR_INT_H

#include "expr/expr.h"

#include <regex.h>
#include <stdint.h>

#define KEEL_EXPR_MAX_STACK 64  /* VM value stack; deeper expressions are rejected */
#define KEEL_EXPR_MAX_DEPTH 100 /* parser recursion */
#define KEEL_EXPR_SCRATCH 16384 /* per-thread bytes for built strings */
#define KEEL_EXPR_MAX_LOCALS 8  /* nested comprehension variables (CEL macros) */
#define KEEL_EXPR_ARENA_CHUNKS 10 /* per-thread list/map arena: 4 KiB << i, 4 MiB in all */

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
    bool quoted;       /* CEL `quoted` field name */
    char *sval;        /* decoded string literal (owned by the parser's list) */
    size_t slen;
};

/* ---- tree ---- */
enum node_kind {
    N_CONST, N_PATH, N_ATTR, N_INDEX, N_CALL, N_BINOP, N_UNOP, N_COND, N_LIST, N_HAS,
    N_MAP,    /* CEL {k: v, ...}: kids are k0, v0, k1, v1, ... */
    N_SELECT, /* CEL e.name on a value (not an attribute name): kids[0] = e */
    N_COMPR,  /* CEL macro e.all(x, p) ...: kids[0] range, then the body expressions */
    N_LOCAL,  /* CEL comprehension variable: slot */
    N_TYPEOF, /* CEL type(e) */
    N_FAIL,   /* unchecked CEL: an undeclared name or function, an error when evaluated */
};

/* CEL macros (N_COMPR.fn) */
enum macro { M_ALL, M_EXISTS, M_EXISTS_ONE, M_MAP, M_MAP3, M_FILTER };

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
    int fn;                   /* N_CALL: resolved function id, -1 for conditional; N_COMPR: macro */
    int slot;                 /* N_LOCAL, N_COMPR: comprehension variable slot */
    bool test_only;           /* N_SELECT inside has() */
    bool dyncall;             /* N_CALL / N_INDEX: operand types known only at run time */
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

/* Compile with named bindings: each name stands for the CEL expression src (NULL: declared
 * but unbound, an evaluation error), used by the conformance tests for their variables.
 * unchecked: CEL without its type checker (cel-spec's disable_check): undeclared names
 * and functions and operand type mismatches become evaluation errors. */
struct expr_binding {
    const char *name, *src;
};
struct keel_expr *expr_compile_bound(const char *src, size_t len, enum keel_expr_dialect d,
                                     const struct expr_binding *b, int nb, bool unchecked,
                                     struct keel_expr_error *err);
/* A typed, deterministic rendering of a value (1, 1u, 1.0, "s", b"s", [..], {..}, int, null)
 * for tests: two values render the same iff they are strictly (same type) equal. */
void expr_value_repr(const struct keel_value *v, struct keel_buf *out);
/* The CEL type value of v (TYPE values hold the enum keel_value_type they denote). */
enum keel_value_type expr_type_of(const struct keel_value *v);

/* ---- CEL run-time semantics (cel.c) ---- */
void expr_arena_reset(void);
void *expr_arena_alloc(size_t n); /* NULL when the evaluation used the whole arena */
bool expr_equal(const struct keel_value *a, const struct keel_value *b);
/* -1, 0, 1; 2 when unordered (NaN); 3 when the types have no ordering */
int expr_compare(const struct keel_value *a, const struct keel_value *b);
const struct keel_value *expr_map_find(const struct keel_value *m, const struct keel_value *k);
const char *expr_type_name(enum keel_value_type t);
enum { EXPR_TF_YEAR, EXPR_TF_MONTH, EXPR_TF_DAY_OF_YEAR, EXPR_TF_DAY_OF_MONTH, EXPR_TF_DATE, EXPR_TF_DAY_OF_WEEK,
       EXPR_TF_HOURS, EXPR_TF_MINUTES, EXPR_TF_SECONDS, EXPR_TF_MILLIS };
int expr_time_field(int field, struct keel_time t, const struct keel_str *tz, int64_t *out);
int expr_ts_check(struct keel_time t);
int expr_ts_add(struct keel_time t, int64_t ns, bool sub, struct keel_time *out);
int expr_ts_diff(struct keel_time a, struct keel_time b, int64_t *ns);
size_t expr_fmt_cel_duration(int64_t ns, char *dst, size_t cap);
size_t expr_fmt_cel_timestamp(struct keel_time t, char *dst, size_t cap);

/* Run code[start, end) with the stack empty; returns the top value (ERROR on failure). */
void expr_vm_run(const struct keel_expr *e, size_t start, size_t end, const struct keel_attr_bag *bag,
                 struct keel_value *out);
/* Compile an RE2-ish pattern with POSIX ERE (translating \d \w \s and (?i)). 0 or -1. */
int expr_regcomp(regex_t *re, const char *p, size_t len);

#endif
