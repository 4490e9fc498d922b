/* A session as a tunnel: bytes both ways with half-close passed on, for TCP routes and
 * for HTTP connections after a 101 Switching Protocols. */
#include "proxy/session_int.h"

#include "core/err.h"

#include <sys/socket.h>

/* One direction of a tunnel: from's socket -> buf -> to's socket. Returns progress; sets
 * *eof when from has closed and everything read was written. */
static bool pump(struct keel_loop *l, struct keel_io *from, struct keel_buf *buf,
                 struct keel_io *to, bool *eof, uint64_t *count, bool *err)
{
    bool progress = false;
    for (;;) {
        if (keel_buf_len(buf) > 0 && to->writable) {
            ssize_t n = session_flush(l, to, buf);
            if (n < 0) {
                *err = true;
                return progress;
            }
            if (n > 0)
                progress = true;
        }
        if (*eof || keel_buf_len(buf) > 0 || !from->readable)
            break;
        ssize_t n = session_read(from, buf, READ_CHUNK);
        if (n > 0) {
            *count += (uint64_t)n;
            progress = true;
            continue;
        }
        if (n == 0 || n == KEEL_EIO) {
            *eof = true;
            progress = true;
        }
        break;
    }
    return progress;
}

bool session_tunnel(struct session *s)
{
    struct upconn *u = s->u;
    bool err = false, progress = false;
    uint64_t up_bytes = 0, down_bytes = 0;
    /* what was already buffered (the 101 head, early bytes) goes first */
    if (keel_buf_len(&s->in) > 0 && keel_buf_len(&u->out) == 0) {
        up_bytes += keel_buf_len(&s->in);
        keel_buf_append(&u->out, keel_buf_rptr(&s->in), keel_buf_len(&s->in));
        keel_buf_consume(&s->in, keel_buf_len(&s->in));
    }
    if (keel_buf_len(&s->out) > 0 && s->io.writable) {
        if (session_flush(s->w->loop, &s->io, &s->out) < 0)
            err = true;
    }
    if (!err && pump(s->w->loop, &s->io, &u->out, &u->io, &s->ds_eof, &up_bytes, &err))
        progress = true;
    if (!err && keel_buf_len(&s->out) == 0 &&
        pump(s->w->loop, &u->io, &u->in, &s->io, &s->us_eof, &down_bytes, &err))
        progress = true;
    s->bytes_received += up_bytes;
    s->bytes_sent += down_bytes;
    if (s->spec->kind == LISTEN_TCP) {
        stat_add(&s->w->stats.tcp_bytes_received, up_bytes);
        stat_add(&s->w->stats.tcp_bytes_sent, down_bytes);
    }
    if (progress)
        session_touch(s);
    /* half-close: pass a FIN on once its side's bytes are all written */
    if (s->ds_eof && !s->req_done && keel_buf_len(&u->out) == 0) {
        shutdown(u->io.fd, SHUT_WR);
        s->req_done = true;
    }
    if (s->us_eof && !s->res_done && keel_buf_len(&u->in) == 0) {
        shutdown(s->io.fd, SHUT_WR);
        s->res_done = true;
    }
    if (err || (s->req_done && s->res_done)) {
        session_abort_exchange(s, 0, NULL);
        return false;
    }
    return progress;
}
