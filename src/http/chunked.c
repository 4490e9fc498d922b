/* Incremental chunked-body decoder (RFC 9112 §7.1). Chunk extensions are skipped,
 * trailers are consumed and dropped (or returned, with want_trailers); sizes over 2^60 and lines over a few KiB are
 * refused, as are missing CRLFs after data (a classic smuggling vector). */
#include "http/http.h"

#include "core/err.h"

enum { ST_SIZE, ST_EXT, ST_SIZE_LF, ST_DATA, ST_DATA_CR, ST_DATA_LF, ST_TRAILER,
       ST_TRAILER_LINE, ST_TRAILER_LF, ST_LAST_LF, ST_DONE };

#define MAX_LINE 4096
#define MAX_TRAILERS 16384

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int keel_http_chunked_step(struct keel_http_chunked *c, const char *p, size_t len,
                           size_t *consumed, size_t *data_off, size_t *data_len)
{
    size_t i = 0;
    while (i < len) {
        char ch = p[i];
        switch (c->state) {
        case ST_SIZE: {
            int h = hexval(ch);
            if (h >= 0) {
                if (c->remaining >> 56)
                    return KEEL_EINVAL;
                c->remaining = c->remaining * 16 + (uint64_t)h;
                if (++c->line_bytes > 16)
                    return KEEL_EINVAL;
                i++;
                break;
            }
            if (c->line_bytes == 0)
                return KEEL_EINVAL;
            if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = ST_EXT;
            } else if (ch == '\r') {
                c->state = ST_SIZE_LF;
                i++;
            } else if (ch == '\n') {
                c->state = ST_SIZE_LF;
            } else {
                return KEEL_EINVAL;
            }
            break;
        }
        case ST_EXT:
            if (ch == '\r') {
                c->state = ST_SIZE_LF;
            } else if (ch == '\n') {
                c->state = ST_SIZE_LF;
                break;
            } else if ((unsigned char)ch < 0x20 && ch != '\t') {
                return KEEL_EINVAL;
            }
            if (++c->line_bytes > MAX_LINE)
                return KEEL_EINVAL;
            i++;
            break;
        case ST_SIZE_LF:
            if (ch != '\n')
                return KEEL_EINVAL;
            i++;
            c->line_bytes = 0;
            c->state = c->remaining == 0 ? ST_TRAILER : ST_DATA;
            break;
        case ST_DATA: {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = ST_DATA_CR;
            *data_off = i;
            *data_len = n;
            *consumed = i + n;
            return KEEL_CHUNK_DATA;
        }
        case ST_DATA_CR:
            if (ch == '\r') {
                c->state = ST_DATA_LF;
                i++;
            } else if (ch == '\n') {
                c->state = ST_DATA_LF;
            } else {
                return KEEL_EINVAL;
            }
            break;
        case ST_DATA_LF:
            if (ch != '\n')
                return KEEL_EINVAL;
            i++;
            c->state = ST_SIZE;
            break;
        case ST_TRAILER: /* at the start of a trailer line or the final empty line */
            if (ch == '\r') {
                c->state = ST_LAST_LF;
                i++;
            } else if (ch == '\n') {
                c->state = ST_LAST_LF;
            } else {
                c->state = ST_TRAILER_LINE;
            }
            break;
        case ST_TRAILER_LINE:
            if (c->want_trailers) { /* the rest of the line, as one span: passed on, so
                                      * held to a header line's bytes (CR only before LF,
                                      * no other control byte, no DEL) */
                size_t start = i;
                if (c->trailer_cr && p[i] != '\n')
                    return KEEL_EINVAL; /* a CR that ended the previous piece was bare */
                c->trailer_cr = false;
                for (; i < len && p[i] != '\n'; i++) {
                    unsigned char b = (unsigned char)p[i];
                    if ((b < 0x20 && b != '\t' && b != '\r') || b == 0x7f)
                        return KEEL_EINVAL;
                    if (b == '\r') {
                        if (i + 1 == len)
                            c->trailer_cr = true;
                        else if (p[i + 1] != '\n')
                            return KEEL_EINVAL;
                    }
                    if (++c->trailer_bytes > MAX_TRAILERS)
                        return KEEL_EINVAL;
                }
                if (i < len) {
                    c->state = ST_TRAILER;
                    i++;
                }
                *data_off = start;
                *data_len = i - start;
                *consumed = i;
                return KEEL_CHUNK_TRAILER;
            }
            if (ch == '\n') {
                c->state = ST_TRAILER;
            } else if ((unsigned char)ch < 0x20 && ch != '\t' && ch != '\r') {
                return KEEL_EINVAL;
            }
            if (++c->trailer_bytes > MAX_TRAILERS)
                return KEEL_EINVAL;
            i++;
            break;
        case ST_LAST_LF:
            if (ch != '\n')
                return KEEL_EINVAL;
            c->state = ST_DONE;
            *consumed = i + 1;
            return KEEL_CHUNK_DONE;
        case ST_DONE:
            *consumed = i;
            return KEEL_CHUNK_DONE;
        default:
            return KEEL_EINVAL;
        }
    }
    *consumed = i;
    return KEEL_CHUNK_MORE;
}
