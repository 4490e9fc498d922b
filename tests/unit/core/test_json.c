/* The one JSON string escaper (core/json.c): every edge of its rule set, and the property
 * that whatever bytes go in, the output is a valid JSON string in valid UTF-8. */
#include "core/json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#define R "\xef\xbf\xbd" /* U+FFFD */

static char out_s[4096];

/* escape in[0..n) as a quoted JSON string */
static const char *esc(const char *in, size_t n)
{
    struct keel_buf b = { 0 };
    keel_json_str_n(&b, in, n);
    assert_true(keel_buf_len(&b) < sizeof(out_s));
    memcpy(out_s, keel_buf_rptr(&b), keel_buf_len(&b));
    out_s[keel_buf_len(&b)] = '\0';
    keel_buf_release(&b);
    return out_s;
}

#define ESC(lit) esc(lit, sizeof(lit) - 1)

static void plain_and_specials(void **state)
{
    assert_string_equal(ESC(""), "\"\"");
    assert_string_equal(ESC("hello, world / 123"), "\"hello, world / 123\"");
    assert_string_equal(ESC("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_string_equal(ESC("\n\r\t\b\f"), "\"\\n\\r\\t\\b\\f\"");
    /* a long clean run, then a special past the 8-byte fast path */
    assert_string_equal(ESC("0123456789abcdef\"x"), "\"0123456789abcdef\\\"x\"");
    struct keel_buf b = { 0 };
    keel_json_str(&b, NULL); /* NULL is "" */
    assert_int_equal(keel_buf_len(&b), 2);
    assert_memory_equal(keel_buf_rptr(&b), "\"\"", 2);
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

static void c0_del_c1(void **state)
{
    assert_string_equal(esc("\x00\x01\x1f", 3), "\"\\u0000\\u0001\\u001f\"");
    assert_string_equal(ESC("\x7f"), "\"\\u007f\"");
    /* C1 controls, valid UTF-8 (C2 80..C2 9F), escaped: CSI 0x9b drives terminals */
    assert_string_equal(ESC("\xc2\x80|\xc2\x9b|\xc2\x9f"), "\"\\u0080|\\u009b|\\u009f\"");
    /* U+00A0 is not a control: kept */
    assert_string_equal(ESC("\xc2\xa0"), "\"\xc2\xa0\"");
    /* bare C1 bytes are not UTF-8 */
    assert_string_equal(ESC("\x80\x9b"), "\"" R R "\"");
    keel_buf_pool_drain();
}

static void valid_utf8_kept(void **state)
{
    assert_string_equal(ESC("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    /* the boundaries: U+07FF, U+0800, U+FFFF, U+10000, U+10FFFF (F4 8F BF BF) */
    assert_string_equal(ESC("\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf"),
                        "\"\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"");
    /* U+D7FF and U+E000 surround the surrogates and are valid */
    assert_string_equal(ESC("\xed\x9f\xbf\xee\x80\x80"), "\"\xed\x9f\xbf\xee\x80\x80\"");
    keel_buf_pool_drain();
}

static void invalid_utf8_replaced(void **state)
{
    /* overlong encodings: C0/C1 leads never valid; E0 80..9F and F0 80..8F overlong */
    assert_string_equal(ESC("\xc0\xaf"), "\"" R R "\"");
    assert_string_equal(ESC("\xc1\xbf"), "\"" R R "\"");
    assert_string_equal(ESC("\xe0\x80\xaf"), "\"" R R R "\"");
    assert_string_equal(ESC("\xf0\x80\x80\xaf"), "\"" R R R R "\"");
    /* surrogates U+D800 (ED A0 80) and U+DFFF (ED BF BF) */
    assert_string_equal(ESC("\xed\xa0\x80"), "\"" R R R "\"");
    assert_string_equal(ESC("\xed\xbf\xbf"), "\"" R R R "\"");
    /* above U+10FFFF: F4 90 80 80, and F5..FF leads */
    assert_string_equal(ESC("\xf4\x90\x80\x80"), "\"" R R R R "\"");
    assert_string_equal(ESC("\xf5\x80\x80\x80"), "\"" R R R R "\"");
    assert_string_equal(ESC("\xfe\xff"), "\"" R R "\"");
    /* truncated sequences: the maximal valid prefix is one U+FFFD */
    assert_string_equal(ESC("a\xe2\x82"), "\"a" R "\"");
    assert_string_equal(ESC("a\xe2\x82z"), "\"a" R "z\"");
    assert_string_equal(ESC("\xf0\x9f\x98"), "\"" R "\"");
    assert_string_equal(ESC("\xf0\x9f\x98\""), "\"" R "\\\"\"");
    assert_string_equal(ESC("\xc3"), "\"" R "\"");
    assert_string_equal(ESC("\xc3\xc3\xa9"), "\"" R "\xc3\xa9\"");
    /* a lone continuation byte, and one after a complete sequence */
    assert_string_equal(ESC("\xbf"), "\"" R "\"");
    assert_string_equal(ESC("\xc3\xa9\xa9"), "\"\xc3\xa9" R "\"");
    keel_buf_pool_drain();
}

static void utf8_seq_api(void **state)
{
    size_t bad;
    assert_int_equal(keel_utf8_seq((const unsigned char *)"\xf4\x8f\xbf\xbf", 4, &bad), 4);
    assert_int_equal(keel_utf8_seq((const unsigned char *)"\xf4\x90\x80\x80", 4, &bad), 0);
    assert_int_equal(bad, 1);
    assert_int_equal(keel_utf8_seq((const unsigned char *)"\xf0\x9f\x98", 3, &bad), 0);
    assert_int_equal(bad, 3);
    assert_int_equal(keel_utf8_seq((const unsigned char *)"\xe2\x82", 2, &bad), 0);
    assert_int_equal(bad, 2);
}

/* A minimal strict check: a JSON string whose content is valid UTF-8 with no raw control
 * byte, and whose escapes are well formed. */
static bool valid_json_string(const char *s, size_t n)
{
    if (n < 2 || s[0] != '"' || s[n - 1] != '"')
        return false;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 1; i < n - 1;) {
        if (p[i] < 0x20 || p[i] == 0x7f || p[i] == '"')
            return false;
        if (p[i] == '\\') {
            if (i + 1 >= n - 1)
                return false;
            char e = (char)p[i + 1];
            if (e == 'u') {
                if (i + 6 > n - 1)
                    return false;
                i += 6;
            } else if (strchr("\"\\/bfnrt", e) != NULL) {
                i += 2;
            } else {
                return false;
            }
            continue;
        }
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad, l = keel_utf8_seq(p + i, n - 1 - i, &bad);
        if (l == 0)
            return false;
        i += l;
    }
    return true;
}

static void random_bytes_always_valid(void **state)
{
    srand(42);
    unsigned char in[64];
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(rand() % (int)sizeof(in));
        for (size_t i = 0; i < n; i++) /* bias towards the interesting bytes */
            in[i] = (unsigned char)(rand() % 3 == 0 ? 0x80 + rand() % 0x80 : rand() % 256);
        const char *o = esc((const char *)in, n);
        assert_true(valid_json_string(o, strlen(o)));
        assert_true(strlen(o) <= n * KEEL_JSON_ESC_MAX + 2);
    }
    keel_buf_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_and_specials),   cmocka_unit_test(c0_del_c1),
        cmocka_unit_test(valid_utf8_kept),      cmocka_unit_test(invalid_utf8_replaced),
        cmocka_unit_test(utf8_seq_api),         cmocka_unit_test(random_bytes_always_valid),
    };
    return cmocka_run_group_tests_name("core/json", tests, NULL, NULL);
}
