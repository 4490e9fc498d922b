/* Table-driven tests of the expression languages: every row of cases.h is compiled,
 * evaluated over its attributes and compared with the expected JSON or error. */
#include "expr/expr.h"

#include "core/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "expr/cases.h"

struct test_bag {
    struct keel_attr_bag bag;
    struct keel_str_pair kv[8];
    size_t nkv;
};

/* NAME=VALUE, NAME[KEY]=VALUE (entries of one map must be adjacent), NAME= for an empty map */
static void fill(struct test_bag *tb, const char *const *attrs)
{
    keel_attr_bag_clear(&tb->bag);
    tb->nkv = 0;
    for (; *attrs; attrs++) {
        const char *a = *attrs, *eq = strchr(a, '='), *br = strchr(a, '[');
        assert_non_null(eq);
        if (br && br < eq) {
            const char *close = strstr(br, "]=");
            int id = keel_attr_lookup(a, (size_t)(br - a));
            assert_true(id >= 0);
            const struct keel_value *old = keel_attr_bag_get(&tb->bag, id);
            struct keel_str_pair *start = old ? (struct keel_str_pair *)old->u.map.kv : &tb->kv[tb->nkv];
            size_t n = old ? old->u.map.n : 0;
            tb->kv[tb->nkv].k = (struct keel_str){ br + 1, (size_t)(close - br - 1) };
            tb->kv[tb->nkv].v = keel_str_c(close + 2);
            tb->nkv++;
            struct keel_value mv = keel_value_map(start, n + 1);
            keel_attr_bag_set(&tb->bag, id, &mv);
            continue;
        }
        int id = keel_attr_lookup(a, (size_t)(eq - a));
        assert_true(id >= 0);
        struct keel_value v;
        if (keel_attr_type(id) == KEEL_VALUE_STRING_MAP)
            v = keel_value_map(NULL, 0);
        else
            assert_int_equal(keel_value_parse(keel_attr_type(id), eq + 1, strlen(eq + 1), &v), 0);
        keel_attr_bag_set(&tb->bag, id, &v);
    }
}

static void run_case(void **state)
{
    const struct expr_case *c = *state;
    struct keel_expr_error err;
    struct keel_expr *e = keel_expr_compile(c->src, strlen(c->src), c->d, &err);
    if (!strncmp(c->want, "CFG:", 4)) {
        if (e) {
            fprintf(stderr, "expected a compile error for: %s\n", c->src);
            keel_expr_free(e);
            fail();
        }
        if (!strstr(err.msg, c->want + 4)) {
            fprintf(stderr, "compile error 'col %d: %s' lacks '%s'\n", err.col, err.msg, c->want + 4);
            fail();
        }
        assert_true(err.col >= 1 && (size_t)err.col <= strlen(c->src) + 1);
        return;
    }
    if (!e) {
        fprintf(stderr, "unexpected compile error: col %d: %s\n", err.col, err.msg);
        fail();
    }
    struct test_bag tb;
    fill(&tb, c->attrs);
    struct keel_value v;
    const char *msg = NULL;
    int rc = keel_expr_eval(e, &tb.bag, &v, &msg);
    if (!strncmp(c->want, "ERR:", 4)) {
        if (rc == 0) {
            fprintf(stderr, "expected an evaluation error\n");
            keel_expr_free(e);
            fail();
        }
        if (!strstr(msg, c->want + 4)) {
            fprintf(stderr, "evaluation error '%s' lacks '%s'\n", msg, c->want + 4);
            keel_expr_free(e);
            fail();
        }
        keel_expr_free(e);
        return;
    }
    if (rc != 0) {
        fprintf(stderr, "unexpected evaluation error: %s\n", msg);
        keel_expr_free(e);
        fail();
    }
    assert_int_equal(v.type, keel_expr_result_type(e));
    struct keel_buf b = { 0 };
    keel_value_format_json(&v, &b);
    keel_buf_append(&b, "", 1);
    if (strcmp(keel_buf_rptr(&b), c->want)) {
        fprintf(stderr, "got %s, want %s\n", keel_buf_rptr(&b), c->want);
        keel_buf_release(&b);
        keel_expr_free(e);
        fail();
    }
    keel_buf_release(&b);
    keel_expr_free(e);
}

/* Evaluation is repeatable and the compiled program is shareable: evaluate twice. */
static void eval_twice(void **state)
{
    const char *src = "source.labels[\"app\"] | source.workload.name | \"unknown\"";
    struct keel_expr *e = keel_expr_compile(src, strlen(src), KEEL_EXPR_CEXL, NULL);
    assert_non_null(e);
    struct keel_attr_bag bag;
    keel_attr_bag_clear(&bag);
    struct keel_value v;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(keel_expr_eval(e, &bag, &v, NULL), 0);
        assert_int_equal(v.u.s.len, 7);
    }
    keel_expr_free(e);
}

int main(void)
{
    size_t n = sizeof(cases) / sizeof(cases[0]);
    struct CMUnitTest *tests = calloc(n + 1, sizeof(*tests));
    for (size_t i = 0; i < n; i++) {
        tests[i].name = cases[i].src[0] ? cases[i].src : "(empty)";
        tests[i].test_func = run_case;
        tests[i].initial_state = (void *)&cases[i];
    }
    tests[n] = (struct CMUnitTest){ .name = "eval_twice", .test_func = eval_twice };
    int rc = _cmocka_run_group_tests("expr/cases", tests, n + 1, NULL, NULL);
    free(tests);
    keel_buf_pool_drain();
    return rc;
}
