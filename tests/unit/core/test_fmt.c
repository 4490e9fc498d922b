#include "core/fmt.h"

#include "core/rand.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

/* The SWAR hex writer agrees with printf's %016llx, every nibble value in every place. */
static void hex16_matches_printf(void **state)
{
    (void)state;
    for (int round = 0; round < 20000; round++) {
        uint64_t v = round < 16 ? 0x1111111111111111ull * (uint64_t)round : keel_rand64();
        char want[17], got[16];
        snprintf(want, sizeof(want), "%016llx", (unsigned long long)v);
        keel_fmt_hex16(v, got);
        assert_memory_equal(got, want, 16);
    }
}

/* RFC 4122 version 4 form: 8-4-4-4-12 lower-case hex, version nibble 4, variant 10xx;
 * the other 122 bits vary. */
static void uuid4_form(void **state)
{
    (void)state;
    unsigned seen_or[36] = { 0 }, seen_and[36];
    memset(seen_and, 0xff, sizeof(seen_and));
    for (int round = 0; round < 2000; round++) {
        char u[36];
        keel_uuid4(u);
        for (int i = 0; i < 36; i++) {
            if (i == 8 || i == 13 || i == 18 || i == 23) {
                assert_int_equal(u[i], '-');
                continue;
            }
            assert_true((u[i] >= '0' && u[i] <= '9') || (u[i] >= 'a' && u[i] <= 'f'));
            unsigned d = (unsigned)(u[i] <= '9' ? u[i] - '0' : u[i] - 'a' + 10);
            seen_or[i] |= d;
            seen_and[i] &= d;
        }
        assert_int_equal(u[14], '4');
        assert_true(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    }
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23 || i == 14)
            continue;
        /* every random bit took both values over 2,000 ids */
        assert_int_equal(seen_or[i], i == 19 ? 0xbu : 0xfu);
        assert_int_equal(seen_and[i], i == 19 ? 0x8u : 0u);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hex16_matches_printf),
        cmocka_unit_test(uuid4_form),
    };
    return cmocka_run_group_tests_name("core/fmt", tests, NULL, NULL);
}
