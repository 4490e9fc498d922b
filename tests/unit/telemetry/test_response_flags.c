#include "telemetry/response_flags.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static void none_is_dash(void **state)
{
    char b[64];
    assert_int_equal(keel_rf_format(0, 0, b, sizeof(b)), 1);
    assert_string_equal(b, "-");
    assert_int_equal(keel_rf_format(0, 1, b, sizeof(b)), 1);
    assert_string_equal(b, "-");
}

static void single_short_and_long(void **state)
{
    char b[64];
    assert_int_equal(keel_rf_format(KEEL_RF_UF, 0, b, sizeof(b)), 2);
    assert_string_equal(b, "UF");
    keel_rf_format(KEEL_RF_UF, 1, b, sizeof(b));
    assert_string_equal(b, "UpstreamConnectionFailure");
    keel_rf_format(KEEL_RF_NR, 0, b, sizeof(b));
    assert_string_equal(b, "NR");
    keel_rf_format(KEEL_RF_DO, 0, b, sizeof(b));
    assert_string_equal(b, "DO");
    keel_rf_format(KEEL_RF_LH, 1, b, sizeof(b));
    assert_string_equal(b, "FailedLocalHealthCheck");
}

static void multiple_in_table_order(void **state)
{
    char b[128];
    /* given in any order, printed in the table's order */
    keel_rf_format(KEEL_RF_URX | KEEL_RF_UT, 0, b, sizeof(b));
    assert_string_equal(b, "UT,URX");
    keel_rf_format(KEEL_RF_DC | KEEL_RF_UF | KEEL_RF_LH, 0, b, sizeof(b));
    assert_string_equal(b, "LH,UF,DC");
    keel_rf_format(KEEL_RF_URX | KEEL_RF_UT, 1, b, sizeof(b));
    assert_string_equal(b, "UpstreamRequestTimeout,UpstreamRetryLimitExceeded");
}

static void bit_numbering_matches_cel(void **state)
{
    /* spec §3: bit i in table order, LH = 1 */
    assert_int_equal(KEEL_RF_LH, 1);
    assert_int_equal(KEEL_RF_UH, 2);
    assert_int_equal(KEEL_RF_UT, 4);
    assert_int_equal(KEEL_RF_COUNT, 28);
}

static void all_flags_and_truncation(void **state)
{
    char b[1024];
    uint32_t all = (1u << KEEL_RF_COUNT) - 1;
    size_t n = keel_rf_format(all, 0, b, sizeof(b));
    assert_int_equal(n, strlen(b));
    assert_string_equal(b, "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,NFCF,"
                           "DT,UPE,NC,OM,DF,DO");
    n = keel_rf_format(all, 1, b, sizeof(b));
    assert_true(n < sizeof(b) - 1);
    assert_int_equal(n, strlen(b));
    assert_non_null(strstr(b, ",DropOverLoad"));
    /* bits beyond the table are ignored */
    keel_rf_format(KEEL_RF_UF | (1u << 31), 0, b, sizeof(b));
    assert_string_equal(b, "UF");
    /* truncated at cap, always terminated */
    char small[6];
    n = keel_rf_format(KEEL_RF_UT | KEEL_RF_URX, 0, small, sizeof(small));
    assert_int_equal(n, 5);
    assert_string_equal(small, "UT,UR");
    char one[1];
    assert_int_equal(keel_rf_format(0, 0, one, 1), 0);
    assert_int_equal(one[0], '\0');
    assert_int_equal(keel_rf_format(KEEL_RF_UF, 0, one, 1), 0);
    assert_int_equal(one[0], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(none_is_dash),
        cmocka_unit_test(single_short_and_long),
        cmocka_unit_test(multiple_in_table_order),
        cmocka_unit_test(bit_numbering_matches_cel),
        cmocka_unit_test(all_flags_and_truncation),
    };
    return cmocka_run_group_tests_name("telemetry/response_flags", tests, NULL, NULL);
}
