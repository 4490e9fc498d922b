#include "core/str.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>
#include <cmocka.h>

/* The word-at-a-time compare agrees with strncasecmp (C locale) at every length and for
 * every pair of bytes 1..127 at every position class: the edges of A-Z and a-z included. */
static void ascii_caseeq_matches_strncasecmp(void **state)
{
    (void)state;
    char a[40], b[40];
    srand(7);
    for (size_t n = 0; n <= sizeof(a); n++) {
        for (int round = 0; round < 2000; round++) {
            for (size_t i = 0; i < n; i++) {
                a[i] = (char)(1 + rand() % 127);
                /* mostly the same letter in either case, sometimes anything */
                int r = rand() % 4;
                b[i] = r == 0 ? (char)(1 + rand() % 127)
                       : r == 1 && a[i] >= 'a' && a[i] <= 'z' ? (char)(a[i] - 32)
                       : r == 2 && a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32)
                                                              : a[i];
            }
            assert_int_equal(keel_ascii_caseeq(a, b, n), strncasecmp(a, b, n) == 0);
        }
    }
    /* the characters next to the letter ranges are not letters */
    const char *edges = "@[`{";
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            char x[9] = "aaaaaaaa", y[9] = "aaaaaaaa";
            x[3] = edges[i];
            y[3] = edges[j];
            assert_int_equal(keel_ascii_caseeq(x, y, 8), i == j);
        }
    assert_true(keel_ascii_caseeq("Content-Length", "content-length", 14));
    assert_false(keel_ascii_caseeq("Content-Lengtx", "content-length", 14));
    assert_true(keel_str_caseeq(KEEL_STR("X-B3-TraceId"), KEEL_STR("x-b3-traceid")));
}

static void ascii_lower8_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        uint64_t x = 0x0101010101010101ull * (uint64_t)c;
        uint64_t want = 0x0101010101010101ull * (uint64_t)(unsigned char)keel_ascii_lower((char)c);
        assert_int_equal(keel_ascii_lower8(x), want);
    }
}

static void copy_every_length(void **state)
{
    (void)state;
    char src[64], dst[80];
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (char)('a' + i % 26);
    for (size_t n = 0; n <= sizeof(src); n++) {
        memset(dst, '#', sizeof(dst));
        keel_copy(dst + 1, src, n);
        assert_int_equal(dst[0], '#');
        assert_memory_equal(dst + 1, src, n);
        assert_int_equal(dst[1 + n], '#'); /* nothing written past n */
    }
}

static void lower_copy_every_length(void **state)
{
    (void)state;
    char src[64], dst[80];
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (char)("AbC-zZ@[`{09xY"[i % 14]);
    for (size_t n = 0; n <= sizeof(src); n++) {
        memset(dst, '#', sizeof(dst));
        keel_ascii_lower_copy(dst + 1, src, n);
        assert_int_equal(dst[0], '#');
        for (size_t i = 0; i < n; i++)
            assert_int_equal(dst[1 + i], keel_ascii_lower(src[i]));
        assert_int_equal(dst[1 + n], '#');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ascii_caseeq_matches_strncasecmp),
        cmocka_unit_test(ascii_lower8_bytes),
        cmocka_unit_test(copy_every_length),
        cmocka_unit_test(lower_copy_every_length),
    };
    return cmocka_run_group_tests_name("core/str", tests, NULL, NULL);
}
