/* ReportRequest decoding: global and message words, default_words, delta and independent
 * encoding, every value type, the encoder's round trip, and every malformed form refused
 * before any bag goes out. Requests are built with protobuf-c's generated structs. */
#include "mixer/mixer.h"

#include "core/err.h"

#include "mixer/v1/mixer.pb-c.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static struct keel_mixer_decoder *dec;

static int setup(void **state)
{
    dec = keel_mixer_decoder_new();
    return 0;
}

static int teardown(void **state)
{
    keel_mixer_decoder_free(dec);
    return 0;
}

#define MAX_BAGS 8
static struct keel_attr_bag got[MAX_BAGS];
static size_t n_got;

static void collect(void *arg, struct keel_attr_bag *bag)
{
    assert_true(n_got < MAX_BAGS);
    got[n_got++] = *bag;
}

/* ---- building requests ---- */

typedef Istio__Mixer__V1__CompressedAttributes CA;
typedef Istio__Mixer__V1__CompressedAttributes__StringsEntry SE;
typedef Istio__Mixer__V1__CompressedAttributes__Int64sEntry IE;

struct req {
    Istio__Mixer__V1__ReportRequest rq;
    CA ca[4], *cap[4];
    SE se[4][8], *sep[4][8];
    IE ie[4][4], *iep[4][4];
};

static void req_init(struct req *r, size_t n_sets)
{
    memset(r, 0, sizeof(*r));
    istio__mixer__v1__report_request__init(&r->rq);
    for (size_t i = 0; i < n_sets; i++) {
        istio__mixer__v1__compressed_attributes__init(&r->ca[i]);
        r->cap[i] = &r->ca[i];
        r->ca[i].strings = r->sep[i];
        r->ca[i].int64s = r->iep[i];
    }
    r->rq.attributes = r->cap;
    r->rq.n_attributes = n_sets;
}

static void add_str(struct req *r, size_t set, int32_t k, int32_t v)
{
    CA *ca = &r->ca[set];
    SE *e = &r->se[set][ca->n_strings];
    istio__mixer__v1__compressed_attributes__strings_entry__init(e);
    e->key = k;
    e->value = v;
    r->sep[set][ca->n_strings++] = e;
}

static void add_int(struct req *r, size_t set, int32_t k, int64_t v)
{
    CA *ca = &r->ca[set];
    IE *e = &r->ie[set][ca->n_int64s];
    istio__mixer__v1__compressed_attributes__int64s_entry__init(e);
    e->key = k;
    e->value = v;
    r->iep[set][ca->n_int64s++] = e;
}

static int decode_req(struct req *r, const char **why)
{
    static uint8_t buf[65536];
    size_t n = istio__mixer__v1__report_request__pack(&r->rq, buf);
    struct keel_mixer_decode_stats st = { 0 };
    n_got = 0;
    *why = NULL;
    /* the bags' strings live in the decoder until its next request */
    return keel_mixer_decode(dec, buf, n, collect, NULL, &st, why);
}

static int g(const char *w)
{
    int i = keel_mixer_global_index(w, strlen(w));
    assert_true(i >= 0);
    return i;
}

static void assert_str(const struct keel_attr_bag *bag, int id, const char *want)
{
    const struct keel_value *v = keel_attr_bag_get(bag, id);
    assert_non_null(v);
    assert_int_equal(v->type, KEEL_VALUE_STRING);
    assert_int_equal(v->u.s.len, strlen(want));
    assert_memory_equal(v->u.s.p, want, strlen(want));
}

/* ---- tests ---- */

static void global_dictionary(void **state)
{
    assert_int_equal(keel_mixer_global_words(), 222);
    assert_int_equal(g("source.ip"), 0); /* the wire format: first words of the list */
    assert_int_equal(g("source.port"), 1);
    assert_int_equal(keel_mixer_attr_id("response.code", 13), KEEL_ATTR_RESPONSE_CODE);
    assert_int_equal(keel_mixer_attr_id("no.such", 7), -1);
}

static void global_and_message_words(void **state)
{
    struct req r;
    req_init(&r, 1);
    char *words[] = { "productpage-v1", "destination.workload.name", "details-v1" };
    r.ca[0].words = words;
    r.ca[0].n_words = 3;
    add_str(&r, 0, g("source.workload.name"), -1);   /* global name, message value */
    add_str(&r, 0, -2, -3);                          /* message name and value */
    add_str(&r, 0, g("context.protocol"), g("http")); /* global name and value */
    add_int(&r, 0, g("response.code"), 404);
    const char *why;
    assert_int_equal(decode_req(&r, &why), 1);
    assert_int_equal(n_got, 1);
    assert_str(&got[0], KEEL_ATTR_SOURCE_WORKLOAD_NAME, "productpage-v1");
    assert_str(&got[0], KEEL_ATTR_DESTINATION_WORKLOAD_NAME, "details-v1");
    assert_str(&got[0], KEEL_ATTR_CONTEXT_PROTOCOL, "http");
    assert_int_equal(keel_attr_bag_get(&got[0], KEEL_ATTR_RESPONSE_CODE)->u.i, 404);
}

static void default_words_when_a_set_has_none(void **state)
{
    struct req r;
    req_init(&r, 2);
    char *defaults[] = { "a-default" };
    char *own[] = { "own-word" };
    r.rq.default_words = defaults;
    r.rq.n_default_words = 1;
    r.ca[1].words = own;
    r.ca[1].n_words = 1;
    r.rq.repeated_attributes_semantics = ISTIO__MIXER__V1__REPORT_REQUEST__REPEATED_ATTRIBUTES_SEMANTICS__INDEPENDENT_ENCODING;
    add_str(&r, 0, g("source.name"), -1);
    add_str(&r, 1, g("source.name"), -1);
    const char *why;
    assert_int_equal(decode_req(&r, &why), 2);
    assert_str(&got[0], KEEL_ATTR_SOURCE_NAME, "a-default");
    assert_str(&got[1], KEEL_ATTR_SOURCE_NAME, "own-word");
}

static void delta_encoding_builds_on_the_previous_set(void **state)
{
    struct req r;
    req_init(&r, 3);
    char *words[] = { "a", "b" };
    r.rq.default_words = words;
    r.rq.n_default_words = 2;
    add_str(&r, 0, g("source.name"), -1);
    add_int(&r, 0, g("response.code"), 200);
    add_int(&r, 1, g("response.code"), 503); /* only the code changes */
    add_str(&r, 2, g("source.name"), -2);
    const char *why;
    assert_int_equal(decode_req(&r, &why), 3);
    assert_str(&got[0], KEEL_ATTR_SOURCE_NAME, "a");
    assert_int_equal(keel_attr_bag_get(&got[0], KEEL_ATTR_RESPONSE_CODE)->u.i, 200);
    assert_str(&got[1], KEEL_ATTR_SOURCE_NAME, "a");
    assert_int_equal(keel_attr_bag_get(&got[1], KEEL_ATTR_RESPONSE_CODE)->u.i, 503);
    assert_str(&got[2], KEEL_ATTR_SOURCE_NAME, "b");
    assert_int_equal(keel_attr_bag_get(&got[2], KEEL_ATTR_RESPONSE_CODE)->u.i, 503);
}

/* A consumer that sets filter_state (attributegen does) on each bag it is handed. */
static void collect_and_mark(void *arg, struct keel_attr_bag *bag)
{
    static const struct keel_str_pair fs[1] = { { KEEL_STR("operation"), KEEL_STR("x") } };
    collect(arg, bag);
    struct keel_value m = keel_value_map(fs, 1);
    keel_attr_bag_set(bag, KEEL_ATTR_FILTER_STATE, &m);
}

/* What the consumer sets does not leak into the next delta set. */
static void delta_sets_build_on_what_the_client_sent(void **state)
{
    struct req r;
    req_init(&r, 2);
    char *words[] = { "a" };
    r.rq.default_words = words;
    r.rq.n_default_words = 1;
    add_str(&r, 0, g("source.name"), -1);
    add_int(&r, 1, g("response.code"), 503);
    static uint8_t buf[4096];
    size_t n = istio__mixer__v1__report_request__pack(&r.rq, buf);
    struct keel_mixer_decode_stats st = { 0 };
    const char *why = NULL;
    n_got = 0;
    assert_int_equal(keel_mixer_decode(dec, buf, n, collect_and_mark, NULL, &st, &why), 2);
    assert_false(keel_attr_bag_has(&got[0], KEEL_ATTR_FILTER_STATE));
    assert_false(keel_attr_bag_has(&got[1], KEEL_ATTR_FILTER_STATE));
    assert_str(&got[1], KEEL_ATTR_SOURCE_NAME, "a");
    assert_int_equal(keel_attr_bag_get(&got[1], KEEL_ATTR_RESPONSE_CODE)->u.i, 503);
}

static void independent_encoding_starts_empty(void **state)
{
    struct req r;
    req_init(&r, 2);
    r.rq.repeated_attributes_semantics = ISTIO__MIXER__V1__REPORT_REQUEST__REPEATED_ATTRIBUTES_SEMANTICS__INDEPENDENT_ENCODING;
    add_int(&r, 0, g("response.code"), 200);
    add_int(&r, 1, g("request.size"), 7);
    const char *why;
    assert_int_equal(decode_req(&r, &why), 2);
    assert_null(keel_attr_bag_get(&got[1], KEEL_ATTR_RESPONSE_CODE));
    assert_int_equal(keel_attr_bag_get(&got[1], KEEL_ATTR_REQUEST_SIZE)->u.i, 7);
}

static void unknown_and_mistyped_are_skipped(void **state)
{
    struct req r;
    req_init(&r, 1);
    char *words[] = { "no.such.attribute", "x" };
    r.ca[0].words = words;
    r.ca[0].n_words = 2;
    add_str(&r, 0, -1, -2);                      /* unknown name */
    add_str(&r, 0, g("response.code"), -2);      /* INT64 attribute sent as a string */
    add_int(&r, 0, g("response.size"), 5);
    static uint8_t buf[4096];
    size_t n = istio__mixer__v1__report_request__pack(&r.rq, buf);
    struct keel_mixer_decoder *d = keel_mixer_decoder_new();
    struct keel_mixer_decode_stats st = { 0 };
    const char *why = NULL;
    n_got = 0;
    assert_int_equal(keel_mixer_decode(d, buf, n, collect, NULL, &st, &why), 1);
    assert_int_equal(st.unknown_attrs, 1);
    assert_int_equal(st.mistyped_attrs, 1);
    assert_null(keel_attr_bag_get(&got[0], KEEL_ATTR_RESPONSE_CODE));
    assert_int_equal(keel_attr_bag_get(&got[0], KEEL_ATTR_RESPONSE_SIZE)->u.i, 5);
    keel_mixer_decoder_free(d);
}

/* Every malformed form: an error, and no bag delivered (not even the good first set). */
static void malformed_requests_are_refused_whole(void **state)
{
    const char *why;
    struct req r;
    for (int c = 0; c < 7; c++) {
        req_init(&r, 2);
        char *words[] = { "w" };
        r.rq.default_words = words;
        r.rq.n_default_words = 1;
        add_int(&r, 0, g("response.code"), 200); /* a good first set */
        switch (c) {
        case 0: add_int(&r, 1, 100000, 1); break;               /* global name index past the end */
        case 1: add_int(&r, 1, -2, 1); break;                   /* message index past the words */
        case 2: add_str(&r, 1, g("source.name"), 5000); break;  /* global value index past the end */
        case 3: add_str(&r, 1, g("source.name"), -9); break;    /* message value index past the end */
        case 4: r.rq.global_word_count = 100000; break;         /* a newer dictionary than ours */
        case 5: r.rq.repeated_attributes_semantics = 7; break;  /* unknown semantics */
        case 6: r.rq.global_word_count = 10; add_int(&r, 1, g("response.code"), 1); break; /* index past the client's count */
        }
        assert_int_equal(decode_req(&r, &why), KEEL_EINVAL);
        assert_non_null(why);
        assert_int_equal(n_got, 0);
    }
}

static void bad_bytes_are_refused(void **state)
{
    static const struct { const char *p; size_t n; } cases[] = {
        { "\xff\xff\xff", 3 },             /* a bad tag */
        { "\x0a\x05\x12", 3 },             /* attributes: length past the end */
        { "\x0a\x02\x12\x7f", 4 },         /* nested strings entry truncated */
    };
    struct keel_mixer_decoder *d = keel_mixer_decoder_new();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct keel_mixer_decode_stats st = { 0 };
        const char *why = NULL;
        n_got = 0;
        assert_int_equal(keel_mixer_decode(d, (const uint8_t *)cases[i].p, cases[i].n, collect, NULL, &st, &why),
                         KEEL_EINVAL);
        assert_int_equal(n_got, 0);
    }
    keel_mixer_decoder_free(d);
}

static void timestamp_nanos_out_of_range(void **state)
{
    struct req r;
    req_init(&r, 1);
    Istio__Mixer__V1__CompressedAttributes__TimestampsEntry te, *tep = &te;
    Google__Protobuf__Timestamp ts;
    istio__mixer__v1__compressed_attributes__timestamps_entry__init(&te);
    google__protobuf__timestamp__init(&ts);
    ts.seconds = 1;
    ts.nanos = 1000000000;
    te.key = g("request.time");
    te.value = &ts;
    r.ca[0].timestamps = &tep;
    r.ca[0].n_timestamps = 1;
    const char *why;
    assert_int_equal(decode_req(&r, &why), KEEL_EINVAL);
    ts.nanos = 5;
    assert_int_equal(decode_req(&r, &why), 1);
    const struct keel_value *v = keel_attr_bag_get(&got[0], KEEL_ATTR_REQUEST_TIME);
    assert_int_equal(v->u.t.sec, 1);
    assert_int_equal(v->u.t.nsec, 5);
}

/* The proxy's encoder and the decoder agree on every value type. */
static void encoder_round_trip(void **state)
{
    struct keel_attr_bag bag;
    keel_attr_bag_clear(&bag);
    struct keel_value v = keel_value_str("productpage-v1", 14);
    keel_attr_bag_set(&bag, KEEL_ATTR_SOURCE_WORKLOAD_NAME, &v);
    v = keel_value_str("http", 4);
    keel_attr_bag_set(&bag, KEEL_ATTR_CONTEXT_PROTOCOL, &v);
    v = keel_value_int(-3);
    keel_attr_bag_set(&bag, KEEL_ATTR_REQUEST_SIZE, &v);
    v = keel_value_bool(true);
    keel_attr_bag_set(&bag, KEEL_ATTR_CONNECTION_MTLS, &v);
    v = keel_value_duration(1817000);
    keel_attr_bag_set(&bag, KEEL_ATTR_RESPONSE_DURATION, &v);
    v = (struct keel_value){ .type = KEEL_VALUE_TIMESTAMP, .u.t = { 1545997990, 82342000 } };
    keel_attr_bag_set(&bag, KEEL_ATTR_REQUEST_TIME, &v);
    v = (struct keel_value){ .type = KEEL_VALUE_IP_ADDRESS, .u.ip = { { 10, 44, 0, 7 }, 4 } };
    keel_attr_bag_set(&bag, KEEL_ATTR_SOURCE_IP, &v);
    struct keel_str_pair kv[2] = { { KEEL_STR("app"), KEEL_STR("productpage") },
                                   { KEEL_STR("version"), KEEL_STR("v1") } };
    v = keel_value_map(kv, 2);
    keel_attr_bag_set(&bag, KEEL_ATTR_SOURCE_LABELS, &v);

    struct keel_mixer_batch *b = keel_mixer_batch_new();
    keel_mixer_batch_add(b, &bag);
    keel_mixer_batch_add(b, &bag);
    assert_int_equal(keel_mixer_batch_count(b), 2);
    struct keel_buf out = { 0 };
    keel_mixer_batch_finish(b, &out);
    assert_int_equal(keel_mixer_batch_count(b), 0);
    const uint8_t *p = (const uint8_t *)keel_buf_rptr(&out);
    size_t n = keel_buf_len(&out);
    assert_int_equal(p[0], 0);
    assert_int_equal((size_t)(p[1] << 24 | p[2] << 16 | p[3] << 8 | p[4]), n - 5);
    struct keel_mixer_decoder *d = keel_mixer_decoder_new();
    struct keel_mixer_decode_stats st = { 0 };
    const char *why = NULL;
    n_got = 0;
    assert_int_equal(keel_mixer_decode(d, p + 5, n - 5, collect, NULL, &st, &why), 2);
    assert_int_equal(st.unknown_attrs + st.mistyped_attrs, 0);
    for (size_t i = 0; i < 2; i++) {
        for (int id = 0; id < KEEL_ATTR__COUNT; id++)
            assert_int_equal(keel_attr_bag_has(&got[i], id), keel_attr_bag_has(&bag, id));
        assert_str(&got[i], KEEL_ATTR_SOURCE_WORKLOAD_NAME, "productpage-v1");
        assert_int_equal(keel_attr_bag_get(&got[i], KEEL_ATTR_REQUEST_SIZE)->u.i, -3);
        assert_true(keel_attr_bag_get(&got[i], KEEL_ATTR_CONNECTION_MTLS)->u.b);
        assert_int_equal(keel_attr_bag_get(&got[i], KEEL_ATTR_RESPONSE_DURATION)->u.i, 1817000);
        assert_int_equal(keel_attr_bag_get(&got[i], KEEL_ATTR_REQUEST_TIME)->u.t.nsec, 82342000);
        const struct keel_value *ip = keel_attr_bag_get(&got[i], KEEL_ATTR_SOURCE_IP);
        assert_int_equal(ip->u.ip.len, 4);
        assert_int_equal(ip->u.ip.a[1], 44);
        const struct keel_value *m = keel_attr_bag_get(&got[i], KEEL_ATTR_SOURCE_LABELS);
        const struct keel_str *app = keel_value_map_get(m, "app", 3);
        assert_non_null(app);
        assert_int_equal(app->len, 11);
        assert_memory_equal(app->p, "productpage", 11);
    }
    keel_mixer_decoder_free(d);
    keel_mixer_batch_free(b);
    keel_buf_release(&out);
}

/* The encoder's delta sets: a bag carries only what changed, decodes whole, and a bag
 * that drops an attribute does not fit the batch (a delta cannot say "absent"). */
static void encoder_sends_deltas(void **state)
{
    struct keel_attr_bag a;
    keel_attr_bag_clear(&a);
    struct keel_value v = keel_value_str("productpage-v1", 14);
    keel_attr_bag_set(&a, KEEL_ATTR_SOURCE_WORKLOAD_NAME, &v);
    v = keel_value_str("2d3ae6e2-4f5b-9a7e-a7a3-2f1b1f0b1c3d", 36);
    keel_attr_bag_set(&a, KEEL_ATTR_REQUEST_ID, &v);
    v = keel_value_int(200);
    keel_attr_bag_set(&a, KEEL_ATTR_RESPONSE_CODE, &v);
    struct keel_str_pair kv[2] = { { KEEL_STR("app"), KEEL_STR("productpage") },
                                   { KEEL_STR("version"), KEEL_STR("v1") } };
    v = keel_value_map(kv, 2);
    keel_attr_bag_set(&a, KEEL_ATTR_SOURCE_LABELS, &v);
    struct keel_attr_bag b = a;
    v = keel_value_str("7f0c5c8e-0000-4000-8000-000000000001", 36);
    keel_attr_bag_set(&b, KEEL_ATTR_REQUEST_ID, &v);
    v = keel_value_int(503);
    keel_attr_bag_set(&b, KEEL_ATTR_RESPONSE_CODE, &v);
    struct keel_str_pair kv2[2] = { { KEEL_STR("app"), KEEL_STR("productpage") },
                                    { KEEL_STR("version"), KEEL_STR("v2") } };
    v = keel_value_map(kv2, 2);
    keel_attr_bag_set(&b, KEEL_ATTR_SOURCE_LABELS, &v);

    struct keel_mixer_batch *bt = keel_mixer_batch_new();
    struct keel_buf one = { 0 }, three = { 0 };
    assert_true(keel_mixer_batch_add(bt, &a));
    keel_mixer_batch_finish(bt, &one);
    assert_true(keel_mixer_batch_add(bt, &a));
    assert_true(keel_mixer_batch_add(bt, &b));
    assert_true(keel_mixer_batch_add(bt, &a));
    struct keel_attr_bag c = a; /* no response.code: cannot follow a in a delta */
    keel_attr_bag_del(&c, KEEL_ATTR_RESPONSE_CODE);
    assert_false(keel_mixer_batch_add(bt, &c));
    assert_int_equal(keel_mixer_batch_count(bt), 3);
    keel_mixer_batch_finish(bt, &three);
    /* b and the a after it carry three changed attributes each, not the whole bag */
    assert_true(keel_buf_len(&three) < 2 * keel_buf_len(&one));
    assert_true(keel_mixer_batch_add(bt, &c)); /* the empty batch takes it */

    struct keel_mixer_decoder *d = keel_mixer_decoder_new();
    struct keel_mixer_decode_stats st = { 0 };
    const char *why = NULL;
    n_got = 0;
    const uint8_t *p = (const uint8_t *)keel_buf_rptr(&three);
    assert_int_equal(keel_mixer_decode(d, p + 5, keel_buf_len(&three) - 5, collect, NULL, &st, &why), 3);
    const struct keel_attr_bag *want[3] = { &a, &b, &a };
    for (size_t i = 0; i < 3; i++) {
        for (int id = 0; id < KEEL_ATTR__COUNT; id++)
            assert_int_equal(keel_attr_bag_has(&got[i], id), keel_attr_bag_has(want[i], id));
        const struct keel_value *rid = keel_attr_bag_get(&got[i], KEEL_ATTR_REQUEST_ID);
        assert_memory_equal(rid->u.s.p, keel_attr_bag_get(want[i], KEEL_ATTR_REQUEST_ID)->u.s.p, 36);
        assert_int_equal(keel_attr_bag_get(&got[i], KEEL_ATTR_RESPONSE_CODE)->u.i,
                         keel_attr_bag_get(want[i], KEEL_ATTR_RESPONSE_CODE)->u.i);
        const struct keel_str *ver = keel_value_map_get(keel_attr_bag_get(&got[i], KEEL_ATTR_SOURCE_LABELS), "version", 7);
        assert_int_equal(ver->len, 2);
        assert_int_equal(ver->p[1], i == 1 ? '2' : '1');
        assert_str(&got[i], KEEL_ATTR_SOURCE_WORKLOAD_NAME, "productpage-v1");
    }
    keel_mixer_decoder_free(d);
    keel_mixer_batch_free(bt);
    keel_buf_release(&one);
    keel_buf_release(&three);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(global_dictionary),
        cmocka_unit_test(global_and_message_words),
        cmocka_unit_test(default_words_when_a_set_has_none),
        cmocka_unit_test(delta_encoding_builds_on_the_previous_set),
        cmocka_unit_test(delta_sets_build_on_what_the_client_sent),
        cmocka_unit_test(independent_encoding_starts_empty),
        cmocka_unit_test(unknown_and_mistyped_are_skipped),
        cmocka_unit_test(malformed_requests_are_refused_whole),
        cmocka_unit_test(bad_bytes_are_refused),
        cmocka_unit_test(timestamp_nanos_out_of_range),
        cmocka_unit_test(encoder_round_trip),
        cmocka_unit_test(encoder_sends_deltas),
    };
    return cmocka_run_group_tests_name("mixer/decode", tests, setup, teardown);
}
