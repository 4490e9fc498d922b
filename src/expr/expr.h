/* The expression languages: Mixer's CEXL and the CEL subset of Istio's newer resources,
 * one lexer/parser, a type checker against the attribute vocabulary, a compiler to
 * bytecode and an allocation-free VM. Reference: docs/EXPRESSIONS.md. */
#ifndef KEEL_EXPR_EXPR_H
#define KEEL_EXPR_EXPR_H

#include "attr/attr.h"

#include <stddef.h>

enum keel_expr_dialect { KEEL_EXPR_CEXL, KEEL_EXPR_CEL };

struct keel_expr_error {
    int col; /* 1-based column (byte) in the source */
    char msg[256];
};

/* Compiled bytecode: immutable after compile, shareable across threads. */
struct keel_expr;

/* NULL on a parse or type error, with err filled (err may be NULL). */
struct keel_expr *keel_expr_compile(const char *src, size_t len, enum keel_expr_dialect d,
                                    struct keel_expr_error *err);
enum keel_value_type keel_expr_result_type(const struct keel_expr *e);
/* 0 with *out set, or negative on an evaluation error (e.g. missing attribute) with a
 * message in *errmsg (valid until the next evaluation on this thread) if errmsg != NULL.
 * String slices in *out point into the bag, the expression's constants, or a per-thread
 * scratch area (results of +, toLower, string(), ...) valid until the next evaluation
 * on the same thread; CEL lists and maps built by the expression live in a per-thread
 * arena, reset at each evaluation and kept between them (keel_expr_thread_fini frees it).
 * Allocates nothing, except glibc regexec inside matches() and the arena's chunks the
 * first time a thread builds that much; never crashes on any bag. */
int keel_expr_eval(const struct keel_expr *e, const struct keel_attr_bag *bag, struct keel_value *out,
                   const char **errmsg);
void keel_expr_free(struct keel_expr *e);
/* Free the calling thread's arena for CEL lists and maps built during evaluations (kept
 * between evaluations so that warm evaluations allocate nothing); call at thread exit. */
void keel_expr_thread_fini(void);
/* Human-readable bytecode listing (for keel eval --disasm and tests). */
void keel_expr_disasm(const struct keel_expr *e, struct keel_buf *out);
/* Compile an RE2-syntax pattern with POSIX regcomp (REG_EXTENDED | REG_NOSUB), refusing
 * what RE2 refuses, as matches() does. re is a regex_t *; 0 or -1. */
int keel_expr_regcomp(void *re, const char *pattern, size_t len);

#endif
