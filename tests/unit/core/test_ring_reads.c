/* Ring reads (core/recvq.c): the loop receives for an io with ring_reads and calls it as an
 * epoll edge would; its owner takes the bytes with keel_io_recv. Each test runs the loop
 * with a guard timer, so that a lost wake-up fails instead of hanging. */
#include "core/loop.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/recvq.h"
#include "loop_guard.h"
#include "net/sock.h"

struct owner {
    struct keel_io io;
    struct keel_loop *l;
    struct keel_buf in;
    bool reading;   /* takes what came each time it is called */
    int calls, eof, err;
    uint32_t events; /* all it was called with */
    size_t stop_at;  /* stop the loop once this many bytes are in (0: at EOF or error) */
};

static void take(struct owner *o)
{
    for (;;) {
        ssize_t n = keel_io_recv(&o->io, &o->in, 1 << 20);
        if (n > 0)
            continue;
        if (n == 0)
            o->eof++;
        else if (n == KEEL_EIO)
            o->err = errno;
        else
            assert_int_equal(n, KEEL_AGAIN);
        break;
    }
    if ((o->stop_at == 0 && (o->eof || o->err)) ||
        (o->stop_at != 0 && keel_buf_len(&o->in) >= o->stop_at))
        keel_loop_stop(o->l);
}

static void on_owner(struct keel_io *io, uint32_t events)
{
    struct owner *o = (struct owner *)io;
    o->calls++;
    o->events |= events;
    if (o->reading)
        take(o);
}

static struct keel_loop *ring_loop(void)
{
    struct keel_loop *l = keel_loop_new();
    assert_true(keel_loop_use_sendq(l, true));
    assert_true(keel_loop_ring_reads(l)); /* io_uring multishot recv: Linux >= 6.1 */
    return l;
}

static void owner_init(struct owner *o, struct keel_loop *l, int fd)
{
    *o = (struct owner){ .l = l, .reading = true };
    o->io = (struct keel_io){ .fd = fd, .cb = on_owner, .writable = true, .ring_reads = true };
}

/* o on one end of a new socket pair, added to l; returns the peer's end. */
static int owner_on_pair(struct owner *o, struct keel_loop *l)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    owner_init(o, l, sv[0]);
    assert_int_equal(keel_loop_add(l, &o->io), 0);
    return sv[1];
}

static void owner_close(struct owner *o)
{
    keel_loop_del(o->l, &o->io);
    close(o->io.fd);
    keel_buf_release(&o->in);
}

/* Connected TCP sockets on 127.0.0.1 (a reset needs TCP), non-blocking. */
static void tcp_pair(int *a, int *b)
{
    struct keel_addr any;
    assert_int_equal(keel_addr_parse("127.0.0.1:0", &any), 0);
    int lfd = keel_sock_listen(&any, false);
    assert_true(lfd >= 0);
    struct keel_addr bound;
    keel_sock_local(lfd, &bound);
    int rc = keel_sock_connect(&bound, a);
    assert_true(rc == 0 || rc == KEEL_AGAIN);
    struct keel_addr peer;
    for (int i = 0; i < 1000 && (*b = keel_sock_accept(lfd, &peer)) < 0; i++)
        usleep(1000);
    assert_true(*b >= 0);
    close(lfd);
}

/* Bytes, then the FIN: all bytes in order, then EOF, the last call with EPOLLRDHUP. */
static void ring_reads_deliver_bytes_then_eof(void **state)
{
    (void)state;
    struct keel_loop *l = ring_loop();
    struct owner o;
    int peer = owner_on_pair(&o, l);
    assert_true(keel_io_ring_reads(&o.io));
    assert_int_equal(write(peer, "hel", 3), 3);
    assert_int_equal(write(peer, "lo", 2), 2);
    close(peer);
    assert_false(run_for(l, 2000));
    assert_int_equal(keel_buf_len(&o.in), 5);
    assert_memory_equal(keel_buf_rptr(&o.in), "hello", 5);
    assert_true(o.eof >= 1); /* an EPOLLHUP of the epoll set may call it once more */
    assert_true(o.events & EPOLLRDHUP);
    assert_int_equal(keel_io_recv(&o.io, &o.in, 10), 0); /* EOF stays */
    owner_close(&o);
    keel_loop_free(l);
}

/* A peer that sends 4 MiB to an owner that does not read: the loop stops receiving for it
 * once KEEL_RECVQ_HIGH wait (it holds at most that and one pass of the kernel's copying)
 * and the rest waits in the socket (the peer meets a full one); once the owner reads,
 * every byte comes, in order. */
static void an_owner_that_does_not_read_holds_a_bounded_backlog(void **state)
{
    (void)state;
    struct keel_loop *l = ring_loop();
    struct owner o;
    int peer = owner_on_pair(&o, l);
    o.reading = false;
    enum { TOTAL = 4 << 20 };
    static unsigned char pattern[TOTAL];
    for (size_t i = 0; i < TOTAL; i++)
        pattern[i] = (unsigned char)(i * 7 + i / 4096);
    size_t sent = 0, held = 0;
    for (int round = 0; round < 20; round++) { /* write, let the loop receive, again */
        ssize_t n;
        while (sent < TOTAL && (n = write(peer, pattern + sent, TOTAL - sent)) > 0)
            sent += (size_t)n;
        run_for(l, 5);
        size_t now = keel_buf_len(&o.io.rx.buf);
        assert_true(now <= KEEL_RECVQ_HIGH + KEEL_RECVQ_PASS);
        if (round >= 5) /* stopped by then: it holds, it takes no more */
            assert_int_equal(now, held);
        held = now;
    }
    assert_true(sent < TOTAL);              /* the peer met a full socket */
    assert_true(held >= KEEL_RECVQ_HIGH);   /* and the loop had its share */
    o.reading = true;
    o.stop_at = TOTAL;
    take(&o);
    while (keel_buf_len(&o.in) < TOTAL) { /* the peer writes between the loop's runs */
        ssize_t n;
        while (sent < TOTAL && (n = write(peer, pattern + sent, TOTAL - sent)) > 0)
            sent += (size_t)n;
        size_t before = keel_buf_len(&o.in);
        run_for(l, 20);
        assert_true(keel_buf_len(&o.in) > before); /* received again after the stop */
    }
    assert_int_equal(keel_buf_len(&o.in), TOTAL);
    assert_memory_equal(keel_buf_rptr(&o.in), pattern, TOTAL);
    close(peer);
    owner_close(&o);
    keel_loop_free(l);
}

/* An io deleted while its recv runs: no call after the delete, and its socket really
 * closes (the ring held a reference to it until the cancel went): the peer reads EOF. */
static void a_deleted_io_gets_no_call_and_its_socket_closes(void **state)
{
    (void)state;
    struct keel_loop *l = ring_loop();
    struct owner o;
    int peer = owner_on_pair(&o, l);
    assert_true(run_for(l, 20)); /* the recv is armed and waits */
    assert_int_equal(write(peer, "x", 1), 1);
    owner_close(&o); /* before the loop took the byte */
    int calls = o.calls;
    assert_int_equal(write(peer, "y", 1), 1);
    assert_true(run_for(l, 20));
    assert_int_equal(o.calls, calls);
    char c;
    ssize_t n = read(peer, &c, 1); /* EOF, or a reset for the bytes it never read */
    assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
    /* the slot is free again and serves the next io */
    struct owner o2;
    int peer2 = owner_on_pair(&o2, l);
    o2.stop_at = 2;
    assert_int_equal(write(peer2, "ok", 2), 2);
    assert_false(run_for(l, 2000));
    assert_memory_equal(keel_buf_rptr(&o2.in), "ok", 2);
    owner_close(&o2);
    close(peer);
    close(peer2);
    keel_loop_free(l);
}

/* A reset after some bytes: the bytes, then KEEL_EIO with ECONNRESET; the call says
 * EPOLLERR. */
static void a_reset_comes_after_the_bytes(void **state)
{
    (void)state;
    struct keel_loop *l = ring_loop();
    int a, b;
    tcp_pair(&a, &b);
    struct owner o;
    owner_init(&o, l, a);
    assert_int_equal(keel_loop_add(l, &o.io), 0);
    assert_int_equal(write(b, "bye", 3), 3);
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    assert_int_equal(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(b);
    assert_false(run_for(l, 2000));
    assert_int_equal(keel_buf_len(&o.in), 3);
    assert_memory_equal(keel_buf_rptr(&o.in), "bye", 3);
    assert_int_equal(o.err, ECONNRESET);
    assert_true(o.events & EPOLLERR);
    owner_close(&o);
    keel_loop_free(l);
}

/* A connect that fails: an io added while connecting gets no recv, so SO_ERROR still
 * tells why (a recv armed at once took the error: the proxy then saw a connection that
 * "succeeded" and died, and said "connection termination" instead of "connection
 * failure"). */
static void on_connecting(struct keel_io *io, uint32_t events)
{
    struct owner *o = (struct owner *)io;
    o->calls++;
    o->err = keel_sock_connect_result(io->fd);
    keel_loop_stop(o->l);
}

static void a_failed_connect_keeps_its_error(void **state)
{
    (void)state;
    struct keel_loop *l = ring_loop();
    struct keel_addr any, dead;
    assert_int_equal(keel_addr_parse("127.0.0.1:0", &any), 0);
    int lfd = keel_sock_listen(&any, false);
    keel_sock_local(lfd, &dead);
    close(lfd); /* nothing listens there now */
    int fd;
    int rc = keel_sock_connect(&dead, &fd);
    if (rc == KEEL_EIO) { /* refused at once: nothing to test on this kernel */
        assert_int_equal(errno, ECONNREFUSED);
        keel_loop_free(l);
        return;
    }
    struct owner o;
    owner_init(&o, l, fd);
    o.io.cb = on_connecting;
    o.io.connecting = true;
    assert_int_equal(keel_loop_add(l, &o.io), 0);
    assert_false(keel_io_ring_reads(&o.io));
    assert_false(run_for(l, 2000));
    assert_int_equal(o.err, ECONNREFUSED);
    owner_close(&o);
    keel_loop_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ring_reads_deliver_bytes_then_eof),
        cmocka_unit_test(an_owner_that_does_not_read_holds_a_bounded_backlog),
        cmocka_unit_test(a_deleted_io_gets_no_call_and_its_socket_closes),
        cmocka_unit_test(a_reset_comes_after_the_bytes),
        cmocka_unit_test(a_failed_connect_keeps_its_error),
    };
    return cmocka_run_group_tests_name("core/ring_reads", tests, NULL, NULL);
}
