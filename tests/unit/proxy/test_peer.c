#include "proxy/peer.h"

#include "http/http.h"

#include "core/err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

/* The proxy finds the header by its id (http.h): the name it writes must be that id's. */
static void header_name_has_its_id(void **state)
{
    (void)state;
    assert_int_equal(keel_http_header_id(KEEL_STR(KEEL_PEER_HEADER)),
                     KEEL_HDR_X_KEEL_PEER_METADATA);
}

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
    assert_int_equal(keel_peer_parse((struct keel_str){ keel_buf_rptr(&b), keel_buf_len(&b) }, &out), 0);
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
    assert_int_equal(keel_peer_parse(KEEL_STR(";;=;x;label.=;name"), &p), KEEL_EINVAL);
    assert_false(p.present);
    assert_int_equal(keel_peer_parse(KEEL_STR(""), &p), KEEL_EINVAL);
    assert_false(p.present);
    /* more labels than KEEL_PEER_MAX_LABELS: refused whole, not truncated */
    char many[2048] = "name=a";
    for (int i = 0; i < 50; i++)
        strcat(many, ";label.k=v");
    assert_int_equal(keel_peer_parse(keel_str_c(many), &p), KEEL_EINVAL);
    assert_false(p.present);
    assert_int_equal(p.n_labels, 0);
}

/* every string here must leave the peer unknown (and the caller counts it) */
static void invalid_is_refused_whole(void **state)
{
    static const char *const bad[] = {
        "name=a\"b",                               /* quote */
        "name=a\\b",                              /* backslash */
        "name=a\nb",                               /* newline */
        "name=caf\xc3\xa9",                        /* non-ASCII, even valid UTF-8 */
        "name=\xff\xfe",                           /* invalid UTF-8 */
        "name=Upper",                               /* DNS names are lower case */
        "name=-a",                                  /* must start alphanumeric */
        "name=a-",                                  /* and end so */
        "name=a..b",                                /* empty DNS label */
        "name=a;namespace=a.b",                     /* a namespace is one label */
        "name=a;namespace=",                        /* present but empty */
        "name=a;name=b",                            /* duplicate */
        "name=a;label.app=v\x01",                  /* control byte in a label value */
        "name=a;label.app=-v",                      /* label value must start alphanumeric */
        "name=a;label.a b=v",                       /* space in a key */
        "name=a;label./x=v",                        /* empty prefix */
        "name=a;label.example.com/=v",              /* empty name part */
        "name=a;label.app=v;",                      /* trailing separator */
        "name=a;;namespace=b",                      /* empty segment */
        "name=a;junk",                              /* segment without '=' */
        "name=a;future=\"x\"",                     /* an unknown key, still charset-checked */
        "namespace=default",                        /* no name */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct keel_peer p;
        if (keel_peer_parse(keel_str_c(bad[i]), &p) != KEEL_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_false(p.present);
        assert_int_equal(p.name.len, 0);
    }
}

static void limits(void **state)
{
    struct keel_peer p;
    char v[8192];
    /* label value of 63 ok, 64 refused */
    snprintf(v, sizeof(v), "name=a;label.k=%063d", 0);
    assert_int_equal(keel_peer_parse(keel_str_c(v), &p), 0);
    snprintf(v, sizeof(v), "name=a;label.k=%064d", 0);
    assert_int_equal(keel_peer_parse(keel_str_c(v), &p), KEEL_EINVAL);
    /* namespace 63 ok, 64 refused */
    snprintf(v, sizeof(v), "name=a;namespace=%063d", 0);
    assert_int_equal(keel_peer_parse(keel_str_c(v), &p), 0);
    snprintf(v, sizeof(v), "name=a;namespace=%064d", 0);
    assert_int_equal(keel_peer_parse(keel_str_c(v), &p), KEEL_EINVAL);
    /* exactly KEEL_PEER_MAX_LABELS labels ok */
    strcpy(v, "name=a");
    for (int i = 0; i < KEEL_PEER_MAX_LABELS; i++)
        snprintf(v + strlen(v), sizeof(v) - strlen(v), ";label.k%d=v", i);
    assert_int_equal(keel_peer_parse(keel_str_c(v), &p), 0);
    assert_int_equal(p.n_labels, KEEL_PEER_MAX_LABELS);
    /* total length over KEEL_PEER_MAX_LEN refused, whatever the fields */
    memset(v, 0, sizeof(v));
    strcpy(v, "name=a;service=");
    size_t n = strlen(v);
    while (n < KEEL_PEER_MAX_LEN + 10) {
        memcpy(v + n, "abcdefghij.", 11);
        n += 11;
    }
    memcpy(v + n, "z", 2);
    assert_int_equal(keel_peer_parse(keel_str_c(v), &p), KEEL_EINVAL);
    /* Kubernetes forms that must pass: prefixed keys, dotted names, empty label value */
    assert_int_equal(keel_peer_parse(KEEL_STR("name=reviews-v1.x;namespace=default;"
                                              "label.app.kubernetes.io/name=Re_v.1;label.empty="), &p), 0);
    assert_true(p.present);
    assert_int_equal(p.n_labels, 2);
    assert_true(keel_str_eq(p.labels[0].k, KEEL_STR("app.kubernetes.io/name")));
    assert_int_equal(p.labels[1].v.len, 0);
    /* a key of a later version is skipped */
    assert_int_equal(keel_peer_parse(KEEL_STR("name=a;cluster=c1"), &p), 0);
}

/* The encoder leaves out what the parser would refuse, so our own header always passes. */
static void encode_drops_bad_labels(void **state)
{
    struct keel_peer in = { .present = true };
    in.name = KEEL_STR("a");
    in.labels[0] = (struct keel_str_pair){ KEEL_STR("ok"), KEEL_STR("v") };
    in.labels[1] = (struct keel_str_pair){ KEEL_STR("bad"), KEEL_STR("has space") };
    in.n_labels = 2;
    struct keel_buf b = { 0 };
    keel_peer_encode(&in, &b);
    struct keel_peer out;
    assert_int_equal(keel_peer_parse((struct keel_str){ keel_buf_rptr(&b), keel_buf_len(&b) }, &out), 0);
    assert_int_equal(out.n_labels, 1);
    keel_buf_release(&b);
    keel_buf_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip), cmocka_unit_test(junk_is_harmless),
        cmocka_unit_test(invalid_is_refused_whole), cmocka_unit_test(limits),
        cmocka_unit_test(encode_drops_bad_labels), cmocka_unit_test(header_name_has_its_id),
    };
    return cmocka_run_group_tests_name("proxy/peer", tests, NULL, NULL);
}
