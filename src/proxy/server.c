/* keel_proxy_run: build the listeners and targets from the options, start the workers,
 * serve admin on the main thread, and on SIGTERM/SIGINT or POST /quitquitquit drain:
 * workers stop accepting, finish in-flight requests, and are stopped at the deadline. */
#include "proxy/proxy_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CONFIG_DIR "./keel.d"
/* keel's own log while the proxy runs: warnings are rate-limited at their source, so
 * this holds minutes of them; more is dropped and counted rather than block a worker */
#define LOG_SINK_BYTES (64 * 1024)

void keel_proxy_options_defaults(struct keel_proxy_options *o)
{
    memset(o, 0, sizeof(*o));
    o->request_headers_timeout_ms = 10000;
    o->idle_timeout_ms = 3600 * 1000;   /* Envoy's HTTP idle timeout */
    o->connect_timeout_ms = 10000;      /* Istio's connectTimeout */
    o->upstream_timeout_ms = 15000;     /* Envoy's default route timeout */
    o->drain_timeout_ms = 5000;
    o->stream_idle_timeout_ms = 300 * 1000; /* Envoy's stream_idle_timeout */
    o->max_request_headers_kb = 60;     /* Envoy's max_request_headers_kb */
    o->max_headers = 100;               /* Envoy's max_headers_count */
    o->max_uri_bytes = 8192;
    o->access_log_encoding = KEEL_ACCESSLOG_TEXT;
    /* Istio's cluster id: ISTIO_META_CLUSTER_ID in the proxy's environment; else the mesh
     * config's defaultConfig.proxyMetadata, else "Kubernetes" (gen.c) */
    const char *cid = getenv("ISTIO_META_CLUSTER_ID");
    o->cluster_id = cid != NULL && *cid ? cid : NULL;
}

static int parse_target(const char *addr, const char *cluster, struct keel_proxy_target *t)
{
    if (keel_addr_parse(addr, &t->addr) < 0)
        return KEEL_EINVAL;
    keel_addr_format((const struct sockaddr *)&t->addr.ss, t->addr_str, sizeof(t->addr_str));
    snprintf(t->cluster, sizeof(t->cluster), "%s", cluster);
    return 0;
}

int keel_proxy_route_parse(const char *spec, struct keel_proxy_route *r)
{
    const char *eq = strchr(spec, '=');
    memset(r, 0, sizeof(*r));
    if (eq == NULL || eq == spec || (size_t)(eq - spec) >= sizeof(r->host))
        return KEEL_EINVAL;
    memcpy(r->host, spec, (size_t)(eq - spec));
    char *colon = strrchr(r->host, ':');
    if (colon != NULL) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end != '\0' || port <= 0 || port > 65535)
            return KEEL_EINVAL;
        r->port = (int)port;
        *colon = '\0';
    }
    r->host_len = strlen(r->host);
    char cluster[KEEL_CLUSTER_MAX];
    snprintf(cluster, sizeof(cluster), "outbound|%d||%s", r->port ? r->port : 80, r->host);
    return parse_target(eq + 1, cluster, &r->target);
}

int keel_proxy_tcp_route_parse(const char *spec, struct keel_proxy_tcp_route *r)
{
    char listen[KEEL_ADDR_STRLEN];
    const char *eq = strchr(spec, '=');
    bool inbound = r->inbound;
    memset(r, 0, sizeof(*r));
    r->inbound = inbound;
    if (eq == NULL || (size_t)(eq - spec) >= sizeof(listen))
        return KEEL_EINVAL;
    memcpy(listen, spec, (size_t)(eq - spec));
    listen[eq - spec] = '\0';
    if (keel_addr_parse(listen, &r->listen) < 0)
        return KEEL_EINVAL;
    keel_addr_format((const struct sockaddr *)&r->listen.ss, r->listen_str, sizeof(r->listen_str));
    char cluster[KEEL_CLUSTER_MAX];
    snprintf(cluster, sizeof(cluster), "outbound|%d||%s", keel_addr_port(&r->listen), eq + 1);
    int rc = parse_target(eq + 1, cluster, &r->target);
    if (rc == 0 && r->inbound) /* set by the caller before: --tcp-inbound */
        snprintf(r->target.cluster, sizeof(r->target.cluster), "inbound|%d||",
                 keel_addr_port(&r->target.addr));
    return rc;
}

static bool enabled(const char *addr) { return addr == NULL || (*addr && strcmp(addr, "off")); }

static int add_listener(struct server *srv, enum listener_kind kind, const char *addr,
                        int target_index)
{
    struct listener_spec *l = &srv->listeners[srv->n_listeners];
    if (keel_addr_parse(addr, &l->addr) < 0) {
        keel_log_error("bad listen address '%s'", addr);
        return -1;
    }
    l->kind = kind;
    keel_addr_format((const struct sockaddr *)&l->addr.ss, l->addr_str, sizeof(l->addr_str));
    l->target_index = target_index;
    l->target = target_index >= 0 ? &srv->targets[target_index] : NULL;
    srv->n_listeners++;
    return 0;
}

static void print_diags(const struct keel_diag *d, bool as_errors)
{
    for (size_t i = 0; i < d->n; i++) {
        if (as_errors)
            keel_log_error("%s", d->msgs[i]);
        else
            keel_log_warn("%s", d->msgs[i]);
    }
}

/* The config dir to watch: --config-dir, else ./keel.d when it exists, else none. */
static const char *config_dir(const struct keel_proxy_options *o)
{
    struct stat st;
    if (o->config_dir != NULL)
        return o->config_dir;
    return stat(DEFAULT_CONFIG_DIR, &st) == 0 && S_ISDIR(st.st_mode) ? DEFAULT_CONFIG_DIR : NULL;
}

/* First load: an invalid config stops startup (there is no older one to keep). */
static int load_initial_config(struct server *srv)
{
    const char *dir = config_dir(srv->opt);
    struct keel_config *cfg = NULL;
    if (dir == NULL) {
        struct keel_diag d;
        keel_diag_init(&d);
        cfg = keel_config_load_sources(NULL, 0, &d); /* empty: standard metrics only */
        keel_diag_fini(&d);
    } else {
        struct keel_diag d;
        keel_diag_init(&d);
        cfg = keel_config_load_paths(&dir, 1, &d);
        print_diags(&d, cfg == NULL);
        keel_diag_fini(&d);
        if (cfg == NULL) {
            keel_log_error("config %s is invalid: not starting", dir);
            return -1;
        }
        keel_log_info("config %s: generation %llu loaded", dir,
                      (unsigned long long)cfg->generation);
    }
    srv->gen = gen_new(srv, cfg);
    if (srv->gen->log == NULL && srv->flag_log == NULL && cfg->mesh.access_log_file != NULL &&
        *cfg->mesh.access_log_file)
        return -1; /* the mesh config's access log could not be opened: said above */
    return 0;
}

static int build(struct server *srv, const struct keel_proxy_options *o)
{
    srv->opt = o;
    pthread_mutex_init(&srv->gen_lock, NULL);
    /* the access log: the flag wins over the mesh config's accessLogFile (seed 001) */
    if (o->access_log != NULL && *o->access_log) {
        srv->flag_log = access_log_open(srv, o->access_log, o->access_log_encoding,
                                        o->access_log_format);
        if (srv->flag_log == NULL)
            return -1;
    }
    srv->metrics = keel_metrics_new();
    if (o->metric_series_limit > 0)
        keel_metrics_set_series_limit(srv->metrics, o->metric_series_limit);
    char err[256];
    srv->stdio_sinks[KEEL_TELEMETRY_STDOUT] = keel_sink_open("/dev/stdout", 4 << 20, err, sizeof(err));
    srv->stdio_sinks[KEEL_TELEMETRY_STDERR] = keel_sink_open("/dev/stderr", 1 << 20, err, sizeof(err));
    if (load_initial_config(srv) < 0)
        return -1;
    size_t max_headers = o->max_headers < KEEL_HTTP_MAX_HEADERS ? o->max_headers
                                                                 : KEEL_HTTP_MAX_HEADERS;
    srv->limits = (struct keel_http_limits){ o->max_request_headers_kb * 1024, o->max_uri_bytes,
                                             max_headers };
    /* targets: [0] the local app (inbound), then one per --route, then per --tcp-route */
    srv->n_targets = 1 + o->n_routes + o->n_tcp_routes;
    srv->targets = keel_calloc(srv->n_targets, sizeof(*srv->targets));
    bool have_app = o->upstream != NULL;
    if (have_app) {
        char cluster[64];
        struct keel_addr a;
        if (keel_addr_parse(o->upstream, &a) < 0) {
            keel_log_error("bad --upstream address '%s'", o->upstream);
            return -1;
        }
        snprintf(cluster, sizeof(cluster), "inbound|%d||", keel_addr_port(&a));
        parse_target(o->upstream, cluster, &srv->targets[0]);
        srv->targets[0].h2 = o->upstream_protocol == 2;
        srv->app_h2 = srv->targets[0]; /* the same app, when the registry says it speaks h2 */
        srv->app_h2.h2 = true;
    }
    for (size_t i = 0; i < o->n_routes; i++)
        srv->targets[1 + i] = o->routes[i].target;
    for (size_t i = 0; i < o->n_tcp_routes; i++)
        srv->targets[1 + o->n_routes + i] = o->tcp_routes[i].target;

    srv->listeners = keel_calloc(2 + o->n_tcp_routes, sizeof(*srv->listeners));
    if (enabled(o->inbound)) {
        if (!have_app) {
            keel_log_error("the inbound listener needs --upstream ADDR (or --inbound off)");
            return -1;
        }
        if (add_listener(srv, LISTEN_INBOUND, o->inbound ? o->inbound : "127.0.0.1:15006", 0) < 0)
            return -1;
    }
    if (enabled(o->outbound) &&
        add_listener(srv, LISTEN_OUTBOUND, o->outbound ? o->outbound : "127.0.0.1:15001", -1) < 0)
        return -1;
    for (size_t i = 0; i < o->n_tcp_routes; i++)
        if (add_listener(srv, LISTEN_TCP, o->tcp_routes[i].listen_str,
                         (int)(1 + o->n_routes + i)) < 0)
            return -1;
        else
            srv->listeners[srv->n_listeners - 1].tcp_inbound = o->tcp_routes[i].inbound;
    if (keel_addr_parse(o->admin ? o->admin : "127.0.0.1:15000", &srv->admin_addr) < 0) {
        keel_log_error("bad --admin address");
        return -1;
    }
    return 0;
}

static int default_concurrency(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* main-thread state while running */
struct control {
    struct server *srv;
    struct keel_loop *loop;
    struct keel_io sig;
    struct keel_io quit;     /* eventfd: /quitquitquit */
    struct keel_io done;     /* eventfd: a worker finished */
    struct keel_io watch;    /* inotify on the config dir */
    struct keel_config_watch *watcher;
    const char *dir;
    struct keel_timer deadline;
    int workers_started;
    int workers_done;
    bool draining;
};

static void start_drain(struct control *c, const char *why)
{
    if (c->draining)
        return;
    c->draining = true;
    atomic_store(&c->srv->quit, true);
    keel_log_info("%s: draining (deadline %lld ms)", why, (long long)c->srv->opt->drain_timeout_ms);
    for (int i = 0; i < c->srv->n_workers; i++)
        worker_wake(&c->srv->workers[i]);
    keel_timer_set(c->loop, &c->deadline, c->srv->opt->drain_timeout_ms);
}

static void on_signal(struct keel_io *io, uint32_t events)
{
    struct control *c = (struct control *)((char *)io - offsetof(struct control, sig));
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        start_drain(c, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_quit(struct keel_io *io, uint32_t events)
{
    struct control *c = (struct control *)((char *)io - offsetof(struct control, quit));
    uint64_t v;
    if (read(io->fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        start_drain(c, "/quitquitquit");
}

static void on_done(struct keel_io *io, uint32_t events)
{
    struct control *c = (struct control *)((char *)io - offsetof(struct control, done));
    uint64_t v;
    if (read(io->fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        c->workers_done += (int)v;
    if (c->workers_done >= c->workers_started)
        keel_loop_stop(c->loop);
}

/* The config dir changed: build the next generation beside the running one and publish
 * it; an invalid one is logged with positions and counted, and the old one keeps serving. */
static void on_config_change(struct keel_io *io, uint32_t events)
{
    struct control *c = (struct control *)((char *)io - offsetof(struct control, watch));
    if (!keel_config_watch_changed(c->watcher) || c->draining)
        return;
    struct server *srv = c->srv;
    struct keel_config *old = srv->gen->cfg;
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_reload(old, &c->dir, 1, &d);
    if (cfg == NULL) {
        print_diags(&d, true);
        keel_log_error("config reload failed: still serving generation %llu",
                       (unsigned long long)(old ? old->generation : 0));
    } else if (cfg == old) {
        keel_config_unref(cfg);
    } else {
        print_diags(&d, false);
        gen_publish(srv, gen_new(srv, cfg));
        for (int i = 0; i < srv->n_workers; i++)
            worker_wake(&srv->workers[i]);
        keel_log_info("config %s: generation %llu is live", c->dir,
                      (unsigned long long)cfg->generation);
    }
    keel_diag_fini(&d);
}

static void on_deadline(struct keel_timer *t)
{
    struct control *c = (struct control *)((char *)t - offsetof(struct control, deadline));
    keel_log_warn("drain deadline passed: closing what is left");
    for (int i = 0; i < c->srv->n_workers; i++) {
        atomic_store(&c->srv->workers[i].stopping, true);
        worker_wake(&c->srv->workers[i]);
    }
}

int keel_proxy_run(const struct keel_proxy_options *o)
{
    struct server srv = { 0 };
    struct control c = { .srv = &srv };
    struct keel_sink *log_sink = NULL;
    int status = 1;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    /* block before any thread exists so that only the signalfd sees them */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    if (build(&srv, o) < 0)
        goto out;
    srv.n_workers = o->concurrency > 0 ? o->concurrency : default_concurrency();
    srv.workers = keel_calloc((size_t)srv.n_workers, sizeof(*srv.workers));
    srv.inflight = keel_trace_inflight_new(srv.n_workers);
    c.loop = keel_loop_new();
    c.done.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c.done.cb = on_done;
    srv.done_efd = c.done.fd;
    int initialized = 0;
    for (; initialized < srv.n_workers; initialized++)
        if (worker_init(&srv.workers[initialized], &srv, initialized) < 0)
            goto out_workers;
    c.sig.fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    c.sig.cb = on_signal;
    c.quit.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c.quit.cb = on_quit;
    srv.quit_efd = c.quit.fd;
    c.deadline.cb = on_deadline;
    keel_loop_add_in(c.loop, &c.sig);
    keel_loop_add_in(c.loop, &c.quit);
    keel_loop_add_in(c.loop, &c.done);
    if (admin_start(&srv, c.loop) < 0)
        goto out_workers;
    c.dir = config_dir(o);
    if (c.dir != NULL) {
        c.watcher = keel_config_watch_new(c.dir);
        if (c.watcher != NULL) {
            c.watch.fd = keel_config_watch_fd(c.watcher);
            c.watch.cb = on_config_change;
            keel_loop_add_in(c.loop, &c.watch);
        } else {
            keel_log_warn("cannot watch %s: config changes need a restart", c.dir);
        }
    }
    /* from here on no thread writes stderr itself: a stalled stderr drops lines, counted
     * in keel_log_lines_total, instead of stalling the thread that logs */
    char err[256];
    log_sink = keel_sink_open("/dev/stderr", LOG_SINK_BYTES, err, sizeof(err));
    if (log_sink != NULL)
        keel_log_set_sink(log_sink);
    else
        keel_log_warn("%s: logging synchronously", err);
    int started = 0;
    for (; started < srv.n_workers; started++)
        if (worker_start(&srv.workers[started]) != 0)
            break;
    c.workers_started = started;
    if (started < srv.n_workers) {
        keel_log_error("could not start worker threads");
        start_drain(&c, "startup failure");
    } else {
        atomic_store(&srv.ready, true);
        for (size_t i = 0; i < srv.n_listeners; i++)
            keel_log_info("listening on %s (%s)", srv.listeners[i].addr_str,
                          srv.listeners[i].kind == LISTEN_INBOUND    ? "inbound"
                          : srv.listeners[i].kind == LISTEN_OUTBOUND ? "outbound"
                                                                     : "tcp");
        keel_log_info("%d workers, admin on %s", srv.n_workers, srv.admin_str);
    }
    if (started > 0) /* runs until the last started worker has drained */
        keel_loop_run(c.loop);
    for (int i = 0; i < started; i++)
        pthread_join(srv.workers[i].thread, NULL);
    status = started == srv.n_workers ? 0 : 1;
    admin_stop(&srv, c.loop);
out_workers:
    for (int i = 0; i < initialized; i++)
        worker_fini(&srv.workers[i]);
    if (c.sig.fd > 0)
        close(c.sig.fd);
    if (c.quit.fd > 0)
        close(c.quit.fd);
    if (c.done.fd > 0)
        close(c.done.fd);
    if (c.watcher != NULL)
        keel_config_watch_free(c.watcher);
    keel_loop_free(c.loop);
out:
    free(srv.workers);
    keel_trace_inflight_free(srv.inflight);
    free(srv.listeners);
    free(srv.targets);
    gen_unref(srv.gen);
    access_log_unref(srv.flag_log);
    for (int i = 0; i < KEEL_TELEMETRY_N_STREAMS; i++)
        if (srv.stdio_sinks[i] != NULL)
            keel_sink_close(srv.stdio_sinks[i]);
    keel_metrics_free(srv.metrics);
    keel_buf_pool_drain();
    keel_log_set_sink(NULL);
    keel_sink_close(log_sink); /* writes what is queued; gives up after 2 s on a stuck stderr */
    return status;
}
