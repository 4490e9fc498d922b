#include "core/log.h"

#include "core/sink.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum keel_log_level keel_log_min = KEEL_LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warning", "error" };

static _Atomic(struct keel_sink *) log_sink;
static atomic_uint_fast64_t sync_written, suppressed_total;

void keel_log_set_sink(struct keel_sink *s) { atomic_store(&log_sink, s); }

void keel_log_counts(uint64_t *written, uint64_t *dropped, uint64_t *suppressed)
{
    /* a sink that was closed takes its counts with it: the proxy's sink lives as long as
     * the proxy, which is as long as anyone scrapes these */
    struct keel_sink *s = atomic_load(&log_sink);
    *written = atomic_load(&sync_written) + (s != NULL ? keel_sink_lines_written(s) : 0);
    *dropped = s != NULL ? keel_sink_lines_dropped(s) : 0;
    *suppressed = atomic_load(&suppressed_total);
}

static void vlog(enum keel_log_level lvl, uint64_t suppressed, const char *fmt, va_list ap)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ keel %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[lvl]);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 64)
        len = sizeof(line) - 64; /* truncated: keep room for the suffix and newline */
    if (suppressed > 0)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " (%llu similar lines suppressed)",
                                (unsigned long long)suppressed);
    line[len++] = '\n';
    struct keel_sink *s = atomic_load(&log_sink);
    if (s != NULL) {
        keel_sink_submit(s, line, len, 1);
        return;
    }
    /* one write per line so that lines from several threads do not interleave */
    fwrite(line, 1, len, stderr);
    atomic_fetch_add(&sync_written, 1);
}

void keel_log(enum keel_log_level lvl, const char *fmt, ...)
{
    if (lvl < keel_log_min)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, 0, fmt, ap);
    va_end(ap);
}

void keel_log_suppressed(enum keel_log_level lvl, uint64_t suppressed, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, suppressed, fmt, ap);
    va_end(ap);
}

bool keel_log_limit_take(struct keel_log_limit *l, unsigned per_sec, uint64_t *suppressed)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t now = (int64_t)ts.tv_sec;
    int64_t w = atomic_load_explicit(&l->window, memory_order_relaxed);
    /* a new second: one thread wins the switch and resets the budget (a few lines of
     * slack between threads racing here are harmless) */
    if (w != now && atomic_compare_exchange_strong(&l->window, &w, now))
        atomic_store_explicit(&l->used, 0, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&l->used, 1, memory_order_relaxed) < per_sec) {
        *suppressed = atomic_exchange_explicit(&l->suppressed, 0, memory_order_relaxed);
        return true;
    }
    atomic_fetch_add_explicit(&l->suppressed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&suppressed_total, 1, memory_order_relaxed);
    return false;
}
