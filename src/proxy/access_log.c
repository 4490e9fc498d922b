/* Access-log destinations: a compiled format and the sink it writes to. Generations
 * share one while its settings stay the same (a reload does not reopen the file); the
 * mesh config can turn the log on, off, or point it elsewhere at any reload (seed 001's
 * accessLogFile). The last reference closes the sink; its counts move to the server's
 * totals so /stats/prometheus never goes backwards. */
#include "proxy/proxy_int.h"

#include "core/alloc.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

struct access_log *access_log_open(struct server *srv, const char *path,
                                   enum keel_accesslog_encoding enc, const char *fmt)
{
    char err[256];
    const char *src = fmt;
    if (src == NULL && enc == KEEL_ACCESSLOG_TEXT)
        src = keel_accesslog_istio_text_format;
    struct keel_accesslog_format *f = keel_accesslog_compile(src, enc, err, sizeof(err));
    if (f == NULL) {
        keel_log_error("access log format: %s", err);
        return NULL;
    }
    struct keel_sink *sink = keel_sink_open(path, 4 << 20, err, sizeof(err));
    if (sink == NULL) {
        keel_log_error("access log %s: %s", path, err);
        keel_accesslog_format_free(f);
        return NULL;
    }
    struct access_log *al = keel_calloc(1, sizeof(*al));
    atomic_init(&al->refs, 1);
    al->srv = srv;
    al->path = keel_strdup(path);
    al->encoding = enc;
    al->format_src = fmt != NULL ? keel_strdup(fmt) : NULL;
    al->format = f;
    al->sink = sink;
    return al;
}

bool access_log_is(const struct access_log *al, const char *path,
                   enum keel_accesslog_encoding enc, const char *fmt)
{
    return al != NULL && strcmp(al->path, path) == 0 && al->encoding == enc &&
           same_str(al->format_src, fmt);
}

struct access_log *access_log_ref(struct access_log *al)
{
    if (al != NULL)
        atomic_fetch_add_explicit(&al->refs, 1, memory_order_relaxed);
    return al;
}

void access_log_unref(struct access_log *al)
{
    if (al == NULL || atomic_fetch_sub_explicit(&al->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* writes what is queued (at most 2 s on a stalled file); its counts live on in the
     * server's totals */
    uint64_t written, dropped;
    keel_sink_close_counted(al->sink, &written, &dropped);
    atomic_fetch_add(&al->srv->log_written_closed, written);
    atomic_fetch_add(&al->srv->log_dropped_closed, dropped);
    keel_accesslog_format_free(al->format);
    free(al->path);
    free(al->format_src);
    free(al);
}

/* An open destination with these settings: the running generation's, one opened
 * earlier for this generation, or a new one. */
static struct access_log *find_or_open(struct server *srv, const struct proxy_gen *g, const char *path,
                                       enum keel_accesslog_encoding enc, const char *fmt)
{
    const struct proxy_gen *cur = srv->gen;
    if (access_log_is(srv->flag_log, path, enc, fmt))
        return access_log_ref(srv->flag_log);
    if (access_log_is(g->log, path, enc, fmt))
        return access_log_ref(g->log);
    for (size_t i = 0; i < g->n_tlogs; i++)
        if (access_log_is(g->tlogs[i].al, path, enc, fmt))
            return access_log_ref(g->tlogs[i].al);
    for (size_t i = 0; cur != NULL && i < cur->n_tlogs; i++)
        if (access_log_is(cur->tlogs[i].al, path, enc, fmt))
            return access_log_ref(cur->tlogs[i].al);
    return access_log_open(srv, path, enc, fmt);
}

/* The Telemetry API's access logs of generation g (main thread). A provider whose file
 * or format cannot be opened is left out, said in the log. */
void gen_telemetry_logs(struct server *srv, struct proxy_gen *g, const struct keel_telemetry_workload *self)
{
    struct keel_telemetry_log l[KEEL_TELEMETRY_MAX_LOGS];
    struct keel_buf json = { 0 };
    struct keel_diag d;
    keel_diag_init(&d);
    size_t n = keel_telemetry_access_logs(g->cfg, self, l, &g->tlogs_configured, &json, &d);
    for (size_t i = 0; i < d.n; i++)
        keel_log_warn("%s", d.msgs[i]);
    keel_diag_fini(&d);
    g->tlogs = keel_calloc(n + 1, sizeof(*g->tlogs));
    for (size_t i = 0; i < n; i++) {
        struct access_log *al = find_or_open(srv, g, l[i].path, l[i].encoding, l[i].format);
        if (al == NULL) {
            keel_log_warn("access logging provider %s: %s not opened; nothing is logged for it", l[i].provider,
                          l[i].path);
            continue;
        }
        g->tlogs[g->n_tlogs++] = (struct gen_log){ al, l[i].filter, l[i].client };
    }
    keel_buf_release(&json);
}

void gen_telemetry_logs_free(struct proxy_gen *g)
{
    for (size_t i = 0; i < g->n_tlogs; i++)
        access_log_unref(g->tlogs[i].al);
    free(g->tlogs);
}
