/* paced_load: HTTP/1.1 GET load at a fixed request rate, latency percentiles.
 *
 * usage: paced_load PORT[,PORT...] RATE CONNS SECONDS WARMUP_SECONDS [HOST_HEADER]
 *
 * Request i to a port is due at start + i/RATE, evenly spaced (h2load --rps fires all
 * connections' timers together, which measures its own bursts). A due request goes out
 * on an idle keep-alive connection to 127.0.0.1:PORT; when none is idle it waits in
 * order, and its latency still counts from when it was due (no coordinated omission, as
 * wrk2). Prints one JSON object per port: requests answered, errors (non-2xx),
 * unanswered (still in flight 2 s after the last was due), achieved rate,
 * p50/p90/p99/p99.9/max in microseconds.
 *
 * Several ports are loaded at once, each at RATE over its own CONNS connections, their
 * schedules offset by a fraction of a period. That is for comparing two paths to one
 * server (direct and through proxies): measured in the same seconds, they see the same
 * stalls of a shared machine, which move a p99 far more than the paths differ.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    int busy;
    uint64_t due_ns; /* when the request in flight was due */
    size_t len;      /* bytes of the response read so far */
    char buf[4096];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int open_conn(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("paced_load: connect");
        exit(2);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* 1 when buf holds a whole response (head + Content-Length body), 0 when more is needed. */
static int response_done(const struct conn *c, int *ok)
{
    const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    const char *cl;
    size_t head, body = 0;
    if (!end)
        return 0;
    head = (size_t)(end - c->buf) + 4;
    cl = memmem(c->buf, head, "ontent-Length:", 14);
    if (!cl)
        cl = memmem(c->buf, head, "ontent-length:", 14);
    if (cl)
        body = strtoul(cl + 14, NULL, 10);
    *ok = c->len > 9 && c->buf[9] == '2';
    return c->len >= head + body;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const uint64_t *v, size_t n, double p)
{
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return n ? (double)v[i < n ? i : n - 1] / 1e3 : 0.0;
}

/* One port under load: its connections, idle ones, schedule and latencies. */
struct target {
    int port;
    struct conn *conns;
    int *idle, nidle;
    uint64_t offset_ns; /* this port's schedule, shifted within a period */
    size_t sent, nlat, errors, inflight;
    uint64_t *lat;
};

#define MAX_TARGETS 8

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: paced_load PORT[,PORT...] RATE CONNS SECONDS WARMUP_SECONDS [HOST]\n");
        return 2;
    }
    int nconn = atoi(argv[3]), ntargets = 0;
    double rate = atof(argv[2]), secs = atof(argv[4]), warm = atof(argv[5]);
    char req[512];
    int reqlen = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: paced\r\n\r\n",
                          argc > 6 ? argv[6] : "bench");
    uint64_t period = (uint64_t)(1e9 / rate);
    size_t total = (size_t)((secs + warm) * rate), cap = (size_t)(secs * rate) + 16;
    struct target tg[MAX_TARGETS];
    int ep = epoll_create1(0);

    for (char *p = argv[1], *end; *p; p = end + (*end == ',')) {
        long port = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || port <= 0 || port > 65535 ||
            ntargets == MAX_TARGETS) {
            fprintf(stderr, "paced_load: bad port list '%s' (at most %d ports)\n", argv[1], MAX_TARGETS);
            return 2;
        }
        struct target *t = &tg[ntargets++];
        memset(t, 0, sizeof *t);
        t->port = (int)port;
        t->conns = calloc((size_t)nconn, sizeof *t->conns);
        t->idle = calloc((size_t)nconn, sizeof *t->idle);
        t->lat = calloc(cap, sizeof *t->lat);
    }
    for (int k = 0; k < ntargets; k++) {
        struct target *t = &tg[k];
        t->offset_ns = period * (uint64_t)k / (uint64_t)ntargets;
        for (int i = 0; i < nconn; i++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)(k * nconn + i)};
            t->conns[i].fd = open_conn(t->port);
            epoll_ctl(ep, EPOLL_CTL_ADD, t->conns[i].fd, &ev);
            t->idle[t->nidle++] = i;
        }
    }
    uint64_t start = now_ns(), measure_from = start + (uint64_t)(warm * 1e9);
    uint64_t stop_at = start + (uint64_t)((secs + warm) * 1e9) + 2000000000u;
    for (;;) {
        uint64_t t = now_ns(), next_due = UINT64_MAX;
        int pending = 0;
        for (int k = 0; k < ntargets; k++) {
            struct target *g = &tg[k];
            /* send what is due, oldest first, while a connection is idle */
            while (g->sent < total && g->nidle && start + g->offset_ns + g->sent * period <= t) {
                struct conn *c = &g->conns[g->idle[--g->nidle]];
                c->due_ns = start + g->offset_ns + g->sent * period;
                c->len = 0;
                c->busy = 1;
                if (write(c->fd, req, (size_t)reqlen) != reqlen) {
                    g->errors++;
                    c->busy = 0;
                } else {
                    g->inflight++;
                }
                g->sent++;
            }
            if (g->sent < total && g->nidle) {
                uint64_t due = start + g->offset_ns + g->sent * period;
                next_due = due < next_due ? due : next_due;
            }
            pending |= g->sent < total || g->inflight;
        }
        if (!pending || t >= stop_at)
            break;
        struct epoll_event evs[64];
        struct timespec to = {0, 100000000}; /* all busy or all sent: wait for responses */
        if (next_due != UINT64_MAX) {
            uint64_t wait = next_due > t ? next_due - t : 0;
            to.tv_sec = (time_t)(wait / 1000000000u);
            to.tv_nsec = (long)(wait % 1000000000u);
        }
        int n = epoll_pwait2(ep, evs, 64, &to, NULL);
        for (int i = 0; i < n; i++) {
            int id = (int)(evs[i].data.u32 % (uint32_t)nconn), ok = 0;
            struct target *g = &tg[evs[i].data.u32 / (uint32_t)nconn];
            struct conn *c = &g->conns[id];
            ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                fprintf(stderr, "paced_load: connection %d to port %d closed\n", id, g->port);
                return 3;
            }
            c->len += (size_t)r;
            if (!c->busy || !response_done(c, &ok))
                continue;
            uint64_t done = now_ns();
            if (!ok)
                g->errors++;
            if (c->due_ns >= measure_from && g->nlat < cap)
                g->lat[g->nlat++] = done - c->due_ns;
            c->busy = 0;
            g->inflight--;
            g->idle[g->nidle++] = id;
        }
    }
    double elapsed = (double)(now_ns() - measure_from) / 1e9;
    for (int k = 0; k < ntargets; k++) {
        struct target *g = &tg[k];
        qsort(g->lat, g->nlat, sizeof *g->lat, cmp_u64);
        printf("{\"port\": %d, \"requests\": %zu, \"errors\": %zu, \"unanswered\": %zu, "
               "\"achieved_rps\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
               "\"p999_us\": %.1f, \"max_us\": %.1f}\n",
               g->port, g->nlat, g->errors, g->inflight, (double)g->nlat / elapsed,
               pct_us(g->lat, g->nlat, 50), pct_us(g->lat, g->nlat, 90),
               pct_us(g->lat, g->nlat, 99), pct_us(g->lat, g->nlat, 99.9),
               pct_us(g->lat, g->nlat, 100));
        for (int i = 0; i < nconn; i++)
            close(g->conns[i].fd);
        free(g->conns);
        free(g->idle);
        free(g->lat);
    }
    close(ep);
    return 0;
}
