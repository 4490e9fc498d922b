/* The vocabulary, the bag, and the text forms of values (attributes.md §2). */
#include "attr/attr.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static void vocabulary(void **state)
{
    int id = keel_attr_lookup("source.labels", 13);
    assert_int_equal(id, KEEL_ATTR_SOURCE_LABELS);
    assert_string_equal(keel_attr_name(id), "source.labels");
    assert_int_equal(keel_attr_type(id), KEEL_VALUE_STRING_MAP);
    assert_int_equal(keel_attr_type(KEEL_ATTR_RESPONSE_CODE), KEEL_VALUE_INT64);
    assert_int_equal(keel_attr_type(KEEL_ATTR_RESPONSE_DURATION), KEEL_VALUE_DURATION);
    assert_int_equal(keel_attr_type(KEEL_ATTR_FILTER_STATE), KEEL_VALUE_STRING_MAP);
    assert_int_equal(keel_attr_lookup("source.lables", 13), -1);
    assert_string_equal(keel_attr_suggest("source.lables", 13), "source.labels");
    assert_null(keel_attr_suggest("zzzzzzzzzz", 10));
    for (int i = 0; i < KEEL_ATTR__COUNT; i++) /* names are unique */
        assert_int_equal(keel_attr_lookup(keel_attr_name(i), strlen(keel_attr_name(i))), i);
}

static void bag(void **state)
{
    struct keel_attr_bag b;
    keel_attr_bag_clear(&b);
    assert_null(keel_attr_bag_get(&b, KEEL_ATTR_REQUEST_HOST));
    struct keel_value v = keel_value_str("h", 1);
    keel_attr_bag_set(&b, KEEL_ATTR_REQUEST_HOST, &v);
    assert_non_null(keel_attr_bag_get(&b, KEEL_ATTR_REQUEST_HOST));
    keel_attr_bag_del(&b, KEEL_ATTR_REQUEST_HOST);
    assert_null(keel_attr_bag_get(&b, KEEL_ATTR_REQUEST_HOST));
}

static void check_fmt(const struct keel_value *v, const char *want, bool json)
{
    struct keel_buf b = { 0 };
    if (json)
        keel_value_format_json(v, &b);
    else
        keel_value_format(v, &b);
    keel_buf_append(&b, "", 1);
    assert_string_equal(keel_buf_rptr(&b), want);
    keel_buf_release(&b);
}

static void durations(void **state)
{
    static const struct { const char *in; int64_t ns; const char *out; } t[] = {
        { "0", 0, "0s" }, { "1500000ns", 1500000, "1.5ms" }, { "90s", 90000000000, "1m30s" },
        { "3600s", 3600000000000, "1h0m0s" }, { "157.830203ms", 157830203, "157.830203ms" },
        { "6.848ms", 6848000, "6.848ms" }, { "250us", 250000, "250\xc2\xb5s" }, { "250\xc2\xb5s", 250000, "250\xc2\xb5s" },
        { "1h2m3s", 3723000000000, "1h2m3s" }, { "-2s", -2000000000, "-2s" }, { "1.5h", 5400000000000, "1h30m0s" },
        { "12.5ms", 12500000, "12.5ms" }, { "999ns", 999, "999ns" }, { "+1s", 1000000000, "1s" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int64_t ns;
        assert_int_equal(keel_value_parse_duration(t[i].in, strlen(t[i].in), &ns), 0);
        assert_int_equal(ns, t[i].ns);
        struct keel_value v = keel_value_duration(ns);
        check_fmt(&v, t[i].out, false);
    }
    static const char *bad[] = { "", "1", "s", "1x", " 1s", "1s ", "10 ms", "-", ".s", "99999999999h" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ns;
        assert_int_not_equal(keel_value_parse_duration(bad[i], strlen(bad[i]), &ns), 0);
    }
}

static void timestamps(void **state)
{
    struct keel_value v = { .type = KEEL_VALUE_TIMESTAMP };
    const char *s = "2018-12-28T11:53:10.082342Z";
    assert_int_equal(keel_value_parse_timestamp(s, strlen(s), &v.u.t), 0);
    check_fmt(&v, "2018-12-28T11:53:10.082342Z", false);
    check_fmt(&v, "\"2018-12-28T11:53:10.082342Z\"", true);
    s = "2017-08-21T10:04:00Z";
    assert_int_equal(keel_value_parse_timestamp(s, strlen(s), &v.u.t), 0);
    check_fmt(&v, "2017-08-21T10:04:00.000000Z", false);
    s = "2020-02-29T00:00:00-08:00";
    assert_int_equal(keel_value_parse_timestamp(s, strlen(s), &v.u.t), 0);
    check_fmt(&v, "2020-02-29T08:00:00.000000Z", false);
    v.u.t.sec = -62135596800; /* zero time */
    v.u.t.nsec = 0;
    check_fmt(&v, "0001-01-01T00:00:00.000000Z", false);
    s = "1969-12-31T23:59:59.5Z";
    assert_int_equal(keel_value_parse_timestamp(s, strlen(s), &v.u.t), 0);
    assert_int_equal(v.u.t.sec, -1);
    check_fmt(&v, "1969-12-31T23:59:59.500000Z", false);
    static const char *bad[] = { "2020-13-01T00:00:00Z", "2019-02-29T00:00:00Z", "2020-01-01 00:00:00Z",
                                 "2020-01-01T00:00:00", "2020-01-01T24:00:00Z", "2020-01-01T00:00:00.Z" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_not_equal(keel_value_parse_timestamp(bad[i], strlen(bad[i]), &v.u.t), 0);
}

static void doubles_ints_ips(void **state)
{
    static const struct { double d; const char *out; } t[] = {
        { 1.5, "1.5" }, { 0.001, "0.001" }, { 1e21, "1000000000000000000000" }, { 0, "0" }, { -2.25, "-2.25" },
        { 0.1, "0.1" }, { 123456789.125, "123456789.125" }, { 1e-7, "0.0000001" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct keel_value v = { .type = KEEL_VALUE_DOUBLE, .u.d = t[i].d };
        check_fmt(&v, t[i].out, false);
    }
    struct keel_value v;
    assert_int_equal(keel_value_parse(KEEL_VALUE_INT64, "-3", 2, &v), 0);
    check_fmt(&v, "-3", false);
    assert_int_not_equal(keel_value_parse(KEEL_VALUE_INT64, "9223372036854775808", 19, &v), 0);
    assert_int_equal(keel_value_parse(KEEL_VALUE_INT64, "-9223372036854775808", 20, &v), 0);
    assert_int_equal(keel_value_parse(KEEL_VALUE_IP_ADDRESS, "10.0.0.1", 8, &v), 0);
    check_fmt(&v, "10.0.0.1", false);
    assert_int_equal(keel_value_parse(KEEL_VALUE_IP_ADDRESS, "::ffff:10.0.0.1", 15, &v), 0);
    check_fmt(&v, "10.0.0.1", false);
    assert_int_equal(keel_value_parse(KEEL_VALUE_IP_ADDRESS, "2001:db8:0:0:0:0:0:1", 20, &v), 0);
    check_fmt(&v, "2001:db8::1", false);
    assert_int_not_equal(keel_value_parse(KEEL_VALUE_IP_ADDRESS, "10.0.0.256", 10, &v), 0);
    assert_int_equal(keel_value_parse(KEEL_VALUE_BOOL, "TRUE", 4, &v), 0);
    check_fmt(&v, "true", false);
}

static void maps(void **state)
{
    struct keel_str_pair kv[] = { { KEEL_STR("version"), KEEL_STR("v1") }, { KEEL_STR("app"), KEEL_STR("a\"b") } };
    struct keel_value m = keel_value_map(kv, 2);
    check_fmt(&m, "app=a\"b&version=v1", false);
    check_fmt(&m, "{\"app\":\"a\\\"b\",\"version\":\"v1\"}", true);
    assert_non_null(keel_value_map_get(&m, "app", 3));
    assert_null(keel_value_map_get(&m, "ap", 2));
    struct keel_value s = keel_value_str("x\n\x01", 3);
    check_fmt(&s, "\"x\\n\\u0001\"", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vocabulary), cmocka_unit_test(bag),  cmocka_unit_test(durations),
        cmocka_unit_test(timestamps), cmocka_unit_test(doubles_ints_ips), cmocka_unit_test(maps),
    };
    int rc = cmocka_run_group_tests_name("attr/value", tests, NULL, NULL);
    keel_buf_pool_drain();
    return rc;
}
