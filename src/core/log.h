/* The process's own diagnostic log (stderr), not the access log. */
#ifndef KEEL_CORE_LOG_H
#define KEEL_CORE_LOG_H

enum keel_log_level { KEEL_LOG_DEBUG, KEEL_LOG_INFO, KEEL_LOG_WARN, KEEL_LOG_ERROR };

extern enum keel_log_level keel_log_min;

void keel_log(enum keel_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define keel_log_info(...) keel_log(KEEL_LOG_INFO, __VA_ARGS__)
#define keel_log_warn(...) keel_log(KEEL_LOG_WARN, __VA_ARGS__)
#define keel_log_error(...) keel_log(KEEL_LOG_ERROR, __VA_ARGS__)
#define keel_log_debug(...)                 \
    do {                                    \
        if (keel_log_min <= KEEL_LOG_DEBUG) \
            keel_log(KEEL_LOG_DEBUG, __VA_ARGS__); \
    } while (0)

#endif
