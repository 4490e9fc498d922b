/* keel sample-app: the listener and signals (main thread), one thread per connection
 * (capped by --concurrency; more connections wait in the listen backlog), the request
 * loop of a connection and the endpoints. Sockets stay non-blocking and every wait is a
 * poll that also watches the stop eventfd, so SIGTERM ends even a long --latency or a
 * stuck downstream call at once. */
#include "mesh/sample_app.h"

#include "mesh/sample_app_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/loop.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IDLE_TIMEOUT_MS (3600 * 1000) /* a kept-alive client connection, as keel proxy's */
#define THREAD_STACK (512 * 1024)

struct server {
    struct sa_app app;
    /* Readable while every connection slot is taken and more clients wait: idle
     * kept-alive connections then close, so a peer that pools connections (a sidecar)
     * cannot starve new ones. */
    int shed_fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int live; /* connection threads running */
};

struct conn {
    struct server *srv;
    int fd;
    struct keel_buf in;   /* request bytes; a request is parsed in place */
    struct keel_buf body; /* a chunked request body, decoded */
    struct keel_buf resp; /* the response body being built */
    struct keel_buf out;  /* head + body, as sent */
    struct sa_downs downs;
};

void keel_sample_app_options_defaults(struct keel_sample_app_options *o)
{
    memset(o, 0, sizeof(*o));
    o->name = "sample-app";
    o->version = "v1";
    o->concurrency = 1024;
}

/* ---- waiting and I/O ---- */

int sa_wait(const struct sa_app *app, int fd, short ev, int timeout_ms)
{
    struct pollfd p[2] = { { fd, ev, 0 }, { app->stop_fd, POLLIN, 0 } };
    for (;;) {
        int n = poll(p, 2, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return KEEL_EIO;
        if (n == 0)
            return KEEL_ELIMIT;
        /* An error or hang-up on fd is left for the read or write to report. */
        return p[1].revents ? KEEL_ECLOSED : 0;
    }
}

int sa_sleep(const struct sa_app *app, int64_t ms)
{
    int64_t until = keel_clock_mono_us() / 1000 + ms;
    for (;;) {
        int64_t left = until - keel_clock_mono_us() / 1000;
        if (left <= 0)
            return 0;
        struct pollfd p = { app->stop_fd, POLLIN, 0 };
        if (poll(&p, 1, (int)left) > 0)
            return KEEL_ECLOSED;
    }
}

int sa_send_all(const struct sa_app *app, int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN)
            return KEEL_EIO;
        int rc = sa_wait(app, fd, POLLOUT, SA_IO_TIMEOUT_MS);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int sa_read_more(const struct sa_app *app, int fd, struct keel_buf *b, size_t max, int timeout_ms)
{
    if (keel_buf_len(b) >= max)
        return KEEL_ELIMIT;
    keel_buf_reserve(b, 16384);
    size_t want = keel_buf_room(b);
    if (want > max - keel_buf_len(b))
        want = max - keel_buf_len(b);
    for (;;) {
        ssize_t n = recv(fd, keel_buf_wptr(b), want, 0);
        if (n > 0) {
            b->wpos += (size_t)n;
            return (int)n;
        }
        if (n == 0)
            return KEEL_ECLOSED;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return KEEL_EIO;
        int rc = sa_wait(app, fd, POLLIN, timeout_ms);
        if (rc < 0)
            return rc;
    }
}

/* ---- one request ---- */

static const char *reason(int s)
{
    switch (s) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 418: return "I'm a teapot";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:
        return s < 300 ? "OK" : s < 400 ? "Redirect" : s < 500 ? "Client Error" : "Server Error";
    }
}

static void log_line(const struct sa_app *app, const struct keel_http_request *req, int status,
                     int64_t start_us)
{
    int64_t wall = keel_clock_wall_us();
    time_t secs = (time_t)(wall / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[32];
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    /* one fprintf per line: stdio locks the stream, so threads do not interleave */
    fprintf(stdout, "%s.%03dZ %s %s %.*s %.*s %d %lldms\n", ts, (int)(wall / 1000 % 1000),
            app->o->name, app->o->version, (int)req->method.len, req->method.p,
            (int)req->target.len, req->target.p, status,
            (long long)((keel_clock_mono_us() - start_us) / 1000));
}

/* Answer a request that could not be parsed, then close. */
static void refuse(struct conn *c, int status)
{
    keel_buf_consume(&c->out, keel_buf_len(&c->out));
    keel_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                    "Connection: close\r\n\r\n%s\n", status, reason(status),
                    strlen(reason(status)) + 1, reason(status));
    sa_send_all(&c->srv->app, c->fd, keel_buf_rptr(&c->out), keel_buf_len(&c->out));
}

static int perr_status(enum keel_http_perr k)
{
    switch (k) {
    case KEEL_HTTP_PERR_URI_TOO_LONG: return 414;
    case KEEL_HTTP_PERR_HEADERS_TOO_LARGE: return 431;
    case KEEL_HTTP_PERR_VERSION: return 505;
    default: return 400;
    }
}

static const struct keel_http_limits in_limits = { 65536, 8192, 100 };

/* Between requests: wait for the next one, unless the app stops or sheds idle ones. */
static int wait_idle(struct conn *c)
{
    struct pollfd p[3] = { { c->fd, POLLIN, 0 }, { c->srv->app.stop_fd, POLLIN, 0 },
                           { c->srv->shed_fd, POLLIN, 0 } };
    for (;;) {
        int n = poll(p, 3, IDLE_TIMEOUT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        return n > 0 && p[0].revents && !p[1].revents && !p[2].revents ? 0 : KEEL_ECLOSED;
    }
}

/* Serve one request. 0 to go on with the connection, negative to close it. */
static int serve_one(struct conn *c)
{
    const struct sa_app *app = &c->srv->app;
    struct keel_http_header hs[KEEL_HTTP_MAX_HEADERS];
    struct keel_http_request req = { .headers = hs };
    struct keel_http_perror pe;
    struct keel_http_meta m;
    int rc;
    for (;;) {
        rc = keel_buf_len(&c->in) == 0 ? KEEL_AGAIN
             : keel_http_parse_request(keel_buf_rptr(&c->in), keel_buf_len(&c->in), &in_limits,
                                       &req, &pe);
        if (rc > 0)
            break;
        if (rc != KEEL_AGAIN) {
            refuse(c, perr_status(pe.kind));
            return rc;
        }
        if (keel_buf_len(&c->in) == 0 && wait_idle(c) < 0)
            return KEEL_ECLOSED;
        rc = sa_read_more(app, c->fd, &c->in, in_limits.max_head_bytes, SA_IO_TIMEOUT_MS);
        if (rc == KEEL_ELIMIT && keel_buf_len(&c->in) >= in_limits.max_head_bytes)
            refuse(c, 431);
        if (rc < 0)
            return rc;
    }
    int64_t start_us = keel_clock_mono_us();
    size_t head_len = (size_t)rc, msg_len = head_len;
    if (keel_http_analyze_request(&req, &m, &pe) < 0) {
        refuse(c, 400);
        return KEEL_EINVAL;
    }
    bool cont = m.expect_continue && m.body != KEEL_HTTP_BODY_NONE;
    keel_buf_consume(&c->body, keel_buf_len(&c->body));
    if (m.body == KEEL_HTTP_BODY_LENGTH) {
        if (m.content_length > SA_MAX_BODY) {
            refuse(c, 413);
            return KEEL_ELIMIT;
        }
        msg_len += (size_t)m.content_length;
        if (cont && keel_buf_len(&c->in) < msg_len &&
            sa_send_all(app, c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
            return KEEL_EIO;
        while (keel_buf_len(&c->in) < msg_len)
            if ((rc = sa_read_more(app, c->fd, &c->in, msg_len, SA_IO_TIMEOUT_MS)) < 0)
                return rc;
    } else if (m.body == KEEL_HTTP_BODY_CHUNKED) {
        if (cont && keel_buf_len(&c->in) == head_len &&
            sa_send_all(app, c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
            return KEEL_EIO;
        struct keel_http_chunked ch = { 0 };
        for (;;) {
            size_t used = 0, off = 0, n = 0;
            rc = msg_len == keel_buf_len(&c->in) ? KEEL_CHUNK_MORE
                 : keel_http_chunked_step(&ch, keel_buf_rptr(&c->in) + msg_len,
                                          keel_buf_len(&c->in) - msg_len, &used, &off, &n);
            if (rc < 0) {
                refuse(c, 400);
                return rc;
            }
            if (rc == KEEL_CHUNK_DATA) {
                if (keel_buf_len(&c->body) + n > SA_MAX_BODY) {
                    refuse(c, 413);
                    return KEEL_ELIMIT;
                }
                keel_buf_append(&c->body, keel_buf_rptr(&c->in) + msg_len + off, n);
            }
            msg_len += used;
            if (rc == KEEL_CHUNK_DONE)
                break;
            if (rc == KEEL_CHUNK_MORE &&
                (rc = sa_read_more(app, c->fd, &c->in, msg_len + 65536, SA_IO_TIMEOUT_MS)) < 0)
                return rc;
        }
    }
    /* Reading the body may have moved the buffer: parse the head again where it is now. */
    rc = keel_http_parse_request(keel_buf_rptr(&c->in), msg_len, &in_limits, &req, &pe);
    keel_http_analyze_request(&req, &m, &pe);
    const char *body = m.body == KEEL_HTTP_BODY_CHUNKED ? keel_buf_rptr(&c->body)
                                                        : keel_buf_rptr(&c->in) + head_len;
    size_t body_len = m.body == KEEL_HTTP_BODY_CHUNKED ? keel_buf_len(&c->body)
                                                       : msg_len - head_len;

    struct sa_answer a = { 0 };
    keel_buf_consume(&c->resp, keel_buf_len(&c->resp));
    keel_buf_consume(&c->out, keel_buf_len(&c->out));
    sa_route(app, &c->downs, &c->resp, &req, body, body_len, &a);
    if (app->o->latency_ms > 0 && !a.no_latency && sa_sleep(app, app->o->latency_ms) < 0)
        a.close = true;
    bool keep = !m.conn_close && !a.close;
    bool head_only = keel_str_eq(req.method, KEEL_STR("HEAD"));
    struct keel_buf *o = &c->out;
    keel_buf_printf(o, "HTTP/1.1 %d %s\r\n", a.status, reason(a.status));
    if (a.ctype_in.len > 0)
        keel_buf_printf(o, "Content-Type: %.*s\r\n", (int)a.ctype_in.len, a.ctype_in.p);
    else if (a.ctype != NULL)
        keel_buf_printf(o, "Content-Type: %s\r\n", a.ctype);
    if (a.extra != NULL)
        keel_buf_append_str(o, a.extra);
    if (a.status != 204)
        keel_buf_printf(o, "Content-Length: %zu\r\n", keel_buf_len(&c->resp));
    if (!keep)
        keel_buf_append_str(o, "Connection: close\r\n");
    else if (req.minor == 0)
        keel_buf_append_str(o, "Connection: keep-alive\r\n");
    keel_buf_append_str(o, "\r\n");
    if (!head_only && a.status != 204 && a.status != 304)
        keel_buf_append(o, keel_buf_rptr(&c->resp), keel_buf_len(&c->resp));
    rc = sa_send_all(app, c->fd, keel_buf_rptr(o), keel_buf_len(o));
    if (app->o->log)
        log_line(app, &req, a.status, start_us);
    keel_buf_consume(&c->in, msg_len);
    return rc < 0 ? rc : keep ? 0 : KEEL_ECLOSED;
}

/* ---- connections and the listener ---- */

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    struct server *srv = c->srv;
    keel_buf_attach(&c->in);
    keel_buf_attach(&c->body);
    keel_buf_attach(&c->resp);
    keel_buf_attach(&c->out);
    while (serve_one(c) == 0)
        ;
    close(c->fd);
    sa_downs_close(&c->downs);
    keel_buf_release(&c->in);
    keel_buf_release(&c->body);
    keel_buf_release(&c->resp);
    keel_buf_release(&c->out);
    keel_buf_pool_drain();
    free(c);
    pthread_mutex_lock(&srv->mu);
    srv->live--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

static void start_conn(struct server *srv, int fd, const pthread_attr_t *attr)
{
    struct conn *c = keel_calloc(1, sizeof(*c));
    c->srv = srv;
    c->fd = fd;
    pthread_mutex_lock(&srv->mu);
    srv->live++;
    pthread_mutex_unlock(&srv->mu);
    pthread_t t;
    int e = pthread_create(&t, attr, conn_main, c);
    if (e == 0)
        return;
    fprintf(stderr, "keel sample-app: no thread for a connection: %s\n", strerror(e));
    close(fd);
    free(c);
    pthread_mutex_lock(&srv->mu);
    srv->live--;
    pthread_mutex_unlock(&srv->mu);
}

static int live(struct server *srv)
{
    pthread_mutex_lock(&srv->mu);
    int n = srv->live;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

/* HTTP_PROXY as curl takes it: "http://host:port[/]" or "host:port". */
static int proxy_from_env(struct sa_app *app)
{
    const char *p = getenv("HTTP_PROXY");
    if (p == NULL || *p == '\0')
        p = getenv("http_proxy");
    if (p == NULL || *p == '\0')
        return 0;
    const char *s = strncasecmp(p, "http://", 7) == 0 ? p + 7 : p;
    size_t n = strcspn(s, "/");
    char addr[300];
    if (n == 0 || n >= sizeof(addr)) {
        fprintf(stderr, "keel sample-app: HTTP_PROXY '%s': want http://HOST:PORT\n", p);
        return KEEL_EINVAL;
    }
    memcpy(addr, s, n);
    addr[n] = '\0';
    if (keel_addr_parse(addr, &app->proxy) < 0) {
        fprintf(stderr, "keel sample-app: HTTP_PROXY '%s': want http://HOST:PORT\n", p);
        return KEEL_EINVAL;
    }
    keel_addr_format((const struct sockaddr *)&app->proxy.ss, app->proxy_str,
                     sizeof(app->proxy_str));
    app->via_proxy = true;
    return 0;
}

static void serve(struct server *srv, int lfd, int sfd)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    int cap = srv->app.o->concurrency;
    bool shedding = false;
    for (;;) {
        bool full = live(srv) >= cap;
        /* at the cap, look again soon (a connection thread may have ended), and only watch
         * the listener until waiting clients have started the shedding */
        struct pollfd p[2] = { { sfd, POLLIN, 0 }, { full && shedding ? -1 : lfd, POLLIN, 0 } };
        int n = poll(p, 2, full || shedding ? 10 : -1);
        if (n < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            break;
        uint64_t v = 1;
        if (full && !shedding && p[1].revents)
            shedding = write(srv->shed_fd, &v, sizeof(v)) == sizeof(v);
        else if (!full && shedding)
            shedding = read(srv->shed_fd, &v, sizeof(v)) != sizeof(v);
        if (full || n <= 0 || !p[1].revents)
            continue;
        while (live(srv) < cap) {
            struct keel_addr peer;
            int fd = keel_sock_accept(lfd, &peer);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE)
                    sa_sleep(&srv->app, 10); /* out of descriptors: let some close */
                break;
            }
            start_conn(srv, fd, &attr);
        }
    }
    pthread_attr_destroy(&attr);
}

int keel_sample_app_run(const struct keel_sample_app_options *o)
{
    struct server *srv = keel_calloc(1, sizeof(*srv));
    struct sa_app *app = &srv->app;
    app->o = o;
    app->stop_fd = srv->shed_fd = -1;
    int rc = 1, lfd = -1, sfd = -1;
    char listen[300];
    const char *port = getenv("PORT");
    if (o->listen != NULL) {
        snprintf(listen, sizeof(listen), "%s", o->listen);
    } else if (port != NULL && *port != '\0') {
        snprintf(listen, sizeof(listen), "127.0.0.1:%s", port);
    } else {
        fprintf(stderr, "keel sample-app: no address: give --listen ADDR or set PORT\n");
        goto out;
    }
    struct keel_addr la;
    if (keel_addr_parse(listen, &la) < 0) {
        fprintf(stderr, "keel sample-app: listen address '%s': want HOST:PORT\n", listen);
        goto out;
    }
    if (proxy_from_env(app) < 0 || sa_targets_init(app) < 0)
        goto out;
    snprintf(app->instance, sizeof(app->instance), "%s-%s-%d", o->name, o->version, (int)getpid());

    /* Signals arrive on a descriptor of the main thread; connection threads inherit the
     * blocked mask. Writes to closed sockets fail with EPIPE instead of killing us. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    app->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    srv->shed_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    lfd = keel_sock_listen(&la, false);
    if (lfd < 0 || sfd < 0 || app->stop_fd < 0 || srv->shed_fd < 0) {
        fprintf(stderr, "keel sample-app: cannot listen on %s: %s\n", listen, strerror(errno));
        goto out;
    }
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    if (o->log) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        struct keel_addr bound;
        char b[KEEL_ADDR_STRLEN];
        keel_sock_local(lfd, &bound);
        keel_addr_format((const struct sockaddr *)&bound.ss, b, sizeof(b));
        printf("keel sample-app %s %s listening on %s, %zu call(s)%s%s\n", o->name, o->version,
               b, o->n_calls, app->via_proxy ? " through proxy " : "",
               app->via_proxy ? app->proxy_str : "");
    }
    serve(srv, lfd, sfd);

    /* Stop: every wait of every connection thread sees the eventfd and returns. */
    uint64_t one = 1;
    if (write(app->stop_fd, &one, sizeof(one)) < 0)
        perror("keel sample-app: eventfd");
    close(lfd);
    lfd = -1;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&srv->mu);
    while (srv->live > 0 && pthread_cond_timedwait(&srv->cv, &srv->mu, &until) == 0)
        ;
    int left = srv->live;
    pthread_mutex_unlock(&srv->mu);
    if (left > 0) {
        /* a thread still runs and may touch srv: leave it all to the exit */
        fprintf(stderr, "keel sample-app: %d connection(s) did not stop in 5 s\n", left);
        return 0;
    }
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    rc = 0;
out:
    if (lfd >= 0)
        close(lfd);
    if (sfd >= 0)
        close(sfd);
    if (app->stop_fd >= 0)
        close(app->stop_fd);
    if (srv->shed_fd >= 0)
        close(srv->shed_fd);
    sa_targets_fini(app);
    free(srv);
    return rc;
}
