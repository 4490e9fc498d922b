/* libFuzzer target for the expression pipeline: parser + checker + compiler + VM.
 * Input: byte 0 picks the dialect (bit 0) and the bag; the expression follows, up to an
 * optional NUL; bytes after the NUL decide which attributes are present.
 * Built with -DKEEL_FUZZ_REPLAY it is a plain corpus replayer (see test_fuzz_corpus.c). */
#include "expr/expr.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static struct keel_str_pair fuzz_kv[] = {
    { { "app", 3 }, { "reviews", 7 } },
    { { "version", 7 }, { "v1", 2 } },
    { { "wasm.istio_operationId", 22 }, { "GetBook", 7 } },
    { { "", 0 }, { "", 0 } },
};

static void fuzz_value(int id, unsigned seed, struct keel_value *v, const uint8_t *data, size_t size)
{
    memset(v, 0, sizeof(*v));
    v->type = keel_attr_type(id);
    switch (v->type) {
    case KEEL_VALUE_STRING:
        v->u.s.p = (const char *)data;
        v->u.s.len = size < 16 ? size : 16 - (seed & 7);
        if (v->u.s.len > size)
            v->u.s.len = size;
        break;
    case KEEL_VALUE_INT64:
    case KEEL_VALUE_DURATION:
        v->u.i = (int64_t)seed * 7919 - 200;
        break;
    case KEEL_VALUE_BOOL:
        v->u.b = seed & 1;
        break;
    case KEEL_VALUE_TIMESTAMP:
        v->u.t.sec = (int64_t)seed * 86400;
        v->u.t.nsec = (int32_t)(seed * 1000);
        break;
    case KEEL_VALUE_IP_ADDRESS:
        v->u.ip.len = (seed & 1) ? 16 : 4;
        v->u.ip.a[0] = (uint8_t)seed;
        break;
    case KEEL_VALUE_STRING_MAP:
        v->u.map.kv = fuzz_kv;
        v->u.map.n = seed % 5;
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum keel_expr_dialect d = (data[0] & 1) ? KEEL_EXPR_CEL : KEEL_EXPR_CEXL;
    const uint8_t *src = data + 1;
    size_t len = size - 1;
    const uint8_t *nul = memchr(src, 0, len);
    const uint8_t *tail = NULL;
    size_t tlen = 0;
    if (nul) {
        tail = nul + 1;
        tlen = (size_t)(src + len - tail);
        len = (size_t)(nul - src);
    }
    struct keel_expr_error err;
    struct keel_expr *e = keel_expr_compile((const char *)src, len, d, &err);
    if (!e) {
        if (err.col < 1 || (size_t)err.col > len + 1 || !err.msg[0])
            __builtin_trap();
        return 0;
    }
    static struct keel_attr_bag bag;
    keel_attr_bag_clear(&bag);
    unsigned seed = data[0] >> 1;
    for (int id = 0; id < KEEL_ATTR__COUNT; id++) {
        unsigned bit = tlen ? (tail[(size_t)id / 8 % tlen] >> (id % 8)) & 1 : (seed + (unsigned)id) % 3 != 0;
        if (bit) {
            struct keel_value v;
            fuzz_value(id, seed + (unsigned)id, &v, src, len);
            keel_attr_bag_set(&bag, id, &v);
        }
    }
    struct keel_value out;
    const char *msg = NULL;
    if (keel_expr_eval(e, &bag, &out, &msg) == 0) {
        /* a CEL expression typed DYN (dyn(), list elements, ...) has its type at run time */
        if (out.type != keel_expr_result_type(e) && keel_expr_result_type(e) != KEEL_VALUE_DYN)
            __builtin_trap();
        struct keel_buf b = { 0 };
        keel_value_format_json(&out, &b);
        keel_value_format(&out, &b);
        keel_buf_release(&b);
    } else if (!msg || !msg[0]) {
        __builtin_trap();
    }
    keel_expr_free(e);
    return 0;
}
