/* libFuzzer target: the chunked body decoder alone. The first byte picks how the rest is
 * cut into reads (as the proxy feeds it: unconsumed bytes stay, more are appended); the
 * decoder must say the same thing, with the same data, whatever the cut: a decoder whose
 * verdict depends on read boundaries is a smuggling vector. */
#include "core/err.h"
#include "http/http.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct run {
    int rc;          /* KEEL_CHUNK_DONE, KEEL_CHUNK_MORE or KEEL_EINVAL */
    size_t used;     /* bytes consumed when done */
    size_t out_len;  /* data bytes decoded */
    uint64_t sum;    /* a checksum of the data, position-weighted */
};

static struct run decode(const char *p, size_t len, size_t piece)
{
    struct keel_http_chunked c = { 0 };
    struct run r = { KEEL_CHUNK_MORE, 0, 0, 0 };
    size_t pos = 0, avail = len < piece ? len : piece;
    while (pos < avail) {
        size_t consumed = 0, off = 0, dlen = 0, have = avail - pos;
        int rc = keel_http_chunked_step(&c, p + pos, have, &consumed, &off, &dlen);
        if (rc < 0) {
            r.rc = KEEL_EINVAL;
            return r;
        }
        if (consumed > have)
            __builtin_trap();
        if (rc == KEEL_CHUNK_DATA) {
            if (dlen == 0 || off + dlen > consumed)
                __builtin_trap();
            for (size_t i = 0; i < dlen; i++)
                r.sum = r.sum * 31 + (unsigned char)p[pos + off + i];
            r.out_len += dlen;
        } else if (rc == KEEL_CHUNK_MORE) {
            if (consumed != have)
                __builtin_trap();
        } else if (rc != KEEL_CHUNK_DONE) {
            __builtin_trap();
        }
        pos += consumed;
        if (rc == KEEL_CHUNK_DONE) {
            r.rc = rc;
            r.used = pos;
            return r;
        }
        if (pos == avail)
            avail = len - avail < piece ? len : avail + piece;
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *p = (const char *)data + 1;
    size_t len = size - 1;
    size_t piece = 1 + data[0] % 17;
    struct run whole = decode(p, len, len > 0 ? len : 1);
    struct run cut = decode(p, len, piece);
    if (whole.rc != cut.rc || whole.used != cut.used || whole.out_len != cut.out_len ||
        whole.sum != cut.sum)
        __builtin_trap();
    if (whole.rc == KEEL_CHUNK_DONE && (whole.used == 0 || whole.out_len >= whole.used))
        __builtin_trap();
    return 0;
}
