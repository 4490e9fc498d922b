/* gRPC message framing (gRPC over HTTP/2, "Length-Prefixed-Message"): each message is a
 * 1-byte compressed flag, a 4-byte big-endian length, then that many bytes. Counting them
 * as body bytes stream past needs only the position in the current prefix or message. */
#include "http/http.h"

void keel_grpc_frames_feed(struct keel_grpc_frames *f, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (f->left > 0) { /* inside a message: skip what of it is here */
            size_t k = n - i < f->left ? n - i : (size_t)f->left;
            f->left -= k;
            i += k;
            continue;
        }
        unsigned char c = (unsigned char)p[i++];
        if (f->hdr > 0) /* bytes 1..4 of the prefix: the length */
            f->len = f->len << 8 | c;
        if (++f->hdr == 5) {
            f->messages++;
            f->left = f->len;
            f->hdr = 0;
            f->len = 0;
        }
    }
}
