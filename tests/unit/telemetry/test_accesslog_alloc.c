/* Rendering a format with %CEL% allocates nothing once warm: string results are slices,
 * other values are printed into a buffer of the thread's pool. malloc/calloc/realloc are
 * counted around the renders (malloc_count.h). */
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

#include "malloc_count.h"

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
    if (malloc_count_works())
        assert_true(malloc_count_probe()); /* the counter counts, so the zero below means something */
    malloc_count_start();
    for (int i = 0; i < 1000; i++) {
        keel_accesslog_render(f, &r, &out);
        out.rpos = out.wpos = 0;
    }
    assert_int_equal(malloc_count_stop(), 0);
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
