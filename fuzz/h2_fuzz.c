/* libFuzzer target: an HTTP/2 server session (src/http/h2.c over nghttp2) fed frames, with
 * callbacks that do what the proxy does: answer each request with a body and trailers,
 * consume DATA, reset now and then. The first byte picks how the rest is cut into reads.
 * Whatever the input: no crash, no leak, output bounded, and once the session has refused
 * the input it refuses the rest. */
#include "core/err.h"
#include "http/h2.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct fz_stream {
    int32_t id;
    int sent;
    bool used;
};

struct fz {
    struct keel_h2 *h;
    struct fz_stream st[128]; /* the owner's stream contexts (no allocation to leak) */
};

static void *fz_open(void *arg, int32_t id)
{
    struct fz *f = arg;
    for (size_t i = 0; i < 128; i++)
        if (!f->st[i].used) {
            f->st[i] = (struct fz_stream){ id, 0, true };
            return &f->st[i];
        }
    return NULL; /* refused */
}

static int fz_header(void *arg, void *st, const struct keel_h2_nv *nv, bool trailer)
{
    /* the owner refuses a header now and then (as a bad request head would be) */
    return nv->name_len == 5 && !memcmp(nv->name, "x-bad", 5) ? -1 : 0;
}

static void fz_headers_done(void *arg, void *stp, bool end_stream, bool trailer)
{
    struct fz *f = arg;
    struct fz_stream *st = stp;
    if (trailer)
        return;
    static const struct keel_h2_nv head[] = { { ":status", 7, "200", 3 } };
    keel_h2_submit_response(f->h, st->id, head, 1, st->id % 3 != 0);
    if (st->id % 7 == 0)
        keel_h2_reset(f->h, st->id, KEEL_H2_CANCEL);
}

static void fz_data(void *arg, void *stp, const uint8_t *p, size_t n)
{
    struct fz *f = arg;
    keel_h2_consume(f->h, ((struct fz_stream *)stp)->id, n);
}

static void fz_end(void *arg, void *st) {}

static ssize_t fz_read(void *arg, void *stp, uint8_t *buf, size_t len, uint32_t *flags)
{
    struct fz *f = arg;
    struct fz_stream *st = stp;
    if (st->sent++ >= 2) {
        static const struct keel_h2_nv tr[] = { { "grpc-status", 11, "0", 1 } };
        keel_h2_submit_trailers(f->h, st->id, tr, 1);
        *flags |= KEEL_H2_READ_EOF;
        return 0;
    }
    size_t n = len < 100 ? len : 100;
    memset(buf, 'b', n);
    return (ssize_t)n;
}

static void fz_close(void *arg, void *st, uint32_t code)
{
    ((struct fz_stream *)st)->used = false;
}

static const struct keel_h2_callbacks fz_cbs = {
    .open_stream = fz_open, .header = fz_header, .headers_done = fz_headers_done,
    .data = fz_data, .end_stream = fz_end, .read_body = fz_read, .stream_close = fz_close,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t piece = 1 + data[0] % 64;
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    struct fz f = { 0 };
    f.h = keel_h2_new(true, &fz_cbs, &f, NULL);
    struct keel_buf out = { 0 };
    bool failed = false;
    for (size_t i = 0; i < len; i += piece) {
        size_t n = len - i < piece ? len - i : piece;
        keel_h2_set_now(f.h, (int64_t)i); /* time moves with the input */
        ssize_t rc = keel_h2_recv(f.h, p + i, n);
        if (failed && rc != KEEL_EINVAL)
            __builtin_trap();
        if (rc < 0)
            failed = true;
        else if ((size_t)rc != n)
            __builtin_trap();
        keel_h2_send(f.h, &out, 1 << 16);
        if (keel_buf_len(&out) > (1 << 16) + (1 << 15))
            __builtin_trap();
        keel_buf_consume(&out, keel_buf_len(&out));
    }
    keel_h2_free(f.h);
    keel_buf_release(&out);
    return 0;
}
