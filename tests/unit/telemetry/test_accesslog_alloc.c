/* Rendering a format with %CEL% allocates nothing once warm: string results are slices,
 * other values are printed into a buffer of the thread's pool. malloc/calloc/realloc are
 * counted by interposing them (forwarding to glibc's) around the renders. */
#include "telemetry/accesslog.h"

#include "al_fixtures.h"
#include "attr/attr.h"
#include "core/buf.h"
#include "expr/expr.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__)
#define KEEL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define KEEL_SANITIZED 1
#endif
#endif

static long nalloc;
static int counting;

#ifndef KEEL_SANITIZED
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
void *malloc(size_t n)
{
    nalloc += counting;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    nalloc += counting;
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    nalloc += counting;
    return __libc_realloc(p, n);
}
#endif

static const struct keel_str_pair headers[] = { { S("x-user"), S("bob") }, { S("host"), S("web") } };

static void warm_cel_render_does_not_allocate(void **state)
{
    (void)state;
    struct keel_attr_bag bag;
    keel_attr_bag_clear(&bag);
    struct keel_value v = keel_value_map(headers, 2);
    keel_attr_bag_set(&bag, KEEL_ATTR_REQUEST_HEADERS, &v);
    v = keel_value_int(503);
    keel_attr_bag_set(&bag, KEEL_ATTR_RESPONSE_CODE, &v);
    struct keel_access_record r = fx_418();
    r.bag = &bag;
    char err[256];
    struct keel_accesslog_format *f = keel_accesslog_compile(
        "%CEL(request.headers['x-user'])% %CEL(response.code >= 400)% %CEL(response.code)% "
        "%CEL(request.headers)% %CEL([1, 'a'])% %CEL(request.headers['no'])% %RESPONSE_CODE%\n",
        KEEL_ACCESSLOG_TEXT, err, sizeof(err));
    if (f == NULL)
        fail_msg("%s", err);
    struct keel_buf out = { 0 };
    keel_accesslog_render(f, &r, &out); /* warm: the pool's buffer, the evaluator's arena */
    out.rpos = out.wpos = 0;
    nalloc = 0;
    counting = 1;
    for (int i = 0; i < 1000; i++) {
        keel_accesslog_render(f, &r, &out);
        out.rpos = out.wpos = 0;
    }
    counting = 0;
    assert_int_equal(nalloc, 0);
    keel_accesslog_render(f, &r, &out);
    assert_memory_equal(keel_buf_rptr(&out), "bob true 503 {", 14);
    keel_buf_release(&out);
    keel_accesslog_format_free(f);
    keel_expr_thread_fini();
    keel_buf_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(warm_cel_render_does_not_allocate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
