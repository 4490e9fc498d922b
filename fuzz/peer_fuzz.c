/* libFuzzer target: the peer-metadata parser (x-keel-peer-metadata, from the network).
 * Accepted metadata holds only the validated charset and lengths, and survives an
 * encode/parse round trip unchanged. Replayed by tests/unit/proxy/test_fuzz_corpus.c. */
#include "core/err.h"
#include "proxy/peer.h"

#include <stdint.h>
#include <string.h>

static void check_charset(struct keel_str s, size_t max)
{
    if (s.len > max)
        __builtin_trap();
    for (size_t i = 0; i < s.len; i++) {
        char c = s.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.' || c == '_' || c == '/'))
            __builtin_trap();
    }
}

static bool same(struct keel_str a, struct keel_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct keel_peer p;
    int rc = keel_peer_parse((struct keel_str){ (const char *)data, size }, &p);
    if (rc < 0) {
        if (rc != KEEL_EINVAL || p.present || p.name.len || p.n_labels)
            __builtin_trap();
        return 0;
    }
    if (!p.present || p.name.len == 0 || p.n_labels > KEEL_PEER_MAX_LABELS || size > KEEL_PEER_MAX_LEN)
        __builtin_trap();
    check_charset(p.name, 253);
    check_charset(p.namespace, 63);
    check_charset(p.service_account, 253);
    check_charset(p.service, 253);
    for (size_t i = 0; i < p.n_labels; i++) {
        check_charset(p.labels[i].k, 253 + 1 + 63);
        check_charset(p.labels[i].v, KEEL_PEER_MAX_LABEL_LEN);
        if (memchr(p.labels[i].v.p, '/', p.labels[i].v.len))
            __builtin_trap();
    }
    struct keel_buf b = { 0 };
    keel_peer_encode(&p, &b);
    struct keel_peer q;
    if (keel_peer_parse((struct keel_str){ keel_buf_rptr(&b), keel_buf_len(&b) }, &q) != 0)
        __builtin_trap();
    if (!same(p.name, q.name) || !same(p.namespace, q.namespace) || !same(p.service_account, q.service_account) ||
        !same(p.service, q.service) || p.n_labels != q.n_labels)
        __builtin_trap();
    for (size_t i = 0; i < p.n_labels; i++)
        if (!same(p.labels[i].k, q.labels[i].k) || !same(p.labels[i].v, q.labels[i].v))
            __builtin_trap();
    keel_buf_release(&b);
    return 0;
}
