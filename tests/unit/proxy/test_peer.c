#include "proxy/peer.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void round_trip(void **state)
{
    struct keel_peer in = { .present = true };
    in.name = KEEL_STR("reviews-v1");
    in.namespace = KEEL_STR("default");
    in.service_account = KEEL_STR("bookinfo-reviews");
    in.service = KEEL_STR("reviews.default.svc.cluster.local");
    in.labels[0] = (struct keel_str_pair){ KEEL_STR("app"), KEEL_STR("reviews") };
    in.labels[1] = (struct keel_str_pair){ KEEL_STR("version"), KEEL_STR("v1") };
    in.n_labels = 2;
    struct keel_buf b = { 0 };
    keel_peer_encode(&in, &b);
    const char *want = "name=reviews-v1;namespace=default;sa=bookinfo-reviews;"
                       "service=reviews.default.svc.cluster.local;label.app=reviews;label.version=v1";
    assert_int_equal(keel_buf_len(&b), strlen(want));
    assert_memory_equal(keel_buf_rptr(&b), want, strlen(want));
    struct keel_peer out;
    keel_peer_parse((struct keel_str){ keel_buf_rptr(&b), keel_buf_len(&b) }, &out);
    assert_true(out.present);
    assert_true(keel_str_eq(out.name, in.name));
    assert_true(keel_str_eq(out.namespace, in.namespace));
    assert_true(keel_str_eq(out.service_account, in.service_account));
    assert_true(keel_str_eq(out.service, in.service));
    assert_int_equal(out.n_labels, 2);
    assert_true(keel_str_eq(out.labels[1].k, KEEL_STR("version")));
    assert_true(keel_str_eq(out.labels[1].v, KEEL_STR("v1")));
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

static void junk_is_harmless(void **state)
{
    struct keel_peer p;
    keel_peer_parse(KEEL_STR(";;=;x;label.=;name"), &p);
    assert_false(p.present);
    keel_peer_parse(KEEL_STR(""), &p);
    assert_false(p.present);
    char many[2048] = "name=a";
    for (int i = 0; i < 50; i++)
        strcat(many, ";label.k=v");
    keel_peer_parse(keel_str_c(many), &p);
    assert_true(p.present);
    assert_int_equal(p.n_labels, KEEL_PEER_MAX_LABELS);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(round_trip), cmocka_unit_test(junk_is_harmless) };
    return cmocka_run_group_tests_name("proxy/peer", tests, NULL, NULL);
}
