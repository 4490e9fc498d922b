/* fwd_uring: fwd_epoll's forwarder on io_uring, to measure what the ring saves per request.
 * Same framing and per-connection state machine (fwd_http.h); the difference is the loop:
 * every recv is armed once (multishot, provided buffer ring) or re-armed per completion
 * (-s), sends are SQEs, and each loop turn is ONE io_uring_submit_and_wait, so a turn's
 * sends and re-arms cost one kernel entry instead of a syscall each.
 *   -s  single-shot recv straight into the connection's buffer (no buffer ring)
 *   -c  COOP_TASKRUN instead of DEFER_TASKRUN (completions run as task work on any entry)
 *   -f  registered (fixed) files for the sockets: no fget/fput per operation
 *   -b N  wait for N completions a turn (at most 50 us more; after a turn with none,
 *         plain blocking): with DEFER_TASKRUN the kernel wakes the loop only then, so
 *         fewer turns and wake-ups for some latency */
#include "fwd_http.h"

#include <errno.h>
#include <liburing.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

enum state { IDLE, WAIT_RES, SENDING_RES };
/* user_data = conn pointer | op (conns are malloc-aligned, 3 low bits are free) */
enum { OP_RECV = 1, OP_SEND = 3, OP_ACCEPT = 5 };   /* + side: 0 client, 1 upstream */

#define NBUFS 1024                /* provided buffers: enough for 50 conns x 2 sides */
#define BUFSZ 2048
#define BGID 0
#define NFILES 4096               /* fixed-file table: slot = the socket's fd */

struct conn {
    int fd[2];                    /* 0: client, 1: upstream */
    enum state st;
    long req_len;
    const char *wr_p;             /* the send in flight (at most one per conn) */
    size_t wr_left;
    int wr_side;
    size_t rx_off[2];             /* single-shot: where the armed recv writes */
    int inflight;                 /* SQEs not finished: the conn is freed at 0 once dead */
    int dead;
    struct conn *prev, *next;
    size_t len[2];                /* buf[0]: from the client, buf[1]: from upstream */
    char buf[2][FWD_BUF];
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static unsigned br_added;         /* buffers given back this turn, published at its end */
static int multishot = 1, fixed;
static unsigned batch = 1;
static struct conn *all;
static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) {                     /* SQ full: flush early (not reached with 50 conns) */
        io_uring_submit(&ring);
        s = io_uring_get_sqe(&ring);
    }
    return s;
}

static void set_fd(struct io_uring_sqe *s)
{
    if (fixed)                    /* the slot is the fd number, registered at accept */
        s->flags |= IOSQE_FIXED_FILE;
}

static void arm_recv(struct conn *c, int side)
{
    struct io_uring_sqe *s = sqe_get();
    if (multishot) {
        io_uring_prep_recv_multishot(s, c->fd[side], NULL, 0, 0);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = BGID;
    } else {
        c->rx_off[side] = c->len[side];
        io_uring_prep_recv(s, c->fd[side], c->buf[side] + c->len[side],
                           FWD_BUF - c->len[side], 0);
    }
    set_fd(s);
    io_uring_sqe_set_data64(s, (uintptr_t)c | (uintptr_t)(OP_RECV + side));
    c->inflight++;
}

static void arm_send(struct conn *c)
{
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_send(s, c->fd[c->wr_side], c->wr_p, c->wr_left, MSG_NOSIGNAL);
    set_fd(s);
    io_uring_sqe_set_data64(s, (uintptr_t)c | (uintptr_t)(OP_SEND + c->wr_side));
    c->inflight++;
}

static void free_conn(struct conn *c)
{
    if (c->prev) c->prev->next = c->next; else all = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
}

/* shutdown ends the armed recvs (they complete with 0); the conn goes when they have. */
static void kill_conn(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    for (int i = 0; i < 2; i++) {
        shutdown(c->fd[i], SHUT_RDWR);
        if (fixed) {
            int none = -1;
            io_uring_register_files_update(&ring, (unsigned)c->fd[i], &none, 1);
        }
        close(c->fd[i]);
    }
    if (c->inflight == 0)
        free_conn(c);
}

static void send_msg(struct conn *c, int side, const char *p, size_t n)
{
    c->wr_side = side;
    c->wr_p = p;
    c->wr_left = n;
    arm_send(c);
}

/* fwd_epoll's advance(), with the write as an SQE that completes later. */
static void advance(struct conn *c)
{
    while (!c->dead && c->wr_left == 0) {
        if (c->st == IDLE) {
            long m = fwd_msg_len(c->buf[0], c->len[0]);
            if (m <= 0) {
                if (m < 0) kill_conn(c);
                return;
            }
            c->req_len = m;
            c->st = WAIT_RES;
            send_msg(c, 1, c->buf[0], (size_t)m);
        } else if (c->st == WAIT_RES) {
            long r = fwd_msg_len(c->buf[1], c->len[1]);
            if (r <= 0 || (size_t)r != c->len[1]) {
                if (r != 0) kill_conn(c);
                return;
            }
            c->st = SENDING_RES;
            send_msg(c, 0, c->buf[1], (size_t)r);
        } else {
            c->len[0] -= (size_t)c->req_len;
            memmove(c->buf[0], c->buf[0] + c->req_len, c->len[0]);
            c->len[1] = 0;
            c->st = IDLE;
        }
    }
}

static void on_recv(struct conn *c, int side, int res, unsigned flags)
{
    int more = flags & IORING_CQE_F_MORE;
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && !c->dead) {
            if (c->len[side] + (size_t)res > FWD_BUF) {
                kill_conn(c);
            } else {
                memcpy(c->buf[side] + c->len[side], bufs + (size_t)bid * BUFSZ, (size_t)res);
                c->len[side] += (size_t)res;
            }
        }
        io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid,
                              io_uring_buf_ring_mask(NBUFS), (int)br_added++);
    } else if (res > 0 && !c->dead) {
        /* advance() may have consumed a message since the recv was armed: the bytes
         * landed at rx_off, the data now ends at len (never after rx_off) */
        if (c->rx_off[side] != c->len[side])
            memmove(c->buf[side] + c->len[side], c->buf[side] + c->rx_off[side], (size_t)res);
        c->len[side] += (size_t)res;
    }
    if (!more)
        c->inflight--;
    if (c->dead) {
        if (c->inflight == 0)
            free_conn(c);
        return;
    }
    if (res <= 0 && res != -ENOBUFS) {   /* EOF or error on either side ends both */
        kill_conn(c);
        return;
    }
    if (!more) {
        /* single-shot: a request waits in buf[0] while its response comes, so the
         * re-armed recv appends after it; a full buffer is a message too big */
        if (!multishot && c->len[side] == FWD_BUF) {
            kill_conn(c);
            return;
        }
        arm_recv(c, side);
    }
    advance(c);
}

static void on_send(struct conn *c, int res)
{
    c->inflight--;
    if (c->dead) {
        if (c->inflight == 0)
            free_conn(c);
        return;
    }
    if (res <= 0) {
        kill_conn(c);
        return;
    }
    c->wr_p += res;
    c->wr_left -= (size_t)res;
    if (c->wr_left)
        arm_send(c);              /* short send: the rest */
    else
        advance(c);
}

static void arm_accept(int lfd)
{
    struct io_uring_sqe *s = sqe_get();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, OP_ACCEPT);
}

static void on_accept(int fd, int up_port)
{
    int ufd = fwd_connect_upstream(up_port);
    struct conn *c = ufd < 0 || (fixed && (fd >= NFILES || ufd >= NFILES)) ? NULL
                     : malloc(sizeof *c);
    if (!c) {
        if (ufd >= 0) close(ufd);
        close(fd);
        return;
    }
    memset(c, 0, offsetof(struct conn, buf));   /* the 32 KiB of buffers need no zeroing */
    fwd_nodelay(fd);
    c->fd[0] = fd;
    c->fd[1] = ufd;
    c->next = all;
    if (all) all->prev = c;
    all = c;
    if (fixed) {
        io_uring_register_files_update(&ring, (unsigned)fd, &fd, 1);
        io_uring_register_files_update(&ring, (unsigned)ufd, &ufd, 1);
    }
    arm_recv(c, 0);
    arm_recv(c, 1);
}

static int setup(int coop)
{
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_CQSIZE,
                                .cq_entries = 8192};
    p.flags |= coop ? IORING_SETUP_COOP_TASKRUN : IORING_SETUP_DEFER_TASKRUN;
    int r = io_uring_queue_init_params(1024, &ring, &p);
    if (r < 0)
        return r;
    io_uring_register_ring_fd(&ring);   /* io_uring_enter without an fget of the ring */
    if (fixed && (r = io_uring_register_files_sparse(&ring, NFILES)) < 0)
        return r;
    if (!multishot)
        return 0;
    if (posix_memalign((void **)&br, 4096, NBUFS * sizeof(struct io_uring_buf)) ||
        !(bufs = malloc((size_t)NBUFS * BUFSZ)))
        return -ENOMEM;
    struct io_uring_buf_reg reg = {.ring_addr = (uintptr_t)br, .ring_entries = NBUFS,
                                   .bgid = BGID};
    if ((r = io_uring_register_buf_ring(&ring, &reg, 0)) < 0)
        return r;
    io_uring_buf_ring_init(br);
    for (int i = 0; i < NBUFS; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUFS), i);
    io_uring_buf_ring_advance(br, NBUFS);
    return 0;
}

int main(int argc, char **argv)
{
    int port, up_port, coop = 0;
    if (fwd_args(argc, argv, &port, &up_port) < 0)
        return 2;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "-s")) multishot = 0;
        else if (!strcmp(argv[i], "-c")) coop = 1;
        else if (!strcmp(argv[i], "-f")) fixed = 1;
        else if (!strcmp(argv[i], "-b") && i + 1 < argc) batch = (unsigned)atoi(argv[++i]);
        else { fprintf(stderr, "fwd_uring: unknown option %s\n", argv[i]); return 2; }
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int lfd = fwd_listen(port, 0), r;
    if (lfd < 0 || (r = setup(coop)) < 0) {
        fprintf(stderr, "fwd_uring: setup: %s\n", lfd < 0 ? strerror(errno) : strerror(-r));
        return 1;
    }
    arm_accept(lfd);
    /* without it an idle -b loop would wake every 50 us and load the core it shares */
    int idle = 0;
    while (!stop) {
        /* -EINTR (a signal), -ETIME (batch not reached) or -EBUSY (CQ full): the CQEs
         * there are get handled below all the same */
        if (batch > 1 && !idle) {
            struct __kernel_timespec ts = {.tv_nsec = 50000};
            struct io_uring_cqe *first;
            io_uring_submit_and_wait_timeout(&ring, &first, batch, &ts, NULL);
        } else {
            io_uring_submit_and_wait(&ring, 1);
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            n++;
            uintptr_t ud = (uintptr_t)io_uring_cqe_get_data64(cqe);
            unsigned op = ud & 7;
            struct conn *c = (struct conn *)(ud & ~(uintptr_t)7);
            if (op == OP_ACCEPT) {
                if (cqe->res >= 0) on_accept(cqe->res, up_port);
                if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lfd);
            } else if (op >= OP_SEND) {
                on_send(c, cqe->res);
            } else {
                on_recv(c, (int)(op - OP_RECV), cqe->res, cqe->flags);
            }
        }
        io_uring_cq_advance(&ring, n);
        idle = n == 0;            /* a timed-out batch wait with nothing: block next turn */
        if (br_added) {           /* one release of the buffers recycled this turn */
            io_uring_buf_ring_advance(br, br_added);
            br_added = 0;
        }
    }
    while (all) {
        struct conn *c = all;
        if (!c->dead) {
            close(c->fd[0]);
            close(c->fd[1]);
        }
        free_conn(c);
    }
    io_uring_queue_exit(&ring);   /* cancels what is still armed */
    free(bufs);
    free(br);
    close(lfd);
    return 0;
}
