/* The process's own diagnostic log (stderr), not the access log.
 *
 * Until keel_log_set_sink installs a sink, lines are written to stderr synchronously, so
 * that usage and startup errors appear before the process exits. While the proxy runs,
 * lines go through a non-blocking sink (core/sink.h): a stderr nobody reads (a full pipe,
 * a stopped terminal) costs dropped lines, counted, never a stalled event loop.
 * Lines a peer can cause once per request go through keel_log_limited: a per-call-site
 * budget per second, the excess suppressed and counted. */
#ifndef KEEL_CORE_LOG_H
#define KEEL_CORE_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum keel_log_level { KEEL_LOG_DEBUG, KEEL_LOG_INFO, KEEL_LOG_WARN, KEEL_LOG_ERROR };

extern enum keel_log_level keel_log_min;

struct keel_sink;

void keel_log(enum keel_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Route lines through s from now on (NULL: back to synchronous stderr). The caller owns
 * s and closes it after setting NULL, once no other thread logs. */
void keel_log_set_sink(struct keel_sink *s);

/* What became of the lines so far: written (or queued), dropped by a full sink,
 * suppressed by keel_log_limited. */
void keel_log_counts(uint64_t *written, uint64_t *dropped, uint64_t *suppressed);

/* The budget of one call site: at most per_sec lines per second. */
struct keel_log_limit {
    _Atomic int64_t window; /* the second being counted */
    atomic_uint used;
    atomic_uint_fast64_t suppressed; /* since the last line that got through */
};

/* true: log now; *suppressed is set to the lines suppressed at this site since the last
 * one that got through (to be mentioned on this line). */
bool keel_log_limit_take(struct keel_log_limit *l, unsigned per_sec, uint64_t *suppressed);
void keel_log_suppressed(enum keel_log_level lvl, uint64_t suppressed, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KEEL_LOG_PER_SEC 5

#define keel_log_info(...) keel_log(KEEL_LOG_INFO, __VA_ARGS__)
#define keel_log_warn(...) keel_log(KEEL_LOG_WARN, __VA_ARGS__)
#define keel_log_error(...) keel_log(KEEL_LOG_ERROR, __VA_ARGS__)
#define keel_log_debug(...)                 \
    do {                                    \
        if (keel_log_min <= KEEL_LOG_DEBUG) \
            keel_log(KEEL_LOG_DEBUG, __VA_ARGS__); \
    } while (0)
/* At most per_sec lines per second from this call site (all threads together). */
#define keel_log_limited(lvl, per_sec, ...)                                        \
    do {                                                                           \
        static struct keel_log_limit keel_log_limit_;                              \
        uint64_t keel_log_sup_;                                                    \
        if ((lvl) >= keel_log_min &&                                               \
            keel_log_limit_take(&keel_log_limit_, (per_sec), &keel_log_sup_))      \
            keel_log_suppressed((lvl), keel_log_sup_, __VA_ARGS__);                \
    } while (0)

#endif
