/* keel_mixer_run: load the config (plus Istio's default telemetry config when asked),
 * build the telemetry plan, serve Report on --listen, the prometheus handlers on
 * --prometheus and /ready + the mixer's own metrics on --monitoring; reload on config
 * changes (the old plan keeps serving when the new config is invalid); on SIGTERM/SIGINT
 * stop accepting, GOAWAY every connection and exit once calls in flight are answered (or
 * at the drain deadline). */
#include "mixer/mixer_int.h"

#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"

#include "istio_mixer_defaults.h" /* generated from examples/istio-mixer-defaults.yaml */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* the stdio handlers' lines: minutes of a busy mixer's output before lines drop */
#define STDOUT_RING (32u << 20)

struct control {
    struct mixer *m;
    struct keel_io sig;
    struct keel_io watch;
    struct keel_config_watch *watcher;
    const char *paths[2];
    size_t n_paths;
    struct keel_timer deadline;
    struct keel_timer drain_check;
};

static void print_diags(const struct keel_diag *d, bool as_errors)
{
    for (size_t i = 0; i < d->n; i++) {
        if (as_errors)
            keel_log_error("%s", d->msgs[i]);
        else
            keel_log_warn("%s", d->msgs[i]);
    }
}

/* How often to sweep expired series: the most frequent expiryCheckIntervalDuration of the
 * prometheus handlers that have a metricsExpirationPolicy (default: half the expiry). Each
 * handler's metrics expire by its own metricsExpiryDuration (set on their families by the
 * engine's plan). 0 = no handler expires anything. */
static int64_t expiry_check_ms(const struct keel_config *cfg)
{
    int64_t min = 0;
    for (const struct keel_config_object *o = cfg->first[KEEL_CONFIG_PROMETHEUS]; o; o = o->next) {
        const struct keel_config_prometheus *p = (const void *)o;
        if (p->expiry_ms <= 0)
            continue;
        int64_t check = p->expiry_check_ms > 0 ? p->expiry_check_ms : p->expiry_ms / 2;
        if (check < 1)
            check = 1;
        if (min == 0 || check < min)
            min = check;
    }
    return min;
}

static void use_config(struct mixer *m, struct keel_config *cfg)
{
    struct keel_diag d;
    keel_diag_init(&d);
    /* the mixer runs the Mixer rules only: it is not a proxy, it has no standard metrics */
    struct keel_telemetry *t = keel_telemetry_new_role(cfg, m->reg, NULL, KEEL_TELEMETRY_MIXER, &d);
    print_diags(&d, false);
    keel_diag_fini(&d);
    keel_telemetry_free(m->tel); /* one thread: no report is running on it */
    keel_config_unref(m->cfg);
    m->tel = t;
    m->cfg = cfg;
    m->expiry_check_ms = expiry_check_ms(cfg);
    keel_timer_cancel(m->loop, &m->sweep);
    if (m->expiry_check_ms > 0)
        keel_timer_set(m->loop, &m->sweep, m->expiry_check_ms);
}

static void on_sweep(struct keel_timer *t)
{
    struct mixer *m = (struct mixer *)((char *)t - offsetof(struct mixer, sweep));
    keel_telemetry_shard_sweep(m->sh, 0);
    if (m->expiry_check_ms > 0)
        keel_timer_set(m->loop, t, m->expiry_check_ms);
}

static void on_config_change(struct keel_io *io, uint32_t events)
{
    struct control *c = (struct control *)((char *)io - offsetof(struct control, watch));
    struct mixer *m = c->m;
    if (!keel_config_watch_changed(c->watcher) || m->draining)
        return;
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cfg = keel_config_reload(m->cfg, c->paths, c->n_paths, &d);
    if (cfg == NULL) {
        print_diags(&d, true);
        m->st.reloads_failed++;
        keel_log_error("config reload failed: still serving generation %llu",
                       (unsigned long long)m->cfg->generation);
    } else if (cfg == m->cfg) {
        keel_config_unref(cfg);
    } else {
        print_diags(&d, false);
        use_config(m, cfg);
        m->st.reloads_ok++;
        keel_log_info("config: generation %llu is live", (unsigned long long)cfg->generation);
    }
    keel_diag_fini(&d);
}

static void on_listen(struct keel_io *io, uint32_t events)
{
    mixer_grpc_accept((struct mixer *)((char *)io - offsetof(struct mixer, listen_io)));
}

static void check_drained(struct keel_timer *t)
{
    struct control *c = (struct control *)((char *)t - offsetof(struct control, drain_check));
    if (c->m->n_conns == 0)
        keel_loop_stop(c->m->loop);
    else
        keel_timer_set(c->m->loop, t, 20);
}

static void on_deadline(struct keel_timer *t)
{
    struct control *c = (struct control *)((char *)t - offsetof(struct control, deadline));
    keel_log_warn("drain deadline passed: closing %zu connections", c->m->n_conns);
    keel_loop_stop(c->m->loop);
}

static void on_signal(struct keel_io *io, uint32_t events)
{
    struct control *c = (struct control *)((char *)io - offsetof(struct control, sig));
    struct mixer *m = c->m;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (m->draining)
            continue;
        m->draining = true;
        keel_log_info("%s: draining (deadline %lld ms)", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT",
                      (long long)m->opt->drain_timeout_ms);
        keel_loop_del(m->loop, &m->listen_io);
        close(m->listen_io.fd);
        m->listen_io.fd = -1;
        mixer_grpc_drain(m);
        keel_timer_set(m->loop, &c->deadline, m->opt->drain_timeout_ms);
        keel_timer_set(m->loop, &c->drain_check, 0);
    }
}

/* End of a loop turn: this turn's stdio lines to their writers; the metric clock. */
static void before_sleep(void *arg)
{
    struct mixer *m = arg;
    for (int i = 0; i < KEEL_TELEMETRY_N_STREAMS; i++) {
        struct keel_telemetry_output *o = keel_telemetry_shard_output(m->sh, i);
        if (o->lines == 0)
            continue;
        if (m->sinks[i])
            keel_sink_submit(m->sinks[i], keel_buf_rptr(&o->buf), keel_buf_len(&o->buf), o->lines);
        o->buf.rpos = o->buf.wpos = 0;
        o->lines = 0;
    }
    keel_telemetry_shard_tick(m->sh, (uint64_t)keel_loop_now_us(m->loop) * 1000, 0); /* the clock */
}

/* ---- HTTP endpoints ---- */

/* The registry's text without (keep_keel false) or with only (true) keel's own families
 * ("keel_*"): the prometheus port shows what the handlers define, as Mixer's :42422 did. */
static void scrape_filtered(struct mixer *m, struct keel_buf *body, bool keep_keel)
{
    struct keel_buf all = { 0 };
    keel_metrics_scrape(m->reg, &all);
    if (all.data == NULL) /* nothing recorded yet */
        return;
    const char *p = keel_buf_rptr(&all), *end = p + keel_buf_len(&all);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *next = nl ? nl + 1 : end;
        const char *name = p;
        if (!strncmp(p, "# HELP ", 7) || !strncmp(p, "# TYPE ", 7))
            name = p + 7;
        bool keel = !strncmp(name, "keel_", 5);
        if (keel == keep_keel)
            keel_buf_append(body, p, (size_t)(next - p));
        p = next;
    }
    keel_buf_release(&all);
}

static bool path_is(const char *p, size_t n, const char *want)
{
    return n == strlen(want) && !memcmp(p, want, n);
}

static void serve_prometheus(struct mixer *m, const char *path, size_t n, int *status, const char **ctype,
                             struct keel_buf *body)
{
    if (!path_is(path, n, "/metrics")) {
        *status = 404;
        keel_buf_append_str(body, "not found: try /metrics\n");
        return;
    }
    *status = 200;
    *ctype = KEEL_METRICS_CONTENT_TYPE;
    scrape_filtered(m, body, false);
}

static void counter(struct keel_buf *b, const char *name, const char *help, uint64_t v)
{
    keel_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                    (unsigned long long)v);
}

static void serve_monitoring(struct mixer *m, const char *path, size_t n, int *status, const char **ctype,
                             struct keel_buf *body)
{
    if (path_is(path, n, "/ready")) {
        *status = m->ready && !m->draining ? 200 : 503;
        keel_buf_append_str(body, *status == 200 ? "LIVE\n" : "DRAINING\n");
        return;
    }
    if (!path_is(path, n, "/metrics")) {
        *status = 404;
        keel_buf_append_str(body, "not found: try /ready or /metrics\n");
        return;
    }
    *status = 200;
    *ctype = KEEL_METRICS_CONTENT_TYPE;
    const struct mixer_stats *s = &m->st;
    keel_buf_append_str(body, "# HELP keel_mixer_requests_total Report calls answered, by gRPC status code.\n"
                              "# TYPE keel_mixer_requests_total counter\n");
    static const int codes[] = { GRPC_OK, GRPC_INVALID_ARGUMENT, GRPC_RESOURCE_EXHAUSTED, GRPC_UNIMPLEMENTED };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        keel_buf_printf(body, "keel_mixer_requests_total{grpc_code=\"%d\"} %llu\n", codes[i],
                        (unsigned long long)s->requests[codes[i]]);
    uint64_t rejected = 0;
    for (int i = 1; i < GRPC_N_CODES; i++)
        rejected += s->requests[i];
    counter(body, "keel_mixer_rejected_total", "Report calls refused with an error status.", rejected);
    counter(body, "keel_mixer_bags_total", "Attribute bags decoded and run through the rules.", s->bags);
    keel_buf_printf(body, "# HELP keel_mixer_attributes_skipped_total Reported attributes keel cannot use, "
                          "by reason.\n# TYPE keel_mixer_attributes_skipped_total counter\n"
                          "keel_mixer_attributes_skipped_total{reason=\"unknown\"} %llu\n"
                          "keel_mixer_attributes_skipped_total{reason=\"mistyped\"} %llu\n",
                    (unsigned long long)s->unknown_attrs, (unsigned long long)s->mistyped_attrs);
    counter(body, "keel_mixer_connections_total", "gRPC connections accepted.", s->grpc_conns);
    keel_buf_printf(body, "# HELP keel_mixer_connections_active gRPC connections open.\n"
                          "# TYPE keel_mixer_connections_active gauge\nkeel_mixer_connections_active %zu\n",
                    m->n_conns);
    keel_buf_printf(body, "# HELP keel_config_reloads_total Config reloads, by outcome; a failed one keeps "
                          "the running config.\n# TYPE keel_config_reloads_total counter\n"
                          "keel_config_reloads_total{result=\"success\"} %llu\n"
                          "keel_config_reloads_total{result=\"failure\"} %llu\n",
                    (unsigned long long)s->reloads_ok, (unsigned long long)s->reloads_failed);
    keel_buf_printf(body, "# HELP keel_config_generation Generation number of the running config.\n"
                          "# TYPE keel_config_generation gauge\nkeel_config_generation %llu\n",
                    (unsigned long long)m->cfg->generation);
    for (int i = 0; i < KEEL_TELEMETRY_N_STREAMS; i++) {
        if (!m->sinks[i])
            continue;
        const char *stream = i == KEEL_TELEMETRY_STDOUT ? "stdout" : "stderr";
        keel_buf_printf(body, "%skeel_mixer_stdio_lines_total{stream=\"%s\",result=\"written\"} %llu\n"
                              "keel_mixer_stdio_lines_total{stream=\"%s\",result=\"dropped\"} %llu\n",
                        i == 0 ? "# HELP keel_mixer_stdio_lines_total Lines of the stdio handlers, by what "
                                 "became of them.\n# TYPE keel_mixer_stdio_lines_total counter\n"
                               : "",
                        stream, (unsigned long long)keel_sink_lines_written(m->sinks[i]), stream,
                        (unsigned long long)keel_sink_lines_dropped(m->sinks[i]));
    }
    /* the engine's accounting: rule dispatches, match / instance / sample errors */
    scrape_filtered(m, body, true);
}

/* ---- startup ---- */

/* Istio's defaults go to a private file beside the config dir's so that one loader (and
 * its reload fingerprint) covers both. */
static char *write_defaults(void)
{
    const char *tmp = getenv("TMPDIR");
    char *path = keel_alloc(512);
    snprintf(path, 512, "%s/keel-mixer-istio-defaults-XXXXXX.yaml", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemps(path, 5);
    if (fd < 0) {
        keel_log_error("cannot write Istio's defaults to %s: %s", path, strerror(errno));
        free(path);
        return NULL;
    }
    size_t n = sizeof(istio_mixer_defaults) - 1, off = 0;
    while (off < n) {
        ssize_t w = write(fd, istio_mixer_defaults + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    if (off < n) {
        unlink(path);
        free(path);
        return NULL;
    }
    return path;
}

int keel_mixer_run(const struct keel_mixer_options *o)
{
    struct mixer m = { .opt = o };
    struct control c = { .m = &m };
    char *defaults = NULL;
    struct keel_sink *log_sink = NULL;
    int status = 1;
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* before the sink threads exist */
    m.listen_io.fd = -1;
    c.sig.fd = -1;

    if (o->istio_defaults) {
        if ((defaults = write_defaults()) == NULL)
            return 1;
        c.paths[c.n_paths++] = defaults;
    }
    if (o->config_dir)
        c.paths[c.n_paths++] = o->config_dir;
    struct keel_diag d;
    keel_diag_init(&d);
    struct keel_config *cfg = c.n_paths ? keel_config_load_paths(c.paths, c.n_paths, &d)
                                        : keel_config_load_sources(NULL, 0, &d);
    print_diags(&d, cfg == NULL);
    keel_diag_fini(&d);
    if (cfg == NULL) {
        keel_log_error("config is invalid: not starting");
        goto out;
    }
    m.loop = keel_loop_new();
    m.reg = keel_metrics_new();
    m.sh = keel_telemetry_shard_new(m.reg);
    m.dec = keel_mixer_decoder_new();
    m.sweep.cb = on_sweep;
    char err[256];
    m.sinks[KEEL_TELEMETRY_STDOUT] = keel_sink_open("/dev/stdout", STDOUT_RING, err, sizeof(err));
    m.sinks[KEEL_TELEMETRY_STDERR] = keel_sink_open("/dev/stderr", 1u << 20, err, sizeof(err));
    use_config(&m, cfg);

    struct keel_addr a;
    if (keel_addr_parse(o->listen, &a) < 0 || (m.listen_io.fd = keel_sock_listen(&a, false)) < 0) {
        keel_log_error("cannot listen on %s: %s", o->listen, strerror(errno));
        goto out;
    }
    m.listen_io.cb = on_listen;
    keel_loop_add_in(m.loop, &m.listen_io);
    m.prom_http = mixer_http_start(&m, o->prometheus, serve_prometheus);
    m.mon_http = mixer_http_start(&m, o->monitoring, serve_monitoring);
    if (m.prom_http == NULL || m.mon_http == NULL) {
        keel_log_error("cannot listen on %s: %s", m.prom_http ? o->monitoring : o->prometheus, strerror(errno));
        goto out;
    }
    c.sig.fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    c.sig.cb = on_signal;
    keel_loop_add_in(m.loop, &c.sig);
    c.deadline.cb = on_deadline;
    c.drain_check.cb = check_drained;
    if (o->config_dir) {
        c.watcher = keel_config_watch_new(o->config_dir);
        if (c.watcher) {
            c.watch.fd = keel_config_watch_fd(c.watcher);
            c.watch.cb = on_config_change;
            keel_loop_add_in(m.loop, &c.watch);
        } else {
            keel_log_warn("cannot watch %s: config changes need a restart", o->config_dir);
        }
    }
    keel_loop_on_before_sleep(m.loop, before_sleep, &m);
    log_sink = keel_sink_open("/dev/stderr", 64u << 10, err, sizeof(err));
    if (log_sink)
        keel_log_set_sink(log_sink);
    m.ready = true;
    keel_log_info("mixer: Report on %s, prometheus on %s, monitoring on %s, config generation %llu",
                  o->listen, mixer_http_addr(m.prom_http), mixer_http_addr(m.mon_http),
                  (unsigned long long)m.cfg->generation);
    keel_loop_run(m.loop);
    before_sleep(&m); /* the last turn's lines */
    status = 0;
out:
    if (m.loop) {
        mixer_grpc_close_all(&m);
        mixer_http_stop(m.prom_http);
        mixer_http_stop(m.mon_http);
        if (m.listen_io.fd >= 0) {
            keel_loop_del(m.loop, &m.listen_io);
            close(m.listen_io.fd);
        }
        keel_timer_cancel(m.loop, &c.deadline);
        keel_timer_cancel(m.loop, &m.sweep);
        keel_timer_cancel(m.loop, &c.drain_check);
        keel_loop_run_deferred(m.loop);
    }
    if (c.sig.fd >= 0)
        close(c.sig.fd);
    if (c.watcher)
        keel_config_watch_free(c.watcher);
    for (int i = 0; i < KEEL_TELEMETRY_N_STREAMS; i++)
        if (m.sinks[i])
            keel_sink_close(m.sinks[i]);
    keel_telemetry_free(m.tel);
    keel_config_unref(m.cfg);
    keel_telemetry_shard_free(m.sh);
    keel_mixer_decoder_free(m.dec);
    keel_metrics_free(m.reg);
    keel_loop_free(m.loop);
    if (defaults) {
        unlink(defaults);
        free(defaults);
    }
    keel_buf_pool_drain();
    keel_log_set_sink(NULL);
    keel_sink_close(log_sink);
    return status;
}
