/* cel-spec's conformance cases (tests/simple, core files), converted by
 * scripts/cel-conformance.py into cel_conformance_cases.h: every runnable case is compiled
 * as CEL, evaluated over an empty bag and compared with its expected value by strict
 * (same type) deep equality, or expected to fail (a compile-time or evaluation error both
 * count: CEL implementations report either). Fails when the pass count drops below the
 * recorded figure, so a regression fails CI; prints the pass rate per file. */
#include "expr/expr_int.h"

#include "core/buf.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

enum cel_exp { CEL_EXP_ERROR, CEL_EXP_BOOL, CEL_EXP_INT, CEL_EXP_UINT, CEL_EXP_DOUBLE, CEL_EXP_STRING,
               CEL_EXP_BYTES, CEL_EXP_CEL };

struct cel_case {
    const char *file, *name, *expr;
    size_t exprlen; /* expressions may hold NUL bytes */
    int unchecked;  /* cel-spec's disable_check */
    const char *bind[4][2];
    enum cel_exp kind;
    struct {
        int64_t i;
        uint64_t u;
        double d;
        const char *s;
        size_t slen;
    } v;
    const char *skip;
};

static const struct cel_case cases[] = {
#include "expr/cel_conformance_cases.h"
};

/* Raised only with the failures fixed: the pass count may not fall below it. */
#define CEL_PASS_FLOOR 1087

static struct keel_expr *compile(const struct cel_case *c, struct keel_expr_error *err)
{
    struct expr_binding b[4];
    int nb = 0;
    for (; nb < 4 && c->bind[nb][0]; nb++) {
        b[nb].name = c->bind[nb][0];
        b[nb].src = c->bind[nb][1];
    }
    return expr_compile_bound(c->expr, c->exprlen, KEEL_EXPR_CEL, b, nb, c->unchecked != 0, err);
}

/* Why a case failed, or NULL when it passed. */
static const char *run(const struct cel_case *c, char *why, size_t cap)
{
    struct keel_expr_error err;
    struct keel_expr *e = compile(c, &err);
    if (!e) {
        if (c->kind == CEL_EXP_ERROR)
            return NULL;
        snprintf(why, cap, "compile: col %d: %s", err.col, err.msg);
        return why;
    }
    static struct keel_attr_bag bag;
    struct keel_value v;
    const char *msg = NULL;
    int rc = keel_expr_eval(e, &bag, &v, &msg);
    struct keel_buf got = { 0 };
    if (rc == 0)
        expr_value_repr(&v, &got);
    keel_expr_free(e);
    const char *res = NULL;
    if (c->kind == CEL_EXP_ERROR) {
        if (rc == 0) {
            snprintf(why, cap, "expected an error, got %.*s", (int)keel_buf_len(&got), keel_buf_rptr(&got));
            res = why;
        }
        keel_buf_release(&got);
        return res;
    }
    if (rc != 0) {
        snprintf(why, cap, "error: %s", msg);
        keel_buf_release(&got);
        return why;
    }
    struct keel_value want = { 0 };
    struct keel_buf exp = { 0 };
    switch (c->kind) {
    case CEL_EXP_BOOL: want = keel_value_bool(c->v.i != 0); break;
    case CEL_EXP_INT: want = keel_value_int(c->v.i); break;
    case CEL_EXP_UINT: want.type = KEEL_VALUE_UINT64; want.u.u = c->v.u; break;
    case CEL_EXP_DOUBLE: want.type = KEEL_VALUE_DOUBLE; want.u.d = c->v.d; break;
    case CEL_EXP_STRING: want = keel_value_str(c->v.s, c->v.slen); break;
    case CEL_EXP_BYTES: want = keel_value_str(c->v.s, c->v.slen); want.type = KEEL_VALUE_BYTES; break;
    default: break;
    }
    if (c->kind == CEL_EXP_CEL) {
        struct keel_expr *x = keel_expr_compile(c->v.s, strlen(c->v.s), KEEL_EXPR_CEL, &err);
        if (!x || keel_expr_eval(x, &bag, &want, &msg) != 0) {
            snprintf(why, cap, "expected value %s does not evaluate", c->v.s);
            keel_expr_free(x);
            keel_buf_release(&got);
            return why;
        }
        expr_value_repr(&want, &exp);
        keel_expr_free(x);
    } else {
        expr_value_repr(&want, &exp);
    }
    if (keel_buf_len(&got) != keel_buf_len(&exp) || memcmp(keel_buf_rptr(&got), keel_buf_rptr(&exp), keel_buf_len(&got))) {
        snprintf(why, cap, "got %.*s, expected %.*s", (int)keel_buf_len(&got), keel_buf_rptr(&got), (int)keel_buf_len(&exp), keel_buf_rptr(&exp));
        res = why;
    }
    keel_buf_release(&got);
    keel_buf_release(&exp);
    return res;
}

static void conformance(void **state)
{
    (void)state;
    const char *file = NULL;
    int pass = 0, runnable = 0, fpass = 0, frun = 0, fskip = 0, total_skip = 0;
    bool verbose = getenv("CEL_VERBOSE") != NULL;
    size_t n = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i <= n; i++) {
        if (i == n || (file && strcmp(file, cases[i].file))) {
            printf("cel-spec %-15s %3d/%3d pass (%5.1f%%), %d skipped\n", file, fpass, frun,
                   frun ? 100.0 * fpass / frun : 100.0, fskip);
            fpass = frun = fskip = 0;
        }
        if (i == n)
            break;
        const struct cel_case *c = &cases[i];
        file = c->file;
        if (c->skip) {
            fskip++;
            total_skip++;
            continue;
        }
        frun++;
        runnable++;
        char why[512];
        const char *r = run(c, why, sizeof(why));
        if (!r) {
            fpass++;
            pass++;
        } else if (verbose) {
            printf("FAIL %s/%s: %s\n     %s\n", c->file, c->name, c->expr, r);
        }
    }
    printf("cel-spec total %d/%d runnable cases pass (%.1f%%), %d skipped; floor %d\n", pass, runnable,
           100.0 * pass / runnable, total_skip, CEL_PASS_FLOOR);
    assert_true(pass >= CEL_PASS_FLOOR);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(conformance) };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    keel_expr_thread_fini();
    return rc;
}
