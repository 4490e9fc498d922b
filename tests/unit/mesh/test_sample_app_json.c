/* The sample app embeds a downstream body as JSON only when it is one complete JSON
 * value, else as a string: both must always yield valid JSON. */
#include "mesh/sample_app_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static bool valid(const char *s) { return sa_json_valid(s, strlen(s)); }

static void test_valid_values(void **state)
{
    const char *ok[] = {
        "{}", "[]", "0", "-0.5e+10", "\"\"", "true", "false", "null", "[[[[[]]]]]",
        " {\"a\" : [1, 2.0, {\"b\": null}], \"c\": \"\\u00e9\\n\\\"\"} \n",
        "\"caf\xc3\xa9\"",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(valid(ok[i]));
}

static void test_invalid_values(void **state)
{
    const char *bad[] = {
        "", " ", "{", "}", "[1,]", "{\"a\"}", "{\"a\":}", "{a:1}", "01", "1.", "-", "1e",
        ".5", "tru", "nul", "\"abc", "\"\\x\"", "\"\\u12\"", "\"a\nb\"", "{} {}", "[1 2]",
        "ok", "Hello version: v1", "{\"a\":1,}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (valid(bad[i]))
            fail_msg("accepted: %s", bad[i]);
    }
    /* NUL inside, and nesting deeper than the limit */
    assert_false(sa_json_valid("\"a\0b\"", 5));
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_false(sa_json_valid(deep, sizeof(deep)));
    assert_true(sa_json_valid(deep + 40, 120));
}

static void test_every_prefix_of_a_document_is_refused(void **state)
{
    const char *doc = "{\"name\":\"a\",\"calls\":[{\"status\":200,\"body\":{\"x\":[1,-2.5e3]}}]}";
    size_t n = strlen(doc);
    assert_true(sa_json_valid(doc, n));
    for (size_t i = 0; i < n; i++)
        assert_false(sa_json_valid(doc, i));
}

static void test_strings_escape_to_valid_json(void **state)
{
    struct keel_buf b = { 0 };
    const char raw[] = "q\"b\\c\x01\n\x7f\xc3\xa9";
    sa_json_strn(&b, raw, sizeof(raw) - 1);
    const char want[] = "\"q\\\"b\\\\c\\u0001\\u000a\x7f\xc3\xa9\"";
    assert_int_equal(keel_buf_len(&b), sizeof(want) - 1);
    assert_memory_equal(keel_buf_rptr(&b), want, sizeof(want) - 1);
    assert_true(sa_json_valid(keel_buf_rptr(&b), keel_buf_len(&b)));
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_values),
        cmocka_unit_test(test_invalid_values),
        cmocka_unit_test(test_every_prefix_of_a_document_is_refused),
        cmocka_unit_test(test_strings_escape_to_valid_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
